//! Waiting workers and offers: what a worker gets when it asks, how an
//! answer is wrapped (offer, verdict, ack, old-protocol push), and handing
//! work to whoever waits when some turns up.

use std::time::{Duration, Instant};

use super::{ConnId, Engine, MAX_WAITERS, Reply, Waiter};
use crate::scheduler;
use crate::wire::{Offer, ServerMsg};

impl Engine {
    /// Offer work to an mcc worker; wait when there is none and `wait` allows.
    pub(super) fn offer(&mut self, conn: ConnId, worker: &str, wait: Duration, reply: Reply, now: Instant) {
        // A newer command of the same worker supersedes an older wait: answer it now.
        let (superseded, kept): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.worker == worker && w.conn != conn && w.deadline.is_some());
        self.waiters = kept;
        for old in superseded {
            self.answer(old.conn, &old.reply, nothing_yet(worker));
        }
        match self.try_offer(worker, now) {
            Some(offer) => self.answer(conn, &reply, offer),
            None if wait.is_zero() => {
                let offer = nothing_yet(worker);
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

    /// What the worker gets right now, or `None` if it should wait.
    pub(super) fn try_offer(&mut self, worker: &str, now: Instant) -> Option<Offer> {
        self.scheduler.touch(worker, now);
        if let Some(held) = self.scheduler.held_by(worker) {
            let id = held.spec.id.clone();
            return Some(self.task_offer(worker, &id, true));
        }
        if self.scheduler.worker(worker).is_some_and(scheduler::Worker::must_hand_over) {
            return Some(Offer::HandOver {
                worker: worker.to_owned(),
                message: format!(
                    "{worker} reported a context score of 2 or less: take no more work. Start a fresh chat and run `mcc worker next --as NEW-NAME` there"
                ),
            });
        }
        let candidates = self.scheduler.candidates(64);
        let choice = if candidates.is_empty() {
            Ok(None)
        } else {
            let me = self.scheduler.worker(worker).expect("touched above");
            self.policy.assign(me, &candidates, &self.scheduler)
        };
        match choice {
            Ok(Some(id)) if self.scheduler.grant(&id, worker, now) => {
                self.to_coordinator(ServerMsg::TaskAssigned {
                    task: None,
                    task_id: Some(id.clone()),
                    worker_id: Some(worker.to_owned()),
                });
                Some(self.task_offer(worker, &id, false))
            }
            Ok(Some(id)) => {
                self.problem(format!(
                    "workflow assign chose `{id}`, which is not among the ready tasks; {worker} got nothing"
                ));
                None
            }
            Ok(None) if self.all_done() => {
                Some(Offer::AllDone { worker: worker.to_owned(), message: "all work is done, you can stop".to_owned() })
            }
            Ok(None) => None,
            Err(e) => {
                self.problem(format!("workflow assign: {e}"));
                None
            }
        }
    }

    pub(super) fn task_offer(&self, worker: &str, id: &str, held: bool) -> Offer {
        let task = self.scheduler.task(id).expect("offered task exists");
        Offer::Task {
            worker: worker.to_owned(),
            task: task.to_wire(),
            attempt: task.attempt,
            attempts_used: task.attempts_used(),
            max_attempts: self.scheduler.settings.max_attempts,
            lease_ms: task.lease_ms,
            held,
            returning: task.last_holder.as_deref() == Some(worker),
            reasons: task.reasons.clone(),
            question: task.answer.as_ref().and(task.question.clone()),
            answer: task.answer.clone(),
            phase: task.phase.clone(),
        }
    }

    pub(super) fn answer(&mut self, conn: ConnId, reply: &Reply, offer: Offer) {
        let msg = match reply.clone() {
            Reply::Offer => ServerMsg::Offer { offer },
            Reply::Verdict { task, attempt, accepted, failed, reasons } => ServerMsg::Verdict {
                worker: offer_worker(&offer).to_owned(),
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

    /// Hand out work to waiting workers; time out the waits that are over.
    pub(super) fn dispatch(&mut self, now: Instant) {
        let all_done = self.all_done();
        let mut i = 0;
        while i < self.waiters.len() {
            let (conn, worker, deadline, reply) = {
                let w = &self.waiters[i];
                (w.conn, w.worker.clone(), w.deadline, w.reply.clone())
            };
            let offer = if self.scheduler.is_empty() && !all_done { None } else { self.try_offer(&worker, now) };
            match offer {
                Some(offer) if matches!(reply, Reply::Push) && !matches!(offer, Offer::Task { .. }) => {
                    // Old-protocol workers only hear about real tasks.
                    i += 1;
                }
                Some(offer) => {
                    self.waiters.remove(i);
                    self.answer(conn, &reply, offer);
                }
                None if deadline.is_some_and(|d| d <= now) => {
                    self.waiters.remove(i);
                    self.answer(conn, &reply, nothing_yet(&worker));
                }
                None => i += 1,
            }
        }
    }
}

pub(super) fn offer_worker(offer: &Offer) -> &str {
    match offer {
        Offer::Task { worker, .. }
        | Offer::NothingYet { worker, .. }
        | Offer::AllDone { worker, .. }
        | Offer::HandOver { worker, .. } => worker,
    }
}

pub(super) fn nothing_yet(worker: &str) -> Offer {
    Offer::NothingYet {
        worker: worker.to_owned(),
        message: format!("nothing yet: run `mcc worker next --as {worker}` again"),
    }
}
