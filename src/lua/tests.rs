//! The workflow runtime driven directly, with a real scheduler and files.

use std::time::{Duration, Instant};

use std::path::PathBuf;

use super::*;
use crate::command::Outcome;
use crate::engine::PolicyError;
use crate::scheduler::{Scheduler, Settings, TaskState, Verdict};
use crate::task::Report;

struct Fixture {
    dir: tempfile::TempDir,
    scheduler: Scheduler,
    /// The engine's clock as the workflow is told it: tests move it, nobody waits.
    now: Instant,
}

impl Fixture {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), scheduler: Scheduler::new(Settings::default()), now: Instant::now() }
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&mut self, source: &str) -> Result<Workflow, String> {
        let path = self.write("wf.lua", source);
        let mut w = Workflow::load(&path, self.dir.path())?;
        w.step_waiting(&mut self.scheduler, self.now)?;
        Ok(w)
    }

    fn ids(&self) -> Vec<String> {
        self.scheduler.tasks_in_order().iter().map(|t| t.spec.id.clone()).collect()
    }

    fn assign(&mut self, w: &mut Workflow, worker: &str) -> Result<Option<TaskId>, PolicyError> {
        self.scheduler.see_worker(worker, Instant::now());
        let me = self.scheduler.worker(worker).unwrap().clone();
        let ready = self.scheduler.candidates(64);
        w.assign(&me, &ready, &self.scheduler)
    }
}

#[test]
fn assign_may_return_a_task_view_an_id_or_nothing() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "pick", phases = { { name = "p",
  tasks = { { id = "one", description = "1" }, { id = "two", description = "2" } },
  assign = function(worker, ready, ctx)
    if worker.name == "last" then return ready[#ready] end
    if worker.name == "idle" then return nil end
    return ready[1].id
  end } } }"#,
        )
        .unwrap();
    assert_eq!(f.assign(&mut w, "last").unwrap().as_deref(), Some("two"));
    assert_eq!(f.assign(&mut w, "idle").unwrap(), None);
    assert_eq!(f.assign(&mut w, "first").unwrap().as_deref(), Some("one"));
}

#[test]
fn a_blocked_task_fires_its_hook_which_adds_a_task() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "hooks", phases = { { name = "p",
  tasks = { { id = "t", description = "t" } },
  on = { task_blocked = function(task, ctx)
    ctx.add_task { id = "unblock-" .. task.id, description = "answer: " .. task.question }
  end } } } }"#,
        )
        .unwrap();
    let now = Instant::now();
    assert!(f.scheduler.grant("t", "w1", now));
    f.scheduler.block("w1", "t", None, "which format?", now).unwrap();
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["t", "unblock-t"]);
    assert_eq!(f.scheduler.task("unblock-t").unwrap().phase(), Some("p"));
}

#[test]
fn ctx_reads_writes_globs_counts_and_runs_commands() {
    let mut f = Fixture::new();
    f.write("docs/a.md", "one two three\nfour\n");
    f.write("docs/b.md", "x");
    f.write("docs/deep/c.md", "y");
    f.write(".mcc/skip.md", "z");
    f.load(
        r#"return { name = "ctx", phases = { { name = "p", split = function(ctx)
  assert(ctx.phase == "p" and ctx.workflow == "ctx" and ctx.root ~= nil)
  local paths = ctx.glob("docs/*.md")
  assert(#paths == 2 and paths[1] == "docs/a.md" and paths[2] == "docs/b.md", table.concat(paths, ","))
  assert(#ctx.glob("**/*.md") == 3)
  assert(ctx.word_count("docs/a.md") == 4 and ctx.line_count("docs/a.md") == 2)
  assert(ctx.word_count({ text = "not a file at all" }) == 5 and ctx.line_count({ text = "a\nb" }) == 2)
  ctx.write("out/new/file.txt", "hello")
  assert(ctx.exists("out/new/file.txt") and ctx.read("out/new/file.txt") == "hello")
  local r = ctx.run("echo hi; echo oops >&2; exit 3")
  assert(r.code == 3 and not r.ok and r.stdout == "hi\n" and r.stderr == "oops\n" and not r.timed_out)
  local slow = ctx.run("exec sleep 5", { timeout = "100ms" })
  assert(slow.timed_out and not slow.ok)
  local v = ctx.json.decode('{"a":[1,2,{"b":null}],"c":"d"}')
  assert(v.a[2] == 2 and v.c == "d" and v.a[3].b == nil)
  assert(ctx.json.decode(ctx.json.encode({ x = { 1, 2 } })).x[2] == 2)
  assert(type(ctx.now()) == "number" and ctx.now() > 1.6e9)
  ctx.log("split ran")
  return { { id = "t", description = "d", data = { n = 1, tags = { "a" } } } }
end } } }"#,
    )
    .unwrap();
    assert_eq!(f.ids(), ["t"]);
    assert_eq!(f.scheduler.task("t").unwrap().spec.extra["data"], serde_json::json!({"n": 1, "tags": ["a"]}));
}

#[test]
fn task_tables_take_short_and_old_protocol_names() {
    let mut f = Fixture::new();
    f.load(
        r#"return { name = "names", lease = "5m", phases = { { name = "p", tasks = {
  { id = "short", description = "d", type = "review", read = "a.md", write = { "b.md" }, requirements = { "r" },
    criteria = { "c" }, validation = "true", rules = { "rule" }, lease = "10m" },
  { id = "long", description = "d", context = { targetFiles = { "a.md" }, outputFiles = { "c.md" } },
    acceptance = { criteria = { "c" }, validation = "true" }, dependencies = { "short" } },
} } } }"#,
    )
    .unwrap();
    let short = &f.scheduler.task("short").unwrap().spec;
    assert_eq!(short.kind, "review");
    assert_eq!(short.context.target_files, ["a.md"]);
    assert_eq!(short.context.output_files, ["b.md"]);
    assert_eq!(short.context.relevant_rules, ["rule"]);
    assert_eq!(short.acceptance.criteria, ["c"]);
    assert_eq!(short.acceptance.validation.as_deref(), Some("true"));
    assert_eq!(short.lease.as_deref(), Some("10m"));
    let long = f.scheduler.task("long").unwrap();
    assert_eq!(long.spec.context.output_files, ["c.md"]);
    assert_eq!(long.spec.dependencies, ["short"]);
    assert_eq!(long.spec.lease.as_deref(), Some("5m"), "the workflow's lease is the default");
    assert_eq!(long.state(), TaskState::Waiting);
}

