//! Lua workflows in a real hub: phases, decisions, hooks, errors, reload,
//! and `mcc check`.

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually};

fn next(ws: &mut Ws, worker: &str) -> Value {
    let reply = ws.ask(json!({"type":"next","worker":worker,"waitMs":0}));
    assert_eq!(reply["type"], "offer", "{reply}");
    reply["offer"].clone()
}

fn done(ws: &mut Ws, worker: &str, offer: &Value, deliverables: &[&str]) -> Value {
    let task = offer["task"]["id"].as_str().unwrap();
    ws.ask(json!({"type":"done","worker":worker,"taskId":task,"attempt":offer["attempt"],"deliverables":deliverables,"waitMs":0}))
}

fn snapshot(ws: &mut Ws) -> Value {
    ws.ask(json!({"type":"snapshot"}))["snapshot"].clone()
}

fn problems(ws: &mut Ws) -> String {
    snapshot(ws)["problems"].to_string()
}

fn hub_with(project: &Project, file: &str, source: &str) -> Hub {
    project.write(file, source);
    Hub::start(project.root(), &["--workflow", &project.path(file).display().to_string()])
}

/// Take and finish tasks as `worker` until the hub says all done; returns the ids in order.
fn work_through(ws: &mut Ws, worker: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let offer = next(ws, worker);
        match offer["type"].as_str().unwrap() {
            "all_done" => return ids,
            "task" => {
                ids.push(offer["task"]["id"].as_str().unwrap().to_owned());
                let verdict = done(ws, worker, &offer, &[]);
                assert_eq!(verdict["accepted"], true, "{verdict}");
            }
            other => panic!("unexpected offer {other}: {offer}"),
        }
    }
}

const TWO_PHASES: &str = r#"
return {
  name = "two-phases",
  phases = {
    { name = "draft", tasks = { { id = "a", description = "draft a" }, { id = "b", description = "draft b" } } },
    { name = "review", split = function(ctx, previous)
        local out = {}
        for _, t in ipairs(previous.tasks) do
          out[#out + 1] = { id = "review-" .. t.id, description = "review " .. t.id, after = { t.id } }
        end
        return out
      end },
  },
}
"#;

#[test]
fn a_workflow_runs_its_phases_in_order_and_then_tells_workers_all_done() {
    let project = Project::new();
    let hub = hub_with(&project, "wf.lua", TWO_PHASES);
    let mut ws = hub.connect();
    let first = next(&mut ws, "w1");
    assert_eq!(first["phase"], "draft", "{first}");
    let verdict = done(&mut ws, "w1", &first, &[]);
    assert_eq!(verdict["accepted"], true);
    let rest = work_through(&mut ws, "w1");
    assert_eq!(rest, ["b", "review-a", "review-b"]);
    let snap = snapshot(&mut ws);
    assert_eq!(snap["policy"], "two-phases");
    assert_eq!(snap["finished"], true);
    let review = snap["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "review-a").unwrap().clone();
    assert_eq!(review["dependencies"], json!(["a"]));
    assert_eq!(review["phase"], "review");
}

/// `previous`'s task lists are made when first read: a split that reads
/// them only after waiting on a command still gets them whole.
#[test]
fn a_split_reads_the_earlier_phase_after_waiting_on_a_command() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "after-wait", phases = {
  { name = "draft", tasks = { { id = "a", description = "a" }, { id = "b", description = "b" } } },
  { name = "review", split = function(ctx, previous)
      local r = ctx.run("echo waited")
      local ids = {}
      for _, t in ipairs(previous.draft.tasks) do ids[#ids + 1] = t.id .. "=" .. t.state end
      return { { id = "review", description = table.concat(ids, ",") .. " " .. #previous.tasks .. " " .. r.stdout } }
    end },
} }"#,
    );
    let mut ws = hub.connect();
    for id in ["a", "b"] {
        let offer = next(&mut ws, "w1");
        assert_eq!(offer["task"]["id"], id, "{offer}");
        assert_eq!(done(&mut ws, "w1", &offer, &[])["accepted"], true);
    }
    // The split waits on its command: ask with a wait, as a worker would.
    let review = ws.ask(json!({"type":"next","worker":"w1","waitMs":20_000}));
    assert_eq!(review["offer"]["task"]["id"], "review", "{review}\n{}", hub.log_text());
    let review = ws.ask(json!({"type":"show_task","taskId":"review"}));
    assert_eq!(review["task"]["description"], "a=accepted,b=accepted 2 waited\n", "{review}");
}

#[test]
fn accept_rejects_with_reasons_that_reach_the_worker() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"
return {
  name = "strict",
  phases = { {
    name = "write",
    tasks = { { id = "essay", description = "write an essay", write = "essay.md" } },
    accept = function(task, report, ctx)
      if #report.deliverables == 0 then return false, { "no deliverable", "write essay.md" } end
      if ctx.word_count(report.deliverables[1]) < 3 then return false, "too short: " .. task.id end
      return true
    end,
  } },
}
"#,
    );
    let mut ws = hub.connect();
    let offer = next(&mut ws, "w1");
    let verdict = done(&mut ws, "w1", &offer, &[]);
    assert_eq!(verdict["type"], "verdict", "{verdict}");
    assert_eq!(verdict["accepted"], false);
    assert_eq!(verdict["reasons"], json!(["no deliverable", "write essay.md"]));
    let again = &verdict["next"];
    assert_eq!(again["reasons"], json!(["no deliverable", "write essay.md"]));

    project.write("essay.md", "two words");
    let verdict = done(&mut ws, "w1", again, &["essay.md"]);
    assert_eq!(verdict["reasons"], json!(["too short: essay"]));

    project.write("essay.md", "now it has enough words");
    let verdict = done(&mut ws, "w1", &verdict["next"], &["essay.md"]);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(verdict["next"]["type"], "all_done");
}

