//! Log replication and commitment (§5.3, §5.4.2): the leader's `AppendEntries` and
//! heartbeats, the follower's consistency check with the fast back-off, the commit
//! rule of Figure 8 (only entries of the leader's own term are committed by counting),
//! and applying committed entries to the key-value store.

use super::*;

impl Raft {
    /// Send `peer` the entries from its `next_index` (at most the configured batch),
    /// advancing `next_index` optimistically so replication pipelines.
    pub(crate) fn send_append(&mut self, peer: NodeId, ctx: &mut Context<'_, Self>) {
        let next = self.progress[peer.0 as usize].next_index;
        if next <= self.snapshot.last_included_index {
            // The entries this follower needs are compacted away (§7).
            self.send_snapshot_chunk(peer, ctx);
            return;
        }
        let prev_log_index = next - 1;
        let prev_log_term = self.term_at(prev_log_index).expect("next_index within log + 1");
        let end = (self.last_index()).min(prev_log_index + self.config.max_entries_per_append as u64);
        let snapshot = self.snapshot.last_included_index;
        let entries: Vec<Entry> = self.log[(next - snapshot - 1) as usize..(end - snapshot) as usize].to_vec();
        self.progress[peer.0 as usize].next_index = end + 1;
        ctx.send(
            peer,
            Message::AppendEntries {
                term: self.current_term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: self.commit_index,
            },
        );
    }

    /// Append the collected commands and send them to every follower that was caught
    /// up (the others get them when they ask for more): as one batch when a batch delay
    /// closed it, or, batching adaptively, as batches of at most `max_entries_per_append`
    /// commands and `max_batch_bytes` while the pipeline has room; what does not fit
    /// waits for a batch to commit ([`Raft::advance_commit`] calls this again).
    pub(crate) fn flush_commands(&mut self, ctx: &mut Context<'_, Self>) {
        if self.role != Role::Leader || self.pending_commands.is_empty() {
            self.pending_commands.clear();
            return;
        }
        let adaptive = self.config.batch_delay_ns == 0;
        if adaptive && defer_to_drained_input(self.config.max_batches_in_flight, ctx.input_waiting()) {
            return; // more requests are queued behind this step: they go together
        }
        let mut appended = false;
        while !self.pending_commands.is_empty()
            && (!adaptive || pipeline_has_room(self.config.max_batches_in_flight, self.batches_in_flight.len()))
        {
            let commands = if adaptive {
                take_batch(&mut self.pending_commands, self.config.max_entries_per_append, self.config.max_batch_bytes)
            } else {
                std::mem::take(&mut self.pending_commands)
            };
            let first_new = self.last_index() + 1;
            let entries: Vec<Entry> = commands
                .into_iter()
                .enumerate()
                .map(|(i, command)| Entry {
                    term: self.current_term,
                    index: first_new + i as u64,
                    payload: Payload::Command(command),
                })
                .collect();
            self.append_local(entries, ctx);
            let me = self.id.0 as usize;
            self.progress[me].match_index = self.last_index();
            if adaptive {
                self.batches_in_flight.push_back(self.last_index());
            }
            for peer in self.peers() {
                // Only followers not already waiting on a pipelined batch get a new one.
                if self.progress[peer.0 as usize].next_index == first_new {
                    self.send_append(peer, ctx);
                }
            }
            appended = true;
        }
        if !self.pending_commands.is_empty() {
            ctx.reached(&marks::BATCH_HELD_FOR_PIPELINE);
        }
        if appended {
            self.maybe_commit(ctx);
        }
    }

    pub(crate) fn broadcast_heartbeats(&mut self, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let read_round = self.reads.as_mut().map_or(0, |reads| reads.next_round(now));
        for peer in self.peers() {
            let commit = self.commit_index.min(self.progress[peer.0 as usize].match_index);
            ctx.send(peer, Message::Heartbeat { term: self.current_term, commit, read_round });
        }
    }

    /// §5.3/§5.4.2: the highest index stored on a majority, if it is of this term.
    pub(crate) fn maybe_commit(&mut self, ctx: &mut Context<'_, Self>) {
        let matched = self.progress.iter().map(|p| p.match_index);
        let Some(candidate) = quorum_value(matched, majority(self.nodes)) else { return };
        let own_term = self.term_at(candidate) == Some(self.current_term);
        if candidate > self.commit_index && (own_term || self.config.ablate.commit_old_term_by_count) {
            if self.term_at(self.commit_index + 1).is_some_and(|term| term < self.current_term) {
                ctx.reached(&marks::OLD_TERM_COMMITTED_INDIRECTLY);
            }
            self.advance_commit(candidate, ctx);
        }
    }

