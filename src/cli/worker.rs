//! `mcc worker ...`: what a worker chat runs, one short connection per
//! command, each finishing inside the chat's turn. The verbs are
//! [`crate::client::worker`]'s; this prints their answers (text, or one JSON
//! object with `--json`) and returns their exit codes.

mod args;
mod headless;
mod usage;

use std::io::Write;

use serde_json::json;

use crate::client::worker::{self as verbs, Answer, Source};
use crate::client::{exit, watcher};
pub use args::WorkerCmd;

pub fn run(cmd: WorkerCmd, options: crate::client::Options) -> u8 {
    let (answer, as_json) = match cmd {
        WorkerCmd::Next(a) => {
            // A shell chat has no process of mcc's that lives as long as it: a watcher stands for one.
            if let Some(name) = a.who.name.as_deref().filter(|n| !n.trim().is_empty()) {
                watcher::ensure(name, a.who.hub.as_deref(), options);
            }
            let who = verbs::Worker { kit: a.kit.clone(), ..a.who.worker(options) };
            (verbs::next(&who, a.wait.wait), a.who.json)
        }
        WorkerCmd::Done(a) => (verbs::done(&a.who.worker(options), &a.verb()), a.who.json),
        WorkerCmd::Block(a) => (verbs::block(&a.who.worker(options), &a.verb()), a.who.json),
        WorkerCmd::Fail(a) => (verbs::fail(&a.who.worker(options), &a.verb()), a.who.json),
        WorkerCmd::Progress(a) => (verbs::progress(&a.who.worker(options), &a.verb()), a.who.json),
        WorkerCmd::Leave(a) => (verbs::leave(&a.who.worker(options)), a.who.json),
        WorkerCmd::Run(a) => return headless::run(&a, options),
        WorkerCmd::Watch(a) => {
            let agent = watcher::Process { pid: a.agent_pid, start: a.agent_start };
            return watcher::watch(&a.name, agent, a.hub.as_deref(), options);
        }
    };
    if as_json {
        print_json(&answer);
    } else {
        print_text(&answer);
    }
    answer.code
}

fn print_text(answer: &Answer) {
    if answer.code == exit::ERROR {
        eprintln!("error: {}", answer.text);
    } else {
        print!("{}", answer.text);
        let _ = std::io::stdout().flush();
    }
}

/// One JSON object: the hub's own answer with the next command and exit
/// code added, or what stood for one.
fn print_json(answer: &Answer) {
    let code = answer.code;
    match &answer.source {
        Source::Hub(msg) => {
            let mut value = serde_json::to_value(msg).expect("serializes");
            if let Some(map) = value.as_object_mut() {
                if let Some(command) = answer.next_command() {
                    map.insert("next_command".into(), json!(command));
                }
                map.insert("exit_code".into(), json!(code));
                if let Some(folder) = &answer.work_in {
                    map.insert("work_in".into(), json!(folder));
                }
            }
            println!("{value}");
        }
        Source::RunFinished => {
            println!("{}", json!({"type": "all_done", "message": answer.text.trim_end(), "exit_code": code}));
        }
        Source::HubDown => {
            println!("{}", json!({"type": "hub_down", "message": answer.text.trim_end(), "exit_code": code}));
        }
        Source::Unreached => {
            println!("{}", json!({"type": "error", "error": answer.text, "exit_code": code}));
            eprintln!("error: {}", answer.text);
        }
    }
}
