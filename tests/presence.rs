//! Presence: a worker's chat that ends (its process killed) gives its task
//! back to the queue after a short grace, with the reason, whether the chat
//! worked through the shell (a watcher stands beside it) or through
//! `mcc mcp`; a worker that comes back within the grace keeps its task, and
//! one that comes back later keeps nothing it lost. Graces here are 1 s;
//! nothing waits on the clock but through the hub's own answers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually, mcc_bin, old_task};

fn add(hub: &Hub, ids: &[&str]) {
    let tasks: Vec<Value> = ids.iter().map(|id| old_task(id, &[&format!("out/{id}.md")], &[])).collect();
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

fn status(project: &Project) -> String {
    project.mcc().args(["status"]).run().stdout
}

/// The line `mcc status` prints for `worker`.
fn worker_line(project: &Project, worker: &str) -> String {
    let text = status(project);
    text.lines().find(|l| l.starts_with(&format!("worker {worker}:"))).unwrap_or_default().to_owned()
}

/// A fake agent: a process that is not a shell (perl), running `mcc worker
/// next` through `sh -c` as a chat runs its commands, then living on until
/// it is killed. Its stdout says when `next` returned.
fn agent(project: &Project, program: &str, worker: &str) -> (Child, Vec<String>) {
    agent_running(project, program, worker, r#""$MCC" worker next --as $NAME --wait 5s"#)
}

/// [`agent`] running the shell command `command` (with `$MCC` and `$NAME` set).
fn agent_running(project: &Project, program: &str, worker: &str, command: &str) -> (Child, Vec<String>) {
    let script = r#"$| = 1; system("sh", "-c", $ENV{COMMAND}); print "next returned\n"; <STDIN>;"#;
    let mut child = Command::new(program)
        .args(["-e", script])
        .env("COMMAND", command)
        .current_dir(project.root())
        .env("MCC", mcc_bin())
        .env("NAME", worker)
        .env_remove("MCC_WORKER")
        .env_remove("MCC_HUB")
        .env_remove("MCC_WATCHER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the fake agent");
    let mut printed = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "next returned" {
            return (child, printed);
        }
        printed.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the agent's `next` never returned: {printed:?}");
}

/// A process that ended: gone, or a zombie nobody reaped yet.
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

fn watcher_record(root: &Path, worker: &str) -> Value {
    let text = std::fs::read_to_string(root.join(format!(".mcc/presence/{worker}.json"))).expect("a watcher record");
    serde_json::from_str(&text).unwrap()
}

/// `mcc worker next --as WORKER --wait 20s`: returns once the hub grants a task (or the wait ends).
fn next(project: &Project, worker: &str) -> String {
    let run = project.mcc().args(["worker", "next", "--as", worker, "--wait", "20s"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

#[test]
fn a_shell_chat_killed_mid_task_has_its_task_back_within_the_grace_with_the_reason() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    let (mut chat, printed) = agent(&project, "perl", "worker-A");
    assert!(printed.iter().any(|l| l.contains("task a")), "{printed:?}");

    // The watcher stands for the chat: it found the agent (perl, past `sh`) and says it is present.
    let record = watcher_record(project.root(), "worker-A");
    assert_eq!(record["agent"]["pid"], chat.id(), "{record}");
    let watcher = u32::try_from(record["watcher"]["pid"].as_u64().unwrap()).unwrap();
    eventually("worker-A shows as present", || worker_line(&project, "worker-A").contains(", present"));
    chat.kill().unwrap();
    chat.wait().unwrap();

    let taken = next(&project, "worker-B");
    assert!(taken.contains("task a"), "{taken}");
    assert!(taken.contains("worker-A's chat ended"), "the reason goes to the next holder: {taken}");
    eventually("the watcher exited with its agent", || ended(watcher));
    let line = worker_line(&project, "worker-A");
    assert!(line.contains("chat gone"), "{line}");
    let events = project.mcc().args(["tasks", "show", "a"]).run().stdout;
    assert!(events.contains("worker-A's chat ended"), "on the task's record: {events}");
    drop(hub);
}

#[test]
fn a_second_next_of_the_same_chat_reuses_its_watcher() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    let twice = r#""$MCC" worker next --as $NAME --wait 0s; "$MCC" worker next --as $NAME --wait 0s"#;
    let (mut chat, _) = agent_running(&project, "perl", "w", twice);
    let agent = format!("--agent-pid\0{}\0", chat.id());
    let watchers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|cmd| String::from_utf8_lossy(&cmd).into_owned())
        .filter(|cmd| cmd.contains("watch\0--as\0w\0") && cmd.contains(&agent))
        .count();
    assert_eq!(watchers, 1, "one watcher for the chat's two `next`s");
    chat.kill().unwrap();
    chat.wait().unwrap();
}

#[test]
fn an_mcp_server_killed_mid_task_has_its_task_back_within_the_grace_with_the_reason() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pid = runtime.block_on(async {
        let mut command = tokio::process::Command::new(mcc_bin());
        command.args(["mcp", "--as", "worker-M"]).current_dir(project.root()).env_remove("MCC_HUB");
        let transport = TokioChildProcess::new(command).expect("spawn mcc mcp");
        let pid = transport.id().expect("its pid");
        let client = ().serve(transport).await.expect("the MCP handshake");
        let Value::Object(arguments) = json!({}) else { unreachable!() };
        let result = client
            .call_tool(CallToolRequestParams::new("next".to_owned()).with_arguments(arguments))
            .await
            .expect("tools/call");
        let text: String = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
        assert!(text.contains("task a"), "{text}");
        std::mem::forget(client);
        pid
    });
    eventually("worker-M shows as present", || worker_line(&project, "worker-M").contains(", present"));
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());

    let taken = next(&project, "worker-B");
    assert!(taken.contains("task a"), "{taken}");
    assert!(taken.contains("worker-M's chat ended"), "{taken}");
    drop(runtime);
}

