//! Firing a phase's hooks: on events of the batch (workers joining, tasks
//! blocked or failed), on time (timers, quiet workers) and on changed files.

use std::collections::HashSet;
use std::time::Instant;

use super::Workflow;
use crate::event::EventKind;
use crate::scheduler::{Scheduler, TaskState};

/// The hook an event may fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventHook {
    /// `on.worker_joined`, in the current phase.
    WorkerJoined,
    /// `on.task_blocked` of the task's phase, when the task is still blocked.
    TaskBlocked,
    /// `on.task_failed` of the task's phase, when the task failed for good.
    TaskFailed,
}

/// Which hook an event of `kind` may fire: every kind is named, so a new
/// one must be placed here to compile.
fn hook_of(kind: &EventKind) -> Option<EventHook> {
    match kind {
        EventKind::WorkerJoined => Some(EventHook::WorkerJoined),
        EventKind::Blocked => Some(EventHook::TaskBlocked),
        // An attempt given up or timed out fails the task when it was the last.
        EventKind::Failed | EventKind::FailedAttempt | EventKind::Expired | EventKind::ChatEnded => {
            Some(EventHook::TaskFailed)
        }
        EventKind::Score
        | EventKind::Created
        | EventKind::Assigned
        | EventKind::Submitted
        | EventKind::Accepted
        | EventKind::Rejected
        | EventKind::Answered
        | EventKind::Progress
        | EventKind::Released
        | EventKind::Cancelled
        | EventKind::Retried
        | EventKind::Other(_) => None,
    }
}

impl Workflow {
    /// Hooks on what happened in this batch: workers joining, tasks blocked or failed.
    pub(super) fn event_hooks(&self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        let any = |p: &super::Phase| {
            p.on.worker_joined.is_some() || p.on.task_blocked.is_some() || p.on.task_failed.is_some()
        };
        if !self.phases.iter().any(any) {
            return;
        }
        let events: Vec<(EventHook, Option<String>, Option<String>)> = scheduler
            .pending_events()
            .iter()
            .filter_map(|e| Some((hook_of(&e.kind)?, e.task.clone(), e.worker.clone())))
            .collect();
        let mut failed_seen = HashSet::new();
        for (hook, task, worker) in events {
            let result = match hook {
                EventHook::WorkerJoined => {
                    let current = self.current.min(self.phases.len() - 1);
                    let Some(f) = &self.phases[current].on.worker_joined else { continue };
                    let Some(w) = worker.as_deref().and_then(|w| scheduler.worker(w)) else { continue };
                    match self.lua.create_userdata(w.clone()) {
                        Ok(w) => self.hook(scheduler, current, "on.worker_joined", f, (w, self.ctx.clone())),
                        Err(e) => Err(e.to_string()),
                    }
                }
                EventHook::TaskBlocked | EventHook::TaskFailed => {
                    let (wanted, what) = if hook == EventHook::TaskBlocked {
                        (TaskState::Blocked, "on.task_blocked")
                    } else {
                        (TaskState::Failed, "on.task_failed")
                    };
                    let Some(t) = task.as_deref().and_then(|id| scheduler.task(id)) else { continue };
                    if t.state() != wanted || (wanted == TaskState::Failed && !failed_seen.insert(t.spec.id.clone())) {
                        continue;
                    }
                    // A task's hooks are those of its own phase.
                    let phase = self.index(t.phase());
                    let on = &self.phases[phase].on;
                    let hook = if wanted == TaskState::Blocked { &on.task_blocked } else { &on.task_failed };
                    let Some(f) = hook else { continue };
                    match super::views::task(&self.lua, t) {
                        Ok(t) => self.hook(scheduler, phase, what, f, (t, self.ctx.clone())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            if let Err(e) = result {
                errors.push(e);
            }
            self.apply_changes(scheduler, errors);
        }
    }

    /// A failed task keeps its phase from completing by default: say so.
    pub(super) fn stuck_phases(&self, scheduler: &Scheduler, errors: &mut Vec<String>) {
        for event in scheduler.pending_events() {
            if hook_of(&event.kind) != Some(EventHook::TaskFailed) {
                continue;
            }
            let Some(t) = event.task.as_deref().and_then(|id| scheduler.task(id)) else { continue };
            let Some(phase) = self.phases.iter().find(|p| Some(p.name.as_str()) == t.phase()) else {
                continue;
            };
            if t.state() == TaskState::Failed && phase.complete.is_none() {
                let id = &t.spec.id;
                errors.push(format!(
                    "{}: phase \"{}\" is stuck: task `{id}` failed ({}); retry it (`mcc tasks retry {id}`) or cancel it",
                    self.file,
                    phase.name,
                    t.reasons().join("; ")
                ));
            }
        }
    }

    /// Timers, quiet workers and changed files of the current phase, at `now` (the engine's clock).
    pub(super) fn time_hooks(&mut self, scheduler: &mut Scheduler, now: Instant, errors: &mut Vec<String>) {
        let Some(phase) = self.phases.get(self.current) else {
            self.timer_next = None;
            self.quiet_next = None;
            self.files.clear();
            return;
        };
        if let Some((every, run)) = &phase.on.timer {
            match self.timer_next {
                None => self.timer_next = Some(now + *every),
                Some(at) if at <= now => {
                    self.timer_next = Some(now + *every);
                    if let Err(e) = self.hook(scheduler, self.current, "on.timer", run, self.ctx.clone()) {
                        errors.push(e);
                    }
                    self.apply_changes(scheduler, errors);
                }
                Some(_) => {}
            }
        } else {
            self.timer_next = None;
        }
        self.quiet_next = None;
        if let Some(hook) = &phase.on.worker_quiet {
            let mut fire = Vec::new();
            for w in scheduler.workers() {
                let Some(seen) = w.last_seen() else { continue };
                let due = seen + self.quiet_after;
                if due > now {
                    self.quiet.remove(w.name());
                    self.quiet_next = Some(self.quiet_next.map_or(due, |n| n.min(due)));
                } else if self.quiet.insert(w.name().to_owned()) {
                    fire.push(w.name().to_owned());
                }
            }
            for name in fire {
                let Some(w) = scheduler.worker(&name) else { continue };
                let result = match self.lua.create_userdata(w.clone()) {
                    Ok(w) => self.hook(scheduler, self.current, "on.worker_quiet", hook, (w, self.ctx.clone())),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    errors.push(e);
                }
                self.apply_changes(scheduler, errors);
            }
        }
        let files = std::mem::take(&mut self.files);
        if let Some((glob, run)) = &phase.on.files {
            let mut paths: Vec<String> = files.into_iter().filter(|p| glob.is_match(p)).collect();
            paths.sort();
            paths.dedup();
            if !paths.is_empty() {
                let result = self.hook(scheduler, self.current, "on.files", run, (paths, self.ctx.clone()));
                if let Err(e) = result {
                    errors.push(e);
                }
                self.apply_changes(scheduler, errors);
            }
        }
    }

    /// Whether any phase reacts to changed files.
    pub(super) fn watches_files(&self) -> bool {
        self.phases.iter().any(|p| p.on.files.is_some())
    }
}
