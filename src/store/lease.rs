//! The leader lease of a project in PostgreSQL: one `mcc_leaders` row per
//! project with its owner, an expiry on the database's clock and an epoch
//! that grows at every takeover. A hub serves a project only while it holds
//! that row; every write transaction of the Postgres engine renews it first
//! with [`fence`], matching on the epoch it took, so a former leader (paused,
//! partitioned) can never write after another took over: its renewal finds
//! no row, and it rolls back.
//!
//! Time is the database's (`now()`), never a hub's: two hubs whose clocks
//! disagree still agree on who holds the lease.

use std::time::Duration;

use postgres::GenericClient;

/// The lease table: made with the store's schema.
pub const TABLE: &str = "
CREATE TABLE IF NOT EXISTS mcc_leaders (
    project TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    address TEXT
);
";

/// A lease this process holds: it may write the project while the epoch is still its.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub project: String,
    pub owner: String,
    pub epoch: i64,
    pub length: Duration,
}

/// Who holds a project's lease, as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub epoch: i64,
    /// The address its hub serves at, when it said.
    pub address: Option<String>,
    /// Time left before it expires; negative once expired (anyone may take it).
    pub expires_in_ms: i64,
}

impl Holder {
    /// As messages name a holder: its owner, epoch and address.
    pub fn describe(&self) -> String {
        match &self.address {
            Some(address) => format!("{} at {address}, epoch {}", self.owner, self.epoch),
            None => format!("{}, epoch {}", self.owner, self.epoch),
        }
    }
}

fn millis(length: Duration) -> i64 {
    i64::try_from(length.as_millis()).unwrap_or(i64::MAX)
}

/// One attempt to take the lease of `project` for `owner`: it is free (no
/// row yet, or expired), so the epoch grows by one and it is ours for
/// `length`; `None` while another holds it (a standby loops on this).
pub fn acquire(
    client: &mut impl GenericClient,
    project: &str,
    owner: &str,
    length: Duration,
    address: Option<&str>,
) -> Result<Option<Held>, postgres::Error> {
    let row = client.query_opt(
        "INSERT INTO mcc_leaders (project, owner, epoch, expires_at, address)
         VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond', $4)
         ON CONFLICT (project) DO UPDATE SET owner = excluded.owner, epoch = mcc_leaders.epoch + 1,
             expires_at = excluded.expires_at, address = excluded.address
         WHERE mcc_leaders.expires_at < now()
         RETURNING epoch",
        &[&project, &owner, &millis(length), &address],
    )?;
    Ok(row.map(|r| Held { project: project.to_owned(), owner: owner.to_owned(), epoch: r.get(0), length }))
}

/// Who holds the lease of `project`; `None` when no hub ever took it.
pub fn holder(client: &mut impl GenericClient, project: &str) -> Result<Option<Holder>, postgres::Error> {
    let row = client.query_opt(
        "SELECT owner, epoch, address,
                (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint
         FROM mcc_leaders WHERE project = $1",
        &[&project],
    )?;
    Ok(row.map(|r| Holder { owner: r.get(0), epoch: r.get(1), address: r.get(2), expires_in_ms: r.get(3) }))
}

/// Renew `held` for its length if its epoch is still the project's: `false`
/// means another hub took over (fenced). Inside a write transaction this is
/// its first statement, and the row lock it takes keeps a takeover waiting
/// until the transaction ends.
pub fn fence(client: &mut impl GenericClient, held: &Held) -> Result<bool, postgres::Error> {
    let renewed = client.execute(
        "UPDATE mcc_leaders SET expires_at = now() + $3::bigint * interval '1 millisecond'
         WHERE project = $1 AND epoch = $2 AND owner = $4",
        &[&held.project, &held.epoch, &millis(held.length), &held.owner],
    )?;
    Ok(renewed == 1)
}

/// Let the lease go on a clean stop, so a standby need not wait for it to
/// expire; the epoch stays, so the next holder's is still greater.
pub fn release(client: &mut impl GenericClient, held: &Held) -> Result<(), postgres::Error> {
    client.execute(
        "UPDATE mcc_leaders SET expires_at = now() - interval '1 second'
         WHERE project = $1 AND epoch = $2 AND owner = $3",
        &[&held.project, &held.epoch, &held.owner],
    )?;
    Ok(())
}

/// This process's name as a lease owner: host, pid and a random part, so
/// two hubs never take one another's lease for their own.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    let mut random = [0u8; 4];
    // Without randomness the pid still tells two hubs of one host apart.
    let _ = getrandom::fill(&mut random);
    format!("{host}:{}:{}", std::process::id(), data_encoding::HEXLOWER.encode(&random))
}
