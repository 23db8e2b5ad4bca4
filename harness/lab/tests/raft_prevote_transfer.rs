//! PreVote (Raft thesis §9.6) and leadership transfer (thesis §3.10) as golden scenarios
//! on the simulator, each with the checkers run at the end.

use qlab_core::{AdminCommand, Event, NodeId, OpResult, ms};
use qlab_raft::{Raft, RaftClient, RaftConfig, Role};
use qlab_sim::Sim;

mod common;

use common::{assert_safe, put, write};

use common::{raft_cluster as cluster, settle_raft as settle};

fn elections_since(sim: &Sim<Raft, RaftClient>, since: u64) -> usize {
    sim.observations.iter().filter(|o| o.time >= since && matches!(o.event, Event::Elected { .. })).count()
}

/// Cut a follower off for two seconds (many election timeouts), heal, and report: the
/// leader before and after, the cut-off follower's term when healed, the leader's
/// term before, and the elections after the heal.
fn rejoin(pre_vote: bool) -> (NodeId, NodeId, u64, u64, usize) {
    let mut sim = cluster(RaftConfig { pre_vote, ..RaftConfig::default() }, 5, 4);
    let leader = settle(&mut sim);
    let term = sim.node(leader).unwrap().current_term();
    let loner = NodeId((leader.0 + 2) % 5);
    let rest: Vec<NodeId> = (0..5).map(NodeId).filter(|n| *n != loner).collect();
    sim.partition(&[vec![loner], rest]);
    let deadline = sim.now() + ms(2_000);
    sim.run_to(deadline);
    let loner_term = sim.node(loner).unwrap().current_term();
    let healed_at = sim.now();
    sim.heal();
    let deadline = sim.now() + ms(1_000);
    sim.run_to(deadline);
    assert_eq!(write(&mut sim, put(1, 1)), OpResult::Ok, "the cluster serves after the heal");
    assert_safe(&sim);
    (leader, sim.leader().unwrap(), loner_term, term, elections_since(&sim, healed_at))
}

/// §9.6: without PreVote the cut-off follower campaigns over and over, raising its
/// term; on rejoining, that term deposes a leader nothing was wrong with.
#[test]
fn s9_6_without_pre_vote_a_rejoining_follower_forces_an_election() {
    let (_, _, loner_term, term, elections) = rejoin(false);
    assert!(loner_term > term + 3, "the loner's term ran ahead: {loner_term} against {term}");
    assert!(elections >= 1, "the heal forced an election");
}

/// §9.6: with PreVote the cut-off follower never wins a pre-vote, so its term stays
/// put, and the cluster keeps its leader when it rejoins.
#[test]
fn s9_6_with_pre_vote_a_rejoining_follower_leaves_the_leader_alone() {
    let (before, after, loner_term, term, elections) = rejoin(true);
    assert_eq!(loner_term, term, "pre-votes do not raise the term");
    assert_eq!((before, elections), (after, 0));
}

/// §9.6: PreVote still elects a new leader when the old one is really gone.
#[test]
fn s9_6_pre_vote_still_replaces_a_crashed_leader() {
    let mut sim = cluster(RaftConfig { pre_vote: true, ..RaftConfig::default() }, 5, 5);
    let old = settle(&mut sim);
    let term = sim.node(old).unwrap().current_term();
    sim.crash(old);
    let deadline = sim.now() + ms(1_500);
    sim.run_to(deadline);
    let new = sim.leader().expect("a new leader");
    assert_ne!(new, old);
    assert_eq!(sim.node(new).unwrap().current_term(), term + 1, "one pre-vote round, one real election");
    assert_eq!(write(&mut sim, put(1, 2)), OpResult::Ok);
    assert_safe(&sim);
}

/// §3.10: the leader brings the target up to date and sends TimeoutNow; the target
/// wins the next term well within one election timeout, and writes go on.
#[test]
fn s3_10_leadership_transfer_hands_over_within_a_few_round_trips() {
    let mut sim = cluster(RaftConfig::default(), 5, 6);
    let old = settle(&mut sim);
    for seq in 1..=20 {
        assert_eq!(write(&mut sim, put(seq, seq as u8)), OpResult::Ok);
    }
    let target = NodeId((old.0 + 3) % 5);
    let term = sim.node(old).unwrap().current_term();
    let asked_at = sim.now();
    sim.admin(target, AdminCommand::TransferLeadership { to: old }); // a follower ignores it
    sim.admin(old, AdminCommand::TransferLeadership { to: target });
    let deadline = sim.now() + ms(50);
    sim.run_to(deadline);
    assert_eq!(sim.leader(), Some(target), "handed over within 50 ms");
    assert_eq!(sim.node(target).unwrap().current_term(), term + 1);
    assert_eq!(sim.node(old).unwrap().role(), Role::Follower);
    assert_eq!(elections_since(&sim, asked_at), 1);
    assert_eq!(write(&mut sim, put(21, 21)), OpResult::Ok);
    assert_safe(&sim);
}

/// §3.10: a transfer to a replica that cannot take over is abandoned after an election
/// timeout, and the leader serves clients again (in between it turns them away).
#[test]
fn s3_10_a_transfer_that_cannot_finish_is_abandoned() {
    let mut sim = cluster(RaftConfig::default(), 3, 7);
    let leader = settle(&mut sim);
    let target = NodeId((leader.0 + 1) % 3);
    sim.crash(target);
    let asked_at = sim.now();
    sim.admin(leader, AdminCommand::TransferLeadership { to: target });
    // Sent away to the (crashed) target meanwhile, the write completes only once the
    // leader has given up on the transfer, a minimum election timeout later.
    sim.submit(0, put(1, 1));
    let done = sim.run_until(sim.now() + ms(2_000)).expect("the write completes");
    assert_eq!(done.result, OpResult::Ok);
    assert!(done.time >= asked_at + RaftConfig::default().election_timeout_ns_min, "answered during the transfer");
    assert_eq!(done.from, leader);
    assert_eq!(sim.leader(), Some(leader), "still the leader once the transfer is abandoned");
    assert_safe(&sim);
}
