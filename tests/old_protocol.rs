//! Conformance of `mcc hub` to the original TypeScript coordination server
//! (github dfadler1984/cursor-rules, `src/coordination/server.ts` at 77483f7):
//! one test per message, per order of messages, per error text. An old
//! client compares these strings and waits for these messages in this order.
//! FINDINGS.md quotes the original line for each; a test marked `ignore`
//! documents a difference mcc still has.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{DEADLINE, Hub, Project, Ws, old_task};

/// A worker registered over the old protocol, with the message that followed
/// `registered` (`task_assigned` or `no_tasks`).
fn worker(hub: &Hub, name: &str) -> (Ws, Value) {
    let mut ws = hub.connect();
    let registered = ws.ask(json!({"type":"register","role":"worker","workerId":name}));
    assert_eq!(registered, json!({"type":"registered","role":"worker","workerId":name}));
    let first = ws.recv();
    (ws, first)
}

fn coordinator(hub: &Hub) -> Ws {
    let mut ws = hub.connect();
    ws.register_coordinator();
    ws
}

/// The `error` text of an error message, failing on anything else.
fn error_text(msg: &Value) -> &str {
    assert_eq!(msg["type"], "error", "{msg}");
    msg["error"].as_str().unwrap_or_else(|| panic!("no error text: {msg}"))
}

fn a_report(task: &str, worker: &str) -> Value {
    json!({"taskId":task,"workerId":worker,"status":"completed","deliverables":[],"contextEfficiencyScore":5,"completedAt":"2025-01-26T00:00:00Z"})
}

// --- connection and framing (server.ts:165-198, 226-256) ---

#[test]
fn connect_sends_connected_first_with_the_original_text() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut socket, _) = tungstenite::connect(hub.url.as_str()).unwrap();
    let first: Value = serde_json::from_str(socket.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(first["type"], "connected", "{first}");
    assert!(first["clientId"].as_str().is_some_and(|id| !id.is_empty()), "{first}");
    assert_eq!(first["message"], "Connected to coordination server", "{first}");
}

#[test]
fn every_connection_gets_its_own_client_id() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (a, b) = (hub.connect(), hub.connect());
    assert_ne!(a.client_id, b.client_id);
}

#[test]
fn invalid_json_says_invalid_json_message_and_the_connection_stays_open() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.send_text("{not json");
    assert_eq!(error_text(&ws.recv()), "Invalid JSON message");
    assert_eq!(ws.ask(json!({"type":"status"}))["type"], "status_response");
}

/// The original answers every frame of a socket in the order it came
/// (server.ts:178-189, one handler per frame). A frame that does not parse
/// must not overtake the answer to an earlier frame.
#[test]
fn answers_come_in_the_order_of_the_frames_even_for_bad_frames() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    for _ in 0..20 {
        ws.send(json!({"type":"status"}));
        ws.send_text("{not json");
    }
    for i in 0..20 {
        let first = ws.recv();
        assert_eq!(first["type"], "status_response", "frame pair {i}: {first}");
        assert_eq!(error_text(&ws.recv()), "Invalid JSON message", "frame pair {i}");
    }
}

#[test]
fn an_unknown_type_says_unknown_message_type_and_its_name() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    assert_eq!(error_text(&ws.ask(json!({"type":"teleport"}))), "Unknown message type: teleport");
    assert_eq!(ws.ask(json!({"type":"status"}))["type"], "status_response", "the connection stays open");
}

#[test]
fn a_message_without_type_says_unknown_message_type_undefined() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    assert_eq!(error_text(&ws.ask(json!({}))), "Unknown message type: undefined");
}

// --- register (server.ts:258-309) ---

#[test]
fn register_coordinator_echoes_project_id() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let reply = ws.ask(json!({"type":"register","role":"coordinator","projectId":"test-project"}));
    assert_eq!(reply, json!({"type":"registered","role":"coordinator","projectId":"test-project"}));
}

#[test]
fn register_coordinator_without_project_id_says_default() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let reply = ws.ask(json!({"type":"register","role":"coordinator"}));
    assert_eq!(reply, json!({"type":"registered","role":"coordinator","projectId":"default"}));
}

