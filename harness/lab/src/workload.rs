//! Client workloads, closed- or open-loop, and the client history they leave.
//!
//! Each client keeps one operation outstanding. Closed loop: when it completes, the
//! client thinks for `think_ns` and issues the next, so a slow system is offered less
//! load. Open loop (`arrival_rate_per_s`): requests arrive at exponentially spaced
//! times (a Poisson process) whatever the system does, and each is handed to a free
//! client; an arrival that finds every client busy is dropped and counted, so the
//! clients bound what is outstanding and an overloaded system cannot exhaust memory.
//! An open-loop request's latency counts from its arrival time, not from when it was
//! handed over, so a harness that falls behind cannot hide a stall (no coordinated
//! omission); its history interval still starts when it was handed over, which is
//! when the system could first see it.
//!
//! Written values are unique (client id and sequence number, padded to
//! `value_bytes`), which is what lets the linearizability checker tell every write
//! apart. Every invocation and completion is recorded in [`Workload::history`] with the
//! virtual time the client saw it.

use qlab_check::linearizability::{HistoryChecker, HistoryOp, LinCheck, OpHandle, check_history};
use qlab_core::{Client, ClientId, Nanos, Op, OpResult, Protocol, Request};
use qlab_sim::{Completion, Sim, Step};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    pub clients: u32,
    pub keys: u64,
    pub value_bytes: usize,
    pub think_ns: Nanos,
    /// Fraction of operations that are reads; `cas_ratio` of the rest are CAS.
    pub read_ratio: f64,
    pub cas_ratio: f64,
    /// The last `readers` of the clients only read, like a dashboard polling the store.
    /// They stay with whichever replica answers their reads, which is what exposes a
    /// replica answering from stale state.
    pub readers: u32,
    /// Open loop: requests arriving per second, handed to whichever client is free
    /// (`None`: closed loop).
    pub arrival_rate_per_s: Option<f64>,
}

/// Open-loop arrivals: a Poisson process on its own random stream, so the arrival
/// times do not depend on which operations are drawn.
struct Arrivals {
    rate_per_ns: f64,
    rng: ChaCha8Rng,
    /// The next arrival (`None`: not started, or stopped).
    next_at: Option<Nanos>,
    /// Clients without an open operation, in the order they became free.
    free: std::collections::VecDeque<usize>,
    /// Per client: the arrival time of its open operation (the latency origin).
    arrived_at: Vec<Nanos>,
    /// Arrivals so far, and those dropped because every client was busy.
    count: u64,
    dropped: u64,
}

impl Arrivals {
    fn gap_ns(&mut self) -> Nanos {
        // Inverse transform of the exponential distribution; 1 - u is in (0, 1].
        let u: f64 = self.rng.random();
        ((-(1.0 - u).ln() / self.rate_per_ns).round() as Nanos).max(1)
    }
}

pub struct Workload {
    config: WorkloadConfig,
    rng: ChaCha8Rng,
    next_seq: Vec<u64>,
    /// Per client: its open operation.
    open: Vec<Option<Open>>,
    /// Per client: when it submits its next operation (`None`: busy or stopped).
    ready_at: Vec<Option<Nanos>>,
    /// Per client: the last value it saw for each key, to build plausible CAS.
    last_seen: Vec<std::collections::HashMap<u64, Option<Vec<u8>>>>,
    /// Every operation, unless the history is checked as it is made (`checker`).
    pub history: Vec<HistoryOp>,
    checker: Option<HistoryChecker>,
    stopped: bool,
    arrivals: Option<Arrivals>,
}

#[derive(Clone, Copy, Debug)]
enum Open {
    /// Index in `history`.
    Recorded(usize),
    /// Handle in `checker`.
    Streamed(OpHandle),
}

