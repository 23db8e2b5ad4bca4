//! Reads that do not go through the log, and what each way of serving them costs.
//!
//! A replicated state machine can answer a read by appending it to the log like a
//! write (**`log`**): linearizable, since the read takes effect at its log position,
//! but it costs a replication round and a disk write. The Raft dissertation (Ongaro
//! 2014, §6.4) gives two cheaper ways for the leader to answer from its own state,
//! which Multi-Paxos can use the same way:
//!
//! - **`read-index`** (§6.4). The leader notes its commit index as the read's index,
//!   then confirms it is still leader by a round of heartbeats acknowledged by a
//!   majority *sent after the read arrived*: no other leader can have committed anything
//!   by then, so every write that completed before the read is at or below the index.
//!   Once it has applied up to the index it answers. A new leader first commits an entry
//!   of its own term (its no-op), since only then is its commit index at least every
//!   earlier leader's.
//! - **`lease`** (§6.4.1). The heartbeat round itself is skipped: while a majority
//!   acknowledged a round sent at local time `t`, the leader holds a *lease* until
//!   `t + election_timeout_min × (1 − ρ)/(1 + ρ)`, `ρ` being the bound on how far any
//!   clock's rate may drift (`lease_drift_bound_ppm`). The lease is sound only because
//!   those followers refuse to vote for (Raft) or promise to (Paxos) anyone else until a
//!   minimum election timeout after they last heard from the leader, on their own clock
//!   — the check-quorum vote guard, which also holds for a minimum timeout after a
//!   restart, since a restarted follower forgot whom it heard from. The leader's lease
//!   ends before any such follower's guard as long as the ratio of any two clock rates
//!   stays within `(1 − ρ)/(1 + ρ)`; beyond that a new leader can commit writes while
//!   the old one still answers reads from its lease: stale reads, which the
//!   linearizability checker catches. Without a valid lease the leader falls back to a
//!   read-index round (which also renews the lease).
//! - **`follower-stale`**: every replica answers reads from whatever it has applied,
//!   leader or not. Cheapest and spreads the load, but not linearizable: a follower
//!   behind the leader, or an old leader cut off from the others, returns values that
//!   newer writes already overwrote.
//!
//! [`LeaderReads`] is the leader's side of `read-index` and `lease`, shared by both
//! protocols: they number their heartbeat rounds, report acknowledgements and their
//! commit and apply points, and it says which reads may be answered.

use crate::quorum::{majority, quorum_value};
use crate::{KvStore, Nanos, NodeId, Op, OpResult, Reply, ReplyBody, Request};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How a leader-based protocol serves `get`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Reads are log entries like writes.
    #[default]
    Log,
    /// The leader confirms its leadership with a heartbeat round per read.
    ReadIndex,
    /// The leader answers while it holds a clock-based lease.
    Lease,
    /// Any replica answers from its own state.
    FollowerStale,
}

impl ReadMode {
    /// The names experiment files use, in the order of the enum.
    pub const NAMES: &'static [&'static str] = &["log", "read-index", "lease", "follower-stale"];

    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Log => "log",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Lease => "lease",
            ReadMode::FollowerStale => "follower-stale",
        }
    }

    /// The mode an experiment file or tool names `name`.
    pub fn from_name(name: &str) -> Option<ReadMode> {
        [ReadMode::Log, ReadMode::ReadIndex, ReadMode::Lease, ReadMode::FollowerStale]
            .into_iter()
            .find(|mode| mode.name() == name)
    }

    /// Whether reads go to the leader but skip the log.
    pub fn leader_reads(self) -> bool {
        matches!(self, ReadMode::ReadIndex | ReadMode::Lease)
    }
}

/// The answer to a `get` from `kv` as it stands (the caller has made sure that is
/// recent enough for its read mode); `None` for an operation that is not a read.
pub fn local_read(kv: &KvStore, request: &Request) -> Option<Reply> {
    let Op::Get { key } = request.op else { return None };
    let value = kv.get(key).cloned();
    Some(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(OpResult::Value(value)) })
}

