//! What a worker in a clone of the project on another machine does beyond
//! a local one (docs/remote.md, "What travels"): before a granted task is
//! printed, its declared read files, and on a first grant the hub's
//! content of its declared write files, are brought into the clone where
//! their SHA-256 differs; at `done`, the declared write files the clone
//! changed go up in parts before the `done` that names them. No other file
//! of the clone travels. One connection carries the verb and its files.
//!
//! Files travel in parts of [`checkout::PART`] bytes, one frame each, in
//! both directions: below `wire::MAX_FRAME` whatever the file, and a cut
//! connection costs one part; a cut among an upload's parts runs the whole
//! `done` again by itself within its wait, its files from the start (the hub
//! keeps nothing of an upload until a `done` applies it, and its (task,
//! attempt) fence judges a replayed `done` once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::worktree::Worktree;
use super::{ClientError, Connection, Target};
use crate::checkout::{self, Checkout};
use crate::wire::{ClientMsg, FileDigest, Offer, ServerMsg};

/// Whether `target` is a hub elsewhere, reached from a clone: the one
/// switch between a local worker and a remote one. A clone that joined the
/// hub (`mcc join` wrote `.mcc/remote.json` naming the target's address)
/// is; `MCC_REMOTE_CLONE=1` says so too.
pub fn is_remote(target: &Target) -> bool {
    std::env::var_os("MCC_REMOTE_CLONE").is_some_and(|v| v == "1") || super::joined(target)
}

