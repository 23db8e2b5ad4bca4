//! Helpers shared by the whole-cluster scenario tests of every protocol.

use qlab_check::check_observations;
use qlab_core::{Client, ClientId, NodeId, Op, OpResult, Protocol, Request, ms};
use qlab_sim::{Latency, NetworkConfig, Sim};

/// The scenarios' network: 1–3 ms one-way, nothing lost.
pub fn network() -> NetworkConfig {
    NetworkConfig { latency: Latency::Uniform { ns_min: ms(1), ns_max: ms(3) }, ..Default::default() }
}

/// Client 0 writes `value` to key 1.
#[allow(dead_code, reason = "not every scenario file writes to key 1")]
pub fn put(seq: u64, value: u8) -> Request {
    Request::new(ClientId(0), seq, Op::Put { key: 1, value: vec![value] })
}

/// Run until `sim` has a leader that `agreed` says every up node accepts.
pub fn settle<P: Protocol, C: Client>(sim: &mut Sim<P, C>, agreed: impl Fn(&Sim<P, C>, NodeId) -> bool) -> NodeId {
    for _ in 0..100 {
        let deadline = sim.now() + ms(100);
        sim.run_to(deadline);
        if let Some(leader) = sim.leader()
            && agreed(sim, leader)
        {
            return leader;
        }
    }
    panic!("no stable leader");
}

/// Submit for client 0 and run until it has its answer.
pub fn write<P: Protocol, C: Client>(sim: &mut Sim<P, C>, request: Request) -> OpResult {
    sim.submit(0, request);
    let deadline = sim.now() + ms(10_000);
    sim.run_until(deadline).expect("the write completes").result
}

/// Client 0's write number `seq`, to key `seq mod keys` (distinct keys make a state of
/// real size for snapshots and state transfer).
#[allow(dead_code, reason = "only the compaction scenarios spread writes over keys")]
pub fn put_spread(seq: u64, keys: u64) -> Request {
    Request::new(ClientId(0), seq, Op::Put { key: seq % keys, value: seq.to_le_bytes().to_vec() })
}

/// A Raft cluster of `nodes` with `config` and one client.
#[allow(dead_code, reason = "Raft scenario files only")]
pub fn raft_cluster(
    config: qlab_raft::RaftConfig,
    nodes: u32,
    seed: u64,
) -> Sim<qlab_raft::Raft, qlab_raft::RaftClient> {
    let mut sim = Sim::new(config, nodes, network(), seed);
    sim.add_client(qlab_raft::RaftClient::new(ClientId(0), nodes));
    sim
}

/// Run a Raft cluster until one leader is known by every up node, in its term.
#[allow(dead_code, reason = "Raft scenario files only")]
pub fn settle_raft(sim: &mut Sim<qlab_raft::Raft, qlab_raft::RaftClient>) -> NodeId {
    settle(sim, |sim, leader| {
        let term = sim.node(leader).unwrap().current_term();
        sim.up_nodes().iter().all(|n| {
            let node = sim.node(*n).unwrap();
            node.current_term() == term && node.leader() == Some(leader)
        })
    })
}

pub fn assert_safe<P: Protocol, C: Client>(sim: &Sim<P, C>) {
    let violations = check_observations(&sim.observations);
    assert!(violations.is_empty(), "{violations:?}");
}
