//! What a run's event log measures, and how it is drawn: the figures of
//! `mcc report` per run (as text, JSON, or one HTML page with a timeline,
//! a per-task table and the questions), a task's history for `mcc tasks
//! show`, and the recent timeline the live page shows. Everything is read
//! from `.mcc/state.db`, with or without a running hub.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::EventKind;
use crate::scheduler::{Task, TaskState};
use crate::store::{StoredEvent, StoredRun, ValidationRecord};
use crate::wire::Usage;
use crate::wire::views::{AttemptView, QuestionView, TaskHistory, ValidationView};

/// One grant of a task to a worker, from `assigned` to what ended it.
struct Attempt {
    task: String,
    number: u32,
    worker: String,
    from_ms: i64,
    to_ms: Option<i64>,
    /// The last word on it; running while open.
    verdict: Verdict,
    /// Why it was rejected, given up, or failed.
    reasons: Vec<String>,
    /// The files its report named.
    files: Vec<String>,
    /// What it changed outside its task, as the hub sorted it at `done`.
    outside: Vec<String>,
    conflicts: Vec<crate::task::Conflict>,
    shared: Vec<String>,
}

impl Attempt {
    /// The attempt as one bar of a timeline ([`timeline_svg`] reads it):
    /// `span` in ms, drawn from `origin`.
    fn bar(&self, origin: i64, span: (i64, i64), phase: Option<&str>) -> Bar {
        Bar {
            task: self.task.clone(),
            attempt: self.number,
            worker: self.worker.clone(),
            phase: phase.map(str::to_owned),
            from_ms: span.0 - origin,
            to_ms: span.1 - origin,
            verdict: self.verdict.name().to_owned(),
        }
    }

    /// The attempt as `mcc tasks show` and the report's table show it, with its validation if one ran.
    fn view(&self, validations: &HashMap<(String, u32), ValidationRecord>) -> AttemptView {
        AttemptView {
            attempt: self.number,
            worker: self.worker.clone(),
            started_ms: self.from_ms,
            ended_ms: self.to_ms,
            verdict: self.verdict.name().to_owned(),
            reasons: self.reasons.clone(),
            files: self.files.clone(),
            outside: self.outside.clone(),
            conflicts: self.conflicts.clone(),
            shared: self.shared.clone(),
            validation: validations.get(&(self.task.clone(), self.number)).map(|v| ValidationView {
                command: v.command.clone(),
                exit_code: v.exit_code,
                timed_out: v.timed_out,
                stdout_tail: v.stdout_tail.clone(),
                stderr_tail: v.stderr_tail.clone(),
            }),
        }
    }
}

/// How an attempt ended, as the timeline names and colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Rejected,
    /// Given up by its worker, or the task failed for good.
    Failed,
    Expired,
    Blocked,
    Released,
    Cancelled,
    /// Reported, no verdict yet.
    Submitted,
    Running,
}

impl Verdict {
    /// In the legend's order.
    const ALL: [Verdict; 9] = [
        Self::Accepted,
        Self::Rejected,
        Self::Failed,
        Self::Expired,
        Self::Blocked,
        Self::Released,
        Self::Cancelled,
        Self::Submitted,
        Self::Running,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Blocked => "blocked",
            Self::Released => "released",
            Self::Cancelled => "cancelled",
            Self::Submitted => "submitted",
            Self::Running => "running",
        }
    }

    /// The colour of its bar.
    fn colour(self) -> &'static str {
        match self {
            Self::Accepted => "#2e9d4f",
            Self::Rejected => "#d9822b",
            Self::Failed => "#c23030",
            Self::Expired => "#8f398f",
            Self::Blocked => "#d1b100",
            Self::Released => "#8a9ba8",
            Self::Cancelled => "#5c7080",
            Self::Submitted => "#4a90d9",
            Self::Running => "#a7c7e7",
        }
    }
}

/// What an event does to an attempt of its task.
enum Step {
    /// A new attempt begins.
    Begins,
    /// The attempt ends (or, already ended, gets its last word).
    Ends(Verdict),
    /// Nothing: the event is not about an attempt's time.
    Nothing,
}

/// What an event of `kind` does to an attempt. Every kind is named: a
/// kind the report does not place cannot compile, so none is left running.
fn step(kind: &EventKind) -> Step {
    match kind {
        EventKind::Assigned => Step::Begins,
        EventKind::Accepted => Step::Ends(Verdict::Accepted),
        EventKind::Rejected => Step::Ends(Verdict::Rejected),
        EventKind::Submitted => Step::Ends(Verdict::Submitted),
        EventKind::Blocked => Step::Ends(Verdict::Blocked),
        // The holder's chat ended: like a lease that ran out, an attempt spent without a result.
        EventKind::Expired | EventKind::ChatEnded => Step::Ends(Verdict::Expired),
        EventKind::Released => Step::Ends(Verdict::Released),
        EventKind::Failed | EventKind::FailedAttempt => Step::Ends(Verdict::Failed),
        EventKind::Cancelled => Step::Ends(Verdict::Cancelled),
        EventKind::WorkerJoined
        | EventKind::Score
        | EventKind::Created
        | EventKind::Answered
        | EventKind::Progress
        | EventKind::Retried
        | EventKind::Other(_) => Step::Nothing,
    }
}

/// Total length of the union of `[from, to)` spans: time with at least one attempt running.
fn covered(mut spans: Vec<(i64, i64)>) -> i64 {
    spans.sort_unstable();
    let (mut total, mut end) = (0, i64::MIN);
    for (from, to) in spans {
        if to > end {
            total += to - from.max(end);
            end = to;
        }
    }
    total
}

/// Every attempt the events show, in the order they were granted: from
/// `assigned` to what ended it, coloured by the last word on it. An ending
/// whose `assigned` is not among `events` is left out.
fn attempts_of(events: &[StoredEvent]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut open: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for e in events {
        let task = e.task.as_deref().unwrap_or("");
        let key = (task.to_owned(), e.attempt.unwrap_or(0));
        match step(&e.kind) {
            Step::Begins => {
                open.insert(key, attempts.len());
                attempts.push(Attempt {
                    task: task.to_owned(),
                    number: e.attempt.unwrap_or(0),
                    worker: e.worker.clone().unwrap_or_default(),
                    from_ms: e.at_ms,
                    to_ms: None,
                    verdict: Verdict::Running,
                    reasons: Vec::new(),
                    files: Vec::new(),
                    outside: Vec::new(),
                    conflicts: Vec::new(),
                    shared: Vec::new(),
                });
            }
            Step::Ends(verdict) => {
                // The attempt's time ends at the report (or expiry); its colour is the last word on it.
                let found = match e.attempt {
                    Some(number) => open
                        .get(&key)
                        .copied()
                        .or_else(|| attempts.iter().rposition(|a| a.task == task && a.number == number)),
                    // A cancel names no attempt: it ends the one running, if any.
                    None => open.range((task.to_owned(), 0)..=(task.to_owned(), u32::MAX)).next_back().map(|(_, i)| *i),
                };
                if let Some(i) = found {
                    let a = &mut attempts[i];
                    a.to_ms.get_or_insert(e.at_ms);
                    a.verdict = verdict;
                    a.reasons.extend(reasons_of(e));
                    if let Some(files) = e.detail["deliverables"].as_array() {
                        a.files = files.iter().filter_map(Value::as_str).map(str::to_owned).collect();
                    }
                    if e.kind == EventKind::Submitted {
                        let strings = |key: &str| -> Vec<String> {
                            e.detail[key]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        };
                        a.outside = strings("outside");
                        a.shared = strings("shared");
                        a.conflicts = serde_json::from_value(e.detail["conflicts"].clone()).unwrap_or_default();
                    }
                    if verdict != Verdict::Submitted {
                        open.remove(&(a.task.clone(), a.number));
                    }
                }
            }
            Step::Nothing => {}
        }
    }
    attempts
}

