//! How a hub's answer to a worker reads: the verdict, the task with its
//! `done` command first, the commands for when stuck, all within
//! [`PRINT_BUDGET`] (a longer task goes whole to `.mcc/tasks/ID.md`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Answer, NextCall, Source, last_grant, remember_grant, remembered_done};
use crate::client::exit;
use crate::wire::{Offer, ServerMsg};

/// What a printed answer should stay under, for agents that keep little.
pub const PRINT_BUDGET: usize = 2000;

/// The hub's answer `msg` to `worker` as an [`Answer`]. `root` is the
/// project's, where long tasks are written and paths are relative to.
pub(super) fn render(worker: String, msg: ServerMsg, root: Option<&Path>) -> Answer {
    let (text, code, next) = Reading { worker: &worker, root }.render(&msg);
    Answer { worker, text, code, next, source: Source::Hub(msg), work_in: None }
}

/// One answer being put into words.
struct Reading<'a> {
    worker: &'a str,
    root: Option<&'a Path>,
}

impl Reading<'_> {
    fn render(&self, msg: &ServerMsg) -> (String, u8, Option<NextCall>) {
        let w = self.worker;
        match msg {
            ServerMsg::Offer { offer } => self.offer(offer, String::new()),
            ServerMsg::Verdict { task_id, attempt, accepted, failed, reasons, next, warnings, .. } => {
                // Validation output can be long: the whole of it is in `mcc tasks show`.
                let reasons = reasons.join("; ");
                let reasons = if reasons.len() > 600 {
                    format!("{} (all of it: mcc tasks show {})", clip(&reasons, 600), quoted(task_id))
                } else {
                    reasons
                };
                let head = if *accepted {
                    format!("accepted {task_id}.\n")
                } else if *failed {
                    format!("rejected {task_id} (attempt {attempt}) and it has no attempts left: {reasons}\n")
                } else {
                    format!("rejected {task_id} (attempt {attempt}): {reasons}\nfix it and report again:\n")
                };
                let mut head = head;
                for warning in warnings {
                    let _ = writeln!(head, "warning: {}", clip(warning, 600));
                }
                self.offer(next, head)
            }
            ServerMsg::Ack { message, next: Some(next), .. } => self.offer(next, format!("{message}\n")),
            ServerMsg::Ack { message, what, task_id, .. } => match (what.as_str(), task_id) {
                ("progress", Some(t)) => {
                    // The command printed with the task; without it, one that runs as printed.
                    let done = remembered_done(w, t).unwrap_or_else(|| NextCall::Done {
                        task: t.clone(),
                        attempt: last_grant(w, t),
                        deliverables: Vec::new(),
                        score: 5,
                    });
                    (format!("{message}\nwhen done: {}\n", done.command(w)), exit::OK, Some(done))
                }
                ("leave", _) => (format!("{message}\nyou can stop\n"), exit::OK, None),
                _ => {
                    let next = NextCall::Next;
                    (format!("{message}\nnext: {}\n", next.command(w)), exit::OK, Some(next))
                }
            },
            ServerMsg::Error { error, hint, .. } => {
                let hint = hint.as_deref().map(|h| format!("\n{h}")).unwrap_or_default();
                (format!("{error}{hint}"), exit::ERROR, None)
            }
            other => (format!("unexpected answer from the hub: {}", other.to_json()), exit::ERROR, None),
        }
    }

    /// A task offer. It is printed whole when it fits [`PRINT_BUDGET`];
    /// otherwise the whole task goes to `.mcc/tasks/ID.md` and the answer
    /// keeps the task line, the `done` command, that file's path, a digest
    /// of the rest and the commands for when stuck.
    fn task(&self, offer: &Offer, head: String) -> (String, u8, Option<NextCall>) {
        let Offer::Task {
            task,
            attempt,
            attempts_used,
            max_attempts,
            lease_ms,
            held,
            returning,
            reasons,
            question,
            answer,
            phase,
            ..
        } = offer
        else {
            unreachable!("only called for a task offer")
        };
        let w = self.worker;
        let view = TaskView::new(task);
        let done = view.done_call(*attempt);
        let done_cmd = done.command(w);
        remember_grant(w, &done);
        let how = if *returning {
            "back to you"
        } else if *held {
            "you already hold it"
        } else {
            "new"
        };
        let phase = phase.as_deref().map(|p| format!(", phase {p}")).unwrap_or_default();
        let used = if *max_attempts > 0 { format!(", {attempts_used} of {max_attempts} used") } else { String::new() };
        let status = format!(
            "task {} ({how}, attempt {attempt}{used}, lease {}{phase})",
            view.id,
            human(Duration::from_millis(*lease_ms))
        );
        let (id, who) = (quoted(&view.id), quoted(w));
        let stuck = vec![
            format!("mcc worker block {id} --as {who} --attempt {attempt} --question \"...\""),
            format!("mcc worker fail {id} --as {who} --attempt {attempt} --reason \"...\""),
        ];
        let stuck_line = format!("stuck? {}   cannot do it? {}\n", stuck[0], stuck[1]);
        let mut notes: Vec<(&str, String)> = Vec::new();
        if !reasons.is_empty() {
            notes.push(("rejected last time because", reasons.join("; ")));
        }
        if let Some(question) = question {
            notes.push(("you asked", question.clone()));
        }
        if let Some(answer) = answer {
            notes.push(("the engineer answered", answer.clone()));
        }
        let root = self
            .root
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        // Paths in the task are the project root's; say so where that is not obvious.
        let elsewhere = std::env::current_dir()
            .ok()
            .and_then(|cwd| std::fs::canonicalize(cwd).ok())
            .is_some_and(|cwd| std::fs::canonicalize(&root).ok().is_some_and(|r| r != cwd));
        let root_note = elsewhere.then(|| format!("paths are relative to the project root {}\n", root.display()));

        let first = if view.inline_description() && !view.description.is_empty() {
            format!("{status}: {}", view.description)
        } else {
            status.clone()
        };
        let whole = format!(
            "{head}{first}\nwhen done: {done_cmd}\n{}{}{SCORE_NOTE}\n{stuck_line}",
            view.details(&notes),
            root_note.clone().unwrap_or_default()
        );
        if whole.len() <= PRINT_BUDGET {
            return (whole, exit::OK, Some(done));
        }

        let file = crate::layout::Layout::of_root(&root).task_file(&view.id, "md");
        let md = view.markdown(&format!("{status}; worker {w}."), &done_cmd, &stuck, &notes, &root);
        let saved = std::fs::create_dir_all(file.parent().expect("has a parent"))
            .and_then(|()| crate::text::write_atomic(&file, md.as_bytes()));
        let mut text = clip(&head, 400);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = writeln!(text, "{}", clip(&first, 400));
        if done_cmd.len() <= 800 {
            let _ = writeln!(text, "when done: {done_cmd}");
        } else {
            let _ = writeln!(text, "{DONE_IN_FILE}{} (it names {} deliverables)", file.display(), view.write.len());
        }
        match saved {
            Ok(()) => {
                let _ =
                    writeln!(text, "the whole task ({} characters) is in {}: read it first", md.len(), file.display());
            }
            Err(e) => {
                let _ = writeln!(
                    text,
                    "the task is too long to print and {} could not be written ({e}); `mcc tasks show {id}` prints it",
                    file.display()
                );
            }
        }
        let tail = root_note.unwrap_or_default() + &stuck_line;
        for line in view.digest(&notes) {
            if text.len() + line.len() + 1 + tail.len() > PRINT_BUDGET {
                break;
            }
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str(&tail);
        (text, exit::OK, Some(done))
    }

    fn offer(&self, offer: &Offer, head: String) -> (String, u8, Option<NextCall>) {
        match offer {
            Offer::Task { .. } => self.task(offer, head),
            Offer::NothingYet { message, reason, .. } => {
                let cmd = NextCall::Next;
                let mut text = format!("{head}{message}\n");
                // The hub puts the reason in its message; say it when a message does not.
                if let Some(why) = reason.as_ref().filter(|why| !message.contains(&why.text)) {
                    let _ = writeln!(text, "waiting on: {}", why.text);
                }
                (text, exit::NOTHING_YET, Some(cmd))
            }
            Offer::AllDone { message, .. } => (format!("{head}{message}\n"), exit::ALL_DONE, None),
            Offer::HandOver { message, .. } => (format!("{head}{message}\n"), exit::HAND_OVER, None),
        }
    }
}

