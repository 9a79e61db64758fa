//! `mcc mcp`: one worker's verbs as MCP tools over stdio, for agents that
//! prefer tools to shell commands or are configured through `.mcp.json`.
//!
//! Each tool call runs the matching verb of [`crate::client::worker`] in
//! this process (on a blocking thread, so a `next` that waits holds up no
//! other request) and returns its answer's text, so a tool result is exactly
//! what a shell user reads (the same answers, limits and transports, sockets
//! or files in a sandbox), followed by the next call to make. Refusals
//! (exit code 1) are tool errors carrying the verb's own "what to do"
//! message. `status` is [`crate::client::status`]'s text, rendered here
//! too. Input schemas are derived from the argument types below.
//! [`lines`] stands between stdio and rmcp so every request gets its answer.

mod lines;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::client::exit;
use crate::client::worker::{self as verbs, Answer, NextCall, PRINT_BUDGET, Source};

/// The longest `next` may wait: MCP clients give up on a call after 60 s.
pub const MAX_WAIT: Duration = Duration::from_secs(50);

/// Serve one worker's commands as MCP tools over stdio.
#[derive(Debug, Args)]
#[command(
    after_help = "Tools: next, done, block, fail, progress, leave (the `mcc worker` verbs) and status (read-only).\n\nExample (.mcp.json):\n  {\"mcpServers\": {\"mcc\": {\"command\": \"mcc\", \"args\": [\"mcp\"]}}}\n\nWithout --as or MCC_WORKER, each server names its worker mcp-XXXX, so every chat is a worker of its own."
)]
pub struct McpArgs {
    /// The worker's name, such as worker-A (or set `MCC_WORKER`).
    #[arg(long = "as", env = "MCC_WORKER", value_name = "NAME")]
    pub name: Option<String>,
    /// Hub address, such as `ws://127.0.0.1:3100`; several separated by commas are tried in turn (a hub with a standby). Default: found through the nearest .mcc/.
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
    /// How long `next` (and done, block, fail) wait for work before "nothing yet"; at most 50s.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Work in a git worktree of the worker's own, `.mcc/worktrees/NAME` (made at the first use; kept until `leave`).
    #[arg(long, env = "MCC_WORKTREE")]
    pub worktree: bool,
    #[command(flatten)]
    pub kit: verbs::Kit,
}

/// `mcc mcp`: serve until the client closes stdin.
pub fn run(args: McpArgs, options: crate::client::Options) -> u8 {
    let worker = args.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| {
        let id = crate::client::files::new_id();
        format!("mcp-{}", &id[..4])
    });
    hold_presence(&worker, args.hub.clone(), options);
    let mut server = WorkerTools::new(worker, args.hub, options, args.wait.min(MAX_WAIT), args.kit);
    server.worktree = args.worktree;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mcc mcp: cannot start the async runtime: {e}");
            return exit::ERROR;
        }
    };
    let outcome = runtime.block_on(async move {
        // Between stdio and rmcp: every request gets the response JSON-RPC prescribes.
        let (ends, pump) = lines::pump(tokio::io::stdin(), tokio::io::stdout());
        let pumped = tokio::spawn(pump);
        let service = server.serve((ends.input, ends.output)).await.map_err(|e| e.to_string())?;
        let ended = service.waiting().await.map_err(|e| e.to_string());
        // rmcp's last answers are still on their way to stdout.
        let _ = tokio::time::timeout(Duration::from_secs(2), pumped).await;
        ended
    });
    match outcome {
        Ok(_) => exit::OK,
        Err(e) => {
            eprintln!("mcc mcp: {e}");
            exit::ERROR
        }
    }
}

/// This server lives as long as its chat: a connection held from start to
/// end tells the hub the chat is alive, and its close (stdin closed, the
/// process killed) that it ended (docs/worker.md, "Presence"). Through the
/// file transport (a sandbox with no network) there is none: lease only.
fn hold_presence(worker: &str, hub: Option<String>, options: crate::client::Options) {
    if options.transport == crate::client::Transport::File
        || std::env::var_os("CODEX_SANDBOX_NETWORK_DISABLED").is_some_and(|v| v == "1")
    {
        return;
    }
    let Ok(cwd) = std::env::current_dir() else { return };
    let worker = worker.to_owned();
    // A thread of its own, ended with the process: the presence is the process's life.
    let _ = std::thread::Builder::new().name("mcc-presence".into()).spawn(move || {
        crate::client::presence::hold(
            || crate::client::locate(hub.as_deref(), &cwd, options),
            &worker,
            crate::wire::PresenceKind::Mcp,
            None,
            || true,
        )
    });
}

