//! Writes outside a task (docs/worker.md, "Writes outside a task"): the
//! worker's client looks at its git checkout when a task is granted and
//! again at `done`; the hub names what changed that the task does not
//! declare: a write outside (accepted, with a warning), a conflict with
//! another in-flight task's files (rejected, naming it and its holder), or
//! a shared change nobody can be blamed for.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{Hub, Project, eventually, git, mcc_bin, old_task};

/// A git repository with one tracked file, `README.md`, committed.
fn repository() -> Project {
    let project = Project::new();
    git(project.root(), &["init", "-q"]);
    project.write("README.md", "# the project\n");
    git(project.root(), &["add", "README.md"]);
    git(project.root(), &["commit", "-q", "-m", "start"]);
    project
}

fn add(hub: &Hub, tasks: Vec<Value>) {
    let added = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(added["type"], "tasks_added", "{added}");
}

fn worker(project: &Project, name: &str, args: &[&str]) -> crate::support::Run {
    project.mcc().args(["worker"]).args(args).args(["--as", name]).run()
}

fn next(project: &Project, name: &str, task: &str) {
    let got = worker(project, name, &["next"]);
    assert!(got.stdout.starts_with(&format!("task {task} ")), "{name} should get {task}: {got:?}");
}

fn status(project: &Project) -> String {
    let run = project.mcc().args(["status"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

fn shown(project: &Project, task: &str) -> String {
    let run = project.mcc().args(["tasks", "show", task]).run();
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
}

#[test]
fn a_worker_that_also_changes_another_tracked_file_is_told_and_the_file_is_named_in_status_and_on_the_task() {
    let project = repository();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("t", &["out/a.md"], &[])]);
    next(&project, "w1", "t");
    project.write("out/a.md", "the deliverable\n");
    project.write("README.md", "# the project, edited on the side\n");

    let done = worker(&project, "w1", &["done", "t", "--deliverable", "out/a.md"]);
    assert!(done.stdout.starts_with("accepted t.\n"), "a write outside is accepted: {done:?}");
    assert!(
        done.stdout.contains("warning: you also changed README.md, which your task does not declare as writes"),
        "{done:?}"
    );
    assert!(!done.stdout.contains("out/a.md, which"), "its own deliverable is not outside: {done:?}");

    let said = status(&project);
    assert!(said.contains("task t (w1, attempt 1) wrote outside its task: README.md"), "{said}");
    let record = shown(&project, "t");
    assert!(record.contains("      written outside the task: README.md\n"), "{record}");

    // Kept in the stored record: the same after a restart.
    drop(hub);
    let _hub = Hub::start(project.root(), &[]);
    assert!(status(&project).contains("wrote outside its task: README.md"));
    let report = project.mcc().args(["report"]).run();
    assert!(report.stdout.contains("1 write outside"), "{report:?}");
}

#[test]
fn two_workers_at_once_in_one_checkout_blame_a_change_on_nobody_and_not_the_others_own_file() {
    let project = repository();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &["a.md"], &[]), old_task("b", &["b.md"], &[])]);
    next(&project, "w1", "a");
    next(&project, "w2", "b");
    project.write("a.md", "a\n");
    project.write("b.md", "b\n");
    project.write("README.md", "# changed by one of them\n");

    let done = worker(&project, "w1", &["done", "a", "--deliverable", "a.md"]);
    assert!(done.stdout.starts_with("accepted a.\n"), "{done:?}");
    assert!(!done.stdout.contains("warning"), "nothing is pinned on w1: {done:?}");

    let status = status(&project);
    assert!(
        status.contains(
            "task a (w1, attempt 1) shared changes while others worked in the same checkout (blamed on nobody): README.md"
        ),
        "{status}"
    );
    assert!(!status.contains("wrote outside"), "{status}");
    assert!(!status.contains("b.md"), "w2's own declared file is its work, not a's: {status}");
    let record = shown(&project, "a");
    assert!(record.contains("shared changes (others worked in the same checkout; blamed on nobody): README.md"));
    assert!(!record.contains("written outside"), "{record}");
    let report = project.mcc().args(["report"]).run();
    assert!(!report.stdout.contains("write outside"), "{report:?}");
    assert!(report.stdout.contains("1 shared change"), "{report:?}");
}

#[test]
fn a_write_into_a_file_another_task_reserves_is_rejected_naming_that_task_and_its_holder() {
    let project = repository();
    let hub = Hub::start(project.root(), &[]);
    // `u` stays in flight, submitted, until the test lets its validation end.
    let mut u = old_task("u", &["u.md"], &[]);
    u["acceptance"]["validation"] = json!("until [ -f release ]; do sleep 0.05; done");
    add(&hub, vec![u]);
    next(&project, "w2", "u");
    project.write("u.md", "u\n");
    let mut w2_done = Command::new(mcc_bin())
        .args(["worker", "done", "u", "--as", "w2", "--deliverable", "u.md"])
        .current_dir(project.root())
        .env_remove("MCC_HUB")
        .env_remove("MCC_WORKER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("u is submitted", || shown(&project, "u").starts_with("task u · submitted"));

    add(&hub, vec![old_task("t", &["t.md"], &[])]);
    next(&project, "w1", "t");
    project.write("t.md", "t\n");
    project.write("u.md", "u, overwritten by w1\n");
    let done = worker(&project, "w1", &["done", "t", "--deliverable", "t.md"]);
    assert!(
        done.stdout.starts_with("rejected t (attempt 1): you changed u.md, which task u, held by w2 reserves: put it back as it was (`git checkout -- u.md`, or delete it if you created it) and report again"),
        "{done:?}"
    );
    let record = shown(&project, "t");
    assert!(record.contains("      conflict: changed u.md, which task u, held by w2 reserves\n"), "{record}");
    assert!(status(&project).contains("changed files another task reserves: u.md (task u, held by w2)"));

    project.write("release", "");
    let _ = w2_done.wait();
}

#[test]
fn a_workflow_accept_sees_the_files_written_outside_and_the_conflicts() {
    let project = repository();
    project.write(
        "flow.lua",
        r#"return { name = "strict", phases = { {
  name = "p",
  tasks = { { id = "t", description = "write t.md", write = "t.md" } },
  accept = function(task, report, ctx)
    if #report.outside > 0 then
      return false, "outside: " .. table.concat(report.outside, ",") .. "; conflicts: " .. #report.conflicts .. "; shared: " .. #report.shared
    end
    return true
  end,
} } }
"#,
    );
    git(project.root(), &["add", "flow.lua"]);
    git(project.root(), &["commit", "-q", "-m", "workflow"]);
    let _hub = Hub::start(project.root(), &["--workflow", &project.path("flow.lua").display().to_string()]);
    next(&project, "w1", "t");
    project.write("t.md", "t\n");
    project.write("notes.txt", "an untracked file, not ignored\n");
    let done = worker(&project, "w1", &["done", "t", "--deliverable", "t.md"]);
    assert!(
        done.stdout.starts_with("rejected t (attempt 1): outside: notes.txt; conflicts: 0; shared: 0\n"),
        "{done:?}"
    );

    // Put back, the same task passes: the look of its first grant is kept for it.
    std::fs::remove_file(project.path("notes.txt")).unwrap();
    let again = worker(&project, "w1", &["done", "t", "--deliverable", "t.md"]);
    assert!(again.stdout.starts_with("accepted t."), "{again:?}");
}
