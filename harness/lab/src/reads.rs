//! The `reads` experiment kind: which read modes are linearizable, under which faults,
//! and what each costs.
//!
//! A trial is one seeded chaos run of the chaos tests (`chaos.rs`): the replicas' timing
//! (150–300 ms election timeouts, 50 ms heartbeats), the network (1–10 ms latency, up to
//! 10% loss, 5% duplication, 20% reordering) and the batching knobs are drawn from the
//! seed, and the run injects the point's fault profile for 3 s, heals, and waits for
//! every client to be served again. The point chooses the protocol, the cluster size,
//! the read mode ([`qlab_core::reads`]), the fault profile, how far each replica's clock
//! may run fast or slow (`clock_skew_ppm`) against the drift bound leases assume, and
//! the clients, of which `readers` only read (they stay with whichever replica answers
//! them, which is what exposes a stale one). The linearizability checker judges the
//! whole client history; the other checkers run too. A trial replays exactly from its
//! seed with `qlab replay`, and is the same run the `read_modes` tests make.
//!
//! In `mode = "quic"` the trial is [`crate::chaos_quic`]'s: the same seed-drawn knobs,
//! network and clients on real processes, each of the profile's faults held for a
//! while, and the clocks skewed the way that hurts a lease most while it is held.

use crate::chaos::{ChaosConfig, ChaosOutcome, FaultKinds, run_protocol_chaos};
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultModel, FaultsRule, KeysRead, Mode, Point, Sweep, expand};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::results::cell;
use crate::results::quantile;
use qlab_check::linearizability::LinCheck;
use qlab_core::nanos_to_ms;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one reads trial found.
#[derive(Debug)]
pub struct ReadsTrial {
    pub reads: usize,
    pub writes: usize,
    pub read_latency_ms_p50: f64,
    pub read_latency_ms_p99: f64,
    pub write_latency_ms_p50: f64,
    /// Replica-to-replica messages per completed operation.
    pub msgs_per_op: f64,
    pub faults_injected: usize,
    /// `yes`, `no` or `inconclusive` (the search ran out of budget).
    pub linearizable: &'static str,
    pub live_after_heal: bool,
    /// What the checkers concluded; whether the clients were served again after
    /// healing is `live_after_heal`'s to say.
    pub safety: qlab_check::Verdict,
    pub violations: Vec<String>,
    pub outcome: ChaosOutcome,
}

impl FaultProfile {
    pub fn kinds(self) -> FaultKinds {
        match self {
            FaultProfile::None => FaultKinds::NONE,
            FaultProfile::All => FaultKinds::ALL,
            FaultProfile::Crashes => {
                FaultKinds { crashes: true, partitions: false, isolate_leader: false, transfers: false }
            }
            FaultProfile::Partitions => {
                FaultKinds { crashes: false, partitions: true, isolate_leader: false, transfers: false }
            }
            FaultProfile::IsolateLeader => {
                FaultKinds { crashes: false, partitions: true, isolate_leader: true, transfers: false }
            }
        }
    }
}

/// The chaos configuration of `point`.
pub fn chaos_config(experiment: &Experiment, point: &Point, trace: bool) -> ChaosConfig {
    let file = &experiment.file;
    ChaosConfig {
        clients: point.clients,
        readers: reads_section(experiment).expect("[reads] was read when the file was loaded").reads.readers,
        faults: axes(point).fault_profile.kinds(),
        read_mode: point.read_mode,
        clock_skew_ppm: axes(point).clock_skew_ppm,
        lease_drift_bound_ppm: *file.raft.lease_drift_bound_ppm.get_ref(),
        trace,
        ..ChaosConfig::new(point.nodes)
    }
}

/// One trial: a chaos run in the simulator, or on real processes started from
/// `node_binary` ([`crate::chaos_quic`]).
pub fn run_trial(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    trace: bool,
    node_binary: &Path,
) -> crate::Result<ReadsTrial> {
    let config = chaos_config(experiment, point, trace);
    // Validation keeps the protocols without read modes (PBFT, the baseline) out.
    let outcome = match point.mode {
        Mode::Sim => with_protocol!(point.protocol, P => run_protocol_chaos::<P>(seed, &config)),
        Mode::Quic => with_protocol!(point.protocol, P =>
            crate::chaos_quic::run_chaos_quic::<P>(experiment, point, seed, &config, node_binary))?,
    };
    Ok(ReadsTrial::of(outcome))
}

