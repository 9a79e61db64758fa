//! Durable records of the process groups the runner has running, so a hub
//! or `mcc worker run` killed with SIGKILL (a crash, the OOM killer) does not
//! leave its commands running for ever: the next hub or worker on the same
//! state folder kills them.
//!
//! One file per running group, `STATE/commands/<pgid>`, holding the group
//! leader's start time (from `/proc/<pid>/stat`) and the pid and start time
//! of the process that owns it (a hub or a worker). The start time tells the
//! recorded group from a later process that got the same pid, so a recycled
//! pid is never killed. Hubs and workers share the folder: a record whose
//! owner still runs is left alone, so none removes another's records. A
//! record is written whole under a dot name and renamed, so a process
//! reading the folder never sees one half written.

use std::fs;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, Signal};

/// Kill every group a hub or worker that no longer runs recorded under
/// `state_dir/commands`, if it is still the recorded one, and clear those
/// records. Returns the folder (where a runner records its groups from now
/// on, see [`Supervisor::record_groups_in`](super::Supervisor::record_groups_in))
/// and how many groups were killed.
pub(super) fn sweep(state_dir: &Path) -> std::io::Result<(PathBuf, usize)> {
    let folder = crate::layout::Layout::at(state_dir).commands();
    fs::create_dir_all(&folder)?;
    let mut killed = 0;
    for entry in fs::read_dir(&folder)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            // Being written by a live process (see `Record::write`).
            continue;
        }
        match stale_group(&path) {
            Stale::Kill(pgid) => {
                // ESRCH: the group ended on its own since; nothing to do.
                if rustix::process::kill_process_group(pgid, Signal::KILL).is_ok() {
                    killed += 1;
                }
            }
            // Its owner still runs (another worker, a hub, or this very process).
            Stale::Live => continue,
            Stale::Gone => {}
        }
        let _ = fs::remove_file(&path);
    }
    Ok((folder, killed))
}

enum Stale {
    Kill(Pid),
    Live,
    Gone,
}

fn stale_group(path: &Path) -> Stale {
    let Some(pgid) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).and_then(Pid::from_raw)
    else {
        return Stale::Gone;
    };
    // Through a handle that follows no link, without blocking on a FIFO.
    let text = path
        .parent()
        .zip(path.file_name().and_then(|n| n.to_str()))
        .and_then(|(folder, name)| {
            crate::layout::StateDir::open(folder).and_then(|dir| dir.read_bounded(name, crate::layout::SMALL_FILE)).ok()
        })
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let fields: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let &[group_start, hub_pid, hub_start] = fields.as_slice() else {
        // Not a record this version wrote: nothing is known to kill.
        return Stale::Gone;
    };
    let hub_alive = hub_pid == u64::from(std::process::id()) || start_time(hub_pid) == Some(hub_start);
    if hub_alive {
        return Stale::Live;
    }
    match start_time(u64::from(pgid.as_raw_nonzero().get().unsigned_abs())) {
        Some(started) if started == group_start => Stale::Kill(pgid),
        // Another process got the pid: not ours.
        Some(_) => Stale::Gone,
        // The leader is gone. Its members may live on; the kernel gives no new
        // process a pid still in use as a group id, so the group is ours.
        None => Stale::Kill(pgid),
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when it does not run (or is a zombie).
fn start_time(pid: u64) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The record of one running group; dropping it removes the file.
pub(super) struct Record(Option<PathBuf>);

impl Record {
    /// Record `pgid` in `folder`; with none (mcc check) nothing is
    /// recorded. Not synced to disk: a machine that loses its page cache
    /// has lost the group too.
    pub(super) fn write(pgid: Pid, folder: Option<&Path>) -> Self {
        let Some(folder) = folder else {
            return Self(None);
        };
        let leader = u64::from(pgid.as_raw_nonzero().get().unsigned_abs());
        let me = u64::from(std::process::id());
        let (Some(group_start), Some(hub_start)) = (start_time(leader), start_time(me)) else {
            return Self(None);
        };
        let path = folder.join(leader.to_string());
        // Written under a dot name and renamed: a reader of the folder passes over dot names.
        match crate::text::write_atomic(&path, format!("{group_start} {me} {hub_start}\n").as_bytes()) {
            Ok(()) => Self(Some(path)),
            Err(_) => Self(None),
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}
