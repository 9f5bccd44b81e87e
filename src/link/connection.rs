//! The store's connection to Redis (`topology.rs` says where, `retry.rs` how
//! it retries), opened on the first call and bounded by the store's timeouts: one link at a
//! time, opened again after a failover (Sentinel), and what its server can do
//! (`capabilities.rs`), learned when it opens and again after the connection
//! was lost. `close()` lets calls in flight finish first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Pipeline, RedisResult, Value};
use tokio::sync::Notify;

use crate::errors::{Code, Result, StoreError};
use crate::link::capabilities::{Capabilities, NativeCommand};
use crate::link::retry::Revive;
use crate::link::sentinel::{self, Announcement, PROMOTION_HOLD};
use crate::link::topology::{
    is_lost, masters_of, open_master_feed, ClusterWatch, Link, Master, Route, SlotMap, Timeouts,
    Topology, Unit,
};
use crate::link::tracking::{
    tracking_on, watch_question, Pushes, Tracking, TrackingState, HEARTBEAT,
};

/// The link calls use now.
struct Open {
    link: Link,
    /// Counts the links opened: a link's failures only act on that link.
    generation: u64,
    /// None until learned, and again after the connection was lost.
    capabilities: Option<Capabilities>,
}

enum State {
    /// No link yet, or the last one was given up (Sentinel after a failover).
    Idle,
    Ready(Open),
    Closed,
}

/// A call's hold on the link: what its server can do, and a pipeline's way
/// there, answered by the call's deadline.
pub struct Ready<'a> {
    conn: &'a Connection,
    _guard: CallGuard<'a>,
    link: Link,
    generation: u64,
    pub capabilities: Capabilities,
    deadline: Instant,
}

pub struct Connection {
    /// This connection, for the background reopen (`revive`).
    me: Weak<Connection>,
    topology: Topology,
    /// Connecting, and each answer; a whole call is bounded by their sum
    /// (`call_bound`).
    timeouts: Timeouts,
    state: Mutex<State>,
    /// Held while a link is being opened, so that one call opens it.
    opening: tokio::sync::Mutex<()>,
    /// When the last attempt to open a link failed, and why: calls that were
    /// waiting for that attempt fail with it rather than try again in turn.
    open_failed: Mutex<Option<(Instant, StoreError)>>,
    generation: AtomicU64,
    /// Set by `close()`: no new calls (and the background reconnect stops).
    closing: Arc<AtomicBool>,
    /// Whether the background reconnect runs.
    reviving: Arc<AtomicBool>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Set when a call found the connection lost; cleared when one gets an
    /// answer again (for `status`).
    lost: Arc<AtomicBool>,
    /// Times the connection was found again after it was lost.
    reconnects: Arc<AtomicU64>,
    /// `host:port` of the server the link went to (for tracing).
    address: Mutex<String>,
    /// The server's reports of changed keys (`tracking.rs`): told whenever
    /// the link is lost or replaced.
    pub tracking: Arc<Tracking>,
    /// Stops the heartbeat of the current link (`tracking.rs`).
    heartbeat: Mutex<Option<Arc<AtomicBool>>>,
    /// What the store learned from its server and must forget when the
    /// server may have changed ([`Connection::server_changed`]).
    learned: OnceLock<Arc<dyn Learned>>,
    /// Times the sentinels announced another master and the store moved to it.
    switches: AtomicU64,
    /// The newest link given up because the sentinels announced another
    /// master: a call answered on it (or an older one) after that fails.
    switched_from: AtomicU64,
    /// Turns true on `close()`: the sentinels' listeners stop.
    closed: tokio::sync::watch::Sender<bool>,
    /// Whether the sentinels' listeners run (`sentinel.rs`).
    listening: AtomicBool,
    /// Until when calls wait for a replica's promotion (`announced`).
    held: Mutex<Option<Instant>>,
    /// Told when the promotion calls wait for is announced or given up.
    promoted: Notify,
}

/// What a store learned from the server behind its link (users' index
/// bounds, …): forgotten whenever that server may be another one now.
pub trait Learned: Send + Sync {
    fn forget(&self);
}

