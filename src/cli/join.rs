//! `mcc join`: make a clone of the project on another machine a place
//! where worker commands reach the project's hub. It checks the address,
//! the certificate and the token by connecting once, then writes
//! `.mcc/remote.json` (where the hub is, how to trust it) and
//! `.mcc/remote-token` (0600), which client commands there read as a local
//! one reads `hub.json` and `token` (see `client::locate`). A hub that
//! can fail over is joined at all its addresses at once (`mcc join A,B`):
//! the one that serves is checked, and the list is written.

use std::path::{Path, PathBuf};

use clap::Args;

use super::exit;
use crate::client::{self, Connection, Hubs, Target};
use crate::layout::{Layout, REMOTE_FILE, REMOTE_TOKEN, RemoteFile};
use crate::tls::Trust;

/// Join a hub on another machine from this clone of its project.
#[derive(Debug, Args)]
#[command(after_help = "Example (the hub printed its fingerprint and the token came from `mcc token add`):
  mcc join wss://hub.example.org:3100 --token TOKEN --fingerprint sha256:HEX

A hub with a standby is joined at every address, separated by commas (one fingerprint for all, or one each in order):
  mcc join wss://hub-a.example.org:3100,wss://hub-b.example.org:3100 --token TOKEN --fingerprint sha256:HEX_A,sha256:HEX_B

Then, from any folder of this clone: mcc worker next --as NAME (see docs/remote.md).")]
pub struct JoinArgs {
    /// The hub's address, wss://HOST:PORT; several separated by commas for a hub with a standby.
    pub url: String,
    /// The access token the hub's engineer gave you.
    #[arg(long, env = "MCC_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The hub's certificate fingerprint (sha256:HEX, printed by a hub started with --tls-self-signed): pinned. With several addresses, one for all or one per address in order, separated by commas.
    #[arg(long, conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// A CA certificate (PEM) the hub's certificate must chain to; without it or --fingerprint, the web's public roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The clone's root (default: the nearest folder above holding .mcc/ or .git/, else this one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: JoinArgs, options: client::Options) -> u8 {
    match join(&args, options) {
        Ok(lines) => {
            println!("{lines}");
            exit::OK
        }
        Err(e) => {
            eprintln!("mcc join: {e}");
            exit::ERROR
        }
    }
}

