//! A protocol whose every message breeds two more must stop the simulator with a clear
//! message, not eat the machine's memory (a Multi-Paxos catch-up bug once did exactly
//! that).

use qlab_core::leader_client::LeaderClient;
use qlab_core::{Context, NodeId, Protocol, Request, ms};
use qlab_sim::{NetworkConfig, Sim};

struct Breeder {
    id: NodeId,
}

impl Protocol for Breeder {
    type Message = ();
    type Timer = ();
    type Record = ();
    type Config = ();

    fn new(_: &(), id: NodeId, _: u32) -> Self {
        Breeder { id }
    }
    fn restore(_: &(), id: NodeId, _: u32, _: &[()]) -> Self {
        Breeder { id }
    }
    fn id(&self) -> NodeId {
        self.id
    }
    fn on_start(&mut self, ctx: &mut Context<'_, Self>) {
        ctx.broadcast(());
    }
    fn on_message(&mut self, ctx: &mut Context<'_, Self>, from: NodeId, _: ()) {
        ctx.send(from, ());
        ctx.send(from, ());
    }
    fn on_timer(&mut self, _: &mut Context<'_, Self>, _: ()) {}
    fn on_request(&mut self, _: &mut Context<'_, Self>, _: Request) {}
    fn message_kind(_: &()) -> &'static str {
        "breed"
    }
    fn is_leader(&self) -> bool {
        false
    }
    fn epoch(&self) -> u64 {
        0
    }
}

#[test]
fn a_message_storm_stops_the_simulation_with_a_clear_message() {
    let result = std::panic::catch_unwind(|| {
        let mut sim: Sim<Breeder, LeaderClient> = Sim::new((), 3, NetworkConfig::default(), 1);
        sim.run_to(ms(60_000));
    });
    let payload = result.expect_err("the storm must stop the run");
    let message = payload.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("event storm") && message.contains("protocol bug"), "{message}");
}
