//! The scheduler: task states, leases, attempts, dependencies, file
//! reservations and assignment, as plain Rust over in-memory state.
//!
//! Every method takes `now` from the caller (a monotonic [`Instant`]), so the
//! rules are tested without a clock. Every mutation is recorded in
//! [`Changes`], which the store drains and commits before anything is
//! acknowledged.

mod index;
mod reservation;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use index::{InOrder, InOrderIter};
pub use reservation::{Reservation, any_overlap};

use crate::event::EventKind;
use crate::task::{Report, TaskSpec, now_rfc3339};

pub type TaskId = String;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Some dependency is not accepted yet.
    Waiting,
    Ready,
    /// Held by a worker under a lease.
    Assigned,
    /// Reported done; being judged.
    Submitted,
    Accepted,
    /// Escalated to the engineer; back to ready once answered.
    Blocked,
    /// Attempts exhausted, or the workflow said so.
    Failed,
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        Self::Waiting,
        Self::Ready,
        Self::Assigned,
        Self::Submitted,
        Self::Accepted,
        Self::Blocked,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Ready => "ready",
            Self::Assigned => "assigned",
            Self::Submitted => "submitted",
            Self::Accepted => "accepted",
            Self::Blocked => "blocked",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The old protocol's five task statuses.
    pub fn wire_status(self) -> &'static str {
        match self {
            Self::Waiting | Self::Ready | Self::Blocked => "pending",
            Self::Assigned => "assigned",
            Self::Submitted => "in-progress",
            Self::Accepted => "completed",
            Self::Failed | Self::Cancelled => "failed",
        }
    }

    /// Nothing more will happen to the task unless someone retries it.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Accepted | Self::Failed | Self::Cancelled)
    }

    /// Its output files are reserved.
    pub fn in_flight(self) -> bool {
        matches!(self, Self::Assigned | Self::Submitted)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A task and everything the hub knows about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub spec: TaskSpec,
    /// Creation order; FIFO assignment follows it.
    pub seq: u64,
    pub state: TaskState,
    /// How many times the task was granted; the fencing token of reports.
    pub attempt: u32,
    pub holder: Option<String>,
    /// Who held it last, to explain a late report.
    pub last_holder: Option<String>,
    /// Lease length for this task.
    pub lease_ms: u64,
    /// When the current lease ends (monotonic; the store keeps a wall-clock copy).
    #[serde(skip)]
    pub lease_until: Option<Instant>,
    /// The workflow phase that created it, if any.
    pub phase: Option<String>,
    /// Why the last result was rejected or why the task failed.
    pub reasons: Vec<String>,
    /// The worker's question while blocked.
    pub question: Option<String>,
    /// The engineer's answer to the last question.
    pub answer: Option<String>,
    /// The last report received for this task.
    pub report: Option<Report>,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub rejections: u32,
    /// Kept so older stores load; attempts are counted by `spent` now.
    #[serde(default)]
    pub retry_base: u32,
    /// Grants that ended without acceptance (expired, failed, rejected)
    /// since creation or the last manual retry: what `max_attempts` limits.
    /// Blocking, answering and leaving cost none.
    #[serde(default)]
    pub spent: u32,
    /// Every report applied, by attempt: a report for an attempt already
    /// here is answered from this record and never judged twice, also
    /// after a restart.
    #[serde(default)]
    pub applied: BTreeMap<u32, Applied>,
    /// Its group in the scheduler's index: the tasks writing the same files.
    #[serde(skip)]
    group: usize,
    /// Its phase's slot in the scheduler's index.
    #[serde(skip)]
    phase_slot: Option<usize>,
}

/// A report applied for one attempt, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub worker: String,
    pub status: crate::task::ReportStatus,
    /// The report file it came from, relative to the root, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The verdict on a completed report, once judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Judgement>,
}

/// A verdict as stored and sent again to a worker that reports twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    pub accepted: bool,
    /// Rejected with no attempts left, or cancelled while judged.
    pub failed: bool,
    pub reasons: Vec<String>,
}

