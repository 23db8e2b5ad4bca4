//! Multi-Paxos scenarios, each driving single replicas by hand through the sans-IO
//! interface so the rule under test is isolated from timing: a chosen value survives a
//! change of leader; duelling proposers back off and one wins; a new leader fills a gap
//! with a no-op; a restarted acceptor keeps its promise.

use qlab_core::{Action, ClientId, Context, Event, NodeId, Op, Outbox, Protocol, Request};
use qlab_paxos::{Ballot, Message, Paxos, PaxosConfig, PaxosTimer, PromisedSlot, Record, Role, Value};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

type Out = Outbox<Message, PaxosTimer, Record>;

struct Replica {
    paxos: Paxos,
    rng: ChaCha8Rng,
    now: u64,
}

impl Replica {
    fn new(id: u32, nodes: u32) -> Self {
        Self::restored(id, nodes, &[])
    }
    fn restored(id: u32, nodes: u32, records: &[Record]) -> Self {
        let paxos = Paxos::restore(&PaxosConfig::default(), NodeId(id), nodes, records);
        Replica { paxos, rng: ChaCha8Rng::seed_from_u64(id as u64), now: 0 }
    }
    fn call(&mut self, f: impl FnOnce(&mut Paxos, &mut Context<'_, Paxos>)) -> Out {
        let mut out = Out::default();
        // Explaining, as `qlab replay` does: the reasons must not change what a step does.
        let mut ctx = Context::new(self.now, &mut self.rng, &mut out).explaining(true);
        f(&mut self.paxos, &mut ctx);
        out
    }
    fn deliver(&mut self, from: u32, msg: Message) -> Out {
        self.call(|p, ctx| p.on_message(ctx, NodeId(from), msg))
    }
    fn timeout(&mut self) -> Out {
        self.call(|p, ctx| p.on_timer(ctx, PaxosTimer::LeaderTimeout))
    }
    fn request(&mut self, request: Request) -> Out {
        self.call(|p, ctx| p.on_request(ctx, request))
    }
}

fn command(seq: u64, value: &[u8]) -> Request {
    Request { client: ClientId(7), seq, op: Op::Put { key: 1, value: value.to_vec() }, signature: Vec::new() }
}

fn value_of(request: Request) -> Value {
    Value::Commands(vec![Arc::new(request)])
}

/// Every message a step sent, with its recipient (`None`: broadcast).
fn sent(out: &Out) -> Vec<(Option<NodeId>, Message)> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, msg } => Some((Some(*to), msg.clone())),
            Action::Broadcast { msg } => Some((None, msg.clone())),
            _ => None,
        })
        .collect()
}

/// Why the step dropped or refused what it was given (what `qlab replay` prints).
fn reasons(out: &Out) -> Vec<String> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Ignored { why } => Some(why.clone()),
            _ => None,
        })
        .collect()
}

fn persisted(out: &Out) -> Vec<Record> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist { record } => Some(record.clone()),
            _ => None,
        })
        .collect()
}

fn committed_slots(out: &Out) -> Vec<u64> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Observe { event: Event::Committed { slot, .. } } => Some(*slot),
            _ => None,
        })
        .collect()
}

fn only<T: Clone>(items: &[T]) -> T {
    assert_eq!(items.len(), 1, "expected exactly one");
    items[0].clone()
}

/// Make `candidate` leader with the promises of `voters`, returning what it sent.
fn elect(candidate: &mut Replica, voters: &mut [&mut Replica]) -> Out {
    let prepare = only(&sent(&candidate.timeout())).1;
    let mut last = Out::default();
    for voter in voters.iter_mut() {
        let from = voter.paxos.id().0;
        let promise = only(&sent(&voter.deliver(candidate.paxos.id().0, prepare.clone()))).1;
        assert!(matches!(promise, Message::Promise { .. }), "{promise:?}");
        last = candidate.deliver(from, promise);
    }
    assert_eq!(candidate.paxos.role(), Role::Leader);
    last
}

