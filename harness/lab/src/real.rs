//! Real mode glue: run one node from a cluster file (the `qlab node` command).

use crate::error::{LabError, Result};
use crate::protocol_list::ProtocolName;
use crate::protocols::LabProtocol;
use qlab_core::adversary::{Faulty, FaultyConfig, MaliciousNode};
use qlab_net::cluster::ClusterFile;
use qlab_net::runtime::run_node;
use std::path::Path;

/// Run node `id` of the cluster described by `cluster_path` until it is stopped.
pub fn node_main(cluster_path: &Path, id: u32) -> Result<()> {
    let file = ClusterFile::load(cluster_path)?;
    let base = cluster_path.parent().unwrap_or(Path::new("."));
    // One thread per node: a replica is one sequential state machine, and on a small
    // machine running a whole cluster more threads per process mostly add cross-thread
    // wake-ups.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::Usage(format!("starting the async runtime: {e}")))?;
    let Some(protocol) = ProtocolName::from_name(&file.protocol) else {
        let known: Vec<&str> = ProtocolName::ALL.iter().map(|p| p.name()).collect();
        return Err(LabError::Usage(format!(
            "{}: unknown protocol {:?}, expected one of {known:?}",
            cluster_path.display(),
            file.protocol
        )));
    };
    with_protocol!(protocol, P => run_replica::<P>(&runtime, cluster_path, &file, base, id)?);
    Ok(())
}

/// Run node `id` as the cluster file says: the honest protocol, or, if the file names
/// it malicious, the honest code wrapped in its attack (the same wire messages, its own
/// keys only).
fn run_replica<P: LabProtocol>(
    runtime: &tokio::runtime::Runtime,
    cluster_path: &Path,
    file: &ClusterFile,
    base: &Path,
    id: u32,
) -> Result<()> {
    let config = node_config::<P>(file, base, id)?;
    match malicious_entry::<P>(cluster_path, file, id)? {
        None => runtime.block_on(run_node::<P>(config))?,
        Some(entry) => {
            eprintln!(
                "node {id}: malicious, running {:?} from {} ms to {}",
                entry.attack,
                entry.from_ns as f64 / 1e6,
                entry.until_ns.map_or("the end".to_string(), |t| format!("{} ms", t as f64 / 1e6))
            );
            let honest = config.protocol.clone();
            let faulty = config.with_protocol(FaultyConfig { honest, malicious: vec![entry] });
            runtime.block_on(run_node::<Faulty<P, P::Attack>>(faulty))?
        }
    }
    Ok(())
}

/// Node `id`'s entry among the cluster file's malicious replicas, read as `P`'s attack;
/// an entry that is not one is an error naming the file and the entry.
fn malicious_entry<P: LabProtocol>(
    cluster_path: &Path,
    file: &ClusterFile,
    id: u32,
) -> Result<Option<MaliciousNode<P::Attack>>> {
    let mut mine = None;
    for (index, value) in file.malicious.iter().enumerate() {
        let entry: MaliciousNode<P::Attack> = value.clone().try_into().map_err(|e: toml::de::Error| {
            LabError::Usage(format!(
                "{}: malicious entry {index} is not a {} attack: {}",
                cluster_path.display(),
                P::NAME,
                e.message()
            ))
        })?;
        if entry.node.0 as usize >= file.nodes.len() {
            return Err(LabError::Usage(format!(
                "{}: malicious entry {index} names node {}, but the cluster has {} nodes",
                cluster_path.display(),
                entry.node.0,
                file.nodes.len()
            )));
        }
        if entry.node.0 == id {
            mine = Some(entry);
        }
    }
    Ok(mine)
}

/// Node `id`'s configuration, with its signing secret (if the file names one) put
/// back into the protocol configuration.
fn node_config<P: LabProtocol>(
    file: &ClusterFile,
    base: &Path,
    id: u32,
) -> Result<qlab_net::runtime::NodeConfig<P::Config>> {
    let mut config = file.node_config::<P::Config>(base, id)?;
    if let Some((path, secret)) = file.signing_key(base, id)? {
        P::install_node_secret(&mut config.protocol, id, &secret)
            .map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?;
    }
    Ok(config)
}

