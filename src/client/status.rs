//! What `mcc status` shows, below the CLI: [`fetch`] gets the typed views
//! (a `subscribe` summary whose cost does not grow with the queue, and for
//! `--json` a first page of tasks; the store, read-only, when no hub
//! answers), and [`Status::text`] / [`Status::json`] give the exact lines
//! and object `mcc status` prints. The CLI prints them; MCP returns them.
//! [`fold`] is what a subscriber does with each delta.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{ClientError, ask_here};
use crate::scheduler::TaskState;
use crate::store::read::Stored;
use crate::wire::{
    BudgetScope, Budgets, ClientMsg, Delta, Page, ServerMsg, Snapshot, SubscriptionView, Summary, TaskSummary, Usage,
};

/// Status draws the tasks in flight, and `--watch` follows them as they move.
pub const SUBSCRIBE: ClientMsg = ClientMsg::Subscribe { view: SubscriptionView::Full };
/// Tasks `--json` lists; `mcc tasks list` pages through the rest.
const JSON_PAGE: usize = 50;
/// How long the hub has to answer each request.
/// The hub answers these at once: each has the client's deadline alone.
const LIMIT: Duration = Duration::ZERO;

/// What `mcc status` shows, from the hub or from the store.
#[derive(Debug, Clone)]
pub enum Status {
    /// The running hub's summary.
    Hub {
        summary: Box<Summary>,
        /// The hub's address.
        url: String,
        /// The live page's address, when the hub serves one.
        page_url: Option<String>,
        /// The first page of tasks, when asked for and the hub gave it.
        tasks: Option<Page>,
    },
    /// No hub answered: the project's store, read-only.
    Stored(Box<Stored>),
}

/// Ask the hub named by `hub` (or found through the nearest `.mcc/`) for its
/// summary, and with `with_tasks` a first page of tasks; when no hub
/// answers, read the nearest store. `page_url` gives the live page's
/// address of a project root (the hub's code knows it, this layer does not).
/// `Err` is the line to show: no hub and no store, or an answer this mcc
/// cannot use.
pub fn fetch(
    hub: Option<&str>,
    options: super::Options,
    with_tasks: bool,
    page_url: impl Fn(&Path) -> Option<String>,
) -> Result<Status, String> {
    let (summary, target) = match ask_here(hub, options, &SUBSCRIBE, LIMIT) {
        Ok((ServerMsg::Summary { summary }, target)) => (summary, target),
        Ok((other, _)) => return Err(format!("unexpected answer from the hub: {}", other.to_json())),
        // A hub that holds the project but does not answer is not "no hub running".
        Err(e @ ClientError::Timeout { .. }) => return Err(e.to_string()),
        // No socket (a sandbox without network), but a live hub: it answers through files.
        Err(e) => match through_files(hub, options, with_tasks, &page_url) {
            Some(answered) => return answered,
            // No hub: the store still says what happened.
            None => return stored_here().map(|s| Status::Stored(Box::new(s))).ok_or_else(|| e.to_string()),
        },
    };
    let tasks = with_tasks
        .then(|| {
            let page = ClientMsg::TasksPage { state: None, limit: Some(JSON_PAGE), after: None };
            match ask_here(hub, options, &page, LIMIT) {
                Ok((ServerMsg::TasksPage { page }, _)) => Some(page),
                _ => None,
            }
        })
        .flatten();
    let page_url = target.root.as_deref().and_then(page_url);
    Ok(Status::Hub { summary, url: target.serving().to_owned(), page_url, tasks })
}

