//! Adding tasks and their dependencies: a batch goes in whole or not at
//! all, without unknown dependencies or cycles; a task waits until every
//! dependency is accepted.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use super::{Refusal, Scheduler, TaskId, TaskState};
use crate::event::EventKind;
use crate::task::{TaskSpec, now_rfc3339};

impl Scheduler {
    /// Add tasks; all or none. Dependencies may point into the same batch.
    pub fn add_tasks(
        &mut self,
        specs: Vec<TaskSpec>,
        phase: Option<&str>,
        _now: Instant,
    ) -> Result<Vec<TaskId>, Refusal> {
        let mut batch: HashSet<&str> = HashSet::new();
        for spec in &specs {
            if self.tasks.contains_key(&spec.id) || !batch.insert(&spec.id) {
                return Err(Refusal::DuplicateTask(spec.id.clone()));
            }
        }
        for spec in &specs {
            for dep in &spec.dependencies {
                if !self.tasks.contains_key(dep) && !batch.contains(dep.as_str()) {
                    return Err(Refusal::UnknownDependency { task: spec.id.clone(), dependency: dep.clone() });
                }
            }
        }
        // Existing tasks cannot depend on new ones, so a cycle lies within the batch.
        if let Some(cycle) = find_cycle(&specs) {
            return Err(Refusal::Cycle(cycle.join(" -> ")));
        }
        let created_at = now_rfc3339();
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            for dep in &spec.dependencies {
                self.dependents.entry(dep.clone()).or_default().push(spec.id.clone());
            }
            let id = self.create(spec, phase, &created_at);
            self.touch_task(&id);
            self.event(EventKind::Created, Some(&id), None, None, Value::Null);
            ids.push(id);
        }
        for id in &ids {
            if self.deps_met(id) {
                self.transition(id, TaskState::Ready);
            }
        }
        Ok(ids)
    }

    pub(super) fn deps_met(&self, id: &str) -> bool {
        self.tasks[id]
            .spec
            .dependencies
            .iter()
            .all(|d| self.tasks.get(d).is_some_and(|t| t.state() == TaskState::Accepted))
    }

    pub(super) fn release_dependents(&mut self, id: &str) {
        let Some(dependents) = self.dependents.get(id).cloned() else { return };
        for dep in dependents {
            if self.tasks.get(&dep).is_some_and(|t| t.state() == TaskState::Waiting) && self.deps_met(&dep) {
                self.transition(&dep, TaskState::Ready);
            }
        }
    }

    /// Tasks that wait on a failed or cancelled dependency, with that dependency.
    pub fn stuck(&self) -> Vec<(TaskId, TaskId)> {
        let mut out = Vec::new();
        for task in self.tasks.values().filter(|t| t.state() == TaskState::Waiting) {
            for dep in &task.spec.dependencies {
                if self.tasks.get(dep).is_some_and(|d| matches!(d.state(), TaskState::Failed | TaskState::Cancelled)) {
                    out.push((task.spec.id.clone(), dep.clone()));
                }
            }
        }
        out.sort();
        out
    }
}

/// A dependency cycle among `specs`, as the ids along it.
fn find_cycle(specs: &[TaskSpec]) -> Option<Vec<String>> {
    let index: HashMap<&str, &TaskSpec> = specs.iter().map(|s| (s.id.as_str(), s)).collect();
    // 0 = unvisited, 1 = on the path, 2 = done.
    let mut mark: HashMap<&str, u8> = HashMap::new();
    for start in specs {
        if mark.contains_key(start.id.as_str()) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start.id.as_str(), 0)];
        mark.insert(&start.id, 1);
        while let Some((id, next)) = path.last_mut() {
            let deps = &index[*id].dependencies;
            if *next < deps.len() {
                let dep = deps[*next].as_str();
                *next += 1;
                if !index.contains_key(dep) {
                    continue;
                }
                match mark.get(dep) {
                    Some(1) => {
                        let from = path.iter().position(|(p, _)| *p == dep).expect("on path");
                        let mut cycle: Vec<String> = path[from..].iter().map(|(p, _)| (*p).to_owned()).collect();
                        cycle.push(dep.to_owned());
                        return Some(cycle);
                    }
                    Some(_) => {}
                    None => {
                        mark.insert(dep, 1);
                        path.push((dep, 0));
                    }
                }
            } else {
                mark.insert(id, 2);
                path.pop();
            }
        }
    }
    None
}
