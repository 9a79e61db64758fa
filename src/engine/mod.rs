//! The engine: the one owner of task state. It runs on its own thread,
//! takes [`Input`]s from connections, the report watcher and validation
//! runs over a channel, applies a batch of them to the [`Scheduler`],
//! commits the batch to the [`Store`] in one transaction (group commit), and
//! only then sends the answers.

mod budget;
mod judge;
mod offers;
mod old;
mod outside;
mod policy;
mod presence;
mod problems;
mod races;
mod submit;
mod uploads;
pub mod views;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc::Sender as Outbox;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

pub use budget::Limits as BudgetLimits;
pub use policy::{Candidate, DefaultPolicy, HeldPolicy, Policy, PolicyError};
use problems::{ProblemKind, Problems};
use submit::Sent;

use crate::command::Outcome;
use crate::handoff::{self, Inbox as _, Received};
use crate::scheduler::{Refusal, Scheduler, Settings, TaskId, TaskState};
use crate::store::writer::Writer;
use crate::store::{self, Clock, Location, Notes, Rows, StoreError};
use crate::task::{Report, ReportStatus, TaskSpec};
use crate::wire::{ClientMsg, ServerMsg};

/// One connection's id.
pub type ConnId = u64;

/// What the engine sends to a connection.
#[derive(Debug)]
pub enum Outgoing {
    Msg(ServerMsg),
    /// A connection's own marker, handed back in order with its answers
    /// (see [`Input::Relay`]): reaching it, the connection knows that
    /// everything queued for it before has been written.
    Mark(u64),
    /// Send nothing more; close the socket.
    Close,
}

/// Everything the engine reacts to.
pub enum Input {
    Connected {
        conn: ConnId,
        outbox: Outbox<Outgoing>,
    },
    Disconnected {
        conn: ConnId,
    },
    Message {
        conn: ConnId,
        msg: ClientMsg,
    },
    /// Queue `outgoing` for `conn` behind the answers to its earlier inputs
    /// (the hub's answer to a frame that did not parse, and its markers).
    Relay {
        conn: ConnId,
        outgoing: Outgoing,
    },
    /// A report file that parsed; applied as any other report.
    ReportFile {
        /// Relative to the root, for messages.
        path: String,
        full: PathBuf,
        report: Report,
        /// Read again at start, not seen written.
        rescan: bool,
    },
    /// A report file that could not be used; shown in status.
    ReportFileRejected {
        path: String,
        error: String,
    },
    /// Something the hub refused outside a connection (a request file that
    /// is a link, a FIFO, too large); shown in status.
    Problem {
        /// The file or folder it is about (each is said once).
        about: String,
        text: String,
    },
    /// A validation command finished.
    Validated {
        task: TaskId,
        attempt: u32,
        outcome: Outcome,
    },
    /// A command a workflow call waits on finished (see [`Policy::take_commands`]).
    WorkflowCommand {
        call: u64,
        outcome: Outcome,
    },
    /// Load (or reload) a workflow; the answer goes to `conn` if any.
    LoadWorkflow {
        conn: Option<ConnId>,
        path: PathBuf,
    },
    /// Files under the root changed that a workflow watches.
    FilesChanged {
        paths: Vec<String>,
    },
    Shutdown {
        message: String,
    },
    /// The store writer stopped on a failed commit: stop with its error.
    StoreFailed,
}

/// Loads a workflow file into a [`Policy`]; given by the caller so the
/// engine does not depend on the Lua side.
pub type Loader = fn(path: &Path, root: &Path) -> Result<Box<dyn Policy>, String>;

/// How the engine is set up.
pub struct Config {
    /// The project root: validation commands run here.
    pub root: PathBuf,
    /// `.mcc/` under the root.
    pub state_dir: PathBuf,
    /// Where the project's state is kept.
    pub store: Location,
    pub settings: Settings,
    pub loader: Option<Loader>,
    /// Time limit of a task's validation command.
    pub validation_limit: Duration,
    pub timing: Timing,
    /// Where validation and workflow commands run; the hub stops them when it stops.
    pub runners: crate::command::Runners,
    /// What one task's files may weigh, each way, for a remote worker (`--max-task-files-bytes`).
    pub max_task_files_bytes: u64,
    /// The project's leader lease, when several hubs share the store.
    pub leader: store::Leader,
    /// Bring the checkout at `root` to the run's accepted files before serving (a standby).
    pub restore_checkout: bool,
    /// Set by the engine when it stops with a word for every client (it
    /// stepped down), before it tells the connected ones: a connection that
    /// comes after any client was told is told the same, never greeted.
    pub farewell: std::sync::Arc<std::sync::OnceLock<ServerMsg>>,
}

/// How long the hub waits on the clock where a user rarely wants to choose:
/// the defaults are today's values; tests set small ones rather than wait.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The least a `done` waits for its verdict before it hears it is pending.
    pub verdict_wait_floor: Duration,
    /// How long a store write waits for another connection's lock on `state.db`.
    pub busy_timeout: Duration,
    /// How long a stopped command has between SIGTERM and SIGKILL.
    pub command_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            verdict_wait_floor: judge::VERDICT_WAIT_FLOOR,
            busy_timeout: store::BUSY_TIMEOUT,
            command_grace: crate::command::DEFAULT_GRACE,
        }
    }
}

