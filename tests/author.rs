//! A workflow author is never surprised: typos and wrong types are errors
//! with `file:line` (the line that made the task), `mcc check` lists them
//! all and is never silent about a phase that creates nothing, every command
//! finds the project from a subdirectory (`mcc new` too), and `mcc run`
//! neither replaces a running workflow unasked nor wipes a run when told how
//! to resume it.

use std::process::{Child, Command, Stdio};

use crate::support::{Mcc, Project, eventually, mcc_bin};

/// `mcc check FILE` in the project root.
fn check(project: &Project, file: &str) -> crate::support::Run {
    project.mcc().args(["check", file]).run()
}

#[test]
fn a_misspelled_task_field_is_an_error_naming_its_line_and_the_field_it_meant() {
    let project = Project::new();
    project.write(
        "workflows/typo.lua",
        r#"return workflow {
  name = "typo",
  phases = {
    phase "p" {
      tasks = {
        { id = "a", description = "Write a",
          writes = "a.md" },
      },
    },
  },
}
"#,
    );
    let out = check(&project, "workflows/typo.lua");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("workflows/typo.lua:7: ")
            && out.stderr.contains("unknown field `writes` (did you mean `write`?)"),
        "{}",
        out.stderr
    );
    // The same through the `task { }` constructor, at the line of the call.
    project.write(
        "workflows/typo2.lua",
        "return workflow {\n  name = \"typo2\",\n  phases = { phase \"p\" { tasks = {\n    task { id = \"a\", description = \"d\", criterias = \"ok\" } } } },\n}\n",
    );
    let out = check(&project, "workflows/typo2.lua");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("workflows/typo2.lua:4: ")
            && out.stderr.contains("unknown field `criterias` (did you mean `criteria`?)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_field_of_the_wrong_type_says_wrong_type_not_missing() {
    let project = Project::new();
    project.write(
        "workflows/types.lua",
        "return {\n  name = 5,\n  lease = \"forever\",\n  phases = { { name = \"p\", tasks = { { id = \"a\", description = \"d\", write = 7 } } } },\n}\n",
    );
    let out = check(&project, "workflows/types.lua");
    assert_eq!(out.code, 1, "{out:?}");
    let err = &out.stderr;
    assert!(err.contains("types.lua:2: ") && err.contains("`name` has the wrong type: expected a string"), "{err}");
    assert!(!err.contains("has no `name`"), "{err}");
    assert!(err.contains("types.lua:3: lease `forever` is not a duration"), "{err}");
    assert!(!err.contains("expected number at 0"), "humantime's words stay inside: {err}");
    assert!(err.contains("`write` has the wrong type: expected a string or a list of strings, got number"), "{err}");
}

#[test]
fn check_lists_every_error_not_only_the_first() {
    let project = Project::new();
    project.write(
        "workflows/many.lua",
        r#"return {
  name = "many",
  leese = "30m",
  phases = {
    { name = "one", acept = function() return true end, tasks = { { id = "a", description = "A" } } },
    { name = "two", tasks = { { id = "b", description = "B", reed = "x.md" }, { id = "c" } } },
  },
}
"#,
    );
    let out = project.mcc().args(["check", "workflows/many.lua", "--json"]).run();
    assert_eq!(out.code, 1, "{out:?}");
    let errors = out.json()["errors"].to_string();
    for expected in [
        "many.lua:3: the workflow has an unknown field `leese` (did you mean `lease`?)",
        "many.lua:5: phase \\\"one\\\" has an unknown field `acept` (did you mean `accept`?)",
        "unknown field `reed` (did you mean `read`?)",
        "task `c` has no `description`",
    ] {
        assert!(errors.contains(expected), "missing {expected}\n in {errors}");
    }
}

