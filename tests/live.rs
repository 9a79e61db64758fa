//! Progress pushed, not polled: `subscribe` gives a summary and then what
//! each committed batch changed; `tasks_page` pages the store; `mcc status
//! --watch` redraws on the changes the hub pushes; the live page that shows
//! it answers a browser whatever else sits on its port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hub, Printed, Project, mcc_bin, old_task};

/// Deltas until one satisfies `check`; panics with what came if none does.
fn delta_until(ws: &mut crate::support::Ws, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    deltas_until(ws, what, check).pop().expect("the one that satisfied `check`")
}

/// Every delta up to and including the first that satisfies `check`.
fn deltas_until(ws: &mut crate::support::Ws, what: &str, check: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let (delta, _) = ws.until("delta");
        seen.push(delta["delta"].clone());
        if check(&delta["delta"]) {
            return seen;
        }
    }
    panic!("no delta with {what}; got {seen:?}")
}

fn task_ids(delta: &Value) -> Vec<&str> {
    delta["tasks"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect()
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
fn a_progress_subscriber_gets_counts_and_questions_but_no_moving_tasks_while_a_full_one_beside_it_gets_all() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    // As `mcc run` subscribes: what its progress lines draw, and no more.
    let mut run = hub.connect_anonymous();
    let summary = run.ask(json!({"type":"subscribe","view":"progress"}));
    assert_eq!(summary["type"], "summary", "{summary}");
    let mut seen_by_run = Vec::new();

    // Alone, it is still told of counts that move with no question in them.
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &["a"])]}));
    seen_by_run.extend(deltas_until(&mut run, "two new tasks", |d| d["counts"]["ready"] == 1));
    let next = ws.ask(json!({"type":"next","worker":"w1","waitMs":0}));
    assert_eq!(next["offer"]["task"]["id"], "a", "{next}");
    seen_by_run.extend(deltas_until(&mut run, "a assigned", |d| d["counts"]["assigned"] == 1));
    let w1 = seen_by_run.last().unwrap()["workers"].as_array().unwrap().iter().find(|w| w["name"] == "w1").cloned();
    assert_eq!(w1.map(|w| w["holding"].clone()), Some(json!("a")), "{seen_by_run:?}");

    // As `mcc status --watch` and the live page subscribe, at the same time.
    let mut watch = hub.connect_anonymous();
    let summary = watch.ask(json!({"type":"subscribe"}));
    assert_eq!(task_ids(&json!({"tasks": summary["summary"]["inFlight"]})), ["a"], "{summary}");

    ws.ask(json!({"type":"block","worker":"w1","taskId":"a","attempt":1,"question":"tabs or spaces?","waitMs":0}));
    let asked = deltas_until(&mut run, "a question", |d| d["counts"]["blocked"] == 1);
    let question = asked.last().unwrap()["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "a").cloned();
    assert_eq!(
        question.map(|t| (t["state"].clone(), t["question"].clone())),
        Some((json!("blocked"), json!("tabs or spaces?"))),
        "{asked:?}"
    );
    seen_by_run.extend(asked);
    let full = delta_until(&mut watch, "a question", |d| d["counts"]["blocked"] == 1);
    assert_eq!(task_ids(&full), ["a"], "{full}");
    assert!(!full["events"].as_array().unwrap().is_empty(), "{full}");

    // The answer hands a back to w1 at once: it leaves the questions.
    ws.ask(json!({"type":"answer","taskId":"a","text":"spaces"}));
    let answered = deltas_until(&mut run, "the answer", |d| d["counts"]["blocked"] == 0);
    let a = answered.last().unwrap()["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "a").cloned();
    assert_eq!(a.map(|a| a["state"].clone()), Some(json!("assigned")), "{answered:?}");
    seen_by_run.extend(answered);
    delta_until(&mut watch, "the answer", |d| d["counts"]["blocked"] == 0);

    let verdict = ws.ask(json!({"type":"done","worker":"w1","taskId":"a","attempt":2,"waitMs":0}));
    assert_eq!(verdict["next"]["task"]["id"], "b", "{verdict}");
    let full = delta_until(&mut watch, "a accepted, b assigned", |d| d["counts"]["accepted"] == 1);
    assert_eq!(task_ids(&full), ["a", "b"], "{full}");
    assert!(full["events"].as_array().unwrap().iter().any(|e| e["kind"] == "accepted"), "{full}");
    let done = deltas_until(&mut run, "a accepted, b assigned", |d| d["counts"]["accepted"] == 1);
    let w1 = done.last().unwrap()["workers"].as_array().unwrap().iter().find(|w| w["name"] == "w1").cloned();
    assert_eq!(w1.map(|w| (w["holding"].clone(), w["accepted"].clone())), Some((json!("b"), json!(1))), "{done:?}");
    seen_by_run.extend(done);

    for delta in &seen_by_run {
        assert_eq!((delta["events"].clone(), delta["eventsLeftOut"].clone()), (json!([]), json!(0)), "{delta}");
    }
    let with_tasks: Vec<Vec<&str>> = seen_by_run.iter().map(task_ids).filter(|ids| !ids.is_empty()).collect();
    assert_eq!(with_tasks, [["a"], ["a"]], "a became a question, then stopped being one: {seen_by_run:?}");
}

#[test]
fn a_subscription_to_a_view_the_hub_does_not_have_is_refused_with_the_views_it_has() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect_anonymous();
    let refused = ws.ask(json!({"type":"subscribe","view":"everything"}));
    assert_eq!(refused["type"], "error", "{refused}");
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("`view`")
            && error.contains("everything")
            && error.contains("`full`")
            && error.contains("`progress`"),
        "{error}"
    );
    let summary = ws.ask(json!({"type":"subscribe","view":"full"}));
    assert_eq!(summary["type"], "summary", "the connection goes on: {summary}");
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

