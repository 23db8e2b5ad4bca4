//! Running an experiment: expand the sweep, run trials (in parallel with `--jobs`),
//! append each row as it finishes, then write the summary, figures and provenance.
//!
//! Trial `k` of a run always has the same point and the same seed — `k / trials`
//! indexes the point, and the seed is derived from the experiment seed and `k` — so
//! `qlab replay RUN_DIR --trial K` re-runs exactly that trial, whatever `--jobs` was.

use crate::attack::{self, AttackTrial};
use crate::config::{Experiment, Kind, Mode, Point, ProtocolName};
use crate::election::{self, ElectionTrial};
use crate::error::{LabError, Result};
use crate::protocols::LabProtocol;
use crate::results::{self, EXPERIMENT_TOML, Meta, TRIALS_CSV, TrialWriter};
use crate::throughput::{self, ThroughputTrial};
use indicatif::{ProgressBar, ProgressStyle};
use qlab_check::Verdict;
use qlab_net::netns::{Netem, NetnsHosts};
use qlab_paxos::Paxos;
use qlab_paxos::attacks::{MaliciousPaxos, PaxosAttack};
use qlab_pbft::Pbft;
use qlab_pbft::attacks::{MaliciousPbft, PbftAttack};
use qlab_raft::Raft;
use qlab_raft::attacks::{MaliciousRaft, RaftAttack};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Use this directory as the run directory instead of `results/<name>/<run-id>`.
    pub out: Option<PathBuf>,
    /// Override the experiment's seed.
    pub seed: Option<u64>,
    /// Worker threads (default: available cores).
    pub jobs: Option<usize>,
    /// Root for default run directories (default `results`).
    pub results_root: Option<PathBuf>,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// The command line, for provenance.
    pub command: Vec<String>,
    /// The `qlab` binary that real-mode clusters run as `qlab node` (default: this one).
    pub node_binary: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub trials: u64,
    pub unsafe_trials: u64,
    /// Trials that could not run (their rows say why).
    pub failed_trials: u64,
    /// Trials no checker found unsafe but some checker gave up on: neither ok nor unsafe.
    pub inconclusive_trials: u64,
    pub figures: Vec<PathBuf>,
    pub wall_seconds: f64,
}

/// SplitMix64: a well-mixed per-trial seed from the run seed and the trial number.
pub fn trial_seed(run_seed: u64, trial: u64) -> u64 {
    let mut z = run_seed ^ trial.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |e| LabError::Io { path: path.to_path_buf(), source: e }
}

fn election_row(point: &Point, trial: u64, point_index: usize, seed: u64, outcome: &ElectionTrial) -> Vec<String> {
    results::record(&crate::election::ElectionRow::new(point, trial, point_index, seed, outcome))
}

fn availability_row(
    point: &Point,
    trial: u64,
    point_index: usize,
    seed: u64,
    outcome: &crate::availability::AvailabilityTrial,
) -> Vec<String> {
    results::record(&crate::availability::AvailabilityRow::new(point, trial, point_index, seed, outcome))
}

fn disruption_row(
    experiment: &Experiment,
    point: &Point,
    trial: u64,
    point_index: usize,
    seed: u64,
    outcome: &crate::disruption::DisruptionTrial,
) -> Vec<String> {
    results::record(&crate::disruption::DisruptionRow::new(experiment, point, trial, point_index, seed, outcome))
}

fn throughput_row(point: &Point, trial: u64, point_index: usize, seed: u64, outcome: &ThroughputTrial) -> Vec<String> {
    results::record(&crate::throughput::ThroughputRow::new(point, trial, point_index, seed, outcome))
}

/// A trial that could not run (a real-mode cluster that failed to start, say): the
/// row records why, with empty metrics, and the run goes on.
fn error_row(columns: &[String], prefix: Vec<String>, message: &str) -> Vec<String> {
    let mut row = prefix;
    while row.len() < columns.len() - 2 {
        row.push(String::new());
    }
    row.push("error".into());
    row.push(message.to_string());
    row
}

