//! Log compaction (§7): snapshots at the configured thresholds, persisted as one record
//! that supersedes every earlier one, and `InstallSnapshot` in chunks with one in
//! flight for a follower whose next entry the leader has discarded (Figure 13).

use super::*;

impl Raft {
    /// Send `peer` the next chunk of a snapshot: the one already on its way to it, or
    /// else the latest. One chunk is in flight per follower; the follower's answer
    /// (or, if a chunk is lost, the next heartbeat response) asks for the next.
    pub(crate) fn send_snapshot_chunk(&mut self, peer: NodeId, ctx: &mut Context<'_, Self>) {
        let (latest, latest_state) = (self.snapshot, Arc::clone(&self.snapshot_state));
        let progress = &mut self.progress[peer.0 as usize];
        let (meta, state, offset) = progress.snapshot_sending.get_or_insert((latest, latest_state, 0)).clone();
        let end = (offset as usize + self.config.snapshot_chunk_bytes.max(1)).min(state.len());
        let data = state[offset as usize..end].to_vec();
        let (term, total_bytes) = (self.current_term, state.len() as u64);
        ctx.send(peer, Message::InstallSnapshot { term, meta, total_bytes, offset, data });
    }

    /// Snapshot the state machine at the last applied entry and discard the log up to
    /// it, once enough was applied since the last snapshot.
    pub(crate) fn maybe_compact(&mut self, ctx: &mut Context<'_, Self>) {
        let config = &self.config;
        let applied_since = self.last_applied - self.snapshot.last_included_index;
        let due = (config.snapshot_every_entries > 0 && applied_since >= config.snapshot_every_entries)
            || (config.snapshot_every_bytes > 0 && self.applied_bytes_since_snapshot >= config.snapshot_every_bytes);
        if !due || applied_since == 0 {
            return;
        }
        let index = self.last_applied;
        let at = self.pos(index);
        self.snapshot = SnapshotMeta {
            last_included_index: index,
            last_included_term: self.log[at].term,
            last_included_digest: self.entry_digests[at],
            prefix_digest: self.prefix_digests[at + 1],
            state_digest: self.kv.state_digest(),
        };
        self.snapshot_state = Arc::new(encode_state(&self.kv));
        self.log.drain(..=at);
        self.entry_digests.drain(..=at);
        self.prefix_digests.drain(..=at);
        self.applied_bytes_since_snapshot = 0;
        self.snapshots_taken += 1;
        self.persist_snapshot(ctx);
    }

    /// One record with all a restart needs; the driver drops every earlier one.
    pub(crate) fn persist_snapshot(&self, ctx: &mut Context<'_, Self>) {
        ctx.persist(Record::Snapshot {
            term: self.current_term,
            voted_for: self.voted_for,
            meta: self.snapshot,
            state: self.snapshot_state.as_ref().clone(),
            entries: self.log.clone(),
        });
    }

    /// Replace the log before `meta` and the state machine with a snapshot, keeping
    /// the entries after it when this log holds its last entry (Figure 13, steps 6–7).
    pub(crate) fn load_snapshot(&mut self, meta: SnapshotMeta, state: Arc<Vec<u8>>, kv: KvStore) {
        let index = meta.last_included_index;
        let keep: Vec<Entry> = if index > self.snapshot.last_included_index
            && index <= self.last_index()
            && self.term_at(index) == Some(meta.last_included_term)
        {
            self.log[self.pos(index) + 1..].to_vec()
        } else {
            Vec::new()
        };
        self.snapshot = meta;
        self.snapshot_state = state;
        self.log.clear();
        self.entry_digests.clear();
        self.prefix_digests = vec![meta.prefix_digest];
        for entry in keep {
            self.push_entry(entry);
        }
        self.kv = kv;
        self.commit_index = self.commit_index.max(index);
        self.last_applied = index;
        self.applied_bytes_since_snapshot = 0;
    }

    #[expect(clippy::too_many_arguments, reason = "the arguments are the RPC's fields, named as in Figure 13")]
    pub(crate) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
        ctx: &mut Context<'_, Self>,
    ) {
        let index = meta.last_included_index;
        if self.role == Role::Candidate {
            ctx.reached(&marks::SNAPSHOT_DURING_ELECTION);
        }
        if !self.accept_leader(from, term, ctx) {
            return;
        }
        let answer = |received, installed, ctx: &mut Context<'_, Self>| {
            ctx.send(from, Message::InstallSnapshotResponse { term, last_included_index: index, received, installed });
        };
        if index <= self.commit_index {
            // Our log or snapshot already holds everything it covers, committed.
            self.incoming_snapshot = None;
            answer(total_bytes, true, ctx);
            return;
        }
        let mut incoming = match self.incoming_snapshot.take() {
            Some(i) if i.meta == meta && i.total_bytes == total_bytes => i,
            _ => IncomingSnapshot { meta, total_bytes, data: Vec::new() },
        };
        // Take only the chunk that continues what we hold; a duplicate, a reordered or
        // an oversized chunk is answered with what we hold, and the leader resends.
        if offset == incoming.data.len() as u64 && offset + data.len() as u64 <= total_bytes {
            incoming.data.extend_from_slice(&data);
        }
        let received = incoming.data.len() as u64;
        if received < total_bytes {
            self.incoming_snapshot = Some(incoming);
            answer(received, false, ctx);
            return;
        }
        let Some(kv) = decode_state(&incoming.data).filter(|kv| kv.state_digest() == meta.state_digest) else {
            // An honest leader cannot send this; start over rather than install it.
            answer(0, false, ctx);
            return;
        };
        self.load_snapshot(meta, Arc::new(incoming.data), kv);
        self.snapshots_installed += 1;
        self.persist_snapshot(ctx);
        ctx.observe(Event::Committed {
            slot: index,
            digest: meta.last_included_digest,
            prefix_digest: meta.prefix_digest,
        });
        ctx.observe(Event::Applied { slot: index, digest: meta.last_included_digest });
        answer(total_bytes, true, ctx);
    }

    pub(crate) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        term: Term,
        last_included_index: Index,
        received: u64,
        installed: bool,
        ctx: &mut Context<'_, Self>,
    ) {
        if !self.accept_response(from, term, ctx) {
            return;
        }
        let progress = &mut self.progress[from.0 as usize];
        if installed {
            progress.snapshot_sending = None;
            progress.match_index = progress.match_index.max(last_included_index);
            progress.next_index = progress.match_index + 1;
            self.maybe_commit(ctx);
            if self.progress[from.0 as usize].next_index <= self.last_index() {
                self.send_append(from, ctx);
            }
            return;
        }
        match progress.snapshot_sending.as_mut() {
            Some((meta, state, acked)) if meta.last_included_index == last_included_index => {
                // `received` may go back (the follower restarted): resume from there.
                *acked = received.min(state.len() as u64);
            }
            // An answer about a transfer this leader no longer runs.
            _ => return,
        }
        self.send_snapshot_chunk(from, ctx);
    }
}

/// The state machine as a snapshot carries it.
pub(crate) fn encode_state(kv: &KvStore) -> Vec<u8> {
    postcard::to_stdvec(kv).expect("in-memory serialization cannot fail")
}

pub(crate) fn decode_state(bytes: &[u8]) -> Option<KvStore> {
    postcard::from_bytes(bytes).ok()
}
