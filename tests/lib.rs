//! mcc's one integration test binary: every test spawns the real `mcc`
//! binary against real sockets, a real `SQLite` file and real files.

mod support;

mod answers;
mod author;
mod browser;
mod budget;
mod bulk;
mod cockpit;
mod deadlines;
mod durability;
mod effects;
mod engineer;
mod failover;
mod faults;
mod fencing;
mod file_transport;
mod fuzz;
mod git_guard;
mod history;
mod hub;
mod hubs;
mod layering;
mod live;
mod lua;
mod mcp;
mod old_protocol;
mod outside;
mod presence;
mod races;
mod remote;
mod remote_files;
mod reports;
mod routing;
mod run;
mod scheduling;
mod security;
mod state_folder;
mod store_postgres;
mod submitted_files;
mod tokens;
mod validate;
mod waiting;
mod worker;
mod worktrees;