/// The row of a trial that panicked: what of the point's columns the point can name,
/// the trial, point and seed, `error` and the message in the last two columns.
fn panic_row(
    experiment: &Experiment,
    point: &Point,
    trial: u64,
    point_index: usize,
    seed: u64,
    message: &str,
) -> Vec<String> {
    let kind = experiment.file.experiment.kind;
    let fields = serde_json::to_value(point).unwrap_or_default();
    let mut row: Vec<String> = crate::kinds::point_columns(kind)
        .iter()
        .map(|column| match fields.get(column.as_str()) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        })
        .collect();
    row.extend([trial.to_string(), point_index.to_string(), seed.to_string()]);
    error_row(&crate::kinds::trial_columns(kind), row, message)
}

/// Run trial `trial` and make its row and verdict (`Error` when it could not run at all).
fn run_one(
    experiment: &Experiment,
    point: &Point,
    trial: u64,
    point_index: usize,
    seed: u64,
    node_binary: &Path,
    run_dir: &Path,
) -> (Vec<String>, Verdict) {
    if let (Kind::Counterexample, Some(case)) = (experiment.file.experiment.kind, point.case) {
        let outcome = crate::counterexample::run_trial(case, seed, false);
        let replay = format!("qlab replay {} --trial {trial}", run_dir.display());
        let row = counterexample_row(case, trial, point_index, seed, &outcome, &replay);
        return (row, outcome.safety);
    }
    if experiment.file.experiment.kind == Kind::Reads {
        let outcome = crate::reads::run_trial(experiment, point, seed, false);
        let replay = format!("qlab replay {} --trial {trial}", run_dir.display());
        let row = reads_row(experiment, point, trial, point_index, seed, &outcome, &replay);
        return (row, outcome.safety);
    }
    if experiment.file.experiment.kind == Kind::Attack {
        let outcome = run_attack_trial(experiment, point, seed, false);
        let replay = format!("qlab replay {} --trial {trial}", run_dir.display());
        let window = (experiment.file.attack.from_ms, experiment.file.attack.until_ms);
        let row = attack_row(point, window, trial, point_index, seed, &outcome, &replay);
        return (row, outcome.safety);
    }
    match point.protocol {
        ProtocolName::Raft => run_one_of::<Raft>(experiment, point, trial, point_index, seed, node_binary),
        ProtocolName::Multipaxos => run_one_of::<Paxos>(experiment, point, trial, point_index, seed, node_binary),
        ProtocolName::Pbft => run_one_of::<Pbft>(experiment, point, trial, point_index, seed, node_binary),
    }
}

