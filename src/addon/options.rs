//! Store options: the `#[napi(object)]`s the constructor takes (their `///`
//! docs become `index.d.ts`), checked into the store's [`Config`].

use std::time::Duration;

use napi_derive::napi;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use crate::errors::{Result, StoreError};
use crate::limits::MAX_TTL_MS;
use crate::link::tls::Tls;
use crate::link::topology::{SentinelTarget, Topology, Watch};
use crate::link::tracking::Tracking;
use crate::link::Timeouts;
use crate::store::keys::Keys;
use crate::store::texts;
use crate::store::users::Users;
use crate::store::Config;

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_PREFIX: &str = "sess:";
pub const DEFAULT_LOCK_PREFIX: &str = "lock:";
pub const DEFAULT_USER_PREFIX: &str = "user:";
/// The longest `userIdPath`, in segments.
pub const MAX_USER_ID_PATH_SEGMENTS: usize = 32;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 1000;
/// Upper bound for both timeouts: one hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Options of `createRedisSessionStore`. Give at most one of `url`, `cluster`
/// and `sentinel`; without any, the store connects to `redis://127.0.0.1:6379`.
#[napi(object)]
#[derive(Default, Clone)]
pub struct StoreOptions {
    /// `redis://[[user]:password@]host[:port][/db]` or `rediss://…` for TLS.
    /// Default `redis://127.0.0.1:6379`.
    pub url: Option<String>,
    /// Redis Cluster: the store finds every master from these seed nodes.
    pub cluster: Option<ClusterOptions>,
    /// Redis Sentinel: the store asks these sentinels for the master and asks
    /// again after a failover.
    pub sentinel: Option<SentinelOptions>,
    /// ACL user name for the data nodes; overrides the URL's.
    pub username: Option<String>,
    /// Password for the data nodes; overrides the URL's. Never shown in errors.
    pub password: Option<String>,
    /// Database index; overrides the URL's. Not with `cluster` (Cluster has only db 0).
    pub db: Option<f64>,
    /// TLS settings; needs `rediss://` URLs. Certificates are verified always.
    pub tls: Option<TlsOptions>,
    /// Session keys are `<prefix><sessionId>`. Default `'sess:'`.
    pub prefix: Option<String>,
    /// Lock keys are `<prefix><lockPrefix><sessionId>`. Default `'lock:'`; must not be empty.
    pub lock_prefix: Option<String>,
    /// Load the scripts when the store is created instead of on the first
    /// `merge()`. A failed preload is retried by the first merge. Default
    /// `false`. (Read by store.js, which asks for the preload.)
    pub preload_script: Option<bool>,
    /// How long to wait for a connection to be established, in ms. Default 1000.
    pub connect_timeout: Option<f64>,
    /// How long any call may wait for Redis's answer, in ms. A call settles
    /// within `connectTimeout + commandTimeout` of being made, however many
    /// round trips it takes; it then rejects with `ERR_TIMEOUT`. Default 1000.
    pub command_timeout: Option<f64>,
    /// Memory, in bytes, for the session texts this store last read or wrote
    /// (ids and bookkeeping counted), which save a merge its read. Default
    /// 8388608 (8 MiB); 0 remembers nothing.
    pub remembered_text_bytes: Option<f64>,
    /// Answer a `get` of a session this store holds from memory, with no
    /// round trip, while the server reports every change to the session keys
    /// (`CLIENT TRACKING`, RESP3). Texts are held within
    /// `rememberedTextBytes`. Default `false` (README, "Read cache": under
    /// load it costs Redis more than it saves). On a cluster too (a reports
    /// connection per master). Not where the server refuses tracking or may
    /// evict keys.
    pub read_cache: Option<bool>,
    /// Where a session holds its user's id, as a dot-path (`'data.userId'`):
    /// every `set`, `merge` and `touch` then keeps an index of each user's
    /// session ids, for `userSessions()` and `destroyUserSessions()` (README,
    /// "Log out everywhere"). The value there is the user's id if it is a
    /// non-empty string or a number. Default: none, and no index is kept.
    pub user_id_path: Option<String>,
    /// Users' index keys are `<prefix><userPrefix><userId>`; a session id may
    /// not start with it while `userIdPath` is set. Default `'user:'`; must
    /// not be empty, and neither it nor `lockPrefix` may start the other.
    pub user_prefix: Option<String>,
}

