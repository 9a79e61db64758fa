//! `mcc check WORKFLOW.lua`: load a workflow without a hub and show the
//! tasks its first phase would create, or what is wrong with it.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::exit;
use crate::lua::Workflow;
use crate::scheduler::{Scheduler, Settings, Task};

/// Check a workflow file: print the first phase's tasks, or every error with its `file:line`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc check workflows/summaries.lua\n\nExit 0 when the workflow loads and its first phase starts; 1 otherwise."
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
            .or_else(|| cwd.ancestors().find(|a| a.join(".git").exists()).map(Path::to_owned))
            .unwrap_or(cwd),
    };
    std::fs::canonicalize(&root).unwrap_or(root)
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
        Ok(workflow) => {
            let phases = workflow.phase_names();
            let tasks = scheduler.tasks_in_order();
            let first =
                tasks.iter().next().and_then(|t| t.phase().map(str::to_owned)).unwrap_or_else(|| phases[0].clone());
            if args.json {
                let list: Vec<_> = tasks.iter().map(Task::to_wire).collect();
                let out = json!({"ok": true, "workflow": workflow.workflow_name(), "phases": phases, "phase": first, "tasks": list});
                println!("{out}");
            } else {
                println!(
                    "workflow \"{}\" loads: {} phase{} ({})",
                    workflow.workflow_name(),
                    phases.len(),
                    if phases.len() == 1 { "" } else { "s" },
                    phases.join(", ")
                );
                println!(
                    "phase \"{first}\" would create {} task{}:",
                    tasks.len(),
                    if tasks.len() == 1 { "" } else { "s" }
                );
                for t in &tasks {
                    println!("  {}  {}", t.spec.id, t.spec.description);
                    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
                    println!(
                        "      read: {}  write: {}  after: {}",
                        list(&t.spec.context.target_files),
                        list(&t.spec.context.output_files),
                        list(&t.spec.dependencies)
                    );
                }
                println!(
                    "next: `mcc run {}` runs it (add `--spawn N -- COMMAND` for headless workers)",
                    args.file.display()
                );
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
