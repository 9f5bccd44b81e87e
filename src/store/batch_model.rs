//! A model-based test of a batch's rounds (`rounds.rs`), the decisions of
//! `batch.rs` without its I/O: a seeded generator runs several batches of
//! gets, sets, merges, deletes and touches at once, with and without users'
//! indexes and on each kind of compare-and-set (`swap.lua`, `SET … IFEQ`,
//! `SET … IFDEQ`), against a model of Redis that runs the pipelines they
//! plan command by command: strings and sorted sets with their expiries,
//! flush), `CLIENT TRACKING` with OPTIN, `CLIENT CACHING`, NOLOOP and
//! REDIRECT (the reports on a connection of their own, in any order with the
//! replies). A third of the seeds run as on a cluster: each op whose text
//! is kept opens with `CLUSTER MYID` + `CLIENT GETREDIR`, the heartbeat
//! (not a round) turns tracking on, and a slot on the move answers a tracked
//! op `MOVED` (running none of it) while the op sent again untracked, as the
//! client follows the redirection, reaches the data. Between
//! any two steps: other clients' writes, deletes, expiries and flushes, the
//! server's reports, replies read and handled late, time passing, the server
//! stalling so that calls time out (their commands still run later),
//! connections lost.
//!
//! After every step it checks what the README promises:
//! - nothing the read cache would serve differs from the server's value at
//!   that moment (a get is answered from memory only when the reports
//!   connection has nothing unread, tracking is on, and no write of that
//!   session by this store is in flight, as `store.js` and `tracking.rs`
//!   rule, whatever replies are in flight);
//! - every session this store wrote that names a user is in that user's
//!   index, with an entry that outlives it, however late its write landed.
//!
//! It finds, with the fix undone: a write that expires its ttl from when it
//! lands (`PX` in place of `PXAT`) outliving its entry after a stall; a
//! report that leaves the ticket it should take back; a text kept past its
//! `PTTL`; a set sent without its index step; on a cluster, a tracked op's
//! text kept whatever its connection's `CLIENT GETREDIR` said (seed 26:
//! served a text a write after the connection was lost had changed).
//!
//! `BATCH_MODEL_SEEDS` (default 300) seeds of `BATCH_MODEL_STEPS` (default
//! 1,500) steps each; `BATCH_MODEL_SEED` runs one seed and prints its steps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::AsyncPushSender;
use redis::{PushInfo, PushKind, Value};

use crate::link::capabilities::{digest, Capabilities, CompareAndDeleteBy, CompareAndSetBy};
use crate::link::scripts::Scripts;
use crate::link::tracking::{Pushes, SocketWatch, Tracking, TrackingState};
use crate::merge::splice::merge as splice;
use crate::store::keys::Keys;
use crate::store::locks::LockTokens;
use crate::store::model_support::{env_number, seeds, Rng};
use crate::store::ops::{Kind, Op, Outcome};
use crate::store::rounds::{Parts, Pending, Round, Rounds};
use crate::store::stats::Stats;
use crate::store::texts::Texts;
use crate::store::users::Users;
use crate::store::Reports;

/// The server's clock at the model's 0 ms.
const EPOCH_MS: u64 = 1_800_000_000_000;
const IDS: [&str; 3] = ["a", "b", "c"];
const USERS: [&str; 2] = ["u1", "u2"];
/// The call bound of the model's store (`connectTimeout + commandTimeout`).
const CALL_BOUND_MS: u64 = 200;

/// One argument list of a command, as sent.
type Command = Vec<Vec<u8>>;

