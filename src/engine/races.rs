//! Deciding races (the scheduler's side is `src/scheduler/races.rs`): when a
//! racer moves, the workflow's `choose` picks among the accepted racers or
//! waits; the winner's copy moves into place, all files or none, and only
//! then is the race accepted, in the batch whose commit acknowledges it.
//!
//! A racer's copy is read from `.mcc/races/T/K/` without following a link
//! and within `--max-task-files-bytes`, as an upload is. Each file goes into
//! place whole (a temporary file renamed over it); when one cannot, those
//! already written are put back and the race waits, the reason shown. A
//! file the winner did not write in its copy is left in place as it is.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Candidate, Engine, ProblemKind};
use crate::checkout::{self, Checkout};
use crate::command::Outcome;
use crate::layout::{Refused, StateDir};
use crate::scheduler::Scheduler;
use crate::scheduler::{Task, TaskId, TaskState, race_copy, race_of, racer_number};
use crate::store::{self, AttemptFile, FileKept, SubmittedFiles};

/// A copy folder's path below `.mcc/` (`races/T/K`), as folder names.
fn below_state_dir(copy: &str) -> Vec<&str> {
    copy.split('/').filter(|p| !p.is_empty() && *p != ".").skip(1).collect()
}

/// The stored validations of the accepted racers of running races, read
/// once at start: `choose` compares them after a restart too (the last
/// [`store::OUTPUT_TAIL`] bytes of each stream, as the store keeps them).
pub(super) fn stored_validations(scheduler: &Scheduler, store: &mut dyn store::Backend) -> HashMap<TaskId, Outcome> {
    let mut found = HashMap::new();
    let waiting = scheduler.tasks().filter(|t| {
        t.state() == TaskState::Accepted
            && race_of(&t.spec).and_then(|r| scheduler.task(r)).is_some_and(|r| r.state() == TaskState::Assigned)
    });
    for racer in waiting {
        match store.validations(&racer.spec.id) {
            Ok(records) => {
                if let Some(v) = records.into_iter().rfind(|v| v.attempt == racer.attempt()) {
                    let outcome = Outcome {
                        code: v.exit_code,
                        stdout: v.stdout_tail,
                        stderr: v.stderr_tail,
                        timed_out: v.timed_out,
                    };
                    found.insert(racer.spec.id.clone(), outcome);
                }
            }
            Err(e) => tracing::warn!("mcc hub: racer {}: its validation is not read back ({e})", racer.spec.id),
        }
    }
    found
}

impl Engine {
    /// Decide every race whose racers moved.
    pub(super) fn settle_races(&mut self) {
        for race in self.scheduler.take_races_moved() {
            self.decide_race(&race);
            if self.scheduler.task(&race).is_none_or(|t| t.state() != TaskState::Assigned) {
                // Decided: no `choose` compares its racers again.
                for racer in self.scheduler.racers(&race) {
                    self.race_validations.remove(&racer.spec.id);
                }
            }
        }
    }

