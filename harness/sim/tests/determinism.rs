//! Same seed and configuration ⇒ identical event trace; different seeds diverge.

use qlab_core::{ClientId, NodeId, Op, Request, ms};
use qlab_raft::{Raft, RaftClient, RaftConfig};
use qlab_sim::{Latency, NetworkConfig, Sim};

fn chaotic_run(seed: u64) -> (Vec<String>, usize) {
    let network = NetworkConfig {
        latency: Latency::Normal { ns_mean: 5e6, ns_stddev: 2e6, ns_floor: 100_000 },
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.1,
        reorder_delay_ns_max: ms(20),
    };
    let mut sim: Sim<Raft, RaftClient> = Sim::new(RaftConfig::default(), 5, network, seed);
    sim.enable_trace();
    let client = sim.add_client(RaftClient::new(ClientId(0), 5));
    let mut seq = 0;
    let mut submit = |sim: &mut Sim<Raft, RaftClient>| {
        seq += 1;
        sim.submit(
            client,
            Request {
                client: ClientId(0),
                seq,
                op: Op::Put { key: seq % 3, value: vec![seq as u8] },
                signature: Vec::new(),
            },
        );
    };
    submit(&mut sim);
    let mut deadline = 0;
    for phase in 0..6 {
        deadline += ms(700);
        match phase {
            1 => sim.crash(NodeId(0)),
            2 => sim.partition(&[vec![NodeId(1), NodeId(2)], vec![NodeId(3), NodeId(4), NodeId(0)]]),
            3 => sim.restart(NodeId(0)),
            4 => sim.heal(),
            _ => {}
        }
        while sim.run_until(deadline).is_some() {
            submit(&mut sim);
        }
    }
    (sim.trace().to_vec(), sim.observations.len())
}

#[test]
fn same_seed_replays_the_same_trace() {
    let (a, observed_a) = chaotic_run(42);
    let (b, observed_b) = chaotic_run(42);
    assert!(a.len() > 1000, "the run should do real work, got {} lines", a.len());
    assert_eq!(observed_a, observed_b);
    assert_eq!(a, b);
}

#[test]
fn different_seeds_diverge() {
    let (a, _) = chaotic_run(1);
    let (b, _) = chaotic_run(2);
    assert_ne!(a, b);
}