fn text(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

fn number(arg: &[u8]) -> u64 {
    text(arg)
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {}", text(arg)))
}

fn error(line: &str) -> Value {
    redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap()
}

enum Stored {
    Text(Vec<u8>),
    /// A sorted set: member → score.
    Zset(HashMap<String, f64>),
}

struct Entry {
    value: Stored,
    /// On the server's clock; None: no expiry.
    expires: Option<u64>,
}

/// The model of Redis: one connection of this store, and other clients that
/// act on the keys directly.
struct Server {
    now: u64,
    keys: HashMap<String, Entry>,
    loaded: HashSet<String>,
    tracking_on: bool,
    tracked: HashSet<String>,
    caching: bool,
    multi: Option<Vec<Command>>,
    /// Reports for this store's connection, in the order sent.
    reports: Vec<Option<Vec<String>>>,
    shas: Shas,
    /// On a cluster, a slot on the move: tracked ops may be redirected.
    moving: bool,
}

#[derive(Clone)]
struct Shas {
    merge: String,
    swap: String,
    unlock: String,
    users: String,
}

impl Server {
    fn clock(&self) -> u64 {
        EPOCH_MS + self.now
    }

    /// Deletes `key` if it has expired; reports it (to this store, unless
    /// this store's own command found it: NOLOOP).
    fn expire_if_due(&mut self, key: &str, by_store: bool) {
        let due = self
            .keys
            .get(key)
            .and_then(|e| e.expires)
            .is_some_and(|at| at <= self.clock());
        if due {
            self.keys.remove(key);
            self.changed(key, by_store);
        }
    }

    /// `key` changed: its tracking goes, with a report unless this store
    /// changed it (NOLOOP).
    fn changed(&mut self, key: &str, by_store: bool) {
        if self.tracked.remove(key) && !by_store {
            self.reports.push(Some(vec![key.to_owned()]));
        }
    }

    fn text_of(&mut self, key: &str, by_store: bool) -> Option<Vec<u8>> {
        self.expire_if_due(key, by_store);
        match &self.keys.get(key)?.value {
            Stored::Text(t) => Some(t.clone()),
            Stored::Zset(_) => None,
        }
    }

    fn track(&mut self, key: &str) {
        if self.tracking_on && self.caching {
            self.tracked.insert(key.to_owned());
        }
    }

    /// SET's effect: the value with its expiry (one already past deletes it).
    fn put(&mut self, key: &str, value: Vec<u8>, expires: Option<u64>, by_store: bool) {
        if expires.is_some_and(|at| at <= self.clock()) {
            self.keys.remove(key);
        } else {
            let value = Stored::Text(value);
            self.keys.insert(key.to_owned(), Entry { value, expires });
        }
        self.changed(key, by_store);
    }

    /// A command of a tracked op sent to a master that no longer serves its
    /// slot: the keyless ones run, the keyed ones are refused with `MOVED`
    /// (a transaction with one refused is discarded at its `EXEC`).
    fn redirected(&mut self, cmd: Command) -> Value {
        let name = text(&cmd[0]).to_ascii_uppercase();
        match name.as_str() {
            "CLUSTER" | "CLIENT" | "MULTI" => self.run(cmd),
            "EXEC" => {
                self.multi = None;
                self.caching = false;
                error("EXECABORT Transaction discarded because of previous errors.")
            }
            _ => {
                if self.multi.is_none() {
                    self.caching = false;
                }
                error("MOVED 1234 127.0.0.1:7001")
            }
        }
    }

    /// Runs one command of this store's connection.
    fn run(&mut self, cmd: Command) -> Value {
        let name = text(&cmd[0]).to_ascii_uppercase();
        if let Some(queued) = &mut self.multi {
            if name != "EXEC" {
                queued.push(cmd);
                return Value::SimpleString("QUEUED".into());
            }
        }
        let reply = self.command(&name, &cmd);
        // CLIENT CACHING YES holds for the next command, or a transaction.
        if name != "CLIENT" && self.multi.is_none() {
            self.caching = false;
        }
        reply
    }

    fn command(&mut self, name: &str, cmd: &Command) -> Value {
        let key = cmd.get(1).map(|k| text(k)).unwrap_or_default();
        match name {
            "CLUSTER" => Value::BulkString(NODE.as_bytes().to_vec()), // MYID
            "CLIENT" => match text(&cmd[1]).to_ascii_uppercase().as_str() {
                "TRACKING" => {
                    self.tracking_on = true;
                    Value::Okay
                }
                "GETREDIR" => Value::Int(if self.tracking_on { REPORTS_ID } else { -1 }),
                "CACHING" => {
                    self.caching = true;
                    Value::Okay
                }
                other => panic!("CLIENT {other}"),
            },
            "MULTI" => {
                self.multi = Some(Vec::new());
                Value::Okay
            }
            "EXEC" => {
                let queued = self.multi.take().unwrap_or_default();
                self.multi = None;
                let replies = queued
                    .into_iter()
                    .map(|c| {
                        let n = text(&c[0]).to_ascii_uppercase();
                        self.command(&n, &c)
                    })
                    .collect();
                Value::Array(replies)
            }
            "GET" => {
                let found = self.text_of(&key, true);
                self.track(&key);
                found.map_or(Value::Nil, Value::BulkString)
            }
            "PTTL" => {
                self.expire_if_due(&key, true);
                self.track(&key);
                let clock = self.clock();
                match self.keys.get(&key) {
                    None => Value::Int(-2),
                    Some(Entry { expires: None, .. }) => Value::Int(-1),
                    Some(Entry {
                        expires: Some(at), ..
                    }) => Value::Int((at - clock) as i64),
                }
            }
            "SET" => self.set(cmd),
            "DEL" => {
                self.expire_if_due(&key, true);
                let removed = self.keys.remove(&key).is_some();
                if removed {
                    self.changed(&key, true);
                }
                Value::Int(i64::from(removed))
            }
            "EXISTS" => {
                self.expire_if_due(&key, true);
                Value::Int(i64::from(self.keys.contains_key(&key)))
            }
            "PEXPIRE" => {
                self.expire_if_due(&key, true);
                let at = self.clock() + number(&cmd[2]);
                match self.keys.get_mut(&key) {
                    Some(entry) => {
                        entry.expires = Some(at);
                        self.changed(&key, true);
                        Value::Int(1)
                    }
                    None => Value::Int(0),
                }
            }
            "EVALSHA" => self.script(cmd),
            other => panic!("the model has no {other}"),
        }
    }

    fn set(&mut self, cmd: &Command) -> Value {
        let key = text(&cmd[1]);
        let value = cmd[2].clone();
        let (mut expires, mut nx, mut ifeq, mut ifdeq) = (None, false, None, None);
        let mut i = 3;
        while i < cmd.len() {
            match text(&cmd[i]).to_ascii_uppercase().as_str() {
                "PX" => {
                    expires = Some(self.clock() + number(&cmd[i + 1]));
                    i += 1;
                }
                "PXAT" => {
                    expires = Some(number(&cmd[i + 1]));
                    i += 1;
                }
                "NX" => nx = true,
                "IFEQ" => {
                    ifeq = Some(cmd[i + 1].clone());
                    i += 1;
                }
                "IFDEQ" => {
                    ifdeq = Some(text(&cmd[i + 1]).to_ascii_lowercase());
                    i += 1;
                }
                other => panic!("SET {other}"),
            }
            i += 1;
        }
        let current = self.text_of(&key, true);
        let allowed = if nx {
            current.is_none()
        } else if let Some(old) = ifeq {
            current.as_deref() == Some(&old[..])
        } else if let Some(d) = ifdeq {
            current.as_deref().is_some_and(|c| digest(c) == d)
        } else {
            true
        };
        if !allowed {
            return Value::Nil;
        }
        self.put(&key, value, expires, true);
        Value::Okay
    }

    fn script(&mut self, cmd: &Command) -> Value {
        let sha = text(&cmd[1]);
        if !self.loaded.contains(&sha) {
            return error("NOSCRIPT No matching script. Please use EVAL.");
        }
        let key = text(&cmd[3]);
        let args = &cmd[4..];
        let shas = self.shas.clone();
        if sha == shas.swap {
            if self.text_of(&key, true).as_deref() != Some(&args[0][..]) {
                return Value::Int(0);
            }
            let ms = number(&args[2]);
            let at = match text(&args[3]).as_str() {
                "PX" => self.clock() + ms,
                "PXAT" => ms,
                other => panic!("swap.lua with {other}"),
            };
            self.put(&key, args[1].clone(), Some(at), true);
            Value::Int(1)
        } else if sha == shas.merge {
            let Some(stored) = self.text_of(&key, true) else {
                return Value::Int(0);
            };
            let pairs: Vec<String> = args[3..].iter().map(|a| text(a)).collect();
            let merged = splice(&stored, &pairs).expect("the model merges what it wrote");
            let at = self.clock() + number(&args[0]);
            self.put(&key, merged, Some(at), true);
            Value::Int(1)
        } else if sha == shas.unlock {
            if self.text_of(&key, true).as_deref() == Some(&args[0][..]) {
                self.keys.remove(&key);
                self.changed(&key, true);
                return Value::Int(1);
            }
            Value::Int(0)
        } else if sha == shas.users {
            self.users_script(&key, args)
        } else {
            panic!("an unknown script")
        }
    }

    /// `lua/users.lua`.
    fn users_script(&mut self, key: &str, args: &[Vec<u8>]) -> Value {
        let now = self.clock();
        self.expire_if_due(key, true);
        let mut set = match self.keys.remove(key) {
            Some(Entry {
                value: Stored::Zset(set),
                ..
            }) => set,
            _ => HashMap::new(),
        };
        let limit = if text(&args[0]) == "prune" { 1000 } else { 100 };
        let mut passed: Vec<String> = set
            .iter()
            .filter(|(_, score)| **score < now as f64)
            .map(|(m, _)| m.clone())
            .collect();
        passed.sort();
        for m in passed.iter().take(limit) {
            set.remove(m);
        }
        let reply = if text(&args[0]) == "add" {
            let bound = (now + number(&args[2])) as f64;
            let id = text(&args[1]);
            let old = set.get(&id).copied();
            if old.is_none_or(|old| old < bound) {
                set.insert(id, bound);
            }
            Value::Int(now as i64)
        } else {
            Value::Int(i64::from(passed.len() > limit))
        };
        if let Some(last) = set.values().copied().reduce(f64::max) {
            self.keys.insert(
                key.to_owned(),
                Entry {
                    value: Stored::Zset(set),
                    expires: Some(last as u64),
                },
            );
        }
        self.changed(key, true);
        reply
    }
}

/// A message from the server to this store's connection.
enum Msg {
    Reply {
        batch: usize,
        replies: Vec<Value>,
    },
    /// A report: these keys changed; None: everything.
    Report(Option<Vec<String>>),
}

/// A batch in flight, as `batch.rs` runs it.
struct Batch {
    rounds: Rounds<'static>,
    ops: &'static [Op],
    todo: Vec<Pending>,
    /// The round sent and not settled yet; its replies once read.
    sent: Option<(Round, Option<Vec<Value>>)>,
    scripts_loaded: bool,
    deadline: u64,
    /// Each op's outcome, once settled.
    outcomes: Vec<Option<Outcome>>,
    /// Every op settled.
    finished: bool,
}

/// A pipeline's commands not run yet, each with its place in a tracked op.
type Commands = VecDeque<(Command, Unit)>;

/// Where a command stands in a cluster's tracked op.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Not,
    /// Its first command (`CLUSTER MYID`): whether the slot moved is decided here.
    Head,
    In,
}

