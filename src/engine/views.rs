//! Views of the engine's state: `mcc status`'s snapshot and a task in full,
//! as typed structs shared with the CLI (which reads them back from the
//! wire, or from the store when no hub runs); and the subscription
//! (`subscribe`, `tasks_page`): a [`Summary`], then a [`Delta`] per committed
//! batch, built from the batch's changes and an index kept by them
//! ([`Progress`]), so that their cost follows the batch, not the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ConnId, Engine, Outgoing, Role};
use crate::scheduler::{self, Changes, TaskId, TaskState};
use crate::wire::{ClientMsg, ServerMsg};

/// Everything `mcc status` shows; `snapshot` on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snapshot {
    pub root: String,
    pub workflow: Option<String>,
    pub policy: Option<String>,
    pub finished: bool,
    /// False when read from the store with no hub running.
    pub hub_running: bool,
    pub coordinator: bool,
    /// Tasks per state name, every state present.
    pub counts: BTreeMap<String, u64>,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskSummary>,
    pub stuck: Vec<Stuck>,
    pub problems: Vec<String>,
    pub log: Vec<String>,
}

impl Snapshot {
    /// Read from a `snapshot` message.
    pub fn from_wire(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("the hub sent a snapshot this mcc cannot read ({e})"))
    }

    pub fn to_wire(&self) -> Value {
        serde_json::to_value(self).expect("a snapshot always serializes")
    }

    pub fn count(&self, state: TaskState) -> u64 {
        self.counts.get(state.name()).copied().unwrap_or(0)
    }
}

/// One worker in a [`Snapshot`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerView {
    pub name: String,
    pub holding: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub score: Option<u8>,
    pub accepted: usize,
    pub last_seen_ms_ago: Option<u64>,
    pub connected: bool,
    pub waiting: bool,
    /// Why a waiting worker gets nothing now (the reason its `next` names).
    pub waiting_on: Option<String>,
    pub hand_over: bool,
}

/// One task in a [`Snapshot`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskSummary {
    pub id: String,
    pub description: String,
    pub state: String,
    pub holder: Option<String>,
    pub attempt: u32,
    pub phase: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub dependencies: Vec<String>,
    pub reasons: Vec<String>,
    pub question: Option<String>,
}

/// A task waiting on a dependency that failed or was cancelled.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stuck {
    pub task: String,
    pub dependency: String,
}

fn counts_of(tasks: &[&scheduler::Task]) -> BTreeMap<String, u64> {
    TaskState::ALL
        .iter()
        .map(|s| (s.name().to_owned(), tasks.iter().filter(|t| t.state == *s).count() as u64))
        .collect()
}

impl Engine {
    /// Everything `mcc status` shows.
    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let connected: Vec<&str> = self
            .conns
            .values()
            .filter_map(|c| if let Role::Worker(n) = &c.role { Some(n.as_str()) } else { None })
            .collect();
        let waiting: Vec<&str> = self.waiters.iter().map(|w| w.worker.as_str()).collect();
        let workers = self
            .scheduler
            .workers()
            .map(|w| {
                let holding = self.scheduler.held_by(&w.name).filter(|t| t.state == TaskState::Assigned);
                WorkerView {
                    name: w.name.clone(),
                    holding: holding.map(|t| t.spec.id.clone()),
                    lease_left_ms: holding.and_then(|t| t.lease_left(now)).map(|d| d.as_millis() as u64),
                    score: w.score,
                    accepted: w.accepted.len(),
                    last_seen_ms_ago: w.last_seen.map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    connected: connected.contains(&w.name.as_str()),
                    waiting: waiting.contains(&w.name.as_str()),
                    waiting_on: waiting.contains(&w.name.as_str()).then(|| self.waiting(&w.name).text),
                    hand_over: w.must_hand_over(),
                }
            })
            .collect();
        Snapshot {
            root: self.config.root.display().to_string(),
            workflow: self.workflow_path.as_ref().map(|p| p.display().to_string()),
            policy: Some(self.policy.name()),
            finished: self.all_done(),
            hub_running: true,
            coordinator: self.coordinator.is_some(),
            counts: counts_of(&self.scheduler.tasks().collect::<Vec<_>>()),
            workers,
            tasks: self.scheduler.tasks_in_order().into_iter().map(|t| task_summary(t, now)).collect(),
            stuck: self.scheduler.stuck().into_iter().map(|(task, dependency)| Stuck { task, dependency }).collect(),
            problems: self.problems.clone(),
            log: self.log.clone(),
        }
    }
}

