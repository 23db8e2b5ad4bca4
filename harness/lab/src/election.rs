//! The `election` experiment kind: how long does the cluster take to replace a
//! crashed leader?
//!
//! One trial, following the Raft paper's §9.3 method:
//!
//! 1. Start the cluster and wait until a leader is elected and every node knows it.
//! 2. Optionally (`lagging_followers = k`) keep `k` followers one entry behind: their
//!    `append_entries` are dropped while a write commits on the rest, so by §5.4.1 they
//!    cannot win the coming election (the paper's "logs differ" worst case).
//! 3. Crash the leader at a uniformly random point of a heartbeat interval. With
//!    `crash.at = "after-heartbeat-broadcast"` (the paper's sequence) the leader first
//!    broadcasts heartbeats, so every follower's timer restarts at nearly the same
//!    moment (the paper's way of encouraging split votes), and the crash falls at a
//!    random point of the interval that follows: the followers' timers have then run
//!    for 0 to 1 interval, and the shortest downtime is about the minimum timeout less
//!    one interval ("about half of the minimum election timeout"). With `at =
//!    "random-in-heartbeat"` and `sync_heartbeats_before_crash` the broadcast comes at
//!    the crash itself, so every timer restarts at the crash and no election can end
//!    before a whole minimum timeout: a harsher worst case than the paper's.
//! 4. `election_ms` runs from the crash until every live node has received the new
//!    leader's first heartbeat (or AppendEntries); `terms` counts the terms it took;
//!    `unavailable_ms` runs from the crash until a client write issued after the crash
//!    first commits.
//!
//! A trial that has not elected a leader `max_election_ms` after the crash is censored:
//! recorded at that bound with `censored = true`.

use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, FaultModel, FaultsRule, KeysRead, Mode, Point};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::results::cell;
use qlab_check::Verdict;
use std::path::{Path, PathBuf};

pub use crate::election_trial::{ElectionTrial, run_trial, run_trial_quic};

/// One row of an election `trials.csv`: the serde field names are the header.
#[derive(Debug, Default, serde::Serialize)]
pub struct ElectionRow {
    pub protocol: &'static str,
    pub mode: &'static str,
    pub nodes: u32,
    #[serde(serialize_with = "cell::display")]
    pub election_timeout_ms_min: f64,
    #[serde(serialize_with = "cell::display")]
    pub election_timeout_ms_max: f64,
    #[serde(serialize_with = "cell::display")]
    pub heartbeat_ms: f64,
    #[serde(serialize_with = "cell::display")]
    pub latency_ms_mean: f64,
    #[serde(serialize_with = "cell::display")]
    pub fsync_ms_mean: f64,
    #[serde(serialize_with = "cell::display")]
    pub loss: f64,
    pub trial: u64,
    pub point: usize,
    pub seed: u64,
    #[serde(serialize_with = "cell::metric")]
    pub election_ms: f64,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub unavailable_ms: Option<f64>,
    pub terms: u64,
    pub censored: bool,
    pub messages: u64,
    #[serde(serialize_with = "cell::metric_or_empty")]
    pub broadcast_ms_mean: Option<f64>,
    pub broadcast_rounds: u64,
    /// Real mode: what the nodes' transports refused or shed ([`crate::real::TransportTrouble`]):
    /// summed over the nodes, and at the node with most. Empty in the simulator.
    #[serde(serialize_with = "cell::display_or_empty")]
    pub malformed_frames: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub malformed_frames_node_max: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub dropped_sends: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub dropped_sends_node_max: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub refused_connections: Option<u64>,
    #[serde(serialize_with = "cell::display_or_empty")]
    pub refused_connections_node_max: Option<u64>,
    pub safety: Verdict,
    pub violations: String,
}

impl ElectionRow {
    pub fn new(point: &Point, trial: u64, point_index: usize, seed: u64, outcome: &ElectionTrial) -> Self {
        let [
            malformed_frames,
            malformed_frames_node_max,
            dropped_sends,
            dropped_sends_node_max,
            refused_connections,
            refused_connections_node_max,
        ] = crate::real::TransportTrouble::cells(outcome.transport);
        ElectionRow {
            protocol: point.protocol.name(),
            mode: point.mode.name(),
            nodes: point.nodes,
            election_timeout_ms_min: point.election_timeout_ms_min,
            election_timeout_ms_max: point.election_timeout_ms_max,
            heartbeat_ms: point.heartbeat_ms,
            latency_ms_mean: point.latency.mean_ms(),
            fsync_ms_mean: point.fsync.mean_ms(),
            loss: point.loss,
            trial,
            point: point_index,
            seed,
            election_ms: outcome.election_ms,
            unavailable_ms: outcome.unavailable_ms,
            terms: outcome.terms,
            censored: outcome.censored,
            messages: outcome.messages,
            broadcast_ms_mean: outcome.broadcast_ms_mean,
            broadcast_rounds: outcome.broadcast_rounds,
            malformed_frames,
            malformed_frames_node_max,
            dropped_sends,
            dropped_sends_node_max,
            refused_connections,
            refused_connections_node_max,
            safety: outcome.safety.clone(),
            violations: outcome.violations.join("; "),
        }
    }
}

