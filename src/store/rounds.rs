//! The rounds of a batch, without I/O: which ops go in the next round, each
//! op's step and the pipeline that carries them, and what a round's replies
//! mean (an outcome, or the op's next step). `batch.rs` is the loop that
//! feeds it: it sends each round on the connection, hands the replies back,
//! awaits the splices queued to other threads and loads the scripts. Time
//! comes in as `now`, and nothing here borrows the connection: a store's
//! [`Parts`] are what a round reads and changes (texts and their tickets,
//! users' index bounds, lock tokens, counters), so the model-based test
//! (`batch_model.rs`) drives these rounds against a model of Redis.
//!
//! A merge takes steps: read the stored text; splice the paths in here
//! (`merge/splice.rs`, at memory speed); write it back with a compare-and-set (a
//! native `SET … IFDEQ`/`IFEQ` or `lua/swap.lua`: `capabilities.rs`, consulted
//! when a round is planned). A native command the server refuses runs again
//! by script. A merge of a session whose text this store read or wrote lately
//! starts with the compare-and-set (`texts.rs`); if that text is out of date,
//! it reads.
//! When another writer changed the text in between (a conflict), the
//! server-side script (`lua/merge.lua`) applies the paths atomically if its
//! work stays within `limits::SCRIPT_WORK`; otherwise the merge reads, splices
//! and compares again after a short random backoff, until it succeeds or the
//! deadline passes. So no merge makes Redis do more than a bounded amount of
//! work in one command, whatever its paths and the session's size.
//!
//! A delete removes the lock key first and the session only once that
//! succeeded. Ops whose script the server does not have (NOSCRIPT after a
//! restart or SCRIPT FLUSH) run again once the scripts are loaded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Pipeline, Value};
use tokio::sync::oneshot;

use crate::errors::{Code, StoreError};
use crate::limits::{MAX_PADDING, SCRIPT_WORK};
use crate::link::capabilities::{
    compare_and_set_result, is_refusal, Capabilities, CompareAndSetBy, Expiry, NativeCommand,
};
use crate::link::scripts::{is_noscript, Scripts};
use crate::link::topology::{is_redirect, Unit};
use crate::link::tracking::{unit_head, Tracking};
use crate::merge::splice::SpliceError;
use crate::merge::splicer::{self, Spliced};
use crate::store::keys::Keys;
use crate::store::locks::{new_token, LockTokens};
use crate::store::ops::ttl_ms;
use crate::store::ops::{
    push_commands, push_compare_and_set, push_delete_session, push_read, Kind, Op, Outcome,
};
use crate::store::replies::{decode_replies, describe_reply};
use crate::store::stats::{MergeStep, Release, Stats};
use crate::store::texts::{Remembered, Texts, Ticket};
use crate::store::users::{push_index_add, ServerClock, Users};

/// Where an op stands.
pub enum Step {
    /// Send the op's commands (every op but Merge).
    Commands,
    /// Merge: the server applies the paths (`lua/merge.lua`).
    Script,
    /// Delete: remove the session, once its lock key is gone.
    DeleteSession,
    /// Merge: read the stored text.
    Read,
    /// Merge: write `new` if the stored text is still `old`, which came from
    /// this store's texts (`remembered`) or was just read.
    CompareAndSet {
        old: Arc<Vec<u8>>,
        new: Vec<u8>,
        remembered: bool,
    },
    /// With `userIdPath`: add the session to `user`'s index, then `then`
    /// (the write that leaves the session naming the user: `users.rs`).
    /// `planned`: when the step was planned, before it was sent.
    Index {
        user: String,
        then: Box<Step>,
        planned: Instant,
    },
    /// Merge: the paths are being spliced into `old` on the splicer's
    /// threads; then `CompareAndSet`.
    Splicing {
        spliced: oneshot::Receiver<Spliced>,
        old: Arc<Vec<u8>>,
        remembered: bool,
    },
}

enum Next {
    Finished(Outcome),
    Then(Step),
    /// The session is in its user's index, added at this time on the
    /// server's clock: now the write.
    Indexed(Step, ServerClock),
    /// The server refused a native command: the step runs again by script.
    Refused(NativeCommand, Step),
    /// Another writer changed the text. `Some(len)`: the text the splice
    /// started from was `len` bytes; None: the script declined a longer text.
    Conflict(Option<usize>),
}

/// An op's place in a round's pipeline.
struct Planned {
    pending: Pending,
    step: Step,
    first: usize,
    len: usize,
    token: Option<String>,
    /// The right to keep the session's text from the reply (`texts.rs`).
    ticket: Option<Ticket>,
    /// A write sent as a tracked transaction (`track_write`): where its
    /// `EXEC` reply is, which holds the op's own replies.
    exec: Option<usize>,
    /// On a cluster, an op sent tracked: where the replies to its head
    /// (`tracking::unit_head`) are.
    head: Option<usize>,
}

