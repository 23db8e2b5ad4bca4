//! PBFT against malicious replicas (Castro & Liskov's claim: safety with at most f
//! Byzantine replicas out of 3f + 1, liveness once the network behaves): the seeded
//! chaos runs of `pbft_chaos` (loss, duplication, reordering) with f replicas running
//! an attack — the initial primary among them — and no crash or partition on top
//! (those would make more than f faulty). Every run must be safe and live after the
//! network heals, having changed views where the attack demands it. With f + 1
//! colluding equivocators (the primary among them) agreement must break, and the
//! checkers must say so.

use qlab_check::Invariant;
use qlab_core::NodeId;
use qlab_lab::chaos::{ChaosConfig, attack_from_env, caught, nodes_from_env, replay_and_print, run_attack_chaos};
use qlab_pbft::Pbft;
use qlab_pbft::attacks::PbftAttack;

/// Seeds per attack with 4 replicas (128 rather than the crash-fault protocols' 200:
/// a PBFT seed costs several times a Raft one, and the CI budget is 25 minutes).
const SEEDS: u64 = 128;
/// Seeds per attack with 7 replicas (f = 2): a 7-replica seed costs about three 4-replica
/// ones, and these runs were 45% of this file's four minutes; 48 keeps two colluding
/// attackers in every attack's sweep.
const SEEDS_7: u64 = 48;

fn attack_config(nodes: u32) -> ChaosConfig {
    let mut config = ChaosConfig::new(nodes);
    config.faulty_at_most = Some(0);
    config.fault_phase_ns = qlab_core::ms(1_500);
    config.recovery_deadline_ns = qlab_core::ms(30_000);
    config
}

fn attack(name: &str) -> PbftAttack {
    PbftAttack::from_name(name, &Default::default()).unwrap()
}

/// f malicious replicas (nodes 0..f, so the first primary is one) over `seeds` seeds,
/// each live within `recovery_s` simulated seconds of the network healing.
fn survives(name: &str, nodes: u32, seeds: u64, recovery_s: u64) {
    let f = (nodes - 1) / 3;
    let malicious: Vec<(NodeId, PbftAttack)> = (0..f).map(|n| (NodeId(n), attack(name))).collect();
    let mut config = attack_config(nodes);
    config.recovery_deadline_ns = qlab_core::ms(recovery_s * 1_000);
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let outcome = run_attack_chaos::<Pbft, _>(seed, &config, |_| {}, &malicious);
        if !outcome.passed() {
            failures.push(format!(
                "seed {seed}: {:?}; linearizability {:?}; live after heal {}\n  replay: {}",
                outcome.violations.first().map(ToString::to_string),
                outcome.linearizability,
                outcome.live_after_heal,
                replay_command(seed, nodes, name)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}, {f} of {nodes} malicious: {} of {seeds} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The command that replays `seed` with a full trace.
fn replay_command(seed: u64, nodes: u32, attack: &str) -> String {
    format!(
        "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES={nodes} QLAB_ATTACK={attack} cargo test --release -p qlab-lab --test \
         pbft_attacks replay_one_seed -- --ignored --nocapture"
    )
}

macro_rules! survives {
    ($($test:ident: $name:literal, live within $recovery_s:literal s;)*) => {$(
        #[test]
        fn $test() {
            survives($name, 4, SEEDS, $recovery_s);
            survives($name, 7, SEEDS_7, $recovery_s);
        }
    )*};
}

survives! {
    equivocating_primary_is_replaced: "equivocate", live within 30 s;
    double_voters_cannot_make_a_quorum: "double-vote", live within 30 s;
    forged_signatures_are_refused: "forge-signature", live within 30 s;
    forged_prepared_certificates_are_refused: "forge-log", live within 30 s;
    replayed_messages_change_nothing: "replay", live within 30 s;
    a_silent_primary_is_replaced: "silent-primary", live within 30 s;
    a_silent_replica_is_tolerated: "silent", live within 30 s;
    a_crashed_replica_is_tolerated: "crash", live within 30 s;
    // Votes to one replica and view-changes without certificates (issue 42): what breaks
    // a replica committing on 2f commits, harmless against 2f + 1.
    selective_commits_cannot_hide_a_committed_request: "selective-commit", live within 30 s;
    // f replicas asking for far-ahead views make every single honest timeout a full view
    // change (their stale VIEW-CHANGEs plus one honest one are the f + 1 that the join
    // rule waits for), and with 2 of 7 the cluster churns through views for a while after
    // the network heals: 12 of 200 seeds needed more than 30 s. Safe throughout.
    view_inflation_slows_but_cannot_stop_progress: "view-inflation", live within 120 s;
}

#[test]
fn f_plus_1_colluders_break_agreement_and_the_checkers_see_it() {
    let malicious = [(NodeId(0), attack("equivocate")), (NodeId(1), attack("equivocate"))];
    let config = attack_config(4);
    let account = caught(
        |seed| run_attack_chaos::<Pbft, _>(seed, &config, |_| {}, &malicious),
        0..SEEDS,
        &[Invariant::StateMachineSafety],
        |seed| format!("QLAB_MALICIOUS=2 {}", replay_command(seed, 4, "equivocate")),
    )
    .unwrap_or_else(|e| panic!("f + 1 equivocators: {e}"));
    eprintln!("f + 1 equivocators: {account}");
}

/// Replays one seed with a full trace: see the command a failing test prints
/// (`QLAB_MALICIOUS` malicious replicas, f by default).
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED, QLAB_CHAOS_NODES and QLAB_ATTACK set"]
fn replay_one_seed() {
    let nodes = nodes_from_env(4);
    let malicious_count = std::env::var("QLAB_MALICIOUS").map_or((nodes - 1) / 3, |v| v.parse().expect("a count"));
    let attack = attack_from_env(PbftAttack::from_name);
    let malicious: Vec<(NodeId, PbftAttack)> = (0..malicious_count).map(|n| (NodeId(n), attack.clone())).collect();
    let mut config = attack_config(nodes);
    config.recovery_deadline_ns = qlab_core::ms(120_000);
    let outcome =
        replay_and_print(|seed, config| run_attack_chaos::<Pbft, _>(seed, config, |_| {}, &malicious), config);
    println!("passed: {}", outcome.passed());
}

/// Issue 42's 2f-commit mutant against the attack it needs: one `selective-commit`
/// replica, n1 (the primary of view 1, the place the explorer's twins took), under the
/// chaos faults. How often a seed breaks agreement tells whether the attack suite can
/// see this bug at all: on 2026-12-07, in none of the 128 seeds (with the attacker at
/// n0 neither), while the explorer finds it in 12 steps with twins (`explore_pbft.rs`):
/// the honest replicas' own prepares reach each other unless the network loses just
/// the right ones.
#[test]
#[ignore = "a measurement: how many seeds the 2f-commit mutant fails under selective-commit"]
fn selective_commit_against_the_2f_commit_mutant() {
    let malicious = [(NodeId(1), attack("selective-commit"))];
    let config = attack_config(4);
    let mut unsafe_seeds = Vec::new();
    for seed in 0..SEEDS {
        let outcome =
            run_attack_chaos::<Pbft, _>(seed, &config, |pbft| pbft.ablate.mutant_commit_quorum_2f = true, &malicious);
        if !outcome.violations.is_empty() {
            unsafe_seeds.push(seed);
        }
    }
    println!(
        "2f-commit mutant, selective-commit at n1: unsafe in {} of {SEEDS} seeds: {unsafe_seeds:?}",
        unsafe_seeds.len()
    );
}
