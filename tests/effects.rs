//! Effects never stall the hub: a workflow command or a validation runs
//! while every worker still gets its answers, and what a grant started dies
//! with the grant.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually};

fn offer(ws: &mut Ws, worker: &str) -> Value {
    let reply = ws.ask(json!({"type":"next","worker":worker,"waitMs":0}));
    assert_eq!(reply["type"], "offer", "{reply}");
    reply["offer"].clone()
}

fn done_msg(worker: &str, offer: &Value, wait_ms: u64) -> Value {
    json!({"type":"done","worker":worker,"taskId":offer["task"]["id"],"attempt":offer["attempt"],"waitMs":wait_ms})
}

fn snapshot(ws: &mut Ws) -> Value {
    ws.ask(json!({"type":"snapshot"}))["snapshot"].clone()
}

/// A workflow whose `accept` of task `slow` runs a command that lasts until
/// the test writes `go`; the other tasks are accepted at once.
fn slow_accept(tasks: usize, command: &str) -> String {
    let list: Vec<String> = (1..=tasks).map(|i| format!("{{ id = \"t{i}\", description = \"t{i}\" }}")).collect();
    format!(
        r#"return {{ name = "slow-accept", phases = {{ {{ name = "p",
  tasks = {{ {{ id = "slow", description = "slow" }}, {} }},
  accept = function(task, report, ctx)
    if task.id ~= "slow" then return true end
    local r = ctx.run("{command}", {{ timeout = "300s" }})
    if not r.ok then return false, "the command failed: " .. r.stderr end
    -- The task view given to accept is still readable after the wait.
    return task.id == "slow" and r.stdout == "waited\n", "unexpected output " .. r.stdout
  end }} }} }}"#,
        list.join(", ")
    )
}

/// Three workers take and finish tasks until `count` are finished; the
/// latency of each command, in order. `connect` opens a worker's connection.
fn three_workers_finish(connect: &dyn Fn() -> Ws, count: usize) -> Vec<Duration> {
    let mut workers: Vec<(String, Ws)> = (1..=3).map(|i| (format!("w{i}"), connect())).collect();
    let (mut finished, mut latencies) = (0, Vec::new());
    while finished < count {
        let before = finished;
        for (name, ws) in &mut workers {
            let start = Instant::now();
            let o = offer(ws, name);
            latencies.push(start.elapsed());
            if o["type"] != "task" {
                continue;
            }
            let start = Instant::now();
            let verdict = ws.ask(done_msg(name, &o, 0));
            latencies.push(start.elapsed());
            assert_eq!(verdict["type"], "verdict", "{verdict}");
            assert_eq!(verdict["accepted"], true, "{verdict}");
            finished += 1;
        }
        assert!(finished > before, "no worker got a task while the workflow command ran");
    }
    latencies
}

#[test]
fn workers_keep_completing_tasks_while_accept_waits_on_a_command() {
    let project = Project::new();
    let wf = project.write("wf.lua", &slow_accept(9, "while [ ! -f go ]; do sleep 0.05; done; echo waited"));
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut slow = hub.connect();
    let first = offer(&mut slow, "slow-worker");
    assert_eq!(first["task"]["id"], "slow");
    slow.send(done_msg("slow-worker", &first, 60_000));
    // The command only ends once the others are through: a hub that waited
    // for it would answer none of them.
    three_workers_finish(&|| hub.connect(), 9);
    let mut ws = hub.connect();
    let snap = snapshot(&mut ws);
    assert_eq!(snap["counts"]["submitted"], 1, "{snap}");
    assert!(snap["log"].to_string().contains("waits on `while"), "status shows what the workflow waits on: {snap}");
    std::fs::write(project.path("go"), "").unwrap();
    let verdict = slow.recv();
    assert_eq!(verdict["type"], "verdict", "{verdict}");
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(verdict["next"]["type"], "all_done", "{verdict}");
}

/// At least 2 s of workflow command while three workers work and `mcc run`
/// follows, told to wait 500 ms for the hub's first answer (the command
/// outlasts that wait four times, as the 60 s version outlasts the default
/// 10 s); `cargo test` runs this one, the 60 s version is ignored and run
/// by name.
#[test]
fn a_workflow_command_four_times_mcc_runs_answer_wait_leaves_three_workers_working_and_mcc_run_attached() {
    command_for(Duration::from_secs(2), &["--answer-wait", "500ms"]);
}

