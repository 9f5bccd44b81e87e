//! A batch of calls made in one JavaScript tick runs as one pipeline on the
//! connection: one write, one crossing back into JavaScript.
//!
//! A merge takes steps: read the stored text; splice the paths in here
//! (`splice.rs`, at memory speed); write it back with a compare-and-set script.
//! When the text changed in between, or the splice cannot be done here, the
//! server-side script (`lua/merge.lua`) applies the paths atomically instead.
//! A merge of a session whose text this store read or wrote lately starts with
//! the compare-and-set (`texts.rs`); if that text is out of date, it reads.
//! Each step of every op of the batch shares one pipeline per round. Ops whose
//! script the server does not have (NOSCRIPT after a restart or SCRIPT FLUSH)
//! run again once the scripts are loaded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::{Pipeline, RedisError, Value};

use crate::errors::{Code, Result, StoreError};
use crate::lock::new_token;
use crate::ops::{
    decode_replies, is_noscript, push_commands, push_read, push_swap, ttl_ms, Kind, Op, Outcome,
    Shas,
};
use crate::splice::{self, SpliceError};
use crate::store::{Store, MERGE_LUA, SWAP_LUA, UNLOCK_LUA};

/// Where an op stands.
enum Step {
    /// Send the op's commands (every op but Merge; Merge's server-side script).
    Send,
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

enum Next {
    Finished(Outcome),
    Then(Step),
}

/// An op's place in a round's pipeline.
struct Planned {
    op: usize,
    step: Step,
    first: usize,
    len: usize,
    token: Option<String>,
}

/// The most steps one op takes: a swap on a remembered text, a read, a swap,
/// the server-side script, and one repeat after NOSCRIPT.
const MAX_STEPS: usize = 5;

impl Store {
    /// Runs ops; one outcome per op. Ops on one session take effect in the
    /// order given: an op waits while an earlier op of the batch on the same
    /// session may still need another round (a merge, or an unlock whose script
    /// may have to be loaded first).
    pub async fn run(&self, ops: &[Op]) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Done; ops.len()];
        // Unfinished ops in batch order, with their next step (None: not started).
        let mut todo: Vec<(usize, Option<Step>)> = (0..ops.len()).map(|i| (i, None)).collect();
        let mut scripts_loaded = false;
        let ordered = self.conn.is_cluster();
        // Each round advances at least the first unfinished op.
        for _ in 0..MAX_STEPS * ops.len() + 1 {
            if todo.is_empty() {
                break;
            }
            let mut round = Vec::with_capacity(todo.len());
            let mut waiting = Vec::new();
            let mut busy: HashSet<&str> = HashSet::new();
            for (i, step) in todo.drain(..) {
                let op = &ops[i];
                if busy.contains(op.id.as_str()) {
                    waiting.push((i, step));
                    continue;
                }
                // On a cluster a round's commands run side by side: one op per session.
                if ordered || matches!(op.kind, Kind::Merge | Kind::Unlock) {
                    busy.insert(op.id.as_str());
                }
                // A merge's first step is chosen now, after the ops before it.
                let step = step.unwrap_or_else(|| match op.kind {
                    Kind::Merge => self.first_merge_step(op),
                    _ => Step::Send,
                });
                round.push((i, step));
            }
            let (pipe, planned) = self.plan(ops, round, &mut outcomes);
            todo = waiting;
            if planned.is_empty() {
                continue;
            }
            let replies = self.conn.exec(&pipe).await;
            let mut replies = match replies {
                Ok(r) => r,
                Err(e) => {
                    for p in planned {
                        outcomes[p.op] = Outcome::Failed(e.clone());
                    }
                    for (i, _) in todo.drain(..) {
                        outcomes[i] = Outcome::Failed(e.clone());
                    }
                    break;
                }
            };
            let mut missing_script = false;
            for p in planned {
                let r = replies
                    .get_mut(p.first..p.first + p.len)
                    .unwrap_or_default();
                if !scripts_loaded && r.iter().any(is_noscript) {
                    missing_script = true;
                    todo.push((p.op, Some(p.step)));
                    continue;
                }
                match self.advance(&ops[p.op], p.step, p.token, r) {
                    Next::Finished(outcome) => outcomes[p.op] = outcome,
                    Next::Then(step) => todo.push((p.op, Some(step))),
                }
            }
            todo.sort_unstable_by_key(|(i, _)| *i);
            if missing_script {
                scripts_loaded = true;
                if let Err(e) = self.load_scripts().await {
                    for (i, _) in todo.drain(..) {
                        outcomes[i] = Outcome::Failed(e.clone());
                    }
                }
            }
        }
        outcomes
    }

    fn plan(
        &self,
        ops: &[Op],
        todo: Vec<(usize, Step)>,
        outcomes: &mut [Outcome],
    ) -> (Pipeline, Vec<Planned>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let shas = Shas {
            merge: self.merge_script.get_hash(),
            swap: self.swap_script.get_hash(),
            unlock: self.unlock_script.get_hash(),
        };
        let mut planned = Vec::with_capacity(todo.len());
        let mut first = 0;
        for (i, step) in todo {
            let op = &ops[i];
            let token = match op.kind {
                Kind::Lock => Some(new_token()),
                Kind::Unlock => self.tokens.token(&op.id),
                _ => None,
            };
            let pushed = match &step {
                Step::Send => push_commands(&mut pipe, op, &self.keys, &shas, token.as_deref()),
                Step::Read => {
                    push_read(&mut pipe, op, &self.keys);
                    Ok(1)
                }
                Step::Swap { old, new, .. } => {
                    push_swap(&mut pipe, op, &self.keys, &shas, old, new).map(|_| 1)
                }
            };
            match pushed {
                Ok(0) => outcomes[i] = Outcome::Done,
                Ok(len) => {
                    planned.push(Planned {
                        op: i,
                        step,
                        first,
                        len,
                        token,
                    });
                    first += len;
                }
                Err(e) => outcomes[i] = Outcome::Failed(e),
            }
        }
        (pipe, planned)
    }

    /// A merge starts with the compare-and-set when this store has the session's
    /// text, and with a read otherwise.
    fn first_merge_step(&self, op: &Op) -> Step {
        match self.texts.get(&op.id) {
            Some(old) => match splice::merge(&old, &op.args) {
                Ok(new) => Step::Swap {
                    old,
                    new,
                    remembered: true,
                },
                Err(_) => Step::Read, // let the stored text decide
            },
            None => Step::Read,
        }
    }

    /// What an op's replies to one step mean: its outcome, or its next step.
    fn advance(&self, op: &Op, step: Step, token: Option<String>, replies: &mut [Value]) -> Next {
        match step {
            Step::Send => Next::Finished(self.settle(op, token, decode_replies(op.kind, replies))),
            Step::Read => match replies.first_mut().map(std::mem::take) {
                Some(Value::Nil) => {
                    self.texts.forget(&op.id);
                    Next::Finished(Outcome::Done) // no session: nothing to merge
                }
                Some(Value::BulkString(old)) => match splice::merge(&old, &op.args) {
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
                    Err(SpliceError::TooDeep) => Next::Then(Step::Send),
                },
                other => Next::Finished(
                    decode_replies(Kind::Get, &other.into_iter().collect::<Vec<_>>())
                        .failed_or_unexpected(),
                ),
            },
            Step::Swap {
                new, remembered, ..
            } => match replies.first() {
                Some(Value::Int(1)) => {
                    self.texts.put(&op.id, Arc::new(new));
                    Next::Finished(Outcome::Done)
                }
                Some(Value::Int(0)) => {
                    self.texts.forget(&op.id);
                    if remembered {
                        Next::Then(Step::Read) // the remembered text was out of date
                    } else {
                        // The text changed since it was read: the server-side script applies the paths.
                        Next::Then(Step::Send)
                    }
                }
                _ => Next::Finished(decode_replies(Kind::Merge, replies)),
            },
        }
    }

    /// Keeps the lock tokens and the remembered texts in step with what Redis
    /// answered.
    fn settle(&self, op: &Op, token: Option<String>, outcome: Outcome) -> Outcome {
        match (op.kind, &outcome) {
            (Kind::Get, Outcome::Text(Some(text))) => {
                self.texts.put(&op.id, Arc::new(text.as_bytes().to_vec()))
            }
            // Unknown now: a get that failed or found nothing, a set, a delete,
            // a merge the server-side script did.
            (Kind::Get | Kind::Set | Kind::Delete | Kind::Merge, _) => self.texts.forget(&op.id),
            _ => {}
        }
        match (op.kind, &outcome, token) {
            (Kind::Lock, Outcome::Bool(true), Some(token)) => {
                let ttl = ttl_ms(op.ttl).unwrap_or_default();
                self.tokens
                    .remember(&op.id, token, Duration::from_millis(ttl));
            }
            (Kind::Unlock, Outcome::Done, Some(token)) => self.tokens.forget_if(&op.id, &token),
            (Kind::Delete, Outcome::Done, _) => self.tokens.forget(&op.id),
            _ => {}
        }
        outcome
    }

    /// `SCRIPT LOAD` of the scripts; used by `preloadScript` and after NOSCRIPT.
    pub async fn load_scripts(&self) -> Result<()> {
        let mut pipe = redis::pipe();
        for lua in [MERGE_LUA, SWAP_LUA, UNLOCK_LUA] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(lua);
        }
        for reply in self.conn.exec(&pipe).await? {
            if let Value::ServerError(e) = reply {
                return Err(StoreError::from(RedisError::from(e)));
            }
        }
        Ok(())
    }
}

impl Outcome {
    /// A reply to a merge's read that is neither text nor nil: its error, or "unexpected".
    fn failed_or_unexpected(self) -> Outcome {
        match self {
            Outcome::Failed(e) => Outcome::Failed(e),
            other => Outcome::Failed(StoreError::new(
                Code::Redis,
                format!("unexpected reply to a read: {other:?}"),
            )),
        }
    }
}
