//! What one step costs, without a network or a simulator around it:
//!
//! - `leader_step/{raft,multipaxos}/n`: a leader with n − 1 peers takes one client
//!   write, emits its AppendEntries / Accept, and takes every peer's acknowledgement,
//!   committing, applying and answering. Throughput is in messages handled (the request
//!   and n − 1 acknowledgements), so the line reads as messages per second one core
//!   sustains in the protocol logic alone.
//! - `pbft_request/n`: one client request through a whole simulated PBFT cluster of n
//!   replicas (1 ms links, one client, no batching): pre-prepare, prepares, commits,
//!   f + 1 replies, every message signed and verified. PBFT's cost is all-to-all and
//!   signature-bound, so the whole protocol round is the honest unit, not one replica's
//!   step.
//! - `codec/append_entries`: framing and postcard encode + decode of a Raft
//!   AppendEntries carrying 16 entries of 128-byte writes, as real mode sends it.
//! - `checkers/*`: the safety checkers' cost per event over a recorded 5-node run
//!   (2,000 writes), and the linearizability checker's per operation over a chaos run's
//!   client history (the busiest of 20 seeds, 5 nodes).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qlab_check::check_observations;
use qlab_check::linearizability::check_history;
use qlab_core::{Action, ClientId, Context, NodeId, Op, Outbox, Protocol, Request, ms};
use qlab_lab::chaos::{ChaosConfig, run_protocol_chaos};
use qlab_raft::Raft;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// Drive one replica by hand: call a handler, collect what it emitted.
struct Driver<P: Protocol> {
    node: P,
    rng: ChaCha8Rng,
    now: u64,
    out: Outbox<P::Message, P::Timer, P::Record>,
}

impl<P: Protocol> Driver<P> {
    fn new(node: P) -> Self {
        Driver { node, rng: ChaCha8Rng::seed_from_u64(1), now: 0, out: Outbox::default() }
    }
    fn call(&mut self, f: impl FnOnce(&mut P, &mut Context<'_, P>)) -> Vec<Action<P::Message, P::Timer, P::Record>> {
        self.now += 1_000;
        self.out.actions.clear();
        let mut ctx = Context::new(self.now, &mut self.rng, &mut self.out);
        f(&mut self.node, &mut ctx);
        std::mem::take(&mut self.out.actions)
    }
}

fn put(seq: u64) -> Request {
    Request::new(ClientId(1), seq, Op::Put { key: seq % 64, value: vec![7; 128] })
}

/// `put` from client 0 (the PBFT bench's only client, which signs its requests itself).
fn put0(seq: u64) -> Request {
    Request::new(ClientId(0), seq, Op::Put { key: seq % 64, value: vec![7; 128] })
}

fn raft_leader(n: u32) -> Driver<qlab_raft::Raft> {
    use qlab_raft::{Message, Raft, RaftConfig, RaftTimer};
    let mut d = Driver::new(Raft::new(&RaftConfig::default(), NodeId(0), n));
    d.call(|p, ctx| p.on_timer(ctx, RaftTimer::Election));
    for peer in 1..n {
        d.call(|p, ctx| p.on_message(ctx, NodeId(peer), Message::VoteResponse { term: 1, granted: true }));
    }
    assert!(d.node.is_leader());
    d
}

fn raft_write(d: &mut Driver<qlab_raft::Raft>, n: u32, seq: u64) {
    use qlab_raft::Message;
    d.call(|p, ctx| p.on_request(ctx, put(seq)));
    let match_index = d.node.last_index();
    let term = d.node.current_term();
    for peer in 1..n {
        let ack = Message::AppendResponse { term, success: true, match_index, conflict_term: None, conflict_index: 0 };
        black_box(d.call(|p, ctx| p.on_message(ctx, NodeId(peer), ack)));
    }
}

fn paxos_leader(n: u32) -> Driver<qlab_paxos::Paxos> {
    use qlab_paxos::{Message, Paxos, PaxosConfig, PaxosTimer};
    let mut d = Driver::new(Paxos::new(&PaxosConfig::default(), NodeId(0), n));
    d.call(|p, ctx| p.on_timer(ctx, PaxosTimer::LeaderTimeout));
    let ballot = d.node.own_ballot();
    for peer in 1..n {
        d.call(|p, ctx| {
            p.on_message(ctx, NodeId(peer), Message::Promise { ballot, accepted: vec![], checkpoint: None })
        });
    }
    assert!(d.node.is_leader());
    d
}

fn paxos_write(d: &mut Driver<qlab_paxos::Paxos>, n: u32, seq: u64) {
    use qlab_paxos::Message;
    d.call(|p, ctx| p.on_request(ctx, put(seq)));
    let ballot = d.node.own_ballot();
    // The write went into the slot after the commit point (one slot in flight at a time).
    let first_slot = d.node.commit_index() + 1;
    for peer in 1..n {
        let ack = Message::Accepted { ballot, first_slot, count: 1 };
        black_box(d.call(|p, ctx| p.on_message(ctx, NodeId(peer), ack)));
    }
}

fn leader_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("leader_step");
    for n in [3u32, 5, 7] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("raft", n), &n, |b, &n| {
            let mut d = raft_leader(n);
            let mut seq = 0;
            b.iter(|| {
                seq += 1;
                raft_write(&mut d, n, seq);
            });
            assert!(d.node.commit_index() >= seq, "every write commits");
        });
        group.bench_with_input(BenchmarkId::new("multipaxos", n), &n, |b, &n| {
            let mut d = paxos_leader(n);
            let mut seq = 0;
            b.iter(|| {
                seq += 1;
                paxos_write(&mut d, n, seq);
            });
            assert!(d.node.commit_index() >= seq, "every write commits");
        });
    }
    group.finish();
}

