//! The store's one test suite, written against [`Store`] and run unchanged
//! on both engines: each test is instantiated for `SQLite` (a temp folder)
//! and for PostgreSQL (a project of its own in the database `scripts/test`
//! starts and names in `MCC_TEST_POSTGRES`). What only one engine has (the
//! lease and its fence, projects side by side, reconnecting) is tested
//! below the suite, on PostgreSQL.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{
    AttemptFile, Backend, EventRecord, FileKept, Location, Notes, Options, RUN_FINISHED, Rows, Store, StoreError,
    SubmittedFiles, ValidationRecord,
};
use crate::checkout::sha256_hex;
use crate::event::EventKind;
use crate::scheduler::{Offer, Scheduler, Settings, Task, TaskId, TaskState, Worker};
use crate::task::TaskSpec;

/// The test database's URL, as `scripts/test` names it.
pub(crate) fn postgres_url() -> String {
    match std::env::var("MCC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "MCC_TEST_POSTGRES is not set: this test needs a real PostgreSQL. Run the tests with \
             `scripts/test` (it starts one for the run and passes its arguments to cargo test), or \
             start one with `eval \"$(scripts/postgres start)\"`"
        ),
    }
}

/// A project name no other test (nor another run on the same database) uses.
pub(crate) fn project_name(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    format!("{test}-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Where one test's store is.
pub(crate) struct Place {
    pub location: Location,
    _dir: Option<tempfile::TempDir>,
}

impl Place {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { location: Location::Sqlite(dir.path().to_owned()), _dir: Some(dir) }
    }

    pub fn postgres(test: &str) -> Self {
        Self { location: Location::Postgres { url: postgres_url(), project: project_name(test) }, _dir: None }
    }

    /// The store opened to serve, as a hub opens it.
    pub fn open(&self) -> Store {
        self.open_with(&Options::default()).unwrap()
    }

    pub fn open_with(&self, options: &Options) -> Result<Store, StoreError> {
        super::open(&self.location, options)
    }

    /// The store opened read-only, as `mcc status` and the report open it.
    pub fn read_only(&self) -> Store {
        super::open_read_only(&self.location).unwrap().expect("the store holds something")
    }
}

/// Each named test of the suite, once per engine.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn on_sqlite() {
                super::$name(&super::Place::sqlite());
            }

            #[test]
            fn on_postgres() {
                super::$name(&super::Place::postgres(stringify!($name)));
            }
        }
    )*};
}

on_both_engines!(
    what_was_committed_comes_back_after_reopening_with_its_lease,
    a_restart_gives_each_lease_the_time_it_had_left,
    a_group_of_commits_is_written_in_order_and_the_last_row_of_a_task_wins,
    another_workflow_starts_a_run_and_the_same_one_loaded_again_goes_on_with_its_own,
    tasks_added_by_hand_are_a_run_of_no_workflow_and_a_workflow_takes_an_empty_one_on,
    a_workflow_takes_on_a_run_of_no_task,
    a_validations_output_is_kept_per_attempt,
    recent_events_are_the_last_ones_oldest_first,
    a_project_with_nothing_stored_has_no_store_to_read,
    the_scheduler_is_restored_as_it_was_committed,
    two_attempts_submitting_the_same_bytes_keep_one_blob,
    the_accepted_state_is_each_paths_content_from_its_last_accepted_attempt,
    the_tasks_in_flight_are_the_assigned_and_submitted_ones_read_only_too,
);

/// The oldest grantable task, as the default policy chooses.
#[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
fn first(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, std::convert::Infallible> {
    Ok(ready.first().map(|t| t.spec.id.clone()))
}

fn ten_minutes() -> Scheduler {
    Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3, ..Settings::default() })
}

/// Write what changed in `s` with `meta` and `notes`, as the engine's commit does.
fn write(store: &mut dyn Backend, s: &mut Scheduler, meta: &[(&str, String)], notes: Notes) {
    let changes = s.take_changes();
    if let Some(rows) = Rows::gather_with(store.clock(), s, &changes, meta, notes) {
        store.write(std::slice::from_ref(&rows)).unwrap();
    }
}

