//! Tests named after the sections and figures of the Raft paper (Ongaro & Ousterhout
//! 2014). Each drives single replicas by hand through the sans-IO interface and reads
//! what they emit, so the rule under test is isolated from timing.

use qlab_core::{Action, ClientId, Context, Event, NodeId, Op, Outbox, Protocol, Reply, ReplyBody, Request};
use qlab_raft::{Entry, Message, Payload, Raft, RaftConfig, RaftTimer, Record, Role};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

type Out = Outbox<Message, RaftTimer, Record>;

/// A replica plus its RNG, driven one call at a time.
struct Harness {
    raft: Raft,
    rng: ChaCha8Rng,
    now: u64,
}

impl Harness {
    fn new(id: u32, nodes: u32) -> Self {
        Self::restored(id, nodes, &[])
    }
    fn restored(id: u32, nodes: u32, records: &[Record]) -> Self {
        let raft = Raft::restore(&RaftConfig::default(), NodeId(id), nodes, records);
        Harness { raft, rng: ChaCha8Rng::seed_from_u64(id as u64), now: 0 }
    }
    fn with_log(id: u32, nodes: u32, term: u64, terms: &[u64]) -> Self {
        Self::restored(id, nodes, &[hard_state(term, None), Record::Append { entries: entries(terms) }])
    }
    fn call(&mut self, f: impl FnOnce(&mut Raft, &mut Context<'_, Raft>)) -> Out {
        let mut out = Out::default();
        // Explaining, as `qlab replay` does: the reasons must not change what a step does.
        let mut ctx = Context::new(self.now, &mut self.rng, &mut out).explaining(true);
        f(&mut self.raft, &mut ctx);
        out
    }
    fn deliver(&mut self, from: u32, msg: Message) -> Out {
        self.call(|r, ctx| r.on_message(ctx, NodeId(from), msg))
    }
    fn timeout(&mut self) -> Out {
        self.call(|r, ctx| r.on_timer(ctx, RaftTimer::Election))
    }
    fn terms(&self) -> Vec<u64> {
        self.raft.log().iter().map(|e| e.term).collect()
    }
}

fn hard_state(term: u64, voted_for: Option<u32>) -> Record {
    Record::HardState { term, voted_for: voted_for.map(NodeId) }
}

/// Entries at indexes 1.. with the given terms, each a distinct put.
fn entries(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, t)| entry(i as u64 + 1, *t)).collect()
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        payload: Payload::Command(Arc::new(Request {
            client: ClientId(99),
            seq: index * 1000 + term,
            op: Op::Put { key: index, value: vec![term as u8] },
            signature: Vec::new(),
        })),
    }
}

/// The actions of one kind a step emitted, in order.
fn actions<T>(out: &Out, pick: impl Fn(&Action<Message, RaftTimer, Record>) -> Option<T>) -> Vec<T> {
    out.actions.iter().filter_map(pick).collect()
}

fn sent(out: &Out) -> Vec<(Option<NodeId>, Message)> {
    actions(out, |a| match a {
        Action::Send { to, msg } => Some((Some(*to), msg.clone())),
        Action::Broadcast { msg } => Some((None, msg.clone())),
        _ => None,
    })
}

fn persisted(out: &Out) -> Vec<Record> {
    actions(out, |a| match a {
        Action::Persist { record } => Some(record.clone()),
        _ => None,
    })
}

/// Slots reported committed by a step.
fn committed_slots(out: &Out) -> Vec<u64> {
    actions(out, |a| match a {
        Action::Observe { event: Event::Committed { slot, .. } } => Some(*slot),
        _ => None,
    })
}

/// A follower's successful acknowledgement up to `match_index`.
fn ack(term: u64, match_index: u64) -> Message {
    Message::AppendResponse { term, success: true, match_index, conflict_term: None, conflict_index: 0 }
}

fn events(out: &Out) -> Vec<Event> {
    actions(out, |a| match a {
        Action::Observe { event } => Some(event.clone()),
        _ => None,
    })
}

/// An AppendEntries of `term` after (`prev_log_index`, `prev_log_term`), commit 0.
fn append(term: u64, prev_log_index: u64, prev_log_term: u64, entries: Vec<Entry>) -> Message {
    Message::AppendEntries { term, prev_log_index, prev_log_term, entries, leader_commit: 0 }
}

