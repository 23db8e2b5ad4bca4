//! A kind the lab does not have, added the way `docs/extending.md` says: this module
//! and one registry line (`Registry::builtin().with(&FirstLeaderKind)`), nothing in
//! `run`, `results`, `plot`, `compare` or the CLI. It runs end to end: trials, typed
//! rows, summary and figure, `plot_run` redrawing from the CSV, `replay` re-running a
//! trial to the value recorded, `compare` of the run against itself.
//!
//! `first-leader`: how long after start-up does the first leader appear that a majority
//! of the cluster follows? (Fault-free, so every protocol's answer is its election
//! timeout draw plus a round trip; PBFT's primary of view 0 is known at once.)

use qlab_check::{Verdict, check_observations};
use qlab_core::{Event, NodeId, majority, nanos_to_ms};
use qlab_lab::compare::Aggregate;
use qlab_lab::config::{Experiment, Point, Sweep, expand};
use qlab_lab::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use qlab_lab::plot::{CdfFigure, Series, write_cdf};
use qlab_lab::protocols::LabProtocol;
use qlab_lab::registry::Registry;
use qlab_lab::results::{Table, cell, fmt_metric, header_of, quantile};
use qlab_lab::run::{RunOptions, plot_run, replay, run_experiment};
use std::path::{Path, PathBuf};

/// One row of a first-leader `trials.csv`.
#[derive(Debug, Default, serde::Serialize)]
struct FirstLeaderRow {
    protocol: &'static str,
    nodes: u32,
    limit_ms: u64,
    trial: u64,
    point: usize,
    seed: u64,
    #[serde(serialize_with = "cell::metric")]
    first_leader_ms: f64,
    safety: Verdict,
    violations: String,
}

struct FirstLeader {
    first_leader_ms: f64,
    safety: Verdict,
    violations: Vec<String>,
    trace: Vec<String>,
}

