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
    AttemptFile, Backend, Clock, FileKept, HUB_CLOCK, Location, Options, RUN_FINISHED, Rows, StoreError, StoredEvent,
    StoredLease, StoredRun, TaskRecord, TaskRow, ValidationRecord,
};
use crate::event::EventKind;
use crate::scheduler::{Scheduler, Settings, Task, Worker};
use crate::task::now_ms;

/// The version of the PostgreSQL schema this mcc writes; a database with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 2;

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

/// The tokens of every project of a PostgreSQL database, made with the
/// store's schema: one table, so every hub of a project accepts the same tokens.
pub const TOKENS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS mcc_tokens (
    project TEXT NOT NULL,
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    scope TEXT NOT NULL,
    worker TEXT,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    expires_ms BIGINT,
    PRIMARY KEY (project, id),
    UNIQUE (project, hash)
);
";

/// Schema 1 to 2: what each attempt submitted at `done`, as the `SQLite`
/// engine's schema 4 keeps it: a row per (task, attempt, declared write
/// file) says whether its bytes were kept (under which SHA-256) or why not;
/// the bytes are in `mcc_blobs` once per content and project.
const SCHEMA_2: &str = "
CREATE TABLE IF NOT EXISTS mcc_blobs (
    project TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (project, sha256)
);
CREATE TABLE IF NOT EXISTS mcc_attempt_files (
    project TEXT NOT NULL,
    task_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    path TEXT NOT NULL,
    kept TEXT NOT NULL,
    sha256 TEXT,
    size BIGINT NOT NULL,
    PRIMARY KEY (project, task_id, attempt, path)
);
";

/// The tables of a project, in the order `mcc run --fresh` empties them.
pub const PROJECT_TABLES: [&str; 9] = [
    "mcc_tasks",
    "mcc_workers",
    "mcc_events",
    "mcc_meta",
    "mcc_runs",
    "mcc_validations",
    "mcc_tokens",
    "mcc_attempt_files",
    "mcc_blobs",
];

/// The meta key every write transaction sets to its sequence number: after
/// a lost connection, it says whether the COMMIT that got no answer landed.
const COMMIT_SEQ: &str = "commit_seq";

/// How long a write keeps trying to reconnect before it fails with the error.
const RECONNECT_FOR: Duration = Duration::from_mins(1);

/// A whole group in one statement (one round trip, its own transaction):
/// the fence first, every table's rows gated on it, the fence's row count
/// as the answer (0: fenced, nothing written).
const GROUP: &str = "
WITH fence AS (
    UPDATE mcc_leaders SET expires_at = now() + $3::bigint * interval '1 millisecond'
    WHERE project = $1 AND epoch = $2 AND owner = $4
    RETURNING 1
), put_tasks AS (
    INSERT INTO mcc_tasks (project, id, seq, state, holder, attempt, lease_deadline_ms, phase, body,
        lease_left_ms, lease_clock_ms, run_id)
    SELECT $1, u.* FROM UNNEST($5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[],
        $10::bigint[], $11::text[], $12::text[], $13::bigint[], $14::bigint[], $15::bigint[]) AS u
    WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (project, id) DO UPDATE SET state = excluded.state, holder = excluded.holder,
        attempt = excluded.attempt, lease_deadline_ms = excluded.lease_deadline_ms,
        phase = excluded.phase, body = excluded.body, lease_left_ms = excluded.lease_left_ms,
        lease_clock_ms = excluded.lease_clock_ms
), put_leases AS (
    UPDATE mcc_tasks t SET lease_left_ms = u.l, lease_clock_ms = u.c, lease_deadline_ms = u.w
    FROM UNNEST($16::text[], $17::bigint[], $18::bigint[], $19::bigint[]) AS u(id, l, c, w)
    WHERE t.project = $1 AND t.id = u.id AND EXISTS (SELECT 1 FROM fence)
), put_workers AS (
    INSERT INTO mcc_workers (project, name, body)
    SELECT $1, u.* FROM UNNEST($20::text[], $21::text[]) AS u WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (project, name) DO UPDATE SET body = excluded.body
), put_events AS (
    INSERT INTO mcc_events (project, id, at_ms, kind, task_id, worker, attempt, detail, run_id)
    SELECT $1, u.* FROM UNNEST($22::bigint[], $23::bigint[], $24::text[], $25::text[], $26::text[],
        $27::bigint[], $28::text[], $29::bigint[]) AS u
    WHERE EXISTS (SELECT 1 FROM fence)
), put_validations AS (
    INSERT INTO mcc_validations (project, task_id, attempt, at_ms, command, exit_code, timed_out,
        stdout_tail, stderr_tail)
    SELECT $1, u.* FROM UNNEST($30::text[], $31::bigint[], $32::bigint[], $33::text[], $34::int4[],
        $35::bool[], $36::text[], $37::text[]) AS u
    WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (project, task_id, attempt) DO UPDATE SET at_ms = excluded.at_ms,
        command = excluded.command, exit_code = excluded.exit_code, timed_out = excluded.timed_out,
        stdout_tail = excluded.stdout_tail, stderr_tail = excluded.stderr_tail
), put_meta AS (
    INSERT INTO mcc_meta (project, key, value)
    SELECT $1, u.* FROM UNNEST($38::text[], $39::text[]) AS u WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (project, key) DO UPDATE SET value = excluded.value
)
SELECT COUNT(*) FROM fence
";

