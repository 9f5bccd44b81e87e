//! What a store has done since it was created, for `store.stats()`: counters
//! kept with relaxed atomics (each settled call adds to a few of them, on the
//! runtime's thread that settled it) and a fixed-bucket latency histogram per
//! op. Reading them takes a snapshot; nothing here locks or allocates on a
//! call's path.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use napi_derive::napi;

use crate::errors::Code;
use crate::ops::{Kind, Outcome};

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
fn upper_ms(i: usize) -> f64 {
    let (octave, sub) = (i as u32 / SUB_BUCKETS, i as u32 % SUB_BUCKETS);
    let micros = f64::from(1u32 << octave.min(31)) * f64::from(SUB_BUCKETS + sub + 1)
        / f64::from(SUB_BUCKETS);
    micros / 1000.0
}

/// Latencies of one op.
struct Histogram {
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

    fn snapshot(&self) -> Latency {
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
        Latency {
            count: total as f64,
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            buckets: counts.into_iter().map(|n| n as f64).collect(),
        }
    }
}

/// How merges went (see the README's "Stats").
#[derive(Default)]
struct MergeCounters {
    remembered: AtomicU64,
    read_then_swap: AtomicU64,
    native: AtomicU64,
    stale: AtomicU64,
    conflicts: AtomicU64,
    script: AtomicU64,
    missing: AtomicU64,
}

/// A step a merge took, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStep {
    /// A compare-and-set succeeded; `remembered`: from the text this store
    /// had, without reading; `native`: by the server's own command.
    Swapped { remembered: bool, native: bool },
    /// The text this store remembered was out of date: it reads.
    Stale,
    /// Another writer changed the text between the read and the write.
    Conflict,
    /// The server-side script applied the paths.
    Script,
    /// No session to merge into.
    Missing,
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
pub struct Stats {
    calls: [AtomicU64; Kind::ALL.len()],
    errors: [AtomicU64; Kind::ALL.len()],
    codes: [AtomicU64; Code::ALL.len()],
    latency: [Histogram; Kind::ALL.len()],
    hits: AtomicU64,
    misses: AtomicU64,
    merges: MergeCounters,
    locks_taken: AtomicU64,
    locks_refused: AtomicU64,
    released: AtomicU64,
    other_holder: AtomicU64,
    not_held: AtomicU64,
    reconnects: AtomicU64,
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
            reconnects: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }
}

