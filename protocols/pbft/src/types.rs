//! The replicated state machine's vocabulary: configuration and ablations, the signed
//! messages (each with what its signature covers), what a replica persists, its
//! timers, the digests of a batch and of a state, and the counters a run reports.

use super::*;

pub type View = u64;
pub type Seq = u64;

/// Faults tolerated by `n` replicas: the largest `f` with `3f + 1 <= n`.
pub const fn faults_tolerated(nodes: u32) -> u32 {
    (nodes.saturating_sub(1)) / 3
}

/// Cap on the view-change timeout's doublings (see `view_change_timeout`).
pub(crate) const MAX_VIEW_CHANGE_DOUBLINGS: u32 = 6;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PbftConfig {
    /// First view-change timeout; it doubles with every consecutive view change.
    pub view_change_timeout_ns: Nanos,
    /// A checkpoint every this many sequence numbers (the paper's K).
    pub checkpoint_interval: u64,
    /// High watermark minus low watermark (the paper's L), a multiple of the interval.
    pub log_window: u64,
    /// Requests in one pre-prepare, at most.
    pub max_batch: usize,
    /// The primary collects requests this long before proposing a partial batch
    /// (0: adaptive batching, `max_batches_in_flight`).
    pub batch_delay_ns: Nanos,
    /// Adaptive batching ([`qlab_core::batching`]), with no batch delay: the primary
    /// proposes at once while fewer than this many of its batches are not yet executed,
    /// and otherwise proposes what waited when one executes; requests that wait have
    /// their client signatures checked together, as one batch. 0 proposes each request
    /// at once (within the watermarks).
    #[serde(default = "default_max_batches_in_flight")]
    pub max_batches_in_flight: usize,
    /// A batch's requests take at most this many encoded bytes (a single larger one
    /// goes alone).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Public keys of the replicas, by node id.
    pub node_public_keys: Vec<[u8; 32]>,
    /// Public keys of the clients, by client id.
    pub client_public_keys: Vec<[u8; 32]>,
    /// Secret keys of the replicas. A replica keeps only its own when it is built (the
    /// simulator runs every replica in one process, so the configuration carries all).
    pub node_secret_keys: Vec<[u8; 32]>,
    /// Safety rules switched off, for counterexamples; all false is PBFT.
    #[serde(default)]
    pub ablate: PbftAblations,
}

/// PBFT's quorum rule that can be switched off to watch the checkers catch what it
/// prevents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PbftAblations {
    /// Prepared on 2f statements (the pre-prepare and 2f − 1 prepares) instead of 2f + 1.
    pub prepare_quorum_2f: bool,
    /// Test-only mutant (issue 42), not an ablation a file can ask for: committed-local
    /// on 2f matching COMMITs instead of 2f + 1. Safe under crash faults; one Byzantine
    /// backup that commits with a single honest replica and leaves its certificate out
    /// of its VIEW-CHANGE gets another request committed at the same sequence number.
    #[serde(skip)]
    pub mutant_commit_quorum_2f: bool,
    /// Test-only mutant: the NEW-VIEW's O set keeps, for a sequence number prepared in
    /// two views, the certificate of the *lower* view (PBFT takes the highest).
    #[serde(skip)]
    pub mutant_new_view_keeps_lower_view: bool,
}

impl PbftAblations {
    pub fn any(&self) -> bool {
        *self != PbftAblations::default()
    }
}

impl PbftConfig {
    /// A configuration with keys derived from `key_seed` for `nodes` replicas and
    /// `clients` clients.
    pub fn with_keys(key_seed: u64, nodes: u32, clients: u64) -> Self {
        let node_secret_keys: Vec<[u8; 32]> = (0..nodes).map(|n| node_secret(key_seed, n)).collect();
        PbftConfig {
            view_change_timeout_ns: ms(300),
            checkpoint_interval: 32,
            log_window: 128,
            max_batch: 64,
            batch_delay_ns: 0,
            max_batches_in_flight: default_max_batches_in_flight(),
            max_batch_bytes: default_max_batch_bytes(),
            node_public_keys: node_secret_keys.iter().map(public_of).collect(),
            client_public_keys: (0..clients).map(|c| public_of(&client_secret(key_seed, c))).collect(),
            node_secret_keys,
            ablate: PbftAblations::default(),
        }
    }
}

fn default_max_batches_in_flight() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCHES_IN_FLIGHT
}

fn default_max_batch_bytes() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCH_BYTES
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub body: T,
    pub signer: NodeId,
    pub signature: Vec<u8>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} by {}", self.body, self.signer)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrePrepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
    /// Empty for a null request (a gap filled by a new view).
    pub batch: Vec<Arc<Request>>,
}

impl Signable for PrePrepare {
    fn feed(&self, h: &mut blake3::Hasher) {
        // The batch is covered through `digest`, which every receiver recomputes.
        h.update(b"pre-prepare").update(&self.view.to_le_bytes()).update(&self.seq.to_le_bytes());
        h.update(&self.digest.0);
    }
}

/// A `PREPARE` or `COMMIT` (the phase is part of what is signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

