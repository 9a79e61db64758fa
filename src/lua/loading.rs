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

use crate::layout::Layout;

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

/// The records of one project, in its `.mcc/` folder.
pub struct Records {
    layout: Layout,
}

impl Records {
    /// The records of the project at `root`; `None` when it has no `.mcc/`
    /// folder (a workflow checked by `mcc check`, a test without a hub).
    pub fn at(root: &Path) -> Option<Self> {
        let layout = Layout::of_root(root);
        layout.dir().is_dir().then_some(Self { layout })
    }

    /// Whether the hub died while loading exactly this text of `path`.
    pub fn died_on(&self, path: &Path, source: &str) -> bool {
        let Ok(text) = std::fs::read_to_string(self.layout.workflow_loading()) else { return false };
        serde_json::from_str::<Loading>(&text).is_ok_and(|was| was == loading(path, source))
    }

    /// Record that `path` with this text is about to load.
    pub fn loading(&self, path: &Path, source: &str) -> Result<(), String> {
        write(&self.layout.workflow_loading(), &loading(path, source))
    }

    /// The load ended without running the workflow (an error): nothing to remember.
    pub fn not_loaded(&self) {
        let _ = std::fs::remove_file(self.layout.workflow_loading());
    }

    /// The workflow loaded and took its first step: keep its text, drop the record of loading.
    pub fn loaded(&self, path: &Path, source: &str, modules: &[(PathBuf, String)]) -> Result<(), String> {
        let loaded = Loaded { path: path.display().to_string(), source: source.to_owned(), modules: modules.to_vec() };
        write(&self.layout.workflow_loaded(), &loaded)?;
        let loading = self.layout.workflow_loading();
        std::fs::remove_file(&loading).map_err(|e| format!("cannot remove {}: {e}", loading.display()))
    }

    /// The last version of `path` that loaded, if one did.
    pub fn last_loaded(&self, path: &Path) -> Option<Loaded> {
        let text = std::fs::read_to_string(self.layout.workflow_loaded()).ok()?;
        serde_json::from_str::<Loaded>(&text).ok().filter(|l| l.path == path.display().to_string())
    }
}

/// Write `file` whole or not at all: to a temporary name, then renamed.
fn write(file: &Path, value: &impl Serialize) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot record {}: {e}", file.display());
    let text = serde_json::to_string(value).map_err(|e| fail(&e))?;
    let temp = file.with_extension("json.tmp");
    std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, file)).map_err(|e| fail(&e))
}

fn loading(path: &Path, source: &str) -> Loading {
    use std::fmt::Write;
    let mut sha256 = String::with_capacity(64);
    for b in Sha256::digest(source.as_bytes()) {
        let _ = write!(sha256, "{b:02x}");
    }
    Loading { path: path.display().to_string(), sha256 }
}
