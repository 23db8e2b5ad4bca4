//! The `counterexample` experiment kind: why each rule exists, one row per case.
//!
//! A case is a set-up in which something is known to go wrong (or, for the contrasts,
//! known not to): a safety rule switched off, timeouts without randomization, a cluster
//! size whose majority leaves no room for a failure, reads that skip the leader. Each
//! trial runs the case once from its seed and says whether the failure *showed*, which
//! invariant or property it was, and a one-line detail. `summary.csv` gives per case the
//! runs, how many showed, the first seed that did and the invariant.
//!
//! Cases built on the chaos runs (the ablations, follower reads) can be *shrunk*:
//! `qlab replay RUN --trial K` takes the trial's fault schedule, leaves out every fault
//! the failure does not need (delta debugging over deterministic re-runs, see
//! [`crate::chaos::shrink`]) and prints the minimal schedule with the event trace up to
//! the first violation.

use crate::availability_trial::FailurePlan;
pub use crate::case::Case;
use crate::chaos::{ChaosConfig, ChaosOutcome, ChaosSchedule, run_protocol_chaos, run_protocol_chaos_with, shrink};
use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, KeysRead, Mode, Point, ProtocolName, Sweep};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use qlab_check::linearizability::LinCheck;
use qlab_check::{Invariant, Verdict};
use qlab_core::reads::ReadMode;
use qlab_core::{ClientId, NodeId, Op, Request, ms, nanos_to_ms};
use qlab_raft::Raft;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one trial of a case found.
#[derive(Debug)]
pub struct CaseTrial {
    /// The case's failure showed in this run.
    pub showed: bool,
    /// The invariant broken or the property shown (empty when nothing showed).
    pub invariant: String,
    pub detail: String,
    /// Faults the run injected (chaos cases).
    pub faults: usize,
    /// `ok` unless a checker found something the case does not explain (or gave up).
    pub safety: Verdict,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub fault_log: Vec<String>,
    /// Chaos cases: the fault schedule, for shrinking.
    pub schedule: Option<ChaosSchedule>,
}

fn chaos_config(case: Case, trace: bool) -> ChaosConfig {
    let (_, read_mode) = case.chaos().expect("a chaos case");
    let readers = if read_mode == ReadMode::FollowerStale { 2 } else { 0 };
    ChaosConfig { clients: 3 + readers, readers, read_mode, disk: case.disk(), trace, ..ChaosConfig::new(3) }
}

/// Which premise of Raft's proof an fsync that lies took away, by what broke: a vote
/// is durable (else a replica votes twice in a term: two leaders), and an entry a
/// majority acknowledged stays on a majority (else a leader is elected without it).
fn lost_premise(invariant: Invariant) -> &'static str {
    match invariant {
        Invariant::ElectionSafety => {
            "premise lost: a durable vote (a replica forgot its vote and voted again in the term)"
        }
        _ => "premise lost: durable acknowledged entries (an entry a majority had acknowledged is gone from it)",
    }
}

fn run_chaos_case(case: Case, seed: u64, config: &ChaosConfig) -> ChaosOutcome {
    let (ablate, _) = case.chaos().expect("a chaos case");
    if ablate.any() {
        run_protocol_chaos_with::<Raft>(seed, config, |c| c.ablate = ablate)
    } else {
        run_protocol_chaos::<Raft>(seed, config)
    }
}

/// The first broken invariant of a chaos outcome.
fn first_broken(outcome: &ChaosOutcome) -> Option<(Invariant, String)> {
    if let Some(v) = outcome.violations.first() {
        return Some((v.invariant, v.to_string()));
    }
    match outcome.linearizability {
        LinCheck::Violation { key, operations, from_ns } => Some((
            Invariant::Linearizability,
            format!(
                "no order of {} on key {key} from {:.3} ms explains what the clients saw",
                qlab_check::linearizability::operations_phrase(operations),
                qlab_core::nanos_to_ms(from_ns)
            ),
        )),
        _ => None,
    }
}

