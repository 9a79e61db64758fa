//! `mcc tasks add | list | show | retry | cancel` and `mcc answer`: the
//! engineer's hands on the queue.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::exit;
use crate::client;
use crate::engine::views::{Snapshot, TaskSummary};
use crate::wire::{ClientMsg, ServerMsg};

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Add tasks from a JSON file (a task or an array), `-` for stdin, or one task from flags.
    #[command(
        after_help = "Examples:\n  mcc tasks add tasks.json\n  mcc tasks add --id fix-1 --description \"Fix the parser\" --write src/parse.rs --validation \"cargo test parse\"\n\nExit codes: 0 added; 1 error (nothing is added)."
    )]
    Add(AddArgs),
    /// List tasks, optionally of one state.
    #[command(after_help = "Example:\n  mcc tasks list --state blocked")]
    List(ListArgs),
    /// Everything about one task.
    #[command(after_help = "Example:\n  mcc tasks show task-001")]
    Show(OneArgs),
    /// Put a failed or cancelled task back in the queue.
    #[command(after_help = "Example:\n  mcc tasks retry task-001")]
    Retry(OneArgs),
    /// Cancel a task that is not finished.
    #[command(after_help = "Example:\n  mcc tasks cancel task-001")]
    Cancel(OneArgs),
}

#[derive(Debug, Args, Clone)]
pub struct HubArg {
    /// Hub address (default: found through the nearest .mcc/).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A JSON file with a task or an array of tasks; `-` reads stdin.
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// A file the task reads (repeat).
    #[arg(long)]
    pub read: Vec<String>,
    /// A file the task writes (repeat).
    #[arg(long)]
    pub write: Vec<String>,
    /// A task that must be accepted first (repeat).
    #[arg(long)]
    pub after: Vec<String>,
    /// A shell command that exits 0 when the result is acceptable.
    #[arg(long)]
    pub validation: Option<String>,
    #[command(flatten)]
    pub hub: HubArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this state (waiting, ready, assigned, submitted, accepted, blocked, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    #[command(flatten)]
    pub hub: HubArg,
}

#[derive(Debug, Args)]
pub struct OneArgs {
    pub task: String,
    #[command(flatten)]
    pub hub: HubArg,
}

/// The engineer's answer to a blocked task's question.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc answer task-003 \"Use markdown tables\"\n\nExit codes: 0 the task is ready again; 1 error."
)]
pub struct AnswerArgs {
    pub task: String,
    pub text: String,
    #[command(flatten)]
    pub hub: HubArg,
}

const LIMIT: Duration = Duration::from_secs(30);

fn fail(hub: &HubArg, message: &str) -> u8 {
    if hub.json {
        println!("{}", json!({"type": "error", "error": message}));
    }
    eprintln!("error: {message}");
    exit::ERROR
}

