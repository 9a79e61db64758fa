//! Budgets in a real hub (issue 24, item 1): workers report what an attempt
//! cost, the hub holds new grants back once the run's or a phase's budget
//! is spent and says so, a task's budget fails the task or asks the
//! engineer, `mcc budget set` lets work go on, and what was spent survives
//! a restart. `mcc worker run` reads the cost from recorded Claude Code
//! and Codex outputs (tests/data/).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hub, Project, eventually};

fn hub_with(project: &Project, source: &str) -> Hub {
    project.write("wf.lua", source);
    Hub::start(project.root(), &["--workflow", &project.path("wf.lua").display().to_string()])
}

/// `mcc budget --json`'s `budgets`.
fn budgets(project: &Project) -> Value {
    let shown = project.mcc().args(["budget", "--json"]).run();
    assert_eq!(shown.code, 0, "{shown:?}");
    shown.json()["budgets"].clone()
}

const RUN_BUDGET: &str = r#"
return {
  name = "budgeted",
  budget = { usd = 1.00 },
  phases = {
    { name = "build", tasks = {
        { id = "t1", description = "one" },
        { id = "t2", description = "two" },
        { id = "t3", description = "three" } } },
  },
}
"#;

#[test]
fn a_spent_run_budget_holds_new_work_back_with_the_reason_until_the_engineer_raises_it() {
    let project = Project::new();
    let hub = hub_with(&project, RUN_BUDGET);
    let took = project.mcc().args(["worker", "next", "--as", "a", "--wait", "0s"]).run();
    assert!(took.stdout.contains("task t1"), "{took:?}");
    let first = project.mcc().args(["worker", "done", "t1", "--as", "a", "--cost", "0.60", "--wait", "0s"]).run();
    assert!(first.stdout.contains("task t2"), "under the budget the next task comes: {first:?}");
    let second = project
        .mcc()
        .args(["worker", "done", "t2", "--as", "a", "--cost", "0.50", "--tokens", "1200", "--wait", "0s"])
        .run();
    let why = "the run's budget of 1.00 USD is spent (1.10 USD); raise it with `mcc budget set --usd N`";
    assert!(second.stdout.contains(why), "{second:?}");

    // Another worker is told the same, as a reason a script can read.
    let offer = hub.connect().ask(json!({"type": "next", "worker": "b", "waitMs": 0}))["offer"].clone();
    assert_eq!(offer["type"], "nothing_yet", "{offer}");
    assert_eq!(offer["reason"]["kind"], "budget", "{offer}");
    let shown = project.mcc().args(["budget"]).run();
    assert!(shown.stdout.contains("run: 1.10 / 1.00 USD (spent: no new grants"), "{shown:?}");

    // A worker waits; the engineer raises the budget and the waiter gets t3 at once.
    let mut waiter = hub.connect();
    waiter.send(json!({"type": "next", "worker": "b", "waitMs": 120_000}));
    eventually("b waits", || {
        let snap = hub.connect().ask(json!({"type": "snapshot"}));
        snap["snapshot"]["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|x| x["name"] == "b" && x["waiting"] == true))
    });
    let raised = project.mcc().args(["budget", "set", "--usd", "5"]).run();
    assert_eq!(raised.code, 0, "{raised:?}");
    assert!(raised.stdout.contains("run: 1.10 / 5.00 USD"), "{raised:?}");
    let got = waiter.recv_within(Duration::from_mins(1)).expect("the waiter is answered once the budget is raised");
    assert_eq!(got["offer"]["task"]["id"], "t3", "{got}");
    let spent = &budgets(&project)["spent"];
    assert_eq!(spent["tokens"], 1200, "{spent}");
    let status = project.mcc().args(["status"]).run();
    assert!(status.stdout.contains("budget run: 1.10 / 5.00 USD"), "{status:?}");
    // Through files (a sandboxed chat) the status says the same.
    let status = project.mcc().args(["status", "--transport", "file"]).run();
    assert!(status.stdout.contains("budget run: 1.10 / 5.00 USD"), "{status:?}");
    let report = project.mcc().args(["report", "--json"]).run().json();
    let cost = &report["cost"];
    assert_eq!(cost["byWorker"]["a"]["tokens"], 1200, "{report}");
    assert_eq!(cost["byTask"]["t1"], json!({"usd": 0.6}), "{report}");
    assert_eq!(cost["byPhase"]["build"]["tokens"], 1200, "{report}");
}

#[test]
fn a_spent_phase_budget_holds_its_tasks_back_and_raising_it_lets_them_go() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        r#"
return {
  name = "phased",
  phases = {
    { name = "build", budget = { tokens = 1000 }, tasks = {
        { id = "b1", description = "one" }, { id = "b2", description = "two" } } },
  },
}
"#,
    );
    let mut ws = hub.connect();
    let offer = ws.ask(json!({"type": "next", "worker": "a", "waitMs": 0}))["offer"].clone();
    assert_eq!(offer["task"]["id"], "b1", "{offer}");
    let verdict = ws.ask(json!({"type": "done", "worker": "a", "taskId": "b1", "attempt": offer["attempt"],
        "waitMs": 0, "usage": {"tokens": 1500}}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(verdict["next"]["reason"]["kind"], "budget", "{verdict}");
    let text = verdict["next"]["message"].as_str().unwrap();
    assert!(
        text.contains("phase build's budget of 1000 tokens is spent (1500 tokens); raise it with `mcc budget set --phase build --tokens N`"),
        "{text}"
    );
    let raised = project.mcc().args(["budget", "set", "--phase", "build", "--tokens", "5000"]).run();
    assert!(raised.stdout.contains("phase build: 1500 / 5000 tokens"), "{raised:?}");
    let offer = ws.ask(json!({"type": "next", "worker": "a", "waitMs": 0}))["offer"].clone();
    assert_eq!(offer["task"]["id"], "b2", "{offer}");
}

#[test]
fn an_attempt_over_its_task_budget_fails_the_task_or_asks_the_engineer_as_the_workflow_says() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        r#"
return {
  name = "per-task",
  phases = {
    { name = "work", tasks = {
        { id = "strict", description = "fails past 0.50", budget = { usd = 0.50 } },
        { id = "asks", description = "asks past 0.50", budget = { usd = 0.50 }, over_budget = "ask" },
        { id = "free", description = "no budget" } } },
  },
}
"#,
    );
    let mut ws = hub.connect();
    let offer = ws.ask(json!({"type": "next", "worker": "a", "waitMs": 0}))["offer"].clone();
    assert_eq!(offer["task"]["id"], "strict", "{offer}");
    let verdict = ws.ask(json!({"type": "done", "worker": "a", "taskId": "strict", "attempt": offer["attempt"],
        "waitMs": 0, "usage": {"usd": 0.8}}));
    assert_eq!(verdict["type"], "verdict", "{verdict}");
    assert_eq!((verdict["accepted"].clone(), verdict["failed"].clone()), (json!(false), json!(true)), "{verdict}");
    assert_eq!(
        verdict["reasons"],
        json!(["attempt 1 of task strict cost 0.80 USD, over the task's budget of 0.50 USD"]),
        "{verdict}"
    );
    // The next task came with the verdict: `asks`, which goes to the engineer instead.
    assert_eq!(verdict["next"]["task"]["id"], "asks", "{verdict}");
    let asked = ws.ask(json!({"type": "done", "worker": "a", "taskId": "asks", "attempt": verdict["next"]["attempt"],
        "waitMs": 0, "usage": {"usd": 0.9}}));
    assert_eq!((asked["accepted"].clone(), asked["failed"].clone()), (json!(false), json!(false)), "{asked}");
    let snap = ws.ask(json!({"type": "snapshot"}))["snapshot"].clone();
    let task = |id: &str| snap["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).cloned().unwrap();
    assert_eq!(task("strict")["state"], "failed", "{snap}");
    assert_eq!(task("asks")["state"], "blocked", "{snap}");
    let question = task("asks")["question"].to_string();
    assert!(
        question.contains("over the task's budget of 0.50 USD")
            && question.contains("after raising it with `mcc budget set --task asks --usd N`"),
        "{question}"
    );
    // The engineer raises the task's budget and answers: it is ready again.
    let raised = project.mcc().args(["budget", "set", "--task", "asks", "--usd", "1"]).run();
    assert!(raised.stdout.contains("task asks: 1.00 USD per attempt (spent 0.90 USD)"), "{raised:?}");
    let answered = project.mcc().args(["answer", "asks", "go on"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    // A cost below zero gives nothing back: it counts as unknown.
    let free = ws.ask(json!({"type": "next", "worker": "a", "waitMs": 0}))["offer"].clone();
    assert_eq!(free["task"]["id"], "free", "{free}");
    let verdict = ws.ask(json!({"type": "done", "worker": "a", "taskId": "free", "attempt": free["attempt"],
        "waitMs": 0, "usage": {"usd": -5.0}}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
    let spent = budgets(&project)["spent"]["usd"].as_f64().unwrap();
    assert!((spent - 1.7).abs() < 1e-9, "0.80 and 0.90 were spent: {spent}");
    // Neither attempt was accepted: the report counts both as what rejected work cost.
    let report = project.mcc().args(["report"]).run();
    assert!(
        report.stdout.contains("cost 1.70 USD over 2 attempts that reported one; not accepted: 1.70 USD"),
        "{report:?}"
    );
}

#[test]
fn what_a_run_spent_and_the_budget_the_engineer_set_survive_a_hub_restart() {
    let project = Project::new();
    let hub = hub_with(&project, &RUN_BUDGET.replace("usd = 1.00", "tokens = 2000"));
    let took = project.mcc().args(["worker", "next", "--as", "a", "--wait", "0s"]).run();
    assert!(took.stdout.contains("task t1"), "{took:?}");
    let done = project.mcc().args(["worker", "done", "t1", "--as", "a", "--tokens", "2500", "--wait", "0s"]).run();
    assert!(done.stdout.contains("the run's budget of 2000 tokens is spent (2500 tokens)"), "{done:?}");
    let raised = project.mcc().args(["budget", "set", "--usd", "3"]).run();
    assert_eq!(raised.code, 0, "{raised:?}");
    hub.kill9();

    let _hub = Hub::start(project.root(), &[]);
    let after = budgets(&project);
    assert_eq!(after["spent"]["tokens"], 2500, "{after}");
    assert_eq!(after["lines"][0]["limit"], json!({"usd": 3.0, "tokens": 2000}), "{after}");
    let probe = project.mcc().args(["worker", "next", "--as", "b", "--wait", "0s"]).run();
    assert_eq!(probe.code, 3, "{probe:?}");
    assert!(probe.stdout.contains("the run's budget of 3.00 USD and 2000 tokens is spent"), "{probe:?}");
}

#[test]
fn mcc_worker_run_reports_what_claude_code_and_codex_said_they_spent() {
    let project = Project::new();
    let _hub = hub_with(
        &project,
        r#"
return {
  name = "headless",
  phases = { { name = "work", tasks = {
      { id = "by-claude", description = "one" }, { id = "by-codex", description = "two" } } } },
}
"#,
    );
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (worker, sample) in [("claude", "claude-print.json"), ("codex", "codex-exec.jsonl")] {
        let file = data.join(sample).display().to_string();
        let ran = project.mcc().args(["worker", "run", "--as", worker, "--max-tasks", "1", "--", "cat", &file]).run();
        assert!(ran.stdout.contains("accepted by-"), "{ran:?}");
    }
    let spent = &budgets(&project)["spent"];
    // Claude Code's cost and tokens (38 + 12874 + 151209 + 2931), then Codex's two turns' tokens.
    assert_eq!(spent["usd"], 0.421_377_5, "{spent}");
    assert_eq!(spent["tokens"], 167_052 + 50_153, "{spent}");
}

#[test]
fn the_budgeted_recipe_checks_clean_and_a_misspelled_budget_is_named_with_what_it_meant() {
    let project = Project::new();
    let made = project.mcc().args(["new", "spend", "--recipe", "budgeted"]).run();
    assert_eq!(made.code, 0, "{made:?}");
    let checked = project.mcc().args(["check", "workflows/spend.lua"]).run();
    assert_eq!(checked.code, 0, "{checked:?}");
    let listed = project.mcc().args(["recipes"]).run();
    assert!(listed.stdout.lines().any(|l| l.starts_with("budgeted")), "{listed:?}");

    project.write(
        "bad.lua",
        r#"
return {
  name = "typos",
  budjet = { usd = 1 },
  phases = {
    { name = "p", budget = { usb = 2 }, tasks = {
        { id = "t", description = "d", budget = { tokenz = 5 }, over_budget = "maybe" } } },
  },
}
"#,
    );
    let refused = project.mcc().args(["check", "bad.lua"]).run();
    assert_ne!(refused.code, 0, "{refused:?}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    for part in [
        "unknown field `budjet` (did you mean `budget`?)",
        "unknown field `usb` (did you mean `usd`?)",
        "unknown field `tokenz` (did you mean `tokens`?)",
        "`over_budget` must be \"fail\" or \"ask\"",
    ] {
        assert!(said.contains(part), "{part} missing from {said}");
    }
}

#[test]
fn a_rejected_task_waits_in_the_queue_rather_than_going_back_while_the_budget_is_spent() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        r#"
return {
  name = "rejected-over",
  budget = { usd = 1 },
  phases = { { name = "p", tasks = { { id = "t", description = "d", validation = "test -f never.txt" } } } },
}
"#,
    );
    let mut ws = hub.connect();
    let offer = ws.ask(json!({"type": "next", "worker": "a", "waitMs": 0}))["offer"].clone();
    let verdict = ws.ask(json!({"type": "done", "worker": "a", "taskId": "t", "attempt": offer["attempt"],
        "waitMs": 0, "usage": {"usd": 1.5}}));
    assert_eq!(verdict["accepted"], false, "{verdict}");
    assert_eq!(verdict["next"]["type"], "nothing_yet", "not handed back while the budget is spent: {verdict}");
    assert_eq!(verdict["next"]["reason"]["kind"], "budget", "{verdict}");
    let snap = ws.ask(json!({"type": "snapshot"}))["snapshot"].clone();
    assert_eq!(snap["tasks"][0]["state"], "ready", "{snap}");
}

#[test]
fn another_workflow_starts_a_run_that_has_spent_nothing_also_after_a_restart() {
    let project = Project::new();
    let hub = hub_with(&project, &RUN_BUDGET.replace("usd = 1.00", "tokens = 100"));
    let took = project.mcc().args(["worker", "next", "--as", "a", "--wait", "0s"]).run();
    assert!(took.stdout.contains("task t1"), "{took:?}");
    let done = project.mcc().args(["worker", "done", "t1", "--as", "a", "--tokens", "150", "--wait", "0s"]).run();
    assert!(done.stdout.contains("the run's budget of 100 tokens is spent"), "{done:?}");

    project.write(
        "next.lua",
        r#"return { name = "next", budget = { tokens = 100 }, phases = { { name = "p", tasks = { { id = "n1", description = "d" } } } } }"#,
    );
    let loaded = hub.connect().ask(json!({"type": "load_workflow", "path": "next.lua"}));
    assert_eq!(loaded["type"], "ack", "{loaded}");
    assert_eq!(budgets(&project)["spent"], json!({}), "a new run has spent nothing");
    // Work is handed out again (the earlier run's tasks left in the queue come first, as before).
    let took = project.mcc().args(["worker", "next", "--as", "b", "--wait", "0s"]).run();
    assert_eq!(took.code, 0, "not held back by the earlier run's spending: {took:?}");
    hub.kill9();

    let _hub = Hub::start(project.root(), &[]);
    assert_eq!(budgets(&project)["spent"], json!({}), "the earlier run's tasks do not count after a restart either");
}

#[test]
fn a_workflow_s_accept_sees_what_the_attempt_cost() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        r#"
return {
  name = "thrifty",
  phases = { {
    name = "p",
    tasks = { { id = "t", description = "d" } },
    accept = function(task, report, ctx)
      if report.usage and report.usage.usd > 0.25 then
        return false, ("too dear: %.2f USD for %d tokens"):format(report.usage.usd, report.usage.tokens)
      end
      return true
    end,
  } },
}
"#,
    );
    let mut ws = hub.connect();
    let offer = ws.ask(json!({"type": "next", "worker": "a", "waitMs": 0}))["offer"].clone();
    let verdict = ws.ask(json!({"type": "done", "worker": "a", "taskId": "t", "attempt": offer["attempt"],
        "waitMs": 0, "usage": {"usd": 0.3, "tokens": 4000}}));
    assert_eq!(verdict["reasons"], json!(["too dear: 0.30 USD for 4000 tokens"]), "{verdict}");
    let again = verdict["next"].clone();
    let verdict = ws.ask(json!({"type": "done", "worker": "a", "taskId": "t", "attempt": again["attempt"],
        "waitMs": 0, "usage": {"usd": 0.1, "tokens": 900}}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
}
