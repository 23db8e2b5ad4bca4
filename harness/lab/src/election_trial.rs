//! One election trial, by itself, in the simulator or over QUIC: crash the leader the
//! way the Raft paper's §9.3 does and time the cluster's recovery (the steps are in the
//! `election` kind's module doc). The kind sweeps it; the counterexample kind's timeout
//! cases run it for one fixed file.

use crate::config::{CrashAt, Experiment, Point};
use crate::protocols::LabProtocol;
use crate::workload::{Workload, WorkloadConfig};
use qlab_check::Verdict;
use qlab_core::{ClientId, Event, Nanos, NodeId, Op, Request, nanos_to_ms};
use qlab_sim::Sim;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// The measured outcome of one election trial.
#[derive(Clone, Debug, PartialEq)]
pub struct ElectionTrial {
    pub election_ms: f64,
    /// `None` when the workload has no clients.
    pub unavailable_ms: Option<f64>,
    pub terms: u64,
    pub censored: bool,
    pub safety: Verdict,
    pub violations: Vec<String>,
    pub messages: u64,
    /// The run's measured broadcast time: the mean of its closed broadcast rounds whose
    /// recipients all wrote to disk before answering (§5.6's RPCs; see
    /// `qlab_sim::BroadcastRound`). `None` over QUIC, or when no such round closed.
    pub broadcast_ms_mean: Option<f64>,
    /// How many rounds that mean is over.
    pub broadcast_rounds: u64,
    /// Real mode: what the transports refused or shed. `None` in the simulator.
    pub transport: Option<crate::real::TransportTrouble>,
    pub trace: Vec<String>,
}

/// The clients of an election trial: writes only, to measure when writes commit again.
fn probe_workload(experiment: &Experiment, point: &Point, seed: u64) -> Workload {
    let config = WorkloadConfig {
        clients: point.clients,
        keys: 4,
        value_bytes: point.value_bytes,
        think_ns: (experiment.file.workload.think_ms * 1e6) as Nanos,
        read_ratio: 0.0,
        cas_ratio: 0.0,
        readers: 0,
        arrival_rate_per_s: None,
    };
    Workload::new(config, seed)
}

/// Client id used for the write that makes followers lag; it has no client slot, so
/// its reply is dropped by the simulator.
const SETUP_CLIENT: ClientId = ClientId(u64::MAX);

