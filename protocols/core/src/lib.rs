//! # qlab-core: the vocabulary every quorumlab protocol and driver shares
//!
//! A consensus protocol in quorumlab is a *sans-IO* deterministic state machine: it
//! never reads a clock, opens a socket, spawns a task or draws from a global RNG.
//! Everything comes in as a call on the [`Protocol`] trait (`on_start`, `on_message`,
//! `on_timer`, `on_request`) and everything goes out through the [`Context`]
//! handed to that call: messages, timers with exact nanosecond durations, records to
//! persist, replies to clients and [`Event`]s for the safety checkers.
//!
//! The driver (the simulator in `qlab-sim`, the QUIC runtime later) drains the
//! context's [`Outbox`] after each step and must honour one contract, the same one
//! etcd raft's `Ready` imposes: **the records a step persisted are durable before
//! the messages and replies of that step leave the node.** On a crash a node keeps
//! only its persisted records and is rebuilt from them by [`Protocol::restore`].
//!
//! Besides the trait this crate holds the parts every protocol shares:
//! ids and time ([`NodeId`], [`ClientId`], [`Nanos`]), client [`Request`]s and
//! [`Reply`]s, the replicated key-value state machine with its session table
//! ([`kv::KvStore`]), and blake3 digests with the hash chain that lets checkers
//! compare whole committed prefixes in constant space ([`digest`]), and the read modes
//! the leader-based protocols offer besides reading through the log ([`reads`]), and the
//! quorum arithmetic every leader counts acknowledgements with ([`quorum`]), and the rule
//! by which a restart keeps or refuses a damaged log, which both drivers follow
//! ([`durability`]), and the renaming of replicas a state-space search reduces by
//! ([`symmetry`]).

pub mod adversary;
pub mod batching;
pub mod digest;
pub mod durability;
pub mod kv;
pub mod leader_client;
pub mod quorum;
pub mod reads;
pub mod symmetry;
pub mod wire;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

pub use digest::Digest;
pub use kv::{KvStore, Op, OpResult};
pub use quorum::majority;

/// Time in nanoseconds since the start of a run (virtual in the simulator,
/// monotonic in real mode).
pub type Nanos = u64;

/// Nanoseconds in one millisecond; `ms(150)` reads better than `150_000_000`.
pub const NANOS_PER_MS: u64 = 1_000_000;

/// Milliseconds to [`Nanos`].
pub const fn ms(milliseconds: u64) -> Nanos {
    milliseconds * NANOS_PER_MS
}

/// [`Nanos`] to fractional milliseconds, for reporting.
pub fn nanos_to_ms(nanos: Nanos) -> f64 {
    nanos as f64 / NANOS_PER_MS as f64
}

/// A replica's identity: `0..nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A client's identity. Clients number their requests `1, 2, 3, ...`; the pair
/// (client, seq) names an operation across retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A client operation as it reaches a replica.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    pub client: ClientId,
    /// Per-client sequence number, starting at 1; retries reuse it.
    pub seq: u64,
    pub op: Op,
    /// The client's signature over [`Request::digest`], for protocols whose replicas
    /// must not be able to invent requests (PBFT); empty for the crash-fault ones. Not
    /// part of the digest.
    #[serde(default)]
    pub signature: Vec<u8>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{} {:?}", self.client, self.seq, self.op)?;
        if !self.signature.is_empty() {
            write!(f, " signed")?;
        }
        Ok(())
    }
}

impl Request {
    /// An unsigned request (what the crash-fault protocols take).
    pub fn new(client: ClientId, seq: u64, op: Op) -> Self {
        Request { client, seq, op, signature: Vec::new() }
    }

    /// Digest of the request, used as the log entry's identity by the checkers.
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        self.hash_into(&mut hasher);
        Digest(*hasher.finalize().as_bytes())
    }

    /// Feed the request into a digest a protocol is computing (e.g. of a log entry
    /// that carries it), so the entry costs one hash, not two.
    pub fn hash_into(&self, hasher: &mut blake3::Hasher) {
        hasher.update(&self.client.0.to_le_bytes());
        hasher.update(&self.seq.to_le_bytes());
        self.op.hash_into(hasher);
    }
}

