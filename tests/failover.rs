//! One project, two hubs on a shared Postgres database: the leader's lease, the
//! standby that takes over, and the former leader that steps down.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEADLINE, Project, Ws, mcc_bin, old_task, postgres};

#[test]
fn the_test_database_started_by_scripts_test_answers() {
    let mut client = postgres::client();
    let one: i32 = client.query_one("SELECT 1", &[]).expect("SELECT 1").get(0);
    assert_eq!(one, 1);
    let sync: String = client.query_one("SHOW synchronous_commit", &[]).expect("SHOW").get(0);
    assert_eq!(sync, "on", "the durability claims are about real commits");
    assert_ne!(postgres::project_name("a b"), postgres::project_name("a b"), "each call names a new project");
}

/// Leader lease and renewal short enough for a test that waits for a takeover
/// it does not measure; the defaults are 5 s and 1 s.
const LEADER: [&str; 4] = ["--leader-lease", "2s", "--leader-renew", "250ms"];
const STANDBY: [&str; 5] = ["--leader-lease", "2s", "--leader-renew", "250ms", "--standby"];

/// A `mcc hub` on a Postgres store, spawned without waiting for it to
/// listen: a standby listens only once it holds the lease.
struct PgHub {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    root: std::path::PathBuf,
}

impl PgHub {
    fn spawn(root: &Path, store: &str, project: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(mcc_bin())
            .args(["hub", "--port", "0", "--dir"])
            .arg(root)
            .args(["--store", store, "--project", project, "--lease", "2s"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcc hub");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines, seen: Vec::new(), root: root.to_owned() }
    }

    /// The first line (printed so far or within `limit`) containing `text`.
    fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("the hub never printed {text:?} within {limit:?}; it printed {:?}", self.seen);
    }

    /// Its address once it serves.
    fn listening(&mut self, limit: Duration) -> String {
        let line = self.wait_for("listening on ", limit);
        let rest = line.split("listening on ").nth(1).expect("an address");
        rest.split_whitespace().next().expect("an address").to_owned()
    }

    /// Everything it printed until it exited (or `limit` passed).
    fn log_until_exit(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        self.seen.join("\n")
    }

    fn connect(&self, url: &str) -> Ws {
        let token = std::fs::read_to_string(self.root.join(".mcc/token")).expect("the hub wrote its token");
        Ws::connect_with_token(url, token.trim())
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([name, &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {name} {}", self.child.id());
    }

    /// Its exit code, waiting at most `limit`.
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(5);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for the hub") {
                return status.code();
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        panic!("the hub did not exit within {limit:?}; it printed {:?}", self.seen);
    }

    fn kill9(&mut self) {
        self.child.kill().expect("kill -9 the hub");
        self.child.wait().expect("reap the hub");
    }
}

impl Drop for PgHub {
    fn drop(&mut self) {
        // A stopped hub cannot take a SIGTERM before it runs again.
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a worker's loop ended.
#[derive(Debug, Clone, PartialEq)]
enum Ended {
    /// Told the work is finished.
    AllDone,
    /// The connection closed or went silent: its hub died.
    HubGone,
    /// An answer a worker does not expect from a hub that serves.
    Unexpected(Value),
}

/// Work through tasks with `next`/`done` as an old-protocol worker at
/// `url`, recording every acknowledged acceptance and every grant.
fn work(url: &str, name: &str, accepted: &Mutex<Vec<String>>, grants: &Mutex<Vec<(String, u64)>>) -> Ended {
    let Ok((socket, _)) = tungstenite::connect(url) else { return Ended::HubGone };
    drop(socket);
    let mut ws = Ws::connect(url);
    ws.send(json!({"type":"next","worker":name,"waitMs":2000}));
    loop {
        let Some(answer) = ws.recv_within(Duration::from_secs(15)) else { return Ended::HubGone };
        let offer = match answer["type"].as_str() {
            Some("offer") => answer["offer"].clone(),
            Some("verdict") => {
                if answer["accepted"] == true {
                    accepted.lock().unwrap().push(answer["taskId"].as_str().unwrap().to_owned());
                }
                answer["next"].clone()
            }
            _ => return Ended::Unexpected(answer),
        };
        match offer["type"].as_str() {
            Some("task") => {}
            Some("all_done") => return Ended::AllDone,
            // Tasks held by workers of a killed hub come back when their leases end.
            Some("nothing_yet") => {
                ws.send(json!({"type":"next","worker":name,"waitMs":2000}));
                continue;
            }
            _ => return Ended::Unexpected(answer),
        }
        let id = offer["task"]["id"].as_str().unwrap().to_owned();
        let attempt = offer["attempt"].as_u64().unwrap();
        grants.lock().unwrap().push((id.clone(), attempt));
        ws.send(json!({"type":"done","worker":name,"taskId":id,"attempt":attempt,"waitMs":2000}));
    }
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

fn workers(
    url: &str,
    prefix: &str,
    accepted: &Shared<String>,
    grants: &Shared<(String, u64)>,
) -> Vec<std::thread::JoinHandle<Ended>> {
    (0..4)
        .map(|k| {
            let (url, name, a, g) = (url.to_owned(), format!("{prefix}{k}"), accepted.clone(), grants.clone());
            std::thread::spawn(move || work(&url, &name, &a, &g))
        })
        .collect()
}

fn create(ws: &mut Ws, ids: &[String]) {
    ws.register_coordinator();
    for chunk in ids.chunks(100) {
        let tasks: Vec<Value> = chunk.iter().map(|id| old_task(id, &[], &[])).collect();
        assert_eq!(ws.ask(json!({"type":"create_tasks","tasks":tasks}))["count"], chunk.len());
    }
}

fn states(snapshot: &Value) -> BTreeMap<String, String> {
    snapshot["tasks"]
        .as_array()
        .expect("a snapshot lists its tasks")
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["state"].as_str().unwrap().to_owned()))
        .collect()
}

/// Each task acknowledged accepted once, each attempt granted once.
fn accepted_once(accepted: &[String], grants: &[(String, u64)], total: usize) {
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "no task acknowledged accepted twice");
    assert!(unique.len() <= total);
    let mut per_task: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (id, attempt) in grants {
        per_task.entry(id).or_default().push(*attempt);
    }
    for (id, attempts) in per_task {
        let distinct: BTreeSet<u64> = attempts.iter().copied().collect();
        assert_eq!(distinct.len(), attempts.len(), "{id}: the same attempt was granted twice: {attempts:?}");
    }
}

#[test]
fn when_the_leader_is_killed_mid_drain_the_standby_serves_and_every_task_ends_accepted_once() {
    let (store, project) = (postgres::url(), postgres::project_name("failover kill 9"));
    let (leader_clone, standby_clone) = (Project::new(), Project::new());
    let mut leader = PgHub::spawn(leader_clone.root(), &store, &project, &[]);
    let leader_url = leader.listening(DEADLINE);
    let mut standby = PgHub::spawn(standby_clone.root(), &store, &project, &["--standby"]);
    let waiting = standby.wait_for("waiting for", DEADLINE);
    assert!(
        waiting.contains(&project) && waiting.contains("epoch"),
        "it says what it waits for and who holds it: {waiting}"
    );

    let total = 300;
    let ids: Vec<String> = (0..total).map(|i| format!("t{i:03}")).collect();
    create(&mut leader.connect(&leader_url), &ids);
    let accepted: Shared<String> = Arc::default();
    let grants: Shared<(String, u64)> = Arc::default();
    let first = workers(&leader_url, "w", &accepted, &grants);
    crate::support::eventually("a third of the tasks accepted", || accepted.lock().unwrap().len() >= total / 3);
    leader.kill9();
    let killed = Instant::now();
    for w in first {
        assert_eq!(w.join().unwrap(), Ended::HubGone);
    }
    let before: BTreeSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(before.len() < total, "the kill came mid-drain");

    let standby_url = standby.listening(DEADLINE);
    let takeover = killed.elapsed();
    // With the default lease (5 s) and look (1 s): the issue asks for 10 s at most.
    eprintln!("failover: the standby served {:.2} s after kill -9 of the leader", takeover.as_secs_f64());
    let after = states(&standby.connect(&standby_url).ask(json!({"type":"snapshot"}))["snapshot"]);
    assert_eq!(after.len(), total, "every task is in the standby's state");
    for id in &before {
        assert_eq!(after[id], "accepted", "{id} was acknowledged accepted by the leader");
    }

    for w in workers(&standby_url, "v", &accepted, &grants) {
        assert_eq!(w.join().unwrap(), Ended::AllDone, "a worker of the standby drains to the end");
    }
    let done = standby.connect(&standby_url).ask(json!({"type":"snapshot"}))["snapshot"].clone();
    assert_eq!(done["counts"]["accepted"], total, "{}", done["counts"]);
    let accepted = accepted.lock().unwrap().clone();
    accepted_once(&accepted, &grants.lock().unwrap(), total);
    assert!(accepted.len() >= total - 8, "only the few in flight at the kill lack an answer: {}", accepted.len());
}

/// Every row of `project` in the store's tables but the lease's, as text.
fn stored_rows(project: &str) -> Vec<String> {
    let mut client = postgres::client();
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.columns \
             WHERE column_name = 'project' AND table_schema = current_schema() AND table_name <> 'mcc_leaders' \
             ORDER BY 1",
            &[],
        )
        .expect("list the store's tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!tables.is_empty(), "the store keeps its rows by project");
    let mut rows = Vec::new();
    for table in tables {
        let query = format!("SELECT '{table}: ' || t::text FROM \"{table}\" t WHERE project = $1 ORDER BY 1");
        rows.extend(client.query(&query, &[&project]).expect("read a table").iter().map(|row| row.get::<_, String>(0)));
    }
    rows
}

#[test]
fn a_leader_paused_past_its_lease_steps_down_when_it_wakes_and_writes_and_grants_nothing() {
    let (store, project) = (postgres::url(), postgres::project_name("failover fence"));
    let (leader_clone, standby_clone) = (Project::new(), Project::new());
    let mut leader = PgHub::spawn(leader_clone.root(), &store, &project, &LEADER);
    let leader_url = leader.listening(DEADLINE);
    let mut standby = PgHub::spawn(standby_clone.root(), &store, &project, &STANDBY);
    standby.wait_for("waiting for", DEADLINE);
    let ids: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    create(&mut leader.connect(&leader_url), &ids);
    // A worker of the old leader, connected before it is paused.
    let mut stale = Ws::connect(&leader_url);

    leader.signal("-STOP");
    let standby_url = standby.listening(DEADLINE);
    // The standby grants and accepts the work, to the end: then it holds no lease and writes nothing more.
    let accepted: Shared<String> = Arc::default();
    let grants: Shared<(String, u64)> = Arc::default();
    assert_eq!(work(&standby_url, "fresh", &accepted, &grants), Ended::AllDone);
    assert_eq!(accepted.lock().unwrap().len(), 3, "the standby accepted every task");

    let rows = stored_rows(&project);
    // Asked while the old leader sleeps: it reads this when it wakes.
    stale.send(json!({"type":"next","worker":"stale","waitMs":2000}));
    leader.signal("-CONT");
    let told = stale.recv_within(DEADLINE).expect("the old leader answers before it closes");
    assert_eq!(told["type"], "error", "no grant from a fenced hub: {told}");
    assert_eq!(told["code"], "stepped_down", "{told}");
    assert!(told["error"].as_str().unwrap().contains(&project), "the message names the project: {told}");
    // A client that comes now is told the same instead of being greeted.
    let (mut late, _) = tungstenite::connect(&leader_url).expect("the old leader still listens for a moment");
    let first = late.read().expect("a first message");
    let first: Value = serde_json::from_str(first.to_text().expect("text")).expect("JSON");
    assert_eq!(first["code"], "stepped_down", "{first}");
    assert_eq!(leader.exit_code(DEADLINE), Some(6), "a fenced hub exits 6 (stepped down)");
    let log = leader.log_until_exit(DEADLINE);
    assert!(log.contains("stepped down") && log.contains(&project), "its log says it stepped down: {log}");
    assert_eq!(stored_rows(&project), rows, "the old leader wrote nothing after it woke");
    assert!(!rows.iter().any(|row| row.contains("stale")), "no grant to the old leader's worker is stored: {rows:?}");
}

#[test]
fn a_database_restarted_under_load_is_only_a_wait_for_the_workers() {
    let server = postgres::Server::start();
    let project = postgres::project_name("database restart");
    let clone = Project::new();
    let mut hub = PgHub::spawn(clone.root(), &server.url, &project, &[]);
    let url = hub.listening(DEADLINE);
    let total = 300;
    let ids: Vec<String> = (0..total).map(|i| format!("t{i:03}")).collect();
    create(&mut hub.connect(&url), &ids);
    let accepted: Shared<String> = Arc::default();
    let grants: Shared<(String, u64)> = Arc::default();
    let drain = workers(&url, "w", &accepted, &grants);
    crate::support::eventually("a third of the tasks accepted", || accepted.lock().unwrap().len() >= total / 3);
    let restarted = Instant::now();
    server.restart();
    eprintln!("failover: pg_ctl restart -m fast took {:.2} s", restarted.elapsed().as_secs_f64());
    for w in drain {
        assert_eq!(w.join().unwrap(), Ended::AllDone, "a worker saw only a wait; the hub printed {:?}", hub.seen);
    }
    let done = hub.connect(&url).ask(json!({"type":"snapshot"}))["snapshot"].clone();
    assert_eq!(done["counts"]["accepted"], total, "{}", done["counts"]);
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), total, "every acceptance was acknowledged once");
    accepted_once(&accepted, &grants.lock().unwrap(), total);
}

