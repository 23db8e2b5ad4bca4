//! Recovery of the write-ahead log: what a crash can leave is cut, what it cannot is
//! refused, and neither depends on what bytes a client put in a value. The verdicts are
//! those of `qlab_core::durability::recover`, the rule the simulator's disk model calls
//! too: the property test below builds, for each damaged image, the list of records as
//! the simulator would read them back and demands the WAL's verdict equal that rule's.

use proptest::prelude::*;
use qlab_core::durability::{ReadBack, RecordMark, Recovery, recover};
use qlab_core::{ClientId, NodeId, Op, Protocol, Request};
use qlab_net::wal::{FILE_HEADER_BYTES, RECORD_HEADER_BYTES, Wal, WalError};
use qlab_raft::{Entry, Payload, Raft, RaftConfig, Record};
use std::path::Path;
use std::sync::Arc;

fn put(i: u64, value: Vec<u8>) -> Record {
    Record::Append {
        entries: vec![Entry {
            term: 1 + i / 10,
            index: i + 1,
            payload: Payload::Command(Arc::new(Request {
                client: ClientId(1),
                seq: i + 1,
                op: Op::Put { key: i, value },
                signature: Vec::new(),
            })),
        }],
    }
}

fn record(i: u64) -> Record {
    put(i, vec![i as u8; 100])
}

/// A log written as `batches`; returns its records and, per record, where it starts and
/// ends in the file and what its header says.
struct Written {
    records: Vec<Record>,
    spans: Vec<(usize, usize)>,
    marks: Vec<RecordMark>,
}

fn write_batches(path: &Path, batches: &[Vec<Record>]) -> Written {
    let (mut wal, recovered) = Wal::open::<Record>(path).unwrap();
    assert!(recovered.records.is_empty());
    let mut written = Written { records: Vec::new(), spans: Vec::new(), marks: Vec::new() };
    for batch in batches {
        let batch_first = written.records.len() as u64;
        let mut start = wal.len_bytes() as usize;
        for (i, r) in batch.iter().enumerate() {
            let len = RECORD_HEADER_BYTES + postcard::to_stdvec(r).unwrap().len();
            written.spans.push((start, start + len));
            written.marks.push(RecordMark {
                number: batch_first + i as u64,
                batch_first,
                batch_len: batch.len() as u32,
            });
            start += len;
        }
        wal.append_batch(batch).unwrap();
        assert_eq!(wal.len_bytes() as usize, start);
        written.records.extend(batch.iter().cloned());
    }
    written
}

fn write_log(path: &Path, batches: u64) -> Written {
    let batches: Vec<Vec<Record>> =
        (0..batches).map(|b| vec![Record::HardState { term: 1 + b, voted_for: Some(NodeId(0)) }, record(b)]).collect();
    write_batches(path, &batches)
}

#[test]
fn records_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 20);
    let (mut wal, recovered) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(recovered.records, written.records);
    assert_eq!(recovered.torn_tail_bytes, 0);
    // Appending after recovery continues the same log.
    wal.append_batch(&[record(99)]).unwrap();
    let (_, again) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(again.records.len(), written.records.len() + 1);
}

#[test]
fn a_raft_node_restored_from_the_wal_equals_the_one_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.wal");
    let written = write_log(&path, 30);
    let (_, recovered) = Wal::open::<Record>(&path).unwrap();
    let config = RaftConfig::default();
    let a = Raft::restore(&config, NodeId(0), 3, &written.records);
    let b = Raft::restore(&config, NodeId(0), 3, &recovered.records);
    assert_eq!(a.log(), b.log());
    assert_eq!(a.current_term(), b.current_term());
    assert_eq!(<Raft as Protocol>::epoch(&b), 30);
}