/// An optional argument is one to leave out, as the schema's `required`
/// list says: its type is the value's alone (`integer`, not `[integer, null]`)
/// and it has no `null` default.
fn optional_not_null(schema: &mut schemars::Schema) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else { return };
    for property in properties.values_mut() {
        if let Some(fields) = property.as_object_mut()
            && fields.get("default") == Some(&Value::Null)
        {
            fields.remove("default");
        }
        if let Some(Value::Array(types)) = property.get_mut("type") {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                property["type"] = only.clone();
            }
        }
    }
}

/// A whole number, also when a client sends it as a string of digits (`"5"`).
/// The usage a tool call reports, if it reports any.
fn usage(usd: Option<f64>, tokens: Option<u64>) -> Option<crate::wire::Usage> {
    let usage = crate::wire::Usage { usd, tokens };
    (!usage.is_empty()).then_some(usage)
}

fn whole_number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(given: D) -> Result<Option<T>, D::Error> {
    let value = Option::<Value>::deserialize(given)?;
    let number = match &value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    let shown = value.map(|v| v.to_string()).unwrap_or_default();
    number
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a whole number, not {shown}")))
}

/// A list of paths, also when a client sends one path as a string.
fn one_or_more_paths<'de, D: Deserializer<'de>>(given: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Paths {
        One(String),
        Many(Vec<String>),
    }
    match Option::<Paths>::deserialize(given) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(Paths::One(path))) => Ok(vec![path]),
        Ok(Some(Paths::Many(paths))) => Ok(paths),
        Err(_) => Err(D::Error::custom("expected a list of paths")),
    }
}

/// `done`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(transform = optional_not_null)]
pub struct DoneArgs {
    /// The task id, as printed with the task
    pub task: String,
    /// Files you wrote, relative to the project root
    #[serde(default, deserialize_with = "one_or_more_paths")]
    pub deliverables: Vec<String>,
    /// Your context efficiency, 1-5 (5 fresh; 2 or less: hand over)
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1, max = 5))]
    pub score: Option<u8>,
    /// A note for the engineer
    pub notes: Option<String>,
    /// The attempt, as printed with the task
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1))]
    pub attempt: Option<u32>,
    /// What this attempt cost in US dollars, if you know it (budgets count it)
    #[serde(default)]
    pub cost: Option<f64>,
    /// How many tokens this attempt used, if you know it (budgets count it)
    #[serde(default, deserialize_with = "whole_number")]
    pub tokens: Option<u64>,
}

/// `block`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(transform = optional_not_null)]
pub struct BlockArgs {
    /// The task id, as printed with the task
    pub task: String,
    pub question: String,
    /// The attempt, as printed with the task
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1))]
    pub attempt: Option<u32>,
    /// What this attempt cost in US dollars, if you know it (budgets count it)
    #[serde(default)]
    pub cost: Option<f64>,
    /// How many tokens this attempt used, if you know it (budgets count it)
    #[serde(default, deserialize_with = "whole_number")]
    pub tokens: Option<u64>,
}

/// `fail`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(transform = optional_not_null)]
pub struct FailArgs {
    /// The task id, as printed with the task
    pub task: String,
    pub reason: String,
    /// The attempt, as printed with the task
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1))]
    pub attempt: Option<u32>,
    /// What this attempt cost in US dollars, if you know it (budgets count it)
    #[serde(default)]
    pub cost: Option<f64>,
    /// How many tokens this attempt used, if you know it (budgets count it)
    #[serde(default, deserialize_with = "whole_number")]
    pub tokens: Option<u64>,
}

/// `progress`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(transform = optional_not_null)]
pub struct ProgressArgs {
    /// The task id, as printed with the task
    pub task: String,
    pub note: String,
    /// The attempt, as printed with the task
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(min = 1))]
    pub attempt: Option<u32>,
}

/// The MCP server of one worker.
#[derive(Clone)]
pub struct WorkerTools {
    worker: Arc<str>,
    hub: Option<String>,
    /// How the verbs reach the hub (`--transport`, `--timeout`).
    options: crate::client::Options,
    wait: Duration,
    /// Work in a worktree of its own (`--worktree`).
    worktree: bool,
    /// What the worker can do and its model, said with every `next`.
    kit: verbs::Kit,
    tool_router: ToolRouter<Self>,
}

