//! `mcc mcp`: an agent that speaks MCP works through the same loop, driven
//! here by a real MCP client (rmcp's) over the server's stdin and stdout.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use serde_json::{Map, Value, json};

use crate::support::git;
use crate::support::{Hub, Project, mcc_bin, old_task};

type Client = RunningService<rmcp::RoleClient, ()>;

fn add(hub: &Hub, tasks: Vec<Value>) {
    let reply = hub.connect().ask(json!({"type": "add_tasks", "tasks": tasks}));
    assert_eq!(reply["type"], "tasks_added", "{reply}");
}

/// `mcc mcp` started the way an agent's MCP config starts it, in the project root.
async fn connect(project: &Project, program: &str, args: &[&str]) -> Client {
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(project.root()).env_remove("MCC_WORKER").env_remove("MCC_HUB");
    let transport = TokioChildProcess::new(command).expect("spawn mcc mcp");
    ().serve(transport).await.expect("the MCP handshake")
}

async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    client.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)).await.expect("tools/call")
}

fn text(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// The arguments of the `next call` a result names, checked to be `tool`.
fn next_call(result: &CallToolResult, tool: &str) -> Map<String, Value> {
    let call = &result.structured_content.as_ref().expect("structured content")["nextCall"];
    assert_eq!(call["tool"], tool, "{}", text(result));
    call["arguments"].as_object().cloned().unwrap()
}

/// Drive one worker from its first task to "all work is done", the way a model would.
async fn work_the_queue(client: &Client, project: &Project, expected: usize) -> Vec<String> {
    let mut accepted = Vec::new();
    let mut result = call(client, "next", json!({})).await;
    for _ in 0..(expected * 4 + 4) {
        assert_ne!(result.is_error, Some(true), "{}", text(&result));
        let structured = result.structured_content.clone().unwrap();
        if structured["exitCode"] == 4 {
            assert!(text(&result).contains("next call: none: all work is done"), "{}", text(&result));
            return accepted;
        }
        let call_now = structured["nextCall"].clone();
        let tool = call_now["tool"].as_str().unwrap().to_owned();
        let args = call_now["arguments"].clone();
        if tool == "done" {
            assert!(text(&result).contains("task "), "the result carries the task: {}", text(&result));
            for path in args["deliverables"].as_array().unwrap() {
                project.write(path.as_str().unwrap(), "written over MCP");
            }
        }
        result = call(client, &tool, args.clone()).await;
        if tool == "done" {
            assert!(
                text(&result).starts_with(&format!("accepted {}.", args["task"].as_str().unwrap())),
                "{}",
                text(&result)
            );
            accepted.push(args["task"].as_str().unwrap().to_owned());
        }
    }
    panic!("the queue did not drain: {}", text(&result));
}

#[test]
fn an_mcp_client_lists_the_tools_and_drains_a_queue() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("m-1", &["out/m-1.md"], &[]), old_task("m-2", &["out/m-2.md"], &[])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "tool-user", "--wait", "1s"]).await;
        let info = client.peer_info().expect("the server introduced itself");
        assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("mcc"));
        assert!(info.instructions.as_deref().unwrap_or_default().contains("tool-user"));

        let mut names: Vec<String> =
            client.list_all_tools().await.unwrap().into_iter().map(|t| t.name.into_owned()).collect();
        names.sort();
        assert_eq!(names, ["block", "done", "fail", "leave", "next", "progress", "status"]);

        let mut accepted = work_the_queue(&client, &project, 2).await;
        accepted.sort();
        assert_eq!(accepted, ["m-1", "m-2"]);

        let status = call(&client, "status", json!({})).await;
        assert_ne!(status.is_error, Some(true), "{}", text(&status));
        assert!(text(&status).contains("2 accepted"), "{}", text(&status));
        client.cancel().await.unwrap();
    });
}

