//! `mcc tasks add | list | show | retry | cancel` and `mcc answer`: the
//! engineer's hands on the queue. A big `add` goes in pieces the hub
//! accepts (under its frame limit), dependencies first; `list` shows a page
//! of tasks, one line each; `show` prints one task with its history (every
//! attempt, verdict, reason, validation output and question), read from the
//! store, with the hub up or stopped.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::exit;
use crate::client;

mod submitted;
use crate::wire::{ClientMsg, ServerMsg, TaskInfo, TaskSummary};

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Add tasks from a JSON file (a task or an array), `-` for stdin, or one task from flags.
    #[command(
        after_help = "Examples:\n  mcc tasks add tasks.json\n  mcc tasks add --id fix-1 --description \"Fix the parser\" --write src/parse.rs --validation \"cargo test parse\"\n\nExit codes: 0 added; 1 error (nothing is added)."
    )]
    Add(AddArgs),
    /// List tasks, optionally of one state: a page of one line each.
    #[command(
        after_help = "Examples:\n  mcc tasks list --state blocked\n  mcc tasks list --state ready --limit 50 --after task-050"
    )]
    List(ListArgs),
    /// Everything about one task: every attempt with its verdict, reasons and validation output, its questions; or the files one attempt submitted.
    #[command(
        after_help = "Examples:\n  mcc tasks show task-001\n  mcc tasks show task-001 --attempt 2\n  mcc tasks show task-001 --attempt 2 --file src/parse.rs > parse.rs\n\nWorks with the hub stopped too: read from the project's store (.mcc/state.db, or where .mcc/store.json says). --attempt and --file read this project's store (the folder you are in), whatever --hub says.\n\nExit codes: 0 printed; 1 error (no such task, attempt or file in the store, or the file was not kept: the message says what there is and what to run)."
    )]
    Show(ShowArgs),
    /// Put a failed or cancelled task back in the queue.
    #[command(after_help = "Example:\n  mcc tasks retry task-001")]
    Retry(OneArgs),
    /// Cancel a task that is not finished.
    #[command(after_help = "Example:\n  mcc tasks cancel task-001")]
    Cancel(OneArgs),
}

#[derive(Debug, Args, Clone)]
pub struct HubArg {
    /// Hub address, such as `ws://127.0.0.1:3100`; several separated by commas are tried in turn (a hub with a standby). Default: found through the nearest .mcc/.
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
    /// At most this many tasks (default 50; with --json, all unless given).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start after this task id (the last one of the page before).
    #[arg(long)]
    pub after: Option<String>,
    #[command(flatten)]
    pub hub: HubArg,
}

/// Tasks per page when `--limit` is not given.
const PAGE: usize = 50;
/// The most tasks one `tasks_page` answer holds (the hub's bound).
const MAX_PAGE: usize = 1000;
/// The longest description printed in a list line.
const LINE: usize = 80;

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub task: String,
    /// List the files this attempt submitted at `done` (path, size, SHA-256, kept or why not).
    #[arg(long)]
    pub attempt: Option<u32>,
    /// With --attempt: print exactly the bytes the attempt submitted for this path (with --json: one object, the bytes in base64).
    #[arg(long, requires = "attempt")]
    pub file: Option<String>,
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

/// What the hub may take beyond the client's deadline (`--timeout`): a piece of
/// up to 1,000 tasks is one commit.
const LIMIT: Duration = Duration::from_secs(30);

fn fail(hub: &HubArg, message: &str) -> u8 {
    if hub.json {
        println!("{}", json!({"type": "error", "error": message}));
    }
    eprintln!("error: {message}");
    exit::ERROR
}

