//! The arguments of `mcc worker ...` (clap), and what each verb's become
//! for [`crate::client::worker`].

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::client::worker as verbs;

const WORKER_HELP: &str = "\
Exit codes:
  0  you have a task (or the command succeeded): do it, then run the printed command
  1  error: the message says what to run instead
  3  nothing ready yet, or the hub is down for now: run the same command again
     (in a minute when the hub is down; tell the engineer if it stays down)
  4  all work is done: stop
  5  hand over: your context is spent; stop, a fresh chat takes over

Example turn:
  mcc worker next --as worker-A          (--can rust,docs --model opus: say what you can do)
  ...do the task...
  mcc worker done task-001 --as worker-A --attempt 1 --deliverable out/a.md --score 5";

/// Commands a worker chat (or script) runs to go from task to task.
#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    /// Get the task you hold, or a new one; waits a bounded time when none is ready.
    #[command(after_help = WORKER_HELP)]
    Next(NextArgs),
    /// Report a task done; prints the verdict and your next task in the same command.
    #[command(after_help = WORKER_HELP)]
    Done(DoneArgs),
    /// Hand a question to the engineer; the task waits for `mcc answer`, you get other work.
    #[command(after_help = WORKER_HELP)]
    Block(BlockArgs),
    /// Give up on a task; it goes back to the queue (or fails when its attempts are used up).
    #[command(after_help = WORKER_HELP)]
    Fail(FailArgs),
    /// Note progress on a held task; extends its lease.
    #[command(after_help = WORKER_HELP)]
    Progress(ProgressArgs),
    /// Leave: what you hold goes back to the queue at once.
    #[command(after_help = WORKER_HELP)]
    Leave(LeaveArgs),
    /// Headless worker: run COMMAND once per task until all work is done.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// The watcher `next` starts beside a shell chat: holds the worker's presence until the agent's process ends.
    #[command(hide = true)]
    Watch(WatchArgs),
}

/// `mcc worker watch`, started by `next` (docs/worker.md, "Presence").
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(long = "as", value_name = "NAME")]
    pub name: String,
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
    /// The agent's process, and its start time as `/proc/PID/stat` gives it.
    #[arg(long)]
    pub agent_pid: u32,
    #[arg(long)]
    pub agent_start: u64,
}

/// Options every worker command takes.
#[derive(Debug, Args, Clone)]
pub struct Who {
    /// Your worker name, such as worker-A (or set `MCC_WORKER`).
    #[arg(long = "as", env = "MCC_WORKER", value_name = "NAME")]
    pub name: Option<String>,
    /// Hub address, such as `ws://127.0.0.1:3100`; several separated by commas are tried in turn (a hub with a standby). Default: found through the nearest .mcc/.
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Work in a git worktree of your own, `.mcc/worktrees/NAME` (made at the first use; kept until `leave`).
    #[arg(long, env = "MCC_WORKTREE")]
    pub worktree: bool,
}

/// How long to wait for work.
#[derive(Debug, Args, Clone)]
pub struct Wait {
    /// Wait this long for work when none is ready (max 5m), such as 25s.
    #[arg(long, env = "MCC_WAIT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// What an attempt cost, for budgets (docs/workflows.md, "Budgets").
#[derive(Debug, Args, Clone, Default)]
pub struct Cost {
    /// What this attempt cost in US dollars, such as 0.42.
    #[arg(long = "cost", value_name = "USD")]
    pub usd: Option<f64>,
    /// How many tokens this attempt used.
    #[arg(long, value_name = "N")]
    pub tokens: Option<u64>,
}

impl Cost {
    pub fn usage(&self) -> Option<crate::wire::Usage> {
        let usage = crate::wire::Usage { usd: self.usd, tokens: self.tokens };
        (!usage.is_empty()).then_some(usage)
    }
}

#[derive(Debug, Args)]
pub struct NextArgs {
    #[command(flatten)]
    pub who: Who,
    #[command(flatten)]
    pub wait: Wait,
    #[command(flatten)]
    pub kit: verbs::Kit,
}

#[derive(Debug, Args)]
pub struct DoneArgs {
    /// The task you finished.
    pub task: String,
    /// A file you wrote (repeat for several).
    #[arg(long = "deliverable", value_name = "PATH")]
    pub deliverables: Vec<String>,
    /// Your context efficiency, 1-5 (5 = fresh; 2 or less = hand over).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub score: Option<u8>,
    /// A note for the engineer.
    #[arg(long)]
    pub notes: Option<String>,
    /// The attempt you worked on, as printed with the task (default: the
    /// last one this machine was shown for the task).
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub cost: Cost,
    #[command(flatten)]
    pub who: Who,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Args)]
