//! How a delta is written: once per view for every subscriber of it, with
//! the many task summaries and events spliced in as already written
//! ([`DeltaParts`]), each borrowed from the scheduler's own rather than
//! built into a `Value` and copied; the bytes are what `serde_json` makes
//! of a [`Delta`](crate::wire::Delta).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::scheduler;
use crate::wire::{Stuck, WorkerView};

/// The longest description a delta carries; `mcc tasks show` has it whole.
const DESCRIPTION_IN_DELTA: usize = 200;

/// An [`EventView`] as written, borrowed from the scheduler's event.
#[derive(Serialize)]
pub(super) struct EventOut<'a> {
    pub(super) kind: &'a str,
    pub(super) task: &'a Option<String>,
    pub(super) worker: &'a Option<String>,
    pub(super) attempt: Option<u32>,
    pub(super) detail: &'a Value,
}

/// A [`TaskSummary`] as a delta writes it (description shortened), borrowed
/// from the task.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SummaryOut<'a> {
    id: &'a str,
    description: std::borrow::Cow<'a, str>,
    state: &'a str,
    holder: Option<&'a str>,
    attempt: u32,
    phase: Option<&'a str>,
    lease_left_ms: Option<u64>,
    dependencies: &'a [String],
    reasons: &'a [String],
    question: Option<&'a str>,
}

impl<'a> SummaryOut<'a> {
    pub(super) fn of(t: &'a scheduler::Task, now: Instant) -> Self {
        Self {
            id: &t.spec.id,
            description: shortened(&t.spec.description),
            state: t.state().name(),
            holder: t.holder(),
            attempt: t.attempt(),
            phase: t.phase(),
            lease_left_ms: t.lease_left(now).map(|d| d.as_millis() as u64),
            dependencies: &t.spec.dependencies,
            reasons: t.reasons(),
            question: t.question(),
        }
    }
}

pub(super) fn shortened(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::clip(text, DESCRIPTION_IN_DELTA)
}

/// The parts of one delta; [`DeltaParts::to_json`] writes them as
/// `serde_json` writes a [`Delta`], with the many tasks and events spliced
/// in as already written rather than built into a `Value` and copied per
/// subscriber.
pub(super) struct DeltaParts<'a> {
    pub(super) counts: &'a BTreeMap<String, u64>,
    pub(super) phases: &'a BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) finished: bool,
    pub(super) workflow: Option<&'a str>,
    /// Comma-separated task summaries.
    pub(super) tasks: &'a [u8],
    pub(super) workers: &'a [WorkerView],
    /// Comma-separated events.
    pub(super) events: &'a [u8],
    pub(super) events_left_out: u64,
    pub(super) problems: Option<&'a [String]>,
    pub(super) log: Option<&'a [String]>,
    pub(super) stuck: Option<&'a [Stuck]>,
    /// Written only when it changed: older readers never saw the field.
    pub(super) phase_order: Option<&'a [String]>,
    /// Written only when it changed, as `phase_order`.
    pub(super) budgets: Option<&'a crate::wire::Budgets>,
}

