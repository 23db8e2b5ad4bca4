//! Each kind's typed trial row is its `trials.csv` header: the serde field names, in
//! order, are the columns the run writes and the summaries, figures and notebooks read.

use qlab_lab::registry::Registry;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The header every committed reference run of each kind has.
fn committed_headers() -> Vec<(String, Vec<String>, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(repo().join("results")).unwrap() {
        let reference = entry.unwrap().path().join("reference");
        let Ok(meta) = std::fs::read_to_string(reference.join("meta.json")) else { continue };
        let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        let kind = meta["kind"].as_str().unwrap().to_string();
        let mut reader = csv::Reader::from_path(reference.join("trials.csv")).unwrap();
        let header = reader.headers().unwrap().iter().map(str::to_string).collect();
        found.push((kind, header, reference));
    }
    found
}

/// Point columns added to a kind after some of its references were committed: open-loop
/// load and wide-area placement (issue 20) gave throughput rows `arrival` (`closed`
/// before), `rate_per_s` and `leader_region` (empty before). References measured
/// before them, on real processes over minutes, are kept rather than re-measured for
/// three constant columns. Adaptive batching (issue 22) added `max_batches_in_flight`:
/// a reference without it was made before adaptive batching existed, when
/// `batch_delay_ms = 0` meant unbatched (what `max_batches_in_flight = 0` means now).
const POINT_COLUMNS_ADDED_SINCE: &[(&str, &str)] = &[
    ("throughput", "arrival"),
    ("throughput", "rate_per_s"),
    ("throughput", "leader_region"),
    ("throughput", "max_batches_in_flight"),
];

/// Each kind's row type writes the header of a committed reference run, and the point
/// columns of all of them, so what the run writes today is what `qlab plot`, the
/// summaries and the notebooks read there.
#[test]
fn every_kind_writes_the_header_of_its_committed_references() {
    let committed = committed_headers();
    let kinds = Registry::builtin();
    for name in kinds.names() {
        let kind = kinds.get(name).unwrap();
        let header = kind.trial_columns();
        let of_kind: Vec<&(String, Vec<String>, PathBuf)> =
            committed.iter().filter(|(k, ..)| k == kind.name()).collect();
        assert!(!of_kind.is_empty(), "no committed reference of kind {}", kind.name());
        let points = kind.point_columns();
        // Older references may lack trial columns added since; their points are the same,
        // but for the point columns a kind added later (which every reader looks up by
        // name, and which have one value throughout such a run).
        for (_, committed, reference) in &of_kind {
            let committed_points: Vec<&String> = committed.iter().take_while(|c| *c != "trial").collect();
            let current: Vec<&String> = points
                .iter()
                .filter(|c| {
                    committed_points.contains(c) || !POINT_COLUMNS_ADDED_SINCE.contains(&(kind.name(), c.as_str()))
                })
                .collect();
            assert_eq!(committed_points, current, "{}: point columns", reference.display());
        }
        assert!(
            of_kind.iter().any(|(_, committed, _)| *committed == header),
            "no committed {} reference has the header the row type writes: {header:?}",
            kind.name()
        );
        assert_eq!(
            header[points.len()..][..3],
            ["trial", "point", "seed"],
            "{}: point columns come first",
            kind.name()
        );
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
        fsync_ms_mean: 0.0,
        loss: 0.0,
        trial: 3,
        point: 1,
        seed: 42,
        election_ms: f64::NAN,
        unavailable_ms: Some(12.34567),
        terms: 2,
        censored: true,
        messages: 10,
        broadcast_ms_mean: None,
        broadcast_rounds: 0,
        malformed_frames: Some(7),
        malformed_frames_node_max: Some(4),
        dropped_sends: None,
        dropped_sends_node_max: None,
        refused_connections: Some(0),
        refused_connections_node_max: Some(0),
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
            "0",
            "3",
            "1",
            "42",
            "",
            "12.346",
            "2",
            "true",
            "10",
            "",
            "0",
            "7",
            "4",
            "",
            "",
            "0",
            "0",
            "inconclusive",
            "a, \"quoted\" one"
        ]
    );
}
