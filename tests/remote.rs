//! A worker on another machine: the hub serves TLS, a `git clone` of the
//! project joins it with `mcc join` and the certificate's fingerprint, and
//! worker commands there reach the hub as they do locally. Cuts in the
//! middle of `next` and `done` (a TCP proxy that drops the hub's answer,
//! then the connection) lose nothing and apply nothing twice; a silent
//! connection is pinged; and a worker in a network namespace of its own
//! joins a hub on a non-loopback address.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::git;
use crate::support::netns::Netns;
use crate::support::tls::TestCa;
use crate::support::{DEADLINE, Hub, Mcc, Project, Run, eventually, mcc_bin};

/// A project under git, with one commit.
fn project_in_git() -> Project {
    let project = Project::new();
    project.write("README.md", "the project\n");
    git(project.root(), &["init", "-q"]);
    git(project.root(), &["add", "."]);
    git(project.root(), &["commit", "-q", "-m", "start"]);
    project
}

/// A `git clone` of the project in a folder of its own: the other machine's checkout.
fn clone_of(project: &Project) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clone = dir.path().join("clone");
    git(dir.path(), &["clone", "-q", &project.root().display().to_string(), "clone"]);
    std::fs::create_dir_all(clone.join("src/deep")).unwrap();
    (dir, clone)
}

fn hub_file(project: &Project) -> Value {
    serde_json::from_str(&project.read(".mcc/hub.json")).expect("hub.json is JSON")
}

fn fingerprint(project: &Project) -> String {
    hub_file(project)["tlsFingerprint"].as_str().expect("a TLS hub writes its fingerprint").to_owned()
}

fn join(clone: &Path, url: &str, project: &Project, fingerprint: &str) -> Run {
    let token = project.read(".mcc/token");
    Mcc::new(clone).args(["join", url, "--token", token.trim(), "--fingerprint", fingerprint]).run()
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// `mcc status --json` of the hub's project.
fn status(project: &Project) -> Value {
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

fn task<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or(&Value::Null)
}

/// The `mcc worker done ...` line a `next` printed.
fn done_command(next: &Run) -> Vec<String> {
    let line =
        next.stdout.lines().find_map(|l| l.strip_prefix("when done: mcc ")).unwrap_or_else(|| panic!("{next:?}"));
    shlex::split(line).expect("a shell line")
}

#[test]
fn a_worker_in_a_git_clone_joins_a_tls_hub_by_its_fingerprint_and_drains_twenty_tasks() {
    let project = project_in_git();
    let hub = Hub::start(project.root(), &["--tls-self-signed"]);
    assert!(hub.url.starts_with("wss://127.0.0.1:"), "{}", hub.url);
    let pin = fingerprint(&project);
    assert!(
        hub.log_text().contains(&format!("TLS certificate {pin}")),
        "the hub prints its fingerprint: {}",
        hub.log_text()
    );
    assert_eq!(mode_of(&project.path(".mcc/tls/key.pem")), 0o600);

    let tasks: Vec<Value> =
        (1..=20).map(|i| json!({"id": format!("t{i}"), "description": format!("do {i}")})).collect();
    project.write("tasks.json", &serde_json::to_string(&tasks).unwrap());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");

    let (_dir, clone) = clone_of(&project);
    let joined = join(&clone, &hub.url, &project, &pin);
    assert_eq!(joined.code, 0, "{joined:?}");
    assert!(joined.stdout.contains(&pin), "{joined:?}");
    assert_eq!(mode_of(&clone.join(".mcc/remote-token")), 0o600);
    let remote: Value =
        serde_json::from_str(&std::fs::read_to_string(clone.join(".mcc/remote.json")).unwrap()).unwrap();
    assert_eq!(
        (remote["url"].as_str(), remote["tlsFingerprint"].as_str()),
        (Some(hub.url.as_str()), Some(pin.as_str()))
    );

    // From a folder deep in the clone, as a chat working there would.
    let deep = clone.join("src/deep");
    let mut done = 0;
    loop {
        let next = Mcc::new(&deep).args(["worker", "next", "--as", "far"]).run();
        if next.code == 4 {
            break;
        }
        assert_eq!(next.code, 0, "{next:?}");
        let finished = Mcc::new(&deep).args(done_command(&next)).run();
        // 4 after the last one: all work is done.
        assert!(matches!(finished.code, 0 | 4), "{finished:?}");
        assert!(finished.stdout.starts_with("accepted t"), "{finished:?}");
        done += 1;
        assert!(done <= 20, "more grants than tasks");
    }
    assert_eq!(done, 20);
    assert_eq!(status(&project)["counts"]["accepted"], 20);
    // The rules go where the clone's agents read them, as in the project.
    let rules = Mcc::new(&clone).args(["rules", "install"]).run();
    assert_eq!(rules.code, 0, "{rules:?}");
    assert!(std::fs::read_to_string(clone.join("AGENTS.md")).unwrap().contains("mcc worker next"));
    // What a joined clone prints is what the project prints.
    let here = project.mcc().args(["worker", "next", "--as", "near"]).run();
    let there = Mcc::new(&deep).args(["worker", "next", "--as", "near"]).run();
    assert_eq!((there.code, there.stdout.as_str()), (here.code, here.stdout.as_str()));
}

#[test]
fn a_wrong_fingerprint_is_refused_naming_the_expected_and_the_presented_one() {
    let project = project_in_git();
    let hub = Hub::start(project.root(), &["--tls-self-signed"]);
    let pin = fingerprint(&project);
    let (_dir, clone) = clone_of(&project);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let refused = join(&clone, &hub.url, &project, &wrong);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains(&wrong) && refused.stderr.contains(&pin), "names both: {refused:?}");
    assert!(!clone.join(".mcc/remote.json").exists(), "nothing is written for a hub that is not the one pinned");

    // The certificate made again (its rotation): a joined clone refuses it until it joins again.
    assert_eq!(join(&clone, &hub.url, &project, &pin).code, 0);
    let port = hub.port.to_string();
    assert_eq!(hub.terminate(), Some(0));
    std::fs::remove_dir_all(project.path(".mcc/tls")).unwrap();
    let root = project.root().display().to_string();
    let _again = Restarted(spawn_in(project.root(), &["hub", "--tls-self-signed", "--port", &port, "--dir", &root]));
    eventually("the hub runs again with a new certificate", || {
        project.path(".mcc/hub.json").exists()
            && hub_file(&project)["tlsFingerprint"].as_str().is_some_and(|f| f != pin)
    });
    let rotated = fingerprint(&project);
    let next = Mcc::new(&clone).args(["worker", "next", "--as", "far"]).run();
    assert_eq!(next.code, 1, "{next:?}");
    assert!(next.stderr.contains(&pin) && next.stderr.contains(&rotated), "{next:?}");
}