/// Redis Cluster.
#[napi(object)]
#[derive(Default, Clone)]
pub struct ClusterOptions {
    /// Seed nodes as URLs, `redis://host:port` (or `rediss://` for TLS); user
    /// and password may be given here or as the store's `username`/`password`.
    pub nodes: Vec<String>,
}

/// Redis Sentinel.
#[napi(object)]
#[derive(Default, Clone)]
pub struct SentinelOptions {
    /// The sentinels as URLs, `redis://host:port`.
    pub nodes: Vec<String>,
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// ACL user name for the sentinels themselves, if they require one.
    pub username: Option<String>,
    /// Password for the sentinels themselves (`requirepass` of sentinel.conf).
    pub password: Option<String>,
}

/// TLS. PEM text (store.js also takes Buffers).
#[napi(object)]
#[derive(Default, Clone)]
pub struct TlsOptions {
    /// CA certificate(s) to trust instead of the system's roots.
    pub ca: Option<String>,
    /// Client certificate (chain), for servers that ask for one (`tls-auth-clients`).
    pub cert: Option<String>,
    /// The client certificate's private key.
    pub key: Option<String>,
}

/// The type `store.js` checks each field of an options struct for (`string`,
/// `number`, `boolean`, `object`, `pem`: a string or a Buffer, `urls`: a
/// non-empty array of URLs), exported by [`option_types`]. The list must name
/// every field of the struct and no other: the pattern it expands to does
/// not compile otherwise, so the names `store.js` checks cannot drift from
/// the struct's.
macro_rules! checked_fields {
    ($name:ident { $($field:ident: $js:literal),* $(,)? }) => {
        impl $name {
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($field), $js)),*];

            #[allow(dead_code)]
            fn every_field_is_listed(self) {
                let $name { $($field: _),* } = self;
            }
        }
    };
}

checked_fields!(StoreOptions {
    url: "string",
    cluster: "object",
    sentinel: "object",
    username: "string",
    password: "string",
    db: "number",
    tls: "object",
    prefix: "string",
    lock_prefix: "string",
    preload_script: "boolean",
    connect_timeout: "number",
    command_timeout: "number",
    remembered_text_bytes: "number",
    read_cache: "boolean",
    user_id_path: "string",
    user_prefix: "string",
});
checked_fields!(ClusterOptions { nodes: "urls" });
checked_fields!(SentinelOptions {
    nodes: "urls",
    master_name: "string",
    username: "string",
    password: "string",
});
checked_fields!(TlsOptions {
    ca: "pem",
    cert: "pem",
    key: "pem",
});

/// The name JavaScript gives a field (`lock_prefix`: `lockPrefix`), as napi does.
fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// The options `store.js` checks the types of, from the structs above: one
/// row per field, `[object, field, type]`, where object is `''` for the
/// store's options and `tls`, `cluster` or `sentinel` for the nested ones,
/// in the order of the structs' fields.
#[napi(
    ts_return_type = "Array<[object: '' | 'tls' | 'cluster' | 'sentinel', field: string, type: string]>"
)]
pub fn option_types() -> Vec<Vec<String>> {
    let objects: [(&str, &[(&str, &str)]); 4] = [
        ("", StoreOptions::FIELDS),
        ("tls", TlsOptions::FIELDS),
        ("cluster", ClusterOptions::FIELDS),
        ("sentinel", SentinelOptions::FIELDS),
    ];
    objects
        .iter()
        .flat_map(|(object, fields)| {
            fields
                .iter()
                .map(move |(field, ty)| vec![object.to_string(), camel_case(field), ty.to_string()])
        })
        .collect()
}

