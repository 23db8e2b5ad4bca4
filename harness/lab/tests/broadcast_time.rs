//! Raft paper §5.6: "broadcastTime ≪ electionTimeout ≪ MTBF", where the broadcast time
//! is "the average time it takes a server to send RPCs in parallel to every server in
//! the cluster and receive their responses ... [it] may range from 0.5ms to 20ms,
//! depending on storage technology" (the recipients persist before they answer).
//!
//! `[storage] fsync_ms` puts a disk under every simulated node, and election rows
//! report the broadcast time the run produced (`broadcast_ms_mean`), so both halves of
//! that sentence are measured: the network both ways, plus the recipients' writes.

use qlab_lab::config::Point;
use qlab_lab::registry::Registry;
use std::path::Path;

fn experiment(storage: &str, extra: &str) -> String {
    format!(
        "[experiment]\nname = \"bt\"\nkind = \"election\"\ntrials = 20\nseed = 5\n{extra}\n\n[cluster]\nprotocol = \
         \"raft\"\nnodes = 5\n\n[network]\nlatency_ms = {{ dist = \"constant\", value = 1.0 }}\n\n{storage}\n\n[raft]\nelection_timeout_ms = [150, \
         300]\n\n[faults]\ncrash = {{ who = \"leader\", at = \"after-heartbeat-broadcast\" }}\n\n[workload]\nclients \
         = 0\n"
    )
}

/// Mean broadcast time and mean election time over the file's trials.
fn measured(text: String) -> (f64, f64) {
    let (experiment, kind) = Registry::builtin().parse(Path::new("bt.toml"), text).unwrap();
    let points: Vec<Point> = kind.points(&experiment);
    let (mut broadcast, mut election) = (Vec::new(), Vec::new());
    for seed in 0..experiment.trials() {
        let trial =
            qlab_lab::election::run_trial::<qlab_lab::protocol_list::Raft>(&experiment, &points[0], seed, false);
        assert!(trial.safety.is_ok() && !trial.censored, "seed {seed}: {:?}", trial.violations);
        assert!(trial.broadcast_rounds >= 1, "seed {seed}: no round closed");
        broadcast.push(trial.broadcast_ms_mean.expect("a closed round"));
        election.push(trial.election_ms);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&broadcast), mean(&election))
}

#[test]
fn s5_6_broadcast_time_is_the_network_both_ways_plus_the_recipients_disk() {
    // A constant 1 ms link and no disk: every persisting round takes exactly 2 ms.
    let (instant, instant_election) = measured(experiment("", ""));
    assert!((instant - 2.0).abs() < 1e-9, "instant disk: {instant} ms");
    // A 10 ms write on the recipients' side: 12 ms, or a little more when a write
    // queues behind another on the same disk.
    let (disk, disk_election) = measured(experiment("[storage]\nfsync_ms = { dist = \"constant\", value = 10.0 }", ""));
    assert!((12.0..13.0).contains(&disk), "10 ms disk: {disk} ms");
    // The candidate's own write is on the election's critical path too: its
    // RequestVote leaves only once its term and vote are durable.
    assert!(disk_election > instant_election + 15.0, "elections {instant_election} -> {disk_election} ms");
}

#[test]
fn a_zero_fsync_is_the_instant_disk_row_for_row() {
    let text = experiment("", "");
    let (experiment_a, kind) = Registry::builtin().parse(Path::new("bt.toml"), text).unwrap();
    let (experiment_b, _) = Registry::builtin()
        .parse(Path::new("bt.toml"), experiment("[storage]\nfsync_ms = { dist = \"constant\", value = 0.0 }", ""))
        .unwrap();
    let (a, b) = (kind.points(&experiment_a), kind.points(&experiment_b));
    for seed in 0..5 {
        let run = |e, p: &Point| qlab_lab::election::run_trial::<qlab_lab::protocol_list::Raft>(e, p, seed, true);
        assert_eq!(run(&experiment_a, &a[0]).trace, run(&experiment_b, &b[0]).trace, "seed {seed}");
    }
}

#[test]
fn storage_mistakes_are_refused_at_their_line() {
    let refused = |text: String| match Registry::builtin().parse(Path::new("bt.toml"), text) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let error = refused(experiment("[storage]\nfsync_ms = { dist = \"normal\", mean = -3.0, stddev = 1.0 }", ""));
    assert!(error.contains("bt.toml:16:") && error.contains("fsync_ms must be non-negative"), "{error}");
    let error = refused(experiment("[storage]\nfsync_ms = { dist = \"constant\", value = 5.0 }", "mode = \"quic\""));
    assert!(error.contains("bt.toml:16:") && error.contains("machine's own disk"), "{error}");
    let error = refused(experiment("[storage]\nfsync = { dist = \"constant\", value = 5.0 }", ""));
    assert!(error.contains("bt.toml:16:") && error.contains("fsync_ms"), "{error}");
    let throughput = experiment(
        "[storage]\nfsync_ms = [{ dist = \"constant\", value = 1.0 }, { dist = \"constant\", value = 5.0 }]",
        "",
    )
    .replace("kind = \"election\"", "kind = \"throughput\"")
    .replace("[faults]\ncrash = { who = \"leader\", at = \"after-heartbeat-broadcast\" }\n", "")
    .replace("clients = 0", "clients = 1");
    let error = refused(throughput);
    assert!(error.contains("bt.toml:16:") && error.contains("takes one value here"), "{error}");
}
