//! Races (best of N) in a real hub: racers write copies under
//! `.mcc/races/`, one wins, its files move into place, the others hear that
//! another attempt won; a racer that vanishes blocks nothing, and a `kill
//! -9` mid-race loses nothing and keeps one winner.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{Hub, Project, Ws, eventually};

fn next(ws: &mut Ws, worker: &str) -> Value {
    let reply = ws.ask(json!({"type":"next","worker":worker,"waitMs":0}));
    assert_eq!(reply["type"], "offer", "{reply}");
    assert_eq!(reply["offer"]["type"], "task", "{reply}");
    reply["offer"].clone()
}

fn done(ws: &mut Ws, worker: &str, offer: &Value) -> Value {
    done_costing(ws, worker, offer, &json!(null))
}

/// `done` with the usage the racer reports (`null`: none).
fn done_costing(ws: &mut Ws, worker: &str, offer: &Value, usage: &Value) -> Value {
    let task = offer["task"]["id"].as_str().unwrap();
    let mut msg = json!({"type":"done","worker":worker,"taskId":task,"attempt":offer["attempt"],"waitMs":0});
    if !usage.is_null() {
        msg["usage"] = usage.clone();
    }
    ws.ask(msg)
}

/// Write a racer's copy of `file` where its task says.
fn write_copy(project: &Project, offer: &Value, file: &str, text: &str) {
    let copy = offer["task"]["raceCopy"].as_str().unwrap_or_else(|| panic!("a racer's task names its copy: {offer}"));
    assert!(copy.starts_with(".mcc/races/"), "{copy}");
    let outputs = offer["task"]["context"]["outputFiles"].to_string();
    assert!(outputs.contains(&format!("{copy}/{file}")), "the racer writes its copy, not the file in place: {outputs}");
    project.write(&format!("{copy}/{file}"), text);
}

