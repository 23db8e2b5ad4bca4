//! The `attack` experiment kind: one run per trial in which replicas 0, 1, ... (as many
//! as the point says; PBFT's first primary is node 0) run an attack from `[attack]
//! from_ms` to `until_ms`, with closed-loop clients throughout and the run going on
//! `after_ms` past the attack. A point's [`LeaderFault`] makes the window calm or has the
//! leader cut off (or crashed) mid-attack, so the attacks that act only at an election
//! meet one. A trial records throughput before, during and after the attack, whether the
//! cluster served clients again in the second half of the after phase (`recovered`), the
//! safety verdict of the honest replicas and clients, and the first invariant broken,
//! when and where.
//!
//! In the simulator the malicious replicas are `Faulty<P, P::Attack>` nodes of the
//! simulated cluster and `qlab replay RUN_DIR --trial K` re-runs a trial with a full
//! trace. In quic mode ([`run_trial_quic`]) each replica is a `qlab node` process; the
//! cluster file names the malicious ones with their attack and window (in cluster time,
//! which is every node's protocol clock), and only those wrap their honest code in it.

pub use crate::attack_spec::AttackSpec;
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultsRule, KeysRead, Mode, Point, ProtocolName, Sweep};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use crate::results::cell;
use crate::workload::Workload;
use qlab_check::{Invariant, Verdict};
use qlab_core::adversary::{Faulty, FaultyConfig, MaliciousNode};
use qlab_core::{ClientId, Nanos, NodeId};
use qlab_sim::Sim;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one attack trial found.
#[derive(Clone, Debug)]
pub struct AttackTrial {
    pub ops_per_s_before: f64,
    pub ops_per_s_during: f64,
    pub ops_per_s_after: f64,
    pub recovered: bool,
    /// The leader (primary) the honest replicas last acknowledged before the attack
    /// began, if any: the attack is on the leader when this is a malicious replica.
    pub leader_at_attack: Option<NodeId>,
    /// The replica the point's [`LeaderFault`] hit: the leader the honest replicas
    /// acknowledged when it fell due (`None` in a calm window, or with no leader then).
    pub leader_fault_node: Option<NodeId>,
    /// Completed operations in each `TIMELINE_BIN_MS` bin from the start of the run to
    /// the end of the after phase: the throughput timeline.
    pub completions_per_bin: Vec<u64>,
    /// `ok`, or the invariants broken joined by `+`.
    pub safety: Verdict,
    /// The first invariant broken (by time), if any.
    pub invariant: Option<Invariant>,
    pub violated_at_ms: Option<f64>,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    /// Forgeries the honest replicas refused, summed: signatures that did not verify and
    /// votes claiming a signer other than their sender (the forger holds only its own
    /// key, so a forgery is a real attempt); `None` for a protocol that signs nothing.
    pub forgeries_refused: Option<u64>,
    /// Real mode: what the honest and malicious nodes' transports refused (an attacker's
    /// malformed bytes are counted, never obeyed), and how many node processes exited
    /// that the harness did not stop (a panic on an attacker's input would show here).
    pub transport: Option<crate::real::TransportTrouble>,
    pub nodes_exited: Option<u32>,
}

impl AttackTrial {
    /// A trial that could not run (a real-mode cluster that did not start, say): no
    /// throughput, verdict `error`, the reason in the violations column.
    fn failed(reason: String) -> Self {
        AttackTrial {
            ops_per_s_before: f64::NAN,
            ops_per_s_during: f64::NAN,
            ops_per_s_after: f64::NAN,
            recovered: false,
            leader_at_attack: None,
            leader_fault_node: None,
            completions_per_bin: Vec::new(),
            safety: Verdict::Error,
            invariant: None,
            violated_at_ms: None,
            violations: vec![reason],
            trace: Vec::new(),
            forgeries_refused: None,
            transport: None,
            nodes_exited: None,
        }
    }
}

/// The counters that count refused forgeries ([`AttackTrial::forgeries_refused`]).
const FORGERY_COUNTERS: [&str; 2] = ["bad_signatures", "votes_not_from_signer"];