/// A raw connection that says `present` for `worker`, as `mcc mcp` does.
fn present(hub: &Hub, worker: &str) -> Ws {
    let mut ws = hub.connect();
    let ack = ws.ask(json!({"type": "present", "worker": worker, "kind": "mcp"}));
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["what"], "present", "{ack}");
    ws
}

#[test]
fn a_worker_that_comes_back_within_the_grace_keeps_its_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    let first = present(&hub, "worker-A");
    assert!(next(&project, "worker-A").contains("task a"));
    first.close();
    let _back = present(&hub, "worker-A");
    // Another worker waits 3 s, well past the grace, and is offered nothing: `a` is still held.
    let run = project.mcc().args(["worker", "next", "--as", "worker-B", "--wait", "3s"]).run();
    assert_eq!(run.code, 3, "nothing yet: {run:?}");
    project.write("out/a.md", "done");
    let done = project
        .mcc()
        .args(["worker", "done", "a", "--as", "worker-A", "--deliverable", "out/a.md", "--wait", "0s"])
        .run();
    assert!(done.stdout.starts_with("accepted a."), "{done:?}");
}

#[test]
fn a_worker_that_comes_back_after_losing_its_task_keeps_nothing_it_lost() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    let first = present(&hub, "worker-A");
    assert!(next(&project, "worker-A").contains("task a"));
    first.close();
    assert!(next(&project, "worker-B").contains("task a"), "back in the queue after the grace");

    let _late = present(&hub, "worker-A");
    project.write("out/a.md", "late");
    let done = project
        .mcc()
        .args(["worker", "done", "a", "--as", "worker-A", "--attempt", "1", "--deliverable", "out/a.md"])
        .run();
    assert_eq!(done.code, 1, "{done:?}");
    assert!(done.stderr.contains("held by `worker-B`"), "the fence refuses the stale done: {done:?}");
    let line = worker_line(&project, "worker-B");
    assert!(line.contains("on a"), "{line}");
}

#[test]
fn a_command_run_with_no_agent_process_above_it_leaves_the_worker_on_its_lease() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    // Run from a parent named like an init process: no agent to watch.
    let init = project.path("bin/init");
    std::fs::create_dir_all(init.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(which("perl"), &init).unwrap();
    let (mut chat, printed) = agent(&project, init.to_str().unwrap(), "worker-L");
    assert!(printed.iter().any(|l| l.contains("task a")), "{printed:?}");
    assert!(!project.path(".mcc/presence/worker-L.json").exists(), "no watcher was started");
    let line = worker_line(&project, "worker-L");
    assert!(line.contains("on a") && line.ends_with(", lease only"), "{line}");
    chat.kill().unwrap();
    chat.wait().unwrap();
    // Its task stays with it: only its lease (30m) would end it.
    let run = project.mcc().args(["worker", "next", "--as", "worker-B", "--wait", "3s"]).run();
    assert_eq!(run.code, 3, "nothing yet: {run:?}");
    drop(hub);
}

fn which(program: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).expect("on PATH")
}

#[test]
fn a_watcher_comes_back_to_a_restarted_hub_and_its_worker_keeps_its_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    let (mut chat, printed) = agent(&project, "perl", "worker-A");
    assert!(printed.iter().any(|l| l.contains("task a")), "{printed:?}");
    eventually("worker-A shows as present", || worker_line(&project, "worker-A").contains(", present"));
    hub.kill9();
    let _hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    eventually("the watcher is back", || worker_line(&project, "worker-A").contains(", present"));
    let run = project.mcc().args(["worker", "next", "--as", "worker-B", "--wait", "3s"]).run();
    assert_eq!(run.code, 3, "a stays with worker-A, past the grace: {run:?}");
    chat.kill().unwrap();
    chat.wait().unwrap();
    assert!(next(&project, "worker-B").contains("worker-A's chat ended"));
}

