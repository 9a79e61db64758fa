//! What happens to a task when its holder's chat ends for good: it goes
//! back to the queue with the reason, as after a lease that ran out. When
//! a chat ends and whether it came back is the engine's to know
//! (`engine/presence.rs`); the scheduler only returns the task.

use serde_json::json;

use super::{Scheduler, TaskId, TaskState};
use crate::event::EventKind;

impl Scheduler {
    /// `worker`'s chat ended and did not come back within the grace: the
    /// task it holds goes back to the queue, or fails when that was its
    /// last attempt. The attempt counts as spent, as an expired lease's
    /// does, and the reason ("worker-A's chat ended") is the task's, shown
    /// to its next holder. Returns the task, if it held one.
    pub fn chat_ended(&mut self, worker: &str) -> Option<TaskId> {
        let id = self.holding.get(worker)?.clone();
        let reason = format!("{worker}'s chat ended");
        let task = self.tasks.get_mut(&id).expect("a held task exists");
        task.spent += 1;
        task.reasons = vec![reason.clone()];
        let attempt = task.attempt();
        let state =
            if task.attempts_used() >= self.settings.max_attempts { TaskState::Failed } else { TaskState::Ready };
        self.transition(&id, state);
        self.event(
            EventKind::ChatEnded,
            Some(&id),
            Some(worker),
            Some(attempt),
            json!({ "now": state.name(), "reason": reason }),
        );
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{Offer, Scheduler, Settings, Task, TaskId, TaskState, Worker};
    use crate::task::TaskSpec;

    #[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
    fn first(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, std::convert::Infallible> {
        Ok(ready.first().map(|t| t.spec.id.clone()))
    }

    #[test]
    fn a_chat_that_ended_gives_its_task_back_with_the_reason_and_an_attempt_spent() {
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { max_attempts: 2, ..Settings::default() });
        s.add_tasks(vec![TaskSpec::new("a", "do a")], None, now).unwrap();
        assert_eq!(s.offer("worker-A", now, 64, first).unwrap(), Offer::Granted("a".into()));
        assert_eq!(s.chat_ended("worker-A"), Some("a".into()));
        let a = s.task("a").unwrap();
        assert_eq!(a.state(), TaskState::Ready);
        assert_eq!(a.reasons(), ["worker-A's chat ended"]);
        assert_eq!(s.chat_ended("worker-A"), None, "it holds nothing now");
        // The next holder's attempt is the last: a second chat that ends fails the task.
        s.offer("worker-B", now + Duration::from_secs(1), 64, first).unwrap();
        assert_eq!(s.chat_ended("worker-B"), Some("a".into()));
        assert_eq!(s.task("a").unwrap().state(), TaskState::Failed);
    }
}
