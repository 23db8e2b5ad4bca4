//! Seeded chaos runs: random crashes, restarts, partitions, one-way cuts, loss,
//! duplication and reordering under a closed-loop client load, then healing; with
//! [`DiskFaults`] on, disks that write slowly, stall, tear or lose the write in
//! progress at a crash, and return damaged records at recovery.
//!
//! One seed fixes everything (the network's parameters, the fault schedule and the
//! whole simulation), so a failing seed printed by a test is a complete reproduction.
//! A run passes when every checker reports nothing and the cluster is live again once
//! the faults heal: every client completes an operation it issued after healing.

use crate::protocols::LabProtocol;
use crate::workload::{Workload, WorkloadConfig};
use qlab_check::linearizability::{LinCheck, check_history};
use qlab_check::{Violation, check_observations};
use qlab_core::adversary::Faulty;
use qlab_core::adversary::{FaultyConfig, MaliciousNode};
use qlab_core::reads::ReadMode;
use qlab_core::{ClientId, Nanos, NodeId, ms};
use qlab_paxos::{Paxos, PaxosConfig};
use qlab_pbft::{Pbft, PbftConfig};
use qlab_raft::{Raft, RaftConfig};
use qlab_sim::{DiskFault, Latency, NetworkConfig, Sim};
use qlab_unreplicated::{Unreplicated, UnreplicatedConfig};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub nodes: u32,
    /// Closed-loop clients, of which the last `readers` only read.
    pub clients: u32,
    pub readers: u32,
    /// How long faults keep being injected.
    pub fault_phase_ns: Nanos,
    /// After healing, how long the cluster gets to serve every client again.
    pub recovery_deadline_ns: Nanos,
    /// At most this many replicas crashed or cut off at any one time (`None`: any
    /// number). A Byzantine-fault-tolerant protocol promises progress only while at
    /// most `f` replicas are faulty, so its chaos runs keep to that.
    pub faulty_at_most: Option<u32>,
    /// Which faults the run injects besides the seed-drawn loss, duplication and reordering.
    pub faults: FaultKinds,
    /// How Raft and Multi-Paxos serve reads (PBFT orders them like writes).
    pub read_mode: ReadMode,
    /// Each replica's clock runs at a seed-drawn rate within `1 ± clock_skew_ppm / 10⁶`
    /// (0: every clock exact, and no draw, so existing seeds replay unchanged).
    pub clock_skew_ppm: u64,
    /// The drift bound lease reads assume, in parts per million.
    pub lease_drift_bound_ppm: u64,
    /// What the replicas' disks do (`DiskFaults::NONE`: instant and perfect).
    pub disk: DiskFaults,
    /// Inject these faults instead of drawing them from the seed.
    pub schedule: Option<ChaosSchedule>,
    /// Which of the seed-drawn network faults the run keeps (all, unless a `chaos`
    /// experiment's seed drew a mix without some).
    pub network: NetworkMix,
    pub trace: bool,
}

/// The network faults a chaos run keeps of those its seed draws. The rates are drawn
/// whatever the mix (so a seed's later draws do not move), and a fault left out is
/// then set to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkMix {
    pub loss: bool,
    pub duplication: bool,
    pub reordering: bool,
}

impl NetworkMix {
    pub const ALL: NetworkMix = NetworkMix { loss: true, duplication: true, reordering: true };
}

/// The storage faults a chaos run draws, after Alagappan et al., "Protocol-Aware
/// Recovery for Consensus-Based Storage" (FAST 2018). All off draws nothing, so every
/// seed without them replays as before.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskFaults {
    /// Each seed draws a write time (exponential, mean 0.1–3 ms) and stalls (1 write in
    /// 200 takes 20–200 ms): a crash then often lands mid-write and loses or tears the
    /// write in progress, and a stalled disk holds its node's messages back.
    pub slow_writes: bool,
    /// A crash leaves one durable record (not the last: a damaged last record is a torn
    /// write) damaged with this probability; the node detects it at restart and refuses
    /// to start. At most `faulty_at_most` replicas (f, for a crash-fault protocol) are
    /// ever left so, since each is down for good.
    pub corrupt_probability: f64,
    /// A crash loses the node's last 1–3 records with this probability although the disk
    /// had acknowledged them ("fsync lies"). No protocol's proof survives it: only the
    /// counterexample cases turn it on.
    pub lie_probability: f64,
}

impl DiskFaults {
    pub const NONE: DiskFaults = DiskFaults { slow_writes: false, corrupt_probability: 0.0, lie_probability: 0.0 };
    /// What an honest protocol must survive: torn and lost unsynced writes, stalls and
    /// detected corruption.
    pub const HONEST: DiskFaults = DiskFaults { slow_writes: true, corrupt_probability: 0.05, lie_probability: 0.0 };
    /// The disk acknowledges writes it then loses, on every crash.
    pub const LYING: DiskFaults = DiskFaults { slow_writes: false, corrupt_probability: 0.0, lie_probability: 1.0 };

    fn any(&self) -> bool {
        *self != DiskFaults::NONE
    }
}

/// The kinds of fault a chaos run draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultKinds {
    /// Crashes and restarts.
    pub crashes: bool,
    /// Partitions and one-way cuts (and the heals between them).
    pub partitions: bool,
    /// Partitions cut the current leader off alone (Jepsen's "isolate the primary")
    /// rather than splitting the cluster at random: the fault leases must survive.
    pub isolate_leader: bool,
    /// Leadership transfers to a random replica (Raft; other protocols ignore them).
    /// Drawn only when on, so every seed without them replays as before.
    pub transfers: bool,
}

