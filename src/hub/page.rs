//! The live page: a read-only view of the hub in a browser, served on a
//! port of its own on loopback. One HTML document with its CSS and script
//! inline (nothing fetched from elsewhere), and the timeline as inline SVG
//! drawn by the same code as `mcc report --html`. The page's script opens a
//! WebSocket to its own origin (`/hub`) with the view capability in its
//! address (see [`super::guard::view_capability`]), which this server relays
//! to the hub's own listener, speaking TLS to it when the hub does: so the
//! page works the same on a plain and a TLS hub, and the browser never meets
//! the hub's certificate. It subscribes and redraws from each delta.
//!
//! The server has four routes (`/`, `/timeline`, `/recent`: the latest
//! rejections and questions from the event log, so that a page opened late
//! or reloaded shows them too, and `/hub`, the relay), all `GET`, all needing
//! the capability and a loopback `Host` with this port (DNS rebinding); it is
//! small enough that an HTTP framework would not earn its place. Sockets
//! that say nothing cannot keep the page from a browser: requests being read
//! are a bounded set that pushes out its oldest for a newcomer, as the hub's
//! handshakes do ([`super::handshakes`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::guard::view_capability;
use super::handshakes::{Handshakes, Place};
use crate::event::EventKind;
use crate::layout::{Layout, PAGE_PORT, SMALL_FILE, StateDir};
use crate::store::StoredEvent;
use serde::{Deserialize, Serialize};

/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Request heads read at once; past it the oldest unfinished one is closed.
const MAX_READING: usize = 64;
/// Requests answered at once; more wait for a slot, for at most [`READ_LIMIT`].
const MAX_ANSWERING: usize = 32;
/// How long a browser may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(5);
/// Page connections relayed to the hub at once (each open tab holds one);
/// the hub's own connection bounds apply to them as well.
const MAX_RELAYED: usize = 64;

/// Where the page's relay reaches the hub: its listener's address (loopback
/// when the hub listens on every address) and, for a TLS hub, the client
/// config that pins the hub's own certificate.
#[derive(Clone)]
pub struct HubLink {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What the page server needs to answer.
struct Page {
    root: PathBuf,
    hub: HubLink,
    port: u16,
    capability: String,
    relayed: Arc<Semaphore>,
}

/// The page's address, with the capability it needs; what `mcc run` and
/// `mcc status` print.
pub fn url(page_port: u16, token: &str) -> String {
    format!("http://127.0.0.1:{page_port}/?view={}", view_capability(token))
}

/// The live page of the hub serving the project at `root`, read from its
/// `.mcc/hub.json` and `.mcc/token`; `None` when no hub serves one.
pub fn url_of(root: &std::path::Path) -> Option<String> {
    let layout = crate::layout::Layout::of_root(root);
    Some(url(layout.read_hub_file()?.page_port?, &layout.read_token()?))
}

/// Listen on loopback and serve the page; returns the port. The port is the
/// one the page had at the last start when it is free, so an open tab
/// survives a restart of the hub.
pub async fn start(root: PathBuf, hub: HubLink, token: &str) -> std::io::Result<u16> {
    let state = Layout::of_root(&root).open().map_err(std::io::Error::from)?;
    let listener = listen(&state).await?;
    let port = listener.local_addr()?.port();
    if let Err(e) = state.write_atomic(PAGE_PORT, format!("{port}\n").as_bytes()) {
        tracing::warn!("cannot keep the live page's port for the next start: {e}");
    }
    let relayed = Arc::new(Semaphore::new(MAX_RELAYED));
    let page = Arc::new(Page { root, hub, port, capability: view_capability(token), relayed });
    // The accept loop never waits for a slot: a socket that sends nothing
    // would otherwise hold one for its whole read limit, and forty of them
    // kept a browser out for five seconds.
    let reading = Handshakes::new(MAX_READING);
    let answering = Arc::new(Semaphore::new(MAX_ANSWERING));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let place = reading.begin();
            let (page, answering) = (page.clone(), answering.clone());
            tokio::spawn(async move {
                let served = tokio::time::timeout(READ_LIMIT * 3, serve(stream, &page, place, &answering)).await;
                // A relay lives as long as its tab: outside the request's time limit.
                if let Ok(Ok(Some(relay))) = served {
                    relay.run(&page.hub).await;
                }
            });
        }
    });
    Ok(port)
}

