//! Real mode end to end: one `qlab node` OS process per replica over QUIC on loopback.
//! 1,000 writes commit while the leader process is `kill -9`ed and restarted from its
//! WAL; the checkers pass; every replica ends with the same log; nothing is left running.

use qlab_check::check_observations;
use qlab_check::linearizability::{LinCheck, check_history};
use qlab_core::{Event, ms};
use qlab_lab::real::{WriteLoad, final_commits, latest_leader, observations_for_checkers};
use qlab_net::cluster::{ClusterFile, LocalCluster, StorageKind};
use qlab_net::drive::Driver;
use qlab_net::harness::Harness;
use qlab_net::tls;
use qlab_raft::{Message, Raft, RaftConfig};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

const NODES: u32 = 3;
const CLIENTS: usize = 4;
const WRITES: usize = 1_000;

fn cluster(dir: &Path) -> LocalCluster {
    let config = toml::Value::try_from(RaftConfig::default()).unwrap();
    LocalCluster::create(dir, Path::new(env!("CARGO_BIN_EXE_qlab")), "raft", config, NODES, StorageKind::Disk, 3)
        .unwrap()
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_processes_survive_kill_9_of_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path());
    cluster.start_all().unwrap();
    let pinned = cluster.pinned().unwrap();
    let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), &cluster.harness_identity, pinned).unwrap();
    let start = cluster.file.start_unix_ns;
    let (harness, from_nodes) =
        Harness::<Message>::connect(endpoint, &cluster.file.addrs(), start, cluster.file.max_frame_bytes);
    let clients = qlab_lab::real::clients::<Raft>(&RaftConfig::default(), CLIENTS, NODES, ms(300));
    let mut driver = Driver::new(harness, from_nodes, clients, start);
    let mut load = WriteLoad::new(CLIENTS, WRITES, 5, 16);
    load.start(&mut driver);
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut killed = None;
    while load.completed < WRITES {
        load.step(&mut driver, give_up).await.unwrap_or_else(|| panic!("stalled after {} writes", load.completed));
        if load.completed == WRITES / 3 && killed.is_none() {
            let leader = latest_leader(&observations_for_checkers(&driver)).unwrap();
            cluster.kill(leader);
            killed = Some(leader);
        }
        if load.completed == WRITES / 2 {
            cluster.start(killed.unwrap()).unwrap();
        }
    }
    let settle = Instant::now() + Duration::from_millis(1_500);
    while driver.next(settle).await.is_some() {}

    let observations = observations_for_checkers(&driver);
    let violations = check_observations(&observations);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(check_history(&load.history), LinCheck::Linearizable);
    let last = final_commits(&observations, NODES);
    assert!(last.iter().all(|c| *c == last[0] && c.is_some()), "{last:?}");
    assert!(last[0].unwrap().0 >= WRITES as u64);
    let restarted = killed.unwrap();
    assert!(observations.iter().any(|o| o.node.0 == restarted && matches!(o.event, Event::Restarted { .. })));
    assert!(driver.counters.values().all(|c| c.malformed_frames == 0), "{:?}", driver.counters);

    let pids = cluster.pids();
    assert_eq!(pids.len(), NODES as usize);
    assert!(pids.iter().all(|p| alive(*p)));
    drop(cluster);
    assert!(pids.iter().all(|p| !alive(*p)), "dropping the cluster stops every process");
}

#[tokio::test]
async fn nodes_whose_harness_is_gone_stop_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster(dir.path());
    let mut file = ClusterFile::load(&cluster.file_path).unwrap();
    file.orphan_timeout_ms = 600;
    file.save(&cluster.file_path).unwrap();
    cluster.start_all().unwrap();
    // No harness ever connects (as if it had been killed with -9).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for id in 0..NODES {
        assert!(!cluster.is_running(id), "node {id} is still running without a harness");
    }
}

#[test]
fn a_bad_cluster_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path());
    let text =
        std::fs::read_to_string(&cluster.file_path).unwrap().replace("protocol = \"raft\"", "protocol = \"zab\"");
    std::fs::write(&cluster.file_path, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_qlab"))
        .args(["node", "--cluster"])
        .arg(&cluster.file_path)
        .args(["--id", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown protocol \"zab\"") && stderr.contains("raft"), "{stderr}");
}

