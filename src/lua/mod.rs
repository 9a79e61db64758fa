//! Lua workflows: a plain Lua file returns a table of phases; mcc loads it
//! into a [`Workflow`], which makes the engine's decisions (see
//! `/docs/workflows.md` and `workflows/types/mcc.lua` for the API).
//!
//! One Lua state per workflow, built once and kept: every decision calls
//! into it with views of the hub state built for that call (a scope), an
//! instruction budget and a memory limit. Changes a script asks for through
//! `ctx` are queued and applied by the engine thread right after the call.
//! A call that runs a command (`ctx.run`) is parked until the command
//! finishes, so the engine never waits for one (see [`calls`]).

mod calls;
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

use mlua::{Function, IntoLuaMulti, Lua, LuaOptions, MultiValue, Scope, StdLib, Table, Value};
use serde::{Deserialize, Serialize};

use definition::Phase;

use crate::command::{Job, Outcome};
use crate::engine::{DefaultPolicy, EngineHandle, Policy, PolicyError};
use crate::scheduler::{Scheduler, Task, TaskId, TaskState, Verdict, Worker};
use crate::task::{Report, TaskSpec};

/// Registry key of the scheduler view of the call in progress.
pub(crate) const SESSION: &str = "mcc.scheduler";
/// Registry key of the coroutine mcc is running (the only one `ctx.run` may park).
const CURRENT: &str = "mcc.call";

/// `ctx.run`: check the arguments in Rust, then park the call (see [`calls`]).
const RUN: &str = r#"
local ctx, request, current = ...
local RUN = {}
ctx.run = function(cmd, opts)
  local c, limit, cwd = request(cmd, opts)
  local me, main = coroutine.running()
  if main or me ~= current() then
    error('ctx.run("' .. tostring(cmd) .. '") cannot run here: assign and complete must answer at once, ' ..
      'and so must a coroutine of your own; run commands in split, accept or an on.* hook', 2)
  end
  return coroutine.yield(RUN, c, limit, cwd)
end
return RUN
"#;

/// A change to the work asked for from Lua, applied after the call.
pub(crate) enum Change {
    /// New tasks and the phase they belong to.
    Add(Vec<TaskSpec>, String),
    Cancel(TaskId),
    Retry(TaskId),
}

/// Changes asked for from Lua, in order, with the ids of the tasks they
/// add: checking a new task against them is a look-up, not a walk, however
/// many tasks a call adds.
#[derive(Default)]
pub(crate) struct Queued {
    list: Vec<Change>,
    adding: HashSet<TaskId>,
}

impl Queued {
    pub fn push(&mut self, change: Change) {
        if let Change::Add(specs, _) = &change {
            self.adding.extend(specs.iter().map(|t| t.id.clone()));
        }
        self.list.push(change);
    }

    /// Whether a queued change adds task `id`.
    pub fn adds(&self, id: &str) -> bool {
        self.adding.contains(id)
    }

    pub fn take(&mut self) -> Vec<Change> {
        self.adding.clear();
        std::mem::take(&mut self.list)
    }

