//! The run directory: trial rows appended as they finish, the summary, provenance.

use crate::error::{ReportError, Result};
use qlab_check::Verdict;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const TRIALS_CSV: &str = "trials.csv";
pub const SUMMARY_CSV: &str = "summary.csv";
pub const META_JSON: &str = "meta.json";
pub const EXPERIMENT_TOML: &str = "experiment.toml";
pub const FIGURES_DIR: &str = "figures";

/// What an attack group's trials amount to: the first-broken invariants of its unsafe
/// trials (sorted, each once) and its verdict — `broken` (`violated in k of N`) before
/// `stalled` (`stalled in k of N`) before inconclusive before `calm` — with inconclusive
/// trials kept visible beside a worse finding. `stalled` is the count and its word.
fn attack_outcome(
    table: &Table,
    rows: usize,
    unsafe_rows: &[&&Vec<String>],
    (stalled, stalled_word): (usize, &str),
    inconclusive: usize,
    (broken_word, calm): (&str, String),
) -> (String, String) {
    let mut invariants: Vec<&str> =
        unsafe_rows.iter().filter_map(|r| table.get(r, "invariant")).filter(|i| !i.is_empty()).collect();
    invariants.sort_unstable();
    invariants.dedup();
    let mut verdict = if !unsafe_rows.is_empty() {
        format!("{broken_word} in {} of {rows}", unsafe_rows.len())
    } else if stalled > 0 {
        format!("{stalled_word} in {stalled} of {rows}")
    } else if inconclusive > 0 {
        format!("inconclusive in {inconclusive} of {rows}")
    } else {
        calm
    };
    if inconclusive > 0 && !verdict.starts_with("inconclusive") {
        verdict.push_str(&format!("; inconclusive in {inconclusive}"));
    }
    (invariants.join(" "), verdict)
}

/// The attack matrix from an attack `trials.csv`: `summary.csv` with one row per
/// (protocol, mode, nodes, attack, malicious, leader fault) — seeds, unsafe runs, runs
/// that did not recover, runs in which a malicious replica was leading when the attack
/// began, runs that could not run, the first unsafe trial, the mean throughput before,
/// during and after the attack window, what the honest replicas and the transports
/// refused, and the verdict (`safe`, `violated in k of N`, `stalled in k of N`) — and the
/// same as a Markdown table in `matrix.md`. A real-mode row also says whether its
/// verdict agrees with the simulated row of the same attack (`agrees_with_sim`: both
/// safe in every seed, or both broken in some; empty without a simulated twin).
pub fn summarize_attack(table: &Table, dir: &Path) -> Result<()> {
    let path = dir.join(SUMMARY_CSV);
    let file = File::create(&path).map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.clone(), source: e };
    // Files written before the mode and leader-fault columns group as one mode, calm.
    let key = ["protocol", "mode", "nodes", "attack", "malicious", "leader_fault"];
    writer
        .write_record(key.iter().copied().chain([
            "seeds",
            "unsafe",
            "not_recovered",
            "attacker_led",
            "errors",
            "first_unsafe_trial",
            "invariants",
            "inconclusive",
            "ops_per_s_before_mean",
            "ops_per_s_during_mean",
            "ops_per_s_after_mean",
            "forgeries_refused",
            "malformed_frames",
            "nodes_exited",
            "verdict",
            "agrees_with_sim",
        ]))
        .map_err(csv_err)?;
    let mut markdown = String::from(
        "| protocol | mode | nodes | attack | malicious | leader fault | attacker led | verdict | invariants broken | \
         agrees with sim |\n|---|---|---:|---|---:|---|---:|---|---|---|\n",
    );
    let groups = table.group_by(&key);
    // Whether some seed of a group broke safety, by the group's key without its mode.
    let broken_by_key: Vec<(Vec<String>, bool)> = groups
        .iter()
        .map(|(values, rows)| (values.clone(), rows.iter().any(|r| table.verdict(r).is_some_and(|v| v.is_unsafe()))))
        .collect();
    let sim_twin_broken = |values: &[String]| -> Option<bool> {
        broken_by_key
            .iter()
            .find(|(other, _)| {
                other[1] == "sim" && other.iter().zip(values).enumerate().all(|(i, (a, b))| i == 1 || a == b)
            })
            .map(|(_, broken)| *broken)
    };
    for (values, rows) in &groups {
        let unsafe_rows: Vec<&&Vec<String>> =
            rows.iter().filter(|r| table.verdict(r).is_some_and(|v| v.is_unsafe())).collect();
        let inconclusive = table.inconclusive_count(rows);
        let errors = rows.iter().filter(|r| table.get(r, "safety") == Some("error")).count();
        let not_recovered = rows
            .iter()
            .filter(|r| table.get(r, "recovered") == Some("false") && table.get(r, "safety") != Some("error"))
            .count();
        // Seeds in which the attack began with a malicious replica leading (replicas
        // 0..malicious are the malicious ones).
        let attacker_led = rows
            .iter()
            .filter(|r| {
                let leader = table.number(r, "leader_at_attack");
                leader.zip(table.number(r, "malicious")).is_some_and(|(leader, malicious)| leader < malicious)
            })
            .count();
        let n = rows.len();
        let (invariants, mut verdict) = attack_outcome(
            table,
            n,
            &unsafe_rows,
            (not_recovered, "stalled"),
            inconclusive,
            ("violated", "safe".to_string()),
        );
        if errors > 0 {
            verdict.push_str(&format!("; could not run in {errors}"));
        }
        let first = unsafe_rows
            .iter()
            .filter_map(|r| table.get(r, "trial").and_then(|t| t.parse::<u64>().ok()))
            .min()
            .map_or(String::new(), |t| t.to_string());
        let mean_of = |column: &str| {
            let values: Vec<f64> = rows.iter().filter_map(|r| table.number(r, column)).collect();
            if values.is_empty() {
                String::new()
            } else {
                format!("{:.3}", values.iter().sum::<f64>() / values.len() as f64)
            }
        };
        let sum_of = |column: &str| {
            let values: Vec<f64> = rows.iter().filter_map(|r| table.number(r, column)).collect();
            if values.is_empty() { String::new() } else { format!("{}", values.iter().sum::<f64>()) }
        };
        // A real row none of whose trials ran says nothing about agreement.
        let agrees = if values[1] == "sim" || values[1].is_empty() || errors == n {
            String::new()
        } else {
            sim_twin_broken(values).map_or(String::new(), |sim_broken| {
                let real_broken = !unsafe_rows.is_empty();
                if sim_broken == real_broken { "yes".into() } else { "no".into() }
            })
        };
        let mut record = values.clone();
        record.extend([
            n.to_string(),
            unsafe_rows.len().to_string(),
            not_recovered.to_string(),
            attacker_led.to_string(),
            errors.to_string(),
            first,
            invariants.clone(),
            inconclusive.to_string(),
            mean_of("ops_per_s_before"),
            mean_of("ops_per_s_during"),
            mean_of("ops_per_s_after"),
            sum_of("forgeries_refused"),
            sum_of("malformed_frames"),
            sum_of("nodes_exited"),
            verdict.clone(),
            agrees.clone(),
        ]);
        writer.write_record(&record).map_err(csv_err)?;
        markdown.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {attacker_led} of {n} | {verdict} | {} | {agrees} |\n",
            values[0],
            values[1],
            values[2],
            values[3],
            values[4],
            values[5],
            invariants.replace(' ', ", ")
        ));
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let md = dir.join("matrix.md");
    std::fs::write(&md, markdown).map_err(|e| ReportError::Io { path: md, source: e })
}

