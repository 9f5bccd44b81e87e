//! A user's sessions (`userIdPath`): which user a session's text names, the
//! index of each user's session ids that the writes keep (`lua/users.lua`,
//! a sorted set under `<prefix><userPrefix><userId>`), and the calls that
//! list a user's sessions and end them.
//!
//! **No live session is ever missing from its user's index**, on one server,
//! Sentinel or a cluster (where the index and the session are on different
//! slots, and no command can hold both):
//! - A write that leaves a session naming a user (a set, a merge's
//!   compare-and-set, a touch) first adds the id to that user's index, with a
//!   bound of the server's now + the ttl + the call bound, and writes the
//!   session only once the server has answered that (`rounds.rs`,
//!   `Step::Index`). The write is sent within the call bound, and it
//!   expires at a time on the server's clock (`PXAT`: the script's clock
//!   plus the time since plus the ttl, [`ServerClock`]), so the session
//!   expires before the bound however late the write is applied (one held
//!   on the wire past its call bound, rejected `ERR_TIMEOUT`, then applied:
//!   its expiry may already have passed). A later write that extends it adds
//!   again first, and the bound only grows. On a cluster the entry's
//!   clock is the index's master's and `PXAT` is read by the session's:
//!   the expiry is at most the entry's clock + ttl + headroom, so clocks
//!   that differ by less than the call bound still end the session first.
//!   On a server without `PXAT`
//!   (Redis 6.0, or one that would not say which it is) the write expires
//!   its ttl after it is applied: a write applied after its call bound can
//!   then outlive its entry.
//! - An entry leaves the index only once its bound has passed, on the
//!   server's clock, inside the script (`ZRANGEBYSCORE … (now`, then `ZREM`,
//!   atomically): by then no session it stood for can be alive.
//!
//! **No dead id is ever returned**: the calls read each entry's session and
//! keep only those that exist and name the user now. An entry of a session
//! that ended, was rotated away or logged out stays until its bound passes
//! (at most a ttl and a call bound), skipped meanwhile: removing it earlier
//! could race a write that adds it back before its session is written. The
//! index key expires with its highest bound, so no index outlives the
//! sessions written to it, with no event needed.
//!
//! **Renewals.** Each entry's bound has headroom past the write's: an eighth
//! of its ttl. A store remembers the bounds it wrote lately (`Recent`), and a
//! merge or a touch of a session it indexed under the same user needs no new
//! entry while the bound it remembers (counted from before the addition was
//! sent, so never later than the server's) is past the bound that write would
//! need. So most writes of a logged-in session cost nothing more; a set
//! (a new session) always adds. The headroom is also how long an index may
//! outlive its last session.
//!
//! Ending compares and deletes each session against the text it read
//! (`lua/unlock.lua`, a compare-and-delete), so a session that changed user
//! in between is not ended; one that changed otherwise is read again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{Pipeline, Value};

use crate::errors::{Result, StoreError};
use crate::link::scripts::{evalsha, is_noscript, Scripts};
use crate::merge::splice::{validate, value_at};
use crate::store::admin::scan_reply;
use crate::store::keys::Keys;
use crate::store::replies::describe_reply;
use crate::store::Store;

/// Index entries read per `ZSCAN` page, and sessions read or ended per
/// round: each command stays short whatever a user holds.
const PAGE: usize = 1000;

/// Sessions whose index bounds a store remembers at most; past it, it
/// forgets them all (a forgotten one is only added again).
const RECENT_MAX: usize = 65_536;

/// An entry's headroom past the bound a write needs: an eighth of its ttl.
fn headroom_ms(ttl_ms: u64) -> u64 {
    ttl_ms / 8
}

/// Where a session names its user, and the index bounds this store wrote
/// lately.
#[derive(Debug)]
pub struct Users {
    segments: Vec<String>,
    recent: Mutex<HashMap<String, Recent>>,
}

/// The bound this store last wrote for a session: its user, an instant no
/// later than the bound on the server, and the server's clock when it wrote it.
#[derive(Debug)]
struct Recent {
    user: String,
    until: Instant,
    clock: ServerClock,
}

/// A time on the server's clock (ms since the epoch) and a local instant no
/// later than it: the server's clock at a later local instant is at most
/// `server_ms` plus the time since `local` (an upper bound, off by the round
/// trip it was read in).
#[derive(Debug, Clone, Copy)]
pub struct ServerClock {
    pub server_ms: u64,
    pub local: Instant,
}

