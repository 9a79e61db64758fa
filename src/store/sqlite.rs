//! The `SQLite` engine of the task store: one `state.db` file under `.mcc/`
//! in WAL mode with `synchronous=FULL`, written by one owner (the
//! [`super::writer::Writer`] thread). Each write is one transaction that
//! upserts only the rows that changed, updated in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{
    AttemptFile, BUSY_TIMEOUT, Backend, Clock, FileKept, HUB_CLOCK, RUN_FINISHED, Rows, SCHEMA_VERSION, StoreError,
    StoredEvent, StoredRun, TaskRow, ValidationRecord,
};
use crate::event::EventKind;
use crate::scheduler::{Scheduler, Settings, Task, Worker};
use crate::task::now_ms;

/// Schema 2. Every commit writes as few pages as it can, since the WAL
/// frames it appends are what its fsync waits on: tasks, workers and meta
/// are keyed tables without a separate rowid b-tree (one page per row
/// changed, not two), and events take the next rowid without the
/// `sqlite_sequence` row `AUTOINCREMENT` rewrites (events are never deleted,
/// so ids still only grow).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    holder TEXT,
    attempt INTEGER NOT NULL,
    lease_deadline_ms INTEGER,
    phase TEXT,
    body TEXT NOT NULL,
    lease_left_ms INTEGER,
    lease_clock_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT,
    worker TEXT,
    attempt INTEGER,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Schema 1 to 2, in one transaction: the schema-1 tables step aside,
/// [`SCHEMA`] makes the new ones, the rows move over. Leases are carried as
/// they are (older schema-1 stores gain the lease columns first, see
/// [`migrate_from_1`]).
const SET_1_ASIDE: &str = "
ALTER TABLE tasks RENAME TO tasks_v1;
ALTER TABLE workers RENAME TO workers_v1;
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE meta RENAME TO meta_v1;
DROP INDEX IF EXISTS events_task;
";
const MOVE_1_TO_2: &str = "
INSERT INTO tasks SELECT id, seq, state, holder, attempt, lease_deadline_ms, phase, body, lease_left_ms, lease_clock_ms FROM tasks_v1;
INSERT INTO workers SELECT name, body FROM workers_v1;
INSERT INTO events SELECT id, at_ms, kind, task_id, worker, attempt, detail FROM events_v1;
INSERT INTO meta SELECT key, value FROM meta_v1;
DROP TABLE tasks_v1;
DROP TABLE workers_v1;
DROP TABLE events_v1;
DROP TABLE meta_v1;
";

/// Schema 2 to 3: runs kept apart, and what a validation printed. Each
/// `mcc run` of another workflow is a run (`runs`); a task belongs to the
/// run that created it, an event to the run it happened in. A validation's
/// command and the tails of its output are kept per (task, attempt).
/// Existing rows become run 1 (see [`migrate_from_2`]).
const SCHEMA_3: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    workflow TEXT,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
ALTER TABLE tasks ADD COLUMN run_id INTEGER;
ALTER TABLE events ADD COLUMN run_id INTEGER;
CREATE TABLE IF NOT EXISTS validations (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    command TEXT NOT NULL,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL,
    stdout_tail TEXT NOT NULL,
    stderr_tail TEXT NOT NULL,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
";

/// Schema 3 to 4: what each attempt submitted at `done`. A row per
/// (task, attempt, declared write file) says whether its bytes were kept
/// (and under which SHA-256), or why not; the bytes are in `blobs` once per
/// content, however many attempts submitted them. `blobs` keeps its rowid:
/// a row as large as a file does not belong in a key-ordered b-tree.
const SCHEMA_4: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY NOT NULL,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS attempt_files (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    path TEXT NOT NULL,
    kept TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt, path)
) WITHOUT ROWID;
";

/// The `SQLite` file under `.mcc/`.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The hub clock leases are measured on, from when this store was opened.
    clock: Clock,
    /// The schema of the file: older only when opened read-only.
    version: i64,
    /// The run rows are written to, once there is one (the writer's cache of
    /// the newest `runs` row).
    run: Option<StoredRun>,
}

/// Set one `meta` value, keeping its row.
const PUT_META: &str =
    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value";

const TASK_ROWS: &str = "SELECT body, lease_deadline_ms, lease_left_ms, lease_clock_ms FROM tasks ORDER BY seq";

fn task_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

impl SqliteStore {
    /// How long a write waits for another connection's lock on `state.db`.
    pub fn set_busy_timeout(&self, limit: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(limit).map_err(|source| StoreError::Sqlite { path: self.path.clone(), source })
    }

