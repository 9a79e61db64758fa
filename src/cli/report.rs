//! `mcc report`: metrics from the event log in `.mcc/state.db`, with or
//! without a running hub, beside the targets of the project mcc grew from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};

use super::exit;
use crate::scheduler::TaskState;
use crate::store::Store;

/// Attempts, rejections, automation rate, time per task, worker and phase.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc report\n\nExit codes: 0 shown; 1 no store here (run it in a project with .mcc/)."
)]
pub struct ReportArgs {
    /// Project root (default: the nearest folder with .mcc/).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ReportArgs) -> u8 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let Some(root) = args.dir.clone().or_else(|| crate::client::find_root(&cwd)) else {
        eprintln!("error: no .mcc/ here or above; run `mcc report` inside a project that ran `mcc run` or `mcc hub`");
        return exit::ERROR;
    };
    match metrics(&root) {
        Ok(m) if args.json => {
            println!("{m}");
            exit::OK
        }
        Ok(m) => {
            print!("{}", render(&m));
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// Everything measured from the store of the project at `root`.
pub fn metrics(root: &Path) -> Result<Value, String> {
    let store = Store::open(&root.join(".mcc")).map_err(|e| e.to_string())?;
    let (tasks, _) = store.load().map_err(|e| e.to_string())?;
    let events = store.events().map_err(|e| e.to_string())?;
    let phase_of: BTreeMap<&str, &str> =
        tasks.iter().map(|t| (t.spec.id.as_str(), t.phase.as_deref().unwrap_or("-"))).collect();
    let mut phase_span: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    // worker -> (accepted, rejections, busy ms)
    let mut workers: BTreeMap<String, (u64, u64, i64)> = BTreeMap::new();
    let mut assigned_at: BTreeMap<(String, u32), i64> = BTreeMap::new();
    let mut touched_by_engineer: BTreeSet<&str> = BTreeSet::new();
    let mut scores: Vec<u64> = Vec::new();
    let (mut attempts, mut rejections, mut expiries, mut busy) = (0u64, 0u64, 0u64, 0i64);
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for e in &events {
        first = first.min(e.at_ms);
        last = last.max(e.at_ms);
        let task = e.task.as_deref().unwrap_or("");
        if let Some(p) = phase_of.get(task).copied() {
            let span = phase_span.entry(p).or_insert((e.at_ms, e.at_ms));
            span.0 = span.0.min(e.at_ms);
            span.1 = span.1.max(e.at_ms);
        }
        let worker = e.worker.clone().unwrap_or_default();
        match e.kind.as_str() {
            "assigned" => {
                attempts += 1;
                assigned_at.insert((task.to_owned(), e.attempt.unwrap_or(0)), e.at_ms);
            }
            "submitted" => {
                if let Some(start) = assigned_at.get(&(task.to_owned(), e.attempt.unwrap_or(0))) {
                    busy += e.at_ms - start;
                    workers.entry(worker).or_default().2 += e.at_ms - start;
                }
            }
            "accepted" => workers.entry(worker).or_default().0 += 1,
            "rejected" => {
                rejections += 1;
                workers.entry(worker).or_default().1 += 1;
            }
            "expired" => expiries += 1,
            "blocked" | "answered" | "retried" | "cancelled" => {
                touched_by_engineer.insert(task);
            }
            "score" => scores.extend(e.detail["score"].as_u64()),
            _ => {}
        }
    }
    let mut phases: Vec<Value> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for t in &tasks {
        let name = t.phase.as_deref().unwrap_or("-");
        if seen.insert(name) {
            let (from, to) = phase_span.get(name).copied().unwrap_or((0, 0));
            let of_phase: Vec<_> = tasks.iter().filter(|x| x.phase.as_deref().unwrap_or("-") == name).collect();
            let accepted = of_phase.iter().filter(|x| x.state == TaskState::Accepted).count();
            phases.push(json!({"name": name, "tasks": of_phase.len(), "accepted": accepted, "seconds": (to - from) as f64 / 1000.0}));
        }
    }
    let by_state: BTreeMap<&str, usize> = TaskState::ALL
        .iter()
        .map(|s| (s.name(), tasks.iter().filter(|t| t.state == *s).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let wall_ms = if last > first { last - first } else { 0 };
    let automated = tasks.iter().filter(|t| !touched_by_engineer.contains(t.spec.id.as_str())).count();
    let automation = if tasks.is_empty() { None } else { Some(automated as f64 / tasks.len() as f64) };
    let mean_score = (!scores.is_empty()).then(|| scores.iter().sum::<u64>() as f64 / scores.len() as f64);
    Ok(json!({
        "tasks": tasks.len(),
        "byState": by_state,
        "attempts": attempts,
        "rejections": rejections,
        "leaseExpiries": expiries,
        "seconds": wall_ms as f64 / 1000.0,
        "phases": phases,
        "workers": workers.into_iter().map(|(name, (acc, rej, b))| json!({"name": name, "accepted": acc, "rejections": rej, "busySeconds": b as f64 / 1000.0})).collect::<Vec<_>>(),
        "automationRate": automation,
        "contextEfficiency": {"mean": mean_score, "min": scores.iter().min()},
        "parallelSpeedup": (wall_ms > 0).then(|| busy as f64 / wall_ms as f64),
    }))
}

/// The report as text.
pub fn render(m: &Value) -> String {
    let mut out = format!(
        "{} tasks, {} attempts, {} rejections, {} lease expiries, over {:.1}s\n",
        m["tasks"],
        m["attempts"],
        m["rejections"],
        m["leaseExpiries"],
        m["seconds"].as_f64().unwrap_or(0.0)
    );
    let states: Vec<String> = m["byState"].as_object().into_iter().flatten().map(|(k, v)| format!("{v} {k}")).collect();
    out.push_str(&format!("  tasks: {}\n", states.join(", ")));
    for p in m["phases"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  phase {:<14} {}/{} accepted in {:.1}s\n",
            p["name"].as_str().unwrap_or("-"),
            p["accepted"],
            p["tasks"],
            p["seconds"].as_f64().unwrap_or(0.0)
        ));
    }
    for w in m["workers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  worker {:<13} {} accepted, {} rejected, busy {:.1}s\n",
            w["name"].as_str().unwrap_or("-"),
            w["accepted"],
            w["rejections"],
            w["busySeconds"].as_f64().unwrap_or(0.0)
        ));
    }
    let pct = |v: &Value| v.as_f64().map_or_else(|| "n/a".to_owned(), |f| format!("{:.0}%", f * 100.0));
    let num = |v: &Value| v.as_f64().map_or_else(|| "n/a".to_owned(), |f| format!("{f:.1}"));
    out.push_str(&format!("  automation rate {} (target 80% or more)\n", pct(&m["automationRate"])));
    out.push_str(&format!(
        "  context efficiency mean {} min {} (target 4 or more)\n",
        num(&m["contextEfficiency"]["mean"]),
        num(&m["contextEfficiency"]["min"])
    ));
    out.push_str(&format!("  parallel speedup {}x (target 2-3x)\n", num(&m["parallelSpeedup"])));
    out
}