pub(crate) struct Phase<'a>(pub(crate) &'static [u8], pub(crate) &'a Vote);
impl Signable for Phase<'_> {
    fn feed(&self, h: &mut blake3::Hasher) {
        h.update(self.0).update(&self.1.view.to_le_bytes()).update(&self.1.seq.to_le_bytes());
        h.update(&self.1.digest.0);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointVote {
    pub seq: Seq,
    /// Digest of the state after executing `seq` (see [`state_digest`]).
    pub state: Digest,
}

impl Signable for CheckpointVote {
    fn feed(&self, h: &mut blake3::Hasher) {
        h.update(b"checkpoint").update(&self.seq.to_le_bytes()).update(&self.state.0);
    }
}

/// A pre-prepare and `2f` prepares for it from distinct backups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreparedCert {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<Signed<Vote>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewChange {
    pub new_view: View,
    pub stable_seq: Seq,
    /// `2f + 1` checkpoint messages for `stable_seq` (empty for 0).
    pub checkpoint_proof: Vec<Signed<CheckpointVote>>,
    pub prepared: Vec<PreparedCert>,
}

impl Signable for ViewChange {
    fn feed(&self, h: &mut blake3::Hasher) {
        h.update(b"view-change").update(&self.new_view.to_le_bytes()).update(&self.stable_seq.to_le_bytes());
        for c in &self.checkpoint_proof {
            h.update(&c.body.signing_digest()).update(&c.signer.0.to_le_bytes());
        }
        for cert in &self.prepared {
            h.update(&cert.pre_prepare.body.signing_digest());
            for p in &cert.prepares {
                h.update(&p.signer.0.to_le_bytes());
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

impl Signable for NewView {
    fn feed(&self, h: &mut blake3::Hasher) {
        h.update(b"new-view").update(&self.view.to_le_bytes());
        for vc in &self.view_changes {
            h.update(&vc.body.signing_digest()).update(&vc.signer.0.to_le_bytes());
        }
        for pp in &self.pre_prepares {
            h.update(&pp.body.signing_digest());
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    PrePrepare(Signed<PrePrepare>),
    Prepare(Signed<Vote>),
    Commit(Signed<Vote>),
    Checkpoint(Signed<CheckpointVote>),
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
    /// A request a backup received from a client, passed on to the primary.
    Forward(Arc<Request>),
    /// Ask for the state at stable checkpoint `seq` (or later).
    FetchState {
        seq: Seq,
    },
    /// A replica that missed the NEW-VIEW of `view` (it sees that view's traffic while
    /// still changing views) asks the primary for it.
    FetchNewView {
        view: View,
    },
    /// Sent with retransmissions: the sender has not executed `seq` of `view` yet.
    /// Replicas that have answer with their commit (or their stable checkpoint).
    Behind {
        view: View,
        seq: Seq,
    },
    /// The state after `seq`, with the checkpoint certificate that vouches for it.
    State {
        proof: Vec<Signed<CheckpointVote>>,
        prefix_digest: Digest,
        kv: KvStore,
    },
}

/// What a replica persists (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    View {
        view: View,
    },
    PrePrepared {
        pre_prepare: Signed<PrePrepare>,
    },
    Prepared {
        cert: PreparedCert,
    },
    Executed {
        seq: Seq,
        digest: Digest,
        batch: Vec<Arc<Request>>,
    },
    Stable {
        proof: Vec<Signed<CheckpointVote>>,
    },
    /// State installed by state transfer.
    Installed {
        seq: Seq,
        prefix_digest: Digest,
        kv: KvStore,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PbftTimer {
    /// Waiting for a request to execute, or for a new view to arrive.
    ViewChange,
    /// Primary: propose the requests collected so far.
    Flush,
    /// Resend this replica's own messages for sequence numbers that have not executed
    /// yet: links lose messages, and one lost prepare or commit would otherwise hold a
    /// request until the next view change.
    Retransmit,
}

/// Digest of a batch: what pre-prepares, prepares and commits agree on.
pub fn batch_digest(batch: &[Arc<Request>]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"pbft batch").update(&(batch.len() as u64).to_le_bytes());
    for request in batch {
        request.hash_into(&mut hasher);
    }
    Digest(*hasher.finalize().as_bytes())
}

/// Digest of the state after executing up to `seq`: the committed-log chain value and
/// the key-value store (so a transferred state can be checked against a checkpoint).
pub fn state_digest(seq: Seq, prefix_digest: &Digest, kv: &KvStore) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"pbft state").update(&seq.to_le_bytes()).update(&prefix_digest.0);
    hasher.update(&kv.state_digest().0);
    Digest(*hasher.finalize().as_bytes())
}

/// Counters a run reports per replica.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PbftStats {
    pub signatures_made: u64,
    pub signatures_verified: u64,
    /// Messages or requests dropped because a signature did not verify.
    pub bad_signatures: u64,
    /// Prepares, commits and view-changes whose claimed signer is not the replica that
    /// sent them: such a vote is its signer's own to send and no honest replica relays
    /// one, so one that names another is a forgery, dropped unread. (Checkpoint votes
    /// relayed by another are dropped too but not counted: an honest replica helping a
    /// laggard sends its stable proof's.)
    pub votes_not_from_signer: u64,
    pub view_changes: u64,
    pub requests_executed: u64,
    pub state_transfers: u64,
}
