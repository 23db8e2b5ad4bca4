//! The `disruption` experiment kind: what does one fault scenario cost a cluster under
//! steady load — how many elections does it force, how long do clients see no progress,
//! and what does throughput do over time?
//!
//! Each `[[disruption.scenario]]` is a named fault schedule (the entries of a `[faults]
//! schedule`, including `transfer-leader`). One trial: the cluster elects a leader,
//! `clients` closed-loop clients start and run for `duration_ms`, and the scenario's
//! faults fall due at their times from the clients' start. Measured from the first
//! fault on: the elections won (`Elected` reports), how far the highest term or ballot
//! moved, and the longest stretch in which no client operation completed
//! (`unavailable_ms`, the client-visible outage); over the whole run, throughput and a
//! timeline of completions per `bin_ms`. The checkers judge every trial. The canonical
//! use is PreVote: a replica cut off by a partition and healed forces the working
//! leader out without it and not with it (`experiments/rejoin-disruption.toml`).
//!
//! In `mode = "quic"` the same scenario runs on real processes: the harness carries out
//! each entry through the nodes' transports (partitions, isolation), `kill -9` and a
//! restart from disk (crashes), or a command to the leader (transfers); elections are
//! the `Elected` reports after the first fault, and the epochs each node's own report
//! of its epoch at the first fault and at the end.

use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultModel, FaultsRule, KeysRead, Mode, Point, ScheduledFault, expand};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use crate::results::cell;
use crate::trial::{cluster_with_leader, judge, run_sim_segment, workload_config};
use crate::workload::Workload;
use qlab_core::{Event, Nanos, NodeId};
use qlab_sim::Sim;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// What one disruption trial measured.
#[derive(Clone, Debug)]
pub struct DisruptionTrial {
    pub ops_per_s: f64,
    /// Longest time from the first fault to the run's end with no operation completing.
    pub unavailable_ms: f64,
    /// Leaders elected after the first fault.
    pub elections: u64,
    /// The highest epoch (term, ballot) any replica reached, minus the highest at the
    /// first fault.
    pub epochs_advanced: u64,
    /// The first and the last entry of the schedule, from the clients' start.
    pub fault_from_ms: f64,
    pub fault_until_ms: f64,
    pub timeline_bin_ms: f64,
    pub completions_per_bin: Vec<u64>,
    pub safety: qlab_check::Verdict,
    pub violations: Vec<String>,
    /// The simulator's event trace, when asked for (`qlab replay`).
    pub trace: Vec<String>,
}

/// The point's scenario as a schedule sorted by time (ns from the clients' start), and
/// the times of its first and last entries.
fn scenario_schedule(experiment: &Experiment, point: &Point) -> (VecDeque<(Nanos, ScheduledFault)>, Nanos, Nanos) {
    let section = disruption_section(experiment).expect("[disruption] was read when the file was loaded");
    let scenario = section
        .disruption
        .scenario
        .iter()
        .map(|s| s.get_ref())
        .find(|s| s.name == scenario(point))
        .expect("points name only the file's scenarios");
    let mut schedule: Vec<(Nanos, ScheduledFault)> =
        scenario.schedule.iter().map(|f| (ms_to_ns(f.at_ms()), f.clone())).collect();
    schedule.sort_by_key(|(at, _)| *at);
    let (first_ns, last_ns) = (schedule.first().map_or(0, |f| f.0), schedule.last().map_or(0, |f| f.0));
    (schedule.into(), first_ns, last_ns)
}

fn ms_to_ns(ms: f64) -> Nanos {
    (ms * 1e6).round() as Nanos
}

/// Completions per `bin_ms` from `start` to `end`.
fn timeline(completions: &[Nanos], start: Nanos, end: Nanos, bin_ms: f64) -> Vec<u64> {
    let bin = ms_to_ns(bin_ms).max(1);
    let mut per_bin = vec![0u64; (end - start).div_ceil(bin) as usize];
    for t in completions.iter().filter(|t| **t >= start) {
        if let Some(slot) = per_bin.get_mut(((t - start) / bin) as usize) {
            *slot += 1;
        }
    }
    per_bin
}