fn chaos_trial(case: Case, outcome: ChaosOutcome) -> CaseTrial {
    let broken = first_broken(&outcome);
    // With a rule off any checker may fire: that is the case showing. Follower reads
    // explain a stale read, not a broken log.
    let unexplained = case == Case::FollowerStaleReads && !outcome.violations.is_empty();
    CaseTrial {
        showed: broken.is_some(),
        invariant: broken.as_ref().map_or(String::new(), |(i, _)| i.name().to_string()),
        detail: broken.map_or_else(
            || format!("{} operations, every checker passed", outcome.operations_completed),
            |(invariant, detail)| match case {
                Case::FsyncLies => format!("{}; {detail}", lost_premise(invariant)),
                _ => detail,
            },
        ),
        faults: outcome.faults_injected,
        // What the case explains is its showing, not a verdict against the run; honest
        // disks explain nothing, so there every checker's verdict stands.
        safety: if case == Case::FsyncHonest {
            outcome.verdict()
        } else if unexplained {
            Verdict::of(&outcome.violations, false)
        } else if outcome.verdict().is_inconclusive() {
            Verdict::Inconclusive
        } else {
            Verdict::Ok
        },
        violations: outcome.violations.iter().map(ToString::to_string).collect(),
        trace: outcome.trace,
        fault_log: outcome.fault_log,
        schedule: Some(outcome.schedule),
    }
}

/// A built-in experiment file for the cases that reuse the election and availability
/// runners, checked as any cluster run is (its kind's own checks are the case tests').
fn builtin(text: &str) -> Experiment {
    let experiment = Experiment::parse_with_kinds(Path::new("<counterexample case>"), text.to_string(), None)
        .expect("built-in case files parse");
    experiment.validate_cluster_run(&ClusterRules::default()).expect("built-in case files are valid");
    experiment
}

fn election_case(case: Case, seed: u64, trace: bool) -> CaseTrial {
    let timeout = if case == Case::FixedTimeout { "[150, 150]" } else { "[150, 300]" };
    let experiment = builtin(&format!(
        "[experiment]\nname = \"cx\"\nkind = \"election\"\ntrials = 1\n\n[cluster]\nprotocol = \"raft\"\nnodes = \
         5\n\n[network]\nlatency_ms = {{ dist = \"normal\", mean = 7.5, stddev = 1.5 }}\n\n[raft]\nelection_timeout_ms = \
         {timeout}\n\n[faults]\ncrash = {{ who = \"leader\", at = \"random-in-heartbeat\" }}\n\n[workload]\nclients = 0\n"
    ));
    let point = experiment.points().remove(0);
    let outcome = crate::election_trial::run_trial::<Raft>(&experiment, &point, seed, trace);
    let showed = outcome.terms > 1;
    CaseTrial {
        showed,
        invariant: if showed { "liveness: split vote".into() } else { String::new() },
        detail: format!("a new leader after {:.1} ms and {} term(s)", outcome.election_ms, outcome.terms),
        faults: 1,
        safety: outcome.safety.clone(),
        violations: outcome.violations,
        trace: outcome.trace,
        fault_log: vec![],
        schedule: None,
    }
}

/// Share of the time after `failures` permanent crashes with a majority-backed leader.
fn available_after(nodes: u32, failures: u32, seed: u64) -> (f64, Verdict, Vec<String>) {
    let experiment = builtin(&format!(
        "[experiment]\nname = \"cx\"\nkind = \"availability\"\ntrials = 1\n\n[cluster]\nprotocol = \"raft\"\nnodes = \
         {nodes}\n\n[network]\nlatency_ms = {{ dist = \"normal\", mean = 2.0, stddev = 0.5 }}\n\n[workload]\nwarmup_ms = \
         500\n"
    ));
    let point = experiment.points().remove(0);
    let plan = FailurePlan { failures, duration_ms: 4000.0, sample_ms: 10.0 };
    let outcome = crate::availability_trial::run_trial::<Raft>(&experiment, &point, seed, &plan);
    (outcome.available_after_failures, outcome.safety, outcome.violations)
}

fn availability_case(case: Case, seed: u64) -> CaseTrial {
    let (nodes, survives, fails) = match case {
        Case::TwoNodes => (2, 0, 1),
        Case::FourVsThree => (4, 1, 2),
        _ => (6, 2, 3),
    };
    let (up_before, safety_a, mut violations) =
        if survives > 0 { available_after(nodes, survives, seed) } else { (1.0, Verdict::Ok, vec![]) };
    let (up_after, safety_b, more) = available_after(nodes, fails, seed);
    violations.extend(more);
    // Surviving is having a majority-backed leader most of the time after the failures
    // (the election a failure may force takes a few hundred ms of the 2 s measured);
    // not surviving is having none at all.
    let showed = up_before > 0.5 && up_after == 0.0;
    let detail = if survives > 0 {
        format!(
            "{nodes} nodes: a majority-backed leader {:.0}% of the time after {survives} failure(s), {:.0}% after {fails}",
            100.0 * up_before,
            100.0 * up_after
        )
    } else {
        format!("{nodes} nodes: a majority-backed leader {:.0}% of the time after {fails} failure", 100.0 * up_after)
    };
    CaseTrial {
        showed,
        invariant: if showed { format!("availability: no majority after {fails} failure(s)") } else { String::new() },
        detail,
        faults: fails as usize,
        safety: safety_a.and(safety_b),
        violations,
        trace: vec![],
        fault_log: vec![],
        schedule: None,
    }
}

