//! The counterexample cases and the machinery behind `qlab replay`'s shrinking: a chaos
//! run's recorded fault schedule replays to the identical run, a shrunk schedule still
//! breaks the same invariant and no single fault can be left out of it, and every case
//! shows (or, for the contrast, mostly does not) what it is there to show.

use qlab_lab::chaos::{ChaosConfig, ChaosSchedule, run_protocol_chaos, run_protocol_chaos_with, shrink};
use qlab_lab::counterexample::{Case, run_trial, shrink_trial};
use qlab_paxos::Paxos;
use qlab_raft::Raft;
use qlab_raft::RaftAblations;

/// Giving a run's own schedule back repeats it exactly: the same faults at the same
/// times, the same client history, the same verdicts.
#[test]
fn a_recorded_fault_schedule_replays_the_identical_run() {
    let config = ChaosConfig::new(3);
    for seed in 0..100 {
        let runs: [&dyn Fn(&ChaosConfig) -> qlab_lab::chaos::ChaosOutcome; 3] =
            [&|c| run_protocol_chaos::<Raft>(seed, c), &|c| run_protocol_chaos::<Paxos>(seed, c), &|c| {
                run_protocol_chaos_with::<Raft>(seed, c, |c| {
                    c.ablate = RaftAblations::only("skip_prev_log_check").unwrap()
                })
            }];
        for run in runs {
            let drawn = run(&config);
            let replayed = run(&ChaosConfig { schedule: Some(drawn.schedule.clone()), ..config.clone() });
            assert_eq!(drawn.fault_log, replayed.fault_log, "seed {seed}");
            assert_eq!(drawn.history, replayed.history, "seed {seed}");
            assert_eq!(drawn.violations, replayed.violations, "seed {seed}");
            assert_eq!(drawn.schedule, replayed.schedule, "seed {seed}");
        }
    }
}

/// Shrinking keeps the failure and is 1-minimal: without any one of the faults left,
/// the same seed no longer breaks the invariant.
#[test]
fn a_shrunk_schedule_still_fails_and_needs_every_fault_it_keeps() {
    let ablate = RaftAblations::only("skip_prev_log_check").unwrap();
    let config = ChaosConfig::new(3);
    let (seed, original) = (0..200)
        .map(|seed| (seed, run_protocol_chaos_with::<Raft>(seed, &config, |c| c.ablate = ablate)))
        .find(|(_, o)| !o.violations.is_empty() && o.faults_injected >= 4)
        .expect("a failing seed with a few faults");
    let invariant = original.violations[0].invariant;
    let run = |schedule: &ChaosSchedule| {
        run_protocol_chaos_with::<Raft>(
            seed,
            &ChaosConfig { schedule: Some(schedule.clone()), ..config.clone() },
            |c| c.ablate = ablate,
        )
    };
    let fails = |o: &qlab_lab::chaos::ChaosOutcome| o.violations.first().is_some_and(|v| v.invariant == invariant);
    let (shrunk, runs) = shrink(run, &original.schedule, fails);
    assert!(shrunk.events.len() < original.schedule.events.len(), "seed {seed}: nothing left out");
    assert!(fails(&run(&shrunk)), "seed {seed}: the shrunk schedule passes");
    for i in 0..shrunk.events.len() {
        let mut fewer = shrunk.clone();
        fewer.events.remove(i);
        assert!(!fails(&run(&fewer)), "seed {seed}: fault {i} of the shrunk schedule is not needed");
    }
    eprintln!(
        "seed {seed}: {} faults shrunk to {} in {runs} runs",
        original.schedule.events.len(),
        shrunk.events.len()
    );
}

/// Every case over 40 seeds: the rule-less runs break their invariant in some seed,
/// fixed timeouts split votes far more often than randomized ones, 2 replicas never
/// survive a failure, the old minority leader always rolls back, and no checker finds
/// anything a case does not explain.
#[test]
fn every_case_shows_what_it_is_there_to_show() {
    const SEEDS: u64 = 40;
    let showed = |case: Case| {
        (0..SEEDS)
            .filter(|seed| {
                let trial = run_trial(case, *seed, false);
                assert!(trial.safety.is_ok(), "{case} seed {seed}: {:?}", trial.violations);
                trial.showed
            })
            .count()
    };
    for case in [Case::MultipleVotesPerTerm, Case::NoUpToDateCheck, Case::NoPrevLogCheck, Case::FollowerStaleReads] {
        assert!(showed(case) > 0, "{case}");
    }
    let (fixed, randomized) = (showed(Case::FixedTimeout), showed(Case::RandomizedTimeout));
    assert!(fixed > 4 * randomized.max(1), "split votes: fixed {fixed}, randomized {randomized}");
    assert_eq!(showed(Case::TwoNodes), SEEDS as usize);
    assert!(showed(Case::FourVsThree) >= SEEDS as usize * 9 / 10);
    assert!(showed(Case::SixVsFive) >= SEEDS as usize * 9 / 10);
    assert_eq!(showed(Case::MinorityLeaderRollback), SEEDS as usize);
}

/// What `qlab replay` does for a chaos case: the shrunk run breaks the same invariant
/// with fewer faults, its trace ends at the violation.
#[test]
fn replaying_a_chaos_case_shrinks_it() {
    let seed = (0..200).find(|s| run_trial(Case::NoUpToDateCheck, *s, false).showed).expect("a failing seed");
    let original = run_trial(Case::NoUpToDateCheck, seed, false);
    let shrunk = shrink_trial(Case::NoUpToDateCheck, seed).expect("shrinkable");
    assert_eq!(shrunk.trial.invariant, original.invariant);
    assert!(shrunk.schedule.events.len() <= shrunk.original_faults);
    assert!(!shrunk.trial.trace.is_empty());
    assert!(shrink_trial(Case::TwoNodes, seed).is_none(), "not a chaos case");
}

/// Issue 40's fsync-lies case (Alagappan et al., FAST 2018): disks that lose what they
/// acknowledged break Raft within a few dozen seeds, each showing names the premise that
/// went (a durable vote, or durable acknowledged entries), and a showing run replays to
/// the same violation; the same chaos on honest disks (slow, stalling, torn and damaged
/// records) breaks nothing over as many seeds.
#[test]
fn an_fsync_that_lies_breaks_raft_and_honest_disks_do_not() {
    const SEEDS: u64 = 100;
    let mut shown = Vec::new();
    for seed in 0..SEEDS {
        let lying = run_trial(Case::FsyncLies, seed, false);
        assert!(lying.safety.is_ok() || lying.safety.is_inconclusive(), "seed {seed}: {:?}", lying.violations);
        if lying.showed {
            assert!(lying.detail.starts_with("premise lost: "), "seed {seed}: {}", lying.detail);
            shown.push((seed, lying));
        }
        let honest = run_trial(Case::FsyncHonest, seed, false);
        assert!(!honest.showed && honest.safety.is_ok(), "honest disks, seed {seed}: {}", honest.detail);
    }
    assert!(shown.len() >= 10, "an fsync that lies showed in {} of {SEEDS} seeds", shown.len());
    let votes = shown.iter().filter(|(_, t)| t.detail.contains("a durable vote")).count();
    let entries = shown.iter().filter(|(_, t)| t.detail.contains("durable acknowledged entries")).count();
    assert!(votes > 0 && entries > 0, "both premises go: votes {votes}, entries {entries}");
    let (seed, first) = &shown[0];
    let again = run_trial(Case::FsyncLies, *seed, false);
    assert_eq!((&again.invariant, &again.detail), (&first.invariant, &first.detail), "seed {seed} replays");
}
