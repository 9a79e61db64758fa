//! Who gets in and what they may do (docs/security.md): the token on
//! loopback, the token's file, where the client sends it, and connection
//! slots that hostile clients cannot use up.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::json;

use crate::support::{DEADLINE, Hub, Project, Ws, old_task};

#[test]
fn without_the_token_a_local_process_cannot_run_commands_or_change_the_work() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut stranger = hub.connect_anonymous();
    stranger.register_coordinator();
    let mut checked = old_task("pwn", &[], &[]);
    checked["acceptance"]["validation"] = json!("touch pwned");
    let refused = stranger.ask(json!({"type":"create_tasks","tasks":[checked]}));
    assert_eq!(refused["type"], "error", "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("task `pwn`") && error.contains(".mcc/token"), "{error}");
    for msg in [
        json!({"type":"add_tasks","tasks":[old_task("b", &[], &[])]}),
        json!({"type":"load_workflow","path":"/tmp/anything.lua"}),
        json!({"type":"answer","taskId":"a","text":"yes"}),
        json!({"type":"cancel","taskId":"a"}),
        json!({"type":"retry","taskId":"a"}),
    ] {
        let reply = stranger.ask(msg.clone());
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains("needs the project's access token")),
            "{msg}: {reply}"
        );
    }
    // The old protocol still works on loopback without a token, for tasks that run nothing.
    let created = stranger.ask(json!({"type":"create_tasks","tasks":[old_task("a", &[], &[])]}));
    assert_eq!(created["type"], "tasks_created", "{created}");
    // `mcc` commands send the token by themselves.
    let cancelled = project.mcc().args(["tasks", "cancel", "a"]).run();
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert!(!project.path("pwned").exists());
}

#[test]
fn the_token_file_is_made_private_again_at_every_start() {
    use std::os::unix::fs::PermissionsExt;
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let token = project.read(".mcc/token");
    assert_eq!(token.trim().len(), 64);
    hub.terminate();
    std::fs::set_permissions(project.path(".mcc/token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let _hub = Hub::start(project.root(), &[]);
    let mode = std::fs::metadata(project.path(".mcc/token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(project.read(".mcc/token"), token, "the same token is kept");
}

/// One WebSocket handshake's request head, as a listener that is not the hub saw it.
fn capture_handshake() -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = stream.write_all(b"HTTP/1.1 500 Nope\r\ncontent-length: 0\r\n\r\n");
        String::from_utf8_lossy(&head).into_owned()
    });
    (url, seen)
}

#[test]
fn the_client_sends_the_token_only_to_the_hub_its_project_names() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    let token = project.read(".mcc/token");
    let (elsewhere, seen) = capture_handshake();
    let _ = project.mcc().args(["status", "--hub", &elsewhere]).run();
    let head = seen.join().unwrap();
    assert!(head.starts_with("GET "), "{head}");
    assert!(!head.contains(token.trim()) && !head.to_ascii_lowercase().contains("authorization"), "{head}");
    // MCC_HUB is the same: a foreign address gets no token.
    let (elsewhere, seen) = capture_handshake();
    let _ = project.mcc().args(["status"]).env("MCC_HUB", &elsewhere).run();
    assert!(!seen.join().unwrap().contains(token.trim()));
}

#[test]
fn hub_json_names_the_address_the_hub_really_listens_on() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; nothing to check");
        return;
    }
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--bind", "::1"]);
    let file: serde_json::Value = serde_json::from_str(&project.read(".mcc/hub.json")).unwrap();
    assert_eq!(file["url"], format!("ws://[::1]:{}", hub.port));
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn too_many_tasks_in_one_message_are_refused_with_the_flag_to_raise_it() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-tasks-per-message", "3"]);
    let tasks: Vec<_> = (0..4).map(|i| old_task(&format!("t{i}"), &[], &[])).collect();
    let reply = hub.connect().ask(json!({"type":"add_tasks","tasks":tasks}));
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(error.contains("4 tasks in one message") && error.contains("--max-tasks-per-message"), "{reply}");
    let fine = hub.connect().ask(json!({"type":"add_tasks","tasks":tasks[..3]}));
    assert_eq!(fine["type"], "tasks_added", "{fine}");
}

/// Open a TCP connection and send half a handshake, never the end.
fn half_handshake(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    stream
}

#[test]
fn unfinished_handshakes_do_not_lock_clients_out() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let _hanging: Vec<TcpStream> = (0..600).map(|_| half_handshake(hub.port)).collect();
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "{run:?}");
}

