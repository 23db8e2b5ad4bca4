//! What the CLI tests share: the binary, a run that must succeed, a CSV's rows by column
//! name, and the `qlab node` processes of a cluster as `/proc` shows them.

#![allow(dead_code)] // each test crate uses its own part

use std::path::Path;
use std::process::{Command, Output};

pub fn qlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qlab"))
}

/// Run `cmd` and demand success, printing its output otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("qlab runs");
    assert!(
        out.status.success(),
        "qlab failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One row of a CSV file, by column name.
pub type Row = std::collections::HashMap<String, String>;

/// The rows of the CSV file at `path` (a run's `trials.csv`, `summary.csv`, ...).
pub fn csv_rows(path: &Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader.records().map(|r| header.iter().cloned().zip(r.unwrap().iter().map(String::from)).collect()).collect()
}

/// Process ids of `qlab node` processes whose command line names a path under `dir`.
pub fn nodes_of(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(" node ") && cmdline.contains(&needle)
        })
        .collect()
}
