//! The hub speaks the old protocol to an old client, unchanged.

use serde_json::json;

use crate::support::{Hub, Project, old_task};

#[test]
fn an_old_coordinator_and_worker_go_through_one_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = hub.connect();
    coord.register_coordinator();
    let created = coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &["out/a.md"], &[])]}));
    assert_eq!(created, json!({"type":"tasks_created","count":1,"queued":1}));

    let mut worker = hub.connect();
    let reg = worker.ask(json!({"type":"register","role":"worker","workerId":"worker-A"}));
    assert_eq!(reg, json!({"type":"registered","role":"worker","workerId":"worker-A"}));
    let assigned = worker.recv();
    assert_eq!(assigned["type"], "task_assigned");
    assert_eq!(assigned["task"]["id"], "task-001");
    assert_eq!(assigned["task"]["status"], "assigned");
    assert_eq!(assigned["task"]["context"]["requirements"], json!(["be brief"]));
    assert_eq!(coord.recv(), json!({"type":"worker_registered","workerId":"worker-A"}));
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"task-001","workerId":"worker-A"}));

    let report = json!({"taskId":"task-001","workerId":"worker-A","status":"completed","deliverables":["out/a.md"],"contextEfficiencyScore":5,"completedAt":"2025-01-26T00:00:00Z"});
    let ack = worker.ask(json!({"type":"task_complete","taskId":"task-001","report":report}));
    assert_eq!(ack, json!({"type":"task_complete_ack","taskId":"task-001"}));
    assert_eq!(coord.recv(), json!({"type":"task_complete","taskId":"task-001","workerId":"worker-A","report":report}));
    assert_eq!(worker.recv()["type"], "no_tasks");
}

#[test]
fn every_old_protocol_error_is_answered_and_the_connection_stays_usable() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.send_text("{not json");
    assert_eq!(ws.recv(), json!({"type":"error","error":"Invalid JSON message"}));
    let unknown = ws.ask(json!({"type":"teleport"}));
    assert!(unknown["error"].as_str().unwrap().contains("Unknown message type: teleport"), "{unknown}");
    let no_role = ws.ask(json!({"type":"register"}));
    // The original server's sentences verbatim; mcc's guidance is in `hint`.
    assert_eq!(no_role["error"], "Invalid role. Must be \"coordinator\" or \"worker\"", "{no_role}");
    assert!(no_role["hint"].as_str().unwrap().contains("\"role\":\"coordinator\""), "{no_role}");
    let bad_role = ws.ask(json!({"type":"register","role":"boss"}));
    assert_eq!(bad_role["error"], no_role["error"], "{bad_role}");
    let no_id = ws.ask(json!({"type":"register","role":"worker"}));
    assert_eq!(no_id["error"], "Worker must provide workerId", "{no_id}");
    let create = ws.ask(json!({"type":"create_tasks","tasks":[old_task("t", &[], &[])]}));
    assert_eq!(create["error"], "Only coordinator can create tasks", "{create}");
    let request = ws.ask(json!({"type":"request_task"}));
    assert!(request["error"].as_str().unwrap().contains("Only workers"), "{request}");
    let complete = ws.ask(json!({"type":"task_complete","taskId":"t"}));
    assert!(complete["error"].as_str().unwrap().contains("Only workers can complete tasks"), "{complete}");
    // Status works for anyone, registered or not.
    let status = ws.ask(json!({"type":"status"}));
    assert_eq!(
        status,
        json!({"type":"status_response","coordinator":"disconnected","workers":[],"queueSize":0,"activeTasks":0})
    );
    let registered = ws.ask(json!({"type":"register","role":"coordinator","projectId":"site"}));
    assert_eq!(registered, json!({"type":"registered","role":"coordinator","projectId":"site"}));
    let empty = ws.ask(json!({"type":"create_tasks","tasks":[]}));
    assert!(empty["error"].as_str().unwrap().contains("non-empty"), "{empty}");
    let missing = ws.ask(json!({"type":"create_tasks"}));
    assert_eq!(missing["type"], "error", "{missing}");
    let bad_task =
        ws.ask(json!({"type":"create_tasks","tasks":[{"id":"x","description":"d","context":{"outputFiles":"nope"}}]}));
    assert!(bad_task["error"].as_str().unwrap().contains("context.outputFiles"), "{bad_task}");
    let mut other = hub.connect();
    let default = other.ask(json!({"type":"register","role":"coordinator"}));
    assert_eq!(default["projectId"], "default");
}

