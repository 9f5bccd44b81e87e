//! A batch of calls made in one JavaScript tick runs as one pipeline per round
//! on the connection. Every op of a batch shares one deadline (the call's
//! bound, `connectTimeout + commandTimeout` from when the batch crossed into
//! Rust), and each op's outcome is delivered as soon as its round is back: an
//! op that needs more rounds never holds back the others (`delivery.rs`).
//!
//! A merge takes steps: read the stored text; splice the paths in here
//! (`splice.rs`, at memory speed); write it back with a compare-and-set (a
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

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Pipeline, Value};

use crate::capabilities::{is_refusal, swapped, Capabilities, Native, SwapBy};
use crate::errors::{Code, StoreError};
use crate::limits::SCRIPT_WORK;
use crate::lock::new_token;
use crate::ops::{
    decode_replies, is_noscript, push_commands, push_delete_session, push_read, push_swap, Kind,
    Op, Outcome,
};
use crate::splice::{self, SpliceError};
use crate::stats::{MergeStep, Release};
use crate::store::Store;
use crate::texts::Remembered;

/// Where an op stands.
enum Step {
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
    Swap {
        old: Arc<Vec<u8>>,
        new: Vec<u8>,
        remembered: bool,
    },
}

/// An unfinished op.
struct Pending {
    op: usize,
    /// None: not started (a merge's first step is chosen when it starts).
    step: Option<Step>,
    /// Merge: compare-and-sets that found the text changed by another writer.
    conflicts: u32,
    /// A merge backing off after a conflict waits until then.
    not_before: Option<Instant>,
}

enum Next {
    Finished(Outcome),
    Then(Step),
    /// The server refused a native command: the step runs again by script.
    Refused(Native, Step),
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
}

/// A splice of more than this (paths × bytes) runs with `block_in_place`, so
/// the runtime's other tasks move to another thread meanwhile.
const BLOCKING_SPLICE: usize = 4 << 20;
/// Backoff after the n-th conflict: a random wait up to 2^n ms, at most this.
const MAX_BACKOFF: Duration = Duration::from_millis(32);

/// A random wait before a merge retries after its n-th conflict, so that
/// writers that collided do not collide again in step.
fn backoff(conflicts: u32) -> Duration {
    let cap = (1u64 << conflicts.min(16)).min(MAX_BACKOFF.as_micros() as u64 / 1000);
    let random = RandomState::new().hash_one(conflicts);
    Duration::from_micros(random % (cap * 1000 + 1))
}

/// The paths of `op` spliced into `old` (`checked`: known to be one JSON
/// object), given up at `deadline`; large splices step off the runtime's
/// worker meanwhile.
fn spliced(
    old: &[u8],
    checked: bool,
    op: &Op,
    deadline: Instant,
) -> std::result::Result<Vec<u8>, SpliceError> {
    let work = old.len().saturating_mul((op.args.len() / 2).max(1));
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let splice = || {
        if checked {
            splice::merge_checked(old, &op.args, Some(deadline))
        } else {
            splice::merge_until(old, &op.args, Some(deadline))
        }
    };
    if work > BLOCKING_SPLICE && multi_thread {
        tokio::task::block_in_place(splice)
    } else {
        splice()
    }
}

/// One batch of ops of a store, run until each has an outcome or its
/// deadline passes.
pub struct Batch<'a> {
    store: &'a Store,
    ops: &'a [Op],
    deadline: Instant,
}

impl<'a> Batch<'a> {
    pub fn new(store: &'a Store, ops: &'a [Op], deadline: Instant) -> Self {
        Batch {
            store,
            ops,
            deadline,
        }
    }