#[test]
fn register_with_an_unknown_role_says_invalid_role() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let reply = ws.ask(json!({"type":"register","role":"boss"}));
    assert_eq!(error_text(&reply), r#"Invalid role. Must be "coordinator" or "worker""#);
    let reply = ws.ask(json!({"type":"register","role":5}));
    assert_eq!(error_text(&reply), r#"Invalid role. Must be "coordinator" or "worker""#);
}

#[test]
fn register_without_a_role_says_invalid_role() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let reply = ws.ask(json!({"type":"register"}));
    assert_eq!(error_text(&reply), r#"Invalid role. Must be "coordinator" or "worker""#);
}

#[test]
fn register_as_worker_without_worker_id_says_worker_must_provide_worker_id() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let reply = ws.ask(json!({"type":"register","role":"worker"}));
    assert_eq!(error_text(&reply), "Worker must provide workerId");
    let reply = ws.ask(json!({"type":"register","role":"worker","workerId":""}));
    assert_eq!(error_text(&reply), "Worker must provide workerId");
}

#[test]
fn register_worker_then_worker_registered_to_the_coordinator_then_an_assignment() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    let created = coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    assert_eq!(created, json!({"type":"tasks_created","count":1,"queued":1}));
    let (_worker, first) = worker(&hub, "worker-A");
    assert_eq!(first["type"], "task_assigned", "{first}");
    assert_eq!(first["task"]["id"], "task-001");
    assert_eq!(coord.recv(), json!({"type":"worker_registered","workerId":"worker-A"}));
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"task-001","workerId":"worker-A"}));
}

#[test]
fn a_worker_registering_with_an_empty_queue_gets_no_tasks_with_the_original_text() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut ws, first) = worker(&hub, "worker-A");
    assert_eq!(first, json!({"type":"no_tasks","message":"No tasks available in queue"}));
    let again = ws.ask(json!({"type":"request_task"}));
    assert_eq!(again, json!({"type":"no_tasks","message":"No tasks available in queue"}));
}

#[test]
fn a_second_coordinator_replaces_the_first() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut first = coordinator(&hub);
    let mut second = coordinator(&hub);
    let _ = worker(&hub, "worker-A");
    assert_eq!(second.recv(), json!({"type":"worker_registered","workerId":"worker-A"}));
    // Anything sent to `first` about the worker would be queued before this answer.
    assert_eq!(first.ask(json!({"type":"status"}))["type"], "status_response");
}

// --- create_tasks (server.ts:311-355) ---

#[test]
fn create_tasks_answers_count_and_queued() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    let tasks = [old_task("task-001", &[], &[]), old_task("task-002", &[], &[])];
    assert_eq!(
        coord.ask(json!({"type":"create_tasks","tasks":tasks})),
        json!({"type":"tasks_created","count":2,"queued":2})
    );
}

#[test]
fn create_tasks_answers_tasks_created_before_any_assignment() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut idle, first) = worker(&hub, "worker-A");
    assert_eq!(first["type"], "no_tasks");
    // Registered after the worker: it hears of no earlier event.
    let mut coord = coordinator(&hub);
    coord.send(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let answer = coord.recv();
    assert_eq!(answer["type"], "tasks_created", "tasks_created comes first: {answer}");
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"task-001","workerId":"worker-A"}));
    assert_eq!(idle.recv()["task"]["id"], "task-001");
}

#[test]
fn tasks_created_counts_the_queue_before_idle_workers_take_from_it() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (_idle, first) = worker(&hub, "worker-A");
    assert_eq!(first["type"], "no_tasks");
    let mut coord = coordinator(&hub);
    coord.send(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[]), old_task("t2", &[], &[])]}));
    let (created, _) = coord.until("tasks_created");
    assert_eq!(created, json!({"type":"tasks_created","count":2,"queued":2}));
}

#[test]
fn tasks_created_queued_counts_tasks_of_earlier_batches_still_waiting() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    let first = coord.ask(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[]), old_task("t2", &[], &[])]}));
    assert_eq!(first, json!({"type":"tasks_created","count":2,"queued":2}));
    let second = coord.ask(json!({"type":"create_tasks","tasks":[old_task("t3", &[], &[])]}));
    assert_eq!(second, json!({"type":"tasks_created","count":1,"queued":3}));
}

