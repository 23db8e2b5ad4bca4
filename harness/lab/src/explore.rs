//! Exhaustive search over the real protocol code (issue 42): every interleaving of
//! message deliveries, losses, reorderings, duplications, timer firings, crashes,
//! restarts and client commands up to stated bounds, each explored state judged by the
//! same safety checker as every trial, and the *shortest* run that breaks a rule found.
//!
//! The protocols are sans-IO state machines, so the search drives the replicas' own
//! code, not a separate specification: a state of the search ([`World`]) is every
//! replica's state (`None` while crashed), what each has persisted, the messages on
//! each link, each replica's armed timers, what is left of each budget, and the checker
//! that has read every event the run emitted — its history (leaders per epoch,
//! committed entries), like the history variables of the Raft TLA+ specification, is
//! part of the state.
//!
//! **The network** is a lossy FIFO link per ordered pair of replicas: delivering a
//! message loses every message sent before it on that link, so losses cost no step of
//! their own, and what is still on a link is always a suffix of what was sent. That
//! keeps the number of distinct states far below an unordered pool's, where every
//! subset of sent messages can be what is left. Reordering (a message overtakes earlier
//! ones, which stay) and duplication (delivered and kept) are steps with budgets. A
//! crash loses what was on the links into the crashed replica, as a process's
//! connections do; what it sent before it crashed can still arrive.
//!
//! **Time is abstract.** A timer may fire whenever it is armed, and each firing moves
//! the replicas' clock on by more than any timeout, so every time-based guard
//! (check-quorum's "heard from a leader recently") sees the steps as far apart. That
//! over-approximates what timing can do, which is sound for the safety of log reads;
//! lease reads, whose safety rests on timing, are out of scope. A crash loses nothing
//! persisted: a replica persists before anything of a step leaves it (as the real
//! runtime does), so a restart rebuilds it from its records.
//!
//! **The search** is iterative deepening: a depth-first search bounded at depth 1, 2,
//! 3, ... so the first bound at which a violation turns up is the length of the
//! shortest one, with memory for a table of state fingerprints only (a breadth-first
//! frontier of whole clusters does not fit in memory at the depths that matter). A
//! state already expanded with at least as many steps left is not expanded again. The
//! subtrees below the first few levels are shared out among threads; the table is
//! shared. Why not the `stateright` crate (the first engine): its breadth-first checker
//! finds the shortest path only single-threaded, and keeps whole states in its queue.
//!
//! **Random walks** reach deeper runs than the exhaustive rounds; **guided** walks set
//! out from runs that reached a new combination of the protocols' coverage marks. With
//! **liveness** on, the last state of every run must also settle once the faults stop
//! ([`Explorer::settles`]).

use crate::protocols::LabProtocol;
use dashmap::DashMap;
use qlab_check::SafetyChecker;
use qlab_core::Mark as CoverageMark;
use qlab_core::symmetry::{Renaming, Symmetry};
use qlab_core::{
    Action, Client, ClientAction, ClientId, ClientOutbox, Context, NodeId, Observation, Op, Outbox, Protocol, Request,
};
use qlab_report::sequence::{Mark, SequenceChart, SequenceEvent};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How far the search goes: each budget bounds one kind of step over a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Client commands (puts), each sent to a replica of the search's choosing.
    pub requests: u32,
    /// Crashes (each crashed replica may restart at any later step).
    pub crashes: u32,
    /// Messages delivered ahead of earlier ones on their link (which stay).
    pub reorderings: u32,
    /// Messages delivered a second time.
    pub duplicates: u32,
    /// Timer firings (elections, heartbeats, retransmissions) over the whole run.
    pub timer_firings: u32,
    /// Steps in a run.
    pub max_depth: usize,
}

/// One state of the search: the whole cluster and what the checker has seen.
#[derive(Clone)]
pub struct World<P: Protocol> {
    pub replicas: Vec<Option<P>>,
    pub disks: Vec<Vec<P::Record>>,
    /// `links[from * nodes + to]`: what `from` sent `to` and is not yet delivered or lost, oldest first.
    pub links: Vec<Vec<P::Message>>,
    pub timers: Vec<BTreeSet<P::Timer>>,
    pub requests_left: u32,
    pub crashes_left: u32,
    pub reorderings_left: u32,
    pub duplicates_left: u32,
    /// Timer firings so far: the abstract clock, and what the budget is held against.
    pub timer_firings: u32,
    pub checker: SafetyChecker,
    /// The coverage marks the step that led here reached (not part of the state: two
    /// runs into one state may have passed different marks on the way).
    pub reached: Vec<&'static CoverageMark>,
}

impl<P> World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
    /// The state printed in one canonical order (every collection in it is ordered).
    fn write_canonical(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        self.write_parts(
            out,
            &self.replicas,
            &self.disks,
            &self.links,
            &self.timers,
            &self.checker.history_fingerprint(),
        )
    }

    /// The state with every replica renamed by `renaming`, printed as
    /// [`World::write_canonical`] prints a state. Replica `i`'s state, disk, timers and
    /// links move to its new name, and everything in them that names a replica is
    /// renamed by the protocol's `symmetry`.
    fn write_renamed(
        &self,
        out: &mut impl std::fmt::Write,
        symmetry: &Symmetry<P>,
        renaming: &Renaming,
    ) -> std::fmt::Result {
        let n = self.replicas.len();
        let at = |i: usize| renaming.of(NodeId(i as u32)).0 as usize;
        // Built, not `vec![x; n]`: the states need not be `Clone` here.
        let mut replicas: Vec<Option<P>> = (0..n).map(|_| None).collect();
        let mut disks: Vec<Vec<P::Record>> = (0..n).map(|_| Vec::new()).collect();
        let mut timers: Vec<BTreeSet<P::Timer>> = (0..n).map(|_| BTreeSet::new()).collect();
        let mut links: Vec<Vec<P::Message>> = (0..n * n).map(|_| Vec::new()).collect();
        for i in 0..n {
            replicas[at(i)] = self.replicas[i].as_ref().map(|replica| (symmetry.replica)(replica, renaming));
            disks[at(i)] = self.disks[i].iter().map(|record| (symmetry.record)(record, renaming)).collect();
            timers[at(i)] = self.timers[i].clone();
            for to in 0..n {
                links[at(i) * n + at(to)] =
                    self.links[i * n + to].iter().map(|message| (symmetry.message)(message, renaming)).collect();
            }
        }
        let history = self.checker.history_fingerprint_renamed(Some(renaming));
        self.write_parts(out, &replicas, &disks, &links, &timers, &history)
    }

    fn write_parts(
        &self,
        out: &mut impl std::fmt::Write,
        replicas: &[Option<P>],
        disks: &[Vec<P::Record>],
        links: &[Vec<P::Message>],
        timers: &[BTreeSet<P::Timer>],
        history: &str,
    ) -> std::fmt::Result {
        write!(
            out,
            "{replicas:?}|{disks:?}|{links:?}|{timers:?}|{} {} {} {} {}|{history}",
            self.requests_left, self.crashes_left, self.reorderings_left, self.duplicates_left, self.timer_firings,
        )
    }

    /// A 64-bit fingerprint of the canonical rendering: BLAKE3 over the text, written
    /// into one reused buffer per thread (hashing the text piece by piece as the
    /// formatter produces it cost a third of the search's time).
    pub fn fingerprint(&self) -> u64 {
        Self::hash_rendering(|text| self.write_canonical(text))
    }

    /// The fingerprint of the state with its replicas renamed by `renaming`.
    pub fn renamed_fingerprint(&self, symmetry: &Symmetry<P>, renaming: &Renaming) -> u64 {
        Self::hash_rendering(|text| self.write_renamed(text, symmetry, renaming))
    }

    fn hash_rendering(render: impl FnOnce(&mut String) -> std::fmt::Result) -> u64 {
        thread_local! {
            static RENDERING: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        RENDERING.with_borrow_mut(|text| {
            text.clear();
            render(text).expect("writing to a string cannot fail");
            let hash = blake3::hash(text.as_bytes());
            u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
        })
    }

    /// Whether the checker has found anything.
    pub fn is_safe(&self) -> bool {
        self.checker.violations().is_empty()
    }

    fn link(&self, from: u32, to: u32) -> &Vec<P::Message> {
        &self.links[(from as usize) * self.replicas.len() + to as usize]
    }
}

