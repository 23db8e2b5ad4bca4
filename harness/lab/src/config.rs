//! Experiment files: parsing, validation with precise errors, and sweep expansion.
//!
//! An experiment is a TOML file. Every field marked *sweepable* may be given as one
//! value or a list of values; the run is the cartesian product of all lists, each
//! combination (a *point*) repeated `trials` times. Mistakes are reported as
//! `FILE:LINE:COLUMN: message`, and the message lists the allowed values or range.

use crate::error::LabError;

/// The seed PBFT keys are derived from in experiments: keys are made fresh for each
/// cluster in a real deployment; a benchmark only needs every replica and client to
/// hold its own.
pub const PBFT_KEY_SEED: u64 = 0x9bf7;
use qlab_core::Nanos;
use qlab_core::reads::ReadMode;
use qlab_paxos::PaxosConfig;
use qlab_pbft::PbftConfig;
use qlab_raft::RaftConfig;
use qlab_sim::{Latency, NetworkConfig};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One value or a list of values, with the span of the field for error reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep<T> {
    pub values: Vec<T>,
    pub span: Range<usize>,
}

impl<T> Sweep<T> {
    pub fn one(value: T) -> Self {
        Sweep { values: vec![value], span: 0..0 }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Sweep<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<toml::Value>::deserialize(deserializer)?;
        let span = spanned.span();
        let value = spanned.into_inner();
        // The whole value first: `[150, 300]` is one timeout range, not two values.
        match T::deserialize(value.clone()) {
            Ok(single) => Ok(Sweep { values: vec![single], span }),
            Err(single_error) => match value {
                toml::Value::Array(items) if !items.is_empty() => {
                    let values = items
                        .into_iter()
                        .map(|item| T::deserialize(item).map_err(|e| D::Error::custom(e.message())))
                        .collect::<Result<Vec<T>, _>>()?;
                    Ok(Sweep { values, span })
                }
                toml::Value::Array(_) => Err(D::Error::custom("an empty list sweeps nothing; give at least one value")),
                _ => Err(D::Error::custom(single_error.message())),
            },
        }
    }
}

/// The experiment kind a file names (`kind = "election"`): which plug-in of the lab's
/// registry runs it. Config does not know the kinds — the registry passes its names to
/// [`Experiment::parse_with_kinds`] — so a new kind needs no change here.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct KindName(pub toml::Spanned<String>);

impl KindName {
    pub fn as_str(&self) -> &str {
        self.0.get_ref()
    }
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
}

impl PartialEq<&str> for KindName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The deterministic simulator.
    Sim,
    /// One `qlab node` process per replica over QUIC on 127.0.0.1.
    Quic,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Sim => "sim",
            Mode::Quic => "quic",
        }
    }
}

pub use crate::protocol_list::{FaultModel, ProtocolName};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSection {
    pub name: String,
    pub kind: KindName,
    /// Sweep: `"sim"`, `"quic"` or both.
    #[serde(default = "default_mode")]
    pub mode: Sweep<Mode>,
    /// Trials per point.
    pub trials: toml::Spanned<u64>,
    #[serde(default)]
    pub seed: u64,
    /// Real mode refuses protocols with safety rules switched off (`[raft.ablate]`)
    /// unless this says they are meant.
    #[serde(default)]
    pub allow_ablations: bool,
}

fn default_mode() -> Sweep<Mode> {
    Sweep::one(Mode::Sim)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub protocol: Sweep<ProtocolName>,
    /// Explicit cluster size. Give this or `f`.
    pub nodes: Option<Sweep<u32>>,
    /// Faults to tolerate; the size follows from the protocol (2f+1 for Raft).
    pub f: Option<Sweep<u32>>,
    /// Real mode only: `"memory"` (fast, lost on a crash) or `"disk"` (WAL, fsync per step).
    #[serde(default = "default_storage")]
    pub storage: qlab_net::cluster::StorageKind,
}

impl Default for ClusterSection {
    /// Only `kind = "counterexample"` goes without `[cluster]` (its cases fix their own).
    fn default() -> Self {
        ClusterSection { protocol: Sweep::one(ProtocolName::Raft), nodes: None, f: None, storage: default_storage() }
    }
}

fn default_storage() -> qlab_net::cluster::StorageKind {
    qlab_net::cluster::StorageKind::Memory
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "dist", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LatencyMs {
    Constant { value: f64 },
    Uniform { min: f64, max: f64 },
    Normal { mean: f64, stddev: f64 },
    Exponential { mean: f64 },
}

impl LatencyMs {
    pub fn mean_ms(&self) -> f64 {
        match *self {
            LatencyMs::Constant { value } => value,
            LatencyMs::Uniform { min, max } => (min + max) / 2.0,
            LatencyMs::Normal { mean, .. } | LatencyMs::Exponential { mean } => mean,
        }
    }
    pub fn to_latency(&self) -> Latency {
        let ns = |v: f64| (v * 1e6).round() as Nanos;
        match *self {
            LatencyMs::Constant { value } => Latency::Constant { ns: ns(value) },
            LatencyMs::Uniform { min, max } => Latency::Uniform { ns_min: ns(min), ns_max: ns(max) },
            // A floor of 10 µs: one-way delay on a LAN is never zero.
            LatencyMs::Normal { mean, stddev } => {
                Latency::Normal { ns_mean: mean * 1e6, ns_stddev: stddev * 1e6, ns_floor: 10_000 }
            }
            LatencyMs::Exponential { mean } => Latency::Exponential { ns_mean: mean * 1e6, ns_floor: 10_000 },
        }
    }
    fn validate(&self) -> Result<(), String> {
        let ok = match *self {
            LatencyMs::Constant { value } => value >= 0.0,
            LatencyMs::Uniform { min, max } => min >= 0.0 && max >= min,
            LatencyMs::Normal { mean, stddev } => mean >= 0.0 && stddev >= 0.0,
            LatencyMs::Exponential { mean } => mean > 0.0,
        };
        if ok { Ok(()) } else { Err(format!("latency must be non-negative with min <= max, got {self:?}")) }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    #[serde(default = "default_latency")]
    pub latency_ms: Sweep<LatencyMs>,
    #[serde(default = "zero_sweep")]
    pub loss: Sweep<f64>,
    #[serde(default = "zero_sweep")]
    pub duplicate: Sweep<f64>,
    #[serde(default = "zero_sweep")]
    pub reorder: Sweep<f64>,
    #[serde(default)]
    pub reorder_delay_ms_max: f64,
    /// Real mode: one-way delay every node's transport adds to what it sends (the
    /// simulator's `latency_ms` does not apply to a real network). `loss` applies in
    /// both modes.
    #[serde(default)]
    pub quic_delay_ms: f64,
    /// Real mode: run every node in its own network namespace with its own address,
    /// joined by veth pairs to a bridge (needs root and iproute2).
    #[serde(default)]
    pub netns: bool,
    /// Real mode: apply `quic_delay_ms`, `netem_jitter_ms` and `loss` with the kernel's
    /// `tc netem` on each node's link instead of in the transport (implies `netns`).
    #[serde(default)]
    pub netem: bool,
    #[serde(default)]
    pub netem_jitter_ms: f64,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            latency_ms: default_latency(),
            loss: zero_sweep(),
            duplicate: zero_sweep(),
            reorder: zero_sweep(),
            reorder_delay_ms_max: 0.0,
            quic_delay_ms: 0.0,
            netns: false,
            netem: false,
            netem_jitter_ms: 0.0,
        }
    }
}

fn default_latency() -> Sweep<LatencyMs> {
    Sweep::one(LatencyMs::Constant { value: 1.0 })
}
fn zero_sweep() -> Sweep<f64> {
    Sweep::one(0.0)
}

/// `heartbeat_ms`: a number, or `"half-min-timeout"` (the Raft paper's §9.3 setting).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Heartbeat {
    Ms(f64),
    HalfMinTimeout,
}

impl<'de> Deserialize<'de> for Heartbeat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Integer(v) => Ok(Heartbeat::Ms(v as f64)),
            toml::Value::Float(v) => Ok(Heartbeat::Ms(v)),
            toml::Value::String(s) if s == "half-min-timeout" => Ok(Heartbeat::HalfMinTimeout),
            other => Err(D::Error::custom(format!(
                "expected a heartbeat interval in ms or \"half-min-timeout\", got {other}"
            ))),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// `[min, max]` in ms, or a list of such pairs.
    #[serde(default = "default_timeout")]
    pub election_timeout_ms: Sweep<[f64; 2]>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: Sweep<Heartbeat>,
    #[serde(default = "default_true")]
    pub check_quorum: bool,
    #[serde(default = "default_batch")]
    pub max_entries_per_append: usize,
    /// Sweep: how long the leader collects commands into one batch (0: no batching).
    #[serde(default = "zero_sweep")]
    pub batch_delay_ms: Sweep<f64>,
    /// Sweep: how Raft and Multi-Paxos serve reads: `"log"`, `"read-index"`, `"lease"`
    /// or `"follower-stale"` (`kind = "reads"` only; elsewhere reads go through the log).
    #[serde(default = "log_reads")]
    pub read_mode: Sweep<ReadMode>,
    /// Lease reads: the assumed bound on clock drift, in parts per million.
    #[serde(default = "default_drift_bound_ppm")]
    pub lease_drift_bound_ppm: toml::Spanned<u64>,
    /// Sweep: PreVote (thesis §9.6), `true`, `false` or `[false, true]`.
    #[serde(default = "no_pre_vote")]
    pub pre_vote: Sweep<bool>,
    /// Log compaction (Raft §7): snapshot after this many applied entries (0: never by count).
    #[serde(default)]
    pub snapshot_every_entries: u64,
    /// ...or after this many bytes of applied entries (0: never by size).
    #[serde(default)]
    pub snapshot_every_bytes: u64,
    /// Bytes of snapshot per `InstallSnapshot` message.
    #[serde(default = "default_snapshot_chunk_bytes")]
    pub snapshot_chunk_bytes: usize,
    /// `[raft.ablate]`: Raft's safety rules switched off, to show what each prevents.
    #[serde(default)]
    pub ablate: Option<toml::Spanned<qlab_raft::RaftAblations>>,
}

fn no_pre_vote() -> Sweep<bool> {
    Sweep::one(false)
}

fn default_snapshot_chunk_bytes() -> usize {
    qlab_raft::DEFAULT_SNAPSHOT_CHUNK_BYTES
}