#[test]
fn require_finds_the_workflow_folder_then_built_in_recipes() {
    let mut f = Fixture::new();
    f.write("helpers/names.lua", "return { make = function(i) return 'task-' .. i end }");
    f.write("docs/a.md", "a");
    f.load(
        r#"local names = require("helpers.names")
local fanout = require("fanout")
local mcc = require("mcc")
return mcc.workflow { name = "req", phases = { mcc.phase "p" { split = function(ctx)
  local tasks = fanout.per_file(ctx, "docs/*.md")
  tasks[#tasks + 1] = task { id = names.make(2), description = "second" }
  return tasks
end } } }"#,
    )
    .unwrap();
    assert_eq!(f.ids(), ["docs/a.md", "task-2"]);
    let err = f.load(r#"require("nowhere")"#).err().unwrap();
    assert!(err.starts_with("wf.lua:1: in the workflow file: require(\"nowhere\"): no module found"), "{err}");
}

#[test]
fn a_bad_table_is_refused_with_the_line_it_is_on() {
    let mut f = Fixture::new();
    let cases = [
        ("return 42", "wf.lua:1: the workflow file must return a table"),
        ("return { name = 'x' }", "wf.lua:1: the workflow has no `phases`"),
        ("return {\n name = 'x',\n phases = { { tasks = {} } } }", "wf.lua:3: phase 1 has no `name`"),
        (
            "return {\n name = 'x',\n phases = {\n { name = \"a\", tasks = {} },\n { name = \"a\", tasks = {} } } }",
            "wf.lua:4: two phases are named \"a\"",
        ),
        (
            "return { name = 'x', phases = {\n { name = \"a\", acept = function() end, tasks = {} } } }",
            "wf.lua:2: phase \"a\" has an unknown field `acept`",
        ),
        (
            "return { name = 'x', phases = {\n { name = \"a\" } } }",
            "wf.lua:2: phase \"a\" has neither `tasks` nor `split`",
        ),
        (
            "return { name = 'x', phases = {\n { name = \"a\", tasks = { { id = 't', description = 'd' }, { id = 't', description = 'e' } } } } }",
            "wf.lua:2: in split of phase \"a\": task `t` already exists",
        ),
        (
            "local t = task {\n id = 'x' }\n",
            "wf.lua:1: in the workflow file: task {...}: task `x` has no `description`",
        ),
        (
            "return { name = 'x', phases = {\n { name = \"a\", tasks = {}, on = { timer = { every = 'soon' } } } } }",
            "wf.lua:2: on.timer.every `soon`",
        ),
    ];
    for (source, expected) in cases {
        let err = f.load(source).err().unwrap_or_else(|| panic!("{source} loaded"));
        assert!(err.starts_with(expected), "{source}\n  gave: {err}\n  want: {expected}");
    }
}

#[test]
fn a_script_that_eats_memory_is_stopped() {
    let mut f = Fixture::new();
    let err = f.load("local t = {}\nfor i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end\n").err().unwrap();
    assert!(err.contains("memory limit of 256 MiB reached"), "{err}");
}

#[test]
fn phases_follow_each_other_and_previous_describes_the_earlier_ones() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "chain", phases = {
  { name = "one", tasks = { { id = "a", description = "a" }, { id = "b", description = "b" } } },
  { name = "two", split = function(ctx, previous)
      assert(previous.last.name == "one" and previous.one.all_accepted and previous.one.counts.accepted == 2)
      assert(#previous.tasks == 2 and previous.tasks[2].id == "b" and previous.tasks[1].phase == "one")
      return { { id = "c", description = "after " .. previous.tasks[1].id, after = { "a", "b" } } }
    end },
} }"#,
        )
        .unwrap();
    let now = Instant::now();
    for id in ["a", "b"] {
        assert!(f.scheduler.grant(id, "w", now));
        f.scheduler.submit("w", id, Report::completed(id, "w", vec![]), now).unwrap();
        f.scheduler.judge(id, Verdict::Accept, now).unwrap();
        assert!(!w.finished(&f.scheduler));
    }
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["a", "b", "c"]);
    assert_eq!(f.scheduler.task("c").unwrap().state(), TaskState::Ready);
    assert!(f.scheduler.grant("c", "w", now));
    f.scheduler.submit("w", "c", Report::completed("c", "w", vec![]), now).unwrap();
    f.scheduler.judge("c", Verdict::Accept, now).unwrap();
    assert!(w.finished(&f.scheduler), "the last phase is complete as soon as its last task is accepted");
    w.step(&mut f.scheduler, f.now).unwrap();
    let state = w.state();
    assert_eq!(state[0].1, r#"{"workflow":"chain","phase":"","started":["one","two"]}"#);
}

