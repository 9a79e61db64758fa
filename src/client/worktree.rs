//! A worker's own git worktree (`mcc worker next --worktree`): a folder of
//! its own, `.mcc/worktrees/NAME`, where two workers can never write over
//! each other. Its files reach the project's checkout the way a remote
//! clone's do ([`super::transfer`]): the declared read and write files come
//! from the hub at a grant, the declared write files go up at `done` and the
//! hub writes them only when the attempt passes its fence, all or none.
//!
//! Each grant of a task other than the one the worktree last started from
//! brings it to the checkout's commit (`git reset --hard`, `git clean -fd`:
//! what the worktree held beyond it is dropped), then the task's files as
//! the hub's checkout holds them (its accepted work not yet committed),
//! which are committed there on a detached HEAD as the attempt's base. At
//! `done`, every file that differs from that base (in the work tree or in
//! commits made since) and is not a declared write file is `changed`, known
//! exactly: nobody else works there.
//!
//! The worktree stays while the worker does; `mcc worker leave` removes it.

use std::path::{Path, PathBuf};

use crate::checkout::GitFailed;
use crate::layout::Layout;
use crate::scheduler::Reservation;

/// The folder of `.mcc/` holding the worktrees.
const WORKTREES: &str = "worktrees";

/// One worker's worktree.
#[derive(Debug, Clone)]
pub struct Worktree {
    /// `.mcc/worktrees/NAME`: the worktree's top.
    top: PathBuf,
    /// The project's root within the repository (`""`, or `sub/`).
    prefix: String,
    /// What the worktree last started from: `TASK ATTEMPT BASE` and the task's write files, as JSON.
    grant_file: PathBuf,
}

/// What a grant left in the grant file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Started {
    task: String,
    attempt: u32,
    /// The commit of the worktree holding the task's files as granted.
    base: String,
    /// The task's declared write files.
    writes: Vec<String>,
}

/// `git ARGS` in `dir`; its stdout, or what it said.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    crate::checkout::git(dir, args).map_err(|failed| match failed {
        GitFailed::Spawn(e) => format!("could not run git ({e}); worktree mode needs git"),
        GitFailed::Said(said) => format!("`git {}` in {} failed: {said}", args.join(" "), dir.display()),
    })
}

impl Worktree {
    fn at(root: &Path, worker: &str, prefix: String) -> Self {
        let dir = Layout::of_root(root).dir().join(WORKTREES);
        let name = crate::layout::safe_file_name(worker);
        Self { top: dir.join(&name), prefix, grant_file: dir.join(format!("{name}.grant")) }
    }

    /// The folder the worker works in: the project's root within its worktree.
    pub fn folder(&self) -> PathBuf {
        self.top.join(self.prefix.trim_end_matches('/'))
    }

    /// `worker`'s worktree of the project at `root`, when it has one.
    pub fn existing(root: &Path, worker: &str) -> Option<Self> {
        let found = Self::at(root, worker, String::new());
        if !found.top.join(".git").is_file() {
            return None;
        }
        let prefix = git(root, &["rev-parse", "--show-prefix"]).ok()?;
        Some(Self { prefix, ..found })
    }

    /// `worker`'s worktree, made at the checkout's commit when it has none yet.
    pub fn open_or_add(root: &Path, worker: &str) -> Result<Self, String> {
        if let Some(found) = Self::existing(root, worker) {
            return Ok(found);
        }
        let prefix = git(root, &["rev-parse", "--show-prefix"])
            .map_err(|e| format!("{e}; worktree mode needs the project to be in a git repository"))?;
        let head = git(root, &["rev-parse", "--verify", "--quiet", "HEAD"]).map_err(|_| {
            "the project's repository has no commit yet, and a worktree starts from one: commit once, then run this again"
                .to_owned()
        })?;
        let made = Self::at(root, worker, prefix);
        let state = Layout::of_root(root).open().map_err(|e| e.to_string())?;
        // Made through a handle that follows no link: the worktree lands inside `.mcc/`, nowhere else.
        state.folder_or_create(WORKTREES).map_err(|e| e.to_string())?;
        let top = made.top.display().to_string();
        git(root, &["worktree", "add", "--detach", "--quiet", &top, &head])?;
        Ok(made)
    }