#[test]
fn idle_workers_get_tasks_as_soon_as_they_are_created_and_status_shows_them() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut worker = hub.connect();
    worker.ask(json!({"type":"register","role":"worker","workerId":"w1"}));
    assert_eq!(worker.recv()["type"], "no_tasks");
    let mut coord = hub.connect();
    coord.register_coordinator();
    coord.send(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[]), old_task("t2", &[], &[])]}));
    let (created, _) = coord.until("tasks_created");
    assert_eq!(
        created,
        json!({"type":"tasks_created","count":2,"queued":2}),
        "the queue before idle workers take from it"
    );
    let pushed = worker.recv();
    assert_eq!(pushed["task"]["id"], "t1", "{pushed}");
    // After `tasks_created`, as the original sent them.
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"t1","workerId":"w1"}));
    let status = coord.ask(json!({"type":"status"}));
    assert_eq!(
        status,
        json!({"type":"status_response","coordinator":"connected","workers":[{"workerId":"w1","busy":true,"currentTask":"t1"}],"queueSize":1,"activeTasks":1})
    );
    let request = worker.ask(json!({"type":"request_task"}));
    assert_eq!(request["task"]["id"], "t1", "asking again returns what it holds: {request}");
}

#[test]
fn a_worker_that_reconnects_under_its_name_gets_its_own_task_back() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = hub.connect();
    coord.register_coordinator();
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[]), old_task("t2", &[], &[])]}));
    let mut first = hub.connect();
    first.ask(json!({"type":"register","role":"worker","workerId":"w"}));
    assert_eq!(first.recv()["task"]["id"], "t1");
    first.close();
    let mut second = hub.connect();
    second.ask(json!({"type":"register","role":"worker","workerId":"w"}));
    let again = second.recv();
    assert_eq!(again["task"]["id"], "t1", "{again}");
    let ack = second.ask(json!({"type":"task_complete","taskId":"t1"}));
    assert_eq!(ack["type"], "task_complete_ack");
    assert_eq!(second.recv()["task"]["id"], "t2");
}

#[test]
fn a_vanished_worker_loses_its_task_after_the_lease_and_its_late_report_is_refused() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--lease", "1s"]);
    let mut coord = hub.connect();
    coord.register_coordinator();
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[])]}));
    let mut ghost = hub.connect();
    let offer = ghost.ask(json!({"type":"next","worker":"ghost"}));
    assert_eq!(offer["offer"]["attempt"], 1);
    ghost.close();
    // Another worker waits; the task comes to it when the ghost's lease runs out.
    let mut heir = hub.connect();
    let got = heir.ask(json!({"type":"next","worker":"heir","waitMs":15000}));
    assert_eq!(got["offer"]["task"]["id"], "t1", "{got}");
    assert_eq!(got["offer"]["attempt"], 2);
    let mut late = hub.connect();
    let refused = late.ask(json!({"type":"done","worker":"ghost","taskId":"t1","attempt":1}));
    assert_eq!(refused["code"], "not_holder", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("lease ran out"), "{refused}");
    let mut old = hub.connect();
    old.ask(json!({"type":"register","role":"worker","workerId":"ghost"}));
    let _ = old.recv();
    let old_style = old.ask(json!({"type":"task_complete","taskId":"t1"}));
    assert_eq!(old_style["type"], "error", "{old_style}");
    let verdict = heir.ask(json!({"type":"done","worker":"heir","taskId":"t1","attempt":2}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
}

#[test]
fn sigterm_tells_every_client_and_exits_cleanly() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut a = hub.connect();
    let mut b = hub.connect();
    a.register_coordinator();
    assert_eq!(hub.terminate(), Some(0));
    assert_eq!(a.recv()["type"], "server_shutdown");
    assert_eq!(b.recv()["type"], "server_shutdown");
    assert!(!project.path(".mcc/hub.json").exists(), "the discovery file is removed");
}