#[test]
fn a_failed_task_keeps_its_phase_open_and_fires_task_failed() {
    let mut f = Fixture::new();
    f.scheduler.settings.max_attempts = 1;
    let mut w = f
        .load(
            r#"return { name = "fail", phases = {
  { name = "one", tasks = { { id = "a", description = "a" } },
    on = { task_failed = function(task, ctx) ctx.log("failed " .. task.id .. ": " .. task.reasons[1]) ctx.retry(task.id) end } },
  { name = "two", tasks = { { id = "b", description = "b" } } },
} }"#,
        )
        .unwrap();
    let now = Instant::now();
    assert!(f.scheduler.grant("a", "w", now));
    f.scheduler.fail("w", "a", None, "disk full", now).unwrap();
    assert_eq!(f.scheduler.task("a").unwrap().state(), TaskState::Failed);
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(w.take_log(), ["fail: failed a: disk full"]);
    assert_eq!(f.scheduler.task("a").unwrap().state(), TaskState::Ready, "the hook retried it");
    assert_eq!(f.ids(), ["a"], "phase two waits");
}

#[test]
fn accept_verdicts_and_the_default_that_follows_validation() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "judge", phases = {
  { name = "custom", tasks = { { id = "a", description = "a" } },
    accept = function(task, report, ctx)
      if report.notes == "ok" then return true end
      if report.notes == "list" then return false, { "one", "two" } end
      if report.notes == "bare" then return false end
      if report.notes == "validated" then return report.validation.ran and report.validation.passed end
      return "yes"
    end },
  { name = "plain", tasks = { { id = "b", description = "b", validation = "exit 1" } } },
} }"#,
        )
        .unwrap();
    let a = f.scheduler.task("a").unwrap().clone();
    let judge = |w: &mut Workflow, f: &Fixture, notes: &str, outcome: Option<&Outcome>| {
        let mut report = Report::completed("a", "w", vec![]);
        report.notes = Some(notes.to_owned());
        w.accept(&a, &report, outcome, &f.scheduler).map(Option::unwrap)
    };
    assert_eq!(judge(&mut w, &f, "ok", None), Ok(Verdict::Accept));
    assert_eq!(judge(&mut w, &f, "list", None), Ok(Verdict::Reject(vec!["one".into(), "two".into()])));
    assert_eq!(
        judge(&mut w, &f, "bare", None),
        Ok(Verdict::Reject(vec!["rejected by accept of phase \"custom\"".into()]))
    );
    let failed = Outcome { code: Some(1), stdout: String::new(), stderr: "bad".into(), timed_out: false };
    assert!(matches!(judge(&mut w, &f, "validated", Some(&failed)), Ok(Verdict::Reject(_))));
    let err = judge(&mut w, &f, "other", None).unwrap_err();
    assert!(err.0.starts_with("wf.lua: in accept of phase \"custom\": accept must return true"), "{}", err.0);

    let mut spec = a.spec.clone();
    spec.id = "b".into();
    spec.acceptance.validation = Some("exit 1".into());
    f.scheduler.add_tasks(vec![spec], Some("plain"), Instant::now()).unwrap();
    let b = f.scheduler.task("b").unwrap().clone();
    let verdict = w.accept(&b, &Report::completed("b", "w", vec![]), Some(&failed), &f.scheduler).unwrap().unwrap();
    assert_eq!(verdict, Verdict::Reject(vec!["validation `exit 1` exited 1: bad".into()]));
}

#[test]
fn a_timer_fires_when_due_and_asks_the_engine_to_wake_up() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"local n = 0
return { name = "tick", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { timer = { every = "10m", run = function(ctx)
    n = n + 1
    ctx.add_task { id = "tick-" .. n, description = "tick" }
  end } } } } }"#,
        )
        .unwrap();
    let wake = w.next_wakeup().expect("a wakeup for the timer");
    assert_eq!(wake, f.now + Duration::from_mins(10), "measured from the clock the engine passed in");
    w.step(&mut f.scheduler, wake.checked_sub(Duration::from_millis(1)).unwrap()).unwrap();
    assert_eq!(f.ids(), ["a"], "not due yet");
    w.step(&mut f.scheduler, wake).unwrap();
    assert_eq!(f.ids(), ["a", "tick-1"]);
    assert_eq!(w.next_wakeup(), Some(wake + Duration::from_mins(10)));
    w.step(&mut f.scheduler, wake + Duration::from_mins(20)).unwrap();
    assert_eq!(f.ids(), ["a", "tick-1", "tick-2"]);
}

#[test]
fn changed_files_matching_the_glob_reach_the_files_hook() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "files", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { files = { glob = "src/**/*.rs", run = function(paths, ctx)
    for _, p in ipairs(paths) do ctx.add_task { id = "check " .. p, description = "check " .. p } end
  end } } } } }"#,
        )
        .unwrap();
    w.files_changed(vec!["src/a.rs".into(), "README.md".into(), "src/deep/b.rs".into(), "src/a.rs".into()]);
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["a", "check src/a.rs", "check src/deep/b.rs"]);
}

#[test]
fn a_new_worker_fires_worker_joined_and_views_show_hub_state() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "join", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { worker_joined = function(worker, ctx)
    local all = ctx.workers()
    assert(#all == 1 and all[1].name == worker.name and worker.holding == nil and #worker.history == 0)
    assert(#ctx.tasks() == 1 and #ctx.tasks({ state = "ready" }) == 1 and #ctx.tasks({ phase = "nope" }) == 0)
    assert(ctx.task("a").description == "a" and ctx.task("zz") == nil)
    ctx.add_task { id = "welcome-" .. worker.name, description = "say hi", after = { "a" } }
  end } } } }"#,
        )
        .unwrap();
    f.scheduler.see_worker("w1", Instant::now());
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["a", "welcome-w1"]);
}