/// The sum of the counters named `names` over the honest replicas (`malicious..`), if
/// any of them reports one.
fn honest_counters(counters: &[Vec<(String, u64)>], malicious: u32, names: &[&str]) -> Option<u64> {
    let found: Vec<u64> = counters
        .iter()
        .skip(malicious as usize)
        .flat_map(|c| c.iter().filter(|(n, _)| names.contains(&n.as_str())).map(|(_, v)| *v))
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

/// Width of a throughput-timeline bin: fine enough to show an election's gap, coarse
/// enough that a few clients give a rate that is not mostly noise.
pub const TIMELINE_BIN_MS: f64 = 100.0;

/// The honest configuration with replicas `0..axes(point).malicious` running `attack` in the
/// experiment's attack window.
pub fn faulty_config<C, A: Clone>(experiment: &Experiment, point: &Point, honest: C, attack: A) -> FaultyConfig<C, A> {
    let file = attack_section(experiment).expect("[attack] was read when the file was loaded");
    let a = &file.attack;
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    FaultyConfig {
        honest,
        malicious: (0..axes(point).malicious)
            .map(|node| MaliciousNode {
                node: NodeId(node),
                attack: attack.clone(),
                from_ns: ns(a.from_ms),
                until_ns: Some(ns(a.until_ms)),
            })
            .collect(),
    }
}

/// Run one trial of `Q` (a protocol whose configuration already says who is malicious).
pub fn run_trial<Q: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    config: Q::Config,
    trace: bool,
) -> AttackTrial {
    let file = &experiment.file;
    let attack = attack_section(experiment).expect("[attack] was read when the file was loaded");
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    let (from, until) = (ns(attack.attack.from_ms), ns(attack.attack.until_ms));
    let end = until + ns(attack.attack.after_ms);
    let mut sim: Sim<Q, Q::Client> = point.sim(&file.network, config, seed);
    if trace {
        sim.enable_trace();
    }
    for c in 0..point.clients {
        let retry_ns = point.client_retry_ns.unwrap_or(qlab_core::ms(100));
        sim.add_client(Q::client(sim.config(), ClientId(c as u64), point.nodes, retry_ns));
    }
    let mut workload = Workload::new(crate::trial::workload_config(experiment, point), seed);
    workload.start_all_at(0);
    let mut phases = Phases::new(from, until, end);
    let mut on_completion = |_: &Sim<Q, Q::Client>, completion: &qlab_sim::Completion| phases.record(completion.time);
    let window = attack.attack.leader_fault_window(axes(point).leader_fault);
    let mut leader_fault_node = None;
    if let Some((fault_at_ms, fault_until_ms)) = window {
        let (fault_at, fault_until) = (ns(fault_at_ms), ns(fault_until_ms).min(end));
        workload.run(&mut sim, fault_at, &mut on_completion, |_| false);
        leader_fault_node = acknowledged_leader(&sim.observations, fault_at);
        if let Some(hit) = leader_fault_node {
            start_leader_fault(&mut sim, axes(point).leader_fault, hit, axes(point).malicious);
            workload.run(&mut sim, fault_until, &mut on_completion, |_| false);
            end_leader_fault(&mut sim, axes(point).leader_fault, hit);
        }
    }
    workload.run(&mut sim, end, &mut on_completion, |_| false);
    workload.stop();
    let settle = sim.now() + 4 * point.heartbeat_ns().max(qlab_core::ms(50));
    workload.run(&mut sim, settle, |_, _| {}, |_| false);

    let qlab_check::Judgement { verdict, violations, details } =
        qlab_check::judge_run(&sim.observations, &workload.history, sim.now());
    let leader_at_attack = acknowledged_leader(&sim.observations, from);
    let counters: Vec<Vec<(String, u64)>> = (0..point.nodes)
        .map(|n| {
            sim.node(NodeId(n))
                .map(|p| p.counters().into_iter().map(|(name, v)| (name.to_string(), v)).collect())
                .unwrap_or_default()
        })
        .collect();
    let (ops_per_s_before, ops_per_s_during, ops_per_s_after) = phases.rates(0);
    AttackTrial {
        ops_per_s_before,
        ops_per_s_during,
        ops_per_s_after,
        recovered: phases.recovered(),
        leader_at_attack,
        leader_fault_node,
        completions_per_bin: phases.completions_per_bin,
        safety: verdict,
        invariant: violations.first().map(|v| v.invariant),
        violated_at_ms: violations.first().map(|v| qlab_core::nanos_to_ms(v.time)),
        violations: details,
        trace: sim.trace().to_vec(),
        forgeries_refused: honest_counters(&counters, axes(point).malicious, &FORGERY_COUNTERS),
        transport: None,
        nodes_exited: None,
    }
}

/// Completions of one trial by phase (before, during, first and second half of after
/// the attack) and by timeline bin, from their times on the run's clock.
struct Phases {
    from: Nanos,
    until: Nanos,
    end: Nanos,
    done: [u64; 4],
    completions_per_bin: Vec<u64>,
}

impl Phases {
    fn new(from: Nanos, until: Nanos, end: Nanos) -> Self {
        let bin_ns = (TIMELINE_BIN_MS * 1e6) as Nanos;
        Phases { from, until, end, done: [0; 4], completions_per_bin: vec![0; end.div_ceil(bin_ns) as usize] }
    }

