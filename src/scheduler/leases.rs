//! A held task's life: the holder check that fences stale reports, lease
//! extension and expiry, and what a holder or the engineer may do with a
//! task (submit, judge, fail, block, answer, progress, leave, cancel, retry).

use std::time::Instant;

use serde_json::{Value, json};

use super::{Judgement, Refusal, Scheduler, Task, TaskId, TaskState};
use crate::event::EventKind;
use crate::task::{Report, now_rfc3339};

/// The verdict on a submitted task.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    Reject(Vec<String>),
}

/// What a verdict did.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    Accepted,
    /// Back to the same worker, with a new attempt.
    Rejected {
        reasons: Vec<String>,
    },
    /// Rejected with no attempts left.
    Failed {
        reasons: Vec<String>,
    },
}

impl Scheduler {
    /// Any message of a holder extends its lease.
    pub fn touch(&mut self, worker: &str, now: Instant) {
        self.see_worker(worker, now);
        let Some(id) = self.held_by(worker).map(|t| t.spec.id.clone()) else { return };
        let task = self.tasks.get_mut(&id).expect("held task exists");
        task.extend_lease(now);
        self.changes.leases.insert(id);
    }

    /// Check that `worker` holds `id` at `attempt` (when given).
    pub fn check_holder(&self, worker: &str, id: &str, attempt: Option<u32>) -> Result<&Task, Refusal> {
        let task = self.tasks.get(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        let holds = task.state() == TaskState::Assigned && task.holder() == Some(worker);
        if holds {
            return match attempt {
                Some(given) if given != task.attempt() => Err(Refusal::StaleAttempt {
                    task: id.to_owned(),
                    worker: worker.to_owned(),
                    given,
                    current: task.attempt(),
                }),
                _ => Ok(task),
            };
        }
        let was_mine = task.last_holder() == Some(worker);
        if let (TaskState::Assigned, Some(holder)) = (task.state(), task.holder()) {
            return Err(Refusal::NotHolder {
                task: id.to_owned(),
                worker: worker.to_owned(),
                holder: holder.to_owned(),
                attempt: task.attempt(),
                lease_note: if was_mine { ": your lease ran out and the task went to another worker" } else { "" },
            });
        }
        let why = match task.state() {
            TaskState::Ready | TaskState::Waiting if was_mine => {
                "your lease ran out and the task went back to the queue".to_owned()
            }
            TaskState::Submitted if was_mine => "you already reported it; it is being judged".to_owned(),
            TaskState::Accepted if was_mine => "it is already accepted".to_owned(),
            state => format!("it is {state} and nobody holds it"),
        };
        Err(Refusal::NotHeld { task: id.to_owned(), worker: worker.to_owned(), why })
    }

    /// A worker reports a held task done; it waits for a verdict.
    pub fn submit(&mut self, worker: &str, id: &str, report: Report, now: Instant) -> Result<(), Refusal> {
        self.check_holder(worker, id, report.attempt)?;
        self.touch(worker, now);
        if let Some(score) = report.context_efficiency_score {
            self.set_score(worker, score, now);
        }
        let task = self.tasks.get_mut(id).expect("checked");
        let attempt = task.attempt();
        let mut detail = json!({ "deliverables": report.deliverables });
        // Writes outside the task go on its record with the submission (docs/worker.md).
        for (key, files) in [("outside", &report.outside), ("shared", &report.shared)] {
            if !files.is_empty() {
                detail[key] = json!(files);
            }
        }
        if !report.conflicts.is_empty() {
            detail["conflicts"] = json!(report.conflicts);
        }
        task.report = Some(report);
        self.transition(id, TaskState::Submitted);
        self.event(EventKind::Submitted, Some(id), Some(worker), Some(attempt), detail);
        Ok(())
    }

    /// Apply a verdict to a submitted task.
    pub fn judge(&mut self, id: &str, verdict: Verdict, now: Instant) -> Result<Judged, Refusal> {
        self.judge_with(id, verdict, now, true)
    }

    /// [`Self::judge`], where `regrant` false sends a rejected task back to
    /// the queue rather than straight back to its worker (a spent budget
    /// holds new attempts back).
    pub fn judge_with(&mut self, id: &str, verdict: Verdict, now: Instant, regrant: bool) -> Result<Judged, Refusal> {
        let task = self.tasks.get(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if task.state() != TaskState::Submitted {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state(),
                what: "only a submitted task can be judged",
            });
        }
        let worker = task.holder().map(str::to_owned).expect("a submitted task has its holder");
        let attempt = task.attempt();
        let judged = self.judge_inner(id, &worker, attempt, verdict, now, regrant);
        let judgement = match &judged {
            Judged::Accepted => Judgement { accepted: true, failed: false, reasons: Vec::new() },
            Judged::Rejected { reasons } => Judgement { accepted: false, failed: false, reasons: reasons.clone() },
            Judged::Failed { reasons } => Judgement { accepted: false, failed: true, reasons: reasons.clone() },
        };
        if let Some(applied) = self.tasks.get_mut(id).and_then(|t| t.applied.get_mut(&attempt)) {
            applied.verdict = Some(judgement);
        }
        Ok(judged)
    }

