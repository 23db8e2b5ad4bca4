//! Why Multi-Paxos's phase 1 carries accepted values: a new leader that ignores them
//! (`PaxosAblations::skip_phase1_values`) re-fills slots in which a value may already be
//! chosen. Under the seeded chaos of `paxos_chaos.rs` a checker must flag a run within
//! 500 seeds; the seed must replay exactly, and with the rule on it must be safe.

use qlab_lab::chaos::{
    ChaosConfig, caught_first, nodes_from_env, replay_and_print, run_paxos_ablation_chaos, run_paxos_chaos,
};
use qlab_lab::check::Invariant;
use qlab_paxos::PaxosAblations;

const SEEDS: u64 = 500;

fn ablated() -> PaxosAblations {
    PaxosAblations { skip_phase1_values: true, ..Default::default() }
}

/// Paxos Made Simple §2.2, P2c: a proposer in ballot b proposes the value of the
/// highest-numbered proposal among a majority's promises. Without it a chosen value is
/// replaced.
#[test]
fn p2c_phase1_values_keep_chosen_values_chosen() {
    let config = ChaosConfig::new(3);
    let account = caught_first(
        |seed| run_paxos_ablation_chaos(seed, &config, ablated()),
        |seed| run_paxos_chaos(seed, &config),
        0..SEEDS,
        &[Invariant::StateMachineSafety, Invariant::LeaderCompleteness, Invariant::Linearizability],
        |seed| {
            format!(
                "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES=3 cargo test --release -p qlab-lab --test paxos_ablations \
                 replay_one_seed -- --ignored --nocapture"
            )
        },
    )
    .unwrap_or_else(|e| panic!("skip_phase1_values: {e}"));
    eprintln!("skip_phase1_values: {account}");
}

/// Replays one seed with a full trace: see the command a failing test prints.
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_one_seed() {
    replay_and_print(
        |seed, config| run_paxos_ablation_chaos(seed, config, ablated()),
        ChaosConfig::new(nodes_from_env(3)),
    );
}
