//! Malicious replicas: an honest protocol node wrapped by an attack.
//!
//! A Byzantine replica is modelled the way the fault model describes it: it runs the
//! honest code where that suits it and deviates where it gains something: it may drop,
//! delay, rewrite, duplicate, replay or invent messages, but it holds only its own keys,
//! so whatever it signs is signed as itself. [`Faulty`] is a [`Protocol`] whose nodes
//! are honest unless the configuration names them malicious; a malicious one hands
//! every input to its [`Adversary`], which decides what the honest node inside sees
//! and what of its output leaves. Messages are the honest protocol's own type, so
//! honest and malicious replicas share one simulation or one QUIC cluster.
//!
//! A malicious replica's checker events are dropped: the checkers judge what the
//! *honest* replicas did (two honest replicas applying different commands is a safety
//! violation; a liar contradicting itself is not news). Each protocol's attacks live
//! beside it (`attacks.rs`) and may read the honest node's private state, as an
//! adversary that owns the machine can. [`GenericAttack`]s work on any protocol.

use crate::{Action, Context, Nanos, NodeId, Protocol, Request};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a malicious replica does with the honest node `honest` it wraps. Every method
/// defaults to behaving honestly; an attack overrides where it deviates, typically by
/// running the honest handler with [`Context::capture`] and rewriting the result.
pub trait Adversary<P: Protocol>: Clone + fmt::Debug {
    fn on_start(&mut self, honest: &mut P, ctx: &mut Context<'_, P>) {
        honest.on_start(ctx);
    }
    fn on_message(&mut self, honest: &mut P, ctx: &mut Context<'_, P>, from: NodeId, msg: P::Message) {
        honest.on_message(ctx, from, msg);
    }
    fn on_timer(&mut self, honest: &mut P, ctx: &mut Context<'_, P>, timer: P::Timer) {
        honest.on_timer(ctx, timer);
    }
    fn on_request(&mut self, honest: &mut P, ctx: &mut Context<'_, P>, request: Request) {
        honest.on_request(ctx, request);
    }
    /// The protocol-independent attack this is, if it is one (its drop and delay
    /// filters then apply).
    fn as_generic(&self) -> Option<&GenericAttack> {
        None
    }
    /// Nothing this node sends reaches `to` (applied after the step, broadcasts split).
    fn drops_to(&self, to: NodeId) -> bool {
        matches!(self.as_generic(), Some(GenericAttack::SelectiveDrop { to: victims }) if victims.contains(&to))
    }
    /// Hold every outgoing message back this long (released at the first step after).
    fn holds_ns(&self) -> Nanos {
        match self.as_generic() {
            Some(GenericAttack::Delay { delay_ns }) => *delay_ns,
            _ => 0,
        }
    }
}

/// Attacks that need no knowledge of the protocol; each protocol's attack type wraps
/// them and delegates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenericAttack {
    /// Stops for good: takes no input and sends nothing (a crash the others cannot tell
    /// from a slow node).
    Crash,
    /// Runs the protocol but sends nothing to anyone, clients included.
    Silent,
    /// Runs honestly except that nothing reaches the replicas in `to`.
    SelectiveDrop { to: Vec<NodeId> },
    /// Holds every outgoing message back for at least `delay_ns` (released at the first
    /// step after that; the node's own timers and traffic keep steps coming).
    Delay { delay_ns: Nanos },
}

impl<P: Protocol> Adversary<P> for GenericAttack {
    fn on_start(&mut self, honest: &mut P, ctx: &mut Context<'_, P>) {
        self.filtered(ctx, |c| honest.on_start(c));
    }
    fn on_message(&mut self, honest: &mut P, ctx: &mut Context<'_, P>, from: NodeId, msg: P::Message) {
        self.filtered(ctx, |c| honest.on_message(c, from, msg));
    }
    fn on_timer(&mut self, honest: &mut P, ctx: &mut Context<'_, P>, timer: P::Timer) {
        self.filtered(ctx, |c| honest.on_timer(c, timer));
    }
    fn on_request(&mut self, honest: &mut P, ctx: &mut Context<'_, P>, request: Request) {
        self.filtered(ctx, |c| honest.on_request(c, request));
    }
    fn as_generic(&self) -> Option<&GenericAttack> {
        Some(self)
    }
}

