//! A model-based test of the read cache's tickets (`texts.rs`): a seeded
//! generator interleaves this store's reads and writes, other clients'
//! writes, expiries, flushes, the server's reports, replies handled late and
//! in any order, endings (`destroyUserSessions`) and lost connections
//! against a small model of Redis (values, ttls, this link's entries of the
//! tracking table, OPTIN, NOLOOP and REDIRECT, each connection's order), and checks
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
//! - A link is two connections (`tracking.rs`): replies come on the data
//!   connection, reports on the reports connection, each in the order sent,
//!   in any order with each other. The reports connection's task hands a
//!   report to the texts at once; the data connection's hands a reply to its
//!   op, whose task handles it later, in any order with the others.
//! - A get is answered from memory only when the reports connection has
//!   nothing unread (`tracking.rs`, `SocketWatch`), the link has its reports
//!   connection, and no write of that session by this store is in flight
//!   (`store.js`), whatever the data connection has in flight.
//! - The reports connection alone can be lost: the texts and tickets go, a
//!   round planned meanwhile keeps nothing servable, and the next op opens a
//!   new link, while the old data connection's ops go on. For the server the
//!   old connection is another client: its writes are reported to the new
//!   link, its reads track nothing the new link hears of.
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
    /// The link it was sent on.
    link: u64,
    /// Whether its round was tracked (the link had its reports connection
    /// when it was planned): only then is what it keeps servable.
    servable: bool,
}

/// What a reply says.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// A get's: the version found and its ttl left.
    Found(Option<(u64, u64)>),
    /// A write's or an ending's: whether it was applied.
    Applied(bool),
}

/// A report: this key changed; None: everything (a flush).
type Report = Option<&'static str>;

#[derive(Default)]
struct Server {
    /// Session → (version, expires at, model ms).
    values: HashMap<&'static str, (u64, u64)>,
    /// The keys the current link's data connection tracks.
    tracked: HashSet<&'static str>,
    /// The current link; an older link's data connection is another client.
    link: u64,
    /// The current link's reports connection is gone: reports go nowhere.
    reports_gone: bool,
}

