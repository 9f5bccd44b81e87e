#![deny(clippy::all)]
//! napi glue: the native class behind `store.js`. Arguments arrive checked by the
//! JS layer; session JSON crosses as strings. Each method is one async call on
//! the addon's own tokio runtime.

pub mod batch;
pub mod connection;
pub mod errors;
pub mod keys;
pub mod lock;
pub mod ops;
pub mod options;
pub mod splice;
pub mod store;
pub mod texts;

use napi::bindgen_prelude::Result;
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

/// The outcome of a batch: a code per op (ops.rs: DONE, TRUE, FALSE, TEXT, NULL,
/// FAILED) and its text (TEXT) or error "<CODE>: <message>" (FAILED).
#[napi(object)]
pub struct BatchResult {
    pub codes: Vec<u32>,
    pub values: Vec<Option<String>>,
}

/// The native half of a store. Use `createRedisSessionStore` from the package
/// instead: it checks arguments and does the JSON work in V8.
#[napi]
pub struct NativeStore {
    inner: store::Store,
}

#[napi]
impl NativeStore {
    #[napi(constructor)]
    pub fn new(options: Option<StoreOptions>) -> Result<Self> {
        let config = Config::from_options(&options.unwrap_or_default())?;
        Ok(NativeStore {
            inner: store::Store::new(&config)?,
        })
    }

    /// Runs a batch of calls as one pipeline. Op i: `kinds[i]` (see ops.rs),
    /// `ids[i]`, `ttls[i]`; Set takes one string of `strings` (the JSON), Merge
    /// takes `counts[i]` (path, value JSON or "" to remove, …), in order.
    #[napi]
    pub async fn batch(
        &self,
        kinds: Vec<u32>,
        ids: Vec<String>,
        ttls: Vec<f64>,
        counts: Vec<u32>,
        strings: Vec<String>,
    ) -> Result<BatchResult> {
        let ops = ops::decode_batch(kinds, ids, ttls, counts, strings)?;
        let (codes, values) = ops::encode_outcomes(self.inner.run(&ops).await);
        Ok(BatchResult { codes, values })
    }

    /// Where the store connects, credentials left out (for `util.inspect`).
    #[napi(getter)]
    pub fn target(&self) -> String {
        self.inner.description.clone()
    }

    /// Loads the scripts now (`preloadScript`).
    #[napi]
    pub async fn preload(&self) -> Result<()> {
        Ok(self.inner.load_scripts().await?)
    }

    #[napi]
    pub async fn close(&self) -> Result<()> {
        self.inner.close().await;
        Ok(())
    }
}
