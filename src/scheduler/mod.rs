//! The scheduler: task states, leases, attempts, dependencies, file
//! reservations and assignment, as plain Rust over in-memory state.
//!
//! Every method takes `now` from the caller (a monotonic [`Instant`]), so the
//! rules are tested without a clock. Every mutation is recorded in
//! [`Changes`], which the store drains and commits before anything is
//! acknowledged.

mod changes;
mod company;
mod dependencies;
mod index;
mod leases;
mod model;
mod offers;
mod presence;
mod races;
mod reservation;
mod routing;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use changes::{Changes, Event};
pub use index::InOrder;
pub use leases::{Judged, Verdict};
pub use model::{Applied, Judgement, Task, TaskState, Worker};
pub use offers::{Idle, Offer};
pub use races::{MAX_RACE, race_copy, race_of, race_size, racer_number};
pub use reservation::{Reservation, any_overlap};
pub use routing::{Cap, Caps, Passed};

use crate::event::EventKind;
use crate::task::now_rfc3339;

pub type TaskId = String;

/// Hub-wide scheduling settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lease: Duration,
    /// After this many grants a task that is not accepted fails.
    pub max_attempts: u32,
    /// The most tasks the store may hold (`--max-tasks`).
    pub max_tasks: usize,
    /// How long a worker whose chat ended may take to come back before
    /// its task goes back to the queue (`--presence-grace`, the workflow's `presence_grace`).
    pub presence_grace: Duration,
    /// Every worker works in a git worktree of its own (the workflow's `worktree = true`):
    /// the grant says so, and a client not in worktree mode sets one up.
    pub worktree: bool,
}

/// The presence grace unless the hub or the workflow says otherwise.
pub const DEFAULT_PRESENCE_GRACE: Duration = Duration::from_mins(1);

/// Tasks a store holds at most unless `--max-tasks` says otherwise: far past
/// any real project, well short of what would sink the hub (707k tasks took
/// 6.7 GB).
pub const DEFAULT_MAX_TASKS: usize = 200_000;

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: Duration::from_mins(30),
            max_attempts: 5,
            max_tasks: DEFAULT_MAX_TASKS,
            presence_grace: DEFAULT_PRESENCE_GRACE,
            worktree: false,
        }
    }
}

/// Why a request was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown task `{0}`: run `mcc tasks list` to see the tasks")]
    UnknownTask(TaskId),
    #[error("task `{0}` already exists; give the new task another id")]
    DuplicateTask(TaskId),
    #[error("task `{task}` depends on unknown task `{dependency}`; create `{dependency}` first or drop the dependency")]
    UnknownDependency { task: TaskId, dependency: TaskId },
    #[error("dependencies form a cycle: {0}; remove one of these dependencies")]
    Cycle(String),
    #[error(
        "task `{task}` is held by `{holder}` (attempt {attempt}), not by `{worker}`{lease_note}; run `mcc worker next --as {worker}` for your own task"
    )]
    NotHolder { task: TaskId, worker: String, holder: String, attempt: u32, lease_note: &'static str },
    #[error("`{worker}` does not hold task `{task}`: {why}; run `mcc worker next --as {worker}` for a task")]
    NotHeld { task: TaskId, worker: String, why: String },
    #[error(
        "stale attempt {given} for task `{task}`: the current attempt is {current}; run `mcc worker next --as {worker}` to see what you hold"
    )]
    StaleAttempt { task: TaskId, worker: String, given: u32, current: u32 },
    #[error("task `{task}` is {state}; {what}")]
    WrongState { task: TaskId, state: TaskState, what: &'static str },
}

impl Refusal {
    /// A short machine-readable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownTask(_) => "unknown_task",
            Self::DuplicateTask(_) => "duplicate_task",
            Self::UnknownDependency { .. } => "unknown_dependency",
            Self::Cycle(_) => "cycle",
            Self::NotHolder { .. } => "not_holder",
            Self::NotHeld { .. } => "not_held",
            Self::StaleAttempt { .. } => "stale_attempt",
            Self::WrongState { .. } => "wrong_state",
        }
    }
}

/// The scheduler's whole state.
#[derive(Debug, Default)]
pub struct Scheduler {
    pub settings: Settings,
    tasks: HashMap<TaskId, Task>,
    /// Tasks by state and ready tasks by the files they write.
    index: index::Index,
    dependents: HashMap<TaskId, Vec<TaskId>>,
    /// Worker name -> the task it holds (assigned).
    holding: HashMap<String, TaskId>,
    workers: BTreeMap<String, Worker>,
    next_seq: u64,
    changes: Changes,
    /// Something a waiting worker could be offered changed.
    work_changed: bool,
    /// The workflow's `max_workers`, by phase and by task type.
    caps: Caps,
    /// Task -> the other workers that held a task during its current attempt.
    company: HashMap<TaskId, BTreeSet<String>>,
    /// Workers whose last attempt ran in a folder of their own.
    own_folder: HashSet<String>,
    /// A race's task -> its racers, every round (see `races.rs`).
    racers: HashMap<TaskId, Vec<TaskId>>,
    /// Races whose racers moved since the engine last decided them.
    races_moved: BTreeSet<TaskId>,
}

