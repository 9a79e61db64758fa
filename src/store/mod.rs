//! The durable task store: one `SQLite` file in WAL mode with
//! `synchronous=FULL`, written by one owner. A batch of changes is one
//! transaction (group commit), committed before anything is acknowledged;
//! it writes only the rows that changed, updated in place.
//!
//! Leases are kept on the hub clock: the hub's running time summed over
//! its runs, stored as one `meta` row with every commit. A lease's deadline
//! is a point on that clock, so a restart gives each lease the time it had
//! left at the last commit, time while no hub ran costs nothing, and keeping
//! that true costs one row a second, not one per held lease.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::scheduler::{Changes, Scheduler, Settings, Task, Worker};
use crate::task::now_ms;

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
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    holder TEXT,
    attempt INTEGER NOT NULL,
    lease_deadline_ms INTEGER,
    phase TEXT,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT,
    worker TEXT,
    attempt INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// One stored event, as read back for metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub task: Option<String>,
    pub worker: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
}

/// The `SQLite` file under `.mcc/`.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The hub clock (ms) when this store was opened, and the instant then.
    clock_base_ms: i64,
    opened: Instant,
}

const HUB_CLOCK: &str = "hub_clock_ms";

const TASK_ROWS: &str = "SELECT body, lease_deadline_ms, lease_left_ms, lease_clock_ms FROM tasks ORDER BY seq";

/// A task row: its body, wall-clock deadline, time left when written, deadline on the hub clock.
type TaskRow = (String, Option<i64>, Option<i64>, Option<i64>);

fn task_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

