//! What a message costs on the wire, counted the way real mode sends it.
//!
//! Real mode (`qlab-net`) writes each peer message as one frame: a 4-byte length, then
//! the postcard encoding of `Wire::Peer(message)`, whose first byte is the variant tag.
//! The simulator counts [`peer_frame_bytes`] per message sent, so `bytes_per_op` means
//! the same number of bytes in both modes; `harness/lab/tests/wire_bytes.rs` pins this
//! against qlab-net's own encoder for every message type of every protocol.

use serde::Serialize;

/// The little-endian length that starts every frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The variant tag of `Wire::Peer`: postcard writes an enum's variant index as a
/// varint, and `Peer` is variant 0.
pub const PEER_TAG_BYTES: usize = 1;

/// The length of `value`'s postcard encoding, computed without allocating it.
pub fn encoded_bytes<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(value, Default::default())
        .expect("postcard sizes any in-memory value")
}

/// The bytes real mode puts on a link to send `message` to a peer.
pub fn peer_frame_bytes<M: Serialize + ?Sized>(message: &M) -> usize {
    FRAME_HEADER_BYTES + PEER_TAG_BYTES + encoded_bytes(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_postcard_lengths() {
        assert_eq!(encoded_bytes(&5u64), 1);
        assert_eq!(encoded_bytes(&300u64), 2, "varint: 300 needs two 7-bit groups");
        assert_eq!(encoded_bytes(&vec![0u8; 10]), 11, "length prefix plus the bytes");
        assert_eq!(encoded_bytes(&vec![0u8; 10]), postcard::to_stdvec(&vec![0u8; 10]).unwrap().len());
        assert_eq!(peer_frame_bytes(&5u64), 6);
    }
}
