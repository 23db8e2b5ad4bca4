//! A chaos run on real processes: the `reads` kind's trial in `mode = "quic"`.
//!
//! The seed draws what it draws for the simulated run ([`crate::chaos::chaos_setup`]):
//! the replicas' timing (150–300 ms election timeouts, 50 ms heartbeats, check-quorum),
//! their batching knobs, the read mode and drift bound, and the network's mean latency
//! and loss, which every node's transport applies to what it sends (duplication and
//! reordering have no counterpart on QUIC streams, which deliver each link in order
//! exactly once). The clients are the chaos runs' ([`crate::chaos::chaos_workload`]).
//!
//! Faults differ in one respect. The simulated run flips faults on and off every few
//! tens of milliseconds, and a stale lease read needs a rare alignment of them (the
//! simulator finds one in about 1 seed of 100 at 70% skew), which real trials of
//! several seconds each cannot afford to wait for. Here each fault is *held*: the seed
//! draws a fault of the profile (isolate the leader, crash the leader or a replica,
//! split the cluster, cut a link), the harness holds it for 300–1,000 ms, undoes it
//! (heal, restart), and lets the cluster settle for 200–600 ms before the next, for
//! three seconds. While a fault is held the clocks are skewed the way that hurts a
//! lease most (the clock nemesis of Jepsen-style tests): the leader of the moment runs
//! slow by `clock_skew_ppm` and every other replica fast by as much, so the leader
//! believes its lease for longer than the others wait before electing a new leader.
//! At the bound the lease assumes this is exactly the case the lease's
//! `(1 − ρ)/(1 + ρ)` shortening covers; beyond it, a reader the old leader still
//! answers sees values the new leader has already overwritten. Clocks return to true
//! time when the fault is undone.
//!
//! Then, as in the simulator, everything heals, every client must be served again
//! within 10 s (`live_after_heal`), and the checkers judge the whole run: the replica
//! invariants over every node's reports and linearizability over the client history.
//! A real trial does not replay; its fault log is in the outcome.

use crate::chaos::{ChaosConfig, ChaosKnobs, ChaosOutcome, ChaosSchedule, FaultKinds, chaos_setup, chaos_workload};
use crate::config::{Experiment, NodeRef, Point, ScheduledFault};
use crate::real::RealFaults;
use crate::workload::Workload;
use qlab_core::{Nanos, ms};
use qlab_net::cluster::LocalCluster;
use qlab_net::drive::Driver;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// After healing, how long the clients get to be served again.
const RECOVERY_DEADLINE_NS: Nanos = 10_000_000_000;

/// One fault a real-mode chaos run holds and then undoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldFault {
    /// Cut the leader of the moment off from every other replica (clients still reach it).
    IsolateLeader,
    /// Crash this replica (`kill -9`) and restart it from its storage.
    Crash(u32),
    /// Two sides that cannot reach each other.
    Partition(Vec<u32>, Vec<u32>),
    /// One direction of one link.
    Cut(u32, u32),
}

impl HeldFault {
    /// The scheduled faults that start it (`leader`: the leader of the moment).
    fn start(&self, leader: Option<u32>) -> Vec<ScheduledFault> {
        let at_ms = 0.0;
        match self {
            HeldFault::IsolateLeader => {
                leader.map(|l| ScheduledFault::Isolate { at_ms, node: NodeRef::Id(l) }).into_iter().collect()
            }
            HeldFault::Crash(node) => vec![ScheduledFault::Crash { at_ms, node: NodeRef::Id(*node) }],
            HeldFault::Partition(a, b) => vec![ScheduledFault::Partition { at_ms, groups: vec![a.clone(), b.clone()] }],
            HeldFault::Cut(from, to) => {
                vec![ScheduledFault::Cut { at_ms, from: NodeRef::Id(*from), to: NodeRef::Id(*to) }]
            }
        }
    }

    /// The scheduled fault that undoes it.
    fn end(&self) -> ScheduledFault {
        match self {
            HeldFault::Crash(node) => ScheduledFault::Restart { at_ms: 0.0, node: NodeRef::Id(*node) },
            _ => ScheduledFault::Heal { at_ms: 0.0 },
        }
    }
}

impl std::fmt::Display for HeldFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeldFault::IsolateLeader => write!(f, "isolate the leader"),
            HeldFault::Crash(node) => write!(f, "crash n{node}"),
            HeldFault::Partition(a, b) => write!(f, "partition {a:?} | {b:?}"),
            HeldFault::Cut(from, to) => write!(f, "cut n{from} -> n{to}"),
        }
    }
}

