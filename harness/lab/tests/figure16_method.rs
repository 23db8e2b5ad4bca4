//! Raft paper §9.3, how Figure 16 was measured: "our test script triggered a
//! synchronized broadcast of heartbeat RPCs from the leader before terminating its
//! process ... The leader was crashed uniformly randomly within its heartbeat interval,
//! which was half of the minimum election timeout for all tests. Thus, the smallest
//! possible downtime was about half of the minimum election timeout."
//!
//! `crash.at = "after-heartbeat-broadcast"` is that sequence; `"random-in-heartbeat"`
//! with `sync_heartbeats_before_crash` broadcasts at the crash itself, which restarts
//! every follower's timer at the crash, so no election can end before a whole minimum
//! timeout. The floor of each, over many trials, tells them apart.

use qlab_lab::config::Point;
use qlab_lab::registry::Registry;
use std::path::Path;

/// The shortest and the median election over `trials` trials of Figure 16's 150–300 ms
/// point (5 servers, heartbeat half the minimum timeout, 3 ms one-way delay), with the
/// crash sequence the `[faults]` lines give.
fn shortest_and_median(faults: &str, trials: u64) -> (f64, f64) {
    let text = format!(
        "[experiment]\nname = \"f16\"\nkind = \"election\"\ntrials = {trials}\nseed = 16\n\n[cluster]\nprotocol = \
         \"raft\"\nnodes = 5\n\n[network]\nlatency_ms = {{ dist = \"normal\", mean = 3.0, stddev = 0.6 }}\n\n[raft]\n\
         election_timeout_ms = [150, 300]\nheartbeat_ms = \"half-min-timeout\"\n\n[faults]\n{faults}\n\n[workload]\n\
         clients = 0\n"
    );
    let (experiment, kind) = Registry::builtin().parse(Path::new("f16.toml"), text).unwrap();
    let points: Vec<Point> = kind.points(&experiment);
    let mut elections: Vec<f64> = (0..trials)
        .map(|seed| {
            let trial =
                qlab_lab::election::run_trial::<qlab_lab::protocol_list::Raft>(&experiment, &points[0], seed, false);
            assert!(!trial.censored && trial.safety.is_ok(), "seed {seed}");
            trial.election_ms
        })
        .collect();
    elections.sort_by(f64::total_cmp);
    (elections[0], elections[elections.len() / 2])
}

#[test]
fn s9_3_the_papers_sequence_can_end_an_election_after_half_the_minimum_timeout() {
    let (shortest, median) =
        shortest_and_median("crash = { who = \"leader\", at = \"after-heartbeat-broadcast\" }", 300);
    // Half the 150 ms minimum (the followers' timers ran up to one 75 ms interval before
    // the crash), plus a vote round and the new leader's heartbeat: well under 150 ms.
    assert!((75.0..120.0).contains(&shortest), "shortest {shortest} ms");
    eprintln!("after-heartbeat-broadcast: shortest {shortest:.1} ms, median {median:.1} ms");
    let (old_shortest, old_median) = shortest_and_median(
        "crash = { who = \"leader\", at = \"random-in-heartbeat\" }\nsync_heartbeats_before_crash = true",
        300,
    );
    // A broadcast at the crash restarts every timer then: a whole minimum timeout first.
    assert!(old_shortest >= 150.0, "shortest {old_shortest} ms");
    eprintln!("broadcast at the crash: shortest {old_shortest:.1} ms, median {old_median:.1} ms");
    // On average the paper's sequence saves about half an interval (37.5 ms).
    assert!((15.0..60.0).contains(&(old_median - median)), "median {median} against {old_median} ms");
}

/// The paper's sequence reaches into the simulator (it fires the leader's heartbeat
/// timer), so real mode refuses it, and it contradicts a broadcast at the crash.
#[test]
fn the_papers_sequence_is_refused_where_it_cannot_be_done() {
    let base = "[experiment]\nname = \"f16\"\nkind = \"election\"\ntrials = 1\n\n[cluster]\nprotocol = \
                \"raft\"\nnodes = 5\n\n[faults]\ncrash = { who = \"leader\", at = \"after-heartbeat-broadcast\" }\n";
    let both = format!("{base}sync_heartbeats_before_crash = true\n");
    let refused = |text: String| match Registry::builtin().parse(Path::new("f16.toml"), text) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let error = refused(both);
    assert!(error.contains("f16.toml:") && error.contains("contradicts"), "{error}");
    let quic = base.replace("trials = 1", "trials = 1\nmode = \"quic\"");
    let error = refused(quic);
    assert!(error.contains("not available in quic mode"), "{error}");
}
