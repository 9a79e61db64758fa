//! Assignment: what a worker asking for work gets, through the one offer
//! path the hub runs (the workflow's `assign` passed in, shown the tasks
//! [`super::routing`] lets the worker take), and why nothing is grantable
//! when nothing is.

use std::time::Instant;

use super::{Scheduler, Task, TaskId, TaskState, Worker};

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
    /// `assign` chose a task that is not ready or whose files are reserved:
    /// nothing was granted.
    NotGrantable(TaskId),
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

impl Scheduler {
    /// Ready tasks this worker may take now, in FIFO order, at most `limit`:
    /// those whose outputs overlap no in-flight task's are left out.
    pub fn candidates(&self, limit: usize) -> Vec<&Task> {
        self.index.candidates(limit).into_iter().map(|id| &self.tasks[id]).collect()
    }

    /// Why nothing is grantable now, from the indexes; meant for when
    /// `candidates` is empty.
    pub fn idle(&self) -> Idle {
        if let Some((files, by)) = self.index.first_blocked() {
            let holders = by
                .into_iter()
                .map(|id| {
                    let t = &self.tasks[id];
                    (id.clone(), t.holder().map(str::to_owned).or_else(|| t.last_holder().map(str::to_owned)))
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
                .filter(|d| d.state() != TaskState::Accepted)
                .map(|d| (d.spec.id.clone(), d.state(), d.holder().map(str::to_owned)))
                .collect();
            return Idle::Dependencies { waiting, task: first.clone(), on };
        }
        let busy: Vec<(TaskId, Option<String>)> = [TaskState::Assigned, TaskState::Submitted]
            .into_iter()
            .flat_map(|s| self.ids_in_state(s))
            .map(|id| (id.clone(), self.tasks[id].holder().map(str::to_owned)))
            .collect();
        if busy.is_empty() { Idle::NoWork } else { Idle::InProgress { tasks: busy } }
    }

    /// What `worker` gets: its held task, a new one chosen by `assign` (the
    /// workflow's decision) from at most `choices` grantable tasks in FIFO
    /// order, nothing, or an order to hand over. The engine grants through
    /// here and nowhere else. An `assign` error changes nothing but the
    /// worker's lease and last sight.
    pub fn offer<E>(
        &mut self,
        worker: &str,
        now: Instant,
        choices: usize,
        assign: impl FnOnce(&Worker, &[&Task], &Scheduler) -> Result<Option<TaskId>, E>,
    ) -> Result<Offer, E> {
        self.touch(worker, now);
        if let Some(held) = self.held_by(worker) {
            return Ok(Offer::Held(held.spec.id.clone()));
        }
        let Some(me) = self.workers.get(worker) else { return Ok(Offer::Nothing) };
        if me.must_hand_over() {
            return Ok(Offer::HandOver);
        }
        // Only tasks it has the needs for and under their caps; when it lacks
        // the needs of every one, `assign` is still asked (it may override).
        let (candidates, lacking) = self.candidates_for(me, choices);
        if candidates.is_empty() && !lacking {
            return Ok(Offer::Nothing);
        }
        let Some(id) = assign(me, &candidates, self)? else { return Ok(Offer::Nothing) };
        Ok(if self.grant(&id, worker, now) { Offer::Granted(id) } else { Offer::NotGrantable(id) })
    }

    /// Hand a ready, unreserved task under its caps to a worker under a new
    /// lease and attempt. False (and nothing changes) when the task is not
    /// grantable.
    pub fn grant(&mut self, id: &str, worker: &str, now: Instant) -> bool {
        let Some(task) = self.tasks.get(id) else { return false };
        if task.state() != TaskState::Ready {
            return false;
        }
        if !self.index.is_free(task.group()) {
            return false;
        }
        if self.cap_reached(task).is_some() {
            return false;
        }
        self.see_worker(worker, now);
        self.regrant(id, worker, now);
        true
    }
}