/// What a round may keep in the read cache: its ops' tickets, and when it
/// was sent, if its connection was confirmed to track (the texts it keeps
/// are then servable until their ttl, counted from then).
#[derive(Clone, Copy)]
struct Keep {
    ticket: Option<Ticket>,
    servable_from: Option<Instant>,
}

/// How long a text read from a key without expiry may be served (until the
/// server reports a change): in effect, for as long as it is kept.
const NO_EXPIRY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A splice of more than this (paths × bytes) is queued to the splicer's
/// threads (`splicer`), so that it never holds a runtime worker; smaller ones,
/// a millisecond or two at most, run where they are.
const QUEUED_SPLICE: usize = 4 << 20;
/// About how many bytes a splice of `pairs` (path, value, …) into a text of
/// `len` bytes reads and writes: each path is looked up in the whole text, and
/// an index past an array's end pads it with nulls (5 bytes each, at most
/// `MAX_PADDING` a path), which a short text with many such paths makes the
/// larger part.
fn splice_work(len: usize, pairs: &[String]) -> usize {
    let paths = pairs.len() / 2;
    let padding: usize = pairs
        .iter()
        .step_by(2)
        .flat_map(|path| path.split('.'))
        .filter_map(|segment| segment.parse::<u32>().ok())
        .map(|index| index.min(MAX_PADDING) as usize * 5)
        .sum();
    len.saturating_mul(paths.max(1)).saturating_add(padding)
}

/// What a batch's rounds read and change of their store: everything but the
/// connection (`Store::parts`; the model-based test makes its own).
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    pub texts: &'a Texts,
    pub users: Option<&'a Users>,
    pub tokens: &'a LockTokens,
    pub stats: &'a Stats,
    pub keys: &'a Keys,
    pub scripts: &'a Scripts,
    pub tracking: &'a Tracking,
    /// A cluster: the commands of one round may run out of order.
    pub cluster: bool,
    /// How long a call may take (`Connection::call_bound`).
    pub call_bound: Duration,
    /// The wait before a merge tries again after its nth conflict.
    pub backoff: fn(u32) -> Duration,
}

impl Parts<'_> {
    /// The error of a call that ran out of its bound.
    pub fn timeout(&self) -> StoreError {
        StoreError::timeout(self.call_bound.as_millis() as u64)
    }

    /// The ms an index entry's bound is past the session's ttl: the call bound.
    pub fn slack_ms(&self) -> u64 {
        self.call_bound.as_millis() as u64
    }

    /// Keeps the lock tokens in step with what Redis answered.
    fn settle(&self, op: &Op, token: Option<String>, outcome: Outcome) -> Outcome {
        match (op.kind, &outcome, token) {
            (Kind::Lock, Outcome::Bool(true), Some(token)) => {
                let ttl = ttl_ms(op.ttl);
                self.tokens
                    .remember(&op.id, token, Duration::from_millis(ttl));
            }
            (Kind::Unlock, Outcome::Done, Some(token)) => self.tokens.forget_if(&op.id, &token),
            (Kind::Delete, Outcome::Done, _) => self.tokens.forget(&op.id),
            _ => {}
        }
        outcome
    }
}

/// Where an op stands in the rounds (`Rounds::start`, then each round).
pub struct Pending {
    pub op: usize,
    /// None: not started (a merge's first step is chosen when it starts).
    step: Option<Step>,
    /// Merge: compare-and-sets that found the text changed by another writer.
    conflicts: u32,
    /// A merge backing off after a conflict waits until then.
    not_before: Option<Instant>,
    /// The op's next write is already in its user's index (`Step::Index`).
    indexed: bool,
    /// The server's clock when the index entry that covers the op's next
    /// write was written: the write expires by it (`PXAT`), so that it never
    /// outlives the entry, however late it is applied (`users.rs`).
    expires: Option<ServerClock>,
    /// On a cluster, the op's tracked commands were redirected (MOVED, ASK):
    /// it goes again untracked, where the client follows redirections.
    untracked: bool,
}

/// A round planned: its pipeline, and each op's place in it.
pub struct Round {
    pub pipe: Pipeline,
    planned: Vec<Planned>,
    /// When the round was planned, if it opens with the tracking command
    /// (its replies may be kept by the read cache).
    tracked: Option<Instant>,
    /// On a cluster, the ops sent tracked: each one's commands go together
    /// to its key's master.
    pub units: Vec<Unit>,
    /// When the round was planned.
    at: Instant,
}

impl Round {
    /// Whether the round sends nothing (every op of it settled in planning).
    pub fn is_empty(&self) -> bool {
        self.planned.is_empty()
    }

