//! One multiplexed connection per store, opened lazily on the first call,
//! re-established on demand after a failure, bounded by the store's timeouts,
//! and closed gracefully: `close()` lets calls in flight finish first.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio::sync::Notify;

use crate::errors::{Result, StoreError};
use crate::options::Config;

/// Reconnection after a failure: a few quick attempts, so that calls fail fast
/// with `ERR_CONNECTION` while the server is down instead of queueing.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

enum State {
    /// No call has needed the connection yet.
    Idle,
    Ready(ConnectionManager),
    Closed,
}

pub struct Connection {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// Bound on a whole call: establishing the connection, then the answer.
    call_timeout: Duration,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Counts a call in flight for as long as it lives.
pub struct CallGuard<'a>(&'a Connection);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// rustls needs exactly one process-wide crypto provider.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another library in the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Connection {
    pub fn new(config: &Config) -> Self {
        install_crypto_provider();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        Connection {
            client: config.client.clone(),
            manager_config,
            call_timeout: config.connect_timeout + config.command_timeout,
            state: Mutex::new(State::Idle),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection for one call, counted in flight; `ERR_CLOSED` after `close()`.
    /// Must run inside the tokio runtime (the manager spawns its driver there).
    fn enter(&self) -> Result<(ConnectionManager, CallGuard<'_>)> {
        let mut state = self.state();
        let manager = match &*state {
            State::Ready(m) => m.clone(),
            State::Closed => return Err(StoreError::closed()),
            State::Idle => {
                let m = ConnectionManager::new_lazy_with_config(
                    self.client.clone(),
                    self.manager_config.clone(),
                )?;
                *state = State::Ready(m.clone());
                m
            }
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok((manager, CallGuard(self)))
    }

    /// Runs one call against Redis within the store's timeouts.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (manager, _guard) = self.enter()?;
        match tokio::time::timeout(self.call_timeout, call(manager)).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::timeout(self.call_timeout.as_millis() as u64)),
        }
    }

    /// Refuses new calls, waits for the calls in flight, then drops the connection.
    pub async fn close(&self) {
        let manager = std::mem::replace(&mut *self.state(), State::Closed);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        drop(manager);
    }
}
