//! What a run's event log measures, and how it is drawn: the figures of
//! `mcc report` (as text, or one HTML page with a timeline) and the recent
//! timeline the live page shows. Everything is read from `.mcc/state.db`,
//! with or without a running hub.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::event::EventKind;
use crate::scheduler::{Task, TaskState};
use crate::store::{Store, StoredEvent};

/// One grant of a task to a worker, from `assigned` to what ended it.
struct Attempt {
    task: String,
    number: u32,
    worker: String,
    from_ms: i64,
    to_ms: Option<i64>,
    /// The last word on it; running while open.
    verdict: Verdict,
}

impl Attempt {
    /// The attempt as one bar of a timeline ([`timeline_svg`] reads it):
    /// `span` in ms, drawn from `origin`.
    fn bar(&self, origin: i64, span: (i64, i64), phase: Option<&str>) -> Value {
        json!({"task": self.task, "attempt": self.number, "worker": self.worker, "phase": phase,
               "fromMs": span.0 - origin, "toMs": span.1 - origin, "verdict": self.verdict.name()})
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
        EventKind::Expired => Step::Ends(Verdict::Expired),
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
    let store = Store::open_read_only(crate::layout::Layout::of_root(root).dir()).map_err(|e| e.to_string())?;
    let events = store.recent_events(RECENT_EVENTS).map_err(|e| e.to_string())?;
    Ok(recent_timeline(&events, RECENT_ATTEMPTS))
}

fn recent_timeline(events: &[StoredEvent], most: usize) -> String {
    let attempts = attempts_of(events);
    let left_out = attempts.len().saturating_sub(most);
    let drawn = &attempts[left_out..];
    let now_ms = events.last().map_or(0, |e| e.at_ms);
    let start = drawn.iter().map(|a| a.from_ms).min().unwrap_or(now_ms);
    let mut workers: BTreeMap<&str, usize> = BTreeMap::new();
    for a in drawn {
        *workers.entry(a.worker.as_str()).or_default() += 1;
    }
    let timeline: Vec<Value> =
        drawn.iter().map(|a| a.bar(start, (a.from_ms, a.to_ms.unwrap_or(now_ms)), None)).collect();
    let workers: Vec<Value> = workers.iter().map(|(name, n)| json!({"name": name, "attempts": n})).collect();
    let svg = timeline_svg(&json!({"timeline": timeline, "workers": workers}));
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

/// Everything measured from the store of the project at `root`: every
/// figure comes from the event log, and says in its `measuredFrom` how.
pub fn metrics(root: &Path) -> Result<Value, String> {
    let store = Store::open(crate::layout::Layout::of_root(root).dir()).map_err(|e| e.to_string())?;
    let (tasks, _) = store.load().map_err(|e| e.to_string())?;
    let events = store.events().map_err(|e| e.to_string())?;
    Ok(measure(&tasks, &events))
}

/// The figures of [`metrics`] from the tasks as they stand and the event log, oldest first.
fn measure(tasks: &[Task], events: &[StoredEvent]) -> Value {
    let phase_of: BTreeMap<&str, &str> = tasks.iter().map(|t| (t.spec.id.as_str(), t.phase().unwrap_or("-"))).collect();
    let attempts = attempts_of(events);
    let mut engineer: BTreeMap<&str, u64> = BTreeMap::new();
    let mut scores: Vec<u64> = Vec::new();
    let mut joined: BTreeSet<String> = attempts.iter().map(|a| a.worker.clone()).collect();
    let (mut rejections, mut expiries) = (0u64, 0u64);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for e in events {
        first = first.min(e.at_ms);
        last = last.max(e.at_ms);
        let task = e.task.as_deref().unwrap_or("");
        match &e.kind {
            EventKind::WorkerJoined => joined.extend(e.worker.clone()),
            EventKind::Rejected => rejections += 1,
            EventKind::Expired => expiries += 1,
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

    let mut phases: Vec<Value> = Vec::new();
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
        phases.push(json!({
            "name": name,
            "tasks": of_phase.len(),
            "accepted": accepted,
            "attempts": mine.len(),
            "seconds": covered(mine) as f64 / 1000.0,
            "spanSeconds": (to - from) as f64 / 1000.0,
        }));
    }
    let by_state: BTreeMap<&str, usize> = TaskState::ALL
        .iter()
        .map(|s| (s.name(), tasks.iter().filter(|t| t.state() == *s).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let accepted: Vec<&str> =
        tasks.iter().filter(|t| t.state() == TaskState::Accepted).map(|t| t.spec.id.as_str()).collect();
    let untouched = accepted.iter().filter(|id| !engineer.contains_key(*id)).count();
    let automation = (!accepted.is_empty()).then(|| untouched as f64 / accepted.len() as f64);
    let prompts: u64 = engineer.values().sum();
    let mean_score = (!scores.is_empty()).then(|| scores.iter().sum::<u64>() as f64 / scores.len() as f64);
    let workers_used: BTreeSet<&str> = attempts.iter().map(|a| a.worker.as_str()).collect();
    let workers: Vec<Value> = joined
        .iter()
        .map(|name| {
            let mine: Vec<(&Attempt, &(i64, i64))> =
                attempts.iter().zip(&spans).filter(|(a, _)| &a.worker == name).collect();
            json!({
                "name": name,
                "attempts": mine.len(),
                "accepted": mine.iter().filter(|(a, _)| a.verdict == Verdict::Accepted).count(),
                "rejections": mine.iter().filter(|(a, _)| a.verdict == Verdict::Rejected).count(),
                "busySeconds": mine.iter().map(|(_, (f, t))| t - f).sum::<i64>() as f64 / 1000.0,
            })
        })
        .collect();
    let timeline: Vec<Value> = attempts
        .iter()
        .zip(&spans)
        .map(|(a, span)| a.bar(first, *span, phase_of.get(a.task.as_str()).copied()))
        .collect();
    let per_task = |n: f64| (!tasks.is_empty()).then(|| n / tasks.len() as f64);
    json!({
        "tasks": tasks.len(),
        "byState": by_state,
        "attempts": attempts.len(),
        "attemptsPerTask": per_task(attempts.len() as f64),
        "rejections": rejections,
        "leaseExpiries": expiries,
        "seconds": span_ms as f64 / 1000.0,
        "phases": phases,
        "workers": workers,
        "workersUsed": workers_used.len(),
        "automationRate": automation,
        "accepted": accepted.len(),
        "acceptedWithoutEngineer": untouched,
        "engineerPrompts": prompts,
        "promptsPerTask": per_task(prompts as f64),
        "contextEfficiency": {"mean": mean_score, "min": scores.iter().min(), "reports": scores.len()},
        "serialSeconds": serial_ms as f64 / 1000.0,
        "parallelSeconds": parallel_ms as f64 / 1000.0,
        "parallelSpeedup": (parallel_ms > 0).then(|| serial_ms as f64 / parallel_ms as f64),
        "timeline": timeline,
        "measuredFrom": {
            "seconds": "first to last event in .mcc/state.db",
            "phases.seconds": "time with at least one attempt of the phase running (a stopped hub does not count)",
            "automationRate": "accepted tasks with no answer, retry or cancel by the engineer / accepted tasks",
            "engineerPrompts": "answers, retries and cancels by the engineer",
            "parallelSpeedup": "sum of attempt times (assigned to report), which one worker would need in a row / time with at least one attempt running",
            "busySeconds": "sum of the worker's attempt times, assigned to report",
            "contextEfficiency": "scores the workers reported",
        },
    })
}

fn plural(n: &Value, word: &str) -> String {
    let k = n.as_u64().unwrap_or(0);
    format!("{k} {word}{}", if k == 1 { "" } else { "s" })
}

/// The report as text: each figure with what it is measured from.
pub fn render(m: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut out = format!(
        "{} tasks, {} attempts, {} rejections, {} lease expiries; the event log spans {:.1}s\n",
        m["tasks"],
        m["attempts"],
        m["rejections"],
        m["leaseExpiries"],
        f(&m["seconds"])
    );
    if let Some(run) = m["runSeconds"].as_f64() {
        out.push_str(&format!("  this run took {run:.1}s\n"));
    }
    let states: Vec<String> = m["byState"].as_object().into_iter().flatten().map(|(k, v)| format!("{v} {k}")).collect();
    out.push_str(&format!("  tasks: {}\n", if states.is_empty() { "none yet".to_owned() } else { states.join(", ") }));
    for p in m["phases"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  phase {:<14} {}/{} accepted, {} in {:.1}s of work (first grant to last report {:.1}s)\n",
            p["name"].as_str().unwrap_or("-"),
            p["accepted"],
            p["tasks"],
            plural(&p["attempts"], "attempt"),
            f(&p["seconds"]),
            f(&p["spanSeconds"])
        ));
    }
    for w in m["workers"].as_array().into_iter().flatten() {
        let busy = if w["attempts"] == 0 {
            "no attempt yet".to_owned()
        } else {
            format!("busy {:.1}s over {}", f(&w["busySeconds"]), plural(&w["attempts"], "attempt"))
        };
        out.push_str(&format!(
            "  worker {:<13} {} accepted, {} rejected, {busy}\n",
            w["name"].as_str().unwrap_or("-"),
            w["accepted"],
            w["rejections"],
        ));
    }
    let automation = match m["automationRate"].as_f64() {
        Some(rate) => format!(
            "{:.0}% (target 80% or more): {} of {} accepted tasks needed no engineer",
            rate * 100.0,
            m["acceptedWithoutEngineer"],
            m["accepted"]
        ),
        None => "n/a: no task accepted yet".to_owned(),
    };
    out.push_str(&format!("  automation rate {automation}\n"));
    out.push_str(&format!(
        "  engineer prompts {} ({} per task): answers, retries and cancels\n",
        m["engineerPrompts"],
        m["promptsPerTask"].as_f64().map_or_else(|| "n/a".to_owned(), |p| format!("{p:.2}"))
    ));
    if let Some(per) = m["attemptsPerTask"].as_f64() {
        out.push_str(&format!("  attempts per task {per:.2}\n"));
    }
    let context = &m["contextEfficiency"];
    if context["reports"].as_u64().unwrap_or(0) == 0 {
        out.push_str("  context efficiency n/a: no worker reported a score\n");
    } else {
        out.push_str(&format!(
            "  context efficiency mean {:.1} min {} over {} recorded scores (target 4 or more)\n",
            f(&context["mean"]),
            context["min"],
            context["reports"]
        ));
    }
    let used = m["workersUsed"].as_u64().unwrap_or(0);
    match m["parallelSpeedup"].as_f64() {
        None => out.push_str("  parallel speedup n/a: no attempt was timed\n"),
        Some(x) => {
            let target = if used > 1 { " (target 2-3x)" } else { " (one worker: nothing ran in parallel)" };
            out.push_str(&format!(
                "  parallel speedup {x:.1}x{target}: {:.1}s of attempts done in {:.1}s by {used} worker{}\n",
                f(&m["serialSeconds"]),
                f(&m["parallelSeconds"]),
                if used == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report as one HTML page: no script, no stylesheet or font fetched
/// from anywhere, so it opens offline and can be mailed or archived.
pub fn html(m: &Value) -> String {
    let text = render(m);
    let svg = timeline_svg(m);
    let legend = legend_html();
    let mut measured = String::new();
    for (k, v) in m["measuredFrom"].as_object().into_iter().flatten() {
        let _ = write!(measured, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v.as_str().unwrap_or("")));
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mcc report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #182026; }}
pre {{ background: #f5f8fa; padding: 1em; }}
{TIMELINE_CSS}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 2px 10px 2px 0; vertical-align: top; }}
</style>
</head>
<body>
<h1>mcc report</h1>
<h2>Timeline</h2>
<p>One row per worker, one bar per attempt from its grant to its report, coloured by how it ended.</p>
<p class="legend">{legend}</p>
{svg}
<h2>Metrics</h2>
<pre id="metrics">{}</pre>
<h2>How each figure is measured</h2>
<table>{measured}</table>
</body>
</html>
"#,
        escape(&text)
    )
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

/// The timeline of [`metrics`]: one row per worker, one bar per attempt,
/// coloured by verdict, as one inline SVG (the report and the live page).
pub fn timeline_svg(m: &Value) -> String {
    let timeline = m["timeline"].as_array().cloned().unwrap_or_default();
    let workers: Vec<String> = m["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["attempts"].as_u64().unwrap_or(0) > 0)
        .filter_map(|w| w["name"].as_str().map(str::to_owned))
        .collect();
    let end_ms = timeline.iter().filter_map(|a| a["toMs"].as_i64()).max().unwrap_or(0).max(1);
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
        let mut bars: Vec<&Value> = timeline.iter().filter(|a| a["worker"].as_str() == Some(name)).collect();
        bars.sort_by_key(|a| a["fromMs"].as_i64().unwrap_or(0));
        let mut last_end = label;
        for (k, a) in bars.iter().enumerate() {
            let from = a["fromMs"].as_i64().unwrap_or(0) as f64;
            let to = a["toMs"].as_i64().unwrap_or(0) as f64;
            let verdict = a["verdict"].as_str().unwrap_or("running");
            let colour = Verdict::ALL.iter().find(|v| v.name() == verdict).map_or("#999", |v| v.colour());
            let task = a["task"].as_str().unwrap_or("?");
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
                a["attempt"],
                escape(name),
                (to - from) / 1000.0
            ));
            // The task's name inside its bar, else beside it where there is
            // room (after it up to the next bar, or before it back to the
            // last), cut to fit.
            let chars = task.chars().count() as f64;
            let next =
                bars.get(k + 1).map_or(label + width, |n| label + n["fromMs"].as_i64().unwrap_or(0) as f64 * scale);
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
        let m = measure(&[], &events);
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
        let m = measure(&[], &events);
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