/// An attack trial of `point`: its protocol with replicas running the point's attack.
fn run_attack_trial(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> AttackTrial {
    let file = &experiment.file;
    let unknown = || -> String { format!("attack {:?} was validated against {}", point.attack, point.protocol.name()) };
    match point.protocol {
        ProtocolName::Raft => {
            let attack = RaftAttack::from_name(&point.attack.name, &point.attack.params())
                .unwrap_or_else(|| panic!("{}", unknown()));
            let config = attack::faulty_config(experiment, point, Raft::config(point, file), attack);
            attack::run_trial::<MaliciousRaft>(experiment, point, seed, config, trace)
        }
        ProtocolName::Multipaxos => {
            let attack = PaxosAttack::from_name(&point.attack.name, &point.attack.params())
                .unwrap_or_else(|| panic!("{}", unknown()));
            let config = attack::faulty_config(experiment, point, Paxos::config(point, file), attack);
            attack::run_trial::<MaliciousPaxos>(experiment, point, seed, config, trace)
        }
        ProtocolName::Pbft => {
            let attack = PbftAttack::from_name(&point.attack.name, &point.attack.params())
                .unwrap_or_else(|| panic!("{}", unknown()));
            let config = attack::faulty_config(experiment, point, Pbft::config(point, file), attack);
            attack::run_trial::<MaliciousPbft>(experiment, point, seed, config, trace)
        }
    }
}

fn attack_row(
    point: &Point,
    window: (f64, f64),
    trial: u64,
    point_index: usize,
    seed: u64,
    outcome: &AttackTrial,
    replay: &str,
) -> Vec<String> {
    results::record(&crate::attack::AttackRow::new(point, window, trial, point_index, seed, outcome, replay))
}

fn counterexample_row(
    case: crate::counterexample::Case,
    trial: u64,
    point_index: usize,
    seed: u64,
    outcome: &crate::counterexample::CaseTrial,
    replay: &str,
) -> Vec<String> {
    results::record(&crate::counterexample::CaseRow::new(case, trial, point_index, seed, outcome, replay))
}

fn reads_row(
    experiment: &Experiment,
    point: &Point,
    trial: u64,
    point_index: usize,
    seed: u64,
    outcome: &crate::reads::ReadsTrial,
    replay: &str,
) -> Vec<String> {
    results::record(&crate::reads::ReadsRow::new(experiment, point, trial, point_index, seed, outcome, replay))
}

fn run_one_of<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    trial: u64,
    point_index: usize,
    seed: u64,
    node_binary: &Path,
) -> (Vec<String>, Verdict) {
    let columns = crate::kinds::trial_columns(experiment.file.experiment.kind);
    let prefix = |row: Vec<String>| {
        row.into_iter().take(crate::kinds::point_columns(experiment.file.experiment.kind).len() + 3).collect()
    };
    match (experiment.file.experiment.kind, point.mode) {
        (Kind::Attack | Kind::Reads | Kind::Counterexample, _) => {
            unreachable!("run_one runs attack, reads and counterexample trials itself")
        }
        (Kind::Availability, _) => {
            let outcome = crate::availability::run_trial::<P>(experiment, point, seed);
            (availability_row(point, trial, point_index, seed, &outcome), outcome.safety.clone())
        }
        (Kind::Disruption, _) => {
            let outcome = crate::disruption::run_trial::<P>(experiment, point, seed, false);
            (disruption_row(experiment, point, trial, point_index, seed, &outcome), outcome.safety.clone())
        }
        (Kind::Election, Mode::Sim) => {
            let outcome = election::run_trial::<P>(experiment, point, seed, false);
            (election_row(point, trial, point_index, seed, &outcome), outcome.safety.clone())
        }
        (Kind::Election, Mode::Quic) => match election::run_trial_quic::<P>(experiment, point, seed, node_binary) {
            Ok(outcome) => (election_row(point, trial, point_index, seed, &outcome), outcome.safety.clone()),
            Err(e) => {
                let blank = ElectionTrial {
                    election_ms: f64::NAN,
                    unavailable_ms: None,
                    terms: 0,
                    censored: false,
                    safety: Verdict::Error,
                    violations: vec![],
                    messages: 0,
                    trace: vec![],
                };
                (
                    error_row(&columns, prefix(election_row(point, trial, point_index, seed, &blank)), &e.to_string()),
                    Verdict::Error,
                )
            }
        },
        (Kind::Throughput, Mode::Sim) => {
            let outcome = throughput::run_trial_sim::<P>(experiment, point, seed);
            (throughput_row(point, trial, point_index, seed, &outcome), outcome.safety.clone())
        }
        (Kind::Throughput, Mode::Quic) => match throughput::run_trial_quic::<P>(experiment, point, seed, node_binary) {
            Ok(outcome) => (throughput_row(point, trial, point_index, seed, &outcome), outcome.safety.clone()),
            Err(e) => {
                let blank = ThroughputTrial::blank();
                (
                    error_row(
                        &columns,
                        prefix(throughput_row(point, trial, point_index, seed, &blank)),
                        &e.to_string(),
                    ),
                    Verdict::Error,
                )
            }
        },
    }
}

fn new_run_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let experiment_dir = root.join(name);
    std::fs::create_dir_all(&experiment_dir).map_err(io_error(&experiment_dir))?;
    let stamp = results::utc_timestamp(SystemTime::now()).replace([':', '-'], "");
    for attempt in 0.. {
        let id = if attempt == 0 { stamp.clone() } else { format!("{stamp}-{attempt}") };
        let dir = experiment_dir.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::Io { path: dir, source: e }),
        }
    }
    unreachable!()
}

/// Point `results/<name>/latest` at the run directory (best effort on non-Unix).
fn update_latest(run_dir: &Path) -> Result<()> {
    let Some(parent) = run_dir.parent() else { return Ok(()) };
    let latest = parent.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    {
        let target = run_dir.file_name().expect("run dir has a name");
        std::os::unix::fs::symlink(target, &latest).map_err(io_error(&latest))?;
    }
    Ok(())
}

