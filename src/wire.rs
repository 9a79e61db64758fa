//! Every wire message, as serde enums tagged by `type`: the old protocol's
//! messages unchanged, and mcc's own beside them (docs/protocol.md). The
//! views of the hub's state they carry are in [`views`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod views;

pub use views::{Delta, Page, Presence, Snapshot, Stuck, Summary, TaskInfo, TaskSummary, UnmetNeed, WorkerView};

/// The largest frame a hub reads unless started with `--max-frame-bytes`;
/// the client sizes what it sends by it too.
pub const MAX_FRAME: usize = 1 << 20;

/// A message a client sends.
///
/// On the wire it is `{"type": "next", ...fields}`; in Rust it is derived as
/// an externally tagged enum, so that a field that fails to parse is named by
/// its path ([`parse`] and [`ClientMsg::to_json`] convert).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ClientMsg {
    // --- the old protocol ---
    // Fields the original server checks itself are loose here, so that its
    // checks (and texts) come in its order: the role first, then the fields.
    Register {
        role: Option<Value>,
        project_id: Option<String>,
        worker_id: Option<String>,
    },
    CreateTasks {
        tasks: Option<Value>,
    },
    RequestTask {},
    TaskComplete {
        task_id: Option<Value>,
        report: Option<Value>,
    },
    Status {},
    // --- mcc's own: a named worker on a short connection ---
    Next {
        worker: String,
        wait_ms: Option<u64>,
        /// What the worker can do (`--can rust,docs`), matched against tasks'
        /// `needs`; the hub keeps the last it was told.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        can: Vec<String>,
        /// The model the worker runs (`--model opus`), for the workflow's `assign`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    Done {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
        #[serde(default)]
        deliverables: Vec<String>,
        score: Option<u8>,
        notes: Option<String>,
        wait_ms: Option<u64>,
        /// A remote worker's declared write files, uploaded before with
        /// `upload`: the hub writes them into its checkout after the fence
        /// check, all or none (docs/remote.md, "What travels").
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<FileDigest>,
        /// Files the worker changed during this attempt that its task does not declare as writes (the client's
        /// snapshot at `next` compared at `done`), relative to the project root with `/`; older clients send none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<String>,
        /// True when the attempt ran in a folder of its own (a worktree), so every change in `changed` is this worker's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        isolated: bool,
        /// What this attempt cost, as the worker reports it (absent: unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    Block {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
        question: String,
        wait_ms: Option<u64>,
        /// What this attempt cost, as the worker reports it (absent: unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    Fail {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
        reason: String,
        wait_ms: Option<u64>,
        /// What this attempt cost, as the worker reports it (absent: unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    Progress {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
        note: String,
    },
    Leave {
        worker: String,
    },
    // --- mcc's own: the engineer and scripts ---
    AddTasks {
        tasks: Vec<Value>,
    },
    Answer {
        task_id: String,
        text: String,
    },
    Cancel {
        task_id: String,
    },
    Retry {
        task_id: String,
    },
    Snapshot {},
    ShowTask {
        task_id: String,
    },
    /// Load a workflow into the running hub (`mcc run` attaching).
    LoadWorkflow {
        path: String,
    },
    // --- mcc's own: progress pushed, not polled (docs/protocol.md, "Subscription") ---
    /// Answered by one `summary`, then a `delta` after every committed batch
    /// that changed something, until the connection closes. `view` says what
    /// the subscriber draws (absent: [`SubscriptionView::Full`], as before
    /// the field existed).
    Subscribe {
        #[serde(default)]
        view: SubscriptionView,
    },
    /// One page of tasks in creation order: of one state if `state` is set,
    /// at most `limit` (default 50, at most 1000), those after task `after`.
    TasksPage {
        state: Option<String>,
        limit: Option<usize>,
        after: Option<String>,
    },
    // --- mcc's own: scoped tokens, answered at the hub's edge (docs/security.md, "Token scopes") ---
    /// Make a token of `scope` (`worker` names the one worker a worker token
    /// acts as); it expires `expires_ms` from now when set.
    TokenAdd {
        scope: TokenScope,
        worker: Option<String>,
        expires_ms: Option<u64>,
    },
    /// Every token, never its secret.
    TokenList {},
    /// Revoke a token by id: refused from then on, its open connections cut.
    TokenRevoke {
        id: String,
    },
    // --- mcc's own: a remote worker's files (docs/remote.md, "What travels") ---
    /// The path and SHA-256 of each declared file of a granted task, as the
    /// hub's checkout holds it; answered by `task_files`.
    TaskFiles {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
    },
    /// Part of one declared file of a granted task from `offset`; answered by `file_part`.
    FetchFile {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
        path: String,
        #[serde(default)]
        offset: u64,
    },
    /// Part of one declared write file, staged under `.mcc/uploads/` until
    /// the `done` that names it; answered by an `ack` of `upload`.
    Upload {
        worker: String,
        task_id: String,
        attempt: Option<u32>,
        path: String,
        /// Where this part starts: 0 begins the file anew.
        offset: u64,
        /// The whole file's size and SHA-256 (hex).
        size: u64,
        sha256: String,
        /// This part, in standard base64.
        data: String,
    },
    // --- mcc's own: budgets (docs/workflows.md, "Budgets") ---
    /// Raise (or lower) a budget while the run goes on: the run's when
    /// neither `phase` nor `task` is set. A limit left out stays as it is.
    /// Answered by `budgets`.
    BudgetSet {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usd: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tokens: Option<u64>,
    },
    /// What was spent and every budget; answered by `budgets`.
    Budgets {},
    // --- mcc's own: a worker's chat is alive (docs/protocol.md, "Presence") ---
    /// Answered by an `ack` of `present`; from then on the connection stays
    /// open as long as the worker's chat lives, and its end is the chat's end.
    Present {
        worker: String,
        /// The agent's process the sender watches, if it is a watcher.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_pid: Option<u32>,
        kind: PresenceKind,
    },
}

