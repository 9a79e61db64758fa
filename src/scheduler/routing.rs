//! Routing: which grantable tasks a worker may take. A task's `needs`
//! against what the worker said it can do (`--can`), and the workflow's
//! caps on how many tasks of one phase or one task type are out at once
//! (`max_workers`). Needs are a default the workflow's `assign` may
//! override by choosing another ready task; caps are a limit nothing
//! passes: a grant over one is refused.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Scheduler, Task, TaskId, TaskState, Worker};

/// How many tasks may be in flight (assigned or submitted) at once, by
/// workflow phase and by task type; what is absent is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// Phase name -> its most tasks in flight (a phase's `max_workers`).
    pub phases: BTreeMap<String, usize>,
    /// Task type -> its most tasks in flight (the workflow's `max_workers = { review = 1 }`).
    pub kinds: BTreeMap<String, usize>,
}

impl Caps {
    pub fn is_empty(&self) -> bool {
        self.phases.is_empty() && self.kinds.is_empty()
    }
}

/// A cap a task is held back by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cap {
    Phase { name: String, max: usize },
    Kind { name: String, max: usize },
}

/// Why a grantable task is not offered to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// The worker lacks these of the task's needs.
    Lacks(Vec<String>),
    /// Its phase or type has as many tasks out as its cap allows.
    Capped(Cap),
}

/// Why a worker gets nothing while tasks are grantable: none is for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Passed {
    /// Ready tasks it could take wait for a cap: the cap, and the tasks in
    /// flight under it (with holders).
    Capped { cap: Cap, busy: Vec<(TaskId, Option<String>)> },
    /// Every grantable task needs something it does not have: how many,
    /// the first few, and what they need that it lacks.
    Lacks { tasks: usize, first: Vec<TaskId>, missing: Vec<String> },
}

/// How many ready tasks [`Scheduler::needs_unmet`] looks at, and how many
/// grantable tasks an offer passes over for one worker at most: with a long
/// queue that no one may take (every task capped, or needing what the
/// worker lacks), each waiting worker costs a bounded walk, and the oldest
/// tasks are the ones held up.
pub const UNMET_WALK: usize = 10_000;

/// Tasks in flight per task type, counted once per offer (in flight are at
/// most about one per worker).
struct Flying<'a> {
    kinds: BTreeMap<&'a str, usize>,
}

impl Scheduler {
    /// The workflow's caps; a change may let waiting workers take work.
    pub fn set_caps(&mut self, caps: Caps) {
        if self.caps != caps {
            self.caps = caps;
            self.work_changed = true;
        }
    }

    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// Record what a worker says it can do and which model it runs (its
    /// last `next` that said so): `can` replaces what it said before when
    /// given; an empty `can` and no `model` keep it.
    pub fn set_kit(&mut self, name: &str, can: Vec<String>, model: Option<String>, now: Instant) {
        self.see_worker(name, now);
        let worker = self.workers.get_mut(name).expect("just seen");
        let mut changed = false;
        if !can.is_empty() && worker.can != can {
            worker.can = can;
            changed = true;
        }
        if model.is_some() && worker.model != model {
            worker.model = model;
            changed = true;
        }
        if changed {
            self.changes.workers.insert(name.to_owned());
        }
    }

