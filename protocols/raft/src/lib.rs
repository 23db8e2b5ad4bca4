//! # Raft, §5 of Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm" (2014)
//!
//! Raft replicates a log of client commands across `n` servers and tolerates the crash
//! of any minority. Time is divided into *terms*; each term begins with an election and
//! has at most one leader, which alone accepts client requests.
//!
//! **Elections (§5.2).** A follower that hears nothing from a leader for a randomized
//! *election timeout* (uniform in `[election_timeout_ns_min, election_timeout_ns_max]`,
//! randomization being what breaks split votes) increments its term, votes for itself and
//! asks every peer for a vote with `RequestVote`. A server grants at most one vote per
//! term, and persists that vote *before* answering, so a crash cannot make it vote twice.
//! A candidate with votes from a majority becomes leader.
//!
//! **Election restriction (§5.4.1).** A vote is granted only if the candidate's log is at
//! least as up to date as the voter's (higher last term, or same last term and at least as
//! long). Since a committed entry is on a majority and a winner needs a majority of votes,
//! every leader holds every committed entry (*Leader Completeness*).
//!
//! **Log replication (§5.3).** The leader appends a client command to its log and sends
//! `AppendEntries(prevLogIndex, prevLogTerm, entries, leaderCommit)`. A follower accepts
//! only if its log holds an entry at `prevLogIndex` with term `prevLogTerm`; by induction
//! this gives the *Log Matching Property* (same index and term ⇒ identical prefixes).
//! Existing entries are truncated only on a real conflict (same index, different term):
//! a delayed or duplicated `AppendEntries` whose entries already match must never cut
//! entries that arrived later. On rejection the follower returns the conflicting term and
//! its first index so the leader skips back a whole term at a time (the fast back-off
//! sketched at the end of §5.3) instead of one entry per round trip.
//!
//! **Commit rule (§5.4.2, Figure 8).** The leader commits an index once a majority stores
//! it, *but only for entries of its own term*; earlier-term entries are committed
//! indirectly through them. Counting replicas of an old-term entry is unsafe: Figure 8
//! shows such an entry being overwritten after it reached a majority. Each new leader
//! therefore appends a no-op of its term at once, so its predecessors' entries commit
//! without waiting for the next client command.
//!
//! **Heartbeats.** As in etcd raft, heartbeats are a separate message carrying
//! `min(commitIndex, matchIndex[peer])` rather than an empty `AppendEntries`: they keep
//! followers from starting elections and carry the commit point, while log repair goes
//! through `AppendEntries` (the leader resends from `matchIndex + 1` when a heartbeat
//! response shows the follower behind, which also repairs lost messages).
//!
//! **Check-quorum.** A leader that has not heard from a majority within one minimum
//! election timeout steps down, so a leader cut off by a partition stops answering
//! clients instead of holding them forever.
//!
//! **PreVote (thesis §9.6).** With `pre_vote`, a follower whose election timer fires
//! first asks `PreVote` for the term it would campaign in, without raising its own
//! term. A replica grants a pre-vote only if the candidate's log is up to date and it
//! has itself not heard from a leader for a minimum election timeout; only with a
//! majority of pre-votes does the node become a real candidate. A node cut off by a
//! partition therefore keeps its term, and when it rejoins it cannot force the working
//! leader out (without PreVote its inflated term does).
//!
//! **Leadership transfer (thesis §3.10).** Told to hand over to `to`
//! ([`AdminCommand::TransferLeadership`]), the leader stops taking client commands
//! (clients are sent to `to`), brings `to`'s log up to date, and sends it `TimeoutNow`;
//! `to` starts an election at once, skipping PreVote, and wins it with the most
//! up-to-date log. A transfer that has not finished within a minimum election timeout
//! is abandoned and the leader serves clients again. (With lease reads the followers'
//! vote guard still holds, so the handover waits for the guard to lapse.)
//!
//! **Clients (§8).** Followers redirect clients to the leader. Each command carries
//! (client, seq); the replicated [`KvStore`] session table applies it once however often
//! it is retried, and the leader answers when it applies the entry.
//!
//! Persistent state is `currentTerm`, `votedFor` and the log, written as [`Record`]s;
//! `commitIndex` and the state machine are volatile and rebuilt by re-applying the log
//! as the commit point is learned again after a restart.
//!
//! **Reads (§6.4).** `read_mode` chooses how a `get` is served: through the log like a
//! write (the default), by `read-index` (the leader confirms its leadership with a
//! heartbeat round after the read arrives, then answers at its commit index), by
//! `lease` (the leader answers while a majority acknowledged a heartbeat sent less than
//! a drift-shortened minimum election timeout ago), or `follower-stale` (any replica
//! answers from its own state: not linearizable). Heartbeats carry a round number the
//! responses echo; [`qlab_core::reads`] explains the modes and keeps the leader's
//! bookkeeping. Lease reads need the check-quorum vote guard: a follower that heard
//! from its leader within the minimum election timeout, or restarted within it,
//! ignores `RequestVote` (as etcd raft does with CheckQuorum), and so does a leader.
//!
//! **Log compaction (§7).** With `snapshot_every_entries` or `snapshot_every_bytes` set,
//! a replica snapshots its state machine once that much has been applied since its last
//! snapshot, and discards the log up to the last applied entry. The snapshot keeps that
//! entry's index and term (for the consistency check of the next `AppendEntries`) and
//! its place in the digest chain (so the checkers still compare whole prefixes). It is
//! persisted as one record together with the term, the vote and the entries after it,
//! and that record supersedes every earlier one ([`Protocol::supersedes_earlier_records`]):
//! a crash before it is durable keeps the old log, after it the new snapshot, never a
//! mix. A follower whose next entry the leader has discarded gets `InstallSnapshot`
//! instead, in chunks of at most `snapshot_chunk_bytes` with one chunk in flight; it
//! answers with the bytes it holds, so a lost chunk or a restarted follower resumes
//! from there. A complete snapshot replaces the follower's state machine; its log is
//! kept past the snapshot only if it holds the snapshot's last entry (Figure 13).
//!
//! **Ablations.** [`RaftAblations`] switches off one safety rule at a time (the election
//! restriction, one vote per term, the prevLog check, the Figure 8 commit rule, the
//! check-quorum step-down and vote guard) so the suite can show the run each rule
//! prevents. All are off by default; with one on, this is no longer Raft.
//!
//! **Where the rules live.** This file holds the replica's state, the term rule
//! (`become_follower`: a higher term makes any role a follower of it) and the
//! [`Protocol`] entry points, which dispatch each message to its handler. The handlers
//! are grouped as the paper is: `election` (§5.2, §5.4.1, PreVote, transfer),
//! `replication` (§5.3, §5.4.2 and applying), `log` (the stored log and its digest
//! chain), `snapshot` (§7), `reads` (§6.4); `types` holds the messages, records and
//! configuration.

