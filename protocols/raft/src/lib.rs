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

pub mod attacks;
pub mod client;

use qlab_core::quorum::quorum_value;
use qlab_core::reads::{LeaderReads, ReadMode, lease_ns, local_read};
use qlab_core::{
    AdminCommand, Context, Digest, Event, KvStore, Nanos, NodeId, Op, Protocol, Reply, ReplyBody, Request, majority, ms,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

pub use client::{RaftClient, RaftClientTimer};

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
    /// one AppendEntries per follower for the lot. 0 appends each command at once.
    #[serde(default)]
    pub batch_delay_ns: Nanos,
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
        match name {
            "vote_without_log_check" => ablate.vote_without_log_check = true,
            "multiple_votes_per_term" => ablate.multiple_votes_per_term = true,
            "skip_prev_log_check" => ablate.skip_prev_log_check = true,
            "commit_old_term_by_count" => ablate.commit_old_term_by_count = true,
            "no_check_quorum" => ablate.no_check_quorum = true,
            _ => return None,
        }
        Some(ablate)
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
    fn compaction_on(&self) -> bool {
        self.snapshot_every_entries > 0 || self.snapshot_every_bytes > 0
    }
    /// Whether followers refuse votes while they hear from a leader (lease reads).
    fn vote_guard_on(&self) -> bool {
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

    fn encoded_bytes(&self) -> usize {
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
    const GENESIS: SnapshotMeta = SnapshotMeta {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Per-follower replication progress, kept by the leader.
#[derive(Clone, Debug)]
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
struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    data: Vec<u8>,
}

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
    appended_requests: HashMap<qlab_core::ClientId, u64>,
    /// Leader: commands waiting for the batch to be appended.
    pending_commands: Vec<Arc<Request>>,
    /// Leader with read-index or lease reads: heartbeat rounds and waiting reads.
    reads: Option<LeaderReads>,
    /// Lease reads: refuse votes before this local time (a minimum election timeout
    /// after last hearing from a leader, or after starting).
    vote_guard_until: Nanos,
}

impl Raft {
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

    // ---- log storage -------------------------------------------------------------

    fn append_local(&mut self, entries: Vec<Entry>, ctx: &mut Context<'_, Self>) {
        if entries.is_empty() {
            return;
        }
        for entry in &entries {
            assert_eq!(entry.index, self.last_index() + 1, "log must stay contiguous");
            self.push_entry(entry.clone());
        }
        ctx.persist(Record::Append { entries });
    }

    fn push_entry(&mut self, entry: Entry) {
        let prev = *self.prefix_digests.last().expect("genesis present");
        let digest = entry.digest();
        self.prefix_digests.push(prev.chain(entry.index, &digest));
        self.entry_digests.push(digest);
        self.log.push(entry);
    }

    fn truncate_local(&mut self, from_index: Index, ctx: &mut Context<'_, Self>) {
        if from_index <= self.commit_index {
            // Unreachable while §5's rules hold (Leader Completeness). It happens when a
            // rule is switched off or a peer lies; the node then follows the leader, and
            // the checkers report the slot committed twice with different entries
            // instead of the run stopping at a panic.
            self.commit_index = from_index - 1;
            self.last_applied = self.last_applied.min(self.commit_index);
        }
        self.drop_from(from_index);
        ctx.persist(Record::Truncate { from_index });
    }

    fn drop_from(&mut self, from_index: Index) {
        let keep = self.pos(from_index);
        self.log.truncate(keep);
        self.prefix_digests.truncate(keep + 1);
        self.entry_digests.truncate(keep);
    }

    // ---- role changes: only through become_* --------------------------------------

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

    fn become_candidate(&mut self, ctx: &mut Context<'_, Self>) {
        assert_ne!(self.role, Role::Leader);
        self.leader_heard_at = None;
        self.role = Role::Candidate;
        self.current_term += 1;
        self.voted_for = Some(self.id);
        self.leader = None;
        // §5.2: the self-vote is durable before anyone can see the RequestVote.
        self.persist_hard_state(ctx);
        self.votes_granted = vec![false; self.nodes as usize];
        self.votes_granted[self.id.0 as usize] = true;
        self.reset_election_timer(ctx);
        ctx.broadcast(Message::RequestVote {
            term: self.current_term,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
        });
        self.maybe_win_election(ctx);
    }

    /// Thesis §9.6: ask for pre-votes for the next term, without raising our own.
    fn become_pre_candidate(&mut self, ctx: &mut Context<'_, Self>) {
        assert_ne!(self.role, Role::Leader);
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes_granted = vec![false; self.nodes as usize];
        self.votes_granted[self.id.0 as usize] = true;
        self.reset_election_timer(ctx);
        ctx.broadcast(Message::PreVote {
            term: self.current_term + 1,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
        });
        self.maybe_win_pre_vote(ctx);
    }

    fn maybe_win_pre_vote(&mut self, ctx: &mut Context<'_, Self>) {
        let votes = self.votes_granted.iter().filter(|v| **v).count() as u32;
        if self.role == Role::PreCandidate && votes >= majority(self.nodes) {
            self.become_candidate(ctx);
        }
    }

    fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
        ctx: &mut Context<'_, Self>,
    ) {
        // Would we ourselves consider the leader gone? Then a new election is welcome.
        let now = ctx.now();
        let leader_alive = self.role == Role::Leader
            || self.leader_heard_at.is_some_and(|at| now < at + self.config.election_timeout_ns_min);
        let granted = term > self.current_term && self.is_up_to_date(last_log_index, last_log_term) && !leader_alive;
        // Nothing is persisted or changed: a pre-vote promises nothing.
        let term = if granted { term } else { self.current_term };
        ctx.send(from, Message::PreVoteResponse { term, granted });
    }

    fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool, ctx: &mut Context<'_, Self>) {
        if !granted && term > self.current_term {
            // The responder is in a later term: ours is stale.
            self.become_follower(term, None, ctx);
            return;
        }
        if self.role != Role::PreCandidate || !granted || term != self.current_term + 1 {
            return;
        }
        self.votes_granted[from.0 as usize] = true;
        self.maybe_win_pre_vote(ctx);
    }

    // ---- leadership transfer (thesis §3.10) ---------------------------------------

    fn start_transfer(&mut self, to: NodeId, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader || to == self.id || to.0 >= self.nodes {
            return;
        }
        self.flush_commands(ctx);
        self.transfer = Some((to, ctx.now() + self.config.election_timeout_ns_min));
        self.maybe_send_timeout_now(ctx);
        if self.transfer.is_some() {
            self.send_append(to, ctx);
        }
    }

    /// Once the target's log matches ours, tell it to campaign.
    fn maybe_send_timeout_now(&mut self, ctx: &mut Context<'_, Self>) {
        let Some((to, _)) = self.transfer else { return };
        if self.progress[to.0 as usize].match_index == self.last_index() {
            ctx.send(to, Message::TimeoutNow { term: self.current_term });
        }
    }

    fn handle_timeout_now(&mut self, from: NodeId, term: Term, ctx: &mut Context<'_, Self>) {
        if term == self.current_term && self.leader == Some(from) && self.role == Role::Follower {
            // Skip PreVote: the leader itself asked for this election.
            self.become_candidate(ctx);
        }
    }

    fn maybe_win_election(&mut self, ctx: &mut Context<'_, Self>) {
        let votes = self.votes_granted.iter().filter(|v| **v).count() as u32;
        if self.role == Role::Candidate && votes >= majority(self.nodes) {
            self.become_leader(ctx);
        }
    }

    fn become_leader(&mut self, ctx: &mut Context<'_, Self>) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let last = self.last_index();
        self.progress = (0..self.nodes)
            .map(|_| Progress { next_index: last + 1, match_index: 0, recently_active: true, snapshot_sending: None })
            .collect();
        self.appended_requests.clear();
        let from = self.commit_index;
        ctx.observe(Event::Elected {
            epoch: self.current_term,
            log_from_slot: from,
            log_prefix_digests: self.prefix_digests[(from - self.snapshot.last_included_index) as usize..].to_vec(),
        });
        self.leader_known_term = self.current_term;
        ctx.observe(Event::LeaderKnown { epoch: self.current_term, leader: self.id });
        ctx.cancel_timer(RaftTimer::Election);
        if self.config.read_mode.leader_reads() {
            let lease = lease_ns(self.config.election_timeout_ns_min, self.config.lease_drift_bound_ppm);
            self.reads = Some(LeaderReads::new(self.id, self.nodes, lease, last + 1));
        }
        // §5.4.2 / §8: a no-op of the new term lets earlier entries commit now.
        let noop = Entry { term: self.current_term, index: last + 1, payload: Payload::Noop };
        self.append_local(vec![noop], ctx);
        self.progress[self.id.0 as usize].match_index = self.last_index();
        for peer in self.peers() {
            self.send_append(peer, ctx);
        }
        ctx.set_timer(RaftTimer::Heartbeat, self.config.heartbeat_interval_ns);
        if self.config.check_quorum_on() {
            ctx.set_timer(RaftTimer::CheckQuorum, self.config.election_timeout_ns_min);
        }
        self.maybe_commit(ctx);
    }

    // ---- leader ---------------------------------------------------------------------

    /// Send `peer` the entries from its `next_index` (at most the configured batch),
    /// advancing `next_index` optimistically so replication pipelines.
    fn send_append(&mut self, peer: NodeId, ctx: &mut Context<'_, Self>) {
        let next = self.progress[peer.0 as usize].next_index;
        if next <= self.snapshot.last_included_index {
            // The entries this follower needs are compacted away (§7).
            self.send_snapshot_chunk(peer, ctx);
            return;
        }
        let prev_log_index = next - 1;
        let prev_log_term = self.term_at(prev_log_index).expect("next_index within log + 1");
        let end = (self.last_index()).min(prev_log_index + self.config.max_entries_per_append as u64);
        let snapshot = self.snapshot.last_included_index;
        let entries: Vec<Entry> = self.log[(next - snapshot - 1) as usize..(end - snapshot) as usize].to_vec();
        self.progress[peer.0 as usize].next_index = end + 1;
        ctx.send(
            peer,
            Message::AppendEntries {
                term: self.current_term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: self.commit_index,
            },
        );
    }

    /// Send `peer` the next chunk of a snapshot: the one already on its way to it, or
    /// else the latest. One chunk is in flight per follower; the follower's answer
    /// (or, if a chunk is lost, the next heartbeat response) asks for the next.
    fn send_snapshot_chunk(&mut self, peer: NodeId, ctx: &mut Context<'_, Self>) {
        let (latest, latest_state) = (self.snapshot, Arc::clone(&self.snapshot_state));
        let progress = &mut self.progress[peer.0 as usize];
        let (meta, state, offset) = progress.snapshot_sending.get_or_insert((latest, latest_state, 0)).clone();
        let end = (offset as usize + self.config.snapshot_chunk_bytes.max(1)).min(state.len());
        let data = state[offset as usize..end].to_vec();
        let (term, total_bytes) = (self.current_term, state.len() as u64);
        ctx.send(peer, Message::InstallSnapshot { term, meta, total_bytes, offset, data });
    }

    /// Append the collected commands as one batch and send them to every follower that
    /// was caught up (the others get them when they ask for more).
    fn flush_commands(&mut self, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader || self.pending_commands.is_empty() {
            self.pending_commands.clear();
            return;
        }
        let first_new = self.last_index() + 1;
        let entries: Vec<Entry> = self
            .pending_commands
            .drain(..)
            .enumerate()
            .map(|(i, command)| Entry {
                term: self.current_term,
                index: first_new + i as u64,
                payload: Payload::Command(command),
            })
            .collect();
        self.append_local(entries, ctx);
        let me = self.id.0 as usize;
        self.progress[me].match_index = self.last_index();
        for peer in self.peers() {
            // Only followers not already waiting on a pipelined batch get a new one.
            if self.progress[peer.0 as usize].next_index == first_new {
                self.send_append(peer, ctx);
            }
        }
        self.maybe_commit(ctx);
    }

    fn broadcast_heartbeats(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let read_round = self.reads.as_mut().map_or(0, |reads| reads.next_round(now));
        for peer in self.peers() {
            let commit = self.commit_index.min(self.progress[peer.0 as usize].match_index);
            ctx.send(peer, Message::Heartbeat { term: self.current_term, commit, read_round });
        }
    }

    // ---- reads that skip the log (§6.4) ---------------------------------------------

    /// A `get` under a read mode that skips the log.
    fn serve_read(&mut self, request: Request, ctx: &mut Context<'_, Self>) {
        debug_assert!(matches!(request.op, Op::Get { .. }), "only gets skip the log");
        if self.config.read_mode == ReadMode::FollowerStale {
            self.reply_read(&request, ctx);
            return;
        }
        if self.role != Role::Leader {
            let leader = self.leader;
            ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::NotLeader { leader } });
            return;
        }
        let reads = self.reads.as_mut().expect("a leader with leader reads keeps their state");
        if self.config.read_mode == ReadMode::Lease && reads.lease_holds(ctx.now(), self.commit_index) {
            // The leader applies everything it commits at once, so its state is at
            // the commit index.
            self.reply_read(&request, ctx);
            return;
        }
        reads.enqueue(request, self.commit_index);
        if reads.round_wanted() {
            self.broadcast_heartbeats(ctx);
        }
    }

    fn reply_read(&self, request: &Request, ctx: &mut Context<'_, Self>) {
        if let Some(reply) = local_read(&self.kv, request) {
            ctx.reply(reply);
        }
    }

    fn answer_ready_reads(&mut self, ctx: &mut Context<'_, Self>) {
        let Some(reads) = self.reads.as_mut() else { return };
        if reads.waiting() == 0 {
            return;
        }
        for request in reads.take_ready(self.commit_index, self.last_applied) {
            self.reply_read(&request, ctx);
        }
    }

    /// §5.3/§5.4.2: the highest index stored on a majority, if it is of this term.
    fn maybe_commit(&mut self, ctx: &mut Context<'_, Self>) {
        let matched = self.progress.iter().map(|p| p.match_index);
        let Some(candidate) = quorum_value(matched, majority(self.nodes)) else { return };
        let own_term = self.term_at(candidate) == Some(self.current_term);
        if candidate > self.commit_index && (own_term || self.config.ablate.commit_old_term_by_count) {
            self.advance_commit(candidate, ctx);
        }
    }

    fn advance_commit(&mut self, new_commit: Index, ctx: &mut Context<'_, Self>) {
        let new_commit = new_commit.min(self.last_index());
        if new_commit <= self.commit_index {
            return;
        }
        for slot in self.commit_index + 1..=new_commit {
            ctx.observe(Event::Committed {
                slot,
                digest: self.entry_digests[self.pos(slot)],
                prefix_digest: self.prefix_digest_at(slot),
            });
        }
        self.commit_index = new_commit;
        self.apply_committed(ctx);
    }

    fn apply_committed(&mut self, ctx: &mut Context<'_, Self>) {
        while self.last_applied < self.commit_index {
            self.last_applied += 1;
            let at = self.pos(self.last_applied);
            let entry = &self.log[at];
            ctx.observe(Event::Applied { slot: entry.index, digest: self.entry_digests[at] });
            self.applied_bytes_since_snapshot += entry.encoded_bytes() as u64;
            if let Payload::Command(request) = &entry.payload {
                let result = self.kv.apply(request);
                if self.role == Role::Leader
                    && let Some(result) = result
                {
                    ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
                }
            }
        }
        self.answer_ready_reads(ctx);
        self.maybe_compact(ctx);
    }

    // ---- log compaction (§7) ------------------------------------------------------

    /// Snapshot the state machine at the last applied entry and discard the log up to
    /// it, once enough was applied since the last snapshot.
    fn maybe_compact(&mut self, ctx: &mut Context<'_, Self>) {
        let config = &self.config;
        let applied_since = self.last_applied - self.snapshot.last_included_index;
        let due = (config.snapshot_every_entries > 0 && applied_since >= config.snapshot_every_entries)
            || (config.snapshot_every_bytes > 0 && self.applied_bytes_since_snapshot >= config.snapshot_every_bytes);
        if !due || applied_since == 0 {
            return;
        }
        let index = self.last_applied;
        let at = self.pos(index);
        self.snapshot = SnapshotMeta {
            last_included_index: index,
            last_included_term: self.log[at].term,
            last_included_digest: self.entry_digests[at],
            prefix_digest: self.prefix_digests[at + 1],
            state_digest: self.kv.state_digest(),
        };
        self.snapshot_state = Arc::new(encode_state(&self.kv));
        self.log.drain(..=at);
        self.entry_digests.drain(..=at);
        self.prefix_digests.drain(..=at);
        self.applied_bytes_since_snapshot = 0;
        self.snapshots_taken += 1;
        self.persist_snapshot(ctx);
    }

    /// One record with all a restart needs; the driver drops every earlier one.
    fn persist_snapshot(&self, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::Snapshot {
            term: self.current_term,
            voted_for: self.voted_for,
            meta: self.snapshot,
            state: self.snapshot_state.as_ref().clone(),
            entries: self.log.clone(),
        });
    }

    /// Replace the log before `meta` and the state machine with a snapshot, keeping
    /// the entries after it when this log holds its last entry (Figure 13, steps 6–7).
    fn load_snapshot(&mut self, meta: SnapshotMeta, state: Arc<Vec<u8>>, kv: KvStore) {
        let index = meta.last_included_index;
        let keep: Vec<Entry> = if index > self.snapshot.last_included_index
            && index <= self.last_index()
            && self.term_at(index) == Some(meta.last_included_term)
        {
            self.log[self.pos(index) + 1..].to_vec()
        } else {
            Vec::new()
        };
        self.snapshot = meta;
        self.snapshot_state = state;
        self.log.clear();
        self.entry_digests.clear();
        self.prefix_digests = vec![meta.prefix_digest];
        for entry in keep {
            self.push_entry(entry);
        }
        self.kv = kv;
        self.commit_index = self.commit_index.max(index);
        self.last_applied = index;
        self.applied_bytes_since_snapshot = 0;
    }

    /// §5.4.1: a log ending at (`last_log_index`, `last_log_term`) is at least as up to
    /// date as ours — a later last term, or the same and at least as long.
    fn is_up_to_date(&self, last_log_index: Index, last_log_term: Term) -> bool {
        last_log_term > self.last_term() || (last_log_term == self.last_term() && last_log_index >= self.last_index())
    }

    // ---- message handlers ---------------------------------------------------------

    fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.config.vote_guard_on() && (self.role == Role::Leader || ctx.now() < self.vote_guard_until) {
            // Someone's lease may still run: ignore the request, term and all, as etcd
            // raft does under CheckQuorum. The candidate times out and tries again.
            return;
        }
        if term > self.current_term {
            self.become_follower(term, None, ctx);
        }
        let up_to_date = self.is_up_to_date(last_log_index, last_log_term) || self.config.ablate.vote_without_log_check;
        let free_to_vote = self.voted_for.is_none_or(|v| v == from) || self.config.ablate.multiple_votes_per_term;
        let granted = term == self.current_term && free_to_vote && up_to_date;
        if granted {
            self.voted_for = Some(from);
            // Durable before the reply leaves (driver contract): one vote per term.
            self.persist_hard_state(ctx);
            self.reset_election_timer(ctx);
        }
        ctx.send(from, Message::VoteResponse { term: self.current_term, granted });
    }

    fn handle_vote_response(&mut self, from: NodeId, term: Term, granted: bool, ctx: &mut Context<'_, Self>) {
        if term > self.current_term {
            self.become_follower(term, None, ctx);
            return;
        }
        if self.role != Role::Candidate || term != self.current_term || !granted {
            return;
        }
        self.votes_granted[from.0 as usize] = true;
        self.maybe_win_election(ctx);
    }

    /// Common prologue of the leader's messages: step down to a valid leader of this
    /// or a newer term, and report it once per term. Returns false when this node
    /// itself leads `term`: a second leader in one term is what Election Safety
    /// forbids, so an honest leader ignores the impostor and the checkers report it.
    fn accept_leader(&mut self, from: NodeId, term: Term, ctx: &mut Context<'_, Self>) -> bool {
        debug_assert!(term >= self.current_term);
        if self.role == Role::Leader && term == self.current_term {
            return false;
        }
        self.become_follower(term, Some(from), ctx);
        self.reset_election_timer(ctx);
        self.leader_heard_at = Some(ctx.now());
        if self.config.vote_guard_on() {
            self.vote_guard_until = ctx.now() + self.config.election_timeout_ns_min;
        }
        if self.leader_known_term != term {
            self.leader_known_term = term;
            ctx.observe(Event::LeaderKnown { epoch: term, leader: from });
        }
        true
    }

    fn reject_append(
        &self,
        to: NodeId,
        term: Term,
        conflict_term: Option<Term>,
        conflict_index: Index,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.send(to, Message::AppendResponse { term, success: false, match_index: 0, conflict_term, conflict_index });
    }

    /// Common prologue of the responses a leader gets: a newer term means step down;
    /// otherwise, whether this answers us as leader of the current term (and then the
    /// peer counts as alive for check-quorum).
    fn accept_response(&mut self, from: NodeId, term: Term, ctx: &mut Context<'_, Self>) -> bool {
        if term > self.current_term {
            self.become_follower(term, None, ctx);
            return false;
        }
        if self.role != Role::Leader || term != self.current_term {
            return false;
        }
        self.progress[from.0 as usize].recently_active = true;
        true
    }

    #[expect(clippy::too_many_arguments, reason = "the arguments are the RPC's fields, named as in Figure 2")]
    fn handle_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        ctx: &mut Context<'_, Self>,
    ) {
        if term < self.current_term {
            // A stale leader: our term in the answer makes it step down.
            self.reject_append(from, self.current_term, None, 0, ctx);
            return;
        }
        if !self.accept_leader(from, term, ctx) {
            return;
        }
        let snapshot = self.snapshot.last_included_index;
        let (prev_log_index, prev_log_term, entries) = if prev_log_index < snapshot {
            // Entries up to our snapshot are committed, and a leader holds every committed
            // entry (Leader Completeness): check and append only what lies beyond it.
            let beyond: Vec<Entry> = entries.into_iter().filter(|e| e.index > snapshot).collect();
            (snapshot, self.snapshot.last_included_term, beyond)
        } else {
            (prev_log_index, prev_log_term, entries)
        };
        // Consistency check on prevLogIndex/prevLogTerm (§5.3).
        match self.term_at(prev_log_index) {
            None => {
                self.reject_append(from, term, None, self.last_index() + 1, ctx);
                return;
            }
            // The ablation still refuses a gap: the log cannot hold one.
            Some(t) if t != prev_log_term && !self.config.ablate.skip_prev_log_check => {
                let first_of_term = self.log.iter().find(|e| e.term == t).map_or(prev_log_index, |e| e.index);
                self.reject_append(from, term, Some(t), first_of_term, ctx);
                return;
            }
            Some(_) => {}
        }
        let last_new = prev_log_index + entries.len() as Index;
        // Skip entries we already hold; truncate only at a real conflict.
        let mut to_append = Vec::new();
        for entry in entries {
            match self.term_at(entry.index) {
                Some(existing) if existing == entry.term => continue,
                Some(_) => {
                    self.truncate_local(entry.index, ctx);
                    to_append.push(entry);
                }
                None => to_append.push(entry),
            }
        }
        self.append_local(to_append, ctx);
        if leader_commit > self.commit_index {
            self.advance_commit(leader_commit.min(last_new), ctx);
        }
        ctx.send(
            from,
            Message::AppendResponse {
                term,
                success: true,
                match_index: last_new,
                conflict_term: None,
                conflict_index: 0,
            },
        );
    }

    #[expect(clippy::too_many_arguments, reason = "the arguments are the RPC's fields, named as in Figure 2")]
    fn handle_append_response(
        &mut self,
        from: NodeId,
        term: Term,
        success: bool,
        match_index: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
        ctx: &mut Context<'_, Self>,
    ) {
        if !self.accept_response(from, term, ctx) {
            return;
        }
        let last = self.last_index();
        let progress = &mut self.progress[from.0 as usize];
        if success {
            if match_index > progress.match_index {
                progress.match_index = match_index;
            }
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            self.maybe_commit(ctx);
            if self.transfer.is_some_and(|(to, _)| to == from) {
                self.maybe_send_timeout_now(ctx);
            }
            if self.progress[from.0 as usize].next_index <= last {
                self.send_append(from, ctx);
            }
            return;
        }
        // Fast back-off: skip the follower's whole conflicting term in one step.
        let hinted = match conflict_term {
            Some(t) => self.log.iter().rev().find(|e| e.term == t).map_or(conflict_index, |e| e.index + 1),
            None => conflict_index,
        };
        let progress = &mut self.progress[from.0 as usize];
        progress.next_index = hinted.clamp(progress.match_index + 1, last + 1);
        self.send_append(from, ctx);
    }

    fn handle_heartbeat(
        &mut self,
        from: NodeId,
        term: Term,
        commit: Index,
        read_round: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if term < self.current_term {
            let (term, last_log_index) = (self.current_term, self.last_index());
            ctx.send(from, Message::HeartbeatResponse { term, last_log_index, read_round: 0 });
            return;
        }
        if !self.accept_leader(from, term, ctx) {
            return;
        }
        if commit > self.commit_index {
            self.advance_commit(commit, ctx);
        }
        ctx.send(from, Message::HeartbeatResponse { term, last_log_index: self.last_index(), read_round });
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, term: Term, read_round: u64, ctx: &mut Context<'_, Self>) {
        if !self.accept_response(from, term, ctx) {
            return;
        }
        if let Some(reads) = self.reads.as_mut() {
            reads.on_ack(from, read_round);
            self.answer_ready_reads(ctx);
        }
        let last = self.last_index();
        let progress = &mut self.progress[from.0 as usize];
        // Repair: anything unacknowledged is resent from the last known match, which
        // also recovers from AppendEntries lost in the network (and resends the current
        // snapshot chunk when one was lost).
        if progress.match_index < last {
            progress.next_index = progress.match_index + 1;
            self.send_append(from, ctx);
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the arguments are the RPC's fields, named as in Figure 13")]
    fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
        ctx: &mut Context<'_, Self>,
    ) {
        let index = meta.last_included_index;
        if term < self.current_term {
            let term = self.current_term;
            ctx.send(
                from,
                Message::InstallSnapshotResponse { term, last_included_index: index, received: 0, installed: false },
            );
            return;
        }
        if !self.accept_leader(from, term, ctx) {
            return;
        }
        let answer = |received, installed, ctx: &mut Context<'_, Self>| {
            ctx.send(from, Message::InstallSnapshotResponse { term, last_included_index: index, received, installed });
        };
        if index <= self.commit_index {
            // Our log or snapshot already holds everything it covers, committed.
            self.incoming_snapshot = None;
            answer(total_bytes, true, ctx);
            return;
        }
        let mut incoming = match self.incoming_snapshot.take() {
            Some(i) if i.meta == meta && i.total_bytes == total_bytes => i,
            _ => IncomingSnapshot { meta, total_bytes, data: Vec::new() },
        };
        // Take only the chunk that continues what we hold; a duplicate, a reordered or
        // an oversized chunk is answered with what we hold, and the leader resends.
        if offset == incoming.data.len() as u64 && offset + data.len() as u64 <= total_bytes {
            incoming.data.extend_from_slice(&data);
        }
        let received = incoming.data.len() as u64;
        if received < total_bytes {
            self.incoming_snapshot = Some(incoming);
            answer(received, false, ctx);
            return;
        }
        let Some(kv) = decode_state(&incoming.data).filter(|kv| kv.state_digest() == meta.state_digest) else {
            // An honest leader cannot send this; start over rather than install it.
            answer(0, false, ctx);
            return;
        };
        self.load_snapshot(meta, Arc::new(incoming.data), kv);
        self.snapshots_installed += 1;
        self.persist_snapshot(ctx);
        ctx.observe(Event::Committed {
            slot: index,
            digest: meta.last_included_digest,
            prefix_digest: meta.prefix_digest,
        });
        ctx.observe(Event::Applied { slot: index, digest: meta.last_included_digest });
        answer(total_bytes, true, ctx);
    }

    fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        term: Term,
        last_included_index: Index,
        received: u64,
        installed: bool,
        ctx: &mut Context<'_, Self>,
    ) {
        if !self.accept_response(from, term, ctx) {
            return;
        }
        let progress = &mut self.progress[from.0 as usize];
        if installed {
            progress.snapshot_sending = None;
            progress.match_index = progress.match_index.max(last_included_index);
            progress.next_index = progress.match_index + 1;
            self.maybe_commit(ctx);
            if self.progress[from.0 as usize].next_index <= self.last_index() {
                self.send_append(from, ctx);
            }
            return;
        }
        match progress.snapshot_sending.as_mut() {
            Some((meta, state, acked)) if meta.last_included_index == last_included_index => {
                // `received` may go back (the follower restarted): resume from there.
                *acked = received.min(state.len() as u64);
            }
            // An answer about a transfer this leader no longer runs.
            _ => return,
        }
        self.send_snapshot_chunk(from, ctx);
    }
}

/// The state machine as a snapshot carries it.
fn encode_state(kv: &KvStore) -> Vec<u8> {
    postcard::to_stdvec(kv).expect("in-memory serialization cannot fail")
}

fn decode_state(bytes: &[u8]) -> Option<KvStore> {
    postcard::from_bytes(bytes).ok()
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
            appended_requests: HashMap::new(),
            pending_commands: Vec::new(),
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
        let full = self.pending_commands.len() >= self.config.max_entries_per_append;
        if self.config.batch_delay_ns == 0 || full {
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