impl FaultKinds {
    pub const ALL: FaultKinds = FaultKinds { crashes: true, partitions: true, isolate_leader: false, transfers: false };
    pub const NONE: FaultKinds =
        FaultKinds { crashes: false, partitions: false, isolate_leader: false, transfers: false };
}

impl ChaosConfig {
    pub fn new(nodes: u32) -> Self {
        ChaosConfig {
            nodes,
            clients: 3,
            readers: 0,
            fault_phase_ns: ms(3_000),
            recovery_deadline_ns: ms(10_000),
            faulty_at_most: None,
            faults: FaultKinds::ALL,
            read_mode: ReadMode::Log,
            clock_skew_ppm: 0,
            lease_drift_bound_ppm: qlab_raft::DEFAULT_DRIFT_BOUND_PPM,
            disk: DiskFaults::NONE,
            schedule: None,
            network: NetworkMix::ALL,
            trace: false,
        }
    }
}

#[derive(Debug)]
pub struct ChaosOutcome {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub linearizability: LinCheck,
    /// Every client completed an operation issued after the faults healed.
    pub live_after_heal: bool,
    pub operations_completed: usize,
    pub faults_injected: usize,
    pub trace: Vec<String>,
    pub fault_log: Vec<String>,
    /// Every client operation, as the clients saw it.
    pub history: Vec<qlab_check::linearizability::HistoryOp>,
    /// Replica-to-replica messages sent.
    pub messages_sent: u64,
    /// The faults injected, replayable as [`ChaosConfig::schedule`].
    pub schedule: ChaosSchedule,
    /// Replica-to-replica messages sent, per kind.
    pub sent_by_kind: Vec<(&'static str, u64)>,
    /// What the honest replicas reported, in time order (what the checkers judged).
    pub observations: Vec<qlab_sim::Observation>,
    /// What the disks went through (all zero without [`DiskFaults`]).
    pub disk: qlab_sim::DiskStats,
    /// How often the replicas reached each of the protocol's coverage marks (every
    /// mark listed; empty where the driver does not count them, as in real mode).
    pub coverage: BTreeMap<&'static str, u64>,
}

/// What a sweep of chaos seeds adds up to when every seed passed.
#[derive(Debug, Default)]
pub struct SweepTotals {
    pub operations: usize,
    /// For each coverage mark, how many seeds reached it at least once.
    pub seeds_reaching: BTreeMap<&'static str, u64>,
}

impl SweepTotals {
    /// The marks no seed reached: situations this sweep's fault mix leaves untested.
    pub fn gaps(&self) -> Vec<&'static str> {
        self.seeds_reaching.iter().filter(|(_, seeds)| **seeds == 0).map(|(name, _)| *name).collect()
    }

    /// One line per mark: how many seeds reached it.
    pub fn coverage_report(&self) -> String {
        self.seeds_reaching.iter().map(|(name, seeds)| format!("{name}: {seeds} seeds\n")).collect()
    }
}

impl ChaosOutcome {
    /// The linearizability verdict as a row writes it: `yes`, `no` or `inconclusive`
    /// (the search ran out of budget).
    pub fn linearizable_word(&self) -> &'static str {
        match self.linearizability {
            LinCheck::Linearizable => "yes",
            LinCheck::Violation { .. } => "no",
            LinCheck::Inconclusive { .. } => "inconclusive",
        }
    }

    /// The name of the first invariant broken, a replica's or linearizability; empty
    /// when none was.
    pub fn first_invariant(&self) -> &'static str {
        match (self.violations.first(), &self.linearizability) {
            (Some(first), _) => first.invariant.name(),
            (None, LinCheck::Violation { .. }) => qlab_check::Invariant::Linearizability.name(),
            (None, _) => "",
        }
    }

    /// Messages of `kind` the replicas sent.
    pub fn sent(&self, kind: &str) -> u64 {
        self.sent_by_kind.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }
}

/// One fault a chaos run injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    Crash(NodeId),
    /// A crash that also leaves the node's disk damaged.
    CrashWithDiskFault(NodeId, DiskFault),
    Restart(NodeId),
    /// Two sides that cannot reach each other (replacing any earlier partition or cut).
    Partition(Vec<NodeId>, Vec<NodeId>),
    /// One direction of one link.
    Cut(NodeId, NodeId),
    /// Every link whole again (crashed replicas stay down).
    Heal,
    /// The current leader is told to hand its leadership to this replica.
    TransferLeader(NodeId),
}

impl FaultAction {
    fn apply<P: LabProtocol>(&self, sim: &mut Sim<P, P::Client>) {
        match self {
            FaultAction::Crash(node) => sim.crash(*node),
            FaultAction::CrashWithDiskFault(node, fault) => sim.crash_with_disk_fault(*node, *fault),
            FaultAction::Restart(node) => sim.restart(*node),
            FaultAction::Partition(a, b) => sim.partition(&[a.clone(), b.clone()]),
            FaultAction::Cut(from, to) => sim.set_link_blocked(*from, *to, true),
            FaultAction::Heal => sim.heal(),
            FaultAction::TransferLeader(to) => {
                if let Some(leader) = sim.leader() {
                    sim.admin(leader, qlab_core::AdminCommand::TransferLeadership { to: *to });
                }
            }
        }
    }
}