    pub(crate) fn advance_commit(&mut self, new_commit: Index, ctx: &mut Context<'_, Self>) {
        let new_commit = new_commit.min(self.last_index());
        if new_commit <= self.commit_index {
            return;
        }
        for slot in self.commit_index + 1..=new_commit {
            ctx.observe(Event::Committed {
                slot,
                digest: self.entry_digests[self.pos(slot)],
                prefix_digest: self.prefix_digest_at(slot),
            });
        }
        self.commit_index = new_commit;
        self.apply_committed(ctx);
        // A round came back: its batches leave the pipeline, and what waited goes out.
        while self.batches_in_flight.front().is_some_and(|end| *end <= self.commit_index) {
            self.batches_in_flight.pop_front();
        }
        if self.role == Role::Leader && !self.pending_commands.is_empty() && self.config.batch_delay_ns == 0 {
            self.flush_commands(ctx);
        }
    }

    pub(crate) fn apply_committed(&mut self, ctx: &mut Context<'_, Self>) {
        while self.last_applied < self.commit_index {
            self.last_applied += 1;
            let at = self.pos(self.last_applied);
            let entry = &self.log[at];
            ctx.observe(Event::Applied { slot: entry.index, digest: self.entry_digests[at] });
            self.applied_bytes_since_snapshot += entry.encoded_bytes() as u64;
            if let Payload::Command(request) = &entry.payload {
                let result = self.kv.apply(request);
                if self.role == Role::Leader
                    && let Some(result) = result
                {
                    ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
                }
            }
        }
        self.answer_ready_reads(ctx);
        self.maybe_compact(ctx);
    }

    /// Common prologue of the leader's messages: step down to a valid leader of this
    /// or a newer term, and report it once per term. Returns false when this node
    /// itself leads `term`: a second leader in one term is what Election Safety
    /// forbids, so an honest leader ignores the impostor and the checkers report it.
    pub(crate) fn accept_leader(&mut self, from: NodeId, term: Term, ctx: &mut Context<'_, Self>) -> bool {
        debug_assert!(term >= self.current_term);
        if self.role == Role::Leader && term == self.current_term {
            ctx.ignored(|| format!("ignored a leader's message from {from} in term {term}: we lead this term"));
            return false;
        }
        self.become_follower(term, Some(from), ctx);
        self.reset_election_timer(ctx);
        self.leader_heard_at = Some(ctx.now());
        if self.config.vote_guard_on() {
            self.vote_guard_until = ctx.now() + self.config.election_timeout_ns_min;
        }
        if self.leader_known_term != term {
            self.leader_known_term = term;
            ctx.observe(Event::LeaderKnown { epoch: term, leader: from });
        }
        true
    }

    pub(crate) fn reject_append(
        &self,
        to: NodeId,
        term: Term,
        conflict_term: Option<Term>,
        conflict_index: Index,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.send(to, Message::AppendResponse { term, success: false, match_index: 0, conflict_term, conflict_index });
    }

    /// Common prologue of the responses a leader gets (`step_term` has already stepped
    /// down for a newer term): whether this answers us as leader of the current term
    /// (and then the peer counts as alive for check-quorum).
    pub(crate) fn accept_response(&mut self, from: NodeId, term: Term, ctx: &mut Context<'_, Self>) -> bool {
        if self.role != Role::Leader || term != self.current_term {
            ctx.ignored(|| format!("ignored a response from {from} in term {term}: we are not its leader"));
            return false;
        }
        self.progress[from.0 as usize].recently_active = true;
        true
    }

