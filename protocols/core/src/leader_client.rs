//! The client of a leader-based protocol (Raft §8, Multi-Paxos): find the leader,
//! retry until the request is applied.
//!
//! The client keeps one request outstanding. It sends to its leader hint (or, without
//! one, the next replica round-robin). A `NotLeader` reply with a hint redirects at once;
//! one without a hint means an election is under way, so the client waits a short
//! back-off and tries the next replica. A silent replica (crashed, partitioned) is given
//! up on after `retry_timeout_ns`. Retries keep the same (client, seq), so the replicated
//! session table applies the command at most once however many leaders saw it.
//!
//! With `reads_anywhere` (the `follower-stale` read mode) a `get` goes to the client's
//! own replica (`id mod nodes`, then the next one after a timeout) instead of the
//! leader, which spreads reads over the cluster as follower reads do.

use crate::{Client, ClientAction, ClientId, ClientOutbox, Nanos, NodeId, OpResult, Reply, ReplyBody, Request, ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaderClientTimer {
    /// The current attempt gets no answer: try another replica.
    Retry,
}

#[derive(Clone, Debug)]
pub struct LeaderClient {
    pub id: ClientId,
    nodes: u32,
    leader_hint: Option<NodeId>,
    next_round_robin: u32,
    outstanding: Option<Request>,
    /// Redirects followed since the last timeout; bounded so two replicas that point
    /// at each other cannot bounce a request forever.
    redirects: u32,
    pub retry_timeout_ns: Nanos,
    pub no_leader_backoff_ns: Nanos,
    /// Send `get`s to `read_replica` rather than the leader.
    pub reads_anywhere: bool,
    read_replica: u32,
}

impl LeaderClient {
    pub fn new(id: ClientId, nodes: u32) -> Self {
        LeaderClient {
            id,
            nodes,
            leader_hint: None,
            next_round_robin: (id.0 % nodes as u64) as u32,
            outstanding: None,
            redirects: 0,
            retry_timeout_ns: ms(100),
            no_leader_backoff_ns: ms(5),
            reads_anywhere: false,
            read_replica: (id.0 % nodes as u64) as u32,
        }
    }

    fn is_spread_read(&self, request: &Request) -> bool {
        self.reads_anywhere && !request.op.is_write()
    }

    fn pick_target(&mut self) -> NodeId {
        if let Some(leader) = self.leader_hint {
            return leader;
        }
        let target = NodeId(self.next_round_robin);
        self.next_round_robin = (self.next_round_robin + 1) % self.nodes;
        target
    }

    fn send_attempt(&mut self, out: &mut ClientOutbox<LeaderClientTimer>) {
        let Some(request) = self.outstanding.clone() else { return };
        let to = if self.is_spread_read(&request) { NodeId(self.read_replica) } else { self.pick_target() };
        out.actions.push(ClientAction::Send { to, request });
        out.actions.push(ClientAction::SetTimer { timer: LeaderClientTimer::Retry, after: self.retry_timeout_ns });
    }
}

impl Client for LeaderClient {
    type Timer = LeaderClientTimer;

    fn submit(&mut self, _now: Nanos, request: Request, out: &mut ClientOutbox<LeaderClientTimer>) {
        assert!(self.outstanding.is_none(), "{}: one request at a time", self.id);
        self.outstanding = Some(request);
        self.redirects = 0;
        self.send_attempt(out);
    }

    fn on_reply(
        &mut self,
        _now: Nanos,
        from: NodeId,
        reply: Reply,
        out: &mut ClientOutbox<LeaderClientTimer>,
    ) -> Option<OpResult> {
        let outstanding = self.outstanding.as_ref()?;
        if reply.client != self.id || reply.seq != outstanding.seq {
            return None; // a late answer to an earlier attempt or request
        }
        match reply.body {
            ReplyBody::Done(result) => {
                let spread = self.is_spread_read(outstanding);
                self.outstanding = None;
                if !spread {
                    self.leader_hint = Some(from);
                }
                out.actions.push(ClientAction::CancelTimer { timer: LeaderClientTimer::Retry });
                Some(result)
            }
            ReplyBody::NotLeader { leader: Some(leader) } if leader != from && self.redirects < self.nodes => {
                self.redirects += 1;
                self.leader_hint = Some(leader);
                self.send_attempt(out);
                None
            }
            ReplyBody::NotLeader { .. } => {
                self.leader_hint = None;
                out.actions
                    .push(ClientAction::SetTimer { timer: LeaderClientTimer::Retry, after: self.no_leader_backoff_ns });
                None
            }
        }
    }

    fn on_timer(&mut self, _now: Nanos, timer: LeaderClientTimer, out: &mut ClientOutbox<LeaderClientTimer>) {
        match timer {
            LeaderClientTimer::Retry => {
                if self.outstanding.as_ref().is_some_and(|r| self.is_spread_read(r)) {
                    // Only the read replica was silent; the leader hint may be fine.
                    self.read_replica = (self.read_replica + 1) % self.nodes;
                    self.send_attempt(out);
                    return;
                }
                self.leader_hint = None;
                self.redirects = 0;
                self.send_attempt(out);
            }
        }
    }
}