impl<P> Debug for World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_canonical(f)
    }
}

/// One step of a run. A message is named by its link and its place on the link. A run
/// is written as a JSON list of steps (`steps.json`, [`Exploration::run`]), which
/// `qlab check FILE --replay` replays: a reader may edit it to ask "and without this step?".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step<T> {
    /// Deliver the message; the ones sent before it on its link are lost.
    Deliver {
        from: u32,
        to: u32,
        position: usize,
    },
    /// Deliver the message ahead of earlier ones, which stay on the link.
    Overtake {
        from: u32,
        to: u32,
        position: usize,
    },
    /// Deliver the message and keep it on the link.
    Duplicate {
        from: u32,
        to: u32,
        position: usize,
    },
    Fire {
        node: u32,
        timer: T,
    },
    Crash {
        node: u32,
    },
    Restart {
        node: u32,
    },
    Submit {
        node: u32,
        seq: u64,
    },
    /// Twins-style rounds ([`Explorer::with_waves`]): the replicas split into the groups
    /// of `partition` (an index into [`Explorer::partitions`]); every message on a link
    /// within a group is delivered, in link order, and every message on a link between
    /// groups is lost. What the deliveries send waits for the next step.
    Wave {
        partition: usize,
    },
}

/// The search over protocol `P`: a cluster of `nodes` replicas configured by `config`.
pub struct Explorer<P: Protocol> {
    pub config: P::Config,
    pub nodes: u32,
    pub bounds: Bounds,
    /// Twins (Bano et al., "Twins: BFT Systems Made Robust", 2022): each identity here
    /// runs as two replica instances with the same name and keys, each honest code, so
    /// together they can say different things to different replicas (equivocate) and
    /// answer for what only one of them saw. Instance `nodes + k` is the second copy of
    /// `twins[k]`. A message to a twinned identity goes onto the links to both copies
    /// (the search decides which arrive). A twinned identity is a faulty replica: the
    /// checker reads neither copy's events.
    pub twins: Vec<u32>,
    /// Empty: messages are delivered one at a time. Otherwise the search delivers them
    /// in waves, each under one of these partitions (a group number per instance): the
    /// Twins paper's rounds, which reach a view change's worth of traffic in a dozen
    /// steps where single deliveries need several dozen.
    pub partitions: Vec<Vec<u8>>,
    /// The timers the search may fire, if not all (a safety search can leave out
    /// timers that only resend what was sent, like PBFT's retransmissions).
    pub fire_only: Option<Vec<P::Timer>>,
    /// Bounded liveness ([`Explorer::with_liveness`]): every run's last state must
    /// settle within this many rounds once the faults stop.
    pub liveness_rounds: Option<usize>,
    /// Symmetry reduction ([`Explorer::with_symmetry`]): the protocol's renaming and
    /// every renaming of the cluster (the identity first).
    pub symmetry: Option<(Symmetry<P>, Vec<Renaming>)>,
}

impl<P: Protocol> Explorer<P> {
    pub fn new(config: P::Config, nodes: u32, bounds: Bounds) -> Self {
        Explorer {
            config,
            nodes,
            bounds,
            twins: Vec::new(),
            partitions: Vec::new(),
            fire_only: None,
            liveness_rounds: None,
            symmetry: None,
        }
    }

    /// The same search judging liveness too (TigerBeetle's VOPR: a safety phase, then a
    /// liveness phase): from the last state of every run — each leaf of the exhaustive
    /// rounds, the end of each walk — the faults stop ([`Explorer::settles`]) and a
    /// leader that a majority follows must emerge within `rounds` rounds.
    /// Not with twins: a twinned identity is faulty for good, and PBFT's liveness with a
    /// faulty replica rests on timing the abstract clock does not have.
    pub fn with_liveness(mut self, rounds: usize) -> Self {
        assert!(self.twins.is_empty(), "liveness is judged without twins");
        assert!(self.symmetry.is_none(), "liveness is judged without symmetry reduction");
        self.liveness_rounds = Some(rounds);
        self
    }

    /// The same search delivering messages in waves, under every split of the replica
    /// instances into at most two groups (the whole cluster together included).
    pub fn with_waves(mut self) -> Self {
        let instances = self.instances();
        // Instance 0 is always in group 0: each split is listed once.
        self.partitions = (0..1u32 << (instances - 1))
            .map(|mask| (0..instances).map(|i| if i == 0 { 0 } else { ((mask >> (i - 1)) & 1) as u8 }).collect())
            .collect();
        self
    }

    /// The same search firing only `timers`.
    pub fn firing_only(mut self, timers: Vec<P::Timer>) -> Self {
        self.fire_only = Some(timers);
        self
    }

    /// The same search with `identities` twinned (each below `nodes`, each once).
    pub fn with_twins(mut self, identities: &[u32]) -> Self {
        assert!(self.liveness_rounds.is_none() || identities.is_empty(), "liveness is judged without twins");
        assert!(self.symmetry.is_none() || identities.is_empty(), "twins break the symmetry between replicas");
        for (i, identity) in identities.iter().enumerate() {
            assert!(*identity < self.nodes, "twin of n{identity} in a cluster of {}", self.nodes);
            assert!(!identities[..i].contains(identity), "n{identity} twinned twice");
        }
        self.twins = identities.to_vec();
        self
    }

