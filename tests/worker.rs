//! Worker chats go from task to task with one `mcc worker` command per turn.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::support::{Hub, Project, Run, old_task};

/// Add tasks through the hub's `add_tasks` message.
fn add(hub: &Hub, tasks: Vec<Value>) {
    let mut ws = hub.connect();
    let reply = ws.ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

/// The command a printed answer says to run next (`when done: ...`), if any.
fn printed_next(run: &Run) -> Option<String> {
    run.stdout.lines().find_map(|l| l.strip_prefix("when done: ").map(str::to_owned))
}

/// Run a printed command line the way a chat would (with a short wait for
/// work set in the environment, so the test does not idle).
fn run_line(project: &Project, line: &str) -> Run {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "mcc", "{line}");
    project.mcc().env("MCC_WAIT", "1s").args(&words[1..]).run()
}

#[test]
fn turn_based_chats_finish_a_queue_with_nothing_lost_or_done_twice() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let ids: Vec<String> = (0..12).map(|i| format!("t-{i:02}")).collect();
    add(&hub, ids.iter().map(|id| old_task(id, &[&format!("out/{id}.md")], &[])).collect());

    let chats = ["chat-A", "chat-B", "chat-C"];
    let mut pending: BTreeMap<&str, Option<String>> = chats.iter().map(|c| (*c, None)).collect();
    let mut done_by: BTreeMap<String, &str> = BTreeMap::new();
    let mut finished = BTreeSet::new();
    for _turn in 0..200 {
        if finished.len() == chats.len() {
            break;
        }
        for chat in chats {
            if finished.contains(chat) {
                continue;
            }
            // One command per turn, a new process each time, as a chat runs it.
            let run = match pending.get_mut(chat).unwrap().take() {
                None => project.mcc().args(["worker", "next", "--as", chat, "--wait", "1s"]).run(),
                Some(line) => {
                    let id = line.split_whitespace().nth(3).unwrap().to_owned();
                    project.write(&format!("out/{id}.md"), &format!("{id} by {chat}"));
                    let run = run_line(&project, &line);
                    assert!(run.stdout.starts_with(&format!("accepted {id}.")), "{run:?}");
                    assert!(done_by.insert(id.clone(), chat).is_none(), "{id} done twice");
                    run
                }
            };
            match run.code {
                0 => pending.insert(chat, Some(printed_next(&run).expect("a task prints its done command"))),
                3 | 4 => {
                    if run.code == 4 {
                        finished.insert(chat);
                    }
                    None
                }
                _ => panic!("{chat}: {run:?}"),
            };
        }
    }
    assert_eq!(finished.len(), chats.len(), "every chat was told all work is done");
    assert_eq!(done_by.keys().cloned().collect::<Vec<_>>(), ids, "every task done exactly once");
    let by: BTreeSet<&str> = done_by.values().copied().collect();
    assert!(by.len() > 1, "work was shared: {done_by:?}");
}

#[test]
fn next_while_holding_gives_the_same_task_back() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[]), old_task("b", &[], &[])]);
    let first = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.starts_with("task a (new, attempt 1"), "{}", first.stdout);
    let again = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert!(again.stdout.starts_with("task a (you already hold it, attempt 1"), "{}", again.stdout);
}

#[test]
fn done_prints_the_verdict_and_the_next_task_and_a_rejection_comes_back_with_reasons() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut checked = old_task("essay", &["essay.md"], &[]);
    checked["acceptance"]["validation"] = json!("grep -q conclusion essay.md");
    add(&hub, vec![checked, old_task("later", &[], &[])]);
    let got = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert!(got.stdout.contains("checked by: grep -q conclusion essay.md"), "{}", got.stdout);
    project.write("essay.md", "an essay without an ending");
    let line = printed_next(&got).unwrap();
    assert_eq!(line, "mcc worker done essay --as w --attempt 1 --deliverable essay.md --score 5");
    let rejected = run_line(&project, &line);
    assert_eq!(rejected.code, 0, "{rejected:?}");
    assert!(
        rejected.stdout.starts_with("rejected essay (attempt 1): validation `grep -q conclusion essay.md` exited 1"),
        "{}",
        rejected.stdout
    );
    assert!(rejected.stdout.contains("task essay (back to you, attempt 2"), "{}", rejected.stdout);

    project.write("essay.md", "an essay with a conclusion");
    let accepted = project.mcc().args(["worker", "done", "essay", "--as", "w", "--deliverable", "essay.md"]).run();
    assert!(accepted.stdout.starts_with("accepted essay.\ntask later (new, attempt 1"), "{}", accepted.stdout);
}

