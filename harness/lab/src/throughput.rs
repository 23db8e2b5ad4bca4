//! The `throughput` experiment kind: how many operations per second does a cluster
//! commit, at what latency, for how many messages and bytes each?
//!
//! One trial: start the cluster and wait for a leader; start `clients` closed-loop
//! clients (no think time unless asked); run `warmup_ms`; then measure for
//! `duration_ms`: completed operations, their latencies (submit to answer, as the
//! client saw them) in an HDR histogram, and the messages and bytes the replicas sent.
//! Then the clients stop, the cluster settles, and the checkers judge the whole run.
//! In `quic` mode the same happens with one `qlab node` process per replica, and CPU
//! time per node is measured too.
//!
//! With `[workload] arrival = "poisson"` the load is open: requests arrive at
//! `rate_per_s` whatever the cluster does, `clients` bounds how many are outstanding
//! (an arrival finding every client busy is dropped and counted), and latency counts
//! from each request's arrival. The row then has the offered rate, the rate that
//! arrived in the window, the achieved rate (`ops_per_s`) and the drops: below the
//! cluster's capacity achieved equals offered; past it, latency climbs and requests
//! are dropped (see [`crate::workload`]).

use crate::compare::Aggregate;
use crate::config::{Arrival, ClusterRules, Experiment, KeysRead, Mode, Point};
use crate::kind::{ExperimentKind, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use crate::results::cell;
use crate::trial::{cluster_with_leader, judge, run_sim_segment, schedule, workload_config};
use crate::workload::Workload;
use hdrhistogram::Histogram;
use qlab_check::Verdict;
use qlab_core::{Nanos, NodeId};
use qlab_sim::Sim;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputTrial {
    pub ops: u64,
    pub ops_per_s: f64,
    /// Open loop: requests that arrived in the window per second (the offered load as
    /// drawn), and those of them dropped because every client was busy.
    pub arrivals_per_s: Option<f64>,
    pub dropped_ops: Option<u64>,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub msgs_per_op: f64,
    pub bytes_per_op: f64,
    /// CPU seconds per node during the window (real mode only).
    pub cpu_s_per_node: Option<f64>,
    /// CPU seconds of the harness process during the window (real mode only): the
    /// clients and the checkers' event stream, whose cost is ours, not the protocol's.
    pub cpu_s_harness: Option<f64>,
    /// Signatures made and checked by all replicas in the window, per completed
    /// operation (protocols that sign: PBFT).
    pub signatures_made_per_op: Option<f64>,
    pub signatures_verified_per_op: Option<f64>,
    /// View changes started by the replicas in the window, summed (PBFT).
    pub view_changes: Option<u64>,
    /// Real mode: resident memory of the node processes in MiB, sampled every 500 ms —
    /// the largest node's first sample in the window, and the largest sample of any
    /// node in it. Flat from one to the other is a bounded run; the simulator has all
    /// nodes in one process and reports neither.
    pub rss_mb_first: Option<f64>,
    pub rss_mb_max: Option<f64>,
    /// Real mode: the harness process's largest resident memory in the window (its
    /// clients and the checkers, which run as the trial goes), sampled every second.
    pub rss_mb_harness_max: Option<f64>,
    /// Real mode: what the transports refused or shed. `None` in the simulator.
    pub transport: Option<crate::real::TransportTrouble>,
    pub safety: Verdict,
    pub violations: Vec<String>,
}

/// Latencies in microseconds, 1 µs to 1 minute, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// What a measurement window saw, before it becomes a trial row.
struct Window<'a> {
    latencies: &'a Histogram<u64>,
    ops: u64,
    window_ns: Nanos,
    /// Open loop: (arrivals, drops) in the window.
    arrivals: Option<(u64, u64)>,
    messages: u64,
    bytes: u64,
    cpu_s_per_node: Option<f64>,
    cpu_s_harness: Option<f64>,
    /// Protocol counters summed over the replicas, window end minus window start.
    protocol: BTreeMap<String, u64>,
    /// (first, max) resident memory in MiB, real mode.
    rss_mb: Option<(f64, f64)>,
    /// The harness process's largest resident memory in MiB, real mode.
    harness_rss_mb: Option<f64>,
    transport: Option<crate::real::TransportTrouble>,
}