/// The attack-chaos summary from its `trials.csv`: one row per (protocol, nodes, attack,
/// malicious) — trials, unsafe ones, ones not live after the heal, inconclusive ones, the
/// invariants broken, the first unsafe trial, mean operations completed, and the verdict
/// (`unsafe in k of N`, `not live in k of N`, `safe and live in all N`).
pub fn summarize_attack_chaos(table: &Table, dir: &Path) -> Result<()> {
    #[derive(Serialize)]
    struct Row<'a> {
        protocol: &'a str,
        nodes: &'a str,
        attack: &'a str,
        malicious: &'a str,
        trials: usize,
        #[serde(rename = "unsafe")]
        unsafe_trials: usize,
        not_live: usize,
        inconclusive: usize,
        invariants: String,
        first_unsafe_trial: String,
        operations_mean: String,
        verdict: String,
    }
    let path = dir.join(SUMMARY_CSV);
    let mut writer = csv::Writer::from_path(&path).map_err(|e| ReportError::Csv { path: path.clone(), source: e })?;
    for (values, rows) in table.group_by(&["protocol", "nodes", "attack", "malicious"]) {
        let unsafe_rows: Vec<&&Vec<String>> =
            rows.iter().filter(|r| table.verdict(r).is_some_and(|v| v.is_unsafe())).collect();
        let not_live = rows.iter().filter(|r| table.get(r, "live_after_heal") == Some("false")).count();
        let inconclusive = table.inconclusive_count(&rows);
        let n = rows.len();
        let (invariants, verdict) = attack_outcome(
            table,
            n,
            &unsafe_rows,
            (not_live, "safe; not live"),
            inconclusive,
            ("unsafe", format!("safe and live in all {n}")),
        );
        let operations: Vec<f64> = rows.iter().filter_map(|r| table.number(r, "operations")).collect();
        let row = Row {
            protocol: &values[0],
            nodes: &values[1],
            attack: &values[2],
            malicious: &values[3],
            trials: n,
            unsafe_trials: unsafe_rows.len(),
            not_live,
            inconclusive,
            invariants,
            // The lowest trial number, not the first row: rows land in the order the
            // jobs finished them, and the summary must not depend on that.
            first_unsafe_trial: unsafe_rows
                .iter()
                .filter_map(|r| table.get(r, "trial").and_then(|t| t.parse::<u64>().ok()))
                .min()
                .map_or(String::new(), |t| t.to_string()),
            operations_mean: if operations.is_empty() { String::new() } else { format!("{:.1}", mean(&operations)) },
            verdict,
        };
        writer.serialize(&row).map_err(|e| ReportError::Csv { path: path.clone(), source: e })?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.clone(), source: e })
}

