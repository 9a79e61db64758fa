//! Read-only views of hub state given to Lua: tasks and workers as userdata
//! (fields read straight from the Rust value), phases and reports as tables.

use mlua::{Lua, LuaSerdeExt, Table, UserData, UserDataFields, Value};

use super::SESSION;
use crate::command::Outcome;
use crate::scheduler::{Scheduler, Task, TaskState, Worker};
use crate::task::Report;

impl UserData for Task {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("id", |_, t| Ok(t.spec.id.clone()));
        fields.add_field_method_get("description", |_, t| Ok(t.spec.description.clone()));
        fields.add_field_method_get("type", |_, t| Ok(t.spec.kind.clone()));
        fields.add_field_method_get("kind", |_, t| Ok(t.spec.kind.clone()));
        fields.add_field_method_get("needs", |_, t| Ok(t.spec.needs.clone()));
        fields.add_field_method_get("state", |_, t| Ok(t.state().name()));
        fields.add_field_method_get("attempt", |_, t| Ok(t.attempt()));
        fields.add_field_method_get("holder", |_, t| Ok(t.holder().map(str::to_owned)));
        fields.add_field_method_get("phase", |_, t| Ok(t.phase().map(str::to_owned)));
        fields.add_field_method_get("read", |_, t| Ok(t.spec.context.target_files.clone()));
        fields.add_field_method_get("write", |_, t| Ok(t.spec.context.output_files.clone()));
        fields.add_field_method_get("requirements", |_, t| Ok(t.spec.context.requirements.clone()));
        fields.add_field_method_get("rules", |_, t| Ok(t.spec.context.relevant_rules.clone()));
        fields.add_field_method_get("criteria", |_, t| Ok(t.spec.acceptance.criteria.clone()));
        fields.add_field_method_get("validation", |_, t| Ok(t.spec.acceptance.validation.clone()));
        fields.add_field_method_get("dependencies", |_, t| Ok(t.spec.dependencies.clone()));
        fields.add_field_method_get("reasons", |_, t| Ok(t.reasons().to_vec()));
        fields.add_field_method_get("question", |_, t| Ok(t.question().map(str::to_owned)));
        fields.add_field_method_get("answer", |_, t| Ok(t.answer().map(str::to_owned)));
        fields.add_field_method_get("lease_ms", |_, t| Ok(t.lease_ms()));
        fields.add_field_method_get("race", |_, t| Ok(crate::scheduler::race_size(&t.spec)));
        fields.add_field_method_get("race_of", |_, t| Ok(crate::scheduler::race_of(&t.spec).map(str::to_owned)));
        fields.add_field_method_get("data", |lua, t| match t.spec.extra.get("data") {
            Some(data) => lua.to_value(data),
            None => Ok(Value::Nil),
        });
    }
}

impl UserData for Worker {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("name", |_, w| Ok(w.name().to_owned()));
        fields.add_field_method_get("score", |_, w| Ok(w.score()));
        fields.add_field_method_get("can", |_, w| Ok(w.can().to_vec()));
        fields.add_field_method_get("model", |_, w| Ok(w.model().map(str::to_owned)));
        fields.add_field_method_get("accepted", |_, w| Ok(w.accepted().to_vec()));
        fields.add_field_method_get("history", |_, w| Ok(w.accepted().to_vec()));
        fields.add_field_method_get("holding", |lua, w| {
            with_scheduler(lua, |s| Ok(s.held_by(w.name()).map(|t| t.spec.id.clone())))
        });
    }
}

/// Run `f` with the scheduler of the call in progress.
pub fn with_scheduler<R>(lua: &Lua, f: impl FnOnce(&Scheduler) -> mlua::Result<R>) -> mlua::Result<R> {
    let session: mlua::AnyUserData = lua
        .named_registry_value(SESSION)
        .map_err(|_| mlua::Error::runtime("hub state is only available while the workflow is called"))?;
    session
        .borrow_scoped::<Scheduler, _>(f)
        .map_err(|_| mlua::Error::runtime("hub state is only available while the workflow is called"))?
}

