//! The scoped tokens a running hub knows, and the three verbs that manage
//! them (`token_add`, `token_list`, `token_revoke`, sent by `mcc token` over
//! an engineer's connection).
//!
//! The tokens table is the edge's, not the engine's ([`crate::store::tokens`]):
//! every handshake looks a token up, synchronously, in the map held here,
//! and the store is written (on a blocking thread) before an answer says a
//! token exists or is gone. A revocation is announced on a watch channel,
//! so every open connection of that token is cut at once, not at its next
//! request.
//!
//! Secrets are hashed with SHA-256, unsalted: that is enough for a secret
//! of 256 random bits, which no dictionary or brute force reaches; slow,
//! salted hashes are for passwords people choose. Looking a hash up in a
//! map leaks at most which hashes are near the one presented, which says
//! nothing of any secret.

use std::collections::HashMap;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::store::StoreError;
use crate::store::tokens::{TokenRow, TokenStore};
use crate::task::now_ms;
use crate::wire::{ClientMsg, ServerMsg, TokenInfo, TokenScope};

/// How often a token's last use is written down: a client connects per
/// command, and one write a minute per token says enough.
const LAST_USED_EVERY_MS: i64 = 60_000;

/// The tokens of one hub.
pub struct Tokens {
    store: Mutex<TokenStore>,
    /// By the hash of the secret.
    live: RwLock<HashMap<String, Live>>,
    /// Bumped at every revocation: open connections of a token look again.
    revocations: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct Live {
    info: TokenInfo,
    /// When `last_used_ms` was last written to the store.
    written_ms: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("count", &self.read().len()).finish_non_exhaustive()
    }
}

/// What a connection that presented a scoped token holds: checked again at each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub expires_ms: Option<i64>,
}

/// The hex SHA-256 of a secret.
fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| format!("the system gave no random bytes ({e}); try again"))?;
    Ok(hex(&buffer))
}

/// A time for people: `2026-12-11T15:20:00Z`.
pub fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

impl Tokens {
    /// The tokens stored under `dir` (the state folder).
    #[cfg(test)]
    pub fn open(dir: &std::path::Path) -> Result<Arc<Self>, StoreError> {
        Self::of(TokenStore::open(dir)?)
    }

    /// The tokens of the project's store at `location`. Where every hub of
    /// the project shares them (PostgreSQL), this checkout's `.mcc/token`
    /// (`engineer`) is registered there first, by hash, so a client of
    /// another hub of the project gets in with it.
    pub fn open_at(location: &crate::store::Location, engineer: &str) -> Result<Arc<Self>, StoreError> {
        let mut store = TokenStore::open_at(location)?;
        if store.is_shared() {
            let hash = hash(engineer);
            let info = TokenInfo {
                id: format!("checkout-{}", &hash[..12]),
                scope: TokenScope::Engineer,
                worker: None,
                created_ms: now_ms(),
                last_used_ms: None,
                expires_ms: None,
            };
            // Registered already (the same checkout's hub started before): kept as it is.
            store.insert(&TokenRow { info, hash })?;
        }
        Self::of(store)
    }

    /// No tokens yet, kept in memory, for tests of what asks.
    #[cfg(test)]
    pub fn in_memory() -> Arc<Self> {
        Self::of(TokenStore::in_memory()).expect("an empty table reads")
    }