pub(super) fn task_summary(t: &scheduler::Task, now: Instant) -> TaskSummary {
    TaskSummary {
        id: t.spec.id.clone(),
        description: t.spec.description.clone(),
        state: t.state.name().to_owned(),
        holder: t.holder.clone(),
        attempt: t.attempt,
        phase: t.phase.clone(),
        lease_left_ms: t.lease_left(now).map(|d| d.as_millis() as u64),
        dependencies: t.spec.dependencies.clone(),
        reasons: t.reasons.clone(),
        question: t.question.clone(),
    }
}

pub(super) fn task_json(t: &scheduler::Task, now: Instant) -> Value {
    let mut v = serde_json::to_value(task_summary(t, now)).expect("serializes");
    let map = v.as_object_mut().expect("object");
    map.insert("task".into(), t.to_wire());
    map.insert("answer".into(), json!(t.answer));
    map.insert("report".into(), serde_json::to_value(&t.report).expect("serializes"));
    map.insert("rejections".into(), json!(t.rejections));
    map.insert("createdAt".into(), json!(t.created_at));
    map.insert("completedAt".into(), json!(t.completed_at));
    v
}

/// The snapshot of a project whose hub is not running, read from its store
/// (read-only): tasks, counts and whether the run finished. `None` when the
/// project has no store.
pub fn stored_snapshot(root: &Path) -> Option<Snapshot> {
    let dir = root.join(".mcc");
    if !dir.join("state.db").is_file() {
        return None;
    }
    let store = crate::store::Store::open_read_only(&dir).ok()?;
    let (tasks, _workers) = store.load().ok()?;
    let now = Instant::now();
    Some(Snapshot {
        root: root.display().to_string(),
        workflow: store.meta("workflow_path").ok().flatten(),
        finished: store.meta("run_finished").ok().flatten().as_deref() == Some("true"),
        counts: counts_of(&tasks.iter().collect::<Vec<_>>()),
        tasks: tasks.iter().map(|t| task_summary(t, now)).collect(),
        ..Snapshot::default()
    })
}

/// Whether the store under `root` says the run finished (read-only).
pub fn stored_finished(root: &Path) -> bool {
    let dir = root.join(".mcc");
    dir.join("state.db").is_file()
        && crate::store::Store::open_read_only(&dir).ok().and_then(|s| s.meta("run_finished").ok().flatten()).as_deref()
            == Some("true")
}

/// What a subscriber is told first: everything but the task list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Summary {
    pub root: String,
    pub workflow: Option<String>,
    pub policy: Option<String>,
    pub finished: bool,
    pub hub_running: bool,
    pub coordinator: bool,
    /// Tasks per state name, every state present.
    pub counts: BTreeMap<String, u64>,
    /// Per phase (`-` for tasks of no phase), tasks per state name present.
    pub phases: BTreeMap<String, BTreeMap<String, u64>>,
    pub workers: Vec<WorkerView>,
    /// Tasks held now (assigned or submitted), with their lease and attempt.
    pub in_flight: Vec<TaskSummary>,
    /// Blocked tasks with their question, waiting for `mcc answer` (the first 100).
    pub questions: Vec<TaskSummary>,
    pub stuck: Vec<Stuck>,
    pub problems: Vec<String>,
    pub log: Vec<String>,
}

impl Summary {
    pub fn from_wire(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("the hub sent a summary this mcc cannot read ({e})"))
    }

    pub fn count(&self, state: TaskState) -> u64 {
        self.counts.get(state.name()).copied().unwrap_or(0)
    }

    /// Fold a delta in: what a subscriber does with each one.
    pub fn apply(&mut self, delta: &Delta) {
        self.counts.clone_from(&delta.counts);
        self.phases.clone_from(&delta.phases);
        self.finished = delta.finished;
        self.workflow.clone_from(&delta.workflow);
        for w in &delta.workers {
            match self.workers.iter_mut().find(|have| have.name == w.name) {
                Some(have) => *have = w.clone(),
                None => self.workers.push(w.clone()),
            }
        }
        for t in &delta.tasks {
            let held = TaskState::ALL.iter().any(|s| s.in_flight() && s.name() == t.state);
            upsert(&mut self.in_flight, t, held);
            upsert(&mut self.questions, t, t.state == TaskState::Blocked.name());
        }
        if let Some(p) = &delta.problems {
            self.problems.clone_from(p);
        }
        if let Some(l) = &delta.log {
            self.log.clone_from(l);
        }
        if let Some(s) = &delta.stuck {
            self.stuck.clone_from(s);
        }
    }
}

