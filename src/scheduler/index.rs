//! The scheduler's incremental indexes, kept by its one `transition`: tasks
//! by state in grant order, and ready tasks grouped by the set of files they
//! write, so finding a grantable task never walks the queue.
//!
//! Ready tasks that write exactly the same files form one group. A group is
//! blocked while any in-flight task writes a file overlapping one of its
//! own (`blocked_by` counts them); `grantable` holds the head (oldest ready
//! task) of every group with ready tasks that is not blocked. When a task
//! enters or leaves flight only the groups overlapping its files are
//! touched, found through `paths` (each group's files, ordered so that the
//! files under a folder are one range). Costs are O(files × log n) per
//! transition and O(limit × log n) per offer.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::path::PathBuf;

use super::{Reservation, TaskId, TaskState, any_overlap};

/// Ready tasks writing one set of files.
#[derive(Debug, Default)]
struct Group {
    /// Sorted and without repeats; empty for tasks that write nothing.
    outputs: Vec<Reservation>,
    ready: BTreeSet<(u64, TaskId)>,
    /// In-flight tasks whose files overlap these.
    blocked_by: u32,
}

impl Group {
    fn head(&self) -> Option<u64> {
        self.ready.first().map(|(seq, _)| *seq)
    }
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct Index {
    groups: Vec<Group>,
    ids: HashMap<Vec<Reservation>, usize>,
    /// Every file of every group -> the groups writing it.
    paths: BTreeMap<PathBuf, Vec<usize>>,
    /// (head seq, group) of groups with ready tasks.
    heads: BTreeSet<(u64, usize)>,
    /// The part of `heads` that is not blocked.
    grantable: BTreeSet<(u64, usize)>,
    /// In-flight tasks and their group.
    flying: HashMap<TaskId, usize>,
    by_state: [BTreeSet<(u64, TaskId)>; TaskState::ALL.len()],
    /// `grantable` gained a head since the last `take_grantable_grew`.
    grew: bool,
}

/// The group of tasks that write nothing: never blocked, blocks nothing.
const NO_OUTPUTS: usize = 0;

impl Default for Index {
    fn default() -> Self {
        let mut ids = HashMap::new();
        ids.insert(Vec::new(), NO_OUTPUTS);
        Self {
            groups: vec![Group::default()],
            ids,
            paths: BTreeMap::new(),
            heads: BTreeSet::new(),
            grantable: BTreeSet::new(),
            flying: HashMap::new(),
            by_state: Default::default(),
            grew: false,
        }
    }
}

fn slot(state: TaskState) -> usize {
    TaskState::ALL.iter().position(|s| *s == state).expect("every state is in ALL")
}

impl Index {
    /// The group of tasks writing `outputs`, created on first use.
    pub(super) fn group_for(&mut self, outputs: &[String]) -> usize {
        let mut set: Vec<Reservation> = outputs.iter().map(|p| Reservation::new(p)).collect();
        set.sort();
        set.dedup();
        if let Some(id) = self.ids.get(&set) {
            return *id;
        }
        let id = self.groups.len();
        // Tasks already in flight block the new group as they would an old one.
        let blocked_by = self.flying.values().filter(|g| any_overlap(&self.groups[**g].outputs, &set)).count();
        for r in &set {
            self.paths.entry(r.path().to_owned()).or_default().push(id);
        }
        self.ids.insert(set.clone(), id);
        self.groups.push(Group { outputs: set, ready: BTreeSet::new(), blocked_by: blocked_by as u32 });
        id
    }

    /// A task enters `state`.
    pub(super) fn enter(&mut self, id: &str, seq: u64, group: usize, state: TaskState) {
        self.by_state[slot(state)].insert((seq, id.to_owned()));
        if state == TaskState::Ready {
            let before = self.groups[group].head();
            self.groups[group].ready.insert((seq, id.to_owned()));
            self.rehead(group, before);
        }
        if state.in_flight() && self.flying.insert(id.to_owned(), group).is_none() {
            self.reserve(group, true);
        }
    }

    /// A task leaves `state` (for `next`, which tells whether it stays in flight).
    pub(super) fn leave(&mut self, id: &str, seq: u64, group: usize, state: TaskState, next: TaskState) {
        self.by_state[slot(state)].remove(&(seq, id.to_owned()));
        if state == TaskState::Ready {
            let before = self.groups[group].head();
            self.groups[group].ready.remove(&(seq, id.to_owned()));
            self.rehead(group, before);
        }
        if state.in_flight() && !next.in_flight() && self.flying.remove(id).is_some() {
            self.reserve(group, false);
        }
    }

