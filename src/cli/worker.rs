//! `mcc worker ...`: what a worker chat runs, one short connection per
//! command, each finishing inside the chat's turn. Every answer prints the
//! task id and the exact next command first.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::exit;
use crate::client::{self, ClientError, Target};
use crate::wire::{ClientMsg, Offer, ServerMsg};

const WORKER_HELP: &str = "\
Exit codes:
  0  you have a task (or the command succeeded): do it, then run the printed command
  1  error: the message says what to run instead
  3  nothing ready yet: run the same command again
  4  all work is done: stop
  5  hand over: your context is spent; stop, a fresh chat takes over

Example turn:
  mcc worker next --as worker-A
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
}

/// Options every worker command takes.
#[derive(Debug, Args, Clone)]
pub struct Who {
    /// Your worker name, such as worker-A (or set `MCC_WORKER`).
    #[arg(long = "as", env = "MCC_WORKER", value_name = "NAME")]
    pub name: Option<String>,
    /// Hub address, such as `ws://127.0.0.1:3100` (default: found through the nearest .mcc/).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How long to wait for work.
#[derive(Debug, Args, Clone)]
pub struct Wait {
    /// Wait this long for work when none is ready (max 5m), such as 25s.
    #[arg(long, env = "MCC_WAIT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    #[command(flatten)]
    pub who: Who,
    #[command(flatten)]
    pub wait: Wait,
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
the file MCC_TASK_FILE, and MCC_TASK_ID, MCC_ATTEMPT, MCC_WORKER, MCC_HUB, MCC_REASONS
(why the last result was rejected) in its environment.
  exit 0      done: deliverables are the task's output files that exist, or the
              `deliverables` of a JSON object printed as the last stdout line
              (`\"is_error\": true` in it means failure, as `claude -p` reports)
  exit non-0  failed: the tail of stderr is the reason
The lease is extended while COMMAND runs; one that runs past the lease is killed.

Exit codes: 0 --max-tasks reached, 1 error, 4 all work is done, 5 hand over.

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
    /// The command to run per task, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The most an answer may take beyond the requested wait.
const SLACK: Duration = Duration::from_secs(30);
/// What a printed answer should stay under, for agents that keep little.
pub(crate) const PRINT_BUDGET: usize = 2000;

pub fn run(cmd: WorkerCmd) -> u8 {
    let (who, result) = match cmd {
        WorkerCmd::Next(a) => {
            let msg = |name: String| ClientMsg::Next { worker: name, wait_ms: Some(ms(a.wait.wait)) };
            (a.who.clone(), simple(&a.who, msg, a.wait.wait))
        }
        WorkerCmd::Done(a) => (a.who.clone(), done(&a)),
        WorkerCmd::Block(a) => {
            let msg = |name: String| ClientMsg::Block {
                attempt: a.attempt.or_else(|| last_grant(&name, &a.task)),
                worker: name,
                task_id: a.task.clone(),
                question: a.question.clone(),
                wait_ms: Some(ms(a.wait.wait)),
            };
            (a.who.clone(), simple(&a.who, msg, a.wait.wait))
        }
        WorkerCmd::Fail(a) => {
            let msg = |name: String| ClientMsg::Fail {
                attempt: a.attempt.or_else(|| last_grant(&name, &a.task)),
                worker: name,
                task_id: a.task.clone(),
                reason: a.reason.clone(),
                wait_ms: Some(ms(a.wait.wait)),
            };
            (a.who.clone(), simple(&a.who, msg, a.wait.wait))
        }
        WorkerCmd::Progress(a) => {
            let msg = |name: String| ClientMsg::Progress {
                attempt: a.attempt.or_else(|| last_grant(&name, &a.task)),
                worker: name,
                task_id: a.task.clone(),
                note: a.note.clone(),
            };
            (a.who.clone(), simple(&a.who, msg, Duration::ZERO))
        }
        WorkerCmd::Leave(a) => {
            (a.who.clone(), simple(&a.who, |name| ClientMsg::Leave { worker: name }, Duration::ZERO))
        }
        WorkerCmd::Run(a) => return headless(&a),
    };
    match result {
        Ok(answer) => answer.print(who.json),
        Err(_) if run_finished() => {
            // The run's hub stopped because the work is finished: not a crash.
            let message = "all work is done: the run finished and its hub has stopped; you can stop";
            if who.json {
                println!("{}", json!({"type": "all_done", "message": message, "exit_code": exit::ALL_DONE}));
            } else {
                println!("{message}");
            }
            exit::ALL_DONE
        }
        Err(message) => {
            if who.json {
                println!("{}", json!({"type": "error", "error": message, "exit_code": exit::ERROR}));
            }
            eprintln!("error: {message}");
            exit::ERROR
        }
    }
}

/// The store under the nearest `.mcc/` says the run finished and no hub
/// serves the project any more (one that is alive but out of reach is not
/// "stopped": that is an error to report).
fn run_finished() -> bool {
    let Ok(cwd) = std::env::current_dir() else { return false };
    client::find_root(&cwd).is_some_and(|root| {
        crate::engine::views::stored_finished(&root)
            && client::files::hub_gone_within(&root.join(".mcc"), Duration::from_secs(3))
    })
}

/// Where the last grant shown to `worker` on this machine is kept, so a
/// command given without `--attempt` still carries its fencing token.
fn grant_file(worker: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    let root = client::find_root(&cwd)?;
    Some(root.join(".mcc").join("grants").join(safe_file_name(worker)))
}

/// The attempt last shown to `worker` for `task`, if it was this task.
fn last_grant(worker: &str, task: &str) -> Option<u32> {
    let text = std::fs::read_to_string(grant_file(worker)?).ok()?;
    let (id, attempt) = text.lines().next()?.trim().rsplit_once(' ')?;
    (id == task).then(|| attempt.parse().ok()).flatten()
}

/// The `done` command printed with the last grant of `task` to `worker`.
fn remembered_done(worker: &str, task: &str) -> Option<String> {
    last_grant(worker, task)?;
    let text = std::fs::read_to_string(grant_file(worker)?).ok()?;
    text.lines().nth(1).map(str::to_owned).filter(|l| l.starts_with("mcc worker done "))
}

/// The file holds `TASK ATTEMPT` on its first line and the printed `done`
/// command on its second (what `progress` prints again).
fn remember_grant(worker: &str, task: &str, attempt: u32, done_cmd: &str) {
    if let Some(file) = grant_file(worker)
        && let Some(dir) = file.parent()
    {
        let body = format!("{task} {attempt}\n{done_cmd}\n");
        let _ = std::fs::create_dir_all(dir).and_then(|()| client::files::write_whole(&file, body.as_bytes()));
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The worker's name, or an error saying how to give one.
fn name_of(who: &Who) -> Result<String, String> {
    who.name.clone().filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        "no worker name: pass --as NAME (for example `mcc worker next --as worker-A`) or set MCC_WORKER=worker-A"
            .to_owned()
    })
}

fn target(who: &Who) -> Result<Target, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current folder: {e}"))?;
    client::locate(who.hub.as_deref(), &cwd).map_err(|e| e.to_string())
}

fn ask(target: &Target, msg: &ClientMsg, wait: Duration) -> Result<ServerMsg, ClientError> {
    client::ask(target, msg, wait + SLACK)
}

/// One answer of the hub, ready to print.
struct Answer {
    worker: String,
    msg: ServerMsg,
    root: Option<PathBuf>,
}

fn done(a: &DoneArgs) -> Result<Answer, String> {
    let worker = name_of(&a.who)?;
    let target = target(&a.who)?;
    let deliverables =
        a.deliverables.iter().map(|d| project_path(d, target.root.as_deref())).collect::<Result<Vec<_>, _>>()?;
    let msg = ClientMsg::Done {
        worker: worker.clone(),
        task_id: a.task.clone(),
        attempt: a.attempt.or_else(|| last_grant(&worker, &a.task)),
        deliverables,
        score: a.score,
        notes: a.notes.clone(),
        wait_ms: Some(ms(a.wait.wait)),
    };
    let answer = ask(&target, &msg, a.wait.wait).map_err(|e| e.to_string())?;
    Ok(Answer { worker, msg: answer, root: target.root })
}

fn simple(who: &Who, msg: impl FnOnce(String) -> ClientMsg, wait: Duration) -> Result<Answer, String> {
    let worker = name_of(who)?;
    let target = target(who)?;
    let answer = ask(&target, &msg(worker.clone()), wait).map_err(|e| e.to_string())?;
    Ok(Answer { worker, msg: answer, root: target.root })
}

/// A deliverable as the hub sees it: relative to the project root. It must
/// exist. A relative path is the project root's, as printed commands give
/// it, so they run as printed from any folder; one that is only found from
/// the current folder is taken from there.
fn project_path(given: &str, root: Option<&Path>) -> Result<String, String> {
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let candidates: Vec<PathBuf> = root.map(|r| r.join(given)).into_iter().chain([cwd.join(given)]).collect();
    let Some(full) = candidates.iter().find(|p| p.exists()).cloned() else {
        let looked = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ");
        return Err(format!(
            "deliverable `{given}` does not exist (looked at {looked}); write it first, or pass the path you wrote"
        ));
    };
    let Some(root) = root else { return Ok(given.to_owned()) };
    let full = std::fs::canonicalize(&full).map_err(|e| e.to_string())?;
    let root = std::fs::canonicalize(root).map_err(|e| e.to_string())?;
    full.strip_prefix(&root).map(|p| p.display().to_string()).map_err(|_| {
        format!("deliverable `{given}` is outside the project {}; write it inside the project", root.display())
    })
}

impl Answer {
    /// Print and return the exit code.
    fn print(&self, as_json: bool) -> u8 {
        let (text, code, next_command) = self.render();
        if as_json {
            let mut value = serde_json::to_value(&self.msg).expect("serializes");
            if let Some(map) = value.as_object_mut() {
                if let Some(command) = next_command {
                    map.insert("next_command".into(), json!(command));
                }
                map.insert("exit_code".into(), json!(code));
            }
            println!("{value}");
        } else if code == exit::ERROR {
            eprintln!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        code
    }

    fn render(&self) -> (String, u8, Option<String>) {
        let w = &self.worker;
        match &self.msg {
            ServerMsg::Offer { offer } => self.offer(offer, String::new()),
            ServerMsg::Verdict { task_id, attempt, accepted, failed, reasons, next, .. } => {
                // Validation output can be long: the whole of it is in `mcc tasks show`.
                let reasons = reasons.join("; ");
                let reasons = if reasons.len() > 600 {
                    format!("{} (all of it: mcc tasks show {})", clip(&reasons, 600), quoted(task_id))
                } else {
                    reasons
                };
                let head = if *accepted {
                    format!("accepted {task_id}.\n")
                } else if *failed {
                    format!("rejected {task_id} (attempt {attempt}) and it has no attempts left: {reasons}\n")
                } else {
                    format!("rejected {task_id} (attempt {attempt}): {reasons}\nfix it and report again:\n")
                };
                self.offer(next, head)
            }
            ServerMsg::Ack { message, next: Some(next), .. } => self.offer(next, format!("{message}\n")),
            ServerMsg::Ack { message, what, task_id, .. } => match (what.as_str(), task_id) {
                ("progress", Some(t)) => {
                    // The command printed with the task; without it, one that runs as printed.
                    let done = remembered_done(w, t).unwrap_or_else(|| {
                        let attempt = last_grant(w, t).map(|a| format!(" --attempt {a}")).unwrap_or_default();
                        format!("mcc worker done {} --as {}{attempt} --score 5", quoted(t), quoted(w))
                    });
                    (format!("{message}\nwhen done: {done}\n"), exit::OK, Some(done))
                }
                ("leave", _) => (format!("{message}\nyou can stop\n"), exit::OK, None),
                _ => {
                    let next = format!("mcc worker next --as {}", quoted(w));
                    (format!("{message}\nnext: {next}\n"), exit::OK, Some(next))
                }
            },
            ServerMsg::Error { error, hint, .. } => {
                let hint = hint.as_deref().map(|h| format!("\n{h}")).unwrap_or_default();
                (format!("error: {error}{hint}"), exit::ERROR, None)
            }
            other => (format!("error: unexpected answer from the hub: {}", other.to_json()), exit::ERROR, None),
        }
    }

    /// A task offer. It is printed whole when it fits [`PRINT_BUDGET`];
    /// otherwise the whole task goes to `.mcc/tasks/ID.md` and the answer
    /// keeps the task line, the `done` command, that file's path, a digest
    /// of the rest and the commands for when stuck.
    fn task(&self, offer: &Offer, head: String) -> (String, u8, Option<String>) {
        let Offer::Task {
            task,
            attempt,
            attempts_used,
            max_attempts,
            lease_ms,
            held,
            returning,
            reasons,
            question,
            answer,
            phase,
            ..
        } = offer
        else {
            unreachable!("only called for a task offer")
        };
        let w = &self.worker;
        let view = TaskView::new(task);
        let done_cmd = view.done_command(w, *attempt);
        remember_grant(w, &view.id, *attempt, &done_cmd);
        let how = if *returning {
            "back to you"
        } else if *held {
            "you already hold it"
        } else {
            "new"
        };
        let phase = phase.as_deref().map(|p| format!(", phase {p}")).unwrap_or_default();
        let used = if *max_attempts > 0 { format!(", {attempts_used} of {max_attempts} used") } else { String::new() };
        let status = format!(
            "task {} ({how}, attempt {attempt}{used}, lease {}{phase})",
            view.id,
            human(Duration::from_millis(*lease_ms))
        );
        let (id, who) = (quoted(&view.id), quoted(w));
        let stuck = vec![
            format!("mcc worker block {id} --as {who} --attempt {attempt} --question \"...\""),
            format!("mcc worker fail {id} --as {who} --attempt {attempt} --reason \"...\""),
        ];
        let stuck_line = format!("stuck? {}   cannot do it? {}\n", stuck[0], stuck[1]);
        let mut notes: Vec<(&str, String)> = Vec::new();
        if !reasons.is_empty() {
            notes.push(("rejected last time because", reasons.join("; ")));
        }
        if let Some(question) = question {
            notes.push(("you asked", question.clone()));
        }
        if let Some(answer) = answer {
            notes.push(("the engineer answered", answer.clone()));
        }
        let root = self.root.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_else(|| PathBuf::from("."));
        // Paths in the task are the project root's; say so where that is not obvious.
        let elsewhere = std::env::current_dir()
            .ok()
            .and_then(|cwd| std::fs::canonicalize(cwd).ok())
            .is_some_and(|cwd| std::fs::canonicalize(&root).ok().is_some_and(|r| r != cwd));
        let root_note = elsewhere.then(|| format!("paths are relative to the project root {}\n", root.display()));

        let first = if view.inline_description() && !view.description.is_empty() {
            format!("{status}: {}", view.description)
        } else {
            status.clone()
        };
        let whole = format!(
            "{head}{first}\nwhen done: {done_cmd}\n{}{}{SCORE_NOTE}\n{stuck_line}",
            view.details(&notes),
            root_note.clone().unwrap_or_default()
        );
        if whole.len() <= PRINT_BUDGET {
            return (whole, exit::OK, Some(done_cmd));
        }

        let file = root.join(".mcc").join("tasks").join(format!("{}.md", safe_file_name(&view.id)));
        let md = view.markdown(&format!("{status}; worker {w}."), &done_cmd, &stuck, &notes, &root);
        let saved = std::fs::create_dir_all(file.parent().expect("has a parent"))
            .and_then(|()| client::files::write_whole(&file, md.as_bytes()));
        let mut text = clip(&head, 400);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = writeln!(text, "{}", clip(&first, 400));
        if done_cmd.len() <= 800 {
            let _ = writeln!(text, "when done: {done_cmd}");
        } else {
            let _ = writeln!(text, "{DONE_IN_FILE}{} (it names {} deliverables)", file.display(), view.write.len());
        }
        match saved {
            Ok(()) => {
                let _ =
                    writeln!(text, "the whole task ({} characters) is in {}: read it first", md.len(), file.display());
            }
            Err(e) => {
                let _ = writeln!(
                    text,
                    "the task is too long to print and {} could not be written ({e}); `mcc tasks show {id}` prints it",
                    file.display()
                );
            }
        }
        let tail = root_note.unwrap_or_default() + &stuck_line;
        for line in view.digest(&notes) {
            if text.len() + line.len() + 1 + tail.len() > PRINT_BUDGET {
                break;
            }
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str(&tail);
        (text, exit::OK, Some(done_cmd))
    }

    fn offer(&self, offer: &Offer, head: String) -> (String, u8, Option<String>) {
        let w = &self.worker;
        match offer {
            Offer::Task { .. } => self.task(offer, head),
            Offer::NothingYet { message, reason, .. } => {
                let cmd = format!("mcc worker next --as {w}");
                let mut text = format!("{head}{message}\n");
                // The hub puts the reason in its message; say it when a message does not.
                if let Some(why) = reason.as_ref().filter(|why| !message.contains(&why.text)) {
                    let _ = writeln!(text, "waiting on: {}", why.text);
                }
                (text, exit::NOTHING_YET, Some(cmd))
            }
            Offer::AllDone { message, .. } => (format!("{head}{message}\n"), exit::ALL_DONE, None),
            Offer::HandOver { message, .. } => (format!("{head}{message}\n"), exit::HAND_OVER, None),
        }
    }
}

fn safe_file_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The parts of a task a worker reads, from its wire JSON.
struct TaskView {
    id: String,
    description: String,
    read: Vec<String>,
    write: Vec<String>,
    requirements: Vec<String>,
    criteria: Vec<String>,
    validation: Option<String>,
    rules: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// A word of a printed command, quoted for the shell when it needs it.
fn quoted(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_owned(), std::borrow::Cow::into_owned)
}

/// The first `max` bytes of `text` (at a character boundary) and `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text[..end].trim_end())
}

/// How an answer starts the line naming the file that holds a `done`
/// command too long to print (`mcc mcp` reads the command from there).
pub const DONE_IN_FILE: &str = "when done: run the command under \"When done\" in ";

/// A description short enough to follow the task line itself.
const INLINE_DESCRIPTION: usize = 300;

impl TaskView {
    fn new(task: &Value) -> Self {
        Self {
            id: task["id"].as_str().unwrap_or_default().to_owned(),
            description: task["description"].as_str().unwrap_or_default().to_owned(),
            read: strings(&task["context"]["targetFiles"]),
            write: strings(&task["context"]["outputFiles"]),
            requirements: strings(&task["context"]["requirements"]),
            criteria: strings(&task["acceptance"]["criteria"]),
            validation: task["acceptance"]["validation"].as_str().map(str::to_owned),
            rules: strings(&task["context"]["relevantRules"]),
        }
    }