pub fn run_trial<P: LabProtocol>(experiment: &Experiment, point: &Point, seed: u64, trace: bool) -> ElectionTrial {
    let file = &experiment.file;
    let config = P::config(point, file);
    let nodes = point.nodes;
    let heartbeat_ns = point.heartbeat_ns();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xe1ec_7100_0000_0000);
    // Processes of a real cluster start at different moments; spread the starts over
    // one minimum timeout so even unrandomized timeouts elect a first leader.
    let mut sim: Sim<P, P::Client> = point.sim(&file.network, config, seed);
    sim.track_broadcasts();
    if trace {
        sim.enable_trace();
    }
    let clients = point.clients;
    for c in 0..clients {
        // Retry a silent replica after a few round trips, not a fixed 100 ms, so the
        // unavailability measure is not dominated by the client's own timeout.
        let retry_timeout_ns =
            point.client_retry_ns.unwrap_or((point.latency.mean_ms() * 1e6 * 8.0).max(20e6) as Nanos);
        sim.add_client(P::client(sim.config(), ClientId(c as u64), nodes, retry_timeout_ns));
    }
    let mut workload = probe_workload(experiment, point, seed);
    let max_election_ns = (file.limits.max_election_ms * 1e6) as Nanos;

    // 1. A stable leader known to everyone.
    let mut seen = 0usize;
    let mut known: BTreeMap<u64, BTreeSet<NodeId>> = BTreeMap::new();
    let stable_leader = |sim: &Sim<P, P::Client>, seen: &mut usize, known: &mut BTreeMap<u64, BTreeSet<NodeId>>| {
        scan_leader_known(sim, seen, known);
        let leader = sim.leader()?;
        let term = sim.node(leader)?.epoch();
        let all = known.get(&term).is_some_and(|set| set.len() as u32 == nodes);
        all.then_some((leader, term))
    };
    let warmup_deadline = max_election_ns.max(qlab_core::ms(60_000));
    let mut leader_term = None;
    while sim.now() < warmup_deadline {
        let next = sim.now() + heartbeat_ns;
        workload.run(&mut sim, next, |_, _| {}, |_| false);
        if let Some(found) = stable_leader(&sim, &mut seen, &mut known) {
            leader_term = Some(found);
            break;
        }
    }
    let Some((mut leader, _)) = leader_term else {
        return finish(sim, workload, max_election_ns, None, 0, true, "note: no initial leader was elected".into());
    };
    workload.start_all_at(sim.now());
    // Settle for a few heartbeats with the clients running.
    let settle = sim.now() + 4 * heartbeat_ns;
    workload.run(&mut sim, settle, |_, _| {}, |_| false);
    if let Some(current) = sim.leader() {
        leader = current;
    }

    // 2. Lagging followers: drop the leader's entries to them while one write commits.
    let faults = file.faults.as_ref().expect("validated: election experiments have faults");
    let lagging = *faults.lagging_followers.get_ref();
    if lagging > 0 {
        let mut followers: Vec<NodeId> = (0..nodes).map(NodeId).filter(|n| *n != leader).collect();
        for i in (1..followers.len()).rev() {
            followers.swap(i, rng.random_range(0..=i));
        }
        let behind: Vec<NodeId> = followers.into_iter().take(lagging as usize).collect();
        let behind_for_filter = behind.clone();
        sim.set_filter(Some(Box::new(move |from, to, msg| {
            from == leader && behind_for_filter.contains(&to) && P::carries_entries(msg)
        })));
        sim.inject_request(
            leader,
            Request {
                client: SETUP_CLIENT,
                seq: 1,
                op: Op::Put { key: u64::MAX, value: b"lag".to_vec() },
                signature: Vec::new(),
            },
        );
        let committed_by = sim.now() + 10 * heartbeat_ns;
        workload.run(&mut sim, committed_by, |_, _| {}, |_| false);
    }

    // 3. Crash at a uniformly random point of the heartbeat interval: of whichever
    // interval the leader is in, or (§9.3) of the one its synchronized broadcast starts.
    let crash = faults.crash.as_ref().expect("validated: election experiments crash the leader");
    if crash.at == CrashAt::AfterHeartbeatBroadcast
        && let (Some(broadcaster), Some(timer)) = (sim.leader(), P::heartbeat_timer())
    {
        sim.fire_timer_now(broadcaster, timer);
    }
    let crash_at = sim.now() + rng.random_range(0..heartbeat_ns.max(1));
    workload.run(&mut sim, crash_at, |_, _| {}, |_| false);
    let Some(current_leader) = sim.leader() else {
        return finish(
            sim,
            workload,
            max_election_ns,
            None,
            0,
            true,
            "note: the leader was lost before the crash".into(),
        );
    };
    leader = current_leader;
    let crashed_term = sim.node(leader).map_or(0, |n| n.epoch());
    if faults.sync_heartbeats_before_crash
        && let Some(timer) = P::heartbeat_timer()
    {
        sim.fire_timer_now(leader, timer);
    }
    sim.crash(leader);
    sim.set_filter(None);
    let crash_time = sim.now();

    // 4. Measure.
    let mut elected_at: Option<(Nanos, u64)> = None;
    let unavailable_until: std::cell::Cell<Option<Nanos>> = std::cell::Cell::new(None);
    let deadline = crash_time + max_election_ns;
    let live: Vec<NodeId> = sim.up_nodes();
    let wants_client = clients > 0;
    workload.run(
        &mut sim,
        deadline,
        |_, completion| {
            // Only a write issued after the crash shows the cluster available again: a
            // reply to one already in flight may come from the dead leader's last acts
            // (or, in PBFT, from backups executing what the old primary ordered).
            if unavailable_until.get().is_none()
                && completion.from != leader
                && completion.request.op.is_write()
                && completion.submitted_at >= crash_time
            {
                unavailable_until.set(Some(completion.time));
            }
        },
        |sim| {
            if elected_at.is_none() {
                scan_leader_known(sim, &mut seen, &mut known);
                if let Some((term, _)) =
                    known.iter().find(|(term, set)| **term > crashed_term && live.iter().all(|n| set.contains(n)))
                {
                    elected_at = Some((sim.now(), *term));
                }
            }
            elected_at.is_some() && (!wants_client || unavailable_until.get().is_some())
        },
    );
    let (election_ns, terms, censored) = match elected_at {
        Some((at, term)) => (at - crash_time, P::elections_between(crashed_term, term), false),
        None => {
            let highest = sim.up_nodes().iter().filter_map(|n| sim.node(*n)).map(|n| n.epoch()).max().unwrap_or(0);
            (max_election_ns, P::elections_between(crashed_term, highest), true)
        }
    };
    let unavailable =
        if wants_client { Some(unavailable_until.get().map_or(max_election_ns, |t| t - crash_time)) } else { None };
    // Let commits reach every replica so the checkers see the final state.
    workload.stop();
    let settle = sim.now() + 4 * heartbeat_ns;
    workload.run(&mut sim, settle, |_, _| {}, |_| false);
    let mut trial = finish(sim, workload, election_ns, unavailable, terms, censored, String::new());
    trial.election_ms = nanos_to_ms(election_ns);
    trial
}

