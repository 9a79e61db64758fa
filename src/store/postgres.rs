//! The PostgreSQL engine of the task store (`--store postgres://…`): a
//! project's rows in tables shared by every project of the database, each
//! keyed by a `project` column, with the same columns and meanings as the
//! `SQLite` engine's tables ([`super::sqlite`]).
//!
//! A serving store holds the project's leader lease ([`super::lease`]) and
//! every write is one transaction that renews it first: a hub another took
//! over from fails its next write with [`StoreError::Fenced`] and writes
//! nothing. A group of commits is a few round trips, whatever its size: each
//! table's rows go in one statement over arrays (`UNNEST`), prepared once.
//!
//! A connection lost mid-write (the database restarted) costs a wait: the
//! store reconnects with backoff and, since the lost COMMIT may have landed,
//! reads back the `commit_seq` row every transaction writes before it writes
//! the group again. No NOTIFY: its lock at commit is global to the database.
//!
//! The client is the blocking one (the writer is a plain thread); it runs a
//! small runtime of its own, which must not be entered from a task of the
//! hub's: calls made on the hub's runtime run on a scoped thread
//! ([`off_runtime`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Statement, Transaction};
use serde_json::Value;

use super::lease::{self, Held};
use super::{
    Backend, Clock, HUB_CLOCK, Location, Options, RUN_FINISHED, Rows, StoreError, StoredEvent, StoredLease, StoredRun,
    TaskRecord, TaskRow, ValidationRecord,
};
use crate::event::EventKind;
use crate::scheduler::{Scheduler, Settings, Task, Worker};
use crate::task::now_ms;

/// The version of the PostgreSQL schema this mcc writes; a database with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// Key of the advisory lock that keeps two hubs from migrating at once.
const MIGRATION_LOCK: i64 = 0x6d63_635f_7363_6865; // "mcc_sche"

/// Schema 1: the `SQLite` engine's schema 3, every table keyed by project.
/// Event ids are per project (the lease holder is the project's only
/// writer), so a project's log reads in id order as it does in `SQLite`.
const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS mcc_tasks (
    project TEXT NOT NULL,
    id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    holder TEXT,
    attempt BIGINT NOT NULL,
    lease_deadline_ms BIGINT,
    phase TEXT,
    body TEXT NOT NULL,
    lease_left_ms BIGINT,
    lease_clock_ms BIGINT,
    run_id BIGINT,
    PRIMARY KEY (project, id)
);
CREATE TABLE IF NOT EXISTS mcc_workers (
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE IF NOT EXISTS mcc_events (
    project TEXT NOT NULL,
    id BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT,
    worker TEXT,
    attempt BIGINT,
    detail TEXT,
    run_id BIGINT,
    PRIMARY KEY (project, id)
);
CREATE INDEX IF NOT EXISTS mcc_events_task ON mcc_events (project, task_id, id);
CREATE TABLE IF NOT EXISTS mcc_meta (
    project TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (project, key)
);
CREATE TABLE IF NOT EXISTS mcc_runs (
    project TEXT NOT NULL,
    id BIGINT NOT NULL,
    workflow TEXT,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    PRIMARY KEY (project, id)
);
CREATE TABLE IF NOT EXISTS mcc_validations (
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    command TEXT NOT NULL,
    exit_code INTEGER,
    timed_out BOOLEAN NOT NULL,
    stdout_tail TEXT NOT NULL,
    stderr_tail TEXT NOT NULL,
    PRIMARY KEY (project, task_id, attempt)
);
";

/// The tables of a project, in the order `mcc run --fresh` empties them.
pub const PROJECT_TABLES: [&str; 7] =
    ["mcc_tasks", "mcc_workers", "mcc_events", "mcc_meta", "mcc_runs", "mcc_validations", "mcc_tokens"];

/// The meta key every write transaction sets to its sequence number: after
/// a lost connection, it says whether the COMMIT that got no answer landed.
const COMMIT_SEQ: &str = "commit_seq";

/// How long a write keeps trying to reconnect before it fails with the error.
const RECONNECT_FOR: Duration = Duration::from_mins(1);

/// The statements a write uses, prepared once per connection.
struct Prepared {
    fence: Statement,
    tasks: Statement,
    leases: Statement,
    workers: Statement,
    events: Statement,
    validations: Statement,
    meta: Statement,
}

impl Prepared {
    fn on(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Self {
            fence: client.prepare(
                "UPDATE mcc_leaders SET expires_at = now() + $3::bigint * interval '1 millisecond'
                 WHERE project = $1 AND epoch = $2 AND owner = $4",
            )?,
            // An upsert keeps the row where it is; the run a task was created in stays its run.
            tasks: client.prepare(
                "INSERT INTO mcc_tasks (project, id, seq, state, holder, attempt, lease_deadline_ms, phase, body,
                     lease_left_ms, lease_clock_ms, run_id)
                 SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
                     $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[])
                 ON CONFLICT (project, id) DO UPDATE SET state = excluded.state, holder = excluded.holder,
                     attempt = excluded.attempt, lease_deadline_ms = excluded.lease_deadline_ms,
                     phase = excluded.phase, body = excluded.body, lease_left_ms = excluded.lease_left_ms,
                     lease_clock_ms = excluded.lease_clock_ms",
            )?,
            // A lease that only moved: three numbers, not the task's whole body.
            leases: client.prepare(
                "UPDATE mcc_tasks t SET lease_left_ms = u.l, lease_clock_ms = u.c, lease_deadline_ms = u.w
                 FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u(id, l, c, w)
                 WHERE t.project = $1 AND t.id = u.id",
            )?,
            workers: client.prepare(
                "INSERT INTO mcc_workers (project, name, body) SELECT $1, * FROM UNNEST($2::text[], $3::text[])
                 ON CONFLICT (project, name) DO UPDATE SET body = excluded.body",
            )?,
            events: client.prepare(
                "INSERT INTO mcc_events (project, id, at_ms, kind, task_id, worker, attempt, detail, run_id)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::bigint[], $8::text[], $9::bigint[])",
            )?,
            validations: client.prepare(
                "INSERT INTO mcc_validations (project, task_id, attempt, at_ms, command, exit_code, timed_out,
                     stdout_tail, stderr_tail)
                 SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::int4[],
                     $7::bool[], $8::text[], $9::text[])
                 ON CONFLICT (project, task_id, attempt) DO UPDATE SET at_ms = excluded.at_ms,
                     command = excluded.command, exit_code = excluded.exit_code, timed_out = excluded.timed_out,
                     stdout_tail = excluded.stdout_tail, stderr_tail = excluded.stderr_tail",
            )?,
            meta: client.prepare(
                "INSERT INTO mcc_meta (project, key, value) SELECT $1, * FROM UNNEST($2::text[], $3::text[])
                 ON CONFLICT (project, key) DO UPDATE SET value = excluded.value",
            )?,
        })
    }
}