impl ReadsTrial {
    /// What a finished chaos run says about reads.
    pub fn of(outcome: ChaosOutcome) -> Self {
        let latencies = |reads: bool| -> Vec<f64> {
            let mut ms: Vec<f64> = outcome
                .history
                .iter()
                .filter(|op| op.op.is_write() != reads)
                .filter_map(|op| op.completed.as_ref().map(|(at, _)| nanos_to_ms(at - op.invoked)))
                .collect();
            ms.sort_by(f64::total_cmp);
            ms
        };
        let (read_ms, write_ms) = (latencies(true), latencies(false));
        let completed = read_ms.len() + write_ms.len();
        let linearizable = match outcome.linearizability {
            LinCheck::Linearizable => "yes",
            LinCheck::Violation { .. } => "no",
            LinCheck::Inconclusive { .. } => "inconclusive",
        };
        let mut violations: Vec<String> = outcome.violations.iter().map(ToString::to_string).collect();
        if let LinCheck::Violation { key, operations, from_ns } = outcome.linearizability {
            violations.push(format!(
                "linearizability: no order of {} on key {key} from {:.3} ms explains them",
                qlab_check::linearizability::operations_phrase(operations),
                qlab_core::nanos_to_ms(from_ns)
            ));
        }
        let safety = outcome.verdict();
        ReadsTrial {
            reads: read_ms.len(),
            writes: write_ms.len(),
            read_latency_ms_p50: quantile(&read_ms, 0.5),
            read_latency_ms_p99: quantile(&read_ms, 0.99),
            write_latency_ms_p50: quantile(&write_ms, 0.5),
            msgs_per_op: if completed == 0 { f64::NAN } else { outcome.messages_sent as f64 / completed as f64 },
            faults_injected: outcome.faults_injected,
            linearizable,
            live_after_heal: outcome.live_after_heal,
            safety,
            violations,
            outcome,
        }
    }
}

/// One row of a reads `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReadsRow {
    pub protocol: &'static str,
    pub mode: &'static str,
    pub nodes: u32,
    pub read_mode: &'static str,
    pub fault_profile: &'static str,
    pub clock_skew_ppm: u64,
    pub lease_drift_bound_ppm: String,
    pub clients: u32,
    pub readers: String,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    pub reads: usize,
    pub writes: usize,
    #[serde(serialize_with = "cell::metric")]
    pub read_latency_ms_p50: f64,
    #[serde(serialize_with = "cell::metric")]
    pub read_latency_ms_p99: f64,
    #[serde(serialize_with = "cell::metric")]
    pub write_latency_ms_p50: f64,
    #[serde(serialize_with = "cell::metric")]
    pub msgs_per_op: f64,
    pub faults_injected: usize,
    pub linearizable: &'static str,
    pub live_after_heal: bool,
    pub safety: qlab_check::Verdict,
    /// The command that re-runs a trial that is not ok, with a full trace.
    pub replay: String,
    pub violations: String,
}

impl ReadsRow {
    /// The row's point columns and the trial's numbers; every result column empty.
    fn of_point(experiment: &Experiment, point: &Point, trial: u64, point_index: usize, seed: u64) -> Self {
        ReadsRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            read_mode: point.read_mode.name(),
            fault_profile: axes(point).fault_profile.name(),
            clock_skew_ppm: axes(point).clock_skew_ppm,
            lease_drift_bound_ppm: experiment.file.raft.lease_drift_bound_ppm.get_ref().to_string(),
            clients: point.clients,
            readers: reads_section(experiment).map_or_else(|_| String::new(), |file| file.reads.readers.to_string()),
            trial,
            point: point_index,
            seed,
            read_latency_ms_p50: f64::NAN,
            read_latency_ms_p99: f64::NAN,
            write_latency_ms_p50: f64::NAN,
            msgs_per_op: f64::NAN,
            ..ReadsRow::default()
        }
    }

    pub fn new(
        experiment: &Experiment,
        point: &Point,
        trial: u64,
        point_index: usize,
        seed: u64,
        outcome: &ReadsTrial,
        replay: &str,
    ) -> Self {
        ReadsRow {
            reads: outcome.reads,
            writes: outcome.writes,
            read_latency_ms_p50: outcome.read_latency_ms_p50,
            read_latency_ms_p99: outcome.read_latency_ms_p99,
            write_latency_ms_p50: outcome.write_latency_ms_p50,
            msgs_per_op: outcome.msgs_per_op,
            faults_injected: outcome.faults_injected,
            linearizable: outcome.linearizable,
            live_after_heal: outcome.live_after_heal,
            safety: outcome.safety.clone(),
            // A real trial does not replay.
            replay: if outcome.safety.is_ok() || point.mode != Mode::Sim { String::new() } else { replay.to_string() },
            violations: crate::results::first_violations(&outcome.violations),
            ..ReadsRow::of_point(experiment, point, trial, point_index, seed)
        }
    }
}

