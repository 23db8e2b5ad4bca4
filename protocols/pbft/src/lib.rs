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
//!
//! **Where the rules live.** This file holds the replica's state and the [`Protocol`]
//! entry points; `crypto` the keys, what each signature covers and the certificates,
//! `normal` the three phases and execution, `checkpoint` checkpoints and state transfer,
//! `view_change` the view-change timer, VIEW-CHANGE and NEW-VIEW; `types` the messages,
//! records and configuration. Unlike Raft's term, a higher view in one message changes
//! nothing: a replica moves only on `f + 1` view-changes or a NEW-VIEW it checked, since
//! a single Byzantine replica could otherwise drive it into any view.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use qlab_core::batching::{defer_to_drained_input, pipeline_has_room, take_batch};
use qlab_core::{ClientId, Context, Digest, Event, KvStore, Nanos, NodeId, Protocol, Reply, ReplyBody, Request, ms};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub mod attacks;
mod checkpoint;
pub mod client;
mod crypto;
pub mod marks;
mod normal;
mod types;
mod view_change;

pub use client::{PbftClient, PbftClientTimer};
pub use crypto::{Signable, client_secret, node_secret, public_of};
pub use types::*;

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

/// One replica. `Clone` and a canonical `Debug` (every collection ordered, caches and
/// counters left out) let the explorer copy and fingerprint a cluster's state.
#[derive(Clone)]
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
    /// Primary: the first sequence number it proposed new requests under in this view
    /// (those below carry the NEW-VIEW's re-proposals or came before a restart);
    /// adaptive batching counts only its own batches as in flight.
    own_from_seq: Seq,
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
    helped_at: BTreeMap<(NodeId, Seq), Nanos>,
    /// Per replica, the highest view its normal-case messages carried: f + 1 of them
    /// ahead of ours mean the cluster changed views without us.
    later_view_of: Vec<View>,
    // Primary.
    pending: Vec<Arc<Request>>,
    /// Primary, batching: requests received whose client signatures are not checked yet.
    unverified: Vec<Arc<Request>>,
    /// Highest request seq per client already assigned a sequence number (primary) or
    /// seen (backup), to not propose or time out on a request twice.
    assigned: BTreeMap<ClientId, u64>,
    /// Requests waiting to execute: client -> seq (what the view-change timer guards).
    waiting: BTreeMap<ClientId, u64>,
    timer_running: bool,
    flush_armed: bool,
    state_fetch_sent: Option<(Seq, Nanos)>,
    /// Signatures already checked, so a prepare seen alone and again inside a prepared
    /// certificate, view-change and new-view is verified once (as PBFT implementations
    /// do). Keyed by a digest of (signer, signed digest, signature); cleared when large.
    verified: std::collections::HashSet<[u8; 32]>,
    pub stats: PbftStats,
}

/// The replica's protocol state, in a fixed order: what two replicas must agree on to
/// behave alike. Left out: the configuration and keys (the same in every state of a
/// run), the cache of checked signatures (it saves work, never changes a decision)
/// and the counters.
impl std::fmt::Debug for Pbft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pbft")
            .field("id", &self.id)
            .field("view", &self.view)
            .field("in_view_change", &self.in_view_change)
            .field("view_change_attempts", &self.view_change_attempts)
            .field("log", &self.log)
            .field("prepared_certs", &self.prepared_certs)
            .field("next_seq", &self.next_seq)
            .field("own_from_seq", &self.own_from_seq)
            .field("last_executed", &self.last_executed)
            .field("prefix_digest", &self.prefix_digest)
            .field("kv", &self.kv)
            .field("stable_seq", &self.stable_seq)
            .field("stable_proof", &self.stable_proof)
            .field("checkpoint_votes", &self.checkpoint_votes)
            .field("own_checkpoints", &self.own_checkpoints)
            .field("snapshots", &self.snapshots)
            .field("view_changes", &self.view_changes)
            .field("new_view_sent", &self.new_view_sent)
            .field("last_new_view", &self.last_new_view)
            .field("new_view_fetch_at", &self.new_view_fetch_at)
            .field("retransmit_armed", &self.retransmit_armed)
            .field("helped_at", &self.helped_at)
            .field("later_view_of", &self.later_view_of)
            .field("pending", &self.pending)
            .field("unverified", &self.unverified)
            .field("assigned", &self.assigned)
            .field("waiting", &self.waiting)
            .field("timer_running", &self.timer_running)
            .field("flush_armed", &self.flush_armed)
            .field("state_fetch_sent", &self.state_fetch_sent)
            .finish_non_exhaustive()
    }
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
            own_from_seq: 1,
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
            helped_at: BTreeMap::new(),
            later_view_of: vec![0; nodes as usize],
            pending: Vec::new(),
            unverified: Vec::new(),
            assigned: BTreeMap::new(),
            waiting: BTreeMap::new(),
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
        pbft.own_from_seq = pbft.next_seq;
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
            // A vote is its signer's own to send: one relayed or forged by another is dropped.
            Message::Prepare(vote) => {
                if vote.signer == from {
                    self.handle_prepare(vote, ctx)
                } else {
                    self.stats.votes_not_from_signer += 1;
                    ctx.ignored(|| format!("ignored prepare from {from}: signed by {}", vote.signer));
                }
            }
            Message::Commit(vote) => {
                if vote.signer == from {
                    self.handle_commit(vote, ctx)
                } else {
                    self.stats.votes_not_from_signer += 1;
                    ctx.ignored(|| format!("ignored commit from {from}: signed by {}", vote.signer));
                }
            }
            Message::Checkpoint(vote) => {
                if vote.signer == from {
                    self.handle_checkpoint(vote, ctx)
                } else {
                    // Not counted as a forgery: an honest replica helping a laggard
                    // relays the checkpoint votes of its stable proof (`help_laggard`).
                    ctx.ignored(|| format!("ignored checkpoint from {from}: signed by {}", vote.signer));
                }
            }
            Message::ViewChange(vc) => {
                if vc.signer == from {
                    self.handle_view_change(vc, ctx)
                } else {
                    self.stats.votes_not_from_signer += 1;
                    ctx.ignored(|| format!("ignored view_change from {from}: signed by {}", vc.signer));
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

    fn on_input_drained(&mut self, ctx: &mut Context<'_, Self>) {
        // Only adaptive batching defers to this call; a batch delay keeps its timer.
        if self.config.batch_delay_ns == 0 {
            self.flush(ctx);
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

    fn coverage_marks() -> &'static [&'static qlab_core::Mark] {
        &marks::ALL
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("signatures_made", self.stats.signatures_made),
            ("signatures_verified", self.stats.signatures_verified),
            ("bad_signatures", self.stats.bad_signatures),
            ("votes_not_from_signer", self.stats.votes_not_from_signer),
            ("view_changes", self.stats.view_changes),
        ]
    }
}