/// Write `summary.csv` and `coverage.csv` from a chaos `trials.csv`: per protocol and
/// cluster size (and per protocol over every size, `nodes` empty) the seeds, how many
/// were ok, unsafe, not live after the heal and inconclusive, the invariants broken, the
/// lowest failing trial and its seed (what to replay first), and a verdict; per
/// protocol and coverage mark the seeds that reached it.
pub fn summarize_chaos(table: &Table, dir: &Path) -> Result<()> {
    #[derive(Serialize)]
    struct Row {
        protocol: String,
        nodes: String,
        seeds: usize,
        ok: usize,
        #[serde(rename = "unsafe")]
        unsafe_seeds: usize,
        not_live: usize,
        inconclusive: usize,
        errors: usize,
        invariants: String,
        first_failing_trial: String,
        first_failing_seed: String,
        verdict: String,
    }
    let path = dir.join(SUMMARY_CSV);
    let csv_error = |path: &Path| {
        let path = path.to_path_buf();
        move |e| ReportError::Csv { path: path.clone(), source: e }
    };
    let mut writer = csv::Writer::from_path(&path).map_err(csv_error(&path))?;
    let word = |row: &Vec<String>| table.get(row, "verdict").unwrap_or("").to_string();
    let mut groups = Vec::new();
    for (key, rows) in table.group_by(&["protocol"]) {
        let mut by_size: Vec<(String, Vec<&Vec<String>>)> = Vec::new();
        for row in &rows {
            let nodes = table.get(row, "nodes").unwrap_or("").to_string();
            if nodes.is_empty() {
                // A trial that could not run drew no size its row records: it counts
                // in the protocol's total alone.
                continue;
            }
            match by_size.iter_mut().find(|(n, _)| *n == nodes) {
                Some((_, list)) => list.push(row),
                None => by_size.push((nodes, vec![row])),
            }
        }
        by_size.sort_by_key(|(n, _)| n.parse::<u64>().unwrap_or(u64::MAX));
        for (nodes, list) in by_size {
            groups.push((key[0].clone(), nodes, list));
        }
        // Every size together: `nodes` empty (the column holds numbers).
        groups.push((key[0].clone(), String::new(), rows));
    }
    for (protocol, nodes, rows) in groups {
        let count = |w: &str| rows.iter().filter(|r| word(r) == w).count();
        let errors = rows.iter().filter(|r| table.get(r, "safety") == Some("error")).count();
        let failing: Vec<&&Vec<String>> = rows.iter().filter(|r| word(r) != "ok").collect();
        let first = failing
            .iter()
            .filter_map(|r| Some((table.get(r, "trial")?.parse::<u64>().ok()?, table.get(r, "seed")?.to_string())))
            .min();
        let mut invariants: Vec<&str> =
            rows.iter().filter_map(|r| table.get(r, "invariant")).filter(|i| !i.is_empty()).collect();
        invariants.sort();
        invariants.dedup();
        let (unsafe_seeds, not_live, inconclusive) = (count("unsafe"), count("not-live"), count("inconclusive"));
        let n = rows.len();
        let verdict = if unsafe_seeds > 0 {
            format!("UNSAFE in {unsafe_seeds} of {n}")
        } else if errors > 0 {
            format!("{errors} of {n} could not run")
        } else if not_live > 0 {
            format!("safe; not live in {not_live} of {n}")
        } else if inconclusive > 0 {
            format!("no violation; {inconclusive} of {n} inconclusive")
        } else {
            format!("safe and live in all {n}")
        };
        let row = Row {
            protocol,
            nodes,
            seeds: n,
            ok: count("ok"),
            unsafe_seeds,
            not_live,
            inconclusive,
            errors,
            invariants: invariants.join("; "),
            first_failing_trial: first.as_ref().map_or(String::new(), |(t, _)| t.to_string()),
            first_failing_seed: first.map_or(String::new(), |(_, s)| s),
            verdict,
        };
        writer.serialize(&row).map_err(csv_error(&path))?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.clone(), source: e })?;

    let coverage = dir.join("coverage.csv");
    let mut writer = csv::Writer::from_path(&coverage).map_err(csv_error(&coverage))?;
    writer.write_record(["protocol", "mark", "seeds", "seeds_reaching", "share"]).map_err(csv_error(&coverage))?;
    for (key, rows) in table.group_by(&["protocol"]) {
        let names = |row: &Vec<String>, column: &str| -> Vec<String> {
            table
                .get(row, column)
                .unwrap_or("")
                .split("; ")
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut marks: BTreeMap<String, usize> = BTreeMap::new();
        for row in &rows {
            for name in names(row, "marks_missed") {
                marks.entry(name).or_default();
            }
            for name in names(row, "marks_reached") {
                *marks.entry(name).or_default() += 1;
            }
        }
        for (mark, reaching) in marks {
            let share = format!("{:.3}", reaching as f64 / rows.len().max(1) as f64);
            writer
                .write_record([key[0].as_str(), &mark, &rows.len().to_string(), &reaching.to_string(), &share])
                .map_err(csv_error(&coverage))?;
        }
    }
    writer.flush().map_err(|e| ReportError::Io { path: coverage, source: e })
}

