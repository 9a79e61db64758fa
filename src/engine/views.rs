//! Views of the engine's state: `mcc status`'s snapshot and a task in full,
//! as typed structs shared with the CLI (which reads them back from the
//! wire, or from the store when no hub runs); and the subscription
//! (`subscribe`, `tasks_page`): a [`Summary`], then a [`Delta`] per committed
//! batch in the view the subscriber asked for ([`SubscriptionView`]), built
//! from the batch's changes and an index kept by them ([`Progress`]), so
//! that their cost follows the batch, not the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ConnId, Engine, Outgoing, Role};
use crate::scheduler::{self, Changes, TaskId, TaskState};
use crate::wire::{ClientMsg, RawJson, ServerMsg, SubscriptionView};

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
    let layout = crate::layout::Layout::of_root(root);
    if !layout.state_db().is_file() {
        return None;
    }
    let store = crate::store::Store::open_read_only(layout.dir()).ok()?;
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
    let layout = crate::layout::Layout::of_root(root);
    layout.state_db().is_file()
        && crate::store::Store::open_read_only(layout.dir())
            .ok()
            .and_then(|s| s.meta("run_finished").ok().flatten())
            .as_deref()
            == Some("true")
}

/// What a subscriber is told first: everything but the task list.
/// A [`SubscriptionView::Progress`] subscriber is not told `in_flight`: its
/// summary has none, and its deltas carry only the tasks that became or
/// stopped being questions.
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
    pub fn from_wire(value: &RawJson) -> Result<Self, String> {
        serde_json::from_str(value.get()).map_err(|e| format!("the hub sent a delta this mcc cannot read ({e})"))
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
pub const DELTA_EVERY: Duration = Duration::from_millis(100);
/// Events one delta carries at most; more are counted in `eventsLeftOut`.
/// A thousand a second is past what anyone reads as it goes (the page only
/// takes them as a sign to redraw its timeline); the event log has them all,
/// and at full speed each event written costs the engine time.
const EVENTS_PER_DELTA: usize = 100;

/// The longest description a delta carries; `mcc tasks show` has it whole.
const DESCRIPTION_IN_DELTA: usize = 200;
/// The most tasks one `tasks_page` returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 50;
/// Questions a summary carries at most.
const QUESTIONS_IN_SUMMARY: usize = 100;

/// What the index last counted of one task, found by its creation number.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// `None`: not counted yet.
    state: Option<TaskState>,
    phase: u32,
    /// Listed in `pending_tasks`.
    pending: bool,
}

/// What subscribers need beyond the scheduler's own indexes (which give
/// tasks by state in creation order, their counts and each worker's task):
/// counts per phase, kept from each batch's [`Changes`] through a table by
/// the scheduler's creation number, and what changed since the last delta.
/// Built on the first `subscribe`, so a hub nobody watched pays nothing; a
/// change costs a look-up and a compare when nobody watches now.
#[derive(Debug, Default)]
#[allow(clippy::struct_excessive_bools, reason = "independent flags of one index, not a state machine")]
pub struct Progress {
    built: bool,
    /// By task `seq` (the scheduler numbers tasks 0, 1, 2, ... as they come).
    entries: Vec<Entry>,
    /// Phase names (`-` for no phase) and their numbers in `entries`.
    phase_names: Vec<String>,
    phase_ids: HashMap<String, u32>,
    /// Per phase number, tasks per state (indexed as `TaskState::ALL`).
    phase_counts: Vec<[u64; TaskState::ALL.len()]>,
    /// Each with the view it asked for.
    subscribers: Vec<(ConnId, SubscriptionView)>,
    /// What subscribers were last told, to send only what changed.
    sent_problems: Vec<String>,
    sent_log: Vec<String>,
    sent_presence: Vec<(String, bool, bool)>,
    sent_finished: bool,
    stuck: Vec<Stuck>,
    /// Tasks changed since the last delta, with their `seq`: ids only, the
    /// views are made when the delta is. Listed only for full subscribers.
    pending_tasks: Vec<(u64, TaskId)>,
    /// Tasks that became or stopped being blocked since the last delta (maybe
    /// twice): what a progress subscriber needs to keep its questions.
    pending_questions: Vec<(u64, TaskId)>,
    /// A task moved since the last delta: counts and phases changed.
    moved_since: bool,
    pending_workers: BTreeSet<String>,
    /// The events of the interval, already JSON and comma-separated: each is
    /// written once, from the scheduler's own, instead of copied.
    pending_events: Vec<u8>,
    pending_event_count: usize,
    events_left_out: u64,
    stuck_changed: bool,
    /// A batch came since the last delta (presence, problems or the log may have changed).
    batch_since: bool,
    last_delta: Option<Instant>,
    /// Set when the hub runs with `MCC_PROGRESS_CPU` in its environment.
    meter: Option<Meter>,
}

