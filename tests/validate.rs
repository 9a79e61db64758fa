//! `mcc validate`: it reads task and report files with the hub's own
//! parsers, so what it calls valid the hub takes, and what it refuses the
//! hub refuses for the same reason.

use crate::support::{Hub, Project};

/// Task files, whether the hub takes each, and what both must say when not.
const TASK_FILES: &[(&str, &str, Result<(), &str>)] = &[
    ("minimal", r#"[{"id":"a","description":"x"}]"#, Ok(())),
    ("one task, not an array", r#"{"id":"a","description":"x"}"#, Ok(())),
    (
        "full",
        r#"[{"id":"a","type":"edit","description":"x","context":{"targetFiles":["in.md"],"outputFiles":["out.md"],
            "requirements":["short"],"relevantRules":["r1"],"color":"red"},"acceptance":{"criteria":["reads well"],
            "validation":"true"},"dependencies":[],"lease":"10m","status":"pending","createdAt":"2025-01-01T00:00:00Z",
            "assignedTo":null,"completedAt":null,"priority":7}]"#,
        Ok(()),
    ),
    ("a status the old schema did not list", r#"[{"id":"a","description":"x","status":"done"}]"#, Ok(())),
    ("missing description", r#"[{"id":"a"}]"#, Err("missing field `description`")),
    ("misspelled description", r#"[{"id":"a","descripton":"x"}]"#, Err("missing field `description`")),
    // Unknown fields are kept and sent back (the old protocol), so the hub takes it.
    ("misspelled optional field", r#"[{"id":"a","description":"x","dependency":["b"]}]"#, Ok(())),
    (
        "wrong type",
        r#"[{"id":"a","description":"x","context":{"outputFiles":"out.md"}}]"#,
        Err("invalid type: string \"out.md\", expected a sequence"),
    ),
    ("wrong type in a list", r#"[{"id":"a","description":"x","dependencies":[3]}]"#, Err("invalid type: integer `3`")),
    ("empty id", r#"[{"id":" ","description":"x"}]"#, Err("is empty; give every task an id")),
    (
        "a lease that is no duration",
        r#"[{"id":"a","description":"x","lease":"soon"}]"#,
        Err("`soon` is not a duration"),
    ),
    (
        "dependencies, the dependent first",
        r#"[{"id":"b","description":"x","dependencies":["a"]},{"id":"a","description":"y"}]"#,
        Ok(()),
    ),
    (
        "the same id twice",
        r#"[{"id":"a","description":"x"},{"id":"a","description":"y"}]"#,
        Err("task `a` already exists"),
    ),
    (
        "a cycle",
        r#"[{"id":"a","description":"x","dependencies":["b"]},{"id":"b","description":"y","dependencies":["a"]}]"#,
        Err("dependencies form a cycle"),
    ),
    ("not a task", r#"[{"id":"a","description":"x"}, "b"]"#, Err("invalid type: string \"b\"")),
    ("neither task nor array", "3", Err("the file must hold a task object or an array of tasks")),
];

#[test]
fn validate_and_tasks_add_agree_on_every_task_file() {
    for (name, text, expected) in TASK_FILES {
        let project = Project::new();
        let _hub = Hub::start(project.root(), &[]);
        project.write("tasks.json", text);
        let checked = project.mcc().args(["validate", "--kind", "task", "tasks.json"]).run();
        let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
        match expected {
            Ok(()) => {
                assert_eq!(added.code, 0, "{name}: the hub takes it: {added:?}");
                assert_eq!(checked.code, 0, "{name}: the hub takes it, validate must too: {checked:?}");
                assert_eq!(checked.stdout, "tasks.json: valid\n", "{name}");
            }
            Err(why) => {
                assert_eq!(added.code, 1, "{name}: the hub refuses it: {added:?}");
                assert!(added.stderr.contains(why), "{name}: the hub says {why}: {added:?}");
                assert_eq!(checked.code, 1, "{name}: the hub refuses it, validate must too: {checked:?}");
                assert!(checked.stdout.contains(why), "{name}: validate says {why} too: {checked:?}");
            }
        }
    }
}

#[test]
fn a_dependency_outside_the_file_is_valid_when_the_hub_holds_it() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    project.write("tasks.json", r#"[{"id":"b","description":"x","dependencies":["a"]}]"#);
    let checked = project.mcc().args(["validate", "tasks.json"]).run();
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(checked.stdout.contains("`b` depends on `a`, which is not in this file"), "{checked:?}");
    let refused = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert!(refused.stderr.contains("unknown task `a`"), "{refused:?}");
    assert_eq!(project.mcc().args(["tasks", "add", "--id", "a"]).run().code, 0);
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
}

#[test]
fn every_wrong_task_of_a_file_is_named_by_its_path() {
    let project = Project::new();
    project.write(
        "tasks.json",
        r#"[{"id":"a","description":"x"},{"id":"b","description":"x","context":{"outputFiles":["o",2]}},{"id":"c"}]"#,
    );
    let checked = project.mcc().args(["validate", "tasks.json"]).run();
    assert_eq!(checked.code, 1, "{checked:?}");
    let lines: Vec<&str> = checked.stdout.lines().collect();
    assert_eq!(lines[0], "tasks.json: 2 problems", "{checked:?}");
    assert!(lines[1].starts_with("  tasks[1].context.outputFiles[1]: invalid type: integer `2`"), "{checked:?}");
    assert_eq!(lines[2], "  tasks[2]: missing field `description`", "{checked:?}");
    let json = project.mcc().args(["validate", "--json", "tasks.json"]).run().json();
    assert_eq!(json["valid"], false);
    assert_eq!(json["files"][0]["problems"].as_array().map(Vec::len), Some(2), "{json}");
}

#[test]
fn a_report_is_checked_as_the_report_watcher_reads_it() {
    let project = Project::new();
    // What the watcher takes: the old schema also wanted deliverables and completedAt.
    project.write(".mcc/reports/a-report.json", r#"{"taskId":"a","workerId":"w","attempt":1,"status":"completed"}"#);
    let ok = project.mcc().args(["validate", ".mcc/reports/a-report.json"]).run();
    assert_eq!(ok.stdout, ".mcc/reports/a-report.json: valid\n", "{ok:?}");
    // The fencing token the watcher requires, which the old schema did not know.
    project.write("late.json", r#"{"taskId":"a","workerId":"w","status":"completed"}"#);
    let late = project.mcc().args(["validate", "late.json"]).run();
    assert_eq!(late.code, 1, "{late:?}");
    assert!(late.stdout.contains("field `attempt` is missing"), "{late:?}");
    // Old clients' own folder: the watcher takes a report without `attempt` there.
    project.write("tmp/coordination/reports/a.json", r#"{"taskId":"a","workerId":"w","status":"failed"}"#);
    let old = project.mcc().args(["validate", "tmp/coordination/reports/a.json"]).run();
    assert_eq!(old.code, 0, "{old:?}");
}
