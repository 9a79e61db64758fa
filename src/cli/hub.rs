//! `mcc hub`: the hub alone, for coordinators speaking the protocol.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::exit;
use crate::hub::{self, HubError, HubOptions, standby};
use crate::scheduler::Settings;
use crate::store::{Location, StoreError};

/// Run the hub alone: coordinators and workers connect over WebSocket.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  mcc hub --port 3100 --dir ~/projects/site\n\nState lives in DIR/.mcc/; clients find the hub through DIR/.mcc/hub.json.\nWithout --workflow it resumes the workflow the store names, if any.\nExit codes: 0 stopped by Ctrl-C or SIGTERM; 1 error (the message says what to fix);\n6 stepped down: another hub took over the project's leader lease (PostgreSQL store; with --standby it waits again instead)."
)]
pub struct HubArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "COORDINATION_PORT", default_value_t = hub::DEFAULT_PORT)]
    pub port: u16,
    /// Project root whose .mcc/ holds the state.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Listen on this address instead of loopback; clients then need the token in .mcc/token.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Wait for the project's leader lease (needs --store postgres://...), then load the state
    /// and serve; if another hub takes over later, wait again.
    #[arg(long)]
    pub standby: bool,
    /// Default lease of an assigned task, such as 30m or 90s.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Grants after which a task that is not accepted fails.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// How long a worker whose chat ended (its `mcc mcp` or watcher connection closed) may take to
    /// come back before its task goes back to the queue, such as 60s; a workflow's `presence_grace` wins.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub presence_grace: Duration,
    /// Run this Lua workflow (check it first with `mcc check FILE`).
    #[arg(long)]
    pub workflow: Option<PathBuf>,
    /// The most tasks one message may add.
    #[arg(long, default_value_t = hub::Limits::default().max_tasks_per_message)]
    pub max_tasks_per_message: usize,
    /// The most tasks the store may hold; adding past it is refused with this limit named.
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_TASKS)]
    pub max_tasks: usize,
    /// Validation commands running at once; more wait their turn.
    #[arg(long, default_value_t = hub::Limits::default().max_commands)]
    pub max_commands: usize,
    /// Connections open at once; a quarter is kept for clients with the token.
    #[arg(long, default_value_t = hub::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// The largest message, request file or report file the hub reads, in bytes; larger ones are refused unread.
    #[arg(long, default_value_t = hub::MAX_FRAME)]
    pub max_frame_bytes: usize,
    /// What one task's files may weigh, each way, when a worker in a clone elsewhere
    /// receives its read files and sends its write files, in bytes.
    #[arg(long, default_value_t = crate::checkout::DEFAULT_MAX_TASK_FILES_BYTES)]
    pub max_task_files_bytes: u64,
    /// Close a connection that has asked nothing for this long, such as 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a stopped command (a validation, a workflow's ctx.run) has
    /// between SIGTERM and SIGKILL, such as 2s.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub command_grace: Duration,
    /// Send a WebSocket ping on a connection silent this long, such as 30s (keeps NATs and proxies from dropping it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,
    /// The least a `done` waits for its verdict before it is told the
    /// verdict is pending (a test tunable: tests need not wait 10 s).
    #[arg(long, hide = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub verdict_wait_floor: Duration,
}

impl HubArgs {
    pub fn options(&self) -> HubOptions {
        HubOptions {
            root: self.dir.clone(),
            port: self.port,
            bind: self.bind,
            settings: Settings {
                lease: self.lease,
                max_attempts: self.max_attempts.max(1),
                max_tasks: self.max_tasks.max(1),
                presence_grace: self.presence_grace,
            },
            loader: Some(crate::lua::load),
            workflow: self.workflow.as_ref().map(|w| std::path::absolute(w).unwrap_or_else(|_| w.clone())),
            quiet: false,
            limits: hub::Limits {
                max_tasks_per_message: self.max_tasks_per_message.max(1),
                max_commands: self.max_commands.max(1),
                max_connections: self.max_connections.max(4),
                idle_timeout: self.idle_timeout,
                max_frame_bytes: self.max_frame_bytes.max(1024),
                keepalive: self.keepalive.max(Duration::from_millis(10)),
                max_task_files_bytes: self.max_task_files_bytes,
                ..hub::Limits::default()
            },
            timing: crate::engine::Timing {
                verdict_wait_floor: self.verdict_wait_floor,
                command_grace: self.command_grace,
                ..Default::default()
            },
            security: self.tls.security(),
            store: self.store.choice(),
        }
    }
}

/// Where the project's state is kept (`mcc hub` and `mcc run`).
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Keep the project's state in PostgreSQL (postgres://USER@HOST:PORT/DATABASE) instead of
    /// .mcc/state.db; `sqlite` goes back to the file. The checkout remembers the choice in
    /// .mcc/store.json, so later commands need not repeat it.
    #[arg(long, env = "MCC_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// The project's name inside that database (default: the project root folder's name):
    /// one database serves many projects.
    #[arg(long, env = "MCC_PROJECT", value_name = "NAME")]
    pub project: Option<String>,
    /// On a PostgreSQL store, a hub serves only while it holds the project's leader lease; a
    /// lease not renewed for this long passes to a standby (`mcc hub --standby`).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub leader_lease: Duration,
    /// How often a standby looks whether the leader lease is free (the serving hub renews its
    /// own every fifth of --leader-lease).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub leader_renew: Duration,
}

impl StoreArgs {
    pub fn choice(&self) -> hub::StoreChoice {
        hub::StoreChoice {
            url: self.store.clone(),
            project: self.project.clone(),
            leader: crate::store::Leader {
                lease: self.leader_lease,
                renew: self.leader_renew.max(Duration::from_millis(10)),
                address: None,
            },
            restore_checkout: false,
        }
    }
}

