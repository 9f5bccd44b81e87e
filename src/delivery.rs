//! How a batch's outcomes reach JavaScript: as they settle. The batch
//! (`batch.rs`) hands over each round's outcomes. The batch call's Promise
//! resolves with the first of them; while some ops are still running, the
//! batch goes on in a task of its own, the result carries a ticket, and
//! `next(ticket)` resolves with the outcomes settled since. An op that takes
//! several round trips (a merge after a conflict) so never holds back its
//! batch-mates.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::errors::{Code, StoreError};
use crate::ops::{encode_outcomes, Op, Outcome};
use crate::store::Store;

/// One delivery: a code per op of the batch (`Pending` where it has no
/// outcome), its text or error, and the ticket for the next delivery while
/// some ops are still running.
pub struct Delivered {
    pub codes: Vec<u32>,
    pub values: Vec<Option<String>>,
    pub ticket: Option<u32>,
}

/// The outcomes still to come of one batch.
pub struct Running {
    len: usize,
    settled: Vec<bool>,
    left: usize,
    rx: UnboundedReceiver<Vec<(usize, Outcome)>>,
    /// The batch itself, until its first outcomes are taken: it runs in the
    /// future of the batch call's Promise, and moves to a task of its own
    /// only if some ops are still running then (most batches finish in one
    /// round, and so cost no task of their own).
    batch: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// The running batches whose outcomes JavaScript has not taken yet.
#[derive(Default)]
pub struct Deliveries {
    next_ticket: AtomicU32,
    running: Mutex<HashMap<u32, Running>>,
}

/// A batch, ready to run when its first outcomes are asked for.
pub fn start(store: &Arc<Store>, ops: Vec<Op>, deadline: Instant) -> Running {
    let (tx, rx) = unbounded_channel();
    let len = ops.len();
    let store = Arc::clone(store);
    let batch = async move {
        store
            .run(&ops, deadline, &mut |outcomes| {
                let _ = tx.send(outcomes); // JavaScript may have gone (a worker ended)
            })
            .await;
    };
    Running {
        len,
        settled: vec![false; len],
        left: len,
        rx,
        batch: Some(Box::pin(batch)),
    }
}

impl Running {
    /// The outcomes settled since the last call: waits for some, then takes
    /// whatever else is there already.
    async fn take(&mut self) -> Vec<(usize, Outcome)> {
        let mut out = Vec::new();
        let mut wait = true;
        while self.left > 0 {
            let next = if wait {
                self.next_outcomes().await
            } else {
                match self.rx.try_recv() {
                    Ok(v) => Some(v),
                    Err(_) => break,
                }
            };
            let Some(outcomes) = next else {
                // The batch ended without an outcome for some ops: it panicked.
                let e = StoreError::new(Code::Redis, "internal error: the batch stopped");
                for (i, settled) in self.settled.iter_mut().enumerate() {
                    if !*settled {
                        *settled = true;
                        out.push((i, Outcome::Failed(e.clone())));
                    }
                }
                self.left = 0;
                break;
            };
            for (i, outcome) in outcomes {
                if !std::mem::replace(&mut self.settled[i], true) {
                    self.left -= 1;
                    out.push((i, outcome));
                }
            }
            wait = out.is_empty(); // an empty round: wait for the next
        }
        // Ops still running: the batch goes on in a task of its own.
        if self.left > 0 {
            if let Some(batch) = self.batch.take() {
                napi::bindgen_prelude::spawn(batch);
            }
        }
        out
    }

    /// The next outcomes, driving the batch here while it has not moved to a
    /// task of its own.
    async fn next_outcomes(&mut self) -> Option<Vec<(usize, Outcome)>> {
        let Some(batch) = self.batch.as_mut() else {
            return self.rx.recv().await;
        };
        tokio::select! {
            biased;
            v = self.rx.recv() => v,
            () = batch => {
                // Finished: everything it delivered is in the channel.
                self.batch = None;
                self.rx.recv().await
            }
        }
    }
}

impl Deliveries {
    /// The next delivery of a running batch.
    pub async fn deliver(&self, mut running: Running) -> Delivered {
        let outcomes = running.take().await;
        let (codes, values) = encode_outcomes(running.len, outcomes);
        let ticket = (running.left > 0).then(|| {
            let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            self.running().insert(ticket, running);
            ticket
        });
        Delivered {
            codes,
            values,
            ticket,
        }
    }

    /// The batch a ticket stands for, taken out until its next delivery.
    pub fn take(&self, ticket: u32) -> Option<Running> {
        self.running().remove(&ticket)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
