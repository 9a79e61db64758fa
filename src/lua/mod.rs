//! Lua workflows: a plain Lua file returns a table of phases; mcc loads it
//! into a [`Workflow`], which makes the engine's decisions (see
//! `/docs/workflows.md` and `workflows/types/mcc.lua` for the API).
//!
//! One Lua state per workflow, built once and kept: every decision calls
//! into it with views of the hub state built for that call (a scope), an
//! instruction budget and a memory limit. Changes a script asks for through
//! `ctx` are queued and applied by the engine thread right after the call.

mod ctx;
mod definition;
mod errors;
mod hooks;
mod limits;
pub mod recipes;
mod spec;
mod views;
mod watch;

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{Lua, LuaOptions, MultiValue, Scope, StdLib, Table, Value};
use serde::{Deserialize, Serialize};

use definition::Phase;

use crate::command::Outcome;
use crate::engine::{DefaultPolicy, EngineHandle, Policy, PolicyError};
use crate::scheduler::{Scheduler, Task, TaskId, TaskState, Verdict, Worker};
use crate::task::{Report, TaskSpec};

/// Registry key of the scheduler view of the call in progress.
pub(crate) const SESSION: &str = "mcc.scheduler";

/// A change to the work asked for from Lua, applied after the call.
pub(crate) enum Change {
    /// New tasks and the phase they belong to.
    Add(Vec<TaskSpec>, String),
    Cancel(TaskId),
    Retry(TaskId),
}

/// What the Rust functions given to Lua share with the workflow.
pub(crate) struct Shared {
    root: PathBuf,
    /// The workflow file's folder (first place `require` looks).
    dir: PathBuf,
    name: RefCell<String>,
    lease: RefCell<Option<String>>,
    /// The current phase: where `ctx.add_task` puts its tasks.
    phase: RefCell<String>,
    changes: RefCell<Vec<Change>>,
    log: RefCell<Vec<String>>,
    /// Modules `require` read from disk, with their text: edits reload the workflow.
    modules: RefCell<Vec<(PathBuf, String)>>,
}

/// Progress stored in the `meta` table under `workflow_state`.
#[derive(Serialize, Deserialize)]
struct Progress {
    workflow: String,
    phase: String,
    started: Vec<String>,
}

/// A loaded workflow: the engine's [`Policy`].
pub struct Workflow {
    lua: Lua,
    shared: Rc<Shared>,
    budget: limits::Budget,
    ctx: Table,
    path: PathBuf,
    /// The file as errors name it (relative to the root).
    file: String,
    source: String,
    name: String,
    phases: Vec<Phase>,
    max_attempts: Option<u32>,
    quiet_after: Duration,
    current: usize,
    started: Vec<bool>,
    /// A phase whose split failed does not start until the file is fixed.
    split_failed: Vec<bool>,
    dirty: bool,
    check_complete: bool,
    /// Errors already shown, so a broken hook does not flood the status.
    shown: HashSet<String>,
    timer_next: Option<Instant>,
    quiet: HashSet<String>,
    quiet_next: Option<Instant>,
    files: Vec<String>,
    watcher: Option<watch::WorkflowWatcher>,
    /// Events of the batch that loaded the workflow happened before it: skip them once.
    skip_events: bool,
}

/// Load a workflow file: the engine's [`crate::engine::Loader`].
pub fn load(path: &Path, root: &Path) -> Result<Box<dyn Policy>, String> {
    Workflow::load(path, root).map(|w| Box::new(w) as Box<dyn Policy>)
}

const PRELUDE: &str = r"
local M = {}
function M.workflow(t) return t end
function M.phase(name)
  return function(t) t.name = name; return t end
end
function M.task(t) __mcc_check_task(t); return t end
workflow, phase, task = M.workflow, M.phase, M.task
__mcc = M

-- The sandbox: what is not loaded says so, with the caller's file:line.
local function absent(lib, instead, known)
  return setmetatable(known or {}, {
    __index = function(_, key)
      error(lib .. '.' .. tostring(key) .. ' is not available to a workflow: ' .. instead, 2)
    end,
  })
