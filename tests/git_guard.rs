//! `mcc guard install`: a git pre-commit hook refuses a commit of a file
//! another worker's in-flight task reserves, with the hub running or
//! stopped; an unrelated commit passes, a hook already there still runs
//! first, and `mcc guard uninstall` puts it back byte for byte.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::support::{Hub, Project, git, old_task};

/// `git add PATH && git commit -m MESSAGE` in `cwd`, as a person would run
/// it (hooks on), with `worker` as `MCC_WORKER` when given.
fn commit(cwd: &Path, path: &str, message: &str, worker: Option<&str>) -> Output {
    git(cwd, &["add", path]);
    let mut cmd = Command::new("git");
    cmd.args(["-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false"])
        .args(["commit", "-q", "-m", message])
        .current_dir(cwd)
        .env_remove("MCC_WORKER")
        .stdin(Stdio::null());
    if let Some(name) = worker {
        cmd.env("MCC_WORKER", name);
    }
    cmd.output().expect("run git commit")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A git repository with one commit, a hub, and task `t` (writing
/// `out/a.md`) held by worker-A.
fn project_with_a_held_task() -> (Project, Hub) {
    let project = Project::new();
    git(project.root(), &["init", "-q"]);
    project.write("README.md", "hello\n");
    git(project.root(), &["add", "README.md"]);
    git(project.root(), &["commit", "-q", "-m", "first"]);
    let hub = Hub::start(project.root(), &[]);
    let added = hub.connect().ask(json!({"type": "add_tasks", "tasks": [old_task("t", &["out/a.md"], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let next = project.mcc().args(["worker", "next", "--as", "worker-A"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    (project, hub)
}

fn install(project: &Project) {
    let installed = project.mcc().args(["guard", "install"]).run();
    assert_eq!(installed.code, 0, "{installed:?}");
}

#[test]
fn a_commit_of_a_file_another_worker_holds_is_refused_with_the_way_out_even_with_the_hub_stopped() {
    let (project, hub) = project_with_a_held_task();
    install(&project);
    project.write("out/a.md", "the engineer's edit\n");

    let refused = commit(project.root(), "out/a.md", "edit a", None);
    assert!(!refused.status.success(), "the commit went through");
    let said = stderr(&refused);
    assert!(said.contains("out/a.md: task `t` (attempt 1), held by worker-A"), "{said}");
    assert!(said.contains("`git commit --no-verify`"), "{said}");
    assert!(said.contains("`mcc tasks cancel t`"), "{said}");

    // The worker that holds the task may commit its own file.
    assert!(commit(project.root(), "out/a.md", "a by its holder", Some("worker-A")).status.success());

    assert_eq!(hub.terminate(), Some(0));
    project.write("out/a.md", "another edit, hub stopped\n");
    let refused = commit(project.root(), "out/a.md", "edit a again", Some("worker-B"));
    assert!(!refused.status.success(), "the commit went through with the hub stopped");
    assert!(stderr(&refused).contains("held by worker-A"), "{}", stderr(&refused));
}

#[test]
fn an_unrelated_commit_passes_the_guard() {
    let (project, _hub) = project_with_a_held_task();
    install(&project);
    project.write("notes.md", "not reserved\n");
    let passed = commit(project.root(), "notes.md", "notes", None);
    assert!(passed.status.success(), "{}", stderr(&passed));
}

#[test]
fn a_hook_already_there_still_runs_first_and_comes_back_exactly_at_uninstall() {
    let (project, _hub) = project_with_a_held_task();
    let hooks = project.path(".git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let own = "#!/bin/sh\n# the team's own hook\necho ran >> \"$(git rev-parse --show-toplevel)/.git/own-hook-ran\"\n[ ! -e stop-here ]\n";
    std::fs::write(hooks.join("pre-commit"), own).unwrap();
    std::fs::set_permissions(hooks.join("pre-commit"), std::fs::Permissions::from_mode(0o750)).unwrap();
    install(&project);

    project.write("notes.md", "not reserved\n");
    let passed = commit(project.root(), "notes.md", "notes", None);
    assert!(passed.status.success(), "{}", stderr(&passed));
    assert_eq!(project.read(".git/own-hook-ran"), "ran\n");
    // Its failure stops the commit, before the guard is asked.
    project.write("stop-here", "");
    project.write("notes.md", "changed\n");
    assert!(!commit(project.root(), "notes.md", "notes again", None).status.success());
    assert_eq!(project.read(".git/own-hook-ran"), "ran\nran\n");

    let removed = project.mcc().args(["guard", "uninstall"]).run();
    assert_eq!(removed.code, 0, "{removed:?}");
    assert_eq!(std::fs::read_to_string(hooks.join("pre-commit")).unwrap(), own);
    let mode = std::fs::metadata(hooks.join("pre-commit")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750);
    assert!(!hooks.join("pre-commit.before-mcc").exists());
    // Without the guard, the reserved file commits (the team's hook lets it through once unblocked).
    std::fs::remove_file(project.path("stop-here")).unwrap();
    project.write("out/a.md", "after uninstall\n");
    assert!(commit(project.root(), "out/a.md", "a", None).status.success());
}

#[test]
fn the_guard_goes_where_core_hooks_path_says() {
    let (project, _hub) = project_with_a_held_task();
    git(project.root(), &["config", "core.hooksPath", "team-hooks"]);
    install(&project);
    assert!(project.path("team-hooks/pre-commit").is_file());
    assert!(!project.path(".git/hooks/pre-commit").exists());
    project.write("out/a.md", "edit\n");
    assert!(!commit(project.root(), "out/a.md", "edit a", None).status.success());
}