/// Where a store stands, for readiness probes (`store.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No connection opened yet (the first call or `ping()` opens it).
    Connecting,
    Ready,
    /// The connection was lost and is being opened again.
    Reconnecting,
    Closed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Ready => "ready",
            Status::Reconnecting => "reconnecting",
            Status::Closed => "closed",
        }
    }
}

/// Counts a call in flight for as long as it lives.
struct CallGuard<'a>(&'a Connection);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// rustls needs exactly one process-wide crypto provider.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another library in the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The connection that was lost answers again: counted once per loss.
fn found(lost: &AtomicBool, reconnects: &AtomicU64) {
    if lost.swap(false, Ordering::AcqRel) {
        reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn is_readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "READONLY")
}

impl Connection {
    /// A connection to `topology`: connecting bounded by the connect
    /// timeout, a whole call by that plus the command timeout.
    pub fn new(topology: Topology, timeouts: Timeouts, tracking: Arc<Tracking>) -> Arc<Self> {
        install_crypto_provider();
        Arc::new_cyclic(|me| Connection {
            me: me.clone(),
            timeouts,
            state: Mutex::new(State::Idle),
            opening: tokio::sync::Mutex::new(()),
            open_failed: Mutex::new(None),
            generation: AtomicU64::new(0),
            closing: Arc::new(AtomicBool::new(false)),
            reviving: Arc::new(AtomicBool::new(false)),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            lost: Arc::new(AtomicBool::new(false)),
            reconnects: Arc::new(AtomicU64::new(0)),
            address: Mutex::new(topology.address()),
            topology,
            tracking,
            heartbeat: Mutex::new(None),
            learned: OnceLock::new(),
            switches: AtomicU64::new(0),
            switched_from: AtomicU64::new(0),
            closed: tokio::sync::watch::channel(false).0,
            listening: AtomicBool::new(false),
            held: Mutex::new(None),
            promoted: Notify::new(),
        })
    }

    /// Where what the store learned from its server is forgotten (set once,
    /// by the store).
    pub fn learn_into(&self, learned: Arc<dyn Learned>) {
        let _ = self.learned.set(learned);
    }

    /// The one place that says the server behind the link may have changed:
    /// a new link opened (a failover, a reconnection the store made) or the
    /// connection was lost (its client may reconnect to another server: a
    /// restart, a switch behind the same address). The read cache forgets
    /// its texts (the reports of the old connection are gone with it), and
    /// the store what it learned ([`Learned`]). Capabilities are learned
    /// again per link (`unlearn`), and scripts come back after NOSCRIPT.
    fn server_changed(&self) {
        self.tracking.lost();
        if let Some(learned) = self.learned.get() {
            learned.forget();
        }
    }

    /// What a sentinel announced about the store's master
    /// (`sentinel.rs`). A replica about to be promoted: the link to the
    /// master is given up and calls wait (within their deadlines) for the
    /// promotion, at most [`PROMOTION_HOLD`]. The master moved: unless the
    /// link went there already, the link to the old one is given up, the
    /// next link opens to the new one without asking the sentinels, and the
    /// server changed. A promotion given up: the calls go on.
    ///
    /// A call answered on a link given up here fails: what it wrote may be
    /// only on the old master, whose data goes when it is demoted.
    fn announced(&self, said: Announcement<'_>) {
        let Some(sentinels) = self.topology.sentinels() else {
            return;
        };
        let mut state = self.state();
        if matches!(*state, State::Closed) {
            return;
        }
        match said {
            Announcement::Promoting => {
                *self.held() = Some(Instant::now() + PROMOTION_HOLD);
                self.give_up_for_switch(&mut state);
            }
            Announcement::Aborted => {
                *self.held() = None;
                self.promoted.notify_waiters();
            }
            Announcement::Moved(host, port) => {
                *self.held() = None;
                self.promoted.notify_waiters();
                if *self.address() == format!("{host}:{port}") || !sentinels.announce(host, port) {
                    return; // there already, or heard from another sentinel
                }
                self.give_up_for_switch(&mut state);
                self.switches.fetch_add(1, Ordering::AcqRel);
                drop(state);
                self.server_changed();
            }
        }
    }

