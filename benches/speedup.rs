//! `cargo bench --bench speedup`: the seed's promise, measured. A fan-out
//! workflow of independent tasks is run by 1, 3 and 5 simulated chats.
//!
//! A simulated chat is turn-based as a real one is: each turn it runs one
//! command that mcc printed (`mcc worker next`, then the `when done:` line),
//! "thinks" for a few seconds (the work: writing the task's output file),
//! and never holds a connection between turns. It stops on exit code 4
//! ("all work is done"); on 3 (nothing yet, or the hub is down for now) it
//! runs `next` again, after a second when the hub is down, as a chat told
//! "run the same command again in a minute" would. Nobody answers anything:
//! the engineer is absent.
//!
//! Printed per worker count: the wall time of `mcc run` from start to
//! summary, the speedup against the 1-chat wall time, and `mcc report`'s
//! parallel speedup, automation rate and engineer prompts per task.
//! Numbers are printed, never asserted; docs/benchmarks.md keeps them.
//!
//! `MCC_BENCH_TASKS` (default 15), `MCC_BENCH_THINK` (seconds per task,
//! default 2) and `MCC_BENCH_CHATS` (default `1,3,5`) change the shape.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The chat: only runs what mcc prints. `$1` its name, `$2` seconds per task.
const CHAT: &str = r#"#!/bin/sh
name=$1; think=$2
out=$(mcc worker next --as "$name" 2>&1); code=$?
while :; do
  case $code in
    0)
      write=$(printf '%s\n' "$out" | sed -n 's/^write: \([^ ,]*\).*/\1/p' | head -n 1)
      done_cmd=$(printf '%s\n' "$out" | sed -n 's/^when done: //p' | head -n 1)
      sleep "$think"
      mkdir -p "$(dirname "$write")"
      echo "Written by $name. $(printf '%s\n' "$out" | head -n 1)" > "$write"
      out=$(sh -c "$done_cmd" 2>&1); code=$?
      ;;
    3)
      case $out in *"the hub is down"*) sleep 1 ;; esac
      out=$(mcc worker next --as "$name" 2>&1); code=$?
      ;;
    4) exit 0 ;;
    *) printf '%s\n' "$out" >&2; exit 1 ;;
  esac
done
"#;

fn workflow(tasks: usize) -> String {
    format!(
        r#"return workflow {{
  name = "fan-out",
  phases = {{ phase "write" {{
    split = function(ctx)
      local tasks = {{}}
      for i = 1, {tasks} do
        local out = ("notes/%02d.md"):format(i)
        tasks[#tasks + 1] = task {{ id = ("note-%02d"):format(i), description = "Write note " .. i, write = out }}
      end
      return tasks
    end,
    accept = function(t, report, ctx)
      if ctx.word_count(t.write[1]) < 3 then return false, t.write[1] .. " is too short" end
      return true
    end,
  }} }},
}}
"#
    )
}

fn binary() -> PathBuf {
    let status = Command::new("cargo").args(["build", "--release", "--quiet"]).status().expect("cargo build");
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    target.join("release/mcc")
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Measured {
    workers: usize,
    wall: Duration,
    report: Value,
}

/// Whether `.mcc/hub.json` under `root` was written by process `pid`.
fn hub_of(root: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(root.join(".mcc/hub.json")) else { return false };
    serde_json::from_str::<Value>(&text).is_ok_and(|file| file["pid"].as_u64() == Some(u64::from(pid)))
}

fn measure(bin: &Path, root: &Path, workers: usize, think: f64) -> Measured {
    let path = format!("{}:{}", bin.parent().expect("a folder").display(), std::env::var("PATH").unwrap_or_default());
    let started = Instant::now();
    let mut run = Command::new(bin)
        .args(["run", "workflows/fan-out.lua", "--port", "0", "--fresh", "--quiet"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("mcc run");
    // The chats join once this run's hub is up: `.mcc/hub.json` names its
    // process. (`mcc status` would answer from the previous run's store
    // before the new hub is up.) A chat that finds no hub is told to try
    // again (exit 3), so this wait is for a fair clock, not for correctness.
    while !hub_of(root, run.id()) {
        assert!(started.elapsed() < Duration::from_secs(30), "the hub of this run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let chats: Vec<Child> = (1..=workers)
        .map(|k| {
            Command::new("sh")
                .args(["chat.sh", &format!("chat-{k}"), &think.to_string()])
                .current_dir(root)
                .env("PATH", &path)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("a chat")
        })
        .collect();
    let status = run.wait().expect("mcc run ends");
    let wall = started.elapsed();
    assert!(status.success(), "mcc run with {workers} chats failed");
    for mut chat in chats {
        assert!(chat.wait().expect("chat ends").success(), "a chat failed");
    }
    let out = Command::new(bin).args(["report", "--json"]).current_dir(root).output().expect("mcc report");
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    Measured { workers, wall, report }
}

/// `MCC_BENCH_CHATS` (such as `3`, or `1,3,5`, the default): the chat counts run.
fn chat_counts() -> Vec<usize> {
    std::env::var("MCC_BENCH_CHATS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect::<Vec<usize>>())
        .filter(|counts| !counts.is_empty())
        .unwrap_or_else(|| vec![1, 3, 5])
}

fn main() {
    let tasks = env_number("MCC_BENCH_TASKS", 15.0) as usize;
    let think = env_number("MCC_BENCH_THINK", 2.0);
    let bin = binary();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    std::fs::write(dir.path().join("workflows/fan-out.lua"), workflow(tasks)).unwrap();
    std::fs::write(dir.path().join("chat.sh"), CHAT).unwrap();
    println!("fan-out: {tasks} independent tasks, {think}s of thinking per task, turn-based chats");
    println!("workers   wall     vs 1 chat   report speedup   automation   prompts/task   attempts/task");
    let mut one: Option<Duration> = None;
    for workers in chat_counts() {
        let m = measure(&bin, dir.path(), workers, think);
        let base = *one.get_or_insert(m.wall);
        let f = |key: &str| m.report[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>7}   {:>5.1}s   {:>8.2}x   {:>13.2}x   {:>9.0}%   {:>12.2}   {:>13.2}",
            m.workers,
            m.wall.as_secs_f64(),
            base.as_secs_f64() / m.wall.as_secs_f64(),
            f("parallelSpeedup"),
            f("automationRate") * 100.0,
            f("promptsPerTask"),
            f("attemptsPerTask"),
        );
    }
}
