//! # PBFT: Practical Byzantine Fault Tolerance
//!
//! After Castro & Liskov, "Practical Byzantine Fault Tolerance" (OSDI 1999), with the
//! view-change details of "Practical Byzantine Fault Tolerance and Proactive Recovery"
//! (TOCS 2002), authenticated with ed25519 signatures instead of MACs and with blake3
//! digests. `n = 3f + 1` replicas tolerate `f` Byzantine ones: any two quorums of
//! `2f + 1` intersect in at least one honest replica.
//!
//! **Normal case.** Views are numbered; the primary of view `v` is replica `v mod n`.
//! Clients sign their requests; a replica refuses a request whose signature does not
//! verify, so not even the primary can invent one. The primary collects requests into
//! a batch, assigns it the next sequence number `s` and multicasts a signed
//! `PRE-PREPARE(v, s, d)` with the batch (`d` its digest). A backup accepts it if it is
//! in view `v`, `s` lies between its watermarks, it has accepted no other digest for
//! `(v, s)`, and every request in the batch carries a valid client signature; it then
//! multicasts `PREPARE(v, s, d)`. The request is *prepared* at a replica once it holds the
//! pre-prepare and `2f` matching prepares from distinct backups: no other digest can be
//! prepared for `(v, s)` at any honest replica. The replica then multicasts
//! `COMMIT(v, s, d)`; with `2f + 1` matching commits it is *committed-local*, and the
//! batch is executed once every lower sequence number has been. Every replica answers
//! the client, which accepts a result once `f + 1` replicas agree on it (at least one
//! of them honest). Requests carry the client's sequence number as the paper's
//! timestamp; the replicated session table executes each at most once.
//!
//! **Checkpoints.** Every `checkpoint_interval` sequence numbers a replica multicasts a
//! signed `CHECKPOINT(s, state digest)`. With `2f + 1` matching ones the checkpoint is
//! *stable*: the low watermark moves to `s`, everything at or below it is discarded, and
//! the high watermark is `s + log_window`, which bounds the log. A replica that learns of
//! a stable checkpoint beyond what it executed fetches the state (the whole key-value
//! store with its sessions) and checks it against the certified digest.
//!
//! **View change.** A backup waiting on a request it knows of starts a timer; when it
//! fires the backup stops accepting messages of view `v` and multicasts a signed
//! `VIEW-CHANGE(v + 1, s, C, P)`: its last stable checkpoint `s` with the `2f + 1`
//! checkpoint messages proving it (`C`) and, for every sequence number above `s` that
//! prepared at it, the prepared certificate (the pre-prepare and `2f` prepares, `P`). The
//! timeout doubles with each view change that does not bring progress. The new primary
//! collects `2f + 1` view-changes and builds `NEW-VIEW(v + 1, V, O)`: for every sequence
//! number between the highest stable checkpoint in `V` and the highest prepared one, a
//! pre-prepare in the new view with the digest prepared in the highest view, or a *null*
//! request for a gap. Every backup checks each view-change and certificate in `V` and
//! recomputes `O` itself before it accepts the new view — a faulty new primary cannot
//! drop or alter a request that may have committed. A replica that sees `f + 1`
//! view-changes for a higher view joins them (it cannot be the only one left behind).
//!
//! **What is persisted.** The paper assumes at most `f` faulty replicas and no restarts.
//! Here honest replicas may crash and come back, so a replica persists what it signed
//! and what it must not forget: the view it moved to, every pre-prepare it accepted
//! (before its prepare leaves), every prepared certificate (before its commit leaves),
//! its stable checkpoint proofs, and executed batches (to rebuild the state). A
//! restarted replica therefore never signs a second digest for a `(view, seq)` and
//! still reports what prepared at it in a view change.
//!
//! **Ablation.** [`PbftAblations::prepare_quorum_2f`] counts a request prepared on the
//! pre-prepare and 2f − 1 prepares (2f statements, not 2f + 1), in the normal case and
//! in the prepared certificates of a view change. Two quorums of 2f then need not share
//! an honest replica, so a faulty primary can get two digests prepared for one sequence
//! number and certify the one nobody committed in a view change.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use qlab_core::{ClientId, Context, Digest, Event, KvStore, Nanos, NodeId, Protocol, Reply, ReplyBody, Request, ms};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub mod attacks;
pub mod client;
pub use client::{PbftClient, PbftClientTimer};

pub type View = u64;
pub type Seq = u64;

/// Faults tolerated by `n` replicas: the largest `f` with `3f + 1 <= n`.
pub const fn faults_tolerated(nodes: u32) -> u32 {
    (nodes.saturating_sub(1)) / 3
}

/// Cap on the view-change timeout's doublings (see `view_change_timeout`).
const MAX_VIEW_CHANGE_DOUBLINGS: u32 = 6;

// ---- keys --------------------------------------------------------------------------

/// A node's or client's ed25519 secret, derived from the run's key seed so a whole
/// cluster's keys can be made reproducibly at setup.
pub fn node_secret(key_seed: u64, node: u32) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(b"qlab-pbft node key")
        .update(&key_seed.to_le_bytes())
        .update(&node.to_le_bytes())
        .finalize()
        .as_bytes()
}

pub fn client_secret(key_seed: u64, client: u64) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(b"qlab-pbft client key")
        .update(&key_seed.to_le_bytes())
        .update(&client.to_le_bytes())
        .finalize()
        .as_bytes()
}

/// The ed25519 public key of a secret.
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

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
    /// (0: propose at once).
    pub batch_delay_ns: Nanos,
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
            node_public_keys: node_secret_keys.iter().map(public_of).collect(),
            client_public_keys: (0..clients).map(|c| public_of(&client_secret(key_seed, c))).collect(),
            node_secret_keys,
            ablate: PbftAblations::default(),
        }
    }
}

// ---- messages ----------------------------------------------------------------------

/// What a signature covers: a domain tag and the fields, fed to blake3.
pub trait Signable {
    fn feed(&self, hasher: &mut blake3::Hasher);
    fn signing_digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        self.feed(&mut hasher);
        *hasher.finalize().as_bytes()
    }
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

struct Phase<'a>(&'static [u8], &'a Vote);
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Key of the verified-signature memo: who signed, what, and the signature bytes.
fn verification_memo(who: &[u8], id: u64, digest: &[u8; 32], signature: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new().update(who).update(&id.to_le_bytes()).update(digest).update(signature).finalize().as_bytes()
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
    pub view_changes: u64,
    pub requests_executed: u64,
    pub state_transfers: u64,
}

/// Per-sequence-number state in the current view.
#[derive(Clone, Debug, Default)]
struct Slot {
    pre_prepare: Option<Signed<PrePrepare>>,
    /// When the pre-prepare was accepted: only slots older than one retransmission
    /// period are retransmitted (the young ones are still on their way).
    accepted_at: Nanos,
    prepares: BTreeMap<NodeId, Signed<Vote>>,
    commits: BTreeMap<NodeId, Digest>,
    prepared: bool,
    committed: bool,
}

