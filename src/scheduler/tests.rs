use std::convert::Infallible;

use super::*;
use crate::task::{Report, TaskSpec};

/// The default policy's choice: the oldest grantable task.
#[allow(clippy::unnecessary_wraps, reason = "the shape of `Scheduler::offer`'s assign")]
fn fifo(_: &Worker, ready: &[&Task], _: &Scheduler) -> Result<Option<TaskId>, Infallible> {
    Ok(ready.first().map(|t| t.spec.id.clone()))
}

fn task(id: &str) -> TaskSpec {
    TaskSpec::new(id, format!("do {id}"))
}

fn writing(id: &str, outputs: &[&str]) -> TaskSpec {
    let mut t = task(id);
    t.context.output_files = outputs.iter().map(|s| (*s).to_owned()).collect();
    t
}

fn after(id: &str, deps: &[&str]) -> TaskSpec {
    let mut t = task(id);
    t.dependencies = deps.iter().map(|s| (*s).to_owned()).collect();
    t
}

fn done(id: &str, worker: &str) -> Report {
    Report::completed(id, worker, vec![])
}

#[test]
fn tasks_go_out_first_in_first_out_and_a_worker_keeps_what_it_holds() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Held("a".into()));
    assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("b".into()));
    assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Nothing);
    assert_eq!(s.task("a").unwrap().attempt(), 1);
}

#[test]
fn an_expired_lease_returns_the_task_with_a_new_attempt_and_fences_the_old_holder() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 5, ..Settings::default() });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("old", now, 64, fifo).unwrap();
    assert!(s.expire(now + Duration::from_secs(59)).is_empty());
    assert_eq!(s.expire(now + Duration::from_secs(61)), vec!["a".to_owned()]);
    assert_eq!(s.task("a").unwrap().state(), TaskState::Ready);
    let later = now + Duration::from_secs(62);
    assert_eq!(s.offer("new", later, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!(s.task("a").unwrap().attempt(), 2);
    let mut late = done("a", "old");
    late.attempt = Some(1);
    let err = s.submit("old", "a", late, later).unwrap_err();
    assert_eq!(err.code(), "not_holder");
    assert!(err.to_string().contains("held by `new`"), "{err}");
    assert!(err.to_string().contains("lease ran out"), "{err}");
}

#[test]
fn a_report_for_an_old_attempt_of_a_held_task_is_stale() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    s.submit("w", "a", done("a", "w"), now).unwrap();
    s.judge("a", Verdict::Reject(vec!["too short".into()]), now).unwrap();
    let mut old = done("a", "w");
    old.attempt = Some(1);
    assert_eq!(s.submit("w", "a", old, now).unwrap_err().code(), "stale_attempt");
}

#[test]
fn any_message_of_the_holder_extends_its_lease() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 5, ..Settings::default() });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    s.progress("w", "a", None, "half way", now + Duration::from_secs(50)).unwrap();
    assert!(s.expire(now + Duration::from_secs(100)).is_empty());
    assert_eq!(s.expire(now + Duration::from_secs(111)), vec!["a".to_owned()]);
}

#[test]
fn a_task_waits_until_every_dependency_is_accepted() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b"), after("c", &["a", "b"])], None, now).unwrap();
    assert_eq!(s.task("c").unwrap().state(), TaskState::Waiting);
    for (w, id) in [("w1", "a"), ("w2", "b")] {
        assert_eq!(s.offer(w, now, 64, fifo).unwrap(), Offer::Granted(id.into()));
        s.submit(w, id, done(id, w), now).unwrap();
    }
    assert_eq!(s.task("c").unwrap().state(), TaskState::Waiting, "submitted is not accepted");
    s.judge("a", Verdict::Accept, now).unwrap();
    assert_eq!(s.task("c").unwrap().state(), TaskState::Waiting);
    s.judge("b", Verdict::Accept, now).unwrap();
    assert_eq!(s.task("c").unwrap().state(), TaskState::Ready);
}

