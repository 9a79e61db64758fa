//! `mcc run`: example workflows run to the end with spawned workers.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Hub, Printed, Project, eventually, mcc_bin};

/// A project holding a copy of one of the repository's workflows.
fn project_with(workflow: &str) -> Project {
    let project = Project::new();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows").join(workflow);
    project.write(&format!("workflows/{workflow}"), &std::fs::read_to_string(source).unwrap());
    project
}

fn run(project: &Project, workflow: &str, workers: usize, script: &str) -> crate::support::Run {
    let n = workers.to_string();
    project
        .mcc()
        .args(["run", &format!("workflows/{workflow}"), "--port", "0", "--spawn", &n, "--", "sh", script])
        .run()
}

#[test]
fn the_demo_runs_with_a_rejection_a_retry_and_a_second_phase() {
    let project = project_with("demo.lua");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/demo/worker.sh");
    project.write("workflows/demo/worker.sh", &std::fs::read_to_string(script).unwrap());
    let out = run(&project, "demo.lua", 3, "workflows/demo/worker.sh");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("workflow finished"), "{}", out.stdout);
    assert!(out.stdout.contains("7 tasks, 8 attempts, 1 rejection, "), "{}", out.stdout);
    assert!(out.stdout.contains("phase notes") && out.stdout.contains("phase index"), "{}", out.stdout);
    // Once `index`, the second phase, finished, the run still names it: the
    // phase comes in the workflow's order, not the last of them by name.
    let last_progress = out.stdout.lines().rfind(|l| l.contains("s · phase ")).unwrap_or_default();
    assert!(last_progress.contains(" · phase index · 7 accepted"), "{last_progress}\n{}", out.stdout);
    // The rejection was seen as it happened: task, worker, attempt, why.
    let rejected = out.stdout.lines().find(|l| l.starts_with("rejected note-2 (spawn-")).unwrap_or_default();
    assert!(
        rejected.contains(", attempt 1): demo-out/notes/attempts.md has only") && rejected.contains("write at least"),
        "{rejected:?}\n{}",
        out.stdout
    );
    let index = project.read("demo-out/INDEX.md");
    assert_eq!(index.lines().filter(|l| l.starts_with("- [")).count(), 6, "{index}");
    assert!(project.read("demo-out/notes/attempts.md").contains("attempt 2"));

    // Run again, finished: it says so before a hub starts or a worker is spawned.
    let again = run(&project, "demo.lua", 3, "workflows/demo/worker.sh");
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.starts_with("this workflow had already finished in an earlier run; add --fresh to start it over"),
        "{again:?}"
    );
    assert!(!again.stdout.contains("hub on ") && !again.stdout.contains("spawned"), "{again:?}");
    assert!(!again.stdout.contains("this run took"), "a run that did nothing took no time: {again:?}");
    assert!(!project.path(".mcc/hub.json").exists(), "no hub was started");
}

