//! Task tables (what `split`, `tasks` and `ctx.add_task` give) into
//! [`TaskSpec`]s. Short names (`read`, `write`, `criteria`, `validation`,
//! `after`, `rules`) and the old protocol's nested names are both accepted.

use mlua::{Lua, LuaSerdeExt, Value};
use serde_json::{Map, Value as Json};

use crate::task::TaskSpec;

/// Short name → (object it lives in, old-protocol name).
const SHORT: [(&str, Option<&str>, &str); 7] = [
    ("read", Some("context"), "targetFiles"),
    ("write", Some("context"), "outputFiles"),
    ("requirements", Some("context"), "requirements"),
    ("rules", Some("context"), "relevantRules"),
    ("criteria", Some("acceptance"), "criteria"),
    ("validation", Some("acceptance"), "validation"),
    ("after", None, "dependencies"),
];

/// Convert one task table; `default_lease` is the workflow's `lease`.
pub fn to_spec(lua: &Lua, value: Value, default_lease: Option<&str>) -> Result<TaskSpec, String> {
    let Value::Table(_) = value else {
        return Err(format!(
            "a task must be a table such as {{ id = \"t1\", description = \"...\" }}, not {}",
            value.type_name()
        ));
    };
    let json: Json = lua.from_value(value).map_err(|e| format!("a task must hold plain values: {e}"))?;
    let Json::Object(mut map) = json else {
        return Err("a task must be a table with `id` and `description`, not a list".to_owned());
    };
    let id = match map.get("id") {
        Some(Json::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        Some(_) => return Err("task `id` must be a non-empty string".to_owned()),
        None => return Err("a task has no `id`: give each task a unique id".to_owned()),
    };
    map.insert("id".into(), Json::String(id.clone()));
    match map.get("description") {
        Some(Json::String(s)) if !s.trim().is_empty() => {}
        _ => return Err(format!("task `{id}` has no `description`: say what the worker should do")),
    }
    for (short, within, long) in SHORT {
        let Some(v) = map.remove(short) else { continue };
        let v = if long == "validation" { v } else { as_list(v) };
        match within {
            Some(obj) => {
                let entry = map.entry(obj).or_insert_with(|| Json::Object(Map::new()));
                let Json::Object(inner) = entry else { return Err(format!("task `{id}`: `{obj}` must be a table")) };
                inner.insert(long.to_owned(), v);
            }
            None => {
                map.insert(long.to_owned(), v);
            }
        }
    }
    if let Some(deps) = map.remove("dependencies") {
        map.insert("dependencies".into(), as_list(deps));
    }
    // An empty Lua table reads as an object; the old protocol wants lists.
    for obj in ["context", "acceptance"] {
        if let Some(Json::Object(inner)) = map.get_mut(obj) {
            for (key, v) in inner.iter_mut() {
                if key != "validation" && matches!(v, Json::Object(o) if o.is_empty()) {
                    *v = Json::Array(Vec::new());
                }
            }
        }
    }
    if !map.contains_key("lease")
        && let Some(lease) = default_lease
    {
        map.insert("lease".into(), Json::String(lease.to_owned()));
    }
    let spec: TaskSpec = serde_path_to_error::deserialize(Json::Object(map))
        .map_err(|e| format!("task `{id}`: field `{}`: {}", e.path(), e.inner()))?;
    if let Some(lease) = &spec.lease
        && humantime::parse_duration(lease).is_err()
    {
        return Err(format!("task `{id}`: lease `{lease}` is not a duration such as \"30m\" or \"90s\""));
    }
    Ok(spec)
}

/// A single string where a list is expected is a list of one.
fn as_list(v: Json) -> Json {
    match v {
        Json::String(_) => Json::Array(vec![v]),
        Json::Object(o) if o.is_empty() => Json::Array(Vec::new()),
        other => other,
    }
}

/// Convert a list of task tables.
pub fn to_specs(lua: &Lua, value: Value, default_lease: Option<&str>) -> Result<Vec<TaskSpec>, String> {
    let Value::Table(list) = value else {
        return Err(format!("expected a list of tasks, got {}", value.type_name()));
    };
    let mut specs = Vec::with_capacity(list.raw_len());
    for (i, item) in list.sequence_values::<Value>().enumerate() {
        let item = item.map_err(|e| e.to_string())?;
        specs.push(to_spec(lua, item, default_lease).map_err(|e| format!("task {}: {e}", i + 1))?);
    }
    if specs.is_empty() && !list.is_empty() {
        return Err("expected a list of tasks ({ {id=...}, {id=...} }), got a table with named keys".to_owned());
    }
    Ok(specs)
}
