//! Presence: which workers' chats are alive, known from the connections
//! that say so (`present`, held by `mcc mcp` or by the watcher `mcc worker
//! next` starts), and the grace after a worker's last one ends before its
//! task goes back to the queue (docs/worker.md, "Presence").
//!
//! A hub knows presences only while their connections are open: after a
//! restart it knows none until the clients reconnect. So that a chat that
//! ended while no hub ran is still noticed, the names of the workers whose
//! presence the hub follows are stored (`meta` `presence_workers`); a
//! restarted hub gives each of them that holds a task a fresh grace from its
//! start, and never returns a grant at once.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::{ConnId, Engine};
use crate::wire::{ClientMsg, Presence, PresenceKind, ServerMsg, WorkerView};

/// The `meta` key the followed workers are stored under (a JSON list of names).
const STORED: &str = "presence_workers";

/// Every worker's presence, as this hub knows it.
#[derive(Debug, Default)]
pub struct Presences {
    /// Each presence connection, and whose it is.
    by_conn: HashMap<ConnId, String>,
    /// Each worker that ever sent `present` to this hub (or did before a restart).
    workers: HashMap<String, Standing>,
    /// The names stored last, to write them only when they change.
    stored: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Standing {
    /// Presence connections open now.
    live: usize,
    /// When the last one ended (or the hub started, after a restart).
    gone_at: Option<Instant>,
    /// When its task goes back to the queue unless it comes back.
    returns_at: Option<Instant>,
}

impl Presences {
    /// `worker`'s presence on `conn` began: it is present, its grace (if any) is over.
    fn arrive(&mut self, conn: ConnId, worker: &str) {
        if let Some(before) = self.by_conn.insert(conn, worker.to_owned())
            && let Some(standing) = self.workers.get_mut(&before)
        {
            // The same connection saying it again, maybe as another worker.
            standing.live = standing.live.saturating_sub(1);
        }
        let standing = self.workers.entry(worker.to_owned()).or_default();
        standing.live += 1;
        standing.gone_at = None;
        standing.returns_at = None;
    }

    /// A presence connection closed: the worker, if that was its last.
    fn depart(&mut self, conn: ConnId, now: Instant, grace: Duration) -> Option<String> {
        let worker = self.by_conn.remove(&conn)?;
        let standing = self.workers.get_mut(&worker)?;
        standing.live = standing.live.saturating_sub(1);
        if standing.live > 0 {
            return None;
        }
        standing.gone_at = Some(now);
        standing.returns_at = Some(now + grace);
        Some(worker)
    }

    /// `worker` sent a verb: a worker in its grace has come back, and keeps its task.
    fn heard_from(&mut self, worker: &str) -> bool {
        self.workers.get_mut(worker).and_then(|s| s.returns_at.take()).is_some()
    }

    /// The workers whose grace is over at `now`; each is past its grace once.
    fn due(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<String> = self
            .workers
            .iter_mut()
            .filter(|(_, s)| s.returns_at.is_some_and(|at| at <= now))
            .map(|(name, s)| {
                s.returns_at = None;
                name.clone()
            })
            .collect();
        due.sort();
        due
    }

    /// When the next grace ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers.values().filter_map(|s| s.returns_at).min()
    }

