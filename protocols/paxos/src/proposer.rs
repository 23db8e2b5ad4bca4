//! The proposer and distinguished leader ("Paxos Made Simple" §3): phase 1 once per
//! leadership for every slot above the commit point, re-proposing the highest-ballot
//! value each promise reports and filling gaps with no-ops; then phase 2 per slot,
//! pipelined within `window_slots`, with batching; counting `Accepted` to a majority;
//! backing off after a `Nack`.

use super::*;

impl Paxos {
    pub(crate) fn broadcast_heartbeat(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let read_round = self.reads.as_mut().map_or(0, |reads| reads.next_round(now));
        let commit = self.commit_index();
        ctx.broadcast(Message::Heartbeat { ballot: self.promised, commit, read_round });
    }

    pub(crate) fn start_phase1(&mut self, ctx: &mut Context<'_, Self>) {
        let ballot = Ballot { round: self.promised.round.max(self.round_seen) + 1, node: self.id };
        self.become_follower(ctx);
        self.role = Role::Candidate;
        self.leader = None;
        self.promise(ballot, ctx);
        self.promises = vec![None; self.nodes as usize];
        self.promises[self.id.0 as usize] = Some(self.promised_slots_above(self.commit_index()));
        self.reset_leader_timer(ctx);
        ctx.broadcast(Message::Prepare { ballot, commit: self.commit_index() });
        self.maybe_finish_phase1(ctx);
    }

    pub(crate) fn maybe_finish_phase1(&mut self, ctx: &mut Context<'_, Self>) {
        let promised = self.promises.iter().filter(|p| p.is_some()).count() as u32;
        if self.role == Role::Candidate && promised >= majority(self.nodes) {
            self.become_leader(ctx);
        }
    }

    pub(crate) fn become_leader(&mut self, ctx: &mut Context<'_, Self>) {
        assert_eq!(self.role, Role::Candidate);
        let ballot = self.promised;
        // Per slot: a chosen value wins outright; otherwise the highest-ballot value.
        let mut merged: BTreeMap<Slot, (bool, Ballot, Value)> = BTreeMap::new();
        let commit = self.commit_index();
        for promise in self.promises.drain(..).flatten() {
            for PromisedSlot { slot, ballot, value, chosen } in promise {
                if slot <= commit || (self.config.ablate.skip_phase1_values && !chosen) {
                    continue;
                }
                let replace = match merged.get(&slot) {
                    None => true,
                    Some((known_chosen, known_ballot, known)) => {
                        if *known != value {
                            ctx.reached(&marks::CONFLICTING_ACCEPTED_VALUES);
                        }
                        !known_chosen && (chosen || ballot > *known_ballot)
                    }
                };
                if replace {
                    merged.insert(slot, (chosen, ballot, value));
                }
            }
        }
        self.role = Role::Leader;
        self.leader = Some((ballot, self.id));
        self.leader_commit = 0;
        // The chosen prefix is known outright.
        while let Some((true, _, value)) = merged.get(&(self.commit_index() + 1)).cloned() {
            merged.remove(&(self.commit_index() + 1));
            self.commit_next(value, ctx);
        }
        let commit = self.commit_index();
        let last = merged.keys().next_back().copied().unwrap_or(commit).max(commit);
        // Re-propose every slot above the commit point in our ballot; gaps get no-ops.
        let values: Vec<Value> = (commit + 1..=last)
            .map(|slot| match merged.remove(&slot) {
                Some((_, _, value)) => {
                    ctx.reached(&marks::VALUE_ADOPTED_FROM_PROMISE);
                    value
                }
                None => {
                    ctx.reached(&marks::GAP_FILLED_WITH_NOOP);
                    Value::Noop
                }
            })
            .collect();
        let mut digests = vec![self.prefix_digest_at(commit)];
        for (i, value) in values.iter().enumerate() {
            let next = digests.last().expect("non-empty").chain(commit + 1 + i as Slot, &value.digest());
            digests.push(next);
        }
        ctx.observe(Event::Elected { epoch: ballot.epoch(), log_from_slot: commit, log_prefix_digests: digests });
        self.leader_known_ballot = ballot;
        ctx.observe(Event::LeaderKnown { epoch: ballot.epoch(), leader: self.id });
        ctx.cancel_timer(PaxosTimer::LeaderTimeout);
        self.in_flight.clear();
        self.proposed_requests.clear();
        self.heard_from = vec![true; self.nodes as usize];
        self.next_slot = commit + 1;
        if self.config.read_mode.leader_reads() {
            // Reads wait until every slot that may have been chosen before is committed.
            let lease = lease_ns(self.config.leader_timeout_ns_min, self.config.lease_drift_bound_ppm);
            self.reads = Some(LeaderReads::new(self.id, self.nodes, lease, last));
        }
        for value in values {
            self.propose(value, ctx);
        }
        self.first_fresh_slot = self.next_slot;
        ctx.set_timer(PaxosTimer::Heartbeat, self.config.heartbeat_interval_ns);
        if self.config.check_quorum_on() {
            ctx.set_timer(PaxosTimer::CheckQuorum, self.config.leader_timeout_ns_min);
        }
        self.advance_leader_commit(ctx);
    }

    /// Phase 2a for `value` in the next slot.
    pub(crate) fn propose(&mut self, value: Value, ctx: &mut Context<'_, Self>) {
        let slot = self.next_slot;
        self.next_slot += 1;
        let ballot = self.promised;
        self.accept_values(ballot, slot, std::slice::from_ref(&value), ctx);
        let mut acks = vec![false; self.nodes as usize];
        acks[self.id.0 as usize] = true;
        self.in_flight.insert(slot, InFlight { value: value.clone(), acks, chosen: self.nodes == 1 });
        let commit = self.commit_index();
        ctx.broadcast(Message::Accept { ballot, first_slot: slot, values: vec![value], commit });
    }