impl ThroughputTrial {
    /// A trial that measured nothing (its row records why).
    pub fn blank() -> Self {
        ThroughputTrial {
            ops: 0,
            ops_per_s: f64::NAN,
            arrivals_per_s: None,
            dropped_ops: None,
            latency_ms_p50: f64::NAN,
            latency_ms_p90: f64::NAN,
            latency_ms_p99: f64::NAN,
            latency_ms_p999: f64::NAN,
            msgs_per_op: f64::NAN,
            bytes_per_op: f64::NAN,
            cpu_s_per_node: None,
            cpu_s_harness: None,
            signatures_made_per_op: None,
            signatures_verified_per_op: None,
            view_changes: None,
            rss_mb_first: None,
            rss_mb_max: None,
            rss_mb_harness_max: None,
            transport: None,
            safety: Verdict::Error,
            violations: Vec::new(),
        }
    }

    fn from_window(window: Window<'_>, safety: Verdict, violations: Vec<String>) -> Self {
        let ops = window.ops;
        let per_op = |v: u64| if ops == 0 { f64::NAN } else { v as f64 / ops as f64 };
        let quantile = |q: f64| if ops == 0 { f64::NAN } else { window.latencies.value_at_quantile(q) as f64 / 1000.0 };
        let window_s = window.window_ns as f64 / 1e9;
        ThroughputTrial {
            ops,
            ops_per_s: ops as f64 / window_s,
            arrivals_per_s: window.arrivals.map(|(arrived, _)| arrived as f64 / window_s),
            dropped_ops: window.arrivals.map(|(_, dropped)| dropped),
            latency_ms_p50: quantile(0.5),
            latency_ms_p90: quantile(0.9),
            latency_ms_p99: quantile(0.99),
            latency_ms_p999: quantile(0.999),
            msgs_per_op: per_op(window.messages),
            bytes_per_op: per_op(window.bytes),
            cpu_s_per_node: window.cpu_s_per_node,
            cpu_s_harness: window.cpu_s_harness,
            signatures_made_per_op: window.protocol.get("signatures_made").map(|v| per_op(*v)),
            signatures_verified_per_op: window.protocol.get("signatures_verified").map(|v| per_op(*v)),
            view_changes: window.protocol.get("view_changes").copied(),
            rss_mb_first: window.rss_mb.map(|r| r.0),
            rss_mb_max: window.rss_mb.map(|r| r.1),
            rss_mb_harness_max: window.harness_rss_mb,
            transport: window.transport,
            safety,
            violations,
        }
    }
}

/// Each node's protocol counters (empty for a node that is down).
fn sim_protocol_counters<P: LabProtocol>(sim: &Sim<P, P::Client>, nodes: u32) -> Vec<Vec<(String, u64)>> {
    (0..nodes)
        .map(|n| {
            sim.node(NodeId(n)).map_or_else(Vec::new, |p| {
                p.counters().into_iter().map(|(name, value)| (name.to_string(), value)).collect()
            })
        })
        .collect()
}

/// Counters summed over nodes, end minus start per node (a node that restarted counts
/// from zero again, so its share can only be undercounted, never negative).
fn protocol_deltas(before: &[Vec<(String, u64)>], after: &[Vec<(String, u64)>]) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for (node, end) in after.iter().enumerate() {
        for (name, value) in end {
            let start = before.get(node).and_then(|b| b.iter().find(|(n, _)| n == name)).map_or(0, |(_, v)| *v);
            *sums.entry(name.clone()).or_insert(0) += value.saturating_sub(start);
        }
    }
    sums
}

