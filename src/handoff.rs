//! Handing work between the hub's threads (connections → engine → store
//! writer) without paying a sleep and a wake-up at every step. The engine's
//! queue is a tokio channel (connection tasks await room in it, they never
//! block the runtime), the store writer's a std one; both are taken the same way.
//!
//! A thread that parks on an empty queue is woken by the next input, and on
//! a busy 2-core machine that wake-up waits for a core: 33-35 µs on average
//! for the engine and the store writer (`perf sched latency` during the
//! throughput bench, docs/benchmarks.md), several times what a request costs
//! them. When the next input comes within a few microseconds, a thread that
//! looks again for a short while before it parks keeps its core and skips
//! both. When it does not (one worker: the next request comes after a
//! client's round trip and an `fsync`), the looking is CPU thrown away, so
//! each thread looks only while looking has lately found something, and
//! tries again now and then to notice when it would again.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{Thread, ThreadId};
use std::time::{Duration, Instant};

/// How long a thread looks for its next input at most before it parks: a
/// busy loop, so the core stays with it. Longer costs CPU on every idle gap;
/// shorter misses the next request of a busy hub. Measured with 4 workers
/// draining 4,000 tasks (means of 4-5 alternating rounds): looking 15-30 µs
/// 9,270-10,010 tasks/s, yielding the core while looking 8,870, parking at
/// once 8,690 (docs/benchmarks.md). Looking every time cost the 1-worker
/// load 20 µs of engine and 20 µs of store writer CPU per task for nothing;
/// looking only while it pays (below) took the engine from 62-66 to 44-50 µs
/// per task there, and from 34-36 to 26-30 with 4 workers, at the same
/// tasks/s (`cargo bench --bench original`, 4 alternating rounds, load 0.2-1.3).
const LOOK: Duration = Duration::from_micros(20);
/// Looks between two readings of the clock: a look is a few atomic loads,
/// a clock reading costs as much as several, and 20 µs need no finer grain.
const LOOKS_PER_CLOCK: u32 = 16;
/// Of its last [`REMEMBERED`] spells of looking, how many must have found
/// input for a thread to look again rather than park at once.
const HITS_TO_LOOK: u32 = 2;
/// Spells of looking remembered.
const REMEMBERED: u32 = 8;
/// A thread that parks at once looks anyway every this many waits, to notice
/// when looking would pay again.
const TRY_AGAIN_EVERY: u8 = 8;

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
/// block their runtime, and this thread parks itself (`std::thread::park`),
/// woken by the channel through a waker that unparks it. No runtime of its
/// own: one would add its locks and a timer entry to every wait.
pub struct TokioInbox<T> {
    rx: tokio::sync::mpsc::Receiver<T>,
    /// Unparks the thread that parked last; made again if another thread parks.
    waker: Option<(ThreadId, Waker)>,
}

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl<T> TokioInbox<T> {
    pub fn new(rx: tokio::sync::mpsc::Receiver<T>) -> Self {
        Self { rx, waker: None }
    }

    /// The waker of the calling thread.
    fn waker(&mut self) -> Waker {
        let thread = std::thread::current();
        match &self.waker {
            Some((id, waker)) if *id == thread.id() => waker.clone(),
            _ => {
                let waker = Waker::from(Arc::new(Unpark(thread.clone())));
                self.waker = Some((thread.id(), waker.clone()));
                waker
            }
        }
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
        let waker = self.waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            // Registers the waker when nothing is queued, so a send after this unparks the thread.
            match self.rx.poll_recv(&mut cx) {
                Poll::Ready(Some(input)) => return Received::Input(input),
                Poll::Ready(None) => return Received::Closed,
                Poll::Pending => {}
            }
            // Woken early or for nothing (an unpark is kept for the next park): the loop looks again.
            match deadline {
                None => std::thread::park(),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                    _ => return Received::TimedOut,
                },
            }
        }
    }
}

/// What a thread remembers of its recent spells of looking: whether to look
/// before its next park.
#[derive(Clone, Copy)]
struct Luck {
    /// One bit per spell, newest lowest: 1 when it found input.
    found: u8,
    /// Waits parked at once since the last spell of looking.
    skipped: u8,
}

impl Luck {
    /// A thread starts as if looking had paid: a hub starts busy more often than not.
    const NEW: Self = Self { found: u8::MAX, skipped: 0 };