#[test]
fn unknown_dependencies_and_cycles_are_refused_and_nothing_is_added() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    let err = s.add_tasks(vec![task("a"), after("b", &["zzz"])], None, now).unwrap_err();
    assert_eq!(err, Refusal::UnknownDependency { task: "b".into(), dependency: "zzz".into() });
    assert!(s.is_empty());
    let err = s.add_tasks(vec![after("x", &["y"]), after("y", &["z"]), after("z", &["x"])], None, now).unwrap_err();
    assert_eq!(err.code(), "cycle");
    assert!(err.to_string().contains("x -> y -> z -> x"), "{err}");
    assert!(s.is_empty());
    s.add_tasks(vec![task("a")], None, now).unwrap();
    assert_eq!(s.add_tasks(vec![task("a")], None, now).unwrap_err(), Refusal::DuplicateTask("a".into()));
}

#[test]
fn tasks_writing_overlapping_files_are_never_in_flight_together() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![writing("a", &["out/a.md"]), writing("b", &["out"]), writing("c", &["other/c.md"])], None, now)
        .unwrap();
    assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("c".into()), "b overlaps a");
    assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Nothing);
    s.submit("w1", "a", done("a", "w1"), now).unwrap();
    assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Nothing, "a is still in flight while judged");
    s.judge("a", Verdict::Accept, now).unwrap();
    assert_eq!(s.offer("w3", now, 64, fifo).unwrap(), Offer::Granted("b".into()));
}

#[test]
fn assign_is_shown_at_most_its_number_of_choices_of_the_grantable_tasks_oldest_first() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![writing("a", &["x"]), writing("b", &["x"]), task("c"), task("d")], None, now).unwrap();
    assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    let mut shown = Vec::new();
    let offer = s.offer("w2", now, 2, |_, ready, _| {
        shown = ready.iter().map(|t| t.spec.id.clone()).collect();
        Ok::<_, Infallible>(None)
    });
    assert_eq!(offer, Ok(Offer::Nothing));
    assert_eq!(shown, ["c", "d"], "b waits for a's file; two choices asked");
    assert!(s.held_by("w2").is_none());
}

#[test]
fn a_choice_that_is_reserved_or_unknown_grants_nothing() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![writing("a", &["x"]), writing("b", &["x"]), task("c")], None, now).unwrap();
    s.offer("w1", now, 64, fifo).unwrap();
    // c is grantable, so assign is asked.
    for chosen in ["b", "a", "nope"] {
        let offer = s.offer("w2", now, 64, |_, _, _| Ok::<_, Infallible>(Some(chosen.to_owned())));
        assert_eq!(offer, Ok(Offer::NotGrantable(chosen.to_owned())));
    }
    assert!(s.held_by("w2").is_none());
    assert_eq!(s.task("b").unwrap().state(), TaskState::Ready);
    assert_eq!(s.task("a").unwrap().holder(), Some("w1"));
}

#[test]
fn an_assign_that_fails_grants_nothing_and_says_why() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.take_changes();
    assert_eq!(s.offer("w", now, 64, |_, _, _| Err("assign: boom")), Err("assign: boom"));
    assert!(s.held_by("w").is_none());
    assert_eq!(s.task("a").unwrap().state(), TaskState::Ready);
    assert!(s.pending_events().iter().all(|e| e.kind != EventKind::Assigned));
}

#[test]
fn a_worker_with_a_low_context_score_is_told_to_hand_over() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    let mut report = done("a", "w");
    report.context_efficiency_score = Some(2);
    s.submit("w", "a", report, now).unwrap();
    s.judge("a", Verdict::Accept, now).unwrap();
    assert_eq!(s.offer("w", now, 64, fifo).unwrap(), Offer::HandOver);
    assert_eq!(s.offer("fresh", now, 64, fifo).unwrap(), Offer::Granted("b".into()));
}

