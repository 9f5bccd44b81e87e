//! Errors with a stable code. The codes are listed once, in
//! [`for_each_code!`]: the [`Code`] enum here, the `ErrorCode` enum
//! JavaScript reads (`addon/wire.rs`, generated into `index.d.ts`) and the
//! per-code counts of `stats()` come from that list. An error crosses into
//! JavaScript with its code apart from its message (`addon/errors.rs`).

use std::fmt;

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The stable codes a caller may branch on, listed once: `$callback!` gets
/// each code's doc, variant, field name in `stats().errorCodes` and string.
/// A new code is added here (and where it is raised); the rest follows.
macro_rules! for_each_code {
    ($callback:ident) => {
        $callback! {
            /// An argument or option is missing, of the wrong type or out of range.
            InvalidArg invalid_arg "ERR_INVALID_ARG",
            /// The server could not be reached, or the connection broke.
            Connection connection "ERR_CONNECTION",
            /// The server did not answer in time.
            Timeout timeout "ERR_TIMEOUT",
            /// The stored session is not a JSON object.
            CorruptSession corrupt_session "ERR_CORRUPT_SESSION",
            /// The store was closed.
            Closed closed "ERR_CLOSED",
            /// The server refused the credentials.
            Auth auth "ERR_AUTH",
            /// Any other error reply from the server.
            Redis redis "ERR_REDIS",
        }
    };
}
pub(crate) use for_each_code;

macro_rules! define_code {
    ($($(#[$doc:meta])* $variant:ident $field:ident $name:literal,)*) => {
        /// The stable codes a caller may branch on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            pub const ALL: [Code; [$($name),*].len()] = [$(Code::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }
    };
}
for_each_code!(define_code);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub code: Code,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArg, message)
    }

    pub fn closed() -> Self {
        Self::new(Code::Closed, "the store is closed")
    }

    /// A call that ran out of its bound of `ms` (connectTimeout + commandTimeout).
    pub fn timeout(ms: u64) -> Self {
        Self::new(
            Code::Timeout,
            format!("no answer from Redis within the call's bound of {ms} ms"),
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for StoreError {}

/// Error replies of a server state that passes: a restart loading its data,
/// a script past its time limit, a replica cut off from its master, a slot
/// moving or a cluster without a majority. The call may succeed later.
pub const PASSING_STATES: [&str; 5] = ["LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"];

/// Error replies the merge script raises itself: `<CODE> <detail>`.
const SCRIPT_CODES: [Code; 2] = [Code::CorruptSession, Code::InvalidArg];

impl StoreError {
    /// What Redis (or the link) said, with the code a caller should act on.
    /// `cluster`: the link is a Redis Cluster client, which follows
    /// redirections itself, so one left over means the slot's master is
    /// moving or down; from a single server, a redirection means the server
    /// is a cluster node and the key lives on another: a setting to change.
    pub fn from_redis(e: RedisError, cluster: bool) -> Self {
        if let Some(code) = e.code() {
            if let Some(c) = SCRIPT_CODES.iter().find(|c| c.as_str() == code) {
                return StoreError::new(*c, e.detail().unwrap_or_default());
            }
        }
        if e.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            return StoreError::new(
                Code::Connection,
                "the sentinels name no reachable master (a failover in progress, or an unknown masterName)",
            );
        }
        match e.code() {
            Some("MOVED" | "ASK") if cluster => {
                return StoreError::new(
                    Code::Connection,
                    format!("the cluster could not reach the master of the key: {}", redis_words(&e)),
                )
            }
            Some("MOVED" | "ASK") => {
                return StoreError::new(
                    Code::Redis,
                    format!(
                        "the server is a Redis Cluster node and the key is served by another: connect with the cluster option (Redis replied: {})",
                        redis_words(&e)
                    ),
                )
            }
            Some(state) if PASSING_STATES.contains(&state) => {
                return StoreError::new(
                    Code::Connection,
                    format!(
                        "Redis cannot serve the call for now ({state}): {}",
                        redis_words(&e)
                    ),
                )
            }
            _ => {}
        }
        let code = if e.is_timeout() {
            Code::Timeout
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            Code::Connection
        } else {
            match e.kind() {
                ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
                    Code::Auth
                }
                _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS")) => Code::Auth,
                _ => Code::Redis,
            }
        };
        let message = match code {
            Code::Timeout => "Redis did not answer within commandTimeout".to_string(),
            Code::Connection => format!("cannot reach Redis: {}", redis_words(&e)),
            _ => format!("Redis replied: {}", redis_words(&e)),
        };
        StoreError::new(code, message)
    }

    /// An error reply (a value in a pipeline's replies).
    pub fn from_reply(e: &redis::ServerError, cluster: bool) -> Self {
        Self::from_redis(RedisError::from(e.clone()), cluster)
    }
}