/// Cut anywhere: what is kept is every batch that ends at or before the cut, and the
/// file is cut to there, so the next append starts at a batch boundary.
#[test]
fn torn_tail_is_cut_to_whole_batches_at_every_possible_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 5);
    let full = std::fs::read(&path).unwrap();
    let batch_ends: Vec<usize> = written.spans.chunks(2).map(|pair| pair[1].1).collect();
    for cut in FILE_HEADER_BYTES..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (wal, recovered) = Wal::open::<Record>(&path).unwrap();
        let whole = batch_ends.iter().filter(|end| **end <= cut).count();
        let kept_len = if whole == 0 { FILE_HEADER_BYTES } else { batch_ends[whole - 1] };
        assert_eq!(recovered.records, written.records[..2 * whole], "cut at {cut}");
        assert_eq!(wal.len_bytes() as usize, kept_len);
        assert_eq!(recovered.torn_tail_bytes as usize, cut - kept_len);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, kept_len);
    }
}

/// A file cut inside its own header was never used: it starts afresh.
#[test]
fn a_header_cut_short_is_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    write_log(&path, 1);
    let full = std::fs::read(&path).unwrap();
    for cut in [0, 1, 8, FILE_HEADER_BYTES - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (mut wal, recovered) = Wal::open::<Record>(&path).unwrap();
        assert!(recovered.records.is_empty(), "cut at {cut}");
        wal.append_batch(&[record(1)]).unwrap();
        drop(wal);
        assert_eq!(Wal::open::<Record>(&path).unwrap().1.records, vec![record(1)]);
    }
}

#[test]
fn a_damaged_header_with_records_behind_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    write_log(&path, 2);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x01; // inside the key
    std::fs::write(&path, &bytes).unwrap();
    let error = Wal::open::<Record>(&path).err().expect("refused");
    assert!(error.to_string().contains("header is damaged"), "{error}");
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let error = Wal::open::<Record>(&path).err().expect("refused");
    assert!(error.to_string().contains("no QLABWAL2 header"), "{error}");
}

#[test]
fn garbage_in_the_last_record_cuts_its_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 4);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (_, recovered) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(recovered.records, written.records[..written.records.len() - 2]);
    assert!(recovered.torn_tail_damaged);
    assert_eq!(recovered.torn_tail_intact_records, 1, "the batch's first record, intact, goes with it");
}

#[test]
fn zeros_after_the_last_record_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    let valid = bytes.len();
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(&path, &bytes).unwrap();
    let (wal, recovered) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(recovered.records, written.records);
    assert_eq!(wal.len_bytes(), valid as u64);
}

#[test]
fn corruption_in_the_middle_names_file_offset_and_record_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 6);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a payload byte of record 2 (the first of the second batch).
    let (start, _) = written.spans[2];
    bytes[start + RECORD_HEADER_BYTES + 3] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let error = match Wal::open::<Record>(&path) {
        Err(e) => e,
        Ok(_) => panic!("corruption must be refused"),
    };
    assert!(matches!(&error, WalError::Corrupt { offset, .. } if *offset == start as u64), "{error}");
    let message = error.to_string();
    assert!(message.contains("node.wal") && message.contains(&format!("offset {start}")), "{message}");
    assert!(message.contains("record 2: payload checksum mismatch") && message.contains("record 4"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing may be cut after corruption");
}

#[test]
fn a_damaged_length_in_the_middle_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    write_log(&path, 3);
    let mut bytes = std::fs::read(&path).unwrap();
    // A bit flip makes the first length point past the end of the file. Followed
    // blindly it would look like a torn write and silently drop every record.
    bytes[FILE_HEADER_BYTES + 3] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let error = Wal::open::<Record>(&path).err().expect("refused");
    assert!(matches!(error, WalError::Corrupt { offset, .. } if offset == FILE_HEADER_BYTES as u64), "{error}");
    assert!(error.to_string().contains("header tag mismatch"), "{error}");
}