    /// The names to store, when they changed since last stored: the workers
    /// present, or gone and still in their grace.
    fn to_store(&mut self) -> Option<String> {
        let followed: BTreeSet<String> = self
            .workers
            .iter()
            .filter(|(_, s)| s.live > 0 || s.returns_at.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        if followed == self.stored {
            return None;
        }
        self.stored.clone_from(&followed);
        Some(serde_json::to_string(&followed).expect("a list of names serializes"))
    }

    /// How `worker` is shown: present, gone (since when, and when its task
    /// goes back), or lease only when no presence of it was ever known.
    pub fn show(&self, worker: &str, now: Instant, view: &mut WorkerView) {
        let Some(standing) = self.workers.get(worker) else {
            view.presence = Some(Presence::LeaseOnly);
            return;
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if standing.live > 0 {
            view.presence = Some(Presence::Present);
            view.presences = Some(standing.live);
        } else {
            view.presence = Some(Presence::Gone);
            view.gone_ms_ago = standing.gone_at.map(|at| ms(now.saturating_duration_since(at)));
            view.returns_in_ms = standing.returns_at.map(|at| ms(at.saturating_duration_since(now)));
        }
    }
}

/// The worker a worker verb comes from.
fn sender(msg: &ClientMsg) -> Option<&str> {
    match msg {
        ClientMsg::Next { worker, .. }
        | ClientMsg::Done { worker, .. }
        | ClientMsg::Block { worker, .. }
        | ClientMsg::Fail { worker, .. }
        | ClientMsg::Progress { worker, .. }
        | ClientMsg::Leave { worker }
        | ClientMsg::TaskFiles { worker, .. }
        | ClientMsg::FetchFile { worker, .. }
        | ClientMsg::Upload { worker, .. } => Some(worker),
        _ => None,
    }
}

impl Engine {
    /// After a restart: every followed worker that holds a task gets a fresh grace from now.
    pub(super) fn resume_presences(&mut self) {
        let stored = self.store.meta(STORED).ok().flatten().unwrap_or_default();
        let names: Vec<String> = serde_json::from_str(&stored).unwrap_or_default();
        let now = Instant::now();
        let grace = self.scheduler.settings.presence_grace;
        for name in names {
            if self.scheduler.held_by(&name).is_some() {
                let standing = self.presences.workers.entry(name).or_default();
                standing.gone_at = Some(now);
                standing.returns_at = Some(now + grace);
            }
        }
        self.presences.stored = self.presences.workers.keys().cloned().collect();
    }

    /// `present`: the connection is `worker`'s presence from now until it closes.
    pub(super) fn present(&mut self, conn: ConnId, worker: &str, kind: PresenceKind, agent_pid: Option<u32>) {
        if let Some(err) = super::bad_name(worker) {
            self.send(conn, err);
            return;
        }
        // Not `see_worker`: a presence alone (an MCP server asked only for status) is no worker
        // joining; a worker shows once it asks for work, present from then.
        self.presences.arrive(conn, worker);
        self.progress.touch_worker(worker);
        let by = match (kind, agent_pid) {
            (PresenceKind::Mcp, _) => "its MCP server".to_owned(),
            (PresenceKind::Watcher, Some(pid)) => format!("a watcher of process {pid}"),
            (PresenceKind::Watcher, None) => "a watcher".to_owned(),
        };
        let grace = crate::text::duration(self.scheduler.settings.presence_grace);
        let message = format!(
            "{worker} is present through {by}; if this connection ends, what {worker} holds goes back to the queue after {grace} unless it comes back"
        );
        self.send(conn, ServerMsg::Ack { what: "present".into(), message, task_id: None, next: None });
    }

    /// A connection closed: if it was a worker's last presence, its grace begins.
    pub(super) fn presence_closed(&mut self, conn: ConnId) {
        let grace = self.scheduler.settings.presence_grace;
        if let Some(worker) = self.presences.depart(conn, Instant::now(), grace) {
            tracing::info!(
                "mcc hub: {worker}'s chat ended; what it holds goes back to the queue in {} unless it comes back",
                crate::text::duration(grace)
            );
            self.progress.touch_worker(&worker);
        }
    }

    /// Any verb of a worker in its grace: it came back.
    pub(super) fn presence_heard(&mut self, msg: &ClientMsg) {
        if let Some(worker) = sender(msg)
            && self.presences.heard_from(worker)
        {
            self.progress.touch_worker(worker);
        }
    }

    /// Graces that ended: each such worker's task goes back to the queue, with the reason.
    pub(super) fn presence_graces(&mut self, now: Instant) {
        for worker in self.presences.due(now) {
            self.progress.touch_worker(&worker);
            if let Some(task) = self.scheduler.chat_ended(&worker) {
                tracing::info!("mcc hub: {worker}'s chat ended and did not come back: {task} is back in the queue");
            }
        }
        if let Some(names) = self.presences.to_store() {
            self.pending_meta.push((STORED, names));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_gone_only_when_its_last_presence_ends_and_comes_back_with_a_new_one() {
        let (now, grace) = (Instant::now(), Duration::from_mins(1));
        let mut p = Presences::default();
        p.arrive(1, "w");
        p.arrive(2, "w");
        assert_eq!(p.depart(1, now, grace), None, "one presence is left");
        assert_eq!(p.depart(2, now, grace), Some("w".into()));
        assert_eq!(p.next_deadline(), Some(now + grace));
        assert!(p.due(now + Duration::from_secs(59)).is_empty());
        p.arrive(3, "w");
        assert_eq!(p.next_deadline(), None, "back within the grace");
        assert_eq!(p.depart(3, now, grace), Some("w".into()));
        assert_eq!(p.due(now + grace), ["w"]);
        assert!(p.due(now + grace * 2).is_empty(), "past its grace once");
    }

    #[test]
    fn a_verb_within_the_grace_is_a_worker_come_back() {
        let (now, grace) = (Instant::now(), Duration::from_mins(1));
        let mut p = Presences::default();
        p.arrive(1, "w");
        p.depart(1, now, grace);
        assert!(p.heard_from("w"));
        assert!(p.due(now + grace).is_empty());
        assert!(!p.heard_from("other"), "a worker never present has no grace to end");
    }

    #[test]
    fn the_followed_workers_are_stored_when_they_change() {
        let (now, grace) = (Instant::now(), Duration::from_mins(1));
        let mut p = Presences::default();
        p.arrive(1, "w");
        assert_eq!(p.to_store().as_deref(), Some(r#"["w"]"#));
        assert_eq!(p.to_store(), None);
        p.depart(1, now, grace);
        assert_eq!(p.to_store(), None, "still followed within its grace");
        p.due(now + grace);
        assert_eq!(p.to_store().as_deref(), Some("[]"));
    }
}
