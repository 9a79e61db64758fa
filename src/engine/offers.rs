//! Waiting workers and offers: what a worker gets when it asks, how an
//! answer is wrapped (offer, verdict, ack, old-protocol push), handing work
//! to whoever waits when some turns up, and saying why there is none.
//!
//! Offers are event-driven: waiting workers are looked at only after the
//! scheduler says something they could be offered changed; waits end from a
//! deadline index. A batch that changes nothing (a CLI command connecting or
//! disconnecting) costs nothing here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{ConnId, Engine, MAX_WAITERS, ProblemKind, Reply, Waiter, budget};
use crate::scheduler::{self, Cap, Idle, Passed};
use crate::wire::{Offer, ServerMsg, Waiting, WaitingFor};

/// Workers waiting for work, in the order they started waiting, with their
/// deadlines indexed.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    next_key: u64,
    by_key: BTreeMap<u64, Waiter>,
    deadlines: BTreeSet<(Instant, u64)>,
}

impl Waiters {
    fn push(&mut self, waiter: Waiter) {
        let key = self.next_key;
        self.next_key += 1;
        if let Some(at) = waiter.deadline {
            self.deadlines.insert((at, key));
        }
        self.by_key.insert(key, waiter);
    }

    fn remove(&mut self, key: u64) -> Option<Waiter> {
        let waiter = self.by_key.remove(&key)?;
        if let Some(at) = waiter.deadline {
            self.deadlines.remove(&(at, key));
        }
        Some(waiter)
    }

    /// Keep only the waiters `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Waiter) -> bool) {
        let gone: Vec<u64> = self.by_key.iter().filter(|(_, w)| !keep(w)).map(|(k, _)| *k).collect();
        for key in gone {
            self.remove(key);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.by_key.values()
    }

    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The earliest end of a wait.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Take the waits that ended by `now`.
    fn expired(&mut self, now: Instant) -> Vec<Waiter> {
        let mut out = Vec::new();
        while let Some(&(at, key)) = self.deadlines.first()
            && at <= now
        {
            out.extend(self.remove(key));
        }
        out
    }
}

impl Engine {
    /// Offer work to an mcc worker; wait when there is none and `wait` allows.
    pub(super) fn offer(&mut self, conn: ConnId, worker: &str, wait: Duration, reply: Reply, now: Instant) {
        // A race its racer's report just decided frees its dependents for this very offer.
        self.settle_races();
        // A newer command of the same worker supersedes an older wait: answer it now.
        let mut superseded = Vec::new();
        self.waiters.retain(|w| {
            let old = w.worker == worker && w.conn != conn && w.deadline.is_some();
            if old {
                superseded.push((w.conn, w.reply.clone()));
            }
            !old
        });
        for (old_conn, old_reply) in superseded {
            let offer = self.nothing_yet(worker);
            self.answer(old_conn, &old_reply, offer);
        }
        match self.try_offer(worker, now) {
            Some(offer) => self.answer(conn, &reply, offer),
            None if wait.is_zero() => {
                let offer = self.nothing_yet(worker);
                self.answer(conn, &reply, offer);
            }
            None => {
                if self.waiters.len() >= MAX_WAITERS {
                    let text =
                        format!("the hub already has {MAX_WAITERS} waiting clients; run the command again in a moment");
                    self.send(conn, ServerMsg::error_code(text, "busy"));
                    return;
                }
                self.waiters.push(Waiter { conn, worker: worker.to_owned(), deadline: Some(now + wait), reply });
            }
        }
    }

    /// An old-protocol worker asks: `task_assigned`, or `no_tasks` and it waits connected.
    pub(super) fn offer_old(&mut self, conn: ConnId, worker: &str, now: Instant) {
        self.waiters.retain(|w| w.conn != conn);
        if let Some(offer @ Offer::Task { .. }) = self.try_offer(worker, now) {
            self.answer(conn, &Reply::Push, offer);
        } else {
            // The original's text whatever the reason; the worker stays and is sent work when some appears.
            self.send(conn, ServerMsg::NoTasks { message: super::old::NO_TASKS.to_owned() });
            self.waiters.push(Waiter { conn, worker: worker.to_owned(), deadline: None, reply: Reply::Push });
        }
    }

    pub(super) fn all_done(&self) -> bool {
        self.policy.finished(&self.scheduler)
    }

