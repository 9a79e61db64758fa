//! The WebSocket hub: listens on loopback, checks every handshake, and runs
//! one small task per connection that turns frames into engine inputs and
//! engine answers into frames.
//!
//! The edge is where access is enforced (see `docs/security.md`): the guard
//! decides what a connection may do ([`guard::Access`]), every message is
//! filtered before the engine sees it, and connection slots are shared so
//! that unfinished handshakes, idle sockets or connections without the token
//! cannot lock the engineer out.

pub mod files;
pub mod guard;
mod handshakes;
pub mod page;
pub mod standby;
pub mod tokens;

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::engine::{Config, Engine, EngineHandle, Input, Loader, Outgoing};
pub use crate::layout::HubFile;
use crate::layout::Layout;
use crate::scheduler::Settings;
use crate::watch::ReportWatcher;
use crate::wire::{self, ClientMsg, ServerMsg};
use guard::{Access, Guard, Refusal, Scope};

/// The default port, as the old server had it.
pub const DEFAULT_PORT: u16 = 3100;
pub use crate::wire::MAX_FRAME;
/// How long a hub that stepped down goes on telling new clients so
/// (`stepped_down`) before it closes its listener: long enough for the
/// connected ones to read it and for a client that comes back at once.
const STEPPED_DOWN_TOLD: Duration = Duration::from_secs(2);
/// How many connections may be open at once, by default.
pub const MAX_CONNECTIONS: usize = 512;
/// The texts of the original server (old clients may show or match them).
pub const CONNECTED_TEXT: &str = "Connected to coordination server";
pub const SHUTDOWN_TEXT: &str = "Server is shutting down";
/// The longest an old worker's push waits for the coordinator's socket to
/// take `tasks_created`: a coordinator that stops reading must not stall the workers.
const HOLD_PUSH: Duration = Duration::from_secs(5);
/// The marker a connection queues behind a `create_tasks` (see [`Outgoing::Mark`]).
const CREATE_ANSWERED: u64 = 1;

/// Bounds at the hub's edge; the defaults are far beyond what a real project
/// needs and close to what keeps a hostile client from hurting the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Upgraded connections open at once; a quarter is kept for connections with the token.
    pub max_connections: usize,
    /// Handshakes in progress at once (they do not hold a connection slot);
    /// past it the oldest is closed for the newcomer.
    pub max_handshakes: usize,
    /// How long a client may take to finish its handshake.
    pub handshake_timeout: Duration,
    /// An upgraded connection with no request outstanding is closed after this.
    pub idle_timeout: Duration,
    /// Tasks one `create_tasks` or `add_tasks` message may carry.
    pub max_tasks_per_message: usize,
    /// Validation commands running at once; more wait (`ctx.run` has its own runner).
    pub max_commands: usize,
    /// The largest frame, request file and report file the hub reads (`--max-frame-bytes`).
    pub max_frame_bytes: usize,
    /// A connection silent this long is sent a WebSocket ping: NATs and
    /// proxies on a real link drop a TCP connection that carries nothing
    /// (a worker's `next --wait` may wait minutes), and a dead link shows.
    pub keepalive: Duration,
    /// What one task's files may weigh, each way, for a remote worker (`--max-task-files-bytes`).
    pub max_task_files_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_handshakes: 1024,
            handshake_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_mins(10),
            max_tasks_per_message: 10_000,
            max_commands: std::thread::available_parallelism().map_or(2, usize::from).max(2),
            max_frame_bytes: MAX_FRAME,
            keepalive: Duration::from_secs(30),
            max_task_files_bytes: crate::checkout::DEFAULT_MAX_TASK_FILES_BYTES,
        }
    }
}

impl Limits {
    /// Slots connections without the token may take: all but a quarter.
    pub fn anonymous_slots(&self) -> usize {
        self.max_connections - self.max_connections.div_ceil(4)
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
    #[error("refusing to serve: {0}")]
    Unsafe(crate::layout::Refused),
    #[error(
        "refusing to listen on {0} without TLS: everything, the token too, would cross the network in plain text. Give --tls-self-signed (or --tls-cert FILE --tls-key FILE), or --behind-tls-proxy when a proxy on this machine terminates TLS (docs/remote.md)"
    )]
    Plaintext(IpAddr),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    StoreChoice(String),
}

