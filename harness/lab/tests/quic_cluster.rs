//! Raft over real QUIC on loopback, three replicas in this process (each its own
//! endpoint, storage and task): 1,000 client writes commit while the leader is killed
//! and restarted from its write-ahead log; every checker passes and every replica ends
//! with the same committed log; then the harness tells the leader to hand leadership to
//! another replica (thesis §3.10) over its control link, and the target takes over.
//! (`harness/cli/tests/quic_processes.rs` does the same with one OS process per node and
//! `kill -9`.)

use qlab_check::check_observations;
use qlab_check::linearizability::{LinCheck, check_history};
use qlab_core::{AdminCommand, Event, NodeId, ms};
use qlab_lab::real::{WriteLoad, final_commits, latest_leader, observations_for_checkers};
use qlab_net::drive::Driver;
use qlab_net::frame::DEFAULT_MAX_FRAME_BYTES;
use qlab_net::harness::Harness;
use qlab_net::runtime::{Control, NodeConfig, Storage, Wire, run_node};
use qlab_net::tls;
use qlab_raft::{Message, Raft, RaftConfig};
use std::time::Duration;
use tokio::time::Instant;

mod in_process;

const NODES: u32 = 3;
const CLIENTS: usize = 4;
const WRITES: usize = 1_000;

/// Ask the current leader, over its control link, to hand leadership to `target`.
fn ask_to_transfer<C: qlab_core::Client>(driver: &Driver<Message, C>, target: u32) {
    if let Some(leader) = latest_leader(&observations_for_checkers(driver)) {
        let command = AdminCommand::TransferLeadership { to: NodeId(target) };
        driver.harness().send(leader, &Wire::<Message>::Control(Control::Admin(command)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_over_quic_survives_a_leader_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (identities, harness_identity, pinned) = in_process::keys(NODES);
    let addrs = qlab_net::cluster::free_loopback_addrs(NODES as usize).unwrap();
    let start_unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let config = |id: u32| NodeConfig {
        id,
        clock: qlab_net::runtime::SkewedClock::TRUE,
        addrs: addrs.clone(),
        identity: identities[id as usize].clone(),
        pinned: pinned.clone(),
        protocol: RaftConfig::default(),
        storage: Storage::Disk { path: dir.path().join(format!("node-{id}.wal")) },
        seed: 7,
        start_unix_ns,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        send_queue_messages: 4096,
        orphan_timeout_ms: 0,
    };
    let mut nodes: Vec<tokio::task::JoinHandle<_>> =
        (0..NODES).map(|id| tokio::spawn(run_node::<Raft>(config(id)))).collect();

    let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), &harness_identity, pinned.clone()).unwrap();
    let (harness, from_nodes) = Harness::<Message>::connect(endpoint, &addrs, start_unix_ns, DEFAULT_MAX_FRAME_BYTES);
    let clients = qlab_lab::real::clients::<Raft>(&RaftConfig::default(), CLIENTS, NODES, ms(300));
    let mut driver = Driver::new(harness, from_nodes, clients, start_unix_ns);
    let mut load = WriteLoad::new(CLIENTS, WRITES, 5, 16);
    load.start(&mut driver);
    let give_up = Instant::now() + Duration::from_secs(90);
    let mut killed = None;
    let mut handed_to = None;
    while load.completed < WRITES {
        load.step(&mut driver, give_up).await.unwrap_or_else(|| panic!("stalled after {} writes", load.completed));
        if load.completed == WRITES / 3 && killed.is_none() {
            let leader = latest_leader(&observations_for_checkers(&driver)).unwrap();
            nodes[leader as usize].abort();
            killed = Some(leader);
        }
        if load.completed == WRITES / 2 {
            // Restart the killed leader from its WAL, on the same address.
            let leader = killed.unwrap();
            let result = (&mut nodes[leader as usize]).await;
            assert!(result.is_err_and(|e| e.is_cancelled()), "the killed node was aborted, not failed");
            nodes[leader as usize] = tokio::spawn(run_node::<Raft>(config(leader)));
        }
        if load.completed == WRITES * 3 / 4 && handed_to.is_none() {
            let leader = latest_leader(&observations_for_checkers(&driver)).unwrap();
            let target = (leader + 1) % NODES;
            // On the nodes' clock: later than every event reported so far.
            let reported_until = observations_for_checkers(&driver).iter().map(|o| o.time).max().unwrap_or(0);
            handed_to = Some((target, reported_until));
            ask_to_transfer(&driver, target);
        }
    }
    // Real timing is not the simulator's: a transfer abandoned because the target lagged
    // past an election timeout, or sent to a leader that had just lost office, is asked
    // again of whoever leads now.
    let (target, asked_ns) = handed_to.unwrap();
    let elected_since = |driver: &Driver<Message, _>| {
        observations_for_checkers(driver)
            .iter()
            .any(|o| o.node.0 == target && o.time >= asked_ns && matches!(o.event, Event::Elected { .. }))
    };
    for _ in 0..5 {
        let wait = Instant::now() + Duration::from_millis(500);
        while driver.next(wait).await.is_some() {}
        if elected_since(&driver) {
            break;
        }
        ask_to_transfer(&driver, target);
    }
    assert!(elected_since(&driver), "the transfer's target was elected after the command");
    // Let the commit point reach every replica (heartbeats every 50 ms).
    let settle = Instant::now() + Duration::from_millis(1_500);
    while driver.next(settle).await.is_some() {}

    let observations = observations_for_checkers(&driver);
    let violations = check_observations(&observations);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(check_history(&load.history), LinCheck::Linearizable);
    let last_commit = final_commits(&observations, NODES);
    assert!(last_commit.iter().all(|c| *c == last_commit[0] && c.is_some()), "{last_commit:?}");
    assert!(last_commit[0].unwrap().0 >= WRITES as u64, "every write is in the log");
    let restarted = killed.unwrap();
    assert!(
        observations.iter().any(|o| o.node.0 == restarted && matches!(o.event, Event::Restarted { .. })),
        "the killed leader came back from its WAL"
    );
    assert!(
        observations.iter().any(|o| o.node.0 != restarted && matches!(o.event, Event::Elected { .. })),
        "another node took over as leader"
    );
    for handle in &nodes {
        assert!(!handle.is_finished(), "every node is still running (a bind or WAL failure would end it)");
        handle.abort();
    }
}
