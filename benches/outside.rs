//! `cargo bench --bench outside`: what the worker's look at its checkout
//! costs (docs/worker.md, "Writes outside a task"), on a real git
//! repository of 10,000 tracked files in 100 folders with 5 of them
//! changed and 3 untracked files beside them: the look kept when a task is
//! granted (`next`) and the comparison at `done`, each a whole call as the
//! client makes it (git status, then size, mtime and SHA-256 of the files
//! that differ). The budget is 50 ms for each.
//!
//! Numbers are printed, never asserted: these machines are shared and noisy.
//! Results are written down in docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mcc::snapshot;

const FILES: usize = 10_000;
const RUNS: usize = 30;

fn git(root: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=b@example.org", "-c", "user.name=b", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(root)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn median_and_worst(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    git(root, &["init", "-q"]);
    for i in 0..FILES {
        let folder = root.join(format!("src/m{:02}", i % 100));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("f{i}.rs")), format!("// file {i}\npub fn f{i}() {{}}\n").repeat(20))
            .unwrap();
    }
    // Written an hour ago, as files of a checkout in use are: git trusts the
    // stat data of its index for them instead of reading them again.
    let past = std::time::SystemTime::now() - Duration::from_hours(1);
    for i in 0..FILES {
        let file = root.join(format!("src/m{:02}/f{i}.rs", i % 100));
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(past).unwrap();
    }
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "10,000 files"]);
    mcc::Layout::of_root(root).create().expect("create .mcc/");
    for i in 0..5 {
        std::fs::write(root.join(format!("src/m{i:02}/f{i}.rs")), "changed before the grant\n").unwrap();
    }
    for i in 0..3 {
        std::fs::write(root.join(format!("new{i}.txt")), "untracked\n").unwrap();
    }
    // Git's index learns the files' stat data once, as any checkout in use has.
    git(root, &["status", "-s"]);

    // What git alone costs: the floor under both calls.
    let status = ["--no-optional-locks", "status", "--porcelain=v2", "-z", "--branch", "--untracked-files=all"];
    let mut floors = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        git(root, &status);
        floors.push(start.elapsed());
    }

    let writes = vec!["out/a.md".to_owned()];
    let cpu_before = cpu_ticks();
    let mut grants = Vec::new();
    for attempt in 1..=RUNS as u32 {
        // Another task each time, so the look is taken, not kept from before.
        let task = format!("t{attempt}");
        let start = Instant::now();
        snapshot::at_grant(root, "bench", &task, 1, &writes);
        grants.push(start.elapsed());
    }
    let grant_cpu = cpu_ticks() - cpu_before;
    // The attempt changes two more files and writes its own.
    std::fs::write(root.join("src/m50/f50.rs"), "changed during the attempt\n").unwrap();
    std::fs::write(root.join("src/m00/f0.rs"), "changed again\n").unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::write(root.join("out/a.md"), "its deliverable\n").unwrap();
    let last = format!("t{RUNS}");
    let mut dones = Vec::new();
    let mut changed = Vec::new();
    let cpu_before = cpu_ticks();
    for _ in 0..RUNS {
        let start = Instant::now();
        changed = snapshot::changed_since_grant(root, "bench", &last);
        dones.push(start.elapsed());
    }
    let done_cpu = cpu_ticks() - cpu_before;
    assert_eq!(changed, ["src/m00/f0.rs", "src/m50/f50.rs"], "the bench measures a comparison that works");
    let (grant, grant_worst) = median_and_worst(grants);
    let (done, done_worst) = median_and_worst(dones);
    let (floor, floor_worst) = median_and_worst(floors);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let per_call = |ticks: u64| Duration::from_millis(ticks * 10 / RUNS as u64);
    println!("checkout of {FILES} tracked files, 5 changed and 3 untracked before the grant; {RUNS} runs each");
    println!("  load average {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("  git status alone:                      median {floor:.1?}, worst {floor_worst:.1?}");
    println!(
        "  look at next (kept in .mcc/snapshots/): median {grant:.1?}, worst {grant_worst:.1?}, CPU {:?} a call (budget 50ms)",
        per_call(grant_cpu)
    );
    println!(
        "  comparison at done:                    median {done:.1?}, worst {done_worst:.1?}, CPU {:?} a call (budget 50ms)",
        per_call(done_cpu)
    );
    println!("  named at done: {changed:?}");
}

/// CPU time used by this process and the children it waited for (git), in
/// clock ticks of 10 ms (`/proc/self/stat`: utime, stime, cutime, cstime).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().skip(11).take(4).filter_map(|f| f.parse::<u64>().ok()).sum()
}
