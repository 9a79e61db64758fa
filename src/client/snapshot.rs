//! What a worker's checkout looked like when a task was granted, and what
//! changed in it by the time the worker says `done`: the files the attempt
//! touched that its task does not declare (the `changed` of a `done`).
//!
//! Git already knows which files differ from its index (it keeps their
//! stat data), so a look is one `git status --porcelain=v2 -z
//! --untracked-files=all` (tracked files that differ, and untracked ones
//! that are not ignored) plus our own size, mtime and SHA-256 of each of
//! those few files: 10,000 clean files cost git's stat pass, not a read
//! (`cargo bench --bench outside`, docs/benchmarks.md). A file clean at
//! `next` and changed at `done` shows in the second look only; one changed
//! before and changed again has another hash; one changed before and put
//! back is in the first look only; a commit made during the attempt is
//! read from `git diff` between the two commits.
//!
//! The look at `next` is kept in `.mcc/snapshots/WORKER.json`, one per
//! worker, written atomically and read back bounded without following a
//! link. A task that comes back to the same worker (rejected, answered)
//! keeps the look of its first grant, so a change that was refused is
//! still seen at the next `done`. Outside a git work tree nothing is
//! recorded and nothing is sent.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkout::GitFailed;
use crate::layout::{Layout, StateDir};

/// The most a kept look may weigh when read back: a checkout with this
/// many changed files is past what the comparison is for.
const MAX_SNAPSHOT: u64 = 64 << 20;

/// Files larger than this are compared by size and mtime alone: hashing
/// them would blow the budget, and a change nearly always moves one of
/// the two.
const MAX_HASHED: u64 = 8 << 20;

/// What one changed file looked like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// None when the file was gone (deleted from the work tree).
    pub size: Option<u64>,
    pub mtime_ns: u128,
    /// SHA-256 of the content (of the link's target text for a link), when
    /// the file is small enough to hash.
    pub sha256: Option<String>,
}

/// One look at a checkout: its commit and the files that differ from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Look {
    /// The commit checked out (`None` before the first commit).
    pub head: Option<String>,
    /// Paths relative to the git work tree's top, with `/`.
    pub files: BTreeMap<String, Seen>,
}

/// The look taken when a task was granted, as kept in `.mcc/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kept {
    task: String,
    attempt: u32,
    /// The project root relative to the git work tree's top (`""` when the same).
    prefix: String,
    /// The task's declared write files, as its grant named them.
    writes: Vec<String>,
    look: Look,
}

/// A git work tree: its top folder and where the project root sits in it.
#[derive(Debug, Clone)]
pub struct Tree {
    pub top: PathBuf,
    /// The project root relative to `top`, `/`-separated, ending in `/` unless empty.
    pub prefix: String,
}

impl Tree {
    /// The git work tree holding `root`, found by its `.git` (a folder, or
    /// the file a linked worktree has); none outside git.
    pub fn of(root: &Path) -> Option<Self> {
        let root = std::fs::canonicalize(root).ok()?;
        let top = root.ancestors().find(|dir| dir.join(".git").symlink_metadata().is_ok())?.to_path_buf();
        let rel = root.strip_prefix(&top).ok()?;
        let mut prefix =
            rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Some(Self { top, prefix })
    }

    /// What differs from git's index and commit now, within the project root.
    pub fn look(&self) -> Result<Look, String> {
        let out = self.git(&[
            "status",
            "--porcelain=v2",
            "-z",
            "--branch",
            "--untracked-files=all",
            "--no-renames",
            "--ignore-submodules=all",
            "--",
            ".",
        ])?;
        let mut look = Look::default();
        let mut items = out.split(|b| *b == 0);
        while let Some(item) = items.next() {
            let line = String::from_utf8_lossy(item);
            let path = match line.as_bytes().first() {
                Some(b'#') => {
                    if let Some(oid) = line.strip_prefix("# branch.oid ") {
                        look.head = (oid != "(initial)").then(|| oid.to_owned());
                    }
                    continue;
                }
                Some(b'1') => line.splitn(9, ' ').nth(8),
                Some(b'2') => {
                    // The original path follows as an item of its own (not with --no-renames, but be safe).
                    items.next();
                    line.splitn(10, ' ').nth(9)
                }
                Some(b'u') => line.splitn(11, ' ').nth(10),
                Some(b'?') => line.get(2..),
                _ => None,
            };
            if let Some(path) = path
                && let Some(in_root) = self.in_root(path)
            {
                let seen = seen(&self.top.join(path));
                look.files.insert(in_root.to_owned(), seen);
            }
        }
        Ok(look)
    }

