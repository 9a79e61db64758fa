//! Every report, whatever its way in (socket `done`/`fail`/`block`, the old
//! protocol's `task_complete`, a report file, the headless runner), becomes
//! one [`Submission`] at the edge and takes one path here.
//!
//! The rule: `(task, attempt, worker)` must be the current grant, or the
//! answer says why not. A report for an attempt that already has one applied
//! gets that attempt's outcome back, never a second judgement; the record is
//! stored with the task, so a restart applies nothing twice.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ConnId, Engine, Judging, ProblemKind, Reply};
use crate::checkout::{Checkout, Found};
use crate::scheduler::{Applied, Judgement, Task, TaskId, TaskState};
use crate::store::{AttemptFile, FileKept, SubmittedFiles};
use crate::task::{OverBudget, Report, ReportStatus};
use crate::wire::{FileDigest, ServerMsg};

/// Where a report came from; the answer goes back the same way.
#[derive(Debug, Clone)]
pub enum Source {
    /// `done` / `fail` / `block` of an mcc worker, which waits up to `wait`
    /// for its next task; `files` are a remote worker's uploads to apply.
    Socket { conn: ConnId, wait: Duration, files: Vec<FileDigest>, changed: Vec<String>, isolated: bool },
    /// The old protocol's `task_complete`, with the report as it was sent (if any).
    Old { conn: ConnId, raw: Option<Value> },
    /// A report file; `shown` is relative to the root. `rescan` when read
    /// again at start rather than seen written.
    File { shown: String, full: PathBuf, rescan: bool },
}

/// What a socket report brings beside the report: a remote worker's files
/// to apply, and the files the attempt changed outside its task.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub files: Vec<FileDigest>,
    pub changed: Vec<String>,
    pub isolated: bool,
}

/// One report on its way to the scheduler.
#[derive(Debug, Clone)]
pub struct Submission {
    pub source: Source,
    pub worker: String,
    pub task: TaskId,
    /// The fencing token: the attempt the worker was granted.
    pub attempt: u32,
    pub report: Report,
}

impl Engine {
    /// A report file that parsed: the watcher already refused one without
    /// `workerId`, or without `attempt` outside the old clients' folder.
    pub(super) fn report_file(&mut self, shown: String, full: PathBuf, report: Report, rescan: bool) {
        let Some(worker) = report.worker_id.clone() else {
            let text = "the report names no `workerId`; write it, as printed with the task";
            let moved = crate::layout::move_aside(&full, text);
            self.problem(
                ProblemKind::ReportFileRefused,
                &shown,
                format!("report file {shown} refused: {text}; moved to {moved}"),
            );
            return;
        };
        let task = report.task_id.clone();
        let attempt = if let Some(attempt) = report.attempt {
            attempt
        } else {
            // An old client's file (the watcher allows no other without one).
            let applied = self.scheduler.task(&task).is_some_and(|t| {
                t.applied().values().any(|a| a.file.as_deref() == Some(shown.as_str()) && a.worker == worker)
            });
            if rescan && applied {
                // Applied before the restart; it cannot name its attempt, so it is not applied again.
                return;
            }
            let held = self.scheduler.held_by(&worker).filter(|t| t.spec.id == task).map(Task::attempt);
            let Some(attempt) = held.or_else(|| self.scheduler.task(&task).map(Task::attempt)) else {
                let text = format!("unknown task `{task}`: run `mcc tasks list` to see the tasks");
                let moved = crate::layout::move_aside(&full, &text);
                self.problem(
                    ProblemKind::ReportFileRefused,
                    &shown,
                    format!("report file {shown} refused: {text}; moved to {moved}"),
                );
                return;
            };
            attempt
        };
        self.apply(Submission { source: Source::File { shown, full, rescan }, worker, task, attempt, report });
    }

