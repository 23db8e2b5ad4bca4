//! Criterion's measurements as a committed CSV, so docs/benchmarks.md's table is
//! generated from results like every other table instead of copied from a terminal.
//!
//! `cargo bench` leaves, for each benchmark, `target/criterion/<id>/new/benchmark.json`
//! (its group, function, parameter and declared throughput) and `estimates.json` (the
//! bootstrap estimates of the time per iteration, each with a 95% confidence interval).
//! [`import`] walks that tree and writes one row per benchmark: the median time and the
//! interval of the mean, and, for a benchmark that declares a throughput, the elements
//! (or bytes) per second the median time gives.

use crate::error::{ReportError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the imported measurements live, relative to the repository root.
pub const BENCHMARKS_CSV: &str = "results/benchmarks/reference/criterion.csv";

/// One benchmark: its id as criterion prints it, and what one iteration cost.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchmarkRow {
    /// `group/function/parameter`, as `cargo bench` prints it.
    pub benchmark: String,
    pub group: String,
    pub function: String,
    pub parameter: String,
    pub time_ns_median: f64,
    pub time_ns_mean: f64,
    /// The 95% confidence interval of the mean time.
    pub time_ns_mean_lower: f64,
    pub time_ns_mean_upper: f64,
    /// What one iteration does, as the benchmark declares it (`Throughput::Elements`
    /// or `Throughput::Bytes`); empty if it declares nothing.
    pub elements_per_iteration: Option<u64>,
    pub bytes_per_iteration: Option<u64>,
    /// Elements (or bytes) per second at the median time, and over the interval's ends.
    pub elements_per_s_median: Option<f64>,
    pub elements_per_s_lower: Option<f64>,
    pub elements_per_s_upper: Option<f64>,
    pub bytes_per_s_median: Option<f64>,
}

#[derive(Deserialize)]
struct BenchmarkJson {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    full_id: String,
    throughput: Option<ThroughputJson>,
}

#[derive(Deserialize)]
enum ThroughputJson {
    Elements(u64),
    Bytes(u64),
    BytesDecimal(u64),
    ElementsAndBytes { elements: u64, bytes: u64 },
}

#[derive(Deserialize)]
struct EstimatesJson {
    mean: Estimate,
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
    serde_json::from_str(&text).map_err(|e| ReportError::Usage(format!("{}: {e}", path.display())))
}

/// Every `new/benchmark.json` under `dir`, depth first, in name order.
fn benchmark_dirs(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ReportError::Io { path: dir.to_path_buf(), source: e })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if !path.is_dir() || path.file_name().is_some_and(|n| n == "report") {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") && path.join("benchmark.json").is_file() {
            found.push(path);
        } else if path.file_name().is_none_or(|n| n != "base" && n != "change") {
            benchmark_dirs(&path, found)?;
        }
    }
    Ok(())
}

/// The rows for every benchmark criterion measured under `criterion_dir`, sorted by id.
pub fn read(criterion_dir: &Path) -> Result<Vec<BenchmarkRow>> {
    let mut dirs = Vec::new();
    benchmark_dirs(criterion_dir, &mut dirs)?;
    let mut rows = Vec::new();
    for dir in dirs {
        let bench: BenchmarkJson = read_json(&dir.join("benchmark.json"))?;
        let estimates: EstimatesJson = read_json(&dir.join("estimates.json"))?;
        let (elements, bytes) = match bench.throughput {
            Some(ThroughputJson::Elements(n)) => (Some(n), None),
            Some(ThroughputJson::Bytes(n) | ThroughputJson::BytesDecimal(n)) => (None, Some(n)),
            Some(ThroughputJson::ElementsAndBytes { elements, bytes }) => (Some(elements), Some(bytes)),
            None => (None, None),
        };
        let per_s = |count: Option<u64>, ns: f64| count.map(|c| c as f64 * 1e9 / ns);
        let mean = &estimates.mean;
        rows.push(BenchmarkRow {
            benchmark: bench.full_id,
            group: bench.group_id,
            function: bench.function_id.unwrap_or_default(),
            parameter: bench.value_str.unwrap_or_default(),
            time_ns_median: estimates.median.point_estimate,
            time_ns_mean: mean.point_estimate,
            time_ns_mean_lower: mean.confidence_interval.lower_bound,
            time_ns_mean_upper: mean.confidence_interval.upper_bound,
            elements_per_iteration: elements,
            bytes_per_iteration: bytes,
            elements_per_s_median: per_s(elements, estimates.median.point_estimate),
            // A longer time is a lower rate: the interval's ends swap.
            elements_per_s_lower: per_s(elements, mean.confidence_interval.upper_bound),
            elements_per_s_upper: per_s(elements, mean.confidence_interval.lower_bound),
            bytes_per_s_median: per_s(bytes, estimates.median.point_estimate),
        });
    }
    rows.sort_by(|a, b| a.benchmark.cmp(&b.benchmark));
    Ok(rows)
}