/// Why a call's arguments cannot become a command.
fn arg_error(tool: &str, what: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("{tool}: {what}; see the tool's input schema (tools/list)"))])
}

/// `value`, or a tool error saying `key` is required when it is blank.
fn required<'a>(tool: &str, key: &str, value: &'a str) -> Result<&'a str, CallToolResult> {
    if value.trim().is_empty() { Err(arg_error(tool, &format!("`{key}` is required"))) } else { Ok(value) }
}

#[tool_router]
impl WorkerTools {
    fn new(
        worker: String,
        hub: Option<String>,
        options: crate::client::Options,
        wait: Duration,
        kit: verbs::Kit,
    ) -> Self {
        Self {
            worker: Arc::from(worker.as_str()),
            hub,
            options,
            wait,
            worktree: false,
            kit,
            tool_router: Self::tool_router(),
        }
    }

    fn who(&self) -> verbs::Worker {
        verbs::Worker {
            name: Some(self.worker.to_string()),
            hub: self.hub.clone(),
            options: self.options,
            worktree: self.worktree,
            kit: self.kit.clone(),
        }
    }

    /// Run a verb on a blocking thread (it may wait ~50 s on the hub) and
    /// turn its answer into the tool result.
    async fn answer(tool: &str, verb: impl FnOnce() -> Answer + Send + 'static) -> CallToolResult {
        match tokio::task::spawn_blocking(verb).await {
            Ok(answer) => result(&answer),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!("{tool}: the call stopped: {e}"))]),
        }
    }

    #[tool(
        description = "Get the task you hold, or a new one. Waits up to 45 s for one (the server's --wait, at most 50 s); \"nothing yet\" means call `next` again. The result ends with the next call to make."
    )]
    async fn next(&self) -> CallToolResult {
        let (who, wait) = (self.who(), self.wait);
        Self::answer("next", move || verbs::next(&who, wait)).await
    }

    #[tool(description = "Report a task done with the files you wrote; returns the verdict and your next task.")]
    async fn done(&self, Parameters(a): Parameters<DoneArgs>) -> CallToolResult {
        if let Err(refused) = required("done", "task", &a.task) {
            return refused;
        }
        if a.score.is_some_and(|score| !(1..=5).contains(&score)) {
            return arg_error("done", "`score` is 1 to 5");
        }
        let done = verbs::Done {
            task: a.task,
            deliverables: a.deliverables,
            score: a.score,
            notes: a.notes,
            attempt: a.attempt,
            wait: self.wait,
            usage: usage(a.cost, a.tokens),
        };
        let who = self.who();
        Self::answer("done", move || verbs::done(&who, &done)).await
    }

    #[tool(description = "Hand a question to the engineer; the task waits for the answer and you get other work.")]
    async fn block(&self, Parameters(a): Parameters<BlockArgs>) -> CallToolResult {
        if let Err(refused) = required("block", "task", &a.task).and(required("block", "question", &a.question)) {
            return refused;
        }
        let usage = usage(a.cost, a.tokens);
        let block = verbs::Block { task: a.task, question: a.question, attempt: a.attempt, wait: self.wait, usage };
        let who = self.who();
        Self::answer("block", move || verbs::block(&who, &block)).await
    }

    #[tool(description = "Give up on a task with the reason; it goes back to the queue.")]
    async fn fail(&self, Parameters(a): Parameters<FailArgs>) -> CallToolResult {
        if let Err(refused) = required("fail", "task", &a.task).and(required("fail", "reason", &a.reason)) {
            return refused;
        }
        let usage = usage(a.cost, a.tokens);
        let fail = verbs::Fail { task: a.task, reason: a.reason, attempt: a.attempt, wait: self.wait, usage };
        let who = self.who();
        Self::answer("fail", move || verbs::fail(&who, &fail)).await
    }

    #[tool(description = "Note progress on a task you hold; extends its lease.")]
    async fn progress(&self, Parameters(a): Parameters<ProgressArgs>) -> CallToolResult {
        if let Err(refused) = required("progress", "task", &a.task).and(required("progress", "note", &a.note)) {
            return refused;
        }
        let progress = verbs::Progress { task: a.task, note: a.note, attempt: a.attempt };
        let who = self.who();
        Self::answer("progress", move || verbs::progress(&who, &progress)).await
    }

    #[tool(description = "Leave: what you hold goes back to the queue at once.")]
    async fn leave(&self) -> CallToolResult {
        let who = self.who();
        Self::answer("leave", move || verbs::leave(&who)).await
    }

    #[tool(description = "Read-only: the project's tasks and workers, as `mcc status` prints them.")]
    async fn status(&self) -> CallToolResult {
        // The text `mcc status` prints, fetched and rendered in this process.
        let (hub, options) = (self.hub.clone(), self.options);
        let fetched = tokio::task::spawn_blocking(move || {
            crate::client::status::fetch(hub.as_deref(), options, false, crate::hub::page::url_of).map(|s| s.text())
        })
        .await;
        let text = match fetched {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => return refusal(&e, exit::ERROR),
            Err(e) => return CallToolResult::error(vec![ContentBlock::text(format!("status: the call stopped: {e}"))]),
        };
        let text = fitted_status(text.trim_end().to_owned());
        let mut shown = CallToolResult::success(vec![ContentBlock::text(text)]);
        shown.structured_content = Some(json!({"exitCode": exit::OK, "nextCall": null}));
        shown
    }
}