#[test]
fn create_tasks_pushes_a_task_to_an_idle_worker_at_once() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut idle, first) = worker(&hub, "worker-A");
    assert_eq!(first["type"], "no_tasks");
    let mut coord = coordinator(&hub);
    coord.send(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let pushed = idle.recv();
    assert_eq!(pushed["type"], "task_assigned", "{pushed}");
    assert_eq!(pushed["task"]["id"], "task-001");
}

#[test]
fn create_tasks_tells_idle_workers_that_got_nothing_no_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut a, first_a) = worker(&hub, "worker-A");
    let (mut b, first_b) = worker(&hub, "worker-B");
    assert_eq!((first_a["type"].as_str(), first_b["type"].as_str()), (Some("no_tasks"), Some("no_tasks")));
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    // The first connected idle worker takes the task (server.ts:348-354), the other is told.
    assert_eq!(a.recv()["task"]["id"], "task-001");
    assert_eq!(b.recv(), json!({"type":"no_tasks","message":"No tasks available in queue"}));
}

#[test]
fn create_tasks_keeps_every_field_and_sets_status_assigned() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    let mut task = old_task("task-001", &["tmp/summary.md"], &[]);
    task["context"]["targetFiles"] = json!(["docs/README.md"]);
    task["context"]["requirements"] = json!(["100-200 words", "Include purpose"]);
    task["context"]["relevantRules"] = json!(["rules/x.mdc"]);
    task["acceptance"]["criteria"] = json!(["File exists", "Word count valid"]);
    task["priority"] = json!(7);
    coord.ask(json!({"type":"create_tasks","tasks":[task.clone()]}));
    let (_w, assigned) = worker(&hub, "worker-A");
    assert_eq!(assigned["type"], "task_assigned");
    let got = &assigned["task"];
    for key in ["id", "type", "description", "context", "acceptance", "priority", "createdAt", "dependencies"] {
        assert_eq!(got[key], task[key], "field {key}: {assigned}");
    }
    assert_eq!(got["status"], "assigned");
}

#[test]
fn create_tasks_from_a_non_coordinator_says_only_coordinator_can_create_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut anonymous = hub.connect();
    let reply = anonymous.ask(json!({"type":"create_tasks","tasks":[old_task("t", &[], &[])]}));
    assert_eq!(error_text(&reply), "Only coordinator can create tasks");
    let (mut w, _) = worker(&hub, "worker-A");
    assert_eq!(error_text(&w.ask(json!({"type":"create_tasks","tasks":[]}))), "Only coordinator can create tasks");
}

#[test]
fn role_is_checked_before_the_fields_of_create_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut anonymous = hub.connect();
    let reply = anonymous.ask(json!({"type":"create_tasks","tasks":"x"}));
    assert_eq!(error_text(&reply), "Only coordinator can create tasks");
}

#[test]
fn create_tasks_with_an_empty_array_says_tasks_must_be_a_non_empty_array() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    assert_eq!(error_text(&coord.ask(json!({"type":"create_tasks","tasks":[]}))), "tasks must be a non-empty array");
}

#[test]
fn create_tasks_without_tasks_or_with_a_non_array_says_tasks_must_be_a_non_empty_array() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    for bad in [
        json!({"type":"create_tasks"}),
        json!({"type":"create_tasks","tasks":"x"}),
        json!({"type":"create_tasks","tasks":{}}),
    ] {
        assert_eq!(error_text(&coord.ask(bad.clone())), "tasks must be a non-empty array", "{bad}");
    }
}

// --- request_task (server.ts:357-363, 429-497) ---

#[test]
fn request_task_with_an_empty_queue_gets_no_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut w, first) = worker(&hub, "worker-A");
    assert_eq!(first["type"], "no_tasks");
    assert_eq!(w.ask(json!({"type":"request_task"}))["type"], "no_tasks");
}

/// A deliberate difference: the original answers a busy worker with silence
/// (server.ts:446-449); mcc gives it the task it holds, as after a reconnect.
#[test]
fn request_task_by_a_busy_worker_gets_the_task_it_holds() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[]), old_task("t2", &[], &[])]}));
    let (mut w, first) = worker(&hub, "worker-A");
    assert_eq!(first["task"]["id"], "t1");
    let again = w.ask(json!({"type":"request_task"}));
    assert_eq!(again["type"], "task_assigned", "{again}");
    assert_eq!(again["task"]["id"], "t1");
}

