//! Property test over seeds: adaptive batching (`qlab_core::batching`) under chaos.
//! The chaos sweeps' three clients never fill the default pipeline of four batches, so
//! here four clients meet a pipeline of one or two: commands wait for a batch to commit
//! while crashes, partitions, loss, duplication and reordering go on, and a leader that
//! steps down with commands waiting must not lose or duplicate any. Each protocol runs
//! its seeds with every checker and the liveness check after healing; each sweep must
//! reach its protocol's `batch_held_for_pipeline` mark in most seeds, or it would test
//! nothing. A failing seed prints the command that replays it.

use qlab_lab::chaos::{ChaosConfig, nodes_from_env, replay_from_env, run_protocol_chaos_with, sweep};
use qlab_paxos::Paxos;
use qlab_pbft::Pbft;
use qlab_raft::Raft;

const SEEDS: u64 = 200;

/// Half the seeds hold one batch in flight, half two.
fn bound(seed: u64) -> usize {
    1 + (seed % 2) as usize
}

fn run_raft(seed: u64, config: &ChaosConfig) -> qlab_lab::chaos::ChaosOutcome {
    run_protocol_chaos_with::<Raft>(seed, config, |raft| {
        raft.batch_delay_ns = 0;
        raft.max_batches_in_flight = bound(seed);
    })
}

fn run_paxos(seed: u64, config: &ChaosConfig) -> qlab_lab::chaos::ChaosOutcome {
    run_protocol_chaos_with::<Paxos>(seed, config, |paxos| {
        paxos.batch_delay_ns = 0;
        paxos.max_batches_in_flight = bound(seed);
    })
}

fn run_pbft(seed: u64, config: &ChaosConfig) -> qlab_lab::chaos::ChaosOutcome {
    run_protocol_chaos_with::<Pbft>(seed, config, |pbft| {
        pbft.batch_delay_ns = 0;
        pbft.max_batches_in_flight = bound(seed);
    })
}

fn config(nodes: u32) -> ChaosConfig {
    let mut config = ChaosConfig::new(nodes);
    config.clients = 4;
    if nodes == 4 {
        // PBFT: at most f faulty at a time, and view changes' doubling timeouts.
        config.recovery_deadline_ns = qlab_core::ms(30_000);
        config.faulty_at_most = Some(qlab_pbft::faults_tolerated(nodes));
    }
    config
}

fn check(run: fn(u64, &ChaosConfig) -> qlab_lab::chaos::ChaosOutcome, nodes: u32, mark: &str, test_binary: &str) {
    let totals = sweep(run, &config(nodes), 0..SEEDS, test_binary).unwrap_or_else(|e| panic!("{e}"));
    let held = totals.seeds_reaching.get(mark).copied().unwrap_or(0);
    assert!(held * 2 > SEEDS, "{mark}: only {held} of {SEEDS} seeds held a batch back; the sweep tests little");
    assert!(totals.operations as u64 > SEEDS * 50, "the load should be real: {} operations", totals.operations);
}

#[test]
fn raft_adaptive_batching_survives_chaos() {
    check(run_raft, 3, "raft.batch_held_for_pipeline", "batching_chaos");
}

#[test]
fn multipaxos_adaptive_batching_survives_chaos() {
    check(run_paxos, 3, "paxos.batch_held_for_pipeline", "batching_chaos");
}

#[test]
fn pbft_adaptive_batching_survives_chaos() {
    check(run_pbft, 4, "pbft.batch_held_for_pipeline", "batching_chaos");
}

/// Replays one seed with a full trace: `QLAB_CHAOS_NODES` 3 replays Raft (or, with
/// `QLAB_BATCHING_PROTOCOL=multipaxos`, Multi-Paxos), 4 replays PBFT.
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_one_seed() {
    let nodes = nodes_from_env(3);
    match (nodes, std::env::var("QLAB_BATCHING_PROTOCOL").as_deref()) {
        (4, _) => replay_from_env(run_pbft, config(4)),
        (_, Ok("multipaxos")) => replay_from_env(run_paxos, config(nodes)),
        _ => replay_from_env(run_raft, config(nodes)),
    }
}