/// The minority-side old leader: cut off with one follower while a client keeps writing
/// to it, so it appends entries it can never commit; the majority elects a leader and
/// commits; after healing, the old leader must step down and replace its uncommitted
/// suffix with the new leader's entries.
fn rollback_case(seed: u64, trace: bool) -> CaseTrial {
    use qlab_raft::Role;
    use qlab_sim::{Latency, NetworkConfig, Sim};
    let config = qlab_raft::RaftConfig::default();
    let network = NetworkConfig {
        latency: Latency::Normal { ns_mean: 2e6, ns_stddev: 0.5e6, ns_floor: 100_000 },
        ..NetworkConfig::default()
    };
    let mut sim: Sim<Raft, qlab_core::leader_client::LeaderClient> =
        Sim::new_staggered(config.clone(), 5, network, seed, ms(150));
    if trace {
        sim.enable_trace();
    }
    sim.run_to(ms(1_000));
    let old = sim.leader().expect("a leader after a second");
    let old_term = sim.node(old).map_or(0, |n| n.current_term());
    let buddy = NodeId((old.0 + 1) % 5);
    let majority: Vec<NodeId> = (0..5).map(NodeId).filter(|n| *n != old && *n != buddy).collect();
    sim.partition(&[vec![old, buddy], majority.clone()]);
    // Writes straight to the old leader: appended on its side, never committed.
    for seq in 1..=5u64 {
        let op = Op::Put { key: 1, value: format!("minority-{seq}").into_bytes() };
        sim.inject_request(old, Request::new(ClientId(900), seq, op));
        sim.run_to(sim.now() + ms(5));
    }
    let appended = sim.node(old).map_or(0, |n| n.last_index());
    let committed_before = sim.node(old).map_or(0, |n| n.commit_index());
    // The majority elects a leader and commits writes of its own.
    sim.run_to(sim.now() + ms(1_000));
    let new = majority.iter().copied().find(|n| sim.node(*n).is_some_and(|r| r.role() == Role::Leader));
    if let Some(new) = new {
        for seq in 1..=3u64 {
            let op = Op::Put { key: 1, value: format!("majority-{seq}").into_bytes() };
            sim.inject_request(new, Request::new(ClientId(901), seq, op));
            sim.run_to(sim.now() + ms(20));
        }
    }
    sim.heal();
    sim.run_to(sim.now() + ms(1_500));
    let node = sim.node(old).expect("the old leader never crashes");
    // The old leader's entries of its own term above what it had committed, if any
    // survive (they were never on a majority, so none may).
    let kept_old = node.log().iter().filter(|e| e.index > committed_before && e.term == old_term).count();
    let rolled_back = appended.saturating_sub(committed_before) as usize;
    let stepped_down = node.role() != Role::Leader && node.current_term() > old_term;
    let showed = new.is_some() && stepped_down && rolled_back > 0 && kept_old == 0;
    let found = qlab_check::check_observations(&sim.observations);
    let violations: Vec<String> = found.iter().map(ToString::to_string).collect();
    CaseTrial {
        showed,
        invariant: if showed { "old leader rolled back (log matching restored)".into() } else { String::new() },
        detail: format!(
            "{old} appended {rolled_back} entries it never committed; after healing it is a {:?} in term {} and keeps \
             {kept_old} of them",
            node.role(),
            node.current_term()
        ),
        faults: 2,
        safety: Verdict::of(&found, false),
        violations,
        trace: sim.trace().to_vec(),
        fault_log: vec![
            format!("partition [{old}, {buddy}] | {majority:?}"),
            format!("heal at {:.3} ms", nanos_to_ms(sim.now())),
        ],
        schedule: None,
    }
}

