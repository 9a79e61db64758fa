//! A chat whose sandbox forbids every socket still works: `mcc worker`
//! commands go through request and answer files under `.mcc/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEADLINE, Hub, Project, eventually, mcc_bin, old_task};

fn add(hub: &Hub, tasks: Vec<Value>) {
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

fn task_state(hub: &Hub, id: &str) -> Value {
    hub.connect().ask(json!({"type": "show_task", "taskId": id}))["task"].clone()
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Ok when this machine can make a network namespace (as root, or with user namespaces).
pub fn can_unshare_network() -> Result<(), String> {
    match Command::new("unshare").args(["-n", "true"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`unshare -n true` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("cannot run `unshare`: {e}")),
    }
}

/// A chat that only runs the commands it is shown: ask for work, write the
/// files the printed `when done:` command names, run that command as printed.
const CHAT: &str = r#"
set -u
answer=$(mcc worker next --as "$WORKER"); code=$?
while :; do
  case $code in
    0) line=$(printf '%s\n' "$answer" | sed -n 's/^when done: //p')
       for path in $(printf '%s\n' "$line" | grep -o -- '--deliverable [^ ]*' | cut -d' ' -f2); do
         mkdir -p "$(dirname "$path")"; echo "written by $WORKER" > "$path"
       done
       answer=$(eval "$line"); code=$?
       printf '%s\n' "$answer" | head -n 1 ;;
    3) answer=$(mcc worker next --as "$WORKER"); code=$? ;;
    4) echo "all done"; exit 0 ;;
    *) echo "stopped with exit $code: $answer"; exit 1 ;;
  esac
done
"#;

#[test]
fn chats_with_the_network_gone_drain_a_queue_through_files() {
    if let Err(why) = can_unshare_network() {
        println!("SKIPPED chats_with_the_network_gone_drain_a_queue_through_files: {why}");
        eprintln!("SKIPPED chats_with_the_network_gone_drain_a_queue_through_files: {why}");
        return;
    }
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let ids: Vec<String> = (0..8).map(|i| format!("t-{i}")).collect();
    add(&hub, ids.iter().map(|id| old_task(id, &[&format!("out/{id}.md")], &[])).collect());
    project.write("chat.sh", CHAT);
    let bin_dir = Path::new(mcc_bin()).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());

    // Proof the network is really gone in there: the socket alone cannot reach the hub.
    let socket_only = Command::new("unshare")
        .args(["-n", mcc_bin(), "worker", "next", "--as", "probe", "--wait", "0s", "--transport", "socket"])
        .current_dir(project.root())
        .output()
        .unwrap();
    assert_eq!(socket_only.status.code(), Some(3), "the hub is out of reach: try again later: {socket_only:?}");
    assert!(String::from_utf8_lossy(&socket_only.stdout).contains("cannot reach the hub"), "{socket_only:?}");

    let chats: Vec<_> = ["chat-A", "chat-B"]
        .iter()
        .map(|name| {
            Command::new("unshare")
                .args(["-n", "sh", "chat.sh"])
                .current_dir(project.root())
                .env("PATH", &path)
                .env("WORKER", name)
                .env("MCC_WAIT", "1s")
                .env_remove("MCC_WORKER")
                .env_remove("MCC_HUB")
                .env_remove("MCC_TRANSPORT")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut accepted = Vec::new();
    for chat in chats {
        let out = chat.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.ends_with("all done\n"), "{text}");
        accepted.extend(
            text.lines().filter_map(|l| l.strip_prefix("accepted ")).map(|id| id.trim_end_matches('.').to_owned()),
        );
    }
    accepted.sort();
    assert_eq!(accepted, ids, "each task accepted exactly once");
    for id in &ids {
        assert_eq!(task_state(&hub, id)["state"], "accepted", "{id}");
    }
    assert!(files_in(&project.path(".mcc/requests")).is_empty(), "no request left behind");
    assert!(files_in(&project.path(".mcc/answers")).is_empty(), "no answer left behind");
}

