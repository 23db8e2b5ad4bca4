//! # qlab-sim: a deterministic discrete-event simulator for any [`Protocol`]
//!
//! The simulator runs a whole cluster, its clients and its network in one thread on a
//! virtual clock. Pending work (message deliveries and timer firings) sits in a priority
//! queue ordered by `(time, sequence number)`; [`Sim::step`] pops the earliest item, runs
//! the protocol handler it targets, and schedules what that handler emitted. There is no
//! wall-clock time and no thread: one `u64` seed drives every random choice (each node's
//! protocol RNG, every latency draw, every drop, duplicate and reorder), so the same
//! seed and configuration replay the same run bit for bit, and the seed printed next to
//! a failure is all that is needed to reproduce it.
//!
//! The network model: each directed link draws a latency from a distribution (a default
//! one, overridable per link), drops a message with probability `loss`, delivers a second
//! copy with probability `duplicate`, and holds a message back by an extra random delay
//! with probability `reorder`. Partitions block directed links (so symmetric, asymmetric
//! and one-way cuts are all expressible), and a message filter lets an experiment drop
//! chosen message kinds on chosen links. Messages already in flight when a link is cut
//! are still delivered, as on a real network.
//!
//! Crash and restart follow the driver contract of `qlab-core`: a step's records are
//! made durable before its messages leave; a crashed node loses every volatile field,
//! its timers and the messages addressed to it, and [`Sim::restart`] rebuilds it from
//! the records it persisted with [`Protocol::restore`].
//!
//! Disks: by default a step's records are durable within the step. With an fsync
//! latency ([`Sim::set_fsync_latency`], the `storage` module) each node's disk writes in
//! order and the step's messages, replies and observations wait for its records, as
//! the contract asks; a crash loses the writes still in progress and what waited on them.
//!
//! Clocks: by default every node's clock is the simulator's. [`Sim::set_clock_rate`]
//! makes one run fast or slow (a rate of 1.01 is 1% fast): the node reads `now × rate`
//! and a timer it sets for `d` of its own nanoseconds fires after `d / rate` simulated
//! ones. That is the clock skew lease-based reads must bound.

use qlab_core::{
    Action, Client, ClientAction, ClientOutbox, Context, Nanos, NodeId, OpResult, Outbox, Protocol, Reply, Request,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

mod rounds;
mod storage;

pub use qlab_core::durability::{ReadBack, RecordMark, Recovery, recover};
pub use rounds::BroadcastRound;
use rounds::{RoundTag, RoundTracker};
pub use storage::DiskFault;
use storage::DiskModel;

/// A latency distribution in nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Latency {
    Constant {
        ns: Nanos,
    },
    Uniform {
        ns_min: Nanos,
        ns_max: Nanos,
    },
    /// Normal, truncated below at `ns_floor` (a message cannot arrive before it is sent).
    Normal {
        ns_mean: f64,
        ns_stddev: f64,
        ns_floor: Nanos,
    },
    /// Exponential with the given mean, shifted by `ns_floor`.
    Exponential {
        ns_mean: f64,
        ns_floor: Nanos,
    },
}

impl Latency {
    /// The distribution's mean and standard deviation (what a real transport's delay
    /// and jitter can reproduce of it).
    pub fn mean_and_stddev_ns(&self) -> (f64, f64) {
        match *self {
            Latency::Constant { ns } => (ns as f64, 0.0),
            Latency::Uniform { ns_min, ns_max } => {
                ((ns_min + ns_max) as f64 / 2.0, (ns_max - ns_min) as f64 / 12f64.sqrt())
            }
            Latency::Normal { ns_mean, ns_stddev, .. } => (ns_mean, ns_stddev),
            Latency::Exponential { ns_mean, ns_floor } => (ns_mean + ns_floor as f64, ns_mean),
        }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Nanos {
        match *self {
            Latency::Constant { ns } => ns,
            Latency::Uniform { ns_min, ns_max } => {
                if ns_min >= ns_max {
                    ns_min
                } else {
                    rng.random_range(ns_min..=ns_max)
                }
            }
            Latency::Normal { ns_mean, ns_stddev, ns_floor } => {
                // Box–Muller: two uniforms give one standard normal.
                let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                let u2: f64 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (ns_mean + ns_stddev * z).max(ns_floor as f64) as Nanos
            }
            Latency::Exponential { ns_mean, ns_floor } => {
                let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                ns_floor + (-ns_mean * u.ln()) as Nanos
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub latency: Latency,
    /// Probability that a message is dropped.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is held back by an extra uniform delay in
    /// `[0, reorder_delay_ns_max]`, overtaking order with its successors.
    pub reorder: f64,
    pub reorder_delay_ns_max: Nanos,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency: Latency::Constant { ns: qlab_core::ms(1) },
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ns_max: 0,
        }
    }
}

/// Defined in `qlab-core` so the checkers need no simulator; re-exported for drivers.
pub use qlab_core::Observation;

/// A client operation that finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub client: usize,
    pub request: Request,
    pub result: OpResult,
    /// When the client was handed the operation.
    pub submitted_at: Nanos,
    pub time: Nanos,
    /// The replica whose reply completed it.
    pub from: NodeId,
}

/// What one [`Sim::step`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing left to do before the deadline (the clock moved to it).
    Idle,
    /// An event was processed; nothing for the caller.
    Progress,
    /// A client operation completed.
    Completed(Completion),
}

