//! The node runtime: one replica of any [`Protocol`] on a QUIC endpoint, in real time.
//!
//! One task owns the protocol and runs it step by step: a message, a client request,
//! a control command or a due timer comes in; the handler runs; then its outbox is
//! carried out in the order the driver contract demands — **the step's records are
//! appended to storage (one fsync for the batch, with disk storage) before any of its
//! messages or replies is handed to the network.** Timers use exact durations on
//! tokio's monotonic clock.
//!
//! Around that task:
//! - an acceptor identifies each incoming connection by its pinned certificate; peer
//!   nodes send frames on unidirectional streams, the harness uses one bidirectional
//!   stream for requests and control (in) and replies and reports (out);
//! - one sender task per peer keeps a connection and a long-lived stream to it, with a
//!   bounded queue: when it is full (peer slow or down) new messages are dropped and
//!   counted, which protocols tolerate as message loss; after a peer restarts the
//!   sender reconnects with back-off;
//! - frames that do not decode are counted and dropped; a connection that keeps
//!   sending them (more than [`MALFORMED_FRAMES_BEFORE_CLOSE`]) is closed.
//!
//! Link faults (blocked peers, loss, added delay) are applied on the sending side,
//! as instructed by the harness, so real-mode experiments can cut and heal links.

use crate::frame::{FrameDecoder, FrameError, decode, encode};
use crate::tls::{self, Identity, Pinned, Principal};
use crate::wal::{Wal, WalError};
use qlab_core::{Action, Context, Event, NodeId, Outbox, Protocol, Reply, Request};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A connection that sends this many undecodable frames is closed.
pub const MALFORMED_FRAMES_BEFORE_CLOSE: u64 = 16;

/// Everything on the wire between nodes and between the harness and a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Wire<M> {
    /// Node to node.
    Peer(M),
    /// Harness to node: a client request.
    Request(Request),
    /// Node to harness: a reply to a client.
    Reply(Reply),
    /// Harness to node.
    Control(Control),
    /// Node to harness.
    Report(Report),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// The harness's first frame on a new link (a QUIC stream exists for the peer
    /// only once bytes flow on it).
    Hello,
    /// Replace the node's outgoing link faults.
    Faults(LinkFaults),
    /// Stop cleanly (a crash is a kill, not a message).
    Shutdown,
    /// Send a `Report::Counters` now, carrying `tag` (experiments read counters at
    /// the edges of a measurement window).
    ReportCounters { tag: u64 },
    /// An operator's command for the protocol (a leadership transfer).
    Admin(qlab_core::AdminCommand),
    /// From now on the node's clock runs at `rate` against true time, going on from
    /// what it reads now (no jump), and timers already set fire when the clock reaches
    /// them at the new rate: the clock nemesis of Jepsen-style tests, applied while the
    /// node runs (the cluster file's `clocks` set a clock from the start).
    ClockRate { rate: f64 },
}

/// Faults applied to what this node sends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkFaults {
    /// Peers this node cannot reach (a partition is this on both sides).
    pub blocked_to: Vec<u32>,
    /// Probability that a message is dropped.
    pub loss: f64,
    /// Extra one-way delay added to every message.
    pub delay_ns: u64,
    /// Per destination node, the one-way delay to it instead of `delay_ns` (wide-area
    /// placement: each peer in its region); empty when every link has `delay_ns`.
    pub delay_ns_to: Vec<u64>,
    /// Standard deviation of each message's delay (normal, never below zero).
    pub jitter_ns: u64,
    /// Held before each answer to a client leaves: the one-way delay to the clients'
    /// region (the harness holds their requests for the other way).
    pub reply_delay_ns: u64,
}

