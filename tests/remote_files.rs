//! A worker in a clone of the project elsewhere: its task's declared read
//! files come to the clone, its declared write files go to the hub's
//! checkout with `done` and are judged there, and nothing else travels.
//! Two folders on loopback: the hub's project (a git repository) and a
//! `git clone` of it; the clone's `mcc` reaches the hub by `MCC_HUB` and
//! is told it is remote by `MCC_REMOTE_CLONE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::git;
use crate::support::{Hub, Mcc, Project, Run, eventually};

/// The hub's project, its clone and its hub.
struct Remote {
    project: Project,
    clone: tempfile::TempDir,
    hub: Hub,
}

impl Remote {
    /// A project with `files` committed, cloned, and a hub started on it with `hub_args`.
    fn new(files: &[(&str, &str)], hub_args: &[&str]) -> Self {
        let project = Project::new();
        project.write(".gitignore", ".mcc/\n");
        for (path, text) in files {
            project.write(path, text);
        }
        git(project.root(), &["init", "-q"]);
        git(project.root(), &["add", "-A"]);
        git(project.root(), &["commit", "-q", "-m", "start"]);
        let clone = tempfile::tempdir().unwrap();
        git(clone.path(), &["clone", "-q", &project.root().display().to_string(), "."]);
        let hub = Hub::start(project.root(), hub_args);
        Self { project, clone, hub }
    }

    fn add(&self, tasks: Vec<Value>) {
        let reply = self.hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
        assert_eq!(reply["type"], "tasks_added", "{reply}");
    }

    fn clone_path(&self, rel: &str) -> PathBuf {
        self.clone.path().join(rel)
    }

    fn clone_write(&self, rel: &str, text: &[u8]) {
        let path = self.clone_path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// `mcc ARGS` in the clone, as a worker on the other machine runs it.
    fn mcc(&self, args: &[&str]) -> Run {
        Mcc::new(self.clone.path())
            .env("MCC_REMOTE_CLONE", "1")
            .env("MCC_HUB", &self.hub.url)
            .env("MCC_WAIT", "1s")
            .args(args)
            .run()
    }

    /// Run a printed `mcc worker ...` line in the clone.
    fn run_line(&self, line: &str) -> Run {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "mcc", "{line}");
        self.mcc(&words[1..])
    }

    fn hub_file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.project.path(rel)).ok()
    }
}

/// A task reading `read` and writing `write`, accepted when `validation` exits 0 in the hub's checkout.
fn task(id: &str, read: &[&str], write: &[&str], validation: &str) -> Value {
    json!({
        "id": id,
        "description": format!("do {id}"),
        "context": {"targetFiles": read, "outputFiles": write, "requirements": []},
        "acceptance": {"criteria": ["validates"], "validation": validation},
        "dependencies": [],
    })
}

/// The `when done: ...` command a printed answer names.
fn when_done(run: &Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("when done: ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no `when done` line: {run:?}"))
}

/// The task id of a `when done: mcc worker done ID ...` line.
fn id_of(done: &str) -> String {
    done.split_whitespace().nth(3).unwrap().to_owned()
}

