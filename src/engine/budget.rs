//! Budgets: what the run, each phase and each task spent, from the usage
//! workers report with each attempt, against the limits the workflow sets
//! (`budget = { usd = ..., tokens = ... }` on the workflow, a phase, a task)
//! and the engineer changes while the run goes on (`mcc budget set`).
//!
//! The spending is never stored on its own: it is the sum of the usage kept
//! with each applied report in the tasks' stored records, counted again at
//! start. What the engineer set is kept in the store's `meta` table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{ConnId, Engine};
use crate::scheduler::{Scheduler, Task, TaskId};
use crate::task::OverBudget;
use crate::wire::{BudgetLine, BudgetScope, Budgets, ServerMsg, Usage, Waiting, WaitingFor};

/// The `meta` key what `mcc budget set` changed is stored under.
pub(super) const META_KEY: &str = "budgets";

/// The limits a workflow declares: the run's and its phases'.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub run: Option<Usage>,
    pub phases: BTreeMap<String, Usage>,
}

/// What the engineer set with `mcc budget set`, part by part: a part set
/// here wins over the workflow's (or the task's own) limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Raised {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<Usage>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    phases: BTreeMap<String, Usage>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tasks: BTreeMap<TaskId, Usage>,
}

/// What each scope spent so far.
#[derive(Debug, Default)]
pub(super) struct Spending {
    run: Usage,
    phases: HashMap<String, Usage>,
    tasks: HashMap<TaskId, Usage>,
    /// What `mcc budget set` changed, as stored.
    raised: Raised,
}

/// `part` of `raised` if set, else of `declared`.
fn overlay(declared: Option<Usage>, raised: Option<Usage>) -> Option<Usage> {
    let (d, r) = (declared.unwrap_or_default(), raised.unwrap_or_default());
    let limit = Usage { usd: r.usd.or(d.usd), tokens: r.tokens.or(d.tokens) };
    (!limit.is_empty()).then_some(limit)
}

/// Whether `spent` reached a part of `limit`.
fn reached(spent: Usage, limit: Usage) -> bool {
    limit.usd.is_some_and(|l| spent.usd.unwrap_or(0.0) >= l)
        || limit.tokens.is_some_and(|l| spent.tokens.unwrap_or(0) >= l)
}

/// Whether `cost` passed a part of `limit`.
fn passed(cost: Usage, limit: Usage) -> bool {
    limit.usd.is_some_and(|l| cost.usd.unwrap_or(0.0) > l) || limit.tokens.is_some_and(|l| cost.tokens.unwrap_or(0) > l)
}

/// The spending in the units `limit` has, so "spent (25.40 USD)" names what is limited.
fn in_units_of(spent: Usage, limit: Usage) -> Usage {
    Usage { usd: limit.usd.map(|_| spent.usd.unwrap_or(0.0)), tokens: limit.tokens.map(|_| spent.tokens.unwrap_or(0)) }
}

impl Spending {
    /// Count again what every applied report of the current run's tasks
    /// cost (`of_run` says which tasks are the run's; `None`: all of them);
    /// `raised` as stored.
    pub(super) fn restore(
        scheduler: &Scheduler,
        of_run: Option<&dyn Fn(&str) -> bool>,
        raised: Option<&str>,
    ) -> Result<Self, String> {
        let mut spending = Self::default();
        for task in scheduler.tasks().filter(|t| of_run.is_none_or(|mine| mine(&t.spec.id))) {
            for applied in task.applied().values() {
                if let Some(usage) = applied.usage {
                    spending.add(task, usage);
                }
            }
        }
        if let Some(text) = raised {
            spending.raised = serde_json::from_str(text)
                .map_err(|e| format!("the budgets set with `mcc budget set` cannot be read ({e}); set them again"))?;
        }
        Ok(spending)
    }

    /// A new run starts (another workflow): it has spent nothing, and the
    /// limits the engineer set were the last run's.
    pub(super) fn new_run(&mut self) {
        *self = Self::default();
    }

    /// Count what one attempt of `task` cost.
    pub(super) fn add(&mut self, task: &Task, usage: Usage) {
        self.run = self.run.plus(usage);
        if let Some(phase) = task.phase() {
            let spent = self.phases.entry(phase.to_owned()).or_default();
            *spent = spent.plus(usage);
        }
        let spent = self.tasks.entry(task.spec.id.clone()).or_default();
        *spent = spent.plus(usage);
    }

    fn run_limit(&self, declared: &Limits) -> Option<Usage> {
        overlay(declared.run, self.raised.run)
    }

    fn phase_limit(&self, declared: &Limits, phase: &str) -> Option<Usage> {
        overlay(declared.phases.get(phase).copied(), self.raised.phases.get(phase).copied())
    }

    /// The most one attempt of `task` may cost.
    pub(super) fn task_limit(&self, task: &Task) -> Option<Usage> {
        overlay(task.spec.budget, self.raised.tasks.get(&task.spec.id).copied())
    }

