//! `qlab check FILE`: the exhaustive search and the random walks of [`crate::explore`]
//! from a file, so a researcher states a protocol, its rules, the bounds and the search
//! without writing Rust, and gets the verdict, the counterexample's steps and its
//! message-sequence figure. A file says what it expects (`expect = "none"` for every
//! rule on, `"violation"` for a rule switched off); a check whose outcome differs, or
//! that ran out of time before deciding, is a failure the command's exit status carries.
//! `--out` writes the run as `steps.json` too; `--replay` runs such a file's steps (as
//! written, or edited) on the file's protocol and settings instead of searching.
//!
//! ```toml
//! [check]
//! protocol = "raft"            # "raft", "multi-paxos" or "pbft"
//! search = "walks"             # "exhaustive" (shortest first) or "walks" (seeded, shrunk)
//! expect = "violation"         # "violation" or "none"
//! seed = 1                     # walks only
//! threads = 1                  # default: every core; one makes walks repeatable
//! time_limit_s = 120
//! walk_steps = 400000          # walks only: a step budget (the same on every machine)
//! guided = true                # walks only: set out from runs that reached new coverage marks
//! twins = [1]                  # identities run as two honest instances (Byzantine)
//! waves = true                 # deliver in waves under two-sided partitions
//! symmetry = true              # exhaustive, Raft only: renamed states are one state
//!
//! [bounds]                     # each defaults to 0, max_depth to 12
//! timer_firings = 6
//! max_depth = 40
//!
//! [raft]                       # [multi-paxos]: ablate and checkpoint_every_slots;
//!                              # [pbft]: ablate, and view_change_timers_only = true
//! max_entries_per_append = 1
//! ablate = ["commit_old_term_by_count"]
//! ```

use crate::error::{LabError, Result};
use crate::explore::{
    Bounds, Explorable, Exploration, Explorer, SearchLimits, Step, explore_with, random_walks, replay_run,
};
use crate::protocols::PBFT_KEY_SEED;
use qlab_paxos::{Paxos, PaxosAblations, PaxosConfig};
use qlab_pbft::{Pbft, PbftAblations, PbftConfig, PbftTimer};
use qlab_raft::{Raft, RaftAblations, RaftConfig};
use qlab_report::error::line_column;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    check: CheckSection,
    #[serde(default)]
    bounds: BoundsSection,
    #[serde(default)]
    raft: RaftSection,
    #[serde(default, rename = "multi-paxos")]
    paxos: PaxosSection,
    #[serde(default)]
    pbft: PbftSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckSection {
    protocol: CheckedProtocol,
    search: Search,
    expect: Expect,
    #[serde(default)]
    seed: u64,
    threads: Option<usize>,
    #[serde(default = "default_time_limit_s")]
    time_limit_s: u64,
    #[serde(default = "default_walks_kept")]
    walks_kept: usize,
    walk_steps: Option<usize>,
    #[serde(default)]
    twins: Vec<u32>,
    #[serde(default)]
    waves: bool,
    #[serde(default)]
    guided: bool,
    #[serde(default)]
    symmetry: bool,
}

fn default_time_limit_s() -> u64 {
    600
}