#[test]
fn a_remote_worker_drains_twenty_tasks_its_read_files_arrive_and_its_deliverables_pass_on_the_hub() {
    let ids: Vec<String> = (0..20).map(|i| format!("t-{i:02}")).collect();
    let committed: Vec<(String, String)> =
        ids.iter().map(|id| (format!("docs/{id}.txt"), format!("old text of {id}\n"))).collect();
    let mut files: Vec<(&str, &str)> = committed.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    files.push(("README.md", "the hub's readme\n"));
    let remote = Remote::new(&files, &[]);
    // Half the read files change on the hub after the clone was made: those must travel.
    for id in ids.iter().step_by(2) {
        remote.project.write(&format!("docs/{id}.txt"), &format!("new text of {id}\n"));
    }
    // The clone's copy may even be larger than the hub's: it only differs.
    remote.clone_write("docs/t-00.txt", b"the clone's own, longer, stale text of t-00\n");
    // The clone has files of its own that were never declared by any task.
    remote.clone_write("notes/private.txt", b"the clone's own notes\n");
    remote.clone_write("README.md", b"the clone's readme, changed\n");
    remote.add(
        ids.iter()
            .map(|id| {
                let out = format!("out/{id}.md");
                task(id, &[&format!("docs/{id}.txt")], &[&out], &format!("grep -q 'summary of {id}' {out}"))
            })
            .collect(),
    );

    let mut run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    let mut drained = Vec::new();
    while run.code == 0 {
        let done = when_done(&run);
        let id = id_of(&done);
        let read = std::fs::read_to_string(remote.clone_path(&format!("docs/{id}.txt"))).unwrap();
        let number: usize = id[2..].parse().unwrap();
        let expected =
            if number.is_multiple_of(2) { format!("new text of {id}\n") } else { format!("old text of {id}\n") };
        assert_eq!(read, expected, "the read file of {id} in the clone is the hub's: {run:?}");
        if number.is_multiple_of(2) {
            assert!(run.stdout.contains(&format!("files from the hub: docs/{id}.txt")), "{run:?}");
        } else {
            assert!(!run.stdout.contains("files from the hub"), "an unchanged file does not travel: {run:?}");
        }
        remote.clone_write(&format!("out/{id}.md"), format!("summary of {id}: {read}").as_bytes());
        run = remote.run_line(&done);
        assert!(run.stdout.starts_with(&format!("accepted {id}.")), "{run:?}");
        assert!(run.stdout.contains(&format!("files sent to the hub: out/{id}.md")), "{run:?}");
        assert_eq!(remote.hub_file(&format!("out/{id}.md")), Some(format!("summary of {id}: {read}")));
        drained.push(id);
    }
    assert_eq!(drained.len(), 20, "every task was done once: {drained:?}; last: {run:?}");
    assert_eq!(remote.hub_file("notes/private.txt"), None, "an undeclared file never travels");
    assert_eq!(remote.hub_file("README.md").as_deref(), Some("the hub's readme\n"));
    assert!(
        !remote.project.path(".mcc/uploads").exists()
            || std::fs::read_dir(remote.project.path(".mcc/uploads")).unwrap().next().is_none(),
        "accepted uploads leave nothing staged"
    );
}

#[test]
fn a_rejected_remote_attempt_leaves_the_hubs_file_as_it_was_and_the_clones_work_in_place() {
    let remote = Remote::new(&[("out/a.md", "the original\n")], &[]);
    remote.add(vec![task("t-a", &[], &["out/a.md"], "grep -q good out/a.md")]);
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    assert_eq!(std::fs::read_to_string(remote.clone_path("out/a.md")).unwrap(), "the original\n");
    remote.clone_write("out/a.md", b"a bad try\n");
    let run = remote.run_line(&when_done(&run));
    assert!(run.stdout.starts_with("rejected t-a (attempt 1)"), "{run:?}");
    assert_eq!(remote.hub_file("out/a.md").as_deref(), Some("the original\n"), "put back after the rejection");

    // The task comes back to the same worker: its own try in the clone is not overwritten.
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    assert_eq!(std::fs::read_to_string(remote.clone_path("out/a.md")).unwrap(), "a bad try\n", "{run:?}");
    remote.clone_write("out/a.md", b"a good try\n");
    let run = remote.run_line(&when_done(&run));
    assert!(run.stdout.starts_with("accepted t-a."), "{run:?}");
    assert_eq!(remote.hub_file("out/a.md").as_deref(), Some("a good try\n"));
}

