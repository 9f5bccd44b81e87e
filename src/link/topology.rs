//! Where the store connects: the topology the options name (one server, a
//! Redis Cluster, or the master a set of sentinels names), its clients set up
//! with the retry policy of `retry.rs`, and a link opened to it.
//! `addon/options.rs` checks the options and builds a [`Topology`];
//! `connection.rs` keeps one [`Link`] open and decides when to open another.

use std::time::Duration;

use std::sync::Arc;

use redis::aio::{
    AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig,
    MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route as SlotRoute, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisResult, ServerError,
    ServerErrorKind, TlsCertificates, TlsMode, Value,
};

use crate::errors::{Code, Result, StoreError};
use crate::link::capabilities::Capabilities;
use crate::link::retry;
use crate::link::sentinel::{SentinelLogin, Sentinels};
use crate::link::tls::Tls;
use crate::link::tracking::{Pushes, SocketWatch, Watched};

/// A store's two timeouts: `connectTimeout`, for establishing a connection,
/// and `commandTimeout`, for an answer. A whole call is bounded by their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
}

/// Where the store connects, with the clients that open links there.
// One per store, built once and never moved on a call's path: the size of
// its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Topology {
    /// The client, its manager's settings, and, when the store tracks keys,
    /// how it opens the connection itself (to watch its socket: `tracking.rs`).
    Single(redis::Client, ConnectionManagerConfig, Option<Watch>),
    /// The client, the first seed node's address, and, when the store tracks
    /// keys, what it needs to open a reports connection to each master.
    Cluster(ClusterClient, String, Option<ClusterWatch>),
    /// The sentinels name the master each time a link opens (`sentinel.rs`).
    /// The manager's settings and `watch` as for `Single`.
    Sentinel(Sentinels, ConnectionManagerConfig, Option<Watch>),
}

/// What the store needs to open the read cache's connection itself: where
/// the server's pushes go, and the TLS for a `rediss://` server (`tls.rs`).
#[derive(Clone)]
pub struct Watch {
    pub pushes: Pushes,
    pub tls: Option<Tls>,
}

/// What the store needs to open a reports connection to a cluster's master:
/// the pushes and TLS, and the first seed's connection settings (the
/// masters share its login, protocol and TLS).
#[derive(Clone)]
pub struct ClusterWatch {
    pub watch: Watch,
    pub seed: ConnectionInfo,
}

/// A cluster's masters, and the slot ranges each serves (first, last,
/// node id), sorted: what `CLUSTER SLOTS` says.
pub type SlotMap = (Vec<Master>, Vec<(i64, i64, String)>);

/// A cluster's master, as `CLUSTER SLOTS` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub node: String,
    pub host: String,
    pub port: u16,
}

/// The sentinels and what the store needs of the master they name.
pub struct SentinelTarget {
    pub nodes: Vec<ConnectionAddr>,
    pub master_name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// TLS to the data nodes (options.tls given), with these certificates.
    pub tls: Option<TlsCertificates>,
    /// TLS to the sentinels (rediss:// sentinel URLs).
    pub sentinel_tls: bool,
}

/// A single server's (or a Sentinel master's) connection manager settings.
fn manager_config(timeouts: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.command))
        .set_number_of_retries(retry::RECONNECT_RETRIES)
        .set_min_delay(retry::RECONNECT_MIN_DELAY)
        .set_max_delay(retry::RECONNECT_MAX_DELAY)
}

impl Topology {
    /// One server; `watch` for a store that tracks keys.
    pub fn single(client: redis::Client, timeouts: Timeouts, watch: Option<Watch>) -> Topology {
        Topology::Single(client, manager_config(timeouts), watch)
    }