    /// Why no new task is granted now, if a budget is why: the run's, or the
    /// phases whose budget is spent (their tasks are held back, others go on).
    pub(super) fn stop(&self, declared: &Limits) -> Stop {
        if let Some(limit) = self.run_limit(declared)
            && reached(self.run, limit)
        {
            return Stop::Run(limit);
        }
        let phases: BTreeSet<String> = declared
            .phases
            .keys()
            .chain(self.raised.phases.keys())
            .filter(|p| {
                self.phase_limit(declared, p)
                    .is_some_and(|limit| reached(self.phases.get(*p).copied().unwrap_or_default(), limit))
            })
            .cloned()
            .collect();
        if phases.is_empty() { Stop::None } else { Stop::Phases(phases) }
    }

    /// The sentence saying the run's budget is spent.
    fn run_spent(&self, limit: Usage) -> String {
        let raise = if limit.usd.is_some() { "--usd N" } else { "--tokens N" };
        format!(
            "the run's budget of {} is spent ({}); raise it with `mcc budget set {raise}`",
            limit.amount(),
            in_units_of(self.run, limit).amount()
        )
    }

    fn phase_spent(&self, declared: &Limits, phase: &str) -> String {
        let limit = self.phase_limit(declared, phase).unwrap_or_default();
        let spent = self.phases.get(phase).copied().unwrap_or_default();
        let raise = if limit.usd.is_some() { "--usd N" } else { "--tokens N" };
        format!(
            "phase {phase}'s budget of {} is spent ({}); raise it with `mcc budget set --phase {phase} {raise}`",
            limit.amount(),
            in_units_of(spent, limit).amount()
        )
    }

    /// What one attempt of `task` that cost `cost` passed, if it passed its budget.
    pub(super) fn over(&self, task: &Task, cost: Usage) -> Option<String> {
        let limit = self.task_limit(task)?;
        passed(cost, limit).then(|| {
            format!(
                "attempt {} of task {} cost {}, over the task's budget of {}",
                task.attempt(),
                task.spec.id,
                in_units_of(cost, limit).amount(),
                limit.amount()
            )
        })
    }

    /// Change a limit as `mcc budget set` asks: the parts given, the others as they were.
    fn set(&mut self, scope: &Scope, limit: Usage) {
        let entry = match scope {
            Scope::Run => self.raised.run.get_or_insert_default(),
            Scope::Phase(p) => self.raised.phases.entry(p.clone()).or_default(),
            Scope::Task(t) => self.raised.tasks.entry(t.clone()).or_default(),
        };
        if limit.usd.is_some() {
            entry.usd = limit.usd;
        }
        if limit.tokens.is_some() {
            entry.tokens = limit.tokens;
        }
    }

    /// Every budget and what its scope spent, for `mcc budget`; status
    /// (`with_tasks` false) leaves the tasks' out, which cost a walk of every task.
    pub(super) fn view(&self, declared: &Limits, scheduler: &Scheduler, with_tasks: bool) -> Budgets {
        let mut lines = Vec::new();
        if let Some(limit) = self.run_limit(declared) {
            lines.push(BudgetLine {
                scope: BudgetScope::Run,
                name: None,
                limit,
                spent: self.run,
                exhausted: reached(self.run, limit),
            });
        }
        let phases: BTreeSet<&String> = declared.phases.keys().chain(self.raised.phases.keys()).collect();
        for phase in phases {
            let Some(limit) = self.phase_limit(declared, phase) else { continue };
            let spent = self.phases.get(phase).copied().unwrap_or_default();
            lines.push(BudgetLine {
                scope: BudgetScope::Phase,
                name: Some(phase.clone()),
                limit,
                spent,
                exhausted: reached(spent, limit),
            });
        }
        if !with_tasks {
            return Budgets { spent: self.run, lines };
        }
        // Tasks with a budget of their own, in creation order; at most a page of them.
        let mut tasks: Vec<&Task> = scheduler
            .tasks()
            .filter(|t| t.spec.budget.is_some() || self.raised.tasks.contains_key(&t.spec.id))
            .collect();
        tasks.sort_by_key(|t| t.seq());
        for task in tasks.into_iter().take(MAX_TASK_LINES) {
            let Some(limit) = self.task_limit(task) else { continue };
            lines.push(BudgetLine {
                scope: BudgetScope::Task,
                name: Some(task.spec.id.clone()),
                limit,
                spent: self.tasks.get(&task.spec.id).copied().unwrap_or_default(),
                exhausted: false,
            });
        }
        Budgets { spent: self.run, lines }
    }
}

/// Task budgets listed at most by `mcc budget` and status.
const MAX_TASK_LINES: usize = 200;

/// Whether a budget holds new grants back.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stop {
    None,
    /// The run's budget is spent: no new grant at all.
    Run(Usage),
    /// These phases' budgets are spent: none of their tasks is granted.
    Phases(BTreeSet<String>),
}

/// What `mcc budget set` changes.
enum Scope {
    Run,
    Phase(String),
    Task(TaskId),
}