/// The live page's port and the path with its capability, from the address `mcc status` prints.
fn page_address(project: &Project) -> (u16, String) {
    let status = project.mcc().args(["status"]).run();
    let url = status
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("live page (read-only): http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("mcc status names no live page: {status:?}"));
    let (port, path) = url.split_once('/').expect("a port then a path");
    (port.parse().expect("a port"), format!("/{path}"))
}

/// `GET path` on the page's port: the whole answer, or `None` if none came within `limit`.
fn get_within(port: u16, path: &str, limit: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn the_live_page_answers_a_browser_while_hundreds_of_silent_sockets_sit_on_its_port() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (port, path) = page_address(&project);
    // Sockets that never send a byte. The page used to read 32 requests at
    // a time, each for up to 5 s, and accept no other meanwhile: 40 such
    // sockets kept a browser out for 5 s, these 160 for 25 s.
    let silent: Vec<TcpStream> =
        (0..160).map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect to the page")).collect();
    // And 40 of the page's own WebSocket connections to the hub, open and quiet.
    let view = path.split_once("view=").expect("the capability").1;
    let quiet_views: Vec<_> = (0..40)
        .map(|_| {
            use tungstenite::client::IntoClientRequest;
            let mut request = format!("{}/?view={view}", hub.url).into_client_request().unwrap();
            request.headers_mut().insert("origin", format!("http://127.0.0.1:{port}").parse().unwrap());
            tungstenite::connect(request).expect("the page's origin connects with the view capability").0
        })
        .collect();

    let limit = Duration::from_secs(10);
    let answer = get_within(port, &path, limit)
        .unwrap_or_else(|| panic!("the page did not answer within {limit:?} while 160 silent sockets were held"));
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("<title>mcc live</title>"), "{answer}");
    drop((silent, quiet_views));
}

