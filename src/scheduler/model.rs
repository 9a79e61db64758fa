//! The scheduler's model: where a task is in its life and what the hub
//! knows about it, and the workers. A task's state, holder, attempt, lease
//! and index slots are private to this file: only [`Scheduler::transition`]
//! (and the grant built on it) change them, so the indexes and the holder
//! map always agree with the tasks. Readers use the accessor methods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Scheduler, TaskId};
use crate::event::EventKind;
use crate::task::{Report, TaskSpec};

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

/// A task and everything the hub knows about it. Its state, holder,
/// attempt and lease are read through methods and changed only by
/// [`Scheduler::transition`] and the grant after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The task as it was added; never changes.
    pub spec: TaskSpec,
    /// Creation order; FIFO assignment follows it.
    seq: u64,
    state: TaskState,
    /// How many times the task was granted; the fencing token of reports.
    attempt: u32,
    holder: Option<String>,
    /// Who held it last, to explain a late report.
    last_holder: Option<String>,
    /// Lease length for this task.
    lease_ms: u64,
    /// When the current lease ends (monotonic; the store keeps a wall-clock copy).
    #[serde(skip)]
    lease_until: Option<Instant>,
    /// The workflow phase that created it, if any.
    phase: Option<String>,
    /// Why the last result was rejected or why the task failed.
    pub(super) reasons: Vec<String>,
    /// The worker's question while blocked.
    pub(super) question: Option<String>,
    /// The engineer's answer to the last question.
    pub(super) answer: Option<String>,
    /// The last report received for this task.
    pub(super) report: Option<Report>,
    created_at: String,
    pub(super) completed_at: Option<String>,
    pub(super) rejections: u32,
    /// Kept so older stores load; attempts are counted by `spent` now.
    #[serde(default)]
    retry_base: u32,
    /// Grants that ended without acceptance (expired, failed, rejected)
    /// since creation or the last manual retry: what `max_attempts` limits.
    /// Blocking, answering and leaving cost none.
    #[serde(default)]
    pub(super) spent: u32,
    /// Every report applied, by attempt: a report for an attempt already
    /// here is answered from this record and never judged twice, also
    /// after a restart.
    #[serde(default)]
    pub(super) applied: BTreeMap<u32, Applied>,
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
    /// What the attempt cost, as its report said: stored with the task, so
    /// what a run spent is counted again from the tasks after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::wire::Usage>,
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
    /// Creation order; FIFO assignment follows it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn state(&self) -> TaskState {
        self.state
    }

    /// How many times the task was granted; the fencing token of reports.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Who holds it (assigned), or waits for its verdict (submitted).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// Who held it last, to explain a late report.
    pub fn last_holder(&self) -> Option<&str> {
        self.last_holder.as_deref()
    }

    /// Lease length for this task.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// When the current lease ends, if held.
    pub fn lease_until(&self) -> Option<Instant> {
        self.lease_until
    }

    /// The workflow phase that created it, if any.
    pub fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }

    /// Why the last result was rejected or why the task failed.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The worker's question while blocked.
    pub fn question(&self) -> Option<&str> {
        self.question.as_deref()
    }

    /// The engineer's answer to the last question.
    pub fn answer(&self) -> Option<&str> {
        self.answer.as_deref()
    }

    /// The last report received for this task.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    pub fn created_at(&self) -> &str {
        &self.created_at
    }

    pub fn completed_at(&self) -> Option<&str> {
        self.completed_at.as_deref()
    }

    pub fn rejections(&self) -> u32 {
        self.rejections
    }

    /// Every report applied, by attempt.
    pub fn applied(&self) -> &BTreeMap<u32, Applied> {
        &self.applied
    }

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

    /// Time left on the lease, if held.
    pub fn lease_left(&self, now: Instant) -> Option<Duration> {
        self.lease_until.map(|until| until.saturating_duration_since(now))
    }

    /// A stored task's lease, resumed with the time it had left: set before
    /// the task enters a scheduler.
    pub fn resume_lease(&mut self, until: Option<Instant>) {
        self.lease_until = until;
    }

    /// Its group in the scheduler's index: the tasks writing the same files.
    pub(super) fn group(&self) -> usize {
        self.group
    }

    /// Any message of the holder extends its lease.
    pub(super) fn extend_lease(&mut self, now: Instant) {
        self.lease_until = Some(now + Duration::from_millis(self.lease_ms));
    }

    /// A manual retry: attempts keep rising (they fence old reports); the
    /// limit counts from here.
    pub(super) fn restart_attempts(&mut self) {
        self.retry_base = self.attempt;
        self.spent = 0;
    }
}

