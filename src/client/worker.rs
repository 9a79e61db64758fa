//! A worker's verbs (`next`, `done`, `block`, `fail`, `progress`, `leave`)
//! as functions: typed arguments in, a typed [`Answer`] out (the text a
//! shell user reads, the exit code, the next call to make). `mcc worker`
//! prints the answer; `mcc mcp` turns it into a tool result, in-process.
//!
//! Also kept here: the grant last shown to a worker on this machine
//! (`.mcc/grants/NAME`), so a command given without `--attempt` still
//! carries its fencing token.

mod text;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::worktree::Worktree;
use super::{ClientError, Target, exit};
use crate::layout::Layout;
use crate::wire::{ClientMsg, ServerMsg};

pub use text::{PRINT_BUDGET, human, strings};

/// The least a hub waits for a `done`'s verdict by default (`VERDICT_WAIT_FLOOR`),
/// even when the worker asked to wait for nothing.
const VERDICT_WAIT: Duration = Duration::from_secs(10);

/// Who asks, and where the hub is.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    /// The worker's name (`--as` / `MCC_WORKER`); asked for when missing.
    pub name: Option<String>,
    /// The hub's address (`--hub` / `MCC_HUB`); default: found through the nearest `.mcc/`.
    pub hub: Option<String>,
    /// How to reach it (`--transport`, `--timeout`).
    pub options: super::Options,
    /// Work in a git worktree of its own under `.mcc/worktrees/` (`--worktree`).
    pub worktree: bool,
    /// What it can do and which model it runs, said with every `next`.
    pub kit: Kit,
}

/// What a worker says of itself on `next`: `mcc worker next`, `mcc worker
/// run` and `mcc mcp` take these options; the hub keeps the last it was told.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Kit {
    /// What you can do, comma-separated, such as rust,docs: tasks whose `needs` you have come to you (or set `MCC_CAN`).
    #[arg(long, env = "MCC_CAN", value_name = "LIST", value_delimiter = ',', value_parser = capability)]
    pub can: Vec<String>,
    /// The model you run, such as opus: the workflow's `assign` may route by it (or set `MCC_MODEL`).
    #[arg(long, env = "MCC_MODEL", value_name = "NAME", value_parser = capability)]
    pub model: Option<String>,
}

impl Kit {
    /// The options as typed on a command line (`--can rust,docs --model opus`), empty when none.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.can.is_empty() {
            args.extend(["--can".to_owned(), self.can.join(",")]);
        }
        if let Some(model) = &self.model {
            args.extend(["--model".to_owned(), model.clone()]);
        }
        args
    }
}

/// A capability or model name: a word of letters, digits, `-`, `_`, `.`, `:` or `/`.
pub fn capability(text: &str) -> Result<String, String> {
    let word = text.trim();
    let fine = |c: char| c.is_alphanumeric() || "-_.:/".contains(c);
    if word.is_empty() || word.len() > 64 || !word.chars().all(fine) {
        return Err(format!(
            "`{text}` is not a name such as rust or claude-opus-4: use letters, digits, - _ . : / (at most 64)"
        ));
    }
    Ok(word.to_owned())
}

/// `done`: a task finished, with the files written.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub task: String,
    pub deliverables: Vec<String>,
    pub score: Option<u8>,
    pub notes: Option<String>,
    /// The attempt worked on; default: the last one this machine was shown for the task.
    pub attempt: Option<u32>,
    /// How long to wait for the next task.
    pub wait: Duration,
    /// What the attempt cost, if known (`--cost`, `--tokens`).
    pub usage: Option<crate::wire::Usage>,
}

/// `block`: a question for the engineer.
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub task: String,
    pub question: String,
    pub attempt: Option<u32>,
    pub wait: Duration,
    pub usage: Option<crate::wire::Usage>,
}

/// `fail`: giving a task up.
#[derive(Debug, Clone, Default)]
pub struct Fail {
    pub task: String,
    pub reason: String,
    pub attempt: Option<u32>,
    pub wait: Duration,
    pub usage: Option<crate::wire::Usage>,
}

/// `progress`: a note on a held task, extending its lease.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub task: String,
    pub note: String,
    pub attempt: Option<u32>,
}

/// The call an answer says to make next, as data: the CLI prints it as an
/// `mcc worker ...` line, `mcc mcp` as a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextCall {
    /// `mcc worker next`.
    Next,
    /// `mcc worker done TASK --attempt N --deliverable PATH... --score 5`.
    Done { task: String, attempt: Option<u32>, deliverables: Vec<String>, score: u8 },
}

