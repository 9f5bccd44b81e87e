//! Lock tokens. `lock` is `SET <lockKey> <token> NX PX ttl`; `unlock` is a
//! compare-and-delete script (`lua/unlock.lua`), so a store whose lock expired
//! cannot release a lock another store holds since (commands in `ops.rs`).
//!
//! The token is remembered per session id in this store. Two requests of one
//! process on one session share that memory: if the first one's lock expires and
//! the second takes the lock, the first one's unlock releases the second's.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many remembered tokens, expired ones are pruned on the next lock.
const PRUNE_ABOVE: usize = 4096;

#[derive(Default)]
pub struct LockTokens {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

/// 128 random bits as 32 hex characters. `RandomState` is seeded from the OS
/// per process; the counter makes every token of a process distinct.
pub fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = RandomState::new();
    let mut a = state.build_hasher();
    a.write_u64(n);
    let mut b = state.build_hasher();
    b.write_u64(!n);
    b.write_u64(a.finish());
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

impl LockTokens {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn remember(&self, id: &str, token: String, ttl: Duration) {
        let mut held = self.held();
        if held.len() >= PRUNE_ABOVE {
            let now = Instant::now();
            held.retain(|_, (_, expires)| *expires > now);
        }
        held.insert(id.to_owned(), (token, Instant::now() + ttl));
    }

    pub fn token(&self, id: &str) -> Option<String> {
        self.held().get(id).map(|(t, _)| t.clone())
    }

    /// Forgets the token of `id` if it is still `token`.
    pub fn forget_if(&self, id: &str, token: &str) {
        let mut held = self.held();
        if held.get(id).is_some_and(|(t, _)| t == token) {
            held.remove(id);
        }
    }

    pub fn forget(&self, id: &str) {
        self.held().remove(id);
    }

    pub fn len(&self) -> usize {
        self.held().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_and_distinct() {
        let tokens: std::collections::HashSet<String> = (0..10_000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 10_000);
        assert!(tokens
            .iter()
            .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn forget_if_keeps_a_newer_token() {
        let t = LockTokens::default();
        t.remember("s", "old".into(), Duration::from_secs(5));
        t.remember("s", "new".into(), Duration::from_secs(5));
        t.forget_if("s", "old");
        assert_eq!(t.token("s").as_deref(), Some("new"));
        t.forget_if("s", "new");
        assert!(t.is_empty());
    }

    #[test]
    fn expired_tokens_are_pruned_when_many() {
        let t = LockTokens::default();
        for i in 0..PRUNE_ABOVE {
            t.remember(&format!("s{i}"), "x".into(), Duration::ZERO);
        }
        t.remember("live", "y".into(), Duration::from_secs(60));
        assert_eq!(t.len(), 1);
        assert_eq!(t.token("live").as_deref(), Some("y"));
    }
}