    fn record(&mut self, time: Nanos) {
        let recovery_from = self.until + (self.end - self.until) / 2;
        let phase = match time {
            t if t < self.from => 0,
            t if t < self.until => 1,
            t if t < recovery_from => 2,
            _ => 3,
        };
        self.done[phase] += 1;
        // A completion at exactly `end` counts in the after phase, so in the last bin.
        let bin = ((time / (TIMELINE_BIN_MS * 1e6) as Nanos) as usize).min(self.completions_per_bin.len() - 1);
        self.completions_per_bin[bin] += 1;
    }

    /// Operations per second before (from `clients_started`), during and after the attack.
    fn rates(&self, clients_started: Nanos) -> (f64, f64, f64) {
        let per_s = |ops: u64, span: Nanos| if span == 0 { 0.0 } else { ops as f64 / (span as f64 / 1e9) };
        (
            per_s(self.done[0], self.from - clients_started),
            per_s(self.done[1], self.until - self.from),
            per_s(self.done[2] + self.done[3], self.end - self.until),
        )
    }

    /// Whether clients were served in the second half of the after phase.
    fn recovered(&self) -> bool {
        self.done[3] > 0
    }
}

/// The leader (primary) the honest replicas acknowledged before `before` (malicious
/// replicas report nothing): of the highest epoch, since a stale acknowledgement
/// delivered late names an old leader.
pub fn acknowledged_leader(observations: &[qlab_sim::Observation], before: Nanos) -> Option<NodeId> {
    observations
        .iter()
        .filter(|o| o.time < before)
        .filter_map(|o| match o.event {
            qlab_core::Event::LeaderKnown { epoch, leader } => Some((epoch, leader)),
            _ => None,
        })
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, leader)| leader)
}

fn start_leader_fault<P: qlab_core::Protocol, C: qlab_core::Client>(
    sim: &mut Sim<P, C>,
    fault: LeaderFault,
    hit: NodeId,
    malicious: u32,
) {
    match fault {
        LeaderFault::None => {}
        LeaderFault::Isolate => {
            for honest in isolated_from(sim.node_count(), hit, malicious) {
                sim.set_link_blocked(hit, honest, true);
                sim.set_link_blocked(honest, hit, true);
            }
        }
        LeaderFault::Crash => sim.crash(hit),
    }
}

/// The replicas an isolated `hit` loses its links to: every honest one but itself. The
/// malicious replicas (nodes `0..malicious`) keep theirs, as an adversary placed to
/// bridge the partition would: the cut-off leader still hears, through them, whatever
/// they choose to tell it.
pub fn isolated_from(nodes: u32, hit: NodeId, malicious: u32) -> impl Iterator<Item = NodeId> {
    (malicious..nodes).map(NodeId).filter(move |n| *n != hit)
}

fn end_leader_fault<P: qlab_core::Protocol, C: qlab_core::Client>(
    sim: &mut Sim<P, C>,
    fault: LeaderFault,
    hit: NodeId,
) {
    match fault {
        LeaderFault::None => {}
        LeaderFault::Isolate => sim.heal(),
        LeaderFault::Crash => sim.restart(hit),
    }
}

/// One row of an attack `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct AttackRow {
    pub protocol: &'static str,
    pub mode: &'static str,
    pub nodes: u32,
    pub attack: String,
    pub malicious: u32,
    /// What befell the leader mid-attack: `none` (a calm window), `isolate`, `crash`.
    pub leader_fault: LeaderFault,
    pub clients: u32,
    #[serde(serialize_with = "cell::display")]
    pub latency_ms_mean: f64,
    #[serde(serialize_with = "cell::display")]
    pub loss: f64,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    #[serde(serialize_with = "cell::metric")]
    pub ops_per_s_before: f64,
    #[serde(serialize_with = "cell::metric")]
    pub ops_per_s_during: f64,
    #[serde(serialize_with = "cell::metric")]
    pub ops_per_s_after: f64,
    pub recovered: bool,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub leader_at_attack: Option<u32>,
    #[serde(serialize_with = "cell::display")]
    pub attack_from_ms: f64,
    #[serde(serialize_with = "cell::display")]
    pub attack_until_ms: f64,
    /// The leader fault's window (empty in a calm one) and the replica it hit (empty
    /// when no leader was known then).
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub leader_fault_from_ms: Option<f64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub leader_fault_until_ms: Option<f64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub leader_fault_node: Option<u32>,
    #[serde(serialize_with = "cell::display")]
    pub timeline_bin_ms: f64,
    #[serde(serialize_with = "cell::spaced")]
    pub completions_per_bin: Vec<u64>,
    /// Forgeries the honest replicas refused (empty for a protocol that signs nothing).
    #[serde(serialize_with = "cell::display_or_empty")]
    pub forgeries_refused: Option<u64>,
    /// Real mode (empty in the simulator): malformed frames the nodes refused, and node
    /// processes that exited without the harness stopping them.
    #[serde(serialize_with = "cell::display_or_empty")]
    pub malformed_frames: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub nodes_exited: Option<u32>,
    pub safety: Verdict,
    pub invariant: &'static str,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub violated_at_ms: Option<f64>,
    /// The command that re-runs an unsafe trial with a full trace (empty when safe).
    pub replay: String,
    pub violations: String,
}