fn upsert(list: &mut Vec<TaskSummary>, task: &TaskSummary, belongs: bool) {
    let at = list.iter().position(|t| t.id == task.id);
    match (at, belongs) {
        (Some(i), true) => list[i] = task.clone(),
        (Some(i), false) => {
            list.remove(i);
        }
        (None, true) => list.push(task.clone()),
        (None, false) => {}
    }
}

/// What one committed batch changed, pushed to every subscriber. Counts are
/// whole (a subscriber needs no task list to keep them); tasks, workers and
/// events are only those the batch touched; problems, log and stuck come
/// only when they changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Delta {
    pub counts: BTreeMap<String, u64>,
    pub phases: BTreeMap<String, BTreeMap<String, u64>>,
    pub finished: bool,
    pub workflow: Option<String>,
    pub tasks: Vec<TaskSummary>,
    pub workers: Vec<WorkerView>,
    pub events: Vec<EventView>,
    /// Events of this interval beyond what one delta carries (the event log has them all).
    pub events_left_out: u64,
    pub problems: Option<Vec<String>>,
    pub log: Option<Vec<String>>,
    pub stuck: Option<Vec<Stuck>>,
}

impl Delta {
    pub fn from_wire(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("the hub sent a delta this mcc cannot read ({e})"))
    }
}

/// One event of the log as a subscriber sees it (`assigned`, `accepted`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventView {
    pub kind: String,
    pub task: Option<String>,
    pub worker: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
}

/// One page of tasks, the answer to `tasks_page`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Page {
    pub state: Option<String>,
    pub tasks: Vec<TaskSummary>,
    /// Tasks of that state (or all) in the store.
    pub total: u64,
    /// Pass as `after` for the next page; `None` on the last.
    pub next_after: Option<String>,
}

impl Page {
    pub fn from_wire(value: &Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|e| format!("the hub sent a page this mcc cannot read ({e})"))
    }
}

/// Deltas are pushed at most this often: what batches change in between is
/// folded into one, so progress costs the engine the same at 10 or 10,000
/// batches a second. A finished run is pushed at once.
pub const DELTA_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Events one delta carries at most; more are counted in `eventsLeftOut`.
const EVENTS_PER_DELTA: usize = 1000;

/// The longest description a delta carries; `mcc tasks show` has it whole.
const DESCRIPTION_IN_DELTA: usize = 200;
/// The most tasks one `tasks_page` returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 50;

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    state: TaskState,
    phase: Option<String>,
    holder: Option<String>,
}

/// An index of every task's state, phase and holder, in creation order,
/// kept up to date from each batch's [`Changes`]: counts, pages and who
/// holds what without a walk over the store. Built on first use (the first
/// `subscribe` or `tasks_page`), so a hub nobody watches pays nothing.
#[derive(Debug, Default)]
#[allow(clippy::struct_excessive_bools, reason = "independent flags of one index, not a state machine")]
pub struct Progress {
    built: bool,
    entries: HashMap<TaskId, Entry>,
    by_state: BTreeMap<TaskState, BTreeSet<(u64, TaskId)>>,
    all: BTreeSet<(u64, TaskId)>,
    phases: BTreeMap<String, BTreeMap<TaskState, u64>>,
    holders: BTreeMap<String, TaskId>,
    subscribers: Vec<ConnId>,
    /// What subscribers were last told, to send only what changed.
    sent_problems: Vec<String>,
    sent_log: Vec<String>,
    sent_presence: Vec<(String, bool, bool)>,
    sent_finished: bool,
    stuck: Vec<Stuck>,
    /// Changed since the last delta, waiting for the next one.
    pending_tasks: BTreeSet<TaskId>,
    pending_workers: BTreeSet<String>,
    pending_events: Vec<EventView>,
    events_left_out: u64,
    stuck_changed: bool,
    /// A batch came since the last delta (presence, problems or the log may have changed).
    batch_since: bool,
    last_delta: Option<Instant>,
}

impl Progress {
    fn build(&mut self, scheduler: &scheduler::Scheduler) {
        if self.built {
            return;
        }
        self.built = true;
        for t in scheduler.tasks() {
            self.index(&t.spec.id, Some(t));
        }
        self.stuck = stuck_of(scheduler);
    }

