//! A remote worker's task files (docs/remote.md, "What travels"): the
//! declared files it may read (`task_files`, `fetch_file`), and its
//! declared write files on their way into the hub's checkout.
//!
//! An upload is staged part by part under `.mcc/uploads/` (each part a
//! file written whole, so a cut connection or a `kill -9` leaves whole
//! parts or none) and touches nothing of the checkout. The `done` naming
//! the files applies them after the (task, attempt) fence and only then:
//! every file is checked (declared, inside the root, complete, within the
//! bound) before the first is written; the previous content of each is
//! kept beside the staged parts, and a rejection restores it. A replayed
//! `done` is answered from the record, so nothing is applied twice.

use std::collections::BTreeMap;

use super::{ConnId, Engine};
use crate::checkout::{self, Checkout};
use crate::layout::{Refused, StateDir};
use crate::scheduler::Task;
use crate::wire::{FileDigest, ServerMsg};

/// The folder of `.mcc/` that holds uploads.
const UPLOADS: &str = "uploads";
/// In an attempt's folder: the paths applied, written before the first
/// file is, so the previous content is kept once however often `done` comes.
const APPLIED: &str = "applied.json";

/// Whether `.mcc/uploads/` is there when the hub starts (a staged upload
/// left by an earlier hub): until then or until this hub stages one, a
/// verdict has no upload folder to look for.
pub(super) fn any_at_start(state_dir: &std::path::Path) -> bool {
    // Not followed through a link: what is there, link or folder, is looked at as before.
    state_dir.join(UPLOADS).symlink_metadata().is_ok()
}

/// A declared file of a task: read (`targetFiles`) or write (`outputFiles`).
fn declared(task: &Task) -> (&[String], &[String]) {
    (&task.spec.context.target_files, &task.spec.context.output_files)
}

/// A short name for a path or task id inside `.mcc/uploads/` (any text may be one).
fn key(text: &str) -> String {
    checkout::sha256_hex(text.as_bytes())[..32].to_owned()
}

impl Engine {
    /// The bound on one task's files, each way.
    fn files_bound(&self) -> u64 {
        self.config.max_task_files_bytes
    }

    /// `(task, attempt)` is `worker`'s current grant; else the refusal is sent.
    fn granted(&mut self, conn: ConnId, worker: &str, task: &str, attempt: Option<u32>) -> Option<(u32, Task)> {
        match self.scheduler.check_holder(worker, task, attempt) {
            Ok(t) => Some((t.attempt(), t.clone())),
            Err(refusal) => {
                self.refuse(conn, &refusal);
                None
            }
        }
    }

    fn checkout(&self) -> Result<Checkout, String> {
        Checkout::open(&self.config.root)
    }

    /// `task_files`: the digests of the task's declared files in the hub's checkout.
    pub(super) fn task_files(&mut self, conn: ConnId, worker: &str, id: &str, attempt: Option<u32>) {
        let Some((attempt, task)) = self.granted(conn, worker, id, attempt) else { return };
        let (read_paths, write_paths) = declared(&task);
        let bound = self.files_bound();
        let listed = self.checkout().and_then(|checkout| {
            let (mut read, mut write, mut missing_read, mut missing_write) = (vec![], vec![], vec![], vec![]);
            let mut total = 0u64;
            for (paths, into, missing) in
                [(read_paths, &mut read, &mut missing_read), (write_paths, &mut write, &mut missing_write)]
            {
                for path in paths {
                    let Some(digest) = checkout.digest(path, bound)? else {
                        missing.push(path.clone());
                        continue;
                    };
                    total += digest.size;
                    if total > bound {
                        return Err(over_bound(id, path, total, bound, "to send"));
                    }
                    into.push(digest);
                }
            }
            Ok(ServerMsg::TaskFiles {
                task_id: id.to_owned(),
                attempt,
                read,
                write,
                missing_read,
                missing_write,
                commit: checkout::head_commit(&self.config.root),
            })
        });
        match listed {
            Ok(answer) => self.send(conn, answer),
            Err(text) => self.send(conn, ServerMsg::error_code(text, "task_files_refused")),
        }
    }