pub fn run_trial(case: Case, seed: u64, trace: bool) -> CaseTrial {
    match case {
        Case::MultipleVotesPerTerm
        | Case::NoUpToDateCheck
        | Case::NoPrevLogCheck
        | Case::FollowerStaleReads
        | Case::FsyncLies
        | Case::FsyncHonest => chaos_trial(case, run_chaos_case(case, seed, &chaos_config(case, trace))),
        Case::FixedTimeout | Case::RandomizedTimeout => election_case(case, seed, trace),
        Case::TwoNodes | Case::FourVsThree | Case::SixVsFive => availability_case(case, seed),
        Case::MinorityLeaderRollback => rollback_case(seed, trace),
    }
}

/// A shrunk counterexample: the fewest faults that still break the same invariant.
pub struct Shrunk {
    pub original_faults: usize,
    pub schedule: ChaosSchedule,
    pub runs: usize,
    /// The shrunk run, traced, with its trace cut just after the first violation.
    pub trial: CaseTrial,
}

/// Shrink trial `seed` of a chaos case whose failure showed; `None` for other cases or
/// when nothing showed.
pub fn shrink_trial(case: Case, seed: u64) -> Option<Shrunk> {
    case.chaos()?;
    let config = chaos_config(case, false);
    let original = run_chaos_case(case, seed, &config);
    let (invariant, _) = first_broken(&original)?;
    let with = |schedule: &ChaosSchedule| ChaosConfig { schedule: Some(schedule.clone()), ..config.clone() };
    let (schedule, runs) = shrink(
        |schedule| run_chaos_case(case, seed, &with(schedule)),
        &original.schedule,
        |outcome| first_broken(outcome).is_some_and(|(i, _)| i == invariant),
    );
    let traced = ChaosConfig { trace: true, ..with(&schedule) };
    let outcome = run_chaos_case(case, seed, &traced);
    let cut_at = outcome.violations.first().map(|v| v.time);
    let mut trial = chaos_trial(case, outcome);
    if let Some(cut_at) = cut_at {
        // Trace lines start with the time in ms; keep those up to the violation.
        let limit = nanos_to_ms(cut_at);
        trial.trace.retain(|line| {
            line.split_whitespace()
                .next()
                .and_then(|t| t.trim_end_matches("ms").parse::<f64>().ok())
                .is_none_or(|t| t <= limit)
        });
    }
    Some(Shrunk { original_faults: original.faults_injected, schedule, runs, trial })
}