/// Counters a run reports next to its results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    /// Messages sent per `Protocol::message_kind` (a handful of kinds: a short list
    /// scans faster than a hash map on the hot path).
    pub sent_by_kind: Vec<(&'static str, u64)>,
}

/// What the disks went through (see `storage`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Crashes that came while the node's disk was still writing: the write was lost.
    pub writes_lost_at_crash: u64,
    /// Restarts that cut a damaged last record (a torn write).
    pub torn_tails_cut: u64,
    /// Restarts refused because a damaged record had intact ones after it.
    pub starts_refused: u64,
    /// Acknowledged records a lying disk lost.
    pub acknowledged_records_lost: u64,
}

enum Work<P: Protocol, T> {
    Start {
        node: NodeId,
    },
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: P::Message,
        tag: RoundTag,
    },
    Request {
        client: usize,
        to: NodeId,
        request: Request,
    },
    Reply {
        from: NodeId,
        client: usize,
        reply: Reply,
    },
    NodeTimer {
        node: NodeId,
        incarnation: u64,
        timer: P::Timer,
        generation: u64,
    },
    ClientTimer {
        client: usize,
        timer: T,
        generation: u64,
    },
    /// A step's records reached the disk: make them durable and let its outputs go.
    Release {
        node: NodeId,
        incarnation: u64,
        held: Box<HeldStep<P>>,
    },
}

type NodeAction<P> = Action<<P as Protocol>::Message, <P as Protocol>::Timer, <P as Protocol>::Record>;

/// What a step persisted and wants the world to see, held until its disk write ends.
struct HeldStep<P: Protocol> {
    actions: Vec<NodeAction<P>>,
    answering: Option<(u32, NodeId)>,
    wrote_records: bool,
}

/// How the messages of one step are tagged for the broadcast-round tracker.
#[derive(Clone, Copy, Default)]
struct StepTags {
    /// The round this step's messages open (0: none).
    round: u32,
    /// The round (and its sender) whose message this step handled.
    answering: Option<(u32, NodeId)>,
    wrote_records: bool,
}

impl StepTags {
    fn tag_for(&self, to: NodeId) -> RoundTag {
        let answers = match self.answering {
            Some((round, sender)) if sender == to => round,
            _ => 0,
        };
        RoundTag { round: self.round, answers, answer_persisted: self.wrote_records }
    }
}

/// A heap entry: when, tie-break order, and where the work waits in the slab. Kept
/// small so heap sifts move 24 bytes, not whole messages.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    time: Nanos,
    seq: u64,
    slot: u32,
}