    /// Bring one task's entry up to date (`None`: it is gone).
    fn index(&mut self, id: &str, task: Option<&scheduler::Task>) {
        if let Some(old) = self.entries.remove(id) {
            let key = (old.seq, id.to_owned());
            self.by_state.entry(old.state).or_default().remove(&key);
            self.all.remove(&key);
            let phase = old.phase.unwrap_or_else(|| "-".into());
            if let Some(counts) = self.phases.get_mut(&phase)
                && let Some(n) = counts.get_mut(&old.state)
            {
                *n = n.saturating_sub(1);
            }
            if let Some(h) = old.holder
                && self.holders.get(&h).map(String::as_str) == Some(id)
            {
                self.holders.remove(&h);
            }
        }
        let Some(t) = task else { return };
        let key = (t.seq, id.to_owned());
        self.by_state.entry(t.state).or_default().insert(key.clone());
        self.all.insert(key);
        *self.phases.entry(t.phase.clone().unwrap_or_else(|| "-".into())).or_default().entry(t.state).or_default() += 1;
        let holder = t.holder.clone().filter(|_| t.state.in_flight());
        if let Some(h) = &holder {
            self.holders.insert(h.clone(), id.to_owned());
        }
        self.entries.insert(id.to_owned(), Entry { seq: t.seq, state: t.state, phase: t.phase.clone(), holder });
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        TaskState::ALL
            .iter()
            .map(|s| (s.name().to_owned(), self.by_state.get(s).map_or(0, |set| set.len() as u64)))
            .collect()
    }

    fn phase_counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.phases
            .iter()
            .map(|(phase, counts)| {
                let present = counts.iter().filter(|(_, n)| **n > 0).map(|(s, n)| (s.name().to_owned(), *n)).collect();
                (phase.clone(), present)
            })
            .filter(|(_, counts): &(String, BTreeMap<String, u64>)| !counts.is_empty())
            .collect()
    }

    /// When the engine must wake to push what is pending, if anything is.
    pub fn next_push(&self) -> Option<Instant> {
        let pending = self.batch_since
            || !self.pending_tasks.is_empty()
            || !self.pending_workers.is_empty()
            || !self.pending_events.is_empty();
        (pending && !self.subscribers.is_empty())
            .then(|| self.last_delta.map_or_else(Instant::now, |at| at + DELTA_EVERY))
    }

    fn ids(&self, state: TaskState, limit: usize) -> Vec<TaskId> {
        self.by_state.get(&state).into_iter().flatten().take(limit).map(|(_, id)| id.clone()).collect()
    }
}

fn stuck_of(scheduler: &scheduler::Scheduler) -> Vec<Stuck> {
    scheduler.stuck().into_iter().map(|(task, dependency)| Stuck { task, dependency }).collect()
}

fn short(mut summary: TaskSummary) -> TaskSummary {
    if summary.description.len() > DESCRIPTION_IN_DELTA {
        let mut end = DESCRIPTION_IN_DELTA;
        while !summary.description.is_char_boundary(end) {
            end -= 1;
        }
        summary.description.truncate(end);
        summary.description.push('…');
    }
    summary
}

impl Engine {
    /// `subscribe` and `tasks_page`.
    pub(super) fn view_request(&mut self, conn: ConnId, msg: ClientMsg, now: Instant) {
        self.progress.build(&self.scheduler);
        match msg {
            ClientMsg::Subscribe {} => {
                let summary = serde_json::to_value(self.summary(now)).expect("a summary serializes");
                if !self.progress.subscribers.contains(&conn) {
                    self.progress.subscribers.push(conn);
                }
                self.send(conn, ServerMsg::Summary { summary });
            }
            ClientMsg::TasksPage { state, limit, after } => match self.page(state, limit, after.as_deref(), now) {
                Ok(page) => {
                    let page = serde_json::to_value(page).expect("a page serializes");
                    self.send(conn, ServerMsg::TasksPage { page });
                }
                Err(e) => self.send(conn, ServerMsg::error_code(e, "bad_page")),
            },
            _ => {}
        }
    }