fn log_reads() -> Sweep<ReadMode> {
    Sweep::one(ReadMode::Log)
}
fn default_drift_bound_ppm() -> toml::Spanned<u64> {
    toml::Spanned::new(0..0, qlab_raft::DEFAULT_DRIFT_BOUND_PPM)
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
            max_commands_per_slot: default_batch(),
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
            max_batch: default_batch(),
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

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            election_timeout_ms: default_timeout(),
            heartbeat_ms: default_heartbeat(),
            check_quorum: true,
            max_entries_per_append: default_batch(),
            batch_delay_ms: zero_sweep(),
            read_mode: log_reads(),
            lease_drift_bound_ppm: default_drift_bound_ppm(),
            pre_vote: no_pre_vote(),
            snapshot_every_entries: 0,
            snapshot_every_bytes: 0,
            snapshot_chunk_bytes: default_snapshot_chunk_bytes(),
            ablate: None,
        }
    }
}

fn default_timeout() -> Sweep<[f64; 2]> {
    Sweep::one([150.0, 300.0])
}
fn default_heartbeat() -> Sweep<Heartbeat> {
    Sweep::one(Heartbeat::HalfMinTimeout)
}
fn default_true() -> bool {
    true
}
fn default_batch() -> usize {
    64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashWho {
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashAt {
    /// Uniformly random point of the leader's heartbeat interval.
    RandomInHeartbeat,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSpec {
    pub who: CrashWho,
    pub at: CrashAt,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsSection {
    /// Election: what to crash and when. Required by the election kind.
    pub crash: Option<CrashSpec>,
    /// Throughput: faults at given times after the clients start, the same in both
    /// modes (in quic mode a crash is `kill -9`, a partition is enforced by every
    /// node's transport).
    #[serde(default = "no_schedule")]
    pub schedule: toml::Spanned<Vec<ScheduledFault>>,
    /// The Raft paper's §9.3 worst case: the leader broadcasts heartbeats just before
    /// it dies, so every follower's election timer starts at nearly the same moment.
    #[serde(default)]
    pub sync_heartbeats_before_crash: bool,
    /// Followers kept one entry behind before the crash (they cannot win the
    /// election: §5.4.1), to force the paper's "logs differ" worst case.
    #[serde(default = "no_lagging")]
    pub lagging_followers: toml::Spanned<u32>,
}

/// A node named in a fault schedule: an id, `"leader"` (whoever leads at that moment)
/// or `"follower"` (the highest-numbered replica that does not lead at that moment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NodeRef {
    Id(u32),
    Leader,
    Follower,
}

impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::Integer(id) if id >= 0 => Ok(NodeRef::Id(id as u32)),
            toml::Value::String(s) if s == "leader" => Ok(NodeRef::Leader),
            toml::Value::String(s) if s == "follower" => Ok(NodeRef::Follower),
            other => Err(D::Error::custom(format!(
                "expected a node id (0, 1, ...), \"leader\" or \"follower\", got {other}"
            ))),
        }
    }
}

/// One entry of `[faults] schedule`; `at_ms` counts from when the clients start.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScheduledFault {
    /// Split into groups; links between groups are cut both ways.
    Partition { at_ms: f64, groups: Vec<Vec<u32>> },
    /// Cut the one-way link `from → to`.
    Cut { at_ms: f64, from: NodeRef, to: NodeRef },
    /// Partition `node` alone from the rest (both ways).
    Isolate { at_ms: f64, node: NodeRef },
    /// Restore every link.
    Heal { at_ms: f64 },
    /// Stop a node (quic: `kill -9`); it keeps only what it persisted.
    Crash { at_ms: f64, node: NodeRef },
    /// Start a crashed node again from its storage.
    Restart { at_ms: f64, node: NodeRef },
    /// Tell the leader of the moment to hand leadership to node `to` (Raft thesis
    /// §3.10; simulator only; protocols without the mechanism ignore it).
    TransferLeader { at_ms: f64, to: NodeRef },
}

impl ScheduledFault {
    pub fn at_ms(&self) -> f64 {
        match self {
            ScheduledFault::Partition { at_ms, .. }
            | ScheduledFault::Cut { at_ms, .. }
            | ScheduledFault::Isolate { at_ms, .. }
            | ScheduledFault::Heal { at_ms }
            | ScheduledFault::Crash { at_ms, .. }
            | ScheduledFault::Restart { at_ms, .. }
            | ScheduledFault::TransferLeader { at_ms, .. } => *at_ms,
        }
    }
}

fn no_schedule() -> toml::Spanned<Vec<ScheduledFault>> {
    toml::Spanned::new(0..0, Vec::new())
}

fn no_lagging() -> toml::Spanned<u32> {
    toml::Spanned::new(0..0, 0)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    /// Sweep: closed-loop clients (election: 0 means no client and no `unavailable_ms`).
    #[serde(default = "default_clients")]
    pub clients: Sweep<u32>,
    /// Pause between a client's operations.
    #[serde(default)]
    pub think_ms: f64,
    /// Sweep: bytes per written value.
    #[serde(default = "default_value_bytes")]
    pub value_bytes: Sweep<usize>,
    /// Fraction of operations that are reads (throughput).
    #[serde(default)]
    pub read_ratio: f64,
    /// Keys the operations spread over (throughput).
    #[serde(default = "default_keys")]
    pub keys: u64,
    /// Throughput: run this long before measuring, then measure this long.
    #[serde(default = "default_warmup_ms")]
    pub warmup_ms: f64,
    #[serde(default = "default_duration_ms")]
    pub duration_ms: f64,
}

impl Default for WorkloadSection {
    fn default() -> Self {
        WorkloadSection {
            clients: default_clients(),
            think_ms: 0.0,
            value_bytes: default_value_bytes(),
            read_ratio: 0.0,
            keys: default_keys(),
            warmup_ms: default_warmup_ms(),
            duration_ms: default_duration_ms(),
        }
    }
}

fn default_clients() -> Sweep<u32> {
    Sweep::one(1)
}
fn default_value_bytes() -> Sweep<usize> {
    Sweep::one(16)
}
fn default_keys() -> u64 {
    1000
}
fn default_warmup_ms() -> f64 {
    1000.0
}
fn default_duration_ms() -> f64 {
    3000.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// A trial whose election has not finished this long after the crash is recorded
    /// as censored at this value.
    #[serde(default = "default_max_election_ms")]
    pub max_election_ms: f64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection { max_election_ms: default_max_election_ms() }
    }
}

fn default_max_election_ms() -> f64 {
    20_000.0
}

/// `kind = "attack"`: which attacks to run against which protocol, by how many
/// malicious replicas, and when.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSection {
    /// Attacks against Raft (`qlab_raft::attacks::RaftAttack::NAMES`).
    pub raft: Option<Sweep<AttackSpec>>,
    /// Attacks against Multi-Paxos (`qlab_paxos::attacks::PaxosAttack::NAMES`).
    pub multipaxos: Option<Sweep<AttackSpec>>,
    /// Attacks against PBFT (`qlab_pbft::attacks::PbftAttack::NAMES`).
    pub pbft: Option<Sweep<AttackSpec>>,
    /// Sweep: how many replicas are malicious (nodes 0, 1, ...; PBFT's first primary is 0).
    #[serde(default = "one_malicious")]
    pub malicious: Sweep<u32>,
    /// The attack runs from `from_ms` to `until_ms` after the start (clients start at
    /// once, so the first election falls in the phase before)...
    #[serde(default = "default_attack_from_ms")]
    pub from_ms: f64,
    #[serde(default = "default_attack_until_ms")]
    pub until_ms: f64,
    /// ...and the run goes on this long after it, to see whether throughput comes back.
    #[serde(default = "default_attack_after_ms")]
    pub after_ms: f64,
}

impl Default for AttackSection {
    fn default() -> Self {
        AttackSection {
            raft: None,
            multipaxos: None,
            pbft: None,
            malicious: one_malicious(),
            from_ms: default_attack_from_ms(),
            until_ms: default_attack_until_ms(),
            after_ms: default_attack_after_ms(),
        }
    }
}

impl AttackSection {
    /// The attack names given for `protocol`, and the names it knows.
    pub fn for_protocol(&self, protocol: ProtocolName) -> (Option<&Sweep<AttackSpec>>, &'static [&'static str]) {
        match protocol {
            ProtocolName::Raft => (self.raft.as_ref(), qlab_raft::attacks::RaftAttack::NAMES),
            ProtocolName::Multipaxos => (self.multipaxos.as_ref(), qlab_paxos::attacks::PaxosAttack::NAMES),
            ProtocolName::Pbft => (self.pbft.as_ref(), qlab_pbft::attacks::PbftAttack::NAMES),
            ProtocolName::Unreplicated => (None, &[]),
        }
    }
}

/// One entry of an `[attack]` list: a name (`"forge-log"`), or a table with the
/// attack's parameters: `{ name = "selective-drop", to = [1] }`, `{ name = "delay",
/// delay_ms = 200 }`, or `{ name = "equivocate", malicious = 2 }` to run one attack with
/// its own number of malicious replicas (f + 1 colluders beside f, say).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttackSpec {
    pub name: String,
    /// How many replicas run it (nodes 0, 1, ...); replaces `[attack] malicious` for it.
    pub malicious: Option<u32>,
    /// `selective-drop`: the replicas that hear nothing from the malicious ones.
    pub to: Vec<u32>,
    /// `delay`: how long every message from a malicious replica is held back.
    pub delay_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttackTable {
    name: String,
    malicious: Option<u32>,
    #[serde(default)]
    to: Vec<u32>,
    delay_ms: Option<f64>,
}

impl<'de> Deserialize<'de> for AttackSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(name) => Ok(AttackSpec { name, ..AttackSpec::default() }),
            table @ toml::Value::Table(_) => {
                let t = AttackTable::deserialize(table).map_err(|e| D::Error::custom(e.message()))?;
                Ok(AttackSpec { name: t.name, malicious: t.malicious, to: t.to, delay_ms: t.delay_ms })
            }
            other => Err(D::Error::custom(format!(
                "an attack is a name (\"forge-log\") or a table ({{ name = \"delay\", delay_ms = 200 }}), got a {}",
                other.type_str()
            ))),
        }
    }
}

impl AttackSpec {
    /// The attack as results name it: its name, with the parameters that set it apart
    /// (`selective-drop(to=1+2)`, `delay(200ms)`); the malicious count has its own column.
    pub fn label(&self) -> String {
        match (self.name.as_str(), self.delay_ms) {
            ("selective-drop", _) => {
                let to: Vec<String> = self.to.iter().map(|n| n.to_string()).collect();
                format!("selective-drop(to={})", to.join("+"))
            }
            ("delay", Some(ms)) => format!("delay({ms}ms)"),
            _ => self.name.clone(),
        }
    }

