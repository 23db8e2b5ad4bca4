//! The acceptor: promise not to accept below a ballot, answer `Prepare` with what it
//! accepted above the candidate's commit point, accept a value in a ballot at least its
//! promise, and persist both in the step that answers.

use super::*;

impl Paxos {
    pub(crate) fn set_accepted(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        let Some(index) = slot.checked_sub(self.base() + 1) else {
            return; // at or below the checkpoint: chosen, and forgotten on purpose
        };
        let index = index as usize;
        if self.accepted.len() <= index {
            self.accepted.resize(index + 1, None);
        }
        self.accepted[index] = Some((ballot, value));
    }

    /// Accept `values` at `first_slot ..` in `ballot`, persisting them; slots already
    /// known chosen are skipped (their value cannot change).
    pub(crate) fn accept_values(
        &mut self,
        ballot: Ballot,
        first_slot: Slot,
        values: &[Value],
        ctx: &mut Context<'_, Self>,
    ) {
        let commit = self.commit_index();
        let skip = commit.saturating_sub(first_slot - 1).min(values.len() as u64) as usize;
        let values = &values[skip..];
        if values.is_empty() {
            return;
        }
        let first = first_slot + skip as Slot;
        let already = values
            .iter()
            .enumerate()
            .all(|(i, v)| self.accepted_at(first + i as Slot).is_some_and(|(b, held)| *b == ballot && held == v));
        if already {
            return; // a retransmission: nothing new to make durable
        }
        for (i, value) in values.iter().enumerate() {
            self.set_accepted(first + i as Slot, ballot, value.clone());
        }
        ctx.persist(Record::Accepted { ballot, first_slot: first, values: values.to_vec() });
    }

    /// Promise `ballot` (durably, before any answer leaves).
    pub(crate) fn promise(&mut self, ballot: Ballot, ctx: &mut Context<'_, Self>) {
        debug_assert!(ballot >= self.promised);
        if ballot > self.promised {
            self.promised = ballot;
            ctx.persist(Record::Promised { ballot });
        }
    }

    /// What this acceptor reports above `from`: chosen values, then accepted ones. Slots
    /// at or below the checkpoint are not listed (the checkpoint goes along instead).
    pub(crate) fn promised_slots_above(&self, from: Slot) -> Vec<PromisedSlot> {
        let commit = self.commit_index();
        let mut slots = Vec::new();
        for slot in from.max(self.base()) + 1..=commit {
            slots.push(PromisedSlot {
                slot,
                ballot: Ballot::ZERO,
                value: self.chosen[(slot - self.base() - 1) as usize].clone(),
                chosen: true,
            });
        }
        for slot in (from.max(commit) + 1)..=self.base() + self.accepted.len() as Slot {
            if let Some((ballot, value)) = self.accepted_at(slot) {
                slots.push(PromisedSlot { slot, ballot: *ballot, value: value.clone(), chosen: false });
            }
        }
        slots
    }

    pub(crate) fn handle_prepare(&mut self, from: NodeId, ballot: Ballot, commit: Slot, ctx: &mut Context<'_, Self>) {
        // `step_ballot` refused a stale ballot, or promised this one.
        debug_assert_eq!(ballot, self.promised);
        let accepted = self.promised_slots_above(commit);
        let checkpoint = (commit < self.base()).then(|| self.checkpoint.clone());
        if !accepted.is_empty() {
            ctx.reached(&marks::PROMISE_CARRIES_ACCEPTED);
        }
        ctx.send(from, Message::Promise { ballot, accepted, checkpoint });
    }

    pub(crate) fn handle_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first_slot: Slot,
        values: Vec<Value>,
        commit: Slot,
        ctx: &mut Context<'_, Self>,
    ) {
        // `step_ballot` refused a stale ballot, or promised this one and follows `from`.
        debug_assert_eq!(self.promised, ballot);
        let count = values.len() as u64;
        self.accept_values(ballot, first_slot, &values, ctx);
        ctx.send(from, Message::Accepted { ballot, first_slot, count });
        self.learn_commit(ballot, commit, ctx);
    }
}
