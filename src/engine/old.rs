//! The old protocol's adapter: `register`, `task_complete` and `status`
//! in the original server's shapes, mapped onto the same operations as
//! mcc's own messages.

use std::time::Instant;

use serde_json::Value;

use super::submit::{Source, Submission};
use super::{ConnId, Engine, Reply, Role, bad_name};
use crate::scheduler::{Task, TaskState};
use crate::task::{Report, ReportStatus};
use crate::wire::{ServerMsg, WorkerStatus};

/// The original server's `no_tasks` text, whatever the reason.
pub(super) const NO_TASKS: &str = "No tasks available in queue";

impl Engine {
    pub(super) fn register(
        &mut self,
        conn: ConnId,
        role: Option<&str>,
        project_id: Option<String>,
        worker_id: Option<String>,
    ) {
        match role {
            Some("coordinator") => {
                self.coordinator = Some(conn);
                self.set_role(conn, Role::Coordinator);
                let project_id = Some(project_id.unwrap_or_else(|| "default".to_owned()));
                self.send(conn, ServerMsg::Registered { role: "coordinator".into(), project_id, worker_id: None });
            }
            Some("worker") => {
                let Some(worker) = worker_id.filter(|w| !w.trim().is_empty()) else {
                    let hint = "send {\"type\":\"register\",\"role\":\"worker\",\"workerId\":\"worker-A\"}";
                    self.send(conn, ServerMsg::error_hint("Worker must provide workerId", hint));
                    return;
                };
                if let Some(err) = bad_name(&worker) {
                    self.send(conn, err);
                    return;
                }
                self.set_role(conn, Role::Worker(worker.clone()));
                self.send(
                    conn,
                    ServerMsg::Registered { role: "worker".into(), project_id: None, worker_id: Some(worker.clone()) },
                );
                self.to_coordinator(ServerMsg::WorkerRegistered { worker_id: worker.clone() });
                self.offer_old(conn, &worker, Instant::now());
            }
            _ => {
                let hint = "register with {\"type\":\"register\",\"role\":\"coordinator\"} or {\"type\":\"register\",\"role\":\"worker\",\"workerId\":\"worker-A\"}";
                self.send(conn, ServerMsg::error_hint("Invalid role. Must be \"coordinator\" or \"worker\"", hint));
            }
        }
    }

    /// `create_tasks`: the original's checks in its order, `tasks_created`
    /// (with `queued` = the whole queue before anything is handed out), then
    /// the idle workers are served, and those that got nothing hear `no_tasks`.
    pub(super) fn old_create_tasks(&mut self, conn: ConnId, tasks: Option<Value>, now: Instant) {
        if self.role(conn) != Role::Coordinator {
            let hint = "register first: {\"type\":\"register\",\"role\":\"coordinator\"}";
            self.send(conn, ServerMsg::error_hint("Only coordinator can create tasks", hint));
            return;
        }
        let tasks = match tasks {
            Some(Value::Array(tasks)) if !tasks.is_empty() => tasks,
            _ => {
                let hint = "send {\"type\":\"create_tasks\",\"tasks\":[{\"id\":\"task-001\",\"description\":\"...\"}]}";
                self.send(conn, ServerMsg::error_hint("tasks must be a non-empty array", hint));
                return;
            }
        };
        match self.add_tasks(&tasks) {
            Ok(ids) => {
                let queued = self.scheduler.count(TaskState::Ready) + self.scheduler.count(TaskState::Waiting);
                self.send(conn, ServerMsg::TasksCreated { count: ids.len(), queued });
                let idle: Vec<ConnId> =
                    self.waiters.iter().filter(|w| matches!(w.reply, Reply::Push)).map(|w| w.conn).collect();
                self.dispatch(now);
                for c in idle {
                    if self.waiters.iter().any(|w| w.conn == c && matches!(w.reply, Reply::Push)) {
                        self.send(c, ServerMsg::NoTasks { message: NO_TASKS.to_owned() });
                    }
                }
            }
            Err(e) => self.send(conn, e),
        }
    }

