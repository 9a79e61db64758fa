//! Capabilities and caps in a real hub (issue 24): a worker says what it
//! can do (`--can`) and which model it runs (`--model`); a task that
//! `needs` something goes only to a worker that has it unless the
//! workflow's `assign` says otherwise; `max_workers` keeps a phase narrow
//! whatever the number of workers, and each one held back is told why.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually};

fn hub_with(project: &Project, source: &str) -> Hub {
    project.write("wf.lua", source);
    Hub::start(project.root(), &["--workflow", &project.path("wf.lua").display().to_string()])
}

fn next(ws: &mut Ws, worker: &str) -> Value {
    let reply = ws.ask(json!({"type": "next", "worker": worker, "waitMs": 0}));
    assert_eq!(reply["type"], "offer", "{reply}");
    reply["offer"].clone()
}

fn done(ws: &mut Ws, worker: &str, offer: &Value) -> Value {
    let task = offer["task"]["id"].as_str().unwrap();
    ws.ask(json!({"type": "done", "worker": worker, "taskId": task, "attempt": offer["attempt"], "waitMs": 0}))
}

const NEEDS: &str = r#"
return {
  name = "needs",
  phases = {
    { name = "build", tasks = {
        { id = "port-parser", description = "port the parser to Rust", needs = { "rust" } },
        { id = "write-guide", description = "write the guide", needs = "docs" },
        { id = "port-lexer", description = "port the lexer", needs = { "rust" } },
        { id = "fix-types", description = "fix the Rust types", needs = { "rust" } },
    } },
  },
}
"#;

#[test]
fn a_task_goes_only_to_a_worker_that_has_all_it_needs_and_the_hub_remembers_what_a_worker_can() {
    let project = Project::new();
    let _hub = hub_with(&project, NEEDS);
    // FIFO would hand out port-parser first; a worker that can only write docs gets the guide.
    let docs = project.mcc().args(["worker", "next", "--as", "D", "--can", "docs", "--model", "haiku", "--json"]).run();
    assert_eq!(docs.code, 0, "{docs:?}");
    assert_eq!(docs.json()["offer"]["task"]["id"], "write-guide", "{}", docs.stdout);
    let rust = project.mcc().args(["worker", "next", "--as", "R", "--can", "rust,docs", "--json"]).run();
    assert_eq!(rust.json()["offer"]["task"]["id"], "port-parser", "{}", rust.stdout);
    let done = project.mcc().args(["worker", "done", "port-parser", "--as", "R", "--wait", "0s"]).run();
    // The verdict's next task: R said `--can rust` once, and the hub keeps it.
    assert!(done.stdout.contains("task port-lexer"), "{done:?}");

    // Status shows each worker's kit.
    let status = project.mcc().args(["status"]).run();
    let line = |name: &str| status.stdout.lines().find(|l| l.starts_with(&format!("worker {name}:"))).unwrap_or("");
    assert!(line("D").contains("can docs; model haiku"), "{}", status.stdout);
    assert!(line("R").contains("can rust, docs"), "{}", status.stdout);
    // And so does the run's report.
    let report = project.mcc().args(["report"]).run();
    assert!(report.stdout.contains("(can docs; model haiku)"), "{}", report.stdout);
}