impl NextCall {
    /// The shell command, runnable as printed by `worker`.
    pub fn command(&self, worker: &str) -> String {
        use std::fmt::Write as _;
        match self {
            Self::Next => format!("mcc worker next --as {}", text::quoted(worker)),
            Self::Done { task, attempt, deliverables, score } => {
                let mut cmd = format!("mcc worker done {} --as {}", text::quoted(task), text::quoted(worker));
                if let Some(attempt) = attempt {
                    let _ = write!(cmd, " --attempt {attempt}");
                }
                for path in deliverables {
                    let _ = write!(cmd, " --deliverable {}", text::quoted(path));
                }
                let _ = write!(cmd, " --score {score}");
                cmd
            }
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The hub's own answer (what `--json` prints, with the exit code and next command).
    Hub(ServerMsg),
    /// No hub answered because the run finished and its hub stopped: not a crash.
    RunFinished,
    /// No answer: the worker name, the project or a deliverable was missing,
    /// or the hub's answer could not be used.
    Unreached,
    /// No answer because the hub is down or did not answer: run the same
    /// command again later (exit 3), never start a hub.
    HubDown,
}

/// What one verb came to.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The worker who asked (empty when no name was given).
    pub worker: String,
    /// What a shell user reads: printed as is, lines ending in `\n`, except
    /// for [`exit::ERROR`], where it is the message alone (the CLI prints
    /// it as `error: MESSAGE` on stderr).
    pub text: String,
    /// The exit code (`exit::OK`: a task, `NOTHING_YET` (also: the hub is
    /// down, run the same command again), `ALL_DONE`, `HAND_OVER`, `ERROR`).
    pub code: u8,
    /// What to call next, when the answer names a call.
    pub next: Option<NextCall>,
    pub source: Source,
    /// The folder to work in, when it is not the project's root: the worker's own worktree.
    pub work_in: Option<PathBuf>,
}

impl Answer {
    fn unreached(worker: String, message: String) -> Self {
        Self { worker, text: message, code: exit::ERROR, next: None, source: Source::Unreached, work_in: None }
    }

    fn hub_down(worker: String, text: String) -> Self {
        Self { worker, text, code: exit::NOTHING_YET, next: None, source: Source::HubDown, work_in: None }
    }

    fn run_finished(worker: String) -> Self {
        Self {
            worker,
            text: "all work is done: the run finished and its hub has stopped; you can stop\n".to_owned(),
            code: exit::ALL_DONE,
            next: None,
            source: Source::RunFinished,
            work_in: None,
        }
    }

