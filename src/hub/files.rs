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

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{self, ServerMsg};
use crate::engine::{EngineHandle, Input, Outgoing};
use crate::layout::{Layout, RequestFile, STALE, allowed, request_id};

/// How often files left behind are looked for.
const SWEEP: Duration = Duration::from_mins(1);

/// Start serving request files; the transport lives as long as the tokio runtime.
pub fn start(layout: &Layout, engine: EngineHandle, ids: Arc<AtomicU64>) -> Result<(), String> {
    let (requests, answers) = (layout.requests(), layout.answers());
    for dir in [&requests, &answers] {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
    let desk = Desk { layout: layout.clone(), engine, ids, taken: HashMap::new() };
    tokio::spawn(desk.serve(rx, watcher));
    Ok(())
}

/// The loop that takes request files in.
struct Desk {
    layout: Layout,
    engine: EngineHandle,
    ids: Arc<AtomicU64>,
    /// IDs taken in this run, with a way to withdraw each while it waits.
    taken: HashMap<String, (Instant, oneshot::Sender<()>)>,
}

impl Desk {
    async fn serve(mut self, mut events: mpsc::UnboundedReceiver<PathBuf>, watcher: notify::RecommendedWatcher) {
        let _watcher = watcher;
        // Left-overs first, so a request from a client long gone is not acted on.
        self.sweep();
        self.take_waiting();
        let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP, SWEEP);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(path) => self.consider(&path),
                    None => return,
                },
                _ = sweep.tick() => {
                    self.sweep();
                    // A safety net where file events can be lost or coalesced.
                    self.take_waiting();
                }
            }
        }
    }

    /// Take every request in the folder not taken yet: written while no hub
    /// ran, or whose file event was missed.
    fn take_waiting(&mut self) {
        let Ok(entries) = fs::read_dir(self.layout.requests()) else { return };
        let mut waiting: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        waiting.sort();
        for path in waiting {
            self.consider(&path);
        }
    }

    /// A file changed in the requests folder: take it if it is a new request.
    fn consider(&mut self, path: &Path) {
        let Some(id) = request_id(path) else { return };
        if let Some((_, withdraw)) = self.taken.get(&id) {
            // The client gave up and removed its request: stop waiting for it.
            if !path.exists()
                && !self.layout.answer(&id).exists()
                && !withdraw.is_closed()
                && let Some((_, withdraw)) = self.taken.remove(&id)
            {
                let _ = withdraw.send(());
            }
            return;
        }
        let answer = self.layout.answer(&id);
        if answer.exists() {
            // Answered before a restart; the client has not collected it yet.
            return;
        }
        let Ok(bytes) = fs::read(path) else { return };
        let message = match serde_json::from_slice::<RequestFile>(&bytes) {
            Err(e) => Err(format!(
                "request file {} is not a request ({e}); write {{\"id\": ID, \"message\": FRAME}} whole, then rename it",
                path.display()
            )),
            Ok(request) if request.id != id => {
                Err(format!("request file {} says its id is {}; the file name must be ID.json", path.display(), request.id))
            }
            Ok(request) => protocol::parse(&request.message.to_string()).and_then(|msg| {
                if allowed(&msg) {
                    Ok(msg)
                } else {
                    Err("only worker commands (next, done, block, fail, progress, leave) and status go through files; use the socket for this one".to_owned())
                }
            }),
        };
        let (withdraw, withdrawn) = oneshot::channel();
        self.taken.insert(id.clone(), (Instant::now(), withdraw));
        let request = Request { id, path: path.to_owned(), answer };
        match message {
            Ok(msg) => {
                let conn = self.ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(request.serve(conn, msg, self.engine.clone(), withdrawn));
            }
            Err(error) => request.answer(&ServerMsg::error(error)),
        }
    }

    /// Remove files older than [`STALE`] that no one waits on, and forget old IDs.
    fn sweep(&mut self) {
        self.taken.retain(|_, (at, _)| at.elapsed() < STALE);
        let old = |path: &Path| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE)
        };
        for dir in [self.layout.requests(), self.layout.answers()] {
            let Ok(entries) = fs::read_dir(dir) else { continue };
            for path in entries.flatten().map(|e| e.path()) {
                let waited_on = request_id(&path).is_some_and(|id| self.taken.contains_key(&id));
                if !waited_on && old(&path) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

/// One request being served.
struct Request {
    id: String,
    path: PathBuf,
    answer: PathBuf,
}

impl Request {
    /// Hand the message to the engine as a connection of its own and write its first answer.
    async fn serve(self, conn: u64, msg: protocol::ClientMsg, engine: EngineHandle, withdrawn: oneshot::Receiver<()>) {
        let (outbox, mut inbox) = mpsc::channel(crate::engine::OUTBOX);
        if !engine.send(Input::Connected { conn, outbox }) || !engine.send(Input::Message { conn, msg }) {
            return;
        }
        let answer = tokio::select! {
            out = inbox.recv() => match out {
                Some(Outgoing::Msg(msg)) => Some(msg),
                Some(Outgoing::Close | Outgoing::Mark(_)) | None => None,
            },
            _ = withdrawn => None,
        };
        engine.send(Input::Disconnected { conn });
        match answer {
            // A request its client withdrew gets no answer.
            Some(msg) if self.path.exists() => self.answer(&msg),
            _ => {}
        }
    }

    /// Write the answer whole, then drop the request: a hub killed between
    /// the two finds the answer at its next start and does not act twice.
    fn answer(&self, msg: &ServerMsg) {
        if let Err(e) = crate::text::write_atomic(&self.answer, msg.to_json().as_bytes()) {
            eprintln!("mcc hub: cannot answer request {}: {e}", self.id);
            return;
        }
        let _ = fs::remove_file(&self.path);
    }
}