fn states(ws: &mut Ws) -> BTreeMap<String, String> {
    let snapshot = ws.ask(json!({"type":"snapshot"}))["snapshot"].clone();
    snapshot["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn raced_task(id: &str, file: &str, race: u32) -> Value {
    json!({
        "id": id,
        "description": format!("write {file}"),
        "context": {"outputFiles": [file]},
        "race": race,
    })
}

fn add(hub: &Hub, tasks: &[Value]) {
    let mut coord = hub.connect();
    coord.register_coordinator();
    assert_eq!(coord.ask(json!({"type":"create_tasks","tasks":tasks}))["count"], tasks.len());
}

const FIRST_WINS: &str = r#"
return {
  name = "first-wins",
  phases = {
    { name = "answer", tasks = {
        { id = "answer", description = "answer the question", write = "answer.txt", race = 2,
          validation = "grep -q yes answer.txt" },
    } },
  },
}
"#;

#[test]
fn two_racers_and_the_first_accepted_wins_with_its_file_in_place() {
    let project = Project::new();
    project.write("race.lua", FIRST_WINS);
    let hub = Hub::start(project.root(), &["--workflow", &project.path("race.lua").display().to_string()]);
    let (mut one, mut two) = (hub.connect(), hub.connect());
    let first = next(&mut one, "w1");
    let second = next(&mut two, "w2");
    assert_ne!(first["task"]["id"], second["task"]["id"], "each worker races on its own attempt");
    assert_eq!(first["task"]["raceOf"], "answer");
    assert!(first["task"]["description"].as_str().unwrap().contains(".mcc/races/"), "{first}");
    write_copy(&project, &first, "answer.txt", "yes, from w1\n");
    write_copy(&project, &second, "answer.txt", "yes, from w2\n");
    assert!(!project.path("answer.txt").exists(), "nothing in place is touched while racers work");

    let verdict = done(&mut two, "w2", &second);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(project.read("answer.txt"), "yes, from w2\n", "the first accepted racer's file is in place");
    let states = states(&mut two);
    assert_eq!(states["answer"], "accepted", "{states:?}");
    assert_eq!(states[first["task"]["id"].as_str().unwrap()], "cancelled", "{states:?}");

    let late = done(&mut one, "w1", &first);
    assert_eq!(late["type"], "ack", "{late}");
    assert!(late["message"].as_str().unwrap().contains("another attempt won"), "{late}");
    assert_eq!(late["next"]["type"], "all_done", "the loser is answered with its next task: {late}");
    assert_eq!(project.read("answer.txt"), "yes, from w2\n", "the loser's copy never moves into place");

    let report = project.mcc().args(["report", "--json"]).run().json();
    let overhead = &report["raceOverhead"];
    assert_eq!(overhead["races"], 1, "{report}");
    assert_eq!(overhead["attempts"], 1, "the losing racer's attempt is race overhead: {report}");
    assert_eq!(report["engineerPrompts"], 0, "a lost racer is not cancelled by the engineer: {report}");
}

/// `choose` waits until no racer runs, then keeps the longest answer.
const LONGEST_WINS: &str = r#"
return {
  name = "longest-wins",
  phases = {
    { name = "answer",
      tasks = {
        { id = "answer", description = "answer the question", write = "answer.txt", race = 2,
          validation = "wc -c < answer.txt" },
      },
      choose = function(task, candidates)
        if candidates.open > 0 then return nil end
        local best
        for _, c in ipairs(candidates) do
          if best == nil or tonumber(c.validation.stdout) > tonumber(best.validation.stdout) then best = c end
        end
        return best
      end },
  },
}
"#;

#[test]
fn a_choose_that_waits_for_both_racers_picks_the_second() {
    let project = Project::new();
    project.write("race.lua", LONGEST_WINS);
    let hub = Hub::start(project.root(), &["--workflow", &project.path("race.lua").display().to_string()]);
    let (mut one, mut two) = (hub.connect(), hub.connect());
    let first = next(&mut one, "w1");
    let second = next(&mut two, "w2");
    write_copy(&project, &first, "answer.txt", "short\n");
    write_copy(&project, &second, "answer.txt", "a much longer answer\n");

    let verdict = done_costing(&mut one, "w1", &first, &json!({"usd": 0.5, "tokens": 1000}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert!(!project.path("answer.txt").exists(), "choose waits while a racer runs");
    assert_eq!(states(&mut one)["answer"], "assigned", "the race is still open");

    let verdict = done_costing(&mut two, "w2", &second, &json!({"usd": 0.75, "tokens": 3000}));
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(project.read("answer.txt"), "a much longer answer\n", "choose picked the second racer");
    let states = states(&mut two);
    assert_eq!(states["answer"], "accepted", "{states:?}");
    assert_eq!(states[second["task"]["id"].as_str().unwrap()], "accepted", "{states:?}");
    assert_eq!(states[first["task"]["id"].as_str().unwrap()], "cancelled", "{states:?}");

    let report = project.mcc().args(["report", "--json"]).run().json();
    let overhead = &report["raceOverhead"];
    assert_eq!(overhead["cost"]["usd"], 0.5, "what the racer that lost cost is race overhead: {report}");
    assert_eq!(overhead["cost"]["tokens"], 1000, "{report}");
    let text = project.mcc().args(["report"]).run().stdout;
    assert!(text.contains("costing 0.50 USD"), "{text}");
}

#[test]
fn a_racer_that_vanishes_does_not_block_the_others() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &["--lease", "1s"]);
    add(&hub, &[raced_task("notes", "notes.md", 2)]);
    let mut gone = hub.connect();
    let vanished = next(&mut gone, "w1");
    let vanished_id = vanished["task"]["id"].as_str().unwrap().to_owned();
    gone.close();
    let mut ws = hub.connect();
    eventually("the vanished racer's lease ends and it goes back to the queue", || {
        states(&mut ws)[&vanished_id] == "ready"
    });
    let offer = next(&mut ws, "w2");
    write_copy(&project, &offer, "notes.md", "notes by w2\n");
    let verdict = done(&mut ws, "w2", &offer);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(project.read("notes.md"), "notes by w2\n");
    let states = states(&mut ws);
    assert_eq!(states["notes"], "accepted", "{states:?}");
    assert_eq!(states.values().filter(|s| *s == "accepted").count(), 2, "the race and one racer: {states:?}");
}

#[test]
fn kill_9_mid_race_loses_nothing_and_keeps_one_winner() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, &[raced_task("plan", "plan.md", 2), json!({"id":"after","description":"d","dependencies":["plan"]})]);
    let (mut one, mut two) = (hub.connect(), hub.connect());
    let first = next(&mut one, "w1");
    let second = next(&mut two, "w2");
    write_copy(&project, &first, "plan.md", "plan of w1\n");
    write_copy(&project, &second, "plan.md", "plan of w2\n");
    let root = hub.root.clone();
    drop((one, two));
    hub.kill9();

    // Both grants survive the kill; the second racer finishes first.
    let hub = Hub::start(&root, &[]);
    let mut two = hub.connect();
    let verdict = done(&mut two, "w2", &second);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(verdict["next"]["task"]["id"], "after", "the won race freed its dependent for the winner: {verdict}");
    assert_eq!(project.read("plan.md"), "plan of w2\n");
    drop(two);
    hub.kill9();

    let hub = Hub::start(&root, &[]);
    let mut one = hub.connect();
    let states = states(&mut one);
    assert_eq!(states["plan"], "accepted", "{states:?}");
    assert_eq!(states["after"], "assigned", "the race's dependents are released: {states:?}");
    let racers: Vec<_> = states.iter().filter(|(id, _)| id.starts_with("plan~")).map(|(_, s)| s.as_str()).collect();
    assert_eq!(racers.iter().filter(|s| **s == "accepted").count(), 1, "one winner only: {states:?}");
    let late = done(&mut one, "w1", &first);
    assert!(late["message"].as_str().unwrap_or_default().contains("another attempt won"), "{late}");
    assert_eq!(project.read("plan.md"), "plan of w2\n", "the winner's file stays in place");
    let copies = std::fs::read_dir(project.path(".mcc/races/plan")).unwrap().count();
    assert_eq!(copies, 2, "both copies are kept for the engineer to compare");
}

