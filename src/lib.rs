#![deny(clippy::all)]
//! napi glue: the native class behind `store.js`. Arguments arrive checked by the
//! JS layer; session JSON crosses as strings. Each method is one async call on
//! the addon's own tokio runtime.

pub mod connection;
pub mod errors;
pub mod keys;
pub mod lock;
pub mod options;
pub mod store;

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
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
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
#[napi]
pub struct NativeStore {
    inner: store::Store,
}

#[napi]
impl NativeStore {
    #[napi(constructor)]
    pub fn new(options: Option<StoreOptions>) -> Result<Self> {
        let config = Config::from_options(&options.unwrap_or_default())?;
        Ok(NativeStore { inner: store::Store::new(&config)? })
    }

    /// The stored session JSON text, or null.
    #[napi]
    pub async fn get(&self, session_id: String) -> Result<Option<String>> {
        Ok(self.inner.get(&session_id).await?)
    }

    #[napi]
    pub async fn set(&self, session_id: String, json: String, ttl_ms: f64) -> Result<()> {
        Ok(self.inner.set(&session_id, json, ttl_ms).await?)
    }

    #[napi]
    pub async fn delete(&self, session_id: String) -> Result<()> {
        Ok(self.inner.delete(&session_id).await?)
    }

    /// `pairs`: path, value JSON (empty string: remove), path, value, …
    /// Resolves whether the session existed.
    #[napi]
    pub async fn merge(&self, session_id: String, ttl_ms: f64, pairs: Vec<String>) -> Result<bool> {
        Ok(self.inner.merge(&session_id, ttl_ms, pairs).await?)
    }

    #[napi]
    pub async fn lock(&self, session_id: String, ttl_ms: f64) -> Result<bool> {
        Ok(self.inner.lock(&session_id, ttl_ms).await?)
    }

    #[napi]
    pub async fn unlock(&self, session_id: String) -> Result<()> {
        Ok(self.inner.unlock(&session_id).await?)
    }

    #[napi]
    pub async fn is_locked(&self, session_id: String) -> Result<bool> {
        Ok(self.inner.is_locked(&session_id).await?)
    }

    #[napi]
    pub async fn preload(&self) -> Result<()> {
        Ok(self.inner.preload().await?)
    }

    #[napi]
    pub async fn close(&self) -> Result<()> {
        self.inner.close().await;
        Ok(())
    }
}
