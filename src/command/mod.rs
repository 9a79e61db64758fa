//! The one supervised runner for every external command mcc starts
//! (validation commands, `ctx.run`, the headless worker's command).
//!
//! Each command runs in its own process group, so a time limit, a cancel (the
//! engine's lease end) or the hub's shutdown kills the command *and* whatever
//! it started, not just the `sh` in front: SIGTERM first, SIGKILL after a
//! grace period ([`DEFAULT_GRACE`], [`Supervisor::set_grace`]). At most [`Supervisor::max_running`]
//! commands run at once; more wait in a queue, in order. Output is captured up
//! to a cap: the head and the tail are kept, and the text says what was cut.
//!
//! Two ways in: [`Supervisor::run`] blocks until the [`Outcome`];
//! [`Supervisor::start`] returns at once with a [`Handle`] (to cancel) and
//! hands the [`Outcome`] to a callback on the runner's thread, so a caller
//! such as the engine can treat a verdict as pending until it arrives.
//!
//! ```ignore
//! use std::time::Duration;
//! use mcc::command::{Job, Supervisor};
//!
//! let job = Job::shell("cargo test", std::path::Path::new("."), Duration::from_mins(10));
//! let (tx, rx) = std::sync::mpsc::channel();
//! let runner = Supervisor::new(2);
//! let handle = runner.start(job, move |outcome| { let _ = tx.send(outcome); });
//! // ... at lease end: handle.cancel();
//! let outcome = rx.recv().unwrap();
//! ```

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod records;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Exit code; `None` when killed by a signal, the time limit or a cancel.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// One line for a person: "exited 1: <last line of stderr>".
    pub fn summary(&self) -> String {
        let how = if self.timed_out {
            "timed out".to_owned()
        } else {
            self.code.map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"))
        };
        let tail = tail(if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr }, 400);
        if tail.is_empty() { how } else { format!("{how}: {tail}") }
    }

    /// A command that never ran; `why` says so in `stderr`.
    fn not_run(why: String) -> Self {
        Self { code: None, stdout: String::new(), stderr: why, timed_out: false }
    }
}

/// The last `max` bytes of `text`, trimmed, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> String {
    crate::text::tail(text, max)
}

/// How long a stopped command has between SIGTERM and SIGKILL unless the
/// hub's options say otherwise: enough to remove a temporary file or print
/// a last line, short enough that a stop still feels immediate.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// Output kept per stream by default: the first and the last half of this.
pub const OUTPUT_CAP: usize = 1 << 20;

/// One command to run.
#[derive(Debug, Clone)]
pub struct Job {
    program: OsString,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    limit: Duration,
    output_cap: usize,
}

impl Job {
    /// `sh -c script` in `cwd`, stopped after `limit`.
    pub fn shell(script: &str, cwd: &Path, limit: Duration) -> Self {
        Self::program("sh", ["-c", script], cwd, limit)
    }

    /// `program args...` in `cwd`, stopped after `limit`.
    pub fn program<I, S>(program: impl Into<OsString>, args: I, cwd: &Path, limit: Duration) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: cwd.to_owned(),
            env: Vec::new(),
            stdin: None,
            limit,
            output_cap: OUTPUT_CAP,
        }
    }

    /// Set an environment variable for the command.
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Write `bytes` to the command's stdin, then close it.
    #[must_use]
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Keep at most this many bytes of each stream (head and tail halves).
    #[must_use]
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes.max(2);
        self
    }

    fn name(&self) -> String {
        let mut words = vec![self.program.to_string_lossy().into_owned()];
        words.extend(self.args.iter().map(|a| a.to_string_lossy().into_owned()));
        tail(&words.join(" "), 80)
    }
}

/// What ended a command that did not exit on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// Events the thread running one command waits for.
enum Event {
    Exited(std::io::Result<ExitStatus>),
    Cancel,
}

/// The shared half of a [`Handle`]: how to stop one command.
struct Control {
    cancelled: AtomicBool,
    /// Set while the command's process group may have live members.
    group: Mutex<Option<(rustix::process::Pid, mpsc::Sender<Event>)>>,
}

