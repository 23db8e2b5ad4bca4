//! The simulator's byte counts are real mode's: every message a simulated replica sends
//! is counted as `qlab_core::wire::peer_frame_bytes`, and this file holds that number
//! to the frame qlab-net's encoder actually writes (`Wire::Peer`, length-prefixed),
//! message by message, for every message type of every protocol. Each protocol runs a
//! scenario that sends all of its types: a lagging follower (snapshots, state transfer,
//! fetching state), a leadership transfer, a crashed leader (elections, view changes),
//! an isolated leader healed (rejections of its stale ballot).

use qlab_core::wire::peer_frame_bytes;
use qlab_core::{ClientId, NodeId, ms};
use qlab_lab::protocols::LabProtocol;
use qlab_lab::workload::{Workload, WorkloadConfig};
use qlab_net::runtime::Wire;
use qlab_sim::{Latency, NetworkConfig, Sim};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Per message kind: how many were sent, and the first whose count disagreed with the
/// encoder (simulator's count, encoder's frame length).
#[derive(Default)]
struct Seen {
    sent: BTreeMap<&'static str, u64>,
    mismatches: BTreeMap<&'static str, (usize, usize)>,
}

fn exercise<P: LabProtocol>(config: P::Config, nodes: u32, seed: u64) -> Seen {
    let network = NetworkConfig { latency: Latency::Uniform { ns_min: ms(1), ns_max: ms(3) }, ..Default::default() };
    let mut sim: Sim<P, P::Client> = Sim::new(config, nodes, network, seed);
    let clients = 3;
    for c in 0..clients {
        sim.add_client(P::client(sim.config(), ClientId(c as u64), nodes, ms(100)));
    }
    let seen = Rc::new(RefCell::new(Seen::default()));
    let record = Rc::clone(&seen);
    sim.set_filter(Some(Box::new(move |_, _, msg: &P::Message| {
        let mut frame = Vec::new();
        qlab_net::frame::encode(&Wire::Peer(msg), &mut frame);
        let kind = P::message_kind(msg);
        let mut seen = record.borrow_mut();
        *seen.sent.entry(kind).or_insert(0) += 1;
        let counted = peer_frame_bytes(msg);
        if counted != frame.len() {
            seen.mismatches.entry(kind).or_insert((counted, frame.len()));
        }
        false
    })));
    let mut workload = Workload::new(
        WorkloadConfig {
            clients,
            keys: 64,
            value_bytes: 32,
            think_ns: ms(2),
            read_ratio: 0.3,
            cas_ratio: 0.1,
            readers: 0,
            arrival_rate_per_s: None,
        },
        seed,
    );
    workload.start_all_at(ms(500));
    let mut run_to = |sim: &mut Sim<P, P::Client>, at_ms: u64| {
        workload.run(sim, ms(at_ms), |_, _| {}, |_| false);
    };
    run_to(&mut sim, 1_000);
    let leader = sim.leader().expect("a leader after a second");
    let lagging = NodeId((leader.0 + 1) % nodes);
    sim.crash(lagging);
    run_to(&mut sim, 4_000);
    sim.restart(lagging);
    run_to(&mut sim, 6_000);
    if let Some(leader) = sim.leader() {
        let to = NodeId((leader.0 + 2) % nodes);
        sim.admin(leader, qlab_core::AdminCommand::TransferLeadership { to });
    }
    run_to(&mut sim, 7_000);
    if let Some(leader) = sim.leader() {
        sim.crash(leader);
        run_to(&mut sim, 10_000);
        sim.restart(leader);
    }
    run_to(&mut sim, 11_000);
    // A leader cut off keeps proposing in its old term or ballot; what answers it
    // after the heal is a rejection (Multi-Paxos's nack).
    if let Some(leader) = sim.leader() {
        let rest: Vec<NodeId> = (0..nodes).map(NodeId).filter(|n| *n != leader).collect();
        sim.partition(&[vec![leader], rest]);
        run_to(&mut sim, 12_500);
        sim.heal();
    }
    run_to(&mut sim, 14_000);
    sim.set_filter(None);
    Rc::try_unwrap(seen).ok().expect("the filter is gone").into_inner()
}

fn assert_every_kind_counted_as_sent(protocol: &str, seen: &Seen, kinds: &[&str]) {
    assert!(
        seen.mismatches.is_empty(),
        "{protocol}: simulator vs encoder bytes (kind: counted, encoded): {:?}",
        seen.mismatches
    );
    let missing: Vec<&&str> = kinds.iter().filter(|k| !seen.sent.contains_key(**k)).collect();
    assert!(missing.is_empty(), "{protocol}: the scenario sent no {missing:?} (sent {:?})", seen.sent);
}

#[test]
fn raft_counts_every_message_as_its_frame() {
    let config = qlab_raft::RaftConfig {
        pre_vote: true,
        snapshot_every_entries: 100,
        snapshot_chunk_bytes: 256,
        ..Default::default()
    };
    let seen = exercise::<qlab_raft::Raft>(config, 3, 7);
    let kinds = [
        "request_vote",
        "vote_response",
        "append_entries",
        "append_response",
        "heartbeat",
        "heartbeat_response",
        "pre_vote",
        "pre_vote_response",
        "timeout_now",
        "install_snapshot",
        "install_snapshot_response",
    ];
    assert_every_kind_counted_as_sent("raft", &seen, &kinds);
}

#[test]
fn multipaxos_counts_every_message_as_its_frame() {
    let config = qlab_paxos::PaxosConfig { checkpoint_every_slots: 100, state_chunk_bytes: 256, ..Default::default() };
    let seen = exercise::<qlab_paxos::Paxos>(config, 3, 7);
    let kinds = [
        "prepare",
        "promise",
        "accept",
        "accepted",
        "nack",
        "heartbeat",
        "heartbeat_ack",
        "catch_up",
        "learn",
        "transfer_state",
    ];
    assert_every_kind_counted_as_sent("multipaxos", &seen, &kinds);
}

#[test]
fn pbft_counts_every_message_as_its_frame() {
    let mut config = qlab_pbft::PbftConfig::with_keys(qlab_lab::protocols::PBFT_KEY_SEED, 4, 3);
    config.checkpoint_interval = 16;
    config.log_window = 32;
    let seen = exercise::<qlab_pbft::Pbft>(config, 4, 7);
    let kinds = [
        "pre_prepare",
        "prepare",
        "commit",
        "checkpoint",
        "view_change",
        "new_view",
        "forward",
        "fetch_state",
        "fetch_new_view",
        "behind",
        "state",
    ];
    assert_every_kind_counted_as_sent("pbft", &seen, &kinds);
}

/// The count is the frame, not an estimate: a value twice as long costs its extra
/// bytes exactly.
#[test]
fn a_longer_value_costs_exactly_its_extra_bytes() {
    let entry =
        |len: usize| qlab_core::Request::new(ClientId(1), 1, qlab_core::Op::Put { key: 1, value: vec![7; len] });
    let short = peer_frame_bytes(&entry(10));
    let long = peer_frame_bytes(&entry(20));
    assert_eq!(long - short, 10);
}