    /// Replica instances: one per identity and one more per twin.
    pub fn instances(&self) -> u32 {
        self.nodes + self.twins.len() as u32
    }

    /// The identity instance `instance` runs as.
    pub fn identity(&self, instance: u32) -> u32 {
        if instance < self.nodes { instance } else { self.twins[(instance - self.nodes) as usize] }
    }

    /// How a trace and a figure name instance `instance`: `n3`, and `n3′` for its twin.
    pub fn name(&self, instance: u32) -> String {
        if instance < self.nodes { format!("n{instance}") } else { format!("n{}′", self.identity(instance)) }
    }
}

/// A protocol the search can drive: its state can be cloned and printed canonically,
/// everything in a state can cross threads, and its lab client signs the commands the
/// search submits (PBFT replicas refuse an unsigned request).
pub trait Explorable:
    LabProtocol
    + Protocol<
        Message: Send + Sync,
        Record: Debug + Send + Sync,
        Timer: Send + Sync + Serialize + serde::de::DeserializeOwned,
        Config: Send + Sync,
    > + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<P> Explorable for P where
    P: LabProtocol
        + Protocol<
            Message: Send + Sync,
            Record: Debug + Send + Sync,
            Timer: Send + Sync + Serialize + serde::de::DeserializeOwned,
            Config: Send + Sync,
        > + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

impl<P: Explorable> Explorer<P> {
    /// The same search reducing by symmetry ([`qlab_core::symmetry`]): two states that
    /// differ only in the replicas' names are one state, so the exhaustive rounds expand
    /// one state of each class (up to `n!` fewer). A state's fingerprint is the least of
    /// its renamings' fingerprints. The runs the search reports are still real runs
    /// (each step taken as the search took it); only the table of states seen is
    /// shared between renamed states, so the shortest counterexample keeps its length.
    /// Only for a protocol that offers a renaming ([`LabProtocol::symmetry`]), and not
    /// with twins (a twinned replica is not like the others) or with liveness (the fair
    /// rounds of [`Explorer::settles`] visit replicas in the order of their names).
    pub fn with_symmetry(mut self) -> Self {
        let symmetry = P::symmetry().unwrap_or_else(|| panic!("{} offers no renaming of its replicas", P::NAME));
        assert!(self.twins.is_empty(), "twins break the symmetry between replicas");
        assert!(self.liveness_rounds.is_none(), "liveness is judged without symmetry reduction");
        self.symmetry = Some((symmetry, Renaming::all(self.nodes)));
        self
    }

    /// The key of `world` in the table of states seen: its fingerprint, or with
    /// symmetry reduction the least fingerprint of its renamings.
    pub fn fingerprint(&self, world: &World<P>) -> u64 {
        match &self.symmetry {
            None => world.fingerprint(),
            Some((symmetry, renamings)) => renamings
                .iter()
                .map(|renaming| world.renamed_fingerprint(symmetry, renaming))
                .min()
                .expect("at least the identity"),
        }
    }
}

/// Each timer firing moves the clock on by this much: more than any timeout.
const CLOCK_STEP_NS: u64 = 100_000_000_000;

impl<P: Explorable> Explorer<P> {
    /// Run one handler of instance `node` and carry out its actions on `world`.
    fn step(&self, world: &mut World<P>, node: u32, handler: impl FnOnce(&mut P, &mut Context<'_, P>)) {
        let now = CLOCK_STEP_NS * (u64::from(world.timer_firings) + 1);
        let Some(replica) = world.replicas[node as usize].as_mut() else { return };
        let mut outbox: Outbox<P::Message, P::Timer, P::Record> = Outbox::default();
        // A fixed seed: the draws are timeouts' lengths, which abstract time ignores.
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(node));
        handler(replica, &mut Context::new(now, &mut rng, &mut outbox));
        let instances = self.instances();
        let identity = self.identity(node);
        for action in outbox.actions {
            match action {
                Action::Persist { record } => {
                    let disk = &mut world.disks[node as usize];
                    if P::supersedes_earlier_records(&record) {
                        disk.clear();
                    }
                    disk.push(record);
                }
                Action::Send { to, msg } => {
                    for instance in (0..instances).filter(|i| self.identity(*i) == to.0) {
                        world.links[(node * instances + instance) as usize].push(msg.clone());
                    }
                }
                Action::Broadcast { msg } => {
                    for to in (0..instances).filter(|to| self.identity(*to) != identity) {
                        world.links[(node * instances + to) as usize].push(msg.clone());
                    }
                }
                Action::SetTimer { timer, .. } => {
                    world.timers[node as usize].insert(timer);
                }
                Action::CancelTimer { timer } => {
                    world.timers[node as usize].remove(&timer);
                }
                // A twinned identity is faulty: what it reports is not evidence.
                Action::Observe { event } if !self.twins.contains(&identity) => {
                    world.checker.observe(&Observation { time: now, node: NodeId(identity), event });
                }
                Action::Observe { .. } => {}
                // No client waits in the search: replies and explanations go nowhere.
                Action::Reply { .. } | Action::Ignored { .. } => {}
                Action::Reached { mark } => world.reached.push(mark),
            }
        }
    }

    /// The initial state: every replica started.
    pub fn initial(&self) -> World<P> {
        let n = self.instances() as usize;
        let mut world = World {
            replicas: (0..self.instances())
                .map(|i| Some(P::new(&self.config, NodeId(self.identity(i)), self.nodes)))
                .collect(),
            disks: vec![Vec::new(); n],
            links: vec![Vec::new(); n * n],
            timers: vec![BTreeSet::new(); n],
            requests_left: self.bounds.requests,
            crashes_left: self.bounds.crashes,
            reorderings_left: self.bounds.reorderings,
            duplicates_left: self.bounds.duplicates,
            timer_firings: 0,
            checker: SafetyChecker::new().with_nodes(self.nodes),
            reached: Vec::new(),
        };
        for node in 0..self.instances() {
            self.step(&mut world, node, |p, ctx| p.on_start(ctx));
        }
        world
    }

