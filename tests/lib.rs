//! mcc's one integration test binary: every test spawns the real `mcc`
//! binary against real sockets, a real `SQLite` file and real files.

mod support;

mod durability;
mod engineer;
mod faults;
mod fencing;
mod hub;
mod lua;
mod old_protocol;
mod reports;
mod run;
mod scheduling;
mod worker;
