//! `mcc report`: metrics from the durable event log in `.mcc/state.db`,
//! with or without a running hub.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::exit;
use crate::client::find_root;
use crate::store::{Store, StoredEvent};

/// Show what a run achieved: tasks, attempts, rejections, timing, and the targets.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc report\n  mcc report --json | jq .automationRate\n\nWorks with or without a running hub (reads .mcc/state.db).\nExit codes: 0 printed, 1 no .mcc/state.db found."
)]
pub struct ReportArgs {
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Project root (default: the nearest folder above holding .mcc/).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Events that end a worker's hold on a task.
const HOLD_ENDS: &[&str] = &["submitted", "blocked", "released", "expired", "cancelled", "failed"];
/// Events that mean the engineer had to step in.
const ENGINEER: &[&str] = &["blocked", "answered", "retried", "cancelled"];

fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() { None } else { Some(values.iter().sum::<f64>() / values.len() as f64) }
}

#[derive(Default)]
struct WorkerStats {
    accepted: u64,
    times: Vec<f64>,
    rejections: u64,
}

/// Compute the metrics from the task states and the event log.
pub fn metrics(tasks: &[(String, String, Option<String>)], events: &[StoredEvent]) -> Value {
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, state, _) in tasks {
        *by_state.entry(state).or_default() += 1;
    }
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count() as u64;
    let touched: HashSet<&str> =
        events.iter().filter(|e| ENGINEER.contains(&e.kind.as_str())).filter_map(|e| e.task.as_deref()).collect();
    let automated = tasks.iter().filter(|(id, _, _)| !touched.contains(id.as_str())).count();
    let automation = if tasks.is_empty() { None } else { Some(automated as f64 / tasks.len() as f64) };

    let mut first_assigned: HashMap<&str, i64> = HashMap::new();
    let mut last_assigned: HashMap<&str, i64> = HashMap::new();
    let mut holding: HashMap<&str, i64> = HashMap::new();
    let mut busy_ms: i64 = 0;
    let (mut start, mut end): (Option<i64>, Option<i64>) = (None, None);
    let mut task_times: HashMap<&str, f64> = HashMap::new();
    let mut workers: BTreeMap<&str, WorkerStats> = BTreeMap::new();
    for e in events {
        let Some(task) = e.task.as_deref() else { continue };
        match e.kind.as_str() {
            "assigned" => {
                first_assigned.entry(task).or_insert(e.at_ms);
                last_assigned.insert(task, e.at_ms);
                holding.insert(task, e.at_ms);
                start = Some(start.map_or(e.at_ms, |s| s.min(e.at_ms)));
            }
            "accepted" => {
                if let Some(first) = first_assigned.get(task) {
                    task_times.insert(task, (e.at_ms - first) as f64 / 1000.0);
                }
                if let Some(worker) = e.worker.as_deref() {
                    let stats = workers.entry(worker).or_default();
                    stats.accepted += 1;
                    if let Some(last) = last_assigned.get(task) {
                        stats.times.push((e.at_ms - last) as f64 / 1000.0);
                    }
                }
                end = Some(end.map_or(e.at_ms, |x| x.max(e.at_ms)));
            }
            "rejected" => {
                if let Some(worker) = e.worker.as_deref() {
                    workers.entry(worker).or_default().rejections += 1;
                }
            }
            _ => {}
        }
        if HOLD_ENDS.contains(&e.kind.as_str())
            && let Some(from) = holding.remove(task)
        {
            busy_ms += e.at_ms - from;
            end = Some(end.map_or(e.at_ms, |x| x.max(e.at_ms)));
        }
    }
    let wall_s = match (start, end) {
        (Some(s), Some(e)) if e > s => Some((e - s) as f64 / 1000.0),
        _ => None,
    };
    let times: Vec<f64> = task_times.values().copied().collect();
    let scores: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "score")
        .filter_map(|e| e.detail.get("score").and_then(Value::as_f64))
        .collect();
    let accepted = by_state.get("accepted").copied().unwrap_or(0);
    let mut phases: BTreeMap<&str, (u64, u64, Vec<f64>)> = BTreeMap::new();
    for (id, state, phase) in tasks {
        let entry = phases.entry(phase.as_deref().unwrap_or("-")).or_default();
        entry.0 += 1;
        if state == "accepted" {
            entry.1 += 1;
        }
        if let Some(t) = task_times.get(id.as_str()) {
            entry.2.push(*t);
        }
    }
    let speedup = wall_s.filter(|w| *w > 0.0).map(|w| busy_ms as f64 / 1000.0 / w);
    json!({
        "tasks": tasks.len(),
        "byState": by_state,
        "attempts": count("assigned"),
        "rejections": count("rejected"),
        "leaseExpiries": count("expired"),
        "automationRate": automation,
        "meanTaskSeconds": mean(&times),
        "wallSeconds": wall_s,
        "throughputPerHour": wall_s.filter(|w| *w > 0.0).map(|w| accepted as f64 * 3600.0 / w),
        "workers": workers.iter().map(|(name, s)| (name.to_string(), json!({
            "accepted": s.accepted, "meanSeconds": mean(&s.times), "rejections": s.rejections,
        }))).collect::<serde_json::Map<_, _>>(),
        "phases": phases.iter().map(|(name, (n, ok, t))| (name.to_string(), json!({
            "tasks": n, "accepted": ok, "meanSeconds": mean(t),
        }))).collect::<serde_json::Map<_, _>>(),
        "targets": {
            "contextEfficiency": {"mean": mean(&scores), "min": scores.iter().copied().reduce(f64::min), "target": 4},
            "automationRate": {"value": automation, "target": 0.8},
            "parallelSpeedup": {"value": speedup, "busySeconds": busy_ms as f64 / 1000.0},
        },
    })
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{:.0}%", x * 100.0))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "no data",
    }
}

