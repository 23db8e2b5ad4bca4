//! # Multi-Paxos as a replicated log
//!
//! After Lamport, "Paxos Made Simple" (2001) §3, and van Renesse & Altinbuken, "Paxos Made
//! Moderately Complex" (2015). Every replica plays all three roles: proposer, acceptor and
//! learner. The log is a sequence of *slots*; each slot runs its own instance of Paxos, and
//! a value is *chosen* for a slot once a majority of acceptors accepted it in one ballot.
//!
//! **Ballots.** A ballot is `(round, node)`, ordered by round then node id, so two nodes
//! never propose in the same ballot. An acceptor *promises* a ballot and from then on
//! refuses every lower one; that promise, and every value it accepts, is persisted before
//! it answers (a crash must not make it forget either).
//!
//! **Phase 1, once per leader.** A node that stops hearing from a leader for a randomized
//! timeout picks a ballot above every ballot it has seen and sends `Prepare(ballot,
//! commit)`, where `commit` is the end of the prefix it already knows chosen. A promise
//! carries every value the acceptor accepted above that point (with the ballot it was
//! accepted in), so one round of phase 1 covers *all* future slots at once — this is what
//! makes Multi-Paxos cheaper than running full Paxos per slot. With promises from a
//! majority the candidate is leader: for each slot it re-proposes the value accepted in the
//! highest ballot (the only value that may already be chosen there), and fills every gap
//! with a no-op so later slots can commit.
//!
//! **Phase 2, per slot.** The leader proposes each new client batch in the next free slot
//! with `Accept(ballot, slot, value, commit)`; up to `window_slots` slots are in flight at
//! once. An acceptor accepts unless it promised a higher ballot, and answers `Accepted`. A
//! majority of acceptances chooses the value; the leader commits its log in slot order,
//! applies, replies to clients, and tells the others its commit point on every later
//! `Accept` and heartbeat. An acceptor that holds slot `s` accepted *in the leader's
//! ballot* knows that value is the chosen one; a slot it lacks, or holds from an older
//! ballot, it learns with `CatchUp`/`Learn` from the leader.
//!
//! **Failure detection.** The leader sends heartbeats; followers time out after a
//! randomized interval. A proposer whose `Prepare` or `Accept` is refused (`Nack`) by a
//! higher ballot steps down and waits a fresh random timeout before trying again: that
//! random back-off is what ends duelling proposers. With check-quorum a leader that has not
//! heard from a majority within the minimum timeout steps down, so clients cut off with it
//! are redirected instead of waiting.
//!
//! **How this differs from Raft** (Howard & Mortier, "Paxos vs Raft: Have we reached
//! consensus on distributed consensus?", PaPoC 2020). Raft lets only a candidate whose log
//! is up to date win, and the winner's log is copied to the others unchanged. Here *any*
//! node with a higher ballot may win; logs move during the election instead — the winner
//! adopts values from its promises, so a leader may learn entries it never had — and old
//! entries are re-proposed in the new ballot ("re-stamped"), where Raft keeps each entry's
//! original term. Phase 1 costs a round trip in which the leader has to collect the
//! accepted values, where a Raft vote carries only two numbers.
//!
//! **Reads.** `read_mode` offers the same four ways to serve a `get` as Raft (see
//! [`qlab_core::reads`]): through the log, `read-index` (a heartbeat round acknowledged
//! by a majority in the leader's ballot after the read arrived — no higher ballot can
//! have completed phase 1 by then — and the re-proposed slots of phase 1 committed
//! first), `lease`, and `follower-stale`. For leases an acceptor that heard from its
//! leader within the minimum timeout, or started within it, ignores `Prepare`s of
//! higher ballots from others, and so does the leader: no new leader can be chosen
//! while the old one's lease runs.
//!
//! **Ablations.** [`PaxosAblations::skip_phase1_values`] makes a new leader ignore the
//! accepted values its promises carry (keeping only those they report chosen) and fill
//! those slots afresh: the rule without which a chosen value can be replaced.
//! [`PaxosAblations::no_check_quorum`] drops the check-quorum step-down and the promise
//! guard that lease reads rely on.
//!
//! **Checkpoints.** With `checkpoint_every_slots` a replica checkpoints its state machine
//! once that many slots were applied since the last checkpoint, and forgets the chosen
//! and accepted values up to it: they are chosen and known to be, so no ballot can
//! change them. A learner that needs slots the leader has forgotten is sent the leader's
//! checkpoint instead (state transfer), in chunks of at most `state_chunk_bytes`: the
//! learner asks for each next chunk with the bytes it holds, so a lost chunk is asked
//! for again on the next heartbeat and a transfer interrupted by a newer checkpoint
//! starts over from it. Phase 1 needs care:
//! a promise reports what the acceptor holds *above the candidate's commit point*, and an
//! acceptor that checkpointed past that point can no longer list those slots one by one.
//! It sends its checkpoint in the promise instead, and the candidate installs the
//! furthest checkpoint among its promises before merging the rest — otherwise it would
//! fill those slots with no-ops and could replace chosen values.
//!
//! Persistent state is the promised ballot and the accepted values, written as
//! [`Record`]s, and the last checkpoint (one record that supersedes every earlier one).
//! What is chosen above the checkpoint, the state machine's progress past it and the
//! leader's bookkeeping are volatile: a restarted replica learns its commit point again
//! from the leader.
//!
//! **Where the rules live**, by role: `acceptor` (promises and accepts), `proposer`
//! (phase 1 once per leadership, phase 2 per slot, the leader's commit point),
//! `learner` (chosen slots applied in order, catch-up of a lagging learner),
//! `checkpoint` (compaction and state transfer), `reads`; `types` holds the messages,
//! records and configuration, and this file the replica's state, the ballot rules
//! (`step_ballot`, which runs before every handler, with `become_follower` and
//! `follow`) and the [`Protocol`] entry points.

