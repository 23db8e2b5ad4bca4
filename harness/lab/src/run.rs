//! Running an experiment: expand the sweep, run trials (in parallel with `--jobs`),
//! append each row as it finishes, then write the summary, figures and provenance.
//!
//! Trial `k` of a run always has the same point and the same seed — `k / trials`
//! indexes the point, and the seed is derived from the experiment seed and `k` — so
//! `qlab replay RUN_DIR --trial K` re-runs exactly that trial, whatever `--jobs` was.

use crate::config::{Mode, Point};
use crate::error::{LabError, Result};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::registry::Registry;
use crate::results::{self, EXPERIMENT_TOML, Meta, TRIALS_CSV, TrialWriter};
use indicatif::{ProgressBar, ProgressStyle};
use qlab_check::Verdict;
use qlab_net::netns::{Netem, NetnsHosts};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Use this directory as the run directory instead of `results/<name>/<run-id>`.
    /// It must be missing or empty unless `force` is set.
    pub out: Option<PathBuf>,
    /// Replace the run that `out` holds: everything in it is removed first, so two
    /// runs' files never mix. Only a directory that holds a run (a `meta.json` or a
    /// `trials.csv`) is ever emptied this way.
    pub force: bool,
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
    /// The experiment kinds this run may use (default: the lab's own).
    pub kinds: Registry,
}

#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_dir: PathBuf,
    /// Trials that ran and have a row (fewer than planned when interrupted).
    pub trials: u64,
    pub trials_planned: u64,
    /// Set when the run did not finish every trial: what its results cover.
    pub partial: Option<String>,
    pub unsafe_trials: u64,
    /// Of the unsafe trials, those `qlab replay` can re-run (simulated ones).
    pub unsafe_trials_replayable: u64,
    /// Trials that could not run (their rows say why).
    pub failed_trials: u64,
    /// Trials no checker found unsafe but some checker gave up on: neither ok nor unsafe.
    pub inconclusive_trials: u64,
    pub figures: Vec<PathBuf>,
    pub wall_seconds: f64,
}

/// Set when the user asked the run to stop (the CLI's Ctrl-C / SIGTERM handler): no
/// trial starts after it, the trials in progress finish and are written, and the run
/// ends as an interrupted one (see [`Meta::partial`](crate::results::Meta::partial)).
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What the CLI does on Ctrl-C, SIGTERM or SIGHUP: the first asks the run to stop
/// ([`INTERRUPTED`]) and returns true; a second means "now": every local cluster's
/// directory (keys, logs, WALs) of this process is removed, and it returns false for the
/// caller to exit at once. `meta.json`'s count is at most a second old then.
pub fn on_stop_signal() -> bool {
    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
        return true;
    }
    qlab_net::cluster::remove_own_cluster_dirs();
    false
}

/// How often `meta.json` is rewritten with the count of finished trials while a run
/// goes on, so a run killed outright still says how far it got.
const META_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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