/// Write `summary.csv` from a disruption `trials.csv`: per point, the trials, mean
/// throughput, median and worst client-visible outage, mean elections and epochs
/// advanced, and the unsafe trials.
pub fn summarize_disruption(table: &Table, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.to_path_buf(), source: e };
    writer
        .write_record(table.point_columns().into_iter().chain([
            "trials",
            "ops_per_s_mean",
            "unavailable_ms_p50",
            "unavailable_ms_max",
            "elections_mean",
            "epochs_advanced_mean",
            "unsafe",
            "inconclusive",
        ]))
        .map_err(csv_err)?;
    for (values, rows) in table.group_by(&table.point_columns()) {
        let column = |name: &str| -> Vec<f64> { rows.iter().filter_map(|r| table.number(r, name)).collect() };
        let unsafe_trials = table.unsafe_count(&rows);
        let mut outages = column("unavailable_ms");
        outages.sort_by(f64::total_cmp);
        let mut record = values.clone();
        record.extend([
            rows.len().to_string(),
            fmt_metric(mean(&column("ops_per_s"))),
            fmt_metric(quantile(&outages, 0.5)),
            fmt_metric(outages.last().copied().unwrap_or(f64::NAN)),
            fmt_metric(mean(&column("elections"))),
            fmt_metric(mean(&column("epochs_advanced"))),
            unsafe_trials.to_string(),
            table.inconclusive_count(&rows).to_string(),
        ]);
        writer.write_record(&record).map_err(csv_err)?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// Write `summary.csv` from an availability `trials.csv`: per point, the trials, the
/// mean share of time with a majority-backed leader (whole run and after the failures)
/// and the unsafe trials.
pub fn summarize_availability(table: &Table, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.to_path_buf(), source: e };
    writer
        .write_record(table.point_columns().into_iter().chain([
            "trials",
            "available_fraction_mean",
            "available_after_failures_mean",
            "unsafe",
            "inconclusive",
        ]))
        .map_err(csv_err)?;
    for (values, rows) in table.group_by(&table.point_columns()) {
        let column = |name: &str| -> Vec<f64> { rows.iter().filter_map(|r| table.number(r, name)).collect() };
        let unsafe_trials = table.unsafe_count(&rows);
        let mut record = values.clone();
        record.extend([
            rows.len().to_string(),
            fmt_metric(mean(&column("available_fraction"))),
            fmt_metric(mean(&column("available_after_failures"))),
            unsafe_trials.to_string(),
            table.inconclusive_count(&rows).to_string(),
        ]);
        writer.write_record(&record).map_err(csv_err)?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// The read-mode table from a reads `trials.csv`: `summary.csv` with one row per point —
/// trials, how many histories were not linearizable (and the first such trial), other
/// checker failures, trials not served again after healing, median read and write
/// latency and messages per operation over the trials, and the verdict — and the same
/// as Markdown in `reads.md`.
pub fn summarize_reads(table: &Table, dir: &Path) -> Result<()> {
    let path = dir.join(SUMMARY_CSV);
    let file = File::create(&path).map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.clone(), source: e };
    writer
        .write_record(table.point_columns().into_iter().chain([
            "trials",
            "not_linearizable",
            "first_not_linearizable_trial",
            "other_violations",
            "not_live",
            "read_latency_ms_p50",
            "write_latency_ms_p50",
            "msgs_per_op",
            "verdict",
        ]))
        .map_err(csv_err)?;
    let mut markdown = String::from(
        "| protocol | mode | n | read mode | faults | clock skew | trials | verdict | read p50 (ms) | write p50 (ms) | \
         msgs/op |\n|---|---|---:|---|---|---:|---:|---|---:|---:|---:|\n",
    );
    let point_columns = table.point_columns();
    for (values, rows) in table.group_by(&point_columns) {
        // By name: a column added to the row type moves the others. Runs from before
        // the `mode` column were all simulated.
        let point = |name: &str| point_columns.iter().position(|c| *c == name).map_or("", |i| values[i].as_str());
        let mode = if table.column("mode").is_some() { point("mode") } else { "sim" };
        let median_of = |name: &str| -> f64 {
            let mut v: Vec<f64> = rows.iter().filter_map(|r| table.number(r, name)).collect();
            v.sort_by(f64::total_cmp);
            quantile(&v, 0.5)
        };
        let stale: Vec<&&Vec<String>> = rows.iter().filter(|r| table.get(r, "linearizable") == Some("no")).collect();
        let inconclusive = rows.iter().filter(|r| table.get(r, "linearizable") == Some("inconclusive")).count();
        let other = rows
            .iter()
            .filter(|r| {
                table.verdict(r).is_some_and(|v| v.is_unsafe())
                    && table.get(r, "linearizable") != Some("no")
                    && table.get(r, "violations").is_some_and(|v| !v.is_empty())
            })
            .count();
        let not_live = rows.iter().filter(|r| table.get(r, "live_after_heal") == Some("false")).count();
        let n = rows.len();
        let verdict = match (stale.len(), inconclusive) {
            (0, 0) => format!("linearizable in all {n}"),
            (0, k) => format!("linearizable in {} of {n}, {k} inconclusive", n - k),
            (k, _) => format!("stale in {k} of {n}"),
        };
        let (read_p50, write_p50, msgs) =
            (median_of("read_latency_ms_p50"), median_of("write_latency_ms_p50"), median_of("msgs_per_op"));
        let mut record = values.clone();
        record.extend([
            n.to_string(),
            stale.len().to_string(),
            // The lowest trial number, not the first row: rows land in completion order.
            stale
                .iter()
                .filter_map(|r| table.get(r, "trial")?.parse::<u64>().ok())
                .min()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            other.to_string(),
            not_live.to_string(),
            fmt_metric(read_p50),
            fmt_metric(write_p50),
            fmt_metric(msgs),
            verdict.clone(),
        ]);
        writer.write_record(&record).map_err(csv_err)?;
        let skew_ppm: f64 = point("clock_skew_ppm").parse().unwrap_or(f64::NAN);
        markdown.push_str(&format!(
            "| {} | {mode} | {} | {} | {} | {}% | {n} | {verdict} | {} | {} | {} |\n",
            point("protocol"),
            point("nodes"),
            point("read_mode"),
            point("fault_profile"),
            skew_ppm / 1e4,
            fmt_metric(read_p50),
            fmt_metric(write_p50),
            fmt_metric(msgs)
        ));
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let md = dir.join("reads.md");
    std::fs::write(&md, markdown).map_err(|e| ReportError::Io { path: md, source: e })
}

/// The counterexample table from a counterexample `trials.csv`: `summary.csv` with one
/// row per case — `case, runs, violations` (runs in which the case's failure showed),
/// `first_failing_seed`, its trial, the `invariant` broken or property shown, runs in
/// which a checker found something the case does not explain, and what the case sets
/// up — and the same as Markdown in `counterexamples.md`.
/// `describe` gives the `description` column from the case's name (the kind knows its
/// cases; the CSV names them).
pub fn summarize_counterexamples(table: &Table, dir: &Path, describe: &dyn Fn(&str) -> String) -> Result<()> {
    let path = dir.join(SUMMARY_CSV);
    let file = File::create(&path).map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.clone(), source: e };
    writer
        .write_record([
            "case",
            "runs",
            "violations",
            "first_failing_seed",
            "first_failing_trial",
            "invariant",
            "unexplained",
            "inconclusive",
            "description",
        ])
        .map_err(csv_err)?;
    let mut markdown = String::from(
        "| case | runs | showed in | first failing trial | invariant or property |\n|---|---:|---:|---:|---|\n",
    );
    for (values, rows) in table.group_by(&table.point_columns()) {
        let showed: Vec<&&Vec<String>> = rows.iter().filter(|r| table.get(r, "showed") == Some("true")).collect();
        let unexplained = table.unsafe_count(&rows);
        let first = showed.iter().min_by_key(|r| table.number(r, "trial").map_or(u64::MAX, |t| t as u64));
        let mut invariants: Vec<&str> = showed.iter().filter_map(|r| table.get(r, "invariant")).collect();
        invariants.sort_unstable();
        invariants.dedup();
        let description = describe(&values[0]);
        let seed = first.and_then(|r| table.get(r, "seed")).unwrap_or("").to_string();
        writer
            .write_record([
                values[0].clone(),
                rows.len().to_string(),
                showed.len().to_string(),
                seed.clone(),
                first.and_then(|r| table.get(r, "trial")).unwrap_or("").to_string(),
                invariants.join("; "),
                unexplained.to_string(),
                table.inconclusive_count(&rows).to_string(),
                description,
            ])
            .map_err(csv_err)?;
        markdown.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            values[0],
            rows.len(),
            showed.len(),
            first.and_then(|r| table.get(r, "trial")).unwrap_or("-"),
            invariants.join("; ")
        ));
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    let md = dir.join("counterexamples.md");
    std::fs::write(&md, markdown).map_err(|e| ReportError::Io { path: md, source: e })
}

