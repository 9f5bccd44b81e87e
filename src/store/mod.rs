//! The store's steps: what one store holds (its connection, key layout,
//! scripts, lock tokens, remembered texts and counters) and what it does with
//! a batch of ops ([`batch`]): the commands each op sends ([`ops`]), what the
//! replies mean ([`replies`]), the admin calls ([`admin`]). Knows nothing of
//! JavaScript: `addon` hands it checked [`Config`] and decoded ops.

pub mod admin;
pub mod batch;
#[cfg(test)]
mod batch_model;
pub mod keys;
pub mod locks;
#[cfg(test)]
mod model_support;
pub mod ops;
pub mod replies;
pub mod rounds;
pub mod stats;
pub mod texts;
#[cfg(test)]
mod texts_model;
pub mod users;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use redis::Value;

use crate::errors::{Result, StoreError};
use crate::link::scripts::Scripts;
use crate::link::topology::Topology;
use crate::link::tracking::{Invalidations, Tracking};
use crate::link::{Connection, Timeouts};
use keys::Keys;
use locks::LockTokens;
use stats::Stats;
use texts::Texts;
use users::Users;

/// A store's checked options (`addon/options.rs` builds it).
pub struct Config {
    /// Where the store connects, without credentials: for messages and `util.inspect`.
    pub description: String,
    pub topology: Topology,
    pub keys: Keys,
    pub timeouts: Timeouts,
    pub remembered_text_bytes: usize,
    /// The server's reports of changed keys, for the read cache (given to
    /// the topology's clients as their push sender).
    pub tracking: Arc<Tracking>,
    /// Where a session names its user (`userIdPath`), when the store keeps
    /// each user's index of session ids.
    pub users: Option<Users>,
}

impl fmt::Debug for Config {
    // By hand: the clients inside hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("target", &self.description)
            .field("keys", &self.keys)
            .field("timeouts", &self.timeouts)
            .field("remembered_text_bytes", &self.remembered_text_bytes)
            .field("tracking", &self.tracking.state())
            .field("users", &self.users)
            .finish()
    }
}

pub struct Store {
    /// Where the store connects, without credentials.
    pub description: String,
    pub conn: Arc<Connection>,
    pub keys: Keys,
    pub scripts: Scripts,
    pub(crate) tokens: LockTokens,
    pub(crate) texts: Arc<Texts>,
    pub stats: Stats,
    /// With `userIdPath`: where a session names its user.
    pub users: Option<Arc<Users>>,
}

/// The server's reports, turned from keys into the session ids of the texts.
pub(crate) struct Reports {
    texts: Arc<Texts>,
    keys: Keys,
}

impl Reports {
    pub(crate) fn new(texts: Arc<Texts>, keys: Keys) -> Reports {
        Reports { texts, keys }
    }
}

impl Invalidations for Reports {
    fn keys(&self, keys: &[Value]) {
        let ids = keys.iter().filter_map(|k| match k {
            Value::BulkString(k) => self.keys.id_of(k),
            _ => None,
        });
        self.texts.invalidate(ids);
    }

    fn everything(&self) {
        self.texts.flush();
    }
}

/// What a store forgets when its server may have changed: the users' index
/// bounds it wrote (the new server may never have had the last renewal).
struct Learned(Option<Arc<Users>>);

impl crate::link::connection::Learned for Learned {
    fn forget(&self) {
        if let Some(users) = &self.0 {
            users.forget_all();
        }
    }
}

impl Store {
    pub fn new(config: Config) -> Store {
        let users = config.users.map(Arc::new);
        let conn = Connection::new(config.topology, config.timeouts, config.tracking.clone());
        conn.learn_into(Arc::new(Learned(users.clone())));
        let texts = Arc::new(Texts::new(config.remembered_text_bytes));
        config.tracking.listen(Arc::new(Reports::new(
            Arc::clone(&texts),
            config.keys.clone(),
        )));
        Store {
            description: config.description,
            conn,
            keys: config.keys,
            scripts: Scripts::default(),
            tokens: LockTokens::default(),
            texts,
            stats: Stats::default(),
            users,
        }
    }

    /// The text a `get` of `id` is answered with from memory, if the read
    /// cache holds it (`texts.rs`); counted as a get that found a session.
    pub fn cached(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        if !self.conn.tracking.serves() {
            return None;
        }
        let text = self.texts.serve(id, Instant::now())?;
        self.stats.served_from_memory();
        Some(text)
    }

    pub async fn close(&self) {
        self.conn.close().await;
    }

    /// `SCRIPT LOAD` of the scripts; used by `preloadScript` and after NOSCRIPT.
    pub async fn load_scripts(&self, deadline: Instant) -> Result<()> {
        for reply in self.conn.exec(&self.scripts.load(), deadline).await? {
            if let Value::ServerError(e) = reply {
                return Err(StoreError::from_reply(&e, self.conn.is_cluster()));
            }
        }
        Ok(())
    }
}