pub fn run_experiment(path: &Path, options: &RunOptions) -> Result<RunReport> {
    // Everything that can be wrong with the file is found before anything is written.
    let experiment = Experiment::load(path)?;
    let seed = options.seed.unwrap_or(experiment.file.experiment.seed);
    if options.jobs == Some(0) {
        return Err(LabError::Usage("--jobs must be at least 1".into()));
    }
    // Real-mode trials measure the machine: they run one at a time.
    let real_mode = experiment.file.experiment.mode.values.contains(&Mode::Quic);
    let jobs = if real_mode {
        1
    } else {
        options.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    };
    // A machine that cannot give what the file asks for is told so before any trial.
    let network = &experiment.file.network;
    if network.netem {
        let probe = NetnsHosts::create(1, Some(Netem { delay_ms: 1.0, jitter_ms: 0.0, loss: 0.0 }));
        probe.map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?;
    } else if network.netns {
        qlab_net::netns::available().map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?;
    }
    let node_binary = match &options.node_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| LabError::Usage(format!("locating the qlab binary: {e}")))?,
    };
    let default_root = PathBuf::from("results");
    let (run_dir, is_default_location) = match &options.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            (dir.clone(), false)
        }
        None => (new_run_dir(options.results_root.as_ref().unwrap_or(&default_root), experiment.name())?, true),
    };
    let header = format!(
        "# As run by qlab {} with seed = {seed}{}.\n",
        env!("CARGO_PKG_VERSION"),
        if options.seed.is_some() { " (from --seed)" } else { "" }
    );
    let toml_path = run_dir.join(EXPERIMENT_TOML);
    std::fs::write(&toml_path, header + &experiment.source).map_err(io_error(&toml_path))?;

    let points = experiment.points();
    let trials_per_point = experiment.trials();
    let total = points.len() as u64 * trials_per_point;
    let (git_commit, git_dirty) = results::git_state();
    let started = SystemTime::now();
    let mut meta = Meta {
        experiment: experiment.name().to_string(),
        kind: experiment.file.experiment.kind.name().into(),
        qlab_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit,
        git_dirty,
        seed,
        trials_planned: total,
        trials_done: 0,
        jobs,
        command: options.command.clone(),
        machine: results::Machine::current(),
        started_at: results::utc_timestamp(started),
        finished_at: None,
        wall_seconds: None,
    };
    results::write_meta(&run_dir, &meta)?;
    if is_default_location {
        update_latest(&run_dir)?;
    }

    let mut writer =
        TrialWriter::create(&run_dir.join(TRIALS_CSV), &crate::kinds::trial_columns(experiment.file.experiment.kind))?;
    let progress = if options.progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} trials, {elapsed} elapsed, eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    progress.set_message(experiment.name().to_string());
    let clock = Instant::now();
    let next_trial = AtomicU64::new(0);
    let mut unsafe_trials = 0u64;
    let mut failed_trials = 0u64;
    let mut inconclusive_trials = 0u64;
    let (sender, receiver) = mpsc::channel::<(u64, Vec<String>, Verdict)>();
    let mut write_error = None;
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(total.max(1) as usize) {
            let sender = sender.clone();
            let experiment = &experiment;
            let points = &points;
            let next_trial = &next_trial;
            let node_binary = &node_binary;
            let run_dir = &run_dir;
            scope.spawn(move || {
                loop {
                    let trial = next_trial.fetch_add(1, Ordering::Relaxed);
                    if trial >= total {
                        break;
                    }
                    let point_index = (trial / trials_per_point) as usize;
                    let trial_seed = trial_seed(seed, trial);
                    let point = &points[point_index];
                    // A panic in a trial (a protocol's assertion, a simulator storm) is a
                    // finding about that trial, not the end of the run: it becomes an
                    // error row naming the trial to replay.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_one(experiment, point, trial, point_index, trial_seed, node_binary, run_dir)
                    }));
                    let (row, verdict) = outcome.unwrap_or_else(|payload| {
                        let message = payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic without a message".into());
                        let message =
                            format!("trial panicked: {message} (qlab replay {} --trial {trial})", run_dir.display());
                        (panic_row(experiment, point, trial, point_index, trial_seed, &message), Verdict::Error)
                    });
                    if sender.send((trial, row, verdict)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (_, row, verdict) in receiver {
            unsafe_trials += verdict.is_unsafe() as u64;
            failed_trials += (verdict == Verdict::Error) as u64;
            inconclusive_trials += verdict.is_inconclusive() as u64;
            if write_error.is_none()
                && let Err(e) = writer.append(&row)
            {
                // Stop handing out trials; finished rows are already on disk.
                next_trial.store(total, Ordering::Relaxed);
                write_error = Some(e);
            }
            meta.trials_done += 1;
            progress.inc(1);
        }
    });
    progress.finish_and_clear();
    if let Some(e) = write_error {
        return Err(e);
    }
    let figures = match experiment.file.experiment.kind {
        Kind::Election => crate::plot::plot_election(&run_dir, experiment.name())?,
        Kind::Throughput => crate::plot::plot_throughput(&run_dir, experiment.name())?,
        Kind::Attack => crate::plot::plot_attack(&run_dir, experiment.name())?,
        Kind::Availability => crate::plot::plot_availability(&run_dir, experiment.name())?,
        Kind::Reads => crate::plot::plot_reads(&run_dir, experiment.name())?,
        Kind::Counterexample => crate::plot::plot_counterexamples(&run_dir)?,
        Kind::Disruption => crate::plot::plot_disruption(&run_dir, experiment.name())?,
    };
    let wall_seconds = clock.elapsed().as_secs_f64();
    meta.finished_at = Some(results::utc_timestamp(SystemTime::now()));
    meta.wall_seconds = Some((wall_seconds * 1000.0).round() / 1000.0);
    results::write_meta(&run_dir, &meta)?;
    Ok(RunReport { run_dir, trials: total, unsafe_trials, failed_trials, inconclusive_trials, figures, wall_seconds })
}