impl AttackRow {
    #[allow(clippy::too_many_arguments, reason = "one row of the run: its point, place and outcome")]
    pub fn new(
        point: &Point,
        section: Option<&AttackSection>,
        trial: u64,
        point_index: usize,
        seed: u64,
        outcome: &AttackTrial,
        replay: &str,
    ) -> Self {
        let window_ms = section.map_or((f64::NAN, f64::NAN), |a| (a.from_ms, a.until_ms));
        let leader_fault_window = section.and_then(|a| a.leader_fault_window(axes(point).leader_fault));
        AttackRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            attack: axes(point).attack.label(),
            malicious: axes(point).malicious,
            leader_fault: axes(point).leader_fault,
            clients: point.clients,
            latency_ms_mean: point.latency.mean_ms(),
            loss: point.loss,
            trial,
            point: point_index,
            seed,
            ops_per_s_before: outcome.ops_per_s_before,
            ops_per_s_during: outcome.ops_per_s_during,
            ops_per_s_after: outcome.ops_per_s_after,
            recovered: outcome.recovered,
            leader_at_attack: outcome.leader_at_attack.map(|n| n.0),
            attack_from_ms: window_ms.0,
            attack_until_ms: window_ms.1,
            leader_fault_from_ms: leader_fault_window.map(|w| w.0),
            leader_fault_until_ms: leader_fault_window.map(|w| w.1),
            leader_fault_node: outcome.leader_fault_node.map(|n| n.0),
            timeline_bin_ms: TIMELINE_BIN_MS,
            completions_per_bin: outcome.completions_per_bin.clone(),
            forgeries_refused: outcome.forgeries_refused,
            malformed_frames: outcome.transport.map(|t| t.malformed_frames),
            nodes_exited: outcome.nodes_exited,
            safety: outcome.safety.clone(),
            invariant: outcome.invariant.map_or("", |i| i.name()),
            violated_at_ms: outcome.violated_at_ms,
            // Only a simulated trial replays; a real one's row says what it saw.
            replay: if outcome.safety.is_ok() || point.mode != Mode::Sim { String::new() } else { replay.to_string() },
            violations: crate::results::first_violations(&outcome.violations),
        }
    }
}