impl std::str::FromStr for Case {
    type Err = String;
    fn from_str(name: &str) -> Result<Case, String> {
        Case::ALL.iter().copied().find(|c| c.name() == name).ok_or_else(|| format!("no case {name:?}"))
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of a counterexample `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct CaseRow {
    pub case: &'static str,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    pub showed: bool,
    pub invariant: String,
    pub detail: String,
    pub faults: usize,
    pub safety: Verdict,
    /// The command that replays (and shrinks) a trial that showed or is not ok.
    pub replay: String,
    pub violations: String,
}

impl CaseRow {
    pub fn new(case: Case, trial: u64, point_index: usize, seed: u64, outcome: &CaseTrial, replay: &str) -> Self {
        CaseRow {
            case: case.name(),
            trial,
            point: point_index,
            seed,
            showed: outcome.showed,
            invariant: outcome.invariant.clone(),
            detail: outcome.detail.clone(),
            faults: outcome.faults,
            safety: outcome.safety.clone(),
            replay: if outcome.showed || !outcome.safety.is_ok() { replay.to_string() } else { String::new() },
            violations: crate::results::first_violations(&outcome.violations),
        }
    }
}

/// A counterexample point's own axis: its case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseAxes {
    pub case: Case,
}

/// The sections a counterexample file has of its own.
#[derive(Debug, Default, Deserialize)]
pub struct CounterexampleFile {
    pub counterexample: Option<CounterexampleSection>,
}

/// `kind = "counterexample"`: which built-in cases to run (`trials` seeds each).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterexampleSection {
    /// Sweep of case names (see `qlab_lab::counterexample::Case`).
    pub cases: Sweep<crate::case::Case>,
}

/// A counterexample file: sim only, cases named, and nothing the cases fix themselves.
fn validate_counterexample(experiment: &Experiment, section: Option<&CounterexampleSection>) -> crate::Result<()> {
    let f = &experiment.file;
    if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
        return Err(experiment.error_at(
            &f.experiment.mode.span,
            "counterexample experiments run in the simulator: mode = \"sim\"".into(),
        ));
    }
    let Some(section) = section else {
        return Err(crate::LabError::Config {
            path: experiment.path.clone(),
            line: 1,
            column: 1,
            message: format!(
                "a counterexample experiment needs [counterexample] cases = [...], from {}",
                crate::case::Case::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            ),
        });
    };
    if section.cases.values.is_empty() {
        return Err(experiment.error_at(&section.cases.span, "cases is empty".into()));
    }
    Ok(())
}

/// A case's description, by the name its rows give (empty for a name this lab lacks).
fn describe_case(name: &str) -> String {
    name.parse::<Case>().map_or(String::new(), |case| case.description().to_string())
}

/// `kind = "counterexample"`.
pub struct CounterexampleKind;

fn case_of(trial: &Trial) -> Case {
    trial.point.axes::<CaseAxes>().expect("a counterexample point names its case").case
}

impl ExperimentKind for CounterexampleKind {
    fn name(&self) -> &'static str {
        "counterexample"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["counterexample"]
    }
    fn reads(&self) -> &'static [KeysRead] {
        const WHY: &str = "a counterexample experiment's cases fix their own clusters, timing and faults (give only \
                           [experiment] and [counterexample])";
        &[
            KeysRead { section: "cluster", keys: &[], why: WHY },
            KeysRead { section: "network", keys: &[], why: WHY },
            KeysRead { section: "storage", keys: &[], why: WHY },
            KeysRead { section: "raft", keys: &[], why: WHY },
            KeysRead { section: "paxos", keys: &[], why: WHY },
            KeysRead { section: "pbft", keys: &[], why: WHY },
            KeysRead { section: "faults", keys: &[], why: WHY },
            KeysRead { section: "workload", keys: &[], why: WHY },
            KeysRead { section: "limits", keys: &[], why: WHY },
        ]
    }
    /// The cases fix their own clusters: the common sections are refused, not checked.
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        let file = experiment.kind_sections::<CounterexampleFile>()?;
        validate_counterexample(experiment, file.counterexample.as_ref())
    }
    /// One point per case.
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = experiment.kind_sections::<CounterexampleFile>() else { return vec![] };
        let cases = file.counterexample.as_ref().map(|s| s.cases.values.clone()).unwrap_or_default();
        cases
            .into_iter()
            .map(|case| Point::blank(Mode::Sim, ProtocolName::Raft, 0).with_axes(CaseAxes { case }))
            .collect()
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<CaseRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let case = case_of(trial);
        let outcome = run_trial(case, trial.seed, false);
        let row = CaseRow::new(case, trial.trial, trial.point_index, trial.seed, &outcome, &trial.replay_command());
        TrialRecord::new(&row, outcome.safety)
    }
    fn summarize(&self, run_dir: &Path, _experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_counterexamples(run_dir, &describe_case)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("showed", Aggregate::ShareTrue)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &["case", "runs", "violations", "first_failing_seed", "invariant", "unexplained"]
    }
    fn replays(&self, _mode: crate::config::Mode) -> bool {
        true
    }
    /// The case's run and, for a chaos case that failed, its shrunk counterexample:
    /// the shrunk run's trace is the short story of the failure.
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let case = case_of(trial);
        let o = run_trial(case, trial.seed, true);
        let shrunk = if o.showed { shrink_trial(case, trial.seed) } else { None };
        let mut story = Vec::new();
        if let Some(shrunk) = &shrunk {
            story.push(format!(
                "shrunk: {} of the run's {} faults still break {} ({} runs searched); the trace above is \
                 that run, up to the first violation:",
                shrunk.schedule.events.len(),
                shrunk.original_faults,
                shrunk.trial.invariant,
                shrunk.runs
            ));
            story.extend(shrunk.trial.fault_log.iter().map(|line| format!("  {line}")));
            story.push(format!("  minimal run: {}", shrunk.trial.detail));
        } else if !o.fault_log.is_empty() {
            story.push("faults:".into());
            story.extend(o.fault_log.iter().map(|line| format!("  {line}")));
        }
        story.push(format!(
            "trial {} seed {}: case {}: showed {}{}; {}",
            trial.trial,
            trial.seed,
            case.name(),
            o.showed,
            if o.invariant.is_empty() { String::new() } else { format!(" ({})", o.invariant) },
            o.detail
        ));
        let replayed = o.showed.to_string();
        // The minimal run's trace and violations tell the story; the full run's are in trials.csv.
        let (trace, violations) = match shrunk {
            Some(shrunk) => (shrunk.trial.trace, shrunk.trial.violations),
            None => (o.trace, o.violations),
        };
        Ok(Replayed { trace, story, recorded_column: "showed", replayed, violations })
    }
}
