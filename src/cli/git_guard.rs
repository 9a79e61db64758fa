//! `mcc guard install | uninstall`: a git pre-commit hook that refuses a
//! commit touching a file another worker's in-flight task reserves (declares
//! as a write file), and `mcc guard check`, what that hook runs.
//!
//! The check reads the project's store opened read-only (`SQLite` or
//! PostgreSQL), so it answers the same with the hub running or stopped. Who
//! commits is the worktree the commit is made in (`.mcc/worktrees/NAME` is
//! worker NAME's), else `MCC_WORKER`; a worker's own task's files are its to
//! commit. A hook already in place is moved aside to `pre-commit.before-mcc`,
//! runs first (its failure stops the commit), and is put back as it was by
//! `uninstall`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand};

use super::exit;
use crate::checkout::GitFailed;
use crate::scheduler::{Reservation, TaskState};

/// The file name git runs before each commit.
const HOOK: &str = "pre-commit";
/// Where a hook found at install time goes, to run first and come back at uninstall.
const CHAINED: &str = "pre-commit.before-mcc";
/// The line that marks a hook as this guard's own.
const MARK: &str = "# mcc guard: ";

/// Install or remove the git pre-commit hook that refuses commits of files other workers' tasks reserve.
#[derive(Debug, Subcommand)]
pub enum GuardCmd {
    /// Add the pre-commit hook (an existing one is kept and runs first).
    #[command(
        after_help = "The hook refuses a commit that touches a file reserved (declared write) by another worker's\ntask in flight, naming the task and its holder. Commits made in a worker's own worktree\n(.mcc/worktrees/NAME) or with MCC_WORKER=NAME may touch that worker's own task's files.\nIt reads the store, so it works with the hub stopped. Way out: `git commit --no-verify`.\n\nExample:\n  mcc guard install"
    )]
    Install(GuardArgs),
    /// Remove the hook and put back the one it moved aside, as it was.
    Uninstall(GuardArgs),
    /// What the hook runs: check the staged files against the reservations.
    #[command(hide = true)]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The project's folder (default: the nearest folder with .mcc/, here or above).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The project's root, as written into the hook at install.
    #[arg(long)]
    pub root: PathBuf,
    /// The project's folder within its repository (`git rev-parse --show-prefix`), empty at the top.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