    /// Every step that can be taken from `world`.
    pub fn steps(&self, world: &World<P>) -> Vec<Step<P::Timer>> {
        let mut steps = Vec::new();
        let up = |node: u32| world.replicas[node as usize].is_some();
        if world.links.iter().any(|link| !link.is_empty()) {
            steps.extend((0..self.partitions.len()).map(|partition| Step::Wave { partition }));
        }
        for from in 0..self.instances() {
            for to in (0..self.instances()).filter(|to| up(*to)) {
                let link = world.link(from, to);
                for position in 0..link.len() {
                    if self.partitions.is_empty() {
                        steps.push(Step::Deliver { from, to, position });
                    }
                    if position > 0 && world.reorderings_left > 0 {
                        steps.push(Step::Overtake { from, to, position });
                    }
                    if world.duplicates_left > 0 {
                        steps.push(Step::Duplicate { from, to, position });
                    }
                }
            }
        }
        for node in 0..self.instances() {
            if up(node) {
                if world.timer_firings < self.bounds.timer_firings {
                    let fireable = |timer: &&P::Timer| self.fire_only.as_ref().is_none_or(|only| only.contains(timer));
                    steps.extend(
                        world.timers[node as usize]
                            .iter()
                            .filter(fireable)
                            .map(|timer| Step::Fire { node, timer: *timer }),
                    );
                }
                if world.crashes_left > 0 {
                    steps.push(Step::Crash { node });
                }
                if world.requests_left > 0 {
                    let seq = u64::from(self.bounds.requests - world.requests_left) + 1;
                    steps.push(Step::Submit { node, seq });
                }
            } else {
                steps.push(Step::Restart { node });
            }
        }
        steps
    }

    /// The state after `step`.
    pub fn apply(&self, world: &World<P>, step: &Step<P::Timer>) -> World<P> {
        let mut next = world.clone();
        next.reached.clear();
        let n = self.instances();
        match *step {
            Step::Deliver { from, to, position } => {
                let link = &mut next.links[(from * n + to) as usize];
                let msg = link.drain(..=position).last().expect("a message at that position");
                self.step(&mut next, to, |p, ctx| p.on_message(ctx, NodeId(self.identity(from)), msg));
            }
            Step::Overtake { from, to, position } => {
                let msg = next.links[(from * n + to) as usize].remove(position);
                next.reorderings_left -= 1;
                self.step(&mut next, to, |p, ctx| p.on_message(ctx, NodeId(self.identity(from)), msg));
            }
            Step::Duplicate { from, to, position } => {
                let msg = next.links[(from * n + to) as usize][position].clone();
                next.duplicates_left -= 1;
                self.step(&mut next, to, |p, ctx| p.on_message(ctx, NodeId(self.identity(from)), msg));
            }
            Step::Fire { node, timer } => {
                next.timers[node as usize].remove(&timer);
                next.timer_firings += 1;
                self.step(&mut next, node, |p, ctx| p.on_timer(ctx, timer));
            }
            Step::Crash { node } => {
                next.replicas[node as usize] = None;
                next.timers[node as usize].clear();
                for from in 0..n {
                    next.links[(from * n + node) as usize].clear();
                }
                next.crashes_left -= 1;
            }
            Step::Restart { node } => {
                let identity = NodeId(self.identity(node));
                let replica = P::restore(&self.config, identity, self.nodes, &next.disks[node as usize]);
                next.replicas[node as usize] = Some(replica);
                self.step(&mut next, node, |p, ctx| p.on_start(ctx));
            }
            Step::Wave { partition } => {
                for (from, to, msg) in self.wave(&mut next, partition) {
                    self.step(&mut next, to, |p, ctx| p.on_message(ctx, NodeId(self.identity(from)), msg));
                }
            }
            Step::Submit { node, seq } => {
                next.requests_left -= 1;
                let request = self.signed_request(seq, next.timer_firings);
                self.step(&mut next, node, |p, ctx| p.on_request(ctx, request));
            }
        }
        next
    }

    /// Take a wave's messages off `world`'s links: those within a group of `partition`
    /// to a running replica, in link order, to deliver; the rest are lost.
    fn wave(&self, world: &mut World<P>, partition: usize) -> Vec<(u32, u32, P::Message)> {
        let groups = &self.partitions[partition];
        let n = self.instances();
        let mut delivered = Vec::new();
        for from in 0..n {
            for to in 0..n {
                let link = std::mem::take(&mut world.links[(from * n + to) as usize]);
                if groups[from as usize] == groups[to as usize] && world.replicas[to as usize].is_some() {
                    delivered.extend(link.into_iter().map(|msg| (from, to, msg)));
                }
            }
        }
        delivered
    }

