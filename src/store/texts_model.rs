//! A model-based test of the read cache's tickets (`texts.rs`): a seeded
//! generator interleaves this store's reads and writes, other clients'
//! writes, expiries, flushes, the server's reports, replies handled late and
//! in any order, endings (`destroyUserSessions`) and lost connections
//! against a small model of Redis (values, ttls, this connection's entries of
//! the tracking table, OPTIN and NOLOOP, one connection's order), and checks
//! after every step that whatever the cache would serve is the model's value
//! at that moment: no text older than the server's, and no deleted, expired
//! or ended session.
//!
//! What the model holds to (each as Redis does it):
//! - Commands run in the order sent; a read's `CLIENT CACHING YES` + `GET` +
//!   `PTTL`, and a write's `MULTI` … `PTTL` `EXEC`, run as one.
//! - A change of a key this connection tracks sends it a report, and the
//!   key leaves its tracking entries; a change made by this connection
//!   (NOLOOP) sends none, but the key leaves them all the same; a read
//!   asked with `CACHING YES`, and a tracked write's `PTTL`, track it again.
//! - Replies and reports reach the connection in the order sent; the
//!   connection's task hands a report to the texts at once, and a reply to
//!   its op, whose task handles it later, in any order with the others.
//! - A get is answered from memory only when the connection has nothing
//!   unread (`tracking.rs`, `SocketWatch`) and no write of that session by
//!   this store is in flight (`store.js`).
//!
//! Not in the model: events the server does not report to the connection
//! that caused them (an eviction or a tracking-table drop during its own
//! command, SWAPDB): the link's watch (`tracking.rs`) keeps the cache aside
//! where they can happen, and the real-server tests cover it.
//!
//! `TEXTS_MODEL_SEEDS` (default 1,000) seeds of `TEXTS_MODEL_STEPS` (default
//! 2,000) steps each; `TEXTS_MODEL_SEED` runs one seed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::model_support::{env_number, seeds, Rng};
use super::texts::{Texts, Ticket, DEFAULT_MAX_BYTES};

/// Sessions the model plays with: few, so that ops meet on them.
const IDS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `get`: `CLIENT CACHING YES`, `GET`, `PTTL`.
    Get,
    /// `set`, sent as a tracked write.
    Set,
    /// A merge's compare-and-set against the text the store remembered,
    /// sent as a tracked write.
    Merge,
    /// `delete`.
    Delete,
    /// `touch` (a `PEXPIRE`).
    Touch,
    /// `destroyUserSessions`' compare-and-delete.
    End,
}

#[derive(Debug)]
struct Op {
    kind: Kind,
    id: &'static str,
    ticket: Option<Ticket>,
    /// When the op was planned (model ms): a text's ttl counts from then.
    planned: u64,
    ttl: u64,
    /// Set and Merge: the version written; Merge: `expected`, the one it
    /// compares with.
    version: u64,
    expected: u64,
}

/// What a reply says.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// A get's: the version found and its ttl left.
    Found(Option<(u64, u64)>),
    /// A write's or an ending's: whether it was applied.
    Applied(bool),
}

#[derive(Debug)]
enum Msg {
    Reply(usize, Reply),
    /// A report: these keys changed; None: everything (a flush).
    Report(Option<&'static str>),
}

#[derive(Default)]
struct Server {
    /// Session → (version, expires at, model ms).
    values: HashMap<&'static str, (u64, u64)>,
    /// The keys this connection tracks.
    tracked: HashSet<&'static str>,
}

impl Server {
    /// Another client changed `id`: this connection is told if it tracked it.
    fn changed_by_other(&mut self, id: &'static str, wire: &mut VecDeque<Msg>) {
        if self.tracked.remove(id) {
            wire.push_back(Msg::Report(Some(id)));
        }
    }

    /// This connection changed `id` (NOLOOP: no report, the key untracked).
    fn changed_by_me(&mut self, id: &'static str) {
        self.tracked.remove(id);
    }