    /// Gives up the link (if any) because the master is changing: calls
    /// answered on it from now on fail.
    fn give_up_for_switch(&self, state: &mut State) {
        if let State::Ready(open) = &*state {
            self.switched_from
                .fetch_max(open.generation, Ordering::AcqRel);
            *state = State::Idle;
        }
    }

    /// Until when calls wait for a promotion (`announced`).
    fn held(&self) -> MutexGuard<'_, Option<Instant>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Until when calls wait for a promotion, if they wait now; a hold that
    /// ended is cleared (the sentinels are asked again). One lock of `held`.
    fn hold(&self) -> Option<Instant> {
        let mut held = self.held();
        match *held {
            Some(until) if until > Instant::now() => Some(until),
            Some(_) => {
                *held = None;
                None
            }
            None => None,
        }
    }

    /// Waits while a promotion is announced and not done, at most until the
    /// hold ends. Whether it waited.
    async fn wait_for_promotion(&self) -> bool {
        let promoted = self.promoted.notified();
        tokio::pin!(promoted);
        promoted.as_mut().enable();
        let Some(until) = self.hold() else {
            return false;
        };
        tokio::select! {
            _ = promoted => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
        true
    }

    /// From the first link on, with Sentinel: what the sentinels announce
    /// moves the store ([`Connection::announced`]).
    fn listen(&self) {
        let Some(sentinels) = self.topology.sentinels() else {
            return;
        };
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        sentinel::listen(
            sentinels,
            self.timeouts.connect,
            self.closed.subscribe(),
            Arc::new(move |said| {
                if let Some(conn) = me.upgrade() {
                    conn.announced(said);
                }
            }),
        );
    }

    /// Times the sentinels announced another master and the store moved to it.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Status {
        if self.closing.load(Ordering::Acquire) {
            return Status::Closed;
        }
        if self.generation.load(Ordering::Acquire) == 0 {
            return Status::Connecting;
        }
        let idle = matches!(*self.state(), State::Idle);
        if idle || self.lost.load(Ordering::Acquire) {
            Status::Reconnecting
        } else {
            Status::Ready
        }
    }

    /// A call got an answer: if the connection had been lost, it is back.
    fn answered(&self) {
        if self.lost.load(Ordering::Relaxed) {
            found(&self.lost, &self.reconnects);
        }
    }

    /// Times the store was connected again after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// How long a call may take: establishing the link, then the answers.
    pub fn call_bound(&self) -> Duration {
        self.timeouts.connect + self.timeouts.command
    }

    /// The error of a call that ran out of its bound.
    pub fn timeout(&self) -> StoreError {
        StoreError::timeout(self.call_bound().as_millis() as u64)
    }

