//! Why each of Raft's safety rules exists: switch one off (`RaftAblations`) and the
//! seeded chaos of `raft_chaos.rs` (crashes, partitions, loss, duplication, reordering)
//! must produce a run that a checker flags, naming the invariant the rule protects,
//! within 500 seeds. The failing seed must replay exactly, and the same seed with the
//! rule on must be safe (`raft_chaos.rs` runs seeds 0..1000 with every rule on and
//! finds nothing). The Figure 8 commit rule needs a schedule too precise for random
//! chaos to find; `raft_scenarios.rs` walks the cluster through Figure 8 itself.

use qlab_check::Invariant;
use qlab_lab::chaos::{
    ChaosConfig, caught_first, nodes_from_env, replay_and_print, run_protocol_chaos, run_protocol_chaos_with,
};
use qlab_raft::Raft;
use qlab_raft::RaftAblations;

const SEEDS: u64 = 500;

fn replay_command(seed: u64, nodes: u32, ablation: &str) -> String {
    format!(
        "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES={nodes} QLAB_ABLATE={ablation} cargo test --release -p qlab-lab --test \
         raft_ablations replay_one_seed -- --ignored --nocapture"
    )
}

fn caught(ablation: &str, nodes: u32, expected: &[Invariant]) {
    let ablate = RaftAblations::only(ablation).expect("a known ablation");
    let config = ChaosConfig::new(nodes);
    let account = caught_first(
        |seed| run_protocol_chaos_with::<Raft>(seed, &config, |c| c.ablate = ablate),
        |seed| run_protocol_chaos::<Raft>(seed, &config),
        0..SEEDS,
        expected,
        |seed| replay_command(seed, nodes, ablation),
    )
    .unwrap_or_else(|e| panic!("{ablation} at n = {nodes}: {e}"));
    eprintln!("{ablation} at n = {nodes}: {account}");
}

/// §5.2: a server votes once per term. Voting for every candidate lets two candidates
/// of one term both win.
#[test]
fn s5_2_one_vote_per_term_prevents_two_leaders_in_a_term() {
    caught("multiple_votes_per_term", 3, &[Invariant::ElectionSafety]);
}

/// §5.4.1: the election restriction. Without it a candidate that lacks committed
/// entries wins and its log replaces them.
#[test]
fn s5_4_1_election_restriction_prevents_losing_committed_entries() {
    caught("vote_without_log_check", 3, &[Invariant::LeaderCompleteness, Invariant::StateMachineSafety]);
}

/// §5.3: the prevLogIndex/prevLogTerm check. Without it a follower appends after a
/// prefix that differs from the leader's.
#[test]
fn s5_3_prev_log_check_keeps_logs_matching() {
    caught("skip_prev_log_check", 3, &[Invariant::LogMatching, Invariant::StateMachineSafety]);
}

/// Replays one seed with a full trace: see the command a failing test prints.
#[test]
#[ignore = "replay tool: run with QLAB_CHAOS_SEED, QLAB_CHAOS_NODES and QLAB_ABLATE set"]
fn replay_one_seed() {
    let name = std::env::var("QLAB_ABLATE").expect("QLAB_ABLATE");
    let ablate = RaftAblations::only(&name).unwrap_or_else(|| panic!("unknown ablation {name:?}"));
    replay_and_print(
        move |seed, config| run_protocol_chaos_with::<Raft>(seed, config, |c| c.ablate = ablate),
        ChaosConfig::new(nodes_from_env(3)),
    );
}
