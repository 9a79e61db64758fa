//! Handing work between the hub's threads (connections → engine → store
//! writer) without paying a sleep and a wake-up at every step. The engine's
//! queue is a tokio channel (connection tasks await room in it, they never
//! block the runtime), the store writer's a std one; both are taken the same way.
//!
//! A thread that parks on an empty queue is woken by the next input, and on
//! a busy 2-core machine that wake-up waits for a core: 33-35 µs on average
//! for the engine and the store writer (`perf sched latency` during the
//! throughput bench, docs/benchmarks.md), several times what a request costs
//! them. Under load the next input usually comes within a few
//! microseconds, so these threads look again for a short while before they
//! park: a busy hub keeps its threads awake, an idle one parks as before.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How long a thread looks for its next input before it parks: a busy
/// loop, so the core stays with it. Longer costs CPU on every idle gap;
/// shorter misses the next request of a busy hub. Measured with 4 workers
/// draining 4,000 tasks (means of 4-5 alternating rounds): looking 15-30 µs
/// 9,270-10,010 tasks/s, yielding the core while looking 8,870, parking at
/// once 8,690 (docs/benchmarks.md).
const LOOK: Duration = Duration::from_micros(20);

/// What came of waiting for the next input.
pub enum Received<T> {
    Input(T),
    /// The deadline passed first.
    TimedOut,
    /// Every sender is gone.
    Closed,
}

impl<T> Received<T> {
    pub fn into_input(self) -> Option<T> {
        match self {
            Self::Input(input) => Some(input),
            Self::TimedOut | Self::Closed => None,
        }
    }
}

/// A queue a thread takes its inputs from: a look that never waits, and a
/// wait that parks the thread.
pub trait Inbox<T> {
    /// The next input if one is queued now; `Received::TimedOut` when none is.
    fn look(&mut self) -> Received<T>;
    /// Park until the next input, the deadline (for ever without one) or the
    /// end of the senders.
    fn park(&mut self, deadline: Option<Instant>) -> Received<T>;
}

impl<T> Inbox<T> for std::sync::mpsc::Receiver<T> {
    fn look(&mut self) -> Received<T> {
        match self.try_recv() {
            Ok(input) => Received::Input(input),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Received::Closed,
            Err(std::sync::mpsc::TryRecvError::Empty) => Received::TimedOut,
        }
    }

    fn park(&mut self, deadline: Option<Instant>) -> Received<T> {
        match deadline {
            Some(d) => match self.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(input) => Received::Input(input),
                Err(RecvTimeoutError::Timeout) => Received::TimedOut,
                Err(RecvTimeoutError::Disconnected) => Received::Closed,
            },
            None => self.recv().map_or(Received::Closed, Received::Input),
        }
    }
}

/// The receiving end of a tokio channel, taken from a thread of its own
/// (not a tokio task): senders on tokio tasks `send().await` and never
/// block their runtime, and this thread parks on a runtime of its own,
/// which only keeps the deadline's timer.
pub struct TokioInbox<T> {
    rx: tokio::sync::mpsc::Receiver<T>,
    timer: tokio::runtime::Runtime,
}

impl<T> TokioInbox<T> {
    pub fn new(rx: tokio::sync::mpsc::Receiver<T>) -> std::io::Result<Self> {
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        Ok(Self { rx, timer })
    }
}

impl<T> Inbox<T> for TokioInbox<T> {
    fn look(&mut self) -> Received<T> {
        match self.rx.try_recv() {
            Ok(input) => Received::Input(input),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => Received::Closed,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => Received::TimedOut,
        }
    }

    fn park(&mut self, deadline: Option<Instant>) -> Received<T> {
        let rx = &mut self.rx;
        match deadline {
            // The timer is made inside the runtime, which drives it.
            Some(d) => match self.timer.block_on(async { tokio::time::timeout_at(d.into(), rx.recv()).await }) {
                Ok(Some(input)) => Received::Input(input),
                Ok(None) => Received::Closed,
                Err(_) => Received::TimedOut,
            },
            None => self.timer.block_on(rx.recv()).map_or(Received::Closed, Received::Input),
        }
    }
}

/// The next input from `inbox`, waiting at most until `deadline` (for ever
/// without one): looked for during [`LOOK`], then parked for.
pub fn receive<T>(inbox: &mut impl Inbox<T>, deadline: Option<Instant>) -> Received<T> {
    let start = Instant::now();
    loop {
        match inbox.look() {
            Received::TimedOut => {}
            got => return got,
        }
        if start.elapsed() >= LOOK || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::hint::spin_loop();
    }
    inbox.park(deadline)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;

    #[test]
    fn it_returns_an_input_a_timeout_or_the_end_of_the_senders() {
        let (tx, mut rx) = sync_channel(4);
        tx.send(1).unwrap();
        assert!(matches!(receive(&mut rx, None), Received::Input(1)));
        // Nothing comes: the deadline ends the wait, past the looking too.
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(matches!(receive(&mut rx, Some(deadline)), Received::TimedOut));
        assert!(Instant::now() >= deadline);
        // An input from another thread, whenever it comes, is received.
        let sender = tx.clone();
        let thread = std::thread::spawn(move || sender.send(2).unwrap());
        assert!(matches!(receive(&mut rx, None), Received::Input(2)));
        thread.join().unwrap();
        drop(tx);
        assert!(matches!(receive(&mut rx, None), Received::Closed));
    }

    #[test]
    fn a_tokio_channel_taken_from_a_thread_gives_the_same_three_outcomes() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut inbox = TokioInbox::new(rx).unwrap();
        tx.try_send(1).unwrap();
        assert!(matches!(receive(&mut inbox, None), Received::Input(1)));
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(matches!(receive(&mut inbox, Some(deadline)), Received::TimedOut));
        assert!(Instant::now() >= deadline);
        // Sent from a tokio task, which awaits room instead of blocking its thread.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let sender = tx.clone();
        let thread = std::thread::spawn(move || runtime.block_on(async move { sender.send(2).await.unwrap() }));
        assert!(matches!(receive(&mut inbox, Some(Instant::now() + Duration::from_secs(20))), Received::Input(2)));
        thread.join().unwrap();
        drop(tx);
        assert!(matches!(receive(&mut inbox, None), Received::Closed));
    }
}