#[test]
fn a_chat_that_ended_while_the_hub_was_down_loses_its_task_after_the_grace_of_the_restarted_hub() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--presence-grace", "1s"]);
    add(&hub, &["a"]);
    let (mut chat, _) = agent(&project, "perl", "worker-A");
    eventually("worker-A shows as present", || worker_line(&project, "worker-A").contains(", present"));
    hub.kill9();
    chat.kill().unwrap();
    chat.wait().unwrap();
    // Long enough for `status` to see the grace running on a loaded machine.
    let _hub = Hub::start(project.root(), &["--presence-grace", "5s"]);
    let line = worker_line(&project, "worker-A");
    assert!(line.contains("on a") && line.contains("chat gone"), "a fresh grace from the hub's start: {line}");
    let taken = next(&project, "worker-B");
    assert!(taken.contains("task a") && taken.contains("worker-A's chat ended"), "{taken}");
}

/// The figures of docs/benchmarks.md, "Presence": a shell chat killed mid-task
/// with the default grace (60 s), from the kill to the hub's log line that
/// its chat ended (detection) and to another worker's `next` answered with
/// the task (back in the queue). Run with
/// `cargo test --test lib -- --ignored a_killed_chat_measured --nocapture`.
#[test]
#[ignore = "a measurement of a minute or more"]
fn a_killed_chat_measured() {
    use std::time::Instant;
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, &["a"]);
    let (mut chat, _) = agent(&project, "perl", "worker-A");
    eventually("worker-A shows as present", || worker_line(&project, "worker-A").contains(", present"));
    let killed = Instant::now();
    chat.kill().unwrap();
    let waiting = std::thread::spawn({
        let root = project.root().to_owned();
        move || {
            let run =
                crate::support::Mcc::new(&root).args(["worker", "next", "--as", "worker-B", "--wait", "150s"]).run();
            (Instant::now(), run)
        }
    });
    eventually("the hub logs the chat's end", || hub.log_text().contains("worker-A's chat ended"));
    let detected = killed.elapsed();
    chat.wait().unwrap();
    let (back, run) = waiting.join().unwrap();
    assert!(run.stdout.contains("worker-A's chat ended"), "{run:?}");
    println!(
        "presence: chat killed -> hub saw it end {:.3} s; -> task granted to another worker {:.1} s (grace 60 s)",
        detected.as_secs_f64(),
        back.duration_since(killed).as_secs_f64()
    );
}

/// [`a_killed_chat_measured`] for a chat working through `mcc mcp`: its
/// server killed, the kernel closes its socket. Run with
/// `cargo test --test lib -- --ignored an_mcp_chat_killed_measured --nocapture`.
#[test]
#[ignore = "a measurement of a minute or more"]
fn an_mcp_chat_killed_measured() {
    use std::time::Instant;
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, &["a"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pid = runtime.block_on(async {
        let mut command = tokio::process::Command::new(mcc_bin());
        command.args(["mcp", "--as", "worker-M"]).current_dir(project.root()).env_remove("MCC_HUB");
        let transport = TokioChildProcess::new(command).expect("spawn mcc mcp");
        let pid = transport.id().expect("its pid");
        let client = ().serve(transport).await.expect("the MCP handshake");
        let Value::Object(arguments) = json!({}) else { unreachable!() };
        client.call_tool(CallToolRequestParams::new("next".to_owned()).with_arguments(arguments)).await.unwrap();
        std::mem::forget(client);
        pid
    });
    eventually("worker-M shows as present", || worker_line(&project, "worker-M").contains(", present"));
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let waiting = std::thread::spawn({
        let root = project.root().to_owned();
        move || {
            let run =
                crate::support::Mcc::new(&root).args(["worker", "next", "--as", "worker-B", "--wait", "150s"]).run();
            (Instant::now(), run)
        }
    });
    eventually("the hub logs the chat's end", || hub.log_text().contains("worker-M's chat ended"));
    let detected = killed.elapsed();
    let (back, run) = waiting.join().unwrap();
    assert!(run.stdout.contains("worker-M's chat ended"), "{run:?}");
    println!(
        "presence (mcp): server killed -> hub saw it end {:.3} s; -> task granted to another worker {:.1} s (grace 60 s)",
        detected.as_secs_f64(),
        back.duration_since(killed).as_secs_f64()
    );
    drop(runtime);
}
