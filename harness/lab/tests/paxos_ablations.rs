//! Why Multi-Paxos's phase 1 carries accepted values: a new leader that ignores them
//! (`PaxosAblations::skip_phase1_values`) re-fills slots in which a value may already be
//! chosen. Under the seeded chaos of `paxos_chaos.rs` a checker must flag a run within
//! 500 seeds; the seed must replay exactly, and with the rule on it must be safe.

use qlab_check::Invariant;
use qlab_lab::chaos::{
    ChaosConfig, ChaosKnobs, caught_first, nodes_from_env, replay_and_print, run_protocol_chaos,
    run_protocol_chaos_with,
};
use qlab_paxos::Paxos;
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
        |seed| run_protocol_chaos_with::<Paxos>(seed, &config, |c| c.ablate = ablated()),
        |seed| run_protocol_chaos::<Paxos>(seed, &config),
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

/// Checkpoints: a promise from an acceptor that checkpointed past the candidate's commit
/// point carries the checkpoint, because it can no longer list those slots. A candidate
/// that ignores it fills chosen slots with no-ops. (Run with checkpoints every few slots;
/// the control is the same seed with the rule on.)
#[test]
fn a_promised_checkpoint_keeps_chosen_slots_chosen() {
    let config = ChaosConfig::new(3);
    let ablate = PaxosAblations { ignore_promised_checkpoint: true, ..Default::default() };
    let account = caught_first(
        |seed| {
            run_protocol_chaos_with::<Paxos>(seed, &config, |c| {
                Paxos::compact(c, seed);
                c.ablate = ablate;
            })
        },
        |seed| run_protocol_chaos_with::<Paxos>(seed, &config, |c| Paxos::compact(c, seed)),
        0..SEEDS,
        &[Invariant::StateMachineSafety, Invariant::LeaderCompleteness, Invariant::Linearizability],
        |seed| {
            format!(
                "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES=3 QLAB_PAXOS_ABLATION=ignore_promised_checkpoint cargo test \
                 --release -p qlab-lab --test paxos_ablations replay_one_seed -- --ignored --nocapture"
            )
        },
    )
    .unwrap_or_else(|e| panic!("ignore_promised_checkpoint: {e}"));
    eprintln!("ignore_promised_checkpoint: {account}");
}

/// Replays one seed with a full trace: see the command a failing test prints
/// (`QLAB_PAXOS_ABLATION=ignore_promised_checkpoint` for the checkpoint rule, with
/// checkpoints on; `skip_phase1_values` otherwise).
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_one_seed() {
    let config = ChaosConfig::new(nodes_from_env(3));
    if std::env::var("QLAB_PAXOS_ABLATION").is_ok_and(|a| a == "ignore_promised_checkpoint") {
        let ablate = PaxosAblations { ignore_promised_checkpoint: true, ..Default::default() };
        replay_and_print(
            |seed, config| {
                run_protocol_chaos_with::<Paxos>(seed, config, |c| {
                    Paxos::compact(c, seed);
                    c.ablate = ablate;
                })
            },
            config,
        );
    } else {
        replay_and_print(
            |seed, config| run_protocol_chaos_with::<Paxos>(seed, config, |c| c.ablate = ablated()),
            config,
        );
    }
}