#[test]
fn a_rejected_result_goes_back_to_the_same_worker_with_the_reasons() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 2, ..Settings::default() });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    s.submit("w", "a", done("a", "w"), now).unwrap();
    let judged = s.judge("a", Verdict::Reject(vec!["only 20 words".into()]), now).unwrap();
    assert_eq!(judged, Judged::Rejected { reasons: vec!["only 20 words".into()] });
    let t = s.task("a").unwrap();
    assert_eq!((t.state(), t.holder(), t.attempt()), (TaskState::Assigned, Some("w"), 2));
    assert_eq!(t.reasons, vec!["only 20 words".to_owned()]);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    let judged = s.judge("a", Verdict::Reject(vec!["still short".into()]), now).unwrap();
    assert!(matches!(judged, Judged::Failed { .. }), "attempts exhausted");
    assert_eq!(s.task("a").unwrap().state(), TaskState::Failed);
    s.retry("a").unwrap();
    assert_eq!(s.offer("w", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!(s.task("a").unwrap().attempt(), 3, "attempts keep rising after a retry");
}

#[test]
fn a_blocked_task_waits_for_the_answer_and_the_worker_moves_on() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    s.block("w", "a", None, "which format?", now).unwrap();
    assert_eq!(s.offer("w", now, 64, fifo).unwrap(), Offer::Granted("b".into()));
    assert_eq!(s.answer("b", "x").unwrap_err().code(), "wrong_state");
    s.answer("a", "markdown").unwrap();
    assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!(s.task("a").unwrap().answer.as_deref(), Some("markdown"));
}

#[test]
fn a_worker_that_leaves_gives_its_task_back_at_once() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    assert_eq!(s.leave("w"), vec!["a".to_owned()]);
    assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    let err = s.submit("w", "a", done("a", "w"), now).unwrap_err();
    assert_eq!(err.code(), "not_holder");
}

#[test]
fn a_dependency_that_failed_shows_its_dependents_as_stuck() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 1, ..Settings::default() });
    s.add_tasks(vec![task("a"), after("b", &["a"])], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    assert_eq!(s.fail("w", "a", None, "cannot", now).unwrap(), TaskState::Failed);
    assert_eq!(s.stuck(), vec![("b".to_owned(), "a".to_owned())]);
}

#[test]
fn every_change_is_recorded_for_the_store() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    let changes = s.take_changes();
    assert!(changes.tasks.contains("a"));
    assert!(changes.workers.contains("w"));
    let kinds: Vec<_> = changes.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, vec!["created", "worker_joined", "assigned"]);
    assert!(s.take_changes().is_empty());
}

#[test]
fn a_rejection_never_gives_a_worker_a_second_task_to_hold() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    s.submit("w", "a", done("a", "w"), now).unwrap();
    assert_eq!(s.offer("w", now, 64, fifo).unwrap(), Offer::Granted("b".into()), "free while a is judged");
    s.judge("a", Verdict::Reject(vec!["redo".into()]), now).unwrap();
    assert_eq!(s.held_by("w").unwrap().spec.id, "b");
    assert_eq!(s.task("a").unwrap().state(), TaskState::Ready);
    assert_eq!(s.offer("w2", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!(s.next_deadline(), Some(now + Settings::default().lease));
}

#[test]
fn only_grants_that_ended_cost_an_attempt() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 2, ..Settings::default() });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    // Leaving, blocking and answering cost nothing.
    s.offer("w", now, 64, fifo).unwrap();
    s.leave("w");
    s.offer("w", now, 64, fifo).unwrap();
    s.block("w", "a", Some(2), "which?", now).unwrap();
    s.answer("a", "this one").unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    assert_eq!((s.task("a").unwrap().attempt(), s.task("a").unwrap().attempts_used()), (3, 0));
    // An expired lease and a failure do; the second ends the task.
    s.expire(now + Duration::from_mins(2));
    assert_eq!(s.task("a").unwrap().attempts_used(), 1);
    s.offer("v", now, 64, fifo).unwrap();
    assert_eq!(s.fail("v", "a", Some(4), "cannot", now).unwrap(), TaskState::Failed);
    // A retry starts the count again; the attempt (the fencing token) keeps rising.
    s.retry("a").unwrap();
    assert_eq!(s.offer("v", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    assert_eq!((s.task("a").unwrap().attempt(), s.task("a").unwrap().attempts_used()), (5, 0));
}

#[test]
fn a_verdict_is_recorded_with_the_report_applied_for_its_attempt() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, 64, fifo).unwrap();
    let applied = Applied {
        worker: "w".into(),
        status: crate::task::ReportStatus::Completed,
        file: None,
        verdict: None,
        usage: None,
    };
    s.record_applied("a", 1, applied);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    assert_eq!(s.task("a").unwrap().holder(), Some("w"), "a submitted task keeps its holder");
    s.judge("a", Verdict::Reject(vec!["redo".into()]), now).unwrap();
    let verdict = s.task("a").unwrap().applied[&1].verdict.clone().unwrap();
    assert_eq!((verdict.accepted, verdict.failed, verdict.reasons), (false, false, vec!["redo".to_owned()]));
    let back = s.task("a").unwrap();
    assert_eq!((back.attempt(), back.holder(), back.last_holder()), (2, Some("w"), Some("w")));
}