    /// Runs the ops, handing each round's outcomes to `deliver` as they come.
    /// Ops on one session take effect in the order given: an op waits while
    /// an earlier op of the batch on the same session may still need another
    /// round.
    pub async fn run(&self, deliver: &mut (dyn FnMut(Vec<(usize, Outcome)>) + Send)) {
        let (ops, deadline) = (self.ops, self.deadline);
        let mut todo: Vec<Pending> = (0..ops.len())
            .map(|op| Pending {
                op,
                step: None,
                conflicts: 0,
                not_before: None,
            })
            .collect();
        let mut scripts_loaded = false;
        let ordered = self.store.conn.is_cluster();
        while !todo.is_empty() {
            let now = Instant::now();
            let mut done = Vec::new();
            if now >= deadline {
                let e = self.store.conn.timeout();
                done.extend(todo.drain(..).map(|p| (p.op, Outcome::Failed(e.clone()))));
                deliver(done);
                return;
            }
            let mut round = Vec::with_capacity(todo.len());
            let mut waiting = Vec::new();
            let mut busy: HashSet<&str> = HashSet::new();
            let mut wake = deadline;
            for mut p in todo.drain(..) {
                let op = &ops[p.op];
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
                let step = p.step.take().unwrap_or_else(|| match op.kind {
                    Kind::Merge => self.first_merge_step(op),
                    _ => Step::Commands,
                });
                round.push((p, step));
            }
            todo = waiting;
            if round.is_empty() {
                tokio::time::sleep_until(wake.into()).await;
                continue;
            }
            let ready = match self.store.conn.ready(deadline).await {
                Ok(ready) => ready,
                Err(e) => {
                    // Nothing was sent. Ops that need no server (an unlock
                    // without a token) are done all the same.
                    let (_, planned) = self.plan(round, &Capabilities::SCRIPTS, &mut done);
                    let failed = planned
                        .into_iter()
                        .map(|p| p.pending.op)
                        .chain(todo.drain(..).map(|p| p.op));
                    done.extend(failed.map(|op| (op, Outcome::Failed(e.clone()))));
                    deliver(done);
                    return;
                }
            };
            let capabilities = ready.capabilities;
            let (pipe, planned) = self.plan(round, &capabilities, &mut done);
            if planned.is_empty() {
                deliver(done);
                continue;
            }
            let mut replies = match ready.exec(&pipe).await {
                Ok(r) => r,
                Err(e) => {
                    for p in planned {
                        self.store.after_failed_send(&ops[p.pending.op], p.token);
                        done.push((p.pending.op, Outcome::Failed(e.clone())));
                    }
                    done.extend(todo.drain(..).map(|p| (p.op, Outcome::Failed(e.clone()))));
                    deliver(done);
                    return;
                }
            };
            let mut missing_script = false;
            let now = Instant::now();
            for Planned {
                mut pending,
                step,
                first,
                len,
                token,
            } in planned
            {
                let r = replies.get_mut(first..first + len).unwrap_or_default();
                if !scripts_loaded && r.iter().any(is_noscript) {
                    missing_script = true;
                    pending.step = Some(step);
                    todo.push(pending);
                    continue;
                }
                let op = &ops[pending.op];
                match self.advance(op, step, token, r, &capabilities) {
                    Next::Finished(outcome) => done.push((pending.op, outcome)),
                    Next::Then(step) => {
                        pending.step = Some(step);
                        todo.push(pending);
                    }
                    Next::Refused(native, step) => {
                        ready.refused(native);
                        pending.step = Some(step);
                        todo.push(pending);
                    }
                    Next::Conflict(text_len) => {
                        pending.conflicts += 1;
                        let paths = (op.args.len() / 2).max(1);
                        let script_fits =
                            text_len.is_some_and(|len| len.saturating_mul(paths) <= SCRIPT_WORK);
                        if script_fits {
                            pending.step = Some(Step::Script);
                        } else {
                            pending.step = Some(Step::Read);
                            pending.not_before = Some(now + backoff(pending.conflicts));
                        }
                        todo.push(pending);
                    }
                }
            }
            drop(ready);
            todo.sort_unstable_by_key(|p| p.op);
            if !done.is_empty() {
                deliver(done);
            }
            if missing_script {
                scripts_loaded = true;
                if let Err(e) = self.store.load_scripts(deadline).await {
                    let failed = todo.drain(..).map(|p| (p.op, Outcome::Failed(e.clone())));
                    deliver(failed.collect());
                    return;
                }
            }
        }
    }

    fn plan(
        &self,
        round: Vec<(Pending, Step)>,
        capabilities: &Capabilities,
        done: &mut Vec<(usize, Outcome)>,
    ) -> (Pipeline, Vec<Planned>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let shas = self.store.shas();
        let mut planned = Vec::with_capacity(round.len());
        let mut first = 0;
        for (pending, step) in round {
            let op = &self.ops[pending.op];
            let token = match op.kind {
                Kind::Lock => Some(new_token()),
                Kind::Unlock => self.store.tokens.token(&op.id),
                _ => None,
            };
            let how = (capabilities, &shas);
            let pushed = match &step {
                // A merge's commands are its script.
                Step::Commands | Step::Script => {
                    push_commands(&mut pipe, op, &self.store.keys, how, token.as_deref())
                }
                Step::DeleteSession => {
                    push_delete_session(&mut pipe, op, &self.store.keys);
                    Ok(1)
                }
                Step::Read => {
                    push_read(&mut pipe, op, &self.store.keys);
                    Ok(1)
                }
                Step::Swap { old, new, .. } => {
                    push_swap(&mut pipe, op, &self.store.keys, how, old, new).map(|_| 1)
                }
            };
            match pushed {
                Ok(0) => {
                    // An unlock of a lock this store did not take.
                    self.store.stats.not_held();
                    done.push((pending.op, Outcome::Done))
                }
                Ok(len) => {
                    planned.push(Planned {
                        pending,
                        step,
                        first,
                        len,
                        token,
                    });
                    first += len;
                }
                Err(e) => done.push((pending.op, Outcome::Failed(e))),
            }
        }
        (pipe, planned)
    }