/// The longest a worker may wait in one command.
pub const MAX_WAIT: Duration = Duration::from_mins(5);
/// How many connections may wait for work at once.
pub const MAX_WAITERS: usize = 4096;
/// How often the time left on held leases is written while nothing else
/// changes: the most a lease can gain from a `kill -9` of the hub.
const LEASE_CHECKPOINT: Duration = Duration::from_secs(1);
/// Inputs waiting for the engine at most: a sender past it waits (backpressure).
pub const ENGINE_QUEUE: usize = 16_384;
/// Answers waiting for one connection's reader at most: a reader this far
/// behind is cut off (its queue never grows without bound). Connections
/// make their outbox with this capacity.
pub const OUTBOX: usize = 4096;
/// How many inputs share one commit at most.
const MAX_BATCH: usize = 1024;
pub use crate::scheduler::DEFAULT_MAX_TASKS;

/// Whether `adding` more tasks fit the store; the error names the limit and the flag.
pub fn room_for(scheduler: &Scheduler, adding: usize) -> Result<(), String> {
    let max = scheduler.settings.max_tasks;
    let held = scheduler.task_count();
    if held + adding <= max {
        return Ok(());
    }
    Err(format!(
        "adding {adding} tasks to the {held} this hub holds would pass its limit of {max} tasks; \
         cancel or finish work first, or start the hub with a larger limit (`mcc hub --max-tasks N`, `mcc run --max-tasks N`)"
    ))
}

/// How often a workflow that did not load is looked at for a fix.
const LOOK_FOR_FIX: Duration = Duration::from_millis(250);

/// How a waiting worker's answer is wrapped when work turns up (or not).
#[derive(Debug, Clone)]
enum Reply {
    /// An mcc `next`: a bare offer.
    Offer,
    /// After `done`: the verdict with the offer as `next`.
    Verdict { task: TaskId, attempt: u32, accepted: bool, failed: bool, reasons: Vec<String> },
    /// After `block` / `fail`: an ack with the offer as `next`.
    Ack { what: &'static str, message: String, task: TaskId },
    /// An old-protocol worker: `task_assigned`, pushed whenever work appears.
    Push,
}

#[derive(Debug)]
struct Waiter {
    conn: ConnId,
    worker: String,
    /// `None` for old-protocol workers, which wait as long as they are connected.
    deadline: Option<Instant>,
    reply: Reply,
}

#[derive(Debug, Clone, PartialEq)]
enum Role {
    Anonymous,
    Coordinator,
    Worker(String),
}

struct Conn {
    outbox: Outbox<Outgoing>,
    role: Role,
}

/// Who is waiting for a submitted task's verdict.
#[derive(Debug, Clone)]
struct Judging {
    conn: Option<ConnId>,
    worker: String,
    wait: Duration,
    old_protocol: bool,
    /// When a waiting `done` is told the verdict is pending.
    deadline: Option<Instant>,
}

impl Judging {
    /// Nobody waits: a report file, a restart, a judgement asked again.
    fn nobody(worker: String) -> Self {
        Self { conn: None, worker, wait: Duration::ZERO, old_protocol: false, deadline: None }
    }
}

/// An answer on its way: handed to the connection's outbox once the
/// commit it belongs to is durable.
type Delivery = (ConnId, Outbox<Outgoing>, Outgoing);

/// Hands durable answers to connections, on the store writer's thread.
struct Postman {
    engine: Sender<Input>,
    /// Connections cut off for not reading: nothing more goes to them.
    cut: HashSet<ConnId>,
    /// Cut connections the engine has not been told of yet (its queue was full).
    untold: Vec<ConnId>,
}

impl Postman {
    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        for (conn, outbox, out) in deliveries {
            if self.cut.contains(&conn) {
                continue;
            }
            if let Err(TrySendError::Full(_)) = outbox.try_send(out) {
                // Its outbox ends once the engine drops it, after what is queued is written.
                tracing::warn!(
                    "mcc hub: closing connection {conn}: {OUTBOX} answers wait for a reader that does not read them"
                );
                self.cut.insert(conn);
                self.untold.push(conn);
            }
        }
        // Never wait on the engine here: it may be waiting on this thread.
        self.untold
            .retain(|&conn| matches!(self.engine.try_send(Input::Disconnected { conn }), Err(TrySendError::Full(_))));
    }
}

/// A handle to send inputs to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Input>,
}

impl From<Sender<Input>> for EngineHandle {
    /// A handle to whoever holds the receiving end (tests, tools without an engine).
    fn from(tx: Sender<Input>) -> Self {
        Self { tx }
    }
}

impl EngineHandle {
    /// Send an input from a thread of its own (a watcher, a command's
    /// runner, a test), waiting while the engine's queue is full; false when
    /// the engine has stopped. Never from a tokio task: it would block its
    /// runtime's thread (tokio panics rather than allow it); use [`Self::send_async`].
    pub fn send(&self, input: Input) -> bool {
        self.tx.blocking_send(input).is_ok()
    }

    /// Send an input from a tokio task (a connection), awaiting room while
    /// the engine's queue is full; false when the engine has stopped.
    pub async fn send_async(&self, input: Input) -> bool {
        self.tx.send(input).await.is_ok()
    }
}