/// The files a task writes, as reservations.
fn outputs(t: &Task) -> Vec<Reservation> {
    t.spec.context.output_files.iter().map(|p| Reservation::new(p)).collect()
}

/// What the indexes must agree with: a walk over every task.
fn brute_candidates(s: &Scheduler) -> Vec<TaskId> {
    let reserved: Vec<Reservation> = s.tasks().filter(|t| t.state().in_flight()).flat_map(outputs).collect();
    let mut ready: Vec<&Task> = s.tasks().filter(|t| t.state() == TaskState::Ready).collect();
    ready.sort_by_key(|t| t.seq());
    ready.into_iter().filter(|t| !any_overlap(&outputs(t), &reserved)).map(|t| t.spec.id.clone()).collect()
}

fn check_indexes(s: &Scheduler, step: usize) {
    let all = brute_candidates(s);
    let got: Vec<TaskId> = s.candidates(usize::MAX).iter().map(|t| t.spec.id.clone()).collect();
    assert_eq!(got, all, "candidates after step {step}");
    let first: Vec<TaskId> = s.candidates(3).iter().map(|t| t.spec.id.clone()).collect();
    assert_eq!(first, all.iter().take(3).cloned().collect::<Vec<_>>(), "first 3 after step {step}");
    for state in TaskState::ALL {
        let mut ids: Vec<&Task> = s.tasks().filter(|t| t.state() == state).collect();
        ids.sort_by_key(|t| t.seq());
        let ids: Vec<&TaskId> = ids.into_iter().map(|t| &t.spec.id).collect();
        assert_eq!(s.ids_in_state(state).collect::<Vec<_>>(), ids, "{state} after step {step}");
        assert_eq!(s.count(state), ids.len());
    }
    for w in s.workers() {
        let held = s.tasks().find(|t| t.state() == TaskState::Assigned && t.holder() == Some(&w.name));
        assert_eq!(s.held_by(&w.name).map(|t| &t.spec.id), held.map(|t| &t.spec.id), "held_by after step {step}");
    }
    check_order(s, step);
}

/// The ordered walks (every task, by phase, by state) against a sort of every task.
fn check_order(s: &Scheduler, step: usize) {
    let brute = |phase: Option<&str>, state: Option<TaskState>| {
        let mut chosen: Vec<&Task> = s
            .tasks()
            .filter(|t| phase.is_none_or(|p| t.phase() == Some(p)) && state.is_none_or(|w| t.state() == w))
            .collect();
        chosen.sort_by_key(|t| t.seq());
        chosen.into_iter().map(|t| t.spec.id.clone()).collect::<Vec<_>>()
    };
    let ids = |list: InOrder| list.into_iter().map(|t| t.spec.id.clone()).collect::<Vec<_>>();
    let all = s.tasks_in_order();
    assert_eq!(all.len(), s.tasks().count(), "len of every task after step {step}");
    assert_eq!(ids(all.clone()), brute(None, None), "every task in order after step {step}");
    assert_eq!(all.iter().map(|t| t.spec.id.clone()).collect::<Vec<_>>(), ids(all), "a second walk");
    for phase in [None, Some("one"), Some("two"), Some("never")] {
        for state in TaskState::ALL.into_iter().map(Some).chain([None]) {
            let list = s.select(phase, state);
            let want = brute(phase, state);
            assert_eq!(list.len(), want.len(), "len of {phase:?} {state:?} after step {step}");
            assert_eq!(ids(list), want, "{phase:?} {state:?} after step {step}");
            if let (Some(p), Some(st)) = (phase, state) {
                assert_eq!(s.phase_count(p, st), want.len(), "count of {p} {st} after step {step}");
            }
        }
    }
}

