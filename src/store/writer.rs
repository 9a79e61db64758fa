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

use std::time::{Duration, Instant};

use super::{Rows, Store, StoreError};
use crate::handoff;

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
    /// Why the thread stopped, once that was read from it: every later call returns it again.
    stopped: Option<String>,
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
            .spawn(move || {
                let mut rx = rx;
                run(store, &mut rx, deliver, failed)
            })
            .expect("spawn the store writer thread");
        Self { tx: Some(tx), thread: Some(thread), stopped: None }
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

    /// Write and deliver everything queued, then stop the thread; the error
    /// it stopped on, if it did.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(panicked()),
            None => self.stopped.take().map_or(Ok(()), |why| Err(StoreError::Crashed(why))),
        }
    }

    fn send(&mut self, job: Job<D>) -> Result<(), StoreError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent { Ok(()) } else { Err(self.stopped()) }
    }

    /// Why the writer thread is gone (joined here the first time).
    fn stopped(&mut self) -> StoreError {
        self.tx = None;
        let why = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => panicked(),
            // It stops without an error only once told to, in `finish`.
            Some(Ok(Ok(()))) | None => {
                return StoreError::Crashed(
                    self.stopped.clone().unwrap_or_else(|| "the store writer has stopped".into()),
                );
            }
        };
        self.stopped = Some(why.to_string());
        why
    }
}

fn panicked() -> StoreError {
    StoreError::Crashed("the store writer thread panicked; see the message above".into())
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
    store: Store,
    rx: &mut Receiver<Job<D>>,
    deliver: impl FnMut(Vec<D>),
    failed: impl FnOnce(&StoreError),
) -> Result<(), StoreError> {
    let served = serve(store, rx, deliver);
    if let Err(e) = &served {
        failed(e);
    }
    served
}

/// Commit and deliver what comes until the engine lets go or a write fails.
fn serve<D>(mut store: Store, rx: &mut Receiver<Job<D>>, mut deliver: impl FnMut(Vec<D>)) -> Result<(), StoreError> {
    let every = store.keep_alive_every();
    let mut next = idle(&mut store, rx, every)?;
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
        if !rows.is_empty() {
            store.write(&rows)?;
        }
        if !deliveries.is_empty() {
            deliver(deliveries);
        }
        match job {
            Some(Job::Meta { key, reply }) => {
                let _ = reply.send(store.meta(&key));
                next = idle(&mut store, rx, every)?;
            }
            Some(commit @ Job::Commit { .. }) => next = Some(commit),
            None => next = idle(&mut store, rx, every)?,
        }
    }
    Ok(())
}

/// The next job, calling the store's [`Backend::keep_alive`] each `every`
/// that passes with none; `None` once the engine let go of the writer.
fn idle<D>(
    store: &mut Store,
    rx: &mut Receiver<Job<D>>,
    every: Option<Duration>,
) -> Result<Option<Job<D>>, StoreError> {
    loop {
        match handoff::receive(rx, every.map(|e| Instant::now() + e)) {
            handoff::Received::TimedOut => store.keep_alive()?,
            got => return Ok(got.into_input()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::scheduler::{Scheduler, Settings};
    use crate::store::{Location, Options};
    use crate::task::TaskSpec;

    fn scheduler_with(ids: &[&str]) -> Scheduler {
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(10), max_attempts: 3, ..Settings::default() });
        s.add_tasks(ids.iter().map(|id| TaskSpec::new(*id, "x")).collect(), None, Instant::now()).unwrap();
        s
    }

    #[test]
    fn answers_are_delivered_in_order_after_their_rows_are_written_and_a_read_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&Location::Sqlite(dir.path().into()), &Options::default()).unwrap();
        let clock = store.clock();
        let (delivered, deliveries) = channel();
        let mut writer = Writer::start(store, move |d: Vec<u32>| delivered.send(d).unwrap(), |_| {});
        let mut s = scheduler_with(&["a"]);
        for i in 0..50u32 {
            if i == 10 {
                s.add_tasks(vec![TaskSpec::new("b", "y")], None, Instant::now()).unwrap();
            }
            let changes = s.take_changes();
            let meta = [("round", i.to_string())];
            writer.commit(Rows::gather(clock, &s, &changes, &meta), vec![i]).unwrap();
        }
        // A read waits for every commit queued before it.
        assert_eq!(writer.meta("round").unwrap().as_deref(), Some("49"));
        writer.finish().unwrap();
        let order: Vec<u32> = deliveries.iter().flatten().collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
        let (tasks, _) =
            crate::store::open(&Location::Sqlite(dir.path().into()), &Options::default()).unwrap().load().unwrap();
        assert_eq!(tasks.iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn a_commit_that_fails_delivers_nothing_and_the_next_commit_returns_its_error() {
        let dir = tempfile::tempdir().unwrap();
        // Not the 5 s a hub waits: the lock below is never let go, so any wait ends the same way.
        let options = Options { busy_timeout: Duration::from_millis(50), ..Options::default() };
        let store = crate::store::open(&Location::Sqlite(dir.path().into()), &options).unwrap();
        let clock = store.clock();
        // Another connection holds the write lock: the writer's commit fails once its busy timeout passes.
        let other = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (delivered, deliveries) = channel();
        let (told, failures) = channel();
        let mut writer = Writer::start(
            store,
            move |d: Vec<u32>| delivered.send(d).unwrap(),
            move |e: &StoreError| told.send(e.to_string()).unwrap(),
        );
        let mut s = scheduler_with(&["a"]);
        let changes = s.take_changes();
        writer.commit(Rows::gather(clock, &s, &changes, &[]), vec![1]).unwrap();
        let failure = failures.recv().expect("the writer says its commit failed");
        assert!(failure.contains("locked"), "{failure}");
        // A commit queued after the failure may still be taken into the
        // channel before the thread is gone: it is never written nor delivered.
        let _ = writer.commit(None, vec![2]);
        let stopped = writer.commit(None, vec![3]).and_then(|()| writer.meta("schema_version").map(drop));
        let err = stopped.expect_err("the writer has stopped");
        assert!(err.to_string().contains("locked"), "{err}");
        let err = writer.finish().expect_err("finish says why it stopped");
        assert!(err.to_string().contains("locked"), "{err}");
        assert!(deliveries.try_iter().next().is_none(), "nothing may be delivered for a failed commit");
    }
}
