//! The cases of the `counterexample` kind, as experiment files name them: which rule
//! each switches off or which set-up it builds, and what showing means. Kept apart from
//! the runner ([`crate::counterexample`]) so that the experiment-file types can name a
//! case without importing the kinds that run one.

use qlab_core::reads::ReadMode;
use qlab_raft::RaftAblations;
use serde::{Deserialize, Serialize};

/// The cases, as experiment files name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    MultipleVotesPerTerm,
    NoUpToDateCheck,
    NoPrevLogCheck,
    FixedTimeout,
    RandomizedTimeout,
    TwoNodes,
    FourVsThree,
    SixVsFive,
    FollowerStaleReads,
    MinorityLeaderRollback,
    FsyncLies,
    FsyncHonest,
}

impl Case {
    pub const ALL: &'static [Case] = &[
        Case::MultipleVotesPerTerm,
        Case::NoUpToDateCheck,
        Case::NoPrevLogCheck,
        Case::FixedTimeout,
        Case::RandomizedTimeout,
        Case::TwoNodes,
        Case::FourVsThree,
        Case::SixVsFive,
        Case::FollowerStaleReads,
        Case::MinorityLeaderRollback,
        Case::FsyncLies,
        Case::FsyncHonest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::MultipleVotesPerTerm => "multiple-votes-per-term",
            Case::NoUpToDateCheck => "no-up-to-date-check",
            Case::NoPrevLogCheck => "no-prev-log-check",
            Case::FixedTimeout => "fixed-timeout",
            Case::RandomizedTimeout => "randomized-timeout",
            Case::TwoNodes => "two-nodes",
            Case::FourVsThree => "four-vs-three",
            Case::SixVsFive => "six-vs-five",
            Case::FollowerStaleReads => "follower-stale-reads",
            Case::MinorityLeaderRollback => "minority-leader-rollback",
            Case::FsyncLies => "fsync-lies",
            Case::FsyncHonest => "fsync-honest",
        }
    }

    /// What the case sets up and what showing means, for the summary and docs/protocols.md.
    pub fn description(self) -> &'static str {
        match self {
            Case::MultipleVotesPerTerm => {
                "Raft, 3 nodes, chaos; a server votes for every candidate of a term (no §5.2 rule): split brain, two leaders in one term"
            }
            Case::NoUpToDateCheck => {
                "Raft, 3 nodes, chaos; votes without the §5.4.1 log comparison: a leader lacking committed entries overwrites them"
            }
            Case::NoPrevLogCheck => {
                "Raft, 3 nodes, chaos; appends without the §5.3 prevLog check: logs diverge under matching indices"
            }
            Case::FixedTimeout => {
                "Raft, 5 nodes, leader crashed, every timeout 150 ms (no randomization): shows when an election needs more than one term (split votes)"
            }
            Case::RandomizedTimeout => {
                "the same with timeouts drawn from 150-300 ms (the contrast): shows when an election needs more than one term"
            }
            Case::TwoNodes => {
                "Raft, 2 nodes, one crashes for good: shows when no leader a majority follows is left (a majority of 2 is 2)"
            }
            Case::FourVsThree => {
                "Raft, 4 nodes: shows when a leader survives 1 failure but none survives 2, the tolerance of 3 nodes"
            }
            Case::SixVsFive => {
                "Raft, 6 nodes: shows when a leader survives 2 failures but none survives 3, the tolerance of 5 nodes"
            }
            Case::FollowerStaleReads => {
                "Raft, 3 nodes, chaos; reads answered by any replica from its own state: a history that is not linearizable"
            }
            Case::MinorityLeaderRollback => {
                "Raft, 5 nodes; the leader and one follower cut off while a client writes to it, healed after the majority moved on: shows when the old leader steps down and drops its uncommitted entries (every checker must still pass)"
            }
            Case::FsyncLies => {
                "Raft, 3 nodes, chaos; every crash loses the last 1-3 records the disk had acknowledged (an fsync that lies, Alagappan et al., FAST 2018): a vote cast twice in a term, or an acknowledged entry lost from a majority"
            }
            Case::FsyncHonest => {
                "the same chaos with honest disks (the contrast): slow writes, stalls, torn and damaged records, but nothing acknowledged is lost; shows if anything breaks"
            }
        }
    }

    /// Whether trials of this case are chaos runs whose fault schedule can be shrunk.
    pub fn shrinkable(self) -> bool {
        self.chaos().is_some()
    }

    /// The ablation and read mode of a chaos-based case.
    pub(crate) fn chaos(self) -> Option<(RaftAblations, ReadMode)> {
        let only = |name| RaftAblations::only(name).expect("a known ablation");
        match self {
            Case::MultipleVotesPerTerm => Some((only("multiple_votes_per_term"), ReadMode::Log)),
            Case::NoUpToDateCheck => Some((only("vote_without_log_check"), ReadMode::Log)),
            Case::NoPrevLogCheck => Some((only("skip_prev_log_check"), ReadMode::Log)),
            Case::FollowerStaleReads => Some((RaftAblations::default(), ReadMode::FollowerStale)),
            Case::FsyncLies | Case::FsyncHonest => Some((RaftAblations::default(), ReadMode::Log)),
            _ => None,
        }
    }

    /// What the disks of a chaos-based case do.
    pub(crate) fn disk(self) -> crate::chaos::DiskFaults {
        match self {
            Case::FsyncLies => crate::chaos::DiskFaults::LYING,
            Case::FsyncHonest => crate::chaos::DiskFaults::HONEST,
            _ => crate::chaos::DiskFaults::NONE,
        }
    }
}
