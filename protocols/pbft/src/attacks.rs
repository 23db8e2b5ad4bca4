//! Malicious PBFT replicas. PBFT is built to survive exactly these, as long as at most
//! f of the 3f + 1 replicas run them: every attack below can only sign as itself, and
//! every honest decision rests on 2f + 1 signed statements, of which at least f + 1 come
//! from honest replicas. Each attack and what a real adversary would want from it:
//!
//! - `equivocate`: as primary, sends one pre-prepare to the lower half of the replicas
//!   and a different one (the batch reordered, or shortened) for the same sequence
//!   number to the upper half; as any replica, colludes with it: each of its prepares
//!   and commits goes to the lower half for the genuine batch and to the upper half for
//!   the equivocal one (which it can compute from the genuine batch), so each half sees
//!   the malicious replicas agree with what it was told. In a view change it asks for
//!   the next view as soon as anyone does, and as primary of the old view certifies the
//!   equivocal batch instead of the genuine one, its own pre-prepare with the prepares
//!   the upper half sent for it, whenever those are enough for a valid certificate
//!   (never with f equivocators, unless the prepare quorum is weakened). The aim: two honest replicas executing different requests at one
//!   position. With f equivocators each half has
//!   at most f + f' votes where it needs 2f + 1 with f + 1 honest, the request stalls
//!   and the view changes. With f + 1 of them agreement breaks: the suite's
//!   demonstration that the 3f + 1 bound is tight.
//! - `double-vote`: prepares and commits every digest it sees for a (view, seq), not
//!   one, to help a conflicting digest to a quorum. It cannot: a quorum needs f + 1
//!   honest votes, and honest replicas vote once per (view, seq).
//! - `forge-signature`: sends its prepares and commits with the signature of another
//!   replica's key it does not have (a signature of its own key over altered content):
//!   what impersonation would gain. Rejected on receipt and counted.
//! - `forge-log`: in its VIEW-CHANGE, claims a prepared certificate for a request
//!   nobody prepared (a pre-prepare it signs itself, in a view where it is not the
//!   primary, with prepares it can only sign as itself), to make the new primary
//!   re-propose its own choice. The certificate does not verify; the view change is
//!   refused.
//! - `replay`: with each message it broadcasts, plays back the one it broadcast 16
//!   earlier: stale views and sequence numbers, votes already counted, old checkpoints
//!   and view changes, to see whether any duplicate changes an honest replica's state.
//! - `silent-primary`: never sends anything while it is the primary (and behaves
//!   otherwise), so clients' requests go unordered until the backups' timers fire.
//! - `view-inflation`: asks for a view far ahead on every timeout, to stall everyone in
//!   view changes. A view change needs f + 1 replicas to join and 2f + 1 to complete.
//! - `selective-commit`: sends its prepares and commits to one replica only (the
//!   highest-numbered other one) and leaves every prepared certificate out of its
//!   VIEW-CHANGEs, so a request can commit at that replica with the attacker's help
//!   while the view change hears of it from as few replicas as possible. Against the
//!   commit rule it is harmless: 2f + 1 commits include f + 1 honest replicas, each with
//!   a prepared certificate, and any 2f + 1 view-changes include one of them. It is the
//!   attack that breaks a replica committing on 2f commits (issue 42's mutant).
//! - any [`GenericAttack`] (`crash`, `silent`, `selective-drop`, `delay`).

use crate::{Message, Pbft, PbftTimer, PrePrepare, Signed, ViewChange, Vote, batch_digest};
use qlab_core::adversary::{Adversary, AttackParams, Faulty, GenericAttack};
use qlab_core::{Action, Context, Digest, NodeId, Protocol, Request};
use serde::{Deserialize, Serialize};

/// What a malicious PBFT replica does; see the module doc.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PbftAttack {
    Equivocate {
        /// The equivocal pre-prepares it sent, by (view, seq), and the prepares it got
        /// for them (run state, not configuration).
        #[serde(skip)]
        equivocal: EquivocalBatches,
    },
    DoubleVote {
        /// (view, seq, digest) it already voted for (run state, not configuration).
        #[serde(skip)]
        voted: std::collections::BTreeSet<(u64, u64, Digest)>,
    },
    ForgeSignature,
    ForgeLog,
    Replay {
        /// What it broadcast lately, to play back (run state, not configuration).
        #[serde(skip)]
        sent: Vec<Message>,
    },
    SilentPrimary,
    ViewInflation,
    SelectiveCommit,
    Generic(GenericAttack),
}

