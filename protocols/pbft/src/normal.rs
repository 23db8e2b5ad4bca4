//! The normal case (§4.2–4.4): a client request reaches the primary (or is forwarded
//! to it), the primary batches requests under the next sequence number and multicasts
//! a PRE-PREPARE, backups accept it within the watermarks and PREPARE, 2f matching
//! prepares make it prepared, 2f + 1 matching COMMITs make it committed-local, and
//! batches execute in sequence order. Retransmission resends this replica's own
//! messages for slots that have not executed, since links lose messages.

use super::*;

impl Pbft {
    pub(crate) fn in_window(&self, seq: Seq) -> bool {
        seq > self.stable_seq && seq <= self.stable_seq + self.config.log_window
    }

    /// Whether the primary, batching adaptively, may propose another batch now: fewer
    /// than `max_batches_in_flight` of its batches are unexecuted (always, with a batch
    /// delay).
    pub(crate) fn pipeline_has_room(&self) -> bool {
        // Its own batches: above what it executed, what is stable, and what the view's
        // NEW-VIEW re-proposed (those are the old view's, not this primary's batches).
        let below = self.last_executed.max(self.stable_seq).max(self.own_from_seq - 1);
        let in_flight = self.next_seq.saturating_sub(1).saturating_sub(below) as usize;
        self.config.batch_delay_ns > 0 || pipeline_has_room(self.config.max_batches_in_flight, in_flight)
    }

    /// Primary: propose collected requests while the window (and, batching adaptively,
    /// the pipeline) has room; [`Pbft::execute_ready`] calls this again as batches
    /// execute.
    pub(crate) fn flush(&mut self, ctx: &mut Context<'_, Self>) {
        if self.primary() != self.id || self.in_view_change {
            return;
        }
        if self.config.batch_delay_ns == 0
            && defer_to_drained_input(self.config.max_batches_in_flight, ctx.input_waiting())
        {
            return; // more requests are queued behind this step: verified and sent together
        }
        if self.config.batch_delay_ns == 0 && !self.unverified.is_empty() && self.pipeline_has_room() {
            // Requests that waited for the pipeline: their signatures checked together.
            self.admit_unverified(ctx);
        }
        while !self.pending.is_empty() && self.in_window(self.next_seq) && self.pipeline_has_room() {
            let batch: Vec<Arc<Request>> = if self.config.batch_delay_ns == 0 {
                take_batch(&mut self.pending, self.config.max_batch, self.config.max_batch_bytes)
            } else {
                let take = self.pending.len().min(self.config.max_batch);
                self.pending.drain(..take).collect()
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            let pp = self.sign(PrePrepare { view: self.view, seq, digest: batch_digest(&batch), batch });
            self.accept_pre_prepare(pp.clone(), ctx);
            ctx.broadcast(Message::PrePrepare(pp));
        }
        if self.config.batch_delay_ns == 0 && !self.pipeline_has_room() && !self.unverified.is_empty() {
            ctx.reached(&marks::BATCH_HELD_FOR_PIPELINE);
        }
    }

    /// Log an accepted pre-prepare (durably first) and, as a backup, prepare it.
    pub(crate) fn accept_pre_prepare(&mut self, pp: Signed<PrePrepare>, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::PrePrepared { pre_prepare: pp.clone() });
        let (view, seq, digest) = (pp.body.view, pp.body.seq, pp.body.digest);
        for request in &pp.body.batch {
            let seen = self.assigned.entry(request.client).or_insert(0);
            *seen = (*seen).max(request.seq);
        }
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(pp);
        slot.accepted_at = ctx.now();
        self.arm_retransmit(ctx);
        if self.primary_of(view) != self.id {
            let vote = self.sign_phase(b"prepare", Vote { view, seq, digest });
            self.log.entry(seq).or_default().prepares.insert(self.id, vote.clone());
            ctx.broadcast(Message::Prepare(vote));
        }
        self.check_prepared(seq, ctx);
    }

    pub(crate) fn handle_pre_prepare(&mut self, pp: Signed<PrePrepare>, ctx: &mut Context<'_, Self>) {
        let (view, seq) = (pp.body.view, pp.body.seq);
        self.missed_new_view(view, ctx);
        if view != self.view || self.in_view_change || pp.signer != self.primary() || !self.in_window(seq) {
            ctx.ignored(|| {
                let why = if pp.signer != self.primary_of(view) {
                    format!("signed by {}, not the primary {}", pp.signer, self.primary_of(view))
                } else {
                    self.why_not_current(view, seq)
                };
                format!("ignored pre_prepare {view}/{seq}: {why}")
            });
            return;
        }
        if self.log.get(&seq).and_then(|s| s.pre_prepare.as_ref()).is_some() {
            // One digest per (view, seq): a second, different one is the primary lying.
            ctx.ignored(|| format!("ignored pre_prepare {view}/{seq}: we accepted one for it already"));
            return;
        }
        if !self.valid_pre_prepare(&pp) {
            ctx.ignored(|| format!("rejected pre_prepare {view}/{seq}: a signature does not verify"));
            return;
        }
        self.accept_pre_prepare(pp, ctx);
    }