pub fn run(cmd: GuardCmd) -> u8 {
    let result = match cmd {
        GuardCmd::Install(a) => project_root(a.dir.as_deref()).and_then(|root| install(&root)),
        GuardCmd::Uninstall(a) => project_root(a.dir.as_deref()).and_then(|root| uninstall(&root)),
        GuardCmd::Check(a) => return check(&a),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

/// The project root: `--dir`, or the nearest folder with `.mcc/` from here.
fn project_root(dir: Option<&Path>) -> Result<PathBuf, String> {
    let start = match dir {
        Some(dir) => dir.to_owned(),
        None => std::env::current_dir().map_err(|e| format!("the current folder is unreadable: {e}"))?,
    };
    let found = crate::layout::find_root(&start).ok_or_else(|| {
        format!(
            "{} is not inside an mcc project (no .mcc/ here or above); run this in the project's folder",
            start.display()
        )
    })?;
    found.canonicalize().map_err(|e| format!("{}: {e}", found.display()))
}

/// `git ARGS` in `dir` with the repository found from `dir` alone (a hook's
/// `GIT_DIR` or `GIT_INDEX_FILE` would point it elsewhere); its stdout.
fn git_in(dir: &Path, args: &[&str]) -> Result<String, String> {
    crate::checkout::git(dir, args).map_err(|failed| match failed {
        GitFailed::Spawn(e) => format!("could not run git ({e}); is git installed?"),
        GitFailed::Said(said) => format!(
            "`git {}` in {} failed: {said}; the guard needs the project to be in a git repository",
            args.join(" "),
            dir.display()
        ),
    })
}

/// The hooks folder git runs hooks from (`core.hooksPath` and a worktree's
/// common folder respected), and the project's folder within the repository.
fn hooks_and_prefix(root: &Path) -> Result<(PathBuf, String), String> {
    let answer = git_in(root, &["rev-parse", "--path-format=absolute", "--git-path", "hooks", "--show-prefix"])?;
    let mut lines = answer.lines();
    let hooks = PathBuf::from(lines.next().unwrap_or_default());
    let prefix = lines.next().unwrap_or_default().to_owned();
    Ok((hooks, prefix))
}

/// A word for `sh` that stands for `text` exactly.
fn sh_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The hook's text: the chained hook first, then `mcc guard check`. The
/// binary that installed it is called by its path, or `mcc` on the PATH
/// when it has moved since.
fn hook_text(root: &Path, prefix: &str) -> String {
    let binary = std::env::current_exe().map_or_else(|_| "mcc".to_owned(), |p| p.display().to_string());
    format!(
        "#!/bin/sh\n\
         {MARK}refuses a commit touching a file another worker's in-flight task reserves.\n\
         # Installed by `mcc guard install`; `mcc guard uninstall` removes it and puts back {CHAINED}.\n\
         chained=\"$(dirname \"$0\")/{CHAINED}\"\n\
         if [ -x \"$chained\" ]; then\n\
         \x20 \"$chained\" \"$@\" || exit $?\n\
         fi\n\
         mcc={binary}\n\
         [ -x \"$mcc\" ] || mcc=mcc\n\
         exec \"$mcc\" guard check --root {root} --prefix {prefix}\n",
        binary = sh_quoted(&binary),
        root = sh_quoted(&root.display().to_string()),
        prefix = sh_quoted(prefix),
    )
}

/// Whether the file at `path` is this guard's hook.
fn is_ours(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).lines().any(|l| l.starts_with(MARK)))
}

fn install(root: &Path) -> Result<String, String> {
    let (hooks, prefix) = hooks_and_prefix(root)?;
    std::fs::create_dir_all(&hooks).map_err(|e| format!("could not make the hooks folder {}: {e}", hooks.display()))?;
    let hook = hooks.join(HOOK);
    let chained = hooks.join(CHAINED);
    let mut text = String::new();
    let present = hook.symlink_metadata().is_ok();
    if present && !is_ours(&hook) {
        if chained.symlink_metadata().is_ok() {
            return Err(format!(
                "{} is already taken, so the hook at {} cannot be moved aside; move one of them yourself, then run `mcc guard install` again",
                chained.display(),
                hook.display()
            ));
        }
        // A rename keeps the hook byte for byte, with its mode: uninstall puts it back as it was.
        std::fs::rename(&hook, &chained)
            .map_err(|e| format!("could not move {} aside to {}: {e}", hook.display(), chained.display()))?;
        let _ = writeln!(text, "kept the hook that was there: it runs first, from {}", chained.display());
    }
    write_executable(&hook, &hook_text(root, &prefix))?;
    let verb = if present && text.is_empty() { "updated" } else { "installed" };
    Ok(format!(
        "{verb} the mcc guard at {}\n{text}a commit touching a file another worker's task reserves is refused; `mcc guard uninstall` removes it\n",
        hook.display()
    ))
}

fn write_executable(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let fail = |e: std::io::Error| format!("could not write the hook {}: {e}", path.display());
    std::fs::write(path, text).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(fail)
}