impl Control {
    /// Ask the command to stop: SIGTERM to its group now; the runner
    /// thread sends SIGKILL once the grace has passed.
    fn cancel(&self) {
        // Under the group's lock, as the spawn is: once this returns, the
        // command either got SIGTERM or will never start.
        let group = self.group.lock().expect("not poisoned");
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some((pgid, events)) = &*group {
            let _ = rustix::process::kill_process_group(*pgid, rustix::process::Signal::TERM);
            let _ = events.send(Event::Cancel);
        }
    }

    /// SIGKILL to the command's group if it still has one (the grace is over).
    fn kill(&self) {
        if let Some((pgid, _)) = &*self.group.lock().expect("not poisoned") {
            let _ = rustix::process::kill_process_group(*pgid, rustix::process::Signal::KILL);
        }
    }
}

/// Stops one started command (queued or running); dropping it does nothing.
#[derive(Clone)]
pub struct Handle {
    control: Arc<Control>,
}

impl Handle {
    /// Kill the command's whole process group now, or drop it from the queue.
    /// Its [`Outcome`] still arrives, with `code: None`.
    pub fn cancel(&self) {
        self.control.cancel();
    }
}

type Callback = Box<dyn FnOnce(Outcome) + Send>;

struct Queued {
    job: Job,
    control: Arc<Control>,
    done: Callback,
    /// Set when a blocking caller wants a failure to start as an error.
    spawn_error: Option<mpsc::Sender<std::io::Error>>,
}

#[derive(Default)]
struct State {
    running: usize,
    max: usize,
    /// Between SIGTERM and SIGKILL when a command is stopped.
    grace: Duration,
    /// Where running groups are recorded (see `records`); `None` records nothing.
    records: Option<PathBuf>,
    queue: VecDeque<Queued>,
    live: HashMap<u64, Arc<Control>>,
    closed: bool,
}

/// The runners one hub owns, made from its options and handed down (no
/// runner is shared by the whole process): validation commands, bounded by
/// `--max-commands`, and workflow commands (`ctx.run`), apart so that a
/// workflow's call never waits in line behind validations; the engine makes
/// one call at a time, so their bound is rarely met.
#[derive(Clone)]
pub struct Runners {
    pub validations: Supervisor,
    pub workflows: Supervisor,
}

impl Runners {
    /// At most `max_validations` validations at once; a stopped command
    /// has `grace` between SIGTERM and SIGKILL.
    pub fn new(max_validations: usize, grace: Duration) -> Self {
        let runners = Self { validations: Supervisor::new(max_validations), workflows: Supervisor::new(4) };
        runners.validations.set_grace(grace);
        runners.workflows.set_grace(grace);
        runners
    }

    /// Record both runners' groups under `state_dir/commands`, first
    /// killing what a killed hub or worker left there (see
    /// [`Supervisor::record_groups_in`]).
    pub fn record_groups_in(&self, state_dir: &Path) -> std::io::Result<usize> {
        let (folder, killed) = records::sweep(state_dir)?;
        self.validations.lock().records = Some(folder.clone());
        self.workflows.lock().records = Some(folder);
        Ok(killed)
    }

    /// Stop everything both run (the hub stops); returns once every group
    /// has ended or been sent SIGKILL.
    pub fn kill_all(&self) {
        let workflows = self.workflows.clone();
        let other = std::thread::spawn(move || workflows.kill_all());
        self.validations.kill_all();
        let _ = other.join();
    }
}

/// Runs commands under a bound; see the module docs.
#[derive(Clone)]
pub struct Supervisor {
    state: Arc<Mutex<State>>,
    ids: Arc<AtomicU64>,
}

impl Supervisor {
    /// A runner with at most `max_running` commands at once (at least one).
    pub fn new(max_running: usize) -> Self {
        let state = State { max: max_running.max(1), grace: DEFAULT_GRACE, ..State::default() };
        Self { state: Arc::new(Mutex::new(state)), ids: Arc::new(AtomicU64::new(0)) }
    }