    /// A merge starts with the compare-and-set when this store has the session's
    /// text, and with a read otherwise.
    fn first_merge_step(&self, op: &Op) -> Step {
        match self.store.texts.get(&op.id) {
            Some(Remembered { text: old, checked }) => {
                match spliced(&old, checked, op, self.deadline) {
                    Ok(new) => Step::Swap {
                        old,
                        new,
                        remembered: true,
                    },
                    Err(_) => Step::Read, // let the stored text decide
                }
            }
            None => Step::Read,
        }
    }

    /// What an op's replies to one step mean: its outcome, or its next step.
    fn advance(
        &self,
        op: &Op,
        step: Step,
        token: Option<String>,
        replies: &mut [Value],
        capabilities: &Capabilities,
    ) -> Next {
        let stats = &self.store.stats;
        let refused = |native: Native| {
            capabilities.is_native(native)
                && matches!(replies.first(), Some(Value::ServerError(e)) if is_refusal(e))
        };
        match step {
            Step::Script if replies.first() == Some(&Value::Int(-1)) => {
                Next::Conflict(None) // the script declined: the text grew past its budget
            }
            Step::Commands if op.kind == Kind::Delete => match decode_replies(op.kind, replies) {
                Outcome::Done => Next::Then(Step::DeleteSession),
                failed => Next::Finished(failed),
            },
            Step::Commands if op.kind == Kind::Unlock && refused(Native::Release) => {
                Next::Refused(Native::Release, Step::Commands)
            }
            Step::Commands | Step::Script | Step::DeleteSession => {
                match (op.kind, replies.first()) {
                    (Kind::Unlock, Some(Value::Int(1))) => stats.released(Release::Released),
                    (Kind::Unlock, Some(Value::Int(_))) => stats.released(Release::OtherHolder),
                    (Kind::Merge, Some(Value::Int(_))) => stats.merge_step(MergeStep::Script),
                    _ => {}
                }
                Next::Finished(
                    self.store
                        .settle(op, token, decode_replies(op.kind, replies)),
                )
            }
            Step::Read => match replies.first_mut().map(std::mem::take) {
                Some(Value::Nil) => {
                    stats.merge_step(MergeStep::Missing);
                    self.store.texts.forget(&op.id);
                    Next::Finished(Outcome::Done) // no session: nothing to merge
                }
                Some(Value::BulkString(old)) => match spliced(&old, false, op, self.deadline) {
                    Ok(new) => Next::Then(Step::Swap {
                        old: Arc::new(old),
                        new,
                        remembered: false,
                    }),
                    Err(SpliceError::Corrupt(m)) => {
                        Next::Finished(Outcome::Failed(StoreError::new(Code::CorruptSession, m)))
                    }
                    Err(SpliceError::BadArg(m)) => {
                        Next::Finished(Outcome::Failed(StoreError::invalid_arg(m)))
                    }
                    Err(SpliceError::OutOfTime) => {
                        Next::Finished(Outcome::Failed(self.store.conn.timeout()))
                    }
                },
                other => Next::Finished(
                    decode_replies(Kind::Get, &other.into_iter().collect::<Vec<_>>())
                        .failed_or_unexpected(),
                ),
            },
            Step::Swap {
                old,
                new,
                remembered,
            } => match swapped(replies.first()) {
                Some(true) => {
                    let native = capabilities.swap != SwapBy::Script;
                    stats.merge_step(MergeStep::Swapped { remembered, native });
                    self.store.texts.put(&op.id, Arc::new(new), true);
                    Next::Finished(Outcome::Done)
                }
                Some(false) => {
                    self.store.texts.forget(&op.id);
                    if remembered {
                        stats.merge_step(MergeStep::Stale);
                        Next::Then(Step::Read) // the remembered text was out of date
                    } else {
                        stats.merge_step(MergeStep::Conflict);
                        Next::Conflict(Some(old.len()))
                    }
                }
                None if refused(Native::Swap) => Next::Refused(
                    Native::Swap,
                    Step::Swap {
                        old,
                        new,
                        remembered,
                    },
                ),
                None => Next::Finished(decode_replies(Kind::Merge, replies)),
            },
        }
    }
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
    fn backoff_is_random_and_capped() {
        for n in 1..40 {
            let d = backoff(n);
            assert!(d <= MAX_BACKOFF, "{d:?}");
            assert!(d <= Duration::from_millis(1 << n.min(16)));
        }
        let spread: HashSet<Duration> = (0..50).map(|_| backoff(5)).collect();
        assert!(spread.len() > 10);
    }
}
