//! Every check file in `checks/` holds: its search finds what the file expects (a
//! violation, or none within the bounds), so each row of docs/model-checking.md's table
//! of check files is a claim this test can refute.

use qlab_lab::check::run_check;

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
        let outcome = run_check(file, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{name}:\n  {}", outcome.report.join("\n  "));
        if !outcome.as_expected {
            failed.push(name.clone());
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
