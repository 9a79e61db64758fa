//! The views a hub sends of its state, as typed messages read by the CLI,
//! the live page and MCP alike (docs/protocol.md, "Subscription"): a
//! [`Summary`] then a [`Delta`] per committed batch to a subscriber, a
//! [`Page`] of tasks, a task in full ([`TaskInfo`]) with its past
//! ([`TaskHistory`]), and the whole-store
//! [`Snapshot`] old scripts still ask for.
//!
//! A task's state travels as its name (`"ready"`, ...): this layer sits
//! below the scheduler that owns `TaskState`, and the names are what the
//! wire carries anyway. Field order is the wire's order (`serde_json` keeps it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RawJson;
use crate::task::Report;

/// One task as views show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskSummary {
    pub id: String,
    pub description: String,
    /// The state's name.
    pub state: String,
    /// Who holds it: its worker while assigned, and while submitted (awaiting a verdict).
    pub holder: Option<String>,
    pub attempt: u32,
    pub phase: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub dependencies: Vec<String>,
    pub reasons: Vec<String>,
    pub question: Option<String>,
}

/// One worker as views show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerView {
    pub name: String,
    /// The task it is assigned, else the newest it submitted that awaits a verdict.
    pub holding: Option<String>,
    pub lease_left_ms: Option<u64>,
    pub score: Option<u8>,
    pub accepted: usize,
    pub last_seen_ms_ago: Option<u64>,
    pub connected: bool,
    pub waiting: bool,
    /// Why a waiting worker gets nothing now (the reason its `next` names).
    pub waiting_on: Option<String>,
    pub hand_over: bool,
    /// What it said it can do (`--can`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub can: Vec<String>,
    /// The model it said it runs (`--model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether its chat is alive (docs/worker.md, "Presence"); hubs before it sent none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
    /// Present: how many connections say so (an MCP server, a watcher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presences: Option<usize>,
    /// Gone: how long ago its last presence ended (or the hub started, after a restart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone_ms_ago: Option<u64>,
    /// Gone, in its grace: how long until what it holds goes back to the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returns_in_ms: Option<u64>,
}

/// A capability ready tasks need that no worker here said it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnmetNeed {
    pub need: String,
    /// Ready tasks needing it.
    pub tasks: usize,
}

/// Whether a worker's chat is alive, as the hub knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// A connection of its chat (`mcc mcp`, or the watcher of a shell chat) is open.
    Present,
    /// Its last such connection ended.
    Gone,
    /// No presence of it is known: only its lease says whether it is alive.
    LeaseOnly,
    /// A state a newer hub gives, kept as it was sent.
    #[serde(untagged)]
    Other(String),
}

/// A task waiting on a dependency that failed or was cancelled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stuck {
    pub task: String,
    pub dependency: String,
}

/// Tasks per state name.
pub type Counts = BTreeMap<String, u64>;

/// What a subscriber is told first: everything but the task list.
/// A `progress` subscriber is not told `in_flight`: its summary has none,
/// and its deltas carry only the tasks that became or stopped being
/// questions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Summary {
    pub root: String,
    pub workflow: Option<String>,
    pub policy: Option<String>,
    pub finished: bool,
    /// False when read from the store with no hub running.
    pub hub_running: bool,
    pub coordinator: bool,
    /// Tasks per state name, every state present.
    pub counts: Counts,
    /// Per phase (`-` for tasks of no phase), tasks per state name present.
    pub phases: BTreeMap<String, Counts>,
    /// The workflow's phases in the order it declares them (empty without
    /// a workflow); hubs before it sent none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phase_order: Vec<String>,
    pub workers: Vec<WorkerView>,
    /// Tasks held now (assigned or submitted), with their lease and attempt.
    pub in_flight: Vec<TaskSummary>,
    /// Blocked tasks with their question, waiting for `mcc answer` (the first 100).
    pub questions: Vec<TaskSummary>,
    pub stuck: Vec<Stuck>,
    pub problems: Vec<String>,
    pub log: Vec<String>,
    /// What the run spent and its budgets, once it has either; hubs before it sent none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets: Option<super::Budgets>,
    /// Needs of ready tasks that no worker seen within a lease has (`--can`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmet_needs: Vec<UnmetNeed>,
}

impl Summary {
    /// Tasks in the state of that name.
    pub fn count(&self, state: &str) -> u64 {
        self.counts.get(state).copied().unwrap_or(0)
    }
}

/// What one committed batch changed, pushed to every subscriber. Counts are
/// whole (a subscriber needs no task list to keep them); tasks, workers and
/// events are only those the batch touched; problems, log, stuck and the
/// phase order come only when they changed.
///
/// The engine writes it once for every subscriber (as [`RawJson`]);
/// [`Delta::from_wire`] reads it back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Delta {
    pub counts: Counts,
    pub phases: BTreeMap<String, Counts>,
    pub finished: bool,
    pub workflow: Option<String>,
    pub tasks: Vec<TaskSummary>,
    pub workers: Vec<WorkerView>,
    pub events: Vec<EventView>,
    /// Events of this interval beyond what one delta carries (the event log has them all).
    pub events_left_out: u64,
    pub problems: Option<Vec<String>>,
    pub log: Option<Vec<String>>,
    pub stuck: Option<Vec<Stuck>>,
    /// The workflow's phases in declared order, when they changed (a
    /// workflow loaded or replaced); absent otherwise, and from older hubs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_order: Option<Vec<String>>,
    /// What the run spent and its budgets, when they changed; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budgets: Option<super::Budgets>,
}