use qlab_check::linearizability::HistoryOp;
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
        driver.submit(client, Request { client: ClientId(client as u64), seq, op, signature: Vec::new() });
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
use qlab_net::netns::Netem;
use qlab_net::runtime::{Control, LinkFaults, Wire};

use std::time::Duration;

/// What a message type needs to cross the wire (serde both ways, between tasks).
pub trait Wired: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Wired for T {}

/// The async runtime real-mode trials run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::Usage(format!("starting the async runtime: {e}")))
}

/// A fresh local cluster of protocol `P` for one trial, its processes started.
pub fn start_cluster<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &Path,
) -> Result<LocalCluster> {
    let mut cluster = create_cluster::<P>(experiment, point, seed, node_binary)?;
    cluster.start_all()?;
    Ok(cluster)
}

/// Start a fresh local cluster of `P` for one trial, run `measure` on it on the real-mode
/// runtime, and stop every process it started, whatever `measure` returned.
pub fn on_fresh_cluster<P: LabProtocol, T>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &Path,
    measure: impl AsyncFnOnce(&mut LocalCluster) -> Result<T>,
) -> Result<T> {
    let mut cluster = start_cluster::<P>(experiment, point, seed, node_binary)?;
    let outcome = runtime()?.block_on(measure(&mut cluster));
    cluster.stop_all();
    outcome
}

/// A fresh local cluster of protocol `P` for one trial, its files written and its
/// processes not yet started (so the caller can name malicious replicas first). Cluster
/// time starts now.
pub fn create_cluster<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &Path,
) -> Result<LocalCluster> {
    create_cluster_with::<P>(experiment, point, seed, node_binary, P::config(point, &experiment.file))
}

/// [`create_cluster`] with the replicas configured by `protocol_config` rather than by
/// the point (a chaos run draws its knobs from the seed).
pub fn create_cluster_with<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &Path,
    mut protocol_config: P::Config,
) -> Result<LocalCluster> {
    let dir = qlab_net::cluster::fresh_cluster_dir(experiment.name());
    let node_secrets = P::take_node_secrets(&mut protocol_config);
    let config =
        toml::Value::try_from(protocol_config).map_err(|e| LabError::Usage(format!("{} config: {e}", P::NAME)))?;
    let storage = experiment.file.cluster.storage.clone();
    let network = &experiment.file.network;
    let mut cluster = if network.netns || network.netem {
        let netem = network.netem.then_some(Netem {
            delay_ms: network.quic_delay_ms,
            jitter_ms: network.netem_jitter_ms,
            loss: point.loss,
        });
        LocalCluster::create_in_namespaces(&dir, node_binary, P::NAME, config, point.nodes, storage, seed, netem)?
    } else {
        LocalCluster::create(&dir, node_binary, P::NAME, config, point.nodes, storage, seed)?
    };
    cluster.remove_dir_on_drop();
    if !node_secrets.is_empty() {
        cluster.write_signing_keys(&node_secrets)?;
    }
    Ok(cluster)
}

/// What the nodes' transports refused or shed in a trial, from each node's counters at
/// the end (cumulative since it started): the sum over the nodes and the largest at
/// any one node, so a reader of a real-mode row sees that an attacker or an overload
/// was there. The simulator has no transport to refuse anything: its rows leave these
/// empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportTrouble {
    pub malformed_frames: u64,
    pub malformed_frames_node_max: u64,
    pub dropped_sends: u64,
    pub dropped_sends_node_max: u64,
    pub refused_connections: u64,
    pub refused_connections_node_max: u64,
}

impl TransportTrouble {
    /// The six row cells, in the rows' column order (all empty without a transport).
    pub fn cells(trouble: Option<TransportTrouble>) -> [Option<u64>; 6] {
        let Some(t) = trouble else { return [None; 6] };
        [
            t.malformed_frames,
            t.malformed_frames_node_max,
            t.dropped_sends,
            t.dropped_sends_node_max,
            t.refused_connections,
            t.refused_connections_node_max,
        ]
        .map(Some)
    }

    pub fn of<'a>(counters: impl IntoIterator<Item = &'a qlab_net::runtime::Counters>) -> TransportTrouble {
        let mut t = TransportTrouble::default();
        for c in counters {
            t.malformed_frames += c.malformed_frames;
            t.malformed_frames_node_max = t.malformed_frames_node_max.max(c.malformed_frames);
            t.dropped_sends += c.dropped_sends;
            t.dropped_sends_node_max = t.dropped_sends_node_max.max(c.dropped_sends);
            t.refused_connections += c.refused_connections;
            t.refused_connections_node_max = t.refused_connections_node_max.max(c.refused_connections);
        }
        t
    }
}

