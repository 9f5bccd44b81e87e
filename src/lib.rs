#![deny(clippy::all)]
//! napi glue: the native class behind `store.js`. Arguments arrive checked by the
//! JS layer; session JSON crosses as strings. Each method is one async call on
//! the addon's own tokio runtime.

pub mod batch;
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

use std::sync::Arc;
use std::time::Instant;

use napi::bindgen_prelude::{PromiseRaw, Result};
use napi::Env;
use napi_derive::napi;

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

/// One delivery of a batch's outcomes: an `OutcomeCode` per op (`Pending`
/// where this delivery has none), its text (`Text`) or error "<CODE>: <message>"
/// (`Failed`); `more` is the ticket for `next()` while some ops still run.
#[napi(object)]
pub struct BatchResult {
    pub codes: Vec<u32>,
    pub values: Vec<Option<String>>,
    pub more: Option<u32>,
}

impl From<delivery::Delivered> for BatchResult {
    fn from(d: delivery::Delivered) -> Self {
        BatchResult {
            codes: d.codes,
            values: d.values,
            more: d.ticket,
        }
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
}

#[napi]
impl NativeStore {
    #[napi(constructor, catch_unwind)]
    pub fn new(options: Option<StoreOptions>) -> Result<Self> {
        let config = Config::from_options(&options.unwrap_or_default())?;
        Ok(NativeStore {
            inner: Arc::new(store::Store::new(&config)?),
        })
    }

    /// Runs a batch of calls, one pipeline per round. Op i: `kinds[i]`
    /// (`OpKind`), `ids[i]`, `ttls[i]`; Set takes one string of `strings` (the
    /// JSON), Merge takes `counts[i]` (path, value JSON or "" to remove, …), in
    /// order. Resolves with the first outcomes; `next(more)` gives the rest.
    /// Every op settles within the call's bound from now.
    #[napi(ts_return_type = "Promise<BatchResult>")]
    pub fn batch<'env>(
        &self,
        env: &'env Env,
        kinds: Vec<u32>,
        ids: Vec<String>,
        ttls: Vec<f64>,
        counts: Vec<u32>,
        strings: Vec<String>,
    ) -> Result<PromiseRaw<'env, BatchResult>> {
        let deadline = Instant::now() + self.inner.conn.call_bound();
        let ops = ops::decode_batch(kinds, ids, ttls, counts, strings)?;
        let running = delivery::start(&self.inner, ops, deadline);
        let store = Arc::clone(&self.inner);
        env.spawn_future(async move { Ok(store.deliveries.deliver(running).await.into()) })
    }

    /// The next outcomes of a batch whose last delivery had `more`.
    #[napi(ts_return_type = "Promise<BatchResult>")]
    pub fn next<'env>(&self, env: &'env Env, ticket: u32) -> Result<PromiseRaw<'env, BatchResult>> {
        let running = self.inner.deliveries.take(ticket).ok_or_else(|| {
            errors::StoreError::invalid_arg(format!("no batch is waiting under ticket {ticket}"))
        })?;
        let store = Arc::clone(&self.inner);
        env.spawn_future(async move { Ok(store.deliveries.deliver(running).await.into()) })
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