impl StoreOptions {
    /// The options checked: the store's [`Config`], or `ERR_INVALID_ARG`
    /// naming the bad option.
    pub fn config(&self) -> Result<Config> {
        let o = self;
        let given = [o.url.is_some(), o.cluster.is_some(), o.sentinel.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(StoreError::invalid_arg(
                "give only one of options.url, options.cluster and options.sentinel",
            ));
        }
        let db = db(o.db)?;
        let certs = o.tls.as_ref().map(certificates).transpose()?;
        let connect_timeout = timeout(
            "connectTimeout",
            o.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT_MS,
        )?;
        let command_timeout = timeout(
            "commandTimeout",
            o.command_timeout,
            DEFAULT_COMMAND_TIMEOUT_MS,
        )?;
        let remembered_text_bytes = match o.remembered_text_bytes {
            None => texts::DEFAULT_MAX_BYTES,
            Some(n) if n.fract() == 0.0 && (0.0..=MAX_TTL_MS).contains(&n) => n as usize,
            Some(n) => {
                return Err(StoreError::invalid_arg(format!(
                    "options.rememberedTextBytes must be a whole number of bytes from 0, got {n}"
                )))
            }
        };
        let timeouts = Timeouts {
            connect: connect_timeout,
            command: command_timeout,
        };
        let prefix = o.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
        // The read cache needs a text budget. The store opens its reports
        // connections itself (on a single server its data connection too),
        // over TCP or TLS, to watch their sockets (`link/tracking.rs`).
        let tracks = o.read_cache.unwrap_or(false) && remembered_text_bytes > 0;
        let tracking = match &o.cluster {
            Some(_) => Tracking::cluster(tracks),
            None => Tracking::new(tracks),
        };
        let watch = if tracks {
            // TLS where the store's other links speak it: a rediss:// URL
            // (a cluster's: its nodes'), or a Sentinel's data nodes with
            // options.tls.
            let speaks_tls = match (&o.url, &o.sentinel, &o.cluster) {
                (_, _, Some(c)) => c.nodes.iter().any(|n| n.starts_with("rediss://")),
                (_, Some(_), None) => certs.is_some(),
                (Some(url), None, None) => url.starts_with("rediss://"),
                (None, None, None) => false,
            };
            let tls = speaks_tls
                .then(|| Tls::new(certs.as_ref()).map_err(|e| bad_tls(&e)))
                .transpose()?;
            Some(Watch {
                pushes: tracking.pushes(),
                tls,
            })
        } else {
            None
        };
        let (topology, description) = if let Some(c) = &o.cluster {
            cluster_topology(c, o, db, certs, timeouts, watch)?
        } else if let Some(s) = &o.sentinel {
            sentinel_topology(s, o, db, certs, timeouts, watch)?
        } else {
            let url = o.url.as_deref().unwrap_or(DEFAULT_URL);
            let mut info = data_node("options.url", url, o, db)?;
            if tracks {
                // Invalidations come as pushes on the link itself.
                let settings = info.redis_settings().clone();
                info =
                    info.set_redis_settings(settings.set_protocol(redis::ProtocolVersion::RESP3));
            }
            let client = match certs {
                Some(_) if !url.starts_with("rediss://") => {
                    return Err(StoreError::invalid_arg(
                        "options.tls needs a rediss:// URL in options.url",
                    ))
                }
                Some(certs) => {
                    redis::Client::build_with_tls(info.clone(), certs).map_err(|e| bad_tls(&e))?
                }
                None => {
                    redis::Client::open(info.clone()).map_err(|e| bad_url("options.url", &e))?
                }
            };
            (Topology::single(client, timeouts, watch), describe(&info))
        };
        let lock_prefix = o.lock_prefix.as_deref().unwrap_or(DEFAULT_LOCK_PREFIX);
        if lock_prefix.is_empty() {
            return Err(StoreError::invalid_arg(
                "options.lockPrefix must not be empty: lock keys would equal session keys",
            ));
        }
        let mut keys = Keys::new(prefix, lock_prefix);
        let users = match &o.user_id_path {
            Some(path) => {
                check_user_id_path(path)?;
                let user_prefix = o.user_prefix.as_deref().unwrap_or(DEFAULT_USER_PREFIX);
                check_user_prefix(user_prefix, lock_prefix)?;
                keys = keys.with_users(user_prefix);
                Some(Users::new(path))
            }
            None => None,
        };
        Ok(Config {
            description,
            topology,
            keys,
            timeouts,
            remembered_text_bytes,
            tracking,
            users,
        })
    }
}

