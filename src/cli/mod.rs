//! The command line: clap definitions, one file per command group.

pub(crate) mod budget;
mod check;
mod git_guard;
mod hub;
mod join;
mod new;
pub(crate) mod report;
mod rules;
mod run;
mod status;
mod tasks;
mod token;
mod validate;
pub(crate) mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes every command shares; `--help` lists them.
pub use crate::client::exit;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (mcc worker: you have a task)
  1  error: the message says what to run instead
  2  bad arguments
  3  nothing ready yet, or (mcc worker) the hub is down for now: run the same command again
  4  all work is done: stop
  5  hand over: your context is spent, a fresh chat takes over";

/// mcc: run several AI coding-agent chats on one project at once.
#[derive(Debug, Parser)]
#[command(name = "mcc", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How client commands reach the hub: auto (the socket, else files under .mcc/), socket, or file.
    #[arg(long, global = true, env = "MCC_TRANSPORT", value_enum, default_value_t = crate::client::Transport::Auto)]
    pub transport: crate::client::Transport,
    /// How long client commands wait for the hub at each step (connect, handshake, each answer), beyond any --wait.
    #[arg(long, global = true, env = "MCC_TIMEOUT", default_value = "10s", value_parser = deadline, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// With several hub addresses (`--hub A,B` or `MCC_HUB=A,B`): how long to keep trying them in turn when none serves, such as while a standby takes over (default 15s; 0s with one address).
    #[arg(long, global = true, env = "MCC_FAILOVER_WAIT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub failover_wait: Option<std::time::Duration>,
}

/// A deadline: a duration above zero, such as `10s` or `1m`.
fn deadline(given: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(given) {
        Ok(limit) if limit.is_zero() => Err("the deadline must be above zero, such as 10s".to_owned()),
        Ok(limit) => Ok(limit),
        Err(e) => Err(format!("{e}; give a duration such as 10s or 1m")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Hub(hub::HubArgs),
    Run(run::RunArgs),
    Status(status::StatusArgs),
    New(new::NewArgs),
    Recipes(new::RecipesArgs),
    Report(report::ReportArgs),
    /// Add, list, show, retry or cancel tasks.
    #[command(subcommand)]
    Tasks(tasks::TasksCmd),
    Answer(tasks::AnswerArgs),
    Budget(budget::BudgetArgs),
    /// Make, list or revoke the hub's scoped tokens (worker, viewer, engineer).
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Install the worker and coordinator rules where agents read them.
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    Validate(validate::ValidateArgs),
    /// What a worker chat runs: next, done, block, fail, progress, leave, run.
    #[command(subcommand)]
    Worker(worker::WorkerCmd),
    Check(check::CheckArgs),
    Join(join::JoinArgs),
    /// Serve one worker's commands as MCP tools over stdio (next, done, block, fail, progress, leave, status).
    Mcp(crate::mcp::McpArgs),
    /// Install or remove the git pre-commit hook that refuses commits of files other workers' tasks reserve.
    #[command(subcommand)]
    Guard(git_guard::GuardCmd),
}

/// Parse the command line, run it, and map the result to an exit code.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    crate::hub::print_diagnostics();
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

/// `mcc status | head` closes stdout early; Rust then panics in `println!`.
/// The reader has what it wanted, so end quietly as a SIGPIPE'd tool would
/// (exit 141), and leave every other panic to the default hook.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let options =
        crate::client::Options { transport: cli.transport, timeout: cli.timeout, failover_wait: cli.failover_wait };
    match cli.command {
        Command::Hub(args) => hub::run(args),
        Command::Run(args) => run::run(args, options),
        Command::Status(args) => status::run(args, options),
        Command::New(args) => new::new(args),
        Command::Recipes(args) => new::recipes(args),
        Command::Report(args) => report::run(args),
        Command::Tasks(cmd) => tasks::run(cmd, options),
        Command::Answer(args) => tasks::answer(args, options),
        Command::Budget(args) => budget::run(args, options),
        Command::Token(cmd) => token::run(cmd, options),
        Command::Rules(cmd) => rules::run(cmd),
        Command::Validate(args) => validate::run(args),
        Command::Worker(cmd) => worker::run(cmd, options),
        Command::Check(args) => check::run(args),
        Command::Mcp(args) => crate::mcp::run(args, options),
        Command::Join(args) => join::run(args, options),
        Command::Guard(cmd) => git_guard::run(cmd),
    }
}