/// A PBFT replica that is honest or runs a [`PbftAttack`].
pub type MaliciousPbft = Faulty<Pbft, PbftAttack>;

impl PbftAttack {
    /// Attack names as experiment files write them.
    pub const NAMES: &'static [&'static str] = &[
        "equivocate",
        "double-vote",
        "forge-signature",
        "forge-log",
        "replay",
        "silent-primary",
        "view-inflation",
        "selective-commit",
        "crash",
        "silent",
        "selective-drop",
        "delay",
    ];

    /// The attack called `name`; `params` configure the generic ones that need them.
    pub fn from_name(name: &str, params: &AttackParams) -> Option<Self> {
        Some(match name {
            "equivocate" => PbftAttack::Equivocate { equivocal: Default::default() },
            "double-vote" => PbftAttack::DoubleVote { voted: Default::default() },
            "forge-signature" => PbftAttack::ForgeSignature,
            "forge-log" => PbftAttack::ForgeLog,
            "replay" => PbftAttack::Replay { sent: Vec::new() },
            "silent-primary" => PbftAttack::SilentPrimary,
            "view-inflation" => PbftAttack::ViewInflation,
            "selective-commit" => PbftAttack::SelectiveCommit,
            _ => return GenericAttack::from_name(name, params).map(PbftAttack::Generic),
        })
    }
}

type Actions = Vec<Action<Message, PbftTimer, crate::Record>>;

/// An equivocator's equivocal pre-prepares by (view, seq), with the prepares it got for
/// each.
type EquivocalBatches = std::collections::BTreeMap<(u64, u64), (Signed<PrePrepare>, Vec<Signed<Vote>>)>;

/// How far ahead `view-inflation` asks to go.
const INFLATED_VIEWS: u64 = 1_000;

impl Adversary<Pbft> for PbftAttack {
    fn on_start(&mut self, honest: &mut Pbft, ctx: &mut Context<'_, Pbft>) {
        match self {
            PbftAttack::Generic(g) => g.on_start(honest, ctx),
            _ => {
                let actions = ctx.capture::<Pbft>(|c| honest.on_start(c));
                self.emit(honest, ctx, actions);
            }
        }
    }

    #[expect(clippy::collapsible_match, reason = "a match guard cannot insert into `voted`")]
    fn on_message(&mut self, honest: &mut Pbft, ctx: &mut Context<'_, Pbft>, from: NodeId, msg: Message) {
        if let PbftAttack::Generic(g) = self {
            return g.on_message(honest, ctx, from, msg);
        }
        let mut extra = Vec::new();
        match (&mut *self, &msg) {
            // Vote for whatever digest anyone else voted for, too.
            (PbftAttack::DoubleVote { voted }, Message::Prepare(vote) | Message::Commit(vote))
                if vote.signer == from =>
            {
                if voted.insert((vote.body.view, vote.body.seq, vote.body.digest)) {
                    let vote = vote.body.clone();
                    let prepare = honest.sign_phase(b"prepare", vote.clone());
                    let commit = honest.sign_phase(b"commit", vote);
                    extra.push(Action::Broadcast { msg: Message::Prepare(prepare) });
                    extra.push(Action::Broadcast { msg: Message::Commit(commit) });
                }
            }
            // Collect the prepares the upper half sends for the equivocal batch.
            (PbftAttack::Equivocate { equivocal }, Message::Prepare(vote)) if vote.signer == from => {
                if let Some((pp, prepares)) = equivocal.get_mut(&(vote.body.view, vote.body.seq))
                    && pp.body.digest == vote.body.digest
                    && prepares.iter().all(|p| p.signer != from)
                {
                    prepares.push(vote.clone());
                }
            }
            _ => {}
        }
        let wanted_view = match (&*self, &msg) {
            (PbftAttack::Equivocate { .. }, Message::ViewChange(vc)) => Some(vc.body.new_view),
            _ => None,
        };
        let actions = ctx.capture::<Pbft>(|c| honest.on_message(c, from, msg));
        self.emit(honest, ctx, actions);
        // Anyone's view change is a chance to certify the equivocal batch: join at once.
        if let Some(view) = wanted_view
            && (view > honest.view || (view == honest.view && !honest.in_view_change))
        {
            let actions = ctx.capture::<Pbft>(|c| honest.start_view_change(view, c));
            self.emit(honest, ctx, actions);
        }
        for action in extra {
            ctx.push(action);
        }
    }

