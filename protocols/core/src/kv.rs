//! The replicated key-value state machine every protocol drives.
//!
//! Operations are `put`, `get` and compare-and-swap on `u64` keys with byte values.
//! A session table remembers, per client, the highest sequence number applied and its
//! result: a retried request (same client and seq) is answered from the table and
//! never applied twice, which is what makes client retries after a leader change safe
//! (Raft dissertation §6.3). Clients keep one request outstanding, so one entry per
//! client suffices.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::{ClientId, Request};

pub type Key = u64;
pub type Value = Vec<u8>;

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: Key,
        value: Value,
    },
    Get {
        key: Key,
    },
    /// Set `key` to `new` if its current value equals `expected` (`None`: absent).
    Cas {
        key: Key,
        expected: Option<Value>,
        new: Value,
    },
}

/// Values print as their length and first bytes, so traces stay one line per event.
pub struct ShortValue<'a>(pub &'a [u8]);

impl std::fmt::Debug for ShortValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.0.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let more = if self.0.len() > 16 { ".." } else { "" };
        write!(f, "{}B:{shown}{more}", self.0.len())
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put(k{key}, {:?})", ShortValue(value)),
            Op::Get { key } => write!(f, "get(k{key})"),
            Op::Cas { key, expected, new } => {
                write!(f, "cas(k{key}, {:?} -> {:?})", expected.as_deref().map(ShortValue), ShortValue(new))
            }
        }
    }
}

