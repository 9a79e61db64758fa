//! What keeps a runaway script from stalling or sinking the hub: an
//! instruction budget per call (counted by a hook) and a memory limit for the
//! whole Lua state.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{HookTriggers, Lua, VmState};

/// Instructions one call (one decision, one hook, loading the file) may run.
pub const INSTRUCTIONS: u64 = 50_000_000;
/// Memory the whole Lua state may hold.
pub const MEMORY: usize = 256 << 20;
/// The hook runs every this many instructions.
const STRIDE: u32 = 10_000;

/// Counts the instructions of the current call; reset before each call.
#[derive(Clone, Default)]
pub struct Budget(Rc<Cell<u64>>);

impl Budget {
    pub fn reset(&self) {
        self.0.set(0);
    }
}

/// Set the memory limit and the instruction hook.
pub fn install(lua: &Lua, budget: &Budget) -> mlua::Result<()> {
    lua.set_memory_limit(MEMORY)?;
    let used = budget.0.clone();
    // Global, so coroutines a script creates are counted too.
    lua.set_global_hook(HookTriggers::new().every_nth_instruction(STRIDE), move |_, debug| {
        let now = used.get() + u64::from(STRIDE);
        used.set(now);
        if now > INSTRUCTIONS {
            let place = match (debug.source().short_src, debug.current_line()) {
                (Some(src), Some(line)) => format!("{src}:{line}: "),
                _ => String::new(),
            };
            return Err(mlua::Error::runtime(format!(
                "{place}runaway script stopped after {INSTRUCTIONS} instructions (an endless loop?)"
            )));
        }
        Ok(VmState::Continue)
    })
}