    fn should_look(&mut self) -> bool {
        if self.found.count_ones() >= HITS_TO_LOOK {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= TRY_AGAIN_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    fn looked(&mut self, found: bool) {
        const _: () = assert!(REMEMBERED == u8::BITS);
        self.found = (self.found << 1) | u8::from(found);
    }
}

thread_local! {
    /// Per thread: each thread that receives (engine, store writer) has its own rhythm.
    static LUCK: Cell<Luck> = const { Cell::new(Luck::NEW) };
}

/// The next input from `inbox`, waiting at most until `deadline` (for ever
/// without one): looked for during [`LOOK`] if looking has lately paid on
/// this thread, then parked for.
pub fn receive<T>(inbox: &mut impl Inbox<T>, deadline: Option<Instant>) -> Received<T> {
    match inbox.look() {
        Received::TimedOut => {}
        got => return got,
    }
    let mut luck = LUCK.get();
    if luck.should_look() {
        let got = look_for(inbox, deadline);
        luck.looked(got.is_some());
        LUCK.set(luck);
        if let Some(got) = got {
            return got;
        }
    } else {
        LUCK.set(luck);
    }
    inbox.park(deadline)
}

/// Look for input during [`LOOK`] at most, and not past `deadline`.
fn look_for<T>(inbox: &mut impl Inbox<T>, deadline: Option<Instant>) -> Option<Received<T>> {
    let until = Instant::now() + LOOK;
    let until = deadline.map_or(until, |d| d.min(until));
    loop {
        for _ in 0..LOOKS_PER_CLOCK {
            std::hint::spin_loop();
            match inbox.look() {
                Received::TimedOut => {}
                got => return Some(got),
            }
        }
        if Instant::now() >= until {
            return None;
        }
    }
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
        let mut inbox = TokioInbox::new(rx);
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

    /// An inbox that finds input at its `at`-th look of each wait (never
    /// when `None`), and always at once when parked on; it counts both.
    struct Script {
        at: Option<usize>,
        looks: usize,
        parks: usize,
    }

    impl Inbox<()> for Script {
        fn look(&mut self) -> Received<()> {
            self.looks += 1;
            if self.at.is_some_and(|at| self.looks >= at) { Received::Input(()) } else { Received::TimedOut }
        }

        fn park(&mut self, _: Option<Instant>) -> Received<()> {
            self.parks += 1;
            Received::Input(())
        }
    }

    /// Looks and parks of one wait.
    fn wait(inbox: &mut Script) -> (usize, usize) {
        (inbox.looks, inbox.parks) = (0, 0);
        assert!(matches!(receive(inbox, None), Received::Input(())));
        (inbox.looks, inbox.parks)
    }

    /// On a thread of its own: what a thread learnt stays with it.
    fn on_a_new_thread(test: impl FnOnce() + Send + 'static) {
        std::thread::spawn(test).join().unwrap();
    }

    #[test]
    fn a_thread_whose_looking_finds_nothing_parks_at_once_and_looks_again_now_and_then() {
        on_a_new_thread(|| {
            let mut empty = Script { at: None, looks: 0, parks: 0 };
            // It starts looking; each look that finds nothing makes the next less likely.
            let (looks, parks) = wait(&mut empty);
            assert!(looks > LOOKS_PER_CLOCK as usize, "it looked {looks} times");
            assert_eq!(parks, 1);
            for _ in 0..REMEMBERED {
                wait(&mut empty);
            }
            let waits: Vec<(usize, usize)> = (0..8 * usize::from(TRY_AGAIN_EVERY)).map(|_| wait(&mut empty)).collect();
            let looked = waits.iter().filter(|&&(looks, _)| looks > 1).count();
            assert_eq!(looked, 8, "one wait in {TRY_AGAIN_EVERY} looks again: {waits:?}");
            assert!(waits.iter().all(|&(_, parks)| parks == 1));
        });
    }

    #[test]
    fn a_thread_that_parks_at_once_looks_again_for_good_once_looking_finds_input_again() {
        on_a_new_thread(|| {
            let mut inbox = Script { at: None, looks: 0, parks: 0 };
            for _ in 0..2 * REMEMBERED {
                wait(&mut inbox);
            }
            assert_eq!(wait(&mut inbox), (1, 1), "it parks at once");
            // Now input comes a moment after the first look: found by looking, before any clock reading.
            inbox.at = Some(3);
            let waits: Vec<(usize, usize)> = (0..2 * usize::from(TRY_AGAIN_EVERY)).map(|_| wait(&mut inbox)).collect();
            assert!(waits.iter().filter(|&&(_, parks)| parks == 0).count() >= 2, "{waits:?}");
            for _ in 0..50 {
                assert_eq!(wait(&mut inbox), (3, 0), "it looks and parks no more");
            }
        });
    }
}
