//! The engineer's commands: `mcc status`, `mcc tasks ...`, `mcc answer`,
//! `mcc report`, `mcc rules install`, against a real hub.

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws};

/// A worker named `name` asks for work over its own short connection.
fn next(hub: &Hub, name: &str) -> Value {
    let mut ws = hub.connect();
    let offer = ws.ask(json!({"type":"next","worker":name,"waitMs":0}));
    ws.close();
    offer
}

fn add(project: &Project, args: &[&str]) {
    let run = project.mcc().args(["tasks", "add"]).args(args).run();
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn status_shows_the_held_task_and_the_blocked_question_with_the_command_to_answer() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&project, &["--id", "intro", "--description", "Write the intro", "--write", "docs/intro.md"]);
    add(&project, &["--id", "style", "--description", "Pick a style", "--write", "docs/style.md"]);
    let first = next(&hub, "ann");
    assert_eq!(first["offer"]["type"], "task", "{first}");
    let second = next(&hub, "bob");
    assert_eq!(second["offer"]["type"], "task", "{second}");
    let (held_by_ann, for_bob) =
        if first["offer"]["task"]["id"] == "intro" { ("intro", "style") } else { ("style", "intro") };
    let mut ws: Ws = hub.connect();
    let blocked =
        ws.ask(json!({"type":"block","worker":"bob","taskId":for_bob,"question":"British or American spelling?"}));
    assert_ne!(blocked["type"], "error", "{blocked}");

    let text = project.mcc().args(["status"]).run();
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains(&hub.url), "{}", text.stdout);
    assert!(text.stdout.contains(&format!("ann: holding {held_by_ann}")), "{}", text.stdout);
    assert!(text.stdout.contains("British or American spelling?"), "{}", text.stdout);
    assert!(text.stdout.contains(&format!("mcc answer {for_bob} \"...\"")), "{}", text.stdout);
    assert!(text.stdout.contains("assigned 1") && text.stdout.contains("blocked 1"), "{}", text.stdout);

    let json = project.mcc().args(["status", "--json"]).run().json();
    assert_eq!(json["counts"]["blocked"], 1);
    let ann = json["workers"].as_array().unwrap().iter().find(|w| w["name"] == "ann").unwrap();
    assert_eq!(ann["holding"], held_by_ann);
    let task = json["tasks"].as_array().unwrap().iter().find(|t| t["id"] == for_bob).unwrap();
    assert_eq!(task["question"], "British or American spelling?");

    let answered = project.mcc().args(["answer", for_bob, "British"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    let again = next(&hub, "bob");
    assert_eq!(again["offer"]["task"]["id"], for_bob, "{again}");
    assert_eq!(again["offer"]["answer"], "British", "{again}");
}

#[test]
fn tasks_round_trip_through_add_list_show_cancel_and_retry() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    project.write(
        "tasks.json",
        &json!([
            {"id":"a","description":"first","context":{"outputFiles":["a.md"]}},
            {"id":"b","description":"second","dependencies":["a"],"context":{"outputFiles":["b.md"]}}
        ])
        .to_string(),
    );
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    assert!(added.stdout.contains("added 2: a, b"), "{}", added.stdout);

    let list = project.mcc().args(["tasks", "list"]).run();
    assert!(list.stdout.contains("a ready: first"), "{}", list.stdout);
    assert!(list.stdout.contains("b waiting: second"), "{}", list.stdout);
    let waiting = project.mcc().args(["tasks", "list", "--state", "waiting", "--json"]).run().json();
    assert_eq!(waiting.as_array().unwrap().len(), 1);
    assert_eq!(waiting[0]["id"], "b");

    let shown = project.mcc().args(["tasks", "show", "b", "--json"]).run().json();
    assert_eq!(shown["dependencies"], json!(["a"]));
    let shown = project.mcc().args(["tasks", "show", "b"]).run();
    assert!(shown.stdout.contains("after a"), "{}", shown.stdout);

    let cancelled = project.mcc().args(["tasks", "cancel", "a"]).run();
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert!(project.mcc().args(["tasks", "list", "--state", "cancelled"]).run().stdout.contains("a cancelled"));
    let retried = project.mcc().args(["tasks", "retry", "a"]).run();
    assert_eq!(retried.code, 0, "{retried:?}");
    assert!(project.mcc().args(["tasks", "list", "--state", "ready"]).run().stdout.contains("a ready"));
    drop(hub);
}

#[test]
fn tasks_commands_explain_what_is_wrong() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    add(&project, &["--id", "a", "--description", "first"]);

    let unknown = project.mcc().args(["tasks", "show", "nope"]).run();
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
    let duplicate = project.mcc().args(["tasks", "add", "--id", "a", "--description", "again"]).run();
    assert_eq!(duplicate.code, 1, "{duplicate:?}");
    assert!(duplicate.stderr.contains('a'), "{}", duplicate.stderr);
    let missing_dep = project.mcc().args(["tasks", "add", "--id", "c", "--description", "x", "--after", "ghost"]).run();
    assert_eq!(missing_dep.code, 1, "{missing_dep:?}");
    assert!(missing_dep.stderr.contains("ghost"), "{}", missing_dep.stderr);
    project.write("bad.json", r#"{"id":"d","description":7}"#);
    let bad = project.mcc().args(["tasks", "add", "bad.json"]).run();
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("description"), "{}", bad.stderr);
    project.write("broken.json", "{not json");
    let broken = project.mcc().args(["tasks", "add", "broken.json"]).run();
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(broken.stderr.contains("broken.json is not valid JSON"), "{}", broken.stderr);
    let not_blocked = project.mcc().args(["answer", "a", "hi"]).run();
    assert_eq!(not_blocked.code, 1, "{not_blocked:?}");
}