#[test]
fn a_restored_workflow_does_not_split_a_started_phase_again() {
    let mut f = Fixture::new();
    let source = r#"return { name = "again", phases = {
  { name = "one", split = function(ctx) ctx.log("split") return { { id = "a", description = "a" } } end },
} }"#;
    let mut first = f.load(source).unwrap();
    assert_eq!(first.take_log(), ["again: split"]);
    let state = first.state().remove(0).1;
    let path = f.dir.path().join("wf.lua");
    let mut second = Workflow::load(&path, f.dir.path()).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    second.restore(Some(state), tx.into());
    second.step(&mut f.scheduler, f.now).unwrap();
    assert!(second.take_log().is_empty());
    assert_eq!(f.ids(), ["a"]);
}

#[test]
fn a_worker_silent_for_quiet_after_fires_worker_quiet_once() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "quiet", quiet_after = "10m", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { worker_quiet = function(worker, ctx) ctx.log(worker.name .. " quiet, holding " .. tostring(worker.holding)) end } } } }"#,
        )
        .unwrap();
    assert!(f.scheduler.grant("a", "w1", f.now));
    w.step(&mut f.scheduler, f.now).unwrap();
    assert!(w.take_log().is_empty());
    let wake = w.next_wakeup().expect("a wakeup for the quiet check");
    assert_eq!(wake, f.now + Duration::from_mins(10), "quiet_after after the worker was last seen");
    w.step(&mut f.scheduler, wake.checked_sub(Duration::from_millis(1)).unwrap()).unwrap();
    assert!(w.take_log().is_empty(), "not quiet long enough yet");
    w.step(&mut f.scheduler, wake).unwrap();
    assert_eq!(w.take_log(), ["quiet: w1 quiet, holding a"]);
    w.step(&mut f.scheduler, wake + Duration::from_mins(1)).unwrap();
    assert!(w.take_log().is_empty(), "once per silence");
}

