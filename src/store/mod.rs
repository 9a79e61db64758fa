//! The durable task store: one `SQLite` file in WAL mode with
//! `synchronous=FULL`, written by one owner. A batch of changes is one
//! transaction (group commit), committed before anything is acknowledged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::scheduler::{Changes, Scheduler, Task, Worker};
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
        let store = Self { conn, path };
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
        Ok(Self { conn, path })
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

    /// Every stored task and worker; leases resume with the time they had
    /// left when last written. Time while no hub ran, and wall-clock jumps,
    /// cost a lease nothing.
    pub fn load(&self) -> Result<(Vec<Task>, Vec<Worker>), StoreError> {
        let now = Instant::now();
        let wall = now_ms();
        let mut stmt = self
            .conn
            .prepare("SELECT body, lease_deadline_ms, lease_left_ms FROM tasks ORDER BY seq")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?, row.get::<_, Option<i64>>(2)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut tasks = Vec::new();
        for row in rows {
            let (body, deadline, left) = row.map_err(|e| self.sql(e))?;
            let mut task: Task = serde_json::from_str(&body).map_err(|e| self.corrupt(e))?;
            // Older stores have only the wall-clock deadline.
            let left = left.or_else(|| deadline.map(|d| d.saturating_sub(wall)));
            task.lease_until = left.map(|l| now + Duration::from_millis(l.max(0) as u64));
            tasks.push(task);
        }
        let mut stmt = self.conn.prepare("SELECT body FROM workers").map_err(|e| self.sql(e))?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0)).map_err(|e| self.sql(e))?;
        let mut workers = Vec::new();
        for row in rows {
            let body = row.map_err(|e| self.sql(e))?;
            workers.push(serde_json::from_str(&body).map_err(|e| self.corrupt(e))?);
        }
        Ok((tasks, workers))
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
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut put_task = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tasks (id, seq, state, holder, attempt, lease_deadline_ms, phase, body, lease_left_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(sql)?;
            for id in &changes.tasks {
                let Some(task) = scheduler.task(id) else { continue };
                let left = task.lease_until.map(|until| until.saturating_duration_since(now).as_millis() as i64);
                // The wall-clock deadline is for people reading the file; the hub reads `left`.
                let deadline = left.map(|l| wall + l);
                let body = serde_json::to_string(task).expect("a task always serializes");
                put_task
                    .execute(params![
                        id,
                        task.seq as i64,
                        task.state.name(),
                        task.holder,
                        task.attempt,
                        deadline,
                        task.phase,
                        body,
                        left
                    ])
                    .map_err(sql)?;
            }
            let mut put_worker =
                tx.prepare_cached("INSERT OR REPLACE INTO workers (name, body) VALUES (?1, ?2)").map_err(sql)?;
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
            let mut put_meta =
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)").map_err(sql)?;
            for (key, value) in meta {
                put_meta.execute(params![key, value]).map_err(sql)?;
            }
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
}
