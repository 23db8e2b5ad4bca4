//! The `attack-chaos` experiment kind: malicious replicas inside the chaos tests' runs.
//!
//! The `attack` kind shows what an attack costs in a calm window; some attacks only act
//! when leadership changes (`double-vote`, `promise-all`), so a calm window calls them
//! safe. Here a trial is one seeded chaos run of the attack tests (`chaos.rs`,
//! `run_attack_chaos`): the replicas' timing, the network (1–10 ms latency, up to 10%
//! loss, 5% duplication, 20% reordering) and the batching knobs drawn from the seed;
//! crashes, restarts and partitions for `fault_phase_ms` (at most
//! `crashed_or_cut_at_most` replicas at a time; 0 for a Byzantine protocol whose f is
//! spent on the malicious ones); then the network heals and every client must be served
//! again within `recovery_deadline_ms`. Replicas 0, 1, ... (as many as the point's
//! `malicious`; PBFT's first primary is node 0) run the point's attack from the start.
//! The checkers judge the honest replicas and every client history: a crash-fault
//! protocol promises nothing against a liar, so its rows count how often each attack
//! breaks it; PBFT's must all be safe and live with at most f. A trial replays exactly
//! from its seed with `qlab replay`, and for the same seed is the run the attack tests
//! make.

use crate::attack_spec::AttackSpec;
use crate::chaos::{ChaosConfig, ChaosOutcome, run_attack_chaos};
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultModel, FaultsRule, KeysRead, Mode, Point, ProtocolName, Sweep};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use qlab_check::Verdict;
use qlab_core::{NodeId, ms};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The sections an attack-chaos file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct AttackChaosFile {
    #[serde(default, rename = "attack-chaos")]
    pub attack_chaos: AttackChaosSection,
}

/// The file's `[attack-chaos]`, read once per run.
pub fn section(experiment: &Experiment) -> crate::Result<std::sync::Arc<AttackChaosFile>> {
    experiment.kind_sections::<AttackChaosFile>()
}

/// How many replicas run the attack: a count, or `"f"` (the most the protocol
/// tolerates at the point's size; 1 for 3 crash-fault replicas or 4 PBFT ones).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Malicious {
    Count(u32),
    F,
}

impl<'de> Deserialize<'de> for Malicious {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Integer(n) if n >= 1 => Ok(Malicious::Count(n as u32)),
            toml::Value::String(s) if s == "f" => Ok(Malicious::F),
            other => Err(serde::de::Error::custom(format!(
                "malicious is a count of at least 1 or \"f\" (as many as the protocol tolerates), got {other}"
            ))),
        }
    }
}

impl Malicious {
    fn count(self, protocol: ProtocolName, nodes: u32) -> u32 {
        match self {
            Malicious::Count(n) => n,
            Malicious::F => match protocol.fault_model() {
                FaultModel::Crash => (nodes - 1) / 2,
                FaultModel::Byzantine => (nodes - 1) / 3,
                FaultModel::None => 0,
            },
        }
    }
}

/// `kind = "attack-chaos"`: which attacks, by how many, and the chaos around them.
#[derive(Clone, Debug)]
pub struct AttackChaosSection {
    /// Each protocol's attacks, keyed as files name the protocol (`raft = [...]`).
    pub per_protocol: Vec<(ProtocolName, Sweep<AttackSpec>)>,
    /// How many replicas run each attack (nodes 0, 1, ...); an entry's own `malicious`
    /// replaces it for that attack.
    pub malicious: Malicious,
    /// How long crashes, restarts and partitions go on before the network heals.
    pub fault_phase_ms: f64,
    /// Every client must be served again within this long after the heal.
    pub recovery_deadline_ms: f64,
    /// At most this many replicas crashed or cut off at once (unset: any number, as the
    /// crash-fault chaos tests have it).
    pub crashed_or_cut_at_most: Option<u32>,
}

impl Default for AttackChaosSection {
    fn default() -> Self {
        AttackChaosSection {
            per_protocol: vec![],
            malicious: Malicious::F,
            fault_phase_ms: 3_000.0,
            recovery_deadline_ms: 10_000.0,
            crashed_or_cut_at_most: None,
        }
    }
}

