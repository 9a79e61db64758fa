//! `cargo bench --bench postgres`: the store on PostgreSQL beside SQLite
//! (issue 22), measured on the real release binary.
//!
//! It starts its own PostgreSQL 15 with `scripts/postgres` (a temp folder, a
//! free loopback port, fsync and `synchronous_commit` on: a commit
//! acknowledged is on disk), stopped and removed at the end, and for each
//! engine (`MCC_PG_ENGINES=sqlite,postgres`):
//!
//! - drains `MCC_PG_TASKS` (100,000) no-op tasks with 4 and 16 mcc workers
//!   (`MCC_PG_WORKERS=4,16`) on persistent loopback connections: tasks/s,
//!   handoff (`done` sent -> the verdict with the next task) p50/p99, hub
//!   CPU per task; on Postgres also the commits and WAL flushes per task
//!   (how well commits are batched across workers);
//! - then, with those tasks still in the store, `MCC_PG_ROUNDS` (500) `next`
//!   and `done` round trips of one worker, one task at a time: median and p99;
//! - on Postgres, the takeover: a standby (`mcc hub --standby`) waits, the
//!   leader is killed with SIGKILL, and the clock runs until the standby
//!   hands a task to a `next` (`MCC_PG_TAKEOVERS`, 3 rounds).
//!
//! `MCC_PG_STATEMENTS=1` loads `pg_stat_statements` and prints, after each
//! Postgres drain, the statements that took the most time: where the time
//! goes. `MCC_SCALE_BIN=path/to/mcc` measures that binary. Numbers are
//! printed, never asserted: these machines are shared and noisy. The figures
//! and the date they were taken are in docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::drain::{Table, add_tasks, drain, spread};
use support::{Hub, Socket, ask, binary, connect, wire};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name).unwrap_or_else(|_| default.to_owned()).split(',').map(|s| s.trim().to_owned()).collect()
}

// ---------------------------------------------------------------- the database

/// A PostgreSQL 15 of this run, from `scripts/postgres start`; stopped and
/// its folder removed when dropped.
struct Postgres {
    url: String,
    dir: String,
}

