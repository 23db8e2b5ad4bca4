//! End-to-end tests of the `qlab` binary: what a researcher types, what lands on disk.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{qlab, run_ok};

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn data_rows(csv: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(csv).expect("csv exists");
    text.lines().skip(1).map(str::to_string).collect()
}

/// A small election experiment: 2 points × `trials` trials.
fn small_experiment(dir: &Path, trials: u32) -> PathBuf {
    let path = dir.join("small.toml");
    std::fs::write(
        &path,
        format!(
            r#"# A small test experiment.
[experiment]
name = "small"
kind = "election"
trials = {trials}
seed = 5

[cluster]
protocol = "raft"
nodes = [3, 5]

[network]
latency_ms = {{ dist = "uniform", min = 1, max = 3 }}

[faults]
crash = {{ who = "leader", at = "random-in-heartbeat" }}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn quickstart_writes_csv_summary_meta_and_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = run_ok(qlab().args(["run"]).arg(repo_file("experiments/quickstart.toml")).arg("--out").arg(&out));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("safety: every trial ok"), "{stdout}");

    let rows = data_rows(&out.join("trials.csv"));
    let header = std::fs::read_to_string(out.join("trials.csv")).unwrap().lines().next().unwrap().to_string();
    for column in [
        "protocol",
        "nodes",
        "election_timeout_ms_min",
        "election_timeout_ms_max",
        "trial",
        "seed",
        "election_ms",
        "unavailable_ms",
        "terms",
        "safety",
    ] {
        assert!(header.split(',').any(|c| c == column), "missing column {column} in {header}");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(rows.len() as u64, meta["trials_planned"].as_u64().unwrap());
    assert!(rows.len() >= 1000, "quickstart should be a real sample, got {} trials", rows.len());
    assert!(rows.iter().all(|r| r.contains(",ok,")), "every quickstart trial is safe");
    for field in ["git_commit", "seed", "machine", "started_at", "finished_at", "qlab_version"] {
        assert!(!meta[field].is_null(), "meta.json lacks {field}");
    }
    assert!(data_rows(&out.join("summary.csv")).len() >= 2);
    assert!(std::fs::read_to_string(out.join("experiment.toml")).unwrap().contains("name = \"quickstart\""));

    let png = std::fs::read(out.join("figures/election_cdf.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a PNG with drawn text and curves, got {} bytes", png.len());
    let svg = std::fs::read_to_string(out.join("figures/election_cdf.svg")).unwrap();
    assert!(svg.contains("time without a leader (ms, log scale)"), "axis label in the SVG");
    assert!(svg.contains("trials (cumulative %)"));
    assert!(out.join("figures/unavailable_cdf.png").exists());
}

#[test]
fn default_run_directory_and_latest_link() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), 3);
    run_ok(qlab().current_dir(tmp.path()).args(["run", "small.toml"]));
    let latest = tmp.path().join("results/small/latest");
    assert!(latest.join("trials.csv").exists(), "results/small/latest/trials.csv");
    assert_eq!(data_rows(&latest.join("trials.csv")).len(), 6);
    // Provenance is the binary's, not the working directory's: this run's directory is
    // no git checkout, yet meta.json names the commit and profile qlab was built from.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(latest.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["git_commit"], env!("QLAB_BUILD_COMMIT"), "the build's commit");
    assert_ne!(meta["git_commit"], "unknown", "built from a checkout, so the commit is known");
    assert_eq!(meta["build_profile"], env!("QLAB_BUILD_PROFILE"));
    assert_eq!(meta["debug_assertions"], cfg!(debug_assertions));
    let _ = file;
}

fn assert_refused(text_edit: impl Fn(&str) -> String, expected: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(small_experiment(tmp.path(), 2)).unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, text_edit(&good)).unwrap();
    let out_dir = tmp.path().join("out");
    let output = qlab().current_dir(tmp.path()).args(["run", "bad.toml", "--out"]).arg(&out_dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for needle in expected {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out_dir.exists(), "nothing but the error may be written");
    assert!(!tmp.path().join("results").exists(), "nothing but the error may be written");
}

#[test]
fn unknown_field_names_file_line_column_and_allowed_fields() {
    assert_refused(
        |t| t.replace("trials = 2", "trials = 2\ntrails = 2"),
        &["bad.toml:6:1:", "unknown field `trails`", "`trials`"],
    );
}

#[test]
fn unknown_protocol_names_the_allowed_protocols() {
    assert_refused(
        |t| t.replace("protocol = \"raft\"", "protocol = \"zab\""),
        &["bad.toml:9:12:", "unknown variant `zab`", "`raft`"],
    );
}

#[test]
fn unknown_kind_names_the_allowed_kinds() {
    assert_refused(|t| t.replace("kind = \"election\"", "kind = \"throughputs\""), &["bad.toml:4:8:", "`election`"]);
}

#[test]
fn inverted_or_negative_timeout_range_is_refused() {
    let with_range = |range: &'static str| {
        move |t: &str| t.replace("[faults]", &format!("[raft]\nelection_timeout_ms = {range}\n\n[faults]"))
    };
    assert_refused(with_range("[300, 150]"), &["bad.toml:16:23:", "0 < min <= max", "[300, 150]"]);
    assert_refused(with_range("[-10, 150]"), &["bad.toml:16:", "0 < min <= max"]);
}

#[test]
fn cluster_too_small_for_the_protocol_is_refused() {
    assert_refused(|t| t.replace("nodes = [3, 5]", "nodes = [1, 3]"), &["bad.toml:10:9:", "at least 3 nodes", "got 1"]);
}

