//! The session operations: get, set, delete, merge. Session JSON is made and
//! read by V8; it crosses the boundary as text and is stored as it came.

use redis::{AsyncCommands, Script};

use crate::connection::Connection;
use crate::errors::{Code, Result, StoreError};
use crate::keys::Keys;
use crate::lock::LockTokens;
use crate::options::Config;

/// The merge script, compiled in. Run by EVALSHA; reloaded by itself after NOSCRIPT.
pub const MERGE_LUA: &str = include_str!("../lua/merge.lua");
/// Compare-and-delete of a lock key.
pub const UNLOCK_LUA: &str = include_str!("../lua/unlock.lua");

pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) keys: Keys,
    pub(crate) merge_script: Script,
    pub(crate) unlock_script: Script,
    pub(crate) tokens: LockTokens,
}

/// A ttl in whole ms; the JS layer has checked it, this only refuses what Redis would.
pub fn ttl_ms(ttl: f64) -> Result<u64> {
    if ttl.is_finite() && ttl > 0.0 && ttl <= 9_007_199_254_740_991.0 {
        Ok(ttl.ceil() as u64)
    } else {
        Err(StoreError::invalid_arg(format!("ttlMs must be a finite number greater than 0, got {ttl}")))
    }
}

impl Store {
    pub fn new(config: &Config) -> Result<Store> {
        Ok(Store {
            conn: Connection::new(config)?,
            keys: config.keys.clone(),
            merge_script: Script::new(MERGE_LUA),
            unlock_script: Script::new(UNLOCK_LUA),
            tokens: LockTokens::default(),
        })
    }

    /// The stored JSON text, or None.
    pub async fn get(&self, id: &str) -> Result<Option<String>> {
        let key = self.keys.session(id);
        let bytes: Option<Vec<u8>> = self.conn.run(|mut c| async move { c.get(key).await }).await?;
        bytes
            .map(|b| {
                String::from_utf8(b).map_err(|e| {
                    StoreError::new(
                        Code::CorruptSession,
                        format!("stored session is not UTF-8 text (byte {})", e.utf8_error().valid_up_to() + 1),
                    )
                })
            })
            .transpose()
    }

    /// `SET <key> <json> PX <ttl>`.
    pub async fn set(&self, id: &str, json: String, ttl: f64) -> Result<()> {
        let ttl = ttl_ms(ttl)?;
        let key = self.keys.session(id);
        self.conn
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(json).arg("PX").arg(ttl).query_async::<()>(&mut c).await
            })
            .await
    }

    /// Removes the session and its lock (two single-key commands, pipelined, so
    /// that each stays on its own cluster slot).
    pub async fn delete(&self, id: &str) -> Result<()> {
        let (session, lock) = (self.keys.session(id), self.keys.lock(id));
        self.conn
            .run(|mut c| async move {
                redis::pipe().del(session).ignore().del(lock).ignore().query_async::<()>(&mut c).await
            })
            .await?;
        self.tokens.forget(id);
        Ok(())
    }

    /// Applies `pairs` = [path, JSON text or "" to remove, ...] atomically.
    /// Returns whether the session existed.
    pub async fn merge(&self, id: &str, ttl: f64, pairs: Vec<String>) -> Result<bool> {
        let ttl = ttl_ms(ttl)?;
        if pairs.len() % 2 != 0 {
            return Err(StoreError::invalid_arg("merge needs (path, value) pairs"));
        }
        let key = self.keys.session(id);
        let script = &self.merge_script;
        let written: i64 = self
            .conn
            .run(|mut c| async move {
                let mut call = script.key(key);
                call.arg(ttl).arg(pairs);
                call.invoke_async(&mut c).await
            })
            .await?;
        Ok(written == 1)
    }

    /// Loads the merge script now; used by `preloadScript`.
    pub async fn preload(&self) -> Result<()> {
        let script = &self.merge_script;
        self.conn
            .run(|mut c| async move { script.prepare_invoke().load_async(&mut c).await.map(|_| ()) })
            .await
    }

    pub async fn close(&self) {
        self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_refuses_what_redis_would() {
        assert_eq!(ttl_ms(1.0).unwrap(), 1);
        assert_eq!(ttl_ms(0.2).unwrap(), 1);
        assert_eq!(ttl_ms(5000.5).unwrap(), 5001);
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(ttl_ms(bad).unwrap_err().code, Code::InvalidArg);
        }
    }

    #[test]
    fn scripts_pass_keys_only_through_keys() {
        // Cluster routing needs every key in KEYS; the scripts never build one.
        for lua in [MERGE_LUA, UNLOCK_LUA] {
            assert!(lua.contains("KEYS[1]"));
            assert!(!lua.contains("KEYS[2]"));
        }
    }
}