/// The engine thread's CPU time in [`Engine::publish`], for the
/// `progress_cost` bench (docs/benchmarks.md): with `MCC_PROGRESS_CPU` set,
/// the hub writes `.mcc/progress-cpu` at most every [`DELTA_EVERY`] as
/// `key=value` lines. Measured in-process, it is not blurred by whatever
/// else the shared machine runs, as two runs compared would be.
#[derive(Debug)]
struct Meter {
    spent: Duration,
    calls: u64,
    /// What one reading of the clock costs (about one falls inside each call's `spent`).
    clock: Duration,
    written: Option<Instant>,
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

impl Meter {
    fn new() -> Self {
        let start = thread_cpu();
        for _ in 0..1000 {
            std::hint::black_box(thread_cpu());
        }
        Self { spent: Duration::ZERO, calls: 0, clock: thread_cpu().saturating_sub(start) / 1001, written: None }
    }

    fn add(&mut self, spent: Duration, file: &Path) {
        self.spent += spent;
        self.calls += 1;
        if self.written.is_none_or(|at| at.elapsed() >= DELTA_EVERY) {
            self.written = Some(Instant::now());
            let text = format!(
                "publish_ns={}\ncalls={}\nclock_ns={}\n",
                self.spent.as_nanos(),
                self.calls,
                self.clock.as_nanos()
            );
            // A bench aid: a failed write only leaves the figure out.
            let _ = std::fs::write(file, text);
        }
    }
}

fn slot(state: TaskState) -> usize {
    state as usize
}

impl Progress {
    fn build(&mut self, scheduler: &scheduler::Scheduler) {
        if self.built {
            return;
        }
        self.built = true;
        if std::env::var_os("MCC_PROGRESS_CPU").is_some() {
            self.meter = Some(Meter::new());
        }
        for t in scheduler.tasks() {
            self.count(t);
        }
        self.stuck_changed = true;
    }

    /// Count `t` where it is now. Returns `None` if that is where it was,
    /// else `Some` of where it was (`None` when new to the index).
    #[allow(clippy::option_option, reason = "unmoved, or moved from a state or from nowhere")]
    fn count(&mut self, t: &scheduler::Task) -> Option<Option<TaskState>> {
        // Numbers are dense (one per task, from 0), so the table is as long as the store.
        let at = usize::try_from(t.seq).expect("a task number fits in memory");
        if at >= self.entries.len() {
            self.entries.resize(at + 1, Entry::default());
        }
        let old = self.entries[at].state;
        if old == Some(t.state) {
            return None;
        }
        let phase = match old {
            Some(state) => {
                let phase = self.entries[at].phase;
                let n = &mut self.phase_counts[phase as usize][slot(state)];
                *n = n.saturating_sub(1);
                phase
            }
            None => self.phase_id(t.phase.as_deref().unwrap_or("-")),
        };
        self.phase_counts[phase as usize][slot(t.state)] += 1;
        self.entries[at] = Entry { state: Some(t.state), phase, pending: self.entries[at].pending };
        Some(old)
    }

