//! Open-loop load end to end (issue 20, item 5): `[workload] arrival = "poisson"` offers
//! requests at a fixed rate whether or not earlier ones returned, and charges each
//! request's latency from its arrival. A server stalled for a second shows why that
//! matters: closed-loop clients stop issuing while it is stalled, so only the one
//! request each had outstanding sees the stall and p99 stays near the round trip
//! (coordinated omission); open-loop arrivals keep coming, queue behind the stall, and
//! p99 is most of the stall. Both modes, the simulator exactly, real processes by
//! SIGSTOP.

use std::path::{Path, PathBuf};

mod common;

use common::{Row, csv_rows, qlab, run_ok};

/// The one-server baseline, stalled for `STALL_MS` in the middle of a 4 s window.
const STALL_MS: f64 = 1000.0;

fn experiment(dir: &Path, name: &str, workload: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[experiment]
name = "{name}"
kind = "throughput"
mode = ["sim", "quic"]
trials = 1
seed = 3

[cluster]
protocol = "unreplicated"
nodes = 1
storage = "memory"

[faults]
schedule = [{{ action = "pause", at_ms = 2500, node = 0, for_ms = {STALL_MS} }}]

[workload]
{workload}
value_bytes = 16
warmup_ms = 500
duration_ms = 4000
"#
        ),
    )
    .unwrap();
    path
}

fn run(dir: &Path, name: &str, workload: &str) -> Vec<Row> {
    let out = dir.join(format!("{name}-run"));
    run_ok(qlab().arg("run").arg(experiment(dir, name, workload)).arg("--out").arg(&out));
    csv_rows(&out.join("trials.csv"))
}

fn number(row: &Row, column: &str) -> f64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column} = {:?} in {row:?}", row[column]))
}

#[test]
fn a_stalled_server_shows_in_open_loop_latency_and_hides_from_closed_loop_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = run(tmp.path(), "closed", "clients = 4");
    let open = run(tmp.path(), "open", "arrival = \"poisson\"\nrate_per_s = 200\nclients = 1000");
    for mode in ["sim", "quic"] {
        let closed = closed.iter().find(|r| r["mode"] == mode).unwrap();
        let open = open.iter().find(|r| r["mode"] == mode).unwrap();
        assert_eq!((closed["safety"].as_str(), open["safety"].as_str()), ("ok", "ok"), "{closed:?} {open:?}");
        assert_eq!((closed["arrival"].as_str(), open["arrival"].as_str()), ("closed", "poisson"));
        // Closed loop: 4 of thousands of operations waited out the stall.
        let closed_p99 = number(closed, "latency_ms_p99");
        assert!(closed_p99 < 0.2 * STALL_MS, "{mode}: closed-loop p99 {closed_p99} ms");
        assert!(closed["rate_per_s"].is_empty() && closed["dropped_ops"].is_empty(), "{closed:?}");
        // Open loop: a quarter of the window's arrivals came during the stall and
        // waited for its end, so p99 is close to the whole stall.
        let open_p99 = number(open, "latency_ms_p99");
        assert!(open_p99 > 0.8 * STALL_MS && open_p99 < 1.5 * STALL_MS, "{mode}: open-loop p99 {open_p99} ms");
        assert_eq!(number(open, "rate_per_s"), 200.0);
        // Every arrival had a free client, and every one completed in the window but
        // those that arrived at its very end.
        assert_eq!(number(open, "dropped_ops"), 0.0, "{open:?}");
        let (arrived, achieved) = (number(open, "arrivals_per_s"), number(open, "ops_per_s"));
        assert!((150.0..250.0).contains(&arrived), "{mode}: {arrived} arrivals/s at 200/s offered");
        assert!(achieved > 0.9 * arrived && achieved <= arrived * 1.05, "{mode}: {achieved} of {arrived}/s");
    }
}

/// docs/real-mode.md: in the simulator, which charges no CPU time, the knee is where a
/// bottleneck the model has saturates. Raft on a simulated disk that does one 2 ms
/// write at a time, unbatched, carries about 500 writes/s; offered more, it completes
/// that many, drops what the bounded clients cannot hold, and `knee.csv` names the
/// highest offered rate it carried. Batching adaptively, it carries 1,000/s.
#[test]
fn a_simulated_disk_puts_the_knee_where_its_writes_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("disk-knee.toml");
    std::fs::write(
        &path,
        r#"[experiment]
name = "disk-knee"
kind = "throughput"
mode = "sim"
trials = 1
seed = 1

[cluster]
protocol = "raft"
nodes = 3

[storage]
fsync_ms = { dist = "constant", value = 2.0 }

[raft]
max_batches_in_flight = 0

[workload]
arrival = "poisson"
rate_per_s = [250, 400, 1000, 2000]
clients = 256
value_bytes = 128
warmup_ms = 500
duration_ms = 4000
"#,
    )
    .unwrap();
    let out = tmp.path().join("run");
    run_ok(qlab().arg("run").arg(&path).arg("--out").arg(&out));
    for row in &csv_rows(&out.join("trials.csv")) {
        let (offered, achieved) = (number(row, "rate_per_s"), number(row, "ops_per_s"));
        if offered <= 400.0 {
            assert!(achieved > 0.95 * offered && number(row, "dropped_ops") == 0.0, "{row:?}");
        } else {
            assert!((450.0..=550.0).contains(&achieved), "offered {offered}/s, achieved {achieved}/s");
            assert!(number(row, "dropped_ops") > 0.0, "{row:?}");
        }
    }
    let knee = &csv_rows(&out.join("knee.csv"))[0];
    assert_eq!((knee["knee_rate_per_s"].as_str(), knee["rates_carried"].as_str()), ("400.000", "2"));

    // Adaptive batching (the default) shares each 2 ms write among the commands that
    // waited for it, so the same disk carries the 1,000/s that saturated it unbatched.
    let batched = tmp.path().join("disk-knee-batched.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("max_batches_in_flight = 0", "").replace("[250, 400, 1000, 2000]", "[1000]");
    std::fs::write(&batched, text).unwrap();
    let out = tmp.path().join("run-batched");
    run_ok(qlab().arg("run").arg(&batched).arg("--out").arg(&out));
    let row = &csv_rows(&out.join("trials.csv"))[0];
    let achieved = number(row, "ops_per_s");
    assert!(achieved > 950.0 && number(row, "dropped_ops") == 0.0, "adaptive batching on a 2 ms disk: {row:?}");
}
