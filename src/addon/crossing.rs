//! The crossing between `store.js` and the store: a batch of calls comes in as
//! flat arrays (decoded into [`Op`]s here), and its outcomes go back as they
//! settle, through one long-lived channel per store. `store.js` hands each
//! batch a number and keeps its resolvers; the batch runs in a task of its own
//! (`store/batch.rs`) and queues each round's outcomes here. One call of a napi
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

use crate::addon::wire::OutcomeCode;
use crate::errors::{Code, Result, StoreError};
use crate::store::batch::Batch;
use crate::store::ops::{Kind, Op, Outcome};
use crate::store::Store;

/// The arguments of one call of `onOutcomes` in `store.js`: per settled op,
/// its batch, its place in the batch, its `OutcomeCode` and its text or
/// error message. Flat arrays are what a crossing converts cheapest.
pub type Outcomes = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<Option<String>>);

/// Outcomes queued for the next crossing, by name.
#[derive(Default)]
pub struct Settled {
    batches: Vec<u32>,
    slots: Vec<u32>,
    codes: Vec<u32>,
    values: Vec<Option<String>>,
}

impl Settled {
    /// Queues outcome `outcome` of op `slot` of batch `batch`.
    fn push(&mut self, batch: u32, slot: usize, outcome: Outcome) {
        let (code, value) = encode_outcome(outcome);
        self.batches.push(batch);
        self.slots.push(slot as u32);
        self.codes.push(code);
        self.values.push(value);
    }

    fn into_args(self) -> FnArgs<Outcomes> {
        FnArgs::from((self.batches, self.slots, self.codes, self.values))
    }
}

/// The channel to JavaScript: weak (it never keeps the process alive: store.js
/// holds a timer ref'd while calls are in flight), called without arguments,
/// its callback drains the queue on the main thread.
pub type Channel = ThreadsafeFunction<(), (), FnArgs<Outcomes>, Status, false, true>;

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
                q.push(batch, slot, outcome);
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
    pub fn drain(&self) -> FnArgs<Outcomes> {
        self.scheduled.store(false, Ordering::Release);
        std::mem::take(&mut *self.queued()).into_args()
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
/// future (about 2 KB at 128-byte alignment; the link's opening is boxed in
/// `connection.rs` to keep it so), and that cost, measured with perf, was
/// half of a lone call's time in `AddonStore.batch()`. So the main thread
/// only sends the batch down a channel; one long-lived task per store spawns
/// the batch's task on the runtime's worker. Dropping the runner (the store's
/// JS object went away) ends that task once the channel is empty.
pub struct Runner {
    jobs: mpsc::UnboundedSender<Job>,
    outlet: Arc<Outlet>,
}

impl Runner {
    /// The runner of `store`'s batches, whose outcomes go into `queue` and
    /// cross through `channel` (whose callback drains `queue`).
    pub fn new(store: &Arc<Store>, queue: Arc<Queue>, channel: Channel) -> Runner {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let outlet = Arc::new(Outlet {
            push: Box::new(move |batch, outcomes| queue.push(&channel, batch, outcomes)),
        });
        let (store, spawned) = (Arc::clone(store), Arc::clone(&outlet));
        napi::bindgen_prelude::spawn(async move {
            while let Some(job) = rx.recv().await {
                tokio::spawn(run(Arc::clone(&store), Arc::clone(&spawned), job));
            }
        });
        Runner { jobs, outlet }
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
            self.outlet.fail(store, &job, 0..job.ops.len(), e);
        }
    }
}

/// Where a store's outcomes leave for JavaScript: into its queue, which
/// crosses through its channel (a unit test collects them instead).
struct Outlet {
    push: Box<Push>,
}

/// Hands a batch's outcomes (by batch number) on.
type Push = dyn Fn(u32, Vec<(usize, Outcome)>) + Send + Sync;

impl Outlet {
    /// Counts outcomes of `job` and hands them to JavaScript.
    fn deliver(&self, store: &Store, job: &Job, outcomes: Vec<(usize, Outcome)>) {
        let latency = job.since.elapsed();
        for (slot, outcome) in &outcomes {
            store.stats.settled(job.ops[*slot].kind, outcome, latency);
        }
        (self.push)(job.batch, outcomes);
    }

    /// Fails the ops at `slots` of `job` with `e`.
    fn fail(&self, store: &Store, job: &Job, slots: impl Iterator<Item = usize>, e: StoreError) {
        let failed = slots.map(|i| (i, Outcome::Failed(e.clone()))).collect();
        self.deliver(store, job, failed);
    }
}

/// Where an op of a running batch stands, for a panic's aftermath.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    Pending,
    /// Its outcome is being handed out: a panic there may have cut it short.
    Handing,
    Delivered,
}

