//! The live page: a read-only view of the hub in a browser, served on a
//! port of its own on loopback. One HTML document with its CSS and script
//! inline (nothing fetched from elsewhere), and the timeline as inline SVG
//! drawn by the same code as `mcc report --html`. The page's script opens a
//! WebSocket to the hub with the view capability in its address (see
//! [`super::guard::view_capability`]), subscribes, and redraws from each
//! delta the hub pushes.
//!
//! The server has three routes (`/`, `/timeline`, and `/recent`: the latest
//! rejections and questions from the event log, so that a page opened late
//! or reloaded shows them too), all `GET`, all needing
//! the capability and a loopback `Host` with this port (DNS rebinding); it is
//! small enough that an HTTP framework would not earn its place. Sockets
//! that say nothing cannot keep the page from a browser: requests being read
//! are a bounded set that pushes out its oldest for a newcomer, as the hub's
//! handshakes do ([`super::handshakes`]).

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
use crate::store::{Store, StoredEvent};
use serde::{Deserialize, Serialize};

/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Request heads read at once; past it the oldest unfinished one is closed.
const MAX_READING: usize = 64;
/// Requests answered at once; more wait for a slot, for at most [`READ_LIMIT`].
const MAX_ANSWERING: usize = 32;
/// How long a browser may take to send its request.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// What the page server needs to answer.
struct Page {
    root: PathBuf,
    hub_port: u16,
    port: u16,
    capability: String,
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
pub async fn start(root: PathBuf, hub_port: u16, token: &str) -> std::io::Result<u16> {
    let state = Layout::of_root(&root).open().map_err(std::io::Error::from)?;
    let listener = listen(&state).await?;
    let port = listener.local_addr()?.port();
    if let Err(e) = state.write_atomic(PAGE_PORT, format!("{port}\n").as_bytes()) {
        tracing::warn!("cannot keep the live page's port for the next start: {e}");
    }
    let page = Arc::new(Page { root, hub_port, port, capability: view_capability(token) });
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
                let _ = tokio::time::timeout(READ_LIMIT * 3, serve(stream, &page, place, &answering)).await;
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

async fn serve(
    mut stream: TcpStream,
    page: &Page,
    (place, evicted): (Place, tokio::sync::oneshot::Receiver<()>),
    answering: &Arc<Semaphore>,
) -> std::io::Result<()> {
    let request = tokio::select! {
        read = tokio::time::timeout(READ_LIMIT, read_request(&mut stream)) => match read {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return respond(&mut stream, &Answer::text("400 Bad Request", "not a request this page reads\n"), page.hub_port).await,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        },
        // Pushed out by a newer request: this one was the oldest still unread.
        _ = evicted => return Ok(()),
    };
    if !place.finish() {
        return Ok(());
    }
    let Ok(Ok(_slot)) = tokio::time::timeout(READ_LIMIT, answering.acquire()).await else {
        let busy = Answer::text("503 Service Unavailable", "the page is busy answering others; reload in a moment\n");
        return respond(&mut stream, &busy, page.hub_port).await;
    };
    let answer = answer(page, request).await;
    respond(&mut stream, &answer, page.hub_port).await
}

/// What a request asked: method, path, how many `Host` headers, the first.
type Request = (Option<String>, Option<String>, usize, Option<Vec<u8>>);

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
                return Ok(Some((
                    req.method.map(str::to_owned),
                    req.path.map(str::to_owned),
                    host.len(),
                    host.first().map(|h| h.to_vec()),
                )));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            _ => return Ok(None),
        }
    }
}

async fn answer(page: &Page, (method, path, hosts, host): Request) -> Answer {
    let own_host = [format!("127.0.0.1:{}", page.port), format!("localhost:{}", page.port)];
    let host_ok =
        hosts == 1 && host.as_deref().is_some_and(|h| own_host.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(h)));
    if !host_ok {
        return Answer::text("403 Forbidden", "this page answers only to its loopback address\n");
    }
    if method.as_deref() != Some("GET") {
        return Answer::text("405 Method Not Allowed", "the live page only reads: GET\n");
    }
    let path = path.unwrap_or_default();
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    let views: Vec<&str> = query.split('&').filter_map(|p| p.strip_prefix("view=")).collect();
    let allowed = matches!(views.as_slice(), [one] if bool::from(one.as_bytes().ct_eq(page.capability.as_bytes())));
    match route {
        "/" | "/timeline" | "/recent" if !allowed => Answer::text(
            "403 Forbidden",
            "the address needs the view capability: open the address `mcc status` prints in the project\n",
        ),
        "/" => Answer {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: html(page.hub_port, &page.capability),
        },
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

async fn respond(stream: &mut TcpStream, answer: &Answer, hub_port: u16) -> std::io::Result<()> {
    // The address carries the capability: no referrer, no cache, no framing,
    // and the script may talk to the hub and this page only.
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws://127.0.0.1:{hub_port}; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n\r\n",
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
    question: String,
    answer: String,
}

/// The latest rejections and questions of the project at `root`, as JSON.
fn recent(root: &std::path::Path) -> Result<String, String> {
    let store = Store::open_read_only(Layout::of_root(root).dir()).map_err(|e| e.to_string())?;
    let events = store.recent_events(RECENT_EVENTS).map_err(|e| e.to_string())?;
    serde_json::to_string(&recent_of(&events)).map_err(|e| e.to_string())
}

fn recent_of(events: &[StoredEvent]) -> Recent {
    let mut recent = Recent::default();
    for e in events {
        let Some(task) = &e.task else { continue };
        let detail = || Detail::deserialize(&e.detail).unwrap_or_default();
        match e.kind {
            EventKind::Rejected => recent.rejections.push(Rejection {
                task: task.clone(),
                worker: e.worker.clone(),
                attempt: e.attempt,
                at_ms: e.at_ms,
                reasons: detail().reasons,
            }),
            EventKind::Blocked => recent.questions.push(Question {
                task: task.clone(),
                worker: e.worker.clone(),
                attempt: e.attempt,
                at_ms: e.at_ms,
                asked: detail().question,
                answer: None,
            }),
            EventKind::Answered => {
                // The answer goes to the task's last question; one asked before these events has none to go to.
                if let Some(q) = recent.questions.iter_mut().rev().find(|q| &q.task == task) {
                    q.answer.get_or_insert(detail().answer);
                }
            }
            _ => {}
        }
    }
    recent.rejections.reverse();
    recent.rejections.truncate(RECENT_REJECTIONS);
    recent.questions.reverse();
    recent.questions.truncate(RECENT_QUESTIONS);
    recent
}

/// The page, with the hub's port and the capability filled in.
fn html(hub_port: u16, capability: &str) -> String {
    PAGE.replace("__HUB_PORT__", &hub_port.to_string())
        .replace("__VIEW__", capability)
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