/// How the hub's connections are protected on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Security {
    /// Plain `ws://`: only on loopback.
    #[default]
    Plain,
    /// `wss://` with this certificate, on the hub's own listener.
    Tls(crate::tls::Certificate),
    /// Plain `ws://`, with a proxy on this machine terminating TLS in front
    /// (`--behind-tls-proxy`): the hub may then listen beyond loopback.
    BehindTlsProxy,
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
    pub limits: Limits,
    pub timing: crate::engine::Timing,
    /// TLS, or why none is needed.
    pub security: Security,
    /// Where the project's state is kept (`--store`, `--project`).
    pub store: StoreChoice,
}

/// Where a hub is told to keep its project's state; nothing given is the
/// store the checkout names (`.mcc/store.json`), else `.mcc/state.db`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreChoice {
    /// `--store` / `MCC_STORE`: a `postgres://` URL, or `sqlite`.
    pub url: Option<String>,
    /// `--project` / `MCC_PROJECT`: the project's name inside that database.
    pub project: Option<String>,
    /// `--leader-lease`, `--leader-renew`: the lease this hub holds while it serves a shared store.
    pub leader: crate::store::Leader,
    /// Bring the checkout to the run's accepted files from the store before
    /// serving: a standby taking a project over in a clone of its own.
    pub restore_checkout: bool,
}

/// A started hub.
pub struct RunningHub {
    pub engine: EngineHandle,
    pub url: String,
    pub port: u16,
    /// `sha256:HEX` of the certificate when the hub serves TLS.
    pub tls_fingerprint: Option<String>,
    /// Resolves when the engine thread ends, with its result.
    engine_done: tokio::sync::oneshot::Receiver<Result<(), crate::store::StoreError>>,
    /// One permit per open connection; all back means every socket closed.
    slots: Arc<Semaphore>,
    max_connections: usize,
    layout: Layout,
    /// What its commands run under: stopped with the hub.
    runners: crate::command::Runners,
    /// What a connection is told instead of served once the engine stopped
    /// for good (the hub stepped down); set by [`serve`].
    farewell: Arc<std::sync::OnceLock<ServerMsg>>,
    _lock: fs::File,
    _watcher: ReportWatcher,
}

/// The state folder of a project root, created if missing.
pub fn state_folder(root: &Path) -> Result<Layout, HubError> {
    let layout = Layout::of_root(root);
    // Before anything is made or written: a link here would take the hub's writes outside the project.
    layout.refuse_links().map_err(HubError::Unsafe)?;
    layout.create().map_err(|source| HubError::Io { path: layout.dir().to_owned(), source })?;
    Ok(layout)
}

/// The tokio runtime a hub serves its connections on, with one worker
/// thread: connections only read, parse and write (the engine and the
/// store writer have threads of their own), and one thread hands each
/// request on with fewer wake-ups than several stealing work from each
/// other. Measured with 4 workers draining 8,000 tasks, alternating
/// rounds: 8,130-9,218 tasks/s and 95-101 µs of hub CPU per task, against
/// 7,549-8,356 and 100-109 µs with two (docs/benchmarks.md).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
}

