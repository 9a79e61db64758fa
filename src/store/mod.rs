//! The durable task store. A batch of changes becomes [`Rows`] on the
//! thread that owns the scheduler and is written by the [`writer::Writer`]
//! thread, which groups what waits for it into one transaction, committed
//! before anything is acknowledged.
//!
//! Where the rows go is a [`Backend`]: one `SQLite` file next to the
//! checkout ([`sqlite`], the default), or a project's rows in a PostgreSQL
//! database (`--store postgres://…`). Both keep the same tables with the
//! same meaning, so everything above this module reads one store.
//!
//! Leases are kept on the hub clock: the hub's running time summed over
//! its runs, stored as one `meta` row with every commit. A lease's deadline
//! is a point on that clock, so a restart gives each lease the time it had
//! left at the last commit, time while no hub ran costs nothing, and keeping
//! that true costs one row a second, not one per held lease.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::event::EventKind;
use crate::scheduler::{Changes, Scheduler, Settings, Task, Worker};
use crate::task::now_ms;

pub mod floor;
pub mod lease;
pub mod location;
pub mod postgres;
pub mod read;
pub mod restore;
pub mod sqlite;
#[cfg(test)]
mod suite;
pub mod tokens;
pub mod writer;

pub use location::Location;

/// The store failed; the hub cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("task store {path}: a stored row is unreadable ({source}); was it written by a newer mcc?")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{0}")]
    Crashed(String),
    #[error("task store {path} has schema version {found}, this mcc knows up to {known}; upgrade mcc")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    /// Another hub holds the project's leader lease now: this one must stop serving.
    #[error(
        "project {project}: another hub ({holder}) took over at epoch {epoch}; this hub stepped down and wrote nothing more"
    )]
    Fenced { project: String, epoch: i64, holder: String },
    #[error("{location}: {}; check that the database is up and that --store (or MCC_STORE) names it", with_causes(.source))]
    Postgres { location: String, source: ::postgres::Error },
    #[error("{location}: a stored row is unreadable ({source}); was it written by a newer mcc?")]
    CorruptRow { location: String, source: serde_json::Error },
    #[error(
        "{location}: the database has mcc schema version {found}, this mcc knows up to {known}; upgrade mcc (every hub and command that opens it)"
    )]
    TooNewDatabase { location: String, found: i64, known: i64 },
    /// Another live hub holds the project's leader lease: this one may not serve it.
    #[error(
        "{location}: another hub serves this project ({holder}; its lease runs {expires_in_ms} ms more unless it renews it); stop that hub first, or start this one as a standby to take over when it stops"
    )]
    Serving { location: String, holder: String, expires_in_ms: i64 },
}

/// An error with what caused it (`error connecting to server: Connection
/// refused`): a database client's own message often names only its kind.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}

/// The schema version this mcc writes; a store with a newer one is refused.
const SCHEMA_VERSION: i64 = 4;

/// One stored event, as read back for metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub at_ms: i64,
    /// A kind this mcc does not know (the store was written by another
    /// version) is kept as [`EventKind::Other`], not refused.
    pub kind: EventKind,
    pub task: Option<String>,
    pub worker: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
    /// The run it happened in; `None` in a store older than runs (read-only).
    pub run: Option<i64>,
}

/// One run of a workflow (or of hand-added tasks, with no workflow).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredRun {
    pub id: i64,
    pub workflow: Option<String>,
    pub started_ms: i64,
    /// When it finished or another workflow replaced it; `None` while it may go on.
    pub ended_ms: Option<i64>,
}

/// A validation's outcome for one attempt, kept for `mcc tasks show` and
/// the report: the command and the last [`OUTPUT_TAIL`] bytes of each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRecord {
    pub task: String,
    pub attempt: u32,
    pub command: String,
    /// `None` when killed by a signal, the time limit or a cancel.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// Bytes of a validation's stdout and of its stderr kept with its attempt:
/// the end of the output, where a test runner or a word count says why.
pub const OUTPUT_TAIL: usize = 2048;

/// What a batch says beyond the scheduler's changes: a workflow loaded (a
/// new run when it is not the current run's), validations that ended.
#[derive(Debug, Default)]
pub struct Notes {
    pub workflow: Option<String>,
    pub validations: Vec<ValidationRecord>,
    /// The files attempts submitted at `done`, kept with the commit that records the `done`.
    pub submitted: Vec<SubmittedFiles>,
}

