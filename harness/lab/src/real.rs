//! Real mode glue: run one node from a cluster file (the `qlab node` command).

use crate::error::{LabError, Result};
use qlab_net::cluster::ClusterFile;
use qlab_net::runtime::run_node;
use qlab_raft::{Raft, RaftConfig};
use std::path::Path;

/// Protocols a cluster file may name.
pub const PROTOCOLS: &[&str] = &["raft"];

/// Run node `id` of the cluster described by `cluster_path` until it is stopped.
pub fn node_main(cluster_path: &Path, id: u32) -> Result<()> {
    let file = ClusterFile::load(cluster_path)?;
    let base = cluster_path.parent().unwrap_or(Path::new("."));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabError::Usage(format!("starting the async runtime: {e}")))?;
    match file.protocol.as_str() {
        "raft" => {
            let config = file.node_config::<RaftConfig>(base, id)?;
            runtime.block_on(run_node::<Raft>(config))?;
        }
        other => {
            return Err(LabError::Usage(format!(
                "{}: unknown protocol {other:?}, expected one of {PROTOCOLS:?}",
                cluster_path.display()
            )));
        }
    }
    Ok(())
}

use crate::linearizability::HistoryOp;
use qlab_core::{Client, ClientId, Digest, Event, NodeId, Op, Request};
use qlab_net::drive::{Done, Driver};
use qlab_sim::Observation;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Closed-loop unique-value writes from every client of a [`Driver`], with the client
/// history the linearizability checker needs.
pub struct WriteLoad {
    pub history: Vec<HistoryOp>,
    open: Vec<Option<usize>>,
    seqs: Vec<u64>,
    pub completed: usize,
    /// Stop issuing new writes once this many have been issued.
    pub limit: usize,
    issued: usize,
    keys: u64,
    value_bytes: usize,
}

impl WriteLoad {
    pub fn new(clients: usize, limit: usize, keys: u64, value_bytes: usize) -> Self {
        WriteLoad {
            history: Vec::new(),
            open: vec![None; clients],
            seqs: vec![0; clients],
            completed: 0,
            limit,
            issued: 0,
            keys: keys.max(1),
            value_bytes: value_bytes.max(16),
        }
    }

    fn submit<M, C>(&mut self, driver: &mut Driver<M, C>, client: usize)
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        C: Client,
    {
        if self.issued >= self.limit {
            return;
        }
        self.issued += 1;
        self.seqs[client] += 1;
        let seq = self.seqs[client];
        let mut value = [(client as u64).to_le_bytes(), seq.to_le_bytes()].concat();
        value.resize(self.value_bytes, b'.');
        let op = Op::Put { key: seq % self.keys, value };
        self.history.push(HistoryOp {
            client: client as u64,
            op: op.clone(),
            invoked: driver.now_ns(),
            completed: None,
        });
        self.open[client] = Some(self.history.len() - 1);
        driver.submit(client, Request { client: ClientId(client as u64), seq, op });
    }

    /// Give every idle client a write.
    pub fn start<M, C>(&mut self, driver: &mut Driver<M, C>)
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        C: Client,
    {
        for client in 0..self.open.len() {
            if self.open[client].is_none() {
                self.submit(driver, client);
            }
        }
    }

    /// Wait for the next completion (recording it and issuing the client's next write);
    /// `None` at the deadline.
    pub async fn step<M, C>(&mut self, driver: &mut Driver<M, C>, deadline: Instant) -> Option<Done>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
        C: Client,
    {
        let done = driver.next(deadline).await?;
        if let Some(index) = self.open[done.client].take() {
            self.history[index].completed = Some((done.time_ns, done.result.clone()));
            self.completed += 1;
        }
        self.submit(driver, done.client);
        Some(done)
    }
}

/// A driver's observations as the checkers take them, in time order.
pub fn observations_for_checkers<M, C>(driver: &Driver<M, C>) -> Vec<Observation>
where
    M: Serialize + DeserializeOwned + Send + 'static,
    C: Client,
{
    driver
        .observations_in_time_order()
        .into_iter()
        .map(|o| Observation { time: o.time_ns, node: NodeId(o.node), event: o.event })
        .collect()
}

/// Each node's highest committed slot and its prefix digest: equal everywhere means
/// every replica ended with the same committed log.
pub fn final_commits(observations: &[Observation], nodes: u32) -> Vec<Option<(u64, Digest)>> {
    let mut last: Vec<Option<(u64, Digest)>> = vec![None; nodes as usize];
    for o in observations {
        if let Event::Committed { slot, prefix_digest, .. } = o.event {
            let entry = &mut last[o.node.0 as usize];
            if entry.is_none_or(|(s, _)| slot > s) {
                *entry = Some((slot, prefix_digest));
            }
        }
    }
    last
}

/// The node that most recently reported being elected (highest epoch).
pub fn latest_leader(observations: &[Observation]) -> Option<u32> {
    observations
        .iter()
        .filter_map(|o| match o.event {
            Event::Elected { epoch, .. } => Some((epoch, o.node.0)),
            _ => None,
        })
        .max()
        .map(|(_, node)| node)
}