/// Start listening and serving; returns once the hub accepts connections.
pub async fn start(options: HubOptions) -> Result<RunningHub, HubError> {
    if let Some(ip) = options.bind.filter(|ip| !ip.is_loopback())
        && options.security == Security::Plain
    {
        return Err(HubError::Plaintext(ip));
    }
    let root = fs::canonicalize(&options.root).map_err(|source| HubError::Io { path: options.root.clone(), source })?;
    let layout = state_folder(&root)?;
    let lock_path = layout.hub_lock();
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| HubError::Io { path: lock_path.clone(), source })?;
    if lock.try_lock().is_err() {
        let url = layout.read_hub_file().map_or_else(|| "unknown address".to_owned(), |h| h.url);
        return Err(HubError::AlreadyRunning { root: root.display().to_string(), url });
    }

    // Commands a killed hub left running on this folder die before this hub serves.
    let runners = crate::command::Runners::new(options.limits.max_commands, options.timing.command_grace);
    runners.record_groups_in(layout.dir()).map_err(|source| HubError::Io { path: layout.commands(), source })?;
    raise_descriptor_limit();
    let (listeners, port) = bind(options.bind, options.port)?;
    let token = load_or_create_token(&layout)?;
    let remote = options.bind.is_some_and(|ip| !ip.is_loopback());
    let tls = match &options.security {
        Security::Tls(certificate) => Some(crate::tls::server(certificate, &layout, &certificate_names(options.bind))?),
        Security::Plain | Security::BehindTlsProxy => None,
    };
    // The address actually bound: `--bind ::1` is `[::1]`, not 127.0.0.1.
    let host = SocketAddr::new(options.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port).to_string();
    let url = format!("{}://{host}", if tls.is_some() { "wss" } else { "ws" });

    let store =
        crate::store::Location::choose(options.store.url.as_deref(), options.store.project.as_deref(), layout.dir())
            .map_err(HubError::StoreChoice)?;
    let farewell = Arc::new(std::sync::OnceLock::new());
    let (engine, engine_thread) = Engine::start(Config {
        root: root.clone(),
        state_dir: layout.dir().to_owned(),
        store: store.clone(),
        settings: options.settings.clone(),
        loader: options.loader,
        validation_limit: Duration::from_mins(10),
        timing: options.timing.clone(),
        runners: runners.clone(),
        max_task_files_bytes: options.limits.max_task_files_bytes,
        // The address clients reach this hub at goes with its lease: a standby names it.
        leader: crate::store::Leader { address: Some(url.clone()), ..options.store.leader.clone() },
        restore_checkout: options.store.restore_checkout,
        farewell: farewell.clone(),
    })?;
    // Once it opened: the checkout's commands read the same store with no hub running.
    store.remember(layout.dir()).map_err(HubError::StoreChoice)?;
    if let Some(workflow) = options.workflow.clone() {
        engine.send_async(Input::LoadWorkflow { conn: None, path: workflow }).await;
    }
    let watcher =
        ReportWatcher::start(&layout, engine.clone(), options.limits.max_frame_bytes).map_err(HubError::Watch)?;

    // The page relays its browsers' WebSockets to this hub, as a client of
    // its own listener: loopback when it listens everywhere, its own
    // certificate pinned when it speaks TLS.
    let relay_ip = match options.bind {
        Some(IpAddr::V4(ip)) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(IpAddr::V6(ip)) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some(ip) => ip,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let relay_tls = match &tls {
        Some(tls) => Some(
            crate::tls::client(&crate::tls::Trust::Pinned(tls.fingerprint.clone()), &crate::tls::Presented::default())
                .map_err(|e| HubError::Io { path: root.clone(), source: std::io::Error::other(e.to_string()) })?,
        ),
        None => None,
    };
    let link = page::HubLink { addr: SocketAddr::new(relay_ip, port), tls: relay_tls };
    let page_port =
        page::start(root.clone(), link, &token).await.map_err(|source| HubError::Io { path: root.clone(), source })?;
    let ids = Arc::new(AtomicU64::new(1));
    files::start(&layout, engine.clone(), ids.clone(), options.limits.max_frame_bytes).map_err(HubError::Watch)?;
    let tokens = tokens::Tokens::open_at(&store, &token)?;
    let limits = options.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let edge = Arc::new(Edge {
        engine: engine.clone(),
        guard: Guard { port, token, remote, page_port: Some(page_port), tokens },
        slots: slots.clone(),
        anonymous: Arc::new(Semaphore::new(limits.anonymous_slots())),
        handshakes: handshakes::Handshakes::new(limits.max_handshakes),
        ids,
        limits,
        root: root.clone(),
        creates_unwritten: tokio::sync::watch::Sender::new(0),
        tls: tls.as_ref().map(|tls| tokio_rustls::TlsAcceptor::from(tls.config.clone())),
        farewell: farewell.clone(),
    });
    for listener in listeners {
        tokio::spawn(accept_loop(listener, edge.clone()));
    }

    let hub_file = HubFile {
        url: url.clone(),
        port,
        pid: std::process::id(),
        token_required: remote,
        root: root.display().to_string(),
        page_port: Some(page_port),
        max_tasks_per_message: Some(options.limits.max_tasks_per_message),
        tls_fingerprint: tls.as_ref().map(|tls| tls.fingerprint.clone()),
    };
    write_atomically(&layout.hub_file(), &serde_json::to_vec_pretty(&hub_file).expect("serializes"))?;
    if !options.quiet {
        if let Some(tls) = &tls {
            let origin = match (&options.security, tls.made) {
                (Security::Tls(crate::tls::Certificate::Files { cert, .. }), _) => cert.display().to_string(),
                (_, true) => "self-signed, made now and kept in .mcc/tls/".to_owned(),
                (_, false) => "self-signed, kept in .mcc/tls/".to_owned(),
            };
            tracing::info!("mcc hub: TLS certificate {} ({origin})", tls.fingerprint);
        }
        tracing::info!("mcc hub: listening on {url} for {}", root.display());
    }
    let (done_tx, engine_done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = engine_thread.join().unwrap_or_else(|_| {
            Err(crate::store::StoreError::Crashed("the engine thread panicked; see the message above".into()))
        });
        let _ = done_tx.send(result);
    });
    let max_connections = options.limits.max_connections;
    Ok(RunningHub {
        engine,
        url,
        port,
        tls_fingerprint: tls.map(|tls| tls.fingerprint),
        engine_done,
        slots,
        max_connections,
        layout,
        runners,
        farewell,
        _lock: lock,
        _watcher: watcher,
    })
}