impl Scheduler {
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Rebuild from stored tasks as they are read, `count` of them expected:
    /// no list of every task is held beside the scheduler's own.
    pub fn restore_from(
        settings: Settings,
        count: usize,
        tasks: impl IntoIterator<Item = Task>,
        workers: Vec<Worker>,
    ) -> Self {
        let mut s = Self::new(settings);
        s.tasks.reserve(count);
        for worker in workers {
            s.workers.insert(worker.name.clone(), worker);
        }
        // Each worker's accepted tasks, in the order they finished.
        let mut accepted: Vec<(String, u64, TaskId, String)> = Vec::new();
        for mut task in tasks {
            s.restore_task(&mut task);
            if let (TaskState::Accepted, Some(by)) = (task.state(), task.last_holder())
                && s.workers.contains_key(by)
            {
                let finished = task.completed_at.clone().unwrap_or_default();
                accepted.push((finished, task.seq(), task.spec.id.clone(), by.to_owned()));
            }
            s.tasks.insert(task.spec.id.clone(), task);
        }
        s.restore_company();
        // Every race still running is decided again: its last decision may not have been committed.
        let running: Vec<TaskId> = s
            .racers
            .keys()
            .filter(|id| s.tasks.get(*id).is_some_and(|t| t.state() == TaskState::Assigned))
            .cloned()
            .collect();
        s.races_moved.extend(running);
        accepted.sort();
        for (_, _, id, by) in accepted {
            s.workers.get_mut(&by).expect("checked above").accepted.push(id);
        }
        s.work_changed = true;
        s
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// How many tasks the scheduler holds, in any state.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Tasks in creation order, walked from the indexes (no sort).
    pub fn tasks_in_order(&self) -> InOrder<'_> {
        self.select(None, None)
    }

    /// Tasks in creation order of the workflow phase `phase` (of any phase
    /// or none when `None`) in `state` (any when `None`): costs what it lists.
    pub fn select(&self, phase: Option<&str>, state: Option<TaskState>) -> InOrder<'_> {
        InOrder::new(self.index.select(phase, state), &self.tasks)
    }

    /// How many tasks of the workflow phase `phase` are in `state`.
    pub fn phase_count(&self, phase: &str, state: TaskState) -> usize {
        self.index.phase_count(phase, state)
    }

    pub fn worker(&self, name: &str) -> Option<&Worker> {
        self.workers.get(name)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    pub fn count(&self, state: TaskState) -> usize {
        self.index.count(state)
    }

    /// Ids of the tasks in `state`, oldest first.
    pub fn ids_in_state(&self, state: TaskState) -> impl Iterator<Item = &TaskId> {
        self.index.in_state(state)
    }

    /// Ids of the tasks in `state` created at `seq` or later, oldest first,
    /// with their creation number: a page of one state without a walk.
    pub fn ids_in_state_from(&self, state: TaskState, seq: u64) -> impl Iterator<Item = (u64, &TaskId)> {
        self.index.in_state_from(state, seq)
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every task is accepted, failed or cancelled (and there is at least one).
    pub fn all_terminal(&self) -> bool {
        let terminal: usize = TaskState::ALL.iter().filter(|s| s.is_terminal()).map(|s| self.count(*s)).sum();
        !self.tasks.is_empty() && terminal == self.tasks.len()
    }

    /// The task a worker holds now, if any.
    pub fn held_by(&self, worker: &str) -> Option<&Task> {
        self.holding.get(worker).and_then(|id| self.tasks.get(id))
    }

    /// Note a worker's existence; returns true when it is new.
    pub fn see_worker(&mut self, name: &str, now: Instant) -> bool {
        let known = self.workers.contains_key(name);
        let worker = self.workers.entry(name.to_owned()).or_insert_with(|| Worker {
            name: name.to_owned(),
            score: None,
            accepted: Vec::new(),
            joined_at: now_rfc3339(),
            last_seen: None,
            can: Vec::new(),
            model: None,
        });
        worker.last_seen = Some(now);
        if !known {
            self.changes.workers.insert(name.to_owned());
            self.event(EventKind::WorkerJoined, None, Some(name), None, Value::Null);
        }
        !known
    }

    /// Record a worker's own context score.
    pub fn set_score(&mut self, name: &str, score: u8, now: Instant) {
        self.see_worker(name, now);
        let worker = self.workers.get_mut(name).expect("just seen");
        if worker.score != Some(score) {
            worker.score = Some(score);
            self.changes.workers.insert(name.to_owned());
            self.work_changed = true;
            self.event(EventKind::Score, None, Some(name), None, json!({ "score": score }));
        }
    }
}

#[cfg(test)]
mod tests;