pub fn run_trial_sim<P: LabProtocol>(experiment: &Experiment, point: &Point, seed: u64) -> ThroughputTrial {
    let file = &experiment.file;
    let heartbeat_ns = point.heartbeat_ns();
    let mut sim = cluster_with_leader::<P>(experiment, point, seed, false);
    if let (Some(region), Some(leader), Some(map)) = (&point.leader_region, sim.leader(), file.network.region_map()) {
        let map = map.with_leader_in(leader.0, region).expect("leader_region was checked against regions");
        point.place_sim(&mut sim, &map);
    }
    let mut workload = Workload::new(workload_config(experiment, point), seed);
    let clients_started = sim.now();
    workload.start_all_at(clients_started);
    let mut faults = schedule(experiment);
    let mut crashed_leader = None;
    let window_start = sim.now() + (file.workload.warmup_ms * 1e6) as Nanos;
    let window_end = window_start + (file.workload.duration_ms * 1e6) as Nanos;
    run_sim_segment(
        &mut sim,
        &mut workload,
        &mut faults,
        clients_started,
        window_start,
        &mut crashed_leader,
        &mut |_| {},
    );
    let (messages_before, bytes_before) = (sim.stats.messages_sent, sim.stats.bytes_sent);
    let protocol_before = sim_protocol_counters(&sim, point.nodes);
    let arrivals_before = workload.arrivals_and_drops();
    let mut latencies = histogram();
    let mut ops = 0u64;
    run_sim_segment(
        &mut sim,
        &mut workload,
        &mut faults,
        clients_started,
        window_end,
        &mut crashed_leader,
        &mut |done| {
            ops += 1;
            let _ = latencies.record(((done.time - done.submitted_at) / 1_000).max(1));
        },
    );
    let (messages, bytes) = (sim.stats.messages_sent - messages_before, sim.stats.bytes_sent - bytes_before);
    let protocol = protocol_deltas(&protocol_before, &sim_protocol_counters(&sim, point.nodes));
    let arrivals = arrivals_in_window(arrivals_before, workload.arrivals_and_drops());
    workload.stop();
    let settle = sim.now() + 4 * heartbeat_ns;
    workload.run(&mut sim, settle, |_, _| {}, |_| false);
    let (safety, violations) = judge(&sim.observations, &workload, sim.now());
    let window_ns = window_end - window_start;
    let window = Window {
        latencies: &latencies,
        ops,
        window_ns,
        arrivals,
        messages,
        bytes,
        cpu_s_per_node: None,
        cpu_s_harness: None,
        protocol,
        rss_mb: None,
        harness_rss_mb: None,
        transport: None,
    };
    ThroughputTrial::from_window(window, safety, violations)
}

/// Open loop: the arrivals and drops between two snapshots of the workload's counts.
fn arrivals_in_window(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<(u64, u64)> {
    let ((arrived_0, dropped_0), (arrived_1, dropped_1)) = (before?, after?);
    Some((arrived_1 - arrived_0, dropped_1 - dropped_0))
}

/// From (time, node, bytes) samples: the largest node's first sample in `[from, to]`
/// and the largest sample, in MiB.
fn rss_in_window(samples: &[(u64, u32, u64)], from: u64, to: u64) -> Option<(f64, f64)> {
    let inside: Vec<&(u64, u32, u64)> = samples.iter().filter(|(t, _, _)| (from..=to).contains(t)).collect();
    let mut first_by_node: BTreeMap<u32, u64> = BTreeMap::new();
    for (_, node, bytes) in &inside {
        first_by_node.entry(*node).or_insert(*bytes);
    }
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let first = first_by_node.values().copied().max()?;
    let max = inside.iter().map(|(_, _, b)| *b).max()?;
    Some((mib(first), mib(max)))
}

/// Real mode: one process per replica on loopback.
pub fn run_trial_quic<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &std::path::Path,
) -> crate::Result<ThroughputTrial> {
    crate::real::on_fresh_cluster::<P, _>(experiment, point, seed, node_binary, async |cluster| {
        measure_quic::<P>(experiment, point, seed, cluster).await
    })
}

