//! Writes outside a task: the files a `done` says the attempt changed that
//! its task does not declare, sorted by the hub into conflicts (another
//! in-flight task reserves the file), shared changes (others worked in the
//! same checkout meanwhile, so nobody can be blamed) and writes outside
//! (the rest: this worker's). The rule and why it is so: docs/worker.md,
//! "Writes outside a task".

use super::{Engine, ProblemKind};
use crate::scheduler::Reservation;
use crate::task::{Conflict, Report};

/// How the files of one `done` were sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Sorted {
    pub outside: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub shared: Vec<String>,
}

impl Engine {
    /// Sort the files `worker` says it changed during its attempt at `task`.
    /// `isolated`: the attempt ran in a folder of its own, so each is its own.
    pub(super) fn sort_changed(&mut self, task: &str, worker: &str, changed: &[String], isolated: bool) -> Sorted {
        self.scheduler.note_own_folder(worker, isolated);
        let mut sorted = Sorted::default();
        if changed.is_empty() {
            return sorted;
        }
        let declared: Vec<Reservation> = self
            .scheduler
            .task(task)
            .map(|t| t.spec.context.output_files.iter().map(|w| Reservation::new(w)).collect())
            .unwrap_or_default();
        let company = self.scheduler.company(task);
        for file in changed {
            // A path that could not be a project file (absolute, `..`, `.mcc/`) is no one's write.
            if crate::checkout::check_path(file).is_err() {
                continue;
            }
            let mine = Reservation::new(file);
            if declared.iter().any(|d| d.overlaps(&mine)) {
                continue;
            }
            let reserved = self.scheduler.reserved_by(file, task);
            match reserved {
                // In a shared checkout, the holder's own declared write: its work, not this worker's.
                Some((_, Some(holder))) if !isolated && company.contains(&holder) => {}
                // A worker in a folder of its own reaches this checkout only through the
                // hub writing its declared files: a change to them here is not provably this one's.
                Some((_, Some(holder))) if !isolated && self.scheduler.in_own_folder(holder) => {
                    sorted.shared.push(file.clone());
                }
                _ if !isolated && !company.is_empty() => sorted.shared.push(file.clone()),
                Some((other, holder)) => sorted.conflicts.push(Conflict {
                    file: file.clone(),
                    task: other.spec.id.clone(),
                    holder: holder.unwrap_or_default().to_owned(),
                }),
                None => sorted.outside.push(file.clone()),
            }
        }
        if !sorted.outside.is_empty() || !sorted.conflicts.is_empty() || !sorted.shared.is_empty() {
            tracing::info!(
                "mcc hub: task {task} ({worker}): outside {:?}, conflicts {:?}, shared {:?}",
                sorted.outside,
                sorted.conflicts.iter().map(|c| &c.file).collect::<Vec<_>>(),
                sorted.shared
            );
        }
        sorted
    }
}

impl Engine {
    /// Show the engineer what the last report of `task` changed outside it
    /// (`mcc status`, the page), or take back what an earlier attempt said.
    pub(super) fn show_outside(&mut self, task: &str) {
        let said = self.scheduler.task(task).and_then(|t| t.report().and_then(|r| said(task, r)));
        match said {
            Some(text) => self.problem(ProblemKind::WritesOutside, task, text),
            None => self.problems.retract(ProblemKind::WritesOutside, task),
        }
    }
}

/// The line `mcc status` shows for a report that changed files outside its task.
fn said(task: &str, report: &Report) -> Option<String> {
    let mut parts = Vec::new();
    if !report.conflicts.is_empty() {
        let named: Vec<String> = report
            .conflicts
            .iter()
            .map(|c| {
                let holder = if c.holder.is_empty() { String::new() } else { format!(", held by {}", c.holder) };
                format!("{} (task {}{holder})", c.file, c.task)
            })
            .collect();
        parts.push(format!("changed files another task reserves: {}", list(&named)));
    }
    if !report.outside.is_empty() {
        parts.push(format!("wrote outside its task: {}", list(&report.outside)));
    }
    if !report.shared.is_empty() {
        parts.push(format!(
            "shared changes while others worked in the same checkout (blamed on nobody): {}",
            list(&report.shared)
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let who = report.worker_id.as_deref().unwrap_or("?");
    let attempt = report.attempt.map(|a| format!(", attempt {a}")).unwrap_or_default();
    Some(format!("task {task} ({who}{attempt}) {}", parts.join("; ")))
}

/// What a worker is told when its accepted (or rejected) attempt changed
/// files outside its task: one line, naming them.
pub(super) fn warnings(report: &Report) -> Vec<String> {
    if report.outside.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "you also changed {}, which your task does not declare as writes; the engineer sees it in `mcc status`; if it was not meant, put it back as it was",
        list(&report.outside)
    )]
}

/// Why a conflict rejects an attempt: the file, the task that reserves it,
/// its holder, and what to do.
pub fn conflict_reasons(task: &str, report: &Report) -> Vec<String> {
    report
        .conflicts
        .iter()
        .map(|c| {
            let holder = if c.holder.is_empty() { String::new() } else { format!(", held by {}", c.holder) };
            format!(
                "you changed {}, which task {}{holder} reserves: put it back as it was (`git checkout -- {}`, or delete it if you created it) and report again; if task {task} needs that file, ask with `mcc worker block {task} --question \"...\"`",
                c.file, c.task, c.file
            )
        })
        .collect()
}

/// Up to five names, then how many more.
fn list(files: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = files.iter().take(SHOWN).map(String::as_str).collect::<Vec<_>>().join(", ");
    if files.len() > SHOWN {
        text.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    text
}