fn uninstall(root: &Path) -> Result<String, String> {
    let (hooks, _) = hooks_and_prefix(root)?;
    let hook = hooks.join(HOOK);
    let chained = hooks.join(CHAINED);
    if hook.symlink_metadata().is_ok() && !is_ours(&hook) {
        return Err(format!(
            "{} is not the mcc guard (it was replaced since); left as it is{}",
            hook.display(),
            if chained.symlink_metadata().is_ok() {
                format!(", and so is {}", chained.display())
            } else {
                String::new()
            }
        ));
    }
    let guarded = hook.symlink_metadata().is_ok();
    if chained.symlink_metadata().is_ok() {
        // Also when the guard itself was deleted by hand: the hook it kept goes back.
        std::fs::rename(&chained, &hook)
            .map_err(|e| format!("could not put {} back at {}: {e}", chained.display(), hook.display()))?;
        Ok(format!("removed the mcc guard; the hook it kept is back at {}\n", hook.display()))
    } else if !guarded {
        Ok(format!("no mcc guard at {}: nothing to remove\n", hook.display()))
    } else {
        std::fs::remove_file(&hook).map_err(|e| format!("could not remove {}: {e}", hook.display()))?;
        Ok(format!("removed the mcc guard from {}\n", hook.display()))
    }
}

/// One staged file another worker's in-flight task reserves.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    path: String,
    task: String,
    attempt: u32,
    holder: Option<String>,
    submitted: bool,
}

/// What the hook runs: exit 0 lets the commit go on, 1 refuses it with the reasons on stderr.
fn check(a: &CheckArgs) -> u8 {
    let here = std::env::current_dir().and_then(|d| d.canonicalize()).unwrap_or_default();
    let root = a.root.canonicalize().unwrap_or_else(|_| a.root.clone());
    let committer = committer(&root, &a.prefix, &here);
    if committer == Committer::Elsewhere {
        return exit::OK;
    }
    let staged = match staged_files() {
        Ok(staged) => staged,
        Err(e) => {
            eprintln!("mcc guard: {e}; the commit goes ahead unchecked");
            return exit::OK;
        }
    };
    let in_project: Vec<String> = staged
        .iter()
        .filter_map(|p| p.strip_prefix(a.prefix.as_str()))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if in_project.is_empty() {
        return exit::OK;
    }
    let refusals = match refusals(&root, &in_project, &committer) {
        Ok(refusals) => refusals,
        Err(e) => {
            eprintln!("mcc guard: {e}; the commit goes ahead unchecked");
            return exit::OK;
        }
    };
    if refusals.is_empty() {
        return exit::OK;
    }
    eprint!("{}", refusal_text(&refusals));
    exit::ERROR
}

/// Who makes a commit, found from the checkout it is made in.
#[derive(Debug, PartialEq, Eq)]
enum Committer {
    /// In a worker's own worktree (`.mcc/worktrees/NAME`, the name as a file name).
    Worktree(String),
    /// In the project's checkout: `MCC_WORKER` when set, else nobody in particular (the engineer).
    Checkout(Option<String>),
    /// Another checkout of the same repository: the project's files are not touched from there.
    Elsewhere,
}

impl Committer {
    /// Whether this committer holds a task held by `holder`: its own files are its to commit.
    fn is(&self, holder: Option<&str>) -> bool {
        match (self, holder) {
            (Self::Worktree(folder), Some(holder)) => crate::layout::safe_file_name(holder) == *folder,
            (Self::Checkout(Some(name)), Some(holder)) => name == holder,
            _ => false,
        }
    }
}

/// Who commits from `here` (the top of the checkout the hook runs in).
fn committer(root: &Path, prefix: &str, here: &Path) -> Committer {
    let worktrees = crate::layout::Layout::of_root(root).dir().join("worktrees");
    if let Ok(rest) = here.strip_prefix(&worktrees) {
        return match rest.components().next() {
            Some(name) => Committer::Worktree(name.as_os_str().to_string_lossy().into_owned()),
            None => Committer::Elsewhere,
        };
    }
    let depth = Path::new(prefix).components().count();
    if root.ancestors().nth(depth) != Some(here) {
        return Committer::Elsewhere;
    }
    Committer::Checkout(std::env::var("MCC_WORKER").ok().filter(|name| !name.is_empty()))
}

