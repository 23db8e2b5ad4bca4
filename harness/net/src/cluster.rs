//! Cluster files, and local clusters of `qlab node` processes.
//!
//! A cluster file says everything a replica needs to join: the protocol and its
//! configuration, every node's address and certificate, where its own private key and
//! storage live, and the harness's certificate. The same file serves a local cluster
//! on 127.0.0.1 (written by [`LocalCluster::create`]), one in network namespaces
//! ([`LocalCluster::create_in_namespaces`]) and nodes on several hosts
//! (written by hand, one key file per host):
//!
//! ```toml
//! protocol = "raft"
//! seed = 1
//! start_unix_ns = 1764079000000000000   # zero of event times; hosts need synced clocks
//! storage = "disk"                      # or "memory" (no crash safety)
//! data_dir = "data"                     # relative to this file
//! harness_cert = "harness.cert.der"
//!
//! [protocol_config]                     # the protocol's own configuration
//! election_timeout_ns_min = 150000000
//! # ...
//!
//! [[nodes]]
//! id = 0
//! addr = "10.0.0.1:7000"
//! cert = "node-0.cert.der"
//! key = "node-0.key.der"                # only the host running node 0 needs it
//! signing_key = "node-0.signing.key"    # PBFT: the node's ed25519 secret, likewise
//! ```
//!
//! Key files must be readable by their owner only (mode 0600, as ssh demands):
//! `qlab node` refuses one that others may read or write, naming it and its mode. A
//! local cluster lives in a private directory (0700) under the temporary directory,
//! named after the harness's process id ([`fresh_cluster_dir`]); it is removed when the
//! cluster is dropped, and a later run removes one whose process is gone
//! ([`remove_stale_cluster_dirs`]).
//!
//! A [`LocalCluster`] owns the processes it starts and kills every one of them when
//! it is dropped, so an experiment that ends by error or panic leaves nothing behind.
//! Each node also exits by itself when the harness has been gone for a while (see
//! `orphan_timeout_ms`), which covers the harness being killed outright.

use crate::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::netns::{Netem, NetnsHosts};
use crate::runtime::{NodeConfig, Storage};
use crate::tls::{Identity, Pinned, Principal};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    Memory,
    Disk,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: u32,
    pub addr: SocketAddr,
    pub cert: PathBuf,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The node's protocol signing secret (PBFT's ed25519 key), raw bytes; like `key`,
    /// only the host running this node needs it. The protocol configuration holds
    /// public keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub protocol: String,
    pub seed: u64,
    pub start_unix_ns: u64,
    pub storage: StorageKind,
    pub data_dir: PathBuf,
    pub harness_cert: PathBuf,
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    #[serde(default = "default_send_queue")]
    pub send_queue_messages: usize,
    /// A node exits when no harness has been connected for this long (0: never).
    #[serde(default = "default_orphan_timeout_ms")]
    pub orphan_timeout_ms: u64,
    pub protocol_config: toml::Value,
    /// Replicas that run an attack (an `attack` experiment), each the protocol's
    /// malicious-node entry: `{ node, attack, from_ns, until_ns }`, times in cluster
    /// time. The named node wraps its honest code in the attack; every other node runs
    /// the honest protocol and never reads this. Empty for an honest cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malicious: Vec<toml::Value>,
    /// Nodes whose clock is skewed: its rate against true time and its offset. A node
    /// not listed keeps true cluster time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clocks: Vec<NodeClock>,
    pub nodes: Vec<NodeEntry>,
}

/// A node's skewed clock ([`crate::runtime::SkewedClock`]): it reads `offset_ns +
/// rate × cluster time`, and a timer it sets for `d` of its own time fires after
/// `d / rate` of true time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClock {
    pub node: u32,
    pub rate: f64,
    #[serde(default)]
    pub offset_ns: i64,
}

fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_send_queue() -> usize {
    4096
}
fn default_orphan_timeout_ms() -> u64 {
    10_000
}