    fn worker_view(&self, w: &scheduler::Worker, now: Instant, connected: bool, waiting: bool) -> WorkerView {
        let holding = self.progress.holders.get(&w.name).and_then(|id| self.scheduler.task(id));
        WorkerView {
            name: w.name.clone(),
            holding: holding.map(|t| t.spec.id.clone()),
            lease_left_ms: holding.and_then(|t| t.lease_left(now)).map(|d| d.as_millis() as u64),
            score: w.score,
            accepted: w.accepted.len(),
            last_seen_ms_ago: w.last_seen.map(|s| now.saturating_duration_since(s).as_millis() as u64),
            connected,
            waiting,
            waiting_on: waiting.then(|| self.waiting(&w.name).text),
            hand_over: w.must_hand_over(),
        }
    }

    /// Worker name, connected, waiting: of every worker known, in name order.
    fn presence(&self) -> Vec<(String, bool, bool)> {
        let connected: BTreeSet<&str> = self
            .conns
            .values()
            .filter_map(|c| if let Role::Worker(n) = &c.role { Some(n.as_str()) } else { None })
            .collect();
        let waiting: BTreeSet<&str> = self.waiters.iter().map(|w| w.worker.as_str()).collect();
        self.scheduler
            .workers()
            .map(|w| (w.name.clone(), connected.contains(w.name.as_str()), waiting.contains(w.name.as_str())))
            .collect()
    }

    fn summary(&mut self, now: Instant) -> Summary {
        let presence = self.presence();
        let workers = presence
            .iter()
            .filter_map(|(name, c, w)| self.scheduler.worker(name).map(|worker| self.worker_view(worker, now, *c, *w)))
            .collect();
        let task = |id: &TaskId| self.scheduler.task(id).map(|t| short(task_summary(t, now)));
        let in_flight = TaskState::ALL
            .iter()
            .filter(|s| s.in_flight())
            .flat_map(|s| self.progress.ids(*s, usize::MAX))
            .filter_map(|id| task(&id))
            .collect();
        let questions = self.progress.ids(TaskState::Blocked, 100).iter().filter_map(task).collect();
        let summary = Summary {
            root: self.config.root.display().to_string(),
            workflow: self.workflow_path.as_ref().map(|p| p.display().to_string()),
            policy: Some(self.policy.name()),
            finished: self.all_done(),
            hub_running: true,
            coordinator: self.coordinator.is_some(),
            counts: self.progress.counts(),
            phases: self.progress.phase_counts(),
            workers,
            in_flight,
            questions,
            stuck: self.progress.stuck.clone(),
            problems: self.problems.clone(),
            log: self.log.clone(),
        };
        self.progress.sent_presence = presence;
        summary
    }