    /// The parameters the generic attacks take.
    pub fn params(&self) -> qlab_core::adversary::AttackParams {
        qlab_core::adversary::AttackParams {
            drop_to: self.to.iter().map(|n| qlab_core::NodeId(*n)).collect(),
            delay_ns: (self.delay_ms.unwrap_or(0.0) * 1e6).round() as Nanos,
        }
    }
}

/// `kind = "reads"`: the faults each chaos run injects (besides the seed-drawn loss,
/// duplication and reordering every profile has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultProfile {
    /// No crash and no partition.
    None,
    /// Crashes, restarts, random partitions and one-way cuts: the chaos tests' mix.
    All,
    Crashes,
    /// Random partitions and one-way cuts.
    Partitions,
    /// Partitions that cut the current leader off alone (and one-way cuts).
    IsolateLeader,
}

impl FaultProfile {
    pub const NAMES: &'static [&'static str] = &["none", "all", "crashes", "partitions", "isolate-leader"];

    pub fn name(self) -> &'static str {
        match self {
            FaultProfile::None => "none",
            FaultProfile::All => "all",
            FaultProfile::Crashes => "crashes",
            FaultProfile::Partitions => "partitions",
            FaultProfile::IsolateLeader => "isolate-leader",
        }
    }
}

/// `kind = "reads"`: what the chaos runs inject and who reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadsSection {
    /// Sweep: `"none"`, `"all"`, `"crashes"`, `"partitions"`, `"isolate-leader"`.
    #[serde(default = "all_faults")]
    pub fault_profile: Sweep<FaultProfile>,
    /// Sweep: each replica's clock runs at a seed-drawn rate within `1 ± ppm / 10⁶`.
    #[serde(default = "no_skew")]
    pub clock_skew_ppm: Sweep<u64>,
    /// Of the `[workload] clients`, how many only read.
    #[serde(default = "default_readers")]
    pub readers: u32,
}

impl Default for ReadsSection {
    fn default() -> Self {
        ReadsSection { fault_profile: all_faults(), clock_skew_ppm: no_skew(), readers: default_readers() }
    }
}

fn all_faults() -> Sweep<FaultProfile> {
    Sweep::one(FaultProfile::All)
}
fn no_skew() -> Sweep<u64> {
    Sweep::one(0)
}
fn default_readers() -> u32 {
    2
}

/// `kind = "counterexample"`: which built-in cases to run (`trials` seeds each).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterexampleSection {
    /// Sweep of case names (see `qlab_lab::counterexample::Case`).
    pub cases: Sweep<crate::case::Case>,
}

/// `kind = "disruption"`: the scenarios, each a fault schedule run under the same load.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisruptionSection {
    /// Width of one bin of the throughput timeline.
    #[serde(default = "default_disruption_bin_ms")]
    pub bin_ms: f64,
    /// `[[disruption.scenario]]`: `name` and `schedule` (the entries of `[faults] schedule`).
    #[serde(default)]
    pub scenario: Vec<toml::Spanned<Scenario>>,
}

fn default_disruption_bin_ms() -> f64 {
    100.0
}

/// One named fault schedule of a disruption experiment; times count from the clients' start.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub schedule: Vec<ScheduledFault>,
}

/// `kind = "availability"`: how many replicas fail, and for how long the run goes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilitySection {
    /// Sweep: replicas that crash (distinct, drawn from the seed, at seed-drawn times
    /// between `[workload] warmup_ms` and half the run) and stay down. Combinations
    /// with more failures than replicas are left out of the sweep.
    #[serde(default = "one_failure")]
    pub failures: Sweep<u32>,
    #[serde(default = "default_availability_ms")]
    pub duration_ms: f64,
    /// How often the run asks whether a majority-backed leader exists.
    #[serde(default = "default_sample_ms")]
    pub sample_ms: f64,
}

impl Default for AvailabilitySection {
    fn default() -> Self {
        AvailabilitySection {
            failures: one_failure(),
            duration_ms: default_availability_ms(),
            sample_ms: default_sample_ms(),
        }
    }
}

fn one_failure() -> Sweep<u32> {
    Sweep::one(1)
}
fn default_availability_ms() -> f64 {
    10_000.0
}
fn default_sample_ms() -> f64 {
    10.0
}

fn one_malicious() -> Sweep<u32> {
    Sweep::one(1)
}
fn default_attack_from_ms() -> f64 {
    1000.0
}
fn default_attack_until_ms() -> f64 {
    3000.0
}
fn default_attack_after_ms() -> f64 {
    3000.0
}

/// The experiment file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    pub experiment: ExperimentSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub paxos: PaxosSection,
    #[serde(default)]
    pub pbft: PbftSection,
    /// Required by `election` (what to crash); `throughput` runs fault-free.
    pub faults: Option<FaultsSection>,
    #[serde(default)]
    pub workload: WorkloadSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub attack: AttackSection,
    #[serde(default)]
    pub availability: AvailabilitySection,
    #[serde(default)]
    pub reads: ReadsSection,
    pub counterexample: Option<CounterexampleSection>,
    #[serde(default)]
    pub disruption: DisruptionSection,
}

/// A parsed, validated experiment with its source text (kept for provenance).
#[derive(Clone, Debug)]
pub struct Experiment {
    pub path: PathBuf,
    pub source: String,
    pub file: ExperimentFile,
}

/// One combination of the swept values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub mode: Mode,
    pub protocol: ProtocolName,
    pub nodes: u32,
    pub election_timeout_ms_min: f64,
    pub election_timeout_ms_max: f64,
    pub heartbeat_ms: f64,
    pub latency: LatencyMs,
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub clients: u32,
    pub value_bytes: usize,
    pub batch_delay_ms: f64,
    /// How Raft and Multi-Paxos serve reads.
    pub read_mode: ReadMode,
    /// `kind = "reads"`: the faults injected and the clocks' skew bound.
    pub fault_profile: FaultProfile,
    pub clock_skew_ppm: u64,
    /// `kind = "counterexample"`: the case.
    pub case: Option<crate::case::Case>,
    /// `kind = "attack"`: the attack and how many replicas run it.
    pub attack: AttackSpec,
    pub malicious: u32,
    /// `kind = "availability"`: how many replicas fail.
    pub failures: u32,
    /// Raft: PreVote on.
    pub pre_vote: bool,
    /// `kind = "disruption"`: the scenario's name (empty elsewhere).
    pub scenario: String,
}

impl Point {
    /// A point with nothing swept set yet.
    fn blank(mode: Mode, protocol: ProtocolName, nodes: u32) -> Point {
        Point {
            mode,
            protocol,
            nodes,
            election_timeout_ms_min: 0.0,
            election_timeout_ms_max: 0.0,
            heartbeat_ms: 0.0,
            latency: LatencyMs::Constant { value: 0.0 },
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            clients: 0,
            value_bytes: 0,
            batch_delay_ms: 0.0,
            read_mode: ReadMode::Log,
            fault_profile: FaultProfile::None,
            clock_skew_ppm: 0,
            case: None,
            attack: AttackSpec::default(),
            malicious: 0,
            failures: 0,
            pre_vote: false,
            scenario: String::new(),
        }
    }

    pub fn raft_config(&self, section: &RaftSection) -> RaftConfig {
        let ns = |v: f64| (v * 1e6).round() as Nanos;
        RaftConfig {
            election_timeout_ns_min: ns(self.election_timeout_ms_min),
            election_timeout_ns_max: ns(self.election_timeout_ms_max),
            heartbeat_interval_ns: ns(self.heartbeat_ms),
            max_entries_per_append: section.max_entries_per_append,
            check_quorum: section.check_quorum,
            batch_delay_ns: ns(self.batch_delay_ms),
            read_mode: self.read_mode,
            lease_drift_bound_ppm: *section.lease_drift_bound_ppm.get_ref(),
            pre_vote: self.pre_vote,
            snapshot_every_entries: section.snapshot_every_entries,
            snapshot_every_bytes: section.snapshot_every_bytes,
            snapshot_chunk_bytes: section.snapshot_chunk_bytes,
            ablate: section.ablate.as_ref().map(|a| *a.get_ref()).unwrap_or_default(),
        }
    }
    pub fn heartbeat_ns(&self) -> Nanos {
        (self.heartbeat_ms * 1e6).round() as Nanos
    }
    /// The lower end of the election (leader) timeout range.
    pub fn timeout_ns_min(&self) -> Nanos {
        (self.election_timeout_ms_min * 1e6).round() as Nanos
    }
    pub fn paxos_config(&self, raft: &RaftSection, paxos: &PaxosSection) -> PaxosConfig {
        let ns = |v: f64| (v * 1e6).round() as Nanos;
        PaxosConfig {
            leader_timeout_ns_min: ns(self.election_timeout_ms_min),
            leader_timeout_ns_max: ns(self.election_timeout_ms_max),
            heartbeat_interval_ns: ns(self.heartbeat_ms),
            window_slots: paxos.window_slots,
            max_commands_per_slot: paxos.max_commands_per_slot,
            max_values_per_message: raft.max_entries_per_append,
            check_quorum: paxos.check_quorum,
            batch_delay_ns: ns(self.batch_delay_ms),
            read_mode: self.read_mode,
            lease_drift_bound_ppm: *raft.lease_drift_bound_ppm.get_ref(),
            checkpoint_every_slots: paxos.checkpoint_every_slots,
            state_chunk_bytes: paxos.state_chunk_bytes,
            ablate: paxos.ablate.as_ref().map(|a| *a.get_ref()).unwrap_or_default(),
        }
    }
    pub fn pbft_config(&self, section: &PbftSection) -> PbftConfig {
        let mut config = PbftConfig::with_keys(PBFT_KEY_SEED, self.nodes, self.clients.max(1) as u64);
        config.view_change_timeout_ns = (section.view_change_timeout_ms * 1e6).round() as Nanos;
        config.checkpoint_interval = section.checkpoint_interval;
        config.log_window = section.log_window;
        config.max_batch = section.max_batch;
        config.batch_delay_ns = (self.batch_delay_ms * 1e6).round() as Nanos;
        config.ablate = section.ablate.as_ref().map(|a| *a.get_ref()).unwrap_or_default();
        config
    }
    /// A simulated cluster of this point: its size and network, replicas starting at
    /// seed-drawn times within one minimum timeout (as real processes do).
    pub fn sim<P: qlab_core::Protocol, C: qlab_core::Client>(
        &self,
        network: &NetworkSection,
        config: P::Config,
        seed: u64,
    ) -> qlab_sim::Sim<P, C> {
        qlab_sim::Sim::new_staggered(config, self.nodes, self.network_config(network), seed, self.timeout_ns_min())
    }
    pub fn network_config(&self, section: &NetworkSection) -> NetworkConfig {
        NetworkConfig {
            latency: self.latency.to_latency(),
            loss: self.loss,
            duplicate: self.duplicate,
            reorder: self.reorder,
            reorder_delay_ns_max: (section.reorder_delay_ms_max * 1e6) as Nanos,
        }
    }
}

