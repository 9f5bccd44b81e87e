//! The object `store.stats()` returns, read from the store's counters
//! (`store/stats.rs`). Its per-op and per-code fields are generated from the
//! lists of ops and of error codes; the field names are public and stay.

use napi_derive::napi;

use crate::errors::{for_each_code, Code};
use crate::store::ops::{for_each_op, Kind};
use crate::store::stats::{load, upper_ms, Summary, BUCKETS};
use crate::store::Store;

macro_rules! per_op_objects {
    ($($variant:ident $field:ident $code:literal,)*) => {
        /// A count per op.
        #[napi(object)]
        pub struct OpCounts {
            $(pub $field: f64,)*
        }

        impl OpCounts {
            fn of(f: impl Fn(Kind) -> f64) -> Self {
                OpCounts { $($field: f(Kind::$variant),)* }
            }
        }

        /// Latencies per op.
        #[napi(object)]
        pub struct OpLatencies {
            $(pub $field: Latency,)*
        }

        impl OpLatencies {
            fn of(f: impl Fn(Kind) -> Latency) -> Self {
                OpLatencies { $($field: f(Kind::$variant),)* }
            }
        }
    };
}
for_each_op!(per_op_objects);

macro_rules! per_code_object {
    ($($(#[$doc:meta])* $variant:ident $field:ident $name:literal,)*) => {
        /// Failed calls per error code.
        #[napi(object)]
        pub struct CodeCounts {
            $(#[napi(js_name = $name)] pub $field: f64,)*
        }

        impl CodeCounts {
            fn of(f: impl Fn(Code) -> f64) -> Self {
                CodeCounts { $($field: f(Code::$variant),)* }
            }
        }
    };
}
for_each_code!(per_code_object);

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

impl From<Summary> for Latency {
    fn from(s: Summary) -> Self {
        Latency {
            count: s.count,
            p50_ms: s.p50_ms,
            p99_ms: s.p99_ms,
            buckets: s.buckets,
        }
    }
}

/// The read cache (`readCache`): what it answered, and what the server
/// reported.
#[napi(object)]
pub struct ReadCacheCounts {
    /// Whether the server reports changes to the session keys:
    /// `'on'`; `'starting'` (the next call turns it on: at first, and after
    /// a connection was lost); `'refused'` (the server or its ACL refused
    /// `CLIENT TRACKING`: every `get` goes to Redis); `'evicting'` (the
    /// server has a `maxmemory` and a policy that evicts, or would not say:
    /// every `get` goes to Redis); `'crowded'` (the server's tracking table
    /// holds more than half its `tracking-table-max-keys`, or `INFO` is
    /// refused: every `get` goes to Redis); `'unsupported'` (Redis before
    /// 6.2, whose reports of a script's own writes can land inside a
    /// transaction's reply: every `get` goes to Redis); `'off'` (`readCache` not `true`,
    /// `rememberedTextBytes: 0`, a cluster, TLS or a Unix socket).
    #[napi(
        ts_type = "'on' | 'starting' | 'refused' | 'evicting' | 'crowded' | 'unsupported' | 'off'"
    )]
    pub tracking: String,
    /// `get`s answered from memory, with no round trip.
    pub hits: f64,
    /// `get`s that went to Redis while tracking was on.
    pub misses: f64,
    /// Session keys the server reported changed (by another store, an
    /// expiry, an eviction).
    pub invalidations: f64,
    /// Times every text was dropped: a flush of the database, a connection
    /// lost or replaced.
    pub flushes: f64,
    /// Texts held now (for `get`s and merges).
    pub texts: f64,
    /// Memory they take, as counted against `rememberedTextBytes`.
    pub bytes: f64,
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
    pub read_cache: ReadCacheCounts,
    pub users: UserCounts,
    /// Times the store was connected again after losing its connection (a
    /// restart, a failover).
    pub reconnects: f64,
    /// Times the sentinels announced another master (`+promoted-slave`,
    /// `+switch-master`) and the store moved to it at once (0 without
    /// Sentinel).
    pub switches: f64,
    /// Calls made and not yet settled.
    pub in_flight: f64,
    pub latency: OpLatencies,
    /// The upper bounds, in ms, of the latency buckets.
    pub latency_bounds_ms: Vec<f64>,
}

/// The users' indexes (`userIdPath`; all 0 without it).
#[napi(object)]
pub struct UserCounts {
    /// Writes whose session was added to (or renewed in) its user's index
    /// before it was written.
    pub indexed: f64,
    /// `userSessions()` calls, and how many of them failed.
    pub lists: f64,
    pub list_errors: f64,
    /// `destroyUserSessions()` calls, and how many of them failed.
    pub ends: f64,
    pub end_errors: f64,
    /// Sessions `destroyUserSessions()` ended.
    pub ended: f64,
}

/// What `store.stats()` returns now.
pub fn snapshot(store: &Store) -> StoreStats {
    let s = &store.stats;
    let m = &s.merges;
    StoreStats {
        calls: OpCounts::of(|k| load(&s.calls[k as usize])),
        errors: OpCounts::of(|k| load(&s.errors[k as usize])),
        error_codes: CodeCounts::of(|c| load(&s.codes[c as usize])),
        gets: GetCounts {
            hits: load(&s.hits),
            misses: load(&s.misses),
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
            taken: load(&s.locks_taken),
            refused: load(&s.locks_refused),
            released: load(&s.released),
            other_holder: load(&s.other_holder),
            not_held: load(&s.not_held),
        },
        read_cache: {
            let c = &store.texts.counts;
            ReadCacheCounts {
                tracking: if let Some(why) = store.conn.tracking.aside() {
                    why.to_owned()
                } else {
                    store.conn.tracking.state().as_str().to_owned()
                },
                hits: load(&c.hits),
                misses: load(&c.misses),
                invalidations: load(&c.invalidations),
                flushes: load(&c.flushes),
                texts: store.texts.count() as f64,
                bytes: store.texts.bytes() as f64,
            }
        },
        users: {
            let u = &s.users;
            UserCounts {
                indexed: load(&u.indexed),
                lists: load(&u.lists),
                list_errors: load(&u.list_errors),
                ends: load(&u.ends),
                end_errors: load(&u.end_errors),
                ended: load(&u.ended),
            }
        },
        reconnects: store.conn.reconnects() as f64,
        switches: store.conn.switches() as f64,
        in_flight: s.in_flight() as f64,
        latency: OpLatencies::of(|k| s.latency[k as usize].summary().into()),
        latency_bounds_ms: (0..BUCKETS).map(upper_ms).collect(),
    }
}