/// An attack trial of `point`: its protocol with replicas running the point's attack.
pub fn run_point(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> AttackTrial {
    with_protocol!(point.protocol, P => run_point_of::<P>(experiment, point, seed, trace))
}

/// One attack trial against protocol `P`: its honest replicas beside `axes(point).malicious`
/// running the point's attack.
fn run_point_of<P: LabProtocol>(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> AttackTrial {
    let attack = P::attack(&axes(point).attack.name, &axes(point).attack.params())
        .unwrap_or_else(|| panic!("attack {:?} was validated against {}", axes(point).attack, P::NAME));
    let config = faulty_config(experiment, point, P::config(point, &experiment.file), attack);
    run_trial::<Faulty<P, P::Attack>>(experiment, point, seed, config, trace)
}

/// Real mode: one `qlab node` process per replica, replicas `0..malicious` told by the
/// cluster file to run the point's attack in the `[attack]` window (cluster time, the
/// simulator's clock), the honest ones running the plain protocol. The same phases,
/// timeline and checkers as [`run_trial`]; clients start once every node has answered
/// the harness, a few hundred ms into the before phase.
pub fn run_trial_quic<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &Path,
) -> crate::Result<AttackTrial> {
    let file = attack_section(experiment)?;
    let attack = P::attack(&axes(point).attack.name, &axes(point).attack.params())
        .unwrap_or_else(|| panic!("attack {:?} was validated against {}", axes(point).attack, P::NAME));
    let window = faulty_config(experiment, point, (), attack);
    let malicious = window
        .malicious
        .iter()
        .map(|m| toml::Value::try_from(m).map_err(|e| crate::LabError::Usage(format!("{} attack: {e}", P::NAME))))
        .collect::<crate::Result<Vec<toml::Value>>>()?;
    let mut cluster = crate::real::create_cluster::<P>(experiment, point, seed, node_binary)?;
    cluster.set_malicious(malicious)?;
    cluster.start_all()?;
    let runtime = crate::real::runtime()?;
    let outcome = runtime.block_on(measure_quic::<P>(experiment, &file.attack, point, seed, &mut cluster));
    cluster.stop_all();
    outcome
}

async fn measure_quic<P: LabProtocol>(
    experiment: &Experiment,
    attack: &AttackSection,
    point: &Point,
    seed: u64,
    cluster: &mut qlab_net::cluster::LocalCluster,
) -> crate::Result<AttackTrial> {
    use crate::config::{NodeRef, ScheduledFault};
    use tokio::time::{Duration, Instant};
    let file = &experiment.file;
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    let (from, until) = (ns(attack.from_ms), ns(attack.until_ms));
    let end = until + ns(attack.after_ms);
    let mut driver = crate::real::driver::<P>(cluster, point, &P::config(point, file))?;
    let give_up = Instant::now() + Duration::from_secs(30);
    while (driver.ready.len() as u32) < point.nodes {
        if Instant::now() > give_up {
            return Err(crate::LabError::Usage(format!(
                "only {} of {} nodes answered within 30 s of starting the cluster",
                driver.ready.len(),
                point.nodes
            )));
        }
        let _ = driver.next(Instant::now() + Duration::from_millis(20)).await;
    }
    let mut faults = crate::real::RealFaults::new(point, &file.network);
    faults.shape_network(&mut driver);
    let clients_started = driver.now_ns();
    if clients_started >= from {
        return Err(crate::LabError::Usage(format!(
            "the cluster took {:.0} ms to start, past the attack's from_ms = {}: give it a later from_ms",
            clients_started as f64 / 1e6,
            attack.from_ms
        )));
    }
    let mut workload = Workload::new(crate::trial::workload_config(experiment, point), seed);
    workload.start_all_at(clients_started);
    let mut phases = Phases::new(from, until, end);
    let mut on_done = |completion: &qlab_net::drive::Done| phases.record(completion.time_ns);
    let leader_fault = axes(point).leader_fault;
    let malicious = axes(point).malicious;
    let mut leader_fault_node = None;
    if let Some((at_ms, until_ms)) = attack.leader_fault_window(leader_fault) {
        let (fault_at, fault_until) = (ns(at_ms), ns(until_ms).min(end));
        run_to(&mut driver, &mut workload, cluster, &mut faults, fault_at, &mut on_done).await?;
        let observations = crate::real::observations_for_checkers(&driver);
        leader_fault_node = acknowledged_leader(&observations, driver.now_ns());
        if let Some(hit) = leader_fault_node {
            let id = |n: NodeId| NodeRef::Id(n.0);
            let (start, stop): (Vec<ScheduledFault>, Vec<ScheduledFault>) = match leader_fault {
                LeaderFault::None => (vec![], vec![]),
                LeaderFault::Isolate => (
                    isolated_from(point.nodes, hit, malicious)
                        .flat_map(|h| {
                            [
                                ScheduledFault::Cut { at_ms, from: id(hit), to: id(h) },
                                ScheduledFault::Cut { at_ms, from: id(h), to: id(hit) },
                            ]
                        })
                        .collect(),
                    vec![ScheduledFault::Heal { at_ms: until_ms }],
                ),
                LeaderFault::Crash => (
                    vec![ScheduledFault::Crash { at_ms, node: id(hit) }],
                    vec![ScheduledFault::Restart { at_ms: until_ms, node: id(hit) }],
                ),
            };
            for fault in &start {
                faults.apply(fault, &mut driver, cluster)?;
            }
            run_to(&mut driver, &mut workload, cluster, &mut faults, fault_until, &mut on_done).await?;
            for fault in &stop {
                faults.apply(fault, &mut driver, cluster)?;
            }
        }
    }
    run_to(&mut driver, &mut workload, cluster, &mut faults, end, &mut on_done).await?;
    workload.stop();
    let tag = driver.request_counters();
    let settle = driver.now_ns() + 1_000_000_000;
    crate::real::drive_workload(&mut driver, &mut workload, settle, |_| {}).await;
    let nodes_exited = cluster.exited_by_themselves().len() as u32;
    let counters: Vec<qlab_net::runtime::Counters> =
        (0..point.nodes).map(|n| driver.counters_for_node(tag, n).unwrap_or_default()).collect();
    let observations = crate::real::observations_for_checkers(&driver);
    let qlab_check::Judgement { verdict, violations, details } =
        qlab_check::judge_run(&observations, &workload.history, driver.now_ns());
    let protocol_counters: Vec<Vec<(String, u64)>> = counters.iter().map(|c| c.protocol.clone()).collect();
    let (ops_per_s_before, ops_per_s_during, ops_per_s_after) = phases.rates(clients_started);
    Ok(AttackTrial {
        ops_per_s_before,
        ops_per_s_during,
        ops_per_s_after,
        recovered: phases.recovered(),
        leader_at_attack: acknowledged_leader(&observations, from),
        leader_fault_node,
        completions_per_bin: phases.completions_per_bin,
        safety: verdict,
        invariant: violations.first().map(|v| v.invariant),
        violated_at_ms: violations.first().map(|v| qlab_core::nanos_to_ms(v.time)),
        violations: details,
        trace: Vec::new(),
        forgeries_refused: honest_counters(&protocol_counters, malicious, &FORGERY_COUNTERS),
        transport: Some(crate::real::TransportTrouble::of(&counters)),
        nodes_exited: Some(nodes_exited),
    })
}

/// The workload run to cluster time `until` with nothing scheduled: the leader fault is
/// applied by hand, since whom it hits is known only when it falls due.
async fn run_to<M: crate::real::Wired, C: qlab_core::Client>(
    driver: &mut qlab_net::drive::Driver<M, C>,
    workload: &mut Workload,
    cluster: &mut qlab_net::cluster::LocalCluster,
    faults: &mut crate::real::RealFaults,
    until: Nanos,
    on_done: &mut dyn FnMut(&qlab_net::drive::Done),
) -> crate::Result<()> {
    let mut nothing_scheduled = std::collections::VecDeque::new();
    crate::real::run_segment(driver, workload, cluster, faults, &mut nothing_scheduled, 0, until, on_done).await
}

/// An attack point's own axes: the attack (its `trials.csv` column is the label) and
/// how many replicas run it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttackAxes {
    #[serde(serialize_with = "crate::attack_spec::serialize_label")]
    pub attack: AttackSpec,
    pub malicious: u32,
    pub leader_fault: LeaderFault,
}