    pub(crate) fn arm_retransmit(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.retransmit_armed {
            self.retransmit_armed = true;
            ctx.set_timer(PbftTimer::Retransmit, (self.config.view_change_timeout_ns / 4).max(1));
        }
    }

    /// `from` is still working on `seq`, which we are done with (it may have lost the
    /// pre-prepare or our votes, and we no longer retransmit finished slots): send it
    /// the primary's signed pre-prepare, our prepare and our commit, or, if the slot is
    /// behind our stable checkpoint already, the checkpoint certificate so it can fetch
    /// the state. At most once per retransmission period per peer.
    pub(crate) fn help_laggard(&mut self, from: NodeId, view: View, seq: Seq, ctx: &mut Context<'_, Self>) {
        if seq > self.last_executed {
            return;
        }
        let now = ctx.now();
        let period = (self.config.view_change_timeout_ns / 4).max(1);
        if self.helped_at.get(&(from, seq)).is_some_and(|at| now < *at + period) {
            return;
        }
        self.helped_at.insert((from, seq), now);
        if self.helped_at.len() > 4096 {
            self.helped_at.retain(|_, at| now < *at + period);
        }
        if seq <= self.stable_seq {
            for vote in self.stable_proof.clone() {
                ctx.send(from, Message::Checkpoint(vote));
            }
            return;
        }
        let Some(slot) = self.log.get(&seq).filter(|s| s.committed) else { return };
        let Some(pp) = slot.pre_prepare.clone().filter(|pp| pp.body.view == view) else { return };
        let prepare = slot.prepares.get(&self.id).cloned();
        let digest = pp.body.digest;
        ctx.send(from, Message::PrePrepare(pp));
        if let Some(prepare) = prepare {
            ctx.send(from, Message::Prepare(prepare));
        }
        let commit = self.sign_phase(b"commit", Vote { view, seq, digest });
        ctx.send(from, Message::Commit(commit));
    }

    pub(crate) fn retransmit(&mut self, ctx: &mut Context<'_, Self>) {
        self.retransmit_armed = false;
        if self.in_view_change {
            return;
        }
        let mut resend = Vec::new();
        let mut young = false;
        let period = (self.config.view_change_timeout_ns / 4).max(1);
        let now = ctx.now();
        for (seq, slot) in self.log.range(self.last_executed + 1..) {
            let Some(pp) = slot.pre_prepare.as_ref() else { continue };
            if pp.body.view != self.view {
                continue;
            }
            if now < slot.accepted_at + period {
                young = true;
                continue;
            }
            if pp.signer == self.id {
                resend.push(Message::PrePrepare(pp.clone()));
            }
            if let Some(prepare) = slot.prepares.get(&self.id) {
                resend.push(Message::Prepare(prepare.clone()));
            }
            if slot.prepared {
                let _ = seq;
                resend.push(Message::Commit(Signed {
                    body: Vote { view: pp.body.view, seq: pp.body.seq, digest: pp.body.digest },
                    signer: self.id,
                    signature: Vec::new(),
                }));
            }
        }
        if resend.is_empty() {
            if young {
                self.arm_retransmit(ctx);
            }
            return;
        }
        resend.push(Message::Behind { view: self.view, seq: self.last_executed + 1 });
        for msg in resend {
            let msg = match msg {
                // Commits are re-signed (the signature was not kept); signing is
                // deterministic, so it is the same commit.
                Message::Commit(c) => Message::Commit(self.sign_phase(b"commit", c.body)),
                other => other,
            };
            ctx.broadcast(msg);
        }
        self.arm_retransmit(ctx);
    }

    /// Why a normal-case message of `view`/`seq` is not for this replica now (it passed
    /// `view == self.view && !in_view_change && in_window(seq)` otherwise).
    pub(crate) fn why_not_current(&self, view: View, seq: Seq) -> String {
        if view != self.view {
            format!("we are in view {}", self.view)
        } else if self.in_view_change {
            format!("we are changing view from {view}")
        } else {
            let (low, high) = (self.stable_seq, self.stable_seq + self.config.log_window);
            format!("seq {seq} outside our watermarks ({low}, {high}]")
        }
    }

