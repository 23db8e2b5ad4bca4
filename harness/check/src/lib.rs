//! # qlab-check: the safety checkers run on every trial, and their verdicts
//!
//! They read only what honest replicas reported ([`Observation`]s, in time order) and
//! the client history, never protocol internals, so the same checkers judge Raft,
//! Multi-Paxos and PBFT:
//!
//! - **Election Safety**: at most one node reports `Elected` for any epoch.
//! - **State Machine Safety**: every replica that commits or applies slot `s` has the
//!   same entry digest there.
//! - **Log Matching**: replicas that commit slot `s` agree on the prefix digest at `s`
//!   (the hash chain over slots `1..=s`), i.e. on the whole log up to `s`.
//! - **Leader Completeness**: when a node is elected for epoch `e`, its log holds every
//!   entry committed before that moment. The chain value at the highest committed slot
//!   covers every earlier slot, so one comparison per election suffices. An election
//!   observed after one of a higher epoch is a stale leader's (its announcement held
//!   back, say, behind a slow disk write): the commits seen since the first epoch above
//!   `e` appeared may belong to the later epochs, which the property says nothing about
//!   for `e`, so it is compared with the highest commit seen *before* that epoch
//!   appeared, which can only be of epochs up to `e`. A stale leader cannot commit
//!   without a quorum that has not moved on, and anything it did commit is judged by
//!   the three invariants above.
//! - **Linearizability** of the client history against the KV model
//!   ([`crate::linearizability`]).

pub mod linearizability;

use qlab_core::{Digest, Event, Nanos, NodeId, Observation, nanos_to_ms};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    ElectionSafety,
    LogMatching,
    LeaderCompleteness,
    StateMachineSafety,
    Linearizability,
}

impl Invariant {
    pub const ALL: [Invariant; 5] = [
        Invariant::ElectionSafety,
        Invariant::LogMatching,
        Invariant::LeaderCompleteness,
        Invariant::StateMachineSafety,
        Invariant::Linearizability,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Invariant::ElectionSafety => "election-safety",
            Invariant::LogMatching => "log-matching",
            Invariant::LeaderCompleteness => "leader-completeness",
            Invariant::StateMachineSafety => "state-machine-safety",
            Invariant::Linearizability => "linearizability",
        }
    }
}

/// One broken invariant, with where and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub invariant: Invariant,
    pub time: Nanos,
    pub nodes: Vec<NodeId>,
    /// The slot (log index) or epoch concerned, as the detail says.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        write!(
            f,
            "{} violated at {:.3} ms on [{}]: {}",
            self.invariant.name(),
            nanos_to_ms(self.time),
            nodes.join(", "),
            self.detail
        )
    }
}

/// What the checkers concluded about one trial: the `safety` column of every kind.
///
/// A verdict is one of four things, never a free string: `Ok` claims that every
/// checker ran to the end and found nothing; `Inconclusive` that none found a
/// violation but at least one gave up (the linearizability search exhausted its state
/// budget), so nothing is claimed either way; `Unsafe` names the invariants broken; and
/// `Error` marks a trial that could not run (its row says why), which no checker saw.
/// A broken invariant outranks a checker that gave up: a violation is a proof.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Inconclusive,
    Unsafe(BTreeSet<Invariant>),
    Error,
}

impl Verdict {
    /// The verdict of violations found by checkers of which some may have given up.
    pub fn of(violations: &[Violation], gave_up: bool) -> Verdict {
        if !violations.is_empty() {
            Verdict::Unsafe(violations.iter().map(|v| v.invariant).collect())
        } else if gave_up {
            Verdict::Inconclusive
        } else {
            Verdict::Ok
        }
    }

    pub fn is_ok(&self) -> bool {
        *self == Verdict::Ok
    }

    pub fn is_unsafe(&self) -> bool {
        matches!(self, Verdict::Unsafe(_))
    }

    pub fn is_inconclusive(&self) -> bool {
        *self == Verdict::Inconclusive
    }