/// Why the step dropped or refused what it was given (what `qlab replay` prints).
fn reasons(out: &Out) -> Vec<String> {
    actions(out, |a| match a {
        Action::Ignored { why } => Some(why.clone()),
        _ => None,
    })
}

fn vote_granted(out: &Out) -> bool {
    match sent(out).as_slice() {
        [(_, Message::VoteResponse { granted, .. })] => *granted,
        other => panic!("expected one VoteResponse, got {other:?}"),
    }
}

fn append_response(out: &Out) -> Message {
    sent(out)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| matches!(m, Message::AppendResponse { .. }))
        .expect("an AppendResponse")
}

/// Make `h` leader of `term + 1` with votes from `voters`.
fn elect(h: &mut Harness, voters: &[u32]) -> Out {
    h.timeout();
    let term = h.raft.current_term();
    let mut last = Out::default();
    for v in voters {
        last = h.deliver(*v, Message::VoteResponse { term, granted: true });
    }
    assert_eq!(h.raft.role(), Role::Leader);
    last
}

// ---- §5.2 Leader election ---------------------------------------------------------

#[test]
fn s5_2_candidate_votes_for_itself_persists_then_requests_votes() {
    let mut h = Harness::new(0, 3);
    let out = h.timeout();
    assert_eq!(h.raft.role(), Role::Candidate);
    assert_eq!(h.raft.current_term(), 1);
    assert_eq!(persisted(&out), vec![hard_state(1, Some(0))]);
    let persist_at = out.actions.iter().position(|a| matches!(a, Action::Persist { .. })).unwrap();
    let send_at = out.actions.iter().position(|a| matches!(a, Action::Broadcast { .. })).unwrap();
    assert!(persist_at < send_at, "the vote is durable before the RequestVote leaves");
    assert!(matches!(sent(&out)[0].1, Message::RequestVote { term: 1, last_log_index: 0, last_log_term: 0 }));
}

#[test]
fn s5_2_one_vote_per_term_survives_a_restart() {
    let mut h = Harness::new(2, 3);
    let out = h.deliver(0, Message::RequestVote { term: 1, last_log_index: 0, last_log_term: 0 });
    assert!(vote_granted(&out));
    assert_eq!(persisted(&out).last(), Some(&hard_state(1, Some(0))));
    // Crash and restart from what was persisted: the vote is remembered.
    let records: Vec<Record> = persisted(&out);
    let mut h = Harness::restored(2, 3, &records);
    let out = h.deliver(1, Message::RequestVote { term: 1, last_log_index: 5, last_log_term: 1 });
    assert!(!vote_granted(&out), "a second vote in term 1 after restart");
    // The same candidate asking again (a retransmission) is granted again.
    let out = h.deliver(0, Message::RequestVote { term: 1, last_log_index: 0, last_log_term: 0 });
    assert!(vote_granted(&out));
}

#[test]
fn s5_2_majority_of_votes_wins_and_new_leader_appends_a_noop() {
    let mut h = Harness::new(0, 5);
    h.timeout();
    let out = h.deliver(1, Message::VoteResponse { term: 1, granted: true });
    assert_eq!(h.raft.role(), Role::Candidate, "2 of 5 is not a majority");
    assert!(events(&out).is_empty());
    let out = h.deliver(2, Message::VoteResponse { term: 1, granted: true });
    assert_eq!(h.raft.role(), Role::Leader);
    assert!(events(&out).iter().any(|e| matches!(e, Event::Elected { epoch: 1, .. })));
    assert_eq!(h.raft.log().last().map(|e| &e.payload), Some(&Payload::Noop));
    let appends = sent(&out).iter().filter(|(_, m)| matches!(m, Message::AppendEntries { .. })).count();
    assert_eq!(appends, 4, "the no-op goes to every follower at once");
}

#[test]
fn s5_2_higher_term_makes_a_leader_step_down() {
    let mut h = Harness::new(0, 3);
    elect(&mut h, &[1]);
    let out = h.deliver(2, Message::HeartbeatResponse { term: 7, last_log_index: 0, read_round: 0 });
    assert_eq!(h.raft.role(), Role::Follower);
    assert_eq!(reasons(&out)[0], "moves to term 7 (ours 1) on heartbeat_response from n2, stepping down");
    assert_eq!(h.raft.current_term(), 7);
}

