//! A batch of calls made in one JavaScript tick runs as one pipeline per round
//! on the connection. Every op of a batch shares one deadline (the call's
//! bound, `connectTimeout + commandTimeout` from when the batch crossed into
//! Rust), and each op's outcome is delivered as soon as its round is back: an
//! op that needs more rounds never holds back the others (`addon/crossing.rs`).
//!
//! This is the loop that feeds the rounds (`rounds.rs`, where every decision
//! is, without I/O): it gets the link ready, sends each round's pipeline,
//! hands the replies back, awaits the splices queued to other threads, and
//! loads the scripts after NOSCRIPT.

use std::time::Instant;

use crate::errors::StoreError;
use crate::link::capabilities::Capabilities;
use crate::link::retry::conflict_backoff;
use crate::store::ops::{Op, Outcome};
use crate::store::rounds::{Parts, Rounds};
use crate::store::Store;

/// Where an op's outcomes go as soon as they settle: to `addon/crossing.rs`,
/// which counts them and hands them to JavaScript.
pub type Deliver<'d> = dyn FnMut(Vec<(usize, Outcome)>) + Send + 'd;

impl Store {
    /// What a batch's rounds read and change of this store: all but the
    /// connection.
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            texts: &self.texts,
            users: self.users.as_deref(),
            tokens: &self.tokens,
            stats: &self.stats,
            keys: &self.keys,
            scripts: &self.scripts,
            tracking: &self.conn.tracking,
            cluster: self.conn.is_cluster(),
            call_bound: self.conn.call_bound(),
            backoff: conflict_backoff,
        }
    }
}

/// One batch of ops of a store, run until each has an outcome or its
/// deadline passes.
pub struct Batch<'a> {
    store: &'a Store,
    rounds: Rounds<'a>,
}

impl<'a> Batch<'a> {
    pub fn new(store: &'a Store, ops: &'a [Op], deadline: Instant) -> Self {
        Batch {
            store,
            rounds: Rounds::new(store.parts(), ops, deadline),
        }
    }

    /// Runs the ops, handing each round's outcomes to `deliver` as they come.
    /// Ops on one session take effect in the order given: an op waits while
    /// an earlier op of the batch on the same session may still need another
    /// round.
    pub async fn run(&self, deliver: &mut Deliver<'_>) {
        let rounds = &self.rounds;
        let deadline = rounds.deadline();
        let mut todo = rounds.start();
        let mut scripts_loaded = false;
        while !todo.is_empty() {
            if Instant::now() >= deadline {
                let unsettled = todo.into_iter().map(|p| p.op);
                return fail(deliver, Vec::new(), unsettled, rounds.parts().timeout());
            }
            let (round, wake) = rounds.next_round(&mut todo, Instant::now());
            if round.is_empty() {
                if !self.await_splices(&mut todo, deliver).await {
                    tokio::time::sleep_until(wake.into()).await;
                }
                continue;
            }
            let mut done = Vec::new();
            let ready = match self.store.conn.ready(deadline).await {
                Ok(ready) => ready,
                Err(e) => {
                    // Nothing was sent. Ops that need no server (an unlock
                    // without a token) are done all the same.
                    let unsent =
                        rounds.plan(round, &Capabilities::SCRIPTS, &mut done, Instant::now());
                    let unsent = unsent.into_ops();
                    let unsettled = unsent.into_iter().chain(todo.into_iter().map(|p| p.op));
                    return fail(deliver, done, unsettled, e);
                }
            };
            let planned = rounds.plan(round, &ready.capabilities, &mut done, Instant::now());
            if planned.is_empty() {
                deliver(done);
                continue;
            }
            let replies = match ready.exec_units(&planned.pipe, &planned.units).await {
                Ok(replies) => replies,
                Err(e) => {
                    let unanswered = rounds.unanswered(planned);
                    let unsettled = unanswered.into_iter().chain(todo.into_iter().map(|p| p.op));
                    return fail(deliver, done, unsettled, e);
                }
            };
            let settled = rounds.settle_round(
                planned,
                replies,
                &ready.capabilities,
                scripts_loaded,
                &mut todo,
                &mut done,
                Instant::now(),
            );
            for command in settled.refused {
                ready.refused(command);
            }
            drop(ready);
            if !done.is_empty() {
                deliver(done);
            }
            self.await_splices(&mut todo, deliver).await;
            if settled.missing_script {
                scripts_loaded = true;
                if let Err(e) = self.store.load_scripts(deadline).await {
                    let unsettled = todo.into_iter().map(|p| p.op);
                    return fail(deliver, Vec::new(), unsettled, e);
                }
            }
        }
    }

    /// Awaits the splices of the ops of `todo` that are splicing and hands
    /// over the outcomes of those that failed; false when none was splicing.
    async fn await_splices(
        &self,
        todo: &mut Vec<crate::store::rounds::Pending>,
        deliver: &mut Deliver<'_>,
    ) -> bool {
        if !self.rounds.splicing(todo) {
            return false;
        }
        let done = self.rounds.await_splices(todo).await;
        if !done.is_empty() {
            deliver(done);
        }
        true
    }
}

/// Hands over `done` and fails the ops `unsettled` with `e`: the batch ends.
fn fail(
    deliver: &mut Deliver<'_>,
    mut done: Vec<(usize, Outcome)>,
    unsettled: impl Iterator<Item = usize>,
    e: StoreError,
) {
    done.extend(unsettled.map(|op| (op, Outcome::Failed(e.clone()))));
    deliver(done);
}