/// What a replica answers a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyBody {
    /// The operation was applied (once) and this is its result.
    Done(OpResult),
    /// This replica is not the leader; `leader` is its best guess, if any.
    NotLeader { leader: Option<NodeId> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub client: ClientId,
    pub seq: u64,
    pub body: ReplyBody,
}

/// Something an honest replica reported, stamped with when and who: what the safety
/// checkers read, from the simulator and from real mode alike.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub time: Nanos,
    pub node: NodeId,
    pub event: Event,
}

/// What honest replicas report for the checkers. The epoch is the protocol's
/// notion of leadership period: a Raft term, a Paxos ballot, a PBFT view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// This node became leader of `epoch`. `log_prefix_digests[i]` is the hash chain
    /// of its log up to slot `log_from_slot + i`, so Leader Completeness can compare
    /// the new leader's log with everything committed before it was elected.
    Elected { epoch: u64, log_from_slot: u64, log_prefix_digests: Vec<Digest> },
    /// This node accepted `leader` as the leader of `epoch` (Raft: the first
    /// heartbeat or AppendEntries of the term). Election-time measurements end when
    /// every live node has reported it.
    LeaderKnown { epoch: u64, leader: NodeId },
    /// This node learned that `slot` is committed. `prefix_digest` chains every
    /// entry up to and including `slot`.
    Committed { slot: u64, digest: Digest, prefix_digest: Digest },
    /// This node applied the entry at `slot` to its state machine.
    Applied { slot: u64, digest: Digest },
    /// The node restarted from its persisted records.
    Restarted { epoch: u64 },
}

/// An operator's command to a replica, outside the client protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// A leader hands its leadership to `to` (Raft thesis §3.10); other replicas, and
    /// protocols without the mechanism, ignore it.
    TransferLeadership { to: NodeId },
}

/// A protocol-level timer chosen by the protocol; drivers keep at most one pending
/// instance of each value (setting it again replaces it).
pub trait TimerKey: Clone + Copy + fmt::Debug + PartialEq + Eq + std::hash::Hash + Ord {}
impl<T: Clone + Copy + fmt::Debug + PartialEq + Eq + std::hash::Hash + Ord> TimerKey for T {}

/// What a step asked the driver to do, in order.
#[derive(Debug)]
pub enum Action<M, T, R> {
    Send {
        to: NodeId,
        msg: M,
    },
    Broadcast {
        msg: M,
    },
    SetTimer {
        timer: T,
        after: Nanos,
    },
    CancelTimer {
        timer: T,
    },
    Persist {
        record: R,
    },
    Reply {
        reply: Reply,
    },
    Observe {
        event: Event,
    },
    /// Why this step dropped or refused a message (as etcd raft's datadriven logs say
    /// "ignored MsgVote ..."). Emitted only when the driver asked for explanations
    /// ([`Context::explaining`]); drivers print it in traces and otherwise drop it.
    Ignored {
        why: String,
    },
    /// The step reached one of the protocol's named rare situations ([`Mark`]).
    Reached {
        mark: &'static Mark,
    },
}

/// A rare situation a protocol names so that runs can count how often they reach it
/// (a response from an older term, a conflicting certificate in a view change): a
/// rule whose situation no run reaches is untested by those runs, and the count says
/// so instead of silence. Each protocol lists its marks in
/// [`Protocol::coverage_marks`], so a mark never reached still shows, as a zero.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    /// Stable, `protocol.situation`: the key in every report.
    pub name: &'static str,
    /// The situation in a sentence, for reports and docs.
    pub situation: &'static str,
}

/// Outputs of one step, drained by the driver. Kept separate from [`Context`] so a
/// driver can reuse the allocation across steps.
#[derive(Debug)]
pub struct Outbox<M, T, R> {
    pub actions: Vec<Action<M, T, R>>,
}

impl<M, T, R> Default for Outbox<M, T, R> {
    fn default() -> Self {
        Self { actions: Vec::new() }
    }
}

/// The world as one step of a protocol sees it.
pub struct Context<'a, P: Protocol> {
    now: Nanos,
    rng: &'a mut ChaCha8Rng,
    outbox: &'a mut Outbox<P::Message, P::Timer, P::Record>,
    explain: bool,
    input_waiting: bool,
}

