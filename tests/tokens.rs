//! Scoped tokens (docs/security.md, "Token scopes"): what a worker, viewer
//! or engineer token made by `mcc token add` may do against a real hub, with
//! the real `mcc` binary using them from a folder of their own, and how
//! revocation and expiry cut them off.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEADLINE, Hub, Mcc, Project, Ws, eventually, old_task};

/// `mcc token add ARGS --json` in the hub's project: (id, secret).
fn add_token(project: &Project, args: &[&str]) -> (String, String) {
    let added = project.mcc().args(["token", "add"]).args(args).args(["--json"]).run();
    assert_eq!(added.code, 0, "{added:?}");
    let printed = added.json();
    (printed["id"].as_str().unwrap().to_owned(), printed["token"].as_str().unwrap().to_owned())
}

/// A folder where `mcc` finds the hub through its own `.mcc/` and presents
/// `token` as its token, as a clone joined to the hub would.
fn holder_of(hub: &Hub, token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".mcc")).unwrap();
    std::fs::copy(hub.root.join(".mcc/hub.json"), dir.path().join(".mcc/hub.json")).unwrap();
    std::fs::write(dir.path().join(".mcc/token"), token).unwrap();
    dir
}

fn mcc_in(dir: &Path) -> Mcc {
    Mcc::new(dir).env("MCC_TRANSPORT", "socket")
}

/// The handshake's refusal (status and body), or `None` when it passed.
fn refusal(url: &str, token: &str) -> Option<String> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tungstenite::connect(request) {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(format!(
            "{} {}",
            response.status(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
        )),
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    }
}

fn error_of(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["error"].as_str().unwrap()
}

