//! Watching a running workflow's file (edit → reload) and, when a phase has
//! an `on.files` hook, the files under the root. Events are debounced and
//! coalesced before they reach the engine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::engine::{EngineHandle, Input};

/// How long the files must stay quiet before anyone acts.
const QUIET: Duration = Duration::from_millis(200);

/// Lives as long as the workflow it belongs to; dropping it stops watching.
pub struct WorkflowWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl WorkflowWatcher {
    pub fn start(path: &Path, root: &Path, files: bool, source: &str, engine: EngineHandle) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && matches!(
                    event.kind,
                    notify::EventKind::Create(_) | notify::EventKind::Modify(_) | notify::EventKind::Remove(_)
                )
            {
                for p in event.paths {
                    let _ = tx.send(p);
                }
            }
        })
        .map_err(|e| e.to_string())?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        let dir = path.parent().unwrap_or(&root).to_owned();
        if files {
            watcher.watch(&root, RecursiveMode::Recursive).map_err(|e| format!("{}: {e}", root.display()))?;
        }
        if !files || !dir.starts_with(&root) {
            // The folder, not the file: editors replace files by renaming.
            watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let source = source.to_owned();
        std::thread::Builder::new()
            .name("mcc-workflow-watch".into())
            .spawn(move || debounce(&rx, &path, &root, files, source, &engine))
            .map_err(|e| e.to_string())?;
        Ok(Self { _watcher: watcher })
    }
}

fn debounce(
    rx: &mpsc::Receiver<PathBuf>,
    path: &Path,
    root: &Path,
    files: bool,
    mut source: String,
    engine: &EngineHandle,
) {
    loop {
        let Ok(first) = rx.recv() else { return };
        let mut batch = BTreeSet::from([first]);
        loop {
            match rx.recv_timeout(QUIET) {
                Ok(p) => {
                    batch.insert(p);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if batch.contains(path)
            && let Ok(now) = std::fs::read_to_string(path)
            && now != source
        {
            source = now;
            if !engine.send(Input::LoadWorkflow { conn: None, path: path.to_owned() }) {
                return;
            }
        }
        if files {
            // A new folder's files may be written before its watch is in place.
            let folders: Vec<PathBuf> = batch.iter().filter(|p| *p != root && p.is_dir()).cloned().collect();
            for folder in folders {
                let inside = walkdir::WalkDir::new(folder).into_iter().filter_map(Result::ok);
                batch.extend(inside.filter(|e| e.file_type().is_file()).map(walkdir::DirEntry::into_path));
            }
            let changed: Vec<String> = batch
                .iter()
                .filter(|p| !p.is_dir())
                .filter_map(|p| p.strip_prefix(root).ok())
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .filter(|p| !p.starts_with(".mcc/") && !p.starts_with(".git/"))
                .collect();
            if !changed.is_empty() && !engine.send(Input::FilesChanged { paths: changed }) {
                return;
            }
        }
    }
}