fn finish<P: LabProtocol>(
    sim: Sim<P, P::Client>,
    workload: Workload,
    election_ns: Nanos,
    unavailable_ns: Option<Nanos>,
    terms: u64,
    censored: bool,
    note: String,
) -> ElectionTrial {
    let judgement = qlab_check::judge_run(&sim.observations, &workload.history, sim.now());
    let mut details = judgement.details;
    if !note.is_empty() {
        details.push(note);
    }
    let persisting: Vec<Nanos> =
        sim.broadcast_rounds().iter().filter(|r| r.recipients_persisted).map(|r| r.duration_ns).collect();
    let broadcast_ms_mean =
        (!persisting.is_empty()).then(|| nanos_to_ms(persisting.iter().sum::<Nanos>()) / persisting.len() as f64);
    ElectionTrial {
        election_ms: nanos_to_ms(election_ns),
        unavailable_ms: unavailable_ns.map(nanos_to_ms),
        terms,
        censored,
        safety: judgement.verdict,
        violations: details,
        messages: sim.stats.messages_sent,
        broadcast_ms_mean,
        broadcast_rounds: persisting.len() as u64,
        transport: None,
        trace: sim.trace().to_vec(),
    }
}

/// Fold new `LeaderKnown` observations into `known` (epoch → nodes that know its leader).
fn scan_leader_known<P: LabProtocol>(
    sim: &Sim<P, P::Client>,
    seen: &mut usize,
    known: &mut BTreeMap<u64, BTreeSet<NodeId>>,
) {
    for observation in &sim.observations[*seen..] {
        if let Event::LeaderKnown { epoch, .. } = observation.event {
            known.entry(epoch).or_default().insert(observation.node);
        }
    }
    *seen = sim.observations.len();
}