/// What holds a presence connection (`present`'s `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    /// `mcc mcp`, which lives as long as its chat.
    Mcp,
    /// The watcher `mcc worker next` starts beside a shell chat's agent process.
    Watcher,
}

/// One file as it is somewhere: its path relative to the project root, its
/// size and the SHA-256 of its bytes (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDigest {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What one attempt cost, as its worker reports it: dollars, tokens, or
/// both; a part it does not know is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

impl Usage {
    /// Nothing known: no part is set.
    pub fn is_empty(&self) -> bool {
        self.usd.is_none() && self.tokens.is_none()
    }

    /// `25.00 USD`, `120000 tokens`, or both joined by "and"; "nothing reported" for neither.
    pub fn amount(&self) -> String {
        let mut parts = Vec::new();
        if let Some(usd) = self.usd {
            parts.push(format!("{usd:.2} USD"));
        }
        if let Some(tokens) = self.tokens {
            parts.push(format!("{tokens} tokens"));
        }
        if parts.is_empty() { "nothing reported".to_owned() } else { parts.join(" and ") }
    }

    /// `self` and `other` together; a part known in neither stays unknown.
    #[must_use]
    pub fn plus(self, other: Usage) -> Usage {
        let add = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        let tokens = match (self.tokens, other.tokens) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        Usage { usd: add(self.usd, other.usd), tokens }
    }
}

impl ClientMsg {
    /// The frame a client sends.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a client message always serializes");
        let Value::Object(outer) = value else { unreachable!("variants with fields serialize as objects") };
        let (kind, fields) = outer.into_iter().next().expect("one variant");
        let mut frame = serde_json::Map::new();
        frame.insert("type".into(), Value::String(kind));
        if let Value::Object(fields) = fields {
            frame.extend(fields.into_iter().filter(|(_, v)| !v.is_null()));
        }
        Value::Object(frame).to_string()
    }

    /// Every `type` a client may send, for the "unknown type" error.
    pub const TYPES: &'static [&'static str] = &[
        "register",
        "create_tasks",
        "request_task",
        "task_complete",
        "status",
        "next",
        "done",
        "block",
        "fail",
        "progress",
        "leave",
        "add_tasks",
        "answer",
        "cancel",
        "retry",
        "snapshot",
        "show_task",
        "load_workflow",
        "subscribe",
        "tasks_page",
        "token_add",
        "token_list",
        "token_revoke",
        "task_files",
        "fetch_file",
        "upload",
        "budget_set",
        "budgets",
        "present",
    ];
}

/// What a subscriber follows, `subscribe`'s `view`: a progress line needs
/// no task that merely moves, and building what nobody reads costs the
/// engine per task (docs/protocol.md, "Subscription").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionView {
    /// Every changed task and every event (`mcc status --watch`, the live page).
    #[default]
    Full,
    /// What `mcc run` draws: counts, phases, workers, questions, problems,
    /// log, stuck. Deltas carry only the tasks that became or stopped being
    /// a question, and no events; the summary no tasks in flight.
    Progress,
}

/// What a token made by `mcc token add` may do (docs/security.md, "Token scopes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// What the project's `.mcc/token` may do.
    Engineer,
    /// Only the worker verbs, only as one worker name.
    Worker,
    /// Only reading: status, task lists, subscriptions.
    Viewer,
}

