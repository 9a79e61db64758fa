//! The progress index and the deltas built from it: what subscribers need
//! beyond the scheduler's own indexes ([`Progress`]), kept from each
//! committed batch's changes, and [`Engine::publish`], which pushes a
//! [`Delta`](crate::wire::Delta) per interval to every subscriber, written
//! once per view. Their cost follows the batch, not the store.

use super::super::{ConnId, Engine, Outgoing};
use super::delta::{DeltaParts, EventOut, SummaryOut};
use crate::event::EventKind;
use crate::scheduler::{self, Changes, TaskId, TaskState};
use crate::wire::{RawJson, ServerMsg, Stuck, SubscriptionView};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// Deltas are pushed at most this often: what batches change in between is
/// folded into one, so progress costs the engine the same at 10 or 10,000
/// batches a second. A finished run is pushed at once.
pub const DELTA_EVERY: Duration = Duration::from_millis(100);
/// Events one delta carries at most; more are counted in `eventsLeftOut`.
/// A thousand a second is past what anyone reads as it goes (the page only
/// takes them as a sign to redraw its timeline); the event log has them all,
/// and at full speed each event written costs the engine time.
const EVENTS_PER_DELTA: usize = 100;

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
    pub(super) subscribers: Vec<(ConnId, SubscriptionView)>,
    /// What subscribers were last told, to send only what changed.
    sent_problems: Vec<String>,
    sent_log: Vec<String>,
    pub(super) sent_presence: Vec<(String, bool, bool)>,
    sent_finished: bool,
    /// The workflow's phases in declared order, as last told.
    pub(super) sent_phase_order: Vec<String>,
    /// What the run spent and its budgets, as the last delta told.
    sent_budgets: Option<crate::wire::Budgets>,
    pub(super) stuck: Vec<Stuck>,
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
    /// The interval's rejections, failures and questions, written as
    /// `pending_events` are: a progress subscriber (`mcc run`) prints each
    /// as it happens. Few, so the progress view stays cheap.
    pending_notable: Vec<u8>,
    pending_notable_count: usize,
    pub(super) stuck_changed: bool,
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
            // A bench aid: a failed write only leaves the figure out. Written
            // whole, never through a link planted in its place.
            let _ = crate::text::write_atomic(file, text.as_bytes());
        }
    }
}

/// Append event `e` to `out`, comma-separated, unless `count` reached
/// [`EVENTS_PER_DELTA`]; returns whether it was written.
fn write_event(out: &mut Vec<u8>, count: &mut usize, e: &scheduler::Event) -> bool {
    if *count >= EVENTS_PER_DELTA {
        return false;
    }
    if *count > 0 {
        out.push(b',');
    }
    let view =
        EventOut { kind: e.kind.name(), task: &e.task, worker: &e.worker, attempt: e.attempt, detail: &e.detail };
    serde_json::to_writer(&mut *out, &view).expect("an event serializes");
    *count += 1;
    true
}

/// What a progress subscriber is told of as it happens: a rejection, a
/// task given up or failed, a question for the engineer.
fn notable(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Rejected | EventKind::Failed | EventKind::FailedAttempt | EventKind::Blocked | EventKind::ChatEnded
    )
}

fn slot(state: TaskState) -> usize {
    state as usize
}

