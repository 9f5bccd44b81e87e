#![deny(clippy::all)]
//! relay-session-redis: a session store for Redis, as a Node.js addon.
//!
//! Four layers, each using only the ones below it (`ARCHITECTURE.md` has the
//! map and the path of one call):
//! - [`addon`]: the napi face. The `#[napi]` class `store.js` holds, the
//!   crossing of batches and outcomes, the wire types and the one conversion
//!   of errors for JavaScript. Nothing else in the crate knows about napi.
//! - [`store`]: the store's steps. A batch of ops run round by round, the
//!   commands each op sends and what its replies mean, the key layout, lock
//!   tokens, remembered texts, the admin calls and the counters.
//! - [`link`]: the link to Redis. Where to connect and how to retry, the
//!   connection and its states, what a server can do, the Lua scripts.
//! - [`merge`]: the merge algorithm. Dot-paths spliced into JSON text at
//!   memory speed, and the threads that run large splices.
//!
//! Beside them, shared by all: [`errors`] (the stable codes) and [`limits`]
//! (what one call may ask).

pub mod addon;
pub mod errors;
pub mod limits;
pub mod link;
pub mod merge;
pub mod store;
