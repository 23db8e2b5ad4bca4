//! Simulated message deliveries per second: a 5-node Raft cluster under steady
//! closed-loop client load (8 clients, no think time, 1 ms constant latency).
//! Criterion reports time per iteration; each iteration simulates one virtual second
//! and the throughput line reads as deliveries per second of wall time.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qlab_core::{ClientId, Op, Request, ms};
use qlab_raft::{Raft, RaftClient, RaftConfig};
use qlab_sim::{Latency, NetworkConfig, Sim};

const CLIENTS: u64 = 8;

fn steady_cluster() -> (Sim<Raft, RaftClient>, Vec<u64>) {
    let network = NetworkConfig { latency: Latency::Constant { ns: ms(1) }, ..NetworkConfig::default() };
    let mut sim: Sim<Raft, RaftClient> = Sim::new(RaftConfig::default(), 5, network, 7);
    for c in 0..CLIENTS {
        sim.add_client(RaftClient::new(ClientId(c), 5));
    }
    let mut seqs = vec![0; CLIENTS as usize];
    for (c, seq) in seqs.iter_mut().enumerate() {
        *seq += 1;
        sim.submit(c, put(c, *seq));
    }
    (sim, seqs)
}

fn put(client: usize, seq: u64) -> Request {
    Request {
        client: ClientId(client as u64),
        seq,
        op: Op::Put { key: seq % 16, value: vec![7; 16] },
        signature: Vec::new(),
    }
}

/// Advance one virtual second with every client resubmitting at once; returns deliveries.
fn one_second(sim: &mut Sim<Raft, RaftClient>, seqs: &mut [u64]) -> u64 {
    let before = sim.stats.messages_delivered;
    let deadline = sim.now() + ms(1000);
    while let Some(done) = sim.run_until(deadline) {
        seqs[done.client] += 1;
        sim.submit(done.client, put(done.client, seqs[done.client]));
    }
    sim.stats.messages_delivered - before
}

fn deliveries(c: &mut Criterion) {
    let (mut sim, mut seqs) = steady_cluster();
    // Warm up past the first election and measure how much one second delivers.
    one_second(&mut sim, &mut seqs);
    let per_second = one_second(&mut sim, &mut seqs);
    assert!(per_second > 10_000, "steady load should be real: {per_second} deliveries per virtual second");
    let mut group = c.benchmark_group("sim");
    group.throughput(Throughput::Elements(per_second));
    group.sample_size(20);
    group.bench_function("raft5_steady_load_deliveries", |b| {
        b.iter(|| {
            // Experiments hand observations to the checkers; here they would only
            // grow memory without bound across thousands of iterations.
            sim.observations.clear();
            one_second(&mut sim, &mut seqs)
        });
    });
    group.finish();
}

criterion_group!(benches, deliveries);
criterion_main!(benches);
