//! Refactors keep behaviour: a committed *simulator* reference run, re-run from its
//! experiment file, gives the same `trials.csv` rows (order aside, since trials finish
//! in any order on several jobs). CI re-runs a fast subset; every simulator reference:
//!
//! ```text
//! QLAB_ALL_REFERENCES=1 cargo test --release -p qlab --test references
//! ```
//!
//! (about 16 minutes on 2 cores, 939 s of test on 2026-12-04; most of it the 1,350-trial
//! attack matrix and the 2,432 PBFT attack-chaos runs; since 2026-12-07 the 10,000-seed
//! soaks add about half an hour, nearly all of it `soak-pbft`). Real-mode
//! references are not deterministic and are not compared here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Simulator references that re-run in seconds.
const FAST: &[&str] = &[
    "raft-figure16",
    "raft-figure16-disk",
    "raft-figure16-9-servers",
    "raft-vs-paxos-election",
    "seed-counterexamples",
    "rejoin-disruption",
    "leader-transfer",
    "attack-chaos-cft",
    "fsync-lies",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether every point of the experiment runs on the simulator.
fn simulator_only(experiment: &Path) -> bool {
    let text = std::fs::read_to_string(experiment).expect("experiment file");
    let file: toml::Table = toml::from_str(&text).expect("experiment file parses");
    match file.get("experiment").and_then(|e| e.get("mode")) {
        None => true,
        Some(toml::Value::String(mode)) => mode == "sim",
        Some(toml::Value::Array(modes)) => modes.iter().all(|m| m.as_str() == Some("sim")),
        Some(other) => panic!("{}: mode {other} is neither a string nor a list", experiment.display()),
    }
}

fn rows(csv_path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(csv_path).unwrap_or_else(|e| panic!("{}: {e}", csv_path.display()));
    let header = reader.headers().expect("header").iter().map(str::to_string).collect();
    let mut rows: Vec<Vec<String>> =
        reader.records().map(|r| r.expect("a csv record").iter().map(str::to_string).collect()).collect();
    rows.sort();
    (header, rows)
}

/// `None` if the re-run matches the reference, else what differs. The `replay` column
/// names the run directory, so the re-run's directory is read as the reference's.
fn compare(name: &str, out: &Path) -> Option<String> {
    let reference_dir = format!("results/{name}/reference");
    let reference = repo().join(&reference_dir).join("trials.csv");
    let (old_header, old_rows) = rows(&reference);
    let (new_header, mut new_rows) = rows(&out.join("trials.csv"));
    let out_dir = out.display().to_string();
    for row in &mut new_rows {
        for cell in row.iter_mut() {
            if cell.contains(&out_dir) {
                *cell = cell.replace(&out_dir, &reference_dir);
            }
        }
    }
    new_rows.sort();
    if old_header != new_header {
        return Some(format!("{name}: columns differ: reference {old_header:?}, re-run {new_header:?}"));
    }
    if old_rows == new_rows {
        return None;
    }
    let trial_column = old_header.iter().position(|c| c == "trial");
    let key = |row: &Vec<String>| trial_column.map_or_else(|| row.join(","), |i| row[i].clone());
    let old: BTreeMap<String, &Vec<String>> = old_rows.iter().map(|r| (key(r), r)).collect();
    let mut differing = Vec::new();
    for row in &new_rows {
        match old.get(&key(row)) {
            Some(before) if *before != row => {
                let columns: Vec<&str> = old_header
                    .iter()
                    .zip(before.iter().zip(row))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, _)| c.as_str())
                    .collect();
                differing.push(format!("trial {}: {columns:?}", key(row)));
            }
            Some(_) => {}
            None => differing.push(format!("trial {} is not in the reference", key(row))),
        }
    }
    Some(format!(
        "{name}: {} of {} rows differ (re-run has {}); first: {:?}",
        differing.len(),
        old_rows.len(),
        new_rows.len(),
        &differing[..differing.len().min(5)]
    ))
}

#[test]
fn simulator_references_rerun_to_the_same_rows() {
    let all = std::env::var_os("QLAB_ALL_REFERENCES").is_some();
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(repo().join("results")).expect("results/") {
        let dir = entry.expect("entry").path();
        let name = dir.file_name().expect("name").to_string_lossy().into_owned();
        let experiment = repo().join("experiments").join(format!("{name}.toml"));
        if dir.join("reference/trials.csv").is_file()
            && experiment.is_file()
            && simulator_only(&experiment)
            && (all || FAST.contains(&name.as_str()))
        {
            names.push(name);
        }
    }
    names.sort();
    assert!(all || names.len() == FAST.len(), "a fast reference is missing or runs in real mode: {names:?}");
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut failures = Vec::new();
    for name in &names {
        let out = scratch.path().join(name);
        let status = Command::new(env!("CARGO_BIN_EXE_qlab"))
            .current_dir(repo())
            .args(["run", &format!("experiments/{name}.toml"), "--out"])
            .arg(&out)
            .output()
            .expect("qlab runs");
        assert!(status.status.success(), "{name}: qlab run failed: {}", String::from_utf8_lossy(&status.stderr));
        failures.extend(compare(name, &out));
    }
    assert!(failures.is_empty(), "re-runs differ from their references:\n{}", failures.join("\n"));
}
