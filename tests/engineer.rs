//! The engineer's commands: status, tasks, answer, report, rules.

use serde_json::json;

use crate::support::{Hub, Project, eventually, mcc_bin, old_task};

#[test]
fn status_shows_who_holds_what_and_the_questions_waiting() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[])]}));
    ws.ask(json!({"type":"next","worker":"asker"}));
    ws.ask(json!({"type":"block","worker":"asker","taskId":"a","attempt":1,"question":"tabs or spaces?"}));
    let status = project.mcc().args(["status"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("tasks: 1 assigned, 1 blocked"), "{}", status.stdout);
    assert!(status.stdout.contains("worker asker: on b"), "{}", status.stdout);
    assert!(status.stdout.contains("question on a: tabs or spaces?"), "{}", status.stdout);
    assert!(status.stdout.contains("mcc answer a \"...\""), "{}", status.stdout);
    let json = project.mcc().args(["status", "--json"]).run().json();
    assert_eq!(json["counts"]["blocked"], 1);

    let answered = project.mcc().args(["answer", "a", "spaces"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    assert!(answered.stdout.contains("ready again"), "{}", answered.stdout);
    let again = project.mcc().args(["answer", "a", "spaces"]).run();
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("only a blocked task takes an answer"), "{}", again.stderr);
}

#[test]
fn tasks_can_be_added_listed_shown_cancelled_and_retried() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    project.write("tasks.json", &json!([old_task("one", &["out/1"], &[]), old_task("two", &[], &["one"])]).to_string());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert!(added.stdout.starts_with("added 2 tasks: one, two"), "{added:?}");
    let quick = project.mcc().args(["tasks", "add", "--id", "three", "--description", "Third", "--after", "two"]).run();
    assert_eq!(quick.code, 0, "{quick:?}");
    let dup = project.mcc().args(["tasks", "add", "--id", "three"]).run();
    assert!(dup.stderr.contains("task `three` already exists"), "{}", dup.stderr);
    let unknown_dep = project.mcc().args(["tasks", "add", "--id", "four", "--after", "nine"]).run();
    assert!(unknown_dep.stderr.contains("unknown task `nine`"), "{}", unknown_dep.stderr);
    project.write("bad.json", r#"[{"id":"x","description":"d","context":{"outputFiles":[3]}}]"#);
    let bad = project.mcc().args(["tasks", "add", "bad.json"]).run();
    assert!(bad.stderr.contains("context.outputFiles[0]"), "{}", bad.stderr);

    let list = project.mcc().args(["tasks", "list"]).run();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", list.stdout);
    assert!(lines[0].starts_with("one") && lines[0].contains("ready"), "{}", list.stdout);
    assert!(lines[1].starts_with("two") && lines[1].contains("waiting"), "{}", list.stdout);
    let waiting = project.mcc().args(["tasks", "list", "--state", "waiting", "--json"]).run().json();
    assert_eq!(waiting.as_array().unwrap().len(), 2);

    let shown = project.mcc().args(["tasks", "show", "one", "--json"]).run().json();
    assert_eq!(shown["task"]["context"]["outputFiles"], json!(["out/1"]));
    assert!(project.mcc().args(["tasks", "show", "zzz"]).run().stderr.contains("unknown task `zzz`"));

    assert_eq!(project.mcc().args(["tasks", "cancel", "one"]).run().code, 0);
    let status = project.mcc().args(["status"]).run();
    assert!(status.stdout.contains("stuck: two waits on one"), "{}", status.stdout);
    assert_eq!(project.mcc().args(["tasks", "retry", "one"]).run().code, 0);
    let one = project.mcc().args(["tasks", "show", "one", "--json"]).run().json();
    assert_eq!(one["state"], "ready");
}

#[test]
fn the_report_counts_attempts_rejections_and_automation() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut checked = old_task("c", &["c.txt"], &[]);
    checked["acceptance"]["validation"] = json!("grep -q good c.txt");
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &[]), checked]}));
    project.write("c.txt", "bad");
    for id in ["a", "b", "c"] {
        let offer = ws.ask(json!({"type":"next","worker":"w"}));
        let attempt = offer["offer"]["attempt"].clone();
        let verdict = ws.ask(json!({"type":"done","worker":"w","taskId":id,"attempt":attempt,"score":4}));
        if id == "c" {
            assert_eq!(verdict["accepted"], false, "{verdict}");
            project.write("c.txt", "good");
            let attempt = verdict["next"]["attempt"].clone();
            ws.ask(json!({"type":"done","worker":"w","taskId":"c","attempt":attempt,"score":4}));
        }
    }
    let report = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!(report["tasks"], 3);
    assert_eq!(report["attempts"], 4);
    assert_eq!(report["rejections"], 1);
    assert_eq!(report["automationRate"], 1.0);
    assert_eq!(report["contextEfficiency"]["min"], 4);
    let text = project.mcc().args(["report"]).run().stdout;
    assert!(text.contains("automation rate 100% (target 80% or more)"), "{text}");
}

