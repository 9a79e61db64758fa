//! A project's checkout opened by handle, for the files a task declares:
//! the hub reads them for a remote worker and writes that worker's uploads
//! into its own checkout; the worker's clone receives the task's files.
//! Every path is checked first (relative, no `..`, not under `.mcc/` or
//! `.git/`) and walked one folder at a time from the root's handle without
//! following a link ([`StateDir`]), so a declared path can never lead a
//! read or a write out of the root, whatever links the checkout holds.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::layout::{Refused, StateDir};
use crate::wire::FileDigest;

/// The most bytes of a file one frame carries: 512 KiB is 683 KiB of
/// base64, which leaves room for the JSON around it under `wire::MAX_FRAME`
/// (1 MiB). Files travel in parts of this size, one frame each, so no
/// frame limit has to grow and a cut connection loses one part at most.
pub const PART: usize = 512 * 1024;

/// What a task's files may weigh, each way, unless the hub is started with
/// `--max-task-files-bytes`.
pub const DEFAULT_MAX_TASK_FILES_BYTES: u64 = 16 << 20;

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
}

/// The digest of `bytes` as the file `path`.
pub fn digest_of(path: &str, bytes: &[u8]) -> FileDigest {
    FileDigest { path: path.to_owned(), size: bytes.len() as u64, sha256: sha256_hex(bytes) }
}

/// The folders and file name of a declared path, or why it may not travel.
pub fn check_path(path: &str) -> Result<Vec<&str>, String> {
    if path.contains('\0') {
        return Err(format!("`{}` holds a NUL byte; a task's files are plain relative paths", path.escape_debug()));
    }
    if path.starts_with('/') || path.starts_with('\\') || Path::new(path).is_absolute() {
        return Err(format!(
            "`{path}` is an absolute path; a task's files are named relative to the project root, such as out/a.md"
        ));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(format!(
            "`{path}` leads out of its folder with `..`; name the file from the project root, without `..`"
        ));
    }
    match parts.first() {
        None => Err(format!("`{path}` names no file")),
        Some(&(".mcc" | ".git")) => {
            Err(format!("`{path}` is inside {}/, which never travels; name a file of the project", parts[0]))
        }
        Some(_) => Ok(parts),
    }
}

/// A declared file as the checkout holds it, for keeping in the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A regular file of at most the limit, read whole.
    File(Vec<u8>),
    /// Nothing at the path (or a folder on the way is missing).
    Absent,
    /// A regular file of this many bytes (at least), over the limit.
    TooLarge(u64),
    /// A symbolic link (at the path or on the way), a folder or another
    /// non-regular file: never followed, never read.
    NotRegular,
    /// A regular file that could not be read; the text says why.
    Unreadable(String),
}

/// A checkout's root, held open.
pub struct Checkout {
    root: StateDir,
}

impl Checkout {
    pub fn open(root: &Path) -> Result<Self, String> {
        StateDir::open(root)
            .map(|root| Self { root })
            .map_err(|e| format!("cannot open the project folder {}: {e}", root.display()))
    }

    /// The folder holding `path`'s file, walked from the root without
    /// following a link; `None` when a folder on the way is missing and
    /// `create` is false.
    fn folder_of(&self, path: &str, create: bool) -> Result<Option<(StateDir, String)>, String> {
        let parts = check_path(path)?;
        let (name, folders) = parts.split_last().expect("check_path gives at least one part");
        let mut dir = self.root.clone();
        for folder in folders {
            let next = if create { dir.folder_or_create(folder) } else { dir.folder(folder) };
            dir = match next {
                Ok(next) => next,
                Err(Refused::Missing(_)) => return Ok(None),
                Err(e) => return Err(refusal(path, e)),
            };
        }
        Ok(Some((dir, (*name).to_owned())))
    }

