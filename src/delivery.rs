//! How a batch's outcomes reach JavaScript: as they settle, through one
//! long-lived channel per store. `store.js` hands each batch a number and
//! keeps its resolvers; the batch runs in a task of its own (`batch.rs`) and
//! queues each round's outcomes here. One call of a napi
//! `ThreadsafeFunction`, created once with the store, carries everything
//! queued to the main thread: outcomes that settle close together, of one
//! batch or of many, cross back together. No Promise and no threadsafe
//! function is created per call.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use tokio::sync::mpsc;

use crate::errors::{Code, StoreError};
use crate::ops::{encode_outcome, Op, Outcome};
use crate::store::Store;

/// What one crossing carries to `store.js`: per settled op, its batch, its
/// place in the batch, its `OutcomeCode` and its text or error.
pub type Settled = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<Option<String>>);

/// The channel to JavaScript: weak (it never keeps the process alive: store.js
/// holds a timer ref'd while calls are in flight), called without arguments,
/// its callback drains the queue on the main thread.
pub type Channel = ThreadsafeFunction<(), (), FnArgs<Settled>, Status, false, true>;

/// Outcomes waiting for the next crossing.
#[derive(Default)]
pub struct Queue {
    settled: Mutex<Settled>,
    /// Whether a crossing is on its way (it will take whatever is queued).
    scheduled: AtomicBool,
}

impl Queue {
    fn queued(&self) -> std::sync::MutexGuard<'_, Settled> {
        self.settled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues outcomes of batch `batch`; asks for a crossing unless one is on
    /// its way.
    pub fn push(&self, channel: &Channel, batch: u32, outcomes: Vec<(usize, Outcome)>) {
        {
            let mut q = self.queued();
            for (slot, outcome) in outcomes {
                let (code, value) = encode_outcome(outcome);
                q.0.push(batch);
                q.1.push(slot as u32);
                q.2.push(code as u32);
                q.3.push(value);
            }
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            // Fails only when the environment is going away (a worker ends):
            // then nobody waits for these outcomes.
            let _ = channel.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    /// Everything queued, for the crossing (on the main thread). Outcomes
    /// queued from now on ask for a crossing of their own.
    pub fn drain(&self) -> Settled {
        self.scheduled.store(false, Ordering::Release);
        std::mem::take(&mut *self.queued())
    }
}

/// A batch handed over by the main thread.
struct Job {
    batch: u32,
    ops: Vec<Op>,
    deadline: Instant,
    /// When its first call was made, for the latency counts.
    since: Instant,
}

/// Where the main thread hands batches over. A batch needs a task of its own
/// (a large merge waits for its splice on the splicer's thread while the
/// store's other batches go on), but creating one allocates the batch's whole
/// future, about 4 KB at 128-byte alignment, and that cost, measured with perf,
/// was half of a lone call's time in `NativeStore.batch()`. So the main thread
/// only sends the batch down a channel; one long-lived task per store spawns
/// the batch's task on the runtime's worker. Dropping the runner (the store's
/// JS object went away) ends that task once the channel is empty.
pub struct Runner {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Runner {
    pub fn new(store: &Arc<Store>) -> Runner {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let store = Arc::clone(store);
        napi::bindgen_prelude::spawn(async move {
            while let Some(job) = rx.recv().await {
                tokio::spawn(run(Arc::clone(&store), job));
            }
        });
        Runner { jobs }
    }

    /// Starts batch `batch`, whose first call was made at `since`; its
    /// outcomes go through the store's queue.
    pub fn start(
        &self,
        store: &Store,
        batch: u32,
        ops: Vec<Op>,
        deadline: Instant,
        since: Instant,
    ) {
        store.stats.started(ops.len());
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job {
            batch,
            ops,
            deadline,
            since,
        }) {
            // The runtime is shutting down: nothing will run the batch.
            let e = StoreError::new(Code::Closed, "the store is shutting down");
            fail(store, &job, 0..job.ops.len(), e);
        }
    }
}

/// Runs one batch; its outcomes go through `store`'s queue. A panic in the
/// batch fails the ops it had not settled, so no Promise is ever left pending.
async fn run(store: Arc<Store>, job: Job) {
    let mut settled = vec![false; job.ops.len()];
    let ran = AssertUnwindSafe(store.run(&job.ops, job.deadline, &mut |outcomes| {
        for (slot, _) in &outcomes {
            settled[*slot] = true;
        }
        deliver(&store, &job, outcomes);
    }))
    .catch_unwind()
    .await;
    if ran.is_err() {
        let e = StoreError::new(Code::Redis, "internal error: the batch stopped");
        let unsettled = (0..job.ops.len()).filter(|i| !settled[*i]);
        fail(&store, &job, unsettled, e);
    }
}

/// Counts outcomes of `job` and hands them to JavaScript.
fn deliver(store: &Store, job: &Job, outcomes: Vec<(usize, Outcome)>) {
    let latency = job.since.elapsed();
    for (slot, outcome) in &outcomes {
        store.stats.settled(job.ops[*slot].kind, outcome, latency);
    }
    store.deliver(job.batch, outcomes);
}

/// Fails the ops at `slots` of `job` with `e`.
fn fail(store: &Store, job: &Job, slots: impl Iterator<Item = usize>, e: StoreError) {
    let failed = slots.map(|i| (i, Outcome::Failed(e.clone()))).collect();
    deliver(store, job, failed);
}