impl RunningHub {
    /// Tell every client, commit, and stop.
    pub async fn stop(mut self, message: &str) -> Result<(), HubError> {
        self.engine.send_async(Input::Shutdown { message: message.to_owned() }).await;
        let result = (&mut self.engine_done).await;
        // No command the hub started outlives it (each gets its grace after SIGTERM).
        let runners = self.runners.clone();
        let _ = tokio::task::spawn_blocking(move || runners.kill_all()).await;
        // Let connections flush `server_shutdown` and close, for a bounded time.
        let all = u32::try_from(self.max_connections).expect("a small number");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.slots.acquire_many(all)).await;
        let _ = fs::remove_file(self.layout.hub_file());
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

/// Print the hub's diagnostics (`tracing` events) to stderr as bare lines,
/// exactly as they were printed before they were events: no time, level or
/// module. `MCC_LOG` (else `RUST_LOG`) sets the filter, such as `warn` or
/// `mcc=debug`; by default everything at `info` and above is printed.
pub fn print_diagnostics() {
    let filter = std::env::var("MCC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// Run a hub until Ctrl-C or SIGTERM.
/// `started` runs once the hub listens (`mcc hub` says what it serves).
pub async fn serve(options: HubOptions, started: impl FnOnce()) -> Result<(), HubError> {
    // Listen for the signals before the hub says it listens: a SIGTERM sent
    // right after "listening on" must stop it cleanly, not kill it.
    let mut signals = Signals::install();
    let mut hub = start(options).await?;
    started();
    tokio::select! {
        () = signals.recv() => hub.stop(SHUTDOWN_TEXT).await,
        e = hub.failed() => {
            if let HubError::Store(store_error) = &e
                && let Some(farewell) = crate::engine::farewell(store_error)
            {
                // The engine told the connected clients (and logged why); new
                // ones are told too, for a while, instead of finding nobody.
                let _ = hub.farewell.set(farewell);
                tokio::select! {
                    () = tokio::time::sleep(STEPPED_DOWN_TOLD) => {}
                    () = signals.recv() => {}
                }
            }
            let runners = hub.runners.clone();
            let _ = tokio::task::spawn_blocking(move || runners.kill_all()).await;
            let _ = fs::remove_file(hub.layout.hub_file());
            Err(e)
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    Signals::install().recv().await;
}

/// Ctrl-C and SIGTERM, caught from the moment this is made.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).expect("install the SIGTERM handler"),
                interrupt: signal(SignalKind::interrupt()).expect("install the SIGINT handler"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The names a self-signed certificate is made for. A client that pins the
/// fingerprint checks no name; these are for one that is told to trust the
/// certificate as a CA (`mcc join --ca .mcc/tls/cert.pem`).
fn certificate_names(bind: Option<IpAddr>) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Some(ip) = bind.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
        names.push(ip.to_string());
    }
    names
}

fn bind(ip: Option<IpAddr>, port: u16) -> Result<(Vec<TcpListener>, u16), HubError> {
    let first = SocketAddr::new(ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port);
    let listener = listen(first).map_err(|source| HubError::Bind { addr: first, source })?;
    let port = listener.local_addr().map_err(|source| HubError::Bind { addr: first, source })?.port();
    let mut listeners = vec![listener];
    if ip.is_none() {
        // `localhost` may resolve to ::1; a machine without IPv6 just skips it.
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
        if let Ok(l) = listen(v6) {
            listeners.push(l);
        }
    }
    Ok((listeners, port))
}

/// A listener with a long accept queue. The usual 128 overflows when a few
/// hundred sockets arrive at once, and each connection the kernel then drops
/// waits a second or more to try again: idle sockets arriving in a burst
/// would delay a real client that way, even with a handshake place for it
/// (the kernel caps the queue at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    const ACCEPT_QUEUE: u32 = 4096;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's bind does: a hub restarted at once may reuse its port.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_QUEUE)
}

/// The project's token: read and checked, or made. Its mode is fixed to
/// 0600 at every start, whoever changed it since.
fn load_or_create_token(layout: &Layout) -> Result<String, HubError> {
    let path = layout.token();
    let io = |source| HubError::Io { path: path.clone(), source };
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(io(std::io::Error::other(
                "the token is not a plain file (a link or a folder?); remove it and start again to make a new one",
            )));
        }
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o777 != 0o600 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
            }
            let existing = fs::read_to_string(&path).map_err(io)?;
            let existing = existing.trim();
            if existing.len() == 64 && existing.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(existing.to_owned());
            }
        }
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let token: String = bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // `mode` applies only to a file created now; a rewritten one is fixed here.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    file.write_all(token.as_bytes()).map_err(io)?;
    Ok(token)
}