pub mod attacks;
pub mod client;
mod election;
mod log;
pub mod marks;
mod reads;
mod replication;
mod snapshot;
mod types;

use qlab_core::batching::{defer_to_drained_input, pipeline_has_room, take_batch};
use qlab_core::quorum::quorum_value;
use qlab_core::reads::{LeaderReads, ReadMode, lease_ns, local_read};
use qlab_core::symmetry::Renaming;
use qlab_core::{
    AdminCommand, Context, Digest, Event, KvStore, Nanos, NodeId, Op, Protocol, Reply, ReplyBody, Request, majority, ms,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use client::{RaftClient, RaftClientTimer};
pub use types::*;

use snapshot::decode_state;

/// Per-follower replication progress, kept by the leader.
#[derive(Clone, Debug, Default)]
struct Progress {
    next_index: Index,
    match_index: Index,
    /// Heard from since the last check-quorum tick.
    recently_active: bool,
    /// The snapshot being sent to this follower and the bytes it acknowledged. Held
    /// here, not re-read from the leader's latest snapshot, so a compaction on the
    /// leader mid-transfer does not restart the transfer.
    snapshot_sending: Option<(SnapshotMeta, Arc<Vec<u8>>, u64)>,
}

/// A snapshot a follower is receiving.
#[derive(Clone, Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

/// One replica's whole state. `Clone` so that a search can branch from any state, and
/// `Debug` with every collection ordered (no hash maps), so that equal states print
/// alike: the canonical form a search fingerprints.
#[derive(Clone, Debug)]
pub struct Raft {
    id: NodeId,
    nodes: u32,
    config: RaftConfig,
    role: Role,
    current_term: Term,
    voted_for: Option<NodeId>,
    /// The entries after the snapshot: `log[i]` has index `snapshot.last_included_index + 1 + i`.
    log: Vec<Entry>,
    /// `prefix_digests[i]` chains entries `1..=snapshot + i`; `prefix_digests[0]` is the
    /// snapshot's (genesis before any).
    prefix_digests: Vec<Digest>,
    /// `entry_digests[i]` is the digest of `log[i]`, computed once on append.
    entry_digests: Vec<Digest>,
    /// The last compaction point (§7); [`SnapshotMeta::GENESIS`] before any.
    snapshot: SnapshotMeta,
    /// The state machine at `snapshot`, serialized: what `InstallSnapshot` sends.
    snapshot_state: Arc<Vec<u8>>,
    /// Encoded bytes of the entries applied since the last snapshot.
    applied_bytes_since_snapshot: u64,
    incoming_snapshot: Option<IncomingSnapshot>,
    snapshots_taken: u64,
    snapshots_installed: u64,
    commit_index: Index,
    last_applied: Index,
    kv: KvStore,
    leader: Option<NodeId>,
    /// The term for which `LeaderKnown` was last reported.
    leader_known_term: Term,
    votes_granted: Vec<bool>,
    /// Local time a leader of the current term was last heard from (PreVote).
    leader_heard_at: Option<Nanos>,
    /// Leader handing over: to whom, and until when it tries (thesis §3.10).
    transfer: Option<(NodeId, Nanos)>,
    progress: Vec<Progress>,
    /// Client → highest seq the leader appended this term, to not append a retry
    /// that is already in flight.
    appended_requests: std::collections::BTreeMap<qlab_core::ClientId, u64>,
    /// Leader: commands waiting for the batch to be appended.
    pending_commands: Vec<Arc<Request>>,
    /// Leader: the last index of each batch it appended this term that is not yet
    /// committed, oldest first (adaptive batching's pipeline).
    batches_in_flight: std::collections::VecDeque<Index>,
    /// Leader with read-index or lease reads: heartbeat rounds and waiting reads.
    reads: Option<LeaderReads>,
    /// Lease reads: refuse votes before this local time (a minimum election timeout
    /// after last hearing from a leader, or after starting).
    vote_guard_until: Nanos,
}

impl Raft {
    /// This replica as it would be had every replica `i` of the cluster been named
    /// `renaming.of(i)` ([`qlab_core::symmetry`]): Raft's rules never compare node ids,
    /// so the renamed cluster runs exactly as this one, renamed. Every field is named
    /// here, so a field added later cannot be forgotten.
    pub fn renamed(&self, renaming: &Renaming) -> Raft {
        let Raft {
            id,
            nodes,
            config,
            role,
            current_term,
            voted_for,
            log,
            prefix_digests,
            entry_digests,
            snapshot,
            snapshot_state,
            applied_bytes_since_snapshot,
            incoming_snapshot,
            snapshots_taken,
            snapshots_installed,
            commit_index,
            last_applied,
            kv,
            leader,
            leader_known_term,
            votes_granted,
            leader_heard_at,
            transfer,
            progress,
            appended_requests,
            pending_commands,
            batches_in_flight,
            reads,
            vote_guard_until,
        } = self;
        let rename = |node: &NodeId| renaming.of(*node);
        Raft {
            id: rename(id),
            nodes: *nodes,
            config: config.clone(),
            role: *role,
            current_term: *current_term,
            voted_for: voted_for.as_ref().map(rename),
            log: log.clone(),
            prefix_digests: prefix_digests.clone(),
            entry_digests: entry_digests.clone(),
            snapshot: *snapshot,
            snapshot_state: snapshot_state.clone(),
            applied_bytes_since_snapshot: *applied_bytes_since_snapshot,
            incoming_snapshot: incoming_snapshot.clone(),
            snapshots_taken: *snapshots_taken,
            snapshots_installed: *snapshots_installed,
            commit_index: *commit_index,
            last_applied: *last_applied,
            kv: kv.clone(),
            leader: leader.as_ref().map(rename),
            leader_known_term: *leader_known_term,
            votes_granted: renaming.table(votes_granted),
            leader_heard_at: *leader_heard_at,
            transfer: transfer.map(|(to, until)| (rename(&to), until)),
            progress: renaming.table(progress),
            appended_requests: appended_requests.clone(),
            pending_commands: pending_commands.clone(),
            batches_in_flight: batches_in_flight.clone(),
            reads: reads.as_ref().map(|reads| reads.renamed(renaming)),
            vote_guard_until: *vote_guard_until,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn current_term(&self) -> Term {
        self.current_term
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn commit_index(&self) -> Index {
        self.commit_index
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The entries after the last snapshot (all of them while nothing was compacted).
    pub fn log(&self) -> &[Entry] {
        &self.log
    }
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }
    pub fn last_index(&self) -> Index {
        self.snapshot.last_included_index + self.log.len() as Index
    }
    /// Position in `log` (and `entry_digests`) of the entry at `index`, which must lie
    /// after the snapshot.
    fn pos(&self, index: Index) -> usize {
        debug_assert!(index > self.snapshot.last_included_index);
        (index - self.snapshot.last_included_index - 1) as usize
    }
    /// The digest chain up to `index` (the snapshot's or a later one).
    fn prefix_digest_at(&self, index: Index) -> Digest {
        self.prefix_digests[(index - self.snapshot.last_included_index) as usize]
    }
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }
    fn last_term(&self) -> Term {
        self.log.last().map_or(self.snapshot.last_included_term, |e| e.term)
    }
    /// Term of the entry at `index` (0 for index 0), `None` past the end or before
    /// the snapshot (compacted away).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        let snapshot = self.snapshot.last_included_index;
        if index == snapshot {
            Some(self.snapshot.last_included_term)
        } else if index < snapshot {
            None
        } else {
            self.log.get(self.pos(index)).map(|e| e.term)
        }
    }
    fn peers(&self) -> impl Iterator<Item = NodeId> + use<> {
        let me = self.id;
        (0..self.nodes).map(NodeId).filter(move |n| *n != me)
    }

    fn random_election_timeout(&self, ctx: &mut Context<'_, Self>) -> Nanos {
        let (lo, hi) = (self.config.election_timeout_ns_min, self.config.election_timeout_ns_max);
        if lo >= hi { lo } else { ctx.rng().random_range(lo..=hi) }
    }

    fn reset_election_timer(&self, ctx: &mut Context<'_, Self>) {
        let after = self.random_election_timeout(ctx);
        ctx.set_timer(RaftTimer::Election, after);
    }

    fn persist_hard_state(&self, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::HardState { term: self.current_term, voted_for: self.voted_for });
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>, ctx: &mut Context<'_, Self>) {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.persist_hard_state(ctx);
        }
        if self.role == Role::Leader {
            ctx.cancel_timer(RaftTimer::Heartbeat);
            ctx.cancel_timer(RaftTimer::CheckQuorum);
            ctx.cancel_timer(RaftTimer::Flush);
            // Never appended, so never promised: their clients retry elsewhere.
            self.pending_commands.clear();
            self.batches_in_flight.clear();
            self.reads = None;
            self.transfer = None;
            // A leader has no election timer running; a follower or candidate keeps
            // its own: Figure 2 restarts it only for the current leader's messages
            // and for granted votes, not for merely seeing a higher term. (Restarting
            // it here would let every rejected candidate postpone the election.)
            self.reset_election_timer(ctx);
        }
        self.role = Role::Follower;
        self.leader = leader;
    }

    /// The term rules, in one place and before any handler runs (Figure 2, "Rules for
    /// All Servers", as etcd raft's `Step` applies them):
    ///
    /// - a message of a later term makes this node a follower of that term — of the
    ///   sender, when it is the leader's own AppendEntries, heartbeat or snapshot;
    /// - a leader's message of an earlier term is answered with ours, so the stale
    ///   leader steps down; a response of an earlier term answers nothing we asked;
    /// - PreVote messages carry the term a pre-candidate *would* campaign in and change
    ///   nothing (thesis §9.6), except a refusal from a later term, which is news;
    /// - under the vote guard a RequestVote is ignored term and all (etcd's lease check
    ///   under CheckQuorum), so a partitioned node cannot depose a live leader.
    ///
    /// Returns whether the message goes on to its handler, which may then assume
    /// `term <= current_term` (and `==` for everything but requests it refuses).
    fn step_term(&mut self, from: NodeId, msg: &Message, ctx: &mut Context<'_, Self>) -> bool {
        let term = msg.term();
        let ours = self.current_term;
        let kind = Self::message_kind(msg);
        match msg {
            Message::RequestVote { .. }
                if self.config.vote_guard_on() && (self.role == Role::Leader || ctx.now() < self.vote_guard_until) =>
            {
                ctx.ignored(|| {
                    format!("ignored {kind} from {from} in term {term}: a leader's lease may still run (vote guard)")
                });
                return false;
            }
            Message::PreVote { .. } => return true,
            Message::PreVoteResponse { granted: true, .. } => return true,
            _ => {}
        }
        let from_leader =
            matches!(msg, Message::AppendEntries { .. } | Message::Heartbeat { .. } | Message::InstallSnapshot { .. });
        if term > ours {
            ctx.ignored(|| {
                let role = if self.role == Role::Follower { "" } else { ", stepping down" };
                format!("moves to term {term} (ours {ours}) on {kind} from {from}{role}")
            });
            if self.role != Role::Follower {
                ctx.reached(&marks::STEPPED_DOWN_HIGHER_TERM);
            }
            self.become_follower(term, from_leader.then_some(from), ctx);
            return true;
        }
        if term == ours {
            return true;
        }
        match *msg {
            Message::RequestVote { .. } | Message::PreVoteResponse { .. } => true, // refused by the handler
            Message::AppendEntries { .. } => {
                ctx.ignored(|| format!("rejected {kind} from {from}: stale term {term} below ours {ours}"));
                ctx.reached(&marks::STALE_LEADER_ANSWERED);
                self.reject_append(from, ours, None, 0, ctx);
                false
            }
            Message::Heartbeat { .. } => {
                ctx.ignored(|| format!("rejected {kind} from {from}: stale term {term} below ours {ours}"));
                ctx.reached(&marks::STALE_LEADER_ANSWERED);
                ctx.send(
                    from,
                    Message::HeartbeatResponse { term: ours, last_log_index: self.last_index(), read_round: 0 },
                );
                false
            }
            Message::InstallSnapshot { meta, .. } => {
                ctx.ignored(|| format!("rejected {kind} from {from}: stale term {term} below ours {ours}"));
                ctx.reached(&marks::STALE_LEADER_ANSWERED);
                let last_included_index = meta.last_included_index;
                ctx.send(
                    from,
                    Message::InstallSnapshotResponse { term: ours, last_included_index, received: 0, installed: false },
                );
                false
            }
            _ => {
                ctx.ignored(|| format!("ignored {kind} from {from}: stale term {term} below ours {ours}"));
                ctx.reached(&marks::STALE_RESPONSE_IGNORED);
                false
            }
        }
    }
}

