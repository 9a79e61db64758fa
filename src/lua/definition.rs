//! Reading the table a workflow file returns: the workflow's settings, its
//! phases and their hooks, checked with errors that name `file:line`.

use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};
use mlua::{Function, Table, Value};

use super::{Workflow, errors, spec};
use crate::task::TaskSpec;
use crate::wire::Usage;

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
    /// Picks the winner of a race among its accepted racers (see `src/engine/races.rs`).
    pub(super) choose: Option<Function>,
    /// What the phase's attempts may spend together.
    pub(super) budget: Option<Usage>,
    /// The most tasks of this phase out (assigned or submitted) at once.
    pub(super) max_workers: Option<usize>,
}

const WORKFLOW_FIELDS: [&str; 10] = [
    "name",
    "phases",
    "lease",
    "max_attempts",
    "wait",
    "quiet_after",
    "presence_grace",
    "budget",
    "max_workers",
    "worktree",
];
const PHASE_FIELDS: [&str; 10] =
    ["name", "tasks", "split", "assign", "accept", "complete", "on", "choose", "budget", "max_workers"];
const HOOKS: [&str; 6] = ["worker_joined", "worker_quiet", "task_blocked", "task_failed", "timer", "files"];

/// A `budget` table: `usd` a number of 0 or more, `tokens` a whole number,
/// at least one of them; the error names what is wrong.
pub(super) fn read_budget(b: &Table) -> Result<Usage, String> {
    for key in keys(b) {
        if !spec::BUDGET_FIELDS.contains(&key.as_str()) {
            return Err(errors::unknown_field(&key, &spec::BUDGET_FIELDS, "a budget"));
        }
    }
    let usd = match b.get::<Value>("usd") {
        Ok(Value::Nil) => None,
        Ok(Value::Integer(n)) if n >= 0 => Some(n as f64),
        Ok(Value::Number(n)) if n.is_finite() && n >= 0.0 => Some(n),
        _ => return Err("`usd` must be a number of 0 or more, such as 25 or 2.50".to_owned()),
    };
    let tokens = match b.get::<Value>("tokens") {
        Ok(Value::Nil) => None,
        Ok(Value::Integer(n)) if n >= 0 => Some(n as u64),
        _ => return Err("`tokens` must be a whole number of 0 or more, such as 2000000".to_owned()),
    };
    let limit = Usage { usd, tokens };
    if limit.is_empty() {
        return Err("give `usd`, `tokens` or both, such as { usd = 25 }".to_owned());
    }
    Ok(limit)
}

/// A whole number of 1 or more (a Lua integer, or a float with no fraction).
fn whole(value: &Value) -> Option<usize> {
    match value {
        Value::Integer(n) if *n >= 1 => usize::try_from(*n).ok(),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked whole and positive")]
        Value::Number(f) if *f >= 1.0 && f.fract() == 0.0 && *f < 1e9 => Some(*f as usize),
        _ => None,
    }
}

/// The string keys of a table (a workflow, a phase, `on`), in no set order.
fn keys(t: &Table) -> Vec<String> {
    t.pairs::<Value, Value>().filter_map(Result::ok).map(|(k, _)| k.to_string().unwrap_or_default()).collect()
}

