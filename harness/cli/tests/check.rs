//! `qlab check FILE` end to end (issue 42): a committed check file finds its
//! counterexample and writes its trace and figure; a check whose outcome differs from
//! what its file expects fails; a mistake in a file is an error at its line and column;
//! `--out` never writes into a directory that holds anything.

mod common;

use common::{qlab, run_ok};

#[test]
fn a_check_file_finds_its_counterexample_and_draws_it() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("phase1");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output =
        run_ok(qlab().arg("check").arg(root.join("checks/paxos-skip-phase1-values.toml")).arg("--out").arg(&dir));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("violation in 9 steps"), "{stdout}");
    assert!(stdout.contains("violation: leader-completeness"), "{stdout}");
    assert!(stdout.contains("as expected"), "{stdout}");
    // Without the value rule no new leader adopts a promised value: a zero that shows.
    assert!(stdout.contains("reached each): paxos.preempted"), "{stdout}");
    let never = stdout.lines().find_map(|l| l.split_once("never reached: ")).map(|(_, marks)| marks);
    assert!(never.is_some_and(|marks| marks.contains("paxos.checkpoint_from_promise")), "{stdout}");
    assert!(stdout.contains("paxos.value_adopted_from_promise"), "{stdout}");
    let trace = std::fs::read_to_string(dir.join("trace.txt")).unwrap();
    assert_eq!(
        trace
            .lines()
            .filter(|l| l.trim_start().split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
            .count(),
        9,
        "{trace}"
    );
    let svg = std::fs::read_to_string(dir.join("sequence.svg")).unwrap();
    assert!(svg.contains("Multi-Paxos, without skip_phase1_values: 9 steps"), "the figure carries its title");
    assert!(dir.join("sequence.png").exists());

    // The run, replayed from the steps.json it wrote: the same 9 steps, the same violation.
    let check_file = root.join("checks/paxos-skip-phase1-values.toml");
    let steps = dir.join("steps.json");
    let replayed = run_ok(qlab().arg("check").arg(&check_file).arg("--replay").arg(&steps));
    let replayed = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.contains("a replay of") && replayed.contains("violation in 9 steps"), "{replayed}");
    let numbered = |text: &str| -> Vec<String> {
        let is_step = |l: &&str| l.trim_start().split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        text.lines().filter(is_step).map(String::from).collect()
    };
    assert_eq!(numbered(&replayed), numbered(&stdout), "the replay takes the search's steps");
    assert_eq!(numbered(&stdout).len(), 9);
    // Edited: without its last step the run breaks nothing, which the file did not expect.
    let text = std::fs::read_to_string(&steps).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 11, "[, nine steps, ]: {text}");
    lines.remove(9);
    let shorter = out.path().join("shorter.json");
    std::fs::write(&shorter, lines.join("\n").replace(",\n]", "\n]")).unwrap();
    let output = qlab().arg("check").arg(&check_file).arg("--replay").arg(&shorter).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stdout_short = String::from_utf8_lossy(&output.stdout);
    assert!(stdout_short.contains("no violation in the 8 steps replayed"), "{stdout_short}");
    // A step that the run cannot take is named.
    let impossible = out.path().join("impossible.json");
    std::fs::write(&impossible, "[{\"restart\":{\"node\":1}}]").unwrap();
    let output = qlab().arg("check").arg(&check_file).arg("--replay").arg(&impossible).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("step 1 (Restart { node: 1 }) cannot be taken"),
        "{output:?}"
    );

    // The same directory again: refused, nothing touched.
    let again = qlab()
        .arg("check")
        .arg(root.join("checks/paxos-skip-phase1-values.toml"))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(dir.join("trace.txt")).unwrap(), trace);
}

#[test]
fn a_check_that_finds_what_its_file_does_not_expect_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.toml");
    // Every rule on, yet the file expects a violation within 8 steps.
    std::fs::write(
        &path,
        "[check]\nprotocol = \"raft\"\nsearch = \"exhaustive\"\nexpect = \"violation\"\n\n[bounds]\ntimer_firings = 2\nmax_depth = 8\n",
    )
    .unwrap();
    let output = qlab().arg("check").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("no violation in any run of up to 8 steps"), "{stdout}");
    assert!(stdout.contains("NOT AS EXPECTED"), "{stdout}");
}

#[test]
fn a_mistake_in_a_check_file_is_an_error_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[check]\nprotocol = \"raft\"\nsearch = \"exhaustive\"\nexpect = \"none\"\n\n[raft]\nablate = [\"skip_prevlog_check\"]\n")
        .unwrap();
    let output = qlab().arg("check").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:7:11: unknown Raft ablation `skip_prevlog_check`", path.display())),
        "{stderr}"
    );

    std::fs::write(&path, "[check]\nprotocol = \"zab\"\nsearch = \"exhaustive\"\nexpect = \"none\"\n").unwrap();
    let output = qlab().arg("check").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:2:12:", path.display())) && stderr.contains("zab"), "{stderr}");

    // Symmetry reduction where the protocol is not symmetric: refused at the setting.
    std::fs::write(
        &path,
        "[check]\nprotocol = \"multi-paxos\"\nsearch = \"exhaustive\"\nexpect = \"none\"\nsymmetry = true\n",
    )
    .unwrap();
    let output = qlab().arg("check").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:5:1: symmetry: not here: Multi-Paxos orders", path.display())), "{stderr}");
}

/// PBFT from a file: twins of two replicas (f + 1) and waves break agreement with every
/// rule on (check_files.rs runs every file; this is the command's own output, and the
/// cheapest PBFT file); twins outside the cluster are refused at their line.
#[test]
fn a_pbft_check_with_twins_beyond_f_breaks_agreement() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = run_ok(qlab().arg("check").arg(root.join("checks/pbft-twins-beyond-f.toml")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("PBFT, 4 replicas, twins of n0 and n1, messages in waves, every rule on"), "{stdout}");
    assert!(stdout.contains("violation in 6 steps"), "{stdout}");
    assert!(stdout.contains("violation: state-machine-safety"), "{stdout}");
    assert!(stdout.contains("n0′"), "a step names the twin: {stdout}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twins.toml");
    std::fs::write(&path, "[check]\nprotocol = \"pbft\"\nsearch = \"walks\"\nexpect = \"none\"\ntwins = [4]\n")
        .unwrap();
    let output = qlab().arg("check").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("twins.toml:5:1") && stderr.contains("n4 is not one of the 4 replicas"), "{stderr}");
}