    /// The ops of a round that was never sent.
    pub fn into_ops(self) -> Vec<usize> {
        self.planned.into_iter().map(|p| p.pending.op).collect()
    }
}

/// What a round's replies did beyond the ops' outcomes, for the loop.
#[derive(Default)]
pub struct Settled {
    /// The server lacked a script an op ran (NOSCRIPT): load the scripts,
    /// then those ops run again.
    pub missing_script: bool,
    /// The server refused these native commands: the scripts do those steps
    /// on this link from now on (`Ready::refused`).
    pub refused: Vec<NativeCommand>,
}

/// The rounds of one batch of ops, until each has an outcome or the deadline
/// passes.
pub struct Rounds<'a> {
    parts: Parts<'a>,
    ops: &'a [Op],
    deadline: Instant,
}

impl<'a> Rounds<'a> {
    pub fn new(parts: Parts<'a>, ops: &'a [Op], deadline: Instant) -> Self {
        Rounds {
            parts,
            ops,
            deadline,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn parts(&self) -> &Parts<'a> {
        &self.parts
    }

    /// Every op, not started.
    pub fn start(&self) -> Vec<Pending> {
        (0..self.ops.len())
            .map(|op| Pending {
                op,
                step: None,
                conflicts: 0,
                not_before: None,
                indexed: false,
                expires: None,
                untracked: false,
            })
            .collect()
    }

    /// Whether an op of `todo` waits for its splice on the splicer's threads.
    pub fn splicing(&self, todo: &[Pending]) -> bool {
        todo.iter()
            .any(|p| matches!(p.step, Some(Step::Splicing { .. })))
    }

    /// Awaits the splices of the ops of `todo` that are splicing, without
    /// holding a runtime worker; the outcomes of those that failed.
    pub async fn await_splices(&self, todo: &mut Vec<Pending>) -> Vec<(usize, Outcome)> {
        let mut done = Vec::new();
        for mut p in std::mem::take(todo) {
            let Some(Step::Splicing {
                spliced,
                old,
                remembered,
            }) = p.step.take()
            else {
                todo.push(p);
                continue;
            };
            let next = match spliced.await {
                Ok(spliced) => self.after_splice(spliced, old, remembered),
                Err(_) => Err(Outcome::Failed(StoreError::new(
                    Code::Redis,
                    "internal error: the splice stopped",
                ))),
            };
            match next {
                Ok(step) => {
                    p.step = Some(step);
                    todo.push(p);
                }
                Err(outcome) => done.push((p.op, outcome)),
            }
        }
        done
    }

    /// A round that could not be sent or answered: a lock's `SET NX` may
    /// still have been applied, so its token is kept for a later `unlock()`.
    /// The ops it held, to fail.
    pub fn unanswered(&self, round: Round) -> Vec<usize> {
        round
            .planned
            .into_iter()
            .map(|p| {
                let op = &self.ops[p.pending.op];
                if let (Kind::Lock, Some(token)) = (op.kind, p.token) {
                    let ttl = Duration::from_millis(ttl_ms(op.ttl));
                    self.parts.tokens.remember_unconfirmed(&op.id, token, ttl);
                }
                p.pending.op
            })
            .collect()
    }

    /// Takes from `todo` the ops that go in this round, each with its step;
    /// the others stay, and the round is empty until the earliest of them
    /// may go (the second value) or a splice ends.
    pub fn next_round(
        &self,
        todo: &mut Vec<Pending>,
        now: Instant,
    ) -> (Vec<(Pending, Step)>, Instant) {
        // With users' indexes a set or a touch may take rounds too.
        let ordered = self.parts.cluster || self.parts.users.is_some();
        let mut round = Vec::with_capacity(todo.len());
        let mut waiting = Vec::new();
        let mut busy: HashSet<&str> = HashSet::new();
        let mut wake = self.deadline;
        for mut p in todo.drain(..) {
            let op = &self.ops[p.op];
            if busy.contains(op.id.as_str()) {
                waiting.push(p);
                continue;
            }
            // Ops that may take more rounds hold back later ops on their
            // session; on a cluster a round's commands run side by side,
            // so there every op does.
            if ordered || matches!(op.kind, Kind::Merge | Kind::Unlock | Kind::Delete) {
                busy.insert(op.id.as_str());
            }
            if let Some(t) = p.not_before.filter(|t| *t > now) {
                wake = wake.min(t);
                waiting.push(p);
                continue;
            }
            // A merge's first step is chosen now, after the ops before it.
            // With users' indexes a touch is a merge of no paths: its
            // compare-and-set moves the expiry of the text whose user it
            // indexed, never of one that changed user meanwhile.
            let step = p.step.take().unwrap_or_else(|| match op.kind {
                Kind::Merge => self.first_merge_step(p.op),
                Kind::Touch if self.parts.users.is_some() => self.first_merge_step(p.op),
                _ => Step::Commands,
            });
            if let Step::Splicing { .. } = step {
                // Its splice runs on another thread meanwhile.
                p.step = Some(step);
                waiting.push(p);
                continue;
            }
            let step = if p.indexed {
                step
            } else {
                self.index_first(op, step, &mut p.expires, now)
            };
            round.push((p, step));
        }
        *todo = waiting;
        (round, wake)
    }

    /// What this round's replies mean for each op: its outcome (into `done`)
    /// or its next step (back into `todo`, in the order of the ops). Ops the
    /// server had no script for (NOSCRIPT) go back as they were, to run once
    /// the scripts are loaded, which is tried once per batch
    /// (`scripts_loaded`).
    #[allow(clippy::too_many_arguments)]
    pub fn settle_round(
        &self,
        round: Round,
        mut replies: Vec<Value>,
        capabilities: &Capabilities,
        scripts_loaded: bool,
        todo: &mut Vec<Pending>,
        done: &mut Vec<(usize, Outcome)>,
        now: Instant,
    ) -> Settled {
        let Round {
            planned,
            tracked,
            at,
            ..
        } = round;
        let mut settled = Settled::default();
        // The round's first reply, when it asked: whether its connection tracks.
        let servable_from = tracked.filter(|_| {
            replies
                .first()
                .is_some_and(|reply| self.parts.tracking.confirmed(reply))
        });
        for Planned {
            mut pending,
            step,
            first,
            len,
            token,
            ticket,
            exec,
            head,
        } in planned
        {
            let op = &self.ops[pending.op];
            // On a cluster, the op's own head says whether it was tracked.
            let servable_from = match head {
                Some(h) => match (replies.get(h), replies.get(h + 1)) {
                    (Some(node), Some(redirect))
                        if self.parts.tracking.unit_confirmed(node, redirect) =>
                    {
                        Some(at)
                    }
                    _ => None,
                },
                None => servable_from,
            };
            let keep = Keep {
                ticket,
                servable_from,
            };
            let mut unwrapped;
            let r = match exec {
                Some(at) => {
                    unwrapped = exec_replies(&mut replies, first, len, at);
                    &mut unwrapped[..]
                }
                None => replies.get_mut(first..first + len).unwrap_or_default(),
            };
            if head.is_some() && r.iter().any(is_redirect) {
                // The slot moved, or is moving: what this store holds of the
                // keys there may be told by another master now. Every text
                // goes; the op goes again untracked, where the client follows
                // the redirection (nothing of it ran: a redirected read
                // reads nothing, a redirected transaction is refused whole).
                self.parts.tracking.flush();
                self.end(op, keep);
                pending.untracked = true;
                pending.step = Some(step);
                todo.push(pending);
                continue;
            }
            if !scripts_loaded && r.iter().any(is_noscript) {
                settled.missing_script = true;
                pending.step = Some(step);
                todo.push(pending);
                continue;
            }
            match self.advance(pending.op, step, token, r, capabilities, keep) {
                Next::Finished(outcome) => done.push((pending.op, outcome)),
                Next::Indexed(step, clock) => {
                    self.parts.stats.indexed();
                    pending.indexed = true;
                    pending.expires = Some(clock);
                    pending.step = Some(step);
                    todo.push(pending);
                }
                Next::Then(step) => {
                    pending.indexed = false;
                    pending.expires = None;
                    pending.step = Some(step);
                    todo.push(pending);
                }
                Next::Refused(command, step) => {
                    settled.refused.push(command);
                    pending.step = Some(step);
                    todo.push(pending);
                }
                Next::Conflict(text_len) => {
                    pending.conflicts += 1;
                    pending.indexed = false;
                    pending.expires = None;
                    // The script pads arrays too: that counts as its work.
                    // With users' indexes a merge never goes to the script:
                    // its result's user must be indexed before it is written.
                    let script_fits = self.parts.users.is_none()
                        && text_len.is_some_and(|len| splice_work(len, &op.args) <= SCRIPT_WORK);
                    if script_fits {
                        pending.step = Some(Step::Script);
                    } else {
                        pending.step = Some(Step::Read);
                        pending.not_before = Some(now + (self.parts.backoff)(pending.conflicts));
                    }
                    todo.push(pending);
                }
            }
        }
        todo.sort_unstable_by_key(|p| p.op);
        settled
    }

    /// The round's pipeline and each op's place in it. A round whose replies
    /// the read cache may keep opens with the tracking command
    /// (`link/tracking.rs`). Ops that need no server (an unlock of a lock
    /// this store does not hold) settle here, into `done`.
    pub fn plan(
        &self,
        round: Vec<(Pending, Step)>,
        capabilities: &Capabilities,
        done: &mut Vec<(usize, Outcome)>,
        now: Instant,
    ) -> Round {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let parts = &self.parts;
        let scripts = parts.scripts;
        let mut planned = Vec::with_capacity(round.len());
        let mut first = 0;
        let keeps = |kind| matches!(kind, Kind::Get | Kind::Set | Kind::Merge);
        let tracked = round
            .iter()
            .any(|(p, step)| keeps(self.ops[p.op].kind) && !matches!(step, Step::Index { .. }))
            .then(|| parts.tracking.round_command())
            .flatten()
            .map(|cmd| {
                pipe.add_command(cmd);
                first = 1;
                now
            });
        let caches = parts.tracking.enabled();
        // On a cluster, each op whose text the cache keeps is sent tracked on
        // its own (`tracking::unit_head`).
        let units_track = parts.cluster && parts.tracking.tracks_units();
        let mut units = Vec::new();
        for (pending, step) in round {
            let op = &self.ops[pending.op];
            let token = match op.kind {
                Kind::Lock => Some(new_token()),
                Kind::Unlock => parts.tokens.token(&op.id),
                _ => None,
            };
            // Every step that reads or changes the session, but a merge's
            // read (its text is spliced, not kept). Without the read cache,
            // the texts are only for the next merge's compare-and-set: a get
            // or a merge keeps what it found or wrote, a set or a delete only
            // drops the text (no ticket, no copy of the set's).
            let ticket = match (op.kind, &step) {
                (_, Step::Read | Step::Index { .. }) => None,
                (Kind::Get | Kind::Merge, _) => Some(parts.texts.begin(&op.id)),
                (Kind::Set | Kind::Delete | Kind::Touch, _) if caches => {
                    Some(parts.texts.begin(&op.id))
                }
                (Kind::Set | Kind::Delete, _) => {
                    parts.texts.forget(&op.id);
                    None
                }
                _ => None,
            };
            let how = (capabilities, scripts);
            // A write covered by an index entry ends by the entry's clock.
            let ttl = ttl_ms(op.ttl);
            let expiry = match pending.expires {
                Some(clock) if capabilities.expire_at => Expiry::At(clock.expiry_at(now, ttl)),
                _ => Expiry::In(ttl),
            };
            // In a tracked round, the reads and writes whose texts the cache
            // keeps ask the server to report the key's changes (`CLIENT
            // CACHING YES`: the mode is OPTIN), and read its ttl. On a
            // cluster, each of them opens with its own head.
            let mut exec = None;
            let unit = units_track
                && !pending.untracked
                && matches!(
                    (&step, op.kind),
                    (Step::Commands, Kind::Get | Kind::Set) | (Step::CompareAndSet { .. }, _)
                );
            let head = unit.then(|| {
                let at = first;
                unit_head(&mut pipe);
                first += 2;
                at
            });
            let tracks = tracked.is_some() || unit;
            let pushed = match &step {
                Step::Commands if op.kind == Kind::Get && tracks => {
                    pipe.cmd("CLIENT").arg("CACHING").arg("YES");
                    first += 1;
                    push_commands(&mut pipe, op, parts.keys, how, None, expiry);
                    pipe.cmd("PTTL").arg(parts.keys.session(&op.id));
                    Ok(2)
                }
                Step::Commands if op.kind == Kind::Set && tracks => {
                    let key = parts.keys.session(&op.id);
                    let (at, n) = track_write(&mut pipe, &mut first, &key, |pipe| {
                        push_commands(pipe, op, parts.keys, how, None, expiry)
                    });
                    exec = Some(at);
                    Ok(n)
                }
                Step::CompareAndSet { old, new, .. } if tracks => {
                    let key = parts.keys.session(&op.id);
                    let (at, n) = track_write(&mut pipe, &mut first, &key, |pipe| {
                        let texts = (&old[..], &new[..]);
                        push_compare_and_set(pipe, op, parts.keys, how, texts, expiry);
                        1
                    });
                    exec = Some(at);
                    Ok(n)
                }
                // A merge's commands are its script.
                Step::Commands | Step::Script => Ok(push_commands(
                    &mut pipe,
                    op,
                    parts.keys,
                    how,
                    token.as_deref(),
                    expiry,
                )),
                Step::DeleteSession => {
                    push_delete_session(&mut pipe, op, parts.keys);
                    Ok(1)
                }
                Step::Read => {
                    push_read(&mut pipe, op, parts.keys);
                    Ok(1)
                }
                Step::Index { user, .. } => {
                    push_index_add(
                        &mut pipe,
                        (scripts, parts.keys),
                        parts.slack_ms(),
                        user,
                        &op.id,
                        ttl,
                    );
                    Ok(1)
                }
                Step::CompareAndSet { old, new, .. } => {
                    let texts = (&old[..], &new[..]);
                    push_compare_and_set(&mut pipe, op, parts.keys, how, texts, expiry);
                    Ok(1)
                }
                // Never planned: a splicing merge waits for its splice.
                Step::Splicing { .. } => Err(splicing_planned()),
            };
            match pushed {
                Ok(0) => {
                    // An unlock of a lock this store did not take.
                    parts.stats.not_held();
                    done.push((pending.op, Outcome::Done))
                }
                Ok(len) => {
                    let key = head.map(|_| parts.keys.session(&op.id));
                    planned.push(Planned {
                        pending,
                        step,
                        first,
                        len,
                        token,
                        ticket,
                        exec,
                        head,
                    });
                    first += len + usize::from(exec.is_some());
                    if let (Some(start), Some(key)) = (head, key) {
                        units.push(Unit {
                            first: start,
                            len: first - start,
                            key,
                        });
                    }
                }
                Err(e) => done.push((pending.op, Outcome::Failed(e))),
            }
        }
        Round {
            pipe,
            planned,
            tracked,
            units,
            at: now,
        }
    }

    /// With `userIdPath`, a write that leaves the session naming a user (a
    /// set, a compare-and-set) is preceded by its addition to that user's
    /// index (`users.rs`), unless an entry this store wrote lately covers it
    /// (then `expires` is that entry's clock); other steps go as they are.
    fn index_first(
        &self,
        op: &Op,
        step: Step,
        expires: &mut Option<ServerClock>,
        now: Instant,
    ) -> Step {
        let Some(users) = self.parts.users else {
            return step;
        };
        let ttl = ttl_ms(op.ttl);
        let user = match (&step, op.kind) {
            // store.js checked that a set's text is the JSON of one object.
            (Step::Commands, Kind::Set) => users.user_of(op.args[0].as_bytes()),
            // A merge or a touch of a session this store indexed lately
            // under the same user, with a bound past this write's, needs no
            // new entry (`users.rs`, "Renewals"). A set always adds one.
            (Step::CompareAndSet { new, .. }, _) => users.user_of(new).filter(|user| {
                *expires = users.covering(&op.id, user, ttl, self.parts.slack_ms(), now);
                expires.is_none()
            }),
            _ => None,
        };
        match user {
            Some(user) => Step::Index {
                user,
                then: Box::new(step),
                planned: now,
            },
            None => step,
        }
    }

    /// A merge starts with the compare-and-set when this store has the session's
    /// text, and with a read otherwise.
    fn first_merge_step(&self, at: usize) -> Step {
        match self.parts.texts.get(&self.ops[at].id) {
            Some(Remembered {
                text: old, checked, ..
            }) => self.splice(at, old, checked, true).unwrap_or(Step::Read), // let the stored text decide
            None => Step::Read,
        }
    }

    /// The paths of op `at` spliced into `old` (`checked`: known to be one
    /// JSON object), which this store remembered or just read: the
    /// compare-and-set that writes them, or the splice still running on the
    /// splicer's threads when it is large.
    fn splice(
        &self,
        at: usize,
        old: Arc<Vec<u8>>,
        checked: bool,
        remembered: bool,
    ) -> std::result::Result<Step, Outcome> {
        let op = &self.ops[at];
        if splice_work(old.len(), &op.args) > QUEUED_SPLICE {
            // The splice outlives this borrow of the batch: it takes a copy
            // of the paths (rare and small beside the splice itself; an
            // owner shared by every batch would cost every call).
            let pairs = op.args.clone();
            let spliced = splicer::queue_splice(Arc::clone(&old), checked, pairs, self.deadline);
            return Ok(Step::Splicing {
                spliced,
                old,
                remembered,
            });
        }
        let spliced = splicer::splice_now(&old, checked, &op.args, self.deadline);
        self.after_splice(spliced, old, remembered)
    }

    /// What a splice gives: the compare-and-set of its text, or (a read
    /// text) the outcome of a failed one; a remembered text that does not
    /// splice is read instead.
    fn after_splice(
        &self,
        spliced: Spliced,
        old: Arc<Vec<u8>>,
        remembered: bool,
    ) -> std::result::Result<Step, Outcome> {
        let failed = match spliced {
            Ok(new) => {
                return Ok(Step::CompareAndSet {
                    old,
                    new,
                    remembered,
                })
            }
            Err(_) if remembered => return Ok(Step::Read),
            Err(SpliceError::Corrupt(m)) => StoreError::new(Code::CorruptSession, m),
            Err(SpliceError::BadArg(m)) => StoreError::invalid_arg(m),
            Err(SpliceError::OutOfTime) => self.parts.timeout(),
        };
        Err(Outcome::Failed(failed))
    }

    /// What an op's replies to one step mean: its outcome, or its next step.
    fn advance(
        &self,
        at: usize,
        step: Step,
        token: Option<String>,
        replies: &mut [Value],
        capabilities: &Capabilities,
        keep: Keep,
    ) -> Next {
        let op = &self.ops[at];
        let stats = self.parts.stats;
        let cluster = self.parts.cluster;
        let refused = |native: NativeCommand| {
            capabilities.sends_native(native)
                && matches!(replies.first(), Some(Value::ServerError(e)) if is_refusal(e))
        };
        match step {
            Step::Splicing { .. } => Next::Finished(Outcome::Failed(splicing_planned())),
            Step::Index {
                then,
                user,
                planned,
            } => match replies.first() {
                // The server's clock when it added the entry.
                Some(Value::Int(server_ms)) => {
                    let clock = ServerClock {
                        server_ms: (*server_ms).max(0) as u64,
                        local: planned,
                    };
                    let ttl = ttl_ms(op.ttl);
                    if let Some(users) = self.parts.users {
                        users.indexed(&op.id, &user, clock, ttl, self.parts.slack_ms());
                    }
                    Next::Indexed(*then, clock)
                }
                Some(Value::ServerError(e)) => {
                    Next::Finished(Outcome::Failed(StoreError::from_reply(e, cluster)))
                }
                other => Next::Finished(Outcome::Failed(StoreError::new(
                    Code::Redis,
                    format!(
                        "unexpected reply to the index's script: {}",
                        describe_reply(other)
                    ),
                ))),
            },
            Step::Script if replies.first() == Some(&Value::Int(-1)) => {
                Next::Conflict(None) // the script declined: the text grew past its budget
            }
            Step::Commands if op.kind == Kind::Delete => {
                match decode_replies(op.kind, replies, cluster) {
                    Outcome::Done => Next::Then(Step::DeleteSession),
                    failed => Next::Finished(failed),
                }
            }
            Step::Commands
                if op.kind == Kind::Unlock && refused(NativeCommand::CompareAndDelete) =>
            {
                Next::Refused(NativeCommand::CompareAndDelete, Step::Commands)
            }
            Step::Commands | Step::Script | Step::DeleteSession => {
                match (op.kind, replies.first()) {
                    (Kind::Unlock, Some(Value::Int(1))) => stats.released(Release::Released),
                    (Kind::Unlock, Some(Value::Int(_))) => stats.released(Release::OtherHolder),
                    (Kind::Merge, Some(Value::Int(_))) => stats.merge_step(MergeStep::Script),
                    _ => {}
                }
                let outcome = decode_replies(op.kind, replies, cluster);
                self.keep(op, keep, &outcome, replies);
                Next::Finished(self.parts.settle(op, token, outcome))
            }
            Step::Read => match replies.first_mut().map(std::mem::take) {
                Some(Value::Nil) => {
                    self.parts.texts.forget(&op.id);
                    if op.kind == Kind::Touch {
                        return Next::Finished(Outcome::Bool(false)); // no session to touch
                    }
                    stats.merge_step(MergeStep::Missing);
                    Next::Finished(Outcome::Done) // no session: nothing to merge
                }
                Some(Value::BulkString(old)) => {
                    match self.splice(at, Arc::new(old), false, false) {
                        Ok(step) => Next::Then(step),
                        Err(outcome) => Next::Finished(outcome),
                    }
                }
                other => Next::Finished(
                    decode_replies(Kind::Get, &other.into_iter().collect::<Vec<_>>(), cluster)
                        .failed_or_unexpected(),
                ),
            },
            Step::CompareAndSet {
                old,
                new,
                remembered,
            } => match compare_and_set_result(replies.first()) {
                Some(true) => {
                    let merge = op.kind == Kind::Merge;
                    if merge {
                        let native = capabilities.compare_and_set != CompareAndSetBy::Script;
                        stats.merge_step(MergeStep::Written { remembered, native });
                    }
                    if let Some(ticket) = keep.ticket {
                        let until = keep.servable_from.map(|t| t + ttl_of(op));
                        self.parts
                            .texts
                            .keep(&op.id, ticket, Arc::new(new), true, until);
                    }
                    Next::Finished(if merge {
                        Outcome::Done
                    } else {
                        Outcome::Bool(true) // a touch (`userIdPath`)
                    })
                }
                Some(false) => {
                    self.end(op, keep);
                    self.parts.texts.forget(&op.id);
                    let merge = op.kind == Kind::Merge;
                    if remembered {
                        if merge {
                            stats.merge_step(MergeStep::Stale);
                        }
                        Next::Then(Step::Read) // the remembered text was out of date
                    } else {
                        if merge {
                            stats.merge_step(MergeStep::Conflict);
                        }
                        Next::Conflict(Some(old.len()))
                    }
                }
                None if refused(NativeCommand::CompareAndSet) => Next::Refused(
                    NativeCommand::CompareAndSet,
                    Step::CompareAndSet {
                        old,
                        new,
                        remembered,
                    },
                ),
                None => {
                    self.end(op, keep);
                    Next::Finished(decode_replies(Kind::Merge, replies, cluster))
                }
            },
        }
    }

    /// What the read cache keeps of an op's reply: the text a get found, or
    /// the one a set wrote, if the op's ticket still holds (`texts.rs`);
    /// servable when the round's connection tracks, until the key's ttl.
    fn keep(&self, op: &Op, keep: Keep, outcome: &Outcome, replies: &[Value]) {
        let Some(ticket) = keep.ticket else {
            return;
        };
        let texts = self.parts.texts;
        match (op.kind, outcome) {
            (Kind::Get, Outcome::Text(Some(text))) => {
                let until = keep.servable_from.and_then(|sent| match replies.get(1) {
                    Some(Value::Int(ms)) if *ms >= 0 => {
                        Some(sent + Duration::from_millis(*ms as u64))
                    }
                    Some(Value::Int(-1)) => Some(sent + NO_EXPIRY),
                    _ => None, // gone since, or no ttl asked
                });
                texts.keep(
                    &op.id,
                    ticket,
                    Arc::new(text.as_bytes().to_vec()),
                    false,
                    until,
                );
            }
            (Kind::Set, Outcome::Done) => {
                let until = keep.servable_from.map(|sent| sent + ttl_of(op));
                let text = Arc::new(op.args[0].as_bytes().to_vec());
                // store.js checked that it is the JSON of one object.
                texts.keep(&op.id, ticket, text, true, until);
            }
            _ => texts.end(&op.id, ticket),
        }
    }

    /// The op's ticket goes unused.
    fn end(&self, op: &Op, keep: Keep) {
        if let Some(ticket) = keep.ticket {
            self.parts.texts.end(&op.id, ticket);
        }
    }
}

/// Appends a write the read cache keeps the text of, in a round that
/// tracks: `CLIENT CACHING YES`, `MULTI`, the write (`push`), `PTTL` of its
/// key, `EXEC`. The write drops this connection's tracking of the key (the
/// server forgets who read a key it reports changed, and NOLOOP spares the
/// writer the report); the `PTTL` in the same transaction tracks it again,
/// with nothing in between. Moves `first` to the write's reply; returns where
/// `EXEC`'s reply is and how many replies the write has (its own and `PTTL`).
fn track_write(
    pipe: &mut Pipeline,
    first: &mut usize,
    key: &str,
    push: impl FnOnce(&mut Pipeline) -> usize,
) -> (usize, usize) {
    pipe.cmd("CLIENT").arg("CACHING").arg("YES");
    pipe.cmd("MULTI");
    *first += 2;
    let n = push(pipe) + 1;
    pipe.cmd("PTTL").arg(key);
    pipe.cmd("EXEC");
    (*first + n, n)
}

/// The replies of a write sent by `track_write`: `EXEC`'s, or (a transaction
/// the server refused) the ones each command got when it was queued, which
/// hold the error.
fn exec_replies(replies: &mut [Value], first: usize, len: usize, exec: usize) -> Vec<Value> {
    match replies.get_mut(exec).map(std::mem::take) {
        Some(Value::Array(values)) if values.len() == len => values,
        _ => replies
            .get_mut(first..first + len)
            .map(|r| r.iter_mut().map(std::mem::take).collect())
            .unwrap_or_default(),
    }
}

/// An op's ttl as a duration.
fn ttl_of(op: &Op) -> Duration {
    Duration::from_millis(crate::store::ops::ttl_ms(op.ttl))
}

/// A merge planned while its splice runs: never, by the run loop's order.
fn splicing_planned() -> StoreError {
    StoreError::new(
        Code::Redis,
        "internal error: a merge was sent before its splice ended",
    )
}

impl Outcome {
    /// A reply to a merge's read that is neither text nor nil: its error, or "unexpected".
    fn failed_or_unexpected(self) -> Outcome {
        match self {
            Outcome::Failed(e) => Outcome::Failed(e),
            _ => Outcome::Failed(StoreError::new(
                Code::Redis,
                "unexpected reply to a read".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_counts_as_splice_work() {
        let pairs = |paths: &[&str]| -> Vec<String> {
            paths
                .iter()
                .flat_map(|p| [p.to_string(), "1".to_string()])
                .collect()
        };
        assert_eq!(splice_work(100, &pairs(&["data.a", "data.b"])), 200);
        assert!(splice_work(100, &pairs(&["data.pad.99999"])) > 400_000);
        let many: Vec<String> = (0..1000).map(|i| format!("data.pad{i}.99999")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(splice_work(100, &pairs(&many)) > QUEUED_SPLICE);
    }
}