/// What became of one declared write file of an attempt at `done`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kept", rename_all = "snake_case")]
pub enum FileKept {
    /// Its bytes are in the store under this SHA-256 (lowercase hex).
    Kept { sha256: String },
    /// There was no file at the path: the attempt deleted it (or never wrote it).
    Deleted,
    /// Not kept: the task's files passed `--max-task-files-bytes` at this file.
    OverBound,
    /// Not kept: a symbolic link, a folder or another non-regular file (never followed).
    NotRegular,
    /// Not kept: a regular file the hub could not read (its log says why).
    Unreadable,
}

impl FileKept {
    /// The word stored for it (the SHA-256 is a column of its own).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Kept { .. } => "kept",
            Self::Deleted => "deleted",
            Self::OverBound => "over_bound",
            Self::NotRegular => "not_regular",
            Self::Unreadable => "unreadable",
        }
    }

    /// Read back from its stored word and SHA-256; `None` for a word this mcc does not know.
    pub fn from_stored(name: &str, sha256: Option<String>) -> Option<Self> {
        Some(match (name, sha256) {
            ("kept", Some(sha256)) => Self::Kept { sha256 },
            ("deleted", _) => Self::Deleted,
            ("over_bound", _) => Self::OverBound,
            ("not_regular", _) => Self::NotRegular,
            ("unreadable", _) => Self::Unreadable,
            _ => return None,
        })
    }
}

/// One declared write file of one attempt, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptFile {
    pub task: String,
    pub attempt: u32,
    /// The declared path, relative to the project root.
    pub path: String,
    /// Bytes of the file at `done` (0 when deleted or not regular).
    pub size: u64,
    #[serde(flatten)]
    pub kept: FileKept,
}

/// What one attempt submitted: a row per declared write file, and the bytes
/// of each kept one by SHA-256 (each blob is stored once, however many
/// attempts submit the same bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmittedFiles {
    pub files: Vec<AttemptFile>,
    /// `(sha256, bytes)` of the kept files.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// The meta key of the hub clock.
const HUB_CLOCK: &str = "hub_clock_ms";

/// The hub clock: its value (ms) when the store was opened, and the instant then.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    opened: Instant,
}

impl Clock {
    /// The hub clock at `at`, in ms.
    pub fn at(&self, at: Instant) -> i64 {
        let since = at.checked_duration_since(self.opened).unwrap_or_default();
        self.base_ms + since.as_millis() as i64
    }
}

/// A lease as stored: time left, its deadline on the hub clock, and a
/// wall-clock deadline for people reading the file.
#[derive(Debug, Clone, Copy)]
/// All in ms.
struct StoredLease {
    left: i64,
    on_clock: i64,
    wall: i64,
}

#[derive(Debug)]
struct TaskRecord {
    id: String,
    seq: i64,
    state: &'static str,
    holder: Option<String>,
    attempt: u32,
    phase: Option<String>,
    body: String,
    lease: Option<StoredLease>,
}

#[derive(Debug)]
struct EventRecord {
    kind: EventKind,
    task: Option<String>,
    worker: Option<String>,
    attempt: Option<u32>,
    detail: Option<String>,
}

/// One batch of changes as rows, gathered on the thread that owns the
/// scheduler and written by whoever owns the store ([`Store::write`],
/// [`writer::Writer`]).
#[derive(Debug)]
pub struct Rows {
    tasks: Vec<TaskRecord>,
    leases: Vec<(String, Option<StoredLease>)>,
    workers: Vec<(String, String)>,
    events: Vec<EventRecord>,
    meta: Vec<(String, String)>,
    notes: Notes,
    clock_ms: i64,
    wall_ms: i64,
}

impl Rows {
    /// The rows `changes` touched, as they are in `scheduler` now; `None`
    /// when there is nothing to write. (The engine passes [`Notes`] too.)
    #[cfg(test)]
    pub fn gather(clock: Clock, scheduler: &Scheduler, changes: &Changes, meta: &[(&str, String)]) -> Option<Self> {
        Self::gather_with(clock, scheduler, changes, meta, Notes::default())
    }