fn loaded(workflow: &str) -> Notes {
    Notes { workflow: Some(workflow.to_owned()), ..Notes::default() }
}

/// What `task`'s `attempt` submitted: each path with its bytes, or `None` for a deleted one.
pub(crate) fn submitted(task: &str, attempt: u32, files: &[(&str, Option<&[u8]>)]) -> SubmittedFiles {
    let mut out = SubmittedFiles::default();
    for (path, bytes) in files {
        let (size, kept) = match bytes {
            Some(bytes) => {
                let sha256 = sha256_hex(bytes);
                out.blobs.push((sha256.clone(), bytes.to_vec()));
                (bytes.len() as u64, FileKept::Kept { sha256 })
            }
            None => (0, FileKept::Deleted),
        };
        out.files.push(AttemptFile { task: task.into(), attempt, path: (*path).into(), size, kept });
    }
    out
}

/// Write what an attempt submitted at `done`, as the hub's commit does.
pub(crate) fn keep(store: &mut dyn Backend, files: SubmittedFiles) {
    let mut s = Scheduler::new(Settings::default());
    let notes = Notes { submitted: vec![files], ..Notes::default() };
    write(store, &mut s, &[], notes);
}

/// The verdict `kind` on `task`'s `attempt`, as the scheduler logs it.
fn verdict(store: &mut dyn Backend, kind: &str, task: &str, attempt: u32) {
    let event = EventRecord {
        kind: EventKind::from_name(kind),
        task: Some(task.into()),
        worker: None,
        attempt: Some(attempt),
        detail: None,
    };
    let rows = Rows {
        tasks: Vec::new(),
        leases: Vec::new(),
        workers: Vec::new(),
        events: vec![event],
        meta: Vec::new(),
        notes: Notes::default(),
        clock_ms: store.clock().at(Instant::now()),
        wall_ms: crate::task::now_ms(),
    };
    store.write(std::slice::from_ref(&rows)).unwrap();
}

/// How many blobs the place's store holds, counted in its own tables.
fn blobs_stored(place: &Place) -> i64 {
    match &place.location {
        Location::Sqlite(dir) => rusqlite::Connection::open(crate::layout::Layout::at(dir).state_db())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get(0))
            .unwrap(),
        Location::Postgres { url, project } => ::postgres::Client::connect(url, ::postgres::NoTls)
            .unwrap()
            .query_one("SELECT COUNT(*) FROM mcc_blobs WHERE project = $1", &[project])
            .unwrap()
            .get(0),
    }
}

fn what_was_committed_comes_back_after_reopening_with_its_lease(place: &Place) {
    let now = Instant::now();
    let mut s = ten_minutes();
    s.add_tasks(vec![TaskSpec::new("a", "first"), TaskSpec::new("b", "second")], None, now).unwrap();
    assert_eq!(s.offer("w", now, 1, first), Ok(Offer::Granted("a".into())));
    let mut store = place.open();
    write(&mut *store, &mut s, &[("phase", "one".into())], Notes::default());
    drop(store);

    let mut store = place.open();
    let (tasks, workers) = store.load().unwrap();
    assert_eq!(tasks.len(), 2);
    let a = &tasks[0];
    assert_eq!((a.state(), a.attempt(), a.holder()), (TaskState::Assigned, 1, Some("w")));
    let left = a.lease_left(Instant::now()).unwrap();
    assert!(left > Duration::from_secs(590) && left <= Duration::from_mins(10), "{left:?}");
    assert_eq!(workers[0].name(), "w");
    assert_eq!(store.meta("phase").unwrap().as_deref(), Some("one"));
    assert_eq!(store.meta("never written").unwrap(), None);
    let kinds: Vec<EventKind> = store.events().unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Created, EventKind::Created, EventKind::WorkerJoined, EventKind::Assigned]);
    let of_a: Vec<EventKind> = store.task_events("a").unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(of_a, [EventKind::Created, EventKind::Assigned]);
}

