//! Exhaustive search over the real protocol code (issue 42): every interleaving of
//! message deliveries, drops, duplications, timer firings, crashes, restarts and client
//! commands up to stated bounds, each explored state judged by the same safety checker
//! as every trial, and the *shortest* run that breaks a rule found first.
//!
//! The protocols are sans-IO state machines, so the search drives the replicas'
//! own code, not a separate specification: a state of the search ([`World`]) is every
//! replica's state (`None` while crashed), what each has persisted, the messages in
//! flight (a multiset: any may be delivered next, dropped, or delivered twice), each
//! replica's armed timers, what is left of each budget, and the checker that has read
//! every event the run emitted — its history (leaders per epoch, committed entries),
//! like the history variables of the Raft TLA+ specification, is part of the state.
//!
//! The engine is the `stateright` crate's checker (breadth-first, so the first
//! violation found is one of the shortest; states deduplicated by a 64-bit fingerprint
//! of a canonical rendering of the state). Time is abstract: a timer may fire whenever
//! it is armed, and each firing moves the replicas' clock on by more than any timeout,
//! so every time-based guard (check-quorum's "heard from a leader recently") sees the
//! steps as far apart. That over-approximates what timing can do, which is sound for
//! the safety of log reads; lease reads, whose safety rests on timing, are out of scope.
//! A crash loses nothing persisted: a replica persists before anything of a step
//! leaves it (as the real runtime does), so a restart rebuilds it from its records.

use qlab_check::SafetyChecker;
use qlab_core::{Action, ClientId, Context, NodeId, Observation, Op, Outbox, Protocol, Request};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

/// How far the search goes: each budget bounds one kind of step over a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Client commands (puts), each sent to a replica of the search's choosing.
    pub requests: u32,
    /// Crashes (each crashed replica may restart at any later step).
    pub crashes: u32,
    /// Messages lost in flight.
    pub drops: u32,
    /// Messages delivered a second time.
    pub duplicates: u32,
    /// Timer firings (elections, heartbeats, retransmissions) over the whole run.
    pub timer_firings: u32,
    /// Steps in a run.
    pub max_depth: usize,
}

/// One message in flight.
#[derive(Clone, Debug)]
pub struct Flight<M> {
    pub from: u32,
    pub to: u32,
    pub msg: M,
}

/// One state of the search: the whole cluster and what the checker has seen.
#[derive(Clone)]
pub struct World<P: Protocol> {
    pub replicas: Vec<Option<P>>,
    pub disks: Vec<Vec<P::Record>>,
    /// Kept sorted by their printed form, so equal multisets are equal vectors.
    pub in_flight: Vec<Flight<P::Message>>,
    pub timers: Vec<BTreeSet<P::Timer>>,
    pub requests_left: u32,
    pub crashes_left: u32,
    pub drops_left: u32,
    pub duplicates_left: u32,
    /// Timer firings so far: the abstract clock, and what the budget is held against.
    pub timer_firings: u32,
    pub checker: SafetyChecker,
}

impl<P> World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
    /// The state printed in one canonical order (every collection in it is ordered).
    fn canonical(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{} {} {} {} {}|{}",
            self.replicas,
            self.disks,
            self.in_flight,
            self.timers,
            self.requests_left,
            self.crashes_left,
            self.drops_left,
            self.duplicates_left,
            self.timer_firings,
            self.checker.history_fingerprint()
        )
    }

    /// Whether the checker has found anything.
    pub fn is_safe(&self) -> bool {
        self.checker.violations().is_empty()
    }
}

impl<P> Hash for World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical().hash(state);
    }
}

impl<P> PartialEq for World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl<P> Eq for World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
}

impl<P> Debug for World<P>
where
    P: Protocol + Debug,
    P::Record: Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// One step of a run. Messages are named by their place in the (sorted) flight list of
/// the state the step is taken from; the printed form says which message it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step<T> {
    Deliver { index: usize, what: String },
    Drop { index: usize, what: String },
    Duplicate { index: usize, what: String },
    Fire { node: u32, timer: T },
    Crash { node: u32 },
    Restart { node: u32 },
    Submit { node: u32, seq: u64 },
}

/// The search over protocol `P`: a cluster of `nodes` replicas configured by `config`.
pub struct Explorer<P: Protocol> {
    pub config: P::Config,
    pub nodes: u32,
    pub bounds: Bounds,
}

