//! Fault injection: several workers over both transports (socket and report
//! files), `done`s cut off and sent again, stale reports with every
//! combination of fields, and the hub killed with `kill -9` again and again.
//! At the end the store is checked against what the workers were told: no
//! task lost, none unexpected, no stale report applied, every second grant
//! of a task explained by an expired lease.
//!
//! The short version runs in `cargo test`, on each store engine: `SQLite`,
//! and PostgreSQL, where each restarted hub waits for the killed one's
//! leader lease to expire (`--standby`). The long one:
//!
//! ```text
//! MCC_FAULT_KILLS=300 cargo test --test lib faults::long -- --ignored --nocapture
//! MCC_FAULT_STORE=postgres scripts/test --test lib faults::long -- --ignored --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::support::{Hub, Project, old_task};

/// The store engine a run keeps its state in.
enum Engine {
    Sqlite,
    /// This project in the test database.
    Postgres(String),
}

impl Engine {
    fn postgres() -> Self {
        Self::Postgres(crate::support::postgres::project_name("faults"))
    }

    /// The `mcc hub` arguments that choose it: on PostgreSQL a restarted hub
    /// waits for the killed one's lease (short here) to expire, then serves.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--lease", "2s", "--max-attempts", "1000"].map(str::to_owned).to_vec();
        if let Self::Postgres(project) = self {
            let store = crate::support::postgres::url();
            args.extend(["--store", &store, "--project", project, "--standby"].map(str::to_owned));
            args.extend(["--leader-lease", "1s", "--leader-renew", "250ms"].map(str::to_owned));
        }
        args
    }
}

/// A tiny deterministic generator: the run is random, but repeatable by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the workers were told, and what they tried.
#[derive(Default)]
struct Told {
    /// (task, attempt, worker) of every grant a worker saw.
    grants: BTreeSet<(String, u64, String)>,
    /// (task, attempt, worker) of every "accepted" a worker heard (socket) or saw in the store (file).
    accepted: BTreeSet<(String, u64, String)>,
    /// Stale reports sent or written, all of which must be refused.
    stale_sent: usize,
    /// `done`s cut off and sent again.
    resent: usize,
}

struct Shared {
    url: Mutex<String>,
    told: Mutex<Told>,
    stop: AtomicBool,
    ids: Vec<String>,
    root: std::path::PathBuf,
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connect and read the greeting; `None` while no hub listens.
fn connect(shared: &Shared) -> Option<Socket> {
    let url = shared.url.lock().unwrap().clone();
    let (mut socket, _) = tungstenite::connect(url.as_str()).ok()?;
    if let MaybeTlsStream::Plain(s) = socket.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    }
    let hello = read(&mut socket)?;
    (hello["type"] == "connected").then_some(socket)
}