/// Runs one batch; its outcomes go out through `outlet`. A panic in the
/// batch (or while handing outcomes out) fails every op whose outcome was
/// not surely delivered, so no Promise is ever left pending; one that may
/// have been delivered already is settled once all the same (`batcher.js`
/// ignores an op's second outcome).
async fn run(store: Arc<Store>, outlet: Arc<Outlet>, job: Job) {
    let mut delivery = vec![Delivery::Pending; job.ops.len()];
    let batch = Batch::new(&store, &job.ops, job.deadline);
    let ran = AssertUnwindSafe(batch.run(&mut |outcomes| {
        for (slot, _) in &outcomes {
            delivery[*slot] = Delivery::Handing;
        }
        outlet.deliver(&store, &job, outcomes);
        for d in delivery.iter_mut().filter(|d| **d == Delivery::Handing) {
            *d = Delivery::Delivered;
        }
    }))
    .catch_unwind()
    .await;
    if ran.is_err() {
        let e = StoreError::new(Code::Redis, "internal error: the batch stopped");
        let unsettled = (0..job.ops.len()).filter(|i| delivery[*i] != Delivery::Delivered);
        outlet.fail(&store, &job, unsettled, e);
    }
}

/// Decodes a batch: op i has kind `kinds[i]`, id `ids[i]`, ttl `ttls[i]`, and
/// takes its strings in order from `strings` (a merge takes `counts[i]`).
pub fn decode_batch(
    kinds: Vec<u32>,
    ids: Vec<String>,
    ttls: Vec<f64>,
    counts: Vec<u32>,
    strings: Vec<String>,
) -> Result<Vec<Op>> {
    let n = kinds.len();
    if ids.len() != n || ttls.len() != n || counts.len() != n {
        return Err(StoreError::invalid_arg(
            "a batch needs kinds, ids, ttls and counts of one length",
        ));
    }
    let mut strings = strings.into_iter();
    let mut ops = Vec::with_capacity(n);
    for (((kind, id), ttl), count) in kinds.into_iter().zip(ids).zip(ttls).zip(counts) {
        let kind = Kind::from_code(kind)
            .ok_or_else(|| StoreError::invalid_arg(format!("unknown op code {kind}")))?;
        let take = kind.strings(count);
        let args: Vec<String> = strings.by_ref().take(take).collect();
        if args.len() != take || (kind == Kind::Merge && take % 2 != 0) {
            return Err(StoreError::invalid_arg(
                "a batch's strings do not match its ops",
            ));
        }
        ops.push(Op {
            kind,
            id,
            ttl,
            args,
        });
    }
    if strings.next().is_some() {
        return Err(StoreError::invalid_arg(
            "a batch's strings do not match its ops",
        ));
    }
    Ok(ops)
}