#[test]
fn without_accept_a_failing_validation_rejects_and_a_passing_one_accepts() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "validated", phases = { { name = "p", tasks = {
  { id = "t", description = "make out.txt", validation = "test -f out.txt" } } } } }"#,
    );
    let mut ws = hub.connect();
    let offer = next(&mut ws, "w1");
    let verdict = done(&mut ws, "w1", &offer, &[]);
    assert_eq!(verdict["accepted"], false, "{verdict}");
    assert!(verdict["reasons"][0].as_str().unwrap().starts_with("validation `test -f out.txt` exited 1"), "{verdict}");
    project.write("out.txt", "x");
    let verdict = done(&mut ws, "w1", &verdict["next"], &["out.txt"]);
    assert_eq!(verdict["accepted"], true, "{verdict}");
}

#[test]
fn assign_chooses_which_ready_task_a_worker_gets() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "pick", phases = { {
  name = "p",
  tasks = { { id = "one", description = "1" }, { id = "two", description = "2" }, { id = "three", description = "3" } },
  assign = function(worker, ready, ctx)
    if worker.name == "picky" then return ready[#ready] end
    if worker.name == "idle" then return nil end
    return ready[1].id
  end,
} } }"#,
    );
    let mut ws = hub.connect();
    assert_eq!(next(&mut ws, "picky")["task"]["id"], "three", "{}", hub.log_text());
    assert_eq!(next(&mut ws, "idle")["type"], "nothing_yet");
    assert_eq!(next(&mut ws, "other")["task"]["id"], "one");
}

#[test]
fn an_assign_that_picks_a_task_nobody_can_take_gives_nothing_and_says_so() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "wrong", phases = { {
  name = "p",
  tasks = { { id = "one", description = "1" } },
  assign = function(worker, ready, ctx)
    if worker.name == "lost" then return "no-such-task" end
    error("cannot choose")
  end,
} } }"#,
    );
    let mut ws = hub.connect();
    assert_eq!(next(&mut ws, "lost")["type"], "nothing_yet");
    assert!(
        problems(&mut ws)
            .contains("workflow assign chose `no-such-task`, which is not among the ready tasks; lost got nothing"),
        "{}",
        problems(&mut ws)
    );
    assert_eq!(next(&mut ws, "stuck")["type"], "nothing_yet");
    assert!(problems(&mut ws).contains("cannot choose"), "{}", problems(&mut ws));
}

