//! View changes (§4.4 and TOCS §4.5): the timer that suspects the primary (doubling
//! with each change that brings no progress), VIEW-CHANGE with the stable checkpoint
//! and prepared certificates, the new primary's NEW-VIEW with the recomputed set O
//! of pre-prepares, every backup's check of it, and catching up to a view the rest
//! of the cluster moved to (f + 1 replicas ahead, or a NEW-VIEW that never came).

use super::*;

impl Pbft {
    /// The paper doubles the timeout with every view change that brings no progress, so
    /// that it eventually outgrows the network's delays. Doubling without end also lets
    /// f replicas that keep forcing view changes (joined by one honest replica's timeout,
    /// see the f + 1 rule) push it to hours; 64 times the first timeout is far above any
    /// delay a run sees and bounds how long a correct cluster waits.
    pub(crate) fn view_change_timeout(&self) -> Nanos {
        self.config.view_change_timeout_ns << self.view_change_attempts.min(MAX_VIEW_CHANGE_DOUBLINGS)
    }

    pub(crate) fn start_timer(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.timer_running {
            self.timer_running = true;
            ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        }
    }

    pub(crate) fn restart_or_stop_timer(&mut self, ctx: &mut Context<'_, Self>) {
        if self.in_view_change {
            return;
        }
        if self.waiting.is_empty() {
            if self.timer_running {
                self.timer_running = false;
                ctx.cancel_timer(PbftTimer::ViewChange);
            }
        } else {
            self.timer_running = true;
            ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        }
    }

    /// Normal-case traffic from f + 1 replicas in views above ours: at least one honest
    /// replica works in such a view, so the cluster changed views while we were down or
    /// cut off (a restarted primary of an old view would otherwise keep proposing to no
    /// one, and never time out on itself). Join the highest view f + 1 of them vouch for;
    /// its NEW-VIEW is then fetched like any other missed one. One number per replica,
    /// so a faulty one claiming ever higher views costs no memory.
    pub(crate) fn note_later_view(&mut self, from: NodeId, view: View, ctx: &mut Context<'_, Self>) {
        if view <= self.view {
            return;
        }
        let seen = &mut self.later_view_of[from.0 as usize];
        *seen = (*seen).max(view);
        let mut views = self.later_view_of.clone();
        views.sort_unstable_by(|a, b| b.cmp(a));
        let vouched = views[self.f as usize];
        if vouched > self.view {
            ctx.reached(&marks::JOINED_LATER_VIEW);
            self.start_view_change(vouched, ctx);
        }
    }

    /// Traffic of the view we are changing to: its NEW-VIEW went past us. Ask for it.
    pub(crate) fn missed_new_view(&mut self, view: View, ctx: &mut Context<'_, Self>) {
        if !(self.in_view_change && view == self.view) || self.primary_of(view) == self.id {
            return;
        }
        let now = ctx.now();
        if self.new_view_fetch_at.is_some_and(|at| now < at + self.config.view_change_timeout_ns / 4) {
            return;
        }
        self.new_view_fetch_at = Some(now);
        ctx.reached(&marks::NEW_VIEW_FETCHED);
        ctx.send(self.primary_of(view), Message::FetchNewView { view });
    }

