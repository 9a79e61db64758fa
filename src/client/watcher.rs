//! The watcher of a shell chat: a small detached `mcc` process that
//! `mcc worker next` starts once per worker name, tied to the agent's own
//! process (the nearest ancestor that is not a shell), which holds the
//! worker's presence ([`super::presence`]) and ends when that process ends
//! (docs/worker.md, "Presence").
//!
//! Its record, `.mcc/presence/NAME.json`, names the watcher and the agent
//! by pid and start time (a reused pid is not the same process): a later
//! `next` finds the live watcher there and starts no other. Where no agent
//! process is found (a command run straight from an init-like parent, a
//! system without `/proc`), no watcher is started and the worker has its
//! lease only.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::presence::{self, Ended};
use super::{Options, Transport, locate};
use crate::layout::{Layout, StateDir, find_root, safe_file_name};
use crate::wire::PresenceKind;

/// `MCC_WATCHER=off`: start no watcher; the worker has its lease only.
pub const OFF: &str = "MCC_WATCHER";
/// Where the records are, under `.mcc/`.
const FOLDER: &str = "presence";
/// A record is a few numbers and a name.
const RECORD_LIMIT: u64 = 4096;
/// Ancestors looked at, at most, for the agent's process.
const MOST_ANCESTORS: usize = 64;

/// Processes that are not an agent but a shell or a wrapper running
/// commands for one: the agent is further up. Names as `/proc/PID/comm`
/// has them (at most 15 bytes).
const NOT_AGENTS: &[&str] = &[
    "sh",
    "bash",
    "zsh",
    "dash",
    "fish",
    "ksh",
    "mksh",
    "ash",
    "csh",
    "tcsh",
    "busybox",
    "nu",
    "elvish",
    "pwsh",
    "mcc",
    "env",
    "timeout",
    "nice",
    "nohup",
    "stdbuf",
    "setsid",
    "sudo",
    "su",
    "script",
    "time",
    "xargs",
    "strace",
    "bwrap",
    "firejail",
    "codex-linux-san",
    "make",
    "gmake",
    "just",
    "uv",
    "uvx",
];
/// Processes that run everything and end nothing: a command whose nearest
/// ancestor that is not a shell is one of these was not run by an agent.
const INIT_LIKE: &[&str] =
    &["init", "systemd", "tini", "dumb-init", "launchd", "s6-svscan", "runit", "containerd-shim"];

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/PID/stat`'s 22nd field).
    pub start: u64,
}

/// What `.mcc/presence/NAME.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub worker: String,
    pub watcher: Process,
    pub agent: Process,
}

/// A process as `/proc/PID/stat` says it.
struct Stat {
    comm: String,
    state: char,
    parent: u32,
    start: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let mut text = String::new();
    std::fs::File::open(format!("/proc/{pid}/stat")).ok()?.take(4096).read_to_string(&mut text).ok()?;
    // The name is in parentheses and may hold anything, spaces and `)` too: it ends at the last `)`.
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... starttime (22).
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

impl Process {
    /// This process as it runs now, if it does.
    pub fn of(pid: u32) -> Option<Self> {
        stat(pid).map(|s| Self { pid, start: s.start })
    }

    /// Whether it still runs: same pid, same start, and not a zombie waiting to be reaped.
    pub fn alive(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && !matches!(s.state, 'Z' | 'X' | 'x'))
    }
}

/// The agent's process: the nearest ancestor of this one that is not a
/// shell, a wrapper or mcc; none when that is init-like, or nothing is found.
pub fn find_agent() -> Option<Process> {
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..MOST_ANCESTORS {
        if pid <= 1 {
            return None;
        }
        let s = stat(pid)?;
        if INIT_LIKE.contains(&s.comm.as_str()) {
            return None;
        }
        if !NOT_AGENTS.contains(&s.comm.as_str()) {
            return Some(Process { pid, start: s.start });
        }
        pid = s.parent;
    }
    None
}

fn record_name(worker: &str) -> String {
    format!("{}.json", safe_file_name(worker))
}

fn folder(root: &Path) -> Option<StateDir> {
    Layout::of_root(root).open().ok()?.folder_or_create(FOLDER).ok()
}

/// The watcher's record for `worker` under `root`, if there is a readable one.
pub fn read_record(root: &Path, worker: &str) -> Option<Record> {
    let dir = Layout::of_root(root).open().ok()?.folder(FOLDER).ok()?;
    let bytes = dir.read_bounded(&record_name(worker), RECORD_LIMIT).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Before a shell chat's `next`: make sure a watcher holds `worker`'s
/// presence for the agent running this command. Nothing is said: the
/// answer of `next` is what the chat reads, and a chat without a watcher
/// still has its lease. No watcher is started through the file transport
/// (a sandbox that has no network cannot hold a connection), nor where no
/// agent process is found, nor when `MCC_WATCHER=off`.
pub fn ensure(worker: &str, hub: Option<&str>, options: Options) {
    if options.transport == Transport::File
        || std::env::var_os("CODEX_SANDBOX_NETWORK_DISABLED").is_some_and(|v| v == "1")
        || std::env::var_os(OFF).is_some_and(|v| v == "off")
    {
        return;
    }
    let Ok(cwd) = std::env::current_dir() else { return };
    let Some(root) = find_root(&cwd) else { return };
    let Some(agent) = find_agent() else { return };
    if let Some(record) = read_record(&root, worker)
        && record.agent == agent
        && record.watcher.alive()
    {
        return;
    }
    let Ok(mcc) = std::env::current_exe() else { return };
    let mut command = Command::new(mcc);
    command
        .args(["worker", "watch", "--as", worker])
        .args(["--agent-pid", &agent.pid.to_string(), "--agent-start", &agent.start.to_string()])
        .args(["--timeout", &humantime::format_duration(options.timeout).to_string()])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(hub) = hub {
        command.args(["--hub", hub]);
    }
    // Its own process group: a Ctrl-C in the chat's shell is not the chat's end.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let Ok(child) = command.spawn() else { return };
    // Written here, not by the watcher: a second `next` right after this one finds it.
    if let (Some(watcher), Some(dir)) = (Process::of(child.id()), folder(&root)) {
        let record = Record { worker: worker.to_owned(), watcher, agent };
        let _ = dir.write_atomic(&record_name(worker), &serde_json::to_vec(&record).expect("a record serializes"));
    }
}

/// `mcc worker watch` (hidden; started by `next`): hold `worker`'s presence
/// until the agent's process ends, or the project is gone.
pub fn watch(worker: &str, agent: Process, hub: Option<&str>, options: Options) -> u8 {
    let Ok(cwd) = std::env::current_dir() else { return super::exit::ERROR };
    let root = find_root(&cwd);
    let ended = presence::hold(
        || locate(hub, &cwd, options),
        worker,
        PresenceKind::Watcher,
        Some(agent.pid),
        // A project folder removed (a finished experiment, a test's) has nobody to be present for.
        || agent.alive() && cwd.exists(),
    );
    // The record is the next watcher's to write once this one is gone; it is removed only if still this one's.
    if let Some(root) = root
        && let Some(record) = read_record(&root, worker)
        && record.watcher.pid == std::process::id()
        && let Some(dir) = folder(&root)
    {
        let _ = dir.remove(&record_name(worker));
    }
    if ended == Ended::ChatEnded { super::exit::OK } else { super::exit::ERROR }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_pid_with_another_start_is_not() {
        let me = Process::of(std::process::id()).unwrap();
        assert!(me.alive());
        assert!(!Process { start: me.start + 1, ..me }.alive(), "a reused pid is another process");
    }
}
