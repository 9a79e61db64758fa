//! The `ctx` table every workflow function receives: files, commands, JSON,
//! logging, views of tasks and workers, and changes to the work (queued and
//! applied by the engine thread right after the call).
//!
//! Every path a `ctx` function takes is resolved inside the project root,
//! symlinks included ([`inside`]); one that leads out is refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use globset::GlobBuilder;
use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table, Value};

use super::limits::{self, Nested};
use super::views::{self, with_scheduler};
use super::{Change, Shared, spec};
use crate::scheduler::TaskState;

/// Build the `ctx` table.
pub fn install(lua: &Lua, shared: &Rc<Shared>) -> mlua::Result<Table> {
    let ctx = lua.create_table()?;
    ctx.set("root", shared.root.display().to_string())?;
    ctx.set("workflow", shared.name.borrow().clone())?;
    files(lua, &ctx, shared)?;
    commands(lua, &ctx, shared)?;
    data(lua, &ctx)?;
    work(lua, &ctx, shared)?;
    Ok(ctx)
}

/// `path` (relative to `root`, or absolute) resolved the way the system
/// will open it, symlinks followed; an error unless it stays inside `root`.
/// `function` names the caller in the error, as `ctx.read("../x")`.
pub fn inside(root: &Path, path: &str, function: &str) -> mlua::Result<PathBuf> {
    use std::path::Component;
    let refuse = |why: &str| mlua::Error::runtime(format!("{function}(\"{path}\"): {why}"));
    let root = std::fs::canonicalize(root).map_err(|e| refuse(&format!("cannot resolve the project root: {e}")))?;
    let mut resolved = PathBuf::new();
    // While the path exists on disk, each step is resolved by the system (links
    // included); past the first missing part, `..` and `.` are applied by hand.
    let mut on_disk = true;
    let joined = root.join(path);
    for part in joined.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => resolved.push(part.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir if !on_disk => {
                resolved.pop();
            }
            Component::ParentDir | Component::Normal(_) => {
                let next = resolved.join(part.as_os_str());
                if on_disk && std::fs::symlink_metadata(&next).is_ok() {
                    resolved = std::fs::canonicalize(&next)
                        .map_err(|e| refuse(&format!("a link on the way leads nowhere ({e})")))?;
                } else {
                    on_disk = false;
                    if part == Component::ParentDir {
                        resolved.pop();
                    } else {
                        resolved = next;
                    }
                }
            }
        }
    }
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(refuse(&format!(
            "the path leads outside the project root {}; a workflow may only touch files inside it",
            root.display()
        )))
    }
}

fn files(lua: &Lua, ctx: &Table, shared: &Rc<Shared>) -> mlua::Result<()> {
    let root = shared.root.clone();
    ctx.set(
        "glob",
        lua.create_function(move |_, pattern: String| {
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| mlua::Error::runtime(format!("ctx.glob: bad pattern `{pattern}`: {e}")))?
                .compile_matcher();
            Ok(glob_under(&root, &glob))
        })?,
    )?;
    let root = shared.root.clone();
    ctx.set(
        "read",
        lua.create_function(move |_, path: String| {
            read_text(&inside(&root, &path, "ctx.read")?)
                .map_err(|e| mlua::Error::runtime(format!("ctx.read(\"{path}\"): {e}")))
        })?,
    )?;
    let root = shared.root.clone();
    ctx.set("exists", lua.create_function(move |_, path: String| Ok(inside(&root, &path, "ctx.exists")?.exists()))?)?;
    let root = shared.root.clone();
    ctx.set(
        "write",
        lua.create_function(move |_, (path, text): (String, mlua::String)| {
            let full = inside(&root, &path, "ctx.write")?;
            let fail = |e: std::io::Error| mlua::Error::runtime(format!("ctx.write(\"{path}\"): {e}"));
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(fail)?;
            }
            std::fs::write(&full, text.as_bytes()).map_err(fail)
        })?,
    )?;
    let root = shared.root.clone();
    ctx.set(
        "word_count",
        lua.create_function(move |_, what: Value| {
            let _nested = Nested::enter("ctx.word_count")?;
            Ok(text_of(&root, &what, "ctx.word_count")?.split_whitespace().count())
        })?,
    )?;
    let root = shared.root.clone();
    ctx.set(
        "line_count",
        lua.create_function(move |_, what: Value| {
            let _nested = Nested::enter("ctx.line_count")?;
            Ok(text_of(&root, &what, "ctx.line_count")?.lines().count())
        })?,
    )?;
    Ok(())
}