    /// Open (or create) `state.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = crate::layout::Layout::at(dir).state_db();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        let version = stored_version(&conn).map_err(sql)?;
        // Each step is its own transaction: a crash between two leaves a
        // store of the step before, which the next open takes on from there.
        match version {
            None => {
                conn.execute_batch(SCHEMA).map_err(sql)?;
                conn.execute(PUT_META, params!["schema_version", "2"]).map_err(sql)?;
                migrate_from_2(&conn).map_err(sql)?;
                migrate_from_3(&conn).map_err(sql)?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::TooNew { path, found, known: SCHEMA_VERSION });
            }
            Some(1) => {
                migrate_from_1(&conn).map_err(sql)?;
                migrate_from_2(&conn).map_err(sql)?;
                migrate_from_3(&conn).map_err(sql)?;
            }
            Some(2) => {
                migrate_from_2(&conn).map_err(sql)?;
                migrate_from_3(&conn).map_err(sql)?;
            }
            Some(3) => migrate_from_3(&conn).map_err(sql)?,
            Some(_) => {}
        }
        let clock = Clock { base_ms: read_clock(&conn).map_err(sql)?, opened: Instant::now() };
        let run = newest_run(&conn).map_err(sql)?;
        let store = Self { conn, path, clock, version: SCHEMA_VERSION, run };
        Ok(store)
    }

    /// Open `state.db` in `dir` for reading only, when no hub runs: the
    /// file is not created and nothing is written.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        let path = crate::layout::Layout::at(dir).state_db();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        let clock = Clock { base_ms: read_clock(&conn).unwrap_or(0), opened: Instant::now() };
        // Not migrated here (nothing is written): an older store is read as it is.
        let version = stored_version(&conn).ok().flatten().unwrap_or(SCHEMA_VERSION);
        let run = if version >= 3 { newest_run(&conn).ok().flatten() } else { None };
        Ok(Self { conn, path, clock, version, run })
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn corrupt(&self, source: serde_json::Error) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), source }
    }

    /// A stored task with its lease resumed.
    fn task_from(&self, row: TaskRow, now: Instant, wall: i64) -> Result<Task, StoreError> {
        super::task_from_row(row, self.clock, now, wall).map_err(|e| self.corrupt(e))
    }

    /// Write every changed task and worker and append the events, in one
    /// transaction. Returns when the commit is durable. (The hub commits
    /// through the writer thread; the store's own tests call this.)
    #[cfg(test)]
    pub fn commit(
        &mut self,
        scheduler: &Scheduler,
        changes: &crate::scheduler::Changes,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        match Rows::gather(self.clock(), scheduler, changes, meta) {
            Some(rows) => self.write(std::slice::from_ref(&rows)),
            None => Ok(()),
        }
    }

    fn workers(&self) -> Result<Vec<Worker>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT body FROM workers").map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0)).map_err(|e| self.sql(e))?;
        let mut workers = Vec::new();
        for row in rows {
            let body = row.map_err(|e| self.sql(e))?;
            workers.push(serde_json::from_str(&body).map_err(|e| self.corrupt(e))?);
        }
        Ok(workers)
    }

    fn events_where(&self, tail: &str, params: impl rusqlite::Params) -> Result<Vec<StoredEvent>, StoreError> {
        let run = if self.version >= 3 { "run_id" } else { "NULL" };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT id, at_ms, kind, task_id, worker, attempt, detail, {run} FROM events {tail}"))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: EventKind::from_name(&r.get::<_, String>(2)?),
                    task: r.get(3)?,
                    worker: r.get(4)?,
                    attempt: r.get(5)?,
                    detail: r
                        .get::<_, Option<String>>(6)?
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or(Value::Null),
                    run: r.get(7)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}