/// Write `summary.csv` (one row per point: means over trials) from a throughput `trials.csv`.
pub fn summarize_throughput(table: &Table, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.to_path_buf(), source: e };
    // Only the metrics the trials have: a run recorded before a column existed keeps the
    // summary it was committed with when redrawn.
    let averaged: Vec<&str> = [
        "ops_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
        "latency_ms_p999",
        "msgs_per_op",
        "bytes_per_op",
        "cpu_s_per_node",
        "cpu_s_harness",
        "signatures_made_per_op",
        "signatures_verified_per_op",
        "view_changes",
        "rss_mb_first",
        "rss_mb_max",
        "rss_mb_harness_max",
    ]
    .into_iter()
    .filter(|column| table.column(column).is_some())
    // Open-loop columns only where some trial was open-loop.
    .chain(["arrivals_per_s", "dropped_ops"].into_iter().filter(|column| {
        table.column(column).is_some() && table.rows.iter().any(|row| table.number(row, column).is_some())
    }))
    .collect();
    let mut header: Vec<&str> = table.point_columns();
    header.push("trials");
    header.extend(&averaged);
    header.extend(["unsafe_trials", "inconclusive_trials"]);
    writer.write_record(&header).map_err(csv_err)?;
    for (key, rows) in table.group_by(&table.point_columns()) {
        let mut record = key.clone();
        record.push(rows.len().to_string());
        for column in &averaged {
            let values: Vec<f64> = rows.iter().filter_map(|r| table.number(r, column)).collect();
            record.push(fmt_metric(mean(&values)));
        }
        record.push(table.unsafe_count(&rows).to_string());
        record.push(table.inconclusive_count(&rows).to_string());
        writer.write_record(&record).map_err(csv_err)?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// Appends rows to `trials.csv`, flushing each so an interrupted run keeps them.
pub struct TrialWriter {
    path: PathBuf,
    writer: csv::Writer<File>,
}

impl TrialWriter {
    pub fn create(path: &Path, columns: &[String]) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
        let mut writer = csv::Writer::from_writer(file);
        writer.write_record(columns).map_err(|e| ReportError::Csv { path: path.to_path_buf(), source: e })?;
        let mut w = TrialWriter { path: path.to_path_buf(), writer };
        w.flush()?;
        Ok(w)
    }

    /// Append to the `trials.csv` of a run taken up again (`qlab run --resume`): its
    /// header is there, and a torn last row has already been cut off.
    pub fn reopen(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
        Ok(TrialWriter { path: path.to_path_buf(), writer: csv::Writer::from_writer(file) })
    }

    pub fn append(&mut self, row: &[String]) -> Result<()> {
        self.writer.write_record(row).map_err(|e| ReportError::Csv { path: self.path.clone(), source: e })?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(|e| ReportError::Io { path: self.path.clone(), source: e })
    }
}

/// A CSV read back as header + rows of strings, for plotting and summaries.
#[derive(Clone, Debug)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Bytes of a last row cut short (a writer killed mid-row), left out of `rows`.
    pub torn_last_row_bytes: usize,
}

/// A finite number, as every measured cell is written (a NaN is written empty).
fn finite(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl Table {
    /// Read a CSV whose rows are appended one by one. Every row is written whole and
    /// ends with a newline, so a last line without one is a row a killed writer left
    /// half-written: it is left out and counted, not a reason to refuse the rows
    /// before it. A column that holds numbers in some rows and other text in others is
    /// refused, naming the line and column: a hole in the data is not averaged over.
    pub fn read(path: &Path) -> Result<Table> {
        let mut bytes = std::fs::read(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
        let mut torn_last_row_bytes = 0;
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
            if whole > 0 {
                torn_last_row_bytes = bytes.len() - whole;
                bytes.truncate(whole);
            }
        }
        let csv_error = |e| ReportError::Csv { path: path.to_path_buf(), source: e };
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let columns: Vec<String> = reader.headers().map_err(csv_error)?.iter().map(str::to_string).collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            rows.push(record.map_err(csv_error)?.iter().map(str::to_string).collect::<Vec<String>>());
        }
        let mut table = Table { columns, rows, torn_last_row_bytes };
        table.refuse_holes(path)?;
        table.sort_by_trial();
        Ok(table)
    }

    /// Rows in the order of their `trial` column, where there is one: a run with several
    /// jobs appends rows as trials finish, and shards of one run are merged in any order,
    /// but every summary and figure is to be the same as one run's in trial order.
    fn sort_by_trial(&mut self) {
        let Some(at) = self.column("trial") else { return };
        let number = |row: &Vec<String>| row.get(at).and_then(|cell| cell.parse::<u64>().ok());
        if self.rows.iter().all(|row| number(row).is_some()) {
            self.rows.sort_by_key(|row| number(row));
        }
    }

    /// Refuse a column that mixes numbers with other text (line numbers count the header
    /// as line 1).
    fn refuse_holes(&self, path: &Path) -> Result<()> {
        for (c, column) in self.columns.iter().enumerate() {
            let cells = || self.rows.iter().enumerate().filter_map(|(i, r)| Some((i, r.get(c)?.as_str())));
            let nonempty = || cells().filter(|(_, cell)| !cell.is_empty());
            if nonempty().any(|(_, cell)| finite(cell).is_some())
                && let Some((i, cell)) = nonempty().find(|(_, cell)| finite(cell).is_none())
            {
                return Err(ReportError::Usage(format!(
                    "{}:{}: column `{column}` holds {cell:?} where its other rows hold numbers; a hole in the \
                     data is not averaged over (fix or remove the row)",
                    path.display(),
                    i + 2
                )));
            }
        }
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    pub fn get<'a>(&self, row: &'a [String], name: &str) -> Option<&'a str> {
        self.column(name).and_then(|i| row.get(i)).map(String::as_str)
    }

    pub fn number(&self, row: &[String], name: &str) -> Option<f64> {
        self.get(row, name).and_then(finite)
    }

    /// The row's `safety` verdict. Rows written before verdicts were typed may say
    /// `unsafe` without naming invariants: that reads as unsafe with none named.
    pub fn verdict(&self, row: &[String]) -> Option<Verdict> {
        match self.get(row, "safety")? {
            "unsafe" => Some(Verdict::Unsafe(Default::default())),
            text => text.parse().ok(),
        }
    }

    /// Rows of `rows` some checker found unsafe (not those that could not run or were
    /// inconclusive).
    pub fn unsafe_count(&self, rows: &[&Vec<String>]) -> usize {
        rows.iter().filter(|r| self.verdict(r).is_some_and(|v| v.is_unsafe())).count()
    }

    /// Rows of `rows` on which a checker gave up without finding a violation.
    pub fn inconclusive_count(&self, rows: &[&Vec<String>]) -> usize {
        rows.iter().filter(|r| self.verdict(r).is_some_and(|v| v.is_inconclusive())).count()
    }

    /// The columns that describe a trial's point: every column before `trial`, as each
    /// kind's row type puts them first. Summaries group by these, so they read nothing
    /// but the CSV.
    pub fn point_columns(&self) -> Vec<&str> {
        self.columns.iter().map(String::as_str).take_while(|c| *c != "trial").collect()
    }

    /// Rows grouped by the values of `key_columns`, in order of first appearance.
    pub fn group_by(&self, key_columns: &[&str]) -> Vec<(Vec<String>, Vec<&Vec<String>>)> {
        let mut order: Vec<Vec<String>> = Vec::new();
        let mut groups: BTreeMap<Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
        for row in &self.rows {
            let key: Vec<String> = key_columns.iter().map(|c| self.get(row, c).unwrap_or("").to_string()).collect();
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(row);
        }
        order
            .into_iter()
            .map(|k| {
                let rows = groups.remove(&k).unwrap_or_default();
                (k, rows)
            })
            .collect()
    }
}