/// What a generic attack needs besides its name: whom `selective-drop` starves and how
/// long `delay` holds a message. Ignored by the attacks that take no parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttackParams {
    pub drop_to: Vec<NodeId>,
    pub delay_ns: Nanos,
}

impl GenericAttack {
    /// Generic attack names as experiment files write them.
    pub const NAMES: &'static [&'static str] = &["crash", "silent", "selective-drop", "delay"];

    /// The generic attack called `name`, with its parameters from `params`.
    pub fn from_name(name: &str, params: &AttackParams) -> Option<Self> {
        Some(match name {
            "crash" => GenericAttack::Crash,
            "silent" => GenericAttack::Silent,
            "selective-drop" => GenericAttack::SelectiveDrop { to: params.drop_to.clone() },
            "delay" => GenericAttack::Delay { delay_ns: params.delay_ns },
            _ => return None,
        })
    }

    /// The honest step, minus what this attack suppresses.
    fn filtered<P: Protocol>(&self, ctx: &mut Context<'_, P>, step: impl FnOnce(&mut Context<'_, P>)) {
        match self {
            GenericAttack::Crash => {}
            GenericAttack::Silent => {
                for action in ctx.capture::<P>(step) {
                    if !matches!(action, Action::Send { .. } | Action::Broadcast { .. } | Action::Reply { .. }) {
                        ctx.push(action);
                    }
                }
            }
            GenericAttack::SelectiveDrop { .. } | GenericAttack::Delay { .. } => step(ctx),
        }
    }
}

/// One malicious replica in a [`FaultyConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaliciousNode<A> {
    pub node: NodeId,
    pub attack: A,
    /// The attack runs from this time on (before it the node is honest)...
    #[serde(default)]
    pub from_ns: Nanos,
    /// ...until this time, if set (after it the node follows the protocol again, from
    /// whatever state the attack left it in; its events stay unchecked).
    #[serde(default)]
    pub until_ns: Option<Nanos>,
}

/// The honest configuration plus who is malicious and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultyConfig<C, A> {
    pub honest: C,
    #[serde(default = "Vec::new")]
    pub malicious: Vec<MaliciousNode<A>>,
}

impl<C, A> FaultyConfig<C, A> {
    pub fn honest(honest: C) -> Self {
        FaultyConfig { honest, malicious: Vec::new() }
    }
}

type Held<P> = Vec<(Nanos, NodeId, <P as Protocol>::Message)>;

/// A replica of `P` that is honest or, if its configuration says so, runs attack `A`.
#[derive(Clone, Debug)]
pub struct Faulty<P: Protocol, A> {
    pub honest: P,
    pub attack: Option<MaliciousNode<A>>,
    nodes: u32,
    /// Messages a delaying attack holds: (release time, destination, message).
    held: Held<P>,
}

impl<P: Protocol, A: Adversary<P>> Faulty<P, A> {
    /// Whether this replica is malicious (for the whole run: its events are never checked).
    pub fn is_malicious(&self) -> bool {
        self.attack.is_some()
    }

