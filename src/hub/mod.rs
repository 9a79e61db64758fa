//! The WebSocket hub: listens on loopback, checks every handshake, and runs
//! one small task per connection that turns frames into engine inputs and
//! engine answers into frames.

pub mod guard;
// The wire types live in `crate::wire`, so the engine does not depend on the hub.
pub use crate::wire as protocol;

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::engine::{Config, Engine, EngineHandle, Input, Loader, Outgoing};
use crate::scheduler::Settings;
use crate::watch::ReportWatcher;
use guard::Guard;
use protocol::ServerMsg;

/// The default port, as the old server had it.
pub const DEFAULT_PORT: u16 = 3100;
/// The largest frame a client may send.
pub const MAX_FRAME: usize = 1 << 20;
/// How many connections may be open at once.
pub const MAX_CONNECTIONS: usize = 512;

/// What `.mcc/hub.json` says: where the running hub listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubFile {
    pub url: String,
    pub port: u16,
    pub pid: u32,
    /// True when clients must send the token in `.mcc/token`.
    pub token_required: bool,
    pub root: String,
}

impl HubFile {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("hub.json")
    }

    pub fn read(state_dir: &Path) -> Option<Self> {
        let text = fs::read_to_string(Self::path(state_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A hub that could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another hub already serves {root} ({url}); stop it first, or use another --dir")]
    AlreadyRunning { root: String, url: String },
    #[error("cannot listen on {addr}: {source}; is the port taken? choose another with --port")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot watch the reports folder: {0}")]
    Watch(String),
}

/// How to run a hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub root: PathBuf,
    pub port: u16,
    /// Listen here instead of loopback; requires the token.
    pub bind: Option<IpAddr>,
    pub settings: Settings,
    pub loader: Option<Loader>,
    /// A workflow to load at start.
    pub workflow: Option<PathBuf>,
    /// Print nothing but errors.
    pub quiet: bool,
}

/// A started hub.
pub struct RunningHub {
    pub engine: EngineHandle,
    pub url: String,
    pub port: u16,
    /// Resolves when the engine thread ends, with its result.
    engine_done: tokio::sync::oneshot::Receiver<Result<(), crate::store::StoreError>>,
    /// One permit per open connection; all back means every socket closed.
    slots: Arc<Semaphore>,
    state_dir: PathBuf,
    _lock: fs::File,
    _watcher: ReportWatcher,
}

/// The state folder of a project root, created if missing.
pub fn state_dir(root: &Path) -> Result<PathBuf, HubError> {
    let dir = root.join(".mcc");
    fs::create_dir_all(dir.join("reports")).map_err(|source| HubError::Io { path: dir.clone(), source })?;
    Ok(dir)
}

/// Start listening and serving; returns once the hub accepts connections.
pub async fn start(options: HubOptions) -> Result<RunningHub, HubError> {
    let root = fs::canonicalize(&options.root).map_err(|source| HubError::Io { path: options.root.clone(), source })?;
    let state_dir = state_dir(&root)?;
    let lock_path = state_dir.join("hub.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| HubError::Io { path: lock_path.clone(), source })?;
    if lock.try_lock().is_err() {
        let url = HubFile::read(&state_dir).map_or_else(|| "unknown address".to_owned(), |h| h.url);
        return Err(HubError::AlreadyRunning { root: root.display().to_string(), url });
    }

    let (listeners, port) = bind(options.bind, options.port).await?;
    let token = match options.bind {
        Some(ip) if !ip.is_loopback() => Some(load_or_create_token(&state_dir)?),
        _ => None,
    };
    let host = match options.bind {
        Some(ip) if !ip.is_loopback() => SocketAddr::new(ip, port).to_string(),
        _ => format!("127.0.0.1:{port}"),
    };
    let url = format!("ws://{host}");

    let (engine, engine_thread) = Engine::start(Config {
        root: root.clone(),
        state_dir: state_dir.clone(),
        settings: options.settings.clone(),
        loader: options.loader,
        validation_limit: Duration::from_mins(10),
    })?;
    if let Some(workflow) = options.workflow.clone() {
        engine.send(Input::LoadWorkflow { conn: None, path: workflow });
    }
    let watcher = ReportWatcher::start(&root, &state_dir, engine.clone()).map_err(HubError::Watch)?;

    let guard = Arc::new(Guard { port, token: token.clone() });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let ids = Arc::new(AtomicU64::new(1));
    for listener in listeners {
        tokio::spawn(accept_loop(listener, engine.clone(), guard.clone(), slots.clone(), ids.clone()));
    }

    let hub_file = HubFile {
        url: url.clone(),
        port,
        pid: std::process::id(),
        token_required: token.is_some(),
        root: root.display().to_string(),
    };
    write_atomically(&HubFile::path(&state_dir), &serde_json::to_vec_pretty(&hub_file).expect("serializes"))?;
    if !options.quiet {
        eprintln!("mcc hub: listening on {url} for {}", root.display());
    }
    let (done_tx, engine_done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = engine_thread.join().unwrap_or_else(|_| {
            Err(crate::store::StoreError::Crashed("the engine thread panicked; see the message above".into()))
        });
        let _ = done_tx.send(result);
    });
    Ok(RunningHub { engine, url, port, engine_done, slots, state_dir, _lock: lock, _watcher: watcher })
}

impl RunningHub {
    /// Tell every client, commit, and stop.
    pub async fn stop(mut self, message: &str) -> Result<(), HubError> {
        self.engine.send(Input::Shutdown { message: message.to_owned() });
        let result = (&mut self.engine_done).await;
        // Let connections flush `server_shutdown` and close, for a bounded time.
        let all = u32::try_from(MAX_CONNECTIONS).expect("a small number");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.slots.acquire_many(all)).await;
        let _ = fs::remove_file(HubFile::path(&self.state_dir));
        match result {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Resolves if the engine stops on its own (a store failure): the hub
    /// cannot go on safely.
    pub async fn failed(&mut self) -> HubError {
        match (&mut self.engine_done).await {
            Ok(Err(e)) => e.into(),
            _ => HubError::Store(crate::store::StoreError::Crashed("the engine stopped unexpectedly".into())),
        }
    }
}

/// Run a hub until Ctrl-C or SIGTERM.
pub async fn serve(options: HubOptions) -> Result<(), HubError> {
    let mut hub = start(options).await?;
    tokio::select! {
        () = shutdown_signal() => hub.stop("The hub is shutting down").await,
        e = hub.failed() => {
            let _ = fs::remove_file(HubFile::path(&hub.state_dir));
            Err(e)
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn bind(ip: Option<IpAddr>, port: u16) -> Result<(Vec<TcpListener>, u16), HubError> {
    let first = SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port);
    let listener = TcpListener::bind(first).await.map_err(|source| HubError::Bind { addr: first, source })?;
    let port = listener.local_addr().map_err(|source| HubError::Bind { addr: first, source })?.port();
    let mut listeners = vec![listener];
    if ip.is_none() {
        // `localhost` may resolve to ::1; a machine without IPv6 just skips it.
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
        if let Ok(l) = TcpListener::bind(v6).await {
            listeners.push(l);
        }
    }
    Ok((listeners, port))
}

fn load_or_create_token(state_dir: &Path) -> Result<String, HubError> {
    let path = state_dir.join("token");
    if let Ok(existing) = fs::read_to_string(&path)
        && existing.trim().len() == 64
    {
        return Ok(existing.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| HubError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
    let token: String = bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let io = |source| HubError::Io { path: path.clone(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(token.as_bytes()).map_err(io)?;
    Ok(token)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    let tmp = path.with_extension("tmp");
    let io = |source| HubError::Io { path: path.to_owned(), source };
    fs::write(&tmp, bytes).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

async fn accept_loop(
    listener: TcpListener,
    engine: EngineHandle,
    guard: Arc<Guard>,
    slots: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the limit: close at once rather than queue.
            drop(stream);
            continue;
        };
        let (engine, guard) = (engine.clone(), guard.clone());
        let conn = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            serve_connection(stream, conn, &engine, &guard).await;
            drop(permit);
        });
    }
}

async fn serve_connection(stream: TcpStream, conn: u64, engine: &EngineHandle, guard: &Guard) {
    let callback = |request: &Request, response: Response| match guard.check(request) {
        Ok(()) => Ok(response),
        Err(reason) => Err(Guard::refusal(&reason)),
    };
    let config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME)).max_frame_size(Some(MAX_FRAME));
    let handshake = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    );
    let Ok(Ok(socket)) = handshake.await else { return };
    let (mut sink, mut source) = socket.split();
    let (outbox, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    if !engine.send(Input::Connected { conn, outbox }) {
        return;
    }
    let hello =
        ServerMsg::Connected { client_id: format!("client-{conn}"), message: "Connected to the mcc hub".to_owned() };
    if sink.send(Message::text(hello.to_json())).await.is_err() {
        engine.send(Input::Disconnected { conn });
        return;
    }
    loop {
        tokio::select! {
            frame = source.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(bytes))) => if let Ok(text) = String::from_utf8(bytes.to_vec()) { text.into() } else {
                        let error = ServerMsg::error("Invalid JSON message");
                        if sink.send(Message::text(error.to_json())).await.is_err() { break; }
                        continue;
                    },
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                match protocol::parse(&text) {
                    Ok(msg) => {
                        if !engine.send(Input::Message { conn, msg }) { break; }
                    }
                    Err(error) => {
                        if sink.send(Message::text(ServerMsg::error(error).to_json())).await.is_err() { break; }
                    }
                }
            }
            out = inbox.recv() => match out {
                Some(Outgoing::Msg(msg)) => {
                    if sink.send(Message::text(msg.to_json())).await.is_err() { break; }
                }
                Some(Outgoing::Close) | None => {
                    let _ = sink.close().await;
                    break;
                }
            },
        }
    }
    engine.send(Input::Disconnected { conn });
}
