//! The experiment kinds' trial rows, by kind: the one place the run asks which row type
//! (and so which `trials.csv` header) a kind writes. Each row type lives in its kind's
//! module; its serde field names are the header, point columns first, then `trial`.

use crate::config::Kind;
use crate::results::header_of;

/// The `trials.csv` header of `kind`: its row type's field names, in order.
pub fn trial_columns(kind: Kind) -> Vec<String> {
    match kind {
        Kind::Election => header_of::<crate::election::ElectionRow>(),
        Kind::Throughput => header_of::<crate::throughput::ThroughputRow>(),
        Kind::Attack => header_of::<crate::attack::AttackRow>(),
        Kind::Availability => header_of::<crate::availability::AvailabilityRow>(),
        Kind::Reads => header_of::<crate::reads::ReadsRow>(),
        Kind::Counterexample => header_of::<crate::counterexample::CaseRow>(),
        Kind::Disruption => header_of::<crate::disruption::DisruptionRow>(),
    }
}

/// The columns that describe a point of `kind`: those before `trial`.
pub fn point_columns(kind: Kind) -> Vec<String> {
    trial_columns(kind).into_iter().take_while(|c| c != "trial").collect()
}

/// The kind whose rows have these point columns (the columns before `trial` of a
/// `trials.csv`): how `qlab plot` knows a run whose `meta.json` is gone.
pub fn of_point_columns(columns: &[&str]) -> Option<Kind> {
    Kind::ALL.iter().copied().find(|kind| point_columns(*kind) == columns)
}