/// The next fault of a run with fault kinds `kinds`, or `None` when the profile has
/// none. Crashes favour the leader (its crash is what forces an election), as the
/// simulated runs' draws do.
pub fn draw_held_fault(kinds: FaultKinds, rng: &mut ChaCha8Rng, nodes: u32, leader: Option<u32>) -> Option<HeldFault> {
    let crash = match (kinds.crashes, kinds.partitions) {
        (false, false) => return None,
        (true, false) => true,
        (false, true) => false,
        (true, true) => rng.random_bool(0.5),
    };
    if crash {
        let victim = match leader {
            Some(leader) if rng.random_bool(0.6) => leader,
            _ => rng.random_range(0..nodes),
        };
        return Some(HeldFault::Crash(victim));
    }
    if kinds.isolate_leader {
        return Some(HeldFault::IsolateLeader);
    }
    if nodes >= 2 && rng.random_bool(0.4) {
        let from = rng.random_range(0..nodes);
        return Some(HeldFault::Cut(from, (from + rng.random_range(1..nodes)) % nodes));
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for node in 0..nodes {
        if rng.random_bool(0.5) { a.push(node) } else { b.push(node) }
    }
    Some(HeldFault::Partition(a, b))
}

/// One chaos run of `P` on a fresh local cluster of real processes.
pub fn run_chaos_quic<P: ChaosKnobs>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    config: &ChaosConfig,
    node_binary: &std::path::Path,
) -> crate::Result<ChaosOutcome> {
    let (protocol, network, _) = chaos_setup::<P>(seed, config);
    let mut cluster = crate::real::create_cluster_with::<P>(experiment, point, seed, node_binary, protocol.clone())?;
    cluster.start_all()?;
    let runtime = crate::real::runtime()?;
    let outcome = runtime.block_on(run::<P>(point, seed, config, &protocol, &network, &mut cluster));
    cluster.stop_all();
    outcome
}

async fn run<P: ChaosKnobs>(
    point: &Point,
    seed: u64,
    config: &ChaosConfig,
    protocol: &P::Config,
    network: &qlab_sim::NetworkConfig,
    cluster: &mut LocalCluster,
) -> crate::Result<ChaosOutcome> {
    let point = Point { client_retry_ns: Some(ms(100)), ..point.clone() };
    let mut driver = crate::real::driver::<P>(cluster, &point, protocol)?;
    let (delay_ns, jitter_ns) = network.latency.mean_and_stddev_ns();
    let mut faults =
        RealFaults::new(&point, &Default::default()).with_links(network.loss, delay_ns as u64, jitter_ns as u64);
    faults.shape_network(&mut driver);
    crate::real::wait_for_leader(&mut driver, point.nodes).await?;
    let mut workload = Workload::new(chaos_workload(config), seed);
    let start = driver.now_ns();
    workload.start_all_at(start);
    let since = |now: Nanos| qlab_core::nanos_to_ms(now - start);

    // The faults' own stream, apart from the knobs' (which match the simulated run's).
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e1d_fa17_0000_0000);
    let skew = config.clock_skew_ppm as f64 / 1e6;
    let mut fault_log = Vec::new();
    let mut faults_injected = 0;
    let mut at = start + rng.random_range(ms(100)..ms(300));
    while at < start + config.fault_phase_ns {
        run_to(&mut driver, &mut workload, cluster, &mut faults, at).await?;
        let leader = driver.latest_elected.map(|(_, node)| node);
        let Some(fault) = draw_held_fault(config.faults, &mut rng, point.nodes, leader) else { break };
        let mut line = format!("{:>10.3}ms {fault}", since(driver.now_ns()));
        if let Some(leader) = leader {
            line.push_str(&format!(" (leader n{leader})"));
            if skew > 0.0 {
                for node in 0..point.nodes {
                    faults.set_clock_rate(&driver, node, if node == leader { 1.0 - skew } else { 1.0 + skew });
                }
                line.push_str(&format!(", clocks: n{leader} ×{:.3}, the others ×{:.3}", 1.0 - skew, 1.0 + skew));
            }
        }
        for start_fault in fault.start(leader) {
            faults.apply(&start_fault, &mut driver, cluster)?;
        }
        faults_injected += 1;
        fault_log.push(line);
        let held_until = driver.now_ns() + rng.random_range(ms(300)..ms(1_000));
        run_to(&mut driver, &mut workload, cluster, &mut faults, held_until).await?;
        faults.apply(&fault.end(), &mut driver, cluster)?;
        if skew > 0.0 {
            for node in 0..point.nodes {
                faults.set_clock_rate(&driver, node, 1.0);
            }
        }
        fault_log.push(format!("{:>10.3}ms undo: {}", since(driver.now_ns()), describe(&fault.end())));
        at = driver.now_ns() + rng.random_range(ms(200)..ms(600));
    }

    // Liveness: every client served by an operation issued after the heal.
    let healed_at = driver.now_ns();
    fault_log.push(format!("{:>10.3}ms faults over", since(healed_at)));
    let history_len_at_heal = workload.history.len();
    let mut live = false;
    while driver.now_ns() < healed_at + RECOVERY_DEADLINE_NS {
        let check_at = driver.now_ns() + ms(100);
        run_to(&mut driver, &mut workload, cluster, &mut faults, check_at).await?;
        let mut served = vec![false; config.clients as usize];
        for op in &workload.history[history_len_at_heal..] {
            if op.invoked >= healed_at && op.completed.is_some() {
                served[op.client as usize] = true;
            }
        }
        if served.iter().all(|s| *s) {
            live = true;
            break;
        }
    }
    workload.stop();
    let tag = driver.request_counters();
    let settle = driver.now_ns() + ms(1_000);
    crate::real::drive_workload(&mut driver, &mut workload, settle, |_| {}).await;
    let messages_sent =
        (0..point.nodes).filter_map(|n| driver.counters_for_node(tag, n)).map(|c| c.messages_sent).sum();
    let observations = crate::real::observations_for_checkers(&driver);
    let violations = qlab_check::check_observations(&observations);
    let linearizability = qlab_check::linearizability::check_history(&workload.history);
    Ok(ChaosOutcome {
        seed,
        violations,
        linearizability,
        live_after_heal: live,
        operations_completed: workload.history.iter().filter(|o| o.completed.is_some()).count(),
        faults_injected,
        trace: Vec::new(),
        fault_log,
        history: workload.history,
        messages_sent,
        schedule: ChaosSchedule { events: Vec::new(), heal_at_ns: healed_at },
        sent_by_kind: Vec::new(),
        observations,
        disk: Default::default(),
        coverage: std::collections::BTreeMap::new(),
    })
}