/// What an ending event says of why: a rejection's reasons, a worker's
/// reason for giving up, why a task failed, an expired lease.
fn reasons_of(e: &StoredEvent) -> Vec<String> {
    match e.kind {
        EventKind::Rejected => e.detail["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        EventKind::FailedAttempt | EventKind::Failed => {
            e.detail["reason"].as_str().map(str::to_owned).into_iter().collect()
        }
        EventKind::Expired => vec!["its lease ran out".to_owned()],
        EventKind::ChatEnded => e.detail["reason"].as_str().map(str::to_owned).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Events the live page's timeline reads at most: its cost stays the same
/// however long the log grows (`mcc report --html` draws every attempt).
const RECENT_EVENTS: usize = 20_000;
/// Attempts the live page draws at most, the latest.
const RECENT_ATTEMPTS: usize = 1_000;

/// The live page's timeline, an HTML fragment: the latest attempts (at
/// most [`RECENT_ATTEMPTS`], among the last [`RECENT_EVENTS`] events),
/// drawn as [`timeline_svg`] draws a report's, with time from the first
/// drawn, and a line saying so when earlier ones are left out.
pub fn recent_timeline_svg(root: &Path) -> Result<String, String> {
    let Some(mut store) = crate::store::read_project(root)? else {
        return Ok(recent_timeline(&[], RECENT_ATTEMPTS));
    };
    let events = store.recent_events(RECENT_EVENTS).map_err(|e| e.to_string())?;
    Ok(recent_timeline(&events, RECENT_ATTEMPTS))
}

fn recent_timeline(events: &[StoredEvent], most: usize) -> String {
    let attempts = attempts_of(events);
    let left_out = attempts.len().saturating_sub(most);
    let drawn = &attempts[left_out..];
    let now_ms = events.last().map_or(0, |e| e.at_ms);
    let start = drawn.iter().map(|a| a.from_ms).min().unwrap_or(now_ms);
    let workers: BTreeSet<&str> = drawn.iter().map(|a| a.worker.as_str()).collect();
    let timeline: Vec<Bar> = drawn.iter().map(|a| a.bar(start, (a.from_ms, a.to_ms.unwrap_or(now_ms)), None)).collect();
    let svg = timeline_svg(&timeline, &workers.into_iter().collect::<Vec<_>>());
    if left_out == 0 && events.len() < RECENT_EVENTS {
        return svg;
    }
    let shown = if drawn.is_empty() {
        format!("no attempt among the latest {} events", events.len())
    } else {
        format!("the latest {} attempts", drawn.len())
    };
    format!("<p class=\"muted\">{shown}; every attempt: <code>mcc report --html FILE</code></p>\n{svg}")
}

/// Which runs a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// The newest run (the default).
    Latest,
    /// One run by its id.
    One(i64),
    /// Every run, each measured on its own.
    All,
}

/// The run a report measures: the project, the workflow, start and end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunHeader {
    pub id: i64,
    /// How many runs the store holds.
    pub of: usize,
    pub project: String,
    /// The workflow file, relative to the project when under it; `None` for tasks added by hand.
    pub workflow: Option<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// When it finished or another workflow replaced it; `None` while it may go on.
    pub ended_at: Option<String>,
    /// The run's last event, RFC 3339.
    pub last_event_at: Option<String>,
}

/// A phase's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PhaseFigures {
    pub name: String,
    pub tasks: usize,
    pub accepted: usize,
    pub attempts: usize,
    pub seconds: f64,
    pub span_seconds: f64,
    #[serde(flatten)]
    pub writes: Writes,
}

/// Files changed outside their tasks, counted over attempts (docs/worker.md,
/// "Writes outside a task"); absent from the JSON while all are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Writes {
    /// Files written outside the task, by the attempt's worker.
    #[serde(skip_serializing_if = "is_zero")]
    pub outside: usize,
    /// Files another in-flight task reserved.
    #[serde(skip_serializing_if = "is_zero")]
    pub conflicts: usize,
    /// Changes in a shared checkout pinned on nobody.
    #[serde(skip_serializing_if = "is_zero")]
    pub shared: usize,
}

impl Writes {
    fn of<'a>(attempts: impl IntoIterator<Item = &'a Attempt>) -> Self {
        attempts.into_iter().fold(Self::default(), |w, a| Self {
            outside: w.outside + a.outside.len(),
            conflicts: w.conflicts + a.conflicts.len(),
            shared: w.shared + a.shared.len(),
        })
    }

    /// `, 2 writes outside, 1 conflict, 1 shared change` when any; empty otherwise.
    fn text(self) -> String {
        let mut parts = Vec::new();
        if self.outside > 0 {
            parts.push(plural(self.outside as u64, "write outside", "writes outside"));
        }
        if self.conflicts > 0 {
            parts.push(plural(self.conflicts as u64, "conflict", "conflicts"));
        }
        if self.shared > 0 {
            parts.push(plural(self.shared as u64, "shared change", "shared changes"));
        }
        if parts.is_empty() { String::new() } else { format!(", {}", parts.join(", ")) }
    }
}

/// A worker's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerFigures {
    pub name: String,
    pub attempts: usize,
    pub accepted: usize,
    pub rejections: usize,
    pub busy_seconds: f64,
    /// What it said it can do (`--can`), as last told.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub can: Vec<String>,
    /// The model it said it runs (`--model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tasks it held that went back to the queue because its chat ended.
    #[serde(skip_serializing_if = "is_zero")]
    pub chats_ended: usize,
    #[serde(flatten)]
    pub writes: Writes,
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "the shape serde's skip_serializing_if calls")]
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The scores workers reported of their own context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContextEfficiency {
    pub mean: Option<f64>,
    pub min: Option<u64>,
    pub reports: usize,
}

/// One bar of a timeline: an attempt, in ms from the timeline's origin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Bar {
    pub task: String,
    pub attempt: u32,
    pub worker: String,
    pub phase: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub verdict: String,
}

/// A task of the run with every attempt: the report's per-task table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskRow {
    pub id: String,
    pub phase: Option<String>,
    pub state: String,
    pub attempts: Vec<AttemptView>,
}

/// A question of the run, with the task it was asked on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QuestionRow {
    pub task: String,
    #[serde(flatten)]
    pub question: QuestionView,
}

/// What a run's attempts cost, as their workers reported it with each
/// report (`--cost`, `--tokens`, or read by `mcc worker run`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CostFigures {
    pub total: Usage,
    /// What attempts that were not accepted cost: rejected, given up, blocked, over budget.
    pub not_accepted: Usage,
    /// How many attempts reported a cost, of all attempts that reported.
    pub attempts_with_cost: usize,
    pub by_task: BTreeMap<String, Usage>,
    pub by_worker: BTreeMap<String, Usage>,
    pub by_phase: BTreeMap<String, Usage>,
}