/// Value at quantile `q` (nearest rank) of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// The first few violations, so one broken run does not make a megabyte cell (the
/// replay prints them all).
pub fn first_violations(violations: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = violations.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if violations.len() > SHOWN {
        text.push_str(&format!("; ... {} more", violations.len() - SHOWN));
    }
    text
}

/// Serde helpers for the fields of a kind's typed trial row: each writes its cell
/// exactly as `trials.csv` has always had it (metrics to three decimals and empty when
/// undefined, point values as Rust prints them).
pub mod cell {
    use serde::Serializer;
    use std::fmt::Display;

    pub fn metric<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::fmt_metric(*value))
    }
    pub fn metric_or_empty<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.map(super::fmt_metric).unwrap_or_default())
    }
    /// `Display`, not serde's own float format (which writes `0` as `0.0`).
    pub fn display<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }
    pub fn display_or_empty<T: Display, S: Serializer>(value: &Option<T>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_str(""),
        }
    }
    /// Counts per timeline bin, space-separated.
    pub fn spaced<S: Serializer>(values: &[u64], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&values.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))
    }
}

/// A typed trial row as the cells `trials.csv` gets, in the order of its fields.
pub fn record<T: serde::Serialize>(row: &T) -> Vec<String> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    writer.serialize(row).expect("a trial row is a flat struct of cells");
    let bytes = writer.into_inner().expect("an in-memory writer flushes");
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
    let record = reader.records().next().expect("one row").expect("what csv wrote, csv reads");
    record.iter().map(str::to_string).collect()
}

/// The header a typed trial row writes: its serde field names, in order.
pub fn header_of<T: serde::Serialize + Default>() -> Vec<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.serialize(T::default()).expect("a trial row is a flat struct of cells");
    let bytes = writer.into_inner().expect("an in-memory writer flushes");
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    reader.headers().expect("a header").iter().map(str::to_string).collect()
}

/// Format a metric for CSV: three decimals, empty for NaN.
pub fn fmt_metric(value: f64) -> String {
    if value.is_nan() { String::new() } else { format!("{value:.3}") }
}