    /// Files the commits between `from` and `to` changed, within the root.
    fn committed(&self, from: &str, to: &str) -> Vec<String> {
        let Ok(out) = self.git(&["diff", "--name-only", "-z", "--no-renames", from, to, "--", "."]) else {
            return Vec::new();
        };
        out.split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .filter_map(|p| self.in_root(&String::from_utf8_lossy(p)).map(str::to_owned))
            .collect()
    }

    /// A path from git (relative to the top) as the project root's, if it is inside it.
    fn in_root<'a>(&self, path: &'a str) -> Option<&'a str> {
        path.strip_prefix(self.prefix.as_str()).filter(|p| !p.is_empty())
    }

    fn git(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let root = self.top.join(self.prefix.trim_end_matches('/'));
        // Never take the index lock to refresh it: a worker's own `git add` must not find it taken.
        let options = ["--no-optional-locks", "-c", "core.quotePath=false"];
        let all: Vec<&str> = options.iter().chain(args).copied().collect();
        crate::checkout::git_bytes(&root, &all).map_err(|failed| match failed {
            GitFailed::Spawn(e) => format!("cannot run git: {e}"),
            GitFailed::Said(said) => format!("git {} failed: {said}", args[0]),
        })
    }
}

/// Size, mtime and hash of `path`, never through a link: a link is seen as
/// its target's text.
fn seen(path: &Path) -> Seen {
    let Ok(meta) = path.symlink_metadata() else { return Seen { size: None, mtime_ns: 0, sha256: None } };
    let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let sha256 = if meta.file_type().is_symlink() {
        std::fs::read_link(path).ok().map(|t| crate::checkout::sha256_hex(t.as_os_str().as_encoded_bytes()))
    } else if meta.is_file() && meta.len() <= MAX_HASHED {
        hash_file(path, meta.len())
    } else {
        None
    };
    Seen { size: Some(meta.len()), mtime_ns, sha256 }
}

/// The SHA-256 of at most `limit` bytes of a regular file opened without
/// following a link.
fn hash_file(path: &Path, limit: u64) -> Option<String> {
    let file = open_no_follow(path).ok()?;
    let mut hasher = Sha256::new();
    let mut reader = file.take(limit);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex(&hasher.finalize()))
}

/// Open a regular file for reading without following a link, and without
/// blocking on a FIFO.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{CWD, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    Ok(std::fs::File::from(rustix::fs::openat(CWD, path, flags, Mode::empty())?))
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// The files whose state differs between two looks, plus those the commits
/// between them changed: every file the attempt touched, sorted.
pub fn compare(tree: &Tree, before: &Look, after: &Look) -> Vec<String> {
    let mut changed: Vec<String> = before
        .files
        .iter()
        .filter(|(path, seen)| after.files.get(*path) != Some(seen))
        .map(|(path, _)| path.clone())
        .chain(after.files.iter().filter(|(path, _)| !before.files.contains_key(*path)).map(|(path, _)| path.clone()))
        .collect();
    if let (Some(from), Some(to)) = (&before.head, &after.head)
        && from != to
    {
        changed.extend(tree.committed(from, to));
    }
    changed.retain(|p| !p.starts_with(".mcc/") && !p.starts_with(".git/"));
    changed.sort();
    changed.dedup();
    changed
}

