//! The store's writer thread: it owns the [`Store`] and commits what the
//! engine hands it while the engine goes on with the next batch (a
//! pipeline), so the fsync of one commit overlaps the work of the next.
//!
//! Whatever waits on the writer when it gets to its queue goes into one
//! transaction (group commit), and only once that transaction is durable
//! are its deliveries (the answers to the requests it holds) handed on, in
//! the order they were queued. Nothing is acknowledged before it is on disk.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{Rows, Store, StoreError};

/// Commits queued at most: an engine further ahead waits (backpressure).
const QUEUE: usize = 256;
/// Commits written in one transaction at most.
const GROUP: usize = 64;

enum Job<D> {
    Commit {
        rows: Option<Rows>,
        deliveries: Vec<D>,
    },
    /// A stored value, read after every commit queued before it.
    Meta {
        key: String,
        reply: SyncSender<Result<Option<String>, StoreError>>,
    },
}

/// The handle the engine holds; see the module docs.
pub struct Writer<D: Send + 'static> {
    tx: Option<SyncSender<Job<D>>>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
}

impl<D: Send + 'static> Writer<D> {
    /// Start the writer thread. `deliver` gets each durable group's
    /// deliveries in order; `failed` is called once if a commit fails,
    /// after which nothing more is delivered.
    pub fn start(
        store: Store,
        deliver: impl FnMut(Vec<D>) + Send + 'static,
        failed: impl FnOnce(&StoreError) + Send + 'static,
    ) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("mcc-store".into())
            .spawn(move || run(store, &rx, deliver, failed))
            .expect("spawn the store writer thread");
        Self { tx: Some(tx), thread: Some(thread) }
    }

    /// Queue `rows` for the next transaction and `deliveries` to be handed
    /// on once it is durable. Waits only while the queue is full. An error
    /// means the writer has stopped on a failed commit: it is that error.
    pub fn commit(&mut self, rows: Option<Rows>, deliveries: Vec<D>) -> Result<(), StoreError> {
        if rows.is_none() && deliveries.is_empty() {
            return Ok(());
        }
        self.send(Job::Commit { rows, deliveries })
    }

    /// A value from the `meta` table as it stands after everything queued.
    pub fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let (reply, answer) = sync_channel(1);
        self.send(Job::Meta { key: key.to_owned(), reply })?;
        match answer.recv() {
            Ok(result) => result,
            Err(_) => Err(self.stopped()),
        }
    }

    /// Write and deliver everything queued, then stop the thread.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(StoreError::Crashed("the store writer thread panicked; see the message above".into())),
            None => Ok(()),
        }
    }

    fn send(&mut self, job: Job<D>) -> Result<(), StoreError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent { Ok(()) } else { Err(self.stopped()) }
    }

    /// Why the writer thread is gone.
    fn stopped(&mut self) -> StoreError {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => StoreError::Crashed("the store writer thread panicked; see the message above".into()),
            _ => StoreError::Crashed("the store writer has stopped".into()),
        }
    }
}

impl<D: Send + 'static> Drop for Writer<D> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<D>(
    mut store: Store,
    rx: &Receiver<Job<D>>,
    mut deliver: impl FnMut(Vec<D>),
    failed: impl FnOnce(&StoreError),
) -> Result<(), StoreError> {
    let mut next = rx.recv().ok();
    while let Some(first) = next.take() {
        let mut rows = Vec::new();
        let mut deliveries = Vec::new();
        let mut job = Some(first);
        // Take every commit already queued, up to a read: it must see them durable.
        for _ in 0..GROUP {
            match job.take() {
                Some(Job::Commit { rows: r, deliveries: d }) => {
                    rows.extend(r);
                    deliveries.extend(d);
                    job = rx.try_recv().ok();
                }
                other => {
                    job = other;
                    break;
                }
            }
        }
        if !rows.is_empty()
            && let Err(e) = store.write(&rows)
        {
            failed(&e);
            return Err(e);
        }
        if !deliveries.is_empty() {
            deliver(deliveries);
        }
        match job {
            Some(Job::Meta { key, reply }) => {
                let _ = reply.send(store.meta(&key));
                next = rx.recv().ok();
            }
            Some(commit @ Job::Commit { .. }) => next = Some(commit),
            None => next = rx.recv().ok(),
        }
    }
    Ok(())
}
