//! The engine driven through its inputs, with a real store in a temp folder.

use std::time::Duration;

use super::*;
use crate::scheduler::Settings;

fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        root: dir.path().to_owned(),
        state_dir: dir.path().join(".mcc"),
        store: crate::store::Location::Sqlite(dir.path().join(".mcc")),
        settings: Settings::default(),
        loader: None,
        validation_limit: Duration::from_secs(10),
        timing: Timing::default(),
        runners: crate::command::Runners::new(2, crate::command::DEFAULT_GRACE),
        max_task_files_bytes: crate::checkout::DEFAULT_MAX_TASK_FILES_BYTES,
        leader: crate::store::Leader::default(),
        restore_checkout: false,
        farewell: std::sync::Arc::default(),
    }
}

#[test]
fn a_reader_that_does_not_read_is_cut_off_and_its_queue_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let (engine, thread) = Engine::start(config).unwrap();
    let (outbox, mut inbox) = tokio::sync::mpsc::channel(8);
    assert!(engine.send(Input::Connected { conn: 1, outbox }));
    for _ in 0..50 {
        assert!(engine.send(Input::Message { conn: 1, msg: ClientMsg::Status {} }));
    }
    // A second connection's answer comes after all 50 were handled (inputs
    // are taken in order), so nothing of the first was read meanwhile.
    let (probe, mut probe_inbox) = tokio::sync::mpsc::channel(8);
    assert!(engine.send(Input::Connected { conn: 2, outbox: probe }));
    assert!(engine.send(Input::Message { conn: 2, msg: ClientMsg::Status {} }));
    assert!(probe_inbox.blocking_recv().is_some());
    // 8 answers fit, then the engine let go of the connection, which ends its queue.
    let mut queued = 0;
    while inbox.blocking_recv().is_some() {
        queued += 1;
        assert!(queued <= 8, "the queue of a reader that does not read grew past its bound");
    }
    assert_eq!(queued, 8);
    assert!(engine.send(Input::Shutdown { message: "test over".into() }));
    thread.join().unwrap().unwrap();
}

/// What a connection is sent up to and with the first message `last` accepts, in order.
fn until(inbox: &mut tokio::sync::mpsc::Receiver<Outgoing>, last: impl Fn(&ServerMsg) -> bool) -> Vec<Outgoing> {
    let mut got = Vec::new();
    loop {
        let out = inbox.blocking_recv().expect("the engine let go of the connection");
        let done = matches!(&out, Outgoing::Msg(msg) if last(msg));
        got.push(out);
        if done {
            return got;
        }
    }
}

fn old_create(engine: &EngineHandle, conn: ConnId, ids: &[&str]) {
    let tasks = ids.iter().map(|id| serde_json::json!({"id": id, "description": format!("do {id}")})).collect();
    assert!(engine.send(Input::Message { conn, msg: ClientMsg::CreateTasks { tasks: Some(Value::Array(tasks)) } }));
}

fn old_complete(engine: &EngineHandle, conn: ConnId, id: &str) {
    let msg = ClientMsg::TaskComplete { task_id: Some(Value::from(id)), report: None };
    assert!(engine.send(Input::Message { conn, msg }));
}

fn is_push(msg: &ServerMsg) -> bool {
    matches!(msg, ServerMsg::TaskAssigned { task: Some(_), .. })
}

/// The hold before a push, if the connection was sent one.
fn hold(sent: &[Outgoing]) -> Option<&std::sync::Arc<CreateAnswer>> {
    sent.iter().find_map(|out| match out {
        Outgoing::Mark(Mark::After(create)) => Some(create),
        _ => None,
    })
}

