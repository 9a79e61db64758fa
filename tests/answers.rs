//! Answers that fit an agent's screen: every `mcc worker` answer stays
//! within about 2,000 characters with the task id and the next command
//! first, what does not fit is in `.mcc/tasks/ID.md`, and the printed
//! commands run as printed from wherever the chat is.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Hub, Mcc, Project, Run, old_task};

/// What an agent is shown of a long output (Claude Code keeps about this much).
const SCREEN: usize = 2000;

fn add(hub: &Hub, tasks: Vec<Value>) {
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

fn next(cwd: &Path) -> Run {
    Mcc::new(cwd).args(["worker", "next", "--as", "A", "--wait", "1s"]).run()
}

/// The `when done:` command of an answer.
fn done_line(run: &Run) -> String {
    run.stdout.lines().find_map(|l| l.strip_prefix("when done: ")).unwrap_or_else(|| panic!("{run:?}")).to_owned()
}

/// Run a printed command line as a chat would, in `cwd`.
fn run_printed(cwd: &Path, line: &str) -> Run {
    let words = shlex::split(line).unwrap();
    assert_eq!(words[0], "mcc", "{line}");
    Mcc::new(cwd).env("MCC_WAIT", "1s").args(&words[1..]).run()
}

/// The file an answer names as holding the whole task.
fn task_file(run: &Run) -> String {
    let line = run.stdout.lines().find(|l| l.starts_with("the whole task (")).unwrap_or_else(|| panic!("{run:?}"));
    let path = line.split(" is in ").nth(1).unwrap().trim_end_matches(": read it first");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn a_task_with_a_22000_character_description_prints_a_screen_and_puts_the_whole_task_in_its_file() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut task = old_task("long", &["out/long.md"], &[]);
    // 2,200 words of ten characters: 22,000 characters in all.
    let description = "word00000 ".repeat(2200);
    task["description"] = json!(description);
    add(&hub, vec![task]);

    let run = next(project.root());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.len() <= SCREEN, "{} characters printed: {}", run.stdout.len(), run.stdout);
    let mut lines = run.stdout.lines();
    assert!(lines.next().unwrap().starts_with("task long (new, attempt 1"), "{}", run.stdout);
    assert!(lines.next().unwrap().starts_with("when done: mcc worker done long --as A --attempt 1"), "{}", run.stdout);
    assert!(run.stdout.contains(".mcc/tasks/long.md"), "{}", run.stdout);
    assert!(run.stdout.contains("stuck? mcc worker block long"), "{}", run.stdout);

    let whole = task_file(&run);
    assert!(whole.contains(description.trim_end()), "the file holds the whole description");
    assert!(whole.contains(&done_line(&run)), "the file holds the done command:\n{whole}");
    assert!(whole.contains("out/long.md") && whole.contains("be brief") && whole.contains("exists"), "{whole}");

    project.write("out/long.md", "written");
    let done = run_printed(project.root(), &done_line(&run));
    assert!(done.stdout.starts_with("accepted long."), "{done:?}");
}

#[test]
fn a_task_with_300_read_paths_prints_a_screen_and_lists_them_all_in_its_file() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut task = old_task("wide", &["out/wide.md"], &[]);
    let paths: Vec<String> = (0..300).map(|i| format!("src/module_{i:03}/some_longer_file_name.rs")).collect();
    task["context"]["targetFiles"] = json!(paths);
    add(&hub, vec![task]);

    let run = next(project.root());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.len() <= SCREEN, "{} characters printed: {}", run.stdout.len(), run.stdout);
    assert!(run.stdout.starts_with("task wide (new, attempt 1"), "{}", run.stdout);
    assert!(run.stdout.lines().nth(1).unwrap().starts_with("when done: "), "{}", run.stdout);
    assert!(run.stdout.contains("read (300): src/module_000/"), "{}", run.stdout);
    let whole = task_file(&run);
    for path in &paths {
        assert!(whole.contains(&format!("- {path}\n")), "{path} missing from the file");
    }
}

