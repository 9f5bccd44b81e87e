//! The store's operations as data: the ops a batch holds ([`Op`]), the Redis
//! commands each one sends, and the [`Outcome`] it settles with (what its
//! replies mean is in `replies.rs`). No I/O here.

use redis::Pipeline;

use crate::errors::StoreError;
use crate::limits::{script_max_bytes, MAX_PADDING};
use crate::link::capabilities::{Capabilities, Expiry};
use crate::link::scripts::{evalsha, Scripts};
use crate::store::keys::Keys;

/// The ops, listed once: `$callback!` gets each op's variant, its field name
/// in the per-op counts of `stats()`, and its code. [`Kind`] here, the op
/// codes `store.js` sends (`OpKind`, `addon/wire.rs`) and the per-op counts
/// and latencies of `stats()` are generated from this list. A new op is
/// added here, then given its commands below and its replies in `replies.rs`.
macro_rules! for_each_op {
    ($callback:ident) => {
        $callback! {
            Get get 0,
            Set set 1,
            Delete delete 2,
            Merge merge 3,
            Lock lock 4,
            Unlock unlock 5,
            IsLocked is_locked 6,
            Touch touch 7,
        }
    };
}
pub(crate) use for_each_op;

macro_rules! define_kind {
    ($($variant:ident $field:ident $code:literal,)*) => {
        /// What an op does.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $($variant = $code,)*
        }

        impl Kind {
            pub const ALL: [Kind; [$($code),*].len()] = [$(Kind::$variant),*];
        }
    };
}
for_each_op!(define_kind);

impl Kind {
    /// The kind whose code (its value in the enum above) is `code`.
    pub fn from_code(code: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == code)
    }

    /// How many strings of a batch's `strings` array the op takes.
    pub fn strings(self, count: u32) -> usize {
        match self {
            Kind::Set => 1,
            Kind::Merge => count as usize,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub kind: Kind,
    pub id: String,
    pub ttl: f64,
    /// Set: the JSON text. Merge: path, value JSON ("" removes), path, value, …
    pub args: Vec<String>,
}

/// The result of one op.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Bool(bool),
    Text(Option<String>),
    Failed(StoreError),
}

/// A ttl in whole ms. `store.js` checked it (`lib/args.js`: more than 0, at
/// most `MAX_TTL_MS`); this only rounds it up, as `PX` takes whole ms.
pub fn ttl_ms(ttl: f64) -> u64 {
    ttl.ceil() as u64
}

/// A merge's first step: read the stored text, to splice the paths in here.
pub fn push_read(pipe: &mut Pipeline, op: &Op, keys: &Keys) {
    pipe.cmd("GET").arg(keys.session(&op.id));
}

/// A merge's second step: write the spliced text if the stored one is
/// unchanged, the way `capabilities` says, expiring as `expiry` says.
pub fn push_compare_and_set(
    pipe: &mut Pipeline,
    op: &Op,
    keys: &Keys,
    (capabilities, scripts): (&Capabilities, &Scripts),
    (old, new): (&[u8], &[u8]),
    expiry: Expiry,
) {
    capabilities.push_compare_and_set(
        pipe,
        keys.session(&op.id),
        old,
        new,
        expiry,
        scripts.compare_and_set(),
    );
}

/// Appends op's commands to `pipe` (for Merge: the server-side script);
/// returns how many it appended. `token` is the lock token for Lock (the new
/// one) and Unlock (the remembered one); `expiry`, a set's (others expire
/// their ttl from when they are applied).
pub fn push_commands(
    pipe: &mut Pipeline,
    op: &Op,
    keys: &Keys,
    (capabilities, scripts): (&Capabilities, &Scripts),
    token: Option<&str>,
    expiry: Expiry,
) -> usize {
    match op.kind {
        Kind::Get => {
            pipe.cmd("GET").arg(keys.session(&op.id));
            1
        }
        Kind::Set => {
            let (option, ms) = expiry.option();
            pipe.cmd("SET")
                .arg(keys.session(&op.id))
                .arg(&op.args[0])
                .arg(option)
                .arg(ms);
            1
        }
        Kind::Delete => {
            // The lock first; the session in a second step, only once this
            // succeeded (rounds.rs), so a refused DEL (an ACL without the lock
            // keys) leaves the session in place. Single-key commands, each on
            // its own cluster slot.
            pipe.cmd("DEL").arg(keys.lock(&op.id));
            1
        }
        // The merge the server does (`lua/merge.lua`), when the splice here
        // cannot (rounds.rs: Step::Script).
        Kind::Merge => {
            let ttl = ttl_ms(op.ttl);
            evalsha(pipe, scripts.merge(), keys.session(&op.id))
                .arg(ttl)
                .arg(script_max_bytes(op.args.len() / 2))
                .arg(MAX_PADDING)
                .arg(&op.args);
            1
        }
        Kind::Lock => {
            let ttl = ttl_ms(op.ttl);
            pipe.cmd("SET")
                .arg(keys.lock(&op.id))
                .arg(token.unwrap_or_default())
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            1
        }
        Kind::Unlock => match token {
            Some(token) => {
                capabilities.push_compare_and_delete(
                    pipe,
                    keys.lock(&op.id),
                    token,
                    scripts.unlock(),
                );
                1
            }
            None => 0,
        },
        Kind::IsLocked => {
            pipe.cmd("EXISTS").arg(keys.lock(&op.id));
            1
        }
        // Only an existing session's expiry moves: PEXPIRE creates nothing.
        Kind::Touch => {
            let ttl = ttl_ms(op.ttl);
            pipe.cmd("PEXPIRE").arg(keys.session(&op.id)).arg(ttl);
            1
        }
    }
}

/// A delete's second step, once the lock key is gone: the session.
pub fn push_delete_session(pipe: &mut Pipeline, op: &Op, keys: &Keys) {
    pipe.cmd("DEL").arg(keys.session(&op.id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_decodes_from_its_code() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k as u32), Some(k));
        }
        assert_eq!(Kind::from_code(Kind::ALL.len() as u32), None);
    }

    #[test]
    fn ttl_rounds_up_to_whole_ms() {
        assert_eq!(ttl_ms(1.0), 1);
        assert_eq!(ttl_ms(0.2), 1);
        assert_eq!(ttl_ms(5000.5), 5001);
    }
}
