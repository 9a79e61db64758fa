//! The seam between the engine and a workflow: the decisions a workflow may
//! take over. Without a workflow the engine uses [`DefaultPolicy`].

use std::time::Instant;

use crate::command::{Job, Outcome};
use crate::scheduler::{Scheduler, Task, TaskId, Verdict, Worker};
use crate::task::Report;

/// A decision a workflow could not make (a script error): shown to the
/// engineer; the hub goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The decisions of a workflow. Every method runs on the engine's thread,
/// inside a batch, before the batch is committed, and returns at once: a
/// decision that needs a command (a workflow's `ctx.run`) is suspended and
/// resumed by [`Policy::command_done`] when the command's outcome arrives.
pub trait Policy {
    /// A name for status lines.
    fn name(&self) -> String;

    /// The workflow's phases in the order it declares them, for progress
    /// lines (`mcc run` names the current one); none without phases.
    fn phases(&self) -> Vec<String> {
        Vec::new()
    }

    /// The budgets the workflow declares: the run's and its phases'.
    fn budgets(&self) -> super::budget::Limits {
        super::budget::Limits::default()
    }

    /// Which of `ready` (FIFO order, reservations honoured) `worker` gets.
    fn assign(
        &mut self,
        worker: &Worker,
        ready: &[&Task],
        scheduler: &Scheduler,
    ) -> Result<Option<TaskId>, PolicyError>;

    /// How many ready tasks `assign` is shown at most: a policy that always
    /// takes the first asks for one, and the scheduler gathers no more.
    fn choices(&self) -> usize {
        64
    }

    /// Whether a submitted result is good enough. `validation` is the outcome
    /// of the task's validation command, when it has one. `Ok(None)`: the
    /// verdict is pending on a command (see [`Policy::take_commands`]); it
    /// comes later from [`Policy::take_verdicts`].
    fn accept(
        &mut self,
        task: &Task,
        report: &Report,
        validation: Option<&Outcome>,
        scheduler: &Scheduler,
    ) -> Result<Option<Verdict>, PolicyError>;

    /// Which racer of the race `task` wins, among `candidates` (its accepted
    /// racers, in the order they were accepted); `open` racers still run.
    /// `Ok(None)`: wait, and be asked again when another racer ends (when
    /// none is left open, the first candidate wins). By default the first
    /// candidate wins at once.
    fn choose(
        &mut self,
        _task: &Task,
        candidates: &[Candidate],
        _open: usize,
        _scheduler: &Scheduler,
    ) -> Result<Option<TaskId>, PolicyError> {
        Ok(candidates.first().map(|c| c.id.clone()))
    }

    /// Commands the workflow waits on, started since the last call: the
    /// engine runs each through the supervised runner and hands its outcome
    /// to [`Policy::command_done`] with the same call id.
    fn take_commands(&mut self) -> Vec<(u64, Job)> {
        Vec::new()
    }

    /// A command from [`Policy::take_commands`] finished: resume what waited
    /// on it. Errors are shown; the hub goes on.
    fn command_done(&mut self, _call: u64, _outcome: Outcome, _scheduler: &mut Scheduler) -> Result<(), PolicyError> {
        Ok(())
    }

    /// Drop every parked `accept` whose grant has ended (`current(task,
    /// attempt)` is false: cancelled, retried, expired): its verdict is no
    /// longer wanted. Returns their call ids, so the engine kills the
    /// commands they wait on.
    fn end_accepts(&mut self, _current: &dyn Fn(&str, u32) -> bool) -> Vec<u64> {
        Vec::new()
    }

    /// Verdicts that were pending and are now known: `(task, attempt, verdict)`.
    fn take_verdicts(&mut self) -> Vec<(TaskId, u32, Result<Verdict, PolicyError>)> {
        Vec::new()
    }

    /// Called after every batch of changes: advance phases, fire hooks, add
    /// tasks; timers are measured against `now`. Errors are shown; the hub goes on.
    fn step(&mut self, scheduler: &mut Scheduler, now: Instant) -> Result<(), PolicyError>;

