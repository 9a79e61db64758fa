//! The project's `.mcc/` folder: every path in it, the format of the hub's
//! discovery file (`hub.json`) and of the file transport's request files.
//! The hub, the client commands, the store and the command records all
//! name their files through [`Layout`], so the two sides of a file agree
//! by construction.
//!
//! ```text
//! ROOT/.mcc/.gitignore          `*`: nothing of the state folder goes into git
//!           state.db            the store (with SQLite's -wal and -shm)
//!           hub.json            where the running hub listens (HubFile)
//!           hub.lock            held by the running hub for its whole life
//!           token               the project's access token (0600)
//!           tls/cert.pem key.pem  the hub's self-signed certificate and key (0600)
//!           remote.json         in a clone: the hub it joined (RemoteFile)
//!           remote-token        in a clone: the token it joined with (0600)
//!           reports/            report files; rejected/ beside each folder
//!           requests/ answers/  the file transport (ID.json each)
//!           grants/WORKER       the last grant shown to a worker
//!           tasks/TASK.md|json  task bodies too long to print; a runner's task
//!           commands/PGID       records of running command groups
//!           logs/NAME.log       workers spawned by `mcc run --spawn`
//!           progress-cpu        the progress meter's figures
//!           page-port           the live page's port, kept for the next start
//!           workflow-loading.json  the workflow text being loaded (a crash leaves it)
//!           workflow-loaded.json   the workflow text that last loaded, with its modules
//! ROOT/tmp/coordination/reports/  old clients' report folder
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

mod state_dir;
pub use state_dir::{Refused, StateDir, read_regular};

use serde::{Deserialize, Serialize};

use crate::wire::ClientMsg;

/// The most read of a file mcc writes itself in `.mcc/` (the token, hub.json,
/// a grant, a command record): each is a line or two.
pub const SMALL_FILE: u64 = 64 * 1024;

/// In the state folder of a joined clone: the hub it joined ([`RemoteFile`]).
pub const REMOTE_FILE: &str = "remote.json";
/// In the state folder of a joined clone: the token it joined with.
pub const REMOTE_TOKEN: &str = "remote-token";

/// The state folder's name under a project root.
pub const DIR: &str = ".mcc";
/// In the state folder: what keeps the whole folder out of git.
pub const GITIGNORE: &str = ".gitignore";
/// In the state folder: the workflow file and text being loaded, until it has taken its first step.
pub const WORKFLOW_LOADING: &str = "workflow-loading.json";
/// In the state folder: the workflow text (and its modules') that last loaded.
pub const WORKFLOW_LOADED: &str = "workflow-loaded.json";
/// In the state folder: the live page's port, taken again at the next start if free.
pub const PAGE_PORT: &str = "page-port";

