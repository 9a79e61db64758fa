//! `mcc validate FILE...`: read task and report files with the hub's own
//! parsers ([`TaskSpec::from_json`] and the hub's batch checks for tasks,
//! [`crate::watch::parse_report_from`] for reports), so it cannot call valid
//! what the hub refuses, nor the other way round.
//!
//! The hub stops at a task's first wrong field (serde does); validate reads
//! every task of a file the same way, so it names each wrong task, with the
//! first wrong field of each by its JSON path (`tasks[2].context.outputFiles`).
//! Listing every field of one task would take a second parser that can
//! drift from the hub's: one honest problem per task is the trade.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::exit;
use crate::scheduler::{Scheduler, Settings};
use crate::task::TaskSpec;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Task,
    Report,
}

/// Check task and report files as the hub reads them; every wrong task is named with its JSON path.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  mcc validate .mcc/reports/task-001-report.json
  mcc validate --kind task tasks.json     (a task, or an array of tasks)

Exit codes: 0 every file is valid; 1 some file is not (each problem is printed).")]
pub struct ValidateArgs {
    /// JSON files: a task, an array of tasks, or a report.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// What the files hold (default: guessed, a report has `taskId`).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What validate found in one file: problems make it invalid, notes do not.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

pub fn run(args: ValidateArgs) -> u8 {
    let mut results = Vec::new();
    for file in &args.files {
        let found = match std::fs::read_to_string(file) {
            Err(e) => Findings { problems: vec![format!("cannot read: {e}")], notes: Vec::new() },
            Ok(text) => check_file(file, &text, args.kind),
        };
        results.push((file.display().to_string(), found));
    }
    let ok = results.iter().all(|(_, f)| f.problems.is_empty());
    if args.json {
        let files: Vec<Value> = results
            .iter()
            .map(|(file, f)| json!({"file": file, "valid": f.problems.is_empty(), "problems": f.problems, "notes": f.notes}))
            .collect();
        println!("{}", json!({"valid": ok, "files": files}));
    } else {
        for (file, f) in &results {
            let n = f.problems.len();
            if n == 0 {
                println!("{file}: valid");
            } else {
                println!("{file}: {n} problem{}", if n == 1 { "" } else { "s" });
            }
            for p in &f.problems {
                println!("  {p}");
            }
            for note in &f.notes {
                println!("  note: {note}");
            }
        }
    }
    if ok { exit::OK } else { exit::ERROR }
}

/// Everything wrong with `text`, read from `file`, as a task (or array of tasks) or a report.
pub fn check_file(file: &Path, text: &str, kind: Option<Kind>) -> Findings {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(value) => value,
        Err(e) => return Findings { problems: vec![format!("not valid JSON: {e}")], notes: Vec::new() },
    };
    match kind.unwrap_or(if value.get("taskId").is_some() { Kind::Report } else { Kind::Task }) {
        Kind::Task => check_tasks(&value),
        Kind::Report => {
            // The watcher lets old clients leave `attempt` out in their own folder only.
            let folder = std::fs::canonicalize(file).ok().and_then(|p| p.parent().map(Path::to_path_buf));
            let old_client = folder.is_some_and(|f| f.ends_with("tmp/coordination/reports"));
            let problems = crate::watch::parse_report_from(text.as_bytes(), old_client).err().into_iter().collect();
            Findings { problems, notes: Vec::new() }
        }
    }
}

/// A task or an array of tasks, read as `mcc tasks add` sends them and the
/// hub's `add_tasks` reads them: each task on its own, then the batch's
/// ids and dependencies by the scheduler itself.
pub fn check_tasks(value: &Value) -> Findings {
    let (items, in_array) = match value {
        Value::Array(items) => (items.as_slice(), true),
        Value::Object(_) => (std::slice::from_ref(value), false),
        _ => {
            let problem = "the file must hold a task object or an array of tasks".to_owned();
            return Findings { problems: vec![problem], notes: Vec::new() };
        }
    };
    let mut found = Findings::default();
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match TaskSpec::from_json(item) {
            Ok(spec) => specs.push(spec),
            Err(p) => found.problems.push(format!("{}: {}", at(in_array.then_some(i), p.path()), p.reason())),
        }
    }
    if !found.problems.is_empty() {
        // As the hub: the batch is only checked once every task reads.
        return found;
    }
    // A dependency outside the file is fine if the hub already holds it;
    // only the hub knows, so the scheduler here is told it does.
    let ids: HashSet<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    let outside: BTreeSet<&str> =
        specs.iter().flat_map(|s| &s.dependencies).map(String::as_str).filter(|d| !ids.contains(d)).collect();
    for spec in &specs {
        for dep in spec.dependencies.iter().filter(|d| outside.contains(d.as_str())) {
            found.notes.push(format!(
                "`{}` depends on `{dep}`, which is not in this file: the hub must already hold it",
                spec.id
            ));
        }
    }
    let held: Vec<TaskSpec> = outside.iter().map(|id| TaskSpec::new(*id, "held by the hub")).collect();
    let mut scheduler = Scheduler::new(Settings::default());
    let now = Instant::now();
    let checked = scheduler.add_tasks(held, None, now).and_then(|_| scheduler.add_tasks(specs, None, now));
    if let Err(refusal) = checked {
        found.problems.push(refusal.to_string());
    }
    found
}

/// Where a field is: `tasks[2].context.outputFiles` in an array, `context.outputFiles` in one task.
fn at(index: Option<usize>, path: &str) -> String {
    match (index, path) {
        (Some(i), ".") => format!("tasks[{i}]"),
        (Some(i), path) => format!("tasks[{i}].{path}"),
        (None, ".") => "(top)".to_owned(),
        (None, path) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemas in `schemas/`, as the types generate them.
    fn generated() -> [(&'static str, String); 2] {
        let pretty =
            |schema: schemars::Schema| serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n";
        [
            ("task.schema.json", pretty(schemars::schema_for!(TaskSpec))),
            ("report.schema.json", pretty(schemars::schema_for!(crate::task::Report))),
        ]
    }

    fn schemas_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
    }

    #[test]
    fn the_checked_in_schemas_are_what_the_types_generate() {
        for (name, schema) in generated() {
            let file = std::fs::read_to_string(schemas_dir().join(name)).unwrap_or_default();
            assert!(
                file == schema,
                "schemas/{name} differs from the Rust types; regenerate it: cargo test --lib write_schemas -- --ignored"
            );
        }
    }

    #[test]
    #[ignore = "writes schemas/*.json; run it after changing the task or report types"]
    fn write_schemas() {
        for (name, schema) in generated() {
            std::fs::write(schemas_dir().join(name), schema).expect("write schemas/");
        }
    }

    #[test]
    fn each_wrong_task_is_named_by_its_path_and_a_valid_one_is_not() {
        let tasks = json!([
            {"id": "a", "description": "x"},
            {"id": "b", "description": "x", "context": {"targetFiles": [1]}},
            {"id": "c", "description": 3},
            {"id": "d", "description": "x", "lease": "later"},
        ]);
        assert_eq!(
            check_tasks(&tasks).problems,
            vec![
                "tasks[1].context.targetFiles[0]: invalid type: integer `1`, expected a string",
                "tasks[2].description: invalid type: integer `3`, expected a string",
                "tasks[3].lease: `later` is not a duration such as \"30m\" or \"90s\"",
            ]
        );
        let one = json!({"id": "", "description": "x"});
        assert_eq!(check_tasks(&one).problems, vec!["id: is empty; give every task an id"]);
        assert_eq!(check_tasks(&json!({"id": "a", "description": "x"})), Findings::default());
    }
}
