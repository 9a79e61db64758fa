//! Progress pushed, not polled: `subscribe` gives a summary and then what
//! each committed batch changed; `tasks_page` pages the store; `mcc status
//! --watch` redraws on the changes the hub pushes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hub, Project, mcc_bin, old_task};

/// Deltas until one satisfies `check`; panics with what came if none does.
fn delta_until(ws: &mut crate::support::Ws, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let (delta, _) = ws.until("delta");
        if check(&delta["delta"]) {
            return delta["delta"].clone();
        }
        seen.push(delta);
    }
    panic!("no delta with {what}; got {seen:?}")
}

#[test]
fn a_subscriber_gets_a_summary_then_each_task_and_worker_change_as_it_is_committed() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    // Reading needs no token.
    let mut watcher = hub.connect_anonymous();
    let summary = watcher.ask(json!({"type":"subscribe"}));
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["summary"]["counts"]["ready"], 0, "{summary}");
    assert_eq!(summary["summary"]["hubRunning"], true, "{summary}");

    let mut engineer = hub.connect();
    let added = engineer.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &["a"])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let delta = delta_until(&mut watcher, "two new tasks", |d| d["counts"]["ready"] == 1);
    assert_eq!(delta["counts"]["waiting"], 1, "{delta}");
    let ids: Vec<&str> = delta["tasks"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["a", "b"], "{delta}");

    let next = project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    let delta = delta_until(&mut watcher, "a assigned to w1", |d| d["counts"]["assigned"] == 1);
    let a = delta["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "a").expect("a changed");
    assert_eq!(
        (a["state"].as_str(), a["holder"].as_str(), a["attempt"].as_u64()),
        (Some("assigned"), Some("w1"), Some(1))
    );
    assert!(a["leaseLeftMs"].as_u64().is_some(), "{delta}");
    let w1 = delta["workers"].as_array().unwrap().iter().find(|w| w["name"] == "w1").expect("w1 in the delta");
    assert_eq!(w1["holding"], "a", "{delta}");
    assert!(delta["events"].as_array().unwrap().iter().any(|e| e["kind"] == "assigned" && e["task"] == "a"), "{delta}");

    project.write("a.md", "done");
    let done = project.mcc().args(["worker", "done", "a", "--as", "w1", "--deliverable", "a.md", "--wait", "0s"]).run();
    assert_eq!(done.code, 0, "{done:?}");
    let delta = delta_until(&mut watcher, "a accepted", |d| d["counts"]["accepted"] == 1);
    let kinds: Vec<&str> = delta["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["submitted", "accepted", "assigned"], "done hands b on in the same batch: {delta}");
    let w1 = delta["workers"].as_array().unwrap().iter().find(|w| w["name"] == "w1").expect("w1 in the delta");
    assert_eq!((w1["holding"].clone(), w1["accepted"].clone()), (json!("b"), json!(1)), "{delta}");
}

#[test]
fn tasks_are_paged_by_state_in_creation_order() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let tasks: Vec<Value> =
        (1..=5).map(|i| old_task(&format!("t{i}"), &[], if i == 5 { &["t1"] } else { &[] })).collect();
    ws.ask(json!({"type":"add_tasks","tasks":tasks}));
    let page = ws.ask(json!({"type":"tasks_page","state":"ready","limit":2}));
    assert_eq!(page["type"], "tasks_page", "{page}");
    let ids = |p: &Value| -> Vec<String> {
        p["page"]["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&page), ["t1", "t2"]);
    assert_eq!(page["page"]["total"], 4);
    assert_eq!(page["page"]["nextAfter"], "t2");
    let last = ws.ask(json!({"type":"tasks_page","state":"ready","limit":2,"after":"t2"}));
    assert_eq!(ids(&last), ["t3", "t4"]);
    assert_eq!(last["page"]["nextAfter"], Value::Null, "the last page: {last}");
    let all = ws.ask(json!({"type":"tasks_page"}));
    assert_eq!(ids(&all), ["t1", "t2", "t3", "t4", "t5"]);
    let bad = ws.ask(json!({"type":"tasks_page","state":"done"}));
    assert!(bad["error"].as_str().unwrap().contains("`done` is not one of waiting, ready"), "{bad}");
    let unknown = ws.ask(json!({"type":"tasks_page","after":"zz"}));
    assert!(unknown["error"].as_str().unwrap().contains("task `zz`"), "{unknown}");
}

#[test]
fn status_watch_redraws_when_the_hub_pushes_a_change() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut watch = Command::new(mcc_bin())
        .args(["status", "--watch"])
        .current_dir(project.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcc status --watch");
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("`mcc status --watch` never printed {text:?}; printed {seen:?}");
    };
    wait_for("tasks: none");
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[])]}));
    wait_for("tasks: 1 ready");
    let next = project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    wait_for("worker w1: on a");
    let _ = watch.kill();
    let _ = watch.wait();
}