/// Paths under `root` (relative, `/`-separated, sorted) that `glob` matches;
/// `.git` and `.mcc` are skipped. Symlinks are not followed, neither to
/// folders nor to files: only what really lies under the root is listed, and
/// a link loop cannot trap the walk.
pub fn glob_under(root: &Path, glob: &globset::GlobMatcher) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !matches!(e.file_name().to_str(), Some(".git" | ".mcc")))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(root).ok()?.to_string_lossy().replace('\\', "/");
            glob.is_match(&rel).then_some(rel)
        })
        .collect();
    out.sort();
    out
}

/// The text to count: the file `what` names (an error when it is missing),
/// or the text of `{ text = "..." }`.
fn text_of(root: &Path, what: &Value, function: &str) -> mlua::Result<String> {
    match what {
        Value::String(path) => {
            let path = path.to_str()?.to_owned();
            read_text(&inside(root, &path, function)?).map_err(|e| {
                mlua::Error::runtime(format!(
                    "{function}(\"{path}\"): {e}; to count the words of a text rather than a file, pass {{ text = ... }}"
                ))
            })
        }
        Value::Table(t) => t
            .get::<Option<String>>("text")?
            .ok_or_else(|| mlua::Error::runtime(format!("{function}: pass a file path or {{ text = \"...\" }}"))),
        other => Err(mlua::Error::runtime(format!(
            "{function}: pass a file path or {{ text = \"...\" }}, not {}",
            other.type_name()
        ))),
    }
}

/// The Rust half of `ctx.run`: check the command and its options inside
/// the root and return `cmd, limit_ms, cwd`; the Lua half parks the call
/// (see `super::calls`).
pub fn run_request(lua: &Lua, shared: &Rc<Shared>) -> mlua::Result<mlua::Function> {
    let root = shared.root.clone();
    lua.create_function(move |_, (cmd, opts): (String, Option<Table>)| {
        let _nested = Nested::enter("ctx.run")?;
        let mut limit = Duration::from_secs(30);
        let mut cwd = root.clone();
        if let Some(opts) = opts {
            if let Some(t) = opts.get::<Option<String>>("timeout")? {
                limit = humantime::parse_duration(&t).map_err(|e| {
                    mlua::Error::runtime(format!("ctx.run: timeout `{t}` is not a duration such as \"30s\": {e}"))
                })?;
            }
            if let Some(dir) = opts.get::<Option<String>>("cwd")? {
                cwd = inside(&root, &dir, "ctx.run: cwd")?;
            }
        }
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        Ok((cmd, limit_ms, cwd.display().to_string()))
    })
}

fn commands(lua: &Lua, ctx: &Table, shared: &Rc<Shared>) -> mlua::Result<()> {
    let log = shared.clone();
    ctx.set(
        "log",
        lua.create_function(move |_, msg: Value| {
            let _nested = Nested::enter("ctx.log")?;
            let text = match msg {
                Value::String(s) => s.to_string_lossy(),
                other => other.to_string()?,
            };
            log.log.borrow_mut().push(format!("{}: {text}", log.name.borrow()));
            Ok(())
        })?,
    )?;
    ctx.set(
        "now",
        lua.create_function(|_, ()| {
            Ok(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))
        })?,
    )?;
    Ok(())
}

/// How JSON `null` and empty values come into Lua: as `nil`.
pub fn plain() -> SerializeOptions {
    SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false)
}

fn data(lua: &Lua, ctx: &Table) -> mlua::Result<()> {
    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let _nested = Nested::enter("ctx.json.encode")?;
            limits::check_shape(&v, "ctx.json.encode")?;
            let value: serde_json::Value =
                lua.from_value(v).map_err(|e| mlua::Error::runtime(format!("ctx.json.encode: {e}")))?;
            Ok(value.to_string())
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, s: String| {
            let value: serde_json::Value =
                serde_json::from_str(&s).map_err(|e| mlua::Error::runtime(format!("ctx.json.decode: {e}")))?;
            lua.to_value_with(&value, plain())
        })?,
    )?;
    ctx.set("json", json)
}