    /// Apply a submission: replay, refuse, or apply it once.
    pub(super) fn apply(&mut self, sub: Submission) {
        let now = Instant::now();
        let prior = self
            .scheduler
            .task(&sub.task)
            .and_then(|t| t.applied().get(&sub.attempt))
            .filter(|a| a.worker == sub.worker)
            .cloned();
        if let Some(prior) = prior {
            self.replay(&sub, &prior, now);
            return;
        }
        if let Some(message) = self.lost_race_message(&sub.task, &sub.worker) {
            // A racer that lost hears it, with its next task, not a refusal.
            let what = match sub.report.status {
                ReportStatus::Completed => "done",
                ReportStatus::Failed => "fail",
                ReportStatus::Blocked => "block",
            };
            self.answer_report(&sub.source, &sub.worker, what, message, &sub.task, now);
            return;
        }
        if let Err(refusal) = self.scheduler.check_holder(&sub.worker, &sub.task, Some(sub.attempt)) {
            self.refused(&sub, &refusal.to_string(), Some(refusal.code()));
            return;
        }
        // The fence holds: now, and only now, a remote worker's files go into the checkout.
        if let Source::Socket { files, .. } = &sub.source
            && !files.is_empty()
            && let Err(text) = self.apply_uploads(&sub.task, sub.attempt, files)
        {
            self.refused(&sub, &text, Some("upload_refused"));
            return;
        }
        let Submission { source, worker, task, attempt, mut report } = sub;
        if report.status == ReportStatus::Completed {
            // Sorted by the hub; whatever a report file said of them is not taken.
            let (changed, isolated) = match &source {
                Source::Socket { changed, isolated, .. } => (changed.as_slice(), *isolated),
                _ => (&[][..], false),
            };
            let sorted = self.sort_changed(&task, &worker, changed, isolated);
            report.outside = sorted.outside;
            report.conflicts = sorted.conflicts;
            report.shared = sorted.shared;
            // Kept with the commit that records this `done`: durable when it is acknowledged.
            let reading = Instant::now();
            let submitted = self.submitted_files(&task, attempt);
            if !submitted.files.is_empty() {
                // Read and hashed on the engine thread: what it costs shows with MCC_LOG=debug.
                let bytes: usize = submitted.blobs.iter().map(|(_, b)| b.len()).sum();
                tracing::debug!(
                    "mcc hub: task {task} attempt {attempt}: {} files ({bytes} bytes) kept in {:?}",
                    submitted.files.len(),
                    reading.elapsed()
                );
            }
            self.notes.submitted.push(submitted);
        }
        if let Some(score) = report.context_efficiency_score {
            self.scheduler.set_score(&worker, score, now);
        }
        let file = match &source {
            Source::File { shown, .. } => Some(shown.clone()),
            _ => None,
        };
        let status = report.status;
        // A cost below zero (or not a number) would give budget back: it counts as unknown.
        let usage = report
            .usage
            .map(|u| crate::wire::Usage { usd: u.usd.filter(|usd| usd.is_finite() && *usd >= 0.0), ..u })
            .filter(|u| !u.is_empty());
        // Past its task's budget, the attempt's own outcome gives way to the budget's.
        let over = self.over_budget(&task, usage);
        let verdict = over.as_ref().filter(|_| status == ReportStatus::Completed).map(|(why, then)| Judgement {
            accepted: false,
            failed: *then == OverBudget::Fail,
            reasons: vec![why.clone()],
        });
        self.scheduler.record_applied(&task, attempt, Applied { worker: worker.clone(), status, file, verdict, usage });
        if let Some(usage) = usage {
            self.spend(&task, usage);
        }
        let wire = match &source {
            Source::Old { raw, .. } => raw.clone(),
            _ => Some(serde_json::to_value(&report).expect("a report always serializes")),
        };
        match &source {
            // The absolute path, as the original server sent it.
            Source::File { full, .. } => self.to_coordinator(ServerMsg::ReportDetected {
                task_id: task.clone(),
                worker_id: worker.clone(),
                report_path: full.display().to_string(),
                report: wire.unwrap_or_default(),
            }),
            Source::Old { conn, .. } => {
                // The ack comes before the next task, as the old server sent them.
                self.send(*conn, ServerMsg::TaskCompleteAck { task_id: task.clone() });
                self.to_coordinator(ServerMsg::TaskComplete {
                    task_id: task.clone(),
                    worker_id: worker.clone(),
                    report: wire,
                });
            }
            Source::Socket { .. } if status == ReportStatus::Completed => {
                self.to_coordinator(ServerMsg::TaskComplete {
                    task_id: task.clone(),
                    worker_id: worker.clone(),
                    report: wire,
                });
            }
            Source::Socket { .. } => {}
        }
        if let Some((why, then)) = over {
            self.over_budget_attempt(&source, &worker, &task, attempt, status, &why, then, now);
            return;
        }
        match status {
            ReportStatus::Completed => {
                self.scheduler.submit(&worker, &task, report, now).expect("the grant was checked above");
                self.show_outside(&task);
                self.waiters.retain(|w| w.worker != worker || matches!(w.reply, Reply::Push));
                let judging = match source {
                    Source::Socket { conn, wait, .. } => Judging {
                        conn: Some(conn),
                        worker,
                        wait,
                        old_protocol: false,
                        deadline: Some(super::judge::verdict_deadline(
                            now,
                            wait,
                            self.config.timing.verdict_wait_floor,
                        )),
                    },
                    Source::Old { conn, .. } => {
                        Judging { conn: Some(conn), worker, wait: Duration::ZERO, old_protocol: true, deadline: None }
                    }
                    Source::File { .. } => Judging::nobody(worker),
                };
                self.judging.insert(task.clone(), judging);
                self.start_judging(&task);
            }
            ReportStatus::Failed => {
                let reason = report.notes.clone().unwrap_or_else(|| "the worker reported failure".to_owned());
                let state =
                    self.scheduler.fail(&worker, &task, Some(attempt), &reason, now).expect("the grant was checked");
                // Another worker waiting for work comes first.
                self.dispatch(now);
                let message = if state == TaskState::Failed {
                    format!("task {task} failed for good: its attempts are used up")
                } else {
                    format!("task {task} went back to the queue for another attempt")
                };
                self.answer_report(&source, &worker, "fail", message, &task, now);
            }
            ReportStatus::Blocked => {
                let question = report
                    .requested_guidance
                    .clone()
                    .or_else(|| report.blocker.clone())
                    .unwrap_or_else(|| "the worker is blocked".to_owned());
                self.scheduler.block(&worker, &task, Some(attempt), &question, now).expect("the grant was checked");
                let message = format!("task {task} waits for the engineer: `mcc answer {task} TEXT`");
                self.answer_report(&source, &worker, "block", message, &task, now);
            }
        }
    }

