//! What keeps a runaway script from stalling or sinking the hub: a budget
//! per call (instructions and wall time, counted by a hook), a memory limit
//! for the whole Lua state, and a bound on how deep and how big a table
//! Rust converts. Pattern functions run on mcc's own matcher, which asks the
//! budget as it goes (see [`super::patterns`]).
//!
//! The budget cannot be caught: once spent, the hook fails again on every
//! return and every instruction count, so a `pcall` (or `coroutine.resume`)
//! that catches the error fails again the moment it returns, up to mcc.
//! Time spent inside a C function is seen when that function returns; the
//! pattern matcher, in Rust, asks [`Budget::overdue`] while it runs.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{DebugEvent, HookTriggers, Lua, Table, Value, VmState};

/// Instructions one call (one decision, one hook, loading the file) may run.
pub const INSTRUCTIONS: u64 = 50_000_000;
/// Time one call may take, time inside C functions included: CPU time of
/// the engine's thread, so a busy machine does not stop a fair call...
pub const TIME: Duration = Duration::from_secs(5);
/// ...and wall time, however busy the machine, so the engine never stalls longer.
pub const WALL_TIME: Duration = Duration::from_secs(30);
/// Memory the whole Lua state may hold.
pub const MEMORY: usize = 256 << 20;
/// How deep a table may nest where Rust converts it (a task, `ctx.json`).
pub const DEPTH: usize = 128;
/// How many values such a table may hold, counting a table reached twice
/// twice (as the conversion does).
pub const VALUES: usize = 200_000;
/// Stack that Rust functions called from Lua, calling Lua again, may use
/// between them (`require` of a module that requires itself, a metamethod
/// that calls `ctx`): each level costs tens of KiB of Rust stack, and Lua's
/// own limit (200 C levels) is past what a 2 MiB thread holds.
pub const NESTED_STACK: usize = 1 << 20;
/// The hook runs every this many instructions.
const STRIDE: u32 = 10_000;

/// What one call may spend. A hub gives every workflow [`Limits::default`]
/// (the constants above); tests pass smaller ones rather than wait.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub instructions: u64,
    /// CPU time of the engine's thread.
    pub time: Duration,
    /// Wall time, however busy the machine.
    pub wall_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { instructions: INSTRUCTIONS, time: TIME, wall_time: WALL_TIME }
    }
}

#[derive(Default)]
struct State {
    used: u64,
    /// When the current call started, and the thread's CPU time then; `None` between calls.
    started: Option<(Instant, Duration)>,
    /// The error once the budget is spent: raised again until the call ends.
    spent: Option<String>,
}

/// CPU time the current thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// The budget of the current call: started before each call, stopped after.
#[derive(Clone, Default)]
pub struct Budget(Rc<RefCell<State>>, Limits);

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self(Rc::default(), limits)
    }

    /// Start a call: a fresh count and deadline.
    pub fn start(&self) {
        *self.0.borrow_mut() = State { used: 0, started: Some((Instant::now(), thread_cpu())), spent: None };
    }

    /// Between calls: no deadline (mcc's own use of the state must not fail
    /// because time passed), a fresh instruction count for what mcc reads
    /// afterwards (a metamethod of a returned table runs then).
    pub fn stop(&self) {
        *self.0.borrow_mut() = State::default();
    }

    /// Whether the current call has spent its budget.
    pub fn spent(&self) -> bool {
        self.0.borrow().spent.is_some()
    }

    /// Asked by work that runs long inside Rust (the pattern matcher): the
    /// error to raise once the call is past its time, made by `describe`
    /// from what it spent ("5 s"), or the error already raised. The budget
    /// is then spent, so a `pcall` that catches the error fails again as it
    /// returns.
    pub fn overdue(&self, describe: impl FnOnce(&str) -> String) -> Option<String> {
        let mut state = self.0.borrow_mut();
        if let Some(spent) = &state.spent {
            return Some(spent.clone());
        }
        let spent = state.started.and_then(|started| over_time(started, self.1))?;
        let message = describe(&spent);
        state.spent = Some(message.clone());
        Some(message)
    }

    /// What the hook decides on `event`: the error to raise, if any.
    fn check(&self, event: DebugEvent, place: impl FnOnce() -> String) -> Option<String> {
        let mut state = self.0.borrow_mut();
        if let Some(spent) = &state.spent {
            return Some(spent.clone());
        }
        if matches!(event, DebugEvent::Count) {
            state.used += u64::from(STRIDE);
        }
        let limits = self.1;
        let why = if state.used > limits.instructions {
            format!("runaway script stopped after {} instructions (an endless loop?)", limits.instructions)
        } else if let Some(spent) = state.started.and_then(|started| over_time(started, limits)) {
            format!("runaway script stopped after {spent} (the time one call may take; a slow pattern or a huge sort?)")
        } else {
            return None;
        };
        let message = format!("{}{why}", place());
        state.spent = Some(message.clone());
        Some(message)
    }
}