struct Model {
    seed: u64,
    rng: Rng,
    base: Instant,
    server: Server,
    parts: Parts<'static>,
    texts: &'static Texts,
    tracking: Arc<Tracking>,
    pushes: Pushes,
    keys: Keys,
    users: Option<&'static Users>,
    capabilities: Capabilities,
    batches: Vec<Batch>,
    /// Pipelines sent, not yet run: (batch, the commands left, replies so
    /// far). Each command says where it stands in a cluster's tracked op.
    queue: VecDeque<(usize, Commands, Vec<Value>)>,
    /// The seed runs as on a cluster.
    cluster: bool,
    /// The tracked op being run was redirected (a cluster's slot on the move).
    redirected: bool,
    /// Replies sent by the server, not yet read.
    wire: VecDeque<Msg>,
    /// Reports sent by the server to the reports connection, not yet read.
    reports: VecDeque<Msg>,
    /// Writes of each session in flight (`store.js` `#writing`).
    writing: HashMap<String, u32>,
    next_n: u64,
    hits: u64,
    log: Vec<String>,
}

/// The reports connection's `CLIENT ID`.
const REPORTS_ID: i64 = 7;
/// On a cluster, the master's node id (`CLUSTER MYID`).
const NODE: &str = "node-a";
/// The queue's entry of the heartbeat's `CLIENT TRACKING ON` (no batch's).
const HEARTBEAT: usize = usize::MAX;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn no_backoff(conflicts: u32) -> Duration {
    Duration::from_millis(u64::from(conflicts.min(5)))
}