    /// A Redis Cluster reached through seed `nodes`; `watch` for a store
    /// that tracks keys (the client then speaks RESP3 and tells `watch` when
    /// one of its connections closes).
    pub fn cluster(
        nodes: Vec<ConnectionInfo>,
        certs: Option<TlsCertificates>,
        timeouts: Timeouts,
        watch: Option<Watch>,
    ) -> Result<Topology> {
        let seed = nodes
            .first()
            .map(|n| n.addr().to_string())
            .unwrap_or_default();
        let first = nodes.first().cloned();
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.command)
            .retries(retry::CLUSTER_RETRIES)
            .min_retry_wait(retry::CLUSTER_MIN_WAIT_MS)
            .max_retry_wait(retry::CLUSTER_MAX_WAIT_MS);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        if let Some(watch) = &watch {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(watch.pushes.clone());
        }
        let client = builder.build().map_err(|e| {
            StoreError::invalid_arg(format!(
                "options.cluster is not usable: {}",
                e.detail().unwrap_or(e.category())
            ))
        })?;
        let watch = match (watch, first) {
            (Some(watch), Some(first)) => {
                let settings = first.redis_settings().clone();
                let seed = first
                    .clone()
                    .set_redis_settings(settings.set_protocol(redis::ProtocolVersion::RESP3));
                Some(ClusterWatch { watch, seed })
            }
            _ => None,
        };
        Ok(Topology::Cluster(client, seed, watch))
    }

    /// The master the sentinels of `t` name; `watch` as for [`single`](Self::single).
    pub fn sentinel(
        t: SentinelTarget,
        timeouts: Timeouts,
        watch: Option<Watch>,
    ) -> Result<Topology> {
        let mut b =
            SentinelClientBuilder::new(t.nodes.clone(), &t.master_name, SentinelServerType::Master)
                .map_err(|e| StoreError::from_redis(e, false))?
                .set_client_to_redis_db(t.db);
        if watch.is_some() {
            b = b.set_client_to_redis_protocol(redis::ProtocolVersion::RESP3);
        }
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
        let client = b.build().map_err(|e| {
            StoreError::invalid_arg(format!(
                "options.sentinel is not usable: {}",
                e.detail().unwrap_or(e.category())
            ))
        })?;
        let login = SentinelLogin {
            username: t.sentinel_username.as_deref(),
            password: t.sentinel_password.as_deref(),
            tls: t.tls.as_ref().filter(|_| t.sentinel_tls),
        };
        let sentinels = Sentinels::new(client, t.master_name.clone(), &t.nodes, login)?;
        Ok(Topology::Sentinel(
            sentinels,
            manager_config(timeouts),
            watch,
        ))
    }

    /// The sentinels, with Sentinel.
    pub fn sentinels(&self) -> Option<&Sentinels> {
        match self {
            Topology::Sentinel(s, _, _) => Some(s),
            _ => None,
        }
    }

    /// What the store needs to open a cluster's reports connections, when
    /// it tracks keys on a cluster.
    pub fn cluster_watch(&self) -> Option<&ClusterWatch> {
        match self {
            Topology::Cluster(_, _, watch) => watch.as_ref(),
            _ => None,
        }
    }

    /// Whether commands of one pipeline may run out of order (Redis Cluster).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Topology::Cluster(..))
    }

    /// Whether a link is given up when it breaks or its server answers
    /// READONLY, and the next call opens another: with Sentinel (the master
    /// may have changed), and for a link the store opened itself to track
    /// keys (no manager reconnects it).
    pub fn follows_failover(&self) -> bool {
        matches!(
            self,
            Topology::Sentinel(..) | Topology::Single(_, _, Some(_))
        )
    }

    /// Whether a lost link is revived in the background (a single server;
    /// cluster connections reconnect by themselves, and with Sentinel the
    /// next call asks the sentinels).
    pub fn revives(&self) -> bool {
        matches!(self, Topology::Single(_, _, None))
    }

    /// Whether a lost link is replaced in the background by a new one (a
    /// single server over the connection the store opened itself for the
    /// read cache: that connection is not reopened by a manager).
    pub fn reopens(&self) -> bool {
        matches!(self, Topology::Single(_, _, Some(_)))
    }

    /// A new link and the `host:port` it went to (on a cluster: the first
    /// seed node), connected within `connect_timeout`: a server that never
    /// answers (or never completes a TLS handshake: a plain server behind a
    /// rediss:// URL) fails with ERR_CONNECTION then; answers are awaited for
    /// `timeouts.command`.
    pub async fn open(&self, timeouts: Timeouts) -> Result<(Link, String)> {
        let t = timeouts.connect;
        match self {
            Topology::Single(client, config, watch) => {
                let info = client.get_connection_info();
                let address = info.addr().to_string();
                if let Some(watch) = watch {
                    let node = within(t, open_watched(info, watch, timeouts)).await?;
                    return Ok((Link::Single(node), address));
                }
                let m = ConnectionManager::new_with_config(client.clone(), config.clone());
                Ok((Link::Single(Node::Managed(within(t, m).await?)), address))
            }
            Topology::Cluster(client, seed, _) => Ok((
                Link::Cluster(within(t, client.get_async_connection()).await?),
                seed.clone(),
            )),
            Topology::Sentinel(sentinels, config, watch) => {
                let client = within(t, sentinels.master()).await?;
                let info = client.get_connection_info();
                let address = info.addr().to_string();
                if let Some(watch) = watch {
                    let node = within(t, open_watched(info, watch, timeouts)).await?;
                    return Ok((Link::Single(node), address));
                }
                let m = ConnectionManager::new_with_config(client, config.clone());
                Ok((Link::Single(Node::Managed(within(t, m).await?)), address))
            }
        }
    }

    /// Where the store connects before a link is open: the server's
    /// `host:port` (on a cluster, the first seed's; with Sentinel, none yet).
    pub fn address(&self) -> String {
        match self {
            Topology::Single(client, _, _) => client.get_connection_info().addr().to_string(),
            Topology::Cluster(_, seed, _) => seed.clone(),
            Topology::Sentinel(..) => String::new(),
        }
    }
}

