//! The Lua side of a workflow: the state and its sandbox (no `os`, `io`,
//! `debug` or `package`), the instruction and memory limits, loading the
//! file, and calling into it, including calls that park in `ctx.run`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use mlua::{Function, IntoLuaMulti, Lua, LuaOptions, MultiValue, Scope, StdLib, Table, Value};

use super::{CURRENT, SESSION, Shared, Workflow, calls, ctx, errors, limits, recipes, spec, strings};
use crate::scheduler::Scheduler;

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
/// Registry key of the table (weak keys) of where each `task {...}` was
/// called: an error about a task `split` returned names that line.
const TASK_PLACES: &str = "mcc.task_places";

/// `file:N` of the innermost workflow code on the stack (not mcc's prelude, not C).
fn caller_place(lua: &Lua) -> Option<String> {
    (1..)
        .map_while(|level| {
            lua.inspect_stack(level, |d| (d.source().short_src.map(std::borrow::Cow::into_owned), d.current_line()))
        })
        .find_map(|frame| match frame {
            (Some(src), Some(line)) if src != "mcc" && src != "[C]" => Some(format!("{src}:{line}")),
            _ => None,
        })
}

/// Where `task {...}` made table `t`, if it did.
pub(super) fn place_made(lua: &Lua, t: &Table) -> Option<String> {
    lua.named_registry_value::<Table>(TASK_PLACES).ok()?.raw_get::<Option<String>>(t).ok()?
}

impl Workflow {
    /// Read, run and check a workflow file.
    pub fn load(path: &Path, root: &Path) -> Result<Self, String> {
        Self::load_limited(path, root, limits::Limits::default())
    }

    /// [`Workflow::load`] with what each call may spend.
    pub fn load_limited(path: &Path, root: &Path, limits: limits::Limits) -> Result<Self, String> {
        Self::load_text(path, root, Self::read_source(path, root)?, Vec::new(), limits)
    }

