//! Property test over seeds: every protocol under the chaos faults plus disks that
//! fail as real ones do (Alagappan et al., FAST 2018): writes that take time, so a
//! crash loses or tears the write in progress; stalls of 20-200 ms; and a durable
//! record that reads back damaged, which the node detects at restart and answers by
//! refusing to start (never by running from a state it does not have). Zero
//! violations, and live once the faults heal with the damaged replicas still down
//! (PBFT: see `PBFT_STUCK_WITH_A_REPLICA_DOWN_AT_MOST` for the one gap found).
//! A failing seed is printed with the command that replays it.
//!
//! The fourth kind of disk fault, an fsync that lies, breaks every protocol here; it is
//! the `fsync-lies` counterexample case (`counterexamples.rs`), not a property.

use qlab_lab::chaos::{ChaosConfig, ChaosKnobs, DiskFaults, nodes_from_env, replay_from_env, run_protocol_chaos};
use qlab_paxos::Paxos;
use qlab_pbft::Pbft;
use qlab_raft::Raft;

const SEEDS: u64 = 1_000;

fn disk_config(nodes: u32, byzantine: bool) -> ChaosConfig {
    let mut config = ChaosConfig::new(nodes);
    config.disk = DiskFaults::HONEST;
    if byzantine {
        // As pbft_chaos.rs: at most f replicas faulty at a time, 30 s to recover.
        config.recovery_deadline_ns = qlab_core::ms(30_000);
        config.faulty_at_most = Some(qlab_pbft::faults_tolerated(nodes));
    }
    config
}

/// Seeds in which PBFT may stay stuck after healing: only those where a damaged disk
/// keeps a replica down for good, and at most this share of the sweep. A known gap,
/// not a property: with a replica gone for good the three others can fall out of step
/// in their view changes (each view whose primary is the dead replica costs a timeout,
/// and a replica alone in a higher view does not come back), seen in 4 of 2,000 seeds.
/// Safety holds in every seed.
const PBFT_STUCK_WITH_A_REPLICA_DOWN_AT_MOST: f64 = 0.01;

fn check<P: ChaosKnobs>(nodes: u32, seeds: std::ops::Range<u64>) {
    let count = seeds.end - seeds.start;
    let config = disk_config(nodes, P::NAME == "pbft");
    let replay = |seed: u64| {
        format!(
            "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES={nodes} cargo test --release -p qlab-lab --test disk_chaos \
             replay_{}_seed -- --ignored --nocapture",
            P::NAME
        )
    };
    let (mut stats, mut seeds_with_a_refusal, mut operations) = (qlab_sim::DiskStats::default(), 0u64, 0usize);
    let (mut failures, mut stuck_with_a_replica_down) = (Vec::new(), Vec::new());
    for seed in seeds {
        let outcome = run_protocol_chaos::<P>(seed, &config);
        operations += outcome.operations_completed;
        stats.writes_lost_at_crash += outcome.disk.writes_lost_at_crash;
        stats.torn_tails_cut += outcome.disk.torn_tails_cut;
        stats.starts_refused += outcome.disk.starts_refused;
        let kept_down = outcome.disk.starts_refused > 0;
        seeds_with_a_refusal += u64::from(kept_down);
        if !outcome.is_safe() {
            failures.push(format!("seed {seed}: {:?}\n  replay: {}", outcome.verdict(), replay(seed)));
        } else if !outcome.live_after_heal {
            if P::NAME == "pbft" && kept_down {
                stuck_with_a_replica_down.push(format!("seed {seed} ({})", replay(seed)));
            } else {
                failures.push(format!("seed {seed}: not live after healing\n  replay: {}", replay(seed)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed ({nodes} nodes):\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} at {nodes} nodes over {count} seeds: {stats:?}, {seeds_with_a_refusal} seeds with a replica kept down, \
         not live after healing with one down: {stuck_with_a_replica_down:?}",
        P::NAME
    );
    assert!(
        stuck_with_a_replica_down.len() as f64 <= PBFT_STUCK_WITH_A_REPLICA_DOWN_AT_MOST * count as f64,
        "stuck in {} of {count} seeds with a replica down: {stuck_with_a_replica_down:?}",
        stuck_with_a_replica_down.len()
    );
    assert!(operations as u64 > count * 50, "the load should be real: {operations} operations");
    // The faults must have happened for the verdict to mean anything.
    assert!(stats.writes_lost_at_crash > count / 10, "crashes mid-write: {stats:?}");
    assert!(seeds_with_a_refusal > count / 20, "damaged records detected in {seeds_with_a_refusal} seeds");
}

#[test]
fn raft_3_nodes_survives_1000_disk_chaos_seeds() {
    check::<Raft>(3, 0..SEEDS);
}

#[test]
fn raft_5_nodes_survives_1000_disk_chaos_seeds() {
    check::<Raft>(5, 0..SEEDS);
}

#[test]
fn multipaxos_3_nodes_survives_1000_disk_chaos_seeds() {
    check::<Paxos>(3, 0..SEEDS);
}

#[test]
fn multipaxos_5_nodes_survives_1000_disk_chaos_seeds() {
    check::<Paxos>(5, 0..SEEDS);
}

#[test]
fn pbft_4_nodes_survives_1000_disk_chaos_seeds() {
    check::<Pbft>(4, 0..SEEDS);
}

#[test]
fn pbft_7_nodes_survives_1000_disk_chaos_seeds_first_half() {
    check::<Pbft>(7, 0..SEEDS / 2);
}

#[test]
fn pbft_7_nodes_survives_1000_disk_chaos_seeds_second_half() {
    check::<Pbft>(7, SEEDS / 2..SEEDS);
}

/// Replays one seed with a full trace: see the command a failing seed prints.
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_raft_seed() {
    replay_from_env(run_protocol_chaos::<Raft>, disk_config(nodes_from_env(5), false));
}

#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_multipaxos_seed() {
    replay_from_env(run_protocol_chaos::<Paxos>, disk_config(nodes_from_env(5), false));
}

#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED and QLAB_CHAOS_NODES set"]
fn replay_pbft_seed() {
    replay_from_env(run_protocol_chaos::<Pbft>, disk_config(nodes_from_env(4), true));
}