/// The status of the hub that holds the project's `.mcc/hub.lock`, asked
/// through the file transport (a subscription cannot go through files: a
/// `snapshot` can). `None` when no hub is alive here or files may not be
/// used (`--transport socket`, `--hub` elsewhere).
fn through_files(
    hub: Option<&str>,
    options: super::Options,
    with_tasks: bool,
    page_url: &impl Fn(&Path) -> Option<String>,
) -> Option<Result<Status, String>> {
    let cwd = std::env::current_dir().ok()?;
    let target = super::locate(hub, &cwd, options).ok()?;
    let layout = crate::layout::Layout::of_root(target.root.as_deref()?);
    if super::transport_for(&target) == super::Transport::Socket || !super::files::hub_alive(&layout) {
        return None;
    }
    let answer = super::files::ask(&layout, &ClientMsg::Snapshot {}, LIMIT + options.timeout);
    Some(match answer {
        Ok(ServerMsg::Snapshot { snapshot }) => {
            let (summary, tasks) = from_snapshot(*snapshot);
            let tasks = with_tasks.then(|| first_page(tasks));
            let url = format!("{} (answering through files in .mcc/: no socket here)", target.serving());
            Ok(Status::Hub { summary: Box::new(summary), url, page_url: page_url(layout.root()), tasks })
        }
        Ok(other) => Err(format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => Err(e.to_string()),
    })
}

/// A snapshot as the summary a subscriber is first sent (what `status`
/// draws), with every task.
fn from_snapshot(snapshot: Snapshot) -> (Summary, Vec<TaskSummary>) {
    let is = |t: &TaskSummary, state: TaskState| t.state == state.name();
    let mut phases: std::collections::BTreeMap<String, crate::wire::views::Counts> = std::collections::BTreeMap::new();
    for t in &snapshot.tasks {
        let phase = t.phase.clone().unwrap_or_else(|| "-".to_owned());
        *phases.entry(phase).or_default().entry(t.state.clone()).or_default() += 1;
    }
    let in_flight = TaskState::ALL.iter().filter(|s| s.in_flight()).collect::<Vec<_>>();
    let summary = Summary {
        root: snapshot.root,
        workflow: snapshot.workflow,
        policy: snapshot.policy,
        finished: snapshot.finished,
        hub_running: snapshot.hub_running,
        coordinator: snapshot.coordinator,
        counts: snapshot.counts,
        phases,
        phase_order: Vec::new(),
        workers: snapshot.workers,
        in_flight: snapshot.tasks.iter().filter(|t| in_flight.iter().any(|s| is(t, **s))).cloned().collect(),
        questions: snapshot.tasks.iter().filter(|t| is(t, TaskState::Blocked)).cloned().collect(),
        stuck: snapshot.stuck,
        problems: snapshot.problems,
        log: snapshot.log,
        budgets: snapshot.budgets,
        unmet_needs: snapshot.unmet_needs,
    };
    (summary, snapshot.tasks)
}

/// The first page of tasks, as `tasks_page` would give it.
fn first_page(mut tasks: Vec<TaskSummary>) -> Page {
    let total = tasks.len();
    let next_after = (total > JSON_PAGE).then(|| tasks[JSON_PAGE - 1].id.clone());
    tasks.truncate(JSON_PAGE);
    Page { tasks, total: total as u64, next_after, ..Page::default() }
}

/// The store under the nearest `.mcc/`, read-only (for when no hub answers).
pub fn stored_here() -> Option<Stored> {
    let cwd = std::env::current_dir().ok()?;
    crate::store::read::stored(&super::find_root(&cwd)?)
}

/// `mcc status --json` of a hub: the summary with the first page of tasks.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HubJson<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    #[serde(flatten)]
    tasks: Option<FirstPage<'a>>,
    page_url: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FirstPage<'a> {
    tasks: &'a [TaskSummary],
    next_after: Option<&'a str>,
}

impl Status {
    /// The lines `mcc status` prints, each ending in a newline.
    pub fn text(&self) -> String {
        match self {
            Self::Hub { summary, url, page_url, .. } => {
                let mut text = render(summary, url);
                if let Some(page) = page_url {
                    text.push_str(&format!("live page (read-only): {page}\n"));
                }
                text
            }
            Self::Stored(stored) => render(&stored.summary, &format!("(no hub running; read from {})", stored.from)),
        }
    }