#[test]
fn missing_file_is_a_clear_error() {
    let output = qlab().args(["run", "/nonexistent/experiment.toml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/experiment.toml") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn plot_redraws_figures_and_summary_from_the_csv_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), 5);
    let out = tmp.path().join("run");
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&out));
    let summary_before = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    std::fs::remove_dir_all(out.join("figures")).unwrap();
    std::fs::remove_file(out.join("summary.csv")).unwrap();
    std::fs::remove_file(out.join("experiment.toml")).unwrap();
    run_ok(qlab().arg("plot").arg(&out));
    assert!(out.join("figures/election_cdf.svg").exists() && out.join("figures/election_cdf.png").exists());
    assert_eq!(std::fs::read_to_string(out.join("summary.csv")).unwrap(), summary_before);
    // A trials.csv alone, copied elsewhere, is enough.
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(out.join("trials.csv"), bare.join("trials.csv")).unwrap();
    run_ok(qlab().arg("plot").arg(&bare));
    assert!(bare.join("figures/election_cdf.png").exists());
    assert_eq!(std::fs::read_to_string(bare.join("summary.csv")).unwrap(), summary_before);
}

#[test]
fn replay_reproduces_a_trial_with_a_readable_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), 4);
    let out = tmp.path().join("run");
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&out).args(["--jobs", "2"]));
    for trial in ["0", "6"] {
        let output = run_ok(qlab().arg("replay").arg(&out).args(["--trial", trial]));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("replay matches"), "{stdout}");
        assert!(stdout.contains("CRASH"), "the trace shows the crash");
        assert!(stdout.contains("RequestVote"), "the trace shows the election");
        // A dropped or refused message says why: a vote arriving after the election is
        // won, or one refused because the voter already voted in the term (§5.2).
        assert!(
            stdout.contains("ignored vote_response from") || stdout.contains("rejected request_vote from"),
            "the trace gives the reasons of dropped messages: {stdout}"
        );
    }
    // A throughput run's trials are not election replays: a clear refusal, no panic.
    let tp = tmp.path().join("tp.toml");
    std::fs::write(
        &tp,
        "# t\n[experiment]\nname = \"tp\"\nkind = \"throughput\"\ntrials = 1\n[cluster]\nprotocol = \"raft\"\nnodes = 3\n[workload]\nclients = 2\nwarmup_ms = 100\nduration_ms = 200\n",
    )
    .unwrap();
    let tp_out = tmp.path().join("tp-run");
    run_ok(qlab().arg("run").arg(&tp).arg("--out").arg(&tp_out));
    let refused = qlab().arg("replay").arg(&tp_out).args(["--trial", "0"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains(
        "re-runs simulated election, attack, attack-chaos, chaos, reads, counterexample and disruption trials"
    ));
    let output = qlab().arg("replay").arg(&out).args(["--trial", "99"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("trials 0..7"));
}

#[test]
fn jobs_do_not_change_results_and_seed_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), 6);
    let sorted_rows = |dir: &Path| {
        let mut rows = data_rows(&dir.join("trials.csv"));
        rows.sort();
        rows
    };
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&one).args(["--jobs", "1"]));
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&two).args(["--jobs", "2"]));
    assert_eq!(sorted_rows(&one), sorted_rows(&two));
    let other = tmp.path().join("other");
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&other).args(["--seed", "77"]));
    assert_ne!(sorted_rows(&one), sorted_rows(&other));
    let meta = std::fs::read_to_string(other.join("meta.json")).unwrap();
    assert!(meta.contains("\"seed\": 77"), "{meta}");
}

