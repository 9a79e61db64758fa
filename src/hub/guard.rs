//! Who may open a WebSocket to the hub, and what a connection may ask for.
//!
//! Every handshake is checked here and the check fails closed: a `Host`,
//! `Origin` or `Authorization` that cannot be read as plain ASCII is a
//! refusal, a duplicate of one is a `400`, and the `Host` port is parsed
//! strictly. A web page in the engineer's browser cannot pass (DNS
//! rebinding, cross-site WebSocket hijacking).
//!
//! After its handshake every connection holds a [`Scope`]: the project's
//! token (`.mcc/token`) or an engineer token may do anything; a worker
//! token only the worker verbs, as its one worker; a viewer token only
//! reads; a loopback connection without a token may read, work tasks, and
//! speak the old protocol, but never add tasks that run commands, load
//! workflows, answer, cancel or retry. [`Guard::permits`] is asked for every
//! message before the engine sees it, and it is the one place that decides:
//! [`need`] places every request kind, with no catch-all, and one match
//! says which scopes may ask for each (docs/security.md, "Token scopes").
//!
//! The live page (`src/hub/page.rs`) is the one web page let in: its script
//! connects from exactly its own origin (`http://127.0.0.1:PAGE_PORT`) with
//! `?view=CAPABILITY` ([`view_capability`], derived from the token, never the
//! token itself), and gets [`Scope::LivePage`]: it may subscribe and read,
//! nothing else.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode};

use super::tokens::{Grant, Tokens};
use crate::wire::{ClientMsg, ServerMsg, TokenScope};

/// The rules of one hub.
#[derive(Debug, Clone)]
pub struct Guard {
    pub port: u16,
    /// The project's token; presenting it grants [`Scope::Engineer`].
    pub token: String,
    /// True when the hub listens beyond loopback: then every connection needs a token.
    pub remote: bool,
    /// The live page's port: its origin, and only it, may connect with the view capability.
    pub page_port: Option<u16>,
    /// The tokens made by `mcc token add`.
    pub tokens: Arc<Tokens>,
}

/// What a connection that passed the handshake may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The project's token or an engineer token: anything.
    Engineer,
    /// A worker token: the worker verbs, acting as this worker only.
    Worker(String),
    /// A viewer token: reading only.
    Viewer,
    /// Loopback without a token: reading, working tasks, the old protocol.
    Anonymous,
    /// The live page's script: subscribing and reading, nothing that changes the work.
    LivePage,
}

/// A connection's scope, and the token it came from when that token can be
/// revoked or expire (the project's own token cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub scope: Scope,
    pub grant: Option<Grant>,
}

impl Access {
    pub fn of(scope: Scope) -> Self {
        Self { scope, grant: None }
    }
}

/// A request refused after the handshake: its text, and whether the
/// connection closes (its token was revoked or expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub error: String,
    pub close: bool,
}

/// The live page's capability: what its URL carries instead of the token.
/// Knowing it lets one read the hub's state, never change it, and the token
/// cannot be recovered from it.
pub fn view_capability(token: &str) -> String {
    let digest = Sha256::new().chain_update(b"mcc live page, read only\0").chain_update(token.as_bytes()).finalize();
    digest.iter().fold(String::with_capacity(64), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Why a handshake is refused, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    fn forbidden(reason: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, reason: reason.into() }
    }

    fn bad_request(reason: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, reason: reason.into() }
    }

    /// The HTTP answer sent for it.
    pub fn response(&self) -> ErrorResponse {
        let mut response = ErrorResponse::new(Some(format!("mcc hub refused the connection: {}\n", self.reason)));
        *response.status_mut() = self.status;
        response
    }
}

const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
/// Headers the guard reads: each must appear at most once and be plain ASCII.
const CHECKED: [&str; 3] = ["host", "origin", "authorization"];

const TOKEN_HELP: &str = "send `Authorization: Bearer <token>` with the token in the project's .mcc/token (mcc commands run inside the project do this)";