/// True when `path` is one of `writes` or inside one of them (a declared folder).
fn declared(path: &str, writes: &[String]) -> bool {
    writes.iter().any(|w| {
        let w = w.trim_start_matches("./").trim_end_matches('/');
        path == w || path.strip_prefix(w).is_some_and(|rest| rest.starts_with('/'))
    })
}

fn snapshot_dir(root: &Path) -> Result<StateDir, String> {
    let layout = Layout::of_root(root);
    let state = layout.open().map_err(|e| e.to_string())?;
    state.folder_or_create("snapshots").map_err(|e| e.to_string())
}

fn file_name(worker: &str) -> String {
    format!("{}.json", crate::layout::safe_file_name(worker))
}

fn read_kept(root: &Path, worker: &str) -> Option<Kept> {
    let dir = snapshot_dir(root).ok()?;
    let bytes = dir.read_bounded(&file_name(worker), MAX_SNAPSHOT).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A task was granted to `worker` in the checkout at `root`: keep what its
/// files look like, unless the look of an earlier grant of the same task is
/// kept already. Quiet on failure: the attempt is then not compared.
pub fn at_grant(root: &Path, worker: &str, task: &str, attempt: u32, writes: &[String]) {
    if read_kept(root, worker).is_some_and(|k| k.task == task && k.attempt <= attempt) {
        return;
    }
    let Some(tree) = Tree::of(root) else { return };
    let look = match tree.look() {
        Ok(look) => look,
        Err(e) => {
            tracing::debug!("mcc worker: no snapshot of {} for task {task}: {e}", root.display());
            return;
        }
    };
    let kept = Kept { task: task.to_owned(), attempt, prefix: tree.prefix.clone(), writes: writes.to_vec(), look };
    let Ok(bytes) = serde_json::to_vec(&kept) else { return };
    if let Err(e) =
        snapshot_dir(root).and_then(|dir| dir.write_atomic(&file_name(worker), &bytes).map_err(|e| e.to_string()))
    {
        tracing::debug!("mcc worker: the snapshot for task {task} was not kept: {e}");
    }
}

/// At `done`: the files `worker` changed in the checkout at `root` since
/// `task` was granted that the task does not declare as writes. Empty when
/// no look was kept for this task or outside git.
pub fn changed_since_grant(root: &Path, worker: &str, task: &str) -> Vec<String> {
    let Some(kept) = read_kept(root, worker).filter(|k| k.task == task) else { return Vec::new() };
    let Some(tree) = Tree::of(root).filter(|t| t.prefix == kept.prefix) else { return Vec::new() };
    let Ok(now) = tree.look() else { return Vec::new() };
    let mut changed = compare(&tree, &kept.look, &now);
    changed.retain(|p| !declared(p, &kept.writes));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_folder_covers_its_files_but_not_a_sibling_with_the_same_start() {
        let writes = vec!["out/".to_owned(), "./a.md".to_owned()];
        assert!(declared("out/x.md", &writes));
        assert!(declared("a.md", &writes));
        assert!(!declared("outer.md", &writes));
        assert!(!declared("b.md", &writes));
    }

    #[test]
    fn a_file_changed_again_put_back_or_new_is_named_and_an_untouched_one_is_not() {
        let at = |size, sha: &str| Seen { size: Some(size), mtime_ns: 1, sha256: Some(sha.to_owned()) };
        let before = Look {
            head: None,
            files: [("again".to_owned(), at(1, "a")), ("back".to_owned(), at(1, "b")), ("same".to_owned(), at(1, "s"))]
                .into(),
        };
        let after = Look {
            head: None,
            files: [("again".to_owned(), at(2, "a2")), ("same".to_owned(), at(1, "s")), ("new".to_owned(), at(1, "n"))]
                .into(),
        };
        let tree = Tree { top: PathBuf::from("/nowhere"), prefix: String::new() };
        assert_eq!(compare(&tree, &before, &after), ["again", "back", "new"]);
    }
}
