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
    /// Watch `sources` (the workflow file first, then the modules it
    /// required, each with the text it was loaded from) and, when `files`,
    /// everything under `root`.
    pub fn start(
        sources: &[(PathBuf, String)],
        root: &Path,
        files: bool,
        engine: EngineHandle,
    ) -> Result<Self, String> {
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
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        let sources: Vec<(PathBuf, String)> = sources
            .iter()
            .map(|(p, text)| (std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()), text.clone()))
            .collect();
        if files {
            watcher.watch(&root, RecursiveMode::Recursive).map_err(|e| format!("{}: {e}", root.display()))?;
        }
        let mut folders = BTreeSet::new();
        for (path, _) in &sources {
            let dir = path.parent().unwrap_or(&root).to_owned();
            // The folder, not the file: editors replace files by renaming.
            if (!files || !dir.starts_with(&root)) && folders.insert(dir.clone()) {
                watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
        std::thread::Builder::new()
            .name("mcc-workflow-watch".into())
            .spawn(move || debounce(&rx, sources, &root, files, &engine))
            .map_err(|e| e.to_string())?;
        Ok(Self { _watcher: watcher })
    }
}

fn debounce(
    rx: &mpsc::Receiver<PathBuf>,
    mut sources: Vec<(PathBuf, String)>,
    root: &Path,
    files: bool,
    engine: &EngineHandle,
) {
    let workflow = sources[0].0.clone();
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
        let mut edited = false;
        for (path, text) in &mut sources {
            if batch.contains(path)
                && let Ok(now) = std::fs::read_to_string(&*path)
                && now != *text
            {
                *text = now;
                edited = true;
            }
        }
        if edited && !engine.send(Input::LoadWorkflow { conn: None, path: workflow.clone() }) {
            return;
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
