//! What an experiment kind is to the lab: the [`ExperimentKind`] trait every kind
//! implements in its own module, and the values the run hands it.
//!
//! A kind owns everything that differs between experiments: the row type whose serde
//! field names are its `trials.csv` header, how one trial runs (per mode), its summary
//! and figures, the metrics `qlab compare` tests, the summary columns the CLI prints and
//! how `qlab replay` re-runs and tells a trial. The run loop, `plot_run`, `compare` and
//! the CLI only ever call these methods through [`crate::registry::Registry`], so adding
//! a kind is one module and one registry line (`docs/extending.md`).
//!
//! The file's common sections (cluster, network, protocols, workload, faults) and the
//! checks written once for them are [`crate::config`]'s; a kind states what it asks of
//! them as [`ClusterRules`], and owns its own sections (`[attack]`, `[reads]`, ...):
//! their types, defaults, validation and the axes they add to the sweep.

use crate::compare::Aggregate;
use crate::config::{ClusterRules, Experiment, KeysRead, Mode, Point};
use crate::error::{LabError, Result};
use qlab_check::Verdict;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One trial as the run hands it to a kind: the same point and seed every time trial
/// `trial` of this run is run or replayed.
pub struct Trial<'a> {
    pub experiment: &'a Experiment,
    pub point: &'a Point,
    /// The trial's number in the run (`k / trials` indexes the point).
    pub trial: u64,
    pub point_index: usize,
    pub seed: u64,
    /// The `qlab` binary real-mode clusters run as `qlab node`.
    pub node_binary: &'a Path,
    pub run_dir: &'a Path,
}

impl Trial<'_> {
    /// The command that re-runs this trial with a full trace (rows carry it).
    pub fn replay_command(&self) -> String {
        format!("qlab replay {} --trial {}", self.run_dir.display(), self.trial)
    }
}

/// A finished trial: its row (the kind's row type, recorded in header order) and verdict.
pub struct TrialRecord {
    pub row: Vec<String>,
    pub verdict: Verdict,
}

impl TrialRecord {
    pub fn new<R: Serialize>(row: &R, verdict: Verdict) -> TrialRecord {
        TrialRecord { row: crate::results::record(row), verdict }
    }
}

/// A replayed trial, told the way `qlab replay` prints it.
pub struct Replayed {
    /// The simulator's event trace (printed first, `--max-lines` of it).
    pub trace: Vec<String>,
    /// What follows the trace: fault logs, shrinking, the trial's one-line story.
    pub story: Vec<String>,
    /// The `trials.csv` column the replay is checked against, and the replay's value of it.
    pub recorded_column: &'static str,
    pub replayed: String,
    pub violations: Vec<String>,
}

/// An experiment kind: one module of the lab, one line of the registry.
pub trait ExperimentKind: Sync {
    /// The name files give as `kind = "..."` and `meta.json` records.
    fn name(&self) -> &'static str;

    /// The top-level tables of the file this kind owns besides the common ones
    /// ([`crate::config::COMMON_SECTIONS`]); any other table is an error. The kind reads
    /// them with [`Experiment::kind_sections`].
    fn sections(&self) -> &'static [&'static str] {
        &[]
    }

    /// What the kind reads of the common sections (and the protocols' own), where it
    /// reads less than all: a key the file sets that the kind would ignore is refused at
    /// its line and column by [`crate::registry::Registry::parse`].
    fn reads(&self) -> &'static [KeysRead] {
        &[]
    }

    /// What the kind asks of the common sections.
    fn cluster_rules(&self) -> ClusterRules {
        ClusterRules::default()
    }

    /// Check the file beyond what every file is checked for: by default the common
    /// sections by [`Self::cluster_rules`]; a kind with sections of its own checks
    /// those after, reporting `FILE:LINE:COLUMN` with [`Experiment::error_at`].
    fn validate(&self, experiment: &Experiment) -> Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())
    }

    /// The points the file sweeps: the common axes ([`Experiment::points`]), times the
    /// kind's own ([`crate::config::expand`]).
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        experiment.points()
    }

    /// The `trials.csv` header: the row type's serde field names, point columns first,
    /// then `trial`, ..., with `safety` and `error` last. Usually
    /// `header_of::<MyRow>()`.
    fn trial_columns(&self) -> Vec<String>;

    /// The columns that describe a point: those before `trial`.
    fn point_columns(&self) -> Vec<String> {
        self.trial_columns().into_iter().take_while(|c| c != "trial").collect()
    }

    /// Run one trial. A trial that cannot run at all (a real cluster that failed to
    /// start) returns its row with the error and [`Verdict::Error`]; a panic is caught by
    /// the run and recorded the same way.
    fn run_trial(&self, trial: &Trial) -> TrialRecord;

    /// Write `summary.csv` and draw the figures from the run directory's `trials.csv`
    /// alone (so `qlab plot` can redraw them): the figures written.
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>>;

    /// The metrics `qlab compare` tests, each with how a point's trials are aggregated.
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)];

    /// The `summary.csv` columns the CLI prints after a run (those present); empty
    /// prints them all.
    fn summary_columns_shown(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether `qlab replay` can re-run this kind's trials of `mode` (real-mode trials
    /// are measurements of the machine; some kinds have nothing to trace).
    fn replays(&self, _mode: Mode) -> bool {
        false
    }

    /// Re-run `trial` with a full trace; called only when [`Self::replays`] says so.
    fn replay(&self, trial: &Trial) -> Result<Replayed> {
        Err(LabError::Usage(format!("{} trials do not replay (trial {})", self.name(), trial.trial)))
    }
}

/// The row of a trial that could not run, from the point alone (a trial that panicked):
/// the point's columns as far as the point's fields name them, the trial, point and seed,
/// empty metrics, then `error` and the message.
pub fn error_row(kind: &dyn ExperimentKind, trial: &Trial, message: &str) -> Vec<String> {
    let fields = serde_json::to_value(trial.point).unwrap_or_default();
    let mut row: Vec<String> = kind
        .point_columns()
        .iter()
        .map(|column| match fields.get(column.as_str()) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        })
        .collect();
    row.extend([trial.trial.to_string(), trial.point_index.to_string(), trial.seed.to_string()]);
    with_error(kind, row, message)
}

/// `row` (a kind's row of a blank outcome, so its point columns are the kind's own
/// formatting) cut after `seed`, padded with empty metrics, then `error` and `message`.
pub fn with_error(kind: &dyn ExperimentKind, row: Vec<String>, message: &str) -> Vec<String> {
    let columns = kind.trial_columns().len();
    let mut row: Vec<String> = row.into_iter().take(kind.point_columns().len() + 3).collect();
    while row.len() < columns - 2 {
        row.push(String::new());
    }
    row.push("error".into());
    row.push(message.to_string());
    row
}
