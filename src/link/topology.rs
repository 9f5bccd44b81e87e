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
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
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
    /// The client, and the first seed node's address.
    Cluster(ClusterClient, String),
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

    /// A Redis Cluster reached through seed `nodes`.
    pub fn cluster(
        nodes: Vec<ConnectionInfo>,
        certs: Option<TlsCertificates>,
        timeouts: Timeouts,
    ) -> Result<Topology> {
        let seed = nodes
            .first()
            .map(|n| n.addr().to_string())
            .unwrap_or_default();
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.command)
            .retries(retry::CLUSTER_RETRIES)
            .min_retry_wait(retry::CLUSTER_MIN_WAIT_MS)
            .max_retry_wait(retry::CLUSTER_MAX_WAIT_MS);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        let client = builder.build().map_err(|e| {
            StoreError::invalid_arg(format!(
                "options.cluster is not usable: {}",
                e.detail().unwrap_or(e.category())
            ))
        })?;
        Ok(Topology::Cluster(client, seed))
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
            Topology::Cluster(client, seed) => Ok((
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
            Topology::Cluster(_, seed) => seed.clone(),
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
    let (host, port, tls) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host, *port, None),
        ConnectionAddr::TcpTls { host, port, .. } => match &watch.tls {
            Some(tls) => (host, *port, Some(tls)),
            None => return Err(not_watchable()),
        },
        _ => return Err(not_watchable()),
    };
    let connect = || async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        Ok::<_, RedisError>(stream)
    };
    let stream = connect().await?;
    let socket = Arc::new(SocketWatch::of(&stream));
    let pushes = watch.pushes.watching(Arc::clone(&socket));
    let reports = match tls {
        None => over(info, Watched::new(stream, socket), pushes.clone(), timeouts).await?,
        Some(tls) => {
            let stream = tls.connect(host, stream).await?;
            over(info, Watched::new(stream, socket), pushes.clone(), timeouts).await?
        }
    };
    // An ACL may refuse `CLIENT ID`: the store then works as without the
    // cache (`refused`), as where `CLIENT TRACKING` is refused.
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
    let stream = connect().await?;
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
    match id {
        Some(id) => pushes.redirect_to(id),
        None => pushes.refused(),
    }
    Ok(Node::Watched { data, reports })
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