impl Progress {
    pub(super) fn build(&mut self, scheduler: &scheduler::Scheduler) {
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
        let at = usize::try_from(t.seq()).expect("a task number fits in memory");
        if at >= self.entries.len() {
            self.entries.resize(at + 1, Entry::default());
        }
        let old = self.entries[at].state;
        if old == Some(t.state()) {
            return None;
        }
        let phase = match old {
            Some(state) => {
                let phase = self.entries[at].phase;
                let n = &mut self.phase_counts[phase as usize][slot(state)];
                *n = n.saturating_sub(1);
                phase
            }
            None => self.phase_id(t.phase().unwrap_or("-")),
        };
        self.phase_counts[phase as usize][slot(t.state())] += 1;
        self.entries[at] = Entry { state: Some(t.state()), phase, pending: self.entries[at].pending };
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

    pub(super) fn phase_counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
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

    pub(in crate::engine) fn touch_worker(&mut self, name: &str) {
        if !self.pending_workers.contains(name) {
            self.pending_workers.insert(name.to_owned());
        }
    }

    fn add_event(&mut self, e: &scheduler::Event) {
        if !write_event(&mut self.pending_events, &mut self.pending_event_count, e) {
            self.events_left_out += 1;
        }
    }

    /// A rejection, failure or question, for progress subscribers; past
    /// [`EVENTS_PER_DELTA`] in one interval the rest are left out (the page
    /// and `mcc report` have them all).
    fn add_notable(&mut self, e: &scheduler::Event) {
        write_event(&mut self.pending_notable, &mut self.pending_notable_count, e);
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
        self.pending_notable.clear();
        self.pending_notable_count = 0;
    }

    /// When the engine must wake to push what is pending, if anything is.
    pub fn next_push(&self) -> Option<Instant> {
        let pending = self.batch_since
            || self.moved_since
            || !self.pending_tasks.is_empty()
            || !self.pending_questions.is_empty()
            || !self.pending_workers.is_empty()
            || self.pending_event_count > 0
            || self.pending_notable_count > 0;
        (pending && !self.subscribers.is_empty())
            .then(|| self.last_delta.map_or_else(Instant::now, |at| at + DELTA_EVERY))
    }
}

impl Engine {
    /// After a commit: count the batch's changes and, at most every
    /// [`DELTA_EVERY`], push what changed to every subscriber. Costs what the
    /// batch changed: per task a look-up and a compare; while a full
    /// subscriber watches, its id listed once per delta and each event
    /// written once; while only progress subscribers do, a check of whether
    /// it became or stopped being a question; nothing when nobody ever
    /// subscribed.
    pub(in crate::engine) fn publish(&mut self, changes: &Changes, finished: bool) {
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
                progress.stuck_changed |= [old, Some(t.state())]
                    .into_iter()
                    .flatten()
                    .any(|s| matches!(s, TaskState::Failed | TaskState::Cancelled | TaskState::Waiting));
            }
            if !watched {
                continue;
            }
            if let Some(old) = moved {
                progress.moved_since = true;
                if progress_watched && (old == Some(TaskState::Blocked)) != (t.state() == TaskState::Blocked) {
                    progress.pending_questions.push((t.seq(), id.clone()));
                }
            }
            if full_watched {
                progress.mark(t.seq(), id);
            }
            // A progress subscriber's worker shows what it holds, which only
            // a move changes; a full one shows its lease too.
            if let Some(h) = t.holder()
                && (full_watched || moved.is_some())
            {
                progress.touch_worker(h);
            }
            // Out of flight, its holder became `last_holder` and holds it no more.
            if let (Some(Some(old)), Some(h)) = (moved, t.last_holder())
                && old.in_flight()
                && !t.state().in_flight()
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
        if progress_watched {
            for e in changes.events.iter().filter(|e| notable(&e.kind)) {
                progress.add_notable(e);
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
            self.progress.stuck.retain(|s| scheduler.task(&s.task).is_some_and(|t| t.state() == TaskState::Waiting));
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
        let phase_order = self.policy.phases();
        let phase_order_changed = phase_order != self.progress.sent_phase_order;
        let budgets = self.budgets_shown();
        let budgets_changed = budgets != self.progress.sent_budgets;
        let moved = std::mem::take(&mut self.progress.moved_since);
        let tasks = self.progress.take_pending_tasks();
        let mut questions = std::mem::take(&mut self.progress.pending_questions);
        let events = std::mem::take(&mut self.progress.pending_events);
        let event_count = std::mem::take(&mut self.progress.pending_event_count);
        let notable = std::mem::take(&mut self.progress.pending_notable);
        let notable_count = std::mem::take(&mut self.progress.pending_notable_count);
        let nothing = !moved
            && tasks.is_empty()
            && questions.is_empty()
            && touched_workers.is_empty()
            && event_count == 0
            && notable_count == 0
            && !problems_changed
            && !log_changed
            && !stuck_changed
            && !phase_order_changed
            && !budgets_changed
            && finished == self.progress.sent_finished;
        self.progress.sent_presence = presence;
        if nothing {
            self.progress.pending_events = events;
            self.progress.pending_events.clear();
            return;
        }
        let touched: Vec<(String, bool, bool)> =
            self.progress.sent_presence.iter().filter(|(name, ..)| touched_workers.contains(name)).cloned().collect();
        let workers = self.worker_views(&touched, now);
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
            phase_order: phase_order_changed.then_some(phase_order.as_slice()),
            budgets: budgets.as_ref().filter(|_| budgets_changed),
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
            RawJson::new(DeltaParts { tasks: &tasks, events: &notable, events_left_out: 0, ..parts }.to_json())
        });
        if problems_changed {
            self.progress.sent_problems.clone_from(&self.problems);
        }
        if log_changed {
            self.progress.sent_log.clone_from(&self.log);
        }
        if phase_order_changed {
            self.progress.sent_phase_order = phase_order;
        }
        if budgets_changed {
            self.progress.sent_budgets = budgets;
        }
        self.progress.sent_finished = finished;
        self.progress.last_delta = Some(now);
        // Kept for the next interval: its capacity is the size one interval needs.
        self.progress.pending_events = events;
        self.progress.pending_events.clear();
        self.progress.pending_notable = notable;
        self.progress.pending_notable.clear();
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
        tasks.sort_unstable_by_key(|t| t.seq());
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
