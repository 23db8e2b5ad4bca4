//! Golden Multi-Paxos scenarios on the simulator: whole clusters walked through one
//! situation each, with the checkers run at the end.

use qlab_core::{ClientId, NodeId, Op, OpResult, Protocol, Request, ms};
use qlab_paxos::{Paxos, PaxosClient, PaxosConfig, PaxosTimer, Role};
use qlab_sim::Sim;

mod common;

use common::{assert_safe, put, write};

fn cluster(nodes: u32, seed: u64) -> Sim<Paxos, PaxosClient> {
    let mut sim = Sim::new(PaxosConfig::default(), nodes, common::network(), seed);
    sim.add_client(PaxosClient::new(ClientId(0), nodes));
    sim
}

/// Run until one leader is known by every up node.
fn settle(sim: &mut Sim<Paxos, PaxosClient>) -> NodeId {
    common::settle(sim, |sim, leader| sim.up_nodes().iter().all(|n| sim.node(*n).unwrap().leader() == Some(leader)))
}

#[test]
fn partitioned_leader_steps_down_and_its_write_never_commits() {
    let mut sim = cluster(5, 1);
    let old = settle(&mut sim);
    let old_epoch = sim.node(old).unwrap().epoch();
    let buddy = NodeId((old.0 + 1) % 5);
    let majority: Vec<NodeId> = (0..5).map(NodeId).filter(|n| *n != old && *n != buddy).collect();
    sim.partition(&[vec![old, buddy], majority.clone()]);
    sim.inject_request(
        old,
        Request { client: ClientId(7), seq: 1, op: Op::Put { key: 9, value: vec![1] }, signature: Vec::new() },
    );
    let deadline = sim.now() + 2 * PaxosConfig::default().leader_timeout_ns_min + ms(5);
    sim.run_to(deadline);
    assert_ne!(sim.node(old).unwrap().role(), Role::Leader, "check-quorum: the isolated leader steps down");
    let deadline = sim.now() + ms(700);
    sim.run_to(deadline);
    let new = sim.leader().expect("the majority elects a leader");
    assert!(majority.contains(&new));
    assert!(sim.node(new).unwrap().epoch() > old_epoch);
    assert_eq!(write(&mut sim, put(1, 5)), OpResult::Ok);
    sim.heal();
    settle(&mut sim);
    let deadline = sim.now() + ms(500);
    sim.run_to(deadline);
    // The minority's proposal was accepted by two acceptors at most: never chosen, and
    // the majority's leader proposed its own value (or a no-op) in that slot.
    for id in sim.up_nodes() {
        assert_eq!(sim.node(id).unwrap().kv().get(9), None, "{id} applied the minority write");
        assert_eq!(sim.node(id).unwrap().kv().get(1), Some(&vec![5]));
    }
    assert_safe(&sim);
}

/// Howard & Mortier: unlike Raft, a Paxos candidate need not have an up-to-date log —
/// it learns what it lacks from the promises. A node that missed every write wins an
/// election and still serves the committed values.
#[test]
fn a_node_that_missed_every_write_can_lead_and_keeps_what_was_chosen() {
    let mut sim = cluster(3, 4);
    let first = settle(&mut sim);
    let behind = NodeId((first.0 + 1) % 3);
    sim.crash(behind);
    for seq in 1..=20 {
        assert_eq!(write(&mut sim, put(seq, seq as u8)), OpResult::Ok);
    }
    // Bring the stale node back and crash the leader; the stale node times out first.
    sim.restart(behind);
    let deadline = sim.now() + ms(1);
    sim.run_to(deadline);
    assert_eq!(sim.node(behind).unwrap().commit_index(), 0, "it knows nothing chosen yet");
    sim.crash(first);
    sim.fire_timer_now(behind, PaxosTimer::LeaderTimeout);
    let deadline = sim.now() + ms(100);
    sim.run_to(deadline);
    assert_eq!(sim.leader(), Some(behind), "the node that missed every write leads");
    assert_eq!(write(&mut sim, put(21, 21)), OpResult::Ok);
    // Followers learn the last commit point with the next heartbeat.
    let deadline = sim.now() + ms(200);
    sim.run_to(deadline);
    let leader_log = sim.node(behind).unwrap().chosen().to_vec();
    assert!(leader_log.len() >= 21, "it adopted the chosen values from the promises");
    for id in sim.up_nodes() {
        assert_eq!(sim.node(id).unwrap().kv().get(1), Some(&vec![21]), "{id}");
        assert_eq!(sim.node(id).unwrap().chosen(), &leader_log[..], "{id}");
    }
    // Leader Completeness held: the checker compared the new leader's proposals with
    // everything committed before its election.
    assert_safe(&sim);
}

#[test]
fn a_restarted_replica_catches_up_from_far_behind() {
    let mut sim = cluster(3, 3);
    let leader = settle(&mut sim);
    let follower = NodeId((leader.0 + 1) % 3);
    sim.crash(follower);
    for seq in 1..=300 {
        assert_eq!(write(&mut sim, put(seq, seq as u8)), OpResult::Ok);
    }
    sim.restart(follower);
    let deadline = sim.now() + ms(2_000);
    sim.run_to(deadline);
    let expected = sim.node(leader).unwrap().chosen().to_vec();
    assert!(expected.len() >= 300);
    assert_eq!(sim.node(follower).unwrap().chosen(), &expected[..], "learned every chosen slot");
    assert_eq!(sim.node(follower).unwrap().kv().get(1), Some(&vec![(300 % 256) as u8]));
    assert_safe(&sim);
}
