//! `cargo bench --bench original`: the original project's own load (issue
//! 25), on mcc and, when given, on the original server, side by side.
//!
//! - `old4`: a coordinator adds `MCC_ORIGINAL_TASKS` (20,000) tasks in
//!   `create_tasks` messages of 500 (the next once `tasks_created` for the
//!   one before is read) and counts `task_complete` notifications; 4
//!   old-protocol workers complete each `task_assigned` at once. Tasks/s is
//!   from the first add to the last notification; a handoff is a
//!   `task_complete` sent -> the worker's next `task_assigned`.
//! - `mcc4`, `mcc1`: the same number of tasks (a quarter for one worker)
//!   added with `add_tasks`, then drained by mcc workers with `next`/`done`.
//!
//! Each round runs every configuration once, in turn, each on a fresh hub:
//! the figures are medians over `MCC_ORIGINAL_ROUNDS` (3) rounds. Beside
//! them: the median `fdatasync` of a 4 KiB write in the store's folder (the
//! disk bound of N synchronous workers is N / that), and the hub's CPU per
//! task (user + system from `/proc/PID/stat` of the hub process), which
//! stays comparable on a shared machine where tasks/s does not. And the
//! store's floor: `MCC_ORIGINAL_FLOOR` (2,000) commits through a fresh
//! `SQLite` store in this process, with no hub, socket or thread around
//! them, each holding one handoff (done, accept and the next grant, as the
//! hub writes them) of each of 1 or 4 workers: N synchronous workers on any
//! hub of this store go at most N / that commit's median.
//!
//! `MCC_ORIGINAL=path/to/index.js` runs the original server too (`node` or
//! `MCC_NODE`; docs/benchmarks.md says how to build it), with the ratio.
//! `MCC_ORIGINAL_ONLY=old4,mcc1` picks configurations; `MCC_SCALE_BIN` measures
//! another mcc binary. Nothing is asserted: the figures are printed.

use std::fs::File;
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::drain::{add_tasks, cpu_per_task, drain, ms};
use support::{Hub, Socket, binary, connect_with_token, cpu_by_thread, percentile, recv, send, wire};

