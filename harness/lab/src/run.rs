//! Running an experiment: expand the sweep, run trials (in parallel with `--jobs`),
//! append each row as it finishes, then write the summary, figures and provenance.
//!
//! Trial `k` of a run always has the same point and the same seed — `k / trials`
//! indexes the point, and the seed is derived from the experiment seed and `k` — so
//! `qlab replay RUN_DIR --trial K` re-runs exactly that trial, whatever `--jobs` was.

use crate::config::{Experiment, Mode, Point};
use crate::error::{LabError, Result};
use crate::kind::{ExperimentKind, Replayed, Trial, TrialRecord};
use crate::registry::Registry;
use crate::results::{self, EXPERIMENT_TOML, Meta, Shard, TRIALS_CSV, TrialWriter};
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
    /// Run only this shard's trials (`--shard K/N`).
    pub shard: Option<Shard>,
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

/// Real-mode trials measure the machine: they run one at a time.
fn jobs_for(experiment: &Experiment, options: &RunOptions) -> Result<usize> {
    if options.jobs == Some(0) {
        return Err(LabError::Usage("--jobs must be at least 1".into()));
    }
    let real_mode = experiment.file.experiment.mode.values.contains(&Mode::Quic);
    Ok(if real_mode {
        1
    } else {
        options.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
    })
}

/// A machine that cannot give what the file asks for is told so before any trial.
fn check_machine(path: &Path, experiment: &Experiment) -> Result<()> {
    let network = &experiment.file.network;
    if network.netem {
        let probe = NetnsHosts::create(1, Some(Netem { delay_ms: 1.0, jitter_ms: 0.0, loss: 0.0 }));
        probe.map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?;
    } else if network.netns {
        qlab_net::netns::available().map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?;
    }
    if experiment.file.experiment.mode.values.contains(&Mode::Quic) {
        // A harness killed before its clusters' destructors ran left their keys behind.
        for dir in qlab_net::cluster::remove_stale_cluster_dirs() {
            eprintln!("removed {}, left by a run that was killed", dir.display());
        }
    }
    Ok(())
}

fn node_binary(options: &RunOptions) -> Result<PathBuf> {
    match &options.node_binary {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe().map_err(|e| LabError::Usage(format!("locating the qlab binary: {e}"))),
    }
}

/// Everything running a run's trials needs, however the run began (new or resumed).
struct Session<'a> {
    experiment: &'a Experiment,
    kind: &'static dyn ExperimentKind,
    points: Vec<Point>,
    trials_per_point: u64,
    seed: u64,
    jobs: usize,
    node_binary: PathBuf,
    run_dir: PathBuf,
    progress: bool,
}

/// The verdicts of a run's rows, as a [`RunReport`] counts them.
#[derive(Default)]
struct Counts {
    unsafe_trials: u64,
    unsafe_trials_replayable: u64,
    failed_trials: u64,
    inconclusive_trials: u64,
}

impl Counts {
    fn add(&mut self, verdict: &Verdict, replays: bool) {
        self.unsafe_trials += verdict.is_unsafe() as u64;
        self.unsafe_trials_replayable += (verdict.is_unsafe() && replays) as u64;
        self.failed_trials += (*verdict == Verdict::Error) as u64;
        self.inconclusive_trials += verdict.is_inconclusive() as u64;
    }

    /// The counts of rows already in a `trials.csv` (a resumed or merged run's).
    fn of_table(table: &results::Table, session: &Session) -> Counts {
        let mut counts = Counts::default();
        for row in &table.rows {
            let Some(trial) = table.get(row, "trial").and_then(|t| t.parse::<u64>().ok()) else { continue };
            let mode = session.points.get((trial / session.trials_per_point) as usize).map(|p| p.mode);
            let verdict = table.verdict(row).unwrap_or(Verdict::Error);
            counts.add(&verdict, mode.is_some_and(|mode| session.kind.replays(mode)));
        }
        counts
    }
}