impl Backend for SqliteStore {
    /// Every stored task and worker; leases resume with the time they had
    /// left at the last commit. Time while no hub ran, and wall-clock jumps,
    /// cost a lease nothing.
    fn load(&mut self) -> Result<(Vec<Task>, Vec<Worker>), StoreError> {
        let (now, wall) = (Instant::now(), now_ms());
        let mut stmt = self.conn.prepare(TASK_ROWS).map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], task_row).map_err(|e| self.sql(e))?;
        let mut tasks = Vec::new();
        for row in rows {
            tasks.push(self.task_from(row.map_err(|e| self.sql(e))?, now, wall)?);
        }
        Ok((tasks, self.workers()?))
    }

    fn in_flight(&mut self) -> Result<Vec<Task>, StoreError> {
        let (now, wall) = (Instant::now(), now_ms());
        let held = TASK_ROWS.replace(" ORDER BY", " WHERE state IN ('assigned', 'submitted') ORDER BY");
        let mut stmt = self.conn.prepare(&held).map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], task_row).map_err(|e| self.sql(e))?;
        let mut tasks = Vec::new();
        for row in rows {
            tasks.push(self.task_from(row.map_err(|e| self.sql(e))?, now, wall)?);
        }
        Ok(tasks)
    }

    /// The scheduler as stored, built row by row: each row is parsed and
    /// moved into the scheduler, never all of them held in a list first.
    fn restore(&mut self, settings: Settings) -> Result<Scheduler, StoreError> {
        let (now, wall) = (Instant::now(), now_ms());
        let count: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0)).map_err(|e| self.sql(e))?;
        let workers = self.workers()?;
        // In the table's own order: the scheduler orders by `seq` itself, and
        // sorting 100,000 rows first would hold them all in the sorter.
        let unordered = TASK_ROWS.trim_end_matches(" ORDER BY seq");
        let mut stmt = self.conn.prepare(unordered).map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], task_row).map_err(|e| self.sql(e))?;
        let mut failed = None;
        let tasks =
            rows.map_while(|row| match row.map_err(|e| self.sql(e)).and_then(|r| self.task_from(r, now, wall)) {
                Ok(task) => Some(task),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
        let scheduler = Scheduler::restore_from(settings, count as usize, tasks, workers);
        match failed {
            Some(e) => Err(e),
            None => Ok(scheduler),
        }
    }

    /// The hub clock this store measures leases on.
    fn clock(&self) -> Clock {
        self.clock
    }

    /// Write gathered batches of rows in one transaction, in order (a later
    /// row for the same task wins). Returns when the commit is durable.
    fn write(&mut self, batches: &[Rows]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        // Taken as the run after the commit only: a failed one changes nothing.
        let mut run = self.run.clone();
        let tx = self.conn.transaction().map_err(sql)?;
        {
            // An upsert keeps the row where it is: no delete and re-insert, no index churn.
            let mut put_task = tx
                .prepare_cached(
                    "INSERT INTO tasks (id, seq, state, holder, attempt, lease_deadline_ms, phase, body, lease_left_ms, lease_clock_ms, run_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                         holder = excluded.holder, attempt = excluded.attempt,
                         lease_deadline_ms = excluded.lease_deadline_ms, phase = excluded.phase,
                         body = excluded.body, lease_left_ms = excluded.lease_left_ms,
                         lease_clock_ms = excluded.lease_clock_ms",
                )
                .map_err(sql)?;
            // A lease that only moved: three numbers, not the task's whole body.
            let mut put_lease = tx
                .prepare_cached(
                    "UPDATE tasks SET lease_left_ms = ?2, lease_clock_ms = ?3, lease_deadline_ms = ?4 WHERE id = ?1",
                )
                .map_err(sql)?;
            let mut put_worker = tx
                .prepare_cached(
                    "INSERT INTO workers (name, body) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                )
                .map_err(sql)?;
            let mut put_event = tx
                .prepare_cached(
                    "INSERT INTO events (at_ms, kind, task_id, worker, attempt, detail, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            let mut put_meta = tx.prepare_cached(PUT_META).map_err(sql)?;
            // The same bytes submitted again are already there: one blob per content.
            let mut put_blob =
                tx.prepare_cached("INSERT OR IGNORE INTO blobs (sha256, bytes) VALUES (?1, ?2)").map_err(sql)?;
            let mut put_file = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO attempt_files (task_id, attempt, path, kept, sha256, size)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            let mut put_validation = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO validations (task_id, attempt, at_ms, command, exit_code, timed_out, stdout_tail, stderr_tail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql)?;
            for rows in batches {
                enter_run(&tx, &mut run, rows).map_err(sql)?;
                let run_id = run.as_ref().map(|r| r.id);
                for t in &rows.tasks {
                    let lease = t.lease;
                    put_task
                        .execute(params![
                            t.id,
                            t.seq,
                            t.state,
                            t.holder,
                            t.attempt,
                            lease.map(|l| l.wall),
                            t.phase,
                            t.body,
                            lease.map(|l| l.left),
                            lease.map(|l| l.on_clock),
                            run_id,
                        ])
                        .map_err(sql)?;
                }
                for (id, lease) in &rows.leases {
                    put_lease
                        .execute(params![id, lease.map(|l| l.left), lease.map(|l| l.on_clock), lease.map(|l| l.wall)])
                        .map_err(sql)?;
                }
                for (name, body) in &rows.workers {
                    put_worker.execute(params![name, body]).map_err(sql)?;
                }
                for e in &rows.events {
                    put_event
                        .execute(params![rows.wall_ms, e.kind.name(), e.task, e.worker, e.attempt, e.detail, run_id])
                        .map_err(sql)?;
                }
                for v in &rows.notes.validations {
                    put_validation
                        .execute(params![
                            v.task,
                            v.attempt,
                            rows.wall_ms,
                            v.command,
                            v.exit_code,
                            v.timed_out,
                            v.stdout_tail,
                            v.stderr_tail
                        ])
                        .map_err(sql)?;
                }
                for submitted in &rows.notes.submitted {
                    for (sha256, bytes) in &submitted.blobs {
                        put_blob.execute(params![sha256, bytes]).map_err(sql)?;
                    }
                    for f in &submitted.files {
                        let sha256 = match &f.kept {
                            FileKept::Kept { sha256 } => Some(sha256),
                            _ => None,
                        };
                        let size = i64::try_from(f.size).unwrap_or(i64::MAX);
                        put_file
                            .execute(params![f.task, f.attempt, f.path, f.kept.name(), sha256, size])
                            .map_err(sql)?;
                    }
                }
                for (key, value) in &rows.meta {
                    put_meta.execute(params![key, value]).map_err(sql)?;
                    if key == RUN_FINISHED {
                        end_run(&tx, run.as_mut(), value == "true", rows.wall_ms).map_err(sql)?;
                    }
                }
            }
            // The clock moves with every commit: the leases written are
            // measured on it, and the last batch's reading is the latest.
            if let Some(last) = batches.last() {
                put_meta.execute(params![HUB_CLOCK, last.clock_ms.to_string()]).map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        self.run = run;
        Ok(())
    }

    /// A stored setting or piece of workflow state.
    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// The event log in order, for metrics.
    fn events(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_where("ORDER BY id", [])
    }

    /// The events of one run in order; in a store older than runs, every event is run 1's.
    fn run_events(&mut self, run: i64) -> Result<Vec<StoredEvent>, StoreError> {
        if self.version < 3 {
            return self.events();
        }
        self.events_where("WHERE run_id = ?1 ORDER BY id", [run])
    }

    /// The events of one task in order, whatever run they happened in.
    fn task_events(&mut self, task: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_where("WHERE task_id = ?1 ORDER BY id", [task])
    }

    /// Every run, oldest first. A store older than runs holds one, run 1,
    /// when it holds anything: of the workflow it names, from its first event.
    fn runs(&mut self) -> Result<Vec<StoredRun>, StoreError> {
        if self.version >= 3 {
            let mut stmt = self
                .conn
                .prepare("SELECT id, workflow, started_ms, ended_ms FROM runs ORDER BY id")
                .map_err(|e| self.sql(e))?;
            let rows = stmt.query_map([], run_row).map_err(|e| self.sql(e))?;
            return rows.collect::<Result<_, _>>().map_err(|e| self.sql(e));
        }
        let (count, first, last): (i64, Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT COUNT(*), MIN(at_ms), MAX(at_ms) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.sql(e))?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let finished = self.meta(RUN_FINISHED)?.as_deref() == Some("true");
        let started = first.unwrap_or_default();
        Ok(vec![StoredRun {
            id: 1,
            workflow: self.meta("workflow_path")?,
            started_ms: started,
            ended_ms: finished.then_some(last.unwrap_or(started)),
        }])
    }

    /// The run each task belongs to, by task id (run 1 for all in a store older than runs).
    fn task_runs(&mut self) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        let sql = if self.version >= 3 { "SELECT id, run_id FROM tasks" } else { "SELECT id, 1 FROM tasks" };
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))
            .map_err(|e| self.sql(e))?;
        let mut runs = std::collections::HashMap::new();
        for row in rows {
            if let (id, Some(run)) = row.map_err(|e| self.sql(e))? {
                runs.insert(id, run);
            }
        }
        Ok(runs)
    }

    /// The validations kept for `task`, by attempt (none in a store older than runs).
    fn validations(&mut self, task: &str) -> Result<Vec<ValidationRecord>, StoreError> {
        if self.version < 3 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT task_id, attempt, command, exit_code, timed_out, stdout_tail, stderr_tail
                 FROM validations WHERE task_id = ?1 ORDER BY attempt",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([task], |r| {
                Ok(ValidationRecord {
                    task: r.get(0)?,
                    attempt: r.get(1)?,
                    command: r.get(2)?,
                    exit_code: r.get(3)?,
                    timed_out: r.get(4)?,
                    stdout_tail: r.get(5)?,
                    stderr_tail: r.get(6)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// The last `limit` events, oldest first: what a view of recent work
    /// reads, at a cost that does not grow with the log.
    fn recent_events(&mut self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut events = self.events_where("ORDER BY id DESC LIMIT ?1", [limit])?;
        events.reverse();
        Ok(events)
    }

    /// The declared write files `task`'s `attempt` submitted, by path (none
    /// in a store older than kept files).
    fn attempt_files(&mut self, task: &str, attempt: u32) -> Result<Vec<AttemptFile>, StoreError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        self.files_where("WHERE task_id = ?1 AND attempt = ?2 ORDER BY path", params![task, attempt])
    }

    /// The bytes kept under `sha256`, if any.
    fn blob(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.version < 4 {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT bytes FROM blobs WHERE sha256 = ?1", [sha256], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Each path as the last accepted attempt that submitted it left it.
    fn accepted_files(&mut self) -> Result<Vec<AttemptFile>, StoreError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        // The accepted events in the order of the verdicts, each joined to
        // its attempt's files by their key: one pass over the log.
        let accepted = self.files_where(
            "JOIN (SELECT id, task_id AS t, attempt AS a FROM events WHERE kind = 'accepted') AS e
                 ON attempt_files.task_id = e.t AND attempt_files.attempt = e.a
             ORDER BY e.id",
            [],
        )?;
        let mut last = std::collections::BTreeMap::new();
        for file in accepted {
            last.insert(file.path.clone(), file);
        }
        Ok(last.into_values().collect())
    }
}

impl SqliteStore {
    fn files_where(&self, tail: &str, params: impl rusqlite::Params) -> Result<Vec<AttemptFile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT attempt_files.task_id, attempt_files.attempt, path, kept, sha256, size FROM attempt_files {tail}"
            ))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, |r| {
                let kept: String = r.get(3)?;
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, kept, r.get(4)?, r.get::<_, i64>(5)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut files = Vec::new();
        for row in rows {
            let (task, attempt, path, kept, sha256, size): (String, u32, String, String, Option<String>, i64) =
                row.map_err(|e| self.sql(e))?;
            let Some(kept) = FileKept::from_stored(&kept, sha256) else {
                return Err(StoreError::Crashed(format!(
                    "task store {}: attempt {attempt} of task {task} has file {path} kept as `{kept}`, which this mcc does not know; was it written by a newer mcc?",
                    self.path.display()
                )));
            };
            files.push(AttemptFile { task, attempt, path, size: u64::try_from(size).unwrap_or(0), kept });
        }
        Ok(files)
    }
}

/// The schema version of an existing store; `None` for a new file. Stores
/// from before the version was written are schema 1.
fn stored_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'tasks'", [], |r| r.get(0))?;
    if tables == 0 {
        return Ok(None);
    }
    let value: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
    // An unreadable version is newer than anything this mcc knows.
    Ok(Some(value.map_or(1, |v| v.parse().unwrap_or(i64::MAX))))
}

/// Run `step` in one transaction: all of it is written, or none.
fn in_transaction(conn: &Connection, step: impl FnOnce() -> rusqlite::Result<()>) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match step() {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Bring a schema-2 store to schema 3 in one transaction. What it holds
/// becomes run 1, of the workflow it names, from its first event to its last
/// when it finished (else still open).
fn migrate_from_2(conn: &Connection) -> rusqlite::Result<()> {
    in_transaction(conn, || {
        conn.execute_batch(SCHEMA_3)?;
        let tasks: i64 = conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))?;
        let (events, first, last): (i64, Option<i64>, Option<i64>) =
            conn.query_row("SELECT COUNT(*), MIN(at_ms), MAX(at_ms) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if tasks + events > 0 {
            let meta = |key: &str| -> rusqlite::Result<Option<String>> {
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
            };
            let finished = meta(RUN_FINISHED)?.as_deref() == Some("true");
            let started = first.unwrap_or_else(now_ms);
            conn.execute(
                "INSERT INTO runs (id, workflow, started_ms, ended_ms) VALUES (1, ?1, ?2, ?3)",
                params![meta("workflow_path")?, started, finished.then_some(last.unwrap_or(started))],
            )?;
            conn.execute_batch("UPDATE tasks SET run_id = 1; UPDATE events SET run_id = 1;")?;
        }
        conn.execute(PUT_META, params!["schema_version", "3"])?;
        Ok(())
    })
}

