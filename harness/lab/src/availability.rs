//! The `availability` experiment kind: how much of the time does a cluster of n
//! replicas have a leader that a majority follows, when k of them fail? One simulated
//! run per trial, no client load: k distinct replicas, drawn from the seed, crash at
//! seed-drawn times between `warmup_ms` and half the run and stay down. Every
//! `sample_ms` the run asks whether some live replica leads an epoch that a majority of
//! the whole cluster (itself included) has acknowledged, from the replicas' own
//! `LeaderKnown` reports; the share of samples for which one does is the availability,
//! over the whole run after the warm-up and over its second half (after every failure).
//! A crash-fault protocol with n replicas stays available while k < n/2 — so 4 replicas
//! tolerate no more failures than 3, and 2 none at all — which is what the figure shows.

pub use crate::availability_trial::{AvailabilityTrial, FailurePlan, run_trial};
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultModel, FaultsRule, KeysRead, Mode, Point, Sweep, expand};
use crate::kind::{ExperimentKind, Trial, TrialRecord};
use crate::results::cell;
use qlab_check::Verdict;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One row of an availability `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct AvailabilityRow {
    pub protocol: &'static str,
    pub mode: &'static str,
    pub nodes: u32,
    pub failures: u32,
    #[serde(serialize_with = "cell::display")]
    pub election_timeout_ms_min: f64,
    #[serde(serialize_with = "cell::display")]
    pub election_timeout_ms_max: f64,
    #[serde(serialize_with = "cell::display")]
    pub latency_ms_mean: f64,
    #[serde(serialize_with = "cell::display")]
    pub loss: f64,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    #[serde(serialize_with = "cell::metric")]
    pub available_fraction: f64,
    #[serde(serialize_with = "cell::metric")]
    pub available_after_failures: f64,
    pub leader_epochs: u64,
    pub safety: Verdict,
    pub violations: String,
}

impl AvailabilityRow {
    pub fn new(point: &Point, trial: u64, point_index: usize, seed: u64, outcome: &AvailabilityTrial) -> Self {
        AvailabilityRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            failures: failures(point),
            election_timeout_ms_min: point.election_timeout_ms_min,
            election_timeout_ms_max: point.election_timeout_ms_max,
            latency_ms_mean: point.latency.mean_ms(),
            loss: point.loss,
            trial,
            point: point_index,
            seed,
            available_fraction: outcome.available_fraction,
            available_after_failures: outcome.available_after_failures,
            leader_epochs: outcome.leader_epochs,
            safety: outcome.safety.clone(),
            violations: outcome.violations.join("; "),
        }
    }
}

/// An availability point's own axis: how many replicas fail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AvailabilityAxes {
    pub failures: u32,
}

/// How many replicas fail at a point of this kind.
pub fn failures(point: &Point) -> u32 {
    point.axes::<AvailabilityAxes>().expect("an availability point carries its failures").failures
}

/// The sections an availability file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct AvailabilityFile {
    #[serde(default)]
    pub availability: AvailabilitySection,
}

/// The file's `[availability]`, read once per run.
pub fn availability_section(experiment: &Experiment) -> crate::Result<std::sync::Arc<AvailabilityFile>> {
    experiment.kind_sections::<AvailabilityFile>()
}

/// `kind = "availability"`: how many replicas fail, and for how long the run goes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilitySection {
    /// Sweep: replicas that crash (distinct, drawn from the seed, at seed-drawn times
    /// between `[workload] warmup_ms` and half the run) and stay down. Combinations
    /// with more failures than replicas are left out of the sweep.
    #[serde(default = "one_failure")]
    pub failures: Sweep<u32>,
    #[serde(default = "default_availability_ms")]
    pub duration_ms: f64,
    /// How often the run asks whether a majority-backed leader exists.
    #[serde(default = "default_sample_ms")]
    pub sample_ms: f64,
}

impl Default for AvailabilitySection {
    fn default() -> Self {
        AvailabilitySection {
            failures: one_failure(),
            duration_ms: default_availability_ms(),
            sample_ms: default_sample_ms(),
        }
    }
}

fn one_failure() -> Sweep<u32> {
    Sweep::one(1)
}
fn default_availability_ms() -> f64 {
    10_000.0
}
fn default_sample_ms() -> f64 {
    10.0
}

/// `[availability]` beyond what every cluster run is checked for.
fn validate_availability(
    kind: &AvailabilityKind,
    experiment: &Experiment,
    a: &AvailabilitySection,
) -> crate::Result<()> {
    let f = &experiment.file;
    if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
        return Err(experiment.error_at(
            &f.experiment.mode.span,
            "availability experiments run in the simulator: mode = \"sim\"".into(),
        ));
    }
    if f.cluster.protocol.values.iter().any(|p| p.fault_model() == FaultModel::Byzantine) {
        return Err(experiment.error_at(
            &f.cluster.protocol.span,
            "availability counts a leader a majority follows, a crash-fault notion: protocol is \"raft\" or \"multipaxos\""
                .into(),
        ));
    }
    if !(a.duration_ms > 0.0 && a.sample_ms > 0.0 && a.sample_ms <= a.duration_ms) {
        let key = if a.duration_ms <= 0.0 { "duration_ms" } else { "sample_ms" };
        return Err(experiment.error_at_key(
            &["availability", key],
            format!("[availability] needs 0 < sample_ms <= duration_ms, got {} / {}", a.sample_ms, a.duration_ms),
        ));
    }
    if kind.points(experiment).is_empty() {
        return Err(experiment.error_at(&a.failures.span, "every value of failures exceeds every cluster size".into()));
    }
    Ok(())
}

/// `kind = "availability"`.
pub struct AvailabilityKind;

impl ExperimentKind for AvailabilityKind {
    fn name(&self) -> &'static str {
        "availability"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["availability"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "an availability experiment runs no clients (it samples whether a leader a majority follows \
                           exists; failures start after warmup_ms) and has no election limit";
        &[
            KeysRead { section: "workload", keys: &["warmup_ms"], why: WHY },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules {
            unreplicated: false,
            faults: FaultsRule::Refused(
                "an availability experiment takes no [faults]: its faults are [availability] failures",
            ),
            ..ClusterRules::default()
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        validate_availability(self, experiment, &availability_section(experiment)?.availability)
    }
    /// The common points times `failures`; more failures than replicas is no cluster,
    /// so those combinations are left out.
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = availability_section(experiment) else { return vec![] };
        let points = expand(experiment.points(), &file.availability.failures.values, |p, v| {
            *p = p.clone().with_axes(AvailabilityAxes { failures: *v })
        });
        points.into_iter().filter(|p| failures(p) <= p.nodes).collect()
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<AvailabilityRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (point, seed) = (trial.point, trial.seed);
        let section = availability_section(trial.experiment).expect("[availability] was read when the file was loaded");
        let plan = FailurePlan {
            failures: failures(point),
            duration_ms: section.availability.duration_ms,
            sample_ms: section.availability.sample_ms,
        };
        let outcome = with_protocol!(point.protocol, P => run_trial::<P>(trial.experiment, point, seed, &plan));
        let row = AvailabilityRow::new(point, trial.trial, trial.point_index, seed, &outcome);
        TrialRecord::new(&row, outcome.safety)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_availability(run_dir, experiment_name)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("available_after_failures", Aggregate::Mean)]
    }
}
