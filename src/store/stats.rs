//! What a store has done since it was created, for `store.stats()`: counters
//! (`addon/stats.rs` reads them into the object JavaScript gets) kept with
//! relaxed atomics (each settled call adds to a few of them, on the
//! runtime's thread that settled it) and a fixed-bucket latency histogram per
//! op. Reading them takes a snapshot; nothing here locks or allocates on a
//! call's path.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::errors::Code;
use crate::store::ops::{Kind, Outcome};

/// Sub-buckets per doubling of the latency, of equal width: each bucket's
/// bound is 14-25 % above the one before, so a percentile read off the
/// histogram (a bucket's bound) is at most 25 % above the true one.
const SUB_BUCKETS: u32 = 4;
/// Doublings of a microsecond the histogram covers: 2^26 µs is 67 s, beyond
/// any call's bound; slower calls land in the last bucket.
const OCTAVES: u32 = 26;
/// Buckets per op.
pub const BUCKETS: usize = (SUB_BUCKETS * OCTAVES) as usize;

/// The bucket of a latency of `micros` µs.
fn bucket(micros: u64) -> usize {
    let v = micros.max(1);
    let octave = 63 - v.leading_zeros(); // floor(log2 v)
                                         // The two bits after the leading one say where in the doubling v is.
    let sub = if octave >= 2 {
        (v >> (octave - 2)) & 3
    } else {
        (v << (2 - octave)) & 3
    };
    ((octave * SUB_BUCKETS) as usize + sub as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in ms: latencies in it are below this.
pub fn upper_ms(i: usize) -> f64 {
    let (octave, sub) = (i as u32 / SUB_BUCKETS, i as u32 % SUB_BUCKETS);
    let micros = f64::from(1u32 << octave.min(31)) * f64::from(SUB_BUCKETS + sub + 1)
        / f64::from(SUB_BUCKETS);
    micros / 1000.0
}

/// What a histogram holds now: the count, two percentiles (the bound of the
/// bucket holding each) and the count per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub buckets: Vec<f64>,
}

/// Latencies of one op.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(micros)].fetch_add(1, Relaxed);
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let percentile = |p: f64| {
            if total == 0 {
                return 0.0;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return upper_ms(i);
                }
            }
            upper_ms(BUCKETS - 1)
        };
        Summary {
            count: total as f64,
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            buckets: counts.into_iter().map(|n| n as f64).collect(),
        }
    }
}

/// How merges went (see the README's "Stats").
#[derive(Default)]
pub struct MergeCounters {
    pub remembered: AtomicU64,
    pub read_then_swap: AtomicU64,
    pub native: AtomicU64,
    pub stale: AtomicU64,
    pub conflicts: AtomicU64,
    pub script: AtomicU64,
    pub missing: AtomicU64,
}

/// A step a merge took, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStep {
    /// A compare-and-set succeeded; `remembered`: from the text this store
    /// had, without reading; `native`: by the server's own command.
    Written { remembered: bool, native: bool },
    /// The text this store remembered was out of date: it reads.
    Stale,
    /// Another writer changed the text between the read and the write.
    Conflict,
    /// The server-side script applied the paths.
    Script,
    /// No session to merge into.
    Missing,
}

/// The users' indexes (`userIdPath`) and the calls on them.
#[derive(Default)]
pub struct UserCounters {
    /// Sessions added to (or renewed in) a user's index before their write.
    pub indexed: AtomicU64,
    /// `userSessions()` calls settled, and those that failed.
    pub lists: AtomicU64,
    pub list_errors: AtomicU64,
    /// `destroyUserSessions()` calls settled, and those that failed.
    pub ends: AtomicU64,
    pub end_errors: AtomicU64,
    /// Sessions `destroyUserSessions()` ended.
    pub ended: AtomicU64,
}

/// How an unlock went, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The lock key held this store's token and was deleted.
    Released,
    /// The lock key held another token, or none (it expired).
    OtherHolder,
}

