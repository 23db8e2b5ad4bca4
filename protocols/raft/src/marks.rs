//! Raft's rare situations, counted by every run that reaches them ([`Mark`]): the
//! corners of elections and log repair that a fault-free run never visits and whose
//! rules only a run that reaches them tests.

use qlab_core::Mark;

pub static STALE_LEADER_ANSWERED: Mark = Mark {
    name: "raft.stale_leader_answered",
    situation: "a leader's message from an older term is answered with the newer term (§5.1)",
};
pub static STALE_RESPONSE_IGNORED: Mark = Mark {
    name: "raft.stale_response_ignored",
    situation: "a response from an older term arrives and answers nothing asked now",
};
pub static STEPPED_DOWN_HIGHER_TERM: Mark = Mark {
    name: "raft.stepped_down_higher_term",
    situation: "a leader or candidate steps down on seeing a higher term",
};
pub static PREV_LOG_MISMATCH: Mark = Mark {
    name: "raft.prev_log_mismatch",
    situation: "a follower refuses AppendEntries whose prevLogTerm differs from its own (§5.3)",
};
pub static FOLLOWER_LOG_TRUNCATED: Mark = Mark {
    name: "raft.follower_log_truncated",
    situation: "a follower deletes conflicting entries of its log (§5.3)",
};
pub static VOTE_REFUSED_LOG_BEHIND: Mark = Mark {
    name: "raft.vote_refused_log_behind",
    situation: "a vote is refused because the candidate's log is not up to date (§5.4.1)",
};
pub static OLD_TERM_COMMITTED_INDIRECTLY: Mark = Mark {
    name: "raft.old_term_committed_indirectly",
    situation: "a leader commits entries of earlier terms by committing one of its own term (§5.4.2)",
};
pub static SNAPSHOT_DURING_ELECTION: Mark = Mark {
    name: "raft.snapshot_during_election",
    situation: "a candidate receives a snapshot from the leader of its term",
};
pub static CHECK_QUORUM_STEP_DOWN: Mark = Mark {
    name: "raft.check_quorum_step_down",
    situation: "a leader that has not heard from a majority steps down (check-quorum)",
};

pub static BATCH_HELD_FOR_PIPELINE: Mark = Mark {
    name: "raft.batch_held_for_pipeline",
    situation: "adaptive batching holds commands back: the leader's pipeline of uncommitted batches is full",
};

pub static ALL: [&Mark; 10] = [
    &STALE_LEADER_ANSWERED,
    &STALE_RESPONSE_IGNORED,
    &STEPPED_DOWN_HIGHER_TERM,
    &PREV_LOG_MISMATCH,
    &FOLLOWER_LOG_TRUNCATED,
    &VOTE_REFUSED_LOG_BEHIND,
    &OLD_TERM_COMMITTED_INDIRECTLY,
    &SNAPSHOT_DURING_ELECTION,
    &CHECK_QUORUM_STEP_DOWN,
    &BATCH_HELD_FOR_PIPELINE,
];
