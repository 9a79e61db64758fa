//! The engine driven through its inputs, with a real store in a temp folder.

use std::time::Duration;

use super::*;
use crate::scheduler::Settings;

#[test]
fn a_reader_that_does_not_read_is_cut_off_and_its_queue_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
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
    };
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