pub struct Pbft {
    id: NodeId,
    nodes: u32,
    f: u32,
    config: PbftConfig,
    key: SigningKey,
    node_keys: Vec<VerifyingKey>,
    client_keys: Vec<Option<VerifyingKey>>,
    view: View,
    /// Between sending a VIEW-CHANGE for `view` and accepting its NEW-VIEW.
    in_view_change: bool,
    /// Consecutive view changes without progress (the timeout doubles with each).
    view_change_attempts: u32,
    log: BTreeMap<Seq, Slot>,
    /// Prepared certificates kept across views for VIEW-CHANGE messages.
    prepared_certs: BTreeMap<Seq, PreparedCert>,
    /// Accepted pre-prepares across views: what this replica signed prepares for.
    next_seq: Seq,
    last_executed: Seq,
    prefix_digest: Digest,
    kv: KvStore,
    stable_seq: Seq,
    stable_proof: Vec<Signed<CheckpointVote>>,
    /// Checkpoint messages received, by seq: signer -> vote.
    checkpoint_votes: BTreeMap<Seq, BTreeMap<NodeId, Signed<CheckpointVote>>>,
    /// Our own checkpoint votes above the stable checkpoint, sent again on every view
    /// change: a lost one could otherwise keep the checkpoint from becoming stable and
    /// the watermarks from moving, forever.
    own_checkpoints: BTreeMap<Seq, Signed<CheckpointVote>>,
    /// State snapshots at our own checkpoints not yet discarded: seq -> (prefix, kv).
    snapshots: BTreeMap<Seq, (Digest, KvStore)>,
    /// View-change messages received for views above ours, by view.
    view_changes: BTreeMap<View, BTreeMap<NodeId, Signed<ViewChange>>>,
    new_view_sent: BTreeSet<View>,
    /// The NEW-VIEW this replica sent as primary of the current view (for laggards).
    last_new_view: Option<Signed<NewView>>,
    new_view_fetch_at: Option<Nanos>,
    retransmit_armed: bool,
    helped_at: HashMap<(NodeId, Seq), Nanos>,
    /// Per replica, the highest view its normal-case messages carried: f + 1 of them
    /// ahead of ours mean the cluster changed views without us.
    later_view_of: Vec<View>,
    // Primary.
    pending: Vec<Arc<Request>>,
    /// Primary, batching: requests received whose client signatures are not checked yet.
    unverified: Vec<Arc<Request>>,
    /// Highest request seq per client already assigned a sequence number (primary) or
    /// seen (backup), to not propose or time out on a request twice.
    assigned: HashMap<ClientId, u64>,
    /// Requests waiting to execute: client -> seq (what the view-change timer guards).
    waiting: HashMap<ClientId, u64>,
    timer_running: bool,
    flush_armed: bool,
    state_fetch_sent: Option<(Seq, Nanos)>,
    /// Signatures already checked, so a prepare seen alone and again inside a prepared
    /// certificate, view-change and new-view is verified once (as PBFT implementations
    /// do). Keyed by a digest of (signer, signed digest, signature); cleared when large.
    verified: std::collections::HashSet<[u8; 32]>,
    pub stats: PbftStats,
}

