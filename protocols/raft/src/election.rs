//! Elections (§5.2) with the election restriction (§5.4.1), PreVote (thesis §9.6) and
//! leadership transfer (thesis §3.10): how a follower becomes a candidate, how votes are
//! granted (one per term, persisted before the answer, only to an up-to-date log, not
//! while a lease may run), and what a new leader does first (its no-op, its
//! `Elected` report with the log's prefix digests).

use super::*;

impl Raft {
    pub(crate) fn become_candidate(&mut self, ctx: &mut Context<'_, Self>) {
        assert_ne!(self.role, Role::Leader);
        self.leader_heard_at = None;
        self.role = Role::Candidate;
        self.current_term += 1;
        self.voted_for = Some(self.id);
        self.leader = None;
        // §5.2: the self-vote is durable before anyone can see the RequestVote.
        self.persist_hard_state(ctx);
        self.votes_granted = vec![false; self.nodes as usize];
        self.votes_granted[self.id.0 as usize] = true;
        self.reset_election_timer(ctx);
        ctx.broadcast(Message::RequestVote {
            term: self.current_term,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
        });
        self.maybe_win_election(ctx);
    }

    /// Thesis §9.6: ask for pre-votes for the next term, without raising our own.
    pub(crate) fn become_pre_candidate(&mut self, ctx: &mut Context<'_, Self>) {
        assert_ne!(self.role, Role::Leader);
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes_granted = vec![false; self.nodes as usize];
        self.votes_granted[self.id.0 as usize] = true;
        self.reset_election_timer(ctx);
        ctx.broadcast(Message::PreVote {
            term: self.current_term + 1,
            last_log_index: self.last_index(),
            last_log_term: self.last_term(),
        });
        self.maybe_win_pre_vote(ctx);
    }

    pub(crate) fn maybe_win_pre_vote(&mut self, ctx: &mut Context<'_, Self>) {
        let votes = self.votes_granted.iter().filter(|v| **v).count() as u32;
        if self.role == Role::PreCandidate && votes >= majority(self.nodes) {
            self.become_candidate(ctx);
        }
    }

