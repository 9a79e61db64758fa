//! A standby hub's wait: it watches its project's leader lease in the
//! PostgreSQL store and comes back when the lease is free to take (nobody
//! holds it, or its holder let it expire). It only reads the lease row; the
//! store engine takes the lease when the hub opens it, and a standby that
//! loses that race to another goes on waiting.

use std::time::Duration;

use super::HubError;

/// Who holds a project's leader lease, as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: String,
    pub epoch: i64,
    /// Where the holding hub serves, if it said.
    pub address: Option<String>,
    /// Time left on the lease, by the database's clock; zero when expired.
    pub left: Duration,
}

impl Holder {
    /// "hub OWNER at ADDRESS, epoch N, 3s left" for the standby's line.
    pub fn describe(&self) -> String {
        let at = self.address.as_deref().map(|a| format!(" at {a}")).unwrap_or_default();
        format!("hub {}{at}, epoch {}, {} left", self.owner, self.epoch, crate::text::duration(self.left))
    }
}

/// The lease row of `project` in the database at `url`; `None` when no hub
/// ever led it (no row, or no lease table yet).
pub fn holder(url: &str, project: &str) -> Result<Option<Holder>, String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let row = match client.query_opt(
        "SELECT owner, epoch, address, GREATEST(EXTRACT(EPOCH FROM expires_at - now()), 0)::float8 \
         FROM mcc_leaders WHERE project = $1",
        &[&project],
    ) {
        Ok(row) => row,
        // 42P01, undefined table: no hub ever took a lease in this database.
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    Ok(row.map(|row| Holder {
        owner: row.get(0),
        epoch: row.get(1),
        address: row.get(2),
        left: Duration::from_secs_f64(row.get::<_, f64>(3)),
    }))
}

/// Wait until `project`'s lease is free to take, looking every `every`.
/// Says in one line what it waits for and who holds the lease, and again
/// only when the holder changes or the database cannot be reached.
pub async fn wait_for_lease(url: &str, project: &str, every: Duration) -> Result<(), HubError> {
    let shown_url = crate::store::Location::Postgres { url: url.to_owned(), project: project.to_owned() }.to_string();
    let mut said: Option<(String, i64)> = None;
    let mut unreachable_said = false;
    loop {
        let (u, p) = (url.to_owned(), project.to_owned());
        let looked = tokio::task::spawn_blocking(move || holder(&u, &p))
            .await
            .unwrap_or_else(|e| Err(format!("the lease lookup panicked: {e}")));
        match looked {
            Ok(None) => return Ok(()),
            Ok(Some(held)) if held.left.is_zero() => return Ok(()),
            Ok(Some(held)) => {
                unreachable_said = false;
                if said.as_ref() != Some(&(held.owner.clone(), held.epoch)) {
                    tracing::info!(
                        "mcc hub: standby for {shown_url}: waiting for its leader lease, held by {}",
                        held.describe()
                    );
                    said = Some((held.owner, held.epoch));
                }
            }
            Err(e) => {
                if !unreachable_said {
                    tracing::warn!(
                        "mcc hub: standby for {shown_url}: cannot read its leader lease ({e}); trying again every {}",
                        humantime::format_duration(every)
                    );
                    unreachable_said = true;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
