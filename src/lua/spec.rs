//! Task tables (what `split`, `tasks` and `ctx.add_task` give) into
//! [`TaskSpec`]s. Short names (`read`, `write`, `criteria`, `validation`,
//! `after`, `rules`, `kind`) and the old protocol's names are both accepted;
//! any other field, or a field of the wrong type, is an error naming it.

use mlua::{Lua, LuaSerdeExt, Value};
use serde_json::{Map, Value as Json};

use super::{errors, limits};
use crate::task::TaskSpec;

/// Short name → (object it lives in, old-protocol name).
const SHORT: [(&str, Option<&str>, &str); 9] = [
    ("read", Some("context"), "targetFiles"),
    ("write", Some("context"), "outputFiles"),
    ("requirements", Some("context"), "requirements"),
    ("rules", Some("context"), "relevantRules"),
    ("criteria", Some("acceptance"), "criteria"),
    ("validation", Some("acceptance"), "validation"),
    ("after", None, "dependencies"),
    ("over_budget", None, "overBudget"),
    ("kind", None, "type"),
];

/// Every field a task table may have.
const TASK_FIELDS: [&str; 20] = [
    "id",
    "description",
    "read",
    "write",
    "requirements",
    "rules",
    "criteria",
    "validation",
    "after",
    "type",
    "lease",
    "data",
    "context",
    "acceptance",
    "dependencies",
    "race",
    "budget",
    "over_budget",
    "needs",
    "kind",
];
const CONTEXT_FIELDS: [&str; 4] = ["targetFiles", "outputFiles", "requirements", "relevantRules"];
const ACCEPTANCE_FIELDS: [&str; 2] = ["criteria", "validation"];

/// Fields holding a list of strings (a single string is a list of one).
const LISTS: [&str; 11] = [
    "read",
    "write",
    "requirements",
    "rules",
    "criteria",
    "after",
    "dependencies",
    "targetFiles",
    "outputFiles",
    "relevantRules",
    "needs",
];
/// The fields of a `budget` table (a workflow's, a phase's, a task's).
pub(super) const BUDGET_FIELDS: [&str; 2] = ["usd", "tokens"];
/// Fields holding one string.
const STRINGS: [&str; 4] = ["type", "lease", "validation", "kind"];

/// One thing wrong with a task table; `field` is the key to point at in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub field: Option<String>,
    pub text: String,
    /// The task's place (from 0) in a list of tasks, when it came in one.
    pub item: Option<usize>,
}

impl Problem {
    fn new(field: Option<&str>, text: String) -> Self {
        Self { field: field.map(str::to_owned), text, item: None }
    }
}

/// Convert one task table; `default_lease` is the workflow's `lease`.
/// Every problem found is in the error, on one line (it becomes a Lua error).
pub fn to_spec(lua: &Lua, value: Value, default_lease: Option<&str>) -> Result<TaskSpec, String> {
    checked(lua, value, default_lease).map_err(|problems| join(&problems, "; "))
}

fn join(problems: &[Problem], sep: &str) -> String {
    problems.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join(sep)
}