    /// Record the groups of the commands this runner starts from now on
    /// under `state_dir/commands`, so a later hub or worker can kill them if
    /// this process is killed first. Before that, kill what a hub or worker
    /// that no longer runs left recorded there; returns how many groups.
    pub fn record_groups_in(&self, state_dir: &Path) -> std::io::Result<usize> {
        let (folder, killed) = records::sweep(state_dir)?;
        self.lock().records = Some(folder);
        Ok(killed)
    }

    /// How long a stopped command has between SIGTERM and SIGKILL (from
    /// the next command on).
    pub fn set_grace(&self, grace: Duration) {
        self.lock().grace = grace;
    }

    /// How many commands run now and how many wait (what the tests watch).
    #[cfg(test)]
    pub fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.queue.len())
    }

    /// Run `job` and wait for its outcome (queued first if the bound is met).
    /// An error means the command could not be started at all.
    pub fn run(&self, job: Job) -> std::io::Result<Outcome> {
        let (tx, rx) = mpsc::channel();
        let (err_tx, err_rx) = mpsc::channel();
        self.enqueue(job, Box::new(move |o| drop(tx.send(o))), Some(err_tx));
        let outcome = rx.recv().map_err(|_| std::io::Error::other("the command runner stopped"))?;
        match err_rx.try_recv() {
            Ok(e) => Err(e),
            Err(_) => Ok(outcome),
        }
    }

    /// Start `job` (or queue it) and return at once; `done` gets the outcome
    /// on the runner's thread. A command that cannot start reports an
    /// outcome with `code: None` and the reason in `stderr`.
    pub fn start(&self, job: Job, done: impl FnOnce(Outcome) + Send + 'static) -> Handle {
        self.enqueue(job, Box::new(done), None)
    }

    /// Stop every running command's group and every queued one; refuse new
    /// ones. Done when it returns: every group has ended or been sent SIGKILL.
    pub fn shutdown(&self) {
        self.lock().closed = true;
        self.kill_all();
    }

    /// Stop every running command's group (SIGTERM, SIGKILL after the
    /// grace) and drop every queued one (each still reports its outcome);
    /// new commands are taken as before. Returns once every group has ended
    /// or been sent SIGKILL, so nothing outlives a hub that stops after it.
    pub fn kill_all(&self) {
        let (live, queued, grace) = {
            let mut state = self.lock();
            let live: Vec<Arc<Control>> = state.live.values().cloned().collect();
            (live, std::mem::take(&mut state.queue), state.grace)
        };
        for control in &live {
            control.cancel();
        }
        for q in queued {
            (q.done)(Outcome::not_run("mcc: the command was not started: the hub is shutting down".into()));
        }
        // Each runner thread sends SIGKILL at the end of the grace; this
        // process may exit before then, so send it from here too.
        let until = Instant::now() + grace;
        let mut pause = Duration::from_millis(1);
        while live.iter().any(|c| c.group.lock().expect("not poisoned").is_some()) && Instant::now() < until {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        for control in &live {
            control.kill();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enqueue(&self, job: Job, done: Callback, spawn_error: Option<mpsc::Sender<std::io::Error>>) -> Handle {
        let control = Arc::new(Control { cancelled: AtomicBool::new(false), group: Mutex::new(None) });
        let handle = Handle { control: control.clone() };
        let mut state = self.lock();
        if state.closed {
            drop(state);
            done(Outcome::not_run("mcc: the command was not started: the hub is shutting down".into()));
            return handle;
        }
        state.queue.push_back(Queued { job, control, done, spawn_error });
        self.pump(&mut state);
        handle
    }

    /// Start runner threads while there is room and work.
    fn pump(&self, state: &mut State) {
        while state.running < state.max
            && let Some(first) = state.queue.pop_front()
        {
            state.running += 1;
            let this = self.clone();
            std::thread::Builder::new()
                .name("mcc-command".into())
                .spawn(move || this.runner(first))
                .expect("start a command runner thread");
        }
    }

    /// One runner thread: run jobs until the queue is empty.
    fn runner(self, first: Queued) {
        let mut next = Some(first);
        while let Some(q) = next {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            self.lock().live.insert(id, q.control.clone());
            let (grace, records) = {
                let state = self.lock();
                (state.grace, state.records.clone())
            };
            let outcome = if q.control.cancelled.load(Ordering::SeqCst) {
                Outcome::not_run("mcc: the command was cancelled before it started".into())
            } else {
                match execute(&q.job, &q.control, grace, records.as_deref()) {
                    Ok(o) => o,
                    Err(e) => {
                        let why = format!("mcc: could not start `{}`: {e}", q.job.name());
                        if let Some(tx) = &q.spawn_error {
                            let _ = tx.send(e);
                        }
                        Outcome::not_run(why)
                    }
                }
            };
            self.lock().live.remove(&id);
            (q.done)(outcome);
            let mut state = self.lock();
            next = if state.running <= state.max { state.queue.pop_front() } else { None };
            if next.is_none() {
                state.running -= 1;
            }
        }
    }
}

/// Spawn `job` in a new process group, wait for it, its limit or a cancel.
/// A command stopped by its limit or a cancel gets SIGTERM, then SIGKILL
/// once `grace` has passed (at once if its whole group has ended by then).
fn execute(job: &Job, control: &Control, grace: Duration, records: Option<&Path>) -> std::io::Result<Outcome> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(&job.program);
    command
        .args(&job.args)
        .current_dir(&job.cwd)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(if job.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: one kill reaches everything the command started.
        .process_group(0);
    // The spawn and the group's record happen under the lock `cancel` takes,
    // so a stop (the hub's `kill_all`) never falls between them and returns
    // while a just-started command is still unknown to it.
    let (mut child, pgid, events, inbox) = {
        let mut group = control.group.lock().expect("not poisoned");
        if control.cancelled.load(Ordering::SeqCst) {
            return Ok(Outcome::not_run("mcc: the command was cancelled before it started".into()));
        }
        let child = command.spawn()?;
        let pgid = rustix::process::Pid::from_child(&child);
        let (events, inbox) = mpsc::channel();
        *group = Some((pgid, events.clone()));
        (child, pgid, events, inbox)
    };
    // Lets the next hub kill this group if this hub is killed before it ends.
    let record = records::Record::write(pgid, records);
    if let (Some(bytes), Some(mut pipe)) = (job.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || drop(pipe.write_all(&bytes)));
    }
    let (captured_tx, captured) = mpsc::channel();
    let stdout = Capture::spawn(child.stdout.take(), job.output_cap, captured_tx.clone());
    let stderr = Capture::spawn(child.stderr.take(), job.output_cap, captured_tx);
    std::thread::spawn(move || drop(events.send(Event::Exited(child.wait()))));

    let deadline = Instant::now() + job.limit;
    let mut stopped = None;
    // When SIGTERM went to the group; SIGKILL follows `grace` later.
    let mut termed: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        let wake = match termed {
            None => deadline,
            Some(_) if killed => Instant::now() + Duration::from_hours(1),
            Some(at) => at + grace,
        };
        match inbox.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(Event::Exited(status)) => break status,
            Ok(Event::Cancel) => {
                stopped.get_or_insert(Stop::Cancelled);
                if termed.is_none() {
                    signal_group(pgid, rustix::process::Signal::TERM);
                    termed = Some(Instant::now());
                }
            }
            Err(RecvTimeoutError::Timeout) if termed.is_none() => {
                stopped = Some(Stop::TimedOut);
                signal_group(pgid, rustix::process::Signal::TERM);
                termed = Some(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {
                signal_group(pgid, rustix::process::Signal::KILL);
                killed = true;
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the control keeps a sender"),
        }
    };
    // A cancel from another thread signals the group directly; the exit may arrive first.
    if stopped.is_none() && control.cancelled.load(Ordering::SeqCst) {
        stopped = Some(Stop::Cancelled);
        termed.get_or_insert_with(Instant::now);
    }
    // What the command started and left in its group ends with it: at once
    // when it ended on its own, after the rest of the grace when it was
    // stopped (its children got SIGTERM too and may be cleaning up).
    if let Some(at) = termed {
        let mut pause = Duration::from_millis(1);
        while !live_members(pgid.as_raw_nonzero().get()).is_empty() && at.elapsed() < grace {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
    signal_group(pgid, rustix::process::Signal::KILL);
    drop(record);
    *control.group.lock().expect("not poisoned") = None;
    // Pipes close when the group is gone; a process that left the group may
    // hold them, so wait a bounded time and keep what was read.
    let until = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        if captured.recv_timeout(until.saturating_duration_since(Instant::now())).is_err() {
            break;
        }
    }
    let status = status?;
    let mut stderr = stderr.text();
    if let Some(stop) = stopped {
        let note = match stop {
            Stop::TimedOut => format!(
                "mcc: `{}` ran past its time limit of {} and its process group was killed",
                job.name(),
                humantime::format_duration(job.limit)
            ),
            Stop::Cancelled => format!("mcc: `{}` was cancelled and its process group was killed", job.name()),
        };
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        stderr.push_str(&note);
    }
    Ok(Outcome {
        code: if stopped.is_some() { None } else { status.code() },
        stdout: stdout.text(),
        stderr,
        timed_out: stopped == Some(Stop::TimedOut),
    })
}

fn signal_group(pgid: rustix::process::Pid, signal: rustix::process::Signal) {
    // ESRCH (the group is already gone) is the usual, fine answer.
    let _ = rustix::process::kill_process_group(pgid, signal);
}

/// Processes of group `pgid` that are still alive. Zombies are dead: one
/// whose parent left is reaped by init, which in a container may never do it.
pub(crate) fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // No /proc: ask the kernel whether anything has this group id.
        let alive =
            rustix::process::Pid::from_raw(pgid).is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok());
        return if alive { vec![pgid] } else { Vec::new() };
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(member) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2].parse() == Ok(pgid) && fields[0] != "Z" {
            found.push(member);
        }
    }
    found
}