    /// The `done` command, runnable as printed: it names the task's output
    /// files (relative to the project root, which `done` resolves them
    /// against from any folder), and no placeholder when there are none.
    fn done_command(&self, worker: &str, attempt: u32) -> String {
        let mut cmd = format!("mcc worker done {} --as {} --attempt {attempt}", quoted(&self.id), quoted(worker));
        for out in &self.write {
            let _ = write!(cmd, " --deliverable {}", quoted(out));
        }
        cmd.push_str(" --score 5");
        cmd
    }

    fn inline_description(&self) -> bool {
        !self.description.contains('\n') && self.description.len() <= INLINE_DESCRIPTION
    }

    /// Everything after the first two lines, as printed when it all fits.
    fn details(&self, notes: &[(&str, String)]) -> String {
        let mut out = String::new();
        if !self.inline_description() {
            let _ = writeln!(out, "description:\n{}", self.description.trim_end());
        }
        for (label, text) in notes {
            let _ = writeln!(out, "{label}: {text}");
        }
        let list = |out: &mut String, label: &str, items: &[String]| {
            if !items.is_empty() {
                let _ = writeln!(out, "{label}: {}", items.join(", "));
            }
        };
        list(&mut out, "read", &self.read);
        list(&mut out, "write", &self.write);
        for (label, items) in [("requirements", &self.requirements), ("acceptance criteria", &self.criteria)] {
            if !items.is_empty() {
                let _ = writeln!(out, "{label}:");
                for item in items {
                    let _ = writeln!(out, "  - {item}");
                }
            }
        }
        if let Some(v) = &self.validation {
            let _ = writeln!(out, "checked by: {v}");
        }
        list(&mut out, "rules to load", &self.rules);
        out
    }