    /// [`Rows::gather`], with what the batch says of its run and validations.
    pub fn gather_with(
        clock: Clock,
        scheduler: &Scheduler,
        changes: &Changes,
        meta: &[(&str, String)],
        notes: Notes,
    ) -> Option<Self> {
        if changes.is_empty()
            && meta.is_empty()
            && notes.workflow.is_none()
            && notes.validations.is_empty()
            && notes.submitted.is_empty()
        {
            return None;
        }
        let now = Instant::now();
        let wall_ms = now_ms();
        let clock_ms = clock.at(now);
        let lease_of = |task: &Task| {
            task.lease_until().map(|until| {
                let left_ms = until.saturating_duration_since(now).as_millis() as i64;
                StoredLease { left: left_ms, on_clock: clock_ms + left_ms, wall: wall_ms + left_ms }
            })
        };
        let tasks = changes
            .tasks
            .iter()
            .filter_map(|id| scheduler.task(id))
            .map(|task| TaskRecord {
                id: task.spec.id.clone(),
                seq: task.seq() as i64,
                state: task.state().name(),
                holder: task.holder().map(str::to_owned),
                attempt: task.attempt(),
                phase: task.phase().map(str::to_owned),
                body: serde_json::to_string(task).expect("a task always serializes"),
                lease: lease_of(task),
            })
            .collect();
        let leases = changes
            .leases
            .difference(&changes.tasks)
            .filter_map(|id| scheduler.task(id).map(|task| (id.clone(), lease_of(task))))
            .collect();
        let workers = changes
            .workers
            .iter()
            .filter_map(|name| scheduler.worker(name))
            .map(|w| (w.name().to_owned(), serde_json::to_string(w).expect("a worker always serializes")))
            .collect();
        let events = changes
            .events
            .iter()
            .map(|e| EventRecord {
                kind: e.kind.clone(),
                task: e.task.clone(),
                worker: e.worker.clone(),
                attempt: e.attempt,
                detail: (!e.detail.is_null()).then(|| e.detail.to_string()),
            })
            .collect();
        let meta = meta.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Some(Self { tasks, leases, workers, events, meta, notes, clock_ms, wall_ms })
    }
}

/// A task row as both engines store it: its body, wall-clock deadline,
/// time left when written, deadline on the hub clock.
type TaskRow = (String, Option<i64>, Option<i64>, Option<i64>);

/// A stored task with its lease resumed on `clock`. Older stores have the
/// time left when written, or only the wall-clock deadline.
fn task_from_row(
    (body, deadline, left, on_clock): TaskRow,
    clock: Clock,
    now: Instant,
    wall: i64,
) -> Result<Task, serde_json::Error> {
    let mut task: Task = serde_json::from_str(&body)?;
    let left =
        on_clock.map(|until| until - clock.base_ms).or(left).or_else(|| deadline.map(|d| d.saturating_sub(wall)));
    task.resume_lease(left.map(|l| now + Duration::from_millis(l.max(0) as u64)));
    Ok(task)
}

/// How long a write waits for another connection's lock on `state.db`
/// before it fails, unless the hub's options say otherwise.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Meta key the engine sets to `true` when the workflow finished, `false` when it goes on.
pub(crate) const RUN_FINISHED: &str = "run_finished";

