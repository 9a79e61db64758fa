//! What a run produced survives the checkout: each attempt's declared write
//! files are kept in the store at its `done`, printed byte for byte by
//! `mcc tasks show ID --attempt N --file PATH` (with the hub up or stopped,
//! whatever the checkout holds now), and a clone of the repository is
//! brought to the accepted files from the store.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::git;
use crate::support::{Hub, Project, mcc_bin, old_task};

fn add(hub: &Hub, tasks: Vec<Value>) {
    let added = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(added["type"], "tasks_added", "{added}");
}

/// `mcc ARGS` in `root`: its exit code and the exact bytes of its stdout.
pub(crate) fn raw(root: &Path, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(mcc_bin())
        .args(args)
        .current_dir(root)
        .env_remove("MCC_HUB")
        .env_remove("MCC_WORKER")
        .stdin(Stdio::null())
        .output()
        .expect("run mcc");
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn worker(project: &Project, args: &[&str]) -> crate::support::Run {
    project.mcc().args(["worker"]).args(args).args(["--as", "w1"]).run()
}

/// Task `t` declares `out/f.bin`; a worker takes it, writes every byte value
/// there (a NUL, no newline at the end) and is accepted. Returns the bytes.
pub(crate) fn submit_every_byte(project: &Project, hub: &Hub) -> Vec<u8> {
    add(hub, vec![old_task("t", &["out/f.bin"], &[])]);
    assert_eq!(worker(project, &["next"]).code, 0);
    let bytes: Vec<u8> = (0..=255u8).rev().chain([0, 0, b'x']).collect();
    std::fs::create_dir_all(project.path("out")).unwrap();
    std::fs::write(project.path("out/f.bin"), &bytes).unwrap();
    let done = worker(project, &["done", "t", "--deliverable", "out/f.bin"]);
    assert!(done.stdout.starts_with("accepted t."), "{done:?}");
    bytes
}

#[test]
fn a_submitted_file_is_printed_exactly_after_the_checkout_changed_and_after_the_hub_stopped() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let bytes = submit_every_byte(&project, &hub);

    let show_file = ["tasks", "show", "t", "--attempt", "1", "--file", "out/f.bin"];
    let (code, printed, err) = raw(project.root(), &show_file);
    assert_eq!((code, printed == bytes), (0, true), "{err}");
    // The checkout moves on; what the attempt submitted does not.
    std::fs::write(project.path("out/f.bin"), "changed since").unwrap();
    assert_eq!(raw(project.root(), &show_file).1, bytes);

    let listed = project.mcc().args(["tasks", "show", "t", "--attempt", "1"]).run();
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.starts_with("task t · attempt 1 · 1 file at `done`\n"), "{}", listed.stdout);
    let sha = mcc_sha256(&bytes);
    assert!(
        listed.stdout.contains(&format!("  out/f.bin  259 bytes  sha256 {}  kept\n", &sha[..12])),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("next: `mcc tasks show t --attempt 1 --file out/f.bin`"), "{}", listed.stdout);
    let shown = project.mcc().args(["tasks", "show", "t"]).run();
    assert!(
        shown.stdout.contains("      files kept: 1 of 1 (`mcc tasks show t --attempt 1` lists them)\n"),
        "{}",
        shown.stdout
    );
    let json = project.mcc().args(["tasks", "show", "t", "--attempt", "1", "--json"]).run().json();
    assert_eq!(
        json["files"][0],
        json!({"task": "t", "attempt": 1, "path": "out/f.bin", "size": 259, "kept": "kept", "sha256": sha})
    );

    assert_eq!(hub.terminate(), Some(0));
    let (code, printed, err) = raw(project.root(), &show_file);
    assert_eq!((code, printed == bytes), (0, true), "with the hub stopped: {err}");

    // What is not there is named, with what is and the command to run.
    let no_file = project.mcc().args(["tasks", "show", "t", "--attempt", "1", "--file", "out/g.bin"]).run();
    assert_eq!(no_file.code, 1);
    assert!(
        no_file.stderr.contains(
            "submitted no `out/g.bin`; its files: out/f.bin: run `mcc tasks show t --attempt 1 --file out/f.bin`"
        ),
        "{}",
        no_file.stderr
    );
    let no_attempt = project.mcc().args(["tasks", "show", "t", "--attempt", "4"]).run();
    assert_eq!(no_attempt.code, 1);
    assert!(
        no_attempt.stderr.contains("task `t` has no attempt 4; its attempts: 1; attempts that kept files: 1: run `mcc tasks show t --attempt 1`"),
        "{}",
        no_attempt.stderr
    );
    let no_task = project.mcc().args(["tasks", "show", "nope", "--attempt", "1"]).run();
    assert_eq!(no_task.code, 1);
    assert!(
        no_task.stderr.contains("unknown task `nope`") && no_task.stderr.contains("mcc tasks list"),
        "{}",
        no_task.stderr
    );
}

/// The SHA-256 as mcc prints it, from the system's `sha256sum`.
fn mcc_sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