/// A listener on the port kept in `.mcc/page-port` if it is free, else on
/// any free port, saying why the kept one was not taken.
async fn listen(state: &StateDir) -> std::io::Result<TcpListener> {
    let kept = match state.read_bounded(PAGE_PORT, SMALL_FILE) {
        Ok(text) => {
            let port = std::str::from_utf8(&text).ok().and_then(|t| t.trim().parse::<u16>().ok()).filter(|p| *p != 0);
            if port.is_none() {
                tracing::warn!("{} holds no port; the live page takes a free one", state.shown(PAGE_PORT).display());
            }
            port
        }
        Err(e) if e.is_missing() => None,
        Err(e) => {
            tracing::warn!("{e}; the live page takes a free port");
            None
        }
    };
    let Some(port) = kept else { return TcpListener::bind(("127.0.0.1", 0)).await };
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
            tracing::info!(
                "the live page's port {port} is taken ({e}); the page is on port {} now: open the address `mcc status` prints",
                listener.local_addr()?.port()
            );
            Ok(listener)
        }
    }
}

/// One answer: status line, content type, body.
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// Answer one request; a WebSocket upgrade to `/hub` that passes the
/// page's checks comes back as a [`Relay`] to run.
async fn serve(
    mut stream: TcpStream,
    page: &Page,
    (place, evicted): (Place, tokio::sync::oneshot::Receiver<()>),
    answering: &Arc<Semaphore>,
) -> std::io::Result<Option<Relay>> {
    let request = tokio::select! {
        read = tokio::time::timeout(READ_LIMIT, read_request(&mut stream)) => match read {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return respond(&mut stream, &Answer::text("400 Bad Request", "not a request this page reads\n")).await.map(|()| None),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(None),
        },
        // Pushed out by a newer request: this one was the oldest still unread.
        _ = evicted => return Ok(None),
    };
    if !place.finish() {
        return Ok(None);
    }
    if request.route() == "/hub" {
        let refused = refusal(page, &request).or_else(|| {
            request.upgrade.is_none().then(|| Answer::text("400 Bad Request", "/hub takes a WebSocket upgrade only\n"))
        });
        let permit = page.relayed.clone().try_acquire_owned();
        let query = request.query().to_owned();
        return match (refused, request.upgrade, permit) {
            (Some(answer), ..) => respond(&mut stream, &answer).await.map(|()| None),
            (None, _, Err(_)) => {
                let busy =
                    Answer::text("503 Service Unavailable", "too many live pages are open; close one and reload\n");
                respond(&mut stream, &busy).await.map(|()| None)
            }
            (None, Some(head), Ok(permit)) => Ok(Some(Relay { browser: stream, query, head, _permit: permit })),
            (None, None, Ok(_)) => Ok(None),
        };
    }
    let Ok(Ok(_slot)) = tokio::time::timeout(READ_LIMIT, answering.acquire()).await else {
        let busy = Answer::text("503 Service Unavailable", "the page is busy answering others; reload in a moment\n");
        return respond(&mut stream, &busy).await.map(|()| None);
    };
    let answer = answer(page, request).await;
    respond(&mut stream, &answer).await.map(|()| None)
}

/// What a request asked.
struct Request {
    method: Option<String>,
    path: Option<String>,
    /// How many `Host` headers, and the first.
    hosts: usize,
    host: Option<Vec<u8>>,
    /// For a WebSocket upgrade: its header lines but `Host`, as the hub is to read them.
    upgrade: Option<String>,
}

impl Request {
    fn route(&self) -> &str {
        let path = self.path.as_deref().unwrap_or_default();
        path.split_once('?').map_or(path, |(route, _)| route)
    }

    fn query(&self) -> &str {
        self.path.as_deref().and_then(|p| p.split_once('?')).map_or("", |(_, query)| query)
    }
}

/// A browser's WebSocket to the hub, passed on byte for byte once the page
/// has checked it; the hub then checks it again as any view connection.
struct Relay {
    browser: TcpStream,
    /// The address's query: the view capability.
    query: String,
    /// The request's header lines but `Host`.
    head: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Relay {
    async fn run(mut self, hub: &HubLink) {
        let Ok(Ok(tcp)) = tokio::time::timeout(READ_LIMIT, TcpStream::connect(hub.addr)).await else {
            let down = Answer::text("502 Bad Gateway", "the hub does not answer; reload in a moment\n");
            let _ = respond(&mut self.browser, &down).await;
            return;
        };
        let _ = tcp.set_nodelay(true);
        // The hub's Host check wants its own address, and its path is `/`.
        let request = format!("GET /?{} HTTP/1.1\r\nHost: {}\r\n{}\r\n", self.query, hub.addr, self.head);
        match &hub.tls {
            None => pass(self.browser, tcp, request).await,
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let name = rustls::pki_types::ServerName::IpAddress(hub.addr.ip().into());
                if let Ok(Ok(secured)) = tokio::time::timeout(READ_LIMIT, connector.connect(name, tcp)).await {
                    pass(self.browser, secured, request).await;
                } else {
                    tracing::warn!("the live page could not reach the hub over TLS at {}", hub.addr);
                }
            }
        }
    }
}

