//! The hub cannot be turned against its machine through `.mcc/` (issue 19,
//! docs/security.md): a link in the state folder reaches nothing outside
//! the project, a FIFO or a huge file freezes and floods nothing, and every
//! file is read within the frame limit.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{DEADLINE, Hub, Project, eventually, mcc_bin, old_task};

/// Every name under `dir` with its contents, to show nothing there changed.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap_or_default()))
        .collect();
    found.sort();
    found
}

/// A folder outside the project with one file the hub must never touch.
fn outside() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.json"), "{\"keep\": true}").unwrap();
    dir
}

/// Run `mcc ARGS` in `root`; `None` if it has not exited within `limit` (it is then killed).
fn run_within(root: &Path, args: &[&str], limit: Duration) -> Option<Output> {
    let child = Command::new(mcc_bin())
        .args(args)
        .current_dir(root)
        .env_remove("MCC_WORKER")
        .env_remove("MCC_HUB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(limit) {
        Some(out.unwrap())
    } else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        None
    }
}

fn status_json(root: &Path) -> serde_json::Value {
    let out = run_within(root, &["status", "--json"], DEADLINE).expect("mcc status answers");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out:?}"))
}

fn problems(root: &Path) -> String {
    status_json(root)["problems"].to_string()
}

#[test]
fn a_hub_refuses_to_start_on_a_state_folder_with_a_link_and_names_it() {
    for link in [".mcc", ".mcc/answers", ".mcc/requests", ".mcc/reports", ".mcc/reports/rejected", ".mcc/tasks"] {
        let project = Project::new();
        std::fs::create_dir_all(project.path(".mcc/reports")).unwrap();
        let away = outside();
        let before = contents(away.path());
        let path = project.path(link);
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap();
        }
        std::os::unix::fs::symlink(away.path(), &path).unwrap();
        let out = run_within(project.root(), &["hub", "--port", "0", "--dir", "."], DEADLINE)
            .unwrap_or_else(|| panic!("the hub ran with {link} a link to {}", away.path().display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{link}: {stderr}");
        assert!(stderr.contains(&format!("{link} is a symbolic link")), "{link}: {stderr}");
        assert_eq!(contents(away.path()), before, "{link}: nothing outside the project changed");
    }
}

#[test]
fn links_put_in_the_state_folder_while_the_hub_runs_touch_nothing_outside() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (answers, rejected) = (outside(), outside());
    let before = (contents(answers.path()), contents(rejected.path()));
    std::fs::remove_dir(project.path(".mcc/answers")).unwrap();
    std::os::unix::fs::symlink(answers.path(), project.path(".mcc/answers")).unwrap();
    std::os::unix::fs::symlink(rejected.path(), project.path(".mcc/reports/rejected")).unwrap();
    // Planted temporary names, pointing at the file outside.
    let precious = answers.path().join("precious.json");
    for planted in [".mcc/requests/.x.tmp", ".mcc/reports/.y.tmp", ".mcc/requests/0badc0de.json.tmp"] {
        std::os::unix::fs::symlink(&precious, project.path(planted)).unwrap();
    }

    // A request a hostile process wrote: its answer would land outside.
    let request = json!({"id": "abc123", "message": {"type": "snapshot"}});
    std::fs::write(project.path(".mcc/requests/.abc123.json.part"), request.to_string()).unwrap();
    std::fs::rename(project.path(".mcc/requests/.abc123.json.part"), project.path(".mcc/requests/abc123.json"))
        .unwrap();
    // A malformed report: moving it aside would write outside.
    project.write(".mcc/reports/bad.json", "{");

    eventually("both links are named as problems", || {
        let problems = problems(project.root());
        problems.contains("answers is a symbolic link") && problems.contains("rejected is a symbolic link")
    });
    assert_eq!((contents(answers.path()), contents(rejected.path())), before, "nothing outside changed");
    assert!(project.path(".mcc/reports/bad.json").is_file(), "the report is left in place");
    assert!(project.path(".mcc/requests/abc123.json").is_file(), "the request is left in place");
    drop(hub);
}

#[test]
fn a_fifo_in_the_requests_folder_does_not_hold_up_status() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    hub.connect().ask(json!({"type": "add_tasks", "tasks": [old_task("t", &[], &[])]}));
    // What `mcc status` takes on this machine now, before the FIFO.
    let start = Instant::now();
    assert!(run_within(project.root(), &["status"], DEADLINE).is_some_and(|o| o.status.success()));
    let usual = start.elapsed();

    let fifo = project.path(".mcc/requests/f1f0.json");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    eventually("the FIFO is named as a problem", || {
        // A FIFO read the old way never returns; the margin is for a busy machine.
        let bound = usual + Duration::from_secs(5);
        let start = Instant::now();
        let out = run_within(project.root(), &["status", "--json"], bound)
            .unwrap_or_else(|| panic!("mcc status took over {bound:?} (usually {usual:?}) with a FIFO in requests/"));
        assert!(start.elapsed() <= bound);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        status["problems"].to_string().contains("is a FIFO")
    });
    assert!(fifo.exists(), "the FIFO is left in place");
    drop(hub);
}