    /// Move to view `new_view`: stop the normal case and multicast a VIEW-CHANGE.
    pub(crate) fn start_view_change(&mut self, new_view: View, ctx: &mut Context<'_, Self>) {
        if new_view <= self.view && self.in_view_change {
            return;
        }
        self.view = new_view;
        self.in_view_change = true;
        self.stats.view_changes += 1;
        ctx.persist(Record::View { view: new_view });
        if self.flush_armed {
            self.flush_armed = false;
            ctx.cancel_timer(PbftTimer::Flush);
        }
        self.pending.clear();
        self.unverified.clear();
        let prepared: Vec<PreparedCert> =
            self.prepared_certs.range(self.stable_seq + 1..).map(|(_, c)| c.clone()).collect();
        if !prepared.is_empty() {
            ctx.reached(&marks::VIEW_CHANGE_CARRIES_CERTIFICATE);
        }
        let vc = self.sign(ViewChange {
            new_view,
            stable_seq: self.stable_seq,
            checkpoint_proof: self.stable_proof.clone(),
            prepared,
        });
        self.view_changes.entry(new_view).or_default().insert(self.id, vc.clone());
        ctx.broadcast(Message::ViewChange(vc));
        // Wait for the new view, longer each time one fails to come.
        self.timer_running = true;
        ctx.set_timer(PbftTimer::ViewChange, self.view_change_timeout());
        self.view_change_attempts += 1;
        self.maybe_send_new_view(new_view, ctx);
    }

    pub(crate) fn valid_view_change(&mut self, vc: &Signed<ViewChange>) -> bool {
        if !self.verify(vc) {
            return false;
        }
        let body = &vc.body;
        if self.valid_checkpoint_proof(body.stable_seq, &body.checkpoint_proof).is_none() {
            return false;
        }
        let certs = body.prepared.clone();
        certs.iter().all(|c| {
            c.pre_prepare.body.view < body.new_view && c.pre_prepare.body.seq > body.stable_seq && self.valid_cert(c)
        })
    }

    pub(crate) fn handle_view_change(&mut self, vc: Signed<ViewChange>, ctx: &mut Context<'_, Self>) {
        let new_view = vc.body.new_view;
        if new_view < self.view || (new_view == self.view && !self.in_view_change) {
            ctx.ignored(|| {
                format!("ignored view_change to {new_view} from {}: we are in view {}", vc.signer, self.view)
            });
            return;
        }
        if self.view_changes.get(&new_view).is_some_and(|m| m.contains_key(&vc.signer)) {
            return; // a retransmission: nothing to explain
        }
        if !self.valid_view_change(&vc) {
            ctx.ignored(|| {
                format!(
                    "rejected view_change to {new_view} from {}: a signature or certificate does not verify",
                    vc.signer
                )
            });
            return;
        }
        self.view_changes.entry(new_view).or_default().insert(vc.signer, vc);
        // f + 1 replicas want a higher view: at least one honest one timed out, so
        // join the smallest such view rather than wait for our own timer.
        let higher: BTreeSet<NodeId> =
            self.view_changes.range(self.view + 1..).flat_map(|(_, m)| m.keys().copied()).collect();
        if higher.len() > self.f as usize && !(self.in_view_change && self.view >= new_view) {
            let smallest =
                self.view_changes.range(self.view + 1..).map(|(v, _)| *v).next().expect("a higher view was seen");
            if smallest > self.view || !self.in_view_change {
                ctx.reached(&marks::JOINED_ON_F_PLUS_ONE);
                self.start_view_change(smallest, ctx);
            }
        }
        self.maybe_send_new_view(new_view, ctx);
    }

    /// The O set of a NEW-VIEW from its V set: for every seq between the highest stable
    /// checkpoint and the highest prepared seq, the digest prepared in the highest view,
    /// or a null request. (`keep_lower_view` is the test-only NEW-VIEW mutant.)
    pub(crate) fn compute_o(view: View, vcs: &[Signed<ViewChange>], keep_lower_view: bool) -> (Seq, Vec<PrePrepare>) {
        let min_s = vcs.iter().map(|vc| vc.body.stable_seq).max().unwrap_or(0);
        let mut best: BTreeMap<Seq, &PrePrepare> = BTreeMap::new();
        for vc in vcs {
            for cert in &vc.body.prepared {
                let pp = &cert.pre_prepare.body;
                if pp.seq <= min_s {
                    continue;
                }
                if best.get(&pp.seq).is_none_or(|b| if keep_lower_view { pp.view < b.view } else { pp.view > b.view }) {
                    best.insert(pp.seq, pp);
                }
            }
        }
        let max_s = best.keys().next_back().copied().unwrap_or(min_s);
        let o = (min_s + 1..=max_s)
            .map(|seq| match best.get(&seq) {
                Some(pp) => PrePrepare { view, seq, digest: pp.digest, batch: pp.batch.clone() },
                None => PrePrepare { view, seq, digest: batch_digest(&[]), batch: Vec::new() },
            })
            .collect();
        (min_s, o)
    }

