//! `cargo bench --bench scale`: how the hub's costs grow with the queue
//! (issue 10), measured on the real release binary.
//!
//! Sections (pick some with `MCC_SCALE_ONLY=throughput,queue,same-file,report,workflow`):
//!
//! - `throughput`: 1 and 4 old-protocol and mcc workers on persistent
//!   connections draining `MCC_SCALE_THROUGHPUT_TASKS` (4,000) tasks: tasks/s
//!   and handoff (completion sent -> next task received) p50/p99;
//! - `queue`: `MCC_SCALE_TASKS` (100,000) tasks, all waiting on one held
//!   `gate` task, and `MCC_SCALE_WAITERS` (200) workers with a pending `next`:
//!   loading the tasks with `add_tasks` in pieces under the frame limit,
//!   `mcc worker next`/`done` as whole processes, `mcc status`, hub RSS, and
//!   restarting the hub that holds them (time until it answers);
//! - `same-file`: the same with `MCC_SCALE_SAME_FILE_TASKS` (20,000) ready
//!   tasks that all write one file (one of them held, so every offer walks
//!   the reserved ones) and `MCC_SCALE_SAME_FILE_WAITERS` (30) waiters;
//! - `report`: a report file renamed into `.mcc/reports/` -> the next task
//!   handed to a waiting worker, p50/p99 over `MCC_SCALE_REPORT_ROUNDS` (20);
//! - `workflow`: a Lua workflow whose first phase left
//!   `MCC_SCALE_WORKFLOW_TASKS` (100,000) tasks waiting behind a held gate,
//!   and 4 mcc workers draining its current phase of
//!   `MCC_SCALE_WORKFLOW_WORK` (8,000) tasks, with the default completion
//!   check and with a `complete` that asks `ctx.tasks{phase=, state=}`:
//!   tasks/s, the engine thread's CPU time per task (one clock tick, 10 ms,
//!   over the drain), the load and hub RSS, beside the same drain with no
//!   backlog; `MCC_SCALE_WORKFLOW_ROUNDS` (2) runs of each.
//!
//! `MCC_SCALE_WORKERS=mcc1,old4` runs only those throughput configurations
//! (handy under `perf record`). `MCC_SCALE_QUICK=1` shrinks every size so the run takes under a minute;
//! any size variable above still wins. `MCC_SCALE_BIN=path/to/mcc` measures
//! that binary instead of building this tree's. `MCC_SCALE_ROUNDS` (50) is
//! the number of `next`/`done` command pairs per queue.
//!
//! Numbers are printed, never asserted: these machines are shared and noisy.
//! Every message sent to the hub is built in `wire` below, so a protocol
//! change is one edit there.

use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

mod support;
use support::drain::{TASKS_PER_FRAME, Table, add_tasks, cpu_per_task, mcc_worker, ms, spread};
use support::{Hub, Socket, ask, binary, connect, recv, send, wire};

fn env_usize(name: &str, quick: usize, full: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(if quick_run() { quick } else { full })
}