/// Send `request` to the hub, then copy both ways until either side ends.
async fn pass<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut browser: TcpStream,
    mut hub: S,
    request: String,
) {
    if hub.write_all(request.as_bytes()).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut browser, &mut hub).await;
    }
}

/// Read a request head; `None` when it is not one this page reads, or too long.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let host: Vec<&[u8]> =
                    req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value).collect();
                let upgrade = req
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("upgrade") && h.value.eq_ignore_ascii_case(b"websocket"))
                    .then(|| forwarded(req.headers))
                    .flatten();
                return Ok(Some(Request {
                    method: req.method.map(str::to_owned),
                    path: req.path.map(str::to_owned),
                    hosts: host.len(),
                    host: host.first().map(|h| h.to_vec()),
                    upgrade,
                }));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            _ => return Ok(None),
        }
    }
}

/// The header lines of a WebSocket upgrade as the hub is to read them: all
/// but `Host` (the relay names the hub's), in plain ASCII or not at all.
fn forwarded(headers: &[httparse::Header<'_>]) -> Option<String> {
    let mut lines = String::new();
    for h in headers.iter().filter(|h| !h.name.eq_ignore_ascii_case("host")) {
        let value = std::str::from_utf8(h.value).ok().filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))?;
        lines.push_str(&format!("{}: {value}\r\n", h.name));
    }
    Some(lines)
}

/// Why the page refuses a request before reading its route: a foreign
/// `Host` (DNS rebinding), a method that is not `GET`, or a known route
/// without the view capability.
fn refusal(page: &Page, request: &Request) -> Option<Answer> {
    let own_host = [format!("127.0.0.1:{}", page.port), format!("localhost:{}", page.port)];
    let host_ok = request.hosts == 1
        && request.host.as_deref().is_some_and(|h| own_host.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(h)));
    if !host_ok {
        return Some(Answer::text("403 Forbidden", "this page answers only to its loopback address\n"));
    }
    if request.method.as_deref() != Some("GET") {
        return Some(Answer::text("405 Method Not Allowed", "the live page only reads: GET\n"));
    }
    let views: Vec<&str> = request.query().split('&').filter_map(|p| p.strip_prefix("view=")).collect();
    let allowed = matches!(views.as_slice(), [one] if bool::from(one.as_bytes().ct_eq(page.capability.as_bytes())));
    (!allowed && matches!(request.route(), "/" | "/timeline" | "/recent" | "/hub")).then(|| {
        Answer::text(
            "403 Forbidden",
            "the address needs the view capability: open the address `mcc status` prints in the project\n",
        )
    })
}

async fn answer(page: &Page, request: Request) -> Answer {
    if let Some(refused) = refusal(page, &request) {
        return refused;
    }
    match request.route() {
        "/" => Answer { status: "200 OK", content_type: "text/html; charset=utf-8", body: html(&page.capability) },
        "/timeline" => {
            let root = page.root.clone();
            let svg = tokio::task::spawn_blocking(move || crate::report::recent_timeline_svg(&root)).await;
            match svg {
                Ok(Ok(svg)) => Answer { status: "200 OK", content_type: "text/html; charset=utf-8", body: svg },
                Ok(Err(e)) => Answer::text("503 Service Unavailable", format!("cannot read the event log: {e}\n")),
                Err(_) => Answer::text("500 Internal Server Error", "the timeline could not be drawn\n"),
            }
        }
        "/recent" => {
            let root = page.root.clone();
            match tokio::task::spawn_blocking(move || recent(&root)).await {
                Ok(Ok(recent)) => Answer { status: "200 OK", content_type: "application/json", body: recent },
                Ok(Err(e)) => Answer::text("503 Service Unavailable", format!("cannot read the event log: {e}\n")),
                Err(_) => Answer::text("500 Internal Server Error", "the latest events could not be read\n"),
            }
        }
        _ => Answer::text("404 Not Found", "the live page is at /\n"),
    }
}