#[test]
fn an_interrupted_run_keeps_the_trials_it_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), 200_000);
    let out = tmp.path().join("run");
    let mut child = qlab().arg("run").arg(&file).arg("--out").arg(&out).args(["--jobs", "1"]).spawn().unwrap();
    let csv = out.join("trials.csv");
    let started = std::time::Instant::now();
    while data_rows_if_exists(&csv) < 20 {
        assert!(started.elapsed().as_secs() < 60, "no rows appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.ends_with('\n'), "only whole rows are on disk");
    let rows = text.lines().count() - 1;
    assert!((20..400_000).contains(&rows));
    // The finished trials can still be summarized and plotted.
    run_ok(qlab().arg("plot").arg(&out));
    assert!(out.join("figures/election_cdf.png").exists());
}

fn data_rows_if_exists(csv: &Path) -> usize {
    std::fs::read_to_string(csv).map_or(0, |t| t.lines().count().saturating_sub(1))
}

#[test]
fn list_shows_each_experiment_and_its_question() {
    let output = run_ok(qlab().arg("list").arg(repo_file("experiments")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("quickstart.toml") && stdout.contains("raft-figure16.toml"), "{stdout}");
    assert!(stdout.contains("Figure 16"), "{stdout}");
}

#[test]
fn every_shipped_experiment_parses() {
    for entry in std::fs::read_dir(repo_file("experiments")).unwrap() {
        let path = entry.unwrap().path();
        let tmp = tempfile::tempdir().unwrap();
        // Parse only: a run with 0 jobs is refused after validation, before any trial.
        let output =
            qlab().arg("run").arg(&path).arg("--out").arg(tmp.path().join("x")).args(["--jobs", "0"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--jobs must be at least 1"), "{}: {stderr}", path.display());
    }
}

/// Execute a notebook headless with `notebooks/execute.py` (Jupyter's nbclient, in the
/// pinned environment the script installs on first use) against the committed `results/`
/// CSV files, and return what its cells printed; a cell that raises fails the test.
fn run_notebook(name: &str) -> String {
    let output = Command::new("python3")
        .arg(repo_file("notebooks/execute.py"))
        .arg(repo_file(&format!("notebooks/{name}")))
        .output()
        .expect("python3 is on every machine of this project's kind");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{name}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// The Figure 16 notebook against the committed reference run prints the paper comparison.
#[test]
fn figure16_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("figure16.ipynb");
    assert!(
        stdout.contains("150-155: median (ms)") && stdout.contains("trials with a safety violation: 0"),
        "{stdout}"
    );
}

/// The attacks notebook against the committed attack-matrix run: its claim about
/// `forge-log` holds on the rows, and its bootstrap and recovery cells print.
#[test]
fn attacks_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("attacks.ipynb");
    assert!(stdout.contains("forge-log: unsafe when the forger led: 12 of 12; when it did not: 0 of 38"), "{stdout}");
    assert!(stdout.contains("bootstrap pbft delay(200ms) on the leader") && stdout.contains("95% CI"), "{stdout}");
    assert!(stdout.contains("recovery pbft selective-drop(to=1) x1: back to 90% of 196 ops/s never"), "{stdout}");
    // docs/attacks.md: the election-time attacks are safe in the calm window and broken
    // once the leader is cut off; Raft's double vote shows as Leader Completeness there,
    // not as two leaders in one term.
    for line in [
        "window raft double-vote x1: none: 0/50 unsafe (0.00-0.07), two leaders in 0; isolate: 27/50 unsafe",
        "window multipaxos promise-all x1: none: 0/50 unsafe (0.00-0.07), two leaders in 0; isolate: 31/50 unsafe",
        "window multipaxos forge-accepted x1: none: 0/50 unsafe (0.00-0.07), two leaders in 0; isolate: 31/50 unsafe",
        "cut off raft double-vote: honest leader 27/27 unsafe, malicious leader 0/23 unsafe",
        "cut off multipaxos promise-all: honest leader 31/31 unsafe, malicious leader 0/19 unsafe",
        "cut off multipaxos forge-accepted: honest leader 31/31 unsafe, malicious leader 0/19 unsafe",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
}

/// Write `text` as an experiment file in `dir`, run it into `dir/run`, and return that
/// run directory.
fn run_small_experiment(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("experiment.toml");
    std::fs::write(&path, text).unwrap();
    let out = dir.join("run");
    run_ok(qlab().arg("run").arg(&path).arg("--out").arg(&out));
    out
}

/// The rows of a results CSV, each by column name.
fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|row| headers.iter().map(String::from).zip(row.unwrap().iter().map(String::from)).collect())
        .collect()
}

/// The attack kind end to end: a lying Raft node is caught and the trial replays to the
/// same verdict; an equivocating PBFT primary (f = 1) leaves every trial safe; a delayed
/// primary (an attack with a parameter) slows PBFT inside the window only; the matrix
/// lands as CSV and Markdown, and the timeline's bins add up to the per-phase rates.
#[test]
fn attack_experiment_writes_the_matrix_and_unsafe_trials_replay() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_experiment(
        dir.path(),
        r#"# A small attack experiment.
[experiment]
name = "attack-small"
kind = "attack"
trials = 2
seed = 3

[cluster]
protocol = ["raft", "pbft"]
f = 1

[attack]
raft = "lie-log-freshness"
pbft = ["equivocate", { name = "delay", delay_ms = 300 }]
from_ms = 500
until_ms = 1500
after_ms = 1500

[workload]
clients = 2
think_ms = 5
"#,
    );
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let line =
        |attack: &str| summary.lines().find(|l| l.contains(attack)).unwrap_or_else(|| panic!("{summary}")).to_string();
    assert!(line("lie-log-freshness").contains("violated in"), "{summary}");
    assert!(line("equivocate").ends_with(",safe,"), "{summary}");
    let matrix = std::fs::read_to_string(out.join("matrix.md")).unwrap();
    assert!(
        matrix.contains("| raft | sim | 3 | lie-log-freshness | 1 | none |") && matrix.contains("| violated in"),
        "{matrix}"
    );
    // PBFT's first primary is node 0, the malicious one, in every seed.
    assert!(matrix.contains("| pbft | sim | 4 | equivocate | 1 | none | 2 of 2 | safe |"), "{matrix}");
    // The first unsafe trial's replay command is in its row; running it matches.
    let trials = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    let unsafe_row = trials.lines().find(|l| l.contains("qlab replay")).expect("an unsafe row with its replay command");
    let trial = unsafe_row.split(',').nth(8).unwrap();
    let replay = run_ok(qlab().arg("replay").arg(&out).arg("--trial").arg(trial).arg("--max-lines").arg("1"));
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(text.contains("replay matches") && text.contains("violation: "), "{text}");

    // The timeline: 100 ms bins over the 3 s run, each phase's bins adding up to its rate.
    let (mut before, mut during) = (0.0, 0.0);
    for row in csv_rows(&out.join("trials.csv")) {
        let number = |name: &str| row[name].parse::<f64>().unwrap();
        let bins: Vec<f64> = row["completions_per_bin"].split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!((bins.len(), number("timeline_bin_ms"), number("attack_from_ms")), (30, 100.0, 500.0), "{row:?}");
        let sum = |range: std::ops::Range<usize>| bins[range].iter().sum::<f64>();
        assert_eq!(sum(0..5), number("ops_per_s_before") * 0.5, "{row:?}");
        assert_eq!(sum(5..15), number("ops_per_s_during"), "{row:?}");
        assert_eq!(sum(15..30), (number("ops_per_s_after") * 1.5).round(), "{row:?}");
        if row["attack"] == "delay(300ms)" {
            before += number("ops_per_s_before");
            during += number("ops_per_s_during");
        }
    }
    assert!(during < before / 2.0, "a primary holding every message 300 ms: {before} ops/s before, {during} during");
    assert!(out.join("figures/attack_timeline.png").exists() && out.join("figures/attack_timeline.svg").exists());
}

/// The attack-chaos kind end to end: a lying Raft replica is caught under chaos and
/// the unsafe trial replays to the same verdict; a silent one leaves every run safe and
/// live; the summary counts both and the figure lands; a network knob the chaos runs
/// would ignore is refused at its line.
#[test]
fn attack_chaos_experiment_counts_caught_attacks_and_unsafe_trials_replay() {
    let text = r#"# A small attack-chaos experiment.
[experiment]
name = "attack-chaos-small"
kind = "attack-chaos"
trials = 4
seed = 7

[cluster]
protocol = "raft"
nodes = 3

[attack-chaos]
raft = ["lie-log-freshness", "silent"]
malicious = 1

[workload]
clients = 3
"#;
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_experiment(dir.path(), text);
    let summary = csv_rows(&out.join("summary.csv"));
    let of = |attack: &str| summary.iter().find(|r| r["attack"] == attack).unwrap_or_else(|| panic!("{summary:?}"));
    assert_eq!(of("silent")["verdict"], "safe and live in all 4", "{summary:?}");
    let lying = of("lie-log-freshness");
    assert!(lying["unsafe"].parse::<u32>().unwrap() > 0 && lying["verdict"].starts_with("unsafe in"), "{lying:?}");
    let rows = csv_rows(&out.join("trials.csv"));
    let unsafe_row = rows.iter().find(|r| r["safety"] != "ok").expect("an unsafe trial");
    assert!(unsafe_row["replay"].starts_with("qlab replay") && !unsafe_row["invariant"].is_empty(), "{unsafe_row:?}");
    let replay =
        run_ok(qlab().arg("replay").arg(&out).arg("--trial").arg(&unsafe_row["trial"]).arg("--max-lines").arg("1"));
    let told = String::from_utf8_lossy(&replay.stdout);
    assert!(told.contains("replay matches") && told.contains("lie-log-freshness"), "{told}");
    assert!(out.join("figures/attack_chaos_matrix.png").exists());

    let ignored = dir.path().join("ignored.toml");
    let with_loss = text.replace("[workload]", "[network]\nloss = 0.5\n\n[workload]");
    let loss_line = with_loss.lines().position(|l| l.starts_with("loss")).unwrap() + 1;
    std::fs::write(&ignored, &with_loss).unwrap();
    let refused = qlab().arg("run").arg(&ignored).arg("--out").arg(dir.path().join("no")).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains(&format!("ignored.toml:{loss_line}:"))
            && stderr.contains("[network] loss"),
        "{stderr}"
    );
    assert!(!dir.path().join("no").exists(), "nothing is written for a refused file");
}

