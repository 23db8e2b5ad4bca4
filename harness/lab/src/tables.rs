//! The numbers in the README's and docs' tables, generated from committed results so
//! none is copied by hand: `qlab tables` rewrites every Markdown block between
//! `<!-- table NAME -->` and `<!-- /table -->` from the table `NAME` of
//! `results/tables.toml`; `--check` only compares (a test runs it on the repository).
//!
//! A table reads one CSV (a reference run's `summary.csv`, usually). Its rows are the
//! distinct values of the `rows` key columns, in the order the CSV first shows them;
//! each column is a template over one CSV row of that group — the one its own `filter`
//! picks, so "Raft" and "Multi-Paxos" columns can sit side by side. A placeholder is
//! `{column}` (the cell as written), `{column:.N}` (a number to N decimals with
//! thousands separators), `{column:%.N}` (a fraction as a percentage) or `{column:+.N}`
//! (a signed term of a sum: "+ 2.03", "− 2.15"). A template
//! that names a missing column, a group with no row for a column, or a group whose rows
//! disagree on what a column shows is an error naming the table: a table never guesses.

use crate::error::{LabError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the table listing lives, relative to the repository root.
pub const LISTING: &str = "results/tables.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    table: Vec<TableSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    name: String,
    /// The Markdown file holding the block, relative to the root.
    doc: String,
    /// The CSV the numbers come from, relative to the root.
    csv: String,
    /// Only CSV rows with these cells take part.
    #[serde(default)]
    filter: BTreeMap<String, String>,
    /// Key columns: one table row per distinct combination.
    rows: Vec<String>,
    columns: Vec<ColumnSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnSpec {
    head: String,
    cell: String,
    #[serde(default)]
    align: Align,
    /// Which of the group's CSV rows this column shows.
    #[serde(default)]
    filter: BTreeMap<String, String>,
    /// What to show when the group has no such row (a point the experiment does not
    /// run); without it a missing row is an error.
    missing: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Align {
    #[default]
    Left,
    Right,
}

/// A CSV as header plus records, for lookups by column name.
struct Csv {
    header: Vec<String>,
    records: Vec<Vec<String>>,
}

impl Csv {
    fn read(path: &Path) -> Result<Csv> {
        let mut reader = csv::Reader::from_path(path)
            .map_err(|e| LabError::Usage(format!("{}: cannot read: {e}", path.display())))?;
        let header = reader
            .headers()
            .map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut records = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| LabError::Usage(format!("{}: {e}", path.display())))?;
            records.push(record.iter().map(str::to_string).collect());
        }
        Ok(Csv { header, records })
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    fn matches(&self, record: &[String], filter: &BTreeMap<String, String>) -> Result<bool> {
        for (column, want) in filter {
            let index = self.column(column).ok_or_else(|| self.no_column(column))?;
            if record[index] != *want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn no_column(&self, column: &str) -> LabError {
        LabError::Usage(format!("no column `{column}` (the CSV has: {})", self.header.join(", ")))
    }
}

/// `12345.678` with `decimals` decimals and thousands separators: "12,345.7".
fn grouped(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (int, frac) = text.split_once('.').map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if let Some(frac) = frac {
        out.push('.');
        out.push_str(frac);
    }
    let negative = value < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0');
    if negative { format!("−{out}") } else { out }
}

/// Fill `template`'s placeholders from `record`.
fn render(template: &str, csv: &Csv, record: &[String]) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in `{template}`"))? + open;
        let placeholder = &rest[open + 1..close];
        let (column, format) = placeholder.split_once(':').unwrap_or((placeholder, ""));
        let index = csv.column(column).ok_or_else(|| csv.no_column(column).to_string())?;
        let cell = &record[index];
        let number = || cell.parse::<f64>().map_err(|_| format!("`{column}` is `{cell}`, not a number"));
        let decimals = |spec: &str| spec.parse::<usize>().map_err(|_| format!("bad format `{format}` in `{template}`"));
        out.push_str(&match format {
            "" => cell.clone(),
            _ if format.starts_with("%.") => format!("{}%", grouped(number()? * 100.0, decimals(&format[2..])?)),
            _ if format.starts_with("+.") => {
                let shown = grouped(number()?, decimals(&format[2..])?);
                match shown.strip_prefix('−') {
                    Some(magnitude) => format!("− {magnitude}"),
                    None => format!("+ {shown}"),
                }
            }
            _ if format.starts_with('.') => grouped(number()?, decimals(&format[1..])?),
            _ => return Err(format!("bad format `{format}` in `{template}` (use `.N`, `%.N` or `+.N`)")),
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The Markdown table (header, alignment row, rows) `spec` generates under `root`.
fn generate(spec: &TableSpec, root: &Path) -> Result<String> {
    let fail = |message: String| LabError::Usage(format!("{LISTING}: table `{}`: {message}", spec.name));
    let csv = Csv::read(&root.join(&spec.csv))?;
    let keys: Vec<usize> = spec
        .rows
        .iter()
        .map(|k| csv.column(k).ok_or_else(|| fail(csv.no_column(k).to_string())))
        .collect::<Result<_>>()?;
    let mut groups: Vec<(Vec<String>, Vec<&Vec<String>>)> = Vec::new();
    for record in &csv.records {
        if !csv.matches(record, &spec.filter).map_err(|e| fail(e.to_string()))? {
            continue;
        }
        let key: Vec<String> = keys.iter().map(|i| record[*i].clone()).collect();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(record),
            None => groups.push((key, vec![record])),
        }
    }
    if groups.is_empty() {
        return Err(fail(format!("no row of {} passes the filter", spec.csv)));
    }
    let mut out = format!("| {} |\n", spec.columns.iter().map(|c| c.head.as_str()).collect::<Vec<_>>().join(" | "));
    let aligns: Vec<&str> = spec.columns.iter().map(|c| if c.align == Align::Right { "---:" } else { "---" }).collect();
    out.push_str(&format!("|{}|\n", aligns.join("|")));
    for (key, members) in &groups {
        let mut cells = Vec::new();
        for column in &spec.columns {
            let mut shown: Option<String> = None;
            for record in members {
                if !csv.matches(record, &column.filter).map_err(|e| fail(e.to_string()))? {
                    continue;
                }
                let text =
                    render(&column.cell, &csv, record).map_err(|e| fail(format!("column `{}`: {e}", column.head)))?;
                match &shown {
                    Some(earlier) if *earlier != text => {
                        return Err(fail(format!(
                            "column `{}` is ambiguous for {key:?}: `{earlier}` or `{text}` (add a filter or a row key)",
                            column.head
                        )));
                    }
                    _ => shown = Some(text),
                }
            }
            let shown = shown.or_else(|| column.missing.clone());
            cells.push(shown.ok_or_else(|| fail(format!("column `{}` has no CSV row for {key:?}", column.head)))?);
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| LabError::Io { path: path.to_path_buf(), source: e })
}

/// Rewrite (or, with `check`, compare) every table block of the listing under `root`.
/// Returns the documents whose blocks differed (with `check`, nothing is written).
pub fn update(root: &Path, check: bool) -> Result<Vec<PathBuf>> {
    let listing_path = root.join(LISTING);
    let source = read(&listing_path)?;
    let file: TablesFile = toml::from_str(&source).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| crate::config::line_column(&source, span.start));
        LabError::Config { path: listing_path.clone(), line, column, message: e.message().trim().to_string() }
    })?;
    let mut docs: BTreeMap<String, Vec<&TableSpec>> = BTreeMap::new();
    for spec in &file.table {
        docs.entry(spec.doc.clone()).or_default().push(spec);
    }
    let mut differed = Vec::new();
    for (doc, specs) in docs {
        let path = root.join(&doc);
        let original = read(&path)?;
        let mut text = original.clone();
        for spec in specs {
            let start_marker = format!("<!-- table {} -->\n", spec.name);
            let missing =
                || LabError::Usage(format!("{doc}: no `{}` ... `<!-- /table -->` block", start_marker.trim()));
            let body_start = text.find(&start_marker).ok_or_else(missing)? + start_marker.len();
            let end = text[body_start..].find("<!-- /table -->").ok_or_else(missing)? + body_start;
            let generated = generate(spec, root)?;
            text.replace_range(body_start..end, &generated);
        }
        if text != original {
            differed.push(path.clone());
            if !check {
                std::fs::write(&path, &text).map_err(|e| LabError::Io { path: path.clone(), source: e })?;
            }
        }
    }
    Ok(differed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Csv {
        let mut lines = text.lines();
        let header = lines.next().unwrap().split(',').map(str::to_string).collect();
        Csv { header, records: lines.map(|l| l.split(',').map(str::to_string).collect()).collect() }
    }

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(grouped(1837.358, 0), "1,837");
        assert_eq!(grouped(123290.4, 0), "123,290");
        assert_eq!(grouped(999.96, 1), "1,000.0");
        assert_eq!(grouped(0.086, 3), "0.086");
        assert_eq!(grouped(-1234.5, 1), "−1,234.5");
        assert_eq!(grouped(-0.01, 1), "0.0");
    }

    #[test]
    fn placeholders_read_the_named_columns() {
        let c = csv("protocol,ops_per_s,share\nraft,56604.2,0.995\n");
        let record = &c.records[0];
        assert_eq!(
            render("{protocol}: {ops_per_s:.0} ops/s, {share:%.1}", &c, record).unwrap(),
            "raft: 56,604 ops/s, 99.5%"
        );
        let fit = csv("a,b\n-2.1466,0.001\n");
        assert_eq!(render("n {a:+.2} {b:+.2}", &fit, &fit.records[0]).unwrap(), "n − 2.15 + 0.00");
        assert!(render("{nope}", &c, record).unwrap_err().contains("no column `nope`"));
        assert!(render("{protocol:.1}", &c, record).unwrap_err().contains("not a number"));
        assert!(render("{ops_per_s:x}", &c, record).unwrap_err().contains("bad format"));
    }

    fn repo_with(csv_text: &str, listing: &str, doc: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("results/run")).unwrap();
        std::fs::write(dir.path().join("results/run/summary.csv"), csv_text).unwrap();
        std::fs::write(dir.path().join(LISTING), listing).unwrap();
        std::fs::write(dir.path().join("doc.md"), doc).unwrap();
        dir
    }

    const LISTING_TEXT: &str = r#"
[[table]]
name = "t"
doc = "doc.md"
csv = "results/run/summary.csv"
rows = ["nodes"]
columns = [
  { head = "nodes", cell = "{nodes}", align = "right" },
  { head = "Raft", cell = "{p50:.0} ms", filter = { protocol = "raft" } },
  { head = "Paxos", cell = "{p50:.0} ms", filter = { protocol = "paxos" } },
]
"#;

    #[test]
    fn a_block_is_rewritten_from_the_csv_and_a_changed_number_is_caught() {
        let csv_text = "protocol,nodes,p50\nraft,3,181.4\npaxos,3,159.2\nraft,5,200.0\npaxos,5,1999.5\n";
        let doc = "intro\n<!-- table t -->\nstale\n<!-- /table -->\nafter\n";
        let dir = repo_with(csv_text, LISTING_TEXT, doc);
        assert_eq!(update(dir.path(), true).unwrap().len(), 1, "a stale block differs");
        assert_eq!(read(&dir.path().join("doc.md")).unwrap(), doc, "check writes nothing");
        update(dir.path(), false).unwrap();
        let written = read(&dir.path().join("doc.md")).unwrap();
        assert_eq!(
            written,
            "intro\n<!-- table t -->\n| nodes | Raft | Paxos |\n|---:|---|---|\n| 3 | 181 ms | 159 ms |\n| 5 | 200 ms | 2,000 ms |\n<!-- /table -->\nafter\n"
        );
        assert!(update(dir.path(), true).unwrap().is_empty(), "now up to date");
        std::fs::write(dir.path().join("results/run/summary.csv"), csv_text.replace("181.4", "190.0")).unwrap();
        assert_eq!(update(dir.path(), true).unwrap().len(), 1, "a number that changed in the CSV is caught");
    }

    #[test]
    fn a_table_never_guesses() {
        let doc = "<!-- table t -->\n<!-- /table -->\n";
        // Two Raft rows for one key: ambiguous.
        let dir = repo_with("protocol,nodes,p50\nraft,3,1\nraft,3,2\npaxos,3,3\n", LISTING_TEXT, doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("ambiguous"));
        // No Paxos row for a key.
        let dir = repo_with("protocol,nodes,p50\nraft,3,1\n", LISTING_TEXT, doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("no CSV row"));
        // ... unless the column says what a missing point shows.
        let listing = LISTING_TEXT
            .replace("filter = { protocol = \"paxos\" }", "filter = { protocol = \"paxos\" }, missing = \"n/a\"");
        let dir = repo_with("protocol,nodes,p50\nraft,3,1\n", &listing, doc);
        update(dir.path(), false).unwrap();
        assert!(read(&dir.path().join("doc.md")).unwrap().contains("| 3 | 1 ms | n/a |"));
        // A document without the block.
        let dir = repo_with("protocol,nodes,p50\nraft,3,1\npaxos,3,2\n", LISTING_TEXT, "nothing\n");
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("no `<!-- table t -->`"));
        // A misspelt key in the listing names file, line and column.
        let dir = repo_with("protocol,nodes,p50\n", &LISTING_TEXT.replace("rows =", "rowz ="), doc);
        let err = update(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("tables.toml") && err.contains("rowz"), "{err}");
    }
}