impl Pbft {
    pub fn view(&self) -> View {
        self.view
    }
    pub fn primary_of(&self, view: View) -> NodeId {
        NodeId((view % self.nodes as u64) as u32)
    }
    pub fn primary(&self) -> NodeId {
        self.primary_of(self.view)
    }
    pub fn in_view_change(&self) -> bool {
        self.in_view_change
    }
    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }
    pub fn stable_seq(&self) -> Seq {
        self.stable_seq
    }
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }
    /// Sequence numbers with protocol state held (bounded by the watermarks).
    pub fn log_len(&self) -> usize {
        self.log.len() + self.prepared_certs.len()
    }
    pub fn faults_tolerated(&self) -> u32 {
        self.f
    }
    fn quorum(&self) -> usize {
        qlab_core::quorum::byzantine_quorum(self.f) as usize
    }

    // ---- signatures ----------------------------------------------------------------

    fn sign<T: Signable>(&mut self, body: T) -> Signed<T> {
        self.stats.signatures_made += 1;
        let signature = self.key.sign(&body.signing_digest()).to_bytes().to_vec();
        Signed { body, signer: self.id, signature }
    }

    fn sign_phase(&mut self, phase: &'static [u8], vote: Vote) -> Signed<Vote> {
        self.stats.signatures_made += 1;
        let signature = self.key.sign(&Phase(phase, &vote).signing_digest()).to_bytes().to_vec();
        Signed { body: vote, signer: self.id, signature }
    }

    fn verify_digest(&mut self, signer: NodeId, digest: &[u8; 32], signature: &[u8]) -> bool {
        let key = self.node_keys.get(signer.0 as usize).copied();
        self.verify_with(key, b"node", signer.0 as u64, digest, signature)
    }

    fn verify_with(
        &mut self,
        key: Option<VerifyingKey>,
        who: &[u8],
        id: u64,
        digest: &[u8; 32],
        signature: &[u8],
    ) -> bool {
        let memo = verification_memo(who, id, digest, signature);
        if self.verified.contains(&memo) {
            return true;
        }
        self.stats.signatures_verified += 1;
        let ok =
            key.is_some_and(|key| Signature::from_slice(signature).is_ok_and(|sig| key.verify(digest, &sig).is_ok()));
        if ok {
            self.remember_verified(memo);
        } else {
            self.stats.bad_signatures += 1;
        }
        ok
    }

    fn remember_verified(&mut self, memo: [u8; 32]) {
        if self.verified.len() >= 200_000 {
            self.verified.clear();
        }
        self.verified.insert(memo);
    }

    fn verify<T: Signable>(&mut self, signed: &Signed<T>) -> bool {
        let digest = signed.body.signing_digest();
        self.verify_digest(signed.signer, &digest, &signed.signature)
    }

    fn verify_phase(&mut self, phase: &'static [u8], signed: &Signed<Vote>) -> bool {
        let digest = Phase(phase, &signed.body).signing_digest();
        self.verify_digest(signed.signer, &digest, &signed.signature)
    }

    fn verify_request(&mut self, request: &Request) -> bool {
        let key = self.client_keys.get(request.client.0 as usize).copied().flatten();
        self.verify_with(key, b"client", request.client.0, &request.digest().0, &request.signature)
    }

    /// Every request's client signature, checked together. Client signatures are most of
    /// a replica's verification work (one per request at every replica, against a few per
    /// batch for the protocol messages), and ed25519 batch verification costs well under
    /// half of one-at-a-time (`cargo bench -p qlab-pbft --bench crypto`). Its random
    /// coefficients are derived from the batch itself, so every replica that checks the
    /// same batch reaches the same answer. If the batch fails, each request is checked
    /// alone so the bad ones are found and counted. Returns whether all were valid.
    fn verify_requests(&mut self, requests: &[Arc<Request>]) -> bool {
        self.check_requests(requests).iter().all(|ok| *ok)
    }

    /// `verify_requests`, request by request.
    fn check_requests(&mut self, requests: &[Arc<Request>]) -> Vec<bool> {
        let mut memos = Vec::new();
        let mut messages = Vec::new();
        let mut signatures = Vec::new();
        let mut keys = Vec::new();
        for request in requests {
            let digest = request.digest().0;
            let memo = verification_memo(b"client", request.client.0, &digest, &request.signature);
            if self.verified.contains(&memo) {
                continue;
            }
            let key = self.client_keys.get(request.client.0 as usize).copied().flatten();
            match (key, Signature::from_slice(&request.signature)) {
                (Some(key), Ok(signature)) => {
                    memos.push(memo);
                    messages.push(digest);
                    signatures.push(signature);
                    keys.push(key);
                }
                _ => return requests.iter().map(|r| self.verify_request(r)).collect(),
            }
        }
        let message_refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        if memos.len() < 2 || ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_err() {
            return requests.iter().map(|r| self.verify_request(r)).collect();
        }
        self.stats.signatures_verified += memos.len() as u64;
        for memo in memos {
            self.remember_verified(memo);
        }
        vec![true; requests.len()]
    }

    /// A pre-prepare's own checks: signed by its view's primary, digest of its batch,
    /// every request signed by its client.
    fn valid_pre_prepare(&mut self, pp: &Signed<PrePrepare>) -> bool {
        if pp.signer != self.primary_of(pp.body.view) || batch_digest(&pp.body.batch) != pp.body.digest {
            return false;
        }
        if !self.verify(pp) {
            return false;
        }
        self.verify_requests(&pp.body.batch)
    }

    fn valid_cert(&mut self, cert: &PreparedCert) -> bool {
        if !self.valid_pre_prepare(&cert.pre_prepare) {
            return false;
        }
        let pp = &cert.pre_prepare.body;
        let primary = cert.pre_prepare.signer;
        let mut signers = BTreeSet::new();
        for p in &cert.prepares {
            if p.body.view != pp.view || p.body.seq != pp.seq || p.body.digest != pp.digest || p.signer == primary {
                return false;
            }
            if !self.verify_phase(b"prepare", p) {
                return false;
            }
            signers.insert(p.signer);
        }
        signers.len() >= self.prepares_needed()
    }

    /// Prepares (besides the pre-prepare) that make a request prepared: 2f.
    fn prepares_needed(&self) -> usize {
        if self.config.ablate.prepare_quorum_2f { 2 * self.f as usize - 1 } else { 2 * self.f as usize }
    }

    fn valid_checkpoint_proof(&mut self, seq: Seq, proof: &[Signed<CheckpointVote>]) -> Option<Digest> {
        if seq == 0 {
            return Some(Digest::GENESIS);
        }
        let state = proof.first()?.body.state;
        let mut signers = BTreeSet::new();
        for c in proof {
            if c.body.seq != seq || c.body.state != state || !self.verify(c) {
                return None;
            }
            signers.insert(c.signer);
        }
        (signers.len() >= self.quorum()).then_some(state)
    }

    // ---- timers ------------------------------------------------------------------------

    /// The paper doubles the timeout with every view change that brings no progress, so
    /// that it eventually outgrows the network's delays. Doubling without end also lets
    /// f replicas that keep forcing view changes (joined by one honest replica's timeout,
    /// see the f + 1 rule) push it to hours; 64 times the first timeout is far above any
    /// delay a run sees and bounds how long a correct cluster waits.
    fn view_change_timeout(&self) -> Nanos {
        self.config.view_change_timeout_ns << self.view_change_attempts.min(MAX_VIEW_CHANGE_DOUBLINGS)
    }

    fn start_timer(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.timer_running {
            self.timer_running = true;
            ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        }
    }

    fn restart_or_stop_timer(&mut self, ctx: &mut Context<'_, Self>) {
        if self.in_view_change {
            return;
        }
        if self.waiting.is_empty() {
            if self.timer_running {
                self.timer_running = false;
                ctx.cancel_timer(PbftTimer::ViewChange);
            }
        } else {
            self.timer_running = true;
            ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        }
    }

    // ---- normal case -------------------------------------------------------------------

    fn in_window(&self, seq: Seq) -> bool {
        seq > self.stable_seq && seq <= self.stable_seq + self.config.log_window
    }

    /// Primary: propose collected requests while the window has room.
    fn flush(&mut self, ctx: &mut Context<'_, Self>) {
        if self.primary() != self.id || self.in_view_change {
            return;
        }
        while !self.pending.is_empty() && self.in_window(self.next_seq) {
            let take = self.pending.len().min(self.config.max_batch);
            let batch: Vec<Arc<Request>> = self.pending.drain(..take).collect();
            let seq = self.next_seq;
            self.next_seq += 1;
            let pp = self.sign(PrePrepare { view: self.view, seq, digest: batch_digest(&batch), batch });
            self.accept_pre_prepare(pp.clone(), ctx);
            ctx.broadcast(Message::PrePrepare(pp));
        }
    }

    /// Log an accepted pre-prepare (durably first) and, as a backup, prepare it.
    fn accept_pre_prepare(&mut self, pp: Signed<PrePrepare>, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::PrePrepared { pre_prepare: pp.clone() });
        let (view, seq, digest) = (pp.body.view, pp.body.seq, pp.body.digest);
        for request in &pp.body.batch {
            let seen = self.assigned.entry(request.client).or_insert(0);
            *seen = (*seen).max(request.seq);
        }
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(pp);
        slot.accepted_at = ctx.now();
        self.arm_retransmit(ctx);
        if self.primary_of(view) != self.id {
            let vote = self.sign_phase(b"prepare", Vote { view, seq, digest });
            self.log.entry(seq).or_default().prepares.insert(self.id, vote.clone());
            ctx.broadcast(Message::Prepare(vote));
        }
        self.check_prepared(seq, ctx);
    }

    fn handle_pre_prepare(&mut self, pp: Signed<PrePrepare>, ctx: &mut Context<'_, Self>) {
        let (view, seq) = (pp.body.view, pp.body.seq);
        self.missed_new_view(view, ctx);
        if view != self.view || self.in_view_change || pp.signer != self.primary() || !self.in_window(seq) {
            return;
        }
        if let Some(existing) = self.log.get(&seq).and_then(|s| s.pre_prepare.as_ref()) {
            // One digest per (view, seq): a second, different one is the primary lying.
            let _ = existing;
            return;
        }
        if !self.valid_pre_prepare(&pp) {
            return;
        }
        self.accept_pre_prepare(pp, ctx);
    }

    /// Normal-case traffic from f + 1 replicas in views above ours: at least one honest
    /// replica works in such a view, so the cluster changed views while we were down or
    /// cut off (a restarted primary of an old view would otherwise keep proposing to no
    /// one, and never time out on itself). Join the highest view f + 1 of them vouch for;
    /// its NEW-VIEW is then fetched like any other missed one. One number per replica,
    /// so a faulty one claiming ever higher views costs no memory.
    fn note_later_view(&mut self, from: NodeId, view: View, ctx: &mut Context<'_, Self>) {
        if view <= self.view {
            return;
        }
        let seen = &mut self.later_view_of[from.0 as usize];
        *seen = (*seen).max(view);
        let mut views = self.later_view_of.clone();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let vouched = views[self.f as usize];
        if vouched > self.view {
            self.start_view_change(vouched, ctx);
        }
    }

    /// Traffic of the view we are changing to: its NEW-VIEW went past us. Ask for it.
    fn missed_new_view(&mut self, view: View, ctx: &mut Context<'_, Self>) {
        if !(self.in_view_change && view == self.view) || self.primary_of(view) == self.id {
            return;
        }
        let now = ctx.now();
        if self.new_view_fetch_at.is_some_and(|at| now < at + self.config.view_change_timeout_ns / 4) {
            return;
        }
        self.new_view_fetch_at = Some(now);
        ctx.send(self.primary_of(view), Message::FetchNewView { view });
    }

    fn arm_retransmit(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.retransmit_armed {
            self.retransmit_armed = true;
            ctx.set_timer(PbftTimer::Retransmit, (self.config.view_change_timeout_ns / 4).max(1));
        }
    }

    /// `from` is still working on `seq`, which we are done with (it may have lost the
    /// pre-prepare or our votes, and we no longer retransmit finished slots): send it
    /// the primary's signed pre-prepare, our prepare and our commit, or, if the slot is
    /// behind our stable checkpoint already, the checkpoint certificate so it can fetch
    /// the state. At most once per retransmission period per peer.
    fn help_laggard(&mut self, from: NodeId, view: View, seq: Seq, ctx: &mut Context<'_, Self>) {
        if seq > self.last_executed {
            return;
        }
        let now = ctx.now();
        let period = (self.config.view_change_timeout_ns / 4).max(1);
        if self.helped_at.get(&(from, seq)).is_some_and(|at| now < *at + period) {
            return;
        }
        self.helped_at.insert((from, seq), now);
        if self.helped_at.len() > 4096 {
            self.helped_at.retain(|_, at| now < *at + period);
        }
        if seq <= self.stable_seq {
            for vote in self.stable_proof.clone() {
                ctx.send(from, Message::Checkpoint(vote));
            }
            return;
        }
        let Some(slot) = self.log.get(&seq).filter(|s| s.committed) else { return };
        let Some(pp) = slot.pre_prepare.clone().filter(|pp| pp.body.view == view) else { return };
        let prepare = slot.prepares.get(&self.id).cloned();
        let digest = pp.body.digest;
        ctx.send(from, Message::PrePrepare(pp));
        if let Some(prepare) = prepare {
            ctx.send(from, Message::Prepare(prepare));
        }
        let commit = self.sign_phase(b"commit", Vote { view, seq, digest });
        ctx.send(from, Message::Commit(commit));
    }

    fn retransmit(&mut self, ctx: &mut Context<'_, Self>) {
        self.retransmit_armed = false;
        if self.in_view_change {
            return;
        }
        let mut resend = Vec::new();
        let mut young = false;
        let period = (self.config.view_change_timeout_ns / 4).max(1);
        let now = ctx.now();
        for (seq, slot) in self.log.range(self.last_executed + 1..) {
            let Some(pp) = slot.pre_prepare.as_ref() else { continue };
            if pp.body.view != self.view {
                continue;
            }
            if now < slot.accepted_at + period {
                young = true;
                continue;
            }
            if pp.signer == self.id {
                resend.push(Message::PrePrepare(pp.clone()));
            }
            if let Some(prepare) = slot.prepares.get(&self.id) {
                resend.push(Message::Prepare(prepare.clone()));
            }
            if slot.prepared {
                let _ = seq;
                resend.push(Message::Commit(Signed {
                    body: Vote { view: pp.body.view, seq: pp.body.seq, digest: pp.body.digest },
                    signer: self.id,
                    signature: Vec::new(),
                }));
            }
        }
        if resend.is_empty() {
            if young {
                self.arm_retransmit(ctx);
            }
            return;
        }
        resend.push(Message::Behind { view: self.view, seq: self.last_executed + 1 });
        for msg in resend {
            let msg = match msg {
                // Commits are re-signed (the signature was not kept); signing is
                // deterministic, so it is the same commit.
                Message::Commit(c) => Message::Commit(self.sign_phase(b"commit", c.body)),
                other => other,
            };
            ctx.broadcast(msg);
        }
        self.arm_retransmit(ctx);
    }

    fn handle_prepare(&mut self, vote: Signed<Vote>, ctx: &mut Context<'_, Self>) {
        let Vote { view, seq, .. } = vote.body;
        self.missed_new_view(view, ctx);
        if view != self.view || self.in_view_change || !self.in_window(seq) || vote.signer == self.primary_of(view) {
            return;
        }
        if !self.verify_phase(b"prepare", &vote) {
            return;
        }
        self.log.entry(seq).or_default().prepares.entry(vote.signer).or_insert(vote);
        self.check_prepared(seq, ctx);
    }

    /// Prepared: the pre-prepare and `2f` matching prepares from distinct backups.
    fn check_prepared(&mut self, seq: Seq, ctx: &mut Context<'_, Self>) {
        let Some(slot) = self.log.get(&seq) else { return };
        let Some(pp) = slot.pre_prepare.as_ref() else { return };
        if slot.prepared {
            return;
        }
        let matching: Vec<Signed<Vote>> =
            slot.prepares.values().filter(|p| p.body.digest == pp.body.digest).cloned().collect();
        if matching.len() < self.prepares_needed() {
            return;
        }
        let cert = PreparedCert { pre_prepare: pp.clone(), prepares: matching };
        let vote = Vote { view: pp.body.view, seq, digest: pp.body.digest };
        self.log.get_mut(&seq).expect("slot").prepared = true;
        ctx.persist(Record::Prepared { cert: cert.clone() });
        self.prepared_certs.insert(seq, cert);
        let commit = self.sign_phase(b"commit", vote);
        self.log.get_mut(&seq).expect("slot").commits.insert(self.id, commit.body.digest);
        ctx.broadcast(Message::Commit(commit));
        self.check_committed(seq, ctx);
    }

    fn handle_commit(&mut self, vote: Signed<Vote>, ctx: &mut Context<'_, Self>) {
        let Vote { view, seq, digest } = vote.body;
        self.missed_new_view(view, ctx);
        if view != self.view || self.in_view_change || !self.in_window(seq) {
            return;
        }
        if !self.verify_phase(b"commit", &vote) {
            return;
        }
        self.log.entry(seq).or_default().commits.entry(vote.signer).or_insert(digest);
        self.check_committed(seq, ctx);
    }

    /// Committed-local: prepared and `2f + 1` matching commits.
    fn check_committed(&mut self, seq: Seq, ctx: &mut Context<'_, Self>) {
        let quorum = self.quorum();
        let Some(slot) = self.log.get_mut(&seq) else { return };
        let Some(pp) = slot.pre_prepare.as_ref() else { return };
        if !slot.prepared || slot.committed {
            return;
        }
        let digest = pp.body.digest;
        if slot.commits.values().filter(|d| **d == digest).count() < quorum {
            return;
        }
        slot.committed = true;
        self.execute_ready(ctx);
    }

    /// Execute committed batches in sequence order.
    fn execute_ready(&mut self, ctx: &mut Context<'_, Self>) {
        let before = self.last_executed;
        loop {
            let next = self.last_executed + 1;
            let Some(slot) = self.log.get(&next) else { break };
            if !slot.committed {
                break;
            }
            let pp = slot.pre_prepare.clone().expect("committed slots have a pre-prepare");
            self.execute(next, pp.body.digest, &pp.body.batch, ctx);
        }
        if self.last_executed > before {
            self.view_change_attempts = 0; // progress: the next view change starts short again
        }
        self.restart_or_stop_timer(ctx);
        if self.primary() == self.id {
            self.flush(ctx);
        }
    }

    fn execute(&mut self, seq: Seq, digest: Digest, batch: &[Arc<Request>], ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::Executed { seq, digest, batch: batch.to_vec() });
        self.apply_batch(seq, digest, batch, Some(ctx));
        if seq.is_multiple_of(self.config.checkpoint_interval) {
            let state = state_digest(seq, &self.prefix_digest, &self.kv);
            self.snapshots.insert(seq, (self.prefix_digest, self.kv.clone()));
            let vote = self.sign(CheckpointVote { seq, state });
            self.own_checkpoints.insert(seq, vote.clone());
            ctx.broadcast(Message::Checkpoint(vote.clone()));
            self.record_checkpoint_vote(vote, ctx);
        }
    }

    /// Apply a committed batch (also used when rebuilding from records, without `ctx`).
    fn apply_batch(&mut self, seq: Seq, digest: Digest, batch: &[Arc<Request>], ctx: Option<&mut Context<'_, Self>>) {
        debug_assert_eq!(seq, self.last_executed + 1);
        self.prefix_digest = self.prefix_digest.chain(seq, &digest);
        self.last_executed = seq;
        let mut replies = Vec::new();
        for request in batch {
            if let Some(result) = self.kv.apply(request) {
                replies.push(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
            }
            if self.waiting.get(&request.client).is_some_and(|s| *s <= request.seq) {
                self.waiting.remove(&request.client);
            }
            self.stats.requests_executed += 1;
        }
        if let Some(ctx) = ctx {
            ctx.observe(Event::Committed { slot: seq, digest, prefix_digest: self.prefix_digest });
            ctx.observe(Event::Applied { slot: seq, digest });
            for reply in replies {
                ctx.reply(reply);
            }
        }
    }

    // ---- checkpoints -------------------------------------------------------------------

    fn handle_checkpoint(&mut self, vote: Signed<CheckpointVote>, ctx: &mut Context<'_, Self>) {
        if vote.body.seq <= self.stable_seq || vote.body.seq > self.stable_seq + 4 * self.config.log_window {
            return;
        }
        if !self.verify(&vote) {
            return;
        }
        self.record_checkpoint_vote(vote, ctx);
    }

    fn record_checkpoint_vote(&mut self, vote: Signed<CheckpointVote>, ctx: &mut Context<'_, Self>) {
        let seq = vote.body.seq;
        let state = vote.body.state;
        let votes = self.checkpoint_votes.entry(seq).or_default();
        votes.entry(vote.signer).or_insert(vote);
        let proof: Vec<Signed<CheckpointVote>> = votes.values().filter(|v| v.body.state == state).cloned().collect();
        if proof.len() >= self.quorum() && seq > self.stable_seq {
            self.make_stable(seq, proof, ctx);
        }
    }

    fn make_stable(&mut self, seq: Seq, proof: Vec<Signed<CheckpointVote>>, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::Stable { proof: proof.clone() });
        self.stable_seq = seq;
        self.stable_proof = proof;
        // Garbage collection: nothing at or below a stable checkpoint is needed again.
        self.log = self.log.split_off(&(seq + 1));
        self.prepared_certs = self.prepared_certs.split_off(&(seq + 1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&(seq + 1));
        self.snapshots = self.snapshots.split_off(&seq);
        if self.next_seq <= seq {
            self.next_seq = seq + 1;
        }
        if self.last_executed < seq {
            // Fell behind a certified state: fetch it rather than wait for a log that
            // is being discarded.
            self.request_state(seq, ctx);
        } else if self.primary() == self.id {
            self.flush(ctx);
        }
    }

    /// Ask for the state at `seq`; repeated (at most every half view-change timeout)
    /// while it has not arrived, since a request or its answer can be lost.
    fn request_state(&mut self, seq: Seq, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let retry_after = self.config.view_change_timeout_ns / 2;
        if self.state_fetch_sent.is_some_and(|(s, at)| s >= seq && now < at + retry_after) {
            return;
        }
        self.state_fetch_sent = Some((seq, now));
        ctx.broadcast(Message::FetchState { seq });
    }

    /// Behind our own stable checkpoint (its log is gone): keep asking for the state.
    fn maybe_fetch_state(&mut self, ctx: &mut Context<'_, Self>) {
        if self.last_executed < self.stable_seq {
            self.request_state(self.stable_seq, ctx);
        }
    }

    fn handle_fetch_state(&mut self, from: NodeId, seq: Seq, ctx: &mut Context<'_, Self>) {
        if self.stable_seq < seq || self.stable_seq == 0 {
            return;
        }
        let Some((prefix_digest, kv)) = self.snapshots.get(&self.stable_seq).cloned() else { return };
        ctx.send(from, Message::State { proof: self.stable_proof.clone(), prefix_digest, kv });
    }

    fn handle_state(
        &mut self,
        proof: Vec<Signed<CheckpointVote>>,
        prefix_digest: Digest,
        kv: KvStore,
        ctx: &mut Context<'_, Self>,
    ) {
        let Some(seq) = proof.first().map(|c| c.body.seq) else { return };
        if seq <= self.last_executed {
            return;
        }
        let Some(certified) = self.valid_checkpoint_proof(seq, &proof) else { return };
        if state_digest(seq, &prefix_digest, &kv) != certified {
            return; // a state that does not match its certificate: ignore the sender
        }
        self.stats.state_transfers += 1;
        ctx.persist(Record::Installed { seq, prefix_digest, kv: kv.clone() });
        self.install_state(seq, prefix_digest, kv);
        if seq > self.stable_seq {
            self.make_stable(seq, proof, ctx);
        }
        self.state_fetch_sent = None;
        self.execute_ready(ctx);
    }

    fn install_state(&mut self, seq: Seq, prefix_digest: Digest, kv: KvStore) {
        self.last_executed = seq;
        self.prefix_digest = prefix_digest;
        self.snapshots.insert(seq, (prefix_digest, kv.clone()));
        self.kv = kv;
        self.waiting.retain(|client, s| self.kv.last_applied_seq(*client) < *s);
    }

    // ---- requests ------------------------------------------------------------------------

    /// A client request, straight from the client or forwarded by a backup.
    fn receive_request(&mut self, request: Arc<Request>, ctx: &mut Context<'_, Self>) {
        if self.primary() == self.id && !self.in_view_change && self.config.batch_delay_ns > 0 {
            // The batch waits anyway: check its client signatures together when it closes.
            self.unverified.push(request);
            if self.unverified.len() >= self.config.max_batch {
                self.admit_unverified(ctx);
            } else if !self.flush_armed {
                self.flush_armed = true;
                ctx.set_timer(PbftTimer::Flush, self.config.batch_delay_ns);
            }
            return;
        }
        if self.verify_request(&request) {
            self.take_request(request, ctx);
        }
    }

    /// Primary: the requests collected for the next batch whose signatures hold.
    fn admit_unverified(&mut self, ctx: &mut Context<'_, Self>) {
        let requests = std::mem::take(&mut self.unverified);
        let valid = self.check_requests(&requests);
        for (request, ok) in requests.into_iter().zip(valid) {
            if ok {
                self.take_request(request, ctx);
            }
        }
    }

    fn take_request(&mut self, request: Arc<Request>, ctx: &mut Context<'_, Self>) {
        let applied = self.kv.last_applied_seq(request.client);
        if request.seq <= applied {
            // Executed already: answer again from the session table (the reply may
            // have been lost), never execute twice.
            if let Some(result) = self.kv.apply(&request) {
                ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
            }
            return;
        }
        if self.assigned.get(&request.client).is_some_and(|s| *s >= request.seq) && self.primary() == self.id {
            return; // already proposed; its execution will answer it
        }
        if self.primary() == self.id && !self.in_view_change {
            self.assigned.insert(request.client, request.seq);
            self.pending.push(request);
            let full = self.pending.len() >= self.config.max_batch;
            if self.config.batch_delay_ns == 0 || full {
                if self.flush_armed {
                    self.flush_armed = false;
                    ctx.cancel_timer(PbftTimer::Flush);
                }
                self.flush(ctx);
            } else if !self.flush_armed {
                self.flush_armed = true;
                ctx.set_timer(PbftTimer::Flush, self.config.batch_delay_ns);
            }
        } else {
            // A backup: pass it to the primary and watch that it executes.
            let waiting = self.waiting.entry(request.client).or_insert(0);
            if *waiting < request.seq {
                *waiting = request.seq;
                if !self.in_view_change {
                    ctx.send(self.primary(), Message::Forward(request));
                }
            }
            self.start_timer(ctx);
        }
    }

    // ---- view change ---------------------------------------------------------------------

    /// Move to view `new_view`: stop the normal case and multicast a VIEW-CHANGE.
    fn start_view_change(&mut self, new_view: View, ctx: &mut Context<'_, Self>) {
        if new_view <= self.view && self.in_view_change {
            return;
        }
        self.view = new_view;
        self.in_view_change = true;
        self.stats.view_changes += 1;
        ctx.persist(Record::View { view: new_view });
        if self.flush_armed {
            self.flush_armed = false;
            ctx.cancel_timer(PbftTimer::Flush);
        }
        self.pending.clear();
        self.unverified.clear();
        let prepared: Vec<PreparedCert> =
            self.prepared_certs.range(self.stable_seq + 1..).map(|(_, c)| c.clone()).collect();
        let vc = self.sign(ViewChange {
            new_view,
            stable_seq: self.stable_seq,
            checkpoint_proof: self.stable_proof.clone(),
            prepared,
        });
        self.view_changes.entry(new_view).or_default().insert(self.id, vc.clone());
        ctx.broadcast(Message::ViewChange(vc));
        // Wait for the new view, longer each time one fails to come.
        self.timer_running = true;
        ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        self.view_change_attempts += 1;
        self.maybe_send_new_view(new_view, ctx);
    }

    fn valid_view_change(&mut self, vc: &Signed<ViewChange>) -> bool {
        if !self.verify(vc) {
            return false;
        }
        let body = &vc.body;
        if self.valid_checkpoint_proof(body.stable_seq, &body.checkpoint_proof).is_none() {
            return false;
        }
        let certs = body.prepared.clone();
        certs.iter().all(|c| {
            c.pre_prepare.body.view < body.new_view && c.pre_prepare.body.seq > body.stable_seq && self.valid_cert(c)
        })
    }

    fn handle_view_change(&mut self, vc: Signed<ViewChange>, ctx: &mut Context<'_, Self>) {
        let new_view = vc.body.new_view;
        if new_view < self.view || (new_view == self.view && !self.in_view_change) {
            return;
        }
        if self.view_changes.get(&new_view).is_some_and(|m| m.contains_key(&vc.signer)) {
            return;
        }
        if !self.valid_view_change(&vc) {
            return;
        }
        self.view_changes.entry(new_view).or_default().insert(vc.signer, vc);
        // f + 1 replicas want a higher view: at least one honest one timed out, so
        // join the smallest such view rather than wait for our own timer.
        let higher: BTreeSet<NodeId> =
            self.view_changes.range(self.view + 1..).flat_map(|(_, m)| m.keys().copied()).collect();
        if higher.len() > self.f as usize && !(self.in_view_change && self.view >= new_view) {
            let smallest =
                self.view_changes.range(self.view + 1..).map(|(v, _)| *v).next().expect("a higher view was seen");
            if smallest > self.view || !self.in_view_change {
                self.start_view_change(smallest, ctx);
            }
        }
        self.maybe_send_new_view(new_view, ctx);
    }

    /// The O set of a NEW-VIEW from its V set: for every seq between the highest stable
    /// checkpoint and the highest prepared seq, the digest prepared in the highest view,
    /// or a null request.
    fn compute_o(view: View, vcs: &[Signed<ViewChange>]) -> (Seq, Vec<PrePrepare>) {
        let min_s = vcs.iter().map(|vc| vc.body.stable_seq).max().unwrap_or(0);
        let mut best: BTreeMap<Seq, &PrePrepare> = BTreeMap::new();
        for vc in vcs {
            for cert in &vc.body.prepared {
                let pp = &cert.pre_prepare.body;
                if pp.seq <= min_s {
                    continue;
                }
                if best.get(&pp.seq).is_none_or(|b| pp.view > b.view) {
                    best.insert(pp.seq, pp);
                }
            }
        }
        let max_s = best.keys().next_back().copied().unwrap_or(min_s);
        let o = (min_s + 1..=max_s)
            .map(|seq| match best.get(&seq) {
                Some(pp) => PrePrepare { view, seq, digest: pp.digest, batch: pp.batch.clone() },
                None => PrePrepare { view, seq, digest: batch_digest(&[]), batch: Vec::new() },
            })
            .collect();
        (min_s, o)
    }

    fn maybe_send_new_view(&mut self, view: View, ctx: &mut Context<'_, Self>) {
        if self.primary_of(view) != self.id || view != self.view || !self.in_view_change {
            return;
        }
        if self.new_view_sent.contains(&view) {
            return;
        }
        let Some(vcs) = self.view_changes.get(&view) else { return };
        if vcs.len() < self.quorum() || !vcs.contains_key(&self.id) {
            return;
        }
        let vcs: Vec<Signed<ViewChange>> = vcs.values().take(self.quorum()).cloned().collect();
        let (_, o) = Self::compute_o(view, &vcs);
        let pre_prepares: Vec<Signed<PrePrepare>> = o.into_iter().map(|pp| self.sign(pp)).collect();
        let nv = self.sign(NewView { view, view_changes: vcs, pre_prepares });
        self.new_view_sent.insert(view);
        self.last_new_view = Some(nv.clone());
        ctx.broadcast(Message::NewView(nv.clone()));
        self.enter_new_view(nv, ctx);
    }

    fn handle_new_view(&mut self, from: NodeId, nv: Signed<NewView>, ctx: &mut Context<'_, Self>) {
        let view = nv.body.view;
        if view < self.view || (view == self.view && !self.in_view_change) || from != self.primary_of(view) {
            return;
        }
        if nv.signer != from || !self.verify(&nv) {
            return;
        }
        // Every view-change in V must be valid, for this view, from distinct replicas.
        let mut signers = BTreeSet::new();
        for vc in nv.body.view_changes.clone() {
            if vc.body.new_view != view || !self.valid_view_change(&vc) {
                return;
            }
            signers.insert(vc.signer);
        }
        if signers.len() < self.quorum() {
            return;
        }
        // Recompute O: a primary that dropped or changed a prepared request is caught here.
        let (_, expected) = Self::compute_o(view, &nv.body.view_changes);
        if expected.len() != nv.body.pre_prepares.len() {
            return;
        }
        for (want, got) in expected.iter().zip(nv.body.pre_prepares.clone()) {
            if got.body != *want || got.signer != from || !self.verify(&got) {
                return;
            }
        }
        if view > self.view {
            self.view = view;
            ctx.persist(Record::View { view });
        }
        self.enter_new_view(nv, ctx);
    }

    fn enter_new_view(&mut self, nv: Signed<NewView>, ctx: &mut Context<'_, Self>) {
        let view = nv.body.view;
        let (min_s, _) = Self::compute_o(view, &nv.body.view_changes);
        self.in_view_change = false;
        self.view_changes = self.view_changes.split_off(&(view + 1));
        // Fresh per-view state: only this view's messages count from now on.
        let old_log = std::mem::take(&mut self.log);
        let primary = self.primary_of(view);
        self.stats_elected(view, min_s, &nv, ctx);
        ctx.observe(Event::LeaderKnown { epoch: view, leader: primary });
        if min_s > self.stable_seq {
            // The new view starts above our stable checkpoint: adopt the certificate from V.
            if let Some(vc) = nv.body.view_changes.iter().find(|vc| vc.body.stable_seq == min_s) {
                let proof = vc.body.checkpoint_proof.clone();
                self.make_stable(min_s, proof, ctx);
            }
        }
        // Requests assigned in the old view but not carried into this one must be
        // proposable again when their clients retry.
        self.assigned.clear();
        let mut max_s = min_s;
        for pp in nv.body.pre_prepares {
            max_s = max_s.max(pp.body.seq);
            // Batches we already executed need no new round, but keep the slot so the
            // sequence stays contiguous for those that have not.
            self.accept_pre_prepare(pp, ctx);
        }
        drop(old_log);
        self.next_seq = max_s.max(self.last_executed).max(self.stable_seq) + 1;
        self.timer_running = false;
        ctx.cancel_timer(PbftTimer::ViewChange);
        if !self.waiting.is_empty() {
            self.start_timer(ctx);
        }
        if primary == self.id {
            self.view_change_attempts = 0;
            self.flush(ctx);
        }
    }

    /// The new primary reports itself elected, with its log's prefix digests over the
    /// new view's pre-prepares, so the checkers can test Leader Completeness.
    fn stats_elected(&mut self, view: View, min_s: Seq, nv: &Signed<NewView>, ctx: &mut Context<'_, Self>) {
        if self.primary_of(view) != self.id {
            return;
        }
        if self.last_executed < min_s {
            // Behind the new view's checkpoint: our chain there is not known until the
            // state arrives, so the completeness check has nothing to compare.
            ctx.observe(Event::Elected { epoch: view, log_from_slot: u64::MAX, log_prefix_digests: Vec::new() });
            return;
        }
        let mut digests = vec![self.prefix_digest];
        let from = self.last_executed;
        for pp in &nv.body.pre_prepares {
            if pp.body.seq > from {
                let next = digests.last().expect("non-empty").chain(pp.body.seq, &pp.body.digest);
                digests.push(next);
            }
        }
        ctx.observe(Event::Elected { epoch: view, log_from_slot: from, log_prefix_digests: digests });
    }
}

