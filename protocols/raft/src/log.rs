//! The replica's log as stored: append, truncate on a real conflict, and the digest
//! chain kept beside it. Every change is persisted as a [`Record`] in the same step,
//! so what the driver makes durable is exactly the log the replica acts on.

use super::*;

impl Raft {
    pub(crate) fn append_local(&mut self, entries: Vec<Entry>, ctx: &mut Context<'_, Self>) {
        if entries.is_empty() {
            return;
        }
        for entry in &entries {
            assert_eq!(entry.index, self.last_index() + 1, "log must stay contiguous");
            self.push_entry(entry.clone());
        }
        ctx.persist(Record::Append { entries });
    }

    pub(crate) fn push_entry(&mut self, entry: Entry) {
        let prev = *self.prefix_digests.last().expect("genesis present");
        let digest = entry.digest();
        self.prefix_digests.push(prev.chain(entry.index, &digest));
        self.entry_digests.push(digest);
        self.log.push(entry);
    }

    pub(crate) fn truncate_local(&mut self, from_index: Index, ctx: &mut Context<'_, Self>) {
        if from_index <= self.commit_index {
            // Unreachable while §5's rules hold (Leader Completeness). It happens when a
            // rule is switched off or a peer lies; the node then follows the leader, and
            // the checkers report the slot committed twice with different entries
            // instead of the run stopping at a panic.
            self.commit_index = from_index - 1;
            self.last_applied = self.last_applied.min(self.commit_index);
        }
        self.drop_from(from_index);
        ctx.persist(Record::Truncate { from_index });
    }

    pub(crate) fn drop_from(&mut self, from_index: Index) {
        let keep = self.pos(from_index);
        self.log.truncate(keep);
        self.prefix_digests.truncate(keep + 1);
        self.entry_digests.truncate(keep);
    }
}