impl std::fmt::Display for FaultAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultAction::Crash(node) => write!(f, "crash {node}"),
            FaultAction::CrashWithDiskFault(node, DiskFault::LoseAcknowledged { records }) => {
                write!(f, "crash {node}, its disk losing its last {records} acknowledged record(s)")
            }
            FaultAction::CrashWithDiskFault(node, DiskFault::Corrupt { index }) => {
                write!(f, "crash {node}, its disk returning record {index} damaged")
            }
            FaultAction::Restart(node) => write!(f, "restart {node}"),
            FaultAction::Partition(a, b) => write!(f, "partition {a:?} | {b:?}"),
            FaultAction::Cut(from, to) => write!(f, "cut {from} -> {to}"),
            FaultAction::Heal => write!(f, "heal"),
            FaultAction::TransferLeader(to) => write!(f, "transfer leadership to {to}"),
        }
    }
}

/// A fault at a simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    pub at_ns: Nanos,
    pub action: FaultAction,
}

/// The faults of a chaos run and when everything healed: given back as
/// [`ChaosConfig::schedule`], the run repeats exactly; with events left out, it is the
/// same run with fewer faults (what shrinking a counterexample tries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChaosSchedule {
    pub events: Vec<FaultEvent>,
    pub heal_at_ns: Nanos,
}

impl ChaosOutcome {
    pub fn passed(&self) -> bool {
        self.is_safe() && self.live_after_heal
    }

    /// No checker found anything (liveness aside).
    pub fn is_safe(&self) -> bool {
        self.verdict().is_ok()
    }

    /// What the checkers concluded (liveness is `live_after_heal`'s, not a verdict's).
    pub fn verdict(&self) -> qlab_check::Verdict {
        use qlab_check::{Invariant, Verdict};
        let replicas = Verdict::of(&self.violations, false);
        match self.linearizability {
            LinCheck::Linearizable => replicas,
            LinCheck::Violation { .. } => replicas.and(Verdict::Unsafe([Invariant::Linearizability].into())),
            LinCheck::Inconclusive { .. } => replicas.and(Verdict::Inconclusive),
        }
    }
}

/// What a crash of `victim` does to its disk, drawn by `faults`' probabilities: lost
/// acknowledged records, or a damaged one that keeps it down (while fewer than
/// `refusals_at_most` replicas already are, and it has a record after the damaged one).
fn disk_fault<P: LabProtocol>(
    faults: &DiskFaults,
    rng: &mut ChaCha8Rng,
    sim: &Sim<P, P::Client>,
    victim: NodeId,
    refusals_at_most: u32,
) -> Option<DiskFault> {
    if !faults.any() {
        return None;
    }
    if faults.lie_probability > 0.0 && rng.random_bool(faults.lie_probability) {
        return Some(DiskFault::LoseAcknowledged { records: rng.random_range(1..=3) });
    }
    if faults.corrupt_probability > 0.0 && rng.random_bool(faults.corrupt_probability) {
        let refused = (0..sim.node_count()).filter(|id| sim.refuses_to_start(NodeId(*id)).is_some()).count() as u32;
        let records = sim.storage(victim).len();
        if refused < refusals_at_most && records >= 2 {
            return Some(DiskFault::Corrupt { index: rng.random_range(0..records - 1) });
        }
    }
    None
}

/// A random but seed-determined network for one run.
fn chaos_network(rng: &mut ChaCha8Rng) -> NetworkConfig {
    let mean_ms = rng.random_range(1.0..10.0);
    NetworkConfig {
        latency: Latency::Normal { ns_mean: mean_ms * 1e6, ns_stddev: mean_ms * 0.3e6, ns_floor: 10_000 },
        loss: rng.random_range(0.0..0.10),
        duplicate: rng.random_range(0.0..0.05),
        reorder: rng.random_range(0.0..0.20),
        reorder_delay_ns_max: ms(30),
    }
}

/// `honest` with the given nodes running the given attacks for the whole run.
fn with_malicious<C, A>(honest: C, malicious: impl Iterator<Item = (NodeId, A)>) -> FaultyConfig<C, A> {
    FaultyConfig {
        honest,
        malicious: malicious.map(|(node, attack)| MaliciousNode { node, attack, from_ns: 0, until_ns: None }).collect(),
    }
}

/// For the attack tests of a crash-fault protocol: the attack must be *caught*. Over
/// `seeds`, some run must be unsafe; the first must break one of `expected` (or be
/// non-linearizable, if that is expected) and replay from its seed to the same
/// violations. Returns a one-line account (how many seeds, the first violation).
pub fn caught(
    run: impl Fn(u64) -> ChaosOutcome,
    seeds: std::ops::Range<u64>,
    expected: &[qlab_check::Invariant],
    replay_command: impl Fn(u64) -> String,
) -> Result<String, String> {
    let count = seeds.end - seeds.start;
    let mut first = None;
    let mut unsafe_runs = 0;
    let mut panicked = Vec::new();
    for seed in seeds {
        match run_catching(|| run(seed)) {
            Ok(outcome) if !outcome.is_safe() => {
                unsafe_runs += 1;
                first.get_or_insert((seed, outcome));
            }
            Ok(_) => {}
            Err(panic) => panicked.push(format!("seed {seed} panicked: {panic}\n  replay: {}", replay_command(seed))),
        }
    }
    // A panic is an error, not a catch: it is reported whatever the other seeds found.
    if !panicked.is_empty() {
        return Err(format!("{} of {count} seeds ended in an error:\n{}", panicked.len(), panicked.join("\n")));
    }
    let (seed, outcome) = first.ok_or(format!("no violation in {count} seeds"))?;
    let replay = replay_command(seed);
    let first_violation = confirm_violation(&run, seed, &outcome, expected, &replay)?;
    Ok(format!("unsafe in {unsafe_runs} of {count} seeds; first seed {seed}: {first_violation}\n  replay: {replay}"))
}

