//! Reads (§6.4) other than through the log: read-index (a heartbeat round confirms
//! leadership after the read arrives), lease (no round while a majority acknowledged a
//! recent heartbeat) and follower-stale (any replica, not linearizable).

use super::*;

impl Raft {
    /// A `get` under a read mode that skips the log.
    pub(crate) fn serve_read(&mut self, request: Request, ctx: &mut Context<'_, Self>) {
        debug_assert!(matches!(request.op, Op::Get { .. }), "only gets skip the log");
        if self.config.read_mode == ReadMode::FollowerStale {
            self.reply_read(&request, ctx);
            return;
        }
        if self.role != Role::Leader {
            let leader = self.leader;
            ctx.reply(Reply { client: request.client, seq: request.seq, body: ReplyBody::NotLeader { leader } });
            return;
        }
        let reads = self.reads.as_mut().expect("a leader with leader reads keeps their state");
        if self.config.read_mode == ReadMode::Lease && reads.lease_holds(ctx.now(), self.commit_index) {
            // The leader applies everything it commits at once, so its state is at
            // the commit index.
            self.reply_read(&request, ctx);
            return;
        }
        reads.enqueue(request, self.commit_index);
        if reads.round_wanted() {
            self.broadcast_heartbeats(ctx);
        }
    }

    pub(crate) fn reply_read(&self, request: &Request, ctx: &mut Context<'_, Self>) {
        if let Some(reply) = local_read(&self.kv, request) {
            ctx.reply(reply);
        }
    }

    pub(crate) fn answer_ready_reads(&mut self, ctx: &mut Context<'_, Self>) {
        let Some(reads) = self.reads.as_mut() else { return };
        if reads.waiting() == 0 {
            return;
        }
        for request in reads.take_ready(self.commit_index, self.last_applied) {
            self.reply_read(&request, ctx);
        }
    }
}
