//! Judging: a submitted report is validated and the workflow gives the
//! verdict; whoever waits for it is answered with the verdict and its next
//! task.
//!
//! Nothing here waits. A validation command starts through the supervised
//! runner ([`Supervisor::start`](crate::command::Supervisor::start)) and its outcome comes back as an
//! [`Input::Validated`]; its [`Handle`] is kept per (task, attempt) and
//! cancelled (the whole process group killed) as soon as that grant ends
//! by cancel, retry or anything else that moves the task on. A workflow's
//! `accept` that runs a command parks (see `src/lua/calls.rs`) and its
//! verdict arrives later through [`Policy::take_verdicts`](super::Policy).
//! Until then the verdict is pending; a worker waiting on `done` hears it
//! within its wait, or is told it is pending and how to learn it.

use std::time::{Duration, Instant};

use super::{Engine, Input, Judging, PolicyError, ProblemKind, Reply};
use crate::command::{Handle, Job, Outcome, tail};
use crate::scheduler::{Judged, Task, TaskId, TaskState, Verdict};
use crate::store::{OUTPUT_TAIL, ValidationRecord};

/// The least a `done` waits for its verdict, even one that asked to wait
/// for nothing: most validations end well within it. Past the worker's wait
/// (or this), it hears the verdict is pending; the client allows 30 s more.
/// The default of [`Timing::verdict_wait_floor`](super::Timing).
pub(super) const VERDICT_WAIT_FLOOR: Duration = Duration::from_secs(10);

/// When a `done` received at `now` with `wait` is told its verdict is
/// pending: past `wait`, and never before `floor`.
pub(super) fn verdict_deadline(now: Instant, wait: Duration, floor: Duration) -> Instant {
    now + wait.max(floor)
}

/// A validation command running for one attempt of a task.
pub(super) struct Validation {
    handle: Handle,
    script: String,
    since: Instant,
}

/// What the store keeps of a validation: its command, exit, and the last
/// [`OUTPUT_TAIL`] bytes of each stream.
fn validation_record(task: &str, attempt: u32, command: String, outcome: &Outcome) -> ValidationRecord {
    ValidationRecord {
        task: task.to_owned(),
        attempt,
        command,
        exit_code: outcome.code,
        timed_out: outcome.timed_out,
        stdout_tail: tail(&outcome.stdout, OUTPUT_TAIL),
        stderr_tail: tail(&outcome.stderr, OUTPUT_TAIL),
    }
}

impl Engine {
    pub(super) fn start_judging(&mut self, id: &str) {
        let task = self.scheduler.task(id).expect("submitted task exists");
        match task.spec.acceptance.validation.clone() {
            Some(script) => {
                let attempt = task.attempt();
                // A racer's validation runs in its copy folder; MCC_ROOT names the project root.
                let folder = self.racer_folder(task).unwrap_or_else(|| self.config.root.clone());
                let job = Job::shell(&script, &folder, self.config.validation_limit)
                    .env("MCC_ROOT", self.config.root.as_os_str());
                let (tx, task_id) = (self.tx.clone(), id.to_owned());
                let handle = self.config.runners.validations.start(job, move |outcome| {
                    let _ = tx.blocking_send(Input::Validated { task: task_id, attempt, outcome });
                });
                let running = Validation { handle, script, since: Instant::now() };
                if let Some(old) = self.validations.insert((id.to_owned(), attempt), running) {
                    old.handle.cancel();
                }
            }
            None => self.decide(id, None),
        }
    }

    pub(super) fn validated(&mut self, id: &str, attempt: u32, outcome: &Outcome) {
        let ran = self.validations.remove(&(id.to_owned(), attempt));
        let current =
            self.scheduler.task(id).is_some_and(|t| t.state() == TaskState::Submitted && t.attempt() == attempt);
        if current {
            // Kept with the attempt: the exit code alone does not say why (a
            // word count, a failing test's name is in the output).
            if let Some(ran) = ran {
                self.notes.validations.push(validation_record(id, attempt, ran.script, outcome));
            }
            self.note_race_validation(&id.to_owned(), outcome);
            self.decide(id, Some(outcome));
        }
    }

    /// End what judges a grant that has ended: the task is no longer
    /// submitted at that attempt (cancelled or retried by the engineer or a
    /// workflow hook, judged by other means). Its validation dies with its
    /// group, and so does the command a parked `accept` waits on; that call
    /// is dropped, never resumed. A worker waiting on its `done` hears now
    /// what became of the task, not "pending" at the end of its wait.
    pub(super) fn end_stale_judgements(&mut self, now: Instant) {
        let scheduler = &self.scheduler;
        let current = |id: &str, attempt: u32| {
            scheduler.task(id).is_some_and(|t| t.state() == TaskState::Submitted && t.attempt() == attempt)
        };
        self.validations.retain(|(id, attempt), v| {
            let current = current(id, *attempt);
            if !current {
                v.handle.cancel();
            }
            current
        });
        for call in self.policy.end_accepts(&current) {
            if let Some(handle) = self.workflow_calls.remove(&call) {
                handle.cancel();
            }
        }
        // A task judged again at a later attempt is still pending; the others are not.
        self.accept_pending.retain(|id| scheduler.task(id).is_some_and(|t| t.state() == TaskState::Submitted));
        let ended: Vec<TaskId> = self
            .judging
            .keys()
            .filter(|id| scheduler.task(id).is_none_or(|t| t.state() != TaskState::Submitted))
            .cloned()
            .collect();
        for id in ended {
            let j = self.judging.remove(&id).expect("listed");
            let Some(conn) = j.conn else { continue };
            if j.old_protocol {
                self.offer_old(conn, &j.worker, now);
                continue;
            }
            let lost = self.lost_race_message(&id, &j.worker);
            let message = match self.scheduler.task(&id).map(Task::state) {
                _ if lost.is_some() => lost.expect("checked"),
                Some(TaskState::Cancelled) => format!("task {id} was cancelled; nothing more to do on it"),
                Some(state) => format!(
                    "task {id} is {} again: its attempt ended before it was judged (retried by the engineer or the workflow); nothing more to do on this attempt",
                    state.name()
                ),
                None => format!("task {id} is gone; nothing more to do on it"),
            };
            let reply = Reply::Ack { what: "done", message, task: id };
            self.offer(conn, &j.worker, j.wait, reply, now);
        }
    }