    /// `task_complete`: the role, then `taskId`, then any report the worker
    /// sent, read leniently (the original forwarded any value).
    pub(super) fn old_complete(&mut self, conn: ConnId, task_id: Option<Value>, raw: Option<Value>) {
        let Role::Worker(worker) = self.role(conn) else {
            let hint = "register as a worker first, or use `mcc worker done`";
            self.send(conn, ServerMsg::error_hint("Only workers can complete tasks", hint));
            return;
        };
        let Some(task_id) = task_id.as_ref().and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned)
        else {
            self.send(
                conn,
                ServerMsg::error_hint("taskId required", "send {\"type\":\"task_complete\",\"taskId\":\"task-001\"}"),
            );
            return;
        };
        let report = lenient_report(&task_id, &worker, raw.as_ref());
        // Old clients know no attempts: the worker's current grant is meant.
        let attempt = report
            .attempt
            .or_else(|| self.scheduler.held_by(&worker).filter(|t| t.spec.id == task_id).map(Task::attempt))
            .or_else(|| self.scheduler.task(&task_id).map(Task::attempt))
            .unwrap_or(0);
        self.apply(Submission { source: Source::Old { conn, raw }, worker, task: task_id, attempt, report });
    }

    pub(super) fn old_status(&self) -> ServerMsg {
        let mut workers: Vec<WorkerStatus> = Vec::new();
        // In the order they connected, as the original listed them.
        let mut conns: Vec<(&ConnId, &super::Conn)> = self.conns.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        for (_, conn) in conns {
            if let Role::Worker(name) = &conn.role {
                if workers.iter().any(|w| &w.worker_id == name) {
                    continue;
                }
                let current = self.scheduler.held_by(name).map(|t| t.spec.id.clone());
                workers.push(WorkerStatus { worker_id: name.clone(), busy: current.is_some(), current_task: current });
            }
        }
        // Held by workers not connected now: from the index of held tasks, not a scan of all.
        let held = [TaskState::Assigned, TaskState::Submitted].into_iter().flat_map(|s| self.scheduler.ids_in_state(s));
        for task in held.filter_map(|id| self.scheduler.task(id)) {
            let Some(holder) = task.holder() else { continue };
            if !workers.iter().any(|w| w.worker_id == holder) {
                workers.push(WorkerStatus {
                    worker_id: holder.to_owned(),
                    busy: true,
                    current_task: Some(task.spec.id.clone()),
                });
            }
        }
        ServerMsg::StatusResponse {
            coordinator: if self.coordinator.is_some() { "connected" } else { "disconnected" }.to_owned(),
            workers,
            queue_size: self.scheduler.count(TaskState::Ready) + self.scheduler.count(TaskState::Waiting),
            active_tasks: self.scheduler.count(TaskState::Assigned) + self.scheduler.count(TaskState::Submitted),
        }
    }
}

/// A report from `task_complete`: what can be read of what the worker sent
/// (`status`, default completed; `notes`; `deliverables`; a whole score 1-5),
/// the rest ignored for judging and forwarded as sent.
fn lenient_report(task_id: &str, worker: &str, raw: Option<&Value>) -> Report {
    let mut report = Report::completed(task_id, worker, Vec::new());
    let Some(raw) = raw else { return report };
    if let Ok(full) = serde_json::from_value::<Report>(raw.clone())
        && full.task_id == task_id
    {
        report = full;
        report.worker_id = Some(worker.to_owned());
        report.context_efficiency_score = report.context_efficiency_score.filter(|s| (1..=5).contains(s));
        return report;
    }
    report.status = match raw.get("status").and_then(Value::as_str) {
        Some("failed") => ReportStatus::Failed,
        Some("blocked") => ReportStatus::Blocked,
        _ => ReportStatus::Completed,
    };
    report.notes = raw.get("notes").and_then(Value::as_str).map(str::to_owned);
    report.deliverables = raw
        .get("deliverables")
        .and_then(Value::as_array)
        .map(|d| d.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    report.context_efficiency_score = raw
        .get("contextEfficiencyScore")
        .and_then(Value::as_u64)
        .filter(|s| (1..=5).contains(s))
        .and_then(|s| u8::try_from(s).ok());
    report.blocker = raw.get("blocker").and_then(Value::as_str).map(str::to_owned);
    report.requested_guidance = raw.get("requestedGuidance").and_then(Value::as_str).map(str::to_owned);
    report.attempt = raw.get("attempt").and_then(Value::as_u64).and_then(|a| u32::try_from(a).ok());
    report
}
