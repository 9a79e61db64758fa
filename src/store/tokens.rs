//! The scoped tokens' table in `state.db`: one row per token made by
//! `mcc token add`, its secret kept only as a SHA-256 hash. The hub's edge
//! owns it (the engine never reads it), through a connection of its own:
//! tokens are not task state, and a handshake must not wait behind a commit
//! of the engine's.
//!
//! The table is its own migration step, `CREATE TABLE IF NOT EXISTS` when
//! the edge opens it, apart from the task schema's version: an older mcc
//! leaves the table alone, and a hub of that older mcc refuses every token
//! in it as wrong (it knows only `.mcc/token`), which fails closed.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
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

/// The tokens of every project of a PostgreSQL database, made with the
/// store's schema: one table, so every hub of a project accepts the same tokens.
pub const POSTGRES_TABLE: &str = "
CREATE TABLE IF NOT EXISTS mcc_tokens (
    project TEXT NOT NULL,
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    scope TEXT NOT NULL,
    worker TEXT,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    expires_ms BIGINT,
    PRIMARY KEY (project, id),
    UNIQUE (project, hash)
);
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
    conn: Connection,
    path: PathBuf,
}

impl TokenStore {
    /// Open the tokens table of `state.db` in `dir`, making it if missing.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = crate::layout::Layout::at(dir).state_db();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let conn = Connection::open(&path).map_err(sql)?;
        // Per connection: a token added is on disk before it is printed, a revocation before it is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(sql)?;
        conn.execute_batch(TABLE).map_err(sql)?;
        Ok(Self { conn, path })
    }

    /// A table in memory, for tests of what reads it.
    #[cfg(test)]
    pub fn in_memory() -> Self {
        let conn = Connection::open_in_memory().expect("SQLite opens in memory");
        conn.execute_batch(TABLE).expect("the tokens table is valid SQL");
        Self { conn, path: PathBuf::from(":memory:") }
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// Every stored token, oldest first.
    pub fn all(&self) -> Result<Vec<TokenRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, hash, scope, worker, created_ms, last_used_ms, expires_ms FROM tokens ORDER BY created_ms, id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut tokens = Vec::new();
        for row in rows {
            let (id, hash, scope, worker, created_ms, last_used_ms, expires_ms) = row.map_err(|e| self.sql(e))?;
            // A scope this mcc does not know is a row it cannot enforce: refused, never guessed.
            let scope: TokenScope = serde_json::from_value(serde_json::Value::String(scope))
                .map_err(|source| StoreError::Corrupt { path: self.path.clone(), source })?;
            tokens.push(TokenRow { info: TokenInfo { id, scope, worker, created_ms, last_used_ms, expires_ms }, hash });
        }
        Ok(tokens)
    }

    /// Store a new token; `false` if its id is taken already.
    pub fn insert(&self, row: &TokenRow) -> Result<bool, StoreError> {
        let info = &row.info;
        let taken: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM tokens WHERE id = ?1", [&info.id], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))?;
        if taken.is_some() {
            return Ok(false);
        }
        self.conn
            .execute(
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
            .map_err(|e| self.sql(e))?;
        Ok(true)
    }

    /// Delete a token; `false` if there was none with that id.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute("DELETE FROM tokens WHERE id = ?1", [id]).map_err(|e| self.sql(e))?;
        Ok(n > 0)
    }

    /// Note when a token was last presented.
    pub fn touch(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE tokens SET last_used_ms = ?2 WHERE id = ?1", params![id, at_ms])
            .map_err(|e| self.sql(e))?;
        Ok(())
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
        let store = TokenStore::open(dir.path()).unwrap();
        assert!(store.insert(&row("tok-1", "ab")).unwrap());
        assert!(!store.insert(&row("tok-1", "cd")).unwrap(), "an id is never reused");
        store.touch("tok-1", 50).unwrap();
        drop(store);
        drop(tasks);
        let again = TokenStore::open(dir.path()).unwrap();
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
