//! Runs that split and resume (issue 40): `qlab run --shard K/N` runs every N-th trial
//! from K with the seeds the whole run would give them, `qlab merge` joins the shards
//! into the whole run (the same rows, summary and figures), refuses what is not shards
//! of one run, and `qlab run --resume` finishes a killed run without running a trial
//! twice.

mod common;

use common::{qlab, run_ok};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rows of a `trials.csv`, sorted (a run with several jobs writes them as trials finish).
fn sorted_rows(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("trials.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort();
    lines
}

/// Every file of a run's figures directory, by name.
fn figures(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("figures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn the_quickstart_in_three_shards_merged_is_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = root().join("experiments/quickstart.toml");
    let whole = tmp.path().join("whole");
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&whole));
    let shards: Vec<PathBuf> = (0..3).map(|k| tmp.path().join(format!("shard{k}"))).collect();
    for (k, dir) in shards.iter().enumerate() {
        let out = run_ok(qlab().arg("run").arg(&file).arg("--shard").arg(format!("{k}/3")).arg("--out").arg(dir));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("shard {k}/3 of the run")));
        // Every third trial from k, each once.
        let rows = common::csv_rows(&dir.join("trials.csv"));
        assert_eq!(rows.len(), 1000, "3,000 trials in three shards");
        assert!(rows.iter().all(|r| r["trial"].parse::<usize>().unwrap() % 3 == k));
    }
    let merged = tmp.path().join("merged");
    let out = run_ok(qlab().arg("merge").args(&shards).arg("--out").arg(&merged));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3000 trials from 3 runs") && !stdout.contains("MISSING"), "{stdout}");
    assert_eq!(sorted_rows(&merged), sorted_rows(&whole), "the same rows, order aside");
    assert_eq!(
        std::fs::read_to_string(merged.join("summary.csv")).unwrap(),
        std::fs::read_to_string(whole.join("summary.csv")).unwrap()
    );
    let (merged_figures, whole_figures) = (figures(&merged), figures(&whole));
    assert!(!whole_figures.is_empty());
    assert!(merged_figures == whole_figures, "the merged run's figures are the whole run's");
    let meta = std::fs::read_to_string(merged.join("meta.json")).unwrap();
    assert!(meta.contains("\"merged_from\"") && meta.contains("shard 2/3"), "{meta}");

    // Two shards of three: merged, but what is missing is said, and the run is partial.
    let partial = tmp.path().join("partial");
    let output = qlab().arg("merge").arg(&shards[0]).arg(&shards[2]).arg("--out").arg(&partial).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("MISSING: 1000 of 3000 trials are in none of these runs: 1, 4, 7"), "{stdout}");
    assert!(stdout.contains("PARTIAL"), "{stdout}");
    assert_eq!(output.status.code(), Some(130));

    // A shard merged with itself: refused, nothing written.
    let twice = tmp.path().join("twice");
    let output = qlab().arg("merge").arg(&shards[0]).arg(&shards[0]).arg("--out").arg(&twice).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1000 trial(s) have rows in two places") && stderr.contains("trial 0 in"), "{stderr}");
    assert!(!twice.exists(), "a refused merge writes nothing");

    // A shard of another experiment (the same file with another seed is another run too).
    let other = tmp.path().join("other");
    run_ok(qlab().arg("run").arg(&file).arg("--shard").arg("1/3").arg("--seed").arg("7").arg("--out").arg(&other));
    let output = qlab().arg("merge").arg(&shards[0]).arg(&other).arg("--out").arg(&twice).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("are not shards of one run: their seeds differ (1 and 7)"), "{stderr}");
    // A shard of another experiment file (the quickstart with one timeout range changed).
    let changed = tmp.path().join("changed.toml");
    std::fs::write(&changed, std::fs::read_to_string(&file).unwrap().replace("[150, 155]", "[150, 160]")).unwrap();
    let changed_shard = tmp.path().join("changed");
    run_ok(qlab().arg("run").arg(&changed).arg("--shard").arg("1/3").arg("--out").arg(&changed_shard));
    let output = qlab().arg("merge").arg(&shards[0]).arg(&changed_shard).arg("--out").arg(&twice).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("their experiment files differ"), "{output:?}");
    assert!(!twice.exists());

    // Bad shard specifications are refused before anything runs.
    for bad in ["3/3", "1", "a/3", "0/0"] {
        let output = qlab().arg("run").arg(&file).arg("--shard").arg(bad).arg("--out").arg(&twice).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "--shard {bad}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("--shard {bad}")), "{output:?}");
    }
    assert!(!twice.exists());
}

/// A run killed outright (SIGKILL, no chance to write anything more) and resumed: every
/// trial has exactly one row, the rows are the uninterrupted run's, and a half-written
/// last row is cut off and its trial run again.
#[test]
fn a_killed_run_resumes_where_it_stopped_and_runs_no_trial_twice() {
    let tmp = tempfile::tempdir().unwrap();
    // The quickstart with ten times the trials: long enough to be killed mid-run.
    let text = std::fs::read_to_string(root().join("experiments/quickstart.toml")).unwrap();
    let file = tmp.path().join("long.toml");
    std::fs::write(&file, text.replace("trials = 500", "trials = 5000")).unwrap();
    let killed = tmp.path().join("killed");
    let mut child = qlab().arg("run").arg(&file).arg("--out").arg(&killed).spawn().unwrap();
    let csv = killed.join("trials.csv");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 2000 {
        assert!(started.elapsed().as_secs() < 120, "the run never wrote 2,000 rows");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let rows_before = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    assert!(rows_before < 30_000, "killed before the end: {rows_before} rows");
    // As if the kill had come in the middle of a row.
    let mut bytes = std::fs::read(&csv).unwrap();
    bytes.extend_from_slice(b"raft,sim,3,150,1");
    std::fs::write(&csv, bytes).unwrap();

    let out = run_ok(qlab().arg("run").arg("--resume").arg(&killed));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("30000 trials in") && !stdout.contains("PARTIAL"), "{stdout}");
    let rows = common::csv_rows(&csv);
    let mut trials: Vec<u64> = rows.iter().map(|r| r["trial"].parse().unwrap()).collect();
    trials.sort();
    assert_eq!(trials, (0..30_000).collect::<Vec<u64>>(), "every trial once");
    let meta = std::fs::read_to_string(killed.join("meta.json")).unwrap();
    assert!(meta.contains("\"resumed_at\"") && meta.contains("\"trials_done\": 30000"), "{meta}");

    // The same rows as a run never killed.
    let whole = tmp.path().join("whole");
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&whole));
    assert_eq!(sorted_rows(&killed), sorted_rows(&whole));
    assert_eq!(
        std::fs::read_to_string(killed.join("summary.csv")).unwrap(),
        std::fs::read_to_string(whole.join("summary.csv")).unwrap()
    );

    // Nothing left: refused.
    let output = qlab().arg("run").arg("--resume").arg(&killed).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to resume"), "{output:?}");
}
