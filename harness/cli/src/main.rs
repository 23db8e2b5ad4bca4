//! `qlab`: the quorumlab command line. Thin glue over `qlab-lab`.

use clap::{Parser, Subcommand};
use qlab_lab::registry::Registry;
use qlab_lab::run::{self, RunOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "qlab", version, about = "quorumlab: Raft, Multi-Paxos and PBFT under one harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment file; writes results/<experiment>/<run-id>/ (or --out DIR).
    Run {
        /// The experiment TOML file (not with --resume, which reads the run's own copy).
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        file: Option<PathBuf>,
        /// Run only every N-th trial from K (trial numbers and seeds unchanged), for
        /// `qlab merge` to join with the other shards.
        #[arg(long, value_name = "K/N", conflicts_with = "resume")]
        shard: Option<String>,
        /// Take up an interrupted or killed run: run only the trials its trials.csv has
        /// no row for, and append theirs.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "seed"])]
        resume: Option<PathBuf>,
        /// Use DIR as the run directory (missing or empty, unless --force).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replace the run that --out DIR holds: everything in DIR is removed first.
        /// A directory that holds no run is never emptied.
        #[arg(long, requires = "out")]
        force: bool,
        /// Override the experiment's seed.
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// Trials run in parallel (default: number of cores).
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
    },
    /// Join the shards of one run (`qlab run --shard K/N`) into one run directory.
    Merge {
        /// The shards' run directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged run goes (missing or empty; default results/<experiment>/<run-id>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Redraw every figure of a run (and its summary) from its trials.csv alone.
    Plot {
        run_dir: PathBuf,
        /// Which files: svg, png or both (comma-separated).
        #[arg(long, default_value = "svg,png", value_name = "LIST")]
        format: String,
        /// The medium the line figures are sized for: screen, paper (one column),
        /// paper-wide (two columns) or slides. Anything but screen writes to
        /// figures-<style>/ so the run's own figures stay as they are.
        #[arg(long, default_value = "screen", value_name = "STYLE")]
        style: String,
    },
    /// Compare two runs of the same experiment (two commits, two machines) point by
    /// point: B / A for the kind's headline metrics with 95% bootstrap intervals.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Where compare.csv, compare.txt and figures/ go (default:
        /// results/compare/<experiment>-<UTC time>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write the numbers of the README's and docs' tables from results/tables.toml
    /// (--check: only compare).
    Tables {
        /// The repository root (where results/tables.toml is).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        #[arg(long)]
        check: bool,
    },
    /// Import criterion's measurements (left by `cargo bench`) into
    /// results/benchmarks/reference/criterion.csv, which docs/benchmarks.md's table is made from.
    Benchmarks {
        /// Criterion's output directory.
        #[arg(long, default_value = "target/criterion", value_name = "DIR")]
        criterion: PathBuf,
        #[arg(long, default_value = qlab_lab::benchmarks::BENCHMARKS_CSV, value_name = "CSV")]
        out: PathBuf,
    },
    /// Write the README's gallery from results/gallery.toml (--check: only compare).
    Gallery {
        #[arg(default_value = "README.md")]
        readme: PathBuf,
        #[arg(long)]
        check: bool,
    },
    /// Re-run one trial of a run with a readable event trace.
    Replay {
        run_dir: PathBuf,
        /// The trial number (the `trial` column of trials.csv).
        #[arg(long, value_name = "K")]
        trial: u64,
        /// Print at most this many trace lines (0: all).
        #[arg(long, default_value_t = 0)]
        max_lines: usize,
    },
    /// Search every interleaving (or seeded random walks) of a small cluster for a run
    /// that breaks a safety rule, as a check file states (docs/model-checking.md); prints
    /// the verdict and the counterexample, and fails when it is not what the file expects.
    Check {
        /// The check TOML file (checks/*.toml).
        file: PathBuf,
        /// Write trace.txt and the counterexample's sequence.svg/png into DIR (missing or empty).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replay this run (a steps.json that --out wrote, perhaps edited) instead of searching.
        #[arg(long, value_name = "STEPS")]
        replay: Option<PathBuf>,
    },
    /// Run one replica of a cluster file (real mode: QUIC with pinned mutual TLS).
    Node {
        /// The cluster file (see harness/net/src/cluster.rs for its fields).
        #[arg(long, value_name = "FILE")]
        cluster: PathBuf,
        /// This node's id in the cluster file.
        #[arg(long, value_name = "N")]
        id: u32,
    },
    /// List the experiment files and the question each answers.
    List {
        #[arg(default_value = "experiments")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    qlab_lab::results::set_build(qlab_lab::results::Build {
        commit: env!("QLAB_BUILD_COMMIT").to_string(),
        dirty: env!("QLAB_BUILD_DIRTY") == "true",
        profile: env!("QLAB_BUILD_PROFILE").to_string(),
        debug_assertions: cfg!(debug_assertions),
    });
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Print a line; a closed pipe (`qlab replay ... | head`) ends the program quietly
/// instead of panicking the way `println!` does.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(qlab_lab::LabError::Usage(format!("writing to stdout: {e}")));
        }
    }};
}

