//! Opening `.mcc/` without following it: every read, write, rename and
//! removal under the state folder goes through a [`StateDir`], a handle on
//! one real folder, and names one entry in it. Nothing is followed: a
//! folder or file replaced by a symbolic link is refused (`O_NOFOLLOW`), so
//! a link planted in `.mcc/` cannot make the hub write, move or delete
//! anything outside the project. Only regular files are read, opened
//! without blocking (`O_NONBLOCK`) and checked with `fstat` before a byte
//! is read, so a FIFO or a device cannot freeze or flood the reader; and
//! never more than a bound is read. Temporary files are created with
//! `O_EXCL`, so a name planted in advance is never written through.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why an entry of a state folder was not used.
#[derive(Debug)]
pub enum Refused {
    /// Nothing by that name.
    Missing(PathBuf),
    /// A symbolic link where a real file or folder belongs.
    Link(PathBuf),
    /// Not a regular file (or, where a folder belongs, not a folder).
    Special {
        path: PathBuf,
        kind: &'static str,
    },
    /// Larger than the bound: `size` bytes (at least) against `limit`.
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Refused {
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing(_))
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(path) => write!(f, "{} does not exist", path.display()),
            Self::Link(path) => write!(
                f,
                "{} is a symbolic link; mcc never follows links in its state folder: replace it with a real file or folder",
                path.display()
            ),
            Self::Special { path, kind } => {
                write!(f, "{} is {kind}, not a regular file; mcc reads only regular files: remove it", path.display())
            }
            Self::TooLarge { path, size, limit } => {
                write!(f, "{} is {size} bytes, over the limit of {limit} bytes", path.display())
            }
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for Refused {}

impl From<Refused> for std::io::Error {
    fn from(refused: Refused) -> Self {
        let kind = match &refused {
            Refused::Io { error, .. } => error.kind(),
            Refused::Missing(_) => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::InvalidData,
        };
        Self::new(kind, refused.to_string())
    }
}

/// A handle on one real folder (never a link to one); every entry is named
/// relative to it. Cheap to clone: clones share the descriptor.
#[derive(Debug, Clone)]
pub struct StateDir {
    fd: Arc<OwnedFd>,
    /// Where it was opened, for messages only: no access goes by this path.
    path: PathBuf,
}

impl StateDir {
    /// Open the folder at `path`; its last component must be a real folder,
    /// not a link to one (the folders above it are the user's business).
    pub fn open(path: &Path) -> Result<Self, Refused> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
            Ok(fd) => Ok(Self { fd: Arc::new(fd), path: path.to_owned() }),
            Err(e) => Err(folder_refusal(CWD, path, path, e)),
        }
    }

    /// The path it was opened at, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of entry `name`, for messages.
    pub fn shown(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The folder `name` in this one, not followed if a link.
    pub fn folder(&self, name: &str) -> Result<Self, Refused> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let path = self.shown(name);
        match rustix::fs::openat(&*self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(Self { fd: Arc::new(fd), path }),
            Err(e) => Err(folder_refusal(&*self.fd, Path::new(name), &path, e)),
        }
    }

    /// [`folder`](Self::folder), made first if missing.
    pub fn folder_or_create(&self, name: &str) -> Result<Self, Refused> {
        match rustix::fs::mkdirat(&*self.fd, name, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(Errno::EXIST) => self.folder(name),
            Err(e) => Err(Refused::Io { path: self.shown(name), error: e.into() }),
        }
    }

    /// What `name` is, without following it: `Ok` for a regular file.
    pub fn check_file(&self, name: &str) -> Result<(), Refused> {
        let stat = rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_refusal(self.shown(name), e))?;
        regular(self.shown(name), FileType::from_raw_mode(stat.st_mode))
    }

    /// Whether `name` exists, of any kind (a link counts, followed or not).
    pub fn has(&self, name: &str) -> bool {
        rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Whether `name` (which may run through real folders: `a/b`) is a symbolic link.
    pub fn is_link(&self, name: &str) -> bool {
        rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Symlink)
    }

    /// When regular file `name` last changed; `None` for anything else.
    pub fn modified(&self, name: &str) -> Option<SystemTime> {
        let stat = rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return None;
        }
        let since = std::time::Duration::new(
            u64::try_from(stat.st_mtime).ok()?,
            u32::try_from(stat.st_mtime_nsec).unwrap_or_default(),
        );
        SystemTime::UNIX_EPOCH.checked_add(since)
    }

    /// Read regular file `name` whole if it holds at most `limit` bytes;
    /// a larger one is refused after reading at most `limit + 1` bytes.
    pub fn read_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>, Refused> {
        let (fd, path) = self.open_to_read(name)?;
        read_open(fd, path, limit)
    }

    /// Open `name` to read, never following a link and never blocking on a
    /// FIFO; what it is (a regular file or not) is for the caller to check.
    fn open_to_read(&self, name: &str) -> Result<(OwnedFd, PathBuf), Refused> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let path = self.shown(name);
        match rustix::fs::openat(&*self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok((fd, path)),
            // O_NOFOLLOW on a link fails with ELOOP: say what it is.
            Err(Errno::LOOP) => Err(Refused::Link(path)),
            Err(e) => Err(io_refusal(path, e)),
        }
    }

    /// Open regular file `name` to read (to lock it, say), never following
    /// a link and never blocking on a FIFO.
    pub fn open_file(&self, name: &str) -> Result<std::fs::File, Refused> {
        let (fd, path) = self.open_to_read(name)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_refusal(path.clone(), e))?;
        regular(path, FileType::from_raw_mode(stat.st_mode))?;
        Ok(std::fs::File::from(fd))
    }

    /// Write `bytes` to `name` so a reader sees all of it or nothing: a
    /// fresh temporary file (a dot name, created with `O_EXCL`, so nothing
    /// planted under its name is written through), renamed over `name`
    /// (which replaces a link there rather than following it).
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), Refused> {
        self.write_atomic_mode(name, bytes, 0o666)
    }

    /// [`write_atomic`](Self::write_atomic) for a secret (a key, a token):
    /// readable and writable by its owner only from the moment it exists.
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> Result<(), Refused> {
        self.write_atomic_mode(name, bytes, 0o600)
    }

    fn write_atomic_mode(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), Refused> {
        let temp = format!(".{name}.{}.tmp", random_hex());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*self.fd, temp.as_str(), flags, Mode::from_raw_mode(mode))
            .map_err(|e| io_refusal(self.shown(&temp), e))?;
        let written =
            std::fs::File::from(fd).write_all(bytes).map_err(|error| Refused::Io { path: self.shown(&temp), error });
        let renamed = written.and_then(|()| {
            self.rename(&temp, self, name).map_err(|error| Refused::Io { path: self.shown(name), error })
        });
        if renamed.is_err() {
            let _ = rustix::fs::unlinkat(&*self.fd, temp.as_str(), AtFlags::empty());
        }
        renamed
    }

    /// Move entry `name` to `to`/`new_name`; a link is moved as a link.
    pub fn rename(&self, name: &str, to: &StateDir, new_name: &str) -> std::io::Result<()> {
        Ok(rustix::fs::renameat(&*self.fd, name, &*to.fd, new_name)?)
    }

    /// Remove entry `name` (a link itself, never what it points to).
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        Ok(rustix::fs::unlinkat(&*self.fd, name, AtFlags::empty())?)
    }

    /// Remove the empty folder `name` (a link is not a folder: refused).
    pub fn remove_folder(&self, name: &str) -> std::io::Result<()> {
        Ok(rustix::fs::unlinkat(&*self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// The names in the folder, sorted (without `.` and `..`).
    pub fn list(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&*self.fd)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Read the regular file at `path` (following links: the caller has
/// checked where it leads) if it holds at most `limit` bytes, opened
/// without blocking so a FIFO or a device is refused at once.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, Refused> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Ok(fd) => read_open(fd, path.to_owned(), limit),
        Err(e) => Err(io_refusal(path.to_owned(), e)),
    }
}

/// Check the open `fd` is a regular file within `limit`, then read it.
fn read_open(fd: OwnedFd, path: PathBuf, limit: u64) -> Result<Vec<u8>, Refused> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_refusal(path.clone(), e))?;
    regular(path.clone(), FileType::from_raw_mode(stat.st_mode))?;
    let size = u64::try_from(stat.st_size).unwrap_or_default();
    if size > limit {
        return Err(Refused::TooLarge { path, size, limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or_default());
    // One byte past the limit tells a file that grew since fstat.
    std::fs::File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| Refused::Io { path: path.clone(), error })?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(Refused::TooLarge { path, size: read.max(size), limit });
    }
    Ok(bytes)
}