/// Convert one task table, with every problem found.
pub fn checked(lua: &Lua, value: Value, default_lease: Option<&str>) -> Result<TaskSpec, Vec<Problem>> {
    let one = |text: String| vec![Problem::new(None, text)];
    let Value::Table(_) = value else {
        return Err(one(format!(
            "a task must be a table such as {{ id = \"t1\", description = \"...\" }}, not {}",
            value.type_name()
        )));
    };
    // Bounded before serde walks it: its recursion would overflow the stack.
    limits::check_shape(&value, "a task").map_err(|e| one(e.to_string()))?;
    let json: Json = lua.from_value(value).map_err(|e| one(format!("a task must hold plain values: {e}")))?;
    let Json::Object(mut map) = json else {
        return Err(one("a task must be a table with `id` and `description`, not a list".to_owned()));
    };
    let mut problems = Vec::new();
    let id = match map.get("id") {
        Some(Json::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        Some(Json::String(_)) => {
            problems.push(Problem::new(Some("id"), "task `id` is empty: give each task a unique id".to_owned()));
            "?".to_owned()
        }
        Some(other) => {
            problems.push(Problem::new(Some("id"), errors::wrong_type("id", "a string such as \"t1\"", kind(other))));
            "?".to_owned()
        }
        None => {
            problems.push(Problem::new(None, "a task has no `id`: give each task a unique id".to_owned()));
            "?".to_owned()
        }
    };
    if matches!(map.get("description"), None | Some(Json::String(_)))
        && map.get("description").and_then(Json::as_str).is_none_or(|s| s.trim().is_empty())
    {
        problems.push(Problem::new(
            Some("description"),
            format!("task `{id}` has no `description`: say what the worker should do"),
        ));
    }
    let mut bad = |field: &str, text: String| problems.push(Problem::new(Some(field), format!("task `{id}`: {text}")));
    match map.get("description") {
        None | Some(Json::String(_)) => {}
        Some(other) => bad("description", errors::wrong_type("description", "a string", kind(other))),
    }
    for (key, value) in &map {
        if !TASK_FIELDS.contains(&key.as_str()) {
            bad(key, errors::unknown_field(key, &TASK_FIELDS, "a task"));
        } else if let Some(text) = type_problem(key, value) {
            bad(key, text);
        }
    }
    for (object, known) in
        [("context", &CONTEXT_FIELDS[..]), ("acceptance", &ACCEPTANCE_FIELDS[..]), ("budget", &BUDGET_FIELDS[..])]
    {
        match map.get(object) {
            None => {}
            Some(Json::Object(inner)) => {
                for (key, value) in inner {
                    if !known.contains(&key.as_str()) {
                        bad(key, format!("`{object}`: {}", errors::unknown_field(key, known, &format!("`{object}`"))));
                    } else if let Some(text) = type_problem(key, value) {
                        bad(key, format!("`{object}`: {text}"));
                    }
                }
            }
            Some(other) => bad(object, errors::wrong_type(object, "a table", kind(other))),
        }
    }
    match map.get("budget") {
        Some(Json::Object(b)) if b.is_empty() => {
            bad("budget", "`budget` is empty: give `usd`, `tokens` or both, such as { usd = 2 }".to_owned());
        }
        Some(Json::Object(b)) => {
            if b.get("usd").is_some_and(|u| u.as_f64().is_none_or(|u| u < 0.0)) {
                bad("usd", "`budget`: `usd` must be a number of 0 or more, such as 2.50".to_owned());
            }
            if b.get("tokens").is_some_and(|t| t.as_u64().is_none()) {
                bad("tokens", "`budget`: `tokens` must be a whole number of 0 or more, such as 200000".to_owned());
            }
        }
        _ => {}
    }
    if let Some(over) = map.get("over_budget")
        && !matches!(over.as_str(), Some("fail" | "ask"))
    {
        bad("over_budget", format!("`over_budget` must be \"fail\" or \"ask\", not {over}"));
    }
    if let Some(Json::String(lease)) = map.get("lease")
        && humantime::parse_duration(lease).is_err()
    {
        bad("lease", errors::not_a_duration("lease", lease));
    }
    if let Some(race) = map.get("race") {
        let max = crate::scheduler::MAX_RACE;
        if !race.as_u64().is_some_and(|n| (2..=max).contains(&n)) {
            bad(
                "race",
                format!("`race` is how many workers race on the task: a whole number from 2 to {max}, not {race}"),
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    map.insert("id".into(), Json::String(id.clone()));
    for (short, within, long) in SHORT {
        let Some(v) = map.remove(short) else { continue };
        let v = if STRINGS.contains(&long) || long == "overBudget" { v } else { as_list(v) };
        match within {
            Some(obj) => {
                let entry = map.entry(obj).or_insert_with(|| Json::Object(Map::new()));
                if let Json::Object(inner) = entry {
                    inner.insert(long.to_owned(), v);
                }
            }
            None => {
                map.insert(long.to_owned(), v);
            }
        }
    }
    if let Some(deps) = map.remove("dependencies") {
        map.insert("dependencies".into(), as_list(deps));
    }
    if let Some(needs) = map.remove("needs") {
        map.insert("needs".into(), as_list(needs));
    }
    // An empty Lua table reads as an object; the old protocol wants lists.
    for obj in ["context", "acceptance"] {
        if let Some(Json::Object(inner)) = map.get_mut(obj) {
            for (key, v) in inner.iter_mut() {
                if key != "validation" {
                    *v = as_list(std::mem::take(v));
                }
            }
        }
    }
    if !map.contains_key("lease")
        && let Some(lease) = default_lease
    {
        map.insert("lease".into(), Json::String(lease.to_owned()));
    }
    serde_path_to_error::deserialize(Json::Object(map))
        .map_err(|e| vec![Problem::new(None, format!("task `{id}`: field `{}`: {}", e.path(), e.inner()))])
}

/// What is wrong with the type of a known field, if anything.
fn type_problem(key: &str, value: &Json) -> Option<String> {
    if LISTS.contains(&key) {
        let fine = match value {
            Json::String(_) => true,
            Json::Array(items) => items.iter().all(Json::is_string),
            Json::Object(o) => o.is_empty(),
            _ => false,
        };
        return (!fine).then(|| errors::wrong_type(key, "a string or a list of strings", kind(value)));
    }
    if STRINGS.contains(&key) && !value.is_string() {
        let example = if key == "lease" { "a string such as \"30m\"" } else { "a string" };
        return Some(errors::wrong_type(key, example, kind(value)));
    }
    None
}

/// The Lua name of what a value is.
fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "nil",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(a) if a.iter().all(Json::is_string) => "a list of strings",
        Json::Array(_) => "a list holding something other than strings",
        Json::Object(_) => "a table with named keys",
    }
}

/// A single string where a list is expected is a list of one.
fn as_list(v: Json) -> Json {
    match v {
        Json::String(_) => Json::Array(vec![v]),
        Json::Object(o) if o.is_empty() => Json::Array(Vec::new()),
        Json::Null => Json::Array(Vec::new()),
        other => other,
    }
}

/// Convert a list of task tables, each problem prefixed by `task N:` and
/// knowing its task's place in the list (`split` names the line that made it).
pub fn checked_list(lua: &Lua, value: Value, default_lease: Option<&str>) -> Result<Vec<TaskSpec>, Vec<Problem>> {
    let Value::Table(list) = value else {
        return Err(vec![Problem::new(None, format!("expected a list of tasks, got {}", value.type_name()))]);
    };
    let mut specs = Vec::with_capacity(list.raw_len());
    let mut problems = Vec::new();
    for (i, item) in list.sequence_values::<Value>().enumerate() {
        let item = item.map_err(|e| vec![Problem::new(None, e.to_string())])?;
        match checked(lua, item, default_lease) {
            Ok(spec) => specs.push(spec),
            Err(found) => problems.extend(found.into_iter().map(|p| Problem {
                text: format!("task {}: {}", i + 1, p.text),
                field: p.field,
                item: Some(i),
            })),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if specs.is_empty() && !list.is_empty() {
        return Err(vec![Problem::new(
            None,
            "expected a list of tasks ({ {id=...}, {id=...} }), got a table with named keys".to_owned(),
        )]);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(source: &str) -> Result<TaskSpec, String> {
        let lua = Lua::new();
        let value: Value = lua.load(source).eval().expect("valid Lua");
        to_spec(&lua, value, Some("30m"))
    }

    #[test]
    fn short_names_fill_the_old_protocol_fields() {
        let spec = spec_of(
            r#"{ id = "a", description = "d", read = "r.md", write = { "w.md" }, after = "b", criteria = {} }"#,
        )
        .expect("a good task");
        assert_eq!(spec.context.target_files, ["r.md"]);
        assert_eq!(spec.context.output_files, ["w.md"]);
        assert_eq!(spec.dependencies, ["b"]);
        assert!(spec.acceptance.criteria.is_empty());
        assert_eq!(spec.lease.as_deref(), Some("30m"));
    }

    #[test]
    fn a_race_is_a_whole_number_from_2_and_a_misspelt_one_is_named() {
        let spec = spec_of(r#"{ id = "a", description = "d", write = "w.md", race = 3 }"#).expect("a raced task");
        assert_eq!(crate::scheduler::race_size(&spec), Some(3));
        let err = spec_of(r#"{ id = "a", description = "d", race = 1 }"#).expect_err("one racer is no race");
        assert!(err.contains("a whole number from 2 to 10, not 1"), "{err}");
        let err = spec_of(r#"{ id = "a", description = "d", races = 3 }"#).expect_err("misspelt");
        assert!(err.contains("unknown field `races` (did you mean `race`?)"), "{err}");
    }

    #[test]
    fn needs_and_kind_become_the_tasks_needs_and_type() {
        let spec = spec_of(r#"{ id = "a", description = "d", needs = "rust", kind = "review" }"#).expect("a good task");
        assert_eq!(spec.needs, ["rust"]);
        assert_eq!(spec.kind, "review");
        let err =
            spec_of(r#"{ id = "a", description = "d", need = { "rust" }, needs = 3 }"#).expect_err("two problems");
        for part in [
            "unknown field `need` (did you mean `needs`?)",
            "`needs` has the wrong type: expected a string or a list of strings, got number",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
    }

    #[test]
    fn every_problem_of_a_task_is_named_at_once() {
        let err = spec_of(r#"{ id = "a", description = "d", writes = "x", lease = "forever", context = { targetFile = "y" }, type = 3 }"#)
            .expect_err("four problems");
        for part in [
            "unknown field `writes` (did you mean `write`?)",
            "lease `forever` is not a duration",
            "`context`: unknown field `targetFile` (did you mean `targetFiles`?)",
            "`type` has the wrong type: expected a string, got number",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
    }
}