/// The availability kind end to end: with k replicas down for good, a majority-backed
/// leader exists exactly while k < n/2 — 2 replicas survive no failure, 4 no more than 3
/// — and the summary and figure land.
#[test]
fn availability_experiment_shows_even_clusters_buy_no_fault_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_experiment(
        dir.path(),
        r#"# Cluster sizes against failures.
[experiment]
name = "availability-small"
kind = "availability"
trials = 3
seed = 5

[cluster]
protocol = "raft"
nodes = [2, 3, 4]

[availability]
failures = [1, 2, 3]
duration_ms = 4000

[workload]
warmup_ms = 500
"#,
    );
    let mut after = std::collections::BTreeMap::new();
    for row in csv_rows(&out.join("summary.csv")) {
        let nodes: u32 = row["nodes"].parse().unwrap();
        let failures: u32 = row["failures"].parse().unwrap();
        assert_eq!(row["unsafe"], "0", "{row:?}");
        after.insert((nodes, failures), row["available_after_failures_mean"].parse::<f64>().unwrap());
    }
    // 3 failures of 2 replicas is no cluster: left out of the sweep.
    assert!(!after.contains_key(&(2, 3)), "{after:?}");
    for (point, expected_up) in [((2, 1), false), ((3, 1), true), ((3, 2), false), ((4, 1), true), ((4, 2), false)] {
        let share = after[&point];
        assert!(if expected_up { share > 0.95 } else { share == 0.0 }, "{point:?}: {share} ({after:?})");
    }
    assert!(out.join("figures/availability_vs_nodes.png").exists());
}

