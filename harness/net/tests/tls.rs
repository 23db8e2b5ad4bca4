//! Pinned mutual TLS: pinned peers talk; unknown or mismatched certificates are refused.

use qlab_net::tls::{Identity, Pinned, Principal, endpoint};
use std::net::SocketAddr;
use std::time::Duration;

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Cluster {
    identities: Vec<Identity>,
    pinned: Pinned,
}

fn cluster(nodes: u32) -> Cluster {
    let identities: Vec<Identity> = (0..nodes).map(|i| Identity::generate(Principal::Node(i))).collect();
    let pinned = Pinned::new(
        identities.iter().enumerate().map(|(i, id)| (Principal::Node(i as u32), id.cert_der.clone())).collect(),
    );
    Cluster { identities, pinned }
}

/// Accept one connection and one uni stream on `server`; return who it was and what it said.
async fn accept_one(server: &quinn::Endpoint, pinned: &Pinned) -> Result<(Option<Principal>, Vec<u8>), String> {
    let incoming = server.accept().await.ok_or("endpoint closed")?;
    let connection = incoming.await.map_err(|e| e.to_string())?;
    let who = pinned.identify(&connection);
    let mut stream = connection.accept_uni().await.map_err(|e| e.to_string())?;
    let bytes = stream.read_to_end(1024).await.map_err(|e| e.to_string())?;
    Ok((who, bytes))
}

async fn send_hello(client: &quinn::Endpoint, to: SocketAddr, name: &str) -> Result<(), String> {
    let connection = client.connect(to, name).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_all(b"hello").await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())?;
    stream.stopped().await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn pinned_nodes_connect_and_are_identified() {
    let c = cluster(2);
    let server = endpoint(localhost(), &c.identities[1], c.pinned.clone()).unwrap();
    let client = endpoint(localhost(), &c.identities[0], c.pinned.clone()).unwrap();
    let addr = server.local_addr().unwrap();
    let (sent, received) = tokio::join!(send_hello(&client, addr, "node-1"), accept_one(&server, &c.pinned));
    sent.unwrap();
    assert_eq!(received.unwrap(), (Some(Principal::Node(0)), b"hello".to_vec()));
}

#[tokio::test]
async fn an_unknown_certificate_cannot_join_or_inject() {
    let c = cluster(2);
    let server = endpoint(localhost(), &c.identities[1], c.pinned.clone()).unwrap();
    let addr = server.local_addr().unwrap();
    // The intruder trusts the cluster's certificates but holds one of its own.
    let intruder_identity = Identity::generate(Principal::Node(0));
    let intruder = endpoint(localhost(), &intruder_identity, c.pinned.clone()).unwrap();
    let accepted = tokio::spawn({
        let server = server.clone();
        let pinned = c.pinned.clone();
        async move { tokio::time::timeout(Duration::from_secs(3), accept_one(&server, &pinned)).await }
    });
    let sent = tokio::time::timeout(Duration::from_secs(3), send_hello(&intruder, addr, "node-1")).await;
    assert!(!matches!(sent, Ok(Ok(()))), "the intruder's message must not be delivered: {sent:?}");
    // Either the handshake was refused or nothing was ever accepted.
    if let Ok(Ok((who, bytes))) = accepted.await.unwrap() {
        panic!("server accepted {who:?} saying {bytes:?}");
    }
}

#[tokio::test]
async fn a_server_with_another_nodes_certificate_is_refused() {
    let c = cluster(3);
    // This server presents node 2's (pinned, valid) certificate, but we dial node 1.
    let impostor = endpoint(localhost(), &c.identities[2], c.pinned.clone()).unwrap();
    let client = endpoint(localhost(), &c.identities[0], c.pinned.clone()).unwrap();
    let addr = impostor.local_addr().unwrap();
    let _accepting = tokio::spawn({
        let impostor = impostor.clone();
        let pinned = c.pinned.clone();
        async move { accept_one(&impostor, &pinned).await }
    });
    let sent = tokio::time::timeout(Duration::from_secs(3), send_hello(&client, addr, "node-1")).await;
    assert!(matches!(sent, Ok(Err(_))), "dialling node-1 must reject node-2's certificate: {sent:?}");
    // Dialled by its own name, the same server is accepted.
    let server_ok = endpoint(localhost(), &c.identities[1], c.pinned.clone()).unwrap();
    let ok_addr = server_ok.local_addr().unwrap();
    let (sent, received) = tokio::join!(send_hello(&client, ok_addr, "node-1"), accept_one(&server_ok, &c.pinned));
    sent.unwrap();
    assert_eq!(received.unwrap().0, Some(Principal::Node(0)));
}

/// After a node dies without closing its connections (kill -9), its restarted
/// process answers the peers' next packets with stateless resets (the key is derived
/// from the node's private key), so they notice at once instead of after the idle timeout.
#[test]
fn a_restarted_node_resets_connections_to_its_dead_predecessor() {
    let c = cluster(2);
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let client = client_rt.block_on(async { endpoint(localhost(), &c.identities[0], c.pinned.clone()).unwrap() });
    // The server lives in its own runtime; dropping that runtime is a kill -9.
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(async { endpoint(localhost(), &c.identities[1], c.pinned.clone()).unwrap() });
    let addr = server.local_addr().unwrap();
    let accepted = server_rt.spawn({
        let server = server.clone();
        async move {
            let connection = server.accept().await.unwrap().await.unwrap();
            let mut stream = connection.accept_uni().await.unwrap();
            let mut buffer = [0u8; 5];
            stream.read_exact(&mut buffer).await.unwrap();
            std::future::pending::<()>().await; // keep the connection open
        }
    });
    let mut stream = client_rt.block_on(async {
        let connection = client.connect(addr, "node-1").unwrap().await.unwrap();
        let mut stream = connection.open_uni().await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
    });
    drop(accepted);
    drop(server);
    drop(server_rt);
    let restarted_rt = tokio::runtime::Runtime::new().unwrap();
    let _restarted = restarted_rt.block_on(async { endpoint(addr, &c.identities[1], c.pinned.clone()).unwrap() });
    let started = std::time::Instant::now();
    let failed = client_rt.block_on(async {
        for _ in 0..200 {
            if stream.write_all(&[0u8; 64]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    });
    assert!(failed, "the old connection was never reset");
    assert!(started.elapsed() < Duration::from_millis(1_500), "reset took {:?}", started.elapsed());
}