impl TokenScope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Engineer => "engineer",
            Self::Worker => "worker",
            Self::Viewer => "viewer",
        }
    }
}

/// A token as the hub lists it: never its secret. Times are ms since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub scope: TokenScope,
    /// The worker name a worker token acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub created_ms: i64,
    /// When a connection last presented it (kept to the minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

/// One worker in the old `status_response`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub worker_id: String,
    pub busy: bool,
    pub current_task: Option<String>,
}

/// What a worker asking for work is told (mcc's `next`, and after `done`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Offer {
    /// A task to work on: new, held already, or back after a rejection.
    Task {
        worker: String,
        task: Value,
        attempt: u32,
        lease_ms: u64,
        /// True when the worker already held it.
        held: bool,
        /// True when this worker held an earlier attempt of it (after a
        /// rejection or an answer), never for a worker new to it.
        #[serde(default)]
        returning: bool,
        /// Grants of this task that ended without acceptance, and how many
        /// may: `attempt` is the fencing token and also counts grants that
        /// cost nothing (after `leave`, `block`).
        #[serde(default)]
        attempts_used: u32,
        #[serde(default)]
        max_attempts: u32,
        /// The worker's question while it was blocked, shown with the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question: Option<String>,
        /// Why the previous result was rejected, if it was.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reasons: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<String>,
        /// True when the workflow says every worker works in a git worktree of its own
        /// (`worktree = true`): a client not in worktree mode sets one up, as `--worktree` does.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        worktree: bool,
    },
    /// Nothing ready within the wait; run `next` again.
    NothingYet {
        worker: String,
        message: String,
        /// What the worker waits for; hubs before it sent none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Waiting>,
    },
    /// The work is finished; the worker can stop.
    AllDone { worker: String, message: String },
    /// The worker's context is spent; a fresh chat should take over.
    HandOver { worker: String, message: String },
}

/// Why a worker was offered nothing: what it waits for, from the hub's indexes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub kind: WaitingFor,
    /// One line saying it, for people and models.
    pub text: String,
    /// The tasks in the way: holding the files, waiting for an answer, depended on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// Who holds those tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// The files reserved by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// What the tasks need that the worker lacks (`capability`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
}

/// What a worker offered nothing waits for, sent as `reservations`,
/// `answer`, `dependencies`, `in_progress`, `phase`, `workflow`, `budget`,
/// `capability` or `cap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingFor {
    /// Ready tasks write files that tasks in progress hold.
    Reservations,
    /// Tasks wait for the engineer's answer.
    Answer,
    /// Tasks wait on dependencies not accepted yet.
    Dependencies,
    /// The tasks left are all held by workers.
    InProgress,
    /// No task is left: the workflow's next phase or new tasks will bring some.
    Phase,
    /// Tasks are ready, but the workflow hands none to this worker.
    Workflow,
    /// The run's or the phase's budget is spent: `mcc budget set` raises it.
    Budget,
    /// The ready tasks need a capability the worker did not name (`--can`).
    Capability,
    /// Ready tasks wait for a `max_workers` cap of their phase or type.
    Cap,
    /// A reason a newer hub gives, kept as it was sent.
    #[serde(untagged)]
    Other(String),
}

