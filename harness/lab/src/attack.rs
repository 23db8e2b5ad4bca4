//! The `attack` experiment kind: one simulated run per trial in which replicas 0, 1,
//! ... (as many as the point says; PBFT's first primary is node 0) run an attack from
//! `[attack] from_ms` to `until_ms`, with closed-loop clients throughout and the run
//! going on `after_ms` past the attack. A trial records throughput before, during and
//! after the attack, whether the cluster served clients again in the second half of the
//! after phase (`recovered`), the safety verdict of the honest replicas and clients,
//! and the first invariant broken, when and where. `qlab replay RUN_DIR --trial K`
//! re-runs a trial with a full trace.

use crate::compare::Aggregate;
use crate::config::{Experiment, Point, ProtocolName};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use crate::results::cell;
use crate::workload::Workload;
use qlab_check::{Invariant, Verdict};
use qlab_core::adversary::{FaultyConfig, MaliciousNode};
use qlab_core::{ClientId, Nanos, NodeId};
use qlab_paxos::Paxos;
use qlab_paxos::attacks::{MaliciousPaxos, PaxosAttack};
use qlab_pbft::Pbft;
use qlab_pbft::attacks::{MaliciousPbft, PbftAttack};
use qlab_raft::Raft;
use qlab_raft::attacks::{MaliciousRaft, RaftAttack};
use qlab_sim::Sim;
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
}

/// Width of a throughput-timeline bin: fine enough to show an election's gap, coarse
/// enough that a few clients give a rate that is not mostly noise.
pub const TIMELINE_BIN_MS: f64 = 100.0;

/// The honest configuration with replicas `0..point.malicious` running `attack` in the
/// experiment's attack window.
pub fn faulty_config<C, A: Clone>(experiment: &Experiment, point: &Point, honest: C, attack: A) -> FaultyConfig<C, A> {
    let a = &experiment.file.attack;
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    FaultyConfig {
        honest,
        malicious: (0..point.malicious)
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
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    let (from, until) = (ns(file.attack.from_ms), ns(file.attack.until_ms));
    let end = until + ns(file.attack.after_ms);
    let mut sim: Sim<Q, Q::Client> = point.sim(&file.network, config, seed);
    if trace {
        sim.enable_trace();
    }
    for c in 0..point.clients {
        sim.add_client(Q::client(sim.config(), ClientId(c as u64), point.nodes, qlab_core::ms(100)));
    }
    let mut workload = Workload::new(crate::trial::workload_config(experiment, point), seed);
    workload.start_all_at(0);
    // Completions by phase: before, during, after (first half), after (second half).
    let mut done = [0u64; 4];
    let recovery_from = until + (end - until) / 2;
    let bin_ns = (TIMELINE_BIN_MS * 1e6) as Nanos;
    let mut completions_per_bin = vec![0u64; end.div_ceil(bin_ns) as usize];
    workload.run(
        &mut sim,
        end,
        |_, completion| {
            let phase = match completion.time {
                t if t < from => 0,
                t if t < until => 1,
                t if t < recovery_from => 2,
                _ => 3,
            };
            done[phase] += 1;
            // A completion at exactly `end` counts in the after phase, so in the last bin.
            let bin = ((completion.time / bin_ns) as usize).min(completions_per_bin.len() - 1);
            completions_per_bin[bin] += 1;
        },
        |_| false,
    );
    workload.stop();
    let settle = sim.now() + 4 * point.heartbeat_ns().max(qlab_core::ms(50));
    workload.run(&mut sim, settle, |_, _| {}, |_| false);

    let qlab_check::Judgement { verdict, violations, details } =
        qlab_check::judge_run(&sim.observations, &workload.history, sim.now());
    // Highest epoch wins: a stale acknowledgement delivered late names an old leader.
    let leader_at_attack = sim
        .observations
        .iter()
        .filter(|o| o.time < from)
        .filter_map(|o| match o.event {
            qlab_core::Event::LeaderKnown { epoch, leader } => Some((epoch, leader)),
            _ => None,
        })
        .max_by_key(|(epoch, _)| *epoch)
        .map(|(_, leader)| leader);
    let per_s = |ops: u64, span: Nanos| if span == 0 { 0.0 } else { ops as f64 / (span as f64 / 1e9) };
    AttackTrial {
        ops_per_s_before: per_s(done[0], from),
        ops_per_s_during: per_s(done[1], until - from),
        ops_per_s_after: per_s(done[2] + done[3], end - until),
        recovered: done[3] > 0,
        leader_at_attack,
        completions_per_bin,
        safety: verdict,
        invariant: violations.first().map(|v| v.invariant),
        violated_at_ms: violations.first().map(|v| qlab_core::nanos_to_ms(v.time)),
        violations: details,
        trace: sim.trace().to_vec(),
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
    #[serde(serialize_with = "cell::display")]
    pub timeline_bin_ms: f64,
    #[serde(serialize_with = "cell::spaced")]
    pub completions_per_bin: Vec<u64>,
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
        window_ms: (f64, f64),
        trial: u64,
        point_index: usize,
        seed: u64,
        outcome: &AttackTrial,
        replay: &str,
    ) -> Self {
        AttackRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            attack: point.attack.label(),
            malicious: point.malicious,
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
            timeline_bin_ms: TIMELINE_BIN_MS,
            completions_per_bin: outcome.completions_per_bin.clone(),
            safety: outcome.safety.clone(),
            invariant: outcome.invariant.map_or("", |i| i.name()),
            violated_at_ms: outcome.violated_at_ms,
            replay: if outcome.safety.is_ok() { String::new() } else { replay.to_string() },
            violations: crate::results::first_violations(&outcome.violations),
        }
    }
}