    /// Both verdicts together (two runs that make one trial): unsafe if either is, with
    /// both sets of invariants; then error, then inconclusive; ok only if both are.
    pub fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Unsafe(mut a), Verdict::Unsafe(b)) => {
                a.extend(b);
                Verdict::Unsafe(a)
            }
            (u @ Verdict::Unsafe(_), _) | (_, u @ Verdict::Unsafe(_)) => u,
            (Verdict::Error, _) | (_, Verdict::Error) => Verdict::Error,
            (Verdict::Inconclusive, _) | (_, Verdict::Inconclusive) => Verdict::Inconclusive,
            (Verdict::Ok, Verdict::Ok) => Verdict::Ok,
        }
    }
}

/// A trial not judged yet (a blank row): `error`, never `ok`.
impl Default for Verdict {
    fn default() -> Self {
        Verdict::Error
    }
}

/// As the `safety` column writes it: `ok`, `inconclusive`, `error`, or the broken
/// invariants' names in order, joined by `+` (`log-matching+state-machine-safety`).
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => f.write_str("ok"),
            Verdict::Inconclusive => f.write_str("inconclusive"),
            Verdict::Error => f.write_str("error"),
            Verdict::Unsafe(invariants) => {
                // By name, so the column reads the same whatever order the enum has.
                let mut names: Vec<&str> = invariants.iter().map(Invariant::name).collect();
                names.sort_unstable();
                f.write_str(&names.join("+"))
            }
        }
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;

    fn from_str(text: &str) -> Result<Verdict, String> {
        match text {
            "ok" => Ok(Verdict::Ok),
            "inconclusive" => Ok(Verdict::Inconclusive),
            "error" => Ok(Verdict::Error),
            _ => {
                let invariants = text
                    .split('+')
                    .map(|name| {
                        Invariant::ALL.iter().copied().find(|i| i.name() == name).ok_or_else(|| {
                            let allowed: Vec<&str> = Invariant::ALL.iter().map(Invariant::name).collect();
                            format!(
                                "{text:?} is not a verdict: expected ok, inconclusive, error or invariants joined by + \
                                 ({})",
                                allowed.join(", ")
                            )
                        })
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
                Ok(Verdict::Unsafe(invariants))
            }
        }
    }
}

impl serde::Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Verdict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Every checker's finding on one finished trial: the verdict, the violations in time
/// order (a linearizability violation dated at the run's end), and the lines a results
/// row records (one per violation, plus one if a checker gave up).
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub violations: Vec<Violation>,
    pub details: Vec<String>,
}

/// Judge a finished run: the replica invariants over its observations and the
/// linearizability of its clients' history.
pub fn judge_run(observations: &[Observation], history: &[crate::linearizability::HistoryOp], end: Nanos) -> Judgement {
    judge(check_observations(observations), crate::linearizability::check_history(history), end)
}

/// [`judge_run`] from findings already reached (by the streaming checkers).
pub fn judge(
    mut violations: Vec<Violation>,
    linearizability: crate::linearizability::LinCheck,
    end: Nanos,
) -> Judgement {
    use crate::linearizability::LinCheck;
    violations.sort_by_key(|v| v.time);
    let mut details: Vec<String> = violations.iter().map(ToString::to_string).collect();
    let mut gave_up = false;
    match linearizability {
        LinCheck::Linearizable => {}
        LinCheck::Violation { key, operations, from_ns } => {
            violations.push(Violation {
                invariant: Invariant::Linearizability,
                time: end,
                nodes: vec![],
                detail: format!("key {key}"),
            });
            details.push(format!(
                "linearizability violated on key {key} ({} from {:.3} ms)",
                crate::linearizability::operations_phrase(operations).trim_start_matches("the "),
                nanos_to_ms(from_ns)
            ));
        }
        LinCheck::Inconclusive { key, states } => {
            gave_up = true;
            details.push(format!("linearizability inconclusive on key {key} after {states} states"));
        }
    }
    Judgement { verdict: Verdict::of(&violations, gave_up), violations, details }
}

/// Check the replica-side invariants over a time-ordered observation stream.
/// Reports at most one violation per (invariant, slot or epoch) to keep reports short.
pub fn check_observations(observations: &[Observation]) -> Vec<Violation> {
    let mut checker = SafetyChecker::new();
    for o in observations {
        checker.observe(o);
    }
    checker.finish()
}

#[derive(Clone, Copy)]
struct CommittedSlot {
    digest: Digest,
    prefix_digest: Digest,
    node: NodeId,
}

