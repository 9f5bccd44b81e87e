//! The store's link to Redis, opened on the first call and bounded by the
//! store's timeouts: one multiplexed connection to a server (reconnected on
//! demand after a failure), a Redis Cluster connection (routing each command
//! to the master of its key, following MOVED/ASK), or, with Sentinel, a
//! connection to the master the sentinels name, looked up again after the
//! connection breaks or the server answers READONLY. `close()` lets calls in
//! flight finish first.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Pipeline, RedisError, RedisResult, ServerError, TlsMode, Value};
use tokio::sync::Notify;

use crate::capabilities::{Capabilities, Native};
use crate::errors::{Code, Result, StoreError};
use crate::options::{Config, SentinelTarget, Target};

/// Reconnection after a failure: a few quick attempts, so that calls fail fast
/// with `ERR_CONNECTION` while the server is down instead of queueing.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// After a connection is lost, a background task pings with this backoff
/// (doubling, capped) until the server answers, so that the connection is up
/// again soon after the server is, without waiting for a call.
const REVIVE_MIN_DELAY: Duration = Duration::from_millis(100);
const REVIVE_MAX_DELAY: Duration = Duration::from_millis(1000);

/// An open link to Redis.
#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    /// Runs a pipeline; error replies stay in place as `Value::ServerError`.
    async fn exec(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(m) => pipe.query_async::<Vec<Value>>(&mut m.clone()).await,
            // Keys of one pipeline live on different masters: each command
            // goes on its own, all at once. A batch never holds two commands
            // on one key in a round (batch.rs), so their order does not matter.
            Link::Cluster(c) => {
                let calls = pipe.cmd_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move {
                        match cmd.query_async::<Value>(&mut c).await {
                            Ok(v) => Ok(v),
                            Err(e) => ServerError::try_from(e).map(Value::ServerError),
                        }
                    }
                });
                futures_util::future::join_all(calls)
                    .await
                    .into_iter()
                    .collect()
            }
        }
    }

    /// What the server (on a cluster: every master) can do, asked with
    /// `HELLO`. A server that refuses HELLO gets the scripts; a link that
    /// fails is an error.
    async fn capabilities(&self) -> Result<Capabilities> {
        let hello = redis::cmd("HELLO");
        match self {
            Link::Single(m) => match hello.query_async::<Value>(&mut m.clone()).await {
                Ok(reply) => Ok(Capabilities::from_hello(&reply)),
                Err(e) if is_lost(&e) => Err(StoreError::from(e)),
                Err(_) => Ok(Capabilities::SCRIPTS),
            },
            Link::Cluster(c) => {
                let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match c.clone().route_command(hello, masters).await {
                    // One reply per master, by address.
                    Ok(Value::Map(replies)) if !replies.is_empty() => Ok(replies
                        .iter()
                        .map(|(_, reply)| Capabilities::from_hello(reply))
                        .reduce(Capabilities::lowest)
                        .unwrap_or(Capabilities::SCRIPTS)),
                    Ok(_) => Ok(Capabilities::SCRIPTS),
                    Err(e) if is_lost(&e) => Err(StoreError::from(e)),
                    Err(_) => Ok(Capabilities::SCRIPTS),
                }
            }
        }
    }
}

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

/// Where links come from.
enum Source {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>, ConnectionManagerConfig),
}

pub struct Connection {
    source: Source,
    connect_timeout: Duration,
    /// Bound on a whole call: establishing the link, then the answer.
    call_timeout: Duration,
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

fn sentinel_client(t: &SentinelTarget) -> Result<SentinelClient> {
    let mut b =
        SentinelClientBuilder::new(t.nodes.clone(), &t.master_name, SentinelServerType::Master)
            .map_err(StoreError::from)?
            .set_client_to_redis_db(t.db);
    if let Some(u) = &t.username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &t.password {
        b = b.set_client_to_redis_password(p);
    }
    if let Some(u) = &t.sentinel_username {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = &t.sentinel_password {
        b = b.set_client_to_sentinel_password(p);
    }
    if let Some(certs) = &t.tls {
        b = b
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_redis_certificates(certs.clone());
    }
    if t.sentinel_tls {
        b = b.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = &t.tls {
            b = b.set_client_to_sentinel_certificates(certs.clone());
        }
    }
    b.build().map_err(|e| {
        StoreError::invalid_arg(format!(
            "options.sentinel is not usable: {}",
            e.detail().unwrap_or(e.category())
        ))
    })
}

/// Whether an error means the link should be looked up again (Sentinel).
fn is_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
}

fn is_readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "READONLY")
}

