//! `mcc tasks show ID --attempt N [--file PATH]`: what one attempt
//! submitted at `done`, as the project's store keeps it. Read from the store
//! opened read-only, so it answers the same with the hub up or stopped, and
//! after the checkout changed since.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{ShowArgs, exit, fail};
use crate::store::{AttemptFile, FileKept, Store};
use crate::wire::TaskInfo;

/// How many hex digits of a SHA-256 a listing shows.
const SHA_SHOWN: usize = 12;

/// `--attempt N`, with or without `--file PATH`.
pub(super) fn show(a: &ShowArgs, attempt: u32) -> u8 {
    let (root, mut store) = match open_store() {
        Ok(opened) => opened,
        Err(e) => return fail(&a.hub, &e),
    };
    let files = match store.attempt_files(&a.task, attempt) {
        Ok(files) => files,
        Err(e) => return fail(&a.hub, &e.to_string()),
    };
    if files.is_empty() {
        return fail(&a.hub, &nothing_kept(&mut store, &a.task, attempt, &root));
    }
    match &a.file {
        None => list(a, attempt, &files),
        Some(path) => print_file(a, attempt, &files, path, &mut store),
    }
}

/// This project's root (the folder you are in, or above) and its store, read-only.
fn open_store() -> Result<(PathBuf, Store), String> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let Some(root) = crate::layout::find_root(&cwd) else {
        return Err(format!(
            "{} is not inside an mcc project (no .mcc/ here or above); run this in the project's folder",
            cwd.display()
        ));
    };
    match crate::store::read_project(&root)? {
        Some(store) => Ok((root, store)),
        None => Err(format!(
            "the project at {} has no store yet: no task has run here; `mcc status` shows what there is",
            root.display()
        )),
    }
}

/// Why an attempt has no files to show, naming what the store does hold.
fn nothing_kept(store: &mut Store, task: &str, attempt: u32, root: &Path) -> String {
    let events = store.task_events(task).unwrap_or_default();
    if events.is_empty() {
        return format!("unknown task `{task}` in the store of {}: `mcc tasks list` shows the tasks", root.display());
    }
    let mut attempts: Vec<u32> = events.iter().filter_map(|e| e.attempt).collect();
    attempts.sort_unstable();
    attempts.dedup();
    let with_files: Vec<u32> =
        attempts.iter().copied().filter(|n| store.attempt_files(task, *n).is_ok_and(|f| !f.is_empty())).collect();
    let shown = |list: &[u32]| list.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let had = if attempts.contains(&attempt) {
        format!(
            "attempt {attempt} of task `{task}` kept no files (it declares no write files, or it never reached `done`)"
        )
    } else if attempts.is_empty() {
        format!("task `{task}` has had no attempt yet")
    } else {
        format!("task `{task}` has no attempt {attempt}; its attempts: {}", shown(&attempts))
    };
    match with_files.last() {
        Some(last) => format!(
            "{had}; attempts that kept files: {}: run `mcc tasks show {task} --attempt {last}`",
            shown(&with_files)
        ),
        None => format!("{had}; no attempt of it kept files: `mcc tasks show {task}` shows its history"),
    }
}

/// What a file's row says, as a listing shows it.
fn described(f: &AttemptFile) -> String {
    match &f.kept {
        FileKept::Kept { sha256 } => {
            format!("{} bytes  sha256 {}  kept", f.size, &sha256[..SHA_SHOWN.min(sha256.len())])
        }
        FileKept::Deleted => "deleted (no file there at `done`)".to_owned(),
        FileKept::OverBound => {
            format!("{} bytes  not kept: over the hub's bound (--max-task-files-bytes)", f.size)
        }
        FileKept::NotRegular => "not kept: a link, a folder or another non-regular file".to_owned(),
        FileKept::Unreadable => "not kept: the hub could not read it (its log says why)".to_owned(),
    }
}

fn list(a: &ShowArgs, attempt: u32, files: &[AttemptFile]) -> u8 {
    if a.hub.json {
        println!("{}", json!({"type": "attempt_files", "task_id": a.task, "attempt": attempt, "files": files}));
        return exit::OK;
    }
    let plural = if files.len() == 1 { "" } else { "s" };
    println!("task {} · attempt {attempt} · {} file{plural} at `done`", a.task, files.len());
    let width = files.iter().map(|f| f.path.chars().count()).max().unwrap_or(0);
    for f in files {
        println!("  {:<width$}  {}", f.path, described(f));
    }
    if let Some(kept) = files.iter().find(|f| matches!(f.kept, FileKept::Kept { .. })) {
        println!("next: `mcc tasks show {} --attempt {attempt} --file {}` prints what it submitted", a.task, kept.path);
    }
    exit::OK
}

fn print_file(a: &ShowArgs, attempt: u32, files: &[AttemptFile], path: &str, store: &mut Store) -> u8 {
    let task = &a.task;
    let Some(file) = files.iter().find(|f| f.path == path) else {
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        return fail(
            &a.hub,
            &format!(
                "attempt {attempt} of task `{task}` submitted no `{path}`; its files: {}: run `mcc tasks show {task} --attempt {attempt} --file {}`",
                paths.join(", "),
                paths[0]
            ),
        );
    };
    let FileKept::Kept { sha256 } = &file.kept else {
        return fail(
            &a.hub,
            &format!(
                "attempt {attempt} of task `{task}`: `{path}` is {}; `mcc tasks show {task} --attempt {attempt}` lists its files",
                described(file)
            ),
        );
    };
    let bytes = match store.blob(sha256) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return fail(
                &a.hub,
                &format!(
                    "the store lists `{path}` of attempt {attempt} of task `{task}` as kept (sha256 {sha256}) but holds no such content; the store is damaged"
                ),
            );
        }
        Err(e) => return fail(&a.hub, &e.to_string()),
    };
    if a.hub.json {
        let data = data_encoding::BASE64.encode(&bytes);
        println!(
            "{}",
            json!({"type": "attempt_file", "task_id": task, "attempt": attempt, "path": path, "size": bytes.len(), "sha256": sha256, "data": data})
        );
        return exit::OK;
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(&bytes).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => fail(&a.hub, &format!("cannot write `{path}` to stdout: {e}")),
    }
}

/// By attempt of `info`'s history: how many of its submitted files the store
/// kept, of how many (attempts with none are left out).
pub(super) fn kept_counts(root: &Path, info: &TaskInfo) -> HashMap<u32, (usize, usize)> {
    let Some(history) = &info.history else { return HashMap::new() };
    let Ok(Some(mut store)) = crate::store::read_project(root) else { return HashMap::new() };
    let mut counts = HashMap::new();
    for a in &history.attempts {
        let Ok(files) = store.attempt_files(&info.summary.id, a.attempt) else { continue };
        if !files.is_empty() {
            let kept = files.iter().filter(|f| matches!(f.kept, FileKept::Kept { .. })).count();
            counts.insert(a.attempt, (kept, files.len()));
        }
    }
    counts
}
