//! Malicious replicas over QUIC end to end (issue 20, item 1): `kind = "attack"` in quic
//! mode starts one `qlab node` per replica with the malicious ones named in the cluster
//! file, and the checkers judge the honest replicas as in the simulator. PBFT keeps
//! safety against one forger (whose forged votes the honest replicas refuse and count)
//! and loses it to f + 1 = 2 equivocators; Raft's `forge-log` breaks safety exactly when
//! the forger leads; no node process dies on an attacker's bytes.

use std::path::{Path, PathBuf};

mod common;

use common::{Row, csv_rows, qlab, run_ok};

fn experiment(dir: &Path) -> PathBuf {
    let path = dir.join("attack-quic.toml");
    std::fs::write(
        &path,
        r#"[experiment]
name = "attack-quic"
kind = "attack"
mode = ["sim", "quic"]
trials = 2
seed = 7

[cluster]
protocol = ["raft", "pbft"]
f = 1

[attack]
raft = ["forge-log"]
pbft = ["forge-signature", { name = "equivocate", malicious = 2 }]
malicious = 1
from_ms = 500
until_ms = 1500
after_ms = 1000

[workload]
clients = 3
think_ms = 5
"#,
    )
    .unwrap();
    path
}

fn rows(run: &Path) -> Vec<Row> {
    csv_rows(&run.join("trials.csv"))
}

#[test]
fn malicious_replicas_over_quic_break_what_they_break_in_the_simulator_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(qlab().arg("run").arg(experiment(tmp.path())).arg("--out").arg(&run));
    let rows = rows(&run);
    let quic: Vec<&Row> = rows.iter().filter(|r| r["mode"] == "quic").collect();
    assert_eq!(quic.len(), 6, "2 seeds of 3 attacks");
    for row in &quic {
        let what =
            format!("{} {} x{} trial {}: {row:?}", row["protocol"], row["attack"], row["malicious"], row["trial"]);
        assert_ne!(row["safety"], "error", "{what}");
        assert_eq!(row["nodes_exited"], "0", "a node process died: {what}");
        assert_eq!(row["malformed_frames"], "0", "{what}");
        assert!(row["replay"].is_empty(), "a real trial does not replay: {what}");
        match (row["protocol"].as_str(), row["attack"].as_str(), row["malicious"].as_str()) {
            ("pbft", "forge-signature", "1") => {
                assert_eq!(row["safety"], "ok", "{what}");
                let refused: u64 = row["forgeries_refused"].parse().unwrap();
                assert!(refused > 0, "the honest replicas refused no forged vote: {what}");
                assert!(row["recovered"] == "true", "{what}");
            }
            ("pbft", "equivocate", "2") => {
                assert!(row["safety"].contains("state-machine-safety"), "f + 1 equivocators and still safe: {what}");
            }
            ("raft", "forge-log", "1") => {
                let forger_led = row["leader_at_attack"] == "0";
                assert_eq!(
                    row["safety"] != "ok",
                    forger_led,
                    "forge-log breaks Raft exactly when the forger leads: {what}"
                );
                assert_eq!(row["forgeries_refused"], "", "Raft signs nothing: {what}");
            }
            other => panic!("unexpected row {other:?}"),
        }
    }
    // The simulated rows of the same file are judged alike, and the summary sets the
    // two modes side by side.
    let summary = std::fs::read_to_string(run.join("summary.csv")).unwrap();
    assert!(summary.lines().next().unwrap().contains("agrees_with_sim"), "{summary}");
    let pbft_quic_equivocate = summary
        .lines()
        .find(|l| l.starts_with("pbft,quic,4,equivocate,2,none"))
        .unwrap_or_else(|| panic!("no quic equivocate row in {summary}"));
    assert!(pbft_quic_equivocate.ends_with(",yes"), "{pbft_quic_equivocate}");
}