/// Make `dir` ready to hold a new run without touching anything of another run's by
/// accident: a missing or empty directory is used as it is; one that holds a run is
/// emptied only with `force`; one that holds anything else is never used.
fn claim_out_dir(dir: &Path, force: bool) -> Result<()> {
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(LabError::Io { path: dir.to_path_buf(), source: e }),
    };
    if entries.is_empty() {
        return std::fs::create_dir_all(dir).map_err(io_error(dir));
    }
    let holds_run = dir.join(results::META_JSON).exists() || dir.join(TRIALS_CSV).exists();
    if !holds_run {
        let mut names: Vec<String> =
            entries.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
        names.sort();
        let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        return Err(LabError::Usage(format!(
            "--out {}: the directory is not empty and holds no run ({shown}{}); qlab writes a run only into a \
             missing or empty directory, or with --force over another run",
            dir.display(),
            if names.len() > 5 { ", ..." } else { "" }
        )));
    }
    if !force {
        let what = match results::read_meta(dir) {
            Ok(meta) => format!(
                "a run of `{}` ({} kind, started {}, {} of {} trials)",
                meta.experiment, meta.kind, meta.started_at, meta.trials_done, meta.trials_planned
            ),
            Err(_) => "a run's trials.csv".to_string(),
        };
        return Err(LabError::Usage(format!(
            "--out {}: the directory already holds {what}; pass --force to replace it (everything in the \
             directory is removed first) or choose another directory",
            dir.display()
        )));
    }
    for entry in entries {
        let removed = if entry.is_dir() && !entry.is_symlink() {
            std::fs::remove_dir_all(&entry)
        } else {
            std::fs::remove_file(&entry)
        };
        removed.map_err(io_error(&entry))?;
    }
    Ok(())
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
    let (experiment, kind) = options.kinds.load(path)?;
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
    if real_mode {
        // A harness killed before its clusters' destructors ran left their keys behind.
        for dir in qlab_net::cluster::remove_stale_cluster_dirs() {
            eprintln!("removed {}, left by a run that was killed", dir.display());
        }
    }
    let node_binary = match &options.node_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| LabError::Usage(format!("locating the qlab binary: {e}")))?,
    };
    let default_root = PathBuf::from("results");
    let (run_dir, is_default_location) = match &options.out {
        Some(dir) => {
            claim_out_dir(dir, options.force)?;
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

    let points = kind.points(&experiment);
    let trials_per_point = experiment.trials();
    let total = points.len() as u64 * trials_per_point;
    let (git_commit, git_dirty) = results::git_state();
    let started = SystemTime::now();
    let mut meta = Meta {
        experiment: experiment.name().to_string(),
        kind: kind.name().into(),
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
        interrupted: false,
    };
    results::write_meta(&run_dir, &meta)?;
    if is_default_location {
        update_latest(&run_dir)?;
    }

    let mut writer = TrialWriter::create(&run_dir.join(TRIALS_CSV), &kind.trial_columns())?;
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
    let mut unsafe_trials_replayable = 0u64;
    let mut failed_trials = 0u64;
    let mut inconclusive_trials = 0u64;
    let (sender, receiver) = mpsc::channel::<(u64, Vec<String>, Verdict, bool)>();
    let mut write_error = None;
    let mut meta_written = Instant::now();
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
                    if INTERRUPTED.load(Ordering::Relaxed) {
                        break;
                    }
                    let trial = next_trial.fetch_add(1, Ordering::Relaxed);
                    if trial >= total {
                        break;
                    }
                    let point_index = (trial / trials_per_point) as usize;
                    let trial_seed = trial_seed(seed, trial);
                    let point = &points[point_index];
                    let trial = Trial { experiment, point, trial, point_index, seed: trial_seed, node_binary, run_dir };
                    // A panic in a trial (a protocol's assertion, a simulator storm) is a
                    // finding about that trial, not the end of the run: it becomes an
                    // error row naming the trial to replay.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run_trial(&trial)));
                    let TrialRecord { row, verdict } = outcome.unwrap_or_else(|payload| {
                        let message = payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic without a message".into());
                        let message = format!("trial panicked: {message} ({})", trial.replay_command());
                        TrialRecord { row: crate::kind::error_row(kind, &trial, &message), verdict: Verdict::Error }
                    });
                    let replays = kind.replays(point.mode);
                    if sender.send((trial.trial, row, verdict, replays)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (_, row, verdict, replays) in receiver {
            unsafe_trials += verdict.is_unsafe() as u64;
            unsafe_trials_replayable += (verdict.is_unsafe() && replays) as u64;
            failed_trials += (verdict == Verdict::Error) as u64;
            inconclusive_trials += verdict.is_inconclusive() as u64;
            if write_error.is_none()
                && let Err(e) = writer.append(&row)
            {
                // Stop handing out trials; finished rows are already on disk.
                next_trial.store(total, Ordering::Relaxed);
                write_error = Some(e);
            }
            if write_error.is_none() {
                meta.trials_done += 1;
            }
            progress.inc(1);
            if meta_written.elapsed() >= META_EVERY {
                // Best effort: the rows are what matters, and they are on disk.
                let _ = results::write_meta(&run_dir, &meta);
                meta_written = Instant::now();
            }
        }
    });
    progress.finish_and_clear();
    let interrupted = INTERRUPTED.load(Ordering::Relaxed) && meta.trials_done < total;
    if let Some(e) = write_error {
        // What was written stays, and meta.json says how much of it there is.
        meta.interrupted = true;
        let _ = results::write_meta(&run_dir, &meta);
        return Err(e.into());
    }
    // An interrupted run still gets the summary and figures of what it finished.
    let figures = if meta.trials_done > 0 { kind.summarize(&run_dir, experiment.name())? } else { Vec::new() };
    let wall_seconds = clock.elapsed().as_secs_f64();
    meta.finished_at = Some(results::utc_timestamp(SystemTime::now()));
    meta.wall_seconds = Some((wall_seconds * 1000.0).round() / 1000.0);
    meta.interrupted = interrupted;
    results::write_meta(&run_dir, &meta)?;
    Ok(RunReport {
        run_dir,
        trials: meta.trials_done,
        trials_planned: total,
        unsafe_trials,
        unsafe_trials_replayable,
        failed_trials,
        inconclusive_trials,
        figures,
        wall_seconds,
        partial: meta.partial(),
    })
}

