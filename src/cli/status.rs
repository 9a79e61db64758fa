//! `mcc status`: what the hub holds, for a person or a model.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::exit;
use crate::client;
use crate::scheduler::TaskState;
use crate::wire::{ClientMsg, ServerMsg};

/// Show tasks by state, workers and what each holds, questions waiting for you, problems.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc status\n  mcc status --watch\n  mcc status --json | jq .counts\n\nExit codes: 0 shown; 1 no hub (the message says how to start one)."
)]
pub struct StatusArgs {
    /// Redraw every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Print the hub's snapshot as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Hub address (default: found through the nearest .mcc/).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
}

pub fn run(args: StatusArgs) -> u8 {
    let tty = std::io::stdout().is_terminal();
    loop {
        let snapshot = match client::ask_once(args.hub.as_deref(), &ClientMsg::Snapshot {}, Duration::from_secs(10)) {
            Ok((ServerMsg::Snapshot { snapshot }, target)) => (snapshot, target.url),
            Ok((other, _)) => {
                eprintln!("error: unexpected answer from the hub: {}", other.to_json());
                return exit::ERROR;
            }
            Err(e) => {
                // No hub: the store still says what happened, read-only.
                let Some(snapshot) = stored() else {
                    eprintln!("error: {e}");
                    return exit::ERROR;
                };
                (snapshot, "(no hub running; read from .mcc/state.db)".to_owned())
            }
        };
        if args.json {
            println!("{}", snapshot.0);
        } else {
            if args.watch && tty {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", render(&snapshot.0, &snapshot.1));
        }
        if !args.watch {
            return exit::OK;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The snapshot stored under the nearest `.mcc/`, when no hub answers.
pub fn stored() -> Option<Value> {
    let cwd = std::env::current_dir().ok()?;
    crate::engine::views::stored_snapshot(&client::find_root(&cwd)?)
}

/// The status text of one snapshot.
pub fn render(s: &Value, url: &str) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    let workflow = s["workflow"].as_str().unwrap_or("none");
    let state = if s["finished"] == true { "finished" } else { "running" };
    line(format!("hub {url} · {} · workflow {workflow} ({state})", s["root"].as_str().unwrap_or("")));
    let counts: Vec<String> = TaskState::ALL
        .iter()
        .filter_map(|st| {
            let n = s["counts"][st.name()].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", st.name()))
        })
        .collect();
    line(format!("tasks: {}", if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }));
    for w in s["workers"].as_array().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or("?");
        let holding = match (w["holding"].as_str(), w["leaseLeftMs"].as_u64()) {
            (Some(t), Some(ms)) => format!("on {t} (lease {}s left)", ms / 1000),
            (Some(t), None) => format!("on {t}"),
            _ if w["waiting"] == true => "waiting for work".to_owned(),
            _ => "idle".to_owned(),
        };
        let score = w["score"].as_u64().map(|n| format!(", score {n}")).unwrap_or_default();
        let hand_over = if w["handOver"] == true { ", told to hand over" } else { "" };
        let seen = w["lastSeenMsAgo"].as_u64().map(|ms| format!(", seen {}s ago", ms / 1000)).unwrap_or_default();
        line(format!("worker {name}: {holding}, {} accepted{score}{seen}{hand_over}", w["accepted"]));
    }
    for t in s["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "blocked") {
        let id = t["id"].as_str().unwrap_or("?");
        line(format!("question on {id}: {}", t["question"].as_str().unwrap_or("")));
        line(format!("  answer: mcc answer {id} \"...\""));
    }
    for st in s["stuck"].as_array().into_iter().flatten() {
        let dep = st["dependency"].as_str().unwrap_or("?");
        line(format!(
            "stuck: {} waits on {dep}, which failed; `mcc tasks retry {dep}` to try again",
            st["task"].as_str().unwrap_or("?")
        ));
    }
    for p in s["problems"].as_array().into_iter().flatten() {
        line(format!("problem: {}", p.as_str().unwrap_or("")));
    }
    // The workflow's own `ctx.log` lines, the last few.
    let log = s["log"].as_array().map(Vec::as_slice).unwrap_or_default();
    for l in &log[log.len().saturating_sub(5)..] {
        line(format!("log: {}", l.as_str().unwrap_or("")));
    }
    out
}