/// An owned task view (for `ctx.tasks`, `ctx.task`).
pub fn task(lua: &Lua, task: &Task) -> mlua::Result<Value> {
    lua.create_userdata(task.clone()).map(Value::UserData)
}

/// The phase view given to `complete` and in `previous`, but its `tasks`:
/// `name`, `counts` (by state), `all_accepted`, `failed`, from the
/// scheduler's phase counts, so it costs the same however many tasks the
/// phase or the hub holds. The caller adds `tasks`.
pub fn phase(lua: &Lua, scheduler: &Scheduler, name: &str) -> mlua::Result<Table> {
    let view = lua.create_table()?;
    view.set("name", name)?;
    let counts = lua.create_table()?;
    let mut total = 0;
    for state in TaskState::ALL {
        let n = scheduler.phase_count(name, state);
        total += n;
        counts.set(state.name(), n)?;
    }
    // Racers cancelled because another racer won count as accepted here:
    // their race is. Costs what the phase's cancelled tasks are.
    let lost = scheduler
        .select(Some(name), Some(TaskState::Cancelled))
        .iter()
        .filter(|t| scheduler.lost_to(&t.spec.id).is_some())
        .count();
    view.set("all_accepted", scheduler.phase_count(name, TaskState::Accepted) + lost == total)?;
    view.set("counts", counts)?;
    view.set("failed", scheduler.phase_count(name, TaskState::Failed))?;
    Ok(view)
}

/// A race's candidate as `choose` sees it: `id`, `racer`, `worker`,
/// `size`, `notes`, and `validation` (as `ctx.run` returns it) when it has one.
pub fn candidate(lua: &Lua, c: &crate::engine::Candidate) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("id", c.id.clone())?;
    t.set("racer", c.racer)?;
    t.set("worker", c.worker.clone())?;
    t.set("size", c.size)?;
    t.set("notes", c.notes.clone())?;
    if let Some(v) = &c.validation {
        t.set("validation", outcome(lua, v)?)?;
    }
    Ok(t)
}

/// What `ctx.run` returns: `code`, `ok`, `stdout`, `stderr`, `timed_out`.
pub fn outcome(lua: &Lua, outcome: &Outcome) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("code", outcome.code)?;
    t.set("ok", outcome.success())?;
    t.set("stdout", outcome.stdout.clone())?;
    t.set("stderr", outcome.stderr.clone())?;
    t.set("timed_out", outcome.timed_out)?;
    Ok(t)
}

/// The report given to `accept`.
pub fn report(lua: &Lua, report: &Report, validation: Option<&Outcome>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("task_id", report.task_id.clone())?;
    t.set("worker", report.worker_id.clone())?;
    t.set("status", format!("{:?}", report.status).to_lowercase())?;
    t.set("deliverables", report.deliverables.clone())?;
    t.set("score", report.context_efficiency_score)?;
    t.set("notes", report.notes.clone())?;
    if let Some(usage) = report.usage {
        let u = lua.create_table()?;
        u.set("usd", usage.usd)?;
        u.set("tokens", usage.tokens)?;
        t.set("usage", u)?;
    }
    // Files changed outside the task, as the hub sorted them at `done` (docs/worker.md).
    t.set("outside", report.outside.clone())?;
    t.set("shared", report.shared.clone())?;
    let conflicts = lua.create_table()?;
    for (i, c) in report.conflicts.iter().enumerate() {
        let one = lua.create_table()?;
        one.set("file", c.file.clone())?;
        one.set("task", c.task.clone())?;
        one.set("holder", c.holder.clone())?;
        conflicts.set(i + 1, one)?;
    }
    t.set("conflicts", conflicts)?;
    let v = lua.create_table()?;
    v.set("ran", validation.is_some())?;
    v.set("passed", validation.is_none_or(Outcome::success))?;
    if let Some(o) = validation {
        v.set("code", o.code)?;
        v.set("stdout", o.stdout.clone())?;
        v.set("stderr", o.stderr.clone())?;
        v.set("timed_out", o.timed_out)?;
    }
    t.set("validation", v)?;
    Ok(t)
}