/// A message the hub sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ServerMsg {
    // --- the old protocol ---
    Connected {
        client_id: String,
        message: String,
        /// mcc extension: the git commit the hub's checkout is at, for
        /// `mcc join` to compare with its clone's (absent outside git).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
    Registered {
        role: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        project_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        worker_id: Option<String>,
    },
    WorkerRegistered {
        worker_id: String,
    },
    TasksCreated {
        count: usize,
        queued: usize,
    },
    /// To a worker: `task` is set. To the coordinator: `taskId` and `workerId`.
    TaskAssigned {
        #[serde(skip_serializing_if = "Option::is_none")]
        task: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        worker_id: Option<String>,
    },
    NoTasks {
        message: String,
    },
    TaskCompleteAck {
        task_id: String,
    },
    TaskComplete {
        task_id: String,
        worker_id: String,
        /// As the worker sent it; absent when it sent none, as the original did.
        #[serde(skip_serializing_if = "Option::is_none")]
        report: Option<Value>,
    },
    ReportDetected {
        task_id: String,
        worker_id: String,
        report_path: String,
        report: Value,
    },
    StatusResponse {
        coordinator: String,
        workers: Vec<WorkerStatus>,
        queue_size: usize,
        active_tasks: usize,
    },
    ServerShutdown {
        message: String,
    },
    Error {
        /// For old-protocol messages, the original server's sentence verbatim
        /// (old clients match on it).
        error: String,
        /// mcc extension: a short machine-readable code.
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        /// mcc extension: what to do instead, when `error` is the original's bare sentence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    // --- mcc's own ---
    Offer {
        offer: Offer,
    },
    Verdict {
        task_id: String,
        worker: String,
        attempt: u32,
        accepted: bool,
        /// True when the task failed for good (attempts used up).
        failed: bool,
        reasons: Vec<String>,
        next: Offer,
        /// What the worker should know although it does not change the
        /// verdict: files it changed outside its task (older hubs send none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    Ack {
        what: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<Offer>,
    },
    TasksAdded {
        ids: Vec<String>,
    },
    /// The answer to `snapshot` (old scripts): the summary and every task.
    Snapshot {
        snapshot: Box<Snapshot>,
    },
    /// The answer to `show_task`.
    TaskInfo {
        task: Box<TaskInfo>,
    },
    /// The first answer to `subscribe`: counts, workers, questions, problems.
    Summary {
        summary: Box<Summary>,
    },
    /// What one committed batch changed, pushed to subscribers: a [`Delta`]
    /// written once for all of them ([`Delta::from_wire`] reads it).
    Delta {
        delta: RawJson,
    },
    /// The answer to `tasks_page`.
    TasksPage {
        page: Page,
    },
    /// The answer to `token_add`: the secret, sent this once and stored only as a hash.
    TokenAdded {
        secret: String,
        token: TokenInfo,
    },
    /// The answer to `token_list`.
    Tokens {
        tokens: Vec<TokenInfo>,
    },
    /// The answer to `task_files`: the task's declared files as the hub's
    /// checkout holds them (a declared file it does not have is in
    /// `missingRead` or `missingWrite`: a write file is often new), and the
    /// commit its checkout is at, if it is a git work tree.
    TaskFiles {
        task_id: String,
        attempt: u32,
        read: Vec<FileDigest>,
        write: Vec<FileDigest>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missing_read: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missing_write: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
    /// The answer to `budgets` and `budget_set`: what was spent, every budget.
    Budgets {
        budgets: Budgets,
    },
    /// The answer to `fetch_file`: `data` (standard base64) holds the bytes
    /// from `offset` of the file, which is `size` bytes now (the client checks
    /// the whole against the SHA-256 `task_files` gave).
    FilePart {
        path: String,
        offset: u64,
        size: u64,
        data: String,
    },
}

/// What the run spent and every budget set on it (docs/workflows.md, "Budgets").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budgets {
    /// The run's whole spending, as its workers reported it.
    pub spent: Usage,
    /// Every scope with a limit: the run first, then phases, then tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<BudgetLine>,
}

/// One budget and what its scope spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetLine {
    pub scope: BudgetScope,
    /// The phase or the task; absent for the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The limits: a part left out has none.
    pub limit: Usage,
    pub spent: Usage,
    /// True once `spent` reached a limit: no new grant in this scope (a
    /// task's budget is per attempt; it is never "spent" as a whole).
    #[serde(default)]
    pub exhausted: bool,
}

/// What a budget covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    Run,
    Phase,
    Task,
}

impl BudgetScope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Phase => "phase",
            Self::Task => "task",
        }
    }
}

/// A JSON value written once and sent as it is: a delta goes to every
/// subscriber, and the engine that makes it should not build (or copy) a
/// `Value` per subscriber. On the wire it is the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(std::sync::Arc<String>);

impl RawJson {
    /// `text` must be one JSON value; [`RawJson`]'s serializer checks it.
    pub fn new(text: String) -> Self {
        Self(std::sync::Arc::new(text))
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    // Through a `Value`: a `RawValue` cannot be read inside a message tagged by `type`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::new(Value::deserialize(deserializer)?.to_string()))
    }
}

impl ServerMsg {
    pub fn error(error: impl Into<String>) -> Self {
        Self::Error { error: error.into(), code: None, hint: None }
    }

    pub fn error_code(error: impl Into<String>, code: &str) -> Self {
        Self::Error { error: error.into(), code: Some(code.to_owned()), hint: None }
    }

    /// An old-protocol error: the original's text, and mcc's guidance beside it.
    pub fn error_hint(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Error { error: error.into(), code: None, hint: Some(hint.into()) }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a server message always serializes")
    }
}

