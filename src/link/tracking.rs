//! Server-assisted tracking of the session keys (`CLIENT TRACKING`), which
//! keeps the store's read cache (`store/texts.rs`) honest: the server tells
//! the link when a session key whose text the cache keeps changes, and the
//! link tells the cache.
//!
//! The mode is `OPTIN NOLOOP`: the server remembers which keys this link
//! asked it to (`CLIENT CACHING YES` before the read: only the session keys
//! whose texts the cache keeps, not lock keys or a merge's read) and reports
//! a change to one of them once, to the readers but the writer. Redis writes
//! a turn's replies client by client, the client whose first reply of the
//! turn came last first: a caching writer's transaction (`MULTI` is its
//! first reply) has its reports written before its `EXEC`'s reply, unless a
//! reader's reports connection already had something due in that turn — an
//! answer to the store's own question (so no text is served while one is
//! out: [`Tracking::asking`]), or another writer's report. (`BCAST` sends its
//! reports only at the end of the server's event-loop turn, after the
//! writer's reply: a reader told at once read the old text 31 times in 2,000
//! rounds. Default mode would track every key the link reads. OPTOUT, which
//! spares each tracked op its `CLIENT CACHING YES` but tracks every read
//! the cache does not keep, measured on Redis 7.0 and 8.6 at 1 KB and 32 or
//! 128 clients within the runs' noise of OPTIN in Redis µs per request:
//! OPTIN is kept.)
//!
//! The reports come on a connection of their own, the *reports connection*,
//! which carries nothing else: the data connection tracks with `REDIRECT` to
//! it (`CLIENT TRACKING ON REDIRECT <its id>`). So whether a report waits
//! unread can be asked while the data connection has replies in flight: a
//! busy store answers hits as an idle one does. (On one connection, a report
//! sits among the replies, and "nothing unread" could be asked only while
//! nothing was in flight.) The order of a reply and a report no longer
//! follows the server's: the tickets (`texts.rs`) keep a reply out of the
//! cache when a report on its key was handled after it was planned, and a
//! report handled after the reply drops the text it kept.
//!
//! Whether a connection tracks is confirmed in the very pipeline whose
//! replies the cache may keep (the round's first command): `CLIENT GETREDIR`
//! answers the reports connection's id on a connection that tracks into it,
//! another number on one that does not (-1: a connection the client opened
//! again by itself; another id: an older link's); then the next round turns
//! tracking on again. A connection lost (either one), a new link, a timeout:
//! the cache forgets everything ([`Tracking::lost`]), as the server's reports
//! on the old connection are gone with it.
//!
//! A connection can also go silent without breaking (a partition, a server
//! stopped): reports would stop, and nothing would say so. So a text is
//! served only while the reports connection answered within [`FRESH_FOR`]:
//! an answer comes after every report the server sent before it, on the same
//! connection. The store asks the reports connection the watch's question
//! ([`watch_question`]) every [`HEARTBEAT`], which keeps it fresh and finds
//! what no report says (a SWAPDB, an eviction or a tracking-table drop
//! caused by the store's own command, a `maxmemory` set at run time): see
//! [`Tracking::watched`].
//!
//! And a report may have arrived without being handled yet: the connection's
//! task reads it on a runtime thread, while the `get` that should see it runs
//! on JavaScript's. A writer's reply and the report to the readers leave the
//! server together, so a reader told by the writer at once could find its
//! text before its own thread read the report. So the store opens the
//! reports connection itself and watches its socket ([`SocketWatch`]): a
//! text is served only when that socket has nothing to read (no byte, no
//! end) and the connection's task has handled all it read.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    state: AtomicU8,
    /// The server may evict keys (a `maxmemory` and a policy other than
    /// `noeviction`, or unknown): an eviction the store's own write caused is
    /// not reported to it (NOLOOP), so the cache answers no `get`.
    may_evict: AtomicBool,
    /// The server's tracking table is past half its limit, or the server
    /// would not say (`INFO` refused): a key the server drops from a full
    /// table while running the store's own command is not reported to it
    /// (NOLOOP), so the cache answers no `get`.
    crowded: AtomicBool,
    /// The server is Redis before 6.2, which sends the report of a script's
    /// own write inside the reply of the transaction around it (NOLOOP does
    /// not hold for scripts there): a tracked merge's reply would not parse,
    /// so the cache stands aside. Learned when the link opens.
    unsupported: AtomicBool,
    /// What the watch counted at its last look (SWAPDB calls, keys
    /// evicted): a change means texts may be stale with no report.
    counted: Mutex<Counted>,
    listener: OnceLock<Arc<dyn Invalidations>>,
    /// When the link last answered, in ms after `since`.
    heard_ms: AtomicU64,
    /// Questions of the store's own out on the reports connection, not yet
    /// answered ([`Tracking::asking`]).
    asking: AtomicU32,
    since: Instant,
    /// The socket of the current reports connection.
    socket: Mutex<Option<Arc<SocketWatch>>>,
    /// The current reports connection's id (`CLIENT ID`), which the data
    /// connection redirects its reports to; 0: none (not open yet, or gone);
    /// [`REFUSED`]: the server would not say.
    redirect: AtomicI64,
    /// Set when the connection closed: the next call opens another.
    broken: AtomicBool,
    /// Connections opened (the current one's number).
    connections: AtomicU64,
}

