//! Every retry the store makes, and how long it waits: the place to change the
//! retry policy. A lost connection should fail calls fast with
//! `ERR_CONNECTION` while the server is down, instead of queueing them, and
//! come back soon after the server does; a merge that met another writer
//! tries again after a short random wait.
//!
//! - Reconnection within a call (a single server, a Sentinel master): the
//!   connection manager's settings, [`RECONNECT_RETRIES`] and its delays.
//! - A cluster's retries of a command on a failing node: [`CLUSTER_RETRIES`].
//!   Redirections (MOVED, ASK) are followed whatever it says.
//! - The background ping that revives a lost single-server connection
//!   ([`Revive`], used by `connection.rs`).
//! - A merge's compare-and-set that found the text changed by another writer
//!   ([`conflict_backoff`], used by `store/rounds.rs`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// A single server or a Sentinel master: reconnection attempts within a
/// call, and their delays.
pub const RECONNECT_RETRIES: usize = 2;
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// A single server, after its connection was lost: a background ping with
/// this backoff (doubling, capped) until the server answers, so the
/// connection is up again without waiting for a call.
pub const REVIVE_MIN_DELAY: Duration = Duration::from_millis(100);
pub const REVIVE_MAX_DELAY: Duration = Duration::from_millis(1000);
/// A cluster: retries of a command on a failing node (the crate's defaults
/// retry 16 times from 1.28 s apart).
pub const CLUSTER_RETRIES: u32 = 3;
pub const CLUSTER_MIN_WAIT_MS: u64 = 50;
pub const CLUSTER_MAX_WAIT_MS: u64 = 500;
/// A merge's backoff after its n-th conflict: a random wait up to 2^n ms, at
/// most this.
pub const MAX_CONFLICT_BACKOFF: Duration = Duration::from_millis(32);

/// The waits of the background ping that revives a lost connection: from
/// [`REVIVE_MIN_DELAY`], doubling, at most [`REVIVE_MAX_DELAY`].
pub struct Revive {
    delay: Duration,
}

impl Default for Revive {
    fn default() -> Self {
        Revive {
            delay: REVIVE_MIN_DELAY,
        }
    }
}

impl Revive {
    /// How long to wait before the next ping.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.delay;
        self.delay = (self.delay * 2).min(REVIVE_MAX_DELAY);
        wait
    }
}

/// A random wait before a merge retries after its n-th conflict, so that
/// writers that collided do not collide again in step.
pub fn conflict_backoff(conflicts: u32) -> Duration {
    let cap = (1u64 << conflicts.min(16)).min(MAX_CONFLICT_BACKOFF.as_micros() as u64 / 1000);
    let random = RandomState::new().hash_one(conflicts);
    Duration::from_micros(random % (cap * 1000 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn backoff_is_random_and_capped() {
        for n in 1..40 {
            let d = conflict_backoff(n);
            assert!(d <= MAX_CONFLICT_BACKOFF, "{d:?}");
            assert!(d <= Duration::from_millis(1 << n.min(16)));
        }
        let spread: HashSet<Duration> = (0..50).map(|_| conflict_backoff(5)).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn revive_doubles_up_to_its_cap() {
        let mut r = Revive::default();
        let waits: Vec<Duration> = (0..6).map(|_| r.next_wait()).collect();
        assert_eq!(waits[0], REVIVE_MIN_DELAY);
        assert_eq!(waits[1], REVIVE_MIN_DELAY * 2);
        assert_eq!(*waits.last().unwrap(), REVIVE_MAX_DELAY);
    }
}
