//! `mcc mcp`: one worker's verbs as MCP tools over stdio, for agents that
//! prefer tools to shell commands or are configured through `.mcp.json`.
//!
//! Each tool call runs the matching `mcc worker ...` command of this same
//! binary and returns what it printed, so a tool result is exactly what a
//! shell user reads (the same answers, limits and transports, sockets or
//! files in a sandbox), followed by the next call to make. Refusals (exit
//! 1) are tool errors carrying the command's own "what to do" message.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};

use crate::cli::exit;
use crate::cli::worker::PRINT_BUDGET;

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
    /// Hub address, such as `ws://127.0.0.1:3100` (default: found through the nearest .mcc/).
    #[arg(long, env = "MCC_HUB")]
    pub hub: Option<String>,
    /// How long `next` (and done, block, fail) wait for work before "nothing yet"; at most 50s.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// `mcc mcp`: serve until the client closes stdin.
pub fn run(args: McpArgs) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("mcc mcp: cannot find the mcc binary itself: {e}");
            return exit::ERROR;
        }
    };
    let worker = args.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| {
        let id = crate::client::files::new_id();
        format!("mcp-{}", &id[..4])
    });
    let server = WorkerTools {
        worker: Arc::from(worker.as_str()),
        hub: args.hub,
        wait: args.wait.min(MAX_WAIT),
        exe,
        transport: crate::client::transport(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("start the tokio runtime");
    let outcome = runtime.block_on(async move {
        let service = server.serve(rmcp::transport::stdio()).await.map_err(|e| e.to_string())?;
        service.waiting().await.map_err(|e| e.to_string())
    });
    match outcome {
        Ok(_) => exit::OK,
        Err(e) => {
            eprintln!("mcc mcp: {e}");
            exit::ERROR
        }
    }
}

/// The MCP server of one worker.
#[derive(Clone)]
pub struct WorkerTools {
    worker: Arc<str>,
    hub: Option<String>,
    wait: Duration,
    exe: PathBuf,
    transport: crate::client::Transport,
}

fn schema(properties: &Value, required: &[&str]) -> Arc<Map<String, Value>> {
    let value = json!({"type": "object", "properties": properties, "required": required});
    let Value::Object(map) = value else { unreachable!("an object literal") };
    Arc::new(map)
}

/// The tools, with their input schemas.
pub fn tools() -> Vec<Tool> {
    let task = json!({"type": "string", "description": "The task id, as printed with the task"});
    let attempt = json!({"type": "integer", "minimum": 1, "description": "The attempt, as printed with the task"});
    vec![
        Tool::new(
            "next",
            "Get the task you hold, or a new one. Waits up to ~45 s; \"nothing yet\" means call `next` again. The result ends with the next call to make.",
            schema(&json!({}), &[]),
        ),
        Tool::new(
            "done",
            "Report a task done with the files you wrote; returns the verdict and your next task.",
            schema(
                &json!({
                    "task": task,
                    "deliverables": {"type": "array", "items": {"type": "string"}, "description": "Files you wrote, relative to the project root"},
                    "score": {"type": "integer", "minimum": 1, "maximum": 5, "description": "Your context efficiency, 1-5 (5 fresh; 2 or less: hand over)"},
                    "notes": {"type": "string", "description": "A note for the engineer"},
                    "attempt": attempt,
                }),
                &["task"],
            ),
        ),
        Tool::new(
            "block",
            "Hand a question to the engineer; the task waits for the answer and you get other work.",
            schema(&json!({"task": task, "question": {"type": "string"}, "attempt": attempt}), &["task", "question"]),
        ),
        Tool::new(
            "fail",
            "Give up on a task with the reason; it goes back to the queue.",
            schema(&json!({"task": task, "reason": {"type": "string"}, "attempt": attempt}), &["task", "reason"]),
        ),
        Tool::new(
            "progress",
            "Note progress on a task you hold; extends its lease.",
            schema(&json!({"task": task, "note": {"type": "string"}, "attempt": attempt}), &["task", "note"]),
        ),
        Tool::new("leave", "Leave: what you hold goes back to the queue at once.", schema(&json!({}), &[])),
        Tool::new(
            "status",
            "Read-only: the project's tasks and workers, as `mcc status` prints them.",
            schema(&json!({}), &[]),
        ),
    ]
}

/// Why a call's arguments cannot become a command.
fn arg_error(tool: &str, what: &str) -> String {
    format!("{tool}: {what}; see the tool's input schema (tools/list)")
}

impl WorkerTools {
    /// The `mcc` command line for one tool call.
    fn command_line(&self, tool: &str, args: &Map<String, Value>) -> Result<Vec<String>, String> {
        let text = |key: &str| -> Result<Option<String>, String> {
            match args.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(arg_error(tool, &format!("`{key}` must be a string, not {other}"))),
            }
        };
        let number = |key: &str| -> Result<Option<String>, String> {
            match args.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) if n.as_u64().is_some() => Ok(Some(n.to_string())),
                Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(Some(s.clone())),
                Some(other) => Err(arg_error(tool, &format!("`{key}` must be a whole number, not {other}"))),
            }
        };
        let required = |key: &str| -> Result<String, String> {
            text(key)?.filter(|s| !s.trim().is_empty()).ok_or_else(|| arg_error(tool, &format!("`{key}` is required")))
        };
        let mut line: Vec<String> = Vec::new();
        let flag = |line: &mut Vec<String>, name: &str, value: Option<String>| {
            if let Some(value) = value {
                line.push(format!("--{name}"));
                line.push(value);
            }
        };
        if tool == "status" {
            line.push("status".into());
        } else {
            line.extend(["worker".into(), tool.to_owned()]);
        }
        match tool {
            "next" | "leave" | "status" => {}
            "done" => {
                line.push(required("task")?);
                match args.get("deliverables") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(items)) => {
                        for item in items {
                            let Value::String(path) = item else {
                                return Err(arg_error(tool, "`deliverables` must be a list of paths"));
                            };
                            flag(&mut line, "deliverable", Some(path.clone()));
                        }
                    }
                    Some(Value::String(path)) => flag(&mut line, "deliverable", Some(path.clone())),
                    Some(_) => return Err(arg_error(tool, "`deliverables` must be a list of paths")),
                }
                flag(&mut line, "score", number("score")?);
                flag(&mut line, "notes", text("notes")?);
            }
            "block" => {
                line.push(required("task")?);
                flag(&mut line, "question", Some(required("question")?));
            }
            "fail" => {
                line.push(required("task")?);
                flag(&mut line, "reason", Some(required("reason")?));
            }
            "progress" => {
                line.push(required("task")?);
                flag(&mut line, "note", Some(required("note")?));
            }
            _ => {
                return Err(format!(
                    "no tool `{tool}`: the tools are next, done, block, fail, progress, leave, status"
                ));
            }
        }
        if matches!(tool, "done" | "block" | "fail" | "progress") {
            flag(&mut line, "attempt", number("attempt")?);
        }
        if tool != "status" {
            flag(&mut line, "as", Some(self.worker.to_string()));
        }
        if matches!(tool, "next" | "done" | "block" | "fail") {
            flag(&mut line, "wait", Some(format!("{}s", self.wait.as_secs())));
        }
        flag(&mut line, "hub", self.hub.clone());
        let transport = self.transport.to_possible_value().expect("every transport has a name");
        flag(&mut line, "transport", Some(transport.get_name().to_owned()));
        Ok(line)
    }

    async fn call(&self, tool: &str, args: &Map<String, Value>) -> CallToolResult {
        let line = match self.command_line(tool, args) {
            Ok(line) => line,
            Err(message) => return CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        let output = tokio::process::Command::new(&self.exe)
            .args(&line)
            .env_remove("MCC_WORKER")
            .env_remove("MCC_WAIT")
            .stdin(Stdio::null())
            // A call the client cancels stops its command; what it held comes back with the next `next`.
            .kill_on_drop(true)
            .output()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                return CallToolResult::error(vec![ContentBlock::text(format!(
                    "cannot run {}: {e}",
                    self.exe.display()
                ))]);
            }
        };
        let code = output.status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(exit::ERROR);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        result(tool, code, &stdout, &stderr)
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