/// The violations of `outcome`, as printed.
fn shown(outcome: &ChaosOutcome) -> Vec<String> {
    outcome.violations.iter().map(ToString::to_string).collect()
}

/// `outcome` (the run of `seed`) broke one of `expected`, and running `seed` again gives
/// the same run. Returns its first violation (or the linearizability verdict).
fn confirm_violation(
    run: &impl Fn(u64) -> ChaosOutcome,
    seed: u64,
    outcome: &ChaosOutcome,
    expected: &[qlab_check::Invariant],
    replay: &str,
) -> Result<String, String> {
    let broke_expected = outcome.violations.iter().any(|v| expected.contains(&v.invariant))
        || (expected.contains(&qlab_check::Invariant::Linearizability)
            && outcome.linearizability != LinCheck::Linearizable);
    if !broke_expected {
        return Err(format!(
            "seed {seed}: expected one of {expected:?}, got {:?} / {:?}\n  replay: {replay}",
            shown(outcome),
            outcome.linearizability
        ));
    }
    let again = run(seed);
    if shown(&again) != shown(outcome) || again.operations_completed != outcome.operations_completed {
        return Err(format!("seed {seed} did not replay to the same run\n  replay: {replay}"));
    }
    Ok(shown(outcome).into_iter().next().unwrap_or_else(|| format!("{:?}", outcome.linearizability)))
}

/// For the ablation tests: with a safety rule switched off, some seed in `seeds` must
/// break one of `expected`; the search stops at the first that does. That seed must
/// replay to the same violations, and `control` (the same seed with the rule on) must
/// be safe, so the rule, not the seed, is what made the difference. Returns a one-line
/// account.
pub fn caught_first(
    run: impl Fn(u64) -> ChaosOutcome,
    control: impl Fn(u64) -> ChaosOutcome,
    seeds: std::ops::Range<u64>,
    expected: &[qlab_check::Invariant],
    replay_command: impl Fn(u64) -> String,
) -> Result<String, String> {
    let count = seeds.end - seeds.start;
    let start = seeds.start;
    let (seed, outcome) = seeds
        .map(|seed| (seed, run(seed)))
        .find(|(_, outcome)| !outcome.is_safe())
        .ok_or(format!("no violation in {count} seeds"))?;
    let replay = replay_command(seed);
    let first_violation = confirm_violation(&run, seed, &outcome, expected, &replay)?;
    let honest = control(seed);
    if !honest.is_safe() {
        return Err(format!("seed {seed} is unsafe with the rule on too: {:?}", shown(&honest)));
    }
    Ok(format!("caught at seed {seed} ({} seeds tried): {first_violation}\n  replay: {replay}", seed - start + 1))
}

/// What a chaos run draws for a protocol from its seed: the protocol's knobs (window,
/// batching, message sizes), and for the compaction runs small snapshot or checkpoint
/// thresholds. One impl per protocol; the runners below are generic.
pub trait ChaosKnobs: LabProtocol {
    /// The protocol's configuration for a chaos run, drawn from `rng` (the run's own
    /// stream, just after the network's draws).
    fn chaos_config(config: &ChaosConfig, rng: &mut ChaCha8Rng) -> Self::Config;

    /// Switch on log compaction at small, seed-drawn thresholds (drawn apart from the
    /// run's stream, so the network and knobs stay those of the plain run).
    fn compact(config: &mut Self::Config, seed: u64) {
        let _ = (config, seed);
    }

    /// Give the drawn configuration the safety rules `file` switches off (its
    /// `ablate`), so a `chaos` experiment can show a rule's absence under the same draws.
    fn keep_rules_of(drawn: &mut Self::Config, file: &Self::Config);
}

/// Chaos runs send each command at once where the seed drew no batch delay
/// (`max_batches_in_flight = 0`), as they did before adaptive batching, so every seed
/// of the chaos tests, the soaks and the attack runs replays as it was recorded; the
/// `batching_chaos` sweep runs adaptive batching under the same faults.
const UNBATCHED: usize = 0;

impl ChaosKnobs for Raft {
    fn keep_rules_of(drawn: &mut RaftConfig, file: &RaftConfig) {
        drawn.ablate = file.ablate;
    }

    /// Seed-chosen batching: small append batches make acknowledgements cover old-term
    /// entries without the new leader's no-op, the window in which the Figure 8 rule
    /// matters.
    fn chaos_config(config: &ChaosConfig, rng: &mut ChaCha8Rng) -> RaftConfig {
        RaftConfig {
            election_timeout_ns_min: ms(150),
            election_timeout_ns_max: ms(300),
            heartbeat_interval_ns: ms(50),
            max_entries_per_append: [1, 2, 4, 16][rng.random_range(0..4usize)],
            check_quorum: true,
            // Half the seeds batch commands (exercising the leader's flush path).
            batch_delay_ns: [0, 0, ms(1), ms(3)][rng.random_range(0..4usize)],
            max_batches_in_flight: UNBATCHED,
            read_mode: config.read_mode,
            lease_drift_bound_ppm: config.lease_drift_bound_ppm,
            ..RaftConfig::default()
        }
    }