/// Whether `line` assigns `key` (`key =`, not `other_key =` or `key ==`).
pub(super) fn assigns(line: &str, key: &str) -> bool {
    line.match_indices(key).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + key.len()..].trim_start();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with('=') && !after.starts_with("==")
    })
}

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

    /// `file:N` of the first line assigning `key` (`key =`), else of the first line naming it.
    pub(super) fn place_key(&self, key: &str, near: &str) -> String {
        match self.source.lines().position(|line| assigns(line, key)) {
            Some(i) => format!("{}:{}", self.file, i + 1),
            None => self.place(near),
        }
    }

    /// Read the returned table; every error found is a line of the error.
    pub(super) fn read_table(&mut self, returned: Value) -> Result<(), String> {
        let Value::Table(t) = returned else {
            return Err(format!(
                "{}: the workflow file must return a table such as {{ name = \"x\", phases = {{ ... }} }}; it returned {}",
                self.place(""),
                returned.type_name()
            ));
        };
        let mut errors = Vec::new();
        let end = self.place("");
        for key in keys(&t) {
            if !WORKFLOW_FIELDS.contains(&key.as_str()) {
                errors.push(format!(
                    "{}: the workflow has an {}",
                    self.place_key(&key, ""),
                    errors::unknown_field(&key, &WORKFLOW_FIELDS, "a workflow")
                ));
            }
        }
        match t.get::<Value>("name") {
            Ok(Value::String(s)) if !s.to_string_lossy().trim().is_empty() => self.name = s.to_string_lossy(),
            Ok(Value::Nil | Value::String(_)) => {
                errors.push(format!("{end}: the workflow has no `name`: add name = \"my-workflow\""));
            }
            Ok(other) => errors.push(format!(
                "{}: the workflow's {}",
                self.place_key("name", ""),
                errors::wrong_type("name", "a string such as \"my-workflow\"", other.type_name())
            )),
            Err(e) => errors.push(format!("{end}: {e}")),
        }
        self.shared.name.borrow_mut().clone_from(&self.name);
        self.ctx.set("workflow", self.name.clone()).map_err(|e| e.to_string())?;
        if self.duration(&t, "lease", &mut errors).is_some()
            && let Ok(lease) = t.get::<String>("lease")
        {
            *self.shared.lease.borrow_mut() = Some(lease);
        }
        if let Some(quiet) = self.duration(&t, "quiet_after", &mut errors) {
            self.quiet_after = quiet;
        }
        if let Some(grace) = self.duration(&t, "presence_grace", &mut errors) {
            self.presence_grace = Some(grace);
        }
        self.duration(&t, "wait", &mut errors);
        match t.get::<Value>("max_attempts") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if n >= 1 => self.max_attempts = Some(n as u32),
            _ => errors.push(format!(
                "{}: `max_attempts` must be a whole number of 1 or more",
                self.place_key("max_attempts", "max_attempts")
            )),
        }
        match t.get::<Value>("worktree") {
            Ok(Value::Nil) => {}
            Ok(Value::Boolean(on)) => self.worktree = Some(on),
            _ => errors.push(format!(
                "{}: `worktree` must be true or false (true: every worker works in a git worktree of its own)",
                self.place_key("worktree", "worktree")
            )),
        }
        let run_budget = self.budget_of(&t, "the workflow", "", &mut errors);
        self.spend_limits.run = run_budget;
        self.kind_caps(&t, &mut errors);
        match t.get::<Value>("phases") {
            Ok(Value::Table(phases)) => {
                for (i, value) in phases.sequence_values::<Value>().enumerate() {
                    let value = value.map_err(|e| e.to_string())?;
                    let Some(phase) = self.read_phase(i, value, &mut errors) else { continue };
                    if self.phases.iter().any(|p| p.name == phase.name) {
                        errors.push(format!(
                            "{}: two phases are named \"{}\"; give each phase its own name",
                            self.place(&format!("\"{}\"", phase.name)),
                            phase.name
                        ));
                        continue;
                    }
                    if let Some(limit) = phase.budget {
                        self.spend_limits.phases.insert(phase.name.clone(), limit);
                    }
                    if let Some(max) = phase.max_workers {
                        self.caps.phases.insert(phase.name.clone(), max);
                    }
                    self.phases.push(phase);
                }
                if self.phases.is_empty() && errors.is_empty() {
                    errors.push(format!("{end}: `phases` is empty: a workflow needs at least one phase"));
                }
            }
            Ok(Value::Nil) => errors.push(format!(
                "{end}: the workflow has no `phases`: add phases = {{ {{ name = \"first\", tasks = {{ ... }} }} }}"
            )),
            Ok(other) => errors.push(format!(
                "{}: {}",
                self.place_key("phases", ""),
                errors::wrong_type("phases", "a list of phases", other.type_name())
            )),
            Err(e) => errors.push(format!("{end}: {e}")),
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        self.phase_states = vec![super::phases::PhaseState::Waiting; self.phases.len()];
        Ok(())
    }

    /// The `budget` of a workflow or phase table (`whose` names it in
    /// errors, `near` finds its line): `{ usd = 25, tokens = 2000000 }`.
    fn budget_of(&self, t: &Table, whose: &str, near: &str, errors: &mut Vec<String>) -> Option<Usage> {
        let place = || self.place_key("budget", near);
        match t.get::<Value>("budget") {
            Ok(Value::Nil) => None,
            Ok(Value::Table(b)) => match read_budget(&b) {
                Ok(limit) => Some(limit),
                Err(e) => {
                    errors.push(format!("{}: {whose}'s `budget`: {e}", place()));
                    None
                }
            },
            Ok(other) => {
                errors.push(format!(
                    "{}: {whose}'s {}",
                    place(),
                    errors::wrong_type("budget", "a table such as { usd = 25, tokens = 2000000 }", other.type_name())
                ));
                None
            }
            Err(e) => {
                errors.push(format!("{}: {e}", place()));
                None
            }
        }
    }

    /// The workflow's `max_workers = { review = 1 }`: how many tasks of each
    /// type may be out at once. A number alone is refused: it is a phase's.
    fn kind_caps(&mut self, t: &Table, errors: &mut Vec<String>) {
        let here = self.place_key("max_workers", "max_workers");
        match t.get::<Value>("max_workers") {
            Ok(Value::Nil) => {}
            Ok(Value::Table(by_kind)) => {
                for pair in by_kind.pairs::<Value, Value>() {
                    let Ok((kind, max)) = pair else { continue };
                    let kind = match kind {
                        Value::String(s) => s.to_string_lossy(),
                        other => {
                            errors.push(format!(
                                "{}: `max_workers` of the workflow is keyed by task type, such as {{ review = 1 }}, not by {}",
                                here,
                                other.type_name()
                            ));
                            continue;
                        }
                    };
                    match whole(&max) {
                        Some(n) => {
                            self.caps.kinds.insert(kind, n);
                        }
                        None => errors.push(format!("{here}: `max_workers.{kind}` must be a whole number of 1 or more (tasks of type {kind} out at once)")),
                    }
                }
            }
            Ok(_) => errors.push(format!("{here}: `max_workers` of the workflow is a table by task type, such as max_workers = {{ review = 1 }}; a phase takes a number (max_workers = 2)")),
            Err(e) => errors.push(format!("{here}: {e}")),
        }
    }

    /// A duration field of the workflow table, if present and well formed.
    fn duration(&self, t: &Table, key: &str, errors: &mut Vec<String>) -> Option<Duration> {
        match t.get::<Value>(key) {
            Ok(Value::Nil) => None,
            Ok(Value::String(s)) => {
                let text = s.to_string_lossy();
                let parsed = humantime::parse_duration(&text).ok();
                if parsed.is_none() {
                    errors.push(format!("{}: {}", self.place_key(key, ""), errors::not_a_duration(key, &text)));
                }
                parsed
            }
            Ok(other) => {
                errors.push(format!(
                    "{}: {}",
                    self.place_key(key, ""),
                    errors::wrong_type(key, "a string such as \"30m\"", other.type_name())
                ));
                None
            }
            Err(e) => {
                errors.push(format!("{}: {e}", self.place("")));
                None
            }
        }
    }

    /// Read phase `i`; its errors go to `errors` (all of them, not the first).
    fn read_phase(&self, i: usize, value: Value, errors: &mut Vec<String>) -> Option<Phase> {
        let Value::Table(t) = value else {
            errors.push(format!(
                "{}: phase {} must be a table such as {{ name = \"x\", split = function(ctx) ... end }}",
                self.place(""),
                i + 1
            ));
            return None;
        };
        let name = match t.get::<Value>("name") {
            Ok(Value::String(s)) if !s.to_string_lossy().trim().is_empty() => s.to_string_lossy(),
            Ok(Value::Nil | Value::String(_)) => {
                errors.push(format!("{}: phase {} has no `name`", self.place("phases"), i + 1));
                return None;
            }
            Ok(other) => {
                errors.push(format!(
                    "{}: phase {}: {}",
                    self.place("phases"),
                    i + 1,
                    errors::wrong_type("name", "a string such as \"review\"", other.type_name())
                ));
                return None;
            }
            Err(e) => {
                errors.push(e.to_string());
                return None;
            }
        };
        let here = self.place(&format!("\"{name}\""));
        let before = errors.len();
        for key in keys(&t) {
            if !PHASE_FIELDS.contains(&key.as_str()) {
                errors.push(format!(
                    "{}: phase \"{name}\" has an {}",
                    self.place_key(&key, &format!("\"{name}\"")),
                    errors::unknown_field(&key, &PHASE_FIELDS, "a phase")
                ));
            }
        }
        let mut function = |key: &str| -> Option<Function> {
            match t.get::<Value>(key) {
                Ok(Value::Nil) => None,
                Ok(Value::Function(f)) => Some(f),
                Ok(other) => {
                    errors.push(format!(
                        "{here}: `{key}` of phase \"{name}\" must be a function, not {}",
                        other.type_name()
                    ));
                    None
                }
                Err(e) => {
                    errors.push(format!("{here}: {e}"));
                    None
                }
            }
        };
        let (split, assign, accept, complete) =
            (function("split"), function("assign"), function("accept"), function("complete"));
        let choose = function("choose");
        let tasks = match t.get::<Value>("tasks") {
            Ok(Value::Nil) => None,
            Ok(v) => match spec::checked_list(&self.lua, v, self.shared.lease.borrow().as_deref()) {
                Ok(tasks) => Some(tasks),
                Err(problems) => {
                    for p in problems {
                        let place = p
                            .field
                            .as_deref()
                            .map_or_else(|| here.clone(), |f| self.place_key(f, &format!("\"{name}\"")));
                        errors.push(format!("{place}: tasks of phase \"{name}\": {}", p.text));
                    }
                    Some(Vec::new())
                }
            },
            Err(e) => {
                errors.push(format!("{here}: {e}"));
                None
            }
        };
        if tasks.is_none() && split.is_none() && t.get::<Value>("split").is_ok_and(|v| v.is_nil()) {
            errors.push(format!("{here}: phase \"{name}\" has neither `tasks` nor `split`; give it one of them"));
        }
        if tasks.is_some() && split.is_some() {
            errors.push(format!("{here}: phase \"{name}\" has both `tasks` and `split`; keep one"));
        }
        let max_workers = match t.get::<Value>("max_workers") {
            Ok(Value::Nil) => None,
            Ok(value) => {
                let n = whole(&value);
                if n.is_none() {
                    errors.push(format!(
                        "{}: `max_workers` of phase \"{name}\" must be a whole number of 1 or more (its tasks out at once)",
                        self.place_key("max_workers", &format!("\"{name}\""))
                    ));
                }
                n
            }
            Err(e) => {
                errors.push(format!("{here}: {e}"));
                None
            }
        };
        let on = match t.get::<Value>("on") {
            Ok(Value::Nil) => Hooks::default(),
            Ok(Value::Table(on)) => Self::read_hooks(&name, &here, &on, errors),
            _ => {
                errors.push(format!("{here}: `on` of phase \"{name}\" must be a table of hooks"));
                Hooks::default()
            }
        };
        let budget = self.budget_of(&t, &format!("phase \"{name}\""), &format!("\"{name}\""), errors);
        (errors.len() == before).then_some(Phase {
            name,
            tasks,
            split,
            assign,
            accept,
            complete,
            on,
            choose,
            budget,
            max_workers,
        })
    }

    fn read_hooks(name: &str, here: &str, on: &Table, errors: &mut Vec<String>) -> Hooks {
        for key in keys(on) {
            if !HOOKS.contains(&key.as_str()) {
                errors.push(format!(
                    "{here}: phase \"{name}\" has an unknown hook `on.{key}`{}",
                    match errors::unknown_field(&key, &HOOKS, "").split_once("(did you mean") {
                        Some((_, rest)) => format!(" (did you mean{rest}"),
                        None => format!("; hooks are {}", HOOKS.join(", ")),
                    }
                ));
            }
        }
        let function = |v: mlua::Result<Value>, key: &str, errors: &mut Vec<String>| match v {
            Ok(Value::Nil) => None,
            Ok(Value::Function(f)) => Some(f),
            Ok(other) => {
                errors.push(format!(
                    "{here}: hook `{key}` of phase \"{name}\" must be a function, not {}",
                    other.type_name()
                ));
                None
            }
            Err(e) => {
                errors.push(format!("{here}: {e}"));
                None
            }
        };
        let mut hooks = Hooks {
            worker_joined: function(on.get("worker_joined"), "worker_joined", errors),
            worker_quiet: function(on.get("worker_quiet"), "worker_quiet", errors),
            task_blocked: function(on.get("task_blocked"), "task_blocked", errors),
            task_failed: function(on.get("task_failed"), "task_failed", errors),
            ..Hooks::default()
        };
        if let Ok(Value::Table(timer)) = on.get::<Value>("timer") {
            let every = if let Ok(Value::String(s)) = timer.get::<Value>("every") {
                let text = s.to_string_lossy();
                let parsed = humantime::parse_duration(&text).ok();
                if parsed.is_none() {
                    errors.push(format!("{here}: {}", errors::not_a_duration("on.timer.every", &text)));
                }
                parsed
            } else {
                errors.push(format!("{here}: on.timer of phase \"{name}\" needs every = \"30s\""));
                None
            };
            let run = function(timer.get("run"), "timer.run", errors);
            if run.is_none() {
                errors.push(format!("{here}: on.timer of phase \"{name}\" needs run = function(ctx) ... end"));
            }
            if let (Some(every), Some(run)) = (every, run) {
                hooks.timer = Some((every.max(Duration::from_millis(10)), run));
            }
        }
        if let Ok(Value::Table(files)) = on.get::<Value>("files") {
            let glob = if let Ok(pattern) = files.get::<String>("glob") {
                match GlobBuilder::new(&pattern).literal_separator(true).build() {
                    Ok(glob) => Some(glob.compile_matcher()),
                    Err(e) => {
                        errors.push(format!("{here}: on.files.glob `{pattern}`: {e}"));
                        None
                    }
                }
            } else {
                errors.push(format!("{here}: on.files of phase \"{name}\" needs glob = \"src/**/*.rs\""));
                None
            };
            let run = function(files.get("run"), "files.run", errors);
            if run.is_none() {
                errors.push(format!("{here}: on.files of phase \"{name}\" needs run = function(paths, ctx) ... end"));
            }
            if let (Some(glob), Some(run)) = (glob, run) {
                hooks.files = Some((glob, run));
            }
        }
        hooks
    }
}