impl CostFigures {
    /// The cost of `tasks`' applied reports; `None` when none reported any.
    fn of(tasks: &[Task]) -> Option<Self> {
        let mut figures = Self::default();
        for task in tasks {
            for applied in task.applied().values() {
                let Some(usage) = applied.usage else { continue };
                let accepted = applied.verdict.as_ref().is_some_and(|v| v.accepted);
                figures.attempts_with_cost += 1;
                figures.total = figures.total.plus(usage);
                if !accepted {
                    figures.not_accepted = figures.not_accepted.plus(usage);
                }
                let add = |map: &mut BTreeMap<String, Usage>, key: &str| {
                    let entry = map.entry(key.to_owned()).or_default();
                    *entry = entry.plus(usage);
                };
                add(&mut figures.by_task, &task.spec.id);
                add(&mut figures.by_worker, &applied.worker);
                add(&mut figures.by_phase, task.phase().unwrap_or("-"));
            }
        }
        (figures.attempts_with_cost > 0).then_some(figures)
    }

    fn text(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  cost {} over {} that reported one; not accepted: {}",
            self.total.amount(),
            plural(count(self.attempts_with_cost), "attempt", "attempts"),
            self.not_accepted.amount()
        );
        for (what, map) in [("phase", &self.by_phase), ("worker", &self.by_worker)] {
            for (name, usage) in map {
                let _ = writeln!(out, "    {what} {name}: {}", usage.amount());
            }
        }
        for (name, usage) in self.by_task.iter().take(TEXT_ROWS) {
            let _ = writeln!(out, "    task {name}: {}", usage.amount());
        }
    }
}

/// Everything `mcc report` measures of one run; `--json` prints it.
/// Field order is the JSON's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Metrics {
    /// Which run this is; `None` when the store holds none yet.
    pub run: Option<RunHeader>,
    pub tasks: usize,
    pub by_state: BTreeMap<String, usize>,
    pub attempts: usize,
    pub attempts_per_task: Option<f64>,
    pub rejections: u64,
    pub lease_expiries: u64,
    pub seconds: f64,
    pub phases: Vec<PhaseFigures>,
    pub workers: Vec<WorkerFigures>,
    pub workers_used: usize,
    pub automation_rate: Option<f64>,
    pub accepted: usize,
    pub accepted_without_engineer: usize,
    pub engineer_prompts: u64,
    pub prompts_per_task: Option<f64>,
    pub context_efficiency: ContextEfficiency,
    pub serial_seconds: f64,
    pub parallel_seconds: f64,
    pub parallel_speedup: Option<f64>,
    pub timeline: Vec<Bar>,
    /// Every task of the run, attempt by attempt.
    pub per_task: Vec<TaskRow>,
    /// Every question asked in the run, with its answer.
    pub questions: Vec<QuestionRow>,
    pub measured_from: BTreeMap<String, String>,
    /// Set by `mcc run` for its summary: the wall time it watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_seconds: Option<f64>,
    /// What racers that did not win took, when the run raced a task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub race_overhead: Option<RaceOverhead>,
    /// What the run's attempts cost, per task, worker and phase; absent
    /// when no report said what it cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostFigures>,
}

/// What the losing racers of a run's races took (docs/workflows.md, "Races").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RaceOverhead {
    /// Tasks raced.
    pub races: usize,
    /// Attempts of racers that did not win.
    pub attempts: usize,
    /// Their time, grant to report (or to the race's end).
    pub seconds: f64,
    /// What they cost, as their reports said (`--cost`, `--tokens`); empty when none said.
    #[serde(skip_serializing_if = "Usage::is_empty")]
    pub cost: Usage,
}

/// The newest run's figures from the store of the project at `root`, as
/// JSON (what `mcc run` prints and adds to).
pub fn metrics(root: &Path) -> Result<Value, String> {
    let measured = measure_runs(root, Runs::Latest)?;
    let latest = measured.into_iter().next().unwrap_or_default();
    serde_json::to_value(latest).map_err(|e| format!("the report cannot be written as JSON: {e}"))
}