/// Redraw the figures (and summary) of a finished or interrupted run from its CSV.
/// Without `meta.json` (a CSV copied on its own), the kind is read off the columns
/// and the experiment is named after the directory.
pub fn plot_run(run_dir: &Path, kinds: &Registry) -> Result<Vec<PathBuf>> {
    let (kind, name) = run_kind(run_dir, kinds)?;
    let trials = run_dir.join(TRIALS_CSV);
    if results::Table::read(&trials)?.rows.is_empty() {
        return Err(LabError::Usage(format!(
            "{}: no trial rows (only the header): nothing to summarize or plot; summary.csv is left as it was",
            trials.display()
        )));
    }
    kind.summarize(run_dir, &name)
}

/// What a reader of a run's results must be told beside them: that the run is partial
/// (interrupted, or killed before it finished), or that its last row was cut short.
pub fn run_notes(run_dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    if let Ok(meta) = results::read_meta(run_dir)
        && let Some(partial) = meta.partial()
    {
        notes.push(partial);
    }
    if let Ok(table) = results::Table::read(&run_dir.join(TRIALS_CSV))
        && table.torn_last_row_bytes > 0
    {
        notes.push(format!(
            "the last row of trials.csv was cut short ({} bytes, a writer killed mid-row) and is left out",
            table.torn_last_row_bytes
        ));
    }
    notes
}

/// The kind of a run directory and its experiment's name: from `meta.json`, or without
/// it from the columns of `trials.csv` and the directory's name.
pub fn run_kind(run_dir: &Path, kinds: &Registry) -> Result<(&'static dyn ExperimentKind, String)> {
    match results::read_meta(run_dir) {
        Ok(meta) => Ok((kinds.kind(&meta.kind, run_dir)?, meta.experiment)),
        Err(_) => {
            let table = results::Table::read(&run_dir.join(TRIALS_CSV))?;
            let kind = kinds.of_point_columns(&table.point_columns()).ok_or_else(|| {
                LabError::Usage(format!(
                    "{}: no meta.json, and the columns of trials.csv are those of no experiment kind ({})",
                    run_dir.display(),
                    kinds.names().join(", ")
                ))
            })?;
            let name = run_dir.file_name().map_or("run".into(), |n| n.to_string_lossy().into_owned());
            Ok((kind, name))
        }
    }
}

/// What `qlab replay` prints and checks.
pub struct Replay {
    pub trial: u64,
    pub seed: u64,
    pub point: Point,
    pub outcome: Replayed,
    /// What `trials.csv` recorded for this trial in the kind's replay column (election_ms,
    /// or an attack trial's safety verdict), to compare with the replay.
    pub recorded: Option<String>,
}

/// Re-run trial `trial` of a run directory with a full event trace.
pub fn replay(run_dir: &Path, trial: u64, kinds: &Registry) -> Result<Replay> {
    let meta = results::read_meta(run_dir)?;
    let (experiment, kind) = kinds.load(&run_dir.join(EXPERIMENT_TOML))?;
    let points = kind.points(&experiment);
    let total = points.len() as u64 * experiment.trials();
    if trial >= total {
        return Err(LabError::Usage(format!(
            "{} has trials 0..{} (got --trial {trial})",
            run_dir.display(),
            total.saturating_sub(1)
        )));
    }
    let point_index = (trial / experiment.trials()) as usize;
    let point = points[point_index].clone();
    let seed = trial_seed(meta.seed, trial);
    if !kind.replays(point.mode) {
        let replayable: Vec<&str> =
            kinds.names().into_iter().filter(|k| kinds.get(k).is_some_and(|k| k.replays(Mode::Sim))).collect();
        let list = match replayable.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => "no".into(),
        };
        return Err(LabError::Usage(format!(
            "trial {trial} is a {} trial in {} mode; qlab replay re-runs simulated {list} trials (real-mode trials \
             are measurements and do not replay)",
            kind.name(),
            point.mode.name()
        )));
    }
    let node_binary = PathBuf::new();
    let outcome = kind.replay(&Trial {
        experiment: &experiment,
        point: &point,
        trial,
        point_index,
        seed,
        node_binary: &node_binary,
        run_dir,
    })?;
    let recorded = results::Table::read(&run_dir.join(TRIALS_CSV)).ok().and_then(|table| {
        let row = table.rows.iter().find(|r| table.get(r, "trial") == Some(&trial.to_string()))?;
        table.get(row, outcome.recorded_column).map(str::to_string)
    });
    Ok(Replay { trial, seed, point, outcome, recorded })
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