fn default_walks_kept() -> usize {
    32
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum CheckedProtocol {
    Raft,
    MultiPaxos,
    Pbft,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Search {
    Exhaustive,
    Walks,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Expect {
    Violation,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundsSection {
    #[serde(default)]
    requests: u32,
    #[serde(default)]
    crashes: u32,
    #[serde(default)]
    reorderings: u32,
    #[serde(default)]
    duplicates: u32,
    #[serde(default)]
    timer_firings: u32,
    #[serde(default = "default_max_depth")]
    max_depth: usize,
}

fn default_max_depth() -> usize {
    12
}

impl Default for BoundsSection {
    fn default() -> Self {
        Self {
            requests: 0,
            crashes: 0,
            reorderings: 0,
            duplicates: 0,
            timer_firings: 0,
            max_depth: default_max_depth(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RaftSection {
    max_entries_per_append: Option<usize>,
    check_quorum: Option<bool>,
    pre_vote: Option<bool>,
    #[serde(default)]
    ablate: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaxosSection {
    #[serde(default)]
    ablate: Vec<String>,
    /// A checkpoint every this many applied slots (default: none), so that promises
    /// can carry one (what `ignore_promised_checkpoint` is about).
    checkpoint_every_slots: Option<u64>,
}

/// PBFT's rule switch (`prepare_quorum_2f`; the mutants are for tests only) and
/// whether the search fires only view-change timers (retransmissions only resend).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PbftSection {
    #[serde(default)]
    ablate: Vec<String>,
    #[serde(default)]
    view_change_timers_only: bool,
}

/// Switch off each rule `names` lists with `switch`, which says whether it knows the
/// name; an unknown one is an error at its place in the file, listing `known`.
fn switch_off(
    path: &Path,
    source: &str,
    protocol: &str,
    names: &[String],
    known: &str,
    mut switch: impl FnMut(&str) -> bool,
) -> Result<()> {
    match names.iter().find(|name| !switch(name)) {
        Some(name) => Err(error_at(
            path,
            source,
            &format!("\"{name}\""),
            format!("unknown {protocol} ablation `{name}`, expected one of {known}"),
        )),
        None => Ok(()),
    }
}

/// A run to replay instead of a search: the steps file and its text.
struct ReplayFile<'a> {
    path: &'a Path,
    text: String,
}

/// `explorer` with the file's twins and waves, searched as the file says, or the run
/// in `replay` replayed.
fn search<P: Explorable>(
    explorer: Explorer<P>,
    check: &CheckSection,
    limits: SearchLimits,
    replay: Option<&ReplayFile>,
) -> Result<Exploration> {
    let mut explorer = explorer.with_twins(&check.twins);
    if check.waves {
        explorer = explorer.with_waves();
    }
    if let Some(replay) = replay {
        let steps: Vec<Step<P::Timer>> = serde_json::from_str(&replay.text).map_err(|e| LabError::Config {
            path: replay.path.to_path_buf(),
            line: e.line(),
            // serde_json counts the column of an error at a line's end as 0.
            column: e.column().max(1),
            message: format!("not a run of {} steps: {e}", P::NAME),
        })?;
        return replay_run(&explorer, &steps)
            .map_err(|why| LabError::Usage(format!("{}: {why}", replay.path.display())));
    }
    if check.symmetry {
        explorer = explorer.with_symmetry();
    }
    Ok(match check.search {
        Search::Exhaustive => explore_with(&explorer, limits),
        Search::Walks => random_walks(&explorer, check.seed, limits),
    })
}

/// What a check found, and whether that is what its file expected.
#[derive(Debug)]
pub struct CheckOutcome {
    pub exploration: Exploration,
    /// Printable lines: the search, the verdict, the counterexample's steps.
    pub report: Vec<String>,
    pub as_expected: bool,
    /// The figure and trace written under `--out`.
    pub written: Vec<PathBuf>,
}

/// An error at the text of `field` in the file (its first occurrence), else at the top.
fn error_at(path: &Path, source: &str, field: &str, message: String) -> LabError {
    let offset = source.find(field).unwrap_or(0);
    let (line, column) = line_column(source, offset);
    LabError::Config { path: path.to_path_buf(), line, column, message }
}

/// Run the check in `path`; with `out`, write `trace.txt`, `steps.json` and
/// `sequence.svg`/`.png` there (a missing or empty directory: a check never writes over
/// anything). With `replay`, a `steps.json` (as `--out` wrote it, or edited), replay
/// that run on the file's protocol and settings instead of searching.
pub fn run_check(path: &Path, out: Option<&Path>, replay: Option<&Path>) -> Result<CheckOutcome> {
    let source = std::fs::read_to_string(path).map_err(|e| LabError::Io { path: path.to_path_buf(), source: e })?;
    let replay = match replay {
        Some(steps) => Some(ReplayFile {
            path: steps,
            text: std::fs::read_to_string(steps).map_err(|e| LabError::Io { path: steps.to_path_buf(), source: e })?,
        }),
        None => None,
    };
    let replay = replay.as_ref();
    let file: CheckFile = toml::from_str(&source).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_column(&source, s.start));
        LabError::Config { path: path.to_path_buf(), line, column, message: e.message().trim().to_string() }
    })?;
    if let Some(dir) = out
        && std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
    {
        return Err(LabError::Usage(format!(
            "--out {}: the directory is not empty; a check writes only into a missing or empty directory",
            dir.display()
        )));
    }
    let check = &file.check;
    let b = &file.bounds;
    let bounds = Bounds {
        requests: b.requests,
        crashes: b.crashes,
        reorderings: b.reorderings,
        duplicates: b.duplicates,
        timer_firings: b.timer_firings,
        max_depth: b.max_depth,
    };
    let mut limits = SearchLimits {
        time_limit: Duration::from_secs(check.time_limit_s),
        walks_kept: check.walks_kept,
        walk_steps: check.walk_steps,
        guided: check.guided,
        ..SearchLimits::default()
    };
    let nodes = if check.protocol == CheckedProtocol::Pbft { 4 } else { 3 };
    for (i, twin) in check.twins.iter().enumerate() {
        if *twin >= nodes || check.twins[..i].contains(twin) {
            let why = if *twin >= nodes { format!("is not one of the {nodes} replicas") } else { "twice".to_string() };
            return Err(error_at(path, &source, "twins", format!("twins: n{twin} {why}")));
        }
    }
    if check.symmetry {
        // Checked here, where the file's place can be named, not by the explorer's asserts.
        let why = match (check.protocol, check.search) {
            (CheckedProtocol::MultiPaxos, _) => {
                Some("Multi-Paxos orders two proposers' ballots of one round by their ids")
            }
            (CheckedProtocol::Pbft, _) => {
                Some("PBFT's primary of view v is replica v mod n, and its messages are signed")
            }
            (_, Search::Walks) => Some("only the exhaustive search keeps a table of states to reduce"),
            _ if !check.twins.is_empty() => Some("a twinned replica is not like the others"),
            _ => None,
        };
        if let Some(why) = why {
            return Err(error_at(path, &source, "symmetry", format!("symmetry: not here: {why}")));
        }
    }
    if let Some(threads) = check.threads {
        limits.threads = threads;
    }
    let (exploration, rules) = match check.protocol {
        CheckedProtocol::Raft => {
            let mut ablate = RaftAblations::default();
            let known = RaftAblations::NAMES.join(", ");
            switch_off(path, &source, "Raft", &file.raft.ablate, &known, |name| ablate.switch_off_rule(name))?;
            let defaults = RaftConfig::default();
            let config = RaftConfig {
                max_entries_per_append: file.raft.max_entries_per_append.unwrap_or(defaults.max_entries_per_append),
                check_quorum: file.raft.check_quorum.unwrap_or(defaults.check_quorum),
                pre_vote: file.raft.pre_vote.unwrap_or(defaults.pre_vote),
                ablate,
                ..defaults
            };
            (search(Explorer::<Raft>::new(config, nodes, bounds), check, limits, replay)?, &file.raft.ablate)
        }
        CheckedProtocol::MultiPaxos => {
            let mut ablate = PaxosAblations::default();
            let known = "skip_phase1_values, no_check_quorum, ignore_promised_checkpoint";
            switch_off(path, &source, "Multi-Paxos", &file.paxos.ablate, known, |name| {
                let rule = match name {
                    "skip_phase1_values" => &mut ablate.skip_phase1_values,
                    "no_check_quorum" => &mut ablate.no_check_quorum,
                    "ignore_promised_checkpoint" => &mut ablate.ignore_promised_checkpoint,
                    _ => return false,
                };
                *rule = true;
                true
            })?;
            let defaults = PaxosConfig::default();
            let checkpoint_every_slots = file.paxos.checkpoint_every_slots.unwrap_or(defaults.checkpoint_every_slots);
            let config = PaxosConfig { ablate, checkpoint_every_slots, ..defaults };
            (search(Explorer::<Paxos>::new(config, nodes, bounds), check, limits, replay)?, &file.paxos.ablate)
        }
        CheckedProtocol::Pbft => {
            let mut ablate = PbftAblations::default();
            // The test-only mutants are not among the names a file may give.
            switch_off(path, &source, "PBFT", &file.pbft.ablate, "prepare_quorum_2f", |name| {
                ablate.prepare_quorum_2f |= name == "prepare_quorum_2f";
                name == "prepare_quorum_2f"
            })?;
            // Every request proposed at once (no adaptive batching): the PBFT searches
            // hand the primary up to six requests, and holding some back for a batch
            // would prune interleavings the searches were tuned to walk; batching under
            // faults is batching_chaos's.
            let config =
                PbftConfig { ablate, max_batches_in_flight: 0, ..PbftConfig::with_keys(PBFT_KEY_SEED, nodes, 1) };
            let mut explorer = Explorer::<Pbft>::new(config, nodes, bounds);
            if file.pbft.view_change_timers_only {
                explorer = explorer.firing_only(vec![PbftTimer::ViewChange]);
            }
            (search(explorer, check, limits, replay)?, &file.pbft.ablate)
        }
    };
    let protocol = match check.protocol {
        CheckedProtocol::Raft => "Raft",
        CheckedProtocol::MultiPaxos => "Multi-Paxos",
        CheckedProtocol::Pbft => "PBFT",
    };
    let twins = if check.twins.is_empty() {
        String::new()
    } else {
        format!(", twins of {}", check.twins.iter().map(|t| format!("n{t}")).collect::<Vec<_>>().join(" and "))
    };
    let waves = if check.waves { ", messages in waves" } else { "" };
    let symmetry = if check.symmetry { ", states up to renaming of replicas" } else { "" };
    let rules = if rules.is_empty() { "every rule on".to_string() } else { format!("without {}", rules.join(", ")) };
    let search = match check.search {
        _ if replay.is_some() => {
            format!("a replay of {}", replay.map(|r| r.path.display().to_string()).unwrap_or_default())
        }
        Search::Exhaustive => "exhaustive search (shortest first)".to_string(),
        Search::Walks if check.guided => {
            format!("random walks guided by coverage marks from seed {} (shrunk)", check.seed)
        }
        Search::Walks => format!("random walks from seed {} (shrunk)", check.seed),
    };
    let mut report = vec![format!(
        "{protocol}, {nodes} replicas{twins}{waves}{symmetry}, {rules}; {search} within {} client puts, {} crashes, {} reorderings, {} duplicates, \
         {} timer firings, {} steps",
        bounds.requests, bounds.crashes, bounds.reorderings, bounds.duplicates, bounds.timer_firings, bounds.max_depth
    )];
    let distinct = match check.search {
        Search::Exhaustive if replay.is_none() => {
            format!("{} distinct states at the last bound, ", exploration.unique_states)
        }
        _ => String::new(),
    };
    let generated = if replay.is_some() { "steps replayed" } else { "states generated" };
    report.push(format!(
        "{distinct}{} {generated}, {:.1} s; {}",
        exploration.states,
        exploration.seconds,
        match (&exploration.counterexample, check.search) {
            (Some(_), _) => format!("violation in {} steps", exploration.max_depth),
            (None, _) if replay.is_some() => format!("no violation in the {} steps replayed", exploration.max_depth),
            (None, _) if exploration.timed_out => {
                format!("inconclusive: the time limit came first (no violation within {} steps)", exploration.max_depth)
            }
            (None, Search::Exhaustive) => format!("no violation in any run of up to {} steps", exploration.max_depth),
            (None, Search::Walks) => "no violation in the walks' step budget".to_string(),
        }
    ));
    let reached: Vec<String> =
        exploration.coverage.iter().filter(|(_, n)| **n > 0).map(|(name, n)| format!("{name} {n}")).collect();
    let missed: Vec<&str> = exploration.coverage.iter().filter(|(_, n)| **n == 0).map(|(name, _)| *name).collect();
    report.push(format!(
        "coverage marks (steps that reached each): {}; never reached: {}",
        if reached.is_empty() { "none".to_string() } else { reached.join(", ") },
        if missed.is_empty() { "none".to_string() } else { missed.join(", ") }
    ));
    let found = exploration.counterexample.is_some();
    let as_expected = match check.expect {
        Expect::Violation => found,
        Expect::None => !found && !exploration.timed_out,
    };
    if let Some((steps, violations)) = &exploration.counterexample {
        report.extend(steps.iter().enumerate().map(|(i, step)| format!("{:>3}. {step}", i + 1)));
        report.extend(violations.iter().map(|v| format!("violation: {v}")));
    }
    let expected = match check.expect {
        Expect::Violation => "a violation",
        Expect::None => "no violation",
    };
    report
        .push(format!("the file expects {expected}: {}", if as_expected { "as expected" } else { "NOT AS EXPECTED" }));
    let mut written = Vec::new();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| LabError::Io { path: dir.to_path_buf(), source: e })?;
        let trace = dir.join("trace.txt");
        std::fs::write(&trace, report.join("\n") + "\n")
            .map_err(|e| LabError::Io { path: trace.clone(), source: e })?;
        written.push(trace);
        if let Some(run) = &exploration.run {
            let steps = dir.join("steps.json");
            std::fs::write(&steps, run).map_err(|e| LabError::Io { path: steps.clone(), source: e })?;
            written.push(steps);
        }
        if let Some(chart) = &exploration.chart {
            let mut chart = chart.clone();
            chart.title = format!("{protocol}, {rules}: {} steps", exploration.max_depth);
            written.extend(qlab_report::sequence::write_sequence(dir, "sequence", &chart)?);
        }
    }
    Ok(CheckOutcome { exploration, report, as_expected, written })
}