/// An upload message for the task `worker` holds.
fn upload(worker: &str, task: &str, attempt: u64, path: &str, bytes: &[u8]) -> Value {
    json!({
        "type": "upload", "worker": worker, "taskId": task, "attempt": attempt, "path": path,
        "offset": 0, "size": bytes.len(), "sha256": sha256(bytes), "data": base64(bytes),
    })
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(bytes))
}

fn base64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

/// The error text of an answer that must be an error.
fn error_of(reply: &Value) -> String {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["error"].as_str().unwrap().to_owned()
}

#[test]
fn hostile_uploads_change_nothing_and_each_gets_a_clear_error() {
    let outside = tempfile::tempdir().unwrap();
    let remote = Remote::new(&[("out/keep.md", "kept\n")], &["--max-task-files-bytes", "1000"]);
    std::os::unix::fs::symlink(outside.path(), remote.project.path("linked")).unwrap();
    let writes = ["../escape.md", "/tmp/mcc-absolute.md", "linked/a.md", "out/keep.md", "out/big.bin"];
    remote.add(vec![task("t-h", &[], &writes, "true")]);
    let mut ws = remote.hub.connect_anonymous();
    let offer = ws.ask(json!({"type": "next", "worker": "far-away", "waitMs": 1000}));
    assert_eq!(offer["offer"]["task"]["id"], "t-h", "{offer}");
    let attempt = offer["offer"]["attempt"].as_u64().unwrap();
    let (mine, hostile_task) = ("far-away", "t-h");

    let err = error_of(&ws.ask(upload(mine, hostile_task, attempt, "../escape.md", b"x")));
    assert!(err.contains("`..`"), "{err}");
    let err = error_of(&ws.ask(upload(mine, hostile_task, attempt, "/tmp/mcc-absolute.md", b"x")));
    assert!(err.contains("absolute"), "{err}");
    let err = error_of(&ws.ask(upload(mine, hostile_task, attempt, "src/undeclared.rs", b"x")));
    assert!(err.contains("not a declared write file"), "{err}");
    let err = error_of(&ws.ask(upload(mine, hostile_task, attempt, "out/big.bin", &[7u8; 2000])));
    assert!(err.contains("out/big.bin") && err.contains("1000 bytes"), "the file and the bound are named: {err}");
    // Someone who does not hold the task may not upload to it.
    let err = error_of(&ws.ask(upload("someone-else", hostile_task, attempt, "out/keep.md", b"stolen\n")));
    assert!(err.contains("held by `far-away`"), "{err}");

    // Staged parts that would go through a link are refused at `done`, with nothing applied.
    let staged = ws.ask(upload(mine, hostile_task, attempt, "linked/a.md", b"through the link\n"));
    assert_eq!(staged["type"], "ack", "{staged}");
    let staged = ws.ask(upload(mine, hostile_task, attempt, "out/keep.md", b"changed\n"));
    assert_eq!(staged["type"], "ack", "{staged}");
    let files = json!([
        {"path": "out/keep.md", "size": 8, "sha256": sha256(b"changed\n")},
        {"path": "linked/a.md", "size": 17, "sha256": sha256(b"through the link\n")},
    ]);
    let done = json!({"type": "done", "worker": mine, "taskId": hostile_task, "attempt": attempt,
        "deliverables": [], "files": files, "waitMs": 0});
    let err = error_of(&ws.ask(done));
    assert!(err.contains("symbolic link") && err.contains("nothing was applied"), "{err}");
    assert!(!outside.path().join("a.md").exists(), "nothing written through the link");
    assert_eq!(remote.hub_file("out/keep.md").as_deref(), Some("kept\n"), "all or none");
    assert!(!Path::new("/tmp/mcc-absolute.md").exists());
    assert!(!remote.project.root().parent().unwrap().join("escape.md").exists());

    // A `done` naming a file it never uploaded whole is refused too; the task stays held.
    let files = json!([{"path": "out/keep.md", "size": 8, "sha256": sha256(b"other!!\n")}]);
    let done = json!({"type": "done", "worker": mine, "taskId": hostile_task, "attempt": attempt,
        "deliverables": [], "files": files, "waitMs": 0});
    let err = error_of(&ws.ask(done));
    assert!(err.contains("incomplete or changed"), "{err}");
    assert_eq!(remote.hub_file("out/keep.md").as_deref(), Some("kept\n"));
    let info = remote.hub.connect().ask(json!({"type": "show_task", "taskId": hostile_task}));
    assert_eq!(info["task"]["state"], "assigned", "{info}");
    assert_eq!(info["task"]["holder"], mine, "{info}");
}

