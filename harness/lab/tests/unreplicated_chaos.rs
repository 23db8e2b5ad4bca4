//! The unreplicated baseline under the same chaos as the replicated protocols: its one
//! server crashes and restarts from the requests it logged, amid loss, duplication and
//! reordering. It must never lose or reorder an answered write (the checkers and the
//! linearizability search), and must serve every client again once it is back.
//! Replay a failing seed with `QLAB_CHAOS_SEED=<seed> cargo test --release -p qlab-lab
//! --test unreplicated_chaos replay_one_seed -- --ignored --nocapture`.

use qlab_lab::chaos::{ChaosConfig, run_protocol_chaos};
use qlab_unreplicated::Unreplicated;

const SEEDS: u64 = 300;

fn run(seed: u64, nodes: u32) -> qlab_lab::chaos::ChaosOutcome {
    run_protocol_chaos::<Unreplicated>(seed, &ChaosConfig::new(nodes))
}

#[test]
fn unreplicated_server_survives_crash_restart_chaos() {
    let mut crashes = 0;
    for nodes in [1, 3] {
        for seed in 0..SEEDS {
            let outcome = run(seed, nodes);
            assert!(
                outcome.is_safe() && outcome.live_after_heal,
                "seed {seed}, {nodes} nodes: first violations {:?}, linearizability {:?}, live after heal {}\n  replay: \
                 QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES={nodes} cargo test --release -p qlab-lab --test \
                 unreplicated_chaos replay_one_seed -- --ignored --nocapture",
                outcome.violations.iter().take(3).collect::<Vec<_>>(),
                outcome.linearizability,
                outcome.live_after_heal
            );
            crashes += outcome.fault_log.iter().filter(|l| l.contains("crash")).count();
        }
    }
    // The faults happened: a run of this kind that injected nothing would prove nothing.
    assert!(crashes > SEEDS as usize, "only {crashes} crashes in {} runs", 2 * SEEDS);
}

#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED (and QLAB_CHAOS_NODES) set"]
fn replay_one_seed() {
    let seed: u64 = std::env::var("QLAB_CHAOS_SEED").expect("QLAB_CHAOS_SEED").parse().unwrap();
    let nodes: u32 = std::env::var("QLAB_CHAOS_NODES").map_or(1, |n| n.parse().unwrap());
    let outcome = run(seed, nodes);
    for line in &outcome.fault_log {
        println!("{line}");
    }
    println!("violations {:?}\nlinearizability {:?}", outcome.violations, outcome.linearizability);
}