    fn phase_id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.phase_ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.phase_names.len()).expect("fewer than 4 billion phases");
        self.phase_names.push(name.to_owned());
        self.phase_ids.insert(name.to_owned(), id);
        self.phase_counts.push([0; TaskState::ALL.len()]);
        id
    }

    fn phase_counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.phase_names
            .iter()
            .zip(&self.phase_counts)
            .map(|(phase, counts)| {
                let present = TaskState::ALL
                    .iter()
                    .filter(|s| counts[slot(**s)] > 0)
                    .map(|s| (s.name().to_owned(), counts[slot(*s)]))
                    .collect();
                (phase.clone(), present)
            })
            .filter(|(_, counts): &(String, BTreeMap<String, u64>)| !counts.is_empty())
            .collect()
    }

    /// List a task for the next delta, once per interval.
    fn mark(&mut self, seq: u64, id: &TaskId) {
        if let Some(entry) = usize::try_from(seq).ok().and_then(|at| self.entries.get_mut(at))
            && !entry.pending
        {
            entry.pending = true;
            self.pending_tasks.push((seq, id.clone()));
        }
    }

    fn take_pending_tasks(&mut self) -> Vec<(u64, TaskId)> {
        let pending = std::mem::take(&mut self.pending_tasks);
        for (seq, _) in &pending {
            if let Some(entry) = usize::try_from(*seq).ok().and_then(|at| self.entries.get_mut(at)) {
                entry.pending = false;
            }
        }
        pending
    }

    fn touch_worker(&mut self, name: &str) {
        if !self.pending_workers.contains(name) {
            self.pending_workers.insert(name.to_owned());
        }
    }

    fn add_event(&mut self, e: &scheduler::Event) {
        if self.pending_event_count >= EVENTS_PER_DELTA {
            self.events_left_out += 1;
            return;
        }
        if self.pending_event_count > 0 {
            self.pending_events.push(b',');
        }
        let view = EventOut { kind: e.kind, task: &e.task, worker: &e.worker, attempt: e.attempt, detail: &e.detail };
        serde_json::to_writer(&mut self.pending_events, &view).expect("an event serializes");
        self.pending_event_count += 1;
    }

    /// Whether a subscriber of that view is connected.
    fn watched_in(&self, view: SubscriptionView) -> bool {
        self.subscribers.iter().any(|(_, v)| *v == view)
    }

    /// Nobody watches: what was pending is told to no one.
    fn drop_pending(&mut self) {
        self.take_pending_tasks();
        self.pending_questions.clear();
        self.moved_since = false;
        self.pending_workers.clear();
        self.pending_events.clear();
        self.pending_event_count = 0;
        self.events_left_out = 0;
    }

    /// When the engine must wake to push what is pending, if anything is.
    pub fn next_push(&self) -> Option<Instant> {
        let pending = self.batch_since
            || self.moved_since
            || !self.pending_tasks.is_empty()
            || !self.pending_questions.is_empty()
            || !self.pending_workers.is_empty()
            || self.pending_event_count > 0;
        (pending && !self.subscribers.is_empty())
            .then(|| self.last_delta.map_or_else(Instant::now, |at| at + DELTA_EVERY))
    }
}

/// An [`EventView`] as written, borrowed from the scheduler's event.
#[derive(Serialize)]
struct EventOut<'a> {
    kind: &'a str,
    task: &'a Option<String>,
    worker: &'a Option<String>,
    attempt: Option<u32>,
    detail: &'a Value,
}

/// A [`TaskSummary`] as a delta writes it (description shortened), borrowed
/// from the task.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryOut<'a> {
    id: &'a str,
    description: std::borrow::Cow<'a, str>,
    state: &'a str,
    holder: &'a Option<String>,
    attempt: u32,
    phase: &'a Option<String>,
    lease_left_ms: Option<u64>,
    dependencies: &'a [String],
    reasons: &'a [String],
    question: &'a Option<String>,
}

