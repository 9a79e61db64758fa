//! A hub reachable at several addresses (a leader and its standby): `--hub`,
//! `MCC_HUB` and `mcc join` take a comma-separated list, and a client passes
//! over an address that refuses, or whose hub says it stepped down, to the
//! next. With every address down it goes round them for the failover wait,
//! then says the hub is down naming each.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::support::git;
use crate::support::{Hub, Mcc, Project, Run, old_task};

/// An address on loopback where nothing listens (the port was free a moment ago).
fn closed_address() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("ws://127.0.0.1:{port}")
}

fn add(hub: &Hub, tasks: Vec<Value>) {
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

/// The `mcc worker done ...` words a `next` printed.
fn done_command(next: &Run) -> Vec<String> {
    let line =
        next.stdout.lines().find_map(|l| l.strip_prefix("when done: mcc ")).unwrap_or_else(|| panic!("{next:?}"));
    shlex::split(line).expect("a shell line")
}

/// When the hub that stepped down says so.
#[derive(Clone, Copy)]
enum Says {
    /// In place of the `connected` greeting.
    AtTheHandshake,
    /// After the greeting, as the answer to the first request.
    ToTheFirstRequest,
}

/// A peer on loopback speaking the wire as a hub that lost its project's
/// lease to another does: it answers with the `stepped_down` error code.
/// No hub of this build can be fenced on `SQLite`; this one is a real socket
/// and real frames, as a fenced hub sends them.
struct SteppedDown {
    url: String,
    /// Connections it has taken.
    reached: Arc<AtomicUsize>,
    /// Requests it was sent (and answered with the error).
    asked: Arc<AtomicUsize>,
}

impl SteppedDown {
    fn start(says: Says) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let (reached, asked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (seen, heard) = (reached.clone(), asked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                seen.fetch_add(1, Ordering::SeqCst);
                let heard = heard.clone();
                std::thread::spawn(move || {
                    let Ok(mut ws) = tungstenite::accept(stream) else { return };
                    let error = json!({
                        "type": "error",
                        "error": "this hub stepped down: project p is served by another hub since epoch 3; ask the next address",
                        "code": "stepped_down",
                    });
                    if let Says::ToTheFirstRequest = says {
                        let hello = json!({"type": "connected", "clientId": "c-1", "message": "connected"});
                        let _ = ws.send(Message::text(hello.to_string()));
                        if !matches!(ws.read(), Ok(Message::Text(_))) {
                            return;
                        }
                        heard.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = ws.send(Message::text(error.to_string()));
                    // Until the client closes.
                    while ws.read().is_ok() {}
                });
            }
        });
        Self { url, reached, asked }
    }
}

#[test]
fn a_worker_whose_first_hub_address_is_a_closed_port_gets_its_task_at_the_second_and_reports_it_there() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &["a.md"], &[])]);
    let list = format!("{}, {}", closed_address(), hub.url);
    let next = project.mcc().env("MCC_HUB", &list).args(["worker", "next", "--as", "w", "--wait", "1s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.contains("task a"), "{next:?}");
    project.write("a.md", "done");
    let done = project.mcc().env("MCC_HUB", &list).env("MCC_WAIT", "1s").args(done_command(&next)).run();
    assert_ne!(done.code, 1, "{done:?}");
    assert!(done.stdout.starts_with("accepted a."), "{done:?}");
}

#[test]
fn a_hub_that_answers_the_handshake_with_stepped_down_is_passed_over_for_the_next_address() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[])]);
    let fenced = SteppedDown::start(Says::AtTheHandshake);
    let list = format!("{},{}", fenced.url, hub.url);
    let next = project.mcc().args(["worker", "next", "--as", "w", "--wait", "1s", "--hub", &list]).run();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.contains("task a"), "{next:?}");
    assert_eq!(fenced.reached.load(Ordering::SeqCst), 1, "the first address was tried first");
}