    /// One step: honest code for an honest node or a malicious one outside its attack
    /// window, the adversary inside it; a malicious node's events are dropped and its
    /// sends go through the attack's drop and delay filters.
    fn step(&mut self, ctx: &mut Context<'_, Self>, run: impl FnOnce(Option<&mut A>, &mut P, &mut Context<'_, P>)) {
        let Some(malicious) = self.attack.as_mut() else {
            run(None, &mut self.honest, &mut ctx.reborrow::<P>());
            return;
        };
        let now = ctx.now();
        let active = now >= malicious.from_ns && malicious.until_ns.is_none_or(|until| now < until);
        let attack = active.then_some(&mut malicious.attack);
        let honest = &mut self.honest;
        let actions = ctx.capture::<P>(|inner| run(attack, honest, inner));
        let me = self.honest.id();
        let hold_ns = if active { malicious.attack.holds_ns() } else { 0 };
        let dropped: Vec<bool> = (0..self.nodes).map(|to| active && malicious.attack.drops_to(NodeId(to))).collect();
        let dropped = |to: NodeId| dropped.get(to.0 as usize).copied().unwrap_or(false);
        for action in actions {
            match action {
                Action::Observe { .. } => {}
                Action::Send { to, msg } => {
                    if !dropped(to) {
                        self.held.push((now + hold_ns, to, msg));
                    }
                }
                Action::Broadcast { msg } => {
                    if (0..self.nodes).map(NodeId).any(|to| to != me && dropped(to)) {
                        for to in (0..self.nodes).map(NodeId).filter(|to| *to != me && !dropped(*to)) {
                            self.held.push((now + hold_ns, to, msg.clone()));
                        }
                    } else if hold_ns == 0 {
                        ctx.push(Action::Broadcast { msg });
                    } else {
                        for to in (0..self.nodes).map(NodeId).filter(|to| *to != me) {
                            self.held.push((now + hold_ns, to, msg.clone()));
                        }
                    }
                }
                other => ctx.push(other),
            }
        }
        // Release what has waited long enough, in the order it was sent.
        let (due, keep): (Held<P>, Held<P>) =
            std::mem::take(&mut self.held).into_iter().partition(|(at, ..)| *at <= now);
        self.held = keep;
        for (_, to, msg) in due {
            ctx.push(Action::Send { to, msg });
        }
    }
}

impl<P: Protocol, A: Adversary<P>> Protocol for Faulty<P, A> {
    type Message = P::Message;
    type Timer = P::Timer;
    type Record = P::Record;
    type Config = FaultyConfig<P::Config, A>;

    fn new(config: &Self::Config, id: NodeId, nodes: u32) -> Self {
        Faulty {
            honest: P::new(&config.honest, id, nodes),
            attack: config.malicious.iter().find(|m| m.node == id).cloned(),
            nodes,
            held: Vec::new(),
        }
    }

    fn restore(config: &Self::Config, id: NodeId, nodes: u32, records: &[Self::Record]) -> Self {
        Faulty {
            honest: P::restore(&config.honest, id, nodes, records),
            attack: config.malicious.iter().find(|m| m.node == id).cloned(),
            nodes,
            held: Vec::new(),
        }
    }

