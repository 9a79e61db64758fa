//! Exit codes every command shares (`--help` lists them). They live below
//! the CLI because a worker's answer carries one, whether a shell prints it
//! or `mcc mcp` maps it to a tool result. Code 2 (bad arguments) is
//! clap's own, never returned here.

/// Success; for `mcc worker`: you got a task.
pub const OK: u8 = 0;
/// Something is wrong; the message says what to run instead.
pub const ERROR: u8 = 1;
/// Nothing ready yet: run the same command again.
pub const NOTHING_YET: u8 = 3;
/// All work is done: stop.
pub const ALL_DONE: u8 = 4;
/// Your context is spent: hand over to a fresh chat and stop.
pub const HAND_OVER: u8 = 5;
/// `mcc hub`: another hub took over the project (its leader lease on a
/// PostgreSQL store): this one stepped down.
pub const STEPPED_DOWN: u8 = 6;
/// Stopped by Ctrl-C (SIGINT) or SIGTERM, as shells number it: `mcc run`
/// printed the command that resumes it.
pub const INTERRUPTED: u8 = 130;
