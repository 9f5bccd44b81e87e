#![deny(clippy::all)]
//! napi glue: the native class behind `store.js`. Arguments arrive checked by the
//! JS layer; session JSON crosses as strings. Each method is one async call on
//! the addon's own tokio runtime.

pub mod admin;
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
pub mod splicer;
pub mod stats;
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
        let now = Instant::now();
        let ops = ops::decode_batch(kinds, ids, ttls, counts, strings)?;
        let since = now.checked_sub(waited).unwrap_or(now);
        self.runner
            .start(&self.inner, batch, ops, now + (bound - waited), since);
        Ok(())
    }

    /// Where the store connects, credentials left out (for `util.inspect`).
    #[napi(getter)]
    pub fn target(&self) -> String {
        self.inner.description.clone()
    }

    /// `host:port` of the server the connection went to (on a cluster, the
    /// first seed node's); "" with Sentinel before the first connection.
    #[napi(getter)]
    pub fn address(&self) -> String {
        self.inner.conn.address().clone()
    }

    /// How long a call may take, in ms: `connectTimeout + commandTimeout`.
    #[napi(getter)]
    pub fn call_bound_ms(&self) -> f64 {
        self.inner.conn.call_bound().as_secs_f64() * 1000.0
    }

    /// The SHA1 of the merge, swap and unlock scripts, in that order.
    #[napi(getter)]
    pub fn script_shas(&self) -> Vec<String> {
        let s = self.inner.shas();
        [s.merge, s.swap, s.unlock].map(str::to_owned).to_vec()
    }

    /// The key prefix (for tracing).
    #[napi(getter)]
    pub fn prefix(&self) -> String {
        self.inner.keys.prefix().to_owned()
    }

    /// What lock keys put after the prefix: a session id may not start with
    /// it, or its key would be another session's lock key.
    #[napi(getter)]
    pub fn lock_prefix(&self) -> String {
        self.inner.keys.lock_prefix().to_owned()
    }

    /// `'connecting' | 'ready' | 'reconnecting' | 'closed'`.
    #[napi(
        getter,
        ts_return_type = "'connecting' | 'ready' | 'reconnecting' | 'closed'"
    )]
    pub fn status(&self) -> &'static str {
        self.inner.conn.status().as_str()
    }

    /// Counts since the store was created.
    #[napi]
    pub fn stats(&self) -> stats::StoreStats {
        self.inner.stats.snapshot()
    }

    /// Counts a `get` whose text was not a JSON object as failed
    /// (`ERR_CORRUPT_SESSION`) rather than as a hit: JavaScript parses the
    /// text, so only it finds out.
    #[napi]
    pub fn get_was_corrupt(&self) {
        self.inner.stats.get_was_corrupt();
    }

    /// One PING (every master of a cluster); resolves with the round trip in ms.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn ping<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, f64>> {
        self.admin(
            env,
            |store, deadline| async move { store.ping(deadline).await },
        )
    }

    /// The masters to walk: `host:port` each on a cluster, `[""]` otherwise.
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn masters<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Vec<String>>> {
        self.admin(env, |store, deadline| async move {
            store.masters(deadline).await
        })
    }

    /// One page of session ids under the prefix on `node` from `cursor`.
    #[napi(ts_return_type = "Promise<ScanPage>")]
    pub fn scan<'env>(
        &self,
        env: &'env Env,
        node: String,
        cursor: String,
        count: u32,
        want_ids: bool,
    ) -> Result<PromiseRaw<'env, admin::ScanPage>> {
        self.admin(env, move |store, deadline| async move {
            store.scan(&node, &cursor, count, want_ids, deadline).await
        })
    }

    /// Removes one page of keys under the prefix on `node` from `cursor`.
    #[napi(ts_return_type = "Promise<ScanPage>")]
    pub fn clear_page<'env>(
        &self,
        env: &'env Env,
        node: String,
        cursor: String,
        count: u32,
    ) -> Result<PromiseRaw<'env, admin::ScanPage>> {
        self.admin(env, move |store, deadline| async move {
            store.clear_page(&node, &cursor, count, deadline).await
        })
    }

    /// The commands the store sends for its compare-and-writes here.
    #[napi(ts_return_type = "Promise<FastPaths>")]
    pub fn fast_paths<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, admin::FastPaths>> {
        self.admin(env, |store, deadline| async move {
            store.fast_paths(deadline).await
        })
    }

    /// For the doctor: one command's reply as JSON text; `to` is "", "*"
    /// (every master) or a master's `host:port`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn query<'env>(
        &self,
        env: &'env Env,
        to: String,
        args: Vec<String>,
    ) -> Result<PromiseRaw<'env, String>> {
        self.admin(env, move |store, deadline| async move {
            store.query(&to, &args, deadline).await
        })
    }

    /// For the doctor: whether this user may run each command the store sends.
    #[napi(ts_return_type = "Promise<CommandAccess[]>")]
    pub fn command_access<'env>(
        &self,
        env: &'env Env,
    ) -> Result<PromiseRaw<'env, Vec<admin::CommandAccess>>> {
        self.admin(env, |store, deadline| async move {
            store.command_access(deadline).await
        })
    }

    /// Loads the scripts now (`preloadScript`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn preload<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        self.admin(env, |store, deadline| async move {
            store.load_scripts(deadline).await
        })
    }

    /// Runs a call that is not a session op (the admin calls, the doctor's
    /// questions, the preload) on the runtime, bounded like a session op.
    fn admin<'env, T, F>(
        &self,
        env: &'env Env,
        call: impl FnOnce(Arc<store::Store>, Instant) -> F,
    ) -> Result<PromiseRaw<'env, T>>
    where
        T: napi::bindgen_prelude::ToNapiValue + Send + 'static,
        F: std::future::Future<Output = errors::Result<T>> + Send + 'static,
    {
        let store = Arc::clone(&self.inner);
        let deadline = Instant::now() + store.conn.call_bound();
        let call = call(store, deadline);
        env.spawn_future(async move { Ok(call.await?) })
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