/// What every connection is told when the engine stops on `e`, if anything:
/// a hub another one took over from (fenced) says it stepped down, with the
/// wire code `stepped_down`, so a client that knows several hubs tries the
/// next. Other store failures close the connections without a word, as before.
pub fn farewell(e: &StoreError) -> Option<ServerMsg> {
    match e {
        StoreError::Fenced { .. } => Some(ServerMsg::error_code(
            format!(
                "{e}. It grants nothing more: connect to the hub that serves the project now (named above); \
                 a client given several addresses (MCC_HUB=ws://a,ws://b) moves on by itself"
            ),
            STEPPED_DOWN,
        )),
        _ => None,
    }
}

/// The wire code of a hub that found another holding its project's leader lease.
pub const STEPPED_DOWN: &str = "stepped_down";

/// The engine's state; see the module docs.
pub struct Engine {
    config: Config,
    scheduler: Scheduler,
    /// The store, written behind the engine (see [`Writer`]): answers go out
    /// through it once what they acknowledge is durable.
    store: Writer<Delivery>,
    /// The hub clock leases are stored on.
    clock: Clock,
    /// Values for the `meta` table, written with the next commit.
    pending_meta: Vec<(&'static str, String)>,
    /// The workflow loaded and the validations ended since the last commit, for the store.
    notes: Notes,
    /// `show_task` history reads running (see `views.rs`).
    history_reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// An upload folder may be under `.mcc/uploads/` (see `uploads.rs`).
    uploads_seen: bool,
    /// The writer stopped on a failed commit.
    store_failed: bool,
    policy: Box<dyn Policy>,
    workflow_path: Option<PathBuf>,
    conns: HashMap<ConnId, Conn>,
    coordinator: Option<ConnId>,
    waiters: offers::Waiters,
    judging: HashMap<TaskId, Judging>,
    /// Validation commands running, per (task, attempt).
    validations: HashMap<(TaskId, u32), judge::Validation>,
    /// Commands the workflow's parked calls wait on, by call id.
    workflow_calls: HashMap<u64, crate::command::Handle>,
    /// Submitted tasks whose `accept` waits on a command.
    accept_pending: BTreeSet<TaskId>,
    /// Answers held until the batch is committed.
    outgoing: Vec<(ConnId, Outgoing)>,
    /// Problems shown in status: bad report files, workflow errors.
    problems: Problems,
    /// The workflow's `ctx.log` lines, newest last.
    log: Vec<String>,
    /// A workflow that failed to load, the stamp of its sources then, and
    /// when they were last looked at: it is loaded again once they change.
    failed_load: Option<(PathBuf, u64, Instant)>,
    /// A workflow has loaded since start: a later failed load keeps it.
    workflow_loaded: bool,
    /// Submitted tasks whose `accept` raised: judged again when a workflow loads or on retry.
    unjudged: BTreeSet<TaskId>,
    /// Whether the store says the run finished, as last committed.
    stored_finished: Option<bool>,
    /// When the time left on every held lease was last written.
    leases_written: Instant,
    tx: Sender<Input>,
    stopping: Option<String>,
    /// Subscribers and the index their summaries and deltas come from.
    progress: views::Progress,
    /// What the run, its phases and tasks spent, and the budgets the engineer set.
    spending: budget::Spending,
    /// The last validation outcome of each racer, for `choose` (see `races.rs`).
    race_validations: HashMap<TaskId, Outcome>,
    /// Which workers' chats are alive, and the graces of those that ended.
    presences: presence::Presences,
}

/// Bring the checkout at `root` to the files the run's accepted attempts
/// left, as the store kept them, once this hub holds the project and before
/// it serves: validations and the next workers then see what was accepted.
/// What cannot be restored is said, and the hub serves all the same.
fn restore_checkout(root: &Path, store: &mut dyn store::Backend) {
    match store::restore::restore_accepted(root, store) {
        Ok(restored) => {
            tracing::info!(
                "mcc hub: checkout brought to the run's accepted files: {} written, {} removed, {} already so",
                restored.written.len(),
                restored.removed.len(),
                restored.unchanged.len()
            );
            for why in &restored.refused {
                tracing::warn!("mcc hub: not restored: {why}");
            }
        }
        Err(e) => tracing::warn!(
            "mcc hub: the checkout could not be brought to the run's accepted files ({e}); it serves with the files as they are"
        ),
    }
}

impl Engine {
    /// Open the store, restore state and start the engine thread.
    pub fn start(
        config: Config,
    ) -> Result<(EngineHandle, std::thread::JoinHandle<Result<(), StoreError>>), StoreError> {
        let options = store::Options {
            busy_timeout: config.timing.busy_timeout,
            lease: config.leader.lease,
            address: config.leader.address.clone(),
            ..store::Options::default()
        };
        let mut store = store::open(&config.store, &options)?;
        if config.restore_checkout {
            restore_checkout(&config.root, store.as_mut());
        }
        let scheduler = store.restore(config.settings.clone())?;
        // Only the current run's tasks count against its budgets: an earlier workflow's stay in the store.
        let (task_runs, latest) = (store.task_runs()?, store.runs()?.last().map(|r| r.id));
        let of_run = |id: &str| task_runs.get(id).is_none_or(|run| Some(*run) == latest);
        let raised = store.meta(budget::META_KEY)?;
        let spending = budget::Spending::restore(&scheduler, Some(&of_run), raised.as_deref()).unwrap_or_else(|e| {
            tracing::warn!("mcc hub: {e}");
            budget::Spending::default()
        });
        let race_validations = races::stored_validations(&scheduler, store.as_mut());
        let workflow_path = store.meta("workflow_path")?.map(PathBuf::from);
        let (tx, rx) = tokio::sync::mpsc::channel(ENGINE_QUEUE);
        let mut inbox = handoff::TokioInbox::new(rx);
        let engine_tx = tx.clone();
        let clock = store.clock();
        let mut postman = Postman { engine: tx.clone(), cut: HashSet::new(), untold: Vec::new() };
        let told = tx.clone();
        let store = Writer::start(
            store,
            move |deliveries| postman.deliver(deliveries),
            move |e| {
                tracing::error!("mcc hub: {e}");
                // If the engine's queue is full it finds the writer gone at its next commit.
                let _ = told.try_send(Input::StoreFailed);
            },
        );
        let handle = std::thread::Builder::new()
            .name("mcc-engine".into())
            .spawn(move || {
                let uploads_seen = uploads::any_at_start(&config.state_dir);
                // Built here: a workflow's Lua state never leaves this thread.
                let mut engine = Engine {
                    config,
                    scheduler,
                    store,
                    clock,
                    pending_meta: Vec::new(),
                    notes: Notes::default(),
                    history_reads: std::sync::Arc::default(),
                    uploads_seen,
                    store_failed: false,
                    policy: Box::new(DefaultPolicy),
                    workflow_path: None,
                    conns: HashMap::new(),
                    coordinator: None,
                    waiters: offers::Waiters::default(),
                    judging: HashMap::new(),
                    validations: HashMap::new(),
                    workflow_calls: HashMap::new(),
                    accept_pending: BTreeSet::new(),
                    outgoing: Vec::new(),
                    problems: Problems::default(),
                    log: Vec::new(),
                    failed_load: None,
                    workflow_loaded: false,
                    unjudged: BTreeSet::new(),
                    stored_finished: None,
                    leases_written: Instant::now(),
                    tx: engine_tx,
                    stopping: None,
                    progress: views::Progress::default(),
                    spending,
                    race_validations,
                    presences: presence::Presences::default(),
                };
                engine.resume(workflow_path);
                engine.run(&mut inbox)
            })
            .expect("spawn the engine thread");
        Ok((EngineHandle { tx }, handle))
    }

