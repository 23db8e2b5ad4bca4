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

use crate::check::{Invariant, Violation, check_observations, verdict};
use crate::config::{Experiment, Point};
use crate::linearizability::{LinCheck, check_history};
use crate::workload::{Workload, WorkloadConfig};
use hdrhistogram::Histogram;
use qlab_core::{ClientId, Nanos};
use qlab_raft::{Raft, RaftClient};
use qlab_sim::{Observation, Sim};

#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputTrial {
    pub ops: u64,
    pub ops_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub msgs_per_op: f64,
    pub bytes_per_op: f64,
    /// CPU seconds per node during the window (real mode only).
    pub cpu_s_per_node: Option<f64>,
    pub safety: String,
    pub violations: Vec<String>,
}

/// Latencies in microseconds, 1 µs to 1 minute, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn workload_config(experiment: &Experiment, point: &Point) -> WorkloadConfig {
    let w = &experiment.file.workload;
    WorkloadConfig {
        clients: point.clients,
        keys: w.keys,
        value_bytes: point.value_bytes,
        think_ns: (w.think_ms * 1e6) as Nanos,
        read_ratio: w.read_ratio,
        cas_ratio: 0.0,
    }
}

/// Judge a finished run: replica invariants and linearizability of the history.
pub fn judge(observations: &[Observation], workload: &Workload, end: Nanos) -> (String, Vec<String>) {
    let mut violations: Vec<Violation> = check_observations(observations);
    let mut details: Vec<String> = violations.iter().map(ToString::to_string).collect();
    match check_history(&workload.history) {
        LinCheck::Linearizable => {}
        LinCheck::Violation { key, operations } => {
            violations.push(Violation {
                invariant: Invariant::Linearizability,
                time: end,
                nodes: vec![],
                detail: format!("key {key}"),
            });
            details.push(format!("linearizability violated on key {key} ({operations} operations)"));
        }
        LinCheck::Inconclusive { key, states } => {
            details.push(format!("linearizability inconclusive on key {key} after {states} states"));
        }
    }
    (verdict(&violations), details)
}

fn finish_metrics(
    histogram: &Histogram<u64>,
    ops: u64,
    window_ns: Nanos,
    messages: u64,
    bytes: u64,
) -> (f64, [f64; 4], f64, f64) {
    let per_op = |v: u64| if ops == 0 { f64::NAN } else { v as f64 / ops as f64 };
    let quantile = |q: f64| if ops == 0 { f64::NAN } else { histogram.value_at_quantile(q) as f64 / 1000.0 };
    (
        ops as f64 / (window_ns as f64 / 1e9),
        [quantile(0.5), quantile(0.9), quantile(0.99), quantile(0.999)],
        per_op(messages),
        per_op(bytes),
    )
}

pub fn run_trial_sim(experiment: &Experiment, point: &Point, seed: u64) -> ThroughputTrial {
    let file = &experiment.file;
    let raft = point.raft_config(&file.raft);
    let mut sim: Sim<Raft, RaftClient> = Sim::new_staggered(
        raft.clone(),
        point.nodes,
        point.network_config(&file.network),
        seed,
        raft.election_timeout_ns_min,
    );
    for c in 0..point.clients {
        sim.add_client(RaftClient::new(ClientId(c as u64), point.nodes));
    }
    let mut workload = Workload::new(workload_config(experiment, point), seed);
    // Start once a leader exists, so the warm-up is about load, not the first election.
    let mut deadline = 0;
    while sim.leader().is_none() && deadline < qlab_core::ms(60_000) {
        deadline += raft.heartbeat_interval_ns;
        sim.run_to(deadline);
    }
    workload.start_all_at(sim.now());
    let window_start = sim.now() + (file.workload.warmup_ms * 1e6) as Nanos;
    let window_end = window_start + (file.workload.duration_ms * 1e6) as Nanos;
    workload.run(&mut sim, window_start, |_, _| {}, |_| false);
    let (messages_before, bytes_before) = (sim.stats.messages_sent, sim.stats.bytes_sent);
    let mut latencies = histogram();
    let mut ops = 0u64;
    workload.run(
        &mut sim,
        window_end,
        |_, done| {
            ops += 1;
            let _ = latencies.record(((done.time - done.submitted_at) / 1_000).max(1));
        },
        |_| false,
    );
    let (messages, bytes) = (sim.stats.messages_sent - messages_before, sim.stats.bytes_sent - bytes_before);
    workload.stop();
    let settle = sim.now() + 4 * raft.heartbeat_interval_ns;
    workload.run(&mut sim, settle, |_, _| {}, |_| false);
    let (ops_per_s, [p50, p90, p99, p999], msgs_per_op, bytes_per_op) =
        finish_metrics(&latencies, ops, window_end - window_start, messages, bytes);
    let (safety, violations) = judge(&sim.observations, &workload, sim.now());
    ThroughputTrial {
        ops,
        ops_per_s,
        latency_ms_p50: p50,
        latency_ms_p90: p90,
        latency_ms_p99: p99,
        latency_ms_p999: p999,
        msgs_per_op,
        bytes_per_op,
        cpu_s_per_node: None,
        safety,
        violations,
    }
}