pub fn run_trial<P: LabProtocol>(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> DisruptionTrial {
    let file = &experiment.file;
    let section = disruption_section(experiment).expect("[disruption] was read when the file was loaded");
    let ns = ms_to_ns;
    let (mut schedule, first_ns, last_ns) = scenario_schedule(experiment, point);

    let mut sim = cluster_with_leader::<P>(experiment, point, seed, trace);
    let start = sim.now();
    let end = start + ns(file.workload.duration_ms);
    let mut workload = Workload::new(workload_config(experiment, point), seed);
    workload.start_all_at(start);
    let mut crashed_leader = None;
    let mut completions: Vec<Nanos> = Vec::new();
    // Up to the first fault, then note where the epochs stood, then to the end.
    run_sim_segment(
        &mut sim,
        &mut workload,
        &mut VecDeque::new(),
        start,
        start + first_ns,
        &mut crashed_leader,
        &mut |done| completions.push(done.time),
    );
    let highest_epoch = |sim: &Sim<P, P::Client>| -> u64 {
        (0..point.nodes).filter_map(|n| sim.node(NodeId(n)).map(|p| p.epoch())).max().unwrap_or(0)
    };
    let epoch_at_first_fault = highest_epoch(&sim);
    let first_fault_at = sim.now();
    run_sim_segment(&mut sim, &mut workload, &mut schedule, start, end, &mut crashed_leader, &mut |done| {
        completions.push(done.time)
    });
    let epochs_advanced = highest_epoch(&sim).saturating_sub(epoch_at_first_fault);
    let elections = sim
        .observations
        .iter()
        .filter(|o| o.time >= first_fault_at && matches!(o.event, Event::Elected { .. }))
        .count() as u64;
    workload.stop();
    let settle = sim.now() + 4 * point.heartbeat_ns();
    workload.run(&mut sim, settle, |_, _| {}, |_| false);
    let (safety, violations) = judge(&sim.observations, &workload, sim.now());

    DisruptionTrial::of_run(
        &completions,
        RunWindow { start, first_fault_at, end },
        (first_ns, last_ns),
        section.disruption.bin_ms,
        (elections, epochs_advanced),
        (safety, violations),
    )
    .with_trace(sim.trace().to_vec())
}

/// A disruption run's edges: the clients' start, the first fault, the end.
struct RunWindow {
    start: Nanos,
    first_fault_at: Nanos,
    end: Nanos,
}

impl DisruptionTrial {
    /// What a run measured: its completions over `window`, the scenario's first and last
    /// entries (ns from the start), the elections and epochs after the first fault, and
    /// the checkers' verdict.
    fn of_run(
        completions: &[Nanos],
        window: RunWindow,
        (first_ns, last_ns): (Nanos, Nanos),
        bin_ms: f64,
        (elections, epochs_advanced): (u64, u64),
        (safety, violations): (qlab_check::Verdict, Vec<String>),
    ) -> Self {
        let RunWindow { start, first_fault_at, end } = window;
        DisruptionTrial {
            ops_per_s: completions.len() as f64 / ((end - start) as f64 / 1e9),
            unavailable_ms: longest_gap_ns(completions, first_fault_at, end) as f64 / 1e6,
            elections,
            epochs_advanced,
            fault_from_ms: first_ns as f64 / 1e6,
            fault_until_ms: last_ns as f64 / 1e6,
            timeline_bin_ms: bin_ms,
            completions_per_bin: timeline(completions, start, end, bin_ms),
            safety,
            violations,
            trace: Vec::new(),
        }
    }

    fn with_trace(self, trace: Vec<String>) -> Self {
        DisruptionTrial { trace, ..self }
    }
}

/// Real mode: the scenario on one process per replica on loopback.
pub fn run_trial_quic<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &std::path::Path,
) -> crate::Result<DisruptionTrial> {
    crate::real::on_fresh_cluster::<P, _>(experiment, point, seed, node_binary, async |cluster| {
        measure_quic::<P>(experiment, point, seed, cluster).await
    })
}

