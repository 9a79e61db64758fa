//! mcc: a scriptable coordination runtime for running several AI
//! coding-agent chats on one project at once.
//!
//! The binary supplies the primitives (a WebSocket [`hub`], a durable
//! [`store`], the [`scheduler`]'s leases and reservations, report
//! [`watch`]ing); a Lua workflow ([`lua`]) decides the policy.

pub(crate) mod checkout;
pub(crate) mod cli;
pub(crate) mod client;
pub(crate) mod command;
pub(crate) mod engine;
pub(crate) mod event;
pub(crate) mod handoff;
pub(crate) mod hub;
pub(crate) mod layout;
pub(crate) mod lua;
pub(crate) mod mcp;
pub(crate) mod report;
pub(crate) mod scheduler;
pub(crate) mod store;
pub(crate) mod task;
pub(crate) mod text;
pub(crate) mod tls;
pub(crate) mod watch;
pub(crate) mod wire;

pub use cli::main;

#[cfg(test)]
mod fuzz;

// What the integration tests and the Lua bench (examples/) drive in-process;
// the rest of the crate is its own, so rustc names what nothing uses.
pub use checkout::Restored;
pub use client::files::ask;
pub use client::snapshot;
pub use engine::{Policy, Timing};
pub use hub::{HubOptions, Limits as HubLimits, RunningHub, Security as HubSecurity, StoreChoice, start as start_hub};
pub use layout::Layout;
pub use lua::{Workflow, load as load_workflow};
pub use scheduler::{Scheduler, Settings};
pub use store::floor::{Floor as StoreFloor, commit_floor as store_commit_floor};
pub use store::restore::restore_from_project as restore_checkout;
pub use text::duration;
pub use wire::ClientMsg;
