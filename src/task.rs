//! Tasks and reports as they travel on the wire: the old protocol's JSON,
//! typed, with every field a client sent kept and echoed back. These types
//! are the one description of both file formats: the hub reads tasks with
//! [`TaskSpec::from_json`], `mcc validate` runs the same function, and
//! `schemas/*.json` are generated from them (`schemas/README.md`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::wire::Usage;

/// A task as a coordinator, `mcc tasks add` or a workflow describes it.
///
/// Unknown fields (`status`, `createdAt`, anything a client adds) land in
/// `extra` and are sent back unchanged, so the old protocol's "the whole task
/// as the coordinator sent it" holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "mcc task (the old coordination protocol's Task)")]
pub struct TaskSpec {
    /// Unique among the hub's tasks; not empty.
    pub id: String,
    #[serde(rename = "type", default = "default_kind")]
    pub kind: String,
    pub description: String,
    #[serde(default)]
    pub context: TaskContext,
    #[serde(default)]
    pub acceptance: Acceptance,
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// mcc extension: this task's lease, such as `"10m"`; the hub's default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// mcc extension: the most one attempt may cost (`usd`, `tokens`), as
    /// its worker reports it; past it `overBudget` says what happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Usage>,
    /// mcc extension: an attempt over `budget` fails the task (`fail`, the
    /// default) or sends it to the engineer as a question (`ask`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_budget: Option<OverBudget>,
    /// mcc extension: what a worker must say it can do (`--can`) to be
    /// given this task by default, such as `["rust"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What an attempt that cost more than its task's budget does to the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverBudget {
    /// The task fails for good.
    #[default]
    Fail,
    /// The task waits for the engineer's answer, as a blocked one does.
    Ask,
}

/// Why a task's JSON is not a task the hub takes: the first problem
/// [`TaskSpec::from_json`] meets, as serde stops at the first wrong field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskProblem {
    /// A field that does not parse: its JSON path (`.` for the task itself)
    /// and serde's reason.
    Field {
        path: String,
        reason: String,
    },
    EmptyId,
    BadLease {
        id: String,
        lease: String,
    },
    /// `race` is not a whole number from 2 to [`MAX_RACE`].
    BadRace {
        id: String,
        race: Value,
    },
}

/// The most workers one task may be raced on (`race`): each racer is a
/// worker's whole attempt.
pub const MAX_RACE: u64 = 10;

impl TaskProblem {
    /// The JSON path of the field at fault within the task; `.` for the task itself.
    pub fn path(&self) -> &str {
        match self {
            Self::Field { path, .. } => path,
            Self::EmptyId => "id",
            Self::BadLease { .. } => "lease",
            Self::BadRace { .. } => "race",
        }
    }

    /// What is wrong with the field at [`Self::path`].
    pub fn reason(&self) -> String {
        match self {
            Self::Field { reason, .. } => reason.clone(),
            Self::EmptyId => "is empty; give every task an id".to_owned(),
            Self::BadLease { lease, .. } => format!("`{lease}` is not a duration such as \"30m\" or \"90s\""),
            Self::BadRace { race, .. } => {
                format!("{race} is not how many workers race on the task: give a whole number from 2 to {MAX_RACE}")
            }
        }
    }

    /// The hub's refusal of `add_tasks` when `value`, its `i`th task, has this problem.
    pub fn refusal(&self, i: usize, value: &Value) -> String {
        match self {
            Self::Field { path, reason } => {
                let id = value.get("id").and_then(Value::as_str).map_or_else(String::new, |id| format!(" (`{id}`)"));
                format!("tasks[{i}]{id}: field `{path}`: {reason}")
            }
            Self::EmptyId => format!("tasks[{i}]: `id` is empty; give every task an id"),
            Self::BadLease { id, lease } => {
                format!("tasks[{i}] (`{id}`): lease `{lease}` is not a duration such as \"30m\" or \"90s\"")
            }
            Self::BadRace { id, .. } => format!("tasks[{i}] (`{id}`): race: {}", self.reason()),
        }
    }
}

fn default_kind() -> String {
    "task".to_owned()
}

