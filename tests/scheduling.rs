//! Dependencies and file reservations hold while many workers race.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, old_task};

#[derive(Debug, Clone)]
enum Step {
    Got(String),
    Accepted(String),
}

#[test]
fn racing_workers_never_break_dependencies_or_reservations() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    // Layers: each task of layer n depends on two of layer n-1; outputs collide on purpose.
    let mut tasks: Vec<Value> = Vec::new();
    for layer in 0..4 {
        for i in 0..8 {
            let deps: Vec<String> = if layer == 0 {
                vec![]
            } else {
                vec![format!("L{}-{}", layer - 1, i), format!("L{}-{}", layer - 1, (i + 1) % 8)]
            };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            let out = if i % 2 == 0 { format!("shared/{}", i % 4) } else { format!("own/{layer}-{i}") };
            tasks.push(old_task(&format!("L{layer}-{i}"), &[&out], &deps));
        }
    }
    let spec: Vec<Value> = tasks.clone();
    hub.connect().ask(json!({"type":"add_tasks","tasks":tasks}));
    let log = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..6)
        .map(|k| {
            let (url, log) = (hub.url.clone(), log.clone());
            std::thread::spawn(move || {
                let mut ws = Ws::connect(&url);
                let name = format!("r{k}");
                let mut answer = ws.ask(json!({"type":"next","worker":name,"waitMs":3000}));
                loop {
                    let offer =
                        if answer["type"] == "verdict" { answer["next"].clone() } else { answer["offer"].clone() };
                    if offer["type"] != "task" {
                        return;
                    }
                    let id = offer["task"]["id"].as_str().unwrap().to_owned();
                    log.lock().unwrap().push(Step::Got(id.clone()));
                    // Record the acceptance before the hub can hand out what it unblocks.
                    log.lock().unwrap().push(Step::Accepted(id.clone()));
                    answer = ws
                        .ask(json!({"type":"done","worker":name,"taskId":id,"attempt":offer["attempt"],"waitMs":3000}));
                    assert_eq!(answer["accepted"], true, "{answer}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let log = log.lock().unwrap().clone();
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    for step in &log {
        if let Step::Accepted(id) = step {
            accepted.insert(id.clone());
        }
    }
    assert_eq!(accepted.len(), 32, "all tasks done: {log:?}");
    // Dependencies: a task was handed out only after each dependency was reported done.
    let position = |wanted: &dyn Fn(&Step) -> bool| log.iter().position(wanted).unwrap();
    for t in &spec {
        let id = t["id"].as_str().unwrap();
        let got = position(&|s| matches!(s, Step::Got(g) if g == id));
        for dep in t["dependencies"].as_array().unwrap() {
            let dep = dep.as_str().unwrap();
            let done = position(&|s| matches!(s, Step::Accepted(a) if a == dep));
            assert!(done < got, "{id} was handed out before its dependency {dep} was done");
        }
    }
    // Reservations: the hub's event log never shows two overlapping tasks in flight.
    let db = rusqlite::Connection::open(project.path(".mcc/state.db")).unwrap();
    let events: Vec<(String, String)> = db
        .prepare("SELECT kind, task_id FROM events WHERE kind IN ('assigned','accepted') ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let output = |id: &str| {
        spec.iter().find(|t| t["id"] == id).unwrap()["context"]["outputFiles"][0].as_str().unwrap().to_owned()
    };
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    for (kind, id) in events {
        if kind == "assigned" {
            let out = output(&id);
            assert!(in_flight.iter().all(|o| *o != out), "{id} writes {out} while another task in flight does");
            in_flight.insert(out);
        } else {
            in_flight.remove(&output(&id));
        }
    }
}