    pub(crate) fn maybe_send_new_view(&mut self, view: View, ctx: &mut Context<'_, Self>) {
        if self.primary_of(view) != self.id || view != self.view || !self.in_view_change {
            return;
        }
        if self.new_view_sent.contains(&view) {
            return;
        }
        let Some(vcs) = self.view_changes.get(&view) else { return };
        if vcs.len() < self.quorum() || !vcs.contains_key(&self.id) {
            return;
        }
        let vcs: Vec<Signed<ViewChange>> = vcs.values().take(self.quorum()).cloned().collect();
        let (_, o) = Self::compute_o(view, &vcs, self.config.ablate.mutant_new_view_keeps_lower_view);
        let mut digests: BTreeMap<Seq, Digest> = BTreeMap::new();
        let conflicting = vcs.iter().flat_map(|vc| &vc.body.prepared).any(|cert| {
            let pp = &cert.pre_prepare.body;
            *digests.entry(pp.seq).or_insert(pp.digest) != pp.digest
        });
        if conflicting {
            ctx.reached(&marks::NEW_VIEW_CONFLICTING_CERTIFICATES);
        }
        if o.iter().any(|pp| pp.batch.is_empty()) {
            ctx.reached(&marks::NEW_VIEW_NULL_REQUEST);
        }
        let pre_prepares: Vec<Signed<PrePrepare>> = o.into_iter().map(|pp| self.sign(pp)).collect();
        let nv = self.sign(NewView { view, view_changes: vcs, pre_prepares });
        self.new_view_sent.insert(view);
        self.last_new_view = Some(nv.clone());
        ctx.broadcast(Message::NewView(nv.clone()));
        self.enter_new_view(nv, ctx);
    }

    pub(crate) fn handle_new_view(&mut self, from: NodeId, nv: Signed<NewView>, ctx: &mut Context<'_, Self>) {
        let view = nv.body.view;
        if view < self.view || (view == self.view && !self.in_view_change) || from != self.primary_of(view) {
            ctx.ignored(|| {
                let why = if from != self.primary_of(view) {
                    format!("{from} is not the primary of view {view}")
                } else {
                    format!("we are in view {} already", self.view)
                };
                format!("ignored new_view {view} from {from}: {why}")
            });
            return;
        }
        if nv.signer != from || !self.verify(&nv) {
            ctx.ignored(|| format!("rejected new_view {view} from {from}: bad signature"));
            return;
        }
        // Every view-change in V must be valid, for this view, from distinct replicas.
        let mut signers = BTreeSet::new();
        for vc in nv.body.view_changes.clone() {
            if vc.body.new_view != view || !self.valid_view_change(&vc) {
                ctx.ignored(|| {
                    format!("rejected new_view {view} from {from}: view_change of {} in V is invalid", vc.signer)
                });
                return;
            }
            signers.insert(vc.signer);
        }
        if signers.len() < self.quorum() {
            ctx.ignored(|| {
                format!(
                    "rejected new_view {view} from {from}: V holds {} view-changes, fewer than 2f + 1",
                    signers.len()
                )
            });
            return;
        }
        // Recompute O: a primary that dropped or changed a prepared request is caught here.
        let (_, expected) =
            Self::compute_o(view, &nv.body.view_changes, self.config.ablate.mutant_new_view_keeps_lower_view);
        if expected.len() != nv.body.pre_prepares.len() {
            ctx.reached(&marks::NEW_VIEW_REJECTED);
            ctx.ignored(|| {
                let (want, got) = (expected.len(), nv.body.pre_prepares.len());
                format!("rejected new_view {view} from {from}: O holds {got} pre-prepares, V implies {want}")
            });
            return;
        }
        for (want, got) in expected.iter().zip(nv.body.pre_prepares.clone()) {
            if got.body != *want || got.signer != from || !self.verify(&got) {
                ctx.reached(&marks::NEW_VIEW_REJECTED);
                ctx.ignored(|| {
                    format!(
                        "rejected new_view {view} from {from}: its pre-prepare for seq {} is not what V implies",
                        want.seq
                    )
                });
                return;
            }
        }
        if view > self.view {
            self.view = view;
            ctx.persist(Record::View { view });
        }
        self.enter_new_view(nv, ctx);
    }