/// The clone's root: the project root the target found, else the nearest
/// folder holding `.git` (a clone that has no `.mcc/` of its own).
fn clone_root(target: &Target) -> Result<PathBuf, String> {
    if let Some(root) = &target.root {
        return Ok(root.clone());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current folder: {e}"))?;
    cwd.ancestors().find(|dir| dir.join(".git").exists()).map(Path::to_path_buf).ok_or_else(|| {
        format!(
            "{} is not inside a clone of the project (no .git above it); run the command in the clone",
            cwd.display()
        )
    })
}

/// One exchange from a clone: `done`'s files go up first, the message is
/// sent, and the files of a task granted in the answer come down. The
/// lines returned say what travelled, for the end of the printed answer.
/// A worker verb whose connection is cut is run again from the start
/// within its wait, as a local one is (`client::resuming`). The outer error
/// is the connection's, kept typed so a hub that is down reads as down; the
/// inner one is what the exchange itself refused.
///
/// `worktree` is a clone on this machine instead: a worker's own worktree,
/// whose files travel as a remote clone's do.
pub fn exchange(
    target: &Target,
    worktree: Option<&Worktree>,
    msg: &ClientMsg,
    wait: Duration,
) -> Result<Result<(ServerMsg, Vec<String>), String>, ClientError> {
    let limit = wait + target.options.timeout;
    let until = std::time::Instant::now() + limit;
    let first = exchange_once(target, worktree, msg, limit);
    super::resuming(target, msg, until, first, |again, left| exchange_once(target, worktree, again, left))
}

/// One connection's worth of [`exchange`]: a [`ClientError`] may be a cut
/// (run again); what is said in a `String` is not.
fn exchange_once(
    target: &Target,
    worktree: Option<&Worktree>,
    msg: &ClientMsg,
    limit: Duration,
) -> Result<Result<(ServerMsg, Vec<String>), String>, ClientError> {
    let root = match worktree.map_or_else(|| clone_root(target), |w| Ok(w.folder())) {
        Ok(root) => root,
        Err(e) => return Ok(Err(e)),
    };
    let clone = match Checkout::open(&root) {
        Ok(clone) => clone,
        Err(e) => return Ok(Err(e)),
    };
    let mut conn = Connection::open(target)?;
    let mut lines = Vec::new();
    let msg = match msg {
        ClientMsg::Done { worker, task_id, attempt, .. } => {
            // A cut among the parts is run again by `exchange`, the upload from its start.
            let files = match upload(&mut conn, &clone, worker, task_id, *attempt)? {
                Ok(files) => files,
                Err(e) => return Ok(Err(e)),
            };
            if !files.is_empty() {
                let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                lines.push(format!("files sent to the hub: {}", paths.join(", ")));
            }
            let mut msg = msg.clone();
            if let ClientMsg::Done { files: sent, .. } = &mut msg {
                *sent = files;
            }
            msg
        }
        other => other.clone(),
    };
    // A cut here is run again by `exchange`: the hub's fence makes the replay safe.
    let reply = conn.request(&msg, limit)?;
    if let Some(Offer::Task { worker, task, attempt, held, returning, .. }) = offer_of(&reply) {
        let id = task.get("id").and_then(serde_json::Value::as_str).unwrap_or_default();
        // A returning worker's clone holds its own work on the write files: that is not overwritten.
        let mut writes_too = !held && !returning;
        let brought = match (worktree, &target.root) {
            // A worktree starts a task other than its last one afresh, from the checkout's commit.
            (Some(own), Some(main)) => own.before_grant(main, id).inspect(|fresh| writes_too = *fresh),
            _ => Ok(false),
        }
        .and_then(|fresh| {
            let brought = bring(&mut conn, &clone, &root, worker, id, *attempt, writes_too)?;
            if let (Some(own), true) = (worktree, fresh) {
                own.after_grant(id, *attempt, declared_writes(task))?;
            }
            Ok(brought)
        });
        match brought {
            Ok(brought) => lines.extend(brought),
            Err(e) => lines.push(format!(
                "the task's files could not be brought from the hub: {e}; run `mcc worker next --as {worker}` to try again"
            )),
        }
    }
    conn.close();
    Ok(Ok((reply, lines)))
}

/// A task's declared write files (`context.outputFiles`), as the grant names them.
fn declared_writes(task: &serde_json::Value) -> Vec<String> {
    task.pointer("/context/outputFiles")
        .and_then(serde_json::Value::as_array)
        .map(|files| files.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The offer in an answer, wherever it sits.
fn offer_of(reply: &ServerMsg) -> Option<&Offer> {
    match reply {
        ServerMsg::Offer { offer } | ServerMsg::Verdict { next: offer, .. } => Some(offer),
        ServerMsg::Ack { next, .. } => next.as_ref(),
        _ => None,
    }
}

/// The task's declared files as the hub's checkout holds them.
struct TaskFiles {
    read: Vec<FileDigest>,
    write: Vec<FileDigest>,
    /// Declared write files the hub does not have yet.
    missing_write: Vec<String>,
    commit: Option<String>,
}

/// Ask the hub for the task's files as its checkout holds them.
fn task_files(conn: &mut Connection, worker: &str, task: &str, attempt: Option<u32>) -> Result<TaskFiles, ClientError> {
    let ask = ClientMsg::TaskFiles { worker: worker.to_owned(), task_id: task.to_owned(), attempt };
    match conn.request(&ask, conn.timeout())? {
        ServerMsg::TaskFiles { read, write, missing_write, commit, .. } => {
            Ok(TaskFiles { read, write, missing_write, commit })
        }
        ServerMsg::Error { error, .. } => Err(ClientError::Refused { url: String::new(), reason: error }),
        other => Err(ClientError::Garbled(format!("expected `task_files`, got {}", other.to_json()))),
    }
}

/// The declared write files the clone changed, sent part by part; their
/// digests, for the `done`. A hub that does not let this worker list the
/// task's files gets the `done` alone, and answers it as it answers any.
/// The outer error is the connection's (a cut: the caller runs the whole
/// exchange again, and the upload restarts; the hub stages parts and
/// applies nothing until a `done` names them); the inner one is a refusal.
fn upload(
    conn: &mut Connection,
    clone: &Checkout,
    worker: &str,
    task: &str,
    attempt: Option<u32>,
) -> Result<Result<Vec<FileDigest>, String>, ClientError> {
    let files = match task_files(conn, worker, task, attempt) {
        Ok(files) => files,
        Err(ClientError::Refused { .. }) => return Ok(Ok(Vec::new())),
        Err(e) => return Err(e),
    };
    let hub_writes = files.write;
    let declared = hub_writes.iter().map(|f| f.path.clone()).chain(files.missing_write);
    let mut sent = Vec::new();
    for path in declared {
        // The hub bounds what it takes; the clone reads no more than that could be.
        let bytes = match clone.read(&path, u64::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(e) => return Ok(Err(e)),
        };
        let digest = checkout::digest_of(&path, &bytes);
        if hub_writes.contains(&digest) {
            continue;
        }
        let mut offset = 0;
        loop {
            let end = (offset + checkout::PART).min(bytes.len());
            let part = ClientMsg::Upload {
                worker: worker.to_owned(),
                task_id: task.to_owned(),
                attempt,
                path: path.clone(),
                offset: offset as u64,
                size: digest.size,
                sha256: digest.sha256.clone(),
                data: data_encoding::BASE64.encode(&bytes[offset..end]),
            };
            match conn.request(&part, conn.timeout())? {
                ServerMsg::Ack { .. } => {}
                ServerMsg::Error { error, .. } => return Ok(Err(error)),
                other => return Ok(Err(format!("the hub answered an upload with {}", other.to_json()))),
            }
            offset = end;
            if offset >= bytes.len() {
                break;
            }
        }
        sent.push(digest);
    }
    Ok(Ok(sent))
}

/// Bring the task's files that differ into the clone; the lines to print.
fn bring(
    conn: &mut Connection,
    clone: &Checkout,
    root: &Path,
    worker: &str,
    task: &str,
    attempt: u32,
    writes_too: bool,
) -> Result<Vec<String>, String> {
    let TaskFiles { read, write, commit, .. } = task_files(conn, worker, task, Some(attempt)).map_err(|e| match e {
        ClientError::Refused { reason, .. } => reason,
        other => other.to_string(),
    })?;
    let mut lines = Vec::new();
    if let (Some(hub), Some(here)) = (commit, checkout::head_commit(root))
        && hub != here
    {
        lines.push(format!(
            "note: this clone is at commit {} and the hub's checkout at {}; the task's declared files come from the hub, other files may differ",
            short(&here),
            short(&hub)
        ));
    }
    let wanted = read.iter().chain(if writes_too { write.as_slice() } else { &[] });
    let (mut brought, mut same) = (Vec::new(), 0);
    for digest in wanted {
        // Unbounded: a clone's copy larger than the hub's only differs, it is no error.
        let here = clone.read(&digest.path, u64::MAX)?;
        if here.is_some_and(|bytes| checkout::sha256_hex(&bytes) == digest.sha256) {
            same += 1;
            continue;
        }
        let bytes = fetch(conn, worker, task, attempt, digest)?;
        clone.write(&digest.path, &bytes)?;
        brought.push(digest.path.as_str());
    }
    if !brought.is_empty() {
        let here = if same > 0 { format!("; {same} already here") } else { String::new() };
        lines.push(format!("files from the hub: {}{here}", brought.join(", ")));
    }
    Ok(lines)
}

/// One file of the hub's checkout, part by part, checked against its digest.
fn fetch(
    conn: &mut Connection,
    worker: &str,
    task: &str,
    attempt: u32,
    digest: &FileDigest,
) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(usize::try_from(digest.size).unwrap_or_default());
    loop {
        let ask = ClientMsg::FetchFile {
            worker: worker.to_owned(),
            task_id: task.to_owned(),
            attempt: Some(attempt),
            path: digest.path.clone(),
            offset: bytes.len() as u64,
        };
        let (size, data) = match conn.request(&ask, conn.timeout()).map_err(|e| e.to_string())? {
            ServerMsg::FilePart { size, data, .. } => (size, data),
            ServerMsg::Error { error, .. } => return Err(error),
            other => return Err(format!("the hub answered `fetch_file` with {}", other.to_json())),
        };
        let part = data_encoding::BASE64
            .decode(data.as_bytes())
            .map_err(|e| format!("the hub sent a part of `{}` that is not base64: {e}", digest.path))?;
        bytes.extend(part.iter());
        if part.is_empty() || bytes.len() as u64 >= size.min(digest.size) {
            break;
        }
    }
    if checkout::sha256_hex(&bytes) != digest.sha256 {
        return Err(format!("`{}` changed on the hub while it travelled", digest.path));
    }
    Ok(bytes)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