    /// Whether commands of one pipeline may run out of order (Redis Cluster).
    pub fn is_cluster(&self) -> bool {
        self.topology.is_cluster()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a call in flight; `ERR_CLOSED` after `close()`.
    fn enter(&self) -> Result<CallGuard<'_>> {
        let _state = self.state(); // orders this with close()'s flag
        if self.closing.load(Ordering::Acquire) {
            return Err(StoreError::closed());
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(CallGuard(self))
    }

    /// The current link and what its server can do, opened (or asked) first
    /// if need be.
    async fn link(&self) -> Result<(Link, u64, Capabilities)> {
        let asked = Instant::now();
        if self.tracking.take_broken() {
            // The connection the store opened itself closed: another one,
            // opened by this call or else in the background.
            let mut state = self.state();
            if matches!(*state, State::Ready(_)) {
                *state = State::Idle;
                self.lost.store(true, Ordering::Release);
                drop(state);
                self.reopen();
            }
        }
        loop {
            let unknown = match &*self.state() {
                State::Ready(Open {
                    link,
                    generation,
                    capabilities,
                }) => match capabilities {
                    Some(c) => return Ok((link.clone(), *generation, *c)),
                    None => Some((link.clone(), *generation)),
                },
                State::Closed => return Err(StoreError::closed()),
                State::Idle => None,
            };
            if unknown.is_none() && self.wait_for_promotion().await {
                continue;
            }
            let _opening = self.opening.lock().await;
            let current = match unknown {
                // Reconnected since it was learned: perhaps to another server.
                Some((_, generation)) => self.is_unknown(generation),
                None => matches!(*self.state(), State::Idle),
            };
            if !current {
                continue; // another call opened the link or learned it meanwhile
            }
            if let Some((at, e)) = &*self.open_failed() {
                if *at >= asked {
                    return Err(e.clone()); // the attempt this call waited for failed
                }
            }
            if let Some((link, generation)) = unknown {
                // Boxed, as the opening below: a rare path whose large
                // future every batch's future would otherwise carry inline.
                match Box::pin(link.capabilities()).await {
                    Ok(capabilities) => {
                        if let State::Ready(open) = &mut *self.state() {
                            if open.generation == generation {
                                open.capabilities = Some(capabilities);
                            }
                        }
                        continue;
                    }
                    Err(e) => {
                        *self.open_failed() = Some((Instant::now(), e.clone()));
                        return Err(e);
                    }
                }
            }
            let switches = self.switches.load(Ordering::Acquire);
            let opened = async {
                let (link, address) = self.topology.open(self.timeouts).await?;
                let capabilities = link.capabilities().await?;
                // A cluster's feeds open with its heartbeat (`ClusterFeeds::beat`).
                if self.tracking.state() != TrackingState::Off && !self.topology.is_cluster() {
                    let asking = self.tracking.asking();
                    let replies = link
                        .ask_reports(&watch_question(true))
                        .await
                        .map_err(|e| StoreError::from_redis(e, false))?;
                    drop(asking);
                    self.tracking.watched(&replies);
                    self.tracking.heard();
                }
                Ok::<_, StoreError>((link, address, capabilities))
            };
            // Boxed: opening a link (TLS, sentinels, a cluster) is a large
            // future that every batch's own future would otherwise carry
            // inline and copy each time its task is made and settled.
            let (link, address, capabilities) = match Box::pin(opened).await {
                Ok(opened) => opened,
                Err(e) => {
                    *self.open_failed() = Some((Instant::now(), e.clone()));
                    return Err(e);
                }
            };
            let mut state = self.state();
            if matches!(*state, State::Closed) {
                return Err(StoreError::closed());
            }
            if self.hold().is_some() || self.switches.load(Ordering::Acquire) != switches {
                continue; // the sentinels announced another master meanwhile
            }
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            if generation > 1 {
                // A link given up (a failover, a timeout) is open again.
                self.lost.store(false, Ordering::Release);
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            *self.address() = address;
            // Another connection, perhaps to another server.
            self.server_changed();
            self.beat(&link);
            *state = State::Ready(Open {
                link: link.clone(),
                generation,
                capabilities: Some(capabilities),
            });
            drop(state);
            self.listen();
            return Ok((link, generation, capabilities));
        }
    }

    /// Whether link `generation` is current and its capabilities unknown.
    fn is_unknown(&self, generation: u64) -> bool {
        matches!(&*self.state(), State::Ready(o) if o.generation == generation && o.capabilities.is_none())
    }

    /// Link `generation` lost its connection: what its server can do is asked
    /// again before the next call (it may have reconnected to another one).
    ///
    /// Not on a cluster: there a lost connection is one master's, and asking
    /// every master again would fail the calls of the others while that one
    /// is down. A cluster's capabilities are learned when the link opens; a
    /// master that comes back older (a failover to a replica not yet
    /// upgraded) refuses the native command, which moves that step to the
    /// script.
    fn unlearn(&self, generation: u64) {
        if self.topology.is_cluster() {
            return;
        }
        if let State::Ready(open) = &mut *self.state() {
            if open.generation == generation {
                open.capabilities = None;
            }
        }
    }

    /// The server of link `generation` refused one of its own commands: the scripts
    /// do that step on this link from now on.
    fn refuse(&self, generation: u64, command: NativeCommand) {
        if let State::Ready(open) = &mut *self.state() {
            if open.generation == generation {
                open.capabilities = open.capabilities.map(|c| c.without(command));
            }
        }
    }

    /// `host:port` of the server the store's link went to (on a cluster, the
    /// first seed node's; with Sentinel, empty until a link opened).
    pub fn address(&self) -> MutexGuard<'_, String> {
        self.address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open_failed(&self) -> MutexGuard<'_, Option<(Instant, StoreError)>> {
        self.open_failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives up link `generation` (Sentinel: the next call asks the sentinels).
    fn forget(&self, generation: u64) {
        if !self.topology.follows_failover() {
            return;
        }
        let mut state = self.state();
        if matches!(&*state, State::Ready(o) if o.generation == generation) {
            *state = State::Idle;
        }
    }

    /// Asks the watch's question ([`watch_question`]) on the link's reports
    /// connection every [`HEARTBEAT`] while the store caches, busy or idle:
    /// what the server does not report (a SWAPDB, an eviction or a
    /// tracking-table drop during the store's own command, a `maxmemory` set
    /// at run time) is seen within a heartbeat, and the answer keeps the
    /// reports fresh (the reports connection must have answered lately:
    /// `tracking.rs`). The last link's heartbeat stops.
    fn beat(&self, link: &Link) {
        if self.tracking.state() == TrackingState::Off {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let old = self
            .heartbeat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .replace(Arc::clone(&stop));
        if let Some(old) = old {
            old.store(true, Ordering::Release);
        }
        let (link, tracking) = (link.clone(), Arc::clone(&self.tracking));
        let (closing, bound) = (Arc::clone(&self.closing), self.call_bound());
        if let Some(watch) = self.topology.cluster_watch() {
            let (watch, timeouts) = (watch.clone(), self.timeouts);
            tokio::spawn(async move {
                let mut feeds = ClusterFeeds::default();
                while !closing.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                    if tracking.state() != TrackingState::Refused {
                        let beat = feeds.beat(&link, &tracking, &watch, timeouts);
                        if tokio::time::timeout(bound, beat).await.is_err() {
                            tracking.lost();
                        }
                    }
                    tokio::time::sleep(HEARTBEAT).await;
                }
            });
            return;
        }
        tokio::spawn(async move {
            let question = watch_question(false);
            while !closing.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                tokio::time::sleep(HEARTBEAT).await;
                if stop.load(Ordering::Acquire) || tracking.state() == TrackingState::Refused {
                    continue;
                }
                let asking = tracking.asking();
                let answer = tokio::time::timeout(bound, link.ask_reports(&question)).await;
                drop(asking);
                match answer {
                    Ok(Ok(replies)) => {
                        tracking.watched(&replies);
                        tracking.heard();
                    }
                    // Gone silent or lost: the calls find out and reconnect.
                    _ => tracking.lost(),
                }
            }
        });
    }

    /// Reconnects a lost connection in the background where the topology
    /// says so, with a capped backoff until the server answers or the store
    /// closes: a link the client reopens by itself is pinged; the store's own
    /// connection (the read cache's) is replaced by a new link.
    fn revive(&self, link: &Link) {
        if self.topology.reopens() {
            return self.reopen();
        }
        if !self.topology.revives() || self.reviving.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = link.clone();
        let (reviving, closing) = (Arc::clone(&self.reviving), Arc::clone(&self.closing));
        let (lost, reconnects) = (Arc::clone(&self.lost), Arc::clone(&self.reconnects));
        tokio::spawn(async move {
            let mut revive = Revive::default();
            while !closing.load(Ordering::Acquire) {
                tokio::time::sleep(revive.next_wait()).await;
                match link.ping().await {
                    Err(e) if is_lost(&e) => {}
                    _ => {
                        found(&lost, &reconnects);
                        break;
                    }
                }
            }
            reviving.store(false, Ordering::Release);
        });
    }

    /// Replaces the store's own connection (the read cache's: no manager
    /// reopens it) in the background, with a capped backoff until a link
    /// opens or the store closes.
    fn reopen(&self) {
        if !self.topology.reopens() || self.reviving.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            let mut revive = Revive::default();
            loop {
                tokio::time::sleep(revive.next_wait()).await;
                let Some(conn) = me.upgrade() else {
                    break;
                };
                let bound = conn.call_bound();
                let opened = !conn.closing.load(Ordering::Acquire)
                    && matches!(tokio::time::timeout(bound, conn.link()).await, Ok(Ok(_)));
                if opened || conn.closing.load(Ordering::Acquire) {
                    conn.reviving.store(false, Ordering::Release);
                    break;
                }
            }
        });
    }

    /// The link for a call that must be answered by `deadline`, opened first
    /// if need be (or `ERR_TIMEOUT`).
    pub async fn ready(&self, deadline: Instant) -> Result<Ready<'_>> {
        let guard = self.enter()?;
        match tokio::time::timeout_at(deadline.into(), self.link()).await {
            Ok(Ok((link, generation, capabilities))) => Ok(Ready {
                conn: self,
                _guard: guard,
                link,
                generation,
                capabilities,
                deadline,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.timeout()),
        }
    }

    /// Runs a pipeline, answered by `deadline` or failed with `ERR_TIMEOUT`;
    /// error replies stay in place.
    pub async fn exec(&self, pipe: &Pipeline, deadline: Instant) -> Result<Vec<Value>> {
        self.ready(deadline).await?.exec(pipe).await
    }

    /// Refuses new calls, waits for the calls in flight, then drops the link.
    pub async fn close(&self) {
        {
            let _state = self.state();
            self.closing.store(true, Ordering::Release);
        }
        // Calls waiting for a promotion go on (and finish) now.
        *self.held() = None;
        self.promoted.notify_waiters();
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        let link = std::mem::replace(&mut *self.state(), State::Closed);
        drop(link);
        self.closed.send_replace(true);
        self.tracking.lost();
    }
}