    fn on_timer(&mut self, honest: &mut Pbft, ctx: &mut Context<'_, Pbft>, timer: PbftTimer) {
        match self {
            PbftAttack::Generic(g) => g.on_timer(honest, ctx, timer),
            PbftAttack::ViewInflation if timer == PbftTimer::ViewChange => {
                let target = honest.view + INFLATED_VIEWS;
                let actions = ctx.capture::<Pbft>(|c| honest.start_view_change(target, c));
                self.emit(honest, ctx, actions);
            }
            _ => {
                let actions = ctx.capture::<Pbft>(|c| honest.on_timer(c, timer));
                self.emit(honest, ctx, actions);
            }
        }
    }

    fn on_request(&mut self, honest: &mut Pbft, ctx: &mut Context<'_, Pbft>, request: Request) {
        match self {
            PbftAttack::Generic(g) => g.on_request(honest, ctx, request),
            _ => {
                let actions = ctx.capture::<Pbft>(|c| honest.on_request(c, request));
                self.emit(honest, ctx, actions);
            }
        }
    }

    fn as_generic(&self) -> Option<&GenericAttack> {
        match self {
            PbftAttack::Generic(g) => Some(g),
            _ => None,
        }
    }
}

impl PbftAttack {
    /// The honest step's actions, rewritten by the attack.
    fn emit(&mut self, honest: &mut Pbft, ctx: &mut Context<'_, Pbft>, actions: Actions) {
        let primary = honest.primary() == honest.id;
        for action in actions {
            match (&mut *self, action) {
                (PbftAttack::SilentPrimary, Action::Send { .. } | Action::Broadcast { .. } | Action::Reply { .. })
                    if primary => {}
                (PbftAttack::Equivocate { equivocal: sent }, Action::Broadcast { msg: Message::PrePrepare(pp) }) => {
                    let other = equivocal(honest, &pp);
                    sent.insert((pp.body.view, pp.body.seq), (other.clone(), Vec::new()));
                    for to in (0..honest.nodes).map(NodeId).filter(|to| *to != honest.id) {
                        let msg = if told_genuine(honest, to) { pp.clone() } else { other.clone() };
                        ctx.send(to, Message::PrePrepare(msg));
                    }
                }
                (PbftAttack::Equivocate { equivocal }, Action::Broadcast { msg: Message::ViewChange(vc) }) => {
                    let vc = certify_equivocal(honest, equivocal, vc);
                    ctx.broadcast(Message::ViewChange(vc));
                }
                (PbftAttack::Equivocate { .. }, Action::Broadcast { msg: Message::Prepare(vote) }) => {
                    split_vote(honest, ctx, b"prepare", vote, Message::Prepare);
                }
                (PbftAttack::Equivocate { .. }, Action::Broadcast { msg: Message::Commit(vote) }) => {
                    split_vote(honest, ctx, b"commit", vote, Message::Commit);
                }
                (PbftAttack::ForgeSignature, Action::Broadcast { msg: Message::Prepare(vote) }) => {
                    ctx.broadcast(Message::Prepare(forged(vote)));
                }
                (PbftAttack::ForgeSignature, Action::Broadcast { msg: Message::Commit(vote) }) => {
                    ctx.broadcast(Message::Commit(forged(vote)));
                }
                (PbftAttack::ForgeLog, Action::Broadcast { msg: Message::ViewChange(vc) }) => {
                    ctx.broadcast(Message::ViewChange(forged_view_change(honest, vc)));
                }
                (
                    PbftAttack::SelectiveCommit,
                    Action::Broadcast { msg: msg @ (Message::Prepare(_) | Message::Commit(_)) },
                ) => {
                    ctx.send(selective_target(honest), msg);
                }
                (PbftAttack::SelectiveCommit, Action::Broadcast { msg: Message::ViewChange(vc) }) => {
                    let mut body = vc.body;
                    body.prepared.clear();
                    ctx.broadcast(Message::ViewChange(honest.sign(body)));
                }
                (PbftAttack::Replay { sent }, Action::Broadcast { msg }) => {
                    // Each broadcast also plays back the one of 16 broadcasts ago: stale
                    // views and sequence numbers, votes already counted.
                    if sent.len() >= 16 {
                        ctx.broadcast(sent.remove(0));
                    }
                    sent.push(msg.clone());
                    ctx.broadcast(msg);
                }
                (_, other) => ctx.push(other),
            }
        }
    }
}

/// The one replica a `selective-commit` attacker votes to: the highest-numbered other
/// one (the suite's malicious replicas are the lowest-numbered).
fn selective_target(honest: &Pbft) -> NodeId {
    let last = honest.nodes - 1;
    NodeId(if honest.id.0 == last { last - 1 } else { last })
}

