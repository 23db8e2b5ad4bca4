//! What the trial runners of every kind share on the simulator: the workload a point
//! asks for, the judging of a finished run, a cluster run until it has a leader, and
//! the experiment's fault schedule carried out as virtual time passes. Kinds import
//! this module, never each other, so that the modules form a DAG.

use crate::config::{Experiment, NodeRef, Point, ScheduledFault};
use crate::protocols::LabProtocol;
use crate::workload::{Workload, WorkloadConfig};
use qlab_check::Verdict;
use qlab_core::{ClientId, Nanos, NodeId};
use qlab_sim::{Observation, Sim};

/// The workload of one trial at `point`: its clients and value size, the file's keys,
/// think time and read ratio.
pub fn workload_config(experiment: &Experiment, point: &Point) -> WorkloadConfig {
    let w = &experiment.file.workload;
    WorkloadConfig {
        clients: point.clients,
        keys: w.keys,
        value_bytes: point.value_bytes,
        think_ns: (w.think_ms * 1e6) as Nanos,
        read_ratio: w.read_ratio,
        cas_ratio: 0.0,
        readers: 0,
        arrival_rate_per_s: point.rate_per_s,
    }
}

/// Judge a finished run: replica invariants and linearizability of the history.
pub fn judge(observations: &[Observation], workload: &Workload, end: Nanos) -> (Verdict, Vec<String>) {
    let judgement = qlab_check::judge_run(observations, &workload.history, end);
    (judgement.verdict, judgement.details)
}

/// The schedule, sorted by time, with times as nanoseconds after the clients start.
pub fn schedule(experiment: &Experiment) -> std::collections::VecDeque<(Nanos, ScheduledFault)> {
    let mut faults: Vec<(Nanos, ScheduledFault)> = experiment
        .file
        .faults
        .as_ref()
        .map(|f| f.schedule.get_ref().iter().map(|fault| ((fault.at_ms() * 1e6) as Nanos, fault.clone())).collect())
        .unwrap_or_default();
    faults.sort_by_key(|(at, _)| *at);
    faults.into()
}

/// Carry out one scheduled fault on the simulator. `crashed_leader` remembers the
/// node a `crash` of `"leader"` hit, which is what a later `restart` of `"leader"` means.
fn apply_sim<P: LabProtocol>(sim: &mut Sim<P, P::Client>, fault: &ScheduledFault, crashed_leader: &mut Option<NodeId>) {
    let resolve = |sim: &Sim<P, P::Client>, node: &NodeRef, crashed: Option<NodeId>| match node {
        NodeRef::Id(id) => Some(NodeId(*id)),
        NodeRef::Leader => sim.leader().or(crashed),
        NodeRef::Follower => sim.up_nodes().into_iter().rev().find(|id| Some(*id) != sim.leader()),
    };
    match fault {
        ScheduledFault::Partition { groups, .. } => {
            let groups: Vec<Vec<NodeId>> = groups.iter().map(|g| g.iter().map(|id| NodeId(*id)).collect()).collect();
            sim.partition(&groups);
        }
        ScheduledFault::Cut { from, to, .. } => {
            if let (Some(from), Some(to)) = (resolve(sim, from, *crashed_leader), resolve(sim, to, *crashed_leader)) {
                sim.set_link_blocked(from, to, true);
            }
        }
        ScheduledFault::Heal { .. } => sim.heal(),
        ScheduledFault::Isolate { node, .. } => {
            if let Some(alone) = resolve(sim, node, *crashed_leader) {
                let rest: Vec<NodeId> = (0..sim.node_count()).map(NodeId).filter(|id| *id != alone).collect();
                sim.partition(&[vec![alone], rest]);
            }
        }
        ScheduledFault::Crash { node, .. } => {
            if let Some(id) = resolve(sim, node, None) {
                if *node == NodeRef::Leader {
                    *crashed_leader = Some(id);
                }
                sim.crash(id);
            }
        }
        ScheduledFault::Restart { node, .. } => {
            let id = match node {
                NodeRef::Id(id) => Some(NodeId(*id)),
                NodeRef::Leader => *crashed_leader,
                NodeRef::Follower => (0..sim.node_count()).rev().map(NodeId).find(|id| !sim.is_up(*id)),
            };
            if let Some(id) = id {
                sim.restart(id);
            }
        }
        ScheduledFault::TransferLeader { to, .. } => {
            if let (Some(leader), Some(to)) = (sim.leader(), resolve(sim, to, *crashed_leader)) {
                sim.admin(leader, qlab_core::AdminCommand::TransferLeadership { to });
            }
        }
        ScheduledFault::Pause { node, for_ms, .. } => {
            if let Some(id) = resolve(sim, node, None) {
                sim.pause(id, (for_ms * 1e6) as Nanos);
            }
        }
    }
}

/// Run the workload to `until`, applying every scheduled fault that falls due.
pub fn run_sim_segment<P: LabProtocol>(
    sim: &mut Sim<P, P::Client>,
    workload: &mut Workload,
    schedule: &mut std::collections::VecDeque<(Nanos, ScheduledFault)>,
    clients_started: Nanos,
    until: Nanos,
    crashed_leader: &mut Option<NodeId>,
    on_done: &mut dyn FnMut(&qlab_sim::Completion),
) {
    while let Some((at, _)) = schedule.front() {
        let due = clients_started + at;
        if due > until {
            break;
        }
        workload.run(sim, due, |_, done| on_done(done), |_| false);
        let (_, fault) = schedule.pop_front().expect("peeked");
        apply_sim(sim, &fault, crashed_leader);
    }
    workload.run(sim, until, |_, done| on_done(done), |_| false);
}

/// A simulated cluster of the point with its clients added (not yet submitting), run
/// until a leader exists, so what follows is about load, not the first election.
pub fn cluster_with_leader<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    trace: bool,
) -> Sim<P, P::Client> {
    let file = &experiment.file;
    let mut sim: Sim<P, P::Client> = point.sim(&file.network, P::config(point, file), seed);
    if trace {
        sim.enable_trace();
    }
    for c in 0..point.clients {
        let retry_ns = point.client_retry_ns.unwrap_or(qlab_core::ms(100));
        sim.add_client(P::client(sim.config(), ClientId(c as u64), point.nodes, retry_ns));
    }
    let mut deadline = 0;
    while sim.leader().is_none() && deadline < qlab_core::ms(60_000) {
        deadline += point.heartbeat_ns();
        sim.run_to(deadline);
    }
    sim
}