#[test]
fn complete_decides_when_the_next_phase_starts() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "early", phases = {
  { name = "first", tasks = { { id = "a", description = "a" }, { id = "b", description = "b" } },
    complete = function(phase, ctx) return phase.counts.accepted >= 1 end },
  { name = "second", split = function(ctx, previous)
      return { { id = "after-" .. previous.tasks[1].id, description = "follow up " .. previous.last.name } }
    end },
} }"#,
    );
    let mut ws = hub.connect();
    let a = next(&mut ws, "w1");
    assert_eq!(a["task"]["id"], "a");
    let verdict = done(&mut ws, "w1", &a, &[]);
    assert_eq!(verdict["accepted"], true);
    let snap = snapshot(&mut ws);
    let ids: Vec<&str> = snap["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "after-a"]);
    let follow = snap["tasks"].as_array().unwrap().iter().find(|t| t["id"] == "after-a").unwrap().clone();
    assert_eq!(follow["phase"], "second");
}

#[test]
fn a_hook_adds_a_task_when_a_worker_is_blocked() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "hooks", phases = { {
  name = "p",
  tasks = { { id = "t", description = "t" } },
  on = {
    task_blocked = function(task, ctx)
      ctx.add_task { id = "unblock-" .. task.id, description = "answer: " .. task.question }
      ctx.log("added a helper for " .. task.id)
    end,
  },
} } }"#,
    );
    let mut ws = hub.connect();
    let offer = next(&mut ws, "w1");
    let ack = ws.ask(json!({"type":"block","worker":"w1","taskId":"t","attempt":offer["attempt"],"question":"which format?","waitMs":0}));
    assert_eq!(ack["type"], "ack", "{ack}");
    let helper = next(&mut ws, "w2");
    assert_eq!(helper["task"]["id"], "unblock-t", "{helper}\n{}", hub.log_text());
    assert_eq!(helper["task"]["description"], "answer: which format?");
    assert_eq!(helper["phase"], "p");
    let snap = snapshot(&mut ws);
    assert!(snap["log"].to_string().contains("added a helper for t"), "{snap}");
}

#[test]
fn a_broken_workflow_names_file_and_line_and_the_hub_keeps_serving() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();

    project.write("syntax.lua", "return {\n  name = \"x\"\n  phases = {}\n}\n");
    let reply = ws.ask(json!({"type":"load_workflow","path":"syntax.lua"}));
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(reply.to_string().contains("syntax.lua:3:"), "{reply}");

    project.write("noname.lua", "return { phases = {} }\n");
    let reply = ws.ask(json!({"type":"load_workflow","path":"noname.lua"}));
    assert!(reply.to_string().contains("noname.lua:1: the workflow has no `name`"), "{reply}");

    project.write(
        "split.lua",
        "return { name = \"s\", phases = { { name = \"a\",\n split = function(ctx)\n  return { { id = \"x\" } }\n end } } }\n",
    );
    let reply = ws.ask(json!({"type":"load_workflow","path":"split.lua"}));
    assert_eq!(reply["type"], "ack", "{reply}");
    eventually("the bad split is shown", || problems(&mut ws).contains("split.lua:2: in split of phase \\\"a\\\""));
    assert!(problems(&mut ws).contains("has no `description`"));

    project.write(
        "assign.lua",
        "return { name = \"r\", phases = { { name = \"a\", tasks = { { id = \"t\", description = \"d\" } },\n assign = function(worker, ready)\n  return ready[1].nope.deeper\n end } } }\n",
    );
    let reply = ws.ask(json!({"type":"load_workflow","path":"assign.lua"}));
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(next(&mut ws, "w1")["type"], "nothing_yet");
    let shown = problems(&mut ws);
    assert!(shown.contains("assign.lua:3: in assign of phase \\\"a\\\": attempt to get an unknown field"), "{shown}");
    assert_eq!(snapshot(&mut ws)["counts"]["ready"], 1);
}