#[test]
fn rules_install_writes_the_agents_section_and_pointers_once_and_keeps_user_content() {
    let project = Project::new();
    project.write("AGENTS.md", "# My project\n\nUse tabs.\n");
    project.write("CLAUDE.md", "Be terse.\n");
    let first = project.mcc().args(["rules", "install"]).run();
    assert_eq!(first.code, 0, "{first:?}");

    let agents = project.read("AGENTS.md");
    assert!(agents.starts_with("# My project\n\nUse tabs.\n"), "{agents}");
    assert!(agents.contains("mcc worker next --as NAME"), "{agents}");
    assert!(agents.contains("mcc worker done TASK --as NAME --deliverable PATH --score N"), "{agents}");
    assert!(agents.contains(".mcc/reports/TASK-report.json"), "{agents}");
    assert!(agents.contains("mcc answer TASK"), "{agents}");
    let begin = agents.find("<!-- mcc rules: begin").unwrap();
    let end = agents.find("<!-- mcc rules: end -->").unwrap();
    assert!(agents[begin..end].chars().count() < 6_000);
    let claude = project.read("CLAUDE.md");
    assert!(claude.lines().any(|l| l == "@AGENTS.md") && claude.contains("Be terse."), "{claude}");
    assert_eq!(project.read("GEMINI.md"), "@AGENTS.md\n");
    let cursor = project.read(".cursor/rules/mcc.mdc");
    assert!(
        cursor.starts_with("---\n") && cursor.contains("alwaysApply: true") && cursor.contains("AGENTS.md"),
        "{cursor}"
    );

    project.write("AGENTS.md", &format!("{agents}\n## Later notes\nKeep me.\n"));
    let second = project.mcc().args(["rules", "install", "--dir", project.root().to_str().unwrap()]).run();
    assert_eq!(second.code, 0, "{second:?}");
    let again = project.read("AGENTS.md");
    assert_eq!(again.matches("<!-- mcc rules: begin").count(), 1, "{again}");
    assert!(again.contains("Use tabs.") && again.ends_with("## Later notes\nKeep me.\n"), "{again}");
    assert_eq!(project.read("CLAUDE.md"), claude);
    assert!(second.stdout.contains("CLAUDE.md: already imports @AGENTS.md"), "{}", second.stdout);
}

/// `done` for `task` by `worker`, returning the verdict.
fn done(hub: &Hub, worker: &str, task: &str, deliverable: &str) -> Value {
    let mut ws = hub.connect();
    let verdict =
        ws.ask(json!({"type":"done","worker":worker,"taskId":task,"deliverables":[deliverable],"score":5,"waitMs":0}));
    ws.close();
    verdict
}

#[test]
fn report_counts_attempts_rejections_and_automation_on_a_small_run() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    for id in ["a", "b", "c"] {
        let file = format!("out/{id}.md");
        add(
            &project,
            &[
                "--id",
                id,
                "--description",
                "write it",
                "--write",
                &file,
                "--validation",
                &format!("grep -q good {file}"),
            ],
        );
    }
    std::fs::create_dir_all(project.path("out")).unwrap();
    let mut rejected_once = false;
    for _ in 0..3 {
        let offer = next(&hub, "ann");
        let id = offer["offer"]["task"]["id"].as_str().unwrap_or_else(|| panic!("{offer}")).to_owned();
        let file = format!("out/{id}.md");
        if !rejected_once {
            project.write(&file, "draft\n");
            let verdict = done(&hub, "ann", &id, &file);
            assert_eq!(verdict["accepted"], false, "{verdict}");
            rejected_once = true;
            let again = next(&hub, "ann");
            assert_eq!(again["offer"]["task"]["id"], id.as_str(), "{again}");
        }
        project.write(&file, "good\n");
        let verdict = done(&hub, "ann", &id, &file);
        assert_eq!(verdict["accepted"], true, "{verdict}");
    }

    let live = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!(live["tasks"], 3);
    assert_eq!(live["byState"]["accepted"], 3);
    assert_eq!(live["attempts"], 4, "{live}");
    assert_eq!(live["rejections"], 1, "{live}");
    assert_eq!(live["automationRate"], 1.0, "{live}");
    assert_eq!(live["workers"]["ann"]["accepted"], 3, "{live}");
    assert_eq!(live["workers"]["ann"]["rejections"], 1, "{live}");
    assert_eq!(live["targets"]["contextEfficiency"]["min"], 5.0, "{live}");

    drop(hub);
    let offline = project.mcc().args(["report"]).run();
    assert_eq!(offline.code, 0, "{offline:?}");
    assert!(offline.stdout.contains("attempts 4, rejections 1"), "{}", offline.stdout);
    assert!(offline.stdout.contains("automation rate 100% (target >= 80%): met"), "{}", offline.stdout);
}