impl Protocol for Pbft {
    type Message = Message;
    type Timer = PbftTimer;
    type Record = Record;
    type Config = PbftConfig;

    fn new(config: &PbftConfig, id: NodeId, nodes: u32) -> Self {
        assert!(id.0 < nodes, "node id {id} outside a cluster of {nodes}");
        assert_eq!(config.node_public_keys.len(), nodes as usize, "a public key per replica");
        assert!(config.checkpoint_interval >= 1 && config.log_window >= config.checkpoint_interval);
        let secret = config.node_secret_keys.get(id.0 as usize).copied().expect("this replica's secret key");
        let key = SigningKey::from_bytes(&secret);
        assert_eq!(key.verifying_key().to_bytes(), config.node_public_keys[id.0 as usize], "key pair mismatch");
        // Keep only our own secret: the rest of the configuration is public.
        let mut config = config.clone();
        config.node_secret_keys.clear();
        let node_keys = config
            .node_public_keys
            .iter()
            .map(|k| VerifyingKey::from_bytes(k).expect("valid replica public key"))
            .collect();
        let client_keys = config.client_public_keys.iter().map(|k| VerifyingKey::from_bytes(k).ok()).collect();
        Pbft {
            id,
            nodes,
            f: faults_tolerated(nodes),
            config,
            key,
            node_keys,
            client_keys,
            view: 0,
            in_view_change: false,
            view_change_attempts: 0,
            log: BTreeMap::new(),
            prepared_certs: BTreeMap::new(),
            next_seq: 1,
            last_executed: 0,
            prefix_digest: Digest::GENESIS,
            kv: KvStore::default(),
            stable_seq: 0,
            stable_proof: Vec::new(),
            checkpoint_votes: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            new_view_sent: BTreeSet::new(),
            last_new_view: None,
            new_view_fetch_at: None,
            retransmit_armed: false,
            helped_at: HashMap::new(),
            later_view_of: vec![0; nodes as usize],
            pending: Vec::new(),
            unverified: Vec::new(),
            assigned: HashMap::new(),
            waiting: HashMap::new(),
            timer_running: false,
            flush_armed: false,
            state_fetch_sent: None,
            verified: std::collections::HashSet::new(),
            stats: PbftStats::default(),
        }
    }