fn join(args: &JoinArgs, options: client::Options) -> Result<String, String> {
    // Each address as one alone was always checked (the same words), then the list's own faults (an empty element).
    for url in args.url.split(',').map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty()) {
        check_address(url)?;
    }
    let hubs = Hubs::parse(&args.url, "the address given").map_err(|e| e.to_string())?;
    let url = hubs.urls().join(",");
    let token = args.token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token is empty or holds spaces or unusual characters; paste it exactly as it was printed".into()
        );
    }
    let (trust, pinned) = match (&args.fingerprint, &args.ca) {
        (Some(given), _) => {
            let pins = given
                .split(',')
                .map(|pin| crate::tls::parse_fingerprint(pin).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            if pins.len() != 1 && pins.len() != hubs.len() {
                return Err(format!(
                    "{} fingerprints for {} addresses: give one for all of them, or one per address in the same order",
                    pins.len(),
                    hubs.len()
                ));
            }
            let pins = pins.join(",");
            (Trust::Pinned(pins.clone()), Some(pins))
        }
        (None, Some(ca)) => {
            let ca = std::path::absolute(ca).map_err(|e| format!("cannot read the path {}: {e}", ca.display()))?;
            (Trust::Ca(ca), None)
        }
        (None, None) => (Trust::WebRoots, None),
    };
    // Each address with its own pin, where several were given.
    let trust_at = |at: &str| {
        at.starts_with("wss://").then(|| match &trust {
            Trust::Pinned(pins) => Trust::Pinned(client::pin_at(pins, hubs.position(at).unwrap_or_default())),
            other => other.clone(),
        })
    };
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => clone_root()?,
    };
    // The handshake checks the certificate and the token: nothing is written unless both pass.
    let target = Target { hubs: hubs.clone(), options, token: Some(token.to_owned()), root: None };
    let conn = Connection::open_trusting(&target, trust_at).map_err(|e| e.to_string())?;
    let hub_commit = conn.hub_commit().map(str::to_owned);
    let answered = conn.url().to_owned();
    conn.close();

    let layout = Layout::of_root(&root);
    layout.refuse_links().map_err(|e| format!("refusing to write the clone's .mcc/: {e}"))?;
    layout.create().map_err(|e| format!("cannot make {}: {e}", layout.dir().display()))?;
    let remote = RemoteFile {
        url: url.clone(),
        tls_fingerprint: pinned.clone(),
        ca: match &trust {
            Trust::Ca(path) => Some(path.display().to_string()),
            _ => None,
        },
    };
    let state = layout.open().map_err(|e| e.to_string())?;
    // The token first: a remote.json is never found without its token.
    state.write_private(REMOTE_TOKEN, format!("{token}\n").as_bytes()).map_err(|e| e.to_string())?;
    let json = serde_json::to_vec_pretty(&remote).map_err(|e| e.to_string())?;
    state.write_atomic(REMOTE_FILE, &json).map_err(|e| e.to_string())?;

    let trusted = match (&trust, hubs.urls().iter().any(|u| u.starts_with("wss://"))) {
        (_, false) => "plain ws:// on loopback".to_owned(),
        (Trust::Pinned(pin), true) if !pin.contains(',') => format!("certificate {pin} pinned"),
        (Trust::Pinned(pins), true) => format!("certificates {} pinned", pins.replace(',', ", ")),
        (Trust::Ca(path), true) => format!("certificate checked against {}", path.display()),
        (Trust::WebRoots, true) => "certificate checked against the public roots".to_owned(),
    };
    // One address reads as it always did; of several, the one that answered is named.
    let trusted = if hubs.len() > 1 { format!("{trusted}; {answered} answered") } else { trusted };
    let mut lines = format!(
        "joined {hubs} ({trusted})\nwrote {} and {} (0600): worker commands from any folder of {} now go to that hub",
        layout.remote_file().display(),
        layout.remote_token().display(),
        root.display()
    );
    // Not an error: a task's declared files come from the hub whatever the clone's commit.
    if let (Some(hub), Some(here)) = (hub_commit, crate::checkout::head_commit(&root))
        && hub != here
    {
        lines.push_str(&format!(
            "\nnote: this clone is at commit {} and the hub's checkout at {}; the tasks' declared files come from the hub, other files may differ (git pull to catch up)",
            short(&here),
            short(&hub)
        ));
    }
    lines.push_str("\nnext: mcc worker next --as NAME");
    Ok(lines)
}

/// A commit's first 12 hex digits, as git shows a short one.
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// A hub elsewhere is reached over TLS; plain `ws://` only to this machine
/// (a TLS proxy's plain side, a test).
fn check_address(url: &str) -> Result<(), String> {
    let uri: tungstenite::http::Uri =
        url.parse().map_err(|e| format!("`{url}` is not an address ({e}); give it as wss://HOST:PORT"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    match uri.scheme_str() {
        Some("wss") if !host.is_empty() => Ok(()),
        Some("ws") if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) => {
            Ok(())
        }
        Some("ws") => Err(format!(
            "`{url}` is plain ws:// to another machine: the token would cross the network readable; use wss:// (start the hub with --tls-self-signed, or put it behind a TLS proxy)"
        )),
        _ => Err(format!("`{url}` is not a hub address; give it as wss://HOST:PORT")),
    }
}

/// The clone's root: the nearest folder at or above this one holding `.mcc/` or `.git`.
fn clone_root() -> Result<PathBuf, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current folder: {e}"))?;
    Ok(cwd
        .ancestors()
        .find(|dir| dir.join(crate::layout::DIR).is_dir() || dir.join(".git").exists())
        .map_or_else(|| cwd.clone(), Path::to_path_buf))
}