    pub(crate) fn handle_prepare(&mut self, vote: Signed<Vote>, ctx: &mut Context<'_, Self>) {
        let Vote { view, seq, .. } = vote.body;
        self.missed_new_view(view, ctx);
        if view != self.view || self.in_view_change || !self.in_window(seq) || vote.signer == self.primary_of(view) {
            ctx.ignored(|| {
                let why = if vote.signer == self.primary_of(view) {
                    "the primary does not prepare (its pre-prepare stands for it)".to_string()
                } else {
                    self.why_not_current(view, seq)
                };
                format!("ignored prepare {view}/{seq} from {}: {why}", vote.signer)
            });
            return;
        }
        if !self.verify_phase(b"prepare", &vote) {
            ctx.ignored(|| format!("rejected prepare {view}/{seq} from {}: bad signature", vote.signer));
            return;
        }
        self.log.entry(seq).or_default().prepares.entry(vote.signer).or_insert(vote);
        self.check_prepared(seq, ctx);
    }

    /// Prepared: the pre-prepare and `2f` matching prepares from distinct backups.
    pub(crate) fn check_prepared(&mut self, seq: Seq, ctx: &mut Context<'_, Self>) {
        let Some(slot) = self.log.get(&seq) else { return };
        let Some(pp) = slot.pre_prepare.as_ref() else { return };
        if slot.prepared {
            return;
        }
        let matching: Vec<Signed<Vote>> =
            slot.prepares.values().filter(|p| p.body.digest == pp.body.digest).cloned().collect();
        if matching.len() < self.prepares_needed() {
            return;
        }
        let cert = PreparedCert { pre_prepare: pp.clone(), prepares: matching };
        if self.prepared_certs.get(&seq).is_some_and(|earlier| {
            earlier.pre_prepare.body.view < pp.body.view && earlier.pre_prepare.body.digest != pp.body.digest
        }) {
            ctx.reached(&marks::PREPARED_OVER_LOWER_VIEW);
        }
        let vote = Vote { view: pp.body.view, seq, digest: pp.body.digest };
        self.log.get_mut(&seq).expect("slot").prepared = true;
        ctx.persist(Record::Prepared { cert: cert.clone() });
        self.prepared_certs.insert(seq, cert);
        let commit = self.sign_phase(b"commit", vote);
        self.log.get_mut(&seq).expect("slot").commits.insert(self.id, commit.body.digest);
        ctx.broadcast(Message::Commit(commit));
        self.check_committed(seq, ctx);
    }

    pub(crate) fn handle_commit(&mut self, vote: Signed<Vote>, ctx: &mut Context<'_, Self>) {
        let Vote { view, seq, digest } = vote.body;
        self.missed_new_view(view, ctx);
        if view != self.view || self.in_view_change || !self.in_window(seq) {
            ctx.ignored(|| {
                format!("ignored commit {view}/{seq} from {}: {}", vote.signer, self.why_not_current(view, seq))
            });
            return;
        }
        if !self.verify_phase(b"commit", &vote) {
            ctx.ignored(|| format!("rejected commit {view}/{seq} from {}: bad signature", vote.signer));
            return;
        }
        self.log.entry(seq).or_default().commits.entry(vote.signer).or_insert(digest);
        self.check_committed(seq, ctx);
    }

    /// Committed-local: prepared and `2f + 1` matching commits.
    pub(crate) fn check_committed(&mut self, seq: Seq, ctx: &mut Context<'_, Self>) {
        let quorum = if self.config.ablate.mutant_commit_quorum_2f { 2 * self.f as usize } else { self.quorum() };
        let Some(slot) = self.log.get_mut(&seq) else { return };
        let Some(pp) = slot.pre_prepare.as_ref() else { return };
        if !slot.prepared || slot.committed {
            return;
        }
        let digest = pp.body.digest;
        if slot.commits.values().filter(|d| **d == digest).count() < quorum {
            return;
        }
        slot.committed = true;
        self.execute_ready(ctx);
    }

    /// Execute committed batches in sequence order.
    pub(crate) fn execute_ready(&mut self, ctx: &mut Context<'_, Self>) {
        let before = self.last_executed;
        loop {
            let next = self.last_executed + 1;
            let Some(slot) = self.log.get(&next) else { break };
            if !slot.committed {
                break;
            }
            let pp = slot.pre_prepare.clone().expect("committed slots have a pre-prepare");
            self.execute(next, pp.body.digest, &pp.body.batch, ctx);
        }
        if self.last_executed > before {
            self.view_change_attempts = 0; // progress: the next view change starts short again
        }
        self.restart_or_stop_timer(ctx);
        if self.primary() == self.id {
            self.flush(ctx);
        }
    }

