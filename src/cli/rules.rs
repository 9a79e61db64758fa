//! `mcc rules install`: put the worker and coordinator rules where agents
//! read them. One source of truth, a marked section of `AGENTS.md` (Codex,
//! Cursor and Windsurf read it as is); thin pointers for the others. It
//! also registers `mcc mcp` in each agent's MCP settings, merged into what
//! is there: `.mcp.json` (Claude Code), `.cursor/mcp.json`,
//! `.gemini/settings.json` and `.codex/config.toml`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::exit;
use crate::client::worker::{self as verbs, Kit};

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
        after_help = "Examples:\n  mcc rules install\n  mcc rules install --absolute   (MCP configs name this binary's full path)\n\nRe-running replaces the mcc section and keeps everything else; other MCP servers are kept.\nExit codes: 0 written; 1 error."
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
    /// Write the absolute path of this mcc binary as the MCP server's command
    /// (for editors whose PATH lacks ~/.cargo/bin); an mcc entry already there gets it too.
    #[arg(long, conflicts_with = "no_mcp")]
    pub absolute: bool,
    /// What this project's worker chats can do, such as rust,docs: the rules and the MCP server say it on every `next`.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = verbs::capability)]
    pub can: Vec<String>,
    /// The model this project's worker chats run, such as opus, said the same way.
    #[arg(long, value_name = "NAME", value_parser = verbs::capability)]
    pub model: Option<String>,
}