/// A watched connection's socket: whether it holds bytes not read yet, and
/// whether the connection's task handled all it read (its last read found
/// nothing more).
pub struct SocketWatch {
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
    drained: AtomicBool,
}

impl SocketWatch {
    pub fn of(stream: &tokio::net::TcpStream) -> SocketWatch {
        #[cfg(not(unix))]
        let _ = stream;
        SocketWatch {
            #[cfg(unix)]
            fd: std::os::fd::AsRawFd::as_raw_fd(stream),
            drained: AtomicBool::new(false),
        }
    }

    /// Nothing came that the store has not handled. The socket is asked
    /// first, the reader's state after: a read that took bytes out of the
    /// socket after the first question cleared `drained` before it did.
    /// (Asked the other way round, a read could start and empty the socket
    /// in between, and a report it took be missed.)
    pub fn quiet(&self) -> bool {
        #[cfg(unix)]
        {
            let mut socket = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, no wait. The fd stays open while the watch
            // is the current one (a closed connection is replaced before its
            // watch could be asked again, and a reused fd only makes this
            // answer "not quiet"). Readable: bytes, or the end of the
            // connection, wait to be read.
            let ready = unsafe { libc::poll(&mut socket, 1, 0) };
            ready == 0 && self.drained.load(Ordering::SeqCst)
        }
        #[cfg(not(unix))]
        false
    }
}

