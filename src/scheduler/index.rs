//! The scheduler's incremental indexes, kept by its one `transition`: tasks
//! by state in grant order, the tasks of each workflow phase by state, and
//! ready tasks grouped by the set of files they write, so finding a
//! grantable task never walks the queue, and neither does listing a phase's
//! tasks or every task in creation order (a merge of the ordered sets: no
//! sort, no copy).
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
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, btree_set};
use std::path::PathBuf;

use super::{Reservation, Task, TaskId, TaskState, any_overlap};

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
    by_state: ByState,
    /// Workflow phase name -> its slot in `phases`.
    phase_ids: HashMap<String, usize>,
    /// The tasks of each named phase by state; tasks outside any phase are
    /// only in `by_state`.
    phases: Vec<ByState>,
    /// `grantable` gained a head since the last `take_grantable_grew`.
    grew: bool,
}

/// Task ids by state, each set in creation (`seq`) order.
type ByState = [BTreeSet<(u64, TaskId)>; TaskState::ALL.len()];

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
            phase_ids: HashMap::new(),
            phases: Vec::new(),
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

    /// The slot of the tasks of workflow phase `name`, made on first use;
    /// none for tasks outside any phase.
    pub(super) fn phase_for(&mut self, name: Option<&str>) -> Option<usize> {
        let name = name?;
        if let Some(id) = self.phase_ids.get(name) {
            return Some(*id);
        }
        let id = self.phases.len();
        self.phase_ids.insert(name.to_owned(), id);
        self.phases.push(ByState::default());
        Some(id)
    }

    /// A task enters `state`.
    pub(super) fn enter(&mut self, id: &str, seq: u64, group: usize, phase: Option<usize>, state: TaskState) {
        self.by_state[slot(state)].insert((seq, id.to_owned()));
        if let Some(p) = phase {
            self.phases[p][slot(state)].insert((seq, id.to_owned()));
        }
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
    pub(super) fn leave(
        &mut self,
        id: &str,
        seq: u64,
        group: usize,
        phase: Option<usize>,
        state: TaskState,
        next: TaskState,
    ) {
        let key = (seq, id.to_owned());
        self.by_state[slot(state)].remove(&key);
        if let Some(p) = phase {
            self.phases[p][slot(state)].remove(&key);
        }
        if state == TaskState::Ready {
            let before = self.groups[group].head();
            self.groups[group].ready.remove(&key);
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
        self.grantable().take(limit).collect()
    }

    /// Every grantable task in grant (creation) order, walked lazily: a
    /// group's lane joins the merge only once its head is next, so taking
    /// the first few costs O(few × log n) however many groups are grantable.
    pub(super) fn grantable(&self) -> Grantable<'_> {
        Grantable {
            groups: &self.groups,
            heads: self.grantable.iter().peekable(),
            lanes: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    pub(super) fn count(&self, state: TaskState) -> usize {
        self.by_state[slot(state)].len()
    }

    /// Tasks in `state`, oldest first.
    pub(super) fn in_state(&self, state: TaskState) -> impl Iterator<Item = &TaskId> {
        self.by_state[slot(state)].iter().map(|(_, id)| id)
    }

    /// Tasks oldest first: those in `state` (any when `None`) of the phase
    /// named `phase` (of any phase or none when `None`).
    pub(super) fn select(&self, phase: Option<&str>, state: Option<TaskState>) -> Merged<'_> {
        let sets = match phase {
            None => Some(&self.by_state),
            Some(name) => self.phase_ids.get(name).map(|p| &self.phases[*p]),
        };
        let lanes = sets
            .into_iter()
            .flat_map(|sets| {
                TaskState::ALL
                    .iter()
                    .zip(sets)
                    .filter(|(s, set)| !set.is_empty() && state.is_none_or(|wanted| wanted == **s))
                    .map(|(_, set)| set.iter().peekable())
            })
            .collect();
        Merged { lanes }
    }

    /// How many tasks of phase `name` are in `state`.
    pub(super) fn phase_count(&self, name: &str, state: TaskState) -> usize {
        self.phase_ids.get(name).map_or(0, |p| self.phases[*p][slot(state)].len())
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

/// Grantable tasks in creation order; see [`Index::grantable`].
pub(super) struct Grantable<'a> {
    groups: &'a [Group],
    /// (head seq, group) of the grantable groups not yet merged, in order.
    heads: std::iter::Peekable<btree_set::Iter<'a, (u64, usize)>>,
    lanes: Vec<std::iter::Peekable<btree_set::Iter<'a, (u64, TaskId)>>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl<'a> Iterator for Grantable<'a> {
    type Item = &'a TaskId;

    fn next(&mut self) -> Option<&'a TaskId> {
        // A group's tasks all come after its head: join it once its head is the oldest left.
        while let Some(&&(seq, group)) = self.heads.peek()
            && self.heap.peek().is_none_or(|Reverse((next, _))| seq < *next)
        {
            self.heads.next();
            self.heap.push(Reverse((seq, self.lanes.len())));
            self.lanes.push(self.groups[group].ready.iter().peekable());
        }
        let Reverse((_, lane)) = self.heap.pop()?;
        let (_, id) = self.lanes[lane].next().expect("peeked");
        if let Some((seq, _)) = self.lanes[lane].peek() {
            self.heap.push(Reverse((*seq, lane)));
        }
        Some(id)
    }
}

/// Ids from a few sets ordered by `seq`, merged into one walk in `seq`
/// order; each step looks at the head of every set (at most one per state).
#[derive(Debug, Clone)]
pub(super) struct Merged<'a> {
    lanes: Vec<std::iter::Peekable<btree_set::Iter<'a, (u64, TaskId)>>>,
}

