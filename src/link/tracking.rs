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

/// One store's tracking: its state, where the server's pushes go, and the
/// reports connections ([`Feed`]): one on a single server, one per master on
/// a cluster.
pub struct Tracking {
    state: AtomicU8,
    /// A cluster: a feed per master, and each tracked op confirms on its own
    /// which master ran it ([`Tracking::unit_confirmed`]).
    cluster: bool,
    listener: OnceLock<Arc<dyn Invalidations>>,
    /// The current feeds (a replaced or closed one is retired and dropped
    /// from here).
    feeds: Mutex<Vec<Arc<Feed>>>,
    /// A cluster: every master had a feed at the heartbeat's last look.
    complete: AtomicBool,
    /// Set when a single server's connection closed: the next call opens
    /// another link.
    broken: AtomicBool,
}

/// One reports connection: the server (on a cluster, the master) whose
/// reports it carries, its socket, its `CLIENT ID`, when it last answered,
/// and what the watch saw on its server.
pub struct Feed {
    /// The cluster node it goes to (`CLUSTER MYID`); empty on a single server.
    node: String,
    /// None only in tests that have no connection.
    socket: Option<Arc<SocketWatch>>,
    /// Its `CLIENT ID`, which data connections redirect their reports to; 0:
    /// not known yet; [`REFUSED`]: the server would not say.
    redirect: AtomicI64,
    /// When it last answered, in ms after `since`; [`NEVER`]: not yet.
    heard_ms: AtomicU64,
    since: Instant,
    /// Questions of the store's out on it, not yet answered
    /// ([`Tracking::asking`]).
    asking: AtomicU32,
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
    /// so the cache stands aside. Learned when the feed opens.
    unsupported: AtomicBool,
    /// What the watch counted at its last look (SWAPDB calls, keys
    /// evicted): a change means texts may be stale with no report.
    counted: Mutex<Counted>,
    /// Replaced by a newer connection, or closed: its pushes are not heard.
    retired: AtomicBool,
}

/// `Feed::heard_ms` before its first answer.
const NEVER: u64 = u64::MAX;

impl Feed {
    fn new(node: String, socket: Option<Arc<SocketWatch>>) -> Arc<Feed> {
        Arc::new(Feed {
            node,
            socket,
            redirect: AtomicI64::new(0),
            heard_ms: AtomicU64::new(NEVER),
            since: Instant::now(),
            asking: AtomicU32::new(0),
            may_evict: AtomicBool::new(false),
            crowded: AtomicBool::new(false),
            unsupported: AtomicBool::new(false),
            counted: Mutex::new(Counted::default()),
            retired: AtomicBool::new(false),
        })
    }

    /// How long since it last answered.
    fn quiet_for(&self) -> Duration {
        match self.heard_ms.load(Ordering::Acquire) {
            NEVER => Duration::MAX,
            ms => self
                .since
                .elapsed()
                .saturating_sub(Duration::from_millis(ms)),
        }
    }

    /// Why the cache stands aside on its server, if it does.
    fn aside(&self) -> Option<&'static str> {
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

