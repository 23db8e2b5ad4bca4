//! Linearizability of a client history against the KV model.
//!
//! A history is linearizable if every operation can be given a point between its
//! invocation and its response such that executing them in that order on a single
//! copy of the store gives the results the clients saw (Herlihy & Wing 1990). Every
//! operation touches one key, and linearizability is compositional (ibid., §3.3), so
//! the history is checked key by key.
//!
//! Per key we run the Wing–Gong search with Lowe's memoization (the approach of
//! Knossos and Porcupine): repeatedly pick an operation that may go next — one invoked
//! before every not-yet-linearized operation returned — apply it to the model, and keep
//! it if the model's result matches the observed one; states already explored
//! (set of linearized operations, model value) are cached so each is visited once.
//! Operations without a response (the client crashed or the run ended) may take effect
//! at any point after their invocation, or never.

use qlab_core::{KvStore, Nanos, Op, OpResult};
use std::collections::{HashMap, HashSet};

/// One client operation as the client saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryOp {
    pub client: u64,
    pub op: Op,
    pub invoked: Nanos,
    /// `None`: no response was seen (the op may or may not have taken effect).
    pub completed: Option<(Nanos, OpResult)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LinCheck {
    Linearizable,
    /// No order explains the results seen on `key`.
    Violation {
        key: u64,
        operations: usize,
    },
    /// The search gave up after `states` states on `key` (neither verdict).
    Inconclusive {
        key: u64,
        states: usize,
    },
}

/// Bound on explored states per key; beyond it the check is inconclusive.
pub const STATE_BUDGET_PER_KEY: usize = 2_000_000;

pub fn check_history(history: &[HistoryOp]) -> LinCheck {
    let mut by_key: HashMap<u64, Vec<&HistoryOp>> = HashMap::new();
    for op in history {
        by_key.entry(op.op.key()).or_default().push(op);
    }
    let mut keys: Vec<u64> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let ops = &by_key[&key];
        match check_key(ops) {
            KeyCheck::Ok => {}
            KeyCheck::Violation => return LinCheck::Violation { key, operations: ops.len() },
            KeyCheck::Budget(states) => return LinCheck::Inconclusive { key, states },
        }
    }
    LinCheck::Linearizable
}

enum KeyCheck {
    Ok,
    Violation,
    Budget(usize),
}