    /// The next call as the shell command it prints as.
    pub fn next_command(&self) -> Option<String> {
        self.next.as_ref().map(|call| call.command(&self.worker))
    }
}

/// Get the task held, or a new one, waiting up to `wait` when none is ready.
pub fn next(worker: &Worker, wait: Duration) -> Answer {
    exchange(worker, wait, |name, _| {
        Ok(ClientMsg::Next {
            worker: name.to_owned(),
            wait_ms: Some(ms(wait)),
            can: worker.kit.can.clone(),
            model: worker.kit.model.clone(),
        })
    })
}

/// Report a task done; the answer is the verdict and the next task.
pub fn done(worker: &Worker, a: &Done) -> Answer {
    // The verdict first (at least its floor), then the next task.
    exchange(worker, a.wait.max(VERDICT_WAIT) + a.wait, |name, target| {
        let deliverables =
            a.deliverables.iter().map(|d| project_path(d, target.root.as_deref())).collect::<Result<Vec<_>, _>>()?;
        Ok(ClientMsg::Done {
            worker: name.to_owned(),
            task_id: a.task.clone(),
            attempt: a.attempt.or_else(|| last_grant(name, &a.task)),
            deliverables,
            score: a.score,
            notes: a.notes.clone(),
            wait_ms: Some(ms(a.wait)),
            files: Vec::new(),
            changed: target
                .root
                .as_deref()
                .map(|root| super::snapshot::changed_since_grant(root, name, &a.task))
                .unwrap_or_default(),
            // A remote worker's clone is a folder of its own: what changed there is its own.
            isolated: super::transfer::is_remote(target),
            usage: a.usage,
        })
    })
}

/// Hand a question to the engineer; the answer is other work.
pub fn block(worker: &Worker, a: &Block) -> Answer {
    exchange(worker, a.wait, |name, _| {
        Ok(ClientMsg::Block {
            attempt: a.attempt.or_else(|| last_grant(name, &a.task)),
            worker: name.to_owned(),
            task_id: a.task.clone(),
            question: a.question.clone(),
            wait_ms: Some(ms(a.wait)),
            usage: a.usage,
        })
    })
}

/// Give a task up; the answer is other work.
pub fn fail(worker: &Worker, a: &Fail) -> Answer {
    exchange(worker, a.wait, |name, _| {
        Ok(ClientMsg::Fail {
            attempt: a.attempt.or_else(|| last_grant(name, &a.task)),
            worker: name.to_owned(),
            task_id: a.task.clone(),
            reason: a.reason.clone(),
            wait_ms: Some(ms(a.wait)),
            usage: a.usage,
        })
    })
}

/// Note progress on a held task.
pub fn progress(worker: &Worker, a: &Progress) -> Answer {
    exchange(worker, Duration::ZERO, |name, _| {
        Ok(ClientMsg::Progress {
            attempt: a.attempt.or_else(|| last_grant(name, &a.task)),
            worker: name.to_owned(),
            task_id: a.task.clone(),
            note: a.note.clone(),
        })
    })
}

/// Leave: what the worker holds goes back to the queue at once.
pub fn leave(worker: &Worker) -> Answer {
    exchange(worker, Duration::ZERO, |name, _| Ok(ClientMsg::Leave { worker: name.to_owned() }))
}

/// Why a verb got no answer from a hub.
enum Unanswered {
    /// The call itself is wrong (no name, a missing deliverable): exit 1.
    Refused(String),
    /// The hub could not be found, reached or understood.
    Client(ClientError),
    /// A remote clone's exchange failed (its errors are words already).
    Remote(String),
}

/// Name the worker, find the hub, build the message, ask, and render the answer.
fn exchange(
    worker: &Worker,
    wait: Duration,
    message: impl FnOnce(&str, &Target) -> Result<ClientMsg, String>,
) -> Answer {
    let name = worker.name.clone().unwrap_or_default();
    let asked = name_of(worker).map_err(Unanswered::Refused).and_then(|name| {
        let cwd =
            std::env::current_dir().map_err(|e| Unanswered::Refused(format!("cannot read the current folder: {e}")))?;
        let target = super::locate(worker.hub.as_deref(), &cwd, worker.options).map_err(Unanswered::Client)?;
        let own = own_worktree(worker, &name, &target).map_err(Unanswered::Refused)?;
        // In a worktree, deliverables are found from its folder, not the checkout's.
        let seen_from = own.as_ref().map(|w| Target { root: Some(w.folder()), ..target.clone() });
        let mut msg = message(&name, seen_from.as_ref().unwrap_or(&target)).map_err(Unanswered::Refused)?;
        if let (Some(own), ClientMsg::Done { task_id, changed, isolated, .. }) = (&own, &mut msg) {
            // Nobody else works in the worktree: what changed there is this attempt's, exactly.
            *changed = own.changed(task_id);
            *isolated = true;
        }
        if super::transfer::is_remote(&target) || own.is_some() {
            let (reply, travelled) = super::transfer::exchange(&target, own.as_ref(), &msg, wait)
                .map_err(Unanswered::Client)?
                .map_err(Unanswered::Remote)?;
            return Ok((name, reply, target.root, travelled, own));
        }
        let reply = ask(&target, &msg, wait).map_err(Unanswered::Client)?;
        // The workflow puts every worker in a worktree of its own: set it up as `--worktree` would.
        if let (Some(root), true) = (&target.root, super::transfer::grants_worktree(&reply)) {
            let own = Worktree::open_or_add(root, &name).map_err(Unanswered::Refused)?;
            let travelled = super::transfer::into_worktree(&target, &own, &reply);
            return Ok((name, reply, target.root, travelled, Some(own)));
        }
        Ok((name, reply, target.root, Vec::new(), None))
    });
    match asked {
        Ok((name, reply, root, travelled, own)) => {
            let mut answer = text::render(name, reply, root.as_deref());
            if let Some(root) = root.as_deref()
                && own.is_none()
            {
                look_at_grant(&answer, root);
            }
            // What travelled, after the task and its next command.
            for line in travelled {
                answer.text.push_str(&line);
                answer.text.push('\n');
            }
            if let (Some(own), Some(root)) = (own, root.as_deref()) {
                in_worktree(&mut answer, own, root);
            }
            answer
        }
        Err(Unanswered::Client(_) | Unanswered::Remote(_)) if run_finished() => Answer::run_finished(name),
        Err(Unanswered::Client(e)) if e.hub_down() => Answer::hub_down(name, e.for_worker()),
        Err(Unanswered::Client(e)) => Answer::unreached(name, e.for_worker()),
        Err(Unanswered::Refused(message) | Unanswered::Remote(message)) => Answer::unreached(name, message),
    }
}

/// The worker's own worktree when it works in one: asked for with
/// `--worktree` (made when missing), or made by an earlier command.
fn own_worktree(worker: &Worker, name: &str, target: &Target) -> Result<Option<Worktree>, String> {
    match (&target.root, worker.worktree) {
        (Some(root), true) => Worktree::open_or_add(root, name).map(Some),
        (Some(root), false) => Ok(Worktree::existing(root, name)),
        (None, true) => {
            Err("--worktree needs the project's folder (the one holding .mcc/): run this inside it".to_owned())
        }
        (None, false) => Ok(None),
    }
}

/// Say where a worker in its own worktree works; after `leave`, remove it.
fn in_worktree(answer: &mut Answer, own: Worktree, root: &Path) {
    use std::fmt::Write as _;
    let left = matches!(&answer.source, Source::Hub(ServerMsg::Ack { what, .. }) if what == "leave");
    if left {
        let folder = own.folder();
        let _ = match own.remove(root) {
            Ok(()) => writeln!(answer.text, "your worktree {} is removed", folder.display()),
            Err(e) => writeln!(answer.text, "your worktree {} stays: {e}", folder.display()),
        };
    } else if matches!(answer.next, Some(NextCall::Done { .. })) {
        let folder = own.folder();
        let _ = writeln!(
            answer.text,
            "work in: {} (your own git worktree: paths are relative to it; your declared files reach the project when accepted)",
            folder.display()
        );
        answer.work_in = Some(folder);
    }
}

/// A task was just shown to the worker: keep what the checkout looks like,
/// so its `done` can name the files changed meanwhile (not for the `done`
/// command a `progress` repeats: that grant's look is kept already).
fn look_at_grant(answer: &Answer, root: &Path) {
    let progress = matches!(&answer.source, Source::Hub(ServerMsg::Ack { what, .. }) if what == "progress");
    if let (false, Some(NextCall::Done { task, attempt: Some(attempt), deliverables, .. })) = (progress, &answer.next) {
        super::snapshot::at_grant(root, &answer.worker, task, *attempt, deliverables);
    }
}

/// The store under the nearest `.mcc/` says the run finished and no hub
/// serves the project any more (one that is alive but out of reach is not
/// "stopped": that is an error to report).
pub fn run_finished() -> bool {
    let Ok(cwd) = std::env::current_dir() else { return false };
    super::find_root(&cwd).is_some_and(|root| {
        crate::store::read::finished(&root)
            && super::files::hub_gone_within(&Layout::of_root(&root), Duration::from_secs(3))
    })
}

/// The worker's name, or an error saying how to give one.
pub fn name_of(worker: &Worker) -> Result<String, String> {
    worker.name.clone().filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        "no worker name: pass --as NAME (for example `mcc worker next --as worker-A`) or set MCC_WORKER=worker-A"
            .to_owned()
    })
}

