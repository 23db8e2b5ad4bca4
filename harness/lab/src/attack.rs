//! The `attack` experiment kind: one simulated run per trial in which replicas 0, 1,
//! ... (as many as the point says; PBFT's first primary is node 0) run an attack from
//! `[attack] from_ms` to `until_ms`, with closed-loop clients throughout and the run
//! going on `after_ms` past the attack. A trial records throughput before, during and
//! after the attack, whether the cluster served clients again in the second half of the
//! after phase (`recovered`), the safety verdict of the honest replicas and clients,
//! and the first invariant broken, when and where. `qlab replay RUN_DIR --trial K`
//! re-runs a trial with a full trace.

pub use crate::attack_spec::AttackSpec;
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultsRule, KeysRead, Mode, Point, ProtocolName, Sweep};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::protocols::LabProtocol;
use crate::results::cell;
use crate::workload::Workload;
use qlab_check::{Invariant, Verdict};
use qlab_core::adversary::{Faulty, FaultyConfig, MaliciousNode};
use qlab_core::{ClientId, Nanos, NodeId};
use qlab_sim::Sim;
use serde::{Deserialize, Serialize};
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

/// The honest configuration with replicas `0..axes(point).malicious` running `attack` in the
/// experiment's attack window.
pub fn faulty_config<C, A: Clone>(experiment: &Experiment, point: &Point, honest: C, attack: A) -> FaultyConfig<C, A> {
    let file = attack_section(experiment).expect("[attack] was read when the file was loaded");
    let a = &file.attack;
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    FaultyConfig {
        honest,
        malicious: (0..axes(point).malicious)
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
    let attack = attack_section(experiment).expect("[attack] was read when the file was loaded");
    let ns = |ms: f64| (ms * 1e6).round() as Nanos;
    let (from, until) = (ns(attack.attack.from_ms), ns(attack.attack.until_ms));
    let end = until + ns(attack.attack.after_ms);
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
            attack: axes(point).attack.label(),
            malicious: axes(point).malicious,
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
    with_protocol!(point.protocol, P => run_point_of::<P>(experiment, point, seed, trace))
}

/// One attack trial against protocol `P`: its honest replicas beside `axes(point).malicious`
/// running the point's attack.
fn run_point_of<P: LabProtocol>(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> AttackTrial {
    let attack = P::attack(&axes(point).attack.name, &axes(point).attack.params())
        .unwrap_or_else(|| panic!("attack {:?} was validated against {}", axes(point).attack, P::NAME));
    let config = faulty_config(experiment, point, P::config(point, &experiment.file), attack);
    run_trial::<Faulty<P, P::Attack>>(experiment, point, seed, config, trace)
}

/// An attack point's own axes: the attack (its `trials.csv` column is the label) and
/// how many replicas run it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttackAxes {
    #[serde(serialize_with = "crate::attack_spec::serialize_label")]
    pub attack: AttackSpec,
    pub malicious: u32,
}

/// The attack axes of a point of this kind.
pub fn axes(point: &Point) -> &AttackAxes {
    point.axes::<AttackAxes>().expect("an attack point carries its attack and malicious count")
}

/// The sections an attack file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct AttackFile {
    #[serde(default)]
    pub attack: AttackSection,
}

/// The file's `[attack]`, read once per run.
pub fn attack_section(experiment: &Experiment) -> crate::Result<std::sync::Arc<AttackFile>> {
    experiment.kind_sections::<AttackFile>()
}

/// `kind = "attack"`: which attacks to run against which protocol, by how many
/// malicious replicas, and when.
#[derive(Clone, Debug)]
pub struct AttackSection {
    /// Each protocol's attacks, keyed as files name the protocol (`raft = [...]`), from
    /// its [`LabProtocol::ATTACK_NAMES`].
    pub per_protocol: Vec<(ProtocolName, Sweep<AttackSpec>)>,
    /// Sweep: how many replicas are malicious (nodes 0, 1, ...; PBFT's first primary is 0).
    pub malicious: Sweep<u32>,
    /// The attack runs from `from_ms` to `until_ms` after the start (clients start at
    /// once, so the first election falls in the phase before)...
    pub from_ms: f64,
    pub until_ms: f64,
    /// ...and the run goes on this long after it, to see whether throughput comes back.
    pub after_ms: f64,
}

impl Default for AttackSection {
    fn default() -> Self {
        AttackSection {
            per_protocol: vec![],
            malicious: one_malicious(),
            from_ms: default_attack_from_ms(),
            until_ms: default_attack_until_ms(),
            after_ms: default_attack_after_ms(),
        }
    }
}

