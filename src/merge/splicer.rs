//! The threads that run large splices, apart from the runtime's workers.
//!
//! A splice of a large session with many paths takes from milliseconds to a
//! good part of a second of CPU. Run on a runtime worker, it would hold up
//! every other task of every store of the process: the `get`s of other
//! stores would wait for it. Moved there with `block_in_place`, each one takes
//! a thread from the runtime's blocking pool, and a few at once exhaust it,
//! which stalls the workers again. So large splices go to a queue of their
//! own, served in order by a fixed number of threads; the batch awaits the
//! result without holding a worker. A splice still queued when its call's
//! deadline passes is not started.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::merge::splice::{self, SpliceError};

type Job = Box<dyn FnOnce() + Send>;

/// The queue's sending end, made with the threads on first use.
static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();

/// How many splices run at once: one per two cores, at most two, like the
/// runtime's workers, so that splices leave a core to the runtime and to
/// Node's main thread.
fn threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / 2).clamp(1, 2)
}

fn queue() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..threads() {
                let rx = Arc::clone(&rx);
                let spawned = std::thread::Builder::new()
                    .name(format!("relay-session-redis-splice-{i}"))
                    .spawn(move || loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A panic fails that splice (its sender is
                            // dropped), never the thread.
                            Ok(job) => drop(catch_unwind(AssertUnwindSafe(job))),
                            Err(_) => return,
                        }
                    });
                started += usize::from(spawned.is_ok());
            }
            (started > 0).then(|| Mutex::new(tx))
        })
        .as_ref()
}

/// What a queued splice hands back.
pub type Spliced = std::result::Result<Vec<u8>, SpliceError>;

/// Queues the splice of `pairs` (path, value, …) into `old` (`checked`: known
/// to be one JSON object), given up at `deadline`. The receiver fails only if
/// the splice panicked; without threads (none could be started) it runs here.
pub fn queue_splice(
    old: Arc<Vec<u8>>,
    checked: bool,
    pairs: Vec<String>,
    deadline: Instant,
) -> oneshot::Receiver<Spliced> {
    let (tx, rx) = oneshot::channel();
    let job = move || {
        let result = if Instant::now() >= deadline {
            Err(SpliceError::OutOfTime)
        } else {
            splice_now(&old, checked, &pairs, deadline)
        };
        let _ = tx.send(result);
    };
    match queue().and_then(|q| q.lock().ok()) {
        Some(q) => {
            if let Err(mpsc::SendError(job)) = q.send(Box::new(job)) {
                job();
            }
        }
        None => job(),
    }
    rx
}

/// The splice itself, on the calling thread.
pub fn splice_now(old: &[u8], checked: bool, pairs: &[String], deadline: Instant) -> Spliced {
    if checked {
        splice::merge_checked(old, pairs, Some(deadline))
    } else {
        splice::merge_until(old, pairs, Some(deadline))
    }
}
