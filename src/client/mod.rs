//! What client commands use to find the hub and talk to it: walk up from the
//! current folder to the nearest `.mcc/` (as git finds `.git`), read where
//! the hub listens, open one short WebSocket connection, exchange messages.
//! Where no socket can be opened, worker commands go through files instead
//! ([`files`]); [`Transport`] says which way, and [`ask`] picks it.
//!
//! Every step has a deadline ([`Options::timeout`], `--timeout` / `MCC_TIMEOUT`):
//! the TCP connect, the WebSocket handshake and each answer. A request the
//! hub holds on purpose (`next --wait`, a `done` waiting for its verdict)
//! gets its wait plus the deadline. A hub that is stopped (Ctrl-Z, SIGSTOP)
//! or wedged still accepts connections into the kernel's backlog and never
//! answers; without deadlines every client would wait for it forever.
//!
//! A `wss://` hub is reached over TLS, trusted as the project says
//! ([`trust_of`]): the fingerprint in `hub.json` for the local hub, what
//! `mcc join` wrote in `remote.json` for a hub on another machine. A worker
//! verb whose connection is cut is sent again on a new connection within
//! its wait ([`ask`]): the hub's (task, attempt) fence makes the replay safe.
//!
//! The hub may be reachable at several addresses ([`Hubs`]: a leader and its
//! standbys); [`Connection::open`] tries them in turn and passes over one that
//! refuses, does not answer or says it stepped down.

pub mod exit;
pub mod files;
pub mod hubs;
pub mod presence;
pub mod snapshot;
pub mod status;
pub mod transfer;
pub mod watcher;
pub mod worker;
pub mod worktree;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

pub use self::hubs::{BadAddress, Hubs, pin_at};
// The wire error code of a hub that lost its project's lease to another: the next address may serve.
use crate::engine::STEPPED_DOWN;
use crate::layout::Layout;
pub use crate::layout::find_root;
use crate::tls::Trust;
use crate::wire::{ClientMsg, ServerMsg};

/// Why a client command could not reach or understand the hub.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no .mcc/ folder in {0} or any folder above it: start a hub there with `mcc run WORKFLOW.lua` or `mcc hub`, or pass --hub ws://HOST:PORT"
    )]
    NoProject(String),
    #[error("no hub is running for {root} (no .mcc/hub.json): start one with `mcc run WORKFLOW.lua` or `mcc hub`")]
    NotRunning { root: String },
    #[error(
        "cannot reach the hub at {url}: {reason}. Is it running? Start it with `mcc run WORKFLOW.lua` or `mcc hub`{sandbox}"
    )]
    Unreachable { url: String, reason: String, sandbox: &'static str },
    #[error(
        "no hub is running for {root} (nothing holds .mcc/hub.lock): start one with `mcc run WORKFLOW.lua` or `mcc hub`"
    )]
    NotAlive { root: String },
    #[error(
        "cannot reach the hub at any of its addresses (went round them for {}): {}. Is it running? Start it with `mcc run WORKFLOW.lua` or `mcc hub`",
        humantime::format_duration(*waited),
        tried_list(tried)
    )]
    NoneServing { tried: Vec<(String, String)>, waited: Duration },
    #[error(
        "the hub at {url} stepped down and serves this project no more: {message}; its standby serves it now: give every hub address in --hub (or MCC_HUB), separated by commas"
    )]
    SteppedDown { url: String, message: String },
    #[error(transparent)]
    BadAddress(#[from] BadAddress),
    #[error("cannot use {path} for the file transport: {reason}; check that this folder may be written here")]
    Files { path: String, reason: String },
    #[error("the hub at {url} refused the connection: {reason}")]
    Refused { url: String, reason: String },
    #[error("the connection to the hub broke: {0}; run the command again")]
    Broken(String),
    #[error("the hub sent something this mcc does not understand ({0}); are the hub and client the same version?")]
    Garbled(String),
    #[error(
        "the hub at {url} did not answer within {}: it may be stopped (Ctrl-Z, SIGSTOP) or overloaded. Check it with `mcc status`; if it is only slow, give it longer with --timeout (or MCC_TIMEOUT), such as --timeout 60s",
        humantime::format_duration(*limit)
    )]
    Timeout { url: String, limit: Duration },
    #[error(
        "the hub at {url} closed the connection on a message of {size} bytes: a hub reads messages of at most {limit} bytes (1 MiB) unless started with a larger `mcc hub --max-frame-bytes`; send less in one message (a task's long text can go in a file the task reads)",
        limit = crate::wire::MAX_FRAME
    )]
    TooLarge { url: String, size: usize },
    #[error("the hub is shutting down: {0}")]
    Shutdown(String),
    #[error(
        "the hub at {url} presented the certificate {presented}, not the pinned {expected}: this may not be your hub, so nothing was sent. If its certificate was made again on purpose, read the new one on the hub's machine (tlsFingerprint in its .mcc/hub.json) and run `mcc join` again with --fingerprint"
    )]
    WrongCertificate { url: String, expected: String, presented: String },
    #[error(
        "the hub at {url} presented a certificate this client does not trust ({reason}); give its CA with `mcc join --ca FILE`, or pin a self-signed hub's certificate with --fingerprint sha256:HEX"
    )]
    Untrusted { url: String, reason: String },
}