#[test]
fn a_restarted_hub_serves_the_page_on_its_old_port_or_says_why_not() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (port, path) = page_address(&project);
    assert_eq!(project.read(".mcc/page-port").trim(), port.to_string(), "the port is kept in .mcc/");
    assert_eq!(hub.terminate(), Some(0));

    let again = Hub::start(project.root(), &[]);
    assert_eq!(page_address(&project), (port, path.clone()), "the same address after a restart");
    assert_eq!(again.terminate(), Some(0));

    // Another program took the port meanwhile: the page moves, and the hub says where.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the page's port");
    let moved = Hub::start(project.root(), &[]);
    let (new_port, _) = page_address(&project);
    assert_ne!(new_port, port);
    let said = format!("the live page's port {port} is taken");
    assert!(moved.log_text().contains(&said), "{}", moved.log_text());
    assert!(moved.log_text().contains(&format!("the page is on port {new_port} now")), "{}", moved.log_text());
    assert!(get_within(new_port, &path, Duration::from_secs(10)).is_some_and(|a| a.starts_with("HTTP/1.1 200 OK")));
    drop(squatter);
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
    let mut printed = Printed::of(&mut watch);
    printed.wait_for("tasks: none");
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[])]}));
    printed.wait_for("tasks: 1 ready");
    let next = project.mcc().args(["worker", "next", "--as", "w1", "--wait", "0s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    printed.wait_for("worker w1: on a");
    let _ = watch.kill();
    let _ = watch.wait();
}

/// Drain `work` ready tasks with 4 workers on persistent connections while
/// `queue` tasks wait behind a held gate and `subscribers` connections
/// follow every change in `view` (`progress` as `mcc run`, `full` as
/// `mcc status --watch` and the live page): tasks per second, CPU seconds
/// the engine thread spent on the drain (from `/proc`, in clock ticks), and,
/// when the bench runs with `MCC_PROGRESS_CPU` set, the seconds of that in
/// progress as the hub measured them.
fn drain_rate(queue: usize, work: usize, subscribers: usize, view: &str) -> (f64, f64, Option<f64>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("gate", &[], &[])]}));
    let held = ws.ask(json!({"type":"next","worker":"holder","waitMs":0}));
    assert_eq!(held["offer"]["task"]["id"], "gate", "{held}");
    let ids: Vec<String> = (0..queue).map(|i| format!("q{i}")).chain((0..work).map(|i| format!("w{i}"))).collect();
    for chunk in ids.chunks(2_000) {
        let tasks: Vec<Value> =
            chunk.iter().map(|id| old_task(id, &[], if id.starts_with('q') { &["gate"] } else { &[] })).collect();
        let added = ws.ask(json!({"type":"add_tasks","tasks":tasks}));
        assert_eq!(added["type"], "tasks_added", "{added}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = (0..subscribers)
        .map(|_| {
            let mut s = hub.connect_anonymous();
            assert_eq!(s.ask(json!({"type":"subscribe","view":view}))["type"], "summary");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut deltas = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if s.recv_within(Duration::from_millis(100)).is_some() {
                        deltas += 1;
                    }
                }
                deltas
            })
        })
        .collect();
    let engine_before = engine_cpu(hub.child.id());
    let start = std::time::Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|n| {
            let mut w = hub.connect();
            std::thread::spawn(move || {
                let name = format!("worker{n}");
                let mut offer = w.ask(json!({"type":"next","worker":name,"waitMs":0}))["offer"].clone();
                while offer["type"] == "task" {
                    let (id, attempt) = (offer["task"]["id"].clone(), offer["attempt"].clone());
                    let verdict = w.ask(json!({"type":"done","worker":name,"taskId":id,"attempt":attempt,"waitMs":0}));
                    offer = verdict["next"].clone();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let took = start.elapsed();
    let engine = engine_cpu(hub.child.id()) - engine_before;
    stop.store(true, Ordering::Relaxed);
    let deltas: u64 = followers.into_iter().map(|f| f.join().unwrap()).sum();
    if subscribers > 0 {
        assert!(deltas > 0, "the subscribers were told of the work");
    }
    let in_progress = std::env::var_os("MCC_PROGRESS_CPU").and_then(|_| {
        // The hub writes it at most every 100 ms: the last figure after the drain.
        std::thread::sleep(Duration::from_millis(250));
        let text = std::fs::read_to_string(project.root().join(".mcc/progress-cpu")).ok()?;
        let field = |key: &str| -> Option<f64> {
            text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        // Less the measuring itself: of its two clock reads per call, about
        // one read's time falls between the two readings.
        Some((field("publish_ns")? - field("calls")? * field("clock_ns")?) / 1e9)
    });
    (work as f64 / took.as_secs_f64(), engine, in_progress)
}

/// CPU seconds (user + system) of the hub's `mcc-engine` thread so far.
fn engine_cpu(pid: u32) -> f64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map_while(Result::ok) {
        if std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "mcc-engine") {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            // Fields after the `(comm)`: state is 3rd, utime 14th, stime 15th.
            let rest: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            let ticks: f64 = rest[11].parse::<f64>().unwrap() + rest[12].parse::<f64>().unwrap();
            return ticks / 100.0;
        }
    }
    panic!("no mcc-engine thread in process {pid}")
}

#[test]
#[ignore = "prints figures for docs/benchmarks.md: cargo test --release --test lib live::progress_cost -- --ignored --nocapture"]
fn progress_cost_figures() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let work = env("MCC_PROGRESS_WORK", 4000);
    // The machine is shared: one pair of runs says little, the median of several more.
    let rounds = env("MCC_PROGRESS_ROUNDS", 2);
    // As `mcc run` follows (the goal's figure), then as `mcc status --watch` and the page do.
    let views = [("progress", "2 as `mcc run`"), ("full", "2 full (status --watch, page)")];
    for queue in [0, 10_000, 100_000] {
        let mut added = vec![Vec::new(); views.len()];
        let mut share = vec![Vec::new(); views.len()];
        for round in 0..rounds {
            let (plain, plain_cpu, _) = drain_rate(queue, work, 0, "full");
            eprintln!(
                "queue {queue:>6}, round {round}: unwatched {plain:>5.0} tasks/s, engine {:>5.1} us/task",
                plain_cpu / work as f64 * 1e6
            );
            for (k, (view, who)) in views.iter().enumerate() {
                let (followed, followed_cpu, in_progress) = drain_rate(queue, work, 2, view);
                added[k].push((followed_cpu / plain_cpu - 1.0) * 100.0);
                let measured = in_progress.map_or(String::new(), |p| {
                    share[k].push(p / followed_cpu * 100.0);
                    format!(
                        "; in progress {:.2} us/task, {:.1}% of engine time",
                        p / work as f64 * 1e6,
                        share[k][round]
                    )
                });
                eprintln!(
                    "queue {queue:>6}, round {round}: {who}: {followed:>5.0} tasks/s, engine {:>5.1} us/task ({:+.1}% engine time){measured}",
                    followed_cpu / work as f64 * 1e6,
                    added[k][round]
                );
            }
        }
        for (k, (_, who)) in views.iter().enumerate() {
            added[k].sort_by(f64::total_cmp);
            share[k].sort_by(f64::total_cmp);
            let measured =
                share[k].get(rounds / 2).map_or(String::new(), |s| format!("; in progress (hub's own figure) {s:.1}%"));
            eprintln!(
                "queue {queue:>6}: {who}: median over {rounds} rounds: engine time added {:+.1}%{measured}",
                added[k][rounds / 2]
            );
        }
    }
}

#[test]
#[ignore = "prints figures for docs/benchmarks.md: cargo test --release --test lib live::status_figures -- --ignored --nocapture"]
fn status_figures() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("gate", &[], &[])]}));
    ws.ask(json!({"type":"next","worker":"holder","waitMs":0}));
    let ids: Vec<String> = (0..100_000).map(|i| format!("q{i}")).collect();
    for chunk in ids.chunks(2_000) {
        let tasks: Vec<Value> = chunk.iter().map(|id| old_task(id, &[], &["gate"])).collect();
        assert_eq!(ws.ask(json!({"type":"add_tasks","tasks":tasks}))["type"], "tasks_added");
    }
    // 200 workers waiting for work, as in the goal.
    let mut waiters: Vec<_> = (0..200).map(|_| hub.connect()).collect();
    for (i, w) in waiters.iter_mut().enumerate() {
        w.send(json!({"type":"next","worker":format!("waiter{i}"),"waitMs":300_000}));
    }
    crate::support::eventually("200 waiters", || {
        // A fresh connection each time: a subscriber's next message may be a delta.
        let summary = hub.connect_anonymous().ask(json!({"type":"subscribe"}));
        summary["summary"]["workers"].as_array().unwrap().iter().filter(|w| w["waiting"] == true).count() == 200
    });
    let mut took: Vec<Duration> = (0..7)
        .map(|_| {
            let start = std::time::Instant::now();
            let out = project.mcc().args(["status"]).run();
            assert!(out.stdout.contains("tasks: 100000 waiting, 1 assigned"), "{out:?}");
            start.elapsed()
        })
        .collect();
    took.sort();
    let json = project.mcc().args(["status", "--json"]).run();
    eprintln!(
        "`mcc status` at 100,000 tasks, 200 waiting workers: median {:.1} ms, max {:.1} ms over 7 runs; `--json` {} bytes",
        took[3].as_secs_f64() * 1000.0,
        took[6].as_secs_f64() * 1000.0,
        json.stdout.len()
    );
}

