//! Renaming replicas: what a state-space search needs for *symmetry reduction*.
//!
//! In a protocol whose rules never tell replicas apart by name (no rule compares two
//! node ids, none favours a replica for its number), renaming every replica of a
//! cluster's state gives a state that behaves exactly the same, renamed: the same runs
//! exist from both, the same invariants break, after the same number of steps. A search
//! may then explore only one state of each such class (Ip and Dill, "Better
//! verification through symmetry", 1996), up to `n!` fewer for `n` replicas.
//!
//! Raft is such a protocol. Multi-Paxos is not: a ballot is a round and the proposer's
//! id, and two proposers' ballots of one round are ordered by their ids. PBFT is not
//! either: the primary of view `v` is replica `v mod n`, and every message carries its
//! sender's signature. A protocol says which it is by offering a [`Symmetry`] or not.

use crate::{NodeId, Protocol};

/// A renaming of a cluster's replicas: replica `i` is called `names[i]`. Always a
/// permutation of `0..nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renaming {
    names: Vec<NodeId>,
}

impl Renaming {
    /// Every renaming of `nodes` replicas, the identity first (`nodes!` of them).
    pub fn all(nodes: u32) -> Vec<Renaming> {
        fn extend(prefix: &mut Vec<NodeId>, nodes: u32, out: &mut Vec<Renaming>) {
            if prefix.len() == nodes as usize {
                out.push(Renaming { names: prefix.clone() });
                return;
            }
            for node in (0..nodes).map(NodeId) {
                if !prefix.contains(&node) {
                    prefix.push(node);
                    extend(prefix, nodes, out);
                    prefix.pop();
                }
            }
        }
        let mut out = Vec::new();
        extend(&mut Vec::new(), nodes, &mut out);
        out
    }

    /// Replicas in the cluster renamed.
    pub fn nodes(&self) -> u32 {
        self.names.len() as u32
    }

    /// The new name of replica `node`.
    pub fn of(&self, node: NodeId) -> NodeId {
        self.names[node.0 as usize]
    }

    /// A table indexed by replica (`per_node[i]` is about replica `i`), reindexed by the
    /// new names. A table shorter than the cluster (grown on demand) is padded with
    /// `T::default()` first.
    pub fn table<T: Clone + Default>(&self, per_node: &[T]) -> Vec<T> {
        if per_node.is_empty() {
            return Vec::new();
        }
        let mut out = vec![T::default(); self.names.len().max(per_node.len())];
        for (i, value) in per_node.iter().enumerate() {
            out[self.of(NodeId(i as u32)).0 as usize] = value.clone();
        }
        out
    }
}

/// How to rename each part of a protocol's state: its replicas, what they persist and
/// what they send. Function pointers, so a search can hold one without knowing the type
/// implements anything more.
pub struct Symmetry<P: Protocol> {
    pub replica: fn(&P, &Renaming) -> P,
    pub record: fn(&P::Record, &Renaming) -> P::Record,
    pub message: fn(&P::Message, &Renaming) -> P::Message,
}

// By hand: a derive would ask `P: Clone`, which function pointers do not need.
impl<P: Protocol> Clone for Symmetry<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Protocol> Copy for Symmetry<P> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permutation_once_identity_first() {
        let all = Renaming::all(3);
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].names, vec![NodeId(0), NodeId(1), NodeId(2)]);
        for (i, a) in all.iter().enumerate() {
            let mut names = a.names.clone();
            names.sort();
            assert_eq!(names, vec![NodeId(0), NodeId(1), NodeId(2)], "{a:?} is not a permutation");
            assert!(!all[..i].contains(a), "{a:?} listed twice");
        }
        assert_eq!(Renaming::all(4).len(), 24);
    }

    #[test]
    fn a_table_moves_with_its_replicas() {
        let swap = Renaming { names: vec![NodeId(1), NodeId(0), NodeId(2)] };
        assert_eq!(swap.table(&[10, 11, 12]), vec![11, 10, 12]);
        // Grown on demand: padded to the cluster, entries not yet there the default.
        assert_eq!(swap.table(&[Some(5)]), vec![None, Some(5), None]);
        assert_eq!(swap.table::<u8>(&[]), Vec::<u8>::new());
    }
}