fn a_restart_gives_each_lease_the_time_it_had_left(place: &Place) {
    let now = Instant::now();
    let mut s = ten_minutes();
    let specs: Vec<TaskSpec> = (0..50).map(|i| TaskSpec::new(format!("t{i}"), "x")).collect();
    s.add_tasks(specs, None, now).unwrap();
    for i in 0..50 {
        s.offer(&format!("w{i}"), now, 1, first).unwrap();
    }
    let mut store = place.open();
    write(&mut *store, &mut s, &[], Notes::default());
    // A checkpoint of the clock alone, then a holder's message moves one lease (not its body).
    s.touch_held();
    write(&mut *store, &mut s, &[], Notes::default());
    s.touch("w7", now + Duration::from_mins(5));
    let changes = s.take_changes();
    assert!(changes.tasks.is_empty() && changes.leases.contains("t7"), "{changes:?}");
    store.write(&[Rows::gather(store.clock(), &s, &changes, &[]).unwrap()]).unwrap();
    drop(store);

    let mut store = place.open();
    let (tasks, _) = store.load().unwrap();
    let left = |id: &str| tasks.iter().find(|t| t.spec.id == id).unwrap().lease_left(Instant::now()).unwrap();
    // t7's lease was moved 5 minutes on (on the hub clock, not the wall); the others kept theirs.
    assert!(left("t7") > Duration::from_mins(14), "{:?}", left("t7"));
    assert!(left("t0") > Duration::from_secs(590) && left("t0") <= Duration::from_mins(10), "{:?}", left("t0"));
}

fn a_group_of_commits_is_written_in_order_and_the_last_row_of_a_task_wins(place: &Place) {
    let now = Instant::now();
    let mut s = ten_minutes();
    let mut store = place.open();
    let clock = store.clock();
    let mut group = Vec::new();
    let mut gather = |s: &mut Scheduler, meta: &[(&str, String)]| {
        let changes = s.take_changes();
        group.extend(Rows::gather(clock, s, &changes, meta));
    };
    s.add_tasks(vec![TaskSpec::new("a", "x"), TaskSpec::new("b", "y")], None, now).unwrap();
    gather(&mut s, &[("round", "1".into())]);
    s.offer("w", now, 1, first).unwrap();
    gather(&mut s, &[("round", "2".into())]);
    // A lease that only moved, after the task's row in the same group.
    s.touch("w", now + Duration::from_mins(3));
    gather(&mut s, &[]);
    s.leave("w");
    s.offer("w", now, 1, first).unwrap();
    gather(&mut s, &[("round", "3".into())]);
    let written: usize = group.iter().map(|r| r.events.len()).sum();
    store.write(&group).unwrap();
    drop(store);

    let mut store = place.open();
    let (tasks, _) = store.load().unwrap();
    let a = &tasks[0];
    assert_eq!((a.state(), a.attempt(), a.holder()), (TaskState::Assigned, 2, Some("w")), "{a:?}");
    assert_eq!(tasks[1].state(), TaskState::Ready);
    assert_eq!(store.meta("round").unwrap().as_deref(), Some("3"));
    let ids: Vec<i64> = store.events().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), written);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

