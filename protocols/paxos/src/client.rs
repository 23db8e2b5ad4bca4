//! The Multi-Paxos client: the suite's shared leader client ([`qlab_core::leader_client`]).
//! It sends to its leader hint, follows `NotLeader` redirects, backs off while a phase 1
//! is under way and retries with the same (client, seq); the replicated session table
//! applies a command once however many ballots proposed it.

pub use qlab_core::leader_client::{LeaderClient as PaxosClient, LeaderClientTimer as PaxosClientTimer};