#[test]
fn a_worker_missing_a_capability_is_told_which_and_status_names_work_nobody_here_can_take() {
    let project = Project::new();
    let hub = hub_with(&project, NEEDS);
    let mut ws = hub.connect();
    let took = ws.ask(json!({"type": "next", "worker": "D", "waitMs": 0, "can": ["docs"]}));
    assert_eq!(took["offer"]["task"]["id"], "write-guide", "{took}");
    let verdict = ws.ask(json!({"type": "done", "worker": "D", "taskId": "write-guide", "attempt": took["offer"]["attempt"], "waitMs": 0}));
    assert_eq!(verdict["accepted"], true, "{verdict}");

    let probe = project.mcc().args(["worker", "next", "--as", "D", "--wait", "0s"]).run();
    assert_eq!(probe.code, 3, "{probe:?}");
    assert!(
        probe.stdout.contains("nothing yet: 3 tasks need `rust`, which D does not have (it can: docs)"),
        "{}",
        probe.stdout
    );
    let offer = next(&mut ws, "D");
    assert_eq!(offer["reason"]["kind"], "capability", "{offer}");
    assert_eq!(offer["reason"]["needs"], json!(["rust"]), "{offer}");
    assert_eq!(offer["reason"]["tasks"], json!(["port-parser", "port-lexer", "fix-types"]), "{offer}");
    // A worker that never named a capability is told so.
    let a = project.mcc().args(["worker", "next", "--as", "worker-B", "--wait", "0s"]).run();
    assert!(a.stdout.contains("which worker-B does not have (it named none with --can)"), "{}", a.stdout);

    let status = project.mcc().args(["status"]).run();
    assert!(status.stdout.contains("needs no worker here has: `rust` (3 ready tasks)"), "{}", status.stdout);
}

#[test]
fn a_lua_assign_sees_can_and_model_and_may_hand_a_task_to_a_worker_without_its_needs() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        r#"
return {
  name = "override",
  phases = {
    { name = "p",
      tasks = {
        { id = "design-api", description = "design the API", kind = "design", needs = { "architect" } },
        { id = "unit-tests", description = "write the unit tests", kind = "tests" },
      },
      assign = function(worker, ready, ctx)
        -- The strong model takes design work whatever it said it can do.
        if worker.model == "opus" then
          for _, t in ipairs(ctx.tasks{ state = "ready" }) do
            if t.kind == "design" then return t end
          end
        end
        for _, t in ipairs(ready) do
          if t.kind ~= "design" or #worker.can > 0 then return t end
        end
      end },
  },
}
"#,
    );
    let mut ws = hub.connect();
    // A cheap model lacking `architect` is never shown design-api, nor given it.
    let cheap = ws.ask(json!({"type": "next", "worker": "cheap", "waitMs": 0, "model": "haiku", "can": ["tests"]}));
    assert_eq!(cheap["offer"]["task"]["id"], "unit-tests", "{cheap}");
    let nothing = next(&mut ws, "other");
    assert_eq!(nothing["reason"]["kind"], "capability", "{nothing}");
    // The strong model lacks the need too; its assign overrides the default.
    let strong = ws.ask(json!({"type": "next", "worker": "strong", "waitMs": 0, "model": "opus"}));
    assert_eq!(strong["offer"]["task"]["id"], "design-api", "{strong}");
    let snap = ws.ask(json!({"type": "snapshot"}))["snapshot"].clone();
    assert_eq!(snap["problems"], json!([]), "{snap}");
}