/// What befalls the leader in the middle of an attack window. A calm window holds no
/// election, and the attacks that act only when one happens (Raft's `double-vote`,
/// Multi-Paxos's `promise-all` and `forge-accepted`) look safe there; isolating or
/// crashing the leader mid-attack makes the attack meet an election. The fault hits
/// whichever replica the honest ones follow when it falls due, malicious or not
/// (`leader_fault_node` says which), and ends (heal, restart) when its window does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaderFault {
    /// A calm window: nothing but the attack.
    #[default]
    None,
    /// The leader loses its links to every honest replica; the malicious ones still
    /// reach it and the rest ([`isolated_from`]), and clients still reach everyone.
    Isolate,
    /// The leader stops, keeping what it persisted, and is restarted.
    Crash,
}

impl std::fmt::Display for LeaderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            LeaderFault::None => "none",
            LeaderFault::Isolate => "isolate",
            LeaderFault::Crash => "crash",
        })
    }
}

/// The attack axes of a point of this kind.
pub fn axes(point: &Point) -> &AttackAxes {
    point.axes::<AttackAxes>().expect("an attack point carries its attack and malicious count")
}

/// The sections an attack file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct AttackFile {
    #[serde(default)]
    pub attack: AttackSection,
}

/// The file's `[attack]`, read once per run.
pub fn attack_section(experiment: &Experiment) -> crate::Result<std::sync::Arc<AttackFile>> {
    experiment.kind_sections::<AttackFile>()
}

/// `kind = "attack"`: which attacks to run against which protocol, by how many
/// malicious replicas, and when.
#[derive(Clone, Debug)]
pub struct AttackSection {
    /// Each protocol's attacks, keyed as files name the protocol (`raft = [...]`), from
    /// its [`LabProtocol::ATTACK_NAMES`].
    pub per_protocol: Vec<(ProtocolName, Sweep<AttackSpec>)>,
    /// Sweep: how many replicas are malicious (nodes 0, 1, ...; PBFT's first primary is 0).
    pub malicious: Sweep<u32>,
    /// The attack runs from `from_ms` to `until_ms` after the start (clients start at
    /// once, so the first election falls in the phase before)...
    pub from_ms: f64,
    pub until_ms: f64,
    /// ...and the run goes on this long after it, to see whether throughput comes back.
    pub after_ms: f64,
    /// Sweep: what befalls the leader mid-attack (`["none", "isolate"]` runs every
    /// attack in a calm window and in one with an election).
    pub leader_fault: Sweep<LeaderFault>,
    /// When the leader fault starts (default: halfway through the attack window)...
    pub leader_fault_at_ms: Option<f64>,
    /// ...and how long it lasts (default: to the end of the attack window).
    pub leader_fault_for_ms: Option<f64>,
}

