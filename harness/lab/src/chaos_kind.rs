//! The `chaos` experiment kind: the soak as an experiment, VOPR style (TigerBeetle's
//! `src/vopr.zig`: one seed draws the whole scenario, a safety phase, then a liveness
//! phase).
//!
//! Each trial's seed draws its scenario: the cluster size (one of the file's
//! `[cluster] nodes`), the clients (1-4) and the fault mix, each kind of fault on or
//! off as in swarm testing (a run with fewer kinds of fault goes deeper into the ones it
//! has): crashes and restarts, partitions and one-way cuts (some isolating the leader),
//! message loss, duplication and reordering, clock skew, the disk faults of the
//! simulator (slow writes and stalls, the write in progress lost or torn at a crash,
//! damaged records detected at restart), and for Raft leadership transfers; and whether
//! the replicas compact their logs at small thresholds (snapshots and state transfer
//! many times a run). The run is
//! the chaos tests' own ([`crate::chaos`]): faults for `fault_phase_ms` (at most f
//! replicas faulty at a time for PBFT), then everything heals and every client must be
//! served again within `recovery_deadline_ms`. The checkers judge every replica and
//! every client history.
//!
//! One row per seed: the drawn scenario, the verdict (`ok`, `unsafe` with the first
//! invariant broken, `not-live`, `inconclusive`), the coverage marks the run reached
//! and missed, and for anything but `ok` the `qlab replay` command that re-runs it with
//! a full trace. `summary.csv` counts the verdicts per protocol and size and names the
//! lowest failing trial and its seed; `coverage.csv` gives per protocol how many seeds
//! reached each coverage mark, so a situation no seed reached shows as a zero. The
//! file's own safety-rule switches (`[raft.ablate]`, ...) apply to every seed, so a
//! switched-off rule can be watched failing under the same draws.

use crate::chaos::{ChaosConfig, ChaosKnobs, ChaosOutcome, DiskFaults, FaultKinds, NetworkMix, chaos_setup, run_chaos};
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultModel, FaultsRule, KeysRead, Mode, Point};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use qlab_check::Verdict;
use qlab_core::ms;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The sections a chaos file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct ChaosFile {
    #[serde(default)]
    pub chaos: ChaosSection,
}

/// `[chaos]`: how long the faults go on, and the liveness bound after they heal.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSection {
    #[serde(default = "default_fault_phase_ms")]
    pub fault_phase_ms: f64,
    /// Every client must be served again within this long after the heal (default: 10 s
    /// for a crash-fault protocol, 30 s for PBFT, whose view-change timeouts double
    /// while no view makes progress).
    pub recovery_deadline_ms: Option<f64>,
}

fn default_fault_phase_ms() -> f64 {
    3_000.0
}

impl Default for ChaosSection {
    fn default() -> Self {
        ChaosSection { fault_phase_ms: default_fault_phase_ms(), recovery_deadline_ms: None }
    }
}

/// A chaos point's own axis: the cluster sizes its seeds draw from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChaosAxes {
    pub sizes: Vec<u32>,
}

/// What one seed drew.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub nodes: u32,
    pub clients: u32,
    pub faults: FaultKinds,
    pub network: NetworkMix,
    pub clock_skew_ppm: u64,
    pub disk_faults: bool,
    /// Log compaction at small thresholds (snapshots, checkpoints, state transfer).
    pub compaction: bool,
}

/// Draw trial `seed`'s scenario from the sizes `sizes` (a stream of its own: the run's
/// own draws, network and faults, come from the seed as the chaos tests make them).
pub fn draw(seed: u64, sizes: &[u32], raft: bool) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ce7_a210_0000_0000);
    let nodes = sizes[rng.random_range(0..sizes.len())];
    let clients = rng.random_range(1..=4u32);
    let mut on = || rng.random_bool(0.5);
    let (crashes, partitions, isolate, loss, duplication, reordering, skew, disk) =
        (on(), on(), on(), on(), on(), on(), on(), on());
    let transfers = raft && rng.random_bool(0.25);
    let clock_skew_ppm = if skew { rng.random_range(1..=20_000) } else { 0 };
    let compaction = rng.random_bool(0.5);
    Scenario {
        nodes,
        clients,
        faults: FaultKinds { crashes, partitions, isolate_leader: partitions && isolate, transfers },
        network: NetworkMix { loss, duplication, reordering },
        clock_skew_ppm,
        disk_faults: disk,
        compaction,
    }
}

fn section(experiment: &Experiment) -> crate::Result<std::sync::Arc<ChaosFile>> {
    experiment.kind_sections::<ChaosFile>()
}