pub fn run_experiment(path: &Path, options: &RunOptions) -> Result<RunReport> {
    // Everything that can be wrong with the file is found before anything is written.
    let (experiment, kind) = options.kinds.load(path)?;
    let seed = options.seed.unwrap_or(experiment.file.experiment.seed);
    let jobs = jobs_for(&experiment, options)?;
    check_machine(path, &experiment)?;
    let node_binary = node_binary(options)?;
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
    let todo: Vec<u64> = (0..total).filter(|t| options.shard.is_none_or(|shard| shard.holds(*t))).collect();
    let build = results::build();
    let started = SystemTime::now();
    let mut meta = Meta {
        experiment: experiment.name().to_string(),
        kind: kind.name().into(),
        qlab_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: build.commit,
        git_dirty: build.dirty,
        build_profile: build.profile,
        debug_assertions: Some(build.debug_assertions),
        seed,
        trials_planned: todo.len() as u64,
        trials_done: 0,
        jobs,
        command: options.command.clone(),
        machine: results::Machine::current(),
        started_at: results::utc_timestamp(started),
        finished_at: None,
        wall_seconds: None,
        interrupted: false,
        shard: options.shard,
        resumed_at: Vec::new(),
        merged_from: Vec::new(),
    };
    results::write_meta(&run_dir, &meta)?;
    if is_default_location {
        update_latest(&run_dir)?;
    }
    let writer = TrialWriter::create(&run_dir.join(TRIALS_CSV), &kind.trial_columns())?;
    let session = Session {
        experiment: &experiment,
        kind,
        points,
        trials_per_point,
        seed,
        jobs,
        node_binary,
        run_dir,
        progress: options.progress,
    };
    run_trials(&session, todo, writer, &mut meta, Counts::default())
}

/// Take up a run that was interrupted or killed (`qlab run --resume DIR`): the trials
/// its `trials.csv` has no row for run now, with the seeds they always had, and their
/// rows are appended; a row a killed writer left half-written is cut off first. A run
/// made by another commit is refused (its rows and the new ones would be two versions'
/// results), as is one with nothing left to run.
pub fn resume_run(run_dir: &Path, options: &RunOptions) -> Result<RunReport> {
    let mut meta = results::read_meta(run_dir)?;
    let toml_path = run_dir.join(EXPERIMENT_TOML);
    let (experiment, kind) = options.kinds.load(&toml_path)?;
    if kind.name() != meta.kind {
        return Err(LabError::Usage(format!(
            "{}: meta.json says a {} run, experiment.toml a {} one",
            run_dir.display(),
            meta.kind,
            kind.name()
        )));
    }
    let build = results::build();
    let git_commit = build.commit.clone();
    if !meta.build_profile.is_empty() && meta.build_profile != build.profile {
        return Err(LabError::Usage(format!(
            "{}: the run was made by a qlab built with the {} profile, this one is built with {}; \
             its measurements and the new ones would not be comparable (build with --profile {} to resume it)",
            run_dir.display(),
            meta.build_profile,
            build.profile,
            meta.build_profile
        )));
    }
    if git_commit != meta.git_commit {
        return Err(LabError::Usage(format!(
            "{}: the run was made by commit {}, this qlab is built from {git_commit}; its rows and the new ones \
             would be two versions' results (check out {} to resume it, or start a new run)",
            run_dir.display(),
            meta.git_commit,
            meta.git_commit
        )));
    }
    let jobs = jobs_for(&experiment, options)?;
    check_machine(&toml_path, &experiment)?;
    let node_binary = node_binary(options)?;
    let trials_path = run_dir.join(TRIALS_CSV);
    let table = results::Table::read(&trials_path)?;
    if table.columns != kind.trial_columns() {
        return Err(LabError::Usage(format!(
            "{}: its columns are not those this qlab writes for a {} run",
            trials_path.display(),
            kind.name()
        )));
    }
    if table.torn_last_row_bytes > 0 {
        let bytes = std::fs::metadata(&trials_path).map_err(io_error(&trials_path))?.len();
        let file = std::fs::OpenOptions::new().write(true).open(&trials_path).map_err(io_error(&trials_path))?;
        file.set_len(bytes - table.torn_last_row_bytes as u64).map_err(io_error(&trials_path))?;
        eprintln!(
            "{}: cut off a last row a killed run left half-written ({} bytes); that trial runs again",
            trials_path.display(),
            table.torn_last_row_bytes
        );
    }
    let points = kind.points(&experiment);
    let trials_per_point = experiment.trials();
    let total = points.len() as u64 * trials_per_point;
    let done: std::collections::BTreeSet<u64> =
        table.rows.iter().filter_map(|row| table.get(row, "trial")?.parse().ok()).collect();
    let todo: Vec<u64> =
        (0..total).filter(|t| meta.shard.is_none_or(|shard| shard.holds(*t))).filter(|t| !done.contains(t)).collect();
    if todo.is_empty() {
        return Err(LabError::Usage(format!(
            "{}: every one of its {} trials has a row; nothing to resume",
            run_dir.display(),
            meta.trials_planned
        )));
    }
    let session = Session {
        experiment: &experiment,
        kind,
        points,
        trials_per_point,
        seed: meta.seed,
        jobs,
        node_binary,
        run_dir: run_dir.to_path_buf(),
        progress: options.progress,
    };
    let counts = Counts::of_table(&table, &session);
    meta.trials_done = done.len() as u64;
    meta.interrupted = false;
    meta.finished_at = None;
    meta.git_dirty |= build.dirty;
    meta.jobs = jobs;
    meta.resumed_at.push(results::utc_timestamp(SystemTime::now()));
    results::write_meta(run_dir, &meta)?;
    let writer = TrialWriter::reopen(&trials_path)?;
    run_trials(&session, todo, writer, &mut meta, counts)
}