/// The accepts of one step as (first_slot, values).
fn accepts(out: &Out) -> Vec<(u64, Vec<Value>)> {
    sent(out)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Accept { first_slot, values, .. } => Some((first_slot, values)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_chosen_value_survives_a_change_of_leader() {
    let (mut a, mut b, mut c) = (Replica::new(0, 3), Replica::new(1, 3), Replica::new(2, 3));
    elect(&mut a, &mut [&mut b]);
    // A proposes v in slot 1; B accepts, so v is chosen (A and B are a majority).
    let v = command(1, b"v");
    let accept = accepts(&a.request(v.clone()));
    assert_eq!(accept, vec![(1, vec![value_of(v.clone())])]);
    let ballot_a = a.paxos.promised();
    let accepted = only(&sent(
        &b.deliver(0, Message::Accept { ballot: ballot_a, first_slot: 1, values: accept[0].1.clone(), commit: 0 }),
    ))
    .1;
    assert_eq!(committed_slots(&a.deliver(1, accepted)), vec![1], "chosen on A and B");
    // A crashes before anyone but A knows slot 1 is chosen. C never saw the value.
    assert!(c.paxos.accepted_at(1).is_none());
    let proposals = elect(&mut c, &mut [&mut b]);
    // C learned v from B's promise and proposes it again, in its own ballot.
    assert_eq!(accepts(&proposals), vec![(1, vec![value_of(v)])]);
    assert!(c.paxos.promised() > ballot_a);
}

#[test]
fn duelling_proposers_back_off_and_the_higher_ballot_wins() {
    let (mut a, mut b, mut c) = (Replica::new(0, 3), Replica::new(1, 3), Replica::new(2, 3));
    let prepare_a = only(&sent(&a.timeout())).1;
    let prepare_b = only(&sent(&b.timeout())).1;
    // C promises B's ballot (round 1, node 1) first; A's (round 1, node 0) is lower.
    let promise_b = only(&sent(&c.deliver(1, prepare_b))).1;
    let refusal = c.deliver(0, prepare_a);
    assert_eq!(reasons(&refusal), ["refused prepare from n0 for ballot 1.n0: we promised 1.n1"]);
    let nack = only(&sent(&refusal));
    assert!(matches!(nack, (Some(NodeId(0)), Message::Nack { .. })), "{nack:?}");
    let backoff = a.deliver(2, nack.1);
    assert_eq!(reasons(&backoff), ["steps down: n2 promised 1.n1, above our ballot 1.n0"]);
    assert_eq!(a.paxos.role(), Role::Follower, "A stops proposing when pre-empted");
    // A does not retry at once: it waits a fresh random timeout (the back-off).
    let retry = backoff
        .actions
        .iter()
        .find_map(|x| match x {
            Action::SetTimer { timer: PaxosTimer::LeaderTimeout, after } => Some(*after),
            _ => None,
        })
        .expect("a back-off timer");
    let config = PaxosConfig::default();
    assert!((config.leader_timeout_ns_min..=config.leader_timeout_ns_max).contains(&retry));
    assert!(sent(&backoff).is_empty(), "no new Prepare until the timer fires");
    b.deliver(2, promise_b);
    assert_eq!(b.paxos.role(), Role::Leader);
    // When A does try again it picks a round above the one that beat it.
    let prepare = only(&sent(&a.timeout())).1;
    let Message::Prepare { ballot, .. } = prepare else { panic!("{prepare:?}") };
    assert!(ballot > b.paxos.promised(), "{ballot:?}");
}

#[test]
fn a_new_leader_fills_a_gap_with_a_noop() {
    let (mut b, mut c) = (Replica::new(1, 3), Replica::new(2, 3));
    // B accepted slots 1 and 3 from an old leader (node 0); slot 2 never reached it.
    let old = Ballot { round: 1, node: NodeId(0) };
    let x = value_of(command(1, b"x"));
    let z = value_of(command(3, b"z"));
    b.deliver(0, Message::Accept { ballot: old, first_slot: 1, values: vec![x.clone()], commit: 0 });
    b.deliver(0, Message::Accept { ballot: old, first_slot: 3, values: vec![z.clone()], commit: 0 });
    let proposals = elect(&mut c, &mut [&mut b]);
    // Slots 1 and 3 are re-proposed as promised; the hole at 2 gets a no-op so 3 can commit.
    assert_eq!(accepts(&proposals), vec![(1, vec![x]), (2, vec![Value::Noop]), (3, vec![z.clone()])]);
    assert_eq!(c.paxos.accepted_at(2).map(|(_, v)| v.clone()), Some(Value::Noop));
    assert_eq!(c.paxos.accepted_at(3).map(|(b, v)| (*b, v.clone())), Some((c.paxos.promised(), z)));
}

#[test]
fn a_restarted_acceptor_keeps_its_promise() {
    let mut a = Replica::new(0, 3);
    let high = Ballot { round: 5, node: NodeId(2) };
    let out = a.deliver(2, Message::Prepare { ballot: high, commit: 0 });
    // The promise is persisted in the same step that answers it.
    assert_eq!(persisted(&out), vec![Record::Promised { ballot: high }]);
    assert!(matches!(only(&sent(&out)).1, Message::Promise { .. }));
    // Crash and restart from what was persisted.
    let mut a = Replica::restored(0, 3, &persisted(&out));
    assert_eq!(a.paxos.promised(), high);
    let low = Ballot { round: 4, node: NodeId(1) };
    let nack = only(&sent(&a.deliver(1, Message::Prepare { ballot: low, commit: 0 }))).1;
    assert_eq!(nack, Message::Nack { ballot: low, promised: high });
    let nack = only(&sent(
        &a.deliver(1, Message::Accept { ballot: low, first_slot: 1, values: vec![Value::Noop], commit: 0 }),
    ))
    .1;
    assert_eq!(nack, Message::Nack { ballot: low, promised: high });
    assert!(a.paxos.accepted_at(1).is_none(), "nothing accepted below the promise");
    // Its own next ballot is above the promise, too.
    let Message::Prepare { ballot, .. } = only(&sent(&a.timeout())).1 else { panic!() };
    assert!(ballot > high);
}

#[test]
fn promises_carry_accepted_values_above_the_candidates_commit_point_only() {
    let mut b = Replica::new(1, 3);
    let old = Ballot { round: 1, node: NodeId(0) };
    let values: Vec<Value> = (1..=4).map(|i| value_of(command(i, b"w"))).collect();
    b.deliver(0, Message::Accept { ballot: old, first_slot: 1, values: values.clone(), commit: 2 });
    assert_eq!(b.paxos.commit_index(), 2, "slots 1-2 chosen in the ballot B accepted them in");
    let candidate = Ballot { round: 2, node: NodeId(2) };
    let Message::Promise { accepted, .. } =
        only(&sent(&b.deliver(2, Message::Prepare { ballot: candidate, commit: 1 }))).1
    else {
        panic!()
    };
    let slots: Vec<(u64, bool)> = accepted.iter().map(|p: &PromisedSlot| (p.slot, p.chosen)).collect();
    // Slot 2 is known chosen; 3 and 4 are merely accepted (the candidate must pick by ballot).
    assert_eq!(slots, vec![(2, true), (3, false), (4, false)]);
}

#[test]
fn a_lagging_learner_catches_up_from_the_leader() {
    let (mut a, mut b) = (Replica::new(0, 3), Replica::new(1, 3));
    let mut c = Replica::new(2, 3);
    elect(&mut a, &mut [&mut b]);
    let ballot = a.paxos.promised();
    for seq in 1..=3 {
        let accept = accepts(&a.request(command(seq, b"v")));
        let reply = only(&sent(
            &b.deliver(0, Message::Accept { ballot, first_slot: accept[0].0, values: accept[0].1.clone(), commit: 0 }),
        ))
        .1;
        a.deliver(1, reply);
    }
    assert_eq!(a.paxos.commit_index(), 3);
    // C missed every Accept; a heartbeat tells it the commit point and it asks for the rest.
    c.now = 1;
    let out = c.deliver(0, Message::Heartbeat { ballot, commit: 3, read_round: 0 });
    let catch_up = sent(&out).into_iter().find(|(_, m)| matches!(m, Message::CatchUp { .. })).expect("catch-up");
    assert_eq!(catch_up, (Some(NodeId(0)), Message::CatchUp { from_slot: 1, resume: None }));
    let learn = only(&sent(&a.deliver(2, catch_up.1))).1;
    assert_eq!(committed_slots(&c.deliver(0, learn)), vec![1, 2, 3]);
    assert_eq!(c.paxos.chosen(), a.paxos.chosen());
}

/// A learner asks for the next chunk as soon as a `Learn` advances it, but a duplicated
/// (or stale) `Learn` that teaches nothing must not ask again: otherwise every copy the
/// network duplicates breeds another request and the requests multiply without bound.
#[test]
fn a_duplicated_learn_does_not_breed_catch_up_requests() {
    let mut c = Replica::new(2, 3);
    let ballot = Ballot { round: 1, node: NodeId(0) };
    c.now = 1;
    let out = c.deliver(0, Message::Heartbeat { ballot, commit: 2, read_round: 0 });
    assert!(sent(&out).iter().any(|(_, m)| *m == Message::CatchUp { from_slot: 1, resume: None }));
    let learn = Message::Learn { first_slot: 1, values: vec![value_of(command(1, b"a"))] };
    let asks = |out: &Out| sent(out).into_iter().filter(|(_, m)| matches!(m, Message::CatchUp { .. })).count();
    assert_eq!(asks(&c.deliver(0, learn.clone())), 1, "progress: ask for slot 2 at once");
    assert_eq!(asks(&c.deliver(0, learn)), 0, "the duplicate taught nothing");
    assert_eq!(c.paxos.commit_index(), 1);
}

/// Adaptive batching in real mode: commands that reach the proposer while more input
/// is queued behind them wait, and when the runtime's queue empties
/// (`Protocol::on_input_drained`) they fill one slot together; a command with nothing
/// queued behind it takes a slot of its own at once.
#[test]
fn commands_that_arrived_together_fill_one_slot() {
    let (mut a, mut b) = (Replica::new(0, 3), Replica::new(1, 3));
    elect(&mut a, &mut [&mut b]);
    for seq in 1..=3 {
        let mut out = Out::default();
        let mut ctx = Context::new(a.now, &mut a.rng, &mut out).with_input_waiting(true);
        a.paxos.on_request(&mut ctx, command(seq, &[seq as u8]));
        assert!(accepts(&out).is_empty(), "command {seq} waits while more input is queued");
    }
    let batches: Vec<usize> = accepts(&a.call(|p, ctx| p.on_input_drained(ctx)))
        .into_iter()
        .flat_map(|(_, values)| values)
        .map(|value| match value {
            Value::Commands(commands) => commands.len(),
            Value::Noop => 0,
        })
        .collect();
    assert_eq!(batches, vec![3], "all three in one slot's value");
    let accept = accepts(&a.request(command(4, b"4")));
    assert_eq!(accept.len(), 1, "with nothing queued behind it a command goes at once");
}