#[test]
fn request_task_from_a_non_worker_says_only_workers_can_request_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut anonymous = hub.connect();
    assert_eq!(error_text(&anonymous.ask(json!({"type":"request_task"}))), "Only workers can request tasks");
    let mut coord = coordinator(&hub);
    assert_eq!(error_text(&coord.ask(json!({"type":"request_task"}))), "Only workers can request tasks");
}

// --- task_complete (server.ts:365-406) ---

#[test]
fn task_complete_acks_then_notifies_the_coordinator_then_offers_the_next_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[]), old_task("task-002", &[], &[])]}));
    let (mut w, first) = worker(&hub, "worker-A");
    assert_eq!(first["task"]["id"], "task-001");
    assert_eq!(coord.recv()["type"], "worker_registered");
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"task-001","workerId":"worker-A"}));
    let report = a_report("task-001", "worker-A");
    let ack = w.ask(json!({"type":"task_complete","taskId":"task-001","report":report}));
    assert_eq!(ack, json!({"type":"task_complete_ack","taskId":"task-001"}));
    let next = w.recv();
    assert_eq!(next["type"], "task_assigned", "{next}");
    assert_eq!(next["task"]["id"], "task-002");
    assert_eq!(coord.recv(), json!({"type":"task_complete","taskId":"task-001","workerId":"worker-A","report":report}));
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"task-002","workerId":"worker-A"}));
}

#[test]
fn task_complete_of_the_last_task_is_followed_by_no_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let (mut w, _) = worker(&hub, "worker-A");
    let ack = w.ask(json!({"type":"task_complete","taskId":"task-001","report":a_report("task-001", "worker-A")}));
    assert_eq!(ack["type"], "task_complete_ack");
    assert_eq!(w.recv(), json!({"type":"no_tasks","message":"No tasks available in queue"}));
}

#[test]
fn task_complete_without_a_report_notifies_the_coordinator_without_one() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let (mut w, _) = worker(&hub, "worker-A");
    assert_eq!(w.ask(json!({"type":"task_complete","taskId":"task-001"}))["type"], "task_complete_ack");
    let (notice, _) = coord.until("task_complete");
    assert_eq!(notice, json!({"type":"task_complete","taskId":"task-001","workerId":"worker-A"}));
}

/// The original forwards whatever `report` a worker sends (server.ts:374-396);
/// the message's `taskId` and the connection's worker are what count.
#[test]
fn task_complete_takes_any_report_the_worker_sends() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let (mut w, _) = worker(&hub, "worker-A");
    let report = json!({"notes":"summary written","contextEfficiencyScore":4.5});
    let ack = w.ask(json!({"type":"task_complete","taskId":"task-001","report":report}));
    assert_eq!(ack, json!({"type":"task_complete_ack","taskId":"task-001"}));
    let (notice, _) = coord.until("task_complete");
    assert_eq!(notice, json!({"type":"task_complete","taskId":"task-001","workerId":"worker-A","report":report}));
}

#[test]
fn task_complete_from_a_non_worker_says_only_workers_can_complete_tasks() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut anonymous = hub.connect();
    let reply = anonymous.ask(json!({"type":"task_complete","taskId":"t"}));
    assert_eq!(error_text(&reply), "Only workers can complete tasks");
}

#[test]
fn role_is_checked_before_the_fields_of_task_complete() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut anonymous = hub.connect();
    assert_eq!(error_text(&anonymous.ask(json!({"type":"task_complete"}))), "Only workers can complete tasks");
}

#[test]
fn task_complete_without_task_id_says_task_id_required() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (mut w, _) = worker(&hub, "worker-A");
    assert_eq!(error_text(&w.ask(json!({"type":"task_complete"}))), "taskId required");
    assert_eq!(error_text(&w.ask(json!({"type":"task_complete","taskId":""}))), "taskId required");
}

// --- status (server.ts:408-427) ---

#[test]
fn status_from_an_unregistered_client_on_an_empty_hub() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    assert_eq!(
        ws.ask(json!({"type":"status"})),
        json!({"type":"status_response","coordinator":"disconnected","workers":[],"queueSize":0,"activeTasks":0})
    );
}