/// A project's store in a PostgreSQL database.
pub struct PostgresStore {
    /// `None` only while reconnecting, and once dropped.
    client: Option<Client>,
    prepared: Option<Prepared>,
    url: String,
    project: String,
    /// As messages name it (no password).
    shown: String,
    clock: Clock,
    /// The newest run, the one rows are written to.
    run: Option<StoredRun>,
    /// The id the next event of the project gets.
    next_event: i64,
    /// The last `commit_seq` this store wrote.
    commit_seq: i64,
    /// The project's leader lease; `None` when opened read-only.
    lease: Option<Held>,
}

/// Run `f` where the blocking client may run its own runtime: on this
/// thread, unless it is one of the hub's runtime's, then on a scoped thread.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| scope.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// Connect to `url`, with durable commits asked for explicitly: a commit is
/// acknowledged to workers only once it is on disk.
fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.application_name("mcc").connect_timeout(Duration::from_secs(10));
    let mut client = config.connect(NoTls)?;
    client.batch_execute("SET synchronous_commit = on")?;
    Ok(client)
}

/// Whether `e` is the connection going away (the server restarted, the
/// backend was terminated), which a reconnect may mend.
fn broken(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || code.starts_with("57P");
    }
    std::error::Error::source(e).is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
}

/// Create or migrate the schema, guarded by an advisory lock held to the
/// end of the transaction. `Err(Some(found))`: the database is newer.
fn migrate(client: &mut Client) -> Result<Result<(), i64>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mcc_schema (
             one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
             version BIGINT NOT NULL
         )",
    )?;
    let found: Option<i64> = tx.query_opt("SELECT version FROM mcc_schema", &[])?.map(|r| r.get(0));
    match found {
        Some(found) if found > SCHEMA_VERSION => return Ok(Err(found)),
        Some(SCHEMA_VERSION) => {}
        _ => {
            tx.batch_execute(SCHEMA_1)?;
            tx.batch_execute(lease::TABLE)?;
            tx.batch_execute(super::tokens::POSTGRES_TABLE)?;
            tx.execute(
                "INSERT INTO mcc_schema (one, version) VALUES (true, $1) ON CONFLICT (one) DO UPDATE SET version = excluded.version",
                &[&SCHEMA_VERSION],
            )?;
        }
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// What a project's rows say when a store opens, or after a reconnect.
struct Stored {
    clock_ms: i64,
    run: Option<StoredRun>,
    next_event: i64,
    commit_seq: i64,
}

fn read_stored(client: &mut Client, project: &str) -> Result<Stored, postgres::Error> {
    let row = client.query_one(
        "SELECT (SELECT value FROM mcc_meta WHERE project = $1 AND key = $2),
                (SELECT value FROM mcc_meta WHERE project = $1 AND key = $3),
                (SELECT COALESCE(MAX(id), 0) + 1 FROM mcc_events WHERE project = $1)",
        &[&project, &HUB_CLOCK, &COMMIT_SEQ],
    )?;
    let number = |value: Option<String>| value.and_then(|v| v.parse().ok()).unwrap_or(0);
    let run = client
        .query_opt(
            "SELECT id, workflow, started_ms, ended_ms FROM mcc_runs WHERE project = $1 ORDER BY id DESC LIMIT 1",
            &[&project],
        )?
        .map(|r| run_row(&r));
    Ok(Stored { clock_ms: number(row.get(0)), commit_seq: number(row.get(1)), next_event: row.get(2), run })
}

fn run_row(r: &postgres::Row) -> StoredRun {
    StoredRun { id: r.get(0), workflow: r.get(1), started_ms: r.get(2), ended_ms: r.get(3) }
}

impl PostgresStore {
    /// Open the project at `url` to serve it: the schema migrated (refused
    /// when newer), the project's lease taken (one attempt: refused with the
    /// holder named while another hub serves it).
    pub fn open(url: &str, project: &str, options: &Options) -> Result<Self, StoreError> {
        let location = Location::Postgres { url: url.to_owned(), project: project.to_owned() };
        let shown = location.to_string();
        let pg = |source| StoreError::Postgres { location: shown.clone(), source };
        off_runtime(|| {
            let mut client = connect(url).map_err(pg)?;
            if let Err(found) = migrate(&mut client).map_err(pg)? {
                return Err(StoreError::TooNewDatabase { location: shown.clone(), found, known: SCHEMA_VERSION });
            }
            let address = options.address.as_deref();
            let Some(held) =
                lease::acquire(&mut client, project, &options.owner, options.lease, address).map_err(pg)?
            else {
                let holder = lease::holder(&mut client, project).map_err(pg)?;
                return Err(StoreError::Serving {
                    location: shown.clone(),
                    holder: holder.as_ref().map_or_else(|| "another hub".to_owned(), lease::Holder::describe),
                    expires_in_ms: holder.map_or(0, |h| h.expires_in_ms.max(0)),
                });
            };
            let stored = read_stored(&mut client, project).map_err(pg)?;
            let prepared = Prepared::on(&mut client).map_err(pg)?;
            Ok(Self {
                client: Some(client),
                prepared: Some(prepared),
                url: url.to_owned(),
                project: project.to_owned(),
                shown: shown.clone(),
                clock: Clock { base_ms: stored.clock_ms, opened: Instant::now() },
                run: stored.run,
                next_event: stored.next_event,
                commit_seq: stored.commit_seq,
                lease: Some(held),
            })
        })
    }

    /// Open the project at `url` for reading only: nothing is created,
    /// migrated or written, and the lease is left alone. `None` when the
    /// database holds nothing of the project.
    pub fn open_read_only(url: &str, project: &str) -> Result<Option<Self>, StoreError> {
        let location = Location::Postgres { url: url.to_owned(), project: project.to_owned() };
        let shown = location.to_string();
        let pg = |source| StoreError::Postgres { location: shown.clone(), source };
        off_runtime(|| {
            let mut client = connect(url).map_err(pg)?;
            client.batch_execute("SET default_transaction_read_only = on").map_err(pg)?;
            let has_schema: bool =
                client.query_one("SELECT to_regclass('mcc_schema') IS NOT NULL", &[]).map_err(pg)?.get(0);
            if !has_schema {
                return Ok(None);
            }
            let found: Option<i64> =
                client.query_opt("SELECT version FROM mcc_schema", &[]).map_err(pg)?.map(|r| r.get(0));
            if let Some(found) = found.filter(|f| *f > SCHEMA_VERSION) {
                return Err(StoreError::TooNewDatabase { location: shown.clone(), found, known: SCHEMA_VERSION });
            }
            let any: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM mcc_meta WHERE project = $1)
                         OR EXISTS (SELECT 1 FROM mcc_tasks WHERE project = $1)",
                    &[&project],
                )
                .map_err(pg)?
                .get(0);
            if !any {
                return Ok(None);
            }
            let stored = read_stored(&mut client, project).map_err(pg)?;
            Ok(Some(Self {
                client: Some(client),
                prepared: None,
                url: url.to_owned(),
                project: project.to_owned(),
                shown: shown.clone(),
                clock: Clock { base_ms: stored.clock_ms, opened: Instant::now() },
                run: stored.run,
                next_event: stored.next_event,
                commit_seq: stored.commit_seq,
                lease: None,
            }))
        })
    }

    /// The server process of this store's connection, for a test to cut it.
    #[cfg(test)]
    pub fn backend_pid(&mut self) -> i32 {
        self.client().unwrap().query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0)
    }

    fn pg(&self, source: postgres::Error) -> StoreError {
        StoreError::Postgres { location: self.shown.clone(), source }
    }

    fn corrupt(&self, source: serde_json::Error) -> StoreError {
        StoreError::CorruptRow { location: self.shown.clone(), source }
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        match self.client.as_mut() {
            Some(client) => Ok(client),
            None => Err(StoreError::Crashed(format!("{}: the connection to the database is gone", self.shown))),
        }
    }

    /// The lease's holder now, as a fenced store names it.
    fn fenced(&mut self, held: &Held) -> StoreError {
        let holder = self.client.as_mut().and_then(|c| lease::holder(c, &self.project).ok().flatten());
        StoreError::Fenced {
            project: self.project.clone(),
            epoch: holder.as_ref().map_or(held.epoch, |h| h.epoch),
            holder: holder.map_or_else(|| "another hub".to_owned(), |h| h.describe()),
        }
    }

    /// Connect again after the connection broke, with backoff, until
    /// `since` + [`RECONNECT_FOR`]; then what the project's rows say now.
    fn reconnect(&mut self, since: Instant, why: &postgres::Error) -> Result<Stored, StoreError> {
        self.client = None;
        self.prepared = None;
        tracing::warn!("{}: the connection to the database broke ({why}); reconnecting", self.shown);
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = connect(&self.url).and_then(|mut client| {
                let prepared = Prepared::on(&mut client)?;
                let stored = read_stored(&mut client, &self.project)?;
                Ok((client, prepared, stored))
            });
            match attempt {
                Ok((client, prepared, stored)) => {
                    self.client = Some(client);
                    self.prepared = Some(prepared);
                    tracing::warn!("{}: reconnected after {:?}", self.shown, since.elapsed());
                    return Ok(stored);
                }
                Err(e) if since.elapsed() < RECONNECT_FOR => {
                    tracing::debug!("{}: reconnecting: {e}", self.shown);
                    // Backoff while the database comes back: nothing to wait on but time.
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(StoreError::Crashed(format!(
                        "{}: the database did not answer for {} s ({e}); start the hub again once it is up",
                        self.shown,
                        RECONNECT_FOR.as_secs()
                    )));
                }
            }
        }
    }

    fn write_now(&mut self, batches: &[Rows]) -> Result<(), StoreError> {
        let Some(held) = self.lease.clone() else {
            return Err(StoreError::Crashed(format!("{}: opened for reading only; nothing is written", self.shown)));
        };
        let seq = self.commit_seq + 1;
        let since = Instant::now();
        loop {
            let (Some(client), Some(prepared)) = (self.client.as_mut(), self.prepared.as_ref()) else {
                return Err(StoreError::Crashed(format!("{}: the connection to the database is gone", self.shown)));
            };
            let start = Pending { run: self.run.clone(), next_event: self.next_event };
            match write_transaction(client, prepared, &self.project, &held, batches, seq, start) {
                Ok(Some(done)) => {
                    self.run = done.run;
                    self.next_event = done.next_event;
                    self.commit_seq = seq;
                    return Ok(());
                }
                Ok(None) => return Err(self.fenced(&held)),
                Err(e) if broken(&e) => {
                    let stored = self.reconnect(since, &e)?;
                    self.run = stored.run;
                    self.next_event = stored.next_event;
                    // The lost COMMIT landed: written once, not again.
                    if stored.commit_seq == seq {
                        self.commit_seq = seq;
                        return Ok(());
                    }
                }
                Err(e) => return Err(self.pg(e)),
            }
        }
    }

    fn keep_alive_now(&mut self) -> Result<(), StoreError> {
        let Some(held) = self.lease.clone() else { return Ok(()) };
        let since = Instant::now();
        loop {
            let Some(client) = self.client.as_mut() else {
                return Err(StoreError::Crashed(format!("{}: the connection to the database is gone", self.shown)));
            };
            match lease::fence(client, &held) {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(self.fenced(&held)),
                Err(e) if broken(&e) => {
                    self.reconnect(since, &e)?;
                }
                Err(e) => return Err(self.pg(e)),
            }
        }
    }

    fn workers(&mut self) -> Result<Vec<Worker>, StoreError> {
        let project = self.project.clone();
        let rows = self
            .client()?
            .query("SELECT body FROM mcc_workers WHERE project = $1 ORDER BY name", &[&project])
            .map_err(|e| self.pg(e))?;
        rows.iter().map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| self.corrupt(e))).collect()
    }

    fn events_where(
        &mut self,
        tail: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let project = self.project.clone();
        let mut all: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&project];
        all.extend_from_slice(params);
        let sql = format!(
            "SELECT id, at_ms, kind, task_id, worker, attempt, detail, run_id FROM mcc_events WHERE project = $1 {tail}"
        );
        let rows = self.client()?.query(&sql, &all).map_err(|e| self.pg(e))?;
        Ok(rows
            .iter()
            .map(|r| StoredEvent {
                id: r.get(0),
                at_ms: r.get(1),
                kind: EventKind::from_name(r.get::<_, &str>(2)),
                task: r.get(3),
                worker: r.get(4),
                attempt: r.get::<_, Option<i64>>(5).map(|a| a as u32),
                detail: r.get::<_, Option<&str>>(6).and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null),
                run: r.get(7),
            })
            .collect())
    }

    /// The project's rows deleted (`mcc run --fresh`), other projects'
    /// untouched; refused while another hub holds the project's lease.
    pub fn forget(url: &str, project: &str) -> Result<(), StoreError> {
        let location = Location::Postgres { url: url.to_owned(), project: project.to_owned() };
        let shown = location.to_string();
        let pg = |source| StoreError::Postgres { location: shown.clone(), source };
        off_runtime(|| {
            let mut client = connect(url).map_err(pg)?;
            let has_schema: bool =
                client.query_one("SELECT to_regclass('mcc_schema') IS NOT NULL", &[]).map_err(pg)?.get(0);
            if !has_schema {
                return Ok(());
            }
            let mut tx = client.transaction().map_err(pg)?;
            // The lease row locked to the end: no hub takes it while the rows go.
            let holder = tx
                .query_opt(
                    "SELECT owner, epoch, address, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint
                     FROM mcc_leaders WHERE project = $1 FOR UPDATE",
                    &[&project],
                )
                .map_err(pg)?
                .map(|r| lease::Holder {
                    owner: r.get(0),
                    epoch: r.get(1),
                    address: r.get(2),
                    expires_in_ms: r.get(3),
                });
            if let Some(holder) = holder.filter(|h| h.expires_in_ms > 0) {
                return Err(StoreError::Serving {
                    location: shown.clone(),
                    holder: holder.describe(),
                    expires_in_ms: holder.expires_in_ms,
                });
            }
            for table in PROJECT_TABLES {
                tx.execute(&format!("DELETE FROM {table} WHERE project = $1"), &[&project]).map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }
}

/// What a write transaction moves on, kept only once it commits.
struct Pending {
    run: Option<StoredRun>,
    next_event: i64,
}

/// A task row as the group writes it: the last one of the group for its
/// task, its lease as last moved, the run it was first written in.
struct TaskOut<'a> {
    record: &'a TaskRecord,
    lease: Option<StoredLease>,
    run_id: Option<i64>,
}

/// Write `batches` in one transaction, the lease renewed first. `None`:
/// fenced, nothing written.
fn write_transaction(
    client: &mut Client,
    prepared: &Prepared,
    project: &str,
    held: &Held,
    batches: &[Rows],
    seq: i64,
    mut pending: Pending,
) -> Result<Option<Pending>, postgres::Error> {
    let mut tx = client.transaction()?;
    let length = i64::try_from(held.length.as_millis()).unwrap_or(i64::MAX);
    if tx.execute(&prepared.fence, &[&project, &held.epoch, &length, &held.owner])? != 1 {
        tx.rollback()?;
        return Ok(None);
    }
    // One row per key for the group, in order (a later row for the same key
    // wins): one statement may not change a row twice.
    let mut tasks: Vec<TaskOut<'_>> = Vec::new();
    let mut task_at: HashMap<&str, usize> = HashMap::new();
    let mut leases: HashMap<&str, Option<StoredLease>> = HashMap::new();
    let mut workers: HashMap<&str, &str> = HashMap::new();
    let mut events = EventColumns::default();
    let mut validations: HashMap<(&str, u32), (&ValidationRecord, i64)> = HashMap::new();
    let mut meta: HashMap<&str, &str> = HashMap::new();
    for rows in batches {
        let unwritten_in = |run: i64| tasks.iter().any(|t| t.run_id == Some(run));
        enter_run(&mut tx, project, &mut pending.run, rows, unwritten_in)?;
        let run_id = pending.run.as_ref().map(|r| r.id);
        for t in &rows.tasks {
            leases.remove(t.id.as_str());
            if let Some(&at) = task_at.get(t.id.as_str()) {
                tasks[at].record = t;
                tasks[at].lease = t.lease;
            } else {
                task_at.insert(&t.id, tasks.len());
                tasks.push(TaskOut { record: t, lease: t.lease, run_id });
            }
        }
        for (id, lease) in &rows.leases {
            match task_at.get(id.as_str()) {
                Some(&at) => tasks[at].lease = *lease,
                None => {
                    leases.insert(id, *lease);
                }
            }
        }
        for (name, body) in &rows.workers {
            workers.insert(name, body);
        }
        for e in &rows.events {
            events.push(pending.next_event, rows.wall_ms, e, run_id);
            pending.next_event += 1;
        }
        for v in &rows.notes.validations {
            validations.insert((&v.task, v.attempt), (v, rows.wall_ms));
        }
        for (key, value) in &rows.meta {
            meta.insert(key, value);
            if key == RUN_FINISHED {
                end_run(&mut tx, project, pending.run.as_mut(), value == "true", rows.wall_ms)?;
            }
        }
    }
    if !tasks.is_empty() {
        let r = |f: fn(&TaskOut<'_>) -> Option<i64>| tasks.iter().map(f).collect::<Vec<_>>();
        tx.execute(
            &prepared.tasks,
            &[
                &project,
                &tasks.iter().map(|t| t.record.id.as_str()).collect::<Vec<_>>(),
                &tasks.iter().map(|t| t.record.seq).collect::<Vec<_>>(),
                &tasks.iter().map(|t| t.record.state).collect::<Vec<_>>(),
                &tasks.iter().map(|t| t.record.holder.as_deref()).collect::<Vec<_>>(),
                &tasks.iter().map(|t| i64::from(t.record.attempt)).collect::<Vec<_>>(),
                &r(|t| t.lease.map(|l| l.wall)),
                &tasks.iter().map(|t| t.record.phase.as_deref()).collect::<Vec<_>>(),
                &tasks.iter().map(|t| t.record.body.as_str()).collect::<Vec<_>>(),
                &r(|t| t.lease.map(|l| l.left)),
                &r(|t| t.lease.map(|l| l.on_clock)),
                &r(|t| t.run_id),
            ],
        )?;
    }
    if !leases.is_empty() {
        let (ids, moved): (Vec<&str>, Vec<Option<StoredLease>>) = leases.into_iter().unzip();
        tx.execute(
            &prepared.leases,
            &[
                &project,
                &ids,
                &moved.iter().map(|l| l.map(|l| l.left)).collect::<Vec<_>>(),
                &moved.iter().map(|l| l.map(|l| l.on_clock)).collect::<Vec<_>>(),
                &moved.iter().map(|l| l.map(|l| l.wall)).collect::<Vec<_>>(),
            ],
        )?;
    }
    if !workers.is_empty() {
        let (names, bodies): (Vec<&str>, Vec<&str>) = workers.into_iter().unzip();
        tx.execute(&prepared.workers, &[&project, &names, &bodies])?;
    }
    if !events.ids.is_empty() {
        let e = &events;
        tx.execute(
            &prepared.events,
            &[&project, &e.ids, &e.at_ms, &e.kinds, &e.tasks, &e.workers, &e.attempts, &e.details, &e.runs],
        )?;
    }
    if !validations.is_empty() {
        let v: Vec<(&ValidationRecord, i64)> = validations.into_values().collect();
        tx.execute(
            &prepared.validations,
            &[
                &project,
                &v.iter().map(|(v, _)| v.task.as_str()).collect::<Vec<_>>(),
                &v.iter().map(|(v, _)| i64::from(v.attempt)).collect::<Vec<_>>(),
                &v.iter().map(|(_, at)| *at).collect::<Vec<_>>(),
                &v.iter().map(|(v, _)| v.command.as_str()).collect::<Vec<_>>(),
                &v.iter().map(|(v, _)| v.exit_code).collect::<Vec<_>>(),
                &v.iter().map(|(v, _)| v.timed_out).collect::<Vec<_>>(),
                &v.iter().map(|(v, _)| v.stdout_tail.as_str()).collect::<Vec<_>>(),
                &v.iter().map(|(v, _)| v.stderr_tail.as_str()).collect::<Vec<_>>(),
            ],
        )?;
    }
    // The clock moves with every commit (the leases written are measured on
    // it), and the sequence number says, after a lost answer, that it landed.
    let clock = batches.last().map(|last| last.clock_ms.to_string());
    let seq_text = seq.to_string();
    if let Some(clock) = &clock {
        meta.insert(HUB_CLOCK, clock);
    }
    meta.insert(COMMIT_SEQ, &seq_text);
    let (keys, values): (Vec<&str>, Vec<&str>) = meta.into_iter().unzip();
    tx.execute(&prepared.meta, &[&project, &keys, &values])?;
    tx.commit()?;
    Ok(Some(pending))
}

/// The events of a group as the columns one `UNNEST` insert takes.
#[derive(Default)]
struct EventColumns<'a> {
    ids: Vec<i64>,
    at_ms: Vec<i64>,
    kinds: Vec<&'a str>,
    tasks: Vec<Option<&'a str>>,
    workers: Vec<Option<&'a str>>,
    attempts: Vec<Option<i64>>,
    details: Vec<Option<&'a str>>,
    runs: Vec<Option<i64>>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, id: i64, at_ms: i64, e: &'a super::EventRecord, run: Option<i64>) {
        self.ids.push(id);
        self.at_ms.push(at_ms);
        self.kinds.push(e.kind.name());
        self.tasks.push(e.task.as_deref());
        self.workers.push(e.worker.as_deref());
        self.attempts.push(e.attempt.map(i64::from));
        self.details.push(e.detail.as_deref());
        self.runs.push(run);
    }
}

