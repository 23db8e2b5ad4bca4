//! The disk model: how long a step's records take to become durable.
//!
//! The sans-IO contract says a step's records are durable before its messages leave
//! the node. With the default (instant) disk the simulator makes them durable inside
//! the step, so nothing waits. With an fsync latency, each node has one disk that
//! writes in order: a step that persisted records is durable `fsync` after the later
//! of now and the end of the write before it, and everything the step shows the world
//! (its messages, client replies and observations) is held until then. A step that
//! persisted nothing while an earlier write is still in progress is held until that
//! write ends as well, so a node's outputs leave in the order its steps made them
//! (etcd's `Ready` loop gives the same order) and no message can reveal state that a
//! crash could still take back. Timers are the process's own and start at once.
//!
//! A crash loses the writes still in progress and the outputs held behind them: the
//! node restarts from the records that were durable. That is a real disk's "lost
//! unsynced write", and a correct protocol is safe under it because nothing that
//! depended on those records left the node.
//!
//! The fsync latencies are drawn from a stream of their own, so turning the disk model
//! on does not shift the network's draws, and leaving it off draws nothing.

use crate::Latency;
use qlab_core::Nanos;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(crate) struct DiskModel {
    /// `None`: records are durable within the step (the default).
    fsync: Option<Latency>,
    rng: ChaCha8Rng,
}

impl DiskModel {
    pub fn instant(seed: u64) -> DiskModel {
        DiskModel { fsync: None, rng: ChaCha8Rng::seed_from_u64(seed ^ 0xd15c_f5ac_0000_0001) }
    }

    /// A constant zero latency is the instant disk, so a file that spells out
    /// `fsync_ms = 0` runs exactly as one that leaves it out.
    pub fn set_fsync(&mut self, fsync: Option<Latency>) {
        self.fsync = fsync.filter(|latency| *latency != Latency::Constant { ns: 0 });
    }

    pub fn fsync(&self) -> Option<&Latency> {
        self.fsync.as_ref()
    }

    /// When a step that ran at `now` may show the world its outputs: `None` when at
    /// once. `disk_busy_until` is the node's disk queue (the end of its last write),
    /// advanced when the step wrote records.
    pub fn release_at(&mut self, disk_busy_until: &mut Nanos, now: Nanos, wrote_records: bool) -> Option<Nanos> {
        let fsync = self.fsync.as_ref()?;
        if wrote_records {
            *disk_busy_until = (*disk_busy_until).max(now) + fsync.sample(&mut self.rng);
        }
        (*disk_busy_until > now || wrote_records).then_some(*disk_busy_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_queue_behind_each_other_and_later_steps_wait_for_them() {
        let mut disk = DiskModel::instant(1);
        disk.set_fsync(Some(Latency::Constant { ns: 10 }));
        let mut busy = 0;
        assert_eq!(disk.release_at(&mut busy, 100, true), Some(110));
        assert_eq!(disk.release_at(&mut busy, 105, true), Some(120), "the second write starts when the first ends");
        assert_eq!(disk.release_at(&mut busy, 107, false), Some(120), "a step without records waits its turn");
        assert_eq!(disk.release_at(&mut busy, 130, false), None, "an idle disk holds nothing back");
    }

    #[test]
    fn the_instant_disk_holds_nothing_and_a_zero_latency_is_the_instant_disk() {
        let mut disk = DiskModel::instant(1);
        let mut busy = 0;
        assert_eq!(disk.release_at(&mut busy, 5, true), None);
        disk.set_fsync(Some(Latency::Constant { ns: 0 }));
        assert!(disk.fsync().is_none());
        assert_eq!(disk.release_at(&mut busy, 5, true), None);
    }
}
