//! The exhaustive search over the real Raft code (issue 42, `qlab_lab::explore`): with
//! every rule on, no interleaving within the bounds breaks a safety invariant; with a
//! rule switched off, breadth-first search finds the shortest run that does, and that
//! run is the textbook one.

mod explorer_common;
use explorer_common::{bounds_from_fields, figure_matches_the_docs, report};
use qlab_core::NodeId;
use qlab_core::symmetry::Renaming;
use qlab_lab::explore::{Bounds, Explorable, Exploration, Explorer, SearchLimits, Step, explore_with, random_walks};
use qlab_raft::{Raft, RaftAblations, RaftConfig, RaftTimer};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

fn raft(ablation: Option<&str>) -> RaftConfig {
    let ablate = ablation.map_or(RaftAblations::default(), |name| RaftAblations::only(name).unwrap());
    RaftConfig { ablate, ..RaftConfig::default() }
}

/// One thread when a counterexample is drawn: the first of several shortest runs that
/// a round finds depends on how threads interleave, one thread's search order does not.
fn search(ablation: Option<&str>, bounds: Bounds) -> Exploration {
    let threads = if ablation.is_some() { 1 } else { SearchLimits::default().threads };
    let limits = SearchLimits { threads, ..SearchLimits::default() };
    let found = explore_with(&Explorer::<Raft>::new(raft(ablation), 3, bounds), limits);
    println!(
        "{ablation:?} {bounds:?}: {} states generated ({} distinct in the last round), depth {}{}, {:.1} s",
        found.states,
        found.unique_states,
        found.max_depth,
        if found.timed_out { " (time limit)" } else { "" },
        found.seconds
    );
    found
}

/// Two timer firings: enough for two candidates to compete for one term.
const ELECTIONS: Bounds =
    Bounds { requests: 0, crashes: 0, reorderings: 0, duplicates: 0, timer_firings: 2, max_depth: 12 };

#[test]
fn raft_elections_are_safe_in_every_interleaving_within_the_bounds() {
    let found = search(None, ELECTIONS);
    assert_eq!(found.counterexample, None);
    assert_eq!(found.max_depth, 12, "the whole depth was explored");
    assert!(found.unique_states > 10_000, "{found:?}");
}

/// A client's command and a crash at any point, with restarts from what was persisted;
/// states up to renaming of the replicas (the test below shows the reduction keeps the
/// verdicts).
#[test]
fn raft_with_a_command_and_a_crash_is_safe_in_every_interleaving_within_the_bounds() {
    let bounds = Bounds { requests: 1, crashes: 1, timer_firings: 2, max_depth: 10, ..ELECTIONS };
    let explorer = Explorer::<Raft>::new(raft(None), 3, bounds).with_symmetry();
    let found = explore_with(&explorer, SearchLimits::default());
    report("every rule, a command and a crash, up to renaming", &found);
    assert_eq!((&found.counterexample, found.max_depth), (&None, 10));
    assert_eq!(found.unique_states, 38_413, "docs/model-checking.md");
}

/// The renamed steps of a run, for the symmetry tests.
fn renamed_step(step: &Step<RaftTimer>, renaming: &Renaming) -> Step<RaftTimer> {
    let name = |node: u32| renaming.of(NodeId(node)).0;
    match *step {
        Step::Deliver { from, to, position } => Step::Deliver { from: name(from), to: name(to), position },
        Step::Overtake { from, to, position } => Step::Overtake { from: name(from), to: name(to), position },
        Step::Duplicate { from, to, position } => Step::Duplicate { from: name(from), to: name(to), position },
        Step::Fire { node, timer } => Step::Fire { node: name(node), timer },
        Step::Crash { node } => Step::Crash { node: name(node) },
        Step::Restart { node } => Step::Restart { node: name(node) },
        Step::Submit { node, seq } => Step::Submit { node: name(node), seq },
        Step::Wave { .. } => unreachable!("no waves here"),
    }
}