    /// Keep `heads` and `grantable` right after `group`'s ready set changed.
    fn rehead(&mut self, group: usize, before: Option<u64>) {
        let after = self.groups[group].head();
        if before == after {
            return;
        }
        if let Some(seq) = before {
            self.heads.remove(&(seq, group));
            self.grantable.remove(&(seq, group));
        }
        if let Some(seq) = after {
            self.heads.insert((seq, group));
            if self.groups[group].blocked_by == 0 {
                self.grantable.insert((seq, group));
                self.grew = true;
            }
        }
    }

    /// A task of `group` enters (`on`) or leaves flight: every group whose
    /// files overlap its own is blocked once more, or once less.
    fn reserve(&mut self, group: usize, on: bool) {
        for g in self.overlapping(group) {
            let entry = &mut self.groups[g];
            let was_free = entry.blocked_by == 0;
            if on {
                entry.blocked_by += 1;
            } else {
                entry.blocked_by = entry.blocked_by.saturating_sub(1);
            }
            let free = entry.blocked_by == 0;
            if let Some(seq) = entry.head()
                && was_free != free
            {
                if free {
                    self.grantable.insert((seq, g));
                    self.grew = true;
                } else {
                    self.grantable.remove(&(seq, g));
                }
            }
        }
    }

    /// Groups writing a file that overlaps one of `group`'s: the files under
    /// each of its paths (one range) and each folder above it (a look-up each).
    fn overlapping(&self, group: usize) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for r in &self.groups[group].outputs {
            let path = r.path();
            for (key, groups) in self.paths.range(path.to_owned()..) {
                if !key.starts_with(path) {
                    break;
                }
                found.extend(groups.iter().copied());
            }
            for folder in path.ancestors().skip(1) {
                if let Some(groups) = self.paths.get(folder) {
                    found.extend(groups.iter().copied());
                }
            }
        }
        found
    }

    /// Whether a ready task of `group` may be granted now.
    pub(super) fn is_free(&self, group: usize) -> bool {
        self.groups[group].blocked_by == 0
    }

    /// The first `limit` grantable tasks in grant (creation) order.
    pub(super) fn candidates(&self, limit: usize) -> Vec<&TaskId> {
        let mut lanes: Vec<_> =
            self.grantable.iter().take(limit).map(|(_, g)| self.groups[*g].ready.iter().peekable()).collect();
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        for (lane, it) in lanes.iter_mut().enumerate() {
            if let Some((seq, _)) = it.peek() {
                heap.push(Reverse((*seq, lane)));
            }
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(Reverse((_, lane))) = heap.pop() else { break };
            let (_, id) = lanes[lane].next().expect("peeked");
            out.push(id);
            if let Some((seq, _)) = lanes[lane].peek() {
                heap.push(Reverse((*seq, lane)));
            }
        }
        out
    }

    pub(super) fn count(&self, state: TaskState) -> usize {
        self.by_state[slot(state)].len()
    }

    /// Tasks in `state`, oldest first.
    pub(super) fn in_state(&self, state: TaskState) -> impl Iterator<Item = &TaskId> {
        self.by_state[slot(state)].iter().map(|(_, id)| id)
    }

    /// Tasks in `state` from creation number `seq` on, oldest first, with their number.
    pub(super) fn in_state_from(&self, state: TaskState, seq: u64) -> impl Iterator<Item = (u64, &TaskId)> {
        self.by_state[slot(state)].range((seq, TaskId::new())..).map(|(seq, id)| (*seq, id))
    }

    /// The oldest ready group that is blocked, with the in-flight tasks blocking it.
    pub(super) fn first_blocked(&self) -> Option<(&[Reservation], Vec<&TaskId>)> {
        let (_, group) = self.heads.iter().find(|(_, g)| self.groups[*g].blocked_by > 0)?;
        let outputs = &self.groups[*group].outputs;
        let mut by: Vec<&TaskId> = self
            .flying
            .iter()
            .filter(|(_, g)| any_overlap(&self.groups[**g].outputs, outputs))
            .map(|(id, _)| id)
            .collect();
        by.sort();
        Some((outputs, by))
    }

    /// True once after `grantable` gained a task: someone waiting may take it.
    pub(super) fn take_grantable_grew(&mut self) -> bool {
        std::mem::take(&mut self.grew)
    }
}
