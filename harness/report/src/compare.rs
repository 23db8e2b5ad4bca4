//! `qlab compare A B`: the same experiment run twice — at two commits, on two machines —
//! point by point.
//!
//! For every point (the kind's point columns) both runs have, and each of the kind's
//! headline metrics, `compare.csv` gives the value in A and in B (the median or mean of
//! the point's trials, as the kind's summary does), the ratio B / A and a 95% bootstrap
//! confidence interval of that ratio (both runs' trials resampled with replacement,
//! 2,000 times, from a fixed seed so the file is the same every time). A ratio whose
//! interval excludes 1 is a change the trials support; one that straddles 1 is noise at
//! this many trials. Points only one run has are listed with the other side empty.
//! `figures/compare_ratios` draws every ratio with its interval against the line at 1.

use crate::error::{ReportError, Result};
use crate::plot::{RatioFigure, RatioRow, write_ratios};
use crate::results::{self, Meta, TRIALS_CSV, Table, fmt_metric, mean, quantile};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// How a metric is summarized over a point's trials.
#[derive(Clone, Copy, Debug)]
pub enum Aggregate {
    Median,
    Mean,
    /// Share of trials whose cell is `true`.
    ShareTrue,
}

impl Aggregate {
    fn name(self) -> &'static str {
        match self {
            Aggregate::Median => "median",
            Aggregate::Mean => "mean",
            Aggregate::ShareTrue => "share",
        }
    }
    fn of(self, values: &[f64]) -> f64 {
        match self {
            Aggregate::Median => {
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                quantile(&sorted, 0.5)
            }
            Aggregate::Mean | Aggregate::ShareTrue => mean(values),
        }
    }
}

/// The metrics compared for each kind, each with its aggregate: what an experiment
/// kind's `compare_metrics` says, looked up by the kind's name (`None`: no such kind).
pub type MetricsOf<'a> = &'a dyn Fn(&str) -> Option<&'static [(&'static str, Aggregate)]>;

const RESAMPLES: usize = 2_000;

/// What `compare` wrote.
pub struct Comparison {
    pub out_dir: PathBuf,
    /// Rows of `compare.csv` (also printed).
    pub rows: Vec<Vec<String>>,
    pub columns: Vec<String>,
    pub figures: Vec<PathBuf>,
    /// What a reader must know beside the ratios: a partial run, a point only one run
    /// has (its ratio is blank, not 1).
    pub notes: Vec<String>,
}

fn values(table: &Table, rows: &[&Vec<String>], column: &str, aggregate: Aggregate) -> Vec<f64> {
    rows.iter()
        .filter_map(|r| match aggregate {
            Aggregate::ShareTrue => table.get(r, column).map(|v| if v == "true" { 1.0 } else { 0.0 }),
            _ => table.number(r, column),
        })
        .collect()
}

/// The 95% bootstrap interval of `agg(b) / agg(a)`.
fn bootstrap_ratio(a: &[f64], b: &[f64], aggregate: Aggregate, rng: &mut ChaCha8Rng) -> (f64, f64) {
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut ratios: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let resample = |v: &[f64], rng: &mut ChaCha8Rng| -> Vec<f64> {
                (0..v.len()).map(|_| v[rng.random_range(0..v.len())]).collect()
            };
            let (ra, rb) = (resample(a, rng), resample(b, rng));
            aggregate.of(&rb) / aggregate.of(&ra)
        })
        .filter(|r| r.is_finite())
        .collect();
    ratios.sort_by(f64::total_cmp);
    (quantile(&ratios, 0.025), quantile(&ratios, 0.975))
}

