use super::*;

fn fifo(_: &Worker, ready: &[&Task]) -> Option<TaskId> {
    ready.first().map(|t| t.spec.id.clone())
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
    assert_eq!(s.offer("w1", now, fifo), Offer::Granted("a".into()));
    assert_eq!(s.offer("w1", now, fifo), Offer::Held("a".into()));
    assert_eq!(s.offer("w2", now, fifo), Offer::Granted("b".into()));
    assert_eq!(s.offer("w3", now, fifo), Offer::Nothing);
    assert_eq!(s.task("a").unwrap().attempt, 1);
}

#[test]
fn an_expired_lease_returns_the_task_with_a_new_attempt_and_fences_the_old_holder() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 5 });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("old", now, fifo);
    assert!(s.expire(now + Duration::from_secs(59)).is_empty());
    assert_eq!(s.expire(now + Duration::from_secs(61)), vec!["a".to_owned()]);
    assert_eq!(s.task("a").unwrap().state, TaskState::Ready);
    let later = now + Duration::from_secs(62);
    assert_eq!(s.offer("new", later, fifo), Offer::Granted("a".into()));
    assert_eq!(s.task("a").unwrap().attempt, 2);
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
    s.offer("w", now, fifo);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    s.judge("a", Verdict::Reject(vec!["too short".into()]), now).unwrap();
    let mut old = done("a", "w");
    old.attempt = Some(1);
    assert_eq!(s.submit("w", "a", old, now).unwrap_err().code(), "stale_attempt");
}

#[test]
fn any_message_of_the_holder_extends_its_lease() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 5 });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, fifo);
    s.progress("w", "a", None, "half way", now + Duration::from_secs(50)).unwrap();
    assert!(s.expire(now + Duration::from_secs(100)).is_empty());
    assert_eq!(s.expire(now + Duration::from_secs(111)), vec!["a".to_owned()]);
}

#[test]
fn a_task_waits_until_every_dependency_is_accepted() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b"), after("c", &["a", "b"])], None, now).unwrap();
    assert_eq!(s.task("c").unwrap().state, TaskState::Waiting);
    for (w, id) in [("w1", "a"), ("w2", "b")] {
        assert_eq!(s.offer(w, now, fifo), Offer::Granted(id.into()));
        s.submit(w, id, done(id, w), now).unwrap();
    }
    assert_eq!(s.task("c").unwrap().state, TaskState::Waiting, "submitted is not accepted");
    s.judge("a", Verdict::Accept, now).unwrap();
    assert_eq!(s.task("c").unwrap().state, TaskState::Waiting);
    s.judge("b", Verdict::Accept, now).unwrap();
    assert_eq!(s.task("c").unwrap().state, TaskState::Ready);
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
    assert_eq!(s.offer("w1", now, fifo), Offer::Granted("a".into()));
    assert_eq!(s.offer("w2", now, fifo), Offer::Granted("c".into()), "b overlaps a");
    assert_eq!(s.offer("w3", now, fifo), Offer::Nothing);
    s.submit("w1", "a", done("a", "w1"), now).unwrap();
    assert_eq!(s.offer("w3", now, fifo), Offer::Nothing, "a is still in flight while judged");
    s.judge("a", Verdict::Accept, now).unwrap();
    assert_eq!(s.offer("w3", now, fifo), Offer::Granted("b".into()));
}

#[test]
fn a_worker_with_a_low_context_score_is_told_to_hand_over() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    s.offer("w", now, fifo);
    let mut report = done("a", "w");
    report.context_efficiency_score = Some(2);
    s.submit("w", "a", report, now).unwrap();
    s.judge("a", Verdict::Accept, now).unwrap();
    assert_eq!(s.offer("w", now, fifo), Offer::HandOver);
    assert_eq!(s.offer("fresh", now, fifo), Offer::Granted("b".into()));
}

#[test]
fn a_rejected_result_goes_back_to_the_same_worker_with_the_reasons() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 2 });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, fifo);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    let judged = s.judge("a", Verdict::Reject(vec!["only 20 words".into()]), now).unwrap();
    assert_eq!(judged, Judged::Rejected { reasons: vec!["only 20 words".into()] });
    let t = s.task("a").unwrap();
    assert_eq!((t.state, t.holder.as_deref(), t.attempt), (TaskState::Assigned, Some("w"), 2));
    assert_eq!(t.reasons, vec!["only 20 words".to_owned()]);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    let judged = s.judge("a", Verdict::Reject(vec!["still short".into()]), now).unwrap();
    assert!(matches!(judged, Judged::Failed { .. }), "attempts exhausted");
    assert_eq!(s.task("a").unwrap().state, TaskState::Failed);
    s.retry("a").unwrap();
    assert_eq!(s.offer("w", now, fifo), Offer::Granted("a".into()));
    assert_eq!(s.task("a").unwrap().attempt, 3, "attempts keep rising after a retry");
}

