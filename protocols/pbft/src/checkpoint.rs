//! Checkpoints and garbage collection (§4.3): every `checkpoint_interval` sequence
//! numbers a replica signs the state digest; 2f + 1 matching votes make the
//! checkpoint stable, which moves the watermarks and discards the log below it. A
//! replica behind a stable checkpoint fetches the state and checks it against the
//! certified digest before installing it.

use super::*;

impl Pbft {
    pub(crate) fn handle_checkpoint(&mut self, vote: Signed<CheckpointVote>, ctx: &mut Context<'_, Self>) {
        if vote.body.seq <= self.stable_seq || vote.body.seq > self.stable_seq + 4 * self.config.log_window {
            ctx.ignored(|| {
                format!(
                    "ignored checkpoint {} from {}: our stable checkpoint is {}",
                    vote.body.seq, vote.signer, self.stable_seq
                )
            });
            return;
        }
        if !self.verify(&vote) {
            ctx.ignored(|| format!("rejected checkpoint {} from {}: bad signature", vote.body.seq, vote.signer));
            return;
        }
        self.record_checkpoint_vote(vote, ctx);
    }

    pub(crate) fn record_checkpoint_vote(&mut self, vote: Signed<CheckpointVote>, ctx: &mut Context<'_, Self>) {
        let seq = vote.body.seq;
        let state = vote.body.state;
        let votes = self.checkpoint_votes.entry(seq).or_default();
        votes.entry(vote.signer).or_insert(vote);
        let proof: Vec<Signed<CheckpointVote>> = votes.values().filter(|v| v.body.state == state).cloned().collect();
        if proof.len() >= self.quorum() && seq > self.stable_seq {
            self.make_stable(seq, proof, ctx);
        }
    }

    pub(crate) fn make_stable(&mut self, seq: Seq, proof: Vec<Signed<CheckpointVote>>, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::Stable { proof: proof.clone() });
        self.stable_seq = seq;
        self.stable_proof = proof;
        // Garbage collection: nothing at or below a stable checkpoint is needed again.
        self.log = self.log.split_off(&(seq + 1));
        self.prepared_certs = self.prepared_certs.split_off(&(seq + 1));
        self.checkpoint_votes = self.checkpoint_votes.split_off(&(seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&(seq + 1));
        self.snapshots = self.snapshots.split_off(&seq);
        if self.next_seq <= seq {
            self.next_seq = seq + 1;
        }
        if self.last_executed < seq {
            // Fell behind a certified state: fetch it rather than wait for a log that
            // is being discarded.
            self.request_state(seq, ctx);
        } else if self.primary() == self.id {
            self.flush(ctx);
        }
    }

    /// Ask for the state at `seq`; repeated (at most every half view-change timeout)
    /// while it has not arrived, since a request or its answer can be lost.
    pub(crate) fn request_state(&mut self, seq: Seq, ctx: &mut Context<'_, Self>) {
        let now = ctx.now();
        let retry_after = self.config.view_change_timeout_ns / 2;
        if self.state_fetch_sent.is_some_and(|(s, at)| s >= seq && now < at + retry_after) {
            return;
        }
        self.state_fetch_sent = Some((seq, now));
        ctx.broadcast(Message::FetchState { seq });
    }

    /// Behind our own stable checkpoint (its log is gone): keep asking for the state.
    pub(crate) fn maybe_fetch_state(&mut self, ctx: &mut Context<'_, Self>) {
        if self.last_executed < self.stable_seq {
            self.request_state(self.stable_seq, ctx);
        }
    }

    pub(crate) fn handle_fetch_state(&mut self, from: NodeId, seq: Seq, ctx: &mut Context<'_, Self>) {
        if self.stable_seq < seq || self.stable_seq == 0 {
            return;
        }
        let Some((prefix_digest, kv)) = self.snapshots.get(&self.stable_seq).cloned() else { return };
        ctx.send(from, Message::State { proof: self.stable_proof.clone(), prefix_digest, kv });
    }

    pub(crate) fn handle_state(
        &mut self,
        proof: Vec<Signed<CheckpointVote>>,
        prefix_digest: Digest,
        kv: KvStore,
        ctx: &mut Context<'_, Self>,
    ) {
        let Some(seq) = proof.first().map(|c| c.body.seq) else { return };
        if seq <= self.last_executed {
            return;
        }
        let Some(certified) = self.valid_checkpoint_proof(seq, &proof) else { return };
        if state_digest(seq, &prefix_digest, &kv) != certified {
            return; // a state that does not match its certificate: ignore the sender
        }
        self.stats.state_transfers += 1;
        ctx.reached(&marks::STATE_TRANSFERRED);
        ctx.persist(Record::Installed { seq, prefix_digest, kv: kv.clone() });
        self.install_state(seq, prefix_digest, kv);
        if seq > self.stable_seq {
            self.make_stable(seq, proof, ctx);
        }
        self.state_fetch_sent = None;
        self.execute_ready(ctx);
    }

    pub(crate) fn install_state(&mut self, seq: Seq, prefix_digest: Digest, kv: KvStore) {
        self.last_executed = seq;
        self.prefix_digest = prefix_digest;
        self.snapshots.insert(seq, (prefix_digest, kv.clone()));
        self.kv = kv;
        self.waiting.retain(|client, s| self.kv.last_applied_seq(*client) < *s);
    }
}