impl Model {
    fn new(seed: u64) -> Model {
        let mut rng = Rng(seed);
        let with_users = rng.below(2) == 0;
        let keys = if with_users {
            Keys::new("sess:", "lock:").with_users("user:")
        } else {
            Keys::new("sess:", "lock:")
        };
        let shared = Arc::new(Texts::new(8 << 20));
        let texts: &'static Texts = leak(Arc::clone(&shared)).as_ref();
        // From a generator of its own: a seed's other choices stay as they were.
        let cluster = Rng(seed ^ 0x5eed).below(3) == 0;
        let tracking = if cluster {
            Tracking::cluster(true)
        } else {
            Tracking::new(true)
        };
        tracking.listen(Arc::new(Reports::new(shared, keys.clone())));
        let users = with_users.then(|| leak(Users::new("data.userId")));
        let scripts = leak(Scripts::default());
        let shas = Shas {
            merge: scripts.merge().to_owned(),
            swap: scripts.compare_and_set().to_owned(),
            unlock: scripts.unlock().to_owned(),
            users: scripts.users().to_owned(),
        };
        let compare_and_set = rng.pick(&[
            CompareAndSetBy::Script,
            CompareAndSetBy::Equal,
            CompareAndSetBy::Digest,
        ]);
        let parts = Parts {
            texts,
            users,
            tokens: leak(LockTokens::default()),
            stats: leak(Stats::default()),
            keys: leak(keys.clone()),
            scripts,
            tracking: leak(Arc::clone(&tracking)).as_ref(),
            cluster,
            call_bound: Duration::from_millis(CALL_BOUND_MS),
            backoff: no_backoff,
        };
        let server = Server {
            now: 0,
            keys: HashMap::new(),
            loaded: [&shas.merge, &shas.swap, &shas.unlock, &shas.users]
                .into_iter()
                .cloned()
                .collect(),
            tracking_on: false,
            tracked: HashSet::new(),
            caching: false,
            multi: None,
            reports: Vec::new(),
            shas,
            moving: false,
        };
        Model {
            seed,
            rng,
            base: Instant::now(),
            server,
            parts,
            texts,
            pushes: {
                let pushes = if cluster {
                    // The master's reports connection (no socket in the
                    // model: its reports are the model's own queue).
                    let socket = Arc::new(SocketWatch::detached());
                    tracking.pushes().watching_node(NODE, socket)
                } else {
                    tracking.pushes()
                };
                pushes.redirect_to(REPORTS_ID);
                tracking.masters(&[NODE.to_owned()]);
                pushes
            },
            cluster,
            redirected: false,
            tracking,
            keys,
            users,
            capabilities: Capabilities {
                compare_and_set,
                compare_and_delete: CompareAndDeleteBy::Script,
                expire_at: true,
            },
            batches: Vec::new(),
            queue: VecDeque::new(),
            wire: VecDeque::new(),
            reports: VecDeque::new(),
            writing: HashMap::new(),
            next_n: 0,
            hits: 0,
            log: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.server.now)
    }

