//! Reading a project's store while no hub runs (`mcc status`, `mcc tasks
//! list | show`, `mcc worker` after the end): the same typed views a hub sends,
//! built from the store opened read-only. What only a running hub knows
//! (workers connected, problems, the workflow's log) is empty.
//!
//! [`task_summary`] and [`task_info`] are the one place a task becomes its view: the engine's
//! builders use it too.

use std::path::Path;
use std::time::Instant;

use super::RUN_FINISHED;
use crate::scheduler::{Task, TaskState};
use crate::wire::{Summary, TaskInfo, TaskSummary};

/// What the store of a project says, with no hub running.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// As a hub's summary reads, with `hub_running` false; `questions` holds
    /// every blocked task.
    pub summary: Summary,
    /// Every task, in creation order.
    pub tasks: Vec<TaskSummary>,
    /// Where it was read: `.mcc/state.db`, or the project in a PostgreSQL database.
    pub from: String,
}

/// The views of the store under `root` (read-only); `None` when the project
/// has no store or it cannot be read.
pub fn stored(root: &Path) -> Option<Stored> {
    let location = super::Location::of_root(root).ok()?;
    let mut store = super::open_read_only(&location).ok()??;
    let from = match location {
        super::Location::Sqlite(_) => ".mcc/state.db".to_owned(),
        postgres @ super::Location::Postgres { .. } => postgres.to_string(),
    };
    let (tasks, _workers) = store.load().ok()?;
    let now = Instant::now();
    let tasks: Vec<TaskSummary> = tasks.iter().map(|t| task_summary(t, now)).collect();
    let counts = TaskState::ALL
        .iter()
        .map(|s| (s.name().to_owned(), tasks.iter().filter(|t| t.state == s.name()).count() as u64))
        .collect();
    let summary = Summary {
        root: root.display().to_string(),
        workflow: store.meta("workflow_path").ok().flatten(),
        finished: store.meta(RUN_FINISHED).ok().flatten().as_deref() == Some("true"),
        counts,
        questions: tasks.iter().filter(|t| t.state == TaskState::Blocked.name()).cloned().collect(),
        ..Summary::default()
    };
    Some(Stored { summary, tasks, from })
}

/// Whether the store under `root` says the run finished (read-only).
pub fn finished(root: &Path) -> bool {
    super::read_project(root).ok().flatten().and_then(|mut s| s.meta(RUN_FINISHED).ok().flatten()).as_deref()
        == Some("true")
}

/// Task `id` in full from the store under `root` (read-only), as a hub's
/// `show_task` answers; `None` when there is no store or no such task.
pub fn stored_task(root: &Path, id: &str) -> Option<TaskInfo> {
    let mut store = super::read_project(root).ok()??;
    let (tasks, _workers) = store.load().ok()?;
    tasks.iter().find(|t| t.spec.id == id).map(|t| task_info(t, Instant::now()))
}

/// A task in full, as `show_task` answers (its history is read apart, by the caller).
pub fn task_info(t: &Task, now: Instant) -> TaskInfo {
    TaskInfo {
        summary: task_summary(t, now),
        task: t.to_wire(),
        answer: t.answer().map(str::to_owned),
        report: t.report().cloned(),
        rejections: t.rejections(),
        created_at: t.created_at().to_owned(),
        completed_at: t.completed_at().map(str::to_owned),
        history: None,
    }
}

/// A task as views show it, its lease measured at `now`.
pub fn task_summary(t: &Task, now: Instant) -> TaskSummary {
    TaskSummary {
        id: t.spec.id.clone(),
        description: t.spec.description.clone(),
        state: t.state().name().to_owned(),
        holder: t.holder().map(str::to_owned),
        attempt: t.attempt(),
        phase: t.phase().map(str::to_owned),
        lease_left_ms: t.lease_left(now).map(|d| d.as_millis() as u64),
        dependencies: t.spec.dependencies.clone(),
        reasons: t.reasons().to_vec(),
        question: t.question().map(str::to_owned),
    }
}