    fn restore(config: &PbftConfig, id: NodeId, nodes: u32, records: &[Record]) -> Self {
        let mut pbft = Pbft::new(config, id, nodes);
        let mut accepted: BTreeMap<(View, Seq), Signed<PrePrepare>> = BTreeMap::new();
        for record in records {
            match record {
                Record::View { view } => pbft.view = pbft.view.max(*view),
                Record::PrePrepared { pre_prepare } => {
                    accepted.insert((pre_prepare.body.view, pre_prepare.body.seq), pre_prepare.clone());
                }
                Record::Prepared { cert } => {
                    pbft.prepared_certs.insert(cert.pre_prepare.body.seq, cert.clone());
                }
                Record::Executed { seq, digest, batch } => {
                    if *seq == pbft.last_executed + 1 {
                        pbft.apply_batch(*seq, *digest, batch, None);
                        if seq.is_multiple_of(pbft.config.checkpoint_interval) {
                            pbft.snapshots.insert(*seq, (pbft.prefix_digest, pbft.kv.clone()));
                        }
                    }
                }
                Record::Stable { proof } => {
                    if let Some(seq) = proof.first().map(|c| c.body.seq)
                        && seq > pbft.stable_seq
                    {
                        pbft.stable_seq = seq;
                        pbft.stable_proof = proof.clone();
                    }
                }
                Record::Installed { seq, prefix_digest, kv } => {
                    if *seq > pbft.last_executed {
                        pbft.install_state(*seq, *prefix_digest, kv.clone());
                    }
                }
            }
        }
        pbft.prepared_certs = pbft.prepared_certs.split_off(&(pbft.stable_seq + 1));
        pbft.snapshots = pbft.snapshots.split_off(&pbft.stable_seq);
        // Our checkpoint votes were lost with the crash; sign them again so they can be
        // resent (a checkpoint that never gathers 2f + 1 votes would pin the watermarks).
        let above: Vec<(Seq, Digest, KvStore)> = pbft
            .snapshots
            .range(pbft.stable_seq + 1..)
            .map(|(seq, (prefix, kv))| (*seq, *prefix, kv.clone()))
            .collect();
        for (seq, prefix, kv) in above {
            let vote = pbft.sign(CheckpointVote { seq, state: state_digest(seq, &prefix, &kv) });
            pbft.checkpoint_votes.entry(seq).or_default().insert(pbft.id, vote.clone());
            pbft.own_checkpoints.insert(seq, vote);
        }
        // Re-enter the latest view as a replica that may have missed its NEW-VIEW: it
        // rejoins through the view-change protocol (f + 1 rule) or the next checkpoint.
        // What it accepted in that view stays binding: it will not prepare another digest.
        for ((view, seq), pp) in accepted {
            if view == pbft.view && seq > pbft.stable_seq {
                pbft.log.entry(seq).or_default().pre_prepare = Some(pp);
            }
        }
        pbft.next_seq =
            pbft.log.keys().next_back().copied().unwrap_or(0).max(pbft.last_executed).max(pbft.stable_seq) + 1;
        // A replica restarted in a view it may not have seen the NEW-VIEW of does not
        // take part in that view; it rejoins at the next view change (or catches up
        // through checkpoints meanwhile).
        pbft.in_view_change = pbft.view > 0;
        pbft
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if self.view > 0 || self.last_executed > 0 || !self.log.is_empty() {
            ctx.observe(Event::Restarted { epoch: self.view });
        } else if self.primary() == self.id {
            ctx.observe(Event::Elected { epoch: 0, log_from_slot: 0, log_prefix_digests: vec![Digest::GENESIS] });
        }
        if self.in_view_change {
            self.timer_running = true;
            ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        } else {
            ctx.observe(Event::LeaderKnown { epoch: self.view, leader: self.primary() });
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Message) {
        assert!(from.0 < self.nodes && from != self.id, "{}: message from {from}", self.id);
        self.maybe_fetch_state(ctx);
        match &msg {
            Message::PrePrepare(pp) => self.note_later_view(from, pp.body.view, ctx),
            Message::Prepare(vote) | Message::Commit(vote) => self.note_later_view(from, vote.body.view, ctx),
            _ => {}
        }
        match msg {
            // From the primary, or relayed by a replica helping a laggard: its signature,
            // not its sender, says the primary proposed it.
            Message::PrePrepare(pp) => self.handle_pre_prepare(pp, ctx),
            Message::Prepare(vote) => {
                if vote.signer == from {
                    self.handle_prepare(vote, ctx)
                }
            }
            Message::Commit(vote) => {
                if vote.signer == from {
                    self.handle_commit(vote, ctx)
                }
            }
            Message::Checkpoint(vote) => {
                if vote.signer == from {
                    self.handle_checkpoint(vote, ctx)
                }
            }
            Message::ViewChange(vc) => {
                if vc.signer == from {
                    self.handle_view_change(vc, ctx)
                }
            }
            Message::NewView(nv) => self.handle_new_view(from, nv, ctx),
            Message::Forward(request) => self.receive_request(request, ctx),
            Message::FetchState { seq } => self.handle_fetch_state(from, seq, ctx),
            Message::Behind { view, seq } => self.help_laggard(from, view, seq, ctx),
            Message::FetchNewView { view } => {
                if let Some(nv) = self.last_new_view.as_ref().filter(|nv| nv.body.view == view && view == self.view) {
                    ctx.send(from, Message::NewView(nv.clone()));
                }
            }
            Message::State { proof, prefix_digest, kv } => self.handle_state(proof, prefix_digest, kv, ctx),
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: PbftTimer) {
        match timer {
            PbftTimer::ViewChange => {
                self.timer_running = false;
                for vote in self.own_checkpoints.values() {
                    ctx.broadcast(Message::Checkpoint(vote.clone()));
                }
                let next = self.view + 1;
                self.start_view_change(next, ctx);
            }
            PbftTimer::Flush => {
                self.admit_unverified(ctx);
                self.flush_armed = false;
                self.flush(ctx);
            }
            PbftTimer::Retransmit => self.retransmit(ctx),
        }
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, request: Request) {
        let (client, seq) = (request.client, request.seq);
        let at_primary = self.primary() == self.id;
        self.receive_request(Arc::new(request), ctx);
        if !at_primary && !self.in_view_change {
            // Tell the client whom to send to, so its next request skips the forwarding
            // hop. Only a hint: a faulty replica could lie, and the client's timeout
            // (it then sends to every replica) still gets the request through.
            ctx.reply(Reply { client, seq, body: ReplyBody::NotLeader { leader: Some(self.primary()) } });
        }
    }

    fn message_kind(msg: &Message) -> &'static str {
        match msg {
            Message::PrePrepare(_) => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view_change",
            Message::NewView(_) => "new_view",
            Message::Forward(_) => "forward",
            Message::FetchState { .. } => "fetch_state",
            Message::FetchNewView { .. } => "fetch_new_view",
            Message::Behind { .. } => "behind",
            Message::State { .. } => "state",
        }
    }

    fn is_leader(&self) -> bool {
        self.primary() == self.id && !self.in_view_change
    }

    fn epoch(&self) -> u64 {
        self.view
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("signatures_made", self.stats.signatures_made),
            ("signatures_verified", self.stats.signatures_verified),
            ("bad_signatures", self.stats.bad_signatures),
            ("view_changes", self.stats.view_changes),
        ]
    }
}
