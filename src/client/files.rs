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
//! Both folders are reached through [`StateDir`] handles that follow no
//! link, and an answer is read only if it is a regular file within
//! [`MAX_ANSWER`].

use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::ClientError;
use crate::layout::{ALLOWED, Layout, Refused, RequestFile, StateDir, allowed};
use crate::wire::{ClientMsg, ServerMsg};

/// How often the client looks for its answer even without a file event:
/// a safety net for file systems where change events are not delivered.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// The largest answer file read: what a socket client takes in one message
/// (tungstenite's default), so no answer the socket carries is refused here.
pub const MAX_ANSWER: u64 = 64 << 20;

/// Whether a hub holds `.mcc/hub.lock` (it takes the lock exclusively for
/// its whole life). A file lock works where sockets are forbidden.
pub fn hub_alive(layout: &Layout) -> bool {
    let Ok(lock) = layout.open().and_then(|state| state.open_file("hub.lock")) else { return false };
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
    let Ok(lock) = layout.open().and_then(|state| state.open_file("hub.lock")) else { return true };
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
            reason: format!("only {ALLOWED} go through files; run this one where the hub's socket can be reached"),
        });
    }
    if !hub_alive(layout) {
        return Err(ClientError::NotAlive { root: layout.root().display().to_string() });
    }
    let refused = |r: Refused| ClientError::Files { path: layout.dir().display().to_string(), reason: r.to_string() };
    let state = StateDir::open(layout.dir()).map_err(refused)?;
    let requests = state.folder_or_create("requests").map_err(refused)?;
    let answers_dir = state.folder_or_create("answers").map_err(refused)?;
    let answers = layout.answers();

    let id = new_id();
    let name = format!("{id}.json");
    // Watch before writing, so an answer that comes at once is not missed.
    let (tx, rx) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    })
    .and_then(|mut w| w.watch(&answers, RecursiveMode::NonRecursive).map(|()| w));
    let message: serde_json::Value = serde_json::from_str(&msg.to_json()).expect("a frame is JSON");
    let body = serde_json::to_vec(&RequestFile { id: id.clone(), message }).expect("serializes");
    requests.write_atomic(&name, &body).map_err(refused)?;

    let deadline = Instant::now() + limit;
    loop {
        match answers_dir.read_bounded(&name, MAX_ANSWER) {
            Ok(bytes) => {
                // The request first: once it is gone, no restarted hub acts on it again.
                let _ = requests.remove(&name);
                let _ = answers_dir.remove(&name);
                let msg: ServerMsg = serde_json::from_slice(&bytes).map_err(|e| ClientError::Garbled(e.to_string()))?;
                if let ServerMsg::ServerShutdown { message } = msg {
                    return Err(ClientError::Shutdown(message));
                }
                return Ok(msg);
            }
            Err(Refused::Missing(_)) => {}
            Err(e) => return Err(refused(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Withdraw it: a hub that comes back later must not act for a client that gave up.
            let _ = requests.remove(&name);
            return Err(ClientError::Timeout { url: layout.requests().display().to_string(), limit });
        }
        let nap = left.min(LOOK_AGAIN);
        if watcher.is_ok() {
            let _ = rx.recv_timeout(nap);
        } else {
            std::thread::sleep(nap);
        }
    }
}
