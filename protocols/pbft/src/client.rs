//! The PBFT client (Castro & Liskov §4.1): it signs each request, sends it to the
//! replica it believes is the primary, and accepts a result once `f + 1` replicas have
//! answered it identically — at least one of them is honest, so the result is the one
//! the honest replicas executed. Without enough matching answers before its timer fires
//! it sends the request to every replica (backups pass it on to the primary and start
//! their view-change timers, which is how a faulty primary gets replaced) and guesses
//! the next replica as primary. Retries keep the same (client, seq): the replicated
//! session table executes a request at most once.

use crate::faults_tolerated;
use ed25519_dalek::{Signer, SigningKey};
use qlab_core::{Client, ClientAction, ClientId, ClientOutbox, Nanos, NodeId, OpResult, Reply, ReplyBody, Request, ms};
use std::collections::{BTreeSet, HashMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PbftClientTimer {
    Retry,
}

#[derive(Clone, Debug)]
pub struct PbftClient {
    pub id: ClientId,
    nodes: u32,
    f: u32,
    key: SigningKey,
    primary_hint: u32,
    outstanding: Option<Request>,
    /// Replicas that answered the outstanding request, by result.
    answers: HashMap<OpResult, BTreeSet<NodeId>>,
    pub retry_timeout_ns: Nanos,
}

impl PbftClient {
    pub fn new(id: ClientId, nodes: u32, secret: [u8; 32]) -> Self {
        PbftClient {
            id,
            nodes,
            f: faults_tolerated(nodes),
            key: SigningKey::from_bytes(&secret),
            primary_hint: 0,
            outstanding: None,
            answers: HashMap::new(),
            retry_timeout_ns: ms(500),
        }
    }
}

impl Client for PbftClient {
    type Timer = PbftClientTimer;

    fn submit(&mut self, _now: Nanos, mut request: Request, out: &mut ClientOutbox<PbftClientTimer>) {
        assert!(self.outstanding.is_none(), "{}: one request at a time", self.id);
        request.signature = self.key.sign(&request.digest().0).to_bytes().to_vec();
        self.answers.clear();
        out.actions.push(ClientAction::Send { to: NodeId(self.primary_hint), request: request.clone() });
        out.actions.push(ClientAction::SetTimer { timer: PbftClientTimer::Retry, after: self.retry_timeout_ns });
        self.outstanding = Some(request);
    }

    fn on_reply(
        &mut self,
        _now: Nanos,
        from: NodeId,
        reply: Reply,
        out: &mut ClientOutbox<PbftClientTimer>,
    ) -> Option<OpResult> {
        let outstanding = self.outstanding.as_ref()?;
        if reply.client != self.id || reply.seq != outstanding.seq {
            return None;
        }
        let result = match reply.body {
            ReplyBody::Done(result) => result,
            ReplyBody::NotLeader { leader } => {
                // A backup's hint for the next request; this one it passes on itself.
                if let Some(leader) = leader.filter(|l| l.0 < self.nodes) {
                    self.primary_hint = leader.0;
                }
                return None;
            }
        };
        let voters = self.answers.entry(result.clone()).or_default();
        voters.insert(from);
        if voters.len() <= self.f as usize {
            return None;
        }
        self.outstanding = None;
        self.answers.clear();
        out.actions.push(ClientAction::CancelTimer { timer: PbftClientTimer::Retry });
        Some(result)
    }

    fn on_timer(&mut self, _now: Nanos, timer: PbftClientTimer, out: &mut ClientOutbox<PbftClientTimer>) {
        let PbftClientTimer::Retry = timer;
        let Some(request) = self.outstanding.clone() else { return };
        // The primary may be faulty: tell everyone, and try the next one next time.
        for to in (0..self.nodes).map(NodeId) {
            out.actions.push(ClientAction::Send { to, request: request.clone() });
        }
        self.primary_hint = (self.primary_hint + 1) % self.nodes;
        out.actions.push(ClientAction::SetTimer { timer: PbftClientTimer::Retry, after: self.retry_timeout_ns });
    }
}
