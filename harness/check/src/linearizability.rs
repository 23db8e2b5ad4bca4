//! Linearizability of a client history against the KV model.
//!
//! A history is linearizable if every operation can be given a point between its
//! invocation and its response such that executing them in that order on a single
//! copy of the store gives the results the clients saw (Herlihy & Wing 1990). Every
//! operation touches one key, and linearizability is compositional (ibid., §3.3), so
//! the history is checked key by key.
//!
//! **Segments.** A key's history is cut wherever it goes quiet: when every operation
//! on the key so far has returned and the next one is invoked strictly later, no
//! operation spans the cut, so every linearization puts all operations before it
//! ahead of all after it. Each segment is searched on its own, starting from the
//! *set* of values the key may hold at its start, and yields the set of values it may
//! leave behind (several when concurrent writes were never read apart). This is what
//! lets [`HistoryChecker`] run beside an experiment of any length: a closed segment is
//! forgotten, so memory is one open segment and one value set per key, and the cost
//! is linear in the history rather than quadratic in each key's operation count. Values
//! are kept as blake3 digests (writes in our workloads are unique, and a digest
//! collision is as unlikely as in the replicas' own hash chains).
//!
//! **Search.** Within a segment we run the Wing–Gong search with Lowe's memoization
//! (the approach of Knossos and Porcupine): an operation may go next if it was invoked
//! before every not-yet-linearized operation returned; it is applied to the model and
//! kept if the model's result matches the observed one; states already explored (set
//! of linearized operations, model value) are visited once. A closed segment is
//! explored exhaustively to collect every possible end value; if that exceeds
//! [`CLOSE_BUDGET_STATES`] the segment is simply kept open and merged with what follows
//! (merging segments is always sound), and tried again once it has doubled. The last
//! segment of each key is searched at the end for one linearization, as in the
//! whole-history search. Operations without a response (the run ended first) may take
//! effect at any point after their invocation, or never.
//!
//! Memory stays bounded as long as keys go quiet now and then; a key that is never
//! free of a pending operation keeps one growing segment (so would any checker that is
//! exact).

use qlab_core::{Digest, Nanos, Op, OpResult};
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
    /// No order explains the results seen on `key`: the `operations` of the segment
    /// that starts with an invocation at `from_ns`.
    Violation {
        key: u64,
        operations: usize,
        from_ns: Nanos,
    },
    /// The search gave up after `states` states on `key` (neither verdict).
    Inconclusive {
        key: u64,
        states: usize,
    },
}

/// Bound on explored states for a key's final search; beyond it the check is
/// inconclusive.
pub const STATE_BUDGET_PER_KEY: usize = 2_000_000;

/// Bound on explored states when closing a segment; beyond it the segment stays open.
pub const CLOSE_BUDGET_STATES: usize = 100_000;

/// Check a whole recorded history (invocations and responses replayed in time order
/// through a [`HistoryChecker`]).
pub fn check_history(history: &[HistoryOp]) -> LinCheck {
    // At equal times invocations go first: an operation invoked at the instant another
    // returned counts as concurrent with it, not after it.
    let mut events: Vec<(Nanos, u8, usize)> = Vec::with_capacity(history.len() * 2);
    for (i, op) in history.iter().enumerate() {
        events.push((op.invoked, 0, i));
        if let Some((done, _)) = &op.completed {
            events.push((*done, 1, i));
        }
    }
    events.sort_unstable();
    let mut checker = HistoryChecker::new();
    let mut handles = vec![OpHandle(0); history.len()];
    for (time, kind, i) in events {
        if kind == 0 {
            handles[i] = checker.invoke(&history[i].op, time);
        } else if let Some((_, result)) = &history[i].completed {
            checker.complete(handles[i], time, result);
        }
    }
    checker.finish()
}

/// "the operation" or "the N operations", for reports.
pub fn operations_phrase(operations: usize) -> String {
    if operations == 1 { "the 1 operation".to_string() } else { format!("the {operations} operations") }
}

/// Names one invoked operation of a [`HistoryChecker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpHandle(u64);

/// A key's value in the model: absent, or the digest of its bytes.
type Cell = Option<Digest>;

#[derive(Clone, Debug)]
enum Step {
    Get,
    Put(Digest),
    Cas { expected: Cell, new: Digest },
}