/// The counters of one store.
/// The counters of one store, by op ([`Kind`] as index) and by error code
/// ([`Code`] as index).
pub struct Stats {
    pub calls: [AtomicU64; Kind::ALL.len()],
    pub errors: [AtomicU64; Kind::ALL.len()],
    pub codes: [AtomicU64; Code::ALL.len()],
    pub latency: [Histogram; Kind::ALL.len()],
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub merges: MergeCounters,
    pub locks_taken: AtomicU64,
    pub locks_refused: AtomicU64,
    pub released: AtomicU64,
    pub other_holder: AtomicU64,
    pub not_held: AtomicU64,
    pub users: UserCounters,
    in_flight: AtomicI64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| Histogram::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            merges: MergeCounters::default(),
            locks_taken: AtomicU64::new(0),
            locks_refused: AtomicU64::new(0),
            released: AtomicU64::new(0),
            other_holder: AtomicU64::new(0),
            not_held: AtomicU64::new(0),
            users: UserCounters::default(),
            in_flight: AtomicI64::new(0),
        }
    }
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Stats {
    /// `n` calls crossed into Rust.
    pub fn started(&self, n: usize) {
        self.in_flight.fetch_add(n as i64, Relaxed);
    }

    /// A call of `kind` settled with `outcome`, `latency` after it was made.
    pub fn settled(&self, kind: Kind, outcome: &Outcome, latency: Duration) {
        let k = kind as usize;
        self.in_flight.fetch_sub(1, Relaxed);
        add(&self.calls[k]);
        self.latency[k].record(latency);
        match (kind, outcome) {
            (_, Outcome::Failed(e)) => {
                add(&self.errors[k]);
                add(&self.codes[e.code as usize]);
            }
            (Kind::Get, Outcome::Text(Some(_))) => add(&self.hits),
            (Kind::Get, Outcome::Text(None)) => add(&self.misses),
            (Kind::Lock, Outcome::Bool(true)) => add(&self.locks_taken),
            (Kind::Lock, Outcome::Bool(false)) => add(&self.locks_refused),
            _ => {}
        }
    }

    /// A `get` answered from the read cache: a call that found a session,
    /// settled as it was made.
    pub fn served_from_memory(&self) {
        let k = Kind::Get as usize;
        add(&self.calls[k]);
        self.latency[k].record(Duration::ZERO);
        add(&self.hits);
    }

    /// A `get` counted as a hit whose text turned out not to be a JSON object
    /// (`ERR_CORRUPT_SESSION`, found when JavaScript parsed it): a failed
    /// call, as tracing reports it, not a hit.
    pub fn get_was_corrupt(&self) {
        let k = Kind::Get as usize;
        self.hits.fetch_sub(1, Relaxed);
        add(&self.errors[k]);
        add(&self.codes[Code::CorruptSession as usize]);
    }

    pub fn merge_step(&self, step: MergeStep) {
        let m = &self.merges;
        match step {
            MergeStep::Written { remembered, native } => {
                add(if remembered {
                    &m.remembered
                } else {
                    &m.read_then_swap
                });
                if native {
                    add(&m.native);
                }
            }
            MergeStep::Stale => add(&m.stale),
            MergeStep::Conflict => add(&m.conflicts),
            MergeStep::Script => add(&m.script),
            MergeStep::Missing => add(&m.missing),
        }
    }

    /// An unlock's compare-and-delete came back.
    pub fn released(&self, how: Release) {
        add(match how {
            Release::Released => &self.released,
            Release::OtherHolder => &self.other_holder,
        });
    }

    /// A write's session was added to its user's index.
    pub fn indexed(&self) {
        add(&self.users.indexed);
    }

    /// A `userSessions()` (`end`: `destroyUserSessions()`) settled: how
    /// many sessions it ended, or its error.
    pub fn user_call(&self, end: bool, result: std::result::Result<u32, Code>) {
        let u = &self.users;
        add(if end { &u.ends } else { &u.lists });
        match result {
            Ok(ended) => {
                u.ended.fetch_add(u64::from(ended), Relaxed);
            }
            Err(code) => {
                add(if end { &u.end_errors } else { &u.list_errors });
                add(&self.codes[code as usize]);
            }
        }
    }

    /// An unlock found no lock this store took: nothing was sent.
    pub fn not_held(&self) {
        add(&self.not_held);
    }

    /// Calls made and not yet settled.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed).max(0) as u64
    }
}

/// A counter's value, as JavaScript numbers are.
pub fn load(counter: &AtomicU64) -> f64 {
    counter.load(Relaxed) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::StoreError;

    #[test]
    fn buckets_grow_by_a_quarter_octave_and_hold_their_values() {
        for micros in [1u64, 2, 3, 5, 7, 9, 100, 999, 1000, 1500, 65_536, 3_000_000] {
            let i = bucket(micros);
            assert!(micros as f64 / 1000.0 < upper_ms(i), "{micros} in {i}");
            if i > 0 && micros >= 4 {
                assert!(micros as f64 / 1000.0 >= upper_ms(i - 1), "{micros} in {i}");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for i in 8..BUCKETS {
            let ratio = upper_ms(i) / upper_ms(i - 1);
            assert!((1.14..=1.26).contains(&ratio), "{i}: {ratio}");
        }
    }

    #[test]
    fn percentiles_come_from_the_buckets() {
        let s = Stats::default();
        s.started(100);
        for _ in 0..98 {
            s.settled(Kind::Get, &Outcome::Text(None), Duration::from_micros(300));
        }
        for _ in 0..2 {
            let e = Outcome::Failed(StoreError::closed());
            s.settled(Kind::Get, &e, Duration::from_millis(40));
        }
        let get = s.latency[Kind::Get as usize].summary();
        assert_eq!(get.count, 100.0);
        assert!(get.p50_ms > 0.3 && get.p50_ms < 0.36, "{}", get.p50_ms);
        assert!(get.p99_ms > 40.0 && get.p99_ms < 48.0, "{}", get.p99_ms);
        assert_eq!(load(&s.calls[Kind::Get as usize]), 100.0);
        assert_eq!(load(&s.errors[Kind::Get as usize]), 2.0);
        assert_eq!(load(&s.codes[Code::Closed as usize]), 2.0);
        assert_eq!(load(&s.misses), 98.0);
        assert_eq!(s.in_flight(), 0);
    }
}
