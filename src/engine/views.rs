//! The engine's views of its state, built for the wire types of
//! [`crate::wire::views`]: a subscriber's first [`Summary`], a [`Page`] of
//! tasks, a task in full ([`TaskInfo`]) and the old whole-store
//! [`Snapshot`]. Each worker is shown by one rule ([`Engine::worker_view`]),
//! whichever message carries it. What follows a subscription is in [`progress`]
//! (the index and when to push) and [`delta`] (how a delta is written).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{ConnId, Engine, Role};
use crate::scheduler::{self, Refusal, TaskId, TaskState};
use crate::store::read::{task_info, task_summary};
use crate::wire::{
    ClientMsg, Page, ServerMsg, Snapshot, Stuck, SubscriptionView, Summary, TaskInfo, TaskSummary, UnmetNeed,
    WorkerView,
};

mod delta;
mod progress;

pub use progress::Progress;

/// The most tasks one `tasks_page` returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 50;
/// `show_task` history reads running at once at most; more are answered without history.
const HISTORY_READS: usize = 4;
/// Questions a summary carries at most.
const QUESTIONS_IN_SUMMARY: usize = 100;

impl Engine {
    /// `subscribe`, `tasks_page`, `show_task` and `snapshot`.
    pub(super) fn view_request(&mut self, conn: ConnId, msg: ClientMsg, now: Instant) {
        match msg {
            ClientMsg::Subscribe { view } => {
                self.progress.build(&self.scheduler);
                let summary = Box::new(self.summary(now, view));
                // Subscribing again on one connection changes its view.
                self.progress.subscribers.retain(|(c, _)| *c != conn);
                self.progress.subscribers.push((conn, view));
                self.send(conn, ServerMsg::Summary { summary });
            }
            ClientMsg::TasksPage { state, limit, after } => match self.page(state, limit, after.as_deref(), now) {
                Ok(page) => self.send(conn, ServerMsg::TasksPage { page }),
                Err(e) => self.send(conn, ServerMsg::error_code(e, "bad_page")),
            },
            ClientMsg::ShowTask { task_id } => match self.scheduler.task(&task_id) {
                Some(task) => {
                    let task = Box::new(task_info(task, now));
                    self.send_with_history(conn, task);
                }
                None => self.refuse(conn, &Refusal::UnknownTask(task_id)),
            },
            ClientMsg::Snapshot {} => {
                let snapshot = Box::new(self.snapshot(now));
                self.send(conn, ServerMsg::Snapshot { snapshot });
            }
            _ => {}
        }
    }

    /// Answer `show_task` with the task's history (every attempt and
    /// question) read from the store on a thread of its own: a scan of the
    /// event log must not hold the engine. The answer comes back as a relay
    /// and goes out with a later commit; it holds what was durable when
    /// read. Past [`HISTORY_READS`] reads at once, it goes without.
    fn send_with_history(&mut self, conn: ConnId, task: Box<TaskInfo>) {
        let reads = self.history_reads.clone();
        if reads.fetch_add(1, Ordering::SeqCst) >= HISTORY_READS {
            reads.fetch_sub(1, Ordering::SeqCst);
            self.send(conn, ServerMsg::TaskInfo { task });
            return;
        }
        let (location, tx) = (self.config.store.clone(), self.tx.clone());
        let mut read = task.clone();
        let spawned = std::thread::Builder::new().name("mcc-history".into()).spawn(move || {
            let id = read.summary.id.clone();
            match crate::report::task_history_in(&location, &id) {
                Ok(history) => read.history = history,
                Err(e) => tracing::warn!("mcc hub: the history of task {id} cannot be read: {e}"),
            }
            reads.fetch_sub(1, Ordering::SeqCst);
            let msg = ServerMsg::TaskInfo { task: read };
            let _ = tx.blocking_send(super::Input::Relay { conn, outgoing: super::Outgoing::Msg(msg) });
        });
        if let Err(e) = spawned {
            self.history_reads.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("mcc hub: no thread to read a task's history ({e}); answered without it");
            self.send(conn, ServerMsg::TaskInfo { task });
        }
    }

    /// The parts of a summary that cost no walk of anything: the same in a
    /// snapshot.
    fn header(&self) -> Summary {
        Summary {
            root: self.config.root.display().to_string(),
            workflow: self.workflow_path.as_ref().map(|p| p.display().to_string()),
            policy: Some(self.policy.name()),
            finished: self.all_done(),
            hub_running: true,
            coordinator: self.coordinator.is_some(),
            counts: self.counts(),
            problems: self.problems.clone(),
            log: self.log.clone(),
            unmet_needs: self.unmet_needs(),
            ..Summary::default()
        }
    }