    /// Short lines standing for the details, most useful first, for an
    /// answer that points to the whole task in its file.
    fn digest(&self, notes: &[(&str, String)]) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.inline_description() {
            lines.push(format!("description: {}", clip(&self.description.replace('\n', " "), 400)));
        }
        for (label, text) in notes {
            lines.push(format!("{label}: {}", clip(text, 300)));
        }
        let few = |label: &str, items: &[String]| -> Option<String> {
            let first = items.first()?;
            let mut line = format!("{label} ({}): {first}", items.len());
            let mut shown = 1;
            for item in &items[1..] {
                if line.len() + item.len() > 220 {
                    break;
                }
                let _ = write!(line, ", {item}");
                shown += 1;
            }
            if shown < items.len() {
                let _ = write!(line, " … and {} more", items.len() - shown);
            }
            Some(clip(&line, 300))
        };
        lines.extend(few("write", &self.write));
        lines.extend(few("read", &self.read));
        lines.extend(few("requirements", &self.requirements));
        lines.extend(few("acceptance criteria", &self.criteria));
        if let Some(v) = &self.validation {
            lines.push(format!("checked by: {}", clip(v, 200)));
        }
        lines.extend(few("rules to load", &self.rules));
        lines
    }

    /// The whole task as Markdown, for `.mcc/tasks/ID.md`.
    fn markdown(
        &self,
        status: &str,
        done_cmd: &str,
        stuck: &[String],
        notes: &[(&str, String)],
        root: &Path,
    ) -> String {
        let mut md =
            format!("# Task {}\n\n{status}\n\nPaths are relative to the project root {}.\n", self.id, root.display());
        let _ = write!(md, "\n## When done\n\n    {done_cmd}\n");
        if !self.description.is_empty() {
            let _ = write!(md, "\n## Description\n\n{}\n", self.description.trim_end());
        }
        for (label, text) in notes {
            let mut title = (*label).to_owned();
            title[..1].make_ascii_uppercase();
            let _ = write!(md, "\n## {title}\n\n{text}\n");
        }
        let section = |md: &mut String, title: &str, items: &[String]| {
            if !items.is_empty() {
                let _ = write!(md, "\n## {title}\n\n");
                for item in items {
                    let _ = writeln!(md, "- {item}");
                }
            }
        };
        section(&mut md, "Read", &self.read);
        section(&mut md, "Write", &self.write);
        section(&mut md, "Requirements", &self.requirements);
        section(&mut md, "Acceptance criteria", &self.criteria);
        if let Some(v) = &self.validation {
            let _ = write!(md, "\n## Checked by\n\n    {v}\n");
        }
        section(&mut md, "Rules to load", &self.rules);
        let _ = write!(md, "\n## If you are stuck\n\n");
        for line in stuck {
            let _ = writeln!(md, "    {line}");
        }
        let _ = write!(md, "\n{SCORE_NOTE}\n");
        md
    }
}

const SCORE_NOTE: &str = "--score: rate your own context 1-5 (5 fresh; 2 or less means hand over to a fresh chat)";

/// The runner of headless workers' commands: one slot per worker, so none
/// waits in line while its lease runs.
fn headless_runner() -> &'static crate::command::Supervisor {
    static RUNNER: std::sync::OnceLock<crate::command::Supervisor> = std::sync::OnceLock::new();
    RUNNER.get_or_init(|| crate::command::Supervisor::new(64))
}