    fn alive(&self, id: &str, now: u64) -> Option<u64> {
        self.values
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| *v)
    }

    /// Runs one of this connection's commands at `now`.
    fn run(&mut self, op: &Op, now: u64) -> Reply {
        // A key past its expiry is deleted when touched (no report to the
        // connection whose command found it: NOLOOP, and its reply says so).
        if self.values.get(op.id).is_some_and(|(_, e)| *e <= now) {
            self.values.remove(op.id);
            self.tracked.remove(op.id);
        }
        match op.kind {
            Kind::Get => {
                self.tracked.insert(op.id);
                Reply::Found(self.values.get(op.id).map(|(v, e)| (*v, e - now)))
            }
            Kind::Set => {
                self.changed_by_me(op.id);
                self.values.insert(op.id, (op.version, now + op.ttl));
                self.tracked.insert(op.id); // the PTTL in the transaction
                Reply::Applied(true)
            }
            Kind::Merge => {
                let applied = self.values.get(op.id).map(|(v, _)| *v) == Some(op.expected);
                if applied {
                    self.changed_by_me(op.id);
                    self.values.insert(op.id, (op.version, now + op.ttl));
                }
                self.tracked.insert(op.id);
                Reply::Applied(applied)
            }
            Kind::Delete => {
                self.changed_by_me(op.id);
                Reply::Applied(self.values.remove(op.id).is_some())
            }
            Kind::Touch => match self.values.get_mut(op.id) {
                Some(entry) => {
                    entry.1 = now + op.ttl;
                    self.changed_by_me(op.id);
                    Reply::Applied(true)
                }
                None => Reply::Applied(false),
            },
            Kind::End => {
                let applied = self.values.remove(op.id).is_some();
                if applied {
                    self.changed_by_me(op.id);
                }
                Reply::Applied(applied)
            }
        }
    }
}

fn text_of(version: u64) -> Arc<Vec<u8>> {
    Arc::new(version.to_string().into_bytes())
}

fn version_of(text: &[u8]) -> u64 {
    std::str::from_utf8(text).unwrap().parse().unwrap()
}

struct Model {
    rng: Rng,
    texts: Texts,
    server: Server,
    base: Instant,
    now: u64,
    ops: Vec<Op>,
    /// Sent, not yet run by the server.
    queue: VecDeque<usize>,
    /// Sent by the server, not yet read by the connection's task.
    wire: VecDeque<Msg>,
    /// Handed to their ops, not yet handled by them.
    received: Vec<(usize, Reply)>,
    /// Writes and endings of each session in flight: a get concurrent with
    /// one may find the session as it was before (`store.js` `#writing`
    /// sends it to Redis for this store's own writes; a get concurrent with
    /// `destroyUserSessions` may return a session it is ending, as with any
    /// call in flight, but never once the call resolved).
    writing: HashMap<&'static str, u32>,
    next_version: u64,
    /// Gets answered from memory, for the report.
    hits: u64,
    log: Vec<String>,
}