/// The reads kind end to end: read-index and log reads linearizable in every trial,
/// follower reads stale, the table and matrix figure written, and a stale trial's
/// replay printing its faults and matching the recorded verdict.
#[test]
fn reads_experiment_judges_each_read_mode_and_stale_trials_replay() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_experiment(
        dir.path(),
        r#"# Read modes under the chaos tests' faults.
[experiment]
name = "reads-small"
kind = "reads"
trials = 6
seed = 3

[cluster]
protocol = ["raft", "multipaxos"]
nodes = 3

[raft]
read_mode = ["log", "read-index", "follower-stale"]

[reads]
fault_profile = "all"

[workload]
clients = 4
"#,
    );
    let mut stale = std::collections::BTreeMap::new();
    for row in csv_rows(&out.join("summary.csv")) {
        assert_eq!(row["trials"], "6", "{row:?}");
        assert_eq!(row["other_violations"], "0", "{row:?}");
        stale.insert((row["protocol"].clone(), row["read_mode"].clone()), row["not_linearizable"].clone());
    }
    for protocol in ["raft", "multipaxos"] {
        assert_eq!(stale[&(protocol.to_string(), "log".to_string())], "0", "{stale:?}");
        assert_eq!(stale[&(protocol.to_string(), "read-index".to_string())], "0", "{stale:?}");
        assert_ne!(stale[&(protocol.to_string(), "follower-stale".to_string())], "0", "{stale:?}");
    }
    let table = std::fs::read_to_string(out.join("reads.md")).unwrap();
    assert!(table.contains("| raft | sim | 3 | read-index | all | 0% | 6 | linearizable in all 6 |"), "{table}");
    assert!(out.join("figures/read_modes_matrix.png").exists() && out.join("figures/read_modes_matrix.svg").exists());
    let rows = csv_rows(&out.join("trials.csv"));
    let stale_row = rows.iter().find(|r| r["linearizable"] == "no").expect("a stale trial");
    assert!(stale_row["replay"].starts_with("qlab replay"), "{stale_row:?}");
    let output = run_ok(qlab().arg("replay").arg(&out).args(["--trial", &stale_row["trial"], "--max-lines", "5"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("faults:") && stdout.contains("linearizable no"), "{stdout}");
    assert!(stdout.contains("violation: linearizability") && stdout.contains("replay matches"), "{stdout}");
}

/// The counterexample kind end to end: one summary row per case with the columns the
/// table promises, and `qlab replay` of a failing chaos case printing the shrunk
/// schedule, the trace up to the violation, and a matching verdict.
#[test]
fn counterexample_experiment_counts_each_case_and_replay_shrinks_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_experiment(
        dir.path(),
        r#"# Two rules and a cluster size.
[experiment]
name = "cx-small"
kind = "counterexample"
trials = 30
seed = 2

[counterexample]
cases = ["no-prev-log-check", "two-nodes", "randomized-timeout"]
"#,
    );
    let rows = csv_rows(&out.join("summary.csv"));
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str()).collect();
    assert_eq!(cases, ["no-prev-log-check", "two-nodes", "randomized-timeout"]);
    for row in &rows {
        for column in ["runs", "violations", "first_failing_seed", "invariant"] {
            assert!(row.contains_key(column), "{column} missing: {row:?}");
        }
        assert_eq!(row["runs"], "30");
        assert_eq!(row["unexplained"], "0", "{row:?}");
    }
    assert_eq!(rows[1]["violations"], "30", "2 replicas never survive a failure: {:?}", rows[1]);
    assert_ne!(rows[0]["violations"], "0", "{:?}", rows[0]);
    assert!(std::fs::read_to_string(out.join("counterexamples.md")).unwrap().contains("| two-nodes | 30 | 30 |"));
    let trial = csv_rows(&out.join("trials.csv"))
        .into_iter()
        .find(|r| r["case"] == "no-prev-log-check" && r["showed"] == "true")
        .expect("a failing run")["trial"]
        .clone();
    let output = run_ok(qlab().arg("replay").arg(&out).args(["--trial", &trial]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("shrunk: ") && stdout.contains("faults still break"), "{stdout}");
    assert!(stdout.contains("minimal run: ") && stdout.contains("replay matches"), "{stdout}");
}

/// Every committed reference run redraws from its CSV alone to byte-identical figures,
/// summaries and tables: what the README and gallery show is what the CSV says.
#[test]
fn plot_regenerates_every_committed_reference_run_byte_for_byte() {
    fn files(dir: &std::path::Path, prefix: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, prefix, out);
            } else {
                out.push(path.strip_prefix(prefix).unwrap().to_path_buf());
            }
        }
    }
    let results = repo_file("results");
    let mut checked = 0;
    let mut experiments: Vec<PathBuf> = std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()).collect();
    experiments.sort();
    for experiment in experiments {
        let reference = experiment.join("reference");
        if !reference.join("trials.csv").exists() {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("run");
        let mut committed = Vec::new();
        files(&reference, &reference, &mut committed);
        committed.sort();
        // Only the inputs are copied; everything `plot` writes must come back the same.
        for input in ["trials.csv", "meta.json", "experiment.toml"] {
            std::fs::create_dir_all(&copy).unwrap();
            if reference.join(input).exists() {
                std::fs::copy(reference.join(input), copy.join(input)).unwrap();
            }
        }
        run_ok(qlab().arg("plot").arg(&copy));
        let mut redrawn = Vec::new();
        files(&copy, &copy, &mut redrawn);
        redrawn.sort();
        assert_eq!(committed, redrawn, "{}: plot writes other files than are committed", reference.display());
        for file in &committed {
            let (a, b) = (std::fs::read(reference.join(file)).unwrap(), std::fs::read(copy.join(file)).unwrap());
            assert!(a == b, "{}: {} differs when redrawn", reference.display(), file.display());
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} reference runs found");
}

/// Every file the README and the docs pages link exists in the repository (figures,
/// reference runs, experiment files, other pages), so no page points at a run that is
/// no longer committed.
#[test]
fn every_file_the_readme_and_docs_link_is_committed() {
    let mut pages = vec![repo_file("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo_file("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 8, "expected the docs pages, found {docs:?}");
    pages.extend(docs);
    let mut linked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').expect("a closed link")];
            let path = target.split('#').next().unwrap();
            if path.is_empty() || path.starts_with("http") {
                continue;
            }
            assert!(dir.join(path).exists(), "{} links {target}, which is not committed", page.display());
            if path.contains("results/") {
                linked += 1;
            }
        }
    }
    assert!(linked >= 20, "only {linked} results links found");
}