/// A dot-path of 1 to `MAX_USER_ID_PATH_SEGMENTS` non-empty segments.
fn check_user_id_path(path: &str) -> Result<()> {
    let segments = path.split('.').count();
    if path.split('.').any(str::is_empty) || segments > MAX_USER_ID_PATH_SEGMENTS {
        return Err(StoreError::invalid_arg(format!(
            "options.userIdPath must be a dot-path such as 'data.userId', of 1 to {MAX_USER_ID_PATH_SEGMENTS} non-empty segments"
        )));
    }
    Ok(())
}

/// Index keys must differ from every lock key: `<prefix><lockPrefix><id>` and
/// `<prefix><userPrefix><user>` are never the same key when neither
/// sub-prefix starts the other.
fn check_user_prefix(user_prefix: &str, lock_prefix: &str) -> Result<()> {
    if user_prefix.is_empty() {
        return Err(StoreError::invalid_arg(
            "options.userPrefix must not be empty: index keys would equal session keys",
        ));
    }
    if user_prefix.starts_with(lock_prefix) || lock_prefix.starts_with(user_prefix) {
        return Err(StoreError::invalid_arg(
            "options.userPrefix and options.lockPrefix must not start one another: index keys could equal lock keys",
        ));
    }
    Ok(())
}

fn cluster_topology(
    c: &ClusterOptions,
    o: &StoreOptions,
    db: Option<i64>,
    certs: Option<TlsCertificates>,
    timeouts: Timeouts,
    watch: Option<Watch>,
) -> Result<(Topology, String)> {
    if db.is_some_and(|db| db != 0) {
        return Err(StoreError::invalid_arg(
            "options.db cannot be used with options.cluster: Redis Cluster has only database 0",
        ));
    }
    let mut nodes = Vec::with_capacity(c.nodes.len());
    for (i, url) in c.nodes.iter().enumerate() {
        nodes.push(data_node(
            &format!("options.cluster.nodes[{i}]"),
            url,
            o,
            None,
        )?);
    }
    let builder_nodes = nodes.clone();
    let tls = nodes
        .iter()
        .map(|n| matches!(n.addr(), ConnectionAddr::TcpTls { .. }))
        .collect::<Vec<_>>();
    let first_tls = tls.first().copied().unwrap_or(false);
    if tls.iter().any(|t| *t != first_tls) {
        return Err(StoreError::invalid_arg(
            "options.cluster.nodes must all use redis:// or all use rediss://",
        ));
    }
    if certs.is_some() && !first_tls {
        return Err(StoreError::invalid_arg(
            "options.tls needs rediss:// node URLs in options.cluster.nodes",
        ));
    }
    let topology = Topology::cluster(builder_nodes, certs, timeouts, watch)?;
    let description = format!(
        "cluster {}",
        nodes.iter().map(describe).collect::<Vec<_>>().join(",")
    );
    Ok((topology, description))
}