/// What the hub asks of a store engine. The engine's tables hold one
/// project; every write is one transaction that is durable when `write`
/// returns. Reads see every write that returned before them.
pub trait Backend: Send {
    /// The hub clock this store measures leases on.
    fn clock(&self) -> Clock;
    /// Every stored task and worker; leases resume with the time they had
    /// left at the last commit. Time while no hub ran, and wall-clock jumps,
    /// cost a lease nothing.
    fn load(&mut self) -> Result<(Vec<Task>, Vec<Worker>), StoreError>;
    /// The scheduler as stored, built row by row (never all rows held in a list first).
    fn restore(&mut self, settings: Settings) -> Result<Scheduler, StoreError>;
    /// Write gathered batches of rows in one transaction, in order (a later
    /// row for the same task wins). Returns when the commit is durable.
    fn write(&mut self, batches: &[Rows]) -> Result<(), StoreError>;
    /// Called by the writer when it has had nothing to write for
    /// [`Backend::keep_alive_every`]: an engine that must show it is alive
    /// (a leader lease) does so here.
    fn keep_alive(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// How often [`Backend::keep_alive`] wants to be called while idle; `None`: never.
    fn keep_alive_every(&self) -> Option<Duration> {
        None
    }
    /// A stored setting or piece of workflow state.
    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// The event log in order, for metrics.
    fn events(&mut self) -> Result<Vec<StoredEvent>, StoreError>;
    /// The events of one run in order.
    fn run_events(&mut self, run: i64) -> Result<Vec<StoredEvent>, StoreError>;
    /// The events of one task in order, whatever run they happened in.
    fn task_events(&mut self, task: &str) -> Result<Vec<StoredEvent>, StoreError>;
    /// Every run, oldest first.
    fn runs(&mut self) -> Result<Vec<StoredRun>, StoreError>;
    /// The run each task belongs to, by task id.
    fn task_runs(&mut self) -> Result<std::collections::HashMap<String, i64>, StoreError>;
    /// The validations kept for `task`, by attempt.
    fn validations(&mut self, task: &str) -> Result<Vec<ValidationRecord>, StoreError>;
    /// The last `limit` events, oldest first: what a view of recent work
    /// reads, at a cost that does not grow with the log.
    fn recent_events(&mut self, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// The declared write files `task`'s `attempt` submitted at `done`, by
    /// path; none when it submitted nothing (or before the store kept files).
    fn attempt_files(&mut self, task: &str, attempt: u32) -> Result<Vec<AttemptFile>, StoreError>;
    /// The bytes kept under `sha256`, if any.
    fn blob(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// For every path an accepted attempt submitted, that path as the last
    /// accepted attempt (in the order of the verdicts) left it, by path: the
    /// accepted state of the checkout.
    fn accepted_files(&mut self) -> Result<Vec<AttemptFile>, StoreError>;
    /// The tasks in flight (assigned, or submitted and being judged), in
    /// creation order: what the git guard reads on each commit, at a cost
    /// that grows with the tasks held, not with the queue.
    fn in_flight(&mut self) -> Result<Vec<Task>, StoreError>;
}

/// An open store, whichever engine keeps it.
pub type Store = Box<dyn Backend>;

/// How a serving hub opens its store.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a write waits for another connection's lock (`SQLite`).
    pub busy_timeout: Duration,
    /// How long the project's leader lease lasts unrenewed (PostgreSQL):
    /// a standby takes over this long after the leader died.
    pub lease: Duration,
    /// This hub's name as the lease's owner: host, pid and a random part.
    pub owner: String,
    /// Where this hub serves, written with the lease for whoever reads who holds it.
    pub address: Option<String>,
}

/// How long a leader lease lasts unrenewed unless the hub's options say otherwise.
pub const LEASE: Duration = Duration::from_secs(5);

impl Default for Options {
    fn default() -> Self {
        Self { busy_timeout: BUSY_TIMEOUT, lease: LEASE, owner: lease::owner_id(), address: None }
    }
}

/// Open (or create) the store at `location` to serve it: migrated to this
/// mcc's schema, refused when newer.
pub fn open(location: &Location, options: &Options) -> Result<Store, StoreError> {
    match location {
        Location::Sqlite(dir) => {
            let store = sqlite::SqliteStore::open(dir)?;
            store.set_busy_timeout(options.busy_timeout)?;
            Ok(Box::new(store))
        }
        Location::Postgres { url, project } => Ok(Box::new(postgres::PostgresStore::open(url, project, options)?)),
    }
}

/// The store of the project at `root` opened for reading only, found as
/// [`Location::of_root`] finds it; `None` when it has none yet. Errors are
/// the messages a command prints.
pub fn read_project(root: &Path) -> Result<Option<Store>, String> {
    let location = Location::of_root(root)?;
    open_read_only(&location).map_err(|e| e.to_string())
}

/// Open the store at `location` for reading only, when no hub may run:
/// nothing is created, migrated or written. `None` when there is no store there yet.
pub fn open_read_only(location: &Location) -> Result<Option<Store>, StoreError> {
    match location {
        Location::Sqlite(dir) => {
            if !crate::layout::Layout::at(dir).state_db().is_file() {
                return Ok(None);
            }
            Ok(Some(Box::new(sqlite::SqliteStore::open_read_only(dir)?)))
        }
        Location::Postgres { url, project } => {
            Ok(postgres::PostgresStore::open_read_only(url, project)?.map(|store| Box::new(store) as Store))
        }
    }
}

/// The leader lease a hub holds on a store several hubs share: how long it
/// lasts unrenewed ([`Options::lease`]), how often a standby looks whether
/// it is free, and where the holder serves (what a standby and a fenced hub
/// tell their clients). With the defaults a standby takes over within the
/// lease and one look: about 6 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub lease: Duration,
    pub renew: Duration,
    pub address: Option<String>,
}

impl Default for Leader {
    fn default() -> Self {
        Self { lease: LEASE, renew: Duration::from_secs(1), address: None }
    }
}