    /// Ask the policy for a verdict and apply it, or leave it pending.
    pub(super) fn decide(&mut self, id: &str, validation: Option<&Outcome>) {
        let task = self.scheduler.task(id).expect("judged task exists");
        let report = task.report().cloned().expect("a submitted task has a report");
        match self.policy.accept(task, &report, validation, &self.scheduler) {
            Ok(Some(verdict)) => self.conclude(id, Ok(verdict)),
            Ok(None) => {
                self.accept_pending.insert(id.to_owned());
            }
            Err(e) => self.conclude(id, Err(e)),
        }
    }

    /// Verdicts of `accept` calls that waited on a command.
    pub(super) fn workflow_verdicts(&mut self) {
        for (id, attempt, verdict) in self.policy.take_verdicts() {
            self.accept_pending.remove(&id);
            let current =
                self.scheduler.task(&id).is_some_and(|t| t.state() == TaskState::Submitted && t.attempt() == attempt);
            if current {
                self.conclude(&id, verdict);
            }
        }
    }

    /// Start the commands the workflow waits on; their outcomes come back as inputs.
    pub(super) fn start_workflow_commands(&mut self) {
        for (call, job) in self.policy.take_commands() {
            let tx = self.tx.clone();
            let handle = self.config.runners.workflows.start(job, move |outcome| {
                let _ = tx.blocking_send(Input::WorkflowCommand { call, outcome });
            });
            self.workflow_calls.insert(call, handle);
        }
    }

    /// A workflow command finished: resume the call that waited on it.
    pub(super) fn workflow_command_done(&mut self, call: u64, outcome: Outcome) {
        if self.workflow_calls.remove(&call).is_none() {
            // Started by a workflow since replaced: nothing waits on it.
            return;
        }
        if let Err(e) = self.policy.command_done(call, outcome, &mut self.scheduler) {
            self.workflow_failed(&e);
        }
        self.workflow_verdicts();
    }

    /// A new workflow replaced the one whose calls were parked: their
    /// commands die and the verdicts they would have given are asked again.
    pub(super) fn drop_parked_calls(&mut self) {
        for (_, handle) in self.workflow_calls.drain() {
            handle.cancel();
        }
        for id in std::mem::take(&mut self.accept_pending) {
            self.unjudged.insert(id);
        }
    }

    /// Apply a verdict (or a broken `accept`); answer whoever waits.
    fn conclude(&mut self, id: &str, verdict: Result<Verdict, PolicyError>) {
        let now = Instant::now();
        let attempt = self.scheduler.task(id).expect("judged task exists").attempt();
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                // A broken `accept` rejects nothing: the task waits for the engineer.
                self.problem(ProblemKind::AcceptFailed, id, format!(
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
        // While a budget holds its scope back, a rejected task waits in the queue for a raise.
        let regrant = !self.budget_holds(id);
        let judged = self.scheduler.judge_with(id, verdict, now, regrant).expect("the task is submitted");
        // A rejected remote attempt leaves the hub's files as they were before it.
        self.uploads_judged(id, attempt, matches!(judged, Judged::Accepted));
        self.problems.retract(ProblemKind::AcceptFailed, id);
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

    /// Workers whose verdict is still pending at the end of their wait: say
    /// so, what runs, and how to learn it; they get their next task now.
    pub(super) fn verdicts_overdue(&mut self, now: Instant) {
        let overdue: Vec<TaskId> = self
            .judging
            .iter()
            .filter(|(_, j)| j.conn.is_some() && !j.old_protocol && j.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            let j = self.judging.get_mut(&id).expect("listed");
            let (conn, worker) = (j.conn.take().expect("filtered"), j.worker.clone());
            j.deadline = None;
            let attempt = self.scheduler.task(&id).map_or(0, Task::attempt);
            let running = match self.validations.get(&(id.clone(), attempt)) {
                Some(v) => format!("its validation `{}` runs ({}s so far)", v.script, v.since.elapsed().as_secs()),
                None => "the workflow's accept waits on a command".to_owned(),
            };
            let message = format!(
                "the verdict on task {id} (attempt {attempt}) is pending: {running}; run `mcc tasks show {id}` to learn it"
            );
            let reply = Reply::Ack { what: "done", message, task: id.clone() };
            self.offer(conn, &worker, Duration::ZERO, reply, now);
        }
    }

    /// Judge `id` again (after a fixed workflow loaded, or `mcc tasks retry`).
    pub(super) fn rejudge(&mut self, id: &str) {
        self.unjudged.remove(id);
        if self.scheduler.task(id).is_some_and(|t| t.state() == TaskState::Submitted) {
            let worker = self.scheduler.task(id).and_then(|t| t.holder().map(str::to_owned)).unwrap_or_default();
            self.judging.entry(id.to_owned()).or_insert(Judging::nobody(worker));
            self.start_judging(id);
        }
    }
}