#[test]
fn a_request_a_stepped_down_hub_refused_is_sent_to_the_next_address_even_one_that_changes_the_plan() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let fenced = SteppedDown::start(Says::ToTheFirstRequest);
    // A clone joined at both addresses: its commands carry the project's token to each.
    let clone = tempfile::tempdir().unwrap();
    let token = project.read(".mcc/token");
    let list = format!("{},{}", fenced.url, hub.url);
    let joined = Mcc::new(clone.path()).args(["join", &list, "--token", token.trim()]).run();
    assert_eq!(joined.code, 0, "{joined:?}");
    std::fs::write(clone.path().join("more.json"), json!([old_task("added", &[], &[])]).to_string()).unwrap();
    // `tasks add` is never sent twice after a cut; a hub that stepped down did nothing with it.
    let added = Mcc::new(clone.path()).args(["tasks", "add", "more.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    assert_eq!(fenced.asked.load(Ordering::SeqCst), 1, "the stepped-down hub was asked first: {added:?}");
    let shown = hub.connect().ask(json!({"type": "show_task", "taskId": "added"}));
    assert_eq!(shown["task"]["id"], "added", "added at the hub that serves: {shown}");
}

#[test]
fn with_every_address_down_a_worker_goes_round_them_for_the_failover_wait_then_exits_3_naming_each() {
    let project = Project::new();
    let (a, b) = (closed_address(), closed_address());
    let started = Instant::now();
    let run = project
        .mcc()
        .env("MCC_FAILOVER_WAIT", "1500ms")
        .args(["worker", "next", "--as", "w", "--hub", &format!("{a},{b}")])
        .run();
    let took = started.elapsed();
    assert_eq!(run.code, 3, "down for now: {run:?}");
    assert!(run.stdout.contains(&a) && run.stdout.contains(&b), "each address is named: {run:?}");
    assert!(run.stdout.contains("1s 500ms"), "the wait is said: {run:?}");
    assert!(run.stdout.contains("run the same command again"), "{run:?}");
    assert!(took >= Duration::from_millis(1500), "it went round the list for the whole wait: {took:?}");
}

#[test]
fn one_address_down_is_said_at_once_as_it_always_was() {
    let project = Project::new();
    let a = closed_address();
    let started = Instant::now();
    let run = project.mcc().args(["worker", "next", "--as", "w", "--hub", &a]).run();
    let took = started.elapsed();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.starts_with(&format!("cannot reach the hub at {a}: ")), "today's words: {run:?}");
    // Far below the 15 s a list of several would wait: no failover wait for one address.
    assert!(took < Duration::from_secs(7), "{took:?}");
}

#[test]
fn a_hub_list_with_an_empty_or_bad_element_is_refused_naming_it_and_where_it_came_from() {
    let project = Project::new();
    let empty =
        project.mcc().args(["worker", "next", "--as", "w", "--hub", "ws://127.0.0.1:1,,ws://127.0.0.1:2"]).run();
    assert_eq!(empty.code, 1, "{empty:?}");
    assert!(empty.stderr.contains("address 2 is empty") && empty.stderr.contains("--hub (or MCC_HUB)"), "{empty:?}");
    let bad = project.mcc().env("MCC_HUB", "ws://127.0.0.1:1, http://127.0.0.1:2").args(["tasks", "list"]).run();
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("`http://127.0.0.1:2` starts with http://, not ws:// or wss://"), "{bad:?}");
}

/// A `git clone` of `root` in a folder of its own: another machine's checkout.
fn clone_of(root: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    git(dir.path(), &["clone", "-q", &root.display().to_string(), "clone"]);
    let clone = dir.path().join("clone");
    (dir, clone)
}

/// A project under git, with one commit, and a clone of it elsewhere.
fn project_and_clone() -> (Project, tempfile::TempDir, PathBuf) {
    let project = Project::new();
    project.write("README.md", "the project\n");
    git(project.root(), &["init", "-q"]);
    git(project.root(), &["add", "."]);
    git(project.root(), &["commit", "-q", "-m", "start"]);
    let (dir, clone) = clone_of(project.root());
    (project, dir, clone)
}

/// The fingerprint a TLS hub wrote to its project's `.mcc/hub.json`.
fn fingerprint(root: &Path) -> String {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(root.join(".mcc/hub.json")).unwrap()).unwrap();
    file["tlsFingerprint"].as_str().expect("a TLS hub writes its fingerprint").to_owned()
}