    /// The one JSON object `mcc status --json` prints: the summary, the
    /// first page of tasks and the live page's address; from the store, a
    /// snapshot of every task.
    pub fn json(&self) -> String {
        let written = match self {
            Self::Hub { summary, page_url, tasks, .. } => serde_json::to_string(&HubJson {
                summary,
                tasks: tasks.as_ref().map(|p| FirstPage { tasks: &p.tasks, next_after: p.next_after.as_deref() }),
                page_url: page_url.as_deref(),
            }),
            Self::Stored(stored) => serde_json::to_string(&Snapshot::of(stored.summary.clone(), stored.tasks.clone())),
        };
        written.unwrap_or_else(|e| {
            serde_json::json!({"type": "error", "error": format!("status cannot be written as JSON: {e}")}).to_string()
        })
    }
}

/// Fold a delta into the summary it follows: what a subscriber does with each one.
pub fn fold(summary: &mut Summary, delta: &Delta) {
    summary.counts.clone_from(&delta.counts);
    summary.phases.clone_from(&delta.phases);
    summary.finished = delta.finished;
    summary.workflow.clone_from(&delta.workflow);
    for w in &delta.workers {
        match summary.workers.iter_mut().find(|have| have.name == w.name) {
            Some(have) => *have = w.clone(),
            None => summary.workers.push(w.clone()),
        }
    }
    for t in &delta.tasks {
        let held = TaskState::ALL.iter().any(|s| s.in_flight() && s.name() == t.state);
        upsert(&mut summary.in_flight, t, held);
        upsert(&mut summary.questions, t, t.state == TaskState::Blocked.name());
    }
    if let Some(p) = &delta.problems {
        summary.problems.clone_from(p);
    }
    if let Some(l) = &delta.log {
        summary.log.clone_from(l);
    }
    if let Some(s) = &delta.stuck {
        summary.stuck.clone_from(s);
    }
    if let Some(order) = &delta.phase_order {
        summary.phase_order.clone_from(order);
    }
    if let Some(budgets) = &delta.budgets {
        summary.budgets = Some(budgets.clone());
    }
}

fn upsert(list: &mut Vec<TaskSummary>, task: &TaskSummary, belongs: bool) {
    let at = list.iter().position(|t| t.id == task.id);
    match (at, belongs) {
        (Some(i), true) => list[i] = task.clone(),
        (Some(i), false) => {
            list.remove(i);
        }
        (None, true) => list.push(task.clone()),
        (None, false) => {}
    }
}

