//! Helpers shared by the explorer's tests (`explore.rs`, `explore_pbft.rs`).

use qlab_lab::explore::{Bounds, Exploration};
use qlab_report::sequence::SequenceChart;

/// The counterexample's message-sequence figure must be the one docs/model-checking.md
/// shows (`docs/figures/model-checking/<stem>.svg`); `QLAB_BLESS=1` writes it instead.
pub fn figure_matches_the_docs(found: &Exploration, stem: &str, title: &str) {
    chart_matches_the_docs(found.chart.clone().expect("a counterexample has a figure"), stem, title);
}

/// [`figure_matches_the_docs`] for a figure drawn from a run given step by step.
pub fn chart_matches_the_docs(mut chart: SequenceChart, stem: &str, title: &str) {
    chart.title = title.to_string();
    let drawn = tempfile::tempdir().unwrap();
    let written = qlab_report::sequence::write_sequence(drawn.path(), stem, &chart).unwrap();
    let svg = std::fs::read_to_string(&written[0]).unwrap();
    let committed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../docs/figures/model-checking/{stem}.svg"));
    if std::env::var_os("QLAB_BLESS").is_some() {
        std::fs::create_dir_all(committed.parent().unwrap()).unwrap();
        std::fs::write(&committed, &svg).unwrap();
        let _ = std::fs::copy(&written[1], std::env::temp_dir().join(format!("{stem}.png")));
    }
    let docs = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(docs == svg, "{} is not this counterexample's figure (QLAB_BLESS=1 redraws it)", committed.display());
}

/// The bounds an explorer tool's fields 1 to 4 give: client commands, crashes, timer
/// firings, depth (no reordering or duplication).
#[allow(dead_code, reason = "each test binary uses what it needs")]
pub fn bounds_from_fields(fields: &[&str]) -> Bounds {
    let number = |i: usize| fields[i].parse::<u32>().unwrap_or_else(|_| panic!("field {i}: a number"));
    Bounds {
        requests: number(1),
        crashes: number(2),
        reorderings: 0,
        duplicates: 0,
        timer_firings: number(3),
        max_depth: number(4) as usize,
    }
}

/// A search's size and time, and its counterexample if it found one, on standard output.
#[allow(dead_code, reason = "each test binary uses what it needs")]
pub fn report(what: &str, found: &Exploration) {
    println!(
        "{what}: {} states generated ({} distinct in the last round), depth {}{}, {:.1} s",
        found.states,
        found.unique_states,
        found.max_depth,
        if found.timed_out { " (time limit)" } else { "" },
        found.seconds
    );
    let marks: Vec<String> = found.coverage.iter().map(|(name, count)| format!("{name} {count}")).collect();
    println!("coverage marks reached: {}", marks.join(", "));
    if let Some((steps, violations)) = &found.counterexample {
        println!("{}\n{violations:?}", steps.join("\n"));
    }
}
