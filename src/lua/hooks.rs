//! Firing a phase's hooks: on events of the batch (workers joining, tasks
//! blocked or failed), on time (timers, quiet workers) and on changed files.

use std::collections::HashSet;
use std::time::Instant;

use super::Workflow;
use crate::scheduler::{Scheduler, TaskState};

impl Workflow {
    /// Hooks on what happened in this batch: workers joining, tasks blocked or failed.
    pub(super) fn event_hooks(&self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        let on = &self.phases[self.current.min(self.phases.len() - 1)].on;
        if on.worker_joined.is_none() && on.task_blocked.is_none() && on.task_failed.is_none() {
            return;
        }
        let events: Vec<(&'static str, Option<String>, Option<String>)> =
            scheduler.pending_events().iter().map(|e| (e.kind, e.task.clone(), e.worker.clone())).collect();
        let mut failed_seen = HashSet::new();
        for (kind, task, worker) in events {
            let hook = match kind {
                "worker_joined" => on.worker_joined.as_ref().map(|f| (f, "on.worker_joined")),
                "blocked" => on.task_blocked.as_ref().map(|f| (f, "on.task_blocked")),
                "failed" | "failed_attempt" | "expired" => on.task_failed.as_ref().map(|f| (f, "on.task_failed")),
                _ => None,
            };
            let Some((f, what)) = hook else { continue };
            let result = if kind == "worker_joined" {
                let Some(w) = worker.as_deref().and_then(|w| scheduler.worker(w)) else { continue };
                self.call(scheduler, self.current, what, |scope| {
                    f.call::<()>((scope.create_userdata_ref(w)?, self.ctx.clone()))
                })
            } else {
                let Some(t) = task.as_deref().and_then(|id| scheduler.task(id)) else { continue };
                let wanted = if kind == "blocked" { TaskState::Blocked } else { TaskState::Failed };
                if t.state != wanted || (wanted == TaskState::Failed && !failed_seen.insert(t.spec.id.clone())) {
                    continue;
                }
                let phase = self.index(t.phase.as_deref());
                self.call(scheduler, phase, what, |scope| {
                    f.call::<()>((scope.create_userdata_ref(t)?, self.ctx.clone()))
                })
            };
            if let Err(e) = result {
                errors.push(e);
            }
            self.apply_changes(scheduler, errors);
        }
    }

    /// Timers, quiet workers and changed files of the current phase.
    pub(super) fn time_hooks(&mut self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        let now = Instant::now();
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
                    if let Err(e) = self.call(scheduler, self.current, "on.timer", |_| run.call::<()>(self.ctx.clone()))
                    {
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
                let Some(seen) = w.last_seen else { continue };
                let due = seen + self.quiet_after;
                if due > now {
                    self.quiet.remove(&w.name);
                    self.quiet_next = Some(self.quiet_next.map_or(due, |n| n.min(due)));
                } else if self.quiet.insert(w.name.clone()) {
                    fire.push(w.name.clone());
                }
            }
            for name in fire {
                let Some(w) = scheduler.worker(&name) else { continue };
                let result = self.call(scheduler, self.current, "on.worker_quiet", |scope| {
                    hook.call::<()>((scope.create_userdata_ref(w)?, self.ctx.clone()))
                });
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
                let result =
                    self.call(scheduler, self.current, "on.files", |_| run.call::<()>((paths, self.ctx.clone())));
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