/// The run a batch's rows belong to, as the `SQLite` engine decides it
/// (see its `enter_run`); `unwritten_in` says whether the group holds rows
/// of a run not yet written.
fn enter_run(
    tx: &mut Transaction<'_>,
    project: &str,
    run: &mut Option<StoredRun>,
    rows: &Rows,
    unwritten_in: impl Fn(i64) -> bool,
) -> Result<(), postgres::Error> {
    let start = |tx: &mut Transaction<'_>, workflow: Option<&String>| -> Result<StoredRun, postgres::Error> {
        let id: i64 = tx
            .query_one(
                "INSERT INTO mcc_runs (project, id, workflow, started_ms)
                 SELECT $1, COALESCE(MAX(id), 0) + 1, $2, $3 FROM mcc_runs WHERE project = $1
                 RETURNING id",
                &[&project, &workflow, &rows.wall_ms],
            )?
            .get(0);
        Ok(StoredRun { id, workflow: workflow.cloned(), started_ms: rows.wall_ms, ended_ms: None })
    };
    match (&rows.notes.workflow, run.as_mut()) {
        (Some(_), Some(current)) if current.workflow == rows.notes.workflow => {}
        (Some(workflow), Some(current)) => {
            let has_tasks = unwritten_in(current.id)
                || tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM mcc_tasks WHERE project = $1 AND run_id = $2)",
                        &[&project, &current.id],
                    )?
                    .get::<_, bool>(0);
            if current.workflow.is_none() && !has_tasks {
                tx.execute(
                    "UPDATE mcc_runs SET workflow = $3 WHERE project = $1 AND id = $2",
                    &[&project, &current.id, workflow],
                )?;
                current.workflow = Some(workflow.clone());
            } else {
                tx.execute(
                    "UPDATE mcc_runs SET ended_ms = COALESCE(ended_ms, $3) WHERE project = $1 AND id = $2",
                    &[&project, &current.id, &rows.wall_ms],
                )?;
                *run = Some(start(tx, Some(workflow))?);
            }
        }
        (Some(workflow), None) => *run = Some(start(tx, Some(workflow))?),
        (None, None) if !rows.tasks.is_empty() || !rows.events.is_empty() => *run = Some(start(tx, None)?),
        (None, _) => {}
    }
    Ok(())
}