    fn started(&self) -> Option<Started> {
        let dir = crate::layout::StateDir::open(self.grant_file.parent()?).ok()?;
        let bytes = dir.read_bounded(self.grant_file.file_name()?.to_str()?, crate::layout::SMALL_FILE).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// A task was granted: true when the worktree starts it afresh (it last
    /// started from another task), after bringing it to the checkout's
    /// commit; false when it goes on with this task's work.
    pub fn before_grant(&self, root: &Path, task: &str) -> Result<bool, String> {
        if self.started().is_some_and(|s| s.task == task) {
            return Ok(false);
        }
        let head = git(root, &["rev-parse", "--verify", "--quiet", "HEAD"])
            .map_err(|_| "the project's repository has no commit: commit once, then run this again".to_owned())?;
        git(&self.top, &["reset", "--quiet", "--hard", &head])?;
        git(&self.top, &["clean", "--quiet", "-d", "--force"])?;
        Ok(true)
    }

    /// The task's files are here as granted: commit them as the attempt's
    /// base (hooks off: it is mcc's own commit) and remember it.
    pub fn after_grant(&self, task: &str, attempt: u32, writes: Vec<String>) -> Result<(), String> {
        git(&self.top, &["add", "--all"])?;
        if git(&self.top, &["diff", "--cached", "--quiet"]).is_err() {
            let message = format!("mcc: the project's files for task {task}, attempt {attempt}");
            git(
                &self.top,
                &[
                    "-c",
                    "user.name=mcc",
                    "-c",
                    "user.email=mcc@localhost",
                    "-c",
                    "commit.gpgsign=false",
                    "commit",
                    "--quiet",
                    "--no-verify",
                    "-m",
                    &message,
                ],
            )?;
        }
        let base = git(&self.top, &["rev-parse", "HEAD"])?;
        let started = Started { task: task.to_owned(), attempt, base, writes };
        let bytes = serde_json::to_vec(&started).map_err(|e| e.to_string())?;
        let keep = |dir: &Path, name: &str| {
            crate::layout::StateDir::open(dir).and_then(|dir| dir.write_atomic(name, &bytes)).map_err(|e| e.to_string())
        };
        match (self.grant_file.parent(), self.grant_file.file_name().and_then(|n| n.to_str())) {
            (Some(dir), Some(name)) => keep(dir, name),
            _ => Err(format!("{} is no file name", self.grant_file.display())),
        }
    }

    /// At `done`: the files of the project changed here since `task`'s
    /// base that it does not declare as writes, sorted, relative to the root.
    pub fn changed(&self, task: &str) -> Vec<String> {
        let Some(started) = self.started().filter(|s| s.task == task) else { return Vec::new() };
        let mut paths = Vec::new();
        if let Ok(status) = git(&self.top, &["status", "--porcelain", "-z", "--untracked-files=all", "--no-renames"]) {
            paths.extend(status.split('\0').filter_map(|item| item.get(3..)).map(str::to_owned));
        }
        if let Ok(committed) = git(&self.top, &["diff", "--name-only", "-z", "--no-renames", &started.base, "HEAD"]) {
            paths.extend(committed.split('\0').map(str::to_owned));
        }
        let writes: Vec<Reservation> = started.writes.iter().map(|w| Reservation::new(w)).collect();
        let mut changed: Vec<String> = paths
            .iter()
            .filter_map(|p| p.strip_prefix(self.prefix.as_str()))
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let at = Reservation::new(p);
                !writes.iter().any(|w| at.path().starts_with(w.path()))
            })
            .map(str::to_owned)
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }

    /// Remove the worktree (its work is dropped) and what it last started from.
    pub fn remove(self, root: &Path) -> Result<(), String> {
        let top = self.top.display().to_string();
        git(root, &["worktree", "remove", "--force", &top])?;
        let _ = std::fs::remove_file(&self.grant_file);
        Ok(())
    }
}
