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

use crate::compare::Aggregate;
use crate::config::{Experiment, Point};
use crate::kind::{ExperimentKind, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use crate::results::cell;
use qlab_check::{Verdict, check_observations};
use qlab_core::{Event, Nanos, NodeId, majority};
use qlab_sim::Sim;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// What one availability trial found.
#[derive(Clone, Debug)]
pub struct AvailabilityTrial {
    /// Share of samples from the warm-up's end to the end of the run with a leader that
    /// a majority follows.
    pub available_fraction: f64,
    /// The same over the second half of the run, after every failure.
    pub available_after_failures: f64,
    /// Distinct epochs in which a majority-backed leader was seen.
    pub leader_epochs: u64,
    pub safety: Verdict,
    pub violations: Vec<String>,
}

pub fn run_trial<P: LabProtocol>(experiment: &Experiment, point: &Point, seed: u64) -> AvailabilityTrial {
    let file = &experiment.file;
    let ms = |v: f64| (v * 1e6).round() as Nanos;
    let duration = ms(file.availability.duration_ms);
    let sample = ms(file.availability.sample_ms).max(1);
    let warmup = ms(file.workload.warmup_ms).min(duration / 2);
    let half = duration / 2;
    let mut sim: Sim<P, P::Client> = point.sim(&file.network, P::config(point, file), seed);
    // The failures: k distinct replicas at times in [warmup, half), from the seed alone.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa7a1_1ab1_e000_0000);
    let mut candidates: Vec<NodeId> = (0..point.nodes).map(NodeId).collect();
    let mut failures: Vec<(Nanos, NodeId)> = (0..point.failures.min(point.nodes))
        .map(|_| {
            let victim = candidates.swap_remove(rng.random_range(0..candidates.len()));
            (rng.random_range(warmup..half.max(warmup + 1)), victim)
        })
        .collect();
    failures.sort_unstable();

    let needed = majority(point.nodes) as usize;
    let mut acknowledged: Vec<Option<(u64, NodeId)>> = vec![None; point.nodes as usize];
    let mut read = 0;
    let (mut available, mut samples, mut available_late, mut samples_late) = (0u64, 0u64, 0u64, 0u64);
    let mut epochs = std::collections::BTreeSet::new();
    let mut next_failure = 0;
    let mut t = warmup;
    while t <= duration {
        while next_failure < failures.len() && failures[next_failure].0 <= t {
            let (at, victim) = failures[next_failure];
            sim.run_to(at);
            sim.crash(victim);
            next_failure += 1;
        }
        sim.run_to(t);
        for observation in &sim.observations[read..] {
            if let Event::LeaderKnown { epoch, leader } = observation.event {
                let slot = &mut acknowledged[observation.node.0 as usize];
                if slot.is_none_or(|(known, _)| epoch >= known) {
                    *slot = Some((epoch, leader));
                }
            }
        }
        read = sim.observations.len();
        let up = sim.up_nodes();
        let leader = up.iter().copied().find(|id| {
            let node = sim.node(*id).expect("up");
            node.is_leader()
                && up.iter().filter(|n| acknowledged[n.0 as usize] == Some((node.epoch(), *id))).count() >= needed
        });
        if let Some(id) = leader {
            epochs.insert(sim.node(id).expect("up").epoch());
        }
        samples += 1;
        available += leader.is_some() as u64;
        if t >= half {
            samples_late += 1;
            available_late += leader.is_some() as u64;
        }
        t += sample;
    }
    let violations = check_observations(&sim.observations);
    let share = |hits: u64, of: u64| if of == 0 { f64::NAN } else { hits as f64 / of as f64 };
    AvailabilityTrial {
        available_fraction: share(available, samples),
        available_after_failures: share(available_late, samples_late),
        leader_epochs: epochs.len() as u64,
        safety: Verdict::of(&violations, false),
        violations: violations.iter().map(ToString::to_string).collect(),
    }
}

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
            failures: point.failures,
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

/// `kind = "availability"`.
pub struct AvailabilityKind;

impl ExperimentKind for AvailabilityKind {
    fn name(&self) -> &'static str {
        "availability"
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<AvailabilityRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (point, seed) = (trial.point, trial.seed);
        let outcome = with_protocol!(point.protocol, P => run_trial::<P>(trial.experiment, point, seed));
        let row = AvailabilityRow::new(point, trial.trial, trial.point_index, seed, &outcome);
        TrialRecord::new(&row, outcome.safety)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        crate::plot::plot_availability(run_dir, experiment_name)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("available_after_failures", Aggregate::Mean)]
    }
}
