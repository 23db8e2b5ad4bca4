//! Reads other than through the log: read-index (a heartbeat round confirms the
//! leadership after the read arrives), lease, and follower-stale.

use super::*;

impl Paxos {
    pub(crate) fn serve_read(&mut self, request: Request, ctx: &mut Context<'_, Self>) {
        debug_assert!(matches!(request.op, Op::Get { .. }), "only gets skip the log");
        if self.config.read_mode == ReadMode::FollowerStale {
            self.reply_read(&request, ctx);
            return;
        }
        if self.role != Role::Leader {
            let leader = self.leader.map(|(_, node)| node).filter(|n| *n != self.id);
            ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::NotLeader { leader } });
            return;
        }
        let commit = self.commit_index();
        let reads = self.reads.as_mut().expect("a leader with leader reads keeps their state");
        if self.config.read_mode == ReadMode::Lease && reads.lease_holds(ctx.now(), commit) {
            self.reply_read(&request, ctx);
            return;
        }
        reads.enqueue(request, commit);
        if reads.round_wanted() {
            self.broadcast_heartbeat(ctx);
        }
    }

    pub(crate) fn reply_read(&self, request: &Request, ctx: &mut Context<'_, Self>) {
        if let Some(reply) = local_read(&self.kv, request) {
            ctx.reply(reply);
        }
    }

    pub(crate) fn answer_ready_reads(&mut self, ctx: &mut Context<'_, Self>) {
        let commit = self.commit_index();
        let Some(reads) = self.reads.as_mut() else { return };
        if reads.waiting() == 0 {
            return;
        }
        for request in reads.take_ready(commit, self.last_applied) {
            self.reply_read(&request, ctx);
        }
    }
}
