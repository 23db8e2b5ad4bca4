//! The disk model against the driver contract: a step's records are durable before its
//! messages leave, a node's outputs leave in the order its steps made them, a crash
//! loses the writes in progress and what waited on them, and broadcast rounds measure
//! network plus the recipients' disks.
//!
//! The protocol here is a toy so every time is known exactly: node 0 persists a
//! record and pings everyone at start; a node that is pinged persists a record and
//! pongs; 1 ms after starting node 0 sends `Late` without persisting anything. Its
//! config is how many records node 0 persists at each start (one batch).

use qlab_core::leader_client::LeaderClient;
use qlab_core::{Context, NodeId, Protocol, Request, ms};
use qlab_sim::{BroadcastRound, DiskFault, Latency, NetworkConfig, Sim};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
enum Msg {
    Ping,
    Pong,
    Late,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct AfterStart;

struct Toy {
    id: NodeId,
    per_start: u32,
    records: u32,
    /// (from, message kind, local time in ms) of everything received.
    received: Vec<(NodeId, &'static str, u64)>,
}

impl Protocol for Toy {
    type Message = Msg;
    type Timer = AfterStart;
    type Record = u32;
    type Config = u32;

    fn new(per_start: &u32, id: NodeId, _: u32) -> Self {
        Toy { id, per_start: *per_start, records: 0, received: Vec::new() }
    }
    fn restore(per_start: &u32, id: NodeId, _: u32, records: &[u32]) -> Self {
        Toy { id, per_start: *per_start, records: records.len() as u32, received: Vec::new() }
    }
    fn id(&self) -> NodeId {
        self.id
    }
    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        if self.id == NodeId(0) {
            for _ in 0..self.per_start {
                self.records += 1;
                ctx.persist(self.records);
            }
            ctx.broadcast(Msg::Ping);
            ctx.set_timer(AfterStart, ms(1));
        }
    }
    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, msg: Msg) {
        self.received.push((from, Toy::message_kind(&msg), ctx.now() / ms(1)));
        if let Msg::Ping = msg {
            self.records += 1;
            ctx.persist(self.records);
            ctx.send(from, Msg::Pong);
        }
    }
    fn on_timer(&mut self, ctx: &mut Context<'_, Self>, _: AfterStart) {
        ctx.send(NodeId(1), Msg::Late);
    }
    fn on_request(&mut self, _: &mut Context<'_, Self>, _: Request) {}
    fn message_kind(msg: &Msg) -> &'static str {
        match msg {
            Msg::Ping => "ping",
            Msg::Pong => "pong",
            Msg::Late => "late",
        }
    }
    fn is_leader(&self) -> bool {
        false
    }
    fn epoch(&self) -> u64 {
        0
    }
}

fn cluster(fsync_ms: u64) -> Sim<Toy, LeaderClient> {
    cluster_with(fsync_ms, 1)
}

fn cluster_with(fsync_ms: u64, per_start: u32) -> Sim<Toy, LeaderClient> {
    let network = NetworkConfig { latency: Latency::Constant { ns: ms(1) }, ..NetworkConfig::default() };
    // Built by hand so the disk is in place before node 0's first step.
    let mut sim: Sim<Toy, LeaderClient> = Sim::new_staggered(per_start, 3, network, 7, 1);
    sim.set_fsync_latency(Some(Latency::Constant { ns: ms(fsync_ms) }));
    sim.track_broadcasts();
    sim
}

#[test]
fn messages_leave_only_once_the_steps_records_are_durable() {
    let mut sim = cluster(10);
    sim.run_to(ms(100));
    // Ping: node 0's write (10 ms), then the network (1 ms).
    assert_eq!(sim.node(NodeId(2)).unwrap().received, vec![(NodeId(0), "ping", 11)]);
    // Pong: node 1's write, then the network: back at 22 ms.
    assert!(sim.node(NodeId(0)).unwrap().received.iter().all(|&(_, kind, at)| kind == "pong" && at == 22));
    assert_eq!(sim.storage(NodeId(0)), &[1]);
    assert_eq!(sim.storage(NodeId(1)), &[1]);
}

#[test]
fn a_step_that_wrote_nothing_still_waits_behind_the_write_before_it() {
    let mut sim = cluster(10);
    sim.run_to(ms(100));
    // `Late` was sent at 1 ms but leaves after the start step's write, at 10 ms: a node's
    // messages cannot overtake the durability of what it did before.
    assert_eq!(sim.node(NodeId(1)).unwrap().received, vec![(NodeId(0), "ping", 11), (NodeId(0), "late", 11)]);
}

#[test]
fn a_crash_loses_the_write_in_progress_and_everything_held_behind_it() {
    let mut sim = cluster(10);
    sim.run_to(ms(5));
    sim.crash(NodeId(0));
    sim.run_to(ms(100));
    assert!(sim.storage(NodeId(0)).is_empty(), "the record was not durable at the crash");
    for peer in [NodeId(1), NodeId(2)] {
        assert!(sim.node(peer).unwrap().received.is_empty(), "{peer} heard from a write that never happened");
    }
    sim.restart(NodeId(0));
    sim.run_to(ms(200));
    assert_eq!(sim.storage(NodeId(0)), &[1], "the restarted node starts over from no records");
}

