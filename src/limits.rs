//! What one call may ask of the store. Defined here once and exported to
//! JavaScript by `addon/wire.rs` (`index.js`), where `store.js` refuses a call over a
//! limit with `ERR_INVALID_ARG` before anything is sent. No relay-session app
//! comes near them; they exist so that no input can make the store or Redis
//! do unbounded work.

/// Paths in one `merge` call.
pub const MAX_MERGE_PATHS: u32 = 10_000;

/// Dot-separated segments in one merge path.
pub const MAX_PATH_SEGMENTS: u32 = 1_000;

/// The largest `ttlMs`: `Number.MAX_SAFE_INTEGER`, the largest whole number a
/// JavaScript number holds exactly (and far below what Redis's `PX` takes).
pub const MAX_TTL_MS: f64 = 9_007_199_254_740_991.0;

/// Writing far past an array's end pads it with nulls, as JavaScript would;
/// a merge whose paths pad arrays with more than this many nulls in all is
/// refused.
pub const MAX_PADDING: u32 = 100_000;

/// The server-side merge script (`lua/merge.lua`) costs Redis about paths ×
/// stored bytes (each path is a walk and a copy of the text). It runs only
/// while that product stays within this budget: about 2 ms of Redis time on
/// the machine this was measured on. Larger merges resolve conflicts on the
/// client: read again, splice, compare-and-set.
pub const SCRIPT_WORK: usize = 128 * 1024;

/// The stored text the script may take on for `paths` paths: it declines
/// (replies -1) when the text is longer, so its cost stays within
/// [`SCRIPT_WORK`] whatever another writer stored in between.
pub fn script_max_bytes(paths: usize) -> usize {
    SCRIPT_WORK / paths.max(1)
}

/// Keys one page of `ids()`, `length()` or `clear()` asks `SCAN` for: each
/// page is one `SCAN` (and for `clear()` one `UNLINK` of what it found), so
/// this bounds the work one admin command makes Redis do.
pub const MAX_SCAN_COUNT: u32 = 10_000;