/// The most of an error's text a message quotes.
const MAX_QUOTED: usize = 300;

/// What Redis (or the connection) said, for a message. Redis echoes the start
/// of a command's arguments in some replies ("unknown command 'EVALSHA', with
/// args beginning with: …"): keys hold session ids, arguments hold session
/// data and lock tokens, so that part is cut off, and the rest is capped.
fn redis_words(e: &RedisError) -> String {
    let text = e.to_string();
    let mut words = match text.find(", with args beginning with") {
        Some(at) => format!("{} (arguments not shown)", &text[..at]),
        None => text,
    };
    if words.len() > MAX_QUOTED {
        let mut cut = MAX_QUOTED;
        while !words.is_char_boundary(cut) {
            cut -= 1;
        }
        words.truncate(cut);
        words.push('…');
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_each_code_at_its_index() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn display_carries_the_code_first() {
        let e = StoreError::invalid_arg("sessionId must be a non-empty string");
        assert_eq!(
            e.to_string(),
            "ERR_INVALID_ARG: sessionId must be a non-empty string"
        );
    }

    #[test]
    fn script_error_replies_keep_their_code() {
        let e = redis::make_extension_error(
            "ERR_CORRUPT_SESSION".into(),
            Some("stored session is not a JSON object: bad escape at byte 3".into()),
        );
        let s = StoreError::from_redis(e, false);
        assert_eq!(s.code, Code::CorruptSession);
        assert_eq!(
            s.message,
            "stored session is not a JSON object: bad escape at byte 3"
        );
    }

    #[test]
    fn io_errors_are_connection_errors() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let s = StoreError::from_redis(RedisError::from(io), false);
        assert_eq!(s.code, Code::Connection);
    }

    #[test]
    fn redirections_left_over_are_connection_errors() {
        let e = redis::make_extension_error("MOVED".into(), Some("12111 127.0.0.1:7002".into()));
        assert_eq!(StoreError::from_redis(e, true).code, Code::Connection);
    }

    #[test]
    fn redirections_from_a_single_server_ask_for_the_cluster_option() {
        for code in ["MOVED", "ASK"] {
            let e = redis::make_extension_error(code.into(), Some("12111 127.0.0.1:7002".into()));
            let s = StoreError::from_redis(e, false);
            assert_eq!(s.code, Code::Redis);
            assert!(s.message.contains("cluster option"), "{}", s.message);
        }
    }

    #[test]
    fn passing_server_states_are_connection_errors() {
        for code in ["LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"] {
            let e = redis::make_extension_error(code.into(), Some("try later".into()));
            for cluster in [false, true] {
                let s = StoreError::from_redis(e.clone(), cluster);
                assert_eq!(s.code, Code::Connection, "{code}");
                assert!(
                    !s.message.contains("the cluster could not"),
                    "{}",
                    s.message
                );
            }
        }
    }

    #[test]
    fn echoed_arguments_are_not_quoted() {
        let e = redis::make_extension_error(
            "ERR".into(),
            Some("unknown command 'EVALSHA', with args beginning with: 'abc' '1' 'sess:SECRETID' '{\"data\":1}'".into()),
        );
        let s = StoreError::from_redis(e, false);
        assert_eq!(s.code, Code::Redis);
        assert!(
            s.message.contains("unknown command 'EVALSHA'"),
            "{}",
            s.message
        );
        assert!(
            !s.message.contains("SECRETID") && !s.message.contains("data"),
            "{}",
            s.message
        );
        let long = redis::make_extension_error("ERR".into(), Some("é".repeat(400)));
        assert!(StoreError::from_redis(long, false).message.len() < MAX_QUOTED + 40);
    }

    #[test]
    fn timeouts_are_timeouts() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let s = StoreError::from_redis(RedisError::from(io), false);
        assert_eq!(s.code, Code::Timeout);
    }
}