/// A protocol the search can drive: its state can be cloned and printed canonically,
/// and everything in a state can cross the checker's threads.
pub trait Explorable:
    Protocol<Message: Send + Sync, Record: Debug + Send + Sync, Timer: Send + Sync, Config: Send + Sync>
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<P> Explorable for P where
    P: Protocol<Message: Send + Sync, Record: Debug + Send + Sync, Timer: Send + Sync, Config: Send + Sync>
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Each timer firing moves the clock on by this much: more than any timeout.
const CLOCK_STEP_NS: u64 = 100_000_000_000;

impl<P> Explorer<P>
where
    P: Protocol + Clone + Debug,
    P::Record: Debug,
{
    /// Run one handler of `node` and carry out its actions on `world`.
    fn step(world: &mut World<P>, node: u32, handler: impl FnOnce(&mut P, &mut Context<'_, P>)) {
        let now = CLOCK_STEP_NS * (u64::from(world.timer_firings) + 1);
        let Some(replica) = world.replicas[node as usize].as_mut() else { return };
        let mut outbox: Outbox<P::Message, P::Timer, P::Record> = Outbox::default();
        // A fixed seed: the draws are timeouts' lengths, which abstract time ignores.
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(node));
        handler(replica, &mut Context::new(now, &mut rng, &mut outbox));
        let nodes = world.replicas.len() as u32;
        for action in outbox.actions {
            match action {
                Action::Persist { record } => {
                    let disk = &mut world.disks[node as usize];
                    if P::supersedes_earlier_records(&record) {
                        disk.clear();
                    }
                    disk.push(record);
                }
                Action::Send { to, msg } => world.in_flight.push(Flight { from: node, to: to.0, msg }),
                Action::Broadcast { msg } => {
                    for to in (0..nodes).filter(|to| *to != node) {
                        world.in_flight.push(Flight { from: node, to, msg: msg.clone() });
                    }
                }
                Action::SetTimer { timer, .. } => {
                    world.timers[node as usize].insert(timer);
                }
                Action::CancelTimer { timer } => {
                    world.timers[node as usize].remove(&timer);
                }
                Action::Observe { event } => {
                    world.checker.observe(&Observation { time: now, node: NodeId(node), event });
                }
                // No client waits in the search: replies and explanations go nowhere.
                Action::Reply { .. } | Action::Ignored { .. } => {}
            }
        }
        sort_flights(&mut world.in_flight);
    }

    /// The initial state: every replica started.
    pub fn initial(&self) -> World<P> {
        let n = self.nodes as usize;
        let mut world = World {
            replicas: (0..self.nodes).map(|id| Some(P::new(&self.config, NodeId(id), self.nodes))).collect(),
            disks: vec![Vec::new(); n],
            in_flight: Vec::new(),
            timers: vec![BTreeSet::new(); n],
            requests_left: self.bounds.requests,
            crashes_left: self.bounds.crashes,
            drops_left: self.bounds.drops,
            duplicates_left: self.bounds.duplicates,
            timer_firings: 0,
            checker: SafetyChecker::new().with_nodes(self.nodes),
        };
        for node in 0..self.nodes {
            Self::step(&mut world, node, |p, ctx| p.on_start(ctx));
        }
        world
    }

    /// Every step that can be taken from `world`.
    pub fn steps(&self, world: &World<P>) -> Vec<Step<P::Timer>> {
        let mut steps = Vec::new();
        let up = |node: u32| world.replicas[node as usize].is_some();
        let mut seen = BTreeSet::new();
        for (index, flight) in world.in_flight.iter().enumerate() {
            let what = format!("n{} -> n{}: {:?}", flight.from, flight.to, flight.msg);
            // Equal messages on one link are one choice, not several.
            if !seen.insert(what.clone()) {
                continue;
            }
            if up(flight.to) {
                steps.push(Step::Deliver { index, what: what.clone() });
                if world.duplicates_left > 0 {
                    steps.push(Step::Duplicate { index, what: what.clone() });
                }
            }
            if world.drops_left > 0 {
                steps.push(Step::Drop { index, what });
            }
        }
        for node in 0..self.nodes {
            if up(node) {
                if world.timer_firings < self.bounds.timer_firings {
                    steps.extend(world.timers[node as usize].iter().map(|timer| Step::Fire { node, timer: *timer }));
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
        match step {
            Step::Deliver { index, .. } => {
                let Flight { from, to, msg } = next.in_flight.remove(*index);
                Self::step(&mut next, to, |p, ctx| p.on_message(ctx, NodeId(from), msg));
            }
            Step::Duplicate { index, .. } => {
                let Flight { from, to, msg } = next.in_flight[*index].clone();
                next.duplicates_left -= 1;
                Self::step(&mut next, to, |p, ctx| p.on_message(ctx, NodeId(from), msg));
            }
            Step::Drop { index, .. } => {
                next.in_flight.remove(*index);
                next.drops_left -= 1;
            }
            Step::Fire { node, timer } => {
                next.timers[*node as usize].remove(timer);
                next.timer_firings += 1;
                let timer = *timer;
                Self::step(&mut next, *node, |p, ctx| p.on_timer(ctx, timer));
            }
            Step::Crash { node } => {
                next.replicas[*node as usize] = None;
                next.timers[*node as usize].clear();
                next.crashes_left -= 1;
            }
            Step::Restart { node } => {
                let replica = P::restore(&self.config, NodeId(*node), self.nodes, &next.disks[*node as usize]);
                next.replicas[*node as usize] = Some(replica);
                Self::step(&mut next, *node, |p, ctx| p.on_start(ctx));
            }
            Step::Submit { node, seq } => {
                next.requests_left -= 1;
                let request = Request {
                    client: ClientId(0),
                    seq: *seq,
                    op: Op::Put { key: 1, value: vec![*seq as u8] },
                    signature: Vec::new(),
                };
                Self::step(&mut next, *node, |p, ctx| p.on_request(ctx, request));
            }
        }
        next
    }
}

fn sort_flights<M: Debug>(flights: &mut [Flight<M>]) {
    flights.sort_by_cached_key(|f| format!("{} {} {:?}", f.from, f.to, f.msg));
}

impl<P: Explorable> stateright::Model for Explorer<P> {
    type State = World<P>;
    type Action = Step<P::Timer>;

    fn init_states(&self) -> Vec<World<P>> {
        vec![self.initial()]
    }

    fn actions(&self, world: &World<P>, actions: &mut Vec<Step<P::Timer>>) {
        // A state that broke a rule is where its run ends: its path is the counterexample.
        if world.is_safe() {
            actions.extend(self.steps(world));
        }
    }

    fn next_state(&self, world: &World<P>, step: Step<P::Timer>) -> Option<World<P>> {
        Some(self.apply(world, &step))
    }

    fn properties(&self) -> Vec<stateright::Property<Self>> {
        vec![stateright::Property::always("safety", |_, world: &World<P>| world.is_safe())]
    }
}

/// What a search found.
#[derive(Debug, PartialEq)]
pub struct Exploration {
    /// Distinct states visited, and all states generated.
    pub unique_states: usize,
    pub states: usize,
    /// The deepest run explored.
    pub max_depth: usize,
    /// The shortest run that broke a rule: its steps, and the checker's violations at its end.
    pub counterexample: Option<(Vec<String>, Vec<String>)>,
    pub seconds: f64,
}

/// Search breadth-first to `explorer.bounds.max_depth`; stop at the first violation.
pub fn explore<P: Explorable>(explorer: Explorer<P>) -> Exploration {
    use stateright::{Checker, Model};
    let started = std::time::Instant::now();
    let depth = explorer.bounds.max_depth;
    let checker = explorer.checker().target_max_depth(depth).spawn_bfs().join();
    let counterexample = checker.discovery("safety").map(|path| {
        let steps: Vec<String> = path.clone().into_actions().iter().map(describe).collect();
        let violations = path.last_state().checker.violations().iter().map(ToString::to_string).collect();
        (steps, violations)
    });
    Exploration {
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        max_depth: checker.max_depth(),
        counterexample,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// One step of a counterexample, as a line a reader can follow.
pub fn describe<T: Debug>(step: &Step<T>) -> String {
    match step {
        Step::Deliver { what, .. } => format!("deliver {what}"),
        Step::Drop { what, .. } => format!("drop {what}"),
        Step::Duplicate { what, .. } => format!("deliver again {what}"),
        Step::Fire { node, timer } => format!("n{node}: timer {timer:?} fires"),
        Step::Crash { node } => format!("n{node} crashes"),
        Step::Restart { node } => format!("n{node} restarts from its records"),
        Step::Submit { node, seq } => format!("a client sends put #{seq} to n{node}"),
    }
}