mod acceptor;

pub mod attacks;
mod checkpoint;
pub mod client;
mod learner;
pub mod marks;
mod proposer;
mod reads;
mod types;

use qlab_core::batching::{defer_to_drained_input, pipeline_has_room, take_batch};
use qlab_core::reads::{LeaderReads, ReadMode, lease_ns, local_read};
use qlab_core::{
    ClientId, Context, Digest, Event, KvStore, Nanos, NodeId, Op, Protocol, Reply, ReplyBody, Request, majority, ms,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use client::{PaxosClient, PaxosClientTimer};
pub use types::*;

use checkpoint::decode_state;

/// A slot the leader proposed and has not committed yet.
#[derive(Clone, Debug)]
struct InFlight {
    value: Value,
    acks: Vec<bool>,
    chosen: bool,
}

/// One replica's whole state. `Clone` so that a search can branch from any state, and
/// `Debug` with every collection ordered (no hash maps), so that equal states print
/// alike: the canonical form a search fingerprints.
#[derive(Clone, Debug)]
pub struct Paxos {
    id: NodeId,
    nodes: u32,
    config: PaxosConfig,
    role: Role,
    /// Acceptor: the highest ballot promised (persisted).
    promised: Ballot,
    /// Acceptor: `accepted[s - base - 1]` is what slot `s` accepted, and in which ballot
    /// (persisted); `base` is the checkpoint's slot (0 before any).
    accepted: Vec<Option<(Ballot, Value)>>,
    /// Learner: `chosen[s - base - 1]` is slot `s`'s chosen value, for `base < s <= commit`.
    chosen: Vec<Value>,
    /// `prefix_digests[s - base]` chains the chosen values of slots `1..=s`.
    prefix_digests: Vec<Digest>,
    /// `chosen_digests[s - base - 1]` is the digest of slot `s`'s chosen value.
    chosen_digests: Vec<Digest>,
    /// The last checkpoint; slot 0 (and an empty state) before any.
    checkpoint: Checkpoint,
    checkpoints_taken: u64,
    states_transferred_in: u64,
    /// A state transfer under way: the checkpoint and the bytes received so far.
    incoming_state: Option<(CheckpointHeader, Vec<u8>)>,
    /// The highest round seen in a refusal: the next ballot must beat it.
    round_seen: u64,
    last_applied: Slot,
    kv: KvStore,
    /// The leader this node follows and the ballot it leads in.
    leader: Option<(Ballot, NodeId)>,
    leader_known_ballot: Ballot,
    /// The leader's commit point as last heard, for catch-up.
    leader_commit: Slot,
    catch_up_requested_at: Option<Nanos>,
    /// Candidate: promises received, by node.
    promises: Vec<Option<Vec<PromisedSlot>>>,
    // ---- leader ----
    in_flight: BTreeMap<Slot, InFlight>,
    next_slot: Slot,
    /// Leader: the first slot it proposed for new commands (those below re-propose what
    /// phase 1 found); adaptive batching counts only its own slots as in flight.
    first_fresh_slot: Slot,
    pending: Vec<Arc<Request>>,
    proposed_requests: BTreeMap<ClientId, u64>,
    heard_from: Vec<bool>,
    flush_timer_armed: bool,
    /// Leader with read-index or lease reads: heartbeat rounds and waiting reads.
    reads: Option<LeaderReads>,
    /// Lease reads: ignore other proposers' `Prepare`s before this local time.
    promise_guard_until: Nanos,
}

impl Paxos {
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn promised(&self) -> Ballot {
        self.promised
    }
    pub fn commit_index(&self) -> Slot {
        self.base() + self.chosen.len() as Slot
    }
    /// The committed values after the last checkpoint (all of them before any).
    pub fn chosen(&self) -> &[Value] {
        &self.chosen
    }
    /// The last checkpoint's slot (0 before any).
    pub fn base(&self) -> Slot {
        self.checkpoint.slot
    }
    /// What slot `slot` accepted, and in which ballot (`None` at or below the checkpoint).
    pub fn accepted_at(&self, slot: Slot) -> Option<&(Ballot, Value)> {
        self.accepted.get(slot.checked_sub(self.base() + 1)? as usize)?.as_ref()
    }
    fn prefix_digest_at(&self, slot: Slot) -> Digest {
        self.prefix_digests[(slot - self.base()) as usize]
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader.map(|(_, node)| node)
    }
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }
    /// The ballot this node leads or campaigns in (meaningful unless a follower).
    pub fn own_ballot(&self) -> Ballot {
        self.promised
    }

    fn reset_leader_timer(&self, ctx: &mut Context<'_, Self>) {
        let (lo, hi) = (self.config.leader_timeout_ns_min, self.config.leader_timeout_ns_max);
        let after = if lo >= hi { lo } else { ctx.rng().random_range(lo..=hi) };
        ctx.set_timer(PaxosTimer::LeaderTimeout, after);
    }

    // ---- role changes -------------------------------------------------------------------

    /// Follow whoever leads `ballot` (or nobody yet, during its phase 1).
    fn become_follower(&mut self, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Follower {
            ctx.reached(&marks::PREEMPTED);
        }
        if self.role == Role::Leader {
            ctx.cancel_timer(PaxosTimer::Heartbeat);
            ctx.cancel_timer(PaxosTimer::CheckQuorum);
            ctx.cancel_timer(PaxosTimer::Flush);
            self.flush_timer_armed = false;
            // Never proposed, so never promised to anyone: their clients retry.
            self.pending.clear();
            self.reads = None;
            self.in_flight.clear();
            self.reset_leader_timer(ctx);
        }
        if self.role != Role::Follower {
            self.promises.clear();
        }
        self.role = Role::Follower;
    }

    /// Accept `from` as the leader of `ballot` (called for its phase-2 messages).
    fn follow(&mut self, from: NodeId, ballot: Ballot, ctx: &mut Context<'_, Self>) {
        self.become_follower(ctx);
        if self.leader.is_none_or(|(b, _)| b != ballot) {
            self.leader = Some((ballot, from));
            self.leader_commit = 0;
            self.catch_up_requested_at = None;
        }
        self.reset_leader_timer(ctx);
        if self.config.promise_guard_on() {
            self.promise_guard_until = ctx.now() + self.config.leader_timeout_ns_min;
        }
        if self.leader_known_ballot != ballot {
            self.leader_known_ballot = ballot;
            ctx.observe(Event::LeaderKnown { epoch: ballot.epoch(), leader: from });
        }
    }

    /// The ballot rules, in one place and before any handler runs:
    ///
    /// - a proposer's message (`Prepare`, `Accept`, heartbeat) below our promise, or
    ///   claiming our promised ballot from another node, is refused with a `Nack`
    ///   carrying the promise, so the sender learns the round to beat;
    /// - a `Prepare` above the promise makes this node a follower with no leader and
    ///   promises the ballot (durably, before the `Promise` leaves) — unless the promise
    ///   guard holds it off while a leader's lease may still run;
    /// - an `Accept` or heartbeat at or above the promise makes its sender our leader
    ///   of that ballot (phase 2 is the leader's own);
    /// - a `Nack` above the ballot this node proposes pre-empts it: it steps down and a
    ///   fresh random timeout decides whether it tries again (the back-off that ends
    ///   duelling proposers);
    /// - an answer (`Promise`, `Accepted`, heartbeat ack) for any ballot but ours is
    ///   stale and dropped.
    ///
    /// Returns whether the message goes on to its handler.
    fn step_ballot(&mut self, from: NodeId, msg: &Message, ctx: &mut Context<'_, Self>) -> bool {
        let kind = Self::message_kind(msg);
        let promised = self.promised;
        match *msg {
            Message::Prepare { ballot, .. } | Message::Accept { ballot, .. } | Message::Heartbeat { ballot, .. } => {
                let prepare = matches!(msg, Message::Prepare { .. });
                if prepare
                    && self.config.promise_guard_on()
                    && ballot > promised
                    && (self.role == Role::Leader || ctx.now() < self.promise_guard_until)
                {
                    ctx.ignored(|| {
                        format!("ignored {kind} from {from} for ballot {ballot}: a leader's lease may still run (promise guard)")
                    });
                    return false;
                }
                if ballot < promised || (ballot == promised && ballot.node != from) {
                    ctx.ignored(|| format!("refused {kind} from {from} for ballot {ballot}: we promised {promised}"));
                    ctx.reached(&marks::PREPARE_OR_ACCEPT_REFUSED);
                    ctx.send(from, Message::Nack { ballot, promised });
                    return false;
                }
                if prepare {
                    if ballot > promised {
                        self.become_follower(ctx);
                        self.leader = None;
                        self.promise(ballot, ctx);
                        // A would-be leader: give it a full timeout to finish phase 1.
                        self.reset_leader_timer(ctx);
                    }
                    return true;
                }
                if ballot == promised && self.role == Role::Leader {
                    // Our own ballot from someone else: impossible among honest nodes.
                    ctx.ignored(|| format!("ignored {kind} from {from} for ballot {ballot}: we lead that ballot"));
                    return false;
                }
                self.promise(ballot, ctx);
                self.follow(from, ballot, ctx);
                true
            }
            Message::Nack { ballot, promised: theirs } => {
                // Remember the round to beat next time; it is not a promise of ours (the
                // next phase 1 persists the ballot it picks).
                self.round_seen = self.round_seen.max(theirs.round);
                if self.role == Role::Follower || ballot != promised || theirs <= ballot {
                    ctx.ignored(|| {
                        format!("ignored {kind} from {from} of ballot {ballot} (promised {theirs}): it pre-empts nothing we propose")
                    });
                    return false;
                }
                ctx.ignored(|| format!("steps down: {from} promised {theirs}, above our ballot {ballot}"));
                self.become_follower(ctx);
                self.leader = None;
                self.reset_leader_timer(ctx);
                false
            }
            Message::Promise { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::HeartbeatAck { ballot, .. } => {
                if ballot != promised {
                    ctx.ignored(|| format!("ignored {kind} from {from} for ballot {ballot}: ours is {promised}"));
                    return false;
                }
                true
            }
            Message::CatchUp { .. } | Message::Learn { .. } | Message::TransferState { .. } => true,
        }
    }
}

impl Protocol for Paxos {
    type Message = Message;
    type Timer = PaxosTimer;
    type Record = Record;
    type Config = PaxosConfig;

    fn new(config: &PaxosConfig, id: NodeId, nodes: u32) -> Self {
        assert!(id.0 < nodes && nodes <= MAX_NODES, "node id {id} outside a cluster of {nodes}");
        assert!(config.leader_timeout_ns_min <= config.leader_timeout_ns_max);
        assert!(config.window_slots >= 1 && config.max_commands_per_slot >= 1 && config.max_values_per_message >= 1);
        Paxos {
            id,
            nodes,
            config: config.clone(),
            role: Role::Follower,
            promised: Ballot::ZERO,
            round_seen: 0,
            accepted: Vec::new(),
            chosen: Vec::new(),
            prefix_digests: vec![Digest::GENESIS],
            last_applied: 0,
            kv: KvStore::default(),
            leader: None,
            leader_known_ballot: Ballot::ZERO,
            leader_commit: 0,
            catch_up_requested_at: None,
            promises: Vec::new(),
            in_flight: BTreeMap::new(),
            next_slot: 1,
            first_fresh_slot: 1,
            pending: Vec::new(),
            proposed_requests: BTreeMap::new(),
            heard_from: Vec::new(),
            flush_timer_armed: false,
            reads: None,
            promise_guard_until: 0,
            chosen_digests: Vec::new(),
            checkpoint: Checkpoint {
                slot: 0,
                digest: Digest::GENESIS,
                prefix_digest: Digest::GENESIS,
                state_digest: Digest::GENESIS,
                state: Arc::new(Vec::new()),
            },
            checkpoints_taken: 0,
            states_transferred_in: 0,
            incoming_state: None,
        }
    }

    fn restore(config: &PaxosConfig, id: NodeId, nodes: u32, records: &[Record]) -> Self {
        let mut paxos = Paxos::new(config, id, nodes);
        for record in records {
            match record {
                Record::Promised { ballot } => paxos.promised = paxos.promised.max(*ballot),
                Record::Accepted { ballot, first_slot, values } => {
                    paxos.promised = paxos.promised.max(*ballot);
                    for (i, value) in values.iter().enumerate() {
                        paxos.set_accepted(first_slot + i as Slot, *ballot, value.clone());
                    }
                }
                Record::Checkpointed { promised, checkpoint, accepted } => {
                    paxos.promised = paxos.promised.max(*promised);
                    paxos.kv = decode_state(&checkpoint.state).expect("a checkpoint this replica persisted decodes");
                    paxos.last_applied = checkpoint.slot;
                    paxos.prefix_digests = vec![checkpoint.prefix_digest];
                    paxos.chosen.clear();
                    paxos.chosen_digests.clear();
                    paxos.accepted.clear();
                    paxos.checkpoint = checkpoint.clone();
                    for (slot, ballot, value) in accepted {
                        paxos.set_accepted(*slot, *ballot, value.clone());
                    }
                }
            }
        }
        paxos
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if self.promised != Ballot::ZERO || !self.accepted.is_empty() || self.base() > 0 {
            ctx.observe(Event::Restarted { epoch: self.promised.epoch() });
        }
        if self.config.promise_guard_on() {
            // A lease this acceptor helped grant before crashing is forgotten; waiting
            // out a minimum timeout honours it anyway.
            self.promise_guard_until = ctx.now() + self.config.leader_timeout_ns_min;
        }
        self.reset_leader_timer(ctx);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Message) {
        assert!(from.0 < self.nodes && from != self.id, "{}: message from {from}", self.id);
        if !self.step_ballot(from, &msg, ctx) {
            return;
        }
        match msg {
            Message::Prepare { ballot, commit } => self.handle_prepare(from, ballot, commit, ctx),
            Message::Promise { ballot, accepted, checkpoint } => {
                self.handle_promise(from, ballot, accepted, checkpoint, ctx)
            }
            Message::Accept { ballot, first_slot, values, commit } => {
                self.handle_accept(from, ballot, first_slot, values, commit, ctx)
            }
            Message::Accepted { ballot, first_slot, count } => {
                self.handle_accepted(from, ballot, first_slot, count, ctx)
            }
            Message::Nack { .. } => unreachable!("a Nack is wholly a ballot rule (`step_ballot`)"),
            Message::Heartbeat { ballot, commit, read_round } => {
                self.handle_heartbeat(from, ballot, commit, read_round, ctx)
            }
            Message::HeartbeatAck { ballot, read_round, .. } => {
                self.handle_heartbeat_ack(from, ballot, read_round, ctx)
            }
            Message::CatchUp { from_slot, resume } => self.handle_catch_up(from, from_slot, resume, ctx),
            Message::Learn { first_slot, values } => self.handle_learn(first_slot, values, ctx),
            Message::TransferState { header, offset, chunk } => self.handle_transfer_state(header, offset, chunk, ctx),
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: PaxosTimer) {
        match timer {
            PaxosTimer::LeaderTimeout => {
                if self.role != Role::Leader {
                    self.start_phase1(ctx);
                }
            }
            PaxosTimer::Heartbeat => {
                if self.role == Role::Leader {
                    self.broadcast_heartbeat(ctx);
                    ctx.set_timer(PaxosTimer::Heartbeat, self.config.heartbeat_interval_ns);
                }
            }
            PaxosTimer::Flush => {
                self.flush_timer_armed = false;
                self.flush(ctx);
            }
            PaxosTimer::CheckQuorum => {
                if self.role != Role::Leader {
                    return;
                }
                let me = self.id.0 as usize;
                let heard = self.heard_from.iter().enumerate().filter(|(i, h)| *i == me || **h).count() as u32;
                if heard < majority(self.nodes) {
                    self.become_follower(ctx);
                    self.leader = None;
                    return;
                }
                self.heard_from.iter_mut().for_each(|h| *h = false);
                ctx.set_timer(PaxosTimer::CheckQuorum, self.config.leader_timeout_ns_min);
            }
        }
    }

    fn on_input_drained(&mut self, ctx: &mut Context<'_, Self>) {
        // Only adaptive batching defers to this call; a batch delay keeps its timer.
        if self.config.batch_delay_ns == 0 {
            self.flush(ctx);
        }
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, request: Request) {
        if self.config.read_mode != ReadMode::Log && matches!(request.op, Op::Get { .. }) {
            self.serve_read(request, ctx);
            return;
        }
        if self.role != Role::Leader {
            let leader = self.leader.map(|(_, node)| node).filter(|n| *n != self.id);
            ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::NotLeader { leader } });
            return;
        }
        if self.proposed_requests.get(&request.client).is_some_and(|seq| *seq >= request.seq) {
            return; // a retry of a request already proposed: its slot will answer it
        }
        self.proposed_requests.insert(request.client, request.seq);
        self.pending.push(Arc::new(request));
        let full = self.pending.len() >= self.config.max_commands_per_slot;
        if self.config.batch_delay_ns == 0 || full {
            if self.flush_timer_armed {
                ctx.cancel_timer(PaxosTimer::Flush);
                self.flush_timer_armed = false;
            }
            self.flush(ctx);
        } else if !self.flush_timer_armed {
            ctx.set_timer(PaxosTimer::Flush, self.config.batch_delay_ns);
            self.flush_timer_armed = true;
        }
    }

    fn message_kind(msg: &Message) -> &'static str {
        match msg {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Nack { .. } => "nack",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::CatchUp { .. } => "catch_up",
            Message::Learn { .. } => "learn",
            Message::TransferState { .. } => "transfer_state",
        }
    }

    fn supersedes_earlier_records(record: &Record) -> bool {
        matches!(record, Record::Checkpointed { .. })
    }

    fn coverage_marks() -> &'static [&'static qlab_core::Mark] {
        &marks::ALL
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        if self.config.checkpoint_every_slots == 0 {
            return Vec::new();
        }
        vec![("checkpoints_taken", self.checkpoints_taken), ("states_transferred_in", self.states_transferred_in)]
    }

    fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    fn epoch(&self) -> u64 {
        self.promised.epoch()
    }
}