    fn judge_inner(
        &mut self,
        id: &str,
        worker: &str,
        attempt: u32,
        verdict: Verdict,
        now: Instant,
        regrant: bool,
    ) -> Judged {
        let worker = worker.to_owned();
        match verdict {
            Verdict::Accept => {
                self.transition(id, TaskState::Accepted);
                let task = self.tasks.get_mut(id).expect("known");
                task.completed_at = Some(now_rfc3339());
                task.reasons.clear();
                // Its stored row does not change: `accepted` is rebuilt from the tasks at restart.
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.accepted.push(id.to_owned());
                }
                self.event(EventKind::Accepted, Some(id), Some(&worker), Some(attempt), Value::Null);
                self.release_dependents(id);
                Judged::Accepted
            }
            Verdict::Reject(reasons) => {
                let task = self.tasks.get_mut(id).expect("known");
                task.rejections += 1;
                task.spent += 1;
                task.reasons.clone_from(&reasons);
                let used = task.attempts_used();
                self.event(EventKind::Rejected, Some(id), Some(&worker), Some(attempt), json!({ "reasons": reasons }));
                if used >= self.settings.max_attempts {
                    self.transition(id, TaskState::Failed);
                    self.event(
                        EventKind::Failed,
                        Some(id),
                        Some(&worker),
                        Some(attempt),
                        json!({ "reason": "attempts exhausted" }),
                    );
                    return Judged::Failed { reasons };
                }
                if self.holding.contains_key(&worker) || !regrant {
                    // It took other work meanwhile: the task goes back to the queue.
                    self.transition(id, TaskState::Ready);
                } else {
                    // Back to the same worker: it knows the task and now the reasons.
                    self.regrant(id, &worker, now);
                }
                Judged::Rejected { reasons }
            }
        }
    }

    /// A worker gives up a held task; another attempt follows unless exhausted.
    pub fn fail(
        &mut self,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        reason: &str,
        now: Instant,
    ) -> Result<TaskState, Refusal> {
        self.check_holder(worker, id, attempt)?;
        self.touch(worker, now);
        let task = self.tasks.get_mut(id).expect("checked");
        task.reasons = vec![reason.to_owned()];
        task.spent += 1;
        let attempt = task.attempt();
        let state =
            if task.attempts_used() >= self.settings.max_attempts { TaskState::Failed } else { TaskState::Ready };
        self.transition(id, state);
        self.event(
            EventKind::FailedAttempt,
            Some(id),
            Some(worker),
            Some(attempt),
            json!({ "reason": reason, "now": state.name() }),
        );
        Ok(state)
    }

    /// The holder's attempt ends the task for good, whatever attempts are
    /// left (it cost more than the task's budget): `reason` says why.
    pub fn fail_for_good(&mut self, worker: &str, id: &str, reason: &str) -> Result<(), Refusal> {
        self.check_holder(worker, id, None)?;
        let task = self.tasks.get_mut(id).expect("checked");
        task.reasons = vec![reason.to_owned()];
        task.spent += 1;
        let attempt = task.attempt();
        self.transition(id, TaskState::Failed);
        self.event(EventKind::Failed, Some(id), Some(worker), Some(attempt), json!({ "reason": reason }));
        Ok(())
    }

    /// A worker asks the engineer a question; the task waits for `answer`.
    pub fn block(
        &mut self,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        question: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.check_holder(worker, id, attempt)?;
        self.touch(worker, now);
        let task = self.tasks.get_mut(id).expect("checked");
        task.question = Some(question.to_owned());
        let attempt = task.attempt();
        self.transition(id, TaskState::Blocked);
        self.event(EventKind::Blocked, Some(id), Some(worker), Some(attempt), json!({ "question": question }));
        Ok(())
    }

    /// The engineer answers a blocked task; it becomes ready again.
    pub fn answer(&mut self, id: &str, text: &str) -> Result<(), Refusal> {
        let task = self.tasks.get_mut(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if task.state() != TaskState::Blocked {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state(),
                what: "only a blocked task takes an answer",
            });
        }
        task.answer = Some(text.to_owned());
        self.transition(id, TaskState::Ready);
        self.event(EventKind::Answered, Some(id), None, None, json!({ "answer": text }));
        Ok(())
    }

    /// A held task's note of progress; extends the lease.
    pub fn progress(
        &mut self,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        note: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.check_holder(worker, id, attempt)?;
        self.touch(worker, now);
        let attempt = self.tasks[id].attempt();
        self.event(EventKind::Progress, Some(id), Some(worker), Some(attempt), json!({ "note": note }));
        Ok(())
    }

    /// A worker leaves: what it holds goes back to the queue at once.
    pub fn leave(&mut self, worker: &str) -> Vec<TaskId> {
        let held: Vec<TaskId> = self.holding.get(worker).cloned().into_iter().collect();
        for id in &held {
            let attempt = self.tasks[id].attempt();
            self.transition(id, TaskState::Ready);
            self.event(EventKind::Released, Some(id), Some(worker), Some(attempt), Value::Null);
        }
        held
    }

    /// Leases that ran out: each task goes back to ready (or fails when its
    /// attempts are used up). Returns the tasks released.
    pub fn expire(&mut self, now: Instant) -> Vec<TaskId> {
        let mut expired: Vec<TaskId> = self
            .holding
            .values()
            .filter(|id| self.tasks[*id].lease_until().is_some_and(|u| u <= now))
            .cloned()
            .collect();
        expired.sort_by_key(|id| self.tasks[id].seq());
        for id in &expired {
            let task = self.tasks.get_mut(id).expect("known");
            task.spent += 1;
            let task = &self.tasks[id];
            let (attempt, holder) = (task.attempt(), task.holder().map(str::to_owned));
            let state =
                if task.attempts_used() >= self.settings.max_attempts { TaskState::Failed } else { TaskState::Ready };
            if state == TaskState::Failed {
                self.tasks.get_mut(id).expect("known").reasons = vec!["lease expired on the last attempt".to_owned()];
            }
            self.transition(id, state);
            self.event(EventKind::Expired, Some(id), holder.as_deref(), Some(attempt), json!({ "now": state.name() }));
        }
        expired
    }

    /// The earliest lease deadline, for the owner's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.holding.values().filter_map(|id| self.tasks[id].lease_until()).min()
    }

    /// Cancel a task that is not finished.
    pub fn cancel(&mut self, id: &str) -> Result<(), Refusal> {
        let task = self.tasks.get(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if task.state().is_terminal() {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state(),
                what: "it is already finished",
            });
        }
        let holder = task.holder().map(str::to_owned);
        self.transition(id, TaskState::Cancelled);
        self.event(EventKind::Cancelled, Some(id), holder.as_deref(), None, Value::Null);
        Ok(())
    }

    /// Put a failed or cancelled task back in the queue with fresh attempts.
    pub fn retry(&mut self, id: &str) -> Result<(), Refusal> {
        let task = self.tasks.get_mut(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if !matches!(task.state(), TaskState::Failed | TaskState::Cancelled) {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state(),
                what: "only a failed or cancelled task can be retried",
            });
        }
        task.restart_attempts();
        let attempt = task.attempt();
        let next = if self.deps_met(id) { TaskState::Ready } else { TaskState::Waiting };
        self.transition(id, next);
        self.event(EventKind::Retried, Some(id), None, Some(attempt), Value::Null);
        Ok(())
    }
}
