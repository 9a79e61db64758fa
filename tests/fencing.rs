//! Issue 8: every report takes one fenced path. Each test here is the
//! regression test of one numbered item: replays, restarts and stale workers
//! change nothing they should not.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually, old_task};

fn snapshot(hub: &Hub) -> Value {
    hub.connect().ask(json!({"type":"snapshot"}))["snapshot"].clone()
}

fn task(hub: &Hub, id: &str) -> Value {
    hub.connect().ask(json!({"type":"show_task","taskId":id}))["task"].clone()
}

fn next(ws: &mut Ws, worker: &str) -> Value {
    let reply = ws.ask(json!({"type":"next","worker":worker,"waitMs":0}));
    assert_eq!(reply["type"], "offer", "{reply}");
    reply["offer"].clone()
}

fn add(hub: &Hub, tasks: Vec<Value>) {
    let reply = hub.connect().ask(json!({"type":"add_tasks","tasks":tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

fn with_validation(id: &str, script: &str) -> Value {
    let mut t = old_task(id, &[], &[]);
    t["acceptance"]["validation"] = json!(script);
    t
}

/// Wait until the report watcher has read everything written before `marker`:
/// a bad report file written last is moved aside after all the others.
fn watcher_caught_up(project: &Project, marker: &str) {
    project.write(&format!(".mcc/reports/{marker}.json"), "{\"taskId\": ");
    eventually("the watcher reads the marker", || {
        project.path(&format!(".mcc/reports/rejected/{marker}.json.error.txt")).exists()
    });
}

// Item 1.
#[test]
fn a_report_file_without_worker_or_attempt_is_refused_and_explained() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    let mut b = hub.connect();
    assert_eq!(next(&mut b, "b")["attempt"], 1);
    project.write(
        ".mcc/reports/t1-report.json",
        &json!({"taskId":"t1","status":"completed","deliverables":[]}).to_string(),
    );
    project.write(
        ".mcc/reports/t1-b-report.json",
        &json!({"taskId":"t1","workerId":"b","status":"completed","deliverables":[]}).to_string(),
    );
    eventually("both files are moved aside", || {
        project.path(".mcc/reports/rejected/t1-report.json.error.txt").exists()
            && project.path(".mcc/reports/rejected/t1-b-report.json.error.txt").exists()
    });
    assert!(project.read(".mcc/reports/rejected/t1-report.json.error.txt").contains("workerId"));
    assert!(project.read(".mcc/reports/rejected/t1-b-report.json.error.txt").contains("attempt"));
    assert_eq!(task(&hub, "t1")["state"], "assigned", "nothing was credited to b");
    let verdict = b.ask(json!({"type":"done","worker":"b","taskId":"t1","attempt":1,"waitMs":0}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
}

// Item 1: a refused file (stale attempt, wrong worker, unknown task) says why where the worker looks.
#[test]
fn a_refused_report_file_gets_an_error_file_naming_the_reason() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    let mut b = hub.connect();
    next(&mut b, "b");
    let file = |name: &str, v: Value| project.write(&format!(".mcc/reports/{name}.json"), &v.to_string());
    file("stale", json!({"taskId":"t1","workerId":"b","attempt":7,"status":"completed"}));
    file("other", json!({"taskId":"t1","workerId":"a","attempt":1,"status":"completed"}));
    file("unknown", json!({"taskId":"zz","workerId":"b","attempt":1,"status":"completed"}));
    let error = |name: &str| project.path(&format!(".mcc/reports/rejected/{name}.json.error.txt"));
    eventually("all three refused", || error("stale").exists() && error("other").exists() && error("unknown").exists());
    assert!(project.read(".mcc/reports/rejected/stale.json.error.txt").contains("stale attempt 7"));
    assert!(project.read(".mcc/reports/rejected/other.json.error.txt").contains("held by `b`"));
    assert!(project.read(".mcc/reports/rejected/unknown.json.error.txt").contains("unknown task"));
    assert_eq!(task(&hub, "t1")["state"], "assigned");
}

// Item 2.
#[test]
fn a_restart_applies_no_report_file_twice() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "2"]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    add(&hub, vec![old_task("t2", &[], &[])]);
    let mut w = hub.connect();
    let mut v = hub.connect();
    next(&mut w, "w");
    next(&mut v, "v");
    // v's file names its attempt; w's (as the old template had it) does not.
    project.write(
        ".mcc/reports/t2-report.json",
        &json!({"taskId":"t2","workerId":"v","attempt":1,"status":"failed","notes":"cannot"}).to_string(),
    );
    project.write(
        ".mcc/reports/t1-report.json",
        &json!({"taskId":"t1","workerId":"w","status":"failed","notes":"cannot"}).to_string(),
    );
    eventually("v's failure is applied", || task(&hub, "t2")["state"] == "ready");
    assert_eq!(next(&mut v, "v")["attempt"], 2);
    eventually("w's file is seen", || {
        task(&hub, "t1")["state"] == "ready" || project.path(".mcc/reports/rejected/t1-report.json").exists()
    });
    next(&mut w, "w");
    let root = hub.root.clone();
    hub.kill9();
    let hub = Hub::start(&root, &["--max-attempts", "2"]);
    watcher_caught_up(&project, "zz-marker");
    for (id, holder) in [("t1", "w"), ("t2", "v")] {
        let t = task(&hub, id);
        assert_eq!((t["state"].as_str(), t["holder"].as_str()), (Some("assigned"), Some(holder)), "{t}");
    }
    assert_eq!(task(&hub, "t2")["attempt"], 2);
    assert!(project.path(".mcc/reports/t2-report.json").exists(), "an applied file stays where it was");
}

// Item 3.
#[test]
fn a_cut_off_done_run_again_as_printed_gets_the_same_verdict() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "2"]);
    let mut t1 = with_validation("t1", "test -f fixed");
    t1["context"]["outputFiles"] = json!(["out.md"]);
    add(&hub, vec![t1]);
    project.write("out.md", "draft");
    let first = project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s"]).run();
    assert_eq!(first.code, 0, "{first:?}");
    let printed = first.stdout.lines().find_map(|l| l.strip_prefix("when done: ")).expect("a done command").to_owned();
    assert!(printed.contains("--attempt 1"), "the printed command carries the attempt: {printed}");
    let args: Vec<&str> = printed.split_whitespace().skip(1).collect();
    let once = project.mcc().args(&args).args(["--wait", "0s"]).run();
    assert!(once.stdout.contains("rejected t1 (attempt 1)"), "{once:?}");
    let again = project.mcc().args(&args).args(["--wait", "0s"]).run();
    assert!(again.stdout.contains("rejected t1 (attempt 1)"), "the same verdict: {again:?}");
    let t = task(&hub, "t1");
    assert_eq!((t["state"].as_str(), t["attempt"].as_u64()), (Some("assigned"), Some(2)), "judged once: {t}");
    // A raw `done` without an attempt is refused, naming what to send.
    let mut ws = hub.connect();
    let refused = ws.ask(json!({"type":"done","worker":"w","taskId":"t1","waitMs":0}));
    assert_eq!(refused["code"], "missing_attempt", "{refused}");
}