/// What symmetry reduction rests on (`qlab_core::symmetry`): a run with its replicas
/// renamed reaches, step by step, the renamed states. Over random runs with every kind
/// of step: run A, and run A with every step's replicas renamed; at every step, A's
/// state renamed must print exactly as the renamed run's state. A field of Raft that
/// names a replica and is not renamed, or a rule that tells replicas apart by number,
/// breaks this. The plain fingerprints must differ somewhere, or nothing was tested.
#[test]
fn renaming_a_run_renames_every_state_it_reaches() {
    let bounds = Bounds { requests: 2, crashes: 2, reorderings: 2, duplicates: 2, timer_firings: 6, max_depth: 40 };
    let config = RaftConfig { max_entries_per_append: 1, ..raft(None) };
    let explorer = Explorer::<Raft>::new(config, 3, bounds);
    let symmetry = <Raft as qlab_lab::protocols::LabProtocol>::symmetry().expect("Raft is symmetric");
    let renamings = Renaming::all(3);
    let identity = &renamings[0];
    let mut differed = 0;
    let mut marks = std::collections::BTreeSet::new();
    for seed in 0..40u64 {
        for renaming in &renamings[1..] {
            // The same run A for every renaming.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut world = explorer.initial();
            let mut renamed = explorer.initial();
            for _ in 0..bounds.max_depth {
                let steps = explorer.steps(&world);
                if steps.is_empty() {
                    break;
                }
                let step = steps[rng.random_range(0..steps.len())];
                world = explorer.apply(&world, &step);
                renamed = explorer.apply(&renamed, &renamed_step(&step, renaming));
                marks.extend(world.reached.iter().map(|mark| mark.name));
                assert_eq!(
                    world.renamed_fingerprint(&symmetry, renaming),
                    renamed.renamed_fingerprint(&symmetry, identity),
                    "seed {seed}, {renaming:?}: the renamed run's state differs after {step:?}\n{world:?}\n{renamed:?}"
                );
                assert_eq!(world.is_safe(), renamed.is_safe());
                differed += usize::from(world.fingerprint() != renamed.fingerprint());
            }
        }
    }
    println!("{differed} renamed states printed differently before renaming; marks reached: {marks:?}");
    assert!(differed > 1000, "{differed}");
    assert!(marks.len() >= 4, "the runs reached few rare situations: {marks:?}");
}

/// The reduction keeps every verdict and the shortest counterexample's length, in
/// about a sixth of the states (3! renamings of three replicas).
#[test]
fn symmetry_reduction_keeps_verdicts_and_shortest_lengths_in_a_sixth_of_the_states() {
    let limits = SearchLimits { threads: 1, ..SearchLimits::default() };
    let plain = explore_with(&Explorer::<Raft>::new(raft(None), 3, ELECTIONS), limits);
    let reduced = explore_with(&Explorer::<Raft>::new(raft(None), 3, ELECTIONS).with_symmetry(), limits);
    report("elections, every rule", &plain);
    report("elections, every rule, up to renaming", &reduced);
    assert_eq!((&plain.counterexample, plain.max_depth), (&None, 12));
    assert_eq!((&reduced.counterexample, reduced.max_depth), (&None, 12));
    // docs/model-checking.md's table: the states reachable within the bounds are the
    // same whatever the search order, so the counts are exact.
    assert_eq!((plain.unique_states, reduced.unique_states), (27_460, 4_583));
    for (rule, length) in [("multiple_votes_per_term", 6), ("vote_without_log_check", 8)] {
        let bounds = Bounds { max_depth: 10, ..ELECTIONS };
        let found = explore_with(&Explorer::<Raft>::new(raft(Some(rule)), 3, bounds).with_symmetry(), limits);
        report(&format!("without {rule}, up to renaming"), &found);
        assert_eq!(found.counterexample.map(|(steps, _)| steps.len()), Some(length), "without {rule}");
    }
}

/// §5.2: without one vote per term the shortest violation is six steps: two candidates
/// time out and the same voter grants each of them its vote in term 1.
#[test]
fn without_one_vote_per_term_the_shortest_run_has_two_leaders_in_a_term() {
    let found = search(Some("multiple_votes_per_term"), ELECTIONS);
    let (steps, violations) = found.counterexample.clone().expect("two leaders in one term");
    println!("{}\n{violations:?}", steps.join("\n"));
    assert_eq!(steps.len(), 6, "{steps:#?}");
    assert_eq!(steps.iter().filter(|s| s.contains("timer Election fires")).count(), 2, "{steps:#?}");
    assert_eq!(steps.iter().filter(|s| s.contains("granted: true")).count(), 2, "{steps:#?}");
    assert!(violations.iter().any(|v| v.contains("election-safety") && v.contains("epoch 1")), "{violations:?}");
    figure_matches_the_docs(&found, "raft-multiple-votes-per-term", "Raft without one vote per term (§5.2): 6 steps");
}