#[test]
fn a_runaway_accept_is_stopped_and_the_task_waits_for_the_engineer() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        "return { name = \"loop\", phases = { { name = \"a\", tasks = { { id = \"t\", description = \"d\" } },\n accept = function()\n  while true do end\n end } } }\n",
    );
    let mut ws = hub.connect();
    let offer = next(&mut ws, "w1");
    let reply = done(&mut ws, "w1", &offer, &[]);
    assert_eq!(reply["type"], "ack", "{reply}");
    assert!(reply.to_string().contains("could not judge"), "{reply}");
    let shown = problems(&mut ws);
    assert!(shown.contains("wf.lua:3: in accept of phase \\\"a\\\": runaway script stopped"), "{shown}");
    assert_eq!(snapshot(&mut ws)["counts"]["submitted"], 1);
    assert_eq!(next(&mut ws, "w2")["type"], "nothing_yet");
}

#[test]
fn editing_the_workflow_reloads_it_and_a_broken_edit_keeps_the_last_good_one() {
    let project = Project::new();
    let hub = hub_with(&project, "wf.lua", TWO_PHASES);
    let mut ws = hub.connect();
    let offer = next(&mut ws, "w1");
    assert_eq!(done(&mut ws, "w1", &offer, &[])["accepted"], true);

    project.write("wf.lua", &format!("{TWO_PHASES}\nthis is not Lua\n"));
    eventually("the broken edit is shown", || problems(&mut ws).contains("wf.lua:"));
    assert_eq!(snapshot(&mut ws)["policy"], "two-phases");
    assert_eq!(next(&mut ws, "w1")["task"]["id"], "b");

    project.write("wf.lua", &TWO_PHASES.replace("name = \"two-phases\"", "name = \"two-phases-v2\""));
    eventually("the fixed edit is loaded", || snapshot(&mut ws)["policy"] == "two-phases-v2");
    let rest = work_through(&mut ws, "w1");
    assert_eq!(rest, ["b", "review-a", "review-b"]);
}

#[test]
fn a_restarted_hub_resumes_the_phase_without_splitting_again() {
    let project = Project::new();
    let source = r#"return { name = "resume", phases = {
  { name = "one", split = function(ctx)
      local n = ctx.exists("splits.txt") and ctx.read("splits.txt") or ""
      ctx.write("splits.txt", n .. "x")
      return { { id = "a", description = "a" }, { id = "b", description = "b" } }
    end },
  { name = "two", tasks = { { id = "c", description = "c" } } },
} }"#;
    let hub = hub_with(&project, "wf.lua", source);
    let mut ws = hub.connect();
    let a = next(&mut ws, "w1");
    assert_eq!(done(&mut ws, "w1", &a, &[])["accepted"], true);
    ws.close();
    hub.kill9();

    let hub = Hub::start(project.root(), &[]);
    let mut ws = hub.connect();
    eventually("the workflow is back", || snapshot(&mut ws)["policy"] == "resume");
    assert_eq!(work_through(&mut ws, "w1"), ["b", "c"]);
    assert_eq!(project.read("splits.txt"), "x");
}

#[test]
fn mcc_check_prints_the_tasks_of_the_first_phase() {
    let project = Project::new();
    project.write("docs/a.md", "A");
    project.write("docs/b.md", "B");
    project.write(
        "wf.lua",
        r#"local fanout = require("fanout")
return { name = "docs", phases = { { name = "summaries", split = function(ctx)
  return fanout.per_file(ctx, "docs/*.md", function(path)
    return { description = "Summarize " .. path, write = "out/" .. path }
  end, "sum-")
end } } }"#,
    );
    let run = project.mcc().args(["check", "wf.lua"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("phase \"summaries\" would create 2 tasks"), "{}", run.stdout);
    assert!(run.stdout.contains("sum-docs/a.md  Summarize docs/a.md"), "{}", run.stdout);
    assert!(run.stdout.contains("read: docs/b.md  write: out/docs/b.md  after: -"), "{}", run.stdout);

    let json = project.mcc().args(["check", "wf.lua", "--json"]).run().json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["tasks"][1]["context"]["outputFiles"], json!(["out/docs/b.md"]));
}

