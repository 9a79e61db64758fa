//! The engine's [`Policy`] for a workflow: which task a worker gets, the
//! verdict on a report, commands parked calls wait on, the hub's wake-ups.

use std::time::Instant;

use mlua::{IntoLuaMulti, MultiValue, Value};

use super::phases::{PhaseState, Progress};
use super::{Workflow, calls, errors, views, watch};
use crate::command::{Job, Outcome};
use crate::engine::{Candidate, DefaultPolicy, EngineHandle, Policy, PolicyError};
use crate::scheduler::{Scheduler, Task, TaskId, Verdict, Worker};
use crate::task::Report;

impl Workflow {
    /// Step, running the commands parked calls wait on right here until none
    /// is left: for `mcc check`, which has no engine to run them beside.
    pub fn step_waiting(&mut self, scheduler: &mut Scheduler, now: Instant) -> Result<(), String> {
        self.step(scheduler, now).map_err(|e| e.0)?;
        loop {
            let commands = self.take_commands();
            if commands.is_empty() {
                return Ok(());
            }
            for (call, job) in commands {
                // No engine and one call at a time: a runner of its own.
                let outcome = crate::command::Supervisor::new(1)
                    .run(job)
                    .map_err(|e| format!("{}: ctx.run: could not start `sh`: {e}", self.file))?;
                self.command_done(call, outcome, scheduler).map_err(|e| e.0)?;
            }
            self.step(scheduler, now).map_err(|e| e.0)?;
        }
    }

    /// `accept`'s returned values as a verdict.
    fn verdict_of(&self, phase: usize, out: MultiValue) -> mlua::Result<Verdict> {
        let name = &self.phases[phase].name;
        let mut out = out.into_iter();
        let (first, second) = (out.next().unwrap_or(Value::Nil), out.next().unwrap_or(Value::Nil));
        let reasons = match second {
            Value::Nil => vec![format!("rejected by accept of phase \"{name}\"")],
            Value::String(s) => vec![s.to_string_lossy()],
            Value::Table(t) => t.sequence_values::<String>().collect::<mlua::Result<Vec<_>>>()?,
            other => vec![other.to_string()?],
        };
        match first {
            Value::Boolean(true) => Ok(Verdict::Accept),
            Value::Boolean(false) => Ok(Verdict::Reject(reasons)),
            other => Err(mlua::Error::runtime(format!(
                "accept must return true, or false and a reason (a string or a list of strings), not {}",
                other.type_name()
            ))),
        }
    }
}

impl Policy for Workflow {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn phases(&self) -> Vec<String> {
        self.phase_names()
    }

    fn budgets(&self) -> crate::engine::BudgetLimits {
        self.spend_limits.clone()
    }

    fn choices(&self) -> usize {
        // Without an `assign` hook the first ready task goes: gather no more.
        if self.phases.iter().any(|p| p.assign.is_some()) { 64 } else { 1 }
    }

    fn assign(
        &mut self,
        worker: &Worker,
        ready: &[&Task],
        scheduler: &Scheduler,
    ) -> Result<Option<TaskId>, PolicyError> {
        let phase = self.index(ready.first().and_then(|t| t.phase()));
        let Some(assign) = &self.phases[phase].assign else {
            return Ok(ready.first().map(|t| t.spec.id.clone()));
        };
        self.call(scheduler, phase, "assign", |scope| {
            let list = self.lua.create_table_with_capacity(ready.len(), 0)?;
            for (i, t) in ready.iter().enumerate() {
                list.raw_set(i + 1, scope.create_userdata_ref(*t)?)?;
            }
            let chosen: Value = assign.call((scope.create_userdata_ref(worker)?, list, self.ctx.clone()))?;
            match chosen {
                Value::Nil | Value::Boolean(false) => Ok(None),
                Value::String(s) => Ok(Some(s.to_string_lossy())),
                Value::UserData(ud) => Ok(Some(ud.borrow_scoped::<Task, _>(|t| t.spec.id.clone())?)),
                Value::Table(t) => Ok(Some(t.get::<String>("id")?)),
                other => Err(mlua::Error::runtime(format!(
                    "assign must return a task from `ready`, a task id or nil, not {}",
                    other.type_name()
                ))),
            }
        })
        .map_err(PolicyError)
    }

