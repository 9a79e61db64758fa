//! `mcc check WORKFLOW.lua`: load a workflow without a hub and show the
//! tasks its first phase would create, or what is wrong with it.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::exit;
use crate::engine::Policy;
use crate::lua::Workflow;
use crate::scheduler::{Scheduler, Settings};

/// Check a workflow file: print the first phase's tasks, or every error with its `file:line`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc check workflows/summaries.lua\n\nExit 0 when the workflow loads and its first phase starts; 1 otherwise."
)]
pub struct CheckArgs {
    /// The workflow file.
    pub file: PathBuf,
    /// Project root the workflow's paths are relative to (default: the nearest folder with .mcc/, else the current one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn root_for(dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_owned();
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors().find(|a| a.join(".mcc").is_dir()).map_or_else(|| cwd.clone(), Path::to_owned)
}

pub fn run(args: CheckArgs) -> u8 {
    let root = root_for(args.dir.as_deref());
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let file = std::path::absolute(&args.file).unwrap_or_else(|_| args.file.clone());
    let mut scheduler = Scheduler::new(Settings::default());
    let loaded = Workflow::load(&file, &root).and_then(|mut w| {
        w.step(&mut scheduler).map_err(|e| e.0)?;
        Ok(w)
    });
    match loaded {
        Ok(workflow) => {
            let phases = workflow.phase_names();
            let tasks = scheduler.tasks_in_order();
            let first = tasks.first().and_then(|t| t.phase.clone()).unwrap_or_else(|| phases[0].clone());
            if args.json {
                let list: Vec<_> = tasks.iter().map(|t| t.to_wire()).collect();
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