#[test]
fn a_standby_says_which_hub_holds_the_lease_it_waits_for_and_does_not_serve_meanwhile() {
    let (store, project) = (postgres::url(), postgres::project_name("standby waits"));
    let mut client = postgres::client();
    // The lease row a serving hub keeps, as the shared conventions have it (the engine makes the table).
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS mcc_leaders (project TEXT PRIMARY KEY, owner TEXT, epoch BIGINT, \
             expires_at TIMESTAMPTZ, address TEXT)",
        )
        .expect("the lease table");
    client
        .execute(
            "INSERT INTO mcc_leaders (project, owner, epoch, expires_at, address) \
             VALUES ($1, 'elsewhere-4242', 7, now() + interval '1 hour', 'ws://10.0.0.9:3100')",
            &[&project],
        )
        .expect("a lease held by another hub");
    let clone = Project::new();
    let mut standby = PgHub::spawn(clone.root(), &store, &project, &STANDBY);
    let waiting = standby.wait_for("waiting for", DEADLINE);
    for part in [project.as_str(), "elsewhere-4242", "ws://10.0.0.9:3100", "epoch 7"] {
        assert!(waiting.contains(part), "the line names {part:?}: {waiting}");
    }
    // It looks again every --leader-renew and says nothing more while the holder stays.
    let renewed = Instant::now();
    client
        .execute("UPDATE mcc_leaders SET epoch = 8, owner = 'elsewhere-5353' WHERE project = $1", &[&project])
        .expect("another holder");
    let again = standby.wait_for("elsewhere-5353", DEADLINE);
    assert!(again.contains("epoch 8"), "{again}");
    eprintln!("failover: the standby saw the new holder {:.2} s later", renewed.elapsed().as_secs_f64());
    assert!(
        !standby.seen.iter().any(|l| l.contains("listening on")),
        "it serves nothing while the lease is held: {:?}",
        standby.seen
    );
    assert!(standby.child.try_wait().expect("look at the standby").is_none(), "it is still waiting");
    client.execute("DELETE FROM mcc_leaders WHERE project = $1", &[&project]).expect("clean up the lease");
}