fn execute(command: Command) -> qlab_lab::Result<()> {
    match command {
        Command::Run { file, shard, resume, out, force, seed, jobs } => {
            ctrlc::set_handler(|| {
                if run::on_stop_signal() {
                    eprintln!(
                        "\ninterrupted: no new trial starts; the trials in progress finish and are written \
                         (interrupt again to stop at once)"
                    );
                } else {
                    eprintln!("\nstopped at once; trials.csv keeps every finished row");
                    std::process::exit(130);
                }
            })
            .map_err(|e| qlab_lab::LabError::Usage(format!("installing the Ctrl-C handler: {e}")))?;
            let options = RunOptions {
                out,
                force,
                seed,
                jobs,
                results_root: None,
                progress: std::io::stderr().is_terminal(),
                command: std::env::args().collect(),
                node_binary: None,
                kinds: Registry::builtin(),
                shard: shard
                    .as_deref()
                    .map(qlab_lab::results::Shard::parse)
                    .transpose()
                    .map_err(qlab_lab::LabError::Usage)?,
            };
            let report = match (&file, &resume) {
                (_, Some(dir)) => run::resume_run(dir, &options)?,
                (Some(file), None) => run::run_experiment(file, &options)?,
                (None, None) => unreachable!("clap requires a file or --resume"),
            };
            say!("{} trials in {:.1} s -> {}", report.trials, report.wall_seconds, report.run_dir.display());
            if let Some(shard) = &options.shard {
                say!("shard {shard} of the run: `qlab merge` joins it with the other shards");
            }
            report_run(&report)
        }
        Command::Merge { dirs, out } => {
            let merged = run::merge_runs(&dirs, out.as_deref(), &Registry::builtin(), std::env::args().collect())?;
            let report = &merged.report;
            say!("{} trials from {} runs -> {}", report.trials, dirs.len(), report.run_dir.display());
            if !merged.missing.is_empty() {
                say!(
                    "MISSING: {} of {} trials are in none of these runs: {}",
                    merged.missing.len(),
                    report.trials_planned,
                    ranges(&merged.missing)
                );
            }
            report_run(report)
        }
        Command::Compare { a, b, out } => {
            let out = out.unwrap_or_else(|| {
                let name = qlab_lab::results::read_meta(&b).map_or("run".to_string(), |m| m.experiment);
                let stamp = qlab_lab::results::utc_timestamp(std::time::SystemTime::now()).replace([':', '-'], "");
                PathBuf::from("results/compare").join(format!("{name}-{stamp}"))
            });
            let comparison = {
                let kinds = Registry::builtin();
                qlab_lab::compare::compare(&a, &b, &out, &|name| kinds.compare_metrics(name))?
            };
            let mut lines = vec![comparison.columns.clone()];
            lines.extend(comparison.rows.iter().cloned());
            let widths: Vec<usize> =
                (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
            for line in lines {
                let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:>w$}")).collect();
                say!("{}", cells.join("  "));
            }
            for note in &comparison.notes {
                say!("note: {note}");
            }
            say!("-> {}", comparison.out_dir.join("compare.csv").display());
            for figure in &comparison.figures {
                say!("figure: {}", figure.display());
            }
            Ok(())
        }
        Command::Tables { root, check } => {
            let differed = qlab_lab::tables::update(&root, check)?;
            let names: Vec<String> = differed.iter().map(|p| p.display().to_string()).collect();
            match (differed.is_empty(), check) {
                (true, _) => say!("every table is up to date with {}", qlab_lab::tables::LISTING),
                (false, false) => say!("tables rewritten from {}: {}", qlab_lab::tables::LISTING, names.join(", ")),
                (false, true) => {
                    return Err(qlab_lab::LabError::Usage(format!(
                        "tables differ from {}: {}; run `qlab tables`",
                        qlab_lab::tables::LISTING,
                        names.join(", ")
                    )));
                }
            }
            Ok(())
        }
        Command::Benchmarks { criterion, out } => {
            let rows = qlab_lab::benchmarks::import(&criterion, &out)?;
            say!("{}: {rows} benchmarks (run `qlab tables` to update docs/benchmarks.md)", out.display());
            Ok(())
        }
        Command::Gallery { readme, check } => {
            let matched = qlab_lab::gallery::update(&readme, check)?;
            match (matched, check) {
                (true, _) => say!("{}: the gallery is up to date", readme.display()),
                (false, false) => say!("{}: gallery rewritten from results/gallery.toml", readme.display()),
                (false, true) => {
                    return Err(qlab_lab::LabError::Usage(format!(
                        "{}: the gallery differs from results/gallery.toml; run `qlab gallery {}`",
                        readme.display(),
                        readme.display()
                    )));
                }
            }
            Ok(())
        }
        Command::Plot { run_dir, format, style } => {
            let style = qlab_lab::plot::Style::from_name(&style).ok_or_else(|| {
                qlab_lab::LabError::Usage(format!(
                    "--style {style:?}: one of {}",
                    qlab_lab::plot::Style::NAMES.join(", ")
                ))
            })?;
            let mut options = qlab_lab::plot::PlotOptions { style, svg: false, png: false };
            for name in format.split(',').map(str::trim) {
                match name {
                    "svg" => options.svg = true,
                    "png" => options.png = true,
                    other => {
                        return Err(qlab_lab::LabError::Usage(format!(
                            "--format {other:?}: svg or png (comma-separated); PDF would need a system cairo library"
                        )));
                    }
                }
            }
            let kinds = Registry::builtin();
            for figure in qlab_lab::plot::with_options(options, || run::plot_run(&run_dir, &kinds))? {
                say!("figure: {}", figure.display());
            }
            for note in run::run_notes(&run_dir) {
                say!("note: {note}");
            }
            print_summary(&run_dir, &kinds)?;
            Ok(())
        }
        Command::Check { file, out, replay } => {
            let outcome = qlab_lab::check::run_check(&file, out.as_deref(), replay.as_deref())?;
            for line in &outcome.report {
                say!("{line}");
            }
            for path in &outcome.written {
                say!("wrote {}", path.display());
            }
            if !outcome.as_expected {
                return Err(qlab_lab::LabError::Usage(format!(
                    "{}: the search's outcome is not what the file expects",
                    file.display()
                )));
            }
            Ok(())
        }
        Command::Replay { run_dir, trial, max_lines } => {
            let replay = run::replay(&run_dir, trial, &Registry::builtin())?;
            let trace = &replay.outcome.trace;
            let shown = if max_lines == 0 { trace.len() } else { max_lines.min(trace.len()) };
            for line in &trace[..shown] {
                say!("{line}");
            }
            if shown < trace.len() {
                say!("... {} more lines (--max-lines 0 shows all)", trace.len() - shown);
            }
            for line in &replay.outcome.story {
                say!("{line}");
            }
            let (replayed, violations) = (&replay.outcome.replayed, &replay.outcome.violations);
            const SHOWN_VIOLATIONS: usize = 10;
            for v in violations.iter().take(SHOWN_VIOLATIONS) {
                say!("violation: {v}");
            }
            if violations.len() > SHOWN_VIOLATIONS {
                say!("... and {} more violations", violations.len() - SHOWN_VIOLATIONS);
            }
            if let Some(recorded) = replay.recorded {
                say!(
                    "recorded {recorded}: {}",
                    if &recorded == replayed { "replay matches" } else { "REPLAY DIFFERS (different code version?)" }
                );
            }
            Ok(())
        }
        Command::Node { cluster, id } => qlab_lab::real::node_main(&cluster, id),
        Command::List { dir } => {
            for listed in run::list_experiments(&dir)? {
                say!("{}\n    {}", listed.path.display(), listed.question);
            }
            Ok(())
        }
    }
}

