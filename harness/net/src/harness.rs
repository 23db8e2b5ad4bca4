//! The harness side of real mode: one control link to every node.
//!
//! Each link is a QUIC connection authenticated as [`Principal::Harness`] with one
//! bidirectional stream: client requests and control commands go out, replies and
//! reports (events for the checkers, readiness, counters) come back and are merged
//! into one channel tagged with the node they came from. A link whose node dies is
//! re-dialled with back-off until the harness is dropped, so a restarted node is
//! picked up again without the experiment doing anything. What is sent to a node while
//! its link is down is lost, as it would be on a network; clients retry.

use crate::frame::{COALESCED_WRITE_BYTES, FrameDecoder, coalesce_queued, decode, encode};
use crate::runtime::Wire;
use crate::tls::Principal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Something a node sent the harness.
#[derive(Debug)]
pub struct FromNode<M> {
    pub node: u32,
    pub wire: Wire<M>,
    /// Nanoseconds since the cluster's start when the harness received it.
    pub received_ns: u64,
}

pub struct Harness<M> {
    links: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    tasks: tokio::task::JoinSet<()>,
    _marker: std::marker::PhantomData<M>,
}

impl<M> Drop for Harness<M> {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

impl<M> Harness<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Dial every node (and keep re-dialling); everything they send arrives on the
    /// returned receiver.
    pub fn connect(
        endpoint: quinn::Endpoint,
        addrs: &[SocketAddr],
        start_unix_ns: u64,
        max_frame_bytes: usize,
    ) -> (Harness<M>, mpsc::UnboundedReceiver<FromNode<M>>) {
        let (from_nodes_tx, from_nodes) = mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        let mut links = Vec::new();
        for (node, addr) in addrs.iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            links.push(tx);
            tasks.spawn(link(
                endpoint.clone(),
                node as u32,
                *addr,
                rx,
                from_nodes_tx.clone(),
                start_unix_ns,
                max_frame_bytes,
            ));
        }
        (Harness { links, tasks, _marker: std::marker::PhantomData }, from_nodes)
    }

    /// Send to one node (lost if its link is down).
    pub fn send(&self, node: u32, wire: &Wire<M>) {
        let mut frame = Vec::new();
        encode(wire, &mut frame);
        if let Some(link) = self.links.get(node as usize) {
            let _ = link.send(frame);
        }
    }

    /// Send to one node after `delay` (a client a region away), without holding up
    /// anything sent meanwhile.
    pub fn send_after(&self, node: u32, wire: &Wire<M>, delay: Duration) {
        let mut frame = Vec::new();
        encode(wire, &mut frame);
        if let Some(link) = self.links.get(node as usize).cloned() {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = link.send(frame);
            });
        }
    }

    pub fn nodes(&self) -> u32 {
        self.links.len() as u32
    }
}

fn since_start(start_unix_ns: u64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    now.saturating_sub(start_unix_ns)
}

async fn link<M: DeserializeOwned>(
    endpoint: quinn::Endpoint,
    node: u32,
    addr: SocketAddr,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    from_nodes: mpsc::UnboundedSender<FromNode<M>>,
    start_unix_ns: u64,
    max_frame_bytes: usize,
) {
    let name = Principal::Node(node).server_name();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut batch = Vec::with_capacity(COALESCED_WRITE_BYTES);
    loop {
        let streams = async {
            let connection = endpoint.connect(addr, &name).ok()?.await.ok()?;
            let (mut send, recv) = connection.open_bi().await.ok()?;
            // A stream reaches the peer only with its first bytes: say hello.
            let mut hello = Vec::new();
            encode(&Wire::<()>::Control(crate::runtime::Control::Hello), &mut hello);
            send.write_all(&hello).await.ok()?;
            Some((connection, send, recv))
        }
        .await;
        let Some((_connection, mut send, mut recv)) = streams else {
            // Drop what was meant for a node that is not there.
            while outgoing.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        };
        let mut decoder = FrameDecoder::new(max_frame_bytes);
        loop {
            tokio::select! {
                frame = outgoing.recv() => {
                    let Some(frame) = frame else { return };
                    // Under load the clients hand this link many requests at a time.
                    coalesce_queued(&mut batch, &frame, &mut outgoing);
                    if send.write_all(&batch).await.is_err() {
                        break;
                    }
                }
                read = recv.read(&mut buffer) => {
                    let n = match read {
                        Ok(Some(n)) => n,
                        _ => break,
                    };
                    decoder.push(&buffer[..n]);
                    // Everything in one read arrived together: one clock reading for all.
                    let received_ns = since_start(start_unix_ns);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(payload)) => {
                                if let Ok(wire) = decode::<Wire<M>>(&payload)
                                    && from_nodes.send(FromNode { node, wire, received_ns }).is_err()
                                {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
