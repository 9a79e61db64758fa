//! `mcc check WORKFLOW.lua`: load a workflow without a hub and show what
//! each phase it can start would create (0 included, with a warning for an
//! empty first phase), its `ctx.log` lines, or everything wrong with it.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::exit;
use crate::engine::Policy;
use crate::lua::Workflow;
use crate::scheduler::{Scheduler, Settings, Task};

/// Check a workflow file: print the tasks each phase it can start creates, or every error with its `file:line`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc check workflows/summaries.lua\n\nIt starts the phases it can without workers (a later phase whose split needs an earlier phase's work is not run), prints how many tasks each creates with their files and validation commands, and the workflow's ctx.log lines.\n\nExit 0 when the workflow loads and its first phase starts; 1 otherwise. A first phase that creates no tasks is a warning on stderr (and in `warnings` of --json) and still exits 0: some workflows have nothing to do on a good day (fix-tests when every test passes). To fail a CI job on it: mcc check --json FILE | jq -e '.warnings == []'"
)]
pub struct CheckArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// Project root the workflow's paths are relative to (default: found by walking up, as `mcc run` does).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The project root for `mcc check` and `mcc run`, so both agree from any
/// subdirectory: `--dir` when given; else the nearest folder at or above the
/// current one holding `.mcc/` (as every client command finds it); else the
/// folder holding the workflow's `workflows/` folder, when that is at or above
/// the current one; else the nearest one holding `.git`; else the current one.
pub(super) fn project_root(dir: Option<&Path>, workflow: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = match dir {
        Some(d) => d.to_owned(),
        None => crate::client::find_root(&cwd)
            .or_else(|| {
                let file = std::path::absolute(workflow).ok()?;
                let file = std::fs::canonicalize(&file).unwrap_or(file);
                let cwd = std::fs::canonicalize(&cwd).unwrap_or_else(|_| cwd.clone());
                file.ancestors()
                    .find(|a| a.file_name().is_some_and(|n| n == "workflows"))
                    .and_then(Path::parent)
                    .filter(|holder| cwd.starts_with(holder))
                    .map(Path::to_owned)
            })
            .or_else(|| git_root(&cwd))
            .unwrap_or(cwd),
    };
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// What a check found: each phase's part, the workflow's `ctx.log` lines, and warnings.
struct Found {
    phases: Vec<PhaseFound>,
    log: Vec<String>,
    warnings: Vec<String>,
}

/// One phase as `mcc check` sees it.
struct PhaseFound {
    name: String,
    /// The tasks it created, when check could start it (a phase that needs
    /// an earlier one's work done is not started).
    created: Option<Vec<Task>>,
    /// How many tasks a phase not started lists in the file (`None`: it splits).
    listed: Option<usize>,
}

/// Step the workflow as far as it goes without workers, and gather what it made.
fn examine(workflow: &mut Workflow, scheduler: &Scheduler) -> Found {
    let outline = workflow.phase_outline();
    let phases: Vec<PhaseFound> = outline
        .into_iter()
        .map(|p| {
            let created = p.started.then(|| scheduler.select(Some(&p.name), None).into_iter().cloned().collect());
            PhaseFound { name: p.name, created, listed: p.listed }
        })
        .collect();
    let mut warnings = Vec::new();
    if let Some(first) = phases.first()
        && first.created.as_ref().is_some_and(Vec::is_empty)
    {
        let then = match phases.get(1) {
            Some(next) => format!("`mcc run` would go straight on to phase \"{}\"", next.name),
            None => "`mcc run` would finish at once with nothing done".to_owned(),
        };
        let why = if first.listed.is_some() {
            "its `tasks` list is empty"
        } else {
            "check what its split reads (a glob that matches nothing, a file not there yet)"
        };
        warnings.push(format!("the first phase, \"{}\", creates no tasks: {then}; {why}", first.name));
    }
    Found { phases, log: workflow.take_log(), warnings }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The text `mcc check` prints for a workflow that loads (warnings go to stderr).
fn print_found(workflow: &Workflow, found: &Found, file: &Path) {
    let names: Vec<&str> = found.phases.iter().map(|p| p.name.as_str()).collect();
    println!(
        "workflow \"{}\" loads: {} phase{} ({})",
        workflow.workflow_name(),
        names.len(),
        plural(names.len()),
        names.join(", ")
    );
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    let mut previous: Option<&str> = None;
    for phase in &found.phases {
        match (&phase.created, phase.listed, previous) {
            (Some(tasks), _, _) => {
                let colon = if tasks.is_empty() { "" } else { ":" };
                println!("phase \"{}\" would create {} task{}{colon}", phase.name, tasks.len(), plural(tasks.len()));
                for t in tasks {
                    println!("  {}  {}", t.spec.id, t.spec.description);
                    println!(
                        "      read: {}  write: {}  after: {}",
                        list(&t.spec.context.target_files),
                        list(&t.spec.context.output_files),
                        list(&t.spec.dependencies)
                    );
                    println!("      validation: {}", t.spec.acceptance.validation.as_deref().unwrap_or("-"));
                }
            }
            (None, Some(n), Some(before)) => println!(
                "phase \"{}\" lists {n} task{}: it starts when phase \"{before}\" is complete",
                phase.name,
                plural(n)
            ),
            (None, None, Some(before)) => println!(
                "phase \"{}\" splits when phase \"{before}\" is complete (its split needs that work done: not run here)",
                phase.name
            ),
            // The first phase always starts; this is only here to be total.
            (None, _, None) => println!("phase \"{}\" did not start", phase.name),
        }
        previous = Some(&phase.name);
    }
    for line in &found.log {
        println!("log: {line}");
    }
    for warning in &found.warnings {
        eprintln!("warning: {warning}");
    }
    println!("next: `mcc run {}` runs it (add `--spawn N -- COMMAND` for headless workers)", file.display());
}

/// The nearest folder at or above `cwd` holding `.git`.
pub(super) fn git_root(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors().find(|a| a.join(".git").exists()).map(Path::to_owned)
}

pub fn run(args: CheckArgs) -> u8 {
    let root = project_root(args.dir.as_deref(), &args.file);
    let file = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let mut scheduler = Scheduler::new(Settings::default());
    let loaded = Workflow::load(&file, &root).and_then(|mut w| {
        w.step_waiting(&mut scheduler, std::time::Instant::now())?;
        Ok(w)
    });
    match loaded {
        Ok(mut workflow) => {
            let found = examine(&mut workflow, &scheduler);
            if args.json {
                let tasks: Vec<_> = scheduler.tasks_in_order().iter().map(Task::to_wire).collect();
                let first = found
                    .phases
                    .iter()
                    .find(|p| p.created.as_ref().is_some_and(|t| !t.is_empty()))
                    .or(found.phases.first())
                    .map(|p| p.name.clone());
                let created: Vec<_> = found
                    .phases
                    .iter()
                    .map(|p| json!({"phase": p.name, "created": p.created.as_ref().map(Vec::len), "listed": p.listed}))
                    .collect();
                let out = json!({
                    "ok": true,
                    "workflow": workflow.workflow_name(),
                    "phases": workflow.phase_names(),
                    "phase": first,
                    "tasks": tasks,
                    "created": created,
                    "log": found.log,
                    "warnings": found.warnings,
                });
                println!("{out}");
            } else {
                print_found(&workflow, &found, &args.file);
            }
            exit::OK
        }
        Err(e) => {
            let errors: Vec<&str> = e.lines().collect();
            if args.json {
                println!("{}", json!({"ok": false, "errors": errors}));
            } else {
                for line in &errors {
                    eprintln!("{line}");
                }
                eprintln!("fix the file and run `mcc check {}` again", args.file.display());
            }
            exit::ERROR
        }
    }
}