#[test]
fn open_work_outside_the_phases_keeps_the_workflow_from_finishing() {
    let mut f = Fixture::new();
    let mut w = f.load(r#"return { name = "open", phases = { { name = "p", tasks = {} } } }"#).unwrap();
    assert!(w.finished(&f.scheduler));
    f.scheduler.add_tasks(vec![TaskSpec::new("by-hand", "added by a coordinator")], None, Instant::now()).unwrap();
    w.step(&mut f.scheduler, f.now).unwrap();
    assert!(!w.finished(&f.scheduler));
}

#[test]
fn a_phase_with_a_failed_task_is_shown_as_stuck() {
    let mut f = Fixture::new();
    f.scheduler.settings.max_attempts = 1;
    let mut w = f
        .load(r#"return { name = "stuck", phases = { { name = "p", tasks = { { id = "a", description = "a" } } }, { name = "q", tasks = {} } } }"#)
        .unwrap();
    let now = Instant::now();
    assert!(f.scheduler.grant("a", "w", now));
    f.scheduler.fail("w", "a", None, "disk full", now).unwrap();
    let err = w.step(&mut f.scheduler, f.now).unwrap_err();
    assert_eq!(
        err.0,
        "wf.lua: phase \"p\" is stuck: task `a` failed (disk full); retry it (`mcc tasks retry a`) or cancel it"
    );
    assert!(!w.finished(&f.scheduler));
}

#[test]
fn a_runaway_loop_inside_a_coroutine_is_stopped_too() {
    let mut f = Fixture::new();
    let err = f
        .load(
            "return { name = 'co', phases = { { name = 'p', split = function(ctx)\n  local co = coroutine.wrap(function()\n    while true do end\n  end)\n  co()\nend } } }",
        )
        .err()
        .unwrap();
    assert!(
        err.starts_with("wf.lua:3: in split of phase \"p\": runaway script stopped after 50000000 instructions"),
        "{err}"
    );
}

#[test]
fn os_exit_cannot_stop_the_hub() {
    let mut f = Fixture::new();
    let err = f.load("local x = 1\nos.exit(3)\n").err().unwrap();
    assert_eq!(err, "wf.lua:2: in the workflow file: os.exit would stop the hub: return from the function instead");
}

/// Load a workflow whose file-level code is `body`; the error it stops with.
fn refusal(f: &mut Fixture, body: &str) -> String {
    f.load(&format!("local x = 1\n{body}\nreturn {{}}\n")).err().unwrap_or_else(|| panic!("`{body}` was allowed"))
}

#[test]
fn a_workflow_reaches_no_os_io_debug_or_package_and_loads_text_only() {
    let mut f = Fixture::new();
    for (body, says) in [
        ("os.execute('touch pwned')", "os.execute is not available to a workflow"),
        ("io.popen('touch pwned')", "io.popen is not available to a workflow"),
        ("io.open('/etc/passwd')", "io.open is not available to a workflow"),
        ("debug.getinfo(1)", "debug.getinfo is not available to a workflow"),
        ("package.loadlib('libc.so.6', 'system')", "package.loadlib is not available to a workflow"),
        ("dofile('/etc/passwd')", "dofile is not available to a workflow"),
        ("loadfile('/etc/passwd')", "loadfile is not available to a workflow"),
        ("load(string.dump(function() end))", "load: binary chunks (bytecode) are refused"),
    ] {
        let err = refusal(&mut f, body);
        assert!(err.starts_with("wf.lua:2: in the workflow file: ") && err.contains(says), "{body}: {err}");
    }
    assert!(!f.dir.path().join("pwned").exists());
    // Text chunks still load, and the libraries a workflow needs are there.
    f.load("assert(load('return 1 + 1')() == 2)\nassert(string.upper('a') == 'A' and math.max(1, 2) == 2 and utf8.char(72) == 'H')\nassert(coroutine.wrap(function() return table.concat({ 'o', 'k' }) end)() == 'ok')\nreturn { name = 'fine', phases = { { name = 'p', tasks = {} } } }").unwrap();
}

#[test]
fn ctx_file_functions_stay_inside_the_project_root() {
    let mut f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret words").unwrap();
    std::os::unix::fs::symlink(outside.path(), f.dir.path().join("away")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), f.dir.path().join("link.txt")).unwrap();
    let secret = outside.path().join("secret.txt").display().to_string();
    for (body, function) in [
        (format!("ctx.read('{secret}')"), "ctx.read"),
        ("ctx.read('../secret.txt')".to_owned(), "ctx.read"),
        ("ctx.read('docs/../../secret.txt')".to_owned(), "ctx.read"),
        ("ctx.read('away/secret.txt')".to_owned(), "ctx.read"),
        ("ctx.read('link.txt')".to_owned(), "ctx.read"),
        ("ctx.write('away/new.txt', 'x')".to_owned(), "ctx.write"),
        ("ctx.write('missing/../../new.txt', 'x')".to_owned(), "ctx.write"),
        ("ctx.exists('/etc/passwd')".to_owned(), "ctx.exists"),
        ("ctx.word_count('away/secret.txt')".to_owned(), "ctx.word_count"),
        ("ctx.line_count('link.txt')".to_owned(), "ctx.line_count"),
        ("ctx.run('pwd', { cwd = '..' })".to_owned(), "ctx.run: cwd"),
    ] {
        let source = format!(
            "return {{ name = 'fs', phases = {{ {{ name = 'p', split = function(ctx)\n  {body}\n  return {{}}\nend }} }} }}"
        );
        let err = f.load(&source).err().unwrap_or_else(|| panic!("`{body}` was allowed"));
        assert!(err.starts_with("wf.lua:2: in split of phase \"p\": ") && err.contains(function), "{body}: {err}");
        assert!(err.contains("outside the project root"), "{body}: {err}");
    }
    assert!(!outside.path().join("new.txt").exists() && !f.dir.path().parent().unwrap().join("new.txt").exists());
    // Inside the root, absolute or with `..` that stays in, is fine.
    let inside = f.dir.path().join("docs/a.md").display().to_string();
    f.write("docs/a.md", "one two");
    let source = format!(
        "return {{ name = 'ok', phases = {{ {{ name = 'p', split = function(ctx)\n  assert(ctx.read('{inside}') == 'one two' and ctx.word_count('docs/../docs/a.md') == 2)\n  return {{}}\nend }} }} }}"
    );
    f.load(&source).unwrap();
}

#[test]
fn word_count_of_a_missing_file_is_an_error_not_the_words_of_its_name() {
    let mut f = Fixture::new();
    let err = f
        .load("return { name = 'wc', phases = { { name = 'p', split = function(ctx)\n  ctx.word_count('no such file.md')\nend } } }")
        .err()
        .unwrap();
    assert!(err.starts_with("wf.lua:2: in split of phase \"p\": ctx.word_count(\"no such file.md\"):"), "{err}");
    assert!(err.contains("{ text = ... }"), "{err}");
}

#[test]
fn require_reaches_only_the_workflow_folder_recipes_and_built_ins() {
    let mut f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.lua"), "return 'escaped'").unwrap();
    std::os::unix::fs::symlink(outside.path(), f.dir.path().join("linked")).unwrap();
    let tmp = std::env::temp_dir().join("mcc_require_probe.lua");
    std::fs::write(&tmp, "return 'escaped'").unwrap();
    for name in [".tmp.mcc_require_probe", "..x", "a..b", "linked.x", "x/../y"] {
        let err = refusal(&mut f, &format!("require('{name}')"));
        assert!(err.starts_with(&format!("wf.lua:2: in the workflow file: require(\"{name}\"): ")), "{err}");
    }
    let _ = std::fs::remove_file(tmp);
}

#[test]
fn a_ctx_run_past_its_timeout_loses_everything_it_started() {
    let mut f = Fixture::new();
    f.load(
        r#"return { name = "slow", phases = { { name = "p", split = function(ctx)
  local r = ctx.run("echo $$; sleep 600 & echo $!; sleep 600", { timeout = "200ms" })
  assert(r.timed_out and r.code == nil, r.stderr)
  ctx.write("pgid", r.stdout)
  return {}
end } } }"#,
    )
    .unwrap();
    let printed = std::fs::read_to_string(f.dir.path().join("pgid")).unwrap();
    let pids: Vec<i32> = printed.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let [pgid, background] = pids[..] else { panic!("the shell's and the background job's pids: {printed}") };
    crate::command::tests::eventually("the command's group is gone", || {
        crate::command::tests::live_members(pgid).is_empty()
    });
    // Checked by its pid: a file it would write later could not show it lived on.
    let alive = std::fs::read_to_string(format!("/proc/{background}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(!alive, "the background job died with its group");
}

#[test]
fn phase_views_and_ctx_tasks_list_a_phase_in_creation_order_from_the_indexes() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"local function ids(list)
  local out = {}
  for _, t in ipairs(list) do out[#out + 1] = t.id end
  return table.concat(out, ",")
end
local function same(got, want) assert(got == want, "got " .. got .. ", want " .. want) end
return { name = "order", phases = {
  { name = "one", tasks = { { id = "a", description = "a" }, { id = "b", description = "b" }, { id = "c", description = "c" } } },
  { name = "two", split = function(ctx, previous)
      same(ids(previous.one.tasks), "a,b,c")
      same(ids(previous.tasks), "a,c")
      same(ids(ctx.tasks { phase = "one" }), "a,b,c")
      same(ids(ctx.tasks { phase = "one", state = "accepted" }), "a,c")
      same(ids(ctx.tasks { state = "cancelled" }), "b")
      same(ids(ctx.tasks { state = "ready" }), "x")
      same(ids(ctx.tasks { phase = "two" }), "")
      same(ids(ctx.tasks()), "a,b,c,x")
      return { { id = "d", description = "d" } }
    end },
} }"#,
        )
        .unwrap();
    let now = Instant::now();
    // A task outside any phase neither shows in a phase nor holds one open.
    f.scheduler.add_tasks(vec![crate::task::TaskSpec::new("x", "x")], None, now).unwrap();
    for id in ["c", "a"] {
        assert!(f.scheduler.grant(id, "w", now));
        f.scheduler.submit("w", id, Report::completed(id, "w", vec![]), now).unwrap();
        f.scheduler.judge(id, Verdict::Accept, now).unwrap();
        w.step(&mut f.scheduler, f.now).unwrap();
        assert_eq!(f.ids(), ["a", "b", "c", "x"], "phase one is open while b is");
    }
    f.scheduler.cancel("b").unwrap();
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["a", "b", "c", "x", "d"]);
    assert_eq!(f.scheduler.task("d").unwrap().phase(), Some("two"));
    assert!(!w.finished(&f.scheduler), "x and d are open");
}

