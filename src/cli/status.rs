//! `mcc status`: what the hub holds, for a person or a model. A printer of
//! [`crate::client::status`], which fetches the views (`subscribe`: a
//! summary whose cost does not grow with the queue, then a page of tasks for
//! `--json`) and renders them; `--watch` keeps the subscription open and
//! redraws on every change the hub pushes.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use clap::Args;

use super::exit;
use crate::client::status::{SUBSCRIBE, fold, render};
use crate::client::{self, ClientError, Connection};
use crate::wire::{Delta, ServerMsg};

/// Show tasks by state, workers and what each holds, questions waiting for you, problems.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc status\n  mcc status --watch\n  mcc status --json | jq .counts\n\nWithout a hub it shows what the store holds, \"(stopped)\" with the command that resumes the run.\nIn a sandbox without network it asks the hub through files in .mcc/.\n\nExit codes: 0 shown; 1 no hub and no store here, or the hub did not answer (the message says what to do)."
)]
pub struct StatusArgs {
    /// Redraw whenever the hub reports a change, until Ctrl-C or the hub stops.
    #[arg(long)]
    pub watch: bool,
    /// Print the hub's summary and the first page of tasks as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Hub address, such as `ws://127.0.0.1:3100`; several separated by commas are tried in turn (a hub with a standby). Default: found through the nearest .mcc/.
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
}

/// The fastest a watching terminal is redrawn: changes in between are folded in.
const REDRAW: Duration = Duration::from_millis(250);

pub fn run(args: StatusArgs, options: client::Options) -> u8 {
    if args.watch {
        return watch(&args, options);
    }
    match client::status::fetch(args.hub.as_deref(), options, args.json, crate::hub::page::url_of) {
        Ok(status) => {
            if args.json {
                println!("{}", status.json());
            } else {
                print!("{}", status.text());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// Subscribe and redraw on every pushed change until the hub stops.
fn watch(args: &StatusArgs, options: client::Options) -> u8 {
    let tty = std::io::stdout().is_terminal();
    let opened = std::env::current_dir()
        .map_err(|e| e.to_string())
        .and_then(|cwd| client::locate(args.hub.as_deref(), &cwd, options).map_err(|e| e.to_string()))
        .and_then(|target| Connection::open(&target).map_err(|e| e.to_string()))
        .map(|c| {
            let url = c.url().to_owned();
            (c, url)
        });
    let (mut conn, url) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let mut summary = match conn.request(&SUBSCRIBE, conn.timeout()) {
        Ok(ServerMsg::Summary { summary }) => summary,
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
                format!("{}\n", serde_json::to_string(&*summary).unwrap_or_default())
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
                    fold(&mut summary, &d);
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