/// The metrics as a few lines of text.
pub fn render(m: &Value) -> String {
    let mut out = Vec::new();
    let states: Vec<String> =
        m["byState"].as_object().map(|s| s.iter().map(|(k, v)| format!("{k} {v}")).collect()).unwrap_or_default();
    out.push(format!("tasks {}: {}", m["tasks"], states.join(", ")));
    out.push(format!(
        "attempts {}, rejections {}, lease expiries {}",
        m["attempts"], m["rejections"], m["leaseExpiries"]
    ));
    out.push(format!(
        "time per task {}s (assigned to accepted), wall {}s, throughput {} tasks/h",
        num(&m["meanTaskSeconds"], 1),
        num(&m["wallSeconds"], 1),
        num(&m["throughputPerHour"], 1)
    ));
    if let Some(workers) = m["workers"].as_object().filter(|w| !w.is_empty()) {
        out.push("workers:".into());
        for (name, w) in workers {
            out.push(format!(
                "  {name}: accepted {}, mean {}s, rejections {}",
                w["accepted"],
                num(&w["meanSeconds"], 1),
                w["rejections"]
            ));
        }
    }
    if let Some(phases) = m["phases"].as_object().filter(|p| p.len() > 1 || !p.contains_key("-")) {
        out.push("phases:".into());
        for (name, p) in phases {
            out.push(format!(
                "  {name}: {} tasks, accepted {}, mean {}s",
                p["tasks"],
                p["accepted"],
                num(&p["meanSeconds"], 1)
            ));
        }
    }
    let t = &m["targets"];
    let ce = &t["contextEfficiency"];
    out.push("targets:".into());
    out.push(format!(
        "  context efficiency mean {} min {} (target >= 4): {}",
        num(&ce["mean"], 2),
        num(&ce["min"], 0),
        verdict(ce["mean"].as_f64().map(|x| x >= 4.0))
    ));
    out.push(format!(
        "  automation rate {} (target >= 80%): {}",
        pct(&t["automationRate"]["value"]),
        verdict(t["automationRate"]["value"].as_f64().map(|x| x >= 0.8))
    ));
    out.push(format!(
        "  parallel speedup {}x (busy {}s / wall {}s)",
        num(&t["parallelSpeedup"]["value"], 2),
        num(&t["parallelSpeedup"]["busySeconds"], 1),
        num(&m["wallSeconds"], 1)
    ));
    out.join("\n")
}

pub fn run(args: &ReportArgs) -> u8 {
    let root = match &args.dir {
        Some(dir) => Some(dir.clone()),
        None => std::env::current_dir().ok().and_then(|cwd| find_root(&cwd)),
    };
    let Some(root) = root else {
        eprintln!(
            "mcc report: no .mcc/ folder here or above: run it in a project started with `mcc run` or `mcc hub`, or pass --dir ROOT"
        );
        return exit::ERROR;
    };
    let dir = root.join(".mcc");
    if !dir.join("state.db").is_file() {
        eprintln!(
            "mcc report: no {} yet: start a run with `mcc run WORKFLOW.lua` or `mcc hub`",
            dir.join("state.db").display()
        );
        return exit::ERROR;
    }
    let data = Store::open_read_only(&dir).and_then(|store| Ok((store.task_states()?, store.events()?)));
    match data {
        Ok((tasks, events)) => {
            let m = metrics(&tasks, &events);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&m).expect("metrics serialize"));
            } else {
                println!("{}", render(&m));
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("mcc report: {e}");
            exit::ERROR
        }
    }
}
