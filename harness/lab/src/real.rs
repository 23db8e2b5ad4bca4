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