/// What a call that started at `(wall, cpu)` has spent, once past a limit:
/// the wall clock is cheap and read on every event; the CPU clock (a system
/// call) only once the wall clock is past the CPU limit.
fn over_time((wall, cpu): (Instant, Duration), limits: Limits) -> Option<String> {
    let wall = wall.elapsed();
    if wall <= limits.time {
        return None;
    }
    if wall > limits.wall_time {
        return Some(format!("{} s of wall time", limits.wall_time.as_secs_f64()));
    }
    (thread_cpu().saturating_sub(cpu) > limits.time).then(|| format!("{} s", limits.time.as_secs_f64()))
}

/// Set the memory limit and the budget's hook.
pub fn install(lua: &Lua, budget: &Budget) -> mlua::Result<()> {
    lua.set_memory_limit(MEMORY)?;
    let budget = budget.clone();
    // Global, so coroutines a script creates are counted too. On returns too:
    // time spent in a C function is seen as it returns, and a caught budget
    // error is raised again as the `pcall` that caught it returns.
    let triggers = HookTriggers::new().every_nth_instruction(STRIDE).on_returns();
    lua.set_global_hook(triggers, move |lua, debug| {
        // The script's line: a C function returning (`string.match`) has none, its caller has.
        let place = || at(debug).unwrap_or_else(|| script_place(lua, 1));
        match budget.check(debug.event(), place) {
            Some(message) => Err(mlua::Error::runtime(message)),
            None => Ok(VmState::Continue),
        }
    })
}

/// `file:line: ` of a frame of the workflow's own code, if `d` is one.
fn at(d: &mlua::Debug) -> Option<String> {
    match (d.source().short_src, d.current_line()) {
        (Some(src), Some(line)) if src != "[C]" && src != "mcc" => Some(format!("{src}:{line}: ")),
        _ => None,
    }
}

/// `file:line: ` of the nearest frame of the workflow's own code, looking
/// from stack level `from` up past C functions and mcc's wrappers; empty if
/// none is near.
pub fn script_place(lua: &Lua, from: usize) -> String {
    (from..from + 4).find_map(|level| lua.inspect_stack(level, at).flatten()).unwrap_or_default()
}

/// The Lua side of the limits, run once the state is set up: `xpcall` does
/// not call its handler for a spent budget (a handler runs with the hook off,
/// so a loop in it would never end); `setmetatable` refuses `__gc` (Lua runs
/// finalizers with the hook off).
const GUARDS: &str = r"
local spent = ...
local raw_xpcall, raw_setmetatable, rawget, type = xpcall, setmetatable, rawget, type
xpcall = function(f, handler, ...)
  return raw_xpcall(f, function(e)
    if spent() then return e end
    return handler(e)
  end, ...)
end
setmetatable = function(t, mt)
  if type(mt) == 'table' and rawget(mt, '__gc') ~= nil then
    error('setmetatable: __gc is not available to a workflow (a finalizer runs outside the budget)', 2)
  end
  return raw_setmetatable(t, mt)