#[test]
fn status_shows_what_the_workflow_logged() {
    let project = Project::new();
    project.write(
        "wf.lua",
        "return { name = \"talky\", phases = { { name = \"p\", split = function(ctx) ctx.log(\"split made 1 task\"); return { { id = \"t\", description = \"d\" } } end } } }\n",
    );
    let workflow = project.path("wf.lua");
    let _hub = Hub::start(project.root(), &["--workflow", workflow.to_str().unwrap()]);
    crate::support::eventually("the workflow logged", || {
        project.mcc().args(["status"]).run().stdout.contains("split made 1 task")
    });
    let status = project.mcc().args(["status"]).run().stdout;
    assert!(status.lines().any(|l| l.starts_with("log: ") && l.contains("split made 1 task")), "{status}");
}

#[test]
fn a_hub_started_with_a_broken_workflow_loads_it_once_the_file_is_fixed() {
    let project = Project::new();
    let workflow = project.write(
        "wf.lua",
        "return { name = \"fixme\", phases = { { name = \"p\", split = function(ctx) return { { id = \"t\" \n",
    );
    let _hub = Hub::start(project.root(), &["--workflow", workflow.to_str().unwrap()]);
    let broken = project.mcc().args(["status"]).run().stdout;
    assert!(broken.contains("problem: workflow") && broken.contains("wf.lua:"), "{broken}");
    project.write(
        "wf.lua",
        "return { name = \"fixme\", phases = { { name = \"p\", split = function(ctx) return { { id = \"t\", description = \"d\" } } end } } }\n",
    );
    crate::support::eventually("the fixed workflow is loaded", || {
        project.mcc().args(["status"]).run().stdout.contains("tasks: 1 ready")
    });
}