/// The leader's lease length for a minimum election timeout and a drift bound in parts
/// per million: `min × (1 − ρ)/(1 + ρ)`, rounded down.
pub fn lease_ns(election_timeout_ns_min: Nanos, drift_bound_ppm: u64) -> Nanos {
    let ppm = drift_bound_ppm.min(999_999) as u128;
    (election_timeout_ns_min as u128 * (1_000_000 - ppm) / (1_000_000 + ppm)) as Nanos
}

/// A read waiting for its index, its confirming round, or the apply point.
#[derive(Clone, Debug)]
struct PendingRead {
    request: Request,
    /// The commit index the read must see; `None` until the leader's term has started.
    index: Option<u64>,
    /// The heartbeat round whose majority acknowledgement confirms the read.
    round: u64,
}

/// The leader's bookkeeping for `read-index` and `lease` reads during one term.
#[derive(Clone, Debug)]
pub struct LeaderReads {
    me: NodeId,
    nodes: u32,
    lease_ns: Nanos,
    /// Reads are answered only once the commit index reached this (the first entry of
    /// the leader's own term).
    term_start_index: u64,
    /// The last heartbeat round sent, and when (local clock) the unconfirmed ones went.
    round: u64,
    sent_at: VecDeque<(u64, Nanos)>,
    /// Highest round each replica acknowledged.
    acked: Vec<u64>,
    /// Highest round a majority acknowledged.
    confirmed: u64,
    lease_until: Option<Nanos>,
    waiting: Vec<PendingRead>,
    /// A read is waiting for a round not sent yet.
    round_wanted: bool,
}

impl LeaderReads {
    /// The same reads held by the leader renamed by `renaming` ([`crate::symmetry`]).
    pub fn renamed(&self, renaming: &crate::symmetry::Renaming) -> Self {
        LeaderReads { me: renaming.of(self.me), acked: renaming.table(&self.acked), ..self.clone() }
    }

    /// A new term: reads wait until `term_start_index` is committed.
    pub fn new(me: NodeId, nodes: u32, lease_ns: Nanos, term_start_index: u64) -> Self {
        LeaderReads {
            me,
            nodes,
            lease_ns,
            term_start_index,
            round: 0,
            sent_at: VecDeque::new(),
            acked: vec![0; nodes as usize],
            confirmed: 0,
            lease_until: None,
            waiting: Vec::new(),
            round_wanted: false,
        }
    }

    /// Whether a lease read may be answered now, at `commit_index`, without a round.
    pub fn lease_holds(&self, now: Nanos, commit_index: u64) -> bool {
        commit_index >= self.term_start_index && self.lease_until.is_some_and(|until| now < until)
    }

    /// Queue a read that arrived now; it is confirmed by the next round sent.
    pub fn enqueue(&mut self, request: Request, commit_index: u64) {
        let index = (commit_index >= self.term_start_index).then_some(commit_index);
        self.waiting.push(PendingRead { request, index, round: self.round + 1 });
        self.round_wanted = true;
    }

    /// Whether a read waits for a heartbeat round not sent yet (send one now).
    pub fn round_wanted(&self) -> bool {
        self.round_wanted
    }

    /// The number of the heartbeat round being sent now, at local time `now`.
    pub fn next_round(&mut self, now: Nanos) -> u64 {
        self.round += 1;
        self.sent_at.push_back((self.round, now));
        self.round_wanted = false;
        self.round
    }

    /// `from` acknowledged heartbeat round `round`.
    pub fn on_ack(&mut self, from: NodeId, round: u64) {
        let Some(acked) = self.acked.get_mut(from.0 as usize) else { return };
        if round <= *acked || round > self.round {
            return;
        }
        *acked = round;
        let rounds = self.acked.iter().enumerate().map(|(i, r)| if i == self.me.0 as usize { self.round } else { *r });
        let Some(confirmed) = quorum_value(rounds, majority(self.nodes)) else { return };
        if confirmed <= self.confirmed {
            return;
        }
        self.confirmed = confirmed;
        while let Some(&(round, sent)) = self.sent_at.front() {
            if round > confirmed {
                break;
            }
            if round == confirmed {
                // The followers that acknowledged it heard from us no earlier than `sent`.
                self.lease_until = Some(self.lease_until.unwrap_or(0).max(sent + self.lease_ns));
            }
            self.sent_at.pop_front();
        }
    }