#[test]
fn a_chat_in_a_subdirectory_runs_the_printed_done_command_as_printed() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("sub", &["summaries/x.md"], &[])]);
    let chat_dir = project.root().join("deep/in/here");
    std::fs::create_dir_all(&chat_dir).unwrap();

    let run = next(&chat_dir);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("paths are relative to the project root"), "{}", run.stdout);
    let line = done_line(&run);
    assert!(line.contains("--deliverable summaries/x.md"), "{line}");
    project.write("summaries/x.md", "summary");
    let done = run_printed(&chat_dir, &line);
    assert!(done.stdout.starts_with("accepted sub."), "{done:?}");
}

#[test]
fn a_task_with_no_output_file_prints_a_done_command_that_runs_as_printed() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("think", &[], &[])]);

    let run = next(project.root());
    assert_eq!(run.code, 0, "{run:?}");
    let line = done_line(&run);
    assert!(!line.contains("--deliverable"), "{line}");
    let done = run_printed(project.root(), &line);
    assert!(done.stdout.starts_with("accepted think."), "{done:?}");
    assert_eq!(done.code, 4, "the only task is done: {done:?}");
}

#[test]
fn progress_prints_the_done_command_of_the_task_as_it_was_printed() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("p", &["out/p.md"], &[])]);
    let run = next(project.root());
    let printed = done_line(&run);

    let progress = project.mcc().args(["worker", "progress", "p", "--as", "A", "--note", "half"]).run();
    assert_eq!(progress.code, 0, "{progress:?}");
    assert_eq!(done_line(&progress), printed, "{progress:?}");
    assert!(!progress.stdout.contains("PATH"), "{progress:?}");
}

#[test]
fn json_answers_name_a_next_command_only_when_there_is_one() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("j", &[], &[])]);
    let task = project.mcc().args(["worker", "next", "--as", "A", "--json"]).run().json();
    assert_eq!(task["next_command"], "mcc worker done j --as A --attempt 1 --score 5", "{task}");

    let left = project.mcc().args(["worker", "leave", "--as", "A", "--json"]).run();
    let left = left.json();
    assert!(left.get("next_command").is_none(), "leave names no command: {left}");
    assert_eq!(left["exit_code"], 0, "{left}");

    let again = project.mcc().args(["worker", "next", "--as", "A", "--json"]).run().json();
    let attempt = again["offer"]["attempt"].to_string();
    let done =
        project.mcc().args(["worker", "done", "j", "--as", "A", "--attempt", &attempt, "--json", "--wait", "1s"]);
    let done = done.run().json();
    assert_eq!(done["exit_code"], 4, "{done}");
    assert!(done.get("next_command").is_none(), "all work is done names no command: {done}");
}

#[test]
fn a_finished_run_whose_hub_is_out_of_reach_is_said_to_be_out_of_reach_not_stopped() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("only", &[], &[])]);
    let run = next(project.root());
    let done = run_printed(project.root(), &done_line(&run));
    assert_eq!(done.code, 4, "all work is done: {done:?}");

    // The hub still runs, but this command cannot reach it (as in a sandbox without network).
    let cut =
        project.mcc().args(["worker", "next", "--as", "A", "--transport", "socket", "--hub", "ws://127.0.0.1:1"]).run();
    assert_eq!(cut.code, 3, "out of reach, maybe for now: run it again later: {cut:?}");
    assert!(cut.stdout.contains("cannot reach the hub"), "{cut:?}");
    assert!(!cut.stdout.contains("has stopped"), "{cut:?}");
    drop(hub);
}

#[test]
fn a_task_with_many_output_files_keeps_its_done_command_in_its_file() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let outputs: Vec<String> = (0..120).map(|i| format!("summaries/part_{i:03}.md")).collect();
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    add(&hub, vec![old_task("many", &refs, &[])]);

    let run = next(project.root());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.len() <= SCREEN, "{} characters printed: {}", run.stdout.len(), run.stdout);
    let pointer = run.stdout.lines().nth(1).unwrap();
    let path = pointer
        .strip_prefix("when done: run the command under \"When done\" in ")
        .unwrap_or_else(|| panic!("{pointer}"));
    let path = path.rsplit_once(" (it names 120 deliverables)").unwrap().0;
    let whole = std::fs::read_to_string(path).unwrap();
    let command = whole.split_once("## When done\n\n").unwrap().1.lines().next().unwrap().trim().to_owned();
    for out in &outputs {
        project.write(out, "part");
    }
    let done = run_printed(project.root(), &command);
    assert!(done.stdout.starts_with("accepted many."), "{done:?}");
}