/// A small deterministic generator: the same walk on every run.
struct Walk(u64);

impl Walk {
    fn pick(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

#[test]
fn the_indexes_agree_with_a_walk_over_every_task_after_random_transitions() {
    // Files that overlap in every way: the same file, a folder and what it
    // holds, siblings with a common prefix, a spelling with `./`.
    let files = ["out/a.md", "out", "out/b.md", "out-b/x", "./out/a.md", "docs/x/y.md", "docs", "z.md"];
    for seed in 1..=20u64 {
        let mut walk = Walk(seed);
        let now = Instant::now();
        let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 3, ..Settings::default() });
        let mut made = 0usize;
        for step in 0..300 {
            let ids: Vec<TaskId> = s.tasks().map(|t| t.spec.id.clone()).collect();
            let some = |walk: &mut Walk| ids.get(walk.pick(ids.len())).cloned().unwrap_or_default();
            let worker = format!("w{}", walk.pick(5));
            match walk.pick(9) {
                0 | 1 => {
                    let n = 1 + walk.pick(3);
                    let mut batch = Vec::new();
                    for _ in 0..n {
                        made += 1;
                        let outputs: Vec<&str> = (0..walk.pick(3)).map(|_| files[walk.pick(files.len())]).collect();
                        let mut spec = writing(&format!("t{made}"), &outputs);
                        if !ids.is_empty() && walk.pick(3) == 0 {
                            spec.dependencies.push(some(&mut walk));
                        }
                        batch.push(spec);
                    }
                    let phase = [None, Some("one"), Some("two")][walk.pick(3)];
                    s.add_tasks(batch, phase, now).unwrap();
                }
                2 | 3 => {
                    let _ = s.offer(&worker, now, 64, |_, ready, _| {
                        Ok::<_, Infallible>(ready.get(walk.pick(ready.len())).map(|t| t.spec.id.clone()))
                    });
                }
                4 => {
                    if let Some(id) = s.held_by(&worker).map(|t| t.spec.id.clone()) {
                        s.submit(&worker, &id, done(&id, &worker), now).unwrap();
                        let verdict =
                            if walk.pick(3) == 0 { Verdict::Reject(vec!["again".into()]) } else { Verdict::Accept };
                        s.judge(&id, verdict, now).unwrap();
                    }
                }
                5 => {
                    if let Some(id) = s.held_by(&worker).map(|t| t.spec.id.clone()) {
                        if walk.pick(2) == 0 {
                            s.fail(&worker, &id, None, "no", now).unwrap();
                        } else {
                            s.block(&worker, &id, None, "which?", now).unwrap();
                        }
                    }
                }
                6 => {
                    let id = some(&mut walk);
                    let _ = s.answer(&id, "this one");
                    let _ = s.cancel(&some(&mut walk));
                    let _ = s.retry(&some(&mut walk));
                }
                7 => {
                    s.leave(&worker);
                }
                _ => {
                    s.expire(now + Duration::from_mins(2));
                }
            }
            check_indexes(&s, step);
        }
        // A restored scheduler rebuilds the same indexes, whatever order the
        // store reads the tasks in.
        let mut tasks: Vec<Task> = s.tasks_in_order().into_iter().cloned().collect();
        tasks.reverse();
        let workers: Vec<Worker> = s.workers().cloned().collect();
        let restored = Scheduler::restore_from(s.settings.clone(), tasks.len(), tasks, workers);
        check_indexes(&restored, usize::MAX);
        let ids = |s: &Scheduler| s.candidates(64).iter().map(|t| t.spec.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&restored), ids(&s));
    }
}

