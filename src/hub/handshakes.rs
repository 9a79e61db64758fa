//! Handshakes in progress: a bounded set, oldest first. When it is full, the
//! oldest unfinished handshake is closed to make room for the newcomer, never
//! the newcomer refused: a real client sends its upgrade request at once and
//! is through in a moment, while a socket that holds its place by saying
//! nothing is always the oldest. So idle sockets, however many, cannot keep a
//! token holder out; they only push each other out. The live page keeps
//! the requests it is reading in a set of its own by the same rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The handshakes in progress, each with the sender whose drop closes it.
pub(super) struct Handshakes {
    max: usize,
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
}

/// One handshake's place in [`Handshakes`], given back when dropped.
pub(super) struct Place {
    handshakes: Arc<Handshakes>,
    id: u64,
}

impl Handshakes {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), next: AtomicU64::new(0), waiting: Mutex::new(BTreeMap::new()) })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new handshake, closing the oldest one if all are taken;
    /// the receiver resolves when this handshake is pushed out in its turn.
    pub(super) fn begin(self: &Arc<Self>) -> (Place, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (evict, evicted) = oneshot::channel();
        let mut waiting = self.lock();
        while waiting.len() >= self.max {
            // Dropping its sender wakes the oldest handshake, which then closes.
            waiting.pop_first();
        }
        waiting.insert(id, evict);
        (Place { handshakes: self.clone(), id }, evicted)
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Place {
    /// The handshake is done: `false` if it was pushed out meanwhile (then the
    /// connection must close, its place is someone else's).
    pub(super) fn finish(self) -> bool {
        self.handshakes.lock().remove(&self.id).is_some()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.handshakes.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_pushes_out_its_oldest_handshake_and_keeps_the_newest() {
        let handshakes = Handshakes::new(2);
        let (oldest, mut oldest_evicted) = handshakes.begin();
        let (middle, mut middle_evicted) = handshakes.begin();
        let (newest, mut newest_evicted) = handshakes.begin();
        assert_eq!(handshakes.len(), 2);
        assert!(oldest_evicted.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Closed));
        assert!(middle_evicted.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Empty));
        assert!(newest_evicted.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Empty));
        assert!(!oldest.finish(), "a pushed-out handshake may not go on");
        assert!(newest.finish());
        drop(middle);
        assert_eq!(handshakes.len(), 0, "finished and dropped handshakes give their place back");
    }
}
