//! The messages and files the benches send, after docs/protocol.md: a
//! protocol change is one edit here.

use serde_json::{Value, json};

/// A task writing `outputs`, waiting for `dependencies`.
pub fn task(id: &str, outputs: &[&str], dependencies: &[&str]) -> Value {
    json!({
        "id": id, "type": "bench", "description": "a bench task",
        "context": {"targetFiles": [], "outputFiles": outputs, "requirements": []},
        "acceptance": {"criteria": []},
        "dependencies": dependencies,
    })
}

pub fn add_tasks(tasks: &[Value]) -> Value {
    json!({"type": "add_tasks", "tasks": tasks})
}

pub fn next(worker: &str, wait_ms: u64) -> Value {
    json!({"type": "next", "worker": worker, "waitMs": wait_ms})
}

pub fn done(worker: &str, offered: &Offered, wait_ms: u64) -> Value {
    json!({"type": "done", "worker": worker, "taskId": offered.id, "attempt": offered.attempt, "waitMs": wait_ms})
}

pub fn register_worker(worker: &str) -> Value {
    json!({"type": "register", "role": "worker", "workerId": worker})
}

pub fn task_complete(id: &str) -> Value {
    json!({"type": "task_complete", "taskId": id})
}

pub fn snapshot() -> Value {
    json!({"type": "snapshot"})
}

pub fn load_workflow(path: &str) -> Value {
    json!({"type": "load_workflow", "path": path})
}

pub fn show_task(id: &str) -> Value {
    json!({"type": "show_task", "taskId": id})
}

/// The body of `.mcc/reports/TASK-report.json` (rules/worker.md).
pub fn report_file(offered: &Offered, worker: &str) -> Value {
    json!({
        "taskId": offered.id, "workerId": worker, "attempt": offered.attempt,
        "status": "completed", "deliverables": [], "contextEfficiencyScore": 5,
        "notes": "", "completedAt": "2026-01-01T00:00:00Z",
    })
}

pub fn report_file_name(id: &str) -> String {
    format!("{id}-report.json")
}

/// A task handed out: by `next` (`offer`), `done` (`verdict.next`),
/// `block`/`fail` (`ack.next`), the old protocol (`task_assigned`), or
/// the `--json` output of the same commands.
pub struct Offered {
    pub id: String,
    pub attempt: Value,
}

pub fn offered(reply: &Value) -> Option<Offered> {
    let offer = match reply["type"].as_str()? {
        "offer" => &reply["offer"],
        "verdict" | "ack" => &reply["next"],
        "task_assigned" => {
            return Some(Offered { id: reply["task"]["id"].as_str()?.to_owned(), attempt: Value::Null });
        }
        _ => return None,
    };
    (offer["type"] == "task")
        .then(|| Some(Offered { id: offer["task"]["id"].as_str()?.to_owned(), attempt: offer["attempt"].clone() }))
        .flatten()
}

/// Workers of a snapshot with a pending `next`.
pub fn waiting(snapshot: &Value) -> usize {
    snapshot["snapshot"]["workers"].as_array().map_or(0, |w| w.iter().filter(|w| w["waiting"] == true).count())
}