#[test]
fn a_subscriber_is_told_the_workflows_phases_in_declared_order_and_again_when_another_loads() {
    let project = Project::new();
    let phases = |names: [&str; 2]| {
        format!(
            "return workflow {{ name = \"w\", phases = {{ phase \"{}\" {{ tasks = {{}} }}, phase \"{}\" {{ tasks = {{}} }} }} }}\n",
            names[0], names[1]
        )
    };
    project.write("workflows/first.lua", &phases(["zeta", "alpha"]));
    project.write("workflows/second.lua", &phases(["one", "two"]));
    let hub = Hub::start(project.root(), &["--workflow", &project.path("workflows/first.lua").display().to_string()]);
    let mut watcher = hub.connect_anonymous();
    let summary = watcher.ask(json!({"type":"subscribe","view":"progress"}));
    assert_eq!(summary["summary"]["phaseOrder"], json!(["zeta", "alpha"]), "{summary}");

    let loaded = hub.connect().ask(json!({"type":"load_workflow","path":"workflows/second.lua"}));
    assert_eq!(loaded["type"], "ack", "{loaded}");
    let delta = delta_until(&mut watcher, "the new workflow's phases", |d| d.get("phaseOrder").is_some());
    assert_eq!(delta["phaseOrder"], json!(["one", "two"]), "{delta}");
}