/// The toy kind's own section, `[first-leader]`: the kind's type, read with
/// `Experiment::kind_sections` and checked by the kind, no line in `config.rs`.
#[derive(Debug, Default, serde::Deserialize)]
struct FirstLeaderFile {
    #[serde(default, rename = "first-leader")]
    first_leader: FirstLeaderSection,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FirstLeaderSection {
    /// Sweep: give up (and record NaN) after this long without a leader.
    #[serde(default = "default_limit_ms")]
    limit_ms: Sweep<u64>,
}

impl Default for FirstLeaderSection {
    fn default() -> Self {
        FirstLeaderSection { limit_ms: default_limit_ms() }
    }
}

fn default_limit_ms() -> Sweep<u64> {
    Sweep::one(LIMIT_MS)
}

const LIMIT_MS: u64 = 10_000;

/// The toy kind's own axis, beside the common ones: no field of `Point`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
struct FirstLeaderAxes {
    limit_ms: u64,
}

fn limit_ms(trial: &Trial) -> u64 {
    trial.point.axes::<FirstLeaderAxes>().expect("set by points").limit_ms
}

fn first_leader<P: LabProtocol>(trial: &Trial, trace: bool) -> FirstLeader {
    let (point, file) = (trial.point, &trial.experiment.file);
    let mut sim: qlab_sim::Sim<P, P::Client> = point.sim(&file.network, P::config(point, file), trial.seed);
    if trace {
        sim.enable_trace();
    }
    let mut followers: Vec<Option<(u64, NodeId)>> = vec![None; point.nodes as usize];
    let mut found = f64::NAN;
    for ms in 1..=limit_ms(trial) {
        sim.run_to(qlab_core::ms(ms));
        for observation in &sim.observations {
            if let Event::LeaderKnown { epoch, leader } = observation.event {
                followers[observation.node.0 as usize] = Some((epoch, leader));
            }
        }
        let backed = followers.iter().flatten().any(|(epoch, leader)| {
            followers.iter().filter(|f| **f == Some((*epoch, *leader))).count() >= majority(point.nodes) as usize
        });
        if backed {
            found = nanos_to_ms(sim.now());
            break;
        }
    }
    let violations = check_observations(&sim.observations);
    FirstLeader {
        first_leader_ms: found,
        safety: Verdict::of(&violations, false),
        violations: violations.iter().map(ToString::to_string).collect(),
        trace: sim.trace().to_vec(),
    }
}

fn run_point(trial: &Trial, trace: bool) -> FirstLeader {
    qlab_lab::with_protocol!(trial.point.protocol, P => first_leader::<P>(trial, trace))
}

struct FirstLeaderKind;

impl ExperimentKind for FirstLeaderKind {
    fn name(&self) -> &'static str {
        "first-leader"
    }
    fn sections(&self) -> &'static [&'static str] {
        &["first-leader"]
    }
    fn validate(&self, experiment: &Experiment) -> qlab_lab::Result<()> {
        experiment.validate_cluster_run(&self.cluster_rules())?;
        let file = experiment.kind_sections::<FirstLeaderFile>()?;
        let limit = &file.first_leader.limit_ms;
        if limit.values.contains(&0) {
            return Err(experiment.error_at(&limit.span, "limit_ms must be at least 1".into()));
        }
        Ok(())
    }
    fn points(&self, experiment: &Experiment) -> Vec<Point> {
        let Ok(file) = experiment.kind_sections::<FirstLeaderFile>() else { return vec![] };
        expand(experiment.points(), &file.first_leader.limit_ms.values, |p, v| {
            *p = p.clone().with_axes(FirstLeaderAxes { limit_ms: *v })
        })
    }
    fn trial_columns(&self) -> Vec<String> {
        header_of::<FirstLeaderRow>()
    }
    fn run_trial(&self, trial: &Trial) -> TrialRecord {
        let outcome = run_point(trial, false);
        let row = FirstLeaderRow {
            protocol: trial.point.protocol.name(),
            nodes: trial.point.nodes,
            limit_ms: limit_ms(trial),
            trial: trial.trial,
            point: trial.point_index,
            seed: trial.seed,
            first_leader_ms: outcome.first_leader_ms,
            safety: outcome.safety.clone(),
            violations: qlab_lab::results::first_violations(&outcome.violations),
        };
        TrialRecord::new(&row, outcome.safety)
    }
    fn summarize(&self, run_dir: &Path, experiment_name: &str) -> qlab_lab::Result<Vec<PathBuf>> {
        let table = Table::read(&run_dir.join("trials.csv"))?;
        let mut summary = csv::Writer::from_path(run_dir.join("summary.csv")).unwrap();
        summary.write_record(["protocol", "nodes", "trials", "first_leader_ms_p50"]).unwrap();
        let mut series = Vec::new();
        for (key, rows) in table.group_by(&["protocol", "nodes"]) {
            let mut values: Vec<f64> = rows.iter().filter_map(|r| table.number(r, "first_leader_ms")).collect();
            values.sort_by(f64::total_cmp);
            let trials = rows.len().to_string();
            summary.write_record([&key[0], &key[1], &trials, &fmt_metric(quantile(&values, 0.5))]).unwrap();
            series.push(Series { label: format!("{} n={}", key[0], key[1]), values });
        }
        summary.flush().unwrap();
        let figure = CdfFigure {
            title: format!("{experiment_name}: time to the first majority-backed leader"),
            x_label: "first leader (ms)".into(),
            log_x: false,
            series,
        };
        Ok(write_cdf(run_dir, "first_leader_cdf", &figure)?)
    }
    fn compare_metrics(&self) -> &'static [(&'static str, Aggregate)] {
        &[("first_leader_ms", Aggregate::Median)]
    }
    fn replays(&self, _mode: qlab_lab::config::Mode) -> bool {
        true
    }
    fn replay(&self, trial: &Trial) -> qlab_lab::Result<Replayed> {
        let outcome = run_point(trial, true);
        Ok(Replayed {
            story: vec![format!("first leader after {:.3} ms", outcome.first_leader_ms)],
            recorded_column: "first_leader_ms",
            replayed: fmt_metric(outcome.first_leader_ms),
            violations: outcome.violations,
            trace: outcome.trace,
        })
    }
}

const FILE: &str = r#"
[experiment]
name = "first-leader"
kind = "first-leader"
trials = 4
seed = 7

[cluster]
protocol = ["raft", "multipaxos", "pbft"]
nodes = [4, 7]

[first-leader]
limit_ms = [5000, 10000]
"#;

fn kinds() -> Registry {
    Registry::builtin().with(&FirstLeaderKind)
}