#[test]
fn mcc_check_reports_a_bad_workflow_with_file_and_line() {
    let project = Project::new();
    project.write(
        "bad.lua",
        "return { name = \"b\", phases = { { name = \"p\", split = function(ctx)\n  return 42\nend } } }\n",
    );
    let run = project.mcc().args(["check", "bad.lua"]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("bad.lua:1: in split of phase \"p\": split must return a list of tasks"),
        "{}",
        run.stderr
    );
    let json = project.mcc().args(["check", "bad.lua", "--json"]).run().json();
    assert_eq!(json["ok"], false);
    assert!(json["errors"][0].as_str().unwrap().starts_with("bad.lua:1:"));
}

#[test]
fn every_example_in_the_workflow_docs_passes_mcc_check() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/workflows.md")).unwrap();
    let examples: Vec<&str> = docs.split("```lua\n").skip(1).map(|rest| rest.split("```").next().unwrap()).collect();
    assert!(examples.len() > 25, "found only {} examples", examples.len());
    let project = Project::new();
    project.write("README.md", "# Demo\n\nA project with some words.\n");
    project.write("docs/a.md", "alpha");
    project.write("docs/b.md", "beta");
    for (i, source) in examples.iter().enumerate() {
        let file = format!("example-{i}.lua");
        project.write(&file, source);
        let run = project.mcc().args(["check", &file]).run();
        assert_eq!(run.code, 0, "example {i}:\n{source}\n{}", run.stderr);
    }
}

#[test]
fn the_editor_annotations_load_as_lua() {
    let types = include_str!("../workflows/types/mcc.lua");
    let project = Project::new();
    // `dofile` is outside the sandbox; a copy beside the workflow is what `require` reaches.
    project.write("mcc_types.lua", types);
    project
        .write("wf.lua", "require(\"mcc_types\")\nreturn { name = \"t\", phases = { { name = \"p\", tasks = {} } } }");
    let run = project.mcc().args(["check", "wf.lua"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_timer_runs_while_nobody_sends_anything() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "tick", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { timer = { every = "50ms", run = function(ctx)
    if not ctx.task("tick") then ctx.add_task { id = "tick", description = "added by the timer" } end
  end } } } } }"#,
    );
    let mut ws = hub.connect();
    eventually("the timer added its task", || snapshot(&mut ws)["tasks"].to_string().contains("added by the timer"));
}

#[test]
fn a_changed_file_matching_the_glob_reaches_the_files_hook() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "files", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { files = { glob = "src/**/*.rs", run = function(paths, ctx)
    for _, p in ipairs(paths) do
      if not ctx.task("review " .. p) then ctx.add_task { id = "review " .. p, description = "review " .. p } end
    end
  end } } } } }"#,
    );
    let mut ws = hub.connect();
    // The snapshot is answered after the workflow (and its watcher) started.
    assert_eq!(snapshot(&mut ws)["policy"], "files");
    project.write("notes.txt", "not watched");
    project.write("src/deep/lib.rs", "fn main() {}");
    eventually("the hook saw src/deep/lib.rs", || {
        snapshot(&mut ws)["tasks"].to_string().contains("review src/deep/lib.rs")
    });
    assert!(!snapshot(&mut ws)["tasks"].to_string().contains("notes.txt"));
}

#[test]
fn a_split_that_failed_runs_again_once_the_file_is_fixed() {
    let project = Project::new();
    let broken = "return { name = \"fixme\", phases = { { name = \"p\",\n split = function(ctx)\n  return ctx.read(\"missing.txt\")\n end } } }\n";
    let hub = hub_with(&project, "wf.lua", broken);
    let mut ws = hub.connect();
    let shown = problems(&mut ws);
    assert!(shown.contains("wf.lua:3: in split of phase \\\"p\\\": ctx.read(\\\"missing.txt\\\")"), "{shown}");
    assert_eq!(next(&mut ws, "w1")["type"], "nothing_yet");

    project.write(
        "wf.lua",
        &broken
            .replace("return ctx.read(\"missing.txt\")", "return { { id = \"t\", description = \"now it works\" } }"),
    );
    eventually("the fixed split created its task", || snapshot(&mut ws)["counts"]["ready"] == 1);
    assert_eq!(next(&mut ws, "w1")["task"]["description"], "now it works");
}