/// The current run finished (`ended_ms` set, if not already) or goes on again.
fn end_run(
    tx: &mut Transaction<'_>,
    project: &str,
    run: Option<&mut StoredRun>,
    finished: bool,
    wall_ms: i64,
) -> Result<(), postgres::Error> {
    let Some(run) = run else { return Ok(()) };
    let ended = if finished { Some(run.ended_ms.unwrap_or(wall_ms)) } else { None };
    if ended != run.ended_ms {
        tx.execute("UPDATE mcc_runs SET ended_ms = $3 WHERE project = $1 AND id = $2", &[&project, &run.id, &ended])?;
        run.ended_ms = ended;
    }
    Ok(())
}

const TASK_ROWS: &str =
    "SELECT body, lease_deadline_ms, lease_left_ms, lease_clock_ms FROM mcc_tasks WHERE project = $1";

fn task_row(r: &postgres::Row) -> TaskRow {
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

impl Backend for PostgresStore {
    fn clock(&self) -> Clock {
        self.clock
    }

    fn load(&mut self) -> Result<(Vec<Task>, Vec<Worker>), StoreError> {
        off_runtime(|| {
            let (now, wall, clock, project) = (Instant::now(), now_ms(), self.clock, self.project.clone());
            let rows =
                self.client()?.query(&format!("{TASK_ROWS} ORDER BY seq"), &[&project]).map_err(|e| self.pg(e))?;
            let tasks = rows
                .iter()
                .map(|r| super::task_from_row(task_row(r), clock, now, wall).map_err(|e| self.corrupt(e)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((tasks, self.workers()?))
        })
    }

    /// The scheduler as stored, built row by row as the rows stream in.
    fn restore(&mut self, settings: Settings) -> Result<Scheduler, StoreError> {
        off_runtime(|| {
            let (now, wall, clock, project) = (Instant::now(), now_ms(), self.clock, self.project.clone());
            let workers = self.workers()?;
            let count: i64 = self
                .client()?
                .query_one("SELECT COUNT(*) FROM mcc_tasks WHERE project = $1", &[&project])
                .map_err(|e| self.pg(e))?
                .get(0);
            let shown = self.shown.clone();
            let client = self.client()?;
            let mut rows = client
                .query_raw(TASK_ROWS, [project.as_str()])
                .map_err(|source| StoreError::Postgres { location: shown.clone(), source })?;
            let mut failed = None;
            let tasks = std::iter::from_fn(|| match rows.next() {
                Ok(Some(row)) => match super::task_from_row(task_row(&row), clock, now, wall) {
                    Ok(task) => Some(task),
                    Err(source) => {
                        failed = Some(StoreError::CorruptRow { location: shown.clone(), source });
                        None
                    }
                },
                Ok(None) => None,
                Err(source) => {
                    failed = Some(StoreError::Postgres { location: shown.clone(), source });
                    None
                }
            });
            let scheduler = Scheduler::restore_from(settings, count as usize, tasks, workers);
            match failed {
                Some(e) => Err(e),
                None => Ok(scheduler),
            }
        })
    }

    fn write(&mut self, batches: &[Rows]) -> Result<(), StoreError> {
        off_runtime(|| self.write_now(batches))
    }

    fn keep_alive(&mut self) -> Result<(), StoreError> {
        off_runtime(|| self.keep_alive_now())
    }

    /// A fifth of the lease: four renewals may fail before it expires.
    fn keep_alive_every(&self) -> Option<Duration> {
        self.lease.as_ref().map(|held| held.length / 5)
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        off_runtime(|| {
            let project = self.project.clone();
            let row = self
                .client()?
                .query_opt("SELECT value FROM mcc_meta WHERE project = $1 AND key = $2", &[&project, &key])
                .map_err(|e| self.pg(e))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn events(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        off_runtime(|| self.events_where("ORDER BY id", &[]))
    }

    fn run_events(&mut self, run: i64) -> Result<Vec<StoredEvent>, StoreError> {
        off_runtime(|| self.events_where("AND run_id = $2 ORDER BY id", &[&run]))
    }

    fn task_events(&mut self, task: &str) -> Result<Vec<StoredEvent>, StoreError> {
        off_runtime(|| self.events_where("AND task_id = $2 ORDER BY id", &[&task]))
    }

    fn runs(&mut self) -> Result<Vec<StoredRun>, StoreError> {
        off_runtime(|| {
            let project = self.project.clone();
            let rows = self
                .client()?
                .query(
                    "SELECT id, workflow, started_ms, ended_ms FROM mcc_runs WHERE project = $1 ORDER BY id",
                    &[&project],
                )
                .map_err(|e| self.pg(e))?;
            Ok(rows.iter().map(run_row).collect())
        })
    }

    fn task_runs(&mut self) -> Result<HashMap<String, i64>, StoreError> {
        off_runtime(|| {
            let project = self.project.clone();
            let rows = self
                .client()?
                .query("SELECT id, run_id FROM mcc_tasks WHERE project = $1 AND run_id IS NOT NULL", &[&project])
                .map_err(|e| self.pg(e))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn validations(&mut self, task: &str) -> Result<Vec<ValidationRecord>, StoreError> {
        off_runtime(|| {
            let project = self.project.clone();
            let rows = self
                .client()?
                .query(
                    "SELECT task_id, attempt, command, exit_code, timed_out, stdout_tail, stderr_tail
                     FROM mcc_validations WHERE project = $1 AND task_id = $2 ORDER BY attempt",
                    &[&project, &task],
                )
                .map_err(|e| self.pg(e))?;
            Ok(rows
                .iter()
                .map(|r| ValidationRecord {
                    task: r.get(0),
                    attempt: r.get::<_, i64>(1) as u32,
                    command: r.get(2),
                    exit_code: r.get(3),
                    timed_out: r.get(4),
                    stdout_tail: r.get(5),
                    stderr_tail: r.get(6),
                })
                .collect())
        })
    }

    fn recent_events(&mut self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        off_runtime(|| {
            let mut events = self.events_where("ORDER BY id DESC LIMIT $2", &[&limit])?;
            events.reverse();
            Ok(events)
        })
    }
}

/// A clean stop lets the lease go, so a standby takes over at once; the
/// client (and its runtime) is dropped off the hub's runtime.
impl Drop for PostgresStore {
    fn drop(&mut self) {
        let (client, held) = (self.client.take(), self.lease.take());
        let prepared = self.prepared.take();
        off_runtime(move || {
            drop(prepared);
            if let (Some(mut client), Some(held)) = (client, held) {
                if let Err(e) = lease::release(&mut client, &held) {
                    tracing::debug!("the project's lease was not let go ({e}); it expires on its own");
                }
                drop(client);
            }
        });
    }
}