/// A hub started by hand, stopped with the test.
struct Restarted(std::process::Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_projects_own_clients_pin_the_fingerprint_hub_json_names() {
    let project = project_in_git();
    let _hub = Hub::start(project.root(), &["--tls-self-signed"]);
    let pin = fingerprint(&project);
    assert_eq!(status(&project)["hubRunning"], true);
    // Another certificate answering at that address is not this hub.
    let mut file = hub_file(&project);
    let other = format!("sha256:{}", "cd".repeat(32));
    file["tlsFingerprint"] = json!(other);
    project.write(".mcc/hub.json", &file.to_string());
    let refused = project.mcc().args(["worker", "next", "--as", "near"]).run();
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains(&other) && refused.stderr.contains(&pin), "{refused:?}");
}

#[test]
fn a_hub_bound_beyond_loopback_without_tls_refuses_to_start_naming_the_flags() {
    let project = Project::new();
    let root = project.root().display().to_string();
    let run = project.mcc().args(["hub", "--port", "0", "--bind", "0.0.0.0", "--dir", &root]).run();
    assert_eq!(run.code, 1, "{run:?}");
    for flag in ["--tls-self-signed", "--tls-cert", "--tls-key", "--behind-tls-proxy"] {
        assert!(run.stderr.contains(flag), "names {flag}: {run:?}");
    }
    assert!(!project.path(".mcc/hub.json").exists(), "it never listened");
}

/// A TCP proxy between a client and the hub that can drop the hub's answers
/// on the floor and then cut every connection: a link that fails after the
/// request reached the hub and before its answer came back.
struct Cutter {
    port: u16,
    withhold: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Armed: the client's bytes the proxy forwards before it cuts that connection, once.
    budget: Arc<Mutex<Option<usize>>>,
}

