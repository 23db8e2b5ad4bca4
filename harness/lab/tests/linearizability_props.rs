//! Property tests of the linearizability checker against the KV model itself.

use proptest::prelude::*;
use qlab_core::{KvStore, Op, OpResult};
use qlab_lab::linearizability::{HistoryOp, LinCheck, check_history};
use std::collections::HashMap;

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u64..3;
    let value = (0u8..4).prop_map(|v| vec![v]);
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