#[test]
fn through_files_a_worker_sees_the_same_answers_and_exit_codes_as_over_the_socket() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("task-one", &["out/one.md"], &[]), old_task("task-two", &["out/two.md"], &[])]);
    let worker = |transport: &str, args: &[&str]| {
        let name = format!("{transport}-worker");
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--as", &name, "--transport", transport]);
        project.mcc().env("MCC_WAIT", "1s").args(all).run()
    };
    let by_socket = worker("socket", &["next"]);
    let by_file = worker("file", &["next"]);
    assert_eq!((by_socket.code, by_file.code), (0, 0), "{by_socket:?} {by_file:?}");
    let (s_id, f_id) = if by_socket.stdout.starts_with("task task-one ") {
        ("task-one", "task-two")
    } else {
        ("task-two", "task-one")
    };
    let out = |id: &str| if id == "task-one" { "out/one.md" } else { "out/two.md" };
    // The same text once names, task ids and paths are put in their roles.
    let shape = |text: &str, me: &str, mine: &str, theirs: &str| {
        text.replace(&format!("{me}-worker"), "ME")
            .replace(mine, "MINE")
            .replace(theirs, "THEIRS")
            .replace(out(mine), "MY_FILE")
            .replace(out(theirs), "THEIR_FILE")
    };
    assert_eq!(shape(&by_socket.stdout, "socket", s_id, f_id), shape(&by_file.stdout, "file", f_id, s_id));

    // Fencing: a task held by someone else is refused the same way.
    let s_refused = worker("socket", &["progress", f_id, "--note", "mine?"]);
    let f_refused = worker("file", &["progress", s_id, "--note", "mine?"]);
    assert_eq!((s_refused.code, f_refused.code), (1, 1), "{s_refused:?} {f_refused:?}");
    let refusal = |text: &str, me: &str, mine: &str, theirs: &str, other: &str| {
        shape(text, me, mine, theirs).replace(&format!("{other}-worker"), "OTHER")
    };
    assert_eq!(
        refusal(&s_refused.stderr, "socket", s_id, f_id, "file"),
        refusal(&f_refused.stderr, "file", f_id, s_id, "socket")
    );

    project.write(out(f_id), "x");
    let done = worker("file", &["done", f_id, "--deliverable", out(f_id), "--score", "5"]);
    assert_eq!(done.code, 3, "accepted, then nothing ready while the other holds the last task: {done:?}");
    assert!(done.stdout.starts_with(&format!("accepted {f_id}.")), "{done:?}");
    let left = worker("file", &["leave"]);
    assert_eq!(left.code, 0, "{left:?}");
    assert!(files_in(&project.path(".mcc/requests")).is_empty() && files_in(&project.path(".mcc/answers")).is_empty());
}

#[test]
fn without_a_hub_the_file_transport_says_so_at_once_and_to_try_again_later() {
    let project = Project::new();
    std::fs::create_dir_all(project.path(".mcc")).unwrap();
    let started = Instant::now();
    let run = project.mcc().args(["worker", "next", "--as", "w", "--transport", "file"]).run();
    assert_eq!(run.code, 3, "nothing yet: run it again later: {run:?}");
    assert!(run.stdout.contains("no hub is running"), "{run:?}");
    // Not a timing assert on speed: only that it did not sit out the 25 s wait.
    assert!(started.elapsed() < Duration::from_secs(20), "{run:?}");
}

#[test]
fn commands_that_change_the_plan_are_refused_through_files() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    let run = project.mcc().args(["tasks", "add", "--id", "x", "--description", "d", "--transport", "file"]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("only worker commands"), "{run:?}");
}

/// Write a request file by hand, as a client killed after writing would leave it.
fn write_request(project: &Project, id: &str, message: &Value) {
    let body = json!({"id": id, "message": message});
    project.write(&format!(".mcc/requests/{id}.json"), &body.to_string());
}

#[test]
fn a_request_written_while_the_hub_was_down_is_answered_when_it_comes_back() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t", &["out/t.md"], &[])]);
    hub.kill9();

    write_request(&project, "0a1b", &json!({"type": "next", "worker": "A", "waitMs": 0}));
    let _hub = Hub::start(project.root(), &[]);
    let answer = project.path(".mcc/answers/0a1b.json");
    eventually("the waiting request is answered", || answer.exists());
    let reply: Value = serde_json::from_str(&std::fs::read_to_string(&answer).unwrap()).unwrap();
    assert_eq!(reply["offer"]["task"]["id"], "t", "{reply}");
    assert!(!project.path(".mcc/requests/0a1b.json").exists(), "the hub drops a request once answered");
}

#[test]
fn a_request_answered_before_the_hub_died_is_not_acted_on_again() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t", &["out/t.md"], &[])]);
    hub.kill9();
    // The hub wrote this answer and died before it could remove the request.
    write_request(&project, "dead", &json!({"type": "next", "worker": "A", "waitMs": 0}));
    project.write(".mcc/answers/dead.json", r#"{"type":"error","error":"answered before the crash"}"#);

    let hub = Hub::start(project.root(), &[]);
    // Requests are served in order after the start-up scan; this one's answer shows the scan is over.
    let b = project.mcc().args(["worker", "next", "--as", "B", "--wait", "1s", "--transport", "file"]).run();
    assert_eq!(b.code, 0, "A's old request must not have taken the task: {b:?}");
    assert!(b.stdout.starts_with("task t "), "{b:?}");
    assert_eq!(task_state(&hub, "t")["holder"], "B");
    assert!(project.read(".mcc/answers/dead.json").contains("answered before the crash"), "kept for its client");
}