/// The "Done when" run: `cargo test --test lib -- --ignored a_sixty_second --nocapture`
/// prints the latency of the workers' commands (p50, p99) during it.
#[test]
#[ignore = "runs for a minute; run by name to measure latency"]
fn a_sixty_second_workflow_command_leaves_three_workers_working_and_mcc_run_attached() {
    command_for(Duration::from_mins(1), &[]);
}

/// A real `mcc run` process, its output read as it comes; stopped with
/// SIGTERM (which stops its hub and the commands) if the test ends first.
struct McRun {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl McRun {
    fn start(root: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(crate::support::mcc_bin())
            .arg("run")
            .args(args)
            .current_dir(root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The address `mcc run` printed for the hub it started.
    fn hub_url(&self) -> String {
        let find = || {
            let out = self.output();
            out.lines().find_map(|l| l.strip_prefix("hub on ")).and_then(|l| l.split(' ').next()).map(str::to_owned)
        };
        eventually("mcc run prints its hub's address", || find().is_some());
        find().expect("printed")
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for McRun {
    fn drop(&mut self) {
        if self.running() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = self.child.wait();
        }
    }
}

/// The accepted counts of `mcc run`'s progress lines printed while a task
/// was submitted (the one whose verdict waits on the workflow command).
fn accepted_while_one_submitted(output: &str) -> std::collections::BTreeSet<u64> {
    output
        .lines()
        .filter(|l| l.contains(" · 1 submitted") || l.contains(", 1 submitted"))
        .filter_map(|l| l.split(" accepted").next()?.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// `mcc_run_args`: more arguments for `mcc run`.
fn command_for(length: Duration, mcc_run_args: &[&str]) {
    let project = Project::new();
    let secs = length.as_secs();
    // Enough tasks for the workers to keep going for the whole command.
    let tasks = usize::try_from(secs).unwrap() * 400;
    // The command ends when the test says so, after `length` at least and
    // once `mcc run` has shown progress during it.
    let wf = project.write("wf.lua", &slow_accept(tasks, "while [ ! -f go ]; do sleep 0.05; done; echo waited"));
    let root = project.root().display().to_string();
    let wf = wf.display().to_string();
    let mut args = vec![wf.as_str(), "--port", "0", "--dir", &root];
    args.extend_from_slice(mcc_run_args);
    let mut run = McRun::start(project.root(), &args);
    let url = run.hub_url();
    let token = project.read(".mcc/token");
    let connect = || Ws::connect_with_token(&url, token.trim());
    let mut slow = connect();
    let first = offer(&mut slow, "slow-worker");
    assert_eq!(first["task"]["id"], "slow", "{first}");
    slow.send(done_msg("slow-worker", &first, 1000 * (secs + 60)));
    let mut ws = connect();
    eventually("the slow task is submitted", || snapshot(&mut ws)["counts"]["submitted"] == 1);
    let start = Instant::now();
    let mut latencies = Vec::new();
    // Work while the command runs: each round is six commands of three workers.
    // A fast machine may finish every task before `length`: then the command
    // has run through all of that work, which is what is checked.
    loop {
        latencies.extend(three_workers_finish(&connect, 3));
        assert!(run.running(), "mcc run exited while the workflow command ran:\n{}", run.output());
        let drained = snapshot(&mut ws)["counts"]["ready"].as_u64().unwrap_or(0) < 3;
        if (drained || start.elapsed() >= length) && accepted_while_one_submitted(&run.output()).len() >= 2 {
            break;
        }
        assert!(!drained, "the tasks ran out before `mcc run` showed progress twice:\n{}", run.output());
    }
    let ran = start.elapsed();
    std::fs::write(project.path("go"), "").unwrap();
    let verdict = slow.recv();
    assert_eq!(verdict["accepted"], true, "{verdict}");
    // `mcc run` followed the whole time: progress printed while the command ran.
    let out = run.output();
    assert!(out.contains("waits on `while [ ! -f go ]"), "mcc run shows what the workflow waits on:\n{out}");
    // The slow worker may have got its next task with the verdict: it goes back for the others.
    let left_ack = slow.ask(json!({"type":"leave","worker":"slow-worker"}));
    assert_eq!(left_ack["type"], "ack", "{left_ack}");
    let accepted = snapshot(&mut ws)["counts"]["accepted"].as_u64().unwrap();
    let left = tasks + 1 - usize::try_from(accepted).unwrap();
    three_workers_finish(&connect, left);
    eventually("mcc run ends with the run", || !run.running());
    let code = run.child.wait().unwrap().code();
    let out = run.output();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("workflow finished"), "{out}");
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "workflow command of {:.1}s: {} worker commands, p50 {:?}, p99 {:?}, max {:?}; mcc run printed {} progress lines during it",
        ran.as_secs_f64(),
        latencies.len(),
        pick(0.5),
        pick(0.99),
        latencies.last().unwrap(),
        accepted_while_one_submitted(&out).len()
    );
}

#[test]
fn a_split_that_waits_on_a_command_does_not_stop_the_hub() {
    let project = Project::new();
    let wf = project.write(
        "wf.lua",
        r#"return { name = "slow-split", phases = { { name = "p", split = function(ctx)
  local r = ctx.run("while [ ! -f go ]; do sleep 0.05; done; echo split-ran")
  return { { id = "made-" .. r.stdout:gsub("%s", ""), description = "made by split" } }
end } } }"#,
    );
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut ws = hub.connect();
    assert_eq!(offer(&mut ws, "w1")["type"], "nothing_yet");
    assert!(snapshot(&mut ws)["log"].to_string().contains("split of phase \\\"p\\\" waits on"));
    std::fs::write(project.path("go"), "").unwrap();
    eventually("the split's task appears", || {
        snapshot(&mut ws)["tasks"].as_array().is_some_and(|t| t.iter().any(|t| t["id"] == "made-split-ran"))
    });
    assert_eq!(offer(&mut ws, "w1")["task"]["id"], "made-split-ran");
}

#[test]
fn ctx_run_in_assign_is_refused_with_where_to_run_it() {
    let project = Project::new();
    let wf = project.write(
        "wf.lua",
        "return { name = 'a', phases = { { name = 'p', tasks = { { id = 'x', description = 'x' } },\n  assign = function(worker, ready, ctx)\n    ctx.run('sleep 100')\n    return ready[1]\n  end } } }",
    );
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut ws = hub.connect();
    offer(&mut ws, "w1");
    let problems = snapshot(&mut ws)["problems"].to_string();
    assert!(problems.contains("wf.lua:3: in assign of phase"), "{problems}");
    assert!(problems.contains("run commands in split, accept or an on.* hook"), "{problems}");
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn a_cancelled_task_kills_its_running_validation_with_its_group() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let added = ws.ask(json!({"type":"add_tasks","tasks":[{"id":"v","description":"v",
        "acceptance":{"validation":"(echo $$ > child.pid; exec sleep 1000) & echo $$ > sh.pid; wait"}}]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let o = offer(&mut ws, "w1");
    ws.send(done_msg("w1", &o, 0));
    let pid = |name: &str| std::fs::read_to_string(project.path(name)).unwrap_or_default().trim().to_owned();
    eventually("the validation runs", || !pid("child.pid").is_empty() && !pid("sh.pid").is_empty());
    let (sh, child) = (pid("sh.pid"), pid("child.pid"));
    assert!(alive(&child));
    let mut engineer = hub.connect();
    let cancelled = engineer.ask(json!({"type":"cancel","taskId":"v"}));
    assert_eq!(cancelled["type"], "ack", "{cancelled}");
    eventually("the validation's shell and its child are gone", || !alive(&sh) && !alive(&child));
}

#[test]
fn a_done_whose_verdict_waits_on_validation_is_told_it_is_pending() {
    let project = Project::new();
    // The hub would wait 10 s for the verdict before saying it is pending.
    let hub = Hub::start(project.root(), &["--verdict-wait-floor", "200ms"]);
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[{"id":"v","description":"v",
        "acceptance":{"validation":"while [ ! -f go ]; do sleep 0.05; done"}}]}));
    let o = offer(&mut ws, "w1");
    // The hub answers within the wait plus its grace, before the client gives up.
    let answer = ws.ask(done_msg("w1", &o, 0));
    assert_eq!(answer["type"], "ack", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("the verdict on task v (attempt 1) is pending"), "{message}");
    assert!(message.contains("mcc tasks show v"), "{message}");
    // Every view shows w1 on the task it awaits a verdict for, with no
    // lease left to run out; no other worker can report it.
    let snap = snapshot(&mut ws);
    assert_eq!(snap["workers"][0]["holding"], "v", "{snap}");
    assert_eq!(snap["workers"][0]["leaseLeftMs"], Value::Null, "{snap}");
    let summary = hub.connect().ask(json!({"type":"subscribe"}));
    assert_eq!(summary["summary"]["workers"][0]["holding"], "v", "one rule in every view: {summary}");
    let other = ws.ask(done_msg("w2", &o, 0));
    assert!(other["error"].as_str().unwrap().contains("nobody holds it"), "{other}");
    std::fs::write(project.path("go"), "").unwrap();
    eventually("the verdict arrives", || snapshot(&mut ws)["counts"]["accepted"] == 1);
}

#[test]
fn worker_run_kills_a_task_command_and_everything_it_started_at_the_lease_margin() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let added = ws.ask(json!({"type":"add_tasks","tasks":[{"id":"long","description":"never ends","lease":"2s"}]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let script = "sleep 1000 & echo $! > child.pid; echo $$ > sh.pid; wait";
    let run = project.mcc().args(["worker", "run", "--as", "w1", "--max-tasks", "1", "--", "sh", "-c", script]).run();
    assert!(run.stdout.contains("ran past the task's lease of 2s"), "{run:?}");
    let (sh, child) = (project.read("sh.pid").trim().to_owned(), project.read("child.pid").trim().to_owned());
    eventually("the command and the sleep it started are gone", || !alive(&sh) && !alive(&child));
}

#[test]
fn worker_run_stopped_by_sigterm_kills_its_task_command_group() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut worker = worker_run_on_a_never_ending_task(&project, &hub);
    let pid = |name: &str| std::fs::read_to_string(project.path(name)).unwrap_or_default().trim().to_owned();
    let (sh, child) = (pid("sh.pid"), pid("child.pid"));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(worker.id()).unwrap()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = worker.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    eventually("the command and the sleep it started are gone", || !alive(&sh) && !alive(&child));
}

/// Live (not zombie) processes whose process group is `group`.
fn group_members(group: &str) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // After the command name: state, parent, group.
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == group {
            members.push(pid);
        }
    }
    members
}