/// The harness side: links to every node and `point.clients` clients of `P`.
pub fn driver<P: LabProtocol>(
    cluster: &LocalCluster,
    point: &Point,
    config: &P::Config,
) -> Result<Driver<P::Message, P::Client>> {
    let pinned = cluster.pinned()?;
    let endpoint = qlab_net::tls::endpoint(cluster.harness_bind, &cluster.harness_identity, pinned)
        .map_err(|e| LabError::Usage(format!("harness endpoint: {e}")))?;
    let start = cluster.file.start_unix_ns;
    let (harness, from_nodes) =
        Harness::<P::Message>::connect(endpoint, &cluster.file.addrs(), start, cluster.file.max_frame_bytes);
    let retry_ns = point.client_retry_ns.unwrap_or(qlab_core::ms(200));
    let clients = clients::<P>(config, point.clients as usize, point.nodes, retry_ns);
    Ok(Driver::new(harness, from_nodes, clients, start))
}

/// `count` clients of `P` (ids 0..count) of replicas configured by `config` that give up
/// on a silent replica after `retry_timeout_ns`.
pub fn clients<P: LabProtocol>(config: &P::Config, count: usize, nodes: u32, retry_timeout_ns: u64) -> Vec<P::Client> {
    (0..count).map(|c| P::client(config, ClientId(c as u64), nodes, retry_timeout_ns)).collect()
}

/// `loss` and `quic_delay_ms` as the transport applies them (nothing when `netem` does).
fn transport_loss_and_delay_ns(point: &Point, network: &NetworkSection) -> (f64, u64) {
    if network.netem { (0.0, 0) } else { (point.loss, (network.quic_delay_ms * 1e6) as u64) }
}

/// `loss`, `quic_delay_ms` and the regions' delays, applied by every node's transport to
/// what it sends.
pub fn apply_network_faults<M: Wired, C: Client>(driver: &mut Driver<M, C>, point: &Point, network: &NetworkSection) {
    let faults = RealFaults::new(point, network);
    if faults.shapes_the_network() {
        faults.shape_network(driver);
    }
}