#[test]
fn a_worker_token_for_a_works_as_a_and_cannot_act_as_b_add_answer_cancel_or_load_a_workflow() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut engineer = hub.connect();
    let added = engineer
        .ask(json!({"type":"add_tasks","tasks":[old_task("t1", &["out/1"], &[]), old_task("t2", &["out/2"], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let (_, secret) = add_token(&project, &["--worker", "worker-A"]);
    let clone = holder_of(&hub, &secret);

    let next = mcc_in(clone.path()).args(["worker", "next", "--as", "worker-A", "--wait", "0s"]).run();
    assert_eq!(next.code, 0, "worker-A gets its task: {next:?}");
    assert!(next.stdout.contains("t1"), "{next:?}");
    // It reads the task its worker holds, and no other.
    let own = mcc_in(clone.path()).args(["tasks", "show", "t1", "--json"]).run();
    assert_eq!(own.code, 0, "{own:?}");
    assert_eq!(own.json()["holder"], "worker-A", "{own:?}");
    let other = mcc_in(clone.path()).args(["tasks", "show", "t2"]).run();
    assert_eq!(other.code, 1, "{other:?}");
    assert!(other.stderr.contains("task t2 is not held by worker worker-A"), "{other:?}");
    assert!(!other.stderr.contains("do t2"), "nothing of t2 is shown: {other:?}");
    let as_b = mcc_in(clone.path()).args(["worker", "next", "--as", "worker-B", "--wait", "0s"]).run();
    assert_eq!(as_b.code, 1, "{as_b:?}");
    assert!(as_b.stderr.contains("acts only as worker worker-A, not as worker-B"), "{as_b:?}");
    assert!(as_b.stderr.contains("mcc token add --worker worker-B"), "names the command that gives one: {as_b:?}");
    let add = mcc_in(clone.path()).args(["tasks", "add", "--id", "t2", "--description", "more"]).run();
    assert_eq!(add.code, 1, "{add:?}");
    assert!(add.stderr.contains("acts only as worker worker-A, with next, done"), "{add:?}");
    assert!(add.stderr.contains("mcc token add --engineer"), "{add:?}");

    let mut worker = Ws::connect_with_token(&hub.url, &secret);
    for msg in [
        json!({"type":"answer","taskId":"t1","text":"yes"}),
        json!({"type":"cancel","taskId":"t1"}),
        json!({"type":"retry","taskId":"t1"}),
        json!({"type":"load_workflow","path":"workflows/any.lua"}),
        json!({"type":"add_tasks","tasks":[old_task("t3", &[], &[])]}),
        json!({"type":"token_add","scope":"engineer"}),
        json!({"type":"done","worker":"worker-B","taskId":"t1","attempt":1}),
        json!({"type":"register","role":"coordinator"}),
    ] {
        let reply = worker.ask(msg.clone());
        assert!(error_of(&reply).contains("acts only as worker worker-A"), "{msg}: {reply}");
    }
    // What a refusal leaves: t1 is still worker-A's, nothing else was added.
    let status = mcc_in(project.root()).args(["tasks", "list", "--json"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    let tasks = status.json().as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert_eq!(tasks[0]["holder"], "worker-A", "{tasks:?}");
    let done = worker.ask(json!({"type":"done","worker":"worker-A","taskId":"t1","attempt":1}));
    assert_eq!(done["type"], "verdict", "worker-A reports its own task: {done}");
}

#[test]
fn a_viewer_token_reads_status_lists_and_subscriptions_but_runs_no_worker_verb() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut engineer = hub.connect();
    engineer.ask(json!({"type":"add_tasks","tasks":[old_task("t1", &[], &[])]}));
    let (_, secret) = add_token(&project, &["--viewer"]);
    let clone = holder_of(&hub, &secret);

    let status = mcc_in(clone.path()).args(["status", "--json"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    let list = mcc_in(clone.path()).args(["tasks", "list"]).run();
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains("t1"), "{list:?}");
    let next = mcc_in(clone.path()).args(["worker", "next", "--as", "w", "--wait", "0s"]).run();
    assert_eq!(next.code, 1, "{next:?}");
    assert!(next.stderr.contains("it only reads (status, the task list"), "{next:?}");
    assert!(next.stderr.contains("mcc token add --worker NAME"), "{next:?}");

    let mut viewer = Ws::connect_with_token(&hub.url, &secret);
    assert_eq!(viewer.ask(json!({"type":"subscribe"}))["type"], "summary");
    assert_eq!(viewer.ask(json!({"type":"tasks_page"}))["type"], "tasks_page");
    assert_eq!(viewer.ask(json!({"type":"show_task","taskId":"t1"}))["type"], "task_info");
    for msg in [
        json!({"type":"next","worker":"w"}),
        json!({"type":"done","worker":"w","taskId":"t1"}),
        json!({"type":"block","worker":"w","taskId":"t1","question":"?"}),
        json!({"type":"fail","worker":"w","taskId":"t1","reason":"no"}),
        json!({"type":"progress","worker":"w","taskId":"t1","note":"n"}),
        json!({"type":"leave","worker":"w"}),
        json!({"type":"register","role":"worker","workerId":"w"}),
        json!({"type":"request_task"}),
        json!({"type":"cancel","taskId":"t1"}),
        json!({"type":"token_list"}),
    ] {
        viewer.send(msg.clone());
        let (reply, _) = viewer.until("error");
        assert!(error_of(&reply).contains("it only reads"), "{msg}: {reply}");
    }
}

#[test]
fn a_revoked_token_is_refused_at_once_and_its_open_connections_are_cut() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (worker_id, worker_secret) = add_token(&project, &["--worker", "worker-A"]);
    let (viewer_id, viewer_secret) = add_token(&project, &["--viewer"]);
    // A worker waiting for work, and a viewer following the hub: both hold their connection open.
    let mut waiting = Ws::connect_with_token(&hub.url, &worker_secret);
    waiting.send(json!({"type":"next","worker":"worker-A","waitMs":60_000}));
    let mut following = Ws::connect_with_token(&hub.url, &viewer_secret);
    assert_eq!(following.ask(json!({"type":"subscribe"}))["type"], "summary");

    let started = Instant::now();
    let revoked = project.mcc().args(["token", "revoke", &worker_id]).run();
    assert_eq!(revoked.code, 0, "{revoked:?}");
    assert!(revoked.stdout.contains(&format!("token {worker_id} is revoked")), "{revoked:?}");
    let cut = waiting.recv();
    assert_eq!(cut["code"], "token_refused", "{cut}");
    assert!(error_of(&cut).contains("was revoked"), "{cut}");
    assert!(waiting.recv_within(DEADLINE).is_none(), "the connection is closed");
    assert!(started.elapsed() < Duration::from_secs(30), "cut at once, not when its 60 s wait ended");
    let again = refusal(&hub.url, &worker_secret).expect("a revoked token is refused at the handshake");
    assert!(again.starts_with("403"), "{again}");

    // The viewer's token is another: its subscription goes on, until it is revoked too.
    let revoked = project.mcc().args(["token", "revoke", &viewer_id, "--json"]).run();
    assert_eq!(revoked.code, 0, "{revoked:?}");
    let (cut, _) = following.until("error");
    assert_eq!(cut["code"], "token_refused", "{cut}");
    let unknown = project.mcc().args(["token", "revoke", &viewer_id]).run();
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("mcc token list"), "{unknown:?}");
}

#[test]
fn an_expired_token_is_refused_also_on_a_connection_opened_before_it_expired() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let before = Instant::now();
    let (id, secret) = add_token(&project, &["--worker", "worker-A", "--expires", "3s"]);
    let mut open = Ws::connect_with_token(&hub.url, &secret);
    let first = open.ask(json!({"type":"next","worker":"worker-A"}));
    assert_eq!(first["type"], "offer", "before it expires, it works: {first}");
    assert!(before.elapsed() < Duration::from_secs(3), "the machine was too slow to see the token alive");
    // Waiting for the clock to pass the expiry: that is the event this test is about.
    eventually("the token's lifetime passes", || before.elapsed() > Duration::from_millis(3_500));
    let refused = open.ask(json!({"type":"next","worker":"worker-A"}));
    assert_eq!(refused["code"], "token_refused", "{refused}");
    assert!(error_of(&refused).contains(&format!("token {id} expired at")), "{refused}");
    assert!(error_of(&refused).contains("mcc token add"), "{refused}");
    let handshake = refusal(&hub.url, &secret).expect("an expired token is refused at the handshake");
    assert!(handshake.contains("expired at"), "{handshake}");
    let list = project.mcc().args(["token", "list", "--json"]).run();
    assert_eq!(list.json()["tokens"][0]["expired"], true, "{list:?}");
}

#[test]
fn token_list_shows_every_token_with_its_scope_and_times_and_never_a_secret() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let secrets: Vec<(String, String)> =
        [&["--worker", "worker-A", "--expires", "7d"][..], &["--viewer"], &["--engineer"]]
            .iter()
            .map(|args| add_token(&project, args))
            .collect();
    let mut used = Ws::connect_with_token(&hub.url, &secrets[1].1);
    assert_eq!(used.ask(json!({"type":"snapshot"}))["type"], "snapshot");

    let list = project.mcc().args(["token", "list", "--json"]).run();
    assert_eq!(list.code, 0, "{list:?}");
    for (_, secret) in &secrets {
        assert!(!list.stdout.contains(secret.as_str()), "a secret is listed: {list:?}");
    }
    let tokens = list.json()["tokens"].as_array().cloned().unwrap();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    let ids: Vec<&str> = tokens.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, secrets.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>());
    assert_eq!(tokens[0]["scope"], "worker");
    assert_eq!(tokens[0]["worker"], "worker-A");
    assert!(tokens[0]["expires"].is_string() && tokens[0]["lastUsed"].is_null(), "{tokens:?}");
    assert_eq!(tokens[1]["scope"], "viewer");
    assert!(tokens[1]["lastUsed"].is_string(), "the viewer's token was used: {tokens:?}");
    assert!(tokens[2]["expires"].is_null() && tokens[2]["created"].is_string(), "{tokens:?}");
    for token in &tokens {
        assert!(token.get("token").is_none() && token.get("hash").is_none(), "{token}");
    }
    let text = project.mcc().args(["token", "list"]).run();
    assert!(text.stdout.contains("worker worker-A") && !text.stdout.contains(&secrets[0].1), "{text:?}");
    // Printed once, alone on its line, without --json.
    let added = project.mcc().args(["token", "add", "--viewer"]).run();
    let first = added.stdout.lines().next().unwrap();
    assert!(first.len() == 64 && first.bytes().all(|b| b.is_ascii_hexdigit()), "{added:?}");
}

#[test]
fn tokens_survive_a_hub_restart_and_an_engineer_token_may_what_the_project_token_may() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let (_, viewer) = add_token(&project, &["--viewer"]);
    let (_, engineer) = add_token(&project, &["--engineer"]);
    hub.terminate();
    let hub = Hub::start(project.root(), &[]);
    let mut reading = Ws::connect_with_token(&hub.url, &viewer);
    assert_eq!(reading.ask(json!({"type":"subscribe"}))["type"], "summary");
    let mut engineering = Ws::connect_with_token(&hub.url, &engineer);
    let added = engineering.ask(json!({"type":"add_tasks","tasks":[old_task("t1", &[], &[])]}));
    assert_eq!(added["type"], "tasks_added", "{added}");
    let made = engineering.ask(json!({"type":"token_add","scope":"viewer"}));
    assert_eq!(made["type"], "token_added", "an engineer token makes tokens: {made}");
    let listed = engineering.ask(json!({"type":"token_list"}));
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(3), "{listed}");
}

