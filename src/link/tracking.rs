//! Server-assisted tracking of the session keys (`CLIENT TRACKING`), which
//! keeps the store's read cache (`store/texts.rs`) honest: the server tells
//! the link when a key under the prefix changes, and the link tells the
//! cache.
//!
//! The mode is `BCAST PREFIX <prefix> NOLOOP`: the server keeps no table of
//! the keys each client read; it reports every change under the prefix to
//! every store but the writer, batched per event-loop turn. Invalidations
//! come as RESP3 pushes on the link itself, read by the connection's own
//! task, so they are handled as soon as their bytes arrive.
//!
//! Whether a connection tracks is confirmed in the very pipeline whose
//! replies the cache may keep (the round's first command): `CLIENT GETREDIR`
//! answers 0 on a tracking connection, -1 on one that is not (a connection
//! the client opened again by itself); then the next round turns tracking on
//! again. A connection lost, a new link, a timeout: the cache forgets
//! everything ([`Tracking::lost`]), as the server's reports on the old
//! connection are gone with it.
//!
//! A connection can also go silent without breaking (a partition, a server
//! stopped): reports would stop, and nothing would say so. So a text is
//! served only while the link answered within [`FRESH_FOR`]: an answer comes
//! after every report the server sent before it, on the same connection. An
//! idle link is pinged every [`HEARTBEAT`] to stay fresh.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{AsyncPushSender, SendError};
use redis::{Cmd, PushInfo, PushKind, Value};

/// What the link tells the cache.
pub trait Invalidations: Send + Sync {
    /// These keys changed (or expired, or were evicted).
    fn keys(&self, keys: &[Value]);
    /// Anything may have changed: a flush, a connection lost.
    fn everything(&self);
}

/// Where a link's tracking stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TrackingState {
    /// The store was created without the read cache, or its topology has no
    /// tracking here (a cluster).
    Off = 0,
    /// Not known to track: the next round turns it on.
    Starting = 1,
    /// The last round confirmed it.
    On = 2,
    /// The server refused `CLIENT TRACKING` (an ACL, a server without it):
    /// the cache keeps no text for reads, as without it.
    Refused = 3,
}

impl TrackingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingState::Off => "off",
            TrackingState::Starting => "starting",
            TrackingState::On => "on",
            TrackingState::Refused => "refused",
        }
    }

    fn from_u8(v: u8) -> TrackingState {
        match v {
            1 => TrackingState::Starting,
            2 => TrackingState::On,
            3 => TrackingState::Refused,
            _ => TrackingState::Off,
        }
    }
}

/// One store's tracking: the command that turns it on, its state, and where
/// the server's pushes go.
pub struct Tracking {
    prefix: String,
    state: AtomicU8,
    listener: OnceLock<Arc<dyn Invalidations>>,
    /// When the link last answered, in ms after `since`.
    heard_ms: AtomicU64,
    since: Instant,
}

/// How long after the link's last answer the cache may still answer `get`s:
/// the longest a change can go unreported on a connection that went silent.
pub const FRESH_FOR: Duration = Duration::from_millis(1500);
/// An idle link that tracks is pinged this long after its last answer.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The push sender a link's clients are given: it hands invalidations to the
/// store's cache, from the connection's own task, without waiting.
#[derive(Clone)]
pub struct Pushes(Arc<Tracking>);

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let Some(listener) = self.0.listener.get() else {
            return Ok(());
        };
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => listener.keys(keys),
                // A flush (FLUSHDB, FLUSHALL) says null: everything.
                _ => listener.everything(),
            },
            // The connection is gone, and its reports with it.
            PushKind::Disconnection => self.0.lost(),
            _ => {}
        }
        Ok(())
    }
}

impl Tracking {
    /// Tracking of the keys under `prefix`; `enabled` false: none.
    pub fn new(prefix: &str, enabled: bool) -> Arc<Tracking> {
        Arc::new(Tracking {
            prefix: prefix.to_owned(),
            state: AtomicU8::new(if enabled { 1 } else { 0 }),
            listener: OnceLock::new(),
            heard_ms: AtomicU64::new(0),
            since: Instant::now(),
        })
    }

