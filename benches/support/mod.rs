//! What the benches share: the release binary, a hub on a free port, and
//! blocking WebSocket calls to it.

// Each bench uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub mod drain;
pub mod wire;

pub type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// The binary measured: `MCC_SCALE_BIN`, or this tree's release build.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MCC_SCALE_BIN") {
        return PathBuf::from(bin);
    }
    let status = Command::new("cargo").args(["build", "--release", "--quiet"]).status().expect("cargo build");
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    target.join("release/mcc")
}

/// `mcc hub` on a free loopback port, killed when dropped.
pub struct Hub {
    child: Child,
    pub url: String,
    token: String,
    /// Spawn -> "listening on" printed.
    pub listening_after: Duration,
}

impl Hub {
    pub fn start(bin: &Path, root: &Path) -> Self {
        Self::start_with(bin, root, &[])
    }

    /// The same with more arguments (`--store URL --project NAME`).
    pub fn start_with(bin: &Path, root: &Path, more: &[&str]) -> Self {
        Self::start_watching(bin, root, more, |_| {})
    }

    /// The same, showing `watch` each line the hub prints before it listens
    /// (a standby says it waits for the lease).
    pub fn start_watching(bin: &Path, root: &Path, more: &[&str], mut watch: impl FnMut(&str)) -> Self {
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(["hub", "--port", "0", "--dir"])
            .arg(root)
            .args(more)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the hub");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("hub output").expect("line");
            watch(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        let listening_after = start.elapsed();
        std::thread::spawn(move || lines.for_each(drop));
        // Loading tasks needs the project's token: `Hub::connect` sends it.
        let token = std::fs::read_to_string(root.join(".mcc").join("token")).unwrap_or_default().trim().to_owned();
        Self { child, url, token, listening_after }
    }

    /// A connection that presents the project's token (in its header: an
    /// address that carries it is refused).
    pub fn connect(&self) -> Socket {
        connect_with_token(&self.url, Some(&self.token))
    }

    /// The hub's process id (its CPU time is in `/proc/PID/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU time (user + system) the hub's threads have used so far, by
    /// thread name (`mcc-engine`, `mcc-store`, `tokio-rt-worker` ...).
    pub fn cpu_by_thread(&self) -> std::collections::BTreeMap<String, Duration> {
        cpu_by_thread(self.child.id())
    }

    /// CPU seconds (user + system) the hub's `mcc-engine` thread used so far.
    pub fn engine_cpu(&self) -> f64 {
        let by_thread = self.cpu_by_thread();
        let engine = by_thread.get("mcc-engine").unwrap_or_else(|| panic!("no mcc-engine thread in the hub process"));
        engine.as_secs_f64()
    }

    /// (`VmRSS`, `VmHWM`) in MiB.
    pub fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A connection without the token: enough to work tasks on loopback.
pub fn connect(url: &str) -> Socket {
    connect_with_token(url, None)
}

pub fn connect_with_token(url: &str, token: Option<&str>) -> Socket {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a ws:// address");
    if let Some(token) = token {
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().expect("a header value"));
    }
    let (mut ws, _) = tungstenite::connect(request).expect("connect");
    recv(&mut ws).expect("the hub greets");
    ws
}

pub fn recv(ws: &mut Socket) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON from the hub")),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

pub fn send(ws: &mut Socket, v: &Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

pub fn ask(ws: &mut Socket, v: &Value) -> Value {
    send(ws, v);
    recv(ws).expect("the hub answers")
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU time (user + system) each thread of process `pid` has used so far,
/// summed by thread name, from `/proc/PID/task/*/stat`.
pub fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    // Clock ticks: 100 per second on Linux.
    const TICK: Duration = Duration::from_millis(10);
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for thread in threads.flatten() {
        let Ok(stat) = std::fs::read_to_string(thread.path().join("stat")) else { continue };
        // `pid (name) state ...`: the name may hold spaces, the fields after it do not.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks: u32 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u32>().ok()).sum());
        *by_name.entry(name).or_default() += TICK * ticks;
    }
    by_name
}