/// Let the hub hold as many sockets as the system allows it (the soft limit
/// is often 1024 while the hard one is far higher).
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    crate::text::write_atomic(path, bytes).map_err(|source| HubError::Io { path: path.to_owned(), source })
}

/// What every connection task shares.
struct Edge {
    engine: EngineHandle,
    guard: Guard,
    /// Every upgraded connection holds one.
    slots: Arc<Semaphore>,
    /// Connections without the token hold one of these as well: they cannot take every slot.
    anonymous: Arc<Semaphore>,
    /// A connection holds a place here until its handshake is done.
    handshakes: Arc<handshakes::Handshakes>,
    ids: Arc<AtomicU64>,
    limits: Limits,
    /// The project root: its git commit goes in each greeting.
    root: PathBuf,
    /// `create_tasks` frames whose answer no connection has written yet.
    /// The original wrote every frame from one thread, so a coordinator
    /// read `tasks_created` before a worker read the task it brought, and
    /// old clients rely on that (they await the one, then listen for the
    /// other); here each connection writes on its own, so pushes to old
    /// workers wait for this to reach zero.
    creates_unwritten: tokio::sync::watch::Sender<usize>,
    /// The TLS side of the listener, when the hub serves `wss://`.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Set once the hub stepped down: what a new connection is told.
    farewell: Arc<std::sync::OnceLock<ServerMsg>>,
}

