//! Redis Sentinel: the sentinels the store asks for the master, and what
//! they announce. A link opens to the master the sentinels name (asked with
//! `SENTINEL MASTERS`, checked with `ROLE`); from the first link on, the store
//! listens to every sentinel ([`ANNOUNCEMENTS`]) and acts at once
//! (`connection.rs`, `Connection::announced`): when the sentinel leading a
//! failover is about to promote a replica, the store stops writing to the old
//! master and holds its calls; when the promotion is announced it moves to
//! the new master. Before, it wrote on to the old master until the sentinels
//! demoted it (about 10 s after `SENTINEL FAILOVER`, measured), and every
//! write since the promotion was lost.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redis::sentinel::SentinelClient;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::errors::{Result, StoreError};
use crate::link::retry::Revive;

/// What the sentinels publish as a master changes: the replica the leading
/// sentinel is about to promote (`+failover-state-send-slaveof-noone`,
/// published before it sends `REPLICAOF NO ONE`), that replica once it
/// reports itself master (`+promoted-slave`), the switch once the failover
/// ended (`+switch-master`, from every sentinel as it learns the new master),
/// and a promotion given up (`-failover-abort-slave-timeout`).
pub const ANNOUNCEMENTS: [&str; 4] = [
    "+failover-state-send-slaveof-noone",
    "+promoted-slave",
    "+switch-master",
    "-failover-abort-slave-timeout",
];

/// How long the store holds its calls at most once a sentinel said it is
/// promoting a replica, waiting for the promotion (about 1 s measured: the
/// sentinels ask the replica's role every second during a failover). A
/// promotion not announced by then (the leading sentinel's connection lost)
/// sends the calls back to the master the sentinels name.
pub const PROMOTION_HOLD: Duration = Duration::from_secs(5);

/// What a sentinel announced about the store's master.
#[derive(Debug, PartialEq, Eq)]
pub enum Announcement<'a> {
    /// A replica is about to be promoted: writes to the master now may be lost.
    Promoting,
    /// The master is at `host:port` now.
    Moved(&'a str, u16),
    /// The promotion was given up: the master stays.
    Aborted,
}

/// How often a listener asks its sentinel whether it is still there: a
/// sentinel that went silent (its host gone) is left for the next one.
const LISTENER_PING: Duration = Duration::from_secs(1);

/// The sentinels of one master, and what the store needs to reach the
/// master they name.
pub struct Sentinels {
    /// Asks the sentinels for the master when a link opens.
    pub lookup: tokio::sync::Mutex<SentinelClient>,
    /// The name the sentinels monitor the master by.
    pub master_name: String,
    /// One client per sentinel, for its announcements.
    pub listen_to: Vec<redis::Client>,
    /// The connection info of the last master a link opened to: a master
    /// the sentinels announce is reached with the same settings.
    last: Mutex<Option<ConnectionInfo>>,
    /// A master the sentinels announced, not yet opened: the next link goes
    /// there without asking them (a sentinel that did not learn the switch
    /// yet would name the old master, still writable until demoted).
    announced: Mutex<Option<(String, u16)>>,
}

/// A sentinel's own connection settings (`sentinel.username`/`password`),
/// for listening to it.
pub struct SentinelLogin<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub tls: Option<&'a redis::TlsCertificates>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sentinels {
    pub fn new(
        lookup: SentinelClient,
        master_name: String,
        nodes: &[ConnectionAddr],
        login: SentinelLogin<'_>,
    ) -> Result<Sentinels> {
        let listen_to = nodes
            .iter()
            .map(|addr| {
                let mut redis = RedisConnectionInfo::default().set_skip_set_lib_name();
                if let Some(u) = login.username {
                    redis = redis.set_username(u);
                }
                if let Some(p) = login.password {
                    redis = redis.set_password(p);
                }
                let info = addr
                    .clone()
                    .into_connection_info()?
                    .set_redis_settings(redis);
                match (addr, login.tls) {
                    (ConnectionAddr::TcpTls { .. }, Some(certs)) => {
                        redis::Client::build_with_tls(info, certs.clone())
                    }
                    _ => redis::Client::open(info),
                }
            })
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|e| {
                StoreError::invalid_arg(format!(
                    "options.sentinel is not usable: {}",
                    e.detail().unwrap_or(e.category())
                ))
            })?;
        Ok(Sentinels {
            lookup: tokio::sync::Mutex::new(lookup),
            master_name,
            listen_to,
            last: Mutex::new(None),
            announced: Mutex::new(None),
        })
    }

    /// The master's client: the one the sentinels announced last if no link
    /// went there yet, else the one they name when asked.
    pub async fn master(&self) -> redis::RedisResult<redis::Client> {
        let announced = guard(&self.announced).take();
        let last = guard(&self.last).clone();
        let client = match (announced, last) {
            (Some((host, port)), Some(last)) => {
                let addr = match last.addr().clone() {
                    ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure,
                        tls_params,
                    },
                    _ => ConnectionAddr::Tcp(host, port),
                };
                redis::Client::open(last.set_addr(addr))?
            }
            _ => self.lookup.lock().await.async_get_client().await?,
        };
        *guard(&self.last) = Some(client.get_connection_info().clone());
        Ok(client)
    }

    /// The sentinels announced the master at `host:port`: the next link
    /// goes there. False if that master was announced already.
    pub fn announce(&self, host: &str, port: u16) -> bool {
        let mut announced = guard(&self.announced);
        if matches!(&*announced, Some((h, p)) if h == host && *p == port) {
            return false;
        }
        *announced = Some((host.to_owned(), port));
        true
    }
}