    /// What the worker gets right now, or `None` if it should wait: the
    /// scheduler's offer, with the workflow's `assign` deciding, in wire form.
    pub(super) fn try_offer(&mut self, worker: &str, now: Instant) -> Option<Offer> {
        let stop = self.budget_stop();
        let policy = &mut self.policy;
        let offer = match &stop {
            budget::Stop::None => {
                self.scheduler.offer(worker, now, policy.choices(), |me, ready, s| policy.assign(me, ready, s))
            }
            // Held work still goes back to its worker; nothing new is granted.
            budget::Stop::Run(_) => self.scheduler.offer(worker, now, 1, |_, _, _| Ok(None)),
            // The workflow chooses among the tasks of the phases that may still spend.
            budget::Stop::Phases(spent) => {
                self.scheduler.offer(worker, now, policy.choices().max(64), |me, ready, s| {
                    let open: Vec<&scheduler::Task> =
                        ready.iter().copied().filter(|t| t.phase().is_none_or(|p| !spent.contains(p))).collect();
                    if open.is_empty() { Ok(None) } else { policy.assign(me, &open, s) }
                })
            }
        };
        match offer {
            Ok(scheduler::Offer::Held(id)) => Some(self.task_offer(worker, &id, true)),
            Ok(scheduler::Offer::HandOver) => Some(Offer::HandOver {
                worker: worker.to_owned(),
                message: format!(
                    "{worker} reported a context score of 2 or less: take no more work. Start a fresh chat and run `mcc worker next --as NEW-NAME` there"
                ),
            }),
            Ok(scheduler::Offer::Granted(id)) => {
                self.to_coordinator(ServerMsg::TaskAssigned {
                    task: None,
                    task_id: Some(id.clone()),
                    worker_id: Some(worker.to_owned()),
                });
                Some(self.task_offer(worker, &id, false))
            }
            Ok(scheduler::Offer::NotGrantable(id)) => {
                let cap = self.scheduler.task(&id).and_then(|t| self.scheduler.cap_reached(t));
                let why = match cap {
                    Some(Cap::Phase { name, max }) => format!("whose phase {name} already has its {max} out at once"),
                    Some(Cap::Kind { name, max }) => format!("whose type {name} already has its {max} out at once"),
                    None => "which is not among the ready tasks".to_owned(),
                };
                self.problem(
                    ProblemKind::AssignChoseUnready,
                    &id,
                    format!("workflow assign chose `{id}`, {why}; {worker} got nothing"),
                );
                None
            }
            Ok(scheduler::Offer::Nothing) if self.all_done() => {
                Some(Offer::AllDone { worker: worker.to_owned(), message: "all work is done, you can stop".to_owned() })
            }
            Ok(scheduler::Offer::Nothing) => None,
            Err(e) => {
                let error = e.to_string();
                self.problem(ProblemKind::AssignFailed, &error, format!("workflow assign: {error}"));
                None
            }
        }
    }

    pub(super) fn task_offer(&self, worker: &str, id: &str, held: bool) -> Offer {
        let task = self.scheduler.task(id).expect("offered task exists");
        Offer::Task {
            worker: worker.to_owned(),
            task: task.to_wire(),
            attempt: task.attempt(),
            attempts_used: task.attempts_used(),
            max_attempts: self.scheduler.settings.max_attempts,
            lease_ms: task.lease_ms(),
            held,
            returning: task.last_holder() == Some(worker),
            reasons: task.reasons().to_vec(),
            question: task.answer().and(task.question().map(str::to_owned)),
            answer: task.answer().map(str::to_owned),
            phase: task.phase().map(str::to_owned),
            worktree: self.scheduler.settings.worktree,
        }
    }

    pub(super) fn answer(&mut self, conn: ConnId, reply: &Reply, offer: Offer) {
        let msg = match reply.clone() {
            Reply::Offer => ServerMsg::Offer { offer },
            Reply::Verdict { task, attempt, accepted, failed, reasons } => ServerMsg::Verdict {
                worker: offer_worker(&offer).to_owned(),
                warnings: self
                    .scheduler
                    .task(&task)
                    .and_then(crate::scheduler::Task::report)
                    .filter(|r| r.attempt == Some(attempt))
                    .map(super::outside::warnings)
                    .unwrap_or_default(),
                task_id: task,
                attempt,
                accepted,
                failed,
                reasons,
                next: offer,
            },
            Reply::Ack { what, message, task } => {
                ServerMsg::Ack { what: what.into(), message, task_id: Some(task), next: Some(offer) }
            }
            Reply::Push => match offer {
                Offer::Task { task, .. } => {
                    ServerMsg::TaskAssigned { task: Some(task), task_id: None, worker_id: None }
                }
                Offer::AllDone { message, .. }
                | Offer::HandOver { message, .. }
                | Offer::NothingYet { message, .. } => ServerMsg::NoTasks { message },
            },
        };
        self.send(conn, msg);
    }

