//! The link to Redis: where the store connects and how ([`topology`]), the
//! one connection a store keeps and its states ([`connection`]), what the
//! server behind it can do ([`capabilities`]), the Lua scripts the store
//! runs there ([`scripts`]), and every retry and backoff ([`retry`]).

pub mod capabilities;
pub mod connection;
pub mod retry;
pub mod scripts;
pub mod topology;

pub use connection::{Connection, Ready, Status};
pub use topology::{Route, Timeouts};