/// Send one message; print the ack's message (or the error).
fn simple(hub: &HubArg, msg: &ClientMsg, then: &str) -> u8 {
    match client::ask_once(hub.hub.as_deref(), msg, LIMIT) {
        Ok((ServerMsg::Error { error, .. }, _)) => fail(hub, &error),
        Ok((answer, _)) if hub.json => {
            println!("{}", answer.to_json());
            exit::OK
        }
        Ok((ServerMsg::Ack { message, .. }, _)) => {
            println!("{message}\n{then}");
            exit::OK
        }
        Ok((other, _)) => fail(hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => fail(hub, &e),
    }
}

pub fn answer(args: AnswerArgs) -> u8 {
    let msg = ClientMsg::Answer { task_id: args.task.clone(), text: args.text };
    simple(&args.hub, &msg, "next: `mcc status` to follow it")
}

pub fn run(cmd: TasksCmd) -> u8 {
    match cmd {
        TasksCmd::Add(a) => add(a),
        TasksCmd::List(a) => list(&a),
        TasksCmd::Show(a) => {
            match client::ask_once(a.hub.hub.as_deref(), &ClientMsg::ShowTask { task_id: a.task }, LIMIT) {
                Ok((ServerMsg::TaskInfo { task }, _)) => {
                    if a.hub.json {
                        println!("{task}");
                    } else {
                        println!("{}", serde_json::to_string_pretty(&task).expect("serializes"));
                    }
                    exit::OK
                }
                Ok((ServerMsg::Error { error, .. }, _)) => fail(&a.hub, &error),
                Ok((other, _)) => fail(&a.hub, &format!("unexpected answer from the hub: {}", other.to_json())),
                Err(e) => fail(&a.hub, &e),
            }
        }
        TasksCmd::Retry(a) => simple(&a.hub, &ClientMsg::Retry { task_id: a.task }, "next: `mcc status` to follow it"),
        TasksCmd::Cancel(a) => simple(&a.hub, &ClientMsg::Cancel { task_id: a.task }, "next: `mcc status`"),
    }
}

fn add(a: AddArgs) -> u8 {
    let tasks = match (&a.file, &a.id) {
        (Some(file), _) => {
            let mut text = String::new();
            let read = if file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).map(|_| ())
            } else {
                std::fs::read_to_string(file).map(|t| text = t)
            };
            if let Err(e) = read {
                return fail(&a.hub, &format!("cannot read {}: {e}", file.display()));
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(items)) => items,
                Ok(one @ Value::Object(_)) => vec![one],
                Ok(_) => return fail(&a.hub, "the file must hold a task object or an array of tasks"),
                Err(e) => return fail(&a.hub, &format!("{} is not valid JSON: {e}", file.display())),
            }
        }
        (None, Some(id)) => {
            let mut task = json!({
                "id": id,
                "description": a.description.clone().unwrap_or_else(|| id.clone()),
                "context": {"targetFiles": a.read, "outputFiles": a.write, "requirements": []},
                "acceptance": {"criteria": []},
                "dependencies": a.after,
            });
            if let Some(v) = &a.validation {
                task["acceptance"]["validation"] = json!(v);
            }
            vec![task]
        }
        (None, None) => {
            return fail(&a.hub, "give a JSON file (or - for stdin), or --id and --description for one task");
        }
    };
    match client::ask_once(a.hub.hub.as_deref(), &ClientMsg::AddTasks { tasks }, LIMIT) {
        Ok((ServerMsg::TasksAdded { ids }, _)) => {
            if a.hub.json {
                println!("{}", json!({"type": "tasks_added", "ids": ids}));
            } else {
                println!("added {} task{}: {}", ids.len(), if ids.len() == 1 { "" } else { "s" }, ids.join(", "));
                println!("next: workers pick them up with `mcc worker next --as NAME`; follow with `mcc status`");
            }
            exit::OK
        }
        Ok((ServerMsg::Error { error, .. }, _)) => fail(&a.hub, &error),
        Ok((other, _)) => fail(&a.hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => fail(&a.hub, &e),
    }
}

fn list(a: &ListArgs) -> u8 {
    let snapshot = match client::ask_once(a.hub.hub.as_deref(), &ClientMsg::Snapshot {}, LIMIT) {
        Ok((ServerMsg::Snapshot { snapshot }, _)) => match Snapshot::from_wire(&snapshot) {
            Ok(s) => s,
            Err(e) => return fail(&a.hub, &e),
        },
        Ok((other, _)) => return fail(&a.hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => match super::status::stored() {
            Some(snapshot) => snapshot,
            None => return fail(&a.hub, &e),
        },
    };
    let tasks: Vec<&TaskSummary> =
        snapshot.tasks.iter().filter(|t| a.state.as_deref().is_none_or(|s| t.state == s)).collect();
    if a.hub.json {
        println!("{}", json!(tasks));
        return exit::OK;
    }
    if tasks.is_empty() {
        println!("no tasks{}", a.state.as_deref().map(|s| format!(" in state {s}")).unwrap_or_default());
    }
    for t in tasks {
        let holder = t.holder.as_deref().map(|h| format!(" by {h}")).unwrap_or_default();
        println!("{:<20} {:<10} attempt {}{holder}  {}", t.id, t.state, t.attempt, t.description);
    }
    exit::OK
}
