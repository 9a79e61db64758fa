//! A standby hub's wait: it watches its project's leader lease in the
//! PostgreSQL store and comes back when the lease is free to take (nobody
//! holds it, or its holder let it expire). It only reads the lease row
//! ([`lease::holder`]); the store engine takes the lease when the hub opens
//! it, and a standby that loses that race to another goes on waiting.

use std::time::Duration;

use super::HubError;
use crate::store::Location;
use crate::store::lease::{self, Holder};

/// The lease of `project` in the database at `url`; `None` when no hub ever
/// led it (no row, or no lease table yet).
pub fn holder(url: &str, project: &str) -> Result<Option<Holder>, String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| crate::store::with_causes(&e))?;
    match lease::holder(&mut client, project) {
        Ok(held) => Ok(held),
        // No hub ever made the lease table in this database.
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(crate::store::with_causes(&e)),
    }
}

/// "hub OWNER at ADDRESS, epoch N, 3s left", as the standby's line says it.
pub fn described(held: &Holder) -> String {
    let left = Duration::from_millis(u64::try_from(held.expires_in_ms).unwrap_or(0));
    format!("hub {}, {} left", held.describe(), crate::text::duration(left))
}

/// Wait until `project`'s lease is free to take, looking every `every`.
/// Says in one line what it waits for and who holds the lease, and again
/// only when the holder changes or the database cannot be reached.
pub async fn wait_for_lease(url: &str, project: &str, every: Duration) -> Result<(), HubError> {
    let shown = Location::Postgres { url: url.to_owned(), project: project.to_owned() }.to_string();
    let mut said: Option<(String, i64)> = None;
    let mut unreachable_said = false;
    loop {
        let (u, p) = (url.to_owned(), project.to_owned());
        let looked = tokio::task::spawn_blocking(move || holder(&u, &p))
            .await
            .unwrap_or_else(|e| Err(format!("the lease lookup panicked: {e}")));
        match looked {
            Ok(None) => return Ok(()),
            Ok(Some(held)) if held.expires_in_ms <= 0 => return Ok(()),
            Ok(Some(held)) => {
                unreachable_said = false;
                if said.as_ref() != Some(&(held.owner.clone(), held.epoch)) {
                    tracing::info!(
                        "mcc hub: standby for {shown}: waiting for its leader lease, held by {}",
                        described(&held)
                    );
                    said = Some((held.owner, held.epoch));
                }
            }
            Err(e) => {
                if !unreachable_said {
                    tracing::warn!(
                        "mcc hub: standby for {shown}: cannot read its leader lease ({e}); trying again every {}",
                        humantime::format_duration(every)
                    );
                    unreachable_said = true;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