impl Model {
    fn new(seed: u64) -> Model {
        Model {
            rng: Rng(seed),
            texts: Texts::new(DEFAULT_MAX_BYTES),
            server: Server::default(),
            base: Instant::now(),
            now: 0,
            ops: Vec::new(),
            queue: VecDeque::new(),
            wire: VecDeque::new(),
            received: Vec::new(),
            writing: HashMap::new(),
            next_version: 1,
            hits: 0,
            log: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// This store plans an op and sends it, as `rounds.rs` does: a ticket for
    /// every op whose reply the cache may keep.
    fn plan(&mut self) {
        let id = self.rng.pick(&IDS);
        let kind = self.rng.pick(&[
            Kind::Get,
            Kind::Get,
            Kind::Set,
            Kind::Merge,
            Kind::Delete,
            Kind::Touch,
            Kind::End,
        ]);
        let mut expected = 0;
        if kind == Kind::Merge {
            // A merge starts with the compare-and-set only from a text the
            // store holds; otherwise it reads first (a read keeps nothing).
            match self.texts.get(id) {
                Some(r) => expected = version_of(&r.text),
                None => return,
            }
        }
        let ticket = match kind {
            Kind::End => None,
            _ => Some(self.texts.begin(id)),
        };
        if kind != Kind::Get {
            *self.writing.entry(id).or_default() += 1;
        }
        let version = self.version();
        let ttl = 5 + self.rng.below(200);
        self.log.push(format!(
            "{}: plan #{} {kind:?} {id}",
            self.now,
            self.ops.len()
        ));
        self.queue.push_back(self.ops.len());
        self.ops.push(Op {
            kind,
            id,
            ticket,
            planned: self.now,
            ttl,
            version,
            expected,
        });
    }

    /// The server runs the next command of this connection.
    fn serve_command(&mut self) {
        let Some(at) = self.queue.pop_front() else {
            return;
        };
        let reply = self.server.run(&self.ops[at], self.now);
        self.log
            .push(format!("{}: server runs #{at}: {reply:?}", self.now));
        self.wire.push_back(Msg::Reply(at, reply));
    }

    /// Another client writes, deletes, shortens or flushes.
    fn other_client(&mut self) {
        let id = self.rng.pick(&IDS);
        match self.rng.below(8) {
            0..=3 => {
                let v = self.version();
                let ttl = 5 + self.rng.below(200);
                self.server.values.insert(id, (v, self.now + ttl));
                self.log
                    .push(format!("{}: other sets {id} to {v}", self.now));
            }
            4 | 5 => {
                self.server.values.remove(id);
                self.log.push(format!("{}: other deletes {id}", self.now));
            }
            6 => {
                if let Some(entry) = self.server.values.get_mut(id) {
                    entry.1 = self.now + 1;
                }
                self.log.push(format!("{}: other expires {id}", self.now));
            }
            _ => {
                self.server.values.clear();
                self.server.tracked.clear();
                self.wire.push_back(Msg::Report(None));
                self.log.push(format!("{}: other flushes", self.now));
                return;
            }
        }
        self.server.changed_by_other(id, &mut self.wire);
    }

    /// The server's active expiry (in its cron: no client's command, so
    /// every tracking connection is told).
    fn expire(&mut self) {
        let now = self.now;
        let mut due: Vec<_> = self
            .server
            .values
            .iter()
            .filter(|(_, (_, e))| *e <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort(); // one order whatever the map's: a seed replays the same steps
        for id in due {
            self.server.values.remove(id);
            self.server.changed_by_other(id, &mut self.wire);
        }
    }

    /// The connection's task reads the next message: a report goes to the
    /// texts at once, a reply to its op.
    fn read(&mut self) {
        match self.wire.pop_front() {
            Some(Msg::Report(Some(id))) => self.texts.invalidate([id].into_iter()),
            Some(Msg::Report(None)) => self.texts.flush(),
            Some(Msg::Reply(at, reply)) => self.received.push((at, reply)),
            None => {}
        }
    }

    /// An op's task handles its reply, as `rounds.rs` (and, for an ending,
    /// `users.rs`) does.
    fn handle(&mut self) {
        if self.received.is_empty() {
            return;
        }
        let pick = self.rng.below(self.received.len() as u64) as usize;
        let (at, reply) = self.received.swap_remove(pick);
        let op = &self.ops[at];
        self.log
            .push(format!("{}: #{at} handles {reply:?}", self.now));
        match (op.kind, reply) {
            (Kind::Get, Reply::Found(Some((v, pttl)))) => self.texts.keep(
                op.id,
                op.ticket.unwrap(),
                text_of(v),
                false,
                Some(self.at(op.planned + pttl)),
            ),
            (Kind::Set | Kind::Merge, Reply::Applied(true)) => self.texts.keep(
                op.id,
                op.ticket.unwrap(),
                text_of(op.version),
                true,
                Some(self.at(op.planned + op.ttl)),
            ),
            (Kind::Merge, Reply::Applied(false)) => {
                self.texts.end(op.id, op.ticket.unwrap());
                self.texts.forget(op.id);
            }
            (Kind::End, Reply::Applied(true)) => self.texts.ended(op.id),
            (Kind::End, _) => {}
            (_, _) => self.texts.end(op.id, op.ticket.unwrap()),
        }
        self.settled(at);
    }

    /// An op settled: a write or an ending is no longer in flight.
    fn settled(&mut self, at: usize) {
        let op = &self.ops[at];
        if op.kind != Kind::Get {
            *self.writing.get_mut(op.id).unwrap() -= 1;
        }
    }

    /// The connection is lost: the server ran some of what was sent (no
    /// report of it reaches anyone), what was unread is gone with it, the
    /// ops waiting for it fail, and the texts are dropped (`Tracking::lost`).
    /// The next connection tracks nothing yet.
    fn lose_connection(&mut self) {
        let ran = self.rng.below(self.queue.len() as u64 + 1);
        for _ in 0..ran {
            let at = self.queue.pop_front().unwrap();
            let _ = self.server.run(&self.ops[at], self.now);
        }
        let unanswered: Vec<usize> = self
            .queue
            .drain(..)
            .chain(self.wire.drain(..).filter_map(|m| match m {
                Msg::Reply(at, _) => Some(at),
                Msg::Report(_) => None,
            }))
            .collect();
        for at in unanswered {
            self.settled(at); // failed: its ticket goes unused
        }
        self.server.tracked.clear();
        self.texts.flush();
        self.log.push(format!("{}: connection lost", self.now));
    }

    /// The app goes quiet: everything sent is run, read and handled (in a
    /// random order still).
    fn settle_all(&mut self) {
        while !(self.queue.is_empty() && self.wire.is_empty() && self.received.is_empty()) {
            match self.rng.below(3) {
                0 => self.serve_command(),
                1 => self.read(),
                _ => self.handle(),
            }
        }
    }

    /// After every step: a get answered from memory now returns the
    /// server's value, or the cache does not answer it.
    fn check(&mut self) {
        if !self.wire.is_empty() {
            return; // something unread: the cache answers no get
        }
        for id in IDS {
            if self.writing.get(id).copied().unwrap_or(0) > 0 {
                continue; // store.js sends it to Redis
            }
            let Some(text) = self.texts.serve(id, self.at(self.now)) else {
                continue;
            };
            self.hits += 1;
            let served = version_of(&text);
            let stored = self.server.alive(id, self.now);
            if stored != Some(served) {
                let tail = self.log.len().saturating_sub(40);
                panic!(
                    "served version {served} of {id} at {} ms; the server has {stored:?}\n{}",
                    self.now,
                    self.log[tail..].join("\n")
                );
            }
        }
    }

    fn step(&mut self) {
        match self.rng.below(1000) {
            0..=249 => self.plan(),
            250..=449 => self.serve_command(),
            450..=499 => self.other_client(),
            500..=719 => self.read(),
            720..=939 => self.handle(),
            940..=969 => {
                self.now += self.rng.below(30);
                self.expire();
            }
            970..=994 => self.settle_all(),
            _ => self.lose_connection(),
        }
        self.check();
    }
}

#[test]
fn nothing_served_from_memory_differs_from_the_server() {
    let steps = env_number("TEXTS_MODEL_STEPS", 2_000);
    let seeds = seeds("TEXTS_MODEL", 1_000);
    // Scales with the run (1,000 seeds of 2,000 steps: 1,000 hits), so a
    // shorter run (a mutation run's) holds it.
    let work = seeds.len() as u64 * steps;
    let mut hits = 0;
    for seed in seeds {
        let mut model = Model::new(seed);
        for _ in 0..steps {
            model.step();
        }
        hits += model.hits;
    }
    eprintln!("texts model: {hits} gets answered from memory, each checked");
    // The check is only worth something if the cache answered.
    assert!(
        hits > work / 2_000,
        "only {hits} gets were answered from memory"
    );
}
