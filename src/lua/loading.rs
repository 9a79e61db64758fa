//! A hub that died while loading a workflow must not die again at every
//! start. Before a workflow runs, `.mcc/workflow-loading.json` names the
//! file and a SHA-256 of its text; once it has loaded and taken its first
//! step, the text and the modules it required go to
//! `.mcc/workflow-loaded.json` and the first record goes. A record left
//! behind names text the hub died on (a crash, or a kill mid-load): that
//! text is not run again. The hub runs the last version that loaded
//! instead, says so, and tries the file again once it is edited.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layout::{Layout, StateDir, WORKFLOW_LOADED, WORKFLOW_LOADING};

/// The most of a record read back: a workflow and its modules are far smaller.
const MOST: u64 = 16 << 20;

#[derive(Serialize, Deserialize, PartialEq)]
struct Loading {
    path: String,
    sha256: String,
}

/// The last version of a workflow that loaded: its text and its modules'.
#[derive(Serialize, Deserialize)]
pub struct Loaded {
    path: String,
    pub source: String,
    pub modules: Vec<(PathBuf, String)>,
}

/// The records of one project, in its `.mcc/` folder (opened, never followed).
pub struct Records {
    dir: StateDir,
}

impl Records {
    /// The records of the project at `root`; `None` when it has no `.mcc/`
    /// folder (a workflow checked by `mcc check`, a test without a hub) or
    /// it cannot be opened as a real folder.
    pub fn at(root: &Path) -> Option<Self> {
        Layout::of_root(root).open().ok().map(|dir| Self { dir })
    }

    /// Whether the hub died while loading exactly this text of `path`.
    pub fn died_on(&self, path: &Path, source: &str) -> bool {
        let Ok(bytes) = self.dir.read_bounded(WORKFLOW_LOADING, MOST) else { return false };
        serde_json::from_slice::<Loading>(&bytes).is_ok_and(|was| was == loading(path, source))
    }

    /// Record that `path` with this text is about to load.
    pub fn loading(&self, path: &Path, source: &str) -> Result<(), String> {
        self.write(WORKFLOW_LOADING, &loading(path, source))
    }

    /// The load ended without running the workflow (an error): nothing to remember.
    pub fn not_loaded(&self) {
        let _ = self.dir.remove(WORKFLOW_LOADING);
    }

    /// The workflow loaded and took its first step: keep its text, drop the record of loading.
    pub fn loaded(&self, path: &Path, source: &str, modules: &[(PathBuf, String)]) -> Result<(), String> {
        let loaded = Loaded { path: path.display().to_string(), source: source.to_owned(), modules: modules.to_vec() };
        self.write(WORKFLOW_LOADED, &loaded)?;
        self.dir
            .remove(WORKFLOW_LOADING)
            .map_err(|e| format!("cannot remove {}: {e}", self.dir.shown(WORKFLOW_LOADING).display()))
    }

    /// The last version of `path` that loaded, if one did.
    pub fn last_loaded(&self, path: &Path) -> Option<Loaded> {
        let bytes = self.dir.read_bounded(WORKFLOW_LOADED, MOST).ok()?;
        serde_json::from_slice::<Loaded>(&bytes).ok().filter(|l| l.path == path.display().to_string())
    }

    /// Write `name` whole or not at all.
    fn write(&self, name: &str, value: &impl Serialize) -> Result<(), String> {
        let text = serde_json::to_vec(value).map_err(|e| format!("cannot record {name}: {e}"))?;
        self.dir.write_atomic(name, &text).map_err(|e| format!("cannot record the workflow's loading: {e}"))
    }
}

fn loading(path: &Path, source: &str) -> Loading {
    use std::fmt::Write;
    let mut sha256 = String::with_capacity(64);
    for b in Sha256::digest(source.as_bytes()) {
        let _ = write!(sha256, "{b:02x}");
    }
    Loading { path: path.display().to_string(), sha256 }
}
