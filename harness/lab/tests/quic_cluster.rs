//! Raft over real QUIC on loopback, three replicas in this process (each its own
//! endpoint, storage and task): 1,000 client writes commit while the leader is killed
//! and restarted from its write-ahead log; every checker passes and every replica ends
//! with the same committed log.

use qlab_core::{ClientId, Event, Op, Request, ms};
use qlab_lab::check::check_observations;
use qlab_lab::linearizability::{HistoryOp, LinCheck, check_history};
use qlab_net::drive::Driver;
use qlab_net::frame::DEFAULT_MAX_FRAME_BYTES;
use qlab_net::harness::Harness;
use qlab_net::runtime::{NodeConfig, Storage, run_node};
use qlab_net::tls::{self, Identity, Pinned, Principal};
use qlab_raft::{Message, Raft, RaftClient, RaftConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

const NODES: u32 = 3;
const CLIENTS: usize = 4;
const WRITES: usize = 1_000;

fn free_udp_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_over_quic_survives_a_leader_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let identities: Vec<Identity> = (0..NODES).map(|i| Identity::generate(Principal::Node(i))).collect();
    let harness_identity = Identity::generate(Principal::Harness);
    let mut pinned_entries: Vec<(Principal, Vec<u8>)> =
        identities.iter().enumerate().map(|(i, id)| (Principal::Node(i as u32), id.cert_der.clone())).collect();
    pinned_entries.push((Principal::Harness, harness_identity.cert_der.clone()));
    let pinned = Pinned::new(pinned_entries);
    let addrs: Vec<SocketAddr> = (0..NODES).map(|_| free_udp_addr()).collect();
    let start_unix_ns = unix_ns();
    let config = |id: u32| NodeConfig {
        id,
        addrs: addrs.clone(),
        identity: identities[id as usize].clone(),
        pinned: pinned.clone(),
        protocol: RaftConfig::default(),
        storage: Storage::Disk { path: dir.path().join(format!("node-{id}.wal")) },
        seed: 7,
        start_unix_ns,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        send_queue_messages: 4096,
    };
    let mut nodes: Vec<tokio::task::JoinHandle<_>> =
        (0..NODES).map(|id| tokio::spawn(run_node::<Raft>(config(id)))).collect();

    let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), &harness_identity, pinned.clone()).unwrap();
    let (harness, from_nodes) = Harness::<Message>::connect(endpoint, &addrs, start_unix_ns, DEFAULT_MAX_FRAME_BYTES);
    let clients: Vec<RaftClient> = (0..CLIENTS)
        .map(|c| {
            let mut client = RaftClient::new(ClientId(c as u64), NODES);
            client.retry_timeout_ns = ms(300);
            client
        })
        .collect();
    let mut driver = Driver::new(harness, from_nodes, clients, start_unix_ns);

    let mut history: Vec<HistoryOp> = Vec::new();
    let mut open: Vec<Option<usize>> = vec![None; CLIENTS];
    let mut seqs = [0u64; CLIENTS];
    let mut completed = 0usize;
    let mut killed = None;
    let give_up = Instant::now() + Duration::from_secs(90);
    let mut submit = |driver: &mut Driver<Message, RaftClient>,
                      history: &mut Vec<HistoryOp>,
                      open: &mut Vec<Option<usize>>,
                      c: usize| {
        seqs[c] += 1;
        let value = [(c as u64).to_le_bytes(), seqs[c].to_le_bytes()].concat();
        let op = Op::Put { key: seqs[c] % 5, value };
        history.push(HistoryOp { client: c as u64, op: op.clone(), invoked: driver.now_ns(), completed: None });
        open[c] = Some(history.len() - 1);
        driver.submit(c, Request { client: ClientId(c as u64), seq: seqs[c], op });
    };
    for c in 0..CLIENTS {
        submit(&mut driver, &mut history, &mut open, c);
    }
    while completed < WRITES {
        let done = driver.next(give_up).await.unwrap_or_else(|| panic!("stalled after {completed} writes"));
        let index = open[done.client].take().unwrap();
        history[index].completed = Some((done.time_ns, done.result));
        completed += 1;
        if completed == WRITES / 3 && killed.is_none() {
            let leader = driver
                .observations
                .iter()
                .filter_map(|o| match o.event {
                    Event::Elected { epoch, .. } => Some((epoch, o.node)),
                    _ => None,
                })
                .max()
                .map(|(_, node)| node)
                .unwrap();
            nodes[leader as usize].abort();
            killed = Some(leader);
        }
        if completed == WRITES / 2 {
            // Restart the killed leader from its WAL, on the same address.
            let leader = killed.unwrap();
            let result = (&mut nodes[leader as usize]).await;
            assert!(result.is_err_and(|e| e.is_cancelled()), "the killed node was aborted, not failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            nodes[leader as usize] = tokio::spawn(run_node::<Raft>(config(leader)));
        }
        if completed + CLIENTS - 1 < WRITES {
            submit(&mut driver, &mut history, &mut open, done.client);
        }
    }
    // Let the commit point reach every replica (heartbeats every 50 ms).
    let settle = Instant::now() + Duration::from_millis(1_500);
    while driver.next(settle).await.is_some() {}

    let observations: Vec<qlab_sim::Observation> = driver
        .observations_in_time_order()
        .into_iter()
        .map(|o| qlab_sim::Observation { time: o.time_ns, node: qlab_core::NodeId(o.node), event: o.event })
        .collect();
    let violations = check_observations(&observations);
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(check_history(&history), LinCheck::Linearizable);
    // Same state everywhere: each replica's highest committed slot and its prefix digest.
    let mut last_commit: Vec<Option<(u64, qlab_core::Digest)>> = vec![None; NODES as usize];
    for o in &observations {
        if let Event::Committed { slot, prefix_digest, .. } = o.event {
            let entry = &mut last_commit[o.node.0 as usize];
            if entry.is_none_or(|(s, _)| slot > s) {
                *entry = Some((slot, prefix_digest));
            }
        }
    }
    assert!(last_commit.iter().all(|c| *c == last_commit[0] && c.is_some()), "{last_commit:?}");
    assert!(last_commit[0].unwrap().0 >= WRITES as u64, "every write is in the log");
    assert!(killed.is_some());
    let restarted = killed.unwrap();
    assert!(
        observations.iter().any(|o| o.node.0 == restarted && matches!(o.event, Event::Restarted { .. })),
        "the killed leader came back from its WAL"
    );
    let elections: Vec<(u64, u32)> = observations
        .iter()
        .filter_map(|o| match o.event {
            Event::Elected { epoch, .. } => Some((epoch, o.node.0)),
            _ => None,
        })
        .collect();
    assert!(elections.iter().any(|(_, node)| *node != restarted), "a new leader took over: {elections:?}");
    eprintln!("elections {elections:?}; last commit {:?}; counters {:?}", last_commit[0], driver.counters);
    for handle in &nodes {
        assert!(!handle.is_finished(), "every node is still running (a bind or WAL failure would end it)");
        handle.abort();
    }
}