fn work(lua: &Lua, ctx: &Table, shared: &Rc<Shared>) -> mlua::Result<()> {
    ctx.set(
        "tasks",
        lua.create_function(|lua, filter: Option<Table>| {
            let _nested = Nested::enter("ctx.tasks")?;
            let (state, phase) = match &filter {
                Some(f) => (f.get::<Option<String>>("state")?, f.get::<Option<String>>("phase")?),
                None => (None, None),
            };
            let state = match state {
                None => None,
                Some(s) => Some(TaskState::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
                    mlua::Error::runtime(format!(
                        "ctx.tasks: unknown state `{s}`; use waiting, ready, assigned, submitted, accepted, blocked, failed or cancelled"
                    ))
                })?),
            };
            with_scheduler(lua, |sched| {
                // From the scheduler's indexes: only the tasks listed are walked.
                let chosen = sched.select(phase.as_deref(), state);
                let list = lua.create_table_with_capacity(chosen.len(), 0)?;
                for (i, t) in chosen.into_iter().enumerate() {
                    list.raw_set(i + 1, views::task(lua, t)?)?;
                }
                Ok(list)
            })
        })?,
    )?;
    ctx.set(
        "task",
        lua.create_function(|lua, id: String| {
            with_scheduler(lua, |s| s.task(&id).map(|t| views::task(lua, t)).transpose().map(Option::unwrap_or_default))
        })?,
    )?;
    ctx.set(
        "workers",
        lua.create_function(|lua, ()| {
            with_scheduler(lua, |s| {
                let list = lua.create_table()?;
                for (i, w) in s.workers().enumerate() {
                    list.raw_set(i + 1, lua.create_userdata(w.clone())?)?;
                }
                Ok(list)
            })
        })?,
    )?;
    let add = shared.clone();
    ctx.set("add_task", lua.create_function(move |lua, t: Value| add_tasks(lua, &add, vec![t]))?)?;
    let add = shared.clone();
    ctx.set(
        "add_tasks",
        lua.create_function(move |lua, list: Table| {
            let items = list.sequence_values::<Value>().collect::<mlua::Result<Vec<_>>>()?;
            add_tasks(lua, &add, items)
        })?,
    )?;
    let queue = shared.clone();
    ctx.set(
        "cancel",
        lua.create_function(move |lua, id: String| {
            known(lua, &id, "ctx.cancel")?;
            queue.changes.borrow_mut().push(Change::Cancel(id));
            Ok(())
        })?,
    )?;
    let queue = shared.clone();
    ctx.set(
        "retry",
        lua.create_function(move |lua, id: String| {
            known(lua, &id, "ctx.retry")?;
            queue.changes.borrow_mut().push(Change::Retry(id));
            Ok(())
        })?,
    )?;
    Ok(())
}

fn known(lua: &Lua, id: &str, what: &str) -> mlua::Result<()> {
    with_scheduler(lua, |s| {
        if s.task(id).is_some() { Ok(()) } else { Err(mlua::Error::runtime(format!("{what}: unknown task `{id}`"))) }
    })
}

/// Check new tasks against the hub and what is already queued, then queue them.
fn add_tasks(lua: &Lua, shared: &Shared, items: Vec<Value>) -> mlua::Result<Vec<String>> {
    let _nested = Nested::enter("ctx.add_task")?;
    let lease = shared.lease.borrow().clone();
    let mut specs = Vec::with_capacity(items.len());
    for item in items {
        specs.push(
            spec::to_spec(lua, item, lease.as_deref())
                .map_err(|e| mlua::Error::runtime(format!("ctx.add_task: {e}")))?,
        );
    }
    with_scheduler(lua, |s| {
        let queued = shared.changes.borrow();
        let batch: HashSet<&str> = specs.iter().map(|t| t.id.as_str()).collect();
        let mut earlier: HashSet<&str> = HashSet::with_capacity(specs.len());
        for spec in &specs {
            if s.task(&spec.id).is_some() || queued.adds(&spec.id) || !earlier.insert(&spec.id) {
                return Err(mlua::Error::runtime(format!(
                    "ctx.add_task: task `{}` already exists; give the new task another id",
                    spec.id
                )));
            }
            for dep in &spec.dependencies {
                if s.task(dep).is_none() && !queued.adds(dep) && !batch.contains(dep.as_str()) {
                    return Err(mlua::Error::runtime(format!(
                        "ctx.add_task: task `{}` depends on unknown task `{dep}`",
                        spec.id
                    )));
                }
            }
        }
        Ok(())
    })?;
    let ids = specs.iter().map(|t| t.id.clone()).collect();
    let phase = shared.phase.borrow().clone();
    shared.changes.borrow_mut().push(Change::Add(specs, phase));
    Ok(ids)
}

/// The most a workflow reads of one file (`ctx.read`, `ctx.word_count`, `ctx.line_count`).
pub const MAX_READ: u64 = 16 << 20;

/// The text of a regular file of at most [`MAX_READ`] bytes: a FIFO or a
/// device is refused at once rather than blocking or flooding the engine.
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = crate::layout::read_regular(path, MAX_READ).map_err(|e| match e {
        crate::layout::Refused::TooLarge { size, limit, .. } => {
            format!("the file is {size} bytes, over the {limit}-byte limit of what a workflow reads")
        }
        crate::layout::Refused::Special { kind, .. } => {
            format!("the file is {kind}; a workflow reads only regular files")
        }
        other => other.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|_| "stream did not contain valid UTF-8".to_owned())
}