    /// The link answered: every report sent before the answer has been handled.
    pub fn heard(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.heard_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// How long since the link last answered.
    pub fn quiet_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Acquire));
        self.since.elapsed().saturating_sub(heard)
    }

    /// Whether a `get` may be answered from memory now: tracking is on and the
    /// link answered within [`FRESH_FOR`].
    pub fn serves(&self) -> bool {
        self.state() == TrackingState::On && self.quiet_for() < FRESH_FOR
    }

    /// The push sender for the link's clients.
    pub fn pushes(self: &Arc<Self>) -> Pushes {
        Pushes(Arc::clone(self))
    }

    /// Where invalidations go from now on (set once, by the store).
    pub fn listen(&self, listener: Arc<dyn Invalidations>) {
        let _ = self.listener.set(listener);
    }

    pub fn state(&self) -> TrackingState {
        TrackingState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set(&self, from: TrackingState, to: TrackingState) {
        let _ =
            self.state
                .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The command that opens a round whose replies the cache may keep:
    /// turning tracking on, or confirming it. None: no tracking.
    pub fn round_command(&self) -> Option<Cmd> {
        match self.state() {
            TrackingState::Starting => {
                let mut cmd = redis::cmd("CLIENT");
                cmd.arg("TRACKING").arg("ON").arg("BCAST");
                if !self.prefix.is_empty() {
                    cmd.arg("PREFIX").arg(&self.prefix);
                }
                cmd.arg("NOLOOP");
                Some(cmd)
            }
            TrackingState::On => {
                let mut cmd = redis::cmd("CLIENT");
                cmd.arg("GETREDIR");
                Some(cmd)
            }
            TrackingState::Off | TrackingState::Refused => None,
        }
    }

    /// Whether the reply to the round's [`round_command`](Self::round_command)
    /// shows that the connection which ran the round tracks.
    pub fn confirmed(&self, reply: &Value) -> bool {
        match reply {
            // Turned on.
            Value::Okay => {
                self.set(TrackingState::Starting, TrackingState::On);
                true
            }
            // GETREDIR: tracking, without redirection.
            Value::Int(0) => true,
            // GETREDIR: this connection does not track (opened again by the
            // client): the cache forgets, the next round turns it on.
            Value::Int(_) => {
                self.lost();
                false
            }
            // Tracking on already: the prefix is this store's own.
            Value::ServerError(e) if e.details().is_some_and(|d| d.contains("overlaps")) => {
                self.set(TrackingState::Starting, TrackingState::On);
                true
            }
            // NOPERM, an unknown subcommand: not on this server.
            Value::ServerError(_) => {
                self.set(TrackingState::Starting, TrackingState::Refused);
                false
            }
            _ => false,
        }
    }

    /// The connection was lost, or a new one opened: the server's reports
    /// may have been missed, so the cache forgets everything, and the next
    /// round turns tracking on (again: a server that refused it may be
    /// another one now).
    pub fn lost(&self) {
        if self.state() == TrackingState::Off {
            return;
        }
        self.state
            .store(TrackingState::Starting as u8, Ordering::Release);
        if let Some(listener) = self.listener.get() {
            listener.everything();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl Invalidations for Heard {
        fn keys(&self, keys: &[Value]) {
            for k in keys {
                if let Value::BulkString(b) = k {
                    self.0
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(b).into());
                }
            }
        }
        fn everything(&self) {
            self.0.lock().unwrap().push("*".into());
        }
    }

    #[test]
    fn pushes_reach_the_listener() {
        let t = Tracking::new("sess:", true);
        let heard = Arc::new(Heard::default());
        t.listen(heard.clone());
        let p = t.pushes();
        let keys = Value::Array(vec![Value::BulkString(b"sess:a".to_vec())]);
        p.send(PushInfo {
            kind: PushKind::Invalidate,
            data: vec![keys],
        })
        .unwrap();
        p.send(PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Nil],
        })
        .unwrap();
        p.send(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert_eq!(*heard.0.lock().unwrap(), ["sess:a", "*", "*"]);
        assert_eq!(t.state(), TrackingState::Starting);
    }

    #[test]
    fn states_follow_the_replies() {
        let t = Tracking::new("sess:", true);
        assert_eq!(t.state(), TrackingState::Starting);
        assert!(t.confirmed(&Value::Okay));
        assert_eq!(t.state(), TrackingState::On);
        assert!(t.confirmed(&Value::Int(0)));
        assert!(!t.confirmed(&Value::Int(-1)));
        assert_eq!(t.state(), TrackingState::Starting);
        let refused = redis::ServerError::try_from(redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "NOPERM",
        )));
        if let Ok(e) = refused {
            assert!(!t.confirmed(&Value::ServerError(e)));
            assert_eq!(t.state(), TrackingState::Refused);
        }
        let off = Tracking::new("sess:", false);
        assert!(off.round_command().is_none());
        off.lost();
        assert_eq!(off.state(), TrackingState::Off);
    }
}