impl Cutter {
    /// Listen on 127.0.0.1 at the port of a hub listening on `::1` only:
    /// the `Host` a client sends then names the hub's port, as the hub's
    /// loopback check wants.
    fn start(hub_port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", hub_port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let withhold = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let budget: Arc<Mutex<Option<usize>>> = Arc::default();
        let (hold, sockets, left) = (withhold.clone(), open.clone(), budget.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(hub) = TcpStream::connect(("::1", hub_port)) else { continue };
                sockets.lock().unwrap().extend([client.try_clone().unwrap(), hub.try_clone().unwrap()]);
                let (client_in, hub_out) = (client.try_clone().unwrap(), hub.try_clone().unwrap());
                let left = left.clone();
                std::thread::spawn(move || pipe_until(client_in, hub_out, &left));
                let hold = hold.clone();
                std::thread::spawn(move || pipe(hub, client, Some(hold)));
            }
        });
        Self { port, withhold, open, budget }
    }

    /// The connection that carries the client's next `bytes` is cut there; later ones are forwarded whole.
    fn cut_after(&self, bytes: usize) {
        *self.budget.lock().unwrap() = Some(bytes);
    }

    /// Whether an armed cut happened.
    fn has_cut(&self) -> bool {
        self.budget.lock().unwrap().is_none()
    }

    /// From now on the hub's bytes are read and dropped.
    fn withhold_answers(&self) {
        self.withhold.store(true, Ordering::SeqCst);
    }

    /// Cut every connection through the proxy; new ones are forwarded whole.
    fn cut(&self) {
        for socket in self.open.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.withhold.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, withhold: Option<Arc<AtomicBool>>) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if withhold.as_ref().is_some_and(|w| w.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The client's side of [`pipe`]: when `budget` is armed and runs out, both ends are shut.
fn pipe_until(mut from: TcpStream, mut to: TcpStream, budget: &Mutex<Option<usize>>) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut left = budget.lock().unwrap();
            match *left {
                Some(bytes) if n >= bytes => {
                    *left = None;
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                Some(bytes) => *left = Some(bytes - n),
                None => {}
            }
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A hub with TLS, a clone joined to it through a [`Cutter`].
fn joined_through_a_cutter() -> (Project, Hub, Cutter, tempfile::TempDir, PathBuf) {
    let project = project_in_git();
    let hub = Hub::start(project.root(), &["--bind", "::1", "--tls-self-signed"]);
    let cutter = Cutter::start(hub.port);
    let (dir, clone) = clone_of(&project);
    let url = format!("wss://127.0.0.1:{}", cutter.port);
    let joined = join(&clone, &url, &project, &fingerprint(&project));
    assert_eq!(joined.code, 0, "{joined:?}");
    (project, hub, cutter, dir, clone)
}

fn spawn_in(cwd: &Path, args: &[&str]) -> std::process::Child {
    Command::new(mcc_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("MCC_HUB")
        .env_remove("MCC_WORKER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcc")
}

#[test]
fn a_connection_cut_while_next_waits_over_tls_loses_no_grant_and_grants_nothing_twice() {
    let (project, _hub, cutter, _dir, clone) = joined_through_a_cutter();
    // Someone holds the first task, so the remote worker's `next` waits.
    let add =
        |id: &str| assert_eq!(project.mcc().args(["tasks", "add", "--id", id, "--description", id]).run().code, 0);
    add("first");
    assert_eq!(project.mcc().args(["worker", "next", "--as", "near"]).run().code, 0);
    let waiting = spawn_in(&clone, &["worker", "next", "--as", "far", "--wait", "60s"]);
    eventually("the remote worker waits at the hub", || {
        status(&project)["workers"].as_array().unwrap().iter().any(|w| w["name"] == "far" && w["waiting"] == true)
    });
    cutter.withhold_answers();
    add("second");
    eventually("the hub granted the second task to the remote worker", || {
        let status = status(&project);
        let second = task(&status, "second");
        second["state"] == "assigned" && second["holder"] == "far"
    });
    // The grant is on its way and the link goes.
    cutter.cut();
    let out = waiting.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed} {}", String::from_utf8_lossy(&out.stderr));
    // The replayed `next` is answered as a second `next` is: with the grant the worker holds.
    assert!(printed.starts_with("task second (") && printed.contains("attempt 1,"), "the same grant: {printed}");
    let status = status(&project);
    assert_eq!(
        (task(&status, "second")["attempt"].as_u64(), task(&status, "second")["holder"].as_str()),
        (Some(1), Some("far"))
    );
}

#[test]
fn a_connection_cut_before_dones_verdict_arrives_over_tls_is_answered_by_the_replay_and_judged_once() {
    let (project, _hub, cutter, _dir, clone) = joined_through_a_cutter();
    // The validation records each run, then holds until the test lets it finish.
    let validation = "echo ran >> validations.log; while [ ! -f release ]; do sleep 0.02; done";
    let added =
        project.mcc().args(["tasks", "add", "--id", "judged", "--description", "d", "--validation", validation]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let next = Mcc::new(&clone).args(["worker", "next", "--as", "far"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    let command = done_command(&next);
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let done = spawn_in(&clone, &args);
    eventually("the hub runs the validation", || project.path("validations.log").exists());
    cutter.withhold_answers();
    project.write("release", "");
    eventually("the hub accepted the task", || task(&status(&project), "judged")["state"] == "accepted");
    cutter.cut();
    let out = done.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    // 4: accepted, and that was the last task.
    assert_eq!(out.status.code(), Some(4), "{printed} {}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.starts_with("accepted judged"), "{printed}");
    assert_eq!(project.read("validations.log"), "ran\n", "judged once");
    assert_eq!(task(&status(&project), "judged")["attempt"], 1);
}

#[test]
fn a_hub_pings_a_connection_that_waits_in_silence() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--keepalive", "100ms"]);
    let token = project.read(".mcc/token");
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(hub.url.as_str()).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    let (mut socket, _) = tungstenite::connect(request).expect("connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_mut() {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    let mut pings = 0;
    while pings < 3 {
        match socket.read().expect("the connection stays open") {
            tungstenite::Message::Ping(_) => pings += 1,
            tungstenite::Message::Text(text) => assert!(text.contains("connected"), "only the greeting: {text}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Pinged, answered (tungstenite pongs by itself), and still served.
    socket.send(tungstenite::Message::text(json!({"type":"status"}).to_string())).unwrap();
    loop {
        if let tungstenite::Message::Text(text) = socket.read().unwrap() {
            assert!(text.contains("status_response"), "{text}");
            break;
        }
    }
}

#[test]
fn a_worker_in_its_own_network_namespace_joins_a_tls_hub_beyond_loopback_and_completes_a_task() {
    let namespace = match Netns::create("rt") {
        Ok(namespace) => namespace,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let project = project_in_git();
    let hub = Hub::start(project.root(), &["--bind", &namespace.host_ip, "--tls-self-signed"]);
    assert!(hub.url.starts_with(&format!("wss://{}:", namespace.host_ip)), "{}", hub.url);
    let added = project.mcc().args(["tasks", "add", "--id", "far-away", "--description", "d"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let (_dir, clone) = clone_of(&project);
    let token = project.read(".mcc/token");
    let inside = |args: &[&str]| -> Run {
        let out = namespace.command(mcc_bin()).args(args).current_dir(&clone).stdin(Stdio::null()).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    // Inside the namespace loopback is its own: only the link reaches the hub.
    let pin = fingerprint(&project);
    let joined = inside(&["join", &hub.url, "--token", token.trim(), "--fingerprint", &pin]);
    assert_eq!(joined.code, 0, "{joined:?}");
    let next = inside(&["worker", "next", "--as", "far"]);
    assert_eq!(next.code, 0, "{next:?}");
    let command = done_command(&next);
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let done = inside(&args);
    assert_eq!((done.code, done.stdout.lines().next()), (4, Some("accepted far-away.")), "{done:?}");
    assert_eq!(task(&status(&project), "far-away")["state"], "accepted");
}

#[test]
fn a_hub_with_a_certificate_of_its_own_is_joined_with_the_ca_that_signed_it_and_no_other() {
    let project = project_in_git();
    let ours = TestCa::make(project.root(), "ours");
    let theirs = TestCa::make(project.root(), "theirs");
    let (cert, key) = (ours.cert.display().to_string(), ours.key.display().to_string());
    let hub = Hub::start(project.root(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(hub.log_text().contains(&format!("TLS certificate {}", fingerprint(&project))), "{}", hub.log_text());
    let (_dir, clone) = clone_of(&project);
    let token = project.read(".mcc/token");
    let join_with = |ca: &Path| {
        let ca = ca.display().to_string();
        Mcc::new(&clone).args(["join", &hub.url, "--token", token.trim(), "--ca", &ca]).run()
    };
    let refused = join_with(&theirs.ca);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("does not trust"), "{refused:?}");
    assert!(!clone.join(".mcc/remote.json").exists());
    let joined = join_with(&ours.ca);
    assert_eq!(joined.code, 0, "{joined:?}");
    assert_eq!(project.mcc().args(["tasks", "add", "--id", "signed", "--description", "d"]).run().code, 0);
    let next = Mcc::new(&clone).args(["worker", "next", "--as", "far"]).run();
    assert!(next.code == 0 && next.stdout.starts_with("task signed ("), "{next:?}");
}

#[test]
fn a_connection_cut_between_the_parts_of_an_upload_is_run_again_by_itself_and_applied_once() {
    const SIZE: usize = 1_500_000;
    let (project, _hub, cutter, _dir, clone) = joined_through_a_cutter();
    let big = json!({
        "id": "big",
        "description": "write out/big.bin",
        "context": {"targetFiles": [], "outputFiles": ["out/big.bin"], "requirements": []},
        "acceptance": {
            "criteria": ["whole"],
            "validation": format!("echo ran >> validations.log; test \"$(wc -c < out/big.bin)\" -eq {SIZE}"),
        },
        "dependencies": [],
    });
    project.write("tasks.json", &serde_json::to_string(&[big]).unwrap());
    assert_eq!(project.mcc().args(["tasks", "add", "tasks.json"]).run().code, 0);
    let next = Mcc::new(&clone).args(["worker", "next", "--as", "far"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    // Three parts of 512 KiB (about 700 KB each as base64): the link goes in the second.
    let bytes: Vec<u8> = (0..SIZE).map(|i| u8::try_from(i % 251).unwrap()).collect();
    std::fs::create_dir_all(clone.join("out")).unwrap();
    std::fs::write(clone.join("out/big.bin"), &bytes).unwrap();
    cutter.cut_after(1_000_000);
    let done = Mcc::new(&clone).args(done_command(&next)).run();
    assert!(cutter.has_cut(), "the upload was cut");
    // 4: accepted, and that was the last task.
    assert_eq!(done.code, 4, "{done:?}");
    assert!(done.stdout.starts_with("accepted big"), "{done:?}");
    assert_eq!(std::fs::read(project.path("out/big.bin")).unwrap(), bytes, "the hub has the clone's file whole");
    assert_eq!(project.read("validations.log"), "ran\n", "judged once");
    assert_eq!(task(&status(&project), "big")["attempt"], 1);
}

/// `git rev-parse HEAD` in `cwd`.
fn head_of(cwd: &Path) -> String {
    let out = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(cwd).output().expect("run git");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_clone_behind_the_hubs_commit_is_told_in_one_line_at_join_and_still_joins() {
    let project = project_in_git();
    let hub = Hub::start(project.root(), &["--tls-self-signed"]);
    let pin = fingerprint(&project);
    let (_dir, clone) = clone_of(&project);
    let same = join(&clone, &hub.url, &project, &pin);
    assert_eq!(same.code, 0, "{same:?}");
    assert!(!same.stdout.contains("note:"), "the same commit says nothing: {same:?}");

    project.write("README.md", "the project, moved on\n");
    git(project.root(), &["commit", "-q", "-am", "moved on"]);
    let behind = join(&clone, &hub.url, &project, &pin);
    assert_eq!(behind.code, 0, "not an error: {behind:?}");
    let notes: Vec<&str> = behind.stdout.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{behind:?}");
    let (here, there) = (head_of(&clone), head_of(project.root()));
    assert!(
        notes[0].contains(&format!("clone is at commit {}", &here[..12]))
            && notes[0].contains(&format!("hub's checkout at {}", &there[..12])),
        "{behind:?}"
    );
    assert!(clone.join(".mcc/remote.json").exists());
}