    /// After a restart: reload the workflow, judge again what was submitted.
    fn resume(&mut self, workflow_path: Option<PathBuf>) {
        self.resume_presences();
        let resubmit: Vec<TaskId> =
            self.scheduler.tasks().filter(|t| t.state() == TaskState::Submitted).map(|t| t.spec.id.clone()).collect();
        // What attempts changed outside their tasks is in their stored reports: shown again.
        let outside: Vec<TaskId> = self
            .scheduler
            .tasks()
            .filter(|t| {
                t.report().is_some_and(|r| !(r.outside.is_empty() && r.conflicts.is_empty() && r.shared.is_empty()))
            })
            .map(|t| t.spec.id.clone())
            .collect();
        for id in outside {
            self.show_outside(&id);
        }
        if let Some(path) = workflow_path {
            self.load_workflow(None, path);
        }
        for id in resubmit {
            let worker = self.scheduler.task(&id).and_then(|t| t.holder().map(str::to_owned)).unwrap_or_default();
            self.judging.insert(id.clone(), Judging::nobody(worker));
            self.start_judging(&id);
        }
        // A race decided but not committed before a crash is decided again
        // now, committed with the first batch, before anything is acknowledged.
        self.settle_races();
    }

    fn run(mut self, inbox: &mut handoff::TokioInbox<Input>) -> Result<(), StoreError> {
        let served = self.serve(inbox);
        let conns = std::mem::take(&mut self.conns);
        // Everything handed to the writer is written and delivered first.
        let result = served.and(self.store.finish());
        if let Err(e) = &result
            && let Some(farewell) = farewell(e)
        {
            // Straight to the sockets, not through the writer: it acknowledges
            // nothing, and the writer has stopped. Then the outboxes close.
            let _ = self.config.farewell.set(farewell.clone());
            for conn in conns.values() {
                let _ = conn.outbox.try_send(Outgoing::Msg(farewell.clone()));
            }
        }
        result
    }

    fn serve(&mut self, inbox: &mut handoff::TokioInbox<Input>) -> Result<(), StoreError> {
        // Kept from batch to batch: growing a new one each time was 3% of the engine's CPU.
        let mut batch: Vec<Input> = Vec::new();
        loop {
            match handoff::receive(inbox, self.next_wakeup()) {
                Received::Input(input) => batch.push(input),
                Received::TimedOut => {}
                Received::Closed => break,
            }
            while batch.len() < MAX_BATCH {
                match inbox.look() {
                    Received::Input(input) => batch.push(input),
                    Received::TimedOut | Received::Closed => break,
                }
            }
            let after_creates = creates_last(&mut batch);
            if !self.step(batch.drain(..))? || (!after_creates.is_empty() && !self.step(after_creates)?) {
                break;
            }
        }
        Ok(())
    }