async fn measure_quic<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    cluster: &mut qlab_net::cluster::LocalCluster,
) -> crate::Result<DisruptionTrial> {
    let file = &experiment.file;
    let section = disruption_section(experiment)?;
    let (mut schedule, first_ns, last_ns) = scenario_schedule(experiment, point);
    let mut driver = crate::real::driver::<P>(cluster, point, &P::config(point, file))?;
    let mut faults = crate::real::RealFaults::new(point, &file.network);
    if faults.shapes_the_network() {
        faults.shape_network(&mut driver);
    }
    crate::real::wait_for_leader(&mut driver, point.nodes).await?;
    let mut workload = Workload::new(workload_config(experiment, point), seed);
    let start = driver.now_ns();
    let end = start + ms_to_ns(file.workload.duration_ms);
    workload.start_all_at(start);
    let mut completions: Vec<Nanos> = Vec::new();
    let mut nothing = VecDeque::new();
    let mut on_done = |done: &qlab_net::drive::Done| completions.push(done.time_ns);
    crate::real::run_segment(
        &mut driver,
        &mut workload,
        cluster,
        &mut faults,
        &mut nothing,
        start,
        start + first_ns,
        &mut on_done,
    )
    .await?;
    let first_fault_at = driver.now_ns();
    let at_first_fault = driver.request_counters();
    crate::real::run_segment(&mut driver, &mut workload, cluster, &mut faults, &mut schedule, start, end, &mut on_done)
        .await?;
    let at_end = driver.request_counters();
    workload.stop();
    let settle = driver.now_ns() + 4 * point.heartbeat_ns();
    crate::real::drive_workload(&mut driver, &mut workload, settle, |_| {}).await;
    // Each node's own epoch; a node down when asked does not answer and is left out.
    let highest_epoch =
        |tag: u64| (0..point.nodes).filter_map(|n| driver.counters_for_node(tag, n)).map(|c| c.epoch).max();
    let epochs_advanced = highest_epoch(at_end).unwrap_or(0).saturating_sub(highest_epoch(at_first_fault).unwrap_or(0));
    let observations = crate::real::observations_for_checkers(&driver);
    let elections =
        observations.iter().filter(|o| o.time >= first_fault_at && matches!(o.event, Event::Elected { .. })).count()
            as u64;
    Ok(DisruptionTrial::of_run(
        &completions,
        RunWindow { start, first_fault_at, end },
        (first_ns, last_ns),
        section.disruption.bin_ms,
        (elections, epochs_advanced),
        judge(&observations, &workload, driver.now_ns()),
    ))
}

/// The longest interval within `[from, to]` that holds no completion time.
fn longest_gap_ns(completions: &[Nanos], from: Nanos, to: Nanos) -> Nanos {
    let mut inside: Vec<Nanos> = completions.iter().copied().filter(|t| (from..=to).contains(t)).collect();
    inside.sort_unstable();
    let mut previous = from;
    let mut longest = 0;
    for t in inside.into_iter().chain(std::iter::once(to)) {
        longest = longest.max(t - previous);
        previous = t;
    }
    longest
}

/// One row of a disruption `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct DisruptionRow {
    pub protocol: &'static str,
    pub mode: &'static str,
    pub nodes: u32,
    pub scenario: String,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub clients: u32,
    #[serde(serialize_with = "cell::display")]
    pub latency_ms_mean: f64,
    #[serde(serialize_with = "cell::display")]
    pub loss: f64,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    #[serde(serialize_with = "cell::metric")]
    pub ops_per_s: f64,
    #[serde(serialize_with = "cell::metric")]
    pub unavailable_ms: f64,
    pub elections: u64,
    pub epochs_advanced: u64,
    #[serde(serialize_with = "cell::metric")]
    pub fault_from_ms: f64,
    #[serde(serialize_with = "cell::metric")]
    pub fault_until_ms: f64,
    #[serde(serialize_with = "cell::metric")]
    pub timeline_bin_ms: f64,
    #[serde(serialize_with = "cell::spaced")]
    pub completions_per_bin: Vec<u64>,
    pub safety: qlab_check::Verdict,
    pub violations: String,
}