fn check_key(ops: &[&HistoryOp]) -> KeyCheck {
    let n = ops.len();
    let returns: Vec<Nanos> = ops.iter().map(|o| o.completed.as_ref().map_or(Nanos::MAX, |c| c.0)).collect();
    let must_linearize = ops.iter().filter(|o| o.completed.is_some()).count();
    let words = n.div_ceil(64);
    let key = ops[0].op.key();

    // Depth-first search with an explicit stack of (chosen op, value before it).
    let mut linearized = vec![0u64; words];
    let mut done_completed = 0usize;
    let mut value: Option<Vec<u8>> = None;
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    // Per depth: the candidate index to try next.
    let mut stack: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    let mut next_candidate = 0usize;
    let is_set = |bits: &[u64], i: usize| bits[i / 64] >> (i % 64) & 1 == 1;
    loop {
        if done_completed == must_linearize {
            return KeyCheck::Ok;
        }
        if seen.len() > STATE_BUDGET_PER_KEY {
            return KeyCheck::Budget(seen.len());
        }
        // Earliest response among ops not yet linearized: an op invoked after it
        // cannot go next.
        let horizon = (0..n).filter(|i| !is_set(&linearized, *i)).map(|i| returns[i]).min().unwrap_or(Nanos::MAX);
        let mut advanced = false;
        let mut i = next_candidate;
        while i < n {
            if !is_set(&linearized, i) && ops[i].invoked <= horizon {
                let mut data = HashMap::new();
                if let Some(v) = &value {
                    data.insert(key, v.clone());
                }
                let result = KvStore::execute(&mut data, &ops[i].op);
                let consistent = match &ops[i].completed {
                    Some((_, seen_result)) => *seen_result == result,
                    None => true,
                };
                if consistent {
                    let new_value = data.remove(&key);
                    let mut bits = linearized.clone();
                    bits[i / 64] |= 1 << (i % 64);
                    if seen.insert((bits.clone(), new_value.clone())) {
                        stack.push((i, value.take()));
                        linearized = bits;
                        value = new_value;
                        if ops[i].completed.is_some() {
                            done_completed += 1;
                        }
                        next_candidate = 0;
                        advanced = true;
                        break;
                    }
                }
            }
            i += 1;
        }
        if advanced {
            continue;
        }
        // Backtrack.
        let Some((last, previous_value)) = stack.pop() else {
            return KeyCheck::Violation;
        };
        linearized[last / 64] &= !(1 << (last % 64));
        if ops[last].completed.is_some() {
            done_completed -= 1;
        }
        value = previous_value;
        next_candidate = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u64, v: u8, invoked: Nanos, done: Nanos) -> HistoryOp {
        HistoryOp { client, op: Op::Put { key: 1, value: vec![v] }, invoked, completed: Some((done, OpResult::Ok)) }
    }
    fn get(client: u64, v: Option<u8>, invoked: Nanos, done: Nanos) -> HistoryOp {
        HistoryOp {
            client,
            op: Op::Get { key: 1 },
            invoked,
            completed: Some((done, OpResult::Value(v.map(|v| vec![v])))),
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![put(1, 1, 0, 10), get(2, Some(1), 20, 30), put(1, 2, 40, 50), get(2, Some(2), 60, 70)];
        assert_eq!(check_history(&h), LinCheck::Linearizable);
    }

    #[test]
    fn stale_read_after_write_completed_is_not_linearizable() {
        // The put of 2 finished before the get started, yet the get saw 1.
        let h = vec![put(1, 1, 0, 10), put(1, 2, 20, 30), get(2, Some(1), 40, 50)];
        assert_eq!(check_history(&h), LinCheck::Violation { key: 1, operations: 3 });
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The get overlaps both puts: it may see 1 or 2.
        for seen in [1, 2] {
            let h = vec![put(1, 1, 0, 100), put(3, 2, 10, 90), get(2, Some(seen), 5, 95)];
            assert_eq!(check_history(&h), LinCheck::Linearizable, "get saw {seen}");
        }
    }

    #[test]
    fn a_read_cannot_go_back_in_time() {
        // Two sequential reads by one client, both overlapping a write: 2 then 1 is
        // impossible once 1 was overwritten.
        let h = vec![put(1, 1, 0, 10), put(1, 2, 20, 100), get(2, Some(2), 30, 40), get(2, Some(1), 50, 60)];
        assert!(matches!(check_history(&h), LinCheck::Violation { .. }));
    }

    #[test]
    fn value_never_written_is_a_violation() {
        let h = vec![put(1, 1, 0, 10), get(2, Some(9), 20, 30)];
        assert!(matches!(check_history(&h), LinCheck::Violation { .. }));
    }

    #[test]
    fn pending_write_may_or_may_not_take_effect() {
        let pending = HistoryOp { client: 1, op: Op::Put { key: 1, value: vec![7] }, invoked: 0, completed: None };
        for seen in [None, Some(7)] {
            let h = vec![pending.clone(), get(2, seen, 10, 20)];
            assert_eq!(check_history(&h), LinCheck::Linearizable);
        }
        // But once seen, it cannot be un-seen.
        let h = vec![pending, get(2, Some(7), 10, 20), get(2, None, 30, 40)];
        assert!(matches!(check_history(&h), LinCheck::Violation { .. }));
    }

    #[test]
    fn compare_and_swap_results_constrain_the_order() {
        let cas = |client, expected: Option<u8>, new: u8, swapped, found: Option<u8>, invoked, done| HistoryOp {
            client,
            op: Op::Cas { key: 1, expected: expected.map(|e| vec![e]), new: vec![new] },
            invoked,
            completed: Some((done, OpResult::Cas { swapped, found: found.map(|f| vec![f]) })),
        };
        // Two concurrent CAS from absent: exactly one may win.
        let ok = vec![cas(1, None, 1, true, None, 0, 10), cas(2, None, 2, false, Some(1), 0, 10)];
        assert_eq!(check_history(&ok), LinCheck::Linearizable);
        let both_won = vec![cas(1, None, 1, true, None, 0, 10), cas(2, None, 2, true, None, 0, 10)];
        assert!(matches!(check_history(&both_won), LinCheck::Violation { .. }));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![put(1, 1, 0, 10), get(2, Some(1), 20, 30)];
        h.push(HistoryOp {
            client: 3,
            op: Op::Get { key: 2 },
            invoked: 0,
            completed: Some((5, OpResult::Value(Some(vec![1])))),
        });
        assert_eq!(check_history(&h), LinCheck::Violation { key: 2, operations: 1 });
    }
}