    /// Propose collected commands while the window has room: with a batch delay, as
    /// full slots; batching adaptively ([`qlab_core::batching`]), only while fewer than
    /// `max_batches_in_flight` slots await commitment, each slot taking what waited (at
    /// most `max_commands_per_slot` commands and `max_batch_bytes`). What does not fit
    /// goes when a slot commits ([`Paxos::advance_leader_commit`] calls this again).
    pub(crate) fn flush(&mut self, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader {
            self.pending.clear();
            return;
        }
        let adaptive = self.config.batch_delay_ns == 0;
        if adaptive && defer_to_drained_input(self.config.max_batches_in_flight, ctx.input_waiting()) {
            return; // more requests are queued behind this step: they go together
        }
        while !self.pending.is_empty()
            && self.in_flight.len() < self.config.window_slots
            && (!adaptive || pipeline_has_room(self.config.max_batches_in_flight, self.fresh_slots_in_flight()))
        {
            let commands: Vec<Arc<Request>> = if adaptive {
                take_batch(&mut self.pending, self.config.max_commands_per_slot, self.config.max_batch_bytes)
            } else {
                let take = self.pending.len().min(self.config.max_commands_per_slot);
                self.pending.drain(..take).collect()
            };
            self.propose(Value::Commands(commands), ctx);
        }
        if adaptive && !self.pending.is_empty() && self.in_flight.len() < self.config.window_slots {
            ctx.reached(&marks::BATCH_HELD_FOR_PIPELINE);
        }
    }

    /// Slots this leader proposed for new commands that are not yet committed (what
    /// adaptive batching bounds; the slots phase 1 re-proposed are not its batches).
    fn fresh_slots_in_flight(&self) -> usize {
        self.in_flight.range(self.first_fresh_slot..).count()
    }

    /// Commit the chosen in-flight slots that follow the commit point, in order.
    pub(crate) fn advance_leader_commit(&mut self, ctx: &mut Context<'_, Self>) {
        // Slots the leader learned were chosen another way (a peer's Learn that saw the
        // choice first, a checkpoint) are committed already; left in flight, the first
        // of them would stand before `next` and stop the commit point for good (the
        // chaos soak's Multi-Paxos seed that was not live after the heal, issue 40).
        let committed = self.commit_index();
        while let Some(entry) = self.in_flight.first_entry() {
            if *entry.key() > committed {
                break;
            }
            entry.remove();
        }
        let mut advanced = false;
        let mut next = committed + 1;
        while let Some(entry) = self.in_flight.first_entry() {
            if *entry.key() != next || !entry.get().chosen {
                break;
            }
            let InFlight { value, .. } = entry.remove();
            self.commit_next(value, ctx);
            next += 1;
            advanced = true;
        }
        // Commands that waited for room in the window go now, unless their batch is
        // still open (its timer will flush them).
        if advanced && !self.flush_timer_armed {
            self.flush(ctx);
        }
    }

    pub(crate) fn handle_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first_slot: Slot,
        count: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.role != Role::Leader || ballot != self.promised {
            return;
        }
        self.heard_from[from.0 as usize] = true;
        let quorum = majority(self.nodes) as usize;
        for (_, flight) in self.in_flight.range_mut(first_slot..first_slot + count) {
            flight.acks[from.0 as usize] = true;
            if !flight.chosen && flight.acks.iter().filter(|a| **a).count() >= quorum {
                flight.chosen = true;
            }
        }
        self.advance_leader_commit(ctx);
    }

    /// Resend every in-flight slot `peer` has not acknowledged (lost Accepts or replies),
    /// as contiguous runs.
    pub(crate) fn retransmit_to(&self, peer: NodeId, ctx: &mut Context<'_, Self>) {
        let commit = self.commit_index();
        let mut run: Option<(Slot, Vec<Value>)> = None;
        let flush = |run: Option<(Slot, Vec<Value>)>, ctx: &mut Context<'_, Self>| {
            if let Some((first_slot, values)) = run {
                ctx.send(peer, Message::Accept { ballot: self.promised, first_slot, values, commit });
            }
        };
        for (slot, flight) in &self.in_flight {
            if flight.acks[peer.0 as usize] {
                continue;
            }
            run = match run {
                Some((first, mut values))
                    if first + values.len() as Slot == *slot && values.len() < self.config.max_values_per_message =>
                {
                    values.push(flight.value.clone());
                    Some((first, values))
                }
                other => {
                    flush(other, ctx);
                    Some((*slot, vec![flight.value.clone()]))
                }
            };
        }
        flush(run, ctx);
    }

    pub(crate) fn handle_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Vec<PromisedSlot>,
        checkpoint: Option<Checkpoint>,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.role != Role::Candidate || ballot != self.promised {
            return;
        }
        if let Some(checkpoint) = checkpoint.filter(|_| !self.config.ablate.ignore_promised_checkpoint) {
            // The slots up to it are chosen; without it we would fill them with no-ops.
            ctx.reached(&marks::CHECKPOINT_FROM_PROMISE);
            self.install_checkpoint(checkpoint, ctx);
        }
        self.promises[from.0 as usize] = Some(accepted);
        self.maybe_finish_phase1(ctx);
    }

    pub(crate) fn handle_heartbeat_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        read_round: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if self.role != Role::Leader || ballot != self.promised {
            return;
        }
        self.heard_from[from.0 as usize] = true;
        if let Some(reads) = self.reads.as_mut() {
            reads.on_ack(from, read_round);
            self.answer_ready_reads(ctx);
        }
        self.retransmit_to(from, ctx);
    }
}