end
os = absent('os', 'use ctx.run for commands and ctx.now for the time', {
  exit = function() error('os.exit would stop the hub: return from the function instead', 2) end,
})
io = absent('io', 'use ctx.read and ctx.write (files inside the project)')
debug = absent('debug', 'it can reach past the sandbox')
package = absent('package', 'use require (the workflow folder, your recipes, the built-ins)')
dofile = function() error('dofile is not available to a workflow: use require', 2) end
loadfile = function() error('loadfile is not available to a workflow: use require, or load on text', 2) end
local text_load = load
load = function(chunk, name, mode, env)
  if type(chunk) == 'string' and chunk:byte(1) == 27 then
    error('load: binary chunks (bytecode) are refused: pass Lua source text', 2)
  end
  return text_load(chunk, name, 't', env)
end
";

impl Workflow {
    /// Read, run and check a workflow file.
    pub fn load(path: &Path, root: &Path) -> Result<Self, String> {
        let file = recipes::shown(root, path);
        let source = std::fs::read_to_string(path).map_err(|e| {
            format!("{file}: cannot read the workflow: {e}; check the path (relative to the project root)")
        })?;
        let shared = Rc::new(Shared {
            root: root.to_owned(),
            dir: path.parent().map_or_else(|| root.to_owned(), Path::to_owned),
            name: RefCell::new(String::new()),
            lease: RefCell::new(None),
            phase: RefCell::new(String::new()),
            changes: RefCell::new(Vec::new()),
            log: RefCell::new(Vec::new()),
            modules: RefCell::new(Vec::new()),
        });
        // Only what a workflow needs: no os, io, debug or package (see docs/security.md).
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(|e| format!("{file}: cannot set up Lua: {e}"))?;
        let budget = limits::Budget::default();
        let setup = |lua: &Lua| -> mlua::Result<Table> {
            limits::install(lua, &budget)?;
            recipes::install(lua, &shared)?;
            let check = lua.create_function(|lua, t: Value| {
                spec::to_spec(lua, t, None).map(|_| ()).map_err(|e| mlua::Error::runtime(format!("task {{...}}: {e}")))
            })?;
            lua.globals().set("__mcc_check_task", check)?;
            lua.load(PRELUDE).set_name("@mcc").exec()?;
            ctx::install(lua, &shared)
        };
        let ctx = setup(&lua).map_err(|e| format!("{file}: cannot set up Lua: {e}"))?;
        budget.reset();
        let returned: Value = lua
            .load(source.as_str())
            .set_name(format!("@{file}"))
            .eval()
            .map_err(|e| errors::describe(&e, &file, "the workflow file"))?;
        let mut workflow = Workflow {
            lua,
            shared,
            budget,
            ctx,
            path: path.to_owned(),
            file,
            source,
            name: String::new(),
            phases: Vec::new(),
            max_attempts: None,
            quiet_after: Duration::from_mins(10),
            current: 0,
            started: Vec::new(),
            split_failed: Vec::new(),
            dirty: true,
            check_complete: true,
            shown: HashSet::new(),
            timer_next: None,
            quiet: HashSet::new(),
            quiet_next: None,
            files: Vec::new(),
            watcher: None,
            skip_events: false,
        };
        workflow.read_table(returned)?;
        Ok(workflow)
    }

    /// The name of the workflow.
    pub fn workflow_name(&self) -> &str {
        &self.name
    }

    /// Phase names in order.
    pub fn phase_names(&self) -> Vec<String> {
        self.phases.iter().map(|p| p.name.clone()).collect()
    }

    fn index(&self, phase: Option<&str>) -> usize {
        phase
            .and_then(|p| self.phases.iter().position(|x| x.name == p))
            .unwrap_or(self.current.min(self.phases.len() - 1))
    }