impl Guard {
    /// What the connection may do, or why the handshake is refused.
    pub fn check(&self, request: &Request) -> Result<Access, Refusal> {
        let headers = request.headers();
        for name in CHECKED {
            let mut values = headers.get_all(name).iter();
            let first = values.next();
            if values.next().is_some() {
                return Err(Refusal::bad_request(format!("the handshake has more than one `{name}` header")));
            }
            if let Some(value) = first
                && !value.as_bytes().iter().all(|b| (0x20..0x7f).contains(b))
            {
                return Err(Refusal::bad_request(format!("the `{name}` header is not plain ASCII")));
            }
        }
        if header(headers, "authorization").is_some_and(|v| !v.starts_with("Bearer ")) {
            return Err(Refusal::bad_request(format!(
                "the Authorization header is not `Bearer <token>`; {TOKEN_HELP}"
            )));
        }
        let query = request.uri().query();
        // An address is written to logs, shell history and browser history:
        // the token never travels in one, right or wrong.
        if query_values(query, "token").next().is_some() {
            return Err(Refusal::bad_request(format!(
                "the access token was sent in the address, where logs keep it; {TOKEN_HELP}, and make a new token (delete .mcc/token and restart the hub) if that address was shared"
            )));
        }
        if query_values(query, "view").nth(1).is_some() {
            return Err(Refusal::bad_request("the address has more than one `view=`"));
        }
        if let Some(view) = query_values(query, "view").next() {
            return self.check_view(headers, view);
        }
        let access = match bearer(headers) {
            Some(given) if bool::from(given.as_bytes().ct_eq(self.token.as_bytes())) => Access::of(Scope::Engineer),
            Some(given) => self.scoped(given)?,
            None if self.remote => {
                return Err(Refusal::forbidden(format!(
                    "this hub listens beyond loopback, so every connection needs the access token: {TOKEN_HELP}"
                )));
            }
            None => Access::of(Scope::Anonymous),
        };
        // On loopback the name must be loopback too, token or not (DNS rebinding);
        // beyond loopback the token is what counts.
        if !self.remote {
            let host =
                header(headers, "host").ok_or_else(|| Refusal::bad_request("the handshake has no Host header"))?;
            if !self.is_loopback_authority(host) {
                return Err(Refusal::forbidden(format!("Host `{host}` is not a loopback name on port {}", self.port)));
            }
        }
        if let Some(origin) = header(headers, "origin") {
            let own = origin.strip_prefix("http://").is_some_and(|authority| self.is_loopback_authority(authority));
            if !own {
                return Err(Refusal::forbidden(format!(
                    "Origin `{origin}` is a web page; only command-line clients may connect"
                )));
            }
        }
        Ok(access)
    }

    /// The access a token made by `mcc token add` gives, or why it gives none.
    fn scoped(&self, given: &str) -> Result<Access, Refusal> {
        let Some(info) = self.tokens.find(given) else {
            return Err(Refusal::forbidden(format!("the access token is wrong; {TOKEN_HELP}")));
        };
        let grant = Grant { id: info.id.clone(), expires_ms: info.expires_ms };
        self.tokens.still_valid(&grant).map_err(Refusal::forbidden)?;
        let scope = match (info.scope, info.worker) {
            (TokenScope::Engineer, _) => Scope::Engineer,
            (TokenScope::Viewer, _) => Scope::Viewer,
            (TokenScope::Worker, Some(name)) => Scope::Worker(name),
            // A stored worker token always names its worker; one that does not is refused, not widened.
            (TokenScope::Worker, None) => {
                return Err(Refusal::forbidden(format!(
                    "token {} is a worker token with no worker name; revoke it (`mcc token revoke {}`) and make another with `mcc token add --worker NAME`",
                    info.id, info.id
                )));
            }
        };
        Ok(Access { scope, grant: Some(grant) })
    }

