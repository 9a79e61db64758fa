//! The hub speaks the old protocol to an old client, unchanged.

use serde_json::json;

use crate::support::{Hub, Project, old_task};

#[test]
fn an_old_coordinator_and_worker_go_through_one_task() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = hub.connect();
    coord.register_coordinator();
    let created = coord.ask(json!({"type":"create_tasks","tasks":[old_task("task-001", &["out/a.md"], &[])]}));
    assert_eq!(created, json!({"type":"tasks_created","count":1,"queued":1}));

    let mut worker = hub.connect();
    let reg = worker.ask(json!({"type":"register","role":"worker","workerId":"worker-A"}));
    assert_eq!(reg, json!({"type":"registered","role":"worker","workerId":"worker-A"}));
    let assigned = worker.recv();
    assert_eq!(assigned["type"], "task_assigned");
    assert_eq!(assigned["task"]["id"], "task-001");
    assert_eq!(assigned["task"]["status"], "assigned");
    assert_eq!(assigned["task"]["context"]["requirements"], json!(["be brief"]));
    assert_eq!(coord.recv(), json!({"type":"worker_registered","workerId":"worker-A"}));
    assert_eq!(coord.recv(), json!({"type":"task_assigned","taskId":"task-001","workerId":"worker-A"}));

    let report = json!({"taskId":"task-001","workerId":"worker-A","status":"completed","deliverables":["out/a.md"],"contextEfficiencyScore":5,"completedAt":"2025-01-26T00:00:00Z"});
    let ack = worker.ask(json!({"type":"task_complete","taskId":"task-001","report":report}));
    assert_eq!(ack, json!({"type":"task_complete_ack","taskId":"task-001"}));
    assert_eq!(coord.recv(), json!({"type":"task_complete","taskId":"task-001","workerId":"worker-A","report":report}));
    assert_eq!(worker.recv()["type"], "no_tasks");
}
