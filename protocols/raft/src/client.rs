//! The Raft client (§8) is the suite's shared leader client: it finds the leader,
//! follows redirects and retries with the same (client, seq) until the request is
//! applied. See [`qlab_core::leader_client`].

pub use qlab_core::leader_client::{LeaderClient as RaftClient, LeaderClientTimer as RaftClientTimer};
