//! Driving a hub's queue from the bench: loading tasks in frames it accepts,
//! workers that drain it with `next`/`done` on persistent connections, and
//! the figures and table the benches print.

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Hub, Socket, ask, connect, percentile, wire};

/// The largest `add_tasks` message, well under the hub's 1 MiB frame limit.
pub const TASKS_PER_FRAME: usize = 1000;

/// Add tasks in frames the hub accepts; returns the time it took.
pub fn add_tasks(ws: &mut Socket, tasks: &[Value]) -> Duration {
    let start = Instant::now();
    for chunk in tasks.chunks(TASKS_PER_FRAME) {
        let reply = ask(ws, &wire::add_tasks(chunk));
        assert_eq!(reply["type"], "tasks_added", "{reply}");
    }
    start.elapsed()
}

/// Drain with mcc `next`/`done`; returns each handoff (done sent -> next task).
pub fn mcc_worker(url: &str, name: &str) -> Vec<Duration> {
    let mut ws = connect(url);
    let mut handoffs = Vec::new();
    let mut current = wire::offered(&ask(&mut ws, &wire::next(name, 0)));
    while let Some(task) = current {
        let start = Instant::now();
        current = wire::offered(&ask(&mut ws, &wire::done(name, &task, 0)));
        if current.is_some() {
            handoffs.push(start.elapsed());
        }
    }
    handoffs
}

/// What a drain of the hub's ready tasks by mcc workers measured.
pub struct Drained {
    pub tasks: usize,
    pub tasks_per_s: f64,
    /// Each `done` sent -> the verdict with the worker's next task.
    pub handoffs: Vec<Duration>,
    /// The hub's CPU per task, in all and by thread.
    pub cpu: String,
}

/// `workers` mcc workers (`w0`, `w1` ...) draining what is ready, each on its
/// own connection, from their first `next` until none is handed a task.
pub fn drain(hub: &Hub, workers: usize) -> Drained {
    let cpu_before = hub.cpu_by_thread();
    let start = Instant::now();
    let handles: Vec<JoinHandle<Vec<Duration>>> = (0..workers)
        .map(|k| {
            let url = hub.url.clone();
            std::thread::spawn(move || mcc_worker(&url, &format!("w{k}")))
        })
        .collect();
    let handoffs: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().expect("a bench worker")).collect();
    let took = start.elapsed();
    // Each worker's last `done` hands out nothing: no handoff for it.
    let tasks = handoffs.len() + workers;
    Drained {
        tasks,
        tasks_per_s: tasks as f64 / took.as_secs_f64(),
        handoffs,
        cpu: cpu_per_task(&cpu_before, &hub.cpu_by_thread(), tasks),
    }
}

/// Hub CPU per task between two readings, in all and by thread: it stays
/// comparable on a shared machine where tasks/s does not.
pub fn cpu_per_task(before: &BTreeMap<String, Duration>, after: &BTreeMap<String, Duration>, tasks: usize) -> String {
    let per_task = |d: Duration| d.as_secs_f64() * 1e6 / tasks as f64;
    let used: Vec<(String, f64)> = after
        .iter()
        .map(|(name, t)| (name.clone(), per_task(t.saturating_sub(before.get(name).copied().unwrap_or_default()))))
        .filter(|(_, us)| *us > 0.0)
        .collect();
    let total: f64 = used.iter().map(|(_, us)| us).sum();
    let parts: Vec<String> = used.iter().map(|(name, us)| format!("{name} {us:.0}")).collect();
    format!("{total:.0} µs ({})", parts.join(", "))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "median X ms, p99 Y ms (n)".
pub fn spread(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:.2} ms, p99 {:.2} ms ({} runs)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        times.len()
    )
}

/// The result table, printed as it fills and again at the end.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        println!("  {what:<58} {value}");
        self.rows.push((what, value));
    }

    pub fn print(&self) {
        println!("\n| measure | value |\n| --- | --- |");
        for (what, value) in &self.rows {
            println!("| {what} | {value} |");
        }
    }
}