impl<'a, P: Protocol> Context<'a, P> {
    pub fn new(now: Nanos, rng: &'a mut ChaCha8Rng, outbox: &'a mut Outbox<P::Message, P::Timer, P::Record>) -> Self {
        Self { now, rng, outbox, explain: false, input_waiting: false }
    }
    /// This context telling the step that more input is already queued behind it, and
    /// that the driver will call [`Protocol::on_input_drained`] once the queue is
    /// empty. A leader batching adaptively then leaves its commands waiting for that
    /// call instead of sending them one round each: what arrived together goes out
    /// together, as etcd's raft sends what accumulated while it was busy as one `Ready`.
    /// The simulator delivers one event per step and never sets it.
    pub fn with_input_waiting(mut self, input_waiting: bool) -> Self {
        self.input_waiting = input_waiting;
        self
    }
    /// Whether more input is queued behind this step (see [`Context::with_input_waiting`]).
    pub fn input_waiting(&self) -> bool {
        self.input_waiting
    }
    /// This context with [`Context::ignored`] recording its reasons: a tracing driver
    /// asks for them; a measuring one does not pay for formatting them.
    pub fn explaining(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }
    /// Say why this step drops or refuses the message it handles. `why` is called only
    /// when the driver asked for explanations, so a hot path pays nothing for it.
    pub fn ignored(&mut self, why: impl FnOnce() -> String) {
        if self.explain {
            self.outbox.actions.push(Action::Ignored { why: why() });
        }
    }
    /// Current time of the driver.
    pub fn now(&self) -> Nanos {
        self.now
    }
    /// The node's own RNG, seeded by the driver.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng
    }
    pub fn send(&mut self, to: NodeId, msg: P::Message) {
        self.outbox.actions.push(Action::Send { to, msg });
    }
    /// Send to every other replica.
    pub fn broadcast(&mut self, msg: P::Message) {
        self.outbox.actions.push(Action::Broadcast { msg });
    }
    /// Fire `timer` after exactly `after` nanoseconds, replacing a pending one.
    pub fn set_timer(&mut self, timer: P::Timer, after: Nanos) {
        self.outbox.actions.push(Action::SetTimer { timer, after });
    }
    pub fn cancel_timer(&mut self, timer: P::Timer) {
        self.outbox.actions.push(Action::CancelTimer { timer });
    }
    /// Make `record` durable before anything else this step emits leaves the node.
    pub fn persist(&mut self, record: P::Record) {
        self.outbox.actions.push(Action::Persist { record });
    }
    pub fn reply(&mut self, reply: Reply) {
        self.outbox.actions.push(Action::Reply { reply });
    }
    pub fn observe(&mut self, event: Event) {
        self.outbox.actions.push(Action::Observe { event });
    }
    /// This step reached the rare situation `mark`. Always recorded (it allocates
    /// nothing), so every driver can count it.
    pub fn reached(&mut self, mark: &'static Mark) {
        self.outbox.actions.push(Action::Reached { mark });
    }
    /// Emit an action as it is (an adversary re-emitting what it captured).
    pub fn push(&mut self, action: Action<P::Message, P::Timer, P::Record>) {
        self.outbox.actions.push(action);
    }
    /// This context for a protocol with the same message, timer and record types (a
    /// wrapper running the node it wraps).
    pub fn reborrow<Q>(&mut self) -> Context<'_, Q>
    where
        Q: Protocol<Message = P::Message, Timer = P::Timer, Record = P::Record>,
    {
        Context {
            now: self.now,
            rng: self.rng,
            outbox: self.outbox,
            explain: self.explain,
            input_waiting: self.input_waiting,
        }
    }
    /// Run `step` with this context's clock and randomness but its actions collected
    /// apart and returned, not emitted: what an adversary inspects and rewrites.
    pub fn capture<Q>(&mut self, step: impl FnOnce(&mut Context<'_, Q>)) -> Vec<Action<P::Message, P::Timer, P::Record>>
    where
        Q: Protocol<Message = P::Message, Timer = P::Timer, Record = P::Record>,
    {
        let mut outbox = Outbox::default();
        step(&mut Context {
            now: self.now,
            rng: self.rng,
            outbox: &mut outbox,
            explain: self.explain,
            input_waiting: self.input_waiting,
        });
        outbox.actions
    }
}

/// A replicated-state-machine protocol as a deterministic state machine.
pub trait Protocol: Sized {
    /// Serializable because its wire size is its postcard encoding ([`wire`]), in the
    /// simulator as on QUIC.
    type Message: Clone + fmt::Debug + Serialize;
    type Timer: TimerKey;
    type Record: Clone + fmt::Debug;
    type Config: Clone + fmt::Debug;

    /// A fresh replica `id` of a cluster of `nodes` replicas `0..nodes`.
    fn new(config: &Self::Config, id: NodeId, nodes: u32) -> Self;
    /// A replica rebuilt after a crash from the records it persisted, in order.
    fn restore(config: &Self::Config, id: NodeId, nodes: u32, records: &[Self::Record]) -> Self;

    fn id(&self) -> NodeId;
    fn on_start(&mut self, ctx: &mut Context<'_, Self>);
    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Self::Message);
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, timer: Self::Timer);
    fn on_request(&mut self, ctx: &mut Context<'_, Self>, request: Request);

    /// An operator's command (see [`AdminCommand`]); ignored unless a protocol has it.
    fn on_admin(&mut self, ctx: &mut Context<'_, Self>, command: AdminCommand) {
        let _ = (ctx, command);
    }

    /// The driver's input queue emptied after steps that ran with
    /// [`Context::input_waiting`] set: send what those steps left waiting. A protocol
    /// that never defers work on that flag needs nothing here.
    fn on_input_drained(&mut self, ctx: &mut Context<'_, Self>) {
        let _ = ctx;
    }

    /// A short stable name of a message's kind, for per-kind counters and for
    /// fault filters ("drop append_entries to n3").
    fn message_kind(msg: &Self::Message) -> &'static str;
    /// Whether this node currently believes it leads (for drivers and experiments).
    fn is_leader(&self) -> bool;
    /// The epoch (term, ballot, view) this node is in.
    fn epoch(&self) -> u64;
    /// Whether `record` holds everything [`Protocol::restore`] needs — a snapshot of the
    /// state machine with the protocol state beside it — so that every record persisted
    /// before it is obsolete. A driver makes such a record durable and then drops the
    /// older ones, which is what keeps a long run's storage bounded (log compaction).
    fn supersedes_earlier_records(record: &Self::Record) -> bool {
        let _ = record;
        false
    }
    /// Protocol-specific counters since this replica started (PBFT: signatures made and
    /// verified, view changes), which experiments report per operation. Empty unless a
    /// protocol has something to count that the driver cannot see.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The rare situations this protocol's code marks with [`Context::reached`], so a
    /// report lists each one, reached or not.
    fn coverage_marks() -> &'static [&'static Mark] {
        &[]
    }
}