/// What a sentinel's message on `channel` says about `master_name`, if it
/// is about it: `+switch-master <name> <old ip> <old port> <new ip> <new port>`;
/// `+promoted-slave` and `+failover-state-send-slaveof-noone` name the
/// replica, `slave <ip>:<port> <ip> <port> @ <name> <master ip> <master port>`;
/// `-failover-abort-slave-timeout` the master, `master <name> <ip> <port>`.
pub fn announcement<'a>(
    channel: &str,
    payload: &'a str,
    master_name: &str,
) -> Option<Announcement<'a>> {
    let f: Vec<&str> = payload.split(' ').collect();
    let replica = f.len() == 8 && f[0] == "slave" && f[4] == "@";
    let (name, said) = match channel {
        "+switch-master" if f.len() == 5 => (f[0], Announcement::Moved(f[3], f[4].parse().ok()?)),
        "+promoted-slave" if replica => (f[5], Announcement::Moved(f[2], f[3].parse().ok()?)),
        "+failover-state-send-slaveof-noone" if replica => (f[5], Announcement::Promoting),
        "-failover-abort-slave-timeout" if f.len() == 4 && f[0] == "master" => {
            (f[1], Announcement::Aborted)
        }
        _ => return None,
    };
    (name == master_name).then_some(said)
}

/// Listens to every sentinel of `sentinels` until `closed` turns true: each
/// [`Announcement`] about the store's master goes to `heard`. A
/// listener whose sentinel is gone, refuses or goes silent connects again
/// with a capped backoff.
pub fn listen(
    sentinels: &Sentinels,
    connect_timeout: Duration,
    closed: tokio::sync::watch::Receiver<bool>,
    heard: Arc<dyn Fn(Announcement<'_>) + Send + Sync>,
) {
    for client in &sentinels.listen_to {
        let (client, mut closed, heard) = (client.clone(), closed.clone(), Arc::clone(&heard));
        let master_name = sentinels.master_name.clone();
        tokio::spawn(async move {
            let mut revive = Revive::default();
            while !*closed.borrow() {
                let listened = async {
                    let mut pubsub =
                        tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                            .await
                            .ok()?
                            .ok()?;
                    tokio::time::timeout(connect_timeout, pubsub.subscribe(&ANNOUNCEMENTS))
                        .await
                        .ok()?
                        .ok()?;
                    let (mut sink, mut stream) = pubsub.split();
                    let mut ping = tokio::time::interval(LISTENER_PING);
                    loop {
                        tokio::select! {
                            message = stream.next() => {
                                let message = message?;
                                let payload: String = message.get_payload().ok()?;
                                let channel = message.get_channel_name();
                                if let Some(said) = announcement(channel, &payload, &master_name) {
                                    heard(said);
                                }
                            }
                            _ = ping.tick() => {
                                let pong = tokio::time::timeout(connect_timeout, sink.ping::<redis::Value>()).await;
                                if !matches!(pong, Ok(Ok(_))) {
                                    return None;
                                }
                            }
                            _ = closed.changed() => return Some(()),
                        }
                        revive = Revive::default();
                    }
                };
                if listened.await.is_some() {
                    break; // closed
                }
                tokio::select! {
                    _ = tokio::time::sleep(revive.next_wait()) => {}
                    _ = closed.changed() => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{announcement, Announcement};

    #[test]
    fn reads_what_the_sentinels_say_about_its_master_only() {
        let switch = "mymaster 127.0.0.1 6379 127.0.0.1 6380";
        let replica = "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379";
        let master = "master mymaster 127.0.0.1 6379";
        let said = |channel, payload, name| announcement(channel, payload, name);
        let moved = Some(Announcement::Moved("127.0.0.1", 6380));
        assert_eq!(said("+switch-master", switch, "mymaster"), moved);
        assert_eq!(said("+promoted-slave", replica, "mymaster"), moved);
        assert_eq!(
            said("+failover-state-send-slaveof-noone", replica, "mymaster"),
            Some(Announcement::Promoting)
        );
        assert_eq!(
            said("-failover-abort-slave-timeout", master, "mymaster"),
            Some(Announcement::Aborted)
        );
        for channel in [
            "+switch-master",
            "+promoted-slave",
            "+failover-state-send-slaveof-noone",
            "-failover-abort-slave-timeout",
        ] {
            for payload in [switch, replica, master] {
                assert!(said(channel, payload, "other").is_none());
                assert!(said(channel, payload, "my").is_none());
            }
        }
        assert_eq!(said("+switch-master", "mymaster 1 2", "mymaster"), None);
        assert_eq!(
            said("+switch-master", "mymaster a b c port", "mymaster"),
            None
        );
        assert_eq!(said("+promoted-slave", switch, "mymaster"), None);
        assert_eq!(said("+sdown", replica, "mymaster"), None);
    }
}