impl Workload {
    /// Clients `0..clients` must already be added to the simulator in that order.
    pub fn new(config: WorkloadConfig, seed: u64) -> Self {
        let n = config.clients as usize;
        let arrivals = config.arrival_rate_per_s.map(|rate_per_s| Arrivals {
            rate_per_ns: rate_per_s / 1e9,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0a11_1e5c_0000_0002),
            next_at: None,
            free: (0..n).collect(),
            arrived_at: vec![0; n],
            count: 0,
            dropped: 0,
        });
        Workload {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c11e_0000_0001),
            next_seq: vec![0; n],
            open: vec![None; n],
            ready_at: vec![None; n],
            last_seen: vec![Default::default(); n],
            history: Vec::new(),
            checker: None,
            stopped: false,
            arrivals,
        }
    }

    /// Open loop: requests that have arrived so far, and how many of them were dropped
    /// because every client was busy. `None` for closed-loop clients.
    pub fn arrivals_and_drops(&self) -> Option<(u64, u64)> {
        self.arrivals.as_ref().map(|a| (a.count, a.dropped))
    }

    /// Where client `client`'s open operation's latency counts from, handed over at
    /// `now`: its arrival time in open loop, `now` in closed loop.
    pub fn latency_origin(&self, client: usize, now: Nanos) -> Nanos {
        self.arrivals.as_ref().map_or(now, |a| a.arrived_at[client].min(now))
    }

    /// Check linearizability as operations happen instead of keeping the history: for
    /// runs too long to hold it (see [`HistoryChecker`]).
    pub fn check_as_it_goes(mut self) -> Self {
        self.checker = Some(HistoryChecker::new());
        self
    }

    /// The linearizability verdict on everything so far (for a streamed history, the
    /// checker's final search; it can be asked once).
    pub fn linearizability(&mut self) -> LinCheck {
        match self.checker.take() {
            Some(checker) => checker.finish(),
            None => check_history(&self.history),
        }
    }

    /// Operations the history checker holds (0 when the history is kept whole).
    pub fn operations_held(&self) -> usize {
        self.checker.as_ref().map_or(0, HistoryChecker::operations_held)
    }

    /// Every client will start at `at` (open loop: the first arrival is one drawn gap
    /// after `at`).
    pub fn start_all_at(&mut self, at: Nanos) {
        if let Some(arrivals) = &mut self.arrivals {
            arrivals.next_at = Some(at + arrivals.gap_ns());
            return;
        }
        for ready in &mut self.ready_at {
            *ready = Some(at);
        }
    }

    /// Submit no new operations from now on (open ones stay open).
    pub fn stop(&mut self) {
        self.stopped = true;
        self.ready_at.iter_mut().for_each(|r| *r = None);
        if let Some(arrivals) = &mut self.arrivals {
            arrivals.next_at = None;
        }
    }

    fn value(&mut self, client: usize, seq: u64) -> Vec<u8> {
        let mut value = Vec::with_capacity(self.config.value_bytes.max(16));
        value.extend_from_slice(&(client as u64).to_le_bytes());
        value.extend_from_slice(&seq.to_le_bytes());
        value.resize(self.config.value_bytes.max(16), b'.');
        value
    }

    fn next_request(&mut self, client: usize) -> Request {
        self.next_seq[client] += 1;
        let seq = self.next_seq[client];
        let key = self.rng.random_range(0..self.config.keys.max(1));
        let reader = client as u32 >= self.config.clients.saturating_sub(self.config.readers);
        let op = if reader || self.rng.random_bool(self.config.read_ratio) {
            Op::Get { key }
        } else if self.rng.random_bool(self.config.cas_ratio) {
            let expected = self.last_seen[client].get(&key).cloned().flatten();
            Op::Cas { key, expected, new: self.value(client, seq) }
        } else {
            Op::Put { key, value: self.value(client, seq) }
        };
        Request { client: ClientId(client as u64), seq, op, signature: Vec::new() }
    }

    /// Make client `client`'s next operation, recorded as invoked at `now`.
    pub fn issue(&mut self, client: usize, now: Nanos) -> Request {
        let request = self.next_request(client);
        self.open[client] = Some(match &mut self.checker {
            Some(checker) => Open::Streamed(checker.invoke(&request.op, now)),
            None => {
                self.history.push(HistoryOp {
                    client: client as u64,
                    op: request.op.clone(),
                    invoked: now,
                    completed: None,
                });
                Open::Recorded(self.history.len() - 1)
            }
        });
        self.ready_at[client] = None;
        request
    }

    fn submit<P: Protocol, C: Client>(&mut self, sim: &mut Sim<P, C>, client: usize) {
        let request = self.issue(client, sim.now());
        sim.submit(client, request);
    }

    /// Record that `client`'s open operation `request` returned `result` at `time`; the
    /// client becomes ready again after its think time.
    pub fn record_completion(&mut self, client: usize, time: Nanos, request: &Request, result: &OpResult) {
        match self.open[client].take().expect("completion for an open operation") {
            Open::Recorded(index) => self.history[index].completed = Some((time, result.clone())),
            Open::Streamed(handle) => {
                if let Some(checker) = &mut self.checker {
                    checker.complete(handle, time, result);
                }
            }
        }
        // What a client last saw of each key is only the expected value of its next
        // compare-and-swap: without CAS operations, keeping it cost the harness a
        // copy of every value written (an eighth of its time per operation at full load).
        let key = request.op.key();
        match result {
            _ if self.config.cas_ratio <= 0.0 => {}
            OpResult::Value(v) => {
                self.last_seen[client].insert(key, v.clone());
            }
            OpResult::Cas { swapped: true, .. } | OpResult::Ok => {
                if let Op::Put { value, .. } | Op::Cas { new: value, .. } = &request.op {
                    self.last_seen[client].insert(key, Some(value.clone()));
                }
            }
            OpResult::Cas { swapped: false, found } => {
                self.last_seen[client].insert(key, found.clone());
            }
        }
        if let Some(arrivals) = &mut self.arrivals {
            arrivals.free.push_back(client);
        } else if !self.stopped {
            self.ready_at[client] = Some(time + self.config.think_ns);
        }
    }

    /// Clients whose next operation is due at or before `now`; the caller issues each.
    /// Open loop: every arrival up to `now` is handed to a free client or, with none
    /// free, dropped (without a scan over the clients, so a large pool costs nothing).
    pub fn due(&mut self, now: Nanos) -> Vec<usize> {
        let Some(arrivals) = &mut self.arrivals else {
            return (0..self.ready_at.len()).filter(|c| self.ready_at[*c].is_some_and(|t| t <= now)).collect();
        };
        let mut due = Vec::new();
        while let Some(at) = arrivals.next_at.filter(|at| *at <= now) {
            arrivals.count += 1;
            match arrivals.free.pop_front() {
                Some(client) => {
                    arrivals.arrived_at[client] = at;
                    due.push(client);
                }
                None => arrivals.dropped += 1,
            }
            arrivals.next_at = Some(at + arrivals.gap_ns());
        }
        due
    }

    /// When the next client becomes ready (open loop: the next request arrives).
    pub fn next_ready(&self) -> Option<Nanos> {
        match &self.arrivals {
            Some(arrivals) => arrivals.next_at,
            None => self.ready_at.iter().flatten().copied().min(),
        }
    }

    /// Run the simulator to `deadline`, driving the clients, calling `on_completion`
    /// for each finished operation, and stopping early when `until` holds (checked
    /// after every step). Returns whether `until` held.
    pub fn run<P: Protocol, C: Client>(
        &mut self,
        sim: &mut Sim<P, C>,
        deadline: Nanos,
        mut on_completion: impl FnMut(&Sim<P, C>, &Completion),
        mut until: impl FnMut(&Sim<P, C>) -> bool,
    ) -> bool {
        loop {
            for client in self.due(sim.now()) {
                // The simulator wakes at every arrival, so an open-loop request is
                // handed over exactly when it arrives.
                debug_assert_eq!(self.latency_origin(client, sim.now()), sim.now());
                self.submit(sim, client);
            }
            let wake = self.next_ready().unwrap_or(Nanos::MAX).min(deadline);
            match sim.step(wake) {
                Step::Idle => {
                    if sim.now() >= deadline {
                        return until(sim);
                    }
                }
                Step::Progress => {}
                Step::Completed(completion) => {
                    self.record_completion(completion.client, completion.time, &completion.request, &completion.result);
                    on_completion(sim, &completion);
                }
            }
            if until(sim) {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_loop(clients: u32, rate_per_s: f64) -> Workload {
        let config = WorkloadConfig {
            clients,
            keys: 10,
            value_bytes: 16,
            think_ns: 0,
            read_ratio: 0.0,
            cas_ratio: 0.0,
            readers: 0,
            arrival_rate_per_s: Some(rate_per_s),
        };
        Workload::new(config, 3)
    }

    /// Arrivals come at the configured rate whether or not anything completes: over
    /// 100 s at 1000/s the count is within 1% of 100,000 (a Poisson count's standard
    /// deviation there is about 316, so 1% is three of them).
    #[test]
    fn open_loop_arrivals_come_at_the_offered_rate() {
        let mut workload = open_loop(64, 1000.0);
        workload.start_all_at(0);
        let mut now = 0;
        while now < 100_000_000_000 {
            now += 1_000_000;
            for client in workload.due(now) {
                let request = workload.issue(client, now);
                workload.record_completion(client, now, &request, &OpResult::Ok);
            }
        }
        let (arrived, dropped) = workload.arrivals_and_drops().unwrap();
        assert!((99_000..=101_000).contains(&arrived), "{arrived} arrivals in 100 s at 1000/s");
        assert_eq!(dropped, 0);
    }

    /// With every client busy, an arrival is dropped and counted; once a client is free
    /// again the next arrival takes it, and its latency counts from its own arrival
    /// time, not from when the harness got round to handing it over.
    #[test]
    fn open_loop_drops_when_every_client_is_busy_and_charges_latency_from_arrival() {
        let mut workload = open_loop(2, 1000.0);
        workload.start_all_at(0);
        let mut issued = Vec::new();
        let mut now = 0;
        while issued.len() < 2 {
            now += 100_000;
            for client in workload.due(now) {
                let origin = workload.latency_origin(client, now);
                issued.push((client, workload.issue(client, now), origin));
            }
        }
        assert!(issued.iter().all(|(_, _, origin)| *origin <= now));
        // Both clients busy: the next arrivals are dropped.
        let later = now + 50_000_000;
        assert!(workload.due(later).is_empty());
        let (arrived, dropped) = workload.arrivals_and_drops().unwrap();
        assert!(dropped > 0 && arrived == dropped + 2, "{arrived} arrived, {dropped} dropped");
        // One completes; the next arrival after that takes its client, and is charged
        // from when it arrived even though the harness looks only much later.
        let (client, request, _) = issued[0].clone();
        workload.record_completion(client, later, &request, &OpResult::Ok);
        let much_later = later + 50_000_000;
        let due = workload.due(much_later);
        assert_eq!(due, vec![client]);
        let origin = workload.latency_origin(client, much_later);
        assert!(origin > later && origin < much_later, "arrival {origin} between {later} and {much_later}");
        let (_, dropped_after) = workload.arrivals_and_drops().unwrap();
        assert!(dropped_after > dropped, "arrivals after the first free slot was taken are dropped again");
    }

    /// Closed-loop clients are unchanged: latency counts from the hand-over, and no
    /// arrival counts exist.
    #[test]
    fn closed_loop_latency_counts_from_the_hand_over() {
        let config = WorkloadConfig { arrival_rate_per_s: None, ..open_loop(1, 1.0).config.clone() };
        let mut workload = Workload::new(config, 3);
        workload.start_all_at(5);
        assert_eq!(workload.due(10), vec![0]);
        assert_eq!(workload.latency_origin(0, 10), 10);
        assert!(workload.arrivals_and_drops().is_none());
    }
}