/// The answers that fit a screen reach the model over MCP as they are, and
/// the next call is right for a long task and for one with no output file.
#[test]
fn over_mcp_a_long_task_fits_a_screen_and_a_task_without_output_files_is_done_as_named() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut long = old_task("long", &["out/long.md"], &[]);
    long["description"] = json!("Read every module and write what it owns. ".repeat(500));
    add(&hub, vec![long, old_task("think", &[], &["long"])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "M", "--wait", "1s"]).await;
        let first = call(&client, "next", json!({})).await;
        let shown = text(&first);
        assert!(shown.len() <= 2200, "{} characters: {shown}", shown.len());
        assert!(shown.starts_with("task long (new, attempt 1"), "{shown}");
        assert!(shown.contains(".mcc/tasks/long.md"), "{shown}");
        let args = next_call(&first, "done");
        assert_eq!(
            Value::Object(args.clone()),
            json!({"task": "long", "attempt": 1, "deliverables": ["out/long.md"], "score": 5})
        );
        project.write("out/long.md", "done");
        let second = call(&client, "done", Value::Object(args)).await;
        assert!(text(&second).starts_with("accepted long.\ntask think (new, attempt 1"), "{}", text(&second));
        let args = next_call(&second, "done");
        assert_eq!(Value::Object(args.clone()), json!({"task": "think", "attempt": 1, "score": 5}));
        let last = call(&client, "done", Value::Object(args)).await;
        assert!(text(&last).starts_with("accepted think."), "{}", text(&last));
        assert_eq!(last.structured_content.as_ref().unwrap()["exitCode"], 4, "{}", text(&last));
        client.cancel().await.unwrap();
    });
}

/// A status too long for a model's screen keeps its head, whole lines, and
/// says where the rest is.
#[test]
fn over_mcp_a_long_status_fits_a_screen_and_says_where_the_rest_is() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, (0..80).map(|i| old_task(&format!("held-by-a-worker-with-a-long-name-{i:02}"), &[], &[])).collect());
    // 80 workers each hold a task: `mcc status` lists them all.
    let mut ws = hub.connect();
    for i in 0..80 {
        let reply = ws.ask(json!({"type":"next","worker":format!("worker-number-{i:02}"),"waitMs":0}));
        assert_eq!(reply["type"], "offer", "{reply}");
    }
    let whole = project.mcc().args(["status"]).run();
    assert!(whole.stdout.len() > 4000, "the status to fit is long: {} characters", whole.stdout.len());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "reader"]).await;
        let status = call(&client, "status", json!({})).await;
        let shown = text(&status);
        assert_ne!(status.is_error, Some(true), "{shown}");
        assert!(shown.len() <= 2000, "{} characters: {shown}", shown.len());
        let first_line = whole.stdout.lines().next().unwrap();
        assert!(shown.starts_with(first_line), "the head is kept: {shown}");
        let last = shown.lines().last().unwrap();
        assert!(last.contains("more lines left out") && last.contains("mcc status"), "{shown}");
        // Leases and last-seen ages tick between the two snapshots: lines are
        // compared with their figures blanked, so a cut inside a line still fails.
        let shape = |line: &str| line.replace(|c: char| c.is_ascii_digit(), "#");
        for line in shown.lines().filter(|l| !l.contains("more lines left out")) {
            assert!(whole.stdout.lines().any(|w| shape(w) == shape(line)), "only whole lines: `{line}`");
        }
        client.cancel().await.unwrap();
    });
}

/// A `done` command too long to print is taken from the task's file.
#[test]
fn over_mcp_a_task_with_many_output_files_still_names_its_done_call() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let outputs: Vec<String> = (0..120).map(|i| format!("summaries/part_{i:03}.md")).collect();
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    add(&hub, vec![old_task("many", &refs, &[])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "M", "--wait", "1s"]).await;
        let first = call(&client, "next", json!({})).await;
        let args = next_call(&first, "done");
        assert_eq!(args["deliverables"], json!(outputs), "{}", text(&first));
        for out in &outputs {
            project.write(out, "part");
        }
        let done = call(&client, "done", Value::Object(args)).await;
        assert!(text(&done).starts_with("accepted many."), "{}", text(&done));
        client.cancel().await.unwrap();
    });
}