impl Protocol for Raft {
    type Message = Message;
    type Timer = RaftTimer;
    type Record = Record;
    type Config = RaftConfig;

    fn new(config: &RaftConfig, id: NodeId, nodes: u32) -> Self {
        assert!(id.0 < nodes, "node id {id} outside a cluster of {nodes}");
        assert!(config.election_timeout_ns_min <= config.election_timeout_ns_max);
        Raft {
            id,
            nodes,
            config: config.clone(),
            role: Role::Follower,
            current_term: 0,
            voted_for: None,
            log: Vec::new(),
            prefix_digests: vec![Digest::GENESIS],
            entry_digests: Vec::new(),
            snapshot: SnapshotMeta::GENESIS,
            snapshot_state: Arc::new(Vec::new()),
            applied_bytes_since_snapshot: 0,
            incoming_snapshot: None,
            snapshots_taken: 0,
            snapshots_installed: 0,
            commit_index: 0,
            last_applied: 0,
            kv: KvStore::default(),
            leader: None,
            leader_known_term: 0,
            votes_granted: Vec::new(),
            leader_heard_at: None,
            transfer: None,
            progress: Vec::new(),
            appended_requests: Default::default(),
            pending_commands: Vec::new(),
            batches_in_flight: Default::default(),
            reads: None,
            vote_guard_until: 0,
        }
    }

