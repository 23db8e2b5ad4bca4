//! # qlab-net: the building blocks of real mode
//!
//! Real mode runs each replica as its own OS process and connects them over QUIC. This
//! crate holds the parts that must be right before any packet flies:
//!
//! - [`frame`]: length-prefixed frames on a stream, with a size limit enforced from the
//!   header and decoding failures returned as values (a malformed frame from a peer is
//!   counted and dropped, never a panic);
//! - [`wal`]: the write-ahead log behind disk storage — one fsync per protocol step, so
//!   a step's records are durable before its messages leave, and recovery that cuts a
//!   torn tail but refuses (naming file and offset) to guess past corruption;
//! - [`tls`], [`runtime`], [`harness`], [`drive`]: pinned mutual TLS over quinn, the node
//!   runtime, the harness's links to the nodes and its client driver;
//! - [`cluster`] and [`netns`]: cluster files, local clusters of processes, and network
//!   namespaces (with optional `tc netem`) standing in for separate hosts.

pub mod cluster;
pub mod drive;
pub mod frame;
pub mod harness;
pub mod netns;
pub mod runtime;
pub mod tls;
pub mod wal;