/// The connections the store opens itself for the read cache, over TCP or
/// TLS (`tracking.rs`): first the reports connection, whose socket is
/// watched and whose `CLIENT ID` the data connection will redirect its
/// reports to, then the data connection. Both RESP3, their pushes (their
/// ends, `tracking-redir-broken`, the reports) to `watch.pushes`. Over TLS
/// the watch wraps the TLS stream: its reader is done only when the TLS layer
/// holds nothing it decrypted, and the socket asked is the TCP one beneath.
async fn open_watched(
    info: &ConnectionInfo,
    watch: &Watch,
    timeouts: Timeouts,
) -> RedisResult<Node> {
    let (reports, pushes) = open_reports(info, watch, timeouts, |socket| {
        watch.pushes.watching(socket)
    })
    .await?;
    let (host, port, tls) = reached(info, watch)?;
    let stream = connect(host, port).await?;
    let data = match tls {
        None => over(info, stream, pushes.clone(), timeouts).await?,
        Some(tls) => {
            over(
                info,
                tls.connect(host, stream).await?,
                pushes.clone(),
                timeouts,
            )
            .await?
        }
    };
    Ok(Node::Watched { data, reports })
}

/// Where `info` goes, and over TLS with what, for a connection the store
/// opens itself.
fn reached<'a>(
    info: &'a ConnectionInfo,
    watch: &'a Watch,
) -> RedisResult<(&'a str, u16, Option<&'a Tls>)> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok((host, *port, None)),
        ConnectionAddr::TcpTls { host, port, .. } => match &watch.tls {
            Some(tls) => Ok((host, *port, Some(tls))),
            None => Err(not_watchable()),
        },
        _ => Err(not_watchable()),
    }
}

async fn connect(host: &str, port: u16) -> RedisResult<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A reports connection to the server at `info`, its socket watched, its
/// pushes to the feed `feed` makes of the socket, and its `CLIENT ID` told
/// to that feed. An ACL may refuse `CLIENT ID`: the store then works as
/// without the cache (`refused`), as where `CLIENT TRACKING` is refused.
async fn open_reports(
    info: &ConnectionInfo,
    watch: &Watch,
    timeouts: Timeouts,
    feed: impl FnOnce(Arc<SocketWatch>) -> Pushes,
) -> RedisResult<(MultiplexedConnection, Pushes)> {
    let (host, port, tls) = reached(info, watch)?;
    let stream = connect(host, port).await?;
    let socket = Arc::new(SocketWatch::of(&stream));
    let pushes = feed(Arc::clone(&socket));
    let reports = match tls {
        None => over(info, Watched::new(stream, socket), pushes.clone(), timeouts).await?,
        Some(tls) => {
            let stream = tls.connect(host, stream).await?;
            over(info, Watched::new(stream, socket), pushes.clone(), timeouts).await?
        }
    };
    let id = match redis::cmd("CLIENT")
        .arg("ID")
        .query_async::<Value>(&mut reports.clone())
        .await
    {
        Ok(Value::Int(id)) => Some(id),
        Ok(_) => None,
        Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoPerm) => None,
        Err(e) => return Err(e),
    };
    match id {
        Some(id) => pushes.redirect_to(id),
        None => pushes.refused(),
    }
    Ok((reports, pushes))
}

