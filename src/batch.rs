//! A batch of calls made in one JavaScript tick runs as one pipeline on the
//! connection: one write, one crossing back into JavaScript. Ops whose script
//! the server does not have (NOSCRIPT after a restart or SCRIPT FLUSH) run again
//! in a second pipeline once the scripts are loaded.

use std::time::Duration;

use redis::{Pipeline, Value};

use crate::errors::Result;
use crate::lock::new_token;
use crate::ops::{decode_replies, is_noscript, push_commands, ttl_ms, Kind, Op, Outcome, Shas};
use crate::store::{Store, MERGE_LUA, UNLOCK_LUA};

/// An op's place in a pipeline.
struct Planned {
    op: usize,
    first: usize,
    len: usize,
    token: Option<String>,
}

impl Store {
    /// Runs ops in order; one outcome per op.
    pub async fn run(&self, ops: &[Op]) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Done; ops.len()];
        let mut todo: Vec<usize> = (0..ops.len()).collect();
        for pass in 0..2 {
            let (pipe, planned) = self.plan(ops, &todo, &mut outcomes);
            if planned.is_empty() {
                break;
            }
            let replies = self
                .conn
                .run(|mut c| async move { pipe.query_async::<Vec<Value>>(&mut c).await })
                .await;
            let replies = match replies {
                Ok(r) => r,
                Err(e) => {
                    for p in planned {
                        outcomes[p.op] = Outcome::Failed(e.clone());
                    }
                    break;
                }
            };
            let mut again = Vec::new();
            for p in planned {
                let r = replies.get(p.first..p.first + p.len).unwrap_or_default();
                if pass == 0 && r.iter().any(is_noscript) {
                    again.push(p.op);
                    continue;
                }
                outcomes[p.op] = self.settle(&ops[p.op], p.token, decode_replies(ops[p.op].kind, r));
            }
            if again.is_empty() {
                break;
            }
            if let Err(e) = self.load_scripts().await {
                for i in again {
                    outcomes[i] = Outcome::Failed(e.clone());
                }
                break;
            }
            todo = again;
        }
        outcomes
    }

    fn plan(&self, ops: &[Op], todo: &[usize], outcomes: &mut [Outcome]) -> (Pipeline, Vec<Planned>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let shas = Shas { merge: self.merge_script.get_hash(), unlock: self.unlock_script.get_hash() };
        let mut planned = Vec::with_capacity(todo.len());
        let mut first = 0;
        for &i in todo {
            let op = &ops[i];
            let token = match op.kind {
                Kind::Lock => Some(new_token()),
                Kind::Unlock => self.tokens.token(&op.id),
                _ => None,
            };
            match push_commands(&mut pipe, op, &self.keys, &shas, token.as_deref()) {
                Ok(0) => outcomes[i] = Outcome::Done,
                Ok(len) => {
                    planned.push(Planned { op: i, first, len, token });
                    first += len;
                }
                Err(e) => outcomes[i] = Outcome::Failed(e),
            }
        }
        (pipe, planned)
    }

    /// Keeps the lock tokens in step with what Redis answered.
    fn settle(&self, op: &Op, token: Option<String>, outcome: Outcome) -> Outcome {
        match (op.kind, &outcome, token) {
            (Kind::Lock, Outcome::Bool(true), Some(token)) => {
                let ttl = ttl_ms(op.ttl).unwrap_or_default();
                self.tokens.remember(&op.id, token, Duration::from_millis(ttl));
            }
            (Kind::Unlock, Outcome::Done, Some(token)) => self.tokens.forget_if(&op.id, &token),
            (Kind::Delete, Outcome::Done, _) => self.tokens.forget(&op.id),
            _ => {}
        }
        outcome
    }

    /// `SCRIPT LOAD` of both scripts; used by `preloadScript` and after NOSCRIPT.
    pub async fn load_scripts(&self) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(MERGE_LUA);
        pipe.cmd("SCRIPT").arg("LOAD").arg(UNLOCK_LUA);
        self.conn.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }
}
