//! `mcc budget`: what the run spent against its budgets, and `mcc budget
//! set` to change one while the run goes on (docs/workflows.md, "Budgets").

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::tasks::HubArg;
use crate::client::{self, exit};
use crate::wire::{ClientMsg, ServerMsg};

/// Show what the run spent and its budgets; `mcc budget set` changes one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BudgetArgs {
    #[command(subcommand)]
    pub cmd: Option<BudgetCmd>,
    #[command(flatten)]
    pub hub: HubArg,
}

#[derive(Debug, Subcommand)]
pub enum BudgetCmd {
    /// Raise (or lower) the run's budget, a phase's or a task's, while the run goes on.
    Set(SetArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc budget set --usd 40\n  mcc budget set --phase build --tokens 3000000\n  mcc budget set --task t7 --usd 2.50"
)]
pub struct SetArgs {
    /// The phase whose budget to change (default: the run's).
    #[arg(long, conflicts_with = "task")]
    pub phase: Option<String>,
    /// The task whose budget per attempt to change.
    #[arg(long)]
    pub task: Option<String>,
    /// The new limit in US dollars.
    #[arg(long, value_name = "USD")]
    pub usd: Option<f64>,
    /// The new limit in tokens.
    #[arg(long, value_name = "N")]
    pub tokens: Option<u64>,
    #[command(flatten)]
    pub hub: HubArg,
}

const LIMIT: Duration = Duration::from_secs(30);

pub fn run(args: BudgetArgs, options: client::Options) -> u8 {
    match args.cmd {
        None => ask(&args.hub, options, &ClientMsg::Budgets {}, None),
        Some(BudgetCmd::Set(a)) => {
            if a.usd.is_none() && a.tokens.is_none() {
                return fail(&a.hub, "say the new limit: `mcc budget set --usd N`, `--tokens N` or both");
            }
            let msg =
                ClientMsg::BudgetSet { phase: a.phase.clone(), task: a.task.clone(), usd: a.usd, tokens: a.tokens };
            let what = match (&a.phase, &a.task) {
                (Some(p), _) => format!("phase {p}'s budget"),
                (_, Some(t)) => format!("task {t}'s budget"),
                _ => "the run's budget".to_owned(),
            };
            ask(&a.hub, options, &msg, Some(&what))
        }
    }
}

fn ask(hub: &HubArg, options: client::Options, msg: &ClientMsg, changed: Option<&str>) -> u8 {
    match client::ask_once(hub.hub.as_deref(), options, msg, LIMIT) {
        Ok((ServerMsg::Error { error, .. }, _)) => fail(hub, &error),
        Ok((answer @ ServerMsg::Budgets { .. }, _)) if hub.json => {
            println!("{}", answer.to_json());
            exit::OK
        }
        Ok((ServerMsg::Budgets { budgets }, _)) => {
            if let Some(what) = changed {
                println!("{what} is changed; waiting workers look again");
            }
            for line in crate::client::status::budget_lines(&budgets) {
                println!("{line}");
            }
            exit::OK
        }
        Ok((other, _)) => fail(hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => fail(hub, &e),
    }
}

fn fail(hub: &HubArg, message: &str) -> u8 {
    if hub.json {
        println!("{}", json!({"type": "error", "error": message}));
    }
    eprintln!("error: {message}");
    exit::ERROR
}