    fn session_text(&mut self, user: Option<&str>) -> String {
        self.next_n += 1;
        let user = user.map_or(String::new(), |u| format!(r#","userId":"{u}""#));
        format!(
            r#"{{"data":{{"n":{}{user}}},"meta":{{"id":"x"}}}}"#,
            self.next_n
        )
    }

    /// An op the app might call.
    fn op(&mut self) -> Op {
        let id = self.rng.pick(&IDS).to_owned();
        let ttl = (50 + self.rng.below(1500)) as f64;
        let kind = self.rng.pick(&[
            Kind::Get,
            Kind::Get,
            Kind::Set,
            Kind::Merge,
            Kind::Merge,
            Kind::Delete,
            Kind::Touch,
        ]);
        let args = match kind {
            Kind::Set => {
                let user = match self.rng.below(3) {
                    0 => None,
                    n => Some(USERS[n as usize - 1]),
                };
                vec![self.session_text(user)]
            }
            Kind::Merge => {
                self.next_n += 1;
                match self.rng.below(4) {
                    0 => vec![
                        "data.userId".into(),
                        format!("\"{}\"", self.rng.pick(&USERS)),
                    ],
                    1 => vec!["data.userId".into(), String::new()],
                    _ => vec!["data.n".into(), self.next_n.to_string()],
                }
            }
            _ => Vec::new(),
        };
        Op {
            kind,
            id,
            ttl,
            args,
        }
    }

    /// The app calls: a batch of 1–3 ops crosses.
    fn start_batch(&mut self) {
        let count = 1 + self.rng.below(3);
        let ops: Vec<Op> = (0..count).map(|_| self.op()).collect();
        for op in &ops {
            if op.kind != Kind::Get {
                *self.writing.entry(op.id.clone()).or_default() += 1;
            }
        }
        let ops: &'static [Op] = Box::leak(ops.into_boxed_slice());
        let deadline = self.server.now + CALL_BOUND_MS;
        let rounds = Rounds::new(self.parts, ops, self.base + Duration::from_millis(deadline));
        let todo = rounds.start();
        self.log.push(format!(
            "{}: batch #{} {:?}",
            self.server.now,
            self.batches.len(),
            ops.iter()
                .map(|o| format!("{:?} {} {:?}", o.kind, o.id, o.args))
                .collect::<Vec<_>>()
        ));
        self.batches.push(Batch {
            rounds,
            ops,
            todo,
            sent: None,
            scripts_loaded: false,
            deadline,
            outcomes: vec![None; ops.len()],
            finished: false,
        });
    }

    /// A batch's outcomes reach the app.
    fn deliver(&mut self, b: usize, done: Vec<(usize, Outcome)>) {
        for (at, outcome) in done {
            let op = &self.batches[b].ops[at];
            if op.kind != Kind::Get {
                *self.writing.get_mut(&op.id).unwrap() -= 1;
            }
            self.log
                .push(format!("{}: #{b} op {at} {outcome:?}", self.server.now));
            self.batches[b].outcomes[at] = Some(outcome);
        }
    }

    /// A batch takes its next step, as `Batch::run` does: plan and send a
    /// round, or settle the one whose replies came.
    fn advance(&mut self, b: usize) {
        let now = self.now();
        let capabilities = self.capabilities;
        let batch = &mut self.batches[b];
        if batch.finished {
            return;
        }
        match batch.sent.take() {
            Some((round, Some(replies))) => {
                let mut done = Vec::new();
                let settled = batch.rounds.settle_round(
                    round,
                    replies,
                    &capabilities,
                    batch.scripts_loaded,
                    &mut batch.todo,
                    &mut done,
                    now,
                );
                assert!(settled.refused.is_empty(), "the model refuses nothing");
                if settled.missing_script {
                    // Loaded at once (a SCRIPT LOAD round in the store).
                    batch.scripts_loaded = true;
                    let shas = self.server.shas.clone();
                    self.server
                        .loaded
                        .extend([shas.merge, shas.swap, shas.unlock, shas.users]);
                }
                self.deliver(b, done);
            }
            Some(waiting) => batch.sent = Some(waiting),
            None => {
                if batch.todo.is_empty() {
                    batch.finished = true;
                    return;
                }
                if self.server.now >= batch.deadline {
                    let failed = std::mem::take(&mut batch.todo)
                        .into_iter()
                        .map(|p| (p.op, Outcome::Failed(batch.rounds.parts().timeout())))
                        .collect();
                    batch.finished = true;
                    return self.deliver(b, failed);
                }
                let (round, _wake) = batch.rounds.next_round(&mut batch.todo, now);
                if round.is_empty() {
                    return; // backing off
                }
                let mut done = Vec::new();
                let planned = batch.rounds.plan(round, &capabilities, &mut done, now);
                if !planned.is_empty() {
                    let unit = |i: usize| match planned
                        .units
                        .iter()
                        .find(|u| (u.first..u.first + u.len).contains(&i))
                    {
                        Some(u) if u.first == i => Unit::Head,
                        Some(_) => Unit::In,
                        None => Unit::Not,
                    };
                    let commands = planned
                        .pipe
                        .cmd_iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let args = c
                                .args_iter()
                                .map(|a| match a {
                                    redis::Arg::Simple(a) => a.to_vec(),
                                    _ => panic!("a cursor in a round"),
                                })
                                .collect();
                            (args, unit(i))
                        })
                        .collect();
                    self.queue.push_back((b, commands, Vec::new()));
                    batch.sent = Some((planned, None));
                }
                self.deliver(b, done);
            }
        }
    }