/// Why a frame could not become a [`ClientMsg`]: the text of the `error`.
pub fn parse(text: &str) -> Result<ClientMsg, String> {
    let (kind, external) = externally_tagged(text)?;
    // Most frames are good: read them straight, and only for a bad one
    // again with its path tracked, to name the field that is wrong.
    if let Ok(msg) = serde_json::from_value(external) {
        return Ok(msg);
    }
    let (_, external) = externally_tagged(text)?;
    match serde_path_to_error::deserialize::<_, ClientMsg>(external) {
        Ok(msg) => Ok(msg),
        Err(e) => {
            let path = e.path().to_string();
            let path = path.strip_prefix(&kind).map_or(path.clone(), |p| p.trim_start_matches('.').to_owned());
            let inner = e.into_inner();
            if path.is_empty() {
                Err(format!("Bad `{kind}` message: {inner}"))
            } else {
                Err(format!("Bad `{kind}` message: field `{path}`: {inner}"))
            }
        }
    }
}

/// `{"type": "next", ...fields}` as `{"next": {...fields}}`, the shape the
/// derived [`ClientMsg`] reads, with its type.
fn externally_tagged(text: &str) -> Result<(String, Value), String> {
    let value: Value = serde_json::from_str(text).map_err(|_| "Invalid JSON message".to_owned())?;
    // The original's texts: old clients match on them.
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err("Unknown message type: undefined".to_owned());
    };
    if !ClientMsg::TYPES.contains(&kind) {
        return Err(format!("Unknown message type: {kind}"));
    }
    let kind = kind.to_owned();
    let Value::Object(mut fields) = value else { unreachable!("has a type field, so it is an object") };
    fields.remove("type");
    let external = Value::Object(std::iter::once((kind.clone(), Value::Object(fields))).collect());
    Ok((kind, external))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_frames_get_errors_that_name_the_problem() {
        assert_eq!(parse("{nope").unwrap_err(), "Invalid JSON message");
        assert!(parse(r#"{"type":"fly"}"#).unwrap_err().contains("Unknown message type: fly"));
        assert_eq!(parse("{}").unwrap_err(), "Unknown message type: undefined");
        let err = parse(r#"{"type":"progress","worker":"w"}"#).unwrap_err();
        assert!(err.contains("progress") && err.contains("taskId"), "{err}");
        let err = parse(r#"{"type":"next","worker":5}"#).unwrap_err();
        assert!(err.contains("field `worker`"), "{err}");
        let err = parse(r#"{"type":"done","worker":"w","taskId":"t","deliverables":[1]}"#).unwrap_err();
        assert!(err.contains("field `deliverables[0]`"), "{err}");
    }

    #[test]
    fn a_client_message_goes_out_in_the_wire_shape_and_parses_back() {
        let msg = ClientMsg::Next { worker: "w".into(), wait_ms: Some(5), can: Vec::new(), model: None };
        let text = msg.to_json();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::json!({"type":"next","worker":"w","waitMs":5})
        );
        assert!(matches!(parse(&text).unwrap(), ClientMsg::Next { wait_ms: Some(5), .. }));
    }

    #[test]
    fn old_messages_serialize_with_their_old_field_names() {
        let msg = ServerMsg::StatusResponse {
            coordinator: "connected".into(),
            workers: vec![WorkerStatus { worker_id: "w".into(), busy: true, current_task: Some("t".into()) }],
            queue_size: 1,
            active_tasks: 2,
        };
        let v: Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(v["type"], "status_response");
        assert_eq!(v["queueSize"], 1);
        assert_eq!(v["activeTasks"], 2);
        assert_eq!(v["workers"][0]["workerId"], "w");
        assert_eq!(v["workers"][0]["currentTask"], "t");
        let v: Value = serde_json::from_str(&ServerMsg::TaskCompleteAck { task_id: "t".into() }.to_json()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"task_complete_ack","taskId":"t"}));
    }

    #[test]
    fn what_a_worker_waits_for_is_sent_as_it_always_was_and_a_newer_reason_is_kept() {
        let kinds = [
            (WaitingFor::Reservations, "reservations"),
            (WaitingFor::Answer, "answer"),
            (WaitingFor::Dependencies, "dependencies"),
            (WaitingFor::InProgress, "in_progress"),
            (WaitingFor::Phase, "phase"),
            (WaitingFor::Workflow, "workflow"),
            (WaitingFor::Budget, "budget"),
            (WaitingFor::Capability, "capability"),
            (WaitingFor::Cap, "cap"),
            (WaitingFor::Other("a_later_reason".into()), "a_later_reason"),
        ];
        for (kind, name) in kinds {
            assert_eq!(serde_json::to_value(&kind).unwrap(), Value::from(name));
            assert_eq!(serde_json::from_value::<WaitingFor>(Value::from(name)).unwrap(), kind);
        }
    }
}
