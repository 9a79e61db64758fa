//! `mcc status`: what the hub holds, for a person or a model.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::exit;
use crate::client;
use crate::engine::views::Snapshot;
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
        let (snapshot, url) =
            match client::ask_once(args.hub.as_deref(), &ClientMsg::Snapshot {}, Duration::from_secs(10)) {
                Ok((ServerMsg::Snapshot { snapshot }, target)) => match Snapshot::from_wire(&snapshot) {
                    Ok(s) => (s, target.url),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return exit::ERROR;
                    }
                },
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
            println!("{}", snapshot.to_wire());
        } else {
            if args.watch && tty {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", render(&snapshot, &url));
        }
        if !args.watch {
            return exit::OK;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The snapshot stored under the nearest `.mcc/`, when no hub answers.
pub fn stored() -> Option<Snapshot> {
    let cwd = std::env::current_dir().ok()?;
    crate::engine::views::stored_snapshot(&client::find_root(&cwd)?)
}

/// The status text of one snapshot.
pub fn render(s: &Snapshot, url: &str) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    let workflow = s.workflow.as_deref().unwrap_or("none");
    let state = if s.finished { "finished" } else { "running" };
    line(format!("hub {url} · {} · workflow {workflow} ({state})", s.root));
    let counts: Vec<String> = TaskState::ALL
        .iter()
        .filter_map(|st| {
            let n = s.count(*st);
            (n > 0).then(|| format!("{n} {}", st.name()))
        })
        .collect();
    line(format!("tasks: {}", if counts.is_empty() { "none".to_owned() } else { counts.join(", ") }));
    for w in &s.workers {
        let holding = match (&w.holding, w.lease_left_ms) {
            (Some(t), Some(ms)) => format!("on {t} (lease {}s left)", ms / 1000),
            (Some(t), None) => format!("on {t}"),
            _ if w.waiting => "waiting for work".to_owned(),
            _ => "idle".to_owned(),
        };
        let score = w.score.map(|n| format!(", score {n}")).unwrap_or_default();
        let hand_over = if w.hand_over { ", told to hand over" } else { "" };
        let seen = w.last_seen_ms_ago.map(|ms| format!(", seen {}s ago", ms / 1000)).unwrap_or_default();
        line(format!("worker {}: {holding}, {} accepted{score}{seen}{hand_over}", w.name, w.accepted));
    }
    for t in s.tasks.iter().filter(|t| t.state == "blocked") {
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