/// Real mode: one process per replica on loopback.
pub fn run_trial_quic(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &std::path::Path,
) -> crate::Result<ThroughputTrial> {
    let file = &experiment.file;
    let mut cluster = crate::real::start_cluster(experiment, point, seed, node_binary)?;
    let runtime = crate::real::runtime()?;
    runtime
        .block_on(async {
            let mut driver = crate::real::driver(&cluster, point)?;
            crate::real::apply_network_faults(&driver, point, &file.network);
            crate::real::wait_for_leader(&mut driver, point.nodes).await?;
            let mut workload = Workload::new(workload_config(experiment, point), seed);
            workload.start_all_at(driver.now_ns());
            let warmup_end = driver.now_ns() + (file.workload.warmup_ms * 1e6) as Nanos;
            crate::real::drive_workload(&mut driver, &mut workload, warmup_end, |_| {}).await;
            let before = driver.request_counters();
            let window_start = driver.now_ns();
            let window_end = window_start + (file.workload.duration_ms * 1e6) as Nanos;
            let mut latencies = histogram();
            let mut ops = 0u64;
            crate::real::drive_workload(&mut driver, &mut workload, window_end, |done| {
                ops += 1;
                let _ = latencies.record(((done.time_ns - done.submitted_ns) / 1_000).max(1));
            })
            .await;
            let window_ns = driver.now_ns() - window_start;
            let after = driver.request_counters();
            workload.stop();
            let settle = driver.now_ns() + 1_000_000_000;
            crate::real::drive_workload(&mut driver, &mut workload, settle, |_| {}).await;
            let missing = || crate::LabError::Usage("a node did not report its counters".into());
            let before = driver.counters_for(before).ok_or_else(missing)?;
            let after = driver.counters_for(after).ok_or_else(missing)?;
            let delta = |f: fn(&qlab_net::runtime::Counters) -> u64| -> u64 {
                after.iter().zip(&before).map(|(a, b)| f(a).saturating_sub(f(b))).sum()
            };
            let messages = delta(|c| c.messages_sent);
            let bytes = delta(|c| c.bytes_sent);
            let cpu_s = delta(|c| c.cpu_ns) as f64 / 1e9 / point.nodes as f64;
            let (ops_per_s, [p50, p90, p99, p999], msgs_per_op, bytes_per_op) =
                finish_metrics(&latencies, ops, window_ns, messages, bytes);
            let observations = crate::real::observations_for_checkers(&driver);
            let (safety, violations) = judge(&observations, &workload, driver.now_ns());
            Ok(ThroughputTrial {
                ops,
                ops_per_s,
                latency_ms_p50: p50,
                latency_ms_p90: p90,
                latency_ms_p99: p99,
                latency_ms_p999: p999,
                msgs_per_op,
                bytes_per_op,
                cpu_s_per_node: Some(cpu_s),
                safety,
                violations,
            })
        })
        .inspect(|_| cluster.stop_all())
}
