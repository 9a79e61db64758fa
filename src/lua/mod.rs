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
//!
//! This file holds the [`Workflow`] and what its parts share; the parts:
//! [`runtime`] (the Lua state, its sandbox and limits, loading, calling in),
//! [`phases`] (each phase's [`phases::PhaseState`], starting and finishing
//! phases), [`policy`] (the engine's [`Policy`] on top), [`hooks`] (`on.*`).

mod calls;
mod ctx;
mod definition;
mod errors;
mod hooks;
mod limits;
mod loading;
mod patterns;
mod phases;
mod policy;
pub mod recipes;
mod runtime;
mod spec;
mod strings;
mod views;
mod watch;

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::{Lua, Table};

use definition::Phase;

use crate::engine::Policy;
use crate::scheduler::TaskId;
use crate::task::TaskSpec;

/// Registry key of the scheduler view of the call in progress.
pub(crate) const SESSION: &str = "mcc.scheduler";
/// Registry key of the coroutine mcc is running (the only one `ctx.run` may park).
const CURRENT: &str = "mcc.call";

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
    /// Modules as they were when the workflow last loaded, used instead of
    /// the files (see [`loading`]).
    pinned: Vec<(PathBuf, String)>,
}

/// One phase as `mcc check` shows it (see [`Workflow::phase_outline`]).
pub struct PhaseOutline {
    pub name: String,
    pub started: bool,
    /// The number of tasks a phase lists in the file; `None` when it splits.
    pub listed: Option<usize>,
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
    /// `max_workers` of the phases and of the workflow (by task type).
    caps: crate::scheduler::Caps,
    /// The workflow's `presence_grace`, over the hub's `--presence-grace`.
    presence_grace: Option<Duration>,
    /// The workflow's `worktree` when it says one (true: every worker in a git worktree of its own).
    worktree: Option<bool>,
    quiet_after: Duration,
    /// The run's and the phases' `budget`s.
    spend_limits: crate::engine::BudgetLimits,
    current: usize,
    /// Where each phase stands, in the order of `phases`.
    phase_states: Vec<phases::PhaseState>,
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
    /// Where to record that the workflow loaded, after its first step (see [`loading`]).
    records: Option<loading::Records>,
}
/// Load a workflow file: the engine's [`crate::engine::Loader`]. Text the
/// hub died while loading is not run again: the last version that loaded
/// runs instead (see [`loading`]).
pub fn load(path: &Path, root: &Path) -> Result<Box<dyn Policy>, String> {
    let boxed = |w: Workflow| Box::new(w) as Box<dyn Policy>;
    let Some(records) = loading::Records::at(root) else { return Workflow::load(path, root).map(boxed) };
    let source = Workflow::read_source(path, root)?;
    if records.died_on(path, &source) {
        let file = recipes::shown(root, path);
        let why = format!(
            "the hub stopped while loading {file} last time (a crash, or killed); that text is not run again: edit the file to try it"
        );
        let last = records.last_loaded(path).ok_or_else(|| format!("{why} (no earlier version of it loaded)"))?;
        let w = Workflow::load_text(path, root, last.source, last.modules, limits::Limits::default())?;
        w.shared.log.borrow_mut().push(format!("{why}; running the last version that loaded"));
        return Ok(boxed(w));
    }
    // Without its record the workflow still loads: the record only guards the next start.
    let recorded = records.loading(path, &source);
    match Workflow::load_text(path, root, source, Vec::new(), limits::Limits::default()) {
        Ok(mut w) => {
            match recorded {
                Ok(()) => w.records = Some(records),
                Err(e) => w.shared.log.borrow_mut().push(e),
            }
            Ok(boxed(w))
        }
        Err(e) => {
            records.not_loaded();
            Err(e)
        }
    }
}
impl Workflow {
    /// The name of the workflow.
    pub fn workflow_name(&self) -> &str {
        &self.name
    }

    /// Phase names in order.
    pub fn phase_names(&self) -> Vec<String> {
        self.phases.iter().map(|p| p.name.clone()).collect()
    }

    /// Each phase in order, whether it has started, and how many tasks its
    /// `tasks` list holds (`None` for a `split`): what `mcc check` shows of
    /// the phases it could not start without work being done.
    pub fn phase_outline(&self) -> Vec<PhaseOutline> {
        self.phases
            .iter()
            .zip(&self.phase_states)
            .map(|(p, s)| PhaseOutline {
                name: p.name.clone(),
                started: *s == phases::PhaseState::Started,
                listed: p.tasks.as_ref().map(Vec::len),
            })
            .collect()
    }

    fn index(&self, phase: Option<&str>) -> usize {
        phase
            .and_then(|p| self.phases.iter().position(|x| x.name == p))
            .unwrap_or(self.current.min(self.phases.len() - 1))
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