/// Run the trials `todo` of a session, appending each row as it finishes, then write
/// the summary and figures of every row the run has.
fn run_trials(
    session: &Session,
    todo: Vec<u64>,
    mut writer: TrialWriter,
    meta: &mut Meta,
    mut counts: Counts,
) -> Result<RunReport> {
    let Session { experiment, kind, points, trials_per_point, seed, jobs, node_binary, run_dir, .. } = session;
    let (kind, trials_per_point, seed) = (*kind, *trials_per_point, *seed);
    let progress = if session.progress { ProgressBar::new(meta.trials_planned) } else { ProgressBar::hidden() };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} trials, {elapsed} elapsed, eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    progress.set_message(experiment.name().to_string());
    progress.set_position(meta.trials_done);
    let clock = Instant::now();
    let next = AtomicU64::new(0);
    let count = todo.len() as u64;
    let (sender, receiver) = mpsc::channel::<(u64, Vec<String>, Verdict, bool)>();
    let mut write_error = None;
    let mut meta_written = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..(*jobs).min(todo.len().max(1)) {
            let sender = sender.clone();
            let next = &next;
            let todo = &todo;
            scope.spawn(move || {
                loop {
                    if INTERRUPTED.load(Ordering::Relaxed) {
                        break;
                    }
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&trial) = todo.get(at as usize) else { break };
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
            counts.add(&verdict, replays);
            if write_error.is_none()
                && let Err(e) = writer.append(&row)
            {
                // Stop handing out trials; finished rows are already on disk.
                next.store(count, Ordering::Relaxed);
                write_error = Some(e);
            }
            if write_error.is_none() {
                meta.trials_done += 1;
            }
            progress.inc(1);
            if meta_written.elapsed() >= META_EVERY {
                // Best effort: the rows are what matters, and they are on disk.
                let _ = results::write_meta(run_dir, meta);
                meta_written = Instant::now();
            }
        }
    });
    progress.finish_and_clear();
    let interrupted = INTERRUPTED.load(Ordering::Relaxed) && meta.trials_done < meta.trials_planned;
    if let Some(e) = write_error {
        // What was written stays, and meta.json says how much of it there is.
        meta.interrupted = true;
        let _ = results::write_meta(run_dir, meta);
        return Err(e.into());
    }
    // An interrupted run still gets the summary and figures of what it finished.
    let figures = if meta.trials_done > 0 { kind.summarize(run_dir, experiment.name())? } else { Vec::new() };
    let wall_seconds = clock.elapsed().as_secs_f64();
    meta.finished_at = Some(results::utc_timestamp(SystemTime::now()));
    // A resumed run's wall time is every session's.
    meta.wall_seconds = Some(((meta.wall_seconds.unwrap_or(0.0) + wall_seconds) * 1000.0).round() / 1000.0);
    meta.interrupted = interrupted;
    results::write_meta(run_dir, meta)?;
    Ok(RunReport {
        run_dir: run_dir.clone(),
        trials: meta.trials_done,
        trials_planned: meta.trials_planned,
        unsafe_trials: counts.unsafe_trials,
        unsafe_trials_replayable: counts.unsafe_trials_replayable,
        failed_trials: counts.failed_trials,
        inconclusive_trials: counts.inconclusive_trials,
        figures,
        wall_seconds,
        partial: meta.partial(),
    })
}