impl ServerClock {
    /// When a write of ttl `ttl_ms` sent at `now` expires on the server's
    /// clock (`PXAT`): never earlier than its ttl from when it is applied
    /// on time, never later than the index entry the clock came with, however
    /// late it is applied (the entry's bound is past this while the entry
    /// covers the write: [`Users::covering`]).
    pub fn expiry_at(self, now: Instant, ttl_ms: u64) -> u64 {
        let since = now.saturating_duration_since(self.local).as_millis() as u64;
        self.server_ms + since + ttl_ms
    }
}

impl Users {
    /// `path`: a dot-path such as `data.userId`, checked by `addon/options.rs`.
    pub fn new(path: &str) -> Users {
        Users {
            segments: path.split('.').map(str::to_owned).collect(),
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, Recent>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether session `id` is in `user`'s index with a bound past what a
    /// write of ttl `ttl_ms` sent at `now` needs (its ttl and `slack_ms`): the
    /// server's clock when that entry was written, if it is.
    pub fn covering(
        &self,
        id: &str,
        user: &str,
        ttl_ms: u64,
        slack_ms: u64,
        now: Instant,
    ) -> Option<ServerClock> {
        let needed = now + Duration::from_millis(ttl_ms + slack_ms);
        self.recent()
            .get(id)
            .filter(|r| r.user == user && r.until >= needed)
            .map(|r| r.clock)
    }

    /// Session `id` was added to `user`'s index by a step planned at
    /// `clock.local`, which the server ran at `clock.server_ms`, for a write
    /// of ttl `ttl_ms`.
    pub fn indexed(&self, id: &str, user: &str, clock: ServerClock, ttl_ms: u64, slack_ms: u64) {
        let until = clock.local + Duration::from_millis(ttl_ms + slack_ms + headroom_ms(ttl_ms));
        let mut recent = self.recent();
        if recent.len() >= RECENT_MAX && !recent.contains_key(id) {
            recent.clear();
        }
        recent.insert(
            id.to_owned(),
            Recent {
                user: user.to_owned(),
                until,
                clock,
            },
        );
    }

    /// Forgets every bound (after `clear()`, which removes the indexes).
    pub fn forget_all(&self) {
        self.recent().clear();
    }

    /// The user a session's text names: the string or number at the path
    /// (a number as JavaScript reads it and `String(n)` writes it, however
    /// its JSON text spells it: `7.0`, `1E3` and `-0` are `7`, `1000` and
    /// `0`); None for anything else, or nothing. `text` is known to be UTF-8
    /// holding one JSON object.
    pub fn user_of(&self, text: &[u8]) -> Option<String> {
        let value = value_at(text, &self.segments).ok()??;
        match value.first()? {
            b'"' => serde_json::from_slice::<String>(value)
                .ok()
                .filter(|u| !u.is_empty()),
            b'-' | b'0'..=b'9' => js_number_text(value),
            _ => None,
        }
    }

    /// The user a text read from the server names, once it is checked.
    fn user_of_read(&self, text: &[u8]) -> Option<String> {
        validate(text).ok()?;
        self.user_of(text)
    }
}

/// `String(n)` of the number a JSON number's text holds, as `JSON.parse`
/// reads it (the nearest double); None if it is not one, or not finite (a
/// number too large for a double: `JSON.parse` gives Infinity, which is no
/// user id, as `checkUserId` refuses it).
fn js_number_text(json: &[u8]) -> Option<String> {
    let n: f64 = std::str::from_utf8(json).ok()?.parse().ok()?;
    n.is_finite()
        .then(|| ryu_js::Buffer::new().format_finite(n).to_owned())
}

/// Appends the addition of session `id` to `user`'s index, for a write of
/// ttl `ttl_ms` sent within `slack_ms` (the call bound).
pub fn push_index_add(
    pipe: &mut Pipeline,
    (scripts, keys): (&Scripts, &Keys),
    slack_ms: u64,
    user: &str,
    id: &str,
    ttl_ms: u64,
) {
    evalsha(pipe, scripts.users(), keys.user_index(user))
        .arg("add")
        .arg(id)
        .arg(ttl_ms + slack_ms + headroom_ms(ttl_ms));
}

impl Store {
    fn users_or_refuse(&self) -> Result<&Users> {
        self.users.as_deref().ok_or_else(|| {
            StoreError::invalid_arg("the store keeps no index of users: set the userIdPath option")
        })
    }

    /// Runs `pipe`; after NOSCRIPT (a restart or `SCRIPT FLUSH`), loads the
    /// scripts and runs it once more.
    async fn exec_scripted(&self, pipe: &Pipeline, deadline: Instant) -> Result<Vec<Value>> {
        let replies = self.conn.exec(pipe, deadline).await?;
        if !replies.iter().any(is_noscript) {
            return Ok(replies);
        }
        self.load_scripts(deadline).await?;
        self.conn.exec(pipe, deadline).await
    }

    /// The ids of `user`'s live sessions, each with the text it was found
    /// with: every entry of the index, each session read and kept if it
    /// names the user.
    async fn live_sessions(&self, user: &str, deadline: Instant) -> Result<Vec<(String, Vec<u8>)>> {
        let users = self.users_or_refuse()?;
        let key = self.keys.user_index(user);
        let cluster = self.conn.is_cluster();
        // Every passed entry goes, 1,000 a call, before the index is read.
        let mut prune = redis::pipe();
        prune.ignore_errors();
        evalsha(&mut prune, self.scripts.users(), key.clone()).arg("prune");
        loop {
            match self.exec_scripted(&prune, deadline).await?.first() {
                Some(Value::Int(0)) => break,
                Some(Value::Int(_)) => continue, // more passed entries
                Some(Value::ServerError(e)) => return Err(StoreError::from_reply(e, cluster)),
                other => {
                    return Err(StoreError::new(
                        crate::errors::Code::Redis,
                        format!(
                            "unexpected reply to the index's script: {}",
                            describe_reply(other)
                        ),
                    ))
                }
            }
        }
        let mut seen = HashSet::new();
        let mut live = Vec::new();
        let mut cursor = String::from("0");
        loop {
            let mut scan = redis::pipe();
            scan.ignore_errors();
            scan.cmd("ZSCAN")
                .arg(&key)
                .arg(&cursor)
                .arg("COUNT")
                .arg(PAGE);
            let reply = self.conn.exec(&scan, deadline).await?.pop();
            let (next, entries) = scan_reply(reply.unwrap_or(Value::Nil), cluster)?;
            // Members and scores alternate; the scores are left out.
            let ids: Vec<String> = entries
                .into_iter()
                .step_by(2)
                .filter_map(|m| String::from_utf8(m).ok())
                .filter(|id| seen.insert(id.clone()))
                .collect();
            live.extend(self.read_live(users, user, ids, deadline).await?);
            if next == "0" {
                return Ok(live);
            }
            cursor = next;
        }
    }

    /// Of the sessions `ids`, those that exist and name `user`, with their texts.
    async fn read_live(
        &self,
        users: &Users,
        user: &str,
        ids: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in &ids {
            pipe.cmd("GET").arg(self.keys.session(id));
        }
        let replies = self.conn.exec(&pipe, deadline).await?;
        let mut live = Vec::new();
        for (id, reply) in ids.into_iter().zip(replies) {
            match reply {
                Value::BulkString(text) => {
                    if users.user_of_read(&text).as_deref() == Some(user) {
                        live.push((id, text));
                    }
                }
                Value::Nil => {}
                Value::ServerError(e) => {
                    return Err(StoreError::from_reply(&e, self.conn.is_cluster()))
                }
                other => {
                    return Err(StoreError::new(
                        crate::errors::Code::Redis,
                        format!("unexpected reply to GET: {}", describe_reply(Some(&other))),
                    ))
                }
            }
        }
        Ok(live)
    }

    /// The ids of `user`'s live sessions.
    pub async fn user_sessions(&self, user: &str, deadline: Instant) -> Result<Vec<String>> {
        let live = self.live_sessions(user, deadline).await;
        self.stats
            .user_call(false, live.as_ref().map(|_| 0).map_err(|e| e.code));
        Ok(live?.into_iter().map(|(id, _)| id).collect())
    }

    /// Ends every live session of `user` but `except`; how many it ended.
    pub async fn end_user_sessions(
        &self,
        user: &str,
        except: Option<&str>,
        deadline: Instant,
    ) -> Result<u32> {
        let ended = self.end_sessions(user, except, deadline).await;
        self.stats
            .user_call(true, ended.as_ref().copied().map_err(|e| e.code));
        ended
    }

    async fn end_sessions(
        &self,
        user: &str,
        except: Option<&str>,
        deadline: Instant,
    ) -> Result<u32> {
        let users = self.users_or_refuse()?;
        let cluster = self.conn.is_cluster();
        let mut todo: Vec<(String, Vec<u8>)> = self
            .live_sessions(user, deadline)
            .await?
            .into_iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .collect();
        let mut ended = 0u32;
        while !todo.is_empty() {
            let rest = todo.split_off(todo.len().min(PAGE));
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (id, text) in &todo {
                evalsha(&mut pipe, self.scripts.unlock(), self.keys.session(id)).arg(&text[..]);
            }
            let replies = self.exec_scripted(&pipe, deadline).await?;
            let mut changed = Vec::new();
            for ((id, _), reply) in todo.drain(..).zip(replies) {
                match reply {
                    Value::Int(1) => {
                        // Takes back a read's ticket too, as a delete does.
                        self.texts.ended(&id);
                        self.tokens.forget(&id);
                        ended += 1;
                    }
                    // Written since it was read: read again below.
                    Value::Int(_) => changed.push(id),
                    Value::ServerError(e) => return Err(StoreError::from_reply(&e, cluster)),
                    other => {
                        return Err(StoreError::new(
                            crate::errors::Code::Redis,
                            format!(
                                "unexpected reply to a compare-and-delete: {}",
                                describe_reply(Some(&other))
                            ),
                        ))
                    }
                }
            }
            todo = rest;
            todo.extend(self.read_live(users, user, changed, deadline).await?);
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_bound_covers_only_what_it_reaches() {
        // The README's headroom: an eighth of the ttl.
        assert_eq!(headroom_ms(800), 100);
        let u = Users::new("data.userId");
        let t0 = Instant::now();
        let clock = ServerClock {
            server_ms: 1_000_000,
            local: t0,
        };
        // Written for a ttl of 800 ms and a slack of 200: the entry reaches
        // 800 + 200 + 100 ms past t0.
        u.indexed("s", "ada", clock, 800, 200);
        let covers = |user: &str, ttl_ms: u64, at_ms: u64| {
            u.covering("s", user, ttl_ms, 200, t0 + Duration::from_millis(at_ms))
                .is_some()
        };
        assert!(covers("ada", 800, 0));
        assert!(
            covers("ada", 900, 0),
            "the headroom covers a write a little longer"
        );
        assert!(covers("ada", 800, 100));
        assert!(!covers("ada", 800, 101), "past the entry's bound");
        assert!(!covers("ada", 901, 0), "past the entry's bound");
        assert!(!covers("bob", 800, 0), "another user's entry");
        assert!(
            u.covering("t", "ada", 800, 200, t0).is_none(),
            "another session"
        );
        assert_eq!(
            u.covering("s", "ada", 800, 200, t0).unwrap().server_ms,
            1_000_000
        );
    }

    #[test]
    fn the_user_is_a_string_or_a_number_at_the_path() {
        let u = Users::new("data.userId");
        let of = |t: &str| u.user_of(t.as_bytes());
        assert_eq!(
            of(r#"{"data":{"userId":"ada"},"meta":{}}"#),
            Some("ada".into())
        );
        assert_eq!(of(r#"{"data":{"userId":42}}"#), Some("42".into()));
        // A number as JavaScript reads it, however another writer spelled it
        // (1.x's cjson writes 1e20 as 1e+20).
        for (json, user) in [
            ("7.0", "7"),
            ("1E3", "1000"),
            ("1e+20", "100000000000000000000"),
            ("1e21", "1e+21"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("0.1", "0.1"),
            ("1.5e-7", "1.5e-7"),
            ("9007199254740993", "9007199254740992"),
            ("-12.50", "-12.5"),
        ] {
            let text = format!(r#"{{"data":{{"userId":{json}}}}}"#);
            assert_eq!(of(&text), Some(user.into()), "{json}");
        }
        assert_eq!(of(r#"{"data":{"userId":1e999}}"#), None);
        assert_eq!(
            of(r#"{"data":{"userId":"a\"b\u00e9"}}"#),
            Some("a\"bé".into())
        );
        assert_eq!(of(r#"{"data":{"userId":""}}"#), None);
        assert_eq!(of(r#"{"data":{"userId":null}}"#), None);
        assert_eq!(of(r#"{"data":{"userId":{"id":1}}}"#), None);
        assert_eq!(of(r#"{"data":{}}"#), None);
        assert_eq!(of(r#"{"data":null,"meta":{"redirectTo":"x"}}"#), None);
        // JSON.parse keeps the last of duplicate keys.
        assert_eq!(
            of(r#"{"data":{"userId":"a","userId":"b"}}"#),
            Some("b".into())
        );
        let deep = Users::new("data.users.1");
        assert_eq!(
            deep.user_of(br#"{"data":{"users":["a","b"]}}"#),
            Some("b".into())
        );
    }
}