    /// `fetch_file`: one part of a declared file of the task.
    pub(super) fn fetch_file(
        &mut self,
        conn: ConnId,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        path: &str,
        offset: u64,
    ) {
        let Some((_, task)) = self.granted(conn, worker, id, attempt) else { return };
        let (read, write) = declared(&task);
        if !read.iter().chain(write).any(|p| p == path) {
            let text = format!(
                "`{path}` is not a declared file of task {id}; only the task's read files (context.targetFiles) and write files (context.outputFiles) travel"
            );
            self.send(conn, ServerMsg::error_code(text, "undeclared_file"));
            return;
        }
        match self.checkout().and_then(|c| c.read_part(path, offset, checkout::PART)) {
            Ok((size, bytes)) if size <= self.files_bound() => {
                let data = data_encoding::BASE64.encode(&bytes);
                self.send(conn, ServerMsg::FilePart { path: path.to_owned(), offset, size, data });
            }
            Ok((size, _)) => {
                let text = over_bound(id, path, size, self.files_bound(), "to send");
                self.send(conn, ServerMsg::error_code(text, "task_files_refused"));
            }
            Err(text) => self.send(conn, ServerMsg::error_code(text, "task_files_refused")),
        }
    }

    /// `upload`: one part of a declared write file, staged; the checkout is untouched.
    pub(super) fn upload(&mut self, conn: ConnId, worker: &str, id: &str, attempt: Option<u32>, part: UploadPart) {
        let Some((attempt, task)) = self.granted(conn, worker, id, attempt) else { return };
        let staged = self.stage(id, attempt, &task, &part);
        match staged {
            Ok(received) => {
                let message = format!("received {received} of {} bytes of {}", part.size, part.path);
                self.send(
                    conn,
                    ServerMsg::Ack { what: "upload".into(), message, task_id: Some(id.to_owned()), next: None },
                );
            }
            Err(text) => self.send(conn, ServerMsg::error_code(text, "upload_refused")),
        }
    }

    /// Keep one part under the attempt's folder; the bytes received so far.
    fn stage(&mut self, id: &str, attempt: u32, task: &Task, part: &UploadPart) -> Result<u64, String> {
        let path = &part.path;
        checkout::check_path(path)?;
        if !declared(task).1.iter().any(|p| p == path) {
            return Err(format!(
                "`{path}` is not a declared write file of task {id} (context.outputFiles); only those travel to the hub"
            ));
        }
        let bound = self.files_bound();
        if part.size > bound {
            return Err(over_bound(id, path, part.size, bound, "to receive"));
        }
        let bytes = data_encoding::BASE64
            .decode(part.data.as_bytes())
            .map_err(|e| format!("the part of `{path}` at offset {} is not base64: {e}", part.offset))?;
        let end = part.offset + bytes.len() as u64;
        if end > part.size {
            return Err(format!(
                "the part of `{path}` at offset {} passes its announced size of {} bytes",
                part.offset, part.size
            ));
        }
        let dir = self.attempt_dir(id, attempt, true)?.folder_or_create("staged").map_err(|e| e.to_string())?;
        let file = key(path);
        let parts = staged_parts(&dir, &file)?;
        if part.offset == 0 {
            // A new start (a `done` run again after a cut): what came before goes.
            for offset in parts.keys() {
                let _ = dir.remove(&format!("{file}.{offset}"));
            }
        } else {
            let received: u64 = parts.values().sum();
            if received != part.offset {
                return Err(format!(
                    "the part of `{path}` at offset {} does not follow the {received} bytes received; send the file again from offset 0",
                    part.offset
                ));
            }
        }
        // The announced size and hash go with the first part: the `done` checks the whole against them.
        dir.write_atomic(&format!("{file}.{}", part.offset), &bytes).map_err(|e| e.to_string())?;
        Ok(end)
    }