fn pbft_request(c: &mut Criterion) {
    use qlab_lab::protocols::{LabProtocol, PBFT_KEY_SEED};
    use qlab_pbft::{Pbft, PbftConfig};
    use qlab_sim::{Latency, NetworkConfig, Sim};
    let mut group = c.benchmark_group("pbft_request");
    group.throughput(Throughput::Elements(1));
    for n in [4u32, 7] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let config = PbftConfig::with_keys(PBFT_KEY_SEED, n, 1);
            let network = NetworkConfig { latency: Latency::Constant { ns: ms(1) }, ..NetworkConfig::default() };
            let mut sim: Sim<Pbft, _> = Sim::new(config.clone(), n, network, 3);
            sim.add_client(Pbft::client(&config, ClientId(0), n, ms(500)));
            let mut seq = 0;
            b.iter(|| {
                seq += 1;
                sim.submit(0, put0(seq));
                let done = sim.run_until(sim.now() + ms(1_000)).expect("the request commits");
                black_box(done);
            });
        });
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    use qlab_raft::{Entry, Message, Payload};
    let entries: Vec<Entry> = (1..=16)
        .map(|i| Entry { term: 3, index: 100 + i, payload: Payload::Command(std::sync::Arc::new(put(i))) })
        .collect();
    let msg = Message::AppendEntries { term: 3, prev_log_index: 100, prev_log_term: 3, entries, leader_commit: 99 };
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_entries_16x128B", |b| {
        let mut wire = Vec::with_capacity(4096);
        b.iter(|| {
            wire.clear();
            qlab_net::frame::encode(black_box(&msg), &mut wire);
            let mut reader = qlab_net::frame::FrameDecoder::new(1 << 20);
            reader.push(&wire);
            let frame = reader.next_frame().expect("a whole frame").expect("one frame");
            let back: Message = qlab_net::frame::decode(&frame).expect("decodes");
            black_box(back);
        });
    });
    group.finish();
}

fn checkers(c: &mut Criterion) {
    let mut config = ChaosConfig::new(5);
    config.fault_phase_ns = ms(3_000);
    // A recorded chaos run (the busiest of 20 seeds): its client history, checked over
    // and over.
    let outcome =
        (0..20).map(|seed| run_protocol_chaos::<Raft>(seed, &config)).max_by_key(|o| o.operations_completed).unwrap();
    assert!(outcome.passed());
    let mut group = c.benchmark_group("checkers");
    let observations = {
        // The chaos outcome does not keep observations; re-run the same seed's cluster
        // through the simulator for them.
        let network = qlab_sim::NetworkConfig {
            latency: qlab_sim::Latency::Constant { ns: ms(1) },
            ..qlab_sim::NetworkConfig::default()
        };
        let mut sim: qlab_sim::Sim<qlab_raft::Raft, qlab_raft::RaftClient> =
            qlab_sim::Sim::new(qlab_raft::RaftConfig::default(), 5, network, 4);
        for client in 0..4 {
            sim.add_client(qlab_raft::RaftClient::new(ClientId(client), 5));
        }
        sim.run_to(ms(1_000));
        for seq in 1..=500u64 {
            for client in 0..4usize {
                if sim.client_outstanding(client).is_none() {
                    let op = Op::Put { key: seq, value: vec![1] };
                    sim.submit(client, Request::new(ClientId(client as u64), seq, op));
                }
            }
            let deadline = sim.now() + ms(100);
            while sim.run_until(deadline).is_some() {}
        }
        sim.observations.clone()
    };
    group.throughput(Throughput::Elements(observations.len() as u64));
    group.bench_function("safety_per_event", |b| b.iter(|| black_box(check_observations(black_box(&observations)))));
    group.throughput(Throughput::Elements(outcome.history.len() as u64));
    group
        .bench_function("linearizability_per_op", |b| b.iter(|| black_box(check_history(black_box(&outcome.history)))));
    group.finish();
}

criterion_group!(benches, leader_step, pbft_request, codec, checkers);
criterion_main!(benches);