/// A command's output as a tool result, ending with the next call to make.
fn result(tool: &str, code: u8, stdout: &str, stderr: &str) -> CallToolResult {
    let (next_call, why) = match code {
        exit::OK if tool == "status" => (None, String::new()),
        exit::OK => match printed_next_command(stdout) {
            Some(call) => (Some(call), String::new()),
            None => (None, "none: you can stop".to_owned()),
        },
        exit::NOTHING_YET => (Some(json!({"tool": "next", "arguments": {}})), "nothing yet, call again".to_owned()),
        exit::ALL_DONE => (None, "none: all work is done, stop".to_owned()),
        exit::HAND_OVER => (None, "none: your context is spent; stop, a fresh chat takes over".to_owned()),
        _ => {
            let message = stderr.trim().trim_start_matches("error: ");
            let text = format!(
                "{message}\n(in MCP, a printed `mcc worker VERB ...` is this server's VERB tool, with the same options as arguments)"
            );
            let mut refused = CallToolResult::error(vec![ContentBlock::text(text)]);
            refused.structured_content = Some(json!({"exitCode": code, "error": message}));
            return refused;
        }
    };
    let mut text = stdout.trim_end().to_owned();
    if tool == "status" {
        text = fitted_status(text);
    }
    match &next_call {
        Some(call) => {
            let args = serde_json::to_string(&call["arguments"]).expect("serializes");
            let tail = if why.is_empty() { String::new() } else { format!(" ({why})") };
            text.push_str(&format!("\nnext call: {} {args}{tail}", call["tool"].as_str().unwrap_or_default()));
        }
        None if !why.is_empty() => text.push_str(&format!("\nnext call: {why}")),
        None => {}
    }
    let mut done = CallToolResult::success(vec![ContentBlock::text(text)]);
    done.structured_content = Some(json!({"exitCode": code, "nextCall": next_call}));
    done
}

