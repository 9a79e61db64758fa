//! Judging: a submitted report is validated (its command runs off the
//! engine thread) and the workflow gives the verdict; whoever waits for it
//! is answered with the verdict and its next task.

use std::time::{Duration, Instant};

use super::{Engine, Input, Judging, Reply};
use crate::command::{self, Outcome};
use crate::scheduler::{Judged, TaskState};

impl Engine {
    pub(super) fn start_judging(&mut self, id: &str) {
        let task = self.scheduler.task(id).expect("submitted task exists");
        match task.spec.acceptance.validation.clone() {
            Some(script) => {
                let (tx, root, limit, attempt) =
                    (self.tx.clone(), self.config.root.clone(), self.config.validation_limit, task.attempt);
                let id = id.to_owned();
                std::thread::spawn(move || {
                    let outcome = command::run_shell(&script, &root, limit).unwrap_or_else(|e| Outcome {
                        code: None,
                        stdout: String::new(),
                        stderr: format!("could not start `sh`: {e}"),
                        timed_out: false,
                    });
                    let _ = tx.send(Input::Validated { task: id, attempt, outcome });
                });
            }
            None => self.decide(id, None),
        }
    }

    pub(super) fn validated(&mut self, id: &str, attempt: u32, outcome: &Outcome) {
        let current = self.scheduler.task(id).is_some_and(|t| t.state == TaskState::Submitted && t.attempt == attempt);
        if current {
            self.decide(id, Some(outcome));
        }
    }

    /// Ask the policy for a verdict and apply it; answer whoever waits.
    pub(super) fn decide(&mut self, id: &str, validation: Option<&Outcome>) {
        let now = Instant::now();
        let task = self.scheduler.task(id).expect("judged task exists");
        let report = task.report.clone().expect("a submitted task has a report");
        let attempt = task.attempt;
        let verdict = match self.policy.accept(task, &report, validation, &self.scheduler) {
            Ok(v) => v,
            Err(e) => {
                // A broken `accept` rejects nothing: the task waits for the engineer.
                self.problem(format!(
                    "workflow accept for task {id}: {e}; the task waits (fix the workflow: it is judged again when the fixed one loads, or `mcc tasks retry {id}`)"
                ));
                self.unjudged.insert(id.to_owned());
                if let Some(j) = self.judging.remove(id)
                    && let Some(conn) = j.conn
                {
                    let message =
                        format!("task {id} was received but the workflow could not judge it; the engineer was told");
                    let reply = Reply::Ack { what: "done", message, task: id.to_owned() };
                    self.offer(conn, &j.worker, j.wait, reply, now);
                }
                return;
            }
        };
        let judged = self.scheduler.judge(id, verdict, now).expect("the task is submitted");
        let failed_before = format!("workflow accept for task {id}: ");
        self.problems.retain(|p| !p.starts_with(&failed_before));
        let (accepted, failed, reasons) = match judged {
            Judged::Accepted => (true, false, Vec::new()),
            Judged::Rejected { reasons } => (false, false, reasons),
            Judged::Failed { reasons } => (false, true, reasons),
        };
        let Some(j) = self.judging.remove(id) else { return };
        let Some(conn) = j.conn else { return };
        if j.old_protocol {
            self.offer_old(conn, &j.worker, now);
        } else {
            let reply = Reply::Verdict { task: id.to_owned(), attempt, accepted, failed, reasons };
            self.offer(conn, &j.worker, j.wait, reply, now);
        }
    }

    /// Judge `id` again (after a fixed workflow loaded, or `mcc tasks retry`).
    pub(super) fn rejudge(&mut self, id: &str) {
        self.unjudged.remove(id);
        if self.scheduler.task(id).is_some_and(|t| t.state == TaskState::Submitted) {
            let worker = self.scheduler.task(id).and_then(|t| t.holder.clone()).unwrap_or_default();
            self.judging.entry(id.to_owned()).or_insert(Judging {
                conn: None,
                worker,
                wait: Duration::ZERO,
                old_protocol: false,
            });
            self.start_judging(id);
        }
    }
}
