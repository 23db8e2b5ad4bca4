//! Real mode with every node in its own network namespace (`netns = true`): nodes on
//! distinct addresses of a bridged virtual Ethernet, the cluster file a multi-host
//! deployment uses, driven by `qlab run` through a crash, restart and partition. And
//! `netem = true` either runs or, on a kernel without sch_netem, stops before any trial
//! with an error that says what is missing and what to use instead.
//!
//! Namespaces need root; without it these tests say so and pass vacuously (the
//! runner's output shows the skip).

use std::path::Path;

fn can_make_namespaces() -> bool {
    match qlab_net::netns::available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            false
        }
    }
}

fn namespaces_of(pid: u32) -> Vec<String> {
    let list = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("qlab-{pid}-")))
        .map(str::to_string)
        .collect()
}

fn run(file: &Path, out: &Path) -> (std::process::ExitStatus, String, String, u32) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_qlab"))
        .arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        pid,
    )
}

const EXPERIMENT: &str = r#"
[experiment]
name = "netns-smoke"
kind = "throughput"
mode = "quic"
trials = 1
seed = 9

[cluster]
protocol = "raft"
nodes = 3
storage = "disk"

[network]
quic_delay_ms = 1
NETWORK

[workload]
clients = 8
value_bytes = 64
warmup_ms = 300
duration_ms = 2500

[faults]
schedule = [
    { action = "crash", at_ms = 400, node = "leader" },
    { action = "restart", at_ms = 1000, node = "leader" },
    { action = "partition", at_ms = 1500, groups = [[0], [1, 2]] },
    { action = "heal", at_ms = 2000 },
]
"#;

#[test]
fn nodes_in_their_own_namespaces_survive_crash_restart_and_partition() {
    if !can_make_namespaces() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netns.toml");
    std::fs::write(&file, EXPERIMENT.replace("NETWORK", "netns = true")).unwrap();
    let out = dir.path().join("out");
    let (status, stdout, stderr, pid) = run(&file, &out);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("safety: every trial ok"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(row.contains(",quic,") && row.contains(",ok,"), "{csv}");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let ops = header.iter().position(|c| *c == "ops").unwrap();
    assert!(row.split(',').nth(ops).unwrap().parse::<u64>().unwrap() > 100, "{csv}");
    assert!(namespaces_of(pid).is_empty(), "namespaces left behind: {:?}", namespaces_of(pid));
}

#[test]
fn netem_runs_or_names_what_the_kernel_lacks_before_any_trial() {
    if !can_make_namespaces() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netem.toml");
    std::fs::write(&file, EXPERIMENT.replace("NETWORK", "netem = true\nnetem_jitter_ms = 0.2")).unwrap();
    let out = dir.path().join("out");
    let (status, stdout, stderr, pid) = run(&file, &out);
    if status.success() {
        assert!(stdout.contains("safety: every trial ok"), "{stdout}");
    } else {
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("netem.toml") && stderr.contains("sch_netem"), "{stderr}");
        assert!(stderr.contains("quic_delay_ms"), "the error should name the alternative: {stderr}");
        assert!(!out.exists(), "nothing should be written when the machine cannot run the file");
    }
    assert!(namespaces_of(pid).is_empty(), "namespaces left behind: {:?}", namespaces_of(pid));
}