    /// Hand out work to waiting workers when something they could take
    /// changed; time out the waits that are over.
    pub(super) fn dispatch(&mut self, now: Instant) {
        if self.scheduler.take_work_changed() {
            self.offer_to_waiters(now);
            // Grants made here only took work away from the others.
            self.scheduler.take_work_changed();
        }
        for waiter in self.waiters.expired(now) {
            let offer = self.nothing_yet(&waiter.worker);
            self.answer(waiter.conn, &waiter.reply, offer);
        }
    }

    fn offer_to_waiters(&mut self, now: Instant) {
        let all_done = self.all_done();
        // While nothing is grantable only a waiter's own state can answer it
        // (a task handed back to it, an order to hand over): skip the rest.
        let mut open = all_done || !self.scheduler.candidates(1).is_empty();
        let keys: Vec<u64> = self.waiters.by_key.keys().copied().collect();
        for key in keys {
            let Some(w) = self.waiters.by_key.get(&key) else { continue };
            let (conn, worker, reply) = (w.conn, w.worker.clone(), w.reply.clone());
            let own = self.scheduler.held_by(&worker).is_some()
                || self.scheduler.worker(&worker).is_some_and(scheduler::Worker::must_hand_over);
            if !open && !own {
                continue;
            }
            let offer = if self.scheduler.is_empty() && !all_done { None } else { self.try_offer(&worker, now) };
            match offer {
                // Old-protocol workers only hear about real tasks.
                Some(offer) if matches!(reply, Reply::Push) && !matches!(offer, Offer::Task { .. }) => {}
                Some(offer) => {
                    let granted = matches!(offer, Offer::Task { held: false, .. });
                    self.waiters.remove(key);
                    self.answer(conn, &reply, offer);
                    if granted && !all_done {
                        open = !self.scheduler.candidates(1).is_empty();
                    }
                }
                None => {}
            }
        }
    }

    /// "Nothing yet", with what the worker waits for.
    pub(super) fn nothing_yet(&self, worker: &str) -> Offer {
        let why = self.waiting(worker);
        Offer::NothingYet {
            worker: worker.to_owned(),
            message: format!("nothing yet: {}; run `mcc worker next --as {worker}` again", why.text),
            reason: Some(why),
        }
    }