/// `qlab run` with `mode = ["sim", "quic"]` for both kinds: real clusters start, are
/// measured, pass the checkers, and are gone when the run ends.
#[test]
fn qlab_run_in_quic_mode_measures_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let throughput = dir.path().join("tp.toml");
    std::fs::write(
        &throughput,
        r#"# smoke
[experiment]
name = "tp"
kind = "throughput"
mode = ["sim", "quic"]
trials = 1

[cluster]
protocol = "raft"
nodes = 3

[raft]
batch_delay_ms = 1

[workload]
clients = [2, 8]
value_bytes = 128
warmup_ms = 300
duration_ms = 700

# A leadership transfer mid-window goes to the leader over its control link.
[faults]
schedule = [{ action = "transfer-leader", at_ms = 600, to = "follower" }]
"#,
    )
    .unwrap();
    let election = dir.path().join("el.toml");
    std::fs::write(
        &election,
        r#"# smoke
[experiment]
name = "el"
kind = "election"
mode = "quic"
trials = 2

[cluster]
protocol = "raft"
nodes = 3

[faults]
crash = { who = "leader", at = "random-in-heartbeat" }
"#,
    )
    .unwrap();
    let mut run_pids = Vec::new();
    for (file, out) in [(&throughput, "tp-out"), (&election, "el-out")] {
        let out = dir.path().join(out);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_qlab"))
            .arg("run")
            .arg(file)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        run_pids.push(child.id());
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("safety: every trial ok"), "{stdout}");
        let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
        assert!(!csv.contains(",error,"), "{csv}");
        assert!(csv.lines().skip(1).any(|l| l.contains(",quic,")), "{csv}");
        assert!(out.join("figures").read_dir().unwrap().count() >= 4);
    }
    let tp = std::fs::read_to_string(dir.path().join("tp-out/summary.csv")).unwrap();
    let ops_per_s_at = tp.lines().next().unwrap().split(',').position(|c| c == "ops_per_s").unwrap();
    let quic_row = tp.lines().find(|l| l.contains(",quic,")).unwrap();
    assert!(quic_row.split(',').nth(ops_per_s_at).unwrap().parse::<f64>().unwrap() > 100.0, "ops/s in {quic_row}");
    // Each node's resident memory was sampled over the window: a few MiB, not zero.
    let mut trials = csv::Reader::from_path(dir.path().join("tp-out/trials.csv")).unwrap();
    let headers = trials.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    for row in trials.records().map(Result::unwrap).filter(|r| &r[1] == "quic") {
        let (first, max): (f64, f64) =
            (row[column("rss_mb_first")].parse().unwrap(), row[column("rss_mb_max")].parse().unwrap());
        assert!(first > 1.0 && max >= first && max < 1024.0, "rss {first} .. {max} MiB");
        // So was the harness's own, which checks the run as it goes.
        let harness: f64 = row[column("rss_mb_harness_max")].parse().unwrap();
        assert!(harness > 1.0 && harness < 4096.0, "harness rss {harness} MiB");
        assert_eq!(&row[column("safety")], "ok");
    }
    let leftovers = std::process::Command::new("pgrep").args(["-f", "qlab node --cluster"]).output().unwrap();
    // Cluster directories are named qlab-<pid of qlab run>-...; look for ours.
    let own: Vec<String> = String::from_utf8_lossy(&leftovers.stdout)
        .lines()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| run_pids.iter().any(|run| c.contains(&format!("qlab-{run}-"))))
        })
        .map(str::to_string)
        .collect();
    assert!(
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .all(|e| !run_pids.iter().any(|run| e.file_name().to_string_lossy().starts_with(&format!("qlab-{run}-")))),
        "cluster directories are removed"
    );
    assert!(own.is_empty(), "nodes left running: {own:?}");
}

/// Multi-Paxos as `qlab node` processes: its leader is `kill -9`ed and restarted from
/// its write-ahead log mid-run (throughput kind), and its leader crash is timed
/// (election kind); the checkers pass on every trial.
#[test]
fn multipaxos_processes_survive_kill_9_and_restart_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let throughput = dir.path().join("px-tp.toml");
    std::fs::write(
        &throughput,
        r#"# smoke
[experiment]
name = "px-tp"
kind = "throughput"
mode = "quic"
trials = 1

[cluster]
protocol = "multipaxos"
nodes = 3
storage = "disk"

[workload]
clients = 8
value_bytes = 64
warmup_ms = 300
duration_ms = 2000

[faults]
schedule = [
    { action = "crash", at_ms = 500, node = "leader" },
    { action = "restart", at_ms = 1200, node = "leader" },
]
"#,
    )
    .unwrap();
    let election = dir.path().join("px-el.toml");
    std::fs::write(
        &election,
        r#"# smoke
[experiment]
name = "px-el"
kind = "election"
mode = "quic"
trials = 2

[cluster]
protocol = "multipaxos"
nodes = 3

[faults]
crash = { who = "leader", at = "random-in-heartbeat" }
"#,
    )
    .unwrap();
    for (file, out) in [(&throughput, "tp-out"), (&election, "el-out")] {
        let out = dir.path().join(out);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_qlab"))
            .arg("run")
            .arg(file)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("safety: every trial ok"), "{stdout}");
        let csv = std::fs::read_to_string(out.join("trials.csv")).unwrap();
        assert!(csv.lines().skip(1).all(|l| l.starts_with("multipaxos,quic,") && l.contains(",ok,")), "{csv}");
    }
    let csv = std::fs::read_to_string(dir.path().join("tp-out/trials.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let ops = header.iter().position(|c| *c == "ops").unwrap();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert!(row[ops].parse::<u64>().unwrap() > 200, "writes went on around the crash: {csv}");
}