/// Until every node knows the same leader; returns (leader, epoch).
pub async fn wait_for_leader<M: Wired, C: Client>(driver: &mut Driver<M, C>, nodes: u32) -> Result<(u32, u64)> {
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

/// A leader of an epoch at or above `from_epoch` that every node in `0..nodes` accepted
/// (PBFT's first view is 0 and has its primary from the start).
fn agreed_leader<M: Wired, C: Client>(driver: &Driver<M, C>, nodes: u32, from_epoch: u64) -> Option<(u32, u64)> {
    let mut known: std::collections::BTreeMap<u64, (u32, std::collections::BTreeSet<u32>)> = Default::default();
    for o in &driver.observations {
        if let Event::LeaderKnown { epoch, leader } = o.event
            && epoch >= from_epoch
        {
            known.entry(epoch).or_insert((leader.0, Default::default())).1.insert(o.node);
        }
    }
    known.into_iter().rev().find(|(_, (_, set))| set.len() as u32 == nodes).map(|(epoch, (leader, _))| (leader, epoch))
}

/// Run `workload`'s clients against the cluster until cluster time `until_ns`.
pub async fn drive_workload<M: Wired, C: Client>(
    driver: &mut Driver<M, C>,
    workload: &mut Workload,
    until_ns: u64,
    mut on_done: impl FnMut(&Done),
) {
    loop {
        let now = driver.now_ns();
        for client in workload.due(now) {
            if !driver.is_busy(client) {
                let arrived_ns = workload.latency_origin(client, now);
                let request = workload.issue(client, now);
                driver.submit_arrived(client, request, arrived_ns);
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

// ---- checking as a run goes -----------------------------------------------------------

/// How far behind the harness's clock observations are put in time order: a report
/// that takes longer than this to arrive is checked as late.
pub const REPORT_LAG_NS: u64 = 1_000_000_000;

/// Move the observations that arrived into `stream`, and check those older than
/// [`REPORT_LAG_NS`].
pub fn feed_safety_stream<M: Wired, C: Client>(driver: &mut Driver<M, C>, stream: &mut qlab_check::SafetyStream) {
    for o in driver.drain_observations() {
        stream.push(Observation { time: o.time_ns, node: NodeId(o.node), event: o.event });
    }
    stream.release(driver.now_ns().saturating_sub(REPORT_LAG_NS));
}

/// [`run_segment`] in steps of a second, feeding the safety checker between steps and
/// noting the harness's own resident memory, so a run of any length holds only what
/// the checkers still need.
#[allow(clippy::too_many_arguments)]
pub async fn run_segment_checked<M: Wired, C: Client>(
    driver: &mut Driver<M, C>,
    workload: &mut Workload,
    cluster: &mut LocalCluster,
    faults: &mut RealFaults,
    schedule: &mut std::collections::VecDeque<(u64, ScheduledFault)>,
    clients_started: u64,
    until: u64,
    on_done: &mut dyn FnMut(&Done),
    stream: &mut qlab_check::SafetyStream,
    harness_rss_bytes_max: &mut u64,
) -> Result<()> {
    loop {
        let step_until = (driver.now_ns() + 1_000_000_000).min(until);
        run_segment(driver, workload, cluster, faults, schedule, clients_started, step_until, on_done).await?;
        feed_safety_stream(driver, stream);
        *harness_rss_bytes_max = (*harness_rss_bytes_max).max(qlab_net::runtime::process_rss_bytes());
        if driver.now_ns() >= until {
            return Ok(());
        }
    }
}

// ---- scheduled faults in quic mode --------------------------------------------------

use crate::config::{NodeRef, ScheduledFault};
use std::collections::BTreeSet;

/// The link faults every node's transport currently enforces, kept by the harness
/// so a restarted node (which starts with none) can be told again.
pub struct RealFaults {
    blocked: Vec<BTreeSet<u32>>,
    loss: f64,
    delay_ns: u64,
    /// Wide-area placement: where each node and the clients are.
    regions: Option<crate::regions::RegionMap>,
    nodes: u32,
    crashed_leader: Option<u32>,
    /// The replica a `crash` of `"follower"` hit, which a `restart` of `"follower"` means.
    crashed_follower: Option<u32>,
    awaiting_ready: Vec<u32>,
    /// Standard deviation of each message's delay, without regions (theirs is `jitter_ms`).
    jitter_ns: u64,
    /// Each node's clock rate as last set by [`RealFaults::set_clock_rate`] (1: true time).
    clock_rates: Vec<f64>,
}

impl RealFaults {
    pub fn new(point: &Point, network: &NetworkSection) -> Self {
        let (loss, delay_ns) = transport_loss_and_delay_ns(point, network);
        RealFaults {
            blocked: vec![BTreeSet::new(); point.nodes as usize],
            loss,
            delay_ns,
            regions: network.region_map(),
            nodes: point.nodes,
            crashed_leader: None,
            crashed_follower: None,
            awaiting_ready: Vec::new(),
            jitter_ns: 0,
            clock_rates: vec![1.0; point.nodes as usize],
        }
    }

    /// Every link's loss, one-way delay and jitter set to these (a chaos run's drawn
    /// network) rather than to the file's.
    pub fn with_links(mut self, loss: f64, delay_ns: u64, jitter_ns: u64) -> Self {
        (self.loss, self.delay_ns, self.jitter_ns) = (loss, delay_ns, jitter_ns);
        self
    }

    /// Node `node`'s clock runs at `rate` from now on ([`Control::ClockRate`]); a node
    /// restarted later is told again once it is back.
    pub fn set_clock_rate<M: Wired, C: Client>(&mut self, driver: &Driver<M, C>, node: u32, rate: f64) {
        self.clock_rates[node as usize] = rate;
        driver.harness().send(node, &Wire::Control(Control::ClockRate { rate }));
    }

    fn faults_of(&self, node: u32) -> LinkFaults {
        let ns = |ms: f64| (ms * 1e6).round() as u64;
        let (delay_ns_to, reply_delay_ns, jitter_ns) = match &self.regions {
            Some(map) => {
                let delays = (0..self.nodes).map(|to| ns(map.node_to_node_ms(node, to))).collect();
                (delays, ns(map.client_legs_ms(node).1), ns(map.jitter_ms))
            }
            None => (Vec::new(), 0, self.jitter_ns),
        };
        LinkFaults {
            blocked_to: self.blocked[node as usize].iter().copied().collect(),
            loss: self.loss,
            delay_ns: self.delay_ns,
            delay_ns_to,
            jitter_ns,
            reply_delay_ns,
        }
    }

    /// Turn the wide-area placement so that `leader` is in `region`, and tell every node.
    pub fn place_leader<M: Wired, C: Client>(&mut self, driver: &mut Driver<M, C>, leader: u32, region: &str) {
        self.regions = self.regions.take().and_then(|map| map.with_leader_in(leader, region));
        self.shape_network(driver);
    }

    /// Tell every node its link faults and the harness how long to hold client requests
    /// to each node.
    pub fn shape_network<M: Wired, C: Client>(&self, driver: &mut Driver<M, C>) {
        self.send_all(driver);
        driver.set_request_delays(self.request_delays_ns());
    }

    /// Per node, how long the harness holds a client's request to it: the clients'
    /// one-way delay to the node's region (empty without regions).
    fn request_delays_ns(&self) -> Vec<u64> {
        let Some(map) = &self.regions else { return Vec::new() };
        (0..self.nodes).map(|node| (map.client_legs_ms(node).0 * 1e6).round() as u64).collect()
    }

    /// Whether the nodes must be told anything before the first fault: loss, delay or
    /// regions.
    pub fn shapes_the_network(&self) -> bool {
        self.loss > 0.0 || self.delay_ns > 0 || self.jitter_ns > 0 || self.regions.is_some()
    }

    fn send<M: Wired, C: Client>(&self, driver: &Driver<M, C>, node: u32) {
        driver.harness().send(node, &Wire::Control(Control::Faults(self.faults_of(node))));
    }

    pub fn send_all<M: Wired, C: Client>(&self, driver: &Driver<M, C>) {
        for node in 0..self.blocked.len() as u32 {
            self.send(driver, node);
        }
    }

    fn resolve<M: Wired, C: Client>(&self, driver: &Driver<M, C>, node: &NodeRef) -> Option<u32> {
        match node {
            NodeRef::Id(id) => Some(*id),
            NodeRef::Leader => driver.latest_elected.map(|(_, node)| node),
            NodeRef::Follower => {
                let leader = driver.latest_elected.map(|(_, node)| node);
                (0..self.blocked.len() as u32).rev().find(|id| Some(*id) != leader)
            }
        }
    }

    /// Carry out one scheduled fault on a real cluster.
    pub fn apply<M: Wired, C: Client>(
        &mut self,
        fault: &ScheduledFault,
        driver: &mut Driver<M, C>,
        cluster: &mut LocalCluster,
    ) -> Result<()> {
        let nodes = self.blocked.len() as u32;
        match fault {
            ScheduledFault::Partition { groups, .. } => {
                let group_of = |id: u32| groups.iter().position(|g| g.contains(&id));
                for a in 0..nodes {
                    self.blocked[a as usize] = (0..nodes).filter(|b| *b != a && group_of(*b) != group_of(a)).collect();
                }
                self.send_all(driver);
            }
            ScheduledFault::Cut { from, to, .. } => {
                if let (Some(from), Some(to)) = (self.resolve(driver, from), self.resolve(driver, to)) {
                    self.blocked[from as usize].insert(to);
                    self.send(driver, from);
                }
            }
            ScheduledFault::Heal { .. } => {
                self.blocked.iter_mut().for_each(BTreeSet::clear);
                self.send_all(driver);
            }
            ScheduledFault::Isolate { node, .. } => {
                if let Some(alone) = self.resolve(driver, node) {
                    for a in 0..nodes {
                        self.blocked[a as usize] = if a == alone {
                            (0..nodes).filter(|b| *b != a).collect()
                        } else {
                            std::iter::once(alone).collect()
                        };
                    }
                    self.send_all(driver);
                }
            }
            ScheduledFault::TransferLeader { to, .. } => {
                let leader = driver.latest_elected.map(|(_, node)| node);
                if let (Some(leader), Some(to)) = (leader, self.resolve(driver, to)) {
                    let command = qlab_core::AdminCommand::TransferLeadership { to: qlab_core::NodeId(to) };
                    driver.harness().send(leader, &Wire::Control(Control::Admin(command)));
                }
            }
            ScheduledFault::Pause { node, for_ms, .. } => {
                if let Some(id) = self.resolve(driver, node) {
                    cluster.pause(id, std::time::Duration::from_secs_f64(for_ms / 1000.0))?;
                }
            }
            ScheduledFault::Crash { node, .. } => {
                if let Some(id) = self.resolve(driver, node) {
                    match node {
                        NodeRef::Leader => self.crashed_leader = Some(id),
                        NodeRef::Follower => self.crashed_follower = Some(id),
                        NodeRef::Id(_) => {}
                    }
                    cluster.kill(id);
                }
            }
            ScheduledFault::Restart { node, .. } => {
                let id = match node {
                    NodeRef::Id(id) => Some(*id),
                    NodeRef::Leader => self.crashed_leader,
                    NodeRef::Follower => self.crashed_follower,
                };
                if let Some(id) = id {
                    driver.ready.remove(&id);
                    cluster.start(id)?;
                    self.awaiting_ready.push(id);
                }
            }
        }
        Ok(())
    }

    /// Tell restarted nodes their faults once they are back.
    fn refresh<M: Wired, C: Client>(&mut self, driver: &Driver<M, C>) {
        let back: Vec<u32> = self.awaiting_ready.iter().copied().filter(|n| driver.ready.contains(n)).collect();
        for node in back {
            self.send(driver, node);
            let rate = self.clock_rates[node as usize];
            if rate != 1.0 {
                driver.harness().send(node, &Wire::Control(Control::ClockRate { rate }));
            }
            self.awaiting_ready.retain(|n| *n != node);
        }
    }
}

/// Run the workload to cluster time `until`, carrying out scheduled faults as they
/// fall due (`schedule` holds times after `clients_started`).
#[allow(clippy::too_many_arguments)]
pub async fn run_segment<M: Wired, C: Client>(
    driver: &mut Driver<M, C>,
    workload: &mut Workload,
    cluster: &mut LocalCluster,
    faults: &mut RealFaults,
    schedule: &mut std::collections::VecDeque<(u64, ScheduledFault)>,
    clients_started: u64,
    until: u64,
    on_done: &mut dyn FnMut(&Done),
) -> Result<()> {
    loop {
        let next_due = schedule.front().map(|(at, _)| clients_started + at).filter(|due| *due <= until);
        let step_until = next_due.unwrap_or(until).min(driver.now_ns() + 50_000_000).max(driver.now_ns());
        drive_workload(driver, workload, step_until, |done| on_done(done)).await;
        faults.refresh(driver);
        if next_due.is_some_and(|due| driver.now_ns() >= due) {
            let (_, fault) = schedule.pop_front().expect("due fault");
            faults.apply(&fault, driver, cluster)?;
        } else if driver.now_ns() >= until {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qlab_net::cluster::{LocalCluster, StorageKind};
    use qlab_pbft::{Pbft, PbftConfig, node_secret};

    /// Real mode keeps each PBFT replica's secret in a file of its own: the cluster file
    /// that every node (and every host) reads carries public keys only.
    #[test]
    fn pbft_secrets_live_in_per_node_files_not_in_the_cluster_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PbftConfig::with_keys(7, 4, 2);
        let secrets = Pbft::take_node_secrets(&mut config);
        assert_eq!(secrets.len(), 4);
        let value = toml::Value::try_from(&config).unwrap();
        let mut cluster =
            LocalCluster::create(dir.path(), Path::new("qlab"), "pbft", value, 4, StorageKind::Memory, 1).unwrap();
        cluster.write_signing_keys(&secrets).unwrap();

        let path = dir.path().join("cluster.toml");
        let file = ClusterFile::load(&path).unwrap();
        let shared: PbftConfig = file.protocol_config.clone().try_into().unwrap();
        assert!(shared.node_secret_keys.is_empty(), "a secret key is in the cluster file");
        assert_eq!(shared.node_public_keys.len(), 4);
        let node = node_config::<Pbft>(&file, dir.path(), 2).unwrap();
        assert_eq!(node.protocol.node_secret_keys[2], node_secret(7, 2));
        assert!(node.protocol.node_secret_keys.iter().enumerate().all(|(i, k)| i == 2 || *k == [0; 32]));

        // Node 2's file holding node 3's secret is refused with the file's name.
        std::fs::write(dir.path().join("node-2.signing.key"), node_secret(7, 3)).unwrap();
        let error = node_config::<Pbft>(&file, dir.path(), 2).unwrap_err().to_string();
        assert!(error.contains("node-2.signing.key") && error.contains("not the secret of node 2"), "{error}");
    }

    /// The cluster file names each malicious replica with its attack; only that node
    /// reads itself as malicious, and an entry that is not the protocol's attack, or
    /// names a node the cluster lacks, is refused naming the file.
    #[test]
    fn malicious_entries_are_read_as_the_protocols_attacks() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PbftConfig::with_keys(7, 4, 2);
        Pbft::take_node_secrets(&mut config);
        let value = toml::Value::try_from(&config).unwrap();
        let mut cluster =
            LocalCluster::create(dir.path(), Path::new("qlab"), "pbft", value, 4, StorageKind::Memory, 1).unwrap();
        let entry = |text: &str| -> toml::Value { toml::from_str(text).unwrap() };
        cluster
            .set_malicious(vec![entry("node = 1\nattack = \"forge-signature\"\nfrom_ns = 5\nuntil_ns = 9")])
            .unwrap();
        let path = dir.path().join("cluster.toml");
        let file = ClusterFile::load(&path).unwrap();
        let mine = malicious_entry::<Pbft>(&path, &file, 1).unwrap().expect("node 1 is malicious");
        assert_eq!(
            (mine.attack, mine.from_ns, mine.until_ns),
            (qlab_pbft::attacks::PbftAttack::ForgeSignature, 5, Some(9))
        );
        assert!(malicious_entry::<Pbft>(&path, &file, 2).unwrap().is_none(), "node 2 is honest");

        let mut wrong = file.clone();
        wrong.malicious = vec![entry("node = 0\nattack = \"forge-logs\"")];
        let error = malicious_entry::<Pbft>(&path, &wrong, 0).unwrap_err().to_string();
        assert!(error.contains("cluster.toml") && error.contains("entry 0 is not a pbft attack"), "{error}");
        wrong.malicious = vec![entry("node = 4\nattack = \"forge-log\"")];
        let error = malicious_entry::<Pbft>(&path, &wrong, 0).unwrap_err().to_string();
        assert!(error.contains("names node 4, but the cluster has 4 nodes"), "{error}");
    }

    /// A node reads its own clock skew from the cluster file; a rate that is not
    /// positive, or a node listed twice, is refused naming the cluster file.
    #[test]
    fn clock_skew_is_read_from_the_cluster_file_and_checked() {
        use qlab_net::cluster::NodeClock;
        use qlab_net::runtime::SkewedClock;
        let dir = tempfile::tempdir().unwrap();
        let config = toml::Value::try_from(qlab_raft::RaftConfig::default()).unwrap();
        let mut cluster =
            LocalCluster::create(dir.path(), Path::new("qlab"), "raft", config, 3, StorageKind::Memory, 1).unwrap();
        let fast = NodeClock { node: 1, rate: 1.0002, offset_ns: -3_000_000 };
        cluster.set_clocks(vec![fast]).unwrap();
        let file = ClusterFile::load(&dir.path().join("cluster.toml")).unwrap();
        let node = node_config::<qlab_raft::Raft>(&file, dir.path(), 1).unwrap();
        assert_eq!(node.clock, SkewedClock { rate: 1.0002, offset_ns: -3_000_000 });
        assert_eq!(node_config::<qlab_raft::Raft>(&file, dir.path(), 0).unwrap().clock, SkewedClock::TRUE);
        for (clocks, expected) in [
            (vec![NodeClock { rate: 0.0, ..fast }], "node 1's rate must be > 0, got 0"),
            (vec![fast, fast], "node 1 is listed twice"),
        ] {
            cluster.set_clocks(clocks).unwrap();
            let file = ClusterFile::load(&dir.path().join("cluster.toml")).unwrap();
            let error = node_config::<qlab_raft::Raft>(&file, dir.path(), 1).unwrap_err().to_string();
            assert!(error.contains(expected) && error.contains(&dir.path().display().to_string()), "{error}");
        }
    }
}