impl ClientError {
    /// The hub is down, stopped or not answering, which it may stop being:
    /// the same command can succeed later. A worker told so waits and tries
    /// again (exit 3) instead of failing.
    pub fn hub_down(&self) -> bool {
        matches!(
            self,
            Self::NotRunning { .. }
                | Self::Unreachable { .. }
                | Self::NotAlive { .. }
                | Self::Timeout { .. }
                | Self::Shutdown(_)
                | Self::Broken(_)
                | Self::NoneServing { .. }
                | Self::SteppedDown { .. }
        )
    }

    /// Whether this says only that one address does not serve now (refused,
    /// silent, stepped down, going away), so another address may be tried.
    /// A refused token or certificate is no such thing: it is said at once.
    /// An upgrade refused with 503 (Service Unavailable) is a hub that is up
    /// but serves nothing now (a standby that listens).
    fn not_serving(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Timeout { .. }
                | Self::Shutdown(_)
                | Self::Broken(_)
                | Self::SteppedDown { .. }
        ) || matches!(self, Self::Refused { reason, .. } if reason.starts_with("503"))
    }

    /// The error as a worker chat reads it. Where the engineer is told how
    /// to start a hub, a worker is not: starting one is the engineer's call,
    /// and a chat that did so would run a second, empty project. A hub that
    /// is down is said to be down, with the same command to run again later.
    pub fn for_worker(&self) -> String {
        let what = match self {
            Self::NoProject(dir) => {
                return format!(
                    "no .mcc/ folder in {dir} or any folder above it: run worker commands inside the project the engineer named, or pass --hub ws://HOST:PORT"
                );
            }
            Self::NotRunning { root } => format!("no hub is running for {root} (no .mcc/hub.json)"),
            Self::NotAlive { root } => format!("no hub is running for {root} (nothing holds .mcc/hub.lock)"),
            Self::Unreachable { url, reason, sandbox } => format!("cannot reach the hub at {url}: {reason}{sandbox}"),
            Self::Timeout { url, limit } => format!(
                "the hub at {url} did not answer within {}: it may be stopped or overloaded",
                humantime::format_duration(*limit)
            ),
            Self::Shutdown(message) => format!("the hub is shutting down: {message}"),
            Self::Broken(reason) => format!("the connection to the hub broke: {reason}"),
            Self::NoneServing { tried, waited } => format!(
                "cannot reach the hub at any of its addresses (went round them for {}): {}",
                humantime::format_duration(*waited),
                tried_list(tried)
            ),
            Self::SteppedDown { url, message } => format!("the hub at {url} stepped down: {message}"),
            other => return other.to_string(),
        };
        format!("{what}\n{HUB_DOWN_ADVICE}\n")
    }
}

/// Each address tried with why it did not serve: `A (why); B (why)`.
fn tried_list(tried: &[(String, String)]) -> String {
    tried.iter().map(|(url, why)| format!("{url} ({why})")).collect::<Vec<_>>().join("; ")
}

/// What a worker facing a hub that is down is told to do (exit 3).
pub const HUB_DOWN_ADVICE: &str =
    "the hub is down for now: run the same command again in a minute; if it keeps failing, tell the engineer";