impl Engine {
    /// Count an applied attempt's cost; `task` must exist.
    pub(super) fn spend(&mut self, task: &str, usage: Usage) {
        if let Some(t) = self.scheduler.task(task) {
            self.spending.add(t, usage);
            // A budget may be spent now: what waiting workers are told changes.
            self.scheduler.mark_work_changed();
        }
    }

    /// The answer to `budgets`.
    pub(super) fn budgets(&self) -> Budgets {
        self.spending.view(&self.policy.budgets(), &self.scheduler, true)
    }

    /// The budgets for status, once the run has a budget or spent anything.
    pub(super) fn budgets_shown(&self) -> Option<Budgets> {
        let budgets = self.spending.view(&self.policy.budgets(), &self.scheduler, false);
        (!budgets.lines.is_empty() || !budgets.spent.is_empty()).then_some(budgets)
    }

    /// `mcc budget set`: change a limit, store it, let waiting workers look again.
    pub(super) fn budget_set(&mut self, conn: ConnId, phase: Option<String>, task: Option<String>, limit: Usage) {
        let refuse = |text: String| ServerMsg::error_code(text, "bad_budget");
        let scope = match (phase, task) {
            (Some(_), Some(_)) => {
                self.send(conn, refuse("name a phase or a task, not both: `mcc budget set --phase P --usd N`".into()));
                return;
            }
            (Some(p), None) => {
                let known = self.policy.phases();
                if !known.is_empty() && !known.contains(&p) {
                    let text = format!("the workflow has no phase `{p}`; its phases are {}", known.join(", "));
                    self.send(conn, refuse(text));
                    return;
                }
                Scope::Phase(p)
            }
            (None, Some(t)) => {
                if self.scheduler.task(&t).is_none() {
                    self.send(conn, refuse(format!("unknown task `{t}`: run `mcc tasks list` to see the tasks")));
                    return;
                }
                Scope::Task(t)
            }
            (None, None) => Scope::Run,
        };
        if limit.is_empty() {
            self.send(conn, refuse("say the new limit: `--usd N`, `--tokens N` or both".into()));
            return;
        }
        if limit.usd.is_some_and(|u| !u.is_finite() || u < 0.0) {
            self.send(conn, refuse("`--usd` must be a number of 0 or more, such as 25 or 2.50".into()));
            return;
        }
        self.spending.set(&scope, limit);
        let stored = serde_json::to_string(&self.spending.raised).expect("budgets always serialize");
        self.pending_meta.push((META_KEY, stored));
        self.scheduler.mark_work_changed();
        let budgets = self.budgets();
        self.send(conn, ServerMsg::Budgets { budgets });
    }

    /// Hold new grants back while a budget is spent: `Some(phases)` are
    /// the phases whose tasks are held back, `None` everything (the run's).
    pub(super) fn budget_stop(&self) -> Stop {
        self.spending.stop(&self.policy.budgets())
    }

    /// Whether a spent budget holds task `id` back from a new grant.
    pub(super) fn budget_holds(&self, id: &str) -> bool {
        match self.budget_stop() {
            Stop::None => false,
            Stop::Run(_) => true,
            Stop::Phases(spent) => self.scheduler.task(id).and_then(Task::phase).is_some_and(|p| spent.contains(p)),
        }
    }

    /// Why `worker` waits, when a budget is why: the run's is spent, or every
    /// ready task is in a phase whose budget is spent.
    pub(super) fn budget_waiting(&self) -> Option<Waiting> {
        let declared = self.policy.budgets();
        match self.spending.stop(&declared) {
            Stop::None => None,
            Stop::Run(limit) => Some(Waiting::budget(self.spending.run_spent(limit))),
            Stop::Phases(phases) => {
                let ready = self.scheduler.candidates(64);
                let held: Vec<&str> = ready.iter().filter_map(|t| t.phase()).filter(|p| phases.contains(*p)).collect();
                if held.is_empty() || held.len() < ready.len() {
                    return None;
                }
                let mut text = String::new();
                for (i, phase) in phases.iter().filter(|p| held.contains(&p.as_str())).enumerate() {
                    if i > 0 {
                        text.push_str("; ");
                    }
                    let _ = write!(text, "{}", self.spending.phase_spent(&declared, phase));
                }
                Some(Waiting { tasks: ready.iter().map(|t| t.spec.id.clone()).collect(), ..Waiting::budget(text) })
            }
        }
    }

    /// What an attempt over its task's budget does to the task, if it is over.
    pub(super) fn over_budget(&self, task: &str, cost: Option<Usage>) -> Option<(String, OverBudget)> {
        let t = self.scheduler.task(task)?;
        let why = self.spending.over(t, cost?)?;
        Some((why, t.spec.over_budget.unwrap_or_default()))
    }
}

impl Waiting {
    fn budget(text: String) -> Self {
        Self {
            kind: WaitingFor::Budget,
            text,
            tasks: Vec::new(),
            workers: Vec::new(),
            files: Vec::new(),
            needs: Vec::new(),
        }
    }
}
