//! Malicious Raft replicas, to show what a crash-fault protocol does when one of its
//! nodes lies. Raft's safety argument (§5.4) assumes every node follows the protocol:
//! a vote is given once per term, a candidate's log claim is true, a leader's entries
//! are what clients sent, an acknowledgement means the entry is on disk. Each attack
//! breaks one of those assumptions, holding nothing but its own node:
//!
//! - `double-vote`: grants every RequestVote it sees, whatever it voted before in the
//!   term. Two candidates of one term can then both count it and both win: two
//!   leaders in a term (Election Safety), each committing its own entries.
//! - `lie-log-freshness`: ignores its leaders (so it falls behind and times out) and
//!   claims an enormous last log term in every RequestVote, so the §5.4.1 election
//!   restriction lets it win with a short log. As leader it overwrites what followers
//!   hold beyond its log, committed entries included (Leader Completeness, State
//!   Machine Safety).
//! - `forge-log`: as leader, sends every follower its own fabricated version of each
//!   new command, so different followers commit different commands at one index; as
//!   follower, acknowledges entries it never stored, so the leader counts it towards
//!   a commit that only the leader holds, and a later leader can lose the entry.
//! - `term-inflation`: adds 1,000 to its term at every election timeout. It cannot win
//!   (its log is honest) but every candidacy makes the leader step down: liveness,
//!   not safety, is what a term-inflating node takes.
//! - any [`GenericAttack`] (`crash`, `silent`, `selective-drop`, `delay`).
//!
//! A real adversary gains from these the power to fork the replicated state: to show
//! one client a write as committed and then lose it, or to serve two clients two
//! different histories.

use crate::{Entry, Message, Payload, Raft, RaftTimer, Role};
use qlab_core::adversary::{Adversary, AttackParams, Faulty, GenericAttack};
use qlab_core::{Action, Context, NodeId, Op, Protocol, Request};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a malicious Raft replica does; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RaftAttack {
    DoubleVote,
    LieLogFreshness,
    ForgeLog,
    TermInflation,
    Generic(GenericAttack),
}

/// A Raft replica that is honest or runs a [`RaftAttack`].
pub type MaliciousRaft = Faulty<Raft, RaftAttack>;

impl RaftAttack {
    /// Attack names as experiment files write them.
    pub const NAMES: &'static [&'static str] = &[
        "double-vote",
        "lie-log-freshness",
        "forge-log",
        "term-inflation",
        "crash",
        "silent",
        "selective-drop",
        "delay",
    ];

    /// The attack called `name`; `params` configure the generic ones that need them.
    pub fn from_name(name: &str, params: &AttackParams) -> Option<Self> {
        Some(match name {
            "double-vote" => RaftAttack::DoubleVote,
            "lie-log-freshness" => RaftAttack::LieLogFreshness,
            "forge-log" => RaftAttack::ForgeLog,
            "term-inflation" => RaftAttack::TermInflation,
            _ => return GenericAttack::from_name(name, params).map(RaftAttack::Generic),
        })
    }
}

/// The term claimed by `lie-log-freshness`: above any real term, far from overflow.
const FRESH_LIE_TERM: u64 = 1 << 40;

impl Adversary<Raft> for RaftAttack {
    fn on_start(&mut self, honest: &mut Raft, ctx: &mut Context<'_, Raft>) {
        match self {
            RaftAttack::Generic(g) => g.on_start(honest, ctx),
            _ => honest.on_start(ctx),
        }
    }

    fn on_message(&mut self, honest: &mut Raft, ctx: &mut Context<'_, Raft>, from: NodeId, msg: Message) {
        match self {
            RaftAttack::Generic(g) => g.on_message(honest, ctx, from, msg),
            RaftAttack::DoubleVote => {
                let is_vote_request = matches!(msg, Message::RequestVote { .. });
                let actions = ctx.capture::<Raft>(|c| honest.on_message(c, from, msg));
                for action in actions {
                    match action {
                        Action::Send { to, msg: Message::VoteResponse { term, .. } } if is_vote_request => {
                            ctx.send(to, Message::VoteResponse { term, granted: true });
                        }
                        other => ctx.push(other),
                    }
                }
            }
            RaftAttack::LieLogFreshness => {
                // Deaf to leaders, so it keeps timing out and campaigning with a stale log.
                if matches!(msg, Message::AppendEntries { .. } | Message::Heartbeat { .. })
                    && honest.role != Role::Leader
                {
                    return;
                }
                let actions = ctx.capture::<Raft>(|c| honest.on_message(c, from, msg));
                push_lying(ctx, actions);
            }
            RaftAttack::ForgeLog => match msg {
                Message::AppendEntries { term, prev_log_index, prev_log_term, entries, leader_commit }
                    if !entries.is_empty() && honest.role != Role::Leader =>
                {
                    // Keep the leader's term and timer, store nothing, acknowledge all.
                    let last = prev_log_index + entries.len() as u64;
                    let actions = ctx.capture::<Raft>(|c| {
                        honest.on_message(
                            c,
                            from,
                            Message::AppendEntries {
                                term,
                                prev_log_index,
                                prev_log_term,
                                entries: vec![],
                                leader_commit,
                            },
                        )
                    });
                    for action in actions {
                        match action {
                            Action::Send { to, msg: Message::AppendResponse { .. } } => ctx.send(
                                to,
                                Message::AppendResponse {
                                    term: honest.current_term,
                                    success: true,
                                    match_index: last,
                                    conflict_term: None,
                                    conflict_index: 0,
                                },
                            ),
                            other => ctx.push(other),
                        }
                    }
                }
                msg => {
                    let actions = ctx.capture::<Raft>(|c| honest.on_message(c, from, msg));
                    push_forged(honest, ctx, actions);
                }
            },
            RaftAttack::TermInflation => honest.on_message(ctx, from, msg),
        }
    }

