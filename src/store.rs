//! The store: its connection, key layout, scripts, lock tokens and remembered
//! texts, and what it does with each op's outcome. Ops run in batches
//! (`batch.rs`); what each op sends and reads is in `ops.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Script, Value};

use crate::batch::Batch;
use crate::connection::Connection;
use crate::delivery::{Channel, Queue};
use crate::errors::{Result, StoreError};
use crate::keys::Keys;
use crate::lock::LockTokens;
use crate::ops::{ttl_ms, Kind, Op, Outcome, Shas};
use crate::options::Config;
use crate::stats::Stats;
use crate::texts::Texts;

/// The merge script, compiled in. Run by EVALSHA; loaded again after NOSCRIPT.
pub const MERGE_LUA: &str = include_str!("../lua/merge.lua");
/// Compare-and-set of a session merged on the client.
pub const SWAP_LUA: &str = include_str!("../lua/swap.lua");
/// Compare-and-delete of a lock key.
pub const UNLOCK_LUA: &str = include_str!("../lua/unlock.lua");

pub struct Store {
    /// Where the store connects, without credentials.
    pub description: String,
    pub(crate) conn: Connection,
    pub(crate) keys: Keys,
    pub(crate) merge_script: Script,
    pub(crate) swap_script: Script,
    pub(crate) unlock_script: Script,
    pub(crate) tokens: LockTokens,
    pub(crate) texts: Texts,
    pub(crate) stats: Arc<Stats>,
    /// Outcomes on their way to JavaScript, and the channel that takes them.
    queue: Arc<Queue>,
    channel: Channel,
}

impl Store {
    /// A store whose outcomes go through `channel`, which drains `queue`.
    pub fn new(config: Config, queue: Arc<Queue>, channel: Channel) -> Store {
        let stats = Arc::new(Stats::default());
        let conn = Connection::new(
            config.topology,
            (config.connect_timeout, config.command_timeout),
            Arc::clone(&stats),
        );
        Store {
            description: config.description,
            conn,
            keys: config.keys,
            merge_script: Script::new(MERGE_LUA),
            swap_script: Script::new(SWAP_LUA),
            unlock_script: Script::new(UNLOCK_LUA),
            tokens: LockTokens::default(),
            texts: Texts::new(config.remembered_text_bytes),
            stats,
            queue,
            channel,
        }
    }

    /// Runs ops until each has an outcome or `deadline` passes, handing each
    /// round's outcomes to `deliver` as they come (`batch.rs`).
    pub async fn run(
        &self,
        ops: &[Op],
        deadline: Instant,
        deliver: &mut (dyn FnMut(Vec<(usize, Outcome)>) + Send),
    ) {
        Batch::new(self, ops, deadline).run(deliver).await
    }

    /// The scripts' hashes, for EVALSHA.
    pub(crate) fn shas(&self) -> Shas<'_> {
        Shas {
            merge: self.merge_script.get_hash(),
            swap: self.swap_script.get_hash(),
            unlock: self.unlock_script.get_hash(),
        }
    }

    /// Hands outcomes of batch `batch` to JavaScript.
    pub fn deliver(&self, batch: u32, outcomes: Vec<(usize, Outcome)>) {
        self.queue.push(&self.channel, batch, outcomes);
    }

    pub async fn close(&self) {
        self.conn.close().await;
    }

    /// After a round could not be sent or answered: a lock's `SET NX` may
    /// still have been applied, so its token is kept for a later `unlock()`.
    pub(crate) fn after_failed_send(&self, op: &Op, token: Option<String>) {
        if let (Kind::Lock, Some(token)) = (op.kind, token) {
            let ttl = ttl_ms(op.ttl).unwrap_or_default();
            self.tokens
                .remember_unconfirmed(&op.id, token, Duration::from_millis(ttl));
        }
    }

    /// Keeps the lock tokens and the remembered texts in step with what Redis
    /// answered.
    pub(crate) fn settle(&self, op: &Op, token: Option<String>, outcome: Outcome) -> Outcome {
        match (op.kind, &outcome) {
            (Kind::Get, Outcome::Text(Some(text))) => {
                self.texts
                    .put(&op.id, Arc::new(text.as_bytes().to_vec()), false)
            }
            // Unknown now: a get that failed or found nothing, a set, a delete,
            // a merge the server-side script did.
            (Kind::Get | Kind::Set | Kind::Delete | Kind::Merge, _) => self.texts.forget(&op.id),
            _ => {}
        }
        match (op.kind, &outcome, token) {
            (Kind::Lock, Outcome::Bool(true), Some(token)) => {
                let ttl = ttl_ms(op.ttl).unwrap_or_default();
                self.tokens
                    .remember(&op.id, token, Duration::from_millis(ttl));
            }
            (Kind::Unlock, Outcome::Done, Some(token)) => self.tokens.forget_if(&op.id, &token),
            (Kind::Delete, Outcome::Done, _) => self.tokens.forget(&op.id),
            _ => {}
        }
        outcome
    }

    /// `SCRIPT LOAD` of the scripts; used by `preloadScript` and after NOSCRIPT.
    pub async fn load_scripts(&self, deadline: Instant) -> Result<()> {
        let mut pipe = redis::pipe();
        for lua in [MERGE_LUA, SWAP_LUA, UNLOCK_LUA] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(lua);
        }
        for reply in self.conn.exec(&pipe, deadline).await? {
            if let Value::ServerError(e) = reply {
                return Err(StoreError::from_reply(&e, self.conn.is_cluster()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_pass_keys_only_through_keys() {
        // Cluster routing needs every key in KEYS; the scripts never build one.
        for lua in [MERGE_LUA, SWAP_LUA, UNLOCK_LUA] {
            assert!(lua.contains("KEYS[1]"));
            assert!(!lua.contains("KEYS[2]"));
        }
    }
}