/// Write `summary.csv` (one row per point) from an election `trials.csv`.
pub fn summarize_election(table: &Table, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })?;
    let mut writer = csv::Writer::from_writer(file);
    let csv_err = |e| ReportError::Csv { path: path.to_path_buf(), source: e };
    let mut header: Vec<&str> = table.point_columns();
    header.extend([
        "trials",
        "election_ms_mean",
        "election_ms_p50",
        "election_ms_p90",
        "election_ms_p99",
        "election_ms_max",
        "censored",
        "unavailable_ms_p50",
        "unavailable_ms_p99",
        "terms_mean",
        "broadcast_ms_mean",
        "unsafe_trials",
        "inconclusive_trials",
    ]);
    writer.write_record(&header).map_err(csv_err)?;
    for (key, rows) in table.group_by(&table.point_columns()) {
        let sorted = |name: &str| {
            let mut v: Vec<f64> = rows.iter().filter_map(|r| table.number(r, name)).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let election = sorted("election_ms");
        let unavailable = sorted("unavailable_ms");
        let terms = sorted("terms");
        let censored = rows.iter().filter(|r| table.get(r, "censored") == Some("true")).count();
        // A trial that could not run ("error") is not an unsafe one.
        let unsafe_trials = table.unsafe_count(&rows);
        // Each trial's mean is over its own rounds: weigh it by them.
        let (round_ms, rounds) = rows.iter().fold((0.0, 0.0), |(sum, count), r| {
            match (table.number(r, "broadcast_ms_mean"), table.number(r, "broadcast_rounds")) {
                (Some(mean), Some(n)) => (sum + mean * n, count + n),
                _ => (sum, count),
            }
        });
        let broadcast_ms_mean = if rounds > 0.0 { round_ms / rounds } else { f64::NAN };
        let mut record = key.clone();
        record.extend([
            rows.len().to_string(),
            fmt_metric(mean(&election)),
            fmt_metric(quantile(&election, 0.5)),
            fmt_metric(quantile(&election, 0.9)),
            fmt_metric(quantile(&election, 0.99)),
            fmt_metric(election.last().copied().unwrap_or(f64::NAN)),
            censored.to_string(),
            fmt_metric(quantile(&unavailable, 0.5)),
            fmt_metric(quantile(&unavailable, 0.99)),
            fmt_metric(mean(&terms)),
            fmt_metric(broadcast_ms_mean),
            unsafe_trials.to_string(),
            table.inconclusive_count(&rows).to_string(),
        ]);
        writer.write_record(&record).map_err(csv_err)?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// Provenance of a run.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Meta {
    pub experiment: String,
    pub kind: String,
    pub qlab_version: String,
    pub git_commit: String,
    pub git_dirty: bool,
    /// The cargo profile the binary was built with (`release` keeps debug assertions
    /// and overflow checks; `perf` drops them); empty in runs made before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_assertions: Option<bool>,
    pub seed: u64,
    pub trials_planned: u64,
    pub trials_done: u64,
    pub jobs: usize,
    pub command: Vec<String>,
    pub machine: Machine,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub wall_seconds: Option<f64>,
    /// The run was stopped (Ctrl-C, SIGTERM) before every trial ran: `trials_done`
    /// rows are in `trials.csv`, and its summary covers those alone.
    #[serde(default)]
    pub interrupted: bool,
    /// A shard of a larger run (`qlab run --shard K/N`): it runs the trials whose
    /// number is K modulo N, and `trials_planned` counts those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// When `qlab run --resume` took the run up again, each time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_at: Vec<String>,
    /// The run directories `qlab merge` joined into this one, with their shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

/// Shard `index` of `count`: the trials whose number is `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// `K/N` as the command line gives it, with `K < N`.
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        let (index, count) = text.split_once('/').ok_or_else(|| format!("--shard {text}: expected K/N, like 0/4"))?;
        let number =
            |part: &str| part.trim().parse::<u64>().map_err(|_| format!("--shard {text}: {part:?} is not a number"));
        let shard = Shard { index: number(index)?, count: number(count)? };
        if shard.count == 0 || shard.index >= shard.count {
            return Err(format!("--shard {text}: K must be below N (shards 0/N to {}/N)", shard.count.max(1) - 1));
        }
        Ok(shard)
    }

    /// Whether trial `trial` is this shard's.
    pub fn holds(&self, trial: u64) -> bool {
        trial % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Meta {
    /// `None` for a run that finished every trial; else what a reader of its results
    /// must know: how much of it there is and why.
    pub fn partial(&self) -> Option<String> {
        let done = format!("{} of {} trials", self.trials_done, self.trials_planned);
        if self.interrupted {
            Some(format!("partial run: interrupted after {done}; the summary and figures cover those alone"))
        } else if self.finished_at.is_none() {
            Some(format!(
                "partial run: it never finished (killed, or still running); {done} recorded at its last count, \
                 the summary and figures cover the rows trials.csv holds"
            ))
        } else if self.trials_done < self.trials_planned {
            Some(format!("partial run: {done}"))
        } else {
            None
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub memory_gib: Option<f64>,
}

impl Machine {
    pub fn current() -> Machine {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((kib / 1024.0 / 1024.0 * 10.0).round() / 10.0)
        });
        Machine {
            hostname,
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
        }
    }
}

/// What built the running binary: its commit, whether its source tree had uncommitted
/// changes, and the cargo profile (which says whether debug assertions and overflow
/// checks were on). A result records this, not the checkout's state when it ran: a run
/// made by a binary built yesterday from another commit says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    pub commit: String,
    pub dirty: bool,
    pub profile: String,
    pub debug_assertions: bool,
}

static BUILD: std::sync::OnceLock<Build> = std::sync::OnceLock::new();

/// The binary declares what built it (the `qlab` command does, from its build script)
/// before any run starts; a second call is ignored.
pub fn set_build(build: Build) {
    let _ = BUILD.set(build);
}

/// What built this binary, as declared by [`set_build`]; a program that declared
/// nothing (a test calling the lab as a library) gets the checkout's commit and the
/// profile this crate was compiled with.
pub fn build() -> Build {
    BUILD
        .get_or_init(|| {
            let (commit, dirty) = git_state();
            Build { commit, dirty, profile: env!("QLAB_PROFILE").to_string(), debug_assertions: cfg!(debug_assertions) }
        })
        .clone()
}

/// The commit of the source tree (`unknown` outside a git checkout), and whether it
/// has uncommitted changes.
pub fn git_state() -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

/// Write `meta.json` whole or not at all (a new file renamed over the old one), so a
/// run killed while it updates the count never leaves half a file.
pub fn write_meta(dir: &Path, meta: &Meta) -> Result<()> {
    let path = dir.join(META_JSON);
    let fresh = dir.join(".meta.json.new");
    let text = serde_json::to_string_pretty(meta).expect("meta serializes");
    std::fs::write(&fresh, text + "\n").map_err(|e| ReportError::Io { path: fresh.clone(), source: e })?;
    std::fs::rename(&fresh, &path).map_err(|e| ReportError::Io { path, source: e })
}

pub fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
    serde_json::from_str(&text).map_err(|e| ReportError::Usage(format!("{}: {e}", path.display())))
}

/// Seconds since the Unix epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A least-squares quadratic `y = a x² + b x + c`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuadraticFit {
    /// `[a, b, c]`.
    pub coefficients: [f64; 3],
    /// Share of the variance of `y` the fit explains (1 is exact).
    pub r_squared: f64,
}

impl QuadraticFit {
    pub fn at(&self, x: f64) -> f64 {
        let [a, b, c] = self.coefficients;
        a * x * x + b * x + c
    }

    /// `2.01 n² − 1.95 n + 0.40`, for legends.
    pub fn formula(&self) -> String {
        let [a, b, c] = self.coefficients;
        let term = |v: f64, unit: &str| {
            let shown = format!("{:.2}", v.abs());
            let sign = if v < 0.0 && shown != "0.00" { "− " } else { "+ " };
            format!("{sign}{shown}{unit}")
        };
        let lead = format!("{a:.2}");
        let lead = if lead == "-0.00" { "0.00".to_string() } else { lead };
        format!("{lead} n² {} {}", term(b, " n"), term(c, ""))
    }
}