/// Redraw the figures (and summary) of a finished or interrupted run from its CSV.
/// Without `meta.json` (a CSV copied on its own), the kind is read off the columns
/// and the experiment is named after the directory.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let (kind, name) = match results::read_meta(run_dir) {
        Ok(meta) => (meta.kind, meta.experiment),
        Err(_) => {
            let table = results::Table::read(&run_dir.join(TRIALS_CSV))?;
            let kind = crate::kinds::of_point_columns(&table.point_columns()).map_or("unknown", |k| k.name());
            let name = run_dir.file_name().map_or("run".into(), |n| n.to_string_lossy().into_owned());
            (kind.to_string(), name)
        }
    };
    match kind.as_str() {
        "election" => crate::plot::plot_election(run_dir, &name),
        "throughput" => crate::plot::plot_throughput(run_dir, &name),
        "attack" => crate::plot::plot_attack(run_dir, &name),
        "availability" => crate::plot::plot_availability(run_dir, &name),
        "reads" => crate::plot::plot_reads(run_dir, &name),
        "counterexample" => crate::plot::plot_counterexamples(run_dir),
        "disruption" => crate::plot::plot_disruption(run_dir, &name),
        other => Err(LabError::Usage(format!("{}: unknown experiment kind {other:?}", run_dir.display()))),
    }
}

/// What `qlab replay` prints and checks.
pub struct Replay {
    pub trial: u64,
    pub seed: u64,
    pub point: Point,
    pub outcome: ReplayOutcome,
    /// What `trials.csv` recorded for this trial (election_ms, or an attack trial's
    /// safety verdict), to compare with the replay.
    pub recorded: Option<String>,
}

/// A replayed trial, by kind.
pub enum ReplayOutcome {
    Election(ElectionTrial),
    Attack(AttackTrial),
    Reads(Box<crate::reads::ReadsTrial>),
    Disruption(Box<crate::disruption::DisruptionTrial>),
    /// A case's run and, for a chaos case that failed, its shrunk counterexample.
    Counterexample(Box<crate::counterexample::CaseTrial>, Option<Box<crate::counterexample::Shrunk>>),
}

impl ReplayOutcome {
    pub fn trace(&self) -> &[String] {
        match self {
            ReplayOutcome::Election(o) => &o.trace,
            ReplayOutcome::Attack(o) => &o.trace,
            ReplayOutcome::Reads(o) => &o.outcome.trace,
            ReplayOutcome::Disruption(o) => &o.trace,
            // The shrunk run's trace when there is one: the short story of the failure.
            ReplayOutcome::Counterexample(o, shrunk) => shrunk.as_ref().map_or(&o.trace, |s| &s.trial.trace),
        }
    }
}

