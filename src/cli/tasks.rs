//! `mcc tasks ...` and `mcc answer`: the engineer edits the task list.

use std::io::Read;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::exit;
use super::status::ask;
use crate::hub::protocol::{ClientMsg, ServerMsg};

/// Add, list, show, retry or cancel tasks on the running hub.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc tasks add tasks.json\n  mcc tasks add --id t1 --description \"Write the intro\" --write docs/intro.md\n  mcc tasks list --state blocked\n  mcc tasks show t1 --json\n  mcc tasks retry t1\n  mcc tasks cancel t1\n\nExit codes: 0 done, 1 error (the message says what to run instead), 2 bad arguments."
)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub command: TasksCommand,
    /// Hub address (default: found through the nearest .mcc/hub.json).
    #[arg(long, env = "MCC_HUB", global = true)]
    pub hub: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Add tasks from a JSON file (one task or an array; `-` reads stdin), or one task from flags.
    Add(AddArgs),
    /// List tasks: id, state, holder, description.
    List {
        /// Only tasks in this state (waiting, ready, assigned, submitted, accepted, blocked, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one task in full.
    Show {
        task: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a failed, blocked or cancelled task ready again.
    Retry { task: String },
    /// Cancel a task that is not accepted yet.
    Cancel { task: String },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// JSON file holding one task or an array of tasks; `-` for stdin.
    #[arg(conflicts_with = "id", required_unless_present = "id")]
    pub file: Option<String>,
    /// Id of one quick task.
    #[arg(long, requires = "description")]
    pub id: Option<String>,
    /// What the quick task asks for.
    #[arg(long)]
    pub description: Option<String>,
    /// A file the task writes (repeat for more).
    #[arg(long)]
    pub write: Vec<String>,
    /// A file the task reads (repeat for more).
    #[arg(long)]
    pub read: Vec<String>,
    /// A task that must be accepted first (repeat for more).
    #[arg(long)]
    pub after: Vec<String>,
    /// A shell command that must exit 0 for the work to be accepted.
    #[arg(long)]
    pub validation: Option<String>,
}

/// Answer a blocked task's question; the task becomes ready again.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc answer t3 \"Use British spelling\"\n\nExit codes: 0 answered, 1 error (unknown or not blocked task)."
)]
pub struct AnswerArgs {
    pub task: String,
    pub text: String,
    /// Hub address (default: found through the nearest .mcc/hub.json).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
}

fn fail(e: &str) -> u8 {
    eprintln!("mcc: {e}");
    exit::ERROR
}

/// Print an `ack`'s message, or complain about anything else.
fn acked(answer: Result<ServerMsg, String>) -> u8 {
    match answer {
        Ok(ServerMsg::Ack { message, .. }) => {
            println!("{message}");
            exit::OK
        }
        Ok(other) => fail(&format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => fail(&e),
    }
}

pub fn run_answer(args: &AnswerArgs) -> u8 {
    acked(ask(args.hub.as_deref(), &ClientMsg::Answer { task_id: args.task.clone(), text: args.text.clone() }))
}

pub fn run(args: &TasksArgs) -> u8 {
    let hub = args.hub.as_deref();
    match &args.command {
        TasksCommand::Add(add) => match read_tasks(add) {
            Ok(tasks) => match ask(hub, &ClientMsg::AddTasks { tasks }) {
                Ok(ServerMsg::TasksAdded { ids }) => {
                    println!("added {}: {}", ids.len(), ids.join(", "));
                    println!("next: mcc status");
                    exit::OK
                }
                Ok(other) => fail(&format!("unexpected answer from the hub: {}", other.to_json())),
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e),
        },
        TasksCommand::List { state, json } => match ask(hub, &ClientMsg::Snapshot {}) {
            Ok(ServerMsg::Snapshot { snapshot }) => {
                let tasks: Vec<&Value> = snapshot["tasks"]
                    .as_array()
                    .map(|t| t.iter().filter(|t| state.as_deref().is_none_or(|s| t["state"] == s)).collect())
                    .unwrap_or_default();
                if *json {
                    println!("{}", serde_json::to_string_pretty(&tasks).expect("tasks serialize"));
                } else if tasks.is_empty() {
                    println!("no tasks{}", state.as_ref().map(|s| format!(" in state {s}")).unwrap_or_default());
                } else {
                    for t in tasks {
                        let holder = t["holder"].as_str().map(|h| format!(" [{h}]")).unwrap_or_default();
                        println!(
                            "{} {}{holder}: {}",
                            t["id"].as_str().unwrap_or("?"),
                            t["state"].as_str().unwrap_or("?"),
                            t["description"].as_str().unwrap_or("")
                        );
                    }
                }
                exit::OK
            }
            Ok(other) => fail(&format!("unexpected answer from the hub: {}", other.to_json())),
            Err(e) => fail(&e),
        },
        TasksCommand::Show { task, json } => match ask(hub, &ClientMsg::ShowTask { task_id: task.clone() }) {
            Ok(ServerMsg::TaskInfo { task }) => {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&task).expect("a task serializes"));
                } else {
                    print_task(&task);
                }
                exit::OK
            }
            Ok(other) => fail(&format!("unexpected answer from the hub: {}", other.to_json())),
            Err(e) => fail(&e),
        },
        TasksCommand::Retry { task } => acked(ask(hub, &ClientMsg::Retry { task_id: task.clone() })),
        TasksCommand::Cancel { task } => acked(ask(hub, &ClientMsg::Cancel { task_id: task.clone() })),
    }
}

fn print_task(t: &Value) {
    let id = t["id"].as_str().unwrap_or("?");
    println!("{id}: {}", t["state"].as_str().unwrap_or("?"));
    println!("  {}", t["description"].as_str().unwrap_or(""));
    if let Some(h) = t["holder"].as_str() {
        println!("  held by {h}, attempt {}", t["attempt"]);
    }
    if let Some(deps) = t["dependencies"].as_array().filter(|d| !d.is_empty()) {
        let deps: Vec<&str> = deps.iter().filter_map(Value::as_str).collect();
        println!("  after {}", deps.join(", "));
    }
    if let Some(q) = t["question"].as_str() {
        println!("  question: {q}");
        println!("  answer with: mcc answer {id} \"...\"");
    }
    if let Some(reasons) = t["reasons"].as_array().filter(|r| !r.is_empty()) {
        for r in reasons {
            println!("  rejected: {}", r.as_str().unwrap_or(""));
        }
    }
}

/// The tasks to send: from the file (or stdin), or one from the flags.
fn read_tasks(add: &AddArgs) -> Result<Vec<Value>, String> {
    if let Some(id) = &add.id {
        let task = json!({
            "id": id,
            "description": add.description.clone().unwrap_or_default(),
            "context": {"targetFiles": add.read, "outputFiles": add.write},
            "acceptance": {"validation": add.validation},
            "dependencies": add.after,
        });
        return Ok(vec![task]);
    }
    let file = add.file.as_deref().expect("clap requires FILE or --id");
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| format!("cannot read stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    };
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{file} is not valid JSON: {e}; fix it and run the command again"))?;
    match value {
        Value::Array(tasks) => Ok(tasks),
        task @ Value::Object(_) => Ok(vec![task]),
        _ => Err(format!("{file} must hold a task object or an array of tasks")),
    }
}