#[test]
fn a_clone_joined_at_two_addresses_keeps_both_and_its_workers_reach_the_one_that_serves() {
    let (project, _dir, clone) = project_and_clone();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[])]);
    let token = project.read(".mcc/token");
    let list = format!("{},{}", closed_address(), hub.url);
    let joined = Mcc::new(&clone).args(["join", &list, "--token", token.trim()]).run();
    assert_eq!(joined.code, 0, "{joined:?}");
    assert!(joined.stdout.contains(&format!("{} answered", hub.url)), "{joined:?}");
    let remote: Value =
        serde_json::from_str(&std::fs::read_to_string(clone.join(".mcc/remote.json")).unwrap()).unwrap();
    assert_eq!(remote["url"], list, "both addresses, in order: {remote}");
    let next = Mcc::new(&clone).args(["worker", "next", "--as", "w", "--wait", "1s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.contains("task a"), "{next:?}");
}

#[test]
fn a_headless_workers_command_is_given_every_hub_address_the_serving_one_first() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[])]);
    let closed = closed_address();
    let run = project
        .mcc()
        .args(["worker", "run", "--as", "bot", "--hub", &format!("{closed},{}", hub.url)])
        .args(["--", "sh", "-c", "printf %s \"$MCC_HUB\" > hubs.txt"])
        .run();
    assert_eq!(run.code, 4, "the one task done, all work is: {run:?}");
    assert!(run.stdout.contains("accepted a"), "{run:?}");
    assert_eq!(project.read("hubs.txt"), format!("{},{closed}", hub.url));
}

#[test]
fn a_clone_joined_at_two_tls_hubs_pins_each_by_its_own_fingerprint_and_reaches_the_second_when_the_first_stops() {
    let (project, _dir, clone) = project_and_clone();
    let first = Hub::start(project.root(), &["--tls-self-signed"]);
    // The second hub, on a checkout of its own with a certificate of its own, takes the same token.
    let (_other_dir, other) = clone_of(project.root());
    let token = project.read(".mcc/token");
    std::fs::create_dir_all(other.join(".mcc")).unwrap();
    std::fs::write(other.join(".mcc/token"), &token).unwrap();
    let second = Hub::start(&other, &["--tls-self-signed"]);
    let (pin_first, pin_second) = (fingerprint(project.root()), fingerprint(&other));
    assert_ne!(pin_first, pin_second);
    std::fs::write(other.join("more.json"), json!([{"id": "b", "description": "at the second hub"}]).to_string())
        .unwrap();
    let added = Mcc::new(&other).args(["tasks", "add", "more.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");

    let list = format!("{},{}", first.url, second.url);
    let join =
        |pins: &str| Mcc::new(&clone).args(["join", &list, "--token", token.trim(), "--fingerprint", pins]).run();
    // The pins in the wrong order: the first hub is not the one its pin names.
    let swapped = join(&format!("{pin_second},{pin_first}"));
    assert_eq!(swapped.code, 1, "{swapped:?}");
    assert!(swapped.stderr.contains(&format!("not the pinned {pin_second}")), "{swapped:?}");
    assert!(!clone.join(".mcc/remote.json").exists());

    let joined = join(&format!("{pin_first}, {pin_second}"));
    assert_eq!(joined.code, 0, "{joined:?}");
    let remote: Value =
        serde_json::from_str(&std::fs::read_to_string(clone.join(".mcc/remote.json")).unwrap()).unwrap();
    assert_eq!(remote["tlsFingerprint"], format!("{pin_first},{pin_second}"), "{remote}");

    first.terminate();
    let next = Mcc::new(&clone).args(["worker", "next", "--as", "far-1", "--wait", "1s"]).run();
    assert_eq!(next.code, 0, "the second hub, checked against its own pin: {next:?}");
    assert!(next.stdout.contains("task b"), "{next:?}");
    drop(second);
}

/// An address that takes connections into the kernel's backlog and never
/// answers, as a stopped (SIGSTOP) hub does; it counts the connections.
fn silent_address() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let taken = Arc::new(AtomicUsize::new(0));
    let counted = taken.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            counted.fetch_add(1, Ordering::SeqCst);
            // Kept open and unanswered: the client's deadline is what ends it.
            held.push(stream);
        }
    });
    (url, taken)
}