fn regular(path: PathBuf, kind: FileType) -> Result<(), Refused> {
    let kind = match kind {
        FileType::RegularFile => return Ok(()),
        FileType::Symlink => return Err(Refused::Link(path)),
        FileType::Directory => "a folder",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Socket => "a socket",
        FileType::Unknown => "of an unknown kind",
    };
    Err(Refused::Special { path, kind })
}

/// Why `name` in `dir` could not be opened as a folder: a link and a
/// file are told apart from a missing entry.
fn folder_refusal<Fd: std::os::fd::AsFd>(dir: Fd, name: &Path, path: &Path, error: Errno) -> Refused {
    if error == Errno::NOENT {
        return Refused::Missing(path.to_owned());
    }
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => Refused::Link(path.to_owned()),
            FileType::Directory => Refused::Io { path: path.to_owned(), error: error.into() },
            other => match regular(path.to_owned(), other) {
                Ok(()) => Refused::Special { path: path.to_owned(), kind: "a file where a folder belongs" },
                Err(refused) => refused,
            },
        },
        Err(_) => Refused::Io { path: path.to_owned(), error: error.into() },
    }
}

fn io_refusal(path: PathBuf, error: Errno) -> Refused {
    if error == Errno::NOENT { Refused::Missing(path) } else { Refused::Io { path, error: error.into() } }
}