impl Connection {
    pub fn new(config: &Config) -> Result<Self> {
        install_crypto_provider();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let source = match &config.target {
            Target::Single(client) => Source::Single(client.clone(), manager_config),
            Target::Cluster(client) => Source::Cluster((**client).clone()),
            Target::Sentinel(t) => {
                Source::Sentinel(tokio::sync::Mutex::new(sentinel_client(t)?), manager_config)
            }
        };
        Ok(Connection {
            source,
            connect_timeout: config.connect_timeout,
            call_timeout: config.connect_timeout + config.command_timeout,
            state: Mutex::new(State::Idle),
            opening: tokio::sync::Mutex::new(()),
            open_failed: Mutex::new(None),
            generation: AtomicU64::new(0),
            closing: Arc::new(AtomicBool::new(false)),
            reviving: Arc::new(AtomicBool::new(false)),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// How long a call may take: establishing the link, then the answers.
    pub fn call_bound(&self) -> Duration {
        self.call_timeout
    }

    /// The error of a call that ran out of its bound.
    pub fn timeout(&self) -> StoreError {
        StoreError::timeout(self.call_timeout.as_millis() as u64)
    }

    /// Connecting took longer than connectTimeout: nothing was sent.
    fn connect_timed_out(&self) -> StoreError {
        StoreError::new(
            Code::Connection,
            format!(
                "could not connect within connectTimeout ({} ms): no answer to the \
                 connection, or to its TLS handshake (does the server speak TLS?)",
                self.connect_timeout.as_millis()
            ),
        )
    }

    /// Whether commands of one pipeline may run out of order (Redis Cluster).
    pub fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
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
                match link.capabilities().await {
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
            let opened = async {
                let link = self.open().await?;
                let capabilities = link.capabilities().await?;
                Ok::<_, StoreError>((link, capabilities))
            };
            let (link, capabilities) = match opened.await {
                Ok(opened) => opened,
                Err(e) => {
                    *self.open_failed() = Some((Instant::now(), e.clone()));
                    return Err(e);
                }
            };
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            let mut state = self.state();
            if matches!(*state, State::Closed) {
                return Err(StoreError::closed());
            }
            *state = State::Ready(Open {
                link: link.clone(),
                generation,
                capabilities: Some(capabilities),
            });
            return Ok((link, generation, capabilities));
        }
    }

    /// Whether link `generation` is current and its capabilities unknown.
    fn is_unknown(&self, generation: u64) -> bool {
        matches!(&*self.state(), State::Ready(o) if o.generation == generation && o.capabilities.is_none())
    }

    /// Link `generation` lost its connection: what its server can do is asked
    /// again before the next call (it may have reconnected to another one).
    fn unlearn(&self, generation: u64) {
        if let State::Ready(open) = &mut *self.state() {
            if open.generation == generation {
                open.capabilities = None;
            }
        }
    }

    /// The server of link `generation` refused a native command: the scripts
    /// do that step on this link from now on.
    fn refuse(&self, generation: u64, native: Native) {
        if let State::Ready(open) = &mut *self.state() {
            if open.generation == generation {
                open.capabilities = open.capabilities.map(|c| c.without(native));
            }
        }
    }

    fn open_failed(&self) -> MutexGuard<'_, Option<(Instant, StoreError)>> {
        self.open_failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A connection manager, connected within connectTimeout: a server that
    /// never answers (or never completes a TLS handshake: a plain server
    /// behind a rediss:// URL) fails the call with ERR_CONNECTION then.
    async fn manager(
        &self,
        client: redis::Client,
        config: &ConnectionManagerConfig,
    ) -> Result<ConnectionManager> {
        let connecting = ConnectionManager::new_with_config(client, config.clone());
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(m) => Ok(m?),
            Err(_) => Err(self.connect_timed_out()),
        }
    }

    async fn open(&self) -> Result<Link> {
        match &self.source {
            Source::Single(client, config) => {
                Ok(Link::Single(self.manager(client.clone(), config).await?))
            }
            Source::Cluster(client) => {
                let connecting = client.get_async_connection();
                match tokio::time::timeout(self.connect_timeout, connecting).await {
                    Ok(c) => Ok(Link::Cluster(c?)),
                    Err(_) => Err(self.connect_timed_out()),
                }
            }
            Source::Sentinel(sentinel, config) => {
                let lookup = async { sentinel.lock().await.async_get_client().await };
                let client = match tokio::time::timeout(self.connect_timeout, lookup).await {
                    Ok(c) => c?,
                    Err(_) => return Err(self.connect_timed_out()),
                };
                Ok(Link::Single(self.manager(client, config).await?))
            }
        }
    }

    /// Gives up link `generation` (Sentinel: the next call asks the sentinels).
    fn forget(&self, generation: u64) {
        if !matches!(self.source, Source::Sentinel(..)) {
            return;
        }
        let mut state = self.state();
        if matches!(&*state, State::Ready(o) if o.generation == generation) {
            *state = State::Idle;
        }
    }

    /// Reconnects a lost standalone connection in the background: pings with a
    /// capped backoff until the server answers (any answer, even an ACL
    /// refusal of PING) or the store closes. Cluster connections reconnect by
    /// themselves; with Sentinel the next call asks the sentinels.
    fn revive(&self, link: &Link) {
        let (Link::Single(manager), Source::Single(..)) = (link, &self.source) else {
            return;
        };
        if self.reviving.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut manager = manager.clone();
        let (reviving, closing) = (Arc::clone(&self.reviving), Arc::clone(&self.closing));
        tokio::spawn(async move {
            let mut delay = REVIVE_MIN_DELAY;
            while !closing.load(Ordering::Acquire) {
                tokio::time::sleep(delay).await;
                match redis::cmd("PING").query_async::<()>(&mut manager).await {
                    Err(e) if is_lost(&e) => delay = (delay * 2).min(REVIVE_MAX_DELAY),
                    _ => break,
                }
            }
            reviving.store(false, Ordering::Release);
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
    }
}

impl Ready<'_> {
    /// Runs a pipeline, answered by the call's deadline or failed with
    /// `ERR_TIMEOUT`; error replies stay in place.
    pub async fn exec(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let conn = self.conn;
        let call = async {
            match self.link.exec(pipe).await {
                Ok(values) => {
                    // Only Sentinel acts on it: no scan of the replies otherwise.
                    if matches!(conn.source, Source::Sentinel(..)) && values.iter().any(is_readonly)
                    {
                        conn.forget(self.generation); // a replica now: failover
                    }
                    Ok(values)
                }
                Err(e) => {
                    if is_lost(&e) {
                        conn.unlearn(self.generation);
                        conn.forget(self.generation);
                        conn.revive(&self.link);
                    }
                    Err(StoreError::from(e))
                }
            }
        };
        match tokio::time::timeout_at(self.deadline.into(), call).await {
            Ok(result) => result,
            Err(_) => {
                conn.forget(self.generation);
                Err(conn.timeout())
            }
        }
    }

    /// The server refused `native` (an older server, a fork, or an ACL
    /// without it): the scripts do that step on this link from now on.
    pub fn refused(&self, native: Native) {
        self.conn.refuse(self.generation, native);
    }
}