/// References of consecutive slots `from ..`, held in a ring: slots are log indices,
/// so they come nearly in order and a lookup is an index.
#[derive(Clone, Default)]
struct SlotWindow {
    from: u64,
    slots: std::collections::VecDeque<Option<CommittedSlot>>,
}

impl SlotWindow {
    fn get(&self, slot: u64) -> Option<CommittedSlot> {
        let index = slot.checked_sub(self.from)?;
        self.slots.get(usize::try_from(index).ok()?).copied().flatten()
    }

    fn insert(&mut self, slot: u64, reference: CommittedSlot) {
        if self.slots.is_empty() {
            self.from = slot;
        }
        while slot < self.from {
            self.slots.push_front(None);
            self.from -= 1;
        }
        let index = (slot - self.from) as usize;
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        self.slots[index] = Some(reference);
    }

    /// Remove every slot below `floor`, handing each held reference to `dropped`.
    fn drop_below(&mut self, floor: u64, mut dropped: impl FnMut(u64, CommittedSlot)) {
        while self.from < floor {
            let Some(front) = self.slots.pop_front() else { break };
            if let Some(reference) = front {
                dropped(self.from, reference);
            }
            self.from += 1;
        }
    }

    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Slots kept in full behind the highest committed one (see [`SafetyChecker`]).
pub const RETAINED_SLOTS: u64 = 1 << 16;
/// Below the retained window, every slot that is a multiple of this is kept.
pub const ANCHOR_EVERY_SLOTS: u64 = 1 << 12;

/// The replica invariants checked one observation at a time, in time order, in memory
/// that grows only by one anchor per [`ANCHOR_EVERY_SLOTS`] slots however long the run.
///
/// The first commit of each slot is the reference every later commit of that slot is
/// compared with. A reference is dropped once every node of the cluster has committed
/// past it (when the cluster's size is given), or once it falls more than
/// [`RETAINED_SLOTS`] behind the highest committed slot; every
/// [`ANCHOR_EVERY_SLOTS`]th reference is kept for good. Nothing is lost by dropping: a
/// node whose log differs at slot `s` has a different prefix digest at every slot after
/// `s`, so its next commit at a slot still held (at the latest the next anchor) reports
/// the log-matching violation — a restarted node that reports old slots again included.
/// Only the slot named in such a report is then the later one.
///
/// `Clone`, so that a state-space search can carry one along each path it explores.
#[derive(Clone)]
pub struct SafetyChecker {
    leaders: HashMap<u64, NodeId>,
    /// The highest epoch an election has been observed for.
    highest_epoch_elected: Option<u64>,
    /// For each epoch that was the highest elected when it appeared, the highest commit
    /// observed before it did: what a late announcement of a lower epoch is held to.
    committed_before_epoch: std::collections::BTreeMap<u64, Option<(u64, Digest)>>,
    /// References for slots at or above the floor.
    recent: SlotWindow,
    /// References kept below the floor.
    anchors: std::collections::BTreeMap<u64, CommittedSlot>,
    highest_committed: Option<(u64, Digest)>,
    /// Every slot below this has been dropped, bar the anchors.
    dropped_below: u64,
    /// Each node's highest committed slot.
    node_commits: Vec<Option<u64>>,
    reported: std::collections::HashSet<(Invariant, u64)>,
    violations: Vec<Violation>,
    retained_slots: u64,
    anchor_every_slots: u64,
    /// The cluster's size, when known: then a slot every node has committed past is
    /// dropped even inside the retained window.
    nodes: Option<u32>,
    /// Observations taken, and those [`SafetyChecker::observe_late`] took out of order.
    pub observations: u64,
    pub late_observations: u64,
}

impl Default for SafetyChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl SafetyChecker {
    pub fn new() -> Self {
        Self::with_retention(RETAINED_SLOTS, ANCHOR_EVERY_SLOTS)
    }

    /// A checker that keeps `retained_slots` slots in full and an anchor every
    /// `anchor_every_slots` below them (tests use tiny values to exercise the dropping).
    pub fn with_retention(retained_slots: u64, anchor_every_slots: u64) -> Self {
        SafetyChecker {
            leaders: HashMap::new(),
            highest_epoch_elected: None,
            committed_before_epoch: Default::default(),
            recent: Default::default(),
            anchors: Default::default(),
            highest_committed: None,
            dropped_below: 0,
            node_commits: Vec::new(),
            reported: Default::default(),
            violations: Vec::new(),
            retained_slots: retained_slots.max(1),
            anchor_every_slots: anchor_every_slots.max(1),
            nodes: None,
            observations: 0,
            late_observations: 0,
        }
    }