impl<'a> SummaryOut<'a> {
    fn of(t: &'a scheduler::Task, now: Instant) -> Self {
        Self {
            id: &t.spec.id,
            description: shortened(&t.spec.description),
            state: t.state.name(),
            holder: &t.holder,
            attempt: t.attempt,
            phase: &t.phase,
            lease_left_ms: t.lease_left(now).map(|d| d.as_millis() as u64),
            dependencies: &t.spec.dependencies,
            reasons: &t.reasons,
            question: &t.question,
        }
    }
}

fn shortened(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::clip(text, DESCRIPTION_IN_DELTA)
}

/// The parts of one delta; [`DeltaParts::to_json`] writes them as
/// `serde_json` writes a [`Delta`], with the many tasks and events spliced
/// in as already written rather than built into a `Value` and copied per
/// subscriber.
struct DeltaParts<'a> {
    counts: &'a BTreeMap<String, u64>,
    phases: &'a BTreeMap<String, BTreeMap<String, u64>>,
    finished: bool,
    workflow: Option<&'a str>,
    /// Comma-separated task summaries.
    tasks: &'a [u8],
    workers: &'a [WorkerView],
    /// Comma-separated events.
    events: &'a [u8],
    events_left_out: u64,
    problems: Option<&'a [String]>,
    log: Option<&'a [String]>,
    stuck: Option<&'a [Stuck]>,
}

impl DeltaParts<'_> {
    fn to_json(&self) -> String {
        fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
            out.push(if out.is_empty() { b'{' } else { b',' });
            serde_json::to_writer(&mut *out, name).expect("a name serializes");
            out.push(b':');
            serde_json::to_writer(&mut *out, value).expect("a delta's part serializes");
        }
        fn spliced(out: &mut Vec<u8>, name: &str, items: &[u8]) {
            out.push(b',');
            serde_json::to_writer(&mut *out, name).expect("a name serializes");
            out.extend_from_slice(b":[");
            out.extend_from_slice(items);
            out.push(b']');
        }
        let mut out = Vec::with_capacity(self.tasks.len() + self.events.len() + 4096);
        field(&mut out, "counts", &self.counts);
        field(&mut out, "phases", &self.phases);
        field(&mut out, "finished", &self.finished);
        field(&mut out, "workflow", &self.workflow);
        spliced(&mut out, "tasks", self.tasks);
        field(&mut out, "workers", &self.workers);
        spliced(&mut out, "events", self.events);
        field(&mut out, "eventsLeftOut", &self.events_left_out);
        field(&mut out, "problems", &self.problems);
        field(&mut out, "log", &self.log);
        field(&mut out, "stuck", &self.stuck);
        out.push(b'}');
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