impl Task {
    /// Grants that ended without acceptance since creation or the last manual retry.
    pub fn attempts_used(&self) -> u32 {
        self.spent
    }

    /// The task in the old protocol's shape, as sent to workers.
    pub fn to_wire(&self) -> Value {
        self.spec.to_wire(
            self.state.wire_status(),
            self.holder.as_deref(),
            &self.created_at,
            self.completed_at.as_deref(),
        )
    }

    pub fn outputs(&self) -> Vec<Reservation> {
        self.spec.context.output_files.iter().map(|p| Reservation::new(p)).collect()
    }

    /// Time left on the lease, if held.
    pub fn lease_left(&self, now: Instant) -> Option<Duration> {
        self.lease_until.map(|until| until.saturating_duration_since(now))
    }
}

/// A worker, known by name; connections come and go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    pub name: String,
    /// The last `contextEfficiencyScore` it reported.
    pub score: Option<u8>,
    /// Tasks it finished and had accepted, in order. Not stored in the
    /// worker's row (it would grow with every task): rebuilt from the tasks
    /// at restart.
    #[serde(skip)]
    pub accepted: Vec<TaskId>,
    pub joined_at: String,
    #[serde(skip)]
    pub last_seen: Option<Instant>,
}

impl Worker {
    /// A chat whose context score fell to 2 or less should take no more work.
    pub fn must_hand_over(&self) -> bool {
        self.score.is_some_and(|s| s <= 2)
    }
}

/// One line of the append-only event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub task: Option<TaskId>,
    pub worker: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
}

/// What changed since the store last committed.
#[derive(Debug, Default)]
pub struct Changes {
    pub tasks: BTreeSet<TaskId>,
    /// Tasks whose lease alone moved: the store writes only the deadline.
    pub leases: BTreeSet<TaskId>,
    pub workers: BTreeSet<String>,
    pub events: Vec<Event>,
    /// The hub clock should be written even if nothing else changed: the
    /// stored leases' time left is measured on it.
    pub clock: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.leases.is_empty()
            && self.workers.is_empty()
            && self.events.is_empty()
            && !self.clock
    }
}

/// Hub-wide scheduling settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lease: Duration,
    /// After this many grants a task that is not accepted fails.
    pub max_attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { lease: Duration::from_mins(30), max_attempts: 5 }
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

/// What a worker asking for work gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// A task newly granted (or granted again after a rejection).
    Granted(TaskId),
    /// The task it already holds.
    Held(TaskId),
    /// Nothing ready for it now.
    Nothing,
    /// Its context score is too low; it should hand over to a fresh chat.
    HandOver,
}

/// Why nothing is grantable, most telling first.
#[derive(Debug, Clone, PartialEq)]
pub enum Idle {
    /// Ready tasks write files that in-flight tasks are writing: the oldest
    /// such tasks' files, and the tasks (with holders) in the way.
    Reserved { ready: usize, files: Vec<String>, holders: Vec<(TaskId, Option<String>)> },
    /// Tasks wait for the engineer's answer (the first few).
    Answer { blocked: usize, tasks: Vec<TaskId> },
    /// Tasks wait for dependencies: the oldest, and what it waits on.
    Dependencies { waiting: usize, task: TaskId, on: Vec<(TaskId, TaskState, Option<String>)> },
    /// Everything left is held or being judged.
    InProgress { tasks: Vec<(TaskId, Option<String>)> },
    /// No task is left at all: up to the workflow's next phase.
    NoWork,
}

/// The verdict on a submitted task.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept,
    Reject(Vec<String>),
}

/// What a verdict did.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    Accepted,
    /// Back to the same worker, with a new attempt.
    Rejected {
        reasons: Vec<String>,
    },
    /// Rejected with no attempts left.
    Failed {
        reasons: Vec<String>,
    },
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
}