/// Where the hub is and how to get in.
#[derive(Debug, Clone)]
pub struct Target {
    /// The addresses the hub may be reached at, tried in turn.
    pub hubs: Hubs,
    /// How to reach it and how long each step may take.
    pub options: Options,
    pub token: Option<String>,
    /// The project root, when found through `.mcc/`.
    pub root: Option<PathBuf>,
}

impl Target {
    /// The address to try first now: the one that answered last (the only one, for one address).
    pub fn serving(&self) -> &str {
        self.hubs.in_order()[0]
    }
}

/// Where `--hub` / `MCC_HUB` came from, as an error about it says.
const GIVEN: &str = "--hub (or MCC_HUB)";

/// Find the hub: `--hub` / `MCC_HUB` when given, else the hub a clone joined
/// (`.mcc/remote.json`, written by `mcc join`), else the nearest `.mcc/hub.json`.
/// Each is a list of addresses ([`Hubs`]), one or several separated by commas.
///
/// A token goes with the target only when every address is one its file
/// names: a `--hub` pointing elsewhere never receives it.
pub fn locate(hub: Option<&str>, cwd: &Path, options: Options) -> Result<Target, ClientError> {
    let root = find_root(cwd);
    let layout = root.as_deref().map(Layout::of_root);
    let file = layout.as_ref().and_then(|l| l.read_hub_file().map(|f| (Hubs::parse(&f.url, &shown(&l.hub_file())), f)));
    let remote =
        layout.as_ref().and_then(|l| l.read_remote_file().map(|r| (Hubs::parse(&r.url, &shown(&l.remote_file())), r)));
    if let Some(given) = hub {
        let hubs = Hubs::parse(given, GIVEN)?;
        let names = |listed: Option<&Result<Hubs, BadAddress>>| {
            listed.and_then(|h| h.as_ref().ok()).is_some_and(|h| hubs.within(h))
        };
        let token = match &layout {
            Some(layout) if names(remote.as_ref().map(|(h, _)| h)) => layout.read_remote_token(),
            Some(layout) if names(file.as_ref().map(|(h, _)| h)) => layout.read_token(),
            _ => None,
        };
        return Ok(Target { hubs, options, token, root });
    }
    let (Some(root), Some(layout)) = (root, layout) else {
        return Err(ClientError::NoProject(cwd.display().to_string()));
    };
    if let Some((hubs, _)) = remote {
        return Ok(Target { hubs: hubs?, options, token: layout.read_remote_token(), root: Some(root) });
    }
    let (hubs, _) = file.ok_or_else(|| ClientError::NotRunning { root: root.display().to_string() })?;
    Ok(Target { hubs: hubs?, options, token: layout.read_token(), root: Some(root) })
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The hub addresses `.mcc/remote.json` names under `root`, if a clone joined one.
fn remote_hubs(root: Option<&Path>) -> Option<(Hubs, crate::layout::RemoteFile)> {
    let remote = Layout::of_root(root?).read_remote_file()?;
    Some((Hubs::parse(&remote.url, "").ok()?, remote))
}

/// Whether `target` is the hub this clone joined (`.mcc/remote.json` names one of its addresses).
pub fn joined(target: &Target) -> bool {
    remote_hubs(target.root.as_deref()).is_some_and(|(hubs, _)| target.hubs.urls().iter().any(|u| hubs.contains(u)))
}

/// How to trust the hub at `url`, one of `target`'s addresses, when it is a
/// `wss://` one (`None` for `ws://`): as the clone's `remote.json` says for
/// the hub it joined, by the fingerprint in `hub.json` for the project's
/// own hub, else by the web's public roots. A file listing several
/// addresses holds one fingerprint for all, or one for each in order.
pub fn trust_of(target: &Target, url: &str) -> Option<Trust> {
    if !url.starts_with("wss://") {
        return None;
    }
    if let Some((hubs, remote)) = remote_hubs(target.root.as_deref())
        && let Some(at) = hubs.position(url)
    {
        return Some(match (remote.tls_fingerprint, remote.ca) {
            (Some(pins), _) => Trust::Pinned(pin_at(&pins, at)),
            (None, Some(ca)) => Trust::Ca(ca.into()),
            (None, None) => Trust::WebRoots,
        });
    }
    if let Some(file) = target.root.as_deref().map(Layout::of_root).and_then(|l| l.read_hub_file())
        && let Ok(hubs) = Hubs::parse(&file.url, "")
        && let Some(at) = hubs.position(url)
        && let Some(pins) = file.tls_fingerprint
    {
        return Some(Trust::Pinned(pin_at(&pins, at)));
    }
    Some(Trust::WebRoots)
}

/// The byte stream under a connection: TCP, or TLS over TCP.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Link {
    /// The TCP socket, where deadlines are set.
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(stream) => stream,
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(stream) => stream.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

/// One open connection to the hub.
pub struct Connection {
    socket: WebSocket<Link>,
    url: String,
    /// The deadline of each step (the target's `--timeout`).
    timeout: Duration,
    /// The commit of the hub's checkout, as its greeting said.
    hub_commit: Option<String>,
}

impl Connection {
    /// Connect to the first of the target's addresses that serves and read
    /// its `connected` greeting, each step within the target's deadline,
    /// trusting a `wss://` hub as [`trust_of`] says. When none serves, the
    /// list is gone round again until the failover wait is over (none for
    /// one address: its error is said at once, as it always was).
    pub fn open(target: &Target) -> Result<Self, ClientError> {
        Self::open_trusting(target, |url| trust_of(target, url))
    }

    /// [`open`](Self::open) with the trust of each address given (`mcc join`, before it is written down).
    pub fn open_trusting(target: &Target, trust: impl Fn(&str) -> Option<Trust>) -> Result<Self, ClientError> {
        let waited = target.hubs.failover_wait(target.options.failover_wait);
        let until = Instant::now() + waited;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut tried = Vec::new();
            for url in target.hubs.in_order() {
                match Self::open_at(target, url, trust(url).as_ref()) {
                    Ok(conn) => {
                        target.hubs.answered(url);
                        return Ok(conn);
                    }
                    Err(e) if e.not_serving() => tried.push((url.to_owned(), e)),
                    Err(e) => return Err(e),
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match tried.len() {
                    1 => tried.remove(0).1,
                    _ => ClientError::NoneServing {
                        tried: tried.into_iter().map(|(url, e)| (url, why_not(&e))).collect(),
                        waited,
                    },
                });
            }
            // Backing off, not synchronising: nothing to wait on but a hub taking over.
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// [`open`](Self::open) at one address.
    fn open_at(target: &Target, url: &str, trust: Option<&Trust>) -> Result<Self, ClientError> {
        let limit = target.options.timeout;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.to_owned(),
            reason,
            sandbox: if std::env::var_os("CODEX_SANDBOX_NETWORK_DISABLED").is_some() {
                ". This looks like Codex's sandbox, which blocks even loopback: run worker commands with --transport file (or MCC_TRANSPORT=file), allow network access (sandbox_workspace_write.network_access = true), or write a report file into .mcc/reports/"
            } else {
                ""
            },
        };
        let timed_out = || ClientError::Timeout { url: url.to_owned(), limit };
        let mut request = url.into_client_request().map_err(|e| unreachable(e.to_string()))?;
        if let Some(token) = &target.token {
            let value = format!("Bearer {token}").parse().expect("a hex token is a valid header value");
            request.headers_mut().insert("authorization", value);
        }
        let secure = request.uri().scheme_str() == Some("wss");
        let stream = connect_within(&request, limit).map_err(|e| match e {
            ConnectError::TimedOut => timed_out(),
            ConnectError::Failed(reason) => unreachable(reason),
        })?;
        // The handshake reads and writes under the same deadline; each answer sets its own.
        let _ = stream.set_read_timeout(Some(limit));
        let _ = stream.set_write_timeout(Some(limit));
        let _ = stream.set_nodelay(true);
        let presented = crate::tls::Presented::default();
        let link = match (secure, trust) {
            (false, _) => Link::Plain(stream),
            (true, trust) => {
                let trust = trust.cloned().unwrap_or(Trust::WebRoots);
                let config = crate::tls::client(&trust, &presented).map_err(|e| unreachable(e.to_string()))?;
                let host = request.uri().host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| unreachable(format!("{host} is not a name TLS can check: {e}")))?;
                let tls = rustls::ClientConnection::new(config, name).map_err(|e| unreachable(e.to_string()))?;
                Link::Tls(Box::new(rustls::StreamOwned::new(tls, stream)))
            }
        };
        // A refused certificate surfaces as an I/O error of the handshake: name what was expected and presented.
        let refused_certificate = |e: &std::io::Error| -> Option<ClientError> {
            let tls_error = e.get_ref()?.downcast_ref::<rustls::Error>()?;
            let presented = presented.fingerprint();
            Some(match (trust, presented) {
                (Some(Trust::Pinned(expected)), Some(presented)) if *expected != presented => {
                    ClientError::WrongCertificate { url: url.to_owned(), expected: expected.clone(), presented }
                }
                _ => ClientError::Untrusted { url: url.to_owned(), reason: tls_error.to_string() },
            })
        };
        // 8 KiB: tungstenite zero-fills its whole read buffer on each read (128 KiB by default).
        let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
        let (socket, _) =
            tungstenite::client::client_with_config(request, link, Some(config)).map_err(|e| match e {
                tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                    let body = response
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                        .unwrap_or_default();
                    ClientError::Refused { url: url.to_owned(), reason: format!("{} {body}", response.status()) }
                }
                tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e)) if timed_out_io(&e) => timed_out(),
                tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e))
                    if refused_certificate(&e).is_some() =>
                {
                    refused_certificate(&e).unwrap_or_else(|| unreachable(e.to_string()))
                }
                // A blocking stream is never interrupted but by its read timeout.
                tungstenite::HandshakeError::Interrupted(_) => timed_out(),
                tungstenite::HandshakeError::Failure(other) => unreachable(other.to_string()),
            })?;
        let mut conn = Self { socket, url: url.to_owned(), timeout: limit, hub_commit: None };
        match conn.receive(limit)? {
            ServerMsg::Connected { commit, .. } => {
                conn.hub_commit = commit;
                Ok(conn)
            }
            other => Err(ClientError::Garbled(format!("expected `connected`, got {}", other.to_json()))),
        }
    }

    /// The address this connection reached.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The git commit the hub's checkout is at, when the hub said (a hub in a git work tree).
    pub fn hub_commit(&self) -> Option<&str> {
        self.hub_commit.as_deref()
    }

    /// The deadline of each step of this connection's calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send one message; a hub that stops reading is given the deadline to take it.
    pub fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        match self.socket.send(Message::text(msg.to_json())) {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if timed_out_io(&e) => {
                Err(ClientError::Timeout { url: self.url.clone(), limit: self.timeout })
            }
            Err(e) => Err(ClientError::Broken(e.to_string())),
        }
    }

    /// The next message from the hub, waiting at most `limit`.
    pub fn receive(&mut self, limit: Duration) -> Result<ServerMsg, ClientError> {
        let _ = self.socket.get_ref().tcp().set_read_timeout(Some(limit));
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let msg: ServerMsg =
                        serde_json::from_str(&text).map_err(|e| ClientError::Garbled(e.to_string()))?;
                    match msg {
                        ServerMsg::ServerShutdown { message } => return Err(ClientError::Shutdown(message)),
                        // A hub that lost its lease to another: nothing was done here, ask the next address.
                        ServerMsg::Error { code: Some(code), error, .. } if code == STEPPED_DOWN => {
                            return Err(ClientError::SteppedDown { url: self.url.clone(), message: error });
                        }
                        _ => {}
                    }
                    return Ok(msg);
                }
                Ok(Message::Close(_)) => return Err(ClientError::Broken("the hub closed the connection".into())),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if timed_out_io(&e) => {
                    return Err(ClientError::Timeout { url: self.url.clone(), limit });
                }
                Err(e) => return Err(ClientError::Broken(e.to_string())),
            }
        }
    }

    /// Send one message and wait for its answer. A hub drops the connection
    /// of a message over its frame limit without a word (it stops reading),
    /// so a broken connection after a message that large is named for it.
    pub fn request(&mut self, msg: &ClientMsg, limit: Duration) -> Result<ServerMsg, ClientError> {
        let size = msg.to_json().len();
        match self.send(msg).and_then(|()| self.receive(limit)) {
            Err(ClientError::Broken(_)) if size > crate::wire::MAX_FRAME => {
                Err(ClientError::TooLarge { url: self.url.clone(), size })
            }
            answer => answer,
        }
    }

    /// Close politely.
    pub fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