/// Send one message; print the ack's message (or the error).
fn simple(hub: &HubArg, options: client::Options, msg: &ClientMsg, then: &str) -> u8 {
    match client::ask_once(hub.hub.as_deref(), options, msg, LIMIT) {
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

pub fn answer(args: AnswerArgs, options: client::Options) -> u8 {
    let msg = ClientMsg::Answer { task_id: args.task.clone(), text: args.text };
    simple(&args.hub, options, &msg, "next: `mcc status` to follow it")
}

pub fn run(cmd: TasksCmd, options: client::Options) -> u8 {
    match cmd {
        TasksCmd::Add(a) => add(a, options),
        TasksCmd::List(a) => list(&a, options),
        TasksCmd::Show(a) => show(&a, options),
        TasksCmd::Retry(a) => {
            simple(&a.hub, options, &ClientMsg::Retry { task_id: a.task }, "next: `mcc status` to follow it")
        }
        TasksCmd::Cancel(a) => simple(&a.hub, options, &ClientMsg::Cancel { task_id: a.task }, "next: `mcc status`"),
    }
}

/// `mcc tasks show`: the task from the hub, or from the store when no hub
/// answers (read-only), with its history from the store either way: the
/// same lines with the hub up or stopped.
fn show(a: &ShowArgs, options: client::Options) -> u8 {
    if let Some(attempt) = a.attempt {
        return submitted::show(a, attempt);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    // The store read is this project's: not when --hub names some hub.
    let root = a.hub.hub.is_none().then(|| client::find_root(&cwd)).flatten();
    let asked =
        client::ask_once(a.hub.hub.as_deref(), options, &ClientMsg::ShowTask { task_id: a.task.clone() }, LIMIT);
    let mut info = match asked {
        Ok((ServerMsg::TaskInfo { task }, _)) => *task,
        Ok((ServerMsg::Error { error, .. }, _)) => return fail(&a.hub, &error),
        Ok((other, _)) => return fail(&a.hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(e) => match root.as_deref().and_then(|r| crate::store::read::stored_task(r, &a.task)) {
            Some(info) => info,
            // No hub, and the store does not have it either (or there is no store).
            None if root.as_deref().is_some_and(|r| crate::store::read::stored(r).is_some()) => {
                return fail(
                    &a.hub,
                    &format!("unknown task `{}` in this project's store (no hub is running: {e})", a.task),
                );
            }
            None => return fail(&a.hub, &e),
        },
    };
    if info.history.is_none()
        && let Some(root) = &root
    {
        match crate::report::task_history(root, &a.task) {
            Ok(history) => info.history = history,
            Err(e) => eprintln!("warning: the task's history cannot be read from the store: {e}"),
        }
    }
    if a.hub.json {
        return match serde_json::to_string(&info) {
            Ok(text) => {
                println!("{text}");
                exit::OK
            }
            Err(e) => fail(&a.hub, &format!("task {} cannot be written as JSON: {e}", info.summary.id)),
        };
    }
    let kept = root.as_deref().map(|r| submitted::kept_counts(r, &info)).unwrap_or_default();
    print!("{}", shown(&info, &kept));
    exit::OK
}

/// Wall-clock ms as a person reads it (UTC).
fn at(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `text` indented by `pad`, line by line.
fn indented(text: &str, pad: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(pad);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A task and its history as `mcc tasks show` prints them; `kept` is, by
/// attempt, how many of its submitted files the store kept, of how many.
fn shown(info: &TaskInfo, kept: &HashMap<u32, (usize, usize)>) -> String {
    let t = &info.summary;
    let mut out = String::new();
    let phase = t.phase.as_deref().map(|p| format!(" · phase {p}")).unwrap_or_default();
    let holder = t.holder.as_deref().map(|h| format!(" · held by {h}")).unwrap_or_default();
    out.push_str(&format!("task {} · {} · attempt {}{phase}{holder}\n", t.id, t.state, t.attempt));
    out.push_str(&indented(&t.description, "  "));
    let spec = &info.task;
    let list = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
    };
    for (label, files) in
        [("reads", list(&spec["context"]["targetFiles"])), ("writes", list(&spec["context"]["outputFiles"]))]
    {
        if !files.is_empty() {
            out.push_str(&format!("  {label}: {}\n", files.join(", ")));
        }
    }
    if !t.dependencies.is_empty() {
        out.push_str(&format!("  after: {}\n", t.dependencies.join(", ")));
    }
    if let Some(validation) = spec["acceptance"]["validation"].as_str() {
        out.push_str(&format!("  validation: {validation}\n"));
    }
    let completed = info.completed_at.as_deref().map(|c| format!(", completed {c}")).unwrap_or_default();
    out.push_str(&format!("  created {}{completed}\n", info.created_at));
    if let Some(q) = &t.question {
        out.push_str(&format!("  question: {q} → mcc answer {} \"...\"\n", t.id));
    }
    let Some(history) = &info.history else {
        if !t.reasons.is_empty() {
            out.push_str(&format!("  last reasons: {}\n", t.reasons.join("; ")));
        }
        out.push_str("  (no history: this project's store is not readable from here)\n");
        return out;
    };
    if let Some(run) = history.run {
        out.push_str(&format!("  run {run} (`mcc report --run {run}`)\n"));
    }
    if history.attempts.is_empty() {
        out.push_str("attempts: none yet\n");
    } else {
        out.push_str("attempts:\n");
    }
    for a in &history.attempts {
        let end = a.ended_ms.map_or_else(
            || "running".to_owned(),
            |end| format!("to {} ({:.1}s)", at(end), (end - a.started_ms) as f64 / 1000.0),
        );
        out.push_str(&format!("  {} by {} · {} {end} · {}\n", a.attempt, a.worker, at(a.started_ms), a.verdict));
        for reason in &a.reasons {
            out.push_str(&indented(reason, "      reason: ").replace("\n      reason: ", "\n              "));
        }
        if !a.files.is_empty() {
            out.push_str(&format!("      files submitted: {}\n", a.files.join(", ")));
        }
        for c in &a.conflicts {
            let holder = if c.holder.is_empty() { String::new() } else { format!(", held by {}", c.holder) };
            out.push_str(&format!(
                "      conflict: changed {}, which task {}{holder} reserves
",
                c.file, c.task
            ));
        }
        if !a.outside.is_empty() {
            out.push_str(&format!(
                "      written outside the task: {}
",
                a.outside.join(", ")
            ));
        }
        if !a.shared.is_empty() {
            out.push_str(&format!(
                "      shared changes (others worked in the same checkout; blamed on nobody): {}
",
                a.shared.join(", ")
            ));
        }
        if let Some((kept, of)) = kept.get(&a.attempt) {
            out.push_str(&format!(
                "      files kept: {kept} of {of} (`mcc tasks show {} --attempt {}` lists them)\n",
                t.id, a.attempt
            ));
        }
        if let Some(v) = &a.validation {
            let how = if v.timed_out {
                "timed out".to_owned()
            } else {
                v.exit_code.map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"))
            };
            out.push_str(&format!("      validation `{}` {how}\n", v.command));
            for (name, tail) in [("stdout", &v.stdout_tail), ("stderr", &v.stderr_tail)] {
                if !tail.trim().is_empty() {
                    out.push_str(&format!("        {name} (last {} bytes at most):\n", crate::store::OUTPUT_TAIL));
                    out.push_str(&indented(tail, "          "));
                }
            }
        }
    }
    for q in &history.questions {
        let by = q.worker.as_deref().map(|w| format!(" by {w}")).unwrap_or_default();
        let attempt = q.attempt.map(|n| format!(" (attempt {n})")).unwrap_or_default();
        out.push_str(&format!("question{by}{attempt} at {}: {}\n", at(q.asked_ms), q.question));
        match (&q.answer, q.answered_ms) {
            (Some(answer), Some(when)) => out.push_str(&format!("  answer at {}: {answer}\n", at(when))),
            _ => out.push_str(&format!("  not answered yet: mcc answer {} \"...\"\n", t.id)),
        }
    }
    out
}

fn add(a: AddArgs, options: client::Options) -> u8 {
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
    let most = piece_tasks(&a.hub);
    let pieces = pieces(dependencies_first(tasks), PIECE_BYTES, most);
    let total: usize = pieces.iter().map(Vec::len).sum();
    let mut added: Vec<String> = Vec::new();
    for (n, piece) in pieces.into_iter().enumerate() {
        let first = piece.first().and_then(|t| t.get("id")).and_then(Value::as_str).unwrap_or_default().to_owned();
        let error = match client::ask_once(a.hub.hub.as_deref(), options, &ClientMsg::AddTasks { tasks: piece }, LIMIT)
        {
            Ok((ServerMsg::TasksAdded { ids }, _)) => {
                added.extend(ids);
                continue;
            }
            Ok((ServerMsg::Error { error, .. }, _)) => error,
            Ok((other, _)) => format!("unexpected answer from the hub: {}", other.to_json()),
            Err(e) => e,
        };
        if n == 0 {
            return fail(&a.hub, &error);
        }
        // Each piece is all or none; the pieces before this one are in.
        return fail(
            &a.hub,
            &format!(
                "{error}; {} of {total} tasks were added before this (pieces of at most {most} tasks and {PIECE_BYTES} bytes), the rest from `{first}` on were not: fix that and add the rest",
                added.len()
            ),
        );
    }
    if a.hub.json {
        println!("{}", json!({"type": "tasks_added", "ids": added}));
    } else {
        let shown = if added.len() > 10 {
            format!("{} ... {}", added[..5].join(", "), added[added.len() - 2..].join(", "))
        } else {
            added.join(", ")
        };
        println!("added {} task{}: {shown}", added.len(), if added.len() == 1 { "" } else { "s" });
        println!("next: workers pick them up with `mcc worker next --as NAME`; follow with `mcc status`");
    }
    exit::OK
}

/// The most JSON sent in one `add_tasks`: well under the hub's frame limit.
const PIECE_BYTES: usize = crate::hub::MAX_FRAME * 3 / 4;
/// The most tasks sent in one `add_tasks`: a tenth of what a hub takes by
/// default (`--max-tasks-per-message`), and small enough that each piece is
/// one short commit, so workers are answered between pieces.
const PIECE_TASKS: usize = 1_000;

/// The tasks in their order, except that a task comes after every task of
/// the file it depends on: then each piece only depends on earlier ones.
fn dependencies_first(tasks: Vec<Value>) -> Vec<Value> {
    let id = |t: &Value| t.get("id").and_then(Value::as_str).map(str::to_owned);
    let deps = |t: &Value| -> Vec<String> {
        t.get("dependencies")
            .and_then(Value::as_array)
            .map(|d| d.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let index: HashMap<String, usize> = tasks.iter().enumerate().filter_map(|(i, t)| Some((id(t)?, i))).collect();
    let mut placed: HashSet<usize> = HashSet::new();
    let mut order = Vec::with_capacity(tasks.len());
    for start in 0..tasks.len() {
        // Depth-first, without recursion: a deep chain must not overflow the stack.
        let mut stack = vec![(start, false)];
        let mut on_path: HashSet<usize> = HashSet::new();
        while let Some((i, expanded)) = stack.pop() {
            if placed.contains(&i) {
                continue;
            }
            if expanded {
                on_path.remove(&i);
                placed.insert(i);
                order.push(i);
                continue;
            }
            if !on_path.insert(i) {
                // A cycle: the hub names it when the tasks arrive.
                continue;
            }
            stack.push((i, true));
            for dep in deps(&tasks[i]).iter().rev() {
                if let Some(&j) = index.get(dep)
                    && !placed.contains(&j)
                    && !on_path.contains(&j)
                {
                    stack.push((j, false));
                }
            }
        }
    }
    let mut slots: Vec<Option<Value>> = tasks.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Tasks a piece may carry: [`PIECE_TASKS`], or fewer if the project's
/// hub takes fewer in one message (its `hub.json` says).
fn piece_tasks(hub: &HubArg) -> usize {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let limit = hub
        .hub
        .is_none()
        .then(|| client::find_root(&cwd))
        .flatten()
        .and_then(|root| crate::layout::Layout::of_root(&root).read_hub_file())
        .and_then(|file| file.max_tasks_per_message);
    limit.map_or(PIECE_TASKS, |most| most.clamp(1, PIECE_TASKS))
}

/// Consecutive pieces of at most `budget` bytes of JSON (a bigger task goes
/// alone) and `most` tasks.
fn pieces(tasks: Vec<Value>, budget: usize, most: usize) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = Vec::new();
    let mut size = 0;
    for task in tasks {
        let len = task.to_string().len() + 1;
        if out.last().is_none_or(|piece| size + len > budget || piece.len() >= most) {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("pushed above").push(task);
    }
    out
}

/// Up to `limit` tasks after `a.after` from the hub, a page at a time (never
/// the whole store in one message), and whether more follow. `Err` when no
/// hub answered; a refusal of the hub is printed and ends the command.
fn from_hub(
    a: &ListArgs,
    options: client::Options,
    limit: usize,
) -> Result<Result<(Vec<TaskSummary>, bool), String>, String> {
    let mut tasks = Vec::new();
    let mut after = a.after.clone();
    while tasks.len() < limit {
        let want = (limit - tasks.len()).min(MAX_PAGE);
        let msg = ClientMsg::TasksPage { state: a.state.clone(), limit: Some(want), after: after.clone() };
        let page = match client::ask_once(a.hub.hub.as_deref(), options, &msg, LIMIT) {
            Ok((ServerMsg::TasksPage { page }, _)) => page,
            Ok((ServerMsg::Error { error, .. }, _)) => return Ok(Err(error)),
            Ok((other, _)) => return Ok(Err(format!("unexpected answer from the hub: {}", other.to_json()))),
            Err(e) if tasks.is_empty() => return Err(e),
            Err(e) => return Ok(Err(e)),
        };
        tasks.extend(page.tasks);
        after = page.next_after;
        if after.is_none() {
            return Ok(Ok((tasks, false)));
        }
    }
    Ok(Ok((tasks, after.is_some())))
}

fn list(a: &ListArgs, options: client::Options) -> u8 {
    let limit = a.limit.unwrap_or(if a.hub.json { usize::MAX } else { PAGE });
    let (from, more) = match from_hub(a, options, limit) {
        Ok(Ok(listed)) => listed,
        Ok(Err(e)) => return fail(&a.hub, &e),
        // No hub: the store still says what is there, read-only.
        Err(e) => {
            let Some(stored) = client::status::stored_here() else { return fail(&a.hub, &e) };
            let matching = stored.tasks.into_iter().filter(|t| a.state.as_deref().is_none_or(|s| t.state == s));
            let mut from: Vec<TaskSummary> = match &a.after {
                Some(after) => matching.skip_while(|t| t.id != *after).skip(1).collect(),
                None => matching.collect(),
            };
            let more = from.len() > limit;
            from.truncate(limit);
            (from, more)
        }
    };
    if a.hub.json {
        println!("{}", json!(from));
        return exit::OK;
    }
    if from.is_empty() {
        println!("no tasks{}", a.state.as_deref().map(|s| format!(" in state {s}")).unwrap_or_default());
    }
    for t in &from {
        let holder = t.holder.as_deref().map(|h| format!(" by {h}")).unwrap_or_default();
        println!("{:<20} {:<10} attempt {}{holder}  {}", t.id, t.state, t.attempt, one_line(&t.description));
    }
    if more {
        let last = from.last().map(|t| t.id.as_str()).unwrap_or_default();
        let state = a.state.as_deref().map(|s| format!(" --state {s}")).unwrap_or_default();
        println!("more follow: mcc tasks list{state} --limit {limit} --after {last}");
    }
    if from.iter().any(|t| one_line(&t.description) != t.description) {
        println!("descriptions cut to one line: `mcc tasks show TASK` prints one whole");
    }
    exit::OK
}

/// The first line of `text`, at most [`LINE`] characters.
fn one_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > LINE || first.len() < text.trim_end().len() {
        let cut: String = first.chars().take(LINE - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        first.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_pieces_stay_under_the_budget() {
        let t = |id: &str, deps: &[&str]| json!({"id": id, "description": "x".repeat(50), "dependencies": deps});
        let tasks = vec![t("a", &["c"]), t("b", &[]), t("c", &["b"]), t("d", &["d2"]), t("d2", &["d"])];
        let ids: Vec<String> = dependencies_first(tasks).iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
        // `a` needs `c`, which needs `b`; the d/d2 cycle is kept for the hub to name.
        assert_eq!(ids, ["b", "c", "a", "d2", "d"]);
        let many: Vec<Value> = (0..100).map(|i| t(&format!("t{i:02}"), &[])).collect();
        let one = many[0].to_string().len() + 1;
        let split = pieces(many.clone(), one * 30, PIECE_TASKS);
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [30, 30, 30, 10]);
        let split = pieces(many, one * 30, 25);
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [25, 25, 25, 25]);
    }

    #[test]
    fn a_long_description_is_cut_to_one_line() {
        assert_eq!(one_line("short"), "short");
        assert_eq!(one_line("first\nsecond"), "first…");
        let cut = one_line(&"word ".repeat(100));
        assert!(cut.chars().count() <= LINE && cut.ends_with('…'), "{cut}");
    }
}