impl Store {
    /// Open (or create) `state.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("state.db");
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        conn.pragma_update(None, "busy_timeout", 5000).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        // Stores from before leases were kept as remaining time.
        let has_left: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('tasks') WHERE name = 'lease_left_ms'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sql)?
            > 0;
        if !has_left {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN lease_left_ms INTEGER").map_err(sql)?;
        }
        if !has_column(&conn, "lease_clock_ms").map_err(sql)? {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN lease_clock_ms INTEGER").map_err(sql)?;
        }
        let clock_base_ms = read_clock(&conn).map_err(sql)?;
        let store = Self { conn, path, clock_base_ms, opened: Instant::now() };
        match store.meta("schema_version")? {
            None => store.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) => {
                let found: i64 = v.parse().unwrap_or(i64::MAX);
                if found > SCHEMA_VERSION {
                    return Err(StoreError::TooNew { path: store.path, found, known: SCHEMA_VERSION });
                }
            }
        }
        Ok(store)
    }

    /// Open `state.db` in `dir` for reading only, when no hub runs: the
    /// file is not created and nothing is written.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("state.db");
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        let clock_base_ms = read_clock(&conn).unwrap_or(0);
        Ok(Self { conn, path, clock_base_ms, opened: Instant::now() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn corrupt(&self, source: serde_json::Error) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), source }
    }

    /// The hub clock at `at`, in ms.
    fn clock_at(&self, at: Instant) -> i64 {
        let since = at.checked_duration_since(self.opened).unwrap_or_default();
        self.clock_base_ms + since.as_millis() as i64
    }

    /// Every stored task and worker; leases resume with the time they had
    /// left at the last commit. Time while no hub ran, and wall-clock jumps,
    /// cost a lease nothing.
    pub fn load(&self) -> Result<(Vec<Task>, Vec<Worker>), StoreError> {
        let (now, wall) = (Instant::now(), now_ms());
        let mut stmt = self.conn.prepare(TASK_ROWS).map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], task_row).map_err(|e| self.sql(e))?;
        let mut tasks = Vec::new();
        for row in rows {
            tasks.push(self.task_from(row.map_err(|e| self.sql(e))?, now, wall)?);
        }
        Ok((tasks, self.workers()?))
    }

    /// The scheduler as stored, built row by row: each row is parsed and
    /// moved into the scheduler, never all of them held in a list first.
    pub fn restore(&self, settings: Settings) -> Result<Scheduler, StoreError> {
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

    /// A stored task with its lease resumed.
    fn task_from(
        &self,
        (body, deadline, left, on_clock): TaskRow,
        now: Instant,
        wall: i64,
    ) -> Result<Task, StoreError> {
        let mut task: Task = serde_json::from_str(&body).map_err(|e| self.corrupt(e))?;
        // Older stores have the time left when written, or only the wall-clock deadline.
        let left = on_clock
            .map(|until| until - self.clock_base_ms)
            .or(left)
            .or_else(|| deadline.map(|d| d.saturating_sub(wall)));
        task.lease_until = left.map(|l| now + Duration::from_millis(l.max(0) as u64));
        Ok(task)
    }

    /// Write every changed task and worker and append the events, in one
    /// transaction. Returns when the commit is durable.
    pub fn commit(
        &mut self,
        scheduler: &Scheduler,
        changes: &Changes,
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        if changes.is_empty() && meta.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let wall = now_ms();
        let clock = self.clock_at(now);
        let lease_at = |task: &Task| {
            task.lease_until.map(|until| {
                let left = until.saturating_duration_since(now).as_millis() as i64;
                // (time left, its point on the hub clock, a wall-clock deadline for people reading the file)
                (left, clock + left, wall + left)
            })
        };
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            // An upsert keeps the row where it is: no delete and re-insert, no index churn.
            let mut put_task = tx
                .prepare_cached(
                    "INSERT INTO tasks (id, seq, state, holder, attempt, lease_deadline_ms, phase, body, lease_left_ms, lease_clock_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                         holder = excluded.holder, attempt = excluded.attempt,
                         lease_deadline_ms = excluded.lease_deadline_ms, phase = excluded.phase,
                         body = excluded.body, lease_left_ms = excluded.lease_left_ms,
                         lease_clock_ms = excluded.lease_clock_ms",
                )
                .map_err(sql)?;
            for id in &changes.tasks {
                let Some(task) = scheduler.task(id) else { continue };
                let lease = lease_at(task);
                let body = serde_json::to_string(task).expect("a task always serializes");
                put_task
                    .execute(params![
                        id,
                        task.seq as i64,
                        task.state.name(),
                        task.holder,
                        task.attempt,
                        lease.map(|l| l.2),
                        task.phase,
                        body,
                        lease.map(|l| l.0),
                        lease.map(|l| l.1),
                    ])
                    .map_err(sql)?;
            }
            // A lease that only moved: three numbers, not the task's whole body.
            let mut put_lease = tx
                .prepare_cached(
                    "UPDATE tasks SET lease_left_ms = ?2, lease_clock_ms = ?3, lease_deadline_ms = ?4 WHERE id = ?1",
                )
                .map_err(sql)?;
            for id in changes.leases.difference(&changes.tasks) {
                let Some(task) = scheduler.task(id) else { continue };
                let lease = lease_at(task);
                put_lease
                    .execute(params![id, lease.map(|l| l.0), lease.map(|l| l.1), lease.map(|l| l.2)])
                    .map_err(sql)?;
            }
            let mut put_worker = tx
                .prepare_cached(
                    "INSERT INTO workers (name, body) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
                )
                .map_err(sql)?;
            for name in &changes.workers {
                let Some(worker) = scheduler.worker(name) else { continue };
                let body = serde_json::to_string(worker).expect("a worker always serializes");
                put_worker.execute(params![name, body]).map_err(sql)?;
            }
            let mut put_event = tx
                .prepare_cached(
                    "INSERT INTO events (at_ms, kind, task_id, worker, attempt, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for e in &changes.events {
                let detail = if e.detail.is_null() { None } else { Some(e.detail.to_string()) };
                put_event.execute(params![wall, e.kind, e.task, e.worker, e.attempt, detail]).map_err(sql)?;
            }
            let mut put_meta = tx
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )
                .map_err(sql)?;
            for (key, value) in meta {
                put_meta.execute(params![key, value]).map_err(sql)?;
            }
            // The clock moves with every commit: the leases written are measured on it.
            put_meta.execute(params![HUB_CLOCK, clock.to_string()]).map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// A stored setting or piece of workflow state.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![key, value])
            .map(|_| ())
            .map_err(|e| self.sql(e))
    }

    /// The event log in order, for metrics.
    pub fn events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, at_ms, kind, task_id, worker, attempt, detail FROM events ORDER BY id")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredEvent {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    task: r.get(3)?,
                    worker: r.get(4)?,
                    attempt: r.get(5)?,
                    detail: r
                        .get::<_, Option<String>>(6)?
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or(Value::Null),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
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
    use super::*;
    use crate::scheduler::{Offer, Settings, TaskState};
    use crate::task::TaskSpec;

    #[test]
    fn what_was_committed_comes_back_after_reopening_with_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3 });
        s.add_tasks(vec![TaskSpec::new("a", "first"), TaskSpec::new("b", "second")], None, now).unwrap();
        let offer = s.offer("w", now, |_, ready| ready.first().map(|t| t.spec.id.clone()));
        assert_eq!(offer, Offer::Granted("a".into()));
        let mut store = Store::open(dir.path()).unwrap();
        let changes = s.take_changes();
        store.commit(&s, &changes, &[("phase", "one".into())]).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let (tasks, workers) = store.load().unwrap();
        assert_eq!(tasks.len(), 2);
        let a = &tasks[0];
        assert_eq!((a.state, a.attempt, a.holder.as_deref()), (TaskState::Assigned, 1, Some("w")));
        let left = a.lease_left(Instant::now()).unwrap();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_mins(10), "{left:?}");
        assert_eq!(workers[0].name, "w");
        assert_eq!(store.meta("phase").unwrap().as_deref(), Some("one"));
        let kinds: Vec<String> = store.events().unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["created", "created", "worker_joined", "assigned"]);
    }

    #[test]
    fn a_clock_tick_writes_one_row_and_a_restart_keeps_each_leases_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3 });
        let specs: Vec<TaskSpec> = (0..50).map(|i| TaskSpec::new(format!("t{i}"), "x")).collect();
        s.add_tasks(specs, None, now).unwrap();
        for i in 0..50 {
            s.offer(&format!("w{i}"), now, |_, ready| ready.first().map(|t| t.spec.id.clone()));
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

        let store = Store::open(dir.path()).unwrap();
        let (tasks, _) = store.load().unwrap();
        let left = |id: &str| tasks.iter().find(|t| t.spec.id == id).unwrap().lease_left(Instant::now()).unwrap();
        // t7's lease was moved 5 minutes on (on the hub clock, not the wall); the others kept theirs.
        assert!(left("t7") > Duration::from_mins(14), "{:?}", left("t7"));
        assert!(left("t0") > Duration::from_secs(590) && left("t0") <= Duration::from_mins(10), "{:?}", left("t0"));
    }
}