    /// Handle `inputs`, let the workflow act and hand out work, then commit;
    /// false when the engine is to stop.
    fn step(&mut self, inputs: impl IntoIterator<Item = Input>) -> Result<bool, StoreError> {
        // Before the inputs: a status asked now sees the fixed workflow.
        self.reload_fixed_workflow();
        for input in inputs {
            self.handle(input);
        }
        self.settle();
        if self.scheduler.next_deadline().is_some() && self.leases_written.elapsed() >= LEASE_CHECKPOINT {
            // Leases are stored as time left: write it now and then, so a
            // hub killed with `kill -9` gives a lease back at most this much.
            self.scheduler.touch_held();
            self.leases_written = Instant::now();
        }
        if self.store_failed {
            return Ok(false);
        }
        self.commit()?;
        if let Some(message) = self.stopping.take() {
            // Store the time every lease has left, to resume with it.
            self.scheduler.touch_held();
            self.shutdown(&message);
            self.commit()?;
            return Ok(false);
        }
        Ok(true)
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let waits = self.waiters.next_deadline().into_iter();
        let verdicts = self.judging.values().filter(|j| j.conn.is_some()).filter_map(|j| j.deadline);
        let waits = waits.chain(verdicts);
        let checkpoint = self.scheduler.next_deadline().map(|_| self.leases_written + LEASE_CHECKPOINT);
        let reload = self.failed_load.as_ref().map(|(_, _, looked)| *looked + LOOK_FOR_FIX);
        let wakeups = waits.chain(self.scheduler.next_deadline()).chain(self.policy.next_wakeup());
        let push = self.progress.next_push();
        let graces = self.presences.next_deadline();
        wakeups.chain(checkpoint).chain(reload).chain(push).chain(graces).min()
    }

    /// A workflow that did not load is loaded again once its file or any
    /// `.lua` file beside it changes (an error may be in a module it requires).
    fn reload_fixed_workflow(&mut self) {
        let Some((path, stamp, looked)) = self.failed_load.clone() else { return };
        if looked.elapsed() < LOOK_FOR_FIX {
            return;
        }
        if sources_stamp(&path) == stamp {
            self.failed_load = Some((path, stamp, Instant::now()));
        } else {
            self.load_workflow(None, path);
        }
    }

    /// Expire leases, let the workflow act, hand out work, time out waits.
    fn settle(&mut self) {
        let now = Instant::now();
        self.scheduler.expire(now);
        self.presence_graces(now);
        if let Err(e) = self.policy.step(&mut self.scheduler, now) {
            self.workflow_failed(&e);
        }
        self.workflow_verdicts();
        self.start_workflow_commands();
        self.settle_races();
        self.end_stale_judgements(now);
        self.verdicts_overdue(now);
        for line in self.policy.take_log() {
            tracing::info!("mcc workflow: {line}");
            self.log.push(line);
        }
        if self.log.len() > 100 {
            self.log.drain(..self.log.len() - 100);
        }
        self.dispatch(now);
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let changes = self.scheduler.take_changes();
        let mut meta = self.policy.state();
        let finished = self.all_done();
        if self.stored_finished != Some(finished) {
            // A finished run is a stored state: worker commands read it when no hub runs.
            self.stored_finished = Some(finished);
            meta.push(("run_finished", finished.to_string()));
        }
        meta.append(&mut self.pending_meta);
        // Progress goes out with the answers, once what it shows is durable.
        self.publish(&changes, finished);
        let notes = std::mem::take(&mut self.notes);
        let rows = Rows::gather_with(self.clock, &self.scheduler, &changes, &meta, notes);
        let conns = &self.conns;
        let deliveries = self
            .outgoing
            .drain(..)
            .filter_map(|(conn, out)| conns.get(&conn).map(|c| (conn, c.outbox.clone(), out)))
            .collect();
        self.store.commit(rows, deliveries)
    }

    /// Tell every connection the hub stops, after what is queued for it.
    fn shutdown(&mut self, message: &str) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send(conn, ServerMsg::ServerShutdown { message: message.to_owned() });
            self.outgoing.push((conn, Outgoing::Close));
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.outgoing.push((conn, Outgoing::Msg(msg)));
    }

    fn to_coordinator(&mut self, msg: ServerMsg) {
        if let Some(c) = self.coordinator {
            self.send(c, msg);
        }
    }

    /// Show `text` for the problem `(kind, subject)` in status, once.
    fn problem(&mut self, kind: ProblemKind, subject: &str, text: String) {
        if self.problems.set(kind, subject, text.clone()) {
            tracing::warn!("mcc hub: {text}");
        }
    }

