//! Checkpoints: a snapshot of the applied state every `checkpoint_every_slots`,
//! persisted as one record that supersedes the log before it, and shipped in chunks to
//! a learner that needs slots the leader has forgotten.

use super::*;

impl Paxos {
    /// Checkpoint at the last applied slot once enough was applied since the last one.
    pub(crate) fn maybe_checkpoint(&mut self, ctx: &mut Context<'_, Self>) {
        let every = self.config.checkpoint_every_slots;
        if every == 0 || self.last_applied < self.base() + every {
            return;
        }
        let slot = self.last_applied;
        let state = encode_state(&self.kv);
        let checkpoint = Checkpoint {
            slot,
            digest: self.chosen_digests[(slot - self.base() - 1) as usize],
            prefix_digest: self.prefix_digest_at(slot),
            state_digest: self.kv.state_digest(),
            state: Arc::new(state),
        };
        self.forget_through(checkpoint);
        self.checkpoints_taken += 1;
        self.persist_checkpoint(ctx);
    }

    /// Make `checkpoint` the base: drop the chosen and accepted values up to it.
    pub(crate) fn forget_through(&mut self, checkpoint: Checkpoint) {
        let drop = (checkpoint.slot - self.base()) as usize;
        self.chosen.drain(..drop.min(self.chosen.len()));
        self.chosen_digests.drain(..drop.min(self.chosen_digests.len()));
        self.prefix_digests.drain(..drop.min(self.prefix_digests.len() - 1));
        self.accepted.drain(..drop.min(self.accepted.len()));
        self.checkpoint = checkpoint;
        if self.chosen.is_empty() {
            self.prefix_digests = vec![self.checkpoint.prefix_digest];
        }
    }

    pub(crate) fn persist_checkpoint(&self, ctx: &mut Context<'_, Self>) {
        let base = self.base();
        let accepted = self
            .accepted
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|(b, v)| (base + 1 + i as Slot, *b, v.clone())))
            .collect();
        ctx.persist(Record::Checkpointed { promised: self.promised, checkpoint: self.checkpoint.clone(), accepted });
    }

    /// Install a checkpoint from another replica if it lies beyond our commit point:
    /// its state replaces ours and its slot becomes our commit point.
    pub(crate) fn install_checkpoint(&mut self, checkpoint: Checkpoint, ctx: &mut Context<'_, Self>) -> bool {
        if checkpoint.slot <= self.commit_index() {
            return false;
        }
        let Some(kv) = decode_state(&checkpoint.state).filter(|kv| kv.state_digest() == checkpoint.state_digest) else {
            return false; // an honest replica cannot send this
        };
        let (slot, digest, prefix_digest) = (checkpoint.slot, checkpoint.digest, checkpoint.prefix_digest);
        // Accepted values above it stay; everything at or below it is chosen.
        let keep_from = (slot - self.base()) as usize;
        let accepted: Vec<Option<(Ballot, Value)>> = self.accepted.drain(..).skip(keep_from).collect();
        self.chosen.clear();
        self.chosen_digests.clear();
        self.checkpoint = checkpoint;
        self.prefix_digests = vec![prefix_digest];
        self.accepted = accepted;
        self.kv = kv;
        self.last_applied = slot;
        self.states_transferred_in += 1;
        self.persist_checkpoint(ctx);
        ctx.observe(Event::Committed { slot, digest, prefix_digest });
        ctx.observe(Event::Applied { slot, digest });
        true
    }
}

/// The state machine as a checkpoint carries it (canonical: the same state, the same bytes).
pub(crate) fn encode_state(kv: &KvStore) -> Vec<u8> {
    postcard::to_stdvec(kv).expect("in-memory serialization cannot fail")
}

pub(crate) fn decode_state(bytes: &[u8]) -> Option<KvStore> {
    postcard::from_bytes(bytes).ok()
}