    /// Tell the checker the cluster has `nodes` replicas (ids `0..nodes`).
    pub fn with_nodes(mut self, nodes: u32) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// Slot references held (a measure of the checker's memory).
    pub fn slots_held(&self) -> usize {
        self.recent.len() + self.anchors.len()
    }

    fn report(&mut self, invariant: Invariant, key: u64, time: Nanos, nodes: Vec<NodeId>, detail: String) {
        if self.reported.insert((invariant, key)) {
            self.violations.push(Violation { invariant, time, nodes, detail });
        }
    }

    fn reference(&self, slot: u64) -> Option<CommittedSlot> {
        self.recent.get(slot).or_else(|| self.anchors.get(&slot).copied())
    }

    /// Take the next observation (no earlier in time than the ones before it).
    pub fn observe(&mut self, observation: &Observation) {
        self.take(observation, true);
    }

    /// Take an observation that arrived after later ones were taken. Everything but
    /// Leader Completeness is order-free and checked as usual; an election is not
    /// checked for completeness, since the commits seen since may postdate it.
    pub fn observe_late(&mut self, observation: &Observation) {
        self.late_observations += 1;
        self.take(observation, false);
    }

    fn take(&mut self, observation: &Observation, in_order: bool) {
        self.observations += 1;
        let Observation { time, node, event } = observation;
        let (time, node) = (*time, *node);
        match event {
            Event::Elected { epoch, log_from_slot, log_prefix_digests } => {
                match self.leaders.get(epoch) {
                    Some(other) if *other != node => {
                        let other = *other;
                        self.report(
                            Invariant::ElectionSafety,
                            *epoch,
                            time,
                            vec![other, node],
                            format!("two leaders in epoch {epoch}"),
                        )
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(*epoch, node);
                    }
                }
                let stale = self.highest_epoch_elected.is_some_and(|highest| *epoch < highest);
                if in_order && self.highest_epoch_elected.is_none_or(|highest| *epoch > highest) {
                    self.highest_epoch_elected = Some(*epoch);
                    self.committed_before_epoch.insert(*epoch, self.highest_committed);
                }
                // A stale announcement is held to what was committed before the first
                // epoch above it appeared (the smallest such epoch recorded: they were
                // recorded in increasing order).
                let held_to = if stale {
                    self.committed_before_epoch.range(epoch + 1..).next().and_then(|(_, commit)| *commit)
                } else {
                    self.highest_committed
                };
                if let Some((slot, prefix)) = held_to
                    && in_order
                    && slot >= *log_from_slot
                {
                    let held = log_prefix_digests.get((slot - log_from_slot) as usize);
                    if held != Some(&prefix) {
                        let what = match held {
                            None => format!(
                                "log ends at slot {} but slot {slot} was committed",
                                log_from_slot + log_prefix_digests.len() as u64 - 1
                            ),
                            Some(d) => format!("prefix digest {d} at slot {slot}, committed {prefix}"),
                        };
                        self.report(
                            Invariant::LeaderCompleteness,
                            *epoch,
                            time,
                            vec![node],
                            format!("leader of epoch {epoch} lacks committed entries: {what}"),
                        );
                    }
                }
            }
            Event::Committed { slot, digest, prefix_digest } => {
                let (slot, digest, prefix_digest) = (*slot, *digest, *prefix_digest);
                let index = node.0 as usize;
                if self.node_commits.len() <= index {
                    self.node_commits.resize(index + 1, None);
                }
                self.node_commits[index] = Some(self.node_commits[index].map_or(slot, |s| s.max(slot)));
                match self.reference(slot) {
                    Some(first) => {
                        if first.digest != digest {
                            self.report(
                                Invariant::StateMachineSafety,
                                slot,
                                time,
                                vec![first.node, node],
                                format!("slot {slot} committed as {} and as {digest}", first.digest),
                            );
                        } else if first.prefix_digest != prefix_digest {
                            self.report(
                                Invariant::LogMatching,
                                slot,
                                time,
                                vec![first.node, node],
                                format!(
                                    "same entry at slot {slot} but logs before it differ (prefix {} vs {prefix_digest})",
                                    first.prefix_digest
                                ),
                            );
                        }
                    }
                    // A slot below the floor without a reference was dropped (see the
                    // type's comment): the node's next commit of a held slot covers it.
                    None if slot < self.dropped_below => {}
                    None => {
                        if self.highest_committed.is_none_or(|(s, _)| slot > s) {
                            self.highest_committed = Some((slot, prefix_digest));
                        }
                        // Drop first, so a jump ahead never widens the window.
                        self.drop_below_floor();
                        self.recent.insert(slot, CommittedSlot { digest, prefix_digest, node });
                    }
                }
                self.drop_below_floor();
            }
            Event::Applied { slot, digest } => {
                if let Some(first) = self.reference(*slot)
                    && first.digest != *digest
                {
                    self.report(
                        Invariant::StateMachineSafety,
                        *slot,
                        time,
                        vec![first.node, node],
                        format!("slot {slot} applied as {digest}, committed as {}", first.digest),
                    );
                }
            }
            Event::LeaderKnown { .. } | Event::Restarted { .. } => {}
        }
    }

