//! The kinds of event in the append-only log (`assigned`, `failed_attempt`,
//! ...): one enum that the scheduler writes, the store keeps as text, and
//! the report and the workflow hooks read with exhaustive matches, so a new
//! kind cannot be forgotten by a reader. Each kind is stored and sent as the
//! same string it always was.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an event of the log records.
///
/// ```ignore
/// use mcc::event::EventKind;
/// assert_eq!(EventKind::FailedAttempt.name(), "failed_attempt");
/// assert_eq!(EventKind::from_name("failed_attempt"), EventKind::FailedAttempt);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A worker was seen for the first time.
    WorkerJoined,
    /// A worker's own context score changed.
    Score,
    Created,
    /// A task was granted to a worker: an attempt begins.
    Assigned,
    /// The holder reported the task done; it waits for a verdict.
    Submitted,
    Accepted,
    Rejected,
    /// A rejection used the task's last attempt: it failed for good.
    Failed,
    /// The holder gave the task up (`mcc worker fail`); it fails for good
    /// only when that was its last attempt.
    FailedAttempt,
    /// The holder asked the engineer a question.
    Blocked,
    /// The engineer answered a blocked task.
    Answered,
    Progress,
    /// The holder left; the task went back to the queue.
    Released,
    /// The holder's lease ran out.
    Expired,
    Cancelled,
    /// The engineer put a failed or cancelled task back in the queue.
    Retried,
    /// The holder's chat ended and did not come back within the presence
    /// grace: the task went back to the queue (docs/worker.md, "Presence").
    ChatEnded,
    /// A kind this mcc does not know, read from a store or a hub of another
    /// version: kept as it was written, and counted by no figure.
    Other(String),
}

impl EventKind {
    /// Every kind this mcc writes.
    pub const KNOWN: [EventKind; 17] = [
        Self::WorkerJoined,
        Self::Score,
        Self::Created,
        Self::Assigned,
        Self::Submitted,
        Self::Accepted,
        Self::Rejected,
        Self::Failed,
        Self::FailedAttempt,
        Self::Blocked,
        Self::Answered,
        Self::Progress,
        Self::Released,
        Self::Expired,
        Self::Cancelled,
        Self::Retried,
        Self::ChatEnded,
    ];

    /// The kind as stored in `.mcc/state.db` and sent on the wire.
    pub fn name(&self) -> &str {
        match self {
            Self::WorkerJoined => "worker_joined",
            Self::Score => "score",
            Self::Created => "created",
            Self::Assigned => "assigned",
            Self::Submitted => "submitted",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::FailedAttempt => "failed_attempt",
            Self::Blocked => "blocked",
            Self::Answered => "answered",
            Self::Progress => "progress",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Retried => "retried",
            Self::ChatEnded => "chat_ended",
            Self::Other(name) => name,
        }
    }

    /// The kind a stored or sent `name` means; [`EventKind::Other`] when
    /// this mcc does not know it.
    pub fn from_name(name: &str) -> Self {
        Self::KNOWN.into_iter().find(|k| k.name() == name).unwrap_or_else(|| Self::Other(name.to_owned()))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Self::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_stored_and_sent_as_the_string_it_always_was() {
        let names: Vec<&str> = EventKind::KNOWN.iter().map(EventKind::name).collect();
        assert_eq!(
            names,
            [
                "worker_joined",
                "score",
                "created",
                "assigned",
                "submitted",
                "accepted",
                "rejected",
                "failed",
                "failed_attempt",
                "blocked",
                "answered",
                "progress",
                "released",
                "expired",
                "cancelled",
                "retried",
                "chat_ended",
            ]
        );
        for kind in EventKind::KNOWN {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn a_kind_from_another_version_is_kept_as_written() {
        let kind: EventKind = serde_json::from_str("\"handed_over\"").unwrap();
        assert_eq!(kind, EventKind::Other("handed_over".into()));
        assert_eq!(serde_json::to_string(&kind).unwrap(), "\"handed_over\"");
        assert_eq!(EventKind::from_name("handed_over").name(), "handed_over");
    }
}