/// The chaos configuration of a drawn scenario.
fn chaos_config(experiment: &Experiment, point: &Point, scenario: &Scenario, trace: bool) -> ChaosConfig {
    let file = section(experiment).expect("[chaos] was read when the file was loaded");
    let s = &file.chaos;
    let byzantine = point.protocol.fault_model() == FaultModel::Byzantine;
    let recovery_ms = s.recovery_deadline_ms.unwrap_or(if byzantine { 30_000.0 } else { 10_000.0 });
    ChaosConfig {
        clients: scenario.clients,
        fault_phase_ns: ms(s.fault_phase_ms.round() as u64),
        recovery_deadline_ns: ms(recovery_ms.round() as u64),
        faulty_at_most: byzantine.then(|| qlab_pbft::faults_tolerated(scenario.nodes)),
        faults: scenario.faults,
        network: scenario.network,
        clock_skew_ppm: scenario.clock_skew_ppm,
        disk: if scenario.disk_faults { DiskFaults::HONEST } else { DiskFaults::NONE },
        trace,
        ..ChaosConfig::new(scenario.nodes)
    }
}

fn sizes(point: &Point) -> &[u32] {
    &point.axes::<ChaosAxes>().expect("a chaos point carries its sizes").sizes
}

/// One chaos trial: the point's protocol under the scenario its seed draws, with the
/// file's switched-off rules.
pub fn run_trial(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> (Scenario, ChaosOutcome) {
    let scenario = draw(seed, sizes(point), point.protocol == crate::config::ProtocolName::Raft);
    let config = chaos_config(experiment, point, &scenario, trace);
    let sized = Point { nodes: scenario.nodes, ..point.clone() };
    let outcome = with_protocol!(point.protocol, P => {
        let file_rules = <P as LabProtocol>::config(&sized, &experiment.file);
        let (mut protocol, network, rng) = chaos_setup::<P>(seed, &config);
        <P as ChaosKnobs>::keep_rules_of(&mut protocol, &file_rules);
        if scenario.compaction {
            <P as ChaosKnobs>::compact(&mut protocol, seed);
        }
        run_chaos::<P>(seed, &config, protocol, network, rng)
    });
    (scenario, outcome)
}

/// A run's verdict as one word: safety first, then liveness.
fn verdict_word(outcome: &ChaosOutcome) -> &'static str {
    let safety = outcome.verdict();
    if safety.is_unsafe() {
        "unsafe"
    } else if !outcome.live_after_heal {
        "not-live"
    } else if safety.is_inconclusive() {
        "inconclusive"
    } else {
        "ok"
    }
}

/// One row of a chaos `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, Serialize)]
pub struct ChaosRow {
    pub protocol: &'static str,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    pub nodes: u32,
    pub clients: u32,
    pub crashes: bool,
    pub partitions: bool,
    pub isolate_leader: bool,
    pub transfers: bool,
    pub loss: bool,
    pub duplication: bool,
    pub reordering: bool,
    pub clock_skew_ppm: u64,
    pub disk_faults: bool,
    pub compaction: bool,
    pub faults_injected: usize,
    pub operations: usize,
    /// `yes`, `no` or `inconclusive` (the search ran out of budget).
    pub linearizable: &'static str,
    pub live_after_heal: bool,
    /// `ok`, `unsafe`, `not-live` or `inconclusive`.
    pub verdict: &'static str,
    /// The first invariant broken, if any.
    pub invariant: &'static str,
    /// The protocol's coverage marks this run reached, and those it did not.
    pub marks_reached: String,
    pub marks_missed: String,
    /// The command that re-runs a trial that is not ok, with a full trace.
    pub replay: String,
    pub safety: Verdict,
    pub violations: String,
}

impl ChaosRow {
    fn new(trial: &Trial, scenario: &Scenario, outcome: &ChaosOutcome) -> Self {
        let verdict = verdict_word(outcome);
        let marks = |reached: bool| {
            let names: Vec<&str> =
                outcome.coverage.iter().filter(|(_, n)| (**n > 0) == reached).map(|(name, _)| *name).collect();
            names.join("; ")
        };
        ChaosRow {
            protocol: trial.point.protocol.name(),
            trial: trial.trial,
            point: trial.point_index,
            seed: trial.seed,
            nodes: scenario.nodes,
            clients: scenario.clients,
            crashes: scenario.faults.crashes,
            partitions: scenario.faults.partitions,
            isolate_leader: scenario.faults.isolate_leader,
            transfers: scenario.faults.transfers,
            loss: scenario.network.loss,
            duplication: scenario.network.duplication,
            reordering: scenario.network.reordering,
            clock_skew_ppm: scenario.clock_skew_ppm,
            disk_faults: scenario.disk_faults,
            compaction: scenario.compaction,
            faults_injected: outcome.faults_injected,
            operations: outcome.operations_completed,
            linearizable: outcome.linearizable_word(),
            live_after_heal: outcome.live_after_heal,
            verdict,
            invariant: outcome.first_invariant(),
            marks_reached: marks(true),
            marks_missed: marks(false),
            replay: if verdict == "ok" { String::new() } else { trial.replay_command() },
            safety: outcome.verdict(),
            violations: crate::results::first_violations(
                &outcome.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ),
        }
    }
}

/// `kind = "chaos"`.
pub struct ChaosKind;

