//! What the server behind a link can do, and so which commands the store sends
//! for its two compare-and-write steps: a merge's compare-and-set and
//! `unlock`'s compare-and-delete. Learned with `HELLO` when a link opens (and
//! again after the connection was lost: it may be another server now); on a
//! cluster, the lowest of the masters'. A server that refuses a native
//! command (an ACL without it, a fork that claims a version it does not
//! implement) leaves the store on the Lua scripts for that link.
//!
//! | server       | compare-and-set            | compare-and-delete      |
//! |--------------|----------------------------|-------------------------|
//! | Redis ≥ 8.4  | `SET k new IFDEQ <digest>` | `DELEX k IFEQ token`    |
//! | Valkey ≥ 9.0 | `SET k new IFEQ old`       | `DELIFEQ k token`       |
//! | Valkey 8.1   | `SET k new IFEQ old`       | `lua/unlock.lua`        |
//! | otherwise    | `lua/swap.lua`             | `lua/unlock.lua`        |
//!
//! None of these creates a key that is missing: a merge of a session that
//! expired or was deleted stays a no-op.

use redis::{Pipeline, ServerError, Value};
use xxhash_rust::xxh3::xxh3_64;

use crate::link::scripts::evalsha;

/// How a merge writes its spliced text only if the stored one is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompareAndSetBy {
    /// `lua/swap.lua` by EVALSHA: every server.
    Script,
    /// `SET key new IFEQ old PX ttl` (Valkey ≥ 8.1): sends the old text.
    Equal,
    /// `SET key new IFDEQ <XXH3-64 of old> PX ttl` (Redis ≥ 8.4): sends 16
    /// hex digits in place of the old text.
    Digest,
}

/// How `unlock` deletes the lock key only while it holds this store's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CompareAndDeleteBy {
    /// `lua/unlock.lua` by EVALSHA: every server.
    Script,
    /// `DELIFEQ key token` (Valkey ≥ 9.0).
    DelIfEq,
    /// `DELEX key IFEQ token` (Redis ≥ 8.4).
    DelEx,
}

/// The store's choice of commands for one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub compare_and_set: CompareAndSetBy,
    pub compare_and_delete: CompareAndDeleteBy,
    /// The server takes an absolute expiry (`SET … PXAT`: Redis ≥ 6.2, every
    /// Valkey), so a write can end no later than its user's index entry
    /// however late it is applied (`store/users.rs`).
    pub expire_at: bool,
}

/// When a written key expires: `PX` ms from when the server applies the
/// write, or `PXAT` a time on the server's clock (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    In(u64),
    At(u64),
}

impl Expiry {
    /// The option and its value, as `SET` takes them.
    pub fn option(self) -> (&'static str, u64) {
        match self {
            Expiry::In(ms) => ("PX", ms),
            Expiry::At(ms) => ("PXAT", ms),
        }
    }
}

/// A command of the server's own that the store sends in place of a script,
/// where the server has it (and which one a server refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeCommand {
    /// A merge's compare-and-set (`SET … IFDEQ`/`IFEQ`).
    CompareAndSet,
    /// An unlock's compare-and-delete (`DELEX`, `DELIFEQ`).
    CompareAndDelete,
}

impl Capabilities {
    /// What every server runs: the Lua scripts.
    pub const SCRIPTS: Capabilities = Capabilities {
        compare_and_set: CompareAndSetBy::Script,
        compare_and_delete: CompareAndDeleteBy::Script,
        expire_at: false,
    };

    /// The commands of server `name` ("redis", "valkey") at `version` ("8.6.3").
    pub fn of(name: &str, version: &str) -> Capabilities {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let expire_at = name == "valkey" || (name == "redis" && v >= (6, 2));
        let (compare_and_set, compare_and_delete) = match name {
            "redis" if v >= (8, 4) => (CompareAndSetBy::Digest, CompareAndDeleteBy::DelEx),
            "valkey" if v >= (9, 0) => (CompareAndSetBy::Equal, CompareAndDeleteBy::DelIfEq),
            "valkey" if v >= (8, 1) => (CompareAndSetBy::Equal, CompareAndDeleteBy::Script),
            _ => (CompareAndSetBy::Script, CompareAndDeleteBy::Script),
        };
        Capabilities {
            compare_and_set,
            compare_and_delete,
            expire_at,
        }
    }