/// A lease or limit as people write it: `2h`, `30m`, `45s`.
pub fn human(d: Duration) -> String {
    crate::text::duration(d)
}

/// The parts of a task a worker reads, from its wire JSON.
struct TaskView {
    id: String,
    description: String,
    read: Vec<String>,
    write: Vec<String>,
    requirements: Vec<String>,
    criteria: Vec<String>,
    validation: Option<String>,
    rules: Vec<String>,
}

/// The strings of a JSON list (none when it is not one).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// A word of a printed command, quoted for the shell when it needs it.
pub(super) fn quoted(word: &str) -> String {
    crate::text::quoted(word).into_owned()
}

/// The first `max` bytes of `text` (at a character boundary) and `…` when cut.
fn clip(text: &str, max: usize) -> String {
    crate::text::clip(text, max).into_owned()
}

/// How an answer starts the line naming the file that holds a `done`
/// command too long to print.
const DONE_IN_FILE: &str = "when done: run the command under \"When done\" in ";

/// A description short enough to follow the task line itself.
const INLINE_DESCRIPTION: usize = 300;

impl TaskView {
    fn new(task: &Value) -> Self {
        Self {
            id: task["id"].as_str().unwrap_or_default().to_owned(),
            description: task["description"].as_str().unwrap_or_default().to_owned(),
            read: strings(&task["context"]["targetFiles"]),
            write: strings(&task["context"]["outputFiles"]),
            requirements: strings(&task["context"]["requirements"]),
            criteria: strings(&task["acceptance"]["criteria"]),
            validation: task["acceptance"]["validation"].as_str().map(str::to_owned),
            rules: strings(&task["context"]["relevantRules"]),
        }
    }