#[test]
fn wrong_commands_get_clear_errors_and_change_nothing() {
    let project = Project::new();
    // No hub yet: say so at once, and to run the same command again later (exit 3).
    std::fs::create_dir_all(project.path(".mcc")).unwrap();
    let none = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert_eq!(none.code, 3, "{none:?}");
    assert!(
        none.stdout.contains("no hub is running") && none.stdout.contains("run the same command again"),
        "{none:?}"
    );
    assert_no_advice_to_start_a_hub(&none);

    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &["a.md"], &[])]);
    let nameless = project.mcc().args(["worker", "next"]).run();
    assert_eq!(nameless.code, 1);
    assert!(nameless.stderr.contains("--as NAME") && nameless.stderr.contains("MCC_WORKER"), "{}", nameless.stderr);

    assert_eq!(project.mcc().args(["worker", "next", "--as", "holder"]).run().code, 0);
    project.write("a.md", "x");
    let not_mine = project.mcc().args(["worker", "done", "a", "--as", "other", "--deliverable", "a.md"]).run();
    assert_eq!(not_mine.code, 1);
    assert!(not_mine.stderr.contains("held by `holder`"), "{}", not_mine.stderr);
    assert!(not_mine.stderr.contains("mcc worker next --as other"), "{}", not_mine.stderr);

    let unknown = project.mcc().args(["worker", "done", "zzz", "--as", "holder"]).run();
    assert!(unknown.stderr.contains("unknown task `zzz`"), "{}", unknown.stderr);

    let missing = project.mcc().args(["worker", "done", "a", "--as", "holder", "--deliverable", "nope.md"]).run();
    assert!(missing.stderr.contains("deliverable `nope.md` does not exist"), "{}", missing.stderr);

    let stale = project.mcc().args(["worker", "done", "a", "--as", "holder", "--attempt", "7"]).run();
    assert!(stale.stderr.contains("stale attempt 7"), "{}", stale.stderr);

    // After all that, the task is still held by its worker at attempt 1.
    let still = project.mcc().args(["worker", "next", "--as", "holder", "--json"]).run().json();
    assert_eq!(still["offer"]["type"], "task");
    assert_eq!(still["offer"]["attempt"], 1);
    assert_eq!(still["offer"]["held"], true);
}

#[test]
fn nothing_yet_and_all_done_have_their_own_exit_codes() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let empty = project.mcc().args(["worker", "next", "--as", "w", "--wait", "100ms"]).run();
    assert_eq!(empty.code, 3, "{empty:?}");
    assert!(empty.stdout.contains("run `mcc worker next --as w` again"), "{}", empty.stdout);
    add(&hub, vec![old_task("only", &[], &[])]);
    project.mcc().args(["worker", "next", "--as", "w"]).run();
    let last = project.mcc().args(["worker", "done", "only", "--as", "w"]).run();
    assert_eq!(last.code, 4, "{last:?}");
    assert!(last.stdout.contains("all work is done, you can stop"), "{}", last.stdout);
}

#[test]
fn a_worker_with_a_spent_context_is_told_to_hand_over() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[]), old_task("b", &[], &[])]);
    project.mcc().args(["worker", "next", "--as", "tired"]).run();
    let out = project.mcc().args(["worker", "done", "a", "--as", "tired", "--score", "2"]).run();
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stdout.contains("hand") || out.stdout.contains("fresh chat"), "{}", out.stdout);
}

#[test]
fn block_hands_the_question_over_and_the_worker_gets_other_work() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &[], &[]), old_task("b", &[], &[])]);
    project.mcc().args(["worker", "next", "--as", "w"]).run();
    let out = project.mcc().args(["worker", "block", "a", "--as", "w", "--question", "which format?"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("mcc answer a"), "{}", out.stdout);
    assert!(out.stdout.contains("task b (new"), "{}", out.stdout);
    let mut ws = hub.connect();
    let ack = ws.ask(json!({"type": "answer", "taskId": "a", "text": "markdown"}));
    assert_eq!(ack["type"], "ack", "{ack}");
    let other = project.mcc().args(["worker", "next", "--as", "w2"]).run();
    assert!(other.stdout.contains("the engineer answered: markdown"), "{}", other.stdout);
}

#[test]
fn a_headless_worker_runs_a_script_per_task_until_all_is_done() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    project.write("ok.sh", "set -e\nmkdir -p out\necho \"$MCC_TASK_ID by $MCC_WORKER\" > out/$MCC_TASK_ID.txt\n");
    add(&hub, (0..4).map(|i| old_task(&format!("s{i}"), &[&format!("out/s{i}.txt")], &[])).collect());
    let run = project.mcc().args(["worker", "run", "--as", "bot", "--parallel", "2", "--", "sh", "ok.sh"]).run();
    assert_eq!(run.code, 4, "{run:?}");
    for i in 0..4 {
        assert!(project.read(&format!("out/s{i}.txt")).starts_with(&format!("s{i} by bot-")));
    }
    let snapshot = hub.connect().ask(json!({"type": "snapshot"}));
    assert_eq!(snapshot["snapshot"]["counts"]["accepted"], 4, "{snapshot}");
}

