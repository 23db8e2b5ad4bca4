//! Length-prefixed frames on a byte stream.
//!
//! A frame is a 4-byte little-endian length followed by that many payload bytes. The
//! decoder accepts bytes in arbitrary chunks (as a QUIC stream delivers them) and
//! yields whole payloads. A length above the configured limit is an error the moment
//! its header is seen — before any buffer grows — so a peer cannot make us allocate
//! what it claims. Payloads are decoded by the caller with [`decode`], whose failures
//! are values to count, never panics.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const HEADER_BYTES: usize = qlab_core::wire::FRAME_HEADER_BYTES;

/// Default bound on one frame: far above any honest message (a batch of 64 entries of
/// 64 KiB values), far below what would hurt to buffer.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("undecodable payload of {len} bytes: {reason}")]
    Malformed { len: usize, reason: String },
}

/// Append one frame carrying `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frames are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Serialize `value` with postcard and frame it.
pub fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Serialized straight into `out` behind a length written afterwards: a payload
    // serialized on its own grows a fresh vector byte by byte (a handful of
    // reallocations for a 150-byte request) and is then copied; on the harness's
    // per-operation path that was most of the cost of sending a request.
    let header = out.len();
    out.extend_from_slice(&[0; 4]);
    out.reserve(256);
    *out = postcard::to_extend(value, std::mem::take(out)).expect("in-memory serialization cannot fail");
    let len = u32::try_from(out.len() - header - 4).expect("frames are far below 4 GiB");
    out[header..header + 4].copy_from_slice(&len.to_le_bytes());
}

/// At most this many bytes of queued frames go out as one stream write.
pub const COALESCED_WRITE_BYTES: usize = 64 * 1024;

/// `first` and whatever else is already queued behind it (up to
/// [`COALESCED_WRITE_BYTES`]) into `batch`, for one stream write: under load many small
/// frames are queued at a time, and a write per frame costs the stream a wake-up and
/// often a packet each.
pub fn coalesce_queued(batch: &mut Vec<u8>, first: &[u8], queue: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    batch.clear();
    batch.extend_from_slice(first);
    while batch.len() < COALESCED_WRITE_BYTES {
        match queue.try_recv() {
            Ok(next) => batch.extend_from_slice(&next),
            Err(_) => break,
        }
    }
}

/// Decode a payload produced by [`encode`].
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|e| FrameError::Malformed { len: payload.len(), reason: e.to_string() })
}

/// Reassembles frames from stream chunks.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Start of unconsumed bytes in `buffer` (compacted lazily).
    start: usize,
    max_frame_bytes: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { buffer: Vec::new(), start: 0, max_frame_bytes }
    }

    /// Add bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole payload, `Ok(None)` if more bytes are needed, or an error for a
    /// frame over the limit (after which the stream cannot be resynchronized: close it).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let available = &self.buffer[self.start..];
        if available.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes(available[..HEADER_BYTES].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge { len, max: self.max_frame_bytes });
        }
        if available.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let payload = available[HEADER_BYTES..HEADER_BYTES + len].to_vec();
        self.start += HEADER_BYTES + len;
        Ok(Some(payload))
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_chunking() {
        let mut wire = Vec::new();
        for n in 0..50u32 {
            encode(&(n, vec![n as u8; n as usize]), &mut wire);
        }
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let mut decoder = FrameDecoder::new(1024);
            let mut seen = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(piece);
                while let Some(payload) = decoder.next_frame().unwrap() {
                    seen.push(decode::<(u32, Vec<u8>)>(&payload).unwrap());
                }
            }
            assert_eq!(seen.len(), 50, "chunk {chunk}");
            assert_eq!(seen[49], (49, vec![49; 49]));
            assert_eq!(decoder.pending_bytes(), 0);
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&1_000_000u32.to_le_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: 1_000_000, max: 100 }));
    }
}
