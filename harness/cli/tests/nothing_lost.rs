//! Nothing lost, nobody let in: what the `qlab` binary does with a directory that holds
//! another run, an interrupted run, and data that is empty or not numbers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qlab"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("qlab runs");
    assert!(
        out.status.success(),
        "qlab failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().expect("qlab runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "expected a refusal; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// An election experiment of `nodes` × `trials` trials named `name`.
fn experiment(dir: &Path, name: &str, trials: u32) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[experiment]\nname = \"{name}\"\nkind = \"election\"\ntrials = {trials}\nseed = 5\n\n[cluster]\n\
         protocol = \"raft\"\nnodes = [3, 5]\n\n[network]\nlatency_ms = {{ dist = \"uniform\", min = 1, max = 3 }}\n\n\
         [faults]\ncrash = {{ who = \"leader\", at = \"random-in-heartbeat\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Issue 39, item 1: `--out` over another run is refused and leaves it byte for byte;
/// `--force` replaces it whole (no file of the old run stays beside the new one); a
/// directory that holds no run is never emptied, not even with `--force`.
#[test]
fn out_over_another_run_is_refused_unless_forced_and_never_mixes_two_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let first = experiment(tmp.path(), "first", 3);
    let second = experiment(tmp.path(), "second", 2);
    let out = tmp.path().join("run");
    run_ok(qlab().arg("run").arg(&first).arg("--out").arg(&out));
    // A file only the old run has: it must not survive a forced replacement.
    std::fs::write(out.join("figures/only-the-old-run.svg"), "<svg/>").unwrap();
    let before = files_of(&out);

    let stderr = refused(qlab().arg("run").arg(&second).arg("--out").arg(&out));
    assert!(stderr.contains("already holds a run of `first` (election kind"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(files_of(&out), before, "a refused run writes nothing");

    run_ok(qlab().arg("run").arg(&second).arg("--out").arg(&out).arg("--force"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["experiment"], "second");
    assert!(!out.join("figures/only-the-old-run.svg").exists(), "the old run's files are gone");
    assert_eq!(std::fs::read_to_string(out.join("trials.csv")).unwrap().lines().count(), 1 + 4);

    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("thesis.tex"), "precious").unwrap();
    for force in [false, true] {
        let mut cmd = qlab();
        cmd.arg("run").arg(&first).arg("--out").arg(&other);
        if force {
            cmd.arg("--force");
        }
        let stderr = refused(&mut cmd);
        assert!(stderr.contains("holds no run (thesis.tex)"), "{stderr}");
    }
    assert_eq!(std::fs::read_to_string(other.join("thesis.tex")).unwrap(), "precious");

    // An empty directory is fine without --force.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run_ok(qlab().arg("run").arg(&first).arg("--out").arg(&empty));
}

/// `line:column` (1-based) of the first `needle` in `text`, as errors print it; for a
/// needle `key = value`, of its value.
fn position_of(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the file"));
    let at = at + needle.find("= ").map_or(0, |i| i + 2);
    let before = &text[..at];
    format!("{}:{}", before.matches('\n').count() + 1, before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1)
}

/// Run `qlab run` on `text` and demand a refusal at the position of `value_text`, whose
/// message holds `expected`, with nothing written.
fn refused_at(text: &str, value_text: &str, expected: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = tmp.path().join("out");
    let stderr = refused(qlab().current_dir(tmp.path()).args(["run", "bad.toml", "--out"]).arg(&out));
    let at = format!("bad.toml:{}:", position_of(text, value_text));
    assert!(stderr.contains(&at), "expected the error at {at} for {value_text:?}: {stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} for {value_text:?}: {stderr}");
    assert!(!stderr.contains(":1:1:"), "{stderr}");
    assert!(!out.exists() && !tmp.path().join("results").exists(), "nothing may be written: {value_text}");
}

const ELECTION: &str = r#"[experiment]
name = "bad"
kind = "election"
trials = 2
seed = 5

[cluster]
protocol = "raft"
nodes = 3

[network]
latency_ms = { dist = "uniform", min = 1, max = 3 }

[faults]
crash = { who = "leader", at = "random-in-heartbeat" }
"#;

const THROUGHPUT: &str = r#"[experiment]
name = "bad"
kind = "throughput"
trials = 1
seed = 5

[cluster]
protocol = "raft"
nodes = 3

[workload]
clients = 2
duration_ms = 200
warmup_ms = 50
"#;

/// Issue 39, item 4: an infinite or absurdly large duration is refused where it is
/// written (each used to pass `>= 0` and panic in every trial with an overflow).
#[test]
fn infinite_and_absurd_durations_are_refused_at_the_value() {
    let with_network = |latency: &str| ELECTION.replace("{ dist = \"uniform\", min = 1, max = 3 }", latency);
    refused_at(&with_network("{ dist = \"normal\", mean = inf, stddev = 1 }"), "inf", "must be finite");
    refused_at(&with_network("{ dist = \"normal\", mean = 5, stddev = +inf }"), "+inf", "must be finite");
    refused_at(&with_network("{ dist = \"constant\", value = 1e300 }"), "1e300", "past the largest duration");
    refused_at(&with_network("{ dist = \"constant\", value = nan }"), "nan", "must be finite");
    let with = |section: &str| ELECTION.replace("[faults]", &format!("{section}\n\n[faults]"));
    refused_at(&with("[raft]\nelection_timeout_ms = [1e300, 1e301]"), "1e300", "past the largest duration");
    refused_at(&with("[limits]\nmax_election_ms = 1e300"), "1e300", "past the largest duration");
    refused_at(&with("[storage]\nfsync_ms = { dist = \"constant\", value = inf }"), "inf", "must be finite");
    refused_at(&with("[raft]\nbatch_delay_ms = inf"), "inf", "must be finite");
    refused_at(&with("[raft]\nheartbeat_ms = 100000000000000"), "100000000000000", "past the largest duration");
    let schedule = THROUGHPUT.to_string() + "\n[faults]\nschedule = [{ action = \"crash\", at_ms = 1e19, node = 0 }]\n";
    refused_at(&schedule, "1e19", "past the largest duration");
}

/// Issue 39, item 6: every validation error points at the value it is about, never
/// at 1:1.
#[test]
fn validation_errors_point_at_the_value_they_are_about() {
    let workload = |edit: &str| THROUGHPUT.replace("duration_ms = 200", edit);
    refused_at(&workload("duration_ms = 0"), "duration_ms = 0", "duration_ms must be > 0");
    refused_at(&workload("duration_ms = 200\nread_ratio = 2"), "read_ratio = 2", "read_ratio is a fraction");
    refused_at(&THROUGHPUT.replace("warmup_ms = 50", "warmup_ms = -1"), "warmup_ms = -1", "warmup_ms must be >= 0");
    refused_at(&workload("duration_ms = 200\nthink_ms = -3"), "think_ms = -3", "think_ms must be >= 0");
    let limits = ELECTION.to_string() + "\n[limits]\nmax_election_ms = 0\n";
    refused_at(&limits, "max_election_ms = 0", "max_election_ms must be > 0");
    let network = ELECTION.replace("max = 3 }", "max = 3 }\nquic_delay_ms = -2");
    refused_at(&network, "quic_delay_ms = -2", "quic_delay_ms must be >= 0");
    refused_at(&ELECTION.replace("name = \"bad\"", "name = \"a b\""), "name = \"a b\"", "experiment name");
    let huge = ELECTION.replace("trials = 2", "trials = 10000000000000000000");
    refused_at(&huge, "trials = 10000000000000000000", "trials");
    refused_at(&ELECTION.replace("trials = 2", "trials = 2000000000"), "trials = 2000000000", "trials is at most");
    // A kind that needs a section the file lacks: at the kind that needs it.
    let no_faults = ELECTION.replace("[faults]\ncrash = { who = \"leader\", at = \"random-in-heartbeat\" }\n", "");
    refused_at(&no_faults, "\"election\"", "crash");
}