/// `qlab compare`: a run against itself is ratio 1 everywhere with an interval around
/// it; against another seed the points line up with their trial counts; the figure and
/// the provenance note land; runs of different kinds are refused.
#[test]
fn compare_gives_ratios_with_intervals_per_point() {
    let tmp = tempfile::tempdir().unwrap();
    let file = small_experiment(tmp.path(), 40);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&a));
    run_ok(qlab().arg("run").arg(&file).arg("--out").arg(&b).args(["--seed", "6"]));
    let same = tmp.path().join("same");
    run_ok(qlab().arg("compare").arg(&a).arg(&a).arg("--out").arg(&same));
    let rows = csv_rows(&same.join("compare.csv"));
    assert_eq!(rows.len(), 2 * 2, "2 cluster sizes x 2 metrics: {rows:?}");
    for row in &rows {
        assert_eq!(row["ratio_b_over_a"], "1.000", "{row:?}");
        let (low, high): (f64, f64) = (row["ratio_ci95_low"].parse().unwrap(), row["ratio_ci95_high"].parse().unwrap());
        assert!(low <= 1.0 && 1.0 <= high, "{row:?}");
    }
    let out = tmp.path().join("cmp");
    let printed = run_ok(qlab().arg("compare").arg(&a).arg(&b).arg("--out").arg(&out));
    assert!(String::from_utf8_lossy(&printed.stdout).contains("ratio_b_over_a"));
    let rows = csv_rows(&out.join("compare.csv"));
    assert!(rows.iter().all(|r| r["trials_a"] == "40" && r["trials_b"] == "40"), "{rows:?}");
    assert!(rows.iter().any(|r| r["metric"] == "election_ms" && r["nodes"] == "5"));
    assert!(out.join("figures/compare_ratios.png").exists() && out.join("figures/compare_ratios.svg").exists());
    assert!(std::fs::read_to_string(out.join("compare.txt")).unwrap().starts_with("A = "));
    std::fs::create_dir_all(tmp.path().join("avail")).unwrap();
    let other = run_small_experiment(
        &tmp.path().join("avail"),
        "# a\n[experiment]\nname = \"a\"\nkind = \"availability\"\ntrials = 1\n[cluster]\nprotocol = \"raft\"\nnodes = 3\n[availability]\nduration_ms = 1000\n",
    );
    let refused = qlab().arg("compare").arg(&a).arg(&other).arg("--out").arg(tmp.path().join("x")).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("compare runs of the same experiment"));
}

/// The read-modes notebook against the committed reference run: log and read-index
/// never stale, every stale lease beyond its drift bound, and the paired latency ratio.
#[test]
fn reads_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("reads.ipynb");
    assert!(stdout.contains("raft        read-index          0/2400"), "{stdout}");
    assert!(stdout.contains("all beyond the assumed bound") && stdout.contains("lease / read-index"), "{stdout}");
}

/// The counterexamples notebook: per-case rates with intervals, the timeout test, and
/// each case's first failing run with its replay command.
#[test]
fn counterexamples_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("counterexamples.ipynb");
    assert!(stdout.contains("split votes: fixed") && stdout.contains("z = "), "{stdout}");
    assert!(stdout.contains("qlab replay results/seed-counterexamples/reference --trial 1003"), "{stdout}");
}

/// `qlab plot --style paper --format svg`: paper-sized SVGs in figures-paper/, the run's
/// own figures untouched; unknown styles and formats are refused with the choices.
#[test]
fn plot_styles_write_beside_the_run_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let reference = repo_file("results/quickstart/reference");
    for input in ["trials.csv", "meta.json", "experiment.toml"] {
        std::fs::copy(reference.join(input), run.join(input)).unwrap();
    }
    run_ok(qlab().arg("plot").arg(&run));
    let before = std::fs::read(run.join("figures/election_cdf.svg")).unwrap();
    run_ok(qlab().arg("plot").arg(&run).args(["--style", "paper", "--format", "svg"]));
    let paper = std::fs::read_to_string(run.join("figures-paper/election_cdf.svg")).unwrap();
    assert!(paper.contains("width=\"1050\"") && paper.contains("height=\"720\""), "{}", &paper[..200]);
    assert!(!run.join("figures-paper/election_cdf.png").exists(), "--format svg writes no PNG");
    assert_eq!(std::fs::read(run.join("figures/election_cdf.svg")).unwrap(), before);
    for (flag, value, expected) in [("--style", "poster", "paper-wide"), ("--format", "pdf", "cairo")] {
        let out = qlab().arg("plot").arg(&run).args([flag, value]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(expected), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The throughput notebook: the table with intervals and Multi-Paxos against Raft with
/// bootstrap intervals, from the committed QUIC reference run.
#[test]
fn throughput_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("throughput.ipynb");
    assert!(stdout.contains("paxos/raft") && stdout.contains("95% bootstrap"), "{stdout}");
}

/// The availability notebook checks every cell of the reference run against the
/// majority rule.
#[test]
fn availability_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("availability.ipynb");
    assert!(stdout.contains("all agree") && stdout.contains("n = 4: survives 1 failure(s)"), "{stdout}");
}

