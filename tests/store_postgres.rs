//! A project kept in PostgreSQL (`--store postgres://… --project NAME`): a
//! workflow runs to the end with its state in the database, the checkout's
//! commands read it there once the hub stopped, `--fresh` forgets only that
//! project, and every hub of the project accepts the same tokens.

use std::path::Path;

use crate::submitted_files::{raw, submit_every_byte};
use crate::support::{Hub, Project, Ws, old_task, postgres};

/// A project holding the demo workflow and its worker script.
fn demo_project() -> Project {
    let project = Project::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["workflows/demo.lua", "workflows/demo/worker.sh"] {
        project.write(file, &std::fs::read_to_string(repo.join(file)).unwrap());
    }
    project
}

fn run_demo(project: &Project, store: &[&str]) -> crate::support::Run {
    project
        .mcc()
        .args(["run", "workflows/demo.lua", "--port", "0", "--spawn", "3"])
        .args(store)
        .args(["--", "sh", "workflows/demo/worker.sh"])
        .run()
}

/// How many rows of `table` the project has in the test database.
fn rows(table: &str, project: &str) -> i64 {
    postgres::client()
        .query_one(&format!("SELECT COUNT(*) FROM {table} WHERE project = $1"), &[&project])
        .unwrap()
        .get(0)
}

#[test]
fn a_run_kept_in_postgres_is_read_back_by_status_tasks_and_report_after_the_hub_stopped() {
    let project = demo_project();
    let (url, name) = (postgres::url(), postgres::project_name("demo-in-postgres"));
    let out = run_demo(&project, &["--store", &url, "--project", &name]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("7 tasks, 8 attempts, 1 rejection, "), "{}", out.stdout);
    // The state is in the database, under the project's name, not in .mcc/state.db.
    assert_eq!(rows("mcc_tasks", &name), 7);
    assert!(!project.path(".mcc/state.db").exists(), "nothing of the run went to SQLite");

    // No hub runs: the commands find the store through .mcc/store.json.
    let status = project.mcc().args(["status"]).run();
    assert!(status.stdout.contains("tasks: 7 accepted"), "{status:?}");
    let shown = project.mcc().args(["tasks", "show", "note-2"]).run();
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("has only 3 words; write at least 30"), "{shown:?}");
    let report = project.mcc().args(["report"]).run();
    assert!(report.stdout.contains("7 tasks, 8 attempts, 1 rejection, "), "{report:?}");

    // Run again, finished: read from the database, nothing started.
    let again = run_demo(&project, &[]);
    assert!(again.stdout.starts_with("this workflow had already finished in an earlier run"), "{again:?}");
}

#[test]
fn a_fresh_run_forgets_its_own_project_in_the_database_and_no_other() {
    let (url, mine, other) =
        (postgres::url(), postgres::project_name("fresh-mine"), postgres::project_name("fresh-other"));
    let neighbour = demo_project();
    assert_eq!(run_demo(&neighbour, &["--store", &url, "--project", &other]).code, 0);
    let project = demo_project();
    assert_eq!(run_demo(&project, &["--store", &url, "--project", &mine]).code, 0);
    let events = rows("mcc_events", &mine);
    let (other_tasks, other_events) = (rows("mcc_tasks", &other), rows("mcc_events", &other));

    let fresh = project.mcc().args(["run", "workflows/demo.lua", "--fresh", "--port", "0", "--spawn", "3"]);
    let fresh = fresh.args(["--", "sh", "workflows/demo/worker.sh"]).run();
    assert_eq!(fresh.code, 0, "{fresh:?}");
    assert!(fresh.stdout.contains("7 tasks, 8 attempts"), "the run started over: {fresh:?}");
    assert_eq!(rows("mcc_events", &mine), events, "the earlier run's events are gone, the new run's are there");
    assert_eq!(rows("mcc_runs", &mine), 1);
    assert_eq!((rows("mcc_tasks", &other), rows("mcc_events", &other)), (other_tasks, other_events));
}

#[test]
fn every_hub_of_a_project_accepts_the_tokens_kept_in_its_database() {
    let (url, name) = (postgres::url(), postgres::project_name("shared-tokens"));
    let store = ["--store", url.as_str(), "--project", name.as_str()];
    let first = Project::new();
    let hub = Hub::start(first.root(), &store);
    let added = first.mcc().args(["token", "add", "--worker", "worker-A", "--json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let worker_secret = added.json()["token"].as_str().unwrap().to_owned();
    let first_token = first.read(".mcc/token");
    let listed = first.mcc().args(["token", "list"]).run();
    assert!(listed.stdout.contains("checkout-") && listed.stdout.contains("engineer"), "{listed:?}");
    drop(hub);

    // Another checkout's hub of the same project, once the first stopped.
    let second = Project::new();
    let other = Hub::start(second.root(), &store);
    let mut engineer = Ws::connect_with_token(&other.url, first_token.trim());
    let added = engineer.ask(serde_json::json!({"type": "add_tasks", "tasks": [old_task("from-first", &[], &[])]}));
    assert_ne!(added["type"], "error", "the first checkout's token is an engineer's here too: {added}");
    // The worker token made at the first hub opens a connection at the second.
    Ws::connect_with_token(&other.url, &worker_secret).close();
}

#[test]
fn a_file_submitted_to_a_hub_kept_in_postgres_is_printed_exactly_after_the_hub_stopped() {
    let project = Project::new();
    let (url, name) = (postgres::url(), postgres::project_name("files-in-postgres"));
    let hub = Hub::start(project.root(), &["--store", &url, "--project", &name]);
    let bytes = submit_every_byte(&project, &hub);
    assert_eq!(hub.terminate(), Some(0));
    assert_eq!((rows("mcc_attempt_files", &name), rows("mcc_blobs", &name)), (1, 1));
    assert!(!project.path(".mcc/state.db").exists(), "nothing of the run went to SQLite");

    // The checkout moves on; the store, read through .mcc/store.json, still has the attempt's bytes.
    std::fs::write(project.path("out/f.bin"), "changed since").unwrap();
    let show_file = ["tasks", "show", "t", "--attempt", "1", "--file", "out/f.bin"];
    let (code, printed, err) = raw(project.root(), &show_file);
    assert_eq!((code, printed == bytes), (0, true), "{err}");
}