async fn measure_quic<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    cluster: &mut qlab_net::cluster::LocalCluster,
) -> crate::Result<ThroughputTrial> {
    let file = &experiment.file;
    let mut driver = crate::real::driver::<P>(cluster, point, &P::config(point, file))?;
    let mut faults = crate::real::RealFaults::new(point, &file.network);
    if faults.shapes_the_network() {
        faults.shape_network(&mut driver);
    }
    let (leader, _) = crate::real::wait_for_leader(&mut driver, point.nodes).await?;
    if let Some(region) = &point.leader_region {
        faults.place_leader(&mut driver, leader, region);
    }
    // Checked as the run goes, so a run of any length fits in memory.
    let mut workload = Workload::new(workload_config(experiment, point), seed).check_as_it_goes();
    let mut stream = qlab_check::SafetyStream::new(qlab_check::SafetyChecker::new().with_nodes(point.nodes));
    crate::real::feed_safety_stream(&mut driver, &mut stream);
    let clients_started = driver.now_ns();
    workload.start_all_at(clients_started);
    let mut scheduled = schedule(experiment);
    let warmup_end = clients_started + (file.workload.warmup_ms * 1e6) as Nanos;
    let mut harness_rss_bytes = 0;
    crate::real::run_segment_checked(
        &mut driver,
        &mut workload,
        cluster,
        &mut faults,
        &mut scheduled,
        clients_started,
        warmup_end,
        &mut |_| {},
        &mut stream,
        &mut harness_rss_bytes,
    )
    .await?;
    let before = driver.request_counters();
    let harness_cpu_before = qlab_net::runtime::process_cpu_ns();
    let window_start = driver.now_ns();
    let window_end = window_start + (file.workload.duration_ms * 1e6) as Nanos;
    let arrivals_before = workload.arrivals_and_drops();
    let mut latencies = histogram();
    let mut ops = 0u64;
    harness_rss_bytes = 0;
    crate::real::run_segment_checked(
        &mut driver,
        &mut workload,
        cluster,
        &mut faults,
        &mut scheduled,
        clients_started,
        window_end,
        &mut |done| {
            ops += 1;
            let _ = latencies.record(((done.time_ns - done.submitted_ns) / 1_000).max(1));
        },
        &mut stream,
        &mut harness_rss_bytes,
    )
    .await?;
    let window_ns = driver.now_ns() - window_start;
    let arrivals = arrivals_in_window(arrivals_before, workload.arrivals_and_drops());
    let rss_mb = rss_in_window(&driver.rss_samples, window_start, window_start + window_ns);
    let harness_cpu_ns = qlab_net::runtime::process_cpu_ns().saturating_sub(harness_cpu_before);
    let after = driver.request_counters();
    workload.stop();
    let settle = driver.now_ns() + 1_000_000_000;
    crate::real::drive_workload(&mut driver, &mut workload, settle, |_| {}).await;
    // Nodes that are down at the end cannot answer; their counters count as unchanged.
    let counters = |tag: u64| -> Vec<qlab_net::runtime::Counters> {
        (0..point.nodes).map(|n| driver.counters_for_node(tag, n).unwrap_or_default()).collect()
    };
    let (before, after) = (counters(before), counters(after));
    let delta = |f: fn(&qlab_net::runtime::Counters) -> u64| -> u64 {
        after.iter().zip(&before).map(|(a, b)| f(a).saturating_sub(f(b))).sum()
    };
    let messages = delta(|c| c.messages_sent);
    let bytes = delta(|c| c.bytes_sent);
    let cpu_s = delta(|c| c.cpu_ns) as f64 / 1e9 / point.nodes as f64;
    crate::real::feed_safety_stream(&mut driver, &mut stream);
    let checker = stream.finish();
    let late = checker.late_observations;
    let qlab_check::Judgement { verdict, mut details, .. } =
        qlab_check::judge(checker.finish(), workload.linearizability(), driver.now_ns());
    if late > 0 {
        details.push(format!(
            "{late} observations arrived over {} s late: leader completeness was not checked against them",
            crate::real::REPORT_LAG_NS / 1_000_000_000
        ));
    }
    let window = Window {
        latencies: &latencies,
        ops,
        window_ns,
        arrivals,
        messages,
        bytes,
        cpu_s_per_node: Some(cpu_s),
        cpu_s_harness: Some(harness_cpu_ns as f64 / 1e9),
        protocol: protocol_deltas(
            &before.iter().map(|c| c.protocol.clone()).collect::<Vec<_>>(),
            &after.iter().map(|c| c.protocol.clone()).collect::<Vec<_>>(),
        ),
        rss_mb,
        harness_rss_mb: Some(harness_rss_bytes as f64 / (1024.0 * 1024.0)),
        transport: Some(crate::real::TransportTrouble::of(&after)),
    };
    Ok(ThroughputTrial::from_window(window, verdict, details))
}