pub fn compare(a_dir: &Path, b_dir: &Path, out_dir: &Path, metrics_of: MetricsOf) -> Result<Comparison> {
    let (meta_a, meta_b) = (results::read_meta(a_dir)?, results::read_meta(b_dir)?);
    if meta_a.kind != meta_b.kind {
        return Err(ReportError::Usage(format!(
            "{} is a {} run and {} a {} run: compare runs of the same experiment",
            a_dir.display(),
            meta_a.kind,
            b_dir.display(),
            meta_b.kind
        )));
    }
    let Some(metrics) = metrics_of(&meta_a.kind) else {
        return Err(ReportError::Usage(format!("{}: unknown experiment kind {:?}", a_dir.display(), meta_a.kind)));
    };
    let (ta, tb) = (Table::read(&a_dir.join(TRIALS_CSV))?, Table::read(&b_dir.join(TRIALS_CSV))?);
    for (table, dir) in [(&ta, a_dir), (&tb, b_dir)] {
        if table.rows.is_empty() {
            return Err(ReportError::Usage(format!(
                "{}: no trial rows (only the header): nothing to compare",
                dir.join(TRIALS_CSV).display()
            )));
        }
    }
    if out_dir.join("compare.csv").exists() {
        return Err(ReportError::Usage(format!(
            "{} already holds a comparison: choose another --out (a comparison is never overwritten)",
            out_dir.display()
        )));
    }
    let mut notes = Vec::new();
    for (meta, table, dir, name) in [(&meta_a, &ta, a_dir, "A"), (&meta_b, &tb, b_dir, "B")] {
        if let Some(partial) = meta.partial() {
            notes.push(format!("{name} ({}) is a {partial}", dir.display()));
        }
        if table.torn_last_row_bytes > 0 {
            notes.push(format!(
                "{name}: the last row of {} was cut short ({} bytes) and is left out",
                dir.join(TRIALS_CSV).display(),
                table.torn_last_row_bytes
            ));
        }
    }
    let key_columns: Vec<&str> = ta.point_columns().into_iter().filter(|c| tb.column(c).is_some()).collect();
    let ga = ta.group_by(&key_columns);
    let gb = tb.group_by(&key_columns);
    let mut keys: Vec<Vec<String>> = ga.iter().map(|(k, _)| k.clone()).collect();
    for (k, _) in &gb {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    let mut columns: Vec<String> = key_columns.iter().map(|c| c.to_string()).collect();
    columns.extend(
        [
            "metric",
            "aggregate",
            "trials_a",
            "a",
            "trials_b",
            "b",
            "ratio_b_over_a",
            "ratio_ci95_low",
            "ratio_ci95_high",
        ]
        .map(String::from),
    );
    // Figure labels name only the point columns that differ between points.
    let varying: Vec<usize> = (0..key_columns.len()).filter(|i| keys.iter().any(|k| k[*i] != keys[0][*i])).collect();
    let label_of = |key: &[String]| -> String {
        let parts: Vec<String> = varying.iter().map(|i| format!("{}={}", key_columns[*i], key[*i])).collect();
        if parts.is_empty() { "all".to_string() } else { parts.join(" ") }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0xc0_3a_4e);
    let mut rows = Vec::new();
    let mut figure_rows = Vec::new();
    let mut measured_on_both_sides = false;
    for key in &keys {
        let rows_a: Vec<&Vec<String>> = ga.iter().find(|(k, _)| k == key).map(|(_, r)| r.clone()).unwrap_or_default();
        let rows_b: Vec<&Vec<String>> = gb.iter().find(|(k, _)| k == key).map(|(_, r)| r.clone()).unwrap_or_default();
        if rows_a.is_empty() || rows_b.is_empty() {
            notes.push(format!(
                "point {} has trials only in {}: its ratios are blank",
                label_of(key),
                if rows_a.is_empty() { "B" } else { "A" }
            ));
        }
        for (metric, aggregate) in metrics {
            if ta.column(metric).is_none() || tb.column(metric).is_none() {
                continue;
            }
            let (va, vb) = (values(&ta, &rows_a, metric, *aggregate), values(&tb, &rows_b, metric, *aggregate));
            let (a, b) = (aggregate.of(&va), aggregate.of(&vb));
            measured_on_both_sides |= a.is_finite() && b.is_finite();
            let ratio = b / a;
            let (low, high) = bootstrap_ratio(&va, &vb, *aggregate, &mut rng);
            let mut row = key.clone();
            row.extend([
                metric.to_string(),
                aggregate.name().to_string(),
                rows_a.len().to_string(),
                fmt_metric(a),
                rows_b.len().to_string(),
                fmt_metric(b),
                if ratio.is_finite() { fmt_metric(ratio) } else { String::new() },
                if low.is_finite() { fmt_metric(low) } else { String::new() },
                if high.is_finite() { fmt_metric(high) } else { String::new() },
            ]);
            rows.push(row);
            if ratio.is_finite() {
                figure_rows.push(RatioRow { label: format!("{}: {metric}", label_of(key)), ratio, low, high });
            }
        }
    }
    if !measured_on_both_sides {
        return Err(ReportError::Usage(format!(
            "{} and {} share no point with a number on both sides: nothing to compare",
            a_dir.display(),
            b_dir.display()
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::Io { path: out_dir.to_path_buf(), source: e })?;
    let path = out_dir.join("compare.csv");
    let file = std::fs::File::create(&path).map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.clone(), source: e };
    writer.write_record(&columns).map_err(csv_err)?;
    for row in &rows {
        writer.write_record(row).map_err(csv_err)?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let provenance = |m: &Meta, dir: &Path| {
        format!(
            "{}: {} at {}{} on {} ({} cpus)",
            dir.display(),
            m.experiment,
            &m.git_commit[..m.git_commit.len().min(10)],
            if m.git_dirty { " (dirty)" } else { "" },
            m.machine.hostname,
            m.machine.cpus
        )
    };
    let mut note = format!("A = {}\nB = {}\n", provenance(&meta_a, a_dir), provenance(&meta_b, b_dir));
    for line in &notes {
        note += &format!("note: {line}\n");
    }
    let note_path = out_dir.join("compare.txt");
    std::fs::write(&note_path, &note).map_err(|e| ReportError::Io { path: note_path, source: e })?;
    let figures = if figure_rows.is_empty() {
        Vec::new()
    } else {
        let figure = RatioFigure {
            title: format!("{} vs {}: B / A per point (95% bootstrap CI)", meta_b.experiment, meta_a.experiment),
            rows: figure_rows,
        };
        write_ratios(out_dir, "compare_ratios", &figure)?
    };
    Ok(Comparison { out_dir: out_dir.to_path_buf(), rows, columns, figures, notes })
}