    /// `.mcc/uploads/TASK-ATTEMPT/`, made when `create`.
    fn attempt_dir(&mut self, id: &str, attempt: u32, create: bool) -> Result<StateDir, String> {
        self.uploads_seen |= create;
        let state = StateDir::open(&self.config.state_dir).map_err(|e| e.to_string())?;
        let name = format!("{}-{attempt}", key(id));
        let dir = if create {
            state.folder_or_create(UPLOADS).and_then(|d| d.folder_or_create(&name))
        } else {
            state.folder(UPLOADS).and_then(|d| d.folder(&name))
        };
        dir.map_err(|e| e.to_string())
    }

    /// At `done`, after the fence: write the staged files named by `files`
    /// into the checkout, all or none. The error says what was wrong; the
    /// checkout is then as it was.
    pub(super) fn apply_uploads(&mut self, id: &str, attempt: u32, files: &[FileDigest]) -> Result<(), String> {
        self.try_apply(id, attempt, files)
            .map_err(|e| if e.ends_with("nothing was applied") { e } else { format!("{e}; nothing was applied") })
    }

    fn try_apply(&mut self, id: &str, attempt: u32, files: &[FileDigest]) -> Result<(), String> {
        let task = self.scheduler.task(id).cloned().ok_or_else(|| format!("unknown task `{id}`"))?;
        let bound = self.files_bound();
        let total: u64 = files.iter().map(|f| f.size).sum();
        if let Some(largest) = files.iter().max_by_key(|f| f.size).filter(|_| total > bound) {
            return Err(over_bound(id, &largest.path, total, bound, "to receive"));
        }
        let checkout = self.checkout()?;
        let dir = self.attempt_dir(id, attempt, true)?;
        let staged = dir.folder_or_create("staged").map_err(|e| e.to_string())?;
        // Everything is checked and read before the first byte is written.
        let mut contents = Vec::with_capacity(files.len());
        for file in files {
            checkout::check_path(&file.path)?;
            if !declared(&task).1.contains(&file.path) {
                return Err(format!("`{}` is not a declared write file of task {id} (context.outputFiles)", file.path));
            }
            let bytes = assemble(&staged, &file.path, bound)?;
            if bytes.len() as u64 != file.size || checkout::sha256_hex(&bytes) != file.sha256 {
                return Err(format!(
                    "the upload of `{}` is incomplete or changed ({} of {} bytes arrived, or their SHA-256 differs); run `done` again to send it whole",
                    file.path,
                    bytes.len(),
                    file.size
                ));
            }
            checkout.check_writable(&file.path)?;
            contents.push((file.path.clone(), bytes));
        }
        // The previous content, kept once per attempt: a `done` run again
        // after a cut must not take the first one's files for the old ones.
        if !dir.has(APPLIED) {
            let before = dir.folder_or_create("before").map_err(|e| e.to_string())?;
            for (path, _) in &contents {
                let name = key(path);
                match checkout.read(path, bound)? {
                    Some(old) => before.write_atomic(&name, &old).map_err(|e| e.to_string())?,
                    None => before.write_atomic(&format!("{name}.absent"), b"").map_err(|e| e.to_string())?,
                }
            }
            let paths: Vec<&str> = contents.iter().map(|(p, _)| p.as_str()).collect();
            let listed = serde_json::to_vec(&paths).expect("a list of paths serializes");
            dir.write_atomic(APPLIED, &listed).map_err(|e| e.to_string())?;
        }
        for (i, (path, bytes)) in contents.iter().enumerate() {
            if let Err(e) = checkout.write(path, bytes) {
                // All or none: what was written goes back.
                for (written, _) in &contents[..i] {
                    let _ = restore(&checkout, &dir, written, bound);
                }
                let _ = dir.remove(APPLIED);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A verdict on `(id, attempt)`: a rejection puts back the files its
    /// upload replaced; either way the attempt's upload folder goes.
    pub(super) fn uploads_judged(&mut self, id: &str, attempt: u32, accepted: bool) {
        // No folder to look for: opening `.mcc/` at every verdict was 3.5% of the hub's CPU.
        if !self.uploads_seen {
            return;
        }
        let Ok(dir) = self.attempt_dir(id, attempt, false) else { return };
        if !accepted && let Ok(listed) = dir.read_bounded(APPLIED, crate::layout::SMALL_FILE * 16) {
            let paths: Vec<String> = serde_json::from_slice(&listed).unwrap_or_default();
            match self.checkout() {
                Ok(checkout) => {
                    for path in paths {
                        if let Err(e) = restore(&checkout, &dir, &path, self.files_bound()) {
                            tracing::warn!("mcc hub: task {id}: cannot put back {path} after its rejection: {e}");
                        }
                    }
                }
                Err(e) => tracing::warn!("mcc hub: task {id}: cannot put back its files after its rejection: {e}"),
            }
        }
        if let Ok(uploads) = StateDir::open(&self.config.state_dir).and_then(|s| s.folder(UPLOADS)) {
            remove_tree(&uploads, &format!("{}-{attempt}", key(id)));
        }
    }
}

/// One `upload` message's part.
pub struct UploadPart {
    pub path: String,
    pub offset: u64,
    pub size: u64,
    pub data: String,
}

/// The staged parts of one file: offset to length.
fn staged_parts(dir: &StateDir, file: &str) -> Result<BTreeMap<u64, u64>, String> {
    let mut parts = BTreeMap::new();
    for name in dir.list().map_err(|e| format!("cannot list {}: {e}", dir.path().display()))? {
        let Some(offset) = name.strip_prefix(file).and_then(|r| r.strip_prefix('.')).and_then(|o| o.parse().ok())
        else {
            continue;
        };
        // Its size, not its bytes: each part would otherwise read all those before it.
        let file = dir.open_file(&name).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| format!("{}: {e}", dir.shown(&name).display()))?.len();
        parts.insert(offset, len);
    }
    Ok(parts)
}

/// The staged parts of `path`, in order and without a gap.
fn assemble(dir: &StateDir, path: &str, bound: u64) -> Result<Vec<u8>, String> {
    let file = key(path);
    let mut bytes = Vec::new();
    for offset in staged_parts(dir, &file)?.keys() {
        if *offset != bytes.len() as u64 || bytes.len() as u64 > bound {
            break;
        }
        bytes.extend(dir.read_bounded(&format!("{file}.{offset}"), checkout::PART as u64).map_err(|e| e.to_string())?);
    }
    Ok(bytes)
}

/// Put `path` back as it was before the attempt's upload.
fn restore(checkout: &Checkout, dir: &StateDir, path: &str, bound: u64) -> Result<(), String> {
    let before = dir.folder("before").map_err(|e| e.to_string())?;
    let name = key(path);
    if before.has(&format!("{name}.absent")) {
        return checkout.remove(path);
    }
    match before.read_bounded(&name, bound) {
        Ok(bytes) => checkout.write(path, &bytes),
        Err(Refused::Missing(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Remove folder `name` of `parent` and what it holds (two levels: the
/// attempt's folder and its `staged/` and `before/`), never following a link.
fn remove_tree(parent: &StateDir, name: &str) {
    if let Ok(dir) = parent.folder(name) {
        for entry in dir.list().unwrap_or_default() {
            if let Ok(sub) = dir.folder(&entry) {
                for file in sub.list().unwrap_or_default() {
                    let _ = sub.remove(&file);
                }
                let _ = dir.remove_folder(&entry);
            } else {
                let _ = dir.remove(&entry);
            }
        }
    }
    let _ = parent.remove_folder(name);
}

/// The error for files over the bound, naming the file and the bound.
fn over_bound(id: &str, path: &str, size: u64, bound: u64, way: &str) -> String {
    format!(
        "task {id}'s files {way} reach {size} bytes at `{path}`, over the hub's bound of {bound} bytes per task; nothing was {}: start the hub with a larger `--max-task-files-bytes`, or make the file smaller",
        if way == "to send" { "sent" } else { "applied" }
    )
}