    /// A partition as text: `n0 n1 n2 | n3 n1′`.
    fn partition_text(&self, partition: usize) -> String {
        let groups = &self.partitions[partition];
        let side = |g: u8| {
            (0..self.instances())
                .filter(|i| groups[*i as usize] == g)
                .map(|i| self.name(i))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let other = side(1);
        if other.is_empty() { side(0) } else { format!("{} | {other}", side(0)) }
    }

    /// Client command `seq` (a put of its own value to one key), as the protocol's lab
    /// client sends it: signed, for a protocol whose replicas check client signatures.
    fn signed_request(&self, seq: u64, timer_firings: u32) -> Request {
        let request =
            Request { client: ClientId(0), seq, op: Op::Put { key: 1, value: vec![seq as u8] }, signature: Vec::new() };
        let mut client = P::client(&self.config, ClientId(0), self.nodes, CLOCK_STEP_NS);
        let mut out = ClientOutbox::default();
        client.submit(CLOCK_STEP_NS * (u64::from(timer_firings) + 1), request, &mut out);
        out.actions
            .into_iter()
            .find_map(|action| match action {
                ClientAction::Send { request, .. } => Some(request),
                _ => None,
            })
            .expect("a client sends what it is given")
    }

    /// Whether some running replica leads and more than half of the replicas, itself
    /// included, are in its epoch: enough to commit (for PBFT's 4 replicas, 3 = 2f + 1).
    /// A replica left alone in a higher epoch does not count against it: PBFT's backup
    /// that suspected a primary no one else suspects stays there until traffic it can
    /// see moves it, and the cluster serves clients meanwhile.
    fn led(&self, world: &World<P>) -> bool {
        let running: Vec<&P> = world.replicas.iter().flatten().collect();
        running.iter().any(|leader| {
            leader.is_leader()
                && running.iter().filter(|r| r.epoch() == leader.epoch()).count() * 2 > self.instances() as usize
        })
    }

    /// The liveness phase from `world`: the faults stop — every crashed replica
    /// restarts, and nothing in flight is lost any more — and the cluster runs under a
    /// fair schedule of rounds. A round delivers every message in flight, in link order;
    /// a round with none in flight fires every armed timer of the next replica in turn
    /// that has one. Returns the rounds until some replica leads with more than half of
    /// the replicas in its epoch, or why that did not happen within `rounds`.
    pub fn settles(&self, world: &World<P>, rounds: usize) -> Result<usize, String> {
        let mut world = world.clone();
        for node in 0..self.instances() {
            if world.replicas[node as usize].is_none() {
                world = self.apply(&world, &Step::Restart { node });
            }
        }
        let n = self.instances();
        let mut turn = 0;
        for round in 0..rounds {
            if !world.is_safe() {
                let broken: Vec<String> = world.checker.violations().iter().map(ToString::to_string).collect();
                return Err(format!("after the faults stopped: {}", broken.join("; ")));
            }
            if self.led(&world) {
                return Ok(round);
            }
            if world.links.iter().any(|link| !link.is_empty()) {
                let mut in_flight = Vec::new();
                for from in 0..n {
                    for to in 0..n {
                        let link = std::mem::take(&mut world.links[(from * n + to) as usize]);
                        in_flight.extend(link.into_iter().map(|msg| (from, to, msg)));
                    }
                }
                for (from, to, msg) in in_flight {
                    self.step(&mut world, to, |p, ctx| p.on_message(ctx, NodeId(self.identity(from)), msg));
                }
                continue;
            }
            let fireable = |timer: &P::Timer| self.fire_only.as_ref().is_none_or(|only| only.contains(timer));
            let Some(node) =
                (0..n).map(|i| (turn + i) % n).find(|node| world.timers[*node as usize].iter().any(fireable))
            else {
                return Err(format!(
                    "after the faults stopped, round {round}: no message in flight and no timer armed"
                ));
            };
            turn = node + 1;
            let timers: Vec<P::Timer> = world.timers[node as usize].iter().copied().filter(|t| fireable(t)).collect();
            for timer in timers {
                world = self.apply(&world, &Step::Fire { node, timer });
            }
        }
        Err(format!("liveness: no replica led a majority within {rounds} rounds after the faults stopped"))
    }

    /// What is wrong with `world` as the last state of a run: the checker's safety
    /// violations, or else, when liveness is judged, why the cluster did not settle.
    pub fn judge(&self, world: &World<P>) -> Vec<String> {
        let broken: Vec<String> = world.checker.violations().iter().map(ToString::to_string).collect();
        if !broken.is_empty() {
            return broken;
        }
        match self.liveness_rounds.map(|rounds| self.settles(world, rounds)) {
            Some(Err(why)) => vec![why],
            _ => Vec::new(),
        }
    }

    /// One step of a run taken from `world`, as a line a reader can follow.
    pub fn describe(&self, world: &World<P>, step: &Step<P::Timer>) -> String {
        let message = |from: u32, to: u32, position: usize| {
            let lost = if position > 0 { format!(" ({position} sent before it lost)") } else { String::new() };
            (format!("{} -> {}: {:?}", self.name(from), self.name(to), world.link(from, to)[position]), lost)
        };
        match *step {
            Step::Deliver { from, to, position } => {
                let (what, lost) = message(from, to, position);
                format!("deliver {what}{lost}")
            }
            Step::Overtake { from, to, position } => {
                format!("deliver ahead of earlier ones {}", message(from, to, position).0)
            }
            Step::Duplicate { from, to, position } => format!("deliver again {}", message(from, to, position).0),
            Step::Fire { node, timer } => format!("{}: timer {timer:?} fires", self.name(node)),
            Step::Crash { node } => format!("{} crashes", self.name(node)),
            Step::Restart { node } => format!("{} restarts from its records", self.name(node)),
            Step::Submit { node, seq } => format!("a client sends put #{seq} to {}", self.name(node)),
            Step::Wave { partition } => {
                let mut copy = world.clone();
                let delivered = self.wave(&mut copy, partition);
                let sent: usize = world.links.iter().map(Vec::len).sum();
                let list: Vec<String> = delivered
                    .iter()
                    .map(|(from, to, msg)| format!("{}->{} {}", self.name(*from), self.name(*to), P::message_kind(msg)))
                    .collect();
                format!(
                    "wave within {}: {}{}",
                    self.partition_text(partition),
                    if list.is_empty() { "nothing delivered".to_string() } else { list.join(", ") },
                    if sent > delivered.len() { format!(" ({} lost)", sent - delivered.len()) } else { String::new() }
                )
            }
        }
    }
}

/// What a search found.
#[derive(Debug, PartialEq)]
pub struct Exploration {
    /// Distinct states in the last (deepest) round's table.
    pub unique_states: usize,
    /// States generated over every round.
    pub states: usize,
    /// The deepest bound searched completely (the violation's length when one was found).
    pub max_depth: usize,
    /// The shortest run that broke a rule: its steps, and the checker's violations at its end.
    pub counterexample: Option<(Vec<String>, Vec<String>)>,
    /// The same run as a message-sequence figure ([`qlab_report::sequence`]).
    pub chart: Option<SequenceChart>,
    /// The same run as a JSON list of [`Step`]s, one per line: what `qlab check
    /// --replay` takes.
    pub run: Option<String>,
    /// Whether the time limit cut the search short: then nothing is claimed beyond `max_depth`.
    pub timed_out: bool,
    pub seconds: f64,
    /// How many of the steps taken reached each of the protocol's coverage marks
    /// (every mark listed, so one never reached shows as a zero).
    pub coverage: BTreeMap<&'static str, u64>,
}

/// Every coverage mark of `P` at zero.
fn no_coverage<P: Protocol>() -> BTreeMap<&'static str, u64> {
    P::coverage_marks().iter().map(|mark| (mark.name, 0)).collect()
}

/// Add what `world`'s last step reached to `coverage`.
fn count_marks<P: Protocol>(coverage: &mut BTreeMap<&'static str, u64>, world: &World<P>) {
    for mark in &world.reached {
        *coverage.entry(mark.name).or_default() += 1;
    }
}

/// How a search runs: on how many threads, and for how long at most.
#[derive(Clone, Copy, Debug)]
pub struct SearchLimits {
    pub threads: usize,
    pub time_limit: Duration,
    /// Print each round's bound, states and time on standard error.
    pub verbose: bool,
    /// Random walks: how many violating walks are shrunk before the shortest is kept.
    pub walks_kept: usize,
    /// Random walks: stop once this many steps were walked (a budget that, unlike
    /// time, is the same on every machine).
    pub walk_steps: Option<usize>,
    /// Random walks guided by the coverage marks: a run that reaches a combination of
    /// marks no run reached before is kept, and later walks set out from the states of
    /// the kept runs (as a coverage-guided fuzzer keeps inputs), so a deep situation is
    /// reached in stages, each stage a short walk from the last.
    pub guided: bool,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            time_limit: Duration::from_secs(600),
            verbose: false,
            walks_kept: 32,
            walk_steps: None,
            guided: false,
        }
    }
}

