//! What the lab needs to know about each protocol beyond the [`Protocol`] trait: how an
//! experiment point configures it, which client drives it, the attacks its malicious
//! replicas can run, and the few hooks the election experiment's worst-case set-ups
//! reach into. Adding a protocol to the lab means its crate, one impl here and one line
//! of [`crate::protocol_list`] (`docs/extending.md`).

use crate::config::{DEFAULT_BATCH, Experiment, ExperimentFile, Point};
use qlab_core::adversary::{Adversary, AttackParams, GenericAttack};
use qlab_core::leader_client::LeaderClient;
use qlab_core::reads::ReadMode;
use qlab_core::symmetry::Symmetry;
use qlab_core::{Client, ClientId, Nanos, Protocol};
use qlab_paxos::{Paxos, PaxosConfig, PaxosTimer};
use qlab_pbft::{Pbft, PbftClient, PbftConfig};
use qlab_raft::{Raft, RaftConfig, RaftTimer};
use qlab_unreplicated::{Unreplicated, UnreplicatedConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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

    /// What its malicious replicas run in an attack experiment (the protocol crate's
    /// `attacks.rs`), and the names `[attack] <NAME> = [...]` may give; none for a
    /// protocol with no attack surface.
    type Attack: Adversary<Self> + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
    const ATTACK_NAMES: &'static [&'static str] = &[];

    /// The protocol's own tables of the experiment file (`[pbft]` with `[pbft.ablate]`):
    /// a struct with one `#[serde(default)]` field per name of [`Self::SECTIONS`],
    /// `deny_unknown_fields` inside, read from the file's text when it is loaded (so a
    /// mistake is reported at its line and column); `()` for a protocol with none.
    type Sections: DeserializeOwned + Default + Send + Sync + 'static;
    /// The top-level tables [`Self::Sections`] reads: what a file may hold besides the
    /// common sections and its kind's.
    const SECTIONS: &'static [&'static str] = &[];
    /// What is wrong with the sections' values, if anything, and the table it is in.
    fn check_sections(_sections: &Self::Sections) -> Result<(), (&'static str, String)> {
        Ok(())
    }
    /// The table of its sections that switches a safety rule off, if one does (real mode
    /// refuses it unless the file allows ablations), and where it is in the file.
    fn ablations_on(_sections: &Self::Sections) -> Option<(&'static str, std::ops::Range<usize>)> {
        None
    }

    /// The configuration a point of the file runs (its own sections are
    /// [`sections_of`]`::<Self>(file)`).
    fn config(point: &Point, file: &ExperimentFile) -> Self::Config;
    /// The attack called `name` (one of [`Self::ATTACK_NAMES`]) with its parameters.
    fn attack(_name: &str, _params: &AttackParams) -> Option<Self::Attack> {
        None
    }
    /// A client of replicas configured by `config` that gives up on a silent replica
    /// after `retry_timeout_ns`.
    fn client(config: &Self::Config, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> Self::Client;
    /// Whether `msg` carries new log entries to a follower (what `lagging_followers`
    /// withholds to leave followers behind).
    fn carries_entries(msg: &Self::Message) -> bool;
    /// The leader's heartbeat timer (what `sync_heartbeats_before_crash` fires early);
    /// `None` for a protocol without heartbeats.
    fn heartbeat_timer() -> Option<Self::Timer>;
    /// Whether a leader that loses touch with a majority steps down (the `check_quorum`
    /// column); false for a protocol without leases or leaders to step down.
    fn check_quorum(_config: &Self::Config) -> bool {
        false
    }
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
    /// How to rename its replicas, if renaming them changes nothing but their names
    /// ([`qlab_core::symmetry`]): what lets the explorer reduce by symmetry. `None` for a
    /// protocol whose rules tell replicas apart (ballots ordered by proposer id, a
    /// primary chosen by number, signed messages).
    fn symmetry() -> Option<Symmetry<Self>> {
        None
    }
}

/// `P`'s own sections of `file`, as [`read_sections`] read them (the defaults for a
/// file that has none, or was not read through the registry: a built-in case file).
pub fn sections_of<P: LabProtocol>(file: &ExperimentFile) -> std::sync::Arc<P::Sections> {
    file.protocol_sections.get::<P::Sections>().unwrap_or_default()
}

