//! A replica's state can be cloned and printed canonically (issue 42's explorer branches
//! from any state and fingerprints it): a clone steps exactly as the original does, and
//! two replicas that reached the same state by different paths print alike.

use qlab_core::{ClientId, Context, NodeId, Op, Outbox, Protocol, Request};
use qlab_raft::{Message, Raft, RaftConfig, RaftTimer, Record};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type Out = Outbox<Message, RaftTimer, Record>;

fn step(raft: &mut Raft, seed: u64, f: impl FnOnce(&mut Raft, &mut Context<'_, Raft>)) -> String {
    let mut out = Out::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    f(raft, &mut Context::new(1_000, &mut rng, &mut out));
    format!("{:?}", out.actions)
}

fn put(client: u64, seq: u64) -> Request {
    Request { client: ClientId(client), seq, op: Op::Put { key: 1, value: vec![seq as u8] }, signature: Vec::new() }
}

/// A one-node cluster elects itself on its first timeout and appends what clients send.
fn leader_with_requests(order: &[(u64, u64)]) -> Raft {
    let mut raft = Raft::new(&RaftConfig::default(), NodeId(0), 1);
    step(&mut raft, 1, |r, ctx| r.on_start(ctx));
    step(&mut raft, 2, |r, ctx| r.on_timer(ctx, RaftTimer::Election));
    for (client, seq) in order {
        step(&mut raft, 3, |r, ctx| r.on_request(ctx, put(*client, *seq)));
    }
    raft
}

#[test]
fn a_clone_steps_exactly_as_the_original() {
    let mut original = leader_with_requests(&[(1, 1), (2, 1)]);
    let mut clone = original.clone();
    assert_eq!(format!("{original:?}"), format!("{clone:?}"));
    for seed in 4..8 {
        let request = put(3, seed);
        let a = step(&mut original, seed, |r, ctx| r.on_request(ctx, request.clone()));
        let b = step(&mut clone, seed, |r, ctx| r.on_request(ctx, request));
        assert_eq!(a, b, "the same step emits the same actions");
    }
    assert_eq!(format!("{original:?}"), format!("{clone:?}"));
    assert!(original.is_leader() && original.log().len() >= 6);
}

/// The leader remembers each client's highest appended request; however many clients
/// and in whatever order they arrived, the state prints in one canonical form.
#[test]
fn equal_states_print_alike_whatever_the_insertion_order() {
    let clients: Vec<(u64, u64)> = (0..32).map(|c| (c, 1)).collect();
    let forward = leader_with_requests(&clients);
    let mut reversed_clients = clients.clone();
    reversed_clients.reverse();
    let reversed = leader_with_requests(&reversed_clients);
    let client_table = |raft: &Raft| {
        let text = format!("{raft:?}");
        let start = text.find("appended_requests").expect("the field is printed");
        text[start..].split('}').next().unwrap().to_string()
    };
    assert_eq!(client_table(&forward), client_table(&reversed));
}