impl Scheduler {
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Rebuild from stored tasks and workers.
    pub fn restore(settings: Settings, tasks: Vec<Task>, workers: Vec<Worker>) -> Self {
        let count = tasks.len();
        Self::restore_from(settings, count, tasks, workers)
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
            if let (TaskState::Accepted, Some(by)) = (task.state, &task.last_holder)
                && s.workers.contains_key(by)
            {
                let finished = task.completed_at.clone().unwrap_or_default();
                accepted.push((finished, task.seq, task.spec.id.clone(), by.clone()));
            }
            s.tasks.insert(task.spec.id.clone(), task);
        }
        accepted.sort();
        for (_, _, id, by) in accepted {
            s.workers.get_mut(&by).expect("checked above").accepted.push(id);
        }
        s.work_changed = true;
        s
    }

    /// Index one stored task; the caller inserts it.
    fn restore_task(&mut self, task: &mut Task) {
        self.next_seq = self.next_seq.max(task.seq + 1);
        for dep in &task.spec.dependencies {
            self.dependents.entry(dep.clone()).or_default().push(task.spec.id.clone());
        }
        task.group = self.index.group_for(&task.spec.context.output_files);
        task.phase_slot = self.index.phase_for(task.phase.as_deref());
        self.index.enter(&task.spec.id, task.seq, task.group, task.phase_slot, task.state);
        if let (TaskState::Assigned, Some(holder)) = (task.state, &task.holder) {
            self.holding.insert(holder.clone(), task.spec.id.clone());
        }
    }

    /// Take what changed, for the store to commit.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Events recorded since the store last committed, oldest first: what a
    /// workflow's hooks react to.
    pub fn pending_events(&self) -> &[Event] {
        &self.changes.events
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

    fn event(
        &mut self,
        kind: EventKind,
        task: Option<&str>,
        worker: Option<&str>,
        attempt: Option<u32>,
        detail: Value,
    ) {
        self.changes.events.push(Event {
            kind,
            task: task.map(str::to_owned),
            worker: worker.map(str::to_owned),
            attempt,
            detail,
        });
    }

    fn touch_task(&mut self, id: &str) {
        self.changes.tasks.insert(id.to_owned());
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

    /// Any message of a holder extends its lease.
    pub fn touch(&mut self, worker: &str, now: Instant) {
        self.see_worker(worker, now);
        let Some(id) = self.held_by(worker).map(|t| t.spec.id.clone()) else { return };
        let task = self.tasks.get_mut(&id).expect("held task exists");
        task.lease_until = Some(now + Duration::from_millis(task.lease_ms));
        self.changes.leases.insert(id);
    }

    /// Add tasks; all or none. Dependencies may point into the same batch.
    pub fn add_tasks(
        &mut self,
        specs: Vec<TaskSpec>,
        phase: Option<&str>,
        _now: Instant,
    ) -> Result<Vec<TaskId>, Refusal> {
        let mut batch: HashSet<&str> = HashSet::new();
        for spec in &specs {
            if self.tasks.contains_key(&spec.id) || !batch.insert(&spec.id) {
                return Err(Refusal::DuplicateTask(spec.id.clone()));
            }
        }
        for spec in &specs {
            for dep in &spec.dependencies {
                if !self.tasks.contains_key(dep) && !batch.contains(dep.as_str()) {
                    return Err(Refusal::UnknownDependency { task: spec.id.clone(), dependency: dep.clone() });
                }
            }
        }
        // Existing tasks cannot depend on new ones, so a cycle lies within the batch.
        if let Some(cycle) = find_cycle(&specs) {
            return Err(Refusal::Cycle(cycle.join(" -> ")));
        }
        let created_at = now_rfc3339();
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            let lease_ms = spec
                .lease
                .as_deref()
                .and_then(|l| humantime::parse_duration(l).ok())
                .unwrap_or(self.settings.lease)
                .as_millis() as u64;
            let id = spec.id.clone();
            for dep in &spec.dependencies {
                self.dependents.entry(dep.clone()).or_default().push(id.clone());
            }
            let task = Task {
                seq: self.next_seq,
                state: TaskState::Waiting,
                attempt: 0,
                holder: None,
                last_holder: None,
                lease_ms,
                lease_until: None,
                phase: phase.map(str::to_owned),
                reasons: Vec::new(),
                question: None,
                answer: None,
                report: None,
                created_at: spec
                    .extra
                    .get("createdAt")
                    .and_then(Value::as_str)
                    .map_or_else(|| created_at.clone(), str::to_owned),
                completed_at: None,
                rejections: 0,
                retry_base: 0,
                spent: 0,
                applied: BTreeMap::new(),
                group: self.index.group_for(&spec.context.output_files),
                phase_slot: self.index.phase_for(phase),
                spec,
            };
            self.index.enter(&id, task.seq, task.group, task.phase_slot, TaskState::Waiting);
            self.next_seq += 1;
            self.tasks.insert(id.clone(), task);
            self.touch_task(&id);
            self.event(EventKind::Created, Some(&id), None, None, Value::Null);
            ids.push(id);
        }
        for id in &ids {
            if self.deps_met(id) {
                self.transition(id, TaskState::Ready);
            }
        }
        Ok(ids)
    }

    fn deps_met(&self, id: &str) -> bool {
        self.tasks[id]
            .spec
            .dependencies
            .iter()
            .all(|d| self.tasks.get(d).is_some_and(|t| t.state == TaskState::Accepted))
    }

    /// The one place a task's state changes: the ready queue, the holder
    /// index, the reservations and the lease follow from it.
    fn transition(&mut self, id: &str, state: TaskState) {
        let task = self.tasks.get_mut(id).expect("known task");
        self.index.leave(id, task.seq, task.group, task.phase_slot, task.state, state);
        if task.state == TaskState::Assigned
            && let Some(holder) = &task.holder
        {
            self.holding.remove(holder);
        }
        task.state = state;
        self.index.enter(id, task.seq, task.group, task.phase_slot, state);
        // A grant can answer its holder's wait; a finished task can finish the run.
        if state == TaskState::Assigned || state.is_terminal() || self.index.take_grantable_grew() {
            self.work_changed = true;
        }
        if state != TaskState::Assigned {
            task.lease_until = None;
        }
        // A submitted task keeps its holder for the verdict.
        if !state.in_flight() && task.holder.is_some() {
            task.last_holder = task.holder.take();
        }
        self.touch_task(id);
    }

    /// Note that a report was applied for `attempt` of `id`.
    pub fn record_applied(&mut self, id: &str, attempt: u32, applied: Applied) {
        if let Some(task) = self.tasks.get_mut(id) {
            task.applied.insert(attempt, applied);
            self.touch_task(id);
        }
    }

    /// Have the store write the hub clock, which held leases are measured
    /// on: one row, however many leases are held, so a restart gives each
    /// lease the time it had left then.
    pub fn touch_held(&mut self) {
        self.changes.clock = true;
    }

    /// Ready tasks this worker may take now, in FIFO order, at most `limit`:
    /// those whose outputs overlap no in-flight task's are left out.
    pub fn candidates(&self, limit: usize) -> Vec<&Task> {
        self.index.candidates(limit).into_iter().map(|id| &self.tasks[id]).collect()
    }

    /// True once after something changed that a waiting worker could be
    /// offered: a task became grantable, was granted or finished, or a
    /// worker's score changed. Waiting workers need a look only then.
    pub fn take_work_changed(&mut self) -> bool {
        std::mem::take(&mut self.work_changed)
    }

    /// Say that waiting workers need a look (a new workflow decides anew).
    pub fn mark_work_changed(&mut self) {
        self.work_changed = true;
    }

    /// Why nothing is grantable now, from the indexes; meant for when
    /// `candidates` is empty.
    pub fn idle(&self) -> Idle {
        if let Some((files, by)) = self.index.first_blocked() {
            let holders = by
                .into_iter()
                .map(|id| {
                    let t = &self.tasks[id];
                    (id.clone(), t.holder.clone().or_else(|| t.last_holder.clone()))
                })
                .collect();
            let files = files.iter().map(|r| r.path().display().to_string()).collect();
            return Idle::Reserved { ready: self.count(TaskState::Ready), files, holders };
        }
        let blocked = self.count(TaskState::Blocked);
        if blocked > 0 {
            let tasks = self.ids_in_state(TaskState::Blocked).take(5).cloned().collect();
            return Idle::Answer { blocked, tasks };
        }
        let waiting = self.count(TaskState::Waiting);
        if let Some(first) = self.ids_in_state(TaskState::Waiting).next() {
            let on = self.tasks[first]
                .spec
                .dependencies
                .iter()
                .filter_map(|d| self.tasks.get(d))
                .filter(|d| d.state != TaskState::Accepted)
                .map(|d| (d.spec.id.clone(), d.state, d.holder.clone()))
                .collect();
            return Idle::Dependencies { waiting, task: first.clone(), on };
        }
        let busy: Vec<(TaskId, Option<String>)> = [TaskState::Assigned, TaskState::Submitted]
            .into_iter()
            .flat_map(|s| self.ids_in_state(s))
            .map(|id| (id.clone(), self.tasks[id].holder.clone()))
            .collect();
        if busy.is_empty() { Idle::NoWork } else { Idle::InProgress { tasks: busy } }
    }

    /// What `worker` gets: its held task, a new one chosen by `choose` from
    /// the candidates, nothing, or an order to hand over.
    pub fn offer(
        &mut self,
        worker: &str,
        now: Instant,
        choose: impl FnOnce(&Worker, &[&Task]) -> Option<TaskId>,
    ) -> Offer {
        self.touch(worker, now);
        if let Some(held) = self.held_by(worker) {
            return Offer::Held(held.spec.id.clone());
        }
        if self.workers[worker].must_hand_over() {
            return Offer::HandOver;
        }
        let candidates = self.candidates(64);
        if candidates.is_empty() {
            return Offer::Nothing;
        }
        let Some(id) = choose(&self.workers[worker], &candidates) else { return Offer::Nothing };
        if self.grant(&id, worker, now) { Offer::Granted(id) } else { Offer::Nothing }
    }

    /// Hand a ready, unreserved task to a worker under a new lease and
    /// attempt. False (and nothing changes) when the task is not grantable.
    pub fn grant(&mut self, id: &str, worker: &str, now: Instant) -> bool {
        let Some(task) = self.tasks.get(id) else { return false };
        if task.state != TaskState::Ready {
            return false;
        }
        if !self.index.is_free(task.group) {
            return false;
        }
        self.see_worker(worker, now);
        self.regrant(id, worker, now);
        true
    }

    fn regrant(&mut self, id: &str, worker: &str, now: Instant) {
        self.transition(id, TaskState::Assigned);
        let task = self.tasks.get_mut(id).expect("known task");
        task.attempt += 1;
        // Back to the same worker after a rejection: it held the last attempt.
        if let Some(previous) = task.holder.take() {
            task.last_holder = Some(previous);
        }
        task.holder = Some(worker.to_owned());
        task.lease_until = Some(now + Duration::from_millis(task.lease_ms));
        let attempt = task.attempt;
        self.holding.insert(worker.to_owned(), id.to_owned());
        self.event(EventKind::Assigned, Some(id), Some(worker), Some(attempt), Value::Null);
    }

    /// Check that `worker` holds `id` at `attempt` (when given).
    pub fn check_holder(&self, worker: &str, id: &str, attempt: Option<u32>) -> Result<&Task, Refusal> {
        let task = self.tasks.get(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        let holds = task.state == TaskState::Assigned && task.holder.as_deref() == Some(worker);
        if holds {
            return match attempt {
                Some(given) if given != task.attempt => Err(Refusal::StaleAttempt {
                    task: id.to_owned(),
                    worker: worker.to_owned(),
                    given,
                    current: task.attempt,
                }),
                _ => Ok(task),
            };
        }
        let was_mine = task.last_holder.as_deref() == Some(worker);
        if let (TaskState::Assigned, Some(holder)) = (task.state, task.holder.as_deref()) {
            return Err(Refusal::NotHolder {
                task: id.to_owned(),
                worker: worker.to_owned(),
                holder: holder.to_owned(),
                attempt: task.attempt,
                lease_note: if was_mine { ": your lease ran out and the task went to another worker" } else { "" },
            });
        }
        let why = match task.state {
            TaskState::Ready | TaskState::Waiting if was_mine => {
                "your lease ran out and the task went back to the queue".to_owned()
            }
            TaskState::Submitted if was_mine => "you already reported it; it is being judged".to_owned(),
            TaskState::Accepted if was_mine => "it is already accepted".to_owned(),
            state => format!("it is {state} and nobody holds it"),
        };
        Err(Refusal::NotHeld { task: id.to_owned(), worker: worker.to_owned(), why })
    }

    /// A worker reports a held task done; it waits for a verdict.
    pub fn submit(&mut self, worker: &str, id: &str, report: Report, now: Instant) -> Result<(), Refusal> {
        self.check_holder(worker, id, report.attempt)?;
        self.touch(worker, now);
        if let Some(score) = report.context_efficiency_score {
            self.set_score(worker, score, now);
        }
        let task = self.tasks.get_mut(id).expect("checked");
        let attempt = task.attempt;
        let deliverables = report.deliverables.clone();
        task.report = Some(report);
        self.transition(id, TaskState::Submitted);
        self.event(
            EventKind::Submitted,
            Some(id),
            Some(worker),
            Some(attempt),
            json!({ "deliverables": deliverables }),
        );
        Ok(())
    }

    /// Apply a verdict to a submitted task.
    pub fn judge(&mut self, id: &str, verdict: Verdict, now: Instant) -> Result<Judged, Refusal> {
        let task = self.tasks.get(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if task.state != TaskState::Submitted {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state,
                what: "only a submitted task can be judged",
            });
        }
        let worker = task.holder.clone().expect("a submitted task has its holder");
        let attempt = task.attempt;
        let judged = self.judge_inner(id, &worker, attempt, verdict, now);
        let judgement = match &judged {
            Judged::Accepted => Judgement { accepted: true, failed: false, reasons: Vec::new() },
            Judged::Rejected { reasons } => Judgement { accepted: false, failed: false, reasons: reasons.clone() },
            Judged::Failed { reasons } => Judgement { accepted: false, failed: true, reasons: reasons.clone() },
        };
        if let Some(applied) = self.tasks.get_mut(id).and_then(|t| t.applied.get_mut(&attempt)) {
            applied.verdict = Some(judgement);
        }
        Ok(judged)
    }

    fn judge_inner(&mut self, id: &str, worker: &str, attempt: u32, verdict: Verdict, now: Instant) -> Judged {
        let worker = worker.to_owned();
        match verdict {
            Verdict::Accept => {
                self.transition(id, TaskState::Accepted);
                let task = self.tasks.get_mut(id).expect("known");
                task.completed_at = Some(now_rfc3339());
                task.reasons.clear();
                // Its stored row does not change: `accepted` is rebuilt from the tasks at restart.
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.accepted.push(id.to_owned());
                }
                self.event(EventKind::Accepted, Some(id), Some(&worker), Some(attempt), Value::Null);
                self.release_dependents(id);
                Judged::Accepted
            }
            Verdict::Reject(reasons) => {
                let task = self.tasks.get_mut(id).expect("known");
                task.rejections += 1;
                task.spent += 1;
                task.reasons.clone_from(&reasons);
                let used = task.attempts_used();
                self.event(EventKind::Rejected, Some(id), Some(&worker), Some(attempt), json!({ "reasons": reasons }));
                if used >= self.settings.max_attempts {
                    self.transition(id, TaskState::Failed);
                    self.event(
                        EventKind::Failed,
                        Some(id),
                        Some(&worker),
                        Some(attempt),
                        json!({ "reason": "attempts exhausted" }),
                    );
                    return Judged::Failed { reasons };
                }
                if self.holding.contains_key(&worker) {
                    // It took other work meanwhile: the task goes back to the queue.
                    self.transition(id, TaskState::Ready);
                } else {
                    // Back to the same worker: it knows the task and now the reasons.
                    self.regrant(id, &worker, now);
                }
                Judged::Rejected { reasons }
            }
        }
    }

    fn release_dependents(&mut self, id: &str) {
        let Some(dependents) = self.dependents.get(id).cloned() else { return };
        for dep in dependents {
            if self.tasks.get(&dep).is_some_and(|t| t.state == TaskState::Waiting) && self.deps_met(&dep) {
                self.transition(&dep, TaskState::Ready);
            }
        }
    }

    /// A worker gives up a held task; another attempt follows unless exhausted.
    pub fn fail(
        &mut self,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        reason: &str,
        now: Instant,
    ) -> Result<TaskState, Refusal> {
        self.check_holder(worker, id, attempt)?;
        self.touch(worker, now);
        let task = self.tasks.get_mut(id).expect("checked");
        task.reasons = vec![reason.to_owned()];
        task.spent += 1;
        let attempt = task.attempt;
        let state =
            if task.attempts_used() >= self.settings.max_attempts { TaskState::Failed } else { TaskState::Ready };
        self.transition(id, state);
        self.event(
            EventKind::FailedAttempt,
            Some(id),
            Some(worker),
            Some(attempt),
            json!({ "reason": reason, "now": state.name() }),
        );
        Ok(state)
    }

    /// A worker asks the engineer a question; the task waits for `answer`.
    pub fn block(
        &mut self,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        question: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.check_holder(worker, id, attempt)?;
        self.touch(worker, now);
        let task = self.tasks.get_mut(id).expect("checked");
        task.question = Some(question.to_owned());
        let attempt = task.attempt;
        self.transition(id, TaskState::Blocked);
        self.event(EventKind::Blocked, Some(id), Some(worker), Some(attempt), json!({ "question": question }));
        Ok(())
    }

    /// The engineer answers a blocked task; it becomes ready again.
    pub fn answer(&mut self, id: &str, text: &str) -> Result<(), Refusal> {
        let task = self.tasks.get_mut(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if task.state != TaskState::Blocked {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state,
                what: "only a blocked task takes an answer",
            });
        }
        task.answer = Some(text.to_owned());
        self.transition(id, TaskState::Ready);
        self.event(EventKind::Answered, Some(id), None, None, json!({ "answer": text }));
        Ok(())
    }

    /// A held task's note of progress; extends the lease.
    pub fn progress(
        &mut self,
        worker: &str,
        id: &str,
        attempt: Option<u32>,
        note: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.check_holder(worker, id, attempt)?;
        self.touch(worker, now);
        let attempt = self.tasks[id].attempt;
        self.event(EventKind::Progress, Some(id), Some(worker), Some(attempt), json!({ "note": note }));
        Ok(())
    }

    /// A worker leaves: what it holds goes back to the queue at once.
    pub fn leave(&mut self, worker: &str) -> Vec<TaskId> {
        let held: Vec<TaskId> = self.holding.get(worker).cloned().into_iter().collect();
        for id in &held {
            let attempt = self.tasks[id].attempt;
            self.transition(id, TaskState::Ready);
            self.event(EventKind::Released, Some(id), Some(worker), Some(attempt), Value::Null);
        }
        held
    }

    /// Leases that ran out: each task goes back to ready (or fails when its
    /// attempts are used up). Returns the tasks released.
    pub fn expire(&mut self, now: Instant) -> Vec<TaskId> {
        let mut expired: Vec<TaskId> =
            self.holding.values().filter(|id| self.tasks[*id].lease_until.is_some_and(|u| u <= now)).cloned().collect();
        expired.sort_by_key(|id| self.tasks[id].seq);
        for id in &expired {
            let task = self.tasks.get_mut(id).expect("known");
            task.spent += 1;
            let task = &self.tasks[id];
            let (attempt, holder) = (task.attempt, task.holder.clone());
            let state =
                if task.attempts_used() >= self.settings.max_attempts { TaskState::Failed } else { TaskState::Ready };
            if state == TaskState::Failed {
                self.tasks.get_mut(id).expect("known").reasons = vec!["lease expired on the last attempt".to_owned()];
            }
            self.transition(id, state);
            self.event(EventKind::Expired, Some(id), holder.as_deref(), Some(attempt), json!({ "now": state.name() }));
        }
        expired
    }

    /// The earliest lease deadline, for the owner's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.holding.values().filter_map(|id| self.tasks[id].lease_until).min()
    }

    /// Cancel a task that is not finished.
    pub fn cancel(&mut self, id: &str) -> Result<(), Refusal> {
        let task = self.tasks.get(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if task.state.is_terminal() {
            return Err(Refusal::WrongState { task: id.to_owned(), state: task.state, what: "it is already finished" });
        }
        let holder = task.holder.clone();
        self.transition(id, TaskState::Cancelled);
        self.event(EventKind::Cancelled, Some(id), holder.as_deref(), None, Value::Null);
        Ok(())
    }

    /// Put a failed or cancelled task back in the queue with fresh attempts.
    pub fn retry(&mut self, id: &str) -> Result<(), Refusal> {
        let task = self.tasks.get_mut(id).ok_or_else(|| Refusal::UnknownTask(id.to_owned()))?;
        if !matches!(task.state, TaskState::Failed | TaskState::Cancelled) {
            return Err(Refusal::WrongState {
                task: id.to_owned(),
                state: task.state,
                what: "only a failed or cancelled task can be retried",
            });
        }
        // Attempts keep rising (they fence old reports); the limit counts from here.
        task.retry_base = task.attempt;
        task.spent = 0;
        let attempt = task.attempt;
        let next = if self.deps_met(id) { TaskState::Ready } else { TaskState::Waiting };
        self.transition(id, next);
        self.event(EventKind::Retried, Some(id), None, Some(attempt), Value::Null);
        Ok(())
    }

    /// Tasks that wait on a failed or cancelled dependency, with that dependency.
    pub fn stuck(&self) -> Vec<(TaskId, TaskId)> {
        let mut out = Vec::new();
        for task in self.tasks.values().filter(|t| t.state == TaskState::Waiting) {
            for dep in &task.spec.dependencies {
                if self.tasks.get(dep).is_some_and(|d| matches!(d.state, TaskState::Failed | TaskState::Cancelled)) {
                    out.push((task.spec.id.clone(), dep.clone()));
                }
            }
        }
        out.sort();
        out
    }
}

