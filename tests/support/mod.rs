//! Test helpers: a project folder, a real hub process, a raw WebSocket
//! client, and a runner for `mcc` commands.

#![allow(dead_code)]

pub mod netns;
pub mod postgres;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long any single expected event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn mcc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcc")
}

/// A project root in a temporary folder.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// A `mcc` command run in the project root.
    pub fn mcc(&self) -> Mcc {
        Mcc::new(self.root())
    }
}

/// Builder for one run of the `mcc` binary.
pub struct Mcc {
    cmd: Command,
}

impl Mcc {
    pub fn new(cwd: &Path) -> Self {
        let mut cmd = Command::new(mcc_bin());
        cmd.current_dir(cwd).env_remove("MCC_WORKER").env_remove("MCC_HUB").env("NO_COLOR", "1");
        // The test binary runs every `mcc worker next` and lives on: it is no chat to watch
        // (tests/presence.rs starts watchers beside agents of its own).
        cmd.env("MCC_WATCHER", "off");
        Self { cmd }
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn run(mut self) -> Run {
        let out: Output = self.cmd.stdin(Stdio::null()).output().expect("run mcc");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a finished `mcc` run printed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A running `mcc hub` process.
pub struct Hub {
    pub child: Child,
    pub url: String,
    pub port: u16,
    pub root: PathBuf,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    /// `mcc hub --port 0 --dir ROOT EXTRA...`, returned once it listens.
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(mcc_bin())
            .args(["hub", "--port", "0", "--dir"])
            .arg(root)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcc hub");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the hub did not start: {:?}", log.lock().unwrap())
        });
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Self { child, url, port, root: root.to_owned(), log }
    }

    /// A connection with the project's token, as `mcc` commands connect.
    pub fn connect(&self) -> Ws {
        let token = std::fs::read_to_string(self.root.join(".mcc/token")).expect("the hub wrote its token");
        Ws::connect_with_token(&self.url, token.trim())
    }

    /// A connection without the token, as an old-protocol client connects.
    pub fn connect_anonymous(&self) -> Ws {
        Ws::connect(&self.url)
    }

    /// `kill -9`: nothing is flushed, nothing is said.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap().code()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Hub {
    /// SIGTERM first: the hub's graceful stop kills its commands' groups,
    /// which a SIGKILL would leave running. SIGKILL only if it does not exit.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let until = Instant::now() + Duration::from_secs(5);
            let mut pause = Duration::from_millis(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw WebSocket client, as an old-protocol client would be.
pub struct Ws {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    pub client_id: String,
}

impl Ws {
    pub fn connect(url: &str) -> Self {
        let (socket, _) = tungstenite::connect(url).expect("connect to the hub");
        Self::greeted(socket)
    }

    /// Connect presenting `token` as `mcc` commands do.
    pub fn connect_with_token(url: &str, token: &str) -> Self {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tungstenite::connect(request).expect("connect to the hub");
        Self::greeted(socket)
    }

    fn greeted(socket: WebSocket<MaybeTlsStream<TcpStream>>) -> Self {
        let mut ws = Self { socket, client_id: String::new() };
        let hello = ws.recv();
        assert_eq!(hello["type"], "connected", "{hello}");
        hello["clientId"].as_str().unwrap().clone_into(&mut ws.client_id);
        ws
    }

    pub fn send(&mut self, value: Value) {
        self.socket.send(Message::text(value.to_string())).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.try_send_text(text).unwrap();
    }

    /// Send, reporting a connection the hub already closed instead of failing.
    pub fn try_send_text(&mut self, text: &str) -> Result<(), tungstenite::Error> {
        self.socket.send(Message::text(text.to_owned()))
    }

    /// The next message, failing the test after [`DEADLINE`]. A hub that
    /// closed the connection (or died) is told apart from one that is silent.
    pub fn recv(&mut self) -> Value {
        let start = Instant::now();
        match self.recv_within(DEADLINE) {
            Some(msg) => msg,
            None if start.elapsed() >= DEADLINE => panic!("no message within {DEADLINE:?}: the hub is silent"),
            None => {
                panic!("the connection closed after {:?} with no message: the hub closed it or died", start.elapsed())
            }
        }
    }

    /// The next message within `limit`, or `None`.
    pub fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        if let MaybeTlsStream::Plain(s) = self.socket.get_mut() {
            s.set_read_timeout(Some(limit)).unwrap();
        }
        loop {
            match self.socket.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Send and return the first answer.
    pub fn ask(&mut self, value: Value) -> Value {
        self.send(value);
        self.recv()
    }

    /// Read messages until one of `kind` arrives; earlier ones are returned too.
    pub fn until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let start = Instant::now();
        let mut before = Vec::new();
        while start.elapsed() < DEADLINE {
            let msg = self.recv();
            if msg["type"] == kind {
                return (msg, before);
            }
            before.push(msg);
        }
        panic!("no `{kind}` within {DEADLINE:?}; got {before:?}")
    }

    pub fn register_coordinator(&mut self) {
        let reply = self.ask(json!({"type":"register","role":"coordinator"}));
        assert_eq!(reply["type"], "registered", "{reply}");
    }

    pub fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

/// A task in the old protocol's full shape.
pub fn old_task(id: &str, outputs: &[&str], deps: &[&str]) -> Value {
    json!({
        "id": id,
        "type": "file-summary",
        "description": format!("do {id}"),
        "context": {"targetFiles": [], "outputFiles": outputs, "requirements": ["be brief"]},
        "acceptance": {"criteria": ["exists"]},
        "assignedTo": null,
        "status": "pending",
        "createdAt": "2025-01-26T00:00:00Z",
        "completedAt": null,
        "dependencies": deps,
    })
}

/// Wait until `check` holds, reading `what` for the failure message.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while start.elapsed() < DEADLINE {
        if check() {
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    panic!("{what}: not true within {DEADLINE:?}");
}

/// What a long-running `mcc` command prints, line by line as it comes (read
/// on a thread of its own), for tests that wait for a line.
pub struct Printed {
    lines: mpsc::Receiver<String>,
    before: Vec<String>,
}

impl Printed {
    /// Takes the child's piped stdout.
    pub fn of(child: &mut Child) -> Self {
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { lines, before: Vec::new() }
    }

    /// Read lines until one contains `text`; panics with all printed before
    /// if none does within [`DEADLINE`].
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + DEADLINE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(line) => self.before.push(line),
                Err(_) => break,
            }
        }
        panic!("never printed {text:?}; printed {:?}", self.before);
    }

    /// Every line still to come, until the command closes its output.
    pub fn rest(&mut self) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut rest = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(_) => break,
            }
        }
        rest
    }
}

/// `git ARGS` in `cwd`, which must succeed: a test's own repository, with
/// no user configuration needed (an author, `main` as the first branch).
pub fn git(cwd: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "init.defaultBranch=main"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