/// Bring a schema-3 store to schema 4 in one transaction: the tables of
/// submitted files, empty (attempts before it kept none).
fn migrate_from_3(conn: &Connection) -> rusqlite::Result<()> {
    in_transaction(conn, || {
        conn.execute_batch(SCHEMA_4)?;
        conn.execute(PUT_META, params!["schema_version", "4"])?;
        Ok(())
    })
}

/// The newest run, the one a hub writes to.
fn newest_run(conn: &Connection) -> rusqlite::Result<Option<StoredRun>> {
    conn.query_row("SELECT id, workflow, started_ms, ended_ms FROM runs ORDER BY id DESC LIMIT 1", [], run_row)
        .optional()
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRun> {
    Ok(StoredRun { id: r.get(0)?, workflow: r.get(1)?, started_ms: r.get(2)?, ended_ms: r.get(3)? })
}

/// The run a batch's rows belong to. A workflow loaded that is not the
/// current run's starts a new run (ending the current one), except that a
/// run of no workflow and no task yet takes it on; the same workflow loaded
/// again (a restart, a resume) goes on with its run. Rows with no run yet
/// start one of no workflow (tasks added by hand).
fn enter_run(tx: &Connection, run: &mut Option<StoredRun>, rows: &Rows) -> rusqlite::Result<()> {
    let start = |workflow: Option<&String>| -> rusqlite::Result<StoredRun> {
        tx.execute("INSERT INTO runs (workflow, started_ms) VALUES (?1, ?2)", params![workflow, rows.wall_ms])?;
        Ok(StoredRun {
            id: tx.last_insert_rowid(),
            workflow: workflow.cloned(),
            started_ms: rows.wall_ms,
            ended_ms: None,
        })
    };
    match (&rows.notes.workflow, run.as_mut()) {
        (Some(_), Some(current)) if current.workflow == rows.notes.workflow => {}
        (Some(workflow), Some(current)) => {
            let has_tasks: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM tasks WHERE run_id = ?1)", [current.id], |r| r.get(0))?;
            if current.workflow.is_none() && !has_tasks {
                tx.execute("UPDATE runs SET workflow = ?2 WHERE id = ?1", params![current.id, workflow])?;
                current.workflow = Some(workflow.clone());
            } else {
                tx.execute(
                    "UPDATE runs SET ended_ms = COALESCE(ended_ms, ?2) WHERE id = ?1",
                    params![current.id, rows.wall_ms],
                )?;
                *run = Some(start(Some(workflow))?);
            }
        }
        (Some(workflow), None) => *run = Some(start(Some(workflow))?),
        (None, None) if !rows.tasks.is_empty() || !rows.events.is_empty() => *run = Some(start(None)?),
        (None, _) => {}
    }
    Ok(())
}