fn quick_run() -> bool {
    std::env::var("MCC_SCALE_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn section_wanted(name: &str) -> bool {
    std::env::var("MCC_SCALE_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

// ---------------------------------------------------------------- throughput

/// Drain with the old protocol; returns each handoff (complete sent -> assigned).
fn old_worker(url: &str, name: &str) -> Vec<Duration> {
    let mut ws = connect(url);
    let mut handoffs = Vec::new();
    send(&mut ws, &wire::register_worker(name));
    let mut sent: Option<Instant> = None;
    while let Some(msg) = recv(&mut ws) {
        match msg["type"].as_str() {
            Some("task_assigned") => {
                if let Some(start) = sent {
                    handoffs.push(start.elapsed());
                }
                let id = wire::offered(&msg).expect("a task").id;
                sent = Some(Instant::now());
                send(&mut ws, &wire::task_complete(&id));
            }
            Some("no_tasks") => break,
            _ => {}
        }
    }
    handoffs
}

fn throughput(bin: &Path, table: &mut Table) {
    let n = env_usize("MCC_SCALE_THROUGHPUT_TASKS", 1000, 4000);
    println!("throughput: {n} tasks, distinct outputs");
    for (workers, old) in [(1, true), (4, true), (1, false), (4, false)] {
        let config = format!("{}{workers}", if old { "old" } else { "mcc" });
        if std::env::var("MCC_SCALE_WORKERS").is_ok_and(|w| !w.split(',').any(|c| c.trim() == config)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start(bin, dir.path());
        let tasks: Vec<Value> = (0..n).map(|i| wire::task(&format!("t{i}"), &[], &[])).collect();
        add_tasks(&mut hub.connect(), &tasks);
        let cpu_before = hub.cpu_by_thread();
        let start = Instant::now();
        let handles: Vec<JoinHandle<Vec<Duration>>> = (0..workers)
            .map(|k| {
                let url = hub.url.clone();
                std::thread::spawn(move || {
                    let name = format!("w{k}");
                    if old { old_worker(&url, &name) } else { mcc_worker(&url, &name) }
                })
            })
            .collect();
        let handoffs: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let cpu = cpu_per_task(&cpu_before, &hub.cpu_by_thread(), n);
        let kind = if old { "old-protocol" } else { "mcc next/done" };
        table.row(
            format!("{n} tasks, {workers} {kind} worker(s)"),
            format!("{rate:.0} tasks/s; handoff {}; hub CPU per task {cpu}", spread(handoffs)),
        );
    }
}

// ---------------------------------------------------------------- big queues

/// What the queue's bulk is made of.
#[derive(Clone, Copy, PartialEq)]
enum Bulk {
    /// Tasks waiting on one held `gate` task: pending, never offered.
    BehindGate,
    /// Ready tasks that all write `shared.md`, one of them held.
    SameFile,
}

/// A worker that keeps a `next` pending; a task it gets it reports done at
/// once (and counts it), so the lane it took from goes on.
fn waiter(url: String, name: String) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let Ok((mut ws, _)) = tungstenite::connect(url.as_str()) else { return 0 };
        if recv(&mut ws).is_none() {
            return 0;
        }
        let mut taken = 0;
        let mut message = wire::next(&name, 300_000);
        loop {
            if ws.send(Message::text(message.to_string())).is_err() {
                return taken;
            }
            let Some(reply) = recv(&mut ws) else { return taken };
            message = match wire::offered(&reply) {
                Some(task) => {
                    taken += 1;
                    wire::done(&name, &task, 300_000)
                }
                None => wire::next(&name, 300_000),
            };
        }
    })
}

/// Run `mcc ARGS` in `root`; its wall time and its `--json` output.
fn mcc(bin: &Path, root: &Path, args: &[&str]) -> (Duration, Value) {
    let (took, out) = try_mcc(bin, root, args);
    (took, out.unwrap_or_else(|e| panic!("{e}")))
}

/// The same, with a failing command's first line of stderr as the error.
fn try_mcc(bin: &Path, root: &Path, args: &[&str]) -> (Duration, Result<Value, String>) {
    let start = Instant::now();
    let out = Command::new(bin).args(args).current_dir(root).output().expect("run mcc");
    let took = start.elapsed();
    let code = out.status.code().unwrap_or(-1);
    if !matches!(code, 0 | 3) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return (took, Err(format!("mcc {args:?} exited {code}: {}", stderr.lines().next().unwrap_or(""))));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    (took, Ok(stdout.lines().rev().find_map(|l| serde_json::from_str(l.trim()).ok()).unwrap_or(Value::Null)))
}

fn wait_for_waiters(ws: &mut Socket, want: usize) {
    let deadline = Instant::now() + Duration::from_mins(2);
    while wire::waiting(&ask(ws, &wire::snapshot())) < want {
        assert!(Instant::now() < deadline, "{want} waiters did not show up in the snapshot within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn queue(bin: &Path, table: &mut Table, bulk: Bulk) {
    let (label, tasks, waiters) = match bulk {
        Bulk::BehindGate => {
            ("queue", env_usize("MCC_SCALE_TASKS", 5_000, 100_000), env_usize("MCC_SCALE_WAITERS", 50, 200))
        }
        Bulk::SameFile => (
            "same-file",
            env_usize("MCC_SCALE_SAME_FILE_TASKS", 2_000, 20_000),
            env_usize("MCC_SCALE_SAME_FILE_WAITERS", 10, 30),
        ),
    };
    let rounds = env_usize("MCC_SCALE_ROUNDS", 20, 50);
    let status_runs = env_usize("MCC_SCALE_STATUS_RUNS", 3, 5);
    let what = match bulk {
        Bulk::BehindGate => "pending behind a held gate",
        Bulk::SameFile => "ready, all writing shared.md",
    };
    println!("{label}: {tasks} tasks {what}, {waiters} waiting workers");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hub = Hub::start(bin, root);
    let mut ws = hub.connect();

    // The gatekeeper holds the task everything else waits on (or the one
    // whose file every other task writes).
    let gate = match bulk {
        Bulk::BehindGate => wire::task("gate", &["gate.md"], &[]),
        Bulk::SameFile => wire::task("shared0", &["shared.md"], &[]),
    };
    add_tasks(&mut ws, &[gate]);
    let mut gatekeeper = hub.connect();
    assert!(wire::offered(&ask(&mut gatekeeper, &wire::next("gatekeeper", 0))).is_some());

    // The measured worker's lane: tasks that all write lane.md, so while it
    // holds one no waiter can take the next.
    let lane: Vec<Value> = (0..=rounds).map(|i| wire::task(&format!("lane{i}"), &["lane.md"], &[])).collect();
    let bulk_tasks: Vec<Value> = (1..tasks)
        .map(|i| match bulk {
            Bulk::BehindGate => wire::task(&format!("b{i}"), &[], &["gate"]),
            Bulk::SameFile => wire::task(&format!("shared{i}"), &["shared.md"], &[]),
        })
        .collect();
    // The lane goes in before the waiters arrive, or they would take it.
    // Nothing else is grantable, so every offer to a waiter still walks
    // every ready task.
    add_tasks(&mut ws, &lane);
    let mut held = wire::offered(&mcc(bin, root, &["worker", "next", "--as", "m", "--wait", "0s", "--json"]).1);

    let handles: Vec<JoinHandle<usize>> = (0..waiters).map(|k| waiter(hub.url.clone(), format!("wait{k}"))).collect();
    wait_for_waiters(&mut ws, waiters);

    let load = add_tasks(&mut ws, &bulk_tasks);
    table.row(
        format!("{label}: add_tasks {} tasks ({TASKS_PER_FRAME}/frame)", bulk_tasks.len()),
        format!("{:.2} s ({:.0} tasks/s)", load.as_secs_f64(), bulk_tasks.len() as f64 / load.as_secs_f64()),
    );
    let (rss, hwm) = hub.memory_mib();
    table.row(format!("{label}: hub memory after loading"), format!("VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB"));

    let (mut next, mut done, mut probe) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    for _ in 0..rounds {
        let Some(task) = held.take() else {
            lost += 1;
            let (_, out) = mcc(bin, root, &["worker", "next", "--as", "m", "--wait", "5s", "--json"]);
            held = wire::offered(&out);
            continue;
        };
        let (took, _) = mcc(bin, root, &["worker", "next", "--as", "m", "--wait", "0s", "--json"]);
        next.push(took);
        // Nothing grantable for a fresh name: walks the queue and finds nothing.
        let (took, _) = mcc(bin, root, &["worker", "next", "--as", "probe", "--wait", "0s", "--json"]);
        probe.push(took);
        let attempt = task.attempt.to_string();
        let (took, out) =
            mcc(bin, root, &["worker", "done", &task.id, "--as", "m", "--attempt", &attempt, "--wait", "0s", "--json"]);
        done.push(took);
        held = wire::offered(&out);
    }
    table.row(format!("{label}: `mcc worker next` (holds a task)"), spread(next));
    table.row(format!("{label}: `mcc worker next --wait 0s` (nothing to take)"), spread(probe));
    table.row(format!("{label}: `mcc worker done` (+ next lane task)"), spread(done));
    if lost > 0 {
        table.row(format!("{label}: lane task taken by a waiter instead"), format!("{lost} of {rounds} rounds"));
    }
    let mut status = Vec::new();
    for _ in 0..status_runs {
        match try_mcc(bin, root, &["status"]) {
            (took, Ok(_)) => status.push(took),
            (took, Err(e)) => {
                table.row(format!("{label}: `mcc status` FAILED after {:.0} ms", ms(took)), e);
                break;
            }
        }
    }
    if !status.is_empty() {
        table.row(format!("{label}: `mcc status`"), spread(status));
    }
    let (rss, hwm) = hub.memory_mib();
    table.row(format!("{label}: hub memory after the commands"), format!("VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB"));

    if bulk == Bulk::BehindGate {
        drop(ws);
        drop(gatekeeper);
        drop(hub);
        let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        table.row(format!("{label}: tasks the waiters were handed"), taken.to_string());
        let start = Instant::now();
        let hub = Hub::start(bin, root);
        let mut ws = hub.connect();
        let reply = ask(&mut ws, &wire::show_task("b1"));
        let answered = start.elapsed();
        assert_eq!(reply["type"], "task_info", "{reply}");
        let (rss, hwm) = hub.memory_mib();
        table.row(
            format!("{label}: restart with {tasks} tasks (killed hub)"),
            format!(
                "listening after {:.0} ms, first answer after {:.0} ms; VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB",
                ms(hub.listening_after),
                ms(answered)
            ),
        );
    } else {
        drop(hub);
        let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        table.row(format!("{label}: tasks the waiters were handed"), taken.to_string());
    }
}

// ---------------------------------------------------------------- report files

/// A holds a lane task, B waits; A's report file is renamed into place and
/// the clock runs until B is handed the next lane task. Then they swap.
fn report_file(bin: &Path, table: &mut Table) {
    let rounds = env_usize("MCC_SCALE_REPORT_ROUNDS", 6, 20);
    println!("report: {rounds} report files, one waiting worker");
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(bin, dir.path());
    let reports = dir.path().join(".mcc/reports");
    let mut admin = hub.connect();
    let lane: Vec<Value> = (0..=rounds).map(|i| wire::task(&format!("r{i}"), &["r.md"], &[])).collect();
    add_tasks(&mut admin, &lane);
    let mut sockets = [hub.connect(), hub.connect()];
    let names = ["A", "B"];
    let mut held = wire::offered(&ask(&mut sockets[0], &wire::next(names[0], 0))).expect("a task");
    let mut holder = 0;
    let mut times = Vec::new();
    for _ in 0..rounds {
        let waiter = 1 - holder;
        send(&mut sockets[waiter], &wire::next(names[waiter], 60_000));
        wait_for_waiters(&mut admin, 1);
        let body = wire::report_file(&held, names[holder]).to_string();
        let tmp = reports.join(".bench.tmp");
        std::fs::write(&tmp, body).unwrap();
        let start = Instant::now();
        std::fs::rename(&tmp, reports.join(wire::report_file_name(&held.id))).unwrap();
        let reply = recv(&mut sockets[waiter]).expect("an answer");
        times.push(start.elapsed());
        held = wire::offered(&reply).unwrap_or_else(|| panic!("no task after a report file: {reply}"));
        holder = waiter;
    }
    table.row("report file renamed -> next task to a waiting worker", spread(times));
}

// ---------------------------------------------------------------- workflows

/// A workflow whose `backlog` phase leaves `backlog` tasks waiting on a
/// `gate` task (and is complete at once), then a `work` phase of `work`
/// independent tasks. `complete` is the work phase's completion check, or
/// none for the default one.
fn workflow_source(backlog: usize, work: usize, complete: Option<&str>) -> String {
    let complete = complete.map_or_else(String::new, |c| format!("complete = {c},"));
    format!(
        r#"
return {{
  name = "bench-workflow",
  phases = {{
    {{ name = "backlog",
      split = function(ctx)
        local out = {{ {{ id = "gate", description = "held all along" }} }}
        for i = 1, {backlog} do
          out[#out + 1] = {{ id = "b" .. i, description = "backlog", after = {{ "gate" }} }}
        end
        return out
      end,
      complete = function() return true end }},
    {{ name = "work",
      split = function(ctx)
        local out = {{}}
        for i = 1, {work} do out[#out + 1] = {{ id = "w" .. i, description = "work" }} end
        return out
      end,
      {complete} }},
  }},
}}
"#
    )
}

/// What one drain of a workflow's phase measured.
struct Drained {
    tasks_per_s: f64,
    engine_us_per_task: f64,
    /// `load_workflow` sent -> answered: both splits and their tasks committed.
    load: Duration,
    rss_mib: f64,
}

/// Load the workflow, hold the gate, and drain the work phase with 4 mcc
/// workers.
fn workflow_drain(bin: &Path, backlog: usize, work: usize, complete: Option<&str>) -> Drained {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bench.lua"), workflow_source(backlog, work, complete)).unwrap();
    let hub = Hub::start(bin, dir.path());
    let mut ws = hub.connect();
    let start = Instant::now();
    let loaded = ask(&mut ws, &wire::load_workflow("bench.lua"));
    let load = start.elapsed();
    assert_eq!(loaded["type"], "ack", "{loaded}");
    let gate = wire::offered(&ask(&mut ws, &wire::next("holder", 0))).expect("the gate");
    assert_eq!(gate.id, "gate");
    let before = hub.engine_cpu();
    let start = Instant::now();
    let workers: Vec<JoinHandle<usize>> = (0..4)
        .map(|k| {
            let mut ws = hub.connect();
            std::thread::spawn(move || {
                let name = format!("w{k}");
                let mut taken = 0;
                let mut current = wire::offered(&ask(&mut ws, &wire::next(&name, 0)));
                while let Some(task) = current {
                    taken += 1;
                    current = wire::offered(&ask(&mut ws, &wire::done(&name, &task, 0)));
                }
                taken
            })
        })
        .collect();
    let drained: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
    let took = start.elapsed();
    let engine = hub.engine_cpu() - before;
    assert_eq!(drained, work, "the workers drained the work phase");
    Drained {
        tasks_per_s: work as f64 / took.as_secs_f64(),
        engine_us_per_task: engine / work as f64 * 1e6,
        load,
        rss_mib: hub.memory_mib().0,
    }
}

fn workflow(bin: &Path, table: &mut Table) {
    let backlog = env_usize("MCC_SCALE_WORKFLOW_TASKS", 10_000, 100_000);
    let work = env_usize("MCC_SCALE_WORKFLOW_WORK", 1_000, 8_000);
    let rounds = env_usize("MCC_SCALE_WORKFLOW_ROUNDS", 1, 2);
    println!("workflow: {work} tasks in the current phase, 4 mcc workers, 0 or {backlog} tasks in an earlier phase");
    let checks = [
        ("default complete", None),
        (
            "complete asking ctx.tasks{phase=, state=}",
            Some(
                r#"function(phase, ctx) return phase.all_accepted and #ctx.tasks{ phase = ctx.phase, state = "blocked" } == 0 end"#,
            ),
        ),
    ];
    for (label, complete) in checks {
        for queue in [0, backlog] {
            for _ in 0..rounds {
                let d = workflow_drain(bin, queue, work, complete);
                table.row(
                    format!("workflow, {label}: {work} tasks, {queue} in an earlier phase"),
                    format!(
                        "{:.0} tasks/s; engine {:.1} us/task; load {:.0} ms; VmRSS {:.1} MiB",
                        d.tasks_per_s,
                        d.engine_us_per_task,
                        ms(d.load),
                        d.rss_mib
                    ),
                );
            }
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = binary();
    println!("mcc scale bench: {}{}", bin.display(), if quick_run() { " (quick)" } else { "" });
    let mut table = Table::default();
    if section_wanted("throughput") {
        throughput(&bin, &mut table);
    }
    if section_wanted("queue") {
        queue(&bin, &mut table, Bulk::BehindGate);
    }
    if section_wanted("same-file") {
        queue(&bin, &mut table, Bulk::SameFile);
    }
    if section_wanted("report") {
        report_file(&bin, &mut table);
    }
    if section_wanted("workflow") {
        workflow(&bin, &mut table);
    }
    table.print();
}
