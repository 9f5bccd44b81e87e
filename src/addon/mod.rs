//! The napi face: the class behind `store.js` ([`AddonStore`]), the
//! crossing of batches and outcomes ([`crossing`]), the options it takes
//! ([`options`]), the codes, limits and objects JavaScript reads ([`wire`],
//! [`stats`]) and the one conversion of errors ([`errors`]). Every `#[napi]`
//! item of the crate is here. Arguments arrive checked by `store.js`; session
//! JSON crosses as strings; each call runs on the addon's own tokio runtime.

pub mod crossing;
pub mod errors;
pub mod options;
pub mod stats;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{FnArgs, Function, PromiseRaw, Result};
use napi::{Env, JsString};
use napi_derive::napi;

use crate::errors as store_errors;
use crate::link::connection::install_crypto_provider;
use crate::store::Store;
use crossing::{decode_batch, Channel, Outcomes, Queue, Runner};
use errors::{napi_failure, promise};
use options::StoreOptions;
use wire::{CommandAccess, CompareCommands, ScanPage, Walk};

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
    install_crypto_provider();
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

/// The addon half of a store. Use `createRedisSessionStore` from the package
/// instead: it checks arguments and does the JSON work in V8.
///
/// Every call's future owns a share of the store (`Arc`), never a borrow of
/// this object: when a worker thread ends with calls in flight, its objects
/// are finalized at once, and the calls must not outlive what they use.
#[napi]
pub struct AddonStore {
    inner: Arc<Store>,
    runner: Runner,
}

#[napi]
impl AddonStore {
    /// `on_outcomes(batches, slots, codes, values)` receives outcomes as they
    /// settle: per op, its batch number, its place in the batch, its
    /// `OutcomeCode` (for a failure, `Failed` plus its `ErrorCode`'s number),
    /// and its text or error message.
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "options: StoreOptions | undefined | null, onOutcomes: (batches: number[], slots: number[], codes: number[], values: (string | null)[]) => void"
    )]
    pub fn new(
        options: Option<StoreOptions>,
        on_outcomes: Function<FnArgs<Outcomes>, ()>,
    ) -> Result<Self, String> {
        let config = options.unwrap_or_default().config()?;
        let queue = Arc::new(Queue::default());
        let drain = Arc::clone(&queue);
        let channel: Channel = on_outcomes
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |_| Ok(drain.drain()))
            .map_err(napi_failure)?;
        let inner = Arc::new(Store::new(config));
        let runner = Runner::new(&inner, queue, channel);
        Ok(AddonStore { inner, runner })
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
    ) -> Result<(), String> {
        let bound = self.inner.conn.call_bound();
        let waited = if waited_ms.is_finite() && waited_ms > 0.0 {
            Duration::from_secs_f64(waited_ms / 1000.0).min(bound)
        } else {
            Duration::ZERO
        };
        let now = Instant::now();
        let ops = decode_batch(kinds, ids, ttls, counts, strings)?;
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

    /// The SHA1 of the merge, compare-and-set and unlock scripts, in that order.
    #[napi(getter)]
    pub fn script_shas(&self) -> Vec<String> {
        let s = &self.inner.scripts;
        [s.merge(), s.compare_and_set(), s.unlock()]
            .map(str::to_owned)
            .to_vec()
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

    /// What users' index keys put after the prefix, when the store keeps
    /// them (`userIdPath`): a session id may not start with it, or its key
    /// would be a user's index key. Null without `userIdPath`.
    #[napi(getter)]
    pub fn user_prefix(&self) -> Option<String> {
        self.inner.keys.user_prefix().map(str::to_owned)
    }

    /// Whether this store keeps a read cache (`readCache`, and a topology
    /// that allows it): `get`s ask [`cached`](Self::cached) first.
    #[napi(getter)]
    pub fn read_cache(&self) -> bool {
        self.inner.conn.tracking.enabled()
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
        stats::snapshot(&self.inner)
    }

    /// The text a `get` of session `id` is answered with from memory (the
    /// read cache holds it and the server reports its changes), or null: the
    /// `get` goes to Redis. Counted as a `get` that found a session.
    #[napi(ts_return_type = "string | null")]
    pub fn cached<'env>(&self, env: &'env Env, id: String) -> Result<Option<JsString<'env>>> {
        let Some(text) = self.inner.cached(&id) else {
            return Ok(None);
        };
        // Texts come from JavaScript strings or are checked as UTF-8 when read.
        match std::str::from_utf8(&text) {
            Ok(text) => env.create_string(text).map(Some),
            Err(_) => Ok(None),
        }
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

    /// One page of a walk over the keys under the prefix on `node` from
    /// `cursor`: its session ids, their count, or its keys removed.
    #[napi(ts_return_type = "Promise<ScanPage>")]
    pub fn walk_page<'env>(
        &self,
        env: &'env Env,
        node: String,
        cursor: String,
        count: u32,
        walk: Walk,
    ) -> Result<PromiseRaw<'env, ScanPage>> {
        self.admin(env, move |store, deadline| async move {
            let page = match walk {
                Walk::Ids => store.scan(&node, &cursor, count, true, deadline).await?,
                Walk::Count => store.scan(&node, &cursor, count, false, deadline).await?,
                Walk::Clear => store.clear_page(&node, &cursor, count, deadline).await?,
            };
            Ok(page.into())
        })
    }

    /// The ids of the live sessions of user `user` (`userIdPath`).
    #[napi(ts_return_type = "Promise<string[]>")]
    pub fn user_sessions<'env>(
        &self,
        env: &'env Env,
        user: String,
    ) -> Result<PromiseRaw<'env, Vec<String>>> {
        self.admin(env, move |store, deadline| async move {
            store.user_sessions(&user, deadline).await
        })
    }

    /// Ends every live session of user `user` but `except`; resolves with
    /// how many it ended.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn end_user_sessions<'env>(
        &self,
        env: &'env Env,
        user: String,
        except: Option<String>,
    ) -> Result<PromiseRaw<'env, u32>> {
        self.admin(env, move |store, deadline| async move {
            store
                .end_user_sessions(&user, except.as_deref(), deadline)
                .await
        })
    }

    /// The commands the store sends for its compare-and-writes here.
    #[napi(ts_return_type = "Promise<CompareCommands>")]
    pub fn compare_commands<'env>(
        &self,
        env: &'env Env,
    ) -> Result<PromiseRaw<'env, CompareCommands>> {
        self.admin(env, |store, deadline| async move {
            Ok(store.capabilities(deadline).await?.into())
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
    ) -> Result<PromiseRaw<'env, Vec<CommandAccess>>> {
        self.admin(env, |store, deadline| async move {
            let access = store.command_access(deadline).await?;
            Ok(access.into_iter().map(CommandAccess::from).collect())
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
        call: impl FnOnce(Arc<Store>, Instant) -> F,
    ) -> Result<PromiseRaw<'env, T>>
    where
        T: napi::bindgen_prelude::ToNapiValue + Send + 'static,
        F: std::future::Future<Output = store_errors::Result<T>> + Send + 'static,
    {
        let store = Arc::clone(&self.inner);
        let deadline = Instant::now() + store.conn.call_bound();
        promise(env, call(store, deadline))
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