    /// The mechanisms production deployments run with: a snapshot every 2 to 25 applied
    /// entries, `InstallSnapshot` chunks of 8 to 256 bytes (so a transfer takes many
    /// messages and crashes land in the middle of one), PreVote in half the seeds.
    /// Leadership transfers join the faults when `config.faults.transfers` is on.
    fn compact(raft: &mut RaftConfig, seed: u64) {
        let mut knobs = ChaCha8Rng::seed_from_u64(seed ^ 0x5a4e_5000_0000_0000);
        raft.snapshot_every_entries = [2, 5, 10, 25][knobs.random_range(0..4usize)];
        if knobs.random_bool(0.5) {
            raft.snapshot_every_bytes = [64, 512][knobs.random_range(0..2usize)];
        }
        raft.snapshot_chunk_bytes = [8, 32, 256][knobs.random_range(0..3usize)];
        raft.pre_vote = knobs.random_bool(0.5);
    }
}

impl ChaosKnobs for Paxos {
    fn keep_rules_of(drawn: &mut PaxosConfig, file: &PaxosConfig) {
        drawn.ablate = file.ablate;
    }

    /// Seed-chosen window, batching and message sizes: a window of 1 serializes slots;
    /// wider ones leave gaps for a new leader to fill.
    fn chaos_config(config: &ChaosConfig, rng: &mut ChaCha8Rng) -> PaxosConfig {
        PaxosConfig {
            leader_timeout_ns_min: ms(150),
            leader_timeout_ns_max: ms(300),
            heartbeat_interval_ns: ms(50),
            window_slots: [1, 4, 64][rng.random_range(0..3usize)],
            max_commands_per_slot: [1, 4, 64][rng.random_range(0..3usize)],
            max_values_per_message: [1, 2, 16][rng.random_range(0..3usize)],
            check_quorum: true,
            batch_delay_ns: [0, 0, ms(1), ms(3)][rng.random_range(0..4usize)],
            max_batches_in_flight: UNBATCHED,
            read_mode: config.read_mode,
            lease_drift_bound_ppm: config.lease_drift_bound_ppm,
            ..PaxosConfig::default()
        }
    }

    /// Checkpoints every 2 to 25 applied slots, so promises carry checkpoints and
    /// learners catch up by state transfer many times per run, in small chunks so a
    /// transfer spans many messages and crashes land inside it.
    fn compact(paxos: &mut PaxosConfig, seed: u64) {
        let mut knobs = ChaCha8Rng::seed_from_u64(seed ^ 0x5a4e_5000_0000_0000);
        paxos.checkpoint_every_slots = [2, 5, 10, 25][knobs.random_range(0..4usize)];
        paxos.state_chunk_bytes = [8, 32, 256][knobs.random_range(0..3usize)];
    }
}

impl ChaosKnobs for Pbft {
    fn keep_rules_of(drawn: &mut PbftConfig, file: &PbftConfig) {
        drawn.ablate = file.ablate;
    }

    /// Checkpoints every 4 or 8 sequence numbers, so garbage collection, watermarks and
    /// state transfer happen many times per run; seed-chosen batching. (PBFT always
    /// checkpoints: its compaction is part of the protocol.)
    fn chaos_config(config: &ChaosConfig, rng: &mut ChaCha8Rng) -> PbftConfig {
        let mut pbft = PbftConfig::with_keys(crate::protocols::PBFT_KEY_SEED, config.nodes, config.clients as u64);
        pbft.view_change_timeout_ns = ms(200);
        pbft.checkpoint_interval = [4, 8][rng.random_range(0..2usize)];
        pbft.log_window = pbft.checkpoint_interval * [2, 4][rng.random_range(0..2usize)];
        pbft.max_batch = [1, 4, 16][rng.random_range(0..3usize)];
        pbft.batch_delay_ns = [0, 0, ms(1), ms(3)][rng.random_range(0..4usize)];
        pbft.max_batches_in_flight = UNBATCHED;
        pbft
    }
}

impl ChaosKnobs for Unreplicated {
    /// No rules to switch off.
    fn keep_rules_of(_drawn: &mut UnreplicatedConfig, _file: &UnreplicatedConfig) {}

    /// Nothing to draw: the baseline has no knobs.
    fn chaos_config(_config: &ChaosConfig, _rng: &mut ChaCha8Rng) -> UnreplicatedConfig {
        UnreplicatedConfig::default()
    }
}

/// The run's generator, the network drawn from it, and the protocol's knobs drawn next:
/// one seed, the same draws for every variant of a protocol's run.
pub fn chaos_setup<P: ChaosKnobs>(seed: u64, config: &ChaosConfig) -> (P::Config, NetworkConfig, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a0_5000_0000_0000);
    let mut network = chaos_network(&mut rng);
    let mix = config.network;
    if !mix.loss {
        network.loss = 0.0;
    }
    if !mix.duplication {
        network.duplicate = 0.0;
    }
    if !mix.reordering {
        network.reorder = 0.0;
    }
    let protocol = P::chaos_config(config, &mut rng);
    (protocol, network, rng)
}

/// `P` under chaos with its seed-drawn knobs.
pub fn run_protocol_chaos<P: ChaosKnobs>(seed: u64, config: &ChaosConfig) -> ChaosOutcome {
    run_protocol_chaos_with::<P>(seed, config, |_| {})
}

/// `P` under chaos with its seed-drawn knobs, then `adjust`ed (safety rules switched
/// off, compaction on: `|c| Raft::compact(c, seed)`): the same network, knobs and
/// faults as [`run_protocol_chaos`] for the same seed.
pub fn run_protocol_chaos_with<P: ChaosKnobs>(
    seed: u64,
    config: &ChaosConfig,
    adjust: impl FnOnce(&mut P::Config),
) -> ChaosOutcome {
    let (mut protocol, network, rng) = chaos_setup::<P>(seed, config);
    adjust(&mut protocol);
    run_chaos::<P>(seed, config, protocol, network, rng)
}