/// On Ctrl-C or SIGTERM, kill every task command's whole process group
/// before exiting: nothing keeps writing files another worker may get.
fn kill_commands_on_signal() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let code = runtime.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return 1;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => 130,
                _ = term.recv() => 143,
            }
        });
        headless_runner().shutdown();
        eprintln!("mcc worker run: stopped; the task commands were killed with everything they started");
        std::process::exit(code);
    });
}

/// Record the task commands' groups under the project's `.mcc/commands`,
/// as a hub does, first killing what a worker or hub killed with SIGKILL left running
/// there: a killed worker cannot kill its command itself. Without a project
/// folder (`--hub` only) nothing is recorded.
fn record_command_groups(root: Option<&Path>) {
    let Some(state_dir) = root.map(|r| r.join(".mcc")).filter(|d| d.is_dir()) else { return };
    match headless_runner().record_groups_in(&state_dir) {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "mcc worker run: killed {n} command group(s) that a stopped worker or hub had left running (records in {})",
            state_dir.join("commands").display()
        ),
        Err(e) => eprintln!(
            "mcc worker run: warning: cannot keep records in {}: {e}; a worker killed with SIGKILL would leave its command running",
            state_dir.join("commands").display()
        ),
    }
}

/// `mcc worker run`: one or more headless workers.
fn headless(a: &RunArgs) -> u8 {
    kill_commands_on_signal();
    let base = match name_of(&a.who) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let target = match target(&a.who) {
        Ok(t) => t,
        Err(_) if run_finished() => {
            println!("all work is done: the run finished and its hub has stopped");
            return exit::ALL_DONE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let root = target.root.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_else(|| PathBuf::from("."));
    record_command_groups(target.root.as_deref());
    if a.parallel <= 1 {
        return Headless { name: base, target, root, command: a.command.clone(), max_tasks: a.max_tasks }.run();
    }
    let handles: Vec<_> = (1..=a.parallel)
        .map(|k| {
            let worker = Headless {
                name: format!("{base}-{k}"),
                target: target.clone(),
                root: root.clone(),
                command: a.command.clone(),
                max_tasks: a.max_tasks,
            };
            std::thread::spawn(move || worker.run())
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(exit::ERROR)).max().unwrap_or(exit::OK)
}

struct Headless {
    name: String,
    target: Target,
    root: PathBuf,
    command: Vec<String>,
    max_tasks: Option<usize>,
}

/// How a command run for a task ended.
enum Outcome {
    Done { deliverables: Vec<String>, notes: Option<String> },
    Failed(String),
}

impl Headless {
    fn log(&self, line: &str) {
        println!("[{}] {line}", self.name);
    }

    fn request(&self, msg: &ClientMsg, wait: Duration) -> Result<ServerMsg, ClientError> {
        ask(&self.target, msg, wait)
    }

    fn run(&self) -> u8 {
        let wait = Duration::from_secs(25);
        let mut done = 0usize;
        let mut answer = self.request(&ClientMsg::Next { worker: self.name.clone(), wait_ms: Some(ms(wait)) }, wait);
        loop {
            let offer = match answer {
                Ok(ServerMsg::Offer { offer }) => offer,
                Ok(ServerMsg::Verdict { next, task_id, accepted, reasons, .. }) => {
                    if accepted {
                        self.log(&format!("accepted {task_id}"));
                    } else {
                        self.log(&format!("rejected {task_id}: {}", reasons.join("; ")));
                    }
                    next
                }
                Ok(ServerMsg::Ack { next: Some(next), message, .. }) => {
                    self.log(&message);
                    next
                }
                Ok(ServerMsg::Error { error, .. }) => {
                    self.log(&format!("error: {error}"));
                    return exit::ERROR;
                }
                Ok(other) => {
                    self.log(&format!("error: unexpected answer {}", other.to_json()));
                    return exit::ERROR;
                }
                Err(ClientError::Timeout(_) | ClientError::Broken(_)) => {
                    // A cut connection loses nothing: ask again for what we hold.
                    answer =
                        self.request(&ClientMsg::Next { worker: self.name.clone(), wait_ms: Some(ms(wait)) }, wait);
                    continue;
                }
                Err(_) if run_finished() => {
                    // The run's hub stopped because the work is finished.
                    self.log("all work is done: the run finished and its hub has stopped");
                    return exit::ALL_DONE;
                }
                Err(e) => {
                    self.log(&format!("error: {e}"));
                    return exit::ERROR;
                }
            };
            match offer {
                Offer::Task { task, attempt, lease_ms, reasons, .. } => {
                    if self.max_tasks.is_some_and(|m| done >= m) {
                        let _ = self.request(&ClientMsg::Leave { worker: self.name.clone() }, Duration::ZERO);
                        return exit::OK;
                    }
                    let id = task["id"].as_str().unwrap_or_default().to_owned();
                    self.log(&format!("task {id} attempt {attempt}"));
                    let outcome = self.execute(&task, &id, attempt, lease_ms, &reasons);
                    done += 1;
                    answer = match outcome {
                        Outcome::Done { deliverables, notes } => self.request(
                            &ClientMsg::Done {
                                worker: self.name.clone(),
                                task_id: id,
                                attempt: Some(attempt),
                                deliverables,
                                score: None,
                                notes,
                                wait_ms: Some(ms(wait)),
                            },
                            wait,
                        ),
                        Outcome::Failed(reason) => {
                            self.log(&format!("failed {id}: {reason}"));
                            self.request(
                                &ClientMsg::Fail {
                                    worker: self.name.clone(),
                                    task_id: id,
                                    attempt: Some(attempt),
                                    reason,
                                    wait_ms: Some(ms(wait)),
                                },
                                wait,
                            )
                        }
                    };
                }
                Offer::NothingYet { .. } => {
                    if self.max_tasks.is_some_and(|m| done >= m) {
                        return exit::OK;
                    }
                    answer =
                        self.request(&ClientMsg::Next { worker: self.name.clone(), wait_ms: Some(ms(wait)) }, wait);
                }
                Offer::AllDone { message, .. } => {
                    self.log(&message);
                    return exit::ALL_DONE;
                }
                Offer::HandOver { message, .. } => {
                    self.log(&message);
                    return exit::HAND_OVER;
                }
            }
        }
    }

    /// Run the command for one task, extending the lease while it runs.
    fn execute(&self, task: &Value, id: &str, attempt: u32, lease_ms: u64, reasons: &[String]) -> Outcome {
        let dir = self.root.join(".mcc").join("tasks");
        let file = dir.join(format!("{}.json", safe_file_name(id)));
        let body = serde_json::to_string_pretty(task).expect("serializes");
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &body)) {
            return Outcome::Failed(format!("cannot write {}: {e}", file.display()));
        }
        let Some((program, args)) = self.command.split_first() else {
            return Outcome::Failed("no command given after --".to_owned());
        };
        let lease = Duration::from_millis(lease_ms);
        // Stop before the lease runs out, so the task is ours when we report;
        // the runner kills the command's whole process group at that limit.
        let margin = (lease / 10).clamp(Duration::from_millis(500), Duration::from_mins(1));
        let job = crate::command::Job::program(program, args, &self.root, lease.saturating_sub(margin))
            .env("MCC_TASK_FILE", &file)
            .env("MCC_TASK_ID", id)
            .env("MCC_ATTEMPT", attempt.to_string())
            .env("MCC_WORKER", &self.name)
            .env("MCC_HUB", &self.target.url)
            .env("MCC_REASONS", reasons.join("\n"))
            .stdin(body.into_bytes());
        let (tx, rx) = std::sync::mpsc::channel();
        let _handle = headless_runner().start(job, move |outcome| drop(tx.send(outcome)));
        let beat = (lease / 3).clamp(Duration::from_millis(200), Duration::from_mins(1));
        let ran = loop {
            match rx.recv_timeout(beat) {
                Ok(outcome) => break outcome,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let note = ClientMsg::Progress {
                        worker: self.name.clone(),
                        task_id: id.to_owned(),
                        attempt: Some(attempt),
                        note: format!("`{program}` still running"),
                    };
                    // The lease counts from this message; a refused one means the task is gone.
                    if let Ok(ServerMsg::Error { error, .. }) = self.request(&note, Duration::ZERO) {
                        self.log(&format!("lost {id}: {error}"));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Outcome::Failed(format!("the runner of `{program}` stopped"));
                }
            }
        };
        if ran.timed_out {
            return Outcome::Failed(format!(
                "`{program}` ran past the task's lease of {} and was stopped with everything it started",
                human(lease)
            ));
        }
        let (out, err) = (ran.stdout, ran.stderr);
        if ran.code != Some(0) {
            let tail = crate::command::tail(&err, 400);
            if err.starts_with("mcc: could not start") {
                return Outcome::Failed(tail);
            }
            let how = ran.code.map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"));
            return Outcome::Failed(if tail.is_empty() {
                format!("`{program}` {how}")
            } else {
                format!("`{program}` {how}: {tail}")
            });
        }
        let result: Option<Value> =
            out.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str(l.trim()).ok());
        if let Some(r) = &result
            && r["is_error"] == true
        {
            let why = r["result"].as_str().or(r["error"].as_str()).unwrap_or("the command reported is_error");
            return Outcome::Failed(format!(
                "`{program}` exited 0 but reported an error: {}",
                crate::command::tail(why, 400)
            ));
        }
        let listed = result.as_ref().map(|r| strings(&r["deliverables"])).filter(|d| !d.is_empty());
        let deliverables = listed.unwrap_or_else(|| {
            strings(&task["context"]["outputFiles"]).into_iter().filter(|p| self.root.join(p).exists()).collect()
        });
        if let Some(missing) = deliverables.iter().find(|p| !self.root.join(p).exists()) {
            return Outcome::Failed(format!("`{program}` named deliverable `{missing}`, which does not exist"));
        }
        let notes = result.as_ref().and_then(|r| r["notes"].as_str().map(str::to_owned));
        Outcome::Done { deliverables, notes }
    }
}