    fn decide_race(&mut self, race: &str) {
        let Some(task) = self.scheduler.task(race) else { return };
        if task.state() != TaskState::Assigned {
            // Cancelled (or otherwise ended) while its racers ran.
            self.scheduler.end_race(race);
            return;
        }
        let racers = self.scheduler.racers(race);
        let open = racers.iter().filter(|t| !t.state().is_terminal()).count();
        let mut accepted: Vec<&Task> = racers.into_iter().filter(|t| t.state() == TaskState::Accepted).collect();
        if accepted.is_empty() {
            if open == 0 {
                self.scheduler.fail_race(race);
            }
            return;
        }
        accepted.sort_by(|a, b| (a.completed_at(), a.seq()).cmp(&(b.completed_at(), b.seq())));
        let mut candidates = Vec::with_capacity(accepted.len());
        let mut unusable = Vec::new();
        for racer in accepted {
            match self.candidate(racer) {
                Ok(c) => candidates.push(c),
                Err(e) => unusable.push((racer.spec.id.clone(), e)),
            }
        }
        for (racer, e) in unusable {
            let why = format!("its copy cannot move into place: {e}");
            tracing::warn!("mcc hub: race {race}: racer {racer} is out: {why}");
            self.scheduler.disqualify(&racer, &why);
        }
        let Some(first) = candidates.first().map(|c| c.id.clone()) else {
            if open == 0 {
                self.scheduler.fail_race(race);
            }
            return;
        };
        let Some(task) = self.scheduler.task(race) else { return };
        let chosen = match self.policy.choose(task, &candidates, open, &self.scheduler) {
            Ok(Some(id)) if candidates.iter().any(|c| c.id == id) => Some(id),
            Ok(Some(id)) => {
                let names: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
                self.problem(
                    ProblemKind::WorkflowFailed,
                    &format!("choose {race}"),
                    format!(
                        "workflow choose for task {race}: `{id}` is not one of its accepted racers ({}); it is asked again as racers end, and the first accepted wins once none runs",
                        names.join(", ")
                    ),
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                self.problem(
                    ProblemKind::WorkflowFailed,
                    &format!("choose {race}"),
                    format!("workflow choose for task {race}: {e}; the first accepted racer wins once none runs"),
                );
                None
            }
        };
        let Some(winner) = chosen.or_else(|| (open == 0).then_some(first)) else { return };
        match self.move_into_place(race, &winner) {
            Ok(kept) => {
                self.problems.retract(ProblemKind::StateFileRefused, &format!("race {race}"));
                self.notes.submitted.push(kept);
                self.scheduler.win_race(race, &winner);
            }
            Err(e) => self.problem(
                ProblemKind::StateFileRefused,
                &format!("race {race}"),
                format!(
                    "race {race}: the files of {winner} cannot move into place: {e}; nothing was moved, and it is tried again when a racer moves (or `mcc tasks cancel {race}`)"
                ),
            ),
        }
    }

    /// What `choose` sees of an accepted racer; why its copy cannot be
    /// read (a link, past the bound) when it cannot.
    fn candidate(&self, racer: &Task) -> Result<Candidate, String> {
        let size = self.read_copy(racer)?.iter().map(|(_, b)| b.len() as u64).sum();
        Ok(Candidate {
            id: racer.spec.id.clone(),
            racer: racer_number(&racer.spec).unwrap_or_default(),
            worker: racer.last_holder().map(str::to_owned),
            validation: self.race_validations.get(&racer.spec.id).cloned(),
            size,
            notes: racer.report().and_then(|r| r.notes.clone()),
        })
    }

    /// The folder of a racer's copy, made if missing, never through a link.
    fn copy_folder(&self, racer: &Task, create: bool) -> Result<Option<StateDir>, String> {
        let Some(copy) = race_copy(&racer.spec) else { return Ok(None) };
        let mut dir = StateDir::open(&self.config.state_dir).map_err(|e| e.to_string())?;
        for name in below_state_dir(copy) {
            let next = if create { dir.folder_or_create(name) } else { dir.folder(name) };
            dir = match next {
                Ok(next) => next,
                Err(Refused::Missing(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
        }
        Ok(Some(dir))
    }

    /// Where a racer's validation runs: in its copy folder (made if
    /// missing), so a command names the files as the task does.
    pub(super) fn racer_folder(&self, racer: &Task) -> Option<PathBuf> {
        race_copy(&racer.spec)?;
        match self.copy_folder(racer, true) {
            Ok(Some(dir)) => Some(dir.path().to_owned()),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "mcc hub: racer {}: its copy folder is refused ({e}); validation runs in the root",
                    racer.spec.id
                );
                None
            }
        }
    }

    /// The racer's copy of each write file of its race, as `(path in
    /// place, bytes)`; a file it did not write is not listed.
    fn read_copy(&self, racer: &Task) -> Result<Vec<(String, Vec<u8>)>, String> {
        let race = race_of(&racer.spec).and_then(|r| self.scheduler.task(r)).ok_or("its race is unknown")?;
        let Some(copy) = self.copy_folder(racer, false)? else { return Ok(Vec::new()) };
        let mut left = self.config.max_task_files_bytes;
        let mut files = Vec::new();
        for path in &race.spec.context.output_files {
            let parts = checkout::check_path(path)?;
            let (name, folders) = parts.split_last().expect("check_path gives at least one part");
            let mut dir = copy.clone();
            let mut missing = false;
            for folder in folders {
                match dir.folder(folder) {
                    Ok(next) => dir = next,
                    Err(Refused::Missing(_)) => {
                        missing = true;
                        break;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            if missing {
                continue;
            }
            match dir.read_bounded(name, left) {
                Ok(bytes) => {
                    left -= bytes.len() as u64;
                    files.push((path.clone(), bytes));
                }
                Err(Refused::Missing(_)) => {}
                Err(Refused::TooLarge { .. }) => {
                    return Err(format!(
                        "its copy of `{path}` passes what one task's files may weigh (--max-task-files-bytes, {} bytes)",
                        self.config.max_task_files_bytes
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(files)
    }

    /// Move `winner`'s copy into place, all files or none; what is in
    /// place then is kept with the race's acceptance.
    fn move_into_place(&self, race: &str, winner: &str) -> Result<SubmittedFiles, String> {
        let racer = self.scheduler.task(winner).ok_or_else(|| format!("unknown racer `{winner}`"))?;
        let files = self.read_copy(racer)?;
        let checkout = Checkout::open(&self.config.root)?;
        let bound = self.config.max_task_files_bytes;
        let mut before = Vec::with_capacity(files.len());
        for (path, _) in &files {
            checkout.check_writable(path)?;
            before.push(checkout.read(path, bound)?);
        }
        for (i, (path, bytes)) in files.iter().enumerate() {
            if let Err(e) = checkout.write(path, bytes) {
                for ((written, _), old) in files[..i].iter().zip(&before) {
                    let _ = match old {
                        Some(old) => checkout.write(written, old),
                        None => checkout.remove(written),
                    };
                }
                return Err(e);
            }
        }
        let mut kept = SubmittedFiles::default();
        let attempt = self.scheduler.task(race).map_or(0, Task::attempt);
        for (path, bytes) in files {
            let sha256 = checkout::sha256_hex(&bytes);
            let size = bytes.len() as u64;
            if !kept.blobs.iter().any(|(sha, _)| *sha == sha256) {
                kept.blobs.push((sha256.clone(), bytes));
            }
            kept.files.push(AttemptFile {
                task: race.to_owned(),
                attempt,
                path,
                size,
                kept: FileKept::Kept { sha256 },
            });
        }
        Ok(kept)
    }

    /// The answer to a report of a racer that lost: another attempt won.
    pub(super) fn lost_race_message(&self, racer: &str, worker: &str) -> Option<String> {
        let (race, winner) = self.scheduler.lost_to(racer)?;
        let task = self.scheduler.task(racer)?;
        (task.last_holder() == Some(worker)).then(|| {
            format!(
                "another attempt won: task {race} took the files of {} ({}); nothing more to do on {racer}",
                winner.spec.id,
                winner.last_holder().unwrap_or("a worker")
            )
        })
    }

    /// Keep a racer's validation outcome for `choose`.
    pub(super) fn note_race_validation(&mut self, id: &TaskId, outcome: &crate::command::Outcome) {
        if self.scheduler.task(id).is_some_and(|t| race_of(&t.spec).is_some()) {
            self.race_validations.insert(id.clone(), outcome.clone());
        }
    }
}
