//! Each kind's typed trial row is its `trials.csv` header: the serde field names, in
//! order, are the columns the run writes and the summaries, figures and notebooks read.

use qlab_lab::config::Kind;
use qlab_lab::results::{columns, header_of};

#[test]
fn every_kind_writes_the_header_its_row_type_names() {
    let expected: Vec<(Kind, Vec<String>)> = vec![
        (Kind::Election, header_of::<qlab_lab::election::ElectionRow>()),
        (Kind::Throughput, header_of::<qlab_lab::throughput::ThroughputRow>()),
        (Kind::Attack, header_of::<qlab_lab::attack::AttackRow>()),
        (Kind::Availability, header_of::<qlab_lab::availability::AvailabilityRow>()),
        (Kind::Reads, header_of::<qlab_lab::reads::ReadsRow>()),
        (Kind::Counterexample, header_of::<qlab_lab::counterexample::CaseRow>()),
        (Kind::Disruption, header_of::<qlab_lab::disruption::DisruptionRow>()),
    ];
    assert_eq!(expected.len(), Kind::ALL.len(), "a kind without a row type");
    for (kind, header) in expected {
        assert_eq!(columns(kind), header, "{kind:?}");
    }
}

/// Cells are written as they always were: metrics to three decimals and empty when
/// undefined, point values as Rust prints them (`0`, not serde's `0.0`).
#[test]
fn cells_keep_their_format() {
    let row = qlab_lab::election::ElectionRow {
        protocol: "raft",
        mode: "sim",
        nodes: 5,
        election_timeout_ms_min: 150.0,
        election_timeout_ms_max: 300.0,
        heartbeat_ms: 75.0,
        latency_ms_mean: 7.5,
        loss: 0.0,
        trial: 3,
        point: 1,
        seed: 42,
        election_ms: f64::NAN,
        unavailable_ms: Some(12.34567),
        terms: 2,
        censored: true,
        messages: 10,
        safety: qlab_check::Verdict::Inconclusive,
        violations: "a, \"quoted\" one".into(),
    };
    assert_eq!(
        qlab_lab::results::record(&row),
        [
            "raft",
            "sim",
            "5",
            "150",
            "300",
            "75",
            "7.5",
            "0",
            "3",
            "1",
            "42",
            "",
            "12.346",
            "2",
            "true",
            "10",
            "inconclusive",
            "a, \"quoted\" one"
        ]
    );
}