#[test]
fn over_mcp_nothing_yet_says_call_again_and_a_refusal_is_a_tool_error_saying_what_to_do() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "idle", "--wait", "1s"]).await;
        let waited = call(&client, "next", json!({})).await;
        assert_ne!(waited.is_error, Some(true), "{}", text(&waited));
        assert!(text(&waited).contains("nothing yet, call again"), "{}", text(&waited));
        assert!(next_call(&waited, "next").is_empty());

        add(&hub, vec![old_task("held", &["out/held.md"], &[])]);
        let refused = call(&client, "done", json!({"task": "not-a-task", "deliverables": []})).await;
        assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
        assert!(text(&refused).contains("not-a-task"), "{}", text(&refused));

        let missing = call(&client, "block", json!({"task": "held"})).await;
        assert_eq!(missing.is_error, Some(true), "{}", text(&missing));
        assert!(text(&missing).contains("missing field `question`"), "{}", text(&missing));
        let blank = call(&client, "block", json!({"task": "held", "question": "  "})).await;
        assert_eq!(blank.is_error, Some(true), "{}", text(&blank));
        assert!(text(&blank).contains("`question` is required"), "{}", text(&blank));
        client.cancel().await.unwrap();
    });
}

/// A hub killed under an MCP worker: the tool says the hub is down and to
/// make the same call again later (exit 3), never to start one.
#[test]
fn over_mcp_a_killed_hub_is_said_to_be_down_with_the_same_call_again_later() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("k", &["out/k.md"], &[])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "K", "--wait", "1s"]).await;
        let first = call(&client, "next", json!({})).await;
        let done = next_call(&first, "done");
        hub.kill9();
        project.write("out/k.md", "x");
        let down = call(&client, "done", Value::Object(done)).await;
        let said = text(&down);
        assert_ne!(down.is_error, Some(true), "{said}");
        assert_eq!(down.structured_content.as_ref().unwrap()["exitCode"], 3, "{said}");
        assert!(said.contains("the hub is down for now") && said.contains("this same call again"), "{said}");
        assert!(!said.to_lowercase().contains("start") && !said.contains("mcc run"), "{said}");
        client.cancel().await.unwrap();
    });
}

/// `progress` names the `done` call shown with the task, its files included.
#[test]
fn over_mcp_progress_names_the_done_call_the_task_came_with() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("p-1", &["out/p 1.md", "out/p-2.md"], &[])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "P", "--wait", "1s"]).await;
        let first = call(&client, "next", json!({})).await;
        let done = next_call(&first, "done");
        assert_eq!(done["deliverables"], json!(["out/p 1.md", "out/p-2.md"]), "{}", text(&first));
        let noted = call(&client, "progress", json!({"task": "p-1", "note": "half way"})).await;
        assert_ne!(noted.is_error, Some(true), "{}", text(&noted));
        assert_eq!(next_call(&noted, "done"), done, "{}", text(&noted));
        assert!(
            text(&noted).contains("when done: mcc worker done p-1 --as P --attempt 1 --deliverable 'out/p 1.md'"),
            "{}",
            text(&noted)
        );
        client.cancel().await.unwrap();
    });
}

/// The processes whose parent is `pid`, from `/proc/*/stat`.
fn children_of(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `PID (COMM) STATE PPID ...`: COMM may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if rest.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
            found.push(head.to_owned() + ")");
        }
    }
    found
}

/// A waiting `next` runs inside the server: no process is started for it,
/// and the server answers other calls while it waits.
#[test]
fn an_mcp_tool_call_starts_no_process_and_a_waiting_next_holds_up_no_other_call() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut command = tokio::process::Command::new(mcc_bin());
        command.args(["mcp", "--as", "waiter", "--wait", "3s"]).current_dir(project.root()).env_remove("MCC_HUB");
        let transport = TokioChildProcess::new(command).expect("spawn mcc mcp");
        let server = transport.id().expect("the server's pid");
        let client: Client = ().serve(transport).await.expect("the MCP handshake");
        assert!(children_of(server).is_empty(), "a fresh server has no children: {:?}", children_of(server));

        let started = std::time::Instant::now();
        let mut samples = 0;
        let mut answered_meanwhile = None;
        let waited = {
            let waiting = call(&client, "next", json!({}));
            tokio::pin!(waiting);
            loop {
                tokio::select! {
                    result = &mut waiting => break result,
                    () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                        let children = children_of(server);
                        assert!(children.is_empty(), "a tool call started {children:?}");
                        samples += 1;
                        if answered_meanwhile.is_none() {
                            let refused = call(&client, "progress", json!({"task": "nobody-holds-this", "note": "n"})).await;
                            assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
                            answered_meanwhile = Some(started.elapsed());
                        }
                    }
                }
            }
        };
        let took = started.elapsed();
        assert!(text(&waited).contains("nothing yet, call again"), "{}", text(&waited));
        assert!(took >= std::time::Duration::from_secs(2), "next waited on the hub: {took:?}");
        assert!(samples >= 20, "the server was looked at while next waited: {samples} samples in {took:?}");
        let meanwhile = answered_meanwhile.expect("a call made while next waited");
        assert!(
            meanwhile + std::time::Duration::from_secs(1) < took,
            "progress was answered at {meanwhile:?}, well before next at {took:?}"
        );
        client.cancel().await.unwrap();
    });
}