/// What the worker reads and writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskContext {
    #[serde(default)]
    pub target_files: Vec<String>,
    #[serde(default)]
    pub output_files: Vec<String>,
    #[serde(default)]
    pub requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relevant_rules: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a result is judged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Acceptance {
    #[serde(default)]
    pub criteria: Vec<String>,
    /// A shell command, run in the project root, that exits 0 when the output is acceptable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskSpec {
    /// Read one task as the hub does for `add_tasks` (and so `mcc tasks add`).
    pub fn from_json(value: &Value) -> Result<Self, TaskProblem> {
        let spec: Self = serde_path_to_error::deserialize(value)
            .map_err(|e| TaskProblem::Field { path: e.path().to_string(), reason: e.into_inner().to_string() })?;
        if spec.id.trim().is_empty() {
            return Err(TaskProblem::EmptyId);
        }
        if let Some(lease) = &spec.lease
            && humantime::parse_duration(lease).is_err()
        {
            return Err(TaskProblem::BadLease { id: spec.id, lease: lease.clone() });
        }
        if let Some(race) = spec.extra.get("race")
            && !race.as_u64().is_some_and(|n| (2..=MAX_RACE).contains(&n))
        {
            return Err(TaskProblem::BadRace { race: race.clone(), id: spec.id });
        }
        Ok(spec)
    }

    /// A minimal task, for tests and workflows.
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: default_kind(),
            description: description.into(),
            context: TaskContext::default(),
            acceptance: Acceptance::default(),
            dependencies: Vec::new(),
            lease: None,
            budget: None,
            over_budget: None,
            needs: Vec::new(),
            extra: Map::new(),
        }
    }

    /// The task as the old protocol sends it to a worker: every field it was
    /// given, with `status`, `assignedTo` and the timestamps set by the hub.
    pub fn to_wire(
        &self,
        status: &str,
        assigned_to: Option<&str>,
        created_at: &str,
        completed_at: Option<&str>,
    ) -> Value {
        let mut value = serde_json::to_value(self).expect("a task always serializes");
        let map = value.as_object_mut().expect("a task is an object");
        map.insert("status".into(), Value::from(status));
        map.insert("assignedTo".into(), assigned_to.map_or(Value::Null, Value::from));
        map.entry("createdAt").or_insert_with(|| Value::from(created_at));
        map.insert("completedAt".into(), completed_at.map_or(Value::Null, Value::from));
        value
    }
}

/// How a worker's report says it ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Completed,
    Failed,
    Blocked,
}

/// A worker's report on a task (PROTOCOL.md "Report").
///
/// The report watcher also requires `workerId`, and `attempt` outside the
/// old clients' folder: together they fence a report to one grant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "mcc report (the old coordination protocol's Report)")]
pub struct Report {
    pub task_id: String,
    /// The worker that did the task, as in `--as NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    pub status: ReportStatus,
    #[serde(default)]
    pub deliverables: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub context_efficiency_score: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_guidance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_at: Option<String>,
    /// mcc extension: the attempt this report is for (the fencing token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// mcc extension: what the attempt cost (`usd`, `tokens`), as the worker knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// mcc extension, set by the hub at `done` (never taken from a worker):
    /// files this attempt changed that its task does not declare and that
    /// are nobody else's (docs/worker.md, "Writes outside a task").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub outside: Vec<String>,
    /// mcc extension, set by the hub: changed files another in-flight task reserves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub conflicts: Vec<Conflict>,
    /// mcc extension, set by the hub: changed files that cannot be pinned on
    /// this worker (others worked in the same checkout meanwhile): shown, blamed on nobody.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub shared: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A changed file that another in-flight task reserves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Conflict {
    pub file: String,
    /// The task whose declared writes hold the file.
    pub task: String,
    /// Who holds that task (empty when nobody does).
    pub holder: String,
}

impl Report {
    /// A completed report with the given deliverables.
    pub fn completed(task_id: impl Into<String>, worker: impl Into<String>, deliverables: Vec<String>) -> Self {
        Self {
            task_id: task_id.into(),
            worker_id: Some(worker.into()),
            status: ReportStatus::Completed,
            deliverables,
            context_efficiency_score: None,
            notes: None,
            completed_at: Some(now_rfc3339()),
            blocker: None,
            requested_guidance: None,
            blocked_at: None,
            attempt: None,
            usage: None,
            outside: Vec::new(),
            conflicts: Vec::new(),
            shared: Vec::new(),
            extra: Map::new(),
        }
    }
}

/// The current wall-clock time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Milliseconds since the Unix epoch, for stored timestamps.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_keeps_fields_it_does_not_know() {
        let raw = r#"{"id":"t1","type":"x","description":"d","context":{"targetFiles":[],"outputFiles":["a"],"requirements":[],"color":"red"},"acceptance":{"criteria":[]},"priority":7,"status":"pending","createdAt":"2025-01-01T00:00:00Z"}"#;
        let task: TaskSpec = serde_json::from_str(raw).unwrap();
        let wire = task.to_wire("assigned", Some("w"), "ignored", None);
        assert_eq!(wire["priority"], 7);
        assert_eq!(wire["context"]["color"], "red");
        assert_eq!(wire["status"], "assigned");
        assert_eq!(wire["assignedTo"], "w");
        assert_eq!(wire["createdAt"], "2025-01-01T00:00:00Z");
    }
}
