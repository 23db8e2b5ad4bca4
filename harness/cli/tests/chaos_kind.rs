//! The `chaos` kind end to end (issue 40): the three committed chaos files run their 200
//! seeds each with zero unsafe seeds and every seed live after the heal, each row with
//! its drawn scenario and coverage marks; a switched-off rule under the same kind is
//! caught, and `qlab replay` reproduces the first failing seed.

mod common;

use common::{csv_rows, qlab, run_ok};
use std::path::Path;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_protocol_is_safe_and_live_over_its_chaos_files_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, protocol, sizes) in [
        ("chaos-raft", "raft", ["3", "5"]),
        ("chaos-multipaxos", "multipaxos", ["3", "5"]),
        ("chaos-pbft", "pbft", ["4", "7"]),
    ] {
        let dir = tmp.path().join(file);
        let out = run_ok(qlab().arg("run").arg(root().join(format!("experiments/{file}.toml"))).arg("--out").arg(&dir));
        assert!(String::from_utf8_lossy(&out.stdout).contains("safety: every trial ok"), "{file}");
        let summary = csv_rows(&dir.join("summary.csv"));
        let total = summary.iter().find(|r| r["nodes"].is_empty()).expect("a row over every size");
        assert_eq!(
            (total["protocol"].as_str(), total["seeds"].as_str(), total["ok"].as_str()),
            (protocol, "200", "200"),
            "{file}: {total:?}"
        );
        assert_eq!((total["unsafe"].as_str(), total["not_live"].as_str()), ("0", "0"), "{file}");
        let rows = csv_rows(&dir.join("trials.csv"));
        // The seeds drew both sizes and both sides of every fault switch.
        for size in sizes {
            assert!(rows.iter().any(|r| r["nodes"] == size), "{file}: no seed drew {size} nodes");
        }
        for column in ["crashes", "partitions", "loss", "duplication", "reordering", "disk_faults", "compaction"] {
            let on = rows.iter().filter(|r| r[column] == "true").count();
            assert!((40..=160).contains(&on), "{file}: {column} on in {on} of 200 seeds");
        }
        assert!(rows.iter().all(|r| r["verdict"] == "ok" && r["replay"].is_empty()));
        // Coverage: every mark of the protocol is listed, reached by some seeds or not.
        let coverage = csv_rows(&dir.join("coverage.csv"));
        assert!(coverage.len() >= 7, "{file}: {coverage:?}");
        assert!(coverage.iter().filter(|r| r["seeds_reaching"] != "0").count() >= 5, "{file}: {coverage:?}");
        assert!(dir.join("figures/chaos_matrix.svg").exists());
    }
}

#[test]
fn a_switched_off_rule_is_caught_under_the_same_kind_and_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("experiments/chaos-raft.toml")).unwrap();
    let file = tmp.path().join("chaos-raft-no-log-check.toml");
    std::fs::write(&file, text.replace("[chaos]", "[raft.ablate]\nvote_without_log_check = true\n\n[chaos]")).unwrap();
    let dir = tmp.path().join("run");
    let output = qlab().arg("run").arg(&file).arg("--out").arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SAFETY:"), "{stdout}");
    let summary = csv_rows(&dir.join("summary.csv"));
    let total = summary.iter().find(|r| r["nodes"].is_empty()).unwrap();
    let unsafe_seeds: usize = total["unsafe"].parse().unwrap();
    assert!(unsafe_seeds >= 10, "{total:?}");
    assert!(total["invariants"].contains("leader-completeness"), "{total:?}");
    let first = &total["first_failing_trial"];
    let rows = csv_rows(&dir.join("trials.csv"));
    let row = rows.iter().find(|r| &r["trial"] == first).unwrap();
    assert_eq!(row["seed"], total["first_failing_seed"]);
    assert!(row["replay"].contains(&format!("--trial {first}")), "{row:?}");
    let replay = run_ok(qlab().arg("replay").arg(&dir).arg("--trial").arg(first).arg("--max-lines").arg("5"));
    let replayed = String::from_utf8_lossy(&replay.stdout);
    assert!(replayed.contains("recorded unsafe: replay matches"), "{replayed}");
    assert!(replayed.contains("drawn: Scenario"), "the replay says what the seed drew: {replayed}");
}