#[test]
fn a_connection_without_a_token_cannot_make_or_list_tokens() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut stranger = hub.connect_anonymous();
    for msg in [
        json!({"type":"token_add","scope":"engineer"}),
        json!({"type":"token_list"}),
        json!({"type":"token_revoke","id":"tok-1"}),
    ] {
        let reply = stranger.ask(msg.clone());
        assert!(error_of(&reply).contains("needs the project's access token"), "{msg}: {reply}");
    }
}

#[test]
fn worker_and_viewer_tokens_share_the_tokenless_slots_and_an_engineer_token_keeps_its_quarter() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--max-connections", "4"]);
    let (_, viewer) = add_token(&project, &["--viewer"]);
    let (_, engineer) = add_token(&project, &["--engineer"]);
    // Three of the four slots may go to connections that are not the engineer's.
    let _held: Vec<Ws> = (0..3).map(|_| Ws::connect_with_token(&hub.url, &viewer)).collect();
    let over = refusal(&hub.url, &viewer).expect("the share is used up");
    assert!(over.starts_with("503"), "{over}");
    let mut engineering = Ws::connect_with_token(&hub.url, &engineer);
    assert_eq!(engineering.ask(json!({"type":"status"}))["type"], "status_response");
}

/// `mcc mcp ARGS` started in `dir`, as an agent's MCP config starts it; the text of each tool call.
async fn mcp_calls(dir: &Path, args: &[&str], calls: &[&str]) -> Vec<(bool, String)> {
    use rmcp::ServiceExt;
    let mut command = tokio::process::Command::new(crate::support::mcc_bin());
    command.arg("mcp").args(args).current_dir(dir).env_remove("MCC_WORKER").env_remove("MCC_HUB");
    let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn mcc mcp");
    let client = ().serve(transport).await.expect("the MCP handshake");
    let mut results = Vec::new();
    for tool in calls {
        let request =
            rmcp::model::CallToolRequestParams::new((*tool).to_owned()).with_arguments(serde_json::Map::new());
        let result = client.call_tool(request).await.expect("tools/call");
        let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>();
        results.push((result.is_error == Some(true), text.join("\n")));
    }
    client.cancel().await.unwrap();
    results
}

#[test]
fn an_mcp_server_with_a_worker_token_works_as_its_worker_and_no_other() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    hub.connect().ask(json!({"type":"add_tasks","tasks":[old_task("m1", &["out/m1"], &[])]}));
    let (_, secret) = add_token(&project, &["--worker", "worker-A"]);
    let clone = holder_of(&hub, &secret);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let own = runtime.block_on(mcp_calls(clone.path(), &["--as", "worker-A", "--wait", "1s"], &["next", "status"]));
    assert!(!own[0].0 && own[0].1.contains("m1"), "{own:?}");
    assert!(own[1].0 && own[1].1.contains("acts only as worker worker-A"), "status is not a worker's: {own:?}");
    let other = runtime.block_on(mcp_calls(clone.path(), &["--as", "worker-B", "--wait", "1s"], &["next"]));
    assert!(other[0].0 && other[0].1.contains("not as worker-B"), "{other:?}");
}
