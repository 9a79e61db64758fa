//! Views of the engine's state: `mcc status`'s snapshot and a task in full.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Engine, Role};
use crate::scheduler::{self, TaskState};

impl Engine {
    /// Everything `mcc status` shows.
    pub(super) fn snapshot(&self, now: Instant) -> Value {
        let counts: serde_json::Map<String, Value> =
            TaskState::ALL.iter().map(|s| (s.name().to_owned(), Value::from(self.scheduler.count(*s)))).collect();
        let connected: Vec<&str> = self
            .conns
            .values()
            .filter_map(|c| if let Role::Worker(n) = &c.role { Some(n.as_str()) } else { None })
            .collect();
        let waiting: Vec<&str> = self.waiters.iter().map(|w| w.worker.as_str()).collect();
        let workers: Vec<Value> = self
            .scheduler
            .workers()
            .map(|w| {
                let holding =
                    self.scheduler.tasks().find(|t| t.state.in_flight() && t.holder.as_deref() == Some(&w.name));
                json!({
                    "name": w.name,
                    "holding": holding.map(|t| t.spec.id.clone()),
                    "leaseLeftMs": holding.and_then(|t| t.lease_left(now)).map(|d| d.as_millis() as u64),
                    "score": w.score,
                    "accepted": w.accepted.len(),
                    "lastSeenMsAgo": w.last_seen.map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    "connected": connected.contains(&w.name.as_str()),
                    "waiting": waiting.contains(&w.name.as_str()),
                    "handOver": w.must_hand_over(),
                })
            })
            .collect();
        let tasks: Vec<Value> = self.scheduler.tasks_in_order().into_iter().map(|t| task_summary(t, now)).collect();
        let stuck: Vec<Value> =
            self.scheduler.stuck().into_iter().map(|(t, d)| json!({"task": t, "dependency": d})).collect();
        json!({
            "root": self.config.root.display().to_string(),
            "workflow": self.workflow_path.as_ref().map(|p| p.display().to_string()),
            "policy": self.policy.name(),
            "finished": self.all_done(),
            "coordinator": self.coordinator.is_some(),
            "counts": counts,
            "workers": workers,
            "tasks": tasks,
            "stuck": stuck,
            "problems": self.problems,
            "log": self.log,
        })
    }
}

pub(super) fn task_summary(t: &scheduler::Task, now: Instant) -> Value {
    json!({
        "id": t.spec.id,
        "description": t.spec.description,
        "state": t.state.name(),
        "holder": t.holder,
        "attempt": t.attempt,
        "phase": t.phase,
        "leaseLeftMs": t.lease_left(now).map(|d| d.as_millis() as u64),
        "dependencies": t.spec.dependencies,
        "reasons": t.reasons,
        "question": t.question,
    })
}

pub(super) fn task_json(t: &scheduler::Task, now: Instant) -> Value {
    let mut v = task_summary(t, now);
    let map = v.as_object_mut().expect("object");
    map.insert("task".into(), t.to_wire());
    map.insert("answer".into(), json!(t.answer));
    map.insert("report".into(), serde_json::to_value(&t.report).expect("serializes"));
    map.insert("rejections".into(), json!(t.rejections));
    map.insert("createdAt".into(), json!(t.created_at));
    map.insert("completedAt".into(), json!(t.completed_at));
    v
}

/// The snapshot of a project whose hub is not running, read from its store
/// (read-only): tasks, counts and whether the run finished. `None` when the
/// project has no store.
pub fn stored_snapshot(root: &Path) -> Option<Value> {
    let dir = root.join(".mcc");
    if !dir.join("state.db").is_file() {
        return None;
    }
    let store = crate::store::Store::open_read_only(&dir).ok()?;
    let (tasks, _workers) = store.load().ok()?;
    let finished = store.meta("run_finished").ok().flatten().as_deref() == Some("true");
    let workflow = store.meta("workflow_path").ok().flatten();
    let now = Instant::now();
    let counts: serde_json::Map<String, Value> = TaskState::ALL
        .iter()
        .map(|s| (s.name().to_owned(), Value::from(tasks.iter().filter(|t| t.state == *s).count())))
        .collect();
    let summaries: Vec<Value> = tasks.iter().map(|t| task_summary(t, now)).collect();
    Some(json!({
        "root": root.display().to_string(),
        "workflow": workflow,
        "policy": Value::Null,
        "finished": finished,
        "hubRunning": false,
        "coordinator": false,
        "counts": counts,
        "workers": [],
        "tasks": summaries,
        "stuck": [],
        "problems": [],
        "log": [],
    }))
}

/// Whether the store under `root` says the run finished (read-only).
pub fn stored_finished(root: &Path) -> bool {
    let dir = root.join(".mcc");
    dir.join("state.db").is_file()
        && crate::store::Store::open_read_only(&dir).ok().and_then(|s| s.meta("run_finished").ok().flatten()).as_deref()
            == Some("true")
}