    /// The bytes of regular file `path`, if there is one; one larger than
    /// `limit` is an error naming it and the limit.
    pub fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
        let Some((dir, name)) = self.folder_of(path, false)? else { return Ok(None) };
        match dir.read_bounded(&name, limit) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Refused::Missing(_)) => Ok(None),
            Err(e) => Err(refusal(path, e)),
        }
    }

    /// What is at `path`, read when it is a regular file of at most
    /// `limit` bytes; never through a link. A path that may not travel at
    /// all (`..`, `.git/`) is not a regular file of the project.
    pub fn look(&self, path: &str, limit: u64) -> Found {
        let Ok(parts) = check_path(path) else { return Found::NotRegular };
        let (name, folders) = parts.split_last().expect("check_path gives at least one part");
        let found = |refused: Refused| match refused {
            Refused::Missing(_) => Found::Absent,
            Refused::Link(_) | Refused::Special { .. } => Found::NotRegular,
            Refused::TooLarge { size, .. } => Found::TooLarge(size),
            e @ Refused::Io { .. } => Found::Unreadable(e.to_string()),
        };
        let mut dir = self.root.clone();
        for folder in folders {
            dir = match dir.folder(folder) {
                Ok(next) => next,
                Err(e) => return found(e),
            };
        }
        match dir.read_bounded(name, limit) {
            Ok(bytes) => Found::File(bytes),
            Err(e) => found(e),
        }
    }

    /// The digest of regular file `path`, if there is one.
    pub fn digest(&self, path: &str, limit: u64) -> Result<Option<FileDigest>, String> {
        Ok(self.read(path, limit)?.map(|bytes| digest_of(path, &bytes)))
    }

    /// At most `len` bytes of regular file `path` from `offset`, and its size.
    pub fn read_part(&self, path: &str, offset: u64, len: usize) -> Result<(u64, Vec<u8>), String> {
        let missing = || format!("`{path}` is not in the hub's checkout (any more)");
        let (dir, name) = self.folder_of(path, false)?.ok_or_else(missing)?;
        let mut file = match dir.open_file(&name) {
            Ok(file) => file,
            Err(Refused::Missing(_)) => return Err(missing()),
            Err(e) => return Err(refusal(path, e)),
        };
        let io = |e: std::io::Error| format!("cannot read `{path}`: {e}");
        let size = file.metadata().map_err(io)?.len();
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = Vec::with_capacity(len.min(usize::try_from(size.saturating_sub(offset)).unwrap_or(len)));
        file.take(len as u64).read_to_end(&mut bytes).map_err(io)?;
        Ok((size, bytes))
    }

    /// Write `bytes` to `path` whole (a temporary file renamed over it),
    /// making the folders on the way; a link on the way is refused, and one
    /// at `path` itself is replaced, never written through.
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), String> {
        let (dir, name) = self.folder_of(path, true)?.expect("folders are made on the way");
        dir.write_atomic(&name, bytes).map_err(|e| refusal(path, e))
    }

    /// Remove file `path` if it is there.
    pub fn remove(&self, path: &str) -> Result<(), String> {
        let Some((dir, name)) = self.folder_of(path, false)? else { return Ok(()) };
        match dir.remove(&name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove `{path}`: {e}")),
        }
    }

    /// Why `path` cannot be written, checked before anything is: a link or
    /// a non-folder on the way, or something other than a file at its place.
    pub fn check_writable(&self, path: &str) -> Result<(), String> {
        let Some((dir, name)) = self.folder_of(path, false)? else { return Ok(()) };
        match dir.check_file(&name) {
            Ok(()) | Err(Refused::Missing(_) | Refused::Link(_)) => Ok(()),
            Err(e) => Err(refusal(path, e)),
        }
    }
}

/// What a checkout should hold at one path: the content with this SHA-256
/// (`size` bytes), or no file (`sha256` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub path: String,
    pub sha256: Option<String>,
    pub size: u64,
}

/// What [`Checkout::restore`] did, path by path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Written with the wanted content (it differed or was missing).
    pub written: Vec<String>,
    /// Removed: the wanted state is no file.
    pub removed: Vec<String>,
    /// Already as wanted.
    pub unchanged: Vec<String>,
    /// Left as they are, each with why (a link on the way, content missing).
    pub refused: Vec<String>,
}

impl Restored {
    /// Whether the checkout was changed at all.
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.removed.is_empty()
    }
}

impl Checkout {
    /// Bring each wanted path to its wanted state where it differs, never
    /// through a link and never outside the root (see [`Checkout::write`]):
    /// a file whose bytes differ is replaced whole with `content(sha256)`,
    /// a file that should not be there is removed. A path that cannot be
    /// brought there is left as it is and named in [`Restored::refused`].
    pub fn restore(&self, wanted: &[Wanted], mut content: impl FnMut(&str) -> Result<Vec<u8>, String>) -> Restored {
        let mut done = Restored::default();
        for w in wanted {
            let path = w.path.clone();
            // Read up to the wanted size: a larger file differs without being read whole.
            let found = self.look(&path, w.size);
            let outcome = match (&w.sha256, found) {
                (Some(sha256), Found::File(bytes)) if sha256_hex(&bytes) == *sha256 => Ok(&mut done.unchanged),
                (None, Found::Absent) => Ok(&mut done.unchanged),
                // Looked at with a limit of 0: any regular file is "too large", none is read.
                (None, Found::File(_) | Found::TooLarge(_)) => self.remove(&path).map(|()| &mut done.removed),
                (None, _) => Err("not a regular file; left as it is".to_owned()),
                (Some(_), Found::Unreadable(why)) => Err(why),
                (Some(sha256), _) => content(sha256)
                    .and_then(|bytes| {
                        if sha256_hex(&bytes) == *sha256 {
                            Ok(bytes)
                        } else {
                            Err(format!("the content kept as {sha256} does not match its SHA-256"))
                        }
                    })
                    .and_then(|bytes| self.write(&path, &bytes))
                    .map(|()| &mut done.written),
            };
            match outcome {
                Ok(list) => list.push(path),
                Err(why) => done.refused.push(format!("{path}: {why}")),
            }
        }
        done
    }
}