#[test]
fn an_old_push_waits_for_the_tasks_created_of_the_create_that_added_its_task_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let (engine, thread) = Engine::start(config).unwrap();
    let (coordinator, mut coordinator_inbox) = tokio::sync::mpsc::channel(64);
    let (worker, mut worker_inbox) = tokio::sync::mpsc::channel(64);
    assert!(engine.send(Input::Connected { conn: 1, outbox: coordinator }));
    assert!(engine.send(Input::Connected { conn: 2, outbox: worker }));
    let role = |r: &str| Some(Value::from(r));
    let msg = ClientMsg::Register { role: role("coordinator"), project_id: None, worker_id: None };
    assert!(engine.send(Input::Message { conn: 1, msg }));
    let msg = ClientMsg::Register { role: role("worker"), project_id: None, worker_id: Some("worker-A".into()) };
    assert!(engine.send(Input::Message { conn: 2, msg }));
    until(&mut worker_inbox, |m| matches!(m, ServerMsg::NoTasks { .. }));

    // The idle worker is pushed t1 behind a hold on the first create, which
    // the coordinator's connection lets go once `tasks_created` is written.
    old_create(&engine, 1, &["t1", "t2"]);
    let answered = until(&mut coordinator_inbox, |m| matches!(m, ServerMsg::TasksCreated { .. }));
    let Some(Outgoing::Mark(Mark::Answered(first))) = coordinator_inbox.blocking_recv() else {
        panic!("tasks_created is followed by its mark: {answered:?}");
    };
    let pushed = until(&mut worker_inbox, is_push);
    let held = hold(&pushed).expect("the push of t1 waits for the create that added it");
    assert!(
        matches!(pushed.last(), Some(Outgoing::Msg(ServerMsg::TaskAssigned { task: Some(t), .. })) if t["id"] == "t1")
    );
    assert!(!held.is_written());
    drop(first);
    assert!(held.is_written(), "the answer written, the push may go");

    // A second create stays unwritten: the push of t2, added by the first, does not wait for it.
    old_create(&engine, 1, &["t3"]);
    let answered = until(&mut coordinator_inbox, |m| matches!(m, ServerMsg::TasksCreated { .. }));
    let Some(Outgoing::Mark(Mark::Answered(second))) = coordinator_inbox.blocking_recv() else {
        panic!("tasks_created is followed by its mark: {answered:?}");
    };
    old_complete(&engine, 2, "t1");
    let pushed = until(&mut worker_inbox, is_push);
    assert!(hold(&pushed).is_none(), "t2's create is written: {pushed:?}");
    // t3 is the second create's: its push waits for it.
    old_complete(&engine, 2, "t2");
    let pushed = until(&mut worker_inbox, is_push);
    let held = hold(&pushed).expect("the push of t3 waits for the second create");
    assert!(!held.is_written());
    drop(second);
    assert!(held.is_written());
    assert!(engine.send(Input::Shutdown { message: "test over".into() }));
    thread.join().unwrap().unwrap();
}

#[test]
fn a_create_whose_coordinator_is_gone_holds_no_push() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let (engine, thread) = Engine::start(config).unwrap();
    let (coordinator, coordinator_inbox) = tokio::sync::mpsc::channel(64);
    let (worker, mut worker_inbox) = tokio::sync::mpsc::channel(64);
    assert!(engine.send(Input::Connected { conn: 1, outbox: coordinator }));
    assert!(engine.send(Input::Connected { conn: 2, outbox: worker }));
    let msg = ClientMsg::Register { role: Some(Value::from("coordinator")), project_id: None, worker_id: None };
    assert!(engine.send(Input::Message { conn: 1, msg }));
    // The coordinator's connection ends before it reads anything: its answer will never be written.
    drop(coordinator_inbox);
    old_create(&engine, 1, &["t1"]);
    let msg = ClientMsg::Register { role: Some(Value::from("worker")), project_id: None, worker_id: Some("w".into()) };
    assert!(engine.send(Input::Message { conn: 2, msg }));
    let pushed = until(&mut worker_inbox, is_push);
    assert!(hold(&pushed).is_none_or(|create| create.is_written()), "nothing holds the push: {pushed:?}");
    assert!(engine.send(Input::Shutdown { message: "test over".into() }));
    thread.join().unwrap().unwrap();
}

#[test]
fn a_workers_input_is_not_held_behind_a_create_in_the_same_batch_and_each_connection_keeps_its_order() {
    let status = |conn| Input::Message { conn, msg: ClientMsg::Status {} };
    let create = |conn| Input::Message { conn, msg: ClientMsg::CreateTasks { tasks: None } };
    let batch = vec![
        status(1),
        create(2),
        status(1),
        status(2),
        Input::Disconnected { conn: 3 },
        create(1),
        status(1),
        Input::Shutdown { message: "test over".into() },
    ];
    let shown = |inputs: &[Input]| -> Vec<String> {
        inputs
            .iter()
            .map(|input| match input {
                Input::Message { conn, msg: ClientMsg::CreateTasks { .. } } => format!("create {conn}"),
                Input::Message { conn, .. } => format!("status {conn}"),
                Input::Disconnected { conn } => format!("gone {conn}"),
                Input::Shutdown { .. } => "shutdown".to_owned(),
                _ => "other".to_owned(),
            })
            .collect()
    };
    let mut now = batch;
    let after_creates = creates_last(&mut now);
    assert_eq!(shown(&now), ["status 1", "status 1", "gone 3"]);
    assert_eq!(shown(&after_creates), ["create 2", "status 2", "create 1", "status 1", "shutdown"]);
    // A batch with no create is handled in one step, as it came.
    let mut plain = vec![status(1), status(2), Input::Disconnected { conn: 3 }];
    assert!(creates_last(&mut plain).is_empty());
    assert_eq!(shown(&plain), ["status 1", "status 2", "gone 3"]);
}