    /// Slots below this may be dropped.
    fn floor(&self) -> u64 {
        let slowest = match self.nodes {
            Some(n) if self.node_commits.len() as u32 >= n => {
                self.node_commits[..n as usize].iter().map(|c| c.unwrap_or(0)).min().unwrap_or(0)
            }
            _ => 0,
        };
        let highest = self.highest_committed.map_or(0, |(s, _)| s);
        // The slowest node's own commit point stays held: it is the slot its next
        // commits are compared against first.
        slowest.max(highest.saturating_sub(self.retained_slots))
    }

    fn drop_below_floor(&mut self) {
        let floor = self.floor();
        // A node seen for the first time may lower the floor; what was dropped stays
        // dropped rather than taking that node's word as the reference.
        self.dropped_below = self.dropped_below.max(floor);
        let every = self.anchor_every_slots;
        let anchors = &mut self.anchors;
        self.recent.drop_below(floor, |slot, reference| {
            if slot % every == 0 {
                anchors.insert(slot, reference);
            }
        });
    }

    /// The violations found, in the order found.
    pub fn finish(self) -> Vec<Violation> {
        self.violations
    }

    /// The violations found so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// What the checker remembers of the run so far — leaders per epoch, the committed
    /// references, each node's highest commit, what was reported — in one canonical
    /// order, without times or counts. A state-space search keeps it beside the
    /// replicas' states (as the TLA+ specification of Raft keeps its history
    /// variables), so two runs that reach the same replica states with different
    /// histories are not taken for one.
    pub fn history_fingerprint(&self) -> String {
        self.history_fingerprint_renamed(None)
    }

    /// [`SafetyChecker::history_fingerprint`] of the same history with every replica
    /// renamed by `renaming` ([`qlab_core::symmetry`]), for a search that reduces by
    /// symmetry: the histories of two renamed runs print alike.
    pub fn history_fingerprint_renamed(&self, renaming: Option<&qlab_core::symmetry::Renaming>) -> String {
        let rename = |node: NodeId| renaming.map_or(node, |r| r.of(node));
        let mut leaders: Vec<(u64, NodeId)> =
            self.leaders.iter().map(|(epoch, node)| (*epoch, rename(*node))).collect();
        leaders.sort();
        let node_commits = renaming.map_or_else(|| self.node_commits.clone(), |r| r.table(&self.node_commits));
        let mut reported: Vec<&(Invariant, u64)> = self.reported.iter().collect();
        reported.sort();
        let reference = |r: &CommittedSlot| (r.digest, r.prefix_digest);
        let recent: Vec<(u64, (Digest, Digest))> = (self.recent.from..)
            .zip(self.recent.slots.iter())
            .filter_map(|(slot, r)| r.as_ref().map(|r| (slot, reference(r))))
            .collect();
        let anchors: Vec<(u64, (Digest, Digest))> = self.anchors.iter().map(|(s, r)| (*s, reference(r))).collect();
        format!(
            "leaders {leaders:?} highest {:?} before {:?} committed {:?} recent {recent:?} anchors {anchors:?} \
             below {} nodes {:?} reported {reported:?}",
            self.highest_epoch_elected,
            self.committed_before_epoch,
            self.highest_committed,
            self.dropped_below,
            node_commits
        )
    }
}

/// A [`SafetyChecker`] fed from streams that arrive interleaved (real mode: each node
/// reports its own events in time order over its own link, but the reports of
/// different nodes arrive with different delays). Observations wait in one queue per
/// node until the caller's clock has passed their time by a lag, then go to the
/// checker merged in time order; one that arrives after later ones already went is
/// taken as late ([`SafetyChecker::observe_late`]). Memory is what arrives within one
/// lag.
pub struct SafetyStream {
    /// Per node, in time order.
    waiting: Vec<std::collections::VecDeque<Observation>>,
    released_until: Nanos,
    checker: SafetyChecker,
}

impl SafetyStream {
    pub fn new(checker: SafetyChecker) -> Self {
        SafetyStream { waiting: Vec::new(), released_until: 0, checker }
    }

