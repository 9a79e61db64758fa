//! `mcc worker run`: headless workers, each running a command once per task
//! until all work is done, with the lease extended while it runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::args::RunArgs;
use crate::client::worker::{Kit, ask, human, ms, name_of, run_finished, strings};
use crate::client::{ClientError, Target, exit};
use crate::command::Supervisor;
use crate::layout::Layout;
use crate::wire::{ClientMsg, Offer, ServerMsg, Usage};

/// Slots of the runner of headless workers' commands: one per worker, so
/// none waits in line while its lease runs.
const RUNNER_SLOTS: usize = 64;

/// On Ctrl-C or SIGTERM, kill every task command's whole process group
/// before exiting: nothing keeps writing files another worker may get.
fn kill_commands_on_signal(runner: Supervisor) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let code = runtime.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return 1;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => 130,
                _ = term.recv() => 143,
            }
        });
        runner.shutdown();
        eprintln!("mcc worker run: stopped; the task commands were killed with everything they started");
        std::process::exit(code);
    });
}

/// Record the task commands' groups under the project's `.mcc/commands`,
/// as a hub does, first killing what a worker or hub killed with SIGKILL left running
/// there: a killed worker cannot kill its command itself. Without a project
/// folder (`--hub` only) nothing is recorded.
fn record_command_groups(runner: &Supervisor, root: Option<&Path>) {
    let Some(layout) = root.map(Layout::of_root).filter(|l| l.dir().is_dir()) else { return };
    match runner.record_groups_in(layout.dir()) {
        Ok(0) => {}
        Ok(n) => eprintln!(
            "mcc worker run: killed {n} command group(s) that a stopped worker or hub had left running (records in {})",
            layout.commands().display()
        ),
        Err(e) => eprintln!(
            "mcc worker run: warning: cannot keep records in {}: {e}; a worker killed with SIGKILL would leave its command running",
            layout.commands().display()
        ),
    }
}

