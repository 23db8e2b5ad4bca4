//! Every check file in `checks/` holds: its search finds what the file expects (a
//! violation, or none within the bounds), so each row of docs/model-checking.md's table
//! of check files is a claim this test can refute.

mod explorer_common;
use explorer_common::figure_matches_the_docs;
use qlab_lab::check::run_check;

/// Check files whose counterexample is a figure in docs/model-checking.md
/// (`docs/figures/model-checking/<file stem>.svg`), with the figure's title. The
/// prepare rule (`prepare_quorum_2f`, the ablation experiment files can ask for): twins
/// of the primary n0 pre-prepare two different requests at one sequence number, each
/// prepares on the pre-prepare and one prepare, and the view change's O set takes the
/// certificate of the request that did not commit: the new primary lacks a committed
/// request (Leader Completeness).
const FIGURES: &[(&str, &str)] = &[("pbft-prepare-quorum-2f", "PBFT preparing on 2f statements, twins of n0")];

#[test]
fn every_check_file_finds_what_it_expects() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checks");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    let docs = std::fs::read_to_string(dir.join("../docs/model-checking.md")).unwrap();
    let mut failed = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(docs.contains(&format!("`checks/{name}`")), "docs/model-checking.md's table lacks {name}");
        let outcome = run_check(file, None, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}:\n  {}", outcome.report.join("\n  "));
        if !outcome.as_expected {
            failed.push(name.clone());
        }
        let stem = name.trim_end_matches(".toml");
        if let Some((_, title)) = FIGURES.iter().find(|(figure, _)| *figure == stem) {
            let title = format!("{title}: {} steps", outcome.exploration.max_depth);
            figure_matches_the_docs(&outcome.exploration, stem, &title);
        }
        // A row that gives the counterexample's length, "(N steps)", is held to it.
        let row = docs.lines().find(|line| line.contains(&format!("`checks/{name}`"))).expect("a row");
        if let Some(steps) = row.rsplit_once("(").and_then(|(_, tail)| tail.strip_suffix(" steps) |")) {
            let steps: usize = steps.parse().unwrap_or_else(|_| panic!("{name}: the row's step count"));
            assert_eq!(outcome.exploration.max_depth, steps, "{name}: the docs' step count");
        }
    }
    assert!(failed.is_empty(), "not as expected: {failed:?}");
}