    pub fn push(&mut self, observation: Observation) {
        if observation.time < self.released_until {
            self.checker.observe_late(&observation);
            return;
        }
        let node = observation.node.0 as usize;
        if self.waiting.len() <= node {
            self.waiting.resize_with(node + 1, Default::default);
        }
        let queue = &mut self.waiting[node];
        if queue.back().is_none_or(|last| last.time <= observation.time) {
            queue.push_back(observation);
        } else {
            // Not expected from one node's link, but cheap to tolerate.
            let at = queue.partition_point(|o| o.time <= observation.time);
            queue.insert(at, observation);
        }
    }

    /// Check everything up to `until` (nothing earlier is expected any more).
    pub fn release(&mut self, until: Nanos) {
        loop {
            let earliest = self
                .waiting
                .iter()
                .enumerate()
                .filter_map(|(node, queue)| queue.front().map(|o| (o.time, node)))
                .min()
                .filter(|(time, _)| *time <= until);
            let Some((_, node)) = earliest else { break };
            let observation = self.waiting[node].pop_front().expect("a front");
            self.checker.observe(&observation);
        }
        self.released_until = self.released_until.max(until);
    }

    /// Observations waiting for their turn.
    pub fn waiting(&self) -> usize {
        self.waiting.iter().map(std::collections::VecDeque::len).sum()
    }