/// Encodes one outcome for `store.js`: its code (for a failure, with its
/// error code's number: `OutcomeCode::failed`), and its text or error
/// message where there is one.
pub fn encode_outcome(outcome: Outcome) -> (u32, Option<String>) {
    let code = |c: OutcomeCode| c as u32;
    match outcome {
        Outcome::Done => (code(OutcomeCode::Done), None),
        Outcome::Bool(true) => (code(OutcomeCode::True), None),
        Outcome::Bool(false) => (code(OutcomeCode::False), None),
        Outcome::Text(Some(t)) => (code(OutcomeCode::Text), Some(t)),
        Outcome::Text(None) => (code(OutcomeCode::Null), None),
        Outcome::Failed(e) => (OutcomeCode::failed(e.code), Some(e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::Code;

    fn s(v: &str) -> String {
        v.to_owned()
    }

    #[test]
    fn a_batch_decodes_into_ops() {
        let ops = decode_batch(
            vec![0, 1, 3, 4],
            vec![s("a"), s("b"), s("c"), s("d")],
            vec![0.0, 10.0, 20.0, 30.0],
            vec![0, 0, 4, 0],
            vec![s("{}"), s("data.x"), s("1"), s("data.y"), s("")],
        )
        .unwrap();
        assert_eq!(
            ops[0],
            Op {
                kind: Kind::Get,
                id: s("a"),
                ttl: 0.0,
                args: vec![]
            }
        );
        assert_eq!(ops[1].args, vec![s("{}")]);
        assert_eq!(ops[2].args, vec![s("data.x"), s("1"), s("data.y"), s("")]);
        assert_eq!(ops[3].kind, Kind::Lock);
    }

    #[test]
    fn a_malformed_batch_is_refused() {
        let bad = [
            decode_batch(vec![0], vec![], vec![0.0], vec![0], vec![]),
            decode_batch(vec![9], vec![s("a")], vec![0.0], vec![0], vec![]),
            decode_batch(vec![1], vec![s("a")], vec![1.0], vec![0], vec![]),
            decode_batch(vec![3], vec![s("a")], vec![1.0], vec![1], vec![s("p")]),
            decode_batch(vec![0], vec![s("a")], vec![0.0], vec![0], vec![s("extra")]),
        ];
        for b in bad {
            assert_eq!(b.unwrap_err().code, Code::InvalidArg);
        }
    }

    /// A store on a port nothing listens on: no call reaches a server.
    fn unreachable_store() -> Arc<Store> {
        let options = crate::addon::options::StoreOptions {
            url: Some(s("redis://127.0.0.1:1")),
            ..Default::default()
        };
        Arc::new(Store::new(options.config().unwrap()))
    }

    fn job(batch: u32, ops: Vec<Op>) -> Job {
        let now = Instant::now();
        Job {
            batch,
            ops,
            deadline: now + std::time::Duration::from_secs(2),
            since: now,
        }
    }

    fn op(kind: Kind, id: &str, args: Vec<String>) -> Op {
        Op {
            kind,
            id: s(id),
            ttl: if kind == Kind::Get { 0.0 } else { 60_000.0 },
            args,
        }
    }

    /// The README's Faults: a panic inside a call rejects it, its
    /// batch-mates included, and the process goes on. The panic is made on
    /// purpose inside the batch's task, where it hands its first outcomes
    /// out and before they leave (the least settled a panic can leave a
    /// batch): every op fails with the internal error, each exactly once,
    /// and the next batch on the same runtime runs. (Marked settled before
    /// they left, as they were until this test, those ops were never
    /// settled: their Promises stayed pending.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panic_in_a_batch_fails_its_unsettled_ops_and_the_next_batch_runs() {
        let store = unreachable_store();
        let got: Arc<Mutex<Vec<(u32, usize, Outcome)>>> = Arc::default();
        let seen = Arc::clone(&got);
        let panicked = Arc::new(AtomicBool::new(false));
        let once = Arc::clone(&panicked);
        let outlet = Arc::new(Outlet {
            push: Box::new(move |batch, outcomes| {
                if !once.swap(true, Ordering::SeqCst) {
                    panic!("a panic made on purpose");
                }
                seen.lock()
                    .unwrap()
                    .extend(outcomes.into_iter().map(|(slot, o)| (batch, slot, o)));
            }),
        });
        let ops = vec![
            op(Kind::Unlock, "a", vec![]),
            op(Kind::Get, "b", vec![]),
            op(Kind::Set, "c", vec![s("{}")]),
        ];
        run(Arc::clone(&store), Arc::clone(&outlet), job(1, ops)).await;
        assert!(panicked.load(Ordering::SeqCst));
        let outcomes: Vec<_> = got.lock().unwrap().drain(..).collect();
        let mut slots: Vec<usize> = outcomes.iter().map(|(_, slot, _)| *slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, vec![0, 1, 2], "each op settles once");
        for (_, _, outcome) in &outcomes {
            assert!(
                matches!(outcome, Outcome::Failed(e) if e.code == Code::Redis && e.message == "internal error: the batch stopped"),
                "{outcome:?}"
            );
        }
        // The runtime and the store go on: the next batch runs to its own
        // outcome (no server: a connection error).
        run(store, outlet, job(2, vec![op(Kind::Get, "d", vec![])])).await;
        let next = got.lock().unwrap().drain(..).collect::<Vec<_>>();
        assert!(
            matches!(&next[..], [(2, 0, Outcome::Failed(e))] if e.code == Code::Connection),
            "{next:?}"
        );
    }

    /// Every batch's task is made, and its stage copied, with its whole
    /// future: at 13,336 bytes (the link's opening inline) `npm run bench`'s
    /// get of 1 KB with 64 in flight ran at 0.91x of `64dc1fc` in every
    /// round, at 1,976 bytes 0.99x. Size only, so the bound holds on any
    /// machine.
    #[tokio::test]
    async fn a_batch_future_stays_small() {
        let store = unreachable_store();
        let outlet = Arc::new(Outlet {
            push: Box::new(|_, _| {}),
        });
        let batch = run(store, outlet, job(1, vec![op(Kind::Get, "a", vec![])]));
        let size = std::mem::size_of_val(&batch);
        assert!(size <= 4096, "a batch's future is {size} bytes");
    }

    #[test]
    fn outcomes_encode_to_codes_and_texts() {
        let encoded: Vec<_> = vec![
            Outcome::Done,
            Outcome::Bool(true),
            Outcome::Bool(false),
            Outcome::Text(Some(s("{}"))),
            Outcome::Text(None),
            Outcome::Failed(StoreError::closed()),
        ]
        .into_iter()
        .map(encode_outcome)
        .collect();
        let codes: Vec<u32> = encoded.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5 + Code::Closed as u32]);
        assert_eq!(encoded[3].1.as_deref(), Some("{}"));
        // The code crosses as a number, apart from the message.
        assert_eq!(encoded[5].1.as_deref(), Some("the store is closed"));
    }
}