/// Tasks per `create_tasks` message, as in the original's load.
const PER_MESSAGE: usize = 500;
/// `fdatasync` samples per round.
const SYNCS: usize = 200;
/// Commits through the store alone per round and worker count (`MCC_ORIGINAL_FLOOR`).
const FLOOR: usize = 2_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn wanted(config: &str) -> bool {
    std::env::var("MCC_ORIGINAL_ONLY").map_or(true, |only| only.split(',').any(|c| c.trim() == config))
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Duration {
    // Clock ticks: 100 per second on Linux.
    const TICK: Duration = Duration::from_millis(10);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (name) state ...`: the name may hold spaces, the fields after it do not.
    let fields: Vec<&str> = stat.rfind(')').map_or(Vec::new(), |close| stat[close + 2..].split_whitespace().collect());
    let ticks: u32 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u32>().ok()).sum());
    TICK * ticks
}

/// Median time of an `fdatasync` after a 4 KiB write, in `dir`.
fn fdatasync_median(dir: &Path) -> Duration {
    let path = dir.join("fdatasync-probe");
    let file = File::options().create(true).truncate(true).read(true).write(true).open(&path).expect("probe file");
    // Written once first: the samples rewrite blocks in place, as a reused WAL does.
    let block = vec![7u8; 4096];
    for i in 0..64u64 {
        file.write_all_at(&block, i * 4096).expect("write the probe");
    }
    file.sync_all().expect("sync the probe");
    let mut times: Vec<Duration> = (0..SYNCS as u64)
        .map(|i| {
            file.write_all_at(&block, (i % 64) * 4096).expect("write the probe");
            let start = Instant::now();
            file.sync_data().expect("fdatasync");
            start.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort();
    percentile(&times, 0.5)
}

/// What one run of a configuration measured.
struct Run {
    tasks_per_s: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_task_us: f64,
    /// The hub's CPU per task by thread ("mcc-engine 30, mcc-store 45 ...").
    threads: String,
}

/// A server under test: where to connect, with what token, its process.
struct Server<'a> {
    url: &'a str,
    token: Option<&'a str>,
    pid: u32,
}

/// An old-protocol worker: completes each task it is pushed at once, until
/// the server goes away; returns its handoffs.
fn old_worker(url: &str, name: &str) -> Vec<Duration> {
    let mut ws = connect_with_token(url, None);
    send(&mut ws, &wire::register_worker(name));
    let mut handoffs = Vec::new();
    let mut sent: Option<Instant> = None;
    while let Some(msg) = recv(&mut ws) {
        match msg["type"].as_str() {
            Some("task_assigned") => {
                if let Some(start) = sent {
                    handoffs.push(start.elapsed());
                }
                let Some(id) = msg["task"]["id"].as_str() else { continue };
                send(&mut ws, &wire::task_complete(id));
                sent = Some(Instant::now());
            }
            // Waiting for work to be added is no handoff.
            Some("no_tasks") => sent = None,
            _ => {}
        }
    }
    handoffs
}

/// The original's load on `server`; `stop` ends the server (and so the workers).
fn old_protocol(server: &Server, n: usize, workers: usize, stop: impl FnOnce()) -> Run {
    let tasks: Vec<Value> = (0..n).map(|i| wire::task(&format!("task-{i:05}"), &[], &[])).collect();
    let mut coord: Socket = connect_with_token(server.url, server.token);
    send(&mut coord, &json!({"type": "register", "role": "coordinator", "projectId": "bench"}));
    until(&mut coord, |m| m["type"] == "registered");
    let handles: Vec<JoinHandle<Vec<Duration>>> = (0..workers)
        .map(|k| {
            let url = server.url.to_owned();
            std::thread::spawn(move || old_worker(&url, &format!("worker-{k}")))
        })
        .collect();
    let mut registered = 0;
    until(&mut coord, |m| {
        registered += usize::from(m["type"] == "worker_registered");
        registered == workers
    });
    let cpu_before = process_cpu(server.pid);
    let threads_before = cpu_by_thread(server.pid);
    let start = Instant::now();
    let mut batches = tasks.chunks(PER_MESSAGE);
    let create = |coord: &mut Socket, batch: &[Value]| send(coord, &json!({"type": "create_tasks", "tasks": batch}));
    create(&mut coord, batches.next().expect("at least one task"));
    let mut completed = 0;
    while completed < n {
        let msg = recv(&mut coord).expect("the server closed the coordinator's connection during the run");
        match msg["type"].as_str() {
            Some("tasks_created") => {
                if let Some(batch) = batches.next() {
                    create(&mut coord, batch);
                }
            }
            Some("task_complete") => completed += 1,
            Some("error") => panic!("the server refused: {msg}"),
            _ => {}
        }
    }
    let took = start.elapsed();
    let cpu = process_cpu(server.pid).saturating_sub(cpu_before);
    let threads = cpu_per_task(&threads_before, &cpu_by_thread(server.pid), n);
    drop(coord);
    stop();
    let mut handoffs: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().expect("a bench worker")).collect();
    handoffs.sort();
    Run {
        tasks_per_s: n as f64 / took.as_secs_f64(),
        p50: percentile(&handoffs, 0.5),
        p99: percentile(&handoffs, 0.99),
        cpu_per_task_us: cpu.as_secs_f64() * 1e6 / n as f64,
        threads,
    }
}

/// Read until `done` says so; panics if the connection ends first.
fn until(ws: &mut Socket, mut done: impl FnMut(&Value) -> bool) {
    loop {
        let msg = recv(ws).expect("the server closed the connection during the run");
        if done(&msg) {
            return;
        }
    }
}

/// mcc's own verbs: `n` tasks added, then drained by `workers` mcc workers.
fn mcc_verbs(bin: &Path, n: usize, workers: usize) -> Run {
    let dir = tempfile::tempdir().expect("a temporary project");
    let hub = Hub::start(bin, dir.path());
    let tasks: Vec<Value> = (0..n).map(|i| wire::task(&format!("t{i}"), &[], &[])).collect();
    add_tasks(&mut hub.connect(), &tasks);
    let cpu_before = process_cpu(hub.pid());
    let drained = drain(&hub, workers);
    let cpu = process_cpu(hub.pid()).saturating_sub(cpu_before);
    let mut handoffs = drained.handoffs;
    handoffs.sort();
    Run {
        tasks_per_s: drained.tasks_per_s,
        p50: percentile(&handoffs, 0.5),
        p99: percentile(&handoffs, 0.99),
        cpu_per_task_us: cpu.as_secs_f64() * 1e6 / drained.tasks as f64,
        threads: drained.cpu,
    }
}

fn mcc_old(bin: &Path, n: usize, workers: usize) -> (Run, Duration) {
    let dir = tempfile::tempdir().expect("a temporary project");
    let mut hub = Hub::start(bin, dir.path());
    // The disk bound of this round, measured where the store is, before the load.
    let sync = fdatasync_median(&dir.path().join(".mcc"));
    let token = std::fs::read_to_string(dir.path().join(".mcc/token")).unwrap_or_default().trim().to_owned();
    let server = Server { url: &hub.url.clone(), token: Some(&token), pid: hub.pid() };
    let run = old_protocol(&server, n, workers, || hub.kill());
    (run, sync)
}

/// "1 handoff", "4 handoffs".
fn handoffs(n: usize) -> String {
    if n == 1 { "1 handoff".to_owned() } else { format!("{n} handoffs") }
}

/// `workers` handoffs a commit through a fresh `SQLite` store with no hub
/// around it: the floor a hub's rate with that many workers sits on.
fn store_floor(commits: usize, workers: usize) -> mcc::StoreFloor {
    let dir = tempfile::tempdir().expect("a temporary project");
    let state = dir.path().join(".mcc");
    std::fs::create_dir_all(&state).expect("a state folder");
    mcc::store_commit_floor(&state, commits, workers).unwrap_or_else(|e| panic!("the store's floor: {e}"))
}

/// The original server: `node SCRIPT` on a free port, in a folder of its own.
struct Original {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Original {
    fn start(script: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = tempfile::tempdir().expect("a folder for the original");
        let node = std::env::var_os("MCC_NODE").unwrap_or_else(|| "node".into());
        // Its per-task log lines go nowhere, as they would to a terminal nobody reads.
        let child = Command::new(node)
            .arg(script)
            .env("COORDINATION_PORT", port.to_string())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the original server with node");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the original server did not listen on {port} within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, url: format!("ws://127.0.0.1:{port}"), _dir: dir }
    }
}

fn original_old(script: &Path, n: usize, workers: usize) -> Run {
    let mut original = Original::start(script);
    let server = Server { url: &original.url.clone(), token: None, pid: original.child.id() };
    old_protocol(&server, n, workers, || {
        let _ = original.child.kill();
        let _ = original.child.wait();
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// "12,345 tasks/s, handoff p50 0.30 ms / p99 1.20 ms, hub CPU 55 µs per task", medians of the runs.
fn summary(runs: &[Run]) -> (f64, f64, String) {
    let rate = median(runs.iter().map(|r| r.tasks_per_s).collect());
    let p99 = median(runs.iter().map(|r| ms(r.p99)).collect());
    let line = format!(
        "{rate:.0} tasks/s, handoff p50 {:.2} ms / p99 {p99:.2} ms, hub CPU {:.0} µs per task ({} rounds: {})",
        median(runs.iter().map(|r| ms(r.p50)).collect()),
        median(runs.iter().map(|r| r.cpu_per_task_us).collect()),
        runs.len(),
        runs.iter().map(|r| format!("{:.0}", r.tasks_per_s)).collect::<Vec<_>>().join(", "),
    );
    (rate, p99, line)
}

fn print_run(what: &str, run: &Run) {
    println!(
        "  {what:<34} {:>7.0} tasks/s  handoff p50 {:.2} ms  p99 {:.2} ms  hub CPU {:.0} µs/task; by thread {}",
        run.tasks_per_s,
        ms(run.p50),
        ms(run.p99),
        run.cpu_per_task_us,
        run.threads
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_usize("MCC_ORIGINAL_TASKS", 20_000);
    let rounds = env_usize("MCC_ORIGINAL_ROUNDS", 3);
    let original: Option<PathBuf> = std::env::var_os("MCC_ORIGINAL").map(PathBuf::from);
    let bin = binary();
    println!(
        "original's load: {n} tasks, {rounds} rounds; mcc {}; original {}",
        bin.display(),
        original.as_ref().map_or_else(|| "not given (MCC_ORIGINAL)".to_owned(), |p| p.display().to_string())
    );
    let (mut mcc4_old, mut orig4_old, mut mcc4, mut mcc1, mut syncs) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut floors1, mut floors4) = (vec![], vec![]);
    for round in 1..=rounds {
        println!("round {round}");
        let commits = env_usize("MCC_ORIGINAL_FLOOR", FLOOR);
        for (workers, floors) in [(1, &mut floors1), (4, &mut floors4)] {
            let floor = store_floor(commits, workers);
            println!(
                "  the store alone, {} a commit: median {:.3} ms, {:.0} µs of CPU",
                handoffs(workers),
                ms(floor.median()),
                floor.cpu_per_commit().as_secs_f64() * 1e6
            );
            floors.push(floor);
        }
        if wanted("old4") {
            let (run, sync) = mcc_old(&bin, n, 4);
            println!("  fdatasync of 4 KiB in the store's folder: median {:.3} ms", ms(sync));
            syncs.push(sync);
            print_run("mcc, 4 old-protocol workers", &run);
            mcc4_old.push(run);
            if let Some(script) = &original {
                let run = original_old(script, n, 4);
                print_run("original, 4 old-protocol workers", &run);
                orig4_old.push(run);
            }
        }
        if wanted("mcc4") {
            let run = mcc_verbs(&bin, n, 4);
            print_run("mcc, 4 workers next/done", &run);
            mcc4.push(run);
        }
        if wanted("mcc1") {
            let run = mcc_verbs(&bin, (n / 4).max(1), 1);
            print_run("mcc, 1 worker next/done", &run);
            mcc1.push(run);
        }
    }
    if syncs.is_empty() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        syncs.push(fdatasync_median(dir.path()));
    }
    syncs.sort();
    let sync = percentile(&syncs, 0.5).as_secs_f64();
    println!("\nmedians over {rounds} rounds");
    println!(
        "  fdatasync of 4 KiB: {:.3} ms; disk bound 1 worker {:.0} tasks/s, 4 workers {:.0}",
        sync * 1e3,
        1.0 / sync,
        4.0 / sync
    );
    for (floors, bound) in [(&floors1, 1.0 / sync), (&floors4, 4.0 / sync)] {
        let workers = floors.first().map_or(0, |f| f.workers);
        let commit = median(floors.iter().map(|f| f.median().as_secs_f64()).collect());
        let cpu = median(floors.iter().map(|f| f.cpu_per_commit().as_secs_f64()).collect());
        let rate = median(floors.iter().map(mcc::StoreFloor::tasks_per_s).collect());
        println!(
            "  the store alone, {} a commit: {:.3} ms, {:.0} µs of CPU; at most {rate:.0} tasks/s for {workers} synchronous worker{} ({:.0}% of the disk bound)",
            handoffs(workers),
            commit * 1e3,
            cpu * 1e6,
            if workers == 1 { "" } else { "s" },
            100.0 * rate / bound
        );
    }
    if !mcc4_old.is_empty() {
        let (mcc_rate, mcc_p99, line) = summary(&mcc4_old);
        println!("  old protocol, 4 workers, mcc:      {line}");
        if !orig4_old.is_empty() {
            let (orig_rate, orig_p99, line) = summary(&orig4_old);
            println!("  old protocol, 4 workers, original: {line}");
            println!(
                "  ratio mcc / original: {:.2}x tasks/s; p99 {mcc_p99:.2} ms against {orig_p99:.2} ms",
                mcc_rate / orig_rate
            );
        }
        println!("  old protocol, 4 workers, mcc: {:.0}% of the disk bound", 100.0 * mcc_rate * sync / 4.0);
    }
    if !mcc4.is_empty() {
        let (rate, _, line) = summary(&mcc4);
        println!("  mcc next/done, 4 workers: {line}; {:.0}% of the disk bound", 100.0 * rate * sync / 4.0);
    }
    if !mcc1.is_empty() {
        let (rate, _, line) = summary(&mcc1);
        println!("  mcc next/done, 1 worker: {line}; {:.0}% of 1 / fdatasync", 100.0 * rate * sync);
    }
}