    pub(crate) fn execute(&mut self, seq: Seq, digest: Digest, batch: &[Arc<Request>], ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::Executed { seq, digest, batch: batch.to_vec() });
        self.apply_batch(seq, digest, batch, Some(ctx));
        if seq.is_multiple_of(self.config.checkpoint_interval) {
            let state = state_digest(seq, &self.prefix_digest, &self.kv);
            self.snapshots.insert(seq, (self.prefix_digest, self.kv.clone()));
            let vote = self.sign(CheckpointVote { seq, state });
            self.own_checkpoints.insert(seq, vote.clone());
            ctx.broadcast(Message::Checkpoint(vote.clone()));
            self.record_checkpoint_vote(vote, ctx);
        }
    }

    /// Apply a committed batch (also used when rebuilding from records, without `ctx`).
    pub(crate) fn apply_batch(
        &mut self,
        seq: Seq,
        digest: Digest,
        batch: &[Arc<Request>],
        ctx: Option<&mut Context<'_, Self>>,
    ) {
        debug_assert_eq!(seq, self.last_executed + 1);
        self.prefix_digest = self.prefix_digest.chain(seq, &digest);
        self.last_executed = seq;
        let mut replies = Vec::new();
        for request in batch {
            if let Some(result) = self.kv.apply(request) {
                replies.push(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
            }
            if self.waiting.get(&request.client).is_some_and(|s| *s <= request.seq) {
                self.waiting.remove(&request.client);
            }
            self.stats.requests_executed += 1;
        }
        if let Some(ctx) = ctx {
            ctx.observe(Event::Committed { slot: seq, digest, prefix_digest: self.prefix_digest });
            ctx.observe(Event::Applied { slot: seq, digest });
            for reply in replies {
                ctx.reply(reply);
            }
        }
    }

    /// A client request, straight from the client or forwarded by a backup.
    pub(crate) fn receive_request(&mut self, request: Arc<Request>, ctx: &mut Context<'_, Self>) {
        if self.primary() == self.id && !self.in_view_change && self.config.batch_delay_ns > 0 {
            // The batch waits anyway: check its client signatures together when it closes.
            self.unverified.push(request);
            if self.unverified.len() >= self.config.max_batch {
                self.admit_unverified(ctx);
            } else if !self.flush_armed {
                self.flush_armed = true;
                ctx.set_timer(PbftTimer::Flush, self.config.batch_delay_ns);
            }
            return;
        }
        if self.primary() == self.id && !self.in_view_change {
            // Batching adaptively: the request joins the next batch, whose signatures
            // are checked together when it goes: now if the pipeline has room, else
            // when a batch executes.
            self.unverified.push(request);
            self.flush(ctx);
            return;
        }
        if self.verify_request(&request) {
            self.take_request(request, ctx);
        }
    }

    /// Primary: the requests collected for the next batch whose signatures hold.
    pub(crate) fn admit_unverified(&mut self, ctx: &mut Context<'_, Self>) {
        let requests = std::mem::take(&mut self.unverified);
        let valid = self.check_requests(&requests);
        for (request, ok) in requests.into_iter().zip(valid) {
            if ok {
                self.queue_request(request, ctx);
            }
        }
    }

    /// A request whose signature holds: queued for the next batch at the primary
    /// (proposed now if the pipeline has room), forwarded by a backup.
    pub(crate) fn take_request(&mut self, request: Arc<Request>, ctx: &mut Context<'_, Self>) {
        if self.queue_request(request, ctx) && self.config.batch_delay_ns == 0 {
            self.flush(ctx);
        }
    }

    /// [`Pbft::take_request`] short of proposing adaptively: true when the request
    /// joined the primary's pending batch with no batch delay, so the caller decides
    /// when to flush (once for a whole admitted batch).
    fn queue_request(&mut self, request: Arc<Request>, ctx: &mut Context<'_, Self>) -> bool {
        let applied = self.kv.last_applied_seq(request.client);
        if request.seq <= applied {
            // Executed already: answer again from the session table (the reply may
            // have been lost), never execute twice.
            if let Some(result) = self.kv.apply(&request) {
                ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::Done(result) });
            }
            return false;
        }
        if self.assigned.get(&request.client).is_some_and(|s| *s >= request.seq) && self.primary() == self.id {
            return false; // already proposed; its execution will answer it
        }
        if self.primary() == self.id && !self.in_view_change {
            self.assigned.insert(request.client, request.seq);
            self.pending.push(request);
            if self.config.batch_delay_ns == 0 {
                return true;
            }
            if self.pending.len() >= self.config.max_batch {
                if self.flush_armed {
                    self.flush_armed = false;
                    ctx.cancel_timer(PbftTimer::Flush);
                }
                self.flush(ctx);
            } else if !self.flush_armed {
                self.flush_armed = true;
                ctx.set_timer(PbftTimer::Flush, self.config.batch_delay_ns);
            }
        } else {
            // A backup: pass it to the primary and watch that it executes.
            let waiting = self.waiting.entry(request.client).or_insert(0);
            if *waiting < request.seq {
                *waiting = request.seq;
                if !self.in_view_change {
                    ctx.send(self.primary(), Message::Forward(request));
                }
            }
            self.start_timer(ctx);
        }
        false
    }
}