#[test]
fn s5_2_one_vote_per_term_a_second_candidate_is_refused_with_the_reason() {
    let mut h = Harness::new(1, 3);
    assert!(vote_granted(&h.deliver(0, Message::RequestVote { term: 2, last_log_index: 0, last_log_term: 0 })));
    let out = h.deliver(2, Message::RequestVote { term: 2, last_log_index: 0, last_log_term: 0 });
    assert!(!vote_granted(&out));
    assert_eq!(reasons(&out), ["rejected request_vote from n2 in term 2: already voted for n0 in term 2"]);
}

/// Figure 2, "Rules for All Servers", for the receiver: a leader of an earlier term is
/// answered with the current term (so it steps down) and changes nothing here.
#[test]
fn figure2_a_stale_leader_is_answered_with_our_term_and_changes_nothing() {
    let mut h = Harness::with_log(1, 3, 5, &[1, 5]);
    let out = h.deliver(0, append(3, 2, 5, entries(&[1, 5, 3])[2..].to_vec()));
    assert_eq!(h.terms(), [1, 5], "a stale leader's entries are not appended");
    assert!(persisted(&out).is_empty());
    match append_response(&out) {
        Message::AppendResponse { term: 5, success: false, .. } => {}
        other => panic!("expected a refusal carrying term 5, got {other:?}"),
    }
    assert_eq!(reasons(&out), ["rejected append_entries from n0: stale term 3 below ours 5"]);
    let out = h.deliver(2, Message::Heartbeat { term: 4, commit: 0, read_round: 0 });
    assert!(matches!(sent(&out).as_slice(), [(_, Message::HeartbeatResponse { term: 5, .. })]), "{out:?}");
}

#[test]
fn s5_2_split_vote_times_out_into_a_new_term() {
    let mut h = Harness::new(0, 3);
    h.timeout();
    h.deliver(1, Message::VoteResponse { term: 1, granted: false });
    assert_eq!(h.raft.role(), Role::Candidate);
    h.timeout();
    assert_eq!(h.raft.current_term(), 2);
}

// ---- §5.4.1 Election restriction ----------------------------------------------------

#[test]
fn s5_4_1_vote_denied_to_a_candidate_with_an_older_last_term() {
    let mut h = Harness::with_log(1, 3, 3, &[1, 3]);
    // Longer log but older last term: not up to date.
    let out = h.deliver(0, Message::RequestVote { term: 4, last_log_index: 9, last_log_term: 2 });
    assert!(!vote_granted(&out));
    assert_eq!(
        reasons(&out),
        [
            "moves to term 4 (ours 3) on request_vote from n0",
            "rejected request_vote from n0 in term 4: candidate log 9@2 behind ours 2@3",
        ]
    );
}

#[test]
fn s5_4_1_vote_denied_to_a_shorter_log_with_the_same_last_term() {
    let mut h = Harness::with_log(1, 3, 3, &[1, 3, 3]);
    let out = h.deliver(0, Message::RequestVote { term: 4, last_log_index: 2, last_log_term: 3 });
    assert!(!vote_granted(&out));
    assert_eq!(reasons(&out)[1], "rejected request_vote from n0 in term 4: candidate log 2@3 behind ours 3@3");
    let out = h.deliver(2, Message::RequestVote { term: 4, last_log_index: 3, last_log_term: 3 });
    assert!(vote_granted(&out), "equal logs are up to date");
}

#[test]
fn s5_4_1_newer_last_term_wins_even_when_shorter() {
    let mut h = Harness::with_log(1, 3, 3, &[1, 1, 1, 1]);
    let out = h.deliver(0, Message::RequestVote { term: 4, last_log_index: 2, last_log_term: 3 });
    assert!(vote_granted(&out));
}

// ---- §5.3 Log replication, Figure 7 ---------------------------------------------------

/// The leader's log in Figure 7 (term 8 leader): terms of indexes 1..=10.
const FIGURE7_LEADER: [u64; 10] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

