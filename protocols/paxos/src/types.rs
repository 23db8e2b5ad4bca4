//! Multi-Paxos's vocabulary: ballots, its configuration and ablations, the values a
//! slot holds, checkpoints, the messages of both phases, what a replica persists, its
//! timers and roles.

use super::*;

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

/// `round.node`, as traces and ignored-message reasons print it: `3.n1`.
impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
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
    /// proposed as one value. 0: adaptive batching (`max_batches_in_flight`).
    #[serde(default)]
    pub batch_delay_ns: Nanos,
    /// Adaptive batching ([`qlab_core::batching`]), with no batch delay: commands are
    /// proposed at once while fewer than this many slots await commitment, and otherwise
    /// together when one commits. 0 proposes each command at once in its own slot
    /// (within `window_slots`).
    #[serde(default = "default_max_batches_in_flight")]
    pub max_batches_in_flight: usize,
    /// A slot's commands take at most this many encoded bytes (a single larger one goes
    /// alone).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
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

fn default_max_batches_in_flight() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCHES_IN_FLIGHT
}

fn default_max_batch_bytes() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCH_BYTES
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
            max_batches_in_flight: default_max_batches_in_flight(),
            max_batch_bytes: default_max_batch_bytes(),
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
    pub(crate) fn promise_guard_on(&self) -> bool {
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
    pub(crate) fn header(&self) -> CheckpointHeader {
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
    pub(crate) fn with_state(self, state: Vec<u8>) -> Checkpoint {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