    /// Check what is left and hand back the checker.
    pub fn finish(mut self) -> SafetyChecker {
        self.release(Nanos::MAX);
        self.checker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(time: Nanos, node: u32, event: Event) -> Observation {
        Observation { time, node: NodeId(node), event }
    }
    fn d(x: &[u8]) -> Digest {
        Digest::of(x)
    }
    fn committed(slot: u64, entry: &[u8], prefix: &[u8]) -> Event {
        Event::Committed { slot, digest: d(entry), prefix_digest: d(prefix) }
    }

    fn violation(invariant: Invariant) -> Violation {
        Violation { invariant, time: 0, nodes: vec![], detail: String::new() }
    }

    #[test]
    fn a_checker_that_gave_up_is_inconclusive_never_ok() {
        let inconclusive = crate::linearizability::LinCheck::Inconclusive { key: 3, states: 100_000 };
        let judgement = judge(vec![], inconclusive.clone(), 0);
        assert_eq!(judgement.verdict, Verdict::Inconclusive);
        assert_eq!(judgement.verdict.to_string(), "inconclusive");
        assert!(!judgement.verdict.is_ok() && !judgement.verdict.is_unsafe());
        assert_eq!(judgement.details, ["linearizability inconclusive on key 3 after 100000 states"]);
        // A violation found elsewhere still decides the trial: it is a proof.
        let judgement = judge(vec![violation(Invariant::LogMatching)], inconclusive, 0);
        assert_eq!(judgement.verdict.to_string(), "log-matching");
    }

    #[test]
    fn verdicts_read_back_as_written() {
        let both = Verdict::of(&[violation(Invariant::StateMachineSafety), violation(Invariant::LogMatching)], false);
        assert_eq!(both.to_string(), "log-matching+state-machine-safety");
        for verdict in [Verdict::Ok, Verdict::Inconclusive, Verdict::Error, both] {
            assert_eq!(verdict.to_string().parse::<Verdict>(), Ok(verdict));
        }
        let error = "unsafe".parse::<Verdict>().unwrap_err();
        assert!(error.contains("election-safety, log-matching"), "{error}");
    }

    #[test]
    fn joined_verdicts_keep_the_worst() {
        let lin = Verdict::of(&[violation(Invariant::Linearizability)], false);
        assert_eq!(Verdict::Ok.and(Verdict::Ok), Verdict::Ok);
        assert_eq!(Verdict::Ok.and(Verdict::Inconclusive), Verdict::Inconclusive);
        assert_eq!(Verdict::Inconclusive.and(lin.clone()), lin);
        let both = lin.and(Verdict::of(&[violation(Invariant::ElectionSafety)], false));
        assert_eq!(both.to_string(), "election-safety+linearizability");
    }

    #[test]
    fn two_leaders_in_one_epoch_break_election_safety() {
        let elected = |epoch| Event::Elected { epoch, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        let v = check_observations(&[obs(1, 0, elected(3)), obs(2, 1, elected(4)), obs(3, 2, elected(3))]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].invariant, Invariant::ElectionSafety);
        assert_eq!(v[0].nodes, vec![NodeId(0), NodeId(2)]);
    }

    #[test]
    fn different_entries_at_one_slot_break_state_machine_safety() {
        let v = check_observations(&[obs(1, 0, committed(1, b"a", b"pa")), obs(2, 1, committed(1, b"b", b"pb"))]);
        assert_eq!(Verdict::of(&v, false).to_string(), "state-machine-safety");
    }

    #[test]
    fn same_entry_on_different_prefixes_breaks_log_matching() {
        let v = check_observations(&[obs(1, 0, committed(2, b"a", b"p1")), obs(2, 1, committed(2, b"a", b"p2"))]);
        assert_eq!(Verdict::of(&v, false).to_string(), "log-matching");
    }

    #[test]
    fn leader_missing_a_committed_entry_breaks_leader_completeness() {
        let elected = Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        let v = check_observations(&[obs(1, 0, committed(1, b"a", b"p1")), obs(2, 1, elected)]);
        assert_eq!(Verdict::of(&v, false).to_string(), "leader-completeness");
        // Holding it (chain value equal at the committed slot) is fine.
        let elected =
            Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS, d(b"p1")] };
        assert!(check_observations(&[obs(1, 0, committed(1, b"a", b"p1")), obs(2, 1, elected)]).is_empty());
    }