/// One row of a throughput `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct ThroughputRow {
    pub protocol: &'static str,
    pub mode: &'static str,
    pub nodes: u32,
    /// Closed loop: the clients. Open loop: the client sessions arrivals are handed to,
    /// which bound the requests outstanding.
    pub clients: u32,
    /// `closed` or `poisson` ([`crate::config::Arrival`]).
    pub arrival: &'static str,
    /// Open loop: the offered load, requests per second. Empty in closed loop.
    #[serde(serialize_with = "cell::display_or_empty")]
    pub rate_per_s: Option<f64>,
    /// Wide-area placement: the region the leader was moved to once elected.
    #[serde(serialize_with = "cell::display_or_empty")]
    pub leader_region: Option<String>,
    pub value_bytes: usize,
    #[serde(serialize_with = "cell::display")]
    pub batch_delay_ms: f64,
    /// Adaptive batching's bound (0: none); not used where `batch_delay_ms` > 0.
    pub max_batches_in_flight: usize,
    #[serde(serialize_with = "cell::display")]
    pub latency_ms_mean: f64,
    #[serde(serialize_with = "cell::display")]
    pub loss: f64,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    pub ops: u64,
    #[serde(serialize_with = "cell::metric")]
    pub ops_per_s: f64,
    /// Open loop: requests that arrived per second in the window (the drawn offered
    /// load), and how many of them found every client busy and were dropped.
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub arrivals_per_s: Option<f64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub dropped_ops: Option<u64>,
    /// Submit (closed loop) or arrival (open loop) to answer.
    #[serde(serialize_with = "cell::metric")]
    pub latency_ms_p50: f64,
    #[serde(serialize_with = "cell::metric")]
    pub latency_ms_p90: f64,
    #[serde(serialize_with = "cell::metric")]
    pub latency_ms_p99: f64,
    #[serde(serialize_with = "cell::metric")]
    pub latency_ms_p999: f64,
    #[serde(serialize_with = "cell::metric")]
    pub msgs_per_op: f64,
    #[serde(serialize_with = "cell::metric")]
    pub bytes_per_op: f64,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub cpu_s_per_node: Option<f64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub cpu_s_harness: Option<f64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub signatures_made_per_op: Option<f64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub signatures_verified_per_op: Option<f64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub view_changes: Option<u64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub rss_mb_first: Option<f64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub rss_mb_max: Option<f64>,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub rss_mb_harness_max: Option<f64>,
    /// Real mode: what the nodes' transports refused or shed ([`crate::real::TransportTrouble`]):
    /// summed over the nodes, and at the node with most. Empty in the simulator.
    #[serde(serialize_with = "cell::display_or_empty")]
    pub malformed_frames: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub malformed_frames_node_max: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub dropped_sends: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub dropped_sends_node_max: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub refused_connections: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub refused_connections_node_max: Option<u64>,
    pub safety: Verdict,
    pub violations: String,
}

