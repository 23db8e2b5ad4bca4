//! Experiment files: parsing, validation with precise errors, and sweep expansion.
//!
//! An experiment is a TOML file. Every field marked *sweepable* may be given as one
//! value or a list of values; the run is the cartesian product of all lists, each
//! combination (a *point*) repeated `trials` times. Mistakes are reported as
//! `FILE:LINE:COLUMN: message`, and the message lists the allowed values or range.

use crate::error::LabError;

use qlab_core::Nanos;
use qlab_core::reads::ReadMode;
use qlab_sim::{Latency, NetworkConfig};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use std::any::Any;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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
    /// Wide-area placement ([`crate::regions`]): node `i` in `regions[i % len]`, each
    /// link delayed by half the round trip between its regions (built-in names, or
    /// the rows of `rtt_ms_matrix`). Replaces `latency_ms`.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Round trips between `regions`, ms (row: from, column: to).
    #[serde(default)]
    pub rtt_ms_matrix: Option<Vec<Vec<f64>>>,
    /// Round trip between two nodes of one region, ms.
    #[serde(default = "default_intra_region_rtt_ms")]
    pub intra_region_rtt_ms: f64,
    /// Where the clients are (default: the first of `regions`).
    #[serde(default)]
    pub client_region: Option<String>,
    /// Standard deviation of each message's one-way delay on every link, ms.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Sweep (throughput): once the cluster has elected, the placement turns so the
    /// leader (PBFT: the primary) is in this region; the others follow in list order.
    #[serde(default)]
    pub leader_region: Option<Sweep<String>>,
}

fn default_intra_region_rtt_ms() -> f64 {
    1.0
}

impl NetworkSection {
    /// The regions the file places nodes and clients in, if it does. The keys were
    /// checked when the file was read ([`Experiment::validate_cluster_run`]), so this
    /// cannot fail for a file that ran.
    pub fn region_map(&self) -> Option<crate::regions::RegionMap> {
        self.try_region_map().map(|map| map.expect("[network] regions were checked when the file was read"))
    }

    /// The regions as the file gives them, or what is wrong with them (`None`: no
    /// `regions`).
    pub fn try_region_map(&self) -> Option<Result<crate::regions::RegionMap, String>> {
        let regions = self.regions.as_ref()?;
        Some(crate::regions::RegionMap::new(
            regions,
            self.rtt_ms_matrix.as_deref(),
            self.intra_region_rtt_ms,
            self.client_region.as_deref(),
            self.jitter_ms,
        ))
    }
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
            regions: None,
            rtt_ms_matrix: None,
            intra_region_rtt_ms: default_intra_region_rtt_ms(),
            client_region: None,
            jitter_ms: 0.0,
            leader_region: None,
        }
    }
}

fn default_latency() -> Sweep<LatencyMs> {
    Sweep::one(LatencyMs::Constant { value: 1.0 })
}
fn zero_sweep() -> Sweep<f64> {
    Sweep::one(0.0)
}

/// `[storage]`: the simulator's disk (real mode's disk is the machine's).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// How long a write takes to become durable, as a latency distribution in ms (the
    /// same forms as `latency_ms`); the node's messages wait for it. Default 0: records
    /// are durable within the step.
    #[serde(default = "instant_fsync")]
    pub fsync_ms: Sweep<LatencyMs>,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection { fsync_ms: instant_fsync() }
    }
}

fn instant_fsync() -> Sweep<LatencyMs> {
    Sweep::one(LatencyMs::Constant { value: 0.0 })
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
    /// Sweep: adaptive batching's bound on a leader's uncommitted batches, for every
    /// protocol, where `batch_delay_ms` is 0 ([`qlab_core::batching`]; 0: no batching,
    /// each command its own round).
    #[serde(default = "default_batches_in_flight")]
    pub max_batches_in_flight: Sweep<usize>,
    /// A batch's commands take at most this many encoded bytes, for every protocol.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
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

fn default_batches_in_flight() -> Sweep<usize> {
    Sweep::one(qlab_core::batching::DEFAULT_MAX_BATCHES_IN_FLIGHT)
}

fn default_max_batch_bytes() -> usize {
    qlab_core::batching::DEFAULT_MAX_BATCH_BYTES
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

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            election_timeout_ms: default_timeout(),
            heartbeat_ms: default_heartbeat(),
            check_quorum: true,
            max_entries_per_append: default_batch(),
            batch_delay_ms: zero_sweep(),
            max_batches_in_flight: default_batches_in_flight(),
            max_batch_bytes: default_max_batch_bytes(),
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
    DEFAULT_BATCH
}

/// Entries per message, commands per slot, requests per batch, unless a file says otherwise.
pub const DEFAULT_BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashWho {
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashAt {
    /// Uniformly random point of the leader's heartbeat interval (with
    /// `sync_heartbeats_before_crash`, the leader broadcasts heartbeats at the crash
    /// itself, so every follower's timer restarts at the crash).
    RandomInHeartbeat,
    /// The Raft paper's §9.3 sequence: the leader broadcasts heartbeats (every
    /// follower's timer restarts together), then crashes at a uniformly random point
    /// of the heartbeat interval that follows, so the followers' timers have run for
    /// 0 to 1 interval at the crash and the shortest downtime is about the minimum
    /// timeout less one interval. Simulator only.
    AfterHeartbeatBroadcast,
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
    /// §3.10; protocols without the mechanism ignore it).
    TransferLeader { at_ms: f64, to: NodeRef },
    /// Pause `node` for `for_ms` (gray failure): in quic mode SIGSTOP, then SIGCONT; in
    /// the simulator nothing reaches it and it does nothing until it wakes, when all
    /// that arrived is handed to it at once. A paused old leader waking up is the test
    /// of leases and of check-quorum.
    Pause { at_ms: f64, node: NodeRef, for_ms: f64 },
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
            | ScheduledFault::TransferLeader { at_ms, .. }
            | ScheduledFault::Pause { at_ms, .. } => *at_ms,
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
    /// With `arrival = "poisson"`, the client sessions the arrivals are handed to: each
    /// holds one request at a time, so this bounds the requests outstanding.
    #[serde(default = "default_clients")]
    pub clients: Sweep<u32>,
    /// How requests arrive: each client issues its next when the last returns
    /// (`closed`), or at Poisson arrival times whether or not earlier ones returned.
    #[serde(default)]
    pub arrival: Arrival,
    /// Sweep, with `arrival = "poisson"`: requests offered per second.
    #[serde(default)]
    pub rate_per_s: Option<Sweep<f64>>,
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
            arrival: Arrival::default(),
            rate_per_s: None,
            think_ms: 0.0,
            value_bytes: default_value_bytes(),
            read_ratio: 0.0,
            keys: default_keys(),
            warmup_ms: default_warmup_ms(),
            duration_ms: default_duration_ms(),
        }
    }
}

