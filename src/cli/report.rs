//! `mcc report`: metrics from the event log in `.mcc/state.db`, with or
//! without a running hub, beside the targets of the project mcc grew from
//! (measured and drawn by [`crate::report`]).

use std::path::PathBuf;

use clap::Args;

use super::exit;
use crate::report::{html, metrics, render};

/// Attempts, rejections, automation rate, time per task, worker and phase.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  mcc report\n  mcc report --html report.html   (one page, no network: open it in any browser)\n\nExit codes: 0 shown; 1 no store here (run it in a project with .mcc/)."
)]
pub struct ReportArgs {
    /// Project root (default: the nearest folder with .mcc/).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write one self-contained HTML page (timeline and metrics) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> u8 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let Some(root) = args.dir.clone().or_else(|| crate::client::find_root(&cwd)) else {
        eprintln!("error: no .mcc/ here or above; run `mcc report` inside a project that ran `mcc run` or `mcc hub`");
        return exit::ERROR;
    };
    let measured = metrics(&root);
    if let (Ok(m), Some(file)) = (&measured, &args.html) {
        if let Err(e) = std::fs::write(file, html(m)) {
            eprintln!("error: cannot write {}: {e}; pass a path in a folder you can write", file.display());
            return exit::ERROR;
        }
        if !args.json {
            println!("wrote {} (open it in a browser)", file.display());
        }
    }
    match measured {
        Ok(m) if args.json => {
            println!("{m}");
            exit::OK
        }
        Ok(m) => {
            print!("{}", render(&m));
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}