/// The status text of one summary, `url` naming where it comes from.
pub fn render(s: &Summary, url: &str) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    let workflow = s.workflow.as_deref().unwrap_or("none");
    let state = match (s.finished, s.hub_running) {
        (true, _) => "finished",
        (false, true) => "running",
        // Read from the store: nothing runs it now.
        (false, false) => "stopped",
    };
    line(format!("hub {url} · {} · workflow {workflow} ({state})", s.root));
    if !s.finished
        && !s.hub_running
        && let Some(command) = resume_command(s)
    {
        line(format!("stopped: resume with `{command}`"));
    }
    let counts: Vec<String> = TaskState::ALL
        .iter()
        .filter_map(|st| {
            let n = s.count(st.name());
            (n > 0).then(|| format!("{n} {}", st.name()))
        })
        .collect();
    line(format!("tasks: {}", if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }));
    if let Some(budgets) = &s.budgets {
        for l in budget_lines(budgets) {
            line(format!("budget {l}"));
        }
    }
    for w in &s.workers {
        let holding = match (&w.holding, w.lease_left_ms) {
            (Some(t), Some(ms)) => format!("on {t} (lease {} left)", crate::text::duration(Duration::from_millis(ms))),
            (Some(t), None) => format!("on {t}"),
            _ if w.waiting => match &w.waiting_on {
                Some(why) => format!("waiting for work: {why}"),
                None => "waiting for work".to_owned(),
            },
            _ => "idle".to_owned(),
        };
        let score = w.score.map(|n| format!(", score {n}")).unwrap_or_default();
        let hand_over = if w.hand_over { ", told to hand over" } else { "" };
        let seen = w.last_seen_ms_ago.map(|ms| format!(", seen {}s ago", ms / 1000)).unwrap_or_default();
        let kit = match (w.can.is_empty(), &w.model) {
            (true, None) => String::new(),
            (false, None) => format!(", can {}", w.can.join(", ")),
            (true, Some(model)) => format!(", model {model}"),
            (false, Some(model)) => format!(", can {}; model {model}", w.can.join(", ")),
        };
        let presence = presence_of(w);
        line(format!("worker {}: {holding}, {} accepted{score}{seen}{hand_over}{presence}{kit}", w.name, w.accepted));
    }
    if !s.unmet_needs.is_empty() {
        let needs: Vec<String> = s
            .unmet_needs
            .iter()
            .map(|u| format!("`{}` ({} ready {})", u.need, u.tasks, if u.tasks == 1 { "task" } else { "tasks" }))
            .collect();
        let first = &s.unmet_needs[0].need;
        line(format!(
            "needs no worker here has: {}; start one with `mcc worker next --as NAME --can {first}`",
            needs.join(", ")
        ));
    }
    for t in &s.questions {
        line(format!("question on {}: {}", t.id, t.question.as_deref().unwrap_or("")));
        line(format!("  answer: mcc answer {} \"...\"", t.id));
    }
    for st in &s.stuck {
        line(format!(
            "stuck: {} waits on {}, which failed; `mcc tasks retry {}` to try again",
            st.task, st.dependency, st.dependency
        ));
    }
    for p in &s.problems {
        line(format!("problem: {p}"));
    }
    // The workflow's own `ctx.log` lines, the last few.
    for l in &s.log[s.log.len().saturating_sub(5)..] {
        line(format!("log: {l}"));
    }
    out
}

/// `spent / limit` in the limit's units.
fn against(spent: Usage, limit: Usage) -> String {
    let mut parts = Vec::new();
    if let Some(l) = limit.usd {
        parts.push(format!("{:.2} / {l:.2} USD", spent.usd.unwrap_or(0.0)));
    }
    if let Some(l) = limit.tokens {
        parts.push(format!("{} / {l} tokens", spent.tokens.unwrap_or(0)));
    }
    parts.join(", ")
}

/// What the run spent and each budget, a line each: what `mcc budget`
/// prints, and `mcc status` after `budget `.
pub fn budget_lines(budgets: &Budgets) -> Vec<String> {
    let mut out = vec![format!("spent: {}", budgets.spent.amount())];
    for line in &budgets.lines {
        let name = line.name.as_deref().unwrap_or_default();
        let mut text = match line.scope {
            BudgetScope::Run => format!("run: {}", against(line.spent, line.limit)),
            BudgetScope::Phase => format!("phase {name}: {}", against(line.spent, line.limit)),
            BudgetScope::Task => {
                format!("task {name}: {} per attempt (spent {})", line.limit.amount(), line.spent.amount())
            }
        };
        if line.exhausted {
            let unit = if line.limit.usd.is_some() { "--usd N" } else { "--tokens N" };
            let raise = match line.scope {
                BudgetScope::Phase => format!("mcc budget set --phase {name} {unit}"),
                _ => format!("mcc budget set {unit}"),
            };
            let _ = write!(text, " (spent: no new grants; raise it with `{raise}`)");
        }
        out.push(text);
    }
    if budgets.lines.is_empty() {
        out.push("no budget is set: `budget = { usd = 25 }` in the workflow, or `mcc budget set --usd 25`".to_owned());
    }
    out
}

/// The command that resumes a stopped run of the summary's workflow, run
/// from the current folder: `mcc run` with the workflow's path as the
/// project root names it, or absolute from anywhere else.
fn resume_command(s: &Summary) -> Option<String> {
    let workflow = Path::new(s.workflow.as_deref()?);
    let root = Path::new(&s.root);
    let here = std::env::current_dir().ok();
    let same = |a: &Path, b: &Path| std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok();
    let path = match workflow.strip_prefix(root) {
        Ok(relative) if here.as_deref().is_some_and(|h| same(h, root)) => relative.to_path_buf(),
        _ if workflow.is_relative() => root.join(workflow),
        _ => workflow.to_path_buf(),
    };
    Some(format!("mcc run {}", crate::text::quoted(&path.display().to_string())))
}

