//! Broadcast rounds, measured rather than assumed.
//!
//! The Raft paper's timing requirement (§5.6) is `broadcastTime ≪ electionTimeout ≪
//! MTBF`, where the broadcast time is "the average time it takes a server to send RPCs
//! in parallel to every server in the cluster and receive their responses"; it puts it
//! at 0.5–20 ms "depending on storage technology", because the recipients of those RPCs
//! persist what they were sent before they answer. An experiment that states its
//! broadcast time should report what its network and disk model actually produced.
//!
//! A *round* is a step of node X whose messages go to every other node (one
//! `broadcast`, or one `send` per peer as Raft's AppendEntries do). It opens when its
//! messages leave X (after X's own records are durable) and closes when every
//! recipient has answered: an answer is a message to X emitted by the step in which
//! the recipient handled X's message. A round that loses a recipient (crashed,
//! partitioned, message dropped) never closes and is not counted. A closed round notes
//! whether every recipient persisted a record before answering, which is the kind of
//! RPC §5.6 means; heartbeats that change nothing on disk are rounds too, but only of
//! the network.
//!
//! Tracking is off unless asked for ([`crate::Sim::track_broadcasts`]), and costs
//! nothing then.

use qlab_core::{Nanos, NodeId};

/// One closed round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastRound {
    pub sender: NodeId,
    /// When its messages left the sender.
    pub started_ns: Nanos,
    /// From then until the last recipient's answer arrived.
    pub duration_ns: Nanos,
    /// Every recipient wrote to its disk before answering (a RequestVote that granted
    /// or moved the voter's term, an AppendEntries that carried entries).
    pub recipients_persisted: bool,
}

/// What a message in flight carries for the tracker: the round it belongs to, and the
/// round it answers (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RoundTag {
    pub round: u32,
    pub answers: u32,
    /// The answering step persisted a record.
    pub answer_persisted: bool,
}

struct OpenRound {
    sender: NodeId,
    started_ns: Nanos,
    /// Recipients that have not answered yet, one bit per node id.
    waiting: u64,
    recipients_persisted: bool,
}

/// The rounds of one run. Round ids start at 1 (a tag of 0 means none).
#[derive(Default)]
pub(crate) struct RoundTracker {
    open: Vec<Option<OpenRound>>,
    pub closed: Vec<BroadcastRound>,
}

impl RoundTracker {
    /// The largest cluster a round's bit set covers.
    pub const MAX_NODES: u32 = 64;

    /// Open a round from `sender` to the nodes in `recipients` (a bit per node id).
    pub fn open(&mut self, sender: NodeId, recipients: u64, now: Nanos) -> u32 {
        self.open.push(Some(OpenRound { sender, started_ns: now, waiting: recipients, recipients_persisted: true }));
        self.open.len() as u32
    }

    /// `from`'s answer to `round` arrived at the round's sender at `now`. A second copy
    /// of an answer (network duplication) changes nothing.
    pub fn answer(&mut self, round: u32, from: NodeId, persisted: bool, now: Nanos) {
        let Some(slot) = self.open.get_mut(round as usize - 1) else { return };
        let Some(open) = slot.as_mut() else { return };
        let bit = 1u64 << from.0;
        if open.waiting & bit == 0 {
            return;
        }
        open.waiting &= !bit;
        open.recipients_persisted &= persisted;
        if open.waiting == 0 {
            self.closed.push(BroadcastRound {
                sender: open.sender,
                started_ns: open.started_ns,
                duration_ns: now - open.started_ns,
                recipients_persisted: open.recipients_persisted,
            });
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_closes_when_every_recipient_has_answered_once() {
        let mut tracker = RoundTracker::default();
        let round = tracker.open(NodeId(0), 0b110, 100);
        tracker.answer(round, NodeId(1), true, 130);
        tracker.answer(round, NodeId(1), true, 140); // a duplicate: still waiting for 2
        assert!(tracker.closed.is_empty());
        tracker.answer(round, NodeId(2), false, 150);
        assert_eq!(
            tracker.closed,
            vec![BroadcastRound { sender: NodeId(0), started_ns: 100, duration_ns: 50, recipients_persisted: false }]
        );
        tracker.answer(round, NodeId(2), true, 160); // after it closed
        assert_eq!(tracker.closed.len(), 1);
    }

    #[test]
    fn a_round_missing_an_answer_is_never_counted() {
        let mut tracker = RoundTracker::default();
        let round = tracker.open(NodeId(0), 0b1110, 0);
        tracker.answer(round, NodeId(1), true, 10);
        tracker.answer(round, NodeId(3), true, 10);
        assert!(tracker.closed.is_empty());
    }
}