#[test]
fn a_2_mb_report_file_is_moved_to_rejected_unread_with_the_limit_and_the_flag() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    hub.connect().ask(json!({"type": "add_tasks", "tasks": [old_task("t", &[], &[])]}));
    let notes = "n".repeat(2 << 20);
    let report = json!({"taskId": "t", "workerId": "w", "attempt": 1, "status": "completed", "notes": notes});
    project.write(".mcc/reports/.big.json.part", &report.to_string());
    std::fs::rename(project.path(".mcc/reports/.big.json.part"), project.path(".mcc/reports/big.json")).unwrap();
    let reason = project.path(".mcc/reports/rejected/big.json.error.txt");
    eventually("the report is moved to rejected/", || {
        reason.is_file() && project.path(".mcc/reports/rejected/big.json").is_file()
    });
    let reason = std::fs::read_to_string(reason).unwrap();
    assert!(reason.contains("over the limit of 1048576 bytes"), "{reason}");
    assert!(reason.contains("--max-frame-bytes"), "{reason}");
    assert!(!project.path(".mcc/reports/big.json").exists());
    let task = hub.connect().ask(json!({"type": "show_task", "taskId": "t"}));
    assert_ne!(task["task"]["status"], "completed", "{task}");
    assert!(problems(project.root()).contains("--max-frame-bytes"));
}

#[test]
fn a_fifo_named_as_a_deliverable_fails_word_count_at_once() {
    let project = Project::new();
    project.write(
        "wf.lua",
        r#"return { name = "counted", phases = { {
  name = "write",
  tasks = { { id = "essay", description = "write an essay" } },
  accept = function(task, report, ctx)
    local ok, err = pcall(ctx.word_count, report.deliverables[1])
    if ok then return true end
    return false, err
  end,
} } }"#,
    );
    let hub = Hub::start(project.root(), &["--workflow", &project.path("wf.lua").display().to_string()]);
    assert!(Command::new("mkfifo").arg(project.path("essay.md")).status().unwrap().success());
    let mut ws = hub.connect();
    let offer = ws.ask(json!({"type":"next","worker":"w1","waitMs":0}));
    assert_eq!(offer["type"], "offer", "{offer}");
    let offer = &offer["offer"];
    ws.send(json!({"type":"done","worker":"w1","taskId":"essay","attempt":offer["attempt"],"deliverables":["essay.md"],"waitMs":0}));
    let verdict = ws.recv_within(Duration::from_secs(5)).expect("a verdict within 5 s: the engine is not frozen");
    assert_eq!(verdict["accepted"], false, "{verdict}");
    let reason = verdict["reasons"].to_string();
    assert!(reason.contains("ctx.word_count(\\\"essay.md\\\")") && reason.contains("FIFO"), "{reason}");
}

#[test]
fn a_message_over_the_frame_limit_is_told_the_limit_its_size_and_the_flag() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    let big = json!({"type": "add_tasks", "tasks": [{"id": "t", "description": "d".repeat(2 << 20)}]});
    let answer = ws.ask(big.clone());
    let error = answer["error"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(error.contains("over the hub's frame limit of 1048576 bytes"), "{error}");
    assert!(error.contains("--max-frame-bytes"), "{error}");
    // The flag raises it.
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-frame-bytes", "4000000"]);
    let answer = hub.connect().ask(big);
    assert!(!answer.to_string().contains("frame limit"), "{answer}");
}

#[test]
fn a_2_mb_request_file_is_answered_with_the_limit_and_moved_to_rejected_unread() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let request = json!({"id": "b16", "message": {"type": "progress", "worker": "w", "taskId": "t", "note": "n".repeat(2 << 20)}});
    project.write(".mcc/requests/.b16.part", &request.to_string());
    std::fs::rename(project.path(".mcc/requests/.b16.part"), project.path(".mcc/requests/b16.json")).unwrap();
    let answer = project.path(".mcc/answers/b16.json");
    eventually("the request is answered", || answer.is_file());
    let answer = std::fs::read_to_string(answer).unwrap();
    assert!(answer.contains("over the limit of 1048576 bytes") && answer.contains("--max-frame-bytes"), "{answer}");
    assert!(project.path(".mcc/requests/rejected/b16.json").is_file(), "moved aside whole");
    assert!(!project.path(".mcc/requests/b16.json").exists());
    drop(hub);
}

#[test]
fn a_git_project_that_ran_a_hub_and_a_worker_stages_nothing_under_mcc() {
    let project = Project::new();
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).current_dir(project.root()).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q"]);
    project.write("README.md", "a project\n");
    // A state folder an older mcc made, without the file: the hub adds it at start.
    std::fs::create_dir_all(project.path(".mcc/reports")).unwrap();
    let hub = Hub::start(project.root(), &[]);
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": [old_task("a", &["a.md"], &[])]}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
    let next = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert_eq!(next.code, 0, "{next:?}");
    assert!(project.path(".mcc/token").is_file() && project.path(".mcc/state.db").is_file());
    assert_eq!(project.read(".mcc/.gitignore"), "*\n");
    git(&["add", "-A"]);
    let staged = git(&["diff", "--cached", "--name-only"]);
    assert_eq!(staged, "README.md\n", "nothing under .mcc/ is staged");
    drop(hub);
}