    pub(crate) fn enter_new_view(&mut self, nv: Signed<NewView>, ctx: &mut Context<'_, Self>) {
        let view = nv.body.view;
        let (min_s, _) =
            Self::compute_o(view, &nv.body.view_changes, self.config.ablate.mutant_new_view_keeps_lower_view);
        self.in_view_change = false;
        self.view_changes = self.view_changes.split_off(&(view + 1));
        // Fresh per-view state: only this view's messages count from now on.
        let old_log = std::mem::take(&mut self.log);
        let primary = self.primary_of(view);
        self.stats_elected(view, min_s, &nv, ctx);
        ctx.observe(Event::LeaderKnown { epoch: view, leader: primary });
        if min_s > self.stable_seq {
            // The new view starts above our stable checkpoint: adopt the certificate from V.
            if let Some(vc) = nv.body.view_changes.iter().find(|vc| vc.body.stable_seq == min_s) {
                let proof = vc.body.checkpoint_proof.clone();
                self.make_stable(min_s, proof, ctx);
            }
        }
        // Requests assigned in the old view but not carried into this one must be
        // proposable again when their clients retry.
        self.assigned.clear();
        let mut max_s = min_s;
        for pp in nv.body.pre_prepares {
            max_s = max_s.max(pp.body.seq);
            if pp.body.seq <= self.last_executed && !pp.body.batch.is_empty() {
                ctx.reached(&marks::EXECUTED_BATCH_REPROPOSED);
            }
            // Batches we already executed need no new round, but keep the slot so the
            // sequence stays contiguous for those that have not.
            self.accept_pre_prepare(pp, ctx);
        }
        drop(old_log);
        self.next_seq = max_s.max(self.last_executed).max(self.stable_seq) + 1;
        self.own_from_seq = self.next_seq;
        self.timer_running = false;
        ctx.cancel_timer(PbftTimer::ViewChange);
        if !self.waiting.is_empty() {
            self.start_timer(ctx);
        }
        if primary == self.id {
            self.view_change_attempts = 0;
            self.flush(ctx);
        }
    }

    /// The new primary reports itself elected, with its log's prefix digests over the
    /// new view's pre-prepares, so the checkers can test Leader Completeness.
    pub(crate) fn stats_elected(&mut self, view: View, min_s: Seq, nv: &Signed<NewView>, ctx: &mut Context<'_, Self>) {
        if self.primary_of(view) != self.id {
            return;
        }
        if self.last_executed < min_s {
            // Behind the new view's checkpoint: our chain there is not known until the
            // state arrives, so the completeness check has nothing to compare.
            ctx.observe(Event::Elected { epoch: view, log_from_slot: u64::MAX, log_prefix_digests: Vec::new() });
            return;
        }
        let mut digests = vec![self.prefix_digest];
        let from = self.last_executed;
        for pp in &nv.body.pre_prepares {
            if pp.body.seq > from {
                let next = digests.last().expect("non-empty").chain(pp.body.seq, &pp.body.digest);
                digests.push(next);
            }
        }
        ctx.observe(Event::Elected { epoch: view, log_from_slot: from, log_prefix_digests: digests });
    }
}
