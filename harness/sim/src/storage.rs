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
//!
//! Beyond the lost write in progress, a crash can leave the disk worse ([`DiskFault`]):
//! records it had acknowledged gone ("fsync lies"), or a durable record that reads back
//! damaged. A restart then recovers by the rule real mode's WAL keeps too
//! ([`qlab_core::durability::recover`]): the records one step persisted are one batch;
//! damage with no later batch intact after it is a torn tail, which no one was told was
//! durable, and is cut together with the rest of its batch; damage with a later batch
//! intact after it is corruption no crash explains, and the node refuses to start
//! rather than run from a state it does not have. A damaged *last* batch is therefore
//! cut like a torn one: without another copy, a disk cannot tell bit rot of an
//! acknowledged record from a write that never finished (Alagappan et al., FAST 2018),
//! which is why it is an "fsync lies" fault and not one an honest protocol survives.

use crate::Latency;
use qlab_core::Nanos;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub(crate) struct DiskModel {
    /// `None`: records are durable within the step (the default).
    fsync: Option<Latency>,
    /// A slow disk: with this probability a write takes the spike's time instead.
    spike: Option<(f64, Latency)>,
    rng: ChaCha8Rng,
}

impl DiskModel {
    pub fn instant(seed: u64) -> DiskModel {
        DiskModel { fsync: None, spike: None, rng: ChaCha8Rng::seed_from_u64(seed ^ 0xd15c_f5ac_0000_0001) }
    }

    /// A constant zero latency is the instant disk, so a file that spells out
    /// `fsync_ms = 0` runs exactly as one that leaves it out.
    pub fn set_fsync(&mut self, fsync: Option<Latency>) {
        self.fsync = fsync.filter(|latency| *latency != Latency::Constant { ns: 0 });
    }

    /// Latency spikes (a slow disk's stalls); draws nothing while unset.
    pub fn set_spikes(&mut self, spike: Option<(f64, Latency)>) {
        self.spike = spike.filter(|(probability, _)| *probability > 0.0);
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
            let write_ns = match &self.spike {
                Some((probability, spike)) if self.rng.random_bool(*probability) => spike.sample(&mut self.rng),
                _ => fsync.sample(&mut self.rng),
            };
            *disk_busy_until = (*disk_busy_until).max(now) + write_ns;
        }
        (*disk_busy_until > now || wrote_records).then_some(*disk_busy_until)
    }
}

/// What a crash does to a node's disk besides losing the writes in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFault {
    /// The disk acknowledged the node's last `records` writes and never made them
    /// durable: they are gone at the restart, though the node's messages had already
    /// told others about them.
    LoseAcknowledged { records: usize },
    /// The durable record at `index` (0 is the oldest kept) reads back damaged; the
    /// checksum catches it at the restart. An index past the end damages the last one.
    Corrupt { index: usize },
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
    fn a_spike_replaces_a_writes_time_with_its_own() {
        let mut disk = DiskModel::instant(1);
        disk.set_fsync(Some(Latency::Constant { ns: 10 }));
        disk.set_spikes(Some((1.0, Latency::Constant { ns: 500 })));
        let mut busy = 0;
        assert_eq!(disk.release_at(&mut busy, 0, true), Some(500));
        disk.set_spikes(Some((0.0, Latency::Constant { ns: 500 })));
        assert_eq!(disk.release_at(&mut busy, 1000, true), Some(1010), "a zero probability is no spike");
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
