//! mcc: a scriptable coordination runtime for running several AI
//! coding-agent chats on one project at once.
//!
//! The binary supplies the primitives (a WebSocket [`hub`], a durable
//! [`store`], the [`scheduler`]'s leases and reservations, report
//! [`watch`]ing); a Lua workflow ([`lua`]) decides the policy.

pub mod cli;
pub mod client;
pub mod command;
pub mod engine;
pub mod event;
pub mod handoff;
pub mod hub;
pub mod layout;
pub mod lua;
pub mod mcp;
pub mod report;
pub mod scheduler;
pub mod store;
pub mod task;
pub mod text;
pub mod watch;
pub mod wire;

pub use cli::main;