/// Link every committed run directory of `results/` into `root/results`, so a copy of a
/// document beside it finds the figures and CSVs it names.
fn link_reference_runs(root: &std::path::Path) {
    for entry in std::fs::read_dir(repo_file("results")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::os::unix::fs::symlink(&path, root.join("results").join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// The README's gallery is exactly what results/gallery.toml generates, and a drifted
/// gallery is caught and rewritten.
#[test]
fn readme_gallery_is_generated_from_the_listing() {
    let output = run_ok(qlab().arg("gallery").arg(repo_file("README.md")).arg("--check"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("up to date"));
    let tmp = tempfile::tempdir().unwrap();
    let readme = tmp.path().join("README.md");
    let drifted =
        std::fs::read_to_string(repo_file("README.md")).unwrap().replacen("Quickstart: time", "Old caption", 1);
    std::fs::write(&readme, &drifted).unwrap();
    std::fs::create_dir_all(tmp.path().join("results")).unwrap();
    std::fs::copy(repo_file("results/gallery.toml"), tmp.path().join("results/gallery.toml")).unwrap();
    // The figures are looked up beside the README: link the repository's results in.
    link_reference_runs(tmp.path());
    let refused = qlab().arg("gallery").arg(&readme).arg("--check").output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    run_ok(qlab().arg("gallery").arg(&readme));
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), std::fs::read_to_string(repo_file("README.md")).unwrap());
}

/// Every table block in the README and docs is exactly what results/tables.toml
/// generates from the committed CSVs, and a hand-edited number is caught.
#[test]
fn docs_tables_are_generated_from_committed_results() {
    let root = repo_file("");
    let output = run_ok(qlab().arg("tables").arg("--root").arg(&root).arg("--check"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("up to date"));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("docs")).unwrap();
    std::fs::create_dir_all(tmp.path().join("results")).unwrap();
    std::fs::copy(repo_file("results/tables.toml"), tmp.path().join("results/tables.toml")).unwrap();
    link_reference_runs(tmp.path());
    // The pages, not their figures' directory (docs/figures/).
    for doc in std::fs::read_dir(repo_file("docs")).unwrap() {
        let doc = doc.unwrap().path();
        if doc.is_file() {
            std::fs::copy(&doc, tmp.path().join("docs").join(doc.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(repo_file("README.md"), tmp.path().join("README.md")).unwrap();
    let protocols = tmp.path().join("docs/protocols.md");
    let original = std::fs::read_to_string(&protocols).unwrap();
    assert!(original.contains("| 452 / 1,837 / 2,911 ms |"), "the election table shows the reference's numbers");
    std::fs::write(&protocols, original.replacen("| 452 / 1,837 / 2,911 ms |", "| 450 / 1,837 / 2,911 ms |", 1))
        .unwrap();
    let refused = qlab().arg("tables").arg("--root").arg(tmp.path()).arg("--check").output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("docs/protocols.md"));
    run_ok(qlab().arg("tables").arg("--root").arg(tmp.path()));
    assert_eq!(std::fs::read_to_string(&protocols).unwrap(), original);
    // The README's which-protocol-when table is generated the same way.
    let readme = tmp.path().join("README.md");
    let original = std::fs::read_to_string(&readme).unwrap();
    assert!(original.contains("3 nodes: 52,731 ops/s at 64 clients"), "the README table shows the reference's numbers");
    std::fs::write(&readme, original.replacen("52,731 ops/s", "60,000 ops/s", 1)).unwrap();
    let refused = qlab().arg("tables").arg("--root").arg(tmp.path()).arg("--check").output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("README.md"));
    run_ok(qlab().arg("tables").arg("--root").arg(tmp.path()));
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), original);
}

/// No table of the README or of docs/ carries a measured number outside a generated
/// block: a table row with a number followed by a unit of measurement (ms, ops/s, %,
/// "k of n"...) must sit between `<!-- table NAME -->` markers (or in the gallery).
#[test]
fn no_measured_number_in_a_table_is_written_by_hand() {
    let measured = |line: &str| {
        let words: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == '|').filter(|w| !w.is_empty()).collect();
        let is_number = |word: &str| {
            let number = word.trim_end_matches(['%', ',', ':']);
            number.chars().next().is_some_and(|c| c.is_ascii_digit())
                && number.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '.' || c == '–')
        };
        (0..words.len()).any(|i| {
            let unit = words.get(i + 1).map(|w| w.trim_end_matches([',', ';', ')', ':']));
            is_number(words[i])
                && (words[i].ends_with('%')
                    || unit.is_some_and(|u| {
                        ["ms", "µs", "ns", "s", "ops/s", "msgs/op", "M/s", "MiB", "of", "trials", "seeds"].contains(&u)
                    }))
        })
    };
    let mut docs = vec![repo_file("README.md")];
    docs.extend(std::fs::read_dir(repo_file("docs")).unwrap().map(|e| e.unwrap().path()));
    let mut hand_written = Vec::new();
    for doc in docs.iter().filter(|d| d.extension().is_some_and(|e| e == "md")) {
        let mut generated = false;
        for (number, line) in std::fs::read_to_string(doc).unwrap().lines().enumerate() {
            if line.starts_with("<!-- table ") || line.starts_with("<!-- gallery") {
                generated = true;
            } else if line.starts_with("<!-- /table") || line.starts_with("<!-- /gallery") {
                generated = false;
            } else if !generated && line.starts_with('|') && measured(line) {
                hand_written.push(format!("{}:{}: {line}", doc.display(), number + 1));
            }
        }
    }
    assert!(measured("| Raft | 3,490 ops/s, p99 0.42 ms |") && measured("| 87% |") && measured("| 2 of 200 |"));
    assert!(!measured("| ed25519-dalek | PBFT's signatures |") && !measured("| Figure 16 reproduced |"));
    assert!(
        hand_written.is_empty(),
        "hand-written measurements (generate them with `qlab tables`):\n{}",
        hand_written.join("\n")
    );
}

/// A notebook whose cell raises fails the run, naming the notebook and the error: CI
/// cannot pass over a broken analysis.
#[test]
fn a_notebook_that_raises_fails_its_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let notebook = tmp.path().join("broken.ipynb");
    std::fs::write(
        &notebook,
        r#"{"cells": [{"cell_type": "code", "execution_count": null, "id": "a", "metadata": {}, "outputs": [],
            "source": ["print('before')\n", "raise ValueError('the claim does not hold')"]}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}"#,
    )
    .unwrap();
    let output = Command::new("python3").arg(repo_file("notebooks/execute.py")).arg(&notebook).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.ipynb: a cell failed") && stderr.contains("the claim does not hold"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("before"));
}

