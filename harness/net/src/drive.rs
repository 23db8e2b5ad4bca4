//! Driving sans-IO clients against a real cluster, and collecting what nodes report.
//!
//! The harness runs every client of an experiment in its own process: each is the
//! protocol's sans-IO [`Client`] (leader finding, retries), fed replies from the node
//! links and woken by tokio timers. [`Driver::next`] plays the role the simulator's
//! `run_until` plays in simulation: it processes traffic until a client operation
//! completes or the deadline passes, so experiment code reads the same in both modes.

use crate::harness::{FromNode, Harness};
use crate::runtime::{Counters, Report, Wire};
use qlab_core::{Client, ClientAction, ClientOutbox, Event, NodeId, OpResult, Request};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A client operation that finished.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    pub client: usize,
    pub request: Request,
    pub result: OpResult,
    pub from: u32,
    /// Where the operation's latency counts from, in cluster time: when the client was
    /// handed it, or for an open-loop request the earlier time it arrived
    /// ([`Driver::submit_arrived`]).
    pub submitted_ns: u64,
    /// When the answer arrived: nanoseconds since the cluster's start.
    pub time_ns: u64,
}

/// An event a node reported, in cluster time.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub node: u32,
    pub time_ns: u64,
    pub event: Event,
}

pub struct Driver<M, C: Client> {
    harness: Harness<M>,
    from_nodes: mpsc::UnboundedReceiver<FromNode<M>>,
    clients: Vec<C>,
    /// Pending client timers in deadline order; `timer_index` finds an entry to
    /// replace or cancel, so neither costs a scan over every client.
    timers: std::collections::BTreeMap<(Instant, usize, u64), C::Timer>,
    timer_index: HashMap<(usize, C::Timer), (Instant, u64)>,
    timer_seq: u64,
    outstanding: Vec<Option<(Request, u64)>>,
    start: Instant,
    start_unix_ns: u64,
    /// What the nodes reported, in arrival order; a long run takes them out as it goes
    /// ([`Driver::drain_observations`]).
    pub observations: Vec<Observed>,
    /// The highest epoch any node reported winning, and that node: kept apart from
    /// `observations` so it survives their being taken.
    pub latest_elected: Option<(u64, u32)>,
    pub counters: HashMap<u32, Counters>,
    /// Every resident-set-size report, as (ns since the cluster's start, node, bytes):
    /// nodes report every 500 ms and when asked, so this is each node's memory over time.
    pub rss_samples: Vec<(u64, u32, u64)>,
    /// Counters sent on request, by request tag and node.
    tagged: HashMap<u64, HashMap<u32, Counters>>,
    next_tag: u64,
    /// Nodes that reported `Ready` (cleared by [`Driver::forget_ready`]).
    pub ready: HashSet<u32>,
    /// Per node: how long a client request takes to reach it (clients a region away);
    /// empty: at once.
    request_delay_ns: Vec<u64>,
}

