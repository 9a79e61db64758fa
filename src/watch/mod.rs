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

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::engine::{EngineHandle, Input};
use crate::layout::{Layout, move_aside};
use crate::task::Report;

/// How long a file must stay unchanged before it is read.
pub const QUIET: Duration = Duration::from_millis(150);

/// Watches the reports folders while it lives.
pub struct ReportWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl ReportWatcher {
    pub fn start(layout: &Layout, engine: EngineHandle) -> Result<Self, String> {
        let folders = [layout.reports(), layout.old_reports()];
        for folder in &folders {
            fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
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
        let root = layout.root().to_owned();
        let old_folder = folders[1].clone();
        std::thread::Builder::new()
            .name("mcc-reports".into())
            .spawn(move || debounce(&rx, initial, &root, &old_folder, &engine))
            .map_err(|e| e.to_string())?;
        Ok(Self { _watcher: watcher })
    }
}

/// A path the watcher saw change; `whole` when it was renamed into place.
struct Seen {
    path: PathBuf,
    whole: bool,
}

fn is_report(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json") && path.is_file()
}

fn debounce(rx: &mpsc::Receiver<Seen>, initial: Vec<PathBuf>, root: &Path, old_folder: &Path, engine: &EngineHandle) {
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
            if !is_report(&path) {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let shown = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            let old_client = path.parent() == Some(old_folder);
            let input = match parse_report_from(&bytes, old_client) {
                Ok(report) => Input::ReportFile { path: shown, rescan: rescan.remove(&path), full: path, report },
                Err(error) => {
                    let moved = move_aside(&path, &error);
                    Input::ReportFileRejected { path: shown, error: format!("{error}; moved to {moved}") }
                }
            };
            if !engine.send(input) {
                return;
            }
        }
    }
}

/// Parse a report, naming the field that is wrong. `workerId` and
/// `attempt` are required: they fence the report to one grant.
pub fn parse_report(bytes: &[u8]) -> Result<Report, String> {
    parse_report_from(bytes, false)
}

/// [`parse_report`]; `old_client` for a file in the old clients' folder,
/// where `attempt` may be missing (the engine then takes the named worker's
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
        let err = parse_report(br#"{"taskId":"t","status":"done"}"#).unwrap_err();
        assert!(err.contains("status"), "{err}");
        let err = parse_report(br#"{"taskId":"t","status":"completed","deliverables":"x"}"#).unwrap_err();
        assert!(err.contains("deliverables"), "{err}");
        let err = parse_report(br#"{"taskId":"t","sta"#).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = parse_report(br#"{"taskId":"t","status":"completed"}"#).unwrap_err();
        assert!(err.contains("workerId"), "{err}");
        let err = parse_report(br#"{"taskId":"t","workerId":"w","status":"completed"}"#).unwrap_err();
        assert!(err.contains("attempt"), "{err}");
        assert!(parse_report(br#"{"taskId":"t","workerId":"w","attempt":1,"status":"completed"}"#).is_ok());
    }
}
