//! The old protocol's adapter: `register`, `task_complete` and `status`
//! in the original server's shapes, mapped onto the same operations as
//! mcc's own messages.

use std::time::Instant;

use serde_json::Value;

use super::submit::{Source, Submission};
use super::{ConnId, Engine, Role, bad_name};
use crate::hub::protocol::{ServerMsg, WorkerStatus};
use crate::scheduler::TaskState;
use crate::task::Report;

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
                    self.send(conn, ServerMsg::error("A workerId is required to register as a worker"));
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
            other => {
                let got = other.map_or_else(|| "no role".to_owned(), |r| format!("role `{r}`"));
                self.send(
                    conn,
                    ServerMsg::error(format!("Invalid {got}: valid roles are \"coordinator\" and \"worker\"")),
                );
            }
        }
    }

    pub(super) fn old_complete(&mut self, conn: ConnId, worker: &str, task_id: String, raw: Option<Value>) {
        let report = match raw.clone() {
            None => Report::completed(&task_id, worker, Vec::new()),
            Some(value) => match serde_path_to_error::deserialize::<_, Report>(value) {
                Ok(r) => r,
                Err(e) => {
                    let path = e.path().to_string();
                    self.send(
                        conn,
                        ServerMsg::error_code(
                            format!("Bad `task_complete` report: field `{path}`: {}", e.into_inner()),
                            "bad_report",
                        ),
                    );
                    return;
                }
            },
        };
        // Old clients know no attempts: the worker's current grant is meant.
        let attempt = report
            .attempt
            .or_else(|| self.scheduler.held_by(worker).filter(|t| t.spec.id == task_id).map(|t| t.attempt))
            .or_else(|| self.scheduler.task(&task_id).map(|t| t.attempt))
            .unwrap_or(0);
        let raw = raw.unwrap_or_else(|| serde_json::to_value(&report).expect("serializes"));
        self.apply(Submission {
            source: Source::Old { conn, raw },
            worker: worker.to_owned(),
            task: task_id,
            attempt,
            report,
        });
    }

    pub(super) fn old_status(&self) -> ServerMsg {
        let mut workers: Vec<WorkerStatus> = Vec::new();
        for conn in self.conns.values() {
            if let Role::Worker(name) = &conn.role {
                if workers.iter().any(|w| &w.worker_id == name) {
                    continue;
                }
                let current = self.scheduler.held_by(name).map(|t| t.spec.id.clone());
                workers.push(WorkerStatus { worker_id: name.clone(), busy: current.is_some(), current_task: current });
            }
        }
        for task in self.scheduler.tasks().filter(|t| t.state.in_flight()) {
            let Some(holder) = &task.holder else { continue };
            if !workers.iter().any(|w| &w.worker_id == holder) {
                workers.push(WorkerStatus {
                    worker_id: holder.clone(),
                    busy: true,
                    current_task: Some(task.spec.id.clone()),
                });
            }
        }
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        ServerMsg::StatusResponse {
            coordinator: if self.coordinator.is_some() { "connected" } else { "disconnected" }.to_owned(),
            workers,
            queue_size: self.scheduler.count(TaskState::Ready) + self.scheduler.count(TaskState::Waiting),
            active_tasks: self.scheduler.count(TaskState::Assigned) + self.scheduler.count(TaskState::Submitted),
        }
    }
}