    fn accept(
        &mut self,
        task: &Task,
        report: &Report,
        validation: Option<&Outcome>,
        scheduler: &Scheduler,
    ) -> Result<Option<Verdict>, PolicyError> {
        let phase = self.index(task.phase());
        let Some(accept) = &self.phases[phase].accept else {
            return Ok(Some(DefaultPolicy::verdict(task, report, validation)));
        };
        let what = format!("accept of phase \"{}\"", self.phases[phase].name);
        let args = views::task(&self.lua, task)
            .and_then(|t| {
                (t, views::report(&self.lua, report, validation)?, self.ctx.clone()).into_lua_multi(&self.lua)
            })
            .map_err(|e| PolicyError(errors::describe(&e, &self.file, &what)))?;
        let then = calls::Then::Accept { task: task.spec.id.clone(), attempt: task.attempt() };
        // Changes asked for in `accept` are applied by the next step.
        match self.start_call(scheduler, phase, "accept", accept, args, then).map_err(PolicyError)? {
            calls::Ran::Done(out) => {
                self.verdict_of(phase, out).map(Some).map_err(|e| PolicyError(errors::describe(&e, &self.file, &what)))
            }
            calls::Ran::Waiting => Ok(None),
        }
    }

    fn choose(
        &mut self,
        task: &Task,
        candidates: &[Candidate],
        open: usize,
        scheduler: &Scheduler,
    ) -> Result<Option<TaskId>, PolicyError> {
        let phase = self.index(task.phase());
        let Some(choose) = &self.phases[phase].choose else {
            return Ok(candidates.first().map(|c| c.id.clone()));
        };
        self.call(scheduler, phase, "choose", |scope| {
            let list = self.lua.create_table_with_capacity(candidates.len(), 2)?;
            for (i, c) in candidates.iter().enumerate() {
                list.raw_set(i + 1, views::candidate(&self.lua, c)?)?;
            }
            // Racers still running: a `choose` that compares all waits for 0.
            list.raw_set("open", open)?;
            let chosen: Value = choose.call((scope.create_userdata_ref(task)?, list, self.ctx.clone()))?;
            match chosen {
                Value::Nil | Value::Boolean(false) => Ok(None),
                Value::String(s) => Ok(Some(s.to_string_lossy())),
                Value::Table(t) => Ok(Some(t.get::<String>("id")?)),
                other => Err(mlua::Error::runtime(format!(
                    "choose must return a candidate, its id, or nil to wait, not {}",
                    other.type_name()
                ))),
            }
        })
        .map_err(PolicyError)
    }

    fn take_commands(&mut self) -> Vec<(u64, Job)> {
        std::mem::take(&mut self.calls.borrow_mut().commands)
    }

    fn command_done(&mut self, call: u64, outcome: Outcome, scheduler: &mut Scheduler) -> Result<(), PolicyError> {
        let Some(parked) = self.calls.borrow_mut().parked.remove(&call) else { return Ok(()) };
        let (then, phase) = (parked.then.clone(), parked.phase);
        let what = format!("{} of phase \"{}\"", parked.what, self.phases[phase].name);
        let result = views::outcome(&self.lua, &outcome)
            .and_then(|t| t.into_lua_multi(&self.lua))
            .map_err(|e| errors::describe(&e, &self.file, &what))
            .and_then(|args| self.drive(scheduler, call, parked, args));
        let mut errors = Vec::new();
        match (then, result) {
            (_, Ok(calls::Ran::Waiting)) | (calls::Then::Hook, Ok(calls::Ran::Done(_))) => {}
            (calls::Then::Accept { task, attempt }, Ok(calls::Ran::Done(out))) => {
                let verdict =
                    self.verdict_of(phase, out).map_err(|e| PolicyError(errors::describe(&e, &self.file, &what)));
                self.calls.borrow_mut().verdicts.push((task, attempt, verdict));
            }
            (calls::Then::Accept { task, attempt }, Err(e)) => {
                self.calls.borrow_mut().verdicts.push((task, attempt, Err(PolicyError(e))));
            }
            (calls::Then::Split { phase }, done) => {
                let added = done.and_then(|ran| {
                    let calls::Ran::Done(out) = ran else { unreachable!("matched above") };
                    self.split_tasks(scheduler, phase, out.into_iter().next().unwrap_or(Value::Nil))
                });
                match added {
                    Ok(()) => {
                        self.phase_states[phase] = PhaseState::Started;
                        self.dirty = true;
                        self.timer_next = None;
                    }
                    Err(e) => {
                        self.shared.changes.borrow_mut().clear();
                        self.phase_states[phase] = PhaseState::SplitFailed;
                        errors.push(e);
                    }
                }
                self.check_complete = true;
            }
            (calls::Then::Hook, Err(e)) => errors.push(e),
        }
        self.apply_changes(scheduler, &mut errors);
        self.check_complete = true;
        errors.retain(|e| self.shown.insert(e.clone()));
        if errors.is_empty() { Ok(()) } else { Err(PolicyError(errors.join("\n"))) }
    }

