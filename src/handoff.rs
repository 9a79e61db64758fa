//! Handing work between the hub's threads (connections → engine → store
//! writer) without paying a sleep and a wake-up at every step.
//!
//! A thread that parks on an empty queue is woken by the next input, and on
//! a busy 2-core machine that wake-up waits for a core: 33-35 µs on average
//! for the engine and the store writer (`perf sched latency` during the
//! throughput bench, docs/benchmarks.md), several times what a request costs
//! them. Under load the next input usually comes within a few
//! microseconds, so these threads look again for a short while before they
//! park: a busy hub keeps its threads awake, an idle one parks as before.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
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

/// The next input from `rx`, waiting at most until `deadline` (for ever
/// without one).
pub fn receive<T>(rx: &Receiver<T>, deadline: Option<Instant>) -> Received<T> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(input) => return Received::Input(input),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Received::Closed,
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
        }
        if start.elapsed() >= LOOK || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::hint::spin_loop();
    }
    match deadline {
        Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
            Ok(input) => Received::Input(input),
            Err(RecvTimeoutError::Timeout) => Received::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Received::Closed,
        },
        None => rx.recv().map_or(Received::Closed, Received::Input),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use super::*;

    #[test]
    fn it_returns_an_input_a_timeout_or_the_end_of_the_senders() {
        let (tx, rx) = sync_channel(4);
        tx.send(1).unwrap();
        assert!(matches!(receive(&rx, None), Received::Input(1)));
        // Nothing comes: the deadline ends the wait, past the looking too.
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(matches!(receive(&rx, Some(deadline)), Received::TimedOut));
        assert!(Instant::now() >= deadline);
        // An input from another thread, whenever it comes, is received.
        let sender = tx.clone();
        let thread = std::thread::spawn(move || sender.send(2).unwrap());
        assert!(matches!(receive(&rx, None), Received::Input(2)));
        thread.join().unwrap();
        drop(tx);
        assert!(matches!(receive(&rx, None), Received::Closed));
    }
}
