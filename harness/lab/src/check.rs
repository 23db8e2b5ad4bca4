//! Safety checkers run on every trial.
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
//!   covers every earlier slot, so one comparison per election suffices.
//! - **Linearizability** of the client history against the KV model
//!   ([`crate::linearizability`]).

use qlab_core::{Digest, Event, Nanos, NodeId, nanos_to_ms};
use qlab_sim::Observation;
use std::collections::HashMap;
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

/// Every verdict on a finished run: the replica invariants (ordered by time) and the
/// linearizability of the clients' history (a violation of it dated `end`), as
/// violations and as the lines a results row records.
pub fn judge_run(
    observations: &[Observation],
    history: &[crate::linearizability::HistoryOp],
    end: Nanos,
) -> (Vec<Violation>, Vec<String>) {
    use crate::linearizability::{LinCheck, check_history};
    let mut violations = check_observations(observations);
    violations.sort_by_key(|v| v.time);
    let mut details: Vec<String> = violations.iter().map(ToString::to_string).collect();
    match check_history(history) {
        LinCheck::Linearizable => {}
        LinCheck::Violation { key, operations } => {
            violations.push(Violation {
                invariant: Invariant::Linearizability,
                time: end,
                nodes: vec![],
                detail: format!("key {key}"),
            });
            details.push(format!("linearizability violated on key {key} ({operations} operations)"));
        }
        LinCheck::Inconclusive { key, states } => {
            details.push(format!("linearizability inconclusive on key {key} after {states} states"));
        }
    }
    (violations, details)
}

/// The verdict column of a trial: `ok`, or the violated invariants joined by `+`.
pub fn verdict(violations: &[Violation]) -> String {
    if violations.is_empty() {
        return "ok".to_string();
    }
    let mut names: Vec<&str> = violations.iter().map(|v| v.invariant.name()).collect();
    names.sort_unstable();
    names.dedup();
    names.join("+")
}

#[derive(Clone, Copy)]
struct CommittedSlot {
    digest: Digest,
    prefix_digest: Digest,
    node: NodeId,
}

/// Check the replica-side invariants over a time-ordered observation stream.
/// Reports at most one violation per (invariant, slot or epoch) to keep reports short.
pub fn check_observations(observations: &[Observation]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut leaders: HashMap<u64, NodeId> = HashMap::new();
    let mut committed: HashMap<u64, CommittedSlot> = HashMap::new();
    let mut highest_committed: Option<(u64, Digest)> = None;
    let mut reported: std::collections::HashSet<(Invariant, u64)> = Default::default();
    let mut report = |violations: &mut Vec<Violation>, invariant, key: u64, time, nodes, detail| {
        if reported.insert((invariant, key)) {
            violations.push(Violation { invariant, time, nodes, detail });
        }
    };
    for Observation { time, node, event } in observations {
        debug_assert!(observations.first().is_none_or(|f| f.time <= *time));
        match event {
            Event::Elected { epoch, log_from_slot, log_prefix_digests } => {
                match leaders.get(epoch) {
                    Some(other) if other != node => report(
                        &mut violations,
                        Invariant::ElectionSafety,
                        *epoch,
                        *time,
                        vec![*other, *node],
                        format!("two leaders in epoch {epoch}"),
                    ),
                    Some(_) => {}
                    None => {
                        leaders.insert(*epoch, *node);
                    }
                }
                if let Some((slot, prefix)) = highest_committed
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
                        report(
                            &mut violations,
                            Invariant::LeaderCompleteness,
                            *epoch,
                            *time,
                            vec![*node],
                            format!("leader of epoch {epoch} lacks committed entries: {what}"),
                        );
                    }
                }
            }
            Event::Committed { slot, digest, prefix_digest } => match committed.get(slot) {
                None => {
                    committed
                        .insert(*slot, CommittedSlot { digest: *digest, prefix_digest: *prefix_digest, node: *node });
                    if highest_committed.is_none_or(|(s, _)| *slot > s) {
                        highest_committed = Some((*slot, *prefix_digest));
                    }
                }
                Some(first) => {
                    if first.digest != *digest {
                        report(
                            &mut violations,
                            Invariant::StateMachineSafety,
                            *slot,
                            *time,
                            vec![first.node, *node],
                            format!("slot {slot} committed as {} and as {digest}", first.digest),
                        );
                    } else if first.prefix_digest != *prefix_digest {
                        report(
                            &mut violations,
                            Invariant::LogMatching,
                            *slot,
                            *time,
                            vec![first.node, *node],
                            format!(
                                "same entry at slot {slot} but logs before it differ (prefix {} vs {prefix_digest})",
                                first.prefix_digest
                            ),
                        );
                    }
                }
            },
            Event::Applied { slot, digest } => {
                if let Some(first) = committed.get(slot)
                    && first.digest != *digest
                {
                    report(
                        &mut violations,
                        Invariant::StateMachineSafety,
                        *slot,
                        *time,
                        vec![first.node, *node],
                        format!("slot {slot} applied as {digest}, committed as {}", first.digest),
                    );
                }
            }
            Event::LeaderKnown { .. } | Event::Restarted { .. } => {}
        }
    }
    violations
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
        assert_eq!(verdict(&v), "state-machine-safety");
    }

    #[test]
    fn same_entry_on_different_prefixes_breaks_log_matching() {
        let v = check_observations(&[obs(1, 0, committed(2, b"a", b"p1")), obs(2, 1, committed(2, b"a", b"p2"))]);
        assert_eq!(verdict(&v), "log-matching");
    }

    #[test]
    fn leader_missing_a_committed_entry_breaks_leader_completeness() {
        let elected = Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] };
        let v = check_observations(&[obs(1, 0, committed(1, b"a", b"p1")), obs(2, 1, elected)]);
        assert_eq!(verdict(&v), "leader-completeness");
        // Holding it (chain value equal at the committed slot) is fine.
        let elected =
            Event::Elected { epoch: 2, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS, d(b"p1")] };
        assert!(check_observations(&[obs(1, 0, committed(1, b"a", b"p1")), obs(2, 1, elected)]).is_empty());
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
