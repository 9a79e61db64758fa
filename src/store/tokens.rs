//! The scoped tokens' table in the project's store: one row per token made
//! by `mcc token add`, its secret kept only as a SHA-256 hash. The hub's
//! edge owns it (the engine never reads it), through a connection of its
//! own: tokens are not task state, and a handshake must not wait behind a
//! commit of the engine's. In `state.db`, or in PostgreSQL as `mcc_tokens`
//! keyed by project, so every hub of a project accepts the same tokens.
//!
//! The table is its own migration step, `CREATE TABLE IF NOT EXISTS` when
//! the edge opens it, apart from the task schema's version: an older mcc
//! leaves the table alone, and a hub of that older mcc refuses every token
//! in it as wrong (it knows only `.mcc/token`), which fails closed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Location, StoreError};
use crate::wire::{TokenInfo, TokenScope};

const TABLE: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    worker TEXT,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER,
    expires_ms INTEGER
) WITHOUT ROWID;
";

/// A stored token: what is listed, and the hash its secret is found by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub info: TokenInfo,
    /// SHA-256 of the secret, lowercase hex.
    pub hash: String,
}

/// The edge's connection to the tokens table.
pub struct TokenStore {
    engine: Engine,
}

enum Engine {
    Sqlite { conn: Connection, path: PathBuf },
    Postgres { conn: super::postgres::Connection, project: String },
}

/// One stored token's columns, as both engines read them.
type Columns = (String, String, String, Option<String>, i64, Option<i64>, Option<i64>);

