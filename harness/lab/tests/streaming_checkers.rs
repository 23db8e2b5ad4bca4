//! The checkers that run beside long real-mode experiments drop what they no longer
//! need (old slot references, closed history segments). These tests hold them to the
//! whole-run checkers on seeded chaos runs: a safety checker that keeps only two slots
//! and an anchor every fourth flags exactly the runs the full one flags — runs broken
//! by an ablated rule and clean ones alike — because a log that differs at a dropped
//! slot differs in its prefix digest at every later slot.

use qlab_check::{SafetyChecker, check_observations};
use qlab_lab::chaos::{ChaosConfig, ChaosKnobs, ChaosOutcome, run_protocol_chaos_with};
use qlab_paxos::Paxos;
use qlab_paxos::PaxosAblations;
use qlab_raft::Raft;
use qlab_raft::RaftAblations;

const SEEDS: u64 = 150;

type Runner<'a> = Box<dyn Fn(u64) -> ChaosOutcome + 'a>;

/// (runs the full checker flags, runs where the two disagree)
fn compare(nodes: u32, run: impl Fn(u64) -> ChaosOutcome) -> (usize, Vec<u64>) {
    let mut flagged = 0;
    let mut disagree = Vec::new();
    for seed in 0..SEEDS {
        let outcome = run(seed);
        let full = check_observations(&outcome.observations);
        let mut tight = SafetyChecker::with_retention(2, 4).with_nodes(nodes);
        for o in &outcome.observations {
            tight.observe(o);
        }
        let tight = tight.finish();
        flagged += usize::from(!full.is_empty());
        if full.is_empty() != tight.is_empty() {
            disagree.push(seed);
        }
    }
    (flagged, disagree)
}

#[test]
fn a_safety_checker_that_drops_old_slots_flags_the_same_runs() {
    let config = ChaosConfig::new(3);
    let cases: Vec<(&str, Runner)> = vec![
        (
            "raft, snapshots, every rule on",
            Box::new(|seed| run_protocol_chaos_with::<Raft>(seed, &config, |c| Raft::compact(c, seed))),
        ),
        (
            "raft without the election restriction",
            Box::new(|seed| {
                run_protocol_chaos_with::<Raft>(seed, &config, |c| {
                    c.ablate = RaftAblations::only("vote_without_log_check").unwrap()
                })
            }),
        ),
        (
            "raft without the prev-log check",
            Box::new(|seed| {
                run_protocol_chaos_with::<Raft>(seed, &config, |c| {
                    c.ablate = RaftAblations::only("skip_prev_log_check").unwrap()
                })
            }),
        ),
        (
            "paxos, checkpoints, promises without their checkpoint",
            Box::new(|seed| {
                let ablate = PaxosAblations { ignore_promised_checkpoint: true, ..Default::default() };
                run_protocol_chaos_with::<Paxos>(seed, &config, |c| {
                    Paxos::compact(c, seed);
                    c.ablate = ablate;
                })
            }),
        ),
    ];
    let mut broken_runs = 0;
    for (name, run) in cases {
        let (flagged, disagree) = compare(3, run);
        eprintln!("{name}: {flagged} of {SEEDS} runs flagged");
        assert!(disagree.is_empty(), "{name}: the tight checker disagrees on seeds {disagree:?}");
        broken_runs += flagged;
    }
    // The comparison means something only if broken runs were among them.
    assert!(broken_runs >= 20, "only {broken_runs} broken runs");
}