/// Why an address did not serve, in a few words for a list of them.
fn why_not(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { reason, .. } => reason.clone(),
        ClientError::Timeout { limit, .. } => format!("no answer within {}", humantime::format_duration(*limit)),
        ClientError::SteppedDown { .. } => "stepped down".to_owned(),
        ClientError::Shutdown(_) => "shutting down".to_owned(),
        other => other.to_string(),
    }
}

/// Why no TCP connection was made.
enum ConnectError {
    TimedOut,
    Failed(String),
}

/// A TCP connection to the request's host, each address tried within `limit`.
fn connect_within(
    request: &tungstenite::handshake::client::Request,
    limit: Duration,
) -> Result<TcpStream, ConnectError> {
    let uri = request.uri();
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        Some("wss") => 443,
        other => {
            let scheme = other.unwrap_or("none");
            return Err(ConnectError::Failed(format!("the address must start with ws:// or wss:// (not {scheme}://)")));
        }
    };
    let host = uri.host().ok_or_else(|| ConnectError::Failed(format!("no host name in {uri}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(default_port);
    let addrs =
        (host, port).to_socket_addrs().map_err(|e| ConnectError::Failed(format!("cannot resolve {host}: {e}")))?;
    let mut last = ConnectError::Failed(format!("{host} has no address"));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, limit) {
            Ok(stream) => return Ok(stream),
            Err(e) if timed_out_io(&e) => last = ConnectError::TimedOut,
            Err(e) => last = ConnectError::Failed(format!("unable to connect to {uri}: {e}")),
        }
    }
    Err(last)
}

