//! Helpers shared by the whole-cluster scenario tests of every protocol.

use qlab_core::{Client, ClientId, NodeId, Op, OpResult, Protocol, Request, ms};
use qlab_lab::check::check_observations;
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

pub fn assert_safe<P: Protocol, C: Client>(sim: &Sim<P, C>) {
    let violations = check_observations(&sim.observations);
    assert!(violations.is_empty(), "{violations:?}");
}
