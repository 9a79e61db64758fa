use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
// Lua's tests look for a command's live processes here.
pub(crate) use super::live_members;

/// How long any expected event may take before a test fails (not a timing assert).
const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not true within {DEADLINE:?}");
}

fn pid_in(text: &str) -> i32 {
    text.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("no pid in {text:?}"))
}

#[test]
fn a_command_reports_its_code_and_output_and_reads_its_stdin_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Supervisor::new(1).run(Job::shell("echo hi; echo oops >&2; exit 3", dir.path(), DEADLINE)).unwrap();
    assert_eq!((ok.code, ok.stdout.trim(), ok.stderr.trim()), (Some(3), "hi", "oops"));
    assert_eq!(ok.summary(), "exited 3: oops");
    let job = Job::shell("cat; echo \" $GREETING\"", dir.path(), Duration::from_secs(10))
        .stdin("hello")
        .env("GREETING", "world");
    let out = Supervisor::new(1).run(job).unwrap();
    assert_eq!(out.stdout.trim(), "hello world");
    let missing = Supervisor::new(1).run(Job::program("/no/such/program", [""; 0], dir.path(), DEADLINE));
    assert!(missing.is_err(), "a command that cannot start is an error of the blocking call");
}

#[test]
fn a_time_limit_kills_the_whole_process_group_not_just_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Supervisor::new(2);
    // The background job holds the output pipe: killing only `sh` would wait for it, and it would write `late`.
    let script = "echo $$; (sleep 4; echo late > late) & sleep 600; echo never";
    let (tx, rx) = mpsc::channel();
    runner.start(Job::shell(script, dir.path(), Duration::from_millis(200)), move |o| drop(tx.send(o)));
    let outcome = rx.recv_timeout(DEADLINE).expect("the limit ends the command, not the sleep");
    assert!(outcome.timed_out && outcome.code.is_none(), "{outcome:?}");
    assert!(outcome.stderr.contains("time limit of 200ms and its process group was killed"), "{}", outcome.stderr);
    let pgid = pid_in(&outcome.stdout);
    eventually("every process of the command's group is gone", || live_members(pgid).is_empty());
    assert!(!dir.path().join("late").exists(), "the background job was killed with its group");
}