/// [`run_protocol_chaos_with`] with the replicas in `malicious` running their attacks
/// from the start. Crash and partition faults come out of `config.faulty_at_most`, so
/// the caller decides whether the malicious replicas use up the f a protocol tolerates.
pub fn run_attack_chaos<P: ChaosKnobs, A: Clone>(
    seed: u64,
    config: &ChaosConfig,
    adjust: impl FnOnce(&mut P::Config),
    malicious: &[(NodeId, A)],
) -> ChaosOutcome
where
    Faulty<P, A>: LabProtocol<Config = FaultyConfig<P::Config, A>>,
{
    let (mut protocol, network, rng) = chaos_setup::<P>(seed, config);
    adjust(&mut protocol);
    let faulty = with_malicious(protocol, malicious.iter().cloned());
    run_chaos::<Faulty<P, A>>(seed, config, faulty, network, rng)
}

/// Every replica in `nodes` running `attack` (what the crash-fault attack tests use).
pub fn each_running<A: Clone>(attack: &A, nodes: &[NodeId]) -> Vec<(NodeId, A)> {
    nodes.iter().map(|node| (*node, attack.clone())).collect()
}

/// A chaos run's clients: three keys, so operations collide; reads, writes and
/// compare-and-sets; 5 ms between a client's operations; the last `readers` only read.
pub fn chaos_workload(config: &ChaosConfig) -> WorkloadConfig {
    WorkloadConfig {
        clients: config.clients,
        keys: 3,
        value_bytes: 16,
        think_ns: ms(5),
        read_ratio: 0.3,
        cas_ratio: 0.3,
        readers: config.readers,
        arrival_rate_per_s: None,
    }
}

