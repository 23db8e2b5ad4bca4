//! Property test over seeds: Multi-Paxos under random crash/restart, partitions, one-way cuts,
//! loss, duplication and reordering never violates a checker, and is live again once
//! the faults heal. A failing seed is printed with the command that replays it.

use qlab_lab::chaos::{ChaosConfig, run_paxos_chaos};

const SEEDS: u64 = 1_000;

fn replay_command(seed: u64, nodes: u32) -> String {
    format!(
        "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES={nodes} cargo test --release -p qlab-lab --test paxos_chaos replay_one_seed -- --ignored --nocapture"
    )
}

fn sweep(nodes: u32) {
    let config = ChaosConfig::new(nodes);
    let mut failures = Vec::new();
    let mut operations = 0;
    for seed in 0..SEEDS {
        let outcome = run_paxos_chaos(seed, &config);
        operations += outcome.operations_completed;
        if !outcome.passed() {
            let shown: Vec<String> = outcome.violations.iter().take(3).map(ToString::to_string).collect();
            failures.push(format!(
                "seed {seed}: {} violation(s), first {:?}; linearizability {:?}; live after heal {}\n  replay: {}",
                outcome.violations.len(),
                shown,
                outcome.linearizability,
                outcome.live_after_heal,
                replay_command(seed, nodes)
            ));
        }
    }
    assert!(operations as u64 > SEEDS * 50, "the load should be real: {operations} operations");
    let shown: Vec<&String> = failures.iter().take(10).collect();
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds failed ({nodes} nodes); the first:\n{}",
        failures.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn multipaxos_3_nodes_survives_1000_chaos_seeds() {
    sweep(3);
}

#[test]
fn multipaxos_5_nodes_survives_1000_chaos_seeds() {
    sweep(5);
}

/// Replays one seed with a full trace: see `replay_command`.
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_one_seed() {
    let seed: u64 = std::env::var("QLAB_CHAOS_SEED").expect("QLAB_CHAOS_SEED").parse().expect("a u64 seed");
    let nodes: u32 = std::env::var("QLAB_CHAOS_NODES").map_or(5, |v| v.parse().expect("a node count"));
    let mut config = ChaosConfig::new(nodes);
    config.trace = true;
    let outcome = run_paxos_chaos(seed, &config);
    println!("faults:\n{}", outcome.fault_log.join("\n"));
    println!("trace:\n{}", outcome.trace.join("\n"));
    println!(
        "violations: {:?}\nlinearizability: {:?}\nlive after heal: {}",
        outcome.violations, outcome.linearizability, outcome.live_after_heal
    );
    assert!(outcome.passed());
}