/// §5.4.1: without the up-to-date check the shortest violation is eight steps: a leader
/// commits its no-op with one follower, and the other follower, whose log is empty, wins
/// the next term with the old leader's vote.
#[test]
fn without_the_log_check_a_leader_lacking_a_commit_is_elected_in_eight_steps() {
    let bounds = Bounds { max_depth: 10, ..ELECTIONS };
    let found = search(Some("vote_without_log_check"), bounds);
    let (steps, violations) = found.counterexample.clone().expect("a leader lacking a committed entry");
    println!("{}\n{violations:?}", steps.join("\n"));
    assert_eq!(steps.len(), 8, "{steps:#?}");
    assert!(violations.iter().any(|v| v.contains("leader-completeness")), "{violations:?}");
    figure_matches_the_docs(
        &found,
        "raft-vote-without-log-check",
        "Raft without the up-to-date check (§5.4.1): 8 steps",
    );
}

/// One thread, so that a seed's walks are the same on every machine.
fn walks(
    ablation: &str,
    config: RaftConfig,
    bounds: Bounds,
    seed: u64,
    walks_kept: usize,
    walk_steps: Option<usize>,
) -> Exploration {
    let limits = SearchLimits {
        threads: 1,
        time_limit: Duration::from_secs(120),
        verbose: false,
        walks_kept,
        walk_steps,
        guided: false,
    };
    let found = random_walks(&Explorer::<Raft>::new(config, 3, bounds), seed, limits);
    println!("{ablation} {bounds:?}: {} steps walked, {:.1} s", found.states, found.seconds);
    if let Some((steps, violations)) = &found.counterexample {
        println!("{}\n{violations:?}", steps.join("\n"));
    }
    found
}

/// §5.3: without the prevLog check, a follower appends a new leader's entry behind an
/// entry of another term at the slot before it. The exhaustive rounds show no run of 9
/// steps or fewer does harm; seed 7's random walks find one, shrunk to 18 steps.
#[test]
fn without_the_prev_log_check_logs_differ_before_a_matching_entry() {
    let bounds = Bounds { timer_firings: 4, max_depth: 9, ..ELECTIONS };
    let exhaustive = search(Some("skip_prev_log_check"), bounds);
    assert_eq!((exhaustive.counterexample, exhaustive.max_depth), (None, 9));
    let found =
        walks("skip_prev_log_check", raft(Some("skip_prev_log_check")), Bounds { max_depth: 30, ..bounds }, 7, 4, None);
    let (steps, violations) =
        found.counterexample.clone().expect("a follower accepted an entry after a mismatched one");
    assert_eq!(steps.len(), 18, "{steps:#?}");
    assert!(
        violations.iter().any(|v| v.contains("log-matching") || v.contains("state-machine-safety")),
        "{violations:?}"
    );
    figure_matches_the_docs(
        &found,
        "raft-skip-prev-log-check",
        "Raft without the prevLog check (§5.3): 18 steps, shrunk",
    );
}

/// §5.4.2, Figure 8: a leader that commits an entry of an earlier term by counting
/// replicas lets a later leader, elected without it, overwrite it. With one entry per
/// AppendEntries (a slow link's batching) three replicas suffice: seed 1's first
/// violating walk, shrunk, is 26 steps.
#[test]
fn committing_an_old_term_by_counting_is_the_figure_8_bug() {
    let config = RaftConfig { max_entries_per_append: 1, ..raft(Some("commit_old_term_by_count")) };
    let bounds = Bounds { timer_firings: 6, max_depth: 40, ..ELECTIONS };
    let found = walks("commit_old_term_by_count", config, bounds, 1, 1, None);
    let (steps, violations) = found.counterexample.clone().expect("a committed entry lost");
    assert_eq!(steps.len(), 26, "{steps:#?}");
    assert!(
        violations.iter().any(|v| v.contains("leader-completeness") || v.contains("state-machine-safety")),
        "{violations:?}"
    );
    figure_matches_the_docs(
        &found,
        "raft-commit-old-term-by-count",
        "Raft committing an old term's entry by counting (§5.4.2, Figure 8): 26 steps, shrunk",
    );
    // Twice as many steps of walks with the rule on break nothing.
    let budget = 2 * found.states;
    let safe = walks("none", RaftConfig { max_entries_per_append: 1, ..raft(None) }, bounds, 1, 1, Some(budget));
    assert_eq!(safe.counterexample, None);
    assert!(!safe.timed_out && safe.states >= budget, "the rule-on walks took their {budget} steps: {safe:?}");
}