#[test]
fn after_kill_9_a_waiting_choose_still_compares_the_first_racers_validation() {
    let project = Project::new();
    project.write("race.lua", LONGEST_WINS);
    let workflow = project.path("race.lua").display().to_string();
    let hub = Hub::start(project.root(), &["--workflow", &workflow]);
    let (mut one, mut two) = (hub.connect(), hub.connect());
    let first = next(&mut one, "w1");
    let second = next(&mut two, "w2");
    write_copy(&project, &first, "answer.txt", "w1\n");
    write_copy(&project, &second, "answer.txt", "the longer answer of w2\n");
    let verdict = done(&mut one, "w1", &first);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    let root = hub.root.clone();
    drop((one, two));
    hub.kill9();

    let hub = Hub::start(&root, &["--workflow", &workflow]);
    let mut two = hub.connect();
    assert_eq!(states(&mut two)["answer"], "assigned", "the race still waits for its second racer");
    let verdict = done(&mut two, "w2", &second);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(
        project.read("answer.txt"),
        "the longer answer of w2\n",
        "choose compared the first racer's stored validation with the second's (without it, choose fails and the first accepted wins)"
    );
}

#[test]
fn a_race_of_one_worker_is_refused_with_what_to_give() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    let mut coord = hub.connect();
    coord.register_coordinator();
    let reply = coord.ask(json!({"type":"create_tasks","tasks":[raced_task("solo", "solo.md", 1)]}));
    let text = reply.to_string();
    assert!(text.contains("tasks[0] (`solo`): race: 1 is not how many workers race on the task"), "{text}");
    assert!(text.contains("a whole number from 2 to 10"), "{text}");
    assert!(states(&mut coord).is_empty(), "nothing was added: {text}");
}

#[test]
fn a_racer_whose_copy_is_a_link_is_out_and_its_target_is_never_read() {
    let project = Project::new();
    let hub = Hub::start(project.root(), &[]);
    add(&hub, &[raced_task("page", "page.md", 2)]);
    let (mut one, mut two) = (hub.connect(), hub.connect());
    let first = next(&mut one, "w1");
    let second = next(&mut two, "w2");
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "a secret outside the project\n").unwrap();
    let copy = project.path(first["task"]["raceCopy"].as_str().unwrap());
    std::fs::create_dir_all(&copy).unwrap();
    std::os::unix::fs::symlink(secret.path(), copy.join("page.md")).unwrap();

    let verdict = done(&mut one, "w1", &first);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert!(!project.path("page.md").exists(), "a link's target never moves into place");
    let states = states(&mut one);
    let linked = first["task"]["id"].as_str().unwrap();
    assert_eq!(states[linked], "failed", "{states:?}");
    assert_eq!(states["page"], "assigned", "the race goes on without it: {states:?}");

    write_copy(&project, &second, "page.md", "the page of w2\n");
    let verdict = done(&mut two, "w2", &second);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(project.read("page.md"), "the page of w2\n");
    let shown = two.ask(json!({"type":"show_task","taskId":linked}));
    assert!(shown.to_string().contains("its copy cannot move into place"), "{shown}");
}

const TWO_PHASES: &str = r#"
return {
  name = "race-then-publish",
  max_attempts = 1,
  phases = {
    { name = "draft", tasks = { { id = "draft", description = "draft it", write = "draft.md", race = 2 } },
      complete = function(phase, ctx) return phase.all_accepted end },
    { name = "publish", tasks = { { id = "publish", description = "publish the draft", read = "draft.md" } } },
  },
}
"#;

#[test]
fn a_phase_whose_race_was_won_is_all_accepted_even_with_a_racer_that_failed() {
    let project = Project::new();
    project.write("race.lua", TWO_PHASES);
    let hub = Hub::start(project.root(), &["--workflow", &project.path("race.lua").display().to_string()]);
    let (mut one, mut two) = (hub.connect(), hub.connect());
    let first = next(&mut one, "w1");
    let second = next(&mut two, "w2");
    let failed = one.ask(json!({"type":"fail","worker":"w1","taskId":first["task"]["id"],"attempt":first["attempt"],
        "reason":"cannot","waitMs":0}));
    assert_eq!(failed["type"], "ack", "{failed}");
    assert_eq!(states(&mut one)[first["task"]["id"].as_str().unwrap()], "failed");

    write_copy(&project, &second, "draft.md", "the draft\n");
    let verdict = done(&mut two, "w2", &second);
    assert_eq!(verdict["accepted"], true, "{verdict}");
    assert_eq!(next(&mut two, "w2")["task"]["id"], "publish", "the next phase started");
    let states = states(&mut two);
    assert_eq!(states[first["task"]["id"].as_str().unwrap()], "cancelled", "a failed racer of a won race: {states:?}");
}