/// Write a secret readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("starting node {id} ({}): {source}", binary.display())]
    Spawn { id: u32, binary: PathBuf, source: std::io::Error },
}

impl ClusterFile {
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io { path: path.into(), source })?;
        let file: ClusterFile = toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| {
                let before = &text[..s.start.min(text.len())];
                format!("{}:{}: ", before.matches('\n').count() + 1, before.rsplit('\n').next().map_or(0, str::len) + 1)
            });
            ClusterError::Invalid { path: path.into(), message: format!("{}{}", at.unwrap_or_default(), e.message()) }
        })?;
        for (i, node) in file.nodes.iter().enumerate() {
            if node.id != i as u32 {
                return Err(ClusterError::Invalid {
                    path: path.into(),
                    message: format!("nodes must be listed in id order 0, 1, ...; entry {i} has id {}", node.id),
                });
            }
        }
        Ok(file)
    }

    pub fn save(&self, path: &Path) -> Result<(), ClusterError> {
        let text =
            toml::to_string(self).map_err(|e| ClusterError::Invalid { path: path.into(), message: e.to_string() })?;
        std::fs::write(path, text).map_err(|source| ClusterError::Io { path: path.into(), source })
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    fn read(base: &Path, relative: &Path) -> Result<Vec<u8>, ClusterError> {
        let path = base.join(relative);
        std::fs::read(&path).map_err(|source| ClusterError::Io { path, source })
    }

    /// A private key's bytes, refused (as `ssh` refuses one) when anyone but its owner
    /// may read or write it: a key others can read is a key others may hold.
    fn read_private(base: &Path, relative: &Path) -> Result<Vec<u8>, ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let path = base.join(relative);
        let mode = std::fs::metadata(&path)
            .map_err(|source| ClusterError::Io { path: path.clone(), source })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(ClusterError::Invalid {
                path: path.clone(),
                message: format!(
                    "a private key with mode {:04o}: others may read it; make it readable by its owner only \
                     (chmod 600)",
                    mode & 0o7777
                ),
            });
        }
        Self::read(base, relative)
    }

    /// Node `id`'s protocol signing secret, if the file names one.
    pub fn signing_key(&self, base: &Path, id: u32) -> Result<Option<(PathBuf, Vec<u8>)>, ClusterError> {
        let Some(relative) = self.nodes.get(id as usize).and_then(|n| n.signing_key.as_ref()) else {
            return Ok(None);
        };
        Ok(Some((base.join(relative), Self::read_private(base, relative)?)))
    }

    /// The certificates every node and the harness accept.
    pub fn pinned(&self, base: &Path) -> Result<Pinned, ClusterError> {
        let mut entries = Vec::new();
        for node in &self.nodes {
            entries.push((Principal::Node(node.id), Self::read(base, &node.cert)?));
        }
        entries.push((Principal::Harness, Self::read(base, &self.harness_cert)?));
        Ok(Pinned::new(entries))
    }

    /// Everything node `id` needs, with `base` the cluster file's directory.
    pub fn node_config<C: DeserializeOwned>(&self, base: &Path, id: u32) -> Result<NodeConfig<C>, ClusterError> {
        let invalid = |message: String| ClusterError::Invalid { path: base.into(), message };
        let entry = self.nodes.get(id as usize).ok_or_else(|| invalid(format!("no node {id} in the cluster file")))?;
        let key = entry.key.as_ref().ok_or_else(|| invalid(format!("node {id} has no key file")))?;
        let identity = Identity { cert_der: Self::read(base, &entry.cert)?, key_der: Self::read_private(base, key)? };
        let protocol: C = self
            .protocol_config
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| invalid(format!("protocol_config: {}", e.message())))?;
        let storage = match self.storage {
            StorageKind::Memory => Storage::Memory,
            StorageKind::Disk => Storage::Disk { path: base.join(&self.data_dir).join(format!("node-{id}.wal")) },
        };
        if let Storage::Disk { path } = &storage
            && let Some(dir) = path.parent()
        {
            std::fs::create_dir_all(dir).map_err(|source| ClusterError::Io { path: dir.into(), source })?;
        }
        let mut clock = crate::runtime::SkewedClock::TRUE;
        for entry in self.clocks.iter().filter(|c| c.node == id) {
            if !(entry.rate.is_finite() && entry.rate > 0.0) {
                return Err(invalid(format!("clocks: node {id}'s rate must be > 0, got {}", entry.rate)));
            }
            if clock != crate::runtime::SkewedClock::TRUE {
                return Err(invalid(format!("clocks: node {id} is listed twice")));
            }
            clock = crate::runtime::SkewedClock { rate: entry.rate, offset_ns: entry.offset_ns };
        }
        Ok(NodeConfig {
            id,
            clock,
            addrs: self.addrs(),
            identity,
            pinned: self.pinned(base)?,
            protocol,
            storage,
            seed: self.seed,
            start_unix_ns: self.start_unix_ns,
            max_frame_bytes: self.max_frame_bytes,
            send_queue_messages: self.send_queue_messages,
            orphan_timeout_ms: self.orphan_timeout_ms,
        })
    }
}