/// `kind = "reads"`: the faults each chaos run injects (besides the seed-drawn loss,
/// duplication and reordering every profile has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultProfile {
    /// No crash and no partition.
    None,
    /// Crashes, restarts, random partitions and one-way cuts: the chaos tests' mix.
    All,
    Crashes,
    /// Random partitions and one-way cuts.
    Partitions,
    /// Partitions that cut the current leader off alone (and one-way cuts).
    IsolateLeader,
}

impl FaultProfile {
    pub const NAMES: &'static [&'static str] = &["none", "all", "crashes", "partitions", "isolate-leader"];

    pub fn name(self) -> &'static str {
        match self {
            FaultProfile::None => "none",
            FaultProfile::All => "all",
            FaultProfile::Crashes => "crashes",
            FaultProfile::Partitions => "partitions",
            FaultProfile::IsolateLeader => "isolate-leader",
        }
    }
}

/// A reads point's own axes: the faults injected and the clocks' skew bound.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadsAxes {
    pub fault_profile: FaultProfile,
    pub clock_skew_ppm: u64,
}

/// The reads axes of a point of this kind.
pub fn axes(point: &Point) -> &ReadsAxes {
    point.axes::<ReadsAxes>().expect("a reads point carries its fault profile and clock skew")
}

/// The sections a reads file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct ReadsFile {
    #[serde(default)]
    pub reads: ReadsSection,
}

/// The file's `[reads]`, read once per run.
pub fn reads_section(experiment: &Experiment) -> crate::Result<std::sync::Arc<ReadsFile>> {
    experiment.kind_sections::<ReadsFile>()
}

/// `kind = "reads"`: what the chaos runs inject and who reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadsSection {
    /// Sweep: `"none"`, `"all"`, `"crashes"`, `"partitions"`, `"isolate-leader"`.
    #[serde(default = "all_faults")]
    pub fault_profile: Sweep<FaultProfile>,
    /// Sweep: each replica's clock runs at a seed-drawn rate within `1 ± ppm / 10⁶`.
    #[serde(default = "no_skew")]
    pub clock_skew_ppm: Sweep<u64>,
    /// Of the `[workload] clients`, how many only read.
    #[serde(default = "default_readers")]
    pub readers: u32,
}

impl Default for ReadsSection {
    fn default() -> Self {
        ReadsSection { fault_profile: all_faults(), clock_skew_ppm: no_skew(), readers: default_readers() }
    }
}

fn all_faults() -> Sweep<FaultProfile> {
    Sweep::one(FaultProfile::All)
}
fn no_skew() -> Sweep<u64> {
    Sweep::one(0)
}
fn default_readers() -> u32 {
    2
}

/// `[reads]` and what a chaos run would ignore, beyond what every cluster run is
/// checked for.
fn validate_reads(experiment: &Experiment, reads: &ReadsSection) -> crate::Result<()> {
    let f = &experiment.file;
    if f.cluster.protocol.values.iter().any(|p| p.fault_model() == FaultModel::Byzantine) {
        return Err(experiment.error_at(
            &f.cluster.protocol.span,
            "read modes are for the leader-based protocols (PBFT orders reads like writes): protocol is \"raft\" \
             or \"multipaxos\""
                .into(),
        ));
    }
    if f.workload.clients.values.contains(&0) {
        return Err(experiment.error_at(&f.workload.clients.span, "clients must be at least 1".into()));
    }
    if f.workload.clients.values.iter().any(|c| *c < reads.readers) {
        return Err(experiment.error_at(
            &experiment.section_span("reads"),
            format!("[reads] readers = {} exceeds the clients of some point", reads.readers),
        ));
    }
    if let Some(skew) = reads.clock_skew_ppm.values.iter().find(|s| **s >= 1_000_000) {
        return Err(experiment.error_at(
            &reads.clock_skew_ppm.span,
            format!("clock_skew_ppm must be below 1000000 (a clock rate must stay positive), got {skew}"),
        ));
    }
    let bound = &f.raft.lease_drift_bound_ppm;
    if *bound.get_ref() >= 1_000_000 {
        return Err(experiment
            .error_at(&bound.span(), format!("lease_drift_bound_ppm must be below 1000000, got {}", bound.get_ref())));
    }
    Ok(())
}