/// `mcc worker run`: one or more headless workers.
pub fn run(a: &RunArgs, options: crate::client::Options) -> u8 {
    let runner = Supervisor::new(RUNNER_SLOTS);
    kill_commands_on_signal(runner.clone());
    let base = match name_of(&a.who.worker(options)) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    if a.who.worktree {
        // Its command runs in the project's checkout and its deliverables are looked for there.
        eprintln!(
            "error: mcc worker run works in the project's checkout and takes no --worktree (nor MCC_WORKTREE); run it without"
        );
        return exit::ERROR;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let target = match crate::client::locate(a.who.hub.as_deref(), &cwd, options) {
        Ok(t) => t,
        Err(_) if run_finished() => {
            println!("all work is done: the run finished and its hub has stopped");
            return exit::ALL_DONE;
        }
        // As every worker command: down is "nothing yet", so whoever started it tries again.
        Err(e) if e.hub_down() => {
            print!("{}", e.for_worker());
            return exit::NOTHING_YET;
        }
        Err(e) => {
            eprintln!("error: {}", e.for_worker());
            return exit::ERROR;
        }
    };
    let root = target.root.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_else(|| PathBuf::from("."));
    record_command_groups(&runner, target.root.as_deref());
    if a.parallel <= 1 {
        return Headless {
            name: base,
            target,
            root,
            command: a.command.clone(),
            max_tasks: a.max_tasks,
            kit: a.kit.clone(),
            runner,
        }
        .run();
    }
    let handles: Vec<_> = (1..=a.parallel)
        .map(|k| {
            let worker = Headless {
                name: format!("{base}-{k}"),
                target: target.clone(),
                root: root.clone(),
                command: a.command.clone(),
                max_tasks: a.max_tasks,
                kit: a.kit.clone(),
                runner: runner.clone(),
            };
            std::thread::spawn(move || worker.run())
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(exit::ERROR)).max().unwrap_or(exit::OK)
}

struct Headless {
    name: String,
    target: Target,
    root: PathBuf,
    command: Vec<String>,
    max_tasks: Option<usize>,
    /// What each worker says it can do and its model, with every `next`.
    kit: Kit,
    /// Runs the task commands, shared by the workers of this process.
    runner: Supervisor,
}

/// How a command run for a task ended.
enum Outcome {
    Done { deliverables: Vec<String>, notes: Option<String>, usage: Option<Usage> },
    Failed(String, Option<Usage>),
}

impl Headless {
    fn log(&self, line: &str) {
        println!("[{}] {line}", self.name);
    }

    fn next_msg(&self, wait: Duration) -> ClientMsg {
        ClientMsg::Next {
            worker: self.name.clone(),
            wait_ms: Some(ms(wait)),
            can: self.kit.can.clone(),
            model: self.kit.model.clone(),
        }
    }

    fn request(&self, msg: &ClientMsg, wait: Duration) -> Result<ServerMsg, ClientError> {
        ask(&self.target, msg, wait)
    }

    fn run(&self) -> u8 {
        let wait = Duration::from_secs(25);
        let mut done = 0usize;
        let mut answer = self.request(&self.next_msg(wait), wait);
        loop {
            let offer = match answer {
                Ok(ServerMsg::Offer { offer }) => offer,
                Ok(ServerMsg::Verdict { next, task_id, accepted, reasons, .. }) => {
                    if accepted {
                        self.log(&format!("accepted {task_id}"));
                    } else {
                        self.log(&format!("rejected {task_id}: {}", reasons.join("; ")));
                    }
                    next
                }
                Ok(ServerMsg::Ack { next: Some(next), message, .. }) => {
                    self.log(&message);
                    next
                }
                Ok(ServerMsg::Error { error, .. }) => {
                    self.log(&format!("error: {error}"));
                    return exit::ERROR;
                }
                Ok(other) => {
                    self.log(&format!("error: unexpected answer {}", other.to_json()));
                    return exit::ERROR;
                }
                Err(ClientError::Timeout { .. } | ClientError::Broken(_)) => {
                    // A cut connection loses nothing: ask again for what we hold.
                    answer = self.request(&self.next_msg(wait), wait);
                    continue;
                }
                Err(_) if run_finished() => {
                    // The run's hub stopped because the work is finished.
                    self.log("all work is done: the run finished and its hub has stopped");
                    return exit::ALL_DONE;
                }
                Err(e) => {
                    self.log(&format!("error: {}", e.for_worker().trim_end()));
                    return if e.hub_down() { exit::NOTHING_YET } else { exit::ERROR };
                }
            };
            match offer {
                Offer::Task { task, attempt, lease_ms, reasons, .. } => {
                    if self.max_tasks.is_some_and(|m| done >= m) {
                        let _ = self.request(&ClientMsg::Leave { worker: self.name.clone() }, Duration::ZERO);
                        return exit::OK;
                    }
                    let id = task["id"].as_str().unwrap_or_default().to_owned();
                    self.log(&format!("task {id} attempt {attempt}"));
                    let outcome = self.execute(&task, &id, attempt, lease_ms, &reasons);
                    done += 1;
                    answer = match outcome {
                        Outcome::Done { deliverables, notes, usage } => self.request(
                            &ClientMsg::Done {
                                worker: self.name.clone(),
                                task_id: id,
                                attempt: Some(attempt),
                                deliverables,
                                score: None,
                                notes,
                                wait_ms: Some(ms(wait)),
                                files: Vec::new(),
                                changed: Vec::new(),
                                isolated: false,
                                usage,
                            },
                            wait,
                        ),
                        Outcome::Failed(reason, usage) => {
                            self.log(&format!("failed {id}: {reason}"));
                            self.request(
                                &ClientMsg::Fail {
                                    worker: self.name.clone(),
                                    task_id: id,
                                    attempt: Some(attempt),
                                    reason,
                                    wait_ms: Some(ms(wait)),
                                    usage,
                                },
                                wait,
                            )
                        }
                    };
                }
                Offer::NothingYet { .. } => {
                    if self.max_tasks.is_some_and(|m| done >= m) {
                        return exit::OK;
                    }
                    answer = self.request(&self.next_msg(wait), wait);
                }
                Offer::AllDone { message, .. } => {
                    self.log(&message);
                    return exit::ALL_DONE;
                }
                Offer::HandOver { message, .. } => {
                    self.log(&message);
                    return exit::HAND_OVER;
                }
            }
        }
    }

    /// Run the command for one task, extending the lease while it runs.
    fn execute(&self, task: &Value, id: &str, attempt: u32, lease_ms: u64, reasons: &[String]) -> Outcome {
        let (dir, file) = (Layout::of_root(&self.root).tasks(), Layout::of_root(&self.root).task_file(id, "json"));
        let body = serde_json::to_string_pretty(task).expect("serializes");
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| crate::text::write_atomic(&file, body.as_bytes())) {
            return Outcome::Failed(format!("cannot write {}: {e}", file.display()), None);
        }
        let Some((program, args)) = self.command.split_first() else {
            return Outcome::Failed("no command given after --".to_owned(), None);
        };
        let lease = Duration::from_millis(lease_ms);
        // Stop before the lease runs out, so the task is ours when we report;
        // the runner kills the command's whole process group at that limit.
        let margin = (lease / 10).clamp(Duration::from_millis(500), Duration::from_mins(1));
        let job = crate::command::Job::program(program, args, &self.root, lease.saturating_sub(margin))
            .env("MCC_TASK_FILE", &file)
            .env("MCC_TASK_ID", id)
            .env("MCC_ATTEMPT", attempt.to_string())
            .env("MCC_WORKER", &self.name)
            .env("MCC_HUB", self.target.hubs.to_env())
            .env("MCC_REASONS", reasons.join("\n"))
            .stdin(body.into_bytes());
        let (tx, rx) = std::sync::mpsc::channel();
        let _handle = self.runner.start(job, move |outcome| drop(tx.send(outcome)));
        let beat = (lease / 3).clamp(Duration::from_millis(200), Duration::from_mins(1));
        let ran = loop {
            match rx.recv_timeout(beat) {
                Ok(outcome) => break outcome,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let note = ClientMsg::Progress {
                        worker: self.name.clone(),
                        task_id: id.to_owned(),
                        attempt: Some(attempt),
                        note: format!("`{program}` still running"),
                    };
                    // The lease counts from this message; a refused one means the task is gone.
                    if let Ok(ServerMsg::Error { error, .. }) = self.request(&note, Duration::ZERO) {
                        self.log(&format!("lost {id}: {error}"));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Outcome::Failed(format!("the runner of `{program}` stopped"), None);
                }
            }
        };
        if ran.timed_out {
            return Outcome::Failed(
                format!(
                    "`{program}` ran past the task's lease of {} and was stopped with everything it started",
                    human(lease)
                ),
                None,
            );
        }
        let (out, err) = (ran.stdout, ran.stderr);
        // What the agent spent counts whether it succeeded or not.
        let usage = super::usage::from_output(&out);
        if ran.code != Some(0) {
            let tail = crate::command::tail(&err, 400);
            if err.starts_with("mcc: could not start") {
                return Outcome::Failed(tail, usage);
            }
            let how = ran.code.map_or_else(|| "was killed".to_owned(), |c| format!("exited {c}"));
            return Outcome::Failed(
                if tail.is_empty() { format!("`{program}` {how}") } else { format!("`{program}` {how}: {tail}") },
                usage,
            );
        }
        let result: Option<Value> =
            out.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str(l.trim()).ok());
        if let Some(r) = &result
            && r["is_error"] == true
        {
            let why = r["result"].as_str().or(r["error"].as_str()).unwrap_or("the command reported is_error");
            return Outcome::Failed(
                format!("`{program}` exited 0 but reported an error: {}", crate::command::tail(why, 400)),
                usage,
            );
        }
        let listed = result.as_ref().map(|r| strings(&r["deliverables"])).filter(|d| !d.is_empty());
        let deliverables = listed.unwrap_or_else(|| {
            strings(&task["context"]["outputFiles"]).into_iter().filter(|p| self.root.join(p).exists()).collect()
        });
        if let Some(missing) = deliverables.iter().find(|p| !self.root.join(p).exists()) {
            return Outcome::Failed(format!("`{program}` named deliverable `{missing}`, which does not exist"), usage);
        }
        let notes = result.as_ref().and_then(|r| r["notes"].as_str().map(str::to_owned));
        Outcome::Done { deliverables, notes, usage }
    }
}
