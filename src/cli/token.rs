//! `mcc token add | list | revoke`: the engineer's hands on the hub's scoped
//! tokens. Each is one verb sent to the running hub over the project's
//! connection (its `.mcc/token` makes it an engineer's): the tokens live in
//! the hub's store, which only the hub writes, and a revocation must reach
//! the hub's open connections at once. So these work only while the hub runs.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use super::exit;
use super::tasks::HubArg;
use crate::client;
use crate::wire::{ClientMsg, ServerMsg, TokenInfo, TokenScope};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a token for a worker, a viewer or an engineer; it is printed once.
    #[command(
        group(ArgGroup::new("scope").required(true).args(["worker", "viewer", "engineer"])),
        after_help = "Examples:\n  mcc token add --worker worker-A --expires 7d\n  mcc token add --viewer\n  mcc token add --engineer --json\n\nA worker token acts only as its worker, with next, done, block, fail, progress and leave.\nA viewer token only reads: status, the task list, subscriptions.\nAn engineer token may do what the project's .mcc/token may.\n\nExit codes: 0 made (the token is the first line); 1 error."
    )]
    Add(AddArgs),
    /// List the tokens (never their secrets): id, scope, worker, created, last used, expires.
    #[command(after_help = "Example:\n  mcc token list --json")]
    List(HubArg),
    /// Revoke a token: refused from now on, its open connections closed at once.
    #[command(after_help = "Example:\n  mcc token revoke tok-3f9a1c2b7d4e")]
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A token that acts only as this worker, with the worker verbs only.
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// A token that only reads.
    #[arg(long)]
    pub viewer: bool,
    /// A token that may do what the project's .mcc/token may.
    #[arg(long)]
    pub engineer: bool,
    /// Refused after this long, such as 7d or 12h (default: until revoked).
    #[arg(long, value_parser = lifetime, value_name = "DURATION")]
    pub expires: Option<Duration>,
    #[command(flatten)]
    pub hub: HubArg,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id, as `mcc token list` shows it (tok-...).
    pub id: String,
    #[command(flatten)]
    pub hub: HubArg,
}

/// A lifetime: a duration above zero.
fn lifetime(given: &str) -> Result<Duration, String> {
    match humantime::parse_duration(given) {
        Ok(d) if d.is_zero() => Err("a token that expires at once is no token: give a duration such as 7d".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; give a duration such as 7d or 12h")),
    }
}

/// What the hub may take beyond the client's deadline: one small commit.
const LIMIT: Duration = Duration::from_secs(10);

fn fail(hub: &HubArg, message: &str) -> u8 {
    if hub.json {
        println!("{}", json!({"type": "error", "error": message}));
    }
    eprintln!("error: {message}");
    exit::ERROR
}

fn ask(hub: &HubArg, options: client::Options, msg: &ClientMsg) -> Result<ServerMsg, u8> {
    match client::ask_once(hub.hub.as_deref(), options, msg, LIMIT) {
        Ok((ServerMsg::Error { error, .. }, _)) => Err(fail(hub, &error)),
        Ok((answer, _)) => Ok(answer),
        Err(e) => Err(fail(hub, &e)),
    }
}

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(crate::hub::tokens::when(ms)))
}

/// A token as `--json` prints it: never the secret.
fn listed(info: &TokenInfo) -> Value {
    json!({
        "id": info.id,
        "scope": info.scope.name(),
        "worker": info.worker,
        "created": time(Some(info.created_ms)),
        "lastUsed": time(info.last_used_ms),
        "expires": time(info.expires_ms),
        "expired": info.expires_ms.is_some_and(|at| at <= crate::task::now_ms()),
    })
}

fn scope_text(info: &TokenInfo) -> String {
    match (&info.scope, &info.worker) {
        (TokenScope::Worker, Some(name)) => format!("worker {name}"),
        (scope, _) => scope.name().to_owned(),
    }
}

pub fn run(cmd: TokenCmd, options: client::Options) -> u8 {
    match cmd {
        TokenCmd::Add(a) => add(a, options),
        TokenCmd::List(hub) => list(&hub, options),
        TokenCmd::Revoke(a) => {
            let msg = ClientMsg::TokenRevoke { id: a.id };
            match ask(&a.hub, options, &msg) {
                Ok(answer) if a.hub.json => {
                    println!("{}", answer.to_json());
                    exit::OK
                }
                Ok(ServerMsg::Ack { message, .. }) => {
                    println!("{message}\nnext: `mcc token list`");
                    exit::OK
                }
                Ok(other) => fail(&a.hub, &format!("unexpected answer from the hub: {}", other.to_json())),
                Err(code) => code,
            }
        }
    }
}

fn add(a: AddArgs, options: client::Options) -> u8 {
    let scope = match (&a.worker, a.viewer, a.engineer) {
        (Some(_), _, _) => TokenScope::Worker,
        (None, true, _) => TokenScope::Viewer,
        (None, false, _) => TokenScope::Engineer,
    };
    let expires_ms = a.expires.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let msg = ClientMsg::TokenAdd { scope, worker: a.worker.clone(), expires_ms };
    match ask(&a.hub, options, &msg) {
        Ok(ServerMsg::TokenAdded { secret, token }) => {
            if a.hub.json {
                let mut printed = listed(&token);
                if let Value::Object(fields) = &mut printed {
                    fields.remove("lastUsed");
                    fields.remove("expired");
                    fields.insert("token".into(), Value::String(secret));
                }
                println!("{printed}");
            } else {
                let expires = token
                    .expires_ms
                    .map_or_else(|| "until revoked".to_owned(), |at| format!("until {}", crate::hub::tokens::when(at)));
                println!("{secret}");
                println!(
                    "token {} ({}, {expires}) is shown once: the hub keeps only its hash",
                    token.id,
                    scope_text(&token)
                );
                println!("next: hand it over privately; revoke it with `mcc token revoke {}`", token.id);
            }
            exit::OK
        }
        Ok(other) => fail(&a.hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(code) => code,
    }
}

fn list(hub: &HubArg, options: client::Options) -> u8 {
    match ask(hub, options, &ClientMsg::TokenList {}) {
        Ok(ServerMsg::Tokens { tokens }) => {
            if hub.json {
                println!("{}", json!({ "tokens": tokens.iter().map(listed).collect::<Vec<_>>() }));
            } else if tokens.is_empty() {
                println!("no tokens; make one with `mcc token add --worker NAME` (or --viewer, --engineer)");
            } else {
                let now = crate::task::now_ms();
                for t in &tokens {
                    let last = t.last_used_ms.map_or_else(|| "never".to_owned(), crate::hub::tokens::when);
                    let expires = match t.expires_ms {
                        None => "never".to_owned(),
                        Some(at) if at <= now => format!("{} (expired)", crate::hub::tokens::when(at)),
                        Some(at) => crate::hub::tokens::when(at),
                    };
                    println!(
                        "{}  {}  created {}  last used {last}  expires {expires}",
                        t.id,
                        scope_text(t),
                        crate::hub::tokens::when(t.created_ms)
                    );
                }
            }
            exit::OK
        }
        Ok(other) => fail(hub, &format!("unexpected answer from the hub: {}", other.to_json())),
        Err(code) => code,
    }
}
