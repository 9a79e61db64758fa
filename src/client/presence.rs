//! Holding a worker's presence: one connection to the hub that says
//! `present` and then stays open for as long as the worker's chat lives,
//! so that the chat's end (its process killed, its stdin closed) closes the
//! socket and the hub sees it at once (docs/worker.md, "Presence"). A cut
//! connection (the hub restarting, a standby taking over) is opened again,
//! through the hub's addresses, until the chat ends.

use std::time::{Duration, Instant};

use super::{ClientError, Connection, Target};
use crate::wire::{ClientMsg, PresenceKind, ServerMsg};

/// How often the holder looks whether the chat still lives while the
/// connection is quiet: a watcher notices its agent's end within this.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to reach a hub that is down.
const MOST_PAUSE: Duration = Duration::from_secs(2);
/// The pause after a hub refused the presence (a hub before presence, a
/// refused token): asked again now and then, as the hub may be replaced.
const REFUSED_PAUSE: Duration = Duration::from_secs(30);

/// Why holding a presence stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The chat ended (`alive` said so).
    ChatEnded,
    /// The project cannot be found any more (its folder was removed): nothing to be present in.
    NoProject,
}

/// Hold `worker`'s presence while `alive()` says the chat lives: connect
/// to the hub `locate` finds (found anew each time, as a restarted hub may
/// listen elsewhere), say `present`, and wait; connect again after a cut.
/// Returns when the chat ended, or when the project is gone.
pub fn hold(
    locate: impl Fn() -> Result<Target, ClientError>,
    worker: &str,
    kind: PresenceKind,
    agent_pid: Option<u32>,
    alive: impl Fn() -> bool,
) -> Ended {
    let mut pause = Duration::from_millis(100);
    loop {
        if !alive() {
            return Ended::ChatEnded;
        }
        match locate() {
            Err(ClientError::NoProject(_)) => return Ended::NoProject,
            Err(_) => {}
            Ok(target) => {
                if let Ok(conn) = Connection::open(&target) {
                    let began = Instant::now();
                    match present(conn, worker, kind, agent_pid, &alive) {
                        Held::ChatEnded => return Ended::ChatEnded,
                        Held::Refused => pause = REFUSED_PAUSE,
                        // A presence that lasted comes back quickly after its cut.
                        Held::Cut if began.elapsed() > MOST_PAUSE => pause = Duration::from_millis(100),
                        Held::Cut => {}
                    }
                }
            }
        }
        // Backing off, not synchronising: nothing to wait on but the hub's return.
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if !alive() {
                return Ended::ChatEnded;
            }
            std::thread::sleep(LOOK_EVERY.min(until.saturating_duration_since(Instant::now())));
        }
        pause = if pause >= REFUSED_PAUSE { Duration::from_millis(100) } else { (pause * 2).min(MOST_PAUSE) };
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Held {
    ChatEnded,
    /// The connection was cut.
    Cut,
    /// The hub answered `present` with an error.
    Refused,
}

/// Say `present` on `conn` and keep it open while the chat lives.
fn present(
    mut conn: Connection,
    worker: &str,
    kind: PresenceKind,
    agent_pid: Option<u32>,
    alive: &impl Fn() -> bool,
) -> Held {
    let msg = ClientMsg::Present { worker: worker.to_owned(), agent_pid, kind };
    let limit = conn.timeout();
    match conn.request(&msg, limit) {
        Ok(ServerMsg::Ack { .. }) => {}
        // A hub before presence, a refused token, a bad name: nothing to hold.
        Ok(_) => return Held::Refused,
        Err(_) => return Held::Cut,
    }
    loop {
        match conn.receive(LOOK_EVERY) {
            // The hub's pings are answered while reading; anything else it says is not for a presence.
            Ok(_) | Err(ClientError::Timeout { .. }) => {
                if !alive() {
                    conn.close();
                    return Held::ChatEnded;
                }
            }
            Err(_) => return Held::Cut,
        }
    }
}
