//! The hub half of the file transport (the client half is `client::files`,
//! the paths and the request format [`crate::layout`]'s): watches `.mcc/requests/`, feeds each
//! request to the engine as a short connection of its own, exactly as a
//! socket connection would (`Connected`, one `Message`, `Disconnected`), and
//! writes the engine's first answer to `.mcc/answers/ID.json`.
//!
//! Each request ID is acted on once: IDs taken in this run are remembered,
//! and a request whose answer file exists was answered before a restart.
//! Requests written while no hub ran are found by a scan at start; files
//! left by killed clients are removed once older than [`STALE`].
//!
//! Every file is reached through [`StateDir`] handles, which follow no link:
//! a request that is a link, a FIFO or any other special file is refused
//! with a problem (shown by `mcc status`) and left in place, and one larger
//! than the frame limit (`--max-frame-bytes`) is moved to
//! `requests/rejected/` unread, and answered with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{EngineHandle, Input, Outgoing};
use crate::layout::{ALLOWED, Layout, Refused, RequestFile, STALE, StateDir, allowed, move_aside_in, request_id};
use crate::wire::{self, ServerMsg};

/// How often files left behind are looked for.
const SWEEP: Duration = Duration::from_mins(1);

/// Start serving request files; the transport lives as long as the tokio runtime.
/// Request files larger than `max_bytes` (the frame limit) are refused unread.
pub fn start(layout: &Layout, engine: EngineHandle, ids: Arc<AtomicU64>, max_bytes: usize) -> Result<(), String> {
    let requests = layout.requests();
    let state = layout.open().map_err(|e| e.to_string())?;
    for name in ["requests", "answers"] {
        state.folder_or_create(name).map_err(|e| e.to_string())?;
    }
    let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })
    .map_err(|e| e.to_string())?;
    watcher.watch(&requests, RecursiveMode::NonRecursive).map_err(|e| format!("{}: {e}", requests.display()))?;
    let desk = Desk { state, engine, ids, max_bytes: max_bytes as u64, taken: HashMap::new() };
    tokio::spawn(desk.serve(rx, watcher));
    Ok(())
}

/// The loop that takes request files in.
struct Desk {
    /// `.mcc/`, opened at start: a link put in its place later is not followed.
    state: StateDir,
    engine: EngineHandle,
    ids: Arc<AtomicU64>,
    max_bytes: u64,
    /// IDs taken in this run, with a way to withdraw each while it waits.
    taken: HashMap<String, (Instant, oneshot::Sender<()>)>,
}