/// A stream whose reads tell its [`SocketWatch`] whether the reader is done.
pub struct Watched<S> {
    inner: S,
    watch: Arc<SocketWatch>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, watch: Arc<SocketWatch>) -> Self {
        Watched { inner, watch }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Not done from the moment bytes may leave the socket until a read
        // finds no more: the reader then handled everything before it.
        self.watch.drained.store(false, Ordering::SeqCst);
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_pending() {
            self.watch.drained.store(true, Ordering::SeqCst);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A question of the store's out on the reports connection
/// ([`Tracking::asking`]).
pub struct Asking<'a>(&'a Tracking);

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.0.asking.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Tracking::redirect` when the server refused `CLIENT ID`.
const REFUSED: i64 = -1;

/// How long after the link's last answer the cache may still answer `get`s:
/// the longest a change can go unreported on a connection that went silent.
pub const FRESH_FOR: Duration = Duration::from_millis(1500);
/// How often the store asks its link the watch's question (`connection.rs`).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The push sender a link's clients are given: it hands invalidations to the
/// store's cache, from the connection's own task, without waiting.
#[derive(Clone)]
pub struct Pushes(Arc<Tracking>, u64);

impl Pushes {
    /// The pushes of a new link, whose reports connection has this socket
    /// (its data connection sends the same pushes: its end): from now on,
    /// those of an older link (its end, as it is dropped) are not heard. The
    /// reports go nowhere until [`Pushes::redirect_to`] names the
    /// connection.
    pub fn watching(&self, watch: Arc<SocketWatch>) -> Pushes {
        let t = &self.0;
        let id = t.connections.fetch_add(1, Ordering::AcqRel) + 1;
        *t.socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(watch);
        t.redirect.store(0, Ordering::Release);
        t.broken.store(false, Ordering::Release);
        Pushes(Arc::clone(t), id)
    }

    /// The server would not say the reports connection's id (an ACL without
    /// `CLIENT ID`): no tracking, as where `CLIENT TRACKING` is refused.
    pub fn refused(&self) {
        if self.1 == self.0.connections.load(Ordering::Acquire) {
            self.0.redirect.store(REFUSED, Ordering::Release);
        }
    }

    /// The reports connection of this link is open, with this `CLIENT ID`:
    /// the next round turns tracking on with `REDIRECT` to it.
    pub fn redirect_to(&self, client_id: i64) {
        if self.1 == self.0.connections.load(Ordering::Acquire) {
            self.0.redirect.store(client_id, Ordering::Release);
        }
    }
}

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let Some(listener) = self.0.listener.get() else {
            return Ok(());
        };
        if self.1 != 0 && self.1 != self.0.connections.load(Ordering::Acquire) {
            return Ok(()); // an older connection's
        }
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => listener.keys(keys),
                // A flush (FLUSHDB, FLUSHALL) says null: everything.
                _ => listener.everything(),
            },
            // A connection of the link is gone (the reports connection, and
            // its reports with it; or the data connection), or the server
            // found the reports connection gone (`tracking-redir-broken`,
            // on the data connection): the link is opened again.
            PushKind::Disconnection => self.0.broken(),
            PushKind::Other(ref kind) if kind == "tracking-redir-broken" => self.0.broken(),
            _ => {}
        }
        Ok(())
    }
}

impl Tracking {
    /// A store's tracking; `enabled` false: none.
    pub fn new(enabled: bool) -> Arc<Tracking> {
        Arc::new(Tracking {
            state: AtomicU8::new(if enabled { 1 } else { 0 }),
            may_evict: AtomicBool::new(false),
            crowded: AtomicBool::new(false),
            unsupported: AtomicBool::new(false),
            counted: Mutex::new(Counted::default()),
            listener: OnceLock::new(),
            heard_ms: AtomicU64::new(0),
            asking: AtomicU32::new(0),
            since: Instant::now(),
            socket: Mutex::new(None),
            redirect: AtomicI64::new(0),
            broken: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        })
    }

    /// The reports connection answered: every report sent to it before the
    /// answer has been handled.
    pub fn heard(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.heard_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// A question of the store's is out on the reports connection until the
    /// guard is dropped (after its answer was handled): no text is served
    /// meanwhile. Redis writes a turn's replies client by client, the one
    /// that got its first reply of the turn last first; a reports connection
    /// with an answer due in the turn of another client's write is written
    /// after that writer's reply, even a transaction's, so a reader the
    /// writer told at once could find the report not there yet (seen with
    /// `strace` on Redis 7.0 and 8.6: the report first in 200 of 200
    /// transactions, after in 196-197 of 200 with a question sent to the
    /// reports connection just before).
    pub fn asking(&self) -> Asking<'_> {
        self.asking.fetch_add(1, Ordering::SeqCst);
        Asking(self)
    }

    /// How long since the link last answered.
    pub fn quiet_for(&self) -> Duration {
        let heard = Duration::from_millis(self.heard_ms.load(Ordering::Acquire));
        self.since.elapsed().saturating_sub(heard)
    }

    /// Whether a `get` may be answered from memory now: tracking is on, the
    /// reports connection answered within [`FRESH_FOR`], has no question of
    /// the store's out, and holds nothing unread.
    pub fn serves(&self) -> bool {
        self.state() == TrackingState::On
            && self.quiet_for() < FRESH_FOR
            && !self.stands_aside()
            && self.asking.load(Ordering::SeqCst) == 0
            && self
                .socket
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_ref()
                .is_some_and(|s| s.quiet())
    }

    /// The push sender for the link's clients.
    pub fn pushes(self: &Arc<Self>) -> Pushes {
        Pushes(Arc::clone(self), 0)
    }

    /// A connection of the link closed: the reports go nowhere now, so the
    /// cache forgets, and the next call opens another link.
    fn broken(&self) {
        self.redirect.store(0, Ordering::Release);
        self.broken.store(true, Ordering::Release);
        self.lost()
    }

    /// Whether a connection of the link closed since last asked (the next
    /// call opens another link).
    pub fn take_broken(&self) -> bool {
        self.broken.swap(false, Ordering::AcqRel)
    }

    /// Where invalidations go from now on (set once, by the store).
    pub fn listen(&self, listener: Arc<dyn Invalidations>) {
        let _ = self.listener.set(listener);
    }

    /// Whether the store was built with the read cache (`readCache`).
    pub fn enabled(&self) -> bool {
        self.state() != TrackingState::Off
    }

    pub fn state(&self) -> TrackingState {
        TrackingState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// What the link's server answered the watch's question
    /// ([`watch_question`]), when the link opened and every [`HEARTBEAT`]
    /// since: whether the cache must stand aside, and whether what it holds
    /// may have gone stale with no report (a SWAPDB, an eviction), in which
    /// case every text goes. Standing aside drops them too: they are not
    /// served again when the cache comes back.
    pub fn watched(&self, replies: &[Value]) {
        let seen = Seen::of(replies);
        let was_aside = self.stands_aside();
        self.may_evict.store(seen.may_evict, Ordering::Release);
        self.crowded.store(seen.crowded, Ordering::Release);
        if let Some(unsupported) = seen.unsupported {
            self.unsupported.store(unsupported, Ordering::Release);
        }
        let changed = {
            let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
            let changed = counted.changed(&seen.counted);
            *counted = seen.counted;
            changed
        };
        if changed || (!was_aside && self.stands_aside()) {
            self.flush();
        }
    }

    /// Every text goes (the link stays as it is).
    fn flush(&self) {
        if let Some(listener) = self.listener.get() {
            listener.everything();
        }
    }

    /// Whether the cache stands aside: the server may evict keys, or its
    /// tracking table is crowded.
    pub fn stands_aside(&self) -> bool {
        self.aside().is_some()
    }

    /// Why the cache stands aside (`stats().readCache.tracking`), if it does.
    pub fn aside(&self) -> Option<&'static str> {
        if self.unsupported.load(Ordering::Acquire) {
            Some("unsupported")
        } else if self.may_evict.load(Ordering::Acquire) {
            Some("evicting")
        } else if self.crowded.load(Ordering::Acquire) {
            Some("crowded")
        } else {
            None
        }
    }

    fn set(&self, from: TrackingState, to: TrackingState) {
        let _ =
            self.state
                .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The command that opens a round whose replies the cache may keep:
    /// turning tracking on (its reports to the reports connection), or
    /// confirming it. None: no tracking (nor while no reports connection is
    /// open).
    pub fn round_command(&self) -> Option<Cmd> {
        if self.stands_aside() {
            return None;
        }
        let redirect = self.redirect.load(Ordering::Acquire);
        if redirect == REFUSED {
            self.set(TrackingState::Starting, TrackingState::Refused);
        }
        if redirect <= 0 {
            return None;
        }
        match self.state() {
            TrackingState::Starting => {
                let mut cmd = redis::cmd("CLIENT");
                cmd.arg("TRACKING")
                    .arg("ON")
                    .arg("REDIRECT")
                    .arg(redirect)
                    .arg("OPTIN")
                    .arg("NOLOOP");
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
            // GETREDIR: tracking, into the current reports connection.
            Value::Int(id) if *id > 0 && *id == self.redirect.load(Ordering::Acquire) => true,
            // GETREDIR: this connection does not track (-1: opened again by
            // the client), or into another reports connection (an older
            // link's): the cache forgets, the next round turns it on.
            Value::Int(_) => {
                self.lost();
                false
            }
            // The reports connection named is gone (the round was planned
            // before its end was heard): the link is opened again.
            Value::ServerError(e) if e.details().is_some_and(|d| d.contains("redirect")) => false,
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

/// Asked when a link that caches opens, and every [`HEARTBEAT`] after
/// (`connection.rs`): what the server says of evictions (`CONFIG GET
/// maxmemory`, `maxmemory-policy`), its tracking table's limit (`CONFIG GET
/// tracking-table-max-keys`), and what it counts (`INFO stats`:
/// `tracking_total_keys`, `evicted_keys`; `INFO commandstats`: SWAPDB's
/// calls). These are the events a server does not report to the store that
/// caused them, or at all (`Seen`). When the link opens (`opening`), also
/// `INFO server`: which server it is.
pub fn watch_question(opening: bool) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("CONFIG").arg("GET").arg("maxmemory");
    pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
    pipe.cmd("CONFIG").arg("GET").arg("tracking-table-max-keys");
    pipe.cmd("INFO").arg("stats");
    pipe.cmd("INFO").arg("commandstats");
    if opening {
        pipe.cmd("INFO").arg("server");
    }
    pipe
}