/// Whether an I/O error is a read or write timeout (`WouldBlock` on Unix).
fn timed_out_io(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// The deadline of each step of a client call when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a client command reaches the hub (`--transport`, `--timeout`), handed
/// to every call with its [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub transport: Transport,
    /// How long each step of a call may take: connect, handshake, an answer beyond its wait.
    pub timeout: Duration,
    /// How long to go round the hub's addresses when none serves
    /// (`--failover-wait` / `MCC_FAILOVER_WAIT`); `None`: [`Hubs::failover_wait`]'s default.
    pub failover_wait: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self { transport: Transport::Auto, timeout: DEFAULT_TIMEOUT, failover_wait: None }
    }
}

/// How client commands reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Transport {
    /// The socket; files when the socket cannot be opened or the sandbox has no network.
    #[default]
    Auto,
    /// Only the WebSocket.
    Socket,
    /// Request and answer files under .mcc/ (for sandboxes without network).
    File,
}

/// The transport in force for `target`: what was chosen, or files in a
/// sandbox that says it has no network (Codex sets this variable).
fn transport_for(target: &Target) -> Transport {
    let chosen = target.options.transport;
    if chosen == Transport::Auto
        && target.root.is_some()
        && std::env::var_os("CODEX_SANDBOX_NETWORK_DISABLED").is_some_and(|v| v == "1")
    {
        return Transport::File;
    }
    chosen
}