    /// The commands of the server that sent this reply to `HELLO` (a map in
    /// RESP3, a flat array of pairs in RESP2); the scripts for an error reply
    /// (Redis 6.0 wants an argument; an ACL may refuse it) or anything else.
    pub fn from_hello(reply: &Value) -> Capabilities {
        let pairs: Vec<(&Value, &Value)> = match reply {
            Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
            Value::Array(a) => a.chunks_exact(2).map(|p| (&p[0], &p[1])).collect(),
            _ => Vec::new(),
        };
        let field = |name: &str| {
            pairs.iter().find_map(|(k, v)| {
                (text(k)? == name).then_some(())?;
                text(v)
            })
        };
        match (field("server"), field("version")) {
            (Some(server), Some(version)) => Capabilities::of(&server, &version),
            _ => Capabilities::SCRIPTS,
        }
    }

    /// What all of several servers run (the masters of a cluster).
    pub fn lowest(self, other: Capabilities) -> Capabilities {
        // A release by DELEX on one master and DELIFEQ on another has no
        // common native form: the scripts then.
        let compare_and_delete = if self.compare_and_delete == other.compare_and_delete {
            self.compare_and_delete
        } else {
            CompareAndDeleteBy::Script
        };
        let compare_and_set = match (self.compare_and_set, other.compare_and_set) {
            (a, b) if a == b => a,
            // IFEQ runs wherever IFDEQ does (Redis ≥ 8.4 has both).
            (
                CompareAndSetBy::Equal | CompareAndSetBy::Digest,
                CompareAndSetBy::Equal | CompareAndSetBy::Digest,
            ) => CompareAndSetBy::Equal,
            _ => CompareAndSetBy::Script,
        };
        Capabilities {
            compare_and_set,
            compare_and_delete,
            expire_at: self.expire_at && other.expire_at,
        }
    }

    /// These capabilities without the native command a server refused.
    pub fn without(self, refused: NativeCommand) -> Capabilities {
        match refused {
            NativeCommand::CompareAndSet => Capabilities {
                compare_and_set: CompareAndSetBy::Script,
                ..self
            },
            NativeCommand::CompareAndDelete => Capabilities {
                compare_and_delete: CompareAndDeleteBy::Script,
                ..self
            },
        }
    }

    /// Appends the compare-and-set of `key` from `old` to `new`, expiring
    /// as `expiry` says (`At` only where [`expire_at`](Self::expire_at));
    /// `script` is swap.lua's SHA. Its reply goes to [`swapped`].
    pub fn push_compare_and_set(
        &self,
        pipe: &mut Pipeline,
        key: String,
        old: &[u8],
        new: &[u8],
        expiry: Expiry,
        script: &str,
    ) {
        let (option, ms) = expiry.option();
        match self.compare_and_set {
            CompareAndSetBy::Script => {
                evalsha(pipe, script, key)
                    .arg(old)
                    .arg(new)
                    .arg(ms)
                    .arg(option);
            }
            CompareAndSetBy::Equal => {
                let cmd = pipe.cmd("SET").arg(key).arg(new);
                cmd.arg("IFEQ").arg(old).arg(option).arg(ms);
            }
            CompareAndSetBy::Digest => {
                let cmd = pipe.cmd("SET").arg(key).arg(new);
                cmd.arg("IFDEQ").arg(digest(old)).arg(option).arg(ms);
            }
        }
    }

    /// Appends the compare-and-delete of lock `key` holding `token`; `script`
    /// is unlock.lua's SHA. Any reply but an error means done.
    pub fn push_compare_and_delete(
        &self,
        pipe: &mut Pipeline,
        key: String,
        token: &str,
        script: &str,
    ) {
        match self.compare_and_delete {
            CompareAndDeleteBy::Script => {
                evalsha(pipe, script, key).arg(token);
            }
            CompareAndDeleteBy::DelIfEq => {
                pipe.cmd("DELIFEQ").arg(key).arg(token);
            }
            CompareAndDeleteBy::DelEx => {
                pipe.cmd("DELEX").arg(key).arg("IFEQ").arg(token);
            }
        }
    }