/// One exchange, allowing the hub `wait` plus the client's deadline to answer.
pub fn ask(target: &Target, msg: &ClientMsg, wait: Duration) -> Result<ServerMsg, ClientError> {
    super::ask(target, msg, wait)
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
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

/// Where the last grant shown to `worker` on this machine is kept.
fn grant_file(worker: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    let root = super::find_root(&cwd)?;
    Some(Layout::of_root(&root).grant(worker))
}

/// The grant file's text: a regular file of a few lines, read through a
/// handle that follows no link.
fn read_grant(worker: &str) -> Option<String> {
    let file = grant_file(worker)?;
    let dir = crate::layout::StateDir::open(file.parent()?).ok()?;
    let bytes = dir.read_bounded(file.file_name()?.to_str()?, crate::layout::SMALL_FILE).ok()?;
    String::from_utf8(bytes).ok()
}

/// The attempt last shown to `worker` for `task`, if it was this task.
fn last_grant(worker: &str, task: &str) -> Option<u32> {
    let text = read_grant(worker)?;
    let (id, attempt) = text.lines().next()?.trim().rsplit_once(' ')?;
    (id == task).then(|| attempt.parse().ok()).flatten()
}

/// The `done` call shown with the last grant of `task` to `worker` (what
/// `progress` names again).
fn remembered_done(worker: &str, task: &str) -> Option<NextCall> {
    let attempt = last_grant(worker, task)?;
    let text = read_grant(worker)?;
    let mut lines = text.lines().skip(1);
    lines.next().filter(|l| l.starts_with("mcc worker done "))?;
    // A file written before the deliverables were kept has no third line.
    let deliverables = lines.next().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    Some(NextCall::Done { task: task.to_owned(), attempt: Some(attempt), deliverables, score: 5 })
}

/// The file holds `TASK ATTEMPT` on its first line, the printed `done`
/// command on its second (as older versions wrote and read it) and the
/// command's deliverables as a JSON list on its third.
fn remember_grant(worker: &str, done: &NextCall) {
    let NextCall::Done { task, attempt: Some(attempt), deliverables, .. } = done else { return };
    if let Some(file) = grant_file(worker)
        && let Some(dir) = file.parent()
    {
        let listed = serde_json::to_string(deliverables).unwrap_or_else(|_| "[]".to_owned());
        let body = format!("{task} {attempt}\n{}\n{listed}\n", done.command(worker));
        let _ = std::fs::create_dir_all(dir).and_then(|()| crate::text::write_atomic(&file, body.as_bytes()));
    }
}