    fn end_accepts(&mut self, current: &dyn Fn(&str, u32) -> bool) -> Vec<u64> {
        self.calls.borrow_mut().end_accepts(current)
    }

    fn take_verdicts(&mut self) -> Vec<(TaskId, u32, Result<Verdict, PolicyError>)> {
        std::mem::take(&mut self.calls.borrow_mut().verdicts)
    }

    fn step(&mut self, scheduler: &mut Scheduler, now: Instant) -> Result<(), PolicyError> {
        let mut errors = Vec::new();
        if let Some(n) = self.max_attempts {
            scheduler.settings.max_attempts = n;
        }
        scheduler.set_caps(self.caps.clone());
        if let Some(grace) = self.presence_grace {
            scheduler.settings.presence_grace = grace;
        }
        if let Some(on) = self.worktree {
            scheduler.settings.worktree = on;
        }
        let queued = !self.shared.changes.borrow().is_empty();
        self.apply_changes(scheduler, &mut errors);
        let changed = queued || self.check_complete || !scheduler.pending_events().is_empty();
        self.check_complete = false;
        if !std::mem::take(&mut self.skip_events) {
            self.event_hooks(scheduler, &mut errors);
            self.stuck_phases(scheduler, &mut errors);
        }
        if changed || !self.shared.changes.borrow().is_empty() {
            self.advance(scheduler, &mut errors);
        }
        self.time_hooks(scheduler, now, &mut errors);
        if let Some(records) = self.records.take() {
            // Loaded and started: a crash from here on is not one of loading.
            if let Err(e) = records.loaded(&self.path, &self.source, &self.shared.modules.borrow()) {
                self.shared.log.borrow_mut().push(e);
            }
        }
        errors.retain(|e| self.shown.insert(e.clone()));
        if errors.is_empty() { Ok(()) } else { Err(PolicyError(errors.join("\n"))) }
    }

    fn finished(&self, scheduler: &Scheduler) -> bool {
        // The last phase may have completed in this batch, before `step` saw it.
        // Only the default check runs here: `finished` is asked often, a Lua `complete` runs in `step`.
        let last = self.current + 1 == self.phases.len()
            && self.phase_states[self.current] == PhaseState::Started
            && self.phases[self.current].complete.is_none();
        let phases_done = self.current >= self.phases.len() || (last && self.is_complete(scheduler).unwrap_or(false));
        // Work still open (a task a hook or a coordinator added) keeps workers on.
        phases_done && (scheduler.is_empty() || scheduler.all_terminal())
    }

    fn state(&mut self) -> Vec<(&'static str, String)> {
        if !std::mem::take(&mut self.dirty) {
            return Vec::new();
        }
        let progress = Progress {
            workflow: self.name.clone(),
            phase: self.phases.get(self.current).map_or_else(String::new, |p| p.name.clone()),
            started: self
                .phases
                .iter()
                .zip(&self.phase_states)
                .filter(|(_, s)| **s == PhaseState::Started)
                .map(|(p, _)| p.name.clone())
                .collect(),
        };
        vec![("workflow_state", serde_json::to_string(&progress).expect("serializes"))]
    }

    fn restore(&mut self, state: Option<String>, inbox: EngineHandle) {
        if let Some(progress) = state.and_then(|s| serde_json::from_str::<Progress>(&s).ok())
            && progress.workflow == self.name
        {
            for (phase, state) in self.phases.iter().zip(self.phase_states.iter_mut()) {
                *state = if progress.started.contains(&phase.name) { PhaseState::Started } else { PhaseState::Waiting };
            }
            self.current = if progress.phase.is_empty() {
                self.phases.len()
            } else {
                self.phases.iter().position(|p| p.name == progress.phase).unwrap_or(0)
            };
        }
        self.check_complete = true;
        self.dirty = true;
        self.skip_events = true;
        let mut sources = vec![(self.path.clone(), self.source.clone())];
        sources.extend(self.shared.modules.borrow().iter().cloned());
        match watch::WorkflowWatcher::start(&sources, &self.shared.root, self.watches_files(), inbox) {
            Ok(w) => self.watcher = Some(w),
            Err(e) => self.shared.log.borrow_mut().push(format!("{}: cannot watch the workflow file: {e}", self.file)),
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        match (self.timer_next, self.quiet_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn files_changed(&mut self, paths: Vec<String>) {
        if self.phases.get(self.current).is_some_and(|p| p.on.files.is_some()) {
            self.files.extend(paths);
        }
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut *self.shared.log.borrow_mut())
    }
}
