//! `mcc status`: what the hub is doing, in a few lines (or `--json`).

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::exit;
use crate::client::{self, Connection};
use crate::hub::protocol::{ClientMsg, ServerMsg};

/// Show the hub, workflow, task counts, workers, blocked and stuck tasks.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc status\n  mcc status --watch\n  mcc status --json | jq .counts\n\nExit codes: 0 printed, 1 no hub reachable (the message says what to run)."
)]
pub struct StatusArgs {
    /// Redraw every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Print the hub's snapshot object as JSON.
    #[arg(long)]
    pub json: bool,
    /// Hub address (default: found through the nearest .mcc/hub.json).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
}

/// Send one message on one short connection and return the answer; a hub
/// `error` becomes `Err` with its text.
pub(super) fn ask(hub: Option<&str>, msg: &ClientMsg) -> Result<ServerMsg, String> {
    exchange(hub, msg).map(|(_, answer)| answer)
}

/// [`ask`], also returning the hub's URL.
fn exchange(hub: Option<&str>, msg: &ClientMsg) -> Result<(String, ServerMsg), String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current folder: {e}"))?;
    let target = client::locate(hub, &cwd).map_err(|e| e.to_string())?;
    let mut conn = Connection::open(&target).map_err(|e| e.to_string())?;
    let answer = conn.request(msg, Duration::from_secs(30)).map_err(|e| e.to_string())?;
    conn.close();
    match answer {
        ServerMsg::Error { error, .. } => Err(error),
        other => Ok((target.url, other)),
    }
}

/// The hub's snapshot plus its URL.
fn snapshot(hub: Option<&str>) -> Result<(String, Value), String> {
    match exchange(hub, &ClientMsg::Snapshot {})? {
        (url, ServerMsg::Snapshot { snapshot }) => Ok((url, snapshot)),
        (_, other) => Err(format!("the hub answered {} to `snapshot`", other.to_json())),
    }
}

pub fn run(args: &StatusArgs) -> u8 {
    let tty = std::io::stdout().is_terminal();
    loop {
        match snapshot(args.hub.as_deref()) {
            Ok((url, snap)) => {
                let text = if args.json {
                    let mut snap = snap;
                    if let Some(map) = snap.as_object_mut() {
                        map.insert("url".into(), Value::String(url));
                    }
                    serde_json::to_string_pretty(&snap).expect("a snapshot serializes")
                } else {
                    render(&url, &snap)
                };
                if args.watch && tty {
                    print!("\x1b[2J\x1b[H");
                }
                println!("{text}");
            }
            Err(e) => {
                eprintln!("mcc status: {e}");
                if !args.watch {
                    return exit::ERROR;
                }
            }
        }
        if !args.watch {
            return exit::OK;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn ms(v: &Value) -> Option<String> {
    v.as_u64().map(|ms| {
        let s = ms / 1000;
        if s >= 3600 {
            format!("{}h{:02}m", s / 3600, s % 3600 / 60)
        } else if s >= 60 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{s}s")
        }
    })
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// The compact text form of a snapshot.
pub fn render(url: &str, snap: &Value) -> String {
    let mut out = Vec::new();
    out.push(format!("hub {url}  root {}", text(&snap["root"])));
    let workflow = snap["workflow"].as_str().unwrap_or("none (default policy)");
    let finished = if snap["finished"].as_bool() == Some(true) { "finished" } else { "running" };
    out.push(format!("workflow {workflow}: {finished}"));
    if let Some(counts) = snap["counts"].as_object() {
        let parts: Vec<String> =
            counts.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0).map(|(s, n)| format!("{s} {n}")).collect();
        out.push(format!("tasks: {}", if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }));
    }
    let workers = snap["workers"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !workers.is_empty() {
        out.push("workers:".into());
    }
    for w in workers {
        let holding = match w["holding"].as_str() {
            Some(t) => format!("holding {t} (lease left {})", ms(&w["leaseLeftMs"]).unwrap_or_else(|| "-".into())),
            None if w["waiting"].as_bool() == Some(true) => "waiting for work".into(),
            None => "idle".into(),
        };
        let score = w["score"].as_u64().map_or_else(|| "-".into(), |s| s.to_string());
        let seen = ms(&w["lastSeenMsAgo"]).map_or_else(|| "never".into(), |s| format!("{s} ago"));
        let hand_over = if w["handOver"].as_bool() == Some(true) { ", HAND OVER" } else { "" };
        out.push(format!("  {}: {holding}, score {score}, seen {seen}{hand_over}", text(&w["name"])));
    }
    let tasks = snap["tasks"].as_array().map(Vec::as_slice).unwrap_or_default();
    let blocked: Vec<&Value> = tasks.iter().filter(|t| t["state"] == "blocked").collect();
    if !blocked.is_empty() {
        out.push("blocked (answer to unblock):".into());
    }
    for t in blocked {
        let id = text(&t["id"]);
        out.push(format!("  {id}: {}", t["question"].as_str().unwrap_or("(no question)")));
        out.push(format!("    mcc answer {id} \"...\""));
    }
    let stuck = snap["stuck"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !stuck.is_empty() {
        out.push("stuck (a dependency failed; retry it or cancel):".into());
    }
    for s in stuck {
        let dep = text(&s["dependency"]);
        out.push(format!("  {} waits on failed {dep}: mcc tasks retry {dep}", text(&s["task"])));
    }
    let problems = snap["problems"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !problems.is_empty() {
        out.push("problems:".into());
    }
    for p in problems {
        out.push(format!("  {}", text(p)));
    }
    out.join("\n")
}