// Item 4.
#[test]
fn a_report_file_rewritten_with_the_same_bytes_after_a_rejection_is_answered() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![with_validation("t1", "test -f fixed")]);
    let mut w = hub.connect();
    next(&mut w, "w");
    let bytes =
        json!({"taskId":"t1","workerId":"w","attempt":1,"status":"completed","completedAt":"2026-01-01T00:00:00Z"})
            .to_string();
    project.write(".mcc/reports/t1-report.json", &bytes);
    eventually("rejected, back to w at attempt 2", || task(&hub, "t1")["attempt"] == 2);
    project.write("fixed", "");
    project.write(".mcc/reports/t1-report.json", &bytes);
    eventually("the rewrite is answered", || project.path(".mcc/reports/rejected/t1-report.json.error.txt").exists());
    let why = project.read(".mcc/reports/rejected/t1-report.json.error.txt");
    assert!(why.contains("attempt 1") && why.contains("\"attempt\": 2"), "{why}");
    let fixed = bytes.replace("\"attempt\":1", "\"attempt\":2");
    project.write(".mcc/reports/t1-report.json", &fixed);
    eventually("the new attempt is accepted", || task(&hub, "t1")["state"] == "accepted");
}

const STRICT: &str = r#"
return {
  name = "strict",
  phases = {
    { name = "one", tasks = { { id = "a", description = "do a" }, { id = "b", description = "do b" } },
      accept = function(task, report, ctx)
        if #report.deliverables == 0 then return false, "name a deliverable" end
        return true
      end },
  },
}
"#;

