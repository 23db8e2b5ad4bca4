//! Raft's vocabulary: its configuration and ablations, the log entry and its digest,
//! the snapshot's metadata, the messages of Figure 2 (plus PreVote, TimeoutNow and
//! InstallSnapshot), what a replica persists, its timers and roles.

use super::*;

/// Log index; the first entry is at 1, 0 means "before the log".
pub type Index = u64;
pub type Term = u64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RaftConfig {
    pub election_timeout_ns_min: Nanos,
    /// Inclusive upper bound; `min == max` disables randomization (Figure 16's 150–150).
    pub election_timeout_ns_max: Nanos,
    pub heartbeat_interval_ns: Nanos,
    /// Bound on entries per `AppendEntries`, so one lagging follower cannot make the
    /// leader build an unbounded message.
    pub max_entries_per_append: usize,
    /// Leader steps down after a minimum election timeout without hearing a majority.
    pub check_quorum: bool,
    /// Client commands are collected for up to this long (or until a full
    /// `max_entries_per_append`) and appended as one batch: one record, one fsync and
    /// one AppendEntries per follower for the lot. 0: adaptive batching
    /// (`max_batches_in_flight`).
    #[serde(default)]
    pub batch_delay_ns: Nanos,
    /// Adaptive batching ([`qlab_core::batching`]), with no batch delay: commands are
    /// appended at once while fewer than this many of the leader's batches await
    /// commitment, and otherwise together when one commits. 0 appends each command at
    /// once in its own batch.
    #[serde(default = "default_max_batches_in_flight")]
    pub max_batches_in_flight: usize,
    /// A batch's commands take at most this many encoded bytes (a single larger one
    /// goes alone).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// How `get`s are served (§6.4); see [`qlab_core::reads`].
    #[serde(default)]
    pub read_mode: ReadMode,
    /// Lease reads: the bound, in parts per million, on how far any clock's rate may
    /// drift from true time; the lease is `election_timeout_ns_min × (1 − ρ)/(1 + ρ)`.
    #[serde(default = "default_drift_bound_ppm")]
    pub lease_drift_bound_ppm: u64,
    /// Thesis §9.6: campaign only after a majority granted a pre-vote.
    #[serde(default)]
    pub pre_vote: bool,
    /// Log compaction (§7): snapshot once this many entries were applied since the
    /// last snapshot; 0 never snapshots by count.
    #[serde(default)]
    pub snapshot_every_entries: u64,
    /// ...or once the entries applied since the last snapshot take this many bytes
    /// (their encoded size); 0 never snapshots by size.
    #[serde(default)]
    pub snapshot_every_bytes: u64,
    /// `InstallSnapshot` carries at most this many bytes of the snapshot per message.
    #[serde(default = "default_snapshot_chunk_bytes")]
    pub snapshot_chunk_bytes: usize,
    /// Safety rules switched off, for counterexamples; all false is Raft.
    #[serde(default)]
    pub ablate: RaftAblations,
}

fn default_max_batches_in_flight() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCHES_IN_FLIGHT
}

fn default_max_batch_bytes() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCH_BYTES
}

/// 64 KiB: a chunk crosses a LAN in well under a millisecond and never nears a frame limit.
pub const DEFAULT_SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

fn default_snapshot_chunk_bytes() -> usize {
    DEFAULT_SNAPSHOT_CHUNK_BYTES
}

/// 1%: far above a quartz oscillator's tens of ppm, so a lease stays safe on any sane host.
pub const DEFAULT_DRIFT_BOUND_PPM: u64 = 10_000;

fn default_drift_bound_ppm() -> u64 {
    DEFAULT_DRIFT_BOUND_PPM
}