    fn page(
        &self,
        state: Option<String>,
        limit: Option<usize>,
        after: Option<&str>,
        now: Instant,
    ) -> Result<Page, String> {
        let set = match &state {
            Some(name) => {
                let Some(state) = TaskState::ALL.iter().find(|s| s.name() == name) else {
                    let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.name()).collect();
                    return Err(format!("`tasks_page`: state `{name}` is not one of {}", names.join(", ")));
                };
                self.progress.by_state.get(state)
            }
            None => Some(&self.progress.all),
        };
        let empty = BTreeSet::new();
        let set = set.unwrap_or(&empty);
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let from = match after {
            Some(id) => {
                let Some(entry) = self.progress.entries.get(id) else {
                    return Err(format!("`tasks_page`: `after` names task `{id}`, which this hub does not have"));
                };
                std::ops::Bound::Excluded((entry.seq, id.to_owned()))
            }
            None => std::ops::Bound::Unbounded,
        };
        let mut keys = set.range((from, std::ops::Bound::Unbounded));
        let tasks: Vec<TaskSummary> = keys
            .by_ref()
            .take(limit)
            .filter_map(|(_, id)| self.scheduler.task(id).map(|t| task_summary(t, now)))
            .collect();
        let next_after = keys.next().and(tasks.last().map(|t| t.id.clone()));
        Ok(Page { state, tasks, total: set.len() as u64, next_after })
    }

    /// After a commit: bring the index up to date with the batch's changes
    /// and, at most every [`DELTA_EVERY`], push what changed to every
    /// subscriber. Costs what the batch changed (plus, per push, one look at
    /// the workers' presence), nothing when the index was never asked for.
    pub(super) fn publish(&mut self, changes: &Changes, finished: bool) {
        if !self.progress.built {
            return;
        }
        let now = Instant::now();
        for id in &changes.tasks {
            let old_holder = self.progress.entries.get(id).and_then(|e| e.holder.clone());
            let task = self.scheduler.task(id);
            if let Some(t) = task {
                self.progress.stuck_changed |=
                    matches!(t.state, TaskState::Failed | TaskState::Cancelled | TaskState::Waiting);
                self.progress.pending_workers.extend(t.holder.clone());
            }
            self.progress.pending_workers.extend(old_holder);
            self.progress.index(id, task);
        }
        self.progress.subscribers.retain(|c| self.conns.contains_key(c));
        if self.progress.subscribers.is_empty() {
            self.progress.pending_tasks.clear();
            self.progress.pending_workers.clear();
            self.progress.pending_events.clear();
            if self.progress.stuck_changed {
                self.progress.stuck = stuck_of(&self.scheduler);
                self.progress.stuck_changed = false;
            }
            return;
        }
        self.progress.pending_tasks.extend(changes.tasks.iter().cloned());
        self.progress.pending_workers.extend(changes.workers.iter().cloned());
        for e in &changes.events {
            if self.progress.pending_events.len() < EVENTS_PER_DELTA {
                self.progress.pending_events.push(EventView {
                    kind: e.kind.to_owned(),
                    task: e.task.clone(),
                    worker: e.worker.clone(),
                    attempt: e.attempt,
                    detail: e.detail.clone(),
                });
            } else {
                self.progress.events_left_out += 1;
            }
        }
        let due = self.progress.last_delta.is_none_or(|at| now >= at + DELTA_EVERY);
        if !due && finished == self.progress.sent_finished {
            self.progress.batch_since = true;
            return;
        }
        self.push_delta(now, finished);
    }

    fn push_delta(&mut self, now: Instant, finished: bool) {
        self.progress.batch_since = false;
        let mut touched_workers = std::mem::take(&mut self.progress.pending_workers);
        let stuck = if self.progress.stuck_changed {
            self.progress.stuck_changed = false;
            self.progress.stuck = stuck_of(&self.scheduler);
            Some(self.progress.stuck.clone())
        } else {
            let entries = &self.progress.entries;
            let before = self.progress.stuck.len();
            self.progress.stuck.retain(|s| entries.get(&s.task).is_some_and(|e| e.state == TaskState::Waiting));
            (self.progress.stuck.len() != before).then(|| self.progress.stuck.clone())
        };
        let presence = self.presence();
        for p in &presence {
            if !self.progress.sent_presence.contains(p) {
                touched_workers.insert(p.0.clone());
            }
        }
        let problems = (self.problems != self.progress.sent_problems).then(|| self.problems.clone());
        let log = (self.log != self.progress.sent_log).then(|| self.log.clone());
        let tasks = std::mem::take(&mut self.progress.pending_tasks);
        let events = std::mem::take(&mut self.progress.pending_events);
        let nothing = tasks.is_empty()
            && touched_workers.is_empty()
            && events.is_empty()
            && problems.is_none()
            && log.is_none()
            && stuck.is_none()
            && finished == self.progress.sent_finished;
        self.progress.sent_presence = presence;
        if nothing {
            return;
        }
        let workers = self
            .progress
            .sent_presence
            .iter()
            .filter(|(name, ..)| touched_workers.contains(name))
            .filter_map(|(name, c, w)| self.scheduler.worker(name).map(|worker| self.worker_view(worker, now, *c, *w)))
            .collect();
        let delta = Delta {
            counts: self.progress.counts(),
            phases: self.progress.phase_counts(),
            finished,
            workflow: self.workflow_path.as_ref().map(|p| p.display().to_string()),
            tasks: tasks.iter().filter_map(|id| self.scheduler.task(id).map(|t| short(task_summary(t, now)))).collect(),
            workers,
            events,
            events_left_out: std::mem::take(&mut self.progress.events_left_out),
            stuck,
            problems,
            log,
        };
        if let Some(p) = &delta.problems {
            self.progress.sent_problems.clone_from(p);
        }
        if let Some(l) = &delta.log {
            self.progress.sent_log.clone_from(l);
        }
        self.progress.sent_finished = finished;
        self.progress.last_delta = Some(now);
        let delta = serde_json::to_value(delta).expect("a delta serializes");
        // Sent as any answer is: a subscriber that reads nothing is cut off as any slow reader is.
        for &conn in &self.progress.subscribers {
            self.outgoing.push((conn, Outgoing::Msg(ServerMsg::Delta { delta: delta.clone() })));
        }
    }
}
