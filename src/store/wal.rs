//! The `SQLite` store's write-ahead log, synced by the store's writer
//! ([`super::Backend::split_flush`]). The connection commits with
//! `synchronous = NORMAL`: each transaction's frames are written to the log
//! and not synced. An `fdatasync` of the log then makes every transaction
//! committed before it durable, as `FULL` does at each commit, and the
//! writer acknowledges nothing before that sync. `SQLite` as built here
//! syncs with `fsync`, which also sends the log's new modification time
//! through the file system's journal at every commit; `fdatasync` does not
//! (the log's size, which finding its frames needs, it still writes). A
//! checkpoint still syncs the log before it copies pages into the
//! database, and the database after, so the database never holds what the
//! log did not.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::{Flush, StoreError};

/// The log file by its name beside `state.db`, opened without following a link.
pub struct WalFlush {
    path: PathBuf,
    /// The log as last opened, with its device and inode: `SQLite` removes
    /// the log when its last connection closes and makes a new one after.
    file: Option<(File, (u64, u64))>,
}

impl WalFlush {
    /// The log of the database at `db`; it need not exist yet.
    pub fn of(db: &Path) -> Result<Self, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        let mut flush = Self { path: PathBuf::from(name), file: None };
        flush.follow()?;
        Ok(flush)
    }

    fn failed(&self, doing: &str, e: Errno) -> StoreError {
        StoreError::Crashed(format!(
            "task store {}: cannot {doing}: {}; nothing more is acknowledged, check the disk and start the hub again",
            self.path.display(),
            std::io::Error::from(e)
        ))
    }

    /// Open the log if the name now names another file than the one held.
    /// A log made anew also has its folder synced once, so that its name
    /// survives a crash (what `SQLite` does for a log it creates itself).
    fn follow(&mut self) -> Result<(), StoreError> {
        let stat = match rustix::fs::lstat(&self.path) {
            Ok(stat) => stat,
            // No log: everything committed is in the database, which the checkpoint that removed the log synced.
            Err(Errno::NOENT) => {
                self.file = None;
                return Ok(());
            }
            Err(e) => return Err(self.failed("look at the write-ahead log", e)),
        };
        let id = (stat.st_dev, stat.st_ino);
        if self.file.as_ref().is_some_and(|(_, held)| *held == id) {
            return Ok(());
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&self.path, flags, Mode::empty())
            .map_err(|e| self.failed("open the write-ahead log", e))?;
        let folder = self.path.parent().unwrap_or(Path::new("."));
        rustix::fs::open(folder, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .and_then(|dir| rustix::fs::fsync(&dir))
            .map_err(|e| self.failed("sync the store's folder", e))?;
        self.file = Some((File::from(fd), id));
        Ok(())
    }
}

impl Flush for WalFlush {
    fn flush(&mut self) -> Result<(), StoreError> {
        self.follow()?;
        match &self.file {
            Some((file, _)) => rustix::fs::fdatasync(file).map_err(|e| self.failed("sync the write-ahead log", e)),
            None => Ok(()),
        }
    }
}
