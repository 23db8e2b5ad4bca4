//! Golden scenarios on the simulator: whole clusters walked through one situation each,
//! with the checkers run at the end.

use qlab_core::{ClientId, Event, NodeId, Op, OpResult, Request, ms};
use qlab_raft::{Message, Payload, Raft, RaftClient, RaftConfig, RaftTimer, Record, Role};
use qlab_sim::Sim;

mod common;

use common::{assert_safe, put, write};

fn cluster(nodes: u32, seed: u64) -> Sim<Raft, RaftClient> {
    common::raft_cluster(RaftConfig::default(), nodes, seed)
}

fn settle(sim: &mut Sim<Raft, RaftClient>) -> NodeId {
    common::settle_raft(sim)
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

/// Only `candidate` may ask for votes (so the scenario decides who wins), and, when
/// `max_entry_term` is given, no `AppendEntries` carrying an entry of a later term gets
/// through (so a new leader's no-op stays on the leader).
fn steer(sim: &mut Sim<Raft, RaftClient>, candidate: NodeId, max_entry_term: Option<u64>, silent: Option<NodeId>) {
    sim.set_filter(Some(Box::new(move |from, _to, msg| match msg {
        Message::RequestVote { .. } => from != candidate,
        _ if Some(from) == silent => matches!(msg, Message::AppendEntries { .. } | Message::Heartbeat { .. }),
        Message::AppendEntries { entries, .. } => max_entry_term.is_some_and(|t| entries.iter().any(|e| e.term > t)),
        _ => false,
    })));
}

/// Fire `id`'s election timer until it leads (a stale term takes a round or two).
fn elect(sim: &mut Sim<Raft, RaftClient>, id: NodeId) -> u64 {
    for _ in 0..40 {
        sim.fire_timer_now(id, RaftTimer::Election);
        let deadline = sim.now() + ms(30);
        sim.run_to(deadline);
        if sim.node(id).unwrap().role() == Role::Leader {
            return sim.node(id).unwrap().current_term();
        }
    }
    panic!("{id} could not be elected");
}

/// Raft Figure 8, step by step on five simulated servers, with the commit rule as
/// configured. (a) S1 leads and gets entry X to S2 only. (b) S1 crashes; S5 wins the
/// next term with S3 and S4 and appends its no-op at X's index, on itself only; S5
/// crashes. (c) S1 restarts, wins a later term and replicates X to a majority, but not
/// its own no-op. (d) S1 crashes; S5 restarts and, its last term being newer than X's,
/// wins with S2, S3 and S4 and overwrites X's index. Returns the checker's violations.
fn figure_8(commit_old_term_by_count: bool) -> Vec<qlab_check::Violation> {
    let [s1, s2, s3, s4, s5] = [0, 1, 2, 3, 4].map(NodeId);
    let mut config = RaftConfig { max_entries_per_append: 1, ..RaftConfig::default() };
    config.ablate.commit_old_term_by_count = commit_old_term_by_count;
    let mut sim = Sim::new(config, 5, common::network(), 8);
    sim.add_client(RaftClient::new(ClientId(0), 5));
    steer(&mut sim, s1, None, None);
    elect(&mut sim, s1);
    assert_eq!(write(&mut sim, put(1, 1)), OpResult::Ok);
    let x_index = sim.node(s1).unwrap().last_index() + 1;
    // (a)
    sim.partition(&[vec![s1, s2], vec![s3, s4, s5]]);
    sim.inject_request(s1, put(2, 2));
    let deadline = sim.now() + ms(20);
    sim.run_to(deadline);
    let x_term = sim.node(s2).unwrap().term_at(x_index).expect("X reached S2");
    // (b)
    sim.crash(s1);
    steer(&mut sim, s5, None, Some(s5));
    elect(&mut sim, s5);
    assert!(sim.node(s5).unwrap().term_at(x_index).is_some_and(|t| t > x_term), "S5's no-op sits at X's index");
    sim.crash(s5);
    // (c)
    sim.heal();
    sim.restart(s1);
    steer(&mut sim, s1, Some(x_term), None);
    elect(&mut sim, s1);
    let deadline = sim.now() + ms(300);
    sim.run_to(deadline);
    let holders = [s1, s2, s3, s4].iter().filter(|n| sim.node(**n).unwrap().term_at(x_index) == Some(x_term)).count();
    assert!(holders >= 3, "X is on a majority");
    let committed = sim.node(s1).unwrap().commit_index() >= x_index;
    assert_eq!(committed, commit_old_term_by_count, "X commits by counting replicas only without the rule");
    // (d)
    sim.crash(s1);
    sim.restart(s5);
    steer(&mut sim, s5, None, None);
    elect(&mut sim, s5);
    sim.set_filter(None);
    let deadline = sim.now() + ms(300);
    sim.run_to(deadline);
    assert!(sim.node(s2).unwrap().term_at(x_index).is_some_and(|t| t != x_term), "S5 overwrote X's index");
    qlab_check::check_observations(&sim.observations)
}

/// §5.4.2: with the rule, S1 never commits X (an entry of an older term) by counting
/// replicas, so S5 overwriting it in (d) is legal and every checker passes.
#[test]
fn s5_4_2_figure_8_the_commit_rule_makes_the_overwrite_harmless() {
    let violations = figure_8(false);
    assert!(violations.is_empty(), "{violations:?}");
}

/// The same schedule with `commit_old_term_by_count`: S1 commits X in (c), S5 replaces
/// it in (d), and State Machine Safety catches one index committed with two entries.
#[test]
fn s5_4_2_figure_8_without_the_rule_a_committed_entry_is_overwritten() {
    let violations = figure_8(true);
    assert!(violations.iter().any(|v| v.invariant == qlab_check::Invariant::StateMachineSafety), "{violations:?}");
}

/// A paused leader (gray failure: SIGSTOP, a long GC pause) hears nothing and does
/// nothing: while it sleeps the others elect a leader in a higher term, and its own
/// term stands still however many messages wait for it. When it wakes it is handed
/// everything at once, with its clock showing the time then, learns the higher term and
/// steps down; nothing it did before or after breaks safety.
#[test]
fn a_paused_leader_wakes_to_a_higher_term_and_steps_down() {
    let mut sim = cluster(3, 4);
    let old = settle(&mut sim);
    let old_term = sim.node(old).unwrap().current_term();
    sim.pause(old, ms(2_000));
    assert!(sim.is_paused(old));
    sim.run_to(sim.now() + ms(1_500));
    let others: Vec<NodeId> = (0..3).map(NodeId).filter(|n| *n != old).collect();
    let new_term = others.iter().map(|n| sim.node(*n).unwrap().current_term()).max().unwrap();
    assert!(new_term > old_term, "the others moved on without the paused leader");
    assert!(others.iter().any(|n| sim.node(*n).unwrap().role() == Role::Leader), "and elected one of themselves");
    let asleep = sim.node(old).unwrap();
    assert_eq!((asleep.current_term(), asleep.role()), (old_term, Role::Leader), "a paused node changes nothing");
    sim.run_to(sim.now() + ms(1_000));
    assert!(!sim.is_paused(old));
    let awake = sim.node(old).unwrap();
    assert!(awake.current_term() >= new_term, "woken, it learns the higher term");
    assert_ne!(awake.role(), Role::Leader, "and steps down");
    assert_safe(&sim);
}
