//! Workflow calls that wait on a command without stalling the engine.
//!
//! Design: a decision that may run a command (`split`, `accept`, every
//! `on.*` hook) runs as a Lua coroutine on the engine's thread. `ctx.run`
//! checks its arguments, then yields the command to us; the call is parked
//! here, the engine starts the command through the supervised runner
//! ([`crate::command::Supervisor::start`]) and goes on serving workers. When
//! the command's [`crate::command::Outcome`] arrives as an engine input, the
//! coroutine is resumed with it, in a fresh view of the hub state.
//!
//! Why a coroutine rather than Lua on a thread of its own: the engine is the
//! one owner of task state and a workflow reads that state on every call
//! (`ctx.tasks`, the views handed to `assign`). On another thread every read
//! would become a message or a copy of the world, and `assign` (asked on
//! every `next`) would wait behind whatever the workflow runs. With a
//! coroutine the Lua state stays single-threaded beside the state it reads;
//! only the wait moves off the thread. What a parked call holds are owned
//! copies of the tasks and workers it was given, as they were when it
//! started; `ctx.tasks` and `ctx.task` read the state as it is now.
//!
//! `assign` and `complete` must answer at once (they are asked inside
//! dispatch); `ctx.run` there, or inside a coroutine the script made itself,
//! is an error that says where to run the command instead.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mlua::{MultiValue, Thread, ThreadStatus, Value};

use crate::command::Job;
use crate::engine::PolicyError;
use crate::scheduler::{TaskId, Verdict};

/// Call ids are unique across every workflow loaded in this process, so an
/// outcome meant for a replaced workflow never resumes the new one's call.
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

pub(super) fn next_id() -> u64 {
    NEXT_CALL.fetch_add(1, Ordering::Relaxed)
}

/// What happens with a parked call's result when it finishes.
#[derive(Debug, Clone)]
pub(super) enum Then {
    /// The verdict on this attempt of the task.
    Accept { task: TaskId, attempt: u32 },
    /// The tasks of the phase at this index.
    Split { phase: usize },
    /// A hook: only the changes it queued.
    Hook,
}

/// A call waiting in `ctx.run`.
pub(super) struct Parked {
    pub thread: Thread,
    pub then: Then,
    pub phase: usize,
    pub what: String,
}

/// Every parked call of a workflow, the commands to start and the verdicts
/// that became known.
#[derive(Default)]
pub(super) struct Calls {
    pub parked: HashMap<u64, Parked>,
    pub commands: Vec<(u64, Job)>,
    pub verdicts: Vec<(TaskId, u32, Result<Verdict, PolicyError>)>,
}

impl Calls {
    /// Drop the parked `accept` calls whose grant has ended, with any command
    /// they asked for that has not started, and any verdict they gave that
    /// has not been taken; the ids of the dropped calls. A dropped coroutine
    /// is never resumed: the garbage collector takes it.
    pub fn end_accepts(&mut self, current: &dyn Fn(&str, u32) -> bool) -> Vec<u64> {
        let ended: Vec<u64> = self
            .parked
            .iter()
            .filter(|(_, p)| matches!(&p.then, Then::Accept { task, attempt } if !current(task, *attempt)))
            .map(|(id, _)| *id)
            .collect();
        for id in &ended {
            self.parked.remove(id);
        }
        self.commands.retain(|(id, _)| !ended.contains(id));
        self.verdicts.retain(|(task, attempt, _)| current(task, *attempt));
        ended
    }
}

/// How far a call got.
pub(super) enum Ran {
    Done(MultiValue),
    Waiting,
}

/// The command a yield of `ctx.run` asks for: `RUN, cmd, limit_ms, cwd`
/// (after the marker).
pub(super) fn job_of(values: MultiValue) -> Result<(String, Job), String> {
    let mut it = values.into_iter();
    let (Some(Value::String(cmd)), Some(limit), Some(Value::String(cwd))) = (it.next(), it.next(), it.next()) else {
        return Err("ctx.run yielded a request mcc cannot read".to_owned());
    };
    let limit = match limit {
        Value::Integer(n) => u64::try_from(n).unwrap_or(0),
        Value::Number(n) => n as u64,
        _ => 0,
    };
    let cmd = cmd.to_string_lossy();
    let job = Job::shell(&cmd, Path::new(&cwd.to_string_lossy()), Duration::from_millis(limit));
    Ok((cmd, job))
}

/// Whether the thread is parked in a yield (as opposed to finished).
pub(super) fn yielded(thread: &Thread) -> bool {
    thread.status() == ThreadStatus::Resumable
}