/// Raft's safety rules, each of which can be switched off to watch the checkers catch
/// what it prevents. A field set to true removes the rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftAblations {
    /// §5.4.1: grant votes without comparing logs, so a candidate missing committed
    /// entries can win and overwrite them (Leader Completeness, State Machine Safety).
    pub vote_without_log_check: bool,
    /// §5.2: grant a vote to every candidate of a term, not only the first, so two
    /// candidates can both gather a majority (Election Safety).
    pub multiple_votes_per_term: bool,
    /// §5.3: append entries even when the entry at `prevLogIndex` has another term, so
    /// new entries land after a divergent prefix (Log Matching).
    pub skip_prev_log_check: bool,
    /// §5.4.2, Figure 8: commit an entry of an earlier term once a majority stores it;
    /// a later leader may still overwrite it (State Machine Safety).
    pub commit_old_term_by_count: bool,
    /// Check-quorum: neither does a leader cut off from a majority step down, nor does a
    /// follower that just heard from its leader refuse votes. Harmless for reads through
    /// the log; with `lease` reads a new leader commits while the old one's lease still
    /// runs, and its reads go stale (linearizability).
    pub no_check_quorum: bool,
}

impl RaftAblations {
    /// Ablation names as experiment files and test tools write them.
    pub const NAMES: &'static [&'static str] = &[
        "vote_without_log_check",
        "multiple_votes_per_term",
        "skip_prev_log_check",
        "commit_old_term_by_count",
        "no_check_quorum",
    ];

    /// Only the ablation called `name` switched on.
    pub fn only(name: &str) -> Option<Self> {
        let mut ablate = RaftAblations::default();
        ablate.switch_off_rule(name).then_some(ablate)
    }

    /// Switch on the ablation called `name` besides any already on; false for an
    /// unknown name.
    pub fn switch_off_rule(&mut self, name: &str) -> bool {
        match name {
            "vote_without_log_check" => self.vote_without_log_check = true,
            "multiple_votes_per_term" => self.multiple_votes_per_term = true,
            "skip_prev_log_check" => self.skip_prev_log_check = true,
            "commit_old_term_by_count" => self.commit_old_term_by_count = true,
            "no_check_quorum" => self.no_check_quorum = true,
            _ => return false,
        }
        true
    }

    pub fn any(&self) -> bool {
        *self != RaftAblations::default()
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            election_timeout_ns_min: ms(150),
            election_timeout_ns_max: ms(300),
            heartbeat_interval_ns: ms(50),
            max_entries_per_append: 64,
            check_quorum: true,
            batch_delay_ns: 0,
            max_batches_in_flight: default_max_batches_in_flight(),
            max_batch_bytes: default_max_batch_bytes(),
            read_mode: ReadMode::Log,
            lease_drift_bound_ppm: DEFAULT_DRIFT_BOUND_PPM,
            pre_vote: false,
            snapshot_every_entries: 0,
            snapshot_every_bytes: 0,
            snapshot_chunk_bytes: DEFAULT_SNAPSHOT_CHUNK_BYTES,
            ablate: RaftAblations::default(),
        }
    }
}

impl RaftConfig {
    /// Check-quorum as configured, unless the ablation removes it.
    pub fn check_quorum_on(&self) -> bool {
        self.check_quorum && !self.ablate.no_check_quorum
    }
    pub(crate) fn compaction_on(&self) -> bool {
        self.snapshot_every_entries > 0 || self.snapshot_every_bytes > 0
    }
    /// Whether followers refuse votes while they hear from a leader (lease reads).
    pub(crate) fn vote_guard_on(&self) -> bool {
        self.read_mode == ReadMode::Lease && self.check_quorum_on()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader so entries of earlier terms commit (§5.4.2, §8).
    Noop,
    /// Shared, not copied, between the log, the records and every AppendEntries.
    Command(Arc<Request>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

impl Entry {
    /// Identity of the entry for the checkers: term and payload (the index is
    /// chained in by the prefix digest).
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"raft");
        hasher.update(&self.term.to_le_bytes());
        match &self.payload {
            Payload::Noop => {
                hasher.update(b"noop");
            }
            Payload::Command(request) => {
                hasher.update(b"cmd");
                request.hash_into(&mut hasher);
            }
        }
        Digest(*hasher.finalize().as_bytes())
    }

    pub(crate) fn encoded_bytes(&self) -> usize {
        16 + match &self.payload {
            Payload::Noop => 1,
            Payload::Command(request) => 24 + request.op.encoded_bytes(),
        }
    }
}

/// Where a snapshot sits in the log: the last entry it covers, and that entry's digest
/// and place in the digest chain, so the checkers can compare a snapshot with the log
/// it replaced; and the digest of the state itself, which a follower checks before
/// installing what it pieced together from chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_included_index: Index,
    pub last_included_term: Term,
    pub last_included_digest: Digest,
    pub prefix_digest: Digest,
    pub state_digest: Digest,
}

