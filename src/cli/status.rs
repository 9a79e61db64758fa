//! `mcc status`: what the hub holds, for a person or a model. One exchange
//! (`subscribe`: a summary whose cost does not grow with the queue, then a
//! page of tasks for `--json`); `--watch` keeps the subscription open and
//! redraws on every change the hub pushes.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use clap::Args;

use super::exit;
use crate::client::{self, ClientError, Connection};
use crate::engine::views::{Delta, Page, Snapshot, Summary};
use crate::scheduler::TaskState;
use crate::wire::{ClientMsg, ServerMsg, SubscriptionView};

/// Show tasks by state, workers and what each holds, questions waiting for you, problems.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc status\n  mcc status --watch\n  mcc status --json | jq .counts\n\nExit codes: 0 shown; 1 no hub (the message says how to start one)."
)]
pub struct StatusArgs {
    /// Redraw whenever the hub reports a change, until Ctrl-C or the hub stops.
    #[arg(long)]
    pub watch: bool,
    /// Print the hub's summary and the first page of tasks as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Hub address (default: found through the nearest .mcc/).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
}

/// Status draws the tasks in flight, and `--watch` follows them as they move.
const SUBSCRIBE: ClientMsg = ClientMsg::Subscribe { view: SubscriptionView::Full };
/// Tasks `--json` lists; `mcc tasks list` pages through the rest.
const JSON_PAGE: usize = 50;
/// The fastest a watching terminal is redrawn: changes in between are folded in.
const REDRAW: Duration = Duration::from_millis(250);

pub fn run(args: StatusArgs) -> u8 {
    if args.watch {
        return watch(&args);
    }
    // The hub answers at once: each request has the client's deadline alone.
    let limit = Duration::ZERO;
    let (summary, url, page) = match client::ask_here(args.hub.as_deref(), &SUBSCRIBE, limit) {
        Ok((ServerMsg::Summary { summary }, target)) => match Summary::from_wire(&summary) {
            Ok(s) => (s, target.url, target.root.as_deref().and_then(crate::hub::page::url_of)),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        },
        Ok((other, _)) => {
            eprintln!("error: unexpected answer from the hub: {}", other.to_json());
            return exit::ERROR;
        }
        // A hub that holds the project but does not answer is not "no hub running".
        Err(e @ ClientError::Timeout { .. }) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
        Err(e) => {
            // No hub: the store still says what happened, read-only.
            let Some(snapshot) = stored() else {
                eprintln!("error: {e}");
                return exit::ERROR;
            };
            if args.json {
                println!("{}", snapshot.to_wire());
            } else {
                print!("{}", render(&summary_of(&snapshot), "(no hub running; read from .mcc/state.db)"));
            }
            return exit::OK;
        }
    };
    if args.json {
        let mut value = serde_json::to_value(&summary).expect("serializes");
        let page = ClientMsg::TasksPage { state: None, limit: Some(JSON_PAGE), after: None };
        if let Ok((ServerMsg::TasksPage { page }, _)) = client::ask_once(args.hub.as_deref(), &page, limit)
            && let Ok(page) = Page::from_wire(&page)
        {
            value["tasks"] = serde_json::to_value(&page.tasks).expect("serializes");
            value["nextAfter"] = serde_json::json!(page.next_after);
        }
        value["pageUrl"] = serde_json::json!(page);
        println!("{value}");
    } else {
        print!("{}", render(&summary, &url));
        if let Some(page) = page {
            println!("live page (read-only): {page}");
        }
    }
    exit::OK
}

/// Subscribe and redraw on every pushed change until the hub stops.
fn watch(args: &StatusArgs) -> u8 {
    let tty = std::io::stdout().is_terminal();
    let opened = std::env::current_dir()
        .map_err(|e| e.to_string())
        .and_then(|cwd| client::locate(args.hub.as_deref(), &cwd).map_err(|e| e.to_string()))
        .and_then(|target| Connection::open(&target).map_err(|e| e.to_string()).map(|c| (c, target.url)));
    let (mut conn, url) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let mut summary = match conn.request(&SUBSCRIBE, client::timeout()) {
        Ok(ServerMsg::Summary { summary }) => match Summary::from_wire(&summary) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        },
        Ok(other) => {
            eprintln!("error: unexpected answer from the hub: {}", other.to_json());
            return exit::ERROR;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let mut shown = String::new();
    let mut changed = true;
    let mut next_draw = Instant::now();
    loop {
        if changed && Instant::now() >= next_draw {
            let text = if args.json {
                format!("{}\n", serde_json::to_value(&summary).expect("serializes"))
            } else {
                render(&summary, &url)
            };
            // Not a terminal: print only when something shown changed.
            if text != shown {
                if tty && !args.json {
                    print!("\x1b[H\x1b[2J");
                }
                print!("{text}");
                let _ = std::io::stdout().flush();
                shown = text;
            }
            changed = false;
            next_draw = Instant::now() + REDRAW;
        }
        // Wait for a change, or until a folded-in change is due to be drawn.
        let wait = if changed { next_draw.saturating_duration_since(Instant::now()) } else { Duration::from_hours(1) };
        match conn.receive(wait.max(Duration::from_millis(1))) {
            Ok(ServerMsg::Delta { delta }) => match Delta::from_wire(&delta) {
                Ok(d) => {
                    summary.apply(&d);
                    changed = true;
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::ERROR;
                }
            },
            Ok(_) | Err(ClientError::Timeout { .. }) => {}
            Err(ClientError::Shutdown(message)) => {
                println!("the hub stopped: {message}");
                return exit::OK;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        }
    }
}

/// The snapshot stored under the nearest `.mcc/`, when no hub answers.
pub fn stored() -> Option<Snapshot> {
    let cwd = std::env::current_dir().ok()?;
    crate::engine::views::stored_snapshot(&client::find_root(&cwd)?)
}

/// A stored snapshot as a summary, to be shown the same way.
fn summary_of(s: &Snapshot) -> Summary {
    Summary {
        root: s.root.clone(),
        workflow: s.workflow.clone(),
        finished: s.finished,
        counts: s.counts.clone(),
        questions: s.tasks.iter().filter(|t| t.state == TaskState::Blocked.name()).cloned().collect(),
        stuck: s.stuck.clone(),
        problems: s.problems.clone(),
        log: s.log.clone(),
        ..Summary::default()
    }
}

/// The status text of one summary.
pub fn render(s: &Summary, url: &str) -> String {
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
            _ if w.waiting => match &w.waiting_on {
                Some(why) => format!("waiting for work: {why}"),
                None => "waiting for work".to_owned(),
            },
            _ => "idle".to_owned(),
        };
        let score = w.score.map(|n| format!(", score {n}")).unwrap_or_default();
        let hand_over = if w.hand_over { ", told to hand over" } else { "" };
        let seen = w.last_seen_ms_ago.map(|ms| format!(", seen {}s ago", ms / 1000)).unwrap_or_default();
        line(format!("worker {}: {holding}, {} accepted{score}{seen}{hand_over}", w.name, w.accepted));
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