#[test]
fn phase2_summarizes_readmes_in_parallel_then_indexes_them() {
    let project = project_with("phase2.lua");
    for name in ["alpha", "beta", "gamma"] {
        project.write(&format!("docs/{name}/README.md"), &format!("# {name}\nA project called {name}.\n"));
    }
    project.write(
        "w.sh",
        r##"set -e
mkdir -p summaries
case "$MCC_TASK_ID" in
  summary-*) name=${MCC_TASK_ID#summary-}
    { echo "# $name"; i=0; while [ $i -lt 120 ]; do printf 'word '; i=$((i+1)); done; echo; } > "summaries/$name.md" ;;
  index) for f in summaries/*.md; do [ "$f" = summaries/INDEX.md ] || echo "- [$(basename "$f")]($f)"; done > summaries/INDEX.md ;;
esac
"##,
    );
    let out = run(&project, "phase2.lua", 3, "w.sh");
    assert_eq!(out.code, 0, "{out:?}");
    let index = project.read("summaries/INDEX.md");
    for name in ["alpha", "beta", "gamma"] {
        assert!(index.contains(&format!("{name}.md")), "{index}");
    }
}

#[test]
fn map_reduce_fans_out_over_a_glob_and_joins_at_the_end() {
    let project = project_with("map-reduce.lua");
    for name in ["a", "b", "c", "d"] {
        project.write(&format!("input/{name}.txt"), name);
    }
    project.write(
        "w.sh",
        r#"set -e
mkdir -p output
case "$MCC_TASK_ID" in
  map-*) name=${MCC_TASK_ID#map-}; tr a-z A-Z < "input/$name.txt" > "output/$name.out" ;;
  reduce) cat output/*.out > output/ALL ;;
esac
"#,
    );
    let out = run(&project, "map-reduce.lua", 2, "w.sh");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(project.read("output/ALL").split_whitespace().collect::<String>(), "ABCD");
}

#[test]
fn a_pipeline_runs_each_stage_after_the_one_before() {
    let project = project_with("pipeline.lua");
    project.write(
        "w.sh",
        r#"set -e
stage=${MCC_TASK_ID%%-*}; feature=${MCC_TASK_ID#*-}
mkdir -p "work/$feature"
echo "$stage" > "work/$feature/$stage.md"
echo "$MCC_TASK_ID" >> order.log
"#,
    );
    let out = run(&project, "pipeline.lua", 3, "w.sh");
    assert_eq!(out.code, 0, "{out:?}");
    let order: Vec<String> = project.read("order.log").lines().map(str::to_owned).collect();
    assert_eq!(order.len(), 12);
    for feature in ["login", "search", "export"] {
        let at = |stage: &str| order.iter().position(|l| *l == format!("{stage}-{feature}")).unwrap();
        assert!(at("design") < at("build") && at("build") < at("test") && at("test") < at("document"), "{order:?}");
    }
}

#[test]
fn a_review_loop_sends_rejected_drafts_back_to_the_writer_and_mcc_run_attaches_to_a_running_hub() {
    let project = project_with("review.lua");
    let hub = Hub::start(project.root(), &[]);
    project.write(
        "writer.sh",
        r##"set -e
doc=$(echo "$MCC_TASK_ID" | cut -d- -f2)
mkdir -p drafts
{ echo "# $doc"; grep -o 'the review said: [^"]*' "$MCC_TASK_FILE" || true; } > "drafts/$doc.md"
"##,
    );
    project.write(
        "reviewer.sh",
        r#"set -e
doc=$(echo "$MCC_TASK_ID" | cut -d- -f2)
mkdir -p reviews
if [ "$MCC_TASK_ID" = review-intro-1 ]; then echo "REJECT: too short" > "reviews/$doc.txt"; else echo APPROVE > "reviews/$doc.txt"; fi
"#,
    );
    let spawn = |name: &str, script: &str| {
        Command::new(mcc_bin())
            .args(["worker", "run", "--as", name, "--", "sh", script])
            .current_dir(project.root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut writer = spawn("writer", "writer.sh");
    let mut reviewer = spawn("reviewer", "reviewer.sh");
    let out = project.mcc().args(["run", "workflows/review.lua"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("attached to the running hub at {}", hub.url)), "{}", out.stdout);
    assert_eq!(writer.wait().unwrap().code(), Some(4), "the writer was told all is done");
    assert_eq!(reviewer.wait().unwrap().code(), Some(4));
    assert!(project.read("drafts/intro.md").contains("the review said: too short"), "the writer saw the review");
    assert!(project.read("reviews/intro.txt").starts_with("APPROVE"));
    let report = project.mcc().args(["report", "--json"]).run().json();
    assert_eq!(report["tasks"], 6, "two rounds for intro, one for usage: {report}");
    let by_worker = report["workers"].to_string();
    assert!(by_worker.contains("\"reviewer\"") && by_worker.contains("\"writer\""), "{by_worker}");
}

#[test]
fn fix_tests_loops_until_the_validation_passes() {
    let project = project_with("fix-tests.lua");
    project.write("tests/check.sh", "grep -q fixed src/code.txt || { echo 'code is still broken' >&2; exit 1; }\n");
    project.write("src/code.txt", "broken\n");
    // The first attempt changes nothing; the second one, told why, fixes the code.
    project.write(
        "w.sh",
        r#"[ "$MCC_ATTEMPT" = 1 ] && exit 0
echo "$MCC_REASONS" > reasons.txt
echo fixed > src/code.txt
"#,
    );
    let out = run(&project, "fix-tests.lua", 1, "w.sh");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(project.read("reasons.txt").contains("code is still broken"), "the rejection reached the worker");
    assert!(out.stdout.contains("1 rejection, "), "{}", out.stdout);
}

#[test]
fn a_run_killed_mid_phase_resumes_without_splitting_again_or_losing_work() {
    let project = Project::new();
    project.write(
        "workflows/resume.lua",
        r#"return workflow {
  name = "resume",
  phases = {
    phase "one" {
      split = function(ctx)
        ctx.run("echo one >> split.log")
        return { task { id = "a", description = "a" }, task { id = "b", description = "b" }, task { id = "c", description = "c" } }
      end,
    },
    phase "two" {
      split = function(ctx)
        ctx.run("echo two >> split.log")
        return { task { id = "d", description = "d" } }
      end,
    },
  },
}
"#,
    );
    // Task c waits for a file that appears only after the crash.
    project.write(
        "w.sh",
        "[ \"$MCC_TASK_ID\" = c ] && while [ ! -f go ]; do sleep 0.05; done\necho \"$MCC_TASK_ID\" >> done.log\n",
    );
    let mut first = {
        use std::os::unix::process::CommandExt;
        Command::new(mcc_bin())
            .args(["run", "workflows/resume.lua", "--port", "0", "--spawn", "2", "--", "sh", "w.sh"])
            .current_dir(project.root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    eventually("a and b are done", || {
        std::fs::read_to_string(project.path("done.log")).is_ok_and(|t| t.lines().count() == 2)
    });
    // The whole session dies at once: `mcc run`, its hub and its workers.
    Command::new("kill").args(["-KILL", "--", &format!("-{}", first.id())]).status().unwrap();
    first.wait().unwrap();
    project.write("go", "");
    let out =
        project.mcc().args(["run", "workflows/resume.lua", "--port", "0", "--spawn", "2", "--", "sh", "w.sh"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    // After a resume, this run's time and the whole log's span are two figures, each named.
    assert!(out.stdout.contains("this run took ") && out.stdout.contains("the event log spans "), "{}", out.stdout);
    assert_eq!(project.read("split.log"), "one\ntwo\n", "split ran once per phase");
    let db = rusqlite::Connection::open(project.path(".mcc/state.db")).unwrap();
    let accepted: Vec<String> = db
        .prepare("SELECT task_id FROM events WHERE kind = 'accepted' ORDER BY task_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(accepted, ["a", "b", "c", "d"], "each task accepted exactly once");
}

/// An `mcc run` killed (its hub with it) if the test fails before it ends.
struct Running(std::process::Child);

/// A project whose one workflow, `workflows/one.lua`, has one phase of one task `a`.
fn project_with_one_task() -> Project {
    let project = Project::new();
    project.write(
        "workflows/one.lua",
        r#"return workflow {
  name = "one",
  phases = { phase "only" { split = function(ctx) return { task { id = "a", description = "a" } } end } },
}
"#,
    );
    project
}

/// `mcc run workflows/one.lua` in the background, its stdout piped.
fn run_in_background(project: &Project) -> Running {
    Running(
        Command::new(mcc_bin())
            .args(["run", "workflows/one.lua", "--port", "0"])
            .current_dir(project.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mcc_run_shows_a_workers_question_with_the_command_that_answers_it_and_goes_on_once_answered() {
    let project = project_with_one_task();
    let mut run = run_in_background(&project);
    let mut printed = Printed::of(&mut run.0);
    printed.wait_for("1 ready");
    let worker = |args: &[&str]| project.mcc().args(["worker"]).args(args).args(["--as", "w1", "--wait", "0s"]).run();
    let next = worker(&["next"]);
    assert_eq!(next.code, 0, "{next:?}");
    let blocked = worker(&["block", "a", "--question", "tabs or spaces?"]);
    assert!(blocked.stdout.contains("task a waits for the engineer"), "{blocked:?}");
    // Said once as it happens, then kept on the progress screen until answered.
    printed.wait_for("question on a (w1, attempt 1): tabs or spaces? → mcc answer a \"...\"");
    printed.wait_for("blocked a: tabs or spaces? → mcc answer a \"...\"");
    let answered = project.mcc().args(["answer", "a", "spaces"]).run();
    assert_eq!(answered.code, 0, "{answered:?}");
    // The answer hands the task back to w1, which asks for it again.
    let next = worker(&["next"]);
    assert!(next.stdout.contains("spaces"), "{next:?}");
    let done = worker(&["done", "a"]);
    assert_eq!(done.code, 4, "all done: {done:?}");
    printed.wait_for("1 accepted");
    assert!(run.0.wait().unwrap().success(), "the run finished");
}

#[test]
fn an_attached_mcc_run_says_the_run_stopped_when_the_terminal_owning_the_hub_is_interrupted_and_status_says_how_to_resume()
 {
    let project = project_with_one_task();
    let mut owner = run_in_background(&project);
    let mut owner_printed = Printed::of(&mut owner.0);
    owner_printed.wait_for("1 ready");
    let mut attached = run_in_background(&project);
    let mut printed = Printed::of(&mut attached.0);
    printed.wait_for("attached to the running hub");
    printed.wait_for("1 ready");
    // Ctrl-C in the owner's terminal: it stops the hub with its usual words,
    // but no task was done, and the attached terminal says so.
    Command::new("kill").args(["-INT", &owner.0.id().to_string()]).status().unwrap();
    printed.wait_for("the hub stopped before the workflow ended");
    printed.wait_for("workflow stopped before the end");
    assert_eq!(attached.0.wait().unwrap().code(), Some(1), "not finished");
    owner_printed.wait_for("stopped: resume with `mcc run workflows/one.lua --port 0`");
    assert_eq!(owner.0.wait().unwrap().code(), Some(130), "Ctrl-C, as shells number it");
    // The resume line was all: no stuck-task advice when nothing was stuck.
    let rest = owner_printed.rest();
    assert!(rest.iter().all(|l| !l.contains("mcc tasks retry") && !l.contains("next:")), "{rest:?}");
    // The store says the run stopped, with the command that resumes it.
    let status = project.mcc().args(["status"]).run();
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("workflow ") && status.stdout.contains(" (stopped)"), "{}", status.stdout);
    assert!(!status.stdout.contains("(running)"), "{}", status.stdout);
    assert!(status.stdout.contains("stopped: resume with `mcc run workflows/one.lua`"), "{}", status.stdout);
}

#[test]
fn new_starts_a_workflow_from_a_recipe_and_recipes_lists_them() {
    let project = Project::new();
    let list = project.mcc().args(["recipes"]).run();
    assert_eq!(list.code, 0, "{list:?}");
    for name in ["demo", "phase2", "map-reduce", "pipeline", "review", "fix-tests"] {
        assert!(list.stdout.lines().any(|l| l.starts_with(name)), "{name} missing: {}", list.stdout);
    }
    let made = project.mcc().args(["new", "site-review", "--recipe", "review"]).run();
    assert_eq!(made.code, 0, "{made:?}");
    assert!(made.stdout.contains("mcc check workflows/site-review.lua"), "{}", made.stdout);
    assert!(project.read("workflows/site-review.lua").contains("name = \"site-review\""));
    let again = project.mcc().args(["new", "site-review", "--recipe", "review"]).run();
    assert_eq!(again.code, 1, "never overwrite: {again:?}");
    let unknown = project.mcc().args(["new", "x", "--recipe", "nope"]).run();
    assert!(
        unknown.stderr.contains("no recipe `nope`") && unknown.stderr.contains("mcc recipes"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_like_any_unix_tool() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(mcc_bin()).arg("recipes").stdout(writer).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no panic message");
}

/// Processes whose working folder is inside `root` (what a run left behind).
fn processes_in(root: &Path) -> Vec<String> {
    let root = std::fs::canonicalize(root).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else { continue };
        if cwd.starts_with(&root) {
            let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!("{} {}", entry.file_name().to_string_lossy(), cmdline.replace('\0', " ")));
        }
    }
    found
}

/// The test scripts take a while, so the workflow's split (which runs each
/// once, one after the other) outlasts `mcc run`'s wait for the hub's first
/// answer several times over: a hub whose engine waited on them would be
/// taken for a dead one.
#[test]
fn fix_tests_whose_scripts_outlast_mcc_runs_answer_wait_stays_attached_and_leaves_nothing_behind() {
    let project = project_with("fix-tests.lua");
    for name in ["a", "b"] {
        project.write(
            &format!("tests/{name}.sh"),
            &format!("sleep 0.6\ntest -f fixed-{name} || {{ echo '{name} is broken' >&2; exit 1; }}\n"),
        );
    }
    project.write("w.sh", "touch \"fixed-${MCC_TASK_ID#fix-}\"\n");
    let out = project
        .mcc()
        .args(["run", "workflows/fix-tests.lua", "--port", "0", "--answer-wait", "200ms", "--spawn", "2", "--"])
        .args(["sh", "w.sh"])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("workflow finished"), "{}", out.stdout);
    assert!(!project.path(".mcc/hub.json").exists(), "the hub's address file was removed");
    eventually("no process of the run is left", || processes_in(project.root()).is_empty());
}