/// Random runs, then the shortest of them made 1-minimal: the search for violations too
/// deep for the exhaustive rounds to reach in the time there is. Each walk draws its own
/// weights for the kinds of step (swarm testing: a walk that favours timer firings and
/// one that favours deliveries reach different corners), then takes up to
/// `bounds.max_depth` steps. The first `limits.walks_kept` violating walks are each shrunk by
/// removing one step, then two, at a time for as long as the rest, replayed, still
/// breaks a rule, and the shortest result is kept: a run no step or pair of steps of
/// which can be left out, not necessarily the shortest run there is.
pub fn random_walks<P: Explorable>(explorer: &Explorer<P>, seed: u64, limits: SearchLimits) -> Exploration {
    use rand::RngExt;
    let started = Instant::now();
    let deadline = started + limits.time_limit;
    let initial = explorer.initial();
    let found: Mutex<Vec<Vec<Step<P::Timer>>>> = Mutex::new(Vec::new());
    let generated = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let coverage = Mutex::new(no_coverage::<P>());
    // Guided walks: the runs kept for reaching a new combination of marks, and the
    // combinations seen (each mark with how often the run reached it, up to twice).
    let kept: Mutex<Vec<Kept<P>>> = Mutex::new(vec![(initial.clone(), Vec::new(), BTreeMap::new())]);
    let combinations: Mutex<BTreeSet<MarkCounts>> = Mutex::new(BTreeSet::from([BTreeMap::new()]));
    std::thread::scope(|scope| {
        for thread in 0..limits.threads.max(1) {
            let (initial, found, generated, stop) = (&initial, &found, &generated, &stop);
            let (coverage, kept, combinations) = (&coverage, &kept, &combinations);
            scope.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(thread as u64));
                let mut walks = 0u64;
                let mut reached = no_coverage::<P>();
                while !stop.load(Ordering::Relaxed) {
                    walks += 1;
                    if walks.is_multiple_of(64) && Instant::now() >= deadline {
                        break;
                    }
                    let weights: [f64; 7] = std::array::from_fn(|_| rng.random_range(0.05..1.0));
                    let (mut world, mut path, mut marks) = if limits.guided {
                        // Uniformly among the kept runs: favouring the rarest marks'
                        // runs (a fuzzer's energy schedule) found the NEW-VIEW mutant
                        // from none of six seeds, uniform choice from one.
                        let kept = kept.lock().expect("unpoisoned");
                        kept[rng.random_range(0..kept.len())].clone()
                    } else {
                        (initial.clone(), Vec::new(), BTreeMap::new())
                    };
                    let walk_start = path.len();
                    while path.len() < explorer.bounds.max_depth && world.is_safe() {
                        let steps = explorer.steps(&world);
                        let total: f64 = steps.iter().map(|step| weights[kind(step)]).sum();
                        if steps.is_empty() {
                            break;
                        }
                        let mut pick = rng.random_range(0.0..total);
                        let step = *steps
                            .iter()
                            .find(|step| {
                                pick -= weights[kind(step)];
                                pick < 0.0
                            })
                            .unwrap_or(steps.last().expect("not empty"));
                        world = explorer.apply(&world, &step);
                        path.push(step);
                        count_marks(&mut reached, &world);
                        if limits.guided && !world.reached.is_empty() {
                            for mark in &world.reached {
                                let count = marks.entry(mark.name).or_insert(0u8);
                                *count = (*count + 1).min(2);
                            }
                            if world.is_safe() && combinations.lock().expect("unpoisoned").insert(marks.clone()) {
                                let mut kept = kept.lock().expect("unpoisoned");
                                if kept.len() < MAX_KEPT_RUNS {
                                    kept.push((world.clone(), path.clone(), marks.clone()));
                                }
                            }
                        }
                    }
                    let walked = path.len() - walk_start;
                    let walked = generated.fetch_add(walked, Ordering::Relaxed) + walked;
                    if limits.walk_steps.is_some_and(|budget| walked >= budget) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if !world.is_safe() || (explorer.liveness_rounds.is_some() && !explorer.judge(&world).is_empty()) {
                        let mut kept = found.lock().expect("unpoisoned");
                        kept.push(path);
                        if kept.len() >= limits.walks_kept.max(1) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                let mut coverage = coverage.lock().expect("unpoisoned");
                for (name, count) in reached {
                    *coverage.entry(name).or_default() += count;
                }
            });
        }
    });
    let mut result = Exploration {
        unique_states: 0,
        states: generated.into_inner(),
        max_depth: explorer.bounds.max_depth,
        counterexample: None,
        chart: None,
        run: None,
        timed_out: false,
        seconds: 0.0,
        coverage: coverage.into_inner().expect("no thread panicked holding it"),
    };
    let shortest = found
        .into_inner()
        .expect("no thread panicked holding it")
        .into_iter()
        .map(|path| shrink(explorer, &initial, path))
        .min_by_key(Vec::len);
    match shortest {
        Some(path) => {
            result.max_depth = path.len();
            let (steps, end) = replay(explorer, &initial, &path).expect("a shrunk run replays");
            let violations = explorer.judge(&end);
            result.counterexample = Some((steps, violations));
            result.chart = Some(sequence_chart(explorer, &initial, &path));
            result.run = Some(run_json(&path));
        }
        // Nothing found: cut short by the clock unless the step budget was spent.
        None => result.timed_out = limits.walk_steps.is_none_or(|budget| result.states < budget),
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// How often a run reached each coverage mark, counted up to twice.
type MarkCounts = BTreeMap<&'static str, u8>;

/// A run kept by a guided search: the state it reached, its steps, and its marks.
type Kept<P> = (World<P>, Vec<Step<<P as Protocol>::Timer>>, MarkCounts);

/// At most this many runs are kept for guided walks to set out from (each holds a
/// whole cluster's state).
const MAX_KEPT_RUNS: usize = 20_000;

/// The longest message label a figure shows (the rest is cut with an ellipsis).
const LABEL_CHARS: usize = 44;

/// `path` replayed from `initial` as a message-sequence figure: each delivered message
/// an arrow from the step that sent it (0: the replicas' start) to the step that
/// delivered it, each replica's own event a mark, the checker's verdict at the end. The
/// step each message was sent in is followed beside the links, as the links themselves
/// are: appended on send, cut on delivery and on the receiver's crash.
pub fn sequence_chart<P: Explorable>(
    explorer: &Explorer<P>,
    initial: &World<P>,
    path: &[Step<P::Timer>],
) -> SequenceChart {
    let n = explorer.instances();
    let mut sent_at: Vec<Vec<usize>> = initial.links.iter().map(|link| vec![0; link.len()]).collect();
    let mut world = initial.clone();
    let mut events = Vec::new();
    let label = |msg: &P::Message| {
        let text = format!("{msg:?}");
        match text.char_indices().nth(LABEL_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    };
    for (i, step) in path.iter().enumerate() {
        let at = i + 1;
        let mut kept: Vec<usize> = world.links.iter().map(Vec::len).collect();
        match *step {
            Step::Deliver { from, to, position }
            | Step::Overtake { from, to, position }
            | Step::Duplicate { from, to, position } => {
                let l = (from * n + to) as usize;
                let label = label(&world.links[l][position]);
                events.push(SequenceEvent::Message {
                    from,
                    to,
                    sent_at: sent_at[l][position],
                    delivered_at: at,
                    label,
                });
                match step {
                    Step::Deliver { .. } => {
                        sent_at[l].drain(..=position);
                    }
                    Step::Overtake { .. } => {
                        sent_at[l].remove(position);
                    }
                    _ => {}
                }
                kept[l] = sent_at[l].len();
            }
            Step::Crash { node } => {
                for from in 0..n {
                    let l = (from * n + node) as usize;
                    sent_at[l].clear();
                    kept[l] = 0;
                }
                events.push(SequenceEvent::Local { node, at, label: "crashes".into(), mark: Mark::Crash });
            }
            Step::Fire { node, timer } => {
                events.push(SequenceEvent::Local { node, at, label: format!("{timer:?} fires"), mark: Mark::Timer });
            }
            Step::Restart { node } => {
                events.push(SequenceEvent::Local { node, at, label: "restarts".into(), mark: Mark::Restart });
            }
            Step::Submit { node, seq } => {
                events.push(SequenceEvent::Local {
                    node,
                    at,
                    label: format!("client: put #{seq}"),
                    mark: Mark::Command,
                });
            }
            Step::Wave { partition } => {
                let mut copy = world.clone();
                let delivered = explorer.wave(&mut copy, partition);
                // The wave takes every link's messages in order: match them up to their sends.
                let mut taken = vec![0usize; sent_at.len()];
                for (from, to, msg) in &delivered {
                    let l = (from * n + to) as usize;
                    events.push(SequenceEvent::Message {
                        from: *from,
                        to: *to,
                        sent_at: sent_at[l][taken[l]],
                        delivered_at: at,
                        // A wave draws many arrows in one row: the kind of message only.
                        label: P::message_kind(msg).to_string(),
                    });
                    taken[l] += 1;
                }
                for (l, sent) in sent_at.iter_mut().enumerate() {
                    sent.clear();
                    kept[l] = 0;
                }
            }
        }
        world = explorer.apply(&world, step);
        for (l, link) in world.links.iter().enumerate() {
            sent_at[l].extend(std::iter::repeat_n(at, link.len() - kept[l]));
        }
    }
    SequenceChart {
        title: String::new(),
        columns: (0..n).map(|i| explorer.name(i)).collect(),
        steps: path.len(),
        events,
        violations: world.checker.violations().iter().map(ToString::to_string).collect(),
    }
}

/// Which weight of a random walk a step is drawn with.
fn kind<T>(step: &Step<T>) -> usize {
    match step {
        Step::Deliver { .. } => 0,
        Step::Overtake { .. } => 1,
        Step::Duplicate { .. } => 2,
        Step::Fire { .. } => 3,
        Step::Crash { .. } => 4,
        Step::Restart { .. } => 5,
        Step::Submit { .. } => 6,
        Step::Wave { .. } => 0,
    }
}

/// A run as JSON, one step per line (so a reader can delete a line to drop a step).
pub fn run_json<T: Serialize>(path: &[Step<T>]) -> String {
    let lines: Vec<String> = path.iter().map(|step| serde_json::to_string(step).expect("a step serializes")).collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

/// Replay `path` from `initial`, stopping at the first violation: each step's
/// description and the state reached, or `None` when a step cannot be taken (its
/// message, timer or replica is not there) or no rule is broken.
pub fn replay<P: Explorable>(
    explorer: &Explorer<P>,
    initial: &World<P>,
    path: &[Step<P::Timer>],
) -> Option<(Vec<String>, World<P>)> {
    let mut world = initial.clone();
    let mut steps = Vec::new();
    for step in path {
        if !explorer.steps(&world).contains(step) {
            return None;
        }
        steps.push(explorer.describe(&world, step));
        world = explorer.apply(&world, step);
        if !world.is_safe() {
            return Some((steps, world));
        }
    }
    // A run that ends safe may still fail to settle.
    (explorer.liveness_rounds.is_some() && !explorer.judge(&world).is_empty()).then_some((steps, world))
}

/// Replay a run given step by step (a `steps.json`, perhaps edited) from the initial
/// state, as the search would have taken it: the run's outcome as an [`Exploration`]
/// of one run, or which step cannot be taken (its message, timer or replica is not
/// there in the state the steps before it reached). The run stops at the first
/// violation, as a run of the search does; steps after it are an error too.
pub fn replay_run<P: Explorable>(explorer: &Explorer<P>, path: &[Step<P::Timer>]) -> Result<Exploration, String> {
    let started = Instant::now();
    let initial = explorer.initial();
    let mut world = initial.clone();
    let mut steps = Vec::new();
    let mut coverage = no_coverage::<P>();
    for (i, step) in path.iter().enumerate() {
        if !world.is_safe() {
            return Err(format!("step {} comes after the run already broke a rule at step {i}", i + 1));
        }
        if !explorer.steps(&world).contains(step) {
            return Err(format!(
                "step {} ({step:?}) cannot be taken: not possible in the state the steps before it reached",
                i + 1
            ));
        }
        steps.push(explorer.describe(&world, step));
        world = explorer.apply(&world, step);
        count_marks(&mut coverage, &world);
    }
    let violations = explorer.judge(&world);
    let broken = !violations.is_empty();
    Ok(Exploration {
        unique_states: 0,
        states: path.len(),
        max_depth: path.len(),
        counterexample: broken.then_some((steps, violations)),
        chart: broken.then(|| sequence_chart(explorer, &initial, path)),
        run: broken.then(|| run_json(path)),
        timed_out: false,
        seconds: started.elapsed().as_secs_f64(),
        coverage,
    })
}

/// Remove steps one at a time, then two at a time, while what is left still breaks a
/// rule, until no step and no pair of steps can go.
pub fn shrink<P: Explorable>(
    explorer: &Explorer<P>,
    initial: &World<P>,
    mut path: Vec<Step<P::Timer>>,
) -> Vec<Step<P::Timer>> {
    let violates = |candidate: &[Step<P::Timer>]| replay(explorer, initial, candidate).map(|(steps, _)| steps.len());
    'shorter: loop {
        for i in 0..path.len() {
            let mut candidate = path.clone();
            candidate.remove(i);
            if let Some(length) = violates(&candidate) {
                candidate.truncate(length);
                path = candidate;
                continue 'shorter;
            }
        }
        for i in 0..path.len() {
            for j in i + 1..path.len() {
                let mut candidate = path.clone();
                candidate.remove(j);
                candidate.remove(i);
                if let Some(length) = violates(&candidate) {
                    candidate.truncate(length);
                    path = candidate;
                    continue 'shorter;
                }
            }
        }
        return path;
    }
}

/// One round's shared state: the fingerprint table (state → most steps left when it
/// was expanded), the first counterexample, and the counters.
struct Round<T> {
    expanded: DashMap<u64, u16>,
    found: Mutex<Option<Vec<Step<T>>>>,
    stop: AtomicBool,
    generated: AtomicUsize,
    deadline: Instant,
    /// Steps of this round that reached each coverage mark.
    coverage: Mutex<BTreeMap<&'static str, u64>>,
}

/// Search by iterative deepening up to `explorer.bounds.max_depth`; stop at the first
/// bound with a violation, whose run is then one of the shortest.
pub fn explore<P: Explorable>(explorer: Explorer<P>) -> Exploration {
    explore_with(&explorer, SearchLimits::default())
}

pub fn explore_with<P: Explorable>(explorer: &Explorer<P>, limits: SearchLimits) -> Exploration {
    let started = Instant::now();
    let initial = explorer.initial();
    let mut states = 0;
    let mut result = Exploration {
        unique_states: 0,
        states: 0,
        max_depth: 0,
        counterexample: None,
        chart: None,
        run: None,
        timed_out: false,
        seconds: 0.0,
        coverage: no_coverage::<P>(),
    };
    for bound in 1..=explorer.bounds.max_depth {
        let round = Round {
            expanded: DashMap::new(),
            found: Mutex::new(None),
            stop: AtomicBool::new(false),
            generated: AtomicUsize::new(0),
            deadline: started + limits.time_limit,
            coverage: Mutex::new(no_coverage::<P>()),
        };
        search_round(explorer, &initial, bound, &round, limits.threads.max(1));
        states += round.generated.load(Ordering::Relaxed);
        // The deepest round's counts: every shallower round's steps are among its own.
        result.coverage = round.coverage.into_inner().expect("no thread panicked holding it");
        result.unique_states = round.expanded.len();
        result.states = states;
        if limits.verbose {
            eprintln!(
                "depth {bound}: {} distinct states, {states} generated in all, {:.1} s",
                result.unique_states,
                started.elapsed().as_secs_f64()
            );
        }
        if let Some(path) = round.found.into_inner().expect("no thread panicked holding it") {
            let mut world = initial.clone();
            let mut steps = Vec::new();
            for step in &path {
                steps.push(explorer.describe(&world, step));
                world = explorer.apply(&world, step);
            }
            let violations = explorer.judge(&world);
            result.max_depth = path.len();
            result.counterexample = Some((steps, violations));
            result.chart = Some(sequence_chart(explorer, &initial, &path));
            result.run = Some(run_json(&path));
            break;
        }
        if Instant::now() >= round.deadline {
            result.timed_out = true;
            break;
        }
        result.max_depth = bound;
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

/// A state and the run that reached it.
type Subtree<P> = (World<P>, Vec<Step<<P as Protocol>::Timer>>);

/// One bounded depth-first search. The first levels are expanded here until there are
/// enough subtrees to share out; each thread then takes subtrees from a common list.
fn search_round<P: Explorable>(
    explorer: &Explorer<P>,
    initial: &World<P>,
    bound: usize,
    round: &Round<P::Timer>,
    threads: usize,
) {
    let mut subtrees: Vec<Subtree<P>> = vec![(initial.clone(), Vec::new())];
    while subtrees.len() < threads * 16 && subtrees.iter().all(|(_, path)| path.len() < bound) {
        let mut next = Vec::new();
        for (world, path) in subtrees {
            let left = (bound - path.len()) as u16;
            let fingerprint = explorer.fingerprint(&world);
            if round.expanded.get(&fingerprint).is_some_and(|seen| *seen >= left) {
                continue;
            }
            round.expanded.insert(fingerprint, left);
            if !world.is_safe() {
                round.found.lock().expect("unpoisoned").get_or_insert(path);
                round.stop.store(true, Ordering::Relaxed);
                return;
            }
            for step in explorer.steps(&world) {
                let mut longer = path.clone();
                longer.push(step);
                let reached = explorer.apply(&world, &step);
                count_marks(&mut round.coverage.lock().expect("unpoisoned"), &reached);
                next.push((reached, longer));
            }
        }
        if next.is_empty() {
            return;
        }
        subtrees = next;
    }
    // Violations at the shallowest level are found first: look before descending.
    if let Some((_, path)) = subtrees.iter().find(|(world, _)| !world.is_safe()) {
        round.found.lock().expect("unpoisoned").get_or_insert(path.clone());
        return;
    }
    let queue = Mutex::new(subtrees);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !round.stop.load(Ordering::Relaxed) {
                    let Some((world, mut path)) = queue.lock().expect("unpoisoned").pop() else { break };
                    dfs(explorer, &world, &mut path, bound, round);
                }
            });
        }
    });
}

