//! One availability trial, by itself: how much of the time a simulated cluster has a
//! leader that a majority follows while replicas fail for good. The `availability`
//! kind sweeps it over cluster sizes and failure counts; the counterexample kind's
//! cluster-size cases run it for a fixed plan.

use crate::config::{Experiment, Point};
use crate::protocols::LabProtocol;
use qlab_check::{Verdict, check_observations};
use qlab_core::{Event, Nanos, NodeId, majority};
use qlab_sim::Sim;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// How an availability run fails replicas and samples the cluster.
#[derive(Clone, Copy, Debug)]
pub struct FailurePlan {
    /// Replicas that crash, distinct, at seed-drawn times between the warm-up's end and
    /// half the run, and stay down.
    pub failures: u32,
    pub duration_ms: f64,
    /// How often the run asks whether a majority-backed leader exists.
    pub sample_ms: f64,
}

pub fn run_trial<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    plan: &FailurePlan,
) -> AvailabilityTrial {
    let file = &experiment.file;
    let ms = |v: f64| (v * 1e6).round() as Nanos;
    let duration = ms(plan.duration_ms);
    let sample = ms(plan.sample_ms).max(1);
    let warmup = ms(file.workload.warmup_ms).min(duration / 2);
    let half = duration / 2;
    let mut sim: Sim<P, P::Client> = point.sim(&file.network, P::config(point, file), seed);
    // The failures: k distinct replicas at times in [warmup, half), from the seed alone.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa7a1_1ab1_e000_0000);
    let mut candidates: Vec<NodeId> = (0..point.nodes).map(NodeId).collect();
    let mut failures: Vec<(Nanos, NodeId)> = (0..plan.failures.min(point.nodes))
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