// ---- experiment trials in quic mode -------------------------------------------------

use crate::config::{Experiment, NetworkSection, Point};
use crate::workload::Workload;
use qlab_net::cluster::LocalCluster;
use qlab_net::harness::Harness;
use qlab_net::runtime::{Control, LinkFaults, Wire};
use qlab_raft::{Message, RaftClient};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

/// The async runtime real-mode trials run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabError::Usage(format!("starting the async runtime: {e}")))
}

/// A fresh local cluster for one trial, its processes started.
pub fn start_cluster(experiment: &Experiment, point: &Point, seed: u64, node_binary: &Path) -> Result<LocalCluster> {
    static CLUSTERS: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qlab-{}-{}-{}",
        std::process::id(),
        experiment.name(),
        CLUSTERS.fetch_add(1, AtomicOrdering::Relaxed)
    ));
    let raft = point.raft_config(&experiment.file.raft);
    let config = toml::Value::try_from(raft).map_err(|e| LabError::Usage(format!("raft config: {e}")))?;
    let storage = experiment.file.cluster.storage.clone();
    let mut cluster = LocalCluster::create(&dir, node_binary, "raft", config, point.nodes, storage, seed)?;
    cluster.remove_dir_on_drop();
    cluster.start_all()?;
    Ok(cluster)
}

/// The harness side: links to every node and `point.clients` Raft clients.
pub fn driver(cluster: &LocalCluster, point: &Point) -> Result<Driver<Message, RaftClient>> {
    let pinned = cluster.pinned()?;
    let endpoint = qlab_net::tls::endpoint("127.0.0.1:0".parse().expect("address"), &cluster.harness_identity, pinned)
        .map_err(|e| LabError::Usage(format!("harness endpoint: {e}")))?;
    let start = cluster.file.start_unix_ns;
    let (harness, from_nodes) =
        Harness::<Message>::connect(endpoint, &cluster.file.addrs(), start, cluster.file.max_frame_bytes);
    let clients = (0..point.clients)
        .map(|c| {
            let mut client = RaftClient::new(ClientId(c as u64), point.nodes);
            client.retry_timeout_ns = qlab_core::ms(200);
            client
        })
        .collect();
    Ok(Driver::new(harness, from_nodes, clients, start))
}

/// `loss` and `quic_delay_ms`, applied by every node's transport to what it sends.
pub fn apply_network_faults(driver: &Driver<Message, RaftClient>, point: &Point, network: &NetworkSection) {
    let faults = LinkFaults { blocked_to: vec![], loss: point.loss, delay_ns: (network.quic_delay_ms * 1e6) as u64 };
    if faults != LinkFaults::default() {
        for node in 0..point.nodes {
            driver.harness().send(node, &Wire::Control(Control::Faults(faults.clone())));
        }
    }
}

/// Until every node knows the same leader; returns (leader, epoch).
pub async fn wait_for_leader(driver: &mut Driver<Message, RaftClient>, nodes: u32) -> Result<(u32, u64)> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = agreed_leader(driver, nodes, 0) {
            return Ok(found);
        }
        if Instant::now() > give_up {
            return Err(LabError::Usage("no leader was elected within 30 s of starting the cluster".into()));
        }
        let _ = driver.next(Instant::now() + Duration::from_millis(20)).await;
    }
}

/// A leader of an epoch above `after` that every node in `0..nodes` accepted.
fn agreed_leader(driver: &Driver<Message, RaftClient>, nodes: u32, after: u64) -> Option<(u32, u64)> {
    let mut known: std::collections::BTreeMap<u64, (u32, std::collections::BTreeSet<u32>)> = Default::default();
    for o in &driver.observations {
        if let Event::LeaderKnown { epoch, leader } = o.event
            && epoch > after
        {
            known.entry(epoch).or_insert((leader.0, Default::default())).1.insert(o.node);
        }
    }
    known.into_iter().rev().find(|(_, (_, set))| set.len() as u32 == nodes).map(|(epoch, (leader, _))| (leader, epoch))
}

/// Run `workload`'s clients against the cluster until cluster time `until_ns`.
pub async fn drive_workload(
    driver: &mut Driver<Message, RaftClient>,
    workload: &mut Workload,
    until_ns: u64,
    mut on_done: impl FnMut(&Done),
) {
    loop {
        let now = driver.now_ns();
        for client in workload.due(now) {
            if !driver.is_busy(client) {
                let request = workload.issue(client, now);
                driver.submit(client, request);
            }
        }
        let now = driver.now_ns();
        if now >= until_ns {
            return;
        }
        let wake_ns = workload.next_ready().map_or(until_ns, |t| t.max(now).min(until_ns));
        let deadline = Instant::now() + Duration::from_nanos(wake_ns - now);
        if let Some(done) = driver.next(deadline).await {
            workload.record_completion(done.client, done.time_ns, &done.request, &done.result);
            on_done(&done);
        }
    }
}
