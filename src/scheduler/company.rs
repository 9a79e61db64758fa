//! Who else was at work while an attempt ran, and who reserves a file: what
//! the hub needs to sort the files a `done` says it changed outside its
//! task (docs/worker.md, "Writes outside a task").
//!
//! An attempt's company is every other worker that held a task at some
//! moment between its grant and its `done`: those holding one when it was
//! granted, and those granted one while it ran. Kept in memory beside the
//! holders, as they are: after a restart an attempt's company is the
//! workers holding tasks then, which is all the hub can still say.

use std::collections::BTreeSet;

use super::{Reservation, Scheduler, Task, TaskState};

impl Scheduler {
    /// `worker` was just granted task `id`: the workers already holding
    /// tasks are its company, and it joins theirs.
    pub(super) fn keep_company(&mut self, id: &str, worker: &str) {
        let mut mine = BTreeSet::new();
        for (other, task) in &self.holding {
            if other != worker && task != id {
                mine.insert(other.clone());
                self.company.entry(task.clone()).or_default().insert(worker.to_owned());
            }
        }
        self.company.insert(id.to_owned(), mine);
    }

    /// After a restart: each held task's company is the other holders.
    pub(super) fn restore_company(&mut self) {
        let held: Vec<(String, String)> = self.holding.iter().map(|(w, t)| (w.clone(), t.clone())).collect();
        for (worker, id) in &held {
            let others = held.iter().filter(|(w, _)| w != worker).map(|(w, _)| w.clone()).collect();
            self.company.insert(id.clone(), others);
        }
    }

    /// The workers that held a task while the current attempt of `id` ran,
    /// leaving out those known to work in a folder of their own.
    pub fn company(&self, id: &str) -> Vec<&str> {
        self.company
            .get(id)
            .into_iter()
            .flatten()
            .filter(|w| !self.own_folder.contains(*w))
            .map(String::as_str)
            .collect()
    }

    /// Say whether `worker`'s last attempt ran in a folder of its own (a
    /// worktree, a remote clone): its changes are then never in the shared
    /// checkout's, and it is nobody's company there.
    pub fn note_own_folder(&mut self, worker: &str, own: bool) {
        if own {
            self.own_folder.insert(worker.to_owned());
        } else {
            self.own_folder.remove(worker);
        }
    }

    /// Whether `worker`'s last attempt ran in a folder of its own.
    pub fn in_own_folder(&self, worker: &str) -> bool {
        self.own_folder.contains(worker)
    }

    /// The in-flight task other than `except` whose declared writes hold
    /// `path` (the oldest, when several do), with its holder.
    pub fn reserved_by(&self, path: &str, except: &str) -> Option<(&Task, Option<&str>)> {
        let wanted = Reservation::new(path);
        [TaskState::Assigned, TaskState::Submitted]
            .into_iter()
            .flat_map(|state| self.ids_in_state(state))
            .filter(|id| id.as_str() != except)
            .filter_map(|id| self.task(id))
            .filter(|t| t.spec.context.output_files.iter().any(|w| Reservation::new(w).overlaps(&wanted)))
            .min_by_key(|t| t.seq())
            .map(|t| (t, t.holder().or(t.last_holder())))
    }
}
