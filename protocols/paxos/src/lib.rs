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

pub mod attacks;
pub mod client;

use qlab_core::reads::{LeaderReads, ReadMode, lease_ns, local_read};
use qlab_core::{
    ClientId, Context, Digest, Event, KvStore, Nanos, NodeId, Op, Protocol, Reply, ReplyBody, Request, majority, ms,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use client::{PaxosClient, PaxosClientTimer};

/// Log position; the first slot is 1, 0 means "before the log".
pub type Slot = u64;

/// `(round, node)`, ordered by round then node: unique to its proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

/// Clusters are at most this large, so a ballot maps to an epoch number one-to-one.
pub const MAX_NODES: u32 = 1000;

impl Ballot {
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0) };

    /// The checkers' epoch: `round * 1000 + node`, readable and order-preserving.
    pub fn epoch(&self) -> u64 {
        self.round * MAX_NODES as u64 + self.node.0 as u64
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaxosConfig {
    /// A follower that hears nothing from a leader for a time uniform in
    /// `[leader_timeout_ns_min, leader_timeout_ns_max]` starts phase 1.
    pub leader_timeout_ns_min: Nanos,
    pub leader_timeout_ns_max: Nanos,
    pub heartbeat_interval_ns: Nanos,
    /// Slots proposed but not yet committed, at most.
    pub window_slots: usize,
    /// Client commands in one slot's value, at most.
    pub max_commands_per_slot: usize,
    /// Values in one `Accept`, `Promise` chunk or `Learn`, at most.
    pub max_values_per_message: usize,
    pub check_quorum: bool,
    /// Client commands are collected for up to this long (or until a full slot) and
    /// proposed as one value. 0 proposes each command at once (in its own slot, when the
    /// window has room).
    #[serde(default)]
    pub batch_delay_ns: Nanos,
    /// How `get`s are served; see [`qlab_core::reads`].
    #[serde(default)]
    pub read_mode: ReadMode,
    /// Lease reads: the bound, in parts per million, on any clock's rate drift; the
    /// lease is `leader_timeout_ns_min × (1 − ρ)/(1 + ρ)`.
    #[serde(default = "default_drift_bound_ppm")]
    pub lease_drift_bound_ppm: u64,
    /// Checkpoint the state machine (and forget the slots up to it) once this many slots
    /// were applied since the last checkpoint; 0 never.
    #[serde(default)]
    pub checkpoint_every_slots: u64,
    /// State transfer sends the checkpoint in chunks of at most this many bytes.
    #[serde(default = "default_state_chunk_bytes")]
    pub state_chunk_bytes: usize,
    /// Safety rules switched off, for counterexamples; all false is Multi-Paxos.
    #[serde(default)]
    pub ablate: PaxosAblations,
}

fn default_drift_bound_ppm() -> u64 {
    DEFAULT_DRIFT_BOUND_PPM
}

/// 1%, as for Raft.
pub const DEFAULT_DRIFT_BOUND_PPM: u64 = 10_000;

/// Multi-Paxos's safety rule that can be switched off to watch the checkers catch what
/// it prevents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaxosAblations {
    /// Phase 1's value rule: a new leader re-proposes, per slot, the value accepted in
    /// the highest ballot among its promises. Switched off, it proposes its own values
    /// there, and a value a majority accepted (chosen, though perhaps not yet known to
    /// be) is replaced (State Machine Safety).
    pub skip_phase1_values: bool,
    /// Check-quorum: no step-down of a leader cut off from a majority, and no guard on
    /// promises while an acceptor hears from its leader. With `lease` reads a new leader
    /// commits while the old one's lease runs (linearizability).
    pub no_check_quorum: bool,
    /// With checkpoints: a candidate ignores the checkpoint a promise carries, so the
    /// slots up to it, chosen but no longer listed, look empty and are filled with
    /// no-ops (State Machine Safety, Leader Completeness).
    pub ignore_promised_checkpoint: bool,
}

impl PaxosAblations {
    pub fn any(&self) -> bool {
        *self != PaxosAblations::default()
    }
}

impl Default for PaxosConfig {
    fn default() -> Self {
        PaxosConfig {
            leader_timeout_ns_min: ms(150),
            leader_timeout_ns_max: ms(300),
            heartbeat_interval_ns: ms(50),
            window_slots: 256,
            max_commands_per_slot: 64,
            max_values_per_message: 64,
            check_quorum: true,
            batch_delay_ns: 0,
            read_mode: ReadMode::Log,
            lease_drift_bound_ppm: DEFAULT_DRIFT_BOUND_PPM,
            checkpoint_every_slots: 0,
            state_chunk_bytes: DEFAULT_STATE_CHUNK_BYTES,
            ablate: PaxosAblations::default(),
        }
    }
}

