//! A run's history, reviewable afterwards: `mcc tasks show` and `mcc
//! report` read every attempt, verdict, reason, validation output and
//! question from `.mcc/state.db`, with the hub stopped as with it up; each
//! `mcc run` of another workflow is a run of its own.

use std::path::Path;

use serde_json::json;

use crate::support::{Hub, Project, old_task};

/// A project holding a copy of the repository's demo and its worker.
fn demo_project() -> Project {
    let project = Project::new();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    for file in ["demo.lua", "demo/worker.sh"] {
        project.write(&format!("workflows/{file}"), &std::fs::read_to_string(source.join(file)).unwrap());
    }
    project
}

#[test]
fn the_demos_rejection_shows_in_the_report_and_in_tasks_show_after_the_hub_stopped() {
    let project = demo_project();
    let out = project
        .mcc()
        .args(["run", "workflows/demo.lua", "--port", "0", "--spawn", "3", "--", "sh", "workflows/demo/worker.sh"])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    // `mcc run` stopped the hub it started: everything below is read from the store.
    assert!(!project.path(".mcc/hub.json").exists(), "the hub is gone");

    let report = project.mcc().args(["report"]).run();
    assert_eq!(report.code, 0, "{report:?}");
    let text = &report.stdout;
    assert!(text.starts_with("run 1 of 1 · project "), "{text}");
    assert!(text.contains("workflow workflows/demo.lua"), "{text}");
    assert!(text.contains("7 tasks, 8 attempts, 1 rejection, 0 lease expiries"), "{text}");
    let note2 = text.lines().skip_while(|l| !l.starts_with("  note-2 ")).take(3).collect::<Vec<_>>().join("\n");
    assert!(note2.starts_with("  note-2 (phase notes): accepted, 2 attempts"), "{text}");
    assert!(
        note2.contains("1: spawn-") && note2.contains(", rejected: demo-out/notes/attempts.md has only"),
        "{note2}"
    );
    assert!(note2.contains("2: spawn-") && note2.contains(", accepted"), "{note2}");

    let json = project.mcc().args(["report", "--json"]).run().json();
    let row = json["perTask"].as_array().unwrap().iter().find(|r| r["id"] == "note-2").unwrap().clone();
    let first = &row["attempts"][0];
    assert_eq!(first["verdict"], "rejected", "{row}");
    assert!(first["worker"].as_str().unwrap().starts_with("spawn-"), "{row}");
    assert!(first["reasons"][0].as_str().unwrap().contains("write at least 30"), "{row}");
    assert_eq!(first["files"], json!(["demo-out/notes/attempts.md"]), "{row}");
    assert_eq!(json["run"]["workflow"], "workflows/demo.lua", "{json}");
    assert!(json["run"]["endedAt"].is_string(), "the run finished: {json}");

    let shown = project.mcc().args(["tasks", "show", "note-2"]).run();
    assert_eq!(shown.code, 0, "{shown:?}");
    let text = &shown.stdout;
    assert!(text.starts_with("task note-2 · accepted · attempt 2 · phase notes"), "{text}");
    let attempt1 = text.lines().find(|l| l.starts_with("  1 by spawn-")).unwrap_or_else(|| panic!("{text}"));
    assert!(attempt1.ends_with(" · rejected"), "{text}");
    assert!(text.contains("      reason: demo-out/notes/attempts.md has only"), "{text}");
    assert!(text.contains("      files submitted: demo-out/notes/attempts.md"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  2 by spawn-") && l.ends_with(" · accepted")), "{text}");

    // The index task's validation ran on its attempt, and says so.
    let index = project.mcc().args(["tasks", "show", "index"]).run().stdout;
    assert!(index.contains("      validation `test -s demo-out/INDEX.md` exited 0\n"), "{index}");

    let html = project.mcc().args(["report", "--html", "report.html"]).run();
    assert_eq!(html.code, 0, "{html:?}");
    let page = project.read("report.html");
    assert!(page.contains("<title>mcc report · workflows/demo.lua · run 1</title>"), "{page}");
    assert!(page.contains("<tr class=\"task\" data-task=\"note-2\">"), "a per-task table");
    assert!(page.contains("has only"), "the rejection's reason is on the page");
}

#[test]
fn a_failed_validation_keeps_the_tail_of_its_output_for_tasks_show_after_the_hub_stopped() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    project.write("note.md", "three words here");
    let mut task = old_task("count", &["note.md"], &[]);
    // The reason is on stdout (as a word count is), and stderr says more: long, so only its end is kept.
    let noise = "x".repeat(3000);
    task["acceptance"]["validation"] =
        json!(format!("echo {noise}; echo 'note.md has 3 words, wants 30'; echo 'checked note.md' >&2; exit 1"));
    let added = hub.connect().ask(json!({"type":"add_tasks","tasks":[task]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let worker = |args: &[&str]| project.mcc().args(["worker"]).args(args).args(["--as", "w1"]).run();
    assert_eq!(worker(&["next"]).code, 0);
    let done = worker(&["done", "count", "--deliverable", "note.md"]);
    assert!(done.stdout.contains("rejected count (attempt 1)"), "{done:?}");
    let with_hub = project.mcc().args(["tasks", "show", "count"]).run();
    // The hub's own answer carries the history (what the live page draws).
    let answer = hub.connect().ask(json!({"type":"show_task","taskId":"count"}));
    let validation = &answer["task"]["history"]["attempts"][0]["validation"];
    assert_eq!(validation["exitCode"], 1, "{answer}");
    assert!(validation["stderrTail"].as_str().unwrap().contains("checked note.md"), "{answer}");
    assert_eq!(hub.terminate(), Some(0));

    let shown = project.mcc().args(["tasks", "show", "count"]).run();
    assert_eq!(shown.code, 0, "{shown:?}");
    let text = &shown.stdout;
    assert!(text.contains("· rejected"), "{text}");
    assert!(text.contains("exited 1\n"), "{text}");
    assert!(text.contains("note.md has 3 words, wants 30"), "the stdout tail says why: {text}");
    assert!(text.contains("checked note.md"), "the stderr tail: {text}");
    assert!(text.contains("      files submitted: note.md"), "{text}");
    // With the hub up it printed the same.
    assert_eq!(with_hub.stdout, *text);

    let json = project.mcc().args(["tasks", "show", "count", "--json"]).run().json();
    let validation = &json["history"]["attempts"][0]["validation"];
    assert_eq!(validation["exitCode"], 1, "{json}");
    let stdout = validation["stdoutTail"].as_str().unwrap();
    assert!(stdout.len() <= 2048 && stdout.ends_with("note.md has 3 words, wants 30"), "{stdout}");
    assert_eq!(json["history"]["attempts"][1]["verdict"], "running", "back with the worker: {json}");
    assert_eq!(json["state"], "assigned", "{json}");
}

/// A workflow `name` of `n` tasks with ids `name-1`..., each accepted as
/// it comes. Its phase is named after it: the workflow state in the store
/// is one for the project, so a second workflow with a phase of the same
/// name would find it done.
fn workflow(project: &Project, name: &str, n: usize) {
    project.write(
        &format!("workflows/{name}.lua"),
        &format!(
            r#"return workflow {{
  name = "{name}",
  phases = {{ phase "{name}-work" {{ split = function(ctx)
    local tasks = {{}}
    for i = 1, {n} do tasks[#tasks + 1] = task {{ id = "{name}-" .. i, description = "Task " .. i }} end
    return tasks
  end }} }},
}}
"#
        ),
    );
}

fn run(project: &Project, name: &str) {
    let file = format!("workflows/{name}.lua");
    let out = project.mcc().args(["run", &file, "--port", "0", "--spawn", "1", "--", "true"]).run();
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn two_workflows_run_in_one_project_are_two_runs_and_the_report_picks_one_or_all() {
    let project = Project::new();
    workflow(&project, "alpha", 2);
    workflow(&project, "beta", 3);
    run(&project, "alpha");
    run(&project, "beta");

    let latest = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!((latest["run"]["id"].as_i64(), latest["run"]["of"].as_i64()), (Some(2), Some(2)), "{latest}");
    assert_eq!(latest["run"]["workflow"], "workflows/beta.lua", "{latest}");
    assert_eq!(latest["tasks"], 3, "only beta's tasks: {latest}");
    assert_eq!(latest["attempts"], 3, "only beta's attempts: {latest}");
    let ids: Vec<&str> = latest["perTask"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["beta-1", "beta-2", "beta-3"]);

    let first = project.mcc().args(["report", "--run", "1", "--json"]).run().json();
    assert_eq!(first["run"]["workflow"], "workflows/alpha.lua", "{first}");
    assert_eq!((first["tasks"].as_u64(), first["attempts"].as_u64()), (Some(2), Some(2)), "{first}");
    assert!(first["run"]["endedAt"].is_string(), "{first}");

    let all = project.mcc().args(["report", "--all"]).run();
    assert_eq!(all.code, 0, "{all:?}");
    let headers: Vec<&str> = all.stdout.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(headers.len(), 2, "{}", all.stdout);
    assert!(
        headers[0].starts_with("run 1 of 2") && headers[0].ends_with("workflow workflows/alpha.lua"),
        "{headers:?}"
    );
    assert!(headers[1].starts_with("run 2 of 2") && headers[1].ends_with("workflow workflows/beta.lua"), "{headers:?}");
    let all = project.mcc().args(["report", "--all", "--json"]).run().json();
    assert_eq!(all["runs"].as_array().map(Vec::len), Some(2), "{all}");

    let missing = project.mcc().args(["report", "--run", "7"]).run();
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no run 7") && missing.stderr.contains("its runs: 1, 2"), "{}", missing.stderr);

    // A task names the run that made it.
    let shown = project.mcc().args(["tasks", "show", "alpha-1", "--json"]).run().json();
    assert_eq!(shown["history"]["run"], 1, "{shown}");
}

#[test]
fn a_store_written_before_runs_opens_and_reports_as_one_run() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let added =
        hub.connect().ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let worker = |args: &[&str]| project.mcc().args(["worker"]).args(args).args(["--as", "w1"]).run();
    assert_eq!(worker(&["next"]).code, 0);
    assert_eq!(worker(&["done", "a"]).code, 0);
    assert_eq!(hub.terminate(), Some(0));
    // Back to schema 2, as an mcc before runs left it.
    {
        let db = rusqlite::Connection::open(project.path(".mcc/state.db")).unwrap();
        db.execute_batch(
            "DROP TABLE runs; DROP TABLE validations;
             ALTER TABLE tasks DROP COLUMN run_id; ALTER TABLE events DROP COLUMN run_id;
             UPDATE meta SET value = '2' WHERE key = 'schema_version';",
        )
        .unwrap();
    }

    // Read-only, by `tasks show` and by the report: nothing is migrated until a hub opens it.
    let shown = project.mcc().args(["tasks", "show", "a"]).run();
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(
        shown.stdout.lines().any(|l| l.starts_with("  1 by w1 ·") && l.ends_with("· accepted")),
        "{}",
        shown.stdout
    );
    let report = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!((report["run"]["id"].as_i64(), report["run"]["of"].as_i64()), (Some(1), Some(1)), "{report}");
    assert_eq!((report["tasks"].as_u64(), report["accepted"].as_u64()), (Some(2), Some(1)), "{report}");
    let version = || -> String {
        let db = rusqlite::Connection::open(project.path(".mcc/state.db")).unwrap();
        db.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(version(), "2", "a report writes nothing");

    // A hub migrates the store and goes on with run 1.
    let hub = Hub::start(project.root(), &[]);
    assert_eq!(version(), "4", "migrated");
    let db = rusqlite::Connection::open(project.path(".mcc/state.db")).unwrap();
    let unassigned: i64 = db.query_row("SELECT COUNT(*) FROM events WHERE run_id IS NOT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(unassigned, 0, "every event is run 1's");
    drop(db);
    assert_eq!(worker(&["next"]).code, 0);
    assert_eq!(worker(&["done", "b"]).code, 4, "accepted, and all work is done");
    drop(hub);
    let report = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!((report["run"]["id"].as_i64(), report["accepted"].as_u64()), (Some(1), Some(2)), "{report}");
}

#[test]
fn a_question_and_its_answer_stay_in_tasks_show_and_the_report_after_the_hub_stopped() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let added = hub.connect().ask(json!({"type":"add_tasks","tasks":[old_task("q", &[], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let worker = |args: &[&str]| project.mcc().args(["worker"]).args(args).args(["--as", "w1"]).run();
    assert_eq!(worker(&["next"]).code, 0);
    let blocked = worker(&["block", "q", "--question", "tabs or spaces?", "--wait", "0s"]);
    assert!(blocked.stdout.contains("task q waits for the engineer"), "{blocked:?}");
    let answered = project.mcc().args(["answer", "q", "spaces, four"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    assert_eq!(hub.terminate(), Some(0));

    let text = project.mcc().args(["tasks", "show", "q"]).run().stdout;
    assert!(text.lines().any(|l| l.starts_with("  1 by w1 ·") && l.ends_with("· blocked")), "{text}");
    assert!(text.contains("question by w1 (attempt 1) at "), "{text}");
    assert!(text.contains(": tabs or spaces?\n  answer at "), "{text}");
    assert!(text.contains(": spaces, four\n"), "{text}");

    let report = project.mcc().args(["report"]).run().stdout;
    assert!(report.contains("questions:\n  q (w1): tabs or spaces? → answer: spaces, four\n"), "{report}");
    let json = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!(json["questions"][0]["task"], "q", "{json}");
    assert_eq!(json["questions"][0]["answer"], "spaces, four", "{json}");
    assert_eq!(json["engineerPrompts"], 1, "{json}");
}
