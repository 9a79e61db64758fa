//! `mcc rules install`: tell agent chats how to work with mcc, in the files
//! they read on their own.
//!
//! One source of truth: a marked section of `AGENTS.md` (Codex, Cursor and
//! Windsurf read it as is). Claude Code and Gemini CLI get `@AGENTS.md`
//! imports; Cursor also gets an always-applied rule pointing at it.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::exit;

const WORKER: &str = include_str!("../../rules/worker.md");
const COORDINATOR: &str = include_str!("../../rules/coordinator.md");
const BEGIN: &str = "<!-- mcc rules: begin (managed by `mcc rules install`; edits inside are replaced) -->";
const END: &str = "<!-- mcc rules: end -->";
const IMPORT: &str = "@AGENTS.md";
/// Windsurf reads at most this many characters of a rules file.
pub const SECTION_LIMIT: usize = 6_000;

/// Install the agent rules into a project.
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Write the mcc section of AGENTS.md and the pointers CLAUDE.md, GEMINI.md, .cursor/rules/mcc.mdc.
    #[command(
        after_help = "Example:\n  mcc rules install --dir ~/projects/site\n\nRe-running replaces only the marked mcc section; the rest of each file is kept.\nExit codes: 0 installed, 1 a file could not be read or written."
    )]
    Install {
        /// Project root to install into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// The marked section that goes into AGENTS.md.
pub fn section() -> String {
    format!("{BEGIN}\n## Working with mcc\n\nThis project is coordinated by mcc.\n\n{WORKER}\n{COORDINATOR}{END}\n")
}

/// `existing` with the marked section replaced, or appended when absent.
fn with_section(existing: &str) -> String {
    let section = section();
    if let (Some(start), Some(end)) = (existing.find(BEGIN), existing.find(END))
        && end > start
    {
        let after = &existing[end + END.len()..];
        let after = after.strip_prefix('\n').unwrap_or(after);
        return format!("{}{section}{after}", &existing[..start]);
    }
    if existing.is_empty() {
        section
    } else if existing.ends_with("\n\n") {
        format!("{existing}{section}")
    } else if existing.ends_with('\n') {
        format!("{existing}\n{section}")
    } else {
        format!("{existing}\n\n{section}")
    }
}

/// `existing` with an `@AGENTS.md` import line, unless it has one.
fn with_import(existing: &str) -> Option<String> {
    if existing.lines().any(|l| l.trim() == IMPORT) {
        return None;
    }
    Some(if existing.is_empty() { format!("{IMPORT}\n") } else { format!("{IMPORT}\n\n{existing}") })
}

const CURSOR_RULE: &str = "---\ndescription: How to work with mcc (workers and the coordinator)\nalwaysApply: true\n---\n\nFollow the \"Working with mcc\" section of @AGENTS.md at the project root.\n";

fn read(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Install into `dir`; returns one line per file saying what happened.
pub fn install(dir: &Path) -> Result<Vec<String>, String> {
    let size = section().chars().count();
    if size >= SECTION_LIMIT {
        return Err(format!(
            "the mcc section is {size} characters, over Windsurf's {SECTION_LIMIT}: shorten rules/*.md"
        ));
    }
    let mut lines = Vec::new();
    let agents = dir.join("AGENTS.md");
    let old = read(&agents)?;
    let new = with_section(&old);
    if new == old {
        lines.push("AGENTS.md: mcc section up to date".to_owned());
    } else {
        write(&agents, &new)?;
        lines.push(format!("AGENTS.md: mcc section written ({} characters)", section().chars().count()));
    }
    for name in ["CLAUDE.md", "GEMINI.md"] {
        let path = dir.join(name);
        match with_import(&read(&path)?) {
            Some(text) => {
                write(&path, &text)?;
                lines.push(format!("{name}: imports {IMPORT}"));
            }
            None => lines.push(format!("{name}: already imports {IMPORT}")),
        }
    }
    let cursor = dir.join(".cursor").join("rules").join("mcc.mdc");
    if read(&cursor)? == CURSOR_RULE {
        lines.push(".cursor/rules/mcc.mdc: up to date".to_owned());
    } else {
        write(&cursor, CURSOR_RULE)?;
        lines.push(".cursor/rules/mcc.mdc: written".to_owned());
    }
    Ok(lines)
}

pub fn run(args: &RulesArgs) -> u8 {
    let RulesCommand::Install { dir } = &args.command;
    match install(dir) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            println!("next: tell a chat \"act as an mcc worker, your name is worker-A\"");
            exit::OK
        }
        Err(e) => {
            eprintln!("mcc rules install: {e}");
            exit::ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_fits_windsurfs_limit() {
        assert!(section().chars().count() < SECTION_LIMIT, "{}", section().chars().count());
    }
}