impl Ready<'_> {
    /// Awaits `call` on this link by the call's deadline (or `ERR_TIMEOUT`).
    /// Every call goes through here, so each one acts alike on what it
    /// finds: an answer after a loss marks the connection found again; a
    /// lost connection is marked, forgotten where the topology says, its
    /// capabilities asked again, and revived in the background.
    async fn answered<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T> {
        let conn = self.conn;
        match tokio::time::timeout_at(self.deadline.into(), call).await {
            Ok(Ok(_)) if conn.switched_from.load(Ordering::Acquire) >= self.generation => {
                Err(StoreError::new(
                    Code::Connection,
                    "the sentinels announced another master while the call was in flight: \
                     what it wrote may be only on the old master, which they demote",
                ))
            }
            Ok(Ok(value)) => {
                conn.answered();
                Ok(value)
            }
            Ok(Err(e)) => {
                if is_lost(&e) {
                    conn.server_changed();
                    conn.lost.store(true, Ordering::Release);
                    conn.unlearn(self.generation);
                    conn.forget(self.generation);
                    conn.revive(&self.link);
                }
                Err(StoreError::from_redis(e, conn.is_cluster()))
            }
            Err(_) => {
                // The client may drop the connection that did not answer
                // and open another one: its reports would be lost.
                conn.tracking.lost();
                conn.forget(self.generation);
                Err(conn.timeout())
            }
        }
    }

    /// Runs a pipeline, answered by the call's deadline or failed with
    /// `ERR_TIMEOUT`; error replies stay in place.
    pub async fn exec(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let values = self.answered(self.link.exec(pipe)).await?;
        // Only Sentinel acts on it: no scan of the replies otherwise.
        if self.conn.topology.follows_failover() && values.iter().any(is_readonly) {
            self.conn.server_changed();
            self.conn.forget(self.generation); // a replica now: failover
        }
        Ok(values)
    }

    /// Runs a round's pipeline, the commands of each of `units` together
    /// (`Link::exec_units`), answered by the call's deadline.
    pub async fn exec_units(&self, pipe: &Pipeline, units: &[Unit]) -> Result<Vec<Value>> {
        if units.is_empty() {
            return self.exec(pipe).await;
        }
        self.answered(self.link.exec_units(pipe, units)).await
    }

    /// One command, sent where `to` says (`Link::query`), answered by the
    /// call's deadline.
    pub async fn query(&self, cmd: &redis::Cmd, to: Route<'_>) -> Result<Value> {
        self.answered(self.link.query(cmd, to)).await
    }

    /// The server refused `command` (an older server, a fork, or an ACL
    /// without it): the scripts do that step on this link from now on.
    pub fn refused(&self, command: NativeCommand) {
        self.conn.refuse(self.generation, command);
    }
}