fn sentinel_topology(
    s: &SentinelOptions,
    o: &StoreOptions,
    db: Option<i64>,
    certs: Option<TlsCertificates>,
    timeouts: Timeouts,
    watch: Option<Watch>,
) -> Result<(Topology, String)> {
    let mut nodes = Vec::with_capacity(s.nodes.len());
    let mut described = Vec::with_capacity(s.nodes.len());
    for (i, url) in s.nodes.iter().enumerate() {
        let what = format!("options.sentinel.nodes[{i}]");
        let info = parse_url(&what, url)?;
        if info.redis_settings().password().is_some() || info.redis_settings().db() != 0 {
            return Err(StoreError::invalid_arg(format!(
                "{what} must be a URL without password or db: give the sentinels' \
                 password as options.sentinel.password"
            )));
        }
        described.push(describe(&info));
        nodes.push(info.addr().clone());
    }
    let sentinel_tls = matches!(nodes[0], ConnectionAddr::TcpTls { .. });
    if nodes
        .iter()
        .any(|n| matches!(n, ConnectionAddr::TcpTls { .. }) != sentinel_tls)
    {
        return Err(StoreError::invalid_arg(
            "options.sentinel.nodes must all use redis:// or all use rediss://",
        ));
    }
    let target = SentinelTarget {
        nodes,
        master_name: s.master_name.clone(),
        username: o.username.clone(),
        password: o.password.clone(),
        db: db.unwrap_or(0),
        sentinel_username: s.username.clone(),
        sentinel_password: s.password.clone(),
        tls: certs,
        sentinel_tls,
    };
    let description = format!("sentinel {} of {}", s.master_name, described.join(","));
    Ok((Topology::sentinel(target, timeouts, watch)?, description))
}

/// A data node's connection info: the URL, then `username`, `password` and `db`
/// from the options on top. Skips CLIENT SETINFO, a Redis 7.2 command.
fn data_node(what: &str, url: &str, o: &StoreOptions, db: Option<i64>) -> Result<ConnectionInfo> {
    let info = parse_url(what, url)?;
    let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(u) = &o.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &o.password {
        redis = redis.set_password(p);
    }
    if let Some(db) = db {
        redis = redis.set_db(db);
    }
    Ok(info.set_redis_settings(redis))
}

/// A URL's connection info. Errors never quote the URL: a password with an
/// unencoded `/`, `?`, `#` or `@` would show in any part of it.
fn parse_url(what: &str, url: &str) -> Result<ConnectionInfo> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(StoreError::invalid_arg(format!(
            "{what} must start with redis:// or rediss://"
        )));
    }
    let info = url.into_connection_info().map_err(|e| bad_url(what, &e))?;
    if matches!(info.addr(), ConnectionAddr::TcpTls { insecure: true, .. }) {
        return Err(StoreError::invalid_arg(format!(
            "{what}: #insecure is not supported; certificates are always verified \
             (give the CA as options.tls.ca)"
        )));
    }
    let db = info.redis_settings().db();
    if !(0..=MAX_DB).contains(&db) {
        return Err(StoreError::invalid_arg(format!(
            "{what}: the database number must be an integer from 0 to {MAX_DB}, got {db}"
        )));
    }
    Ok(info)
}

/// The highest database index (Redis keeps the count in a C int).
const MAX_DB: i64 = 2_147_483_647;

fn bad_url(what: &str, e: &redis::RedisError) -> StoreError {
    // The crate's parse errors name what is wrong, never the URL's text.
    StoreError::invalid_arg(format!(
        "{what} is not a valid Redis URL (redis://[[user]:password@]host[:port][/db]; \
         percent-encode special characters in the password): {e}"
    ))
}

fn bad_tls(e: &redis::RedisError) -> StoreError {
    StoreError::invalid_arg(format!(
        "options.tls is not usable (a certificate or key that is not valid PEM?): {}",
        e.detail().unwrap_or(e.category())
    ))
}

fn certificates(t: &TlsOptions) -> Result<TlsCertificates> {
    let pem = |name: &str, v: &Option<String>| -> Result<Option<Vec<u8>>> {
        match v {
            Some(text) if !text.contains("-----BEGIN ") => Err(StoreError::invalid_arg(format!(
                "options.tls.{name} must be PEM text (-----BEGIN …)"
            ))),
            Some(text) => Ok(Some(text.as_bytes().to_vec())),
            None => Ok(None),
        }
    };
    let client_tls = match (pem("cert", &t.cert)?, pem("key", &t.key)?) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => {
            return Err(StoreError::invalid_arg(
                "options.tls.cert and options.tls.key must be given together",
            ))
        }
    };
    Ok(TlsCertificates {
        client_tls,
        root_cert: pem("ca", &t.ca)?,
    })
}

