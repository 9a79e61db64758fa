//! `mcc worker next --worktree`: each worker works in a git worktree of its
//! own under `.mcc/worktrees/`; its declared files reach the project's
//! checkout only through an accepted `done`, and a write into another
//! task's file there is a conflict the hub rejects, the checkout untouched.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Hub, Mcc, Project, git, old_task};

/// A git repository with one commit holding `README.md` and `shared/b.md`, and a hub.
fn repository_with_a_hub() -> (Project, Hub) {
    let project = Project::new();
    git(project.root(), &["init", "-q"]);
    project.write("README.md", "hello\n");
    project.write("shared/b.md", "b as committed\n");
    git(project.root(), &["add", "."]);
    git(project.root(), &["commit", "-q", "-m", "first"]);
    let hub = Hub::start(project.root(), &[]);
    (project, hub)
}

fn add(hub: &Hub, tasks: Vec<Value>) {
    let added = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(added["type"], "tasks_added", "{added}");
}

/// `mcc worker next --as NAME --worktree --json` in the project root: the task and the folder to work in.
fn next_in_worktree(project: &Project, name: &str) -> (Value, PathBuf) {
    let next = project.mcc().args(["worker", "next", "--as", name, "--worktree", "--json"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    let shown = next.json();
    let folder = PathBuf::from(shown["work_in"].as_str().unwrap_or_else(|| panic!("no work_in: {shown}")));
    assert!(folder.starts_with(project.path(".mcc/worktrees")), "{shown}");
    (shown, folder)
}

/// `mcc worker ARGS --as NAME` run in `folder` (the worktree, as the chat would).
fn worker_in(folder: &Path, name: &str, args: &[&str]) -> crate::support::Run {
    Mcc::new(folder).args(["worker"]).args(args).args(["--as", name]).run()
}

#[test]
fn a_worktree_workers_accepted_file_lands_in_the_checkout_and_the_next_task_sees_it_there() {
    let (project, hub) = repository_with_a_hub();
    let mut reader = old_task("read-a", &["out/summary.md"], &["write-a"]);
    reader["context"]["targetFiles"] = json!(["out/a.md"]);
    add(&hub, vec![old_task("write-a", &["out/a.md"], &[]), reader]);

    let (shown, folder) = next_in_worktree(&project, "w1");
    assert_eq!(shown["offer"]["task"]["id"], "write-a", "{shown}");
    assert_eq!(std::fs::read_to_string(folder.join("README.md")).unwrap(), "hello\n");
    std::fs::create_dir_all(folder.join("out")).unwrap();
    std::fs::write(folder.join("out/a.md"), "written in the worktree\n").unwrap();
    // Until the hub accepts it, the checkout does not have it.
    assert!(!project.path("out/a.md").exists());

    let done = worker_in(&folder, "w1", &["done", "write-a", "--deliverable", "out/a.md"]);
    assert!(done.stdout.starts_with("accepted write-a."), "{done:?}");
    assert_eq!(project.read("out/a.md"), "written in the worktree\n");

    // The next task reads the accepted (uncommitted) file: the worktree has it as the checkout does.
    assert!(done.stdout.contains("read-a"), "{done:?}");
    assert!(done.stdout.contains(&format!("work in: {}", folder.display())), "{done:?}");
    assert_eq!(std::fs::read_to_string(folder.join("out/a.md")).unwrap(), "written in the worktree\n");
    let text = worker_in(&folder, "w1", &["next"]);
    assert!(text.stdout.contains(&format!("work in: {}", folder.display())), "{text:?}");
}

#[test]
fn a_worktree_write_into_another_tasks_file_is_a_conflict_rejected_and_the_checkout_is_unchanged() {
    let (project, hub) = repository_with_a_hub();
    add(&hub, vec![old_task("ta", &["out/a.md"], &[]), old_task("tb", &["shared/b.md"], &[])]);
    let (shown, folder) = next_in_worktree(&project, "w1");
    assert_eq!(shown["offer"]["task"]["id"], "ta", "{shown}");
    let other = project.mcc().args(["worker", "next", "--as", "w2"]).run();
    assert!(other.stdout.contains("tb"), "{other:?}");

    std::fs::create_dir_all(folder.join("out")).unwrap();
    std::fs::write(folder.join("out/a.md"), "a\n").unwrap();
    std::fs::write(folder.join("shared/b.md"), "w1 wrote over tb's file\n").unwrap();
    let done = worker_in(&folder, "w1", &["done", "ta", "--deliverable", "out/a.md"]);
    assert!(done.stdout.starts_with("rejected ta (attempt 1)"), "{done:?}");
    assert!(done.stdout.contains("shared/b.md") && done.stdout.contains("tb"), "{done:?}");
    assert!(done.stdout.contains("w2"), "{done:?}");

    assert!(!project.path("out/a.md").exists(), "the rejected attempt's file reached the checkout");
    assert_eq!(project.read("shared/b.md"), "b as committed\n");
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(project.root())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "", "the checkout changed");
}

#[test]
fn leaving_removes_the_workers_worktree() {
    let (project, hub) = repository_with_a_hub();
    add(&hub, vec![old_task("ta", &["out/a.md"], &[])]);
    let (_, folder) = next_in_worktree(&project, "w1");
    let left = project.mcc().args(["worker", "leave", "--as", "w1"]).run();
    assert_eq!(left.code, 0, "{left:?}");
    assert!(left.stdout.contains("is removed"), "{left:?}");
    assert!(!folder.exists());
}

#[test]
fn in_its_worktree_a_worker_commits_its_own_tasks_file_but_not_another_workers() {
    let (project, hub) = repository_with_a_hub();
    add(&hub, vec![old_task("ta", &["out/a.md"], &[]), old_task("tb", &["shared/b.md"], &[])]);
    let installed = project.mcc().args(["guard", "install"]).run();
    assert_eq!(installed.code, 0, "{installed:?}");
    let (_, folder) = next_in_worktree(&project, "w1");
    assert!(project.mcc().args(["worker", "next", "--as", "w2"]).run().stdout.contains("tb"));

    std::fs::create_dir_all(folder.join("out")).unwrap();
    std::fs::write(folder.join("out/a.md"), "a\n").unwrap();
    let own = commit_in(&folder, "out/a.md");
    assert!(own.status.success(), "{}", String::from_utf8_lossy(&own.stderr));
    std::fs::write(folder.join("shared/b.md"), "over tb's file\n").unwrap();
    let other = commit_in(&folder, "shared/b.md");
    assert!(!other.status.success(), "w1 committed tb's file");
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(said.contains("shared/b.md: task `tb` (attempt 1), held by w2"), "{said}");
}

/// `git add PATH && git commit` in `folder` with hooks on and no `MCC_WORKER`.
fn commit_in(folder: &Path, path: &str) -> std::process::Output {
    git(folder, &["add", path]);
    std::process::Command::new("git")
        .args(["-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false"])
        .args(["commit", "-q", "-m", path])
        .current_dir(folder)
        .env_remove("MCC_WORKER")
        .output()
        .expect("run git commit")
}
