//! A workflow's phases: where each stands ([`PhaseState`]), starting one
//! (its tasks, or what `split` returns), applying what scripts queued, and
//! moving past a phase once it is complete.

use std::time::Instant;

use mlua::{IntoLuaMulti, Table, Value};
use serde::{Deserialize, Serialize};

use super::definition::assigns;
use super::{Change, Workflow, calls, errors, runtime, spec, views};
use crate::scheduler::{Refusal, Scheduler, TaskState};

/// Where one phase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhaseState {
    /// Not reached yet, or reached and not yet started.
    Waiting,
    /// Its `split` waits on a command (`ctx.run`); the phase starts when it ends.
    Splitting,
    /// Its `split` failed: it does not start until the file is fixed (a reload).
    SplitFailed,
    /// Its tasks are in (it may be complete too: see [`Workflow::advance`]).
    Started,
}

/// Progress stored in the `meta` table under `workflow_state`.
#[derive(Serialize, Deserialize)]
pub(super) struct Progress {
    pub workflow: String,
    pub phase: String,
    pub started: Vec<String>,
}

impl Workflow {
    /// `split`'s returned value as tasks of the phase at `phase`, added. An
    /// error names the line that made the task that is wrong (see [`Self::task_place`]).
    pub(super) fn split_tasks(&self, scheduler: &mut Scheduler, phase: usize, value: Value) -> Result<(), String> {
        let p = &self.phases[phase];
        let split = p.split.as_ref().expect("a split phase");
        let place = self.place_of(split);
        let lease = self.shared.lease.borrow().clone();
        let list = value.clone();
        let specs = spec::checked_list(&self.lua, value, lease.as_deref()).map_err(|problems| {
            self.shared.changes.borrow_mut().clear();
            // One line per place, its problems joined as before.
            let mut lines: Vec<(String, Vec<String>)> = Vec::new();
            for problem in problems {
                let at = problem
                    .item
                    .and_then(|i| self.task_place(&list, i, problem.field.as_deref(), split))
                    .unwrap_or_else(|| place.clone());
                match lines.last_mut() {
                    Some((place_before, texts)) if *place_before == at => texts.push(problem.text),
                    _ => lines.push((at, vec![problem.text])),
                }
            }
            lines
                .into_iter()
                .map(|(at, texts)| {
                    format!(
                        "{at}: in split of phase \"{}\": split must return a list of tasks: {}",
                        p.name,
                        texts.join("; ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        crate::engine::room_for(scheduler, specs.len())
            .map_err(|e| format!("{place}: in split of phase \"{}\": {e}", p.name))?;
        scheduler.add_tasks(specs, Some(&p.name), Instant::now()).map_err(|e| {
            let at = match &e {
                Refusal::DuplicateTask(id) | Refusal::UnknownDependency { task: id, .. } => {
                    position_of(&list, id).and_then(|i| self.task_place(&list, i, None, split))
                }
                _ => None,
            };
            format!("{}: in split of phase \"{}\": {e}", at.as_deref().unwrap_or(&place), p.name)
        })?;
        Ok(())
    }

    /// Where task `index` (from 0) of `split`'s returned `list` was made: the
    /// line of its `task {...}` call; else the line inside `split` assigning
    /// `field`, the field that is wrong; else `None` (then `split`'s own line).
    fn task_place(&self, list: &Value, index: usize, field: Option<&str>, split: &mlua::Function) -> Option<String> {
        let Value::Table(list) = list else { return None };
        if let Ok(Value::Table(item)) = list.raw_get::<Value>(index + 1)
            && let Some(place) = runtime::place_made(&self.lua, &item)
        {
            return Some(place);
        }
        let field = field?;
        let info = split.info();
        if info.short_src.as_deref() != Some(self.file.as_str()) {
            return None;
        }
        let (from, to) = (info.line_defined?, info.last_line_defined?);
        let found =
            self.source.lines().enumerate().take(to).skip(from.saturating_sub(1)).find(|(_, l)| assigns(l, field));
        found.map(|(i, _)| format!("{}:{}", self.file, i + 1))
    }

    /// Apply what scripts queued through `ctx`; problems go to `errors`.
    pub(super) fn apply_changes(&self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        let changes = self.shared.changes.borrow_mut().take();
        for change in changes {
            let result = match change {
                Change::Add(specs, phase) => {
                    if let Err(e) = crate::engine::room_for(scheduler, specs.len()) {
                        errors.push(format!("{}: ctx.add_task: {e}", self.file));
                        continue;
                    }
                    let phase = if phase.is_empty() { None } else { Some(phase) };
                    scheduler.add_tasks(specs, phase.as_deref(), Instant::now()).map(|_| ())
                }
                Change::Cancel(id) => scheduler.cancel(&id),
                Change::Retry(id) => scheduler.retry(&id),
            };
            if let Err(e) = result {
                errors.push(format!("{}: {e}", self.file));
            }
        }
    }

    /// Start the current phase: its tasks, or what `split` returns. False
    /// when `split` waits on a command: the phase starts when it finishes.
    fn start_phase(&self, scheduler: &mut Scheduler) -> Result<bool, String> {
        let phase = &self.phases[self.current];
        let specs = match (&phase.tasks, &phase.split) {
            (Some(tasks), _) => tasks.clone(),
            (None, Some(split)) => {
                let args = self
                    .previous(scheduler)
                    .and_then(|previous| (self.ctx.clone(), previous).into_lua_multi(&self.lua))
                    .map_err(|e| errors::describe(&e, &self.file, &format!("split of phase \"{}\"", phase.name)))?;
                let then = calls::Then::Split { phase: self.current };
                return match self.start_call(scheduler, self.current, "split", split, args, then) {
                    Ok(calls::Ran::Done(out)) => {
                        self.split_tasks(scheduler, self.current, out.into_iter().next().unwrap_or(Value::Nil))?;
                        Ok(true)
                    }
                    Ok(calls::Ran::Waiting) => Ok(false),
                    Err(e) => {
                        self.shared.changes.borrow_mut().clear();
                        Err(e)
                    }
                };
            }
            (None, None) => Vec::new(),
        };
        scheduler.add_tasks(specs, Some(&phase.name), Instant::now()).map_err(|e| {
            let place = self.place(&format!("\"{}\"", phase.name));
            format!("{place}: in split of phase \"{}\": {e}", phase.name)
        })?;
        Ok(true)
    }

    /// `previous` for `split`: earlier phases by name, `tasks`, `last`.
    /// Counts are read now; a task list is built the first time it is read
    /// (one walk of that phase's index, owned copies kept after), so a split
    /// that reads only counts costs nothing per task: 100,000 tasks in an
    /// earlier phase were ~425 MiB of copies. A split that parks in
    /// `ctx.run` and reads a list after sees the tasks as they are then;
    /// earlier phases are over, so only an engineer's retry changes them.
    fn previous(&self, scheduler: &Scheduler) -> mlua::Result<Table> {
        let previous = self.lua.create_table()?;
        let earlier: Vec<String> = self.phases[..self.current].iter().map(|p| p.name.clone()).collect();
        for (i, name) in earlier.iter().enumerate() {
            let view = views::phase(&self.lua, scheduler, name)?;
            let phase = name.clone();
            self.list_when_read(&view, move |sched| sched.select(Some(&phase), None).into_iter().collect())?;
            if i + 1 == self.current {
                previous.set("last", &view)?;
            }
            previous.set(name.as_str(), view)?;
        }
        // Accepted tasks of every earlier phase, phase by phase.
        self.list_when_read(&previous, move |sched| {
            earlier.iter().flat_map(|phase| sched.select(Some(phase), Some(TaskState::Accepted))).collect()
        })?;
        Ok(previous)
    }

    /// Give `table` a `tasks` field made when first read: owned views of
    /// the tasks `pick` chooses from the scheduler as it is then.
    fn list_when_read(
        &self,
        table: &Table,
        pick: impl for<'s> Fn(&'s Scheduler) -> Vec<&'s crate::scheduler::Task> + 'static,
    ) -> mlua::Result<()> {
        let index = self.lua.create_function(move |lua, (table, key): (Table, Value)| {
            if key.as_string().is_none_or(|k| k != "tasks") {
                return Ok(Value::Nil);
            }
            let list = views::with_scheduler(lua, |sched| {
                let tasks = pick(sched);
                let list = lua.create_table_with_capacity(tasks.len(), 0)?;
                for (i, t) in tasks.into_iter().enumerate() {
                    list.raw_set(i + 1, views::task(lua, t)?)?;
                }
                Ok(list)
            })?;
            table.raw_set("tasks", &list)?;
            Ok(Value::Table(list))
        })?;
        let meta = self.lua.create_table()?;
        meta.set("__index", index)?;
        table.set_metatable(Some(meta))
    }

    /// Whether the current phase is complete: by its `complete`, or when
    /// every task of it is accepted or cancelled (counted by the scheduler's
    /// phase index: asked on every batch, it must not walk the tasks).
    pub(super) fn is_complete(&self, scheduler: &Scheduler) -> Result<bool, String> {
        let phase = &self.phases[self.current];
        let Some(complete) = &phase.complete else {
            let count = |state| scheduler.phase_count(&phase.name, state);
            let open = TaskState::ALL
                .into_iter()
                .filter(|s| !matches!(s, TaskState::Accepted | TaskState::Cancelled))
                .map(count)
                .sum::<usize>();
            return Ok(open == 0);
        };
        let name = phase.name.as_str();
        self.call(scheduler, self.current, "complete", |scope| {
            let view = views::phase(&self.lua, scheduler, name)?;
            // `complete` is asked on every batch and most read only the
            // counts: `phase.tasks` (views of the tasks themselves, no
            // copies) is made when first read.
            let tasks = scope.create_function(move |lua, (view, key): (Table, Value)| {
                if key.as_string().is_none_or(|k| k != "tasks") {
                    return Ok(Value::Nil);
                }
                let tasks = scheduler.select(Some(name), None);
                let list = lua.create_table_with_capacity(tasks.len(), 0)?;
                for (i, t) in tasks.into_iter().enumerate() {
                    list.raw_set(i + 1, scope.create_userdata_ref(t)?)?;
                }
                view.raw_set("tasks", &list)?;
                Ok(Value::Table(list))
            })?;
            let lazy = self.lua.create_table()?;
            lazy.set("__index", tasks)?;
            view.set_metatable(Some(lazy))?;
            let done: Value = complete.call((view, self.ctx.clone()))?;
            Ok(!matches!(done, Value::Nil | Value::Boolean(false)))
        })
    }

    /// Start phases and move past complete ones.
    pub(super) fn advance(&mut self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        while self.current < self.phases.len() {
            let state = self.phase_states[self.current];
            if state == PhaseState::SplitFailed {
                return;
            }
            if state != PhaseState::Started {
                let name = self.phases[self.current].name.clone();
                // Tasks already in (a restart, a coordinator) start the phase as they are.
                let has_tasks = !scheduler.select(Some(&name), None).is_empty();
                if !has_tasks {
                    if state == PhaseState::Splitting {
                        return;
                    }
                    match self.start_phase(scheduler) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.phase_states[self.current] = PhaseState::Splitting;
                            return;
                        }
                        Err(e) => {
                            self.phase_states[self.current] = PhaseState::SplitFailed;
                            errors.push(e);
                            return;
                        }
                    }
                    self.apply_changes(scheduler, errors);
                }
                self.phase_states[self.current] = PhaseState::Started;
                self.dirty = true;
                self.timer_next = None;
            }
            match self.is_complete(scheduler) {
                Ok(true) => {
                    self.current += 1;
                    self.dirty = true;
                }
                Ok(false) => return,
                Err(e) => {
                    errors.push(e);
                    return;
                }
            }
        }
    }
}

/// The place (from 0) of the last task with id `id` in a list of task
/// tables: the one a refusal of a repeated id is about.
fn position_of(list: &Value, id: &str) -> Option<usize> {
    let Value::Table(list) = list else { return None };
    let ids: Vec<Option<String>> = list
        .sequence_values::<Value>()
        .map(|item| match item {
            Ok(Value::Table(t)) => t.raw_get::<Option<String>>("id").ok().flatten(),
            _ => None,
        })
        .collect();
    ids.iter().rposition(|x| x.as_deref() == Some(id))
}
