//! What a restart keeps of a node's log: the one rule the simulator's disk model and
//! real mode's write-ahead log both follow.
//!
//! A driver makes a step's records durable together, as one *batch* (one `fsync`),
//! before any of the step's messages leave the node; only then does the next batch
//! begin. So a crash can leave unfinished only the *last* batch, whose write never
//! returned and which nobody was told about. Everything follows from that:
//!
//! - **A torn tail is cut.** Reading the log from the start, the first record that does
//!   not read back intact (short, failing its checksum) ends what the restart keeps,
//!   and so does a record of a batch not every record of which was read: batches are
//!   kept whole or not at all, because a step's records together are the state it
//!   acted on. Nothing cut this way was ever acknowledged.
//! - **Damage with a later batch behind it is corruption.** If any record of a *later*
//!   batch than the damaged record's is found intact after it, that later batch was
//!   written only after the damaged one was durable and acknowledged: no crash
//!   explains the damage, and the node refuses to start rather than run from a state
//!   it does not have. Records of the damaged record's *own* batch behind it change
//!   nothing (a torn write may leave later sectors of one write and not earlier ones).
//! - **Only what the log vouches for counts as "found after".** Real mode's WAL marks
//!   every record's header with a key of the log's own (never shown to a client), so a
//!   record-like run of bytes inside a payload cannot pose as a later batch. A damaged
//!   *last* batch still cannot be told from a torn one: without another copy no disk
//!   can tell bit rot of an acknowledged write from a write that never finished
//!   (Alagappan et al., FAST 2018). That case is "fsync lies", which no honest
//!   protocol survives, and the simulator injects it as such.

/// What a record says of itself (real mode writes it in the record's header; the
/// simulator keeps it beside the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMark {
    /// The record's number in its log (0, 1, ...).
    pub number: u64,
    /// The number of the first record of the record's batch.
    pub batch_first: u64,
    /// How many records the batch holds.
    pub batch_len: u32,
}

/// One record as a restart reads it back, in log order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBack {
    Intact(RecordMark),
    /// Short or failing a checksum; `number` is the record's number in the log.
    Damaged {
        number: u64,
    },
}

/// What a restart makes of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Every record intact and every batch whole: start from all of them.
    Intact,
    /// Start from the first `kept` records; the rest is a torn tail, cut.
    TornTail { kept: usize },
    /// The record at position `index` is damaged and a record of a later batch reads
    /// back intact after it: refuse to start.
    Corrupt { index: usize },
}

/// The rule above over a log as read back. For real mode's WAL the entries after the
/// first damaged one are only the records whose headers the log vouches for.
pub fn recover(log: &[ReadBack]) -> Recovery {
    let first_damaged = log.iter().position(|r| matches!(r, ReadBack::Damaged { .. }));
    let prefix_len = match first_damaged {
        Some(index) => {
            let ReadBack::Damaged { number } = log[index] else { unreachable!("found as damaged") };
            let later_batch_behind =
                log[index + 1..].iter().any(|r| matches!(r, ReadBack::Intact(mark) if mark.batch_first > number));
            if later_batch_behind {
                return Recovery::Corrupt { index };
            }
            index
        }
        None => log.len(),
    };
    // Keep whole batches only: the last one read may be unfinished.
    let mut kept = prefix_len;
    if let Some(ReadBack::Intact(last)) = log[..prefix_len].last() {
        let batch_end = last.batch_first + u64::from(last.batch_len);
        if last.number + 1 < batch_end {
            let of_batch_read = (last.number + 1).saturating_sub(last.batch_first) as usize;
            kept = prefix_len.saturating_sub(of_batch_read);
        }
    }
    if kept == log.len() { Recovery::Intact } else { Recovery::TornTail { kept } }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of batches of the given sizes, every record intact.
    fn log(batches: &[u32]) -> Vec<ReadBack> {
        let mut records = Vec::new();
        let mut number = 0;
        for &len in batches {
            let first = number;
            for _ in 0..len {
                records.push(ReadBack::Intact(RecordMark { number, batch_first: first, batch_len: len }));
                number += 1;
            }
        }
        records
    }

    fn damage(mut log: Vec<ReadBack>, index: usize) -> Vec<ReadBack> {
        log[index] = ReadBack::Damaged { number: index as u64 };
        log
    }

    #[test]
    fn damage_is_a_torn_tail_unless_a_later_batch_follows_it() {
        assert_eq!(recover(&[]), Recovery::Intact);
        assert_eq!(recover(&log(&[1, 2])), Recovery::Intact);
        assert_eq!(recover(&damage(log(&[1, 1]), 1)), Recovery::TornTail { kept: 1 });
        assert_eq!(recover(&damage(log(&[1, 1]), 0)), Recovery::Corrupt { index: 0 });
        assert_eq!(recover(&damage(log(&[1, 1, 1]), 1)), Recovery::Corrupt { index: 1 });
    }

    #[test]
    fn damage_inside_the_last_batch_cuts_the_whole_batch_even_with_its_own_records_behind() {
        // Batch [1, 2, 3]: record 2 damaged, record 3 (same batch) intact behind it.
        assert_eq!(recover(&damage(log(&[1, 3]), 2)), Recovery::TornTail { kept: 1 });
        assert_eq!(recover(&damage(log(&[2, 3]), 2)), Recovery::TornTail { kept: 2 });
    }

    #[test]
    fn a_batch_not_read_whole_is_cut() {
        let mut truncated = log(&[2, 3]);
        truncated.truncate(4); // the last batch's third record never reached the disk
        assert_eq!(recover(&truncated), Recovery::TornTail { kept: 2 });
    }
}