    /// Why `worker` gets nothing now, from the scheduler's indexes.
    pub(super) fn waiting(&self, worker: &str) -> Waiting {
        let ready = self.scheduler.count(scheduler::TaskState::Ready);
        if let Some(why) = self.budget_waiting() {
            return why;
        }
        if !self.scheduler.candidates(1).is_empty() {
            if let Some(passed) = self.scheduler.passed(worker) {
                return self.passed_over(worker, passed);
            }
            // Something is grantable, yet the workflow gave this worker none.
            let text = if self.problems.any(ProblemKind::WorkflowNotLoaded) {
                format!("{ready} ready, but nothing is handed out until the workflow loads (see `mcc status`)")
            } else {
                format!("{ready} ready, but the workflow's `assign` gave none to {worker}; ask again later")
            };
            return Waiting::new(WaitingFor::Workflow, text);
        }
        match self.scheduler.idle() {
            Idle::Reserved { ready, files, holders } => {
                let mut text =
                    format!("{ready} ready {} {} ", plural(ready, "task writes", "tasks write"), list(&files));
                let in_way: Vec<String> = holders
                    .iter()
                    .map(|(t, w)| w.as_ref().map_or_else(|| t.clone(), |w| format!("{t} (held by {w})")))
                    .collect();
                let _ = write!(
                    text,
                    "while {} {} writing it; ask again when that is done",
                    list(&in_way),
                    plural(in_way.len(), "is", "are")
                );
                let (tasks, workers) = holders.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
                Waiting {
                    kind: WaitingFor::Reservations,
                    text,
                    tasks,
                    workers: workers.into_iter().flatten().collect(),
                    files,
                    needs: Vec::new(),
                }
            }
            Idle::Answer { blocked, tasks } => {
                let text = format!(
                    "{blocked} {} for the engineer's answer ({}: `mcc answer TASK \"...\"`); ask again after it",
                    plural(blocked, "task waits", "tasks wait"),
                    list(&tasks)
                );
                Waiting { tasks, ..Waiting::new(WaitingFor::Answer, text) }
            }
            Idle::Dependencies { waiting, task, on } => {
                let deps: Vec<String> = on
                    .iter()
                    .map(|(d, state, by)| match by {
                        Some(by) => format!("{d} ({state}, held by {by})"),
                        None => format!("{d} ({state})"),
                    })
                    .collect();
                let text = format!(
                    "{waiting} {} on dependencies; the oldest, {task}, waits on {}; ask again when they are accepted",
                    plural(waiting, "task waits", "tasks wait"),
                    list(&deps)
                );
                let workers = on.iter().filter_map(|(_, _, by)| by.clone()).collect();
                let tasks = on.into_iter().map(|(d, _, _)| d).collect();
                Waiting { tasks, workers, ..Waiting::new(WaitingFor::Dependencies, text) }
            }
            Idle::InProgress { tasks } => {
                let shown: Vec<String> =
                    tasks.iter().map(|(t, w)| w.as_ref().map_or_else(|| t.clone(), |w| format!("{t} ({w})"))).collect();
                let text = format!(
                    "the {} left {} in progress: {}; ask again when one is done",
                    plural(tasks.len(), "task", "tasks"),
                    plural(tasks.len(), "is", "are"),
                    list(&shown)
                );
                let (tasks, workers) = tasks.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
                Waiting {
                    tasks,
                    workers: workers.into_iter().flatten().collect(),
                    ..Waiting::new(WaitingFor::InProgress, text)
                }
            }
            Idle::NoWork => Waiting::new(
                WaitingFor::Phase,
                "no task is left to do yet: waiting for the workflow's next phase or new tasks".to_owned(),
            ),
        }
    }
}

impl Engine {
    /// Why `worker` gets none of the grantable tasks: a cap holds them, or
    /// they need what it did not say it can do.
    fn passed_over(&self, worker: &str, passed: Passed) -> Waiting {
        match passed {
            Passed::Capped { cap, busy } => {
                let (scope, max) = match &cap {
                    Cap::Phase { name, max } => (format!("phase {name} allows"), *max),
                    Cap::Kind { name, max } => (format!("tasks of type {name} allow"), *max),
                };
                let shown: Vec<String> =
                    busy.iter().map(|(t, w)| w.as_ref().map_or_else(|| t.clone(), |w| format!("{t} ({w})"))).collect();
                let text = format!(
                    "{scope} {max} {} at once ({} busy: {}); ask again when one is done",
                    plural(max, "worker", "workers"),
                    busy.len(),
                    list(&shown)
                );
                let (tasks, workers) = busy.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
                Waiting {
                    tasks,
                    workers: workers.into_iter().flatten().collect(),
                    ..Waiting::new(WaitingFor::Cap, text)
                }
            }
            Passed::Lacks { tasks, first, missing } => {
                let needs: Vec<String> = missing.iter().map(|n| format!("`{n}`")).collect();
                let said = match self.scheduler.worker(worker).map(scheduler::Worker::can) {
                    Some(can) if !can.is_empty() => format!("it can: {}", can.join(", ")),
                    _ => "it named none with --can".to_owned(),
                };
                let text = format!(
                    "{tasks} {} {}, which {worker} does not have ({said})",
                    plural(tasks, "task needs", "tasks need"),
                    and_list(&needs),
                );
                Waiting { tasks: first, needs: missing, ..Waiting::new(WaitingFor::Capability, text) }
            }
        }
    }
}

impl Waiting {
    fn new(kind: WaitingFor, text: String) -> Self {
        Self { kind, text, tasks: Vec::new(), workers: Vec::new(), files: Vec::new(), needs: Vec::new() }
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// At most three items, then how many more.
fn list(items: &[String]) -> String {
    let mut out = items.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 3 {
        let _ = write!(out, " and {} more", items.len() - 3);
    }
    out
}

pub(super) fn offer_worker(offer: &Offer) -> &str {
    match offer {
        Offer::Task { worker, .. }
        | Offer::NothingYet { worker, .. }
        | Offer::AllDone { worker, .. }
        | Offer::HandOver { worker, .. } => worker,
    }
}