impl LinkFaults {
    /// How long a message to `to` is held: its link's delay, with jitter drawn.
    fn delay_to(&self, to: u32, rng: &mut ChaCha8Rng) -> u64 {
        let base = self.delay_ns_to.get(to as usize).copied().unwrap_or(self.delay_ns);
        if self.jitter_ns == 0 {
            return base;
        }
        // Box–Muller: one standard normal draw from two uniform ones.
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (base as f64 + normal * self.jitter_ns as f64).max(0.0) as u64
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Report {
    /// The node is up and listening (sent when the harness connects).
    Ready { node: u32, restored_records: u64 },
    /// The events one protocol step reported for the checkers, stamped with
    /// nanoseconds since the cluster's start. One frame per step, not per event: a
    /// leader committing a batch of 64 entries reports 128 events, and a frame each
    /// would make the instrumentation, not the protocol, the bottleneck.
    Observed { node: u32, time_ns: u64, events: Vec<Event> },
    /// Counters since the process started.
    Counters(Counters),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub node: u32,
    /// The tag of the `ReportCounters` request this answers (0: periodic report).
    pub tag: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub malformed_frames: u64,
    pub dropped_sends: u64,
    /// Connections refused: handshakes that failed (a certificate not pinned for any
    /// node or the harness, a peer that gave up) and connections from no known principal.
    #[serde(default)]
    pub refused_connections: u64,
    /// User plus system CPU time of the process.
    pub cpu_ns: u64,
    /// Resident set size of the process when the report was made (0 where the kernel
    /// does not say).
    #[serde(default)]
    pub rss_bytes: u64,
    /// The protocol's own counters ([`Protocol::counters`]).
    #[serde(default)]
    pub protocol: Vec<(String, u64)>,
    /// The node's epoch (term, ballot, view) when the report was made, elections it
    /// lost included: how far a fault pushed the epochs.
    #[serde(default)]
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Storage {
    /// Records kept in memory: lost with the process (no crash safety).
    Memory,
    /// Records in a write-ahead log at this path, fsynced per step.
    Disk { path: PathBuf },
}

/// What one node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig<C> {
    pub id: u32,
    /// The node's clock against true cluster time (skewed clocks, for lease tests).
    pub clock: SkewedClock,
    /// Every node's address, indexed by id.
    pub addrs: Vec<SocketAddr>,
    pub identity: Identity,
    pub pinned: Pinned,
    pub protocol: C,
    pub storage: Storage,
    pub seed: u64,
    /// Unix time (ns) that event times count from; shared by the whole cluster.
    pub start_unix_ns: u64,
    pub max_frame_bytes: usize,
    /// Bound on each peer's send queue, in messages.
    pub send_queue_messages: usize,
    /// Exit when no harness has been connected for this long (0: never). A harness
    /// that was killed outright cannot stop its nodes; this makes them stop themselves.
    pub orphan_timeout_ms: u64,
}

impl<C> NodeConfig<C> {
    /// The same node with its protocol configuration replaced (a malicious replica's
    /// configuration wraps the honest one).
    pub fn with_protocol<D>(self, protocol: D) -> NodeConfig<D> {
        NodeConfig {
            id: self.id,
            clock: self.clock,
            addrs: self.addrs,
            identity: self.identity,
            pinned: self.pinned,
            protocol,
            storage: self.storage,
            seed: self.seed,
            start_unix_ns: self.start_unix_ns,
            max_frame_bytes: self.max_frame_bytes,
            send_queue_messages: self.send_queue_messages,
            orphan_timeout_ms: self.orphan_timeout_ms,
        }
    }
}

/// A node's clock as the protocol sees it: `offset_ns + rate × cluster time`, and a timer
/// of `d` in its time fires after `d / rate` of true time, as the simulator's
/// `set_clock_rate` does. A fast clock (rate > 1) thinks more time has passed than has,
/// so its leases and timeouts end early; a slow one holds them too long.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkewedClock {
    pub rate: f64,
    pub offset_ns: i64,
}

impl SkewedClock {
    /// True time.
    pub const TRUE: SkewedClock = SkewedClock { rate: 1.0, offset_ns: 0 };

    /// What the node reads at true cluster time `cluster_ns` (never below zero).
    pub fn local_ns(&self, cluster_ns: u64) -> u64 {
        if *self == SkewedClock::TRUE {
            return cluster_ns;
        }
        (self.offset_ns as f64 + self.rate * cluster_ns as f64).max(0.0) as u64
    }