    /// A workflow step, hook or continuation raised.
    fn workflow_failed(&mut self, e: &PolicyError) {
        let error = e.to_string();
        self.problem(ProblemKind::WorkflowFailed, &error, format!("workflow: {error}"));
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Connected { conn, outbox } => {
                self.conns.insert(conn, Conn { outbox, role: Role::Anonymous });
            }
            Input::Disconnected { conn } => {
                self.conns.remove(&conn);
                self.presence_closed(conn);
                self.waiters.retain(|w| w.conn != conn);
                for j in self.judging.values_mut() {
                    if j.conn == Some(conn) {
                        j.conn = None;
                    }
                }
                if self.coordinator == Some(conn) {
                    self.coordinator = None;
                }
            }
            Input::Message { conn, msg } => self.message(conn, msg),
            Input::Relay { conn, outgoing } => self.outgoing.push((conn, outgoing)),
            Input::ReportFile { path, full, report, rescan } => self.report_file(path, full, report, rescan),
            Input::ReportFileRejected { path, error } => {
                self.problem(ProblemKind::ReportFileRefused, &path, format!("report file {path}: {error}"));
            }
            Input::Problem { about, text } => self.problem(ProblemKind::StateFileRefused, &about, text),
            Input::Validated { task, attempt, outcome } => self.validated(&task, attempt, &outcome),
            Input::WorkflowCommand { call, outcome } => self.workflow_command_done(call, outcome),
            Input::LoadWorkflow { conn, path } => self.load_workflow(conn, path),
            Input::FilesChanged { paths } => self.policy.files_changed(paths),
            Input::Shutdown { message } => self.stopping = Some(message),
            Input::StoreFailed => self.store_failed = true,
        }
    }

    fn load_workflow(&mut self, conn: Option<ConnId>, path: PathBuf) {
        let Some(loader) = self.config.loader else {
            if let Some(c) = conn {
                self.send(c, ServerMsg::error_code("this hub cannot load workflows", "no_workflows"));
            }
            return;
        };
        match loader(&path, &self.config.root) {
            Ok(mut policy) => {
                self.failed_load = None;
                self.workflow_loaded = true;
                self.problems.retract_all(ProblemKind::WorkflowNotLoaded);
                let name = policy.name();
                let state = self.store.meta("workflow_state").unwrap_or_else(|e| {
                    let error = e.to_string();
                    self.problem(
                        ProblemKind::WorkflowStateUnreadable,
                        &error,
                        format!("cannot read the workflow state: {error}"),
                    );
                    None
                });
                policy.restore(state, EngineHandle { tx: self.tx.clone() });
                self.policy = policy;
                self.drop_parked_calls();
                // A new workflow decides anew who gets what: look at every waiting worker.
                self.scheduler.mark_work_changed();
                // Start its phase now: requests later in this batch already see its tasks.
                if let Err(e) = self.policy.step(&mut self.scheduler, Instant::now()) {
                    self.workflow_failed(&e);
                }
                // The store starts a run when it is not the current run's workflow.
                self.notes.workflow = Some(path.to_string_lossy().into_owned());
                if self.workflow_path.as_ref() != Some(&path) {
                    if self.workflow_path.is_some() {
                        // Another workflow: the store starts a new run, with budgets of its own.
                        self.spending.new_run();
                        self.pending_meta.push((budget::META_KEY, "{}".to_owned()));
                    }
                    self.workflow_path = Some(path.clone());
                    self.pending_meta.push(("workflow_path", path.to_string_lossy().into_owned()));
                }
                // What a broken workflow could not judge is judged by this one.
                let unjudged: Vec<TaskId> = self.unjudged.iter().cloned().collect();
                for id in unjudged {
                    self.rejudge(&id);
                }
                if let Some(c) = conn {
                    let message = format!("workflow {name} loaded from {}", path.display());
                    self.send(c, ServerMsg::Ack { what: "load_workflow".into(), message, task_id: None, next: None });
                }
            }
            Err(e) => {
                self.failed_load = Some((path.clone(), sources_stamp(&path), Instant::now()));
                let text =
                    format!("workflow {} did not load: {e}; fix the file and it is loaded again", path.display());
                if let Some(c) = conn {
                    self.send(c, ServerMsg::error_code(text.clone(), "workflow_error"));
                }
                if !self.workflow_loaded {
                    // Never "accept everything": hand out and judge nothing until it loads.
                    self.policy = Box::new(HeldPolicy { error: text.clone() });
                }
                self.problem(ProblemKind::WorkflowNotLoaded, &path.to_string_lossy(), text);
            }
        }
    }

    fn role(&self, conn: ConnId) -> Role {
        self.conns.get(&conn).map_or(Role::Anonymous, |c| c.role.clone())
    }

    fn set_role(&mut self, conn: ConnId, role: Role) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.role = role;
        }
    }

    pub(super) fn wait_of(wait_ms: Option<u64>) -> Duration {
        wait_ms.map_or(Duration::ZERO, Duration::from_millis).min(MAX_WAIT)
    }

    fn refuse(&mut self, conn: ConnId, refusal: &Refusal) {
        self.send(conn, ServerMsg::error_code(refusal.to_string(), refusal.code()));
    }

    fn message(&mut self, conn: ConnId, msg: ClientMsg) {
        let now = Instant::now();
        self.presence_heard(&msg);
        match msg {
            ClientMsg::Register { role, project_id, worker_id } => {
                self.register(conn, role.as_ref().and_then(Value::as_str), project_id, worker_id);
            }
            ClientMsg::CreateTasks { tasks } => self.old_create_tasks(conn, tasks, now),
            ClientMsg::RequestTask {} => {
                let Role::Worker(worker) = self.role(conn) else {
                    let hint = "register first: {\"type\":\"register\",\"role\":\"worker\",\"workerId\":\"...\"}";
                    self.send(conn, ServerMsg::error_hint("Only workers can request tasks", hint));
                    return;
                };
                self.offer_old(conn, &worker, now);
            }
            ClientMsg::TaskComplete { task_id, report } => self.old_complete(conn, task_id, report),
            ClientMsg::Status {} => {
                let status = self.old_status();
                self.send(conn, status);
            }
            ClientMsg::Next { worker, wait_ms, can, model } => {
                if let Some(err) = bad_name(&worker) {
                    self.send(conn, err);
                    return;
                }
                if !can.is_empty() || model.is_some() {
                    self.scheduler.set_kit(&worker, can, model, now);
                }
                self.offer(conn, &worker, Self::wait_of(wait_ms), Reply::Offer, now);
            }
            ClientMsg::Done {
                worker,
                task_id,
                attempt,
                deliverables,
                score,
                notes,
                wait_ms,
                files,
                changed,
                isolated,
                usage,
            } => {
                // A deliverable that travels with the `done` is in the checkout once it is applied.
                let travels = |d: &String| files.iter().any(|f| &f.path == d);
                if let Some(bad) = deliverables.iter().find(|d| !travels(d) && !self.config.root.join(d).exists()) {
                    let text = format!(
                        "deliverable `{bad}` does not exist under {}; write it first, or pass the path you wrote with --deliverable",
                        self.config.root.display()
                    );
                    self.send(conn, ServerMsg::error_code(text, "missing_deliverable"));
                    return;
                }
                let mut report = Report::completed(&task_id, &worker, deliverables);
                report.context_efficiency_score = score;
                report.notes = notes;
                report.usage = usage;
                self.socket_report(conn, "done", attempt, wait_ms, report, Sent { files, changed, isolated });
            }
            ClientMsg::Block { worker, task_id, attempt, question, wait_ms, usage } => {
                let mut report = Report::completed(&task_id, &worker, Vec::new());
                report.status = ReportStatus::Blocked;
                report.requested_guidance = Some(question);
                report.usage = usage;
                self.socket_report(conn, "block", attempt, wait_ms, report, Sent::default());
            }
            ClientMsg::Fail { worker, task_id, attempt, reason, wait_ms, usage } => {
                let mut report = Report::completed(&task_id, &worker, Vec::new());
                report.status = ReportStatus::Failed;
                report.notes = Some(reason);
                report.usage = usage;
                self.socket_report(conn, "fail", attempt, wait_ms, report, Sent::default());
            }
            ClientMsg::Progress { worker, task_id, attempt, note } => {
                match self.scheduler.progress(&worker, &task_id, attempt, &note, now) {
                    Ok(()) => {
                        let left = self.scheduler.task(&task_id).and_then(|t| t.lease_left(now)).unwrap_or_default();
                        let message = format!("noted; lease of {task_id} extended to {}", crate::text::duration(left));
                        self.send(
                            conn,
                            ServerMsg::Ack { what: "progress".into(), message, task_id: Some(task_id), next: None },
                        );
                    }
                    Err(r) => self.refuse(conn, &r),
                }
            }
            ClientMsg::Leave { worker } => {
                let released = self.scheduler.leave(&worker);
                self.waiters.retain(|w| w.worker != worker);
                let message = if released.is_empty() {
                    format!("{worker} left holding nothing")
                } else {
                    format!("{worker} left; back in the queue: {}", released.join(", "))
                };
                self.send(conn, ServerMsg::Ack { what: "leave".into(), message, task_id: None, next: None });
            }
            ClientMsg::AddTasks { tasks } => match self.add_tasks(&tasks) {
                Ok(ids) => self.send(conn, ServerMsg::TasksAdded { ids }),
                Err(e) => self.send(conn, e),
            },
            ClientMsg::Answer { task_id, text } => match self.scheduler.answer(&task_id, &text) {
                Ok(()) => {
                    // The worker who asked gets it back first, with question and answer.
                    let asker = self.scheduler.task(&task_id).and_then(|t| t.last_holder().map(str::to_owned));
                    let back = asker.filter(|a| {
                        self.scheduler.held_by(a).is_none()
                            && !self.budget_holds(&task_id)
                            && self.scheduler.grant(&task_id, a, now)
                    });
                    let message = match back {
                        Some(asker) => format!("task {task_id} goes back to {asker} with your answer"),
                        None => format!("task {task_id} is ready again with your answer"),
                    };
                    self.send(
                        conn,
                        ServerMsg::Ack { what: "answer".into(), message, task_id: Some(task_id), next: None },
                    );
                }
                Err(r) => self.refuse(conn, &r),
            },
            ClientMsg::Cancel { task_id } => match self.scheduler.cancel(&task_id) {
                Ok(()) => {
                    // Whoever waits for its verdict hears in `settle` (`end_stale_judgements`).
                    self.unjudged.remove(&task_id);
                    let message = format!("task {task_id} cancelled");
                    self.send(
                        conn,
                        ServerMsg::Ack { what: "cancel".into(), message, task_id: Some(task_id), next: None },
                    );
                }
                Err(r) => self.refuse(conn, &r),
            },
            ClientMsg::Retry { task_id } if self.unjudged.contains(&task_id) => {
                self.rejudge(&task_id);
                let message = format!("task {task_id} is judged again");
                self.send(conn, ServerMsg::Ack { what: "retry".into(), message, task_id: Some(task_id), next: None });
            }
            ClientMsg::Retry { task_id } => match self.scheduler.retry(&task_id) {
                Ok(()) => {
                    let message = format!("task {task_id} is back in the queue");
                    self.send(
                        conn,
                        ServerMsg::Ack { what: "retry".into(), message, task_id: Some(task_id), next: None },
                    );
                }
                Err(r) => self.refuse(conn, &r),
            },
            msg @ (ClientMsg::Subscribe { .. }
            | ClientMsg::TasksPage { .. }
            | ClientMsg::ShowTask { .. }
            | ClientMsg::Snapshot {}) => self.view_request(conn, msg, now),
            ClientMsg::LoadWorkflow { path } => {
                let path = self.config.root.join(path);
                self.load_workflow(Some(conn), path);
            }
            // The hub's edge answers these itself (src/hub/tokens.rs): they never come here.
            ClientMsg::TokenAdd { .. } | ClientMsg::TokenList {} | ClientMsg::TokenRevoke { .. } => {}
            ClientMsg::TaskFiles { worker, task_id, attempt } => self.task_files(conn, &worker, &task_id, attempt),
            ClientMsg::FetchFile { worker, task_id, attempt, path, offset } => {
                self.fetch_file(conn, &worker, &task_id, attempt, &path, offset);
            }
            ClientMsg::Upload { worker, task_id, attempt, path, offset, size, sha256: _, data } => {
                self.upload(conn, &worker, &task_id, attempt, uploads::UploadPart { path, offset, size, data });
            }
            ClientMsg::BudgetSet { phase, task, usd, tokens } => {
                self.budget_set(conn, phase, task, crate::wire::Usage { usd, tokens });
            }
            ClientMsg::Budgets {} => {
                let budgets = self.budgets();
                self.send(conn, ServerMsg::Budgets { budgets });
            }
            ClientMsg::Present { worker, agent_pid, kind } => self.present(conn, &worker, kind, agent_pid),
        }
    }

    /// Parse and add tasks; the error is the message to send.
    fn add_tasks(&mut self, raw: &[Value]) -> Result<Vec<TaskId>, ServerMsg> {
        let mut specs = Vec::with_capacity(raw.len());
        for (i, value) in raw.iter().enumerate() {
            // The one reading of a task: `mcc validate` runs it too.
            let spec =
                TaskSpec::from_json(value).map_err(|p| ServerMsg::error_code(p.refusal(i, value), "bad_task"))?;
            specs.push(spec);
        }
        room_for(&self.scheduler, specs.len()).map_err(|e| ServerMsg::error_code(e, "too_many_tasks"))?;
        self.scheduler
            .add_tasks(specs, None, Instant::now())
            .map_err(|r| ServerMsg::error_code(r.to_string(), r.code()))
    }
}

