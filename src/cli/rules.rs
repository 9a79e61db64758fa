//! `mcc rules install`: put the worker and coordinator rules where agents
//! read them. One source of truth, a marked section of `AGENTS.md` (Codex,
//! Cursor and Windsurf read it as is); thin pointers for the others. It
//! also registers `mcc mcp` in each agent's MCP settings, merged into what
//! is there: `.mcp.json` (Claude Code), `.cursor/mcp.json`,
//! `.gemini/settings.json` and `.codex/config.toml`.

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
    /// Write the mcc section of AGENTS.md, the pointers CLAUDE.md, GEMINI.md, .cursor/rules/mcc.mdc,
    /// and the `mcc mcp` server in .mcp.json, .cursor/mcp.json, .gemini/settings.json, .codex/config.toml.
    #[command(
        after_help = "Example:\n  mcc rules install\n\nRe-running replaces the mcc section and keeps everything else; other MCP servers are kept.\nExit codes: 0 written; 1 error."
    )]
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Project root (default: the current folder).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Do not register the `mcc mcp` server in the agents' MCP settings.
    #[arg(long)]
    pub no_mcp: bool,
}

pub fn run(cmd: RulesCmd) -> u8 {
    let RulesCmd::Install(args) = cmd;
    match install(&args.dir, !args.no_mcp) {
        Ok(written) => {
            for line in written {
                println!("{line}");
            }
            if !args.no_mcp {
                println!(
                    "agents started here now also have the mcc MCP tools; each chat is its own worker (MCC_WORKER names it)"
                );
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

/// Write every file; returns one line per file touched. With `mcp`, every
/// MCP settings file is read and merged first, so one that cannot be read
/// stops the install before anything is written.
pub fn install(root: &Path, mcp: bool) -> Result<Vec<String>, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let servers = if mcp { mcp_settings(root)? } else { Vec::new() };
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
    for change in servers {
        if let Some(text) = &change.text {
            if let Some(dir) = change.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            }
            std::fs::write(&change.path, text).map_err(|e| io(&change.path, e))?;
        }
        written.push(change.line);
    }
    Ok(written)
}

/// The command an agent runs to start the MCP server.
const MCP_COMMAND: &str = "mcc";
const MCP_ARGS: [&str; 1] = ["mcp"];

/// One MCP settings file after merging: its new text (None: unchanged) and what to print.
struct McpChange {
    path: PathBuf,
    text: Option<String>,
    line: String,
}

/// Merge the `mcc` server into every agent's MCP settings, in memory.
fn mcp_settings(root: &Path) -> Result<Vec<McpChange>, String> {
    let mut changes = Vec::new();
    for (rel, agent) in
        [(".mcp.json", "Claude Code"), (".cursor/mcp.json", "Cursor"), (".gemini/settings.json", "Gemini CLI")]
    {
        let path = root.join(rel);
        let (text, said) = merge_json(&read_settings(&path)?).map_err(|e| refuse(&path, &e))?;
        changes.push(McpChange { line: format!("{rel}: {said} ({agent})"), path, text });
    }
    let rel = ".codex/config.toml";
    let path = root.join(rel);
    let (text, said) = merge_toml(&read_settings(&path)?).map_err(|e| refuse(&path, &e))?;
    changes.push(McpChange {
        line: format!("{rel}: {said} (Codex; it reads a project's .codex/ once you trust the project)"),
        path,
        text,
    });
    Ok(changes)
}

/// A settings file's text, "" when missing; unreadable is refused, never overwritten.
fn read_settings(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(refuse(path, &format!("cannot read it: {e}"))),
    }
}

fn refuse(path: &Path, why: &str) -> String {
    format!(
        "cannot merge the mcc MCP server into {} ({why}); left every file untouched: fix or move it, or run `mcc rules install --no-mcp`",
        path.display()
    )
}

/// `{"mcpServers": {"mcc": {...}}}` merged into a JSON settings file.
fn merge_json(old: &str) -> Result<(Option<String>, &'static str), String> {
    let mut settings: serde_json::Value = if old.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(old).map_err(|e| format!("not JSON: {e}"))?
    };
    let root = settings.as_object_mut().ok_or("not a JSON object")?;
    let servers = root.entry("mcpServers").or_insert_with(|| serde_json::json!({}));
    let servers = servers.as_object_mut().ok_or("`mcpServers` is not an object")?;
    if servers.contains_key("mcc") {
        return Ok((None, "mcc MCP server already there, kept as is"));
    }
    servers.insert("mcc".into(), serde_json::json!({"command": MCP_COMMAND, "args": MCP_ARGS}));
    let text = serde_json::to_string_pretty(&settings).expect("serializes") + "\n";
    Ok((Some(text), "mcc MCP server added"))
}

/// `[mcp_servers.mcc]` merged into Codex's TOML, keeping comments and layout.
fn merge_toml(old: &str) -> Result<(Option<String>, &'static str), String> {
    let mut doc: toml_edit::DocumentMut = old.parse().map_err(|e| format!("not TOML: {e}"))?;
    let servers = doc.entry("mcp_servers").or_insert_with(|| {
        let mut table = toml_edit::Table::new();
        table.set_implicit(true);
        toml_edit::Item::Table(table)
    });
    let servers = servers.as_table_like_mut().ok_or("`mcp_servers` is not a table")?;
    if servers.contains_key("mcc") {
        return Ok((None, "mcc MCP server already there, kept as is"));
    }
    let mut mcc = toml_edit::Table::new();
    mcc.insert("command", toml_edit::value(MCP_COMMAND));
    mcc.insert("args", toml_edit::value(MCP_ARGS.iter().copied().collect::<toml_edit::Array>()));
    servers.insert("mcc", toml_edit::Item::Table(mcc));
    Ok((Some(doc.to_string()), "mcc MCP server added"))
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
        install(dir.path(), true).unwrap();
        let once = std::fs::read_to_string(dir.path().join("AGENTS.md")).unwrap();
        install(dir.path(), true).unwrap();
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