end
";

/// Install [`GUARDS`].
pub fn install_guards(lua: &Lua, budget: &Budget) -> mlua::Result<()> {
    let budget = budget.clone();
    let spent = lua.create_function(move |_, ()| Ok(budget.spent()))?;
    lua.load(GUARDS).set_name("@mcc").call::<()>(spent)
}

/// Refuse `value` before Rust converts it (serde recursion on a 100,000-deep
/// table overflows the stack; a table reached twice at each of 40 levels
/// expands to 2^40 values): at most [`DEPTH`] levels and [`VALUES`] values.
/// A table inside itself is left to the conversion, which names it.
pub fn check_shape(value: &Value, what: &str) -> mlua::Result<()> {
    let Value::Table(root) = value else { return Ok(()) };
    let too_many = || {
        mlua::Error::runtime(format!(
            "{what}: the table holds more than {VALUES} values (a table reached many times counts each time)"
        ))
    };
    let mut count = 0usize;
    // Depth-first with an explicit stack of the tables still to visit at each
    // level, and the set of tables on the path (a table inside itself).
    let mut path: HashSet<*const std::ffi::c_void> = HashSet::from([root.to_pointer()]);
    let mut stack: Vec<(Table, std::vec::IntoIter<Table>)> = Vec::new();
    let first = inner_tables(root, &mut count).ok_or_else(too_many)??;
    stack.push((root.clone(), first.into_iter()));
    while let Some((_, next)) = stack.last_mut() {
        let Some(t) = next.next() else {
            if let Some((done, _)) = stack.pop() {
                path.remove(&done.to_pointer());
            }
            continue;
        };
        if !path.insert(t.to_pointer()) {
            continue;
        }
        if stack.len() >= DEPTH {
            return Err(mlua::Error::runtime(format!(
                "{what}: the table is nested more than {DEPTH} levels deep; flatten it"
            )));
        }
        let inner = inner_tables(&t, &mut count).ok_or_else(too_many)??;
        stack.push((t, inner.into_iter()));
    }
    Ok(())
}

/// The tables among a table's keys and values (raw: no metamethod runs),
/// counting every key and value in `count`; `None` past [`VALUES`].
fn inner_tables(t: &Table, count: &mut usize) -> Option<mlua::Result<Vec<Table>>> {
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = match pair {
            Ok(pair) => pair,
            Err(e) => return Some(Err(e)),
        };
        *count += 2;
        if *count > VALUES {
            return None;
        }
        out.extend([k, v].into_iter().filter_map(|x| match x {
            Value::Table(t) => Some(t),
            _ => None,
        }));
    }
    Some(Ok(out))
}

thread_local! {
    /// Where the stack stood when Lua first entered one of mcc's Rust
    /// functions that may run Lua again, and how many of them are running.
    static ENTERED: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// One of mcc's Rust functions that may run Lua again (it loads a module,
/// or reads a table whose metamethods may call back): entered with
/// [`Nested::enter`], which refuses past [`NESTED_STACK`].
pub struct Nested(());

impl Nested {
    pub fn enter(what: &str) -> mlua::Result<Self> {
        let marker = 0u8;
        let here = std::hint::black_box(std::ptr::addr_of!(marker)).addr();
        ENTERED.with(|entered| {
            let (base, depth) = entered.get();
            let base = if depth == 0 { here } else { base };
            // The stack grows down on every platform mcc runs on.
            if base.saturating_sub(here) > NESTED_STACK {
                return Err(mlua::Error::runtime(format!(
                    "{what}: calls nested too deep (a module that requires itself, or a metamethod that calls back into ctx?)"
                )));
            }
            entered.set((base, depth + 1));
            Ok(Nested(()))
        })
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        ENTERED.with(|entered| {
            let (base, depth) = entered.get();
            entered.set((base, depth.saturating_sub(1)));
        });
    }
}
