//! Bringing a checkout to the accepted state of the project's work, from
//! the files the store kept: what a standby on another machine, with a clone
//! of the repository, does before it serves.

use std::path::Path;

use super::{Backend, FileKept};
use crate::checkout::{Checkout, Restored, Wanted};

/// Write into the checkout at `root`, for every path an accepted attempt
/// submitted, the content the last accepted attempt left there where the
/// file differs (removing it where that attempt deleted it); never through
/// a link, never outside the root. Returns what changed, and what could not
/// be restored (a file the store did not keep, a link on the way). An error
/// when the store or the root cannot be read at all.
pub fn restore_accepted(root: &Path, store: &mut dyn Backend) -> Result<Restored, String> {
    let files = store.accepted_files().map_err(|e| e.to_string())?;
    let mut wanted = Vec::with_capacity(files.len());
    let mut not_kept = Vec::new();
    for f in files {
        match f.kept {
            FileKept::Kept { sha256 } => wanted.push(Wanted { path: f.path, sha256: Some(sha256), size: f.size }),
            FileKept::Deleted => wanted.push(Wanted { path: f.path, sha256: None, size: 0 }),
            other => not_kept.push(format!(
                "{}: the store did not keep it ({}) at attempt {} of task {}; left as it is",
                f.path,
                other.name(),
                f.attempt,
                f.task
            )),
        }
    }
    let checkout = Checkout::open(root)?;
    let mut restored = checkout.restore(&wanted, |sha256| match store.blob(sha256) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(format!("the store lists content {sha256} but does not hold it")),
        Err(e) => Err(e.to_string()),
    });
    restored.refused.extend(not_kept);
    Ok(restored)
}

/// [`restore_accepted`] into `root` from the store of the project at
/// `project`, opened read-only (a standby's clone restored from the
/// project it takes over).
pub fn restore_from_project(root: &Path, project: &Path) -> Result<Restored, String> {
    let Some(mut store) = super::read_project(project)? else {
        return Err(format!("the project at {} has no store: nothing to restore from", project.display()));
    };
    restore_accepted(root, store.as_mut())
}
