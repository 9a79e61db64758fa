//! `cargo bench --bench remote`: what a turn of a remote worker costs over
//! a real link. A hub serves TLS (self-signed); a `git clone` of its project
//! joins it with `mcc join`, and one worker drains the tasks, each turn a
//! fresh `mcc worker next` and its `mcc worker done` process, as a chat
//! runs them. Measured three ways:
//!
//! - loopback: the clone on the hub's machine, `wss://127.0.0.1`;
//! - veth: the worker in a network namespace of its own, reaching the hub
//!   over a veth pair (`wss://10.x.y.1`), no delay;
//! - veth + 50 ms: the same with `tc netem` delaying the hub's side by
//!   50 ms, a round trip of 50 ms (where the kernel has no netem, a relay
//!   on the host holds each chunk 25 ms each way, marked `*`).
//!
//! Printed per way: the median and the 90th percentile of `next` and `done`.
//! A fresh process pays the TCP connect (1 RTT), the TLS 1.3 handshake
//! (1 RTT), the WebSocket upgrade (1 RTT, the hub's greeting rides with its
//! answer) and the request (1 RTT): about 4 RTT plus the hub's own time.
//! Numbers are printed, never asserted. Needs root for the namespace; says
//! so and measures loopback alone otherwise. `MCC_BENCH_TASKS` (default 20)
//! sets the turns.

#[path = "../tests/support/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::Netns;

const MCC: &str = env!("CARGO_BIN_EXE_mcc");

fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run a command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn git(cwd: &Path, args: &[&str]) {
    let mut cmd = Command::new("git");
    cmd.args(["-c", "user.email=b@example.org", "-c", "user.name=b"]).args(args).current_dir(cwd);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 0, "git {args:?}: {err}");
}

/// A running hub, stopped when dropped.
struct Hub {
    child: Child,
    url: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A project under git with `tasks` tasks, its hub started with `extra`.
fn project(dir: &Path, tasks: usize, extra: &[&str]) -> (PathBuf, Hub) {
    let root = dir.join("project");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("README.md"), "bench\n").unwrap();
    git(&root, &["init", "-q"]);
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "start"]);
    let mut child = Command::new(MCC)
        .args(["hub", "--port", "0", "--tls-self-signed", "--dir"])
        .arg(&root)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcc hub");
    let stderr = child.stderr.take().unwrap();
    let mut url = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    let hub = Hub { child, url: url.expect("the hub says where it listens") };
    let list: Vec<serde_json::Value> =
        (1..=tasks).map(|i| serde_json::json!({"id": format!("t{i:03}"), "description": "bench"})).collect();
    std::fs::write(root.join("tasks.json"), serde_json::to_string(&list).unwrap()).unwrap();
    let mut add = Command::new(MCC);
    add.args(["tasks", "add", "tasks.json"]).current_dir(&root);
    let (code, _, err) = run(add);
    assert_eq!(code, 0, "mcc tasks add: {err}");
    (root, hub)
}

/// Join the hub from a clone and drain it; the wall time of each `next` and `done`.
fn drain(dir: &Path, root: &Path, hub: &Hub, namespace: Option<&Netns>) -> (Vec<Duration>, Vec<Duration>) {
    git(dir, &["clone", "-q", &root.display().to_string(), "clone"]);
    let clone = dir.join("clone");
    let mcc = |args: &[&str]| {
        let mut cmd = match namespace {
            Some(ns) => ns.command(MCC),
            None => Command::new(MCC),
        };
        cmd.args(args).current_dir(&clone);
        cmd
    };
    let hub_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(".mcc/hub.json")).unwrap()).unwrap();
    let pin = hub_file["tlsFingerprint"].as_str().unwrap().to_owned();
    let token = std::fs::read_to_string(root.join(".mcc/token")).unwrap();
    let (code, _, err) = run(mcc(&["join", &hub.url, "--token", token.trim(), "--fingerprint", &pin]));
    assert_eq!(code, 0, "mcc join: {err}");
    let (mut next, mut done) = (Vec::new(), Vec::new());
    loop {
        let started = Instant::now();
        let (code, out, err) = run(mcc(&["worker", "next", "--as", "far"]));
        next.push(started.elapsed());
        if code == 4 {
            next.pop();
            break;
        }
        assert_eq!(code, 0, "mcc worker next: {err}");
        let line = out.lines().find_map(|l| l.strip_prefix("when done: mcc ")).expect("a when-done line");
        let args = shlex::split(line).unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (code, _, err) = run(mcc(&args));
        done.push(started.elapsed());
        assert!(matches!(code, 0 | 4), "mcc worker done: {err}");
    }
    (next, done)
}

fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(way: &str, (next, done): &(Vec<Duration>, Vec<Duration>)) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{way:<16} {:>4} turns   next: median {:>6.1} ms  p90 {:>6.1} ms   done: median {:>6.1} ms  p90 {:>6.1} ms",
        next.len(),
        ms(percentile(next, 0.5)),
        ms(percentile(next, 0.9)),
        ms(percentile(done, 0.5)),
        ms(percentile(done, 0.9)),
    );
}

fn main() {
    let tasks: usize = std::env::var("MCC_BENCH_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    println!("remote worker turns over TLS, each a fresh mcc process ({tasks} tasks each way)");
    let dir = tempfile::tempdir().unwrap();
    let (root, hub) = project(dir.path(), tasks, &[]);
    report("loopback", &drain(dir.path(), &root, &hub, None));
    drop(hub);

    let namespace = match Netns::create("bn") {
        Ok(namespace) => namespace,
        Err(why) => {
            println!("veth: skipped ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (root, hub) = project(dir.path(), tasks, &["--bind", &namespace.host_ip]);
    report("veth", &drain(dir.path(), &root, &hub, Some(&namespace)));
    drop(hub);

    let dir = tempfile::tempdir().unwrap();
    let (root, mut hub) = project(dir.path(), tasks, &["--bind", &namespace.host_ip]);
    let way = match namespace.delay_host_side(50) {
        Ok(()) => "veth + 50 ms",
        Err(why) => {
            // No netem in this kernel: a relay on the host side holds each chunk 25 ms each way.
            println!("(tc netem unavailable: {why}; a userspace relay adds the 50 ms round trip instead)");
            hub.url = delayed(&hub.url, &namespace.host_ip, Duration::from_millis(25));
            "veth + 50 ms*"
        }
    };
    report(way, &drain(dir.path(), &root, &hub, Some(&namespace)));
}

/// A relay in front of the hub at `url` that holds every chunk `each_way`
/// in both directions (order kept); returns the relay's address.
fn delayed(url: &str, host_ip: &str, each_way: Duration) -> String {
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the hub's address");
    let listener = std::net::TcpListener::bind((host_ip, 0)).expect("bind the relay");
    let relay = listener.local_addr().unwrap().port();
    let host_ip = host_ip.to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(hub) = std::net::TcpStream::connect((host_ip.as_str(), port)) else { continue };
            let _ = (client.set_nodelay(true), hub.set_nodelay(true));
            hold(client.try_clone().unwrap(), hub.try_clone().unwrap(), each_way);
            hold(hub, client, each_way);
        }
    });
    format!("wss://{}:{relay}", url.trim_start_matches("wss://").rsplit_once(':').map_or("", |(h, _)| h))
}

/// Copy `from` to `to`, each chunk written `delay` after it was read.
fn hold(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || tx.send((Instant::now() + delay, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