impl Op {
    pub fn key(&self) -> Key {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } => *key,
        }
    }
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
    /// Approximate encoded size in bytes, for Raft's log-bytes snapshot trigger (the
    /// byte metrics count real encodings instead, see [`crate::wire`]).
    pub fn encoded_bytes(&self) -> usize {
        match self {
            Op::Put { value, .. } => 9 + value.len(),
            Op::Get { .. } => 9,
            Op::Cas { expected, new, .. } => 10 + expected.as_ref().map_or(0, Vec::len) + new.len(),
        }
    }
    pub(crate) fn hash_into(&self, hasher: &mut blake3::Hasher) {
        match self {
            Op::Put { key, value } => {
                hasher.update(b"P");
                hasher.update(&key.to_le_bytes());
                hasher.update(&(value.len() as u64).to_le_bytes());
                hasher.update(value);
            }
            Op::Get { key } => {
                hasher.update(b"G");
                hasher.update(&key.to_le_bytes());
            }
            Op::Cas { key, expected, new } => {
                hasher.update(b"C");
                hasher.update(&key.to_le_bytes());
                match expected {
                    None => hasher.update(b"-"),
                    Some(v) => {
                        hasher.update(b"+");
                        hasher.update(&(v.len() as u64).to_le_bytes());
                        hasher.update(v)
                    }
                };
                hasher.update(&(new.len() as u64).to_le_bytes());
                hasher.update(new);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpResult {
    /// A put succeeded.
    Ok,
    /// The value read (`None`: absent).
    Value(Option<Value>),
    /// A compare-and-swap: whether it swapped, and the value it found.
    Cas { swapped: bool, found: Option<Value> },
}

/// The state machine plus its session table. Serializable so a replica that fell
/// behind a checkpoint or snapshot can be sent the whole state (PBFT state transfer,
/// Raft's InstallSnapshot). It serializes in a canonical form, sorted by key and
/// client: every replica encodes the same state as the same bytes, so a snapshot sent
/// in chunks may be pieced together from two leaders' copies of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "CanonicalKv", from = "CanonicalKv")]
pub struct KvStore {
    data: HashMap<Key, Value>,
    sessions: HashMap<ClientId, (u64, OpResult)>,
}

/// [`KvStore`] as it is serialized: both tables as sorted lists.
#[derive(Serialize, Deserialize)]
struct CanonicalKv {
    data: Vec<(Key, Value)>,
    sessions: Vec<(ClientId, (u64, OpResult))>,
}

impl From<KvStore> for CanonicalKv {
    fn from(kv: KvStore) -> Self {
        let mut data: Vec<(Key, Value)> = kv.data.into_iter().collect();
        data.sort_unstable_by_key(|(key, _)| *key);
        let mut sessions: Vec<(ClientId, (u64, OpResult))> = kv.sessions.into_iter().collect();
        sessions.sort_unstable_by_key(|(client, _)| *client);
        CanonicalKv { data, sessions }
    }
}

impl From<CanonicalKv> for KvStore {
    fn from(kv: CanonicalKv) -> Self {
        KvStore { data: kv.data.into_iter().collect(), sessions: kv.sessions.into_iter().collect() }
    }
}

impl KvStore {
    /// Apply `request` at most once. Returns the result to send back, or `None` for
    /// a request older than the client's last applied one (its reply is long gone).
    pub fn apply(&mut self, request: &Request) -> Option<OpResult> {
        if let Some((last_seq, last_result)) = self.sessions.get(&request.client) {
            if request.seq == *last_seq {
                return Some(last_result.clone());
            }
            if request.seq < *last_seq {
                return None;
            }
        }
        let result = Self::execute(&mut self.data, &request.op);
        self.sessions.insert(request.client, (request.seq, result.clone()));
        Some(result)
    }

    /// The pure operation semantics, shared with the linearizability checker's model.
    pub fn execute(data: &mut HashMap<Key, Value>, op: &Op) -> OpResult {
        match op {
            Op::Put { key, value } => {
                data.insert(*key, value.clone());
                OpResult::Ok
            }
            Op::Get { key } => OpResult::Value(data.get(key).cloned()),
            Op::Cas { key, expected, new } => {
                let found = data.get(key).cloned();
                let swapped = found == *expected;
                if swapped {
                    data.insert(*key, new.clone());
                }
                OpResult::Cas { swapped, found }
            }
        }
    }

    pub fn get(&self, key: Key) -> Option<&Value> {
        self.data.get(&key)
    }

    /// A digest of the whole state, data and sessions, independent of hash-map order:
    /// equal states give equal digests on every replica.
    pub fn state_digest(&self) -> crate::Digest {
        let mut hasher = blake3::Hasher::new();
        let mut keys: Vec<&Key> = self.data.keys().collect();
        keys.sort_unstable();
        for key in keys {
            let value = &self.data[key];
            hasher.update(&key.to_le_bytes());
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(value);
        }
        let mut clients: Vec<&ClientId> = self.sessions.keys().collect();
        clients.sort_unstable();
        for client in clients {
            let (seq, result) = &self.sessions[client];
            hasher.update(&client.0.to_le_bytes());
            hasher.update(&seq.to_le_bytes());
            match result {
                OpResult::Ok => hasher.update(b"ok"),
                OpResult::Value(v) => hasher.update(b"v").update(v.as_deref().unwrap_or(b"-")),
                OpResult::Cas { swapped, found } => {
                    hasher.update(&[*swapped as u8]).update(found.as_deref().unwrap_or(b"-"))
                }
            };
        }
        crate::Digest(*hasher.finalize().as_bytes())
    }

    /// The last sequence number applied for `client` (0: none).
    pub fn last_applied_seq(&self, client: ClientId) -> u64 {
        self.sessions.get(&client).map_or(0, |(seq, _)| *seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(seq: u64, op: Op) -> Request {
        Request { client: ClientId(7), seq, op, signature: Vec::new() }
    }

    #[test]
    fn duplicate_request_is_applied_once() {
        let mut kv = KvStore::default();
        let cas = Op::Cas { key: 1, expected: None, new: b"x".to_vec() };
        assert_eq!(kv.apply(&req(1, cas.clone())), Some(OpResult::Cas { swapped: true, found: None }));
        // The retry must answer the first result, not re-run the CAS (which would fail).
        assert_eq!(kv.apply(&req(1, cas)), Some(OpResult::Cas { swapped: true, found: None }));
        assert_eq!(kv.apply(&req(0, Op::Get { key: 1 })), None);
        assert_eq!(kv.apply(&req(2, Op::Get { key: 1 })), Some(OpResult::Value(Some(b"x".to_vec()))));
    }

    #[test]
    fn cas_swaps_only_on_match() {
        let mut kv = KvStore::default();
        kv.apply(&req(1, Op::Put { key: 1, value: b"a".to_vec() }));
        let r = kv.apply(&req(2, Op::Cas { key: 1, expected: Some(b"b".to_vec()), new: b"c".to_vec() }));
        assert_eq!(r, Some(OpResult::Cas { swapped: false, found: Some(b"a".to_vec()) }));
        assert_eq!(kv.get(1), Some(&b"a".to_vec()));
    }
}