/// A directory only its owner may enter: it holds private keys, and a node's log and
/// WAL (client data). An existing one is narrowed to the same mode.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Where the harness keeps a local cluster's keys, cluster file, logs and WALs: a fresh
/// private directory under the system's temporary directory, named after this process
/// (`qlab-<pid>-<label>-<n>`) so that [`remove_stale_cluster_dirs`] can tell one whose
/// process is gone.
pub fn fresh_cluster_dir(label: &str) -> PathBuf {
    static CLUSTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{CLUSTER_DIR_PREFIX}{}-{label}-{n}", std::process::id()))
}

const CLUSTER_DIR_PREFIX: &str = "qlab-";

/// The cluster directories of `owner` (a process id) under the temporary directory.
fn cluster_dirs(owner: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
            let Some(rest) = name.strip_prefix(CLUSTER_DIR_PREFIX) else { return false };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            // Only directories that hold a cluster's files: never anything else named alike.
            pid.is_some_and(&owner) && holds_cluster_files(path)
        })
        .collect()
}

fn holds_cluster_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name == "cluster.toml" || name.ends_with(".key.der") || name.ends_with(".signing.key")
    })
}

/// Remove the cluster directories (keys and all) that a killed harness left behind:
/// those whose owning process no longer exists. Returns what was removed.
pub fn remove_stale_cluster_dirs() -> Vec<PathBuf> {
    let stale = cluster_dirs(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    stale.into_iter().filter(|dir| std::fs::remove_dir_all(dir).is_ok()).collect()
}

/// Remove this process's own cluster directories now: what an interrupted harness does
/// on its way out, when the clusters' destructors will not run.
pub fn remove_own_cluster_dirs() -> Vec<PathBuf> {
    let me = std::process::id();
    let own = cluster_dirs(|pid| pid == me);
    own.into_iter().filter(|dir| std::fs::remove_dir_all(dir).is_ok()).collect()
}

/// Free UDP ports on 127.0.0.1, found by binding and releasing them.
pub fn free_loopback_addrs(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    // Hold all sockets until every port is chosen so no two are the same.
    let sockets: Vec<std::net::UdpSocket> =
        (0..count).map(|_| std::net::UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    sockets.iter().map(|s| s.local_addr()).collect()
}

/// A cluster of `qlab node` processes on this machine.
pub struct LocalCluster {
    pub dir: PathBuf,
    pub file_path: PathBuf,
    pub file: ClusterFile,
    pub harness_identity: Identity,
    /// Where the harness's endpoint binds to reach the nodes.
    pub harness_bind: SocketAddr,
    binary: PathBuf,
    children: Vec<Option<Child>>,
    remove_dir_on_drop: bool,
    /// Declared last so it is dropped after the processes are killed.
    hosts: Option<NetnsHosts>,
}

impl LocalCluster {
    /// Write identities and a cluster file for `nodes` nodes on free loopback ports.
    pub fn create(
        dir: &Path,
        binary: &Path,
        protocol: &str,
        protocol_config: toml::Value,
        nodes: u32,
        storage: StorageKind,
        seed: u64,
    ) -> Result<LocalCluster, ClusterError> {
        create_private_dir(dir).map_err(|source| ClusterError::Io { path: dir.into(), source })?;
        let addrs =
            free_loopback_addrs(nodes as usize).map_err(|source| ClusterError::Io { path: dir.into(), source })?;
        Self::create_at(dir, binary, protocol, protocol_config, addrs, storage, seed)
    }

    /// The same, with every node in its own network namespace (see [`crate::netns`]),
    /// optionally with `netem` on its link.
    #[allow(clippy::too_many_arguments)]
    pub fn create_in_namespaces(
        dir: &Path,
        binary: &Path,
        protocol: &str,
        protocol_config: toml::Value,
        nodes: u32,
        storage: StorageKind,
        seed: u64,
        netem: Option<Netem>,
    ) -> Result<LocalCluster, ClusterError> {
        let hosts = NetnsHosts::create(nodes, netem)?;
        // Every node has its own port space, so one well-known port serves them all.
        let addrs = hosts.node_ips.iter().map(|ip| SocketAddr::new(*ip, 7000)).collect();
        let mut cluster = Self::create_at(dir, binary, protocol, protocol_config, addrs, storage, seed)?;
        cluster.harness_bind = SocketAddr::new(hosts.harness_ip, 0);
        cluster.hosts = Some(hosts);
        Ok(cluster)
    }

    fn create_at(
        dir: &Path,
        binary: &Path,
        protocol: &str,
        protocol_config: toml::Value,
        addrs: Vec<SocketAddr>,
        storage: StorageKind,
        seed: u64,
    ) -> Result<LocalCluster, ClusterError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClusterError::Io { path, source }
        };
        create_private_dir(dir).map_err(io(dir))?;
        let nodes = addrs.len();
        let mut entries = Vec::new();
        for (id, addr) in addrs.into_iter().enumerate() {
            let identity = Identity::generate(Principal::Node(id as u32));
            let cert = PathBuf::from(format!("node-{id}.cert.der"));
            let key = PathBuf::from(format!("node-{id}.key.der"));
            std::fs::write(dir.join(&cert), &identity.cert_der).map_err(io(&dir.join(&cert)))?;
            write_private(&dir.join(&key), &identity.key_der).map_err(io(&dir.join(&key)))?;
            entries.push(NodeEntry { id: id as u32, addr, cert, key: Some(key), signing_key: None });
        }
        let harness_identity = Identity::generate(Principal::Harness);
        let harness_cert = PathBuf::from("harness.cert.der");
        std::fs::write(dir.join(&harness_cert), &harness_identity.cert_der).map_err(io(&dir.join(&harness_cert)))?;
        let start_unix_ns =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let file = ClusterFile {
            protocol: protocol.to_string(),
            seed,
            start_unix_ns,
            storage,
            data_dir: PathBuf::from("data"),
            harness_cert,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            send_queue_messages: default_send_queue(),
            orphan_timeout_ms: default_orphan_timeout_ms(),
            protocol_config,
            malicious: Vec::new(),
            clocks: Vec::new(),
            nodes: entries,
        };
        let file_path = dir.join("cluster.toml");
        file.save(&file_path)?;
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            file_path,
            file,
            harness_identity,
            harness_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary: binary.to_path_buf(),
            children: (0..nodes).map(|_| None).collect(),
            remove_dir_on_drop: false,
            hosts: None,
        })
    }

    pub fn pinned(&self) -> Result<Pinned, ClusterError> {
        self.file.pinned(&self.dir)
    }

    /// Give every node its protocol signing secret in a file of its own
    /// (`node-N.signing.key`, readable by its owner only) and name it in the cluster
    /// file, before the nodes start.
    pub fn write_signing_keys(&mut self, secrets: &[Vec<u8>]) -> Result<(), ClusterError> {
        for (node, secret) in self.file.nodes.iter_mut().zip(secrets) {
            let name = PathBuf::from(format!("node-{}.signing.key", node.id));
            let path = self.dir.join(&name);
            write_private(&path, secret).map_err(|source| ClusterError::Io { path: path.clone(), source })?;
            node.signing_key = Some(name);
        }
        self.file.save(&self.file_path)
    }

    /// Name the replicas that run an attack (see [`ClusterFile::malicious`]), before
    /// the nodes start.
    pub fn set_malicious(&mut self, entries: Vec<toml::Value>) -> Result<(), ClusterError> {
        self.file.malicious = entries;
        self.file.save(&self.file_path)
    }

    /// Skew the named nodes' clocks (before they start: a node reads its clock once).
    pub fn set_clocks(&mut self, clocks: Vec<NodeClock>) -> Result<(), ClusterError> {
        self.file.clocks = clocks;
        self.file.save(&self.file_path)
    }

    /// Delete the cluster's directory (keys, logs, storage) when dropped.
    pub fn remove_dir_on_drop(&mut self) {
        self.remove_dir_on_drop = true;
    }

    /// Start node `id` (again, after a kill: it recovers from its storage).
    pub fn start(&mut self, id: u32) -> Result<(), ClusterError> {
        self.kill(id);
        let log = self.dir.join(format!("node-{id}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| ClusterError::Io { path: log.clone(), source })?;
        let mut command = match &self.hosts {
            Some(hosts) => {
                let launcher = hosts.launcher(id);
                let mut command = Command::new(&launcher[0]);
                command.args(&launcher[1..]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        // In a process group of its own: a Ctrl-C at the terminal reaches the harness,
        // which lets the trial in progress finish, and not the nodes under it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .arg("node")
            .arg("--cluster")
            .arg(&self.file_path)
            .arg("--id")
            .arg(id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| ClusterError::Spawn { id, binary: self.binary.clone(), source })?;
        self.children[id as usize] = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), ClusterError> {
        for id in 0..self.children.len() as u32 {
            self.start(id)?;
        }
        Ok(())
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u32) {
        if let Some(mut child) = self.children[id as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop node `id`'s process (SIGSTOP) for `duration`, then let it go on (SIGCONT):
    /// a gray failure. The process keeps its sockets and state and wakes with its timers
    /// overdue and its peers' messages queued. A node killed or restarted meanwhile is
    /// not touched by the late SIGCONT: it goes to the process that was paused, by pid.
    pub fn pause(&mut self, id: u32, duration: std::time::Duration) -> Result<(), ClusterError> {
        let Some(pid) = self.children[id as usize].as_ref().map(Child::id) else { return Ok(()) };
        let signal = |name: &str| Command::new("kill").args([name, &pid.to_string()]).status();
        let stopped =
            signal("-STOP").map_err(|source| ClusterError::Spawn { id, binary: PathBuf::from("kill"), source })?;
        if !stopped.success() {
            return Ok(()); // the process is gone already
        }
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        });
        Ok(())
    }

    pub fn is_running(&mut self, id: u32) -> bool {
        match self.children[id as usize].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Nodes whose process exited without the harness stopping it (a panic, an error):
    /// a node the harness killed is not among them.
    pub fn exited_by_themselves(&mut self) -> Vec<u32> {
        (0..self.children.len() as u32)
            .filter(|id| {
                self.children[*id as usize].as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))))
            })
            .collect()
    }

    /// Process ids of the running nodes (for tests that check nothing is left).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().flatten().map(Child::id).collect()
    }

    pub fn stop_all(&mut self) {
        for id in 0..self.children.len() as u32 {
            self.kill(id);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
        if self.remove_dir_on_drop {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