/// The current run finished (`ended_ms` set, if not already) or goes on again.
fn end_run(tx: &Connection, run: Option<&mut StoredRun>, finished: bool, wall_ms: i64) -> rusqlite::Result<()> {
    let Some(run) = run else { return Ok(()) };
    let ended = if finished { Some(run.ended_ms.unwrap_or(wall_ms)) } else { None };
    if ended != run.ended_ms {
        tx.execute("UPDATE runs SET ended_ms = ?2 WHERE id = ?1", params![run.id, ended])?;
        run.ended_ms = ended;
    }
    Ok(())
}

/// Bring a schema-1 store to schema 2 in one transaction: a crash halfway
/// leaves schema 1 as it was.
fn migrate_from_1(conn: &Connection) -> rusqlite::Result<()> {
    in_transaction(conn, || {
        // Stores from before leases were kept as time left.
        for column in ["lease_left_ms", "lease_clock_ms"] {
            if !has_column(conn, column)? {
                conn.execute_batch(&format!("ALTER TABLE tasks ADD COLUMN {column} INTEGER"))?;
            }
        }
        conn.execute_batch(SET_1_ASIDE)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(MOVE_1_TO_2)?;
        conn.execute(PUT_META, params!["schema_version", "2"])?;
        Ok(())
    })
}

