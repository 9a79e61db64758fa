//! The engine: the one owner of task state. It runs on its own thread,
//! takes [`Input`]s from connections, the report watcher and validation
//! runs over a channel, applies a batch of them to the [`Scheduler`],
//! commits the batch to the [`Store`] in one transaction (group commit), and
//! only then sends the answers.

mod policy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

pub use policy::{DefaultPolicy, Policy, PolicyError};

use crate::command::{self, Outcome};
use crate::hub::protocol::{ClientMsg, Offer, ServerMsg, WorkerStatus};
use crate::scheduler::{self, Judged, Refusal, Scheduler, Settings, TaskId, TaskState};
use crate::store::{Store, StoreError};
use crate::task::{Report, ReportStatus, TaskSpec};

/// One connection's id.
pub type ConnId = u64;

/// What the engine sends to a connection.
#[derive(Debug)]
pub enum Outgoing {
    Msg(ServerMsg),
    /// Send nothing more; close the socket.
    Close,
}

/// Everything the engine reacts to.
pub enum Input {
    Connected {
        conn: ConnId,
        outbox: UnboundedSender<Outgoing>,
    },
    Disconnected {
        conn: ConnId,
    },
    Message {
        conn: ConnId,
        msg: ClientMsg,
    },
    /// A report file that parsed; applied exactly as a completion.
    ReportFile {
        path: String,
        report: Report,
    },
    /// A report file that could not be used; shown in status.
    ReportFileRejected {
        path: String,
        error: String,
    },
    /// A validation command finished.
    Validated {
        task: TaskId,
        attempt: u32,
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
    pub settings: Settings,
    pub loader: Option<Loader>,
    /// Time limit of a task's validation command.
    pub validation_limit: Duration,
}

/// The longest a worker may wait in one command.
pub const MAX_WAIT: Duration = Duration::from_mins(5);
/// How many connections may wait for work at once.
pub const MAX_WAITERS: usize = 4096;
/// How many inputs share one commit at most.
const MAX_BATCH: usize = 1024;

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
    outbox: UnboundedSender<Outgoing>,
    role: Role,
}

/// Who is waiting for a submitted task's verdict.
#[derive(Debug, Clone)]
struct Judging {
    conn: Option<ConnId>,
    worker: String,
    wait: Duration,
    old_protocol: bool,
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
    /// Send an input; false when the engine has stopped.
    pub fn send(&self, input: Input) -> bool {
        self.tx.send(input).is_ok()
    }
}

/// The engine's state; see the module docs.
pub struct Engine {
    config: Config,
    scheduler: Scheduler,
    store: Store,
    policy: Box<dyn Policy>,
    workflow_path: Option<PathBuf>,
    conns: HashMap<ConnId, Conn>,
    coordinator: Option<ConnId>,
    waiters: Vec<Waiter>,
    judging: HashMap<TaskId, Judging>,
    /// Answers held until the batch is committed.
    outgoing: Vec<(ConnId, ServerMsg)>,
    /// Problems shown in status: bad report files, workflow errors.
    problems: Vec<String>,
    /// The workflow's `ctx.log` lines, newest last.
    log: Vec<String>,
    /// A workflow that failed to load, and its file's modification time then:
    /// it is loaded again once the file changes.
    failed_load: Option<(PathBuf, Option<std::time::SystemTime>)>,
    tx: Sender<Input>,
    stopping: Option<String>,
}

impl Engine {
    /// Open the store, restore state and start the engine thread.
    pub fn start(
        config: Config,
    ) -> Result<(EngineHandle, std::thread::JoinHandle<Result<(), StoreError>>), StoreError> {
        let store = Store::open(&config.state_dir)?;
        let (tasks, workers) = store.load()?;
        let scheduler = Scheduler::restore(config.settings.clone(), tasks, workers);
        let workflow_path = store.meta("workflow_path")?.map(PathBuf::from);
        let (tx, rx) = std::sync::mpsc::channel();
        let engine_tx = tx.clone();
        let handle = std::thread::Builder::new()
            .name("mcc-engine".into())
            .spawn(move || {
                // Built here: a workflow's Lua state never leaves this thread.
                let mut engine = Engine {
                    config,
                    scheduler,
                    store,
                    policy: Box::new(DefaultPolicy),
                    workflow_path: None,
                    conns: HashMap::new(),
                    coordinator: None,
                    waiters: Vec::new(),
                    judging: HashMap::new(),
                    outgoing: Vec::new(),
                    problems: Vec::new(),
                    log: Vec::new(),
                    failed_load: None,
                    tx: engine_tx,
                    stopping: None,
                };
                engine.resume(workflow_path);
                engine.run(&rx)
            })
            .expect("spawn the engine thread");
        Ok((EngineHandle { tx }, handle))
    }