#[test]
fn a_cancelled_task_kills_the_command_its_accept_waits_on_and_is_judged_anew_on_retry() {
    let project = Project::new();
    // The first attempt's accept waits on a command that never ends by itself.
    let wf = project.write(
        "wf.lua",
        r#"return { name = "parked", phases = { { name = "p", tasks = { { id = "slow", description = "slow" } },
  accept = function(task, report, ctx)
    if task.attempt == 1 then
      ctx.run("sleep 1000 & echo $$ > sh.pid; wait", { timeout = "300s" })
      return false, "the first attempt must never be judged"
    end
    return true
  end } } }"#,
    );
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut ws = hub.connect();
    let o = offer(&mut ws, "w1");
    assert_eq!(o["attempt"], 1, "{o}");
    ws.send(done_msg("w1", &o, 60_000));
    let pid = || std::fs::read_to_string(project.path("sh.pid")).unwrap_or_default().trim().to_owned();
    eventually("the accept's command runs", || !pid().is_empty());
    let group = pid();
    eventually("the command's sleep has started", || group_members(&group).len() >= 2);
    let cancel = project.mcc().args(["tasks", "cancel", "slow"]).run();
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let told = ws.recv();
    assert_eq!(told["type"], "ack", "the worker waiting on done hears of the cancel: {told}");
    eventually("the accept's command group has no live member", || group_members(&group).is_empty());
    // The dropped call left nothing behind: a retry is judged from scratch.
    let retry = project.mcc().args(["tasks", "retry", "slow"]).run();
    assert_eq!(retry.code, 0, "{retry:?}");
    let o = offer(&mut ws, "w1");
    assert_eq!(o["task"]["id"], "slow", "{o}");
    let verdict = ws.ask(done_msg("w1", &o, 10_000));
    assert_eq!(verdict["type"], "verdict", "{verdict}");
    assert_eq!(verdict["accepted"], true, "{verdict}");
    let snap = snapshot(&mut ws);
    assert_eq!(snap["counts"]["accepted"], 1, "{snap}");
    assert!(snap["problems"].as_array().is_none_or(Vec::is_empty), "{snap}");
}