#[test]
fn status_shows_a_busy_worker_its_task_and_the_queue() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("t1", &[], &[]), old_task("t2", &[], &[])]}));
    let (_w, first) = worker(&hub, "worker-A");
    assert_eq!(first["task"]["id"], "t1");
    let mut anyone = hub.connect();
    assert_eq!(
        anyone.ask(json!({"type":"status"})),
        json!({"type":"status_response","coordinator":"connected","workers":[{"workerId":"worker-A","busy":true,"currentTask":"t1"}],"queueSize":1,"activeTasks":1})
    );
}

#[test]
fn status_shows_an_idle_worker_as_not_busy() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (_w, _) = worker(&hub, "worker-A");
    let mut anyone = hub.connect();
    assert_eq!(
        anyone.ask(json!({"type":"status"})),
        json!({"type":"status_response","coordinator":"disconnected","workers":[{"workerId":"worker-A","busy":false,"currentTask":null}],"queueSize":0,"activeTasks":0})
    );
}

// --- report files (server.ts:65-123) ---

fn write_report(project: &Project, report: &Value) -> std::path::PathBuf {
    // Whole, by rename, as a careful old client would write it.
    let path = project.path("tmp/coordination/reports/task-001-report.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let temp = project.path("tmp/coordination/task-001-report.json.tmp");
    std::fs::write(&temp, report.to_string()).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    path
}

#[test]
fn a_report_file_is_announced_to_the_coordinator_as_report_detected() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let (_w, first) = worker(&hub, "worker-A");
    assert_eq!(first["task"]["id"], "task-001");
    let report = a_report("task-001", "worker-A");
    write_report(&project, &report);
    let (detected, _) = coord.until("report_detected");
    assert_eq!(detected["taskId"], "task-001");
    assert_eq!(detected["workerId"], "worker-A");
    assert_eq!(detected["report"], report);
    let shown = detected["reportPath"].as_str().unwrap();
    assert!(shown.ends_with("tmp/coordination/reports/task-001-report.json"), "{detected}");
}

#[test]
fn report_detected_names_the_report_file_by_its_absolute_path() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &[], &[])]}));
    let (_w, _) = worker(&hub, "worker-A");
    let written = write_report(&project, &a_report("task-001", "worker-A"));
    let (detected, _) = coord.until("report_detected");
    let shown = Path::new(detected["reportPath"].as_str().unwrap());
    assert!(shown.is_absolute(), "{detected}");
    assert_eq!(shown.canonicalize().ok(), written.canonicalize().ok(), "{detected}");
}

// --- shutdown (server.ts:125-159) ---

#[test]
fn shutdown_says_server_is_shutting_down_to_every_client() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = coordinator(&hub);
    let (mut w, _) = worker(&hub, "worker-A");
    assert_eq!(coord.recv()["type"], "worker_registered");
    assert_eq!(hub.terminate(), Some(0));
    let expected = json!({"type":"server_shutdown","message":"Server is shutting down"});
    assert_eq!(coord.recv(), expected);
    assert_eq!(w.recv(), expected);
    assert!(coord.recv_within(DEADLINE).is_none(), "the connection is closed after");
}

#[test]
fn status_lists_workers_in_the_order_they_connected() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (_b, _) = worker(&hub, "worker-B");
    let (_a, _) = worker(&hub, "worker-A");
    let status = hub.connect().ask(json!({"type":"status"}));
    let names: Vec<&str> =
        status["workers"].as_array().unwrap().iter().map(|w| w["workerId"].as_str().unwrap()).collect();
    assert_eq!(names, ["worker-B", "worker-A"], "{status}");
}

// --- the port (index.ts:9) ---

/// The original read its port from `COORDINATION_PORT`. Port 0 there (and no
/// `--port`) must give a port the system chose, not the default 3100.
#[test]
fn the_port_comes_from_coordination_port() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let project = Project::new();
    let mut child = Command::new(crate::support::mcc_bin())
        .args(["hub", "--dir"])
        .arg(project.root())
        .env("COORDINATION_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let url = BufReader::new(stderr).lines().map_while(Result::ok).find_map(|line| {
        line.split("listening on ").nth(1).map(|u| u.split_whitespace().next().unwrap_or_default().to_owned())
    });
    let _ = child.kill();
    let _ = child.wait();
    let url = url.expect("the hub says where it listens");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 3100, "{url}");
    assert_ne!(port, 0, "{url}");
}
