//! What crosses between `store.js` and Rust besides the batches: the codes
//! (ops, outcomes, errors) and limits JavaScript reads, generated from their
//! one definition in Rust, and the objects the admin calls resolve with.
//! Their `///` docs become `index.d.ts`.

use napi_derive::napi;

use crate::errors::{for_each_code, Code};
use crate::limits;
use crate::link::capabilities::{Capabilities, CompareAndDeleteBy, CompareAndSetBy};
use crate::link::{retry, sentinel, tracking};
use crate::store::admin;
use crate::store::ops::for_each_op;

macro_rules! napi_op_kind {
    ($($variant:ident $field:ident $code:literal,)*) => {
        /// The op codes `store.js` sends in a batch's `kinds` (from the list
        /// of ops in `store/ops.rs`).
        #[napi]
        pub enum OpKind {
            $($variant = $code,)*
        }
    };
}
for_each_op!(napi_op_kind);

macro_rules! napi_error_code {
    ($($(#[$doc:meta])* $variant:ident $field:ident $name:literal,)*) => {
        /// The stable codes of `RedisSessionStoreError` (from the list in
        /// `errors.rs`), in the order of their numbers in an outcome.
        #[napi(string_enum)]
        pub enum ErrorCode {
            $($(#[$doc])* #[napi(value = $name)] $variant,)*
        }
    };
}
for_each_code!(napi_error_code);

/// How an op settled, as `store.js` reads a batch's `codes`. A failure is
/// `Failed` plus the number of its error code (the position of the code in
/// `ErrorCode`), its message in `values`.
#[napi]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeCode {
    Done = 0,
    True = 1,
    False = 2,
    Text = 3,
    Null = 4,
    Failed = 5,
}

impl OutcomeCode {
    /// The code of a failure with error code `code`.
    pub fn failed(code: Code) -> u32 {
        OutcomeCode::Failed as u32 + code as u32
    }
}

/// Paths in one `merge` call.
#[napi]
pub const MAX_MERGE_PATHS: u32 = limits::MAX_MERGE_PATHS;
/// Dot-separated segments in one merge path.
#[napi]
pub const MAX_PATH_SEGMENTS: u32 = limits::MAX_PATH_SEGMENTS;
/// The largest `ttlMs`: `Number.MAX_SAFE_INTEGER`.
#[napi]
pub const MAX_TTL_MS: f64 = limits::MAX_TTL_MS;
/// The most nulls one merge may pad arrays with, in all its paths.
#[napi]
pub const MAX_PADDING: u32 = limits::MAX_PADDING;
/// The largest `count` of one page of `ids()`.
#[napi]
pub const MAX_SCAN_COUNT: u32 = limits::MAX_SCAN_COUNT;

/// The store's own waits, in ms, for the tests that derive their bounds from
/// them (the README's Faults and Read cache say what each does): the
/// longest wait of the background ping that revives a lost connection.
#[napi]
pub const REVIVE_MAX_DELAY_MS: u32 = retry::REVIVE_MAX_DELAY.as_millis() as u32;
/// How long after the link's last answer the read cache may still answer.
#[napi]
pub const FRESH_FOR_MS: u32 = tracking::FRESH_FOR.as_millis() as u32;
/// How often a caching store asks its link the watch's question.
#[napi]
pub const HEARTBEAT_MS: u32 = tracking::HEARTBEAT.as_millis() as u32;
/// The longest calls wait for a promotion the sentinels announced.
#[napi]
pub const PROMOTION_HOLD_MS: u32 = sentinel::PROMOTION_HOLD.as_millis() as u32;

/// What a page of a walk over the keys under the prefix does: list the
/// session ids (`ids()`), count them (`length()`), or remove the keys
/// (`clear()`).
#[napi(string_enum)]
pub enum Walk {
    #[napi(value = "ids")]
    Ids,
    #[napi(value = "count")]
    Count,
    #[napi(value = "clear")]
    Clear,
}

/// One page of a walk over the keys under the prefix.
#[napi(object)]
pub struct ScanPage {
    /// Where the next page starts on this node; "0" when the node is done.
    pub cursor: String,
    /// The session ids of this page (when asked for), lock keys left out.
    pub ids: Vec<String>,
    /// How many session ids the page held (`length()`), or how many keys it
    /// removed (`clear()`).
    pub count: u32,
    /// The users whose index keys the page held (`userIdPath`; when ids
    /// are asked for).
    pub users: Vec<String>,
    /// How many index keys the page held (not counted by `clear()`'s walk).
    pub user_count: u32,
}

impl From<admin::ScanPage> for ScanPage {
    fn from(p: admin::ScanPage) -> Self {
        ScanPage {
            cursor: p.cursor,
            ids: p.ids,
            count: p.count,
            users: p.users,
            user_count: p.user_count,
        }
    }
}

/// Whether the store's user may run one command the store sends.
#[napi(object)]
pub struct CommandAccess {
    /// The command, as ACL rules name it (`script|load`).
    pub command: String,
    /// Whether the store needs it, or only uses it where allowed (the
    /// server's own compare-and-writes, `HELLO`, the admin calls).
    pub required: bool,
    pub allowed: bool,
    /// What the server said when it refused.
    pub reason: Option<String>,
    /// `'ACL DRYRUN'`, or `'probe'`: the command was sent in a form that
    /// changes nothing (where this user may not run `ACL DRYRUN`).
    pub checked_by: String,
}

impl From<admin::Access> for CommandAccess {
    fn from(a: admin::Access) -> Self {
        let checked_by = if a.by_dry_run { "ACL DRYRUN" } else { "probe" };
        CommandAccess {
            command: a.command.to_owned(),
            required: a.required,
            allowed: a.verdict.is_ok(),
            reason: a.verdict.err(),
            checked_by: checked_by.to_owned(),
        }
    }
}

/// The commands the store sends for its compare-and-writes on this link.
#[napi(object)]
pub struct CompareCommands {
    /// A merge's compare-and-set: `'SET IFDEQ'`, `'SET IFEQ'` or `'swap.lua'`.
    pub compare_and_set: String,
    /// An unlock's compare-and-delete: `'DELEX'`, `'DELIFEQ'` or `'unlock.lua'`.
    pub compare_and_delete: String,
}

impl From<Capabilities> for CompareCommands {
    fn from(c: Capabilities) -> Self {
        let set = match c.compare_and_set {
            CompareAndSetBy::Digest => "SET IFDEQ",
            CompareAndSetBy::Equal => "SET IFEQ",
            CompareAndSetBy::Script => "swap.lua",
        };
        let delete = match c.compare_and_delete {
            CompareAndDeleteBy::DelEx => "DELEX",
            CompareAndDeleteBy::DelIfEq => "DELIFEQ",
            CompareAndDeleteBy::Script => "unlock.lua",
        };
        CompareCommands {
            compare_and_set: set.to_owned(),
            compare_and_delete: delete.to_owned(),
        }
    }
}