async fn respond(stream: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    // The address carries the capability: no referrer, no cache, no framing,
    // and the script may talk to this page (and through it, the hub) only.
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(answer.body.as_bytes()).await?;
    stream.shutdown().await
}

/// Events `/recent` looks through, the latest first.
const RECENT_EVENTS: usize = 5_000;
/// Rejections `/recent` lists at most.
const RECENT_REJECTIONS: usize = 20;
/// Questions `/recent` lists at most.
const RECENT_QUESTIONS: usize = 50;

/// What `/recent` answers, newest first in each list.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Recent {
    rejections: Vec<Rejection>,
    questions: Vec<Question>,
}

/// One rejected attempt and why.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rejection {
    task: String,
    worker: Option<String>,
    attempt: Option<u32>,
    at_ms: i64,
    reasons: Vec<String>,
}

/// A worker's question, with the engineer's answer once given.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Question {
    task: String,
    worker: Option<String>,
    attempt: Option<u32>,
    at_ms: i64,
    /// What was asked.
    #[serde(rename = "question")]
    asked: String,
    answer: Option<String>,
}

/// The details of the events `/recent` reads (written by the scheduler).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Detail {
    reasons: Vec<String>,
}

/// The latest rejections and questions of the project at `root`, as JSON.
fn recent(root: &std::path::Path) -> Result<String, String> {
    let events = match crate::store::read_project(root)? {
        Some(mut store) => store.recent_events(RECENT_EVENTS).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    serde_json::to_string(&recent_of(&events)).map_err(|e| e.to_string())
}

fn recent_of(events: &[StoredEvent]) -> Recent {
    let mut recent = Recent::default();
    for e in events.iter().filter(|e| e.kind == EventKind::Rejected) {
        let Some(task) = &e.task else { continue };
        recent.rejections.push(Rejection {
            task: task.clone(),
            worker: e.worker.clone(),
            attempt: e.attempt,
            at_ms: e.at_ms,
            reasons: Detail::deserialize(&e.detail).unwrap_or_default().reasons,
        });
    }
    // Questions and their answers are paired as the report pairs them; an
    // answer to a question asked before these events has none to go to.
    recent.questions = crate::report::questions_of(events)
        .into_iter()
        .map(|q| Question {
            task: q.task,
            worker: q.question.worker,
            attempt: q.question.attempt,
            at_ms: q.question.asked_ms,
            asked: q.question.question,
            answer: q.question.answer,
        })
        .collect();
    recent.rejections.reverse();
    recent.rejections.truncate(RECENT_REJECTIONS);
    recent.questions.reverse();
    recent.questions.truncate(RECENT_QUESTIONS);
    recent
}

/// The page, with the hub's port and the capability filled in.
fn html(capability: &str) -> String {
    PAGE.replace("__VIEW__", capability)
        .replace("__TIMELINE_CSS__", crate::report::TIMELINE_CSS)
        .replace("__LEGEND__", &crate::report::legend_html())
}

const PAGE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventKind, task: &str, attempt: Option<u32>, detail: serde_json::Value) -> StoredEvent {
        StoredEvent {
            id: 0,
            at_ms: 0,
            kind,
            task: Some(task.to_owned()),
            worker: Some("w1".to_owned()),
            attempt,
            detail,
            run: Some(1),
        }
    }

    #[test]
    fn recent_lists_rejections_newest_first_and_each_question_with_the_answer_that_followed_it() {
        let events = [
            event(EventKind::Rejected, "a", Some(1), json!({"reasons": ["too short"]})),
            event(EventKind::Blocked, "q", Some(1), json!({"question": "tabs or spaces?"})),
            event(EventKind::Rejected, "b", Some(2), json!({"reasons": ["no tests", "lint"]})),
            event(EventKind::Answered, "q", None, json!({"answer": "tabs"})),
            event(EventKind::Blocked, "q", Some(1), json!({"question": "how wide?"})),
        ];
        let recent = recent_of(&events);
        let rejected: Vec<(&str, &[String])> =
            recent.rejections.iter().map(|r| (r.task.as_str(), r.reasons.as_slice())).collect();
        assert_eq!(
            rejected,
            [("b", &["no tests".to_owned(), "lint".to_owned()][..]), ("a", &["too short".to_owned()][..])]
        );
        let asked: Vec<(&str, Option<&str>)> =
            recent.questions.iter().map(|q| (q.asked.as_str(), q.answer.as_deref())).collect();
        assert_eq!(asked, [("how wide?", None), ("tabs or spaces?", Some("tabs"))]);
    }
}