#[test]
fn an_impossible_length_inside_the_file_is_corruption_when_a_later_batch_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_batches(&path, &[vec![record(0)], vec![Record::HardState { term: 1, voted_for: None }]]);
    let first_len = (written.spans[0].1 - written.spans[0].0 - RECORD_HEADER_BYTES) as u32;
    // Under a limit below the first record's length, that record is impossible; the
    // small record after it is intact and of a later batch: corruption.
    let error = Wal::open_with_limit::<Record>(&path, first_len - 1).err().expect("refused");
    assert!(matches!(error, WalError::Corrupt { offset, .. } if offset == FILE_HEADER_BYTES as u64), "{error}");
    assert!(error.to_string().contains("exceeds the limit"), "{error}");
}

/// Bytes a client might put in a value that look like records to a reader that trusts
/// payload bytes: the previous format's 12-byte empty record, and headers of this format
/// with every field plausible but a tag made without the log's key.
fn record_like_bytes(next_number: u64) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0, 0x1c, 0xdf, 0x44, 0x21, 0, 0, 0, 0];
    for number in next_number..next_number + 4 {
        let mut header = Vec::new();
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&number.to_le_bytes());
        header.extend_from_slice(&number.to_le_bytes());
        header.extend_from_slice(&1u32.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&[]).to_le_bytes());
        let guessed_key = [0u8; 32];
        header.extend_from_slice(&blake3::keyed_hash(&guessed_key, &header).as_bytes()[..8]);
        bytes.extend(header);
    }
    bytes
}

/// Issue 39, item 3: a Put whose value holds record-like bytes, then a crash that tears
/// the last write anywhere: always a torn tail, never a node that refuses to start.
#[test]
fn record_like_bytes_in_a_value_never_turn_a_torn_tail_into_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let mut batches: Vec<Vec<Record>> = (0..3).map(|b| vec![record(b)]).collect();
    batches.push(vec![put(3, record_like_bytes(4)), Record::HardState { term: 9, voted_for: None }]);
    let written = write_batches(&path, &batches);
    let full = std::fs::read(&path).unwrap();
    let last_batch_start = written.spans[3].0;
    for cut in last_batch_start..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (_, recovered) =
            Wal::open::<Record>(&path).unwrap_or_else(|e| panic!("a torn tail at {cut} was refused: {e}"));
        assert_eq!(recovered.records, written.records[..3], "cut at {cut}");
    }
    // And damaged rather than cut short: the same.
    for at in last_batch_start..full.len() {
        let mut bytes = full.clone();
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (_, recovered) = Wal::open::<Record>(&path).unwrap_or_else(|e| panic!("damage at {at} was refused: {e}"));
        assert_eq!(recovered.records, written.records[..3], "damage at {at}");
    }
}

/// A snapshot record rewrites the log to start at it: the file shrinks to what a
/// restart needs, appends continue after it, and a reopen recovers exactly that.
/// No stray file is left from the rewrite.
#[test]
fn a_rewrite_replaces_the_log_with_the_snapshot_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    write_log(&path, 200);
    let (mut wal, _) = Wal::open::<Record>(&path).unwrap();
    let before = wal.len_bytes();
    let snapshot = qlab_raft::Record::Snapshot {
        term: 200,
        voted_for: Some(NodeId(0)),
        meta: *Raft::new(&RaftConfig::default(), NodeId(0), 3).snapshot(),
        state: vec![7; 64],
        entries: Vec::new(),
    };
    assert!(<Raft as Protocol>::supersedes_earlier_records(&snapshot));
    wal.rewrite(std::slice::from_ref(&snapshot)).unwrap();
    assert!(wal.len_bytes() < before / 50, "{} bytes left of {before}", wal.len_bytes());
    wal.append_batch(&[record(300)]).unwrap();
    drop(wal);
    let (_, recovered) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(recovered.records, vec![snapshot, record(300)]);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, vec![std::ffi::OsString::from("node.wal")]);
}