#[test]
fn a_group_blocked_by_a_held_file_frees_when_its_holder_is_accepted_expires_or_is_cancelled() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 5, ..Settings::default() });
    s.add_tasks(vec![writing("a", &["out"]), writing("b", &["out/x.md"]), writing("c", &["other"])], None, now)
        .unwrap();
    assert_eq!(s.offer("w1", now, 64, fifo).unwrap(), Offer::Granted("a".into()));
    // `out/x.md` is under the held `out`: only `c` may go.
    assert_eq!(s.candidates(64).iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["c"]);
    s.expire(now + Duration::from_mins(2));
    assert_eq!(s.candidates(64).iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    let later = now + Duration::from_mins(2);
    assert_eq!(s.offer("w1", later, 64, fifo).unwrap(), Offer::Granted("a".into()));
    s.cancel("a").unwrap();
    assert_eq!(s.candidates(64).iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    assert_eq!(s.offer("w2", later, 64, fifo).unwrap(), Offer::Granted("b".into()));
    s.submit("w2", "b", done("b", "w2"), later).unwrap();
    s.judge("b", Verdict::Accept, later).unwrap();
    assert_eq!(s.candidates(64).iter().map(|t| t.spec.id.as_str()).collect::<Vec<_>>(), ["c"]);
}

#[test]
fn nothing_grantable_says_why_from_the_indexes() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![writing("lane-1", &["lane.md"]), writing("lane-2", &["lane.md"])], None, now).unwrap();
    s.offer("m", now, 64, fifo).unwrap();
    assert_eq!(
        s.idle(),
        Idle::Reserved { ready: 1, files: vec!["lane.md".into()], holders: vec![("lane-1".into(), Some("m".into()))] }
    );
    s.block("m", "lane-1", None, "which lane?", now).unwrap();
    s.offer("m", now, 64, fifo).unwrap();
    s.block("m", "lane-2", None, "and this one?", now).unwrap();
    assert_eq!(s.idle(), Idle::Answer { blocked: 2, tasks: vec!["lane-1".into(), "lane-2".into()] });
    s.cancel("lane-1").unwrap();
    s.cancel("lane-2").unwrap();
    s.add_tasks(vec![task("gate"), after("after", &["gate"])], None, now).unwrap();
    s.offer("g", now, 64, fifo).unwrap();
    assert_eq!(
        s.idle(),
        Idle::Dependencies {
            waiting: 1,
            task: "after".into(),
            on: vec![("gate".into(), TaskState::Assigned, Some("g".into()))]
        }
    );
    s.cancel("after").unwrap();
    assert_eq!(s.idle(), Idle::InProgress { tasks: vec![("gate".into(), Some("g".into()))] });
    s.cancel("gate").unwrap();
    assert_eq!(s.idle(), Idle::NoWork);
}

#[test]
fn an_attempts_company_is_who_held_a_task_while_it_ran_and_a_reserved_file_names_its_task_and_holder() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![writing("a", &["a.md"]), writing("b", &["out/"]), task("c"), task("d")], None, now).unwrap();
    s.offer("w1", now, 64, fifo).unwrap();
    s.offer("w2", now, 64, fifo).unwrap();
    assert_eq!(s.company("a"), ["w2"], "granted while a ran");
    assert_eq!(s.company("b"), ["w1"], "holding when b was granted");
    // w1 reports a done: whoever is granted now is no longer a's company.
    let mut report = done("a", "w1");
    report.attempt = Some(1);
    s.submit("w1", "a", report, now).unwrap();
    s.offer("w3", now, 64, fifo).unwrap();
    assert_eq!(s.company("a"), ["w2"]);
    assert_eq!(s.company("c"), ["w2"], "w1 held nothing when c was granted: its task was submitted");
    // A worker in a folder of its own is nobody's company.
    s.note_own_folder("w2", true);
    assert!(s.company("c").is_empty());

    let (task, holder) = s.reserved_by("out/x.md", "c").expect("b reserves the folder out/");
    assert_eq!((task.spec.id.as_str(), holder), ("b", Some("w2")));
    let (task, holder) = s.reserved_by("a.md", "c").expect("a is submitted, still in flight");
    assert_eq!((task.spec.id.as_str(), holder), ("a", Some("w1")));
    assert!(s.reserved_by("a.md", "a").is_none(), "a task's own files are not another's");
    assert!(s.reserved_by("outer.md", "c").is_none());
}