#[test]
fn a_cancel_kills_a_running_command_and_drops_a_queued_one() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Supervisor::new(1);
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let running = runner.start(Job::shell("echo $$ > pid; sleep 600", dir.path(), DEADLINE * 10), move |o| {
        drop(tx.send(("running", o)));
    });
    let queued = runner.start(Job::shell("touch ran", dir.path(), DEADLINE), move |o| drop(tx2.send(("queued", o))));
    queued.cancel();
    eventually("the first command started", || {
        std::fs::read_to_string(dir.path().join("pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let pgid = pid_in(&std::fs::read_to_string(dir.path().join("pid")).unwrap());
    running.cancel();
    let mut outcomes: Vec<(&str, Outcome)> = (0..2).map(|_| rx.recv_timeout(DEADLINE).expect("both report")).collect();
    outcomes.sort_by_key(|(name, _)| *name);
    let [(_, queued), (_, running)] = [outcomes.remove(0), outcomes.remove(0)];
    assert!(queued.code.is_none() && queued.stderr.contains("cancelled before it started"), "{queued:?}");
    assert!(!dir.path().join("ran").exists());
    assert!(running.code.is_none() && !running.timed_out && running.stderr.contains("was cancelled"), "{running:?}");
    eventually("the cancelled group is gone", || live_members(pgid).is_empty());
}

#[test]
fn no_more_than_the_bound_run_at_once_and_the_rest_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Supervisor::new(2);
    let (tx, rx) = mpsc::channel();
    // Each command marks itself running, then waits for the gate.
    let script = "touch run.$$; while [ ! -e gate ]; do sleep 0.02; done; ls run.* | wc -l";
    for _ in 0..6 {
        let tx = tx.clone();
        runner.start(Job::shell(script, dir.path(), DEADLINE * 3), move |o| drop(tx.send(o)));
    }
    let running = || std::fs::read_dir(dir.path()).unwrap().count();
    eventually("two commands run and four wait", || runner.load() == (2, 4) && running() == 2);
    assert_eq!(running(), 2, "a queued command has not started");
    std::fs::write(dir.path().join("gate"), "").unwrap();
    for _ in 0..6 {
        let outcome = rx.recv_timeout(DEADLINE).expect("every command ends once the gate opens");
        assert!(outcome.success(), "{outcome:?}");
    }
    eventually("the runner is idle", || runner.load() == (0, 0));
}

#[test]
fn shutdown_kills_what_runs_and_refuses_what_comes() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Supervisor::new(1);
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    runner.start(Job::shell("echo $$ > pid; sleep 600", dir.path(), DEADLINE * 10), move |o| drop(tx.send(o)));
    eventually("the command started", || {
        std::fs::read_to_string(dir.path().join("pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let pgid = pid_in(&std::fs::read_to_string(dir.path().join("pid")).unwrap());
    runner.shutdown();
    let killed = rx.recv_timeout(DEADLINE).expect("the running command ends");
    assert!(killed.code.is_none(), "{killed:?}");
    eventually("its group is gone", || live_members(pgid).is_empty());
    runner.start(Job::shell("touch late", dir.path(), DEADLINE), move |o| drop(tx2.send(o)));
    let refused = rx.recv_timeout(DEADLINE).unwrap();
    assert!(refused.stderr.contains("shutting down"), "{refused:?}");
    assert!(!dir.path().join("late").exists());
}

#[test]
fn long_output_keeps_its_head_and_tail_and_says_what_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::shell("echo first; head -c 100000 /dev/zero | tr '\\0' x; echo; echo last", dir.path(), DEADLINE)
        .output_cap(1000);
    let out = Supervisor::new(1).run(job).unwrap();
    assert!(out.stdout.starts_with("first\n"), "{}", &out.stdout[..40]);
    assert!(out.stdout.trim_end().ends_with("last"));
    assert!(out.stdout.contains("bytes of output cut here; the command wrote 100012 bytes"), "{}", out.stdout);
    assert!(out.stdout.len() < 1200, "{}", out.stdout.len());
}

#[test]
fn a_command_stopped_at_its_time_limit_gets_sigterm_and_its_trap_writes_a_file_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Supervisor::new(1);
    runner.set_grace(DEADLINE);
    let script = "trap 'echo cleaned > cleaned; exit 0' TERM; touch started; while :; do sleep 0.05; done";
    let started = Instant::now();
    let out = runner.run(Job::shell(script, dir.path(), Duration::from_millis(300))).unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("cleaned")).unwrap(), "cleaned\n");
    // It ended on SIGTERM: the SIGKILL due at the end of the grace never came.
    assert!(started.elapsed() < DEADLINE, "waited for the grace: {:?}", started.elapsed());
}

#[test]
fn a_cancelled_command_gets_sigterm_and_one_that_ignores_it_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Supervisor::new(2);
    let grace = Duration::from_millis(300);
    runner.set_grace(grace);
    let (tx, rx) = mpsc::channel();
    let polite = "trap 'echo bye > polite.bye; exit 0' TERM; echo $$ > polite.pid; while :; do sleep 0.05; done";
    let handle = runner.start(Job::shell(polite, dir.path(), DEADLINE), move |o| drop(tx.send(o)));
    let pid_in_file =
        |name: &str| std::fs::read_to_string(dir.path().join(name)).ok().and_then(|t| t.trim().parse::<i32>().ok());
    eventually("the polite command runs", || pid_in_file("polite.pid").is_some());
    handle.cancel();
    let out = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(out.code, None, "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("polite.bye")).unwrap(), "bye\n");

    // Ignoring SIGTERM (its children inherit that): only SIGKILL ends it, once
    // the grace is over, and the hub's stop (`kill_all`) returns only then.
    let stubborn = "trap '' TERM; echo $$ > stubborn.pid; while :; do sleep 0.05; done";
    let (tx, rx) = mpsc::channel();
    runner.start(Job::shell(stubborn, dir.path(), DEADLINE), move |o| drop(tx.send(o)));
    eventually("the stubborn command runs", || pid_in_file("stubborn.pid").is_some());
    let group = pid_in_file("stubborn.pid").unwrap();
    let stopping = Instant::now();
    runner.kill_all();
    assert!(stopping.elapsed() >= grace, "SIGKILL came before the grace was over: {:?}", stopping.elapsed());
    let out = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!(out.code, None, "{out:?}");
    eventually("every process of the stubborn group is gone", || live_members(group).is_empty());
}
