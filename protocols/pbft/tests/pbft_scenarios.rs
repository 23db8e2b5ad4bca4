//! PBFT scenarios (Castro & Liskov 1999), with a small in-test network that delivers
//! every message between replicas driven through the sans-IO interface: the normal
//! case; a message with a bad signature is dropped and counted; a request prepared in
//! view 0 keeps its sequence number through a view change after the primary crashes
//! (§4.4); checkpoints keep the log bounded; a lagging replica catches up by state
//! transfer; a NEW-VIEW whose O set drops a prepared request is refused; batched client
//! signatures are checked together, and one forged request in a batch is still found.

use qlab_core::ReplyBody;
use qlab_core::{Action, ClientId, Context, Event, NodeId, Op, Outbox, Protocol, Reply, Request};
use qlab_pbft::{
    Message, Pbft, PbftConfig, PbftTimer, Record, Signable, Signed, batch_digest, client_secret, node_secret,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::Arc;

type Out = Outbox<Message, PbftTimer, Record>;
/// (from, to, message) -> drop it?
type Filter = Box<dyn Fn(NodeId, NodeId, &Message) -> bool>;
const KEY_SEED: u64 = 5;

struct Replica {
    pbft: Pbft,
    rng: ChaCha8Rng,
    records: Vec<Record>,
    up: bool,
}

/// Replicas plus a FIFO of messages in flight; `deliver_all` runs until quiet.
struct Cluster {
    replicas: Vec<Replica>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    replies: Vec<(NodeId, Reply)>,
    committed: Vec<(NodeId, u64, qlab_core::Digest)>,
    /// Why each replica dropped or refused a message, in order (what `qlab replay` prints).
    reasons: Vec<(NodeId, String)>,
    now: u64,
    /// Drop what this returns true for.
    filter: Option<Filter>,
    /// Tell each step that more input is queued behind it (real mode's runtime does).
    input_waiting: bool,
}

impl Cluster {
    fn new(nodes: u32, config: PbftConfig) -> Self {
        let replicas = (0..nodes)
            .map(|id| Replica {
                pbft: Pbft::new(&config, NodeId(id), nodes),
                rng: ChaCha8Rng::seed_from_u64(id as u64),
                records: Vec::new(),
                up: true,
            })
            .collect();
        let mut cluster = Cluster {
            replicas,
            queue: VecDeque::new(),
            replies: Vec::new(),
            committed: Vec::new(),
            reasons: Vec::new(),
            now: 0,
            filter: None,
            input_waiting: false,
        };
        for id in 0..nodes {
            cluster.call(id, |p, ctx| p.on_start(ctx));
        }
        cluster
    }

    fn call(&mut self, id: u32, f: impl FnOnce(&mut Pbft, &mut Context<'_, Pbft>)) {
        let replica = &mut self.replicas[id as usize];
        if !replica.up {
            return;
        }
        let mut out = Out::default();
        // Explaining, as `qlab replay` does: the reasons must not change what a step does.
        let mut ctx =
            Context::new(self.now, &mut replica.rng, &mut out).explaining(true).with_input_waiting(self.input_waiting);
        f(&mut replica.pbft, &mut ctx);
        let nodes = self.replicas.len() as u32;
        for action in out.actions {
            match action {
                Action::Send { to, msg } => self.queue.push_back((NodeId(id), to, msg)),
                Action::Broadcast { msg } => {
                    for to in (0..nodes).filter(|t| *t != id) {
                        self.queue.push_back((NodeId(id), NodeId(to), msg.clone()));
                    }
                }
                Action::Persist { record } => self.replicas[id as usize].records.push(record),
                Action::Reply { reply } => self.replies.push((NodeId(id), reply)),
                Action::Observe { event: Event::Committed { slot, digest, .. } } => {
                    self.committed.push((NodeId(id), slot, digest))
                }
                Action::Ignored { why } => self.reasons.push((NodeId(id), why)),
                _ => {}
            }
        }
    }

    fn deliver_all(&mut self) {
        let mut steps = 0;
        while let Some((from, to, msg)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the cluster never went quiet");
            if self.filter.as_ref().is_some_and(|f| f(from, to, &msg)) || !self.replicas[from.0 as usize].up {
                continue;
            }
            self.call(to.0, |p, ctx| p.on_message(ctx, from, msg));
        }
    }

    fn request(&mut self, to: u32, client: u64, seq: u64, op: Op) {
        let request = signed_request(client, seq, op);
        self.call(to, |p, ctx| p.on_request(ctx, request));
    }

    fn timer(&mut self, id: u32, timer: PbftTimer) {
        self.call(id, |p, ctx| p.on_timer(ctx, timer));
    }

    fn crash(&mut self, id: u32) {
        self.replicas[id as usize].up = false;
    }

    /// Replies for (client, seq) from distinct replicas.
    fn answers(&self, client: u64, seq: u64) -> usize {
        let mut from: Vec<NodeId> =
            self.replies.iter().filter(|(_, r)| r.client.0 == client && r.seq == seq).map(|(n, _)| *n).collect();
        from.sort_unstable();
        from.dedup();
        from.len()
    }
}

fn signed_request(client: u64, seq: u64, op: Op) -> Request {
    use ed25519_dalek::Signer;
    let mut request = Request::new(ClientId(client), seq, op);
    let key = ed25519_dalek::SigningKey::from_bytes(&client_secret(KEY_SEED, client));
    request.signature = key.sign(&request.digest().0).to_bytes().to_vec();
    request
}

fn put(key: u64, value: u8) -> Op {
    Op::Put { key, value: vec![value] }
}

fn config(nodes: u32) -> PbftConfig {
    let mut config = PbftConfig::with_keys(KEY_SEED, nodes, 4);
    config.checkpoint_interval = 8;
    config.log_window = 32;
    config
}

#[test]
fn normal_case_commits_in_three_phases_and_every_replica_answers() {
    let mut c = Cluster::new(4, config(4));
    c.request(0, 0, 1, put(1, 7));
    c.deliver_all();
    assert_eq!(c.answers(0, 1), 4, "every replica executes and replies; the client needs f + 1 = 2");
    for r in &c.replicas {
        assert_eq!(r.pbft.last_executed(), 1);
        assert_eq!(r.pbft.kv().get(1), Some(&vec![7]));
    }
    // Persist-before-send: the prepared certificate is on record at every replica.
    for r in &c.replicas {
        assert!(r.records.iter().any(|rec| matches!(rec, Record::Prepared { .. })));
    }
}

#[test]
fn a_message_with_a_bad_signature_is_dropped_and_counted() {
    let mut c = Cluster::new(4, config(4));
    c.request(0, 0, 1, put(1, 7));
    // Intercept the primary's pre-prepare to replica 1 and tamper with it.
    let index = c
        .queue
        .iter()
        .position(|(from, to, m)| from.0 == 0 && to.0 == 1 && matches!(m, Message::PrePrepare(_)))
        .expect("a pre-prepare to n1");
    let (from, to, msg) = c.queue.remove(index).unwrap();
    let Message::PrePrepare(mut pp) = msg else { unreachable!() };
    pp.signature[0] ^= 1;
    let before = c.replicas[1].pbft.stats.bad_signatures;
    c.call(to.0, |p, ctx| p.on_message(ctx, from, Message::PrePrepare(pp)));
    assert_eq!(c.replicas[1].pbft.stats.bad_signatures, before + 1);
    assert_eq!(c.reasons, [(NodeId(1), "rejected pre_prepare 0/1: a signature does not verify".to_string())]);
    // A request whose client signature does not verify is refused the same way.
    let mut forged = Request::new(ClientId(1), 1, put(2, 9));
    forged.signature = vec![0; 64];
    let before = c.replicas[0].pbft.stats.bad_signatures;
    c.call(0, |p, ctx| p.on_request(ctx, forged));
    assert_eq!(c.replicas[0].pbft.stats.bad_signatures, before + 1);
    // The other backups still commit the genuine request (3 = 2f + 1 of 4).
    c.deliver_all();
    assert_eq!(c.replicas[2].pbft.last_executed(), 1);
    assert_eq!(c.replicas[0].pbft.kv().get(2), None, "the forged request never executed");
}

#[test]
fn a_request_prepared_in_view_0_commits_in_view_1_with_the_same_sequence_number() {
    let mut c = Cluster::new(4, config(4));
    // Commits never reach anyone: the request prepares everywhere but commits nowhere.
    c.filter = Some(Box::new(|_, _, m| matches!(m, Message::Commit(_))));
    c.request(0, 0, 1, put(1, 5));
    c.deliver_all();
    assert!(c.replicas.iter().all(|r| r.pbft.last_executed() == 0));
    c.filter = None;
    // The primary crashes; the backups' timers fire (the client's retry reached them).
    c.crash(0);
    for id in 1..4 {
        c.timer(id, PbftTimer::ViewChange);
    }
    c.deliver_all();
    for id in 1..4 {
        let r = &c.replicas[id].pbft;
        assert_eq!(r.view(), 1, "n{id}");
        assert!(!r.in_view_change(), "n{id} accepted the NEW-VIEW");
        assert_eq!(r.last_executed(), 1, "n{id} executed the request prepared in view 0");
        assert_eq!(r.kv().get(1), Some(&vec![5]));
    }
    // Same sequence number (slot 1) and digest on every replica that committed it.
    let slot1: Vec<_> = c.committed.iter().filter(|(_, s, _)| *s == 1).collect();
    assert_eq!(slot1.len(), 3);
    assert!(slot1.windows(2).all(|w| w[0].2 == w[1].2));
    // The new primary (n1) goes on with new requests at the next sequence number.
    c.request(1, 1, 1, put(2, 6));
    c.deliver_all();
    assert!(c.replicas[1..].iter().all(|r| r.pbft.last_executed() == 2));
}

#[test]
fn checkpoints_keep_the_log_bounded_over_100_000_requests() {
    const CLIENTS: u64 = 50;
    let mut cfg = PbftConfig::with_keys(KEY_SEED, 4, CLIENTS);
    // Batches of 50 requests (the 50th fills the batch and sends it), so 100,000
    // requests take 2,000 sequence numbers: 31 checkpoints at an interval of 64.
    cfg.max_batch = CLIENTS as usize;
    cfg.batch_delay_ns = 1;
    cfg.checkpoint_interval = 64;
    cfg.log_window = 256;
    let mut c = Cluster::new(4, cfg);
    let mut largest_log = 0;
    for i in 0..100_000u64 {
        c.request(0, i % CLIENTS, i / CLIENTS + 1, put(i % 16, i as u8));
        if i % CLIENTS == CLIENTS - 1 {
            c.deliver_all();
            largest_log = largest_log.max(c.replicas.iter().map(|r| r.pbft.log_len()).max().unwrap());
            c.replies.clear();
            c.committed.clear();
        }
    }
    assert!(c.replicas.iter().all(|r| r.pbft.last_executed() == 2_000));
    assert!(c.replicas.iter().all(|r| r.pbft.stable_seq() == 1_984), "the last checkpoint, 31 x 64");
    assert_eq!(c.replicas[0].pbft.stats.requests_executed, 100_000);
    // Sequence numbers with state kept: at most the checkpoint interval past the last
    // stable checkpoint (twice, counting prepared certificates), whatever the run length.
    assert!(largest_log <= 2 * 64 + 2, "largest log {largest_log}");
}

#[test]
fn a_replica_behind_a_stable_checkpoint_catches_up_by_state_transfer() {
    let mut c = Cluster::new(4, config(4));
    // n3 hears nothing of the normal case for 20 requests (f = 1: the others go on).
    c.filter = Some(Box::new(|_, to, m| to.0 == 3 && !matches!(m, Message::Checkpoint(_) | Message::State { .. })));
    for seq in 1..=20 {
        c.request(0, 0, seq, put(1, seq as u8));
        c.deliver_all();
    }
    // Checkpoints at 8 and 16 became stable; n3, which saw no pre-prepare, prepare or
    // commit, fetched the certified state each time instead of the discarded log.
    assert!(c.replicas[3].pbft.stable_seq() >= 16);
    assert_eq!(c.replicas[3].pbft.last_executed(), 16, "state transfer to the stable checkpoint");
    assert_eq!(c.replicas[3].pbft.stats.state_transfers, 2);
    assert!(c.committed.iter().all(|(node, _, _)| node.0 != 3), "n3 executed nothing itself");
    assert_eq!(c.replicas[3].pbft.kv().get(1), Some(&vec![16]), "the state as of the checkpoint at 16");
}

#[test]
fn a_new_view_that_drops_a_prepared_request_is_refused() {
    let mut c = Cluster::new(4, config(4));
    c.filter = Some(Box::new(|_, _, m| matches!(m, Message::Commit(_))));
    c.request(0, 0, 1, put(1, 5));
    c.deliver_all();
    c.filter = None;
    c.crash(0);
    // Collect the view-changes without delivering them, then let n1 (the new primary)
    // build its NEW-VIEW and strip the prepared request from O before n2 sees it.
    for id in 1..4 {
        c.timer(id, PbftTimer::ViewChange);
    }
    c.filter = Some(Box::new(|from, _, m| from.0 == 1 && matches!(m, Message::NewView(_))));
    c.deliver_all();
    c.filter = None;
    let nv = {
        // Rebuild what n1 sent from its NEW-VIEW: ask it again.
        let mut out = None;
        c.call(1, |p, ctx| p.on_message(ctx, NodeId(2), Message::FetchNewView { view: 1 }));
        while let Some((from, to, m)) = c.queue.pop_front() {
            if let Message::NewView(nv) = &m
                && from.0 == 1
                && to.0 == 2
            {
                out = Some(nv.clone());
            }
        }
        out.expect("n1's NEW-VIEW")
    };
    // A faulty new primary signs its own tampered NEW-VIEW: the signature verifies, so
    // only recomputing O from V can catch it.
    let mut tampered: Signed<qlab_pbft::NewView> = nv.clone();
    tampered.body.pre_prepares.clear();
    tampered.signature = {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&node_secret(KEY_SEED, 1));
        key.sign(&tampered.body.signing_digest()).to_bytes().to_vec()
    };
    assert!(c.replicas[2].pbft.in_view_change());
    c.reasons.clear();
    c.call(2, |p, ctx| p.on_message(ctx, NodeId(1), Message::NewView(tampered)));
    assert!(c.replicas[2].pbft.in_view_change(), "n2 recomputed O and refused the NEW-VIEW");
    assert_eq!(
        c.reasons,
        [(NodeId(2), "rejected new_view 1 from n1: O holds 0 pre-prepares, V implies 1".to_string())]
    );
    c.call(2, |p, ctx| p.on_message(ctx, NodeId(1), Message::NewView(nv)));
    assert!(!c.replicas[2].pbft.in_view_change(), "the genuine NEW-VIEW is accepted");
}

#[test]
fn batched_requests_are_verified_together_and_a_forged_one_is_still_found() {
    let mut config = config(4);
    config.batch_delay_ns = 1_000_000;
    let mut c = Cluster::new(4, config);
    // The primary collects three genuine requests and one whose signature belongs to
    // another request; when the batch closes it checks them together, finds the batch
    // bad, checks one by one, and proposes only the genuine three.
    for client in 0..3 {
        c.request(0, client, 1, put(client, 1));
    }
    let mut forged = Request::new(ClientId(3), 1, put(3, 9));
    forged.signature = signed_request(3, 2, put(3, 9)).signature;
    c.call(0, |p, ctx| p.on_request(ctx, forged));
    assert_eq!(c.replicas[0].pbft.stats.signatures_verified, 0, "nothing checked before the batch closes");
    c.timer(0, PbftTimer::Flush);
    assert_eq!(c.replicas[0].pbft.stats.bad_signatures, 1);
    let before: Vec<u64> = c.replicas.iter().map(|r| r.pbft.stats.signatures_verified).collect();
    c.deliver_all();
    for (id, r) in c.replicas.iter().enumerate() {
        assert_eq!(r.pbft.last_executed(), 1, "n{id}: one batch");
        assert_eq!(r.pbft.kv().get(3), None, "n{id}: the forged request never executed");
        assert_eq!(r.pbft.kv().get(2), Some(&vec![1]));
    }
    // A backup checks the three client signatures once each (as one batch), plus the
    // pre-prepare, 2 other prepares and 3 other commits.
    assert_eq!(c.replicas[1].pbft.stats.signatures_verified - before[1], 3 + 1 + 2 + 3);

    // A faulty primary that slips a forged request into a signed pre-prepare: backups
    // refuse the whole pre-prepare and count the bad signature.
    let batch: Vec<Arc<Request>> =
        vec![Arc::new(signed_request(0, 2, put(0, 2))), Arc::new(signed_request(1, 2, put(1, 2))), {
            let mut forged = Request::new(ClientId(2), 2, put(2, 2));
            forged.signature = vec![7; 64];
            Arc::new(forged)
        }];
    let body = qlab_pbft::PrePrepare { view: 0, seq: 2, digest: batch_digest(&batch), batch };
    let key = ed25519_dalek::SigningKey::from_bytes(&node_secret(KEY_SEED, 0));
    use ed25519_dalek::Signer;
    let signature = key.sign(&body.signing_digest()).to_bytes().to_vec();
    let pp = Signed { body, signer: NodeId(0), signature };
    let bad_before = c.replicas[1].pbft.stats.bad_signatures;
    c.call(1, |p, ctx| p.on_message(ctx, NodeId(0), Message::PrePrepare(pp)));
    assert_eq!(c.replicas[1].pbft.stats.bad_signatures, bad_before + 1);
    assert!(c.queue.is_empty(), "no prepare for a pre-prepare with a forged request");
}

#[test]
fn a_backup_that_receives_a_request_tells_the_client_who_the_primary_is() {
    let mut c = Cluster::new(4, config(4));
    c.request(2, 0, 1, put(1, 7));
    let hint = c.replies.iter().find(|(from, r)| from.0 == 2 && r.client.0 == 0).map(|(_, r)| r.body.clone());
    assert_eq!(hint, Some(ReplyBody::NotLeader { leader: Some(NodeId(0)) }));
    c.deliver_all();
    assert_eq!(c.answers(0, 1), 4, "the backup passed the request on and it executed");
}

/// A copy of `msg` with its signature (or, for a forwarded request, its client's
/// signature) damaged; `None` for the unsigned kinds.
fn tampered(msg: &Message) -> Option<Message> {
    let mut msg = msg.clone();
    match &mut msg {
        Message::PrePrepare(s) => s.signature[0] ^= 1,
        Message::Prepare(s) | Message::Commit(s) => s.signature[0] ^= 1,
        Message::Checkpoint(s) => s.signature[0] ^= 1,
        Message::ViewChange(s) => s.signature[0] ^= 1,
        Message::NewView(s) => s.signature[0] ^= 1,
        Message::Forward(r) => {
            let mut request = (**r).clone();
            request.signature[0] ^= 1;
            *r = Arc::new(request);
        }
        _ => return None,
    }
    Some(msg)
}

/// What a replica's state is, as far as its public view of itself goes.
fn fingerprint(p: &Pbft) -> (u64, bool, u64, u64, usize, qlab_core::Digest) {
    (p.view(), p.in_view_change(), p.last_executed(), p.stable_seq(), p.log_len(), p.kv().state_digest())
}

/// Before each delivery, hand every kind of signed message not tried yet, damaged, to
/// its receiver: it must be refused and counted, with no state change and nothing sent.
fn deliver_probing(c: &mut Cluster, tried: &mut std::collections::BTreeSet<&'static str>) {
    loop {
        let pending: Vec<(NodeId, NodeId, Message)> = c.queue.iter().cloned().collect();
        for (from, to, msg) in pending {
            let kind = Pbft::message_kind(&msg);
            if tried.contains(kind) {
                continue;
            }
            let Some(bad) = tampered(&msg) else { continue };
            let receiver = &c.replicas[to.0 as usize].pbft;
            let (before, bad_before) = (fingerprint(receiver), receiver.stats.bad_signatures);
            let (queued, replies) = (c.queue.len(), c.replies.len());
            c.call(to.0, |p, ctx| p.on_message(ctx, from, bad));
            let receiver = &c.replicas[to.0 as usize].pbft;
            assert_eq!(receiver.stats.bad_signatures, bad_before + 1, "{kind}: the bad signature was not counted");
            assert_eq!(fingerprint(receiver), before, "{kind}: a bad signature changed the receiver's state");
            assert_eq!((c.queue.len(), c.replies.len()), (queued, replies), "{kind}: a bad signature made it send");
            tried.insert(kind);
        }
        let Some((from, to, msg)) = c.queue.pop_front() else { break };
        c.call(to.0, |p, ctx| p.on_message(ctx, from, msg));
    }
}

#[test]
fn a_bad_signature_is_refused_before_it_changes_anything_for_every_message_type() {
    let mut c = Cluster::new(4, config(4));
    let mut tried = std::collections::BTreeSet::new();
    // Normal case and a forwarded request.
    c.request(0, 0, 1, put(1, 1));
    deliver_probing(&mut c, &mut tried);
    c.request(2, 1, 1, put(2, 1));
    deliver_probing(&mut c, &mut tried);
    // Up to the first checkpoint (every 8).
    for seq in 2..=8 {
        c.request(0, 0, seq, put(1, seq as u8));
        deliver_probing(&mut c, &mut tried);
    }
    // A view change: the backups time out, the next primary sends NEW-VIEW.
    for id in 1..4 {
        c.timer(id, PbftTimer::ViewChange);
    }
    deliver_probing(&mut c, &mut tried);
    let expected = ["pre_prepare", "prepare", "commit", "forward", "checkpoint", "view_change", "new_view"];
    for kind in expected {
        assert!(tried.contains(kind), "no {kind} was seen to tamper with; tried {tried:?}");
    }
    assert!(c.replicas.iter().all(|r| r.pbft.view() == 1 && !r.pbft.in_view_change()), "the view change completed");
}

/// Adaptive batching in real mode: requests that reach the primary while more input is
/// queued behind them wait, and when the runtime's queue empties
/// (`Protocol::on_input_drained`) their signatures are checked together and they go
/// out as one pre-prepare, which commits everywhere like any other.
#[test]
fn requests_that_arrived_together_go_out_as_one_pre_prepare() {
    let mut c = Cluster::new(4, config(4));
    c.input_waiting = true;
    for client in 0..3 {
        c.request(0, client, 1, put(client, 1));
    }
    let pre_prepares = |c: &Cluster| -> Vec<usize> {
        c.queue
            .iter()
            .filter_map(|(_, _, m)| match m {
                Message::PrePrepare(pp) => Some(pp.body.batch.len()),
                _ => None,
            })
            .collect()
    };
    assert!(pre_prepares(&c).is_empty(), "the primary waits while more input is queued");
    c.input_waiting = false;
    c.call(0, |p, ctx| p.on_input_drained(ctx));
    assert_eq!(pre_prepares(&c), vec![3, 3, 3], "one pre-prepare of all three to each backup");
    c.deliver_all();
    for client in 0..3 {
        assert_eq!(c.answers(client, 1), 4, "client {client}'s write executes at every replica");
    }
}