#[test]
fn kill_9_of_the_hub_during_an_upload_loses_nothing_acknowledged_and_leaves_no_half_written_file() {
    let mut remote = Remote::new(&[("docs/in.txt", "input\n")], &[]);
    remote.add(vec![task("t-big", &["docs/in.txt"], &["out/big.bin"], "test -s out/big.bin")]);
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    let done = when_done(&run);
    // 12 MiB: 24 parts, each a frame and an answer.
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    remote.clone_write("out/big.bin", &big);

    let words: Vec<String> = done.split_whitespace().skip(1).map(str::to_owned).collect();
    let mut uploading = Command::new(crate::support::mcc_bin())
        .args(&words)
        .current_dir(remote.clone.path())
        .env("MCC_REMOTE_CLONE", "1")
        .env("MCC_HUB", &remote.hub.url)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let uploads = remote.project.path(".mcc/uploads");
    eventually("some parts of the upload are staged", || {
        walk(&uploads).iter().any(|p| p.parent().is_some_and(|d| d.ends_with("staged")))
    });
    let root = remote.project.root().to_owned();
    let Remote { project, clone, hub } = remote;
    hub.kill9();
    let _ = uploading.wait();
    assert!(!root.join("out/big.bin").exists(), "no half-written file in the checkout");
    let out_dir: Vec<PathBuf> = walk(&root.join("out"));
    assert!(out_dir.is_empty(), "no temporary file left in the checkout: {out_dir:?}");

    // A new hub has the grant the first acknowledged; the `done` run again lands whole.
    remote = Remote { hub: Hub::start(&root, &[]), project, clone };
    let run = remote.run_line(&done);
    assert!(run.stdout.starts_with("accepted t-big."), "{run:?}");
    assert_eq!(std::fs::read(root.join("out/big.bin")).unwrap(), big);
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_clone_at_another_commit_is_told_in_one_line_and_still_gets_its_task() {
    let remote = Remote::new(&[("docs/in.txt", "input\n")], &[]);
    remote.project.write("docs/later.txt", "later\n");
    git(remote.project.root(), &["add", "-A"]);
    git(remote.project.root(), &["commit", "-q", "-m", "later"]);
    remote.add(vec![task("t-c", &["docs/in.txt"], &["out/c.md"], "true")]);
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    assert_eq!(run.code, 0, "{run:?}");
    let notes: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("note: this clone is at commit")).collect();
    assert_eq!(notes.len(), 1, "{run:?}");
}

#[test]
fn a_local_worker_sees_no_change() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": [task("t-l", &[], &["out/l.md"], "true")]}));
    assert_eq!(reply["type"], "tasks_added");
    let run = project.mcc().env("MCC_WAIT", "1s").args(["worker", "next", "--as", "here"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("files from the hub") && !run.stdout.contains("note:"), "{run:?}");
}

