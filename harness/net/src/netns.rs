//! Network namespaces as hosts, and `tc netem` on their links.
//!
//! With `netns = true` an experiment runs every replica in its own Linux network
//! namespace: its own interfaces, routing table and UDP port space, joined to the
//! harness by a veth pair on a bridge in the harness's namespace. Packets between
//! replicas cross a real (virtual) Ethernet segment instead of loopback, each node has
//! its own address (`10.77.S.1`, `10.77.S.2`, ...; the harness is `10.77.S.254`), and the
//! cluster file is the one a multi-host deployment uses. It is the closest this suite
//! gets to several hosts on one machine.
//!
//! With `netem = true` as well, delay, jitter and loss are applied by the kernel
//! (`tc qdisc ... netem` on each node's outgoing interface) rather than by our
//! transport, so QUIC's own loss recovery and pacing see them as a real network would.
//! Everything here needs root and iproute2; a kernel without `sch_netem` gets a clear
//! error before any node starts.
//!
//! Where frames crossing a bridge pass the iptables FORWARD chain (Docker's hosts: its
//! policy there is DROP), one rule accepts those within our bridge, inserted with it.
//!
//! Namespaces, the bridge and its rule are removed when [`NetnsHosts`] is dropped. Names carry
//! the owning process id, so a later run removes what a killed run left behind.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

/// Kernel-level link emulation for each node's outgoing packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Netem {
    pub delay_ms: f64,
    pub jitter_ms: f64,
    /// Probability in [0, 1).
    pub loss: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("netns = true needs root to create network namespaces (this process runs as uid {uid})")]
    NotRoot { uid: u32 },
    #[error("netns = true needs iproute2's `{tool}`, which is not on PATH ({source})")]
    MissingTool { tool: &'static str, source: std::io::Error },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error(
        "netem = true is not possible on this machine: `{command}` said {stderr:?}. The kernel needs the sch_netem \
         qdisc (`modprobe sch_netem`); without it, drop netem = true and use quic_delay_ms and loss, which the \
         transport injects"
    )]
    NoNetem { command: String, stderr: String },
    #[error(
        "frames between the namespaces pass the iptables FORWARD chain here (net.bridge.bridge-nf-call-iptables = 1, \
         as with Docker, whose FORWARD policy is DROP), and `iptables` is not on PATH to let them through ({source})"
    )]
    NoIptables { source: std::io::Error },
    #[error("no free 10.77.x.0/24 subnet for namespaces (all 250 in use)")]
    NoSubnet,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// One network namespace per node on a private bridge.
#[derive(Debug)]
pub struct NetnsHosts {
    subnet: u8,
    bridge: String,
    namespaces: Vec<String>,
    pub node_ips: Vec<IpAddr>,
    pub harness_ip: IpAddr,
}

const NAME_PREFIX: &str = "qlab-";

fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let output = Command::new(program).args(args).output().map_err(|source| match program {
        "iptables" => NetnsError::NoIptables { source },
        "tc" => NetnsError::MissingTool { tool: "tc", source },
        _ => NetnsError::MissingTool { tool: "ip", source },
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args)
}