impl PaxosConfig {
    /// Check-quorum as configured, unless the ablation removes it.
    pub fn check_quorum_on(&self) -> bool {
        self.check_quorum && !self.ablate.no_check_quorum
    }
    /// Whether acceptors refuse other proposers while they hear from a leader (leases).
    fn promise_guard_on(&self) -> bool {
        self.read_mode == ReadMode::Lease && self.check_quorum_on()
    }
}

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// Fills a slot no proposer used, so the slots after it can commit.
    Noop,
    /// A batch of client commands, applied in order.
    Commands(Vec<Arc<Request>>),
}

impl Value {
    /// Identity of the value for the checkers. Unlike Raft's, it leaves out the ballot:
    /// a value re-proposed by a later leader is the same value.
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"paxos");
        match self {
            Value::Noop => {
                hasher.update(b"noop");
            }
            Value::Commands(commands) => {
                hasher.update(&(commands.len() as u64).to_le_bytes());
                for command in commands {
                    command.hash_into(&mut hasher);
                }
            }
        }
        Digest(*hasher.finalize().as_bytes())
    }
}

/// One slot of a promise: the value accepted there and in which ballot, or, for slots
/// the acceptor already knows chosen, the chosen value (`chosen = true`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromisedSlot {
    pub slot: Slot,
    pub ballot: Ballot,
    pub value: Value,
    pub chosen: bool,
}

/// The state machine after every slot up to `slot`, serialized, with that slot's chosen
/// value digest and place in the digest chain (so the checkers can compare it with the
/// log it replaces) and the state's own digest (checked before it is installed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub slot: Slot,
    pub digest: Digest,
    pub prefix_digest: Digest,
    pub state_digest: Digest,
    pub state: Arc<Vec<u8>>,
}

impl Checkpoint {
    fn header(&self) -> CheckpointHeader {
        CheckpointHeader {
            slot: self.slot,
            digest: self.digest,
            prefix_digest: self.prefix_digest,
            state_digest: self.state_digest,
            state_bytes: self.state.len() as u64,
        }
    }
}

/// A checkpoint without its state: what each chunk of a state transfer names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub slot: Slot,
    pub digest: Digest,
    pub prefix_digest: Digest,
    pub state_digest: Digest,
    pub state_bytes: u64,
}

impl CheckpointHeader {
    fn with_state(self, state: Vec<u8>) -> Checkpoint {
        Checkpoint {
            slot: self.slot,
            digest: self.digest,
            prefix_digest: self.prefix_digest,
            state_digest: self.state_digest,
            state: Arc::new(state),
        }
    }
}

/// Default `state_chunk_bytes`, as Raft's snapshot chunks: far below the real-mode frame
/// limit, and a small state still goes in one message.
pub const DEFAULT_STATE_CHUNK_BYTES: usize = 64 * 1024;

fn default_state_chunk_bytes() -> usize {
    DEFAULT_STATE_CHUNK_BYTES
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: promise `ballot`, and tell me what you accepted above `commit`.
    Prepare { ballot: Ballot, commit: Slot },
    /// Phase 1b. `checkpoint`: the acceptor's checkpoint, when it lies beyond the
    /// candidate's commit point (the slots up to it cannot be listed any more).
    Promise { ballot: Ballot, accepted: Vec<PromisedSlot>, checkpoint: Option<Checkpoint> },
    /// Phase 2a for the contiguous slots `first_slot ..`; `commit` is the leader's
    /// commit point (the learners' notification).
    Accept { ballot: Ballot, first_slot: Slot, values: Vec<Value>, commit: Slot },
    /// Phase 2b for `first_slot .. first_slot + count`.
    Accepted { ballot: Ballot, first_slot: Slot, count: u64 },
    /// `ballot` was refused: this acceptor promised `promised`.
    Nack { ballot: Ballot, promised: Ballot },
    /// `read_round` numbers the leader's heartbeat rounds for read-index and lease reads.
    Heartbeat { ballot: Ballot, commit: Slot, read_round: u64 },
    /// `read_round` echoes the heartbeat's.
    HeartbeatAck { ballot: Ballot, commit: Slot, read_round: u64 },
    /// A learner missing chosen values from `from_slot` on asks the leader; `resume`:
    /// the checkpoint slot and bytes held of a state transfer under way.
    CatchUp { from_slot: Slot, resume: Option<(Slot, u64)> },
    /// Chosen values of the contiguous slots `first_slot ..`.
    Learn { first_slot: Slot, values: Vec<Value> },
    /// State transfer: bytes `offset ..` of the leader's checkpoint state, for a learner
    /// asking for slots it forgot.
    TransferState { header: CheckpointHeader, offset: u64, chunk: Vec<u8> },
}

