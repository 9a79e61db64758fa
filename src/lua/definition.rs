//! Reading the table a workflow file returns: the workflow's settings, its
//! phases and their hooks, checked with errors that name `file:line`.

use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use mlua::{Function, Table, Value};

use super::{Workflow, spec};
use crate::task::TaskSpec;

#[derive(Default)]
pub(super) struct Hooks {
    pub(super) worker_joined: Option<Function>,
    pub(super) worker_quiet: Option<Function>,
    pub(super) task_blocked: Option<Function>,
    pub(super) task_failed: Option<Function>,
    pub(super) timer: Option<(Duration, Function)>,
    pub(super) files: Option<(GlobMatcher, Function)>,
}

pub(super) struct Phase {
    pub(super) name: String,
    pub(super) tasks: Option<Vec<TaskSpec>>,
    pub(super) split: Option<Function>,
    pub(super) assign: Option<Function>,
    pub(super) accept: Option<Function>,
    pub(super) complete: Option<Function>,
    pub(super) on: Hooks,
}

const PHASE_FIELDS: [&str; 7] = ["name", "tasks", "split", "assign", "accept", "complete", "on"];
const HOOKS: [&str; 6] = ["worker_joined", "worker_quiet", "task_blocked", "task_failed", "timer", "files"];

impl Workflow {
    /// `file:N` for the first line holding `needle`, else the `return` line.
    pub(super) fn place(&self, needle: &str) -> String {
        let lines: Vec<&str> = self.source.lines().collect();
        let line = lines
            .iter()
            .position(|l| !needle.is_empty() && l.contains(needle))
            .or_else(|| lines.iter().rposition(|l| l.trim_start().starts_with("return")))
            .map_or(1, |i| i + 1);
        format!("{}:{line}", self.file)
    }

    /// `file:N` where a function is defined.
    pub(super) fn place_of(&self, f: &Function) -> String {
        let info = f.info();
        match (info.short_src, info.line_defined) {
            (Some(src), Some(line)) => format!("{src}:{line}"),
            _ => self.file.clone(),
        }
    }