/// 64 random bits in hex, for temporary names.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    // Without the OS's randomness the name is still fresh enough: O_EXCL refuses a clash.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().fold(String::with_capacity(16), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_folder_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("answers")).unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let err = state.folder("answers").unwrap_err();
        assert!(matches!(err, Refused::Link(_)), "{err}");
        assert!(err.to_string().contains("answers is a symbolic link"), "{err}");
        assert!(matches!(StateDir::open(&dir.path().join("answers")), Err(Refused::Link(_))));
        assert!(state.folder("missing").unwrap_err().is_missing());
    }

    #[test]
    fn a_fifo_is_refused_at_once_and_a_large_file_unread() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let status = std::process::Command::new("mkfifo").arg(dir.path().join("pipe.json")).status().unwrap();
        assert!(status.success());
        let err = state.read_bounded("pipe.json", 10).unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        std::fs::write(dir.path().join("big.json"), vec![b'x'; 11]).unwrap();
        let err = state.read_bounded("big.json", 10).unwrap_err();
        assert!(matches!(err, Refused::TooLarge { size: 11, limit: 10, .. }), "{err}");
        assert_eq!(state.read_bounded("big.json", 11).unwrap().len(), 11);
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.json")).unwrap();
        assert!(matches!(state.read_bounded("zero.json", 10), Err(Refused::Link(_))));
        assert!(matches!(read_regular(Path::new("/dev/zero"), 10), Err(Refused::Special { kind: "a device", .. })));
    }

    #[test]
    fn writing_over_a_link_replaces_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("a.json")).unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.write_atomic("a.json", b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(state.read_bounded("a.json", 100).unwrap(), b"new");
        std::os::unix::fs::symlink(&target, dir.path().join("b.json")).unwrap();
        state.remove("b.json").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(state.list().unwrap(), ["a.json"], "no temporary file is left");
    }
}