    pub(crate) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
        ctx: &mut Context<'_, Self>,
    ) {
        // Would we ourselves consider the leader gone? Then a new election is welcome.
        let now = ctx.now();
        let leader_alive = self.role == Role::Leader
            || self.leader_heard_at.is_some_and(|at| now < at + self.config.election_timeout_ns_min);
        let up_to_date = self.is_up_to_date(last_log_index, last_log_term);
        let granted = term > self.current_term && up_to_date && !leader_alive;
        if !granted {
            ctx.ignored(|| {
                let why = if term <= self.current_term {
                    format!("its term {term} is not above ours {}", self.current_term)
                } else if !up_to_date {
                    format!(
                        "candidate log {last_log_index}@{last_log_term} behind ours {}@{}",
                        self.last_index(),
                        self.last_term()
                    )
                } else {
                    "we still hear from a leader".to_string()
                };
                format!("refused PreVote from {from} for term {term}: {why}")
            });
        }
        // Nothing is persisted or changed: a pre-vote promises nothing.
        let term = if granted { term } else { self.current_term };
        ctx.send(from, Message::PreVoteResponse { term, granted });
    }

    pub(crate) fn handle_pre_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        ctx: &mut Context<'_, Self>,
    ) {
        // A refusal from a later term made us its follower already (`step_term`).
        if self.role != Role::PreCandidate || !granted || term != self.current_term + 1 {
            ctx.ignored(|| {
                format!("ignored pre_vote_response from {from} (granted {granted}, term {term}): not a pre-candidate for that term")
            });
            return;
        }
        self.votes_granted[from.0 as usize] = true;
        self.maybe_win_pre_vote(ctx);
    }

    pub(crate) fn start_transfer(&mut self, to: NodeId, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader || to == self.id || to.0 >= self.nodes {
            return;
        }
        self.flush_commands(ctx);
        self.transfer = Some((to, ctx.now() + self.config.election_timeout_ns_min));
        self.maybe_send_timeout_now(ctx);
        if self.transfer.is_some() {
            self.send_append(to, ctx);
        }
    }

    /// Once the target's log matches ours, tell it to campaign.
    pub(crate) fn maybe_send_timeout_now(&mut self, ctx: &mut Context<'_, Self>) {
        let Some((to, _)) = self.transfer else { return };
        if self.progress[to.0 as usize].match_index == self.last_index() {
            ctx.send(to, Message::TimeoutNow { term: self.current_term });
        }
    }

    pub(crate) fn handle_timeout_now(&mut self, from: NodeId, term: Term, ctx: &mut Context<'_, Self>) {
        if term == self.current_term && self.leader == Some(from) && self.role == Role::Follower {
            // Skip PreVote: the leader itself asked for this election.
            self.become_candidate(ctx);
        } else {
            ctx.ignored(|| format!("ignored timeout_now from {from}: not a follower of it in term {term}"));
        }
    }

    pub(crate) fn maybe_win_election(&mut self, ctx: &mut Context<'_, Self>) {
        let votes = self.votes_granted.iter().filter(|v| **v).count() as u32;
        if self.role == Role::Candidate && votes >= majority(self.nodes) {
            self.become_leader(ctx);
        }
    }

    pub(crate) fn become_leader(&mut self, ctx: &mut Context<'_, Self>) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let last = self.last_index();
        self.progress = (0..self.nodes)
            .map(|_| Progress { next_index: last + 1, match_index: 0, recently_active: true, snapshot_sending: None })
            .collect();
        self.appended_requests.clear();
        let from = self.commit_index;
        ctx.observe(Event::Elected {
            epoch: self.current_term,
            log_from_slot: from,
            log_prefix_digests: self.prefix_digests[(from - self.snapshot.last_included_index) as usize..].to_vec(),
        });
        self.leader_known_term = self.current_term;
        ctx.observe(Event::LeaderKnown { epoch: self.current_term, leader: self.id });
        ctx.cancel_timer(RaftTimer::Election);
        if self.config.read_mode.leader_reads() {
            let lease = lease_ns(self.config.election_timeout_ns_min, self.config.lease_drift_bound_ppm);
            self.reads = Some(LeaderReads::new(self.id, self.nodes, lease, last + 1));
        }
        // §5.4.2 / §8: a no-op of the new term lets earlier entries commit now.
        let noop = Entry { term: self.current_term, index: last + 1, payload: Payload::Noop };
        self.append_local(vec![noop], ctx);
        self.progress[self.id.0 as usize].match_index = self.last_index();
        for peer in self.peers() {
            self.send_append(peer, ctx);
        }
        ctx.set_timer(RaftTimer::Heartbeat, self.config.heartbeat_interval_ns);
        if self.config.check_quorum_on() {
            ctx.set_timer(RaftTimer::CheckQuorum, self.config.election_timeout_ns_min);
        }
        self.maybe_commit(ctx);
    }

    /// §5.4.1: a log ending at (`last_log_index`, `last_log_term`) is at least as up to
    /// date as ours — a later last term, or the same and at least as long.
    pub(crate) fn is_up_to_date(&self, last_log_index: Index, last_log_term: Term) -> bool {
        last_log_term > self.last_term() || (last_log_term == self.last_term() && last_log_index >= self.last_index())
    }

    pub(crate) fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: Index,
        last_log_term: Term,
        ctx: &mut Context<'_, Self>,
    ) {
        // `step_term` moved us to a later term, or dropped the request under the vote guard.
        let up_to_date = self.is_up_to_date(last_log_index, last_log_term) || self.config.ablate.vote_without_log_check;
        let free_to_vote = self.voted_for.is_none_or(|v| v == from) || self.config.ablate.multiple_votes_per_term;
        let granted = term == self.current_term && free_to_vote && up_to_date;
        if term == self.current_term && free_to_vote && !up_to_date {
            ctx.reached(&marks::VOTE_REFUSED_LOG_BEHIND);
        }
        if !granted {
            ctx.ignored(|| {
                let why = if term < self.current_term {
                    format!("stale term {term} below ours {}", self.current_term)
                } else if !free_to_vote {
                    format!("already voted for {} in term {term}", self.voted_for.expect("not free, so voted"))
                } else {
                    format!(
                        "candidate log {last_log_index}@{last_log_term} behind ours {}@{}",
                        self.last_index(),
                        self.last_term()
                    )
                };
                format!("rejected request_vote from {from} in term {term}: {why}")
            });
        }
        if granted {
            self.voted_for = Some(from);
            // Durable before the reply leaves (driver contract): one vote per term.
            self.persist_hard_state(ctx);
            self.reset_election_timer(ctx);
        }
        ctx.send(from, Message::VoteResponse { term: self.current_term, granted });
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.role != Role::Candidate || term != self.current_term || !granted {
            ctx.ignored(|| {
                let why = if !granted { "a refusal".to_string() } else { format!("we are {:?}", self.role) };
                format!("ignored vote_response from {from} in term {term}: {why}")
            });
            return;
        }
        self.votes_granted[from.0 as usize] = true;
        self.maybe_win_election(ctx);
    }
}