impl DeltaParts<'_> {
    pub(super) fn to_json(&self) -> String {
        fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
            out.push(if out.is_empty() { b'{' } else { b',' });
            serde_json::to_writer(&mut *out, name).expect("a name serializes");
            out.push(b':');
            serde_json::to_writer(&mut *out, value).expect("a delta's part serializes");
        }
        fn spliced(out: &mut Vec<u8>, name: &str, items: &[u8]) {
            out.push(b',');
            serde_json::to_writer(&mut *out, name).expect("a name serializes");
            out.extend_from_slice(b":[");
            out.extend_from_slice(items);
            out.push(b']');
        }
        let mut out = Vec::with_capacity(self.tasks.len() + self.events.len() + 4096);
        field(&mut out, "counts", &self.counts);
        field(&mut out, "phases", &self.phases);
        field(&mut out, "finished", &self.finished);
        field(&mut out, "workflow", &self.workflow);
        spliced(&mut out, "tasks", self.tasks);
        field(&mut out, "workers", &self.workers);
        spliced(&mut out, "events", self.events);
        field(&mut out, "eventsLeftOut", &self.events_left_out);
        field(&mut out, "problems", &self.problems);
        field(&mut out, "log", &self.log);
        field(&mut out, "stuck", &self.stuck);
        if let Some(order) = self.phase_order {
            field(&mut out, "phaseOrder", order);
        }
        if let Some(budgets) = self.budgets {
            field(&mut out, "budgets", budgets);
        }
        out.push(b'}');
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::super::short;
    use super::*;
    use crate::store::read::task_summary;
    use crate::task::TaskSpec;
    use crate::wire::Delta;
    use crate::wire::RawJson;
    use crate::wire::views::EventView;

    /// A delta written from parts is what `serde_json` makes of a [`Delta`]:
    /// subscribers read the same bytes as when the engine built a `Value`.
    #[test]
    fn a_delta_written_from_parts_is_the_delta_serialized() {
        let now = Instant::now();
        let mut s = scheduler::Scheduler::default();
        let mut described = TaskSpec::new("b", "é".repeat(150));
        described.dependencies = vec!["a".into()];
        s.add_tasks(vec![TaskSpec::new("a", "do a"), described], Some("build"), now).unwrap();
        let events = s.take_changes().events;
        let tasks: Vec<&scheduler::Task> = ["a", "b"].iter().map(|id| s.task(id).unwrap()).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        let written = |items: Vec<Vec<u8>>| items.join(&b',');
        let task_json = written(tasks.iter().map(|t| serde_json::to_vec(&SummaryOut::of(t, now)).unwrap()).collect());
        let event_json = written(
            events
                .iter()
                .map(|e| {
                    let out = EventOut {
                        kind: e.kind.name(),
                        task: &e.task,
                        worker: &e.worker,
                        attempt: e.attempt,
                        detail: &e.detail,
                    };
                    serde_json::to_vec(&out).unwrap()
                })
                .collect(),
        );
        let worker =
            WorkerView { name: "w1".into(), holding: Some("a".into()), waiting: true, ..WorkerView::default() };
        let counts: BTreeMap<String, u64> = [("ready".to_owned(), 1), ("waiting".to_owned(), 1)].into();
        let phases: BTreeMap<String, BTreeMap<String, u64>> = [("build".to_owned(), counts.clone())].into();
        let stuck = vec![Stuck { task: "b".into(), dependency: "a".into() }];
        let log = vec!["one".to_owned()];
        let workers = vec![worker.clone()];
        let order = vec!["build".to_owned(), "check".to_owned()];
        let parts = DeltaParts {
            counts: &counts,
            phases: &phases,
            finished: false,
            workflow: Some("flow.lua"),
            tasks: &task_json,
            workers: &workers,
            events: &event_json,
            events_left_out: 3,
            problems: None,
            log: Some(&log),
            stuck: Some(&stuck),
            phase_order: None,
            budgets: None,
        };
        let mut typed = Delta {
            counts: counts.clone(),
            phases: phases.clone(),
            finished: false,
            workflow: Some("flow.lua".into()),
            tasks: tasks.iter().map(|t| short(task_summary(t, now))).collect(),
            workers: vec![worker],
            events: events
                .iter()
                .map(|e| EventView {
                    kind: e.kind.name().to_owned(),
                    task: e.task.clone(),
                    worker: e.worker.clone(),
                    attempt: e.attempt,
                    detail: e.detail.clone(),
                })
                .collect(),
            events_left_out: 3,
            problems: None,
            log: Some(log.clone()),
            stuck: Some(stuck.clone()),
            phase_order: None,
            budgets: None,
        };
        let expected = serde_json::to_string(&serde_json::to_value(&typed).unwrap()).unwrap();
        assert_eq!(parts.to_json(), expected);
        assert!(!expected.contains("phaseOrder"), "written only when it changed: {expected}");
        typed.phase_order = Some(order.clone());
        let expected = serde_json::to_string(&serde_json::to_value(&typed).unwrap()).unwrap();
        assert_eq!(DeltaParts { phase_order: Some(&order), ..parts }.to_json(), expected);
        let read = Delta::from_wire(&RawJson::new(parts.to_json())).unwrap();
        assert!(read.tasks[1].description.ends_with('…') && read.tasks[1].description.len() <= 203, "{read:?}");
    }
}