/// An attack trial of `point`: its protocol with replicas running the point's attack.
pub fn run_point(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> AttackTrial {
    let file = &experiment.file;
    let unknown = || -> String { format!("attack {:?} was validated against {}", point.attack, point.protocol.name()) };
    match point.protocol {
        ProtocolName::Raft => {
            let attack = RaftAttack::from_name(&point.attack.name, &point.attack.params())
                .unwrap_or_else(|| panic!("{}", unknown()));
            let config = faulty_config(experiment, point, Raft::config(point, file), attack);
            run_trial::<MaliciousRaft>(experiment, point, seed, config, trace)
        }
        ProtocolName::Multipaxos => {
            let attack = PaxosAttack::from_name(&point.attack.name, &point.attack.params())
                .unwrap_or_else(|| panic!("{}", unknown()));
            let config = faulty_config(experiment, point, Paxos::config(point, file), attack);
            run_trial::<MaliciousPaxos>(experiment, point, seed, config, trace)
        }
        ProtocolName::Pbft => {
            let attack = PbftAttack::from_name(&point.attack.name, &point.attack.params())
                .unwrap_or_else(|| panic!("{}", unknown()));
            let config = faulty_config(experiment, point, Pbft::config(point, file), attack);
            run_trial::<MaliciousPbft>(experiment, point, seed, config, trace)
        }
        ProtocolName::Unreplicated => {
            unreachable!("validation keeps the unreplicated baseline out of attack experiments")
        }
    }
}

/// `kind = "attack"`.
pub struct AttackKind;

impl ExperimentKind for AttackKind {
    fn name(&self) -> &'static str {
        "attack"
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<AttackRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let outcome = run_point(trial.experiment, trial.point, trial.seed, false);
        let window = (trial.experiment.file.attack.from_ms, trial.experiment.file.attack.until_ms);
        let row = AttackRow::new(
            trial.point,
            window,
            trial.trial,
            trial.point_index,
            trial.seed,
            &outcome,
            &trial.replay_command(),
        );
        TrialRecord::new(&row, outcome.safety)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        crate::plot::plot_attack(run_dir, experiment_name)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("ops_per_s_during", Aggregate::Mean), ("ops_per_s_after", Aggregate::Mean)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &["protocol", "nodes", "attack", "malicious", "seeds", "unsafe", "not_recovered", "invariants", "verdict"]
    }
    fn replays(&self, _mode: crate::config::Mode) -> bool {
        true
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let point = trial.point;
        let o = run_point(trial.experiment, point, trial.seed, true);
        let story = vec![format!(
            "trial {} seed {}: {} nodes, {} x {}: ops/s before {:.0}, during {:.0}, after {:.0}, recovered {}, safety {}",
            trial.trial,
            trial.seed,
            point.nodes,
            point.malicious,
            point.attack.label(),
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