#[test]
fn a_cut_upload_applies_nothing_and_a_done_sent_twice_applies_once() {
    let remote = Remote::new(&[("out/a.md", "the original\n")], &[]);
    remote.add(vec![task("t-cut", &[], &["out/a.md"], "grep -q whole out/a.md")]);
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    let done = when_done(&run);
    let attempt =
        run.stdout.split("attempt ").nth(1).unwrap().split([',', ')']).next().unwrap().parse::<u64>().unwrap();

    // The first half of a file goes up, then the connection is cut.
    let whole = b"the whole file\n";
    let mut ws = remote.hub.connect_anonymous();
    let mut first = upload("far-away", "t-cut", attempt, "out/a.md", whole);
    first["data"] = json!(base64(&whole[..7]));
    assert_eq!(ws.ask(first)["type"], "ack");
    ws.close();
    assert_eq!(remote.hub_file("out/a.md").as_deref(), Some("the original\n"), "a staged part is not the checkout");
    let mut ws = remote.hub.connect_anonymous();
    let files = json!([{"path": "out/a.md", "size": whole.len(), "sha256": sha256(whole)}]);
    let half_done = json!({"type": "done", "worker": "far-away", "taskId": "t-cut", "attempt": attempt,
        "deliverables": [], "files": files, "waitMs": 0});
    let err = error_of(&ws.ask(half_done));
    assert!(err.contains("incomplete") && err.contains("7 of 15 bytes"), "{err}");
    assert_eq!(remote.hub_file("out/a.md").as_deref(), Some("the original\n"));

    // `done` run again sends the file whole and is judged once.
    remote.clone_write("out/a.md", whole);
    let run = remote.run_line(&done);
    assert!(run.stdout.starts_with("accepted t-cut."), "{run:?}");
    assert_eq!(remote.hub_file("out/a.md").as_deref(), Some("the whole file\n"));
    // The engineer edits the accepted file; the same `done` again is a replay that writes nothing.
    remote.project.write("out/a.md", "edited on the hub after acceptance\n");
    let again = remote.run_line(&done);
    assert!(again.stdout.contains("accepted"), "the same verdict again: {again:?}");
    assert_eq!(remote.hub_file("out/a.md").as_deref(), Some("edited on the hub after acceptance\n"));
}

#[test]
fn read_files_over_the_bound_are_not_sent_and_the_answer_names_the_file_and_the_bound() {
    let remote = Remote::new(&[("docs/huge.txt", &"x".repeat(5000))], &["--max-task-files-bytes", "4096"]);
    remote.add(vec![task("t-huge", &["docs/huge.txt"], &["out/h.md"], "true")]);
    remote.project.write("docs/huge.txt", &"y".repeat(5000));
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    assert_eq!(run.code, 0, "the task is still granted: {run:?}");
    assert!(
        run.stdout.contains("could not be brought")
            && run.stdout.contains("docs/huge.txt")
            && run.stdout.contains("4096"),
        "{run:?}"
    );
    assert_eq!(std::fs::read_to_string(remote.clone_path("docs/huge.txt")).unwrap(), "x".repeat(5000));
}

/// A worker in a clone whose hub went away is told what a local one is: the
/// hub is down, run the same command again later (exit 3), never to start one.
#[test]
fn a_remote_worker_facing_a_killed_hub_is_told_to_run_the_same_command_again_later() {
    let remote = Remote::new(&[("docs/in.txt", "input\n")], &[]);
    remote.add(vec![task("t-d", &["docs/in.txt"], &["out/d.md"], "true")]);
    let run = remote.mcc(&["worker", "next", "--as", "far-away"]);
    let done = when_done(&run);
    remote.clone_write("out/d.md", b"done\n");
    let Remote { project: _project, clone, hub } = remote;
    let url = hub.url.clone();
    hub.kill9();
    for line in [done.as_str(), "mcc worker next --as far-away"] {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let run = Mcc::new(clone.path())
            .env("MCC_REMOTE_CLONE", "1")
            .env("MCC_HUB", &url)
            .env("MCC_WAIT", "1s")
            .args(&words)
            .run();
        assert_eq!(run.code, 3, "{line}: {run:?}");
        assert!(run.stdout.contains("the hub is down for now"), "{line}: {run:?}");
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(!said.contains("mcc hub") && !said.contains("mcc run"), "never told to start a hub: {said}");
    }
}