/// Read `P`'s own sections from the experiment's text, check them, and keep them in its
/// file for [`sections_of`].
pub fn read_sections<P: LabProtocol>(experiment: &mut Experiment) -> crate::Result<()> {
    if P::SECTIONS.is_empty() {
        return Ok(());
    }
    let sections: P::Sections = toml::from_str(&experiment.source).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        experiment.error_at(&span, e.message().trim().to_string())
    })?;
    if let Err((section, message)) = P::check_sections(&sections) {
        return Err(experiment.error_at(&experiment.section_span(section), format!("[{section}] {message}")));
    }
    if let Some((section, span)) = P::ablations_on(&sections) {
        experiment.check_ablation_allowed(&format!("[{section}.ablate]"), &span)?;
    }
    experiment.file.protocol_sections.insert(sections);
    Ok(())
}

fn leader_client(read_mode: ReadMode, id: ClientId, nodes: u32, retry_timeout_ns: Nanos) -> LeaderClient {
    let mut client = LeaderClient::new(id, nodes);
    client.retry_timeout_ns = retry_timeout_ns;
    client.reads_anywhere = read_mode == ReadMode::FollowerStale;
    client
}

impl LabProtocol for Raft {
    type Client = LeaderClient;
    /// Raft's knobs are in `[raft]`, a common section: it also holds the timing every
    /// leader-based protocol shares (so files compare them at the same timing).
    type Sections = ();
    const NAME: &'static str = "raft";
    type Attack = qlab_raft::attacks::RaftAttack;
    const ATTACK_NAMES: &'static [&'static str] = qlab_raft::attacks::RaftAttack::NAMES;

    fn attack(name: &str, params: &AttackParams) -> Option<Self::Attack> {
        qlab_raft::attacks::RaftAttack::from_name(name, params)
    }

    /// Raft never compares replicas' ids, and its messages name no replica (the
    /// sender is the link's).
    fn symmetry() -> Option<Symmetry<Self>> {
        Some(Symmetry {
            replica: Raft::renamed,
            record: qlab_raft::Record::renamed,
            message: |message, _| message.clone(),
        })
    }

    /// The point's timing and batching; `[raft]`'s knobs.
    fn config(point: &Point, file: &ExperimentFile) -> Self::Config {
        let ns = |v: f64| (v * 1e6).round() as Nanos;
        RaftConfig {
            election_timeout_ns_min: ns(point.election_timeout_ms_min),
            election_timeout_ns_max: ns(point.election_timeout_ms_max),
            heartbeat_interval_ns: ns(point.heartbeat_ms),
            max_entries_per_append: file.raft.max_entries_per_append,
            check_quorum: file.raft.check_quorum,
            batch_delay_ns: ns(point.batch_delay_ms),
            max_batches_in_flight: point.max_batches_in_flight,
            max_batch_bytes: file.raft.max_batch_bytes,
            read_mode: point.read_mode,
            lease_drift_bound_ppm: *file.raft.lease_drift_bound_ppm.get_ref(),
            pre_vote: point.pre_vote,
            snapshot_every_entries: file.raft.snapshot_every_entries,
            snapshot_every_bytes: file.raft.snapshot_every_bytes,
            snapshot_chunk_bytes: file.raft.snapshot_chunk_bytes,
            ablate: file.raft.ablate.as_ref().map(|a| *a.get_ref()).unwrap_or_default(),
        }
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
    fn check_quorum(config: &qlab_raft::RaftConfig) -> bool {
        config.check_quorum
    }
}