    /// Needs of ready tasks no worker here has: here is seen within a
    /// lease, as a worker between two commands still is.
    fn unmet_needs(&self) -> Vec<UnmetNeed> {
        let now = Instant::now();
        let within = self.scheduler.settings.lease;
        let here = |w: &scheduler::Worker| w.last_seen().is_some_and(|at| now.saturating_duration_since(at) <= within);
        self.scheduler.needs_unmet(here).into_iter().map(|(need, tasks)| UnmetNeed { need, tasks }).collect()
    }

    /// Every task in one message, for old scripts: the summary's parts
    /// (workers by the same rule) and every task in creation order.
    fn snapshot(&self, now: Instant) -> Snapshot {
        let summary = Summary {
            workers: self.worker_views(&self.presence(), now),
            stuck: stuck_of(&self.scheduler),
            budgets: self.budgets_shown(),
            ..self.header()
        };
        let tasks = self.scheduler.tasks_in_order().into_iter().map(|t| task_summary(t, now)).collect();
        Snapshot::of(summary, tasks)
    }

    /// The views of the workers in `presence`, in its order.
    fn worker_views(&self, presence: &[(String, bool, bool)], now: Instant) -> Vec<WorkerView> {
        let submitted = self.submitted_by();
        presence
            .iter()
            .filter_map(|(name, c, w)| {
                self.scheduler.worker(name).map(|worker| self.worker_view(worker, now, (*c, *w), &submitted))
            })
            .collect()
    }

    /// The submitted tasks' holders, each with its newest such task: a
    /// worker's task is the one it holds (assigned), else this.
    fn submitted_by(&self) -> HashMap<&str, &TaskId> {
        self.scheduler
            .ids_in_state(TaskState::Submitted)
            .filter_map(|id| self.scheduler.task(id).and_then(|t| t.holder()).map(|h| (h, id)))
            .collect()
    }

    /// One worker: what it holds is the task assigned to it, else the
    /// newest it submitted that awaits a verdict (it keeps its holder for
    /// that verdict, and a rejection brings it back to the same worker).
    fn worker_view(
        &self,
        w: &scheduler::Worker,
        now: Instant,
        (connected, waiting): (bool, bool),
        submitted: &HashMap<&str, &TaskId>,
    ) -> WorkerView {
        let holding = self
            .scheduler
            .held_by(w.name())
            .filter(|t| t.state() == TaskState::Assigned)
            .or_else(|| submitted.get(w.name()).and_then(|id| self.scheduler.task(id)));
        let mut view = WorkerView {
            name: w.name().to_owned(),
            holding: holding.map(|t| t.spec.id.clone()),
            lease_left_ms: holding.and_then(|t| t.lease_left(now)).map(|d| d.as_millis() as u64),
            score: w.score(),
            accepted: w.accepted().len(),
            last_seen_ms_ago: w.last_seen().map(|s| now.saturating_duration_since(s).as_millis() as u64),
            connected,
            waiting,
            waiting_on: waiting.then(|| self.waiting(w.name()).text),
            hand_over: w.must_hand_over(),
            can: w.can().to_vec(),
            model: w.model().map(str::to_owned),
            ..WorkerView::default()
        };
        self.presences.show(w.name(), now, &mut view);
        view
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
            .map(|w| (w.name().to_owned(), connected.contains(w.name()), waiting.contains(w.name())))
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
        let workers = self.worker_views(&presence, now);
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
        let phase_order = self.policy.phases();
        let summary = Summary {
            phases: self.progress.phase_counts(),
            phase_order: phase_order.clone(),
            workers,
            in_flight,
            questions,
            stuck: self.progress.stuck.clone(),
            budgets: self.budgets_shown(),
            ..self.header()
        };
        self.progress.sent_presence = presence;
        self.progress.sent_phase_order = phase_order;
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
                task.seq() + 1
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
}

fn stuck_of(scheduler: &scheduler::Scheduler) -> Vec<Stuck> {
    scheduler.stuck().into_iter().map(|(task, dependency)| Stuck { task, dependency }).collect()
}

/// A summary as summaries and deltas carry it: its description shortened.
fn short(mut summary: TaskSummary) -> TaskSummary {
    if let std::borrow::Cow::Owned(text) = delta::shortened(&summary.description) {
        summary.description = text;
    }
    summary
}