impl DisruptionRow {
    pub fn new(
        experiment: &Experiment,
        point: &Point,
        trial: u64,
        point_index: usize,
        seed: u64,
        outcome: &DisruptionTrial,
    ) -> Self {
        let check_quorum = with_protocol!(point.protocol, P => P::check_quorum(&P::config(point, &experiment.file)));
        DisruptionRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            scenario: scenario(point).to_string(),
            pre_vote: point.pre_vote,
            check_quorum,
            clients: point.clients,
            latency_ms_mean: point.latency.mean_ms(),
            loss: point.loss,
            trial,
            point: point_index,
            seed,
            ops_per_s: outcome.ops_per_s,
            unavailable_ms: outcome.unavailable_ms,
            elections: outcome.elections,
            epochs_advanced: outcome.epochs_advanced,
            fault_from_ms: outcome.fault_from_ms,
            fault_until_ms: outcome.fault_until_ms,
            timeline_bin_ms: outcome.timeline_bin_ms,
            completions_per_bin: outcome.completions_per_bin.clone(),
            safety: outcome.safety.clone(),
            violations: outcome.violations.join("; "),
        }
    }
}

/// A disruption point's own axis: its scenario, by name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DisruptionAxes {
    pub scenario: String,
}

/// The scenario a point of this kind runs.
pub fn scenario(point: &Point) -> &str {
    &point.axes::<DisruptionAxes>().expect("a disruption point names its scenario").scenario
}

/// The sections a disruption file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct DisruptionFile {
    #[serde(default)]
    pub disruption: DisruptionSection,
}

/// The file's `[disruption]`, read once per run.
pub fn disruption_section(experiment: &Experiment) -> crate::Result<std::sync::Arc<DisruptionFile>> {
    experiment.kind_sections::<DisruptionFile>()
}

/// `kind = "disruption"`: the scenarios, each a fault schedule run under the same load.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisruptionSection {
    /// Width of one bin of the throughput timeline.
    #[serde(default = "default_disruption_bin_ms")]
    pub bin_ms: f64,
    /// `[[disruption.scenario]]`: `name` and `schedule` (the entries of `[faults] schedule`).
    #[serde(default)]
    pub scenario: Vec<toml::Spanned<Scenario>>,
}

fn default_disruption_bin_ms() -> f64 {
    100.0
}

/// One named fault schedule of a disruption experiment; times count from the clients' start.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub schedule: Vec<ScheduledFault>,
}

/// `[disruption]` beyond what every cluster run is checked for: sim only, leader-based
/// protocols, named scenarios whose schedules are valid and end inside the run.
fn validate_disruption(experiment: &Experiment, d: &DisruptionSection) -> crate::Result<()> {
    let f = &experiment.file;
    if f.cluster.protocol.values.iter().any(|p| p.fault_model() == FaultModel::Byzantine) {
        return Err(experiment.error_at(
            &f.cluster.protocol.span,
            "disruption scenarios are about leaders and terms: protocol is \"raft\" or \"multipaxos\"".into(),
        ));
    }
    if d.scenario.is_empty() {
        return Err(crate::LabError::Config {
            path: experiment.path.clone(),
            line: 1,
            column: 1,
            message: "a disruption experiment needs at least one [[disruption.scenario]] with name = \"...\" and \
                      schedule = [...] (the entries of a [faults] schedule)"
                .into(),
        });
    }
    if !(d.bin_ms > 0.0 && d.bin_ms <= f.workload.duration_ms) {
        return Err(experiment.error_at(
            &experiment.section_span("disruption"),
            format!("bin_ms must be in (0, duration_ms = {}], got {}", f.workload.duration_ms, d.bin_ms),
        ));
    }
    let mut names = Vec::new();
    for scenario in &d.scenario {
        let name = &scenario.get_ref().name;
        if name.is_empty() || names.contains(name) {
            return Err(experiment.error_at(
                &scenario.span(),
                format!("each scenario needs a name of its own, got {name:?} (names so far: {})", names.join(", ")),
            ));
        }
        names.push(name.clone());
        experiment.validate_schedule(&scenario.get_ref().schedule, &scenario.span())?;
        if let Some(late) = scenario.get_ref().schedule.iter().find(|e| e.at_ms() >= f.workload.duration_ms) {
            return Err(experiment.error_at(
                &scenario.span(),
                format!(
                    "scenario {name:?} has an entry at {} ms, at or after the run's end (duration_ms = {})",
                    late.at_ms(),
                    f.workload.duration_ms
                ),
            ));
        }
    }
    Ok(())
}