/// How the hub protects its connections (`mcc hub` and `mcc run`).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Serve wss:// with this certificate (PEM, the chain leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with_all = ["tls_self_signed", "behind_tls_proxy"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve wss:// with a certificate made at first start and kept in .mcc/tls/; its fingerprint is printed and written to .mcc/hub.json.
    #[arg(long, conflicts_with = "behind_tls_proxy")]
    pub tls_self_signed: bool,
    /// A proxy on this machine (nginx, caddy) terminates TLS: let the hub listen beyond loopback in plain ws:// (docs/remote.md).
    #[arg(long)]
    pub behind_tls_proxy: bool,
}

impl TlsArgs {
    pub fn security(&self) -> hub::Security {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => hub::Security::Tls(crate::tls::Certificate::Files {
                cert: std::path::absolute(cert).unwrap_or_else(|_| cert.clone()),
                key: std::path::absolute(key).unwrap_or_else(|_| key.clone()),
            }),
            _ if self.tls_self_signed => hub::Security::Tls(crate::tls::Certificate::SelfSigned),
            _ if self.behind_tls_proxy => hub::Security::BehindTlsProxy,
            _ => hub::Security::Plain,
        }
    }
}

pub fn run(args: HubArgs) -> u8 {
    let mut options = args.options();
    // A standby may be a clone elsewhere: it takes the run's accepted files from the store.
    options.store.restore_checkout = args.standby;
    if !args.standby {
        let runtime = hub::runtime().expect("start the tokio runtime");
        return match runtime.block_on(serve(&options)) {
            Ok(()) => exit::OK,
            // The store's writer logged why, naming the project, the epoch and who holds it now.
            Err(HubError::Store(StoreError::Fenced { .. })) => exit::STEPPED_DOWN,
            Err(e) => {
                eprintln!("mcc hub: {e}");
                exit::ERROR
            }
        };
    }
    let root = std::fs::canonicalize(&options.root).unwrap_or_else(|_| options.root.clone());
    let store = options.store.url.as_deref().filter(|s| !s.trim().is_empty());
    let location = crate::store::Location::choose(
        store,
        options.store.project.as_deref(),
        crate::layout::Layout::of_root(&root).dir(),
    );
    let (url, project) = match location {
        Ok(Location::Postgres { url, project }) => (url, project),
        Ok(Location::Sqlite(_)) => {
            eprintln!(
                "mcc hub: --standby needs a store several hubs share: give --store postgres://USER@HOST:PORT/DATABASE (or MCC_STORE); with .mcc/state.db only this checkout's hub can serve"
            );
            return exit::ERROR;
        }
        Err(e) => {
            eprintln!("mcc hub: {e}");
            return exit::ERROR;
        }
    };
    loop {
        // One runtime per turn of serving: whatever a turn started (listeners,
        // the live page, connections) ends with it, and the next turn starts clean.
        let runtime = hub::runtime().expect("start the tokio runtime");
        let turn = runtime.block_on(async {
            tokio::select! {
                waited = standby::wait_for_lease(&url, &project, options.store.leader.renew) => waited?,
                () = hub::shutdown_signal() => return Ok(Turn::Stopped),
            }
            match serve(&options).await {
                Ok(()) => Ok(Turn::Stopped),
                Err(HubError::Store(StoreError::Fenced { .. })) => Ok(Turn::SteppedDown),
                Err(e) => Err(e),
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        match turn {
            Ok(Turn::Stopped) => return exit::OK,
            Ok(Turn::SteppedDown) => tracing::info!("mcc hub: standby again for project {project:?}"),
            // Another standby took the lease first: wait for it again.
            Err(HubError::Store(StoreError::Serving { .. })) => {}
            Err(e) => {
                eprintln!("mcc hub: {e}");
                return exit::ERROR;
            }
        }
    }
}

/// How one turn of a standby ended.
enum Turn {
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// Another hub took the lease over: wait for it again.
    SteppedDown,
}

/// Serve until stopped, or until the hub cannot go on.
async fn serve(options: &HubOptions) -> Result<(), HubError> {
    // Read before the hub opens the store: what it resumes when no workflow is given.
    let root = std::fs::canonicalize(&options.root).unwrap_or_else(|_| options.root.clone());
    // One meta value, not the whole state: a standby taking over a large run loads it once, in the engine.
    let location = crate::store::Location::choose(
        options.store.url.as_deref(),
        options.store.project.as_deref(),
        crate::layout::Layout::of_root(&root).dir(),
    );
    let resumed = match (&options.workflow, &location) {
        (None, Ok(location)) => crate::store::open_read_only(location)
            .ok()
            .flatten()
            .and_then(|mut store| store.meta("workflow_path").ok().flatten()),
        _ => None,
    };
    let from = match &location {
        Ok(postgres @ Location::Postgres { .. }) => postgres.to_string(),
        _ => ".mcc/state.db".to_owned(),
    };
    let announce = || {
        match (&options.workflow, &resumed) {
            (Some(file), _) => tracing::info!("mcc hub: workflow {}", shown(&root, file)),
            (None, Some(file)) => {
                tracing::info!("mcc hub: resumes workflow {} (from {from})", shown(&root, Path::new(file)));
            }
            (None, None) => tracing::info!("mcc hub: no workflow; coordinators add tasks over the protocol"),
        }
        if let Some(page) = hub::page::url_of(&root) {
            tracing::info!("mcc hub: live page (read-only): {page}");
        }
    };
    hub::serve(options.clone(), announce).await
}

/// A path as the engineer gave it: relative to the project root when under it.
fn shown(root: &Path, file: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}