/// Re-run trial `trial` of a run directory with a full event trace.
pub fn replay(run_dir: &Path, trial: u64) -> Result<Replay> {
    let meta = results::read_meta(run_dir)?;
    let experiment = Experiment::load(&run_dir.join(EXPERIMENT_TOML))?;
    let points = experiment.points();
    let total = points.len() as u64 * experiment.trials();
    if trial >= total {
        return Err(LabError::Usage(format!(
            "{} has trials 0..{} (got --trial {trial})",
            run_dir.display(),
            total.saturating_sub(1)
        )));
    }
    let point = points[(trial / experiment.trials()) as usize].clone();
    let seed = trial_seed(meta.seed, trial);
    let recorded = |column: &str| {
        results::Table::read(&run_dir.join(TRIALS_CSV)).ok().and_then(|table| {
            let row = table.rows.iter().find(|r| table.get(r, "trial") == Some(&trial.to_string()))?;
            table.get(row, column).map(str::to_string)
        })
    };
    if let (Kind::Counterexample, Some(case)) = (experiment.file.experiment.kind, point.case) {
        let outcome = crate::counterexample::run_trial(case, seed, true);
        let shrunk = if outcome.showed { crate::counterexample::shrink_trial(case, seed).map(Box::new) } else { None };
        return Ok(Replay {
            trial,
            seed,
            point,
            outcome: ReplayOutcome::Counterexample(Box::new(outcome), shrunk),
            recorded: recorded("showed"),
        });
    }
    if experiment.file.experiment.kind == Kind::Reads {
        let outcome = crate::reads::run_trial(&experiment, &point, seed, true);
        return Ok(Replay {
            trial,
            seed,
            point,
            outcome: ReplayOutcome::Reads(Box::new(outcome)),
            recorded: recorded("safety"),
        });
    }
    if experiment.file.experiment.kind == Kind::Disruption {
        let outcome = match point.protocol {
            ProtocolName::Raft => crate::disruption::run_trial::<Raft>(&experiment, &point, seed, true),
            ProtocolName::Multipaxos => crate::disruption::run_trial::<Paxos>(&experiment, &point, seed, true),
            ProtocolName::Pbft => crate::disruption::run_trial::<Pbft>(&experiment, &point, seed, true),
        };
        return Ok(Replay {
            trial,
            seed,
            point,
            outcome: ReplayOutcome::Disruption(Box::new(outcome)),
            recorded: recorded("unavailable_ms"),
        });
    }
    if experiment.file.experiment.kind == Kind::Attack {
        let outcome = run_attack_trial(&experiment, &point, seed, true);
        return Ok(Replay {
            trial,
            seed,
            point,
            outcome: ReplayOutcome::Attack(outcome),
            recorded: recorded("safety"),
        });
    }
    if experiment.file.experiment.kind != Kind::Election || point.mode != Mode::Sim {
        return Err(LabError::Usage(format!(
            "trial {trial} is a {} trial in {} mode; qlab replay re-runs simulated election, attack, reads, counterexample and disruption trials (real-mode trials are measurements and do not replay)",
            experiment.file.experiment.kind.name(),
            point.mode.name()
        )));
    }
    let outcome = match point.protocol {
        ProtocolName::Raft => election::run_trial::<Raft>(&experiment, &point, seed, true),
        ProtocolName::Multipaxos => election::run_trial::<Paxos>(&experiment, &point, seed, true),
        ProtocolName::Pbft => election::run_trial::<Pbft>(&experiment, &point, seed, true),
    };
    Ok(Replay { trial, seed, point, outcome: ReplayOutcome::Election(outcome), recorded: recorded("election_ms") })
}

/// An experiment file and the question it answers (its leading comment).
pub struct Listed {
    pub path: PathBuf,
    pub question: String,
}

pub fn list_experiments(dir: &Path) -> Result<Vec<Listed>> {
    let mut listed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let question = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim())
            .collect::<Vec<_>>()
            .join(" ");
        listed.push(Listed { path, question });
    }
    Ok(listed)
}
