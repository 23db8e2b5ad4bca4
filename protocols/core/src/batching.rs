//! Adaptive batching: how a leader (Raft's, Multi-Paxos's proposer, PBFT's primary)
//! groups client commands, shared so the three protocols follow one policy.
//!
//! A leader sends a command at once while fewer than `max_batches_in_flight` of its
//! batches await commitment; otherwise the command waits, and when a batch commits
//! everything waiting goes out together (bounded by entries and bytes, split into
//! several batches when there is more). At one client nothing ever waits, so latency is
//! that of sending each command alone; under load the batches grow with the load,
//! without a timer capping each closed-loop client at one command per delay. This is
//! how etcd's raft batches in effect (proposals queue while a round is in flight) and
//! what Castro and Liskov's PBFT does (§5.1: the primary batches while a bounded number
//! of requests is in progress).
//!
//! A fixed `batch_delay` stays available in every protocol as an extra knob; with it the
//! leader waits for the delay (or a full batch) and the in-flight bound does not apply.

use crate::Request;
use std::sync::Arc;

/// 4 batches in flight: at one client no command waits; at hundreds each batch carries
/// a quarter of the outstanding commands, and four rounds overlap on the links.
pub const DEFAULT_MAX_BATCHES_IN_FLIGHT: usize = 4;

/// 1 MiB of commands per batch: far above the 64-entry bound at the sizes we measure,
/// so it binds only for large values (a batch is one record, one fsync and one message
/// per follower, and a frame must stay well below the transport's frame limit).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;

/// Whether an adaptive leader leaves its waiting commands for
/// [`crate::Protocol::on_input_drained`]: more input is queued behind this step (real
/// mode's runtime says so, [`crate::Context::input_waiting`]) and batching is bounded
/// (`max_batches_in_flight` > 0; 0 is the unbatched policy, every command at once). A
/// step of one request at a time otherwise finds the pipeline free on a fast network and
/// sends every command as its own batch, paying a round per command under load.
pub fn defer_to_drained_input(max_batches_in_flight: usize, input_waiting: bool) -> bool {
    max_batches_in_flight > 0 && input_waiting
}

/// Whether a leader with `in_flight` uncommitted batches sends another now, under a
/// bound of `max_batches_in_flight` (0: no bound, every command goes at once in its own
/// batch, so each command is one round).
pub fn pipeline_has_room(max_batches_in_flight: usize, in_flight: usize) -> bool {
    max_batches_in_flight == 0 || in_flight < max_batches_in_flight
}

/// Take the next batch off the front of `waiting`: at least one command (so a command
/// larger than the byte bound still goes, alone), then as many more as fit within
/// `max_commands` and `max_bytes` of encoded operations.
pub fn take_batch(waiting: &mut Vec<Arc<Request>>, max_commands: usize, max_bytes: usize) -> Vec<Arc<Request>> {
    let mut count = 0;
    let mut bytes = 0;
    for request in waiting.iter() {
        let size = request.op.encoded_bytes();
        if count > 0 && (count >= max_commands.max(1) || bytes + size > max_bytes) {
            break;
        }
        count += 1;
        bytes += size;
    }
    waiting.drain(..count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientId, Op};

    fn put(client: u64, value_bytes: usize) -> Arc<Request> {
        Arc::new(Request {
            client: ClientId(client),
            seq: 1,
            op: Op::Put { key: client, value: vec![7; value_bytes] },
            signature: Vec::new(),
        })
    }

    #[test]
    fn a_batch_is_bounded_by_commands_and_bytes_and_never_empty() {
        let mut waiting: Vec<_> = (0..10).map(|c| put(c, 100)).collect();
        assert_eq!(take_batch(&mut waiting, 4, usize::MAX).len(), 4, "the command bound");
        // 109 encoded bytes each: three fit in 330.
        assert_eq!(take_batch(&mut waiting, 64, 330).len(), 3, "the byte bound");
        assert_eq!(waiting.len(), 3);
        let mut huge = vec![put(1, 10_000), put(2, 1)];
        assert_eq!(take_batch(&mut huge, 64, 100).len(), 1, "one command over the byte bound goes alone");
        assert_eq!(take_batch(&mut huge, 64, 100).len(), 1);
        assert!(huge.is_empty());
        let mut order: Vec<_> = (0..5).map(|c| put(c, 1)).collect();
        let batch = take_batch(&mut order, 3, usize::MAX);
        assert_eq!(batch.iter().map(|r| r.client.0).collect::<Vec<_>>(), vec![0, 1, 2], "first come, first batched");
    }

    #[test]
    fn zero_batches_in_flight_means_no_bound() {
        assert!(pipeline_has_room(0, 1_000_000));
        assert!(pipeline_has_room(2, 1));
        assert!(!pipeline_has_room(2, 2));
    }
}