/// Followers (a)–(f) of Figure 7.
fn figure7_followers() -> Vec<(&'static str, Vec<u64>)> {
    vec![
        ("a", vec![1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", vec![1, 1, 1, 4]),
        ("c", vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", vec![1, 1, 1, 4, 4, 4, 4]),
        ("f", vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ]
}

/// Leader of term 8 with Figure 7's log, then the follower's log is brought in line
/// through AppendEntries exchanges only.
#[test]
fn figure7_every_follower_case_converges_to_the_leaders_log() {
    for (case, follower_terms) in figure7_followers() {
        let mut leader = Harness::with_log(0, 2, 7, &FIGURE7_LEADER);
        // With 2 nodes the follower's vote is needed; its log may be more up to date,
        // so elect through a message from the test rather than its vote.
        leader.timeout();
        let elected = leader.deliver(1, Message::VoteResponse { term: 8, granted: true });
        assert_eq!(leader.raft.role(), Role::Leader, "case {case}");
        let mut follower = Harness::with_log(1, 2, 7, &follower_terms);
        let mut expected = FIGURE7_LEADER.to_vec();
        expected.push(8); // the new leader's no-op
        // Start from the AppendEntries carrying the no-op (prevLogIndex 10, term 6).
        let mut to_follower: Vec<Message> = sent(&elected).into_iter().map(|(_, m)| m).collect();
        assert!(matches!(to_follower[..], [Message::AppendEntries { prev_log_index: 10, prev_log_term: 6, .. }]));
        let mut round_trips = 0;
        while let Some(msg) = to_follower.pop() {
            round_trips += 1;
            assert!(round_trips < 20, "case {case}: no convergence");
            let replies = follower.deliver(0, msg);
            for (_, reply) in sent(&replies) {
                let out = leader.deliver(1, reply);
                to_follower.extend(sent(&out).into_iter().map(|(_, m)| m));
            }
        }
        assert_eq!(follower.terms(), expected, "case {case}");
        // Fast back-off: one round trip per conflicting term at most, not per entry.
        assert!(round_trips <= 6, "case {case}: {round_trips} round trips");
    }
}

#[test]
fn s5_3_rejects_when_prev_entry_is_missing_and_hints_its_log_end() {
    let mut h = Harness::with_log(1, 3, 2, &[1, 1]);
    let out = h.deliver(0, append(2, 5, 2, vec![]));
    assert!(matches!(
        append_response(&out),
        Message::AppendResponse { success: false, conflict_term: None, conflict_index: 3, .. }
    ));
}

#[test]
fn s5_3_rejects_on_term_mismatch_and_hints_first_index_of_that_term() {
    let mut h = Harness::with_log(1, 3, 3, &[1, 2, 2, 2]);
    let out = h.deliver(0, append(3, 4, 3, vec![]));
    assert!(matches!(
        append_response(&out),
        Message::AppendResponse { success: false, conflict_term: Some(2), conflict_index: 2, .. }
    ));
}

#[test]
fn s5_3_matching_append_never_truncates_later_entries() {
    let mut h = Harness::with_log(1, 3, 2, &[1, 2, 2, 2]);
    // A delayed AppendEntries carrying only entries 2..=3, which already match.
    let out = h.deliver(0, append(2, 1, 1, vec![entry(2, 2), entry(3, 2)]));
    assert_eq!(h.terms(), vec![1, 2, 2, 2], "entry 4 must survive");
    assert!(persisted(&out).iter().all(|r| !matches!(r, Record::Truncate { .. })));
    assert!(matches!(append_response(&out), Message::AppendResponse { success: true, match_index: 3, .. }));
}

#[test]
fn s5_3_conflicting_entry_is_truncated_with_everything_after_it() {
    let mut h = Harness::with_log(1, 3, 2, &[1, 2, 2, 2]);
    let out = h.deliver(0, append(3, 1, 1, vec![entry(2, 2), entry(3, 3)]));
    assert_eq!(h.terms(), vec![1, 2, 3]);
    assert!(persisted(&out).contains(&Record::Truncate { from_index: 3 }));
    // The restored node sees the same log.
    let mut records = vec![hard_state(2, None), Record::Append { entries: entries(&[1, 2, 2, 2]) }];
    records.extend(persisted(&out));
    assert_eq!(Harness::restored(1, 3, &records).terms(), vec![1, 2, 3]);
}

#[test]
fn s5_3_follower_commits_up_to_leader_commit_but_not_past_its_new_entries() {
    let mut h = Harness::with_log(1, 3, 2, &[1]);
    let out = h.deliver(
        0,
        Message::AppendEntries {
            term: 2,
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![entry(2, 2)],
            leader_commit: 9,
        },
    );
    assert_eq!(h.raft.commit_index(), 2);
    let committed = committed_slots(&out);
    assert_eq!(committed, vec![1, 2]);
}

// ---- §5.4.2 Committing entries from previous terms, Figure 8 -------------------------

/// Figure 8 (c): S1 is leader of term 4 with entries [1, 2] (index 2 from term 2) and
/// has replicated index 2 to a majority (S1, S2, S3). Counting replicas must NOT commit
/// index 2: in (d) S5, with [1, 3], could still be elected by S2, S3, S4 and overwrite
/// it. Only once an entry of term 4 is on a majority are both committed (e).
#[test]
fn figure8_leader_never_commits_an_old_term_entry_by_counting_replicas() {
    let mut s1 = Harness::restored(0, 5, &[hard_state(3, None), Record::Append { entries: entries(&[1, 2]) }]);
    s1.timeout();
    assert_eq!(s1.raft.current_term(), 4);
    s1.deliver(1, Message::VoteResponse { term: 4, granted: true });
    s1.deliver(2, Message::VoteResponse { term: 4, granted: true });
    assert_eq!(s1.raft.role(), Role::Leader);
    // S2 and S3 acknowledge index 2 (term 2) — a majority with S1 — but not the no-op.
    s1.deliver(1, ack(4, 2));
    let out = s1.deliver(2, ack(4, 2));
    assert_eq!(s1.raft.commit_index(), 0, "index 2 is from term 2: counting replicas must not commit it");
    assert!(!events(&out).iter().any(|e| matches!(e, Event::Committed { .. })));
    // (e): once the term-4 entry (the no-op at 3) is on a majority, 1..=3 commit together.
    s1.deliver(1, ack(4, 3));
    let out = s1.deliver(2, ack(4, 3));
    assert_eq!(s1.raft.commit_index(), 3);
    let committed = committed_slots(&out);
    assert_eq!(committed, vec![1, 2, 3]);
}

/// Figure 8 (d): the overwrite the rule above guards against is legal Raft: S5 with
/// [1, 3] wins votes from S2, S3, S4 (whose logs end in term ≤ 2) and replaces index 2.
#[test]
fn figure8_d_an_uncommitted_old_term_entry_can_be_overwritten() {
    for voter_terms in [vec![1, 2], vec![1, 2], vec![1]] {
        let mut voter =
            Harness::restored(1, 5, &[hard_state(4, None), Record::Append { entries: entries(&voter_terms) }]);
        let out = voter.deliver(4, Message::RequestVote { term: 5, last_log_index: 2, last_log_term: 3 });
        assert!(vote_granted(&out));
    }
    let mut s2 = Harness::restored(1, 5, &[hard_state(4, None), Record::Append { entries: entries(&[1, 2]) }]);
    s2.deliver(4, append(5, 1, 1, vec![entry(2, 3)]));
    assert_eq!(s2.terms(), vec![1, 3]);
}

// ---- §8 Clients --------------------------------------------------------------------

#[test]
fn s8_follower_redirects_clients_to_the_leader() {
    let mut h = Harness::new(1, 3);
    h.deliver(0, Message::Heartbeat { term: 1, commit: 0, read_round: 0 });
    let request = Request { client: ClientId(0), seq: 1, op: Op::Get { key: 1 }, signature: Vec::new() };
    let out = h.call(|r, ctx| r.on_request(ctx, request));
    let replies: Vec<&Reply> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { reply } => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(replies[0].body, ReplyBody::NotLeader { leader: Some(NodeId(0)) });
}

#[test]
fn s8_a_retried_command_is_applied_once() {
    let mut h = Harness::new(0, 1);
    h.timeout(); // a single node elects itself
    assert_eq!(h.raft.role(), Role::Leader);
    let cas = Request {
        client: ClientId(3),
        seq: 1,
        op: Op::Cas { key: 1, expected: None, new: vec![1] },
        signature: Vec::new(),
    };
    let first = h.call(|r, ctx| r.on_request(ctx, cas.clone()));
    let retry = h.call(|r, ctx| r.on_request(ctx, cas.clone()));
    let replies = |out: &Out| -> Vec<ReplyBody> {
        out.actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { reply } => Some(reply.body.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(replies(&first), vec![ReplyBody::Done(qlab_core::OpResult::Cas { swapped: true, found: None })]);
    assert!(replies(&retry).is_empty(), "the retry is already in the log");
    // A new leader that finds the command twice in its log applies it once.
    let mut records = vec![hard_state(5, None)];
    records.push(Record::Append {
        entries: vec![
            Entry { term: 5, index: 1, payload: Payload::Command(Arc::new(cas.clone())) },
            Entry { term: 5, index: 2, payload: Payload::Command(Arc::new(cas.clone())) },
        ],
    });
    let mut h = Harness::restored(0, 1, &records);
    h.timeout();
    assert_eq!(h.raft.commit_index(), 3);
    assert_eq!(h.raft.kv().get(1), Some(&vec![1]));
}

#[test]
fn check_quorum_leader_steps_down_without_a_majority() {
    let mut h = Harness::new(0, 3);
    elect(&mut h, &[1]);
    // First tick clears the activity flags set at election; nobody answers after.
    h.call(|r, ctx| r.on_timer(ctx, RaftTimer::CheckQuorum));
    assert_eq!(h.raft.role(), Role::Leader);
    h.call(|r, ctx| r.on_timer(ctx, RaftTimer::CheckQuorum));
    assert_eq!(h.raft.role(), Role::Follower);
    // With a follower answering in between, it stays leader.
    let mut h = Harness::new(0, 3);
    elect(&mut h, &[1]);
    h.call(|r, ctx| r.on_timer(ctx, RaftTimer::CheckQuorum));
    let term = h.raft.current_term();
    h.deliver(2, Message::HeartbeatResponse { term, last_log_index: 0, read_round: 0 });
    h.call(|r, ctx| r.on_timer(ctx, RaftTimer::CheckQuorum));
    assert_eq!(h.raft.role(), Role::Leader);
}

/// Adaptive batching in real mode (`Context::input_waiting`, `Protocol::on_input_drained`):
/// requests that reach a leader together leave as one AppendEntries. With more input
/// queued behind each step, three writes wait; when the queue empties they go in one
/// batch to each follower. The same write with nothing queued behind goes at once.
#[test]
fn adaptive_leader_sends_requests_that_arrived_together_as_one_append() {
    let mut h = Harness::new(0, 3);
    h.timeout();
    h.deliver(1, Message::VoteResponse { term: 1, granted: true });
    assert_eq!(h.raft.role(), Role::Leader);
    let put = |seq: u64| Request {
        client: ClientId(seq),
        seq: 1,
        op: Op::Put { key: seq, value: vec![seq as u8; 8] },
        signature: Vec::new(),
    };
    let appended = |out: &Out| -> Vec<usize> {
        sent(out)
            .into_iter()
            .filter_map(|(_, m)| match m {
                Message::AppendEntries { entries, .. } if !entries.is_empty() => Some(entries.len()),
                _ => None,
            })
            .collect()
    };
    for seq in 1..=3 {
        let mut out = Out::default();
        let mut ctx = Context::new(h.now, &mut h.rng, &mut out).with_input_waiting(true);
        h.raft.on_request(&mut ctx, put(seq));
        assert!(appended(&out).is_empty(), "request {seq} waits while more input is queued: {:?}", sent(&out));
    }
    let out = h.call(|r, ctx| r.on_input_drained(ctx));
    assert_eq!(appended(&out), vec![3, 3], "one AppendEntries of all three writes to each follower");
    let out = h.call(|r, ctx| r.on_request(ctx, put(4)));
    assert_eq!(appended(&out), vec![1, 1], "with nothing queued behind it a write goes at once");
}