    /// The server runs the next command sent (a transaction at its EXEC).
    fn serve(&mut self) {
        let Some((b, mut commands, mut replies)) = self.queue.pop_front() else {
            return;
        };
        if let Some((cmd, unit)) = commands.pop_front() {
            let shown: Vec<String> = cmd
                .iter()
                .map(|a| text(a).chars().take(40).collect())
                .collect();
            match unit {
                Unit::Head => self.redirected = self.server.moving && self.rng.below(2) == 0,
                Unit::Not => self.redirected = false,
                Unit::In => {}
            }
            let reply = if self.redirected && unit != Unit::Not {
                self.server.redirected(cmd)
            } else {
                self.server.run(cmd)
            };
            self.log.push(format!(
                "{}: server runs #{b}'s {} -> {reply:?}",
                self.server.now,
                shown.join(" ")
            ));
            replies.push(reply);
        }
        self.flush_reports();
        if commands.is_empty() {
            if b != HEARTBEAT {
                self.wire.push_back(Msg::Reply { batch: b, replies });
            }
        } else {
            self.queue.push_front((b, commands, replies));
        }
    }

    fn flush_reports(&mut self) {
        for report in self.server.reports.drain(..) {
            self.reports.push_back(Msg::Report(report));
        }
    }

    /// A connection's task reads the next message: the reports
    /// connection's, a report, goes to the push sender at once; the data
    /// connection's, a reply, to its batch (if it still waits).
    fn read(&mut self) {
        let from = if self.rng.below(2) == 0 {
            &mut self.wire
        } else {
            &mut self.reports
        };
        match from.pop_front() {
            Some(Msg::Report(keys)) => {
                let data = match keys {
                    Some(keys) => vec![Value::Array(
                        keys.into_iter()
                            .map(|k| Value::BulkString(k.into_bytes()))
                            .collect(),
                    )],
                    None => vec![Value::Nil],
                };
                let _ = self.pushes.send(PushInfo {
                    kind: PushKind::Invalidate,
                    data,
                });
            }
            Some(Msg::Reply { batch, replies }) => {
                if let Some((_, slot @ None)) = &mut self.batches[batch].sent {
                    *slot = Some(replies);
                }
            }
            None => {}
        }
    }

    /// Calls whose round is out past their deadline fail, as
    /// `Ready::answered` fails them: the cache forgets everything (the client
    /// may open another connection); their commands may still run later.
    fn time_out(&mut self) {
        for b in 0..self.batches.len() {
            let batch = &mut self.batches[b];
            if batch.finished || self.server.now < batch.deadline {
                continue;
            }
            let Some((round, _)) = batch.sent.take() else {
                continue;
            };
            let e = batch.rounds.parts().timeout();
            let failed: Vec<_> = batch
                .rounds
                .unanswered(round)
                .into_iter()
                .chain(std::mem::take(&mut batch.todo).into_iter().map(|p| p.op))
                .map(|op| (op, Outcome::Failed(e.clone())))
                .collect();
            batch.finished = true;
            self.tracking.lost();
            self.log
                .push(format!("{}: #{b} timed out", self.server.now));
            self.deliver(b, failed);
        }
    }