fn has_column(conn: &Connection, column: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT COUNT(*) FROM pragma_table_info('tasks') WHERE name = ?1", [column], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// The stored hub clock; 0 for a new store.
fn read_clock(conn: &Connection) -> rusqlite::Result<i64> {
    let value: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [HUB_CLOCK], |r| r.get(0)).optional()?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::SqliteStore as Store;
    use super::*;
    use crate::scheduler::{Offer, Settings, Task, TaskId, TaskState, Worker};
    use crate::task::TaskSpec;

    /// The oldest grantable task, as the default policy chooses.
    #[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
    fn first(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, std::convert::Infallible> {
        Ok(ready.first().map(|t| t.spec.id.clone()))
    }

    /// The one text column `sql` selects, row by row.
    fn texts(store: &Store, sql: &str) -> Vec<String> {
        store.conn.prepare(sql).unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// The round trip itself is the store suite's (`suite::what_was_committed_comes_back…`, on
    /// both engines); here, what only this file shows.
    #[test]
    fn each_event_kind_is_stored_as_the_string_it_always_was() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3, ..Settings::default() });
        s.add_tasks(vec![TaskSpec::new("a", "first"), TaskSpec::new("b", "second")], None, now).unwrap();
        assert_eq!(s.offer("w", now, 1, first), Ok(Offer::Granted("a".into())));
        let mut store = Store::open(dir.path()).unwrap();
        let changes = s.take_changes();
        store.commit(&s, &changes, &[]).unwrap();
        let stored = texts(&store, "SELECT kind FROM events ORDER BY id");
        assert_eq!(stored, ["created", "created", "worker_joined", "assigned"]);
    }

    #[test]
    fn an_event_kind_written_by_another_mcc_is_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        for kind in ["created", "handed_over"] {
            conn.execute("INSERT INTO events (at_ms, kind, task_id) VALUES (1, ?1, 'a')", [kind]).unwrap();
        }
        drop(conn);
        let mut store = Store::open(dir.path()).unwrap();
        let kinds: Vec<EventKind> = store.events().unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Created, EventKind::Other("handed_over".into())]);
    }

    #[test]
    fn a_clock_tick_writes_one_row_and_a_restart_keeps_each_leases_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3, ..Settings::default() });
        let specs: Vec<TaskSpec> = (0..50).map(|i| TaskSpec::new(format!("t{i}"), "x")).collect();
        s.add_tasks(specs, None, now).unwrap();
        for i in 0..50 {
            s.offer(&format!("w{i}"), now, 1, first).unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        let changes = s.take_changes();
        store.commit(&s, &changes, &[]).unwrap();

        // 50 held leases: a checkpoint writes the clock alone.
        s.touch_held();
        let before = store.conn.total_changes();
        let changes = s.take_changes();
        store.commit(&s, &changes, &[]).unwrap();
        assert_eq!(store.conn.total_changes() - before, 1, "one row for the hub clock");

        // A holder's message moves its lease: the task row is updated in place, its body untouched.
        let body = |store: &Store| -> String {
            store.conn.query_row("SELECT body FROM tasks WHERE id = 't7'", [], |r| r.get(0)).unwrap()
        };
        let body_before = body(&store);
        s.touch("w7", now + Duration::from_mins(5));
        let changes = s.take_changes();
        assert!(changes.tasks.is_empty() && changes.leases.contains("t7"), "{changes:?}");
        store.commit(&s, &changes, &[]).unwrap();
        assert_eq!(body(&store), body_before);
        drop(store);

        let mut store = Store::open(dir.path()).unwrap();
        let (tasks, _) = store.load().unwrap();
        let left = |id: &str| tasks.iter().find(|t| t.spec.id == id).unwrap().lease_left(Instant::now()).unwrap();
        // t7's lease was moved 5 minutes on (on the hub clock, not the wall); the others kept theirs.
        assert!(left("t7") > Duration::from_mins(14), "{:?}", left("t7"));
        assert!(left("t0") > Duration::from_secs(590) && left("t0") <= Duration::from_mins(10), "{:?}", left("t0"));
    }

    /// A schema-1 store as mcc wrote it before schema 2 (leases as a
    /// wall-clock deadline only: the oldest kind).
    const SCHEMA_1: &str = "
        CREATE TABLE tasks (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL, holder TEXT,
            attempt INTEGER NOT NULL, lease_deadline_ms INTEGER, phase TEXT, body TEXT NOT NULL);
        CREATE TABLE workers (name TEXT PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
            task_id TEXT, worker TEXT, attempt INTEGER, detail TEXT);
        CREATE INDEX events_task ON events(task_id);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

    #[test]
    fn a_schema_1_store_is_migrated_with_every_row_and_its_leases() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3, ..Settings::default() });
        s.add_tasks(vec![TaskSpec::new("a", "first"), TaskSpec::new("b", "second")], None, now).unwrap();
        s.offer("w", now, 1, first).unwrap();
        {
            let conn = Connection::open(dir.path().join("state.db")).unwrap();
            conn.execute_batch(SCHEMA_1).unwrap();
            let deadline = now_ms() + 300_000;
            for t in s.tasks() {
                let lease = t.lease_until().map(|_| deadline);
                let body = serde_json::to_string(t).unwrap();
                conn.execute(
                    "INSERT INTO tasks VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        t.spec.id,
                        t.seq() as i64,
                        t.state().name(),
                        t.holder(),
                        t.attempt(),
                        lease,
                        t.phase(),
                        body
                    ],
                )
                .unwrap();
            }
            let w = serde_json::to_string(s.worker("w").unwrap()).unwrap();
            conn.execute("INSERT INTO workers VALUES ('w', ?1)", [w]).unwrap();
            for kind in ["created", "created", "assigned"] {
                conn.execute("INSERT INTO events (at_ms, kind, task_id) VALUES (1, ?1, 'a')", [kind]).unwrap();
            }
            conn.execute_batch("INSERT INTO meta VALUES ('schema_version', '1'), ('phase', 'one')").unwrap();
        }

        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.meta("schema_version").unwrap().as_deref(), Some("4"));
        assert_eq!(store.meta("phase").unwrap().as_deref(), Some("one"));
        let (tasks, workers) = store.load().unwrap();
        let states: Vec<(&str, TaskState)> = tasks.iter().map(|t| (t.spec.id.as_str(), t.state())).collect();
        assert_eq!(states, [("a", TaskState::Assigned), ("b", TaskState::Ready)]);
        let left = tasks[0].lease_left(Instant::now()).unwrap();
        assert!(left > Duration::from_secs(290) && left <= Duration::from_mins(5), "{left:?}");
        assert_eq!(workers[0].name(), "w");
        let events: Vec<(i64, EventKind)> = store.events().unwrap().into_iter().map(|e| (e.id, e.kind)).collect();
        assert_eq!(events, [(1, EventKind::Created), (2, EventKind::Created), (3, EventKind::Assigned)]);
        // The new tables: no rowid b-tree beside the key, no sequence table, no unused index.
        let sql = texts(&store, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name");
        assert_eq!(sql.iter().filter(|t| t.contains("WITHOUT ROWID")).count(), 5, "{sql:?}");
        assert!(
            !sql.iter().any(|t| t.contains("AUTOINCREMENT") || t.contains("events_task") || t.contains("_v1")),
            "{sql:?}"
        );
        drop(store);

        // Opened again: nothing to migrate, and a commit goes on from the last event.
        let mut store = Store::open(dir.path()).unwrap();
        let changes = s.take_changes();
        store.commit(&s, &changes, &[]).unwrap();
        let ids: Vec<i64> = store.events().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 3 + changes.events.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn a_store_from_a_newer_mcc_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'", []).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("schema version 5") && err.contains("upgrade mcc"), "{err}");
    }
}