    /// The text of the workflow file at `path`.
    pub(super) fn read_source(path: &Path, root: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| {
            let file = recipes::shown(root, path);
            format!("{file}: cannot read the workflow: {e}; check the path (relative to the project root)")
        })
    }

    /// Run and check `source` as the workflow file at `path`; `require`
    /// takes a module in `pinned` (path, text) as it is there, not from disk.
    pub(super) fn load_text(
        path: &Path,
        root: &Path,
        source: String,
        pinned: Vec<(std::path::PathBuf, String)>,
        limits: limits::Limits,
    ) -> Result<Self, String> {
        let file = recipes::shown(root, path);
        let shared = Rc::new(Shared {
            root: root.to_owned(),
            dir: path.parent().map_or_else(|| root.to_owned(), Path::to_owned),
            name: RefCell::new(String::new()),
            lease: RefCell::new(None),
            phase: RefCell::new(String::new()),
            changes: RefCell::default(),
            log: RefCell::new(Vec::new()),
            modules: RefCell::new(Vec::new()),
            pinned,
        });
        // Only what a workflow needs: no os, io, debug or package (see docs/security.md).
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(|e| format!("{file}: cannot set up Lua: {e}"))?;
        let budget = limits::Budget::new(limits);
        let setup = |lua: &Lua| -> mlua::Result<(Table, Table)> {
            limits::install(lua, &budget)?;
            recipes::install(lua, &shared)?;
            let places = lua.create_table()?;
            let weak = lua.create_table()?;
            weak.set("__mode", "k")?;
            places.set_metatable(Some(weak))?;
            lua.set_named_registry_value(TASK_PLACES, places)?;
            let check = lua.create_function(|lua, t: Value| {
                let _nested = limits::Nested::enter("task {...}")?;
                spec::to_spec(lua, t.clone(), None).map_err(|e| mlua::Error::runtime(format!("task {{...}}: {e}")))?;
                if let (Value::Table(t), Some(place)) = (t, caller_place(lua)) {
                    lua.named_registry_value::<Table>(TASK_PLACES)?.raw_set(t, place)?;
                }
                Ok(())
            })?;
            lua.globals().set("__mcc_check_task", check)?;
            lua.load(PRELUDE).set_name("@mcc").exec()?;
            limits::install_guards(lua, &budget)?;
            strings::install(lua, &budget)?;
            let ctx = ctx::install(lua, &shared)?;
            let current = lua.create_function(|lua, ()| lua.named_registry_value::<Value>(CURRENT))?;
            let marker: Table =
                lua.load(RUN).set_name("@mcc").call((ctx.clone(), ctx::run_request(lua, &shared)?, current))?;
            Ok((ctx, marker))
        };
        let (ctx, run_marker) = setup(&lua).map_err(|e| format!("{file}: cannot set up Lua: {e}"))?;
        // Running the file and reading what it returned (metamethods may run) is one call.
        budget.start();
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
            caps: crate::scheduler::Caps::default(),
            presence_grace: None,
            worktree: None,
            quiet_after: Duration::from_mins(10),
            spend_limits: crate::engine::BudgetLimits::default(),
            current: 0,
            phase_states: Vec::new(),
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
            records: None,
        };
        let read = workflow.read_table(returned);
        workflow.budget.stop();
        read.map(|()| workflow)
    }

    /// Call into Lua with the scheduler visible to `ctx`, the budget reset,
    /// and errors described as `file:line: in WHAT: message`.
    pub(super) fn call<'env, R>(
        &self,
        scheduler: &'env Scheduler,
        phase: usize,
        what: &str,
        f: impl for<'s> FnOnce(&'s Scope<'s, 'env>) -> mlua::Result<R>,
    ) -> Result<R, String> {
        // Clears what a metamethod run between calls may have spent.
        self.budget.stop();
        let name = &self.phases[phase].name;
        self.enter_phase(phase)?;
        let result = self.lua.scope(|scope| {
            let session = scope.create_any_userdata_ref(scheduler)?;
            self.lua.set_named_registry_value(SESSION, session)?;
            self.budget.start();
            let result = f(scope);
            self.budget.stop();
            result
        });
        let _ = self.lua.unset_named_registry_value(SESSION);
        result.map_err(|e| errors::describe(&e, &self.file, &format!("{what} of phase \"{name}\"")))
    }

    /// Make `ctx.phase` (and where `ctx.add_task` puts tasks) the phase at `phase`.
    pub(super) fn enter_phase(&self, phase: usize) -> Result<(), String> {
        let name = &self.phases[phase].name;
        if *self.shared.phase.borrow() != *name {
            name.clone_into(&mut self.shared.phase.borrow_mut());
            self.ctx.set("phase", name.as_str()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Start `f` as a call that may park in `ctx.run`; see [`calls`].
    pub(super) fn start_call(
        &self,
        scheduler: &Scheduler,
        phase: usize,
        what: &str,
        f: &Function,
        args: MultiValue,
        then: calls::Then,
    ) -> Result<calls::Ran, String> {
        let thread = self.lua.create_thread(f.clone()).map_err(|e| e.to_string())?;
        let parked = calls::Parked { thread, then, phase, what: what.to_owned() };
        self.drive(scheduler, calls::next_id(), parked, args)
    }

    /// Resume a call until it finishes or parks again in `ctx.run`.
    pub(super) fn drive(
        &self,
        scheduler: &Scheduler,
        id: u64,
        parked: calls::Parked,
        args: MultiValue,
    ) -> Result<calls::Ran, String> {
        self.budget.stop();
        let what = format!("{} of phase \"{}\"", parked.what, self.phases[parked.phase].name);
        self.enter_phase(parked.phase)?;
        let thread = parked.thread.clone();
        let result = self.lua.scope(|scope| {
            let session = scope.create_any_userdata_ref(scheduler)?;
            self.lua.set_named_registry_value(SESSION, session)?;
            self.lua.set_named_registry_value(CURRENT, &thread)?;
            self.budget.start();
            let result = thread.resume::<MultiValue>(args);
            self.budget.stop();
            result
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
        let mut calls = self.calls.borrow_mut();
        calls.commands.push((id, job));
        calls.parked.insert(id, parked);
        Ok(calls::Ran::Waiting)
    }

    /// A hook: started as a call that may park; only its changes matter.
    pub(super) fn hook(
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
}
