//! blake3 digests and the prefix hash chain.
//!
//! Checkers must compare committed logs of every replica after every run. Instead of
//! shipping whole logs, each `Committed` event carries `prefix_digest(slot)` =
//! `H(prefix_digest(slot - 1) || slot || entry_digest)`, so two replicas agree on a
//! whole prefix exactly when they agree on its last chain value (Log Matching
//! Property, Raft §5.3, checked in constant space).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A 32-byte blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The chain value before slot 1.
    pub const GENESIS: Digest = Digest([0; 32]);

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The chain value after appending `entry` at `slot` to a prefix ending in `self`:
    /// blake3 keyed by the previous chain value over `slot || entry`. Keying with the
    /// previous value makes each link one 64-byte-block compression, which matters
    /// because every replica chains every entry.
    pub fn chain(&self, slot: u64, entry: &Digest) -> Digest {
        let mut input = [0u8; 40];
        input[..8].copy_from_slice(&slot.to_le_bytes());
        input[8..].copy_from_slice(&entry.0);
        Digest(*blake3::keyed_hash(&self.0, &input).as_bytes())
    }

    /// First 8 hex digits, for traces and reports.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_order_and_slot() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ab = Digest::GENESIS.chain(1, &a).chain(2, &b);
        let ba = Digest::GENESIS.chain(1, &b).chain(2, &a);
        assert_ne!(ab, ba);
        assert_ne!(Digest::GENESIS.chain(1, &a), Digest::GENESIS.chain(2, &a));
    }
}