/// The kept part of one output stream: the head, the tail, and the count.
struct Kept {
    head: Vec<u8>,
    tail: Vec<u8>,
    head_max: usize,
    tail_max: usize,
    total: u64,
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Kept>>);

impl Capture {
    fn spawn(pipe: Option<impl Read + Send + 'static>, cap: usize, done: mpsc::Sender<()>) -> Self {
        let kept = Kept { head: Vec::new(), tail: Vec::new(), head_max: cap / 2, tail_max: cap - cap / 2, total: 0 };
        let capture = Capture(Arc::new(Mutex::new(kept)));
        let shared = capture.clone();
        std::thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut kept = shared.0.lock().expect("not poisoned");
                    kept.total += n as u64;
                    let room = kept.head_max.saturating_sub(kept.head.len()).min(n);
                    kept.head.extend_from_slice(&buf[..room]);
                    kept.tail.extend_from_slice(&buf[room..n]);
                    // Trim in batches so keeping the tail costs amortised O(1) per byte.
                    if kept.tail.len() > 2 * kept.tail_max {
                        let cut = kept.tail.len() - kept.tail_max;
                        kept.tail.drain(..cut);
                    }
                }
            }
            let _ = done.send(());
        });
        capture
    }

    /// All of the text, or its head, a line saying how much was cut, and its tail.
    fn text(&self) -> String {
        let kept = self.0.lock().expect("not poisoned");
        let tail = &kept.tail[kept.tail.len().saturating_sub(kept.tail_max)..];
        let cut = kept.total - (kept.head.len() + tail.len()) as u64;
        let mut all = kept.head.clone();
        if cut > 0 {
            let note = format!(
                "\n[mcc: {cut} bytes of output cut here; the command wrote {} bytes, the first and last are kept]\n",
                kept.total
            );
            all.extend_from_slice(note.as_bytes());
        }
        all.extend_from_slice(tail);
        String::from_utf8_lossy(&all).into_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests;