#[test]
fn a_client_killed_while_waiting_loses_no_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut waiting = Command::new(mcc_bin())
        .args(["worker", "next", "--as", "A", "--wait", "60s", "--transport", "file"])
        .current_dir(project.root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the request is written", || !files_in(&project.path(".mcc/requests")).is_empty());
    waiting.kill().unwrap();
    waiting.wait().unwrap();

    add(&hub, vec![old_task("t", &["out/t.md"], &[])]);
    let again = project.mcc().args(["worker", "next", "--as", "A", "--wait", "5s", "--transport", "file"]).run();
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.starts_with("task t "), "{again:?}");
    assert_eq!(task_state(&hub, "t")["holder"], "A");
}

/// The hub's answer latency through files; run with
/// `cargo test --release file_transport_latency -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: numbers go to docs/benchmarks.md"]
fn file_transport_latency() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    let state = mcc::Layout::of_root(project.root());
    let msg = mcc::ClientMsg::Next { worker: "bench".into(), wait_ms: Some(0), can: Vec::new(), model: None };
    let mut took: Vec<Duration> = (0..400)
        .map(|_| {
            let start = Instant::now();
            mcc::ask(&state, &msg, DEADLINE).expect("an answer");
            start.elapsed()
        })
        .collect();
    took.sort();
    let pick = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "file transport, {} `next` requests one after another: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        took.len(),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        took[took.len() - 1]
    );
}

#[test]
fn a_request_left_long_ago_by_a_killed_client_is_removed_not_acted_on() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t", &["out/t.md"], &[])]);
    hub.kill9();
    write_request(&project, "0ld", &json!({"type": "next", "worker": "A", "waitMs": 0}));
    project.write(".mcc/answers/cafe.json", r#"{"type":"error","error":"never collected"}"#);
    let long_ago = std::time::SystemTime::now() - Duration::from_hours(1);
    for left in [".mcc/requests/0ld.json", ".mcc/answers/cafe.json"] {
        std::fs::File::options().write(true).open(project.path(left)).unwrap().set_modified(long_ago).unwrap();
    }

    let hub = Hub::start(project.root(), &[]);
    let b = project.mcc().args(["worker", "next", "--as", "B", "--wait", "1s", "--transport", "file"]).run();
    assert!(b.stdout.starts_with("task t "), "the old request of A did not take the task: {b:?}");
    assert_eq!(task_state(&hub, "t")["holder"], "B");
    assert!(files_in(&project.path(".mcc/requests")).is_empty(), "{:?}", files_in(&project.path(".mcc/requests")));
    assert!(files_in(&project.path(".mcc/answers")).is_empty(), "{:?}", files_in(&project.path(".mcc/answers")));
}

#[test]
fn in_codexs_sandbox_worker_commands_go_through_files_without_trying_the_socket() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t", &["out/t.md"], &[])]);
    let sandboxed = || project.mcc().env("CODEX_SANDBOX_NETWORK_DISABLED", "1").env("MCC_TRANSPORT", "auto");
    let next = sandboxed().args(["worker", "next", "--as", "boxed", "--wait", "1s"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.starts_with("task t "), "{next:?}");
    // Files carry worker commands only, so this refusal shows the socket was not used.
    let plan = sandboxed().args(["tasks", "add", "--id", "x", "--description", "d"]).run();
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stderr.contains("only worker commands"), "{plan:?}");
}

#[test]
fn status_in_a_sandbox_without_network_names_the_hub_that_answers_it_through_files() {
    if let Err(why) = can_unshare_network() {
        println!("SKIPPED status_in_a_sandbox_without_network_names_the_hub_that_answers_it_through_files: {why}");
        return;
    }
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[]), old_task("b", &[], &[])]);
    let sandboxed = |args: &[&str]| {
        let out = Command::new("unshare")
            .args(["-n", mcc_bin()])
            .args(args)
            .current_dir(project.root())
            .env_remove("MCC_HUB")
            .env_remove("MCC_TRANSPORT")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, next, _) = sandboxed(&["worker", "next", "--as", "boxed", "--wait", "0s"]);
    assert_eq!(code, Some(0), "{next}");
    let (code, status, err) = sandboxed(&["status"]);
    assert_eq!(code, Some(0), "{status}{err}");
    assert!(!status.contains("no hub running"), "{status}");
    assert!(status.starts_with(&format!("hub {} (answering through files", hub.url)), "{status}");
    assert!(status.contains("(running)"), "{status}");
    assert!(status.contains("tasks: 1 ready, 1 assigned"), "{status}");
    assert!(status.contains("worker boxed: on a"), "{status}");
    let (code, json, _) = sandboxed(&["status", "--json"]);
    assert_eq!(code, Some(0), "{json}");
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((json["hubRunning"].as_bool(), json["tasks"].as_array().map(Vec::len)), (Some(true), Some(2)), "{json}");
    assert!(files_in(&project.path(".mcc/requests")).is_empty(), "status took its answer and left nothing");
}