impl PartialOrd for Scheduled {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

struct NodeSlot<P: Protocol> {
    protocol: Option<P>,
    storage: Vec<P::Record>,
    /// What each record of `storage` says of itself: its number and its batch (the
    /// records one step persisted), as real mode's WAL writes them in its headers.
    marks: Vec<RecordMark>,
    /// Records this node has persisted since the run began: the next record's number.
    records_written: u64,
    rng: ChaCha8Rng,
    incarnation: u64,
    /// At most one entry per timer kind; protocols have a handful, so a short list
    /// beats hashing on the hot path.
    timers: TimerTable<P::Timer, PendingTimer>,
    /// Local clock nanoseconds per simulated nanosecond (1.0: no skew). Survives restarts:
    /// it is the machine's oscillator, not the process's state.
    clock_rate: f64,
    /// When the node's disk finishes the writes it has been given (see `storage`).
    disk_busy_until: Nanos,
    /// The durable record that reads back damaged, if a crash left one (see `storage`).
    damaged_record: Option<usize>,
    /// Paused (a stopped process, a long GC, a VM descheduled) until this time: nothing
    /// reaches the node and it does nothing; what arrived meanwhile is handed to it at
    /// once when it wakes (0: not paused).
    paused_until: Nanos,
}

/// A tiny map from timer key to state, scanned linearly.
struct TimerTable<K, V> {
    entries: Vec<(K, V)>,
}

impl<K: PartialEq + Copy, V: Copy> TimerTable<K, V> {
    fn new() -> Self {
        TimerTable { entries: Vec::new() }
    }
    fn get(&self, key: &K) -> Option<&V> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn insert(&mut self, key: K, value: V) {
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.entries.push((key, value)),
        }
    }
    fn remove(&mut self, key: &K) {
        self.entries.retain(|(k, _)| k != key);
    }
    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// A node timer's state. Resetting a timer to a later deadline (what every heartbeat
/// does to an election timer) only moves `deadline`; the queued entry, when it comes
/// due early, re-queues itself at the deadline. One queue push per firing instead of
/// one per reset keeps the queue small.
#[derive(Clone, Copy, Debug)]
struct PendingTimer {
    deadline: Nanos,
    /// Generation of the queue entry that stands for this timer.
    generation: u64,
    /// When that queue entry is due.
    queued_at: Nanos,
}

struct ClientSlot<C: Client> {
    client: C,
    timers: TimerTable<C::Timer, u64>,
    outstanding: Option<(Request, Nanos)>,
}

/// More pending deliveries and timers than any sane run has (see [`Sim::schedule`]).
pub const MAX_PENDING_WORK: usize = 2_000_000;

/// A predicate that drops a message on a link: `(from, to, message) -> drop?`.
pub type MessageFilter<P> = Box<dyn FnMut(NodeId, NodeId, &<P as Protocol>::Message) -> bool>;

/// The simulated world: replicas, clients, network, virtual clock.
pub struct Sim<P: Protocol, C: Client> {
    config: P::Config,
    seed: u64,
    now: Nanos,
    next_seq: u64,
    queue: BinaryHeap<Scheduled>,
    /// Pending work, indexed by `Scheduled::slot`; freed slots are reused.
    slab: Vec<Option<Work<P, C::Timer>>>,
    free_slots: Vec<u32>,
    nodes: Vec<NodeSlot<P>>,
    clients: Vec<ClientSlot<C>>,
    network: NetworkConfig,
    link_latency: HashMap<(NodeId, NodeId), Latency>,
    /// Per node: (client to node, node to client) latency, where it differs from the
    /// network's (clients in one region, nodes in others).
    client_latency: HashMap<NodeId, (Latency, Latency)>,
    /// When set, a message never overtakes an earlier one on its link (as on one QUIC
    /// stream), whatever the drawn delays: the latest arrival per link.
    fifo_link_arrivals: Option<HashMap<(NodeId, NodeId), Nanos>>,
    /// `blocked[from * n + to]`: the directed link is cut.
    blocked: Vec<bool>,
    filter: Option<MessageFilter<P>>,
    net_rng: ChaCha8Rng,
    timer_generation: u64,
    outbox: Outbox<P::Message, P::Timer, P::Record>,
    client_outbox: ClientOutbox<C::Timer>,
    pub observations: Vec<Observation>,
    /// How often the replicas' code reached each of its coverage marks, by name.
    pub coverage: BTreeMap<&'static str, u64>,
    pub stats: NetStats,
    pub disk_stats: DiskStats,
    trace: Option<Vec<String>>,
    disk: DiskModel,
    rounds: Option<RoundTracker>,
    /// Set while a replica handles a message that belongs to a tracked round.
    answering: Option<(u32, NodeId)>,
}

fn node_rng(seed: u64, node: NodeId, incarnation: u64) -> ChaCha8Rng {
    // Distinct, seed-derived streams per node and incarnation.
    let mixed = seed
        ^ (node.0 as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (incarnation + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    ChaCha8Rng::seed_from_u64(mixed)
}

impl<P: Protocol, C: Client> Sim<P, C> {
    /// A cluster of `nodes` fresh replicas, each started at time 0.
    pub fn new(config: P::Config, nodes: u32, network: NetworkConfig, seed: u64) -> Self {
        Self::new_staggered(config, nodes, network, seed, 0)
    }

    /// Like [`Sim::new`], but each replica starts at a random time in
    /// `[0, max_start_delay_ns]`, as processes of a real cluster do. Without it,
    /// identical fixed timeouts (no randomization) would split votes from the start.
    pub fn new_staggered(
        config: P::Config,
        nodes: u32,
        network: NetworkConfig,
        seed: u64,
        max_start_delay_ns: Nanos,
    ) -> Self {
        Self::build(config, nodes, network, seed, max_start_delay_ns, None)
    }

    /// Like [`Sim::new_staggered`], with a disk whose writes take `fsync` (`None`:
    /// durable within the step) in place before any replica starts.
    pub fn build(
        config: P::Config,
        nodes: u32,
        network: NetworkConfig,
        seed: u64,
        max_start_delay_ns: Nanos,
        fsync: Option<Latency>,
    ) -> Self {
        assert!(nodes >= 1);
        let mut sim = Sim {
            config: config.clone(),
            seed,
            now: 0,
            next_seq: 0,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free_slots: Vec::new(),
            nodes: Vec::new(),
            clients: Vec::new(),
            network,
            link_latency: HashMap::new(),
            client_latency: HashMap::new(),
            fifo_link_arrivals: None,
            blocked: vec![false; (nodes * nodes) as usize],
            filter: None,
            net_rng: ChaCha8Rng::seed_from_u64(seed),
            timer_generation: 0,
            outbox: Outbox::default(),
            client_outbox: ClientOutbox::default(),
            observations: Vec::new(),
            coverage: BTreeMap::new(),
            stats: NetStats::default(),
            disk_stats: DiskStats::default(),
            trace: None,
            disk: DiskModel::instant(seed),
            rounds: None,
            answering: None,
        };
        sim.disk.set_fsync(fsync);
        for i in 0..nodes {
            let id = NodeId(i);
            sim.nodes.push(NodeSlot {
                protocol: Some(P::new(&config, id, nodes)),
                storage: Vec::new(),
                marks: Vec::new(),
                records_written: 0,
                rng: node_rng(seed, id, 0),
                incarnation: 0,
                timers: TimerTable::new(),
                clock_rate: 1.0,
                disk_busy_until: 0,
                damaged_record: None,
                paused_until: 0,
            });
        }
        for i in 0..nodes {
            if max_start_delay_ns == 0 {
                sim.with_node(NodeId(i), |p, ctx| p.on_start(ctx));
            } else {
                let at = sim.net_rng.random_range(0..=max_start_delay_ns);
                sim.schedule(at, Work::Start { node: NodeId(i) });
            }
        }
        sim
    }

    /// A slow disk's stalls: with `probability` a write takes a draw from `spike`
    /// instead of the fsync latency (which must be set for writes to take time at all).
    pub fn set_fsync_spikes(&mut self, probability: f64, spike: Latency) {
        self.disk.set_spikes(Some((probability, spike)));
    }

    /// Keep a readable line per processed event (for `qlab replay` and tests).
    pub fn enable_trace(&mut self) {
        self.trace = Some(Vec::new());
    }
    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }
    /// Give every node a disk whose writes take `fsync` (`None`: durable within the
    /// step, the default). Set it before the run starts: the nodes' first records
    /// already go through it.
    pub fn set_fsync_latency(&mut self, fsync: Option<Latency>) {
        self.disk.set_fsync(fsync);
    }
    pub fn fsync_latency(&self) -> Option<&Latency> {
        self.disk.fsync()
    }
    /// Measure broadcast rounds from now on (see [`BroadcastRound`]); clusters of more
    /// than 64 nodes are not tracked.
    pub fn track_broadcasts(&mut self) {
        if self.node_count() <= RoundTracker::MAX_NODES {
            self.rounds.get_or_insert_with(RoundTracker::default);
        }
    }
    /// The rounds that closed so far (empty unless tracked).
    pub fn broadcast_rounds(&self) -> &[BroadcastRound] {
        self.rounds.as_ref().map_or(&[], |t| &t.closed)
    }
    /// The protocol configuration every replica runs.
    pub fn config(&self) -> &P::Config {
        &self.config
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn now(&self) -> Nanos {
        self.now
    }
    pub fn node_count(&self) -> u32 {
        self.nodes.len() as u32
    }
    /// The replica, if it is up.
    pub fn node(&self, id: NodeId) -> Option<&P> {
        self.nodes[id.0 as usize].protocol.as_ref()
    }
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id.0 as usize].protocol.is_some()
    }
    pub fn up_nodes(&self) -> Vec<NodeId> {
        (0..self.node_count()).map(NodeId).filter(|n| self.is_up(*n)).collect()
    }
    /// The up replica that believes it leads in the highest epoch, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|slot| slot.protocol.as_ref())
            .filter(|p| p.is_leader())
            .max_by_key(|p| p.epoch())
            .map(|p| p.id())
    }
    pub fn storage(&self, id: NodeId) -> &[P::Record] {
        &self.nodes[id.0 as usize].storage
    }
    pub fn client(&self, index: usize) -> &C {
        &self.clients[index].client
    }
    pub fn pending_work(&self) -> usize {
        self.queue.len()
    }