/// Write `criterion_dir`'s measurements to `out`, replacing the rows of benchmarks it
/// measured and keeping the others (so `cargo bench -p one-crate` updates only its own).
/// Returns how many rows were written in all.
pub fn import(criterion_dir: &Path, out: &Path) -> Result<usize> {
    let measured = read(criterion_dir)?;
    if measured.is_empty() {
        return Err(ReportError::Usage(format!(
            "{}: no criterion measurements (run `cargo bench` first)",
            criterion_dir.display()
        )));
    }
    let mut rows: Vec<BenchmarkRow> = Vec::new();
    if out.is_file() {
        let mut reader =
            csv::Reader::from_path(out).map_err(|e| ReportError::Csv { path: out.to_path_buf(), source: e })?;
        for row in reader.deserialize::<BenchmarkRow>() {
            let row = row.map_err(|e| ReportError::Csv { path: out.to_path_buf(), source: e })?;
            if !measured.iter().any(|m| m.benchmark == row.benchmark) {
                rows.push(row);
            }
        }
    }
    rows.extend(measured);
    rows.sort_by(|a, b| a.benchmark.cmp(&b.benchmark));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ReportError::Io { path: parent.to_path_buf(), source: e })?;
    }
    let mut writer =
        csv::Writer::from_path(out).map_err(|e| ReportError::Csv { path: out.to_path_buf(), source: e })?;
    for row in &rows {
        writer.serialize(row).map_err(|e| ReportError::Csv { path: out.to_path_buf(), source: e })?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: out.to_path_buf(), source: e })?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(root: &Path, id: &str, throughput: &str, median_ns: f64) {
        let dir = root.join(id).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        let parts: Vec<&str> = id.split('/').collect();
        let function = parts.get(1).map_or("null".to_string(), |f| format!("\"{f}\""));
        let value = parts.get(2).map_or("null".to_string(), |v| format!("\"{v}\""));
        std::fs::write(
            dir.join("benchmark.json"),
            format!(
                r#"{{"group_id":"{}","function_id":{function},"value_str":{value},"throughput":{throughput},"full_id":"{id}","directory_name":"{id}","title":"{id}"}}"#,
                parts[0]
            ),
        )
        .unwrap();
        let estimate = |point: f64| {
            format!(
                r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{},"upper_bound":{}}},"point_estimate":{point},"standard_error":1.0}}"#,
                point * 0.9,
                point * 1.1
            )
        };
        std::fs::write(
            dir.join("estimates.json"),
            format!(
                r#"{{"mean":{},"median":{},"median_abs_dev":{},"slope":null,"std_dev":{}}}"#,
                estimate(median_ns),
                estimate(median_ns),
                estimate(1.0),
                estimate(1.0)
            ),
        )
        .unwrap();
    }

    /// Rates come from the declared throughput; a re-import replaces only what it measured.
    #[test]
    fn criterion_output_becomes_rows_and_a_partial_run_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let criterion = dir.path().join("criterion");
        measurement(&criterion, "leader_step/raft/3", r#"{"Elements":3}"#, 1000.0);
        measurement(&criterion, "ed25519/sign", r#"{"Elements":1}"#, 20_000.0);
        measurement(&criterion, "blake3/128", r#"{"Bytes":128}"#, 280.0);
        let out = dir.path().join("results/benchmarks/reference/criterion.csv");
        assert_eq!(import(&criterion, &out).unwrap(), 3);
        let rows = read(&criterion).unwrap();
        let raft = rows.iter().find(|r| r.benchmark == "leader_step/raft/3").unwrap();
        assert_eq!(
            (raft.group.as_str(), raft.function.as_str(), raft.parameter.as_str()),
            ("leader_step", "raft", "3")
        );
        assert!((raft.elements_per_s_median.unwrap() - 3e6).abs() < 1e-6);
        assert!(raft.elements_per_s_lower.unwrap() < raft.elements_per_s_upper.unwrap());
        let blake = rows.iter().find(|r| r.benchmark == "blake3/128").unwrap();
        assert!(blake.elements_per_s_median.is_none() && blake.bytes_per_s_median.unwrap() > 4.5e8);

        let again = dir.path().join("again");
        measurement(&again, "ed25519/sign", r#"{"Elements":1}"#, 10_000.0);
        assert_eq!(import(&again, &out).unwrap(), 3, "the other two rows are kept");
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("benchmark,group,function,parameter,time_ns_median,"), "{text}");
        assert!(
            text.contains("ed25519/sign,ed25519,,,10000.0,") || text.contains("ed25519/sign,ed25519,sign,,10000.0,")
        );
        assert!(import(&dir.path().join("empty-nothing"), &out).is_err());
    }
}