    /// Whether `command` is sent here as the server's own command.
    pub fn sends_native(&self, command: NativeCommand) -> bool {
        match command {
            NativeCommand::CompareAndSet => self.compare_and_set != CompareAndSetBy::Script,
            NativeCommand::CompareAndDelete => {
                self.compare_and_delete != CompareAndDeleteBy::Script
            }
        }
    }
}

/// What a compare-and-set's reply says: `Some(true)` written, `Some(false)`
/// not written (the text changed, or the key is gone), None anything else.
pub fn compare_and_set_result(reply: Option<&Value>) -> Option<bool> {
    match reply {
        Some(Value::Int(1) | Value::Okay) => Some(true),
        Some(Value::Int(0) | Value::Nil) => Some(false),
        _ => None,
    }
}

/// Whether an error reply means the server does not run a native command
/// (an older server or a fork: unknown command, or a syntax error for SET's
/// new arguments) or this user may not (NOPERM): the scripts do it then.
pub fn is_refusal(e: &ServerError) -> bool {
    let detail = e.details().unwrap_or("");
    match e.code() {
        "NOPERM" => true,
        "ERR" => detail.starts_with("unknown command") || detail.starts_with("syntax error"),
        _ => false,
    }
}

/// The digest Redis's `DIGEST` and `IFDEQ` use: XXH3-64, seed 0, over the
/// stored bytes, as 16 lowercase hex digits.
pub fn digest(text: &[u8]) -> String {
    format!("{:016x}", xxh3_64(text))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(server: &str, version: &str) -> Value {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        Value::Array(vec![
            b("server"),
            b(server),
            b("version"),
            b(version),
            b("proto"),
            Value::Int(2),
        ])
    }

    #[test]
    fn each_server_gets_its_native_commands() {
        let cases = [
            (
                "redis",
                "6.0.16",
                CompareAndSetBy::Script,
                CompareAndDeleteBy::Script,
            ),
            (
                "redis",
                "7.0.15",
                CompareAndSetBy::Script,
                CompareAndDeleteBy::Script,
            ),
            (
                "redis",
                "8.2.1",
                CompareAndSetBy::Script,
                CompareAndDeleteBy::Script,
            ),
            (
                "redis",
                "8.4.0",
                CompareAndSetBy::Digest,
                CompareAndDeleteBy::DelEx,
            ),
            (
                "redis",
                "8.6.3",
                CompareAndSetBy::Digest,
                CompareAndDeleteBy::DelEx,
            ),
            (
                "redis",
                "10.0.0",
                CompareAndSetBy::Digest,
                CompareAndDeleteBy::DelEx,
            ),
            (
                "valkey",
                "8.0.1",
                CompareAndSetBy::Script,
                CompareAndDeleteBy::Script,
            ),
            (
                "valkey",
                "8.1.1",
                CompareAndSetBy::Equal,
                CompareAndDeleteBy::Script,
            ),
            (
                "valkey",
                "9.1.2",
                CompareAndSetBy::Equal,
                CompareAndDeleteBy::DelIfEq,
            ),
            (
                "dragonfly",
                "9.9.9",
                CompareAndSetBy::Script,
                CompareAndDeleteBy::Script,
            ),
            (
                "redis",
                "garbage",
                CompareAndSetBy::Script,
                CompareAndDeleteBy::Script,
            ),
        ];
        for (server, version, swap, release) in cases {
            let c = Capabilities::from_hello(&hello(server, version));
            assert_eq!(
                (c.compare_and_set, c.compare_and_delete),
                (swap, release),
                "{server} {version}"
            );
        }
        let map = Value::Map(vec![
            (
                Value::SimpleString("server".into()),
                Value::SimpleString("redis".into()),
            ),
            (
                Value::SimpleString("version".into()),
                Value::SimpleString("8.6.3".into()),
            ),
        ]);
        assert_eq!(
            Capabilities::from_hello(&map).compare_and_set,
            CompareAndSetBy::Digest
        );
        let refused = reply(b"-ERR wrong number of arguments for 'hello' command\r\n");
        assert_eq!(Capabilities::from_hello(&refused), Capabilities::SCRIPTS);
    }

    #[test]
    fn a_cluster_runs_what_every_master_runs() {
        let r86 = Capabilities::of("redis", "8.6.3");
        let v91 = Capabilities::of("valkey", "9.1.2");
        let v81 = Capabilities::of("valkey", "8.1.1");
        let r70 = Capabilities::of("redis", "7.0.15");
        assert_eq!(r86.lowest(r86), r86);
        assert_eq!(
            r86.lowest(v91),
            Capabilities {
                compare_and_set: CompareAndSetBy::Equal,
                compare_and_delete: CompareAndDeleteBy::Script,
                expire_at: true,
            }
        );
        assert_eq!(v91.lowest(v81), v81);
        let scripts_with_pxat = Capabilities {
            expire_at: true,
            ..Capabilities::SCRIPTS
        };
        assert_eq!(r86.lowest(r70), scripts_with_pxat);
        assert_eq!(r70.lowest(r86), scripts_with_pxat);
        // PXAT: Redis 6.2 and later, every Valkey; not what a server that
        // would not say runs.
        assert!(!Capabilities::of("redis", "6.0.16").expire_at);
        assert!(Capabilities::of("redis", "6.2.0").expire_at);
        assert!(Capabilities::of("valkey", "8.0.1").expire_at);
        assert!(!r70.lowest(Capabilities::of("redis", "6.0.16")).expire_at);
        assert_eq!(
            r86.without(NativeCommand::CompareAndDelete)
                .compare_and_delete,
            CompareAndDeleteBy::Script
        );
        assert_eq!(
            r86.without(NativeCommand::CompareAndDelete).compare_and_set,
            CompareAndSetBy::Digest
        );
    }

    #[test]
    fn the_digest_is_what_redis_digest_prints() {
        // Redis 8.6.3's DIGEST of "v2", and of n letters ('a' + 7i mod 26) at
        // the lengths where XXH3 changes its code path.
        assert_eq!(digest(b"v2"), "2225df3932692638");
        let cases = [
            (0, "2d06800538d394c2"),
            (1, "e6c632b61e964e1f"),
            (3, "7ea47a004f34273c"),
            (4, "a02b1fe01d5e8c68"),
            (8, "ae512ee33cb829a3"),
            (9, "8a413b4d39e87b1d"),
            (16, "dfd4b837b7921abf"),
            (17, "93e37276a1b3d25e"),
            (128, "b2750a05a86bd144"),
            (129, "7944327491a28ad0"),
            (240, "42b550f096408b23"),
            (241, "58129d823c648ff5"),
            (1024, "62efeb73eb589676"),
            (32768, "09d06a8f45ffc0a5"),
        ];
        for (n, expected) in cases {
            let text: Vec<u8> = (0..n).map(|i| b'a' + (i * 7 % 26) as u8).collect();
            assert_eq!(digest(&text), expected, "{n} bytes");
        }
    }

    #[test]
    fn refusals_are_told_from_other_errors() {
        let refusal = |resp: &[u8]| match reply(resp) {
            Value::ServerError(e) => is_refusal(&e),
            other => panic!("{other:?}"),
        };
        // What Redis 7.0, Valkey 8.0 and an ACL answer to the native commands.
        assert!(refusal(b"-ERR syntax error\r\n"));
        assert!(refusal(
            b"-ERR unknown command 'DELEX', with args beginning with: 'k'\r\n"
        ));
        assert!(refusal(
            b"-NOPERM User u has no permissions to run the 'delex' command\r\n"
        ));
        assert!(!refusal(
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        ));
        assert!(!refusal(b"-OOM command not allowed\r\n"));
        assert!(!refusal(
            b"-ERR value is not an integer or out of range\r\n"
        ));
    }

    #[test]
    fn replies_to_a_swap_say_whether_it_wrote() {
        assert_eq!(compare_and_set_result(Some(&Value::Okay)), Some(true));
        assert_eq!(compare_and_set_result(Some(&Value::Int(1))), Some(true));
        assert_eq!(compare_and_set_result(Some(&Value::Nil)), Some(false));
        assert_eq!(compare_and_set_result(Some(&Value::Int(0))), Some(false));
        assert_eq!(compare_and_set_result(Some(&Value::Int(-1))), None);
        assert_eq!(compare_and_set_result(None), None);
    }

    fn reply(resp: &[u8]) -> Value {
        redis::parse_redis_value(resp).unwrap()
    }
}