/// The election trial in real mode: one process per replica, the crash a `kill -9`.
/// Times come from the nodes' own reports (`LeaderKnown`, in cluster time) and the
/// harness's clock at the kill; both read the same machine's clock.
pub fn run_trial_quic<P: LabProtocol>(
    experiment: &Experiment,
    point: &Point,
    seed: u64,
    node_binary: &std::path::Path,
) -> crate::Result<ElectionTrial> {
    use crate::real;
    let file = &experiment.file;
    let heartbeat_ns = point.heartbeat_ns();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xe1ec_7100_0000_0001);
    real::on_fresh_cluster::<P, _>(experiment, point, seed, node_binary, async |cluster| {
        let mut driver = real::driver::<P>(cluster, point, &P::config(point, file))?;
        real::apply_network_faults(&mut driver, point, &file.network);
        let (_, _) = real::wait_for_leader(&mut driver, point.nodes).await?;
        let mut workload = probe_workload(experiment, point, seed);
        workload.start_all_at(driver.now_ns());
        let settle_until = driver.now_ns() + 4 * heartbeat_ns;
        real::drive_workload(&mut driver, &mut workload, settle_until, |_| {}).await;
        // Crash at a uniformly random point of the heartbeat interval.
        let crash_at = driver.now_ns() + rng.random_range(0..heartbeat_ns.max(1));
        real::drive_workload(&mut driver, &mut workload, crash_at, |_| {}).await;
        let observations = real::observations_for_checkers(&driver);
        let leader = real::latest_leader(&observations)
            .ok_or_else(|| crate::LabError::Usage("no leader before the crash".into()))?;
        let crashed_term = observations
            .iter()
            .filter_map(|o| match o.event {
                Event::Elected { epoch, .. } if o.node.0 == leader => Some(epoch),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        cluster.kill(leader);
        let crash_time = driver.now_ns();
        let live: Vec<u32> = (0..point.nodes).filter(|n| *n != leader).collect();
        let wants_client = point.clients > 0;
        let deadline = crash_time + (file.limits.max_election_ms * 1e6) as Nanos;
        let mut unavailable_until: Option<Nanos> = None;
        let mut elected: Option<(Nanos, u64)> = None;
        while driver.now_ns() < deadline && (elected.is_none() || (wants_client && unavailable_until.is_none())) {
            let step_until = (driver.now_ns() + 5_000_000).min(deadline);
            real::drive_workload(&mut driver, &mut workload, step_until, |done| {
                if unavailable_until.is_none()
                    && done.from != leader
                    && done.request.op.is_write()
                    && done.submitted_ns >= crash_time
                {
                    unavailable_until = Some(done.time_ns);
                }
            })
            .await;
            if elected.is_none() {
                elected = all_know_new_leader(&driver, &live, crashed_term);
            }
        }
        workload.stop();
        let settle = driver.now_ns() + 4 * heartbeat_ns;
        real::drive_workload(&mut driver, &mut workload, settle, |_| {}).await;
        let (election_ns, terms, censored) = match elected {
            Some((at, term)) => (at.saturating_sub(crash_time), P::elections_between(crashed_term, term), false),
            None => ((file.limits.max_election_ms * 1e6) as Nanos, 0, true),
        };
        let unavailable_ms = wants_client.then(|| {
            nanos_to_ms(unavailable_until.map_or((file.limits.max_election_ms * 1e6) as Nanos, |t| t - crash_time))
        });
        let observations = real::observations_for_checkers(&driver);
        let (safety, violations) = crate::trial::judge(&observations, &workload, driver.now_ns());
        let messages = driver.counters.values().map(|c| c.messages_sent).sum();
        Ok::<_, crate::LabError>(ElectionTrial {
            election_ms: nanos_to_ms(election_ns),
            unavailable_ms,
            terms,
            censored,
            safety,
            violations,
            messages,
            broadcast_ms_mean: None,
            broadcast_rounds: 0,
            transport: Some(crate::real::TransportTrouble::of(driver.counters.values())),
            trace: Vec::new(),
        })
    })
}

/// When every live node had accepted one leader of an epoch after `crashed_term`:
/// (the latest of their `LeaderKnown` times, that epoch).
fn all_know_new_leader<M: crate::real::Wired, C: qlab_core::Client>(
    driver: &qlab_net::drive::Driver<M, C>,
    live: &[u32],
    crashed_term: u64,
) -> Option<(Nanos, u64)> {
    let mut by_epoch: BTreeMap<u64, BTreeMap<u32, Nanos>> = BTreeMap::new();
    for o in &driver.observations {
        if let Event::LeaderKnown { epoch, .. } = o.event
            && epoch > crashed_term
        {
            by_epoch.entry(epoch).or_default().entry(o.node).or_insert(o.time_ns);
        }
    }
    by_epoch.into_iter().find_map(|(epoch, times)| {
        live.iter().all(|n| times.contains_key(n)).then(|| (live.iter().map(|n| times[n]).max().unwrap_or(0), epoch))
    })
}
