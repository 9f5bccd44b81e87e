#![deny(clippy::all)]
//! napi glue: the native class behind `store.js`. Arguments arrive checked by the
//! JS layer; session JSON crosses as strings. Each method is one async call on
//! the addon's own tokio runtime.

pub mod batch;
pub mod capabilities;
pub mod connection;
pub mod delivery;
pub mod errors;
pub mod keys;
pub mod limits;
pub mod lock;
pub mod ops;
pub mod options;
pub mod splice;
pub mod store;
pub mod texts;
pub mod topology;

use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{FnArgs, Function, PromiseRaw, Result};
use napi::Env;
use napi_derive::napi;

use crate::delivery::Settled;
use crate::options::{Config, StoreOptions};

/// Worker threads of the addon's runtime, shared by every store of the process.
/// `RELAY_SESSION_REDIS_THREADS` overrides the default: one worker per two
/// cores, at most two, since many Node processes often share a machine.
fn worker_threads() -> usize {
    if let Some(n) = std::env::var("RELAY_SESSION_REDIS_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
    {
        return n;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / 2).clamp(1, 2)
}

#[napi_derive::module_init]
fn init() {
    connection::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .max_blocking_threads(2)
        .thread_name("relay-session-redis")
        .enable_all()
        .build();
    // If the runtime cannot be built, napi falls back to its default one.
    if let Ok(runtime) = runtime {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}

/// The native half of a store. Use `createRedisSessionStore` from the package
/// instead: it checks arguments and does the JSON work in V8.
///
/// Every call's future owns a share of the store (`Arc`), never a borrow of
/// this object: when a worker thread ends with calls in flight, its objects
/// are finalized at once, and the calls must not outlive what they use.
#[napi]
pub struct NativeStore {
    inner: Arc<store::Store>,
    runner: delivery::Runner,
}

#[napi]
impl NativeStore {
    /// `on_outcomes(batches, slots, codes, values)` receives outcomes as they
    /// settle: per op, its batch number, its place in the batch, its
    /// `OutcomeCode`, and its text or error "<CODE>: <message>".
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "options: StoreOptions | undefined | null, onOutcomes: (batches: number[], slots: number[], codes: number[], values: (string | null)[]) => void"
    )]
    pub fn new(
        options: Option<StoreOptions>,
        on_outcomes: Function<FnArgs<Settled>, ()>,
    ) -> Result<Self> {
        let config = Config::from_options(&options.unwrap_or_default())?;
        let queue = Arc::new(delivery::Queue::default());
        let drain = Arc::clone(&queue);
        let channel: delivery::Channel = on_outcomes
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_| Ok(FnArgs::from(drain.drain())))?;
        let inner = Arc::new(store::Store::new(config, queue, channel));
        let runner = delivery::Runner::new(&inner);
        Ok(NativeStore { inner, runner })
    }

    /// Starts batch number `batch`, one pipeline per round; its outcomes come
    /// through `on_outcomes`, each within the call's bound of its first call,
    /// made `waited_ms` ago. Op i:
    /// `kinds[i]` (`OpKind`), `ids[i]`, `ttls[i]`; Set takes one string of
    /// `strings` (the JSON), Merge takes `counts[i]` (path, value JSON or ""
    /// to remove, …), in order.
    // Flat arrays and scalars are what a crossing converts cheapest.
    #[allow(clippy::too_many_arguments)]
    #[napi]
    pub fn batch(
        &self,
        batch: u32,
        kinds: Vec<u32>,
        ids: Vec<String>,
        ttls: Vec<f64>,
        counts: Vec<u32>,
        strings: Vec<String>,
        waited_ms: f64,
    ) -> Result<()> {
        let bound = self.inner.conn.call_bound();
        let waited = if waited_ms.is_finite() && waited_ms > 0.0 {
            Duration::from_secs_f64(waited_ms / 1000.0).min(bound)
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + (bound - waited);
        let ops = ops::decode_batch(kinds, ids, ttls, counts, strings)?;
        self.runner.start(&self.inner, batch, ops, deadline);
        Ok(())
    }

    /// Where the store connects, credentials left out (for `util.inspect`).
    #[napi(getter)]
    pub fn target(&self) -> String {
        self.inner.description.clone()
    }

    /// Loads the scripts now (`preloadScript`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn preload<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let store = Arc::clone(&self.inner);
        let deadline = Instant::now() + store.conn.call_bound();
        env.spawn_future(async move { Ok(store.load_scripts(deadline).await?) })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let store = Arc::clone(&self.inner);
        env.spawn_future(async move {
            store.close().await;
            Ok(())
        })
    }
}
