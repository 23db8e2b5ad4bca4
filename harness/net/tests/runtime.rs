//! A node under a misbehaving (but authenticated) peer: garbage frames are counted and
//! dropped, the peer's connection is closed once it keeps at it, and the node goes on;
//! a clock rate that is not a positive number is refused and counted the same way.

use qlab_net::drive::Driver;
use qlab_net::frame::{DEFAULT_MAX_FRAME_BYTES, encode_frame};
use qlab_net::harness::Harness;
use qlab_net::runtime::{Control, MALFORMED_FRAMES_BEFORE_CLOSE, NodeConfig, Storage, Wire, run_node};
use qlab_net::tls::{self, Identity, Pinned, Principal};
use qlab_raft::{Message, Raft, RaftClient, RaftConfig};
use std::time::Duration;
use tokio::time::Instant;

/// Node 0 of `addrs`: Raft with its defaults, in memory.
fn node_zero(
    addrs: &[std::net::SocketAddr],
    identity: Identity,
    pinned: &Pinned,
    start_unix_ns: u64,
) -> NodeConfig<RaftConfig> {
    NodeConfig {
        id: 0,
        clock: qlab_net::runtime::SkewedClock::TRUE,
        addrs: addrs.to_vec(),
        identity,
        pinned: pinned.clone(),
        protocol: RaftConfig::default(),
        storage: Storage::Memory,
        seed: 1,
        start_unix_ns,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        send_queue_messages: 64,
        orphan_timeout_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_the_sender_cut_off() {
    let node = Identity::generate(Principal::Node(0));
    let peer = Identity::generate(Principal::Node(1));
    let harness_identity = Identity::generate(Principal::Harness);
    let pinned = Pinned::new(vec![
        (Principal::Node(0), node.cert_der.clone()),
        (Principal::Node(1), peer.cert_der.clone()),
        (Principal::Harness, harness_identity.cert_der.clone()),
    ]);
    let addrs = qlab_net::cluster::free_loopback_addrs(2).unwrap();
    let start_unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let running = tokio::spawn(run_node::<Raft>(node_zero(&addrs, node, &pinned, start_unix_ns)));

    // The peer holds a pinned certificate (authentication passes) but speaks garbage.
    let attacker = tls::endpoint("127.0.0.1:0".parse().unwrap(), &peer, pinned.clone()).unwrap();
    let connection = attacker.connect(addrs[0], "node-0").unwrap().await.unwrap();
    let mut stream = connection.open_uni().await.unwrap();
    let mut garbage = Vec::new();
    for i in 0..(MALFORMED_FRAMES_BEFORE_CLOSE + 10) {
        encode_frame(&[0xff, 0xee, i as u8, 0x00, 0x13, 0x37], &mut garbage);
    }
    let _ = stream.write_all(&garbage).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), connection.closed()).await;
    assert!(closed.is_ok(), "the node closes a connection that keeps sending garbage");

    // The node is alive and counted what it dropped.
    let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), &harness_identity, pinned).unwrap();
    let (harness, from_nodes) =
        Harness::<Message>::connect(endpoint, &addrs[..1], start_unix_ns, DEFAULT_MAX_FRAME_BYTES);
    let mut driver: Driver<Message, RaftClient> = Driver::new(harness, from_nodes, Vec::new(), start_unix_ns);
    let tag = driver.request_counters();
    let give_up = Instant::now() + Duration::from_secs(5);
    while driver.counters_for_node(tag, 0).is_none() && Instant::now() < give_up {
        let _ = driver.next(Instant::now() + Duration::from_millis(20)).await;
    }
    let counters = driver.counters_for_node(tag, 0).expect("the node still answers");
    assert!(counters.malformed_frames > MALFORMED_FRAMES_BEFORE_CLOSE, "{counters:?}");
    assert_eq!(counters.messages_received, 0, "nothing malformed reached the protocol");
    assert!(!running.is_finished());
    running.abort();
}

/// `Control::ClockRate` with a rate that is zero, negative or not a number would stop
/// the node's clock or run it backwards: the node refuses it, counts it as a malformed
/// frame, and keeps running; a positive rate is taken without a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_rate_that_is_not_a_positive_number_is_refused_and_counted() {
    let node = Identity::generate(Principal::Node(0));
    let harness_identity = Identity::generate(Principal::Harness);
    let pinned = Pinned::new(vec![
        (Principal::Node(0), node.cert_der.clone()),
        (Principal::Harness, harness_identity.cert_der.clone()),
    ]);
    let addrs = qlab_net::cluster::free_loopback_addrs(1).unwrap();
    let start_unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let running = tokio::spawn(run_node::<Raft>(node_zero(&addrs, node, &pinned, start_unix_ns)));
    let endpoint = tls::endpoint("127.0.0.1:0".parse().unwrap(), &harness_identity, pinned).unwrap();
    let (harness, from_nodes) =
        Harness::<Message>::connect(endpoint, &addrs[..1], start_unix_ns, DEFAULT_MAX_FRAME_BYTES);
    let mut driver: Driver<Message, RaftClient> = Driver::new(harness, from_nodes, Vec::new(), start_unix_ns);
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 2.0] {
        driver.harness().send(0, &Wire::Control(Control::ClockRate { rate }));
    }
    let tag = driver.request_counters();
    let give_up = Instant::now() + Duration::from_secs(5);
    while driver.counters_for_node(tag, 0).is_none() && Instant::now() < give_up {
        let _ = driver.next(Instant::now() + Duration::from_millis(20)).await;
    }
    let counters = driver.counters_for_node(tag, 0).expect("the node still answers");
    assert_eq!(counters.malformed_frames, 4, "zero, negative, NaN and infinite refused; 2.0 taken: {counters:?}");
    assert!(!running.is_finished());
    running.abort();
}