// Item 5.
#[test]
fn a_workflow_broken_at_start_holds_everything_until_it_is_fixed() {
    let project = Project::new();
    let wf = project.write("wf.lua", STRICT);
    let args = ["--workflow", &wf.display().to_string()].map(str::to_owned);
    let hub = Hub::start(project.root(), &[args[0].as_str(), args[1].as_str()]);
    let mut w = hub.connect();
    let offer = next(&mut w, "w");
    assert_eq!(offer["task"]["id"], "a");
    let root = hub.root.clone();
    hub.kill9();
    project.write("wf.lua", "return { name = \"strict\", phases = { {");
    let hub = Hub::start(&root, &[args[0].as_str(), args[1].as_str()]);
    let mut w = hub.connect();
    let reply = w.ask(json!({"type":"done","worker":"w","taskId":"a","attempt":1,"waitMs":0}));
    assert_ne!(reply["accepted"], true, "a broken workflow accepts nothing: {reply}");
    assert_eq!(next(&mut w, "v")["type"], "nothing_yet", "and hands out nothing");
    let snap = snapshot(&hub);
    assert_eq!(snap["finished"], false);
    assert!(snap["problems"].to_string().contains("wf.lua"), "{}", snap["problems"]);
    // The fixed file loads; what waited is judged by it.
    project.write("wf.lua", STRICT);
    eventually("judged by the fixed workflow", || task(&hub, "a")["state"] == "assigned");
    assert_eq!(task(&hub, "a")["reasons"], json!(["name a deliverable"]));
}

// Item 6.
#[test]
fn an_accept_that_raised_is_judged_again_on_reload_and_by_retry() {
    let project = Project::new();
    let broken = STRICT.replace("if #report.deliverables == 0", "error(\"boom\") if false");
    let wf = project.write("wf.lua", &broken);
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut w = hub.connect();
    next(&mut w, "w");
    w.ask(json!({"type":"done","worker":"w","taskId":"a","attempt":1,"waitMs":0}));
    eventually("a waits", || task(&hub, "a")["state"] == "submitted");
    let retried = project.mcc().args(["tasks", "retry", "a"]).run();
    assert_eq!(retried.code, 0, "retry judges a submitted task again: {retried:?}");
    project.write("wf.lua", STRICT);
    eventually("judged by the fixed workflow", || task(&hub, "a")["reasons"] == json!(["name a deliverable"]));
    assert_eq!(task(&hub, "a")["state"], "ready", "w took b meanwhile: {}", task(&hub, "a"));
    assert!(!snapshot(&hub)["problems"].to_string().contains("boom"), "the old problem is gone once judged");
    let b = w.ask(json!({"type":"done","worker":"w","taskId":"b","attempt":1,"deliverables":[],"waitMs":0}));
    assert_eq!(b["accepted"], false, "{b}");
}

// Item 7.
#[test]
fn a_lease_keeps_the_time_it_had_left_while_the_hub_is_down() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--lease", "1h"]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    let mut w = hub.connect();
    next(&mut w, "w");
    let root = hub.root.clone();
    assert_eq!(hub.terminate(), Some(0));
    // While the hub is down the wall clock moves on by two hours.
    let db = rusqlite::Connection::open(root.join(".mcc/state.db")).unwrap();
    db.execute("UPDATE tasks SET lease_deadline_ms = lease_deadline_ms - 7200000", []).unwrap();
    drop(db);
    let hub = Hub::start(&root, &["--lease", "1h"]);
    let t = task(&hub, "t1");
    assert_eq!((t["state"].as_str(), t["attempt"].as_u64()), (Some("assigned"), Some(1)), "{t}");
    assert!(t["leaseLeftMs"].as_u64().unwrap() > 3_000_000, "{t}");
}

// Item 8: a failed task goes to a waiting worker, not straight back.
#[test]
fn a_failed_task_goes_to_another_waiting_worker() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    let mut a = hub.connect();
    next(&mut a, "a");
    let mut b = hub.connect();
    b.send(json!({"type":"next","worker":"b","waitMs":60000}));
    eventually("b waits", || snapshot(&hub)["workers"].as_array().unwrap().iter().any(|w| w["waiting"] == true));
    let ack = a.ask(json!({"type":"fail","worker":"a","taskId":"t1","attempt":1,"reason":"no","waitMs":0}));
    assert_eq!(ack["next"]["type"], "nothing_yet", "{ack}");
    let offer = b.recv();
    assert_eq!(offer["offer"]["task"]["id"], "t1", "{offer}");
    assert_eq!(offer["offer"]["returning"], false, "{offer}");
}