/// The command an answer says to run next (`when done: ...` or `next: ...`),
/// as a tool call: `{"tool": "done", "arguments": {...}}`.
fn printed_next_command(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .find_map(|line| {
            let command = line.strip_prefix("when done: ").or_else(|| line.strip_prefix("next: "))?;
            as_tool_call(command)
        })
        .or_else(|| done_command_in_task_file(stdout))
}

/// A `done` command too long to print (a task with many output files) is
/// under "When done" in the task's file, which the answer names.
fn done_command_in_task_file(stdout: &str) -> Option<Value> {
    let line = stdout.lines().find(|l| l.starts_with(crate::cli::worker::DONE_IN_FILE))?;
    let path = line.strip_prefix(crate::cli::worker::DONE_IN_FILE)?.rsplit_once(" (it names ")?.0;
    let task = std::fs::read_to_string(path).ok()?;
    let command = task.split_once("## When done\n\n")?.1.lines().next()?.trim();
    as_tool_call(command)
}

/// `mcc worker done t1 --as w --deliverable a.md --score 5` as
/// `{"tool": "done", "arguments": {"task": "t1", "deliverables": ["a.md"], "score": 5}}`.
pub fn as_tool_call(command: &str) -> Option<Value> {
    let words = shlex::split(command)?;
    let at = words.iter().position(|w| w == "worker")?;
    let tool = words.get(at + 1)?.clone();
    let mut args = Map::new();
    let mut rest = words[at + 2..].iter();
    while let Some(word) = rest.next() {
        match word.strip_prefix("--") {
            None => {
                args.entry("task").or_insert_with(|| json!(word));
            }
            Some("json") => {}
            Some("as" | "hub" | "wait" | "transport") => {
                rest.next();
            }
            Some("deliverable") => {
                let path = rest.next()?;
                let list = args.entry("deliverables").or_insert_with(|| json!([]));
                list.as_array_mut()?.push(json!(path));
            }
            Some(name) => {
                let value = rest.next()?;
                let value = match value.parse::<u64>() {
                    Ok(n) if matches!(name, "score" | "attempt") => json!(n),
                    _ => json!(value),
                };
                args.insert(name.to_owned(), value);
            }
        }
    }
    Some(json!({"tool": tool, "arguments": args}))
}

const INSTRUCTIONS: &str = "You are a worker on a shared project. Call `next` to get a task, do it, then make the call \
each result names on its last line (`next call: TOOL {arguments}`). \"nothing yet\" means call `next` again; \
\"all work is done\" means stop. Task texts name shell commands (`mcc worker VERB TASK --option VALUE`): each is \
this server's VERB tool with the options as arguments (--deliverable goes into `deliverables`).";

impl ServerHandler for WorkerTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcc", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!("{INSTRUCTIONS} Your worker name is {}.", self.worker))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult { tools: tools(), ..Default::default() })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        Ok(self.call(&request.name, &args).await.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_command_becomes_the_matching_tool_call() {
        let call = as_tool_call(
            "mcc worker done t-1 --as w --deliverable out/a.md --deliverable 'b c.md' --score 5 --attempt 2",
        )
        .unwrap();
        assert_eq!(
            call,
            json!({"tool": "done", "arguments": {"task": "t-1", "deliverables": ["out/a.md", "b c.md"], "score": 5, "attempt": 2}})
        );
        assert_eq!(as_tool_call("mcc worker next --as w").unwrap(), json!({"tool": "next", "arguments": {}}));
    }
}