/// `kind = "reads"`.
pub struct ReadsKind;

impl ExperimentKind for ReadsKind {
    fn name(&self) -> &'static str {
        "reads"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["reads"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "a reads experiment runs the chaos tests' trials, whose timing, network, disk and operation \
                           mix come from each seed";
        &[
            KeysRead { section: "network", keys: &[], why: WHY },
            KeysRead { section: "storage", keys: &[], why: WHY },
            KeysRead { section: "paxos", keys: &[], why: WHY },
            KeysRead { section: "raft", keys: &["read_mode", "lease_drift_bound_ppm"], why: WHY },
            KeysRead { section: "workload", keys: &["clients"], why: WHY },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules {
            unreplicated: false,
            read_modes: true,
            faults: FaultsRule::Refused("a reads experiment takes no [faults]: its faults are [reads] fault_profile"),
            ..ClusterRules::default()
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        validate_reads(experiment, &reads_section(experiment)?.reads)
    }
    /// The common points times the fault profiles and the clock skews.
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = reads_section(experiment) else { return vec![] };
        let profiles = &file.reads.fault_profile.values;
        let points = expand(experiment.points(), profiles, |p, v| {
            *p = p.clone().with_axes(ReadsAxes { fault_profile: *v, clock_skew_ppm: 0 })
        });
        expand(points, &file.reads.clock_skew_ppm.values, |p, v| {
            *p = p.clone().with_axes(ReadsAxes { clock_skew_ppm: *v, ..axes(p).clone() })
        })
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<ReadsRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (experiment, point, seed) = (trial.experiment, trial.point, trial.seed);
        match run_trial(experiment, point, seed, false, trial.node_binary) {
            Ok(outcome) => {
                let replay = trial.replay_command();
                let row = ReadsRow::new(experiment, point, trial.trial, trial.point_index, seed, &outcome, &replay);
                TrialRecord::new(&row, outcome.safety)
            }
            // A real cluster that did not start: the point's columns, the error, no numbers.
            Err(e) => {
                let row = ReadsRow {
                    safety: qlab_check::Verdict::Error,
                    violations: e.to_string(),
                    ..ReadsRow::of_point(experiment, point, trial.trial, trial.point_index, seed)
                };
                TrialRecord::new(&row, qlab_check::Verdict::Error)
            }
        }
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_reads(run_dir, experiment_name)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("read_latency_ms_p50", Aggregate::Median), ("msgs_per_op", Aggregate::Median)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &[
            "protocol",
            "nodes",
            "read_mode",
            "fault_profile",
            "clock_skew_ppm",
            "trials",
            "read_latency_ms_p50",
            "msgs_per_op",
            "verdict",
        ]
    }
    fn replays(&self, mode: crate::config::Mode) -> bool {
        mode == Mode::Sim
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let point = trial.point;
        let o = run_trial(trial.experiment, point, trial.seed, true, trial.node_binary)?;
        let mut story = vec!["faults:".to_string()];
        story.extend(o.outcome.fault_log.iter().cloned());
        story.push(format!(
            "trial {} seed {}: {} {} nodes, {} reads, {} faults, clock skew {} ppm: {} reads, {} writes, \
             linearizable {}, live after heal {}, safety {}",
            trial.trial,
            trial.seed,
            point.protocol.name(),
            point.nodes,
            point.read_mode.name(),
            axes(point).fault_profile.name(),
            axes(point).clock_skew_ppm,
            o.reads,
            o.writes,
            o.linearizable,
            o.live_after_heal,
            o.safety
        ));
        Ok(Replayed {
            replayed: o.safety.to_string(),
            recorded_column: "safety",
            story,
            violations: o.violations,
            trace: o.outcome.trace,
        })
    }
}
