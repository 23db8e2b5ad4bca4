//! The learner: slots become chosen (from the leader's commit point in `Accept`s and
//! heartbeats), are applied in order to the key-value store, and a learner that falls
//! behind catches up from the leader, by values or by state transfer of a checkpoint.

use super::*;

impl Paxos {
    /// Slot `commit + 1` is chosen with `value`.
    pub(crate) fn commit_next(&mut self, value: Value, ctx: &mut Context<'_, Self>) {
        let slot = self.commit_index() + 1;
        let digest = value.digest();
        let prefix = self.prefix_digests.last().expect("genesis").chain(slot, &digest);
        self.prefix_digests.push(prefix);
        self.chosen_digests.push(digest);
        self.chosen.push(value);
        ctx.observe(Event::Committed { slot, digest, prefix_digest: prefix });
        self.apply_committed(ctx);
    }

    pub(crate) fn apply_committed(&mut self, ctx: &mut Context<'_, Self>) {
        while self.last_applied < self.commit_index() {
            self.last_applied += 1;
            let slot = self.last_applied;
            let at = (slot - self.base() - 1) as usize;
            let value = &self.chosen[at];
            ctx.observe(Event::Applied { slot, digest: self.chosen_digests[at] });
            if let Value::Commands(commands) = value {
                for request in commands {
                    let result = self.kv.apply(request);
                    if self.role == Role::Leader
                        && let Some(result) = result
                    {
                        ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
                    }
                }
            }
        }
        self.answer_ready_reads(ctx);
        self.maybe_checkpoint(ctx);
    }

    /// The leader of `ballot` says everything up to `leader_commit` is chosen: commit
    /// what we hold accepted in that ballot, and ask for the rest.
    pub(crate) fn learn_commit(&mut self, ballot: Ballot, leader_commit: Slot, ctx: &mut Context<'_, Self>) {
        self.leader_commit = self.leader_commit.max(leader_commit);
        while self.commit_index() < leader_commit {
            let slot = self.commit_index() + 1;
            match self.accepted_at(slot) {
                Some((b, value)) if *b == ballot => {
                    let value = value.clone();
                    self.commit_next(value, ctx);
                }
                _ => break,
            }
        }
        self.maybe_catch_up(ctx);
    }

    pub(crate) fn maybe_catch_up(&mut self, ctx: &mut Context<'_, Self>) {
        let Some((_, leader)) = self.leader else { return };
        if leader == self.id || self.commit_index() >= self.leader_commit {
            return;
        }
        // One request per heartbeat interval unless answered: a lost one is retried.
        let now = ctx.now();
        if self.catch_up_requested_at.is_some_and(|at| now < at + self.config.heartbeat_interval_ns) {
            return;
        }
        self.catch_up_requested_at = Some(now);
        let resume = self.incoming_state.as_ref().map(|(header, bytes)| (header.slot, bytes.len() as u64));
        ctx.send(leader, Message::CatchUp { from_slot: self.commit_index() + 1, resume });
    }

    pub(crate) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        read_round: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        // `step_ballot` refused a stale ballot, or promised this one and follows `from`.
        debug_assert_eq!(self.promised, ballot);
        self.learn_commit(ballot, commit, ctx);
        ctx.send(from, Message::HeartbeatAck { ballot, commit: self.commit_index(), read_round });
    }

    pub(crate) fn handle_catch_up(
        &mut self,
        from: NodeId,
        from_slot: Slot,
        resume: Option<(Slot, u64)>,
        ctx: &mut Context<'_, Self>,
    ) {
        let commit = self.commit_index();
        if from_slot == 0 || from_slot > commit {
            return;
        }
        if from_slot <= self.base() {
            // Forgotten since the checkpoint: send the state instead of the slots, from
            // where the learner's transfer of this same checkpoint stopped.
            let state = &self.checkpoint.state;
            let offset = resume
                .filter(|(slot, held)| *slot == self.checkpoint.slot && *held <= state.len() as u64)
                .map_or(0, |(_, held)| held as usize);
            let end = (offset + self.config.state_chunk_bytes.max(1)).min(state.len());
            let chunk = state[offset..end].to_vec();
            ctx.send(from, Message::TransferState { header: self.checkpoint.header(), offset: offset as u64, chunk });
            return;
        }
        let end = commit.min(from_slot + self.config.max_values_per_message as Slot - 1);
        let base = self.base();
        let values = self.chosen[(from_slot - base - 1) as usize..(end - base) as usize].to_vec();
        ctx.send(from, Message::Learn { first_slot: from_slot, values });
    }

    pub(crate) fn handle_transfer_state(
        &mut self,
        header: CheckpointHeader,
        offset: u64,
        chunk: Vec<u8>,
        ctx: &mut Context<'_, Self>,
    ) {
        if header.slot <= self.commit_index() {
            return;
        }
        let same = self.incoming_state.as_ref().is_some_and(|(h, _)| *h == header);
        if !same {
            if offset != 0 {
                return; // a chunk of a transfer we are not in: ask afresh on the next round
            }
            self.incoming_state = Some((header, Vec::new()));
        }
        let (_, bytes) = self.incoming_state.as_mut().expect("a transfer under way");
        if offset != bytes.len() as u64 || (chunk.is_empty() && header.state_bytes > 0) {
            return; // a duplicate or a stale chunk: no progress, no new request
        }
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 >= header.state_bytes {
            let (header, state) = self.incoming_state.take().expect("a transfer under way");
            self.install_checkpoint(header.with_state(state), ctx);
        }
        // As for a Learn that made progress: ask for what follows at once.
        self.catch_up_requested_at = None;
        self.maybe_catch_up(ctx);
    }

    pub(crate) fn handle_learn(&mut self, first_slot: Slot, values: Vec<Value>, ctx: &mut Context<'_, Self>) {
        let before = self.commit_index();
        for (i, value) in values.into_iter().enumerate() {
            if first_slot + i as Slot == self.commit_index() + 1 {
                self.commit_next(value, ctx);
            }
        }
        // Progress: ask for the next chunk at once instead of a heartbeat later. Only on
        // progress: a duplicated or stale Learn that asks again makes every copy breed
        // another request, and under message duplication the requests multiply without
        // bound (a storm the chaos runs found).
        if self.commit_index() > before {
            self.catch_up_requested_at = None;
            self.maybe_catch_up(ctx);
        }
    }
}