/// How a random image is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// Keep this fraction of the records' bytes (a crash mid-write).
    Truncate(f64),
    /// Flip bits of the byte at this fraction of the records' bytes.
    Flip(f64, u8),
    /// Flip a byte within the last `n` bytes (damage at the tail).
    FlipTail(usize, u8),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Damage::Truncate),
        (0.0..1.0f64, 1..=255u8).prop_map(|(at, bits)| Damage::Flip(at, bits)),
        (1..200usize, 1..=255u8).prop_map(|(n, bits)| Damage::FlipTail(n, bits)),
    ]
}

/// A value: random bytes, sometimes with record-like bytes inside.
fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    (proptest::collection::vec(any::<u8>(), 0..120), any::<bool>(), 0..8u64).prop_map(|(mut bytes, lure, number)| {
        if lure {
            let at = bytes.len() / 2;
            bytes.splice(at..at, record_like_bytes(number));
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random logs (random batches of records with random values, record-like ones
    /// among them), then one random truncation or flipped byte: the WAL's verdict is
    /// the shared rule's on the records as the simulator would read them back. So it
    /// never refuses a log whose only damage is a torn tail, and never applies a
    /// damaged record (what it keeps is a prefix of what was written).
    #[test]
    fn recovery_of_a_damaged_image_is_the_shared_rule(
        batch_sizes in proptest::collection::vec(1..4usize, 1..8),
        values in proptest::collection::vec(value_strategy(), 32),
        damage in damage_strategy(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.wal");
        let mut next = 0usize;
        let batches: Vec<Vec<Record>> = batch_sizes
            .iter()
            .map(|size| {
                (0..*size)
                    .map(|_| {
                        next += 1;
                        put(next as u64, values[next % values.len()].clone())
                    })
                    .collect()
            })
            .collect();
        let written = write_batches(&path, &batches);
        let mut bytes = std::fs::read(&path).unwrap();
        let records_len = bytes.len() - FILE_HEADER_BYTES;
        // Ground truth: which records' bytes survive untouched.
        let (end, flipped) = match damage {
            Damage::Truncate(keep) => (FILE_HEADER_BYTES + (records_len as f64 * keep) as usize, None),
            Damage::Flip(at, bits) => (bytes.len(), Some((FILE_HEADER_BYTES + (records_len as f64 * at) as usize, bits))),
            Damage::FlipTail(n, bits) => (bytes.len(), Some((bytes.len() - n.min(records_len), bits))),
        };
        bytes.truncate(end);
        if let Some((at, bits)) = flipped {
            bytes[at] ^= bits;
        }
        std::fs::write(&path, &bytes).unwrap();
        let read_back: Vec<ReadBack> = written
            .spans
            .iter()
            .zip(&written.marks)
            .take_while(|((start, _), _)| *start < end)
            .map(|((start, stop), mark)| {
                let hit = flipped.is_some_and(|(at, _)| (*start..*stop).contains(&at));
                if *stop <= end && !hit { ReadBack::Intact(*mark) } else { ReadBack::Damaged { number: mark.number } }
            })
            .collect();
        let expected = recover(&read_back);
        match (Wal::open::<Record>(&path), expected) {
            (Err(WalError::Corrupt { .. }), Recovery::Corrupt { .. }) => {
                prop_assert!(flipped.is_some(), "only damage inside the log can be corruption");
            }
            // Records wholly beyond the cut were never read: a log cut at a batch
            // boundary is a shorter log, intact.
            (Ok((_, recovered)), Recovery::Intact) => {
                prop_assert_eq!(&recovered.records[..], &written.records[..read_back.len()]);
            }
            (Ok((_, recovered)), Recovery::TornTail { kept }) => {
                prop_assert_eq!(&recovered.records[..], &written.records[..kept]);
            }
            (got, expected) => {
                let got = got.map(|(_, r)| r.records.len()).map_err(|e| e.to_string());
                prop_assert!(false, "the WAL said {:?} where the rule says {:?}", got, expected);
            }
        }
    }
}