    /// After a restart: reload the workflow, judge again what was submitted.
    fn resume(&mut self, workflow_path: Option<PathBuf>) {
        let resubmit: Vec<TaskId> =
            self.scheduler.tasks().filter(|t| t.state == TaskState::Submitted).map(|t| t.spec.id.clone()).collect();
        if let Some(path) = workflow_path {
            self.load_workflow(None, path);
        }
        for id in resubmit {
            let worker = self.scheduler.task(&id).and_then(|t| t.holder.clone()).unwrap_or_default();
            self.judging.insert(id.clone(), Judging { conn: None, worker, wait: Duration::ZERO, old_protocol: false });
            self.start_judging(&id);
        }
    }

    fn run(mut self, rx: &Receiver<Input>) -> Result<(), StoreError> {
        loop {
            let timeout = self.next_wakeup().map(|at| at.saturating_duration_since(Instant::now()));
            let first = match timeout {
                Some(t) => match rx.recv_timeout(t) {
                    Ok(input) => Some(input),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(input) => Some(input),
                    Err(_) => break,
                },
            };
            let mut batch: Vec<Input> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(input) => batch.push(input),
                    Err(_) => break,
                }
            }
            for input in batch {
                self.handle(input);
            }
            self.settle();
            self.commit()?;
            if let Some(message) = self.stopping.take() {
                self.shutdown(&message);
                break;
            }
        }
        Ok(())
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let waits = self.waiters.iter().filter_map(|w| w.deadline);
        waits.chain(self.scheduler.next_deadline()).chain(self.policy.next_wakeup()).min()
    }

    /// Expire leases, let the workflow act, hand out work, time out waits.
    fn settle(&mut self) {
        if let Some((path, seen)) = self.failed_load.clone()
            && modified(&path) != seen
        {
            self.load_workflow(None, path);
        }
        let now = Instant::now();
        self.scheduler.expire(now);
        if let Err(e) = self.policy.step(&mut self.scheduler) {
            self.problem(format!("workflow: {e}"));
        }
        for line in self.policy.take_log() {
            eprintln!("mcc workflow: {line}");
            self.log.push(line);
        }
        if self.log.len() > 100 {
            self.log.drain(..self.log.len() - 100);
        }
        self.dispatch(now);
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let changes = self.scheduler.take_changes();
        let meta = self.policy.state();
        self.store.commit(&self.scheduler, &changes, &meta)?;
        for (conn, msg) in self.outgoing.drain(..) {
            if let Some(c) = self.conns.get(&conn) {
                let _ = c.outbox.send(Outgoing::Msg(msg));
            }
        }
        Ok(())
    }

    fn shutdown(&mut self, message: &str) {
        for conn in self.conns.values() {
            let _ = conn.outbox.send(Outgoing::Msg(ServerMsg::ServerShutdown { message: message.to_owned() }));
            let _ = conn.outbox.send(Outgoing::Close);
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.outgoing.push((conn, msg));
    }

    fn to_coordinator(&mut self, msg: ServerMsg) {
        if let Some(c) = self.coordinator {
            self.send(c, msg);
        }
    }

    fn problem(&mut self, text: String) {
        // A broken decision fails on every dispatch: say it once, not on every batch.
        if self.problems.contains(&text) {
            return;
        }
        eprintln!("mcc hub: {text}");
        self.problems.push(text);
        if self.problems.len() > 50 {
            self.problems.remove(0);
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Connected { conn, outbox } => {
                self.conns.insert(conn, Conn { outbox, role: Role::Anonymous });
            }
            Input::Disconnected { conn } => {
                self.conns.remove(&conn);
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
            Input::ReportFile { path, report } => self.report_file(path, report),
            Input::ReportFileRejected { path, error } => self.problem(format!("report file {path}: {error}")),
            Input::Validated { task, attempt, outcome } => self.validated(&task, attempt, &outcome),
            Input::LoadWorkflow { conn, path } => self.load_workflow(conn, path),
            Input::FilesChanged { paths } => self.policy.files_changed(paths),
            Input::Shutdown { message } => self.stopping = Some(message),
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
                let name = policy.name();
                let state = self.store.meta("workflow_state").unwrap_or_else(|e| {
                    self.problem(format!("cannot read the workflow state: {e}"));
                    None
                });
                policy.restore(state, EngineHandle { tx: self.tx.clone() });
                self.policy = policy;
                // Start its phase now: requests later in this batch already see its tasks.
                if let Err(e) = self.policy.step(&mut self.scheduler) {
                    self.problem(format!("workflow: {e}"));
                }
                if self.workflow_path.as_ref() != Some(&path) {
                    self.workflow_path = Some(path.clone());
                    if let Err(e) = self.store.set_meta("workflow_path", &path.to_string_lossy()) {
                        self.problem(format!("cannot store the workflow path: {e}"));
                    }
                }
                if let Some(c) = conn {
                    let message = format!("workflow {name} loaded from {}", path.display());
                    self.send(c, ServerMsg::Ack { what: "load_workflow".into(), message, task_id: None, next: None });
                }
            }
            Err(e) => {
                self.failed_load = Some((path.clone(), modified(&path)));
                let text =
                    format!("workflow {} did not load: {e}; fix the file and it is loaded again", path.display());
                if let Some(c) = conn {
                    self.send(c, ServerMsg::error_code(text.clone(), "workflow_error"));
                }
                self.problem(text);
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

    fn wait_of(wait_ms: Option<u64>) -> Duration {
        wait_ms.map_or(Duration::ZERO, Duration::from_millis).min(MAX_WAIT)
    }

    fn refuse(&mut self, conn: ConnId, refusal: &Refusal) {
        self.send(conn, ServerMsg::error_code(refusal.to_string(), refusal.code()));
    }

    fn message(&mut self, conn: ConnId, msg: ClientMsg) {
        let now = Instant::now();
        match msg {
            ClientMsg::Register { role, project_id, worker_id } => {
                self.register(conn, role.as_deref(), project_id, worker_id);
            }
            ClientMsg::CreateTasks { tasks } => {
                if self.role(conn) != Role::Coordinator {
                    self.send(conn, ServerMsg::error("Only the coordinator can create tasks: register with {\"type\":\"register\",\"role\":\"coordinator\"} first"));
                    return;
                }
                let tasks = tasks.unwrap_or_default();
                if tasks.is_empty() {
                    self.send(conn, ServerMsg::error("create_tasks needs a non-empty `tasks` array"));
                    return;
                }
                match self.add_tasks(&tasks) {
                    Ok(ids) => {
                        // Idle workers get tasks at once; `queued` is what is left waiting.
                        self.dispatch(now);
                        let queued = ids
                            .iter()
                            .filter(|id| {
                                self.scheduler
                                    .task(id)
                                    .is_some_and(|t| matches!(t.state, TaskState::Ready | TaskState::Waiting))
                            })
                            .count();
                        self.send(conn, ServerMsg::TasksCreated { count: ids.len(), queued });
                    }
                    Err(e) => self.send(conn, e),
                }
            }
            ClientMsg::RequestTask {} => {
                let Role::Worker(worker) = self.role(conn) else {
                    self.send(conn, ServerMsg::error("Only workers can request tasks: register with {\"type\":\"register\",\"role\":\"worker\",\"workerId\":\"...\"} first"));
                    return;
                };
                self.offer_old(conn, &worker, now);
            }
            ClientMsg::TaskComplete { task_id, report } => {
                let Role::Worker(worker) = self.role(conn) else {
                    self.send(
                        conn,
                        ServerMsg::error(
                            "Only workers can complete tasks: register as a worker first, or use `mcc worker done`",
                        ),
                    );
                    return;
                };
                self.old_complete(conn, &worker, task_id, report, now);
            }
            ClientMsg::Status {} => {
                let status = self.old_status();
                self.send(conn, status);
            }
            ClientMsg::Next { worker, wait_ms } => {
                if let Some(err) = bad_name(&worker) {
                    self.send(conn, err);
                    return;
                }
                self.offer(conn, &worker, Self::wait_of(wait_ms), Reply::Offer, now);
            }
            ClientMsg::Done { worker, task_id, attempt, deliverables, score, notes, wait_ms } => {
                let mut report = Report::completed(&task_id, &worker, deliverables);
                report.attempt = attempt;
                report.context_efficiency_score = score;
                report.notes = notes;
                if let Some(bad) = report.deliverables.iter().find(|d| !self.config.root.join(d).exists()) {
                    let text = format!(
                        "deliverable `{bad}` does not exist under {}; write it first, or pass the path you wrote with --deliverable",
                        self.config.root.display()
                    );
                    self.send(conn, ServerMsg::error_code(text, "missing_deliverable"));
                    return;
                }
                let wire = serde_json::to_value(&report).expect("a report always serializes");
                let judging = Judging {
                    conn: Some(conn),
                    worker: worker.clone(),
                    wait: Self::wait_of(wait_ms),
                    old_protocol: false,
                };
                match self.submit(&worker, &task_id, report, judging, now) {
                    Ok(()) => self.to_coordinator(ServerMsg::TaskComplete { task_id, worker_id: worker, report: wire }),
                    Err(r) => self.refuse(conn, &r),
                }
            }
            ClientMsg::Block { worker, task_id, attempt, question, wait_ms } => {
                match self.scheduler.block(&worker, &task_id, attempt, &question, now) {
                    Ok(()) => {
                        let message = format!("task {task_id} waits for the engineer: `mcc answer {task_id} TEXT`");
                        let reply = Reply::Ack { what: "block", message, task: task_id };
                        self.offer(conn, &worker, Self::wait_of(wait_ms), reply, now);
                    }
                    Err(r) => self.refuse(conn, &r),
                }
            }
            ClientMsg::Fail { worker, task_id, attempt, reason, wait_ms } => {
                match self.scheduler.fail(&worker, &task_id, attempt, &reason, now) {
                    Ok(state) => {
                        let message = if state == TaskState::Failed {
                            format!("task {task_id} failed for good: its attempts are used up")
                        } else {
                            format!("task {task_id} went back to the queue for another attempt")
                        };
                        let reply = Reply::Ack { what: "fail", message, task: task_id };
                        self.offer(conn, &worker, Self::wait_of(wait_ms), reply, now);
                    }
                    Err(r) => self.refuse(conn, &r),
                }
            }
            ClientMsg::Progress { worker, task_id, attempt, note } => {
                match self.scheduler.progress(&worker, &task_id, attempt, &note, now) {
                    Ok(()) => {
                        let left = self.scheduler.task(&task_id).and_then(|t| t.lease_left(now)).unwrap_or_default();
                        let message = format!("noted; lease of {task_id} extended to {}", human(left));
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
                    let message = format!("task {task_id} is ready again with your answer");
                    self.send(
                        conn,
                        ServerMsg::Ack { what: "answer".into(), message, task_id: Some(task_id), next: None },
                    );
                }
                Err(r) => self.refuse(conn, &r),
            },
            ClientMsg::Cancel { task_id } => match self.scheduler.cancel(&task_id) {
                Ok(()) => {
                    let message = format!("task {task_id} cancelled");
                    self.send(
                        conn,
                        ServerMsg::Ack { what: "cancel".into(), message, task_id: Some(task_id), next: None },
                    );
                }
                Err(r) => self.refuse(conn, &r),
            },
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
            ClientMsg::Snapshot {} => {
                let snapshot = self.snapshot(now);
                self.send(conn, ServerMsg::Snapshot { snapshot });
            }
            ClientMsg::ShowTask { task_id } => match self.scheduler.task(&task_id) {
                Some(task) => {
                    let task = task_json(task, now);
                    self.send(conn, ServerMsg::TaskInfo { task });
                }
                None => self.refuse(conn, &Refusal::UnknownTask(task_id)),
            },
            ClientMsg::LoadWorkflow { path } => {
                let path = self.config.root.join(path);
                self.load_workflow(Some(conn), path);
            }
        }
    }

    fn register(&mut self, conn: ConnId, role: Option<&str>, project_id: Option<String>, worker_id: Option<String>) {
        match role {
            Some("coordinator") => {
                self.coordinator = Some(conn);
                self.set_role(conn, Role::Coordinator);
                let project_id = Some(project_id.unwrap_or_else(|| "default".to_owned()));
                self.send(conn, ServerMsg::Registered { role: "coordinator".into(), project_id, worker_id: None });
            }
            Some("worker") => {
                let Some(worker) = worker_id.filter(|w| !w.trim().is_empty()) else {
                    self.send(conn, ServerMsg::error("A workerId is required to register as a worker"));
                    return;
                };
                if let Some(err) = bad_name(&worker) {
                    self.send(conn, err);
                    return;
                }
                self.set_role(conn, Role::Worker(worker.clone()));
                self.send(
                    conn,
                    ServerMsg::Registered { role: "worker".into(), project_id: None, worker_id: Some(worker.clone()) },
                );
                self.to_coordinator(ServerMsg::WorkerRegistered { worker_id: worker.clone() });
                self.offer_old(conn, &worker, Instant::now());
            }
            other => {
                let got = other.map_or_else(|| "no role".to_owned(), |r| format!("role `{r}`"));
                self.send(
                    conn,
                    ServerMsg::error(format!("Invalid {got}: valid roles are \"coordinator\" and \"worker\"")),
                );
            }
        }
    }

    /// Parse and add tasks; the error is the message to send.
    fn add_tasks(&mut self, raw: &[Value]) -> Result<Vec<TaskId>, ServerMsg> {
        let mut specs = Vec::with_capacity(raw.len());
        for (i, value) in raw.iter().enumerate() {
            let spec: TaskSpec = serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                let id = value.get("id").and_then(Value::as_str).map_or_else(String::new, |id| format!(" (`{id}`)"));
                ServerMsg::error_code(format!("tasks[{i}]{id}: field `{path}`: {}", e.into_inner()), "bad_task")
            })?;
            if spec.id.trim().is_empty() {
                return Err(ServerMsg::error_code(
                    format!("tasks[{i}]: `id` is empty; give every task an id"),
                    "bad_task",
                ));
            }
            if let Some(lease) = &spec.lease
                && humantime::parse_duration(lease).is_err()
            {
                return Err(ServerMsg::error_code(
                    format!("tasks[{i}] (`{}`): lease `{lease}` is not a duration such as \"30m\" or \"90s\"", spec.id),
                    "bad_task",
                ));
            }
            specs.push(spec);
        }
        self.scheduler
            .add_tasks(specs, None, Instant::now())
            .map_err(|r| ServerMsg::error_code(r.to_string(), r.code()))
    }

    /// Offer work to an mcc worker; wait when there is none and `wait` allows.
    fn offer(&mut self, conn: ConnId, worker: &str, wait: Duration, reply: Reply, now: Instant) {
        // A newer command of the same worker supersedes an older wait: answer it now.
        let (superseded, kept): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.worker == worker && w.conn != conn && w.deadline.is_some());
        self.waiters = kept;
        for old in superseded {
            self.answer(old.conn, &old.reply, nothing_yet(worker));
        }
        match self.try_offer(worker, now) {
            Some(offer) => self.answer(conn, &reply, offer),
            None if wait.is_zero() => {
                let offer = nothing_yet(worker);
                self.answer(conn, &reply, offer);
            }
            None => {
                if self.waiters.len() >= MAX_WAITERS {
                    let text =
                        format!("the hub already has {MAX_WAITERS} waiting clients; run the command again in a moment");
                    self.send(conn, ServerMsg::error_code(text, "busy"));
                    return;
                }
                self.waiters.push(Waiter { conn, worker: worker.to_owned(), deadline: Some(now + wait), reply });
            }
        }
    }

    /// An old-protocol worker asks: `task_assigned`, or `no_tasks` and it waits connected.
    fn offer_old(&mut self, conn: ConnId, worker: &str, now: Instant) {
        self.waiters.retain(|w| w.conn != conn);
        if let Some(offer @ Offer::Task { .. }) = self.try_offer(worker, now) {
            self.answer(conn, &Reply::Push, offer);
        } else {
            let message =
                if self.all_done() { "All work is done" } else { "No tasks available right now; you will be sent one" };
            self.send(conn, ServerMsg::NoTasks { message: message.to_owned() });
            self.waiters.push(Waiter { conn, worker: worker.to_owned(), deadline: None, reply: Reply::Push });
        }
    }

    fn all_done(&self) -> bool {
        self.policy.finished(&self.scheduler)
    }

    /// What the worker gets right now, or `None` if it should wait.
    fn try_offer(&mut self, worker: &str, now: Instant) -> Option<Offer> {
        self.scheduler.touch(worker, now);
        if let Some(held) = self.scheduler.held_by(worker) {
            let id = held.spec.id.clone();
            return Some(self.task_offer(worker, &id, true));
        }
        if self.scheduler.worker(worker).is_some_and(scheduler::Worker::must_hand_over) {
            return Some(Offer::HandOver {
                worker: worker.to_owned(),
                message: format!(
                    "{worker} reported a context score of 2 or less: take no more work. Start a fresh chat and run `mcc worker next --as NEW-NAME` there"
                ),
            });
        }
        let candidates = self.scheduler.candidates(64);
        let choice = if candidates.is_empty() {
            Ok(None)
        } else {
            let me = self.scheduler.worker(worker).expect("touched above");
            self.policy.assign(me, &candidates, &self.scheduler)
        };
        match choice {
            Ok(Some(id)) if self.scheduler.grant(&id, worker, now) => {
                self.to_coordinator(ServerMsg::TaskAssigned {
                    task: None,
                    task_id: Some(id.clone()),
                    worker_id: Some(worker.to_owned()),
                });
                Some(self.task_offer(worker, &id, false))
            }
            Ok(Some(id)) => {
                self.problem(format!(
                    "workflow assign chose `{id}`, which is not among the ready tasks; {worker} got nothing"
                ));
                None
            }
            Ok(None) if self.all_done() => {
                Some(Offer::AllDone { worker: worker.to_owned(), message: "all work is done, you can stop".to_owned() })
            }
            Ok(None) => None,
            Err(e) => {
                self.problem(format!("workflow assign: {e}"));
                None
            }
        }
    }

    fn task_offer(&self, worker: &str, id: &str, held: bool) -> Offer {
        let task = self.scheduler.task(id).expect("offered task exists");
        Offer::Task {
            worker: worker.to_owned(),
            task: task.to_wire(),
            attempt: task.attempt,
            lease_ms: task.lease_ms,
            held,
            reasons: task.reasons.clone(),
            answer: task.answer.clone(),
            phase: task.phase.clone(),
        }
    }

    fn answer(&mut self, conn: ConnId, reply: &Reply, offer: Offer) {
        let msg = match reply.clone() {
            Reply::Offer => ServerMsg::Offer { offer },
            Reply::Verdict { task, attempt, accepted, failed, reasons } => ServerMsg::Verdict {
                worker: offer_worker(&offer).to_owned(),
                task_id: task,
                attempt,
                accepted,
                failed,
                reasons,
                next: offer,
            },
            Reply::Ack { what, message, task } => {
                ServerMsg::Ack { what: what.into(), message, task_id: Some(task), next: Some(offer) }
            }
            Reply::Push => match offer {
                Offer::Task { task, .. } => {
                    ServerMsg::TaskAssigned { task: Some(task), task_id: None, worker_id: None }
                }
                Offer::AllDone { message, .. }
                | Offer::HandOver { message, .. }
                | Offer::NothingYet { message, .. } => ServerMsg::NoTasks { message },
            },
        };
        self.send(conn, msg);
    }

    /// Hand out work to waiting workers; time out the waits that are over.
    fn dispatch(&mut self, now: Instant) {
        let all_done = self.all_done();
        let mut i = 0;
        while i < self.waiters.len() {
            let (conn, worker, deadline, reply) = {
                let w = &self.waiters[i];
                (w.conn, w.worker.clone(), w.deadline, w.reply.clone())
            };
            let offer = if self.scheduler.is_empty() && !all_done { None } else { self.try_offer(&worker, now) };
            match offer {
                Some(offer) if matches!(reply, Reply::Push) && !matches!(offer, Offer::Task { .. }) => {
                    // Old-protocol workers only hear about real tasks.
                    i += 1;
                }
                Some(offer) => {
                    self.waiters.remove(i);
                    self.answer(conn, &reply, offer);
                }
                None if deadline.is_some_and(|d| d <= now) => {
                    self.waiters.remove(i);
                    self.answer(conn, &reply, nothing_yet(&worker));
                }
                None => i += 1,
            }
        }
    }

    /// Submit a completed report; judging may finish now or after validation.
    fn submit(
        &mut self,
        worker: &str,
        id: &str,
        report: Report,
        judging: Judging,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.scheduler.submit(worker, id, report, now)?;
        self.waiters.retain(|w| w.worker != worker || matches!(w.reply, Reply::Push));
        self.judging.insert(id.to_owned(), judging);
        self.start_judging(id);
        Ok(())
    }

    fn start_judging(&mut self, id: &str) {
        let task = self.scheduler.task(id).expect("submitted task exists");
        match task.spec.acceptance.validation.clone() {
            Some(script) => {
                let (tx, root, limit, attempt) =
                    (self.tx.clone(), self.config.root.clone(), self.config.validation_limit, task.attempt);
                let id = id.to_owned();
                std::thread::spawn(move || {
                    let outcome = command::run_shell(&script, &root, limit).unwrap_or_else(|e| Outcome {
                        code: None,
                        stdout: String::new(),
                        stderr: format!("could not start `sh`: {e}"),
                        timed_out: false,
                    });
                    let _ = tx.send(Input::Validated { task: id, attempt, outcome });
                });
            }
            None => self.decide(id, None),
        }
    }

    fn validated(&mut self, id: &str, attempt: u32, outcome: &Outcome) {
        let current = self.scheduler.task(id).is_some_and(|t| t.state == TaskState::Submitted && t.attempt == attempt);
        if current {
            self.decide(id, Some(outcome));
        }
    }

    /// Ask the policy for a verdict and apply it; answer whoever waits.
    fn decide(&mut self, id: &str, validation: Option<&Outcome>) {
        let now = Instant::now();
        let task = self.scheduler.task(id).expect("judged task exists");
        let report = task.report.clone().expect("a submitted task has a report");
        let attempt = task.attempt;
        let verdict = match self.policy.accept(task, &report, validation, &self.scheduler) {
            Ok(v) => v,
            Err(e) => {
                // A broken `accept` rejects nothing: the task waits for the engineer.
                self.problem(format!(
                    "workflow accept for task {id}: {e}; the task waits (fix the workflow, or `mcc tasks retry {id}`)"
                ));
                if let Some(j) = self.judging.remove(id)
                    && let Some(conn) = j.conn
                {
                    let message =
                        format!("task {id} was received but the workflow could not judge it; the engineer was told");
                    let reply = Reply::Ack { what: "done", message, task: id.to_owned() };
                    self.offer(conn, &j.worker, j.wait, reply, now);
                }
                return;
            }
        };
        let judged = self.scheduler.judge(id, verdict, now).expect("the task is submitted");
        let (accepted, failed, reasons) = match judged {
            Judged::Accepted => (true, false, Vec::new()),
            Judged::Rejected { reasons } => (false, false, reasons),
            Judged::Failed { reasons } => (false, true, reasons),
        };
        let Some(j) = self.judging.remove(id) else { return };
        let Some(conn) = j.conn else { return };
        if j.old_protocol {
            self.offer_old(conn, &j.worker, now);
        } else {
            let reply = Reply::Verdict { task: id.to_owned(), attempt, accepted, failed, reasons };
            self.offer(conn, &j.worker, j.wait, reply, now);
        }
    }

    fn old_complete(&mut self, conn: ConnId, worker: &str, task_id: String, raw: Option<Value>, now: Instant) {
        let report = match raw.clone() {
            None => Report::completed(&task_id, worker, Vec::new()),
            Some(value) => match serde_path_to_error::deserialize::<_, Report>(value) {
                Ok(r) => r,
                Err(e) => {
                    let path = e.path().to_string();
                    self.send(
                        conn,
                        ServerMsg::error_code(
                            format!("Bad `task_complete` report: field `{path}`: {}", e.into_inner()),
                            "bad_report",
                        ),
                    );
                    return;
                }
            },
        };
        let wire_report = raw.unwrap_or_else(|| serde_json::to_value(&report).expect("serializes"));
        let judging = Judging { conn: Some(conn), worker: worker.to_owned(), wait: Duration::ZERO, old_protocol: true };
        if let Err(r) = self.scheduler.check_holder(worker, &task_id, report.attempt) {
            self.refuse(conn, &r);
            return;
        }
        // The ack comes before the next task, as the old server sent them.
        self.send(conn, ServerMsg::TaskCompleteAck { task_id: task_id.clone() });
        self.to_coordinator(ServerMsg::TaskComplete {
            task_id: task_id.clone(),
            worker_id: worker.to_owned(),
            report: wire_report,
        });
        self.apply_report(worker, &task_id, report, judging, now).expect("the holder was checked in this batch");
    }

    /// A report of any status, from the socket or a file.
    fn apply_report(
        &mut self,
        worker: &str,
        task_id: &str,
        report: Report,
        judging: Judging,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(score) = report.context_efficiency_score {
            self.scheduler.check_holder(worker, task_id, report.attempt)?;
            self.scheduler.set_score(worker, score, now);
        }
        match report.status {
            ReportStatus::Completed => self.submit(worker, task_id, report, judging, now),
            ReportStatus::Failed => {
                let reason = report.notes.clone().unwrap_or_else(|| "the worker reported failure".to_owned());
                self.scheduler.fail(worker, task_id, report.attempt, &reason, now)?;
                if let (true, Some(conn)) = (judging.old_protocol, judging.conn) {
                    self.offer_old(conn, worker, now);
                }
                Ok(())
            }
            ReportStatus::Blocked => {
                let question = report
                    .requested_guidance
                    .clone()
                    .or_else(|| report.blocker.clone())
                    .unwrap_or_else(|| "the worker is blocked".to_owned());
                self.scheduler.block(worker, task_id, report.attempt, &question, now)?;
                if let (true, Some(conn)) = (judging.old_protocol, judging.conn) {
                    self.offer_old(conn, worker, now);
                }
                Ok(())
            }
        }
    }

    fn report_file(&mut self, path: String, report: Report) {
        let now = Instant::now();
        let task_id = report.task_id.clone();
        if self.scheduler.task(&task_id).is_some_and(|t| t.report.as_ref() == Some(&report)) {
            // Read again after a restart: it was applied already.
            return;
        }
        let holder = self.scheduler.task(&task_id).and_then(|t| t.holder.clone());
        let Some(worker) = report.worker_id.clone().or(holder) else {
            let why = if self.scheduler.task(&task_id).is_some() {
                "nobody holds the task and the report names no workerId"
            } else {
                "unknown task"
            };
            self.problem(format!("report file {path} for task {task_id}: {why}"));
            return;
        };
        let wire = serde_json::to_value(&report).expect("serializes");
        let judging = Judging { conn: None, worker: worker.clone(), wait: Duration::ZERO, old_protocol: false };
        match self.apply_report(&worker, &task_id, report, judging, now) {
            Ok(()) => self.to_coordinator(ServerMsg::ReportDetected {
                task_id,
                worker_id: worker,
                report_path: path,
                report: wire,
            }),
            Err(r) => self.problem(format!("report file {path} refused: {r}")),
        }
    }

    fn old_status(&self) -> ServerMsg {
        let mut workers: Vec<WorkerStatus> = Vec::new();
        for conn in self.conns.values() {
            if let Role::Worker(name) = &conn.role {
                if workers.iter().any(|w| &w.worker_id == name) {
                    continue;
                }
                let current = self.scheduler.held_by(name).map(|t| t.spec.id.clone());
                workers.push(WorkerStatus { worker_id: name.clone(), busy: current.is_some(), current_task: current });
            }
        }
        for task in self.scheduler.tasks().filter(|t| t.state.in_flight()) {
            let Some(holder) = &task.holder else { continue };
            if !workers.iter().any(|w| &w.worker_id == holder) {
                workers.push(WorkerStatus {
                    worker_id: holder.clone(),
                    busy: true,
                    current_task: Some(task.spec.id.clone()),
                });
            }
        }
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        ServerMsg::StatusResponse {
            coordinator: if self.coordinator.is_some() { "connected" } else { "disconnected" }.to_owned(),
            workers,
            queue_size: self.scheduler.count(TaskState::Ready) + self.scheduler.count(TaskState::Waiting),
            active_tasks: self.scheduler.count(TaskState::Assigned) + self.scheduler.count(TaskState::Submitted),
        }
    }

    /// Everything `mcc status` shows.
    fn snapshot(&self, now: Instant) -> Value {
        let counts: serde_json::Map<String, Value> =
            TaskState::ALL.iter().map(|s| (s.name().to_owned(), Value::from(self.scheduler.count(*s)))).collect();
        let connected: Vec<&str> = self
            .conns
            .values()
            .filter_map(|c| if let Role::Worker(n) = &c.role { Some(n.as_str()) } else { None })
            .collect();
        let waiting: Vec<&str> = self.waiters.iter().map(|w| w.worker.as_str()).collect();
        let workers: Vec<Value> = self
            .scheduler
            .workers()
            .map(|w| {
                let holding =
                    self.scheduler.tasks().find(|t| t.state.in_flight() && t.holder.as_deref() == Some(&w.name));
                json!({
                    "name": w.name,
                    "holding": holding.map(|t| t.spec.id.clone()),
                    "leaseLeftMs": holding.and_then(|t| t.lease_left(now)).map(|d| d.as_millis() as u64),
                    "score": w.score,
                    "accepted": w.accepted.len(),
                    "lastSeenMsAgo": w.last_seen.map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    "connected": connected.contains(&w.name.as_str()),
                    "waiting": waiting.contains(&w.name.as_str()),
                    "handOver": w.must_hand_over(),
                })
            })
            .collect();
        let tasks: Vec<Value> = self.scheduler.tasks_in_order().into_iter().map(|t| task_summary(t, now)).collect();
        let stuck: Vec<Value> =
            self.scheduler.stuck().into_iter().map(|(t, d)| json!({"task": t, "dependency": d})).collect();
        json!({
            "root": self.config.root.display().to_string(),
            "workflow": self.workflow_path.as_ref().map(|p| p.display().to_string()),
            "policy": self.policy.name(),
            "finished": self.all_done(),
            "coordinator": self.coordinator.is_some(),
            "counts": counts,
            "workers": workers,
            "tasks": tasks,
            "stuck": stuck,
            "problems": self.problems,
            "log": self.log,
        })
    }
}

fn offer_worker(offer: &Offer) -> &str {
    match offer {
        Offer::Task { worker, .. }
        | Offer::NothingYet { worker, .. }
        | Offer::AllDone { worker, .. }
        | Offer::HandOver { worker, .. } => worker,
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn nothing_yet(worker: &str) -> Offer {
    Offer::NothingYet {
        worker: worker.to_owned(),
        message: format!("nothing yet: run `mcc worker next --as {worker}` again"),
    }
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

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 120 { format!("{}m", secs / 60) } else { format!("{secs}s") }
}

fn task_summary(t: &scheduler::Task, now: Instant) -> Value {
    json!({
        "id": t.spec.id,
        "description": t.spec.description,
        "state": t.state.name(),
        "holder": t.holder,
        "attempt": t.attempt,
        "phase": t.phase,
        "leaseLeftMs": t.lease_left(now).map(|d| d.as_millis() as u64),
        "dependencies": t.spec.dependencies,
        "reasons": t.reasons,
        "question": t.question,
    })
}

fn task_json(t: &scheduler::Task, now: Instant) -> Value {
    let mut v = task_summary(t, now);
    let map = v.as_object_mut().expect("object");
    map.insert("task".into(), t.to_wire());
    map.insert("answer".into(), json!(t.answer));
    map.insert("report".into(), serde_json::to_value(&t.report).expect("serializes"));
    map.insert("rejections".into(), json!(t.rejections));
    map.insert("createdAt".into(), json!(t.created_at));
    map.insert("completedAt".into(), json!(t.completed_at));
    v
}