// Item 8: block and answer cost no attempt; the asker gets the task back first, with question and answer.
#[test]
fn an_answered_task_goes_back_to_the_asker_and_blocking_costs_no_attempt() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "2"]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    let mut a = hub.connect();
    next(&mut a, "a");
    a.ask(json!({"type":"block","worker":"a","taskId":"t1","attempt":1,"question":"which?","waitMs":0}));
    let answered = project.mcc().args(["answer", "t1", "the left one"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    let mut b = hub.connect();
    assert_eq!(next(&mut b, "b")["type"], "nothing_yet", "the asker comes first");
    let back = next(&mut a, "a");
    assert_eq!((back["question"].as_str(), back["answer"].as_str()), (Some("which?"), Some("the left one")), "{back}");
    let attempt = back["attempt"].clone();
    let ack = a.ask(json!({"type":"fail","worker":"a","taskId":"t1","attempt":attempt,"reason":"no","waitMs":0}));
    assert!(ack["message"].as_str().unwrap().contains("back to the queue"), "one attempt used of two: {ack}");
}

// Item 9.
#[test]
fn cancelling_a_task_under_validation_answers_the_waiting_worker() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![with_validation("t1", "while [ ! -f go ]; do sleep 0.05; done")]);
    let mut w = hub.connect();
    next(&mut w, "w");
    w.send(json!({"type":"done","worker":"w","taskId":"t1","attempt":1,"waitMs":0}));
    eventually("t1 is under validation", || task(&hub, "t1")["state"] == "submitted");
    let cancelled = project.mcc().args(["tasks", "cancel", "t1"]).run();
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    let answer = w.recv_within(Duration::from_secs(15));
    project.write("go", "");
    let answer = answer.expect("the done client is answered when its task is cancelled");
    assert!(answer.to_string().contains("cancelled"), "{answer}");
}

// Item 10.
#[test]
fn a_finished_run_is_a_stored_state_read_without_a_hub() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    let mut w = hub.connect();
    next(&mut w, "w");
    let verdict = w.ask(json!({"type":"done","worker":"w","taskId":"t1","attempt":1,"waitMs":0}));
    assert_eq!(verdict["next"]["type"], "all_done", "{verdict}");
    assert_eq!(hub.terminate(), Some(0));
    let worker = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert_eq!(worker.code, 4, "all done, not an error: {worker:?}");
    assert!(worker.stdout.contains("all work is done"), "{worker:?}");
    let status = project.mcc().args(["status"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("finished") && status.stdout.contains("1 accepted"), "{status:?}");
    let headless = project.mcc().args(["worker", "run", "--as", "bot", "--", "true"]).run();
    assert_eq!(headless.code, 4, "{headless:?}");
    let list = project.mcc().args(["tasks", "list", "--json"]).run();
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains("t1"), "{list:?}");
}

// Item 8: leaving costs no attempt, and what a worker reads says how many are used.
#[test]
fn leaving_costs_no_attempt_and_the_task_line_counts_the_used_ones() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "2"]);
    add(&hub, vec![old_task("t1", &[], &[])]);
    for _ in 0..2 {
        let got = project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s"]).run();
        assert_eq!(got.code, 0, "{got:?}");
        assert_eq!(project.mcc().args(["worker", "leave", "--as", "w"]).run().code, 0);
    }
    let third = project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s"]).run();
    assert!(third.stdout.starts_with("task t1 (back to you, attempt 3, 0 of 2 used, lease"), "{}", third.stdout);
    let mut ws = hub.connect();
    let ack = ws.ask(json!({"type":"fail","worker":"w","taskId":"t1","attempt":3,"reason":"no","waitMs":0}));
    assert!(ack["message"].as_str().unwrap().contains("back to the queue"), "1 of 2 used: {ack}");
}

// Item 3 for old clients: the same `task_complete` twice is acked twice and judged once.
#[test]
fn an_old_task_complete_sent_twice_is_judged_once() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "2"]);
    add(&hub, vec![with_validation("t1", "test -f fixed"), old_task("t2", &[], &[])]);
    let mut w = hub.connect();
    w.ask(json!({"type":"register","role":"worker","workerId":"w"}));
    assert_eq!(w.recv()["task"]["id"], "t1");
    let complete = json!({"type":"task_complete","taskId":"t1"});
    assert_eq!(w.ask(complete.clone())["type"], "task_complete_ack");
    let (back, _) = w.until("task_assigned");
    assert_eq!(back["task"]["id"], "t1", "rejected, back to w: {back}");
    let t = task(&hub, "t1");
    assert_eq!((t["attempt"].as_u64(), t["state"].as_str()), (Some(2), Some("assigned")), "{t}");
    project.write("fixed", "");
    assert_eq!(w.ask(complete.clone())["type"], "task_complete_ack");
    let (next, _) = w.until("task_assigned");
    assert_eq!(next["task"]["id"], "t2", "{next}");
    assert_eq!(task(&hub, "t1")["state"], "accepted");
    // A cut-off `task_complete` sent again: the same ack and next answer, no error, one judgement.
    let done = json!({"type":"task_complete","taskId":"t2"});
    assert_eq!(w.ask(done.clone())["type"], "task_complete_ack");
    assert_eq!(w.recv()["type"], "no_tasks");
    assert_eq!(w.ask(done)["type"], "task_complete_ack", "acked again, not refused");
    assert_eq!(w.recv()["type"], "no_tasks");
    assert_eq!(task(&hub, "t2")["state"], "accepted");
}