fn describe(fault: &ScheduledFault) -> String {
    match fault {
        ScheduledFault::Restart { node: NodeRef::Id(node), .. } => format!("restart n{node}"),
        _ => "heal".into(),
    }
}

/// The workload run to cluster time `until` with nothing scheduled (the faults are
/// applied here, since whom they hit is known only when they fall due).
async fn run_to<M: crate::real::Wired, C: qlab_core::Client>(
    driver: &mut Driver<M, C>,
    workload: &mut Workload,
    cluster: &mut LocalCluster,
    faults: &mut RealFaults,
    until: Nanos,
) -> crate::Result<()> {
    let mut nothing_scheduled = std::collections::VecDeque::new();
    crate::real::run_segment(driver, workload, cluster, faults, &mut nothing_scheduled, 0, until, &mut |_| {}).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each profile draws only its own faults: none draws nothing, isolate-leader only
    /// isolations, crashes only crashes (mostly of the leader), partitions splits and cuts.
    #[test]
    fn a_profile_draws_only_its_own_faults() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(draw_held_fault(FaultKinds::NONE, &mut rng, 3, Some(1)), None);
        let isolate = FaultKinds { crashes: false, partitions: true, isolate_leader: true, transfers: false };
        assert!((0..50).all(|_| draw_held_fault(isolate, &mut rng, 3, Some(1)) == Some(HeldFault::IsolateLeader)));
        let crashes = FaultKinds { crashes: true, partitions: false, isolate_leader: false, transfers: false };
        let drawn: Vec<_> = (0..200).map(|_| draw_held_fault(crashes, &mut rng, 3, Some(1)).unwrap()).collect();
        assert!(drawn.iter().all(|f| matches!(f, HeldFault::Crash(n) if *n < 3)));
        let of_leader = drawn.iter().filter(|f| **f == HeldFault::Crash(1)).count();
        assert!(of_leader > 120, "the leader is hit in 60% + 40%/3 of crashes, got {of_leader} of 200");
        let partitions = FaultKinds { crashes: false, partitions: true, isolate_leader: false, transfers: false };
        for _ in 0..100 {
            match draw_held_fault(partitions, &mut rng, 3, Some(1)).unwrap() {
                HeldFault::Cut(from, to) => assert!(from != to && from < 3 && to < 3),
                HeldFault::Partition(a, b) => assert_eq!(a.len() + b.len(), 3),
                other => panic!("a partitions profile drew {other}"),
            }
        }
    }
}