impl Desk {
    async fn serve(mut self, mut events: mpsc::UnboundedReceiver<PathBuf>, watcher: notify::RecommendedWatcher) {
        let _watcher = watcher;
        // Left-overs first, so a request from a client long gone is not acted on.
        self.sweep().await;
        self.take_waiting().await;
        let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP, SWEEP);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(path) => self.consider(&path).await,
                    None => return,
                },
                _ = sweep.tick() => {
                    self.sweep().await;
                    // A safety net where file events can be lost or coalesced.
                    self.take_waiting().await;
                }
            }
        }
    }

    /// Take every request in the folder not taken yet: written while no hub
    /// ran, or whose file event was missed.
    async fn take_waiting(&mut self) {
        let Some(requests) = self.folder("requests").await else { return };
        let Ok(waiting) = requests.list() else { return };
        for name in waiting {
            self.consider(&requests.shown(&name)).await;
        }
    }

    /// A folder of `.mcc/`, or a problem saying why it cannot be used.
    async fn folder(&self, name: &str) -> Option<StateDir> {
        match self.state.folder(name) {
            Ok(folder) => Some(folder),
            Err(refused) => {
                let about = self.state.shown(name).display().to_string();
                self.engine.send_async(Input::Problem { about, text: format!("file transport: {refused}") }).await;
                None
            }
        }
    }

    /// A file changed in the requests folder: take it if it is a new request.
    async fn consider(&mut self, path: &Path) {
        let Some(id) = request_id(path) else { return };
        let name = format!("{id}.json");
        let (Some(requests), Some(answers)) = (self.folder("requests").await, self.folder("answers").await) else {
            return;
        };
        if let Some((_, withdraw)) = self.taken.get(&id) {
            // The client gave up and removed its request: stop waiting for it.
            if !requests.has(&name)
                && !answers.has(&name)
                && !withdraw.is_closed()
                && let Some((_, withdraw)) = self.taken.remove(&id)
            {
                let _ = withdraw.send(());
            }
            return;
        }
        if answers.has(&name) {
            // Answered before a restart; the client has not collected it yet.
            return;
        }
        let bytes = match requests.read_bounded(&name, self.max_bytes) {
            Ok(bytes) => Ok(bytes),
            Err(Refused::Missing(_)) => return,
            Err(refused @ Refused::TooLarge { .. }) => {
                let reason = format!(
                    "request file refused: {refused} (the hub's frame limit; raise it with `mcc hub --max-frame-bytes`)"
                );
                let reason = match move_aside_in(&requests, &name, &reason) {
                    Ok(moved) => format!("{reason}; moved to {}", moved.display()),
                    Err(e) => format!("{reason}; left in place: {e}"),
                };
                self.engine
                    .send_async(Input::Problem { about: path.display().to_string(), text: reason.clone() })
                    .await;
                Err(reason)
            }
            Err(refused) => {
                // A link, a FIFO, a device: never read, never moved, named.
                let text = format!("request file refused and left in place: {refused}");
                self.engine.send_async(Input::Problem { about: path.display().to_string(), text }).await;
                return;
            }
        };
        let message = bytes.and_then(|bytes| match serde_json::from_slice::<RequestFile>(&bytes) {
            Err(e) => Err(format!(
                "request file {} is not a request ({e}); write {{\"id\": ID, \"message\": FRAME}} whole, then rename it",
                path.display()
            )),
            Ok(request) if request.id != id => {
                Err(format!("request file {} says its id is {}; the file name must be ID.json", path.display(), request.id))
            }
            Ok(request) => wire::parse(&request.message.to_string()).and_then(|msg| {
                if allowed(&msg) {
                    Ok(msg)
                } else {
                    Err(format!("only {ALLOWED} go through files; use the socket for this one"))
                }
            }),
        });
        let (withdraw, withdrawn) = oneshot::channel();
        self.taken.insert(id.clone(), (Instant::now(), withdraw));
        let request = Request { id, name, requests, answers };
        match message {
            Ok(msg) => {
                let conn = self.ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(request.serve(conn, msg, self.engine.clone(), withdrawn));
            }
            Err(error) => request.answer(&ServerMsg::error(error)),
        }
    }

    /// Remove files older than [`STALE`] that no one waits on, and forget
    /// old IDs. Only regular files go: a link or a FIFO is left where it is.
    async fn sweep(&mut self) {
        self.taken.retain(|_, (at, _)| at.elapsed() < STALE);
        let old = |dir: &StateDir, name: &str| {
            dir.modified(name).is_some_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE)
        };
        for folder in ["requests", "answers"] {
            let Some(dir) = self.folder(folder).await else { continue };
            let Ok(names) = dir.list() else { continue };
            for name in names {
                let waited_on = request_id(Path::new(&name)).is_some_and(|id| self.taken.contains_key(&id));
                if !waited_on && old(&dir, &name) {
                    let _ = dir.remove(&name);
                }
            }
        }
    }
}

/// One request being served.
struct Request {
    id: String,
    /// `ID.json`, in both folders.
    name: String,
    requests: StateDir,
    answers: StateDir,
}

impl Request {
    /// Hand the message to the engine as a connection of its own and write its first answer.
    async fn serve(self, conn: u64, msg: wire::ClientMsg, engine: EngineHandle, withdrawn: oneshot::Receiver<()>) {
        let (outbox, mut inbox) = mpsc::channel(crate::engine::OUTBOX);
        if !engine.send_async(Input::Connected { conn, outbox }).await
            || !engine.send_async(Input::Message { conn, msg }).await
        {
            return;
        }
        let answer = tokio::select! {
            out = inbox.recv() => match out {
                Some(Outgoing::Msg(msg)) => Some(msg),
                Some(Outgoing::Close | Outgoing::Mark(_)) | None => None,
            },
            _ = withdrawn => None,
        };
        engine.send_async(Input::Disconnected { conn }).await;
        match answer {
            // A request its client withdrew gets no answer.
            Some(msg) if self.requests.has(&self.name) => self.answer(&msg),
            _ => {}
        }
    }

    /// Write the answer whole, then drop the request: a hub killed between
    /// the two finds the answer at its next start and does not act twice.
    fn answer(&self, msg: &ServerMsg) {
        if let Err(e) = self.answers.write_atomic(&self.name, msg.to_json().as_bytes()) {
            tracing::warn!("mcc hub: cannot answer request {}: {e}", self.id);
            return;
        }
        let _ = self.requests.remove(&self.name);
    }
}