    fn flying(&self) -> Flying<'_> {
        let mut kinds = BTreeMap::new();
        if !self.caps.kinds.is_empty() {
            for state in [TaskState::Assigned, TaskState::Submitted] {
                for id in self.ids_in_state(state) {
                    *kinds.entry(self.tasks[id].spec.kind.as_str()).or_insert(0) += 1;
                }
            }
        }
        Flying { kinds }
    }

    /// The cap `task` is held back by now, if any.
    fn capped(&self, task: &Task, flying: &Flying<'_>) -> Option<Cap> {
        if let Some(phase) = task.phase()
            && let Some(&max) = self.caps.phases.get(phase)
        {
            let out = self.phase_count(phase, TaskState::Assigned) + self.phase_count(phase, TaskState::Submitted);
            if out >= max {
                return Some(Cap::Phase { name: phase.to_owned(), max });
            }
        }
        let kind = task.spec.kind.as_str();
        if let Some(&max) = self.caps.kinds.get(kind)
            && flying.kinds.get(kind).copied().unwrap_or(0) >= max
        {
            return Some(Cap::Kind { name: kind.to_owned(), max });
        }
        None
    }

    /// The cap a grant of `task` would go over, if any.
    pub fn cap_reached(&self, task: &Task) -> Option<Cap> {
        if self.caps.is_empty() {
            return None;
        }
        self.capped(task, &self.flying())
    }

    /// Why `worker` is not offered `task` by default: needs first (they
    /// last), then caps (they pass).
    fn unfit(worker: Option<&Worker>, task: &Task, capped: impl FnOnce() -> Option<Cap>) -> Option<Unfit> {
        let can = worker.map_or(&[][..], |w| &w.can[..]);
        let lacks: Vec<String> = task.spec.needs.iter().filter(|n| !can.contains(n)).cloned().collect();
        if !lacks.is_empty() {
            return Some(Unfit::Lacks(lacks));
        }
        capped().map(Unfit::Capped)
    }

    /// The grantable tasks `worker` may take by default, in FIFO order, at
    /// most `limit`; and whether some were passed over only because it
    /// lacks their needs (its `assign` may still choose one).
    pub fn candidates_for(&self, worker: &Worker, limit: usize) -> (Vec<&Task>, bool) {
        let flying = self.flying();
        let mut fit = Vec::new();
        let mut lacking = false;
        for id in self.index.grantable().take(UNMET_WALK) {
            if fit.len() >= limit {
                break;
            }
            let task = &self.tasks[id];
            match Self::unfit(Some(worker), task, || self.capped(task, &flying)) {
                None => fit.push(task),
                Some(Unfit::Lacks(_)) => lacking = true,
                Some(Unfit::Capped(_)) => {}
            }
        }
        (fit, lacking)
    }

    /// Why `worker` gets no grantable task by default, or `None` when one
    /// is for it (or none is grantable). A task it could take but for a cap
    /// is the more telling reason: a slot frees without anyone acting.
    pub fn passed(&self, worker: &str) -> Option<Passed> {
        let me = self.workers.get(worker);
        let flying = self.flying();
        let (mut lacking, mut first, mut missing) = (0, Vec::new(), Vec::<String>::new());
        let mut capped = None;
        for id in self.index.grantable().take(UNMET_WALK) {
            let task = &self.tasks[id];
            match Self::unfit(me, task, || self.capped(task, &flying))? {
                Unfit::Lacks(lacks) => {
                    lacking += 1;
                    if first.len() < 5 {
                        first.push(id.clone());
                    }
                    for need in lacks {
                        if !missing.contains(&need) {
                            missing.push(need);
                        }
                    }
                }
                Unfit::Capped(cap) => {
                    capped.get_or_insert(cap);
                }
            }
        }
        if let Some(cap) = capped {
            let busy = [TaskState::Assigned, TaskState::Submitted]
                .into_iter()
                .flat_map(|s| self.ids_in_state(s))
                .map(|id| &self.tasks[id])
                .filter(|t| match &cap {
                    Cap::Phase { name, .. } => t.phase() == Some(name),
                    Cap::Kind { name, .. } => &t.spec.kind == name,
                })
                .map(|t| (t.spec.id.clone(), t.holder().map(str::to_owned)))
                .collect();
            return Some(Passed::Capped { cap, busy });
        }
        (lacking > 0).then_some(Passed::Lacks { tasks: lacking, first, missing })
    }

    /// Needs of ready tasks that no worker `present` says it has: each
    /// need with how many ready tasks want it, from the oldest
    /// [`UNMET_WALK`] ready tasks (status: work nobody here can take).
    pub fn needs_unmet(&self, present: impl Fn(&Worker) -> bool) -> Vec<(String, usize)> {
        let present: Vec<&Worker> = self.workers.values().filter(|w| present(w)).collect();
        let mut unmet: Vec<(String, usize)> = Vec::new();
        for id in self.ids_in_state(TaskState::Ready).take(UNMET_WALK) {
            for need in &self.tasks[id].spec.needs {
                if present.iter().any(|w| w.can.contains(need)) {
                    continue;
                }
                match unmet.iter_mut().find(|(n, _)| n == need) {
                    Some((_, count)) => *count += 1,
                    None => unmet.push((need.clone(), 1)),
                }
            }
        }
        unmet
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::scheduler::Offer;
    use crate::task::TaskSpec;

    #[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
    fn fifo(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, Infallible> {
        Ok(ready.first().map(|t| t.spec.id.clone()))
    }

    fn needing(id: &str, needs: &[&str]) -> TaskSpec {
        let mut t = TaskSpec::new(id, format!("do {id}"));
        t.needs = needs.iter().map(|s| (*s).to_owned()).collect();
        t
    }

    fn can(s: &mut Scheduler, worker: &str, can: &[&str], now: Instant) {
        s.set_kit(worker, can.iter().map(|c| (*c).to_owned()).collect(), None, now);
    }

    #[test]
    fn a_worker_is_offered_only_tasks_it_has_every_need_of_in_fifo_order() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.add_tasks(vec![needing("a", &["rust", "sql"]), needing("b", &["rust"]), needing("c", &[])], None, now)
            .unwrap();
        can(&mut s, "r", &["rust"], now);
        let me = s.worker("r").unwrap();
        let (fit, lacking) = s.candidates_for(me, 64);
        assert_eq!(fit.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert!(lacking);
        assert_eq!(s.offer("r", now, 64, fifo).unwrap(), Offer::Granted("b".into()));
        // A worker that said nothing takes what needs nothing; then only `a` is left, which neither has.
        assert_eq!(s.offer("x", now, 1, fifo).unwrap(), Offer::Granted("c".into()));
        assert_eq!(s.offer("y", now, 1, fifo).unwrap(), Offer::Nothing);
        assert_eq!(
            s.passed("y"),
            Some(Passed::Lacks { tasks: 1, first: vec!["a".into()], missing: vec!["rust".into(), "sql".into()] })
        );
        // What a worker can do is kept until it says otherwise; no model keeps the model.
        s.set_kit("r", Vec::new(), Some("opus".into()), now);
        assert_eq!(s.worker("r").unwrap().can(), ["rust"]);
        assert_eq!(s.worker("r").unwrap().model(), Some("opus"));
    }

    #[test]
    fn a_phase_cap_refuses_a_grant_over_it_and_a_task_leaving_flight_wakes_the_waiters() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.add_tasks(vec![TaskSpec::new("a", "a"), TaskSpec::new("b", "b"), TaskSpec::new("c", "c")], Some("p"), now)
            .unwrap();
        s.set_caps(Caps { phases: [("p".to_owned(), 2)].into(), kinds: BTreeMap::new() });
        assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
        assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("b".into()));
        assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Nothing);
        // Not even by name: a cap is a limit, not a default.
        assert!(!s.grant("c", "w3", now));
        let Some(Passed::Capped { cap, busy }) = s.passed("w3") else { panic!("held by the cap") };
        assert_eq!(cap, Cap::Phase { name: "p".into(), max: 2 });
        assert_eq!(busy.len(), 2);
        s.take_work_changed();
        s.block("w1", "a", None, "which?", now).unwrap();
        assert!(s.take_work_changed(), "a blocked task leaves flight: a waiter may take its slot");
        assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Granted("c".into()));
    }

    #[test]
    fn a_type_cap_counts_the_tasks_of_that_type_in_flight_in_any_phase() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        let review = |id: &str| {
            let mut t = TaskSpec::new(id, id);
            t.kind = "review".into();
            t
        };
        s.add_tasks(vec![review("r1")], Some("one"), now).unwrap();
        s.add_tasks(vec![review("r2"), TaskSpec::new("t", "t")], Some("two"), now).unwrap();
        s.set_caps(Caps { phases: BTreeMap::new(), kinds: [("review".to_owned(), 1)].into() });
        assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("r1".into()));
        assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("t".into()));
        assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Nothing);
        assert_eq!(s.cap_reached(s.task("r2").unwrap()), Some(Cap::Kind { name: "review".into(), max: 1 }));
    }
}