/// `[workload] arrival`: where a client's next request comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    /// Each client issues its next request when the last returns (after `think_ms`):
    /// the load adapts to the system, so a slow server is offered less.
    #[default]
    Closed,
    /// Requests arrive at exponentially spaced times at `rate_per_s` (open loop): a slow
    /// server is offered as much as a fast one, and latency counts from the arrival.
    Poisson,
}

impl Arrival {
    pub fn name(&self) -> &'static str {
        match self {
            Arrival::Closed => "closed",
            Arrival::Poisson => "poisson",
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

/// The sections every kind shares, as written. A kind's own sections (`[attack]`,
/// `[reads]`, ...) are its module's types, read by [`Experiment::kind_sections`]; the
/// top level is checked against both by [`Experiment::check_sections`], so an unknown
/// or misplaced table is still an error with its line and column.
#[derive(Clone, Debug, Deserialize)]
pub struct ExperimentFile {
    pub experiment: ExperimentSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub storage: StorageSection,
    /// The leader-based protocols' shared timing, and Raft's own knobs.
    #[serde(default)]
    pub raft: RaftSection,
    /// Required by `election` (what to crash); `throughput` runs fault-free.
    pub faults: Option<FaultsSection>,
    #[serde(default)]
    pub workload: WorkloadSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Each protocol's own tables (`[paxos]`, `[pbft]`), as its
    /// [`crate::protocols::LabProtocol::Sections`] type: read from the file's text by
    /// [`crate::registry::Registry::parse`], which knows the protocol list.
    #[serde(skip)]
    pub protocol_sections: ProtocolSections,
}

/// The protocols' own sections of a file, one value per section type. Type-erased so
/// this module, below the protocol list, names none of them.
#[derive(Clone, Default)]
pub struct ProtocolSections(std::collections::BTreeMap<std::any::TypeId, Arc<dyn Any + Send + Sync>>);

impl ProtocolSections {
    /// The sections of type `T`, if the file was read with them.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.get(&std::any::TypeId::of::<T>()).and_then(|read| read.clone().downcast::<T>().ok())
    }
    pub fn insert<T: Any + Send + Sync>(&mut self, sections: T) {
        self.0.insert(std::any::TypeId::of::<T>(), Arc::new(sections));
    }
}

impl std::fmt::Debug for ProtocolSections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProtocolSections({} read)", self.0.len())
    }
}

/// A parsed, validated experiment with its source text (kept for provenance).
#[derive(Clone, Debug)]
pub struct Experiment {
    pub path: PathBuf,
    pub source: String,
    pub file: ExperimentFile,
    /// The kind's own sections once read (see [`Experiment::kind_sections`]).
    kind_sections: KindSectionsCache,
}

/// The sections every experiment file may have; a kind adds its own
/// ([`crate::kind::ExperimentKind::sections`]) and each protocol its own
/// ([`crate::protocols::LabProtocol::SECTIONS`]).
pub const COMMON_SECTIONS: &[&str] =
    &["experiment", "cluster", "network", "storage", "raft", "faults", "workload", "limits"];

/// What a kind reads of one common (or protocol) section: `keys` and nothing else, and
/// why (the start of the error for a key it would ignore). Sections a kind names no
/// rule for are read whole.
#[derive(Clone, Copy, Debug)]
pub struct KeysRead {
    pub section: &'static str,
    pub keys: &'static [&'static str],
    pub why: &'static str,
}

/// Keys only real mode reads: a file that runs the simulator alone may not set them.
pub const REAL_MODE_KEYS: &[(&str, &str)] =
    &[("network", "quic_delay_ms"), ("network", "netem_jitter_ms"), ("cluster", "storage")];