#[test]
fn editing_a_module_the_workflow_requires_reloads_it_too() {
    let project = Project::new();
    project.write("flows/names.lua", "return { version = \"1\" }\n");
    let hub = hub_with(
        &project,
        "flows/wf.lua",
        r#"local names = require("names")
return { name = "mod-v" .. names.version, phases = { { name = "p", tasks = { { id = "t", description = "d" } } } } }"#,
    );
    let mut ws = hub.connect();
    assert_eq!(snapshot(&mut ws)["policy"], "mod-v1");
    project.write("flows/names.lua", "return { version = \"2\" }\n");
    eventually("the workflow reloaded with the edited module", || snapshot(&mut ws)["policy"] == "mod-v2");
}

#[test]
fn a_workflow_that_reaches_for_the_system_is_refused_with_its_line() {
    let project = Project::new();
    project.write("wf.lua", "local ok = true\nos.execute(\"touch pwned\")\nreturn {}\n");
    let run = project.mcc().args(["check", "wf.lua"]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("wf.lua:2: in the workflow file: os.execute is not available to a workflow"),
        "{}",
        run.stderr
    );
    assert!(!project.path("pwned").exists());
}

#[test]
fn a_did_not_load_problem_goes_once_a_fixed_module_lets_the_workflow_load() {
    let project = Project::new();
    project.write("flows/helper.lua", "return { tasks = { { id = 'a', description = 'a' } ");
    let wf = project.write(
        "flows/wf.lua",
        "local helper = require('helper')\nreturn { name = 'with-module', phases = { { name = 'p', tasks = helper.tasks } } }",
    );
    let hub = Hub::start(project.root(), &["--workflow", &wf.display().to_string()]);
    let mut ws = hub.connect();
    eventually("the load failure is shown", || problems(&mut ws).contains("did not load"));
    // Only the module is fixed; the workflow file itself is untouched.
    project.write("flows/helper.lua", "return { tasks = { { id = 'a', description = 'a' } } }");
    eventually("the fixed workflow loads and the problem is gone", || {
        let snap = snapshot(&mut ws);
        snap["policy"] == "with-module" && !snap["problems"].to_string().contains("did not load")
    });
    assert_eq!(next(&mut ws, "w1")["task"]["id"], "a");
}

#[test]
fn check_runs_the_commands_a_split_waits_on_and_lists_its_tasks() {
    let project = Project::new();
    project.write(
        "wf.lua",
        "return { name = 'counted', phases = { { name = 'p', split = function(ctx)\n  local r = ctx.run('echo from-the-command')\n  return { { id = r.stdout:gsub('%s', ''), description = 'd' } }\nend } } }",
    );
    let run = project.mcc().args(["check", "wf.lua"]).run();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("would create 1 task") && run.stdout.contains("from-the-command"), "{run:?}");
}

#[test]
fn trimming_100_kb_of_worker_notes_ends_in_the_budget_s_clear_error_and_the_hub_keeps_serving() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        r#"return { name = "trim", phases = { { name = "a",
  tasks = { { id = "t", description = "d" }, { id = "u", description = "e" }, { id = "v", description = "f" } },
  accept = function(task, report)
    if task.id == "t" then local notes = report.notes:match("^%s*(.-)%s*$") end
    -- A normal workflow's gsub and gmatch: the words of the notes, with "o" written "0".
    local words = {}
    for w in report.notes:gmatch("%a+") do words[#words + 1] = (w:gsub("o", "0")) end
    return false, table.concat(words, "+")
  end } } }