#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Ok,
    Value(Cell),
    Cas { swapped: bool, found: Cell },
}

impl Step {
    fn of(op: &Op) -> Step {
        match op {
            Op::Get { .. } => Step::Get,
            Op::Put { value, .. } => Step::Put(Digest::of(value)),
            Op::Cas { expected, new, .. } => {
                Step::Cas { expected: expected.as_deref().map(Digest::of), new: Digest::of(new) }
            }
        }
    }

    /// The KV model ([`qlab_core::KvStore::execute`]) on one key's digest.
    fn apply(&self, cell: &mut Cell) -> Seen {
        match self {
            Step::Get => Seen::Value(*cell),
            Step::Put(value) => {
                *cell = Some(*value);
                Seen::Ok
            }
            Step::Cas { expected, new } => {
                let found = *cell;
                let swapped = found == *expected;
                if swapped {
                    *cell = Some(*new);
                }
                Seen::Cas { swapped, found }
            }
        }
    }
}

impl Seen {
    fn of(result: &OpResult) -> Seen {
        match result {
            OpResult::Ok => Seen::Ok,
            OpResult::Value(v) => Seen::Value(v.as_deref().map(Digest::of)),
            OpResult::Cas { swapped, found } => {
                Seen::Cas { swapped: *swapped, found: found.as_deref().map(Digest::of) }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Recorded {
    step: Step,
    invoked: Nanos,
    completed: Option<(Nanos, Seen)>,
}

struct KeyHistory {
    /// Values the key may hold before `segment`'s first operation.
    possible: Vec<Cell>,
    segment: Vec<Recorded>,
    /// Operations of `segment` without a response yet.
    open: usize,
    last_completed: Nanos,
    /// After a closing search ran out of budget: wait for the segment to reach this
    /// length before trying again.
    retry_at_len: usize,
}

/// Linearizability checked while the history is being made: feed it invocations and
/// responses in time order (each response after its invocation), then [`finish`].
///
/// [`finish`]: HistoryChecker::finish
pub struct HistoryChecker {
    keys: HashMap<u64, KeyHistory>,
    /// Where each operation without a response sits: key and index in its segment.
    pending: HashMap<OpHandle, (u64, usize)>,
    next_handle: u64,
    /// The first violation found; checking stops there.
    violation: Option<LinCheck>,
    /// Operations recorded and segments closed so far, for reports.
    pub operations: u64,
    pub segments_closed: u64,
}

impl Default for HistoryChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryChecker {
    pub fn new() -> Self {
        HistoryChecker {
            keys: HashMap::new(),
            pending: HashMap::new(),
            next_handle: 0,
            violation: None,
            operations: 0,
            segments_closed: 0,
        }
    }

    /// Operations currently held (open segments), a measure of the checker's memory.
    pub fn operations_held(&self) -> usize {
        self.keys.values().map(|k| k.segment.len()).sum()
    }

    /// Record that `op` was invoked at `time`.
    pub fn invoke(&mut self, op: &Op, time: Nanos) -> OpHandle {
        let handle = OpHandle(self.next_handle);
        self.next_handle += 1;
        self.operations += 1;
        if self.violation.is_some() {
            return handle;
        }
        let key = op.key();
        let history = self.keys.entry(key).or_insert_with(|| KeyHistory {
            possible: vec![None],
            segment: Vec::new(),
            open: 0,
            last_completed: 0,
            retry_at_len: 0,
        });
        if history.open == 0
            && !history.segment.is_empty()
            && time > history.last_completed
            && history.segment.len() >= history.retry_at_len
        {
            match search(&history.segment, &history.possible, true, CLOSE_BUDGET_STATES) {
                Search::Ends(ends) => {
                    history.possible = ends;
                    history.segment.clear();
                    history.retry_at_len = 0;
                    self.segments_closed += 1;
                }
                Search::Violation => {
                    let from_ns = history.segment[0].invoked;
                    self.violation = Some(LinCheck::Violation { key, operations: history.segment.len(), from_ns });
                    self.keys.clear();
                    self.pending.clear();
                    return handle;
                }
                Search::Budget(_) => history.retry_at_len = history.segment.len() * 2,
                Search::Found => unreachable!("closing searches collect every end value"),
            }
        }
        history.segment.push(Recorded { step: Step::of(op), invoked: time, completed: None });
        history.open += 1;
        self.pending.insert(handle, (key, history.segment.len() - 1));
        handle
    }

    /// Record that the operation `handle` returned `result` at `time`.
    pub fn complete(&mut self, handle: OpHandle, time: Nanos, result: &OpResult) {
        let Some((key, index)) = self.pending.remove(&handle) else { return };
        let history = self.keys.get_mut(&key).expect("a pending operation's key");
        history.segment[index].completed = Some((time, Seen::of(result)));
        history.open -= 1;
        history.last_completed = history.last_completed.max(time);
    }

    /// The verdict: the first violation found while recording, else the final search
    /// of every key's last segment (keys in order).
    pub fn finish(self) -> LinCheck {
        if let Some(violation) = self.violation {
            return violation;
        }
        let mut keys: Vec<(&u64, &KeyHistory)> = self.keys.iter().collect();
        keys.sort_unstable_by_key(|(key, _)| **key);
        let mut inconclusive = None;
        for (key, history) in keys {
            if history.segment.is_empty() {
                continue;
            }
            match search(&history.segment, &history.possible, false, STATE_BUDGET_PER_KEY) {
                Search::Found | Search::Ends(_) => {}
                Search::Violation => {
                    return LinCheck::Violation {
                        key: *key,
                        operations: history.segment.len(),
                        from_ns: history.segment[0].invoked,
                    };
                }
                Search::Budget(states) => {
                    inconclusive.get_or_insert(LinCheck::Inconclusive { key: *key, states });
                }
            }
        }
        inconclusive.unwrap_or(LinCheck::Linearizable)
    }
}

enum Search {
    /// Every value the segment may end with (closing searches).
    Ends(Vec<Cell>),
    /// One linearization exists (final searches).
    Found,
    Violation,
    Budget(usize),
}

/// Depth-first search over (linearized set, value) states from each of `starts`.
/// With `all_ends` every state reachable with all operations linearized is found and
/// its value collected (the segment must have no pending operation); without it the
/// search stops at the first state where every operation that returned is linearized.
/// Which operations a search state has linearized: one bit per operation of the
/// segment. Segments are short (operations on one key between quiet moments), so a
/// `u128` holds almost every one without touching the heap; longer ones use words.
trait Linearized: Clone + Eq + std::hash::Hash {
    fn none(ops: usize) -> Self;
    fn has(&self, i: usize) -> bool;
    fn with(&self, i: usize) -> Self;
}

impl Linearized for u128 {
    fn none(ops: usize) -> Self {
        debug_assert!(ops <= 128);
        0
    }
    fn has(&self, i: usize) -> bool {
        self >> i & 1 == 1
    }
    fn with(&self, i: usize) -> Self {
        self | 1 << i
    }
}

impl Linearized for Vec<u64> {
    fn none(ops: usize) -> Self {
        vec![0; ops.div_ceil(64)]
    }
    fn has(&self, i: usize) -> bool {
        self[i / 64] >> (i % 64) & 1 == 1
    }
    fn with(&self, i: usize) -> Self {
        let mut next = self.clone();
        next[i / 64] |= 1 << (i % 64);
        next
    }
}

fn search(ops: &[Recorded], starts: &[Cell], all_ends: bool, budget: usize) -> Search {
    if ops.len() <= 128 {
        search_with::<u128>(ops, starts, all_ends, budget)
    } else {
        search_with::<Vec<u64>>(ops, starts, all_ends, budget)
    }
}

fn search_with<B: Linearized>(ops: &[Recorded], starts: &[Cell], all_ends: bool, budget: usize) -> Search {
    let n = ops.len();
    let returns: Vec<Nanos> = ops.iter().map(|o| o.completed.as_ref().map_or(Nanos::MAX, |c| c.0)).collect();
    let must_linearize = ops.iter().filter(|o| o.completed.is_some()).count();
    let mut seen: HashSet<(B, Cell)> = HashSet::new();
    let mut stack: Vec<(B, Cell, usize)> = Vec::new();
    for start in starts {
        if seen.insert((B::none(n), *start)) {
            stack.push((B::none(n), *start, 0));
        }
    }
    let mut ends: Vec<Cell> = Vec::new();
    while let Some((bits, value, done)) = stack.pop() {
        if done == must_linearize {
            if !all_ends {
                return Search::Found;
            }
            ends.push(value);
            continue;
        }
        if seen.len() > budget {
            return Search::Budget(seen.len());
        }
        // Earliest response among operations not yet linearized: one invoked after it
        // cannot go next.
        let horizon = (0..n).filter(|i| !bits.has(*i)).map(|i| returns[i]).min().unwrap_or(Nanos::MAX);
        // Pushed in reverse so the lowest index is tried first, as a greedy search would.
        for i in (0..n).rev() {
            if bits.has(i) || ops[i].invoked > horizon {
                continue;
            }
            let mut next_value = value;
            let result = ops[i].step.apply(&mut next_value);
            let consistent = match &ops[i].completed {
                Some((_, observed)) => *observed == result,
                None => true,
            };
            if !consistent {
                continue;
            }
            let next_bits = bits.with(i);
            if seen.insert((next_bits.clone(), next_value)) {
                let next_done = done + usize::from(ops[i].completed.is_some());
                stack.push((next_bits, next_value, next_done));
            }
        }
    }
    if all_ends && !ends.is_empty() {
        ends.sort_unstable();
        ends.dedup();
        return Search::Ends(ends);
    }
    Search::Violation
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

    /// The search keeps its linearized set in a `u128` up to 128 operations and in
    /// words beyond: a segment of 130 chained, overlapping puts takes the second path,
    /// and still tells a read of the last value from a read of a long-overwritten one.
    #[test]
    fn a_segment_longer_than_128_operations_is_searched_too() {
        let chain: Vec<HistoryOp> = (0..130u64).map(|i| put(1, i as u8, 10 * i, 10 * i + 15)).collect();
        let mut good = chain.clone();
        good.push(get(2, Some(129), 5_000, 5_010));
        assert_eq!(check_history(&good), LinCheck::Linearizable);
        let mut stale = chain;
        stale.push(get(2, Some(3), 5_000, 5_010));
        assert!(
            matches!(check_history(&stale), LinCheck::Violation { from_ns: 5_000, .. }),
            "{:?}",
            check_history(&stale)
        );
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![put(1, 1, 0, 10), get(2, Some(1), 20, 30), put(1, 2, 40, 50), get(2, Some(2), 60, 70)];
        assert_eq!(check_history(&h), LinCheck::Linearizable);
    }

    #[test]
    fn stale_read_after_write_completed_is_not_linearizable() {
        // The put of 2 finished before the get started, yet the get saw 1. Each
        // operation is a segment of its own; the get's is the one nothing explains.
        let h = vec![put(1, 1, 0, 10), put(1, 2, 20, 30), get(2, Some(1), 40, 50)];
        assert_eq!(check_history(&h), LinCheck::Violation { key: 1, operations: 1, from_ns: 40 });
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
    fn an_operation_invoked_at_the_instant_another_returned_is_concurrent_with_it() {
        // The get may still go before the put: the key is not quiet at 10 ns, so no
        // segment ends there.
        let h = vec![put(1, 1, 0, 10), get(2, None, 10, 20)];
        assert_eq!(check_history(&h), LinCheck::Linearizable);
        let h = vec![put(1, 1, 0, 10), get(2, None, 11, 20)];
        assert!(matches!(check_history(&h), LinCheck::Violation { operations: 1, from_ns: 11, .. }));
    }

    #[test]
    fn values_left_by_concurrent_writes_carry_into_the_next_segment() {
        // Two overlapping puts never read apart: the key may hold either afterwards,
        // and a later read of either is fine, but not two reads seeing both in turn.
        for seen in [1, 2] {
            let h = vec![put(1, 1, 0, 10), put(3, 2, 5, 15), get(2, Some(seen), 30, 40)];
            assert_eq!(check_history(&h), LinCheck::Linearizable, "read {seen}");
        }
        let h = vec![put(1, 1, 0, 10), put(3, 2, 5, 15), get(2, Some(1), 30, 40), get(2, Some(2), 50, 60)];
        assert!(matches!(check_history(&h), LinCheck::Violation { from_ns: 50, .. }));
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
        assert_eq!(check_history(&h), LinCheck::Violation { key: 2, operations: 1, from_ns: 0 });
    }
}
