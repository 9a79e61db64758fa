//! The engineer's view of a run: `mcc run`'s summary and `mcc report` say
//! only what is true, each figure with what it is measured from, and
//! `mcc report --html` writes one page that needs nothing from elsewhere.

use serde_json::json;

use crate::support::{Hub, Project, eventually, old_task};

/// A project with `tasks` independent tasks whose work takes `sleep` seconds.
fn fan_out(tasks: usize, sleep: &str) -> Project {
    let project = Project::new();
    project.write(
        "workflows/fan.lua",
        &format!(
            r#"return workflow {{
  name = "fan",
  phases = {{ phase "work" {{ split = function(ctx)
    local tasks = {{}}
    for i = 1, {tasks} do tasks[#tasks + 1] = task {{ id = "t" .. i, description = "Task " .. i }} end
    return tasks
  end }} }},
}}
"#
        ),
    );
    project.write("w.sh", &format!("sleep {sleep}\n"));
    project
}

fn run(project: &Project, workers: &str) -> crate::support::Run {
    project.mcc().args(["run", "workflows/fan.lua", "--port", "0", "--spawn", workers, "--", "sh", "w.sh"]).run()
}

#[test]
fn one_worker_gets_no_speedup_target_and_every_figure_is_explained() {
    let project = fan_out(2, "0.2");
    let out = run(&project, "1");
    assert_eq!(out.code, 0, "{out:?}");
    let text = &out.stdout;
    assert!(text.contains("parallel speedup 1.0x (one worker: nothing ran in parallel)"), "{text}");
    assert!(!text.contains("target 2-3x"), "{text}");
    assert!(
        text.contains("automation rate 100% (target 80% or more): 2 of 2 accepted tasks needed no engineer"),
        "{text}"
    );
    assert!(text.contains("engineer prompts 0 (0.00 per task)"), "{text}");
    assert!(text.contains("attempts per task 1.00"), "{text}");
    // Two attempts of a 0.2 s script: at least 0.4 s busy, however slow the machine.
    let line = text.lines().find(|l| l.contains("worker spawn-1")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("2 accepted, 0 rejected, busy "), "{text}");
    let busy: f64 = line
        .split("busy ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("no busy figure: {line}"));
    assert!(busy >= 0.4, "the worker's two attempts took time: {line}");
    assert!(text.contains("context efficiency n/a: no worker reported a score"), "{text}");
    let report = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!(report["workersUsed"], 1, "{report}");
    assert_eq!(report["promptsPerTask"], 0.0, "{report}");
    assert_eq!(report["timeline"].as_array().map(Vec::len), Some(2), "{report}");
    assert!(report["measuredFrom"]["parallelSpeedup"].is_string(), "{report}");
}

#[test]
fn a_run_with_nothing_accepted_has_no_automation_rate_and_an_empty_store_no_speedup() {
    let project = Project::new();
    project.write(
        "workflows/never.lua",
        r#"return workflow { name = "never", max_attempts = 1, phases = { phase "p" {
  tasks = { task { id = "a", description = "A", validation = "false" } } } } }
"#,
    );
    project.write("w.sh", "true\n");
    let out =
        project.mcc().args(["run", "workflows/never.lua", "--port", "0", "--spawn", "1", "--", "sh", "w.sh"]).run();
    assert_eq!(out.code, 1, "the task failed: {out:?}");
    assert!(out.stdout.contains("automation rate n/a: no task accepted yet"), "{}", out.stdout);
    assert!(!out.stdout.contains("automation rate 100%"), "{}", out.stdout);

    let empty = Project::new();
    drop(Hub::start(empty.root(), &[]));
    let report = empty.mcc().args(["report"]).run();
    assert_eq!(report.code, 0, "{report:?}");
    assert!(report.stdout.contains("tasks: none yet"), "{}", report.stdout);
    assert!(report.stdout.contains("parallel speedup n/a: no attempt was timed"), "{}", report.stdout);
    assert!(!report.stdout.contains("n/ax"), "{}", report.stdout);
}

#[test]
fn report_html_is_one_page_with_a_row_per_worker_and_a_bar_per_attempt() {
    let project = fan_out(6, "0.1");
    let out = run(&project, "3");
    assert_eq!(out.code, 0, "{out:?}");
    let report = project.mcc().args(["report", "--json"]).run().json();
    let page = project.mcc().args(["report", "--html", "report.html"]).run();
    assert_eq!(page.code, 0, "{page:?}");
    assert!(page.stdout.contains("wrote report.html"), "{}", page.stdout);
    let html = project.read("report.html");
    let used = report["workersUsed"].as_u64().unwrap();
    assert!(used >= 1);
    assert_eq!(html.matches("<g class=\"worker\"").count() as u64, used, "one row per worker that worked");
    assert_eq!(html.matches("<rect class=\"attempt accepted\"").count(), 6, "one bar per attempt, coloured by verdict");
    for metric in [
        "automation rate",
        "parallel speedup",
        "engineer prompts",
        "context efficiency",
        "attempts per task",
        "phase work",
    ] {
        assert!(html.contains(metric), "{metric} missing");
    }
    // Self-contained: nothing is fetched when the page opens.
    for fetch in ["src=", "href=", "url(", "@import", "<script", "<link"] {
        assert!(!html.contains(fetch), "the page fetches something: {fetch}");
    }
}

#[test]
fn a_worker_that_fails_once_then_finishes_is_busy_only_while_it_held_the_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let reply = hub.connect().ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[])]}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
    let worker = |args: &[&str], code: i32| {
        let out = project.mcc().args(["worker"]).args(args).args(["--as", "w"]).run();
        assert_eq!(out.code, code, "{args:?}: {out:?}");
    };
    worker(&["next"], 0);
    worker(&["fail", "a", "--reason", "stuck", "--wait", "0s"], 0);
    worker(&["next"], 0);
    // 4: accepted, and all work is done.
    worker(&["done", "a"], 4);
    let mut report = json!(null);
    eventually("the report shows the accepted attempt", || {
        report = project.mcc().args(["report", "--json"]).run().json();
        report["timeline"][1]["verdict"] == "accepted"
    });
    let bars = report["timeline"].as_array().unwrap();
    assert_eq!(bars.len(), 2, "{report}");
    assert_eq!((bars[0]["attempt"].as_u64(), bars[0]["verdict"].as_str()), (Some(1), Some("failed")), "{report}");
    assert!(bars[0]["toMs"].as_i64() <= bars[1]["fromMs"].as_i64(), "attempt 1 ended at the fail: {report}");
    assert_eq!(report["workers"][0]["busySeconds"], report["parallelSeconds"], "busy only while it held it: {report}");
    assert_eq!(report["parallelSpeedup"], 1.0, "one worker ran nothing in parallel: {report}");
}
