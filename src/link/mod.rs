//! The link to Redis: where the store connects and how ([`topology`]), the
//! one connection a store keeps and its states ([`connection`]), what the
//! server behind it can do ([`capabilities`]), the Lua scripts the store
//! runs there ([`scripts`]), the sentinels and what they announce
//! ([`sentinel`]), every retry and backoff ([`retry`]), and the
//! server's reports of changed keys that keep the read cache honest
//! ([`tracking`]), over a connection the store opens itself, with its own
//! TLS ([`tls`]).

pub mod capabilities;
pub mod connection;
pub mod retry;
pub mod scripts;
pub mod sentinel;
pub mod tls;
pub mod topology;
pub mod tracking;

pub use connection::{Connection, Ready, Status};
pub use topology::{Route, Timeouts};