    /// Call into Lua with the scheduler visible to `ctx`, the budget reset,
    /// and errors described as `file:line: in WHAT: message`.
    fn call<'env, R>(
        &self,
        scheduler: &'env Scheduler,
        phase: usize,
        what: &str,
        f: impl for<'s> FnOnce(&'s Scope<'s, 'env>) -> mlua::Result<R>,
    ) -> Result<R, String> {
        self.budget.reset();
        let name = &self.phases[phase].name;
        if *self.shared.phase.borrow() != *name {
            name.clone_into(&mut self.shared.phase.borrow_mut());
            self.ctx.set("phase", name.as_str()).map_err(|e| e.to_string())?;
        }
        let result = self.lua.scope(|scope| {
            let session = scope.create_any_userdata_ref(scheduler)?;
            self.lua.set_named_registry_value(SESSION, session)?;
            f(scope)
        });
        let _ = self.lua.unset_named_registry_value(SESSION);
        result.map_err(|e| errors::describe(&e, &self.file, &format!("{what} of phase \"{name}\"")))
    }

    /// Apply what scripts queued through `ctx`; problems go to `errors`.
    fn apply_changes(&self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        let changes = std::mem::take(&mut *self.shared.changes.borrow_mut());
        for change in changes {
            let result = match change {
                Change::Add(specs, phase) => {
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

    /// Start the current phase: its tasks, or what `split` returns.
    fn start_phase(&self, scheduler: &mut Scheduler) -> Result<(), String> {
        let phase = &self.phases[self.current];
        let specs = match (&phase.tasks, &phase.split) {
            (Some(tasks), _) => tasks.clone(),
            (None, Some(split)) => {
                let place = self.place_of(split);
                let lease = self.shared.lease.borrow().clone();
                let returned = self.call(scheduler, self.current, "split", |scope| {
                    let previous = self.previous(scheduler, scope)?;
                    let value: Value = split.call((self.ctx.clone(), previous))?;
                    Ok(spec::to_specs(&self.lua, value, lease.as_deref()))
                });
                let specs = returned.and_then(|r| {
                    r.map_err(|e| {
                        format!("{place}: in split of phase \"{}\": split must return a list of tasks: {e}", phase.name)
                    })
                });
                match specs {
                    Ok(specs) => specs,
                    Err(e) => {
                        self.shared.changes.borrow_mut().clear();
                        return Err(e);
                    }
                }
            }
            (None, None) => Vec::new(),
        };
        scheduler.add_tasks(specs, Some(&phase.name), Instant::now()).map_err(|e| {
            let place =
                phase.split.as_ref().map_or_else(|| self.place(&format!("\"{}\"", phase.name)), |f| self.place_of(f));
            format!("{place}: in split of phase \"{}\": {e}", phase.name)
        })?;
        Ok(())
    }

    /// `previous` for `split`: earlier phases by name, `tasks`, `last`.
    fn previous<'s, 'env>(&self, scheduler: &'env Scheduler, scope: &'s Scope<'s, 'env>) -> mlua::Result<Table> {
        let previous = self.lua.create_table()?;
        let all = scheduler.tasks_in_order();
        let accepted = self.lua.create_table()?;
        let mut n = 0;
        for (i, phase) in self.phases[..self.current].iter().enumerate() {
            let tasks: Vec<&Task> = all.iter().copied().filter(|t| t.phase.as_deref() == Some(&phase.name)).collect();
            for t in tasks.iter().filter(|t| t.state == TaskState::Accepted) {
                n += 1;
                accepted.raw_set(n, scope.create_userdata_ref(*t)?)?;
            }
            let view =
                views::phase(&self.lua, &phase.name, &tasks, |t| scope.create_userdata_ref(t).map(Value::UserData))?;
            if i + 1 == self.current {
                previous.set("last", &view)?;
            }
            previous.set(phase.name.as_str(), view)?;
        }
        previous.set("tasks", accepted)?;
        Ok(previous)
    }

    fn is_complete(&self, scheduler: &Scheduler) -> Result<bool, String> {
        let phase = &self.phases[self.current];
        let ours = |t: &&Task| t.phase.as_deref() == Some(phase.name.as_str());
        let Some(complete) = &phase.complete else {
            // Stops at the first open task: cheap while a phase runs.
            return Ok(scheduler
                .tasks()
                .filter(ours)
                .all(|t| matches!(t.state, TaskState::Accepted | TaskState::Cancelled)));
        };
        let mut tasks: Vec<&Task> = scheduler.tasks().filter(ours).collect();
        tasks.sort_by_key(|t| t.seq);
        self.call(scheduler, self.current, "complete", |scope| {
            let view =
                views::phase(&self.lua, &phase.name, &tasks, |t| scope.create_userdata_ref(t).map(Value::UserData))?;
            let done: Value = complete.call((view, self.ctx.clone()))?;
            Ok(!matches!(done, Value::Nil | Value::Boolean(false)))
        })
    }

    /// Start phases and move past complete ones.
    fn advance(&mut self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        while self.current < self.phases.len() {
            if !self.started[self.current] {
                if self.split_failed[self.current] {
                    return;
                }
                let name = self.phases[self.current].name.clone();
                let has_tasks = scheduler.tasks().any(|t| t.phase.as_deref() == Some(name.as_str()));
                if !has_tasks {
                    if let Err(e) = self.start_phase(scheduler) {
                        self.split_failed[self.current] = true;
                        errors.push(e);
                        return;
                    }
                    self.apply_changes(scheduler, errors);
                }
                self.started[self.current] = true;
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

impl Policy for Workflow {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn assign(
        &mut self,
        worker: &Worker,
        ready: &[&Task],
        scheduler: &Scheduler,
    ) -> Result<Option<TaskId>, PolicyError> {
        let phase = self.index(ready.first().and_then(|t| t.phase.as_deref()));
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
    ) -> Result<Verdict, PolicyError> {
        let phase = self.index(task.phase.as_deref());
        let Some(accept) = &self.phases[phase].accept else {
            return Ok(DefaultPolicy::verdict(task, validation));
        };
        let name = &self.phases[phase].name;
        let verdict = self.call(scheduler, phase, "accept", |scope| {
            let report = views::report(&self.lua, report, validation)?;
            let out: MultiValue = accept.call((scope.create_userdata_ref(task)?, report, self.ctx.clone()))?;
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
        });
        // Changes asked for in `accept` are applied by the next step.
        verdict.map_err(PolicyError)
    }

    fn step(&mut self, scheduler: &mut Scheduler) -> Result<(), PolicyError> {
        let mut errors = Vec::new();
        if let Some(n) = self.max_attempts {
            scheduler.settings.max_attempts = n;
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
        self.time_hooks(scheduler, &mut errors);
        errors.retain(|e| self.shown.insert(e.clone()));
        if errors.is_empty() { Ok(()) } else { Err(PolicyError(errors.join("\n"))) }
    }

    fn finished(&self, scheduler: &Scheduler) -> bool {
        // The last phase may have completed in this batch, before `step` saw it.
        // Only the default check runs here: `finished` is asked often, a Lua `complete` runs in `step`.
        let last = self.current + 1 == self.phases.len()
            && self.started[self.current]
            && self.phases[self.current].complete.is_none();
        let phases_done = self.current >= self.phases.len() || (last && self.is_complete(scheduler).unwrap_or(false));
        // Work still open (a task a hook or a coordinator added) keeps workers on.
        phases_done && !scheduler.tasks().any(|t| !t.state.is_terminal())
    }

    fn state(&mut self) -> Vec<(&'static str, String)> {
        if !std::mem::take(&mut self.dirty) {
            return Vec::new();
        }
        let progress = Progress {
            workflow: self.name.clone(),
            phase: self.phases.get(self.current).map_or_else(String::new, |p| p.name.clone()),
            started: self.phases.iter().zip(&self.started).filter(|(_, s)| **s).map(|(p, _)| p.name.clone()).collect(),
        };
        vec![("workflow_state", serde_json::to_string(&progress).expect("serializes"))]
    }

    fn restore(&mut self, state: Option<String>, inbox: EngineHandle) {
        if let Some(progress) = state.and_then(|s| serde_json::from_str::<Progress>(&s).ok())
            && progress.workflow == self.name
        {
            for (phase, started) in self.phases.iter().zip(self.started.iter_mut()) {
                *started = progress.started.contains(&phase.name);
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

#[cfg(test)]
mod tests;