#[test]
fn a_headless_worker_pays_for_a_silent_first_address_once_and_begins_every_later_turn_where_it_was_served() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, (1..=3).map(|i| old_task(&format!("t{i}"), &[], &[])).collect());
    let (silent, taken) = silent_address();
    let run = project
        .mcc()
        .args(["--timeout", "2s", "worker", "run", "--as", "bot", "--hub", &format!("{silent},{}", hub.url)])
        .args(["--", "true"])
        .run();
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(run.stdout.matches("accepted t").count(), 3, "{run:?}");
    assert_eq!(taken.load(Ordering::SeqCst), 1, "only the first call tried the silent address: {run:?}");
}

#[test]
fn status_names_the_address_that_answered_not_the_whole_list() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let closed = closed_address();
    let run = project.mcc().args(["status", "--hub", &format!("{closed},{}", hub.url)]).run();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&hub.url) && !run.stdout.contains(&closed), "{run:?}");
}

/// `mcc hub --port PORT --dir ROOT EXTRA...` once it listens, or what it
/// said when it exited instead (a project whose lease another hub holds).
fn try_hub(root: &Path, port: u16, extra: &[&str]) -> Result<Hub, String> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(crate::support::mcc_bin())
        .args(["hub", "--port", &port.to_string(), "--dir"])
        .arg(root)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mcc hub");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(url) = line.split("listening on ").nth(1) {
            let url = url.split_whitespace().next().unwrap_or_default().to_owned();
            let log = Arc::new(std::sync::Mutex::new(said));
            let sink = log.clone();
            // The rest of its log, read so the hub never blocks on a full pipe.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().unwrap().push(l)));
            return Ok(Hub { child, url, port, root: root.to_owned(), log });
        }
        said.push(line);
    }
    let _ = child.wait();
    Err(said.join("\n"))
}

#[test]
fn a_worker_mid_task_reports_done_across_a_failover_and_the_hub_that_took_over_accepts_it() {
    let store = crate::support::postgres::url();
    let name = crate::support::postgres::project_name("worker mid task across a failover");
    let on_store = ["--store", store.as_str(), "--project", name.as_str()];
    let (first_dir, second_dir, worker_dir) = (Project::new(), Project::new(), Project::new());
    let free_port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let first = try_hub(first_dir.root(), free_port(), &on_store).expect("the first hub serves");
    add(&first, vec![old_task("a", &[], &[])]);
    let second_port = free_port();
    let list = format!("{},ws://127.0.0.1:{second_port}", first.url);

    // The worker is in no project folder: only the list leads it to a hub.
    let next = worker_dir.mcc().env("MCC_HUB", &list).args(["worker", "next", "--as", "w", "--wait", "1s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.contains("task a"), "{next:?}");

    first.kill9();
    // Reported while no hub serves: the worker goes round the list until one does.
    let done = Command::new(crate::support::mcc_bin())
        .current_dir(worker_dir.root())
        .env("MCC_HUB", &list)
        .env("MCC_FAILOVER_WAIT", "60s")
        .env("MCC_WAIT", "1s")
        .args(["worker", "done", "a", "--as", "w", "--attempt", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mcc worker done");
    // The killed hub's lease runs out before another may take the project.
    let mut second = None;
    crate::support::eventually("a second hub takes the project over", || {
        second = try_hub(second_dir.root(), second_port, &on_store).ok();
        second.is_some()
    });
    let second = second.unwrap();
    let done = done.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&done.stdout), String::from_utf8_lossy(&done.stderr));
    assert!(stdout.starts_with("accepted a."), "the grant was in the store: {stdout}{stderr}");
    let shown = second.connect().ask(json!({"type": "show_task", "taskId": "a"}));
    assert_eq!(shown["task"]["state"], "accepted", "{shown}");
}