/// A kind's sections parsed once per run rather than once per trial. Shared by clones
/// of the experiment (they have the same text).
#[derive(Clone, Default)]
struct KindSectionsCache(Arc<OnceLock<Arc<dyn Any + Send + Sync>>>);

impl std::fmt::Debug for KindSectionsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "KindSectionsCache(read)" } else { "KindSectionsCache(unread)" })
    }
}

/// What a kind asks of the cluster, network and workload sections, checked by
/// [`Experiment::validate_cluster_run`]: the rules that differ between kinds, as data,
/// so the checks themselves are written once.
#[derive(Clone, Copy, Debug)]
pub struct ClusterRules {
    /// The smallest crash-fault cluster the kind can run, and why (a Byzantine one is
    /// always n = 3f + 1 >= 4).
    pub min_nodes: u32,
    pub min_nodes_why: &'static str,
    /// Whether the one-server baseline has anything for the kind to measure.
    pub unreplicated: bool,
    /// Every point needs at least one client.
    pub needs_clients: bool,
    /// The kind sweeps `[raft] read_mode` (every other kind reads through the log).
    pub read_modes: bool,
    /// The kind's rows carry `fsync_ms_mean`, so `[storage] fsync_ms` may be a list
    /// (elsewhere one value: two points differing only in it would share a summary row).
    pub fsync_column: bool,
    /// The kind places the leader in `[network] leader_region` once it is elected.
    pub leader_placement: bool,
    pub faults: FaultsRule,
}

/// Whether a kind takes a `[faults]` section.
#[derive(Clone, Copy, Debug)]
pub enum FaultsRule {
    Optional,
    /// Required; the message says what it must hold.
    Required(&'static str),
    /// Refused; the message says where the kind's faults come from instead.
    Refused(&'static str),
}

impl Default for ClusterRules {
    /// A fault-free run of any cluster: one node, any protocol, no client needed.
    fn default() -> ClusterRules {
        ClusterRules {
            min_nodes: 1,
            min_nodes_why: "",
            unreplicated: true,
            needs_clients: false,
            read_modes: false,
            fsync_column: false,
            leader_placement: false,
            faults: FaultsRule::Optional,
        }
    }
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
    /// The simulated disk's write latency (`[storage] fsync_ms`).
    pub fsync: LatencyMs,
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub clients: u32,
    /// Open-loop load: requests offered per second (`None`: closed-loop clients).
    pub rate_per_s: Option<f64>,
    /// Wide-area placement: the region the leader is moved to once elected.
    pub leader_region: Option<String>,
    /// How long a client waits before retrying, where the network says (regions:
    /// [`crate::regions::RegionMap::client_retry_timeout_ms`]); `None`: the kind's own.
    #[serde(skip)]
    pub client_retry_ns: Option<Nanos>,
    pub value_bytes: usize,
    pub batch_delay_ms: f64,
    /// Adaptive batching's bound on uncommitted batches (with `batch_delay_ms` 0).
    pub max_batches_in_flight: usize,
    /// How Raft and Multi-Paxos serve reads.
    pub read_mode: ReadMode,
    /// Raft: PreVote on.
    pub pre_vote: bool,
    /// The kind's own axes (the attack and its malicious count, the failures, ...), of
    /// the kind's own type: set by its `points`, read back with [`Point::axes`].
    #[serde(flatten)]
    pub axes: Axes,
}

/// The axes a kind adds to the common ones, as a type of the kind's module. Any
/// `Clone + Debug + PartialEq + Serialize` type is one; its serde fields are the
/// kind's point columns of the same name.
pub trait KindAxes: Any + Send + Sync + std::fmt::Debug {
    /// The axes' values by column name.
    fn columns(&self) -> serde_json::Map<String, serde_json::Value>;
    fn same_as(&self, other: &dyn KindAxes) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + Send + Sync + std::fmt::Debug + PartialEq + Serialize> KindAxes for T {
    fn columns(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(columns)) => columns,
            _ => serde_json::Map::new(),
        }
    }
    fn same_as(&self, other: &dyn KindAxes) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A point's kind axes, if its kind has any.
#[derive(Clone, Debug, Default)]
pub struct Axes(Option<Arc<dyn KindAxes>>);

impl PartialEq for Axes {
    fn eq(&self, other: &Axes) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => a.same_as(b.as_ref()),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Serialize for Axes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let columns = self.0.as_ref().map(|axes| axes.columns()).unwrap_or_default();
        let mut map = serializer.serialize_map(Some(columns.len()))?;
        for (column, value) in &columns {
            map.serialize_entry(column, value)?;
        }
        map.end()
    }
}

impl Point {
    /// A point with nothing swept set yet.
    pub fn blank(mode: Mode, protocol: ProtocolName, nodes: u32) -> Point {
        Point {
            mode,
            protocol,
            nodes,
            election_timeout_ms_min: 0.0,
            election_timeout_ms_max: 0.0,
            heartbeat_ms: 0.0,
            latency: LatencyMs::Constant { value: 0.0 },
            fsync: LatencyMs::Constant { value: 0.0 },
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            clients: 0,
            rate_per_s: None,
            leader_region: None,
            client_retry_ns: None,
            value_bytes: 0,
            batch_delay_ms: 0.0,
            max_batches_in_flight: qlab_core::batching::DEFAULT_MAX_BATCHES_IN_FLIGHT,
            read_mode: ReadMode::Log,
            pre_vote: false,
            axes: Axes::default(),
        }
    }