/// The paths of one project's `.mcc/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The state folder of the project at `root` (`ROOT/.mcc`).
    pub fn of_root(root: &Path) -> Self {
        Self { dir: root.join(DIR) }
    }

    /// A state folder given as it is (the store and the command records
    /// are handed their folder).
    pub fn at(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// Make the state folder and its reports folder if missing, and keep
    /// the folder out of git: `.gitignore` holding `*` (the token, the store
    /// and the hub's address must never be committed). A folder made by an
    /// older mcc gets the file too; one already there is left as it is.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.reports())?;
        let state = self.open().map_err(std::io::Error::from)?;
        if !state.has(GITIGNORE) {
            state.write_atomic(GITIGNORE, b"*\n").map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// A handle on the state folder that follows no link (see [`StateDir`]).
    pub fn open(&self) -> Result<StateDir, Refused> {
        StateDir::open(&self.dir)
    }

    /// Refuse a state folder that is, or holds where its own folders and
    /// files belong, a symbolic link: the hub would write, move or delete
    /// through it, outside the project. Missing entries are fine (they are
    /// made later, as real ones).
    pub fn refuse_links(&self) -> Result<(), Refused> {
        let state = match self.open() {
            Err(e) if e.is_missing() => return Ok(()),
            other => other?,
        };
        let names = [
            "reports",
            "reports/rejected",
            "requests",
            "requests/rejected",
            "answers",
            "grants",
            "tasks",
            "commands",
            "logs",
            "state.db",
            "state.db-wal",
            "state.db-shm",
            "hub.json",
            "hub.lock",
            "token",
            "progress-cpu",
            "tls",
            "tls/cert.pem",
            "tls/key.pem",
            "remote.json",
            "remote-token",
            "presence",
            PAGE_PORT,
        ];
        if let Some(link) = names.iter().find(|name| state.is_link(name)) {
            return Err(Refused::Link(self.dir.join(link)));
        }
        let old = self.old_reports();
        for folder in [old.clone(), Self::rejected(&old)] {
            if folder.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(Refused::Link(folder));
            }
        }
        Ok(())
    }

    /// The state folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The project root the folder belongs to.
    pub fn root(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    pub fn state_db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    pub fn hub_file(&self) -> PathBuf {
        self.dir.join("hub.json")
    }

    pub fn hub_lock(&self) -> PathBuf {
        self.dir.join("hub.lock")
    }

    pub fn token(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The token in `token`, if readable and not blank.
    pub fn read_token(&self) -> Option<String> {
        let token = self.open().ok()?.read_bounded("token", SMALL_FILE).ok()?;
        let token = String::from_utf8(token).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// In a clone that joined a hub elsewhere (`mcc join`): where it is and how to trust it.
    pub fn remote_file(&self) -> PathBuf {
        self.dir.join(REMOTE_FILE)
    }

    /// In a joined clone: the token it presents to that hub (0600).
    pub fn remote_token(&self) -> PathBuf {
        self.dir.join(REMOTE_TOKEN)
    }

    /// What `remote.json` says, if `mcc join` wrote one that parses.
    pub fn read_remote_file(&self) -> Option<RemoteFile> {
        let text = self.open().ok()?.read_bounded(REMOTE_FILE, SMALL_FILE).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The token in `remote-token`, if readable and not blank.
    pub fn read_remote_token(&self) -> Option<String> {
        let token = self.open().ok()?.read_bounded(REMOTE_TOKEN, SMALL_FILE).ok()?;
        let token = String::from_utf8(token).ok()?;
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// What `hub.json` says, if a hub wrote one that parses.
    pub fn read_hub_file(&self) -> Option<HubFile> {
        let text = self.open().ok()?.read_bounded("hub.json", SMALL_FILE).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn reports(&self) -> PathBuf {
        self.dir.join("reports")
    }

    /// Old clients' report folder, under the root rather than `.mcc/`.
    pub fn old_reports(&self) -> PathBuf {
        self.root().join("tmp").join("coordination").join("reports")
    }

    /// Where a report refused in `folder` is moved, with a `.error.txt` beside it.
    pub fn rejected(folder: &Path) -> PathBuf {
        folder.join("rejected")
    }

    pub fn requests(&self) -> PathBuf {
        self.dir.join("requests")
    }

    pub fn answers(&self) -> PathBuf {
        self.dir.join("answers")
    }

    /// The request file of request `id`.
    pub fn request(&self, id: &str) -> PathBuf {
        self.requests().join(format!("{id}.json"))
    }

    /// The answer file of request `id`.
    pub fn answer(&self, id: &str) -> PathBuf {
        self.answers().join(format!("{id}.json"))
    }

    /// The file keeping the last grant shown to `worker`.
    pub fn grant(&self, worker: &str) -> PathBuf {
        self.dir.join("grants").join(safe_file_name(worker))
    }

    pub fn tasks(&self) -> PathBuf {
        self.dir.join("tasks")
    }

    /// The file holding task `id`'s body, with extension `ext` (`md` for a
    /// chat to read, `json` for a runner's command).
    pub fn task_file(&self, id: &str, ext: &str) -> PathBuf {
        self.tasks().join(format!("{}.{ext}", safe_file_name(id)))
    }

    pub fn commands(&self) -> PathBuf {
        self.dir.join("commands")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn progress_cpu(&self) -> PathBuf {
        self.dir.join("progress-cpu")
    }
}

/// The project root at or above `start`: the nearest folder holding
/// `.mcc/` (as git finds `.git`).
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find(|dir| dir.join(DIR).is_dir()).map(Path::to_path_buf)
}

/// Move a refused report file to `rejected/` next to it with a
/// `.error.txt` saying why; returns where it went. Nothing is followed: when
/// the folder or its `rejected/` is a link (or the file is not a regular
/// file), the file is left in place and the answer says why.
pub fn move_aside(path: &Path, error: &str) -> String {
    let (Some(folder), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return path.display().to_string();
    };
    match StateDir::open(folder).and_then(|dir| move_aside_in(&dir, name, error)) {
        Ok(target) => target.display().to_string(),
        Err(refused) => format!("nowhere: {refused}; the file is left in place"),
    }
}

/// [`move_aside`] for entry `name` of an open folder; returns where it went.
pub fn move_aside_in(dir: &StateDir, name: &str, error: &str) -> Result<PathBuf, Refused> {
    // A link or a FIFO stays where it is: moving it would hide what was planted.
    if let Err(refused @ (Refused::Link(_) | Refused::Special { .. })) = dir.check_file(name) {
        return Err(refused);
    }
    let aside = dir.folder_or_create("rejected")?;
    // The explanation is whole before anyone can see it, and before the
    // report itself shows up in `rejected/`: a reader never finds half a reason.
    let _ = aside.write_atomic(&format!("{name}.error.txt"), format!("{error}\n").as_bytes());
    dir.rename(name, &aside, name).map_err(|error| Refused::Io { path: dir.shown(name), error })?;
    Ok(aside.shown(name))
}

/// A task or worker name as a file name: anything but letters, digits,
/// `-`, `_` and `.` becomes `_`.
pub fn safe_file_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// What `.mcc/hub.json` says: where the running hub listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubFile {
    pub url: String,
    pub port: u16,
    pub pid: u32,
    /// True when every connection must send the token in `.mcc/token` (the
    /// hub listens beyond loopback); on loopback it is needed to change the work.
    pub token_required: bool,
    pub root: String,
    /// The live page's port on loopback (`page::url` gives its address).
    #[serde(default)]
    pub page_port: Option<u16>,
    /// The most tasks one `add_tasks` may carry (`--max-tasks-per-message`):
    /// `mcc tasks add` sends smaller pieces.
    #[serde(default)]
    pub max_tasks_per_message: Option<usize>,
    /// `sha256:HEX` of the hub's TLS certificate when it serves `wss://`:
    /// local clients pin it. Absent for a plain hub (its file reads as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

/// What `.mcc/remote.json` says in a clone that joined a hub on another
/// machine (`mcc join`): client commands there go to `url` with the token
/// in `remote-token`, trusting the certificate as this says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteFile {
    /// `wss://HOST:PORT` (or `ws://` to a hub behind a TLS proxy's plain side, on loopback).
    pub url: String,
    /// The pinned certificate, `sha256:HEX` (`--fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
    /// A CA certificate file (PEM) the hub's chain must lead to (`--ca`);
    /// neither this nor a fingerprint means the web's public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// Request and answer files older than this were left by a killed client
/// or hub: the longest wait (5 minutes) plus its slack, with room to spare.
pub const STALE: Duration = Duration::from_mins(10);

/// What a request file of the file transport holds (written whole to
/// `requests/ID.json`; the hub answers in `answers/ID.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFile {
    /// The request's identity, also its file name.
    pub id: String,
    /// The protocol frame, as it would go over the socket.
    pub message: serde_json::Value,
}

/// The ID of a request or answer file, `ID.json`; temporary files (dot
/// names) and anything else are not requests.
pub fn request_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".json")?;
    let plausible = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    plausible.then(|| id.to_owned())
}

/// What [`allowed`] lets through files, as a refusal names it.
/// `mcc status` subscribes, which a file cannot: it is not among them.
pub const ALLOWED: &str =
    "worker commands (next, done, block, fail, progress, leave), `mcc tasks show` and the `snapshot` message";

/// True for the messages a file may carry: a worker's verbs and the
/// read-only views. Anything that changes the plan goes over the socket,
/// where the hub checks who sends it.
pub fn allowed(msg: &ClientMsg) -> bool {
    matches!(
        msg,
        ClientMsg::Next { .. }
            | ClientMsg::Done { .. }
            | ClientMsg::Block { .. }
            | ClientMsg::Fail { .. }
            | ClientMsg::Progress { .. }
            | ClientMsg::Leave { .. }
            | ClientMsg::Snapshot {}
            | ClientMsg::ShowTask { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_sits_in_the_projects_state_folder() {
        let layout = Layout::of_root(Path::new("/p"));
        assert_eq!(layout.dir(), Path::new("/p/.mcc"));
        assert_eq!(layout.root(), Path::new("/p"));
        assert_eq!(layout.state_db(), Path::new("/p/.mcc/state.db"));
        assert_eq!(layout.hub_file(), Path::new("/p/.mcc/hub.json"));
        assert_eq!(layout.hub_lock(), Path::new("/p/.mcc/hub.lock"));
        assert_eq!(layout.token(), Path::new("/p/.mcc/token"));
        assert_eq!(layout.reports(), Path::new("/p/.mcc/reports"));
        assert_eq!(layout.old_reports(), Path::new("/p/tmp/coordination/reports"));
        assert_eq!(Layout::rejected(&layout.reports()), Path::new("/p/.mcc/reports/rejected"));
        assert_eq!(layout.request("ab12"), Path::new("/p/.mcc/requests/ab12.json"));
        assert_eq!(layout.answer("ab12"), Path::new("/p/.mcc/answers/ab12.json"));
        assert_eq!(layout.grant("worker A/1"), Path::new("/p/.mcc/grants/worker_A_1"));
        assert_eq!(layout.task_file("t:1", "md"), Path::new("/p/.mcc/tasks/t_1.md"));
        assert_eq!(layout.commands(), Path::new("/p/.mcc/commands"));
        assert_eq!(layout.logs(), Path::new("/p/.mcc/logs"));
        assert_eq!(layout.progress_cpu(), Path::new("/p/.mcc/progress-cpu"));
        assert_eq!(Layout::at(Path::new("/p/.mcc")), layout);
    }

    #[test]
    fn the_root_is_the_nearest_folder_above_that_holds_a_state_folder() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_root(&deep), None);
        Layout::of_root(dir.path()).create().unwrap();
        assert_eq!(find_root(&deep).as_deref(), Some(dir.path()));
        assert!(Layout::of_root(dir.path()).reports().is_dir());
    }

    #[test]
    fn a_state_folder_keeps_itself_out_of_git_and_an_old_one_is_given_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::of_root(dir.path());
        layout.create().unwrap();
        let ignore = layout.dir().join(GITIGNORE);
        assert_eq!(std::fs::read_to_string(&ignore).unwrap(), "*\n");
        std::fs::remove_file(&ignore).unwrap();
        layout.create().unwrap();
        assert_eq!(std::fs::read_to_string(&ignore).unwrap(), "*\n", "an existing folder without the file gets it");
        std::fs::write(&ignore, "*\n!keep.txt\n").unwrap();
        layout.create().unwrap();
        assert_eq!(std::fs::read_to_string(&ignore).unwrap(), "*\n!keep.txt\n", "the user's own is kept");
    }

    #[test]
    fn a_blank_token_file_is_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::of_root(dir.path());
        layout.create().unwrap();
        assert_eq!(layout.read_token(), None);
        std::fs::write(layout.token(), " \n").unwrap();
        assert_eq!(layout.read_token(), None);
        std::fs::write(layout.token(), "abc\n").unwrap();
        assert_eq!(layout.read_token().as_deref(), Some("abc"));
    }

    #[test]
    fn the_discovery_file_reads_as_older_hubs_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::of_root(dir.path());
        layout.create().unwrap();
        // Written before pagePort and maxTasksPerMessage existed.
        std::fs::write(
            layout.hub_file(),
            r#"{"url":"ws://127.0.0.1:3100","port":3100,"pid":7,"tokenRequired":false,"root":"/p"}"#,
        )
        .unwrap();
        let file = layout.read_hub_file().unwrap();
        assert_eq!(
            (file.url.as_str(), file.page_port, file.max_tasks_per_message),
            ("ws://127.0.0.1:3100", None, None)
        );
        let written = serde_json::to_value(&file).unwrap();
        assert_eq!(written["tokenRequired"], false, "{written}");
    }

    #[test]
    fn a_refused_report_goes_to_rejected_with_its_reason_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::of_root(dir.path());
        layout.create().unwrap();
        let report = layout.reports().join("t-report.json");
        std::fs::write(&report, "{").unwrap();
        let moved = move_aside(&report, "not valid JSON");
        let rejected = Layout::rejected(&layout.reports());
        assert_eq!(Path::new(&moved), rejected.join("t-report.json"));
        assert!(!report.exists());
        assert_eq!(std::fs::read_to_string(rejected.join("t-report.json.error.txt")).unwrap(), "not valid JSON\n");
        let mut names: Vec<_> =
            std::fs::read_dir(&rejected).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["t-report.json", "t-report.json.error.txt"], "no temporary file is left");
    }

    #[test]
    fn only_request_files_have_a_request_id() {
        assert_eq!(request_id(Path::new("/r/ab-12.json")).as_deref(), Some("ab-12"));
        assert_eq!(request_id(Path::new("/r/.tmpXYZ")), None);
        assert_eq!(request_id(Path::new("/r/.ab.json.tmp")), None);
        assert_eq!(request_id(Path::new("/r/a b.json")), None);
        assert_eq!(request_id(Path::new("/r/.json")), None);
    }
}