/// A refusal of the checkout, in its own words (a [`Refused`] speaks of `.mcc/`).
fn refusal(path: &str, refused: Refused) -> String {
    match refused {
        Refused::Link(at) => format!(
            "`{path}`: {} is a symbolic link, and a task's files are never read or written through a link (it could lead out of the project); replace it with a real folder or file",
            at.display()
        ),
        Refused::TooLarge { size, limit, .. } => format!(
            "`{path}` is {size} bytes, over the limit of {limit} bytes for a task's files; start the hub with a larger `--max-task-files-bytes`, or make the file smaller"
        ),
        Refused::Special { path: at, kind } => {
            format!("`{path}`: {} is {kind}; only regular files travel", at.display())
        }
        other => format!("`{path}`: {other}"),
    }
}

/// The commit a git work tree at `root` is at, read from `.git` without
/// running git: `HEAD`, then the branch it names (loose or packed).
pub fn head_commit(root: &Path) -> Option<String> {
    let dot_git = root.join(".git");
    let git_dir = if dot_git.is_file() {
        // A worktree or a submodule: `.git` names the folder.
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let dir = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
        if dir.is_absolute() { dir } else { root.join(dir) }
    } else {
        dot_git
    };
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return Some(head.to_owned());
    };
    // A worktree keeps its refs in the common folder.
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map_or_else(|| git_dir.clone(), |c| git_dir.join(c.trim()));
    for dir in [&git_dir, &common] {
        if let Ok(sha) = std::fs::read_to_string(dir.join(reference)) {
            return Some(sha.trim().to_owned());
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (sha, name) = line.split_once(' ')?;
        (name.trim() == reference).then(|| sha.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_would_leave_the_root_are_refused_with_the_reason() {
        assert!(check_path("../x").unwrap_err().contains("`..`"));
        assert!(check_path("out/../../x").unwrap_err().contains("`..`"));
        assert!(check_path("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(check_path(".mcc/token").unwrap_err().contains(".mcc/"));
        assert!(check_path("./.git/config").unwrap_err().contains(".git/"));
        assert!(check_path("").is_err());
        assert_eq!(check_path("out//a.md").unwrap(), ["out", "a.md"]);
    }

    #[test]
    fn a_link_on_the_way_is_neither_read_nor_written_through() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        let checkout = Checkout::open(root.path()).unwrap();
        assert!(checkout.read("out/secret", 100).unwrap_err().contains("symbolic link"));
        assert!(checkout.write("out/new", b"x").unwrap_err().contains("symbolic link"));
        assert!(!outside.path().join("new").exists());
        checkout.write("real/a.md", b"hello").unwrap();
        assert_eq!(checkout.digest("real/a.md", 100).unwrap().unwrap().sha256, sha256_hex(b"hello"));
        assert_eq!(checkout.read_part("real/a.md", 1, 3).unwrap(), (5, b"ell".to_vec()));
    }
}

/// Why [`git`] gave no output.
#[derive(Debug)]
pub enum GitFailed {
    /// git could not be started.
    Spawn(std::io::Error),
    /// git ran and failed; what it said on stderr.
    Said(String),
}

/// `git ARGS` run in `dir` for that folder's own repository (never the one
/// an inherited `GIT_DIR`, `GIT_WORK_TREE` or `GIT_INDEX_FILE` names, as
/// they are when a git hook runs mcc); its stdout without the last newline.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitFailed> {
    let out = git_bytes(dir, args)?;
    Ok(String::from_utf8_lossy(&out).trim_end_matches('\n').to_owned())
}

/// [`git`], its stdout as git wrote it: paths listed with `-z` need not be UTF-8.
pub fn git_bytes(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitFailed> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .output()
        .map_err(GitFailed::Spawn)?;
    if !out.status.success() {
        return Err(GitFailed::Said(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(out.stdout)
}