    fn on_timer(&mut self, honest: &mut Raft, ctx: &mut Context<'_, Raft>, timer: RaftTimer) {
        match self {
            RaftAttack::Generic(g) => g.on_timer(honest, ctx, timer),
            RaftAttack::LieLogFreshness => {
                let actions = ctx.capture::<Raft>(|c| honest.on_timer(c, timer));
                push_lying(ctx, actions);
            }
            RaftAttack::ForgeLog => {
                let actions = ctx.capture::<Raft>(|c| honest.on_timer(c, timer));
                push_forged(honest, ctx, actions);
            }
            RaftAttack::TermInflation => {
                if timer == RaftTimer::Election && honest.role != Role::Leader {
                    honest.current_term += 1_000;
                }
                honest.on_timer(ctx, timer);
            }
            RaftAttack::DoubleVote => honest.on_timer(ctx, timer),
        }
    }

    fn on_request(&mut self, honest: &mut Raft, ctx: &mut Context<'_, Raft>, request: Request) {
        match self {
            RaftAttack::Generic(g) => g.on_request(honest, ctx, request),
            RaftAttack::ForgeLog => {
                let actions = ctx.capture::<Raft>(|c| honest.on_request(c, request));
                push_forged(honest, ctx, actions);
            }
            _ => honest.on_request(ctx, request),
        }
    }

    fn as_generic(&self) -> Option<&GenericAttack> {
        match self {
            RaftAttack::Generic(g) => Some(g),
            _ => None,
        }
    }
}

/// `lie-log-freshness`: every RequestVote claims a log fresher than anyone's.
fn push_lying(ctx: &mut Context<'_, Raft>, actions: Vec<Action<Message, RaftTimer, crate::Record>>) {
    for action in actions {
        match action {
            Action::Broadcast { msg: Message::RequestVote { term, .. } } => ctx.broadcast(Message::RequestVote {
                term,
                last_log_index: FRESH_LIE_TERM,
                last_log_term: FRESH_LIE_TERM,
            }),
            other => ctx.push(other),
        }
    }
}

/// `forge-log` as leader: each follower gets its own fabrication of every command.
fn push_forged(honest: &Raft, ctx: &mut Context<'_, Raft>, actions: Vec<Action<Message, RaftTimer, crate::Record>>) {
    let forge = |entries: &[Entry], to: NodeId| -> Vec<Entry> {
        entries
            .iter()
            .map(|entry| match &entry.payload {
                Payload::Command(request) => {
                    let mut forged = Request::new(
                        request.client,
                        request.seq,
                        Op::Put { key: 0, value: format!("forged by {} for {to}", honest.id).into_bytes() },
                    );
                    forged.signature.clone_from(&request.signature);
                    Entry { term: entry.term, index: entry.index, payload: Payload::Command(Arc::new(forged)) }
                }
                Payload::Noop => entry.clone(),
            })
            .collect()
    };
    let rewrite = |msg: Message, to: NodeId| match msg {
        Message::AppendEntries { term, prev_log_index, prev_log_term, entries, leader_commit }
            if honest.role == Role::Leader =>
        {
            Message::AppendEntries { term, prev_log_index, prev_log_term, entries: forge(&entries, to), leader_commit }
        }
        other => other,
    };
    for action in actions {
        match action {
            Action::Send { to, msg } => ctx.send(to, rewrite(msg, to)),
            Action::Broadcast { msg } => {
                for to in honest.peers() {
                    ctx.send(to, rewrite(msg.clone(), to));
                }
            }
            other => ctx.push(other),
        }
    }
}