/// The paths the commit changes, as git names them from the top of the
/// checkout (renames as a deletion and an addition: both ends count).
fn staged_files() -> Result<Vec<String>, String> {
    // Run where the hook runs, with git's own GIT_INDEX_FILE: `git commit -a`
    // and `git commit PATH` stage into an index of their own.
    let out = Command::new("git")
        .args(["diff", "--cached", "--name-only", "--no-renames", "-z"])
        .output()
        .map_err(|e| format!("could not run git ({e})"))?;
    if !out.status.success() {
        return Err(format!("`git diff --cached` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

/// The staged `paths` (relative to the project root) that a task in flight
/// reserves for someone other than `committer`, read from the store.
fn refusals(root: &Path, paths: &[String], committer: &Committer) -> Result<Vec<Refusal>, String> {
    let Some(mut store) = crate::store::read_project(root)? else { return Ok(Vec::new()) };
    let tasks = store.in_flight().map_err(|e| e.to_string())?;
    let staged: Vec<(&String, Reservation)> = paths.iter().map(|p| (p, Reservation::new(p))).collect();
    let mut found = Vec::new();
    for task in &tasks {
        let submitted = match task.state() {
            TaskState::Assigned => false,
            TaskState::Submitted => true,
            _ => continue,
        };
        if committer.is(task.holder()) {
            continue;
        }
        let reserved: Vec<Reservation> = task.spec.context.output_files.iter().map(|p| Reservation::new(p)).collect();
        for (path, at) in &staged {
            if reserved.iter().any(|r| r.overlaps(at)) {
                found.push(Refusal {
                    path: (*path).clone(),
                    task: task.spec.id.clone(),
                    attempt: task.attempt(),
                    holder: task.holder().map(str::to_owned),
                    submitted,
                });
            }
        }
    }
    Ok(found)
}

fn refusal_text(refusals: &[Refusal]) -> String {
    let mut text =
        String::from("mcc guard: refused: this commit touches files another worker's task in flight reserves:\n");
    for r in refusals {
        let holder = r.holder.as_deref().unwrap_or("a worker");
        let how = if r.submitted { "submitted by" } else { "held by" };
        let _ = writeln!(text, "  {}: task `{}` (attempt {}), {how} {holder}", r.path, r.task, r.attempt);
    }
    let mut tasks: Vec<&str> = Vec::new();
    for r in refusals {
        if !tasks.contains(&r.task.as_str()) {
            tasks.push(&r.task);
        }
    }
    let cancels = tasks.iter().map(|t| format!("`mcc tasks cancel {t}`")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        text,
        "Wait until that task is accepted, or commit anyway with `git commit --no-verify`, or cancel the task with {cancels}."
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_stands_for_itself_in_sh() {
        assert_eq!(sh_quoted("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn the_committer_is_the_worktree_it_commits_in_or_nobody_in_particular() {
        let root = Path::new("/p/repo/proj");
        let worktree = |name: &str| Committer::Worktree(name.to_owned());
        assert_eq!(committer(root, "proj/", Path::new("/p/repo/proj/.mcc/worktrees/w1")), worktree("w1"));
        assert_eq!(committer(root, "", Path::new("/p/repo/proj/.mcc/worktrees/w2")), worktree("w2"));
        assert_eq!(committer(root, "proj/", Path::new("/elsewhere")), Committer::Elsewhere);
        assert_eq!(committer(root, "", Path::new("/p/repo")), Committer::Elsewhere);
        assert!(worktree("worker_1").is(Some("worker 1")));
        assert!(!worktree("w1").is(Some("w2")));
        assert!(!Committer::Checkout(None).is(Some("w1")));
    }

    #[test]
    fn a_refusal_names_the_task_the_holder_and_the_ways_out() {
        let text = refusal_text(&[Refusal {
            path: "out/a.md".into(),
            task: "t1".into(),
            attempt: 2,
            holder: Some("worker-A".into()),
            submitted: false,
        }]);
        assert!(text.contains("  out/a.md: task `t1` (attempt 2), held by worker-A\n"), "{text}");
        assert!(text.contains("`git commit --no-verify`"), "{text}");
        assert!(text.contains("`mcc tasks cancel t1`"), "{text}");
    }
}