impl ThroughputRow {
    pub fn new(point: &Point, trial: u64, point_index: usize, seed: u64, outcome: &ThroughputTrial) -> Self {
        let [
            malformed_frames,
            malformed_frames_node_max,
            dropped_sends,
            dropped_sends_node_max,
            refused_connections,
            refused_connections_node_max,
        ] = crate::real::TransportTrouble::cells(outcome.transport);
        ThroughputRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            clients: point.clients,
            arrival: if point.rate_per_s.is_some() { Arrival::Poisson.name() } else { Arrival::Closed.name() },
            rate_per_s: point.rate_per_s,
            leader_region: point.leader_region.clone(),
            value_bytes: point.value_bytes,
            batch_delay_ms: point.batch_delay_ms,
            max_batches_in_flight: point.max_batches_in_flight,
            latency_ms_mean: point.latency.mean_ms(),
            loss: point.loss,
            trial,
            point: point_index,
            seed,
            ops: outcome.ops,
            ops_per_s: outcome.ops_per_s,
            arrivals_per_s: outcome.arrivals_per_s,
            dropped_ops: outcome.dropped_ops,
            latency_ms_p50: outcome.latency_ms_p50,
            latency_ms_p90: outcome.latency_ms_p90,
            latency_ms_p99: outcome.latency_ms_p99,
            latency_ms_p999: outcome.latency_ms_p999,
            msgs_per_op: outcome.msgs_per_op,
            bytes_per_op: outcome.bytes_per_op,
            cpu_s_per_node: outcome.cpu_s_per_node,
            cpu_s_harness: outcome.cpu_s_harness,
            signatures_made_per_op: outcome.signatures_made_per_op,
            signatures_verified_per_op: outcome.signatures_verified_per_op,
            view_changes: outcome.view_changes,
            rss_mb_first: outcome.rss_mb_first,
            rss_mb_max: outcome.rss_mb_max,
            rss_mb_harness_max: outcome.rss_mb_harness_max,
            malformed_frames,
            malformed_frames_node_max,
            dropped_sends,
            dropped_sends_node_max,
            refused_connections,
            refused_connections_node_max,
            safety: outcome.safety.clone(),
            violations: outcome.violations.join("; "),
        }
    }
}

/// `kind = "throughput"`.
pub struct ThroughputKind;

impl ExperimentKind for ThroughputKind {
    fn name(&self) -> &'static str {
        "throughput"
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "a throughput experiment's faults are its [faults] schedule, and it has no election limit";
        &[
            KeysRead { section: "faults", keys: &["schedule"], why: WHY },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    /// Any cluster, the one-server baseline included, under load.
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules { needs_clients: true, leader_placement: true, ..ClusterRules::default() }
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<ThroughputRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (experiment, point, seed) = (trial.experiment, trial.point, trial.seed);
        let record = |outcome: &ThroughputTrial| {
            crate::results::record(&ThroughputRow::new(point, trial.trial, trial.point_index, seed, outcome))
        };
        let outcome = match point.mode {
            Mode::Sim => Ok(with_protocol!(point.protocol, P => run_trial_sim::<P>(experiment, point, seed))),
            Mode::Quic => with_protocol!(point.protocol, P =>
                run_trial_quic::<P>(experiment, point, seed, trial.node_binary)),
        };
        match outcome {
            Ok(outcome) => TrialRecord { row: record(&outcome), verdict: outcome.safety.clone() },
            Err(e) => TrialRecord {
                row: crate::kind::with_error(self, record(&ThroughputTrial::blank()), &e.to_string()),
                verdict: Verdict::Error,
            },
        }
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_throughput(run_dir, experiment_name)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("ops_per_s", Aggregate::Mean), ("latency_ms_p99", Aggregate::Mean)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &[
            "protocol",
            "mode",
            "nodes",
            "clients",
            "rate_per_s",
            "leader_region",
            "value_bytes",
            "batch_delay_ms",
            "max_batches_in_flight",
            "trials",
            "arrivals_per_s",
            "ops_per_s",
            "dropped_ops",
            "latency_ms_p50",
            "latency_ms_p99",
            "msgs_per_op",
            "bytes_per_op",
            "cpu_s_per_node",
            "unsafe_trials",
        ]
    }
}