impl ExperimentKind for ChaosKind {
    fn name(&self) -> &'static str {
        "chaos"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["chaos"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "a chaos experiment's timing, network, disks, protocol knobs and workload come from each \
                           seed (the file gives the protocols, the sizes to draw from and the rules switched off)";
        &[
            KeysRead { section: "network", keys: &[], why: WHY },
            KeysRead { section: "storage", keys: &[], why: WHY },
            KeysRead { section: "raft", keys: &["ablate"], why: WHY },
            KeysRead { section: "paxos", keys: &["ablate"], why: WHY },
            KeysRead { section: "pbft", keys: &["ablate"], why: WHY },
            KeysRead { section: "workload", keys: &[], why: WHY },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules {
            min_nodes: 3,
            min_nodes_why: "in a chaos experiment (a crash must leave a majority)",
            unreplicated: false,
            needs_clients: false,
            read_modes: false,
            fsync_column: false,
            leader_placement: false,
            faults: FaultsRule::Refused("a chaos experiment takes no [faults]: each seed draws its own"),
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        let f = &experiment.file;
        if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
            return Err(experiment
                .error_at(&f.experiment.mode.span, "chaos experiments run in the simulator: mode = \"sim\"".into()));
        }
        let s = &section(experiment)?.chaos;
        if !(s.fault_phase_ms > 0.0 && s.recovery_deadline_ms.is_none_or(|d| d > 0.0)) {
            return Err(experiment.error_at(
                &experiment.section_span("chaos"),
                "[chaos] needs fault_phase_ms > 0 and recovery_deadline_ms > 0".into(),
            ));
        }
        Ok(())
    }
    /// One point per protocol; its seeds draw the size from the file's `nodes`.
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let mut points: Vec<Point> = Vec::new();
        for point in experiment.points() {
            if points.iter().any(|p| p.protocol == point.protocol) {
                continue;
            }
            let mut sizes: Vec<u32> =
                experiment.points().iter().filter(|p| p.protocol == point.protocol).map(|p| p.nodes).collect();
            sizes.sort();
            sizes.dedup();
            points.push(point.with_axes(ChaosAxes { sizes }));
        }
        points
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<ChaosRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (scenario, outcome) = run_trial(trial.experiment, trial.point, trial.seed, false);
        let row = ChaosRow::new(trial, &scenario, &outcome);
        let verdict = row.safety.clone();
        TrialRecord::new(&row, verdict)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_chaos(run_dir, experiment_name)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("operations", Aggregate::Mean), ("live_after_heal", Aggregate::ShareTrue)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &["protocol", "nodes", "seeds", "ok", "unsafe", "not_live", "inconclusive", "invariants", "first_failing_trial"]
    }
    fn replays(&self, _mode: Mode) -> bool {
        true
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let (scenario, o) = run_trial(trial.experiment, trial.point, trial.seed, true);
        let mut story = vec![format!("drawn: {scenario:?}"), "faults:".to_string()];
        story.extend(o.fault_log.iter().cloned());
        story.push(format!(
            "trial {} seed {}: {} {} nodes, {} clients: {} operations, {} faults, linearizability {:?}, live after \
             heal {}: {}",
            trial.trial,
            trial.seed,
            trial.point.protocol.name(),
            scenario.nodes,
            scenario.clients,
            o.operations_completed,
            o.faults_injected,
            o.linearizability,
            o.live_after_heal,
            verdict_word(&o)
        ));
        Ok(Replayed {
            replayed: verdict_word(&o).to_string(),
            recorded_column: "verdict",
            story,
            violations: o.violations.iter().map(ToString::to_string).collect(),
            trace: o.trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_one_scenario_and_the_seeds_draw_them_all() {
        assert_eq!(draw(7, &[3, 5], true), draw(7, &[3, 5], true));
        let scenarios: Vec<Scenario> = (0..400).map(|seed| draw(seed, &[3, 5], true)).collect();
        assert!(scenarios.iter().all(|s| [3, 5].contains(&s.nodes) && (1..=4).contains(&s.clients)));
        for (name, on) in [
            ("3 nodes", scenarios.iter().filter(|s| s.nodes == 3).count()),
            ("crashes", scenarios.iter().filter(|s| s.faults.crashes).count()),
            ("partitions", scenarios.iter().filter(|s| s.faults.partitions).count()),
            ("loss", scenarios.iter().filter(|s| s.network.loss).count()),
            ("skew", scenarios.iter().filter(|s| s.clock_skew_ppm > 0).count()),
            ("disk", scenarios.iter().filter(|s| s.disk_faults).count()),
            ("compaction", scenarios.iter().filter(|s| s.compaction).count()),
        ] {
            assert!((140..=260).contains(&on), "{name} in {on} of 400 seeds");
        }
        assert!(scenarios.iter().any(|s| s.faults.transfers));
        assert!((0..400).all(|seed| !draw(seed, &[4], false).faults.transfers), "transfers are Raft's");
    }
}