/// What `qlab merge` made: the joined run, and the trials none of the shards had.
pub struct Merged {
    pub report: RunReport,
    pub missing: Vec<u64>,
}

/// Join the shards (or any runs) of one experiment into one run (`qlab merge`): every
/// row of every shard, in trial order, with the summary and figures of the whole. The
/// shards must be of the same experiment file, seed, commit and columns, and no trial
/// may have a row in two of them (a shard merged with itself, or two runs of one
/// shard); trials no shard has are reported, and the merged run is then partial.
pub fn merge_runs(dirs: &[PathBuf], out: Option<&Path>, kinds: &Registry, command: Vec<String>) -> Result<Merged> {
    let Some(first) = dirs.first() else {
        return Err(LabError::Usage("qlab merge: name the run directories to join".into()));
    };
    struct Part {
        dir: PathBuf,
        meta: Meta,
        source: String,
        table: results::Table,
    }
    let mut parts = Vec::new();
    for dir in dirs {
        let meta = results::read_meta(dir)?;
        let toml_path = dir.join(EXPERIMENT_TOML);
        let text = std::fs::read_to_string(&toml_path).map_err(io_error(&toml_path))?;
        // The first line says how the run was made (its seed, perhaps from --seed); the
        // file is the rest.
        let source = text.split_once('\n').map_or(String::new(), |(_, rest)| rest.to_string());
        let table = results::Table::read(&dir.join(TRIALS_CSV))?;
        parts.push(Part { dir: dir.clone(), meta, source, table });
    }
    let base = &parts[0];
    for part in &parts[1..] {
        let differs = |what: &str, a: &str, b: &str| {
            LabError::Usage(format!(
                "{} and {} are not shards of one run: their {what} differ ({a} and {b})",
                base.dir.display(),
                part.dir.display()
            ))
        };
        if part.source != base.source {
            return Err(differs("experiment files", "experiment.toml", "another experiment.toml"));
        }
        if part.meta.seed != base.meta.seed {
            return Err(differs("seeds", &base.meta.seed.to_string(), &part.meta.seed.to_string()));
        }
        if part.meta.git_commit != base.meta.git_commit {
            return Err(differs("commits", &base.meta.git_commit, &part.meta.git_commit));
        }
        if part.meta.build_profile != base.meta.build_profile {
            return Err(differs("build profiles", &base.meta.build_profile, &part.meta.build_profile));
        }
        if part.table.columns != base.table.columns {
            return Err(differs("trials.csv columns", "one header", "another"));
        }
    }
    let (experiment, kind) = kinds.load(&first.join(EXPERIMENT_TOML))?;
    let points = kind.points(&experiment);
    let trials_per_point = experiment.trials();
    let total = points.len() as u64 * trials_per_point;
    let mut owner: std::collections::BTreeMap<u64, &Path> = Default::default();
    let mut duplicated = Vec::new();
    let mut rows = Vec::new();
    for part in &parts {
        for row in &part.table.rows {
            let trial: u64 = part.table.get(row, "trial").and_then(|t| t.parse().ok()).ok_or_else(|| {
                LabError::Usage(format!("{}: a row without a trial number", part.dir.join(TRIALS_CSV).display()))
            })?;
            if let Some(other) = owner.insert(trial, &part.dir) {
                duplicated.push(format!("trial {trial} in {} and {}", other.display(), part.dir.display()));
            }
            rows.push((trial, row));
        }
    }
    if !duplicated.is_empty() {
        let shown = duplicated.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
        return Err(LabError::Usage(format!(
            "{} trial(s) have rows in two places, so these are not distinct shards of one run: {shown}{}",
            duplicated.len(),
            if duplicated.len() > 5 { "; ..." } else { "" }
        )));
    }
    rows.sort_by_key(|(trial, _)| *trial);
    let missing: Vec<u64> = (0..total).filter(|t| !owner.contains_key(t)).collect();

    let run_dir = match out {
        Some(dir) => {
            claim_out_dir(dir, false)?;
            dir.to_path_buf()
        }
        None => new_run_dir(Path::new("results"), experiment.name())?,
    };
    let toml_path = run_dir.join(EXPERIMENT_TOML);
    let text = std::fs::read_to_string(first.join(EXPERIMENT_TOML)).map_err(io_error(first))?;
    std::fs::write(&toml_path, text).map_err(io_error(&toml_path))?;
    let mut writer = TrialWriter::create(&run_dir.join(TRIALS_CSV), &base.table.columns)?;
    for (trial, row) in &rows {
        // A row's replay command names its shard's directory; the merged run replays
        // the same trial with the same seed, so it names the merged one.
        let from = format!("qlab replay {} --trial", owner[trial].display());
        let to = format!("qlab replay {} --trial", run_dir.display());
        let row: Vec<String> = row.iter().map(|cell| cell.replace(&from, &to)).collect();
        writer.append(&row)?;
    }
    drop(writer);
    let describe = |part: &Part| match part.meta.shard {
        Some(shard) => format!("{} (shard {shard}, {} trials)", part.dir.display(), part.table.rows.len()),
        None => format!("{} ({} trials)", part.dir.display(), part.table.rows.len()),
    };
    let meta = Meta {
        experiment: base.meta.experiment.clone(),
        kind: base.meta.kind.clone(),
        qlab_version: base.meta.qlab_version.clone(),
        git_commit: base.meta.git_commit.clone(),
        git_dirty: parts.iter().any(|p| p.meta.git_dirty),
        build_profile: base.meta.build_profile.clone(),
        debug_assertions: base.meta.debug_assertions,
        seed: base.meta.seed,
        trials_planned: total,
        trials_done: rows.len() as u64,
        jobs: parts.iter().map(|p| p.meta.jobs).max().unwrap_or(1),
        command,
        machine: base.meta.machine.clone(),
        started_at: parts.iter().map(|p| p.meta.started_at.clone()).min().unwrap_or_default(),
        finished_at: Some(results::utc_timestamp(SystemTime::now())),
        // The shards' wall times added: what the run cost, not how long anyone waited.
        wall_seconds: Some(parts.iter().filter_map(|p| p.meta.wall_seconds).sum()),
        interrupted: false,
        shard: None,
        resumed_at: Vec::new(),
        merged_from: parts.iter().map(describe).collect(),
    };
    results::write_meta(&run_dir, &meta)?;
    let figures = if rows.is_empty() { Vec::new() } else { kind.summarize(&run_dir, experiment.name())? };
    let session = Session {
        experiment: &experiment,
        kind,
        points,
        trials_per_point,
        seed: meta.seed,
        jobs: meta.jobs,
        node_binary: PathBuf::new(),
        run_dir: run_dir.clone(),
        progress: false,
    };
    let counts = Counts::of_table(&results::Table::read(&run_dir.join(TRIALS_CSV))?, &session);
    let report = RunReport {
        run_dir,
        trials: meta.trials_done,
        trials_planned: total,
        unsafe_trials: counts.unsafe_trials,
        unsafe_trials_replayable: counts.unsafe_trials_replayable,
        failed_trials: counts.failed_trials,
        inconclusive_trials: counts.inconclusive_trials,
        figures,
        wall_seconds: meta.wall_seconds.unwrap_or(0.0),
        partial: meta.partial(),
    };
    Ok(Merged { report, missing })
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