/// Raise this process's open-file limit to `wanted` (or to its hard limit); `false` when the
/// hard limit is lower, so the caller can skip rather than fail for the machine's sake.
fn allow_open_files(wanted: u64) -> bool {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|current| current >= wanted) {
        return true;
    }
    if limit.maximum.is_some_and(|maximum| maximum < wanted) {
        return false;
    }
    limit.current = Some(wanted);
    setrlimit(Resource::Nofile, limit).is_ok()
}

#[test]
fn two_thousand_idle_sockets_do_not_keep_a_token_holder_out() {
    // 2,000 sockets here plus the hub's; a hard limit below that is the machine's, not a bug.
    if !allow_open_files(4_096) {
        eprintln!("skipped: this process may not open 4,096 files (raise the hard RLIMIT_NOFILE)");
        return;
    }
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    // Connected and silent, from 20 threads at once, as a flood comes.
    let (connected, count) = std::sync::mpsc::channel();
    let _idle: Vec<TcpStream> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let connected = connected.clone();
                scope.spawn(move || {
                    (0..100)
                        .map(|_| {
                            let socket = TcpStream::connect(("127.0.0.1", hub.port)).expect("connect an idle socket");
                            let _ = connected.send(());
                            socket
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // Mid-flood, past the 1,024 unfinished handshakes the hub holds at once: once refused here.
        for _ in 0..1_100 {
            count.recv().expect("the flood goes on");
        }
        let mut ws = hub.connect();
        assert_eq!(ws.ask(json!({"type":"status"}))["type"], "status_response", "in during the flood");
        threads.into_iter().flat_map(|thread| thread.join().expect("a connecting thread")).collect()
    });
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "the token holder gets in: {run:?}");
    let mut ws = hub.connect();
    assert_eq!(ws.ask(json!({"type":"status"}))["type"], "status_response");
}

#[test]
fn beyond_loopback_the_token_is_checked_before_a_slot_is_taken() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--bind", "0.0.0.0", "--behind-tls-proxy", "--max-connections", "4"]);
    let url = format!("ws://127.0.0.1:{}", hub.port);
    // Refused clients, many more than there are slots, hold none of them.
    for _ in 0..12 {
        let refused = tungstenite::connect(url.as_str());
        assert!(matches!(refused, Err(tungstenite::Error::Http(r)) if r.status() == 403));
    }
    let _hanging: Vec<TcpStream> = (0..12).map(|_| half_handshake(hub.port)).collect();
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn idle_connections_without_the_token_cannot_take_every_slot_and_are_closed() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-connections", "12", "--idle-timeout", "2s"]);
    // An old-protocol coordinator waits for pushed messages: not idle, though it asks nothing.
    let mut coordinator = hub.connect();
    coordinator.register_coordinator();
    // Three quarters of the slots (9 of 12) may go to connections without the token;
    // the other 3 hold the coordinator, `mcc status` and a waiting worker below.
    let mut idle: Vec<Ws> = (0..9).map(|_| hub.connect_anonymous()).collect();
    let over = tungstenite::connect(hub.url.as_str());
    assert!(matches!(over, Err(tungstenite::Error::Http(r)) if r.status() == 503), "the share is used up");
    let run = project.mcc().args(["status", "--json"]).run();
    assert_eq!(run.code, 0, "the engineer still gets in: {run:?}");
    // A worker waiting for work is not idle; the others are closed.
    let mut waiting = hub.connect();
    waiting.send(json!({"type":"next","worker":"w","waitMs":60_000}));
    for ws in &mut idle {
        let bye = ws.recv_within(DEADLINE).expect("an idle connection is told why it is closed");
        assert_eq!(bye["code"], "idle", "{bye}");
        assert!(ws.recv_within(DEADLINE).is_none(), "then closed");
    }
    assert_eq!(coordinator.ask(json!({"type":"status"}))["type"], "status_response", "the coordinator stays");
    // The closed connections' slots come back (each a moment after its close frame).
    crate::support::eventually("a freed slot takes a new client", || tungstenite::connect(hub.url.as_str()).is_ok());
    hub.connect().ask(json!({"type":"add_tasks","tasks":[old_task("late", &[], &[])]}));
    let offer = waiting.recv_within(Duration::from_secs(30)).expect("the waiting worker is still connected");
    assert_eq!(offer["offer"]["task"]["id"], "late", "{offer}");
}

/// Processes of group `pgid` still alive (zombies are dead), from /proc.
fn live_members(pgid: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            fields.len() > 2 && fields[2].parse() == Ok(pgid) && fields[0] != "Z"
        })
        .count()
}

