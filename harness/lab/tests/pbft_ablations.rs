//! Why PBFT prepares on 2f + 1 statements: with the quorum weakened to 2f
//! (`PbftAblations::prepare_quorum_2f`), one equivocating primary (f = 1 of 4 replicas,
//! within what PBFT tolerates) under the seeded chaos of `pbft_attacks.rs` must produce
//! a run a checker flags within 500 seeds. The seed must replay exactly, and with the
//! full quorum the same seed must be safe (`pbft_attacks.rs` runs 128 such seeds and
//! finds nothing).

use qlab_check::Invariant;
use qlab_core::NodeId;
use qlab_lab::chaos::{ChaosConfig, caught_first, nodes_from_env, replay_and_print, run_attack_chaos};
use qlab_pbft::Pbft;
use qlab_pbft::PbftAblations;
use qlab_pbft::attacks::PbftAttack;

const SEEDS: u64 = 500;

fn config(nodes: u32) -> ChaosConfig {
    let mut config = ChaosConfig::new(nodes);
    config.faulty_at_most = Some(0);
    config.fault_phase_ns = qlab_core::ms(1_500);
    config.recovery_deadline_ns = qlab_core::ms(30_000);
    config
}

fn malicious() -> Vec<(NodeId, PbftAttack)> {
    vec![(NodeId(0), PbftAttack::from_name("equivocate", &Default::default()).expect("an attack"))]
}

fn ablated() -> PbftAblations {
    PbftAblations { prepare_quorum_2f: true, ..PbftAblations::default() }
}

/// Castro & Liskov §4.2: prepared(m, v, n, i) needs 2f prepares besides the
/// pre-prepare, so that two digests prepared for one (v, n) would share an honest
/// replica. With 2f statements in all, an equivocating primary gets both halves'
/// digests prepared, certifies the one nobody committed in the view change, and the
/// new view re-proposes it where the other was already executed.
#[test]
fn s4_2_prepare_quorum_of_2f_plus_1_keeps_one_digest_per_sequence_number() {
    let config = config(4);
    let account = caught_first(
        |seed| run_attack_chaos::<Pbft, _>(seed, &config, |c| c.ablate = ablated(), &malicious()),
        |seed| run_attack_chaos::<Pbft, _>(seed, &config, |_| {}, &malicious()),
        0..SEEDS,
        &[Invariant::StateMachineSafety, Invariant::Linearizability],
        |seed| {
            format!(
                "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES=4 cargo test --release -p qlab-lab --test pbft_ablations \
                 replay_one_seed -- --ignored --nocapture"
            )
        },
    )
    .unwrap_or_else(|e| panic!("prepare_quorum_2f: {e}"));
    eprintln!("prepare_quorum_2f: {account}");
}

/// Replays one seed with a full trace: see the command a failing test prints.
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_one_seed() {
    replay_and_print(
        |seed, config| run_attack_chaos::<Pbft, _>(seed, config, |c| c.ablate = ablated(), &malicious()),
        config(nodes_from_env(4)),
    );
}