/// A dependency cycle among `specs`, as the ids along it.
fn find_cycle(specs: &[TaskSpec]) -> Option<Vec<String>> {
    let index: HashMap<&str, &TaskSpec> = specs.iter().map(|s| (s.id.as_str(), s)).collect();
    // 0 = unvisited, 1 = on the path, 2 = done.
    let mut mark: HashMap<&str, u8> = HashMap::new();
    for start in specs {
        if mark.contains_key(start.id.as_str()) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start.id.as_str(), 0)];
        mark.insert(&start.id, 1);
        while let Some((id, next)) = path.last_mut() {
            let deps = &index[*id].dependencies;
            if *next < deps.len() {
                let dep = deps[*next].as_str();
                *next += 1;
                if !index.contains_key(dep) {
                    continue;
                }
                match mark.get(dep) {
                    Some(1) => {
                        let from = path.iter().position(|(p, _)| *p == dep).expect("on path");
                        let mut cycle: Vec<String> = path[from..].iter().map(|(p, _)| (*p).to_owned()).collect();
                        cycle.push(dep.to_owned());
                        return Some(cycle);
                    }
                    Some(_) => {}
                    None => {
                        mark.insert(dep, 1);
                        path.push((dep, 0));
                    }
                }
            } else {
                mark.insert(id, 2);
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