    fn restore(config: &RaftConfig, id: NodeId, nodes: u32, records: &[Record]) -> Self {
        let mut raft = Raft::new(config, id, nodes);
        for record in records {
            match record {
                Record::HardState { term, voted_for } => {
                    raft.current_term = *term;
                    raft.voted_for = *voted_for;
                }
                Record::Append { entries } => {
                    for entry in entries {
                        raft.push_entry(entry.clone());
                    }
                }
                Record::Truncate { from_index } => raft.drop_from(*from_index),
                Record::Snapshot { term, voted_for, meta, state, entries } => {
                    raft.current_term = *term;
                    raft.voted_for = *voted_for;
                    let kv = decode_state(state).expect("a snapshot this replica persisted decodes");
                    raft.log.clear();
                    raft.entry_digests.clear();
                    raft.load_snapshot(*meta, Arc::new(state.clone()), kv);
                    for entry in entries {
                        raft.push_entry(entry.clone());
                    }
                }
            }
        }
        raft
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if self.current_term > 0 || !self.log.is_empty() {
            ctx.observe(Event::Restarted { epoch: self.current_term });
        }
        if self.config.vote_guard_on() {
            // Whatever lease this node helped grant before a crash is forgotten with
            // its volatile state; waiting out a minimum timeout honours it anyway.
            self.vote_guard_until = ctx.now() + self.config.election_timeout_ns_min;
        }
        self.reset_election_timer(ctx);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Message) {
        assert!(from.0 < self.nodes && from != self.id, "{}: message from {from}", self.id);
        if !self.step_term(from, &msg, ctx) {
            return;
        }
        match msg {
            Message::RequestVote { term, last_log_index, last_log_term } => {
                self.handle_request_vote(from, term, last_log_index, last_log_term, ctx)
            }
            Message::VoteResponse { term, granted } => self.handle_vote_response(from, term, granted, ctx),
            Message::AppendEntries { term, prev_log_index, prev_log_term, entries, leader_commit } => {
                self.handle_append_entries(from, term, prev_log_index, prev_log_term, entries, leader_commit, ctx)
            }
            Message::AppendResponse { term, success, match_index, conflict_term, conflict_index } => {
                self.handle_append_response(from, term, success, match_index, conflict_term, conflict_index, ctx)
            }
            Message::Heartbeat { term, commit, read_round } => {
                self.handle_heartbeat(from, term, commit, read_round, ctx)
            }
            Message::HeartbeatResponse { term, read_round, .. } => {
                self.handle_heartbeat_response(from, term, read_round, ctx)
            }
            Message::PreVote { term, last_log_index, last_log_term } => {
                self.handle_pre_vote(from, term, last_log_index, last_log_term, ctx)
            }
            Message::PreVoteResponse { term, granted } => self.handle_pre_vote_response(from, term, granted, ctx),
            Message::TimeoutNow { term } => self.handle_timeout_now(from, term, ctx),
            Message::InstallSnapshot { term, meta, total_bytes, offset, data } => {
                self.handle_install_snapshot(from, term, meta, total_bytes, offset, data, ctx)
            }
            Message::InstallSnapshotResponse { term, last_included_index, received, installed } => {
                self.handle_install_snapshot_response(from, term, last_included_index, received, installed, ctx)
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: RaftTimer) {
        match timer {
            RaftTimer::Election => {
                if self.role != Role::Leader {
                    if self.config.pre_vote {
                        self.become_pre_candidate(ctx);
                    } else {
                        self.become_candidate(ctx);
                    }
                }
            }
            RaftTimer::Heartbeat => {
                if self.role == Role::Leader {
                    if self.transfer.is_some_and(|(_, until)| ctx.now() >= until) {
                        // §3.10: the target never took over; serve clients again.
                        self.transfer = None;
                    }
                    self.broadcast_heartbeats(ctx);
                    ctx.set_timer(RaftTimer::Heartbeat, self.config.heartbeat_interval_ns);
                }
            }
            RaftTimer::Flush => self.flush_commands(ctx),
            RaftTimer::CheckQuorum => {
                if self.role != Role::Leader {
                    return;
                }
                let me = self.id.0 as usize;
                let active =
                    self.progress.iter().enumerate().filter(|(i, p)| *i == me || p.recently_active).count() as u32;
                if active < majority(self.nodes) {
                    ctx.reached(&marks::CHECK_QUORUM_STEP_DOWN);
                    let term = self.current_term;
                    self.become_follower(term, None, ctx);
                    return;
                }
                for p in &mut self.progress {
                    p.recently_active = false;
                }
                ctx.set_timer(RaftTimer::CheckQuorum, self.config.election_timeout_ns_min);
            }
        }
    }

    fn on_input_drained(&mut self, ctx: &mut Context<'_, Self>) {
        // Only adaptive batching defers to this call; a batch delay keeps its timer.
        if self.config.batch_delay_ns == 0 {
            self.flush_commands(ctx);
        }
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, request: Request) {
        if self.config.read_mode != ReadMode::Log && matches!(request.op, Op::Get { .. }) {
            self.serve_read(request, ctx);
            return;
        }
        if self.role != Role::Leader {
            ctx.reply(Reply {
                client: request.client,
                seq: request.seq,
                body: ReplyBody::NotLeader { leader: self.leader },
            });
            return;
        }
        if let Some((to, _)) = self.transfer {
            // Handing over: new commands would only delay the target's catching up.
            ctx.reply(Reply {
                client: request.client,
                seq: request.seq,
                body: ReplyBody::NotLeader { leader: Some(to) },
            });
            return;
        }
        if self.appended_requests.get(&request.client).is_some_and(|seq| *seq >= request.seq) {
            // A retry of a request already in our log: its entry will answer it.
            return;
        }
        self.appended_requests.insert(request.client, request.seq);
        self.pending_commands.push(Arc::new(request));
        if self.config.batch_delay_ns == 0 {
            // Adaptive: goes now if the pipeline has room, else when a batch commits.
            self.flush_commands(ctx);
            return;
        }
        if self.pending_commands.len() >= self.config.max_entries_per_append {
            ctx.cancel_timer(RaftTimer::Flush);
            self.flush_commands(ctx);
        } else if self.pending_commands.len() == 1 {
            ctx.set_timer(RaftTimer::Flush, self.config.batch_delay_ns);
        }
    }

    fn message_kind(msg: &Message) -> &'static str {
        match msg {
            Message::RequestVote { .. } => "request_vote",
            Message::VoteResponse { .. } => "vote_response",
            Message::AppendEntries { .. } => "append_entries",
            Message::AppendResponse { .. } => "append_response",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatResponse { .. } => "heartbeat_response",
            Message::PreVote { .. } => "pre_vote",
            Message::PreVoteResponse { .. } => "pre_vote_response",
            Message::TimeoutNow { .. } => "timeout_now",
            Message::InstallSnapshot { .. } => "install_snapshot",
            Message::InstallSnapshotResponse { .. } => "install_snapshot_response",
        }
    }

    fn on_admin(&mut self, ctx: &mut Context<'_, Self>, command: AdminCommand) {
        match command {
            AdminCommand::TransferLeadership { to } => self.start_transfer(to, ctx),
        }
    }

    fn supersedes_earlier_records(record: &Record) -> bool {
        matches!(record, Record::Snapshot { .. })
    }

    fn coverage_marks() -> &'static [&'static qlab_core::Mark] {
        &marks::ALL
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        if !self.config.compaction_on() {
            return Vec::new();
        }
        vec![("snapshots_taken", self.snapshots_taken), ("snapshots_installed", self.snapshots_installed)]
    }

    fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    fn epoch(&self) -> u64 {
        self.current_term
    }
}