#[test]
fn a_decision_that_keeps_failing_is_reported_once() {
    let project = Project::new();
    let workflow = project.write(
        "wf.lua",
        "return { name = \"bad\", phases = { { name = \"p\", tasks = { { id = \"t\", description = \"d\" } }, assign = function(w, ready) error(\"no way\") end } } }\n",
    );
    let hub = Hub::start(project.root(), &["--workflow", workflow.to_str().unwrap()]);
    for name in ["w1", "w2", "w1"] {
        let offer = hub.connect().ask(json!({"type":"next","worker":name}));
        assert_eq!(offer["offer"]["type"], "nothing_yet", "{offer}");
    }
    let snap = hub.connect().ask(json!({"type":"snapshot"}))["snapshot"].clone();
    let problems: Vec<&str> = snap["problems"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert_eq!(problems.iter().filter(|p| p.contains("no way")).count(), 1, "{problems:?}");
    assert!(problems[0].contains("wf.lua:1"), "{problems:?}");
}

#[test]
fn rules_install_adds_its_section_and_pointers_once_and_keeps_what_the_user_wrote() {
    let project = Project::new();
    project.write("AGENTS.md", "# My project\n\nUse tabs.\n");
    project.write("CLAUDE.md", "Be terse.\n");
    let first = project.mcc().args(["rules", "install", "--dir", project.root().to_str().unwrap()]).run();
    assert_eq!(first.code, 0, "{first:?}");
    let agents = project.read("AGENTS.md");
    assert!(agents.starts_with("# My project\n\nUse tabs.\n"), "{agents}");
    assert!(agents.contains("mcc worker next --as NAME"), "{agents}");
    assert!(agents.contains("--deliverable") && agents.contains("--score"), "{agents}");
    let (begin, end) = (agents.find("<!-- mcc:begin").unwrap(), agents.find("<!-- mcc:end -->").unwrap());
    assert!(agents[begin..end].chars().count() < 6_000);
    let claude = project.read("CLAUDE.md");
    assert!(claude.contains("Be terse.") && claude.lines().any(|l| l == "@AGENTS.md"), "{claude}");
    assert_eq!(project.read("GEMINI.md"), "@AGENTS.md\n");
    let cursor = project.read(".cursor/rules/mcc.mdc");
    assert!(cursor.starts_with("---\n") && cursor.contains("alwaysApply: true"), "{cursor}");

    project.write("AGENTS.md", &format!("{agents}\n## Later notes\nKeep me.\n"));
    let second = project.mcc().args(["rules", "install", "--dir", project.root().to_str().unwrap()]).run();
    assert_eq!(second.code, 0, "{second:?}");
    let again = project.read("AGENTS.md");
    assert_eq!(again.matches("<!-- mcc:begin").count(), 1, "{again}");
    assert!(again.contains("Use tabs.") && again.contains("## Later notes\nKeep me.\n"), "{again}");
    assert_eq!(project.read("CLAUDE.md"), claude);
}

#[test]
fn rules_install_leaves_an_unreadable_agents_file_untouched() {
    let project = Project::new();
    let agents = project.path("AGENTS.md");
    std::fs::write(&agents, b"notes \xff\xfe not utf-8\n").unwrap();
    let run = project.mcc().args(["rules", "install", "--dir", project.root().to_str().unwrap()]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("AGENTS.md") && run.stderr.contains("untouched"), "{}", run.stderr);
    assert_eq!(std::fs::read(&agents).unwrap(), b"notes \xff\xfe not utf-8\n");
}

#[test]
fn with_the_hub_stopped_status_and_tasks_list_read_what_the_store_holds() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    ws.ask(json!({"type":"add_tasks","tasks":[old_task("a", &[], &[]), old_task("b", &[], &["a"])]}));
    ws.ask(json!({"type":"next","worker":"asker"}));
    ws.ask(json!({"type":"block","worker":"asker","taskId":"a","attempt":1,"question":"tabs or spaces?"}));
    drop(ws);
    hub.terminate();

    let status = project.mcc().args(["status"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    let (first, rest) = status.stdout.split_once('\n').unwrap_or_default();
    assert!(first.starts_with("hub (no hub running; read from .mcc/state.db) · "), "{}", status.stdout);
    assert!(first.ends_with(" · workflow none (stopped)"), "no hub runs it: {}", status.stdout);
    assert_eq!(rest, "tasks: 1 waiting, 1 blocked\nquestion on a: tabs or spaces?\n  answer: mcc answer a \"...\"\n");

    // `--json` is the old snapshot's shape, every task in it.
    let json = project.mcc().args(["status", "--json"]).run().json();
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    let snapshot = [
        "root",
        "workflow",
        "policy",
        "finished",
        "hubRunning",
        "coordinator",
        "counts",
        "workers",
        "tasks",
        "stuck",
        "problems",
        "log",
    ];
    assert_eq!(keys, snapshot, "{json}");
    assert_eq!((json["hubRunning"].clone(), json["counts"]["blocked"].clone()), (json!(false), json!(1)), "{json}");
    assert_eq!(json["tasks"][0]["question"], "tabs or spaces?", "{json}");
    assert_eq!(json["tasks"][1]["state"], "waiting", "{json}");

    let list = project.mcc().args(["tasks", "list", "--state", "blocked"]).run();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", list.stdout);
    assert!(lines[0].starts_with('a') && lines[0].contains("blocked"), "{}", list.stdout);
}

#[test]
fn mcc_hub_says_which_workflow_it_resumes_and_where_its_live_page_is() {
    let project = Project::new();
    project.write(
        "workflows/one.lua",
        r#"return workflow {
  name = "one",
  phases = { phase "only" { split = function(ctx) return { task { id = "a", description = "a" } } end } },
}
"#,
    );
    let workflow = project.path("workflows/one.lua").display().to_string();
    let first = Hub::start(project.root(), &["--workflow", &workflow]);
    eventually("the hub names its workflow and page", || {
        let log = first.log_text();
        log.contains("mcc hub: workflow workflows/one.lua") && log.contains("mcc hub: live page (read-only): http://")
    });
    assert_eq!(first.terminate(), Some(0));
    // Started again without --workflow: it resumes the one the store names, and says so.
    let again = Hub::start(project.root(), &[]);
    eventually("the hub names the workflow it resumes", || {
        again.log_text().contains("mcc hub: resumes workflow workflows/one.lua (from .mcc/state.db)")
    });
}

#[test]
fn rules_install_absolute_names_this_binary_in_every_mcp_config() {
    let project = Project::new();
    let installed = project.mcc().args(["rules", "install", "--absolute"]).run();
    assert_eq!(installed.code, 0, "{installed:?}");
    let binary = std::fs::canonicalize(mcc_bin()).unwrap().display().to_string();
    let settings: serde_json::Value = serde_json::from_str(&project.read(".mcp.json")).unwrap();
    assert_eq!(settings["mcpServers"]["mcc"]["command"], binary.as_str(), "{settings}");
    assert!(project.read(".codex/config.toml").contains(&format!("command = \"{binary}\"")));
}