/// A worker, known by name; connections come and go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    pub(super) name: String,
    /// The last `contextEfficiencyScore` it reported.
    pub(super) score: Option<u8>,
    /// Tasks it finished and had accepted, in order. Not stored in the
    /// worker's row (it would grow with every task): rebuilt from the tasks
    /// at restart.
    #[serde(skip)]
    pub(super) accepted: Vec<TaskId>,
    pub(super) joined_at: String,
    #[serde(skip)]
    pub(super) last_seen: Option<Instant>,
    /// What it said it can do (`--can rust,docs`), matched against tasks' `needs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) can: Vec<String>,
    /// The model it said it runs (`--model opus`), for the workflow's `assign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<String>,
}

impl Worker {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last `contextEfficiencyScore` it reported.
    pub fn score(&self) -> Option<u8> {
        self.score
    }

    /// Tasks it finished and had accepted, in order.
    pub fn accepted(&self) -> &[TaskId] {
        &self.accepted
    }

    pub fn joined_at(&self) -> &str {
        &self.joined_at
    }

    /// When it last sent anything.
    pub fn last_seen(&self) -> Option<Instant> {
        self.last_seen
    }

    /// What it said it can do (`--can`), in the order it said it.
    pub fn can(&self) -> &[String] {
        &self.can
    }

    /// The model it said it runs (`--model`).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// A chat whose context score fell to 2 or less should take no more work.
    pub fn must_hand_over(&self) -> bool {
        self.score.is_some_and(|s| s <= 2)
    }
}

impl Scheduler {
    /// Make a task of `spec`, waiting, and enter it in the indexes; the
    /// caller records it. `created_at` unless the spec carries its own.
    pub(super) fn create(&mut self, spec: TaskSpec, phase: Option<&str>, created_at: &str) -> TaskId {
        let lease_ms = spec
            .lease
            .as_deref()
            .and_then(|l| humantime::parse_duration(l).ok())
            .unwrap_or(self.settings.lease)
            .as_millis() as u64;
        let id = spec.id.clone();
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
                .map_or_else(|| created_at.to_owned(), str::to_owned),
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
        id
    }

    /// Index one stored task; the caller inserts it.
    pub(super) fn restore_task(&mut self, task: &mut Task) {
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
        if let Some(race) = super::race_of(&task.spec) {
            self.racers.entry(race.to_owned()).or_default().push(task.spec.id.clone());
        }
    }

    /// The one place a task's state changes: the ready queue, the holder
    /// index, the reservations and the lease follow from it.
    pub(super) fn transition(&mut self, id: &str, state: TaskState) {
        let task = self.tasks.get_mut(id).expect("known task");
        // Leaving flight frees a slot under the workflow's caps.
        let frees_cap = task.state.in_flight() && !state.in_flight() && !self.caps.is_empty();
        self.index.leave(id, task.seq, task.group, task.phase_slot, task.state, state);
        if task.state == TaskState::Assigned
            && let Some(holder) = &task.holder
        {
            self.holding.remove(holder);
        }
        task.state = state;
        self.index.enter(id, task.seq, task.group, task.phase_slot, state);
        // A grant can answer its holder's wait; a finished task can finish the run.
        if state == TaskState::Assigned || state.is_terminal() || self.index.take_grantable_grew() || frees_cap {
            self.work_changed = true;
        }
        if state != TaskState::Assigned {
            task.lease_until = None;
        }
        // A submitted task keeps its holder for the verdict.
        if !state.in_flight() {
            self.company.remove(id);
        }
        if !state.in_flight() && task.holder.is_some() {
            task.last_holder = task.holder.take();
        }
        // A racer's move, or its race's end (cancelled), is the race's to decide.
        let race = super::race_of(&task.spec)
            .map(str::to_owned)
            .or_else(|| (super::race_size(&task.spec).is_some() && state != TaskState::Ready).then(|| id.to_owned()));
        let racers = if state == TaskState::Ready { super::race_size(&task.spec) } else { None };
        self.touch_task(id);
        if let Some(race) = race {
            self.races_moved.insert(race);
        }
        // A race never waits in the queue itself: its racers do.
        if let Some(n) = racers {
            self.start_race(id, n);
        }
    }

    pub(super) fn regrant(&mut self, id: &str, worker: &str, now: Instant) {
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
        self.keep_company(id, worker);
        self.holding.insert(worker.to_owned(), id.to_owned());
        self.event(EventKind::Assigned, Some(id), Some(worker), Some(attempt), Value::Null);
    }
}
