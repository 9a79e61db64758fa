//! The reports folders: `.mcc/reports/` and, for old clients,
//! `tmp/coordination/reports/` under the root. A report file renamed into a
//! folder is complete (rules/worker.md tells writers to rename) and is read
//! at once; one created or rewritten in place is read once it has been
//! quiet for a moment (debounced),
//! checked, and handed to the engine, which applies it at most once per
//! attempt (a rewrite with the same bytes is read again: the engine decides).
//! A malformed one, or one without `workerId` or `attempt`, is moved aside to
//! `rejected/` next to it, with a `.error.txt` saying why. Old clients, which
//! know no attempts, may leave `attempt` out in their own folder only.
//!
//! Files are read through [`StateDir`] handles that follow no link, and
//! only regular files within the frame limit (`--max-frame-bytes`): a link,
//! a FIFO or a device is named in a problem and left in place; a larger
//! file is moved to `rejected/` unread, with the limit and the flag.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::engine::{EngineHandle, Input};
use crate::layout::{Layout, Refused, StateDir, move_aside_in};
use crate::task::Report;

/// How long a file must stay unchanged before it is read.
pub const QUIET: Duration = Duration::from_millis(150);

/// Watches the reports folders while it lives.
pub struct ReportWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl ReportWatcher {
    /// Watch the folders of `layout`; files over `max_bytes` are refused unread.
    pub fn start(layout: &Layout, engine: EngineHandle, max_bytes: usize) -> Result<Self, String> {
        let folders = [layout.reports(), layout.old_reports()];
        let state = layout.open().map_err(|e| e.to_string())?;
        state.folder_or_create("reports").map_err(|e| e.to_string())?;
        fs::create_dir_all(&folders[1]).map_err(|e| format!("{}: {e}", folders[1].display()))?;
        StateDir::open(&folders[1]).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<Seen>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            match event.kind {
                // The name a file was renamed to: it arrived whole.
                EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                    for path in event.paths {
                        let _ = tx.send(Seen { path, whole: true });
                    }
                }
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                    if let Some(path) = event.paths.last() {
                        let _ = tx.send(Seen { path: path.clone(), whole: true });
                    }
                }
                EventKind::Create(_) | EventKind::Modify(_) => {
                    for path in event.paths {
                        let _ = tx.send(Seen { path, whole: false });
                    }
                }
                _ => {}
            }
        })
        .map_err(|e| e.to_string())?;
        for folder in &folders {
            watcher.watch(folder, RecursiveMode::NonRecursive).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
        // Reports written while no hub ran are read at start.
        let mut initial = Vec::new();
        for folder in &folders {
            if let Ok(entries) = fs::read_dir(folder) {
                initial.extend(entries.flatten().map(|e| e.path()));
            }
        }
        let folders = Folders {
            root: layout.root().to_owned(),
            state,
            reports: folders[0].clone(),
            old: folders[1].clone(),
            max_bytes: max_bytes as u64,
        };
        std::thread::Builder::new()
            .name("mcc-reports".into())
            .spawn(move || debounce(&rx, initial, &folders, &engine))
            .map_err(|e| e.to_string())?;
        Ok(Self { _watcher: watcher })
    }
}

/// A path the watcher saw change; `whole` when it was renamed into place.
struct Seen {
    path: PathBuf,
    whole: bool,
}

/// The folders a report may be in, and how each is opened.
struct Folders {
    root: PathBuf,
    /// `.mcc/`, opened at start: a link put in its place later is not followed.
    state: StateDir,
    reports: PathBuf,
    /// The old clients' folder, opened by its path (its last part not followed).
    old: PathBuf,
    max_bytes: u64,
}

impl Folders {
    /// The open folder `path` is in, and its name there, if a report may be there.
    fn locate(&self, path: &Path) -> Option<Result<(StateDir, String), Refused>> {
        if path.extension().is_none_or(|e| e != "json") {
            return None;
        }
        let name = path.file_name()?.to_str()?.to_owned();
        let folder = path.parent()?;
        let dir = if folder == self.reports {
            self.state.folder("reports")
        } else if folder == self.old {
            StateDir::open(&self.old)
        } else {
            return None;
        };
        Some(dir.map(|dir| (dir, name)))
    }
}