#[test]
fn complete_reads_counts_and_the_phase_tasks_made_when_first_read() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"return { name = "lazy", phases = {
  { name = "one", tasks = { { id = "a", description = "a" }, { id = "b", description = "b" } },
    complete = function(phase, ctx)
      local tasks = phase.tasks
      assert(rawequal(tasks, phase.tasks), "made once per call")
      assert(phase.name == "one" and phase.counts.ready + phase.counts.accepted == 2 and phase.failed == 0)
      return #tasks == 2 and tasks[1].id == "a" and tasks[2].state == "accepted"
        and phase.counts.accepted == 1 and not phase.all_accepted and phase.nothing == nil
    end },
  { name = "two", tasks = { { id = "c", description = "c" } } },
} }"#,
        )
        .unwrap();
    let now = Instant::now();
    f.scheduler.add_tasks(vec![crate::task::TaskSpec::new("x", "x")], None, now).unwrap();
    assert_eq!(f.ids(), ["a", "b", "x"]);
    assert!(f.scheduler.grant("b", "w", now));
    f.scheduler.submit("w", "b", Report::completed("b", "w", vec![]), now).unwrap();
    f.scheduler.judge("b", Verdict::Accept, now).unwrap();
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["a", "b", "x", "c"]);
}

#[test]
fn added_tasks_are_checked_against_the_hub_the_queued_ones_and_their_own_batch() {
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"local function refused(f, arg, want)
  local ok, e = pcall(f, arg)
  assert(not ok and tostring(e):find(want, 1, true), tostring(e))
end
return { name = "adds", phases = { { name = "p", tasks = { { id = "a", description = "a" } },
  on = { worker_joined = function(worker, ctx)
    ctx.add_task { id = "n1", description = "n1", after = { "a" } }
    ctx.add_tasks { { id = "n2", description = "n2", after = { "n1", "n4" } }, { id = "n3", description = "n3" },
      { id = "n4", description = "n4" } }
    refused(ctx.add_task, { id = "a", description = "again" }, "task `a` already exists")
    refused(ctx.add_task, { id = "n3", description = "again" }, "task `n3` already exists")
    refused(ctx.add_tasks, { { id = "d", description = "d" }, { id = "d", description = "d" } }, "task `d` already exists")
    refused(ctx.add_task, { id = "e", description = "e", after = { "nope" } }, "depends on unknown task `nope`")
  end } } } }"#,
        )
        .unwrap();
    f.scheduler.see_worker("w1", Instant::now());
    w.step(&mut f.scheduler, f.now).unwrap();
    assert_eq!(f.ids(), ["a", "n1", "n2", "n3", "n4"]);
    assert_eq!(f.scheduler.task("n2").unwrap().spec.dependencies, ["n1", "n4"]);
}

/// What a runaway test script may spend: the same budget as a hub's, smaller,
/// so a test sees it stop without waiting seconds for it.
const QUICK: limits::Limits =
    limits::Limits { instructions: 2_000_000, time: Duration::from_millis(200), wall_time: Duration::from_secs(3) };

/// Load `source` as the workflow file under [`QUICK`]; the error it stopped
/// with (each names what stopped it, so no test times it).
fn stopped(f: &mut Fixture, source: &str) -> String {
    let path = f.write("wf.lua", source);
    let loaded =
        Workflow::load_limited(&path, f.dir.path(), QUICK).and_then(|mut w| w.step_waiting(&mut f.scheduler, f.now));
    loaded.err().unwrap_or_else(|| panic!("loaded: {source}"))
}

#[test]
fn trimming_100_kb_of_worker_notes_ends_in_the_budget_s_error_naming_the_pattern() {
    let mut f = Fixture::new();
    // Whitespace in the middle is what makes `.-` then `%s*$` quadratic.
    let err = stopped(
        &mut f,
        "local notes = 'x' .. string.rep(' ', 100000) .. 'x'\nlocal trimmed = notes:match('^%s*(.-)%s*$')\nreturn {}\n",
    );
    assert!(
        err.starts_with(
            "wf.lua:2: in the workflow file: string.match: the pattern \"^%s*(.-)%s*$\" on 100002 bytes of text stopped after "
        ),
        "{err}"
    );
    assert!(err.contains("anchor the pattern (^), make each repetition take only what the next cannot"), "{err}");
}

#[test]
fn a_pattern_that_backtracks_exponentially_on_short_text_is_stopped_and_pcall_cannot_catch_it() {
    for body in [
        "local x = ('a'):rep(500):match('(.-)(.-)(.-)b')",
        "local ok = pcall(string.match, ('a'):rep(500), '(.-)(.-)(.-)b')\nerror('went on')",
        "for a in ('a'):rep(500):gmatch('(.-)(.-)(.-)b') do end",
        "while true do pcall(string.gsub, ('a'):rep(500), '(.-)(.-)(.-)b', '') end",
        "local n = ('a'):rep(500):find('(.-)(.-)(.-)b', 1, false)",
    ] {
        let mut f = Fixture::new();
        let err = stopped(&mut f, &format!("local y = 1\n{body}\nreturn {{}}\n"));
        assert!(err.starts_with("wf.lua:2: in the workflow file: string."), "{body}: {err}");
        assert!(err.contains("the pattern \"(.-)(.-)(.-)b\" on 500 bytes of text stopped after"), "{body}: {err}");
    }
}

