//! Races (best of N): a task with `race = N` is worked by up to N workers
//! at once, and one result is kept.
//!
//! Design. Each racer is a task of its own (`T~race1`, `T~race2`, ...): an
//! ordinary task with one holder, its own attempt, lease and fence, so the
//! rule of one holder per grant holds unchanged (a stale report of a
//! superseded racer is refused by the same `check_holder`), and every change
//! to a race is a task row committed with its batch like any other. A racer
//! writes a copy of the race's write files under `.mcc/races/T/K/` (its own
//! `outputFiles`; it reads the files in place), so nothing in place is
//! touched while racers work and no racer's files reserve another's. The
//! race's own task is `assigned` with no holder while its racers run: it is
//! never granted, its files in place stay reserved and its dependents wait.
//! When a racer moves, the engine asks the workflow's `choose` (by default:
//! the first accepted); the winner's files move into place and then, in the
//! same batch, [`Scheduler::win_race`] accepts the race and cancels the
//! other racers ("another attempt won"). After a `kill -9` the races are
//! rebuilt from the tasks (a racer names its race in `raceOf`) and decided
//! again: files moved before the crash are moved again from the same copy.

use serde_json::{Value, json};

use super::{Scheduler, Task, TaskId, TaskState};
use crate::event::EventKind;
use crate::task::{TaskSpec, now_rfc3339};

/// A task's field asking for a race: how many racers.
pub const RACE: &str = "race";
/// A racer's field naming its race's task.
pub const RACE_OF: &str = "raceOf";
/// A racer's field: its number in the race, from 1.
pub const RACER: &str = "racer";
/// A racer's field: the folder, relative to the root, its copy goes in.
pub const RACE_COPY: &str = "raceCopy";
/// The folder of `.mcc/` racers' copies go in.
pub const RACES_DIR: &str = "races";
pub use crate::task::MAX_RACE;

/// How many racers `spec` asks for, when it is a race (2 to [`MAX_RACE`]).
pub fn race_size(spec: &TaskSpec) -> Option<u32> {
    if race_of(spec).is_some() {
        return None;
    }
    let n = spec.extra.get(RACE).and_then(Value::as_u64).filter(|n| (2..=MAX_RACE).contains(n))?;
    u32::try_from(n).ok()
}

/// The race a racer runs in.
pub fn race_of(spec: &TaskSpec) -> Option<&str> {
    spec.extra.get(RACE_OF).and_then(Value::as_str)
}

/// A racer's number in its race.
pub fn racer_number(spec: &TaskSpec) -> Option<u32> {
    spec.extra.get(RACER).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok())
}

/// A racer's copy folder, relative to the root (`.mcc/races/T/K`).
pub fn race_copy(spec: &TaskSpec) -> Option<&str> {
    race_of(spec).and(spec.extra.get(RACE_COPY).and_then(Value::as_str))
}

/// The id of racer `k` of task `id`.
fn racer_id(id: &str, k: u32) -> TaskId {
    format!("{id}~race{k}")
}

