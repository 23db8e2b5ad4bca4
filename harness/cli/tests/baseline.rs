//! The unreplicated baseline beside Raft, end to end through `qlab run`, in the
//! simulator and as real `qlab node` processes over QUIC: every trial is judged safe,
//! the baseline sends no replica-to-replica message, and in the simulator (where the
//! network is the same for both) it answers faster than Raft, whose commit waits for a
//! majority round trip.

use std::process::Command;

fn summary_rows(path: &std::path::Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(path).unwrap().records().map(Result::unwrap).collect()
}

#[test]
fn the_unreplicated_baseline_runs_beside_raft_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.toml");
    std::fs::write(
        &file,
        r#"# What does replication cost? One server against Raft on the same load.
[experiment]
name = "baseline"
kind = "throughput"
mode = ["sim", "quic"]
trials = 1

[cluster]
protocol = ["unreplicated", "raft"]
nodes = 3

[workload]
clients = 4
value_bytes = 64
warmup_ms = 200
duration_ms = 600
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let output =
        Command::new(env!("CARGO_BIN_EXE_qlab")).arg("run").arg(&file).arg("--out").arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("safety: every trial ok"), "{stdout}");

    let mut trials = csv::Reader::from_path(out.join("trials.csv")).unwrap();
    let headers = trials.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = trials.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4, "two protocols in two modes");
    for row in &rows {
        assert_eq!(&row[column("safety")], "ok", "{row:?}");
        let ops_per_s: f64 = row[column("ops_per_s")].parse().unwrap();
        assert!(ops_per_s > 50.0, "{row:?}");
        if &row[column("protocol")] == "unreplicated" {
            assert_eq!(row[column("msgs_per_op")].parse::<f64>().unwrap(), 0.0, "{row:?}");
        }
    }
    let p50 = |protocol: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| &r[column("protocol")] == protocol && &r[column("mode")] == "sim")
            .unwrap_or_else(|| panic!("no sim row for {protocol}"));
        row[column("latency_ms_p50")].parse().unwrap()
    };
    assert!(p50("unreplicated") < p50("raft"), "unreplicated {} ms vs raft {} ms", p50("unreplicated"), p50("raft"));
    assert_eq!(summary_rows(&out.join("summary.csv")).len(), 4);
}

/// The baseline has no election to time: a file asking for one is refused with why.
#[test]
fn an_election_experiment_refuses_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("el.toml");
    std::fs::write(
        &file,
        "[experiment]\nname = \"el\"\nkind = \"election\"\ntrials = 1\n[cluster]\nprotocol = \"unreplicated\"\nnodes = 3\n[faults]\ncrash = { who = \"leader\", at = \"random-in-heartbeat\" }\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_qlab")).arg("run").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("el.toml:6:12:") && stderr.contains("one-server baseline"), "{stderr}");
}