impl Default for AttackSection {
    fn default() -> Self {
        AttackSection {
            per_protocol: vec![],
            malicious: one_malicious(),
            from_ms: default_attack_from_ms(),
            until_ms: default_attack_until_ms(),
            after_ms: default_attack_after_ms(),
            leader_fault: Sweep::one(LeaderFault::None),
            leader_fault_at_ms: None,
            leader_fault_for_ms: None,
        }
    }
}

/// By hand rather than derived, because the keys besides the window and the count are
/// the protocol list's names: a protocol added there is a key here with no change.
impl<'de> Deserialize<'de> for AttackSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AttackSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the [attack] table")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<AttackSection, M::Error> {
                let mut section = AttackSection::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "malicious" => section.malicious = map.next_value()?,
                        "from_ms" => section.from_ms = map.next_value()?,
                        "until_ms" => section.until_ms = map.next_value()?,
                        "after_ms" => section.after_ms = map.next_value()?,
                        "leader_fault" => section.leader_fault = map.next_value()?,
                        "leader_fault_at_ms" => section.leader_fault_at_ms = Some(map.next_value()?),
                        "leader_fault_for_ms" => section.leader_fault_for_ms = Some(map.next_value()?),
                        name => match ProtocolName::from_name(name) {
                            Some(protocol) => section.per_protocol.push((protocol, map.next_value()?)),
                            None => {
                                let protocols = crate::attack_spec::protocols_with_attacks();
                                return Err(serde::de::Error::custom(format!(
                                    "unknown field `{name}`, expected `malicious`, `from_ms`, `until_ms`, `after_ms`, \
                                     `leader_fault`, `leader_fault_at_ms`, `leader_fault_for_ms` or a protocol: {}",
                                    protocols.join(", ")
                                )));
                            }
                        },
                    }
                }
                Ok(section)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl AttackSection {
    /// When `fault` begins and ends, in ms from the start (`None` for a calm window).
    pub fn leader_fault_window(&self, fault: LeaderFault) -> Option<(f64, f64)> {
        if fault == LeaderFault::None {
            return None;
        }
        let at = self.leader_fault_at_ms.unwrap_or((self.from_ms + self.until_ms) / 2.0);
        Some((at, self.leader_fault_for_ms.map_or(self.until_ms, |d| at + d)))
    }

    /// The attacks given for `protocol`, and the names it knows.
    pub fn for_protocol(&self, protocol: ProtocolName) -> (Option<&Sweep<AttackSpec>>, &'static [&'static str]) {
        let given = self.per_protocol.iter().find(|(p, _)| *p == protocol).map(|(_, attacks)| attacks);
        (given, with_protocol!(protocol, P => <P as LabProtocol>::ATTACK_NAMES))
    }
}

fn one_malicious() -> Sweep<u32> {
    Sweep::one(1)
}
fn default_attack_from_ms() -> f64 {
    1000.0
}
fn default_attack_until_ms() -> f64 {
    3000.0
}
fn default_attack_after_ms() -> f64 {
    3000.0
}

/// `[attack]` beyond what every cluster run is checked for: each protocol's
/// attacks known to it with the parameters they take, a window that makes sense, and
/// malicious counts and starved replicas that leave honest ones.
fn validate_attack(kind: &AttackKind, experiment: &Experiment, attack: &AttackSection) -> crate::Result<()> {
    crate::attack_spec::check_lists(experiment, "attack", &attack.per_protocol)?;
    if !(0.0 <= attack.from_ms && attack.from_ms < attack.until_ms && attack.after_ms > 0.0) {
        let key = if attack.after_ms <= 0.0 {
            "after_ms"
        } else if attack.from_ms < 0.0 {
            "from_ms"
        } else {
            "until_ms"
        };
        return Err(experiment.error_at_key(
            &["attack", key],
            format!(
                "[attack] needs 0 <= from_ms < until_ms and after_ms > 0, got {} / {} / {}",
                attack.from_ms, attack.until_ms, attack.after_ms
            ),
        ));
    }
    if attack.leader_fault.values.iter().any(|f| *f != LeaderFault::None) {
        let (at, until) = attack.leader_fault_window(LeaderFault::Isolate).expect("a fault has a window");
        let end = attack.until_ms + attack.after_ms;
        if !(attack.from_ms <= at && at < attack.until_ms) {
            return Err(experiment.error_at_key(
                &["attack", "leader_fault_at_ms"],
                format!(
                    "the leader fault must start inside the attack window, {} <= leader_fault_at_ms < {}, got {at}",
                    attack.from_ms, attack.until_ms
                ),
            ));
        }
        if !(until > at && until <= end) {
            return Err(experiment.error_at_key(
                &["attack", "leader_fault_for_ms"],
                format!(
                    "the leader fault must last more than 0 ms and end by the end of the run ({end} ms), \
                     got {} ms from {at}",
                    until - at
                ),
            ));
        }
    }
    for point in &kind.points(experiment) {
        let (list, _) = attack.for_protocol(point.protocol);
        let list_span = list.map_or(0..0, |s| s.span.clone());
        let a = axes(point);
        crate::attack_spec::check_point(experiment, point, &a.attack, a.malicious, &attack.malicious.span, &list_span)?;
    }
    Ok(())
}

