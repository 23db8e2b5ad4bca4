//! Pause faults end to end (issue 20, item 3): `{ action = "pause", ... }` stops a real
//! node's process with SIGSTOP and lets it go on with SIGCONT, and holds a simulated
//! node's inputs for as long; in both modes the cluster carries the load past the
//! paused leader and every checker passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::nodes_of;

/// The state letter of process `pid` (`T` while stopped), if it exists.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

fn experiment(dir: &Path) -> PathBuf {
    let path = dir.join("pause.toml");
    std::fs::write(
        &path,
        r#"# A leader paused for 1.5 s in the middle of the measured window.
[experiment]
name = "pause"
kind = "throughput"
mode = ["sim", "quic"]
trials = 1

[cluster]
protocol = "raft"
nodes = 3

[workload]
clients = 4
warmup_ms = 300
duration_ms = 3000

[faults]
schedule = [{ action = "pause", at_ms = 800, node = "leader", for_ms = 1500 }]
"#,
    )
    .unwrap();
    path
}

#[test]
fn a_paused_leader_is_stopped_for_real_and_the_cluster_goes_on_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let private_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&private_tmp).unwrap();
    let file = experiment(tmp.path());
    let out = tmp.path().join("run");
    let mut run = Command::new(env!("CARGO_BIN_EXE_qlab"))
        .env("TMPDIR", &private_tmp)
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Watch the node processes: one of them must be seen stopped (SIGSTOP), then going on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stopped = None;
    while Instant::now() < deadline && run.try_wait().unwrap().is_none() {
        if let Some(pid) = nodes_of(&private_tmp).into_iter().find(|pid| state(*pid) == Some('T')) {
            stopped.get_or_insert((pid, Instant::now()));
        }
        if let Some((pid, since)) = stopped
            && state(pid).is_some_and(|s| s != 'T')
        {
            let paused_for = since.elapsed();
            assert!(paused_for < Duration::from_millis(2_500), "woken after {paused_for:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stopped.is_some(), "no node process was seen stopped");
    let output = run.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("safety: every trial ok"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let ops = header.iter().position(|c| *c == "ops").unwrap();
    for row in lines {
        let cells: Vec<&str> = row.split(',').collect();
        let done: u64 = cells[ops].parse().unwrap();
        assert!(done > 100, "the cluster carried the load past the pause: {row}");
    }
}