    /// Add a client; its index is its `ClientId` (replies are routed by it).
    pub fn add_client(&mut self, client: C) -> usize {
        self.clients.push(ClientSlot { client, timers: TimerTable::new(), outstanding: None });
        self.clients.len() - 1
    }

    pub fn client_outstanding(&self, index: usize) -> Option<&Request> {
        self.clients[index].outstanding.as_ref().map(|(r, _)| r)
    }

    /// Hand `request` to client `index` now.
    pub fn submit(&mut self, index: usize, request: Request) {
        assert!(self.clients[index].outstanding.is_none(), "client {index} already busy");
        self.clients[index].outstanding = Some((request.clone(), self.now));
        let now = self.now;
        let mut out = std::mem::take(&mut self.client_outbox);
        self.clients[index].client.submit(now, request, &mut out);
        self.drain_client(index, &mut out);
        self.client_outbox = out;
    }

    pub fn set_link_latency(&mut self, from: NodeId, to: NodeId, latency: Latency) {
        self.link_latency.insert((from, to), latency);
    }
    /// Deliver each link's messages in the order they were sent (jittered delays then
    /// never reorder them; the `reorder` knob still does).
    pub fn set_fifo_links(&mut self, fifo: bool) {
        self.fifo_link_arrivals = fifo.then(HashMap::new);
    }