/// A batch split in two steps, each handled and committed in turn: what
/// comes before the first create of many tasks (`create_tasks`,
/// `add_tasks`), with every later message of another connection, stays in
/// `batch`; the creates, what their connections sent after them, and
/// whatever else came after the first are returned. A create is the
/// costliest input there is (each task parsed, added, then written), and a
/// worker's handoff in the same batch need not wait for it: connections are
/// independent, so their inputs may be taken in any order that keeps each
/// connection's own. A batch with no create is left as it is.
fn creates_last(batch: &mut Vec<Input>) -> Vec<Input> {
    let create = |input: &Input| {
        matches!(input, Input::Message { msg: ClientMsg::CreateTasks { .. } | ClientMsg::AddTasks { .. }, .. })
    };
    if !batch.iter().any(create) {
        return Vec::new();
    }
    let mut creators: Vec<ConnId> = Vec::new();
    let mut after = Vec::new();
    for input in std::mem::take(batch) {
        let conn = match &input {
            Input::Message { conn, .. } => {
                if create(&input) && !creators.contains(conn) {
                    creators.push(*conn);
                }
                Some(*conn)
            }
            Input::Relay { conn, .. } | Input::Connected { conn, .. } | Input::Disconnected { conn } => Some(*conn),
            _ => None,
        };
        let later = !creators.is_empty() && conn.is_none_or(|c| creators.contains(&c));
        if later { after.push(input) } else { batch.push(input) }
    }
    after
}

/// A stamp of a workflow's sources: the file and the `.lua` files under its
/// folder (where `require` looks first), by path, size and modification time.
fn sources_stamp(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let stamp = |p: &Path, hasher: &mut std::collections::hash_map::DefaultHasher| {
        let meta = std::fs::metadata(p).ok();
        (p, meta.as_ref().map(std::fs::Metadata::len), meta.and_then(|m| m.modified().ok())).hash(hasher);
    };
    stamp(path, &mut hasher);
    if let Some(dir) = path.parent() {
        let lua = walkdir::WalkDir::new(dir)
            .max_depth(4)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !matches!(e.file_name().to_str(), Some(".mcc" | ".git" | "target" | "node_modules")))
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "lua"));
        for entry in lua.take(2000) {
            stamp(entry.path(), &mut hasher);
        }
    }
    hasher.finish()
}

/// A worker name must be usable on a command line as it is.
fn bad_name(name: &str) -> Option<ServerMsg> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    (!ok).then(|| {
        ServerMsg::error_code(
            format!(
                "worker name `{name}` is not usable: use 1-64 letters, digits, `-`, `_`, `.` or `@`, such as worker-A"
            ),
            "bad_worker_name",
        )
    })
}

#[cfg(test)]
mod tests;
