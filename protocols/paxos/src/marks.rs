//! Multi-Paxos's rare situations, counted by every run that reaches them ([`Mark`]):
//! the corners of phase 1 and recovery that a fault-free run never visits and whose
//! rules only a run that reaches them tests.

use qlab_core::Mark;

pub static PROMISE_CARRIES_ACCEPTED: Mark = Mark {
    name: "paxos.promise_carries_accepted",
    situation: "a promise carries values accepted under an earlier ballot",
};
pub static VALUE_ADOPTED_FROM_PROMISE: Mark = Mark {
    name: "paxos.value_adopted_from_promise",
    situation: "a new leader re-proposes a value it learned in phase 1, not yet known chosen",
};
pub static CONFLICTING_ACCEPTED_VALUES: Mark = Mark {
    name: "paxos.conflicting_accepted_values",
    situation: "promises carry different values for one slot: the highest ballot's wins",
};
pub static GAP_FILLED_WITH_NOOP: Mark =
    Mark { name: "paxos.gap_filled_with_noop", situation: "a new leader fills a slot no promise covers with a no-op" };
pub static CHECKPOINT_FROM_PROMISE: Mark =
    Mark { name: "paxos.checkpoint_from_promise", situation: "a candidate installs a checkpoint carried by a promise" };
pub static PREPARE_OR_ACCEPT_REFUSED: Mark = Mark {
    name: "paxos.refused_lower_ballot",
    situation: "an acceptor refuses a prepare or accept below its promise (a nack)",
};
pub static PREEMPTED: Mark =
    Mark { name: "paxos.preempted", situation: "a leader or candidate gives way to a higher ballot" };

pub static BATCH_HELD_FOR_PIPELINE: Mark = Mark {
    name: "paxos.batch_held_for_pipeline",
    situation: "adaptive batching holds commands back: the leader's pipeline of uncommitted batches is full",
};

pub static ALL: [&Mark; 8] = [
    &PROMISE_CARRIES_ACCEPTED,
    &VALUE_ADOPTED_FROM_PROMISE,
    &CONFLICTING_ACCEPTED_VALUES,
    &GAP_FILLED_WITH_NOOP,
    &CHECKPOINT_FROM_PROMISE,
    &PREPARE_OR_ACCEPT_REFUSED,
    &PREEMPTED,
    &BATCH_HELD_FOR_PIPELINE,
];