#[test]
fn stopping_the_hub_kills_a_running_validation_and_all_it_started() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut task = old_task("checked", &[], &[]);
    // A background job of its own; its pid is written before the group's.
    task["acceptance"]["validation"] = json!("sleep 600 & echo $! > background; echo $$ > pgid; sleep 600");
    let mut engineer = hub.connect();
    assert_eq!(engineer.ask(json!({"type":"add_tasks","tasks":[task]}))["type"], "tasks_added");
    let mut worker = hub.connect_anonymous();
    let offer = worker.ask(json!({"type":"next","worker":"w","waitMs":0}));
    assert_eq!(offer["offer"]["task"]["id"], "checked", "{offer}");
    worker.send(json!({"type":"done","worker":"w","taskId":"checked","attempt":1}));
    crate::support::eventually("the validation runs", || {
        std::fs::read_to_string(project.path("pgid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let pgid: i32 = project.read("pgid").trim().parse().unwrap();
    let background = project.read("background").trim().to_owned();
    assert!(live_members(pgid) > 0);
    assert!(alive(&background), "the background job runs");
    assert_eq!(hub.terminate(), Some(0));
    crate::support::eventually("the validation's whole group is gone", || live_members(pgid) == 0);
    assert!(!alive(&background), "the background job died with its group");
}

/// Whether process `pid` runs (a zombie has ended).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn a_store_holds_at_most_max_tasks_and_the_refusal_names_the_limit_and_the_flag() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-tasks", "3"]);
    let mut ws = hub.connect();
    let task = |id: &str| json!({"id": id, "description": id});
    let first = ws.ask(json!({"type":"add_tasks","tasks":[task("a"), task("b")]}));
    assert_eq!(first["type"], "tasks_added", "{first}");
    let past = ws.ask(json!({"type":"add_tasks","tasks":[task("c"), task("d")]}));
    assert_eq!(past["code"], "too_many_tasks", "{past}");
    let error = past["error"].as_str().unwrap();
    assert!(error.contains("limit of 3 tasks") && error.contains("--max-tasks"), "{error}");
    let last = ws.ask(json!({"type":"add_tasks","tasks":[task("c")]}));
    assert_eq!(last["type"], "tasks_added", "{last}");
    // Tasks a workflow adds count too.
    let wf = project.write(
        "wf.lua",
        "return { name = 'many', phases = { { name = 'p', split = function(ctx)\n  return { { id = 'x', description = 'x' } }\nend } } }",
    );
    let loaded = ws.ask(json!({"type":"load_workflow","path": wf.display().to_string()}));
    assert_eq!(loaded["type"], "ack", "{loaded}");
    let problems = ws.ask(json!({"type":"snapshot"}))["snapshot"]["problems"].to_string();
    assert!(problems.contains("wf.lua:1: in split of phase") && problems.contains("limit of 3 tasks"), "{problems}");
}

/// Live processes whose process group is `pgid`, read from /proc.
fn group_members(pgid: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields after the name: state, ppid, pgrp.
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid
        })
        .collect()
}

#[test]
fn a_hub_killed_with_sigkill_leaves_no_command_running_once_a_hub_starts_again() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let added = ws.ask(json!({"type":"add_tasks","tasks":[{"id":"v","description":"v",
        "acceptance":{"validation":"sleep 1000 & echo $! > child.pid; echo $$ > sh.pid; wait"}}]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let offer = ws.ask(json!({"type":"next","worker":"w1","waitMs":0}));
    assert_eq!(offer["type"], "offer", "{offer}");
    let o = &offer["offer"];
    ws.send(json!({"type":"done","worker":"w1","taskId":o["task"]["id"],"attempt":o["attempt"],"waitMs":0}));
    let read_pid = |name: &str| std::fs::read_to_string(project.path(name)).unwrap_or_default().trim().to_owned();
    crate::support::eventually("the validation runs", || {
        !read_pid("child.pid").is_empty() && !read_pid("sh.pid").is_empty()
    });
    // `sh` leads the validation's group: its pid is the group id.
    let (pgid, child) = (read_pid("sh.pid"), read_pid("child.pid"));
    assert!(project.path(&format!(".mcc/commands/{pgid}")).exists(), "the hub records the running group");
    hub.kill9();
    let members = group_members(&pgid);
    assert!(members.contains(&child), "SIGKILL of the hub alone leaves the group running: {members:?}");

    let _again = Hub::start(project.root(), &[]);
    crate::support::eventually("the group the killed hub left is gone", || group_members(&pgid).is_empty());
}