#[test]
fn a_failing_script_reports_its_stderr_and_a_hanging_one_is_stopped_at_its_lease() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "1"]);
    project.write("fail.sh", "echo 'disk on fire' >&2\nexit 3\n");
    add(&hub, vec![old_task("f", &[], &[])]);
    let run = project.mcc().args(["worker", "run", "--as", "bot", "--", "sh", "fail.sh"]).run();
    assert_eq!(run.code, 4, "{run:?}");
    let shown = hub.connect().ask(json!({"type": "show_task", "taskId": "f"}));
    assert_eq!(shown["task"]["state"], "failed", "{shown}");
    assert!(shown["task"]["reasons"][0].as_str().unwrap().contains("disk on fire"), "{shown}");

    let mut slow = old_task("slow", &[], &[]);
    slow["lease"] = json!("2s");
    add(&hub, vec![slow]);
    project.write("hang.sh", "exec sleep 60\n");
    let run = project.mcc().args(["worker", "run", "--as", "bot2", "--", "sh", "hang.sh"]).run();
    assert_eq!(run.code, 4, "{run:?}");
    let shown = hub.connect().ask(json!({"type": "show_task", "taskId": "slow"}));
    assert_eq!(shown["task"]["state"], "failed", "{shown}");
    assert!(shown["task"]["reasons"][0].as_str().unwrap().contains("ran past the task's lease"), "{shown}");
}

#[test]
fn an_exit_zero_with_is_error_in_its_json_is_a_failure() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-attempts", "1"]);
    project.write("liar.sh", "echo '{\"is_error\": true, \"result\": \"quota exceeded\"}'\n");
    add(&hub, vec![old_task("x", &[], &[])]);
    project.mcc().args(["worker", "run", "--as", "bot", "--", "sh", "liar.sh"]).run();
    let shown = hub.connect().ask(json!({"type": "show_task", "taskId": "x"}));
    assert_eq!(shown["task"]["state"], "failed", "{shown}");
    assert!(shown["task"]["reasons"][0].as_str().unwrap().contains("quota exceeded"), "{shown}");
}

#[test]
fn in_a_sandbox_without_network_the_error_names_the_setting_and_the_file_route() {
    let project = Project::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = project
        .mcc()
        .env("CODEX_SANDBOX_NETWORK_DISABLED", "1")
        .args(["worker", "next", "--as", "w", "--hub", &format!("ws://127.0.0.1:{closed}")])
        .run();
    assert_eq!(run.code, 3, "out of reach, maybe for now: {run:?}");
    assert!(run.stdout.contains("network_access = true"), "{}", run.stdout);
    assert!(run.stdout.contains(".mcc/reports/"), "{}", run.stdout);
}

/// A worker chat is never told to start a hub: that is the engineer's call.
fn assert_no_advice_to_start_a_hub(run: &Run) {
    let said = format!("{}\n{}", run.stdout, run.stderr).to_lowercase();
    for advice in ["mcc run", "mcc hub", "start"] {
        assert!(!said.contains(advice), "a worker was told {advice:?}: {run:?}");
    }
}

#[test]
fn a_worker_facing_a_killed_hub_is_told_to_run_the_same_command_again_later_and_never_to_start_one() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("a", &["a.md"], &[]), old_task("b", &[], &[])]);
    let got = project.mcc().args(["worker", "next", "--as", "w"]).run();
    assert_eq!(got.code, 0, "{got:?}");
    let done = printed_next(&got).unwrap();
    // kill -9: hub.json stays behind, naming a port nobody listens on, and nothing holds the lock.
    hub.kill9();
    assert!(project.path(".mcc/hub.json").exists(), "a killed hub leaves its discovery file");
    project.write("a.md", "x");
    let facing = [
        run_line(&project, &done),
        project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s"]).run(),
        project.mcc().args(["worker", "progress", "a", "--as", "w", "--note", "half"]).run(),
        project.mcc().args(["worker", "fail", "a", "--as", "w", "--reason", "r", "--transport", "file"]).run(),
    ];
    for run in &facing {
        assert_eq!(run.code, 3, "the nothing-yet code, so an agent retries: {run:?}");
        assert!(run.stdout.contains("the hub is down for now: run the same command again in a minute"), "{run:?}");
        assert!(run.stdout.contains("tell the engineer"), "{run:?}");
        assert_no_advice_to_start_a_hub(run);
    }
    let as_json = project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s", "--json"]).run();
    assert_eq!(
        (as_json.code, as_json.json()["type"].as_str(), as_json.json()["exit_code"].as_u64()),
        (3, Some("hub_down"), Some(3))
    );
    // Its discovery file gone too (a hub that stopped itself): the same answer.
    std::fs::remove_file(project.path(".mcc/hub.json")).unwrap();
    let gone = project.mcc().args(["worker", "next", "--as", "w", "--wait", "0s"]).run();
    assert_eq!(gone.code, 3, "{gone:?}");
    assert!(gone.stdout.contains("no hub is running"), "{gone:?}");
    assert_no_advice_to_start_a_hub(&gone);
    // A headless worker started now is told the same, before it runs anything.
    let headless = project.mcc().args(["worker", "run", "--as", "h", "--", "touch", "ran"]).run();
    assert_eq!(headless.code, 3, "{headless:?}");
    assert!(headless.stdout.contains("the hub is down for now"), "{headless:?}");
    assert_no_advice_to_start_a_hub(&headless);
    assert!(!project.path("ran").exists(), "nothing ran without a task");
}