/// By hand rather than derived, because the keys besides the window and the count are
/// the protocol list's names: a protocol added there is a key here with no change.
impl<'de> Deserialize<'de> for AttackSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AttackSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the [attack] table")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<AttackSection, M::Error> {
                let mut section = AttackSection::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "malicious" => section.malicious = map.next_value()?,
                        "from_ms" => section.from_ms = map.next_value()?,
                        "until_ms" => section.until_ms = map.next_value()?,
                        "after_ms" => section.after_ms = map.next_value()?,
                        name => match ProtocolName::from_name(name) {
                            Some(protocol) => section.per_protocol.push((protocol, map.next_value()?)),
                            None => {
                                let protocols = crate::attack_spec::protocols_with_attacks();
                                return Err(serde::de::Error::custom(format!(
                                    "unknown field `{name}`, expected `malicious`, `from_ms`, `until_ms`, `after_ms` \
                                     or a protocol: {}",
                                    protocols.join(", ")
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

impl AttackSection {
    /// The attacks given for `protocol`, and the names it knows.
    pub fn for_protocol(&self, protocol: ProtocolName) -> (Option<&Sweep<AttackSpec>>, &'static [&'static str]) {
        let given = self.per_protocol.iter().find(|(p, _)| *p == protocol).map(|(_, attacks)| attacks);
        (given, with_protocol!(protocol, P => <P as LabProtocol>::ATTACK_NAMES))
    }
}

fn one_malicious() -> Sweep<u32> {
    Sweep::one(1)
}
fn default_attack_from_ms() -> f64 {
    1000.0
}
fn default_attack_until_ms() -> f64 {
    3000.0
}
fn default_attack_after_ms() -> f64 {
    3000.0
}

/// `[attack]` beyond what every cluster run is checked for: sim only, each protocol's
/// attacks known to it with the parameters they take, a window that makes sense, and
/// malicious counts and starved replicas that leave honest ones.
fn validate_attack(kind: &AttackKind, experiment: &Experiment, attack: &AttackSection) -> crate::Result<()> {
    let f = &experiment.file;
    if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
        return Err(experiment.error_at(
            &f.experiment.mode.span,
            "attack experiments run in the simulator for now: mode = \"sim\"".into(),
        ));
    }
    crate::attack_spec::check_lists(experiment, "attack", &attack.per_protocol)?;
    if !(0.0 <= attack.from_ms && attack.from_ms < attack.until_ms && attack.after_ms > 0.0) {
        let key = if attack.after_ms <= 0.0 {
            "after_ms"
        } else if attack.from_ms < 0.0 {
            "from_ms"
        } else {
            "until_ms"
        };
        return Err(experiment.error_at_key(
            &["attack", key],
            format!(
                "[attack] needs 0 <= from_ms < until_ms and after_ms > 0, got {} / {} / {}",
                attack.from_ms, attack.until_ms, attack.after_ms
            ),
        ));
    }
    for point in &kind.points(experiment) {
        let (list, _) = attack.for_protocol(point.protocol);
        let list_span = list.map_or(0..0, |s| s.span.clone());
        let a = axes(point);
        crate::attack_spec::check_point(experiment, point, &a.attack, a.malicious, &attack.malicious.span, &list_span)?;
    }
    Ok(())
}

/// `kind = "attack"`.
pub struct AttackKind;

impl ExperimentKind for AttackKind {
    fn name(&self) -> &'static str {
        "attack"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["attack"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "an attack experiment's clients run through its [attack] window, not a warmup and a \
                           measured duration, and it has no election limit";
        &[
            KeysRead {
                section: "workload",
                keys: &["clients", "think_ms", "value_bytes", "read_ratio", "keys"],
                why: WHY,
            },
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
            faults: FaultsRule::Refused("an attack experiment takes no [faults]: its fault is the attack"),
        }
    }
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        validate_attack(self, experiment, &attack_section(experiment)?.attack)
    }
    /// Each protocol against its own list of attacks, times the malicious counts (an
    /// attack that names its own count runs with that one only).
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = attack_section(experiment) else { return vec![] };
        let attack = &file.attack;
        experiment
            .points()
            .into_iter()
            .flat_map(|point| {
                let specs = attack.for_protocol(point.protocol).0.map(|s| s.values.clone()).unwrap_or_default();
                specs.into_iter().flat_map(move |spec| {
                    let counts = spec.malicious.map_or_else(|| attack.malicious.values.clone(), |m| vec![m]);
                    let point = point.clone();
                    counts
                        .into_iter()
                        .map(move |malicious| point.clone().with_axes(AttackAxes { attack: spec.clone(), malicious }))
                })
            })
            .collect()
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<AttackRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let outcome = run_point(trial.experiment, trial.point, trial.seed, false);
        let window = match attack_section(trial.experiment) {
            Ok(file) => (file.attack.from_ms, file.attack.until_ms),
            Err(_) => (f64::NAN, f64::NAN),
        };
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
        Ok(crate::plot::plot_attack(run_dir, experiment_name, crate::protocol_list::ProtocolName::NAMES)?)
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
            axes(point).malicious,
            axes(point).attack.label(),
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