/// Least squares over at least three distinct `x` (the normal equations, solved by
/// Gaussian elimination with partial pivoting; three unknowns need nothing more).
pub fn fit_quadratic(points: &[(f64, f64)]) -> Option<QuadraticFit> {
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.len() < 3 || points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return None;
    }
    // Sums of x^k for k = 0..4 and of y x^k for k = 0..2.
    let mut sx = [0.0f64; 5];
    let mut sy = [0.0f64; 3];
    for (x, y) in points {
        for (k, s) in sx.iter_mut().enumerate() {
            *s += x.powi(k as i32);
        }
        for (k, s) in sy.iter_mut().enumerate() {
            *s += y * x.powi(k as i32);
        }
    }
    // Unknowns ordered [c, b, a]: row k is sum_j sx[k + j] u_j = sy[k].
    let mut m = [[sx[0], sx[1], sx[2], sy[0]], [sx[1], sx[2], sx[3], sy[1]], [sx[2], sx[3], sx[4], sy[2]]];
    for col in 0..3 {
        let pivot = (col..3).max_by(|i, j| m[*i][col].abs().total_cmp(&m[*j][col].abs()))?;
        m.swap(col, pivot);
        if m[col][col].abs() < 1e-12 {
            return None;
        }
        for row in 0..3 {
            if row != col {
                let factor = m[row][col] / m[col][col];
                let pivot_row = m[col];
                for (value, pivot_value) in m[row].iter_mut().zip(pivot_row).skip(col) {
                    *value -= factor * pivot_value;
                }
            }
        }
    }
    let [c, b, a] = [m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]];
    let fit = QuadraticFit { coefficients: [a, b, c], r_squared: 1.0 };
    let y_mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let total: f64 = points.iter().map(|p| (p.1 - y_mean).powi(2)).sum();
    let residual: f64 = points.iter().map(|p| (p.1 - fit.at(p.0)).powi(2)).sum();
    let r_squared = if total == 0.0 { 1.0 } else { 1.0 - residual / total };
    Some(QuadraticFit { r_squared, ..fit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(utc_timestamp(t), "2026-11-18T11:06:40Z");
    }

    /// A real-mode attack row agrees with its simulated twin when both are safe in every
    /// seed or both broken in some, whatever the counts; rows of other attacks or
    /// windows are not its twin.
    #[test]
    fn an_attack_summary_says_whether_each_real_row_agrees_with_the_simulated_one() {
        let dir = tempfile::tempdir().unwrap();
        let trials = "protocol,mode,nodes,attack,malicious,leader_fault,trial,recovered,leader_at_attack,safety,invariant\n\
            raft,sim,3,forge-log,1,none,0,true,0,state-machine-safety,state-machine-safety\n\
            raft,sim,3,forge-log,1,none,1,true,1,ok,\n\
            raft,quic,3,forge-log,1,none,2,true,0,state-machine-safety,state-machine-safety\n\
            raft,sim,3,forge-log,1,isolate,3,true,0,ok,\n\
            raft,quic,3,forge-log,1,isolate,4,true,1,leader-completeness,leader-completeness\n\
            raft,sim,3,silent,1,none,5,true,0,ok,\n\
            raft,quic,3,silent,1,none,6,false,0,error,\n";
        let path = dir.path().join("trials.csv");
        std::fs::write(&path, trials).unwrap();
        summarize_attack(&Table::read(&path).unwrap(), dir.path()).unwrap();
        let summary = Table::read(&dir.path().join(SUMMARY_CSV)).unwrap();
        let cell = |mode: &str, attack: &str, fault: &str, column: &str| {
            let row = summary
                .rows
                .iter()
                .find(|r| {
                    summary.get(r, "mode") == Some(mode)
                        && summary.get(r, "attack") == Some(attack)
                        && summary.get(r, "leader_fault") == Some(fault)
                })
                .unwrap_or_else(|| panic!("no row {mode} {attack} {fault}"));
            summary.get(row, column).unwrap().to_string()
        };
        assert_eq!(cell("quic", "forge-log", "none", "agrees_with_sim"), "yes");
        assert_eq!(cell("quic", "forge-log", "isolate", "agrees_with_sim"), "no");
        assert_eq!(cell("sim", "forge-log", "none", "agrees_with_sim"), "");
        assert_eq!(cell("sim", "forge-log", "none", "verdict"), "violated in 1 of 2");
        // A trial that could not run is counted as such, not as "not recovered".
        assert_eq!(cell("quic", "silent", "none", "errors"), "1");
        assert_eq!(cell("quic", "silent", "none", "not_recovered"), "0");
        assert!(cell("quic", "silent", "none", "verdict").contains("could not run in 1"));
        assert_eq!(cell("quic", "silent", "none", "agrees_with_sim"), "", "nothing ran, nothing to agree");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.99), 4.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
    }

    #[test]
    fn quadratic_fit_recovers_pbft_normal_case_count() {
        // 2n² − 2n: prepares and commits, each from every replica to every other.
        let points: Vec<(f64, f64)> = [4.0, 7.0, 10.0, 13.0].iter().map(|n| (*n, 2.0 * n * n - 2.0 * n)).collect();
        let fit = super::fit_quadratic(&points).unwrap();
        for (got, want) in fit.coefficients.iter().zip([2.0, -2.0, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{:?}", fit.coefficients);
        }
        assert!((fit.r_squared - 1.0).abs() < 1e-9);
        assert_eq!(fit.formula(), "2.00 n² − 2.00 n + 0.00");
        // A linear count (Raft's 2(n − 1)) has no quadratic term.
        let linear: Vec<(f64, f64)> = [3.0, 5.0, 7.0, 9.0].iter().map(|n| (*n, 2.0 * n - 2.0)).collect();
        let fit = super::fit_quadratic(&linear).unwrap();
        assert!(fit.coefficients[0].abs() < 1e-9 && (fit.coefficients[1] - 2.0).abs() < 1e-9);
        // Two cluster sizes cannot pin down three coefficients.
        assert_eq!(super::fit_quadratic(&[(4.0, 24.0), (7.0, 84.0), (7.0, 85.0)]), None);
    }
}
