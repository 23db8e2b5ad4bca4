//! The durable write-ahead log behind `storage = "disk"`.
//!
//! A protocol's persisted records are appended to one file, a *batch* per protocol
//! step, with a single `fsync` (`sync_data`) per batch: that one call is what the
//! persist-before-send contract waits for. The file is
//!
//! ```text
//! [magic "QLABWAL2": 8][key: 32 random bytes][crc32 of the 40 bytes before: 4]
//! then records:
//! [length: u32][number: u64][batch_first: u64][batch_len: u32][crc32 of payload: u32]
//! [tag: 8 bytes, blake3 keyed with the log's key over the 28 bytes before][payload: postcard]
//! ```
//!
//! (integers little-endian). A record's `number` counts records from the start of the
//! file; `batch_first` and `batch_len` name the batch it was written in.
//!
//! **Recovery** follows the rule the simulator's disk model follows too
//! ([`qlab_core::durability`]). The file is read from the start while each record is
//! intact: its tag and payload checksum hold and its number is the next one. At the
//! first record that is not, the log asks whether a record of a *later batch* is intact
//! anywhere after it. If so, that batch was written after the damaged one had been
//! made durable and acknowledged, which no crash explains: the log is refused with an
//! error naming the file, the byte offset and the record, and nothing is cut. If not,
//! the damage is a torn tail: it is cut, together with the part of its batch before it
//! (a batch is kept whole or not at all), and the cut is reported in [`Recovered`].
//!
//! The question "is a later record intact" is asked of the log alone, never of bytes a
//! client chose. Every record header carries a tag keyed with the log's own random key,
//! written once in the file's header and never sent anywhere, so a value that happens
//! to contain (or was crafted to contain) something shaped like a record cannot pass
//! for one: a client cannot compute a tag without the key. (The previous format
//! resynchronised on any offset whose bytes parsed as a record, so a Put holding a
//! 12-byte empty "record" turned a torn tail into a refusal to start.)
//!
//! A protocol that compacts its log persists a record that supersedes all before it (a
//! snapshot); the log is then rewritten to start at that record ([`Wal::rewrite`]), as
//! a new file with a new key, renamed over the old one.

use qlab_core::durability::{ReadBack, RecordMark, Recovery, recover};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"QLABWAL2";
/// Magic, key and the header's checksum.
pub const FILE_HEADER_BYTES: usize = 8 + 32 + 4;
/// Length, number, batch first and length, payload checksum, tag.
pub const RECORD_HEADER_BYTES: usize = 4 + 8 + 8 + 4 + 4 + 8;
/// The header bytes the tag covers.
const TAGGED_BYTES: usize = RECORD_HEADER_BYTES - 8;

/// Bound on one record; a length above it inside the file is damage, not a record.
pub const MAX_RECORD_BYTES: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: corrupt record at byte offset {offset}: {reason}", path.display())]
    Corrupt { path: PathBuf, offset: u64, reason: String },
}

/// What opening a log found.
#[derive(Debug)]
pub struct Recovered<R> {
    pub records: Vec<R>,
    /// Bytes of torn tail cut off (0 after a clean shutdown).
    pub torn_tail_bytes: u64,
    /// Records cut with the tail that read back intact: the part of an unfinished
    /// batch before the damage (or before the end of the file).
    pub torn_tail_intact_records: u64,
    /// Whether the cut tail began with a damaged record (rather than with the file
    /// simply ending inside a record or a batch).
    pub torn_tail_damaged: bool,
}

pub struct Wal {
    path: PathBuf,
    file: File,
    key: [u8; 32],
    /// Bytes of valid records (and header); appends go here.
    len: u64,
    /// The next record's number.
    next_number: u64,
    scratch: Vec<u8>,
}

fn word32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn word64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn tag(key: &[u8; 32], tagged: &[u8]) -> [u8; 8] {
    blake3::keyed_hash(key, tagged).as_bytes()[..8].try_into().expect("8 bytes")
}

/// A record header the log vouches for: its tag holds under the log's key.
struct Header {
    len: u32,
    mark: RecordMark,
    payload_crc: u32,
}

fn vouched_header(key: &[u8; 32], bytes: &[u8]) -> Option<Header> {
    let header = bytes.get(..RECORD_HEADER_BYTES)?;
    if tag(key, &header[..TAGGED_BYTES]) != header[TAGGED_BYTES..] {
        return None;
    }
    let mark = RecordMark { number: word64(header, 4), batch_first: word64(header, 12), batch_len: word32(header, 20) };
    Some(Header { len: word32(header, 0), mark, payload_crc: word32(header, 24) })
}

impl Wal {
    /// Open (or create) the log at `path` and recover its records.
    pub fn open<R: DeserializeOwned>(path: &Path) -> Result<(Wal, Recovered<R>), WalError> {
        Self::open_with_limit(path, MAX_RECORD_BYTES)
    }