#[test]
fn long_text_with_patterns_that_do_not_backtrack_far_still_works() {
    let mut f = Fixture::new();
    let err = stopped(
        &mut f,
        r#"local notes = string.rep("all good ", 2000) .. "PASS"
assert(notes:find("PASS", 1, true) == #notes - 3)
assert(notes:match("PASS$") == "PASS")
assert(select(2, notes:gsub("good", "fine")) == 2000)
assert(#notes:match("^%s*(.-)%s*$") == #notes)
local words = 0
for w in notes:gmatch("%a+") do words = words + 1 end
assert(words == 4001)
-- The linear trim docs/workflows.md shows, on the text the quadratic one cannot take.
local s = "  x" .. string.rep(" ", 100000) .. "y  "
local i = s:find("%S")
assert(s:sub(i, s:match("^.*%S()") - 1) == "x" .. string.rep(" ", 100000) .. "y")
error("all ran")"#,
    );
    assert!(err.starts_with("wf.lua:13: in the workflow file: all ran"), "{err}");
}

#[test]
fn a_gsub_result_past_the_frame_limit_is_a_clear_error() {
    let mut f = Fixture::new();
    let err = refusal(&mut f, "local s = string.rep('x', 600000)\nlocal big = s:gsub('x', 'yy')");
    assert_eq!(
        err,
        "wf.lua:3: in the workflow file: string.gsub: the result is over 1048576 bytes (the frame limit); replace in smaller pieces of the text"
    );
}

#[test]
fn pattern_errors_are_lua_s_own_strings_which_pcall_catches() {
    let mut f = Fixture::new();
    let err = refusal(
        &mut f,
        r#"local ok, e = pcall(function() local x = ("abc"):match("(%") end)
assert(not ok and e == "wf.lua:2: malformed pattern (ends with '%')", e)
ok, e = pcall(function() local x = string.find("abc", {}) end)
assert(e == "wf.lua:4: bad argument #2 to 'find' (string expected, got table)", e)
ok, e = pcall(function() local x = ("abc"):gsub("b", true) end)
assert(e == "wf.lua:6: bad argument #2 to 'gsub' (string/function/table expected, got boolean)", e)
ok, e = pcall(function() local x = ("abc"):gsub("b", function() error("mine") end) end)
assert(e == "wf.lua:8: mine", e)
ok, e = pcall(function() local x = ("abc"):gsub("b", function() error({ code = 1 }) end) end)
error("done")"#,
    );
    assert_eq!(err, "wf.lua:11: in the workflow file: done");
}

#[test]
fn time_in_c_functions_counts_against_the_budget() {
    let mut f = Fixture::new();
    // Each concatenation takes a while, in few instructions.
    let err = stopped(&mut f, "local t = {}\nfor i = 1, 100000 do t[i] = 'x' end\nwhile true do table.concat(t) end\n");
    assert!(err.starts_with("wf.lua:3: in the workflow file: runaway script stopped after "), "{err}");
    // Time stopped it, not the instruction count: the loop runs few instructions.
    assert!(err.contains("(the time one call may take"), "{err}");
}

#[test]
fn a_pcall_loop_cannot_catch_the_budget() {
    for body in [
        "while true do pcall(function() while true do end end) end",
        "while true do pcall(pcall, function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
        "while true do xpcall(error, function() while true do end end) end",
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        "while true do pcall(string.rep, 'x', 1) end",
    ] {
        let mut f = Fixture::new();
        let err = stopped(&mut f, &format!("local x = 1\n{body}\nreturn {{}}\n"));
        assert!(err.contains("in the workflow file: runaway script stopped after"), "{body}: {err}");
    }
}

#[test]
fn a_finalizer_is_refused_as_it_would_run_outside_the_budget() {
    let mut f = Fixture::new();
    let err = refusal(&mut f, "setmetatable({}, { __gc = function() while true do end end })\ncollectgarbage()");
    assert_eq!(
        err,
        "wf.lua:2: in the workflow file: setmetatable: __gc is not available to a workflow (a finalizer runs outside the budget)"
    );
}

#[test]
fn a_100000_deep_table_is_a_clear_error_not_a_crash() {
    let mut f = Fixture::new();
    let err = stopped(
        &mut f,
        r#"local deep = {}
for i = 1, 100000 do deep = { deep } end
return { name = "deep", phases = { { name = "p", tasks = { { id = "a", description = "d", data = deep } } } } }"#,
    );
    assert!(err.contains("a task: the table is nested more than 128 levels deep; flatten it"), "{err}");
    for call in ["ctx.json.encode(deep)", "ctx.add_task { id = 'x', description = 'x', data = deep }"] {
        let mut f = Fixture::new();
        let err = stopped(
            &mut f,
            &format!(
                "return {{ name = 'deep', phases = {{ {{ name = 'p', split = function(ctx)\n  local deep = {{}}\n  for i = 1, 100000 do deep = {{ deep }} end\n  {call}\nend }} }} }}"
            ),
        );
        assert!(err.contains("the table is nested more than 128 levels deep"), "{call}: {err}");
    }
}

#[test]
fn a_table_reached_twice_at_every_level_is_refused_before_it_expands() {
    let mut f = Fixture::new();
    let err = stopped(
        &mut f,
        "return { name = 'dag', phases = { { name = 'p', split = function(ctx)\n  local t = {}\n  for i = 1, 60 do t = { t, t } end\n  ctx.json.encode(t)\nend } } }",
    );
    assert!(err.contains("ctx.json.encode: the table holds more than 200000 values"), "{err}");
}

#[test]
fn a_module_that_requires_itself_ends_in_an_error_not_a_stack_overflow() {
    let mut f = Fixture::new();
    f.write("again.lua", "return require('again')\n");
    let err = stopped(&mut f, "require('again')\nreturn {}\n");
    assert!(err.contains("require(\"again\"): calls nested too deep (a module that requires itself"), "{err}");
    // A metamethod that calls back into ctx, from a Rust function that reads it.
    let mut f = Fixture::new();
    let err = stopped(
        &mut f,
        "return { name = 'meta', phases = { { name = 'p', split = function(ctx)\n  local filter\n  filter = setmetatable({}, { __index = function() return ctx.tasks(filter) end })\n  ctx.tasks(filter)\nend } } }",
    );
    assert!(err.contains("ctx.tasks: calls nested too deep"), "{err}");
}

#[test]
fn a_hub_that_died_loading_a_workflow_runs_the_last_version_that_loaded_and_says_so() {
    let mut f = Fixture::new();
    std::fs::create_dir(f.dir.path().join(".mcc")).unwrap();
    let version = |n: u32| {
        format!(
            "local helper = require('helper')\nreturn {{ name = 'v{n}' .. helper, phases = {{ {{ name = 'p', tasks = {{}} }} }} }}\n"
        )
    };
    f.write("helper.lua", "return '-helper-1'");
    let path = f.write("wf.lua", &version(1));
    let mut first = super::load(&path, f.dir.path()).unwrap();
    first.step(&mut f.scheduler, f.now).unwrap();

    // Version 2 killed the hub while it loaded: its record of loading is left behind.
    f.write("wf.lua", &version(2));
    f.write("helper.lua", "return '-helper-2'");
    loading::Records::at(f.dir.path()).unwrap().loading(&path, &version(2)).unwrap();
    let mut again = super::load(&path, f.dir.path()).unwrap();
    assert_eq!(again.name(), "v1-helper-1", "the last version that loaded, with its module as it was");
    let log = again.take_log().join("\n");
    assert!(
        log.contains("the hub stopped while loading wf.lua last time (a crash, or killed); that text is not run again: edit the file to try it; running the last version that loaded"),
        "{log}"
    );
    // And at every start after, until the file changes: no loop.
    assert_eq!(super::load(&path, f.dir.path()).unwrap().name(), "v1-helper-1");
    f.write("wf.lua", &version(3));
    assert_eq!(super::load(&path, f.dir.path()).unwrap().name(), "v3-helper-2");
}

#[test]
fn a_hub_that_died_loading_a_first_workflow_holds_it_with_a_reason() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.path().join(".mcc")).unwrap();
    let source = "return { name = 'x', phases = { { name = 'p', tasks = {} } } }";
    let path = f.write("wf.lua", source);
    loading::Records::at(f.dir.path()).unwrap().loading(&path, source).unwrap();
    let err = super::load(&path, f.dir.path()).err().unwrap();
    assert!(err.ends_with("edit the file to try it (no earlier version of it loaded)"), "{err}");
}

