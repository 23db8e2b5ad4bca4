//! Closed-loop client workloads and the client history they leave.
//!
//! Each client keeps one operation outstanding; when it completes, the client thinks
//! for `think_ns` and issues the next. Written values are unique (client id and
//! sequence number, padded to `value_bytes`), which is what lets the linearizability
//! checker tell every write apart. Every invocation and completion is recorded in
//! [`Workload::history`] with the virtual time the client saw it.

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
        }
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

    /// Every client will start at `at`.
    pub fn start_all_at(&mut self, at: Nanos) {
        for ready in &mut self.ready_at {
            *ready = Some(at);
        }
    }

    /// Submit no new operations from now on (open ones stay open).
    pub fn stop(&mut self) {
        self.stopped = true;
        self.ready_at.iter_mut().for_each(|r| *r = None);
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
        let key = request.op.key();
        match result {
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
        if !self.stopped {
            self.ready_at[client] = Some(time + self.config.think_ns);
        }
    }

    /// Clients whose next operation is due at or before `now`.
    pub fn due(&self, now: Nanos) -> Vec<usize> {
        (0..self.ready_at.len()).filter(|c| self.ready_at[*c].is_some_and(|t| t <= now)).collect()
    }

    /// When the next client becomes ready, if any is waiting.
    pub fn next_ready(&self) -> Option<Nanos> {
        self.ready_at.iter().flatten().copied().min()
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
            for client in 0..self.ready_at.len() {
                if self.ready_at[client].is_some_and(|t| t <= sim.now()) {
                    self.submit(sim, client);
                }
            }
            let wake = self.ready_at.iter().flatten().copied().min().unwrap_or(Nanos::MAX).min(deadline);
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
