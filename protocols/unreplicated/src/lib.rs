//! # An unreplicated server: the baseline
//!
//! One server applies every client request to the key-value store as it arrives and
//! answers at once. There is no quorum, no log shipping and no election: the only
//! costs are the client's round trip and writing the request to the server's own log
//! before answering (the durability every protocol here also pays). It tolerates no
//! fault — the cluster is one node, and while it is down nothing is served — which is
//! what makes it the floor a replicated protocol's throughput and latency are read
//! against: whatever a protocol costs beyond this is the price of its fault tolerance.
//!
//! It speaks the checkers' vocabulary like the real protocols, so a run of it is judged
//! the same way: on start (and restart) it reports itself leader of epoch 1 with its log's
//! prefix digests, and each request it applies is one slot, reported committed and
//! applied with the hash chain of the log. Restart rebuilds the store from the persisted
//! requests, so a crash loses nothing that was answered.
//!
//! In a cluster of more than one node, nodes other than 0 are idle spares that redirect
//! clients to node 0 (so a client that guesses wrong finds the server) and report node 0
//! as the leader they know, as followers of the other protocols do.

use qlab_core::{Context, Digest, Event, KvStore, NodeId, OpResult, Protocol, Reply, ReplyBody, Request};
use serde::{Deserialize, Serialize};

/// The server: node 0.
pub const SERVER: NodeId = NodeId(0);

/// Nothing to configure: the baseline has no knobs by design.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UnreplicatedConfig {}

/// The server sends no messages; the type exists because every protocol has one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Message {}

/// No timers either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UnreplicatedTimer {}

/// What the server persists: each request it applied, in order (its log).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub request: Request,
}

pub struct Unreplicated {
    id: NodeId,
    store: KvStore,
    /// Slots applied so far (the log's length).
    applied: u64,
    /// `prefix_digests[k]`: the hash chain of the log up to slot `k` (`[0]` is the
    /// genesis value), what `Elected` and `Committed` report.
    prefix_digests: Vec<Digest>,
    /// Each slot's request digest (`entry_digests[k - 1]` is slot `k`'s).
    entry_digests: Vec<Digest>,
}

impl Unreplicated {
    fn is_server(&self) -> bool {
        self.id == SERVER
    }

    fn apply(&mut self, request: &Request) -> Option<OpResult> {
        let digest = request.digest();
        let prefix = *self.prefix_digests.last().expect("the genesis value is always there");
        self.applied += 1;
        self.entry_digests.push(digest);
        self.prefix_digests.push(prefix.chain(self.applied, &digest));
        self.store.apply(request)
    }
}

impl Protocol for Unreplicated {
    type Message = Message;
    type Timer = UnreplicatedTimer;
    type Record = Record;
    type Config = UnreplicatedConfig;

    fn new(_config: &UnreplicatedConfig, id: NodeId, _nodes: u32) -> Self {
        Unreplicated {
            id,
            store: KvStore::default(),
            applied: 0,
            prefix_digests: vec![Digest::GENESIS],
            entry_digests: Vec::new(),
        }
    }

    fn restore(config: &UnreplicatedConfig, id: NodeId, nodes: u32, records: &[Record]) -> Self {
        let mut server = Self::new(config, id, nodes);
        for record in records {
            server.apply(&record.request);
        }
        server
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if self.is_server() {
            // Leader of the one epoch there is, from slot 0: every slot it holds is committed.
            ctx.observe(Event::Elected { epoch: 1, log_from_slot: 0, log_prefix_digests: self.prefix_digests.clone() });
        }
        // Spares know the server as well as it knows itself: they send clients to it.
        ctx.observe(Event::LeaderKnown { epoch: 1, leader: SERVER });
    }

    fn on_message(&mut self, _ctx: &mut Context<'_, Self>, _from: NodeId, msg: Message) {
        match msg {}
    }

    fn on_timer(&mut self, _ctx: &mut Context<'_, Self>, timer: UnreplicatedTimer) {
        match timer {}
    }