    /// The live page's handshake: the right capability, from exactly the
    /// page's own origin, with no token beside it.
    fn check_view(&self, headers: &HeaderMap, view: &str) -> Result<Access, Refusal> {
        if header(headers, "authorization").is_some() {
            return Err(Refusal::bad_request("send either the token or the view capability, not both"));
        }
        let expected = view_capability(&self.token);
        if !bool::from(view.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(Refusal::forbidden(
                "the view capability is wrong; open the live page at the address `mcc status` prints",
            ));
        }
        let page_origin = self.page_port.map(|p| format!("http://127.0.0.1:{p}"));
        let origin = header(headers, "origin");
        if page_origin.is_none() || origin != page_origin.as_deref() {
            return Err(Refusal::forbidden(format!(
                "the view capability is for the live page's own script only (Origin {}), not `{}`",
                page_origin.as_deref().unwrap_or("none: this hub serves no page"),
                origin.unwrap_or("none")
            )));
        }
        if !self.remote {
            let host =
                header(headers, "host").ok_or_else(|| Refusal::bad_request("the handshake has no Host header"))?;
            if !self.is_loopback_authority(host) {
                return Err(Refusal::forbidden(format!("Host `{host}` is not a loopback name on port {}", self.port)));
            }
        }
        Ok(Access::of(Scope::LivePage))
    }

    /// `localhost:PORT`, `127.0.0.1:PORT` or `[::1]:PORT`, exactly: the port
    /// in plain decimal digits, no sign, no leading zero.
    fn is_loopback_authority(&self, authority: &str) -> bool {
        let Some((host, port)) = authority.rsplit_once(':') else { return false };
        let strict = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && !(port.len() > 1 && port.starts_with('0'));
        strict
            && LOOPBACK_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host))
            && port.parse::<u16>().ok() == Some(self.port)
    }
}