fn dfs<P: Explorable>(
    explorer: &Explorer<P>,
    world: &World<P>,
    path: &mut Vec<Step<P::Timer>>,
    bound: usize,
    round: &Round<P::Timer>,
) {
    if round.stop.load(Ordering::Relaxed) {
        return;
    }
    if !world.is_safe() {
        round.found.lock().expect("unpoisoned").get_or_insert_with(|| path.clone());
        round.stop.store(true, Ordering::Relaxed);
        return;
    }
    let left = bound - path.len();
    if left == 0 {
        // Each state is judged once, at the shallowest depth it was found (the
        // earlier rounds' bounds); a state seen before is not judged again.
        let unseen = || match round.expanded.entry(explorer.fingerprint(world)) {
            dashmap::Entry::Vacant(slot) => {
                slot.insert(0);
                true
            }
            dashmap::Entry::Occupied(_) => false,
        };
        if explorer.liveness_rounds.is_some() && unseen() && !explorer.judge(world).is_empty() {
            round.found.lock().expect("unpoisoned").get_or_insert_with(|| path.clone());
            round.stop.store(true, Ordering::Relaxed);
        }
        return;
    }
    // Expanded before with at least as many steps left: nothing new below.
    let fingerprint = explorer.fingerprint(world);
    let left_u16 = left as u16;
    match round.expanded.entry(fingerprint) {
        dashmap::Entry::Occupied(mut seen) => {
            if *seen.get() >= left_u16 {
                return;
            }
            seen.insert(left_u16);
        }
        dashmap::Entry::Vacant(slot) => {
            slot.insert(left_u16);
        }
    }
    if round.generated.load(Ordering::Relaxed) % 4096 == 0 && Instant::now() >= round.deadline {
        round.stop.store(true, Ordering::Relaxed);
        return;
    }
    for step in explorer.steps(world) {
        round.generated.fetch_add(1, Ordering::Relaxed);
        let next = explorer.apply(world, &step);
        if !next.reached.is_empty() {
            count_marks(&mut round.coverage.lock().expect("unpoisoned"), &next);
        }
        path.push(step);
        dfs(explorer, &next, path, bound, round);
        path.pop();
        if round.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}