    pub fn clear(&mut self) {
        self.take();
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
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
    changes: RefCell<Queued>,
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
    /// A phase whose split waits on a command.
    splitting: Vec<bool>,
    /// Calls parked in `ctx.run`, commands to start, verdicts now known.
    calls: RefCell<calls::Calls>,
    /// What `ctx.run` yields first, to tell its yields from any other.
    run_marker: Table,
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
            changes: RefCell::default(),
            log: RefCell::new(Vec::new()),
            modules: RefCell::new(Vec::new()),
        });
        // Only what a workflow needs: no os, io, debug or package (see docs/security.md).
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(|e| format!("{file}: cannot set up Lua: {e}"))?;
        let budget = limits::Budget::default();
        let setup = |lua: &Lua| -> mlua::Result<(Table, Table)> {
            limits::install(lua, &budget)?;
            recipes::install(lua, &shared)?;
            let check = lua.create_function(|lua, t: Value| {
                spec::to_spec(lua, t, None).map(|_| ()).map_err(|e| mlua::Error::runtime(format!("task {{...}}: {e}")))
            })?;
            lua.globals().set("__mcc_check_task", check)?;
            lua.load(PRELUDE).set_name("@mcc").exec()?;
            let ctx = ctx::install(lua, &shared)?;
            let current = lua.create_function(|lua, ()| lua.named_registry_value::<Value>(CURRENT))?;
            let marker: Table =
                lua.load(RUN).set_name("@mcc").call((ctx.clone(), ctx::run_request(lua, &shared)?, current))?;
            Ok((ctx, marker))
        };
        let (ctx, run_marker) = setup(&lua).map_err(|e| format!("{file}: cannot set up Lua: {e}"))?;
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
            splitting: Vec::new(),
            calls: RefCell::default(),
            run_marker,
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

    /// Step, running the commands parked calls wait on right here until none
    /// is left: for `mcc check`, which has no engine to run them beside.
    pub fn step_waiting(&mut self, scheduler: &mut Scheduler) -> Result<(), String> {
        self.step(scheduler).map_err(|e| e.0)?;
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
            self.step(scheduler).map_err(|e| e.0)?;
        }
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
        self.enter_phase(phase)?;
        let result = self.lua.scope(|scope| {
            let session = scope.create_any_userdata_ref(scheduler)?;
            self.lua.set_named_registry_value(SESSION, session)?;
            f(scope)
        });
        let _ = self.lua.unset_named_registry_value(SESSION);
        result.map_err(|e| errors::describe(&e, &self.file, &format!("{what} of phase \"{name}\"")))
    }

    /// Make `ctx.phase` (and where `ctx.add_task` puts tasks) the phase at `phase`.
    fn enter_phase(&self, phase: usize) -> Result<(), String> {
        let name = &self.phases[phase].name;
        if *self.shared.phase.borrow() != *name {
            name.clone_into(&mut self.shared.phase.borrow_mut());
            self.ctx.set("phase", name.as_str()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Start `f` as a call that may park in `ctx.run`; see [`calls`].
    fn start_call(
        &self,
        scheduler: &Scheduler,
        phase: usize,
        what: &str,
        f: &Function,
        args: MultiValue,
        then: calls::Then,
    ) -> Result<calls::Ran, String> {
        let thread = self.lua.create_thread(f.clone()).map_err(|e| e.to_string())?;
        let parked =
            calls::Parked { thread, then, phase, what: what.to_owned(), command: String::new(), since: Instant::now() };
        self.drive(scheduler, calls::next_id(), parked, args)
    }

    /// Resume a call until it finishes or parks again in `ctx.run`.
    fn drive(
        &self,
        scheduler: &Scheduler,
        id: u64,
        mut parked: calls::Parked,
        args: MultiValue,
    ) -> Result<calls::Ran, String> {
        self.budget.reset();
        let what = format!("{} of phase \"{}\"", parked.what, self.phases[parked.phase].name);
        self.enter_phase(parked.phase)?;
        let thread = parked.thread.clone();
        let result = self.lua.scope(|scope| {
            let session = scope.create_any_userdata_ref(scheduler)?;
            self.lua.set_named_registry_value(SESSION, session)?;
            self.lua.set_named_registry_value(CURRENT, &thread)?;
            thread.resume::<MultiValue>(args)
        });
        let _ = self.lua.unset_named_registry_value(SESSION);
        let _ = self.lua.unset_named_registry_value(CURRENT);
        let values = result.map_err(|e| errors::describe(&e, &self.file, &what))?;
        if !calls::yielded(&thread) {
            return Ok(calls::Ran::Done(values));
        }
        let mut values = values.into_iter();
        let marked = matches!(values.next(), Some(Value::Table(t)) if t.to_pointer() == self.run_marker.to_pointer());
        if !marked {
            return Err(format!(
                "{}: in {what}: coroutine.yield outside a coroutine of your own; only ctx.run may pause a workflow function",
                self.file
            ));
        }
        let (command, job) = calls::job_of(values.collect()).map_err(|e| format!("{}: in {what}: {e}", self.file))?;
        // Status and `mcc run` show what the workflow waits on.
        self.shared.log.borrow_mut().push(format!("{}: {what} waits on `{command}`", self.name));
        parked.command = command;
        parked.since = Instant::now();
        let mut calls = self.calls.borrow_mut();
        calls.commands.push((id, job));
        calls.parked.insert(id, parked);
        Ok(calls::Ran::Waiting)
    }

    /// A hook: started as a call that may park; only its changes matter.
    fn hook(
        &self,
        scheduler: &Scheduler,
        phase: usize,
        what: &str,
        f: &Function,
        args: impl IntoLuaMulti,
    ) -> Result<(), String> {
        let args = args.into_lua_multi(&self.lua).map_err(|e| e.to_string())?;
        self.start_call(scheduler, phase, what, f, args, calls::Then::Hook).map(|_| ())
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

    /// `split`'s returned value as tasks of the phase at `phase`, added.
    fn split_tasks(&self, scheduler: &mut Scheduler, phase: usize, value: Value) -> Result<(), String> {
        let p = &self.phases[phase];
        let split = p.split.as_ref().expect("a split phase");
        let place = self.place_of(split);
        let lease = self.shared.lease.borrow().clone();
        let specs = spec::to_specs(&self.lua, value, lease.as_deref()).map_err(|e| {
            self.shared.changes.borrow_mut().clear();
            format!("{place}: in split of phase \"{}\": split must return a list of tasks: {e}", p.name)
        })?;
        crate::engine::room_for(scheduler, specs.len())
            .map_err(|e| format!("{place}: in split of phase \"{}\": {e}", p.name))?;
        scheduler
            .add_tasks(specs, Some(&p.name), Instant::now())
            .map_err(|e| format!("{place}: in split of phase \"{}\": {e}", p.name))?;
        Ok(())
    }

    /// Apply what scripts queued through `ctx`; problems go to `errors`.
    fn apply_changes(&self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
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
    fn is_complete(&self, scheduler: &Scheduler) -> Result<bool, String> {
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
    fn advance(&mut self, scheduler: &mut Scheduler, errors: &mut Vec<String>) {
        while self.current < self.phases.len() {
            if !self.started[self.current] {
                if self.split_failed[self.current] {
                    return;
                }
                let name = self.phases[self.current].name.clone();
                let has_tasks = !scheduler.select(Some(&name), None).is_empty();
                if !has_tasks {
                    if self.splitting[self.current] {
                        return;
                    }
                    match self.start_phase(scheduler) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.splitting[self.current] = true;
                            return;
                        }
                        Err(e) => {
                            self.split_failed[self.current] = true;
                            errors.push(e);
                            return;
                        }
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
    ) -> Result<Option<Verdict>, PolicyError> {
        let phase = self.index(task.phase.as_deref());
        let Some(accept) = &self.phases[phase].accept else {
            return Ok(Some(DefaultPolicy::verdict(task, validation)));
        };
        let what = format!("accept of phase \"{}\"", self.phases[phase].name);
        let args = views::task(&self.lua, task)
            .and_then(|t| {
                (t, views::report(&self.lua, report, validation)?, self.ctx.clone()).into_lua_multi(&self.lua)
            })
            .map_err(|e| PolicyError(errors::describe(&e, &self.file, &what)))?;
        let then = calls::Then::Accept { task: task.spec.id.clone(), attempt: task.attempt };
        // Changes asked for in `accept` are applied by the next step.
        match self.start_call(scheduler, phase, "accept", accept, args, then).map_err(PolicyError)? {
            calls::Ran::Done(out) => {
                self.verdict_of(phase, out).map(Some).map_err(|e| PolicyError(errors::describe(&e, &self.file, &what)))
            }
            calls::Ran::Waiting => Ok(None),
        }
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
                self.splitting[phase] = false;
                let added = done.and_then(|ran| {
                    let calls::Ran::Done(out) = ran else { unreachable!("matched above") };
                    self.split_tasks(scheduler, phase, out.into_iter().next().unwrap_or(Value::Nil))
                });
                match added {
                    Ok(()) => {
                        self.started[phase] = true;
                        self.dirty = true;
                        self.timer_next = None;
                    }
                    Err(e) => {
                        self.shared.changes.borrow_mut().clear();
                        self.split_failed[phase] = true;
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

    fn busy(&self) -> Vec<String> {
        let calls = self.calls.borrow();
        let mut lines: Vec<(Instant, String)> = calls
            .parked
            .values()
            .map(|p| {
                let name = &self.phases[p.phase].name;
                let secs = p.since.elapsed().as_secs();
                (p.since, format!("{} of phase \"{name}\" runs `{}` ({secs}s so far)", p.what, p.command))
            })
            .collect();
        lines.sort();
        lines.into_iter().map(|(_, l)| l).collect()
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
        phases_done && (scheduler.is_empty() || scheduler.all_terminal())
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
