//! Views of the engine's state: `mcc status`'s snapshot and a task in full,
//! as typed structs shared with the CLI (which reads them back from the
//! wire, or from the store when no hub runs).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Engine, Role};
use crate::scheduler::{self, TaskState};

/// Everything `mcc status` shows; `snapshot` on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snapshot {
    pub root: String,
    pub workflow: Option<String>,
    pub policy: Option<String>,
    pub finished: bool,
    /// False when read from the store with no hub running.
    pub hub_running: bool,
    pub coordinator: bool,
    /// Tasks per state name, every state present.
    pub counts: BTreeMap<String, u64>,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskSummary>,
    pub stuck: Vec<Stuck>,
    pub problems: Vec<String>,
    pub log: Vec<String>,
}

impl Snapshot {
    /// Read from a `snapshot` message.
    pub fn from_wire(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("the hub sent a snapshot this mcc cannot read ({e})"))
    }

    pub fn to_wire(&self) -> Value {
        serde_json::to_value(self).expect("a snapshot always serializes")
    }

    pub fn count(&self, state: TaskState) -> u64 {
        self.counts.get(state.name()).copied().unwrap_or(0)
    }
}

/// One worker in a [`Snapshot`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerView {
    pub name: String,
    pub holding: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub score: Option<u8>,
    pub accepted: usize,
    pub last_seen_ms_ago: Option<u64>,
    pub connected: bool,
    pub waiting: bool,
    pub hand_over: bool,
}

/// One task in a [`Snapshot`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskSummary {
    pub id: String,
    pub description: String,
    pub state: String,
    pub holder: Option<String>,
    pub attempt: u32,
    pub phase: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub dependencies: Vec<String>,
    pub reasons: Vec<String>,
    pub question: Option<String>,
}

/// A task waiting on a dependency that failed or was cancelled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stuck {
    pub task: String,
    pub dependency: String,
}

fn counts_of(tasks: &[&scheduler::Task]) -> BTreeMap<String, u64> {
    TaskState::ALL
        .iter()
        .map(|s| (s.name().to_owned(), tasks.iter().filter(|t| t.state == *s).count() as u64))
        .collect()
}

impl Engine {
    /// Everything `mcc status` shows.
    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let connected: Vec<&str> = self
            .conns
            .values()
            .filter_map(|c| if let Role::Worker(n) = &c.role { Some(n.as_str()) } else { None })
            .collect();
        let waiting: Vec<&str> = self.waiters.iter().map(|w| w.worker.as_str()).collect();
        let workers = self
            .scheduler
            .workers()
            .map(|w| {
                let holding = self
                    .scheduler
                    .tasks()
                    .find(|t| t.state == TaskState::Assigned && t.holder.as_deref() == Some(&w.name));
                WorkerView {
                    name: w.name.clone(),
                    holding: holding.map(|t| t.spec.id.clone()),
                    lease_left_ms: holding.and_then(|t| t.lease_left(now)).map(|d| d.as_millis() as u64),
                    score: w.score,
                    accepted: w.accepted.len(),
                    last_seen_ms_ago: w.last_seen.map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    connected: connected.contains(&w.name.as_str()),
                    waiting: waiting.contains(&w.name.as_str()),
                    hand_over: w.must_hand_over(),
                }
            })
            .collect();
        Snapshot {
            root: self.config.root.display().to_string(),
            workflow: self.workflow_path.as_ref().map(|p| p.display().to_string()),
            policy: Some(self.policy.name()),
            finished: self.all_done(),
            hub_running: true,
            coordinator: self.coordinator.is_some(),
            counts: counts_of(&self.scheduler.tasks().collect::<Vec<_>>()),
            workers,
            tasks: self.scheduler.tasks_in_order().into_iter().map(|t| task_summary(t, now)).collect(),
            stuck: self.scheduler.stuck().into_iter().map(|(task, dependency)| Stuck { task, dependency }).collect(),
            problems: self.problems.clone(),
            log: self.log.clone(),
        }
    }
}

pub(super) fn task_summary(t: &scheduler::Task, now: Instant) -> TaskSummary {
    TaskSummary {
        id: t.spec.id.clone(),
        description: t.spec.description.clone(),
        state: t.state.name().to_owned(),
        holder: t.holder.clone(),
        attempt: t.attempt,
        phase: t.phase.clone(),
        lease_left_ms: t.lease_left(now).map(|d| d.as_millis() as u64),
        dependencies: t.spec.dependencies.clone(),
        reasons: t.reasons.clone(),
        question: t.question.clone(),
    }
}

pub(super) fn task_json(t: &scheduler::Task, now: Instant) -> Value {
    let mut v = serde_json::to_value(task_summary(t, now)).expect("serializes");
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
pub fn stored_snapshot(root: &Path) -> Option<Snapshot> {
    let dir = root.join(".mcc");
    if !dir.join("state.db").is_file() {
        return None;
    }
    let store = crate::store::Store::open_read_only(&dir).ok()?;
    let (tasks, _workers) = store.load().ok()?;
    let now = Instant::now();
    Some(Snapshot {
        root: root.display().to_string(),
        workflow: store.meta("workflow_path").ok().flatten(),
        finished: store.meta("run_finished").ok().flatten().as_deref() == Some("true"),
        counts: counts_of(&tasks.iter().collect::<Vec<_>>()),
        tasks: tasks.iter().map(|t| task_summary(t, now)).collect(),
        ..Snapshot::default()
    })
}

/// Whether the store under `root` says the run finished (read-only).
pub fn stored_finished(root: &Path) -> bool {
    let dir = root.join(".mcc");
    dir.join("state.db").is_file()
        && crate::store::Store::open_read_only(&dir).ok().and_then(|s| s.meta("run_finished").ok().flatten()).as_deref()
            == Some("true")
}