/// A tool, not a test: explore with the bounds in `QLAB_EXPLORE` ("ablation requests
/// crashes reorderings timer_firings max_depth", the ablation `none` for every rule on) and
/// print what was found, e.g.
/// `QLAB_EXPLORE="commit_old_term_by_count 1 1 0 4 16" cargo test --release -p qlab-lab --test explore explore_from_env -- --ignored --nocapture`
/// (fields: rule off, client commands, crashes, reorderings, timer firings, depth; then
/// optional `max_entries_per_append=N`, `check_quorum=false`, `pre_vote=true`)`
#[test]
#[ignore = "a tool: set QLAB_EXPLORE"]
fn explore_from_env() {
    let spec = std::env::var("QLAB_EXPLORE").expect("QLAB_EXPLORE=\"ablation requests crashes drops timers depth\"");
    let fields: Vec<&str> = spec.split_whitespace().collect();
    let number = |i: usize| fields[i].parse::<u32>().expect("a number");
    let bounds = Bounds {
        requests: number(1),
        crashes: number(2),
        reorderings: number(3),
        duplicates: 0,
        timer_firings: number(4),
        max_depth: number(5) as usize,
    };
    let mut config = raft((fields[0] != "none").then_some(fields[0]));
    for setting in &fields[6..] {
        match setting.split_once('=') {
            Some(("max_entries_per_append", n)) => config.max_entries_per_append = n.parse().expect("a number"),
            Some(("check_quorum", on)) => config.check_quorum = on.parse().expect("true or false"),
            Some(("pre_vote", on)) => config.pre_vote = on.parse().expect("true or false"),
            _ => panic!("unknown setting {setting}"),
        }
    }
    let limits = SearchLimits { verbose: true, ..SearchLimits::default() };
    let explorer = Explorer::<Raft>::new(config, 3, bounds);
    let found = match std::env::var("QLAB_EXPLORE_WALKS") {
        Ok(seed) => random_walks(&explorer, seed.parse().expect("a seed"), limits),
        Err(_) => explore_with(&explorer, limits),
    };
    report(&spec, &found);
}

// ---- Multi-Paxos, 3 replicas ----

use qlab_paxos::{Paxos, PaxosAblations, PaxosConfig};

fn paxos(skip_phase1_values: bool) -> PaxosConfig {
    PaxosConfig { ablate: PaxosAblations { skip_phase1_values, ..PaxosAblations::default() }, ..PaxosConfig::default() }
}

fn search_paxos(skip_phase1_values: bool, bounds: Bounds) -> Exploration {
    let threads = if skip_phase1_values { 1 } else { SearchLimits::default().threads };
    let limits = SearchLimits { threads, ..SearchLimits::default() };
    let found = explore_with(&Explorer::<Paxos>::new(paxos(skip_phase1_values), 3, bounds), limits);
    println!(
        "paxos skip_phase1_values={skip_phase1_values} {bounds:?}: {} states generated ({} distinct in the last round), depth {}, {:.1} s",
        found.states, found.unique_states, found.max_depth, found.seconds
    );
    if let Some((steps, violations)) = &found.counterexample {
        println!("{}\n{violations:?}", steps.join("\n"));
    }
    found
}

/// A client's command, a crash at any point (and restarts), three timer firings.
#[test]
fn multi_paxos_is_safe_in_every_interleaving_within_the_bounds() {
    let bounds = Bounds { requests: 1, crashes: 1, timer_firings: 3, max_depth: 9, ..ELECTIONS };
    let found = search_paxos(false, bounds);
    assert_eq!((&found.counterexample, found.max_depth), (&None, 9));
    assert!(found.unique_states > 100_000, "{found:?}");
}