    /// This point with the kind's axes `axes`.
    pub fn with_axes<T: KindAxes>(self, axes: T) -> Point {
        Point { axes: Axes(Some(Arc::new(axes))), ..self }
    }

    /// The kind's axes, of the type its `points` set (`None` for a point of another
    /// kind, or one made without them).
    pub fn axes<T: KindAxes>(&self) -> Option<&T> {
        self.axes.0.as_ref()?.as_any().downcast_ref::<T>()
    }

    pub fn heartbeat_ns(&self) -> Nanos {
        (self.heartbeat_ms * 1e6).round() as Nanos
    }
    /// The lower end of the election (leader) timeout range.
    pub fn timeout_ns_min(&self) -> Nanos {
        (self.election_timeout_ms_min * 1e6).round() as Nanos
    }
    /// Delay every link of `sim` as `map` places its nodes and clients.
    pub fn place_sim<P: qlab_core::Protocol, C: qlab_core::Client>(
        &self,
        sim: &mut qlab_sim::Sim<P, C>,
        map: &crate::regions::RegionMap,
    ) {
        // One QUIC stream per link delivers in order, jitter or not; so does the model.
        sim.set_fifo_links(true);
        let latency = |one_way_ms: f64| match map.jitter_ms {
            0.0 => LatencyMs::Constant { value: one_way_ms },
            stddev => LatencyMs::Normal { mean: one_way_ms, stddev },
        };
        for from in 0..self.nodes {
            for to in (0..self.nodes).filter(|to| *to != from) {
                let one_way = latency(map.node_to_node_ms(from, to)).to_latency();
                sim.set_link_latency(qlab_core::NodeId(from), qlab_core::NodeId(to), one_way);
            }
            let (to_node, from_node) = map.client_legs_ms(from);
            sim.set_client_latency(
                qlab_core::NodeId(from),
                latency(to_node).to_latency(),
                latency(from_node).to_latency(),
            );
        }
    }

    /// A simulated cluster of this point: its size, network and disk, replicas starting
    /// at seed-drawn times within one minimum timeout (as real processes do).
    pub fn sim<P: qlab_core::Protocol, C: qlab_core::Client>(
        &self,
        network: &NetworkSection,
        config: P::Config,
        seed: u64,
    ) -> qlab_sim::Sim<P, C> {
        let mut sim = qlab_sim::Sim::build(
            config,
            self.nodes,
            self.network_config(network),
            seed,
            self.timeout_ns_min(),
            Some(self.fsync.to_latency()),
        );
        if let Some(map) = network.region_map() {
            self.place_sim(&mut sim, &map);
        }
        sim
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

pub use qlab_report::error::line_column;

/// The largest duration a file may give, in ms (about 11.6 days of simulated or real
/// time): far beyond any experiment, and small enough that adding and scaling such
/// durations in nanoseconds never overflows.
pub const MAX_DURATION_MS: f64 = 1e9;

/// The most trials one point of a sweep may ask for: a billion, so that trial numbers
/// over every point stay far inside `u64`.
pub const MAX_TRIALS_PER_POINT: u64 = 1_000_000_000;

/// The span of the value at `keys` (a section, then a field, ...) as written in
/// `source`; `None` when the file does not write it.
pub fn value_span(source: &str, keys: &[&str]) -> Option<Range<usize>> {
    let root = toml::de::DeTable::parse(source).ok()?;
    let mut table = root.get_ref();
    let mut span = root.span();
    for (i, key) in keys.iter().enumerate() {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *key)?;
        span = value.span();
        if i + 1 < keys.len() {
            let toml::de::DeValue::Table(inner) = value.get_ref() else { return None };
            table = inner;
        }
    }
    Some(span)
}

/// Every number in the file, checked where it is written before any section reads it:
/// a float must be finite (TOML allows `inf` and `nan`), and a value under a key that
/// ends in `_ms` is a duration whose size is at most [`MAX_DURATION_MS`]. A value
/// past either would pass a field's own range check (`inf >= 0`) and overflow the
/// nanosecond clock in every trial.
fn check_numbers(source: &str) -> Result<(), (Range<usize>, String)> {
    use toml::de::DeValue;
    fn walk(value: &toml::Spanned<DeValue<'_>>, key: &str, duration: bool) -> Result<(), (Range<usize>, String)> {
        let number = match value.get_ref() {
            DeValue::Float(float) => {
                let v: f64 = float.as_str().replace('_', "").parse().unwrap_or(f64::NAN);
                if !v.is_finite() {
                    return Err((value.span(), format!("`{key}` is {}: every number must be finite", float.as_str())));
                }
                v
            }
            DeValue::Integer(integer) => {
                i128::from_str_radix(&integer.as_str().replace('_', ""), integer.radix()).map_or(f64::MAX, |v| v as f64)
            }
            DeValue::Array(items) => return items.iter().try_for_each(|item| walk(item, key, duration)),
            DeValue::Table(table) => {
                return table.iter().try_for_each(|(k, v)| {
                    let k = k.get_ref().as_ref();
                    walk(v, k, duration || k.ends_with("_ms") || k.contains("_ms_"))
                });
            }
            DeValue::String(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => return Ok(()),
        };
        if duration && number.abs() > MAX_DURATION_MS {
            return Err((
                value.span(),
                format!(
                    "`{key}` = {number:e} ms is past the largest duration a file may give ({MAX_DURATION_MS:e} ms, about 11.6 days)"
                ),
            ));
        }
        Ok(())
    }
    let Ok(root) = toml::de::DeTable::parse(source) else { return Ok(()) };
    root.get_ref().iter().try_for_each(|(k, v)| walk(v, k.get_ref().as_ref(), false))
}

impl Experiment {
    /// Parse a file and check what holds for every kind (its name, trials, consent to
    /// ablations); with `kinds`, its `kind` must be one of them (the registry's names),
    /// checked before anything else about the file. The kind validates the rest: files
    /// are read through [`crate::registry::Registry::parse`], which does both.
    pub fn parse_with_kinds(path: &Path, source: String, kinds: Option<&[&str]>) -> Result<Experiment, LabError> {
        check_numbers(&source).map_err(|(span, message)| {
            let (line, column) = line_column(&source, span.start);
            LabError::Config { path: path.to_path_buf(), line, column, message }
        })?;
        let file: ExperimentFile = toml::from_str(&source).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_column(&source, s.start));
            LabError::Config { path: path.to_path_buf(), line, column, message: e.message().trim().to_string() }
        })?;
        let experiment = Experiment { path: path.to_path_buf(), source, file, kind_sections: Default::default() };
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
        experiment.validate_file()?;
        Ok(experiment)
    }

