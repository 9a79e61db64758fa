//! The one supervised runner for every external command mcc starts
//! (validation commands, `ctx.run`, the headless worker's command).
//!
//! Each command runs in its own process group, so a time limit, a cancel (the
//! engine's lease end) or the hub's shutdown kills the command *and* whatever
//! it started, not just the `sh` in front. At most [`Supervisor::max_running`]
//! commands run at once; more wait in a queue, in order. Output is captured up
//! to a cap: the head and the tail are kept, and the text says what was cut.
//!
//! Two ways in: [`Supervisor::run`] blocks until the [`Outcome`];
//! [`Supervisor::start`] returns at once with a [`Handle`] (to cancel) and
//! hands the [`Outcome`] to a callback on the runner's thread, so a caller
//! such as the engine can treat a verdict as pending until it arrives.
//!
//! ```no_run
//! use std::time::Duration;
//! use mcc::command::{Job, Supervisor};
//!
//! let job = Job::shell("cargo test", std::path::Path::new("."), Duration::from_mins(10));
//! let (tx, rx) = std::sync::mpsc::channel();
//! let handle = Supervisor::global().start(job, move |outcome| { let _ = tx.send(outcome); });
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod records;
pub use records::record_groups_in;

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

/// Run `script` with `sh -c` in `cwd` under the shared [`Supervisor`];
/// its whole process group is killed after `limit`.
pub fn run_shell(script: &str, cwd: &Path, limit: Duration) -> std::io::Result<Outcome> {
    Supervisor::global().run(Job::shell(script, cwd, limit))
}

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
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some((pgid, events)) = &*self.group.lock().expect("not poisoned") {
            // Kill here as well as on the runner thread, so shutdown is done when this returns.
            let _ = rustix::process::kill_process_group(*pgid, rustix::process::Signal::KILL);
            let _ = events.send(Event::Cancel);
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
    queue: VecDeque<Queued>,
    live: HashMap<u64, Arc<Control>>,
    closed: bool,
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
        let state = State { max: max_running.max(1), ..State::default() };
        Self { state: Arc::new(Mutex::new(state)), ids: Arc::new(AtomicU64::new(0)) }
    }

    /// The runner shared by the whole process, bounded by the machine's
    /// cores until [`Supervisor::set_max_running`] says otherwise.
    pub fn global() -> &'static Supervisor {
        static GLOBAL: OnceLock<Supervisor> = OnceLock::new();
        GLOBAL.get_or_init(|| Supervisor::new(std::thread::available_parallelism().map_or(2, usize::from).max(2)))
    }

    /// The runner of workflow commands (`ctx.run`). Apart from [`Supervisor::global`]
    /// because a workflow calls it on the engine thread, which must never
    /// wait in line behind validation commands; the engine makes one call at a
    /// time, so its bound is rarely met.
    pub fn workflows() -> &'static Supervisor {
        static WORKFLOWS: OnceLock<Supervisor> = OnceLock::new();
        WORKFLOWS.get_or_init(|| Supervisor::new(4))
    }

    /// Kill what every process-wide runner runs (the hub stops).
    pub fn kill_everything() {
        Self::global().kill_all();
        Self::workflows().kill_all();
    }

    pub fn max_running(&self) -> usize {
        self.lock().max
    }

    /// Change the bound; queued commands start if it grew.
    pub fn set_max_running(&self, max: usize) {
        let mut state = self.lock();
        state.max = max.max(1);
        self.pump(&mut state);
    }

    /// How many commands run now and how many wait.
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

    /// Kill every running command's group and every queued one; refuse new
    /// ones. Done when it returns: the kill signals are sent.
    pub fn shutdown(&self) {
        self.lock().closed = true;
        self.kill_all();
    }

    /// Kill every running command's group and drop every queued one (each
    /// still reports its outcome); new commands are taken as before.
    pub fn kill_all(&self) {
        let (live, queued) = {
            let mut state = self.lock();
            let live: Vec<Arc<Control>> = state.live.values().cloned().collect();
            (live, std::mem::take(&mut state.queue))
        };
        for control in live {
            control.cancel();
        }
        for q in queued {
            (q.done)(Outcome::not_run("mcc: the command was not started: the hub is shutting down".into()));
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
            let outcome = if q.control.cancelled.load(Ordering::SeqCst) {
                Outcome::not_run("mcc: the command was cancelled before it started".into())
            } else {
                match execute(&q.job, &q.control) {
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
fn execute(job: &Job, control: &Control) -> std::io::Result<Outcome> {
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
    let mut child = command.spawn()?;
    let pgid = rustix::process::Pid::from_child(&child);
    // Lets the next hub kill this group if this hub is killed before it ends.
    let record = records::Record::write(pgid);
    let (events, inbox) = mpsc::channel();
    *control.group.lock().expect("not poisoned") = Some((pgid, events.clone()));
    if control.cancelled.load(Ordering::SeqCst) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    if let (Some(bytes), Some(mut pipe)) = (job.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || drop(pipe.write_all(&bytes)));
    }
    let (captured_tx, captured) = mpsc::channel();
    let stdout = Capture::spawn(child.stdout.take(), job.output_cap, captured_tx.clone());
    let stderr = Capture::spawn(child.stderr.take(), job.output_cap, captured_tx);
    std::thread::spawn(move || drop(events.send(Event::Exited(child.wait()))));

    let deadline = Instant::now() + job.limit;
    let mut stopped = None;
    let status = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(if stopped.is_some() { Duration::MAX } else { wait }) {
            Ok(Event::Exited(status)) => break status,
            Ok(Event::Cancel) => {
                kill_group(pgid);
                stopped.get_or_insert(Stop::Cancelled);
            }
            Err(RecvTimeoutError::Timeout) => {
                kill_group(pgid);
                stopped = Some(Stop::TimedOut);
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the control keeps a sender"),
        }
    };
    // A cancel from another thread kills the group directly; the exit may arrive first.
    if stopped.is_none() && control.cancelled.load(Ordering::SeqCst) {
        stopped = Some(Stop::Cancelled);
    }
    // Whatever the command left running in its group ends with it.
    kill_group(pgid);
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

fn kill_group(pgid: rustix::process::Pid) {
    // ESRCH (the group is already gone) is the usual, fine answer.
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
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