/// One of `$ty` (a struct with a field per op), each field `$f(kind)`.
macro_rules! per_op {
    ($ty:ident, $f:expr) => {{
        let f = $f;
        $ty {
            get: f(Kind::Get),
            set: f(Kind::Set),
            delete: f(Kind::Delete),
            merge: f(Kind::Merge),
            lock: f(Kind::Lock),
            unlock: f(Kind::Unlock),
            is_locked: f(Kind::IsLocked),
            touch: f(Kind::Touch),
        }
    }};
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

    /// A `get` counted as a hit whose text turned out not to be a JSON object
    /// (`ERR_CORRUPT_SESSION`, found when JavaScript parsed it): a failed
    /// call, as tracing reports it, not a hit.
    pub fn get_was_corrupt(&self) {
        let k = Kind::Get as usize;
        self.hits.fetch_sub(1, Relaxed);
        add(&self.errors[k]);
        add(&self.codes[crate::errors::Code::CorruptSession as usize]);
    }

    pub fn merge_step(&self, step: MergeStep) {
        let m = &self.merges;
        match step {
            MergeStep::Swapped { remembered, native } => {
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

    /// An unlock found no lock this store took: nothing was sent.
    pub fn not_held(&self) {
        add(&self.not_held);
    }

    /// The store is connected again after its connection was lost.
    pub fn reconnected(&self) {
        add(&self.reconnects);
    }

    pub fn snapshot(&self) -> StoreStats {
        let load = |a: &AtomicU64| a.load(Relaxed) as f64;
        let c = |code: Code| load(&self.codes[code as usize]);
        let m = &self.merges;
        StoreStats {
            calls: per_op!(OpCounts, |k: Kind| load(&self.calls[k as usize])),
            errors: per_op!(OpCounts, |k: Kind| load(&self.errors[k as usize])),
            error_codes: CodeCounts {
                invalid_arg: c(Code::InvalidArg),
                connection: c(Code::Connection),
                timeout: c(Code::Timeout),
                corrupt_session: c(Code::CorruptSession),
                closed: c(Code::Closed),
                auth: c(Code::Auth),
                redis: c(Code::Redis),
            },
            gets: GetCounts {
                hits: load(&self.hits),
                misses: load(&self.misses),
            },
            merges: MergeCounts {
                remembered: load(&m.remembered),
                read_then_swap: load(&m.read_then_swap),
                native: load(&m.native),
                stale: load(&m.stale),
                conflicts: load(&m.conflicts),
                script: load(&m.script),
                missing: load(&m.missing),
            },
            locks: LockCounts {
                taken: load(&self.locks_taken),
                refused: load(&self.locks_refused),
                released: load(&self.released),
                other_holder: load(&self.other_holder),
                not_held: load(&self.not_held),
            },
            reconnects: load(&self.reconnects),
            in_flight: self.in_flight.load(Relaxed).max(0) as f64,
            latency: per_op!(OpLatencies, |k: Kind| self.latency[k as usize].snapshot()),
            latency_bounds_ms: (0..BUCKETS).map(upper_ms).collect(),
        }
    }
}

/// A count per op.
#[napi(object)]
pub struct OpCounts {
    pub get: f64,
    pub set: f64,
    pub delete: f64,
    pub merge: f64,
    pub lock: f64,
    pub unlock: f64,
    pub is_locked: f64,
    pub touch: f64,
}

/// Failed calls per error code.
#[napi(object)]
pub struct CodeCounts {
    #[napi(js_name = "ERR_INVALID_ARG")]
    pub invalid_arg: f64,
    #[napi(js_name = "ERR_CONNECTION")]
    pub connection: f64,
    #[napi(js_name = "ERR_TIMEOUT")]
    pub timeout: f64,
    #[napi(js_name = "ERR_CORRUPT_SESSION")]
    pub corrupt_session: f64,
    #[napi(js_name = "ERR_CLOSED")]
    pub closed: f64,
    #[napi(js_name = "ERR_AUTH")]
    pub auth: f64,
    #[napi(js_name = "ERR_REDIS")]
    pub redis: f64,
}

/// `get` calls that found a session, and that found none.
#[napi(object)]
pub struct GetCounts {
    pub hits: f64,
    pub misses: f64,
}

/// Merges by the way they went.
#[napi(object)]
pub struct MergeCounts {
    /// Written by one compare-and-set from the text this store last read or
    /// wrote, without reading it.
    pub remembered: f64,
    /// Read, spliced here, then written by compare-and-set.
    pub read_then_swap: f64,
    /// Of those two, written by the server's own command (`SET … IFDEQ` on
    /// Redis 8.4+, `SET … IFEQ` on Valkey 8.1+) rather than `lua/swap.lua`.
    pub native: f64,
    /// The remembered text was out of date, so the merge read.
    pub stale: f64,
    /// Compare-and-sets that found the text changed by another writer; each
    /// is retried.
    pub conflicts: f64,
    /// Applied by the server-side script (`lua/merge.lua`), after a conflict.
    pub script: f64,
    /// Found no session: nothing to merge into.
    pub missing: f64,
}

/// Locks taken and released.
#[napi(object)]
pub struct LockCounts {
    /// `lock()` calls that took the lock.
    pub taken: f64,
    /// `lock()` calls that found it held.
    pub refused: f64,
    /// `unlock()` calls that deleted this store's lock.
    pub released: f64,
    /// `unlock()` calls that found the lock held by another holder, or expired.
    pub other_holder: f64,
    /// `unlock()` calls for a lock this store did not take: nothing sent.
    pub not_held: f64,
}

/// Latencies of one op: from the call to its settling, in a fixed-bucket
/// histogram (`buckets[i]` counts calls faster than `latencyBoundsMs[i]`
/// and not faster than the bound before it).
#[napi(object)]
pub struct Latency {
    pub count: f64,
    /// The bound of the bucket holding the median call.
    pub p50_ms: f64,
    /// The bound of the bucket holding the 99th percentile.
    pub p99_ms: f64,
    pub buckets: Vec<f64>,
}

#[napi(object)]
pub struct OpLatencies {
    pub get: Latency,
    pub set: Latency,
    pub delete: Latency,
    pub merge: Latency,
    pub lock: Latency,
    pub unlock: Latency,
    pub is_locked: Latency,
    pub touch: Latency,
}

/// What `store.stats()` returns: counts since the store was created.
#[napi(object)]
pub struct StoreStats {
    /// Calls settled, per op (calls refused by the argument checks before
    /// anything was sent are not counted).
    pub calls: OpCounts,
    /// Of those, the ones that failed.
    pub errors: OpCounts,
    /// Failed calls per error code.
    pub error_codes: CodeCounts,
    pub gets: GetCounts,
    pub merges: MergeCounts,
    pub locks: LockCounts,
    /// Times the store was connected again after losing its connection (a
    /// restart, a failover).
    pub reconnects: f64,
    /// Calls made and not yet settled.
    pub in_flight: f64,
    pub latency: OpLatencies,
    /// The upper bounds, in ms, of the latency buckets.
    pub latency_bounds_ms: Vec<f64>,
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
        let snap = s.snapshot();
        let get = &snap.latency.get;
        assert_eq!(get.count, 100.0);
        assert!(get.p50_ms > 0.3 && get.p50_ms < 0.36, "{}", get.p50_ms);
        assert!(get.p99_ms > 40.0 && get.p99_ms < 48.0, "{}", get.p99_ms);
        assert_eq!(snap.calls.get, 100.0);
        assert_eq!(snap.errors.get, 2.0);
        assert_eq!(snap.error_codes.closed, 2.0);
        assert_eq!(snap.gets.misses, 98.0);
        assert_eq!(snap.in_flight, 0.0);
    }
}
