//! Big queues through the CLI: `mcc tasks add` of more than one frame holds,
//! and `mcc tasks list` shows a page of one-line tasks.

use serde_json::{Value, json};

use crate::support::{Hub, Project};

#[test]
fn twenty_thousand_tasks_go_in_through_one_tasks_add_and_list_shows_a_page() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    // ~3 MB of JSON, three times the hub's frame limit. Each task depends on
    // the one after it in the file: the pieces must carry dependencies first.
    let n = 20_000;
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i + 1 < n { vec![format!("t{:05}", i + 1)] } else { vec![] };
            let description =
                if i == n - 1 { format!("the last one\n{}", "long ".repeat(4_000)) } else { format!("task {i}") };
            json!({"id": format!("t{i:05}"), "description": description, "dependencies": deps,
                   "context": {"outputFiles": [format!("out/{i}.md")]}})
        })
        .collect();
    project.write("tasks.json", &serde_json::to_string(&tasks).unwrap());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    assert!(added.stdout.contains("added 20000 tasks"), "{}", added.stdout);

    let snapshot = hub.connect().ask(json!({"type": "snapshot"}));
    assert_eq!(snapshot["snapshot"]["counts"]["waiting"], n - 1, "{}", snapshot["snapshot"]["counts"]);
    assert_eq!(snapshot["snapshot"]["counts"]["ready"], 1);

    let ready = project.mcc().args(["tasks", "list", "--state", "ready", "--limit", "5"]).run();
    assert_eq!(ready.code, 0, "{ready:?}");
    assert!(ready.stdout.contains("t19999"), "{}", ready.stdout);
    assert!(ready.stdout.len() < 1_000, "one line per task: {}", ready.stdout);
    assert!(ready.stdout.contains("the last one…"), "{}", ready.stdout);

    // Pages follow the order the tasks were added in: dependencies first, so t00000 is last.
    let page = project.mcc().args(["tasks", "list", "--state", "waiting", "--limit", "3", "--after", "t00005"]).run();
    let lines: Vec<&str> = page.stdout.lines().collect();
    assert!(lines[0].starts_with("t00004"), "{}", page.stdout);
    assert!(lines[2].starts_with("t00002"), "{}", page.stdout);
    assert!(
        lines[3].contains("more follow: mcc tasks list --state waiting --limit 3 --after t00002"),
        "{}",
        page.stdout
    );
}

/// Small tasks: many more fit a frame than a hub takes in one message; the
/// CLI sends pieces the hub accepts.
#[test]
fn thirty_thousand_small_tasks_go_in_through_one_tasks_add() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let n = 30_000;
    let tasks: Vec<Value> = (0..n).map(|i| json!({"id": format!("s{i}"), "description": "d"})).collect();
    project.write("tasks.json", &serde_json::to_string(&tasks).unwrap());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    assert!(added.stdout.contains("added 30000 tasks"), "{}", added.stdout);
    let snapshot = hub.connect().ask(json!({"type": "snapshot"}));
    assert_eq!(snapshot["snapshot"]["counts"]["ready"], n, "{}", snapshot["snapshot"]["counts"]);
}

/// A hub that takes fewer tasks per message than the CLI's pieces: the CLI
/// reads the hub's limit from `.mcc/hub.json` and sends smaller pieces.
#[test]
fn tasks_add_keeps_to_a_hubs_smaller_limit_per_message() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-tasks-per-message", "300"]);
    let tasks: Vec<Value> = (0..2_000).map(|i| json!({"id": format!("p{i}"), "description": "d"})).collect();
    project.write("tasks.json", &serde_json::to_string(&tasks).unwrap());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let snapshot = hub.connect().ask(json!({"type": "snapshot"}));
    assert_eq!(snapshot["snapshot"]["counts"]["ready"], 2_000, "{}", snapshot["snapshot"]["counts"]);
}
