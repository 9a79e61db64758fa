//! Report files written by chats that cannot run commands.

use serde_json::json;

use crate::support::{Hub, Project, Ws, eventually, old_task};

fn report(task: &str, worker: &str, attempt: u32, notes: &str) -> String {
    json!({"taskId": task, "workerId": worker, "attempt": attempt, "status": "completed", "deliverables": [], "contextEfficiencyScore": 5, "notes": notes, "completedAt": "2025-01-26T00:00:00Z"}).to_string()
}

fn setup(tasks: Vec<serde_json::Value>) -> (Project, Hub, Ws) {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = hub.connect();
    coord.register_coordinator();
    coord.ask(json!({"type":"create_tasks","tasks":tasks}));
    (project, hub, coord)
}

#[test]
fn a_report_file_completes_the_task_and_the_coordinator_hears_of_it() {
    let mut checked = old_task("t1", &[], &[]);
    checked["acceptance"]["validation"] = json!("grep -q fixed notes.txt");
    let (project, hub, mut coord) = setup(vec![checked]);
    let mut w = hub.connect();
    w.ask(json!({"type":"next","worker":"w"}));
    project.write("notes.txt", "broken");
    project.write(".mcc/reports/t1-report.json", &report("t1", "w", 1, "first try"));
    let (detected, _) = coord.until("report_detected");
    assert_eq!(detected["taskId"], "t1");
    assert_eq!(detected["workerId"], "w");
    // The absolute path, as the original server sent it.
    assert_eq!(detected["reportPath"], project.path(".mcc/reports/t1-report.json").display().to_string());
    assert_eq!(detected["report"]["notes"], "first try");
    // Rejected by its validation: the task is back with the worker; a rewrite is seen again.
    let show = || hub.connect().ask(json!({"type":"show_task","taskId":"t1"}))["task"].clone();
    eventually("the first report is judged", || show()["attempt"] == 2);
    project.write("notes.txt", "fixed");
    project.write(".mcc/reports/t1-report.json", &report("t1", "w", 2, "second try"));
    let (again, _) = coord.until("report_detected");
    assert_eq!(again["report"]["notes"], "second try");
    eventually("the rewritten report is accepted", || show()["state"] == "accepted");
}

#[test]
fn old_clients_reports_folder_is_watched_too() {
    let (project, hub, mut coord) = setup(vec![old_task("task-001", &[], &[])]);
    hub.connect().ask(json!({"type":"next","worker":"worker-A"}));
    project.write("tmp/coordination/reports/task-001-report.json", &report("task-001", "worker-A", 1, "old style"));
    let (detected, _) = coord.until("report_detected");
    assert_eq!(
        detected["reportPath"],
        project.path("tmp/coordination/reports/task-001-report.json").display().to_string()
    );
}

#[test]
fn a_malformed_report_is_moved_aside_shown_and_never_applied() {
    let (project, hub, _coord) = setup(vec![old_task("t1", &[], &[])]);
    hub.connect().ask(json!({"type":"next","worker":"w"}));
    project.write(".mcc/reports/t1-report.json", "{\"taskId\": \"t1\", \"status\": \"compl");
    project.write(".mcc/reports/bad-report.json", "{\"taskId\": \"t1\", \"status\": \"done\"}");
    eventually("both files moved aside", || {
        project.path(".mcc/reports/rejected/t1-report.json").exists()
            && project.path(".mcc/reports/rejected/bad-report.json").exists()
    });
    assert!(project.read(".mcc/reports/rejected/t1-report.json.error.txt").contains("not valid JSON"));
    assert!(project.read(".mcc/reports/rejected/bad-report.json.error.txt").contains("status"));
    let snap = hub.connect().ask(json!({"type":"snapshot"}))["snapshot"].clone();
    let problems = snap["problems"].to_string();
    assert!(problems.contains("t1-report.json") && problems.contains("bad-report.json"), "{problems}");
    assert_eq!(snap["tasks"][0]["state"], "assigned", "nothing was applied");
}