    /// Whether, as far as this feed goes, a text may be served now: it
    /// answered within [`FRESH_FOR`], has no question of the store's out,
    /// holds nothing unread, and its server gives no reason to stand aside.
    fn serves(&self) -> bool {
        self.quiet_for() < FRESH_FOR
            && self.aside().is_none()
            && self.asking.load(Ordering::SeqCst) == 0
            && self.socket.as_ref().is_some_and(|s| s.quiet())
    }
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
    /// A watch of no socket: never quiet (tests without a connection).
    #[cfg(test)]
    pub fn detached() -> SocketWatch {
        SocketWatch {
            #[cfg(unix)]
            fd: -1,
            drained: AtomicBool::new(false),
        }
    }

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

/// A question of the store's out on a reports connection
/// ([`Tracking::asking`]).
pub struct Asking(Arc<Feed>);

impl Drop for Asking {
    fn drop(&mut self) {
        self.0.asking.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Feed::redirect` when the server refused `CLIENT ID`.
const REFUSED: i64 = -1;

/// How long after the link's last answer the cache may still answer `get`s:
/// the longest a change can go unreported on a connection that went silent.
pub const FRESH_FOR: Duration = Duration::from_millis(1500);
/// How often the store asks its link the watch's question (`connection.rs`).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The push sender a link's clients are given: it hands invalidations to the
/// store's cache, from the connection's own task, without waiting. With a
/// feed, the pushes of that reports connection (on a single server, of its
/// data connection too); without, those of connections that carry no
/// reports (a cluster's data connections).
#[derive(Clone)]
pub struct Pushes(Arc<Tracking>, Option<Arc<Feed>>);

impl Pushes {
    /// The pushes of a single server's new link, whose reports connection
    /// has this socket (its data connection sends the same pushes: its end):
    /// from now on, those of an older link (its end, as it is dropped) are
    /// not heard. The reports go nowhere until [`Pushes::redirect_to`] names
    /// the connection.
    pub fn watching(&self, socket: Arc<SocketWatch>) -> Pushes {
        let t = &self.0;
        let feed = Feed::new(String::new(), Some(socket));
        let old = std::mem::replace(&mut *t.feeds(), vec![Arc::clone(&feed)]);
        for f in old {
            f.retired.store(true, Ordering::Release);
        }
        t.broken.store(false, Ordering::Release);
        Pushes(Arc::clone(t), Some(feed))
    }

    /// The pushes of a new reports connection to the cluster node `node`
    /// (`CLUSTER MYID`), whose socket is `socket`: it replaces that node's
    /// older one.
    pub fn watching_node(&self, node: &str, socket: Arc<SocketWatch>) -> Pushes {
        let t = &self.0;
        let feed = Feed::new(node.to_owned(), Some(socket));
        let mut feeds = t.feeds();
        feeds.retain(|f| {
            let keep = f.node != node;
            if !keep {
                f.retired.store(true, Ordering::Release);
            }
            keep
        });
        feeds.push(Arc::clone(&feed));
        Pushes(Arc::clone(t), Some(feed))
    }

    /// The feed these pushes come from: theirs, or else (tests without a
    /// connection) the single server's current one, made if need be.
    fn feed(&self) -> Arc<Feed> {
        match &self.1 {
            Some(feed) => Arc::clone(feed),
            None => {
                let mut feeds = self.0.feeds();
                if feeds.is_empty() {
                    feeds.push(Feed::new(String::new(), None));
                }
                Arc::clone(&feeds[0])
            }
        }
    }

    /// The server would not say the reports connection's id (an ACL without
    /// `CLIENT ID`): no tracking, as where `CLIENT TRACKING` is refused.
    pub fn refused(&self) {
        self.feed().redirect.store(REFUSED, Ordering::Release);
    }

    /// The reports connection is open, with this `CLIENT ID`: the next round
    /// turns tracking on with `REDIRECT` to it.
    pub fn redirect_to(&self, client_id: i64) {
        self.feed().redirect.store(client_id, Ordering::Release);
    }

    /// Whether its feed is still current (neither replaced nor closed).
    pub fn is_current(&self) -> bool {
        self.1
            .as_ref()
            .is_some_and(|f| !f.retired.load(Ordering::Acquire))
    }

    /// Its `CLIENT ID` (0: not known).
    pub fn client_id(&self) -> i64 {
        self.feed().redirect.load(Ordering::Acquire).max(0)
    }

    /// A question of the store's is out on this reports connection.
    pub fn asking(&self) -> Asking {
        Tracking::ask(self.feed())
    }

    /// What this reports connection's server answered the watch's question.
    pub fn watched(&self, replies: &[Value]) {
        self.0.watched_on(&self.feed(), replies)
    }

    /// This reports connection answered.
    pub fn heard(&self) {
        heard(&self.feed())
    }
}

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let Some(listener) = self.0.listener.get() else {
            return Ok(());
        };
        if self
            .1
            .as_ref()
            .is_some_and(|f| f.retired.load(Ordering::Acquire))
        {
            return Ok(()); // an older connection's
        }
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => listener.keys(keys),
                // A flush (FLUSHDB, FLUSHALL) says null: everything.
                _ => listener.everything(),
            },
            // A connection is gone (a reports connection, and its reports
            // with it; or a data connection, and what it tracked), or the
            // server found the reports connection gone
            // (`tracking-redir-broken`, on a data connection).
            PushKind::Disconnection => self.0.closed(self.1.as_deref()),
            PushKind::Other(ref kind) if kind == "tracking-redir-broken" => {
                self.0.closed(self.1.as_deref())
            }
            _ => {}
        }
        Ok(())
    }
}

/// `feed` answered: every report sent to it before the answer was handled.
fn heard(feed: &Feed) {
    let ms = feed.since.elapsed().as_millis() as u64;
    let _ = feed
        .heard_ms
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |was| {
            Some(if was == NEVER { ms } else { was.max(ms) })
        });
}

/// The command that turns tracking on for the connection it runs on, its
/// reports to the reports connection `redirect`.
pub fn tracking_on(redirect: i64) -> Cmd {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("TRACKING")
        .arg("ON")
        .arg("REDIRECT")
        .arg(redirect)
        .arg("OPTIN")
        .arg("NOLOOP");
    cmd
}

impl Tracking {
    /// A store's tracking on one server (or Sentinel's master); `enabled`
    /// false: none.
    pub fn new(enabled: bool) -> Arc<Tracking> {
        Self::make(enabled, false)
    }

    /// A store's tracking on a cluster: a feed per master.
    pub fn cluster(enabled: bool) -> Arc<Tracking> {
        Self::make(enabled, true)
    }

    fn make(enabled: bool, cluster: bool) -> Arc<Tracking> {
        Arc::new(Tracking {
            state: AtomicU8::new(if enabled { 1 } else { 0 }),
            cluster,
            listener: OnceLock::new(),
            feeds: Mutex::new(Vec::new()),
            complete: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        })
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Feed>>> {
        self.feeds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The single server's current feed.
    fn first(&self) -> Option<Arc<Feed>> {
        self.feeds().first().cloned()
    }

    /// The single server's reports connection answered.
    pub fn heard(&self) {
        if let Some(feed) = self.first() {
            heard(&feed);
        }
    }

    /// A question of the store's is out on the single server's reports
    /// connection until the guard is dropped (after its answer was handled):
    /// no text is served meanwhile. Redis writes a turn's replies client by
    /// client, the one that got its first reply of the turn last first; a
    /// reports connection with an answer due in the turn of another client's
    /// write is written after that writer's reply, even a transaction's, so
    /// a reader the writer told at once could find the report not there yet
    /// (seen with `strace` on Redis 7.0 and 8.6: the report first in 200 of
    /// 200 transactions, after in 196-197 of 200 with a question sent to the
    /// reports connection just before).
    pub fn asking(&self) -> Option<Asking> {
        self.first().map(Self::ask)
    }

    fn ask(feed: Arc<Feed>) -> Asking {
        feed.asking.fetch_add(1, Ordering::SeqCst);
        Asking(feed)
    }

    /// Whether a `get` may be answered from memory now: tracking is on and
    /// every feed (on a cluster, one for each master) answered within
    /// [`FRESH_FOR`], has no question of the store's out, and holds nothing
    /// unread.
    pub fn serves(&self) -> bool {
        if self.state() != TrackingState::On {
            return false;
        }
        if self.cluster && !self.complete.load(Ordering::Acquire) {
            return false;
        }
        let feeds = self.feeds();
        !feeds.is_empty() && feeds.iter().all(|f| f.serves())
    }

    /// The push sender for the link's clients.
    pub fn pushes(self: &Arc<Self>) -> Pushes {
        Pushes(Arc::clone(self), None)
    }

    /// A connection closed (`feed`: a reports connection). The cache
    /// forgets. On a single server the next call opens another link; on a
    /// cluster the client reopens its own connections, and the heartbeat
    /// the feed.
    fn closed(&self, feed: Option<&Feed>) {
        if !self.cluster {
            return self.broken();
        }
        if let Some(feed) = feed {
            feed.retired.store(true, Ordering::Release);
            self.feeds().retain(|f| !f.retired.load(Ordering::Acquire));
            self.complete.store(false, Ordering::Release);
        }
        self.lost()
    }

    /// A connection of the single server's link closed: the reports go
    /// nowhere now, so the cache forgets, and the next call opens another
    /// link.
    fn broken(&self) {
        if let Some(feed) = self.first() {
            feed.redirect.store(0, Ordering::Release);
        }
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

    /// What the single server answered the watch's question.
    pub fn watched(&self, replies: &[Value]) {
        if let Some(feed) = self.first() {
            self.watched_on(&feed, replies);
        }
    }

    /// What a feed's server answered the watch's question
    /// ([`watch_question`]), when the feed opened and every [`HEARTBEAT`]
    /// since: whether the cache must stand aside, and whether what it holds
    /// may have gone stale with no report (a SWAPDB, an eviction), in which
    /// case every text goes. Standing aside drops them too: they are not
    /// served again when the cache comes back.
    fn watched_on(&self, feed: &Feed, replies: &[Value]) {
        let seen = Seen::of(replies);
        let was_aside = feed.aside().is_some();
        feed.may_evict.store(seen.may_evict, Ordering::Release);
        feed.crowded.store(seen.crowded, Ordering::Release);
        if let Some(unsupported) = seen.unsupported {
            feed.unsupported.store(unsupported, Ordering::Release);
        }
        let changed = {
            let mut counted = feed.counted.lock().unwrap_or_else(|p| p.into_inner());
            let changed = counted.changed(&seen.counted);
            *counted = seen.counted;
            changed
        };
        if changed || (!was_aside && feed.aside().is_some()) {
            self.flush();
        }
    }

    /// Every text goes (the link stays as it is): a MOVED or ASK, a change
    /// of a cluster's slots or masters, what the watch saw.
    pub fn flush(&self) {
        if let Some(listener) = self.listener.get() {
            listener.everything();
        }
    }

    /// Whether the cache stands aside: a server may evict keys, or its
    /// tracking table is crowded.
    pub fn stands_aside(&self) -> bool {
        self.aside().is_some()
    }

    /// Why the cache stands aside (`stats().readCache.tracking`), if it does.
    pub fn aside(&self) -> Option<&'static str> {
        self.feeds().iter().find_map(|f| f.aside())
    }

    fn set(&self, from: TrackingState, to: TrackingState) {
        let _ =
            self.state
                .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The single server's command that opens a round whose replies the
    /// cache may keep: turning tracking on (its reports to the reports
    /// connection), or confirming it. None: no tracking (nor while no
    /// reports connection is open).
    pub fn round_command(&self) -> Option<Cmd> {
        if self.cluster || self.stands_aside() {
            return None;
        }
        let redirect = self
            .first()
            .map_or(0, |f| f.redirect.load(Ordering::Acquire));
        if redirect == REFUSED {
            self.set(TrackingState::Starting, TrackingState::Refused);
        }
        if redirect <= 0 {
            return None;
        }
        match self.state() {
            TrackingState::Starting => Some(tracking_on(redirect)),
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
        let redirect = self
            .first()
            .map_or(0, |f| f.redirect.load(Ordering::Acquire));
        match reply {
            // Turned on.
            Value::Okay => {
                self.set(TrackingState::Starting, TrackingState::On);
                true
            }
            // GETREDIR: tracking, into the current reports connection.
            Value::Int(id) if *id > 0 && *id == redirect => true,
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
            Value::ServerError(_) => self.refused(),
            _ => false,
        }
    }

    /// The server refused tracking (or `CLIENT ID`): the cache keeps no
    /// text for reads.
    pub fn refused(&self) -> bool {
        self.set(TrackingState::Starting, TrackingState::Refused);
        false
    }

    /// On a cluster: whether a tracked op may be sent (it opens with
    /// [`unit_head`]'s two commands, whose replies
    /// [`unit_confirmed`](Self::unit_confirmed) reads).
    pub fn tracks_units(&self) -> bool {
        self.cluster
            && matches!(self.state(), TrackingState::Starting | TrackingState::On)
            && !self.stands_aside()
            && !self.feeds().is_empty()
    }

    /// On a cluster: tracking on the master `node`'s data connection failed
    /// with `reply` (the heartbeat's `CLIENT TRACKING ON`): refused (an ACL,
    /// a server without it), the cache keeps no text for reads.
    pub fn turned_on(&self, reply: &Value) {
        if let Value::ServerError(e) = reply {
            if !e.details().is_some_and(|d| d.contains("redirect")) {
                self.refused();
            }
        }
    }

    /// On a cluster, whether the master that ran a tracked op tracks into
    /// its feed: the replies to `CLUSTER MYID` (which master) and `CLIENT
    /// GETREDIR` (into which connection; client ids are numbered per server).
    /// A connection that does not (-1: the client opened it again; the id of
    /// an older feed) lost what it tracked: the cache forgets, and the next
    /// heartbeat turns tracking on there again.
    pub fn unit_confirmed(&self, node: &Value, redirect: &Value) -> bool {
        let node = match node {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            Value::VerbatimString { text, .. } => text.clone(),
            _ => return false,
        };
        // A master the store has no feed of yet (the heartbeat opens one):
        // not tracked there, and nothing the cache holds came from it.
        let Some(feed) = self.feeds().iter().find(|f| f.node == node).cloned() else {
            return false;
        };
        let expected = feed.redirect.load(Ordering::Acquire);
        match redirect {
            Value::Int(id) if *id > 0 && *id == expected => {
                self.set(TrackingState::Starting, TrackingState::On);
                true
            }
            Value::Int(_) => {
                self.lost();
                false
            }
            _ => false,
        }
    }

    /// On a cluster, the masters the heartbeat found (`CLUSTER MYID` ids):
    /// feeds of nodes that are masters no more are retired. Whether every
    /// master has a feed (until then no text is served).
    pub fn masters(&self, nodes: &[String]) -> bool {
        let mut feeds = self.feeds();
        feeds.retain(|f| {
            let keep = nodes.contains(&f.node);
            if !keep {
                f.retired.store(true, Ordering::Release);
            }
            keep
        });
        let complete = nodes.iter().all(|n| feeds.iter().any(|f| &f.node == n));
        self.complete.store(complete, Ordering::Release);
        complete
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
        self.flush();
    }
}

/// The two commands a tracked op opens with on a cluster, in the pipeline
/// sent to its key's master: which master ran it, and into which connection
/// it tracks ([`Tracking::unit_confirmed`]).
pub fn unit_head(pipe: &mut redis::Pipeline) {
    pipe.cmd("CLUSTER").arg("MYID");
    pipe.cmd("CLIENT").arg("GETREDIR");
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
        t.pushes().redirect_to(7); // a reports connection (with no socket)
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

    #[test]
    fn a_cluster_confirms_each_op_by_its_master_and_serves_only_with_every_master_fed() {
        let t = Tracking::cluster(true);
        let heard = Arc::new(Heard::default());
        t.listen(heard.clone());
        assert!(!t.tracks_units(), "no feed yet");
        assert!(t.round_command().is_none(), "no round command on a cluster");
        let base = t.pushes();
        // A feed (with no socket here) per master; client ids are per server.
        let a = base.watching_node("node-a", Arc::new(SocketWatch::detached()));
        a.redirect_to(7);
        let b = base.watching_node("node-b", Arc::new(SocketWatch::detached()));
        b.redirect_to(7);
        assert!(t.tracks_units());
        let node = |n: &str| Value::BulkString(n.as_bytes().to_vec());
        // Tracking into its own master's feed: confirmed, and on.
        assert!(t.unit_confirmed(&node("node-a"), &Value::Int(7)));
        assert_eq!(t.state(), TrackingState::On);
        // A master with no feed of the store's: not confirmed, nothing lost.
        assert!(!t.unit_confirmed(&node("node-c"), &Value::Int(7)));
        assert_eq!(t.state(), TrackingState::On);
        // A connection that does not track (the client opened it again):
        // forgotten, turned on by the next heartbeat.
        assert!(!t.unit_confirmed(&node("node-b"), &Value::Int(-1)));
        assert_eq!(t.state(), TrackingState::Starting);
        assert!(t.unit_confirmed(&node("node-b"), &Value::Int(7)));
        // Every master must have a feed: a third master has none.
        assert!(!t.masters(&["node-a".into(), "node-b".into(), "node-c".into()]));
        assert!(t.masters(&["node-a".into(), "node-b".into()]));
        // A master's reports connection closed: its feed goes, the texts
        // with it, and the link stays (no reopening on a cluster).
        a.send(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert!(!a.is_current() && b.is_current());
        assert!(!t.take_broken());
        assert!(!t.masters(&["node-a".into(), "node-b".into()]));
        assert!(!t.serves());
        // A node that is master no more: its feed is retired, its pushes unheard.
        let before = heard.0.lock().unwrap().len();
        assert!(!t.masters(&["node-a".into()]) && !b.is_current());
        b.send(PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(vec![Value::BulkString(b"sess:x".to_vec())])],
        })
        .unwrap();
        assert_eq!(heard.0.lock().unwrap().len(), before);
    }
}