fn another_workflow_starts_a_run_and_the_same_one_loaded_again_goes_on_with_its_own(place: &Place) {
    let mut store = place.open();
    let mut s = Scheduler::new(Settings::default());
    let now = Instant::now();
    // Nothing written yet: no run.
    write(&mut *store, &mut s, &[(RUN_FINISHED, "false".into())], Notes::default());
    assert_eq!(store.runs().unwrap(), []);
    s.add_tasks(vec![TaskSpec::new("a1", "x")], None, now).unwrap();
    write(&mut *store, &mut s, &[], loaded("/p/a.lua"));
    write(&mut *store, &mut s, &[(RUN_FINISHED, "true".into())], Notes::default());
    // A restart loads it again: the same run.
    write(&mut *store, &mut s, &[], loaded("/p/a.lua"));
    s.add_tasks(vec![TaskSpec::new("b1", "y")], None, now).unwrap();
    write(&mut *store, &mut s, &[(RUN_FINISHED, "false".into())], loaded("/p/b.lua"));
    drop(store);

    let mut store = place.read_only();
    let runs = store.runs().unwrap();
    let shape: Vec<(i64, Option<&str>, bool)> =
        runs.iter().map(|r| (r.id, r.workflow.as_deref(), r.ended_ms.is_some())).collect();
    assert_eq!(shape, [(1, Some("/p/a.lua"), true), (2, Some("/p/b.lua"), false)]);
    let task_runs = store.task_runs().unwrap();
    assert_eq!((task_runs["a1"], task_runs["b1"]), (1, 2));
    let created: Vec<(Option<String>, Option<i64>)> =
        store.events().unwrap().into_iter().map(|e| (e.task, e.run)).collect();
    assert_eq!(created, [(Some("a1".into()), Some(1)), (Some("b1".into()), Some(2))]);
    assert_eq!(store.run_events(2).unwrap().len(), 1);
}

fn tasks_added_by_hand_are_a_run_of_no_workflow_and_a_workflow_takes_an_empty_one_on(place: &Place) {
    let mut store = place.open();
    let mut s = Scheduler::new(Settings::default());
    let now = Instant::now();
    s.add_tasks(vec![TaskSpec::new("hand", "x")], None, now).unwrap();
    write(&mut *store, &mut s, &[], Notes::default());
    write(&mut *store, &mut s, &[], loaded("/p/a.lua"));
    let runs: Vec<Option<String>> = store.runs().unwrap().into_iter().map(|r| r.workflow).collect();
    assert_eq!(runs, [None, Some("/p/a.lua".to_owned())], "a run with tasks keeps them");
}

fn a_workflow_takes_on_a_run_of_no_task(place: &Place) {
    let mut store = place.open();
    let mut s = Scheduler::new(Settings::default());
    s.see_worker("w", Instant::now());
    write(&mut *store, &mut s, &[], Notes::default());
    write(&mut *store, &mut s, &[], loaded("/p/a.lua"));
    let runs: Vec<(i64, Option<String>)> = store.runs().unwrap().into_iter().map(|r| (r.id, r.workflow)).collect();
    assert_eq!(runs, [(1, Some("/p/a.lua".to_owned()))], "a run of no task takes the workflow on");
}

fn a_validations_output_is_kept_per_attempt(place: &Place) {
    let mut store = place.open();
    let mut s = Scheduler::new(Settings::default());
    let record = |attempt: u32, out: &str| ValidationRecord {
        task: "a".into(),
        attempt,
        command: "wc -w note.md".into(),
        exit_code: Some(1),
        timed_out: false,
        stdout_tail: out.into(),
        stderr_tail: String::new(),
    };
    let notes = |v| Notes { validations: vec![v], ..Notes::default() };
    write(&mut *store, &mut s, &[], notes(record(1, "3 words")));
    write(&mut *store, &mut s, &[], notes(record(2, "12 words")));
    // Judged again at the same attempt (a fixed workflow): the later outcome stands.
    write(&mut *store, &mut s, &[], notes(record(2, "31 words")));
    let kept: Vec<(u32, String)> =
        store.validations("a").unwrap().into_iter().map(|v| (v.attempt, v.stdout_tail)).collect();
    assert_eq!(kept, [(1, "3 words".to_owned()), (2, "31 words".to_owned())]);
    assert_eq!(store.validations("a").unwrap()[0].exit_code, Some(1));
}

fn recent_events_are_the_last_ones_oldest_first(place: &Place) {
    let mut store = place.open();
    let mut s = Scheduler::new(Settings::default());
    let now = Instant::now();
    for i in 0..6 {
        s.add_tasks(vec![TaskSpec::new(format!("t{i}"), "x")], None, now).unwrap();
        write(&mut *store, &mut s, &[], Notes::default());
    }
    let recent: Vec<Option<String>> = store.recent_events(2).unwrap().into_iter().map(|e| e.task).collect();
    assert_eq!(recent, [Some("t4".to_owned()), Some("t5".to_owned())]);
}

