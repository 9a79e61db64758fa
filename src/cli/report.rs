//! `mcc report`: metrics from the event log in `.mcc/state.db`, with or
//! without a running hub, beside the targets of the project mcc grew from
//! (measured and drawn by [`crate::report`]). A report covers one run, the
//! newest unless `--run ID`; `--all` gives each run its own.

use std::path::PathBuf;

use clap::Args;

use super::exit;
use crate::report::{Runs, html, measure_runs};

/// Attempts, rejections and their reasons, questions, automation rate, time per task, worker and phase.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc report\n  mcc report --run 1\n  mcc report --all --html report.html   (one page, no network: open it in any browser)\n\nEach `mcc run` of another workflow is a run of its own; the report covers the newest.\nExit codes: 0 shown; 1 no store here (run it in a project with .mcc/), or no such run."
)]
pub struct ReportArgs {
    /// Project root (default: the nearest folder with .mcc/).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object (with --all: `{"runs": [...]}`, one per run).
    #[arg(long)]
    pub json: bool,
    /// Also write one self-contained HTML page (timeline, metrics, tasks, questions) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// The run to report (its id, as the report's first line names it).
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub run: Option<i64>,
    /// Every run, each on its own.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: ReportArgs) -> u8 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let Some(root) = args.dir.clone().or_else(|| crate::client::find_root(&cwd)) else {
        eprintln!("error: no .mcc/ here or above; run `mcc report` inside a project that ran `mcc run` or `mcc hub`");
        return exit::ERROR;
    };
    let runs = match (args.run, args.all) {
        (Some(id), _) => Runs::One(id),
        (None, true) => Runs::All,
        (None, false) => Runs::Latest,
    };
    let measured = match measure_runs(&root, runs) {
        Ok(measured) => measured,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    if let Some(file) = &args.html {
        if let Err(e) = std::fs::write(file, html(&measured)) {
            eprintln!("error: cannot write {}: {e}; pass a path in a folder you can write", file.display());
            return exit::ERROR;
        }
        if !args.json {
            println!("wrote {} (open it in a browser)", file.display());
        }
    }
    if args.json {
        let written = if args.all {
            serde_json::to_string(&serde_json::json!({ "runs": measured }))
        } else {
            measured.first().map_or_else(|| Ok("{}".to_owned()), serde_json::to_string)
        };
        return match written {
            Ok(text) => {
                println!("{text}");
                exit::OK
            }
            Err(e) => {
                eprintln!("error: the report cannot be written as JSON: {e}");
                exit::ERROR
            }
        };
    }
    let texts: Vec<String> = measured.iter().map(crate::report::Metrics::text).collect();
    print!("{}", texts.join("\n"));
    exit::OK
}