pub struct BlockArgs {
    pub task: String,
    /// The question for the engineer.
    #[arg(long)]
    pub question: String,
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub cost: Cost,
    #[command(flatten)]
    pub who: Who,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Args)]
pub struct FailArgs {
    pub task: String,
    /// Why you cannot finish it.
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub cost: Cost,
    #[command(flatten)]
    pub who: Who,
    #[command(flatten)]
    pub wait: Wait,
}

#[derive(Debug, Args)]
pub struct ProgressArgs {
    pub task: String,
    /// What you have done so far.
    #[arg(long)]
    pub note: String,
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub who: Who,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    #[command(flatten)]
    pub who: Who,
}

const RUN_HELP: &str = "\
For each task, COMMAND runs in the project root with the task as JSON on stdin and in
the file MCC_TASK_FILE, and MCC_TASK_ID, MCC_ATTEMPT, MCC_WORKER, MCC_HUB (every hub
address known, comma-separated, the serving one first), MCC_REASONS (why the last result
was rejected) in its environment.
  exit 0      done: deliverables are the task's output files that exist, or the
              `deliverables` of a JSON object printed as the last stdout line
              (`\"is_error\": true` in it means failure, as `claude -p` reports)
  exit non-0  failed: the tail of stderr is the reason
The lease is extended while COMMAND runs; one that runs past the lease is killed.

Exit codes: 0 --max-tasks reached, 1 error, 3 the hub is down (run it again later), 4 all work is done, 5 hand over.

Example:
  mcc worker run --as bot --parallel 3 -- sh scripts/do-task.sh";

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub who: Who,
    /// Run N workers at once, named NAME-1 .. NAME-N.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Stop after this many tasks.
    #[arg(long)]
    pub max_tasks: Option<usize>,
    #[command(flatten)]
    pub kit: verbs::Kit,
    /// The command to run per task, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl Who {
    pub fn worker(&self, options: crate::client::Options) -> verbs::Worker {
        verbs::Worker {
            name: self.name.clone(),
            hub: self.hub.clone(),
            options,
            worktree: self.worktree,
            kit: verbs::Kit::default(),
        }
    }
}

impl DoneArgs {
    pub fn verb(&self) -> verbs::Done {
        verbs::Done {
            task: self.task.clone(),
            deliverables: self.deliverables.clone(),
            score: self.score,
            notes: self.notes.clone(),
            attempt: self.attempt,
            wait: self.wait.wait,
            usage: self.cost.usage(),
        }
    }
}

impl BlockArgs {
    pub fn verb(&self) -> verbs::Block {
        verbs::Block {
            task: self.task.clone(),
            question: self.question.clone(),
            attempt: self.attempt,
            wait: self.wait.wait,
            usage: self.cost.usage(),
        }
    }
}

impl FailArgs {
    pub fn verb(&self) -> verbs::Fail {
        verbs::Fail {
            task: self.task.clone(),
            reason: self.reason.clone(),
            attempt: self.attempt,
            wait: self.wait.wait,
            usage: self.cost.usage(),
        }
    }
}

impl ProgressArgs {
    pub fn verb(&self) -> verbs::Progress {
        verbs::Progress { task: self.task.clone(), note: self.note.clone(), attempt: self.attempt }
    }
}