fn a_project_with_nothing_stored_has_no_store_to_read(place: &Place) {
    assert!(super::open_read_only(&place.location).unwrap().is_none());
    drop(place.open());
    // Opened to serve, written nothing: still nothing (SQLite made its file, so it reads an empty store).
    if let Some(mut store) = super::open_read_only(&place.location).unwrap() {
        assert!(store.load().unwrap().0.is_empty());
    }
}

fn the_scheduler_is_restored_as_it_was_committed(place: &Place) {
    let now = Instant::now();
    let mut s = ten_minutes();
    let specs: Vec<TaskSpec> = (0..20).map(|i| TaskSpec::new(format!("t{i:02}"), "x")).collect();
    s.add_tasks(specs, None, now).unwrap();
    s.offer("w", now, 1, first).unwrap();
    let mut store = place.open();
    write(&mut *store, &mut s, &[], Notes::default());
    drop(store);
    let restored = place.open().restore(Settings::default()).unwrap();
    let mut tasks: Vec<&Task> = restored.tasks().collect();
    tasks.sort_by_key(|t| t.seq());
    let ids: Vec<&str> = tasks.iter().map(|t| t.spec.id.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(restored.task("t00").unwrap().holder(), Some("w"));
}

fn the_tasks_in_flight_are_the_assigned_and_submitted_ones_read_only_too(place: &Place) {
    let now = Instant::now();
    let mut s = ten_minutes();
    let specs: Vec<TaskSpec> = ["a", "b", "c", "d"].iter().map(|id| TaskSpec::new(*id, "x")).collect();
    s.add_tasks(specs, None, now).unwrap();
    assert_eq!(s.offer("w1", now, 1, first), Ok(Offer::Granted("a".into())));
    assert_eq!(s.offer("w2", now, 1, first), Ok(Offer::Granted("b".into())));
    s.submit("w2", "b", crate::task::Report::completed("b", "w2", vec![]), now).unwrap();
    let mut store = place.open();
    write(&mut *store, &mut s, &[], Notes::default());
    drop(store);
    let held: Vec<(String, TaskState, Option<String>)> = place
        .read_only()
        .in_flight()
        .unwrap()
        .iter()
        .map(|t| (t.spec.id.clone(), t.state(), t.holder().map(str::to_owned)))
        .collect();
    assert_eq!(
        held,
        [
            ("a".to_owned(), TaskState::Assigned, Some("w1".to_owned())),
            ("b".to_owned(), TaskState::Submitted, Some("w2".to_owned())),
        ]
    );
}

/// What only the PostgreSQL engine has: projects side by side in one
/// database, the leader lease and its fence, migration, reconnecting.
mod postgres_only {
    use super::*;

    fn options(lease: Duration) -> Options {
        Options { lease, ..Options::default() }
    }

    fn one_task(id: &str) -> Scheduler {
        let mut s = ten_minutes();
        s.add_tasks(vec![TaskSpec::new(id, "x")], None, Instant::now()).unwrap();
        s
    }

    #[test]
    fn forgetting_a_project_deletes_its_submitted_files_and_keeps_another_projects() {
        let (mine, other) = (Place::postgres("forget-files"), Place::postgres("forget-files-other"));
        for place in [&mine, &other] {
            let mut store = place.open();
            keep(&mut *store, submitted("a", 1, &[("a.md", Some(b"large, one day"))]));
        }
        let Location::Postgres { url, project } = &mine.location else { unreachable!("a postgres place") };
        super::super::postgres::PostgresStore::forget(url, project).unwrap();
        assert_eq!((blobs_stored(&mine), blobs_stored(&other)), (0, 1));
        let files: i64 = ::postgres::Client::connect(url, ::postgres::NoTls)
            .unwrap()
            .query_one("SELECT COUNT(*) FROM mcc_attempt_files WHERE project = $1", &[project])
            .unwrap()
            .get(0);
        assert_eq!(files, 0, "the project's file rows go with its blobs");
        assert_eq!(other.read_only().attempt_files("a", 1).unwrap().len(), 1);
    }

    #[test]
    fn a_schema_1_database_is_migrated_to_2_keeping_everything_it_held() {
        // A database of its own: the shared one's schema must stay this mcc's.
        let name = project_name("schema-1").replace('-', "_");
        let mut admin = ::postgres::Client::connect(&postgres_url(), ::postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
        let url = format!("{}/{name}", postgres_url().rsplit_once('/').unwrap().0);
        let place = Place { location: Location::Postgres { url: url.clone(), project: "p".into() }, _dir: None };
        let mut store = place.open();
        write(&mut *store, &mut one_task("a"), &[("phase", "one".into())], loaded("/p/a.lua"));
        drop(store);
        // Back to schema 1 as mcc wrote it: no tables of submitted files.
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.batch_execute("DROP TABLE mcc_blobs; DROP TABLE mcc_attempt_files; UPDATE mcc_schema SET version = 1")
            .unwrap();

        // Read-only, not migrated: an older database answers "no files", not an error.
        let mut old = place.read_only();
        assert_eq!(old.attempt_files("a", 1).unwrap(), []);
        assert_eq!(old.accepted_files().unwrap(), []);
        assert_eq!(old.blob(&sha256_hex(b"kept")).unwrap(), None);
        drop(old);

        let mut store = place.open();
        let version: i64 = db.query_one("SELECT version FROM mcc_schema", &[]).unwrap().get(0);
        assert_eq!(version, 2);
        assert_eq!(store.meta("phase").unwrap().as_deref(), Some("one"));
        assert_eq!(store.load().unwrap().0.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(store.runs().unwrap().len(), 1);
        keep(&mut *store, submitted("a", 1, &[("a.md", Some(b"kept"))]));
        assert_eq!(store.attempt_files("a", 1).unwrap().len(), 1);
        drop((store, db));
        admin.batch_execute(&format!("DROP DATABASE \"{name}\"")).unwrap();
    }

    #[test]
    fn two_projects_in_one_database_do_not_see_each_other() {
        let (left, right) = (Place::postgres("left"), Place::postgres("right"));
        let (mut a, mut b) = (left.open(), right.open());
        write(&mut *a, &mut one_task("only-left"), &[("phase", "left".into())], loaded("/l.lua"));
        write(&mut *b, &mut one_task("only-right"), &[], Notes::default());
        let (tasks, _) = a.load().unwrap();
        assert_eq!(tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["only-left"]);
        let (tasks, _) = b.load().unwrap();
        assert_eq!(tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["only-right"]);
        assert_eq!(b.meta("phase").unwrap(), None);
        // Each project's log and runs start at 1, on its own.
        assert_eq!(a.events().unwrap()[0].id, 1);
        assert_eq!(b.events().unwrap()[0].id, 1);
        assert_eq!(b.runs().unwrap()[0].workflow, None);
    }

    #[test]
    fn a_second_hub_is_refused_while_the_first_serves_and_is_told_who_serves() {
        let place = Place::postgres("second-hub");
        let first = Options { address: Some("10.0.0.1:7700".into()), ..Options::default() };
        let _serving = place.open_with(&first).unwrap();
        let err = place.open_with(&Options::default()).err().expect("refused").to_string();
        assert!(err.contains(&first.owner) && err.contains("10.0.0.1:7700") && err.contains("standby"), "{err}");
    }

    #[test]
    fn a_hub_another_took_over_from_writes_nothing_more_and_says_who_holds_the_project() {
        let place = Place::postgres("fenced");
        let mut old = place.open_with(&options(Duration::from_millis(300))).unwrap();
        write(&mut *old, &mut one_task("before"), &[], Notes::default());
        // The old leader stops renewing (paused); a standby takes over once the lease expired.
        let standby = options(Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut new = loop {
            match place.open_with(&standby) {
                Ok(store) => break store,
                Err(StoreError::Serving { .. }) if Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("the standby never took over: {e}"),
            }
        };
        let mut s = one_task("late");
        let changes = s.take_changes();
        let rows = Rows::gather(old.clock(), &s, &changes, &[("late", "yes".into())]).unwrap();
        match old.write(&[rows]) {
            Err(StoreError::Fenced { epoch, holder, .. }) => {
                assert_eq!(epoch, 2);
                assert!(holder.contains(&standby.owner), "{holder}");
            }
            other => panic!("the old leader wrote after a takeover: {other:?}"),
        }
        assert!(matches!(old.keep_alive(), Err(StoreError::Fenced { .. })));
        let (tasks, _) = new.load().unwrap();
        assert_eq!(tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["before"]);
        assert_eq!(new.meta("late").unwrap(), None);
        // The new leader writes; the old one's drop does not let the new one's lease go.
        drop(old);
        write(&mut *new, &mut one_task("after"), &[], Notes::default());
        assert!(place.open_with(&Options::default()).is_err(), "the new leader still holds the project");
    }

    #[test]
    fn a_database_migrated_by_a_newer_mcc_is_refused_untouched() {
        // A database of its own: the shared one's schema must stay this mcc's.
        let name = project_name("newer").replace('-', "_");
        let mut admin = ::postgres::Client::connect(&postgres_url(), ::postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
        let base = postgres_url();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        let place = Place { location: Location::Postgres { url: url.clone(), project: "p".into() }, _dir: None };
        drop(place.open());
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        db.batch_execute("UPDATE mcc_schema SET version = version + 1").unwrap();
        let err = place.open_with(&Options::default()).err().expect("refused").to_string();
        let newer = super::super::postgres::SCHEMA_VERSION + 1;
        assert!(err.contains(&format!("schema version {newer}")) && err.contains("upgrade mcc"), "{err}");
        assert!(err.contains("project \"p\"") && err.contains(&name), "{err}");
        let version: i64 = db.query_one("SELECT version FROM mcc_schema", &[]).unwrap().get(0);
        assert_eq!(version, newer, "refused untouched");
        drop(db);
        admin.batch_execute(&format!("DROP DATABASE \"{name}\"")).unwrap();
    }

    #[test]
    fn a_write_after_the_connection_was_cut_reconnects_and_loses_nothing_nor_writes_twice() {
        let place = Place::postgres("reconnect");
        let Location::Postgres { url, project } = &place.location else { unreachable!() };
        let mut store = super::super::postgres::PostgresStore::open(url, project, &Options::default()).unwrap();
        let mut s = ten_minutes();
        s.add_tasks(vec![TaskSpec::new("a", "x")], None, Instant::now()).unwrap();
        write(&mut store, &mut s, &[], Notes::default());
        // Cut the store's connection, as a database restart does.
        let mut admin = ::postgres::Client::connect(&postgres_url(), ::postgres::NoTls).unwrap();
        let pid = store.backend_pid();
        let cut: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap().get(0);
        assert!(cut, "the store's connection {pid} was cut");
        s.add_tasks(vec![TaskSpec::new("b", "y")], None, Instant::now()).unwrap();
        write(&mut store, &mut s, &[], Notes::default());
        let (tasks, _) = store.load().unwrap();
        assert_eq!(tasks.len(), 2);
        let created = store.events().unwrap().iter().filter(|e| e.kind == EventKind::Created).count();
        assert_eq!(created, 2, "each event once");
    }

    #[test]
    fn a_commit_that_landed_while_its_answer_was_lost_is_not_written_again() {
        let place = Place::postgres("answer-lost");
        let Location::Postgres { url, project } = &place.location else { unreachable!() };
        let mut store = super::super::postgres::PostgresStore::open(url, project, &Options::default()).unwrap();
        let mut s = ten_minutes();
        s.add_tasks(vec![TaskSpec::new("a", "x")], None, Instant::now()).unwrap();
        write(&mut store, &mut s, &[], Notes::default());
        store.lose_next_answer();
        s.add_tasks(vec![TaskSpec::new("b", "y")], None, Instant::now()).unwrap();
        write(&mut store, &mut s, &[], Notes::default());
        s.add_tasks(vec![TaskSpec::new("c", "z")], None, Instant::now()).unwrap();
        write(&mut store, &mut s, &[], Notes::default());
        let events: Vec<(i64, Option<String>)> = store.events().unwrap().into_iter().map(|e| (e.id, e.task)).collect();
        let expected: Vec<(i64, Option<String>)> =
            ["a", "b", "c"].iter().zip(1..).map(|(t, id)| (id, Some((*t).to_owned()))).collect();
        assert_eq!(events, expected, "each commit once, the log going on after it");
        assert_eq!(store.meta("commit_seq").unwrap().as_deref(), Some("3"));
    }
}

fn two_attempts_submitting_the_same_bytes_keep_one_blob(place: &Place) {
    let mut store = place.open();
    let same: &[u8] = b"# notes\n\x00\xff binary safe\n";
    keep(&mut *store, submitted("a", 1, &[("out/a.md", Some(same)), ("out/old.md", None)]));
    keep(&mut *store, submitted("a", 2, &[("out/a.md", Some(same))]));
    keep(&mut *store, submitted("b", 1, &[("out/b.md", Some(same))]));
    assert_eq!(blobs_stored(place), 1, "one blob for the same bytes, however many attempts");
    drop(store);

    let mut store = place.read_only();
    let first = store.attempt_files("a", 1).unwrap();
    let shape: Vec<(&str, &FileKept)> = first.iter().map(|f| (f.path.as_str(), &f.kept)).collect();
    let sha256 = sha256_hex(same);
    assert_eq!(shape, [("out/a.md", &FileKept::Kept { sha256: sha256.clone() }), ("out/old.md", &FileKept::Deleted)]);
    assert_eq!(first[0].size, same.len() as u64);
    assert_eq!(store.attempt_files("a", 2).unwrap().len(), 1);
    assert_eq!(store.attempt_files("b", 1).unwrap()[0].path, "out/b.md");
    assert_eq!(store.blob(&sha256).unwrap().as_deref(), Some(same));
    assert_eq!(store.blob(&sha256_hex(b"never submitted")).unwrap(), None);
    assert_eq!(store.attempt_files("a", 3).unwrap(), []);
}

fn the_accepted_state_is_each_paths_content_from_its_last_accepted_attempt(place: &Place) {
    let mut store = place.open();
    keep(&mut *store, submitted("a", 1, &[("a.md", Some(b"rejected"))]));
    verdict(&mut *store, "rejected", "a", 1);
    keep(&mut *store, submitted("a", 2, &[("a.md", Some(b"first accepted")), ("gone.md", Some(b"here"))]));
    verdict(&mut *store, "accepted", "a", 2);
    keep(&mut *store, submitted("b", 1, &[("a.md", Some(b"accepted later")), ("gone.md", None)]));
    verdict(&mut *store, "accepted", "b", 1);
    // Submitted, not judged yet: not part of the accepted state.
    keep(&mut *store, submitted("c", 1, &[("a.md", Some(b"pending"))]));

    let shape = |accepted: &[AttemptFile]| -> Vec<(String, String, u32, FileKept)> {
        accepted.iter().map(|f| (f.path.clone(), f.task.clone(), f.attempt, f.kept.clone())).collect()
    };
    let expected = [
        ("a.md".to_owned(), "b".to_owned(), 1, FileKept::Kept { sha256: sha256_hex(b"accepted later") }),
        ("gone.md".to_owned(), "b".to_owned(), 1, FileKept::Deleted),
    ];
    assert_eq!(shape(&store.accepted_files().unwrap()), expected);
    drop(store);
    assert_eq!(shape(&place.read_only().accepted_files().unwrap()), expected, "read-only, as the CLI reads it");
}