/// A task id as one folder name: letters, digits, `-` and `_` kept, any
/// other character `_`, and then a hash of the id so two ids never share a
/// folder. The folder is stored in the racer, so the hash need not be
/// stable across versions.
fn folder_name(id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let plain: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' }).collect();
    if plain == id && !plain.is_empty() {
        return plain;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    format!("{plain}-{:016x}", hasher.finish())
}

/// Racer `k` of the race `parent`: the same work, its write files moved
/// into its copy folder, reading the files in place.
fn racer_spec(parent: &TaskSpec, k: u32, of: u32) -> TaskSpec {
    let copy = format!("{}/{RACES_DIR}/{}/{k}", crate::layout::DIR, folder_name(&parent.id));
    let mut spec = parent.clone();
    spec.id = racer_id(&parent.id, k);
    spec.dependencies.clear();
    spec.extra.remove(RACE);
    spec.extra.remove("createdAt");
    spec.extra.insert(RACE_OF.into(), Value::from(parent.id.clone()));
    spec.extra.insert(RACER.into(), Value::from(k));
    spec.extra.insert(RACE_COPY.into(), Value::from(copy.clone()));
    let outputs = &parent.context.output_files;
    spec.context.output_files = outputs.iter().map(|p| format!("{copy}/{}", p.trim_start_matches("./"))).collect();
    for p in outputs {
        if !spec.context.target_files.contains(p) {
            spec.context.target_files.push(p.clone());
        }
    }
    let example = outputs
        .first()
        .map_or_else(String::new, |p| format!(" (for `{p}` write `{copy}/{}`)", p.trim_start_matches("./")));
    spec.description = format!(
        "Racer {k} of {of} for task {}: write your version of its files under {copy}/{example}, \
         starting from the files in place; nothing in place is touched while the race runs, and the \
         chosen racer's files move into place.\n\n{}",
        parent.id, parent.description
    );
    spec
}

impl Scheduler {
    /// A task with `race` became ready: it is held by nobody (assigned)
    /// while `n` racers of its own become ready in its place.
    pub(super) fn start_race(&mut self, id: &str, n: u32) {
        self.transition(id, TaskState::Assigned);
        let (spec, phase) = {
            let task = &self.tasks[id];
            (task.spec.clone(), task.phase().map(str::to_owned))
        };
        let known = self.racers.get(id).map_or(0, Vec::len);
        let first = u32::try_from(known).unwrap_or(u32::MAX - MAX_RACE as u32) + 1;
        let created_at = now_rfc3339();
        let mut started = Vec::new();
        for k in first..first + n {
            let racer = racer_spec(&spec, k, n);
            if self.tasks.contains_key(&racer.id) {
                // A task of that name was added by hand: this racer is not run.
                continue;
            }
            let rid = self.create(racer, phase.as_deref(), &created_at);
            self.touch_task(&rid);
            self.event(EventKind::Created, Some(&rid), None, None, json!({ RACE_OF: id }));
            self.racers.entry(id.to_owned()).or_default().push(rid.clone());
            started.push(rid);
        }
        for rid in &started {
            self.transition(rid, TaskState::Ready);
        }
        self.races_moved.insert(id.to_owned());
    }

    /// The tasks of races whose racers moved since the last call (and, after
    /// a restart, every race still running): the engine decides each.
    pub fn take_races_moved(&mut self) -> Vec<TaskId> {
        std::mem::take(&mut self.races_moved).into_iter().collect()
    }

    /// The racers of the race `id`, every round of it, in order.
    pub fn racers(&self, id: &str) -> Vec<&Task> {
        let mut racers: Vec<&Task> =
            self.racers.get(id).into_iter().flatten().filter_map(|r| self.tasks.get(r)).collect();
        racers.sort_by_key(|t| t.seq());
        racers
    }

    /// The racer that won the race `racer` ran in, when `racer` lost it.
    pub fn lost_to(&self, racer: &str) -> Option<(&str, &Task)> {
        let task = self.tasks.get(racer)?;
        let parent = race_of(&task.spec)?;
        if task.state() != TaskState::Cancelled || self.tasks.get(parent)?.state() != TaskState::Accepted {
            return None;
        }
        let winner = self.racers(parent).into_iter().find(|t| t.state() == TaskState::Accepted)?;
        Some((parent, winner))
    }

    /// `winner`'s files are in place: the race is accepted, its dependents
    /// released, and every other racer cancelled, told another attempt won.
    pub fn win_race(&mut self, id: &str, winner: &str) {
        let by = self.tasks.get(winner).and_then(|t| t.last_holder().map(str::to_owned));
        let attempt = self.tasks.get(id).map(Task::attempt);
        self.transition(id, TaskState::Accepted);
        let task = self.tasks.get_mut(id).expect("a race's task is known");
        task.completed_at = Some(now_rfc3339());
        task.reasons.clear();
        // With its attempt: the store keeps the files moved into place under it.
        self.event(EventKind::Accepted, Some(id), by.as_deref(), attempt, json!({ "winner": winner }));
        self.release_dependents(id);
        // A racer that failed is cancelled too: the race it failed in is
        // won, and its phase completes as when every task is accepted or cancelled.
        let others: Vec<TaskId> = self
            .racers(id)
            .into_iter()
            .filter(|t| t.spec.id != winner && t.state() != TaskState::Cancelled)
            .map(|t| t.spec.id.clone())
            .collect();
        for other in others {
            let task = self.tasks.get_mut(&other).expect("listed");
            let failed = if task.state() == TaskState::Failed { std::mem::take(&mut task.reasons) } else { Vec::new() };
            task.reasons = vec![format!("another attempt won: {winner}")];
            task.reasons.extend(failed);
            let (holder, attempt) = (task.holder().map(str::to_owned), task.attempt());
            self.transition(&other, TaskState::Cancelled);
            self.event(
                EventKind::Cancelled,
                Some(&other),
                holder.as_deref(),
                Some(attempt),
                json!({ "reason": "another attempt won", "winner": winner }),
            );
        }
    }

    /// An accepted racer whose copy cannot move into place (a link, past
    /// the bound): it fails, with why, and the race goes on without it.
    pub fn disqualify(&mut self, racer: &str, why: &str) {
        let Some(task) = self.tasks.get_mut(racer) else { return };
        task.reasons = vec![why.to_owned()];
        let (by, attempt) = (task.last_holder().map(str::to_owned), task.attempt());
        self.transition(racer, TaskState::Failed);
        self.event(EventKind::Failed, Some(racer), by.as_deref(), Some(attempt), json!({ "reason": why }));
    }

    /// Every racer ended and none was accepted: the race fails.
    pub fn fail_race(&mut self, id: &str) {
        let reasons: Vec<String> = self
            .racers(id)
            .into_iter()
            .filter(|t| t.state() == TaskState::Failed)
            .map(|t| format!("{}: {}", t.spec.id, t.reasons().join("; ")))
            .collect();
        self.transition(id, TaskState::Failed);
        let task = self.tasks.get_mut(id).expect("a race's task is known");
        task.reasons =
            if reasons.is_empty() { vec!["every racer ended without an accepted result".to_owned()] } else { reasons };
        self.event(EventKind::Failed, Some(id), None, None, json!({ "reason": "every racer failed" }));
    }

    /// The race's task ended otherwise (cancelled): its open racers end too.
    pub fn end_race(&mut self, id: &str) {
        let state = self.tasks.get(id).map_or(TaskState::Cancelled, Task::state);
        let open: Vec<TaskId> =
            self.racers(id).into_iter().filter(|t| !t.state().is_terminal()).map(|t| t.spec.id.clone()).collect();
        for racer in open {
            let task = self.tasks.get_mut(&racer).expect("listed");
            task.reasons = vec![format!("its race, task {id}, is {state}")];
            let holder = task.holder().map(str::to_owned);
            self.transition(&racer, TaskState::Cancelled);
            self.event(EventKind::Cancelled, Some(&racer), holder.as_deref(), None, json!({ "reason": "race ended" }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Instant;

    use super::*;
    use crate::scheduler::{Offer, Verdict, Worker};
    use crate::task::Report;

    #[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
    fn fifo(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, Infallible> {
        Ok(ready.first().map(|t| t.spec.id.clone()))
    }

    fn raced(id: &str, n: u32, after: &[&str]) -> TaskSpec {
        let mut t = TaskSpec::new(id, "write it");
        t.context.output_files = vec!["out/a.md".to_owned()];
        t.dependencies = after.iter().map(|s| (*s).to_owned()).collect();
        t.extra.insert(RACE.into(), Value::from(n));
        t
    }

    fn finish(s: &mut Scheduler, racer: &str, worker: &str, now: Instant) {
        let mut report = Report::completed(racer, worker, vec![]);
        report.attempt = Some(s.task(racer).unwrap().attempt());
        s.submit(worker, racer, report, now).unwrap();
        s.judge(racer, Verdict::Accept, now).unwrap();
    }

    #[test]
    fn a_race_goes_to_its_racers_each_writing_its_own_copy_and_is_never_granted_itself() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.add_tasks(vec![raced("t", 2, &[])], None, now).unwrap();
        assert_eq!(s.task("t").unwrap().state(), TaskState::Assigned);
        assert_eq!(s.task("t").unwrap().holder(), None);
        assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("t~race1".into()));
        assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("t~race2".into()));
        assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Nothing);
        let racer = s.task("t~race2").unwrap();
        assert_eq!(racer.spec.context.output_files, [".mcc/races/t/2/out/a.md"]);
        assert!(racer.spec.context.target_files.contains(&"out/a.md".to_owned()), "it reads the file in place");
        assert_eq!(race_copy(&racer.spec), Some(".mcc/races/t/2"));
        assert_eq!(race_size(&racer.spec), None, "a racer is no race of its own");
    }

    #[test]
    fn the_winner_accepts_the_race_releases_its_dependents_and_cancels_the_others() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.add_tasks(vec![raced("t", 3, &[])], None, now).unwrap();
        let mut after = TaskSpec::new("later", "after t");
        after.dependencies = vec!["t".to_owned()];
        s.add_tasks(vec![after], None, now).unwrap();
        s.offer("w1", now, 64, fifo).unwrap();
        s.offer("w2", now, 64, fifo).unwrap();
        finish(&mut s, "t~race2", "w2", now);
        assert_eq!(s.take_races_moved(), ["t".to_owned()]);
        s.win_race("t", "t~race2");
        assert_eq!(s.task("t").unwrap().state(), TaskState::Accepted);
        assert_eq!(s.task("later").unwrap().state(), TaskState::Ready);
        for loser in ["t~race1", "t~race3"] {
            assert_eq!(s.task(loser).unwrap().state(), TaskState::Cancelled, "{loser}");
            assert_eq!(s.lost_to(loser).map(|(race, w)| (race, w.spec.id.as_str())), Some(("t", "t~race2")));
        }
        let mut stale = Report::completed("t~race1", "w1", vec![]);
        stale.attempt = Some(1);
        assert_eq!(s.submit("w1", "t~race1", stale, now).unwrap_err().code(), "not_held", "a loser's report is fenced");
    }

    #[test]
    fn a_cancelled_race_ends_its_racers_and_one_whose_racers_all_failed_fails() {
        let now = Instant::now();
        let mut s = Scheduler::new(crate::scheduler::Settings { max_attempts: 1, ..Default::default() });
        s.add_tasks(vec![raced("a", 2, &[]), raced("b", 2, &[])], None, now).unwrap();
        s.take_races_moved();
        s.cancel("a").unwrap();
        assert_eq!(s.take_races_moved(), ["a".to_owned()], "the race's end is its to decide");
        s.end_race("a");
        assert!(s.racers("a").iter().all(|t| t.state() == TaskState::Cancelled));
        for racer in ["b~race1", "b~race2"] {
            assert!(s.grant(racer, "w", now));
            s.fail("w", racer, None, "cannot", now).unwrap();
        }
        s.fail_race("b");
        let b = s.task("b").unwrap();
        assert_eq!(b.state(), TaskState::Failed);
        assert!(b.reasons().join(" ").contains("b~race1: cannot"), "{:?}", b.reasons());
    }

    #[test]
    fn a_restored_scheduler_decides_its_running_races_again() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.add_tasks(vec![raced("t", 2, &[])], None, now).unwrap();
        let tasks: Vec<Task> = s.tasks().cloned().collect();
        let restored = Scheduler::restore_from(crate::scheduler::Settings::default(), tasks.len(), tasks, Vec::new());
        assert_eq!(restored.racers("t").len(), 2);
        let mut restored = restored;
        assert_eq!(restored.take_races_moved(), ["t".to_owned()]);
    }
}