/// A reports connection to the cluster's master `master`, whose pushes
/// (and its `CLIENT ID`) go to a feed of its own (`tracking.rs`): the store
/// asks it the watch's question and checks, with `CLUSTER MYID`, that it
/// reached that node.
pub async fn open_master_feed(
    w: &ClusterWatch,
    master: &Master,
    timeouts: Timeouts,
) -> Result<(MultiplexedConnection, Pushes)> {
    let addr = match w.seed.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: master.host.clone(),
            port: master.port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(master.host.clone(), master.port),
    };
    let info = w.seed.clone().set_addr(addr);
    let opened = async {
        let (reports, pushes) = open_reports(&info, &w.watch, timeouts, |socket| {
            w.watch.pushes.watching_node(&master.node, socket)
        })
        .await?;
        let id = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async::<String>(&mut reports.clone())
            .await?;
        if id != master.node {
            return Err(RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "another node answered at the master's address",
            )));
        }
        Ok((reports, pushes))
    };
    within(timeouts.connect + timeouts.command, opened).await
}

/// The masters of a cluster, from a reply to `CLUSTER SLOTS`, with the
/// slot ranges each serves (a change of either means texts may be stale:
/// `connection.rs` flushes them).
pub fn masters_of(reply: &Value) -> Option<SlotMap> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    };
    let mut masters: Vec<Master> = Vec::new();
    let mut slots = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(range) = range else {
            return None;
        };
        let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(node))) =
            (range.first(), range.get(1), range.get(2))
        else {
            return None;
        };
        let (Some(host), Some(Value::Int(port)), Some(id)) = (
            node.first().and_then(text),
            node.get(1),
            node.get(2).and_then(text),
        ) else {
            return None;
        };
        slots.push((*from, *to, id.clone()));
        if !masters.iter().any(|m| m.node == id) {
            masters.push(Master {
                node: id,
                host,
                port: u16::try_from(*port).ok()?,
            });
        }
    }
    masters.sort_by(|a, b| a.node.cmp(&b.node));
    slots.sort();
    Some((masters, slots))
}

/// The multiplexed connection over `stream`, and its driver's task.
async fn over<S>(
    info: &ConnectionInfo,
    stream: S,
    pushes: Pushes,
    timeouts: Timeouts,
) -> RedisResult<MultiplexedConnection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    // The crate's own response timeout (500 ms) would cut calls shorter
    // than commandTimeout says.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.command))
        .set_push_sender(pushes.clone());
    let (connection, driver) =
        MultiplexedConnection::new_with_config(info.redis_settings(), stream, config).await?;
    tokio::spawn(async move {
        driver.await;
        // The connection is gone: whatever the driver said, say it once more.
        let _ = pushes.send(redis::PushInfo {
            kind: redis::PushKind::Disconnection,
            data: Vec::new(),
        });
    });
    Ok(connection)
}

fn not_watchable() -> RedisError {
    RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "the read cache needs a TCP connection, plain or TLS",
    ))
}

/// `connecting`, given up after `connect_timeout`.
async fn within<T>(
    connect_timeout: Duration,
    connecting: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(connected) => connected.map_err(|e| StoreError::from_redis(e, false)),
        Err(_) => Err(connect_timed_out(connect_timeout)),
    }
}

/// Connecting took longer than connectTimeout: nothing was sent.
fn connect_timed_out(connect_timeout: Duration) -> StoreError {
    StoreError::new(
        Code::Connection,
        format!(
            "could not connect within connectTimeout ({} ms): no answer to the \
             connection, or to its TLS handshake (does the server speak TLS?)",
            connect_timeout.as_millis()
        ),
    )
}

