//! Store options: the `#[napi(object)]` the constructor takes (its `///` docs
//! become `index.d.ts`) and their checked form, [`Config`].

use std::time::Duration;

use napi_derive::napi;

use crate::errors::{Result, StoreError};
use crate::keys::Keys;

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_PREFIX: &str = "sess:";
pub const DEFAULT_LOCK_PREFIX: &str = "lock:";
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 1000;
/// Upper bound for both timeouts: one hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Options of `createRedisSessionStore`.
#[napi(object)]
#[derive(Default, Clone)]
pub struct StoreOptions {
    /// `redis://[[user]:password@]host[:port][/db]` or `rediss://…` for TLS.
    /// Default `redis://127.0.0.1:6379`.
    pub url: Option<String>,
    /// Session keys are `<prefix><sessionId>`. Default `'sess:'`.
    pub prefix: Option<String>,
    /// Lock keys are `<prefix><lockPrefix><sessionId>`. Default `'lock:'`; must not be empty.
    pub lock_prefix: Option<String>,
    /// Load the scripts when the store is created instead of on the first
    /// `merge()`. A failed preload is retried by the first merge. Default
    /// `false`. (Read by store.js, which asks for the preload.)
    pub preload_script: Option<bool>,
    /// How long to wait for a connection to be established, in ms. Default 1000.
    pub connect_timeout: Option<f64>,
    /// How long any call may wait for Redis's answer, in ms; the call then
    /// rejects with `ERR_TIMEOUT`. Default 1000.
    pub command_timeout: Option<f64>,
}

/// Checked options.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    /// The client for `url`, parsed once here.
    pub client: redis::Client,
    pub keys: Keys,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl Config {
    pub fn from_options(o: &StoreOptions) -> Result<Config> {
        let url = o.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
        let client = parse_url(&url)?;
        let prefix = o.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
        let lock_prefix = o.lock_prefix.as_deref().unwrap_or(DEFAULT_LOCK_PREFIX);
        if lock_prefix.is_empty() {
            return Err(StoreError::invalid_arg(
                "options.lockPrefix must not be empty: lock keys would equal session keys",
            ));
        }
        Ok(Config {
            url,
            client,
            keys: Keys::new(prefix, lock_prefix),
            connect_timeout: timeout(
                "connectTimeout",
                o.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT_MS,
            )?,
            command_timeout: timeout(
                "commandTimeout",
                o.command_timeout,
                DEFAULT_COMMAND_TIMEOUT_MS,
            )?,
        })
    }
}

fn timeout(name: &str, value: Option<f64>, default_ms: u64) -> Result<Duration> {
    let Some(ms) = value else {
        return Ok(Duration::from_millis(default_ms));
    };
    if !ms.is_finite() || ms <= 0.0 || ms > MAX_TIMEOUT_MS as f64 {
        return Err(StoreError::invalid_arg(format!(
            "options.{name} must be a number of ms greater than 0 and at most {MAX_TIMEOUT_MS}, got {ms}"
        )));
    }
    Ok(Duration::from_millis(ms.ceil() as u64))
}

fn parse_url(url: &str) -> Result<redis::Client> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(StoreError::invalid_arg(format!(
            "options.url must start with redis:// or rediss://, got {}",
            redact_url(url)
        )));
    }
    redis::Client::open(url).map_err(|e| {
        StoreError::invalid_arg(format!(
            "options.url {} is not a valid Redis URL: {}",
            redact_url(url),
            e.detail().unwrap_or(e.category())
        ))
    })
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "(not a URL)".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_owned()
    };
    format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_options(&StoreOptions::default()).unwrap();
        assert_eq!(c.url, DEFAULT_URL);
        assert_eq!(c.keys.session("x"), "sess:x");
        assert_eq!(c.keys.lock("x"), "sess:lock:x");
        assert_eq!(c.connect_timeout, Duration::from_millis(1000));
        assert_eq!(c.command_timeout, Duration::from_millis(1000));
    }

    #[test]
    fn timeouts_round_up_and_reject_nonsense() {
        let o = StoreOptions {
            command_timeout: Some(2.5),
            ..Default::default()
        };
        assert_eq!(
            Config::from_options(&o).unwrap().command_timeout,
            Duration::from_millis(3)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            let o = StoreOptions {
                connect_timeout: Some(bad),
                ..Default::default()
            };
            let e = Config::from_options(&o).unwrap_err();
            assert!(
                e.message.contains("options.connectTimeout"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn url_must_be_redis_and_errors_never_show_the_password() {
        for bad in [
            "http://u:hunter2@h",
            "redis://u:hunter2@h:notaport",
            "hunter2",
        ] {
            let o = StoreOptions {
                url: Some(bad.into()),
                ..Default::default()
            };
            let e = Config::from_options(&o).unwrap_err();
            assert!(e.message.starts_with("options.url"), "{}", e.message);
            assert!(!e.message.contains("hunter2"), "{}", e.message);
        }
        for good in [
            "redis://h:1/2",
            "rediss://u:p@h",
            "redis://:p@127.0.0.1:6380/0",
        ] {
            let o = StoreOptions {
                url: Some(good.into()),
                ..Default::default()
            };
            assert!(Config::from_options(&o).is_ok(), "{good}");
        }
    }

    #[test]
    fn empty_lock_prefix_is_refused() {
        let o = StoreOptions {
            lock_prefix: Some(String::new()),
            ..Default::default()
        };
        assert!(Config::from_options(&o)
            .unwrap_err()
            .message
            .contains("lockPrefix"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://u:p@ss@h"), "redis://u:***@h");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("secret"), "(not a URL)");
    }
}