pub fn run(cmd: RulesCmd) -> u8 {
    let RulesCmd::Install(args) = cmd;
    let command = if args.absolute {
        match std::env::current_exe().and_then(std::fs::canonicalize) {
            Ok(path) => Some(path.display().to_string()),
            Err(e) => {
                eprintln!(
                    "error: cannot tell where this mcc binary is ({e}); run `mcc rules install` without --absolute"
                );
                return exit::ERROR;
            }
        }
    } else {
        None
    };
    let mcp = (!args.no_mcp).then(|| command.unwrap_or_else(|| MCP_COMMAND.to_owned()));
    let kit = Kit { can: args.can, model: args.model };
    match install(&args.dir, mcp.as_deref(), &kit) {
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

/// The section placed in AGENTS.md, telling workers what to say of
/// themselves on `next` when `kit` is set.
pub fn section_for(kit: &Kit) -> String {
    let said = if kit.args().is_empty() {
        String::new()
    } else {
        format!(
            "\nIn this project add `{}` to `mcc worker next` (the hub keeps it): tasks that need what you can do come to you.\n",
            kit.args().join(" ")
        )
    };
    format!("{BEGIN}\n# mcc: several chats, one project\n\n{WORKER}{said}\n{COORDINATOR}{END}\n")
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

/// Write every file; returns one line per file touched. With `mcp` (the
/// command that starts `mcc`: `mcc`, or this binary's absolute path), every
/// MCP settings file is read and merged first, so one that cannot be read
/// stops the install before anything is written.
pub fn install(root: &Path, mcp: Option<&str>, kit: &Kit) -> Result<Vec<String>, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let servers = match mcp {
        Some(command) => mcp_settings(root, command, &kit.args())?,
        None => Vec::new(),
    };
    let section = || section_for(kit);
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
fn mcp_settings(root: &Path, command: &str, kit: &[String]) -> Result<Vec<McpChange>, String> {
    let mut changes = Vec::new();
    for (rel, agent) in
        [(".mcp.json", "Claude Code"), (".cursor/mcp.json", "Cursor"), (".gemini/settings.json", "Gemini CLI")]
    {
        let path = root.join(rel);
        let (text, said) = merge_json(&read_settings(&path)?, command, kit).map_err(|e| refuse(&path, &e))?;
        changes.push(McpChange { line: format!("{rel}: {said} ({agent})"), path, text });
    }
    let rel = ".codex/config.toml";
    let path = root.join(rel);
    let (text, said) = merge_toml(&read_settings(&path)?, command, kit).map_err(|e| refuse(&path, &e))?;
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
fn merge_json(old: &str, command: &str, kit: &[String]) -> Result<(Option<String>, &'static str), String> {
    let args: Vec<&str> = MCP_ARGS.iter().copied().chain(kit.iter().map(String::as_str)).collect();
    let mut settings: serde_json::Value = if old.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(old).map_err(|e| format!("not JSON: {e}"))?
    };
    let root = settings.as_object_mut().ok_or("not a JSON object")?;
    let servers = root.entry("mcpServers").or_insert_with(|| serde_json::json!({}));
    let servers = servers.as_object_mut().ok_or("`mcpServers` is not an object")?;
    let said = match servers.get_mut("mcc") {
        // What a worker can do, when given, is written over the arguments there: the user asked for it.
        Some(mcc) if !kit.is_empty() && mcc.get("args") != Some(&serde_json::json!(args)) => {
            let mcc = mcc.as_object_mut().ok_or("`mcpServers.mcc` is not an object")?;
            mcc.insert("args".into(), serde_json::json!(args));
            if command != MCP_COMMAND {
                mcc.insert("command".into(), serde_json::json!(command));
            }
            "mcc MCP server's arguments set to say what its worker can do"
        }
        // Only an absolute path is written over what is there: the user asked for it.
        Some(mcc) if command != MCP_COMMAND && mcc.get("command").and_then(|c| c.as_str()) != Some(command) => {
            let mcc = mcc.as_object_mut().ok_or("`mcpServers.mcc` is not an object")?;
            mcc.insert("command".into(), serde_json::json!(command));
            "mcc MCP server's command set to this binary's path"
        }
        Some(_) => return Ok((None, "mcc MCP server already there, kept as is")),
        None => {
            servers.insert("mcc".into(), serde_json::json!({"command": command, "args": args}));
            "mcc MCP server added"
        }
    };
    let text = serde_json::to_string_pretty(&settings).expect("serializes") + "\n";
    Ok((Some(text), said))
}

/// `[mcp_servers.mcc]` merged into Codex's TOML, keeping comments and layout.
fn merge_toml(old: &str, command: &str, kit: &[String]) -> Result<(Option<String>, &'static str), String> {
    let args: toml_edit::Array = MCP_ARGS.iter().copied().chain(kit.iter().map(String::as_str)).collect();
    let mut doc: toml_edit::DocumentMut = old.parse().map_err(|e| format!("not TOML: {e}"))?;
    let servers = doc.entry("mcp_servers").or_insert_with(|| {
        let mut table = toml_edit::Table::new();
        table.set_implicit(true);
        toml_edit::Item::Table(table)
    });
    let servers = servers.as_table_like_mut().ok_or("`mcp_servers` is not a table")?;
    if let Some(mcc) = servers.get_mut("mcc") {
        let args_there: Option<Vec<String>> = mcc
            .get("args")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
        let args_wanted: Vec<String> = args.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        if !kit.is_empty() && args_there.as_ref() != Some(&args_wanted) {
            let mcc = mcc.as_table_like_mut().ok_or("`mcp_servers.mcc` is not a table")?;
            mcc.insert("args", toml_edit::value(args));
            if command != MCP_COMMAND {
                mcc.insert("command", toml_edit::value(command));
            }
            return Ok((Some(doc.to_string()), "mcc MCP server's arguments set to say what its worker can do"));
        }
        let there = mcc.get("command").and_then(|c| c.as_str()).map(str::to_owned);
        if command == MCP_COMMAND || there.as_deref() == Some(command) {
            return Ok((None, "mcc MCP server already there, kept as is"));
        }
        let mcc = mcc.as_table_like_mut().ok_or("`mcp_servers.mcc` is not a table")?;
        mcc.insert("command", toml_edit::value(command));
        return Ok((Some(doc.to_string()), "mcc MCP server's command set to this binary's path"));
    }
    let mut mcc = toml_edit::Table::new();
    mcc.insert("command", toml_edit::value(command));
    mcc.insert("args", toml_edit::value(args));
    servers.insert("mcc", toml_edit::Item::Table(mcc));
    Ok((Some(doc.to_string()), "mcc MCP server added"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_section_fits_windsurfs_limit() {
        let section = section_for(&Kit::default());
        assert!(section.len() < AGENTS_LIMIT, "{} characters", section.len());
    }

    #[test]
    fn install_is_idempotent_and_keeps_what_the_user_wrote() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("AGENTS.md"), "# Our project\n\nUse tabs.\n").unwrap();
        std::fs::write(dir.path().join("CLAUDE.md"), "Be terse.\n").unwrap();
        install(dir.path(), Some(MCP_COMMAND), &Kit::default()).unwrap();
        let once = std::fs::read_to_string(dir.path().join("AGENTS.md")).unwrap();
        install(dir.path(), Some(MCP_COMMAND), &Kit::default()).unwrap();
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

    #[test]
    fn absolute_writes_the_binarys_path_into_every_mcp_config_even_over_an_earlier_mcc_entry() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), Some(MCP_COMMAND), &Kit::default()).unwrap();
        install(dir.path(), Some("/opt/bin/mcc"), &Kit::default()).unwrap();
        for rel in [".mcp.json", ".cursor/mcp.json", ".gemini/settings.json"] {
            let settings: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join(rel)).unwrap()).unwrap();
            assert_eq!(settings["mcpServers"]["mcc"]["command"], "/opt/bin/mcc", "{rel}");
            assert_eq!(settings["mcpServers"]["mcc"]["args"], serde_json::json!(["mcp"]), "{rel}");
        }
        let codex = std::fs::read_to_string(dir.path().join(".codex/config.toml")).unwrap();
        assert!(codex.contains("command = \"/opt/bin/mcc\""), "{codex}");
        // Without --absolute, a path the user chose is kept.
        install(dir.path(), Some(MCP_COMMAND), &Kit::default()).unwrap();
        assert!(std::fs::read_to_string(dir.path().join(".mcp.json")).unwrap().contains("/opt/bin/mcc"));
    }

    #[test]
    fn an_install_with_can_and_model_carries_them_into_the_rules_and_every_mcp_config() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), Some(MCP_COMMAND), &Kit::default()).unwrap();
        let kit = Kit { can: vec!["rust".into(), "docs".into()], model: Some("opus".into()) };
        install(dir.path(), Some(MCP_COMMAND), &kit).unwrap();
        let wanted = serde_json::json!(["mcp", "--can", "rust,docs", "--model", "opus"]);
        for rel in [".mcp.json", ".cursor/mcp.json", ".gemini/settings.json"] {
            let settings: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join(rel)).unwrap()).unwrap();
            assert_eq!(settings["mcpServers"]["mcc"]["args"], wanted, "{rel}");
        }
        let codex = std::fs::read_to_string(dir.path().join(".codex/config.toml")).unwrap();
        assert!(codex.contains(r#"args = ["mcp", "--can", "rust,docs", "--model", "opus"]"#), "{codex}");
        let agents = std::fs::read_to_string(dir.path().join("AGENTS.md")).unwrap();
        assert!(agents.contains("add `--can rust,docs --model opus` to `mcc worker next`"), "{agents}");
        assert!(section_for(&kit).len() < AGENTS_LIMIT);
    }
}