/// A status that fits what a model is shown: whole lines up to the budget
/// every worker answer keeps, and where the rest is.
fn fitted_status(text: String) -> String {
    if text.len() <= PRINT_BUDGET {
        return text;
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = String::new();
    let mut shown = 0;
    for line in &lines {
        if kept.len() + line.len() + 1 > PRINT_BUDGET - 200 {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
        shown += 1;
    }
    kept.push_str(&format!(
        "... {} more lines left out to fit; the whole status: `mcc status` in a terminal, or `mcc tasks list --state STATE --limit 50`",
        lines.len() - shown
    ));
    kept
}

/// A refused call: a tool error with the "what to do" message.
fn refusal(message: &str, code: u8) -> CallToolResult {
    let text = format!(
        "{message}\n(in MCP, a printed `mcc worker VERB ...` is this server's VERB tool, with the same options as arguments)"
    );
    let mut refused = CallToolResult::error(vec![ContentBlock::text(text)]);
    refused.structured_content = Some(json!({"exitCode": code, "error": message}));
    refused
}

/// A verb's answer as a tool result, ending with the next call to make.
fn result(answer: &Answer) -> CallToolResult {
    let (next_call, why) = match answer.code {
        exit::OK => match &answer.next {
            Some(call) => (Some(tool_call(call)), ""),
            None => (None, "none: you can stop"),
        },
        // The hub is down: the same call again later, not `next`.
        exit::NOTHING_YET if matches!(answer.source, Source::HubDown) => {
            (None, "this same call again in a minute; if it keeps failing, tell the engineer")
        }
        exit::NOTHING_YET => (Some(tool_call(&NextCall::Next)), "nothing yet, call again"),
        exit::ALL_DONE => (None, "none: all work is done, stop"),
        exit::HAND_OVER => (None, "none: your context is spent; stop, a fresh chat takes over"),
        code => return refusal(&answer.text, code),
    };
    let mut text = answer.text.trim_end().to_owned();
    match &next_call {
        Some(call) => {
            let args = serde_json::to_string(&call["arguments"]).expect("serializes");
            let tail = if why.is_empty() { String::new() } else { format!(" ({why})") };
            text.push_str(&format!("\nnext call: {} {args}{tail}", call["tool"].as_str().unwrap_or_default()));
        }
        None => text.push_str(&format!("\nnext call: {why}")),
    }
    let mut done = CallToolResult::success(vec![ContentBlock::text(text)]);
    let mut structured = json!({"exitCode": answer.code, "nextCall": next_call});
    if let Some(folder) = &answer.work_in {
        structured["workIn"] = json!(folder);
    }
    done.structured_content = Some(structured);
    done
}

/// A next call as this server's tool call: `{"tool": "done", "arguments": {...}}`,
/// the arguments in the order the shell command gives them.
pub fn tool_call(call: &NextCall) -> Value {
    match call {
        NextCall::Next => json!({"tool": "next", "arguments": {}}),
        NextCall::Done { task, attempt, deliverables, score } => {
            let mut args = Map::new();
            args.insert("task".into(), json!(task));
            if let Some(attempt) = attempt {
                args.insert("attempt".into(), json!(attempt));
            }
            if !deliverables.is_empty() {
                args.insert("deliverables".into(), json!(deliverables));
            }
            args.insert("score".into(), json!(score));
            json!({"tool": "done", "arguments": args})
        }
    }
}

/// The tools, in the order of a worker's loop.
const TOOLS: [&str; 7] = ["next", "done", "block", "fail", "progress", "leave", "status"];

const INSTRUCTIONS: &str = "You are a worker on a shared project. Call `next` to get a task, do it, then make the call \
each result names on its last line (`next call: TOOL {arguments}`). \"nothing yet\" means call `next` again; \
\"all work is done\" means stop. Task texts name shell commands (`mcc worker VERB TASK --option VALUE`): each is \
this server's VERB tool with the options as arguments (--deliverable goes into `deliverables`).";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for WorkerTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcc", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!("{INSTRUCTIONS} Your worker name is {}.", self.worker))
    }

    /// The tools in the order of a worker's loop, as before they were declared with macros.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.tool_router.list_all();
        tools.sort_by_key(|tool| TOOLS.iter().position(|name| *name == tool.name));
        Ok(ListToolsResult { tools, ..Default::default() })
    }

    /// An unknown tool is a tool error naming the tools, which a model can
    /// correct (arguments that do not fit a schema are already one: rmcp's).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tool_router.has_route(&request.name) {
            let what = format!("no tool `{}`: the tools are {}", request.name, TOOLS.join(", "));
            return Ok(CallToolResult::error(vec![ContentBlock::text(what)]).into());
        }
        self.tool_router.call(ToolCallContext::new(self, request, context)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agents have these tools configured: each keeps its argument names,
    /// types and required list as they were written by hand before.
    #[test]
    fn the_tools_keep_their_arguments_types_and_required_lists() {
        let shape = |tool: &rmcp::model::Tool| {
            let schema = &tool.input_schema;
            let types: Map<String, Value> = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.iter().map(|(name, property)| (name.clone(), property["type"].clone())).collect())
                .unwrap_or_default();
            json!({"name": tool.name, "types": types, "required": schema.get("required").cloned().unwrap_or(json!([]))})
        };
        let tools: Vec<Value> = WorkerTools::tool_router().list_all().iter().map(shape).collect();
        let attempt_task = |other: &str| json!({"task": "string", other: "string", "attempt": "integer"});
        let reported = |other: &str| json!({"task": "string", other: "string", "attempt": "integer", "cost": "number", "tokens": "integer"});
        let expected = vec![
            json!({"name": "block", "types": reported("question"), "required": ["task", "question"]}),
            json!({"name": "done", "types": {"task": "string", "deliverables": "array", "score": "integer", "notes": "string", "attempt": "integer", "cost": "number", "tokens": "integer"}, "required": ["task"]}),
            json!({"name": "fail", "types": reported("reason"), "required": ["task", "reason"]}),
            json!({"name": "leave", "types": {}, "required": []}),
            json!({"name": "next", "types": {}, "required": []}),
            json!({"name": "progress", "types": attempt_task("note"), "required": ["task", "note"]}),
            json!({"name": "status", "types": {}, "required": []}),
        ];
        assert_eq!(tools, expected);
    }

    #[test]
    fn a_number_sent_as_text_and_one_path_sent_as_a_string_are_taken() {
        let args: DoneArgs =
            serde_json::from_value(json!({"task": "t", "deliverables": "out/a.md", "score": "5", "attempt": 2}))
                .unwrap();
        assert_eq!((args.deliverables, args.score, args.attempt), (vec!["out/a.md".to_owned()], Some(5), Some(2)));
        let bare: DoneArgs = serde_json::from_value(json!({"task": "t"})).unwrap();
        assert_eq!((bare.deliverables.len(), bare.score, bare.attempt), (0, None, None));
        let wrong = serde_json::from_value::<DoneArgs>(json!({"task": "t", "score": "high"})).unwrap_err();
        assert!(wrong.to_string().contains("expected a whole number, not \"high\""), "{wrong}");
    }

    #[test]
    fn a_done_call_names_its_arguments_in_the_order_of_the_printed_command() {
        let call = NextCall::Done {
            task: "t-1".into(),
            attempt: Some(2),
            deliverables: vec!["out/a.md".into(), "b c.md".into()],
            score: 5,
        };
        assert_eq!(
            serde_json::to_string(&tool_call(&call)).unwrap(),
            r#"{"tool":"done","arguments":{"task":"t-1","attempt":2,"deliverables":["out/a.md","b c.md"],"score":5}}"#
        );
        assert_eq!(
            call.command("w"),
            "mcc worker done t-1 --as w --attempt 2 --deliverable out/a.md --deliverable 'b c.md' --score 5"
        );
        assert_eq!(tool_call(&NextCall::Next), json!({"tool": "next", "arguments": {}}));
    }
}