/// Byte offset → 1-based (line, column), columns counted in characters.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Experiment {
    pub fn load(path: &Path) -> Result<Experiment, LabError> {
        let source = std::fs::read_to_string(path).map_err(|e| LabError::Io { path: path.to_path_buf(), source: e })?;
        Self::parse(path, source)
    }

    /// Parse and validate a file whose kind is not checked against a registry (the
    /// lab's built-in case files, tests); [`Experiment::parse_with_kinds`] checks it.
    pub fn parse(path: &Path, source: String) -> Result<Experiment, LabError> {
        Self::parse_with_kinds(path, source, None)
    }

    /// Parse and validate a file; with `kinds`, its `kind` must be one of them (the
    /// registry's names), checked before anything else about the file.
    pub fn parse_with_kinds(path: &Path, source: String, kinds: Option<&[&str]>) -> Result<Experiment, LabError> {
        let file: ExperimentFile = toml::from_str(&source).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_column(&source, s.start));
            LabError::Config { path: path.to_path_buf(), line, column, message: e.message().trim().to_string() }
        })?;
        let experiment = Experiment { path: path.to_path_buf(), source, file };
        if let Some(kinds) = kinds
            && !kinds.contains(&experiment.file.experiment.kind.as_str())
        {
            let allowed: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
            return Err(experiment.error_at(
                &experiment.file.experiment.kind.span(),
                format!(
                    "unknown experiment kind `{}`, expected one of {}",
                    experiment.file.experiment.kind.as_str(),
                    allowed.join(", ")
                ),
            ));
        }
        experiment.validate()?;
        Ok(experiment)
    }

    fn error_at(&self, span: &Range<usize>, message: String) -> LabError {
        let (line, column) = line_column(&self.source, span.start);
        LabError::Config { path: self.path.clone(), line, column, message }
    }

    fn validate(&self) -> Result<(), LabError> {
        let f = &self.file;
        let ablated = [
            ("[raft.ablate]", f.raft.ablate.as_ref().filter(|a| a.get_ref().any()).map(|a| a.span())),
            ("[paxos.ablate]", f.paxos.ablate.as_ref().filter(|a| a.get_ref().any()).map(|a| a.span())),
            ("[pbft.ablate]", f.pbft.ablate.as_ref().filter(|a| a.get_ref().any()).map(|a| a.span())),
        ];
        for (section, span) in ablated {
            if let Some(span) = span
                && f.experiment.mode.values.contains(&Mode::Quic)
                && !f.experiment.allow_ablations
            {
                return Err(self.error_at(
                    &span,
                    format!(
                        "{section} switches off a safety rule; real (quic) mode refuses it unless [experiment] says \
                         allow_ablations = true"
                    ),
                ));
            }
        }
        if f.experiment.name.is_empty()
            || !f.experiment.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.error_at(
                &(0..0),
                format!("experiment name {:?} must be non-empty ASCII letters, digits, '-' or '_' (it names the results folder)", f.experiment.name),
            ));
        }
        if *f.experiment.trials.get_ref() == 0 {
            return Err(self.error_at(&f.experiment.trials.span(), "trials must be at least 1".into()));
        }
        if f.experiment.kind == "counterexample" {
            return self.validate_counterexample();
        }
        match (&f.cluster.nodes, &f.cluster.f) {
            (Some(_), Some(fs)) => {
                return Err(self.error_at(&fs.span, "give either `nodes` or `f`, not both".into()));
            }
            (None, None) => {
                return Err(LabError::Config {
                    path: self.path.clone(),
                    line: 1,
                    column: 1,
                    message: "[cluster] needs `nodes` (cluster size) or `f` (faults to tolerate)".into(),
                });
            }
            _ => {}
        }
        if let Some(fs) = &f.cluster.f {
            for protocol in &f.cluster.protocol.values {
                if let Some(faults) = fs.values.iter().find(|v| protocol.fault_model().nodes_for_f(**v).is_none()) {
                    return Err(self.error_at(
                        &fs.span,
                        format!("{} tolerates no fault: f = 0 (one node), got f = {faults}", protocol.name()),
                    ));
                }
            }
        }
        // The unreplicated baseline has no election, no leader to lose and no attack
        // surface: it measures throughput and latency, and that is all it is for.
        if let Some(protocol) = f.cluster.protocol.values.iter().find(|p| p.fault_model() == FaultModel::None)
            && matches!(f.experiment.kind.as_str(), "election" | "disruption" | "reads" | "availability" | "attack")
        {
            return Err(self.error_at(
                &f.cluster.protocol.span,
                format!(
                    "{} is the one-server baseline: it has no election or leader change for a {} experiment to \
                     measure (it runs in throughput experiments)",
                    protocol.name(),
                    f.experiment.kind.as_str()
                ),
            ));
        }
        for point in self.points() {
            // The election experiment kills the leader: the rest must still be a majority.
            let minimum = match (f.experiment.kind.as_str(), point.protocol.fault_model()) {
                (_, FaultModel::Byzantine) => 4,
                ("election" | "disruption", _) => 3,
                ("attack", _) => 2,
                _ => 1,
            };
            if point.nodes < minimum {
                let span = f.cluster.nodes.as_ref().or(f.cluster.f.as_ref()).map(|s| s.span.clone()).unwrap_or(0..0);
                let why = if point.protocol.fault_model() == FaultModel::Byzantine {
                    "(n = 3f + 1 with f >= 1)"
                } else {
                    "in an election experiment (the leader is crashed and a majority must remain)"
                };
                return Err(self.error_at(
                    &span,
                    format!("{} needs at least {minimum} nodes {why}, got {}", point.protocol.name(), point.nodes),
                ));
            }
            if point.protocol == ProtocolName::Pbft && f.experiment.kind == "election" && point.clients == 0 {
                return Err(self.error_at(
                    &f.workload.clients.span,
                    "a PBFT view change is triggered by a request that does not execute: an election experiment with pbft needs clients >= 1".into(),
                ));
            }
            if point.nodes > 64 {
                let span = f.cluster.nodes.as_ref().or(f.cluster.f.as_ref()).map(|s| s.span.clone()).unwrap_or(0..0);
                return Err(self.error_at(&span, format!("at most 64 nodes are supported, got {}", point.nodes)));
            }
        }
        for [lo, hi] in &f.raft.election_timeout_ms.values {
            if !(*lo > 0.0 && lo <= hi) {
                return Err(self.error_at(
                    &f.raft.election_timeout_ms.span,
                    format!("election_timeout_ms must be [min, max] with 0 < min <= max, got [{lo}, {hi}]"),
                ));
            }
        }
        for hb in &f.raft.heartbeat_ms.values {
            if let Heartbeat::Ms(v) = hb
                && *v <= 0.0
            {
                return Err(self.error_at(
                    &f.raft.heartbeat_ms.span,
                    format!("heartbeat_ms must be a positive number or \"half-min-timeout\", got {v}"),
                ));
            }
        }
        for latency in &f.network.latency_ms.values {
            latency.validate().map_err(|m| self.error_at(&f.network.latency_ms.span, m))?;
        }
        for (name, sweep) in
            [("loss", &f.network.loss), ("duplicate", &f.network.duplicate), ("reorder", &f.network.reorder)]
        {
            for p in &sweep.values {
                if !(0.0..1.0).contains(p) {
                    return Err(self.error_at(&sweep.span, format!("{name} is a probability in [0, 1), got {p}")));
                }
            }
        }
        if f.network.quic_delay_ms < 0.0 || f.network.netem_jitter_ms < 0.0 {
            return Err(self.error_at(&(0..0), "quic_delay_ms and netem_jitter_ms must be >= 0".into()));
        }
        if (f.network.netns || f.network.netem) && !f.experiment.mode.values.contains(&Mode::Quic) {
            return Err(self.error_at(
                &f.experiment.mode.span,
                "netns and netem place real processes in network namespaces; they need mode = \"quic\"".into(),
            ));
        }
        if f.network.reorder_delay_ms_max < 0.0 {
            return Err(self.error_at(&(0..0), "reorder_delay_ms_max must be >= 0".into()));
        }
        if f.experiment.kind == "attack" {
            self.validate_attack()?;
        }
        if f.experiment.kind == "availability" {
            self.validate_availability()?;
        }
        if f.experiment.kind == "disruption" {
            self.validate_disruption()?;
        }
        if f.experiment.kind == "reads" {
            self.validate_reads()?;
        } else if let Some(mode) = f.raft.read_mode.values.iter().find(|m| **m != ReadMode::Log) {
            return Err(self.error_at(
                &f.raft.read_mode.span,
                format!(
                    "read_mode {:?} is for kind = \"reads\" (which judges each mode's linearizability); other kinds \
                     read through the log",
                    mode.name()
                ),
            ));
        }
        match (&f.faults, f.experiment.kind.as_str()) {
            (Some(_), "availability") => {
                return Err(self.error_at(
                    &(0..0),
                    "an availability experiment takes no [faults]: its faults are [availability] failures".into(),
                ));
            }
            (Some(_), "reads") => {
                return Err(self.error_at(
                    &self.section_span("faults"),
                    "a reads experiment takes no [faults]: its faults are [reads] fault_profile".into(),
                ));
            }
            (Some(_), "disruption") => {
                return Err(self.error_at(
                    &self.section_span("faults"),
                    "a disruption experiment takes no [faults]: its faults are each [[disruption.scenario]]'s schedule"
                        .into(),
                ));
            }
            (Some(_), "attack") => {
                return Err(
                    self.error_at(&(0..0), "an attack experiment takes no [faults]: its fault is the attack".into())
                );
            }
            (None, "election") => {
                return Err(LabError::Config {
                    path: self.path.clone(),
                    line: 1,
                    column: 1,
                    message: "an election experiment needs [faults] with crash = { who = \"leader\", at = \"random-in-heartbeat\" }".into(),
                });
            }
            (Some(faults), _) => self.validate_faults(faults)?,
            (None, _) => {}
        }
        for (name, sweep) in [("clients", &f.workload.clients)] {
            if matches!(f.experiment.kind.as_str(), "throughput" | "attack" | "disruption") && sweep.values.contains(&0)
            {
                return Err(self.error_at(&sweep.span, format!("{name} must be at least 1 in a throughput experiment")));
            }
        }
        if f.workload.value_bytes.values.iter().any(|v| *v > 1 << 20) {
            return Err(self.error_at(&f.workload.value_bytes.span, "value_bytes is at most 1048576".into()));
        }
        if !(0.0..=1.0).contains(&f.workload.read_ratio) {
            return Err(
                self.error_at(&(0..0), format!("read_ratio is a fraction in [0, 1], got {}", f.workload.read_ratio))
            );
        }
        if f.workload.warmup_ms < 0.0 || f.workload.duration_ms <= 0.0 {
            return Err(self.error_at(&(0..0), "warmup_ms must be >= 0 and duration_ms > 0".into()));
        }
        if f.raft.batch_delay_ms.values.iter().any(|v| *v < 0.0) {
            return Err(self.error_at(&f.raft.batch_delay_ms.span, "batch_delay_ms must be >= 0".into()));
        }
        if f.pbft.view_change_timeout_ms <= 0.0
            || f.pbft.checkpoint_interval == 0
            || f.pbft.log_window < f.pbft.checkpoint_interval
            || f.pbft.max_batch == 0
        {
            return Err(self.error_at(
                &(0..0),
                "[pbft] needs view_change_timeout_ms > 0, checkpoint_interval >= 1, log_window >= checkpoint_interval and max_batch >= 1".into(),
            ));
        }
        if f.paxos.window_slots == 0 || f.paxos.max_commands_per_slot == 0 || f.raft.max_entries_per_append == 0 {
            return Err(self.error_at(
                &(0..0),
                "window_slots, max_commands_per_slot and max_entries_per_append must be at least 1".into(),
            ));
        }
        if f.experiment.mode.values.contains(&Mode::Quic) {
            let network = &f.network;
            let sim_only = [("duplicate", &network.duplicate), ("reorder", &network.reorder)];
            for (name, sweep) in sim_only {
                if sweep.values.iter().any(|v| *v > 0.0) {
                    return Err(self.error_at(
                        &sweep.span,
                        format!("{name} is simulated only; in quic mode the network is real (loss and latency_ms are injected by the transport)"),
                    ));
                }
            }
        }
        if f.workload.think_ms < 0.0 {
            return Err(self.error_at(&(0..0), "think_ms must be >= 0".into()));
        }
        if f.limits.max_election_ms <= 0.0 {
            return Err(self.error_at(&(0..0), "max_election_ms must be > 0".into()));
        }
        Ok(())
    }

    fn validate_attack(&self) -> Result<(), LabError> {
        let f = &self.file;
        let attack = &f.attack;
        if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
            return Err(self.error_at(
                &f.experiment.mode.span,
                "attack experiments run in the simulator for now: mode = \"sim\"".into(),
            ));
        }
        for protocol in &f.cluster.protocol.values {
            let (given, allowed) = attack.for_protocol(*protocol);
            let Some(given) = given else {
                return Err(self.error_at(
                    &f.cluster.protocol.span,
                    format!(
                        "[attack] needs `{}` = [...], the attacks to run against it; allowed: {}",
                        protocol.name(),
                        allowed.join(", ")
                    ),
                ));
            };
            for spec in &given.values {
                let problem = if !allowed.contains(&spec.name.as_str()) {
                    Some(format!("unknown {} attack {:?}; allowed: {}", protocol.name(), spec.name, allowed.join(", ")))
                } else if spec.name == "selective-drop" && spec.to.is_empty() {
                    Some(
                        "selective-drop needs `to`, the replicas to starve: { name = \"selective-drop\", to = [1] }"
                            .into(),
                    )
                } else if spec.name != "selective-drop" && !spec.to.is_empty() {
                    Some(format!("`to` applies to selective-drop only, not to {:?}", spec.name))
                } else if spec.name == "delay" && !spec.delay_ms.is_some_and(|ms| ms > 0.0) {
                    Some("delay needs `delay_ms` > 0: { name = \"delay\", delay_ms = 200 }".into())
                } else if spec.name != "delay" && spec.delay_ms.is_some() {
                    Some(format!("`delay_ms` applies to delay only, not to {:?}", spec.name))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(self.error_at(&given.span, problem));
                }
            }
        }
        if !(0.0 <= attack.from_ms && attack.from_ms < attack.until_ms && attack.after_ms > 0.0) {
            return Err(self.error_at(
                &(0..0),
                format!(
                    "[attack] needs 0 <= from_ms < until_ms and after_ms > 0, got {} / {} / {}",
                    attack.from_ms, attack.until_ms, attack.after_ms
                ),
            ));
        }
        for point in self.points() {
            if point.malicious == 0 || point.malicious >= point.nodes {
                return Err(self.error_at(
                    &attack.malicious.span,
                    format!(
                        "malicious must be between 1 and nodes - 1 ({} for {} nodes), got {}",
                        point.nodes - 1,
                        point.nodes,
                        point.malicious
                    ),
                ));
            }
            if let Some(target) = point.attack.to.iter().find(|n| **n < point.malicious || **n >= point.nodes) {
                let (protocol, _) = f.attack.for_protocol(point.protocol);
                return Err(self.error_at(
                    &protocol.map_or(0..0, |s| s.span.clone()),
                    format!(
                        "selective-drop to = {target}: the replicas it starves must be honest ones, {} to {} with {} \
                         malicious of {} nodes",
                        point.malicious,
                        point.nodes - 1,
                        point.malicious,
                        point.nodes
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_disruption(&self) -> Result<(), LabError> {
        let f = &self.file;
        let d = &f.disruption;
        if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
            return Err(self.error_at(
                &f.experiment.mode.span,
                "disruption experiments run in the simulator: mode = \"sim\"".into(),
            ));
        }
        if f.cluster.protocol.values.contains(&ProtocolName::Pbft) {
            return Err(self.error_at(
                &f.cluster.protocol.span,
                "disruption scenarios are about leaders and terms: protocol is \"raft\" or \"multipaxos\"".into(),
            ));
        }
        if d.scenario.is_empty() {
            return Err(LabError::Config {
                path: self.path.clone(),
                line: 1,
                column: 1,
                message: "a disruption experiment needs at least one [[disruption.scenario]] with name = \"...\" and \
                          schedule = [...] (the entries of a [faults] schedule)"
                    .into(),
            });
        }
        if !(d.bin_ms > 0.0 && d.bin_ms <= f.workload.duration_ms) {
            return Err(self.error_at(
                &self.section_span("disruption"),
                format!("bin_ms must be in (0, duration_ms = {}], got {}", f.workload.duration_ms, d.bin_ms),
            ));
        }
        let mut names = Vec::new();
        for scenario in &d.scenario {
            let name = &scenario.get_ref().name;
            if name.is_empty() || names.contains(name) {
                return Err(self.error_at(
                    &scenario.span(),
                    format!("each scenario needs a name of its own, got {name:?} (names so far: {})", names.join(", ")),
                ));
            }
            names.push(name.clone());
            self.validate_schedule(&scenario.get_ref().schedule, &scenario.span())?;
            if let Some(late) = scenario.get_ref().schedule.iter().find(|e| e.at_ms() >= f.workload.duration_ms) {
                return Err(self.error_at(
                    &scenario.span(),
                    format!(
                        "scenario {name:?} has an entry at {} ms, at or after the run's end (duration_ms = {})",
                        late.at_ms(),
                        f.workload.duration_ms
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_availability(&self) -> Result<(), LabError> {
        let f = &self.file;
        let a = &f.availability;
        if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
            return Err(self.error_at(
                &f.experiment.mode.span,
                "availability experiments run in the simulator: mode = \"sim\"".into(),
            ));
        }
        if f.cluster.protocol.values.contains(&ProtocolName::Pbft) {
            return Err(self.error_at(
                &f.cluster.protocol.span,
                "availability counts a leader a majority follows, a crash-fault notion: protocol is \"raft\" or \"multipaxos\""
                    .into(),
            ));
        }
        if !(a.duration_ms > 0.0 && a.sample_ms > 0.0 && a.sample_ms <= a.duration_ms) {
            return Err(self.error_at(
                &(0..0),
                format!("[availability] needs 0 < sample_ms <= duration_ms, got {} / {}", a.sample_ms, a.duration_ms),
            ));
        }
        if self.points().is_empty() {
            return Err(self.error_at(&a.failures.span, "every value of failures exceeds every cluster size".into()));
        }
        Ok(())
    }

    fn validate_counterexample(&self) -> Result<(), LabError> {
        let f = &self.file;
        if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
            return Err(self.error_at(
                &f.experiment.mode.span,
                "counterexample experiments run in the simulator: mode = \"sim\"".into(),
            ));
        }
        let Some(section) = &f.counterexample else {
            return Err(LabError::Config {
                path: self.path.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "a counterexample experiment needs [counterexample] cases = [...], from {}",
                    crate::case::Case::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                ),
            });
        };
        if section.cases.values.is_empty() {
            return Err(self.error_at(&section.cases.span, "cases is empty".into()));
        }
        for other in [
            "cluster",
            "network",
            "raft",
            "paxos",
            "pbft",
            "faults",
            "workload",
            "limits",
            "attack",
            "availability",
            "reads",
        ] {
            if let Some((key, span)) = self.first_key_outside(other, &[]) {
                return Err(self.error_at(
                    &span,
                    format!(
                        "a counterexample experiment's cases fix their own clusters, timing and faults: [{other}] {key} \
                         would be ignored (give only [experiment] and [counterexample])"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_reads(&self) -> Result<(), LabError> {
        let f = &self.file;
        if f.experiment.mode.values.iter().any(|m| *m != Mode::Sim) {
            return Err(
                self.error_at(&f.experiment.mode.span, "reads experiments run in the simulator: mode = \"sim\"".into())
            );
        }
        if f.cluster.protocol.values.contains(&ProtocolName::Pbft) {
            return Err(self.error_at(
                &f.cluster.protocol.span,
                "read modes are for the leader-based protocols (PBFT orders reads like writes): protocol is \"raft\" \
                 or \"multipaxos\""
                    .into(),
            ));
        }
        // The chaos runs draw their own timing, network and operation mix from each
        // seed; anything the file says about them would be silently ignored.
        for (section, allowed) in [
            ("network", &[][..]),
            ("paxos", &[][..]),
            ("raft", &["read_mode", "lease_drift_bound_ppm"][..]),
            ("workload", &["clients"][..]),
        ] {
            if let Some((key, span)) = self.first_key_outside(section, allowed) {
                return Err(self.error_at(
                    &span,
                    format!(
                        "a reads experiment runs the chaos tests' trials, whose timing, network and operation mix \
                         come from each seed: [{section}] {key} would be ignored (allowed in [{section}]: {})",
                        if allowed.is_empty() { "nothing".to_string() } else { allowed.join(", ") }
                    ),
                ));
            }
        }
        if f.workload.clients.values.contains(&0) {
            return Err(self.error_at(&f.workload.clients.span, "clients must be at least 1".into()));
        }
        if f.workload.clients.values.iter().any(|c| *c < f.reads.readers) {
            return Err(self.error_at(
                &self.section_span("reads"),
                format!("[reads] readers = {} exceeds the clients of some point", f.reads.readers),
            ));
        }
        if let Some(skew) = f.reads.clock_skew_ppm.values.iter().find(|s| **s >= 1_000_000) {
            return Err(self.error_at(
                &f.reads.clock_skew_ppm.span,
                format!("clock_skew_ppm must be below 1000000 (a clock rate must stay positive), got {skew}"),
            ));
        }
        let bound = &f.raft.lease_drift_bound_ppm;
        if *bound.get_ref() >= 1_000_000 {
            return Err(self.error_at(
                &bound.span(),
                format!("lease_drift_bound_ppm must be below 1000000, got {}", bound.get_ref()),
            ));
        }
        Ok(())
    }

    /// The first key of `[section]` in the file's text that is not in `allowed`, with
    /// its position.
    fn first_key_outside(&self, section: &str, allowed: &[&str]) -> Option<(String, Range<usize>)> {
        let table: toml::Table = toml::from_str(&self.source).ok()?;
        let keys = table.get(section)?.as_table()?;
        let header = self.section_span(section);
        let key = keys.keys().find(|k| !allowed.contains(&k.as_str()))?;
        let from = header.end;
        let offset = self.source[from..].find(key.as_str()).map_or(header.start, |i| from + i);
        Some((key.clone(), offset..offset + key.len()))
    }

    /// Where `[section]` starts in the file's text (the whole file if it is not there).
    fn section_span(&self, section: &str) -> Range<usize> {
        let header = format!("[{section}]");
        let start = self.source.lines().scan(0, |at, line| {
            let here = *at;
            *at += line.len() + 1;
            Some((here, line))
        });
        start
            .filter(|(_, line)| line.trim_start().starts_with(&header))
            .map(|(at, line)| at..at + line.len())
            .next()
            .unwrap_or(0..0)
    }

    fn validate_faults(&self, faults: &FaultsSection) -> Result<(), LabError> {
        let f = &self.file;
        let schedule_span = faults.schedule.span();
        if f.experiment.kind == "election" && faults.crash.is_none() {
            return Err(self.error_at(&(0..0), "an election experiment needs `crash` in [faults]".into()));
        }
        if f.experiment.kind == "election" && !faults.schedule.get_ref().is_empty() {
            return Err(self.error_at(
                &schedule_span,
                "a fault schedule belongs to throughput experiments; an election experiment's fault is its crash"
                    .into(),
            ));
        }
        self.validate_schedule(faults.schedule.get_ref(), &schedule_span)?;
        self.validate_lagging(faults)
    }

    /// The entries of one fault schedule: times, node ids, and what quic mode cannot do.
    fn validate_schedule(&self, schedule: &[ScheduledFault], schedule_span: &Range<usize>) -> Result<(), LabError> {
        let f = &self.file;
        let schedule_span = schedule_span.clone();
        let smallest = self.points().iter().map(|p| p.nodes).min().unwrap_or(0);
        let check_node = |node: &NodeRef| -> Result<(), LabError> {
            match node {
                NodeRef::Id(id) if *id >= smallest => Err(self.error_at(
                    &schedule_span,
                    format!(
                        "the schedule names node {id}, but the smallest cluster has nodes 0..{}",
                        smallest.saturating_sub(1)
                    ),
                )),
                _ => Ok(()),
            }
        };
        for fault in schedule {
            if fault.at_ms() < 0.0 {
                return Err(self.error_at(&schedule_span, format!("at_ms must be >= 0, got {}", fault.at_ms())));
            }
            match fault {
                ScheduledFault::Partition { groups, .. } => {
                    for id in groups.iter().flatten() {
                        check_node(&NodeRef::Id(*id))?;
                    }
                }
                ScheduledFault::Cut { from, to, .. } => {
                    check_node(from)?;
                    check_node(to)?;
                }
                ScheduledFault::Crash { node, .. } | ScheduledFault::Isolate { node, .. } => check_node(node)?,
                ScheduledFault::Restart { node, .. } => {
                    check_node(node)?;
                    if f.experiment.mode.values.contains(&Mode::Quic)
                        && f.cluster.storage == qlab_net::cluster::StorageKind::Memory
                    {
                        return Err(self.error_at(
                            &schedule_span,
                            "restarting a node in quic mode needs storage = \"disk\" in [cluster]: with memory storage it would come back having forgotten its votes".into(),
                        ));
                    }
                }
                ScheduledFault::Heal { .. } => {}
                ScheduledFault::TransferLeader { to, .. } => {
                    check_node(to)?;
                    if *to == NodeRef::Leader {
                        return Err(self.error_at(
                            &schedule_span,
                            "transfer-leader names the replica to hand over to: an id or \"follower\", not \"leader\""
                                .into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_lagging(&self, faults: &FaultsSection) -> Result<(), LabError> {
        let lagging = *faults.lagging_followers.get_ref();
        for point in self.points() {
            // Lagging followers cannot win, so the rest must still hold a majority.
            let survivors = point.nodes - 1;
            if lagging > 0 && survivors - lagging.min(survivors) < qlab_core::majority(point.nodes) - 1 {
                return Err(self.error_at(
                    &faults.lagging_followers.span(),
                    format!(
                        "lagging_followers = {lagging} leaves too few up-to-date followers to elect a leader among {} nodes (at most {})",
                        point.nodes,
                        survivors + 1 - qlab_core::majority(point.nodes)
                    ),
                ));
            }
        }
        if self.file.experiment.mode.values.contains(&Mode::Quic)
            && (lagging > 0 || faults.sync_heartbeats_before_crash)
        {
            return Err(self.error_at(
                &faults.lagging_followers.span(),
                "lagging_followers and sync_heartbeats_before_crash reach into the simulator; they are not available in quic mode".into(),
            ));
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.file.experiment.name
    }
    pub fn trials(&self) -> u64 {
        *self.file.experiment.trials.get_ref()
    }

    /// Every combination of swept values, in a fixed order (the order of the file's lists).
    pub fn points(&self) -> Vec<Point> {
        let f = &self.file;
        /// Each point times each value: the next axis of the cartesian product.
        fn expand<T: Clone>(points: Vec<Point>, values: &[T], set: impl Fn(&mut Point, &T)) -> Vec<Point> {
            let set = &set;
            points
                .into_iter()
                .flat_map(|point| {
                    values.iter().map(move |value| {
                        let mut p = point.clone();
                        set(&mut p, value);
                        p
                    })
                })
                .collect()
        }
        let mut points = Vec::new();
        if let ("counterexample", Some(section)) = (f.experiment.kind.as_str(), &f.counterexample) {
            return section
                .cases
                .values
                .iter()
                .map(|case| Point { case: Some(*case), ..Point::blank(Mode::Sim, ProtocolName::Raft, 0) })
                .collect();
        }
        for mode in &f.experiment.mode.values {
            for protocol in &f.cluster.protocol.values {
                let sizes: Vec<u32> = match (&f.cluster.nodes, &f.cluster.f) {
                    (Some(nodes), _) => nodes.values.clone(),
                    (None, Some(fs)) => {
                        fs.values.iter().filter_map(|f| protocol.fault_model().nodes_for_f(*f)).collect()
                    }
                    (None, None) => vec![],
                };
                for nodes in sizes {
                    points.push(Point::blank(*mode, *protocol, nodes));
                }
            }
        }
        let timeouts: Vec<([f64; 2], Heartbeat)> = f
            .raft
            .election_timeout_ms
            .values
            .iter()
            .flat_map(|range| f.raft.heartbeat_ms.values.iter().map(move |hb| (*range, *hb)))
            .collect();
        let points = expand(points, &timeouts, |p, ([lo, hi], hb)| {
            p.election_timeout_ms_min = *lo;
            p.election_timeout_ms_max = *hi;
            p.heartbeat_ms = match hb {
                Heartbeat::Ms(v) => *v,
                Heartbeat::HalfMinTimeout => lo / 2.0,
            };
        });
        let points = expand(points, &f.raft.batch_delay_ms.values, |p, v| p.batch_delay_ms = *v);
        let points = expand(points, &f.raft.read_mode.values, |p, v| p.read_mode = *v);
        // PreVote is Raft's: the other protocols get one point, not one per value.
        let points: Vec<Point> = points
            .into_iter()
            .flat_map(|point| {
                let values =
                    if point.protocol == ProtocolName::Raft { f.raft.pre_vote.values.clone() } else { vec![false] };
                let mut seen = Vec::new();
                values
                    .into_iter()
                    .filter(move |v| {
                        !seen.contains(v) && {
                            seen.push(*v);
                            true
                        }
                    })
                    .map(move |pre_vote| Point { pre_vote, ..point.clone() })
            })
            .collect();
        let points = expand(points, &f.network.latency_ms.values, |p, v| p.latency = v.clone());
        let points = expand(points, &f.network.loss.values, |p, v| p.loss = *v);
        let points = expand(points, &f.network.duplicate.values, |p, v| p.duplicate = *v);
        let points = expand(points, &f.network.reorder.values, |p, v| p.reorder = *v);
        let points = expand(points, &f.workload.clients.values, |p, v| p.clients = *v);
        let points = expand(points, &f.workload.value_bytes.values, |p, v| p.value_bytes = *v);
        if f.experiment.kind == "reads" {
            let points = expand(points, &f.reads.fault_profile.values, |p, v| p.fault_profile = *v);
            return expand(points, &f.reads.clock_skew_ppm.values, |p, v| p.clock_skew_ppm = *v);
        }
        if f.experiment.kind == "disruption" {
            let names: Vec<String> = f.disruption.scenario.iter().map(|s| s.get_ref().name.clone()).collect();
            return expand(points, &names, |p, v| p.scenario = v.clone());
        }
        if f.experiment.kind == "availability" {
            // More failures than replicas is no cluster: those combinations are left out.
            let points = expand(points, &f.availability.failures.values, |p, v| p.failures = *v);
            return points.into_iter().filter(|p| p.failures <= p.nodes).collect();
        }
        if f.experiment.kind != "attack" {
            return points;
        }
        // Each protocol against its own list of attacks, times the malicious counts (an
        // attack that names its own count runs with that one only).
        points
            .into_iter()
            .flat_map(|point| {
                let specs = f.attack.for_protocol(point.protocol).0.map(|s| s.values.clone()).unwrap_or_default();
                specs.into_iter().flat_map(move |attack| {
                    let counts = attack.malicious.map_or_else(|| f.attack.malicious.values.clone(), |m| vec![m]);
                    let point = point.clone();
                    counts.into_iter().map(move |malicious| Point {
                        attack: attack.clone(),
                        malicious,
                        ..point.clone()
                    })
                })
            })
            .collect()
    }

    pub fn total_trials(&self) -> u64 {
        self.points().len() as u64 * self.trials()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[experiment]
name = "t"
kind = "election"
trials = 3

[cluster]
protocol = "raft"
nodes = [3, 5]

[raft]
election_timeout_ms = [[150, 150], [150, 300]]

[faults]
crash = { who = "leader", at = "random-in-heartbeat" }
"#;

    fn parse(text: &str) -> Result<Experiment, LabError> {
        Experiment::parse(Path::new("exp.toml"), text.to_string())
    }

    #[test]
    fn lists_expand_to_the_cartesian_product() {
        let e = parse(GOOD).unwrap();
        let points = e.points();
        assert_eq!(points.len(), 4);
        assert_eq!(points[1].nodes, 3);
        assert_eq!(points[1].election_timeout_ms_max, 300.0);
        assert_eq!(points[1].heartbeat_ms, 75.0);
        assert_eq!(e.total_trials(), 12);
    }

    #[test]
    fn one_pair_is_one_range_not_two_values() {
        let e = parse(&GOOD.replace("[[150, 150], [150, 300]]", "[150, 155]")).unwrap();
        assert_eq!(e.points().len(), 2);
        assert_eq!(e.points()[0].election_timeout_ms_max, 155.0);
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_field_names_line_column_and_allowed_fields() {
        let e = error_of(&GOOD.replace("trials = 3", "trials = 3\ntrails = 4"));
        assert!(e.starts_with("exp.toml:6:1:"), "{e}");
        assert!(e.contains("unknown field `trails`") && e.contains("`trials`"), "{e}");
    }

    #[test]
    fn unknown_protocol_lists_the_protocols() {
        let e = error_of(&GOOD.replace("protocol = \"raft\"", "protocol = \"zab\""));
        assert!(e.starts_with("exp.toml:8:12:"), "{e}");
        assert!(e.contains("zab") && e.contains("raft") && e.contains("multipaxos"), "{e}");
    }

    #[test]
    fn both_crash_fault_protocols_size_by_f_and_sweep_together() {
        let text = GOOD
            .replace("protocol = \"raft\"", "protocol = [\"raft\", \"multipaxos\"]")
            .replace("nodes = [3, 5]", "f = [1, 2]");
        let experiment = parse(&text).unwrap();
        let sizes: Vec<(&str, u32)> = experiment.points().iter().map(|p| (p.protocol.name(), p.nodes)).collect();
        for expected in [("raft", 3), ("raft", 5), ("multipaxos", 3), ("multipaxos", 5)] {
            assert!(sizes.contains(&expected), "{sizes:?}");
        }
        let e = error_of(&GOOD.replace("[faults]", "[paxos]\nwindow_slots = 0\n\n[faults]"));
        assert!(e.contains("window_slots"), "{e}");
    }

    /// The baseline tolerates no fault: `f` > 0 names where and why.
    #[test]
    fn the_baseline_refuses_f_above_zero() {
        let text = GOOD
            .replace("kind = \"election\"", "kind = \"throughput\"")
            .replace("protocol = \"raft\"", "protocol = \"unreplicated\"")
            .replace("nodes = [3, 5]", "f = [0, 1]");
        let e = error_of(&text);
        assert!(e.contains("unreplicated tolerates no fault: f = 0 (one node), got f = 1"), "{e}");
        assert!(e.starts_with("exp.toml:"), "{e}");
    }

    #[test]
    fn unknown_kind_lists_the_kinds() {
        let text = GOOD.replace("kind = \"election\"", "kind = \"elections\"");
        let kinds: &[&str] = &["election", "throughput"];
        let e = Experiment::parse_with_kinds(Path::new("exp.toml"), text, Some(kinds)).unwrap_err().to_string();
        assert!(e.starts_with("exp.toml:4:8:"), "{e}");
        assert!(e.contains("unknown experiment kind `elections`, expected one of `election`, `throughput`"), "{e}");
    }

    #[test]
    fn inverted_or_negative_timeout_range_is_refused() {
        let e = error_of(&GOOD.replace("[[150, 150], [150, 300]]", "[[300, 150]]"));
        assert!(e.starts_with("exp.toml:12:23:"), "{e}");
        assert!(e.contains("0 < min <= max"), "{e}");
        let e = error_of(&GOOD.replace("[[150, 150], [150, 300]]", "[-5, 10]"));
        assert!(e.contains("0 < min <= max"), "{e}");
    }

    #[test]
    fn too_small_cluster_is_refused() {
        let e = error_of(&GOOD.replace("nodes = [3, 5]", "nodes = [2]"));
        assert!(e.starts_with("exp.toml:9:9:"), "{e}");
        assert!(e.contains("at least 3 nodes"), "{e}");
    }

    const THROUGHPUT: &str = r#"
[experiment]
name = "t"
kind = "throughput"
mode = ["sim", "quic"]
trials = 1

[cluster]
protocol = "raft"
nodes = [3, 5]

[faults]
schedule = [{ action = "crash", at_ms = 10, node = "leader" }, { action = "restart", at_ms = 20, node = 2 }]
"#;

    #[test]
    fn restart_in_quic_mode_needs_disk_storage() {
        let e = error_of(THROUGHPUT);
        assert!(e.contains("storage = \"disk\""), "{e}");
        let ok = THROUGHPUT.replace("nodes = [3, 5]", "nodes = [3, 5]\nstorage = \"disk\"");
        assert_eq!(parse(&ok).unwrap().points().len(), 4, "2 modes x 2 sizes");
    }

    #[test]
    fn namespaces_are_for_real_processes_only() {
        let sim_only = THROUGHPUT
            .replace("mode = [\"sim\", \"quic\"]", "mode = \"sim\"")
            .replace("[faults]", "[network]\nnetem = true\n\n[faults]");
        let e = error_of(&sim_only);
        assert!(e.starts_with("exp.toml:5:8:") && e.contains("mode = \"quic\""), "{e}");
    }

    #[test]
    fn schedule_nodes_must_exist_in_every_cluster() {
        let e = error_of(
            &THROUGHPUT
                .replace("node = 2 }", "node = 4 }")
                .replace("nodes = [3, 5]", "nodes = [3, 5]\nstorage = \"disk\""),
        );
        assert!(e.contains("node 4") && e.contains("0..2"), "{e}");
        let e = error_of(&THROUGHPUT.replace("action = \"crash\"", "action = \"explode\""));
        assert!(e.contains("explode") && e.contains("partition"), "{e}");
    }

    #[test]
    fn an_election_experiment_needs_its_crash() {
        let e = error_of(
            &GOOD.replace("crash = { who = \"leader\", at = \"random-in-heartbeat\" }", "lagging_followers = 0"),
        );
        assert!(e.contains("needs `crash`"), "{e}");
    }

    #[test]
    fn f_gives_2f_plus_1_raft_nodes() {
        let e = parse(&GOOD.replace("nodes = [3, 5]", "f = [1, 2]")).unwrap();
        let sizes: Vec<u32> = e.points().iter().map(|p| p.nodes).collect();
        assert_eq!(sizes, vec![3, 3, 5, 5]);
    }

    const ATTACK: &str = r#"
[experiment]
name = "a"
kind = "attack"
trials = 2

[cluster]
protocol = ["raft", "pbft"]
f = 1

[attack]
raft = ["double-vote", "forge-log"]
pbft = "equivocate"
malicious = [1, 2]

[workload]
clients = 2
"#;

    #[test]
    fn attack_points_pair_each_protocol_with_its_own_attacks() {
        let e = parse(ATTACK).unwrap();
        let points: Vec<(String, u32, String, u32)> = e
            .points()
            .iter()
            .map(|p| (p.protocol.name().to_string(), p.nodes, p.attack.label(), p.malicious))
            .collect();
        assert_eq!(
            points,
            [
                ("raft".into(), 3, "double-vote".into(), 1),
                ("raft".into(), 3, "double-vote".into(), 2),
                ("raft".into(), 3, "forge-log".into(), 1),
                ("raft".into(), 3, "forge-log".into(), 2),
                ("pbft".into(), 4, "equivocate".into(), 1),
                ("pbft".into(), 4, "equivocate".into(), 2),
            ]
        );
    }

    #[test]
    fn an_unknown_attack_names_line_column_and_the_protocols_attacks() {
        let e = error_of(&ATTACK.replace("\"forge-log\"", "\"forge-logs\""));
        assert!(e.starts_with("exp.toml:12:8:"), "{e}");
        assert!(e.contains("unknown raft attack \"forge-logs\"") && e.contains("lie-log-freshness"), "{e}");
        let e = error_of(&ATTACK.replace("pbft = \"equivocate\"\n", ""));
        assert!(e.contains("[attack] needs `pbft`") && e.contains("view-inflation"), "{e}");
        let e = error_of(&ATTACK.replace("kind = \"attack\"", "kind = \"attack\"\nmode = \"quic\""));
        assert!(e.contains("attack experiments run in the simulator"), "{e}");
        let e = error_of(&ATTACK.replace("malicious = [1, 2]", "malicious = 3"));
        assert!(e.contains("malicious must be between 1 and nodes - 1"), "{e}");
    }

    /// The annotated example of docs/experiments.md is a file `qlab` accepts, so the
    /// documentation cannot drift from the parser; as a quic-mode file with an ablation it is refused
    /// until it says allow_ablations.
    #[test]
    fn the_docs_example_parses_and_ablations_need_consent_in_real_mode() {
        let page = include_str!("../../../docs/experiments.md");
        let start = page.find("## Writing an experiment").expect("the section");
        let block = &page[start..];
        let block = &block[block.find("```toml\n").expect("a toml block") + 8..];
        let example = &block[..block.find("```").expect("its end")];
        let e = parse(example).unwrap_or_else(|e| panic!("the docs/experiments.md example: {e}"));
        assert!(!e.points().is_empty());
        let ablated = example.replace("vote_without_log_check = false", "vote_without_log_check = true");
        let ablated = ablated.replace("mode = \"sim\"", "mode = \"quic\"");
        let error = error_of(&ablated);
        assert!(
            error.contains("[raft.ablate] switches off a safety rule") && error.contains("allow_ablations"),
            "{error}"
        );
        assert!(parse(&ablated.replace("allow_ablations = false", "allow_ablations = true")).is_ok());
        let e = parse(&example.replace("skip_phase1_values = false", "skip_phase1_values = true")).unwrap();
        assert!(e.points()[0].paxos_config(&e.file.raft, &e.file.paxos).ablate.skip_phase1_values);
        let typo = error_of(&example.replace("skip_prev_log_check", "skip_prev_log"));
        assert!(typo.contains("unknown field `skip_prev_log`") && typo.contains("skip_prev_log_check"), "{typo}");
    }

    const DISRUPTION: &str = r#"
[experiment]
name = "d"
kind = "disruption"
trials = 1

[cluster]
protocol = ["raft", "multipaxos"]
nodes = 5

[raft]
pre_vote = [false, true]

[workload]
duration_ms = 2000

[[disruption.scenario]]
name = "rejoin"
schedule = [
    { action = "isolate", at_ms = 500, node = "follower" },
    { action = "heal", at_ms = 1500 },
]

[[disruption.scenario]]
name = "handover"
schedule = [{ action = "transfer-leader", at_ms = 500, to = 1 }]
"#;

    #[test]
    fn disruption_sweeps_scenarios_and_pre_vote_for_raft_only() {
        let points: Vec<(ProtocolName, bool, String)> =
            parse(DISRUPTION).unwrap().points().iter().map(|p| (p.protocol, p.pre_vote, p.scenario.clone())).collect();
        let raft = ProtocolName::Raft;
        let paxos = ProtocolName::Multipaxos;
        assert_eq!(
            points,
            [
                (raft, false, "rejoin".to_string()),
                (raft, false, "handover".to_string()),
                (raft, true, "rejoin".to_string()),
                (raft, true, "handover".to_string()),
                (paxos, false, "rejoin".to_string()),
                (paxos, false, "handover".to_string()),
            ]
        );
    }

    #[test]
    fn disruption_files_are_checked_with_line_and_column() {
        let cases = [
            (
                DISRUPTION.replace("kind = \"disruption\"", "kind = \"disruption\"\nmode = \"quic\""),
                "run in the simulator",
            ),
            (
                DISRUPTION.replace("[\"raft\", \"multipaxos\"]", "\"pbft\"\nf = 1").replace("nodes = 5\n", ""),
                "protocol is \"raft\"",
            ),
            (DISRUPTION.replace("name = \"handover\"", "name = \"rejoin\""), "a name of its own"),
            (DISRUPTION.replace("to = 1", "to = \"leader\""), "not \"leader\""),
            (DISRUPTION.replace("to = 1", "to = 7"), "the schedule names node 7"),
            (DISRUPTION.replace("at_ms = 1500", "at_ms = 2500"), "at or after the run's end"),
            (DISRUPTION.replace("node = \"follower\"", "node = \"someone\""), "\"follower\""),
            (
                DISRUPTION.replace(
                    "[[disruption.scenario]]\nname = \"handover\"",
                    "[faults]\n[[disruption.scenario]]\nname = \"handover\"",
                ),
                "takes no [faults]",
            ),
        ];
        for (file, expected) in cases {
            let e = error_of(&file);
            assert!(e.starts_with("exp.toml:") && e.contains(expected), "{expected}: {e}");
        }
        let e = error_of(DISRUPTION.split("[[disruption.scenario]]").next().unwrap());
        assert!(e.contains("needs at least one [[disruption.scenario]]"), "{e}");
    }

    #[test]
    fn availability_sweeps_failures_up_to_the_cluster_size_in_the_simulator_only() {
        let file = r#"
[experiment]
name = "a"
kind = "availability"
trials = 1

[cluster]
protocol = "raft"
nodes = [2, 3]

[availability]
failures = [1, 3]
"#;
        let points: Vec<(u32, u32)> = parse(file).unwrap().points().iter().map(|p| (p.nodes, p.failures)).collect();
        assert_eq!(points, [(2, 1), (3, 1), (3, 3)]);
        let e = error_of(
            &file.replace("protocol = \"raft\"", "protocol = \"pbft\"\nf = 1").replace("nodes = [2, 3]\n", ""),
        );
        assert!(e.contains("protocol is \"raft\" or \"multipaxos\""), "{e}");
        let e = error_of(&file.replace("kind = \"availability\"", "kind = \"availability\"\nmode = \"quic\""));
        assert!(e.contains("availability experiments run in the simulator"), "{e}");
        let e = error_of(&file.replace("failures = [1, 3]", "failures = 4"));
        assert!(e.contains("every value of failures exceeds every cluster size"), "{e}");
        let e = error_of(&file.replace("failures = [1, 3]", "failures = [1]\nduration = 5"));
        assert!(e.contains("unknown field `duration`") && e.contains("duration_ms"), "{e}");
    }

    #[test]
    fn counterexample_files_name_cases_and_nothing_the_cases_fix_themselves() {
        let file = r#"
[experiment]
name = "cx"
kind = "counterexample"
trials = 5

[counterexample]
cases = ["two-nodes", "fixed-timeout"]
"#;
        let e = parse(file).unwrap();
        let cases: Vec<_> = e.points().iter().map(|p| p.case.unwrap().name()).collect();
        assert_eq!(cases, ["two-nodes", "fixed-timeout"]);
        let e = error_of(&file.replace("\"two-nodes\"", "\"three-nodes\""));
        assert!(e.contains("unknown variant `three-nodes`") && e.contains("minority-leader-rollback"), "{e}");
        assert!(e.starts_with("exp.toml:8:"), "{e}");
        let e = error_of(
            &file.replace("[counterexample]", "[cluster]\nprotocol = \"raft\"\nnodes = 3\n\n[counterexample]"),
        );
        assert!(e.contains("[cluster] nodes would be ignored") && e.starts_with("exp.toml:9:1:"), "{e}");
        let e = error_of(&file.replace("[counterexample]\ncases = [\"two-nodes\", \"fixed-timeout\"]\n", ""));
        assert!(e.contains("needs [counterexample] cases") && e.contains("six-vs-five"), "{e}");
        let e = error_of(&file.replace("kind = \"counterexample\"", "kind = \"counterexample\"\nmode = \"quic\""));
        assert!(e.contains("counterexample experiments run in the simulator"), "{e}");
    }

    #[test]
    fn reads_sweep_modes_faults_and_skew_and_refuse_what_chaos_runs_ignore() {
        let file = r#"
[experiment]
name = "r"
kind = "reads"
trials = 1

[cluster]
protocol = ["raft", "multipaxos"]
nodes = 3

[raft]
read_mode = ["read-index", "lease"]
lease_drift_bound_ppm = 20000

[reads]
fault_profile = ["none", "isolate-leader"]
clock_skew_ppm = [0, 300000]
readers = 1

[workload]
clients = 3
"#;
        let e = parse(file).unwrap();
        assert_eq!(e.points().len(), 2 * 2 * 2 * 2);
        let last = e.points().pop().unwrap();
        assert_eq!(
            (last.protocol, last.read_mode, last.fault_profile, last.clock_skew_ppm),
            (ProtocolName::Multipaxos, ReadMode::Lease, FaultProfile::IsolateLeader, 300_000)
        );
        assert_eq!(last.raft_config(&e.file.raft).lease_drift_bound_ppm, 20_000);
        let at = |e: &str, line: usize| assert!(e.contains(&format!("exp.toml:{line}:")), "{e}");
        let e = error_of(&file.replace("\"lease\"]", "\"stale\"]"));
        assert!(e.contains("unknown variant `stale`") && e.contains("follower-stale"), "{e}");
        at(&e, 12);
        let e = error_of(&file.replace("\"none\",", "\"sometimes\","));
        assert!(e.contains("isolate-leader"), "{e}");
        let e = error_of(&file.replace("[workload]\n", "[workload]\nthink_ms = 3\n"));
        assert!(
            e.contains("[workload] think_ms would be ignored") && e.contains("allowed in [workload]: clients"),
            "{e}"
        );
        at(&e, 21);
        let e = error_of(&file.replace("[reads]", "[network]\nloss = 0.1\n\n[reads]"));
        assert!(e.contains("[network] loss would be ignored"), "{e}");
        let e = error_of(&file.replace("readers = 1", "readers = 4"));
        assert!(e.contains("readers = 4 exceeds the clients"), "{e}");
        let e = error_of(&file.replace("[0, 300000]", "[0, 1000000]"));
        assert!(e.contains("clock_skew_ppm must be below 1000000"), "{e}");
        let e = error_of(&file.replace("\"multipaxos\"]", "\"pbft\"]").replace("nodes = 3", "nodes = 4"));
        assert!(e.contains("PBFT orders reads like writes"), "{e}");
        let e = error_of(&file.replace("kind = \"reads\"", "kind = \"throughput\""));
        assert!(e.contains("read_mode \"read-index\" is for kind = \"reads\""), "{e}");
        let e = error_of(&file.replace("[reads]", "[faults]\nschedule = []\n\n[reads]"));
        assert!(e.contains("a reads experiment takes no [faults]"), "{e}");
    }

    #[test]
    fn attacks_with_parameters_are_tables_and_label_their_rows() {
        let file = ATTACK.replace(
            "pbft = \"equivocate\"",
            "pbft = [\"equivocate\", { name = \"equivocate\", malicious = 2 }, { name = \"selective-drop\", to = [3] },\n        \
             { name = \"delay\", delay_ms = 250 }]",
        );
        let e = parse(&file).unwrap();
        let pbft: Vec<(String, u32)> =
            e.points().iter().filter(|p| p.nodes == 4).map(|p| (p.attack.label(), p.malicious)).collect();
        assert_eq!(
            pbft,
            [
                ("equivocate".into(), 1),
                ("equivocate".into(), 2),
                ("equivocate".into(), 2),
                ("selective-drop(to=3)".into(), 1),
                ("selective-drop(to=3)".into(), 2),
                ("delay(250ms)".into(), 1),
                ("delay(250ms)".into(), 2),
            ]
        );
        let delay = e.points().into_iter().find(|p| p.attack.name == "delay").unwrap();
        assert_eq!(delay.attack.params().delay_ns, qlab_core::ms(250));

        let e = error_of(&file.replace("to = [3]", "to = []"));
        assert!(e.starts_with("exp.toml:13:8:") && e.contains("selective-drop needs `to`"), "{e}");
        let e = error_of(&file.replace("to = [3]", "to = [0]"));
        assert!(e.contains("the replicas it starves must be honest ones, 1 to 3"), "{e}");
        let e = error_of(&file.replace("delay_ms = 250", "delay_ms = 0"));
        assert!(e.contains("delay needs `delay_ms` > 0"), "{e}");
        let e = error_of(&file.replace("malicious = 2 }", "malicious = 2, delay_ms = 5 }"));
        assert!(e.contains("`delay_ms` applies to delay only"), "{e}");
        let e = error_of(&file.replace("malicious = 2 }", "malicous = 2 }"));
        assert!(e.contains("unknown field `malicous`") && e.contains("malicious"), "{e}");
        let e = error_of(&file.replace("\"equivocate\", {", "3, {"));
        assert!(e.contains("an attack is a name"), "{e}");
    }
}
