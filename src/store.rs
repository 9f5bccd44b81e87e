//! The store: its connection, key layout, scripts and lock tokens. Operations
//! run in batches (`batch.rs`); what each op sends and reads is in `ops.rs`.

use redis::Script;

use std::sync::Arc;

use crate::connection::Connection;
use crate::delivery::{Channel, Queue};
use crate::errors::Result;
use crate::keys::Keys;
use crate::lock::LockTokens;
use crate::ops::Outcome;
use crate::options::Config;
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
    /// Outcomes on their way to JavaScript, and the channel that takes them.
    queue: Arc<Queue>,
    channel: Channel,
}

impl Store {
    /// A store whose outcomes go through `channel`, which drains `queue`.
    pub fn new(config: &Config, queue: Arc<Queue>, channel: Channel) -> Result<Store> {
        Ok(Store {
            description: config.description.clone(),
            conn: Connection::new(config)?,
            keys: config.keys.clone(),
            merge_script: Script::new(MERGE_LUA),
            swap_script: Script::new(SWAP_LUA),
            unlock_script: Script::new(UNLOCK_LUA),
            tokens: LockTokens::default(),
            texts: Texts::new(config.remembered_text_bytes),
            queue,
            channel,
        })
    }

    /// Hands outcomes of batch `batch` to JavaScript.
    pub fn deliver(&self, batch: u32, outcomes: Vec<(usize, Outcome)>) {
        self.queue.push(&self.channel, batch, outcomes);
    }

    pub async fn close(&self) {
        self.conn.close().await;
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