/// A cluster's reports connections, one per master, kept by the heartbeat
/// (`Connection::beat`), and the slots each master served at its last look.
#[derive(Default)]
struct ClusterFeeds {
    /// By node id: the master, its reports connection, its feed's pushes,
    /// and whether the watch's question was asked there yet.
    open: HashMap<String, (Master, MultiplexedConnection, Pushes, bool)>,
    /// The masters and their slots at the last look.
    map: Option<SlotMap>,
}

impl ClusterFeeds {
    /// One heartbeat on a cluster: the masters and their slots (`CLUSTER
    /// SLOTS`, asked the client's way), every text dropped when they changed
    /// (a resharding, a failover: a key may now be written where the store
    /// is told nothing); a reports connection opened to each master that has
    /// none, and closed to a node that is master no more; then on each, the
    /// watch's question, and tracking turned on (again, if the client opened
    /// that connection anew) on the client's connection to that master,
    /// `REDIRECT` to it. A feed is heard only when all of that answered.
    async fn beat(
        &mut self,
        link: &Link,
        tracking: &Arc<Tracking>,
        watch: &ClusterWatch,
        timeouts: Timeouts,
    ) {
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let Some(map) = link
            .query(&slots, Route::ByKey)
            .await
            .ok()
            .and_then(|reply| masters_of(&reply))
        else {
            // Not heard: the feeds go stale and the cache stops serving.
            return;
        };
        if self.map.as_ref().is_some_and(|last| *last != map) {
            tracking.flush();
        }
        let masters = map.0.clone();
        self.map = Some(map);
        self.open.retain(|node, (_, _, pushes, _)| {
            masters.iter().any(|m| &m.node == node) && pushes.is_current()
        });
        for master in &masters {
            if self.open.contains_key(&master.node) {
                continue;
            }
            if let Ok((reports, pushes)) = open_master_feed(watch, master, timeouts).await {
                self.open.insert(
                    master.node.clone(),
                    (master.clone(), reports, pushes, false),
                );
            }
        }
        let nodes: Vec<String> = masters.iter().map(|m| m.node.clone()).collect();
        tracking.masters(&nodes);
        let asked = self
            .open
            .values_mut()
            .map(|(master, reports, pushes, asked)| {
                let opening = !*asked;
                *asked = true;
                let (master, mut reports, pushes) =
                    (master.clone(), reports.clone(), pushes.clone());
                let tracking = Arc::clone(tracking);
                async move {
                    if pushes.client_id() == 0 {
                        // The server would not say its id (an ACL without
                        // `CLIENT ID`): as where tracking is refused.
                        tracking.refused();
                        return;
                    }
                    let address = format!("{}:{}", master.host, master.port);
                    let on = tracking_on(pushes.client_id());
                    let Ok(reply) = link.query(&on, Route::ToNode(&address)).await else {
                        return;
                    };
                    tracking.turned_on(&reply);
                    if matches!(reply, Value::ServerError(_)) {
                        return;
                    }
                    let asking = pushes.asking();
                    let replies = watch_question(opening)
                        .query_async::<Vec<Value>>(&mut reports)
                        .await;
                    drop(asking);
                    if let Ok(replies) = replies {
                        pushes.watched(&replies);
                        pushes.heard();
                    }
                }
            });
        futures_util::future::join_all(asked).await;
    }
}
