//! `cargo bench`: measures the real release binary.
//!
//! - hub throughput: tasks per second through add -> assign -> complete with
//!   1 and 4 workers on persistent connections (mcc `next`/`done`), and with
//!   old-protocol workers (`register`/`task_complete`);
//! - the hub's peak memory (`VmHWM`) after that run;
//! - the wall time of `mcc worker next` and `mcc worker done` as whole
//!   processes on a warm hub (median and p99).
//!
//! Numbers are printed, never asserted: these machines are shared and noisy.
//! Results are written down in docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use tungstenite::Message;

mod support;
use support::{Hub, ask, binary, connect, connect_with_token, percentile, recv};

fn task(id: &str) -> Value {
    json!({"id": id, "type": "bench", "description": "nothing", "context": {"targetFiles": [], "outputFiles": [], "requirements": []}, "acceptance": {"criteria": []}})
}

fn add_tasks(url: &str, root: &Path, n: usize, prefix: &str) {
    // Adding tasks needs the project's token (docs/security.md).
    let token = std::fs::read_to_string(root.join(".mcc/token")).expect("the hub wrote its token");
    let mut ws = connect_with_token(url, Some(token.trim()));
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let tasks: Vec<Value> = chunk.iter().map(|i| task(&format!("{prefix}{i}"))).collect();
        let reply = ask(&mut ws, &json!({"type": "add_tasks", "tasks": tasks}));
        assert_eq!(reply["type"], "tasks_added", "{reply}");
    }
}

fn mcc_worker(url: &str, name: String) -> usize {
    let mut ws = connect(url);
    let mut done = 0;
    let mut answer = ask(&mut ws, &json!({"type": "next", "worker": name, "waitMs": 0}));
    loop {
        let offer = if answer["type"] == "verdict" { answer["next"].clone() } else { answer["offer"].clone() };
        if offer["type"] != "task" {
            return done;
        }
        let id = offer["task"]["id"].clone();
        answer = ask(
            &mut ws,
            &json!({"type": "done", "worker": name, "taskId": id, "attempt": offer["attempt"], "waitMs": 0}),
        );
        done += 1;
    }
}

fn old_worker(url: &str, name: String) -> usize {
    let mut ws = connect(url);
    let mut done = 0;
    ws.send(Message::text(json!({"type": "register", "role": "worker", "workerId": name}).to_string())).unwrap();
    recv(&mut ws).expect("registered");
    loop {
        let msg = recv(&mut ws).expect("the hub answers");
        match msg["type"].as_str() {
            Some("task_assigned") => {
                let id = msg["task"]["id"].clone();
                ws.send(Message::text(json!({"type": "task_complete", "taskId": id}).to_string())).unwrap();
                done += 1;
            }
            Some("no_tasks") => return done,
            _ => {}
        }
    }
}

fn throughput(bin: &Path, workers: usize, n: usize, old: bool) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(bin, dir.path());
    add_tasks(&hub.url, dir.path(), n, "t");
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|k| {
            let url = hub.url.clone();
            std::thread::spawn(
                move || if old { old_worker(&url, format!("w{k}")) } else { mcc_worker(&url, format!("w{k}")) },
            )
        })
        .collect();
    let done: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done, n);
    (n as f64 / secs, (hub.memory_mib().1 * 1024.0) as u64)
}

fn worker_commands(bin: &Path, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(bin, dir.path());
    add_tasks(&hub.url, dir.path(), rounds + 1, "c");
    let run = |args: &[&str]| {
        let start = Instant::now();
        let out = Command::new(bin).args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        start.elapsed()
    };
    let (mut next, mut done) = (Vec::new(), Vec::new());
    run(&["worker", "next", "--as", "b"]);
    for i in 0..rounds {
        next.push(run(&["worker", "next", "--as", "b"]));
        done.push(run(&["worker", "done", &format!("c{i}"), "--as", "b", "--wait", "0s"]));
    }
    next.sort();
    done.sort();
    for (name, times) in [("worker next (task ready)", &next), ("worker done (+ next task)", &done)] {
        println!(
            "{name:<28} median {:>6.2} ms   p99 {:>6.2} ms   ({rounds} runs)",
            percentile(times, 0.5).as_secs_f64() * 1e3,
            percentile(times, 0.99).as_secs_f64() * 1e3
        );
    }
    println!("hub peak RSS after {rounds} command pairs: {} KiB", (hub.memory_mib().1 * 1024.0) as u64);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = binary();
    let n = 10_000;
    for (workers, old) in [(1, false), (4, false), (1, true), (4, true)] {
        let (rate, rss) = throughput(&bin, workers, n, old);
        let kind = if old { "old-protocol" } else { "mcc next/done" };
        println!(
            "{n} tasks, {workers} {kind} worker(s): {rate:>8.0} tasks/s   hub peak RSS {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    worker_commands(&bin, 200);
}