impl<'a> Iterator for Merged<'a> {
    type Item = &'a TaskId;

    fn next(&mut self) -> Option<&'a TaskId> {
        let (lane, _) = self
            .lanes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, lane)| lane.peek().map(|(seq, _)| (i, *seq)))
            .min_by_key(|(_, seq)| *seq)?;
        self.lanes[lane].next().map(|(_, id)| id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.lanes.iter().map(ExactSizeIterator::len).sum();
        (left, Some(left))
    }
}

impl ExactSizeIterator for Merged<'_> {}

/// Tasks oldest first, from [`super::Scheduler::tasks_in_order`] or
/// [`super::Scheduler::select`]: a walk over the indexes used like a list
/// (`for t in list`, `list.iter()`, `list.len()`), made without a sort or a
/// copy, so it costs what is read of it.
#[derive(Debug, Clone)]
pub struct InOrder<'a> {
    ids: Merged<'a>,
    tasks: &'a HashMap<TaskId, Task>,
}

impl<'a> InOrder<'a> {
    pub(super) fn new(ids: Merged<'a>, tasks: &'a HashMap<TaskId, Task>) -> Self {
        Self { ids, tasks }
    }

    pub fn iter(&self) -> InOrderIter<'a> {
        InOrderIter(self.clone())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> IntoIterator for InOrder<'a> {
    type Item = &'a Task;
    type IntoIter = InOrderIter<'a>;

    fn into_iter(self) -> InOrderIter<'a> {
        InOrderIter(self)
    }
}

impl<'a> IntoIterator for &InOrder<'a> {
    type Item = &'a Task;
    type IntoIter = InOrderIter<'a>;

    fn into_iter(self) -> InOrderIter<'a> {
        self.iter()
    }
}

/// The walk over an [`InOrder`].
#[derive(Debug, Clone)]
pub struct InOrderIter<'a>(InOrder<'a>);

impl<'a> Iterator for InOrderIter<'a> {
    type Item = &'a Task;

    fn next(&mut self) -> Option<&'a Task> {
        let tasks = self.0.tasks;
        self.0.ids.next().map(|id| &tasks[id])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.ids.size_hint()
    }
}

impl ExactSizeIterator for InOrderIter<'_> {}