/// `kind = "attack"`.
pub struct AttackKind;

impl ExperimentKind for AttackKind {
    fn name(&self) -> &'static str {
        "attack"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["attack"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "an attack experiment's clients run through its [attack] window, not a warmup and a \
                           measured duration, and it has no election limit";
        &[
            KeysRead {
                section: "workload",
                keys: &["clients", "think_ms", "value_bytes", "read_ratio", "keys"],
                why: WHY,
            },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules {
            min_nodes: 2,
            min_nodes_why: "in an attack experiment (a malicious replica and an honest one at least)",
            unreplicated: false,
            needs_clients: true,
            read_modes: false,
            fsync_column: false,
            leader_placement: false,
            faults: FaultsRule::Refused("an attack experiment takes no [faults]: its fault is the attack"),
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        validate_attack(self, experiment, &attack_section(experiment)?.attack)
    }
    /// Each protocol against its own list of attacks, times the malicious counts (an
    /// attack that names its own count runs with that one only).
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = attack_section(experiment) else { return vec![] };
        let attack = &file.attack;
        experiment
            .points()
            .into_iter()
            .flat_map(|point| {
                let specs = attack.for_protocol(point.protocol).0.map(|s| s.values.clone()).unwrap_or_default();
                specs.into_iter().flat_map(move |spec| {
                    let counts = spec.malicious.map_or_else(|| attack.malicious.values.clone(), |m| vec![m]);
                    let point = point.clone();
                    counts.into_iter().flat_map(move |malicious| {
                        let (point, spec) = (point.clone(), spec.clone());
                        attack.leader_fault.values.clone().into_iter().map(move |leader_fault| {
                            point.clone().with_axes(AttackAxes { attack: spec.clone(), malicious, leader_fault })
                        })
                    })
                })
            })
            .collect()
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<AttackRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (experiment, point, seed) = (trial.experiment, trial.point, trial.seed);
        let outcome = match point.mode {
            Mode::Sim => run_point(experiment, point, seed, false),
            Mode::Quic => with_protocol!(point.protocol, P =>
                run_trial_quic::<P>(experiment, point, seed, trial.node_binary))
            .unwrap_or_else(|e| AttackTrial::failed(e.to_string())),
        };
        let file = attack_section(trial.experiment).ok();
        let row = AttackRow::new(
            trial.point,
            file.as_ref().map(|f| &f.attack),
            trial.trial,
            trial.point_index,
            trial.seed,
            &outcome,
            &trial.replay_command(),
        );
        TrialRecord::new(&row, outcome.safety)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_attack(run_dir, experiment_name, crate::protocol_list::ProtocolName::NAMES)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("ops_per_s_during", Aggregate::Mean), ("ops_per_s_after", Aggregate::Mean)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &["protocol", "nodes", "attack", "malicious", "seeds", "unsafe", "not_recovered", "invariants", "verdict"]
    }
    fn replays(&self, mode: crate::config::Mode) -> bool {
        mode == Mode::Sim
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let point = trial.point;
        let o = run_point(trial.experiment, point, trial.seed, true);
        let story = vec![format!(
            "trial {} seed {}: {} nodes, {} x {}: ops/s before {:.0}, during {:.0}, after {:.0}, recovered {}, safety {}",
            trial.trial,
            trial.seed,
            point.nodes,
            axes(point).malicious,
            axes(point).attack.label(),
            o.ops_per_s_before,
            o.ops_per_s_during,
            o.ops_per_s_after,
            o.recovered,
            o.safety
        )];
        Ok(Replayed {
            replayed: o.safety.to_string(),
            recorded_column: "safety",
            story,
            violations: o.violations,
            trace: o.trace,
        })
    }
}
