//! Golden scenarios on the simulator: whole clusters walked through one situation each,
//! with the checkers run at the end.

use qlab_core::{ClientId, Event, NodeId, Op, OpResult, Request, ms};
use qlab_raft::{Payload, Raft, RaftClient, RaftConfig, Record, Role};
use qlab_sim::Sim;

mod common;

use common::{assert_safe, put, write};

fn cluster(nodes: u32, seed: u64) -> Sim<Raft, RaftClient> {
    let mut sim = Sim::new(RaftConfig::default(), nodes, common::network(), seed);
    sim.add_client(RaftClient::new(ClientId(0), nodes));
    sim
}

/// Run until one leader is known by every up node.
fn settle(sim: &mut Sim<Raft, RaftClient>) -> NodeId {
    common::settle(sim, |sim, leader| {
        let term = sim.node(leader).unwrap().current_term();
        sim.up_nodes().iter().all(|n| {
            let node = sim.node(*n).unwrap();
            node.current_term() == term && node.leader() == Some(leader)
        })
    })
}

#[test]
fn partitioned_leader_steps_down_and_the_majority_moves_on() {
    let mut sim = cluster(5, 1);
    let old = settle(&mut sim);
    let old_term = sim.node(old).unwrap().current_term();
    let buddy = NodeId((old.0 + 1) % 5);
    let majority: Vec<NodeId> = (0..5).map(NodeId).filter(|n| *n != old && *n != buddy).collect();
    sim.partition(&[vec![old, buddy], majority.clone()]);
    // A write sent to the isolated leader cannot commit there.
    sim.inject_request(
        old,
        Request { client: ClientId(7), seq: 1, op: Op::Put { key: 9, value: vec![1] }, signature: Vec::new() },
    );
    // Check-quorum: within two minimum election timeouts (the leader checks every
    // 150 ms) the minority leader gives up, and then, without pre-vote, goes on
    // starting elections it cannot win.
    let deadline = sim.now() + 2 * RaftConfig::default().election_timeout_ns_min + ms(5);
    sim.run_to(deadline);
    assert_ne!(sim.node(old).unwrap().role(), Role::Leader, "isolated leader must step down");
    let deadline = sim.now() + ms(700);
    sim.run_to(deadline);
    let new = sim.leader().expect("the majority elects a leader");
    assert!(majority.contains(&new));
    assert!(sim.node(new).unwrap().current_term() > old_term);
    assert_eq!(write(&mut sim, put(1, 5)), OpResult::Ok);
    sim.heal();
    let leader = settle(&mut sim);
    assert!(majority.contains(&leader));
    // The isolated write never committed: every log agrees and none holds key 9.
    let deadline = sim.now() + ms(500);
    sim.run_to(deadline);
    for id in sim.up_nodes() {
        assert_eq!(sim.node(id).unwrap().kv().get(9), None, "{id} applied the minority write");
        assert_eq!(sim.node(id).unwrap().kv().get(1), Some(&vec![5]));
    }
    assert_safe(&sim);
}

#[test]
fn a_retried_command_is_applied_once_across_a_leader_crash() {
    let mut sim = cluster(5, 2);
    let leader = settle(&mut sim);
    let cas = Request {
        client: ClientId(0),
        seq: 1,
        op: Op::Cas { key: 3, expected: None, new: vec![42] },
        signature: Vec::new(),
    };
    sim.submit(0, cas.clone());
    // Run until every follower has stored the CAS, then crash the leader before the
    // acknowledgements reach it: the entry is on a majority but nobody answered.
    let stored = |sim: &Sim<Raft, RaftClient>, id: NodeId| {
        sim.storage(id).iter().any(|r| match r {
            Record::Append { entries } => {
                entries.iter().any(|e| matches!(&e.payload, Payload::Command(c) if **c == cas))
            }
            _ => false,
        })
    };
    let mut crashed = false;
    for _ in 0..10_000 {
        let deadline = sim.now() + 100_000;
        assert!(sim.run_until(deadline).is_none(), "the client must not be answered before the crash");
        if (0..5).map(NodeId).filter(|n| *n != leader).all(|n| stored(&sim, n)) {
            sim.crash(leader);
            crashed = true;
            break;
        }
    }
    assert!(crashed);
    // The client times out, finds the new leader and retries; the new leader commits
    // the stored entry and the retry, and the session table answers the retry with
    // the first execution's result instead of running the CAS again (which would fail).
    let deadline = sim.now() + ms(10_000);
    let done = sim.run_until(deadline).expect("the retried CAS completes");
    assert_eq!(done.result, OpResult::Cas { swapped: true, found: None });
    assert_ne!(done.from, leader);
    sim.restart(leader);
    let deadline = sim.now() + ms(1_000);
    sim.run_to(deadline);
    for id in sim.up_nodes() {
        assert_eq!(sim.node(id).unwrap().kv().get(3), Some(&vec![42]), "{id}");
    }
    assert_safe(&sim);
}

#[test]
fn a_restarted_follower_catches_up_from_far_behind() {
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
    let leader_node = sim.node(leader).unwrap();
    let follower_node = sim.node(follower).unwrap();
    assert_eq!(follower_node.log(), leader_node.log(), "logs converge");
    assert_eq!(follower_node.commit_index(), leader_node.commit_index());
    assert_eq!(follower_node.kv().get(1), Some(&vec![44])); // 300 as u8
    // It learned the commit point and re-applied its whole log after the restart.
    let restarted_commits =
        sim.observations.iter().filter(|o| o.node == follower && matches!(o.event, Event::Committed { .. })).count()
            as u64;
    assert!(restarted_commits >= leader_node.commit_index());
    assert_safe(&sim);
}

#[test]
fn heavy_loss_delays_but_never_breaks_replication() {
    let mut sim = cluster(5, 4);
    settle(&mut sim);
    let mut lossy = sim.network().clone();
    lossy.loss = 0.3;
    lossy.duplicate = 0.1;
    sim.set_network(lossy);
    for seq in 1..=50 {
        assert_eq!(write(&mut sim, put(seq, seq as u8)), OpResult::Ok);
    }
    let mut clean = sim.network().clone();
    clean.loss = 0.0;
    clean.duplicate = 0.0;
    sim.set_network(clean);
    let leader = settle(&mut sim);
    let deadline = sim.now() + ms(1_000);
    sim.run_to(deadline);
    let commit = sim.node(leader).unwrap().commit_index();
    for id in sim.up_nodes() {
        let node = sim.node(id).unwrap();
        assert_eq!(node.commit_index(), commit, "{id} behind");
        assert_eq!(node.kv().get(1), Some(&vec![50]));
    }
    assert!(sim.stats.messages_dropped > 0);
    assert_safe(&sim);
}