fn read(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Send one message and read its answer; `None` when the hub went away.
fn ask(shared: &Shared, msg: &Value) -> Option<Value> {
    let mut socket = connect(shared)?;
    socket.send(Message::text(msg.to_string())).ok()?;
    read(&mut socket)
}

/// Ask until some hub answers (it may be restarting), or the run stops.
fn ask_through_restarts(shared: &Shared, msg: &Value) -> Option<Value> {
    let mut pause = Duration::from_millis(5);
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(answer) = ask(shared, msg) {
            return Some(answer);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    None
}

enum Next {
    Task(String, u64),
    Nothing,
    Stop,
}

/// `next` through restarts; a grant is noted as told to `name`.
fn next_grant(shared: &Shared, name: &str) -> Next {
    let Some(answer) = ask_through_restarts(shared, &json!({"type":"next","worker":name,"waitMs":300})) else {
        return Next::Stop;
    };
    let offer = &answer["offer"];
    match offer["type"].as_str() {
        Some("task") => {
            let id = offer["task"]["id"].as_str().unwrap().to_owned();
            let attempt = offer["attempt"].as_u64().unwrap();
            shared.told.lock().unwrap().grants.insert((id.clone(), attempt, name.to_owned()));
            Next::Task(id, attempt)
        }
        Some("all_done") => Next::Stop,
        _ => Next::Nothing,
    }
}

/// A chat with a socket: `next`, then `done` with the attempt; one `done`
/// in four is cut off (the connection dropped before the answer) and sent
/// again exactly as it was.
fn socket_worker(shared: &Shared, name: &str, seed: u64) {
    let mut rng = Rng(seed);
    while !shared.stop.load(Ordering::Relaxed) {
        let (id, attempt) = match next_grant(shared, name) {
            Next::Task(id, attempt) => (id, attempt),
            Next::Nothing => continue,
            Next::Stop => return,
        };
        if rng.below(15) == 0 {
            // A slow chat: its lease runs out before it reports, and its `done` must not count.
            std::thread::sleep(Duration::from_secs(4));
        }
        let done = json!({"type":"done","worker":name,"taskId":id,"attempt":attempt,"waitMs":0});
        if rng.below(4) == 0
            && let Some(mut socket) = connect(shared)
        {
            // Cut off: sent, never read.
            let _ = socket.send(Message::text(done.to_string()));
            drop(socket);
            shared.told.lock().unwrap().resent += 1;
        }
        let Some(verdict) = ask_through_restarts(shared, &done) else { return };
        if verdict["type"] == "verdict" && verdict["accepted"] == true {
            assert_eq!((verdict["taskId"].as_str(), verdict["attempt"].as_u64()), (Some(id.as_str()), Some(attempt)));
            shared.told.lock().unwrap().accepted.insert((id, attempt, name.to_owned()));
        }
        // Anything else (a refusal after the lease ran out, an ack) needs no action:
        // the next `next` says what this worker holds.
    }
}

/// A chat without a socket for its reports: it learns its grant with
/// `next` but reports through a file, and sees the outcome in the store.
fn file_worker(shared: &Shared, name: &str) {
    while !shared.stop.load(Ordering::Relaxed) {
        let (id, attempt) = match next_grant(shared, name) {
            Next::Task(id, attempt) => (id, attempt),
            Next::Nothing => continue,
            Next::Stop => return,
        };
        let report = json!({"taskId":id,"workerId":name,"attempt":attempt,"status":"completed","deliverables":[]});
        write_whole(&shared.root, &format!("{id}-report.json"), &report.to_string());
        // Wait for the outcome of this attempt (or for the lease to end it).
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let Some(shown) = ask_through_restarts(shared, &json!({"type":"show_task","taskId":id})) else { return };
            let task = &shown["task"];
            if task["attempt"].as_u64() != Some(attempt) || task["state"] != "submitted" && task["state"] != "assigned"
            {
                if task["state"] == "accepted" && task["attempt"].as_u64() == Some(attempt) {
                    shared.told.lock().unwrap().accepted.insert((id.clone(), attempt, name.to_owned()));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Write a report file whole: to a temporary name, then renamed.
fn write_whole(root: &Path, name: &str, text: &str) {
    let dir = root.join(".mcc/reports");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Stale and forged reports with every combination of fields, over both
/// transports. None of them may ever be applied.
fn stale_sender(shared: &Shared, seed: u64) {
    let mut rng = Rng(seed);
    let workers = [None, Some("ghost"), Some("s0"), Some("f0")];
    let statuses = ["completed", "failed", "blocked"];
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let id = &shared.ids[rng.below(shared.ids.len() as u64) as usize];
        let worker = workers[rng.below(workers.len() as u64) as usize];
        // Real workers only with attempts never granted to anyone; the ghost with any.
        let attempt = match (worker, rng.below(3)) {
            (_, 0) => None,
            (Some("ghost"), _) => Some(1 + rng.below(3)),
            (_, 1) => Some(0),
            _ => Some(10_000 + rng.below(10)),
        };
        let status = statuses[rng.below(3) as usize];
        let mut report = json!({"taskId":id,"status":status,"deliverables":[],"requestedGuidance":"forged?"});
        if let Some(w) = worker {
            report["workerId"] = json!(w);
        }
        if let Some(a) = attempt {
            report["attempt"] = json!(a);
        }
        n += 1;
        if rng.below(2) == 0 {
            write_whole(&shared.root, &format!("stale-{n}.json"), &report.to_string());
        } else if let (Some(w), Some(a)) = (worker, attempt) {
            let kind = match status {
                "completed" => "done",
                "failed" => "fail",
                _ => "block",
            };
            let msg = json!({"type":kind,"worker":w,"taskId":id,"attempt":a,"reason":"forged","question":"forged?","waitMs":0});
            let _ = ask(shared, &msg);
        } else {
            write_whole(&shared.root, &format!("stale-{n}.json"), &report.to_string());
        }
        shared.told.lock().unwrap().stale_sent += 1;
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// The figures of one run, for docs/durability.md.
#[derive(Debug)]
struct Figures {
    tasks: usize,
    kills: usize,
    grants: usize,
    regrants: usize,
    resent: usize,
    stale_sent: usize,
    lost: usize,
    unexpected: usize,
    stale_applied: usize,
    unexplained_duplicates: usize,
    seconds: u64,
}

fn run(tasks: usize, kills: usize, seed: u64, engine: &Engine) -> Figures {
    let started = Instant::now();
    let project = Project::new();
    let args = engine.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut hub = Hub::start(project.root(), &args);
    let ids: Vec<String> = (0..tasks).map(|i| format!("t{i:04}")).collect();
    for chunk in ids.chunks(100) {
        let batch: Vec<Value> = chunk.iter().map(|id| old_task(id, &[], &[])).collect();
        let added = hub.connect().ask(json!({"type":"add_tasks","tasks":batch}));
        assert_eq!(added["type"], "tasks_added", "{added}");
    }
    let shared = Arc::new(Shared {
        url: Mutex::new(hub.url.clone()),
        told: Mutex::new(Told::default()),
        stop: AtomicBool::new(false),
        ids: ids.clone(),
        root: project.root().to_owned(),
    });
    let finished = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for k in 0..3u64 {
        let (s, f) = (shared.clone(), finished.clone());
        threads.push(std::thread::spawn(move || {
            socket_worker(&s, &format!("s{k}"), seed + k);
            f.fetch_add(1, Ordering::Relaxed);
        }));
    }
    {
        let (s, f) = (shared.clone(), finished.clone());
        threads.push(std::thread::spawn(move || {
            file_worker(&s, "f0");
            f.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let chaos = {
        let s = shared.clone();
        std::thread::spawn(move || stale_sender(&s, seed + 99))
    };
    let mut rng = Rng(seed + 7);
    for _ in 0..kills {
        // The fault: a kill at a random moment, not a wait for anything.
        std::thread::sleep(Duration::from_millis(100 + rng.below(1500)));
        let root = hub.root.clone();
        hub.kill9();
        hub = Hub::start(&root, &args);
        shared.url.lock().unwrap().clone_from(&hub.url);
    }
    // Let the workers drain the queue (all four stop at "all done").
    let deadline = Instant::now() + Duration::from_secs(120 + tasks as u64);
    while finished.load(Ordering::Relaxed) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    chaos.join().unwrap();
    let root = hub.root.clone();
    assert_eq!(hub.terminate(), Some(0));
    let stored = match engine {
        Engine::Sqlite => stored_in_sqlite(&root),
        Engine::Postgres(project) => stored_in_postgres(project),
    };
    let figures = check(&stored, &ids, &shared.told.lock().unwrap(), kills);
    Figures { seconds: started.elapsed().as_secs(), ..figures }
}

/// What the store holds at the end: each task's body, and the attempts whose lease expired.
struct Stored {
    tasks: BTreeMap<String, Value>,
    expired: BTreeSet<(String, u64)>,
}

fn stored_in_sqlite(root: &Path) -> Stored {
    let db = rusqlite::Connection::open(root.join(".mcc/state.db")).unwrap();
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let tasks: BTreeMap<String, Value> = db
        .prepare("SELECT id, body FROM tasks")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (id, body) = r.unwrap();
            (id, serde_json::from_str(&body).unwrap())
        })
        .collect();
    let expired: BTreeSet<(String, u64)> = db
        .prepare("SELECT task_id, attempt FROM events WHERE kind = 'expired'")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .map(|r| {
            let (t, a) = r.unwrap();
            (t, a as u64)
        })
        .collect();
    Stored { tasks, expired }
}

fn stored_in_postgres(project: &str) -> Stored {
    let mut db = crate::support::postgres::client();
    let tasks = db
        .query("SELECT id, body FROM mcc_tasks WHERE project = $1", &[&project])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap()))
        .collect();
    let expired = db
        .query("SELECT task_id, attempt FROM mcc_events WHERE project = $1 AND kind = 'expired'", &[&project])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    Stored { tasks, expired }
}

/// The final store against what the workers were told.
fn check(stored: &Stored, ids: &[String], told: &Told, kills: usize) -> Figures {
    let Stored { tasks, expired } = stored;
    let lost: Vec<&String> = ids.iter().filter(|id| tasks.get(*id).is_none_or(|t| t["state"] != "accepted")).collect();
    let unexpected: Vec<&String> = tasks.keys().filter(|id| !ids.contains(id)).collect();
    let mut stale_applied = Vec::new();
    let mut unexplained = Vec::new();
    let mut regrants = 0;
    for (id, task) in tasks {
        for (attempt, applied) in task["applied"].as_object().into_iter().flatten() {
            let attempt: u64 = attempt.parse().unwrap();
            let worker = applied["worker"].as_str().unwrap().to_owned();
            if !told.grants.contains(&(id.clone(), attempt, worker.clone())) {
                stale_applied.push(format!("{id} attempt {attempt} by {worker}: {applied}"));
            }
        }
        let final_attempt = task["attempt"].as_u64().unwrap();
        for earlier in 1..final_attempt {
            regrants += 1;
            if !expired.contains(&(id.clone(), earlier)) {
                unexplained.push(format!("{id} attempt {earlier}"));
            }
        }
    }
    for (id, attempt, worker) in &told.accepted {
        let task = &tasks[id];
        assert_eq!(task["state"], "accepted", "{worker} was told {id} attempt {attempt} was accepted: {task}");
        assert_eq!(task["attempt"].as_u64(), Some(*attempt), "{worker} was told {id} attempt {attempt}: {task}");
    }
    let per_task: BTreeMap<&String, usize> = told.accepted.iter().fold(BTreeMap::new(), |mut m, (id, _, _)| {
        *m.entry(id).or_default() += 1;
        m
    });
    assert!(per_task.values().all(|n| *n == 1), "a task told accepted twice: {per_task:?}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(unexpected.is_empty(), "unexpected: {unexpected:?}");
    assert!(stale_applied.is_empty(), "stale applied: {stale_applied:?}");
    assert!(unexplained.is_empty(), "a task granted again without an expired lease: {unexplained:?}");
    Figures {
        tasks: ids.len(),
        kills,
        grants: told.grants.len(),
        regrants,
        resent: told.resent,
        stale_sent: told.stale_sent,
        lost: lost.len(),
        unexpected: unexpected.len(),
        stale_applied: stale_applied.len(),
        unexplained_duplicates: unexplained.len(),
        seconds: 0,
    }
}

#[test]
fn kill_9_replays_and_stale_reports_change_nothing_they_should_not() {
    short(&Engine::Sqlite);
}

#[test]
fn on_postgresql_kill_9_replays_and_stale_reports_change_nothing_they_should_not() {
    short(&Engine::postgres());
}

fn short(engine: &Engine) {
    let figures = run(60, 3, 0x9e37_79b9_7f4a_7c15, engine);
    println!("{figures:#?}");
    assert!(figures.stale_sent > 0 && figures.grants >= figures.tasks && figures.kills == 3, "{figures:?}");
    let bad = figures.lost + figures.unexpected + figures.stale_applied + figures.unexplained_duplicates;
    assert_eq!(bad, 0, "{figures:?}");
    assert!(figures.seconds < 3600 && figures.regrants <= figures.grants && figures.resent <= figures.grants);
}

/// The long version: `MCC_FAULT_KILLS` kills (default 300) over
/// `MCC_FAULT_TASKS` tasks (default 2000). Prints its figures.
#[test]
#[ignore = "long: run by name, see the module docs"]
fn long() {
    let kills = std::env::var("MCC_FAULT_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let tasks = std::env::var("MCC_FAULT_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let seed = std::env::var("MCC_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x2545_f491_4f6c_dd1d);
    let engine = match std::env::var("MCC_FAULT_STORE").as_deref() {
        Ok("postgres") => Engine::postgres(),
        _ => Engine::Sqlite,
    };
    let figures = run(tasks, kills, seed, &engine);
    println!("{figures:#?}");
}