#[test]
fn an_mcp_server_in_a_sandbox_without_network_works_through_files() {
    if let Err(why) = crate::file_transport::can_unshare_network() {
        println!("SKIPPED an_mcp_server_in_a_sandbox_without_network_works_through_files: {why}");
        eprintln!("SKIPPED an_mcp_server_in_a_sandbox_without_network_works_through_files: {why}");
        return;
    }
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("s-1", &["out/s-1.md"], &[])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, "unshare", &["-n", mcc_bin(), "mcp", "--as", "boxed", "--wait", "1s"]).await;
        let accepted = work_the_queue(&client, &project, 1).await;
        assert_eq!(accepted, ["s-1"]);
        client.cancel().await.unwrap();
    });
}

fn install(project: &Project, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["rules", "install", "--dir", project.root().to_str().unwrap()];
    args.extend_from_slice(extra);
    project.mcc().args(args).run()
}

#[test]
fn rules_install_adds_the_mcc_server_and_keeps_every_other_one() {
    let project = Project::new();
    project.write(".mcp.json", r#"{"mcpServers": {"github": {"command": "gh-mcp"}}, "other": true}"#);
    project.write(".gemini/settings.json", r#"{"theme": "dark", "mcpServers": {"search": {"httpUrl": "http://x"}}}"#);
    project.write(".codex/config.toml", "# ours\nmodel = \"o3\"\n\n[mcp_servers.docs]\ncommand = \"docs\" # keep\n");
    let first = install(&project, &[]);
    assert_eq!(first.code, 0, "{first:?}");
    let claude: Value = serde_json::from_str(&project.read(".mcp.json")).unwrap();
    assert_eq!(claude["mcpServers"]["github"]["command"], "gh-mcp");
    assert_eq!(claude["other"], true);
    assert_eq!(claude["mcpServers"]["mcc"], json!({"command": "mcc", "args": ["mcp"]}));
    let gemini: Value = serde_json::from_str(&project.read(".gemini/settings.json")).unwrap();
    assert_eq!(gemini["theme"], "dark");
    assert_eq!(gemini["mcpServers"]["search"]["httpUrl"], "http://x");
    assert_eq!(gemini["mcpServers"]["mcc"]["command"], "mcc");
    let cursor: Value = serde_json::from_str(&project.read(".cursor/mcp.json")).unwrap();
    assert_eq!(cursor["mcpServers"]["mcc"]["args"], json!(["mcp"]));
    let codex = project.read(".codex/config.toml");
    assert!(codex.starts_with("# ours\nmodel = \"o3\"\n\n[mcp_servers.docs]\ncommand = \"docs\" # keep\n"), "{codex}");
    assert!(codex.contains("[mcp_servers.mcc]\ncommand = \"mcc\"\nargs = [\"mcp\"]"), "{codex}");

    let files = [".mcp.json", ".cursor/mcp.json", ".gemini/settings.json", ".codex/config.toml"];
    let before: Vec<String> = files.iter().map(|f| project.read(f)).collect();
    let again = install(&project, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    let after: Vec<String> = files.iter().map(|f| project.read(f)).collect();
    assert_eq!(before, after, "a second install changes nothing");
    assert!(again.stdout.contains(".mcp.json: mcc MCP server already there"), "{again:?}");
}

#[test]
fn rules_install_refuses_an_mcp_file_it_cannot_read_and_writes_nothing() {
    let project = Project::new();
    project.write(".cursor/mcp.json", "{ \"mcpServers\": { half written");
    std::fs::write(project.path(".mcp.json"), [0xff, 0xfe, 0x00]).unwrap();
    let run = install(&project, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(".mcp.json") && run.stderr.contains("--no-mcp"), "{run:?}");
    assert_eq!(std::fs::read(project.path(".mcp.json")).unwrap(), [0xff, 0xfe, 0x00]);
    assert!(!project.path("AGENTS.md").exists(), "nothing written before the refusal");

    std::fs::remove_file(project.path(".mcp.json")).unwrap();
    let run = install(&project, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(".cursor/mcp.json") && run.stderr.contains("not JSON"), "{run:?}");
    assert_eq!(project.read(".cursor/mcp.json"), "{ \"mcpServers\": { half written");

    let skipped = install(&project, &["--no-mcp"]);
    assert_eq!(skipped.code, 0, "{skipped:?}");
    assert!(project.path("AGENTS.md").exists() && !project.path(".mcp.json").exists());
}

#[test]
fn the_server_rules_install_registers_starts_and_serves_the_tools() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("r-1", &["out/r-1.md"], &[])]);
    assert_eq!(install(&project, &[]).code, 0);
    let config: Value = serde_json::from_str(&project.read(".mcp.json")).unwrap();
    let entry = &config["mcpServers"]["mcc"];
    let bin_dir = std::path::Path::new(mcc_bin()).parent().unwrap().display().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // As Claude Code would: the configured command and args, found on PATH, in the project.
        let mut command = tokio::process::Command::new(entry["command"].as_str().unwrap());
        command
            .args(entry["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()))
            .current_dir(project.root())
            .env("PATH", format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()))
            .env_remove("MCC_WORKER")
            .env_remove("MCC_HUB");
        let client = ().serve(TokioChildProcess::new(command).unwrap()).await.expect("the MCP handshake");
        let worker = client.peer_info().unwrap().instructions.clone().unwrap_or_default();
        assert!(worker.contains("Your worker name is mcp-"), "a chat without MCC_WORKER gets a name: {worker}");
        let first = call(&client, "next", json!({})).await;
        assert!(text(&first).starts_with("task r-1 "), "{}", text(&first));
        assert_eq!(next_call(&first, "done")["task"], "r-1");
        client.cancel().await.unwrap();
    });
}

