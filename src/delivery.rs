//! How a batch's outcomes reach JavaScript: as they settle. The batch runs in
//! a task of its own (`batch.rs`) that hands over each round's outcomes. The
//! batch call's Promise resolves with the first of them; while some ops are
//! still running, the result carries a ticket, and `next(ticket)` resolves
//! with the outcomes settled since. An op that takes several round trips (a
//! merge after a conflict) so never holds back its batch-mates.

use std::collections::HashMap;
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

/// The outcomes still to come of one running batch.
pub struct Running {
    len: usize,
    settled: Vec<bool>,
    left: usize,
    rx: UnboundedReceiver<Vec<(usize, Outcome)>>,
}

/// The running batches whose outcomes JavaScript has not taken yet.
#[derive(Default)]
pub struct Deliveries {
    next_ticket: AtomicU32,
    running: Mutex<HashMap<u32, Running>>,
}

/// Starts a batch in a task of its own.
pub fn start(store: &Arc<Store>, ops: Vec<Op>, deadline: Instant) -> Running {
    let (tx, rx) = unbounded_channel();
    let len = ops.len();
    let store = Arc::clone(store);
    napi::bindgen_prelude::spawn(async move {
        store
            .run(&ops, deadline, &mut |outcomes| {
                let _ = tx.send(outcomes); // JavaScript may have gone (a worker ended)
            })
            .await;
    });
    Running {
        len,
        settled: vec![false; len],
        left: len,
        rx,
    }
}

impl Running {
    /// The outcomes settled since the last call: waits for one, then takes
    /// whatever else is there already.
    async fn take(&mut self) -> Vec<(usize, Outcome)> {
        let mut out = Vec::new();
        let mut first = true;
        while self.left > 0 {
            let next = if first {
                self.rx.recv().await
            } else {
                match self.rx.try_recv() {
                    Ok(v) => Some(v),
                    Err(_) => break,
                }
            };
            let Some(outcomes) = next else {
                // The task ended without an outcome for some ops: it panicked.
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
            first = false;
            for (i, outcome) in outcomes {
                if !std::mem::replace(&mut self.settled[i], true) {
                    self.left -= 1;
                    out.push((i, outcome));
                }
            }
            if out.is_empty() {
                first = true; // an empty round: wait for the next
            }
        }
        out
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