impl Postgres {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres")
    }

    fn start() -> Self {
        let out = Command::new(Self::script())
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/postgres start");
        assert!(out.status.success(), "scripts/postgres start failed: {}", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let export = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/postgres start printed no {name}: {stdout}"))
                .to_owned()
        };
        Self { url: export("MCC_TEST_POSTGRES"), dir: export("MCC_TEST_POSTGRES_DIR") }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    /// Loads `pg_stat_statements` (a restart: it must be preloaded).
    fn with_statements(&self) {
        let mut db = self.client();
        db.batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'").expect("ALTER SYSTEM");
        drop(db);
        let status =
            Command::new(Self::script()).args(["restart", &self.dir]).status().expect("scripts/postgres restart");
        assert!(status.success(), "scripts/postgres restart failed: {status}");
        self.client().batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").expect("CREATE EXTENSION");
    }

    /// `name = value` of the settings the figures depend on.
    fn settings(&self) -> String {
        let mut db = self.client();
        let mut shown = Vec::new();
        for name in ["server_version", "synchronous_commit", "fsync", "wal_sync_method", "commit_delay"] {
            let value: String = db.query_one(&format!("SHOW {name}"), &[]).expect("SHOW").get(0);
            shown.push(format!("{name} = {value}"));
        }
        shown.join(", ")
    }

    /// Commits in the database and WAL flushes so far (`pg_stat_database`,
    /// `pg_stat_wal`).
    fn commits_and_flushes(&self) -> (i64, i64) {
        let mut db = self.client();
        let commits: i64 = db
            .query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()", &[])
            .expect("pg_stat_database")
            .get(0);
        let flushes: i64 = db.query_one("SELECT wal_sync FROM pg_stat_wal", &[]).expect("pg_stat_wal").get(0);
        (commits, flushes)
    }

    fn reset_statements(&self) {
        self.client().batch_execute("SELECT pg_stat_statements_reset()").expect("pg_stat_statements_reset");
    }

    /// The statements that took the most time since the last reset.
    fn top_statements(&self, table: &mut Table, label: &str) {
        let rows = self
            .client()
            .query(
                "SELECT calls, total_exec_time, mean_exec_time, regexp_replace(query, '\\s+', ' ', 'g') \
                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8",
                &[],
            )
            .expect("pg_stat_statements");
        for row in rows {
            let (calls, total, mean, query): (i64, f64, f64, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
            let query: String = query.chars().take(110).collect();
            table.row(
                format!("{label}: statement `{query}`"),
                format!("{calls} calls, {total:.0} ms in all, {:.1} µs each", mean * 1e3),
            );
        }
    }

    /// Updates, HOT updates and dead rows of mcc's tables: what autovacuum faces.
    fn table_churn(&self, table: &mut Table, label: &str) {
        let rows = self
            .client()
            .query(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, n_live_tup, autovacuum_count \
                 FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd > 0 ORDER BY n_tup_upd DESC",
                &[],
            )
            .expect("pg_stat_user_tables");
        for row in rows {
            let name: String = row.get(0);
            let [ins, upd, hot, dead, live, vacuums]: [i64; 6] =
                [row.get(1), row.get(2), row.get(3), row.get(4), row.get(5), row.get(6)];
            table.row(
                format!("{label}: table {name}"),
                format!(
                    "{ins} inserts, {upd} updates ({hot} HOT), {live} live, {dead} dead rows, {vacuums} autovacuums"
                ),
            );
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(Self::script()).args(["stop", &self.dir]).status();
    }
}

// ---------------------------------------------------------------- the engines

/// Where a measured hub keeps its state.
#[derive(Clone, Copy)]
enum Engine<'a> {
    Sqlite,
    Postgres(&'a Postgres),
}

impl Engine<'_> {
    fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres(_) => "Postgres",
        }
    }

    /// `--store URL --project NAME` for a hub of `project`, none on SQLite.
    fn args(self, project: &str) -> Vec<String> {
        match self {
            Engine::Sqlite => Vec::new(),
            Engine::Postgres(db) => vec!["--store".into(), db.url.clone(), "--project".into(), project.to_owned()],
        }
    }

    fn hub(self, bin: &Path, root: &Path, project: &str) -> Hub {
        let args = self.args(project);
        Hub::start_with(bin, root, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// A project name of this run: runs that share a database never meet.
fn project(what: &str) -> String {
    format!("bench-{what}-{}", std::process::id())
}

fn tasks(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| wire::task(&format!("{prefix}{i}"), &[], &[])).collect()
}

// ---------------------------------------------------------------- the measures

/// Load `n` tasks and drain them with `workers` workers; then, when `rounds`
/// is not 0, that many `next` and `done` round trips with the tasks in the store.
fn drain_and_round_trips(bin: &Path, engine: Engine, workers: usize, n: usize, rounds: usize, table: &mut Table) {
    let label = format!("{}, {workers} workers", engine.name());
    let dir = tempfile::tempdir().expect("a temp folder");
    let hub = engine.hub(bin, dir.path(), &project(&format!("{workers}w")));
    let mut admin = hub.connect();
    let load = add_tasks(&mut admin, &tasks("t", n));
    table.row(
        format!("{label}: add_tasks {n} tasks"),
        format!("{:.1} s ({:.0} tasks/s)", load.as_secs_f64(), n as f64 / load.as_secs_f64()),
    );

    if let Engine::Postgres(db) = engine
        && statements_wanted()
    {
        db.reset_statements();
    }
    let before = if let Engine::Postgres(db) = engine { Some(db.commits_and_flushes()) } else { None };
    let drained = drain(&hub, workers);
    assert_eq!(drained.tasks, n, "the workers drained every task");
    table.row(
        format!("{label}: drain {n} tasks"),
        format!(
            "{:.0} tasks/s; handoff {}; hub CPU per task {}",
            drained.tasks_per_s,
            spread(drained.handoffs),
            drained.cpu
        ),
    );
    if let Engine::Postgres(db) = engine {
        let (commits, flushes) = db.commits_and_flushes();
        let (commits_before, flushes_before) = before.unwrap_or_default();
        table.row(
            format!("{label}: commits / WAL flushes per task"),
            format!(
                "{:.2} / {:.2} ({} commits, {} flushes)",
                (commits - commits_before) as f64 / n as f64,
                (flushes - flushes_before) as f64 / n as f64,
                commits - commits_before,
                flushes - flushes_before
            ),
        );
        if statements_wanted() {
            db.top_statements(table, &label);
        }
    }
    if rounds > 0 {
        let (next, done) = round_trips(&hub, &mut admin, rounds);
        table.row(format!("{label}: `next` round trip, {n} tasks in the store"), spread(next));
        table.row(format!("{label}: `done` round trip, {n} tasks in the store"), spread(done));
    }
}

fn statements_wanted() -> bool {
    std::env::var("MCC_PG_STATEMENTS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// One worker, one task at a time: the task is added, `next` grants it, `done`
/// judges it (and finds nothing more to hand out). Each a durable commit.
fn round_trips(hub: &Hub, admin: &mut Socket, rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut ws = connect(&hub.url);
    let (mut next, mut done) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds {
        add_tasks(admin, &tasks(&format!("rt{i}-"), 1));
        let start = Instant::now();
        let reply = ask(&mut ws, &wire::next("m", 0));
        next.push(start.elapsed());
        let task = wire::offered(&reply).unwrap_or_else(|| panic!("no task for `next`: {reply}"));
        let start = Instant::now();
        let verdict = ask(&mut ws, &wire::done("m", &task, 0));
        done.push(start.elapsed());
        assert_eq!(verdict["accepted"], true, "{verdict}");
    }
    (next, done)
}

/// A standby hub started in a thread: `waiting` is told when it says it
/// waits for the lease, the thread ends with the hub once it listens.
fn standby(
    bin: &Path,
    root: &Path,
    db: &Postgres,
    project: &str,
) -> (mpsc::Receiver<()>, std::thread::JoinHandle<Hub>) {
    let (tell, waiting) = mpsc::channel();
    let (bin, root, url, project) = (bin.to_owned(), root.to_owned(), db.url.clone(), project.to_owned());
    let handle = std::thread::spawn(move || {
        Hub::start_watching(&bin, &root, &["--standby", "--store", &url, "--project", &project], |line| {
            if line.contains("standby") {
                let _ = tell.send(());
            }
        })
    });
    (waiting, handle)
}

/// SIGKILL of the leader with a standby waiting -> the standby's first task
/// handed to a `next`.
fn takeover(bin: &Path, db: &Postgres, rounds: usize, n: usize, table: &mut Table) {
    let name = project("takeover");
    // Two checkouts of the project: the leader's and the standby's, which swap at each round.
    let dirs = [tempfile::tempdir().expect("a folder"), tempfile::tempdir().expect("a folder")];
    let mut leader = Engine::Postgres(db).hub(bin, dirs[0].path(), &name);
    add_tasks(&mut leader.connect(), &tasks("k", n));
    let mut times = Vec::new();
    for round in 0..rounds {
        // The leader is busy: a worker holds a task of it.
        let mut ws = connect(&leader.url);
        wire::offered(&ask(&mut ws, &wire::next(&format!("busy{round}"), 0))).expect("a task from the leader");
        let (waiting, standing_by) = standby(bin, dirs[(round + 1) % 2].path(), db, &name);
        waiting.recv_timeout(Duration::from_mins(1)).expect("the standby says it waits within a minute");
        let start = Instant::now();
        leader.kill();
        let hub = standing_by.join().expect("the standby took over");
        let listening = start.elapsed();
        let mut ws = connect(&hub.url);
        let reply = ask(&mut ws, &wire::next("after", 0));
        let served = start.elapsed();
        wire::offered(&reply).unwrap_or_else(|| panic!("the standby handed no task: {reply}"));
        times.push(served);
        table.row(
            format!("Postgres takeover {}: SIGKILL -> standby listening / first task", round + 1),
            format!("{:.2} s / {:.2} s", listening.as_secs_f64(), served.as_secs_f64()),
        );
        leader = hub;
    }
    table.row(format!("Postgres takeover, {n} tasks in the project"), spread(times));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = binary();
    let n = env_usize("MCC_PG_TASKS", 100_000);
    let rounds = env_usize("MCC_PG_ROUNDS", 500);
    let takeovers = env_usize("MCC_PG_TAKEOVERS", 3);
    let workers: Vec<usize> = env_list("MCC_PG_WORKERS", "4,16").iter().filter_map(|w| w.parse().ok()).collect();
    let engines = env_list("MCC_PG_ENGINES", "sqlite,postgres");
    println!("mcc postgres bench: {}", bin.display());
    let db = Postgres::start();
    if statements_wanted() {
        db.with_statements();
    }
    println!("PostgreSQL: {}", db.settings());
    let mut table = Table::default();
    for engine in [Engine::Sqlite, Engine::Postgres(&db)] {
        if !engines.iter().any(|e| e.eq_ignore_ascii_case(engine.name())) {
            continue;
        }
        for (k, &w) in workers.iter().enumerate() {
            // The round trips once per engine, after the first drain.
            drain_and_round_trips(&bin, engine, w, n, if k == 0 { rounds } else { 0 }, &mut table);
        }
        if let Engine::Postgres(db) = engine {
            db.table_churn(&mut table, "Postgres after the drains");
            if takeovers > 0 {
                takeover(&bin, db, takeovers, 1000, &mut table);
            }
        }
    }
    table.print();
}