    /// The reads that may be answered now: confirmed, indexed, and applied.
    pub fn take_ready(&mut self, commit_index: u64, applied_index: u64) -> Vec<Request> {
        if commit_index >= self.term_start_index {
            for read in &mut self.waiting {
                // A read that came before the term started sees the commit point of
                // now, which is after it arrived: still inside its interval.
                read.index.get_or_insert(commit_index);
            }
        }
        let confirmed = self.confirmed;
        let (ready, waiting): (Vec<PendingRead>, Vec<PendingRead>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|read| read.round <= confirmed && read.index.is_some_and(|index| index <= applied_index));
        self.waiting = waiting;
        ready.into_iter().map(|read| read.request).collect()
    }

    /// Reads still waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientId, Op};

    fn read(client: u64) -> Request {
        Request::new(ClientId(client), 1, Op::Get { key: 1 })
    }

    #[test]
    fn lease_is_shortened_by_the_drift_bound() {
        assert_eq!(lease_ns(150_000_000, 0), 150_000_000);
        // 1%: 150 ms × 0.99 / 1.01.
        assert_eq!(lease_ns(150_000_000, 10_000), 147_029_702);
    }

    #[test]
    fn a_read_waits_for_a_round_sent_after_it_arrived() {
        let mut reads = LeaderReads::new(NodeId(0), 3, 1_000, 1);
        let early = reads.next_round(0);
        reads.enqueue(read(1), 5);
        assert!(reads.round_wanted());
        // An acknowledgement of the round sent before the read does not confirm it.
        reads.on_ack(NodeId(1), early);
        assert!(reads.take_ready(5, 5).is_empty());
        let round = reads.next_round(10);
        reads.on_ack(NodeId(2), round);
        assert_eq!(reads.take_ready(5, 4), vec![], "not applied up to its index yet");
        assert_eq!(reads.take_ready(5, 5), vec![read(1)]);
    }

    #[test]
    fn reads_wait_for_the_term_to_start() {
        let mut reads = LeaderReads::new(NodeId(0), 3, 1_000, 8);
        reads.enqueue(read(1), 7);
        let round = reads.next_round(0);
        reads.on_ack(NodeId(1), round);
        assert!(reads.take_ready(7, 7).is_empty());
        assert!(!reads.lease_holds(5, 7), "no lease before the no-op commits");
        assert_eq!(reads.take_ready(8, 8), vec![read(1)]);
    }

    #[test]
    fn lease_runs_from_when_the_confirmed_round_was_sent() {
        let mut reads = LeaderReads::new(NodeId(0), 5, 1_000, 0);
        let round = reads.next_round(100);
        reads.on_ack(NodeId(1), round);
        assert!(!reads.lease_holds(150, 0), "one follower of four is no majority");
        reads.on_ack(NodeId(3), round);
        assert!(reads.lease_holds(150, 0));
        assert!(reads.lease_holds(1_099, 0));
        assert!(!reads.lease_holds(1_100, 0));
    }

    #[test]
    fn mode_names_round_trip() {
        for name in ReadMode::NAMES {
            let mode: ReadMode = serde_json_like(name);
            assert_eq!(mode.name(), *name);
            assert_eq!(ReadMode::from_name(name), Some(mode));
        }
        assert_eq!(ReadMode::from_name("stale"), None);
    }

    fn serde_json_like(name: &str) -> ReadMode {
        use serde::de::IntoDeserializer;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
        ReadMode::deserialize(de).expect("a known mode")
    }
}