    /// An attempt that cost more than its task's budget: the task fails for
    /// good, or waits for the engineer with the cost as its question, as
    /// its `overBudget` says. A `done` hears it as its verdict.
    #[allow(clippy::too_many_arguments)]
    fn over_budget_attempt(
        &mut self,
        source: &Source,
        worker: &str,
        task: &str,
        attempt: u32,
        status: ReportStatus,
        why: &str,
        then: OverBudget,
        now: Instant,
    ) {
        let message = match then {
            OverBudget::Fail => {
                self.scheduler.fail_for_good(worker, task, why).expect("the grant was checked");
                format!("task {task} failed for good: {why}")
            }
            OverBudget::Ask => {
                let question = format!(
                    "{why}. Answer to let it go on (`mcc answer {task} TEXT`), after raising it with \
                     `mcc budget set --task {task} --usd N` if it should cost more"
                );
                self.scheduler.block(worker, task, Some(attempt), &question, now).expect("the grant was checked");
                format!("task {task} waits for the engineer: {why}")
            }
        };
        self.waiters.retain(|w| w.worker != worker || matches!(w.reply, Reply::Push));
        self.dispatch(now);
        match source {
            Source::Socket { conn, wait, .. } if status == ReportStatus::Completed => {
                let reply = Reply::Verdict {
                    task: task.to_owned(),
                    attempt,
                    accepted: false,
                    failed: then == OverBudget::Fail,
                    reasons: vec![why.to_owned()],
                };
                self.offer(*conn, worker, *wait, reply, now);
            }
            _ => {
                let what = match status {
                    ReportStatus::Completed => "done",
                    ReportStatus::Failed => "fail",
                    ReportStatus::Blocked => "block",
                };
                self.answer_report(source, worker, what, message, task, now);
            }
        }
    }

