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

/// Expired tokens are pruned once this many are remembered, and then again
/// each time the count has doubled since the last prune: O(1) per lock on
/// average, however many locks are held.
const PRUNE_ABOVE: usize = 4096;

#[derive(Default)]
struct Held {
    tokens: HashMap<String, (String, Instant)>,
    /// The count that triggers the next prune (0: PRUNE_ABOVE).
    prune_at: usize,
}

#[derive(Default)]
pub struct LockTokens {
    held: Mutex<Held>,
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
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers the token of a lock this store took.
    pub fn remember(&self, id: &str, token: String, ttl: Duration) {
        let mut held = self.held();
        held.insert(id, token, Instant::now() + ttl);
    }

    /// Remembers the token of a `lock()` whose outcome is unknown (it timed
    /// out or its connection broke after the command was sent): Redis may
    /// still have taken it, and a later `unlock()` then releases it. A live
    /// token this store holds for the session is kept: while it lives, the
    /// unknown `SET NX` cannot have succeeded.
    pub fn remember_unconfirmed(&self, id: &str, token: String, ttl: Duration) {
        let now = Instant::now();
        let mut held = self.held();
        if held
            .tokens
            .get(id)
            .is_none_or(|(_, expires)| *expires <= now)
        {
            held.insert(id, token, now + ttl);
        }
    }

    pub fn token(&self, id: &str) -> Option<String> {
        self.held().tokens.get(id).map(|(t, _)| t.clone())
    }

    /// Forgets the token of `id` if it is still `token`.
    pub fn forget_if(&self, id: &str, token: &str) {
        let mut held = self.held();
        if held.tokens.get(id).is_some_and(|(t, _)| t == token) {
            held.tokens.remove(id);
        }
    }

    pub fn forget(&self, id: &str) {
        self.held().tokens.remove(id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held().tokens.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Held {
    fn insert(&mut self, id: &str, token: String, expires: Instant) {
        self.tokens.insert(id.to_owned(), (token, expires));
        if self.tokens.len() >= self.prune_at.max(PRUNE_ABOVE) {
            let now = Instant::now();
            self.tokens.retain(|_, (_, expires)| *expires > now);
            self.prune_at = 2 * self.tokens.len();
        }
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
    fn an_unconfirmed_token_never_replaces_a_live_one() {
        let t = LockTokens::default();
        t.remember_unconfirmed("s", "maybe".into(), Duration::from_secs(5));
        assert_eq!(t.token("s").as_deref(), Some("maybe"));
        t.remember("s", "held".into(), Duration::from_secs(5));
        t.remember_unconfirmed("s", "other".into(), Duration::from_secs(5));
        assert_eq!(t.token("s").as_deref(), Some("held"));
        t.remember("s", "gone".into(), Duration::ZERO);
        t.remember_unconfirmed("s", "next".into(), Duration::from_secs(5));
        assert_eq!(t.token("s").as_deref(), Some("next"));
        // An unconfirmed token lives its ttl too: while it does, a second
        // unknown SET NX cannot have succeeded.
        t.remember_unconfirmed("s", "later".into(), Duration::from_secs(5));
        assert_eq!(t.token("s").as_deref(), Some("next"));
        assert!(!t.is_empty());
    }

    #[test]
    fn many_live_tokens_are_not_scanned_on_every_lock() {
        let t = LockTokens::default();
        for i in 0..60_000 {
            t.remember(&format!("s{i}"), "x".into(), Duration::from_secs(60));
        }
        // The last prune kept every live token and set the next one at twice that.
        let held = t.held();
        assert_eq!(held.tokens.len(), 60_000);
        assert!(
            held.prune_at > 60_000 && held.prune_at <= 2 * 60_000,
            "{}",
            held.prune_at
        );
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