/// One chaos run of `P`; `rng` continues the seed's stream to draw the faults.
pub fn run_chaos<P: LabProtocol>(
    seed: u64,
    config: &ChaosConfig,
    protocol_config: P::Config,
    network: NetworkConfig,
    mut rng: ChaCha8Rng,
) -> ChaosOutcome {
    let n = config.nodes;
    // The disk's draws have a stream of their own: they are made only when disk faults
    // are on, and the same seed then draws the same network, knobs and fault times.
    let mut disk_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd15c_fa17_0000_0000);
    let fsync = config
        .disk
        .slow_writes
        .then(|| Latency::Exponential { ns_mean: disk_rng.random_range(0.1..3.0) * 1e6, ns_floor: 20_000 });
    let mut sim: Sim<P, P::Client> = Sim::build(protocol_config, n, network, seed, 0, fsync);
    if config.disk.slow_writes {
        sim.set_fsync_spikes(0.005, Latency::Uniform { ns_min: ms(20), ns_max: ms(200) });
    }
    // Replicas a damaged disk may keep down for good, as long as the rest can go on.
    let refusals_at_most = config.faulty_at_most.unwrap_or((n.saturating_sub(1)) / 2);
    if config.trace {
        sim.enable_trace();
    }
    for c in 0..config.clients {
        sim.add_client(P::client(sim.config(), ClientId(c as u64), n, ms(100)));
    }
    if config.clock_skew_ppm > 0 {
        let skew = config.clock_skew_ppm as f64 / 1e6;
        for id in (0..n).map(NodeId) {
            sim.set_clock_rate(id, 1.0 + rng.random_range(-skew..=skew));
        }
    }
    let mut workload = Workload::new(chaos_workload(config), seed);
    workload.start_all_at(0);
    // Some seeds churn fast (a fault every ~60 ms), some let the cluster settle.
    let fault_gap_ns_max = [ms(100), ms(300), ms(1_000)][rng.random_range(0..3usize)];
    let mut fault_log = Vec::new();
    let mut at: Nanos = 0;
    // Nodes on the cut-off side of the current partition or cuts (cleared by a heal).
    let mut isolated: std::collections::BTreeSet<NodeId> = Default::default();
    let budget = config.faulty_at_most.unwrap_or(n);
    let mut schedule = Vec::new();
    let mut inject = |sim: &mut Sim<P, P::Client>, action: FaultAction| {
        action.apply(sim);
        fault_log.push(format!("{:>10.3}ms {action}", qlab_core::nanos_to_ms(sim.now())));
        schedule.push(FaultEvent { at_ns: sim.now(), action });
    };
    if let Some(given) = &config.schedule {
        // An explicit schedule (a replay, or a shrunk one): no draws.
        for event in &given.events {
            workload.run(&mut sim, event.at_ns, |_, _| {}, |_| false);
            inject(&mut sim, event.action.clone());
        }
        workload.run(&mut sim, given.heal_at_ns, |_, _| {}, |_| false);
        at = config.fault_phase_ns;
    }
    while at < config.fault_phase_ns {
        at += rng.random_range(ms(20)..fault_gap_ns_max);
        workload.run(&mut sim, at, |_, _| {}, |_| false);
        let up = sim.up_nodes();
        let down: Vec<NodeId> = (0..n).map(NodeId).filter(|id| !sim.is_up(*id)).collect();
        let impaired = |extra: &[NodeId]| -> u32 {
            let mut all: std::collections::BTreeSet<NodeId> = isolated.clone();
            all.extend(down.iter().copied());
            all.extend(extra.iter().copied());
            all.len() as u32
        };
        if config.faults.transfers && rng.random_bool(0.25) {
            inject(&mut sim, FaultAction::TransferLeader(NodeId(rng.random_range(0..n))));
            continue;
        }
        let action = rng.random_range(0..10u32);
        let allowed = match action {
            0..=4 => config.faults.crashes,
            5..=7 => config.faults.partitions,
            _ => config.faults.partitions || config.faults.crashes,
        };
        if !allowed {
            continue;
        }
        let line = match action {
            0..=2 if !up.is_empty() => {
                // Bias towards the leader: its crash is what exercises elections.
                let victim = match sim.leader() {
                    Some(leader) if rng.random_bool(0.6) => leader,
                    _ => up[rng.random_range(0..up.len())],
                };
                if impaired(&[victim]) > budget {
                    continue;
                }
                match disk_fault(&config.disk, &mut disk_rng, &sim, victim, refusals_at_most) {
                    Some(fault) => FaultAction::CrashWithDiskFault(victim, fault),
                    None => FaultAction::Crash(victim),
                }
            }
            3..=4 if !down.is_empty() => FaultAction::Restart(down[rng.random_range(0..down.len())]),
            5..=6 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                match sim.leader() {
                    Some(leader) if config.faults.isolate_leader => {
                        a.push(leader);
                        b.extend((0..n).map(NodeId).filter(|id| *id != leader));
                    }
                    _ => {
                        for id in (0..n).map(NodeId) {
                            if rng.random_bool(0.5) { a.push(id) } else { b.push(id) }
                        }
                    }
                }
                let smaller = if a.len() <= b.len() { a.clone() } else { b.clone() };
                if config.faulty_at_most.is_some() {
                    // A partition replaces the previous one: only the new cut-off side counts.
                    let mut after: std::collections::BTreeSet<NodeId> = down.iter().copied().collect();
                    after.extend(smaller.iter().copied());
                    if after.len() as u32 > budget {
                        continue;
                    }
                }
                isolated = smaller.into_iter().collect();
                FaultAction::Partition(a, b)
            }
            // A one-node cluster has no link to cut (the draw is skipped, not redrawn).
            7 if n < 2 => continue,
            7 => {
                let from = NodeId(rng.random_range(0..n));
                let to = NodeId((from.0 + rng.random_range(1..n)) % n);
                if impaired(&[to]) > budget {
                    continue;
                }
                isolated.insert(to);
                FaultAction::Cut(from, to)
            }
            _ => {
                isolated.clear();
                FaultAction::Heal
            }
        };
        inject(&mut sim, line);
    }
    let heal_at_ns = sim.now();
    let faults = schedule.len();
    // Heal everything: network whole again, every node back up.
    sim.heal();
    for id in (0..n).map(NodeId) {
        sim.restart(id);
    }
    let healed_at = sim.now();
    fault_log.push(format!("{:>10.3}ms heal all, restart all", qlab_core::nanos_to_ms(healed_at)));
    for id in (0..n).map(NodeId) {
        if let Some(index) = sim.refuses_to_start(id) {
            fault_log.push(format!(
                "{:>10.3}ms {id} refuses to start: record {index} damaged",
                qlab_core::nanos_to_ms(healed_at)
            ));
        }
    }
    let mut served_after_heal = vec![false; config.clients as usize];
    let history_len_at_heal = workload.history.len();
    let deadline = healed_at + config.recovery_deadline_ns;
    let mut served = |history: &[qlab_check::linearizability::HistoryOp]| {
        for op in &history[history_len_at_heal..] {
            if op.invoked >= healed_at && op.completed.is_some() {
                served_after_heal[op.client as usize] = true;
            }
        }
        served_after_heal.iter().all(|s| *s)
    };
    let mut live = false;
    let mut check_at = healed_at;
    while sim.now() < deadline {
        check_at = (check_at + ms(100)).min(deadline);
        workload.run(&mut sim, check_at, |_, _| {}, |_| false);
        if served(&workload.history) {
            live = true;
            break;
        }
    }
    // Let the last commits reach every replica before judging.
    workload.stop();
    let settle = sim.now() + ms(1_000);
    workload.run(&mut sim, settle, |_, _| {}, |_| false);

    let violations = check_observations(&sim.observations);
    let linearizability = check_history(&workload.history);
    ChaosOutcome {
        seed,
        violations,
        linearizability,
        live_after_heal: live,
        operations_completed: workload.history.iter().filter(|o| o.completed.is_some()).count(),
        faults_injected: faults,
        trace: sim.trace().to_vec(),
        fault_log,
        history: workload.history,
        messages_sent: sim.stats.messages_sent,
        schedule: ChaosSchedule { events: schedule, heal_at_ns },
        sent_by_kind: sim.stats.sent_by_kind.clone(),
        observations: std::mem::take(&mut sim.observations),
        disk: sim.disk_stats.clone(),
        coverage: P::coverage_marks()
            .iter()
            .map(|mark| (mark.name, sim.coverage.get(mark.name).copied().unwrap_or(0)))
            .collect(),
    }
}