    /// The task's declared write files as the checkout holds them at its
    /// `done` (a remote worker's uploads are applied by now), within the
    /// per-task bound: a file past it is recorded as not kept, never dropped
    /// unsaid.
    fn submitted_files(&self, id: &str, attempt: u32) -> SubmittedFiles {
        // A racer's copy lives in `.mcc/`, which the store does not keep: the
        // winner's files are kept with its race when they move into place.
        let paths = self
            .scheduler
            .task(id)
            .filter(|t| crate::scheduler::race_of(&t.spec).is_none())
            .map(|t| t.spec.context.output_files.clone())
            .unwrap_or_default();
        let mut submitted = SubmittedFiles::default();
        if paths.is_empty() {
            return submitted;
        }
        let checkout = match Checkout::open(&self.config.root) {
            Ok(checkout) => Some(checkout),
            Err(e) => {
                tracing::warn!("mcc hub: task {id} attempt {attempt}: its files are not kept: {e}");
                None
            }
        };
        let mut left = self.config.max_task_files_bytes;
        for path in paths {
            let found = checkout.as_ref().map_or_else(|| Found::Unreadable(String::new()), |c| c.look(&path, left));
            let (size, kept) = match found {
                Found::File(bytes) => {
                    let sha256 = crate::checkout::sha256_hex(&bytes);
                    left -= bytes.len() as u64;
                    let size = bytes.len() as u64;
                    if !submitted.blobs.iter().any(|(sha, _)| *sha == sha256) {
                        submitted.blobs.push((sha256.clone(), bytes));
                    }
                    (size, FileKept::Kept { sha256 })
                }
                Found::Absent => (0, FileKept::Deleted),
                Found::TooLarge(size) => {
                    tracing::warn!(
                        "mcc hub: task {id} attempt {attempt}: {path} ({size} bytes) is not kept: the task's files pass --max-task-files-bytes ({} bytes)",
                        self.config.max_task_files_bytes
                    );
                    (size, FileKept::OverBound)
                }
                Found::NotRegular => (0, FileKept::NotRegular),
                Found::Unreadable(why) => {
                    if !why.is_empty() {
                        tracing::warn!("mcc hub: task {id} attempt {attempt}: {path} is not kept: {why}");
                    }
                    (0, FileKept::Unreadable)
                }
            };
            submitted.files.push(AttemptFile { task: id.to_owned(), attempt, path, size, kept });
        }
        submitted
    }

    /// The answer to a `fail` or `block`: an ack with the next task.
    fn answer_report(
        &mut self,
        source: &Source,
        worker: &str,
        what: &'static str,
        message: String,
        task: &str,
        now: Instant,
    ) {
        match source {
            Source::Socket { conn, wait, .. } => {
                let reply = Reply::Ack { what, message, task: task.to_owned() };
                self.offer(*conn, worker, *wait, reply, now);
            }
            Source::Old { conn, .. } => self.offer_old(*conn, worker, now),
            Source::File { .. } => {}
        }
    }

