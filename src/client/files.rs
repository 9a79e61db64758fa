//! The client half of the file transport, for chats whose sandbox forbids
//! every socket (Codex's blocks even loopback) but lets them write files
//! under the project: a request is written whole to
//! `.mcc/requests/ID.json` (a temporary name, then a rename), and the hub
//! writes its answer to `.mcc/answers/ID.json`. The ID is chosen here at
//! random and is the request's identity: the hub acts on each ID once.
//!
//! The client removes both files once it has read the answer; the hub
//! removes what a killed client left behind after [`STALE`](crate::layout::STALE). The paths and
//! the request file's format are [`crate::layout`]'s, shared with the hub.

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::ClientError;
use crate::layout::{Layout, RequestFile, allowed};
use crate::wire::{ClientMsg, ServerMsg};

/// How often the client looks for its answer even without a file event:
/// a safety net for file systems where change events are not delivered.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// Whether a hub holds `.mcc/hub.lock` (it takes the lock exclusively for
/// its whole life). A file lock works where sockets are forbidden.
pub fn hub_alive(layout: &Layout) -> bool {
    let Ok(lock) = fs::File::open(layout.hub_lock()) else { return false };
    match lock.try_lock_shared() {
        Ok(()) => {
            let _ = lock.unlock();
            false
        }
        Err(_) => true,
    }
}

/// Whether no hub holds `.mcc/hub.lock` within `limit`: a hub that is
/// stopping lets go of it as its process ends, so a client that found the
/// socket closed a moment earlier can tell "stopped" from "out of reach".
pub fn hub_gone_within(layout: &Layout, limit: Duration) -> bool {
    let Ok(lock) = fs::File::open(layout.hub_lock()) else { return true };
    let (tx, rx) = mpsc::channel();
    // Blocks until the hub lets go; the shared lock ends with the thread.
    std::thread::spawn(move || {
        let _ = tx.send(lock.lock_shared().is_ok());
    });
    rx.recv_timeout(limit).unwrap_or(false)
}

/// A fresh request ID: 128 random bits in hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes.iter().fold(String::with_capacity(32), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Send one message through files and wait at most `limit` for its answer.
pub fn ask(layout: &Layout, msg: &ClientMsg, limit: Duration) -> Result<ServerMsg, ClientError> {
    if !allowed(msg) {
        return Err(ClientError::Refused {
            url: layout.requests().display().to_string(),
            reason: "only worker commands (next, done, block, fail, progress, leave) and status go through files; run this one where the hub's socket can be reached".into(),
        });
    }
    if !hub_alive(layout) {
        return Err(ClientError::NotAlive { root: layout.root().display().to_string() });
    }
    let (requests, answers) = (layout.requests(), layout.answers());
    let io =
        |path: &Path, e: std::io::Error| ClientError::Files { path: path.display().to_string(), reason: e.to_string() };
    fs::create_dir_all(&requests).map_err(|e| io(&requests, e))?;
    fs::create_dir_all(&answers).map_err(|e| io(&answers, e))?;

    let id = new_id();
    let (request, answer) = (layout.request(&id), layout.answer(&id));
    // Watch before writing, so an answer that comes at once is not missed.
    let (tx, rx) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    })
    .and_then(|mut w| w.watch(&answers, RecursiveMode::NonRecursive).map(|()| w));
    let message: serde_json::Value = serde_json::from_str(&msg.to_json()).expect("a frame is JSON");
    let body = serde_json::to_vec(&RequestFile { id: id.clone(), message }).expect("serializes");
    crate::text::write_atomic(&request, &body).map_err(|e| io(&request, e))?;

    let deadline = Instant::now() + limit;
    loop {
        match fs::read(&answer) {
            Ok(bytes) => {
                // The request first: once it is gone, no restarted hub acts on it again.
                let _ = fs::remove_file(&request);
                let _ = fs::remove_file(&answer);
                let msg: ServerMsg = serde_json::from_slice(&bytes).map_err(|e| ClientError::Garbled(e.to_string()))?;
                if let ServerMsg::ServerShutdown { message } = msg {
                    return Err(ClientError::Shutdown(message));
                }
                return Ok(msg);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&answer, e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Withdraw it: a hub that comes back later must not act for a client that gave up.
            let _ = fs::remove_file(&request);
            return Err(ClientError::Timeout(limit));
        }
        let nap = left.min(LOOK_AGAIN);
        if watcher.is_ok() {
            let _ = rx.recv_timeout(nap);
        } else {
            std::thread::sleep(nap);
        }
    }
}