/// What an acceptor persists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Promised {
        ballot: Ballot,
    },
    /// Values accepted in `ballot` at `first_slot ..` (implies a promise of `ballot`).
    Accepted {
        ballot: Ballot,
        first_slot: Slot,
        values: Vec<Value>,
    },
    /// Supersedes every earlier record: the promise, a checkpoint, and what was accepted
    /// above it (slot, ballot, value).
    Checkpointed {
        promised: Ballot,
        checkpoint: Checkpoint,
        accepted: Vec<(Slot, Ballot, Value)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaxosTimer {
    /// Follower or candidate: no leader heard from; start (another) phase 1.
    LeaderTimeout,
    Heartbeat,
    CheckQuorum,
    /// Propose the commands collected since the batch opened.
    Flush,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

/// A slot the leader proposed and has not committed yet.
#[derive(Clone, Debug)]
struct InFlight {
    value: Value,
    acks: Vec<bool>,
    chosen: bool,
}

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
    pending: Vec<Arc<Request>>,
    proposed_requests: HashMap<ClientId, u64>,
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

    // ---- acceptor state ---------------------------------------------------------------

    fn set_accepted(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        let Some(index) = slot.checked_sub(self.base() + 1) else {
            return; // at or below the checkpoint: chosen, and forgotten on purpose
        };
        let index = index as usize;
        if self.accepted.len() <= index {
            self.accepted.resize(index + 1, None);
        }
        self.accepted[index] = Some((ballot, value));
    }

    /// Accept `values` at `first_slot ..` in `ballot`, persisting them; slots already
    /// known chosen are skipped (their value cannot change).
    fn accept_values(&mut self, ballot: Ballot, first_slot: Slot, values: &[Value], ctx: &mut Context<'_, Self>) {
        let commit = self.commit_index();
        let skip = commit.saturating_sub(first_slot - 1).min(values.len() as u64) as usize;
        let values = &values[skip..];
        if values.is_empty() {
            return;
        }
        let first = first_slot + skip as Slot;
        let already = values
            .iter()
            .enumerate()
            .all(|(i, v)| self.accepted_at(first + i as Slot).is_some_and(|(b, held)| *b == ballot && held == v));
        if already {
            return; // a retransmission: nothing new to make durable
        }
        for (i, value) in values.iter().enumerate() {
            self.set_accepted(first + i as Slot, ballot, value.clone());
        }
        ctx.persist(Record::Accepted { ballot, first_slot: first, values: values.to_vec() });
    }

    /// Promise `ballot` (durably, before any answer leaves).
    fn promise(&mut self, ballot: Ballot, ctx: &mut Context<'_, Self>) {
        debug_assert!(ballot >= self.promised);
        if ballot > self.promised {
            self.promised = ballot;
            ctx.persist(Record::Promised { ballot });
        }
    }

    // ---- learner ------------------------------------------------------------------------

    /// Slot `commit + 1` is chosen with `value`.
    fn commit_next(&mut self, value: Value, ctx: &mut Context<'_, Self>) {
        let slot = self.commit_index() + 1;
        let digest = value.digest();
        let prefix = self.prefix_digests.last().expect("genesis").chain(slot, &digest);
        self.prefix_digests.push(prefix);
        self.chosen_digests.push(digest);
        self.chosen.push(value);
        ctx.observe(Event::Committed { slot, digest, prefix_digest: prefix });
        self.apply_committed(ctx);
    }

    // ---- checkpoints ----------------------------------------------------------------

    /// Checkpoint at the last applied slot once enough was applied since the last one.
    fn maybe_checkpoint(&mut self, ctx: &mut Context<'_, Self>) {
        let every = self.config.checkpoint_every_slots;
        if every == 0 || self.last_applied < self.base() + every {
            return;
        }
        let slot = self.last_applied;
        let state = encode_state(&self.kv);
        let checkpoint = Checkpoint {
            slot,
            digest: self.chosen_digests[(slot - self.base() - 1) as usize],
            prefix_digest: self.prefix_digest_at(slot),
            state_digest: self.kv.state_digest(),
            state: Arc::new(state),
        };
        self.forget_through(checkpoint);
        self.checkpoints_taken += 1;
        self.persist_checkpoint(ctx);
    }

    /// Make `checkpoint` the base: drop the chosen and accepted values up to it.
    fn forget_through(&mut self, checkpoint: Checkpoint) {
        let drop = (checkpoint.slot - self.base()) as usize;
        self.chosen.drain(..drop.min(self.chosen.len()));
        self.chosen_digests.drain(..drop.min(self.chosen_digests.len()));
        self.prefix_digests.drain(..drop.min(self.prefix_digests.len() - 1));
        self.accepted.drain(..drop.min(self.accepted.len()));
        self.checkpoint = checkpoint;
        if self.chosen.is_empty() {
            self.prefix_digests = vec![self.checkpoint.prefix_digest];
        }
    }

    fn persist_checkpoint(&self, ctx: &mut Context<'_, Self>) {
        let base = self.base();
        let accepted = self
            .accepted
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|(b, v)| (base + 1 + i as Slot, *b, v.clone())))
            .collect();
        ctx.persist(Record::Checkpointed { promised: self.promised, checkpoint: self.checkpoint.clone(), accepted });
    }

    /// Install a checkpoint from another replica if it lies beyond our commit point:
    /// its state replaces ours and its slot becomes our commit point.
    fn install_checkpoint(&mut self, checkpoint: Checkpoint, ctx: &mut Context<'_, Self>) -> bool {
        if checkpoint.slot <= self.commit_index() {
            return false;
        }
        let Some(kv) = decode_state(&checkpoint.state).filter(|kv| kv.state_digest() == checkpoint.state_digest) else {
            return false; // an honest replica cannot send this
        };
        let (slot, digest, prefix_digest) = (checkpoint.slot, checkpoint.digest, checkpoint.prefix_digest);
        // Accepted values above it stay; everything at or below it is chosen.
        let keep_from = (slot - self.base()) as usize;
        let accepted: Vec<Option<(Ballot, Value)>> = self.accepted.drain(..).skip(keep_from).collect();
        self.chosen.clear();
        self.chosen_digests.clear();
        self.checkpoint = checkpoint;
        self.prefix_digests = vec![prefix_digest];
        self.accepted = accepted;
        self.kv = kv;
        self.last_applied = slot;
        self.states_transferred_in += 1;
        self.persist_checkpoint(ctx);
        ctx.observe(Event::Committed { slot, digest, prefix_digest });
        ctx.observe(Event::Applied { slot, digest });
        true
    }

    fn apply_committed(&mut self, ctx: &mut Context<'_, Self>) {
        while self.last_applied < self.commit_index() {
            self.last_applied += 1;
            let slot = self.last_applied;
            let at = (slot - self.base() - 1) as usize;
            let value = &self.chosen[at];
            ctx.observe(Event::Applied { slot, digest: self.chosen_digests[at] });
            if let Value::Commands(commands) = value {
                for request in commands {
                    let result = self.kv.apply(request);
                    if self.role == Role::Leader
                        && let Some(result) = result
                    {
                        ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
                    }
                }
            }
        }
        self.answer_ready_reads(ctx);
        self.maybe_checkpoint(ctx);
    }

    // ---- reads that skip the log ----------------------------------------------------------

    fn serve_read(&mut self, request: Request, ctx: &mut Context<'_, Self>) {
        debug_assert!(matches!(request.op, Op::Get { .. }), "only gets skip the log");
        if self.config.read_mode == ReadMode::FollowerStale {
            self.reply_read(&request, ctx);
            return;
        }
        if self.role != Role::Leader {
            let leader = self.leader.map(|(_, node)| node).filter(|n| *n != self.id);
            ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::NotLeader { leader } });
            return;
        }
        let commit = self.commit_index();
        let reads = self.reads.as_mut().expect("a leader with leader reads keeps their state");
        if self.config.read_mode == ReadMode::Lease && reads.lease_holds(ctx.now(), commit) {
            self.reply_read(&request, ctx);
            return;
        }
        reads.enqueue(request, commit);
        if reads.round_wanted() {
            self.broadcast_heartbeat(ctx);
        }
    }

    fn reply_read(&self, request: &Request, ctx: &mut Context<'_, Self>) {
        if let Some(reply) = local_read(&self.kv, request) {
            ctx.reply(reply);
        }
    }

    fn answer_ready_reads(&mut self, ctx: &mut Context<'_, Self>) {
        let commit = self.commit_index();
        let Some(reads) = self.reads.as_mut() else { return };
        if reads.waiting() == 0 {
            return;
        }
        for request in reads.take_ready(commit, self.last_applied) {
            self.reply_read(&request, ctx);
        }
    }

    fn broadcast_heartbeat(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let read_round = self.reads.as_mut().map_or(0, |reads| reads.next_round(now));
        let commit = self.commit_index();
        ctx.broadcast(Message::Heartbeat { ballot: self.promised, commit, read_round });
    }

    /// The leader of `ballot` says everything up to `leader_commit` is chosen: commit
    /// what we hold accepted in that ballot, and ask for the rest.
    fn learn_commit(&mut self, ballot: Ballot, leader_commit: Slot, ctx: &mut Context<'_, Self>) {
        self.leader_commit = self.leader_commit.max(leader_commit);
        while self.commit_index() < leader_commit {
            let slot = self.commit_index() + 1;
            match self.accepted_at(slot) {
                Some((b, value)) if *b == ballot => {
                    let value = value.clone();
                    self.commit_next(value, ctx);
                }
                _ => break,
            }
        }
        self.maybe_catch_up(ctx);
    }

    fn maybe_catch_up(&mut self, ctx: &mut Context<'_, Self>) {
        let Some((_, leader)) = self.leader else { return };
        if leader == self.id || self.commit_index() >= self.leader_commit {
            return;
        }
        // One request per heartbeat interval unless answered: a lost one is retried.
        let now = ctx.now();
        if self.catch_up_requested_at.is_some_and(|at| now < at + self.config.heartbeat_interval_ns) {
            return;
        }
        self.catch_up_requested_at = Some(now);
        let resume = self.incoming_state.as_ref().map(|(header, bytes)| (header.slot, bytes.len() as u64));
        ctx.send(leader, Message::CatchUp { from_slot: self.commit_index() + 1, resume });
    }

    // ---- role changes -------------------------------------------------------------------

    /// Follow whoever leads `ballot` (or nobody yet, during its phase 1).
    fn become_follower(&mut self, ctx: &mut Context<'_, Self>) {
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

    fn start_phase1(&mut self, ctx: &mut Context<'_, Self>) {
        let ballot = Ballot { round: self.promised.round.max(self.round_seen) + 1, node: self.id };
        self.become_follower(ctx);
        self.role = Role::Candidate;
        self.leader = None;
        self.promise(ballot, ctx);
        self.promises = vec![None; self.nodes as usize];
        self.promises[self.id.0 as usize] = Some(self.promised_slots_above(self.commit_index()));
        self.reset_leader_timer(ctx);
        ctx.broadcast(Message::Prepare { ballot, commit: self.commit_index() });
        self.maybe_finish_phase1(ctx);
    }

    /// What this acceptor reports above `from`: chosen values, then accepted ones. Slots
    /// at or below the checkpoint are not listed (the checkpoint goes along instead).
    fn promised_slots_above(&self, from: Slot) -> Vec<PromisedSlot> {
        let commit = self.commit_index();
        let mut slots = Vec::new();
        for slot in from.max(self.base()) + 1..=commit {
            slots.push(PromisedSlot {
                slot,
                ballot: Ballot::ZERO,
                value: self.chosen[(slot - self.base() - 1) as usize].clone(),
                chosen: true,
            });
        }
        for slot in (from.max(commit) + 1)..=self.base() + self.accepted.len() as Slot {
            if let Some((ballot, value)) = self.accepted_at(slot) {
                slots.push(PromisedSlot { slot, ballot: *ballot, value: value.clone(), chosen: false });
            }
        }
        slots
    }

    fn maybe_finish_phase1(&mut self, ctx: &mut Context<'_, Self>) {
        let promised = self.promises.iter().filter(|p| p.is_some()).count() as u32;
        if self.role == Role::Candidate && promised >= majority(self.nodes) {
            self.become_leader(ctx);
        }
    }

    fn become_leader(&mut self, ctx: &mut Context<'_, Self>) {
        assert_eq!(self.role, Role::Candidate);
        let ballot = self.promised;
        // Per slot: a chosen value wins outright; otherwise the highest-ballot value.
        let mut merged: BTreeMap<Slot, (bool, Ballot, Value)> = BTreeMap::new();
        let commit = self.commit_index();
        for promise in self.promises.drain(..).flatten() {
            for PromisedSlot { slot, ballot, value, chosen } in promise {
                if slot <= commit || (self.config.ablate.skip_phase1_values && !chosen) {
                    continue;
                }
                let replace = match merged.get(&slot) {
                    None => true,
                    Some((known_chosen, known_ballot, _)) => !known_chosen && (chosen || ballot > *known_ballot),
                };
                if replace {
                    merged.insert(slot, (chosen, ballot, value));
                }
            }
        }
        self.role = Role::Leader;
        self.leader = Some((ballot, self.id));
        self.leader_commit = 0;
        // The chosen prefix is known outright.
        while let Some((true, _, value)) = merged.get(&(self.commit_index() + 1)).cloned() {
            merged.remove(&(self.commit_index() + 1));
            self.commit_next(value, ctx);
        }
        let commit = self.commit_index();
        let last = merged.keys().next_back().copied().unwrap_or(commit).max(commit);
        // Re-propose every slot above the commit point in our ballot; gaps get no-ops.
        let values: Vec<Value> =
            (commit + 1..=last).map(|slot| merged.remove(&slot).map_or(Value::Noop, |(_, _, v)| v)).collect();
        let mut digests = vec![self.prefix_digest_at(commit)];
        for (i, value) in values.iter().enumerate() {
            let next = digests.last().expect("non-empty").chain(commit + 1 + i as Slot, &value.digest());
            digests.push(next);
        }
        ctx.observe(Event::Elected { epoch: ballot.epoch(), log_from_slot: commit, log_prefix_digests: digests });
        self.leader_known_ballot = ballot;
        ctx.observe(Event::LeaderKnown { epoch: ballot.epoch(), leader: self.id });
        ctx.cancel_timer(PaxosTimer::LeaderTimeout);
        self.in_flight.clear();
        self.proposed_requests.clear();
        self.heard_from = vec![true; self.nodes as usize];
        self.next_slot = commit + 1;
        if self.config.read_mode.leader_reads() {
            // Reads wait until every slot that may have been chosen before is committed.
            let lease = lease_ns(self.config.leader_timeout_ns_min, self.config.lease_drift_bound_ppm);
            self.reads = Some(LeaderReads::new(self.id, self.nodes, lease, last));
        }
        for value in values {
            self.propose(value, ctx);
        }
        ctx.set_timer(PaxosTimer::Heartbeat, self.config.heartbeat_interval_ns);
        if self.config.check_quorum_on() {
            ctx.set_timer(PaxosTimer::CheckQuorum, self.config.leader_timeout_ns_min);
        }
        self.advance_leader_commit(ctx);
    }

    // ---- leader -------------------------------------------------------------------------

    /// Phase 2a for `value` in the next slot.
    fn propose(&mut self, value: Value, ctx: &mut Context<'_, Self>) {
        let slot = self.next_slot;
        self.next_slot += 1;
        let ballot = self.promised;
        self.accept_values(ballot, slot, std::slice::from_ref(&value), ctx);
        let mut acks = vec![false; self.nodes as usize];
        acks[self.id.0 as usize] = true;
        self.in_flight.insert(slot, InFlight { value: value.clone(), acks, chosen: self.nodes == 1 });
        let commit = self.commit_index();
        ctx.broadcast(Message::Accept { ballot, first_slot: slot, values: vec![value], commit });
    }

    /// Propose collected commands while the window has room.
    fn flush(&mut self, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader {
            self.pending.clear();
            return;
        }
        while !self.pending.is_empty() && self.in_flight.len() < self.config.window_slots {
            let take = self.pending.len().min(self.config.max_commands_per_slot);
            let commands: Vec<Arc<Request>> = self.pending.drain(..take).collect();
            self.propose(Value::Commands(commands), ctx);
        }
    }

    /// Commit the chosen in-flight slots that follow the commit point, in order.
    fn advance_leader_commit(&mut self, ctx: &mut Context<'_, Self>) {
        let mut advanced = false;
        let mut next = self.commit_index() + 1;
        while let Some(entry) = self.in_flight.first_entry() {
            if *entry.key() != next || !entry.get().chosen {
                break;
            }
            let InFlight { value, .. } = entry.remove();
            self.commit_next(value, ctx);
            next += 1;
            advanced = true;
        }
        // Commands that waited for room in the window go now, unless their batch is
        // still open (its timer will flush them).
        if advanced && !self.flush_timer_armed {
            self.flush(ctx);
        }
    }

    fn handle_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first_slot: Slot,
        count: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.role != Role::Leader || ballot != self.promised {
            return;
        }
        self.heard_from[from.0 as usize] = true;
        let quorum = majority(self.nodes) as usize;
        for (_, flight) in self.in_flight.range_mut(first_slot..first_slot + count) {
            flight.acks[from.0 as usize] = true;
            if !flight.chosen && flight.acks.iter().filter(|a| **a).count() >= quorum {
                flight.chosen = true;
            }
        }
        self.advance_leader_commit(ctx);
    }

    /// Resend every in-flight slot `peer` has not acknowledged (lost Accepts or replies),
    /// as contiguous runs.
    fn retransmit_to(&self, peer: NodeId, ctx: &mut Context<'_, Self>) {
        let commit = self.commit_index();
        let mut run: Option<(Slot, Vec<Value>)> = None;
        let flush = |run: Option<(Slot, Vec<Value>)>, ctx: &mut Context<'_, Self>| {
            if let Some((first_slot, values)) = run {
                ctx.send(peer, Message::Accept { ballot: self.promised, first_slot, values, commit });
            }
        };
        for (slot, flight) in &self.in_flight {
            if flight.acks[peer.0 as usize] {
                continue;
            }
            run = match run {
                Some((first, mut values))
                    if first + values.len() as Slot == *slot && values.len() < self.config.max_values_per_message =>
                {
                    values.push(flight.value.clone());
                    Some((first, values))
                }
                other => {
                    flush(other, ctx);
                    Some((*slot, vec![flight.value.clone()]))
                }
            };
        }
        flush(run, ctx);
    }

    // ---- message handlers ---------------------------------------------------------------

    fn handle_prepare(&mut self, from: NodeId, ballot: Ballot, commit: Slot, ctx: &mut Context<'_, Self>) {
        if self.config.promise_guard_on()
            && ballot > self.promised
            && (self.role == Role::Leader || ctx.now() < self.promise_guard_until)
        {
            // A lease may still run: ignore, and let the proposer time out and retry.
            return;
        }
        if ballot < self.promised || (ballot == self.promised && ballot.node != from) {
            ctx.send(from, Message::Nack { ballot, promised: self.promised });
            return;
        }
        if ballot > self.promised {
            self.become_follower(ctx);
            self.leader = None;
            self.promise(ballot, ctx);
            // A would-be leader: give it a full timeout to finish phase 1.
            self.reset_leader_timer(ctx);
        }
        let accepted = self.promised_slots_above(commit);
        let checkpoint = (commit < self.base()).then(|| self.checkpoint.clone());
        ctx.send(from, Message::Promise { ballot, accepted, checkpoint });
    }

    fn handle_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Vec<PromisedSlot>,
        checkpoint: Option<Checkpoint>,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.role != Role::Candidate || ballot != self.promised {
            return;
        }
        if let Some(checkpoint) = checkpoint.filter(|_| !self.config.ablate.ignore_promised_checkpoint) {
            // The slots up to it are chosen; without it we would fill them with no-ops.
            self.install_checkpoint(checkpoint, ctx);
        }
        self.promises[from.0 as usize] = Some(accepted);
        self.maybe_finish_phase1(ctx);
    }

    fn handle_nack(&mut self, ballot: Ballot, promised: Ballot, ctx: &mut Context<'_, Self>) {
        // Remember the round to beat next time; it is not a promise of ours (the next
        // phase 1 persists the ballot it picks).
        self.round_seen = self.round_seen.max(promised.round);
        if self.role == Role::Follower || ballot != self.promised || promised <= ballot {
            return;
        }
        // Pre-empted: stop proposing, and let a fresh random timeout decide whether we
        // try again — the randomized back-off that ends duelling proposers.
        self.become_follower(ctx);
        self.leader = None;
        self.reset_leader_timer(ctx);
    }

    fn handle_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first_slot: Slot,
        values: Vec<Value>,
        commit: Slot,
        ctx: &mut Context<'_, Self>,
    ) {
        if ballot < self.promised || (ballot == self.promised && ballot.node != from) {
            ctx.send(from, Message::Nack { ballot, promised: self.promised });
            return;
        }
        if ballot == self.promised && self.role == Role::Leader {
            return; // our own ballot from someone else: impossible among honest nodes
        }
        self.promise(ballot, ctx);
        self.follow(from, ballot, ctx);
        let count = values.len() as u64;
        self.accept_values(ballot, first_slot, &values, ctx);
        ctx.send(from, Message::Accepted { ballot, first_slot, count });
        self.learn_commit(ballot, commit, ctx);
    }

    fn handle_heartbeat(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        read_round: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if ballot < self.promised || (ballot == self.promised && ballot.node != from) {
            ctx.send(from, Message::Nack { ballot, promised: self.promised });
            return;
        }
        if ballot == self.promised && self.role == Role::Leader {
            return;
        }
        self.promise(ballot, ctx);
        self.follow(from, ballot, ctx);
        self.learn_commit(ballot, commit, ctx);
        ctx.send(from, Message::HeartbeatAck { ballot, commit: self.commit_index(), read_round });
    }

    fn handle_heartbeat_ack(&mut self, from: NodeId, ballot: Ballot, read_round: u64, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader || ballot != self.promised {
            return;
        }
        self.heard_from[from.0 as usize] = true;
        if let Some(reads) = self.reads.as_mut() {
            reads.on_ack(from, read_round);
            self.answer_ready_reads(ctx);
        }
        self.retransmit_to(from, ctx);
    }

    fn handle_catch_up(
        &mut self,
        from: NodeId,
        from_slot: Slot,
        resume: Option<(Slot, u64)>,
        ctx: &mut Context<'_, Self>,
    ) {
        let commit = self.commit_index();
        if from_slot == 0 || from_slot > commit {
            return;
        }
        if from_slot <= self.base() {
            // Forgotten since the checkpoint: send the state instead of the slots, from
            // where the learner's transfer of this same checkpoint stopped.
            let state = &self.checkpoint.state;
            let offset = resume
                .filter(|(slot, held)| *slot == self.checkpoint.slot && *held <= state.len() as u64)
                .map_or(0, |(_, held)| held as usize);
            let end = (offset + self.config.state_chunk_bytes.max(1)).min(state.len());
            let chunk = state[offset..end].to_vec();
            ctx.send(from, Message::TransferState { header: self.checkpoint.header(), offset: offset as u64, chunk });
            return;
        }
        let end = commit.min(from_slot + self.config.max_values_per_message as Slot - 1);
        let base = self.base();
        let values = self.chosen[(from_slot - base - 1) as usize..(end - base) as usize].to_vec();
        ctx.send(from, Message::Learn { first_slot: from_slot, values });
    }

    fn handle_transfer_state(
        &mut self,
        header: CheckpointHeader,
        offset: u64,
        chunk: Vec<u8>,
        ctx: &mut Context<'_, Self>,
    ) {
        if header.slot <= self.commit_index() {
            return;
        }
        let same = self.incoming_state.as_ref().is_some_and(|(h, _)| *h == header);
        if !same {
            if offset != 0 {
                return; // a chunk of a transfer we are not in: ask afresh on the next round
            }
            self.incoming_state = Some((header, Vec::new()));
        }
        let (_, bytes) = self.incoming_state.as_mut().expect("a transfer under way");
        if offset != bytes.len() as u64 || (chunk.is_empty() && header.state_bytes > 0) {
            return; // a duplicate or a stale chunk: no progress, no new request
        }
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 >= header.state_bytes {
            let (header, state) = self.incoming_state.take().expect("a transfer under way");
            self.install_checkpoint(header.with_state(state), ctx);
        }
        // As for a Learn that made progress: ask for what follows at once.
        self.catch_up_requested_at = None;
        self.maybe_catch_up(ctx);
    }

    fn handle_learn(&mut self, first_slot: Slot, values: Vec<Value>, ctx: &mut Context<'_, Self>) {
        let before = self.commit_index();
        for (i, value) in values.into_iter().enumerate() {
            if first_slot + i as Slot == self.commit_index() + 1 {
                self.commit_next(value, ctx);
            }
        }
        // Progress: ask for the next chunk at once instead of a heartbeat later. Only on
        // progress: a duplicated or stale Learn that asks again makes every copy breed
        // another request, and under message duplication the requests multiply without
        // bound (a storm the chaos runs found).
        if self.commit_index() > before {
            self.catch_up_requested_at = None;
            self.maybe_catch_up(ctx);
        }
    }
}

/// The state machine as a checkpoint carries it (canonical: the same state, the same bytes).
fn encode_state(kv: &KvStore) -> Vec<u8> {
    postcard::to_stdvec(kv).expect("in-memory serialization cannot fail")
}

fn decode_state(bytes: &[u8]) -> Option<KvStore> {
    postcard::from_bytes(bytes).ok()
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
            pending: Vec::new(),
            proposed_requests: HashMap::new(),
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
            Message::Nack { ballot, promised } => self.handle_nack(ballot, promised, ctx),
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