#[test]
fn web_pages_and_foreign_hosts_are_refused_at_the_handshake() {
    use tungstenite::client::IntoClientRequest;
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let attempt = |headers: &[(&'static str, &str)]| {
        let mut request = hub.url.as_str().into_client_request().unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(*k, v.parse().unwrap());
        }
        match tungstenite::connect(request) {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(attempt(&[]), 101);
    assert_eq!(attempt(&[("origin", "https://evil.example")]), 403);
    assert_eq!(attempt(&[("host", "evil.example:80")]), 403);
    assert_eq!(attempt(&[("origin", &format!("http://localhost:{}", hub.port))]), 101);
    let local = format!("ws://localhost:{}", hub.port);
    assert!(tungstenite::connect(local.as_str()).is_ok(), "ws://localhost works whichever address it resolves to");
}

#[test]
fn a_hub_beyond_loopback_wants_its_token() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--bind", "0.0.0.0", "--behind-tls-proxy"]);
    let token = project.read(".mcc/token");
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(project.path(".mcc/token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let url = format!("ws://127.0.0.1:{}", hub.port);
    assert!(matches!(tungstenite::connect(url.as_str()), Err(tungstenite::Error::Http(r)) if r.status() == 403));
    // The client finds the token in .mcc/ by itself.
    let run = project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s"]).run();
    assert_eq!(run.code, 3, "{run:?}");
}

#[test]
fn oversized_frames_are_refused_and_the_hub_goes_on() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut big = hub.connect();
    // The hub may close the socket while the frame is still being written.
    let sent = big.try_send_text(&format!("{{\"type\":\"status\",\"pad\":\"{}\"}}", "x".repeat(2 << 20)));
    if sent.is_ok() {
        // Told why, then closed.
        let refusal = big.recv_within(crate::support::DEADLINE).expect("the refusal");
        assert!(refusal["error"].as_str().is_some_and(|e| e.contains("--max-frame-bytes")), "{refusal}");
        assert!(big.recv_within(crate::support::DEADLINE).is_none(), "the oversized connection is closed");
    }
    let mut fine = hub.connect();
    assert_eq!(fine.ask(json!({"type":"status"}))["type"], "status_response");
}

#[test]
fn two_projects_run_side_by_side_and_one_project_has_one_hub() {
    let (one, two) = (Project::new(), Project::new());
    let a = Hub::start(one.root(), &[]);
    let b = Hub::start(two.root(), &[]);
    assert_ne!(a.port, b.port);
    let second = one.mcc().args(["hub", "--port", "0", "--dir", one.root().to_str().unwrap()]).run();
    assert_eq!(second.code, 1);
    assert!(second.stderr.contains("another hub already serves"), "{}", second.stderr);
}

#[test]
fn a_newer_command_of_a_worker_ends_its_older_wait() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut cut_short = hub.connect();
    cut_short.send(json!({"type":"next","worker":"w","waitMs":120_000}));
    crate::support::eventually("the first command waits", || {
        hub.connect().ask(json!({"type":"snapshot"}))["snapshot"]["workers"][0]["waiting"] == true
    });
    let mut again = hub.connect();
    let answer = again.ask(json!({"type":"next","worker":"w","waitMs":0}));
    assert_eq!(answer["offer"]["type"], "nothing_yet");
    let old =
        cut_short.recv_within(std::time::Duration::from_mins(1)).expect("the old wait is answered, not left hanging");
    assert_eq!(old["offer"]["type"], "nothing_yet", "{old}");
}

/// Diagnostics are `tracing` events printed as the bare lines they always
/// were; `MCC_LOG` picks the level, so `warn` leaves out the address line.
#[test]
fn the_hub_prints_where_it_listens_as_a_bare_line_and_mcc_log_warn_leaves_it_out() {
    use std::process::{Command, Stdio};
    let stderr_of = |log: Option<&str>| {
        let project = Project::new();
        let mut command = Command::new(crate::support::mcc_bin());
        command.args(["hub", "--port", "0", "--dir"]).arg(project.root()).stdin(Stdio::null()).stderr(Stdio::piped());
        command.env_remove("MCC_LOG").env_remove("RUST_LOG");
        if let Some(level) = log {
            command.env("MCC_LOG", level);
        }
        let child = command.spawn().unwrap();
        crate::support::eventually("the hub writes its address file", || project.path(".mcc/hub.json").exists());
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        let root = std::fs::canonicalize(project.root()).unwrap();
        (String::from_utf8(out.stderr).unwrap(), root)
    };
    let (printed, root) = stderr_of(None);
    let line = printed.lines().next().unwrap_or_default();
    assert!(line.starts_with("mcc hub: listening on ws://127.0.0.1:"), "{printed:?}");
    assert!(line.ends_with(&format!(" for {}", root.display())), "no level, time or module around it: {printed:?}");
    let (quiet, _) = stderr_of(Some("warn"));
    assert_eq!(quiet, "", "MCC_LOG=warn prints no info line");
}

/// A hub started in the test's own process, as a program embedding mcc would.
fn in_process(root: &std::path::Path, runtime: &tokio::runtime::Runtime) -> mcc::RunningHub {
    let options = mcc::HubOptions {
        root: root.to_owned(),
        port: 0,
        bind: None,
        settings: mcc::Settings::default(),
        loader: Some(mcc::load_workflow),
        workflow: None,
        quiet: true,
        limits: mcc::HubLimits::default(),
        timing: mcc::Timing::default(),
        security: mcc::HubSecurity::default(),
        store: mcc::StoreChoice::default(),
    };
    runtime.block_on(mcc::start_hub(options)).expect("the hub starts in this process")
}

#[test]
fn a_hub_started_in_process_serves_the_real_client_and_keeps_a_grant_across_a_restart() {
    let project = Project::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = in_process(project.root(), &runtime);
    let added = project.mcc().args(["tasks", "add", "--id", "a", "--description", "write a"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let first = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert!(first.stdout.starts_with("task a (new, attempt 1"), "{first:?}");
    runtime.block_on(running.stop("the test stops it")).expect("a clean stop");

    let again = in_process(project.root(), &runtime);
    let held = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert!(held.stdout.starts_with("task a (you already hold it, attempt 1"), "{held:?}");
    runtime.block_on(again.stop("done")).expect("a clean stop");
}