/// The disruption kind end to end: a follower cut off and healed forces an election
/// without PreVote and none with it; the rows carry the timeline and the outage, the
/// summary and the timeline figure are written, and `qlab plot` redraws them byte for
/// byte from the CSV.
#[test]
fn disruption_experiment_shows_what_pre_vote_prevents() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_experiment(
        dir.path(),
        r#"
[experiment]
name = "rejoin"
kind = "disruption"
trials = 3
seed = 4

[cluster]
protocol = "raft"
nodes = 5

[raft]
pre_vote = [false, true]

[workload]
clients = 4
duration_ms = 3000

[[disruption.scenario]]
name = "rejoin"
schedule = [
    { action = "isolate", at_ms = 500, node = "follower" },
    { action = "heal", at_ms = 2000 },
]
"#,
    );
    let rows = csv_rows(&out.join("trials.csv"));
    assert_eq!(rows.len(), 6);
    for row in &rows {
        assert_eq!(row["safety"], "ok", "{row:?}");
        assert_eq!(row["completions_per_bin"].split(' ').count(), 30, "3 s in 100 ms bins");
        let elections: u32 = row["elections"].parse().unwrap();
        let outage: f64 = row["unavailable_ms"].parse().unwrap();
        if row["pre_vote"] == "true" {
            assert_eq!(elections, 0, "{row:?}");
            assert!(outage < 50.0, "{row:?}");
        } else {
            assert!(elections >= 1, "{row:?}");
            assert!(outage > 100.0, "{row:?}");
        }
    }
    let summary = csv_rows(&out.join("summary.csv"));
    assert_eq!(summary.len(), 2);
    let figure = std::fs::read(out.join("figures/disruption_timeline.svg")).unwrap();
    std::fs::remove_dir_all(out.join("figures")).unwrap();
    run_ok(qlab().arg("plot").arg(&out));
    assert_eq!(std::fs::read(out.join("figures/disruption_timeline.svg")).unwrap(), figure);
    let replay = run_ok(qlab().arg("replay").arg(&out).args(["--trial", "4", "--max-lines", "3"]));
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(stdout.contains("scenario rejoin, pre-vote true") && stdout.contains("replay matches"), "{stdout}");
}

/// The disruption notebook on the committed rejoin-disruption run: PreVote's claim holds
/// on the rows (an election in every trial without it, in none with it).
#[test]
fn disruption_notebook_runs_on_the_reference_csv() {
    let stdout = run_notebook("disruption.ipynb");
    assert!(stdout.contains("pre_vote=false: an election in 50 of 50"), "{stdout}");
    assert!(stdout.contains("pre_vote=true : an election in 0 of 50"), "{stdout}");
}

/// A trial whose checker gave up is never "ok": `qlab plot` counts it in the summary's
/// inconclusive column, apart from the unsafe ones, and the attack matrix's verdict
/// names it instead of calling the row safe.
#[test]
fn summaries_count_inconclusive_trials_apart_from_unsafe_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let edit = |experiment: &str, change: &dyn Fn(usize, &mut csv::StringRecord, &csv::StringRecord)| {
        let reference = repo_file(&format!("results/{experiment}/reference"));
        let copy = tmp.path().join(experiment);
        std::fs::create_dir_all(&copy).unwrap();
        for input in ["meta.json", "experiment.toml"] {
            std::fs::copy(reference.join(input), copy.join(input)).unwrap();
        }
        let mut reader = csv::Reader::from_path(reference.join("trials.csv")).unwrap();
        let header = reader.headers().unwrap().clone();
        let mut writer = csv::Writer::from_path(copy.join("trials.csv")).unwrap();
        writer.write_record(&header).unwrap();
        for (i, record) in reader.records().enumerate() {
            let mut record = record.unwrap();
            change(i, &mut record, &header);
            writer.write_record(&record).unwrap();
        }
        writer.flush().unwrap();
        run_ok(qlab().arg("plot").arg(&copy));
        let mut summary = csv::Reader::from_path(copy.join("summary.csv")).unwrap();
        let header = summary.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = summary.records().map(Result::unwrap).collect();
        (header, rows)
    };
    let set = |record: &mut csv::StringRecord, header: &csv::StringRecord, column: &str, value: &str| {
        let at = header.iter().position(|c| c == column).unwrap();
        let mut fields: Vec<String> = record.iter().map(str::to_string).collect();
        fields[at] = value.to_string();
        *record = csv::StringRecord::from(fields);
    };
    let column = |header: &csv::StringRecord, row: &csv::StringRecord, name: &str| {
        row.get(header.iter().position(|c| c == name).unwrap_or_else(|| panic!("no {name} column")))
            .unwrap()
            .to_string()
    };

    // Election: of the first point's trials, two inconclusive and one unsafe.
    let (header, rows) = edit("quickstart", &|i, record, header| match i {
        0 | 1 => set(record, header, "safety", "inconclusive"),
        2 => set(record, header, "safety", "election-safety"),
        _ => {}
    });
    let point = header.iter().position(|c| c == "point");
    assert!(point.is_none(), "summary rows are per point");
    assert_eq!(column(&header, &rows[0], "inconclusive_trials"), "2");
    assert_eq!(column(&header, &rows[0], "unsafe_trials"), "1");
    assert!(rows[1..].iter().all(|r| column(&header, r, "inconclusive_trials") == "0"));

    // Attack matrix: one inconclusive seed in the first row, nothing unsafe.
    let (header, rows) = edit("attack-matrix", &|i, record, header| {
        if i == 0 {
            set(record, header, "safety", "inconclusive");
        }
    });
    let first =
        rows.iter().find(|r| column(&header, r, "inconclusive") == "1").expect("the row of the inconclusive seed");
    assert_eq!(column(&header, first, "unsafe"), "0");
    let verdict = column(&header, first, "verdict");
    assert!(verdict.contains("inconclusive"), "verdict {verdict:?} hides the inconclusive seed");
}