/// `kind = "election"`.
pub struct ElectionKind;

impl ElectionKind {
    fn record(trial: &Trial, outcome: &ElectionTrial) -> Vec<String> {
        crate::results::record(&ElectionRow::new(trial.point, trial.trial, trial.point_index, trial.seed, outcome))
    }
}

impl ExperimentKind for ElectionKind {
    fn name(&self) -> &'static str {
        "election"
    }
    fn reads(&self) -> &'static [KeysRead] {
        &[
            KeysRead {
                section: "faults",
                keys: &["crash", "sync_heartbeats_before_crash", "lagging_followers"],
                why: "an election experiment's fault is its crash (a fault schedule belongs to throughput experiments)",
            },
            KeysRead {
                section: "workload",
                keys: &["clients", "think_ms", "value_bytes"],
                why: "an election experiment's clients write until the crash and measure when a write commits again \
                      (no read mix, key spread, warmup or measured window)",
            },
        ]
    }
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules {
            min_nodes: 3,
            min_nodes_why: "in an election experiment (the leader is crashed and a majority must remain)",
            unreplicated: false,
            needs_clients: false,
            read_modes: false,
            fsync_column: true,
            leader_placement: false,
            faults: FaultsRule::Required(
                "an election experiment needs [faults] with crash = { who = \"leader\", at = \"random-in-heartbeat\" }",
            ),
        }
    }
    /// The crash to measure and nothing else, and a client wherever only a request
    /// that does not execute starts the view change.
    fn validate(&self, experiment: &Experiment) -> crate::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        let f = &experiment.file;
        if let Some(faults) = &f.faults
            && faults.crash.is_none()
        {
            return Err(experiment.error_at(
                &experiment.section_span("faults"),
                "an election experiment needs `crash` in [faults]".into(),
            ));
        }
        if let Some(point) =
            experiment.points().iter().find(|p| p.protocol.fault_model() == FaultModel::Byzantine && p.clients == 0)
        {
            return Err(experiment.error_at(
                &f.workload.clients.span,
                format!(
                    "a {} view change is triggered by a request that does not execute: an election experiment with {} \
                     needs clients >= 1",
                    point.protocol.name(),
                    point.protocol.name()
                ),
            ));
        }
        Ok(())
    }
    fn trial_columns(&self) -> Vec<String> {
        crate::results::header_of::<ElectionRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let (experiment, point, seed) = (trial.experiment, trial.point, trial.seed);
        let outcome = match point.mode {
            Mode::Sim => Ok(with_protocol!(point.protocol, P => run_trial::<P>(experiment, point, seed, false))),
            Mode::Quic => with_protocol!(point.protocol, P =>
                run_trial_quic::<P>(experiment, point, seed, trial.node_binary)),
        };
        match outcome {
            Ok(outcome) => TrialRecord { row: Self::record(trial, &outcome), verdict: outcome.safety.clone() },
            Err(e) => {
                let blank = ElectionTrial {
                    election_ms: f64::NAN,
                    unavailable_ms: None,
                    terms: 0,
                    censored: false,
                    safety: Verdict::Error,
                    violations: vec![],
                    messages: 0,
                    broadcast_ms_mean: None,
                    broadcast_rounds: 0,
                    transport: None,
                    trace: vec![],
                };
                let row = crate::kind::with_error(self, Self::record(trial, &blank), &e.to_string());
                TrialRecord { row, verdict: Verdict::Error }
            }
        }
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> crate::Result<Vec<PathBuf>> {
        Ok(crate::plot::plot_election(run_dir, experiment_name)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("election_ms", Aggregate::Median), ("unavailable_ms", Aggregate::Median)]
    }
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &[
            "protocol",
            "mode",
            "nodes",
            "election_timeout_ms_min",
            "election_timeout_ms_max",
            "trials",
            "election_ms_p50",
            "election_ms_p99",
            "election_ms_max",
            "censored",
            "unavailable_ms_p50",
            "terms_mean",
            "broadcast_ms_mean",
            "unsafe_trials",
        ]
    }
    fn replays(&self, mode: Mode) -> bool {
        mode == Mode::Sim
    }
    fn replay(&self, trial: &Trial) -> crate::Result<Replayed> {
        let point = trial.point;
        let o = with_protocol!(point.protocol, P => run_trial::<P>(trial.experiment, point, trial.seed, true));
        let story = vec![format!(
            "trial {} seed {}: {} nodes, timeout {}-{} ms: election_ms {:.3}, terms {}, unavailable_ms {}, censored {}, safety {}",
            trial.trial,
            trial.seed,
            point.nodes,
            point.election_timeout_ms_min,
            point.election_timeout_ms_max,
            o.election_ms,
            o.terms,
            o.unavailable_ms.map_or("-".into(), |v| format!("{v:.3}")),
            o.censored,
            o.safety
        )];
        Ok(Replayed {
            replayed: format!("{:.3}", o.election_ms),
            recorded_column: "election_ms",
            story,
            violations: o.violations,
            trace: o.trace,
        })
    }
}