#[test]
fn a_rejected_attempt_and_the_accepted_one_after_it_are_both_kept() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut task = old_task("essay", &["essay.md", "scratch.md"], &[]);
    task["acceptance"]["validation"] = json!("grep -q conclusion essay.md");
    add(&hub, vec![task]);
    assert_eq!(worker(&project, &["next"]).code, 0);
    project.write("essay.md", "a draft without an ending\n");
    project.write("scratch.md", "notes\n");
    let rejected = worker(&project, &["done", "essay", "--deliverable", "essay.md"]);
    assert!(rejected.stdout.starts_with("rejected essay (attempt 1)"), "{rejected:?}");
    project.write("essay.md", "an essay with a conclusion\n");
    std::fs::remove_file(project.path("scratch.md")).unwrap();
    let accepted = worker(&project, &["done", "essay", "--deliverable", "essay.md"]);
    assert!(accepted.stdout.starts_with("accepted essay."), "{accepted:?}");
    assert_eq!(hub.terminate(), Some(0));

    let file = |attempt: &str, path: &str| {
        raw(project.root(), &["tasks", "show", "essay", "--attempt", attempt, "--file", path])
    };
    assert_eq!(file("1", "essay.md").1, b"a draft without an ending\n");
    assert_eq!(file("2", "essay.md").1, b"an essay with a conclusion\n");
    assert_eq!(file("1", "scratch.md").1, b"notes\n");
    let (code, printed, err) = file("2", "scratch.md");
    assert_eq!((code, printed.len()), (1, 0));
    assert!(err.contains("`scratch.md` is deleted (no file there at `done`)"), "{err}");
    let listed = project.mcc().args(["tasks", "show", "essay", "--attempt", "2"]).run().stdout;
    assert!(listed.contains("  scratch.md  deleted (no file there at `done`)\n"), "{listed}");
    let shown = project.mcc().args(["tasks", "show", "essay"]).run().stdout;
    assert!(shown.contains("      files kept: 2 of 2 (`mcc tasks show essay --attempt 1` lists them)"), "{shown}");
    assert!(shown.contains("      files kept: 1 of 2 (`mcc tasks show essay --attempt 2` lists them)"), "{shown}");
}

#[test]
fn what_passes_the_per_task_bound_is_recorded_as_not_kept() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-task-files-bytes", "100"]);
    add(&hub, vec![old_task("big", &["small.md", "big.md"], &[])]);
    assert_eq!(worker(&project, &["next"]).code, 0);
    project.write("small.md", &"s".repeat(60));
    project.write("big.md", &"b".repeat(60));
    let done = worker(&project, &["done", "big"]);
    assert!(done.stdout.starts_with("accepted big."), "{done:?}");
    let listed = project.mcc().args(["tasks", "show", "big", "--attempt", "1"]).run().stdout;
    assert!(listed.contains("  small.md  60 bytes  sha256 "), "{listed}");
    assert!(
        listed.contains("  big.md    60 bytes  not kept: over the hub's bound (--max-task-files-bytes)"),
        "{listed}"
    );
    drop(hub);
}

#[test]
fn a_clone_at_the_starting_commit_is_brought_to_the_accepted_files_from_the_store() {
    let project = Project::new();
    project.write(".gitignore", ".mcc/\n");
    project.write("docs/old.md", "to be removed\n");
    project.write("docs/kept.md", "first version\n");
    git(project.root(), &["init", "-q"]);
    git(project.root(), &["add", "."]);
    git(project.root(), &["commit", "-q", "-m", "start"]);

    let hub = Hub::start(project.root(), &[]);
    let mut draft = old_task("draft", &["docs/kept.md", "docs/new.md"], &[]);
    draft["acceptance"]["validation"] = json!("grep -q final docs/kept.md");
    add(&hub, vec![draft, old_task("tidy", &["docs/old.md"], &["draft"])]);
    assert_eq!(worker(&project, &["next"]).code, 0);
    project.write("docs/kept.md", "rejected version\n");
    project.write("docs/new.md", "new\n");
    assert!(worker(&project, &["done", "draft"]).stdout.starts_with("rejected draft"));
    project.write("docs/kept.md", "final version\n");
    assert!(worker(&project, &["done", "draft"]).stdout.starts_with("accepted draft."));
    assert_eq!(worker(&project, &["next"]).code, 0);
    std::fs::remove_file(project.path("docs/old.md")).unwrap();
    assert!(worker(&project, &["done", "tidy"]).stdout.starts_with("accepted tidy."));
    assert_eq!(hub.terminate(), Some(0));

    let clone = tempfile::tempdir().unwrap();
    let target = clone.path().join("repo");
    git(clone.path(), &["clone", "-q", project.root().to_str().unwrap(), "repo"]);
    // A link planted where an accepted file goes is replaced, never written through.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("new.md"), target.join("docs/new.md")).unwrap();

    let restored = mcc::restore_checkout(&target, project.root()).unwrap();
    assert_eq!(restored.written, ["docs/kept.md", "docs/new.md"], "{restored:?}");
    assert_eq!(restored.removed, ["docs/old.md"], "{restored:?}");
    assert!(restored.refused.is_empty(), "{restored:?}");
    for path in ["docs/kept.md", "docs/new.md"] {
        assert_eq!(std::fs::read(target.join(path)).unwrap(), std::fs::read(project.path(path)).unwrap(), "{path}");
    }
    assert!(!target.join("docs/new.md").is_symlink() && !outside.path().join("new.md").exists());
    assert!(!target.join("docs/old.md").exists());

    // Restored again: nothing left to change.
    let again = mcc::restore_checkout(&target, project.root()).unwrap();
    assert!(!again.changed(), "{again:?}");
    assert_eq!(again.unchanged.len(), 3, "{again:?}");
}
