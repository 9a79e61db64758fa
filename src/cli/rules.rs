//! `mcc rules install`: put the worker and coordinator rules where agents
//! read them. One source of truth, a marked section of `AGENTS.md` (Codex,
//! Cursor and Windsurf read it as is); thin pointers for the others.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::exit;

const WORKER: &str = include_str!("../../rules/worker.md");
const COORDINATOR: &str = include_str!("../../rules/coordinator.md");
const BEGIN: &str = "<!-- mcc:begin (written by `mcc rules install`; edits inside are replaced) -->";
const END: &str = "<!-- mcc:end -->";
/// Windsurf reads at most this much of a rules file.
pub const AGENTS_LIMIT: usize = 6000;

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Write the mcc section of AGENTS.md and the pointers CLAUDE.md, GEMINI.md, .cursor/rules/mcc.mdc.
    #[command(
        after_help = "Example:\n  mcc rules install\n\nRe-running replaces the mcc section and keeps everything else.\nExit codes: 0 written; 1 error."
    )]
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Project root (default: the current folder).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

pub fn run(cmd: RulesCmd) -> u8 {
    let RulesCmd::Install(args) = cmd;
    match install(&args.dir) {
        Ok(written) => {
            for line in written {
                println!("{line}");
            }
            println!("next: tell each worker chat \"act as an mcc worker named worker-A\"");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// The section placed in AGENTS.md.
pub fn section() -> String {
    format!("{BEGIN}\n# mcc: several chats, one project\n\n{WORKER}\n{COORDINATOR}{END}\n")
}

/// A file's text, or "" when it does not exist. Any other failure (not
/// UTF-8, no permission) is an error: writing then would clobber it.
fn read_or_empty(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!(
            "cannot read {} ({e}); left it untouched: fix or move it, then run `mcc rules install` again",
            path.display()
        )),
    }
}

/// Write every file; returns one line per file touched.
pub fn install(root: &Path) -> Result<Vec<String>, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let mut written = Vec::new();
    if section().len() >= AGENTS_LIMIT {
        return Err(format!(
            "the mcc section is {} characters, over the {AGENTS_LIMIT} some agents read",
            section().len()
        ));
    }
    let agents = root.join("AGENTS.md");
    let old = read_or_empty(&agents)?;
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{}{}", &old[..start], section(), old[end + END.len()..].trim_start_matches('\n'))
        }
        _ if old.trim().is_empty() => section(),
        _ => format!("{}\n\n{}", old.trim_end(), section()),
    };
    std::fs::write(&agents, &new).map_err(|e| io(&agents, e))?;
    written.push(format!("AGENTS.md: mcc section ({} characters)", section().len()));
    for name in ["CLAUDE.md", "GEMINI.md"] {
        let path = root.join(name);
        let text = read_or_empty(&path)?;
        if !text.lines().any(|l| l.trim() == "@AGENTS.md") {
            let joined = if text.trim().is_empty() {
                "@AGENTS.md\n".to_owned()
            } else {
                format!("{}\n\n@AGENTS.md\n", text.trim_end())
            };
            std::fs::write(&path, joined).map_err(|e| io(&path, e))?;
            written.push(format!("{name}: imports @AGENTS.md"));
        }
    }
    let cursor = root.join(".cursor").join("rules");
    std::fs::create_dir_all(&cursor).map_err(|e| io(&cursor, e))?;
    let mdc = cursor.join("mcc.mdc");
    let pointer = "---\ndescription: How to work as an mcc worker or coordinator\nalwaysApply: true\n---\n\nFollow the \"mcc\" section of AGENTS.md at the project root: @AGENTS.md\n";
    std::fs::write(&mdc, pointer).map_err(|e| io(&mdc, e))?;
    written.push(".cursor/rules/mcc.mdc: always applied, points at AGENTS.md".to_owned());
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_section_fits_windsurfs_limit() {
        assert!(section().len() < AGENTS_LIMIT, "{} characters", section().len());
    }

    #[test]
    fn install_is_idempotent_and_keeps_what_the_user_wrote() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("AGENTS.md"), "# Our project\n\nUse tabs.\n").unwrap();
        std::fs::write(dir.path().join("CLAUDE.md"), "Be terse.\n").unwrap();
        install(dir.path()).unwrap();
        let once = std::fs::read_to_string(dir.path().join("AGENTS.md")).unwrap();
        install(dir.path()).unwrap();
        let twice = std::fs::read_to_string(dir.path().join("AGENTS.md")).unwrap();
        assert_eq!(once, twice);
        assert!(twice.starts_with("# Our project\n\nUse tabs.\n") && twice.contains("mcc worker next --as NAME"));
        assert_eq!(twice.matches(BEGIN).count(), 1);
        let claude = std::fs::read_to_string(dir.path().join("CLAUDE.md")).unwrap();
        assert_eq!(claude, "Be terse.\n\n@AGENTS.md\n");
        let mdc = std::fs::read_to_string(dir.path().join(".cursor/rules/mcc.mdc")).unwrap();
        assert!(mdc.contains("alwaysApply: true"));
        assert_eq!(std::fs::read_to_string(dir.path().join("GEMINI.md")).unwrap(), "@AGENTS.md\n");
    }
}