/// A second pre-prepare for the same (view, seq): the batch reversed, or without its
/// last request (a one-request batch becomes a null request), signed by the primary.
fn equivocal(honest: &mut Pbft, pp: &Signed<PrePrepare>) -> Signed<PrePrepare> {
    let batch = equivocal_batch(&pp.body.batch);
    honest.sign(PrePrepare { view: pp.body.view, seq: pp.body.seq, digest: batch_digest(&batch), batch })
}

/// The batch an equivocating primary tells the upper half: reordered, or, with one
/// request, empty.
fn equivocal_batch(batch: &[std::sync::Arc<Request>]) -> Vec<std::sync::Arc<Request>> {
    let mut batch = batch.to_vec();
    if batch.len() >= 2 {
        batch.reverse();
    } else {
        batch.pop();
    }
    batch
}

/// Whether an equivocating primary sends `to` the genuine pre-prepare (the lower half,
/// which holds the colluding replicas 1..f+1 too) or the equivocal one.
fn told_genuine(honest: &Pbft, to: NodeId) -> bool {
    to.0 <= honest.nodes / 2
}

/// A colluder's vote: for the genuine batch to the lower half, for the equivocal one
/// to the upper half, so that neither half hears it vote against what it was told.
fn split_vote(
    honest: &mut Pbft,
    ctx: &mut Context<'_, Pbft>,
    phase: &'static [u8],
    vote: Signed<Vote>,
    wrap: fn(Signed<Vote>) -> Message,
) {
    let genuine = honest.log.get(&vote.body.seq).and_then(|slot| slot.pre_prepare.as_ref());
    let Some(genuine) = genuine.filter(|pp| pp.body.digest == vote.body.digest) else {
        // Not a batch it can pair with an equivocal one (a retransmitted or re-proposed
        // slot): vote honestly.
        ctx.broadcast(wrap(vote));
        return;
    };
    let digest = batch_digest(&equivocal_batch(&genuine.body.batch));
    let other = honest.sign_phase(phase, Vote { digest, ..vote.body.clone() });
    for to in (0..honest.nodes).map(NodeId).filter(|to| *to != honest.id) {
        let msg = if told_genuine(honest, to) { vote.clone() } else { other.clone() };
        ctx.send(to, wrap(msg));
    }
}

/// `vc` with a certificate for each equivocal batch above its checkpoint in place of
/// the genuine one: the equivocator's own pre-prepare and the prepares collected for it.
fn certify_equivocal(honest: &mut Pbft, equivocal: &EquivocalBatches, vc: Signed<ViewChange>) -> Signed<ViewChange> {
    let mut body = vc.body;
    for ((_, seq), (pre_prepare, prepares)) in equivocal {
        // Only a certificate the others will accept: a refused one would get the whole
        // VIEW-CHANGE refused, and with it the equivocator's say in the new view.
        if *seq <= body.stable_seq || prepares.len() < honest.prepares_needed() {
            continue;
        }
        body.prepared.retain(|c| c.pre_prepare.body.seq != *seq);
        body.prepared.push(crate::PreparedCert { pre_prepare: pre_prepare.clone(), prepares: prepares.clone() });
    }
    body.prepared.sort_by_key(|c| c.pre_prepare.body.seq);
    honest.sign(body)
}

/// A vote that claims another replica signed it: its own signature on altered content
/// under that replica's name.
fn forged(mut vote: Signed<Vote>) -> Signed<Vote> {
    vote.signer = NodeId(vote.signer.0 ^ 1);
    vote
}

/// A VIEW-CHANGE claiming the next sequence number prepared with a digest of the
/// attacker's choosing, "certified" by a pre-prepare and prepares it signed itself.
fn forged_view_change(honest: &mut Pbft, vc: Signed<ViewChange>) -> Signed<ViewChange> {
    let mut body = vc.body;
    let seq = body.prepared.iter().map(|c| c.pre_prepare.body.seq).chain([body.stable_seq]).max().unwrap_or(0) + 1;
    let view = body.new_view.saturating_sub(1);
    let digest = Digest(*blake3::hash(b"forged by a malicious replica").as_bytes());
    let pre_prepare = honest.sign(PrePrepare { view, seq, digest, batch: Vec::new() });
    let prepares: Vec<Signed<Vote>> =
        (0..2 * honest.f).map(|_| honest.sign_phase(b"prepare", Vote { view, seq, digest })).collect();
    body.prepared.push(crate::PreparedCert { pre_prepare, prepares });
    honest.sign(body)
}
