//! The problems the hub shows the engineer (`mcc status`, the page, `mcc
//! run`): bad report files, a workflow that raised or did not load. Each is
//! keyed by what kind of problem it is and what it is about, and is set,
//! found and retracted by that key, never by reading its text; the text is
//! only what people read, and goes on the wire as it always did.

use std::ops::Deref;

/// The problems kept at most, the oldest dropped first.
const MOST: usize = 50;

/// What went wrong. With the subject it names one problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A workflow step, hook or command continuation raised (subject: the
    /// error, so each distinct one is said once).
    WorkflowFailed,
    /// The workflow file did not load (subject: its path); retracted when
    /// a workflow loads.
    WorkflowNotLoaded,
    /// The workflow's stored state could not be read (subject: the error).
    WorkflowStateUnreadable,
    /// The workflow's `accept` raised for a task (subject: the task);
    /// retracted when the task is judged.
    AcceptFailed,
    /// The workflow's `assign` raised (subject: the error).
    AssignFailed,
    /// The workflow's `assign` chose a task that is not ready (subject: the task).
    AssignChoseUnready,
    /// A report file was refused (subject: the file as shown).
    ReportFileRefused,
    /// A file or folder in `.mcc/` was refused: a link, a FIFO, too large
    /// (subject: its path).
    StateFileRefused,
    /// An attempt changed files outside its task, into another task's
    /// reserved files, or while others worked in the same checkout
    /// (subject: the task); a later attempt of the task says it anew.
    WritesOutside,
}

/// The problems now, oldest first. Reads as the list of their texts, which
/// is what status, the page and the wire show.
#[derive(Debug, Default)]
pub struct Problems {
    /// The key of each text, in the same order.
    keys: Vec<(ProblemKind, String)>,
    texts: Vec<String>,
}

impl Problems {
    /// Say `text` for `(kind, subject)`, in place of what was said for it
    /// before. False when that is already said: a broken decision fails on
    /// every dispatch, and is said once.
    pub fn set(&mut self, kind: ProblemKind, subject: &str, text: String) -> bool {
        let at = self.position(kind, subject);
        if at.is_some_and(|i| self.texts[i] == text) {
            return false;
        }
        if let Some(i) = at {
            self.remove(i);
        }
        self.keys.push((kind, subject.to_owned()));
        self.texts.push(text);
        if self.texts.len() > MOST {
            self.remove(0);
        }
        true
    }

    /// The problem `(kind, subject)` is over.
    pub fn retract(&mut self, kind: ProblemKind, subject: &str) {
        if let Some(i) = self.position(kind, subject) {
            self.remove(i);
        }
    }

    /// Every problem of `kind` is over.
    pub fn retract_all(&mut self, kind: ProblemKind) {
        while let Some(i) = self.keys.iter().position(|(k, _)| *k == kind) {
            self.remove(i);
        }
    }

    /// Whether a problem of `kind` stands.
    pub fn any(&self, kind: ProblemKind) -> bool {
        self.keys.iter().any(|(k, _)| *k == kind)
    }

    fn position(&self, kind: ProblemKind, subject: &str) -> Option<usize> {
        self.keys.iter().position(|(k, s)| *k == kind && s == subject)
    }

    fn remove(&mut self, i: usize) {
        self.keys.remove(i);
        self.texts.remove(i);
    }
}

impl Deref for Problems {
    type Target = Vec<String>;

    fn deref(&self) -> &Vec<String> {
        &self.texts
    }
}

impl PartialEq<Vec<String>> for Problems {
    fn eq(&self, other: &Vec<String>) -> bool {
        self.texts == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProblemKind::{AcceptFailed, ReportFileRefused, WorkflowFailed, WorkflowNotLoaded};

    #[test]
    fn a_problem_is_said_once_and_a_new_word_on_it_replaces_the_old() {
        let mut p = Problems::default();
        assert!(p.set(WorkflowFailed, "boom", "workflow: boom".into()));
        assert!(!p.set(WorkflowFailed, "boom", "workflow: boom".into()), "said once");
        assert!(p.set(WorkflowFailed, "bang", "workflow: bang".into()), "another error is another problem");
        assert!(p.set(WorkflowNotLoaded, "flow.lua", "workflow flow.lua did not load: line 1".into()));
        assert!(p.set(WorkflowNotLoaded, "flow.lua", "workflow flow.lua did not load: line 2".into()));
        assert_eq!(*p, ["workflow: boom", "workflow: bang", "workflow flow.lua did not load: line 2"]);
    }

    #[test]
    fn a_problem_is_retracted_by_its_key_whatever_its_text_says() {
        let mut p = Problems::default();
        // Texts that read like another kind's: only the key decides.
        p.set(ReportFileRefused, "r.json", "report file r.json: workflow x did not load: y".into());
        p.set(AcceptFailed, "a", "workflow accept for task a: boom".into());
        p.set(AcceptFailed, "ab", "workflow accept for task ab: boom".into());
        assert!(!p.any(WorkflowNotLoaded));
        p.set(WorkflowNotLoaded, "flow.lua", "workflow flow.lua did not load: y".into());
        assert!(p.any(WorkflowNotLoaded));
        p.retract(AcceptFailed, "a");
        p.retract_all(WorkflowNotLoaded);
        assert_eq!(*p, ["report file r.json: workflow x did not load: y", "workflow accept for task ab: boom"]);
    }

    #[test]
    fn at_most_fifty_are_kept_the_oldest_dropped() {
        let mut p = Problems::default();
        for i in 0..60 {
            p.set(ReportFileRefused, &format!("r{i}.json"), format!("report file r{i}.json: bad"));
        }
        assert_eq!(p.len(), MOST);
        assert_eq!(p[0], "report file r10.json: bad");
        p.retract(ReportFileRefused, "r10.json");
        assert_eq!(p[0], "report file r11.json: bad", "keys and texts stay in step");
    }
}