#[test]
fn a_standby_on_the_checkouts_sqlite_file_is_refused_with_what_to_give_instead() {
    let project = Project::new();
    let run = project.mcc().args(["hub", "--standby", "--port", "0", "--dir", "."]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--standby needs") && run.stderr.contains("--store postgres://"), "{}", run.stderr);
    assert!(!project.path(".mcc/hub.json").exists(), "it never served");
}

#[test]
fn a_standby_that_stepped_down_waits_again_and_serves_when_the_new_leader_dies() {
    let (store, project) = (postgres::url(), postgres::project_name("standby again"));
    let (first_clone, second_clone) = (Project::new(), Project::new());
    // Nobody holds the lease yet: the first standby serves at once.
    let mut first = PgHub::spawn(first_clone.root(), &store, &project, &STANDBY);
    let first_url = first.listening(DEADLINE);
    let mut second = PgHub::spawn(second_clone.root(), &store, &project, &STANDBY);
    second.wait_for("waiting for", DEADLINE);
    create(&mut first.connect(&first_url), &["t0".to_owned(), "t1".to_owned()]);

    // Connected before the pause: a handshake with a stopped hub would wait for it.
    let mut stale = Ws::connect(&first_url);
    first.signal("-STOP");
    let second_url = second.listening(DEADLINE);
    first.signal("-CONT");
    stale.send(json!({"type":"next","worker":"stale","waitMs":2000}));
    first.wait_for("stepped down", DEADLINE);
    let again = first.wait_for("waiting for", DEADLINE);
    assert!(again.contains(&second_url), "it waits, naming the hub that serves now: {again}");
    assert!(first.child.try_wait().expect("look at the first hub").is_none(), "a standby does not exit when fenced");

    // The new leader dies: the first takes over again, on a fresh listener, with the state as stored.
    second.kill9();
    first.seen.retain(|line| !line.contains("listening on "));
    let back = first.listening(DEADLINE);
    let tasks = states(&first.connect(&back).ask(json!({"type":"snapshot"}))["snapshot"]);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let accepted: Shared<String> = Arc::default();
    let grants: Shared<(String, u64)> = Arc::default();
    assert_eq!(work(&back, "w", &accepted, &grants), Ended::AllDone);
    assert_eq!(accepted.lock().unwrap().len(), 2);

    // SIGTERM stops a standby, serving or waiting, with 0.
    first.signal("-TERM");
    assert_eq!(first.exit_code(DEADLINE), Some(0));
}

#[test]
fn a_standby_in_a_clone_of_its_own_takes_over_with_the_runs_accepted_files_in_its_checkout() {
    use crate::support::git;
    let (store, project) = (postgres::url(), postgres::project_name("standby restores"));
    let leader_clone = Project::new();
    leader_clone.write(".gitignore", ".mcc/\n");
    leader_clone.write("docs/guide.md", "first version\n");
    git(leader_clone.root(), &["init", "-q"]);
    git(leader_clone.root(), &["add", "."]);
    git(leader_clone.root(), &["commit", "-q", "-m", "start"]);
    // The standby's machine: a clone at the starting commit, with nothing of the run.
    let elsewhere = tempfile::tempdir().unwrap();
    git(elsewhere.path(), &["clone", "-q", leader_clone.root().to_str().unwrap(), "repo"]);
    let standby_root = elsewhere.path().join("repo");

    let mut args = vec!["--store", store.as_str(), "--project", project.as_str()];
    args.extend(LEADER);
    let leader = crate::support::Hub::start(leader_clone.root(), &args);
    let added = leader.connect().ask(json!({"type":"add_tasks","tasks":[old_task("guide", &["docs/guide.md"], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let worker = |args: &[&str]| leader_clone.mcc().args(["worker"]).args(args).args(["--as", "w1"]).run();
    assert_eq!(worker(&["next"]).code, 0);
    leader_clone.write("docs/guide.md", "the accepted version\n");
    let done = worker(&["done", "guide"]);
    assert!(done.stdout.starts_with("accepted guide."), "{done:?}");

    let mut standby = PgHub::spawn(&standby_root, &store, &project, &STANDBY);
    standby.wait_for("waiting for", DEADLINE);
    assert_eq!(std::fs::read_to_string(standby_root.join("docs/guide.md")).unwrap(), "first version\n");
    leader.kill9();
    standby.listening(DEADLINE);
    let said = standby.wait_for("checkout brought to the run's accepted files", DEADLINE);
    assert!(said.contains("1 written"), "{said}");
    assert_eq!(
        std::fs::read_to_string(standby_root.join("docs/guide.md")).unwrap(),
        "the accepted version\n",
        "the standby serves on the accepted files"
    );
}