/// Everything measured from the store of the project at `root`, per run
/// asked for: every figure comes from that run's events, and says in its
/// `measuredFrom` how. A store with no run yet gives one empty report.
pub fn measure_runs(root: &Path, runs: Runs) -> Result<Vec<Metrics>, String> {
    let mut store = crate::store::read_project(root)?;
    let stored = match store.as_mut() {
        Some(store) => store.runs().map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let chosen: Vec<&StoredRun> = match runs {
        Runs::Latest => stored.last().into_iter().collect(),
        Runs::All => stored.iter().collect(),
        Runs::One(id) => {
            let Some(run) = stored.iter().find(|r| r.id == id) else {
                let known: Vec<String> = stored.iter().map(|r| r.id.to_string()).collect();
                return Err(format!(
                    "no run {id} in this project's store; its runs: {} (`mcc report --all` shows each)",
                    if known.is_empty() { "none yet".to_owned() } else { known.join(", ") }
                ));
            };
            vec![run]
        }
    };
    let Some(store) = store.as_mut().filter(|_| !chosen.is_empty()) else {
        return Ok(vec![measure(&[], &[], &HashMap::new(), None)]);
    };
    let (tasks, kits) = store.load().map_err(|e| e.to_string())?;
    let task_runs = store.task_runs().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(chosen.len());
    for run in chosen {
        let events = store.run_events(run.id).map_err(|e| e.to_string())?;
        let mine: Vec<Task> = tasks.iter().filter(|t| task_runs.get(&t.spec.id) == Some(&run.id)).cloned().collect();
        let mut validations = HashMap::new();
        for t in &mine {
            for v in store.validations(&t.spec.id).map_err(|e| e.to_string())? {
                validations.insert((v.task.clone(), v.attempt), v);
            }
        }
        let header = header(root, run, stored.len(), &events);
        let mut measured = measure(&mine, &events, &validations, Some(header));
        for figures in &mut measured.workers {
            if let Some(w) = kits.iter().find(|w| w.name() == figures.name) {
                figures.can = w.can().to_vec();
                figures.model = w.model().map(str::to_owned);
            }
        }
        out.push(measured);
    }
    Ok(out)
}

fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn header(root: &Path, run: &StoredRun, of: usize, events: &[StoredEvent]) -> RunHeader {
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
    let workflow = run.workflow.as_deref().map(|w| {
        let path = Path::new(w);
        let relative = path.strip_prefix(root).or_else(|_| path.strip_prefix(&canonical));
        relative.unwrap_or(path).display().to_string()
    });
    RunHeader {
        id: run.id,
        of,
        project: root.display().to_string(),
        workflow,
        started_at: rfc3339(run.started_ms),
        ended_at: run.ended_ms.map(rfc3339),
        last_event_at: events.last().map(|e| rfc3339(e.at_ms)),
    }
}

/// The history of task `id` from the store of the project at `root`, read
/// only: `None` when the project has no store or the store no such task.
pub fn task_history(root: &Path, id: &str) -> Result<Option<TaskHistory>, String> {
    task_history_in(&crate::store::Location::of_root(root)?, id)
}

/// [`task_history`] from the store at `location` (a hub's `show_task`).
pub fn task_history_in(location: &crate::store::Location, id: &str) -> Result<Option<TaskHistory>, String> {
    let Some(mut store) = crate::store::open_read_only(location).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let run = store.task_runs().map_err(|e| e.to_string())?.get(id).copied();
    let events = store.task_events(id).map_err(|e| e.to_string())?;
    if run.is_none() && events.is_empty() {
        return Ok(None);
    }
    let validations: HashMap<(String, u32), ValidationRecord> = store
        .validations(id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|v| ((v.task.clone(), v.attempt), v))
        .collect();
    let attempts = attempts_of(&events).iter().map(|a| a.view(&validations)).collect();
    let questions = questions_of(&events).into_iter().map(|q| q.question).collect();
    Ok(Some(TaskHistory { run, attempts, questions }))
}

/// Every question the events show, with its answer once given.
pub fn questions_of(events: &[StoredEvent]) -> Vec<QuestionRow> {
    let mut out: Vec<QuestionRow> = Vec::new();
    for e in events {
        let task = e.task.clone().unwrap_or_default();
        match e.kind {
            EventKind::Blocked => out.push(QuestionRow {
                task,
                question: QuestionView {
                    attempt: e.attempt,
                    worker: e.worker.clone(),
                    asked_ms: e.at_ms,
                    question: e.detail["question"].as_str().unwrap_or_default().to_owned(),
                    answer: None,
                    answered_ms: None,
                },
            }),
            EventKind::Answered => {
                if let Some(q) = out.iter_mut().rev().find(|q| q.task == task && q.question.answer.is_none()) {
                    q.question.answer = e.detail["answer"].as_str().map(str::to_owned);
                    q.question.answered_ms = Some(e.at_ms);
                }
            }
            _ => {}
        }
    }
    out
}

/// The figures of [`measure_runs`] from a run's tasks as they stand and its event log, oldest first.
fn measure(
    tasks: &[Task],
    events: &[StoredEvent],
    validations: &HashMap<(String, u32), ValidationRecord>,
    run: Option<RunHeader>,
) -> Metrics {
    let phase_of: BTreeMap<&str, &str> = tasks.iter().map(|t| (t.spec.id.as_str(), t.phase().unwrap_or("-"))).collect();
    let attempts = attempts_of(events);
    let mut engineer: BTreeMap<&str, u64> = BTreeMap::new();
    let mut scores: Vec<u64> = Vec::new();
    let mut joined: BTreeSet<String> = attempts.iter().map(|a| a.worker.clone()).collect();
    let (mut rejections, mut expiries) = (0u64, 0u64);
    // Each worker's tasks given back because its chat ended (docs/worker.md, "Presence").
    let mut chats_ended: BTreeMap<String, usize> = BTreeMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for e in events {
        first = first.min(e.at_ms);
        last = last.max(e.at_ms);
        let task = e.task.as_deref().unwrap_or("");
        match &e.kind {
            EventKind::WorkerJoined => joined.extend(e.worker.clone()),
            EventKind::Rejected => rejections += 1,
            EventKind::Expired => expiries += 1,
            // A racer cancelled because its race ended is not the engineer's doing.
            EventKind::Cancelled if e.detail.get("winner").is_some() || e.detail["reason"] == "race ended" => {}
            EventKind::ChatEnded => {
                *chats_ended.entry(e.worker.clone().unwrap_or_default()).or_default() += 1;
            }
            EventKind::Answered | EventKind::Retried | EventKind::Cancelled => {
                *engineer.entry(task).or_default() += 1;
            }
            EventKind::Score => scores.extend(e.detail["score"].as_u64()),
            // Counted as attempts (see `step`), or by no figure.
            EventKind::Created
            | EventKind::Assigned
            | EventKind::Submitted
            | EventKind::Accepted
            | EventKind::Failed
            | EventKind::FailedAttempt
            | EventKind::Blocked
            | EventKind::Progress
            | EventKind::Released
            | EventKind::Other(_) => {}
        }
    }
    let now_ms = last.max(first);
    let spans: Vec<(i64, i64)> = attempts.iter().map(|a| (a.from_ms, a.to_ms.unwrap_or(now_ms))).collect();
    let serial_ms: i64 = spans.iter().map(|(f, t)| t - f).sum();
    let parallel_ms = covered(spans.clone());
    let span_ms = if last > first { last - first } else { 0 };

    let mut phases = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for t in tasks {
        let name = t.phase().unwrap_or("-");
        if !seen.insert(name) {
            continue;
        }
        let of_phase: Vec<_> = tasks.iter().filter(|x| x.phase().unwrap_or("-") == name).collect();
        let accepted = of_phase.iter().filter(|x| x.state() == TaskState::Accepted).count();
        let mine: Vec<(i64, i64)> = attempts
            .iter()
            .zip(&spans)
            .filter(|(a, _)| phase_of.get(a.task.as_str()) == Some(&name))
            .map(|(_, s)| *s)
            .collect();
        let from = mine.iter().map(|s| s.0).min().unwrap_or(0);
        let to = mine.iter().map(|s| s.1).max().unwrap_or(0);
        phases.push(PhaseFigures {
            name: name.to_owned(),
            tasks: of_phase.len(),
            accepted,
            attempts: mine.len(),
            seconds: covered(mine) as f64 / 1000.0,
            span_seconds: (to - from) as f64 / 1000.0,
            writes: Writes::of(attempts.iter().filter(|a| phase_of.get(a.task.as_str()) == Some(&name))),
        });
    }
    let by_state: BTreeMap<String, usize> = TaskState::ALL
        .iter()
        .map(|s| (s.name().to_owned(), tasks.iter().filter(|t| t.state() == *s).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let accepted: Vec<&str> =
        tasks.iter().filter(|t| t.state() == TaskState::Accepted).map(|t| t.spec.id.as_str()).collect();
    let untouched = accepted.iter().filter(|id| !engineer.contains_key(*id)).count();
    let automation = (!accepted.is_empty()).then(|| untouched as f64 / accepted.len() as f64);
    let prompts: u64 = engineer.values().sum();
    let mean_score = (!scores.is_empty()).then(|| scores.iter().sum::<u64>() as f64 / scores.len() as f64);
    let workers_used: BTreeSet<&str> = attempts.iter().map(|a| a.worker.as_str()).collect();
    let workers = joined
        .iter()
        .map(|name| {
            let mine: Vec<(&Attempt, &(i64, i64))> =
                attempts.iter().zip(&spans).filter(|(a, _)| &a.worker == name).collect();
            WorkerFigures {
                name: name.clone(),
                attempts: mine.len(),
                accepted: mine.iter().filter(|(a, _)| a.verdict == Verdict::Accepted).count(),
                rejections: mine.iter().filter(|(a, _)| a.verdict == Verdict::Rejected).count(),
                busy_seconds: mine.iter().map(|(_, (f, t))| t - f).sum::<i64>() as f64 / 1000.0,
                chats_ended: chats_ended.get(name).copied().unwrap_or_default(),
                writes: Writes::of(mine.iter().map(|(a, _)| *a)),
                ..WorkerFigures::default()
            }
        })
        .collect();
    let timeline = attempts
        .iter()
        .zip(&spans)
        .map(|(a, span)| a.bar(first, *span, phase_of.get(a.task.as_str()).copied()))
        .collect();
    let per_task = tasks
        .iter()
        .map(|t| TaskRow {
            id: t.spec.id.clone(),
            phase: t.phase().map(str::to_owned),
            state: t.state().name().to_owned(),
            attempts: attempts.iter().filter(|a| a.task == t.spec.id).map(|a| a.view(validations)).collect(),
        })
        .collect();
    let per_task_of = |n: f64| (!tasks.is_empty()).then(|| n / tasks.len() as f64);
    let races = tasks.iter().filter(|t| crate::scheduler::race_size(&t.spec).is_some()).count();
    let race_overhead = (races > 0).then(|| {
        let losers: BTreeSet<&str> = tasks
            .iter()
            .filter(|t| crate::scheduler::race_of(&t.spec).is_some() && t.state() != TaskState::Accepted)
            .map(|t| t.spec.id.as_str())
            .collect();
        let mine: Vec<i64> = attempts
            .iter()
            .zip(&spans)
            .filter(|(a, _)| losers.contains(a.task.as_str()))
            .map(|(_, (f, t))| t - f)
            .collect();
        let cost = tasks
            .iter()
            .filter(|t| losers.contains(t.spec.id.as_str()))
            .flat_map(|t| t.applied().values().filter_map(|applied| applied.usage))
            .fold(Usage::default(), Usage::plus);
        RaceOverhead { races, attempts: mine.len(), seconds: mine.iter().sum::<i64>() as f64 / 1000.0, cost }
    });
    let mut measured_from = vec![
        ("seconds", "first to last event of the run in .mcc/state.db"),
        ("phases.seconds", "time with at least one attempt of the phase running (a stopped hub does not count)"),
        ("automationRate", "accepted tasks with no answer, retry or cancel by the engineer / accepted tasks"),
        ("engineerPrompts", "answers, retries and cancels by the engineer"),
        (
            "parallelSpeedup",
            "sum of attempt times (assigned to report), which one worker would need in a row / time with at least one attempt running",
        ),
        ("busySeconds", "sum of the worker's attempt times, assigned to report"),
        ("contextEfficiency", "scores the workers reported"),
        ("perTask", "each task the run created, with every attempt, its verdict and reasons, from the event log"),
        (
            "cost",
            "the usage each applied report carried (`--cost`, `--tokens`), kept with its task; present once one did",
        ),
    ];
    if race_overhead.is_some() {
        measured_from.push((
            "raceOverhead",
            "attempts of racers that did not win, their time (assigned to report) and the cost their reports carried",
        ));
    }
    Metrics {
        run,
        tasks: tasks.len(),
        by_state,
        attempts: attempts.len(),
        attempts_per_task: per_task_of(attempts.len() as f64),
        rejections,
        lease_expiries: expiries,
        seconds: span_ms as f64 / 1000.0,
        phases,
        workers,
        workers_used: workers_used.len(),
        automation_rate: automation,
        accepted: accepted.len(),
        accepted_without_engineer: untouched,
        engineer_prompts: prompts,
        prompts_per_task: per_task_of(prompts as f64),
        context_efficiency: ContextEfficiency {
            mean: mean_score,
            min: scores.iter().min().copied(),
            reports: scores.len(),
        },
        serial_seconds: serial_ms as f64 / 1000.0,
        parallel_seconds: parallel_ms as f64 / 1000.0,
        parallel_speedup: (parallel_ms > 0).then(|| serial_ms as f64 / parallel_ms as f64),
        timeline,
        per_task,
        questions: questions_of(events),
        measured_from: measured_from.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        run_seconds: None,
        race_overhead,
        cost: CostFigures::of(tasks),
    }
}

/// `n word`, with an `s` unless n is 1 (`plural(1, "rejection", "rejections")`).
fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn count(n: usize) -> u64 {
    n as u64
}

/// The report's figures as text, each with what it is measured from: what
/// `mcc run` prints at the end (it adds `runSeconds`); fields it lacks read as empty.
pub fn render(m: &Value) -> String {
    match Metrics::deserialize(m) {
        Ok(metrics) => metrics.figures_text(),
        Err(e) => format!("the figures cannot be read back ({e}); `mcc report --json` prints them\n"),
    }
}

/// The first line of `text`, at most `max` characters.
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Per-task rows the text report prints at most (`--json` has every one).
const TEXT_ROWS: usize = 200;

impl Metrics {
    /// The whole report as text: which run, the figures, the per-task
    /// table, the questions (`mcc report`).
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(run) = &self.run {
            let workflow = run.workflow.as_deref().unwrap_or("no workflow (tasks added by hand)");
            let _ = writeln!(out, "run {} of {} · project {} · workflow {workflow}", run.id, run.of, run.project);
            let end = match (&run.ended_at, &run.last_event_at) {
                (Some(end), _) => format!("ended {end}"),
                (None, Some(last)) => format!("not ended; last event {last}"),
                (None, None) => "not ended".to_owned(),
            };
            let _ = writeln!(out, "  started {} · {end}", run.started_at);
        }
        out.push_str(&self.figures_text());
        if !self.per_task.is_empty() {
            out.push_str("tasks (attempt: worker, verdict, reasons):\n");
        }
        for row in self.per_task.iter().take(TEXT_ROWS) {
            let phase = row.phase.as_deref().map(|p| format!(" (phase {p})")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}{phase}: {}, {}",
                row.id,
                row.state,
                plural(count(row.attempts.len()), "attempt", "attempts")
            );
            for a in &row.attempts {
                let reasons = if a.reasons.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.reasons.iter().map(|r| first_line(r, 160)).collect::<Vec<_>>().join("; "))
                };
                let _ = writeln!(out, "    {}: {}, {}{reasons}", a.attempt, a.worker, a.verdict);
            }
        }
        if self.per_task.len() > TEXT_ROWS {
            let _ =
                writeln!(out, "  … {} more tasks: `mcc report --json` has every one", self.per_task.len() - TEXT_ROWS);
        }
        if !self.questions.is_empty() {
            out.push_str("questions:\n");
        }
        for q in &self.questions {
            let by = q.question.worker.as_deref().map(|w| format!(" ({w})")).unwrap_or_default();
            let answer = q
                .question
                .answer
                .as_deref()
                .map_or_else(|| format!("not answered: mcc answer {} \"...\"", q.task), |a| format!("answer: {a}"));
            let _ = writeln!(out, "  {}{by}: {} → {answer}", q.task, q.question.question);
        }
        out
    }

    /// The figures, each with what it is measured from.
    fn figures_text(&self) -> String {
        let mut out = format!(
            "{}, {}, {}, {}; the event log spans {:.1}s\n",
            plural(count(self.tasks), "task", "tasks"),
            plural(count(self.attempts), "attempt", "attempts"),
            plural(self.rejections, "rejection", "rejections"),
            plural(self.lease_expiries, "lease expiry", "lease expiries"),
            self.seconds
        );
        if let Some(run) = self.run_seconds {
            let _ = writeln!(out, "  this run took {run:.1}s");
        }
        let states: Vec<String> = self.by_state.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = writeln!(out, "  tasks: {}", if states.is_empty() { "none yet".to_owned() } else { states.join(", ") });
        for p in &self.phases {
            let _ = writeln!(
                out,
                "  phase {:<14} {}/{} accepted, {} in {:.1}s of work (first grant to last report {:.1}s){}",
                p.name,
                p.accepted,
                p.tasks,
                plural(count(p.attempts), "attempt", "attempts"),
                p.seconds,
                p.span_seconds,
                p.writes.text()
            );
        }
        if let Some(race) = &self.race_overhead {
            let _ = writeln!(
                out,
                "  races: {} raced; racers that did not win took {} and {:.1}s{} (race overhead)",
                plural(count(race.races), "task", "tasks"),
                plural(count(race.attempts), "attempt", "attempts"),
                race.seconds,
                if race.cost.is_empty() { String::new() } else { format!(", costing {}", race.cost.amount()) }
            );
        }
        for w in &self.workers {
            let busy = if w.attempts == 0 {
                "no attempt yet".to_owned()
            } else {
                format!("busy {:.1}s over {}", w.busy_seconds, plural(count(w.attempts), "attempt", "attempts"))
            };
            let mut kit = Vec::new();
            if !w.can.is_empty() {
                kit.push(format!("can {}", w.can.join(", ")));
            }
            if let Some(model) = &w.model {
                kit.push(format!("model {model}"));
            }
            let kit = if kit.is_empty() { String::new() } else { format!(" ({})", kit.join("; ")) };
            let ended = match w.chats_ended {
                0 => String::new(),
                n => format!(", {} back to the queue when its chat ended", plural(count(n), "task", "tasks")),
            };
            let _ = writeln!(
                out,
                "  worker {:<13} {} accepted, {} rejected, {busy}{ended}{}{kit}",
                w.name,
                w.accepted,
                w.rejections,
                w.writes.text()
            );
        }
        let automation = match self.automation_rate {
            Some(rate) => format!(
                "{:.0}% (target 80% or more): {} of {} accepted tasks needed no engineer",
                rate * 100.0,
                self.accepted_without_engineer,
                self.accepted
            ),
            None => "n/a: no task accepted yet".to_owned(),
        };
        let _ = writeln!(out, "  automation rate {automation}");
        let _ = writeln!(
            out,
            "  engineer prompts {} ({} per task): answers, retries and cancels",
            self.engineer_prompts,
            self.prompts_per_task.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.2}"))
        );
        if let Some(per) = self.attempts_per_task {
            let _ = writeln!(out, "  attempts per task {per:.2}");
        }
        let context = &self.context_efficiency;
        if context.reports == 0 {
            out.push_str("  context efficiency n/a: no worker reported a score\n");
        } else {
            let _ = writeln!(
                out,
                "  context efficiency mean {:.1} min {} over {} recorded scores (target 4 or more)",
                context.mean.unwrap_or(0.0),
                context.min.unwrap_or(0),
                context.reports
            );
        }
        let used = self.workers_used;
        match self.parallel_speedup {
            None => out.push_str("  parallel speedup n/a: no attempt was timed\n"),
            Some(x) => {
                let target = if used > 1 { " (target 2-3x)" } else { " (one worker: nothing ran in parallel)" };
                let _ = writeln!(
                    out,
                    "  parallel speedup {x:.1}x{target}: {:.1}s of attempts done in {:.1}s by {used} worker{}",
                    self.serial_seconds,
                    self.parallel_seconds,
                    if used == 1 { "" } else { "s" }
                );
            }
        }
        if let Some(cost) = &self.cost {
            cost.text(&mut out);
        }
        out
    }
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report as one HTML page: no script, no stylesheet or font fetched
/// from anywhere, so it opens offline and can be mailed or archived. Each
/// run asked for is one section: its header, timeline, figures, per-task
/// table and questions.
pub fn html(runs: &[Metrics]) -> String {
    let legend = legend_html();
    let mut sections = String::new();
    for m in runs {
        let _ = write!(sections, "{}", run_html(m, &legend));
    }
    let mut measured = String::new();
    for (k, v) in runs.first().map(|m| &m.measured_from).into_iter().flatten() {
        let _ = write!(measured, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    let title = match runs {
        [one] => one.run.as_ref().map_or_else(
            || "mcc report".to_owned(),
            |r| format!("mcc report · {} · run {}", r.workflow.as_deref().unwrap_or("no workflow"), r.id),
        ),
        _ => format!("mcc report · {} runs", runs.len()),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #182026; }}
pre {{ background: #f5f8fa; padding: 1em; white-space: pre-wrap; }}
{TIMELINE_CSS}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }}
table.tasks td, table.tasks th {{ border-bottom: 1px solid #e1e8ed; }}
</style>
</head>
<body>
<h1>{title}</h1>
{sections}<h2>How each figure is measured</h2>
<table>{measured}</table>
</body>
</html>
"#,
        title = escape(&title)
    )
}

/// One run's section of the HTML report.
fn run_html(m: &Metrics, legend: &str) -> String {
    let mut out = String::new();
    match &m.run {
        Some(run) => {
            let _ = write!(
                out,
                "<section class=\"run\" data-run=\"{}\">\n<h2>Run {} of {}</h2>\n<table class=\"header\"><tr><th>project</th><td>{}</td></tr><tr><th>workflow</th><td>{}</td></tr><tr><th>started</th><td>{}</td></tr><tr><th>ended</th><td>{}</td></tr></table>\n",
                run.id,
                run.id,
                run.of,
                escape(&run.project),
                escape(run.workflow.as_deref().unwrap_or("no workflow (tasks added by hand)")),
                escape(&run.started_at),
                escape(&run.ended_at.clone().unwrap_or_else(|| format!(
                    "not ended; last event {}",
                    run.last_event_at.as_deref().unwrap_or("none")
                ))),
            );
        }
        None => out.push_str("<section class=\"run\">\n<h2>No run yet</h2>\n"),
    }
    let workers: Vec<&str> = m.workers.iter().filter(|w| w.attempts > 0).map(|w| w.name.as_str()).collect();
    let _ = write!(
        out,
        "<h3>Timeline</h3>\n<p>One row per worker, one bar per attempt from its grant to its report, coloured by how it ended.</p>\n<p class=\"legend\">{legend}</p>\n{}\n<h3>Metrics</h3>\n<pre class=\"metrics\">{}</pre>\n",
        timeline_svg(&m.timeline, &workers),
        escape(&m.figures_text())
    );
    if !m.per_task.is_empty() {
        out.push_str("<h3>Tasks</h3>\n<table class=\"tasks\"><tr><th>task</th><th>phase</th><th>state</th><th>attempt</th><th>worker</th><th>verdict</th><th>reasons</th></tr>\n");
        for row in &m.per_task {
            let span = row.attempts.len().max(1);
            let _ = write!(
                out,
                "<tr class=\"task\" data-task=\"{0}\"><td rowspan=\"{span}\">{0}</td><td rowspan=\"{span}\">{1}</td><td rowspan=\"{span}\">{2}</td>",
                escape(&row.id),
                escape(row.phase.as_deref().unwrap_or("-")),
                escape(&row.state)
            );
            if row.attempts.is_empty() {
                out.push_str("<td colspan=\"4\">no attempt</td></tr>\n");
            }
            for (i, a) in row.attempts.iter().enumerate() {
                if i > 0 {
                    out.push_str("<tr>");
                }
                let _ = writeln!(
                    out,
                    "<td>{}</td><td>{}</td><td class=\"verdict {2}\">{2}</td><td>{3}</td></tr>",
                    a.attempt,
                    escape(&a.worker),
                    escape(&a.verdict),
                    a.reasons.iter().map(|r| escape(r)).collect::<Vec<_>>().join("<br>")
                );
            }
        }
        out.push_str("</table>\n");
    }
    if !m.questions.is_empty() {
        out.push_str("<h3>Questions</h3>\n<table class=\"questions\"><tr><th>task</th><th>worker</th><th>question</th><th>answer</th></tr>\n");
        for q in &m.questions {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&q.task),
                escape(q.question.worker.as_deref().unwrap_or("")),
                escape(&q.question.question),
                escape(q.question.answer.as_deref().unwrap_or("(not answered)"))
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</section>\n");
    out
}

/// The styles [`timeline_svg`] and [`legend_html`] expect (the report and the live page share them).
pub const TIMELINE_CSS: &str =
    "svg text { font: 12px system-ui, sans-serif; } svg text.bar-label { font-size: 11px; fill: #182026; }
.legend span { margin-right: 1em; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle; }";

/// What each bar colour means.
pub fn legend_html() -> String {
    Verdict::ALL
        .iter()
        .map(|v| format!("<span><i style=\"background:{}\"></i>{}</span>", v.colour(), v.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A timeline: one row per worker of `workers`, one bar per attempt,
/// coloured by verdict, as one inline SVG (the report and the live page).
fn timeline_svg(timeline: &[Bar], workers: &[&str]) -> String {
    let end_ms = timeline.iter().map(|a| a.to_ms).max().unwrap_or(0).max(1);
    let (label, width, row) = (140.0, 860.0, 26.0);
    let scale = width / end_ms as f64;
    let height = row * workers.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"timeline\">\n",
        label + width + 10.0
    );
    for (i, name) in workers.iter().enumerate() {
        let y = row * i as f64;
        svg.push_str(&format!(
            "<g class=\"worker\" data-worker=\"{0}\"><text x=\"0\" y=\"{1}\">{0}</text>\n",
            escape(name),
            y + 17.0
        ));
        let mut bars: Vec<&Bar> = timeline.iter().filter(|a| a.worker == *name).collect();
        bars.sort_by_key(|a| a.from_ms);
        let mut last_end = label;
        for (k, a) in bars.iter().enumerate() {
            let from = a.from_ms as f64;
            let to = a.to_ms as f64;
            let verdict = a.verdict.as_str();
            let colour = Verdict::ALL.iter().find(|v| v.name() == verdict).map_or("#999", |v| v.colour());
            let task = a.task.as_str();
            let x = label + from * scale;
            // A pixel's gap keeps back-to-back attempts apart; an attempt of no
            // length still gets a bar wide enough to see.
            let bar = ((to - from) * scale - 1.0).max(3.0);
            svg.push_str(&format!(
                "  <rect class=\"attempt {verdict}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{colour}\" data-task=\"{}\"><title>{} attempt {} by {}: {verdict}, {:.1}s</title></rect>\n",
                y + 4.0,
                row - 8.0,
                escape(task),
                escape(task),
                a.attempt,
                escape(name),
                (to - from) / 1000.0
            ));
            // The task's name inside its bar, else beside it where there is
            // room (after it up to the next bar, or before it back to the
            // last), cut to fit.
            let chars = task.chars().count() as f64;
            let next = bars.get(k + 1).map_or(label + width, |n| label + n.from_ms as f64 * scale);
            let (after, before) = (next - x - bar - 4.0, x - last_end - 4.0);
            let (text_x, anchor, room) = if bar >= 7.0 * chars + 6.0 {
                (x + 3.0, "start", bar - 6.0)
            } else if after >= 7.0 * chars || after >= before {
                (x + bar + 2.0, "start", after)
            } else {
                (x - 2.0, "end", before)
            };
            if let Some(shown) = fit_label(task, room) {
                svg.push_str(&format!(
                    "  <text class=\"bar-label\" x=\"{text_x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" data-task=\"{}\">{}</text>\n",
                    y + 16.0,
                    escape(task),
                    escape(&shown)
                ));
            }
            last_end = x + bar;
        }
        svg.push_str("</g>\n");
    }
    let axis_y = row * workers.len() as f64 + 20.0;
    svg.push_str(&format!(
        "<text x=\"{label}\" y=\"{axis_y}\">0s</text><text x=\"{}\" y=\"{axis_y}\" text-anchor=\"end\">{:.1}s</text>\n</svg>",
        label + width,
        end_ms as f64 / 1000.0
    ));
    svg
}

/// `task` cut to what `room` pixels hold (about 7 a character), with an
/// ellipsis when cut; `None` when not even one character and the ellipsis fit.
fn fit_label(task: &str, room: f64) -> Option<String> {
    let fits = (room / 7.0).floor().max(0.0) as usize;
    if task.chars().count() <= fits {
        Some(task.to_owned())
    } else if fits >= 2 {
        Some(task.chars().take(fits - 1).chain(['…']).collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: &str, task: &str, attempt: u32) -> StoredEvent {
        StoredEvent {
            id,
            at_ms: id * 10,
            kind: EventKind::from_name(kind),
            task: Some(task.to_owned()),
            worker: Some(format!("w{}", id % 3)),
            attempt: Some(attempt),
            detail: Value::Null,
            run: Some(1),
        }
    }

    /// `n` tasks, each assigned then accepted.
    fn log(n: i64) -> Vec<StoredEvent> {
        (0..n)
            .flat_map(|i| {
                [event(2 * i, "assigned", &format!("t{i}"), 1), event(2 * i + 1, "accepted", &format!("t{i}"), 1)]
            })
            .collect()
    }

    /// An event of worker `w1` on task `a` at `at_ms`.
    fn at(at_ms: i64, kind: &str, attempt: Option<u32>) -> StoredEvent {
        StoredEvent {
            id: at_ms,
            at_ms,
            kind: EventKind::from_name(kind),
            task: Some("a".to_owned()),
            worker: Some("w1".to_owned()),
            attempt,
            detail: Value::Null,
            run: Some(1),
        }
    }

    #[test]
    fn a_failed_attempt_ends_when_the_worker_gives_up_and_one_worker_gets_no_speedup() {
        // One worker: `next` (attempt 1, 2.05 s), `fail`, `next` (attempt 2, 1 s), `done`, accepted.
        let events = [
            at(0, "worker_joined", None),
            at(0, "created", None),
            at(1_000, "assigned", Some(1)),
            at(3_050, "failed_attempt", Some(1)),
            at(3_060, "assigned", Some(2)),
            at(4_060, "submitted", Some(2)),
            at(4_100, "accepted", Some(2)),
        ];
        let m = serde_json::to_value(measure(&[], &events, &HashMap::new(), None)).unwrap();
        let bars: Vec<(u64, &str, i64, i64)> = m["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let verdict = b["verdict"].as_str().unwrap();
                (b["attempt"].as_u64().unwrap(), verdict, b["fromMs"].as_i64().unwrap(), b["toMs"].as_i64().unwrap())
            })
            .collect();
        assert_eq!(bars, [(1, "failed", 1_000, 3_050), (2, "accepted", 3_060, 4_060)], "{m}");
        assert_eq!(m["workers"][0]["busySeconds"], 3.05, "2.05 s and 1 s of attempts: {m}");
        assert_eq!(m["serialSeconds"], 3.05, "{m}");
        assert_eq!(m["parallelSeconds"], 3.05, "{m}");
        assert_eq!(m["parallelSpeedup"], 1.0, "one worker ran nothing in parallel: {m}");
    }

    /// Each attempt's (number, verdict, from, to) on the report's timeline.
    fn bars(events: &[StoredEvent]) -> Vec<(u32, &'static str, i64, Option<i64>)> {
        attempts_of(events).iter().map(|a| (a.number, a.verdict.name(), a.from_ms, a.to_ms)).collect()
    }

    #[test]
    fn every_way_an_attempt_ends_stops_its_time_there() {
        for (kind, attempt, verdict) in [
            ("submitted", Some(1), "submitted"),
            ("accepted", Some(1), "accepted"),
            ("rejected", Some(1), "rejected"),
            ("failed_attempt", Some(1), "failed"),
            ("blocked", Some(1), "blocked"),
            ("expired", Some(1), "expired"),
            ("released", Some(1), "released"),
            // A cancel names no attempt: the running one ends.
            ("cancelled", None, "cancelled"),
        ] {
            let events = [at(1_000, "assigned", Some(1)), at(2_000, kind, attempt), at(9_000, "progress", Some(1))];
            assert_eq!(bars(&events), [(1, verdict, 1_000, Some(2_000))], "{kind}");
        }
    }

    #[test]
    fn what_does_not_end_an_attempt_leaves_it_running() {
        for kind in ["progress", "answered", "retried", "score", "created", "worker_joined", "handed_over"] {
            let events = [at(1_000, "assigned", Some(1)), at(2_000, kind, Some(1))];
            assert_eq!(bars(&events), [(1, "running", 1_000, None)], "{kind}");
        }
    }

    #[test]
    fn the_last_word_on_an_ended_attempt_is_its_own_not_a_later_cancel() {
        // Rejected on its last attempt: `failed` follows for the same attempt and colours it.
        let exhausted = [at(1_000, "assigned", Some(1)), at(2_000, "rejected", Some(1)), at(2_000, "failed", Some(1))];
        assert_eq!(bars(&exhausted), [(1, "failed", 1_000, Some(2_000))]);
        // Given up, then cancelled in the queue: the attempt ended as given up.
        let cancelled =
            [at(1_000, "assigned", Some(1)), at(2_000, "failed_attempt", Some(1)), at(3_000, "cancelled", None)];
        assert_eq!(bars(&cancelled), [(1, "failed", 1_000, Some(2_000))]);
    }

    #[test]
    fn an_event_kind_from_another_version_counts_for_no_figure() {
        let events =
            [at(1_000, "assigned", Some(1)), at(1_500, "handed_over", Some(1)), at(2_000, "accepted", Some(1))];
        let m = serde_json::to_value(measure(&[], &events, &HashMap::new(), None)).unwrap();
        assert_eq!((m["attempts"].as_u64(), m["serialSeconds"].as_f64()), (Some(1), Some(1.0)), "{m}");
        assert_eq!(m["timeline"][0]["verdict"], "accepted", "{m}");
    }

    #[test]
    fn the_live_timeline_draws_the_latest_attempts_and_says_the_rest_are_in_the_report() {
        let svg = recent_timeline(&log(3_000), 1_000);
        assert_eq!(svg.matches("<rect class=\"attempt accepted\"").count(), 1_000);
        assert!(svg.contains("<title>t2999 attempt 1"), "the latest is drawn");
        assert!(!svg.contains("<title>t1999 attempt 1"), "an earlier one is not");
        assert!(svg.starts_with("<p class=\"muted\">the latest 1000 attempts"), "{}", &svg[..200]);
    }

    #[test]
    fn a_short_log_is_drawn_whole_and_an_ending_without_its_grant_is_left_out() {
        let mut events = log(3);
        // The window began after t-old was assigned: its ending draws nothing.
        events.insert(0, event(-1, "accepted", "t-old", 1));
        let svg = recent_timeline(&events, 1_000);
        assert_eq!(svg.matches("<rect class=\"attempt").count(), 3);
        assert!(!svg.contains("t-old") && !svg.contains("the latest"), "{svg}");
    }

    /// An event of `worker` on task `task` with `detail`.
    fn said(
        at_ms: i64,
        kind: &str,
        task: &str,
        worker: Option<&str>,
        attempt: Option<u32>,
        detail: Value,
    ) -> StoredEvent {
        StoredEvent {
            id: at_ms,
            at_ms,
            kind: EventKind::from_name(kind),
            task: Some(task.to_owned()),
            worker: worker.map(str::to_owned),
            attempt,
            detail,
            run: Some(1),
        }
    }

    #[test]
    fn the_report_names_each_rejections_reason_and_each_question_with_its_answer() {
        let w = Some("w1");
        let events = [
            said(1_000, "assigned", "a", w, Some(1), Value::Null),
            said(2_000, "submitted", "a", w, Some(1), serde_json::json!({"deliverables": ["a.md"]})),
            said(2_100, "rejected", "a", w, Some(1), serde_json::json!({"reasons": ["a.md has 3 words\nwants 30"]})),
            said(2_100, "assigned", "a", w, Some(2), Value::Null),
            said(2_500, "blocked", "a", w, Some(2), serde_json::json!({"question": "tabs?"})),
            said(3_000, "answered", "a", None, None, serde_json::json!({"answer": "spaces"})),
        ];
        let m = measure(&[], &events, &HashMap::new(), None);
        let text = m.text();
        assert!(text.starts_with("0 tasks, 2 attempts, 1 rejection, 0 lease expiries;"), "{text}");
        assert!(text.contains("questions:\n  a (w1): tabs? → answer: spaces\n"), "{text}");
        let attempts = attempts_of(&events);
        let first = attempts[0].view(&HashMap::new());
        assert_eq!((first.verdict.as_str(), first.files.clone()), ("rejected", vec!["a.md".to_owned()]));
        assert_eq!(first.reasons, ["a.md has 3 words\nwants 30"]);
        assert_eq!(attempts[1].view(&HashMap::new()).verdict, "blocked");
    }

    #[test]
    fn a_task_back_because_its_chat_ended_is_counted_for_its_worker_with_the_reason() {
        let w = Some("w1");
        let events = [
            said(1_000, "assigned", "a", w, Some(1), Value::Null),
            said(
                2_000,
                "chat_ended",
                "a",
                w,
                Some(1),
                serde_json::json!({"now": "ready", "reason": "w1's chat ended"}),
            ),
            said(2_500, "assigned", "a", Some("w2"), Some(2), Value::Null),
        ];
        let m = measure(&[], &events, &HashMap::new(), None);
        assert_eq!(m.workers.iter().find(|w| w.name == "w1").unwrap().chats_ended, 1);
        assert_eq!(m.lease_expiries, 0, "a chat's end is not a lease that ran out");
        let text = m.text();
        assert!(text.contains("1 task back to the queue when its chat ended"), "{text}");
        assert_eq!(attempts_of(&events)[0].view(&HashMap::new()).reasons, ["w1's chat ended"]);
    }

    #[test]
    fn what_mcc_run_adds_to_the_figures_does_not_change_how_they_read() {
        let m = measure(&[], &log(3), &HashMap::new(), None);
        let mut value = serde_json::to_value(&m).unwrap();
        // As `mcc run`'s summary adds them.
        value["finished"] = serde_json::json!(true);
        value["workflow"] = serde_json::json!("/p/wf.lua");
        value["problems"] = serde_json::json!([]);
        value["alreadyDone"] = serde_json::json!(false);
        value["runSeconds"] = serde_json::json!(1.5);
        let text = render(&value);
        assert!(text.starts_with("0 tasks, 3 attempts, 0 rejections, 0 lease expiries;"), "{text}");
        assert!(text.contains("  this run took 1.5s\n"), "{text}");
        assert_eq!(text.replace("  this run took 1.5s\n", ""), render(&serde_json::to_value(&m).unwrap()));
    }

    #[test]
    fn each_bar_is_labelled_with_its_task_and_an_attempt_of_no_length_is_drawn() {
        // w1: `a` from 0 to 4 s, then at 10 s `b` granted and rejected in the same millisecond.
        let events = [
            at(0, "assigned", Some(1)),
            at(4_000, "accepted", Some(1)),
            StoredEvent { task: Some("b".to_owned()), ..at(10_000, "assigned", Some(1)) },
            StoredEvent { task: Some("b".to_owned()), ..at(10_000, "rejected", Some(1)) },
        ];
        let svg = recent_timeline(&events, 1_000);
        assert!(
            svg.contains(
                "<text class=\"bar-label\" x=\"143.0\" y=\"16.0\" text-anchor=\"start\" data-task=\"a\">a</text>"
            ),
            "{svg}"
        );
        let b = svg.lines().find(|l| l.contains("<rect") && l.contains("data-task=\"b\"")).expect("b's bar");
        assert!(b.contains("width=\"3.0\""), "a bar of no length is drawn 3 px wide: {b}");
        assert!(
            svg.contains("text-anchor=\"end\" data-task=\"b\">b</text>"),
            "and labelled before it, at the end: {svg}"
        );
    }
}