/// Run `run` over `seeds` and report: the operations completed in all, or the first
/// failing seeds, each with the command that replays it with a full trace (the test
/// binary `test_binary` has a `replay_one_seed` test reading `QLAB_CHAOS_SEED` and
/// `QLAB_CHAOS_NODES`).
pub fn sweep(
    run: impl Fn(u64, &ChaosConfig) -> ChaosOutcome,
    config: &ChaosConfig,
    seeds: std::ops::Range<u64>,
    test_binary: &str,
) -> Result<SweepTotals, String> {
    let count = seeds.end - seeds.start;
    let mut failures = Vec::new();
    let mut totals = SweepTotals::default();
    let replay = |seed: u64| {
        format!(
            "QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES={} cargo test --release -p qlab-lab --test {test_binary} \
             replay_one_seed -- --ignored --nocapture",
            config.nodes
        )
    };
    for seed in seeds {
        let outcome = match run_catching(|| run(seed, config)) {
            Ok(outcome) => outcome,
            Err(panic) => {
                failures.push(format!("seed {seed}: error: the run panicked: {panic}\n  replay: {}", replay(seed)));
                continue;
            }
        };
        totals.operations += outcome.operations_completed;
        for (name, times) in &outcome.coverage {
            *totals.seeds_reaching.entry(name).or_default() += u64::from(*times > 0);
        }
        if !outcome.passed() {
            let shown: Vec<String> = outcome.violations.iter().take(3).map(ToString::to_string).collect();
            failures.push(format!(
                "seed {seed}: {} violation(s), first {shown:?}; linearizability {:?}; live after heal {}\n  replay: {}",
                outcome.violations.len(),
                outcome.linearizability,
                outcome.live_after_heal,
                replay(seed)
            ));
        }
    }
    if failures.is_empty() {
        Ok(totals)
    } else {
        let shown: Vec<&str> = failures.iter().take(10).map(String::as_str).collect();
        Err(format!(
            "{} of {count} seeds failed ({} nodes); the first:\n{}",
            failures.len(),
            config.nodes,
            shown.join("\n")
        ))
    }
}

/// `run()`, or the message it panicked with: a seed that panics (an assertion in a
/// protocol, an event storm) is a finding about that seed, and a sweep records it and
/// goes on, keeping what the seeds before it found.
pub fn run_catching<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// The body of every chaos test binary's `replay_one_seed`: the seed and node count
/// from the environment, a full trace printed, and the outcome asserted.
pub fn replay_from_env(run: impl Fn(u64, &ChaosConfig) -> ChaosOutcome, config: ChaosConfig) {
    assert!(replay_and_print(run, config).passed());
}

/// The seed from `QLAB_CHAOS_SEED` run with a full trace, everything printed: the body
/// of the attack tests' `replay_one_seed` (whose runs may be meant to fail).
pub fn replay_and_print(run: impl Fn(u64, &ChaosConfig) -> ChaosOutcome, mut config: ChaosConfig) -> ChaosOutcome {
    let seed: u64 = std::env::var("QLAB_CHAOS_SEED").expect("QLAB_CHAOS_SEED").parse().expect("a u64 seed");
    config.trace = true;
    let outcome = run(seed, &config);
    println!("faults:\n{}", outcome.fault_log.join("\n"));
    println!("trace:\n{}", outcome.trace.join("\n"));
    println!(
        "violations: {:?}\nlinearizability: {:?}\nlive after heal: {}",
        outcome.violations, outcome.linearizability, outcome.live_after_heal
    );
    outcome
}

/// The attack a replay asks for (`QLAB_ATTACK`, an attack name), parsed by `parse`.
pub fn attack_from_env<A>(parse: impl Fn(&str, &qlab_core::adversary::AttackParams) -> Option<A>) -> A {
    let name = std::env::var("QLAB_ATTACK").expect("QLAB_ATTACK");
    parse(&name, &Default::default()).unwrap_or_else(|| panic!("unknown attack {name:?}"))
}

/// The node count a replay asks for (`QLAB_CHAOS_NODES`), or `default`.
pub fn nodes_from_env(default: u32) -> u32 {
    std::env::var("QLAB_CHAOS_NODES").map_or(default, |v| v.parse().expect("a node count"))
}

/// Shrink a failing schedule to one from which no single fault can be left out and
/// still fail (`fails` decides what counts as failing, e.g. "the same invariant
/// broken"). Delta debugging in the manner of Zeller's ddmin: try leaving out halves,
/// quarters, ... of the faults, keep any removal after which the run still fails, and
/// end with single faults. Every candidate is a full deterministic run of `run`.
/// Returns the shrunk schedule and how many runs the search took.
pub fn shrink(
    run: impl Fn(&ChaosSchedule) -> ChaosOutcome,
    schedule: &ChaosSchedule,
    fails: impl Fn(&ChaosOutcome) -> bool,
) -> (ChaosSchedule, usize) {
    let mut current = schedule.clone();
    let mut runs = 0;
    let mut chunk = current.events.len().div_ceil(2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.events.len() {
            let end = (start + chunk).min(current.events.len());
            let mut candidate = current.clone();
            candidate.events.drain(start..end);
            runs += 1;
            if fails(&run(&candidate)) {
                current = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            return (current, runs);
        }
        if !removed_any || chunk > 1 {
            chunk = (chunk / 2).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 42: a seed that panics is reported as an error with its replay command,
    /// and the sweep goes on to the seeds after it (here two of them panic).
    #[test]
    fn a_panicking_seed_is_an_error_and_the_sweep_goes_on() {
        let config = ChaosConfig { faults: FaultKinds::NONE, ..ChaosConfig::new(3) };
        let run = |seed: u64, config: &ChaosConfig| {
            assert!(seed != 1 && seed != 3, "a protocol assertion at seed {seed}");
            run_protocol_chaos::<Raft>(seed, config)
        };
        let report = sweep(run, &config, 0..4, "raft_chaos").unwrap_err();
        assert!(report.starts_with("2 of 4 seeds failed"), "{report}");
        for seed in [1, 3] {
            assert!(
                report.contains(&format!("seed {seed}: error: the run panicked: a protocol assertion at seed {seed}")),
                "{report}"
            );
            assert!(report.contains(&format!("QLAB_CHAOS_SEED={seed} QLAB_CHAOS_NODES=3")), "{report}");
        }
        assert!(sweep(run, &config, 4..6, "raft_chaos").is_ok(), "the other seeds pass");
    }
}
