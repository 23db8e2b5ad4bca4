//! Recovery of the write-ahead log: what a crash can leave is cut, what it cannot is refused.

use qlab_core::{ClientId, NodeId, Op, Protocol, Request};
use qlab_net::wal::{Wal, WalError};
use qlab_raft::{Entry, Payload, Raft, RaftConfig, Record};
use std::sync::Arc;

fn record(i: u64) -> Record {
    Record::Append {
        entries: vec![Entry {
            term: 1 + i / 10,
            index: i + 1,
            payload: Payload::Command(Arc::new(Request {
                client: ClientId(1),
                seq: i + 1,
                op: Op::Put { key: i, value: vec![i as u8; 100] },
                signature: Vec::new(),
            })),
        }],
    }
}

fn write_log(path: &std::path::Path, batches: u64) -> Vec<Record> {
    let (mut wal, recovered) = Wal::open::<Record>(path).unwrap();
    assert!(recovered.records.is_empty());
    let mut all = Vec::new();
    for b in 0..batches {
        let batch = vec![Record::HardState { term: 1 + b, voted_for: Some(NodeId(0)) }, record(b)];
        wal.append_batch(&batch).unwrap();
        all.extend(batch);
    }
    all
}

#[test]
fn records_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 20);
    let (mut wal, recovered) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(recovered.records, written);
    assert_eq!(recovered.torn_tail_bytes, 0);
    // Appending after recovery continues the same log.
    wal.append_batch(&[record(99)]).unwrap();
    let (_, again) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(again.records.len(), written.len() + 1);
}

#[test]
fn a_raft_node_restored_from_the_wal_equals_the_one_that_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.wal");
    let written = write_log(&path, 30);
    let (_, recovered) = Wal::open::<Record>(&path).unwrap();
    let config = RaftConfig::default();
    let a = Raft::restore(&config, NodeId(0), 3, &written);
    let b = Raft::restore(&config, NodeId(0), 3, &recovered.records);
    assert_eq!(a.log(), b.log());
    assert_eq!(a.current_term(), b.current_term());
    assert_eq!(<Raft as Protocol>::epoch(&b), 30);
}

#[test]
fn torn_tail_is_cut_at_every_possible_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 5);
    let full = std::fs::read(&path).unwrap();
    // Record boundaries, from a clean log of each prefix.
    let mut boundaries = vec![0u64];
    {
        let tmp = dir.path().join("prefix.wal");
        let (mut wal, _) = Wal::open::<Record>(&tmp).unwrap();
        for r in &written {
            wal.append_batch(std::slice::from_ref(r)).unwrap();
            boundaries.push(wal.len_bytes());
        }
    }
    for cut in 0..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (wal, recovered) = Wal::open::<Record>(&path).unwrap();
        let whole = boundaries.iter().filter(|b| **b as usize <= cut).count() - 1;
        assert_eq!(recovered.records, written[..whole], "cut at {cut}");
        assert_eq!(wal.len_bytes(), boundaries[whole]);
        assert_eq!(recovered.torn_tail_bytes, cut as u64 - boundaries[whole]);
        // The file itself was cut, so the next append starts at a boundary.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), boundaries[whole]);
    }
}

#[test]
fn garbage_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    let written = write_log(&path, 4);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (_, recovered) = Wal::open::<Record>(&path).unwrap();
    assert_eq!(recovered.records, written[..written.len() - 1]);
    assert!(recovered.torn_tail_bytes > 0);
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
    assert_eq!(recovered.records, written);
    assert_eq!(wal.len_bytes(), valid as u64);
}

#[test]
fn corruption_in_the_middle_names_file_and_offset_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    write_log(&path, 6);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a payload byte of the second record (offset = first record's length).
    let first_len = 12 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[first_len + 20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let error = match Wal::open::<Record>(&path) {
        Err(e) => e,
        Ok(_) => panic!("corruption must be refused"),
    };
    assert!(matches!(&error, WalError::Corrupt { offset, .. } if *offset == first_len as u64), "{error}");
    let message = error.to_string();
    assert!(message.contains("node.wal") && message.contains(&format!("offset {first_len}")), "{message}");
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
    bytes[3] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    let error = Wal::open::<Record>(&path).err().expect("refused");
    assert!(matches!(error, WalError::Corrupt { offset: 0, .. }), "{error}");
    assert!(error.to_string().contains("length checksum mismatch"), "{error}");
}

#[test]
fn an_impossible_length_inside_the_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.wal");
    {
        let (mut wal, _) = Wal::open::<Record>(&path).unwrap();
        wal.append_batch(&[record(0), Record::HardState { term: 1, voted_for: None }]).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let first_len = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    // Under a limit below the first record's length, that record is impossible; the
    // small record after it is intact, so this is corruption, not a torn tail.
    let error = Wal::open_with_limit::<Record>(&path, first_len - 1).err().expect("refused");
    assert!(matches!(error, WalError::Corrupt { offset: 0, .. }), "{error}");
    assert!(error.to_string().contains("exceeds the limit"), "{error}");
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