    /// [`Wal::open`] with a different bound on one record's length.
    pub fn open_with_limit<R: DeserializeOwned>(
        path: &Path,
        max_record_bytes: u32,
    ) -> Result<(Wal, Recovered<R>), WalError> {
        let io = |source| WalError::Io { path: path.to_path_buf(), source };
        let existed = path.exists();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let header_intact = bytes.len() >= FILE_HEADER_BYTES
            && &bytes[..8] == MAGIC
            && crc32fast::hash(&bytes[..40]) == word32(&bytes, 40);
        if !header_intact {
            if bytes.len() > FILE_HEADER_BYTES {
                let reason = if bytes.len() >= 8 && &bytes[..8] != MAGIC {
                    "not a qlab write-ahead log of this format (no QLABWAL2 header)"
                } else {
                    "the log's header is damaged and records follow it"
                };
                return Err(WalError::Corrupt { path: path.to_path_buf(), offset: 0, reason: reason.into() });
            }
            // No header, or one whose write never finished: no record can have been
            // acknowledged yet. Start the log afresh.
            let mut wal = Wal::create(path, file)?;
            if !existed {
                // Make the new file's directory entry durable too.
                sync_dir(path).map_err(io)?;
            }
            wal.file.seek(SeekFrom::End(0)).map_err(io)?;
            let torn_tail_bytes = bytes.len() as u64;
            return Ok((
                wal,
                Recovered {
                    records: Vec::new(),
                    torn_tail_bytes,
                    torn_tail_intact_records: 0,
                    torn_tail_damaged: torn_tail_bytes > 0,
                },
            ));
        }
        let key: [u8; 32] = bytes[8..40].try_into().expect("32 bytes");
        let scan = Self::scan(path, &key, &bytes, max_record_bytes)?;
        let torn_tail_bytes = bytes.len() as u64 - scan.valid_len;
        if torn_tail_bytes > 0 {
            file.set_len(scan.valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::Start(scan.valid_len)).map_err(io)?;
        let next_number = scan.records.len() as u64;
        let wal = Wal { path: path.to_path_buf(), file, key, len: scan.valid_len, next_number, scratch: Vec::new() };
        Ok((
            wal,
            Recovered {
                records: scan.records,
                torn_tail_bytes,
                torn_tail_intact_records: scan.intact_cut,
                torn_tail_damaged: scan.damaged,
            },
        ))
    }

    /// Write a fresh header (a new random key) into `file`, emptying it.
    fn create(path: &Path, mut file: File) -> Result<Wal, WalError> {
        let io = |source| WalError::Io { path: path.to_path_buf(), source };
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(format!("drawing the log's key: {e}"))))?;
        let mut header = Vec::with_capacity(FILE_HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&key);
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Wal {
            path: path.to_path_buf(),
            file,
            key,
            len: FILE_HEADER_BYTES as u64,
            next_number: 0,
            scratch: Vec::new(),
        })
    }

    /// Read records from the header on, and apply the recovery rule.
    fn scan<R: DeserializeOwned>(
        path: &Path,
        key: &[u8; 32],
        bytes: &[u8],
        max_record_bytes: u32,
    ) -> Result<Scan<R>, WalError> {
        let mut records = Vec::new();
        let mut log = Vec::new();
        // Where each record read starts: the rule may cut back to a batch's start.
        let mut offsets = Vec::new();
        let mut offset = FILE_HEADER_BYTES;
        let mut damage = None;
        while offset < bytes.len() {
            let expected = records.len() as u64;
            let why = match vouched_header(key, &bytes[offset..]) {
                None if bytes.len() - offset < RECORD_HEADER_BYTES => {
                    "the file ends inside a record header".to_string()
                }
                None => "header tag mismatch".to_string(),
                Some(h) if h.mark.number != expected => {
                    format!("record number {} where {expected} was next", h.mark.number)
                }
                Some(h) if h.len > max_record_bytes => {
                    format!("length {} exceeds the limit of {max_record_bytes}", h.len)
                }
                Some(h) => {
                    let start = offset + RECORD_HEADER_BYTES;
                    match bytes.get(start..start + h.len as usize) {
                        None => "the file ends inside the record".to_string(),
                        Some(payload) if crc32fast::hash(payload) != h.payload_crc => {
                            "payload checksum mismatch".to_string()
                        }
                        Some(payload) => match postcard::from_bytes(payload) {
                            Ok(record) => {
                                records.push(record);
                                log.push(ReadBack::Intact(h.mark));
                                offsets.push(offset);
                                offset = start + payload.len();
                                continue;
                            }
                            Err(e) => format!("checksums valid but the record does not decode: {e}"),
                        },
                    }
                }
            };
            damage = Some((offset, expected, why));
            break;
        }
        let mut damaged = false;
        // The first record of a later batch found behind the damage: (number, offset).
        let mut later_batch = None;
        if let Some((at, number, _)) = &damage {
            damaged = true;
            log.push(ReadBack::Damaged { number: *number });
            // What the log vouches for behind the damage: headers whose tag holds.
            for candidate in at + 1..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1) {
                // Cheap filter first: a later record's number is past the damaged one.
                let n = word64(bytes, candidate + 4);
                if n <= *number || n > *number + (bytes.len() / RECORD_HEADER_BYTES) as u64 {
                    continue;
                }
                if let Some(h) = vouched_header(key, &bytes[candidate..]) {
                    log.push(ReadBack::Intact(h.mark));
                    if h.mark.batch_first > *number {
                        later_batch = Some((h.mark.number, candidate));
                        break; // one later batch settles it
                    }
                }
            }
        }
        match recover(&log) {
            Recovery::Corrupt { .. } => {
                let (at, number, why) = damage.expect("corruption needs damage");
                let (later, later_at) = later_batch.expect("the rule found a later batch behind the damage");
                Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: at as u64,
                    reason: format!(
                        "record {number}: {why}, with record {later} of a later batch intact after it at offset \
                         {later_at} (acknowledged data behind damage no crash explains)"
                    ),
                })
            }
            Recovery::Intact => Ok(Scan { records, valid_len: offset as u64, intact_cut: 0, damaged }),
            Recovery::TornTail { kept } => {
                let intact_read = records.len();
                records.truncate(kept);
                let valid_len = offsets.get(kept).map_or(offset, |o| *o) as u64;
                Ok(Scan { records, valid_len, intact_cut: (intact_read - kept) as u64, damaged })
            }
        }
    }

    /// Append one step's records and make them durable with a single fsync. When this
    /// returns, the step's messages may leave the node.
    pub fn append_batch<R: Serialize>(&mut self, records: &[R]) -> Result<(), WalError> {
        if records.is_empty() {
            return Ok(());
        }
        self.scratch.clear();
        let batch_first = self.next_number;
        let batch_len = u32::try_from(records.len()).expect("fewer than 4 billion records in one step");
        for (i, record) in records.iter().enumerate() {
            let payload = postcard::to_stdvec(record).expect("in-memory serialization cannot fail");
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD_BYTES)
                .unwrap_or_else(|| panic!("a {}-byte record exceeds the WAL limit: a protocol bug", payload.len()));
            let start = self.scratch.len();
            self.scratch.extend_from_slice(&len.to_le_bytes());
            self.scratch.extend_from_slice(&(batch_first + i as u64).to_le_bytes());
            self.scratch.extend_from_slice(&batch_first.to_le_bytes());
            self.scratch.extend_from_slice(&batch_len.to_le_bytes());
            self.scratch.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            let tag = tag(&self.key, &self.scratch[start..start + TAGGED_BYTES]);
            self.scratch.extend_from_slice(&tag);
            self.scratch.extend_from_slice(&payload);
        }
        let io = |source| WalError::Io { path: self.path.clone(), source };
        self.file.write_all(&self.scratch).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.len += self.scratch.len() as u64;
        self.next_number += records.len() as u64;
        Ok(())
    }

    /// Replace the whole log with `records` (a protocol's snapshot and what follows it,
    /// [`qlab_core::Protocol::supersedes_earlier_records`]): they are written to a new
    /// file (with a new key) that is made durable and then renamed over the old one, so
    /// a crash at any moment leaves either the old log or the new one, never a mix.
    pub fn rewrite<R: Serialize>(&mut self, records: &[R]) -> Result<(), WalError> {
        let io = |source| WalError::Io { path: self.path.clone(), source };
        let mut fresh_path = self.path.clone().into_os_string();
        fresh_path.push(".compacting");
        let fresh_path = PathBuf::from(fresh_path);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&fresh_path).map_err(io)?;
        let mut fresh = Wal::create(&fresh_path, file)?;
        fresh.scratch = std::mem::take(&mut self.scratch);
        fresh.append_batch(records)?;
        std::fs::rename(&fresh_path, &self.path).map_err(io)?;
        sync_dir(&self.path).map_err(io)?;
        fresh.path = self.path.clone();
        *self = fresh;
        Ok(())
    }

    /// Bytes in the log (its header and records).
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a scan keeps.
struct Scan<R> {
    records: Vec<R>,
    valid_len: u64,
    intact_cut: u64,
    damaged: bool,
}

/// Make a file's directory entry durable (after creating or renaming it).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir).and_then(|d| d.sync_all()),
        None => Ok(()),
    }
}
