//! Every client call has a deadline (docs/security.md, "Client deadlines"):
//! a hub that is stopped (SIGSTOP, as Ctrl-Z does) still accepts TCP
//! connections into the kernel's backlog and never answers. Each client
//! gives up within `--timeout`, exits with the error code and names the
//! address it waited on; the MCP server answers the tool call with an error.
//! And a client that is refused says why: a message over the hub's frame
//! limit, or a command the file transport does not carry.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;

use crate::support::{Hub, Project, Run, mcc_bin};

/// Longer than any deadline below plus its wait: past it, the client hung.
const HUNG: Duration = Duration::from_mins(1);

/// The hub's process stopped from here to the end of the test (SIGCONT on drop,
/// so the hub can then be stopped politely).
struct Stopped<'a>(&'a Hub);

impl<'a> Stopped<'a> {
    fn stop(hub: &'a Hub) -> Self {
        let sent = Command::new("kill").args(["-STOP", &hub.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "SIGSTOP the hub");
        Self(hub)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.child.id().to_string()]).status();
    }
}

/// Run `mcc ARGS` in the project; a run still going after [`HUNG`] is killed and fails the test.
fn mcc_within(project: &Project, args: &[&str]) -> Run {
    let child = Command::new(mcc_bin())
        .args(args)
        .current_dir(project.root())
        .env_remove("MCC_WORKER")
        .env_remove("MCC_HUB")
        .env_remove("MCC_TIMEOUT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mcc");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(HUNG) else {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("`mcc {}` still waited on a stopped hub after {HUNG:?}", args.join(" "));
    };
    let out = out.expect("mcc ran");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_stopped_hub_makes_status_and_worker_next_give_up_and_name_its_address() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let _stopped = Stopped::stop(&hub);

    let status = mcc_within(&project, &["status", "--timeout", "500ms"]);
    assert_eq!(status.code, 1, "the documented error code: {status:?}");
    assert!(status.stderr.contains(&format!("the hub at {} did not answer within 500ms", hub.url)), "{status:?}");
    assert!(status.stderr.contains("`mcc status`") && status.stderr.contains("--timeout"), "{status:?}");
    assert!(!status.stdout.contains("no hub running"), "a stopped hub is not a missing one: {status:?}");

    let next = mcc_within(&project, &["worker", "next", "--as", "w", "--wait", "100ms", "--timeout", "500ms"]);
    assert_eq!(next.code, 3, "a worker tries again later: {next:?}");
    assert!(next.stdout.contains(&format!("the hub at {} did not answer within", hub.url)), "{next:?}");

    // The file transport has the same deadline (the wait plus --timeout); its address is the requests folder.
    let filed = mcc_within(
        &project,
        &["worker", "next", "--as", "w", "--wait", "100ms", "--timeout", "500ms", "--transport", "file"],
    );
    assert_eq!(filed.code, 3, "{filed:?}");
    let requests = project.path(".mcc/requests");
    assert!(
        filed.stdout.contains(&format!("the hub at {} did not answer within 600ms", requests.display())),
        "{filed:?}"
    );

    // The deadline also comes from the environment.
    let from_env = Command::new(mcc_bin())
        .args(["status"])
        .current_dir(project.root())
        .env("MCC_TIMEOUT", "500ms")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&from_env.stderr);
    assert_eq!(from_env.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not answer within 500ms"), "{stderr}");
}

#[test]
fn a_stopped_hub_makes_an_mcp_tool_call_give_up_naming_its_address() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let _stopped = Stopped::stop(&hub);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut command = tokio::process::Command::new(mcc_bin());
        command
            .args(["mcp", "--as", "w", "--wait", "100ms", "--timeout", "500ms"])
            .current_dir(project.root())
            .env_remove("MCC_WORKER")
            .env_remove("MCC_HUB")
            .env_remove("MCC_TIMEOUT");
        let client = ().serve(TokioChildProcess::new(command).unwrap()).await.expect("the MCP handshake");
        for tool in ["next", "status"] {
            let call = client.call_tool(CallToolRequestParams::new(tool));
            let result = tokio::time::timeout(HUNG, call)
                .await
                .unwrap_or_else(|_| panic!("the {tool} call got no answer from a server whose hub is stopped"))
                .expect("tools/call");
            let text: String = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
            // A worker's verb is told to make the same call again later (exit 3); status is an error.
            assert_eq!(result.is_error == Some(true), tool == "status", "{tool}: {text}");
            assert!(text.contains(&format!("the hub at {} did not answer", hub.url)), "{tool}: {text}");
        }
        client.cancel().await.unwrap();
    });
}

#[test]
fn a_task_over_the_frame_limit_is_refused_naming_the_limit_its_size_and_the_flag() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    let task = serde_json::json!([{"id": "huge", "description": "x".repeat(9_000_000)}]);
    project.write("huge.json", &task.to_string());
    let added = mcc_within(&project, &["tasks", "add", "huge.json"]);
    assert_eq!(added.code, 1, "{added:?}");
    // The hub names the size it was sent (the frame: the task and its envelope).
    let numbers: Vec<u64> = added.stderr.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(numbers.iter().any(|&n| n > 9_000_000 && n < 9_100_000), "the size: {}", added.stderr);
    assert!(added.stderr.contains("1048576 bytes"), "the limit: {}", added.stderr);
    assert!(added.stderr.contains("mcc hub --max-frame-bytes"), "the flag: {}", added.stderr);
}

#[test]
fn the_file_transport_refuses_a_command_naming_only_those_it_carries() {
    let project = Project::new();
    let _hub = Hub::start(project.root(), &[]);
    let listed = mcc_within(&project, &["tasks", "cancel", "t-1", "--transport", "file"]);
    assert_eq!(listed.code, 1, "{listed:?}");
    assert!(listed.stderr.contains("next, done, block, fail, progress, leave"), "{listed:?}");
    // `mcc status` subscribes, which a file cannot carry.
    assert!(!listed.stderr.contains("status"), "{listed:?}");
}