/// What became of a report file the watcher looked at.
fn read_report(folders: &Folders, path: &Path, rescan: bool) -> Option<Input> {
    let shown = path.strip_prefix(&folders.root).unwrap_or(path).display().to_string();
    let rejected = |error: String| Some(Input::ReportFileRejected { path: shown.clone(), error });
    let (dir, name) = match folders.locate(path)? {
        Ok(found) => found,
        Err(refused) => return rejected(format!("not read: {refused}")),
    };
    let bytes = match dir.read_bounded(&name, folders.max_bytes) {
        Ok(bytes) => bytes,
        // Gone already, or being renamed: nothing to read. A folder named
        // *.json is not a report, and says nothing.
        Err(Refused::Missing(_) | Refused::Io { .. } | Refused::Special { kind: "a folder", .. }) => return None,
        Err(refused @ Refused::TooLarge { .. }) => {
            let error =
                format!("refused unread: {refused} (the hub's frame limit; raise it with `mcc hub --max-frame-bytes`)");
            return rejected(moved(&dir, &name, error));
        }
        Err(refused) => return rejected(format!("{refused}; left in place")),
    };
    let old_client = path.parent() == Some(folders.old.as_path());
    match parse_report_from(&bytes, old_client) {
        Ok(report) => Some(Input::ReportFile { path: shown, rescan, full: path.to_owned(), report }),
        Err(error) => rejected(moved(&dir, &name, error)),
    }
}

/// `error`, moved to `rejected/` with it, and where it went.
fn moved(dir: &StateDir, name: &str, error: String) -> String {
    match move_aside_in(dir, name, &error) {
        Ok(target) => format!("{error}; moved to {}", target.display()),
        Err(refused) => format!("{error}; left in place: {refused}"),
    }
}

fn debounce(rx: &mpsc::Receiver<Seen>, initial: Vec<PathBuf>, folders: &Folders, engine: &EngineHandle) {
    let mut pending: HashMap<PathBuf, Instant> = initial.iter().map(|p| (p.clone(), Instant::now())).collect();
    // Files present at start, until written again: a restart reads them once more.
    let mut rescan: HashSet<PathBuf> = initial.into_iter().collect();
    loop {
        let wait = pending.values().min().map(|t| (*t + QUIET).saturating_duration_since(Instant::now()));
        let event = match wait {
            Some(w) => rx.recv_timeout(w),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Seen { path, whole }) => {
                rescan.remove(&path);
                // A renamed file is due now; one written in place once it is quiet.
                let seen =
                    if whole { Instant::now().checked_sub(QUIET).unwrap_or_else(Instant::now) } else { Instant::now() };
                pending.insert(path, seen);
                if !whole {
                    continue;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let quiet: Vec<PathBuf> = pending.iter().filter(|(_, t)| now >= **t + QUIET).map(|(p, _)| p.clone()).collect();
        for path in quiet {
            pending.remove(&path);
            let again = rescan.remove(&path);
            let Some(input) = read_report(folders, &path, again) else { continue };
            if !engine.send(input) {
                return;
            }
        }
    }
}

/// Parse a report, naming the field that is wrong. `workerId` and
/// `attempt` are required: they fence the report to one grant, except with
/// `old_client`, for a file in the old clients' folder, where `attempt` may be missing (the engine then takes the named worker's
/// current grant, as for `task_complete`).
pub fn parse_report_from(bytes: &[u8], old_client: bool) -> Result<Report, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let report: Report = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_eof() || inner.is_syntax() {
            format!("not valid JSON ({inner}); write the file whole (to a temporary name, then rename it)")
        } else if path == "." {
            format!("not a report: {inner}")
        } else {
            format!("field `{path}`: {inner}")
        }
    })?;
    if report.task_id.trim().is_empty() {
        return Err("field `taskId` is empty".to_owned());
    }
    // The fencing token: without both, a late file could be credited to the wrong grant.
    if report.worker_id.as_deref().is_none_or(|w| w.trim().is_empty()) {
        return Err("field `workerId` is missing: name the worker that did the task, as in `--as NAME`".to_owned());
    }
    if report.attempt.is_none() && !old_client {
        return Err("field `attempt` is missing: write the attempt printed with the task (`mcc worker next` shows it)"
            .to_owned());
    }
    if let Some(score) = report.context_efficiency_score
        && !(1..=5).contains(&score)
    {
        return Err(format!("field `contextEfficiencyScore`: {score} is outside 1-5"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_a_wrong_field_names_it() {
        let err = parse_report_from(br#"{"taskId":"t","status":"done"}"#, false).unwrap_err();
        assert!(err.contains("status"), "{err}");
        let err = parse_report_from(br#"{"taskId":"t","status":"completed","deliverables":"x"}"#, false).unwrap_err();
        assert!(err.contains("deliverables"), "{err}");
        let err = parse_report_from(br#"{"taskId":"t","sta"#, false).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = parse_report_from(br#"{"taskId":"t","status":"completed"}"#, false).unwrap_err();
        assert!(err.contains("workerId"), "{err}");
        let err = parse_report_from(br#"{"taskId":"t","workerId":"w","status":"completed"}"#, false).unwrap_err();
        assert!(err.contains("attempt"), "{err}");
        assert!(parse_report_from(br#"{"taskId":"t","workerId":"w","attempt":1,"status":"completed"}"#, false).is_ok());
    }
}