    #[expect(clippy::too_many_arguments, reason = "the arguments are the RPC's fields, named as in Figure 2")]
    pub(crate) fn handle_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        ctx: &mut Context<'_, Self>,
    ) {
        // A stale leader was answered with our term by `step_term`.
        if !self.accept_leader(from, term, ctx) {
            return;
        }
        let snapshot = self.snapshot.last_included_index;
        let (prev_log_index, prev_log_term, entries) = if prev_log_index < snapshot {
            // Entries up to our snapshot are committed, and a leader holds every committed
            // entry (Leader Completeness): check and append only what lies beyond it.
            let beyond: Vec<Entry> = entries.into_iter().filter(|e| e.index > snapshot).collect();
            (snapshot, self.snapshot.last_included_term, beyond)
        } else {
            (prev_log_index, prev_log_term, entries)
        };
        // Consistency check on prevLogIndex/prevLogTerm (§5.3).
        match self.term_at(prev_log_index) {
            None => {
                ctx.ignored(|| {
                    format!(
                        "rejected append_entries from {from}: no entry at prev {prev_log_index}, our log ends at {}",
                        self.last_index()
                    )
                });
                self.reject_append(from, term, None, self.last_index() + 1, ctx);
                return;
            }
            // The ablation still refuses a gap: the log cannot hold one.
            Some(t) if t != prev_log_term && !self.config.ablate.skip_prev_log_check => {
                ctx.ignored(|| {
                    format!("rejected append_entries from {from}: prev {prev_log_index}@{prev_log_term} but ours is {prev_log_index}@{t}")
                });
                ctx.reached(&marks::PREV_LOG_MISMATCH);
                let first_of_term = self.log.iter().find(|e| e.term == t).map_or(prev_log_index, |e| e.index);
                self.reject_append(from, term, Some(t), first_of_term, ctx);
                return;
            }
            Some(_) => {}
        }
        let last_new = prev_log_index + entries.len() as Index;
        // Skip entries we already hold; truncate only at a real conflict.
        let mut to_append = Vec::new();
        for entry in entries {
            match self.term_at(entry.index) {
                Some(existing) if existing == entry.term => continue,
                Some(_) => {
                    ctx.reached(&marks::FOLLOWER_LOG_TRUNCATED);
                    self.truncate_local(entry.index, ctx);
                    to_append.push(entry);
                }
                None => to_append.push(entry),
            }
        }
        self.append_local(to_append, ctx);
        if leader_commit > self.commit_index {
            self.advance_commit(leader_commit.min(last_new), ctx);
        }
        ctx.send(
            from,
            Message::AppendResponse {
                term,
                success: true,
                match_index: last_new,
                conflict_term: None,
                conflict_index: 0,
            },
        );
    }

    #[expect(clippy::too_many_arguments, reason = "the arguments are the RPC's fields, named as in Figure 2")]
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        term: Term,
        success: bool,
        match_index: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
        ctx: &mut Context<'_, Self>,
    ) {
        if !self.accept_response(from, term, ctx) {
            return;
        }
        let last = self.last_index();
        let progress = &mut self.progress[from.0 as usize];
        if success {
            if match_index > progress.match_index {
                progress.match_index = match_index;
            }
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            self.maybe_commit(ctx);
            if self.transfer.is_some_and(|(to, _)| to == from) {
                self.maybe_send_timeout_now(ctx);
            }
            if self.progress[from.0 as usize].next_index <= last {
                self.send_append(from, ctx);
            }
            return;
        }
        // Fast back-off: skip the follower's whole conflicting term in one step.
        let hinted = match conflict_term {
            Some(t) => self.log.iter().rev().find(|e| e.term == t).map_or(conflict_index, |e| e.index + 1),
            None => conflict_index,
        };
        let progress = &mut self.progress[from.0 as usize];
        progress.next_index = hinted.clamp(progress.match_index + 1, last + 1);
        self.send_append(from, ctx);
    }

    pub(crate) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        term: Term,
        commit: Index,
        read_round: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if !self.accept_leader(from, term, ctx) {
            return;
        }
        if commit > self.commit_index {
            self.advance_commit(commit, ctx);
        }
        ctx.send(from, Message::HeartbeatResponse { term, last_log_index: self.last_index(), read_round });
    }

    pub(crate) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        term: Term,
        read_round: u64,
        ctx: &mut Context<'_, Self>,
    ) {
        if !self.accept_response(from, term, ctx) {
            return;
        }
        if let Some(reads) = self.reads.as_mut() {
            reads.on_ack(from, read_round);
            self.answer_ready_reads(ctx);
        }
        let last = self.last_index();
        let progress = &mut self.progress[from.0 as usize];
        // Repair: anything unacknowledged is resent from the last known match, which
        // also recovers from AppendEntries lost in the network (and resends the current
        // snapshot chunk when one was lost).
        if progress.match_index < last {
            progress.next_index = progress.match_index + 1;
            self.send_append(from, ctx);
        }
    }
}