#[test]
fn a_worker_waiting_on_done_hears_at_once_when_a_hook_cancels_its_task() {
    let project = Project::new();
    // `slow`'s accept waits on a command; a question on `asker` makes the
    // workflow's own hook cancel `slow` meanwhile and add a task instead.
    let wf = project.write(
        "wf.lua",
        r#"return { name = "hook-cancels", phases = { { name = "p",
  tasks = { { id = "slow", description = "slow" }, { id = "asker", description = "asker" } },
  accept = function(task, report, ctx)
    if task.id == "slow" then ctx.run("sleep 1000", { timeout = "300s" }) end
    return true
  end,
  on = { task_blocked = function(task, ctx)
    ctx.cancel("slow")
    ctx.add_task { id = "instead", description = "instead of slow" }
  end },
} } }"#,
    );
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut w1 = hub.connect();
    let slow = offer(&mut w1, "w1");
    assert_eq!(slow["task"]["id"], "slow", "{slow}");
    // It waits for its verdict far longer than the test does.
    w1.send(done_msg("w1", &slow, 600_000));
    eventually("the accept of slow waits on its command", || {
        let mut ws = hub.connect();
        snapshot(&mut ws)["tasks"].as_array().unwrap().iter().any(|t| t["id"] == "slow" && t["state"] == "submitted")
    });
    let mut w2 = hub.connect();
    let asker = offer(&mut w2, "w2");
    let blocked = w2.ask(json!({"type":"block","worker":"w2","taskId":"asker","attempt":asker["attempt"],"question":"which?","waitMs":0}));
    assert_eq!(blocked["type"], "ack", "{blocked}");
    let told = w1.recv_within(crate::support::DEADLINE).unwrap_or_else(|| {
        let snap = snapshot(&mut hub.connect());
        panic!("w1 heard nothing; tasks {}\nproblems {}\n{}", snap["tasks"], snap["problems"], hub.log_text())
    });
    assert_eq!(told["type"], "ack", "{told}");
    let message = told["message"].as_str().unwrap_or_default();
    assert!(message.contains("task slow was cancelled"), "{told}\n{}", hub.log_text());
    // As any answer to a waiting `done`, it comes with the next task.
    assert_eq!(told["next"]["task"]["id"], "instead", "{told}");
}