/// `kind = "disruption"`.
pub struct DisruptionKind;

impl ExperimentKind for DisruptionKind {
    fn name(&self) -> &'static str {
        "disruption"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["disruption"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "a disruption experiment measures from its clients' start for duration_ms (no warmup) and \
                           has no election limit";
        &[
            KeysRead {
                section: "workload",
                keys: &["clients", "think_ms", "value_bytes", "read_ratio", "keys", "duration_ms"],
                why: WHY,
            },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules {
            min_nodes: 3,
            min_nodes_why: "in a disruption experiment (a leader is disrupted and a majority must remain)",
            unreplicated: false,
            needs_clients: true,
            read_modes: false,
            fsync_column: false,
            leader_placement: false,
            faults: FaultsRule::Refused(
                "a disruption experiment takes no [faults]: its faults are each [[disruption.scenario]]'s schedule",
            ),
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        validate_disruption(experiment, &disruption_section(experiment)?.disruption)
    }
    /// The common points times the scenarios, by name.
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = disruption_section(experiment) else { return vec![] };
        let names: Vec<String> = file.disruption.scenario.iter().map(|s| s.get_ref().name.clone()).collect();
        expand(experiment.points(), &names, |p, v| *p = p.clone().with_axes(DisruptionAxes { scenario: v.clone() }))
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<DisruptionRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (experiment, point, seed) = (trial.experiment, trial.point, trial.seed);
        let outcome = match point.mode {
            Mode::Sim => Ok(with_protocol!(point.protocol, P => run_trial::<P>(experiment, point, seed, false))),
            Mode::Quic => with_protocol!(point.protocol, P =>
                run_trial_quic::<P>(experiment, point, seed, trial.node_binary)),
        };
        match outcome {
            Ok(outcome) => {
                let row = DisruptionRow::new(experiment, point, trial.trial, trial.point_index, seed, &outcome);
                TrialRecord::new(&row, outcome.safety)
            }
            Err(e) => TrialRecord {
                row: crate::kind::error_row(self, trial, &e.to_string()),
                verdict: qlab_check::Verdict::Error,
            },
        }
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_disruption(run_dir, experiment_name, crate::protocol_list::ProtocolName::NAMES)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("unavailable_ms", Aggregate::Median), ("elections", Aggregate::Mean)]
    }
    fn replays(&self, mode: crate::config::Mode) -> bool {
        mode == Mode::Sim
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let point = trial.point;
        let o = with_protocol!(point.protocol, P => run_trial::<P>(trial.experiment, point, trial.seed, true));
        let story = vec![format!(
            "trial {} seed {}: {} {} nodes, scenario {}, pre-vote {}: {:.0} ops/s, unavailable_ms {:.3}, \
             {} election(s), epochs advanced {}, safety {}",
            trial.trial,
            trial.seed,
            point.protocol.name(),
            point.nodes,
            scenario(point),
            point.pre_vote,
            o.ops_per_s,
            o.unavailable_ms,
            o.elections,
            o.epochs_advanced,
            o.safety
        )];
        Ok(Replayed {
            replayed: format!("{:.3}", o.unavailable_ms),
            recorded_column: "unavailable_ms",
            story,
            violations: o.violations,
            trace: o.trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::longest_gap_ns;

    #[test]
    fn the_longest_gap_counts_the_edges_of_the_window() {
        assert_eq!(longest_gap_ns(&[], 10, 50), 40);
        assert_eq!(longest_gap_ns(&[5, 12, 30, 33, 60], 10, 50), 18);
        assert_eq!(longest_gap_ns(&[11, 12], 10, 50), 38);
    }
}
