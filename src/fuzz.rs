//! Generated inputs for the parsers of every frame and file the hub reads:
//! a frame (`wire::parse`), a request file (`layout::RequestFile`, then its
//! frame), a report file (`watch::parse_report_from`), a task in a task
//! file or `add_tasks` (`TaskSpec::from_json`) and the discovery file
//! (`layout::HubFile`). None may panic, whatever the bytes; a refusal says
//! something. And every frame that parses is held to each token scope
//! (`hub::guard::Scope::permits`): what passes is what the scope allows. Bounded by proptest's case count, so `cargo test` runs it in
//! CI in well under a second per parser (`PROPTEST_CASES` raises it).

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::hub::guard::Scope;
use crate::layout::{HubFile, RequestFile};
use crate::task::TaskSpec;
use crate::watch::parse_report_from;
use crate::wire::{ClientMsg, parse};

/// Field names the parsers know, mixed with others, so generated objects
/// reach past the first missing field.
const KEYS: &[&str] = &[
    "type",
    "id",
    "taskId",
    "workerId",
    "worker",
    "attempt",
    "status",
    "deliverables",
    "notes",
    "description",
    "context",
    "targetFiles",
    "outputFiles",
    "requirements",
    "acceptance",
    "criteria",
    "validation",
    "dependencies",
    "lease",
    "message",
    "tasks",
    "role",
    "waitMs",
    "report",
    "url",
    "port",
    "pid",
    "root",
    "scope",
    "expiresMs",
    "x",
];

/// Worker names near the one a worker token holds (`w`).
const NAMES: &[&str] = &["w", "W", "w ", " w", "w\0", "", "v"];

/// A frame aimed at the scope check: a known type, a worker name near `w`,
/// and generated fields beside them.
fn scoped_frame() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(ClientMsg::TYPES),
        proptest::sample::select(NAMES),
        proptest::collection::vec((proptest::sample::select(KEYS), json()), 0..6),
    )
        .prop_map(|(kind, worker, fields)| {
            let mut frame: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            frame.insert("type".into(), kind.into());
            frame.insert("worker".into(), worker.into());
            Value::Object(frame)
        })
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        proptest::sample::select(ClientMsg::TYPES).prop_map(Value::from),
        proptest::sample::select(KEYS).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(|fields| Value::Object(
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>()
            )),
        ]
    })
}

/// Bytes as a file holds them: generated JSON, or that JSON cut short, or noise.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json().prop_map(|v| v.to_string().into_bytes()),
        (json(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let text = v.to_string().into_bytes();
            let cut = at.index(text.len() + 1);
            text[..cut].to_vec()
        }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #[test]
    fn no_frame_panics_the_decoder(value in json(), noise in "\\PC{0,40}") {
        for text in [value.to_string(), noise] {
            if let Err(e) = parse(&text) {
                prop_assert!(!e.is_empty());
            }
        }
    }

    #[test]
    fn no_request_file_panics_its_reader(bytes in file_bytes()) {
        if let Ok(request) = serde_json::from_slice::<RequestFile>(&bytes) {
            let _ = parse(&request.message.to_string());
        }
    }

    #[test]
    fn no_report_file_panics_its_reader(bytes in file_bytes(), old_client in any::<bool>()) {
        if let Err(e) = parse_report_from(&bytes, old_client) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn no_task_panics_its_reader(value in json()) {
        if let Err(problem) = TaskSpec::from_json(&value) {
            prop_assert!(!problem.refusal(0, &value).is_empty());
        }
    }

    #[test]
    fn no_frame_gets_past_a_scope_it_is_not_for(frame in scoped_frame()) {
        let Ok(msg) = parse(&frame.to_string()) else { return Ok(()) };
        let kind = frame["type"].as_str().unwrap_or_default();
        let works = ["next", "done", "block", "fail", "progress", "leave", "task_files", "fetch_file", "upload"].contains(&kind);
        let reads = ["status", "snapshot", "show_task", "subscribe", "tasks_page", "budgets"].contains(&kind);
        let worker = Scope::Worker("w".into()).permits(&msg, 100);
        prop_assert_eq!(worker.is_ok(), kind == "show_task" || works && frame["worker"] == "w", "{} {:?}", frame, worker);
        let viewer = Scope::Viewer.permits(&msg, 100);
        prop_assert_eq!(viewer.is_ok(), reads, "{} {:?}", frame, viewer);
        for refused in [worker.err(), viewer.err()].into_iter().flatten() {
            prop_assert!(refused.contains("mcc token add"), "a refusal names the command that gives the right token: {}", refused);
        }
    }

    #[test]
    fn no_discovery_file_panics_its_reader(bytes in file_bytes()) {
        let _ = serde_json::from_slice::<HubFile>(&bytes);
    }
}