/// What the watch counts: a change between two looks means texts may be
/// stale with no report. None: the server would not say.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counted {
    /// SWAPDB's calls (no server here reports a SWAPDB to the clients that
    /// track the keys it swaps).
    swapdb: Option<u64>,
    /// Keys evicted (an eviction during the store's own command is not
    /// reported to it).
    evicted: Option<u64>,
}

impl Counted {
    /// Whether something counted changed since `self`.
    fn changed(&self, now: &Counted) -> bool {
        let moved = |a: Option<u64>, b: Option<u64>| matches!((a, b), (Some(a), Some(b)) if a != b);
        moved(self.swapdb, now.swapdb) || moved(self.evicted, now.evicted)
    }
}

/// The replies to [`watch_question`], read.
#[derive(Debug)]
struct Seen {
    may_evict: bool,
    crowded: bool,
    /// Redis before 6.2 (None: not asked, or not said).
    unsupported: Option<bool>,
    counted: Counted,
}

impl Seen {
    fn of(replies: &[Value]) -> Seen {
        let limit = config_value(replies.get(2)).and_then(|v| v.parse::<u64>().ok());
        let stats = info_text(replies.get(3));
        let commands = info_text(replies.get(4));
        let tracked = stats
            .as_deref()
            .and_then(|t| info_field(t, "tracking_total_keys"));
        let server = info_text(replies.get(5));
        Seen {
            unsupported: server.as_deref().map(|t| {
                let field = |name: &str| {
                    t.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .map(str::trim)
                };
                let valkey =
                    field("server_name") == Some("valkey") || field("valkey_version").is_some();
                let mut version = field("redis_version").unwrap_or("0").split('.');
                let mut part = || {
                    version
                        .next()
                        .and_then(|p| p.parse::<u32>().ok())
                        .unwrap_or(0)
                };
                !valkey && (part(), part()) < (6, 2)
            }),
            may_evict: may_evict(replies),
            // Past half the limit (0: none), or not known.
            crowded: match (limit, tracked) {
                (Some(0), Some(_)) => false,
                (Some(limit), Some(tracked)) => tracked.saturating_mul(2) > limit,
                _ => true,
            } || commands.is_none(),
            counted: Counted {
                // A server never asked for SWAPDB lists no line for it.
                swapdb: commands.as_deref().map(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("cmdstat_swapdb:calls="))
                        .and_then(|rest| rest.split(',').next()?.parse().ok())
                        .unwrap_or(0)
                }),
                evicted: stats.as_deref().and_then(|t| info_field(t, "evicted_keys")),
            },
        }
    }
}

