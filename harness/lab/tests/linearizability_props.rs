//! Property tests of the linearizability checker against the KV model itself.

use proptest::prelude::*;
use qlab_check::linearizability::{HistoryOp, LinCheck, check_history};
use qlab_core::{KvStore, Op, OpResult};
use std::collections::HashMap;

fn op_strategy() -> impl Strategy<Value = Op> {
    ops_over(3, 4)
}

/// Puts, gets and compare-and-swaps on keys `0..keys` with one-byte values `0..values`.
fn ops_over(keys: u64, values: u8) -> impl Strategy<Value = Op> {
    let key = 0u64..keys;
    let value = (0u8..values).prop_map(|v| vec![v]);
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(key, value)| Op::Put { key, value }),
        key.clone().prop_map(|key| Op::Get { key }),
        (key, proptest::option::of(value.clone()), value).prop_map(|(key, expected, new)| Op::Cas {
            key,
            expected,
            new
        }),
    ]
}

/// Run `ops` one after another on the model, with random overlap allowed only
/// *within* the slack each op gets around its linearization point.
fn sequential_history(ops: &[Op], slack: &[u64]) -> Vec<HistoryOp> {
    let mut data = HashMap::new();
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let point = 100 * (i as u64 + 1);
            let result = KvStore::execute(&mut data, op);
            HistoryOp {
                client: i as u64 % 4,
                op: op.clone(),
                invoked: point - slack[i].min(99),
                completed: Some((point + slack[i].min(99), result)),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the ops, a history taken from one model run (each op's interval
    /// around its own point, intervals possibly overlapping neighbours) is linearizable.
    #[test]
    fn histories_of_a_single_copy_are_linearizable(
        ops in proptest::collection::vec(op_strategy(), 1..40),
        slack in proptest::collection::vec(0u64..150, 40),
    ) {
        let history = sequential_history(&ops, &slack);
        prop_assert_eq!(check_history(&history), LinCheck::Linearizable);
    }

    /// A read that returns a value nobody ever wrote can never be linearized.
    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        ops in proptest::collection::vec(op_strategy(), 1..30),
        slack in proptest::collection::vec(0u64..60, 30),
        victim in 0usize..30,
    ) {
        let mut history = sequential_history(&ops, &slack);
        let index = victim % history.len();
        let key = history[index].op.key();
        let done = history[index].completed.as_ref().unwrap().0;
        history[index] = HistoryOp {
            client: 9,
            op: Op::Get { key },
            invoked: history[index].invoked,
            completed: Some((done, OpResult::Value(Some(vec![200])))),
        };
        let verdict = check_history(&history);
        prop_assert!(matches!(verdict, LinCheck::Violation { .. }), "got {:?}", verdict);
    }
}

/// The whole-history definition, by brute force: some order of the operations that
/// respects real time (an operation that returned strictly before another was invoked
/// goes first), taking every operation that returned and any subset of those that did
/// not, reproduces every result on one copy of the store.
fn linearizable_by_brute_force(history: &[HistoryOp]) -> bool {
    fn extend(history: &[HistoryOp], placed: &mut Vec<bool>, data: &HashMap<u64, Vec<u8>>) -> bool {
        let remaining_returned = history.iter().zip(placed.iter()).any(|(op, p)| !p && op.completed.is_some());
        if !remaining_returned {
            return true;
        }
        for i in 0..history.len() {
            if placed[i] {
                continue;
            }
            // Every unplaced operation that returned before i was invoked must go first.
            let blocked = history
                .iter()
                .zip(placed.iter())
                .any(|(other, p)| !p && other.completed.as_ref().is_some_and(|(done, _)| *done < history[i].invoked));
            if blocked {
                continue;
            }
            let mut next = data.clone();
            let result = KvStore::execute(&mut next, &history[i].op);
            if history[i].completed.as_ref().is_some_and(|(_, seen)| *seen != result) {
                continue;
            }
            placed[i] = true;
            let found = extend(history, placed, &next);
            placed[i] = false;
            if found {
                return true;
            }
        }
        false
    }
    extend(history, &mut vec![false; history.len()], &HashMap::new())
}

fn result_strategy() -> impl Strategy<Value = OpResult> {
    let value = proptest::option::of((0u8..3).prop_map(|v| vec![v]));
    prop_oneof![
        Just(OpResult::Ok),
        value.clone().prop_map(OpResult::Value),
        (any::<bool>(), value).prop_map(|(swapped, found)| OpResult::Cas { swapped, found }),
    ]
}

/// Small histories with made-up results and overlapping intervals on two keys: half of
/// them have results taken from a run of the model, the rest anything.
fn small_history() -> impl Strategy<Value = Vec<HistoryOp>> {
    let one = (ops_over(2, 3), 0u64..12, 0u64..6, proptest::option::of(result_strategy()), 0u8..8);
    (proptest::collection::vec(one, 1..8), any::<bool>()).prop_map(|(ops, from_model)| {
        let mut data = HashMap::new();
        ops.into_iter()
            .enumerate()
            .map(|(i, (op, start, length, made_up, pending))| {
                let modelled = KvStore::execute(&mut data, &op);
                let result = if from_model { Some(modelled) } else { made_up };
                HistoryOp {
                    client: i as u64,
                    op,
                    invoked: start,
                    // One in eight never returns (when the run ended first).
                    completed: if pending == 0 { None } else { result.map(|r| (start + length, r)) },
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// The segmented checker (cut wherever a key goes quiet, the values a segment may
    /// leave carried into the next) agrees with the definition on every history.
    #[test]
    fn segmented_checker_agrees_with_brute_force(history in small_history()) {
        let expected = linearizable_by_brute_force(&history);
        let verdict = check_history(&history);
        prop_assert_eq!(verdict == LinCheck::Linearizable, expected, "{:?} on {:#?}", verdict, history);
    }
}

/// A long history on a few keys keeps a handful of operations in the checker, and a
/// stale read a million operations in is still found.
#[test]
fn streaming_checker_memory_stays_bounded_and_finds_a_late_stale_read() {
    use qlab_check::linearizability::HistoryChecker;
    let mut checker = HistoryChecker::new();
    let mut most_held = 0;
    let clients = 8u64;
    let mut time = 0u64;
    for round in 0..125_000u64 {
        // Eight clients at once, each on its own key of 100, then a read of key 0.
        let mut open = Vec::new();
        for client in 0..clients {
            let key = (round * clients + client) % 100;
            let value = [round.to_le_bytes(), client.to_le_bytes()].concat();
            open.push((checker.invoke(&Op::Put { key, value }, time + client), time + 20 + client));
        }
        for (handle, done) in open {
            checker.complete(handle, done, &OpResult::Ok);
        }
        time += 100;
        most_held = most_held.max(checker.operations_held());
    }
    assert!(most_held <= 200, "held {most_held} operations at once");
    assert_eq!(checker.operations, 1_000_000);
    // Operation i wrote key i % 100, so key 0's last write was operation 999,900 and
    // operation 999,800's value is stale.
    let stale_op = 999_800u64;
    let stale = [(stale_op / clients).to_le_bytes(), (stale_op % clients).to_le_bytes()].concat();
    let read = checker.invoke(&Op::Get { key: 0 }, time);
    checker.complete(read, time + 10, &OpResult::Value(Some(stale)));
    assert!(matches!(checker.finish(), LinCheck::Violation { key: 0, operations: 1, .. }));
}