/// The client side of a protocol: sans-IO like the replicas. The client decides
/// which replica gets each attempt and when to retry; the driver delivers.
pub trait Client: Sized {
    type Timer: TimerKey;

    /// Submit `request` (the client has at most one outstanding request).
    fn submit(&mut self, now: Nanos, request: Request, out: &mut ClientOutbox<Self::Timer>);
    /// A reply from replica `from`. Returns the result once the request is done.
    fn on_reply(
        &mut self,
        now: Nanos,
        from: NodeId,
        reply: Reply,
        out: &mut ClientOutbox<Self::Timer>,
    ) -> Option<OpResult>;
    fn on_timer(&mut self, now: Nanos, timer: Self::Timer, out: &mut ClientOutbox<Self::Timer>);
}

/// What a client asked the driver to do.
#[derive(Debug)]
pub enum ClientAction<T> {
    Send { to: NodeId, request: Request },
    SetTimer { timer: T, after: Nanos },
    CancelTimer { timer: T },
}

#[derive(Debug)]
pub struct ClientOutbox<T> {
    pub actions: Vec<ClientAction<T>>,
}

impl<T> Default for ClientOutbox<T> {
    fn default() -> Self {
        Self { actions: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_digest_depends_on_every_field() {
        let base =
            Request { client: ClientId(1), seq: 1, op: Op::Put { key: 1, value: vec![1] }, signature: Vec::new() };
        let mut other = base.clone();
        other.seq = 2;
        assert_ne!(base.digest(), other.digest());
        let mut other = base.clone();
        other.client = ClientId(2);
        assert_ne!(base.digest(), other.digest());
        let mut other = base.clone();
        other.op = Op::Put { key: 1, value: vec![2] };
        assert_ne!(base.digest(), other.digest());
    }
}
