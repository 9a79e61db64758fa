//! "Nothing yet" says why, and a waiting worker is handed work the moment
//! something it could take frees up (issue 10's event-driven offers, issue
//! 11's reasons).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually, old_task};

fn add(hub: &Hub, tasks: Vec<Value>) {
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

fn next(ws: &mut Ws, worker: &str) -> Value {
    ws.ask(json!({"type": "next", "worker": worker, "waitMs": 0}))["offer"].clone()
}

#[test]
fn nothing_yet_names_the_file_and_who_holds_it_and_the_waiter_gets_the_task_once_it_frees() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("lane-1", &["lane.md"], &[]), old_task("lane-2", &["./lane.md"], &[])]);
    let took = project.mcc().args(["worker", "next", "--as", "m"]).run();
    assert!(took.stdout.contains("task lane-1"), "{took:?}");

    let probe = project.mcc().args(["worker", "next", "--as", "probe", "--wait", "0s"]).run();
    assert_eq!(probe.code, 3, "{probe:?}");
    assert!(probe.stdout.contains("1 ready task writes lane.md"), "{}", probe.stdout);
    assert!(probe.stdout.contains("lane-1 (held by m)"), "{}", probe.stdout);
    assert!(probe.stdout.contains("mcc worker next --as probe"), "{}", probe.stdout);
    let offer = next(&mut hub.connect(), "probe");
    assert_eq!(offer["reason"]["kind"], "reservations", "{offer}");
    assert_eq!(offer["reason"]["files"], json!(["lane.md"]), "{offer}");
    assert_eq!(offer["reason"]["workers"], json!(["m"]), "{offer}");

    // A worker waits; `m` leaving frees lane.md and the waiter gets lane-1 at once.
    let mut waiter = hub.connect();
    waiter.send(json!({"type": "next", "worker": "w", "waitMs": 120_000}));
    eventually("w waits", || {
        let snap = hub.connect().ask(json!({"type": "snapshot"}));
        snap["snapshot"]["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|x| x["name"] == "w" && x["waiting"] == true))
    });
    // `mcc status` says the same of the waiting worker.
    let status = project.mcc().args(["status"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    let line = status.stdout.lines().find(|l| l.starts_with("worker w:")).unwrap_or_default().to_owned();
    assert!(line.contains("waiting for work: ") && line.contains("lane-1 (held by m)"), "{}", status.stdout);
    let left = project.mcc().args(["worker", "leave", "--as", "m"]).run();
    assert_eq!(left.code, 0, "{left:?}");
    let got = waiter.recv_within(Duration::from_mins(1)).expect("the waiter is answered when the file frees");
    assert_eq!(got["offer"]["type"], "task", "{got}");
    assert_eq!(got["offer"]["task"]["id"], "lane-1", "{got}");
}

#[test]
fn nothing_yet_names_the_dependency_the_answer_and_the_work_in_progress() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("gate", &[], &[]), old_task("after", &[], &["gate"])]);
    let mut ws = hub.connect();
    assert_eq!(next(&mut ws, "g")["task"]["id"], "gate");
    let deps = project.mcc().args(["worker", "next", "--as", "probe", "--wait", "0s"]).run();
    assert_eq!(deps.code, 3, "{deps:?}");
    assert!(deps.stdout.contains("the oldest, after, waits on gate (assigned, held by g)"), "{}", deps.stdout);
    assert_eq!(next(&mut ws, "probe")["reason"]["kind"], "dependencies");

    let attempt = next(&mut ws, "g")["attempt"].clone();
    let ack =
        ws.ask(json!({"type": "block", "worker": "g", "taskId": "gate", "attempt": attempt, "question": "which?"}));
    assert_eq!(ack["type"], "ack", "{ack}");
    let answer = next(&mut ws, "probe");
    assert_eq!(answer["reason"]["kind"], "answer", "{answer}");
    assert_eq!(answer["reason"]["tasks"], json!(["gate"]), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("mcc answer"), "{answer}");

    // A wait that ends with nothing says why too (the deadline index ends it).
    let waited = ws.ask(json!({"type": "next", "worker": "probe", "waitMs": 200}));
    assert_eq!(waited["offer"]["reason"]["kind"], "answer", "{waited}");
}

#[test]
fn with_nothing_left_nothing_yet_says_the_rest_is_in_progress() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("only", &["a.md"], &[])]);
    let mut ws = hub.connect();
    assert_eq!(next(&mut ws, "a")["task"]["id"], "only");
    let busy = next(&mut ws, "b");
    assert_eq!(busy["reason"]["kind"], "in_progress", "{busy}");
    assert!(busy["message"].as_str().unwrap().contains("only (a)"), "{busy}");
}

#[test]
fn an_assign_error_that_reads_like_a_load_failure_is_not_taken_for_one() {
    let project = Project::new();
    let workflow = project.write(
        "wf.lua",
        "return { name = \"bad\", phases = { { name = \"p\", tasks = { { id = \"t\", description = \"d\" } }, assign = function(w, ready) error(\"the model did not load: out of memory\") end } } }\n",
    );
    let hub = Hub::start(project.root(), &["--workflow", workflow.to_str().unwrap()]);
    let offer = next(&mut hub.connect(), "w1");
    assert_eq!(offer["reason"]["kind"], "workflow", "{offer}");
    let message = offer["message"].as_str().unwrap_or_default();
    assert!(message.contains("the workflow's `assign` gave none to w1"), "the workflow did load: {offer}");
    assert!(!message.contains("until the workflow loads"), "{offer}");
}