    #[test]
    fn a_stale_leaders_late_announcement_is_not_held_to_later_epochs_commits() {
        let empty = |epoch| Event::Elected { epoch, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        // Epoch 3 is elected and commits slot 1; epoch 2's leader announces only then.
        let late = [obs(1, 1, empty(3)), obs(2, 1, committed(1, b"a", b"p1")), obs(3, 0, empty(2))];
        assert!(check_observations(&late).is_empty());
        // A newer epoch's leader lacking the commit is still caught.
        let newer = [obs(1, 1, empty(3)), obs(2, 1, committed(1, b"a", b"p1")), obs(3, 0, empty(4))];
        assert_eq!(Verdict::of(&check_observations(&newer), false).to_string(), "leader-completeness");
    }

    /// Issue 42's blind spot: a late `Elected(2)` after `Elected(3)` is still held to
    /// the commit seen before epoch 3 appeared (which can only be of epochs up to 2).
    #[test]
    fn a_late_announcement_is_held_to_the_commits_before_the_first_higher_epoch() {
        let empty = |epoch| Event::Elected { epoch, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        let has_x = Event::Elected { epoch: 3, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS, d(b"p1")] };
        let sequence =
            [obs(1, 0, empty(1)), obs(2, 0, committed(1, b"x", b"p1")), obs(3, 2, has_x), obs(4, 3, empty(2))];
        let violations = check_observations(&sequence);
        assert_eq!(Verdict::of(&violations, false).to_string(), "leader-completeness", "{violations:?}");
        assert!(violations[0].detail.contains("leader of epoch 2"), "{violations:?}");
        // Without the epoch-3 line it is the ordinary check, and the same violation.
        let plain = [sequence[0].clone(), sequence[1].clone(), sequence[3].clone()];
        assert_eq!(Verdict::of(&check_observations(&plain), false).to_string(), "leader-completeness");
        // A late epoch-2 leader that has X is fine.
        let has_x_2 =
            Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS, d(b"p1")] };
        let fine = [sequence[0].clone(), sequence[1].clone(), sequence[2].clone(), obs(4, 3, has_x_2)];
        assert!(check_observations(&fine).is_empty());
    }

    /// Chain values of a log whose entry at `diverge_at` (if any) differs.
    fn chain(len: u64, diverge_at: Option<u64>) -> Vec<(Digest, Digest)> {
        let mut prefix = Digest::GENESIS;
        (1..=len)
            .map(|slot| {
                let entry = if Some(slot) == diverge_at { d(b"other") } else { d(&slot.to_le_bytes()) };
                prefix = prefix.chain(slot, &entry);
                (entry, prefix)
            })
            .collect()
    }

    #[test]
    fn a_divergence_at_a_dropped_slot_is_caught_at_the_next_slot_still_held() {
        let mut checker = SafetyChecker::with_retention(4, 8);
        let good = chain(40, None);
        let mut time = 0;
        for node in [0, 1] {
            for (i, (entry, prefix)) in good.iter().enumerate() {
                time += 1;
                let slot = i as u64 + 1;
                checker.observe(&obs(time, node, Event::Committed { slot, digest: *entry, prefix_digest: *prefix }));
            }
        }
        assert!(checker.slots_held() <= 4 + 1 + 40 / 8, "held {}", checker.slots_held());
        // A late node whose log differs at slot 3, which nobody holds any more.
        let bad = chain(40, Some(3));
        for (i, (entry, prefix)) in bad.iter().enumerate().take(12) {
            time += 1;
            let slot = i as u64 + 1;
            checker.observe(&obs(time, 2, Event::Committed { slot, digest: *entry, prefix_digest: *prefix }));
        }
        let violations = checker.finish();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].invariant, Invariant::LogMatching);
        assert!(violations[0].detail.contains("slot 8"), "{}", violations[0].detail);
    }

    #[test]
    fn a_lagging_node_keeps_the_slots_it_has_yet_to_commit() {
        // Node 2 stopped at slot 10: the others' references from 10 on stay, however
        // far they run (within the retention), so its next commit is compared exactly.
        let mut checker = SafetyChecker::with_retention(1_000, 8).with_nodes(3);
        let good = chain(500, None);
        let mut time = 0;
        for (node, upto) in [(2, 10), (0, 500), (1, 500)] {
            for (i, (entry, prefix)) in good.iter().enumerate().take(upto) {
                time += 1;
                let slot = i as u64 + 1;
                checker.observe(&obs(time, node, Event::Committed { slot, digest: *entry, prefix_digest: *prefix }));
            }
        }
        assert_eq!(checker.slots_held(), 491 + 1);
        checker.observe(&obs(time + 1, 2, Event::Committed { slot: 11, digest: d(b"x"), prefix_digest: d(b"y") }));
        assert_eq!(Verdict::of(&checker.finish(), false).to_string(), "state-machine-safety");
    }

    #[test]
    fn a_late_election_is_not_judged_against_commits_made_after_it() {
        let mut checker = SafetyChecker::new();
        checker.observe(&obs(10, 0, committed(1, b"a", b"p1")));
        let elected = Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        checker.observe_late(&obs(5, 1, elected));
        assert_eq!(checker.late_observations, 1);
        assert!(checker.finish().is_empty());
    }

    #[test]
    fn a_stream_puts_interleaved_reports_back_in_time_order() {
        // Node 1's election reaches the harness before node 0's earlier commit: in
        // time order the commit came first and the leader lacks it.
        let elected = Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        let mut stream = SafetyStream::new(SafetyChecker::new());
        stream.push(obs(20, 1, elected));
        stream.push(obs(10, 0, committed(1, b"a", b"p1")));
        stream.release(15);
        assert_eq!(stream.waiting(), 1);
        let checker = stream.finish();
        assert_eq!(checker.late_observations, 0);
        assert_eq!(Verdict::of(&checker.finish(), false).to_string(), "leader-completeness");
    }

    #[test]
    fn consistent_runs_pass() {
        let v = check_observations(&[
            obs(1, 0, committed(1, b"a", b"p1")),
            obs(2, 1, committed(1, b"a", b"p1")),
            obs(3, 1, Event::Applied { slot: 1, digest: d(b"a") }),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }
}