    /// The connection is lost: what the server had not run yet may have run
    /// (a prefix of it), nothing unread arrives, and every call waiting
    /// fails; the next connection tracks nothing until a round turns it on.
    fn lose_connection(&mut self) {
        let mut ran = self.rng.below(8);
        while ran > 0 && !self.queue.is_empty() {
            let (b, mut commands, replies) = self.queue.pop_front().unwrap();
            if let Some((cmd, _)) = commands.pop_front() {
                self.server.run(cmd);
            }
            if !commands.is_empty() {
                self.queue.push_front((b, commands, replies));
            }
            ran -= 1;
        }
        self.queue.clear();
        self.server.reports.clear();
        self.wire.clear();
        self.reports.clear();
        self.server.tracking_on = false;
        self.server.tracked.clear();
        self.server.caching = false;
        self.server.multi = None;
        self.tracking.lost();
        self.log
            .push(format!("{}: connection lost", self.server.now));
        for b in 0..self.batches.len() {
            let batch = &mut self.batches[b];
            let Some((round, _)) = batch.sent.take() else {
                continue;
            };
            let failed: Vec<_> = batch
                .rounds
                .unanswered(round)
                .into_iter()
                .chain(std::mem::take(&mut batch.todo).into_iter().map(|p| p.op))
                .map(|op| {
                    let e = crate::errors::StoreError::new(
                        crate::errors::Code::Connection,
                        "connection lost",
                    );
                    (op, Outcome::Failed(e))
                })
                .collect();
            batch.finished = true;
            self.deliver(b, failed);
        }
    }

    /// Another client acts on a session key (never naming a user: its
    /// writes are outside the index's promises).
    fn other_client(&mut self) {
        let id = self.rng.pick(&IDS);
        let key = self.keys.session(id);
        match self.rng.below(10) {
            0..=4 => {
                let text = self.session_text(None).into_bytes();
                let at = self.server.clock() + 50 + self.rng.below(1000);
                self.server.put(&key, text, Some(at), false);
                self.log
                    .push(format!("{}: other sets {id}", self.server.now));
            }
            5 | 6 => {
                if self.server.keys.remove(&key).is_some() {
                    self.server.changed(&key, false);
                }
                self.log
                    .push(format!("{}: other deletes {id}", self.server.now));
            }
            7 => {
                // A shorter life, never a longer one.
                let at = self.server.clock() + 1;
                if let Some(e) = self.server.keys.get_mut(&key) {
                    e.expires = Some(e.expires.map_or(at, |old| old.min(at)));
                    self.server.changed(&key, false);
                }
                self.log
                    .push(format!("{}: other expires {id}", self.server.now));
            }
            8 => {
                // A flush, as far as the sessions go (one that takes the
                // users' indexes with them is outside their promises: README).
                self.server
                    .keys
                    .retain(|k, _| !k.starts_with("sess:") || k.starts_with("sess:user:"));
                self.server.tracked.clear();
                self.server.reports.push(None);
                self.log.push(format!("{}: other flushes", self.server.now));
            }
            _ => {
                self.server.loaded.clear();
                self.log.push(format!("{}: SCRIPT FLUSH", self.server.now));
            }
        }
        self.flush_reports();
    }