impl Edge {
    /// The slot(s) an admitted connection holds while open.
    fn admit(&self, access: &Access) -> Result<Vec<OwnedSemaphorePermit>, Refusal> {
        let full = || Refusal {
            status: tokio_tungstenite::tungstenite::http::StatusCode::SERVICE_UNAVAILABLE,
            reason: format!(
                "all {} connection slots are taken; try again shortly{}",
                self.limits.max_connections,
                if access.scope == Scope::Anonymous {
                    " (connections with the project's token in .mcc/token have slots of their own)"
                } else {
                    ""
                }
            ),
        };
        let mut permits = Vec::with_capacity(2);
        // The kept quarter is the engineer's: tokens of other scopes share the rest.
        if access.scope != Scope::Engineer {
            permits.push(self.anonymous.clone().try_acquire_owned().map_err(|_| full())?);
        }
        permits.push(self.slots.clone().try_acquire_owned().map_err(|_| full())?);
        Ok(permits)
    }
}

async fn accept_loop(listener: TcpListener, edge: Arc<Edge>) {
    const FIRST_PAUSE: Duration = Duration::from_millis(5);
    let mut pause = FIRST_PAUSE;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors (EMFILE) or memory: retrying at once would spin.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            continue;
        };
        pause = FIRST_PAUSE;
        // Too many unfinished handshakes: the oldest is closed, not this one.
        let handshake = edge.handshakes.begin();
        let edge = edge.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // The TLS and the WebSocket handshakes share one deadline and one place.
            let deadline = tokio::time::Instant::now() + edge.limits.handshake_timeout;
            match &edge.tls {
                None => serve_connection(stream, &edge, handshake, deadline).await,
                Some(acceptor) => {
                    let (place, mut evicted) = handshake;
                    let secured = tokio::select! {
                        done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => match done {
                            Ok(Ok(secured)) => secured,
                            _ => return,
                        },
                        _ = &mut evicted => return,
                    };
                    serve_connection(secured, &edge, (place, evicted), deadline).await;
                }
            }
        });
    }
}