impl LabProtocol for Paxos {
    type Client = LeaderClient;
    const NAME: &'static str = "multipaxos";
    type Sections = PaxosSections;
    const SECTIONS: &'static [&'static str] = &["paxos"];

    fn check_sections(sections: &PaxosSections) -> Result<(), (&'static str, String)> {
        let paxos = &sections.paxos;
        if paxos.window_slots == 0 || paxos.max_commands_per_slot == 0 {
            return Err(("paxos", "window_slots and max_commands_per_slot must be at least 1".into()));
        }
        Ok(())
    }
    fn ablations_on(sections: &PaxosSections) -> Option<(&'static str, std::ops::Range<usize>)> {
        let ablate = sections.paxos.ablate.as_ref().filter(|a| a.get_ref().any())?;
        Some(("paxos", ablate.span()))
    }
    type Attack = qlab_paxos::attacks::PaxosAttack;
    const ATTACK_NAMES: &'static [&'static str] = qlab_paxos::attacks::PaxosAttack::NAMES;

    fn attack(name: &str, params: &AttackParams) -> Option<Self::Attack> {
        qlab_paxos::attacks::PaxosAttack::from_name(name, params)
    }

    /// The same timing and batching as Raft (`[raft]`'s election timeout, heartbeat,
    /// batch delay and entries per message), and `[paxos]`'s own knobs.
    fn config(point: &Point, file: &ExperimentFile) -> PaxosConfig {
        let ns = |v: f64| (v * 1e6).round() as Nanos;
        let own = sections_of::<Self>(file);
        let paxos = &own.paxos;
        PaxosConfig {
            leader_timeout_ns_min: ns(point.election_timeout_ms_min),
            leader_timeout_ns_max: ns(point.election_timeout_ms_max),
            heartbeat_interval_ns: ns(point.heartbeat_ms),
            window_slots: paxos.window_slots,
            max_commands_per_slot: paxos.max_commands_per_slot,
            max_values_per_message: file.raft.max_entries_per_append,
            check_quorum: paxos.check_quorum,
            batch_delay_ns: ns(point.batch_delay_ms),
            max_batches_in_flight: point.max_batches_in_flight,
            max_batch_bytes: file.raft.max_batch_bytes,
            read_mode: point.read_mode,
            lease_drift_bound_ppm: *file.raft.lease_drift_bound_ppm.get_ref(),
            checkpoint_every_slots: paxos.checkpoint_every_slots,
            state_chunk_bytes: paxos.state_chunk_bytes,
            ablate: paxos.ablate.as_ref().map(|a| *a.get_ref()).unwrap_or_default(),
        }
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
    fn check_quorum(config: &PaxosConfig) -> bool {
        config.check_quorum
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
    type Sections = PbftSections;
    const SECTIONS: &'static [&'static str] = &["pbft"];

    fn check_sections(sections: &PbftSections) -> Result<(), (&'static str, String)> {
        let pbft = &sections.pbft;
        if pbft.view_change_timeout_ms <= 0.0
            || pbft.checkpoint_interval == 0
            || pbft.log_window < pbft.checkpoint_interval
            || pbft.max_batch == 0
        {
            return Err((
                "pbft",
                "needs view_change_timeout_ms > 0, checkpoint_interval >= 1, log_window >= checkpoint_interval and \
                 max_batch >= 1"
                    .into(),
            ));
        }
        Ok(())
    }
    fn ablations_on(sections: &PbftSections) -> Option<(&'static str, std::ops::Range<usize>)> {
        let ablate = sections.pbft.ablate.as_ref().filter(|a| a.get_ref().any())?;
        Some(("pbft", ablate.span()))
    }
    type Attack = qlab_pbft::attacks::PbftAttack;
    const ATTACK_NAMES: &'static [&'static str] = qlab_pbft::attacks::PbftAttack::NAMES;

    fn attack(name: &str, params: &AttackParams) -> Option<Self::Attack> {
        qlab_pbft::attacks::PbftAttack::from_name(name, params)
    }

    /// Keys for the point's replicas and clients, `[pbft]`'s knobs, `[raft]`'s batch delay.
    fn config(point: &Point, file: &ExperimentFile) -> PbftConfig {
        let own = sections_of::<Self>(file);
        let pbft = &own.pbft;
        let mut config = PbftConfig::with_keys(PBFT_KEY_SEED, point.nodes, point.clients.max(1) as u64);
        config.view_change_timeout_ns = (pbft.view_change_timeout_ms * 1e6).round() as Nanos;
        config.checkpoint_interval = pbft.checkpoint_interval;
        config.log_window = pbft.log_window;
        config.max_batch = pbft.max_batch;
        config.batch_delay_ns = (point.batch_delay_ms * 1e6).round() as Nanos;
        config.max_batches_in_flight = point.max_batches_in_flight;
        config.max_batch_bytes = file.raft.max_batch_bytes;
        config.ablate = pbft.ablate.as_ref().map(|a| *a.get_ref()).unwrap_or_default();
        config
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
    /// The honest protocol's, read once for both.
    type Sections = ();
    /// Attacks compose no further: an attack experiment wraps the honest protocol once.
    type Attack = GenericAttack;

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
    fn check_quorum(config: &Self::Config) -> bool {
        P::check_quorum(&config.honest)
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
    type Sections = ();
    const NAME: &'static str = "unreplicated";
    /// No attack surface worth the name: one server either serves or does not.
    type Attack = GenericAttack;

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

/// A Multi-Paxos file's own table: `[paxos]` (with `[paxos.ablate]`).
#[derive(Debug, Default, Deserialize)]
pub struct PaxosSections {
    #[serde(default)]
    pub paxos: PaxosSection,
}

/// A PBFT file's own table: `[pbft]` (with `[pbft.ablate]`).
#[derive(Debug, Default, Deserialize)]
pub struct PbftSections {
    #[serde(default)]
    pub pbft: PbftSection,
}

/// Multi-Paxos's own knobs. Its leader timeout, heartbeat and batching are the
/// `election_timeout_ms`, `heartbeat_ms` and `batch_delay_ms` of `[raft]`, so the two
/// protocols compared in one file run with the same timing.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaxosSection {
    /// Slots proposed but not yet committed, at most.
    #[serde(default = "default_window")]
    pub window_slots: usize,
    /// Client commands in one slot, at most.
    #[serde(default = "default_batch")]
    pub max_commands_per_slot: usize,
    #[serde(default = "default_true")]
    pub check_quorum: bool,
    /// Checkpoint the state machine every this many applied slots (0: never).
    #[serde(default)]
    pub checkpoint_every_slots: u64,
    /// State transfer sends the checkpoint in chunks of at most this many bytes.
    #[serde(default = "default_state_chunk_bytes")]
    pub state_chunk_bytes: usize,
    /// `[paxos.ablate]`: Multi-Paxos's phase-1 value rule switched off.
    #[serde(default)]
    pub ablate: Option<toml::Spanned<qlab_paxos::PaxosAblations>>,
}

impl Default for PaxosSection {
    fn default() -> Self {
        PaxosSection {
            window_slots: default_window(),
            max_commands_per_slot: DEFAULT_BATCH,
            check_quorum: true,
            checkpoint_every_slots: 0,
            state_chunk_bytes: default_state_chunk_bytes(),
            ablate: None,
        }
    }
}

fn default_state_chunk_bytes() -> usize {
    qlab_paxos::DEFAULT_STATE_CHUNK_BYTES
}

fn default_window() -> usize {
    256
}

/// PBFT's own knobs; `batch_delay_ms` is `[raft]`'s, shared by every protocol.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbftSection {
    /// First view-change timeout (doubles with each view change that brings no progress).
    #[serde(default = "default_view_change_ms")]
    pub view_change_timeout_ms: f64,
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval: u64,
    #[serde(default = "default_log_window")]
    pub log_window: u64,
    #[serde(default = "default_batch")]
    pub max_batch: usize,
    /// `[pbft.ablate]`: PBFT's prepare quorum weakened to 2f.
    #[serde(default)]
    pub ablate: Option<toml::Spanned<qlab_pbft::PbftAblations>>,
}

impl Default for PbftSection {
    fn default() -> Self {
        PbftSection {
            view_change_timeout_ms: default_view_change_ms(),
            checkpoint_interval: default_checkpoint(),
            log_window: default_log_window(),
            max_batch: DEFAULT_BATCH,
            ablate: None,
        }
    }
}

fn default_view_change_ms() -> f64 {
    300.0
}
fn default_checkpoint() -> u64 {
    32
}
fn default_log_window() -> u64 {
    128
}

fn default_batch() -> usize {
    DEFAULT_BATCH
}
fn default_true() -> bool {
    true
}