/// One exchange: send one message, read one answer. Over the socket that is
/// one short connection; through files, one request file and its answer.
/// The hub has `wait` (what the request asks it to wait, or may take on
/// purpose) plus the target's deadline to answer.
pub fn ask(target: &Target, msg: &ClientMsg, wait: Duration) -> Result<ServerMsg, ClientError> {
    let limit = wait + target.options.timeout;
    let layout = target.root.as_deref().map(Layout::of_root);
    match (transport_for(target), layout) {
        (Transport::File, Some(layout)) => files::ask(&layout, msg, limit),
        (Transport::File, None) => Err(ClientError::NoProject(
            "the file transport needs the project's .mcc/ folder; run the command inside the project, without --hub"
                .into(),
        )),
        (Transport::Socket, _) => ask_socket(target, msg, limit),
        (Transport::Auto, layout) => match (Connection::open(target), layout) {
            (Ok(conn), _) => resume(target, msg, Instant::now() + limit, exchange(conn, msg, limit)),
            // No socket, but a live hub: the sandbox forbids sockets, so use files.
            (Err(ClientError::Unreachable { .. } | ClientError::NoneServing { .. }), Some(layout))
                if files::hub_alive(&layout) && crate::layout::allowed(msg) =>
            {
                files::ask(&layout, msg, limit)
            }
            (Err(e), _) => Err(e),
        },
    }
}

