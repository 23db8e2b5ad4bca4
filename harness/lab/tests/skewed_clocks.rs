//! Skewed clocks on real nodes (issue 20, item 2's groundwork): a node's protocol clock
//! reads `offset + rate × cluster time` and its timers run on that clock, as the
//! simulator's `set_clock_rate` has them. Three Raft replicas in this process, first on
//! true clocks and then with every clock three times fast: the leader's heartbeats, set
//! for the same interval on its own clock, come three times as often in true time, so
//! the replicas send about three times the messages in the same two seconds.

use qlab_core::ms;
use qlab_net::drive::Driver;
use qlab_net::frame::DEFAULT_MAX_FRAME_BYTES;
use qlab_net::harness::Harness;
use qlab_net::runtime::{NodeConfig, SkewedClock, Storage, run_node};
use qlab_net::tls;
use qlab_raft::{Message, Raft, RaftConfig};
use std::time::Duration;
use tokio::time::Instant;

mod in_process;

const NODES: u32 = 3;

/// Messages the replicas of an idle cluster on `clock` send in two seconds, counted from
/// one second after they start.
async fn idle_messages_in_two_seconds(clock: SkewedClock) -> u64 {
    let (identities, harness_identity, pinned) = in_process::keys(NODES);
    let addrs = qlab_net::cluster::free_loopback_addrs(NODES as usize).unwrap();
    let start_unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let nodes: Vec<tokio::task::JoinHandle<_>> = (0..NODES)
        .map(|id| {
            tokio::spawn(run_node::<Raft>(NodeConfig {
                id,
                clock,
                addrs: addrs.clone(),
                identity: identities[id as usize].clone(),
                pinned: pinned.clone(),
                protocol: RaftConfig::default(),
                storage: Storage::Memory,
                seed: 3,
                start_unix_ns,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                send_queue_messages: 4096,
                orphan_timeout_ms: 0,
            }))
        })
        .collect();
    let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), &harness_identity, pinned).unwrap();
    let (harness, from_nodes) = Harness::<Message>::connect(endpoint, &addrs, start_unix_ns, DEFAULT_MAX_FRAME_BYTES);
    let clients = qlab_lab::real::clients::<Raft>(&RaftConfig::default(), 0, NODES, ms(300));
    let mut driver = Driver::new(harness, from_nodes, clients, start_unix_ns);
    let mut counts = Vec::new();
    for wait_ms in [1_000, 2_000] {
        let until = Instant::now() + Duration::from_millis(wait_ms);
        while driver.next(until).await.is_some() {}
        let tag = driver.request_counters();
        let until = Instant::now() + Duration::from_millis(300);
        while driver.counters_for(tag).is_none() && Instant::now() < until {
            driver.next(Instant::now() + Duration::from_millis(20)).await;
        }
        let counters = driver.counters_for(tag).expect("every node answers its counters");
        counts.push(counters.iter().map(|c| c.messages_sent).sum::<u64>());
    }
    for node in nodes {
        node.abort();
    }
    counts[1] - counts[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_fires_its_timers_early_in_true_time() {
    let true_time = idle_messages_in_two_seconds(SkewedClock::TRUE).await;
    let fast = idle_messages_in_two_seconds(SkewedClock { rate: 3.0, offset_ns: 0 }).await;
    let ratio = fast as f64 / true_time as f64;
    assert!((2.4..=3.6).contains(&ratio), "{fast} messages at 3× against {true_time} on true clocks: {ratio:.2}×");
}
