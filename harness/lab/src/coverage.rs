//! Coverage marks (issue 42): each protocol names its rare situations
//! ([`qlab_core::Mark`]) and every simulated run counts how often it reached each. A
//! mark that no seed of a chaos sweep reaches is a gap in that sweep's fault mix: the
//! rule behind it goes untested there, however many seeds pass. The gaps of the CI's
//! sweeps are listed here with the reason, and the sweeps fail when the list is wrong
//! either way: a mark newly reached (the list is stale) or newly missed (a change to the
//! fault mix or the protocol stopped testing a rule).

use crate::chaos::SweepTotals;
use qlab_core::Mark;

/// A mark a sweep does not reach, and why.
pub struct Gap {
    pub mark: &'static str,
    pub why: &'static str,
}

/// Whether `totals` misses exactly the marks of `expected`; otherwise what changed.
pub fn check_gaps(totals: &SweepTotals, expected: &[Gap]) -> Result<(), String> {
    let gaps = totals.gaps();
    let newly_reached: Vec<&str> = expected.iter().map(|g| g.mark).filter(|m| !gaps.contains(m)).collect();
    let newly_missed: Vec<&str> = gaps.iter().copied().filter(|m| !expected.iter().any(|g| g.mark == *m)).collect();
    if newly_reached.is_empty() && newly_missed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "coverage changed: now reached {newly_reached:?} (remove from the gap list), now never reached \
         {newly_missed:?} (a rule this sweep no longer tests)\n{}",
        totals.coverage_report()
    ))
}

/// What `raft_chaos` (1,000 seeds, 3 replicas) never reaches.
pub const RAFT_CHAOS_GAPS: &[Gap] = &[
    Gap {
        mark: "raft.snapshot_during_election",
        why: "it needs a candidate that has fallen behind a snapshot in the term its leader won; neither this \
              sweep (no snapshots) nor raft_compaction's (snapshots every 2–25 entries) has one",
    },
    PIPELINE_GAP_RAFT,
];

/// Chaos runs are unbatched where no batch delay is drawn (so recorded seeds replay);
/// the `batching_chaos` sweep (adaptive, 1 or 2 batches in flight) reaches the marks.
const PIPELINE_GAP_RAFT: Gap = Gap {
    mark: "raft.batch_held_for_pipeline",
    why: "chaos seeds run without adaptive batching, so recorded seeds replay; batching_chaos's sweep has it",
};

/// What `paxos_chaos` (1,000 seeds, 3 replicas) never reaches.
pub const PAXOS_CHAOS_GAPS: &[Gap] = &[
    Gap {
        mark: "paxos.checkpoint_from_promise",
        why: "the chaos runs take no checkpoints; paxos_compaction's sweep does",
    },
    Gap {
        mark: "paxos.batch_held_for_pipeline",
        why: "chaos seeds run without adaptive batching, so recorded seeds replay; batching_chaos's sweep has it",
    },
];

/// What `pbft_chaos` (1,000 seeds, 4 replicas) never reaches.
pub const PBFT_CHAOS_GAPS: &[Gap] = &[
    Gap {
        mark: "pbft.batch_held_for_pipeline",
        why: "chaos seeds run without adaptive batching, so recorded seeds replay; batching_chaos's sweep has it",
    },
    Gap {
        mark: "pbft.new_view_conflicting_certificates",
        why: "it needs one sequence number prepared in two views with different requests, which no seed \
              aligns; the explorer's guided walks with twins do (the NEW-VIEW mutant hides here)",
    },
    Gap {
        mark: "pbft.new_view_rejected",
        why: "only a faulty primary sends a NEW-VIEW its V does not imply; the chaos runs have no faulty replica",
    },
];

/// Each protocol's marks with the sweep that counts them and the gaps it leaves.
fn protocols() -> [(&'static str, &'static [&'static Mark], &'static str, &'static [Gap]); 3] {
    [
        ("Raft", &qlab_raft::marks::ALL, "raft_chaos", RAFT_CHAOS_GAPS),
        ("Multi-Paxos", &qlab_paxos::marks::ALL, "paxos_chaos", PAXOS_CHAOS_GAPS),
        ("PBFT", &qlab_pbft::marks::ALL, "pbft_chaos", PBFT_CHAOS_GAPS),
    ]
}

/// The table of every mark in docs/model-checking.md: its situation, and whether the
/// CI's chaos sweep of its protocol reaches it (the sweeps assert the gap lists).
pub fn marks_table() -> String {
    let mut table = String::from("| Mark | Situation | CI chaos sweep |\n|---|---|---|\n");
    for (protocol, marks, sweep, gaps) in protocols() {
        for mark in marks {
            let reached = match gaps.iter().find(|gap| gap.mark == mark.name) {
                Some(gap) => format!("**not reached** by `{sweep}`: {}", gap.why),
                None => format!("reached by `{sweep}`"),
            };
            table.push_str(&format!("| `{}` ({protocol}) | {} | {reached} |\n", mark.name, mark.situation));
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/model-checking.md shows [`marks_table`] between its markers; `QLAB_BLESS=1`
    /// writes it there.
    #[test]
    fn the_docs_list_every_mark_and_every_gap() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/model-checking.md");
        let docs = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- coverage-marks:begin -->\n", "<!-- coverage-marks:end -->");
        let start = docs.find(begin).expect("the begin marker") + begin.len();
        let stop = docs.find(end).expect("the end marker");
        let table = marks_table();
        if std::env::var_os("QLAB_BLESS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &docs[..start], &docs[stop..])).unwrap();
            return;
        }
        assert_eq!(&docs[start..stop], table, "QLAB_BLESS=1 rewrites the table");
    }

    #[test]
    fn every_gap_names_a_mark_of_its_protocol() {
        for (protocol, marks, _, gaps) in protocols() {
            for gap in gaps {
                assert!(marks.iter().any(|m| m.name == gap.mark), "{protocol}: {} is no mark", gap.mark);
            }
        }
    }
}