fn ask_socket(target: &Target, msg: &ClientMsg, limit: Duration) -> Result<ServerMsg, ClientError> {
    let until = Instant::now() + limit;
    resume(target, msg, until, exchange(Connection::open(target)?, msg, limit))
}

/// A worker verb (or a read) whose connection was cut (a link that dropped,
/// a hub restarting) is sent again on a new connection, with what is left of
/// its wait, until its deadline: it either never reached the hub, or the hub
/// answers the replay as it answered the first (the (task, attempt) fence
/// applies nothing twice). What changes the plan is answered as it came:
/// `tasks add` replayed could add twice. Any message a hub refused because it
/// stepped down goes to the next address: that hub applied nothing.
fn resume(
    target: &Target,
    msg: &ClientMsg,
    until: Instant,
    answer: Result<ServerMsg, ClientError>,
) -> Result<ServerMsg, ClientError> {
    resuming(target, msg, until, answer, |again, left| {
        Connection::open(target).and_then(|conn| exchange(conn, again, left))
    })
}

/// [`resume`] for any exchange: `again` is run with the message to send
/// (its wait cut to what is left) and the time left, after each cut.
pub(crate) fn resuming<T>(
    target: &Target,
    msg: &ClientMsg,
    until: Instant,
    mut answer: Result<T, ClientError>,
    mut again: impl FnMut(&ClientMsg, Duration) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    const FIRST_PAUSE: Duration = Duration::from_millis(50);
    let mut pause = FIRST_PAUSE;
    let mut cut = false;
    loop {
        let retry = match &answer {
            Err(ClientError::Broken(_)) => {
                cut = true;
                true
            }
            // The hub is gone for a moment after a cut (restarting, a link coming back, a standby taking over).
            Err(ClientError::Unreachable { .. } | ClientError::Timeout { .. } | ClientError::NoneServing { .. }) => cut,
            // Another address may serve what this one, fenced, did not do.
            Err(ClientError::SteppedDown { url, .. }) if target.hubs.len() > 1 => {
                target.hubs.passed_over(url);
                true
            }
            _ => false,
        };
        // A cut message may have been applied: only one whose replay the hub
        // answers as the first is sent again. A stepped-down hub applied nothing.
        let safe = crate::layout::allowed(msg) || matches!(answer, Err(ClientError::SteppedDown { .. }));
        let left = until.saturating_duration_since(Instant::now());
        if !retry || !safe || left <= pause {
            return answer;
        }
        // Backing off, not synchronising: nothing to wait on but the hub's return.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
        let left = until.saturating_duration_since(Instant::now());
        answer = again(&with_wait(msg, left.saturating_sub(target.options.timeout)), left);
    }
}

/// `msg` asking the hub to hold it at most `left` (a `next --wait` resent after a cut waits what is left).
fn with_wait(msg: &ClientMsg, left: Duration) -> ClientMsg {
    let mut again = msg.clone();
    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    match &mut again {
        ClientMsg::Next { wait_ms, .. }
        | ClientMsg::Done { wait_ms, .. }
        | ClientMsg::Block { wait_ms, .. }
        | ClientMsg::Fail { wait_ms, .. } => {
            if let Some(wait) = wait_ms {
                *wait = (*wait).min(left_ms);
            }
        }
        _ => {}
    }
    again
}

fn exchange(mut conn: Connection, msg: &ClientMsg, limit: Duration) -> Result<ServerMsg, ClientError> {
    let answer = conn.request(msg, limit);
    conn.close();
    answer
}

/// Find the hub from the current folder, then [`ask`].
pub fn ask_once(
    hub: Option<&str>,
    options: Options,
    msg: &ClientMsg,
    wait: Duration,
) -> Result<(ServerMsg, Target), String> {
    ask_here(hub, options, msg, wait).map_err(|e| e.to_string())
}

/// [`ask_once`], telling why it failed: a hub that did not answer is not one that is gone.
pub fn ask_here(
    hub: Option<&str>,
    options: Options,
    msg: &ClientMsg,
    wait: Duration,
) -> Result<(ServerMsg, Target), ClientError> {
    let cwd = std::env::current_dir()
        .map_err(|e| ClientError::NoProject(format!("the current folder (which cannot be read: {e})")))?;
    let target = locate(hub, &cwd, options)?;
    let answer = ask(&target, msg, wait)?;
    Ok((answer, target))
}