impl Delta {
    /// Read a `delta` message's payload.
    pub fn from_wire(value: &RawJson) -> Result<Self, String> {
        serde_json::from_str(value.get()).map_err(|e| format!("the hub sent a delta this mcc cannot read ({e})"))
    }
}

/// One event of the log as a subscriber sees it (`assigned`, `accepted`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventView {
    pub kind: String,
    pub task: Option<String>,
    pub worker: Option<String>,
    pub attempt: Option<u32>,
    pub detail: Value,
}

/// One page of tasks, the answer to `tasks_page`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Page {
    pub state: Option<String>,
    pub tasks: Vec<TaskSummary>,
    /// Tasks of that state (or all) in the store.
    pub total: u64,
    /// Pass as `after` for the next page; `None` on the last.
    pub next_after: Option<String>,
}

/// A task in full, the answer to `show_task`: its summary, the task as sent
/// to workers, and what became of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    #[serde(flatten)]
    pub summary: TaskSummary,
    /// The task in the old protocol's shape, every field it was sent with.
    pub task: Value,
    pub answer: Option<String>,
    pub report: Option<Report>,
    pub rejections: u32,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// Every attempt and question, read from the store; absent from hubs
    /// that do not send it (`mcc tasks show` reads it from the store then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<TaskHistory>,
}

/// What became of a task, attempt by attempt: the one view `mcc tasks
/// show`, the live page and the report read of a task's past, built from
/// the store's event log (`store::read::task_history`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskHistory {
    /// The run that created the task.
    pub run: Option<i64>,
    pub attempts: Vec<AttemptView>,
    pub questions: Vec<QuestionView>,
}

/// One grant of a task to a worker, from `assigned` to what ended it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AttemptView {
    pub attempt: u32,
    pub worker: String,
    /// Wall clock, ms since the Unix epoch.
    pub started_ms: i64,
    /// When its worker reported, gave up, or lost it; `None` while running.
    pub ended_ms: Option<i64>,
    /// `accepted`, `rejected`, `failed`, `expired`, `blocked`, `released`,
    /// `cancelled`, `submitted` (no verdict yet) or `running`.
    pub verdict: String,
    /// Why it was rejected or given up.
    pub reasons: Vec<String>,
    /// The files its report named.
    pub files: Vec<String>,
    /// Files it changed that its task does not declare, by the worker
    /// (`outside`), into another in-flight task's (`conflicts`), or in a
    /// shared checkout, pinned on nobody (`shared`); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<crate::task::Conflict>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
    pub validation: Option<ValidationView>,
}

/// A validation command's outcome for one attempt, with the end of its output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValidationView {
    pub command: String,
    /// `None` when killed by a signal, the time limit or a cancel.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The last 2 KiB of what it printed on stdout, and on stderr.
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// A question a worker asked, and the engineer's answer once given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QuestionView {
    pub attempt: Option<u32>,
    pub worker: Option<String>,
    pub asked_ms: i64,
    pub question: String,
    pub answer: Option<String>,
    pub answered_ms: Option<i64>,
}

/// The answer to `snapshot`: the summary's parts and every task in one
/// message. Kept for old scripts (docs/protocol.md); its size grows with the
/// store, so mcc's own commands subscribe and page instead. `mcc status
/// --json` prints one when no hub runs (read from the store).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snapshot {
    pub root: String,
    pub workflow: Option<String>,
    pub policy: Option<String>,
    pub finished: bool,
    pub hub_running: bool,
    pub coordinator: bool,
    /// Tasks per state name, every state present.
    pub counts: Counts,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskSummary>,
    pub stuck: Vec<Stuck>,
    pub problems: Vec<String>,
    pub log: Vec<String>,
    /// As the summary's: absent until the run has a budget or spent anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<super::Budgets>,
    /// Needs of ready tasks that no worker here has (see [`Summary`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmet_needs: Vec<UnmetNeed>,
}

impl Snapshot {
    /// A summary's parts with every task: one worker view, one rule for
    /// what a worker holds, whichever message carries it.
    pub fn of(summary: Summary, tasks: Vec<TaskSummary>) -> Self {
        Self {
            root: summary.root,
            workflow: summary.workflow,
            policy: summary.policy,
            finished: summary.finished,
            hub_running: summary.hub_running,
            coordinator: summary.coordinator,
            counts: summary.counts,
            workers: summary.workers,
            tasks,
            stuck: summary.stuck,
            problems: summary.problems,
            log: summary.log,
            budgets: summary.budgets,
            unmet_needs: summary.unmet_needs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_presence_is_sent_by_name_only_when_known_and_a_newer_one_is_kept() {
        let plain = serde_json::to_value(WorkerView { name: "w".into(), ..WorkerView::default() }).unwrap();
        assert!(plain.get("presence").is_none(), "as before presence: {plain}");
        let gone = WorkerView {
            name: "w".into(),
            presence: Some(Presence::Gone),
            gone_ms_ago: Some(1500),
            returns_in_ms: Some(58_500),
            ..WorkerView::default()
        };
        let sent = serde_json::to_value(&gone).unwrap();
        assert_eq!(
            (&sent["presence"], &sent["goneMsAgo"], &sent["returnsInMs"]),
            (&"gone".into(), &1500.into(), &58_500.into())
        );
        assert_eq!(serde_json::from_value::<WorkerView>(sent).unwrap(), gone);
        let later: WorkerView = serde_json::from_value(serde_json::json!({"name": "w", "presence": "asleep"})).unwrap();
        assert_eq!(later.presence, Some(Presence::Other("asleep".into())));
        let lease: WorkerView =
            serde_json::from_value(serde_json::json!({"name": "w", "presence": "lease_only"})).unwrap();
        assert_eq!(lease.presence, Some(Presence::LeaseOnly));
    }
}