    /// The true time a timer of `after_ns` on this clock takes.
    pub fn true_duration(&self, after_ns: u64) -> Duration {
        if self.rate == 1.0 {
            return Duration::from_nanos(after_ns);
        }
        Duration::from_nanos((after_ns as f64 / self.rate) as u64)
    }

    /// This clock running at `rate` from true time `cluster_ns` on: it reads there what
    /// it read before, so it never jumps (backwards or forwards) when its rate changes.
    pub fn at_rate_from(&self, cluster_ns: u64, rate: f64) -> SkewedClock {
        let local = self.local_ns(cluster_ns) as f64;
        SkewedClock { rate, offset_ns: (local - rate * cluster_ns as f64).round() as i64 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// Shared counters, updated by every task of the node.
#[derive(Default)]
struct Stats {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    messages_received: AtomicU64,
    malformed_frames: AtomicU64,
    dropped_sends: AtomicU64,
    refused_connections: AtomicU64,
}

enum Input<M> {
    Peer {
        from: u32,
        msg: M,
    },
    Request(Request),
    Control(Control),
    HarnessConnected,
    /// The harness's link closed; it was last heard from at `silent_since` (the
    /// transport's idle timeout earlier when the link timed out rather than closed).
    HarnessDisconnected {
        silent_since: Instant,
    },
}

/// A frame queued to a peer, not to be written before `not_before` (added delay).
struct Outgoing {
    frame: Vec<u8>,
    not_before: Option<Instant>,
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The process's resident set size now (`VmRSS` in `/proc/self/status`), 0 if unknown.
pub fn process_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// CPU time of this process (Linux `/proc/self/stat`, utime + stime); 0 elsewhere.
pub fn process_cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0 };
    // Fields after the parenthesized command name; utime and stime are 14th and 15th.
    let Some(rest) = stat.rsplit(')').next() else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    ticks * 10_000_000
}

/// Run one replica until it is told to shut down or its future is dropped (which
/// aborts every task it started: dropping it is how in-process tests "kill" a node).
/// How many steps in a row may leave work for [`Protocol::on_input_drained`] while
/// input keeps arriving: then one step runs as if the queue were empty and
/// [`Protocol::on_input_drained`] follows it, so a leader under a queue that never
/// empties still sends (a batch of at most this many inputs).
const MAX_STEPS_DEFERRING: u32 = 256;

pub async fn run_node<P>(config: NodeConfig<P::Config>) -> Result<(), NetError>
where
    P: Protocol + Send + 'static,
    P::Message: Serialize + DeserializeOwned + Send + Sync + 'static,
    P::Record: Serialize + DeserializeOwned + Send + 'static,
    P::Timer: Send,
{
    let me = config.id;
    let nodes = config.addrs.len() as u32;
    let addr = config.addrs[me as usize];
    // A previous incarnation in this process may still hold the port for a moment
    // while its connections drain; a killed process frees it at once.
    let mut attempts = 0;
    let endpoint = loop {
        match tls::endpoint(addr, &config.identity, config.pinned.clone()) {
            Ok(endpoint) => break endpoint,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => return Err(NetError::Bind { addr, source }),
        }
    };
    // Dropping this future (an in-process "kill") or returning closes every connection
    // at once, so the address is free for the next incarnation.
    let _close_on_drop = CloseOnDrop(endpoint.clone());
    let (mut storage, records): (Option<Wal>, Vec<P::Record>) = match &config.storage {
        Storage::Memory => (None, Vec::new()),
        Storage::Disk { path } => {
            let (wal, recovered) = Wal::open::<P::Record>(path)?;
            if recovered.torn_tail_bytes > 0 {
                // The node's log (its stderr) says what recovery cut, and why it may.
                eprintln!(
                    "node {me}: {}: cut a torn tail of {} bytes ({} intact records of an unfinished batch{}); kept {} records",
                    path.display(),
                    recovered.torn_tail_bytes,
                    recovered.torn_tail_intact_records,
                    if recovered.torn_tail_damaged { " and a damaged or partly written record" } else { "" },
                    recovered.records.len()
                );
            }
            (Some(wal), recovered.records)
        }
    };
    let restored_records = records.len() as u64;
    let mut protocol = if records.is_empty() {
        P::new(&config.protocol, NodeId(me), nodes)
    } else {
        P::restore(&config.protocol, NodeId(me), nodes, &records)
    };
    drop(records);

    let stats = Arc::new(Stats::default());
    let mut tasks = tokio::task::JoinSet::new();
    let (inbox_tx, mut inbox) = mpsc::channel::<Input<P::Message>>(16_384);
    let (report_tx, report_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let report_rx = Arc::new(tokio::sync::Mutex::new(report_rx));

    tasks.spawn(accept_loop::<P::Message>(
        endpoint.clone(),
        config.pinned.clone(),
        inbox_tx.clone(),
        report_rx,
        stats.clone(),
        config.max_frame_bytes,
    ));
    let mut peer_queues: HashMap<u32, mpsc::Sender<Outgoing>> = HashMap::new();
    for peer in (0..nodes).filter(|p| *p != me) {
        let (tx, rx) = mpsc::channel(config.send_queue_messages.max(1));
        peer_queues.insert(peer, tx);
        tasks.spawn(peer_sender(endpoint.clone(), peer, config.addrs[peer as usize], rx));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (me as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut fault_rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0xfa01_7000 ^ me as u64);
    let mut faults = LinkFaults::default();
    // The protocol's clock reads cluster time (ns since `start_unix_ns`), as the
    // simulator's does: an attack window or a lease set in cluster time means the same
    // on every node, and a restarted node's clock goes on from where the cluster is
    // rather than from zero. It is read once from the wall clock and then advanced by the
    // monotonic one, so a wall-clock step never moves it backwards.
    let clock_base_ns = unix_ns().saturating_sub(config.start_unix_ns);
    let started = Instant::now();
    let mut clock = config.clock;
    let mut timers: BTreeMap<(Instant, u64), P::Timer> = BTreeMap::new();
    let mut timer_keys: HashMap<P::Timer, (Instant, u64)> = HashMap::new();
    let mut timer_seq = 0u64;
    let mut outbox: Outbox<P::Message, P::Timer, P::Record> = Outbox::default();
    let mut counters_due = Instant::now() + Duration::from_millis(500);
    let mut harness_links = 0u32;
    let mut orphaned_since = Some(Instant::now());
    // Whether more input is queued behind the step about to run, and whether a step
    // ran so since the queue was last empty ([`Protocol::on_input_drained`] is due).
    let mut input_waiting = false;
    let mut drained_due = false;
    let mut steps_deferring = 0u32;

    // One step: run the handler, then carry out its outbox in contract order.
    macro_rules! step {
        ($handler:expr) => {{
            let now_ns = clock.local_ns(clock_base_ns + started.elapsed().as_nanos() as u64);
            {
                let mut ctx = Context::new(now_ns, &mut rng, &mut outbox).with_input_waiting(input_waiting);
                #[allow(clippy::redundant_closure_call)]
                ($handler)(&mut protocol, &mut ctx);
            }
            let mut records = Vec::new();
            let mut rest = Vec::new();
            for action in outbox.actions.drain(..) {
                match action {
                    Action::Persist { record } => records.push(record),
                    other => rest.push(other),
                }
            }
            if let Some(wal) = storage.as_mut() {
                // Durable before anything of this step leaves the node. A snapshot record
                // makes everything persisted before it obsolete: the log restarts there.
                match records.iter().rposition(P::supersedes_earlier_records) {
                    Some(base) => wal.rewrite(&records[base..])?,
                    None => wal.append_batch(&records)?,
                }
            }
            let mut events = Vec::new();
            for action in rest {
                match action {
                    Action::Persist { .. } => unreachable!(),
                    Action::Send { to, msg } => {
                        send_peer(&peer_queues, &faults, &mut fault_rng, &stats, to.0, &msg);
                    }
                    Action::Broadcast { msg } => {
                        for peer in (0..nodes).filter(|p| *p != me) {
                            send_peer(&peer_queues, &faults, &mut fault_rng, &stats, peer, &msg);
                        }
                    }
                    Action::SetTimer { timer, after } => {
                        if let Some(old) = timer_keys.remove(&timer) {
                            timers.remove(&old);
                        }
                        timer_seq += 1;
                        let key = (Instant::now() + clock.true_duration(after), timer_seq);
                        timers.insert(key, timer);
                        timer_keys.insert(timer, key);
                    }
                    Action::CancelTimer { timer } => {
                        if let Some(old) = timer_keys.remove(&timer) {
                            timers.remove(&old);
                        }
                    }
                    Action::Reply { reply } => {
                        let mut frame = Vec::new();
                        encode(&Wire::<P::Message>::Reply(reply), &mut frame);
                        if faults.reply_delay_ns > 0 {
                            // The clients are a region away: the answer takes that long,
                            // without holding up anything else.
                            let (report_tx, delay) = (report_tx.clone(), Duration::from_nanos(faults.reply_delay_ns));
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = report_tx.send(frame);
                            });
                        } else {
                            let _ = report_tx.send(frame);
                        }
                    }
                    Action::Observe { event } => events.push(event),
                    // Real mode does not explain (its contexts are not `explaining`).
                    Action::Ignored { .. } => {}
                    // Coverage marks are counted by the simulator and the explorer;
                    // real mode's reports do not carry them yet.
                    Action::Reached { .. } => {}
                }
            }
            if !events.is_empty() {
                let time_ns = unix_ns().saturating_sub(config.start_unix_ns);
                let mut frame = Vec::new();
                encode(&Wire::<P::Message>::Report(Report::Observed { node: me, time_ns, events }), &mut frame);
                let _ = report_tx.send(frame);
            }
        }};
    }

    step!(|p: &mut P, ctx: &mut Context<'_, P>| p.on_start(ctx));
    loop {
        let next_timer = timers.first_key_value().map(|(k, _)| k.0);
        let wake = next_timer.map_or(counters_due, |t| t.min(counters_due));
        tokio::select! {
            input = inbox.recv() => {
                let Some(input) = input else { break };
                // A burst is bounded so that a queue that never empties still sends:
                // at the bound the step runs as if the queue were empty and what waited
                // is sent after it, whatever kind of input the step was.
                let burst_full = steps_deferring >= MAX_STEPS_DEFERRING;
                input_waiting = !inbox.is_empty() && !burst_full;
                steps_deferring = if input_waiting { steps_deferring + 1 } else { 0 };
                drained_due |= input_waiting;
                match input {
                    Input::Peer { from, msg } => {
                        step!(|p: &mut P, ctx: &mut Context<'_, P>| p.on_message(ctx, NodeId(from), msg));
                    }
                    Input::Request(request) => {
                        step!(|p: &mut P, ctx: &mut Context<'_, P>| p.on_request(ctx, request));
                    }
                    Input::Control(Control::Faults(new_faults)) => faults = new_faults,
                    Input::Control(Control::ClockRate { rate }) if rate.is_finite() && rate > 0.0 => {
                        let now = Instant::now();
                        let cluster_ns = clock_base_ns + started.elapsed().as_nanos() as u64;
                        let old_rate = clock.rate;
                        clock = clock.at_rate_from(cluster_ns, rate);
                        // What is left of each timer in the clock's own time, at the new rate.
                        timers = timers
                            .into_iter()
                            .map(|((due, seq), timer)| {
                                let left = due.saturating_duration_since(now).mul_f64(old_rate / rate);
                                ((now + left, seq), timer)
                            })
                            .collect();
                        timer_keys = timers.iter().map(|(key, timer)| (*timer, *key)).collect();
                    }
                    // A rate that is not a positive number is refused, as a malformed frame is.
                    Input::Control(Control::ClockRate { .. }) => {
                        stats.malformed_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Input::Control(Control::Shutdown) => break,
                    Input::Control(Control::Hello) => {}
                    Input::Control(Control::Admin(command)) => {
                        step!(|p: &mut P, ctx: &mut Context<'_, P>| p.on_admin(ctx, command));
                    }
                    Input::Control(Control::ReportCounters { tag }) => {
                        let mut counters = snapshot(me, &stats, &protocol);
                        counters.tag = tag;
                        let mut frame = Vec::new();
                        encode(&Wire::<P::Message>::Report(Report::Counters(counters)), &mut frame);
                        let _ = report_tx.send(frame);
                    }
                    Input::HarnessDisconnected { silent_since } => {
                        harness_links = harness_links.saturating_sub(1);
                        if harness_links == 0 {
                            orphaned_since = Some(silent_since);
                        }
                    }
                    Input::HarnessConnected => {
                        harness_links += 1;
                        orphaned_since = None;
                        let mut frame = Vec::new();
                        encode(&Wire::<P::Message>::Report(Report::Ready { node: me, restored_records }), &mut frame);
                        let _ = report_tx.send(frame);
                    }
                }
                input_waiting = false;
                if drained_due && (inbox.is_empty() || burst_full) {
                    drained_due = false;
                    step!(|p: &mut P, ctx: &mut Context<'_, P>| p.on_input_drained(ctx));
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                while let Some(entry) = timers.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let timer = entry.remove();
                    timer_keys.remove(&timer);
                    step!(|p: &mut P, ctx: &mut Context<'_, P>| p.on_timer(ctx, timer));
                }
                let orphan_limit = Duration::from_millis(config.orphan_timeout_ms);
                if config.orphan_timeout_ms > 0 && orphaned_since.is_some_and(|t| now.saturating_duration_since(t) >= orphan_limit) {
                    break; // the harness is gone for good: do not linger
                }
                if now >= counters_due {
                    counters_due = now + Duration::from_millis(500);
                    let mut frame = Vec::new();
                    encode(&Wire::<P::Message>::Report(Report::Counters(snapshot(me, &stats, &protocol))), &mut frame);
                    let _ = report_tx.send(frame);
                }
            }
        }
    }
    let mut frame = Vec::new();
    encode(&Wire::<P::Message>::Report(Report::Counters(snapshot(me, &stats, &protocol))), &mut frame);
    let _ = report_tx.send(frame);
    // Give the reports a moment to leave before the endpoint closes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    endpoint.close(0u32.into(), b"shutdown");
    tasks.abort_all();
    Ok(())
}

struct CloseOnDrop(quinn::Endpoint);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(0u32.into(), b"stopped");
    }
}

fn snapshot<P: Protocol>(node: u32, stats: &Stats, protocol: &P) -> Counters {
    Counters {
        protocol: protocol.counters().into_iter().map(|(name, value)| (name.to_string(), value)).collect(),
        node,
        tag: 0,
        messages_sent: stats.messages_sent.load(Ordering::Relaxed),
        bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
        messages_received: stats.messages_received.load(Ordering::Relaxed),
        malformed_frames: stats.malformed_frames.load(Ordering::Relaxed),
        dropped_sends: stats.dropped_sends.load(Ordering::Relaxed),
        refused_connections: stats.refused_connections.load(Ordering::Relaxed),
        cpu_ns: process_cpu_ns(),
        rss_bytes: process_rss_bytes(),
        epoch: protocol.epoch(),
    }
}

fn send_peer<M: Serialize>(
    queues: &HashMap<u32, mpsc::Sender<Outgoing>>,
    faults: &LinkFaults,
    rng: &mut ChaCha8Rng,
    stats: &Stats,
    to: u32,
    msg: &M,
) {
    let Some(queue) = queues.get(&to) else { return };
    let mut frame = Vec::new();
    encode(&Wire::Peer(msg), &mut frame);
    stats.messages_sent.fetch_add(1, Ordering::Relaxed);
    stats.bytes_sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
    if faults.blocked_to.contains(&to) || (faults.loss > 0.0 && rng.random_bool(faults.loss.min(1.0))) {
        stats.dropped_sends.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let delay_ns = faults.delay_to(to, rng);
    let not_before = (delay_ns > 0).then(|| Instant::now() + Duration::from_nanos(delay_ns));
    if queue.try_send(Outgoing { frame, not_before }).is_err() {
        // Queue full (peer slow or down): shed load instead of blocking the protocol.
        stats.dropped_sends.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keep a connection and one long-lived stream to `peer`, writing queued frames.
async fn peer_sender(endpoint: quinn::Endpoint, peer: u32, addr: SocketAddr, mut queue: mpsc::Receiver<Outgoing>) {
    let name = Principal::Node(peer).server_name();
    let mut backoff = Duration::from_millis(20);
    let mut batch = Vec::with_capacity(64 * 1024);
    // A frame taken from the queue that is not yet due (see the coalescing below).
    let mut held: Option<Outgoing> = None;
    loop {
        let stream = async {
            let connection = endpoint.connect(addr, &name).ok()?.await.ok()?;
            connection.open_uni().await.ok()
        }
        .await;
        let Some(mut stream) = stream else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
            continue;
        };
        backoff = Duration::from_millis(20);
        loop {
            let first = match held.take() {
                Some(frame) => frame,
                None => match queue.recv().await {
                    Some(frame) => frame,
                    None => return,
                },
            };
            if let Some(at) = first.not_before {
                tokio::time::sleep_until(at).await;
            }
            batch.clear();
            batch.extend_from_slice(&first.frame);
            // Coalesce what is already queued and already due into one write. A frame
            // still held for its delay ends the batch and starts the next: waiting for
            // it here would hold everything before it past its own time, and under
            // steady traffic the batch would never be written.
            while batch.len() < 64 * 1024 {
                match queue.try_recv() {
                    Ok(next) if next.not_before.is_some_and(|at| at > Instant::now()) => {
                        held = Some(next);
                        break;
                    }
                    Ok(next) => batch.extend_from_slice(&next.frame),
                    Err(_) => break,
                }
            }
            if stream.write_all(&batch).await.is_err() {
                break; // peer gone: reconnect; this batch is lost like packets are
            }
        }
    }
}

async fn accept_loop<M>(
    endpoint: quinn::Endpoint,
    pinned: Pinned,
    inbox: mpsc::Sender<Input<M>>,
    reports: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>>,
    stats: Arc<Stats>,
    max_frame_bytes: usize,
) where
    M: DeserializeOwned + Send + 'static,
{
    let mut handlers = tokio::task::JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        let pinned = pinned.clone();
        let inbox = inbox.clone();
        let reports = reports.clone();
        let stats = stats.clone();
        handlers.spawn(async move {
            let Ok(connection) = incoming.await else {
                stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                return;
            };
            match pinned.identify(&connection) {
                Some(Principal::Node(from)) => {
                    while let Ok(stream) = connection.accept_uni().await {
                        let inbox = inbox.clone();
                        let stats = stats.clone();
                        let connection = connection.clone();
                        tokio::spawn(read_stream(
                            stream,
                            Speaker::Node(from),
                            inbox,
                            stats,
                            connection,
                            max_frame_bytes,
                        ));
                    }
                }
                Some(Principal::Harness) => {
                    let Ok((send, recv)) = connection.accept_bi().await else { return };
                    let _ = inbox.send(Input::HarnessConnected).await;
                    let writer = tokio::spawn(write_reports(send, reports));
                    read_stream(recv, Speaker::Harness, inbox.clone(), stats, connection.clone(), max_frame_bytes)
                        .await;
                    writer.abort();
                    // A harness killed outright sends no close: the link ends when the
                    // idle timeout runs out, that long after the harness was last heard.
                    let now = Instant::now();
                    let silent_since = match connection.close_reason() {
                        Some(quinn::ConnectionError::TimedOut) => {
                            now.checked_sub(crate::tls::IDLE_TIMEOUT).unwrap_or(now)
                        }
                        _ => now,
                    };
                    let _ = inbox.send(Input::HarnessDisconnected { silent_since }).await;
                }
                None => {
                    stats.refused_connections.fetch_add(1, Ordering::Relaxed);
                    connection.close(1u32.into(), b"unknown certificate");
                }
            }
        });
        // Reap finished handlers so the set does not grow with reconnects.
        while handlers.try_join_next().is_some() {}
    }
}

/// Who speaks on a stream, and so which frames are allowed on it.
#[derive(Clone, Copy)]
enum Speaker {
    Node(u32),
    Harness,
}

/// Read frames until the stream ends. A node may only send `Wire::Peer`, the harness
/// only `Request` and `Control`; anything else, or anything undecodable, is counted as
/// malformed and dropped, and a connection that keeps doing it is closed.
async fn read_stream<M: DeserializeOwned>(
    mut stream: quinn::RecvStream,
    speaker: Speaker,
    inbox: mpsc::Sender<Input<M>>,
    stats: Arc<Stats>,
    connection: quinn::Connection,
    max_frame_bytes: usize,
) {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    let mut malformed_here = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match stream.read(&mut buffer).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => return,
        };
        decoder.push(&buffer[..read]);
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(payload)) => payload,
                Ok(None) => break,
                Err(FrameError::TooLarge { .. }) | Err(FrameError::Malformed { .. }) => {
                    // A bad length cannot be resynchronized: drop the connection.
                    stats.malformed_frames.fetch_add(1, Ordering::Relaxed);
                    connection.close(3u32.into(), b"oversized frame");
                    return;
                }
            };
            let input = match (speaker, decode::<Wire<M>>(&payload)) {
                (Speaker::Node(from), Ok(Wire::Peer(msg))) => {
                    stats.messages_received.fetch_add(1, Ordering::Relaxed);
                    Some(Input::Peer { from, msg })
                }
                (Speaker::Harness, Ok(Wire::Request(request))) => Some(Input::Request(request)),
                (Speaker::Harness, Ok(Wire::Control(control))) => Some(Input::Control(control)),
                _ => None,
            };
            match input {
                Some(input) => {
                    if inbox.send(input).await.is_err() {
                        return;
                    }
                }
                None => {
                    stats.malformed_frames.fetch_add(1, Ordering::Relaxed);
                    malformed_here += 1;
                    if malformed_here > MALFORMED_FRAMES_BEFORE_CLOSE {
                        connection.close(2u32.into(), b"malformed frames");
                        return;
                    }
                }
            }
        }
    }
}

async fn write_reports(
    mut send: quinn::SendStream,
    reports: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>>,
) {
    let mut reports = reports.lock().await;
    let mut batch = Vec::with_capacity(crate::frame::COALESCED_WRITE_BYTES);
    while let Some(first) = reports.recv().await {
        crate::frame::coalesce_queued(&mut batch, &first, &mut reports);
        if send.write_all(&batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod skewed_clock_tests {
    use super::*;

    #[test]
    fn a_skewed_clock_reads_offset_plus_rate_times_true_time_and_stretches_its_timers() {
        assert_eq!(SkewedClock::TRUE.local_ns(1_234), 1_234);
        let fast = SkewedClock { rate: 1.5, offset_ns: 10 };
        assert_eq!(fast.local_ns(1_000), 1_510);
        assert_eq!(fast.true_duration(300), Duration::from_nanos(200));
        let behind = SkewedClock { rate: 1.0, offset_ns: -5_000 };
        assert_eq!(behind.local_ns(1_000), 0, "a clock behind the cluster's start reads zero, not a wrapped number");
        assert_eq!(behind.local_ns(9_000), 4_000);
        assert_eq!(behind.true_duration(300), Duration::from_nanos(300));
    }

    /// A clock whose rate changes goes on from what it read: no step, then the new rate.
    #[test]
    fn a_clock_changing_rate_goes_on_from_where_it_was() {
        let fast = SkewedClock { rate: 1.5, offset_ns: 10 };
        let slowed = fast.at_rate_from(1_000, 0.5);
        assert_eq!(slowed.local_ns(1_000), fast.local_ns(1_000));
        assert_eq!(slowed.local_ns(3_000), 1_510 + 1_000);
        let back = slowed.at_rate_from(3_000, 1.0);
        assert_eq!(back.local_ns(3_000), 2_510);
        assert_eq!(back.local_ns(4_000), 3_510);
        assert_eq!(SkewedClock::TRUE.at_rate_from(5_000, 1.0), SkewedClock::TRUE);
    }
}