/// Read and drop what is left of a frame the hub refused (at most `size`
/// bytes, for at most 2 s, until the client pauses) before closing: a socket closed with unread
/// bytes is reset, and the reset could take the refusal with it.
async fn discard_unread<S: AsyncRead + Unpin>(stream: &mut S, size: usize) {
    use tokio::io::AsyncReadExt as _;
    let drain = async {
        let mut buffer = [0u8; 8192];
        let mut left = size;
        while left > 0 {
            // A pause means the client sent all it meant to (part of the frame was read already).
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(n)) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    edge: &Edge,
    (place, evicted): (handshakes::Place, tokio::sync::oneshot::Receiver<()>),
    deadline: tokio::time::Instant,
) {
    let engine = &edge.engine;
    let mut admitted = None;
    // The token is checked and the slot taken inside the handshake: a refused client never holds a slot.
    let callback = |request: &Request, response: Response| {
        let access = edge.guard.check(request).map_err(|r| r.response())?;
        let permits = edge.admit(&access).map_err(|r| r.response())?;
        admitted = Some((access, permits));
        Ok(response)
    };
    // An 8 KiB read buffer: tungstenite zero-fills the whole buffer on each read (128 KiB by default).
    let config = WebSocketConfig::default()
        .max_message_size(Some(edge.limits.max_frame_bytes))
        .max_frame_size(Some(edge.limits.max_frame_bytes))
        .read_buffer_size(8 * 1024);
    let handshake_done = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    );
    let socket = tokio::select! {
        done = handshake_done => match done {
            Ok(Ok(socket)) => socket,
            _ => return,
        },
        // Pushed out by a newer handshake: this one was the oldest unfinished.
        _ = evicted => return,
    };
    if !place.finish() {
        return;
    }
    let Some((access, _slots)) = admitted else { return };
    let tokens = &edge.guard.tokens;
    if let Some(grant) = &access.grant {
        tokens.used(&grant.id);
    }
    let mut revocations = tokens.revocations();
    let conn = edge.ids.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut source) = socket.split();
    let (outbox, mut inbox) = tokio::sync::mpsc::channel(crate::engine::OUTBOX);
    let engine_took_it = engine.send_async(Input::Connected { conn, outbox }).await;
    // Looked at after the engine had the connection: it sets its farewell before it tells any
    // client, so one that comes after another was told is told the same, not greeted.
    if let Some(msg) = edge.farewell.get() {
        let _ = sink.send(Message::text(msg.to_json())).await;
        let _ = sink.close().await;
        return;
    }
    if !engine_took_it {
        return;
    }
    let hello = ServerMsg::Connected {
        client_id: format!("client-{conn}"),
        message: CONNECTED_TEXT.to_owned(),
        commit: crate::checkout::head_commit(&edge.root),
    };
    if sink.send(Message::text(hello.to_json())).await.is_err() {
        engine.send_async(Input::Disconnected { conn }).await;
        return;
    }
    // Idle means: no request of this connection is waiting for its answer,
    // and it has not registered in the old protocol (a registered worker or
    // coordinator waits for messages the hub pushes, maybe for hours).
    let mut outstanding = false;
    let mut registered = false;
    let mut last_activity = tokio::time::Instant::now();
    // The last frame either way: a connection silent for `keepalive` is pinged.
    let mut last_heard = last_activity;
    // This connection's share of `creates_unwritten`, given back when it ends.
    let mut my_creates = 0usize;
    let mut creates = edge.creates_unwritten.subscribe();
    // A frame that does not parse is answered through the engine too, so its
    // error comes after the answers to the frames before it, as in the original.
    let answer_bad = async |error: String| {
        engine.send_async(Input::Relay { conn, outgoing: Outgoing::Msg(ServerMsg::error(error)) }).await
    };
    loop {
        let idle_at = last_activity + edge.limits.idle_timeout;
        tokio::select! {
            frame = source.next() => {
                last_activity = tokio::time::Instant::now();
                last_heard = last_activity;
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(bytes))) => if let Ok(text) = String::from_utf8(bytes.to_vec()) { text.into() } else {
                        outstanding = true;
                        if !answer_bad("Invalid JSON message".to_owned()).await { break; }
                        continue;
                    },
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(
                        tokio_tungstenite::tungstenite::error::CapacityError::MessageTooLong { size, max_size },
                    ))) => {
                        // The stream cannot go on past a frame it did not read; say why before closing.
                        let error = format!(
                            "the message is {size} bytes, over the hub's frame limit of {max_size} bytes; send less in one message, or raise the limit with `mcc hub --max-frame-bytes`"
                        );
                        let _ = sink.send(Message::text(ServerMsg::error(error).to_json())).await;
                        // A close frame tells a client that reads it to stop at once, not after the drain's pause.
                        let _ = sink.send(Message::Close(None)).await;
                        if let Ok(mut whole) = source.reunite(sink) {
                            discard_unread(whole.get_mut(), size).await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    // A pong (or a ping, answered by tungstenite) keeps the link alive, nothing more.
                    Some(Ok(_)) => continue,
                };
                let checked = wire::parse(&text).map_err(|error| guard::Denied { error, close: false }).and_then(|msg| {
                    edge.guard.permits(&access, &msg, edge.limits.max_tasks_per_message).map(|()| msg)
                });
                match checked {
                    Ok(msg) => {
                        outstanding = true;
                        // Token verbs are the edge's own (the tokens are not the engine's); the
                        // answer still goes through the engine, after those of earlier frames.
                        if let Some(answer) = tokens.answer(&msg).await {
                            if !engine.send_async(Input::Relay { conn, outgoing: Outgoing::Msg(answer) }).await { break; }
                            continue;
                        }
                        // A presence, too, waits for nothing and stays open for hours.
                        registered |= matches!(msg, ClientMsg::Register { .. } | ClientMsg::Subscribe { .. } | ClientMsg::Present { .. });
                        let create = matches!(msg, ClientMsg::CreateTasks { .. });
                        if create {
                            my_creates += 1;
                            edge.creates_unwritten.send_modify(|n| *n += 1);
                        }
                        if !engine.send_async(Input::Message { conn, msg }).await { break; }
                        if create && !engine.send_async(Input::Relay { conn, outgoing: Outgoing::Mark(CREATE_ANSWERED) }).await { break; }
                    }
                    Err(guard::Denied { error, close: false }) => {
                        outstanding = true;
                        if !answer_bad(error).await { break; }
                    }
                    Err(guard::Denied { error, close: true }) => {
                        let _ = sink.send(Message::text(ServerMsg::error_code(error, "token_refused").to_json())).await;
                        let _ = sink.close().await;
                        break;
                    }
                }
            }
            out = inbox.recv() => {
                // Everything queued now goes out with one flush (one write for
                // an old worker's ack and its next task); a mark or a held push
                // flushes first, so "written" still means on the socket.
                let mut next = out;
                let mut unflushed = false;
                let mut open = true;
                while open {
                    match next {
                        Some(Outgoing::Msg(msg)) => {
                            let msg = access.scope.screen(msg);
                            last_activity = tokio::time::Instant::now();
                            last_heard = last_activity;
                            outstanding = false;
                            let old_push = matches!(msg, ServerMsg::TaskAssigned { task: Some(_), .. } | ServerMsg::NoTasks { .. });
                            if old_push && my_creates == 0 && *creates.borrow() != 0 {
                                if unflushed && sink.flush().await.is_err() { open = false; break; }
                                unflushed = false;
                                let _ = tokio::time::timeout(HOLD_PUSH, creates.wait_for(|n| *n == 0)).await;
                            }
                            if sink.feed(Message::text(msg.to_json())).await.is_err() { open = false; break; }
                            unflushed = true;
                        }
                        Some(Outgoing::Mark(CREATE_ANSWERED)) => {
                            if unflushed && sink.flush().await.is_err() { open = false; break; }
                            unflushed = false;
                            // Everything before the mark, `tasks_created` too, is written.
                            my_creates -= 1;
                            edge.creates_unwritten.send_modify(|n| *n -= 1);
                        }
                        Some(Outgoing::Mark(_)) => {}
                        Some(Outgoing::Close) | None => {
                            let _ = sink.close().await;
                            open = false;
                            break;
                        }
                    }
                    match inbox.try_recv() {
                        Ok(more) => next = Some(more),
                        Err(_) => break,
                    }
                }
                if !open || (unflushed && sink.flush().await.is_err()) { break; }
            }
            () = tokio::time::sleep_until(last_heard + edge.limits.keepalive) => {
                last_heard = tokio::time::Instant::now();
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
            }
            // A revoked token's connections are cut at once, not at their next request.
            Ok(()) = revocations.changed(), if access.grant.is_some() => {
                if let Some(Err(error)) = access.grant.as_ref().map(|grant| tokens.still_valid(grant)) {
                    let _ = sink.send(Message::text(ServerMsg::error_code(error, "token_refused").to_json())).await;
                    let _ = sink.close().await;
                    break;
                }
            }
            () = tokio::time::sleep_until(idle_at), if !outstanding && !registered => {
                let idle = humantime::format_duration(edge.limits.idle_timeout);
                let bye = ServerMsg::error_code(format!("closing this connection: idle for {idle} with nothing asked; connect again when there is something to send"), "idle");
                let _ = sink.send(Message::text(bye.to_json())).await;
                let _ = sink.close().await;
                break;
            }
        }
    }
    if my_creates > 0 {
        edge.creates_unwritten.send_modify(|n| *n -= my_creates);
    }
    engine.send_async(Input::Disconnected { conn }).await;
}