/// By hand, as `[attack]`'s: the keys besides the run's shape are the protocol list's names.
impl<'de> Deserialize<'de> for AttackChaosSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AttackChaosSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the [attack-chaos] table")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<AttackChaosSection, M::Error> {
                let mut section = AttackChaosSection::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "malicious" => section.malicious = map.next_value()?,
                        "fault_phase_ms" => section.fault_phase_ms = map.next_value()?,
                        "recovery_deadline_ms" => section.recovery_deadline_ms = map.next_value()?,
                        "crashed_or_cut_at_most" => section.crashed_or_cut_at_most = Some(map.next_value()?),
                        name => match ProtocolName::from_name(name) {
                            Some(protocol) => section.per_protocol.push((protocol, map.next_value()?)),
                            None => {
                                return Err(serde::de::Error::custom(format!(
                                    "unknown field `{name}`, expected `malicious`, `fault_phase_ms`, \
                                     `recovery_deadline_ms`, `crashed_or_cut_at_most` or a protocol: {}",
                                    crate::attack_spec::protocols_with_attacks().join(", ")
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

/// An attack-chaos point's own axes: the attack and how many replicas run it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttackChaosAxes {
    #[serde(serialize_with = "crate::attack_spec::serialize_label")]
    pub attack: AttackSpec,
    pub malicious: u32,
}

pub fn axes(point: &Point) -> &AttackChaosAxes {
    point.axes::<AttackChaosAxes>().expect("an attack-chaos point carries its attack and malicious count")
}

/// The chaos configuration of `point`.
pub fn chaos_config(experiment: &Experiment, point: &Point, trace: bool) -> ChaosConfig {
    let file = section(experiment).expect("[attack-chaos] was read when the file was loaded");
    let s = &file.attack_chaos;
    ChaosConfig {
        clients: point.clients,
        fault_phase_ns: ms(s.fault_phase_ms.round() as u64),
        recovery_deadline_ns: ms(s.recovery_deadline_ms.round() as u64),
        faulty_at_most: s.crashed_or_cut_at_most,
        trace,
        ..ChaosConfig::new(point.nodes)
    }
}

/// One attack-chaos trial: the point's protocol under chaos with replicas
/// `0..malicious` running the point's attack from the start.
pub fn run_trial(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> ChaosOutcome {
    let config = chaos_config(experiment, point, trace);
    let a = axes(point);
    with_protocol!(point.protocol, P => {
        let attack = P::attack(&a.attack.name, &a.attack.params())
            .unwrap_or_else(|| panic!("attack {:?} was validated against {}", a.attack, P::NAME));
        let malicious: Vec<(NodeId, <P as LabProtocol>::Attack)> =
            (0..a.malicious).map(|node| (NodeId(node), attack.clone())).collect();
        run_attack_chaos::<P, _>(seed, &config, |_| {}, &malicious)
    })
}

/// One row of an attack-chaos `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, Serialize)]
pub struct AttackChaosRow {
    pub protocol: &'static str,
    pub nodes: u32,
    pub attack: String,
    pub malicious: u32,
    pub clients: u32,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    pub faults_injected: usize,
    pub operations: usize,
    /// `yes`, `no` or `inconclusive` (the search ran out of budget).
    pub linearizable: &'static str,
    pub live_after_heal: bool,
    pub safety: Verdict,
    /// The first invariant broken, if any.
    pub invariant: &'static str,
    /// The command that re-runs a trial that is not ok, with a full trace.
    pub replay: String,
    pub violations: String,
}

impl AttackChaosRow {
    fn new(trial: &Trial, outcome: &ChaosOutcome) -> Self {
        let point = trial.point;
        let safety = outcome.verdict();
        AttackChaosRow {
            protocol: point.protocol.name(),
            nodes: point.nodes,
            attack: axes(point).attack.label(),
            malicious: axes(point).malicious,
            clients: point.clients,
            trial: trial.trial,
            point: trial.point_index,
            seed: trial.seed,
            faults_injected: outcome.faults_injected,
            operations: outcome.operations_completed,
            linearizable: outcome.linearizable_word(),
            live_after_heal: outcome.live_after_heal,
            invariant: outcome.first_invariant(),
            replay: if safety.is_ok() && outcome.live_after_heal { String::new() } else { trial.replay_command() },
            violations: crate::results::first_violations(
                &outcome.violations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ),
            safety,
        }
    }
}

/// `[attack-chaos]` beyond what every cluster run is checked for.
fn validate_section(kind: &AttackChaosKind, experiment: &Experiment, s: &AttackChaosSection) -> crate::Result<()> {
    let f = &experiment.file;
    if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
        return Err(experiment.error_at(
            &f.experiment.mode.span,
            "attack-chaos experiments run in the simulator: mode = \"sim\"".into(),
        ));
    }
    let at_section = experiment.section_span("attack-chaos");
    crate::attack_spec::check_lists(experiment, "attack-chaos", &s.per_protocol)?;
    if !(s.fault_phase_ms > 0.0 && s.recovery_deadline_ms > 0.0) {
        return Err(experiment.error_at(
            &at_section,
            format!(
                "[attack-chaos] needs fault_phase_ms > 0 and recovery_deadline_ms > 0, got {} / {}",
                s.fault_phase_ms, s.recovery_deadline_ms
            ),
        ));
    }
    for point in &kind.points(experiment) {
        let a = axes(point);
        let list_span = s.per_protocol.iter().find(|(p, _)| *p == point.protocol).map_or(0..0, |(_, l)| l.span.clone());
        crate::attack_spec::check_point(experiment, point, &a.attack, a.malicious, &at_section, &list_span)?;
    }
    Ok(())
}

/// `kind = "attack-chaos"`.
pub struct AttackChaosKind;

impl ExperimentKind for AttackChaosKind {
    fn name(&self) -> &'static str {
        "attack-chaos"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["attack-chaos"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "an attack-chaos experiment runs the attack tests' chaos runs, whose timing, network, disk, \
                           protocol knobs and operation mix come from each seed";
        &[
            KeysRead { section: "network", keys: &[], why: WHY },
            KeysRead { section: "storage", keys: &[], why: WHY },
            KeysRead { section: "raft", keys: &[], why: WHY },
            KeysRead { section: "paxos", keys: &[], why: WHY },
            KeysRead { section: "pbft", keys: &[], why: WHY },
            KeysRead { section: "workload", keys: &["clients"], why: WHY },
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
            faults: FaultsRule::Refused(
                "an attack-chaos experiment takes no [faults]: its faults are the seed's and the attack",
            ),
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        validate_section(self, experiment, &section(experiment)?.attack_chaos)
    }
    /// Each protocol against its own attacks, each run by the section's (or the
    /// entry's own) number of malicious replicas, each distinct point once.
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = section(experiment) else { return vec![] };
        let s = &file.attack_chaos;
        experiment
            .points()
            .into_iter()
            .flat_map(|point| {
                let specs = s
                    .per_protocol
                    .iter()
                    .find(|(p, _)| *p == point.protocol)
                    .map(|(_, specs)| specs.values.clone())
                    .unwrap_or_default();
                // An entry with its own count that equals the section's at this size (2
                // equivocators of 7 are f, not f + 1) is the same point: run it once.
                let mut seen: Vec<(String, u32)> = Vec::new();
                specs
                    .into_iter()
                    .filter_map(|spec| {
                        let malicious =
                            spec.malicious.unwrap_or_else(|| s.malicious.count(point.protocol, point.nodes));
                        let key = (spec.label(), malicious);
                        if seen.contains(&key) {
                            return None;
                        }
                        seen.push(key);
                        Some(point.clone().with_axes(AttackChaosAxes { attack: spec, malicious }))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<AttackChaosRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let outcome = run_trial(trial.experiment, trial.point, trial.seed, false);
        let row = AttackChaosRow::new(trial, &outcome);
        let verdict = row.safety.clone();
        TrialRecord::new(&row, verdict)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_attack_chaos(run_dir, experiment_name)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("operations", Aggregate::Mean)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &["protocol", "nodes", "attack", "malicious", "trials", "unsafe", "not_live", "invariants", "verdict"]
    }
    fn replays(&self, _mode: Mode) -> bool {
        true
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let point = trial.point;
        let o = run_trial(trial.experiment, point, trial.seed, true);
        let mut story = vec!["faults:".to_string()];
        story.extend(o.fault_log.iter().cloned());
        let safety = o.verdict();
        story.push(format!(
            "trial {} seed {}: {} {} nodes, {} x {}: {} operations, {} faults, linearizability {:?}, live after heal \
             {}, safety {}",
            trial.trial,
            trial.seed,
            point.protocol.name(),
            point.nodes,
            axes(point).malicious,
            axes(point).attack.label(),
            o.operations_completed,
            o.faults_injected,
            o.linearizability,
            o.live_after_heal,
            safety
        ));
        Ok(Replayed {
            replayed: safety.to_string(),
            recorded_column: "safety",
            story,
            violations: o.violations.iter().map(ToString::to_string).collect(),
            trace: o.trace,
        })
    }
}