/// The value of a `CONFIG GET` reply (RESP3 map or RESP2 array).
fn config_value(reply: Option<&Value>) -> Option<String> {
    let v = match reply? {
        Value::Map(pairs) => pairs.first().map(|(_, v)| v)?,
        Value::Array(items) => items.get(1)?,
        _ => return None,
    };
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The text of an `INFO` reply (a verbatim string in RESP3).
fn info_text(reply: Option<&Value>) -> Option<String> {
    match reply? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A number field of an `INFO` text.
fn info_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Whether the replies to [`watch_question`] leave room for an eviction:
/// a memory limit with an evicting policy, or replies that do not say (an
/// ACL without CONFIG).
fn may_evict(replies: &[Value]) -> bool {
    match (config_value(replies.first()), config_value(replies.get(1))) {
        (Some(limit), _) if limit == "0" => false,
        (Some(_), Some(policy)) => policy != "noeviction",
        _ => true,
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
        let t = Tracking::new(true);
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
    fn evictions_are_possible_unless_the_server_says_otherwise() {
        let pair = |k: &str, v: &str| {
            Value::Map(vec![(
                Value::BulkString(k.as_bytes().to_vec()),
                Value::BulkString(v.as_bytes().to_vec()),
            )])
        };
        let ask = |limit: &str, policy: &str| {
            may_evict(&[pair("maxmemory", limit), pair("maxmemory-policy", policy)])
        };
        assert!(!ask("0", "allkeys-lru"));
        assert!(!ask("1000", "noeviction"));
        assert!(ask("1000", "volatile-lru"));
        assert!(may_evict(&[Value::Nil, Value::Nil]));
    }

    /// Replies to the watch's question.
    fn replies(
        maxmemory: &str,
        table: &str,
        tracked: u64,
        evicted: u64,
        swapdb: Option<u64>,
    ) -> Vec<Value> {
        let pair = |k: &str, v: &str| {
            Value::Map(vec![(
                Value::BulkString(k.as_bytes().to_vec()),
                Value::BulkString(v.as_bytes().to_vec()),
            )])
        };
        let stats =
            format!("# Stats\r\nevicted_keys:{evicted}\r\ntracking_total_keys:{tracked}\r\n");
        let commands = match swapdb {
            Some(n) => format!("# Commandstats\r\ncmdstat_get:calls=9,usec=1\r\ncmdstat_swapdb:calls={n},usec=3,usec_per_call=1.00\r\n"),
            None => "# Commandstats\r\ncmdstat_get:calls=9,usec=1\r\n".to_owned(),
        };
        vec![
            pair("maxmemory", maxmemory),
            pair("maxmemory-policy", "allkeys-lru"),
            pair("tracking-table-max-keys", table),
            Value::VerbatimString {
                format: redis::VerbatimFormat::Text,
                text: stats,
            },
            Value::BulkString(commands.into_bytes()),
        ]
    }

    #[test]
    fn the_watch_stands_aside_and_flushes_on_what_no_report_says() {
        let t = Tracking::new(true);
        let heard = Arc::new(Heard::default());
        t.listen(heard.clone());
        let flushes = || heard.0.lock().unwrap().iter().filter(|k| *k == "*").count();
        t.watched(&replies("0", "1000", 10, 0, None));
        assert_eq!((t.aside(), flushes()), (None, 0));
        // SWAPDB called since (no line: never called): everything goes.
        t.watched(&replies("0", "1000", 10, 0, Some(1)));
        assert_eq!((t.aside(), flushes()), (None, 1));
        t.watched(&replies("0", "1000", 10, 0, Some(1)));
        assert_eq!(flushes(), 1, "nothing changed");
        t.watched(&replies("0", "1000", 10, 0, Some(2)));
        assert_eq!(flushes(), 2);
        // Keys evicted since the last look.
        t.watched(&replies("0", "1000", 10, 5, Some(2)));
        assert_eq!(flushes(), 3);
        // A maxmemory set at run time: aside, and the texts go.
        t.watched(&replies("1mb", "1000", 10, 5, Some(2)));
        assert_eq!((t.aside(), flushes()), (Some("evicting"), 4));
        t.watched(&replies("0", "1000", 10, 5, Some(2)));
        assert_eq!((t.aside(), flushes()), (None, 4));
        // The tracking table past half its limit (0: no limit).
        t.watched(&replies("0", "1000", 501, 5, Some(2)));
        assert_eq!((t.aside(), flushes()), (Some("crowded"), 5));
        t.watched(&replies("0", "0", 5001, 5, Some(2)));
        assert_eq!(t.aside(), None);
        // A server that will not say (INFO refused) is crowded.
        let mut refused = replies("0", "0", 1, 5, Some(2));
        refused[3] = Value::Nil;
        refused[4] = Value::Nil;
        t.watched(&refused);
        assert_eq!(t.aside(), Some("crowded"));
        // Redis before 6.2, told when the link opens: aside until the next
        // link says otherwise (the heartbeat's question does not ask).
        let server = |version: &str, name: &str| {
            let mut r = replies("0", "0", 1, 5, Some(2));
            r.push(Value::BulkString(
                format!("# Server\r\nredis_version:{version}\r\nserver_name:{name}\r\n")
                    .into_bytes(),
            ));
            r
        };
        t.watched(&server("6.0.16", "redis"));
        assert_eq!(t.aside(), Some("unsupported"));
        t.watched(&replies("0", "0", 1, 5, Some(2)));
        assert_eq!(t.aside(), Some("unsupported"));
        t.watched(&server("6.2.0", "redis"));
        assert_eq!(t.aside(), None);
        t.watched(&server("7.2.4", "valkey"));
        assert_eq!(t.aside(), None);
    }

    #[test]
    fn states_follow_the_replies() {
        let t = Tracking::new(true);
        t.listen(Arc::new(Heard::default()));
        assert_eq!(t.state(), TrackingState::Starting);
        // No reports connection yet: no tracked round.
        assert!(t.round_command().is_none());
        t.pushes().redirect_to(7);
        let on = t.round_command().expect("a command that turns tracking on");
        assert_eq!(
            on.args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>(),
            ["CLIENT", "TRACKING", "ON", "REDIRECT", "7", "OPTIN", "NOLOOP"]
        );
        assert!(t.confirmed(&Value::Okay));
        assert_eq!(t.state(), TrackingState::On);
        // GETREDIR: into the reports connection.
        assert!(t.confirmed(&Value::Int(7)));
        // Into another one (an older link's), or none: forgotten, turned on again.
        assert!(!t.confirmed(&Value::Int(5)));
        assert_eq!(t.state(), TrackingState::Starting);
        assert!(t.confirmed(&Value::Okay));
        assert!(!t.confirmed(&Value::Int(-1)));
        assert_eq!(t.state(), TrackingState::Starting);
        // The reports connection named is gone: not refused, the link opens again.
        let gone =
            redis::parse_redis_value(b"-ERR The client ID you want redirect to does not exist\r\n")
                .expect("a server's error");
        assert!(!t.confirmed(&gone));
        assert_eq!(t.state(), TrackingState::Starting);
        // Its end heard: no tracked round until the next link's.
        t.pushes()
            .send(PushInfo {
                kind: PushKind::Other("tracking-redir-broken".into()),
                data: vec![],
            })
            .unwrap();
        assert!(t.take_broken());
        assert!(t.round_command().is_none());
        t.pushes().redirect_to(8);
        // An ACL without CLIENT TRACKING (this check never ran before: the
        // error was built in a way that is not a server's).
        let refused = redis::parse_redis_value(
            b"-NOPERM User has no permissions to run the 'client|tracking' command\r\n",
        )
        .expect("a server's error");
        assert!(matches!(refused, Value::ServerError(_)));
        assert!(!t.confirmed(&refused));
        assert_eq!(t.state(), TrackingState::Refused);
        let off = Tracking::new(false);
        assert!(off.round_command().is_none());
        off.lost();
        assert_eq!(off.state(), TrackingState::Off);
    }
}