    pub(super) fn read_table(&mut self, returned: Value) -> Result<(), String> {
        let Value::Table(t) = returned else {
            return Err(format!(
                "{}: the workflow file must return a table such as {{ name = \"x\", phases = {{ ... }} }}; it returned {}",
                self.place(""),
                returned.type_name()
            ));
        };
        let end = self.place("");
        let bad = |what: String| format!("{end}: {what}");
        self.name = match t.get::<Value>("name") {
            Ok(Value::String(s)) if !s.to_string_lossy().trim().is_empty() => s.to_string_lossy(),
            _ => return Err(bad("the workflow has no `name`: add name = \"my-workflow\"".to_owned())),
        };
        self.shared.name.borrow_mut().clone_from(&self.name);
        self.ctx.set("workflow", self.name.clone()).map_err(|e| e.to_string())?;
        let text = |key: &str| -> Result<Option<String>, String> {
            match t.get::<Value>(key) {
                Ok(Value::Nil) => Ok(None),
                Ok(Value::String(s)) => Ok(Some(s.to_string_lossy())),
                _ => Err(format!("{}: `{key}` must be a string such as \"30m\"", self.place(&format!("{key} ")))),
            }
        };
        if let Some(lease) = text("lease")? {
            humantime::parse_duration(&lease).map_err(|e| {
                format!("{}: lease `{lease}` is not a duration such as \"30m\": {e}", self.place("lease"))
            })?;
            *self.shared.lease.borrow_mut() = Some(lease);
        }
        if let Some(quiet) = text("quiet_after")? {
            self.quiet_after = humantime::parse_duration(&quiet).map_err(|e| {
                format!("{}: quiet_after `{quiet}` is not a duration such as \"10m\": {e}", self.place("quiet_after"))
            })?;
        }
        match t.get::<Value>("max_attempts") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if n >= 1 => self.max_attempts = Some(n as u32),
            _ => {
                return Err(format!(
                    "{}: `max_attempts` must be a whole number of 1 or more",
                    self.place("max_attempts")
                ));
            }
        }
        let Ok(Value::Table(phases)) = t.get::<Value>("phases") else {
            return Err(bad(
                "the workflow has no `phases`: add phases = { { name = \"first\", tasks = { ... } } }".to_owned()
            ));
        };
        for (i, value) in phases.sequence_values::<Value>().enumerate() {
            let value = value.map_err(|e| e.to_string())?;
            let phase = self.read_phase(i, value)?;
            if self.phases.iter().any(|p| p.name == phase.name) {
                return Err(format!(
                    "{}: two phases are named \"{}\"; give each phase its own name",
                    self.place(&format!("\"{}\"", phase.name)),
                    phase.name
                ));
            }
            self.phases.push(phase);
        }
        if self.phases.is_empty() {
            return Err(bad("`phases` is empty: a workflow needs at least one phase".to_owned()));
        }
        self.started = vec![false; self.phases.len()];
        self.split_failed = vec![false; self.phases.len()];
        Ok(())
    }

    fn read_phase(&self, i: usize, value: Value) -> Result<Phase, String> {
        let Value::Table(t) = value else {
            return Err(format!(
                "{}: phase {} must be a table such as {{ name = \"x\", split = function(ctx) ... end }}",
                self.place(""),
                i + 1
            ));
        };
        let name = match t.get::<Value>("name") {
            Ok(Value::String(s)) if !s.to_string_lossy().trim().is_empty() => s.to_string_lossy(),
            _ => return Err(format!("{}: phase {} has no `name`", self.place("phases"), i + 1)),
        };
        let here = self.place(&format!("\"{name}\""));
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| e.to_string())?;
            let key = k.to_string().unwrap_or_default();
            if !PHASE_FIELDS.contains(&key.as_str()) {
                return Err(format!(
                    "{here}: phase \"{name}\" has an unknown field `{key}`; a phase has {}",
                    PHASE_FIELDS.join(", ")
                ));
            }
        }
        let function = |key: &str| -> Result<Option<Function>, String> {
            match t.get::<Value>(key) {
                Ok(Value::Nil) => Ok(None),
                Ok(Value::Function(f)) => Ok(Some(f)),
                Ok(other) => {
                    Err(format!("{here}: `{key}` of phase \"{name}\" must be a function, not {}", other.type_name()))
                }
                Err(e) => Err(e.to_string()),
            }
        };
        let (split, assign, accept, complete) =
            (function("split")?, function("assign")?, function("accept")?, function("complete")?);
        let tasks = match t.get::<Value>("tasks") {
            Ok(Value::Nil) => None,
            Ok(v) => Some(
                spec::to_specs(&self.lua, v, self.shared.lease.borrow().as_deref())
                    .map_err(|e| format!("{here}: tasks of phase \"{name}\": {e}"))?,
            ),
            Err(e) => return Err(e.to_string()),
        };
        if tasks.is_none() && split.is_none() {
            return Err(format!("{here}: phase \"{name}\" has neither `tasks` nor `split`; give it one of them"));
        }
        if tasks.is_some() && split.is_some() {
            return Err(format!("{here}: phase \"{name}\" has both `tasks` and `split`; keep one"));
        }
        let on = match t.get::<Value>("on") {
            Ok(Value::Nil) => Hooks::default(),
            Ok(Value::Table(on)) => Self::read_hooks(&name, &here, &on)?,
            _ => return Err(format!("{here}: `on` of phase \"{name}\" must be a table of hooks")),
        };
        Ok(Phase { name, tasks, split, assign, accept, complete, on })
    }

    fn read_hooks(name: &str, here: &str, on: &Table) -> Result<Hooks, String> {
        for pair in on.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| e.to_string())?;
            let key = k.to_string().unwrap_or_default();
            if !HOOKS.contains(&key.as_str()) {
                return Err(format!(
                    "{here}: phase \"{name}\" has an unknown hook `on.{key}`; hooks are {}",
                    HOOKS.join(", ")
                ));
            }
        }
        let function = |v: Value, key: &str| -> Result<Option<Function>, String> {
            match v {
                Value::Nil => Ok(None),
                Value::Function(f) => Ok(Some(f)),
                other => Err(format!(
                    "{here}: hook `{key}` of phase \"{name}\" must be a function, not {}",
                    other.type_name()
                )),
            }
        };
        let get = |key: &str| on.get::<Value>(key).map_err(|e| e.to_string());
        let mut hooks = Hooks {
            worker_joined: function(get("worker_joined")?, "worker_joined")?,
            worker_quiet: function(get("worker_quiet")?, "worker_quiet")?,
            task_blocked: function(get("task_blocked")?, "task_blocked")?,
            task_failed: function(get("task_failed")?, "task_failed")?,
            ..Hooks::default()
        };
        if let Value::Table(timer) = get("timer")? {
            let every: String = timer
                .get("every")
                .map_err(|_| format!("{here}: on.timer of phase \"{name}\" needs every = \"30s\""))?;
            let every = humantime::parse_duration(&every)
                .map_err(|e| format!("{here}: on.timer.every `{every}` is not a duration such as \"30s\": {e}"))?;
            let run = function(timer.get("run").map_err(|e| e.to_string())?, "timer.run")?
                .ok_or_else(|| format!("{here}: on.timer of phase \"{name}\" needs run = function(ctx) ... end"))?;
            hooks.timer = Some((every.max(Duration::from_millis(10)), run));
        }
        if let Value::Table(files) = get("files")? {
            let pattern: String = files
                .get("glob")
                .map_err(|_| format!("{here}: on.files of phase \"{name}\" needs glob = \"src/**/*.rs\""))?;
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("{here}: on.files.glob `{pattern}`: {e}"))?
                .compile_matcher();
            let run = function(files.get("run").map_err(|e| e.to_string())?, "files.run")?.ok_or_else(|| {
                format!("{here}: on.files of phase \"{name}\" needs run = function(paths, ctx) ... end")
            })?;
            hooks.files = Some((glob, run));
        }
        Ok(hooks)
    }
}
