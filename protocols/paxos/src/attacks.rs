//! Malicious Multi-Paxos acceptors and proposers. Paxos's safety rests on two promises
//! an acceptor keeps: it never accepts below a ballot it promised, and a promise
//! reports truthfully what it accepted, so a new leader re-proposes any value that may
//! have been chosen. Each attack breaks one of them, holding nothing but its own node:
//!
//! - `promise-all`: promises every ballot it is asked for, reporting nothing accepted,
//!   and accepts whatever any proposer sends. A new leader whose majority includes it
//!   can miss a chosen value and choose another in its slot: the chosen value changes
//!   (State Machine Safety).
//! - `forge-accepted`: in every promise, claims to have accepted fabricated commands in
//!   the next slots at an enormous ballot, so the new leader re-proposes the forgeries
//!   over whatever was really chosen there.
//! - `ballot-inflation`: starts every phase 1 with a ballot 1,000 rounds ahead, so each
//!   candidacy pre-empts the current leader: liveness, not safety.
//! - any [`GenericAttack`] (`crash`, `silent`, `selective-drop`, `delay`).
//!
//! What an adversary gains is the same as against Raft: a write acknowledged to a client
//! and later undone, or two learners disagreeing on what a slot holds.

use crate::{Ballot, Message, Paxos, PaxosTimer, PromisedSlot, Value};
use qlab_core::adversary::{Adversary, AttackParams, Faulty, GenericAttack};
use qlab_core::{Action, Context, NodeId, Op, Protocol, Request};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a malicious Multi-Paxos replica does; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaxosAttack {
    PromiseAll,
    ForgeAccepted,
    BallotInflation,
    Generic(GenericAttack),
}

/// A Multi-Paxos replica that is honest or runs a [`PaxosAttack`].
pub type MaliciousPaxos = Faulty<Paxos, PaxosAttack>;

impl PaxosAttack {
    /// Attack names as experiment files write them.
    pub const NAMES: &'static [&'static str] =
        &["promise-all", "forge-accepted", "ballot-inflation", "crash", "silent", "selective-drop", "delay"];

    /// The attack called `name`; `params` configure the generic ones that need them.
    pub fn from_name(name: &str, params: &AttackParams) -> Option<Self> {
        Some(match name {
            "promise-all" => PaxosAttack::PromiseAll,
            "forge-accepted" => PaxosAttack::ForgeAccepted,
            "ballot-inflation" => PaxosAttack::BallotInflation,
            _ => return GenericAttack::from_name(name, params).map(PaxosAttack::Generic),
        })
    }
}

/// The round `forge-accepted` claims its forgeries were accepted in.
const FORGED_ROUND: u64 = 1 << 40;
/// Slots past the candidate's commit point that `forge-accepted` claims.
const FORGED_SLOTS: u64 = 3;

impl Adversary<Paxos> for PaxosAttack {
    fn on_start(&mut self, honest: &mut Paxos, ctx: &mut Context<'_, Paxos>) {
        match self {
            PaxosAttack::Generic(g) => g.on_start(honest, ctx),
            _ => honest.on_start(ctx),
        }
    }

    fn on_message(&mut self, honest: &mut Paxos, ctx: &mut Context<'_, Paxos>, from: NodeId, msg: Message) {
        match self {
            PaxosAttack::Generic(g) => g.on_message(honest, ctx, from, msg),
            PaxosAttack::PromiseAll => match msg {
                Message::Prepare { ballot, commit } => {
                    let actions =
                        ctx.capture::<Paxos>(|c| honest.on_message(c, from, Message::Prepare { ballot, commit }));
                    for action in actions {
                        match action {
                            Action::Send { to, msg: Message::Promise { .. } | Message::Nack { .. } } if to == from => {}
                            other => ctx.push(other),
                        }
                    }
                    ctx.send(from, Message::Promise { ballot, accepted: Vec::new(), checkpoint: None });
                }
                Message::Accept { ballot, first_slot, values, commit } => {
                    let count = values.len() as u64;
                    let actions = ctx.capture::<Paxos>(|c| {
                        honest.on_message(c, from, Message::Accept { ballot, first_slot, values, commit })
                    });
                    for action in actions {
                        match action {
                            Action::Send { to, msg: Message::Accepted { .. } | Message::Nack { .. } } if to == from => {
                            }
                            other => ctx.push(other),
                        }
                    }
                    ctx.send(from, Message::Accepted { ballot, first_slot, count });
                }
                msg => honest.on_message(ctx, from, msg),
            },
            PaxosAttack::ForgeAccepted => {
                let commit = match &msg {
                    Message::Prepare { commit, .. } => Some(*commit),
                    _ => None,
                };
                let actions = ctx.capture::<Paxos>(|c| honest.on_message(c, from, msg));
                for action in actions {
                    match (action, commit) {
                        (
                            Action::Send { to, msg: Message::Promise { ballot, mut accepted, checkpoint } },
                            Some(commit),
                        ) => {
                            accepted.retain(|s| s.slot <= commit || s.chosen);
                            for slot in commit + 1..=commit + FORGED_SLOTS {
                                accepted.retain(|s| s.slot != slot);
                                accepted.push(PromisedSlot {
                                    slot,
                                    ballot: Ballot { round: FORGED_ROUND, node: honest.id },
                                    value: forged_value(honest.id, slot),
                                    chosen: false,
                                });
                            }
                            accepted.sort_by_key(|s| s.slot);
                            ctx.send(to, Message::Promise { ballot, accepted, checkpoint });
                        }
                        (other, _) => ctx.push(other),
                    }
                }
            }
            PaxosAttack::BallotInflation => honest.on_message(ctx, from, msg),
        }
    }

    fn on_timer(&mut self, honest: &mut Paxos, ctx: &mut Context<'_, Paxos>, timer: PaxosTimer) {
        match self {
            PaxosAttack::Generic(g) => g.on_timer(honest, ctx, timer),
            PaxosAttack::BallotInflation => {
                if timer == PaxosTimer::LeaderTimeout {
                    honest.round_seen = honest.round_seen.max(honest.promised.round) + 1_000;
                }
                honest.on_timer(ctx, timer);
            }
            _ => honest.on_timer(ctx, timer),
        }
    }

    fn on_request(&mut self, honest: &mut Paxos, ctx: &mut Context<'_, Paxos>, request: Request) {
        match self {
            PaxosAttack::Generic(g) => g.on_request(honest, ctx, request),
            _ => honest.on_request(ctx, request),
        }
    }

    fn as_generic(&self) -> Option<&GenericAttack> {
        match self {
            PaxosAttack::Generic(g) => Some(g),
            _ => None,
        }
    }
}

/// A command nobody sent, for slot `slot`.
fn forged_value(by: NodeId, slot: u64) -> Value {
    let request = Request::new(
        qlab_core::ClientId(u64::MAX - by.0 as u64),
        slot,
        Op::Put { key: 0, value: format!("forged by {by} for slot {slot}").into_bytes() },
    );
    Value::Commands(vec![Arc::new(request)])
}