impl<M, C> Driver<M, C>
where
    M: Serialize + DeserializeOwned + Send + 'static,
    C: Client,
{
    pub fn new(
        harness: Harness<M>,
        from_nodes: mpsc::UnboundedReceiver<FromNode<M>>,
        clients: Vec<C>,
        start_unix_ns: u64,
    ) -> Self {
        let now_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        // `start` is the Instant that corresponds to `start_unix_ns`.
        let start = Instant::now() - std::time::Duration::from_nanos(now_unix.saturating_sub(start_unix_ns));
        let n = clients.len();
        Driver {
            harness,
            from_nodes,
            clients,
            timers: std::collections::BTreeMap::new(),
            timer_index: HashMap::new(),
            timer_seq: 0,
            outstanding: vec![None; n],
            start,
            start_unix_ns,
            observations: Vec::new(),
            latest_elected: None,
            counters: HashMap::new(),
            rss_samples: Vec::new(),
            tagged: HashMap::new(),
            next_tag: 1,
            ready: HashSet::new(),
            request_delay_ns: Vec::new(),
        }
    }

    pub fn harness(&self) -> &Harness<M> {
        &self.harness
    }
    pub fn start_unix_ns(&self) -> u64 {
        self.start_unix_ns
    }
    /// Nanoseconds since the cluster's start.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    pub fn is_busy(&self, client: usize) -> bool {
        self.outstanding[client].is_some()
    }
    /// Delay every client request to node `n` by `delays_ns[n]` (wide-area placement:
    /// the clients' one-way delay to each node; the node delays its answers).
    pub fn set_request_delays(&mut self, delays_ns: Vec<u64>) {
        self.request_delay_ns = delays_ns;
    }
    pub fn forget_ready(&mut self) {
        self.ready.clear();
    }

    pub fn submit(&mut self, client: usize, request: Request) {
        let now = self.now_ns();
        self.submit_arrived(client, request, now);
    }

    /// Hand `request` to `client` now, its latency counting from `arrived_ns` (cluster
    /// time, at most now): an open-loop request that arrived while the harness was busy
    /// is charged the wait, as its user would have been.
    pub fn submit_arrived(&mut self, client: usize, request: Request, arrived_ns: u64) {
        assert!(self.outstanding[client].is_none(), "client {client} already busy");
        let now = self.now_ns();
        self.outstanding[client] = Some((request.clone(), arrived_ns.min(now)));
        let mut out = ClientOutbox::default();
        self.clients[client].submit(now, request, &mut out);
        self.carry_out(client, out);
    }

    fn carry_out(&mut self, client: usize, mut out: ClientOutbox<C::Timer>) {
        for action in out.actions.drain(..) {
            match action {
                ClientAction::Send { to, request } => match self.request_delay_ns.get(to.0 as usize) {
                    Some(delay) if *delay > 0 => {
                        self.harness.send_after(to.0, &Wire::Request(request), std::time::Duration::from_nanos(*delay))
                    }
                    _ => self.harness.send(to.0, &Wire::Request(request)),
                },
                ClientAction::SetTimer { timer, after } => {
                    self.cancel_timer(client, timer);
                    self.timer_seq += 1;
                    let at = Instant::now() + std::time::Duration::from_nanos(after);
                    self.timers.insert((at, client, self.timer_seq), timer);
                    self.timer_index.insert((client, timer), (at, self.timer_seq));
                }
                ClientAction::CancelTimer { timer } => self.cancel_timer(client, timer),
            }
        }
    }

    fn cancel_timer(&mut self, client: usize, timer: C::Timer) {
        if let Some((at, seq)) = self.timer_index.remove(&(client, timer)) {
            self.timers.remove(&(at, client, seq));
        }
    }

    /// Process traffic until a client operation completes (returned) or `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Option<Done> {
        loop {
            let next_timer = self.timers.first_key_value().map(|(&(at, client, seq), timer)| (at, client, seq, *timer));
            let wake = next_timer.map_or(deadline, |(at, ..)| at.min(deadline));
            tokio::select! {
                message = self.from_nodes.recv() => {
                    let FromNode { node, wire, received_ns } = message?;
                    if let Some(done) = self.handle(node, wire, received_ns) {
                        return Some(done);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if let Some((at, client, seq, timer)) = next_timer
                        && at <= Instant::now() {
                            self.timers.remove(&(at, client, seq));
                            self.timer_index.remove(&(client, timer));
                            let mut out = ClientOutbox::default();
                            let now = self.now_ns();
                            self.clients[client].on_timer(now, timer, &mut out);
                            self.carry_out(client, out);
                        }
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    fn handle(&mut self, node: u32, wire: Wire<M>, received_ns: u64) -> Option<Done> {
        match wire {
            Wire::Reply(reply) => {
                let client = reply.client.0 as usize;
                if client >= self.clients.len() || self.outstanding[client].is_none() {
                    return None;
                }
                let mut out = ClientOutbox::default();
                let result = self.clients[client].on_reply(received_ns, NodeId(node), reply, &mut out);
                self.carry_out(client, out);
                let result = result?;
                let (request, submitted_ns) = self.outstanding[client].take().expect("outstanding request");
                Some(Done { client, request, result, from: node, submitted_ns, time_ns: received_ns })
            }
            Wire::Report(Report::Observed { node, time_ns, events }) => {
                for event in &events {
                    if let Event::Elected { epoch, .. } = event
                        && self.latest_elected.is_none_or(|latest| (*epoch, node) > latest)
                    {
                        self.latest_elected = Some((*epoch, node));
                    }
                }
                self.observations.extend(events.into_iter().map(|event| Observed { node, time_ns, event }));
                None
            }
            Wire::Report(Report::Ready { node, .. }) => {
                self.ready.insert(node);
                None
            }
            Wire::Report(Report::Counters(counters)) => {
                if counters.rss_bytes > 0 {
                    self.rss_samples.push((received_ns, counters.node, counters.rss_bytes));
                }
                if counters.tag != 0 {
                    self.tagged.entry(counters.tag).or_default().insert(counters.node, counters.clone());
                }
                self.counters.insert(counters.node, counters);
                None
            }
            Wire::Peer(_) | Wire::Request(_) | Wire::Control(_) => None,
        }
    }

    /// Ask every node for its counters now; read them with [`Driver::counters_for`]
    /// once they have arrived (they come in while [`Driver::next`] runs).
    pub fn request_counters(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        for node in 0..self.harness.nodes() {
            self.harness.send(node, &Wire::Control(crate::runtime::Control::ReportCounters { tag }));
        }
        tag
    }

    /// The counters every node sent for request `tag`, in node order, if all arrived.
    pub fn counters_for(&self, tag: u64) -> Option<Vec<Counters>> {
        let by_node = self.tagged.get(&tag)?;
        (0..self.harness.nodes()).map(|n| by_node.get(&n).cloned()).collect()
    }

    /// The counters node `node` sent for request `tag`, if they arrived.
    pub fn counters_for_node(&self, tag: u64, node: u32) -> Option<Counters> {
        self.tagged.get(&tag)?.get(&node).cloned()
    }

    /// The observations that arrived since the last call, in arrival order, leaving
    /// the buffer's memory in place: at full load a second brings hundreds of
    /// thousands, and a fresh buffer each time cost the harness its regrowth and a
    /// page fault per new page.
    pub fn drain_observations(&mut self) -> std::vec::Drain<'_, Observed> {
        self.observations.drain(..)
    }

    /// Observations sorted by cluster time (each node's stream is already ordered).
    pub fn observations_in_time_order(&self) -> Vec<Observed> {
        let mut all = self.observations.clone();
        all.sort_by_key(|o| o.time_ns);
        all
    }
}