    /// The kind's own sections: `T` is the kind's struct of its top-level tables, each
    /// `#[serde(default)]` or optional and `deny_unknown_fields` inside. Read from the
    /// file's text (so a mistake in them is reported with its line and column) once per
    /// run.
    pub fn kind_sections<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Result<Arc<T>, LabError> {
        if let Some(read) = self.kind_sections.0.get()
            && let Ok(sections) = read.clone().downcast::<T>()
        {
            return Ok(sections);
        }
        let sections: Arc<T> = Arc::new(toml::from_str(&self.source).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_column(&self.source, s.start));
            LabError::Config { path: self.path.clone(), line, column, message: e.message().trim().to_string() }
        })?);
        let _ = self.kind_sections.0.set(sections.clone());
        Ok(sections)
    }

    /// Every top-level table is a common section or one of `kind_sections`: a typo or
    /// another kind's section is an error at its line, listing the allowed ones.
    pub fn check_sections(&self, kind_sections: &[&str]) -> Result<(), LabError> {
        let table: toml::Table = toml::from_str(&self.source)
            .map_err(|e| self.error_at(&e.span().unwrap_or(0..0), e.message().trim().to_string()))?;
        let allowed: Vec<&str> = COMMON_SECTIONS.iter().chain(kind_sections).copied().collect();
        if let Some(unknown) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
            let listed: Vec<String> = allowed.iter().map(|s| format!("[{s}]")).collect();
            return Err(self.error_at(
                &self.section_span(unknown),
                format!(
                    "unknown section [{unknown}]: a file of kind = {:?} takes {}",
                    self.file.experiment.kind.as_str(),
                    listed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// An error at `span` of the file's text, as `FILE:LINE:COLUMN: message`.
    pub fn error_at(&self, span: &Range<usize>, message: String) -> LabError {
        let (line, column) = line_column(&self.source, span.start);
        LabError::Config { path: self.path.clone(), line, column, message }
    }

    /// An error about the value at `keys` (a section, then a field): at the value when
    /// the file writes it, else at the section's header, else at the file's `kind`
    /// (whose rules the default broke).
    pub fn error_at_key(&self, keys: &[&str], message: String) -> LabError {
        let span = value_span(&self.source, keys)
            .or_else(|| {
                let header = self.section_span(keys[0]);
                (header != (0..0)).then_some(header)
            })
            .unwrap_or_else(|| self.file.experiment.kind.span());
        self.error_at(&span, message)
    }

    /// A `[NAME.ablate]` table at `span` switches a safety rule off: real (quic) mode
    /// refuses it unless the file allows ablations.
    pub fn check_ablation_allowed(&self, section: &str, span: &Range<usize>) -> Result<(), LabError> {
        let f = &self.file;
        if f.experiment.mode.values.contains(&Mode::Quic) && !f.experiment.allow_ablations {
            return Err(self.error_at(
                span,
                format!(
                    "{section} switches off a safety rule; real (quic) mode refuses it unless [experiment] says \
                     allow_ablations = true"
                ),
            ));
        }
        Ok(())
    }

    fn validate_file(&self) -> Result<(), LabError> {
        let f = &self.file;
        if let Some(span) = f.raft.ablate.as_ref().filter(|a| a.get_ref().any()).map(|a| a.span()) {
            self.check_ablation_allowed("[raft.ablate]", &span)?;
        }
        if f.experiment.name.is_empty()
            || !f.experiment.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.error_at_key(
                &["experiment", "name"],
                format!("experiment name {:?} must be non-empty ASCII letters, digits, '-' or '_' (it names the results folder)", f.experiment.name),
            ));
        }
        if *f.experiment.trials.get_ref() == 0 {
            return Err(self.error_at(&f.experiment.trials.span(), "trials must be at least 1".into()));
        }
        if *f.experiment.trials.get_ref() > MAX_TRIALS_PER_POINT {
            return Err(self.error_at(
                &f.experiment.trials.span(),
                format!("trials is at most {MAX_TRIALS_PER_POINT} per point (split a longer sweep into runs)"),
            ));
        }
        Ok(())
    }

    /// The cluster, network, timing, workload and fault sections of a kind that runs
    /// clusters (every kind but counterexample, whose cases fix their own), by the
    /// kind's `rules`.
    pub fn validate_cluster_run(&self, rules: &ClusterRules) -> Result<(), LabError> {
        let f = &self.file;
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
            && !rules.unreplicated
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
            let (minimum, why) = match point.protocol.fault_model() {
                FaultModel::Byzantine => (4, "(n = 3f + 1 with f >= 1)"),
                _ => (rules.min_nodes, rules.min_nodes_why),
            };
            if point.nodes < minimum {
                let span = f.cluster.nodes.as_ref().or(f.cluster.f.as_ref()).map(|s| s.span.clone()).unwrap_or(0..0);
                let why = if why.is_empty() { String::new() } else { format!(" {why}") };
                return Err(self.error_at(
                    &span,
                    format!("{} needs at least {minimum} nodes{why}, got {}", point.protocol.name(), point.nodes),
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
        let fsync = &f.storage.fsync_ms;
        for latency in &fsync.values {
            latency.validate().map_err(|m| self.error_at(&fsync.span, m.replace("latency", "fsync_ms")))?;
        }
        let instant = LatencyMs::Constant { value: 0.0 };
        if f.experiment.mode.values.contains(&Mode::Quic) && fsync.values.iter().any(|v| *v != instant) {
            return Err(self.error_at(
                &fsync.span,
                "fsync_ms models the simulator's disk; in quic mode the nodes write to the machine's own disk \
                 ([cluster] storage = \"disk\"), so fsync_ms must be 0 there"
                    .into(),
            ));
        }
        if fsync.values.len() > 1 && !rules.fsync_column {
            return Err(self.error_at(
                &fsync.span,
                format!(
                    "a {} experiment's rows do not carry the disk latency, so fsync_ms takes one value here \
                     (election experiments sweep it)",
                    f.experiment.kind.as_str()
                ),
            ));
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
            let key = if f.network.quic_delay_ms < 0.0 { "quic_delay_ms" } else { "netem_jitter_ms" };
            return Err(self.error_at_key(&["network", key], format!("{key} must be >= 0")));
        }
        if (f.network.netns || f.network.netem) && !f.experiment.mode.values.contains(&Mode::Quic) {
            return Err(self.error_at(
                &f.experiment.mode.span,
                "netns and netem place real processes in network namespaces; they need mode = \"quic\"".into(),
            ));
        }
        if f.network.reorder_delay_ms_max < 0.0 {
            return Err(
                self.error_at_key(&["network", "reorder_delay_ms_max"], "reorder_delay_ms_max must be >= 0".into())
            );
        }
        if !rules.read_modes
            && let Some(mode) = f.raft.read_mode.values.iter().find(|m| **m != ReadMode::Log)
        {
            return Err(self.error_at(
                &f.raft.read_mode.span,
                format!(
                    "read_mode {:?} is for kind = \"reads\" (which judges each mode's linearizability); other kinds \
                     read through the log",
                    mode.name()
                ),
            ));
        }
        match (&f.faults, rules.faults) {
            (Some(_), FaultsRule::Refused(why)) => {
                return Err(self.error_at(&self.section_span("faults"), why.into()));
            }
            (None, FaultsRule::Required(what)) => return Err(self.error_at_key(&["faults"], what.into())),
            (Some(faults), _) => self.validate_faults(faults)?,
            (None, _) => {}
        }
        if rules.needs_clients && f.workload.clients.values.contains(&0) {
            return Err(self.error_at(
                &f.workload.clients.span,
                format!("clients must be at least 1 in a {} experiment", f.experiment.kind.as_str()),
            ));
        }
        if f.workload.value_bytes.values.iter().any(|v| *v > 1 << 20) {
            return Err(self.error_at(&f.workload.value_bytes.span, "value_bytes is at most 1048576".into()));
        }
        if !(0.0..=1.0).contains(&f.workload.read_ratio) {
            return Err(self.error_at_key(
                &["workload", "read_ratio"],
                format!("read_ratio is a fraction in [0, 1], got {}", f.workload.read_ratio),
            ));
        }
        if f.workload.warmup_ms < 0.0 {
            return Err(self.error_at_key(&["workload", "warmup_ms"], "warmup_ms must be >= 0".into()));
        }
        if f.workload.duration_ms <= 0.0 {
            return Err(self.error_at_key(&["workload", "duration_ms"], "duration_ms must be > 0".into()));
        }
        if f.raft.batch_delay_ms.values.iter().any(|v| *v < 0.0) {
            return Err(self.error_at(&f.raft.batch_delay_ms.span, "batch_delay_ms must be >= 0".into()));
        }
        if f.raft.max_entries_per_append == 0 {
            return Err(self.error_at_key(
                &["raft", "max_entries_per_append"],
                "max_entries_per_append must be at least 1".into(),
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
            return Err(self.error_at_key(&["workload", "think_ms"], "think_ms must be >= 0".into()));
        }
        self.validate_arrival()?;
        self.validate_regions()?;
        if let Some(leader_region) = &f.network.leader_region {
            if !rules.leader_placement {
                return Err(self.error_at(
                    &leader_region.span,
                    format!(
                        "leader_region places the elected leader; {} experiments do not place one (throughput does)",
                        f.experiment.kind.as_str()
                    ),
                ));
            }
            let regions = f.network.regions.as_deref().unwrap_or_default();
            if let Some(unknown) = leader_region.values.iter().find(|r| !regions.contains(r)) {
                return Err(self.error_at(
                    &leader_region.span,
                    format!("leader_region {unknown:?} is not one of the regions ({})", regions.join(", ")),
                ));
            }
        }
        if f.limits.max_election_ms <= 0.0 {
            return Err(self.error_at_key(&["limits", "max_election_ms"], "max_election_ms must be > 0".into()));
        }
        Ok(())
    }

    /// The first key of `[section]` in the file's text that is not in `allowed`, with
    /// its position.
    pub fn first_key_outside(&self, section: &str, allowed: &[&str]) -> Option<(String, Range<usize>)> {
        let root = toml::de::DeTable::parse(&self.source).ok()?;
        let (_, table) = root.get_ref().iter().find(|(k, _)| k.get_ref().as_ref() == section)?;
        let toml::de::DeValue::Table(keys) = table.get_ref() else { return None };
        let (key, _) = keys.iter().find(|(k, _)| !allowed.contains(&k.get_ref().as_ref()))?;
        Some((key.get_ref().to_string(), key.span()))
    }

    /// Refuse every key of a common or protocol section that the kind does not read
    /// (`reads`, from [`crate::kind::ExperimentKind::reads`]), that only real mode
    /// reads in a file that runs the simulator alone, or that belongs to a protocol the
    /// file does not run: a value that would be ignored is an error at its key.
    pub fn check_keys_read(&self, reads: &[KeysRead], protocol_sections: &[(&str, bool)]) -> Result<(), LabError> {
        for rule in reads {
            if let Some((key, span)) = self.first_key_outside(rule.section, rule.keys) {
                let allowed = if rule.keys.is_empty() { "nothing".to_string() } else { rule.keys.join(", ") };
                return Err(self.error_at(
                    &span,
                    format!(
                        "{}: [{}] {key} would be ignored (allowed in [{}]: {allowed})",
                        rule.why, rule.section, rule.section
                    ),
                ));
            }
        }
        if !self.file.experiment.mode.values.contains(&Mode::Quic) {
            for (section, key) in REAL_MODE_KEYS {
                if let Some(span) = value_span(&self.source, &[section, key]) {
                    return Err(self.error_at(
                        &span,
                        format!(
                            "[{section}] {key} is for real (quic) mode, and this file runs the simulator only \
                             (mode = \"sim\"): it would be ignored{}",
                            if *key == "storage" { "; the simulator's disk is [storage] fsync_ms" } else { "" }
                        ),
                    ));
                }
            }
        }
        for (section, run) in protocol_sections {
            if !run && let Some(span) = value_span(&self.source, &[section]) {
                let header = self.section_span(section);
                return Err(self.error_at(
                    if header == (0..0) { &span } else { &header },
                    format!("[{section}] configures a protocol this file does not run: it would be ignored"),
                ));
            }
        }
        Ok(())
    }

    /// Where `[section]` starts in the file's text (the whole file if it is not there).
    pub fn section_span(&self, section: &str) -> Range<usize> {
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

    /// `regions` with its companions, or none of them; with it, no other latency source.
    fn validate_regions(&self) -> Result<(), LabError> {
        let network = &self.file.network;
        let written = |key: &str| value_span(&self.source, &["network", key]).is_some();
        let Some(map) = network.try_region_map() else {
            for key in ["rtt_ms_matrix", "intra_region_rtt_ms", "client_region", "jitter_ms"] {
                if written(key) {
                    return Err(self.error_at_key(
                        &["network", key],
                        format!("{key} places nodes in regions; it needs `regions` (a list of region names)"),
                    ));
                }
            }
            return Ok(());
        };
        if let Err(message) = map {
            let key = ["intra_region_rtt_ms", "jitter_ms", "client_region", "rtt_ms_matrix"]
                .into_iter()
                .find(|key| message.starts_with(key))
                .unwrap_or("regions");
            return Err(self.error_at_key(&["network", key], message));
        }
        for key in ["latency_ms", "quic_delay_ms", "netem", "netem_jitter_ms"] {
            if written(key) {
                return Err(self.error_at_key(
                    &["network", key],
                    format!(
                        "{key} and `regions` both set link delays; with regions every link's delay comes from the \
                         round trips between regions (and `jitter_ms`)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Open-loop load needs its rates and has no think time; closed-loop load has no rate.
    fn validate_arrival(&self) -> Result<(), LabError> {
        let w = &self.file.workload;
        match (w.arrival, &w.rate_per_s) {
            (Arrival::Poisson, None) => Err(self.error_at_key(
                &["workload", "arrival"],
                "arrival = \"poisson\" needs rate_per_s (requests offered per second, a sweep)".into(),
            )),
            (Arrival::Closed, Some(rates)) => Err(self.error_at(
                &rates.span,
                "rate_per_s is the offered load of arrival = \"poisson\"; closed-loop clients \
                 (the default arrival) issue their next request when the last returns"
                    .into(),
            )),
            (Arrival::Poisson, Some(rates)) => {
                if let Some(bad) = rates.values.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
                    return Err(self.error_at(&rates.span, format!("rate_per_s must be > 0, got {bad}")));
                }
                if w.think_ms > 0.0 {
                    return Err(self.error_at_key(
                        &["workload", "think_ms"],
                        "think_ms is a closed-loop client's pause; open-loop arrivals come at rate_per_s".into(),
                    ));
                }
                Ok(())
            }
            (Arrival::Closed, None) => Ok(()),
        }
    }

    fn validate_faults(&self, faults: &FaultsSection) -> Result<(), LabError> {
        let schedule_span = faults.schedule.span();
        self.validate_schedule(faults.schedule.get_ref(), &schedule_span)?;
        self.validate_lagging(faults)
    }

    /// The entries of one fault schedule: times, node ids, and what quic mode cannot do.
    pub fn validate_schedule(&self, schedule: &[ScheduledFault], schedule_span: &Range<usize>) -> Result<(), LabError> {
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
                ScheduledFault::Pause { node, for_ms, .. } => {
                    check_node(node)?;
                    if *for_ms <= 0.0 {
                        return Err(self.error_at(&schedule_span, format!("pause needs for_ms > 0, got {for_ms}")));
                    }
                }
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
        let after_broadcast = faults.crash.as_ref().is_some_and(|c| c.at == CrashAt::AfterHeartbeatBroadcast);
        if after_broadcast && faults.sync_heartbeats_before_crash {
            return Err(self.error_at(
                &self.section_span("faults"),
                "crash at = \"after-heartbeat-broadcast\" already broadcasts heartbeats before the crash; \
                 sync_heartbeats_before_crash (a broadcast at the crash itself) contradicts it"
                    .into(),
            ));
        }
        if self.file.experiment.mode.values.contains(&Mode::Quic)
            && (lagging > 0 || faults.sync_heartbeats_before_crash || after_broadcast)
        {
            return Err(self.error_at(
                &faults.lagging_followers.span(),
                "lagging_followers, sync_heartbeats_before_crash and crash at = \"after-heartbeat-broadcast\" reach into the simulator; they are not available in quic mode".into(),
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

    /// Every combination of the common sections' swept values, in a fixed order (the
    /// order of the file's lists). A kind with axes of its own expands these further
    /// ([`expand`]) in its [`crate::kind::ExperimentKind::points`].
    pub fn points(&self) -> Vec<Point> {
        let f = &self.file;
        let mut points = Vec::new();
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
        // The in-flight bound only matters without a batch delay: a delayed point gets
        // one point, not one per bound.
        let points: Vec<Point> = points
            .into_iter()
            .flat_map(|point| {
                let values = if point.batch_delay_ms > 0.0 {
                    vec![f.raft.max_batches_in_flight.values[0]]
                } else {
                    f.raft.max_batches_in_flight.values.clone()
                };
                values.into_iter().map(move |v| Point { max_batches_in_flight: v, ..point.clone() })
            })
            .collect();
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
        let points = expand(points, &f.storage.fsync_ms.values, |p, v| p.fsync = v.clone());
        let points = expand(points, &f.network.loss.values, |p, v| p.loss = *v);
        let points = expand(points, &f.network.duplicate.values, |p, v| p.duplicate = *v);
        let points = expand(points, &f.network.reorder.values, |p, v| p.reorder = *v);
        let points = expand(points, &f.workload.clients.values, |p, v| p.clients = *v);
        let points = match (&f.workload.arrival, &f.workload.rate_per_s) {
            (Arrival::Poisson, Some(rates)) => expand(points, &rates.values, |p, v| p.rate_per_s = Some(*v)),
            _ => points,
        };
        // An invalid map is refused by the file's checks; until then it sets no retry.
        let retry = f
            .network
            .try_region_map()
            .and_then(Result::ok)
            .map(|map| (map.client_retry_timeout_ms() * 1e6).round() as Nanos);
        let points = expand(points, &[retry], |p, v| p.client_retry_ns = *v);
        let points = match &f.network.leader_region {
            Some(regions) => expand(points, &regions.values, |p, v| p.leader_region = Some(v.clone())),
            None => points,
        };
        expand(points, &f.workload.value_bytes.values, |p, v| p.value_bytes = *v)
    }
}

/// Each point times each value: the next axis of the cartesian product.
pub fn expand<T: Clone>(points: Vec<Point>, values: &[T], set: impl Fn(&mut Point, &T)) -> Vec<Point> {
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