/// Tool arguments are values, never flags: a note that starts with `-` is
/// stored as written (when each call ran `mcc worker`, `--x` was refused).
#[test]
fn over_mcp_a_note_that_looks_like_a_flag_is_stored_as_written() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, vec![old_task("dash", &[], &[])]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = connect(&project, mcc_bin(), &["mcp", "--as", "D", "--wait", "1s"]).await;
        let first = call(&client, "next", json!({})).await;
        assert_ne!(first.is_error, Some(true), "{}", text(&first));
        let noted = call(&client, "progress", json!({"task": "dash", "note": "--x"})).await;
        assert_ne!(noted.is_error, Some(true), "{}", text(&noted));
        let done = call(&client, "done", json!({"task": "dash", "notes": "--x", "score": 5})).await;
        assert_ne!(done.is_error, Some(true), "{}", text(&done));
        client.cancel().await.unwrap();
    });
    let shown = hub.connect().ask(json!({"type": "show_task", "taskId": "dash"}));
    assert_eq!(shown["task"]["report"]["notes"], "--x", "{shown}");
}

/// `mcc mcp` with raw JSON-RPC lines on its stdin, as a client would write them.
struct Raw {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Raw {
    fn start(project: &Project) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(mcc_bin())
            .args(["mcp", "--as", "raw", "--wait", "1s"])
            .current_dir(project.root())
            .env_remove("MCC_WORKER")
            .env_remove("MCC_HUB")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
            }
        });
        let mut raw = Self { child, stdin, lines };
        raw.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#);
        assert_eq!(raw.answer()["id"], 0);
        raw.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        raw
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn answer(&self) -> Value {
        self.lines.recv_timeout(crate::support::DEADLINE).expect("an answer to every request")
    }

    /// Send `line`, then a ping: two answers come back (in either order:
    /// rmcp answers requests concurrently), or `line` got none.
    fn ask(&mut self, line: &str) -> Value {
        self.send(line);
        self.send(r#"{"jsonrpc":"2.0","id":"ping","method":"ping"}"#);
        let (first, second) = (self.answer(), self.answer());
        let (answer, ping) = if first["id"] == "ping" { (second, first) } else { (first, second) };
        assert_eq!(ping["id"], "ping", "no answer to {line}: {answer}");
        answer
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn over_mcp_every_request_gets_the_standard_json_rpc_answer() {
    let project = Project::new();
    let mut raw = Raw::start(&project);
    let code = |answer: &Value| (answer["id"].clone(), answer["error"]["code"].clone());

    let unknown = raw.ask(r#"{"jsonrpc":"2.0","id":1,"method":"no/such/method","params":{}}"#);
    assert_eq!(code(&unknown), (json!(1), json!(-32601)), "{unknown}");
    let listed = raw.ask(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":["next"]}"#);
    assert_eq!(code(&listed), (json!(2), json!(-32602)), "{listed}");
    let text = raw.ask(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":"all"}"#);
    assert_eq!(code(&text), (json!(3), json!(-32602)), "{text}");
    let unnamed = raw.ask(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":7}}"#);
    assert_eq!(code(&unnamed), (json!(4), json!(-32602)), "{unnamed}");
    // No id can be read from broken JSON: JSON-RPC 2.0 answers it with `"id": null`.
    let broken = raw.ask(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"#);
    assert_eq!(code(&broken), (Value::Null, json!(-32700)), "{broken}");
    // And the server still serves.
    let tools = raw.ask(r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#);
    assert_eq!(tools["result"]["tools"][0]["name"], "next", "{tools}");
}

/// An agent on another machine speaks MCP in a clone joined to a TLS hub:
/// `next` brings the task's read file from the hub, `done` carries the
/// deliverable back, and the hub's check passes on the hub's checkout.
#[test]
fn over_mcp_in_a_joined_clone_the_files_travel_both_ways_and_the_hub_accepts() {
    let project = Project::new();
    project.write(".gitignore", ".mcc/\n");
    project.write("notes/in.md", "the committed text\n");
    git(project.root(), &["init", "-q"]);
    git(project.root(), &["add", "-A"]);
    git(project.root(), &["commit", "-q", "-m", "start"]);
    let hub = Hub::start(project.root(), &["--tls-self-signed"]);
    // The hub's copy moves on after the clone: the task's read file must come from the hub.
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["clone", "-q", &project.root().display().to_string(), "clone"]);
    let clone = dir.path().join("clone");
    project.write("notes/in.md", "the hub's newer text\n");
    let task = json!({
        "id": "far-1",
        "description": "copy notes/in.md into out/far.md",
        "context": {"targetFiles": ["notes/in.md"], "outputFiles": ["out/far.md"], "requirements": []},
        "acceptance": {"criteria": ["copied"], "validation": "grep -q newer out/far.md"},
        "dependencies": [],
    });
    project.write("tasks.json", &serde_json::to_string(&[task]).unwrap());
    let added = project.mcc().args(["tasks", "add", "tasks.json"]).run();
    assert_eq!(added.code, 0, "{added:?}");

    let hub_json: Value = serde_json::from_str(&project.read(".mcc/hub.json")).unwrap();
    let pin = hub_json["tlsFingerprint"].as_str().expect("a TLS hub writes its fingerprint");
    let token = project.read(".mcc/token");
    let joined =
        crate::support::Mcc::new(&clone).args(["join", &hub.url, "--token", token.trim(), "--fingerprint", pin]).run();
    assert_eq!(joined.code, 0, "{joined:?}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut command = tokio::process::Command::new(mcc_bin());
        command
            .args(["mcp", "--as", "far", "--wait", "1s"])
            .current_dir(&clone)
            .env_remove("MCC_WORKER")
            .env_remove("MCC_HUB")
            .env_remove("MCC_TOKEN");
        let client: Client =
            ().serve(TokioChildProcess::new(command).expect("spawn mcc mcp")).await.expect("the MCP handshake");
        let first = call(&client, "next", json!({})).await;
        assert_ne!(first.is_error, Some(true), "{}", text(&first));
        assert!(text(&first).starts_with("task far-1"), "{}", text(&first));
        let brought = std::fs::read_to_string(clone.join("notes/in.md")).unwrap();
        assert_eq!(brought, "the hub's newer text\n", "next brings the hub's copy of the read file");
        let args = next_call(&first, "done");
        std::fs::create_dir_all(clone.join("out")).unwrap();
        std::fs::write(clone.join("out/far.md"), &brought).unwrap();
        let verdict = call(&client, "done", Value::Object(args)).await;
        assert!(text(&verdict).starts_with("accepted far-1."), "{}", text(&verdict));
        client.cancel().await.unwrap();
    });
    assert_eq!(project.read("out/far.md"), "the hub's newer text\n", "the deliverable reached the hub");
    drop(hub);
}