    fn on_request(&mut self, ctx: &mut Context<'_, Self>, request: Request) {
        let (client, seq) = (request.client, request.seq);
        if !self.is_server() {
            ctx.reply(Reply { client, seq, body: ReplyBody::NotLeader { leader: Some(SERVER) } });
            return;
        }
        // A retry of what was applied is answered from the session table, not logged again.
        if seq <= self.store.last_applied_seq(client) {
            if let Some(result) = self.store.apply(&request) {
                ctx.reply(Reply { client, seq, body: ReplyBody::Done(result) });
            }
            return;
        }
        // Durable before answered: the driver writes the record before the reply leaves.
        ctx.persist(Record { request: request.clone() });
        let result = self.apply(&request).expect("a new request applies");
        let slot = self.applied;
        let digest = self.entry_digests[slot as usize - 1];
        ctx.observe(Event::Committed { slot, digest, prefix_digest: self.prefix_digests[slot as usize] });
        ctx.observe(Event::Applied { slot, digest });
        ctx.reply(Reply { client, seq, body: ReplyBody::Done(result) });
    }

    fn message_kind(msg: &Message) -> &'static str {
        match *msg {}
    }

    fn is_leader(&self) -> bool {
        self.is_server()
    }

    fn epoch(&self) -> u64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qlab_core::{Action, ClientId, Op, Outbox};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn step(server: &mut Unreplicated, request: Request) -> Vec<Action<Message, UnreplicatedTimer, Record>> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut outbox = Outbox::default();
        server.on_request(&mut Context::new(0, &mut rng, &mut outbox), request);
        outbox.actions
    }

    fn put(seq: u64, value: &str) -> Request {
        Request::new(ClientId(1), seq, Op::Put { key: 1, value: value.as_bytes().to_vec() })
    }

    /// The request is persisted before its reply, and reported committed and applied.
    #[test]
    fn a_request_is_logged_before_it_is_answered() {
        let mut server = Unreplicated::new(&UnreplicatedConfig::default(), SERVER, 1);
        let actions = step(&mut server, put(1, "a"));
        assert!(matches!(actions[0], Action::Persist { .. }), "{actions:?}");
        assert!(matches!(actions[1], Action::Observe { event: Event::Committed { slot: 1, .. } }), "{actions:?}");
        assert!(matches!(actions.last(), Some(Action::Reply { .. })), "{actions:?}");
    }

    /// A retry is answered from the session table: not logged, not a new slot.
    #[test]
    fn a_retry_is_applied_once() {
        let mut server = Unreplicated::new(&UnreplicatedConfig::default(), SERVER, 1);
        step(&mut server, put(1, "a"));
        let again = step(&mut server, put(1, "a"));
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(matches!(again[0], Action::Reply { .. }));
        assert_eq!(server.applied, 1);
    }

    /// Restart from the persisted requests rebuilds the same store and chain.
    #[test]
    fn restore_replays_the_log() {
        let config = UnreplicatedConfig::default();
        let mut server = Unreplicated::new(&config, SERVER, 1);
        let mut records = Vec::new();
        for (seq, value) in [(1, "a"), (2, "b"), (3, "c")] {
            for action in step(&mut server, put(seq, value)) {
                if let Action::Persist { record } = action {
                    records.push(record);
                }
            }
        }
        let restored = Unreplicated::restore(&config, SERVER, 1, &records);
        assert_eq!(restored.prefix_digests, server.prefix_digests);
        assert_eq!(restored.store.state_digest(), server.store.state_digest());
    }

    /// A spare redirects to the server.
    #[test]
    fn a_spare_redirects_to_the_server() {
        let mut spare = Unreplicated::new(&UnreplicatedConfig::default(), NodeId(1), 2);
        let actions = step(&mut spare, put(1, "a"));
        assert!(
            matches!(
                &actions[..],
                [Action::Reply { reply: Reply { body: ReplyBody::NotLeader { leader: Some(SERVER) }, .. } }]
            ),
            "{actions:?}"
        );
    }
}