/// What a request needs, by kind: the table [`Guard::permits`] reads.
#[derive(Debug, Clone, Copy)]
enum Need<'a> {
    /// Reads the hub's state.
    Read,
    /// Reads one task: a worker token may, for a task its worker holds ([`Scope::screen`]).
    ReadTask,
    /// A worker verb, acting as this worker.
    WorkAs(&'a str),
    /// The old protocol's registering, asking and reporting: the connection
    /// acts as whatever it registered as.
    OldProtocol,
    /// The old protocol's `create_tasks`: adding tasks, which may carry commands.
    OldCreate(Option<&'a Value>),
    /// Changes the plan, answers for the engineer, or loads code.
    ChangeWork,
    /// Makes, lists or revokes tokens.
    Tokens,
}

/// Each request's wire name and what it needs. No catch-all, here nor in
/// [`Scope::permits`]: a new message does not compile until it is placed,
/// nor a new need until each scope says yes or no to it.
fn need(msg: &ClientMsg) -> (&'static str, Need<'_>) {
    match msg {
        ClientMsg::Status {} => ("status", Need::Read),
        ClientMsg::Snapshot {} => ("snapshot", Need::Read),
        ClientMsg::ShowTask { .. } => ("show_task", Need::ReadTask),
        ClientMsg::Subscribe { .. } => ("subscribe", Need::Read),
        ClientMsg::TasksPage { .. } => ("tasks_page", Need::Read),
        ClientMsg::Next { worker, .. } => ("next", Need::WorkAs(worker)),
        ClientMsg::Done { worker, .. } => ("done", Need::WorkAs(worker)),
        ClientMsg::Block { worker, .. } => ("block", Need::WorkAs(worker)),
        ClientMsg::Fail { worker, .. } => ("fail", Need::WorkAs(worker)),
        ClientMsg::Progress { worker, .. } => ("progress", Need::WorkAs(worker)),
        ClientMsg::Leave { worker } => ("leave", Need::WorkAs(worker)),
        // A remote worker's files travel as its worker: the engine checks the grant.
        ClientMsg::TaskFiles { worker, .. } => ("task_files", Need::WorkAs(worker)),
        ClientMsg::FetchFile { worker, .. } => ("fetch_file", Need::WorkAs(worker)),
        ClientMsg::Upload { worker, .. } => ("upload", Need::WorkAs(worker)),
        ClientMsg::Present { worker, .. } => ("present", Need::WorkAs(worker)),
        ClientMsg::Register { .. } => ("register", Need::OldProtocol),
        ClientMsg::RequestTask {} => ("request_task", Need::OldProtocol),
        ClientMsg::TaskComplete { .. } => ("task_complete", Need::OldProtocol),
        ClientMsg::CreateTasks { tasks } => ("create_tasks", Need::OldCreate(tasks.as_ref())),
        ClientMsg::AddTasks { .. } => ("add_tasks", Need::ChangeWork),
        ClientMsg::LoadWorkflow { .. } => ("load_workflow", Need::ChangeWork),
        ClientMsg::Answer { .. } => ("answer", Need::ChangeWork),
        ClientMsg::Cancel { .. } => ("cancel", Need::ChangeWork),
        ClientMsg::Retry { .. } => ("retry", Need::ChangeWork),
        ClientMsg::BudgetSet { .. } => ("budget_set", Need::ChangeWork),
        ClientMsg::Budgets {} => ("budgets", Need::Read),
        ClientMsg::TokenAdd { .. } => ("token_add", Need::Tokens),
        ClientMsg::TokenList {} => ("token_list", Need::Tokens),
        ClientMsg::TokenRevoke { .. } => ("token_revoke", Need::Tokens),
    }
}

/// What a worker token may do, as its refusals say it.
const WORKER_VERBS: &str = "next, done, block, fail, progress and leave (and the task's files)";
/// What a viewer token may do.
const VIEWER_READS: &str = "status, the task list, task details and subscriptions";

impl Guard {
    /// Ok, or why the connection may not send `msg`: the one check every
    /// request passes before the engine sees it. A connection whose token was
    /// revoked or has expired since its handshake is refused and closed.
    pub fn permits(&self, access: &Access, msg: &ClientMsg, max_tasks: usize) -> Result<(), Denied> {
        if let Some(grant) = &access.grant {
            self.tokens.still_valid(grant).map_err(|error| Denied { error, close: true })?;
        }
        access.scope.permits(msg, max_tasks).map_err(|error| Denied { error, close: false })
    }
}

impl Scope {
    /// Ok, or the error the connection is sent instead of passing `msg` on.
    pub fn permits(&self, msg: &ClientMsg, max_tasks: usize) -> Result<(), String> {
        let count = match msg {
            ClientMsg::CreateTasks { tasks: Some(tasks) } => tasks.as_array().map_or(0, Vec::len),
            ClientMsg::AddTasks { tasks } => tasks.len(),
            _ => 0,
        };
        if count > max_tasks {
            return Err(format!(
                "{count} tasks in one message is more than this hub takes ({max_tasks}); send them in smaller batches, or start the hub with a larger `mcc hub --max-tasks-per-message`"
            ));
        }
        let (kind, need) = need(msg);
        match (self, need) {
            (Self::Engineer, _)
            | (Self::Anonymous, Need::Read | Need::ReadTask | Need::WorkAs(_) | Need::OldProtocol)
            | (Self::Viewer | Self::LivePage, Need::Read | Need::ReadTask)
            | (Self::Worker(_), Need::ReadTask) => Ok(()),
            (Self::Worker(name), Need::WorkAs(worker)) if worker == name => Ok(()),
            (Self::Worker(name), Need::WorkAs(worker)) => Err(format!(
                "this token acts only as worker {name}, not as {worker}: run the command with --as {name}, or ask the engineer for a token of {worker} (`mcc token add --worker {worker}`)"
            )),
            (Self::Worker(name), Need::Read) => Err(format!(
                "`{kind}` is not for this token: it acts only as worker {name}, with {WORKER_VERBS}, and reads the tasks it holds (`show_task`); a viewer token reads the hub's state (`mcc token add --viewer`, run by the engineer)"
            )),
            (Self::Worker(name), Need::OldProtocol | Need::OldCreate(_) | Need::ChangeWork | Need::Tokens) => Err(format!(
                "`{kind}` is not for this token: it acts only as worker {name}, with {WORKER_VERBS}; it needs an engineer token (`mcc token add --engineer`, run by the engineer) or the project's .mcc/token"
            )),
            (Self::Viewer, Need::WorkAs(_) | Need::OldProtocol) => Err(format!(
                "`{kind}` is not for this token: it only reads ({VIEWER_READS}); a worker token works tasks (`mcc token add --worker NAME`, run by the engineer)"
            )),
            (Self::Viewer, Need::OldCreate(_) | Need::ChangeWork | Need::Tokens) => Err(format!(
                "`{kind}` is not for this token: it only reads ({VIEWER_READS}); it needs an engineer token (`mcc token add --engineer`, run by the engineer) or the project's .mcc/token"
            )),
            (Self::LivePage, Need::WorkAs(_) | Need::OldProtocol | Need::OldCreate(_) | Need::ChangeWork | Need::Tokens) => Err(
                "the live page's connection only reads (subscribe, tasks_page, snapshot, show_task, status); use `mcc` in the project to change the work"
                    .to_owned(),
            ),
            (Self::Anonymous, Need::OldCreate(tasks)) => {
                let Some(task) = tasks.and_then(Value::as_array).and_then(|ts| ts.iter().find(|t| runs_a_command(t)))
                else {
                    return Ok(());
                };
                let id = task.get("id").and_then(Value::as_str).unwrap_or("?");
                Err(anonymous_refusal(&format!(
                    "creating task `{id}`, whose acceptance.validation is a command the hub would run,"
                )))
            }
            (Self::Anonymous, Need::ChangeWork | Need::Tokens) => Err(anonymous_refusal(kind)),
        }
    }

    /// What the connection is sent in place of the engine's answer `msg`: a
    /// worker token reads only the tasks its worker holds, and only the
    /// engine knows who holds a task, so its answer is screened here.
    pub fn screen(&self, msg: ServerMsg) -> ServerMsg {
        let Self::Worker(name) = self else { return msg };
        match &msg {
            ServerMsg::TaskInfo { task } if task.summary.holder.as_deref() != Some(name.as_str()) => {
                ServerMsg::error(format!(
                    "task {} is not held by worker {name}: this token reads only the tasks its worker holds; a viewer token reads every task (`mcc token add --viewer`, run by the engineer)",
                    task.summary.id
                ))
            }
            _ => msg,
        }
    }
}

fn anonymous_refusal(what: &str) -> String {
    format!("{what} needs the project's access token, and this connection did not present one: {TOKEN_HELP}")
}

/// True when a task (as sent) carries a validation command.
fn runs_a_command(task: &Value) -> bool {
    task.get("acceptance").and_then(|a| a.get("validation")).is_some_and(|v| !v.is_null())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "))
}

/// Every value of `name=` in the query, in order.
fn query_values<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(move |pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    fn request(headers: &[(&str, &[u8])]) -> Request {
        let mut request = Request::builder().uri("/").body(()).unwrap();
        for (k, v) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
            request.headers_mut().append(name, HeaderValue::from_bytes(v).unwrap());
        }
        request
    }

    fn local() -> Guard {
        Guard { port: 3100, token: "s3cret".into(), remote: false, page_port: Some(3200), tokens: Tokens::in_memory() }
    }

    #[test]
    fn loopback_clients_pass_and_web_pages_and_foreign_hosts_do_not() {
        let guard = local();
        assert_eq!(guard.check(&request(&[("host", b"localhost:3100")])), Ok(Access::of(Scope::Anonymous)));
        assert!(guard.check(&request(&[("host", b"[::1]:3100")])).is_ok());
        assert!(guard.check(&request(&[("host", b"127.0.0.1:3100"), ("origin", b"http://localhost:3100")])).is_ok());
        for bad in [
            &b"evil.example:3100"[..],
            b"localhost:3101",
            b"localhost",
            b"localhost.evil.example:3100",
            b"localhost:+3100",
            b"localhost:03100",
            b"localhost:3100 ",
            b"localhost.:3100",
        ] {
            assert!(guard.check(&request(&[("host", bad)])).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(guard.check(&request(&[("host", b"localhost:3100"), ("origin", b"https://evil.example")])).is_err());
        assert!(guard.check(&request(&[("host", b"localhost:3100"), ("origin", b"null")])).is_err());
    }

    fn with_uri(uri: &str, headers: &[(&str, &[u8])]) -> Request {
        let mut r = request(headers);
        *r.uri_mut() = uri.parse().unwrap();
        r
    }

    #[test]
    fn the_live_page_reads_from_its_own_origin_with_the_view_capability_and_nothing_else_does() {
        let guard = local();
        let cap = view_capability("s3cret");
        assert_ne!(cap, "s3cret");
        let uri = format!("/?view={cap}");
        let page = [("host", &b"127.0.0.1:3100"[..]), ("origin", b"http://127.0.0.1:3200")];
        assert_eq!(guard.check(&with_uri(&uri, &page)), Ok(Access::of(Scope::LivePage)));
        for origin in [
            &b"http://localhost:3200"[..],
            b"http://127.0.0.1:3100",
            b"http://127.0.0.1:3201",
            b"https://127.0.0.1:3200",
            b"http://127.0.0.1:3200/",
            b"null",
        ] {
            let refused = guard.check(&with_uri(&uri, &[("host", b"127.0.0.1:3100"), ("origin", origin)]));
            assert!(refused.is_err(), "{}", String::from_utf8_lossy(origin));
        }
        assert!(guard.check(&with_uri(&uri, &[("host", b"127.0.0.1:3100")])).is_err(), "no origin");
        assert!(guard.check(&with_uri("/?view=nope", &page)).is_err(), "wrong capability");
        assert!(guard.check(&with_uri(&format!("{uri}&view={cap}"), &page)).is_err(), "twice");
        assert!(guard.check(&with_uri(&format!("{uri}&token=s3cret"), &page)).is_err(), "token beside it");
        assert!(guard.check(&with_uri("/?view=s3cret", &page)).is_err(), "the token is not the capability");
        // The page's origin without the capability is any web page.
        assert!(guard.check(&request(&page)).is_err());
        let parse = |v: serde_json::Value| crate::wire::parse(&v.to_string()).unwrap();
        assert!(Scope::LivePage.permits(&parse(json!({"type":"subscribe"})), 100).is_ok());
        assert!(Scope::LivePage.permits(&parse(json!({"type":"tasks_page","state":"ready"})), 100).is_ok());
        for msg in [
            json!({"type":"next","worker":"w"}),
            json!({"type":"register","role":"worker","workerId":"w"}),
            json!({"type":"create_tasks","tasks":[]}),
            json!({"type":"request_task"}),
            json!({"type":"leave","worker":"w"}),
            json!({"type":"answer","taskId":"a","text":"t"}),
        ] {
            assert!(Scope::LivePage.permits(&parse(msg.clone()), 100).is_err(), "{msg}");
        }
    }

    #[test]
    fn unreadable_or_repeated_headers_are_refused() {
        let guard = local();
        let refused = |headers: &[(&str, &[u8])]| guard.check(&request(headers)).unwrap_err().status;
        assert_eq!(
            refused(&[("host", b"localhost:3100"), ("origin", b"http://evil.com\xe9")]),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(refused(&[("host", b"localhost:3100"), ("origin", b"null\x80")]), StatusCode::BAD_REQUEST);
        assert_eq!(refused(&[("host", b"localhost:3100\xff")]), StatusCode::BAD_REQUEST);
        assert_eq!(refused(&[("host", b"localhost:3100"), ("host", b"localhost:3100")]), StatusCode::BAD_REQUEST);
        assert_eq!(
            refused(&[("host", b"localhost:3100"), ("origin", b"http://localhost:3100"), ("origin", b"http://evil")]),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_token_grants_everything_and_a_wrong_one_is_refused() {
        let remote = Guard { remote: true, ..local() };
        assert!(remote.check(&request(&[("host", b"10.0.0.5:3100")])).is_err());
        assert!(remote.check(&request(&[("host", b"10.0.0.5:3100"), ("authorization", b"Bearer nope")])).is_err());
        assert_eq!(
            remote.check(&request(&[("host", b"10.0.0.5:3100"), ("authorization", b"Bearer s3cret")])),
            Ok(Access::of(Scope::Engineer))
        );
        let wrong = local().check(&request(&[("host", b"localhost:3100"), ("authorization", b"Bearer nope")]));
        assert_eq!(wrong.unwrap_err().status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_token_in_the_address_is_refused_even_when_it_is_right() {
        let loopback: &[(&str, &[u8])] = &[("host", b"localhost:3100")];
        for uri in ["/?token=s3cret", "/?token=nope", "/?x=1&token=s3cret"] {
            let refusal = local().check(&with_uri(uri, loopback)).expect_err(uri);
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(refusal.reason.contains("Authorization: Bearer"), "{uri}: {}", refusal.reason);
        }
        let remote = Guard { remote: true, ..local() };
        assert!(remote.check(&with_uri("/?token=s3cret", &[("host", b"10.0.0.5:3100")])).is_err());
    }

    #[test]
    fn without_the_token_a_connection_cannot_run_commands_or_change_the_work() {
        let parse = |v: serde_json::Value| crate::wire::parse(&v.to_string()).unwrap();
        let plain = parse(json!({"type":"create_tasks","tasks":[{"id":"a","description":"d"}]}));
        let checked = parse(
            json!({"type":"create_tasks","tasks":[{"id":"b","description":"d","acceptance":{"validation":"rm -rf ~"}}]}),
        );
        assert!(Scope::Anonymous.permits(&plain, 100).is_ok());
        let refused = Scope::Anonymous.permits(&checked, 100).unwrap_err();
        assert!(refused.contains("task `b`") && refused.contains(".mcc/token"), "{refused}");
        assert!(Scope::Engineer.permits(&checked, 100).is_ok());
        for msg in [
            json!({"type":"add_tasks","tasks":[]}),
            json!({"type":"load_workflow","path":"/tmp/x.lua"}),
            json!({"type":"answer","taskId":"a","text":"t"}),
            json!({"type":"cancel","taskId":"a"}),
            json!({"type":"retry","taskId":"a"}),
        ] {
            let kind = msg["type"].as_str().unwrap().to_owned();
            let error = Scope::Anonymous.permits(&parse(msg), 100).unwrap_err();
            assert!(error.starts_with(&kind) && error.contains("access token"), "{error}");
        }
        let many = parse(json!({"type":"add_tasks","tasks":[{}, {}, {}]}));
        assert!(Scope::Engineer.permits(&many, 2).unwrap_err().contains("--max-tasks-per-message"));
    }

    #[tokio::test]
    async fn a_scoped_token_gets_its_scope_at_the_handshake_and_the_table_holds_it_to_it() {
        let guard = local();
        let add = |scope, worker: Option<&str>| ClientMsg::TokenAdd {
            scope,
            worker: worker.map(str::to_owned),
            expires_ms: None,
        };
        let Some(ServerMsg::TokenAdded { secret, token }) =
            guard.tokens.answer(&add(TokenScope::Worker, Some("A"))).await
        else {
            panic!("no token")
        };
        let bearer = format!("Bearer {secret}");
        let access =
            guard.check(&request(&[("host", b"localhost:3100"), ("authorization", bearer.as_bytes())])).unwrap();
        assert_eq!(access.scope, Scope::Worker("A".into()));
        assert_eq!(access.grant.as_ref().map(|g| g.id.as_str()), Some(token.id.as_str()));
        let parse = |v: serde_json::Value| crate::wire::parse(&v.to_string()).unwrap();
        assert!(guard.permits(&access, &parse(json!({"type":"next","worker":"A"})), 100).is_ok());
        let as_b = guard.permits(&access, &parse(json!({"type":"leave","worker":"B"})), 100).unwrap_err();
        assert!(!as_b.close && as_b.error.contains("not as B"), "{as_b:?}");
        for kind in ["status", "snapshot", "token_list"] {
            let refused = guard.permits(&access, &parse(json!({"type": kind})), 100).unwrap_err();
            assert!(refused.error.contains("acts only as worker A"), "{refused:?}");
        }
        assert!(Scope::Viewer.permits(&parse(json!({"type":"status"})), 100).is_ok());
        assert!(
            Scope::Viewer.permits(&parse(json!({"type":"next","worker":"A"})), 100).unwrap_err().contains("only reads")
        );
        // Revoked after its handshake: the next request is refused and closes the connection.
        guard.tokens.answer(&ClientMsg::TokenRevoke { id: token.id }).await;
        let cut = guard.permits(&access, &parse(json!({"type":"next","worker":"A"})), 100).unwrap_err();
        assert!(cut.close && cut.error.contains("revoked"), "{cut:?}");
        assert_eq!(
            guard
                .check(&request(&[("host", b"localhost:3100"), ("authorization", bearer.as_bytes())]))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
    }
}