"#,
    );
    let mut ws = hub.connect();
    let offer = next(&mut ws, "w1");
    assert_eq!(offer["task"]["id"], "t", "{offer} {}", problems(&mut ws));
    let u = next(&mut ws, "w2");
    assert_eq!(u["task"]["id"], "u");
    let notes = format!("x{}x", " ".repeat(100_000));
    ws.send(json!({"type":"done","worker":"w1","taskId":"t","attempt":offer["attempt"],"notes":notes,"waitMs":0}));
    // The budget: 5 s of the engine's CPU, or 30 s of wall time on a machine busy with other tests.
    let reply = ws.recv_within(std::time::Duration::from_secs(40)).expect("an answer within the budget's wall time");
    assert!(reply.to_string().contains("could not judge"), "{reply}");
    let shown = problems(&mut ws);
    assert!(
        shown.contains(
            "wf.lua:4: in accept of phase \\\"a\\\": string.match: the pattern \\\"^%s*(.-)%s*$\\\" on 100002 bytes of text stopped after "
        ),
        "{shown}"
    );
    // The hub still serves, and the next accept runs its patterns as before.
    let reply = ws.ask(
        json!({"type":"done","worker":"w2","taskId":"u","attempt":u["attempt"],"notes":"  hello, world of Lua ","waitMs":0}),
    );
    assert_eq!(reply["reasons"], json!(["hell0+w0rld+0f+Lua"]), "{reply}");
    let offer = next(&mut ws, "w3");
    assert!(
        matches!(offer["type"].as_str(), Some("task" | "nothing_yet")),
        "the hub still answers a worker's next: {offer}"
    );
}

#[test]
fn a_pcall_loop_and_a_100000_deep_table_end_in_clear_errors_and_the_hub_keeps_serving() {
    let project = Project::new();
    let hub = hub_with(
        &project,
        "wf.lua",
        "return { name = \"escape\", phases = { { name = \"a\", tasks = { { id = \"t\", description = \"d\" }, { id = \"u\", description = \"e\" } },\n accept = function(task, report, ctx)\n  if task.id == \"t\" then\n   while true do pcall(function() while true do end end) end\n  end\n  local deep = {}\n  for i = 1, 100000 do deep = { deep } end\n  return ctx.json.encode(deep)\n end } } }\n",
    );
    let mut ws = hub.connect();
    let t = next(&mut ws, "w1");
    let u = next(&mut ws, "w2");
    assert_eq!(u["task"]["id"], "u", "{u}");
    let started = std::time::Instant::now();
    let reply = done(&mut ws, "w1", &t, &[]);
    eprintln!("the pcall loop was stopped in {:?}", started.elapsed());
    assert!(reply.to_string().contains("could not judge"), "{reply}");
    let started = std::time::Instant::now();
    let reply = done(&mut ws, "w2", &u, &[]);
    eprintln!("the deep table was refused in {:?}", started.elapsed());
    assert!(reply.to_string().contains("could not judge"), "{reply}");
    let shown = problems(&mut ws);
    assert!(shown.contains("in accept of phase \\\"a\\\": runaway script stopped after"), "{shown}");
    assert!(shown.contains("the table is nested more than 128 levels deep"), "{shown}");
    assert_eq!(next(&mut ws, "w3")["type"], "nothing_yet", "still serving");
}

#[test]
fn a_hub_killed_while_loading_a_workflow_restarts_with_the_last_version_that_loaded() {
    let project = Project::new();
    let good =
        "return { name = \"good\", phases = { { name = \"a\", tasks = { { id = \"t\", description = \"d\" } } } } }\n";
    let hub = hub_with(&project, "wf.lua", good);
    let ws = hub.connect();
    eventually("the good version is recorded", || project.path(".mcc/workflow-loaded.json").exists());
    // An edit that loads for seconds (until its budget: 5 s of a slow match): the hub dies meanwhile.
    project.write("wf.lua", "local s = 'x' .. string.rep(' ', 100000) .. 'x'\nlocal t = s:match('^%s*(.-)%s*$')\n");
    eventually("the edit is loading", || project.path(".mcc/workflow-loading.json").exists());
    ws.close();
    hub.kill9();

    for _ in 0..2 {
        let hub = Hub::start(project.root(), &[]);
        let mut ws = hub.connect();
        eventually("the last version that loaded runs", || snapshot(&mut ws)["policy"] == "good");
        let log = snapshot(&mut ws)["log"].to_string();
        assert!(log.contains("the hub stopped while loading wf.lua last time"), "{log}");
        assert_eq!(next(&mut ws, "w1")["task"]["id"], "t");
        ws.close();
    }
}