#[test]
fn a_kind_added_by_one_module_and_one_registry_line_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("first-leader.toml");
    std::fs::write(&path, FILE).unwrap();
    let out = dir.path().join("run");
    let options = RunOptions { out: Some(out.clone()), jobs: Some(2), kinds: kinds(), ..RunOptions::default() };
    let report = run_experiment(&path, &options).unwrap();
    assert_eq!((report.trials, report.unsafe_trials, report.failed_trials), (48, 0, 0));

    let trials = Table::read(&out.join("trials.csv")).unwrap();
    assert_eq!(trials.columns, header_of::<FirstLeaderRow>(), "the row type is the header");
    assert_eq!(trials.rows.len(), 48);
    let limits: std::collections::BTreeSet<&str> =
        trials.rows.iter().filter_map(|r| trials.get(r, "limit_ms")).collect();
    assert_eq!(limits.into_iter().collect::<Vec<_>>(), ["10000", "5000"], "the kind's own axis is a point column");
    for row in &trials.rows {
        let ms = trials.number(row, "first_leader_ms").expect("every fault-free trial finds a leader");
        assert!(ms > 0.0 && ms < LIMIT_MS as f64, "{row:?}");
        assert_eq!(trials.get(row, "safety"), Some("ok"), "{row:?}");
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 1 + 6, "{summary}");
    assert!(report.figures.iter().any(|f| f.ends_with("figures/first_leader_cdf.svg")), "{:?}", report.figures);
    let meta = qlab_lab::results::read_meta(&out).unwrap();
    assert_eq!(meta.kind, "first-leader");

    // Redrawn from the CSV alone: the same summary.
    std::fs::remove_file(out.join("summary.csv")).unwrap();
    plot_run(&out, &kinds()).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("summary.csv")).unwrap(), summary);
    // Without meta.json the kind is known by its columns.
    std::fs::rename(out.join("meta.json"), dir.path().join("meta.json")).unwrap();
    plot_run(&out, &kinds()).unwrap();
    std::fs::rename(dir.path().join("meta.json"), out.join("meta.json")).unwrap();

    // Replay re-runs trial 13 to the value its row recorded, with a trace.
    let replayed = replay(&out, 13, &kinds()).unwrap();
    assert_eq!(replayed.recorded.as_deref(), Some(replayed.outcome.replayed.as_str()));
    assert!(!replayed.outcome.trace.is_empty());

    // Compare against itself: every ratio is exactly 1.
    let compared = dir.path().join("compare");
    let metrics = kinds();
    let comparison = qlab_lab::compare::compare(&out, &out, &compared, &|n| metrics.compare_metrics(n)).unwrap();
    assert_eq!(comparison.rows.len(), 12, "one row per point");
    let ratio = comparison.columns.iter().position(|c| c == "ratio_b_over_a").unwrap();
    assert!(comparison.rows.iter().all(|r| r[ratio] == "1.000"), "{:?}", comparison.rows);
}

/// The lab's own registry does not know the toy kind: the file is refused with where
/// and what the allowed kinds are, before anything is written.
#[test]
fn a_kind_the_registry_lacks_is_refused_with_the_kinds_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("first-leader.toml");
    std::fs::write(&path, FILE).unwrap();
    let out = dir.path().join("run");
    let options = RunOptions { out: Some(out.clone()), ..RunOptions::default() };
    let error = run_experiment(&path, &options).expect_err("unknown kind").to_string();
    assert!(error.contains("first-leader.toml:4:8"), "{error}");
    assert!(error.contains("unknown experiment kind `first-leader`"), "{error}");
    assert!(error.contains("`election`") && error.contains("`disruption`"), "{error}");
    assert!(!out.exists(), "nothing written");
}

/// The kind's section is checked by the kind, with line and column; a typo in it and a
/// section no kind of this file owns are refused the same way.
#[test]
fn the_toy_kinds_own_section_is_read_and_checked_by_the_kind() {
    let parse = |text: &str| {
        kinds().parse(Path::new("first-leader.toml"), text.to_string()).map(|_| ()).unwrap_err().to_string()
    };
    let error = parse(&FILE.replace("limit_ms = [5000, 10000]", "limit_ms = [5000, 0]"));
    assert!(error.starts_with("first-leader.toml:13:12: limit_ms must be at least 1"), "{error}");
    let error = parse(&FILE.replace("limit_ms = [5000, 10000]", "limit = 10"));
    assert!(error.starts_with("first-leader.toml:13:1:") && error.contains("unknown field `limit`"), "{error}");
    let error = parse(&FILE.replace("[first-leader]", "[first-leaders]"));
    assert!(error.contains("unknown section [first-leaders]") && error.contains("[first-leader]"), "{error}");
    let (experiment, _) =
        kinds().parse(Path::new("f.toml"), FILE.replace("limit_ms = [5000, 10000]", "limit_ms = 77")).unwrap();
    let file = experiment.kind_sections::<FirstLeaderFile>().unwrap();
    assert_eq!(file.first_leader.limit_ms.values, [77]);
}
