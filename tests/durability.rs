//! Kill the hub at any moment: nothing acknowledged is lost or duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, old_task};

/// Work through tasks with `next`/`done` until the hub goes away or all is done.
/// Records every acknowledged acceptance and every grant.
fn work(url: &str, name: &str, accepted: &Mutex<Vec<String>>, grants: &Mutex<Vec<(String, u64)>>) {
    let Ok((socket, _)) = tungstenite::connect(url) else { return };
    drop(socket);
    let mut ws = Ws::connect(url);
    let mut answer = ws.ask(json!({"type":"next","worker":name,"waitMs":2000}));
    loop {
        let offer = match answer["type"].as_str() {
            Some("offer") => answer["offer"].clone(),
            Some("verdict") => {
                if answer["accepted"] == true {
                    accepted.lock().unwrap().push(answer["taskId"].as_str().unwrap().to_owned());
                }
                answer["next"].clone()
            }
            _ => return,
        };
        if offer["type"] != "task" {
            return;
        }
        let id = offer["task"]["id"].as_str().unwrap().to_owned();
        let attempt = offer["attempt"].as_u64().unwrap();
        grants.lock().unwrap().push((id.clone(), attempt));
        ws.send(json!({"type":"done","worker":name,"taskId":id,"attempt":attempt,"waitMs":2000}));
        match ws.recv_within(std::time::Duration::from_secs(10)) {
            Some(next) => answer = next,
            None => return,
        }
    }
}

fn snapshot(hub: &Hub) -> Value {
    hub.connect().ask(json!({"type":"snapshot"}))["snapshot"].clone()
}

#[test]
fn kill_9_in_the_middle_of_a_run_loses_nothing_acknowledged() {
    let project = Project::new();
    let total = 300;
    let hub = Hub::start(project.root(), &["--lease", "2s"]);
    let ids: Vec<String> = (0..total).map(|i| format!("t{i:03}")).collect();
    let mut coord = hub.connect();
    coord.register_coordinator();
    for chunk in ids.chunks(100) {
        let tasks: Vec<Value> = chunk.iter().map(|id| old_task(id, &[], &[])).collect();
        assert_eq!(coord.ask(json!({"type":"create_tasks","tasks":tasks}))["count"], 100);
    }
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|k| {
            let (url, a, g) = (hub.url.clone(), accepted.clone(), grants.clone());
            std::thread::spawn(move || work(&url, &format!("w{k}"), &a, &g))
        })
        .collect();
    // Kill once a good part of the work is acknowledged.
    crate::support::eventually("a third of the tasks accepted", || accepted.lock().unwrap().len() >= total / 3);
    let root = hub.root.clone();
    hub.kill9();
    for w in workers {
        w.join().unwrap();
    }
    let before: BTreeSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(before.len() < total, "the kill came mid-run");

    let hub = Hub::start(&root, &["--lease", "2s"]);
    let after = snapshot(&hub);
    let states: BTreeMap<String, String> = after["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["state"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(states.len(), total, "every task is still there");
    for id in &before {
        assert_eq!(states[id], "accepted", "{id} was acknowledged accepted before the kill");
    }
    // Drain the rest with fresh workers. Tasks the killed workers held come
    // back only when their leases end (they keep the time they had left), so
    // a worker told "nothing yet" is not the end: go on until the run is finished.
    let drain_until = std::time::Instant::now() + 3 * crate::support::DEADLINE;
    while snapshot(&hub)["finished"] != true && std::time::Instant::now() < drain_until {
        let workers: Vec<_> = (0..4)
            .map(|k| {
                let (url, a, g) = (hub.url.clone(), accepted.clone(), grants.clone());
                std::thread::spawn(move || work(&url, &format!("v{k}"), &a, &g))
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    }
    let done = snapshot(&hub);
    assert_eq!(done["counts"]["accepted"], total, "{}", done["counts"]);
    assert_eq!(done["finished"], true);
    // The total queue check: each task accepted exactly once, nothing unexpected,
    // and every task granted more than once shows a later attempt for it.
    let accepted = accepted.lock().unwrap().clone();
    let unique: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(unique.len(), accepted.len(), "no task acknowledged accepted twice");
    // A verdict lost with the killed hub is not acknowledged; everything acknowledged is a known task.
    assert!(unique.iter().all(|id| ids.contains(id)), "nothing unexpected");
    assert!(unique.len() >= total - 8, "only the few in flight at the kill lack an answer: {}", unique.len());
    let mut per_task: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, attempt) in grants.lock().unwrap().iter() {
        per_task.entry(id.clone()).or_default().push(*attempt);
    }
    for (id, attempts) in per_task {
        let distinct: BTreeSet<u64> = attempts.iter().copied().collect();
        assert_eq!(distinct.len(), attempts.len(), "{id}: the same attempt was granted twice: {attempts:?}");
    }
}

#[test]
fn after_a_restart_leases_keep_their_remaining_time_and_events_are_intact() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[])]}));
    let offer = ws.ask(json!({"type":"next","worker":"w"}));
    assert_eq!(offer["offer"]["task"]["id"], "a");
    let left_before = snapshot(&hub)["tasks"][0]["leaseLeftMs"].as_u64().unwrap();
    let root = hub.root.clone();
    hub.kill9();

    let hub = Hub::start(&root, &[]);
    let snap = snapshot(&hub);
    let a = &snap["tasks"][0];
    assert_eq!(
        (a["state"].as_str(), a["holder"].as_str(), a["attempt"].as_u64()),
        (Some("assigned"), Some("w"), Some(1))
    );
    let left_after = a["leaseLeftMs"].as_u64().unwrap();
    // The lease resumes with what it had left when last written (a little more than when read).
    assert!(left_after.abs_diff(left_before) < 60_000, "{left_before} -> {left_after}");
    // The same worker gets its task back after the restart.
    let again = hub.connect().ask(json!({"type":"next","worker":"w"}));
    assert_eq!(again["offer"]["held"], true, "{again}");
    let db = rusqlite::Connection::open(root.join(".mcc/state.db")).unwrap();
    let kinds: Vec<String> = db
        .prepare("SELECT kind FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kinds, ["created", "created", "worker_joined", "assigned"]);
}