impl SnapshotMeta {
    /// The empty snapshot every log starts from.
    pub(crate) const GENESIS: SnapshotMeta = SnapshotMeta {
        last_included_index: 0,
        last_included_term: 0,
        last_included_digest: Digest::GENESIS,
        prefix_digest: Digest::GENESIS,
        state_digest: Digest::GENESIS,
    };
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    RequestVote {
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
    },
    VoteResponse {
        term: Term,
        granted: bool,
    },
    AppendEntries {
        term: Term,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    },
    /// `match_index` is meaningful on success: the follower's log matches the
    /// leader's up to it. On rejection `conflict_term`/`conflict_index` drive the
    /// leader's fast back-off.
    AppendResponse {
        term: Term,
        success: bool,
        match_index: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
    },
    /// `commit` is `min(leader commitIndex, matchIndex[recipient])`: never beyond
    /// what the recipient is known to share with the leader. `read_round` numbers the
    /// leader's heartbeat rounds for read-index and lease reads.
    Heartbeat {
        term: Term,
        commit: Index,
        read_round: u64,
    },
    /// `read_round` echoes the heartbeat's.
    HeartbeatResponse {
        term: Term,
        last_log_index: Index,
        read_round: u64,
    },
    /// Thesis §9.6: would you vote for me in `term` (one above the sender's own)?
    PreVote {
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
    },
    /// `term` is the term asked about when granted, the responder's own otherwise.
    PreVoteResponse {
        term: Term,
        granted: bool,
    },
    /// Thesis §3.10: the leader hands over; start an election now.
    TimeoutNow {
        term: Term,
    },
    /// §7: bytes `offset..offset + data.len()` of the leader's snapshot `meta`, whose
    /// serialized state machine is `total_bytes` long.
    InstallSnapshot {
        term: Term,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// The follower holds the first `received` bytes of snapshot `last_included_index`
    /// (the next chunk starts there); `installed`: its state now includes that index.
    InstallSnapshotResponse {
        term: Term,
        last_included_index: Index,
        received: u64,
        installed: bool,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendResponse { term, .. }
            | Message::Heartbeat { term, .. }
            | Message::HeartbeatResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::TimeoutNow { term } => *term,
        }
    }
}

/// What Raft persists: enough to rebuild `currentTerm`, `votedFor` and the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    HardState {
        term: Term,
        voted_for: Option<NodeId>,
    },
    /// Entries appended at the end of the log (after any truncation).
    Append {
        entries: Vec<Entry>,
    },
    /// Remove every entry at index ≥ `from_index`.
    Truncate {
        from_index: Index,
    },
    /// Everything a restart needs, superseding every earlier record: the term and vote,
    /// a snapshot of the state machine (serialized [`KvStore`]) and the entries after it.
    Snapshot {
        term: Term,
        voted_for: Option<NodeId>,
        meta: SnapshotMeta,
        state: Vec<u8>,
        entries: Vec<Entry>,
    },
}

impl Record {
    /// The record as the replica renamed by `renaming` would have written it
    /// ([`Raft::renamed`](crate::Raft::renamed)); only a vote names a replica.
    pub fn renamed(&self, renaming: &qlab_core::symmetry::Renaming) -> Record {
        match self {
            Record::HardState { term, voted_for } => {
                Record::HardState { term: *term, voted_for: voted_for.map(|node| renaming.of(node)) }
            }
            Record::Snapshot { term, voted_for, meta, state, entries } => Record::Snapshot {
                term: *term,
                voted_for: voted_for.map(|node| renaming.of(node)),
                meta: *meta,
                state: state.clone(),
                entries: entries.clone(),
            },
            Record::Append { .. } | Record::Truncate { .. } => self.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RaftTimer {
    Election,
    Heartbeat,
    CheckQuorum,
    /// Append the commands collected since the batch opened.
    Flush,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking for pre-votes (thesis §9.6), term unchanged.
    PreCandidate,
    Candidate,
    Leader,
}
