//! What changed since the store last committed: the tasks, leases and
//! workers to write, the events to append, and whether a waiting worker
//! could be offered something new.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Applied, Scheduler, TaskId};
use crate::event::EventKind;

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

impl Scheduler {
    /// Record one line of the event log.
    pub(super) fn event(
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

    /// Take what changed, for the store to commit.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Events recorded since the store last committed, oldest first: what a
    /// workflow's hooks react to.
    pub fn pending_events(&self) -> &[Event] {
        &self.changes.events
    }

    pub(super) fn touch_task(&mut self, id: &str) {
        self.changes.tasks.insert(id.to_owned());
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
}