impl TokenStore {
    /// Open the tokens table of the store at `location`, making it if missing.
    pub fn open_at(location: &Location) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(dir) => Self::open(dir),
            Location::Postgres { url, project } => {
                let mut conn = super::postgres::Connection::open(url, project)?;
                // The hub's store made it with its schema; a database from before tokens gains it here.
                conn.run(|c| {
                    let there: bool = c.query_one("SELECT to_regclass('mcc_tokens') IS NOT NULL", &[])?.get(0);
                    if !there {
                        c.batch_execute(super::postgres::TOKENS_TABLE)?;
                    }
                    Ok(())
                })?;
                Ok(Self { engine: Engine::Postgres { conn, project: project.clone() } })
            }
        }
    }

    /// Whether the tokens are kept where every hub of the project finds them.
    pub fn is_shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres { .. })
    }

    /// Open the tokens table of `state.db` in `dir`, making it if missing.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = crate::layout::Layout::at(dir).state_db();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(sql)?;
        // Per connection: a token added is on disk before it is printed, a revocation before it is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(sql)?;
        conn.execute_batch(TABLE).map_err(sql)?;
        Ok(Self { engine: Engine::Sqlite { conn, path } })
    }

    /// A table in memory, for tests of what reads it.
    #[cfg(test)]
    pub fn in_memory() -> Self {
        let conn = Connection::open_in_memory().expect("SQLite opens in memory");
        conn.execute_batch(TABLE).expect("the tokens table is valid SQL");
        Self { engine: Engine::Sqlite { conn, path: PathBuf::from(":memory:") } }
    }

    fn corrupt(&self, source: serde_json::Error) -> StoreError {
        match &self.engine {
            Engine::Sqlite { path, .. } => StoreError::Corrupt { path: path.clone(), source },
            Engine::Postgres { conn, .. } => StoreError::CorruptRow { location: conn.shown.clone(), source },
        }
    }

    /// Every stored token, oldest first.
    pub fn all(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        let rows: Vec<Columns> = match &mut self.engine {
            Engine::Sqlite { conn, path } => {
                let sql = |source| StoreError::Sqlite { path: path.clone(), source };
                let mut stmt = conn
                    .prepare(
                        "SELECT id, hash, scope, worker, created_ms, last_used_ms, expires_ms FROM tokens ORDER BY created_ms, id",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)?
            }
            Engine::Postgres { conn, project } => {
                let project = project.clone();
                conn.run(move |c| {
                    let rows = c.query(
                        "SELECT id, hash, scope, worker, created_ms, last_used_ms, expires_ms FROM mcc_tokens
                         WHERE project = $1 ORDER BY created_ms, id",
                        &[&project],
                    )?;
                    Ok(rows
                        .iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
                        .collect())
                })?
            }
        };
        let mut tokens = Vec::new();
        for (id, hash, scope, worker, created_ms, last_used_ms, expires_ms) in rows {
            // A scope this mcc does not know is a row it cannot enforce: refused, never guessed.
            let scope: TokenScope =
                serde_json::from_value(serde_json::Value::String(scope)).map_err(|e| self.corrupt(e))?;
            tokens.push(TokenRow { info: TokenInfo { id, scope, worker, created_ms, last_used_ms, expires_ms }, hash });
        }
        Ok(tokens)
    }

    /// Store a new token; `false` if its id (or its secret) is taken already.
    pub fn insert(&mut self, row: &TokenRow) -> Result<bool, StoreError> {
        let info = &row.info;
        match &mut self.engine {
            Engine::Sqlite { conn, path } => {
                let sql = |source| StoreError::Sqlite { path: path.clone(), source };
                let taken: Option<i64> = conn
                    .query_row("SELECT 1 FROM tokens WHERE id = ?1", [&info.id], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                if taken.is_some() {
                    return Ok(false);
                }
                conn.execute(
                    "INSERT INTO tokens (id, hash, scope, worker, created_ms, last_used_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        info.id,
                        row.hash,
                        info.scope.name(),
                        info.worker,
                        info.created_ms,
                        info.last_used_ms,
                        info.expires_ms
                    ],
                )
                .map_err(sql)?;
                Ok(true)
            }
            Engine::Postgres { conn, project } => {
                let (project, row) = (project.clone(), row.clone());
                conn.run(move |c| {
                    let info = &row.info;
                    let inserted = c.execute(
                        "INSERT INTO mcc_tokens (project, id, hash, scope, worker, created_ms, last_used_ms, expires_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                        &[
                            &project,
                            &info.id,
                            &row.hash,
                            &info.scope.name(),
                            &info.worker,
                            &info.created_ms,
                            &info.last_used_ms,
                            &info.expires_ms,
                        ],
                    )?;
                    Ok(inserted == 1)
                })
            }
        }
    }

    /// Delete a token; `false` if there was none with that id.
    pub fn delete(&mut self, id: &str) -> Result<bool, StoreError> {
        match &mut self.engine {
            Engine::Sqlite { conn, path } => {
                let n = conn
                    .execute("DELETE FROM tokens WHERE id = ?1", [id])
                    .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
                Ok(n > 0)
            }
            Engine::Postgres { conn, project } => {
                let (project, id) = (project.clone(), id.to_owned());
                conn.run(move |c| {
                    Ok(c.execute("DELETE FROM mcc_tokens WHERE project = $1 AND id = $2", &[&project, &id])? > 0)
                })
            }
        }
    }

    /// Note when a token was last presented.
    pub fn touch(&mut self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        match &mut self.engine {
            Engine::Sqlite { conn, path } => {
                conn.execute("UPDATE tokens SET last_used_ms = ?2 WHERE id = ?1", params![id, at_ms])
                    .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
                Ok(())
            }
            Engine::Postgres { conn, project } => {
                let (project, id) = (project.clone(), id.to_owned());
                conn.run(move |c| {
                    c.execute(
                        "UPDATE mcc_tokens SET last_used_ms = $3 WHERE project = $1 AND id = $2",
                        &[&project, &id, &at_ms],
                    )?;
                    Ok(())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, hash: &str) -> TokenRow {
        TokenRow {
            info: TokenInfo {
                id: id.into(),
                scope: TokenScope::Worker,
                worker: Some("worker-A".into()),
                created_ms: 1,
                last_used_ms: None,
                expires_ms: Some(99),
            },
            hash: hash.into(),
        }
    }

    #[test]
    fn a_token_is_stored_by_hash_and_read_back_after_reopening_beside_the_task_store() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = super::super::sqlite::SqliteStore::open(dir.path()).unwrap();
        let mut store = TokenStore::open(dir.path()).unwrap();
        assert!(store.insert(&row("tok-1", "ab")).unwrap());
        assert!(!store.insert(&row("tok-1", "cd")).unwrap(), "an id is never reused");
        store.touch("tok-1", 50).unwrap();
        drop(store);
        drop(tasks);
        let mut again = TokenStore::open(dir.path()).unwrap();
        let mut expected = row("tok-1", "ab");
        expected.info.last_used_ms = Some(50);
        assert_eq!(again.all().unwrap(), vec![expected]);
        assert!(again.delete("tok-1").unwrap());
        assert!(!again.delete("tok-1").unwrap());
        assert!(again.all().unwrap().is_empty());
        // The task store still opens on a file with the tokens table in it.
        super::super::sqlite::SqliteStore::open(dir.path()).unwrap();
    }
}