/// Print summary.csv as an aligned table: the columns the run's kind shows.
fn print_summary(run_dir: &std::path::Path, kinds: &Registry) -> qlab_lab::Result<()> {
    let Ok(table) = qlab_lab::results::Table::read(&run_dir.join("summary.csv")) else { return Ok(()) };
    let shown: Vec<&str> = match run::run_kind(run_dir, kinds) {
        Ok((kind, _)) if !kind.summary_columns_shown().is_empty() => kind.summary_columns_shown().to_vec(),
        _ => table.columns.iter().map(String::as_str).collect(),
    };
    // A column no row fills (open-loop columns in a closed-loop run) says nothing.
    let filled = |c: &str| table.rows.iter().any(|row| table.get(row, c).is_some_and(|v| !v.is_empty()));
    let columns: Vec<&str> = shown.iter().copied().filter(|c| table.column(c).is_some() && filled(c)).collect();
    let mut lines = vec![columns.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for row in &table.rows {
        lines.push(columns.iter().map(|c| table.get(row, c).unwrap_or("").to_string()).collect());
    }
    let widths: Vec<usize> = (0..columns.len()).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:>w$}")).collect();
        say!("{}", cells.join("  "));
    }
    Ok(())
}

/// What `qlab run` and `qlab merge` print about a run: its summary, figures, failed,
/// unsafe and inconclusive trials, and whether it is partial (exit status 130).
fn report_run(report: &run::RunReport) -> qlab_lab::Result<()> {
    print_summary(&report.run_dir, &Registry::builtin())?;
    for figure in &report.figures {
        say!("figure: {}", figure.display());
    }
    if report.failed_trials > 0 {
        say!(
            "{} of {} trial(s) could not run; their rows in {} say why (violations column)",
            report.failed_trials,
            report.trials,
            report.run_dir.join("trials.csv").display()
        );
    }
    if report.unsafe_trials > 0 {
        // Real-mode trials do not replay: their rows are all there is.
        let replay = if report.unsafe_trials_replayable > 0 {
            format!("; replay one with `qlab replay {} --trial K`", report.run_dir.display())
        } else {
            String::new()
        };
        say!(
            "SAFETY: {} trial(s) violated an invariant; see the safety and violations columns of {}{replay}",
            report.unsafe_trials,
            report.run_dir.join("trials.csv").display(),
        );
    } else if report.inconclusive_trials > 0 {
        // A checker that gave up proved nothing: those trials are not called ok.
        say!(
            "safety: no violation found, but {} trial(s) inconclusive (a checker gave up; safety column \
             `inconclusive` in {})",
            report.inconclusive_trials,
            report.run_dir.join("trials.csv").display()
        );
    } else if report.failed_trials == 0 {
        say!("safety: every trial ok");
    } else if report.failed_trials < report.trials {
        say!("safety: every trial that ran was ok");
    }
    if let Some(partial) = &report.partial {
        let resume = if report.trials < report.trials_planned {
            format!("; `qlab run --resume {}` runs the rest", report.run_dir.display())
        } else {
            String::new()
        };
        say!("PARTIAL: {partial} (meta.json says so; `qlab plot` and `qlab compare` will too){resume}");
        std::process::exit(130);
    }
    if report.failed_trials == report.trials && report.trials > 0 {
        return Err(qlab_lab::LabError::Usage("no trial could run".into()));
    }
    Ok(())
}

/// Trial numbers as ranges: `3, 7-9, 12`.
fn ranges(trials: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < trials.len() {
        let mut j = i;
        while j + 1 < trials.len() && trials[j + 1] == trials[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { trials[i].to_string() } else { format!("{}-{}", trials[i], trials[j]) });
        i = j + 1;
    }
    parts.join(", ")
}