#[test]
fn a_blocked_task_waits_for_the_answer_and_the_worker_moves_on() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    s.offer("w", now, fifo);
    s.block("w", "a", None, "which format?", now).unwrap();
    assert_eq!(s.offer("w", now, fifo), Offer::Granted("b".into()));
    assert_eq!(s.answer("b", "x").unwrap_err().code(), "wrong_state");
    s.answer("a", "markdown").unwrap();
    assert_eq!(s.offer("w2", now, fifo), Offer::Granted("a".into()));
    assert_eq!(s.task("a").unwrap().answer.as_deref(), Some("markdown"));
}

#[test]
fn a_worker_that_leaves_gives_its_task_back_at_once() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, fifo);
    assert_eq!(s.leave("w"), vec!["a".to_owned()]);
    assert_eq!(s.offer("w2", now, fifo), Offer::Granted("a".into()));
    let err = s.submit("w", "a", done("a", "w"), now).unwrap_err();
    assert_eq!(err.code(), "not_holder");
}

#[test]
fn a_dependency_that_failed_shows_its_dependents_as_stuck() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 1 });
    s.add_tasks(vec![task("a"), after("b", &["a"])], None, now).unwrap();
    s.offer("w", now, fifo);
    assert_eq!(s.fail("w", "a", None, "cannot", now).unwrap(), TaskState::Failed);
    assert_eq!(s.stuck(), vec![("b".to_owned(), "a".to_owned())]);
}

#[test]
fn every_change_is_recorded_for_the_store() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, fifo);
    let changes = s.take_changes();
    assert!(changes.tasks.contains("a"));
    assert!(changes.workers.contains("w"));
    let kinds: Vec<_> = changes.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec!["created", "worker_joined", "assigned"]);
    assert!(s.take_changes().is_empty());
}

#[test]
fn a_rejection_never_gives_a_worker_a_second_task_to_hold() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a"), task("b")], None, now).unwrap();
    s.offer("w", now, fifo);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    assert_eq!(s.offer("w", now, fifo), Offer::Granted("b".into()), "free while a is judged");
    s.judge("a", Verdict::Reject(vec!["redo".into()]), now).unwrap();
    assert_eq!(s.held_by("w").unwrap().spec.id, "b");
    assert_eq!(s.task("a").unwrap().state, TaskState::Ready);
    assert_eq!(s.offer("w2", now, fifo), Offer::Granted("a".into()));
    assert_eq!(s.next_deadline(), Some(now + Settings::default().lease));
}

#[test]
fn only_grants_that_ended_cost_an_attempt() {
    let now = Instant::now();
    let mut s = Scheduler::new(Settings { lease: Duration::from_mins(1), max_attempts: 2 });
    s.add_tasks(vec![task("a")], None, now).unwrap();
    // Leaving, blocking and answering cost nothing.
    s.offer("w", now, fifo);
    s.leave("w");
    s.offer("w", now, fifo);
    s.block("w", "a", Some(2), "which?", now).unwrap();
    s.answer("a", "this one").unwrap();
    s.offer("w", now, fifo);
    assert_eq!((s.task("a").unwrap().attempt, s.task("a").unwrap().attempts_used()), (3, 0));
    // An expired lease and a failure do; the second ends the task.
    s.expire(now + Duration::from_mins(2));
    assert_eq!(s.task("a").unwrap().attempts_used(), 1);
    s.offer("v", now, fifo);
    assert_eq!(s.fail("v", "a", Some(4), "cannot", now).unwrap(), TaskState::Failed);
    // A retry starts the count again; the attempt (the fencing token) keeps rising.
    s.retry("a").unwrap();
    assert_eq!(s.offer("v", now, fifo), Offer::Granted("a".into()));
    assert_eq!((s.task("a").unwrap().attempt, s.task("a").unwrap().attempts_used()), (5, 0));
}

#[test]
fn a_verdict_is_recorded_with_the_report_applied_for_its_attempt() {
    let now = Instant::now();
    let mut s = Scheduler::default();
    s.add_tasks(vec![task("a")], None, now).unwrap();
    s.offer("w", now, fifo);
    let applied =
        Applied { worker: "w".into(), status: crate::task::ReportStatus::Completed, file: None, verdict: None };
    s.record_applied("a", 1, applied);
    s.submit("w", "a", done("a", "w"), now).unwrap();
    assert_eq!(s.task("a").unwrap().holder.as_deref(), Some("w"), "a submitted task keeps its holder");
    s.judge("a", Verdict::Reject(vec!["redo".into()]), now).unwrap();
    let verdict = s.task("a").unwrap().applied[&1].verdict.clone().unwrap();
    assert_eq!((verdict.accepted, verdict.failed, verdict.reasons), (false, false, vec!["redo".to_owned()]));
    let back = s.task("a").unwrap();
    assert_eq!((back.attempt, back.holder.as_deref(), back.last_holder.as_deref()), (2, Some("w"), Some("w")));
}