#[test]
fn deep_recursion_in_lua_or_through_its_c_functions_is_an_error_not_a_crash() {
    for (body, expected) in [
        ("local function f() return f() + 1 end\nf()", "stack overflow"),
        (
            "local t\nt = setmetatable({}, { __tostring = function() return tostring(t) end })\ntostring(t)",
            "stack overflow",
        ),
        // The innermost pcall catches Lua's "C stack overflow": the script goes on.
        ("local function f() return pcall(f) end\nf()\nerror('went on')", "went on"),
    ] {
        let mut f = Fixture::new();
        let err = refusal(&mut f, body);
        assert!(err.contains(expected), "{body}: {err}");
    }
}

#[test]
fn the_best_of_3_recipe_waits_for_every_racer_then_keeps_the_most_passing_tests() {
    use crate::engine::Candidate;
    let mut f = Fixture::new();
    let mut w = f
        .load(
            r#"local best = require("best-of-3")
return { name = "race", phases = { { name = "p",
  tasks = { best.task { id = "fix", description = "fix it", write = "calc.py", validation = "pytest -q" } },
  choose = best.choose } } }"#,
        )
        .unwrap();
    assert_eq!(f.ids(), ["fix", "fix~race1", "fix~race2", "fix~race3"], "best.task races on three workers");
    let ran = |stdout: &str, code: i32| Outcome {
        code: Some(code),
        stdout: stdout.into(),
        stderr: String::new(),
        timed_out: false,
    };
    let candidate = |id: &str, racer: u32, validation: Option<Outcome>, size: u64| Candidate {
        id: id.into(),
        racer,
        worker: Some(format!("w{racer}")),
        validation,
        size,
        notes: None,
    };
    let candidates = vec![
        candidate("fix~race1", 1, Some(ran("3 passed, 1 failed", 1)), 10),
        candidate("fix~race2", 2, Some(ran("4 passed in 0.1s", 0)), 50),
        candidate("fix~race3", 3, None, 5),
    ];
    let race = f.scheduler.task("fix").unwrap().clone();
    assert_eq!(w.choose(&race, &candidates, 1, &f.scheduler), Ok(None), "it waits while a racer runs");
    assert_eq!(w.choose(&race, &candidates, 0, &f.scheduler), Ok(Some("fix~race2".to_owned())));
}

#[test]
fn a_workflows_presence_grace_is_the_hubs_grace_while_it_runs() {
    let mut f = Fixture::new();
    f.load(r#"return { name = "g", presence_grace = "5s", phases = { { name = "p", tasks = { { id = "a", description = "a" } } } } }"#)
        .unwrap();
    assert_eq!(f.scheduler.settings.presence_grace, Duration::from_secs(5));
}