/// Whether the worker's chat is alive, as its line ends: present, gone
/// (since when, and when its task goes back), or lease only (docs/worker.md, "Presence").
fn presence_of(w: &crate::wire::WorkerView) -> String {
    use crate::wire::Presence;
    let took = |ms: u64| crate::text::duration(Duration::from_millis(ms));
    match &w.presence {
        None | Some(Presence::Other(_)) => String::new(),
        Some(Presence::Present) => match w.presences {
            Some(n) if n > 1 => format!(", present ({n} connections)"),
            _ => ", present".to_owned(),
        },
        Some(Presence::Gone) => {
            let since = w.gone_ms_ago.map(|ms| format!(" {} ago", took(ms))).unwrap_or_default();
            match (w.returns_in_ms, &w.holding) {
                (Some(ms), Some(task)) => format!(", chat gone{since}: {task} goes back to the queue in {}", took(ms)),
                _ => format!(", chat gone{since}"),
            }
        }
        Some(Presence::LeaseOnly) => ", lease only".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WorkerView;

    fn task(id: &str, state: &str) -> TaskSummary {
        TaskSummary { id: id.into(), state: state.into(), ..TaskSummary::default() }
    }

    #[test]
    fn a_delta_folded_in_moves_tasks_between_in_flight_and_questions_and_keeps_the_rest() {
        let mut summary = Summary { log: vec!["kept".into()], ..Summary::default() };
        let delta = Delta {
            counts: [("assigned".to_owned(), 1)].into(),
            tasks: vec![task("a", "assigned"), task("b", "blocked")],
            workers: vec![WorkerView { name: "w1".into(), holding: Some("a".into()), ..WorkerView::default() }],
            phase_order: Some(vec!["draft".into()]),
            ..Delta::default()
        };
        fold(&mut summary, &delta);
        assert_eq!((summary.in_flight.len(), summary.questions.len(), summary.count("assigned")), (1, 1, 1));
        assert_eq!(
            (summary.log.as_slice(), summary.phase_order.as_slice()),
            (&["kept".to_owned()][..], &["draft".to_owned()][..])
        );
        let delta = Delta {
            tasks: vec![task("a", "submitted"), task("b", "ready")],
            workers: vec![WorkerView { name: "w1".into(), ..WorkerView::default() }],
            ..Delta::default()
        };
        fold(&mut summary, &delta);
        assert_eq!(summary.in_flight[0].state, "submitted", "still in flight, in its latest form");
        assert!(summary.questions.is_empty(), "answered: no longer a question");
        assert_eq!(
            (summary.workers.len(), summary.workers[0].holding.as_deref()),
            (1, None),
            "a worker replaced, not added"
        );
        assert_eq!(summary.phase_order, ["draft"], "a delta without the order keeps it");
    }

    #[test]
    fn status_json_is_the_summary_then_the_first_page_then_the_live_page() {
        let keys = |status: &Status| {
            let value: serde_json::Value = serde_json::from_str(&status.json()).unwrap();
            value.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
        };
        let page = Page { tasks: vec![task("a", "ready")], total: 1, ..Page::default() };
        let hub = |tasks| Status::Hub { summary: Box::default(), url: "ws://x".into(), page_url: None, tasks };
        let summary_keys: Vec<String> = keys(&hub(None)).into_iter().take_while(|k| k != "pageUrl").collect();
        assert_eq!(summary_keys.first().map(String::as_str), Some("root"));
        assert_eq!(keys(&hub(Some(page)))[summary_keys.len()..], ["tasks", "nextAfter", "pageUrl"]);
        assert_eq!(keys(&hub(None))[summary_keys.len()..], ["pageUrl"], "no page: the summary alone");
    }
}