/// Whether an error means the connection is gone (or the server stopped
/// being the master): the link's server may be another one next time.
pub fn is_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
}

/// Whether a reply is a cluster's redirection (MOVED, ASK).
pub fn is_redirect(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if matches!(e.kind(), Some(ServerErrorKind::Moved | ServerErrorKind::Ask)))
}

/// How many redirections the store follows itself (`cluster_query`).
const REDIRECTS: usize = 5;

/// One command on a cluster, where its key routes it.
///
/// The client follows MOVED and ASK by itself, but it sends ASKING as a
/// request of its own on a connection that other calls share: another call's
/// command may come in between and take the one-time flag, and the importing
/// master then answers MOVED back to the old one, to and fro, until the
/// client's retries are spent (most calls on a half-moved slot failed so
/// under 8 concurrent loops). So the store sends the command as a pipeline of
/// one, whose redirections come back as its reply rather than being followed,
/// and follows an ASK itself: the command again to the node named, with
/// ASKING right before it in one write. A MOVED (the client's map of slots
/// is out of date) and a failure to send go the client's way, which follows
/// MOVED, refreshes its map and reconnects; should that end on a
/// redirection too, the store follows it as an ASK, up to [`REDIRECTS`].
/// Commands without a key (`SCRIPT LOAD` to every master) go the client's way.
async fn cluster_query(mut c: ClusterConnection, cmd: &redis::Cmd) -> RedisResult<Value> {
    // A command for every master (SCRIPT LOAD) or none in particular goes
    // the client's way: only a key's command can be redirected.
    if !has_key(cmd) {
        return cmd.query_async::<Value>(&mut c).await;
    }
    let mut one = redis::pipe();
    one.add_command(cmd.clone());
    let mut reply = match c.req_packed_commands(&one, 0, 1).await.map(|mut r| r.pop()) {
        Ok(Some(Value::ServerError(e))) if e.kind() == Some(ServerErrorKind::Ask) => Err(e.into()),
        Ok(Some(Value::ServerError(e))) if e.kind() == Some(ServerErrorKind::Moved) => {
            cmd.query_async::<Value>(&mut c).await
        }
        Ok(Some(v)) => return Ok(v),
        Ok(None) | Err(_) => cmd.query_async::<Value>(&mut c).await,
    };
    for _ in 0..REDIRECTS {
        let err = match reply {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some((address, _slot)) = err.redirect_node() else {
            return Err(err);
        };
        let node = node_at(address);
        let mut asking = redis::pipe();
        asking.cmd("ASKING");
        asking.add_command(cmd.clone());
        reply = match c.route_pipeline(asking, 1, 1, node).await?.pop() {
            Some(Value::ServerError(e))
                if matches!(
                    e.kind(),
                    Some(ServerErrorKind::Ask | ServerErrorKind::Moved)
                ) =>
            {
                Err(e.into())
            }
            Some(v) => Ok(v),
            None => return Err(err),
        };
    }
    reply
}

/// The cluster node at `host:port` (a bracketed IPv6 host too).
fn node_at(address: &str) -> SingleNodeRoutingInfo {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
    SingleNodeRoutingInfo::ByAddress {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: port.parse().unwrap_or(0),
    }
}

/// Whether `cmd` names a key the cluster routes it by: every command the
/// store sends in a round does; the ones without (`SCRIPT LOAD`, which the
/// client sends to every master, and the link's own questions) are named here.
fn has_key(cmd: &redis::Cmd) -> bool {
    const KEYLESS: [&[u8]; 7] = [
        b"SCRIPT", b"PING", b"INFO", b"CONFIG", b"CLIENT", b"CLUSTER", b"HELLO",
    ];
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => !KEYLESS.iter().any(|k| k.eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// Commands of a round that go together, in one write, to the master of
/// `key`'s slot (`rounds.rs`: a tracked op on a cluster, whose replies say
/// which master ran it and whether that connection tracks).
pub struct Unit {
    pub first: usize,
    pub len: usize,
    pub key: String,
}

/// Where `Link::query` sends a command.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    ByKey,
    ToNode(&'a str),
    AllMasters,
}

/// An open link to Redis: one multiplexed connection (reconnected on demand
/// by its manager), or a cluster connection routing each command to the
/// master of its key.
#[derive(Clone)]
pub enum Link {
    Single(Node),
    Cluster(ClusterConnection),
}

/// One server's connection: kept open by a manager, or opened by the store
/// itself with a reports connection beside it whose socket it watches (the
/// read cache: `tracking.rs`).
#[derive(Clone)]
pub enum Node {
    Managed(ConnectionManager),
    Watched {
        data: MultiplexedConnection,
        reports: MultiplexedConnection,
    },
}

impl ConnectionLike for Node {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Node::Managed(m) => m.req_packed_command(cmd),
            Node::Watched { data, .. } => data.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Node::Managed(m) => m.req_packed_commands(cmd, offset, count),
            Node::Watched { data, .. } => data.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Node::Managed(m) => m.get_db(),
            Node::Watched { data, .. } => data.get_db(),
        }
    }
}

impl Link {
    /// Runs a pipeline; error replies stay in place as `Value::ServerError`.
    pub async fn exec(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(m) => pipe.query_async::<Vec<Value>>(&mut m.clone()).await,
            // Keys of one pipeline live on different masters: each command
            // goes on its own, all at once. A batch never holds two commands
            // on one key in a round (rounds.rs), so their order does not matter.
            Link::Cluster(c) => {
                let calls = pipe.cmd_iter().map(|cmd| {
                    let c = c.clone();
                    async move {
                        match cluster_query(c, cmd).await {
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

    /// Runs a round's pipeline, the commands of each of `units` together on
    /// a cluster (on a single server the whole pipeline goes as one anyway);
    /// error replies stay in place.
    pub async fn exec_units(&self, pipe: &Pipeline, units: &[Unit]) -> RedisResult<Vec<Value>> {
        let Link::Cluster(c) = self else {
            return self.exec(pipe).await;
        };
        if units.is_empty() {
            return self.exec(pipe).await;
        }
        let commands: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
        let mut calls = Vec::with_capacity(commands.len());
        let mut at = 0;
        let mut units = units.iter().peekable();
        while at < commands.len() {
            let c = c.clone();
            match units.next_if(|u| u.first == at) {
                Some(unit) => {
                    let mut together = redis::pipe();
                    for cmd in &commands[at..(at + unit.len).min(commands.len())] {
                        together.add_command((*cmd).clone());
                    }
                    let (len, key) = (unit.len, unit.key.clone());
                    at += unit.len;
                    calls.push(futures_util::future::Either::Left(async move {
                        let master = SlotRoute::with_key(key, SlotAddr::Master);
                        let to = SingleNodeRoutingInfo::SpecificNode(master);
                        let mut c = c;
                        match c.route_pipeline(together, 0, len, to).await {
                            Ok(values) if values.len() == len => Ok(values),
                            Ok(_) => Err(RedisError::from((
                                redis::ErrorKind::Client,
                                "a tracked op's replies did not match its commands",
                            ))),
                            Err(e) => {
                                let e = ServerError::try_from(e)?;
                                Ok(vec![Value::ServerError(e); len])
                            }
                        }
                    }));
                }
                None => {
                    let cmd = commands[at].clone();
                    at += 1;
                    calls.push(futures_util::future::Either::Right(async move {
                        match cluster_query(c, &cmd).await {
                            Ok(v) => Ok(vec![v]),
                            Err(e) => ServerError::try_from(e).map(|e| vec![Value::ServerError(e)]),
                        }
                    }));
                }
            }
        }
        let mut replies = Vec::with_capacity(commands.len());
        for values in futures_util::future::join_all(calls).await {
            replies.extend(values?);
        }
        Ok(replies)
    }

    /// One command, sent where `to` says: `None`, where its key routes it
    /// (a single server: there); on a cluster, `ToNode` a master by its
    /// `host:port`, and `AllMasters` every master, whose replies come back as
    /// a map by address. Error replies come back as `Value::ServerError`.
    pub async fn query(&self, cmd: &redis::Cmd, to: Route<'_>) -> RedisResult<Value> {
        let reply = match (self, to) {
            (Link::Single(m), Route::AllMasters) => {
                let reply = match cmd.query_async::<Value>(&mut m.clone()).await {
                    Ok(v) => v,
                    Err(e) => Value::ServerError(ServerError::try_from(e)?),
                };
                Ok(Value::Map(vec![(
                    Value::SimpleString(String::new()),
                    reply,
                )]))
            }
            (Link::Single(m), _) => cmd.query_async::<Value>(&mut m.clone()).await,
            (Link::Cluster(c), Route::ByKey) => cmd.query_async::<Value>(&mut c.clone()).await,
            (Link::Cluster(c), Route::AllMasters) => {
                let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                c.clone().route_command(cmd.clone(), masters).await
            }
            (Link::Cluster(c), Route::ToNode(address)) => {
                let node = node_at(address);
                c.clone()
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(node))
                    .await
            }
        };
        match reply {
            Ok(v) => Ok(v),
            Err(e) => ServerError::try_from(e).map(Value::ServerError),
        }
    }

    /// Runs the watch's question (`tracking.rs`) where the reports come: on
    /// the reports connection, whose answer then follows every report sent
    /// before it (on a link without one, as any pipeline).
    pub async fn ask_reports(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(Node::Watched { reports, .. }) => {
                pipe.query_async::<Vec<Value>>(&mut reports.clone()).await
            }
            _ => self.exec(pipe).await,
        }
    }

    /// Pings until the server answers: any answer, even an ACL refusal of
    /// PING, ends it. Errors are what a ping that found no server says.
    pub async fn ping(&self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Link::Single(m) => ping.query_async::<()>(&mut m.clone()).await,
            Link::Cluster(c) => ping.query_async::<()>(&mut c.clone()).await,
        }
    }

    /// What the server (on a cluster: every master) can do, asked with
    /// `HELLO`. A server that refuses HELLO gets the scripts; a link that
    /// fails is an error.
    pub async fn capabilities(&self) -> Result<Capabilities> {
        let hello = redis::cmd("HELLO");
        let reply = match self {
            Link::Single(m) => hello.query_async::<Value>(&mut m.clone()).await,
            Link::Cluster(c) => {
                let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                c.clone().route_command(hello, masters).await
            }
        };
        match (self, reply) {
            // One reply per master, by address.
            (Link::Cluster(_), Ok(Value::Map(replies))) => Ok(replies
                .iter()
                .map(|(_, reply)| Capabilities::from_hello(reply))
                .reduce(Capabilities::lowest)
                .unwrap_or(Capabilities::SCRIPTS)),
            (Link::Single(_), Ok(reply)) => Ok(Capabilities::from_hello(&reply)),
            (_, Ok(_)) => Ok(Capabilities::SCRIPTS),
            (link, Err(e)) if is_lost(&e) => {
                Err(StoreError::from_redis(e, matches!(link, Link::Cluster(_))))
            }
            (_, Err(_)) => Ok(Capabilities::SCRIPTS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots_name_the_masters_and_their_ranges() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let range = |from: i64, to: i64, port: i64, id: &str| {
            Value::Array(vec![
                Value::Int(from),
                Value::Int(to),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk(id)]),
                // A replica, which is no master.
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port + 1), bulk("r")]),
            ])
        };
        let reply = Value::Array(vec![
            range(5461, 10922, 7002, "b"),
            range(0, 5460, 7000, "a"),
            range(10923, 16383, 7000, "a"),
        ]);
        let (masters, slots) = masters_of(&reply).expect("a map");
        assert_eq!(
            masters
                .iter()
                .map(|m| (m.node.as_str(), m.port))
                .collect::<Vec<_>>(),
            [("a", 7000), ("b", 7002)]
        );
        assert_eq!(slots[0], (0, 5460, "a".to_owned()));
        assert_eq!(slots.len(), 3);
        assert!(masters_of(&Value::Nil).is_none());
        assert!(is_redirect(
            &redis::parse_redis_value(b"-MOVED 3999 127.0.0.1:6381\r\n").unwrap()
        ));
        assert!(!is_redirect(
            &redis::parse_redis_value(b"-ERR nope\r\n").unwrap()
        ));
    }
}