    /// The `done` call, runnable as printed: it names the task's output
    /// files (relative to the project root, which `done` resolves them
    /// against from any folder), and no placeholder when there are none.
    fn done_call(&self, attempt: u32) -> NextCall {
        NextCall::Done { task: self.id.clone(), attempt: Some(attempt), deliverables: self.write.clone(), score: 5 }
    }

    fn inline_description(&self) -> bool {
        !self.description.contains('\n') && self.description.len() <= INLINE_DESCRIPTION
    }

    /// Everything after the first two lines, as printed when it all fits.
    fn details(&self, notes: &[(&str, String)]) -> String {
        let mut out = String::new();
        if !self.inline_description() {
            let _ = writeln!(out, "description:\n{}", self.description.trim_end());
        }
        for (label, text) in notes {
            let _ = writeln!(out, "{label}: {text}");
        }
        let list = |out: &mut String, label: &str, items: &[String]| {
            if !items.is_empty() {
                let _ = writeln!(out, "{label}: {}", items.join(", "));
            }
        };
        list(&mut out, "read", &self.read);
        list(&mut out, "write", &self.write);
        for (label, items) in [("requirements", &self.requirements), ("acceptance criteria", &self.criteria)] {
            if !items.is_empty() {
                let _ = writeln!(out, "{label}:");
                for item in items {
                    let _ = writeln!(out, "  - {item}");
                }
            }
        }
        if let Some(v) = &self.validation {
            let _ = writeln!(out, "checked by: {v}");
        }
        list(&mut out, "rules to load", &self.rules);
        out
    }

    /// Short lines standing for the details, most useful first, for an
    /// answer that points to the whole task in its file.
    fn digest(&self, notes: &[(&str, String)]) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.inline_description() {
            lines.push(format!("description: {}", clip(&self.description.replace('\n', " "), 400)));
        }
        for (label, text) in notes {
            lines.push(format!("{label}: {}", clip(text, 300)));
        }
        let few = |label: &str, items: &[String]| -> Option<String> {
            let first = items.first()?;
            let mut line = format!("{label} ({}): {first}", items.len());
            let mut shown = 1;
            for item in &items[1..] {
                if line.len() + item.len() > 220 {
                    break;
                }
                let _ = write!(line, ", {item}");
                shown += 1;
            }
            if shown < items.len() {
                let _ = write!(line, " … and {} more", items.len() - shown);
            }
            Some(clip(&line, 300))
        };
        lines.extend(few("write", &self.write));
        lines.extend(few("read", &self.read));
        lines.extend(few("requirements", &self.requirements));
        lines.extend(few("acceptance criteria", &self.criteria));
        if let Some(v) = &self.validation {
            lines.push(format!("checked by: {}", clip(v, 200)));
        }
        lines.extend(few("rules to load", &self.rules));
        lines
    }

    /// The whole task as Markdown, for `.mcc/tasks/ID.md`.
    fn markdown(
        &self,
        status: &str,
        done_cmd: &str,
        stuck: &[String],
        notes: &[(&str, String)],
        root: &Path,
    ) -> String {
        let mut md =
            format!("# Task {}\n\n{status}\n\nPaths are relative to the project root {}.\n", self.id, root.display());
        let _ = write!(md, "\n## When done\n\n    {done_cmd}\n");
        if !self.description.is_empty() {
            let _ = write!(md, "\n## Description\n\n{}\n", self.description.trim_end());
        }
        for (label, text) in notes {
            let mut title = (*label).to_owned();
            title[..1].make_ascii_uppercase();
            let _ = write!(md, "\n## {title}\n\n{text}\n");
        }
        let section = |md: &mut String, title: &str, items: &[String]| {
            if !items.is_empty() {
                let _ = write!(md, "\n## {title}\n\n");
                for item in items {
                    let _ = writeln!(md, "- {item}");
                }
            }
        };
        section(&mut md, "Read", &self.read);
        section(&mut md, "Write", &self.write);
        section(&mut md, "Requirements", &self.requirements);
        section(&mut md, "Acceptance criteria", &self.criteria);
        if let Some(v) = &self.validation {
            let _ = write!(md, "\n## Checked by\n\n    {v}\n");
        }
        section(&mut md, "Rules to load", &self.rules);
        let _ = write!(md, "\n## If you are stuck\n\n");
        for line in stuck {
            let _ = writeln!(md, "    {line}");
        }
        let _ = write!(md, "\n{SCORE_NOTE}\n");
        md
    }
}

const SCORE_NOTE: &str = "--score: rate your own context 1-5 (5 fresh; 2 or less means hand over to a fresh chat)";