impl Engine {
    /// `subscribe` and `tasks_page`.
    pub(super) fn view_request(&mut self, conn: ConnId, msg: ClientMsg, now: Instant) {
        match msg {
            ClientMsg::Subscribe { view } => {
                self.progress.build(&self.scheduler);
                let summary = serde_json::to_value(self.summary(now, view)).expect("a summary serializes");
                // Subscribing again on one connection changes its view.
                self.progress.subscribers.retain(|(c, _)| *c != conn);
                self.progress.subscribers.push((conn, view));
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

    /// The submitted tasks' holders, each with its newest such task: a
    /// worker's task is the one it holds (assigned), else this.
    fn submitted_by(&self) -> HashMap<&str, &TaskId> {
        self.scheduler
            .ids_in_state(TaskState::Submitted)
            .filter_map(|id| self.scheduler.task(id).and_then(|t| t.holder.as_deref()).map(|h| (h, id)))
            .collect()
    }

    fn worker_view(
        &self,
        w: &scheduler::Worker,
        now: Instant,
        (connected, waiting): (bool, bool),
        submitted: &HashMap<&str, &TaskId>,
    ) -> WorkerView {
        let holding = self
            .scheduler
            .held_by(&w.name)
            .filter(|t| t.state == TaskState::Assigned)
            .or_else(|| submitted.get(w.name.as_str()).and_then(|id| self.scheduler.task(id)));
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

    fn counts(&self) -> BTreeMap<String, u64> {
        TaskState::ALL.iter().map(|s| (s.name().to_owned(), self.scheduler.count(*s) as u64)).collect()
    }

    /// The stuck list, found anew if a task that can make or end one moved.
    fn refresh_stuck(&mut self) -> bool {
        if std::mem::take(&mut self.progress.stuck_changed) {
            let stuck = stuck_of(&self.scheduler);
            let changed = stuck.len() != self.progress.stuck.len()
                || stuck
                    .iter()
                    .zip(&self.progress.stuck)
                    .any(|(a, b)| a.task != b.task || a.dependency != b.dependency);
            self.progress.stuck = stuck;
            return changed;
        }
        false
    }

    fn summary(&mut self, now: Instant, view: SubscriptionView) -> Summary {
        self.refresh_stuck();
        let presence = self.presence();
        let submitted = self.submitted_by();
        let workers = presence
            .iter()
            .filter_map(|(name, c, w)| {
                self.scheduler.worker(name).map(|worker| self.worker_view(worker, now, (*c, *w), &submitted))
            })
            .collect();
        let task = |id: &TaskId| self.scheduler.task(id).map(|t| short(task_summary(t, now)));
        let in_flight = match view {
            SubscriptionView::Full => TaskState::ALL
                .iter()
                .filter(|s| s.in_flight())
                .flat_map(|s| self.scheduler.ids_in_state(*s))
                .filter_map(task)
                .collect(),
            SubscriptionView::Progress => Vec::new(),
        };
        let questions =
            self.scheduler.ids_in_state(TaskState::Blocked).take(QUESTIONS_IN_SUMMARY).filter_map(task).collect();
        let summary = Summary {
            root: self.config.root.display().to_string(),
            workflow: self.workflow_path.as_ref().map(|p| p.display().to_string()),
            policy: Some(self.policy.name()),
            finished: self.all_done(),
            hub_running: true,
            coordinator: self.coordinator.is_some(),
            counts: self.counts(),
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

    /// A page of tasks of one state (or all) in creation order, from the
    /// scheduler's index of tasks by state.
    fn page(
        &self,
        state: Option<String>,
        limit: Option<usize>,
        after: Option<&str>,
        now: Instant,
    ) -> Result<Page, String> {
        let states: Vec<TaskState> = match &state {
            Some(name) => {
                let Some(state) = TaskState::ALL.iter().find(|s| s.name() == name) else {
                    let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.name()).collect();
                    return Err(format!("`tasks_page`: state `{name}` is not one of {}", names.join(", ")));
                };
                vec![*state]
            }
            None => TaskState::ALL.to_vec(),
        };
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let from = match after {
            Some(id) => {
                let Some(task) = self.scheduler.task(id) else {
                    return Err(format!("`tasks_page`: `after` names task `{id}`, which this hub does not have"));
                };
                task.seq + 1
            }
            None => 0,
        };
        // The first `limit + 1` of each state from there, merged by creation number.
        let mut keys: Vec<(u64, &TaskId)> =
            states.iter().flat_map(|s| self.scheduler.ids_in_state_from(*s, from).take(limit + 1)).collect();
        keys.sort_unstable_by_key(|(seq, _)| *seq);
        let more = keys.len() > limit;
        let tasks: Vec<TaskSummary> = keys
            .iter()
            .take(limit)
            .filter_map(|(_, id)| self.scheduler.task(id).map(|t| task_summary(t, now)))
            .collect();
        let next_after = tasks.last().filter(|_| more).map(|t| t.id.clone());
        let total = states.iter().map(|s| self.scheduler.count(*s)).sum::<usize>() as u64;
        Ok(Page { state, tasks, total, next_after })
    }

    /// After a commit: count the batch's changes and, at most every
    /// [`DELTA_EVERY`], push what changed to every subscriber. Costs what the
    /// batch changed: per task a look-up and a compare; while a full
    /// subscriber watches, its id listed once per delta and each event
    /// written once; while only progress subscribers do, a check of whether
    /// it became or stopped being a question; nothing when nobody ever
    /// subscribed.
    pub(super) fn publish(&mut self, changes: &Changes, finished: bool) {
        let Some(started) = self.progress.meter.as_ref().map(|_| thread_cpu()) else {
            return self.publish_changes(changes, finished);
        };
        self.publish_changes(changes, finished);
        let spent = thread_cpu().saturating_sub(started);
        let file = crate::layout::Layout::of_root(&self.config.root).progress_cpu();
        if let Some(meter) = &mut self.progress.meter {
            meter.add(spent, &file);
        }
    }

    fn publish_changes(&mut self, changes: &Changes, finished: bool) {
        if !self.progress.built {
            return;
        }
        let now = Instant::now();
        self.progress.subscribers.retain(|(c, _)| self.conns.contains_key(c));
        let watched = !self.progress.subscribers.is_empty();
        let full_watched = self.progress.watched_in(SubscriptionView::Full);
        let progress_watched = self.progress.watched_in(SubscriptionView::Progress);
        let progress = &mut self.progress;
        for id in &changes.tasks {
            let Some(t) = self.scheduler.task(id) else { continue };
            let moved = progress.count(t);
            if let Some(old) = moved {
                progress.stuck_changed |= [old, Some(t.state)]
                    .into_iter()
                    .flatten()
                    .any(|s| matches!(s, TaskState::Failed | TaskState::Cancelled | TaskState::Waiting));
            }
            if !watched {
                continue;
            }
            if let Some(old) = moved {
                progress.moved_since = true;
                if progress_watched && (old == Some(TaskState::Blocked)) != (t.state == TaskState::Blocked) {
                    progress.pending_questions.push((t.seq, id.clone()));
                }
            }
            if full_watched {
                progress.mark(t.seq, id);
            }
            // A progress subscriber's worker shows what it holds, which only
            // a move changes; a full one shows its lease too.
            if let Some(h) = &t.holder
                && (full_watched || moved.is_some())
            {
                progress.touch_worker(h);
            }
            // Out of flight, its holder became `last_holder` and holds it no more.
            if let (Some(Some(old)), Some(h)) = (moved, &t.last_holder)
                && old.in_flight()
                && !t.state.in_flight()
            {
                progress.touch_worker(h);
            }
        }
        if !watched {
            progress.drop_pending();
            return;
        }
        for w in &changes.workers {
            progress.touch_worker(w);
        }
        if full_watched {
            for e in &changes.events {
                progress.add_event(e);
            }
        }
        let due = progress.last_delta.is_none_or(|at| now >= at + DELTA_EVERY);
        if !due && finished == progress.sent_finished {
            progress.batch_since = true;
            return;
        }
        self.push_delta(now, finished);
    }

    fn push_delta(&mut self, now: Instant, finished: bool) {
        self.progress.batch_since = false;
        let mut touched_workers = std::mem::take(&mut self.progress.pending_workers);
        let stuck_changed = if self.progress.stuck_changed {
            self.refresh_stuck()
        } else {
            let scheduler = &self.scheduler;
            let before = self.progress.stuck.len();
            self.progress.stuck.retain(|s| scheduler.task(&s.task).is_some_and(|t| t.state == TaskState::Waiting));
            self.progress.stuck.len() != before
        };
        let presence = self.presence();
        for p in &presence {
            if !self.progress.sent_presence.contains(p) {
                touched_workers.insert(p.0.clone());
            }
        }
        let problems_changed = self.problems != self.progress.sent_problems;
        let log_changed = self.log != self.progress.sent_log;
        let moved = std::mem::take(&mut self.progress.moved_since);
        let tasks = self.progress.take_pending_tasks();
        let mut questions = std::mem::take(&mut self.progress.pending_questions);
        let events = std::mem::take(&mut self.progress.pending_events);
        let event_count = std::mem::take(&mut self.progress.pending_event_count);
        let nothing = !moved
            && tasks.is_empty()
            && questions.is_empty()
            && touched_workers.is_empty()
            && event_count == 0
            && !problems_changed
            && !log_changed
            && !stuck_changed
            && finished == self.progress.sent_finished;
        self.progress.sent_presence = presence;
        if nothing {
            self.progress.pending_events = events;
            self.progress.pending_events.clear();
            return;
        }
        let submitted = self.submitted_by();
        let workers: Vec<WorkerView> = self
            .progress
            .sent_presence
            .iter()
            .filter(|(name, ..)| touched_workers.contains(name))
            .filter_map(|(name, c, w)| {
                self.scheduler.worker(name).map(|worker| self.worker_view(worker, now, (*c, *w), &submitted))
            })
            .collect();
        let counts = self.counts();
        let phases = self.progress.phase_counts();
        let workflow = self.workflow_path.as_ref().map(|p| p.display().to_string());
        let parts = DeltaParts {
            counts: &counts,
            phases: &phases,
            finished,
            workflow: workflow.as_deref(),
            tasks: &[],
            workers: &workers,
            events: &events,
            events_left_out: std::mem::take(&mut self.progress.events_left_out),
            problems: problems_changed.then_some(self.problems.as_slice()),
            log: log_changed.then_some(self.log.as_slice()),
            stuck: stuck_changed.then_some(self.progress.stuck.as_slice()),
        };
        // Each view's delta is written once, if someone of it watches, and
        // shared by all of them.
        let full_delta = self.progress.watched_in(SubscriptionView::Full).then(|| {
            let tasks = self.summaries_json(&tasks, now);
            RawJson::new(DeltaParts { tasks: &tasks, ..parts }.to_json())
        });
        let progress_delta = self.progress.watched_in(SubscriptionView::Progress).then(|| {
            questions.sort_unstable_by_key(|(seq, _)| *seq);
            questions.dedup_by_key(|(seq, _)| *seq);
            let tasks = self.summaries_json(&questions, now);
            RawJson::new(DeltaParts { tasks: &tasks, events: &[], events_left_out: 0, ..parts }.to_json())
        });
        if problems_changed {
            self.progress.sent_problems.clone_from(&self.problems);
        }
        if log_changed {
            self.progress.sent_log.clone_from(&self.log);
        }
        self.progress.sent_finished = finished;
        self.progress.last_delta = Some(now);
        // Kept for the next interval: its capacity is the size one interval needs.
        self.progress.pending_events = events;
        self.progress.pending_events.clear();
        // Sent as any answer is: a subscriber that reads nothing is cut off
        // as any slow reader is.
        for &(conn, view) in &self.progress.subscribers {
            let delta = match view {
                SubscriptionView::Full => full_delta.clone(),
                SubscriptionView::Progress => progress_delta.clone(),
            };
            let delta = delta.expect("written for every view watched");
            self.outgoing.push((conn, Outgoing::Msg(ServerMsg::Delta { delta })));
        }
    }

    /// The tasks' summaries as a delta writes them, comma-separated, in creation order.
    fn summaries_json(&self, tasks: &[(u64, TaskId)], now: Instant) -> Vec<u8> {
        let mut tasks: Vec<&scheduler::Task> = tasks.iter().filter_map(|(_, id)| self.scheduler.task(id)).collect();
        tasks.sort_unstable_by_key(|t| t.seq);
        let mut out = Vec::with_capacity(tasks.len() * 256);
        for t in tasks {
            if !out.is_empty() {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &SummaryOut::of(t, now)).expect("a task summary serializes");
        }
        out
    }
}

fn stuck_of(scheduler: &scheduler::Scheduler) -> Vec<Stuck> {
    scheduler.stuck().into_iter().map(|(task, dependency)| Stuck { task, dependency }).collect()
}

fn short(mut summary: TaskSummary) -> TaskSummary {
    if let std::borrow::Cow::Owned(text) = shortened(&summary.description) {
        summary.description = text;
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    /// A delta written from parts is what `serde_json` makes of a [`Delta`]:
    /// subscribers read the same bytes as when the engine built a `Value`.
    #[test]
    fn a_delta_written_from_parts_is_the_delta_serialized() {
        let now = Instant::now();
        let mut s = scheduler::Scheduler::default();
        let mut described = TaskSpec::new("b", "é".repeat(150));
        described.dependencies = vec!["a".into()];
        s.add_tasks(vec![TaskSpec::new("a", "do a"), described], Some("build"), now).unwrap();
        let events = s.take_changes().events;
        let tasks: Vec<&scheduler::Task> = ["a", "b"].iter().map(|id| s.task(id).unwrap()).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        let written = |items: Vec<Vec<u8>>| items.join(&b',');
        let task_json = written(tasks.iter().map(|t| serde_json::to_vec(&SummaryOut::of(t, now)).unwrap()).collect());
        let event_json = written(
            events
                .iter()
                .map(|e| {
                    let out = EventOut {
                        kind: e.kind,
                        task: &e.task,
                        worker: &e.worker,
                        attempt: e.attempt,
                        detail: &e.detail,
                    };
                    serde_json::to_vec(&out).unwrap()
                })
                .collect(),
        );
        let worker =
            WorkerView { name: "w1".into(), holding: Some("a".into()), waiting: true, ..WorkerView::default() };
        let counts: BTreeMap<String, u64> = [("ready".to_owned(), 1), ("waiting".to_owned(), 1)].into();
        let phases: BTreeMap<String, BTreeMap<String, u64>> = [("build".to_owned(), counts.clone())].into();
        let stuck = vec![Stuck { task: "b".into(), dependency: "a".into() }];
        let log = vec!["one".to_owned()];
        let workers = vec![worker.clone()];
        let parts = DeltaParts {
            counts: &counts,
            phases: &phases,
            finished: false,
            workflow: Some("flow.lua"),
            tasks: &task_json,
            workers: &workers,
            events: &event_json,
            events_left_out: 3,
            problems: None,
            log: Some(&log),
            stuck: Some(&stuck),
        };
        let typed = Delta {
            counts: counts.clone(),
            phases: phases.clone(),
            finished: false,
            workflow: Some("flow.lua".into()),
            tasks: tasks.iter().map(|t| short(task_summary(t, now))).collect(),
            workers: vec![worker],
            events: events
                .iter()
                .map(|e| EventView {
                    kind: e.kind.to_owned(),
                    task: e.task.clone(),
                    worker: e.worker.clone(),
                    attempt: e.attempt,
                    detail: e.detail.clone(),
                })
                .collect(),
            events_left_out: 3,
            problems: None,
            log: Some(log.clone()),
            stuck: Some(stuck.clone()),
        };
        let expected = serde_json::to_string(&serde_json::to_value(&typed).unwrap()).unwrap();
        assert_eq!(parts.to_json(), expected);
        let read = Delta::from_wire(&RawJson::new(parts.to_json())).unwrap();
        assert!(read.tasks[1].description.ends_with('…') && read.tasks[1].description.len() <= 203, "{read:?}");
    }
}
