//! What the lab needs to know about each protocol beyond the [`Protocol`] trait: how an
//! experiment point configures it, which client drives it, and the few hooks the
//! election experiment's worst-case set-ups reach into. Adding a protocol to the lab
//! means one impl here and a match arm in [`crate::run`] and [`crate::real::node_main`].

use crate::config::{ExperimentFile, Point};
use qlab_core::leader_client::LeaderClient;
use qlab_core::{Client, ClientId, Nanos, Protocol};
use qlab_paxos::{Paxos, PaxosConfig, PaxosTimer};
use qlab_pbft::{Pbft, PbftClient, PbftConfig};
use qlab_raft::{Raft, RaftTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait LabProtocol:
    Protocol<
        Message: Serialize + DeserializeOwned + Send + Sync + 'static,
        Record: Serialize + DeserializeOwned + Send + 'static,
        Config: Serialize + Clone,
        Timer: Send,
    > + Send
    + 'static
{
    type Client: Client;
    /// The name experiment files and cluster files use.
    const NAME: &'static str;

    fn config(point: &Point, file: &ExperimentFile) -> Self::Config;
    /// A client that gives up on a silent replica after `retry_timeout_ns`.
    fn client(id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> Self::Client;
    /// Whether `msg` carries new log entries to a follower (what `lagging_followers`
    /// withholds to leave followers behind).
    fn carries_entries(msg: &Self::Message) -> bool;
    /// The leader's heartbeat timer (what `sync_heartbeats_before_crash` fires early);
    /// `None` for a protocol without heartbeats.
    fn heartbeat_timer() -> Option<Self::Timer>;
    /// Leadership changes (elections, ballots) between two epochs, for the `terms` column.
    fn elections_between(old_epoch: u64, new_epoch: u64) -> u64 {
        new_epoch.saturating_sub(old_epoch)
    }
}

fn leader_client(id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
    let mut client = LeaderClient::new(id, nodes);
    client.retry_timeout_ns = retry_timeout_ns;
    client
}

impl LabProtocol for Raft {
    type Client = LeaderClient;
    const NAME: &'static str = "raft";

    fn config(point: &Point, file: &ExperimentFile) -> Self::Config {
        point.raft_config(&file.raft)
    }
    fn client(id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
        leader_client(id, nodes, retry_timeout_ns)
    }
    fn carries_entries(msg: &qlab_raft::Message) -> bool {
        matches!(msg, qlab_raft::Message::AppendEntries { entries, .. } if !entries.is_empty())
    }
    fn heartbeat_timer() -> Option<RaftTimer> {
        Some(RaftTimer::Heartbeat)
    }
}

impl LabProtocol for Paxos {
    type Client = LeaderClient;
    const NAME: &'static str = "multipaxos";

    fn config(point: &Point, file: &ExperimentFile) -> PaxosConfig {
        point.paxos_config(&file.raft, &file.paxos)
    }
    fn client(id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
        leader_client(id, nodes, retry_timeout_ns)
    }
    fn carries_entries(msg: &qlab_paxos::Message) -> bool {
        matches!(msg, qlab_paxos::Message::Accept { values, .. } if !values.is_empty())
    }
    fn heartbeat_timer() -> Option<PaxosTimer> {
        Some(PaxosTimer::Heartbeat)
    }
    fn elections_between(old_epoch: u64, new_epoch: u64) -> u64 {
        let round = |epoch: u64| epoch / qlab_paxos::MAX_NODES as u64;
        round(new_epoch).saturating_sub(round(old_epoch))
    }
}

/// The seed PBFT keys are derived from in experiments: keys are made fresh for each
/// cluster in a real deployment; a benchmark only needs every replica and client to
/// hold its own.
pub const PBFT_KEY_SEED: u64 = 0x9bf7;

impl LabProtocol for Pbft {
    type Client = PbftClient;
    const NAME: &'static str = "pbft";

    fn config(point: &Point, file: &ExperimentFile) -> PbftConfig {
        point.pbft_config(&file.pbft)
    }
    fn client(id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> PbftClient {
        let mut client = PbftClient::new(id, nodes, qlab_pbft::client_secret(PBFT_KEY_SEED, id.0));
        // A PBFT client's timeout is what starts a view change; keep it above a round trip.
        client.retry_timeout_ns = retry_timeout_ns;
        client
    }
    fn carries_entries(msg: &qlab_pbft::Message) -> bool {
        matches!(msg, qlab_pbft::Message::PrePrepare(pp) if !pp.body.batch.is_empty())
    }
    fn heartbeat_timer() -> Option<qlab_pbft::PbftTimer> {
        None
    }
}
