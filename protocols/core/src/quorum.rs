//! Quorum arithmetic, in one place for every protocol.
//!
//! Two kinds of quorum appear in quorumlab:
//!
//! - **Crash-fault majorities** (Raft §5.2, Paxos). Out of `n` nodes any two sets of
//!   `n / 2 + 1` share a node, so a value stored on one majority is seen by every later
//!   majority: a vote, a commit and a read confirmation each need one.
//! - **Byzantine quorums** (PBFT §4.2). With `n = 3f + 1` replicas, any two sets of
//!   `2f + 1` share `f + 1`, so at least one honest replica is in both.
//!
//! The commit and read-confirmation rules ask the same question of per-node progress
//! ("the highest index stored on a majority", "the latest heartbeat round a majority
//! answered"): the `q`-th largest acknowledgement. [`quorum_value`] answers it; every
//! leader that counts acknowledgements calls it instead of sorting its own copy.

/// The smallest number of nodes out of `nodes` that is a strict majority.
pub const fn majority(nodes: u32) -> u32 {
    nodes / 2 + 1
}

/// The number of replicas out of `3f + 1` whose agreement survives `f` Byzantine ones
/// (PBFT's prepared and committed certificates, checkpoints and view changes).
pub const fn byzantine_quorum(faults_tolerated: u32) -> u32 {
    2 * faults_tolerated + 1
}

/// The largest value that at least `quorum` of `acknowledgements` reach: the `quorum`-th
/// largest. `None` when fewer than `quorum` nodes acknowledged anything, or `quorum` is 0.
///
/// With match indices this is the highest index stored on a quorum (Raft §5.3); with
/// heartbeat rounds, the latest round a quorum answered (read index, §6.4).
pub fn quorum_value<T: Ord + Copy>(acknowledgements: impl IntoIterator<Item = T>, quorum: u32) -> Option<T> {
    let mut values: Vec<T> = acknowledgements.into_iter().collect();
    let position = (quorum as usize).checked_sub(1)?;
    if position >= values.len() {
        return None;
    }
    // Only the quorum-th largest is needed, not the whole order.
    let (_, value, _) = values.select_nth_unstable_by(position, |a, b| b.cmp(a));
    Some(*value)
}

/// Whether `count` acknowledgements make a quorum of size `quorum`.
pub const fn reached(count: usize, quorum: u32) -> bool {
    count >= quorum as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_odd_and_even_clusters() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    /// Any two majorities of n nodes share a node: 2 * majority(n) > n.
    #[test]
    fn two_majorities_intersect() {
        for n in 1..=64 {
            assert!(2 * majority(n) > n, "n = {n}");
            assert!(2 * (majority(n) - 1) <= n, "majority({n}) is not the smallest");
        }
    }

    /// PBFT §4.2: two quorums of 2f + 1 out of 3f + 1 share f + 1, at least one honest.
    #[test]
    fn two_byzantine_quorums_share_an_honest_replica() {
        for f in 0..=20 {
            let n = 3 * f + 1;
            let shared = 2 * byzantine_quorum(f) - n;
            assert_eq!(shared, f + 1, "f = {f}");
        }
    }

    /// Raft Figure 2's commit example: match indices 5, 5, 4, 2, 1 commit index 4 in a
    /// cluster of five (three nodes store it).
    #[test]
    fn quorum_value_is_the_highest_value_a_quorum_reaches() {
        assert_eq!(quorum_value([5u64, 1, 4, 2, 5], majority(5)), Some(4));
        assert_eq!(quorum_value([7u64], majority(1)), Some(7));
        assert_eq!(quorum_value([3u64, 3, 3, 3], majority(4)), Some(3));
        assert_eq!(quorum_value([9u64, 0, 0, 0], majority(4)), Some(0));
    }

    #[test]
    fn quorum_value_needs_enough_acknowledgements() {
        assert_eq!(quorum_value([5u64, 4], 3), None);
        assert_eq!(quorum_value([5u64, 4], 0), None);
        assert_eq!(quorum_value(Vec::<u64>::new(), 1), None);
    }

    /// Against the definition: the result is reached by at least `quorum` values and no
    /// larger value is.
    #[test]
    fn quorum_value_matches_its_definition_on_every_small_input() {
        let mut state = 0x2545_f491_u64;
        for _ in 0..2_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (state >> 60) as usize + 1;
            let values: Vec<u64> = (0..len).map(|i| (state >> (i * 3)) & 7).collect();
            for quorum in 1..=len as u32 {
                let got = quorum_value(values.iter().copied(), quorum).unwrap();
                let at_least = |v: u64| values.iter().filter(|x| **x >= v).count();
                assert!(at_least(got) >= quorum as usize, "{values:?} q={quorum}");
                assert!(at_least(got + 1) < quorum as usize, "{values:?} q={quorum}");
            }
        }
    }

    #[test]
    fn reached_counts_inclusively() {
        assert!(reached(3, 3));
        assert!(!reached(2, 3));
    }
}
