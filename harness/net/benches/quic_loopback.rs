//! The raw QUIC ceiling on this machine, for judging real-mode throughput: how many
//! small framed messages per second one pinned-mTLS quinn stream carries over loopback,
//! and how many a sender fanning out to two peers (a 3-node leader's pattern) gets out.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qlab_net::frame::{FrameDecoder, encode_frame};
use qlab_net::tls::{Identity, Pinned, Principal, endpoint};
use std::net::SocketAddr;

const MESSAGES: u64 = 256 * 200;
/// About an AppendEntries carrying one 128-byte write.
const MESSAGE_BYTES: usize = 200;

struct Setup {
    sender: quinn::Endpoint,
    receivers: Vec<(quinn::Endpoint, SocketAddr)>,
}

fn setup(receivers: u32) -> Setup {
    let identities: Vec<Identity> = (0..=receivers).map(|i| Identity::generate(Principal::Node(i))).collect();
    let pinned = Pinned::new(
        identities.iter().enumerate().map(|(i, id)| (Principal::Node(i as u32), id.cert_der.clone())).collect(),
    );
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sender = endpoint(local, &identities[0], pinned.clone()).unwrap();
    let receivers = (1..=receivers)
        .map(|i| {
            let e = endpoint(local, &identities[i as usize], pinned.clone()).unwrap();
            let addr = e.local_addr().unwrap();
            (e, addr)
        })
        .collect();
    Setup { sender, receivers }
}

/// Send MESSAGES frames to every receiver, each on one long-lived stream, and wait
/// until every receiver has decoded all of them.
async fn blast(setup: &Setup) {
    let mut readers = Vec::new();
    for (receiver, _) in &setup.receivers {
        let receiver = receiver.clone();
        readers.push(tokio::spawn(async move {
            let connection = receiver.accept().await.unwrap().await.unwrap();
            let mut stream = connection.accept_uni().await.unwrap();
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut buffer = vec![0u8; 64 * 1024];
            let mut seen = 0u64;
            while seen < MESSAGES {
                let n = stream.read(&mut buffer).await.unwrap().unwrap();
                decoder.push(&buffer[..n]);
                while decoder.next_frame().unwrap().is_some() {
                    seen += 1;
                }
            }
        }));
    }
    let mut writers = Vec::new();
    for (i, (_, addr)) in setup.receivers.iter().enumerate() {
        let sender = setup.sender.clone();
        let addr = *addr;
        writers.push(tokio::spawn(async move {
            let connection = sender.connect(addr, &format!("node-{}", i + 1)).unwrap().await.unwrap();
            let mut stream = connection.open_uni().await.unwrap();
            let payload = vec![7u8; MESSAGE_BYTES];
            let mut batch = Vec::with_capacity(64 * 1024);
            for _ in 0..MESSAGES / 256 {
                batch.clear();
                for _ in 0..256 {
                    encode_frame(&payload, &mut batch);
                }
                stream.write_all(&batch).await.unwrap();
            }
            stream.finish().unwrap();
            let _ = stream.stopped().await;
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    for w in writers {
        w.await.unwrap();
    }
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("quic_loopback");
    group.sample_size(10);
    for fan_out in [1u32, 2] {
        let setup = runtime.block_on(async { setup(fan_out) });
        group.throughput(Throughput::Elements(MESSAGES * fan_out as u64));
        group.bench_function(format!("messages_{MESSAGE_BYTES}B_fan_out_{fan_out}"), |b| {
            b.iter(|| runtime.block_on(blast(&setup)));
        });
    }
    group.finish();
}

criterion_group!(benches, loopback);
criterion_main!(benches);
