//! The durable write-ahead log behind `storage = "disk"`.
//!
//! A protocol's persisted records are appended to one file, a batch per protocol step,
//! with a single `fsync` (`sync_data`) per batch: that one call is what the
//! persist-before-send contract waits for. Each record is
//!
//! ```text
//! [length: u32 LE][crc32 of length: u32 LE][crc32 of payload: u32 LE][payload: postcard]
//! ```
//!
//! The length has its own checksum so a damaged length is recognised as damage instead
//! of being followed to a wrong place.
//!
//! On open the file is read from the start up to the first record that is not intact
//! (short, failing a checksum, impossibly long, undecodable). What happens next depends
//! on what follows it. A crash can only damage the *tail*: the batch whose `fsync`
//! never returned, which no one was told was durable. So if no intact record appears
//! anywhere after the damage, it is a torn tail and is cut off. If an intact record
//! does follow, acknowledged data sits behind the damage, which no crash explains; the
//! log is refused with an error naming the file and the byte offset, and nothing is cut.
//!
//! A protocol that compacts its log persists a record that supersedes all before it (a
//! snapshot); the log is then rewritten to start at that record ([`Wal::rewrite`]), so
//! the file stays as small as what a restart needs.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER_BYTES: usize = 12;

/// Bound on one record; a length above it inside the file is corruption, not a record.
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
}

pub struct Wal {
    path: PathBuf,
    file: File,
    /// Bytes of valid records; appends go here.
    len: u64,
    scratch: Vec<u8>,
}

/// The payload of the record at the start of `bytes` if it is whole and both
/// checksums hold, else why not.
fn intact_record(bytes: &[u8], max_record_bytes: u32) -> Result<&[u8], String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than a record header", bytes.len()));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (len, len_crc, payload_crc) = (word(0), word(4), word(8));
    if crc32fast::hash(&bytes[..4]) != len_crc {
        return Err("length checksum mismatch".into());
    }
    if len > max_record_bytes {
        return Err(format!("length {len} exceeds the limit of {max_record_bytes}"));
    }
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + len as usize).ok_or("record cut short")?;
    if crc32fast::hash(payload) != payload_crc {
        return Err("payload checksum mismatch".into());
    }
    Ok(payload)
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
        if !existed {
            // Make the new file's directory entry durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, valid_len) = Self::scan(path, &bytes, max_record_bytes)?;
        let torn_tail_bytes = bytes.len() as u64 - valid_len;
        if torn_tail_bytes > 0 {
            file.set_len(valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::Start(valid_len)).map_err(io)?;
        let wal = Wal { path: path.to_path_buf(), file, len: valid_len, scratch: Vec::new() };
        Ok((wal, Recovered { records, torn_tail_bytes }))
    }

    /// Parse records; returns them and the length of the valid prefix.
    fn scan<R: DeserializeOwned>(path: &Path, bytes: &[u8], max_record_bytes: u32) -> Result<(Vec<R>, u64), WalError> {
        let mut records = Vec::new();
        let mut offset = 0usize;
        while offset < bytes.len() {
            let damage = match intact_record(&bytes[offset..], max_record_bytes) {
                Ok(payload) => match postcard::from_bytes(payload) {
                    Ok(record) => {
                        records.push(record);
                        offset += HEADER_BYTES + payload.len();
                        continue;
                    }
                    Err(e) => format!("checksums valid but the record does not decode: {e}"),
                },
                Err(reason) => reason,
            };
            // A torn tail has nothing intact after it; anything else is corruption.
            if let Some(next) =
                (offset + 1..bytes.len()).find(|at| intact_record(&bytes[*at..], max_record_bytes).is_ok())
            {
                return Err(WalError::Corrupt {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    reason: format!("{damage}, with an intact record after it at offset {next}"),
                });
            }
            return Ok((records, offset as u64));
        }
        Ok((records, offset as u64))
    }

    /// Append one step's records and make them durable with a single fsync. When this
    /// returns, the step's messages may leave the node.
    pub fn append_batch<R: Serialize>(&mut self, records: &[R]) -> Result<(), WalError> {
        if records.is_empty() {
            return Ok(());
        }
        self.scratch.clear();
        for record in records {
            let payload = postcard::to_stdvec(record).expect("in-memory serialization cannot fail");
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD_BYTES)
                .unwrap_or_else(|| panic!("a {}-byte record exceeds the WAL limit: a protocol bug", payload.len()));
            let len_bytes = len.to_le_bytes();
            self.scratch.extend_from_slice(&len_bytes);
            self.scratch.extend_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
            self.scratch.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            self.scratch.extend_from_slice(&payload);
        }
        let io = |source| WalError::Io { path: self.path.clone(), source };
        self.file.write_all(&self.scratch).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.len += self.scratch.len() as u64;
        Ok(())
    }

    /// Replace the whole log with `records` (a protocol's snapshot and what follows it,
    /// [`qlab_core::Protocol::supersedes_earlier_records`]): they are written to a new
    /// file that is made durable and then renamed over the old one, so a crash at any
    /// moment leaves either the old log or the new one, never a mix.
    pub fn rewrite<R: Serialize>(&mut self, records: &[R]) -> Result<(), WalError> {
        let io = |source| WalError::Io { path: self.path.clone(), source };
        let mut fresh_path = self.path.clone().into_os_string();
        fresh_path.push(".compacting");
        let fresh_path = PathBuf::from(fresh_path);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&fresh_path).map_err(io)?;
        let mut fresh = Wal { path: fresh_path.clone(), file, len: 0, scratch: std::mem::take(&mut self.scratch) };
        fresh.append_batch(records)?;
        std::fs::rename(&fresh_path, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = fresh.file;
        self.len = fresh.len;
        self.scratch = fresh.scratch;
        Ok(())
    }

    /// Bytes of records in the log.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
