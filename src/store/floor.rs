//! The least a handoff costs the `SQLite` store, with nothing else around
//! it: what `cargo bench --bench original` prints beside the disk's
//! `fdatasync`, so that a hub's figures can be read against the floor its
//! store sets (issue 25).
//!
//! Synchronous workers, each holding one task at a time, as the hub's engine
//! and writer would serve them but on one thread and without a socket: each
//! worker's report, its acceptance and its next grant are gathered into rows
//! and written in one transaction for all the workers (the largest group
//! synchronous workers can give a commit), which returns when it is
//! durable. Only the writes are timed.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Backend, Location, Notes, Options, Rows, StoreError};
use crate::scheduler::{Scheduler, Settings, Task, TaskId, Verdict, Worker};
use crate::task::{Report, TaskSpec};

/// What the handoffs' commits took.
#[derive(Debug, Clone)]
pub struct Floor {
    /// Handoffs per commit: one per worker.
    pub workers: usize,
    /// Each commit, from the call to its return (durable), sorted.
    pub commits: Vec<Duration>,
    /// CPU time (user and system) the committing thread spent in them, in all.
    pub cpu: Duration,
}

impl Floor {
    /// The median commit.
    pub fn median(&self) -> Duration {
        self.commits.get(self.commits.len() / 2).copied().unwrap_or_default()
    }

    /// CPU per commit.
    pub fn cpu_per_commit(&self) -> Duration {
        self.cpu / u32::try_from(self.commits.len().max(1)).unwrap_or(u32::MAX)
    }

    /// The most handoffs a second these workers can make on this store,
    /// committing back to back: a commit's worth per median commit.
    pub fn tasks_per_s(&self) -> f64 {
        self.workers as f64 / self.median().as_secs_f64()
    }
}

/// Why the floor could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler refused a step of the handoffs: {0}")]
    Refused(#[from] crate::scheduler::Refusal),
    #[error("a worker of the floor holds no task: the scheduler granted it none")]
    NothingHeld,
    #[error("reading this thread's CPU time from /proc/thread-self/schedstat: {0}")]
    Clock(String),
}

/// `commits` commits of `workers` handoffs each through a fresh `SQLite`
/// store in `dir` (a `.mcc/` folder): every worker's done, accept and next
/// grant.
pub fn commit_floor(dir: &Path, commits: usize, workers: usize) -> Result<Floor, FloorError> {
    let names: Vec<String> = (1..=workers).map(|w| format!("w{w}")).collect();
    let mut store = super::open(&Location::Sqlite(dir.to_owned()), &Options::default())?;
    let mut scheduler = Scheduler::new(Settings::default());
    let now = Instant::now();
    let total = (commits + 1) * workers;
    let specs = (0..total).map(|i| TaskSpec::new(format!("t{i}"), "one task of the original's load")).collect();
    scheduler.add_tasks(specs, None, now)?;
    for name in &names {
        scheduler.offer(name, now, 1, oldest)?;
    }
    write(&mut *store, &mut scheduler)?;

    let mut took = Vec::with_capacity(commits);
    let mut cpu = Duration::ZERO;
    for _ in 0..commits {
        for name in &names {
            let id = scheduler.held_by(name).map(|t| t.spec.id.clone()).ok_or(FloorError::NothingHeld)?;
            scheduler.submit(name, &id, Report::completed(id.as_str(), name.as_str(), Vec::new()), now)?;
            scheduler.judge(&id, Verdict::Accept, now)?;
            scheduler.offer(name, now, 1, oldest)?;
        }
        let (wall, on_cpu) = (Instant::now(), thread_cpu()?);
        write(&mut *store, &mut scheduler)?;
        took.push(wall.elapsed());
        cpu += thread_cpu()?.saturating_sub(on_cpu);
    }
    took.sort();
    Ok(Floor { workers, commits: took, cpu })
}

/// What changed in `scheduler`, gathered and written in one transaction.
fn write(store: &mut dyn Backend, scheduler: &mut Scheduler) -> Result<(), StoreError> {
    let changes = scheduler.take_changes();
    match Rows::gather_with(store.clock(), scheduler, &changes, &[], Notes::default()) {
        Some(rows) => store.write(std::slice::from_ref(&rows)),
        None => Ok(()),
    }
}

/// The oldest grantable task, as the default policy chooses.
#[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
fn oldest(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, crate::scheduler::Refusal> {
    Ok(ready.first().map(|t| t.spec.id.clone()))
}

/// CPU time this thread has run, in nanoseconds exact: the first field of
/// its `schedstat`.
fn thread_cpu() -> Result<Duration, FloorError> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").map_err(|e| FloorError::Clock(e.to_string()))?;
    let ns = stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok());
    ns.map(Duration::from_nanos).ok_or_else(|| FloorError::Clock(format!("no time in `{}`", stat.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::TaskState;

    #[test]
    fn each_commit_holds_a_handoff_of_every_worker_and_every_task_handed_off_ends_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let floor = commit_floor(dir.path(), 10, 3).unwrap();
        assert_eq!(floor.commits.len(), 10);
        assert!(floor.commits.windows(2).all(|w| w[0] <= w[1]), "sorted: {:?}", floor.commits);
        assert!(floor.median() > Duration::ZERO);
        assert!((floor.tasks_per_s() - 3.0 / floor.median().as_secs_f64()).abs() < 1e-6);

        let mut store = super::super::open(&Location::Sqlite(dir.path().to_owned()), &Options::default()).unwrap();
        let (tasks, _) = store.load().unwrap();
        let state = |id: &str| tasks.iter().find(|t| t.spec.id == id).map(Task::state);
        assert_eq!(tasks.len(), 33);
        assert!((0..30).all(|i| state(&format!("t{i}")) == Some(TaskState::Accepted)), "{tasks:?}");
        assert!((30..33).all(|i| state(&format!("t{i}")) == Some(TaskState::Assigned)), "{tasks:?}");
        let kinds = store.events().unwrap();
        let accepted = kinds.iter().filter(|e| e.kind == crate::event::EventKind::Accepted).count();
        assert_eq!(accepted, 30);
    }
}
