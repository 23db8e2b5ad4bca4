//! What the harness spends on one client operation at full load, without the network
//! around it: the work `cpu_s_harness / ops` counts in a real-mode throughput row,
//! minus QUIC and the async runtime.
//!
//! `harness_op/raft_3_nodes/128_clients` runs, per operation, what a closed-loop
//! throughput trial does for it over real QUIC: the workload makes a unique 128-byte
//! write (recorded by the streaming linearizability checker), the request is framed as
//! the harness sends it, the leader's reply frame is decoded and the completion
//! recorded, then the three replicas' reports for the operation's slot (Committed and
//! Applied, each node's frame as its runtime sends it) are decoded and pushed through
//! the streaming safety checker, released one report-lag behind as the trial does.
//! Throughput is in operations, so the line reads as operations per second one core
//! sustains in the harness's own bookkeeping; its inverse is the per-operation cost the
//! issue's ≤ 3 µs target is about, less the transport's share (see docs/real-mode.md).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qlab_check::{SafetyChecker, SafetyStream};
use qlab_core::{Digest, Event, NodeId, Observation, OpResult, Reply, ReplyBody};
use qlab_lab::workload::{Workload, WorkloadConfig};
use qlab_net::frame::{FrameDecoder, decode, encode};
use qlab_net::runtime::{Report, Wire};
use std::hint::black_box;

type RaftWire = Wire<qlab_raft::Message>;

const NODES: u32 = 3;
const CLIENTS: u32 = 128;
/// The harness checks observations this far behind its clock (`REPORT_LAG_NS`).
const REPORT_LAG_NS: u64 = 1_000_000_000;
/// Operations completed per simulated second, so the stream holds a realistic lag.
const OPS_PER_S: u64 = 100_000;

struct Harness {
    workload: Workload,
    stream: SafetyStream,
    decoder: FrameDecoder,
    prefix: Digest,
    slot: u64,
    now_ns: u64,
    frames: Vec<u8>,
    /// Each client's request in flight (the driver keeps one too, for its latency).
    open: Vec<Option<qlab_core::Request>>,
}

impl Harness {
    fn new() -> Self {
        let config = WorkloadConfig {
            clients: CLIENTS,
            keys: 1_000,
            value_bytes: 128,
            think_ns: 0,
            read_ratio: 0.0,
            cas_ratio: 0.0,
            readers: 0,
            arrival_rate_per_s: None,
        };
        let mut workload = Workload::new(config, 7).check_as_it_goes();
        workload.start_all_at(0);
        let mut harness = Harness {
            workload,
            stream: SafetyStream::new(SafetyChecker::new().with_nodes(NODES)),
            decoder: FrameDecoder::new(1 << 20),
            prefix: Digest::GENESIS,
            slot: 0,
            now_ns: 0,
            frames: Vec::new(),
            open: vec![None; CLIENTS as usize],
        };
        for client in 0..CLIENTS as usize {
            harness.issue(client);
        }
        harness
    }

    fn issue(&mut self, client: usize) {
        let request = self.workload.issue(client, self.now_ns);
        self.frames.clear();
        encode(&RaftWire::Request(request.clone()), &mut self.frames);
        black_box(&self.frames);
        self.open[client] = Some(request);
    }

    /// One operation: the oldest client's write completes and it issues its next.
    fn op(&mut self) {
        let client = (self.slot % CLIENTS as u64) as usize;
        self.now_ns += 1_000_000_000 / OPS_PER_S;
        self.slot += 1;
        let request = self.open[client].take().expect("every client has a write in flight");
        let entry = Digest::of(&self.slot.to_le_bytes());
        self.prefix = self.prefix.chain(self.slot, &entry);
        // What arrives: the leader's reply, then each node's report for the slot.
        self.frames.clear();
        let reply = Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(OpResult::Ok) };
        encode(&RaftWire::Reply(reply), &mut self.frames);
        for node in 0..NODES {
            let events = vec![
                Event::Committed { slot: self.slot, digest: entry, prefix_digest: self.prefix },
                Event::Applied { slot: self.slot, digest: entry },
            ];
            encode(&RaftWire::Report(Report::Observed { node, time_ns: self.now_ns, events }), &mut self.frames);
        }
        self.decoder.push(&self.frames);
        while let Some(payload) = self.decoder.next_frame().expect("well-formed frames") {
            match decode::<RaftWire>(&payload).expect("decodable") {
                Wire::Reply(reply) => {
                    let ReplyBody::Done(result) = reply.body else { unreachable!() };
                    self.workload.record_completion(client, self.now_ns, &request, &result);
                }
                Wire::Report(Report::Observed { node, time_ns, events }) => {
                    for event in events {
                        self.stream.push(Observation { time: time_ns, node: NodeId(node), event });
                    }
                }
                _ => unreachable!(),
            }
        }
        self.stream.release(self.now_ns.saturating_sub(REPORT_LAG_NS));
        self.issue(client);
    }
}

fn harness_op(c: &mut Criterion) {
    let mut group = c.benchmark_group("harness_op");
    group.throughput(Throughput::Elements(1));
    let mut harness = Harness::new();
    // Fill the report lag first, so the stream holds what a running trial holds.
    for _ in 0..OPS_PER_S {
        harness.op();
    }
    group.bench_function("raft_3_nodes/128_clients", |b| b.iter(|| harness.op()));
    group.finish();
}

criterion_group!(benches, harness_op);
criterion_main!(benches);