const CAPPED: &str = r#"
return {
  name = "capped",
  max_workers = { review = 1 },
  phases = {
    { name = "build", max_workers = 2, split = function(ctx)
        local out = {}
        for i = 1, 8 do out[#out + 1] = { id = "b" .. i, description = "build " .. i } end
        out[#out + 1] = { id = "r1", description = "review one", kind = "review" }
        out[#out + 1] = { id = "r2", description = "review two", kind = "review" }
        return out
      end },
  },
}
"#;

#[test]
fn a_phase_capped_at_two_holds_the_third_worker_back_with_the_reason_and_lets_it_in_when_one_is_done() {
    let project = Project::new();
    let hub =
        hub_with(&project, CAPPED.replace("for i = 1, 8", "for i = 1, 3").replace("kind = \"review\"", "").as_str());
    let mut ws = hub.connect();
    let first = next(&mut ws, "w1");
    let second = next(&mut ws, "w2");
    assert_eq!((first["task"]["id"].as_str(), second["task"]["id"].as_str()), (Some("b1"), Some("b2")));
    let held = project.mcc().args(["worker", "next", "--as", "w3", "--wait", "0s"]).run();
    assert_eq!(held.code, 3, "{held:?}");
    assert!(
        held.stdout.contains("nothing yet: phase build allows 2 workers at once (2 busy: b1 (w1), b2 (w2))"),
        "{}",
        held.stdout
    );
    assert_eq!(next(&mut ws, "w3")["reason"]["kind"], "cap");

    // w3 waits. w1's `done` frees a slot and takes the next task in the same answer (b3);
    // w2 leaving puts b2 back and frees a slot again: the waiter gets b2 at once.
    let mut waiter = hub.connect();
    waiter.send(json!({"type": "next", "worker": "w3", "waitMs": 120_000}));
    eventually("w3 waits", || {
        let snap = hub.connect().ask(json!({"type": "snapshot"}));
        snap["snapshot"]["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|x| x["name"] == "w3" && x["waiting"] == true))
    });
    let verdict = done(&mut ws, "w1", &first);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(verdict["next"]["task"]["id"], "b3", "{verdict}");
    let left = ws.ask(json!({"type": "leave", "worker": "w2"}));
    assert_eq!(left["type"], "ack", "{left}");
    let got = waiter.recv_within(Duration::from_mins(1)).expect("the waiter is answered when a slot frees");
    assert_eq!(got["offer"]["task"]["id"], "b2", "{got}");
}

#[test]
fn a_task_type_capped_at_one_goes_to_one_worker_at_a_time() {
    let project = Project::new();
    let hub =
        hub_with(&project, CAPPED.replace("for i = 1, 8", "for i = 1, 0").replace("max_workers = 2, ", "").as_str());
    let mut ws = hub.connect();
    assert_eq!(next(&mut ws, "w1")["task"]["id"], "r1");
    let held = next(&mut ws, "w2");
    assert_eq!(held["reason"]["kind"], "cap", "{held}");
    assert!(
        held["message"].as_str().unwrap().contains("tasks of type review allow 1 worker at once (1 busy: r1 (w1))"),
        "{held}"
    );
}

/// In-flight tasks after each event of the run, from the store's event log.
fn most_in_flight(project: &Project) -> (i64, usize) {
    let db = rusqlite::Connection::open(project.path(".mcc/state.db")).unwrap();
    let mut stmt = db.prepare("SELECT kind FROM events ORDER BY id").unwrap();
    let kinds: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let (mut out, mut most, mut assigned) = (0i64, 0i64, 0usize);
    for kind in kinds {
        match kind.as_str() {
            "assigned" => {
                out += 1;
                assigned += 1;
            }
            "accepted" | "rejected" | "failed" | "failed_attempt" | "released" | "expired" | "cancelled"
            | "blocked" => {
                out -= 1;
            }
            _ => {}
        }
        most = most.max(out);
    }
    (most, assigned)
}

#[test]
fn a_phase_with_max_workers_2_never_has_3_tasks_out_at_once_under_5_workers() {
    let project = Project::new();
    project.write("wf.lua", &CAPPED.replace("max_workers = { review = 1 },", ""));
    // Each task takes a moment, so the five workers all wait for work at once.
    let run = project.mcc().args(["run", "wf.lua", "--port", "0", "--spawn", "5", "--", "sh", "-c", "sleep 0.2"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    let (most, assigned) = most_in_flight(&project);
    assert_eq!(assigned, 10, "every task was handed out once");
    assert_eq!(most, 2, "the cap held and was used: at most 2 tasks out at once, and 2 at some point");
}

#[test]
fn the_routing_recipe_sends_tests_to_the_cheap_model_and_design_to_the_strong_one() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        r#"
local routing = require("routing")
return {
  name = "routed",
  phases = { {
    name = "build",
    tasks = {
      { id = "api", description = "Design the API", kind = "design" },
      { id = "api-tests", description = "Write the API's tests", kind = "tests" },
      { id = "cli-tests", description = "Write the CLI's tests", kind = "tests" },
    },
    assign = routing.by_model { design = { "opus" }, tests = { "haiku" } },
  } },
}
"#,
    );
    let mut ws = hub.connect();
    let say = |ws: &mut Ws, worker: &str, model: &str| {
        ws.ask(json!({"type": "next", "worker": worker, "waitMs": 0, "model": model}))["offer"].clone()
    };
    // A worker of the model a type is routed to is here: that type waits for it.
    let strong = say(&mut ws, "strong", "opus");
    assert_eq!(strong["task"]["id"], "api", "{strong}");
    let cheap = say(&mut ws, "cheap", "haiku");
    assert_eq!(cheap["task"]["id"], "api-tests", "{cheap}");
    let other = say(&mut ws, "other", "opus");
    assert_eq!(other["type"], "nothing_yet", "cli-tests waits for a haiku worker: {other}");
    assert_eq!(other["reason"]["kind"], "workflow", "{other}");
    let verdict = done(&mut ws, "cheap", &cheap);
    assert_eq!(verdict["next"]["task"]["id"], "cli-tests", "{verdict}");
}

#[test]
fn mcc_check_refuses_misspelt_needs_and_max_workers_with_what_they_meant() {
    let project = Project::new();
    project.write(
        "wf.lua",
        r#"return {
  name = "typos",
  max_worker = { review = 1 },
  phases = { {
    name = "p",
    max_wokers = 2,
    tasks = { { id = "a", description = "a", need = "rust" } },
  } },
}"#,
    );
    let run = project.mcc().args(["check", "wf.lua"]).run();
    assert_eq!(run.code, 1, "{run:?}");
    for said in [
        "wf.lua:3: the workflow has an unknown field `max_worker` (did you mean `max_workers`?)",
        "wf.lua:6: phase \"p\" has an unknown field `max_wokers` (did you mean `max_workers`?)",
        "unknown field `need` (did you mean `needs`?)",
    ] {
        assert!(run.stderr.contains(said), "{said} missing from {}", run.stderr);
    }
    project.write(
        "wf.lua",
        r#"return { name = "bad", max_workers = 2, phases = { { name = "p", max_workers = 0, tasks = {} } } }"#,
    );
    let run = project.mcc().args(["check", "wf.lua"]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("`max_workers` of the workflow is a table by task type"), "{}", run.stderr);
    assert!(run.stderr.contains("`max_workers` of phase \"p\" must be a whole number of 1 or more"), "{}", run.stderr);
}

#[test]
fn a_headless_worker_and_an_mcp_server_say_what_their_worker_can_do() {
    let project = Project::new();
    let hub = hub_with(&project, NEEDS);
    let run =
        project.mcc().args(["worker", "run", "--as", "bot", "--can", "rust", "--max-tasks", "1", "--", "true"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("port-parser"), "the oldest task it has the needs of: {run:?}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = runtime.block_on(async {
        use rmcp::ServiceExt;
        let mut command = tokio::process::Command::new(crate::support::mcc_bin());
        command
            .args(["mcp", "--as", "scribe", "--can", "docs", "--model", "haiku", "--wait", "1s"])
            .current_dir(project.root())
            .env_remove("MCC_WORKER")
            .env_remove("MCC_HUB");
        let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn mcc mcp");
        let client = ().serve(transport).await.expect("the MCP handshake");
        let result = client
            .call_tool(
                rmcp::model::CallToolRequestParams::new("next".to_owned()).with_arguments(serde_json::Map::new()),
            )
            .await
            .expect("tools/call");
        client.cancel().await.unwrap();
        result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
    });
    assert!(text.contains("task write-guide"), "{text}");
    let snap = hub.connect().ask(json!({"type": "snapshot"}))["snapshot"].clone();
    let scribe = snap["workers"].as_array().unwrap().iter().find(|w| w["name"] == "scribe").cloned().unwrap();
    assert_eq!((scribe["can"].clone(), scribe["model"].clone()), (json!(["docs"]), json!("haiku")), "{snap}");
}