fn effective_uid() -> u32 {
    // /proc/self/status: "Uid:\treal\teffective\tsaved\tfs"
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

/// Whether this process may create namespaces (root with iproute2).
pub fn available() -> Result<(), NetnsError> {
    let uid = effective_uid();
    if uid != 0 {
        return Err(NetnsError::NotRoot { uid });
    }
    ip(&["-V"]).map(|_| ())
}

impl NetnsHosts {
    /// Create `nodes` namespaces on a fresh bridge, with `netem` on every node's link.
    pub fn create(nodes: u32, netem: Option<Netem>) -> Result<NetnsHosts, NetnsError> {
        available()?;
        if netem.is_some() {
            run("tc", &["-V"]).map(|_| ())?;
        }
        // Choosing a subnet and creating the bridge must not race with another run.
        let lock_path = std::env::temp_dir().join("qlab-netns.lock");
        let lock = File::create(&lock_path).map_err(|source| NetnsError::Io { path: lock_path.clone(), source })?;
        lock.lock().map_err(|source| NetnsError::Io { path: lock_path, source })?;
        remove_stale()?;
        let links = ip(&["-o", "link", "show"])?;
        let subnet = (1..=250u8)
            .find(|s| {
                !links.contains(&format!(": {NAME_PREFIX}br{s}:")) && !links.contains(&format!(": {NAME_PREFIX}br{s}@"))
            })
            .ok_or(NetnsError::NoSubnet)?;
        let pid = std::process::id();
        let bridge = format!("{NAME_PREFIX}br{subnet}");
        let mut hosts = NetnsHosts {
            subnet,
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            node_ips: Vec::new(),
            harness_ip: IpAddr::V4(Ipv4Addr::new(10, 77, subnet, 254)),
        };
        // From here on, Drop cleans up whatever was made if a step fails.
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.77.{subnet}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        allow_forwarding_within(&bridge)?;
        for node in 0..nodes {
            let ns = format!("{NAME_PREFIX}{pid}-{subnet}-{node}");
            ip(&["netns", "add", &ns])?;
            hosts.namespaces.push(ns.clone());
            let host_end = format!("{NAME_PREFIX}{subnet}v{node}");
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            let node_ip = Ipv4Addr::new(10, 77, subnet, node as u8 + 1);
            ip(&["-n", &ns, "addr", "add", &format!("{node_ip}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            hosts.node_ips.push(IpAddr::V4(node_ip));
            if let Some(netem) = netem {
                hosts.set_netem(node, netem)?;
            }
        }
        Ok(hosts)
    }

    /// The command prefix that runs a program inside node `id`'s namespace.
    pub fn launcher(&self, id: u32) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.namespaces[id as usize].clone()]
    }

    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// Apply `netem` to everything node `id` sends.
    pub fn set_netem(&self, id: u32, netem: Netem) -> Result<(), NetnsError> {
        let ns = &self.namespaces[id as usize];
        let delay = format!("{}ms", netem.delay_ms);
        let jitter = format!("{}ms", netem.jitter_ms);
        let loss = format!("{}%", netem.loss * 100.0);
        let mut args = vec!["-n", ns, "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", &delay];
        if netem.jitter_ms > 0.0 {
            args.push(&jitter);
        }
        args.extend(["loss", &loss]);
        run("tc", &args).map(|_| ()).map_err(|e| match e {
            NetnsError::Command { command, stderr } if stderr.contains("qdisc kind is unknown") => {
                NetnsError::NoNetem { command, stderr }
            }
            other => other,
        })
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth pair, and with it the pair.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "delete", ns]);
        }
        let _ = ip(&["link", "delete", &self.bridge]);
        remove_forwarding_within(&self.bridge);
    }
}

/// Whether frames crossing a bridge go through the iptables FORWARD chain: with
/// `br_netfilter` loaded and `net.bridge.bridge-nf-call-iptables = 1` (Docker turns both
/// on, and sets the chain's policy to DROP) they do, and replicas on our bridge could not
/// reach one another.
fn bridge_frames_are_filtered() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").is_ok_and(|v| v.trim() == "1")
}

/// The rule that lets frames through between ports of `bridge`, first in FORWARD.
fn forwarding_rule(bridge: &str) -> [&str; 6] {
    ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
}

fn allow_forwarding_within(bridge: &str) -> Result<(), NetnsError> {
    if !bridge_frames_are_filtered() {
        return Ok(());
    }
    let mut args = vec!["-I", "FORWARD", "1"];
    args.extend(forwarding_rule(bridge));
    run("iptables", &args).map(|_| ())
}

fn remove_forwarding_within(bridge: &str) {
    if bridge_frames_are_filtered() {
        let mut args = vec!["-D", "FORWARD"];
        args.extend(forwarding_rule(bridge));
        let _ = run("iptables", &args);
    }
}

/// Remove namespaces (and their bridges) whose owning process is gone.
fn remove_stale() -> Result<(), NetnsError> {
    let list = ip(&["netns", "list"])?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else { continue };
        let mut parts = rest.split('-');
        let (Some(pid), Some(subnet)) = (parts.next(), parts.next()) else { continue };
        if pid.parse::<u32>().is_err() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = ip(&["netns", "delete", name]);
        let _ = ip(&["link", "delete", &format!("{NAME_PREFIX}br{subnet}")]);
    }
    // A bridge with no members left is stale too: creation happens under the lock the
    // caller holds, so no other run is half-way through filling one.
    let links = ip(&["-o", "link", "show", "type", "bridge"])?;
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        if name.starts_with(NAME_PREFIX) && ip(&["-o", "link", "show", "master", name])?.trim().is_empty() {
            let _ = ip(&["link", "delete", name]);
        }
    }
    // And the FORWARD rules of bridges that are gone.
    if bridge_frames_are_filtered()
        && let Ok(rules) = run("iptables", &["-S", "FORWARD"])
    {
        let links = ip(&["-o", "link", "show"])?;
        for rule in rules.lines() {
            let mut words = rule.split_whitespace();
            let Some(bridge) = words.find(|w| *w == "-i").and_then(|_| words.next()) else { continue };
            if bridge.starts_with(NAME_PREFIX) && !links.contains(&format!(": {bridge}:")) {
                remove_forwarding_within(bridge);
            }
        }
    }
    Ok(())
}
