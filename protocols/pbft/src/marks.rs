//! PBFT's rare situations, counted by every run that reaches them ([`Mark`]): the
//! corners of view changes and recovery that a fault-free run never visits and whose
//! rules only a run that reaches them tests.

use qlab_core::Mark;

pub static VIEW_CHANGE_CARRIES_CERTIFICATE: Mark = Mark {
    name: "pbft.view_change_carries_certificate",
    situation: "a VIEW-CHANGE carries a prepared certificate into the next view",
};
pub static NEW_VIEW_CONFLICTING_CERTIFICATES: Mark = Mark {
    name: "pbft.new_view_conflicting_certificates",
    situation: "a new primary's V holds certificates of different requests for one sequence number",
};
pub static NEW_VIEW_NULL_REQUEST: Mark = Mark {
    name: "pbft.new_view_null_request",
    situation: "a NEW-VIEW fills a sequence number no certificate covers with a null request",
};
pub static PREPARED_OVER_LOWER_VIEW: Mark = Mark {
    name: "pbft.prepared_over_lower_view",
    situation: "a replica prepares a sequence number it had prepared in a lower view with another request",
};
pub static JOINED_ON_F_PLUS_ONE: Mark = Mark {
    name: "pbft.joined_view_change_on_f_plus_1",
    situation: "a replica joins a view change because f + 1 others asked for it, before its own timer",
};
pub static JOINED_LATER_VIEW: Mark = Mark {
    name: "pbft.joined_later_view",
    situation: "a replica learns from f + 1 replicas' traffic that the cluster moved to a later view",
};
pub static NEW_VIEW_FETCHED: Mark = Mark {
    name: "pbft.new_view_fetched",
    situation: "a replica asks the new primary for a NEW-VIEW that went past it",
};
pub static NEW_VIEW_REJECTED: Mark =
    Mark { name: "pbft.new_view_rejected", situation: "a backup refuses a NEW-VIEW whose O is not what its V implies" };
pub static STATE_TRANSFERRED: Mark = Mark {
    name: "pbft.state_transferred",
    situation: "a replica behind a stable checkpoint installs the certified state",
};
pub static EXECUTED_BATCH_REPROPOSED: Mark = Mark {
    name: "pbft.executed_batch_reproposed",
    situation: "a NEW-VIEW re-proposes a batch this replica executed already",
};

pub static BATCH_HELD_FOR_PIPELINE: Mark = Mark {
    name: "pbft.batch_held_for_pipeline",
    situation: "adaptive batching holds commands back: the primary's pipeline of uncommitted batches is full",
};

pub static ALL: [&Mark; 11] = [
    &VIEW_CHANGE_CARRIES_CERTIFICATE,
    &NEW_VIEW_CONFLICTING_CERTIFICATES,
    &NEW_VIEW_NULL_REQUEST,
    &PREPARED_OVER_LOWER_VIEW,
    &JOINED_ON_F_PLUS_ONE,
    &JOINED_LATER_VIEW,
    &NEW_VIEW_FETCHED,
    &NEW_VIEW_REJECTED,
    &STATE_TRANSFERRED,
    &EXECUTED_BATCH_REPROPOSED,
    &BATCH_HELD_FOR_PIPELINE,
];