/// A project with a workflow that globs `docs/`, and a subdirectory to work in.
fn project_with_subdirectory() -> Project {
    let project = Project::new();
    project.write("docs/a.md", "a\n");
    project.write("docs/b.md", "b\n");
    project.write("sub/deeper/notes.txt", "not the root\n");
    project.write(
        "workflows/docs.lua",
        r#"return workflow {
  name = "docs",
  phases = { phase "read" { split = function(ctx)
    local tasks = {}
    for i, f in ipairs(ctx.glob("docs/*.md")) do
      tasks[#tasks + 1] = task { id = "doc-" .. i, description = "Read " .. f, read = f }
    end
    return tasks
  end } },
}
"#,
    );
    project.write("w.sh", "true\n");
    project
}

#[test]
fn check_run_from_a_subdirectory_finds_the_project_root() {
    let project = project_with_subdirectory();
    let out = Mcc::new(&project.path("sub/deeper")).args(["check", "../../workflows/docs.lua"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("would create 2 tasks"), "globbed from the root: {}", out.stdout);
}

#[test]
fn run_from_a_subdirectory_keeps_its_state_in_the_project_root() {
    let project = project_with_subdirectory();
    let out = Mcc::new(&project.path("sub/deeper"))
        .args(["run", "../../workflows/docs.lua", "--port", "0", "--spawn", "1", "--", "sh", "w.sh"])
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!project.path("sub/deeper/.mcc").exists(), "no second .mcc/ in the subdirectory");
    assert!(project.path(".mcc/state.db").is_file(), "state in the root's .mcc/");
    let report = Mcc::new(&project.path("sub")).args(["report", "--json"]).run().json();
    assert_eq!(report["tasks"], 2, "{report}");
}