    fn of(mut store: TokenStore) -> Result<Arc<Self>, StoreError> {
        let live = store
            .all()?
            .into_iter()
            .map(|row| {
                let written_ms = row.info.last_used_ms.unwrap_or(0);
                (row.hash, Live { info: row.info, written_ms })
            })
            .collect();
        Ok(Arc::new(Self { store: Mutex::new(store), live: RwLock::new(live), revocations: watch::Sender::new(0) }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Live>> {
        self.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Live>> {
        self.live.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token whose secret this is, expired or not.
    pub fn find(&self, secret: &str) -> Option<TokenInfo> {
        self.read().get(&hash(secret)).map(|live| live.info.clone())
    }

    /// Ok while the grant's token exists and has not expired; else why not.
    pub fn still_valid(&self, grant: &Grant) -> Result<(), String> {
        if !self.read().values().any(|live| live.info.id == grant.id) {
            return Err(format!(
                "token {} was revoked; ask the engineer for a new one (`mcc token add`, run in the hub's project)",
                grant.id
            ));
        }
        match grant.expires_ms {
            Some(at) if at <= now_ms() => Err(expired(&grant.id, at)),
            _ => Ok(()),
        }
    }

    /// A receiver that changes at every revocation.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Note that token `id` was presented now; written down at most once a minute.
    pub fn used(self: &Arc<Self>, id: &str) {
        let now = now_ms();
        let due = {
            let mut live = self.write();
            let Some(entry) = live.values_mut().find(|l| l.info.id == id) else { return };
            entry.info.last_used_ms = Some(now);
            let due = now - entry.written_ms >= LAST_USED_EVERY_MS;
            if due {
                entry.written_ms = now;
            }
            due
        };
        if due {
            let tokens = self.clone();
            let id = id.to_owned();
            // Only a note for `mcc token list`: a failed write costs nothing but its accuracy.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = tokens.store().touch(&id, now) {
                    tracing::warn!("mcc hub: could not note the last use of token {id}: {e}");
                }
            });
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, TokenStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer to a token verb, or `None` for any other message (the engine's).
    pub async fn answer(self: &Arc<Self>, msg: &ClientMsg) -> Option<ServerMsg> {
        // By reference: every frame passes here, and only token verbs are copied.
        let answer = match msg {
            ClientMsg::TokenAdd { scope, worker, expires_ms } => {
                let (tokens, scope, worker, expires_ms) = (self.clone(), *scope, worker.clone(), *expires_ms);
                tokio::task::spawn_blocking(move || tokens.add(scope, worker, expires_ms)).await
            }
            ClientMsg::TokenList {} => Ok(Ok(ServerMsg::Tokens { tokens: self.list() })),
            ClientMsg::TokenRevoke { id } => {
                let (tokens, id) = (self.clone(), id.clone());
                tokio::task::spawn_blocking(move || tokens.revoke(&id)).await
            }
            _ => return None,
        };
        Some(match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => ServerMsg::error_code(error, "bad_token_request"),
            Err(e) => ServerMsg::error_code(
                format!("the hub failed while changing its tokens ({e}); run the command again"),
                "hub_error",
            ),
        })
    }

    /// Every token, oldest first, never a secret.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut tokens: Vec<TokenInfo> = self.read().values().map(|l| l.info.clone()).collect();
        tokens.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        tokens
    }

    /// Make and store a token; its secret is in the answer and nowhere else.
    fn add(&self, scope: TokenScope, worker: Option<String>, expires_ms: Option<u64>) -> Result<ServerMsg, String> {
        let worker = worker.map(|w| w.trim().to_owned()).filter(|w| !w.is_empty());
        match (scope, &worker) {
            (TokenScope::Worker, None) => {
                return Err(
                    "a worker token acts as one worker: name it, as in `mcc token add --worker worker-A`".into()
                );
            }
            (TokenScope::Engineer | TokenScope::Viewer, Some(name)) => {
                return Err(format!(
                    "a worker name ({name}) goes only with a worker token: `mcc token add --worker {name}`"
                ));
            }
            _ => {}
        }
        if expires_ms == Some(0) {
            return Err("a token that expires at once is no token: give --expires a duration such as 7d".into());
        }
        let created_ms = now_ms();
        let expires_ms = expires_ms.map(|ms| created_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)));
        let secret = random_hex(32)?;
        let mut store = self.store();
        for _ in 0..4 {
            let info = TokenInfo {
                id: format!("tok-{}", random_hex(6)?),
                scope,
                worker: worker.clone(),
                created_ms,
                last_used_ms: None,
                expires_ms,
            };
            let row = TokenRow { info: info.clone(), hash: hash(&secret) };
            if store.insert(&row).map_err(|e| format!("cannot store the token: {e}"))? {
                self.write().insert(row.hash, Live { info: info.clone(), written_ms: 0 });
                return Ok(ServerMsg::TokenAdded { secret, token: info });
            }
        }
        Err("could not find a free token id; run the command again".into())
    }

    /// Delete a token and cut its open connections.
    fn revoke(&self, id: &str) -> Result<ServerMsg, String> {
        let mut store = self.store();
        if !store.delete(id).map_err(|e| format!("cannot revoke token {id}: {e}"))? {
            return Err(format!("there is no token {id}; `mcc token list` shows the tokens there are"));
        }
        self.write().retain(|_, live| live.info.id != id);
        drop(store);
        self.revocations.send_modify(|n| *n += 1);
        Ok(ServerMsg::Ack {
            what: "token_revoke".into(),
            message: format!("token {id} is revoked: it is refused from now on, and its open connections are closed"),
            task_id: None,
            next: None,
        })
    }
}

/// The refusal of an expired token.
pub fn expired(id: &str, at: i64) -> String {
    format!(
        "token {id} expired at {}; ask the engineer for a new one (`mcc token add ... --expires 7d`, run in the hub's project)",
        when(at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_is_found_by_its_secret_until_it_is_revoked_and_its_revocation_is_announced() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let added = tokens
            .answer(&ClientMsg::TokenAdd {
                scope: TokenScope::Worker,
                worker: Some("worker-A".into()),
                expires_ms: None,
            })
            .await
            .unwrap();
        let ServerMsg::TokenAdded { secret, token } = added else { panic!("{added:?}") };
        assert_eq!(secret.len(), 64);
        let stored = std::fs::read(dir.path().join("state.db")).unwrap();
        assert!(!stored.windows(64).any(|w| w == secret.as_bytes()), "only the hash is stored");
        assert_eq!(tokens.find(&secret).unwrap().worker.as_deref(), Some("worker-A"));
        let grant = Grant { id: token.id.clone(), expires_ms: None };
        assert!(tokens.still_valid(&grant).is_ok());
        let revocations = tokens.revocations();
        let revoked = tokens.answer(&ClientMsg::TokenRevoke { id: token.id.clone() }).await.unwrap();
        assert!(matches!(revoked, ServerMsg::Ack { .. }), "{revoked:?}");
        assert!(revocations.has_changed().unwrap());
        assert!(tokens.find(&secret).is_none());
        assert!(tokens.still_valid(&grant).unwrap_err().contains("revoked"));
        let again = tokens.answer(&ClientMsg::TokenRevoke { id: token.id }).await.unwrap();
        assert!(matches!(again, ServerMsg::Error { .. }), "{again:?}");
    }

    #[tokio::test]
    async fn a_worker_token_needs_a_name_and_only_a_worker_token_takes_one() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        for msg in [
            ClientMsg::TokenAdd { scope: TokenScope::Worker, worker: None, expires_ms: None },
            ClientMsg::TokenAdd { scope: TokenScope::Viewer, worker: Some("w".into()), expires_ms: None },
            ClientMsg::TokenAdd { scope: TokenScope::Engineer, worker: None, expires_ms: Some(0) },
        ] {
            let answer = tokens.answer(&msg).await.unwrap();
            assert!(matches!(answer, ServerMsg::Error { .. }), "{msg:?}: {answer:?}");
        }
        assert!(tokens.list().is_empty());
    }

    #[test]
    fn an_expired_grant_is_refused_naming_when_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        tokens.write().insert(
            "h".into(),
            Live {
                info: TokenInfo {
                    id: "tok-1".into(),
                    scope: TokenScope::Viewer,
                    worker: None,
                    created_ms: 0,
                    last_used_ms: None,
                    expires_ms: Some(1_000),
                },
                written_ms: 0,
            },
        );
        let refusal = tokens.still_valid(&Grant { id: "tok-1".into(), expires_ms: Some(1_000) }).unwrap_err();
        assert!(refusal.contains("expired at 1970-01-01T00:00:01Z"), "{refusal}");
    }
}