fn db(value: Option<f64>) -> Result<Option<i64>> {
    match value {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && (0.0..=MAX_DB as f64).contains(&n) => Ok(Some(n as i64)),
        Some(n) => Err(StoreError::invalid_arg(format!(
            "options.db must be an integer from 0 to {MAX_DB}, got {n}"
        ))),
    }
}

fn timeout(name: &str, value: Option<f64>, default_ms: u64) -> Result<Duration> {
    let Some(ms) = value else {
        return Ok(Duration::from_millis(default_ms));
    };
    if !ms.is_finite() || ms <= 0.0 || ms > MAX_TIMEOUT_MS as f64 {
        return Err(StoreError::invalid_arg(format!(
            "options.{name} must be a number of ms greater than 0 and at most {MAX_TIMEOUT_MS}, got {ms}"
        )));
    }
    Ok(Duration::from_millis(ms.ceil() as u64))
}

/// Where a connection goes, for messages and `util.inspect`: scheme, host,
/// port and db, with `***` for any user info (a password typed where the user
/// name goes would otherwise be shown).
fn describe(info: &ConnectionInfo) -> String {
    let (scheme, host, port) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => ("redis", host.as_str(), *port),
        ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host.as_str(), *port),
        _ => ("redis", "?", 0),
    };
    let settings = info.redis_settings();
    let auth = match (settings.username(), settings.password()) {
        (None, None) => "",
        _ => "***@",
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let db = match settings.db() {
        0 => String::new(),
        db => format!("/{db}"),
    };
    format!("{scheme}://{auth}{host}:{port}{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = StoreOptions::default().config().unwrap();
        assert_eq!(c.description, DEFAULT_URL);
        assert_eq!(c.keys.session("x"), "sess:x");
        assert_eq!(c.keys.lock("x"), "sess:lock:x");
        assert_eq!(c.timeouts.connect, Duration::from_millis(1000));
        assert_eq!(c.timeouts.command, Duration::from_millis(1000));
    }

    #[test]
    fn timeouts_round_up_and_reject_nonsense() {
        let o = StoreOptions {
            command_timeout: Some(2.5),
            ..Default::default()
        };
        assert_eq!(
            o.config().unwrap().timeouts.command,
            Duration::from_millis(3)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            let o = StoreOptions {
                connect_timeout: Some(bad),
                ..Default::default()
            };
            let e = o.config().unwrap_err();
            assert!(
                e.message.contains("options.connectTimeout"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn url_must_be_redis_and_errors_never_show_the_password() {
        for bad in [
            "http://u:hunter2@h",
            "redis://u:hunter2@h:notaport",
            "hunter2",
        ] {
            let o = StoreOptions {
                url: Some(bad.into()),
                ..Default::default()
            };
            let e = o.config().unwrap_err();
            assert!(e.message.starts_with("options.url"), "{}", e.message);
            assert!(!e.message.contains("hunter2"), "{}", e.message);
        }
        for good in [
            "redis://h:1/2",
            "rediss://u:p@h",
            "redis://:p@127.0.0.1:6380/0",
        ] {
            let o = StoreOptions {
                url: Some(good.into()),
                ..Default::default()
            };
            assert!(o.config().is_ok(), "{good}");
        }
    }

    #[test]
    fn empty_lock_prefix_is_refused() {
        let o = StoreOptions {
            lock_prefix: Some(String::new()),
            ..Default::default()
        };
        assert!(o.config().unwrap_err().message.contains("lockPrefix"));
    }

    #[test]
    fn topologies_are_described_without_passwords() {
        let o = StoreOptions {
            cluster: Some(ClusterOptions {
                nodes: vec!["redis://u:hunter2@127.0.0.1:7000".into()],
            }),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let c = o.config().unwrap();
        assert!(matches!(c.topology, Topology::Cluster(..)));
        assert_eq!(c.description, "cluster redis://***@127.0.0.1:7000");
        assert!(!format!("{c:?}").contains("hunter2"));
        let o = StoreOptions {
            sentinel: Some(SentinelOptions {
                nodes: vec!["redis://127.0.0.1:26379".into()],
                master_name: "mymaster".into(),
                password: Some("hunter2".into()),
                ..Default::default()
            }),
            db: Some(3.0),
            ..Default::default()
        };
        let c = o.config().unwrap();
        assert!(matches!(c.topology, Topology::Sentinel(..)));
        assert_eq!(
            c.description,
            "sentinel mymaster of redis://127.0.0.1:26379"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn options_that_do_not_fit_are_refused() {
        let nodes = vec!["redis://127.0.0.1:7000".to_string()];
        let cases = [
            StoreOptions {
                url: Some("redis://h".into()),
                cluster: Some(ClusterOptions {
                    nodes: nodes.clone(),
                }),
                ..Default::default()
            },
            StoreOptions {
                cluster: Some(ClusterOptions { nodes }),
                db: Some(2.0),
                ..Default::default()
            },
            StoreOptions {
                db: Some(-1.0),
                ..Default::default()
            },
            StoreOptions {
                url: Some("redis://h".into()),
                tls: Some(TlsOptions {
                    ca: Some("-----BEGIN CERTIFICATE-----".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        for o in cases {
            assert_eq!(
                o.config().unwrap_err().code,
                crate::errors::Code::InvalidArg
            );
        }
    }

    #[test]
    fn no_message_or_description_shows_a_password_however_the_url_is_malformed() {
        for url in [
            "redis://:hunter2/x@127.0.0.1:6379",
            "redis://:hunter2?x@127.0.0.1:6379",
            "redis://:hunter2#x@127.0.0.1:6379",
            "redis://u:hunt@er2@127.0.0.1:6379",
            "redis://u:hunter2@127.0.0.1:6379/notadb",
            "redis://u:hunter2@127.0.0.1:99999",
            "rediss://u:hunter2@127.0.0.1:6379#insecure",
            "redis://u:hunter2@127.0.0.1:6379/-1",
            "redis://u:hunter2@127.0.0.1:6379/99999999999",
            "hunter2://x",
        ] {
            let o = StoreOptions {
                url: Some(url.into()),
                ..Default::default()
            };
            match o.config() {
                Err(e) => {
                    assert!(e.message.starts_with("options.url"), "{}", e.message);
                    assert!(
                        !e.message.contains("hunter") && !e.message.contains("er2"),
                        "{url}: {}",
                        e.message
                    );
                }
                Ok(c) => {
                    assert!(
                        !c.description.contains("hunter") && !c.description.contains("er2"),
                        "{url}: {}",
                        c.description
                    );
                    assert!(!format!("{c:?}").contains("hunter"));
                }
            }
        }
    }

    #[test]
    fn the_urls_database_is_range_checked_at_creation() {
        for url in ["redis://h/-1", "redis://h/99999999999"] {
            let o = StoreOptions {
                url: Some(url.into()),
                ..Default::default()
            };
            let e = o.config().unwrap_err();
            assert!(e.message.contains("database number"), "{}", e.message);
        }
    }

    #[test]
    fn descriptions() {
        let describe_url = |u: &str| describe(&u.into_connection_info().unwrap());
        assert_eq!(describe_url("redis://u:secret@h:1/3"), "redis://***@h:1/3");
        assert_eq!(describe_url("redis://:secret@h"), "redis://***@h:6379");
        // A password typed where the user name goes is user info too.
        assert_eq!(describe_url("redis://hunter2@h"), "redis://***@h:6379");
        assert_eq!(describe_url("rediss://[::1]:7000"), "rediss://[::1]:7000");
    }
}