    /// Time passes; the server expires keys in its cron (no client's
    /// command: every tracking connection is told).
    fn tick(&mut self) {
        self.server.now += self.rng.below(8);
        if self.cluster {
            // The heartbeat turns tracking on, on the data connection, in
            // its own write (`ClusterFeeds::beat`); a slot starts or ends
            // moving.
            if self.rng.below(3) == 0 {
                let on = crate::link::tracking::tracking_on(REPORTS_ID)
                    .args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(a) => a.to_vec(),
                        _ => Vec::new(),
                    })
                    .collect();
                self.queue
                    .push_back((HEARTBEAT, VecDeque::from([(on, Unit::Not)]), Vec::new()));
            }
            if self.rng.below(10) == 0 {
                self.server.moving = !self.server.moving;
            }
        }
        let clock = self.server.clock();
        let mut due: Vec<String> = self
            .server
            .keys
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|at| at <= clock))
            .map(|(k, _)| k.clone())
            .collect();
        // In one order whatever the map's: a seed replays the same steps.
        due.sort();
        for key in due {
            self.server.keys.remove(&key);
            self.server.changed(&key, false);
        }
        self.flush_reports();
    }

    /// The app goes quiet: every batch runs to its end (in a random order
    /// of their steps still), with no time passing.
    fn settle_all(&mut self) {
        loop {
            let live: Vec<usize> = (0..self.batches.len())
                .filter(|b| !self.batches[*b].finished)
                .collect();
            if live.is_empty()
                && self.queue.is_empty()
                && self.wire.is_empty()
                && self.reports.is_empty()
            {
                return;
            }
            match self.rng.below(3) {
                0 if !live.is_empty() => {
                    let b = self.rng.pick(&live);
                    self.advance(b);
                }
                1 => self.serve(),
                _ => self.read(),
            }
            // A merge backing off waits for time to pass.
            if self.queue.is_empty()
                && self.wire.is_empty()
                && self.reports.is_empty()
                && live.iter().all(|b| self.batches[*b].sent.is_none())
            {
                self.server.now += 1;
                self.time_out();
            }
            self.check();
        }
    }

    fn fail(&self, what: String) -> ! {
        let tail = self.log.len().saturating_sub(80);
        panic!(
            "seed {}: {what}\n{}",
            self.seed,
            self.log[tail..].join("\n")
        );
    }

    /// The server (or the network to it) stalls for a while: nothing sent is
    /// run meanwhile, calls time out, and what they sent runs once it
    /// resumes (a write applied after its call bound).
    fn stall(&mut self) {
        let ms = 100 + self.rng.below(700);
        self.log
            .push(format!("{}: the server stalls {ms} ms", self.server.now));
        self.server.now += ms;
        self.time_out();
        self.tick();
    }

    /// What the README promises, checked after every step.
    fn check(&mut self) {
        let clock = self.server.clock();
        // The read cache serves nothing the server does not hold now.
        let serves = self.reports.is_empty()
            && self.tracking.state() == TrackingState::On
            && !self.tracking.stands_aside();
        for id in IDS {
            if !serves || self.writing.get(id).copied().unwrap_or(0) > 0 {
                continue;
            }
            let Some(served) = self.texts.serve(id, self.now()) else {
                continue;
            };
            self.hits += 1;
            let key = self.keys.session(id);
            let stored = match self.server.keys.get(&key) {
                Some(Entry {
                    value: Stored::Text(t),
                    expires,
                }) if expires.is_none_or(|at| at > clock) => Some(t.clone()),
                _ => None,
            };
            if stored.as_deref() != Some(&served[..]) {
                self.fail(format!(
                    "{}: served {} of {id}; the server has {:?}",
                    self.server.now,
                    text(&served),
                    stored.map(|t| text(&t))
                ));
            }
        }
        // Every live session that names a user has an entry that outlives it.
        let Some(users) = self.users else {
            return;
        };
        for id in IDS {
            let key = self.keys.session(id);
            let Some(Entry {
                value: Stored::Text(t),
                expires,
            }) = self.server.keys.get(&key)
            else {
                continue;
            };
            if expires.is_some_and(|at| at <= clock) {
                continue;
            }
            let Some(user) = users.user_of(t) else {
                continue;
            };
            let expires = expires.unwrap_or(u64::MAX);
            let index = self.keys.user_index(&user);
            let entry = match self.server.keys.get(&index) {
                Some(Entry {
                    value: Stored::Zset(set),
                    expires: index_expires,
                }) if index_expires.is_none_or(|at| at > clock) => set.get(id).copied(),
                _ => None,
            };
            if !entry.is_some_and(|bound| bound >= expires as f64) {
                self.fail(format!(
                    "{}: {id} lives until {} naming {user}; its entry: {entry:?}",
                    self.server.now,
                    expires.saturating_sub(EPOCH_MS)
                ));
            }
        }
    }

    fn step(&mut self) {
        match self.rng.below(1000) {
            0..=149 => self.start_batch(),
            150..=399 => {
                if !self.batches.is_empty() {
                    // Mostly the batches still running.
                    let live: Vec<usize> = (0..self.batches.len())
                        .filter(|b| !self.batches[*b].finished)
                        .collect();
                    if !live.is_empty() {
                        let b = self.rng.pick(&live);
                        self.advance(b);
                    }
                }
            }
            400..=649 => self.serve(),
            650..=819 => self.read(),
            820..=869 => self.other_client(),
            870..=969 => {
                self.tick();
                self.time_out();
            }
            970..=993 => self.settle_all(),
            994..=996 => self.stall(),
            _ => self.lose_connection(),
        }
        self.check();
    }
}

#[test]
fn rounds_keep_every_promise_under_any_interleaving() {
    let steps = env_number("BATCH_MODEL_STEPS", 1_500);
    let seeds = seeds("BATCH_MODEL", 300);
    // The floors below scale with the run (300 seeds of 1,500 steps: 1,000
    // hits, 10,000 outcomes), so a shorter run (a mutation run's) holds them.
    let work = seeds.len() as u64 * steps;
    let (mut hits, mut outcomes) = (0, 0);
    for seed in seeds {
        let mut model = Model::new(seed);
        for _ in 0..steps {
            model.step();
        }
        hits += model.hits;
        outcomes += model
            .batches
            .iter()
            .flat_map(|b| &b.outcomes)
            .filter(|o| matches!(o, Some(Outcome::Done | Outcome::Text(_) | Outcome::Bool(_))))
            .count();
    }
    eprintln!(
        "batch model: {hits} gets answered from memory and {outcomes} ops settled, each checked"
    );
    assert!(
        hits > work / 450,
        "only {hits} gets were answered from memory"
    );
    assert!(outcomes as u64 > work / 45, "only {outcomes} ops succeeded");
}