    fn id(&self) -> NodeId {
        self.honest.id()
    }

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        self.step(ctx, |attack, honest, c| match attack {
            Some(a) => a.on_start(honest, c),
            None => honest.on_start(c),
        })
    }

    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Self::Message) {
        self.step(ctx, |attack, honest, c| match attack {
            Some(a) => a.on_message(honest, c, from, msg),
            None => honest.on_message(c, from, msg),
        })
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: Self::Timer) {
        self.step(ctx, |attack, honest, c| match attack {
            Some(a) => a.on_timer(honest, c, timer),
            None => honest.on_timer(c, timer),
        })
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, request: Request) {
        self.step(ctx, |attack, honest, c| match attack {
            Some(a) => a.on_request(honest, c, request),
            None => honest.on_request(c, request),
        })
    }

    fn on_admin(&mut self, ctx: &mut Context<'_, Self>, command: crate::AdminCommand) {
        // A malicious replica obeys the operator like an honest one; what it then sends
        // goes through the attack's filters like everything else.
        self.step(ctx, |_, honest, c| honest.on_admin(c, command))
    }

    fn on_input_drained(&mut self, ctx: &mut Context<'_, Self>) {
        // What the honest code left waiting goes out through the attack's filters.
        self.step(ctx, |_, honest, c| honest.on_input_drained(c))
    }

    fn message_kind(msg: &Self::Message) -> &'static str {
        P::message_kind(msg)
    }

    fn supersedes_earlier_records(record: &Self::Record) -> bool {
        P::supersedes_earlier_records(record)
    }

    fn is_leader(&self) -> bool {
        self.honest.is_leader()
    }

    fn epoch(&self) -> u64 {
        self.honest.epoch()
    }

    fn coverage_marks() -> &'static [&'static crate::Mark] {
        P::coverage_marks()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.honest.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Outbox};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A toy protocol: on start it broadcasts, sets a timer and reports an event; it
    /// answers every message to its sender.
    #[derive(Clone, Debug)]
    struct Echo {
        id: NodeId,
    }

    impl Protocol for Echo {
        type Message = u32;
        type Timer = u8;
        type Record = ();
        type Config = ();
        fn new(_: &(), id: NodeId, _: u32) -> Self {
            Echo { id }
        }
        fn restore(_: &(), id: NodeId, _: u32, _: &[()]) -> Self {
            Echo { id }
        }
        fn id(&self) -> NodeId {
            self.id
        }
        fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
            ctx.broadcast(1);
            ctx.set_timer(0, 10);
            ctx.observe(Event::LeaderKnown { epoch: 1, leader: self.id });
        }
        fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: u32) {
            ctx.send(from, msg + 1);
        }
        fn on_timer(&mut self, _: &mut Context<'_, Self>, _: u8) {}
        fn on_request(&mut self, _: &mut Context<'_, Self>, _: Request) {}
        fn message_kind(_: &u32) -> &'static str {
            "n"
        }
        fn is_leader(&self) -> bool {
            false
        }
        fn epoch(&self) -> u64 {
            0
        }
    }

    type Node = Faulty<Echo, GenericAttack>;

    fn node(attack: Option<GenericAttack>, from_ns: Nanos) -> Node {
        let malicious = attack.map(|attack| MaliciousNode { node: NodeId(0), attack, from_ns, until_ns: None });
        Node::new(&FaultyConfig { honest: (), malicious: malicious.into_iter().collect() }, NodeId(0), 4)
    }

    /// One step at `now`; the actions as text, for comparison.
    fn step(node: &mut Node, now: Nanos, f: impl FnOnce(&mut Node, &mut Context<'_, Node>)) -> Vec<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut outbox = Outbox::default();
        f(node, &mut Context::new(now, &mut rng, &mut outbox));
        outbox.actions.iter().map(|a| format!("{a:?}")).collect()
    }

    #[test]
    fn an_honest_node_is_untouched() {
        let actions = step(&mut node(None, 0), 0, |n, c| n.on_start(c));
        assert_eq!(
            actions,
            [
                "Broadcast { msg: 1 }",
                "SetTimer { timer: 0, after: 10 }",
                "Observe { event: LeaderKnown { epoch: 1, leader: NodeId(0) } }"
            ]
        );
    }

    #[test]
    fn generic_attacks_filter_what_leaves() {
        // Before its window opens a malicious node acts honestly, but is never checked.
        let before = step(&mut node(Some(GenericAttack::Silent), 5), 0, |n, c| n.on_start(c));
        assert_eq!(before, ["Broadcast { msg: 1 }", "SetTimer { timer: 0, after: 10 }"]);
        let silent = step(&mut node(Some(GenericAttack::Silent), 0), 0, |n, c| n.on_start(c));
        assert_eq!(silent, ["SetTimer { timer: 0, after: 10 }"]);
        let crashed = step(&mut node(Some(GenericAttack::Crash), 0), 0, |n, c| n.on_start(c));
        assert!(crashed.is_empty());
        let dropping =
            step(&mut node(Some(GenericAttack::SelectiveDrop { to: vec![NodeId(2)] }), 0), 0, |n, c| n.on_start(c));
        assert_eq!(
            dropping,
            ["SetTimer { timer: 0, after: 10 }", "Send { to: NodeId(1), msg: 1 }", "Send { to: NodeId(3), msg: 1 }"]
        );
    }

    #[test]
    fn delay_holds_messages_until_a_step_after_their_time() {
        let mut n = node(Some(GenericAttack::Delay { delay_ns: 5 }), 0);
        let first = step(&mut n, 0, |n, c| n.on_message(c, NodeId(3), 7));
        assert!(first.is_empty(), "held: {first:?}");
        let early = step(&mut n, 4, |n, c| n.on_timer(c, 0));
        assert!(early.is_empty(), "still held at 4 ns: {early:?}");
        let due = step(&mut n, 5, |n, c| n.on_timer(c, 0));
        assert_eq!(due, ["Send { to: NodeId(3), msg: 8 }"]);
    }
}