    /// The latency of every client's messages to `node` and of `node`'s answers.
    pub fn set_client_latency(&mut self, node: NodeId, to_node: Latency, from_node: Latency) {
        self.client_latency.insert(node, (to_node, from_node));
    }
    pub fn set_network(&mut self, network: NetworkConfig) {
        self.network = network;
    }
    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }
    pub fn set_filter(&mut self, filter: Option<MessageFilter<P>>) {
        self.filter = filter;
    }

    /// Cut (or restore) the directed link `from → to`.
    pub fn set_link_blocked(&mut self, from: NodeId, to: NodeId, blocked: bool) {
        let n = self.node_count();
        self.blocked[(from.0 * n + to.0) as usize] = blocked;
    }
    /// Split the cluster: links between different groups are cut both ways.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let n = self.node_count();
        let group_of = |id: NodeId| groups.iter().position(|g| g.contains(&id));
        for a in 0..n {
            for b in 0..n {
                let cut = a != b && group_of(NodeId(a)) != group_of(NodeId(b));
                self.blocked[(a * n + b) as usize] = cut;
            }
        }
    }
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }
    pub fn is_link_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked[(from.0 * self.node_count() + to.0) as usize]
    }

    /// Make `id`'s clock run at `rate` local nanoseconds per simulated one from now on
    /// (timers already set keep their simulated deadlines).
    pub fn set_clock_rate(&mut self, id: NodeId, rate: f64) {
        assert!(rate.is_finite() && rate > 0.0, "clock rate {rate}");
        self.nodes[id.0 as usize].clock_rate = rate;
    }

    pub fn clock_rate(&self, id: NodeId) -> f64 {
        self.nodes[id.0 as usize].clock_rate
    }

    /// What `id`'s own clock reads now.
    fn local_now(&self, id: NodeId) -> Nanos {
        let rate = self.nodes[id.0 as usize].clock_rate;
        if rate == 1.0 { self.now } else { (self.now as f64 * rate) as Nanos }
    }

    /// Pause `id` for `for_ns` (gray failure: SIGSTOP, a long GC pause, a descheduled
    /// VM). Its deliveries, timers, client requests and disk completions are held and
    /// handed to it in order the moment it wakes, with its clock showing the time then:
    /// the node acts on a view of the world as old as the pause. Pausing a paused node
    /// extends the pause; a crash ends it.
    pub fn pause(&mut self, id: NodeId, for_ns: Nanos) {
        let until = self.now.saturating_add(for_ns);
        let slot = &mut self.nodes[id.0 as usize];
        if slot.protocol.is_some() {
            slot.paused_until = slot.paused_until.max(until);
            self.log_trace(|| format!("{id} PAUSE until {:.3} ms", until as f64 / 1e6));
        }
    }

    /// Whether `id` is paused now.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes[id.0 as usize].paused_until > self.now
    }

    /// Stop `id`: it keeps only its persisted records.
    pub fn crash(&mut self, id: NodeId) {
        let slot = &mut self.nodes[id.0 as usize];
        slot.paused_until = 0;
        if slot.protocol.take().is_some() {
            slot.incarnation += 1;
            slot.timers.clear();
            // Writes in progress die with the process (their held outputs check the
            // incarnation and are dropped).
            if slot.disk_busy_until > self.now {
                self.disk_stats.writes_lost_at_crash += 1;
            }
            slot.disk_busy_until = 0;
            self.log_trace(|| format!("{id} CRASH"));
        }
    }

    /// Crash `id` and leave its disk damaged by `fault` (see `storage`).
    pub fn crash_with_disk_fault(&mut self, id: NodeId, fault: DiskFault) {
        self.crash(id);
        let slot = &mut self.nodes[id.0 as usize];
        match fault {
            DiskFault::LoseAcknowledged { records } => {
                let kept = slot.storage.len().saturating_sub(records);
                self.disk_stats.acknowledged_records_lost += (slot.storage.len() - kept) as u64;
                slot.storage.truncate(kept);
                slot.marks.truncate(kept);
                slot.damaged_record = slot.damaged_record.filter(|index| *index < kept);
            }
            DiskFault::Corrupt { index } if !slot.storage.is_empty() => {
                let index = index.min(slot.storage.len() - 1);
                slot.damaged_record = Some(slot.damaged_record.map_or(index, |earlier| earlier.min(index)));
            }
            DiskFault::Corrupt { .. } => {}
        }
        self.log_trace(|| format!("{id} DISK FAULT {fault:?}"));
    }

    /// What a restart of `id` makes of its records, by the rule real mode's WAL keeps
    /// ([`qlab_core::durability`]).
    fn recovery(&self, id: NodeId) -> Recovery {
        let slot = &self.nodes[id.0 as usize];
        let log: Vec<ReadBack> = slot
            .marks
            .iter()
            .enumerate()
            .map(|(i, mark)| {
                if Some(i) == slot.damaged_record {
                    ReadBack::Damaged { number: mark.number }
                } else {
                    ReadBack::Intact(*mark)
                }
            })
            .collect();
        recover(&log)
    }

    /// Why `id` will not start: a damaged record with a later batch intact after it.
    pub fn refuses_to_start(&self, id: NodeId) -> Option<usize> {
        match self.recovery(id) {
            Recovery::Corrupt { index } => Some(index),
            Recovery::Intact | Recovery::TornTail { .. } => None,
        }
    }

    /// Rebuild `id` from its persisted records and start it. Recovery cuts a torn
    /// tail (whole batches only); a node whose disk holds corruption stays down
    /// ([`Sim::refuses_to_start`]).
    pub fn restart(&mut self, id: NodeId) {
        let n = self.node_count();
        if self.nodes[id.0 as usize].protocol.is_some() {
            return;
        }
        let recovery = self.recovery(id);
        if let Recovery::Corrupt { index } = recovery {
            let records = self.nodes[id.0 as usize].storage.len();
            self.log_trace(|| {
                format!("{id} REFUSES TO START: record {index} of {records} damaged, a later batch intact after it")
            });
            self.disk_stats.starts_refused += 1;
            return;
        }
        let slot = &mut self.nodes[id.0 as usize];
        slot.damaged_record = None;
        if let Recovery::TornTail { kept } = recovery {
            slot.storage.truncate(kept);
            slot.marks.truncate(kept);
            self.disk_stats.torn_tails_cut += 1;
        }
        slot.protocol = Some(P::restore(&self.config, id, n, &slot.storage));
        slot.rng = node_rng(self.seed, id, slot.incarnation);
        self.log_trace(|| format!("{id} RESTART"));
        self.with_node(id, |p, ctx| p.on_start(ctx));
    }

    /// Fire `timer` on `id` now, as if it had expired (a pending one is cancelled).
    /// Experiments use it to force e.g. a synchronized heartbeat broadcast.
    pub fn fire_timer_now(&mut self, id: NodeId, timer: P::Timer) {
        if !self.is_up(id) {
            return;
        }
        self.nodes[id.0 as usize].timers.remove(&timer);
        self.with_node(id, |p, ctx| p.on_timer(ctx, timer));
    }

    /// Give replica `id` an operator's command now (a crashed replica misses it).
    pub fn admin(&mut self, id: NodeId, command: qlab_core::AdminCommand) {
        if self.is_up(id) {
            self.with_node(id, |p, ctx| p.on_admin(ctx, command));
        }
    }

    /// Deliver `request` straight to replica `to`, bypassing clients and network.
    pub fn inject_request(&mut self, to: NodeId, request: Request) {
        self.with_node(to, |p, ctx| p.on_request(ctx, request));
    }

    /// Process events until one completes a client operation or none is left at or
    /// before `deadline` (then the clock moves to `deadline`).
    pub fn run_until(&mut self, deadline: Nanos) -> Option<Completion> {
        loop {
            match self.step(deadline) {
                Step::Idle => return None,
                Step::Progress => {}
                Step::Completed(c) => return Some(c),
            }
        }
    }

    /// Run to `deadline`, discarding client completions (the caller does not drive
    /// closed-loop clients).
    pub fn run_to(&mut self, deadline: Nanos) {
        while self.run_until(deadline).is_some() {}
    }

    /// Process the single earliest event if it is due at or before `deadline`.
    pub fn step(&mut self, deadline: Nanos) -> Step {
        match self.queue.peek() {
            Some(next) if next.time <= deadline => {}
            _ => {
                self.now = self.now.max(deadline);
                return Step::Idle;
            }
        }
        let Scheduled { time, slot, .. } = self.queue.pop().expect("peeked");
        let work = self.slab[slot as usize].take().expect("scheduled work present");
        self.free_slots.push(slot);
        debug_assert!(time >= self.now, "time went backwards");
        self.now = time;
        // A paused node takes nothing in: what is for it waits, in order, until it wakes.
        let for_node = match &work {
            Work::Start { node } | Work::NodeTimer { node, .. } | Work::Release { node, .. } => Some(*node),
            Work::Deliver { to, .. } | Work::Request { to, .. } => Some(*to),
            Work::Reply { .. } | Work::ClientTimer { .. } => None,
        };
        if let Some(node) = for_node {
            let paused_until = self.nodes[node.0 as usize].paused_until;
            if paused_until > time {
                self.schedule(paused_until, work);
                return Step::Progress;
            }
        }
        match work {
            Work::Start { node } => {
                if self.nodes[node.0 as usize].incarnation == 0 {
                    self.log_trace(|| format!("{node} START"));
                    self.with_node(node, |p, ctx| p.on_start(ctx));
                }
                Step::Progress
            }
            Work::Deliver { from, to, msg, tag } => {
                if self.nodes[to.0 as usize].protocol.is_none() {
                    self.stats.messages_dropped += 1;
                    return Step::Progress;
                }
                self.stats.messages_delivered += 1;
                if self.trace.is_some() {
                    self.log_trace(|| format!("{from}->{to} {msg:?}"));
                }
                if let Some(tracker) = &mut self.rounds {
                    if tag.answers != 0 {
                        tracker.answer(tag.answers, from, tag.answer_persisted, time);
                    }
                    if tag.round != 0 {
                        self.answering = Some((tag.round, from));
                    }
                }
                self.with_node(to, |p, ctx| p.on_message(ctx, from, msg));
                Step::Progress
            }
            Work::Release { node, incarnation, held } => {
                let slot = &self.nodes[node.0 as usize];
                if slot.protocol.is_none() || slot.incarnation != incarnation {
                    return Step::Progress; // the crash took the write and what waited on it
                }
                let HeldStep { actions, answering, wrote_records } = *held;
                if wrote_records {
                    self.log_trace(|| format!("{node} disk write durable"));
                }
                let mut tags = self.open_round(node, &actions, answering, wrote_records);
                self.carry_out_step(node, incarnation, actions, &mut tags);
                Step::Progress
            }
            Work::Request { client, to, request } => {
                if self.nodes[to.0 as usize].protocol.is_none() {
                    return Step::Progress;
                }
                self.log_trace(|| format!("c{client}->{to} {request:?}"));
                self.with_node(to, |p, ctx| p.on_request(ctx, request));
                Step::Progress
            }
            Work::Reply { from, client, reply } => {
                self.log_trace(|| format!("{from}->c{client} {reply:?}"));
                let mut out = std::mem::take(&mut self.client_outbox);
                let now = self.now;
                let result = self.clients[client].client.on_reply(now, from, reply, &mut out);
                self.drain_client(client, &mut out);
                self.client_outbox = out;
                match result {
                    Some(result) => {
                        let (request, submitted_at) =
                            self.clients[client].outstanding.take().expect("client had a request");
                        Step::Completed(Completion { client, request, result, submitted_at, time: now, from })
                    }
                    None => Step::Progress,
                }
            }
            Work::NodeTimer { node, incarnation, timer, generation } => {
                let slot = &mut self.nodes[node.0 as usize];
                let pending = slot.timers.get(&timer).copied();
                let Some(pending) = pending.filter(|p| {
                    slot.protocol.is_some() && slot.incarnation == incarnation && p.generation == generation
                }) else {
                    return Step::Progress; // cancelled, replaced or crashed
                };
                if pending.deadline > self.now {
                    // Reset to later since this entry was queued: wait until then.
                    self.requeue_timer(node, incarnation, timer, pending.deadline);
                    return Step::Progress;
                }
                slot.timers.remove(&timer);
                self.log_trace(|| format!("{node} timer {timer:?}"));
                self.with_node(node, |p, ctx| p.on_timer(ctx, timer));
                Step::Progress
            }
            Work::ClientTimer { client, timer, generation } => {
                if self.clients[client].timers.get(&timer) != Some(&generation) {
                    return Step::Progress;
                }
                self.clients[client].timers.remove(&timer);
                let mut out = std::mem::take(&mut self.client_outbox);
                let now = self.now;
                self.clients[client].client.on_timer(now, timer, &mut out);
                self.drain_client(client, &mut out);
                self.client_outbox = out;
                Step::Progress
            }
        }
    }

    fn log_trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>12.3}ms {}", qlab_core::nanos_to_ms(self.now), line()));
        }
    }

    fn schedule(&mut self, time: Nanos, work: Work<P, C::Timer>) {
        // A cluster of at most a few dozen replicas has a few thousand things pending at
        // most; millions mean messages breeding messages, a protocol bug that would
        // otherwise eat memory until the machine gives out. Stop with a clear message
        // instead (the trial runner turns the panic into an error row).
        assert!(
            self.queue.len() < MAX_PENDING_WORK,
            "event storm: {} events pending at {:.3} ms (messages breeding messages: a protocol bug; replay this \
             seed to see it)",
            self.queue.len(),
            qlab_core::nanos_to_ms(self.now)
        );
        self.next_seq += 1;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(work);
                slot
            }
            None => {
                self.slab.push(Some(work));
                (self.slab.len() - 1) as u32
            }
        };
        self.queue.push(Scheduled { time, seq: self.next_seq, slot });
    }

    fn link_delay(&mut self, from: NodeId, to: NodeId) -> Nanos {
        let mut delay = match self.link_latency.get(&(from, to)) {
            Some(latency) => latency.sample(&mut self.net_rng),
            None => self.network.latency.sample(&mut self.net_rng),
        };
        if let Some(last_arrivals) = &mut self.fifo_link_arrivals {
            let last = last_arrivals.entry((from, to)).or_insert(0);
            *last = (*last).max(self.now + delay);
            delay = *last - self.now;
        }
        if self.network.reorder > 0.0 && self.net_rng.random_bool(self.network.reorder) {
            delay += self.net_rng.random_range(0..=self.network.reorder_delay_ns_max);
        }
        delay
    }

    /// Put one replica-to-replica message on the wire, through cuts, filter and losses.
    fn transmit(&mut self, from: NodeId, to: NodeId, msg: P::Message, tag: RoundTag) {
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += qlab_core::wire::peer_frame_bytes(&msg) as u64;
        let kind = P::message_kind(&msg);
        match self.stats.sent_by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, count)) => *count += 1,
            None => self.stats.sent_by_kind.push((kind, 1)),
        }
        if self.is_link_blocked(from, to) {
            self.stats.messages_dropped += 1;
            return;
        }
        if let Some(filter) = &mut self.filter
            && filter(from, to, &msg)
        {
            self.stats.messages_dropped += 1;
            return;
        }
        if self.network.loss > 0.0 && self.net_rng.random_bool(self.network.loss) {
            self.stats.messages_dropped += 1;
            return;
        }
        if self.network.duplicate > 0.0 && self.net_rng.random_bool(self.network.duplicate) {
            let delay = self.link_delay(from, to);
            self.schedule(self.now + delay, Work::Deliver { from, to, msg: msg.clone(), tag });
        }
        let delay = self.link_delay(from, to);
        self.schedule(self.now + delay, Work::Deliver { from, to, msg, tag });
    }

    /// Run one handler of replica `id` and carry out what it emitted: records first
    /// (durable before anything leaves the node), then messages, timers and replies.
    /// With an fsync latency the step's records and outputs are held until its disk
    /// write ends (see `storage`); its timers start at once.
    fn with_node(&mut self, id: NodeId, f: impl FnOnce(&mut P, &mut Context<'_, P>)) {
        let answering = self.answering.take();
        let mut outbox = std::mem::take(&mut self.outbox);
        let local_now = self.local_now(id);
        {
            let slot = &mut self.nodes[id.0 as usize];
            let Some(protocol) = slot.protocol.as_mut() else {
                self.outbox = outbox;
                return;
            };
            let mut ctx = Context::new(local_now, &mut slot.rng, &mut outbox).explaining(self.trace.is_some());
            f(protocol, &mut ctx);
        }
        let incarnation = self.nodes[id.0 as usize].incarnation;
        let modelled = self.disk.fsync().is_some();
        let wrote_records = (modelled || self.rounds.is_some())
            && outbox.actions.iter().any(|action| matches!(action, Action::Persist { .. }));
        let release_at = if modelled {
            self.disk.release_at(&mut self.nodes[id.0 as usize].disk_busy_until, self.now, wrote_records)
        } else {
            None
        };
        match release_at {
            // A step is atomic here (a crash can only fall between steps), so appending
            // each record as it comes still makes all of the step's records durable
            // before any of its messages can be delivered.
            None => {
                let mut tags = self.open_round(id, &outbox.actions, answering, wrote_records);
                let actions: Vec<NodeAction<P>> = outbox.actions.drain(..).collect();
                self.carry_out_step(id, incarnation, actions, &mut tags);
            }
            Some(at) => {
                let mut held = Vec::new();
                for action in outbox.actions.drain(..) {
                    match action {
                        Action::SetTimer { .. }
                        | Action::CancelTimer { .. }
                        | Action::Ignored { .. }
                        | Action::Reached { .. } => self.carry_out(id, incarnation, action, &mut StepTags::default()),
                        action => held.push(action),
                    }
                }
                if !held.is_empty() {
                    let held = Box::new(HeldStep { actions: held, answering, wrote_records });
                    self.schedule(at, Work::Release { node: id, incarnation, held });
                }
            }
        }
        self.outbox = outbox;
    }

    /// The tags of a step's messages; opens a broadcast round when they go to every
    /// other node and rounds are tracked.
    fn open_round(
        &mut self,
        id: NodeId,
        actions: &[NodeAction<P>],
        answering: Option<(u32, NodeId)>,
        wrote_records: bool,
    ) -> StepTags {
        let Some(tracker) = &mut self.rounds else { return StepTags::default() };
        let n = self.nodes.len() as u32;
        let everyone_else = ((1u128 << n) - 1) as u64 & !(1u64 << id.0);
        let mut recipients = 0u64;
        for action in actions {
            match action {
                Action::Send { to, .. } if *to != id && to.0 < n => recipients |= 1 << to.0,
                Action::Broadcast { .. } => recipients = everyone_else,
                _ => {}
            }
        }
        let round = if n >= 2 && recipients == everyone_else { tracker.open(id, recipients, self.now) } else { 0 };
        StepTags { round, answering, wrote_records }
    }

    /// Carry out one action of replica `id`'s step, now.
    /// Carry out one step's actions: its records first, as one batch (what one fsync
    /// makes durable in real mode), then the rest in order.
    fn carry_out_step(&mut self, id: NodeId, incarnation: u64, actions: Vec<NodeAction<P>>, tags: &mut StepTags) {
        let mut records = Vec::new();
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Persist { record } => records.push(record),
                other => rest.push(other),
            }
        }
        if !records.is_empty() {
            self.persist_batch(id, records);
        }
        for action in rest {
            self.carry_out(id, incarnation, action, tags);
        }
    }

    /// Append one step's records to `id`'s storage as one batch. A record that
    /// supersedes all before it (a snapshot) empties the storage first, and the batch
    /// is what follows from it, as real mode's WAL rewrites its file.
    fn persist_batch(&mut self, id: NodeId, mut records: Vec<P::Record>) {
        let slot = &mut self.nodes[id.0 as usize];
        if let Some(snapshot) = records.iter().rposition(|r| P::supersedes_earlier_records(r)) {
            slot.records_written += snapshot as u64;
            records.drain(..snapshot);
            slot.storage.clear();
            slot.marks.clear();
            slot.damaged_record = None;
        }
        let batch_first = slot.records_written;
        let batch_len = records.len() as u32;
        for record in records {
            slot.marks.push(RecordMark { number: slot.records_written, batch_first, batch_len });
            slot.records_written += 1;
            slot.storage.push(record);
        }
    }

    fn carry_out(&mut self, id: NodeId, incarnation: u64, action: NodeAction<P>, tags: &mut StepTags) {
        let n = self.node_count();
        match action {
            Action::Persist { record } => self.persist_batch(id, vec![record]),
            Action::Send { to, msg } => self.transmit(id, to, msg, tags.tag_for(to)),
            Action::Broadcast { msg } => {
                for peer in (0..n).map(NodeId).filter(|p| *p != id) {
                    self.transmit(id, peer, msg.clone(), tags.tag_for(peer));
                }
            }
            Action::SetTimer { timer, after } => {
                let rate = self.nodes[id.0 as usize].clock_rate;
                let after = if rate == 1.0 { after } else { (after as f64 / rate).ceil() as Nanos };
                let deadline = self.now + after;
                match self.nodes[id.0 as usize].timers.get_mut(&timer) {
                    // The queued entry comes no later than the new deadline: it
                    // will re-queue itself (see `PendingTimer`).
                    Some(pending) if pending.queued_at <= deadline => pending.deadline = deadline,
                    _ => self.requeue_timer(id, incarnation, timer, deadline),
                }
            }
            Action::CancelTimer { timer } => {
                self.nodes[id.0 as usize].timers.remove(&timer);
            }
            Action::Reply { reply } => {
                let client = reply.client.0 as usize;
                if client < self.clients.len() {
                    let delay = match self.client_latency.get(&id) {
                        Some((_, from_node)) => from_node.sample(&mut self.net_rng),
                        None => self.network.latency.sample(&mut self.net_rng),
                    };
                    self.schedule(self.now + delay, Work::Reply { from: id, client, reply });
                }
            }
            Action::Observe { event } => {
                if self.trace.is_some() {
                    self.log_trace(|| format!("{id} observes {event:?}"));
                }
                self.observations.push(Observation { time: self.now, node: id, event });
            }
            Action::Ignored { why } => self.log_trace(|| format!("{id} {why}")),
            Action::Reached { mark } => {
                self.log_trace(|| format!("{id} reached {}", mark.name));
                *self.coverage.entry(mark.name).or_default() += 1;
            }
        }
    }

    fn requeue_timer(&mut self, node: NodeId, incarnation: u64, timer: P::Timer, deadline: Nanos) {
        self.timer_generation += 1;
        let generation = self.timer_generation;
        self.nodes[node.0 as usize].timers.insert(timer, PendingTimer { deadline, generation, queued_at: deadline });
        self.schedule(deadline, Work::NodeTimer { node, incarnation, timer, generation });
    }

    fn drain_client(&mut self, index: usize, out: &mut ClientOutbox<C::Timer>) {
        for action in out.actions.drain(..) {
            match action {
                ClientAction::Send { to, request } => {
                    let delay = match self.client_latency.get(&to) {
                        Some((to_node, _)) => to_node.sample(&mut self.net_rng),
                        None => self.network.latency.sample(&mut self.net_rng),
                    };
                    self.schedule(self.now + delay, Work::Request { client: index, to, request });
                }
                ClientAction::SetTimer { timer, after } => {
                    self.timer_generation += 1;
                    let generation = self.timer_generation;
                    self.clients[index].timers.insert(timer, generation);
                    self.schedule(self.now + after, Work::ClientTimer { client: index, timer, generation });
                }
                ClientAction::CancelTimer { timer } => {
                    self.clients[index].timers.remove(&timer);
                }
            }
        }
    }
}
