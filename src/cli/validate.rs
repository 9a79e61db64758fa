//! `mcc validate FILE...`: check task and report JSON against the schemas in
//! `schemas/`, naming every wrong field by its path.
//!
//! The schemas use a small subset of JSON Schema (type, required, properties,
//! items, enum, minLength, minimum, maximum); checking that subset here keeps
//! the shipped schema files the one source of truth without pulling in a
//! general validator and its dependency tree.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::exit;

const TASK_SCHEMA: &str = include_str!("../../schemas/task.schema.json");
const REPORT_SCHEMA: &str = include_str!("../../schemas/report.schema.json");

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Task,
    Report,
}

/// Check task and report files; every wrong field is named with its JSON path.
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

pub fn run(args: ValidateArgs) -> u8 {
    let mut results = Vec::new();
    for file in &args.files {
        let problems = match std::fs::read_to_string(file) {
            Err(e) => vec![format!("cannot read: {e}")],
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Err(e) => vec![format!("not valid JSON: {e}")],
                Ok(value) => check(&value, args.kind),
            },
        };
        results.push((file.display().to_string(), problems));
    }
    let ok = results.iter().all(|(_, p)| p.is_empty());
    if args.json {
        let files: Vec<Value> =
            results.iter().map(|(f, p)| json!({"file": f, "valid": p.is_empty(), "problems": p})).collect();
        println!("{}", json!({"valid": ok, "files": files}));
    } else {
        for (file, problems) in &results {
            if problems.is_empty() {
                println!("{file}: valid");
            } else {
                println!("{file}: {} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" });
                for p in problems {
                    println!("  {p}");
                }
            }
        }
    }
    if ok { exit::OK } else { exit::ERROR }
}

/// Every problem of `value` as a task (or array of tasks) or a report.
pub fn check(value: &Value, kind: Option<Kind>) -> Vec<String> {
    let kind = kind.unwrap_or(if value.get("taskId").is_some() { Kind::Report } else { Kind::Task });
    let schema: Value = serde_json::from_str(if kind == Kind::Task { TASK_SCHEMA } else { REPORT_SCHEMA })
        .expect("the built-in schemas are valid JSON");
    let mut problems = Vec::new();
    match (kind, value) {
        (Kind::Task, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                walk(&schema, item, &format!("[{i}]"), &mut problems);
            }
        }
        _ => walk(&schema, value, "", &mut problems),
    }
    problems
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let here = if path.is_empty() { "(top)".to_owned() } else { path.to_owned() };
    if let Some(expected) = schema.get("type") {
        let allowed: Vec<&str> = match expected {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let actual = type_name(value);
        let fits = allowed.iter().any(|t| *t == actual || (*t == "number" && actual == "integer"));
        if !fits {
            problems.push(format!("{here}: expected {}, found {actual}", allowed.join(" or ")));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(Value::to_string).collect();
        problems.push(format!("{here}: {value} is not one of {}", list.join(", ")));
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str())
        && (s.chars().count() as u64) < min
    {
        problems.push(format!("{here}: must not be empty"));
    }
    if let Some(n) = value.as_f64() {
        let min = schema.get("minimum").and_then(Value::as_f64);
        let max = schema.get("maximum").and_then(Value::as_f64);
        if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
            problems.push(format!("{here}: {n} is outside {}..{}", min.unwrap_or(f64::MIN), max.unwrap_or(f64::MAX)));
        }
    }
    if let Value::Object(map) = value {
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                problems.push(format!("{}: missing", join(path, name)));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                if let Some(v) = map.get(name) {
                    walk(sub, v, &join(path, name), problems);
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{here}[{i}]"), problems);
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wrong_field_is_named_by_its_path() {
        let task = json!({"id": "", "type": "x", "description": 3, "context": {"targetFiles": [1], "outputFiles": []},
            "acceptance": {"criteria": []}, "status": "done", "createdAt": "2025-01-01T00:00:00Z"});
        let mut problems = check(&task, None);
        problems.sort();
        assert_eq!(
            problems,
            vec![
                "context.requirements: missing",
                "context.targetFiles[0]: expected string, found integer",
                "description: expected string, found integer",
                "id: must not be empty",
                "status: \"done\" is not one of \"pending\", \"assigned\", \"in-progress\", \"completed\", \"failed\"",
            ]
        );
        let report = json!({"taskId": "t", "workerId": "w", "status": "completed", "deliverables": "a.md", "contextEfficiencyScore": 9});
        let mut problems = check(&report, None);
        problems.sort();
        assert_eq!(
            problems,
            vec![
                "completedAt: missing",
                "contextEfficiencyScore: 9 is outside 1..5",
                "deliverables: expected array, found string"
            ]
        );
    }
}
