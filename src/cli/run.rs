//! `mcc run WORKFLOW.lua`: start the project's hub (or attach to the one
//! running), load the workflow, optionally spawn headless workers, show
//! progress until the workflow finishes, and end with a summary.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use super::exit;
use crate::client::status::fold;
use crate::client::{self, ClientError, Connection, Target};
use crate::event::EventKind;
use crate::hub::{self, HubError, HubOptions};
use crate::scheduler::{Settings, TaskState};
use crate::wire::views::EventView;
use crate::wire::{ClientMsg, Delta, ServerMsg, SubscriptionView, Summary};

/// Run a workflow to the end: start the hub, load the workflow, show progress, print a summary.
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // one per command-line switch
#[command(after_help = "\
Examples:
  mcc run workflows/demo.lua --spawn 3 -- sh workflows/demo/worker.sh
  mcc run workflows/phase2.lua            (worker chats join with `mcc worker next --as NAME`)

Run it again after a stop or crash: it resumes from the state in .mcc/.
While one workflow runs, `mcc run` of another is refused; add --switch to replace it.
Exit codes: 0 the workflow finished (or had finished in an earlier run); 1 it cannot go on
(tasks failed) or an error; 130 stopped by Ctrl-C or SIGTERM (the printed command resumes it).")]
pub struct RunArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// Project root whose .mcc/ holds the state (default: the nearest folder with .mcc/ at or
    /// above the current one, else the one holding the workflow's workflows/ folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Port for the hub (0 picks a free one; a busy default port falls back to a free one).
    #[arg(long, env = "COORDINATION_PORT", default_value_t = hub::DEFAULT_PORT)]
    pub port: u16,
    #[command(flatten)]
    pub tls: super::hub::TlsArgs,
    #[command(flatten)]
    pub store: super::hub::StoreArgs,
    /// Default lease of an assigned task.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Grants after which a task that is not accepted fails.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// How long a worker whose chat ended (its `mcc mcp` or watcher connection closed) may take to
    /// come back before its task goes back to the queue, such as 60s; a workflow's `presence_grace` wins.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub presence_grace: Duration,
    /// The most tasks the store may hold (when this command starts the hub).
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_TASKS)]
    pub max_tasks: usize,
    /// Start N local headless workers running COMMAND (given after `--`).
    #[arg(long, default_value_t = 0, requires = "command")]
    pub spawn: usize,
    /// Print the final summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Print only the summary.
    #[arg(long)]
    pub quiet: bool,
    /// Forget the stored state of an earlier run and start over (refused while a hub runs).
    #[arg(long)]
    pub fresh: bool,
    /// Replace the workflow the running hub runs with this one (refused without it).
    #[arg(long)]
    pub switch: bool,
    /// How long one wait for the hub's first progress answer lasts before
    /// the hub is checked for life (a test tunable, so a test need not
    /// outlast 10 s to show that a slow engine does not detach `mcc run`).
    #[arg(long, hide = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub answer_wait: Duration,
    /// The worker command for --spawn, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Why the hub that `mcc run` started stops, as its `server_shutdown` says.
/// A terminal attached to it has seen how the run ended in the summaries
/// before it (`finished`, or nothing left that can move), not in this text.
const RUN_ENDED: &str = "The workflow run ended";

/// The view `mcc run` follows carries what [`render`], [`cannot_go_on`] and
/// [`summarize`] read and no more (no tasks in flight, no events): the hub
/// then spends on a task that merely moves no more than counting it.
const SUBSCRIBE: ClientMsg = ClientMsg::Subscribe { view: SubscriptionView::Progress };

/// Whether the hub is alive: it greets a new connection from its own task,
/// without the engine, so a busy workflow still answers this.
fn hub_answers(target: &Target) -> bool {
    Connection::open(target).map(Connection::close).is_ok()
}

/// Progress is pushed by the hub (`subscribe`); changes closer together
/// than this are folded into one redraw.
const FOLD: Duration = Duration::from_millis(200);

pub fn run(args: RunArgs, options: client::Options) -> u8 {
    match run_inner(&args, options) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mcc run: {message}");
            exit::ERROR
        }
    }
}