/// The files attempts submitted, across the migration that made room for
/// them (what both engines do with them is in the store's suite).
#[cfg(test)]
mod files_tests {
    use super::SqliteStore as Store;
    use super::*;
    use crate::scheduler::Settings;
    use crate::store::Notes;
    use crate::store::suite::{keep, submitted};
    use crate::task::TaskSpec;

    #[test]
    fn a_schema_3_store_is_migrated_to_4_keeping_everything_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut s = Scheduler::new(Settings::default());
        s.add_tasks(vec![TaskSpec::new("a", "first")], None, Instant::now()).unwrap();
        let record = ValidationRecord {
            task: "a".into(),
            attempt: 1,
            command: "true".into(),
            exit_code: Some(0),
            timed_out: false,
            stdout_tail: "ok".into(),
            stderr_tail: String::new(),
        };
        let notes = Notes { workflow: Some("/p/a.lua".into()), validations: vec![record.clone()], ..Notes::default() };
        let changes = s.take_changes();
        let rows = Rows::gather_with(store.clock(), &s, &changes, &[("phase", "one".into())], notes).unwrap();
        store.write(std::slice::from_ref(&rows)).unwrap();
        // Back to schema 3 as mcc wrote it: no tables of submitted files.
        store.conn.execute_batch("DROP TABLE blobs; DROP TABLE attempt_files;").unwrap();
        store.conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'", []).unwrap();
        drop(store);

        // Read-only, not migrated: an older store answers "no files", not an error.
        let mut old = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(old.attempt_files("a", 1).unwrap(), []);
        assert_eq!(old.accepted_files().unwrap(), []);
        drop(old);

        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.meta("schema_version").unwrap().as_deref(), Some("4"));
        assert_eq!(store.meta("phase").unwrap().as_deref(), Some("one"));
        let (tasks, _) = store.load().unwrap();
        assert_eq!(tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(store.events().unwrap().len(), 1);
        assert_eq!(
            store.runs().unwrap().iter().map(|r| r.workflow.clone()).collect::<Vec<_>>(),
            [Some("/p/a.lua".into())]
        );
        assert_eq!(store.validations("a").unwrap(), [record]);
        keep(&mut store, submitted("a", 1, &[("a.md", Some(b"kept"))]));
        assert_eq!(store.attempt_files("a", 1).unwrap().len(), 1);
    }
}