/// The statements a write uses, prepared once per connection.
struct Prepared {
    group: Statement,
    fence: Statement,
    tasks: Statement,
    leases: Statement,
    workers: Statement,
    events: Statement,
    validations: Statement,
    meta: Statement,
    blobs: Statement,
    files: Statement,
}

impl Prepared {
    fn on(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Self {
            group: client.prepare(GROUP)?,
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
            // The same bytes submitted again are already there: one blob per content.
            blobs: client.prepare(
                "INSERT INTO mcc_blobs (project, sha256, bytes) SELECT $1, * FROM UNNEST($2::text[], $3::bytea[])
                 ON CONFLICT (project, sha256) DO NOTHING",
            )?,
            files: client.prepare(
                "INSERT INTO mcc_attempt_files (project, task_id, attempt, path, kept, sha256, size)
                 SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                 ON CONFLICT (project, task_id, attempt, path) DO UPDATE SET kept = excluded.kept,
                     sha256 = excluded.sha256, size = excluded.size",
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
    /// The database's schema: older only when opened read-only.
    version: i64,
    #[cfg(test)]
    lose_next_answer: bool,
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
/// acknowledged to workers only once it is on disk. TCP keepalives find a
/// peer gone silent (a partition) instead of waiting on it for ever.
fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.application_name("mcc").connect_timeout(Duration::from_secs(10)).keepalives_idle(Duration::from_secs(10));
    let mut client = config.connect(NoTls)?;
    client.batch_execute("SET synchronous_commit = on")?;
    Ok(client)
}

/// The connection a serving store writes on: a transaction of it left open
/// (its hub paused or cut off mid-write) is ended by the server once the
/// lease could have passed, so the lease row it locked never keeps a
/// standby from taking over.
fn connect_to_serve(url: &str, lease: Duration) -> Result<Client, postgres::Error> {
    let mut client = connect(url)?;
    let limit = lease.as_millis().max(1);
    client.batch_execute(&format!("SET idle_in_transaction_session_timeout = {limit}"))?;
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
            // Each step is idempotent: a database at 1 gets only what 2 adds.
            tx.batch_execute(SCHEMA_1)?;
            tx.batch_execute(lease::TABLE)?;
            tx.batch_execute(TOKENS_TABLE)?;
            tx.batch_execute(SCHEMA_2)?;
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
            let mut client = connect_to_serve(url, options.lease).map_err(pg)?;
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
                version: SCHEMA_VERSION,
                #[cfg(test)]
                lose_next_answer: false,
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
                version: found.unwrap_or(0),
                #[cfg(test)]
                lose_next_answer: false,
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
    fn reconnect(&mut self, since: Instant, why: &dyn std::fmt::Display) -> Result<Stored, StoreError> {
        self.client = None;
        self.prepared = None;
        tracing::warn!("{}: the connection to the database broke ({why}); reconnecting", self.shown);
        let mut delay = Duration::from_millis(50);
        loop {
            let lease = self.lease.as_ref().map_or(super::LEASE, |held| held.length);
            let attempt = connect_to_serve(&self.url, lease).and_then(|mut client| {
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
                        "{}: the database did not answer for {} s ({}); start the hub again once it is up",
                        self.shown,
                        RECONNECT_FOR.as_secs(),
                        super::with_causes(&e)
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
                Ok(Some(done)) if !self.answer_lost() => {
                    self.run = done.run;
                    self.next_event = done.next_event;
                    self.commit_seq = seq;
                    return Ok(());
                }
                Ok(None) => return Err(self.fenced(&held)),
                Err(e) if !broken(&e) => return Err(self.pg(e)),
                // The connection broke, maybe after the COMMIT was sent and before its answer came.
                lost => {
                    let why =
                        lost.err().map_or_else(|| "the answer to a COMMIT was lost".to_owned(), |e| e.to_string());
                    let stored = self.reconnect(since, &why)?;
                    self.run = stored.run;
                    self.next_event = stored.next_event;
                    // The lost COMMIT landed: written once, not again.
                    if stored.commit_seq == seq {
                        self.commit_seq = seq;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Whether the answer to the COMMIT that just landed is to be taken as
    /// lost (a test's way to cut the connection between the two).
    #[cfg(not(test))]
    #[allow(clippy::unused_self, reason = "the test build's twin reads a field")]
    fn answer_lost(&mut self) -> bool {
        false
    }

    #[cfg(test)]
    fn answer_lost(&mut self) -> bool {
        std::mem::take(&mut self.lose_next_answer)
    }

    /// Take the answer to the next COMMIT as lost, though it landed.
    #[cfg(test)]
    pub fn lose_next_answer(&mut self) {
        self.lose_next_answer = true;
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

    /// The rows `sql` selects of this project: `$1` is the project, `params` are `$2` on.
    fn project_rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<postgres::Row>, StoreError> {
        let project = self.project.clone();
        let all = [&[&project as Param<'_>][..], params].concat();
        self.client()?.query(sql, &all).map_err(|e| self.pg(e))
    }

    fn workers(&mut self) -> Result<Vec<Worker>, StoreError> {
        let rows = self.project_rows("SELECT body FROM mcc_workers WHERE project = $1 ORDER BY name", &[])?;
        rows.iter().map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(|e| self.corrupt(e))).collect()
    }

    fn events_where(&mut self, tail: &str, params: &[Param<'_>]) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT id, at_ms, kind, task_id, worker, attempt, detail, run_id FROM mcc_events WHERE project = $1 {tail}"
        );
        let rows = self.project_rows(&sql, params)?;
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

    /// The project's submitted files: `join` to other tables, `tail` after
    /// the project's condition (`$1`), `params` from `$2` on.
    fn files_where(&mut self, join: &str, tail: &str, params: &[Param<'_>]) -> Result<Vec<AttemptFile>, StoreError> {
        let sql = format!(
            "SELECT f.task_id, f.attempt, f.path, f.kept, f.sha256, f.size FROM mcc_attempt_files f {join}
             WHERE f.project = $1 {tail}"
        );
        let rows = self.project_rows(&sql, params)?;
        let mut files = Vec::with_capacity(rows.len());
        for r in &rows {
            let (task, attempt, path, kept): (String, i64, String, &str) = (r.get(0), r.get(1), r.get(2), r.get(3));
            let Some(kept) = FileKept::from_stored(kept, r.get(4)) else {
                return Err(StoreError::Crashed(format!(
                    "{}: attempt {attempt} of task {task} has file {path} kept as `{kept}`, which this mcc does not know; was it written by a newer mcc?",
                    self.shown
                )));
            };
            let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
            let size = u64::try_from(r.get::<_, i64>(5)).unwrap_or(0);
            files.push(AttemptFile { task, attempt, path, size, kept });
        }
        Ok(files)
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

/// What a group does to its run, in order, while its rows are gathered.
enum RunStep<'r> {
    /// A batch's rows are about to be gathered: the run they belong to
    /// (`unwritten_in`: whether the group holds rows of a run not yet written).
    Enter(&'r Rows, &'r mut Option<StoredRun>, &'r dyn Fn(i64) -> bool),
    /// `run_finished` was set: the run ended (or goes on again).
    End(Option<&'r mut StoredRun>, bool, i64),
}

/// A group's rows as the columns its statements take: one row per key, in
/// order (a later row for the same key wins), since one statement may not
/// change a row twice.
struct Group<'a> {
    tasks: Vec<TaskOut<'a>>,
    leases: Vec<(&'a str, Option<StoredLease>)>,
    workers: (Vec<&'a str>, Vec<&'a str>),
    events: EventColumns<'a>,
    validations: Vec<(&'a ValidationRecord, i64)>,
    meta: (Vec<&'a str>, Vec<&'a str>),
    /// `(sha256, bytes)`, once per content.
    blobs: (Vec<&'a str>, Vec<&'a [u8]>),
    files: Vec<&'a AttemptFile>,
}

fn gather<'a>(
    batches: &'a [Rows],
    pending: &mut Pending,
    clock: &'a str,
    seq: &'a str,
    mut run_step: impl FnMut(RunStep<'_>) -> Result<(), postgres::Error>,
) -> Result<Group<'a>, postgres::Error> {
    let mut tasks: Vec<TaskOut<'a>> = Vec::new();
    let mut task_at: HashMap<&str, usize> = HashMap::new();
    let mut leases: HashMap<&str, Option<StoredLease>> = HashMap::new();
    let mut workers: HashMap<&str, &str> = HashMap::new();
    let mut events = EventColumns::default();
    let mut validations: HashMap<(&str, u32), (&ValidationRecord, i64)> = HashMap::new();
    let mut meta: HashMap<&str, &str> = HashMap::new();
    let mut blobs: HashMap<&str, &[u8]> = HashMap::new();
    let mut files: HashMap<(&str, u32, &str), &AttemptFile> = HashMap::new();
    for rows in batches {
        let unwritten_in = |run: i64| tasks.iter().any(|t| t.run_id == Some(run));
        run_step(RunStep::Enter(rows, &mut pending.run, &unwritten_in))?;
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
        for submitted in &rows.notes.submitted {
            for (sha256, bytes) in &submitted.blobs {
                blobs.insert(sha256, bytes);
            }
            for f in &submitted.files {
                files.insert((&f.task, f.attempt, &f.path), f);
            }
        }
        for (key, value) in &rows.meta {
            meta.insert(key, value);
            if key == RUN_FINISHED {
                run_step(RunStep::End(pending.run.as_mut(), value == "true", rows.wall_ms))?;
            }
        }
    }
    // The clock moves with every commit (the leases written are measured on
    // it), and the sequence number says, after a lost answer, that it landed.
    if !batches.is_empty() {
        meta.insert(HUB_CLOCK, clock);
    }
    meta.insert(COMMIT_SEQ, seq);
    Ok(Group {
        tasks,
        leases: leases.into_iter().collect(),
        workers: workers.into_iter().unzip(),
        events,
        validations: validations.into_values().collect(),
        meta: meta.into_iter().unzip(),
        blobs: blobs.into_iter().unzip(),
        files: files.into_values().collect(),
    })
}

/// Whether a group touches no run (no workflow loaded, no run ended, a run
/// already there for its tasks and events) and keeps no submitted files
/// (rare, and as large as files): then it is one statement.
fn one_statement(batches: &[Rows], run: Option<&StoredRun>) -> bool {
    batches.iter().all(|rows| {
        rows.notes.workflow.is_none()
            && rows.notes.submitted.is_empty()
            && !rows.meta.iter().any(|(key, _)| key == RUN_FINISHED)
            && (run.is_some() || (rows.tasks.is_empty() && rows.events.is_empty()))
    })
}

/// Write `batches` in one transaction, the lease renewed first. `None`:
/// fenced, nothing written. A group that touches no run (nearly all of
/// them) is one statement, one round trip: the fence and every table's
/// rows in data-modifying `WITH` clauses, each gated on the fence.
fn write_transaction(
    client: &mut Client,
    prepared: &Prepared,
    project: &str,
    held: &Held,
    batches: &[Rows],
    seq: i64,
    mut pending: Pending,
) -> Result<Option<Pending>, postgres::Error> {
    let length = i64::try_from(held.length.as_millis()).unwrap_or(i64::MAX);
    let clock = batches.last().map(|last| last.clock_ms.to_string()).unwrap_or_default();
    let seq = seq.to_string();
    if one_statement(batches, pending.run.as_ref()) {
        let group = gather(batches, &mut pending, &clock, &seq, |_| Ok(()))?;
        let c = Columns::of(&group);
        let fenced: i64 = client
            .query_one(
                &prepared.group,
                &[
                    &[&project as Param<'_>, &held.epoch, &length, &held.owner][..],
                    &c.tasks(),
                    &c.leases(),
                    &[&group.workers.0 as Param<'_>, &group.workers.1],
                    &group.events.params(),
                    &c.validations(),
                    &[&group.meta.0 as Param<'_>, &group.meta.1],
                ]
                .concat(),
            )?
            .get(0);
        return Ok((fenced == 1).then_some(pending));
    }
    let mut tx = client.transaction()?;
    if tx.execute(&prepared.fence, &[&project, &held.epoch, &length, &held.owner])? != 1 {
        tx.rollback()?;
        return Ok(None);
    }
    let group = gather(batches, &mut pending, &clock, &seq, |step| match step {
        RunStep::Enter(rows, run, unwritten_in) => enter_run(&mut tx, project, run, rows, unwritten_in),
        RunStep::End(run, finished, wall_ms) => end_run(&mut tx, project, run, finished, wall_ms),
    })?;
    let c = Columns::of(&group);
    if !group.tasks.is_empty() {
        tx.execute(&prepared.tasks, &[&[&project as Param<'_>][..], &c.tasks()].concat())?;
    }
    if !group.leases.is_empty() {
        tx.execute(&prepared.leases, &[&[&project as Param<'_>][..], &c.leases()].concat())?;
    }
    if !group.workers.0.is_empty() {
        tx.execute(&prepared.workers, &[&project, &group.workers.0, &group.workers.1])?;
    }
    if !group.events.ids.is_empty() {
        tx.execute(&prepared.events, &[&[&project as Param<'_>][..], &group.events.params()].concat())?;
    }
    if !group.validations.is_empty() {
        tx.execute(&prepared.validations, &[&[&project as Param<'_>][..], &c.validations()].concat())?;
    }
    if !group.blobs.0.is_empty() {
        tx.execute(&prepared.blobs, &[&project, &group.blobs.0, &group.blobs.1])?;
    }
    if !group.files.is_empty() {
        let f = &group.files;
        let tasks: Vec<&str> = f.iter().map(|f| f.task.as_str()).collect();
        let attempts: Vec<i64> = f.iter().map(|f| i64::from(f.attempt)).collect();
        let paths: Vec<&str> = f.iter().map(|f| f.path.as_str()).collect();
        let kept: Vec<&str> = f.iter().map(|f| f.kept.name()).collect();
        let sha256s: Vec<Option<&str>> = f
            .iter()
            .map(|f| match &f.kept {
                FileKept::Kept { sha256 } => Some(sha256.as_str()),
                _ => None,
            })
            .collect();
        let sizes: Vec<i64> = f.iter().map(|f| i64::try_from(f.size).unwrap_or(i64::MAX)).collect();
        tx.execute(&prepared.files, &[&project, &tasks, &attempts, &paths, &kept, &sha256s, &sizes])?;
    }
    tx.execute(&prepared.meta, &[&project, &group.meta.0, &group.meta.1])?;
    tx.commit()?;
    Ok(Some(pending))
}

/// A group's tasks, moved leases and validations as the arrays the statements take.
struct Columns<'a> {
    task_ids: Vec<&'a str>,
    task_seqs: Vec<i64>,
    task_states: Vec<&'a str>,
    task_holders: Vec<Option<&'a str>>,
    task_attempts: Vec<i64>,
    task_walls: Vec<Option<i64>>,
    task_phases: Vec<Option<&'a str>>,
    task_bodies: Vec<&'a str>,
    task_lefts: Vec<Option<i64>>,
    task_clocks: Vec<Option<i64>>,
    task_runs: Vec<Option<i64>>,
    lease_ids: Vec<&'a str>,
    lease_lefts: Vec<Option<i64>>,
    lease_clocks: Vec<Option<i64>>,
    lease_walls: Vec<Option<i64>>,
    validation_tasks: Vec<&'a str>,
    validation_attempts: Vec<i64>,
    validation_at: Vec<i64>,
    validation_commands: Vec<&'a str>,
    validation_codes: Vec<Option<i32>>,
    validation_timed_out: Vec<bool>,
    validation_stdout: Vec<&'a str>,
    validation_stderr: Vec<&'a str>,
}

/// A statement's parameter.
type Param<'p> = &'p (dyn postgres::types::ToSql + Sync);

impl<'a> Columns<'a> {
    /// The tasks' columns, in the order the statements take them.
    fn tasks(&self) -> [Param<'_>; 11] {
        [
            &self.task_ids,
            &self.task_seqs,
            &self.task_states,
            &self.task_holders,
            &self.task_attempts,
            &self.task_walls,
            &self.task_phases,
            &self.task_bodies,
            &self.task_lefts,
            &self.task_clocks,
            &self.task_runs,
        ]
    }

    /// The leases' columns, in the order the statements take them.
    fn leases(&self) -> [Param<'_>; 4] {
        [&self.lease_ids, &self.lease_lefts, &self.lease_clocks, &self.lease_walls]
    }

    /// The validations' columns, in the order the statements take them.
    fn validations(&self) -> [Param<'_>; 8] {
        [
            &self.validation_tasks,
            &self.validation_attempts,
            &self.validation_at,
            &self.validation_commands,
            &self.validation_codes,
            &self.validation_timed_out,
            &self.validation_stdout,
            &self.validation_stderr,
        ]
    }

    fn of(group: &Group<'a>) -> Self {
        let t = &group.tasks;
        let (l, v) = (&group.leases, &group.validations);
        Self {
            task_ids: t.iter().map(|t| t.record.id.as_str()).collect(),
            task_seqs: t.iter().map(|t| t.record.seq).collect(),
            task_states: t.iter().map(|t| t.record.state).collect(),
            task_holders: t.iter().map(|t| t.record.holder.as_deref()).collect(),
            task_attempts: t.iter().map(|t| i64::from(t.record.attempt)).collect(),
            task_walls: t.iter().map(|t| t.lease.map(|l| l.wall)).collect(),
            task_phases: t.iter().map(|t| t.record.phase.as_deref()).collect(),
            task_bodies: t.iter().map(|t| t.record.body.as_str()).collect(),
            task_lefts: t.iter().map(|t| t.lease.map(|l| l.left)).collect(),
            task_clocks: t.iter().map(|t| t.lease.map(|l| l.on_clock)).collect(),
            task_runs: t.iter().map(|t| t.run_id).collect(),
            lease_ids: l.iter().map(|(id, _)| *id).collect(),
            lease_lefts: l.iter().map(|(_, l)| l.map(|l| l.left)).collect(),
            lease_clocks: l.iter().map(|(_, l)| l.map(|l| l.on_clock)).collect(),
            lease_walls: l.iter().map(|(_, l)| l.map(|l| l.wall)).collect(),
            validation_tasks: v.iter().map(|(v, _)| v.task.as_str()).collect(),
            validation_attempts: v.iter().map(|(v, _)| i64::from(v.attempt)).collect(),
            validation_at: v.iter().map(|(_, at)| *at).collect(),
            validation_commands: v.iter().map(|(v, _)| v.command.as_str()).collect(),
            validation_codes: v.iter().map(|(v, _)| v.exit_code).collect(),
            validation_timed_out: v.iter().map(|(v, _)| v.timed_out).collect(),
            validation_stdout: v.iter().map(|(v, _)| v.stdout_tail.as_str()).collect(),
            validation_stderr: v.iter().map(|(v, _)| v.stderr_tail.as_str()).collect(),
        }
    }
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
    /// The columns, in the order the statements take them.
    fn params(&self) -> [Param<'_>; 8] {
        [&self.ids, &self.at_ms, &self.kinds, &self.tasks, &self.workers, &self.attempts, &self.details, &self.runs]
    }

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

    fn in_flight(&mut self) -> Result<Vec<Task>, StoreError> {
        off_runtime(|| {
            let (now, wall, clock, project) = (Instant::now(), now_ms(), self.clock, self.project.clone());
            let held = format!("{TASK_ROWS} AND state IN ('assigned', 'submitted') ORDER BY seq");
            let rows = self.client()?.query(&held, &[&project]).map_err(|e| self.pg(e))?;
            rows.iter()
                .map(|r| super::task_from_row(task_row(r), clock, now, wall).map_err(|e| self.corrupt(e)))
                .collect::<Result<Vec<_>, _>>()
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
            let rows = self.project_rows("SELECT value FROM mcc_meta WHERE project = $1 AND key = $2", &[&key])?;
            Ok(rows.first().map(|r| r.get(0)))
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
            let rows = self.project_rows(
                "SELECT id, workflow, started_ms, ended_ms FROM mcc_runs WHERE project = $1 ORDER BY id",
                &[],
            )?;
            Ok(rows.iter().map(run_row).collect())
        })
    }

    fn task_runs(&mut self) -> Result<HashMap<String, i64>, StoreError> {
        off_runtime(|| {
            let rows =
                self.project_rows("SELECT id, run_id FROM mcc_tasks WHERE project = $1 AND run_id IS NOT NULL", &[])?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn validations(&mut self, task: &str) -> Result<Vec<ValidationRecord>, StoreError> {
        off_runtime(|| {
            let rows = self.project_rows(
                "SELECT task_id, attempt, command, exit_code, timed_out, stdout_tail, stderr_tail
                 FROM mcc_validations WHERE project = $1 AND task_id = $2 ORDER BY attempt",
                &[&task],
            )?;
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

    /// The declared write files `task`'s `attempt` submitted, by path (none
    /// in a database older than kept files).
    fn attempt_files(&mut self, task: &str, attempt: u32) -> Result<Vec<AttemptFile>, StoreError> {
        if self.version < 2 {
            return Ok(Vec::new());
        }
        let attempt = i64::from(attempt);
        off_runtime(|| {
            self.files_where("", "AND f.task_id = $2 AND f.attempt = $3 ORDER BY f.path", &[&task, &attempt])
        })
    }

    /// The bytes kept under `sha256`, if any.
    fn blob(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.version < 2 {
            return Ok(None);
        }
        off_runtime(|| {
            let rows =
                self.project_rows("SELECT bytes FROM mcc_blobs WHERE project = $1 AND sha256 = $2", &[&sha256])?;
            Ok(rows.first().map(|r| r.get(0)))
        })
    }

    /// Each path as the last accepted attempt that submitted it left it.
    fn accepted_files(&mut self) -> Result<Vec<AttemptFile>, StoreError> {
        if self.version < 2 {
            return Ok(Vec::new());
        }
        // The accepted events in the order of the verdicts, each joined to
        // its attempt's files by their key: one pass over the log.
        let accepted = off_runtime(|| {
            self.files_where(
                "JOIN mcc_events e ON e.project = f.project AND e.task_id = f.task_id AND e.attempt = f.attempt
                     AND e.kind = 'accepted'",
                "ORDER BY e.id",
                &[],
            )
        })?;
        let mut last = std::collections::BTreeMap::new();
        for file in accepted {
            last.insert(file.path.clone(), file);
        }
        Ok(last.into_values().collect())
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

/// A plain connection to a project's database for what is not the
/// engine's (the tokens): each call and the drop of its client run off the
/// hub's runtime, as the store's do.
pub struct Connection {
    client: Option<Client>,
    /// As messages name the project (no password).
    pub shown: String,
}

impl Connection {
    pub fn open(url: &str, project: &str) -> Result<Self, StoreError> {
        let shown = Location::Postgres { url: url.to_owned(), project: project.to_owned() }.to_string();
        match off_runtime(|| connect(url)) {
            Ok(client) => Ok(Self { client: Some(client), shown }),
            Err(source) => Err(StoreError::Postgres { location: shown, source }),
        }
    }

    /// `f` on the client, off the hub's runtime.
    pub fn run<T: Send>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, StoreError> {
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Crashed(format!("{}: the connection to the database is gone", self.shown)));
        };
        off_runtime(|| f(client)).map_err(|source| StoreError::Postgres { location: self.shown.clone(), source })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let client = self.client.take();
        off_runtime(move || drop(client));
    }
}