impl Server {
    /// Another client changed `id`: the link is told if it tracked it.
    fn changed_by_other(&mut self, id: &'static str, reports: &mut VecDeque<Report>) {
        if self.tracked.remove(id) && !self.reports_gone {
            reports.push_back(Some(id));
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

    /// Runs one of this store's commands at `now`.
    fn run(&mut self, op: &Op, now: u64, reports: &mut VecDeque<Report>) -> Reply {
        if op.link != self.link {
            return self.run_as_other(op, now, reports);
        }
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

impl Server {
    /// An op of an older link's data connection: to the server another
    /// client, whose changes are reported to the current link, and whose
    /// reads track nothing the current link hears of.
    fn run_as_other(&mut self, op: &Op, now: u64, reports: &mut VecDeque<Report>) -> Reply {
        if self.values.get(op.id).is_some_and(|(_, e)| *e <= now) {
            self.values.remove(op.id);
            self.changed_by_other(op.id, reports);
        }
        let changed = match op.kind {
            Kind::Get => {
                return Reply::Found(self.values.get(op.id).map(|(v, e)| (*v, e - now)));
            }
            Kind::Set => {
                self.values.insert(op.id, (op.version, now + op.ttl));
                true
            }
            Kind::Merge => {
                let applied = self.values.get(op.id).map(|(v, _)| *v) == Some(op.expected);
                if applied {
                    self.values.insert(op.id, (op.version, now + op.ttl));
                }
                applied
            }
            Kind::Delete | Kind::End => self.values.remove(op.id).is_some(),
            Kind::Touch => match self.values.get_mut(op.id) {
                Some(entry) => {
                    entry.1 = now + op.ttl;
                    true
                }
                None => false,
            },
        };
        if changed {
            self.changed_by_other(op.id, reports);
        }
        Reply::Applied(changed)
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
    /// Replies sent by the server, not yet read by the data connection's
    /// task (the current link's and older ones').
    replies: VecDeque<(usize, Reply)>,
    /// Reports sent by the server, not yet read by the reports connection's
    /// task.
    reports: VecDeque<Report>,
    /// The current link (counted from 0).
    link: u64,
    /// The current link's reports connection was lost: nothing is served
    /// until the next link.
    reports_lost: bool,
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
            replies: VecDeque::new(),
            reports: VecDeque::new(),
            link: 0,
            reports_lost: false,
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
        // A round of a batch already out may still go on the old link
        // (it had its link before the end was heard): it is not tracked.
        if self.reports_lost && self.rng.below(2) == 0 {
            self.new_link();
        }
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
            link: self.link,
            servable: !self.reports_lost,
        });
    }

    /// The next round opens a new link (`connection.rs`, after a
    /// connection of the old one closed): every text goes
    /// (`server_changed`), the new data connection tracks nothing yet, and
    /// the old one's ops go on, to the server another client.
    fn new_link(&mut self) {
        self.link += 1;
        self.server.link = self.link;
        self.server.tracked.clear();
        self.server.reports_gone = false;
        self.reports_lost = false;
        self.texts.flush();
        self.log
            .push(format!("{}: new link {}", self.now, self.link));
    }

    /// The server runs the next command of a data connection: the current
    /// link's, or an older one's still in flight (each in its order).
    fn serve_command(&mut self) {
        let queued = self.queue.iter().copied().collect::<Vec<_>>();
        let Some(pick) = self.next_of_some_link(queued.into_iter()) else {
            return;
        };
        let at = self.queue.remove(pick).unwrap();
        let reply = self.server.run(&self.ops[at], self.now, &mut self.reports);
        self.log
            .push(format!("{}: server runs #{at}: {reply:?}", self.now));
        self.replies.push_back((at, reply));
    }

    /// Where the first op of a link, one picked at random, stands among
    /// `ops`: connections keep their own order, not each other's.
    fn next_of_some_link(&mut self, ops: impl Iterator<Item = usize>) -> Option<usize> {
        let mut heads: Vec<(u64, usize)> = Vec::new();
        for (i, at) in ops.enumerate() {
            let link = self.ops[at].link;
            if !heads.iter().any(|(l, _)| *l == link) {
                heads.push((link, i));
            }
        }
        if heads.is_empty() {
            return None;
        }
        Some(heads[self.rng.below(heads.len() as u64) as usize].1)
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
                if !self.server.reports_gone {
                    self.reports.push_back(None);
                }
                self.log.push(format!("{}: other flushes", self.now));
                return;
            }
        }
        self.server.changed_by_other(id, &mut self.reports);
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
            self.server.changed_by_other(id, &mut self.reports);
        }
    }

    /// The reports connection's task reads the next report: it goes to the
    /// texts at once.
    fn read_report(&mut self) {
        match self.reports.pop_front() {
            Some(Some(id)) => self.texts.invalidate([id].into_iter()),
            Some(None) => self.texts.flush(),
            None => {}
        }
    }

    /// A data connection's task reads its next reply and hands it to its op.
    fn read_reply(&mut self) {
        let heads = self.replies.iter().map(|(at, _)| *at).collect::<Vec<_>>();
        if let Some(pick) = self.next_of_some_link(heads.into_iter()) {
            let reply = self.replies.remove(pick).unwrap();
            self.received.push(reply);
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
        let until = |ms| op.servable.then(|| self.at(op.planned + ms));
        match (op.kind, reply) {
            (Kind::Get, Reply::Found(Some((v, pttl)))) => {
                self.texts
                    .keep(op.id, op.ticket.unwrap(), text_of(v), false, until(pttl))
            }
            (Kind::Set | Kind::Merge, Reply::Applied(true)) => self.texts.keep(
                op.id,
                op.ticket.unwrap(),
                text_of(op.version),
                true,
                until(op.ttl),
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
            let _ = self
                .server
                .run(&self.ops[at], self.now, &mut VecDeque::new());
        }
        let unanswered: Vec<usize> = self
            .queue
            .drain(..)
            .chain(self.replies.drain(..).map(|(at, _)| at))
            .collect();
        for at in unanswered {
            self.settled(at); // failed: its ticket goes unused
        }
        self.reports.clear();
        self.texts.flush();
        self.log.push(format!("{}: connection lost", self.now));
        self.new_link();
    }

    /// The reports connection alone is lost (`tracking.rs`: its end, or
    /// `tracking-redir-broken`): the reports unread are gone and the server
    /// sends none any more; the texts and tickets go at once; the data
    /// connection's ops go on.
    fn lose_reports(&mut self) {
        self.reports.clear();
        self.server.reports_gone = true;
        self.reports_lost = true;
        self.texts.flush();
        self.log
            .push(format!("{}: reports connection lost", self.now));
    }

    /// The app goes quiet: everything sent is run, read and handled (in a
    /// random order still).
    fn settle_all(&mut self) {
        while !(self.queue.is_empty()
            && self.replies.is_empty()
            && self.reports.is_empty()
            && self.received.is_empty())
        {
            match self.rng.below(4) {
                0 => self.serve_command(),
                1 => self.read_reply(),
                2 => self.read_report(),
                _ => self.handle(),
            }
        }
    }

    /// After every step: a get answered from memory now returns the
    /// server's value, or the cache does not answer it.
    fn check(&mut self) {
        if !self.reports.is_empty() || self.reports_lost {
            // A report unread, or none can come: the cache answers no get.
            return;
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
            500..=609 => self.read_reply(),
            610..=719 => self.read_report(),
            720..=939 => self.handle(),
            940..=969 => {
                self.now += self.rng.below(30);
                self.expire();
            }
            970..=991 => self.settle_all(),
            992..=995 => self.lose_reports(),
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