/// `mcc run ARGS` in the background, its stdout in `out.txt` of the project.
fn run_in_background(project: &Project, args: &[&str], out: &str) -> Child {
    let log = std::fs::File::create(project.path(out)).unwrap();
    Command::new(mcc_bin())
        .arg("run")
        .args(args)
        .current_dir(project.root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn one_task_workflow(name: &str) -> String {
    format!(
        "return workflow {{ name = \"{name}\", phases = {{ phase \"p\" {{ tasks = {{ task {{ id = \"{name}-1\", description = \"Do {name}\" }} }} }} }} }}\n"
    )
}

#[test]
fn a_second_run_of_another_workflow_is_refused_unless_asked_to_switch_and_the_first_terminal_is_told() {
    let project = Project::new();
    project.write("workflows/first.lua", &one_task_workflow("first"));
    project.write("workflows/second.lua", &one_task_workflow("second"));
    project.write("w.sh", "true\n");
    // The first run has no worker: its task waits.
    let mut first = run_in_background(&project, &["workflows/first.lua", "--port", "0"], "first.txt");
    eventually("the first run's hub answers", || project.mcc().args(["status"]).run().code == 0);
    eventually("without --spawn, mcc run says how workers join", || {
        project
            .read("first.txt")
            .contains("workers join from a chat or terminal in this project: mcc worker next --as NAME")
    });
    let refused = project.mcc().args(["run", "workflows/second.lua"]).run();
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("runs workflows/first.lua already") && refused.stderr.contains("--switch"),
        "{}",
        refused.stderr
    );
    let switched =
        project.mcc().args(["run", "workflows/second.lua", "--switch", "--spawn", "1", "--", "sh", "w.sh"]).run();
    assert_eq!(switched.code, 0, "{switched:?}\nfirst: {}", project.read("first.txt"));
    eventually("the first terminal is told", || {
        std::fs::read_to_string(project.path("first.txt"))
            .is_ok_and(|t| t.contains("the hub now runs workflows/second.lua"))
    });
    let _ = Command::new("kill").args(["-INT", &first.id().to_string()]).status();
    first.wait().unwrap();
}

#[test]
fn the_resume_hint_after_ctrl_c_never_says_fresh() {
    let project = Project::new();
    project.write("workflows/wait.lua", &one_task_workflow("wait"));
    let mut run = run_in_background(&project, &["workflows/wait.lua", "--port", "0", "--fresh"], "out.txt");
    eventually("the run shows progress", || {
        std::fs::read_to_string(project.path("out.txt")).is_ok_and(|t| t.contains("phase p"))
    });
    Command::new("kill").args(["-INT", &run.id().to_string()]).status().unwrap();
    run.wait().unwrap();
    let out = project.read("out.txt");
    assert!(out.contains("stopped: resume with `mcc run workflows/wait.lua --port 0`"), "{out}");
    assert!(!out.contains("--fresh`"), "resuming must not wipe the run: {out}");
}

#[test]
fn progress_into_a_file_prints_a_line_only_when_something_changed() {
    let project = Project::new();
    project.write("workflows/slow.lua", &one_task_workflow("slow"));
    // The task's work takes a while (past two of the hub's 1 s lease
    // checkpoints and many of `mcc run`'s redraw folds); nothing else happens meanwhile.
    project.write("w.sh", "sleep 2.5\n");
    let out =
        project.mcc().args(["run", "workflows/slow.lua", "--port", "0", "--spawn", "1", "--", "sh", "w.sh"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    // Each printed status line is followed by what changed; a status line that
    // only repeats the last one (its clock aside) and brings nothing is noise.
    let lines: Vec<&str> = out.stdout.lines().take_while(|l| !l.starts_with("workflow finished")).collect();
    let status =
        |l: &str| l.contains("s · phase ").then(|| l.split(" · ").skip(1).take(2).collect::<Vec<_>>().join(" · "));
    let mut last: Option<String> = None;
    let mut seen = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(now) = status(line) else { continue };
        let brings_news = lines.get(i + 1).is_some_and(|next| status(next).is_none());
        assert!(last.as_ref() != Some(&now) || brings_news, "a line repeated with nothing changed:\n{}", out.stdout);
        last = Some(now.clone());
        seen.push(now);
    }
    // The check above holds of no lines at all: the status lines must be
    // there, from the task waiting to it accepted, for it to mean anything.
    assert!(seen.len() >= 2, "no status lines recognised (has their wording changed?):\n{}", out.stdout);
    let first = seen.first().map(String::as_str);
    assert!(matches!(first, Some("phase p · 1 ready" | "phase p · 1 assigned")), "{}", out.stdout);
    assert_eq!(seen.last().map(String::as_str), Some("phase p · 1 accepted"), "{}", out.stdout);
}

#[test]
fn new_names_the_workflow_after_itself() {
    let project = Project::new();
    let made = project.mcc().args(["new", "x", "--recipe", "phase2"]).run();
    assert_eq!(made.code, 0, "{made:?}");
    let text = project.read("workflows/x.lua");
    assert!(text.contains("name = \"x\"") && !text.contains("name = \"phase2\""), "{text}");
    let checked = check(&project, "workflows/x.lua");
    assert!(checked.stdout.contains("workflow \"x\" loads"), "{checked:?}");
}

/// A workflow whose first phase globs `inbox/` (empty until a test writes
/// there) and says what it found; the second phase makes one task with a
/// validation command; the third lists its task in the file.
const INBOX_WORKFLOW: &str = r#"return workflow {
  name = "inbox",
  phases = {
    phase "write" {
      split = function(ctx)
        local tasks = {}
        for _, f in ipairs(ctx.glob("inbox/*.md")) do
          tasks[#tasks + 1] = task { id = "write-" .. #tasks, description = "Write up " .. f, read = f }
        end
        ctx.log("found " .. #tasks .. " files in inbox/")
        return tasks
      end,
    },
    phase "review" {
      split = function(ctx, previous)
        return { task { id = "review", description = "Review the write-ups", validation = "test -f review.md" } }
      end,
    },
    phase "ship" {
      tasks = { { id = "ship", description = "Ship it" } },
    },
  },
}
"#;

#[test]
fn check_of_a_workflow_whose_first_phase_creates_no_tasks_warns_shows_its_log_line_and_counts_every_phase() {
    let project = Project::new();
    project.write("workflows/inbox.lua", INBOX_WORKFLOW);
    let out = check(&project, "workflows/inbox.lua");
    // A warning, not a failure: see `mcc check --help` for why.
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(
            "warning: the first phase, \"write\", creates no tasks: `mcc run` would go straight on to phase \"review\""
        ),
        "{out:?}"
    );
    for line in [
        "phase \"write\" would create 0 tasks\n",
        "phase \"review\" would create 1 task:\n",
        "      validation: test -f review.md\n",
        "phase \"ship\" lists 1 task: it starts when phase \"review\" is complete\n",
        "log: inbox: found 0 files in inbox/\n",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?} in\n{}", out.stdout);
    }
    let json = project.mcc().args(["check", "workflows/inbox.lua", "--json"]).run().json();
    assert_eq!(json["created"][0], serde_json::json!({"phase": "write", "created": 0, "listed": null}), "{json}");
    assert_eq!(json["created"][1]["created"], 1, "{json}");
    assert_eq!(json["log"], serde_json::json!(["inbox: found 0 files in inbox/"]), "{json}");
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1), "{json}");

    // With a file to write up, the first phase has its task and nothing is to be warned of.
    project.write("inbox/a.md", "a\n");
    let out = check(&project, "workflows/inbox.lua");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("warning"), "{out:?}");
    assert!(
        out.stdout.contains("phase \"write\" would create 1 task:\n  write-0  Write up inbox/a.md\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("log: inbox: found 1 files in inbox/"), "{}", out.stdout);
    assert!(out.stdout.contains("phase \"review\" splits when phase \"write\" is complete"), "{}", out.stdout);
}

#[test]
fn a_broken_task_from_split_is_named_at_the_line_that_made_it_not_where_split_begins() {
    let project = Project::new();
    // Line 5 is where split begins; each broken task is made further down.
    let workflow = |name: &str, made: &str| {
        format!(
            "return workflow {{\n  name = \"{name}\",\n  phases = {{\n    phase \"p\" {{\n      split = function(ctx)\n        local tasks = {{}}\n        tasks[#tasks + 1] = task {{ id = \"a\", description = \"A\" }}\n{made}        return tasks\n      end,\n    }},\n  }},\n}}\n"
        )
    };
    let cases = [
        (
            "field",
            "        tasks[#tasks + 1] = {\n          id = \"b\", description = \"B\",\n          reed = \"x.md\" }\n",
            "field.lua:10: in split of phase \"p\": split must return a list of tasks: task 2: task `b`: unknown field `reed` (did you mean `read`?)",
        ),
        (
            "after",
            "\n        tasks[#tasks + 1] = task { id = \"c\", description = \"C\", after = \"zzz\" }\n",
            "after.lua:9: in split of phase \"p\": task `c` depends on unknown task `zzz`",
        ),
        (
            "twice",
            "\n\n        tasks[#tasks + 1] = task { id = \"a\", description = \"again\" }\n",
            "twice.lua:10: in split of phase \"p\": task `a` already exists",
        ),
    ];
    for (name, made, expected) in cases {
        project.write(&format!("workflows/{name}.lua"), &workflow(name, made));
        let out = check(&project, &format!("workflows/{name}.lua"));
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(&format!("workflows/{expected}")), "expected {expected}\nin {}", out.stderr);
    }
}

#[test]
fn new_run_from_a_subfolder_writes_the_workflow_under_the_project_root_and_says_where() {
    let project = Project::new();
    std::fs::create_dir(project.path(".git")).unwrap();
    project.write("sub/deeper/notes.txt", "not the root\n");
    let here = project.path("sub/deeper");
    let made = Mcc::new(&here).args(["new", "x", "--recipe", "phase2"]).run();
    assert_eq!(made.code, 0, "{made:?}");
    assert!(project.path("workflows/x.lua").is_file(), "written under the root: {made:?}");
    assert!(!here.join("workflows").exists(), "nothing under the subfolder");
    let root = std::fs::canonicalize(project.root()).unwrap();
    assert!(
        made.stdout
            .contains(&format!("wrote workflows/x.lua in the project root {} from recipe phase2", root.display())),
        "{}",
        made.stdout
    );
    // The next command runs as printed, from where the user is.
    assert!(made.stdout.contains("`mcc check ../../workflows/x.lua`"), "{}", made.stdout);
    let checked = Mcc::new(&here).args(["check", "../../workflows/x.lua"]).run();
    assert!(checked.code == 0 && checked.stdout.contains("workflow \"x\" loads"), "{checked:?}");
}
