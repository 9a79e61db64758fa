//! Where a project's store is: `state.db` under its `.mcc/` (the default),
//! or its rows in a PostgreSQL database, keyed by a project name.
//!
//! A hub is told with `--store` / `MCC_STORE` and `--project` /
//! `MCC_PROJECT`. A hub whose store is not the default writes where it is to
//! `.mcc/store.json` (0600: the URL may carry a password), so the commands
//! that read a project's store with no hub running (`mcc status`, `mcc
//! tasks`, `mcc report`) find the same store from the checkout.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, SMALL_FILE};

/// Where a project's store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `state.db` in this state folder (a project's `.mcc/`).
    Sqlite(PathBuf),
    /// A project's rows in the PostgreSQL database at `url`.
    Postgres { url: String, project: String },
}

/// The file a hub writes in `.mcc/` when its store is elsewhere.
const STORE_FILE: &str = "store.json";

#[derive(Serialize, Deserialize)]
struct StoreFile {
    store: String,
    project: String,
}

impl Location {
    /// The store a hub or a command is told of: `store` (`--store` /
    /// `MCC_STORE`) when given, else what `.mcc/store.json` says, else the
    /// `SQLite` file in `state_dir`. `project` (`--project` / `MCC_PROJECT`)
    /// defaults to the name of the root folder.
    pub fn choose(store: Option<&str>, project: Option<&str>, state_dir: &Path) -> Result<Self, String> {
        let layout = Layout::at(state_dir);
        let default_project =
            || layout.root().file_name().map_or_else(|| "mcc".to_owned(), |n| n.to_string_lossy().into_owned());
        let Some(store) = store.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::remembered(&layout).unwrap_or_else(|| Self::Sqlite(state_dir.to_owned())));
        };
        if store == "sqlite" {
            return Ok(Self::Sqlite(state_dir.to_owned()));
        }
        if !(store.starts_with("postgres://") || store.starts_with("postgresql://")) {
            return Err(format!(
                "--store {store:?}: not a store this mcc knows; give postgres://USER@HOST:PORT/DATABASE, or `sqlite` (the default, .mcc/state.db)"
            ));
        }
        let project = project.map(str::trim).filter(|p| !p.is_empty()).map_or_else(default_project, str::to_owned);
        if project.len() > 200 || project.chars().any(char::is_control) {
            return Err(format!(
                "--project {project:?}: a project name is at most 200 characters, none of them control characters"
            ));
        }
        Ok(Self::Postgres { url: store.to_owned(), project })
    }

    /// The store of the project whose root is `root`, as the commands that
    /// read it with no hub running find it: `MCC_STORE` / `MCC_PROJECT`,
    /// else what its hub wrote in `.mcc/store.json`, else `.mcc/state.db`.
    pub fn of_root(root: &Path) -> Result<Self, String> {
        let store = std::env::var("MCC_STORE").ok();
        let project = std::env::var("MCC_PROJECT").ok();
        Self::choose(store.as_deref(), project.as_deref(), Layout::of_root(root).dir())
    }

    /// What `.mcc/store.json` says, if a hub wrote one that parses.
    fn remembered(layout: &Layout) -> Option<Self> {
        let text = layout.open().ok()?.read_bounded(STORE_FILE, SMALL_FILE).ok()?;
        let file: StoreFile = serde_json::from_slice(&text).ok()?;
        Some(Self::Postgres { url: file.store, project: file.project })
    }

    /// Write where the store is to `.mcc/store.json` in `state_dir` (0600),
    /// or remove that file when the store is the default one.
    pub fn remember(&self, state_dir: &Path) -> Result<(), String> {
        let dir = Layout::at(state_dir).open().map_err(|e| e.to_string())?;
        match self {
            Self::Sqlite(_) => match std::fs::remove_file(state_dir.join(STORE_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("{}: {e}", state_dir.join(STORE_FILE).display()))
                }
                _ => Ok(()),
            },
            Self::Postgres { url, project } => {
                let file = StoreFile { store: url.clone(), project: project.clone() };
                let bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
                dir.write_private(STORE_FILE, &bytes).map_err(|e| e.to_string())
            }
        }
    }
}

/// As messages name it: a PostgreSQL URL without its password.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(dir) => write!(f, "task store {}", Layout::at(dir).state_db().display()),
            Self::Postgres { url, project } => write!(f, "project {project:?} in {}", without_password(url)),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let shown = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    match path {
        Some(path) => format!("{scheme}://{shown}/{path}"),
        None => format!("{scheme}://{shown}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_a_message() {
        let at = Location::Postgres { url: "postgres://mcc:hunter2@db:5432/mcc".into(), project: "p".into() };
        let shown = at.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "project \"p\" in postgres://mcc:***@db:5432/mcc");
        assert_eq!(without_password("postgres://mcc@db/x"), "postgres://mcc@db/x");
    }

    #[test]
    fn the_store_is_chosen_by_flag_then_by_the_hubs_file_then_sqlite() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join(".mcc");
        std::fs::create_dir(&state).unwrap();
        assert_eq!(Location::choose(None, None, &state).unwrap(), Location::Sqlite(state.clone()));
        let chosen = Location::choose(Some("postgres://mcc@127.0.0.1:5432/mcc"), None, &state).unwrap();
        let project = root.path().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(chosen, Location::Postgres { url: "postgres://mcc@127.0.0.1:5432/mcc".into(), project });
        chosen.remember(&state).unwrap();
        assert_eq!(Location::choose(None, None, &state).unwrap(), chosen);
        assert_eq!(Location::choose(Some("sqlite"), None, &state).unwrap(), Location::Sqlite(state.clone()));
        Location::Sqlite(state.clone()).remember(&state).unwrap();
        assert_eq!(Location::choose(None, None, &state).unwrap(), Location::Sqlite(state.clone()));
        let err = Location::choose(Some("mysql://x"), None, &state).unwrap_err();
        assert!(err.contains("postgres://USER@HOST:PORT/DATABASE"), "{err}");
    }
}