    /// A report for an attempt that already has one: the same outcome again.
    fn replay(&mut self, sub: &Submission, prior: &Applied, now: Instant) {
        let id = &sub.task;
        let outcome = match (&prior.status, &prior.verdict) {
            (ReportStatus::Completed, Some(v)) if v.accepted => "accepted".to_owned(),
            (ReportStatus::Completed, Some(v)) if v.failed => format!("failed for good: {}", v.reasons.join("; ")),
            (ReportStatus::Completed, Some(v)) => format!("rejected: {}", v.reasons.join("; ")),
            (ReportStatus::Completed, None) => "being judged".to_owned(),
            (ReportStatus::Failed, _) => "reported failed".to_owned(),
            (ReportStatus::Blocked, _) => "reported blocked".to_owned(),
        };
        match &sub.source {
            Source::Socket { conn, wait, .. } => match (&prior.status, &prior.verdict) {
                (ReportStatus::Completed, Some(v)) => {
                    let reply = Reply::Verdict {
                        task: id.clone(),
                        attempt: sub.attempt,
                        accepted: v.accepted,
                        failed: v.failed,
                        reasons: v.reasons.clone(),
                    };
                    self.offer(*conn, &sub.worker, *wait, reply, now);
                }
                (ReportStatus::Completed, None) if self.judging.contains_key(id) => {
                    // The first `done` was cut off: this one hears the verdict instead.
                    let j = self.judging.get_mut(id).expect("checked");
                    j.conn = Some(*conn);
                    j.wait = *wait;
                    j.deadline =
                        Some(super::judge::verdict_deadline(now, *wait, self.config.timing.verdict_wait_floor));
                }
                _ => {
                    let message = format!("attempt {} of task {id} was already {outcome}", sub.attempt);
                    let reply = Reply::Ack { what: "report", message, task: id.clone() };
                    self.offer(*conn, &sub.worker, *wait, reply, now);
                }
            },
            Source::Old { conn, .. } => {
                // As for the first one: the ack, then the next task or `no_tasks`.
                self.send(*conn, ServerMsg::TaskCompleteAck { task_id: id.clone() });
                if prior.verdict.is_some() || prior.status != ReportStatus::Completed {
                    self.offer_old(*conn, &sub.worker, now);
                } else if let Some(j) = self.judging.get_mut(id) {
                    j.conn = Some(*conn);
                }
            }
            // Read again at start: it was applied before the restart.
            Source::File { rescan: true, .. } => {}
            Source::File { shown, .. } => {
                let held = self
                    .scheduler
                    .task(id)
                    .filter(|t| t.state() == TaskState::Assigned && t.holder() == Some(&sub.worker))
                    .map(Task::attempt);
                let then = match held {
                    Some(a) => format!("; you hold attempt {a} now: write the report again with \"attempt\": {a}"),
                    // The applied file itself, read once more: nothing new to say.
                    None if prior.file.as_deref() == Some(shown.as_str()) => return,
                    None => String::new(),
                };
                let text = format!("attempt {} of task `{id}` was already {outcome}{then}", sub.attempt);
                self.refused(sub, &text, None);
            }
        }
    }

    /// Say why a submission was not applied, where its sender looks.
    fn refused(&mut self, sub: &Submission, text: &str, code: Option<&str>) {
        match &sub.source {
            Source::Socket { conn, .. } | Source::Old { conn, .. } => {
                let msg = match code {
                    Some(code) => ServerMsg::error_code(text, code),
                    None => ServerMsg::error(text),
                };
                self.send(*conn, msg);
            }
            Source::File { shown, full, .. } => {
                let moved = crate::layout::move_aside(full, text);
                self.problem(
                    ProblemKind::ReportFileRefused,
                    shown,
                    format!("report file {shown} refused: {text}; moved to {moved}"),
                );
            }
        }
    }

    /// `done` / `block` / `fail` from an mcc worker: the attempt is required.
    pub(super) fn socket_report(
        &mut self,
        conn: ConnId,
        what: &str,
        attempt: Option<u32>,
        wait_ms: Option<u64>,
        mut report: Report,
        sent: Sent,
    ) {
        let worker = report.worker_id.clone().unwrap_or_default();
        let task = report.task_id.clone();
        let Some(attempt) = attempt else {
            self.missing_attempt(conn, what, &worker, &task);
            return;
        };
        report.attempt = Some(attempt);
        let Sent { files, changed, isolated } = sent;
        let source = Source::Socket { conn, wait: Self::wait_of(wait_ms), files, changed, isolated };
        self.apply(Submission { source, worker, task, attempt, report });
    }

    /// A socket report without its attempt: say what to send.
    fn missing_attempt(&mut self, conn: ConnId, what: &str, worker: &str, task: &str) {
        // Not the holder at all: that is the more useful answer.
        if let Err(refusal) = self.scheduler.check_holder(worker, task, None) {
            self.refuse(conn, &refusal);
            return;
        }
        let held = self.scheduler.task(task).filter(|t| t.holder() == Some(worker)).map(Task::attempt);
        let hint = held.map_or_else(
            || format!("run `mcc worker next --as {worker}` to see what you hold"),
            |a| format!("you hold attempt {a}: send `\"attempt\": {a}` (`--attempt {a}`)"),
        );
        let text = format!(
            "`{what}` for task {task} names no attempt; every report carries the attempt it was granted: {hint}"
        );
        self.send(conn, ServerMsg::error_code(text, "missing_attempt"));
    }
}