#[test]
fn a_broadcast_round_is_the_network_both_ways_plus_the_recipients_disks() {
    let mut sim = cluster(10);
    sim.run_to(ms(100));
    assert_eq!(
        sim.broadcast_rounds(),
        &[BroadcastRound { sender: NodeId(0), started_ns: ms(10), duration_ns: ms(12), recipients_persisted: true }]
    );

    let network = NetworkConfig { latency: Latency::Constant { ns: ms(1) }, ..NetworkConfig::default() };
    let mut instant: Sim<Toy, LeaderClient> = Sim::new_staggered(1, 3, network, 7, 1);
    instant.track_broadcasts();
    instant.run_to(ms(100));
    let rounds = instant.broadcast_rounds();
    assert_eq!(rounds.len(), 1);
    assert_eq!(rounds[0].duration_ns, ms(2), "with the instant disk a round is the network both ways");
}

#[test]
fn a_restarted_node_keeps_its_durable_records_and_writes_after_them() {
    let mut sim = cluster(10);
    sim.run_to(ms(30));
    sim.crash(NodeId(0));
    sim.restart(NodeId(0));
    sim.run_to(ms(100));
    // Restarted at 30 ms with one durable record: it persists its second, pings at 40.
    assert_eq!(sim.storage(NodeId(0)), &[1, 2]);
    assert_eq!(sim.node(NodeId(1)).unwrap().received.last(), Some(&(NodeId(0), "late", 41)));
}

/// Node 0 after `starts` starts on an instant disk: one record per start.
fn restarted(starts: u32) -> Sim<Toy, LeaderClient> {
    restarted_with(starts, 1)
}

/// Node 0 after `starts` starts, each persisting one batch of `per_start` records.
fn restarted_with(starts: u32, per_start: u32) -> Sim<Toy, LeaderClient> {
    let mut sim = cluster_with(0, per_start);
    sim.run_to(ms(10));
    for _ in 1..starts {
        sim.crash(NodeId(0));
        sim.restart(NodeId(0));
        sim.run_to(sim.now() + ms(10));
    }
    sim
}

#[test]
fn fsync_lies_take_records_the_node_had_already_answered_for() {
    let mut sim = restarted(1);
    assert!(sim.node(NodeId(0)).unwrap().received.contains(&(NodeId(1), "pong", 2)), "node 1 answered");
    sim.crash_with_disk_fault(NodeId(1), DiskFault::LoseAcknowledged { records: 1 });
    assert!(sim.storage(NodeId(1)).is_empty(), "the record node 1's pong vouched for is gone");
    sim.restart(NodeId(1));
    assert_eq!(sim.node(NodeId(1)).unwrap().records, 0);
}

#[test]
fn a_damaged_last_record_is_cut_like_a_torn_write() {
    let mut sim = restarted(2);
    assert_eq!(sim.storage(NodeId(0)), &[1, 2]);
    sim.crash_with_disk_fault(NodeId(0), DiskFault::Corrupt { index: 1 });
    assert_eq!(sim.refuses_to_start(NodeId(0)), None);
    sim.restart(NodeId(0));
    assert!(sim.is_up(NodeId(0)));
    // Restored from [1] (the damaged 2 cut), it persists its next record as 2 again.
    assert_eq!(sim.storage(NodeId(0)), &[1, 2]);
    assert_eq!(sim.node(NodeId(0)).unwrap().records, 2);
}

#[test]
fn damage_with_intact_records_after_it_keeps_the_node_down_and_its_disk_untouched() {
    let mut sim = restarted(3);
    assert_eq!(sim.storage(NodeId(0)), &[1, 2, 3]);
    sim.crash_with_disk_fault(NodeId(0), DiskFault::Corrupt { index: 0 });
    assert_eq!(sim.refuses_to_start(NodeId(0)), Some(0));
    sim.restart(NodeId(0));
    sim.run_to(sim.now() + ms(10));
    assert!(!sim.is_up(NodeId(0)), "a node must not run from a state it does not have");
    assert_eq!(sim.storage(NodeId(0)), &[1, 2, 3], "nothing is cut: the evidence stays for an operator");
}

/// The rule real mode's WAL keeps (`qlab_core::durability`), on the simulator's disk:
/// a step's records are one batch, kept whole or not at all, and only damage with a
/// *later batch* intact after it keeps a node down.
#[test]
fn batches_are_kept_whole_and_only_a_later_batch_makes_damage_corruption() {
    // Damage in the last batch with a record of the same batch after it: a torn write.
    let mut sim = restarted_with(2, 2);
    assert_eq!(sim.storage(NodeId(0)), &[1, 2, 3, 4]);
    sim.crash_with_disk_fault(NodeId(0), DiskFault::Corrupt { index: 2 });
    assert_eq!(sim.refuses_to_start(NodeId(0)), None, "record 4 is of the damaged record's own batch");
    sim.restart(NodeId(0));
    // Restored from [1, 2] (the torn batch cut), it persists 3 and 4 again at start.
    assert_eq!(sim.node(NodeId(0)).unwrap().records, 4, "restored from the first batch alone");
    assert_eq!(sim.storage(NodeId(0)), &[1, 2, 3, 4]);

    // Damage with a later batch behind it: corruption.
    let mut sim = restarted_with(2, 2);
    sim.crash_with_disk_fault(NodeId(0), DiskFault::Corrupt { index: 1 });
    assert_eq!(sim.refuses_to_start(NodeId(0)), Some(1));

    // A lost write that leaves part of a batch: the part is cut too.
    let mut sim = restarted_with(2, 2);
    sim.crash_with_disk_fault(NodeId(0), DiskFault::LoseAcknowledged { records: 1 });
    assert_eq!(sim.storage(NodeId(0)), &[1, 2, 3]);
    sim.restart(NodeId(0));
    assert_eq!(sim.storage(NodeId(0)), &[1, 2, 3, 4], "the half batch [3] is not state the node ever acted on");
}
