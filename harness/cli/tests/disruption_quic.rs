//! The disruption kind on real processes (issue 20, item 2): a follower isolated for
//! 1.5 s and healed, on five `qlab node` processes. Without PreVote its raised term forces
//! an election when it rejoins (Raft thesis §9.6); with PreVote it rejoins quietly. The
//! simulator says the same (`results/disruption-quic/reference`).

use std::path::Path;

mod common;

use common::{csv_rows, qlab, run_ok};

#[test]
fn a_rejoining_follower_forces_an_election_on_real_processes_only_without_pre_vote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rejoin.toml");
    std::fs::write(
        &path,
        r#"[experiment]
name = "rejoin-quic"
kind = "disruption"
mode = "quic"
trials = 1
seed = 4

[cluster]
protocol = "raft"
nodes = 5

[raft]
pre_vote = [false, true]

[workload]
clients = 4
duration_ms = 3500

[disruption]
bin_ms = 50

[[disruption.scenario]]
name = "rejoin"
schedule = [
    { action = "isolate", at_ms = 800, node = "follower" },
    { action = "heal", at_ms = 2300 },
]
"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    run_ok(qlab().arg("run").arg(&path).arg("--out").arg(&out));
    let rows = csv_rows(&out.join("trials.csv"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!((row["mode"].as_str(), row["safety"].as_str()), ("quic", "ok"), "{row:?}");
        let (elections, epochs): (u64, u64) =
            (row["elections"].parse().unwrap(), row["epochs_advanced"].parse().unwrap());
        if row["pre_vote"] == "true" {
            assert_eq!((elections, epochs), (0, 0), "PreVote keeps the rejoining follower's term: {row:?}");
        } else {
            assert!(elections >= 1 && epochs >= 2, "its raised term forces an election: {row:?}");
        }
    }
    assert!(Path::new(&out.join("figures/disruption_timeline.png")).exists());
}
