//! Wall time of the whole `experiments/raft-figure16.toml` run (20,000 election
//! trials, CSV, summary and figures) in release mode on all cores.

use criterion::{Criterion, criterion_group, criterion_main};
use qlab_lab::run::{RunOptions, run_experiment};
use std::path::PathBuf;
use std::time::Duration;

fn figure16(c: &mut Criterion) {
    let experiment = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/raft-figure16.toml");
    let out = std::env::temp_dir().join(format!("qlab-bench-figure16-{}", std::process::id()));
    let mut group = c.benchmark_group("experiments");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(40));
    group.bench_function("raft_figure16_full_run", |b| {
        b.iter(|| {
            let options = RunOptions { out: Some(out.clone()), force: true, ..RunOptions::default() };
            let report = run_experiment(&experiment, &options).expect("figure 16 runs");
            assert_eq!(report.trials, 20_000);
            report
        });
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&out);
}

criterion_group!(benches, figure16);
criterion_main!(benches);
