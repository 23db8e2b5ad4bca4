//! What the lab needs to know about each protocol beyond the [`Protocol`] trait: how an
//! experiment point configures it, which client drives it, and the few hooks the
//! election experiment's worst-case set-ups reach into. Adding a protocol to the lab
//! means one impl here and a match arm in [`crate::run`] and [`crate::real::node_main`].

use crate::config::{ExperimentFile, Point};
use qlab_core::leader_client::LeaderClient;
use qlab_core::reads::ReadMode;
use qlab_core::{Client, ClientId, Nanos, Protocol};
use qlab_paxos::{Paxos, PaxosConfig, PaxosTimer};
use qlab_pbft::{Pbft, PbftClient, PbftConfig};
use qlab_raft::{Raft, RaftTimer};
use qlab_unreplicated::{Unreplicated, UnreplicatedConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub trait LabProtocol:
    Protocol<
        Message: Serialize + DeserializeOwned + Send + Sync + 'static,
        Record: Serialize + DeserializeOwned + Send + 'static,
        Config: Serialize + DeserializeOwned + Clone,
        Timer: Send,
    > + Send
    + 'static
{
    type Client: Client;
    /// The name experiment files and cluster files use.
    const NAME: &'static str;

    fn config(point: &Point, file: &ExperimentFile) -> Self::Config;
    /// A client of replicas configured by `config` that gives up on a silent replica
    /// after `retry_timeout_ns`.
    fn client(config: &Self::Config, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> Self::Client;
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
    /// Real mode: take the replicas' own signing secrets out of a configuration built
    /// for the whole cluster, so the cluster file every node reads carries none; each
    /// goes to its node's own key file. Empty for a protocol without signatures.
    fn take_node_secrets(_config: &mut Self::Config) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// Give node `id` its secret back from its key file; an error if it is not the one
    /// the configuration's public key says.
    fn install_node_secret(_config: &mut Self::Config, id: u32, _secret: &[u8]) -> std::result::Result<(), String> {
        Err(format!("{} uses no signing key, but node {id} has one", Self::NAME))
    }
}

fn leader_client(read_mode: ReadMode, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
    let mut client = LeaderClient::new(id, nodes);
    client.retry_timeout_ns = retry_timeout_ns;
    client.reads_anywhere = read_mode == ReadMode::FollowerStale;
    client
}

impl LabProtocol for Raft {
    type Client = LeaderClient;
    const NAME: &'static str = "raft";

    fn config(point: &Point, file: &ExperimentFile) -> Self::Config {
        point.raft_config(&file.raft)
    }
    fn client(config: &Self::Config, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
        leader_client(config.read_mode, id, nodes, retry_timeout_ns)
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
    fn client(config: &PaxosConfig, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
        leader_client(config.read_mode, id, nodes, retry_timeout_ns)
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

pub use crate::config::PBFT_KEY_SEED;

impl LabProtocol for Pbft {
    type Client = PbftClient;
    const NAME: &'static str = "pbft";

    fn config(point: &Point, file: &ExperimentFile) -> PbftConfig {
        point.pbft_config(&file.pbft)
    }
    fn client(_config: &PbftConfig, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> PbftClient {
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
    fn take_node_secrets(config: &mut PbftConfig) -> Vec<Vec<u8>> {
        std::mem::take(&mut config.node_secret_keys).into_iter().map(|k| k.to_vec()).collect()
    }
    fn install_node_secret(config: &mut PbftConfig, id: u32, secret: &[u8]) -> std::result::Result<(), String> {
        let secret: [u8; 32] =
            secret.try_into().map_err(|_| format!("an ed25519 secret is 32 bytes, this one is {}", secret.len()))?;
        let public = config.node_public_keys.get(id as usize).ok_or_else(|| format!("no public key for node {id}"))?;
        if qlab_pbft::public_of(&secret) != *public {
            return Err(format!("it is not the secret of node {id}'s public key in protocol_config"));
        }
        config.node_secret_keys = vec![[0; 32]; config.node_public_keys.len()];
        config.node_secret_keys[id as usize] = secret;
        Ok(())
    }
}

/// A protocol whose replicas may be malicious runs wherever the honest one does: same
/// name, clients and hooks; the configuration adds who is malicious and how.
impl<P, A> LabProtocol for qlab_core::adversary::Faulty<P, A>
where
    P: LabProtocol,
    A: qlab_core::adversary::Adversary<P> + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Client = P::Client;
    const NAME: &'static str = P::NAME;

    fn config(point: &Point, file: &ExperimentFile) -> Self::Config {
        qlab_core::adversary::FaultyConfig::honest(P::config(point, file))
    }
    fn client(config: &Self::Config, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> Self::Client {
        P::client(&config.honest, id, nodes, retry_timeout_ns)
    }
    fn carries_entries(msg: &Self::Message) -> bool {
        P::carries_entries(msg)
    }
    fn heartbeat_timer() -> Option<Self::Timer> {
        P::heartbeat_timer()
    }
    fn elections_between(old_epoch: u64, new_epoch: u64) -> u64 {
        P::elections_between(old_epoch, new_epoch)
    }
    fn take_node_secrets(config: &mut Self::Config) -> Vec<Vec<u8>> {
        P::take_node_secrets(&mut config.honest)
    }
    fn install_node_secret(config: &mut Self::Config, id: u32, secret: &[u8]) -> std::result::Result<(), String> {
        P::install_node_secret(&mut config.honest, id, secret)
    }
}

/// The one-server baseline: nothing to configure, the leader client finds node 0.
impl LabProtocol for Unreplicated {
    type Client = LeaderClient;
    const NAME: &'static str = "unreplicated";

    fn config(_point: &Point, _file: &ExperimentFile) -> UnreplicatedConfig {
        UnreplicatedConfig::default()
    }
    fn client(_config: &UnreplicatedConfig, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
        leader_client(ReadMode::Log, id, nodes, retry_timeout_ns)
    }
    fn carries_entries(_msg: &qlab_unreplicated::Message) -> bool {
        false
    }
    fn heartbeat_timer() -> Option<qlab_unreplicated::UnreplicatedTimer> {
        None
    }
}