/// Phase 1's value rule: without it the shortest violation is nine steps. A leader gets
/// one acceptor to accept a put (chosen with its own acceptance); a second proposer's
/// phase 1 reaches that acceptor, whose promise carries the value, and ignores it: the
/// new leader's log lacks a chosen value (Leader Completeness).
#[test]
fn without_phase_1_values_a_new_leader_drops_a_chosen_value_in_nine_steps() {
    let bounds = Bounds { requests: 1, timer_firings: 2, max_depth: 10, ..ELECTIONS };
    let found = search_paxos(true, bounds);
    let (steps, violations) = found.counterexample.clone().expect("a chosen value dropped");
    assert_eq!(steps.len(), 9, "{steps:#?}");
    assert!(steps.iter().any(|s| s.contains("Promise") && s.contains("PromisedSlot")), "{steps:#?}");
    assert!(violations.iter().any(|v| v.contains("leader-completeness")), "{violations:?}");
    figure_matches_the_docs(&found, "paxos-skip-phase1-values", "Multi-Paxos without phase 1's value rule: 9 steps");
}

#[test]
#[ignore = "a tool: set QLAB_EXPLORE_PAXOS"]
fn explore_paxos_from_env() {
    let spec = std::env::var("QLAB_EXPLORE_PAXOS")
        .expect("QLAB_EXPLORE_PAXOS=\"skip|none requests crashes timers depth [seed]\"");
    let fields: Vec<&str> = spec.split_whitespace().collect();
    let bounds = bounds_from_fields(&fields);
    let explorer = Explorer::<Paxos>::new(paxos(fields[0] == "skip"), 3, bounds);
    let limits = SearchLimits { verbose: true, ..SearchLimits::default() };
    let found = match fields.get(5) {
        Some(seed) => random_walks(&explorer, seed.parse().expect("a seed"), limits),
        None => explore_with(&explorer, limits),
    };
    println!("{spec}: {} states, depth {}, {:.1} s", found.states, found.max_depth, found.seconds);
    if let Some((steps, violations)) = &found.counterexample {
        println!("{}\n{violations:?}", steps.join("\n"));
    }
}

/// One command, one crash and restart, two timer firings, 8 steps: the bounds of the
/// liveness searches below.
const SETTLING: Bounds =
    Bounds { requests: 1, crashes: 1, reorderings: 0, duplicates: 0, timer_firings: 2, max_depth: 8 };

/// Bounded liveness (issue 42 item 3): from the last state of every run within the
/// bounds, once the faults stop (crashed replicas restart, nothing more is lost) and
/// the cluster runs under a fair schedule, a leader that a majority follows emerges
/// within `rounds` rounds (`states` distinct states at the last depth, the number
/// docs/model-checking.md's table gives); `rounds - 1` are not enough for one of the
/// 8-step runs, which the search finds at its own length. One thread: the same state
/// count everywhere.
fn assert_settles_within<P: Explorable>(what: &str, explorer: impl Fn() -> Explorer<P>, rounds: usize, states: usize) {
    let limits = SearchLimits { threads: 1, ..SearchLimits::default() };
    let live = explore_with(&explorer().with_liveness(rounds), limits);
    report(&format!("{what}, liveness within {rounds} rounds"), &live);
    assert_eq!((&live.counterexample, live.max_depth, live.timed_out), (&None, 8, false));
    assert_eq!(live.unique_states, states, "docs/model-checking.md's liveness table");
    let short = explore_with(&explorer().with_liveness(rounds - 1), limits);
    report(&format!("{what}, liveness within {} rounds", rounds - 1), &short);
    let (steps, why) = short.counterexample.expect("one round fewer is too few for some run");
    assert_eq!(steps.len(), 8);
    assert!(why[0].starts_with("liveness: no replica led a majority"), "{why:?}");
}

#[test]
fn raft_settles_within_12_rounds_after_the_faults_stop() {
    assert_settles_within("raft", || Explorer::<Raft>::new(raft(None), 3, SETTLING), 12, 86_569);
}

#[test]
fn multi_paxos_settles_within_11_rounds_after_the_faults_stop() {
    assert_settles_within("multi-paxos", || Explorer::<Paxos>::new(paxos(false), 3, SETTLING), 11, 27_727);
}