    /// The workflow has finished: workers are told "all done".
    fn finished(&self, scheduler: &Scheduler) -> bool;

    /// The workflow's own state to store with the batch (`key`, JSON).
    fn state(&mut self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Right after loading: the state stored by [`Policy::state`] under
    /// `workflow_state`, and a handle to send inputs (file changes, reload)
    /// back to the engine.
    fn restore(&mut self, _state: Option<String>, _inbox: super::EngineHandle) {}

    /// When the workflow wants `step` to run again without any input (timers).
    fn next_wakeup(&self) -> Option<Instant> {
        None
    }

    /// Files under the root changed (paths relative to the root).
    fn files_changed(&mut self, _paths: Vec<String>) {}

    /// Lines the workflow logged since the last call, for status.
    fn take_log(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// An accepted racer of a race, as `choose` sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The racer's task id (`T~race2`).
    pub id: TaskId,
    /// Its number in the race, from 1.
    pub racer: u32,
    /// The worker that did it.
    pub worker: Option<String>,
    /// Its validation's outcome, when it has one (after a restart, the
    /// ends of its output the store kept).
    pub validation: Option<Outcome>,
    /// Bytes of its copy of the write files.
    pub size: u64,
    /// The worker's notes with its `done`.
    pub notes: Option<String>,
}

/// No workflow: FIFO assignment, accept when validation passes, finished
/// when every task is finished.
pub struct DefaultPolicy;

impl DefaultPolicy {
    /// The verdict a validation outcome and the report give on their own: a
    /// failed validation or a write into another in-flight task's files
    /// (a conflict) rejects; a write outside the task alone does not.
    pub fn verdict(task: &Task, report: &Report, validation: Option<&Outcome>) -> Verdict {
        let mut reasons = super::outside::conflict_reasons(&task.spec.id, report);
        if let Some(outcome) = validation.filter(|o| !o.success()) {
            reasons.push(format!(
                "validation `{}` {}",
                task.spec.acceptance.validation.as_deref().unwrap_or_default(),
                outcome.summary()
            ));
        }
        if reasons.is_empty() { Verdict::Accept } else { Verdict::Reject(reasons) }
    }
}

impl Policy for DefaultPolicy {
    fn name(&self) -> String {
        "no workflow".to_owned()
    }

    fn assign(&mut self, _: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, PolicyError> {
        Ok(ready.first().map(|t| t.spec.id.clone()))
    }

    fn choices(&self) -> usize {
        1
    }

    fn accept(
        &mut self,
        task: &Task,
        report: &Report,
        validation: Option<&Outcome>,
        _: &Scheduler,
    ) -> Result<Option<Verdict>, PolicyError> {
        Ok(Some(Self::verdict(task, report, validation)))
    }

    fn step(&mut self, _: &mut Scheduler, _: Instant) -> Result<(), PolicyError> {
        Ok(())
    }

    fn finished(&self, scheduler: &Scheduler) -> bool {
        scheduler.all_terminal()
    }
}

/// A workflow that did not load before any version of it did: the hub
/// keeps serving, but hands out and judges nothing until a good version
/// loads. Never "accept everything".
pub struct HeldPolicy {
    /// Why the workflow did not load, with `file:line`.
    pub error: String,
}

impl Policy for HeldPolicy {
    fn name(&self) -> String {
        "workflow not loaded".to_owned()
    }

    fn assign(&mut self, _: &Worker, _: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, PolicyError> {
        Ok(None)
    }

    fn accept(
        &mut self,
        _: &Task,
        _: &Report,
        _: Option<&Outcome>,
        _: &Scheduler,
    ) -> Result<Option<Verdict>, PolicyError> {
        Err(PolicyError(format!("nothing is judged until the workflow loads: {}", self.error)))
    }

    fn step(&mut self, _: &mut Scheduler, _: Instant) -> Result<(), PolicyError> {
        Ok(())
    }

    fn finished(&self, _: &Scheduler) -> bool {
        false
    }
}