/// Start `mcc worker run` on a task whose command never ends, kill the
/// worker with SIGKILL; the hub and the command's process group, still alive.
fn sigkilled_worker_run(project: &Project) -> (Hub, String) {
    let hub = Hub::start(project.root(), &[]);
    let mut worker = worker_run_on_a_never_ending_task(project, &hub);
    let pid = |name: &str| std::fs::read_to_string(project.path(name)).unwrap_or_default().trim().to_owned();
    let group = pid("sh.pid");
    eventually("the command's sleep has started", || group_members(&group).len() >= 2);
    // A worker killed this way cannot kill anything itself.
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(!group_members(&group).is_empty(), "the command outlives its killed worker");
    (hub, group)
}

#[test]
fn the_next_worker_run_kills_what_a_sigkilled_worker_run_left_running() {
    let project = Project::new();
    let (_hub, group) = sigkilled_worker_run(&project);
    let cancel = project.mcc().args(["tasks", "cancel", "long"]).run();
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let next = project.mcc().args(["worker", "run", "--as", "w2", "--", "true"]).run();
    assert_eq!(next.code, 4, "nothing is left to do: {next:?}");
    assert!(next.stderr.contains("killed 1 command group"), "the worker says what it killed: {next:?}");
    eventually("the command group the killed worker left has no live member", || group_members(&group).is_empty());
}

#[test]
fn a_hub_starting_kills_what_a_sigkilled_worker_run_left_running() {
    let project = Project::new();
    let (hub, group) = sigkilled_worker_run(&project);
    // A hub stopping kills only its own commands: the worker's group lives on.
    assert_eq!(hub.terminate(), Some(0));
    assert!(!group_members(&group).is_empty(), "a stopping hub leaves a worker's command alone");
    let _hub = Hub::start(project.root(), &[]);
    eventually("the command group the killed worker left has no live member", || group_members(&group).is_empty());
}

/// `mcc worker run --as w1` on one task whose command never ends, once that
/// command runs (its shell's pid in `sh.pid`, its `sleep`'s in `child.pid`).
fn worker_run_on_a_never_ending_task(project: &Project, hub: &Hub) -> std::process::Child {
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[{"id":"long","description":"never ends"}]}));
    let script = "sleep 1000 & echo $! > child.pid; echo $$ > sh.pid; wait";
    let worker = std::process::Command::new(crate::support::mcc_bin())
        .args(["worker", "run", "--as", "w1", "--", "sh", "-c", script])
        .current_dir(project.root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = |name: &str| std::fs::read_to_string(project.path(name)).unwrap_or_default().trim().to_owned();
    eventually("the task command runs", || !pid("child.pid").is_empty() && !pid("sh.pid").is_empty());
    worker
}