fn run_inner(args: &RunArgs, options: client::Options) -> Result<u8, String> {
    if let Some(dir) = &args.dir
        && !dir.is_dir()
    {
        return Err(format!("project folder {} does not exist; pass the folder that holds workflows/", dir.display()));
    }
    let root = super::check::project_root(args.dir.as_deref(), &args.file);
    let file = std::path::absolute(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let file = std::fs::canonicalize(&file).unwrap_or(file);
    // Fail fast, with file:line, before any hub is touched.
    crate::lua::Workflow::load(&file, &root)?;
    if args.fresh {
        forget(&root, &args.store, options)?;
    }
    // It may run the hub: the hub's runtime.
    let runtime = hub::runtime().map_err(|e| e.to_string())?;
    let attached = attach(&root, options);
    if attached.is_none()
        && !args.fresh
        && let Some(stored) = finished_before(&root, &file)
    {
        // Nothing to do: said before a hub starts or a worker is spawned.
        let end = Ending { summary: stored, already_done: true };
        let metrics = summarize(&root, &end, Duration::ZERO)?;
        print_summary(args, &metrics, &end);
        return Ok(exit::OK);
    }
    let (target, own_hub) = if let Some(target) = attached {
        let mut conn = Connection::open(&target).map_err(|e| e.to_string())?;
        if let Some(running) = running_workflow(&target, &root)
            && running != file
            && !args.switch
        {
            return Err(format!(
                "the hub of this project runs {} already; wait for it to end, or replace it with `{} --switch`",
                shown(&root, &running),
                resume_command()
            ));
        }
        let path = file.display().to_string();
        if let ServerMsg::Error { error, .. } =
            conn.request(&ClientMsg::LoadWorkflow { path }, Duration::from_secs(30)).map_err(|e| e.to_string())?
        {
            return Err(error);
        }
        say(args, &format!("attached to the running hub at {}", target.hubs));
        (target, None)
    } else {
        let hub = runtime.block_on(start_hub(args, &root, &file))?;
        let target =
            Target { hubs: client::Hubs::one(hub.url.clone()), options, token: None, root: Some(root.clone()) };
        (target, Some(hub))
    };
    say(args, &format!("hub on {} · workflow {}", target.hubs, shown(&root, &file)));
    if let Some(page) = hub::page::url_of(&root) {
        say(args, &format!("live page (read-only): {page}"));
    }
    if args.spawn == 0 {
        say(args, "workers join from a chat or terminal in this project: mcc worker next --as NAME (one name each)");
    }
    let mut workers = spawn_workers(args, &root, &target.hubs.to_env())?;
    let started = Instant::now();
    let outcome = runtime.block_on(watch(args, &target, &root, &file, started));
    for worker in &mut workers {
        stop_worker(worker);
    }
    if matches!(outcome, Ok(Watched::Interrupted)) {
        // The resume line was the whole of what to say: nothing is stuck, the engineer stopped it.
        if let Some(hub) = own_hub {
            runtime.block_on(hub.stop(RUN_ENDED)).map_err(|e| e.to_string())?;
        }
        return Ok(exit::INTERRUPTED);
    }
    let summary = outcome.and_then(|watched| match watched {
        Watched::Ended(end) => summarize(&root, &end, started.elapsed()).map(|metrics| (metrics, end)),
        Watched::Interrupted => Err("interrupted".to_owned()),
    });
    if let Some(hub) = own_hub {
        // Stopped whatever happened: its commands die with it and .mcc/hub.json goes.
        runtime.block_on(hub.stop(RUN_ENDED)).map_err(|e| e.to_string())?;
    }
    let (metrics, end) = summary?;
    print_summary(args, &metrics, &end);
    Ok(if end.summary.finished { exit::OK } else { exit::ERROR })
}

/// The store's summary when it says the run of `file` finished (no hub runs it now).
fn finished_before(root: &Path, file: &Path) -> Option<Summary> {
    let stored = crate::store::read::stored(root)?;
    let same = stored.summary.workflow.as_deref().is_some_and(|w| resolved(root, w) == file);
    (stored.summary.finished && same).then_some(stored.summary)
}

/// The workflow file the hub runs now, if any: from the summary a subscriber
/// gets first (small at any queue size), on a connection of its own.
fn running_workflow(target: &Target, root: &Path) -> Option<PathBuf> {
    let mut conn = Connection::open(target).ok()?;
    match conn.request(&SUBSCRIBE, Duration::from_secs(10)) {
        Ok(ServerMsg::Summary { summary }) => summary.workflow.as_deref().map(|p| resolved(root, p)),
        _ => None,
    }
}

/// A workflow path as the hub reports it (maybe relative to the root), made
/// comparable with the file this command was given.
fn resolved(root: &Path, path: &str) -> PathBuf {
    let path = root.join(path);
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The command line that resumes this run: the same one without `--fresh`
/// (which would wipe what the run did so far) and without `--switch`.
fn resume_command() -> String {
    let mut words = vec!["mcc".to_owned()];
    words.extend(std::env::args().skip(1).filter(|a| a != "--fresh" && a != "--switch").map(|a| quoted(&a)));
    words.join(" ")
}

/// `word` as a POSIX shell reads it back.
fn quoted(word: &str) -> String {
    crate::text::quoted(word).into_owned()
}

/// `--fresh`: remove the store, so the workflow starts from its first
/// phase. In PostgreSQL that is this project's rows, not other projects',
/// refused while a hub of the project holds its lease.
fn forget(root: &Path, store: &super::hub::StoreArgs, options: client::Options) -> Result<(), String> {
    if attach(root, options).is_some() {
        return Err("a hub is running for this project; stop it before starting fresh".to_owned());
    }
    let dir = crate::layout::Layout::of_root(root).dir().to_owned();
    let location = crate::store::Location::choose(store.store.as_deref(), store.project.as_deref(), &dir)?;
    if let crate::store::Location::Postgres { url, project } = &location {
        return crate::store::postgres::PostgresStore::forget(url, project).map_err(|e| e.to_string());
    }
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove .mcc/{name}: {e}"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn say(args: &RunArgs, line: &str) {
    if !args.quiet && !args.json {
        println!("{line}");
    }
}

fn shown(root: &Path, file: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}

/// The project's running hub, if `.mcc/hub.json` names one that answers.
fn attach(root: &Path, options: client::Options) -> Option<Target> {
    crate::layout::Layout::of_root(root).read_hub_file()?;
    let target = client::locate(None, root, options).ok()?;
    Connection::open(&target).ok().map(|c| {
        c.close();
        target
    })
}

async fn start_hub(args: &RunArgs, root: &Path, file: &Path) -> Result<hub::RunningHub, String> {
    let options = |port| HubOptions {
        root: root.to_owned(),
        port,
        bind: None,
        settings: Settings {
            lease: args.lease,
            max_attempts: args.max_attempts.max(1),
            max_tasks: args.max_tasks.max(1),
            presence_grace: args.presence_grace,
        },
        loader: Some(crate::lua::load),
        workflow: Some(file.to_owned()),
        quiet: true,
        limits: hub::Limits::default(),
        timing: crate::engine::Timing::default(),
        security: args.tls.security(),
        store: args.store.choice(),
    };
    match hub::start(options(args.port)).await {
        // Another program holds the default port: any free one will do, clients read .mcc/hub.json.
        Err(HubError::Bind { .. }) if args.port == hub::DEFAULT_PORT => {
            hub::start(options(0)).await.map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

fn spawn_workers(args: &RunArgs, root: &Path, url: &str) -> Result<Vec<Child>, String> {
    if args.spawn == 0 {
        return Ok(Vec::new());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the mcc binary: {e}"))?;
    let logs = crate::layout::Layout::of_root(root).logs();
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let mut children = Vec::with_capacity(args.spawn);
    for k in 1..=args.spawn {
        let name = format!("spawn-{k}");
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .args(["worker", "run", "--as", &name, "--hub", url, "--"])
            .args(&args.command)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start worker {name}: {e}"))?;
        children.push(child);
    }
    say(args, &format!("spawned {} workers: {} (logs in .mcc/logs/)", args.spawn, args.command.join(" ")));
    Ok(children)
}

fn stop_worker(child: &mut Child) {
    // Workers stop by themselves on "all done"; one still running is told to go.
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// How the run's watch ended: the last summary seen, and whether the
/// workflow had ended before this command first looked.
struct Ending {
    summary: Summary,
    already_done: bool,
}

/// How watching ended: the workflow ended (or the hub stopped), or the
/// engineer pressed Ctrl-C.
enum Watched {
    Ended(Ending),
    Interrupted,
}

/// What the subscription's thread tells the run.
enum Followed {
    /// Rejections, failures and questions as they happened, one line each.
    Seen(Vec<String>),
    /// The summary with every change so far folded in.
    Progress(Box<Summary>),
    /// The hub said it stops (`server_shutdown`), with its message.
    HubStopped(String),
    /// The subscription failed: the line to show.
    Lost(String),
}

/// Follow the hub until the workflow finishes, cannot go on, or Ctrl-C.
async fn watch(args: &RunArgs, target: &Target, root: &Path, file: &Path, started: Instant) -> Result<Watched, String> {
    let mut following = file.to_owned();
    let target = target.clone();
    let mut screen = Screen::new(!args.quiet && !args.json);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // One blocking subscription for the whole run, on its own thread: the
    // hub pushes a summary, then what each batch changed.
    let answer_wait = args.answer_wait;
    std::thread::spawn(move || follow(&target, answer_wait, &tx));
    let mut last: Option<Summary> = None;
    // Tasks accepted in an earlier run do not count toward this run's rate.
    let mut accepted_before: Option<u64> = None;
    loop {
        tokio::select! {
            () = hub::shutdown_signal() => {
                screen.clear();
                // Printed even with --quiet or --json (on stderr, where no JSON is expected): it is all there is to say.
                let line = format!("stopped: resume with `{}`", resume_command());
                if args.json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                return Ok(Watched::Interrupted);
            }
            followed = rx.recv() => {
                let summary = match followed.ok_or("lost the progress reader")? {
                    Followed::Progress(summary) => *summary,
                    Followed::Seen(lines) => {
                        screen.clear();
                        for line in &lines {
                            say(args, line);
                        }
                        screen.redraw();
                        continue;
                    }
                    // How the run ended was in the summaries before this
                    // (each is pushed before the hub stops): a hub that stops
                    // now stopped before the end, whoever stopped it.
                    Followed::HubStopped(message) => {
                        let Some(summary) = last.take() else {
                            return Err(ClientError::Shutdown(message).to_string());
                        };
                        screen.clear();
                        say(args, &format!("the hub stopped before the workflow ended: {message}"));
                        return Ok(Watched::Ended(Ending { summary, already_done: false }));
                    }
                    Followed::Lost(e) => return Err(e),
                };
                if let Some(now) = summary.workflow.as_deref().map(|p| resolved(root, p))
                    && now != following
                {
                    // Another `mcc run --switch` replaced the workflow: say so
                    // and follow the new one (this terminal may own the hub).
                    screen.clear();
                    following = now;
                    say(args, &format!(
                        "the hub now runs {} instead of {} (replaced by `mcc run --switch`); following it",
                        shown(root, &following),
                        shown(root, file)
                    ));
                }
                let before = *accepted_before.get_or_insert_with(|| summary.count(TaskState::Accepted.name()));
                screen.draw(&render(&summary, started.elapsed(), before));
                if summary.finished || cannot_go_on(&summary) {
                    return Ok(Watched::Ended(Ending { summary, already_done: last.is_none() }));
                }
                last = Some(summary);
            }
        }
    }
}

/// Subscribe to the hub's progress. Slow is not dead: the hub greets a new
/// connection without its engine, so while it does, the answer is awaited.
fn subscribe(target: &Target, answer_wait: Duration) -> Result<(Connection, Summary), String> {
    let mut conn = Connection::open(target).map_err(|e| e.to_string())?;
    let mut answer = conn.request(&SUBSCRIBE, answer_wait);
    loop {
        match answer {
            Ok(ServerMsg::Summary { summary }) => return Ok((conn, *summary)),
            Ok(other) => return Err(format!("unexpected answer to subscribe: {}", other.to_json())),
            Err(ClientError::Timeout { .. }) if hub_answers(target) => answer = conn.receive(answer_wait),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Send the summary, then the summary with each change folded in, to `tx`
/// until the hub stops or the receiver is gone.
fn follow(target: &Target, answer_wait: Duration, tx: &tokio::sync::mpsc::UnboundedSender<Followed>) {
    let (mut conn, mut summary) = match subscribe(target, answer_wait) {
        Ok(subscribed) => subscribed,
        Err(e) => {
            let _ = tx.send(Followed::Lost(e));
            return;
        }
    };
    let progress = |s: &Summary| Followed::Progress(Box::new(s.clone()));
    if tx.send(progress(&summary)).is_err() {
        return;
    }
    let mut pending: Option<Instant> = None;
    loop {
        let wait = pending.map_or(Duration::from_hours(1), |since| FOLD.saturating_sub(since.elapsed()));
        match conn.receive(wait.max(Duration::from_millis(1))) {
            Ok(ServerMsg::Delta { delta }) => match Delta::from_wire(&delta) {
                Ok(d) => {
                    let seen: Vec<String> = d.events.iter().filter_map(event_line).collect();
                    if !seen.is_empty() && tx.send(Followed::Seen(seen)).is_err() {
                        return;
                    }
                    fold(&mut summary, &d);
                    pending.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    let _ = tx.send(Followed::Lost(e));
                    return;
                }
            },
            Ok(_) | Err(ClientError::Timeout { .. }) => {}
            Err(e) => {
                if pending.is_some() {
                    let _ = tx.send(progress(&summary));
                }
                let _ = tx.send(match e {
                    ClientError::Shutdown(message) => Followed::HubStopped(message),
                    e => Followed::Lost(e.to_string()),
                });
                return;
            }
        }
        // A finished run is told at once; other changes are folded.
        if pending.is_some_and(|since| summary.finished || since.elapsed() >= FOLD) {
            pending = None;
            if tx.send(progress(&summary)).is_err() {
                return;
            }
        }
    }
}

/// The line `mcc run` prints for a rejection, a failure or a question as it
/// happens: the task, the worker, the attempt and the first line of why.
fn event_line(e: &EventView) -> Option<String> {
    let first_line = |text: &str| text.lines().next().unwrap_or_default().to_owned();
    let detail = |key: &str| e.detail.get(key).and_then(serde_json::Value::as_str).map(first_line);
    let task = e.task.as_deref().unwrap_or("-");
    let who = match (e.worker.as_deref(), e.attempt) {
        (Some(w), Some(n)) => format!("{w}, attempt {n}"),
        (Some(w), None) => w.to_owned(),
        (None, Some(n)) => format!("attempt {n}"),
        (None, None) => "-".to_owned(),
    };
    let line = match EventKind::from_name(&e.kind) {
        EventKind::Rejected => {
            let reason = e.detail.get("reasons").and_then(|r| r.get(0)).and_then(serde_json::Value::as_str);
            format!("rejected {task} ({who}): {}", reason.map(first_line).unwrap_or_default())
        }
        EventKind::Failed => format!(
            "failed {task} ({who}): {}; `mcc tasks retry {task}` to try again",
            detail("reason").unwrap_or_default()
        ),
        EventKind::FailedAttempt => {
            let left = if detail("now").as_deref() == Some("failed") { " (no attempts left)" } else { "" };
            format!("given up {task} ({who}): {}{left}", detail("reason").unwrap_or_default())
        }
        EventKind::Blocked => format!(
            "question on {task} ({who}): {} → mcc answer {task} \"...\"",
            detail("question").unwrap_or_default()
        ),
        EventKind::ChatEnded => {
            let now = if detail("now").as_deref() == Some("failed") {
                "failed, no attempts left"
            } else {
                "back in the queue"
            };
            format!("{now}: {task} ({who}): {}", detail("reason").unwrap_or_default())
        }
        _ => return None,
    };
    Some(line)
}

/// Tasks failed and nothing left can move without the engineer retrying.
fn cannot_go_on(summary: &Summary) -> bool {
    let count = |state: TaskState| summary.count(state.name());
    let moving = [TaskState::Ready, TaskState::Assigned, TaskState::Submitted, TaskState::Blocked]
        .into_iter()
        .map(count)
        .sum::<u64>();
    let stuck = summary.stuck.len() as u64;
    count(TaskState::Failed) > 0 && moving == 0 && count(TaskState::Waiting) <= stuck
}

/// The progress lines for one summary.
fn render(summary: &Summary, elapsed: Duration, accepted_before: u64) -> Vec<String> {
    let phase = current_phase(summary);
    let counts: Vec<String> = TaskState::ALL
        .iter()
        .filter(|s| summary.count(s.name()) > 0)
        .map(|s| format!("{} {}", summary.count(s.name()), s.name()))
        .collect();
    let accepted = summary.count(TaskState::Accepted.name());
    let secs = elapsed.as_secs_f64().max(0.001);
    let mut lines = vec![format!(
        "{:>5.1}s · phase {phase} · {} · {:.1} tasks/s",
        secs,
        if counts.is_empty() { "no tasks yet".to_owned() } else { counts.join(", ") },
        accepted.saturating_sub(accepted_before) as f64 / secs
    )];
    for w in &summary.workers {
        let holding = w.holding.as_deref().map_or_else(|| "idle".to_owned(), |t| format!("on {t}"));
        lines.push(format!("  {:<12} {holding} · {} accepted", w.name, w.accepted));
    }
    for t in &summary.questions {
        lines.push(format!(
            "  blocked {}: {} → mcc answer {} \"...\"",
            t.id,
            t.question.as_deref().unwrap_or(""),
            t.id
        ));
    }
    for p in &summary.problems {
        lines.push(format!("  problem: {p}"));
    }
    let log = &summary.log;
    for l in &log[log.len().saturating_sub(3)..] {
        lines.push(format!("  log: {l}"));
    }
    lines
}

/// The phases with work still open, in the order the workflow declares
/// them; when none has, the last of them with tasks. Phases the workflow
/// does not declare (`-` for tasks of none, or every phase of a hub that
/// sends no order) come after, by name.
fn current_phase(summary: &Summary) -> String {
    let declared = |name: &str| summary.phase_order.iter().position(|p| p == name).unwrap_or(usize::MAX);
    let mut phases: Vec<(&String, &crate::wire::views::Counts)> = summary.phases.iter().collect();
    // Stable: undeclared phases keep their name order.
    phases.sort_by_key(|(name, _)| declared(name));
    let open: Vec<&str> = phases
        .iter()
        .filter(|(_, counts)| {
            counts.keys().any(|state| TaskState::ALL.iter().any(|s| s.name() == state && !s.is_terminal()))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    match (open.is_empty(), phases.last()) {
        (false, _) => open.join(", "),
        (true, Some((last, _))) => (*last).clone(),
        (true, None) => "-".to_owned(),
    }
}

/// Live progress: redrawn in place on a terminal, changed lines only otherwise.
struct Screen {
    enabled: bool,
    tty: bool,
    drawn: usize,
    last: Vec<String>,
}

impl Screen {
    fn new(enabled: bool) -> Self {
        Self { enabled, tty: std::io::stdout().is_terminal(), drawn: 0, last: Vec::new() }
    }

    fn draw(&mut self, lines: &[String]) {
        if !self.enabled {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.tty {
            self.clear_into(&mut out);
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            self.drawn = lines.len();
        } else {
            // A log, not a screen: print only what changed, so an hour of
            // waiting is one line, not 1,800.
            for line in plain_changes(&self.last, lines) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
        if self.tty || plain_changes(&self.last, lines).next().is_some() {
            self.last = lines.to_vec();
        }
    }

    /// Draw the last lines again below what was printed over them (a terminal only).
    fn redraw(&mut self) {
        if self.enabled && self.tty {
            let last = std::mem::take(&mut self.last);
            self.draw(&last);
        }
    }

    fn clear_into(&mut self, out: &mut impl Write) {
        if self.tty && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn clear(&mut self) {
        if self.enabled {
            let mut out = std::io::stdout().lock();
            self.clear_into(&mut out);
        }
    }
}

/// The status line without its clock and rate, to tell real changes.
fn strip_time(line: &str) -> String {
    line.split(" · ").skip(1).take(2).collect::<Vec<_>>().join(" · ")
}

/// The lines to print when output is not a terminal: nothing when only the
/// clock moved; else the status line and every line not printed before.
fn plain_changes<'a>(last: &'a [String], lines: &'a [String]) -> impl Iterator<Item = &'a String> + 'a {
    let same_status = lines.first().map(|l| strip_time(l)) == last.first().map(|l| strip_time(l));
    let rest = |l: &'a [String]| l.get(1..).unwrap_or_default();
    let changed = !same_status || rest(lines) != rest(last);
    lines.iter().enumerate().filter(move |(i, l)| changed && (*i == 0 || !last.contains(l))).map(|(_, l)| l)
}

/// The run's metrics (`mcc report`'s), with how the workflow ended.
fn summarize(root: &Path, end: &Ending, wall: Duration) -> Result<Value, String> {
    let mut metrics = crate::report::metrics(root)?;
    metrics["finished"] = json!(end.summary.finished);
    metrics["workflow"] = json!(end.summary.workflow);
    metrics["problems"] = json!(end.summary.problems);
    // A run that had already ended took no time now: the earlier run's figures speak.
    if !end.already_done {
        metrics["runSeconds"] = json!(wall.as_secs_f64());
    }
    metrics["alreadyDone"] = json!(end.already_done);
    Ok(metrics)
}

fn print_summary(args: &RunArgs, metrics: &Value, end: &Ending) {
    if args.json {
        println!("{metrics}");
        return;
    }
    let finished = end.summary.finished;
    let verdict = if finished { "finished" } else { "stopped before the end" };
    if end.already_done {
        println!("this workflow had already {verdict} in an earlier run; add --fresh to start it over");
    }
    println!("workflow {verdict}:");
    print!("{}", crate::report::render(metrics));
    if !finished {
        println!(
            "next: `mcc status` to see what is stuck, `mcc tasks retry TASK` to try again, then run the same command"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, detail: Value) -> EventView {
        EventView { kind: kind.into(), task: Some("t".into()), worker: Some("w".into()), attempt: Some(2), detail }
    }

    #[test]
    fn a_task_back_because_its_chat_ended_is_one_line_with_the_reason() {
        let line = event_line(&event("chat_ended", json!({"reason": "w's chat ended", "now": "ready"})));
        assert_eq!(line.as_deref(), Some("back in the queue: t (w, attempt 2): w's chat ended"));
    }

    #[test]
    fn each_rejection_failure_and_question_is_one_line_naming_task_worker_attempt_and_the_first_line_of_why() {
        let line = |kind, detail| event_line(&event(kind, detail));
        assert_eq!(
            line("rejected", json!({"reasons": ["too short\nwhole output", "second"]})).as_deref(),
            Some("rejected t (w, attempt 2): too short")
        );
        assert_eq!(
            line("failed_attempt", json!({"reason": "quota", "now": "ready"})).as_deref(),
            Some("given up t (w, attempt 2): quota")
        );
        assert_eq!(
            line("failed_attempt", json!({"reason": "quota", "now": "failed"})).as_deref(),
            Some("given up t (w, attempt 2): quota (no attempts left)")
        );
        assert_eq!(
            line("failed", json!({"reason": "attempts exhausted"})).as_deref(),
            Some("failed t (w, attempt 2): attempts exhausted; `mcc tasks retry t` to try again")
        );
        assert_eq!(
            line("blocked", json!({"question": "tabs?"})).as_deref(),
            Some("question on t (w, attempt 2): tabs? → mcc answer t \"...\"")
        );
        assert_eq!(line("accepted", Value::Null), None, "what goes well shows in the counts");
    }
}
