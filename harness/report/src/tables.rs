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
//!
//! A column may instead name several rows of its group, each by its own filter
//! (`picks`), to set them side by side: `{raft.ops_per_s}`, and a ratio of two cells as
//! `{paxos.ops_per_s/raft.ops_per_s:.2}` (in any template).
//!
//! A filter's value is the cell as written, a list of cells any of which will do
//! (`attack = ["silent", "crash"]`), or a comparison with a number (`"> 10000"`, `">= 1"`,
//! `"< 5"`, `"<= 5"`; `"!= x"` compares the text).
//!
//! Where a cell sums up many rows (a trials CSV, or several points of a summary) its
//! placeholders aggregate over every row the column's filter passes: `{count()}`,
//! `{sum(col)}`, `{mean(col)}`, `{median(col)}`, `{min(col)}`, `{max(col)}`, and
//! `{range(col)}` (`min–max`, or one number where both show the same). The divisor of a
//! ratio may be a number: `{sum(ops)/1000000:.1} M`.
//!
//! A table whose rows are not one CSV's groups (the README's which-protocol-when table:
//! one row per protocol, each cell from a different experiment) gives its `heads` (and
//! `align`), its `cells` row by row, and named `sources`, each one CSV row picked by a
//! filter; a cell's placeholders are then `{source.column...}` (the source must pick
//! exactly one row) or `{source.count()}`, `{source.median(col)}`... over all it picks,
//! and the prose around them is the listing's.

use crate::error::{ReportError, Result};
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
    csv: Option<String>,
    /// Only CSV rows with these cells take part.
    #[serde(default)]
    filter: Filter,
    /// Key columns: one table row per distinct combination.
    rows: Option<Vec<String>>,
    columns: Option<Vec<ColumnSpec>>,
    /// Or: the column heads, the cells row by row, and the CSV rows they name.
    heads: Option<Vec<String>>,
    /// Each head's alignment (all left if not given).
    #[serde(default)]
    align: Vec<Align>,
    cells: Option<Vec<Vec<String>>>,
    #[serde(default)]
    sources: BTreeMap<String, SourceSpec>,
}

/// CSV rows picked by a filter: exactly one for a plain `{name.column}`, any number for
/// an aggregate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSpec {
    csv: String,
    filter: Filter,
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
    filter: Filter,
    /// What to show when the group has no such row (a point the experiment does not
    /// run); without it a missing row is an error.
    missing: Option<String>,
    /// Or several of the group's rows by name, each by its own filter (one row each),
    /// for a cell that sets them side by side: `{name.column}`, `{a.x/b.x:.2}`.
    #[serde(default)]
    picks: BTreeMap<String, Filter>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Align {
    #[default]
    Left,
    Right,
}

/// Which CSV rows take part: every named column must hold what its [`Want`] accepts.
type Filter = BTreeMap<String, Want>;

/// What a filter accepts in one column: the cell as written (`"raft"`), any of a list
/// (`["silent", "crash"]`), or a number compared (`"> 10000"`, `">= 1"`, `"< 5"`,
/// `"<= 5"`, `"!= 0"`; `!=` compares the text).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Want {
    One(String),
    AnyOf(Vec<String>),
}

impl Want {
    fn accepts(&self, cell: &str) -> std::result::Result<bool, String> {
        let want = match self {
            Want::AnyOf(options) => return Ok(options.iter().any(|o| o == cell)),
            Want::One(want) => want,
        };
        if let Some(other) = want.strip_prefix("!=") {
            return Ok(cell != other.trim());
        }
        let (compare, bound): (fn(f64, f64) -> bool, &str) = if let Some(b) = want.strip_prefix(">=") {
            (|a, b| a >= b, b)
        } else if let Some(b) = want.strip_prefix("<=") {
            (|a, b| a <= b, b)
        } else if let Some(b) = want.strip_prefix('>') {
            (|a, b| a > b, b)
        } else if let Some(b) = want.strip_prefix('<') {
            (|a, b| a < b, b)
        } else {
            return Ok(cell == want);
        };
        let bound: f64 =
            bound.trim().parse().map_err(|_| format!("filter `{want}`: `{}` is not a number", bound.trim()))?;
        // An empty cell (a trial that measured nothing) passes no comparison.
        Ok(cell.parse::<f64>().is_ok_and(|value| compare(value, bound)))
    }
}

/// A CSV as header plus records, for lookups by column name.
struct Csv {
    header: Vec<String>,
    records: Vec<Vec<String>>,
}

impl Csv {
    fn read(path: &Path) -> Result<Csv> {
        let mut reader = csv::Reader::from_path(path)
            .map_err(|e| ReportError::Usage(format!("{}: cannot read: {e}", path.display())))?;
        let header = reader
            .headers()
            .map_err(|e| ReportError::Usage(format!("{}: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut records = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| ReportError::Usage(format!("{}: {e}", path.display())))?;
            records.push(record.iter().map(str::to_string).collect());
        }
        Ok(Csv { header, records })
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    fn matches(&self, record: &[String], filter: &Filter) -> Result<bool> {
        for (column, want) in filter {
            let index = self.column(column).ok_or_else(|| self.no_column(column))?;
            if !want.accepts(&record[index]).map_err(ReportError::Usage)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The records among `records` that pass every filter of `filters`.
    fn matching<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Vec<String>>,
        filters: &[&Filter],
    ) -> Result<Vec<&'a Vec<String>>> {
        let mut picked = Vec::new();
        for record in records {
            let mut all = true;
            for filter in filters {
                all = all && self.matches(record, filter)?;
            }
            if all {
                picked.push(record);
            }
        }
        Ok(picked)
    }

    fn no_column(&self, column: &str) -> ReportError {
        ReportError::Usage(format!("no column `{column}` (the CSV has: {})", self.header.join(", ")))
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
    render_with(template, &|column| {
        let index = csv.column(column).ok_or_else(|| csv.no_column(column).to_string())?;
        Ok(record[index].clone())
    })
}

/// The aggregate `expr` names (`count()`, `sum(col)`, `mean(col)`, `median(col)`,
/// `min(col)`, `max(col)`) over `rows`, or `None` if `expr` is a plain column.
fn aggregate(csv: &Csv, rows: &[&Vec<String>], expr: &str) -> std::result::Result<Option<f64>, String> {
    let Some((function, rest)) = expr.split_once('(') else { return Ok(None) };
    let column = rest.strip_suffix(')').ok_or_else(|| format!("`{expr}`: no closing `)`"))?;
    if function == "count" {
        if !column.is_empty() {
            return Err(format!("`{expr}`: count() takes no column"));
        }
        return Ok(Some(rows.len() as f64));
    }
    let index = csv.column(column).ok_or_else(|| csv.no_column(column).to_string())?;
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let cell = &row[index];
        values
            .push(cell.parse::<f64>().map_err(|_| format!("`{expr}`: a row's `{column}` is `{cell}`, not a number"))?);
    }
    if values.is_empty() {
        return Err(format!("`{expr}` over no rows"));
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Ok(Some(match function {
        "sum" => values.iter().sum(),
        "mean" => values.iter().sum::<f64>() / n as f64,
        // As pandas has it: the middle value, or the mean of the two middle ones.
        "median" => (values[(n - 1) / 2] + values[n / 2]) / 2.0,
        "min" => values[0],
        "max" => values[n - 1],
        _ => {
            return Err(format!(
                "`{expr}`: no function `{function}` (there are count(), sum, mean, median, min, max and range)"
            ));
        }
    }))
}

/// Fill `template`'s placeholders with the cells `lookup` gives for their names.
fn render_with(
    template: &str,
    lookup: &dyn Fn(&str) -> std::result::Result<String, String>,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in `{template}`"))? + open;
        let placeholder = &rest[open + 1..close];
        let (column, format) = placeholder.split_once(':').unwrap_or((placeholder, ""));
        // `range(col)` shows `min–max` of the column, or one number where both agree.
        let (prefix, name) = column.rsplit_once('.').map_or(("", column), |(p, n)| (p, n));
        if let Some(inner) = name.strip_prefix("range(") {
            let dot = if prefix.is_empty() { "" } else { "." };
            let low = formatted(&lookup(&format!("{prefix}{dot}min({inner}"))?, column, format, template)?;
            let high = formatted(&lookup(&format!("{prefix}{dot}max({inner}"))?, column, format, template)?;
            out.push_str(&if low == high { low } else { format!("{low}–{high}") });
        } else {
            let cell = match column.split_once('/') {
                // A ratio of two cells, or of a cell and a number: `{paxos.ops/raft.ops:.2}`,
                // `{run.ops/1000000:.1}`.
                Some((top, bottom)) => {
                    let value = |name: &str| -> std::result::Result<f64, String> {
                        if let Ok(literal) = name.parse::<f64>() {
                            return Ok(literal);
                        }
                        let cell = lookup(name)?;
                        cell.parse::<f64>().map_err(|_| format!("`{name}` is `{cell}`, not a number"))
                    };
                    (value(top)? / value(bottom)?).to_string()
                }
                None => lookup(column)?,
            };
            out.push_str(&formatted(&cell, column, format, template)?);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `cell` shown as `format` asks: as written (""), `.N`, `%.N` or `+.N`.
fn formatted(cell: &str, column: &str, format: &str, template: &str) -> std::result::Result<String, String> {
    let number = || cell.parse::<f64>().map_err(|_| format!("`{column}` is `{cell}`, not a number"));
    let decimals = |spec: &str| spec.parse::<usize>().map_err(|_| format!("bad format `{format}` in `{template}`"));
    Ok(match format {
        "" => cell.to_string(),
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
    })
}

/// The Markdown table (header, alignment row, rows) `spec` generates under `root`.
fn generate(spec: &TableSpec, root: &Path) -> Result<String> {
    let fail = |message: String| ReportError::Usage(format!("{LISTING}: table `{}`: {message}", spec.name));
    match (&spec.csv, &spec.rows, &spec.columns, &spec.heads, &spec.cells) {
        (Some(csv), Some(rows), Some(columns), None, None) if spec.sources.is_empty() => {
            generate_grouped(spec, csv, rows, columns, root)
        }
        (None, None, None, Some(heads), Some(cells)) if spec.filter.is_empty() => {
            generate_cells(spec, heads, cells, root)
        }
        _ => Err(fail(
            "give either `csv`, `rows` and `columns` (one row per group of one CSV) or `heads`, `cells` and \
             `sources` (cells naming CSV rows)"
                .into(),
        )),
    }
}

/// A table of explicit cells whose placeholders name `sources` rows.
fn generate_cells(spec: &TableSpec, heads: &[String], cells: &[Vec<String>], root: &Path) -> Result<String> {
    let fail = |message: String| ReportError::Usage(format!("{LISTING}: table `{}`: {message}", spec.name));
    let mut files: BTreeMap<&str, Csv> = BTreeMap::new();
    for source in spec.sources.values() {
        if !files.contains_key(source.csv.as_str()) {
            files.insert(&source.csv, Csv::read(&root.join(&source.csv))?);
        }
    }
    let mut rows: BTreeMap<&str, (&Csv, Vec<&Vec<String>>)> = BTreeMap::new();
    for (name, source) in &spec.sources {
        let csv = &files[source.csv.as_str()];
        let picked =
            csv.matching(&csv.records, &[&source.filter]).map_err(|e| fail(format!("source `{name}`: {e}")))?;
        rows.insert(name, (csv, picked));
    }
    let lookup = |placeholder: &str| named_cell(&rows, "source", placeholder);
    let mut out = format!("| {} |\n", heads.join(" | "));
    if !spec.align.is_empty() && spec.align.len() != heads.len() {
        return Err(fail(format!("{} alignments for {} heads", spec.align.len(), heads.len())));
    }
    let aligns: Vec<&str> =
        (0..heads.len()).map(|i| if spec.align.get(i) == Some(&Align::Right) { "---:" } else { "---" }).collect();
    out.push_str(&format!("|{}|\n", aligns.join("|")));
    for (number, row) in cells.iter().enumerate() {
        if row.len() != heads.len() {
            return Err(fail(format!("row {} has {} cells for {} heads", number + 1, row.len(), heads.len())));
        }
        let rendered: Vec<String> = row
            .iter()
            .map(|cell| render_with(cell, &lookup).map_err(|e| fail(format!("row {}: {e}", number + 1))))
            .collect::<Result<_>>()?;
        out.push_str(&format!("| {} |\n", rendered.join(" | ")));
    }
    Ok(out)
}

/// One table row per group of `rows` key columns of one CSV.
fn generate_grouped(
    spec: &TableSpec,
    csv_path: &str,
    rows: &[String],
    columns: &[ColumnSpec],
    root: &Path,
) -> Result<String> {
    let fail = |message: String| ReportError::Usage(format!("{LISTING}: table `{}`: {message}", spec.name));
    let csv = Csv::read(&root.join(csv_path))?;
    let keys: Vec<usize> =
        rows.iter().map(|k| csv.column(k).ok_or_else(|| fail(csv.no_column(k).to_string()))).collect::<Result<_>>()?;
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
        return Err(fail(format!("no row of {csv_path} passes the filter")));
    }
    let mut out = format!("| {} |\n", columns.iter().map(|c| c.head.as_str()).collect::<Vec<_>>().join(" | "));
    let aligns: Vec<&str> = columns.iter().map(|c| if c.align == Align::Right { "---:" } else { "---" }).collect();
    out.push_str(&format!("|{}|\n", aligns.join("|")));
    for (key, members) in &groups {
        let mut cells = Vec::new();
        for column in columns {
            if !column.picks.is_empty() {
                cells.push(render_picks(column, &csv, members, key).map_err(&fail)?);
                continue;
            }
            if has_aggregate(&column.cell) {
                cells.push(render_aggregate(column, &csv, members, key).map_err(&fail)?);
                continue;
            }
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

/// The cell `{name.column}` names among `rows` (a table's sources or a column's picks,
/// `what` says which): the column of the one row `name` picks, or an aggregate
/// (`{name.count()}`, `{name.mean(column)}`) over all the rows it picks.
fn named_cell(
    rows: &BTreeMap<&str, (&Csv, Vec<&Vec<String>>)>,
    what: &str,
    placeholder: &str,
) -> std::result::Result<String, String> {
    let (name, column) = placeholder
        .split_once('.')
        .ok_or_else(|| format!("`{{{placeholder}}}` names no {what} (write `{{{what}.column}}`)"))?;
    let (csv, picked) = rows.get(name).ok_or_else(|| {
        let names: Vec<&str> = rows.keys().copied().collect();
        format!("no {what} `{name}` (there are: {})", names.join(", "))
    })?;
    if let Some(value) = aggregate(csv, picked, column).map_err(|e| format!("{what} `{name}`: {e}"))? {
        return Ok(value.to_string());
    }
    match picked.as_slice() {
        [one] => {
            let index = csv.column(column).ok_or_else(|| csv.no_column(column).to_string())?;
            Ok(one[index].clone())
        }
        _ => Err(format!(
            "{what} `{name}` picks {} rows (`{{{placeholder}}}` needs exactly one; over many, use count(), sum, \
             mean, median, min, max or range)",
            picked.len()
        )),
    }
}

/// Whether a template aggregates (`{mean(column)}`, `{count()}`...).
fn has_aggregate(template: &str) -> bool {
    template.split('{').skip(1).any(|p| p.split('}').next().is_some_and(|p| p.contains('(')))
}

/// A column over all the rows of one group its filter passes: its aggregates over them,
/// and plain `{column}`s that every one of them agrees on.
fn render_aggregate(
    column: &ColumnSpec,
    csv: &Csv,
    members: &[&Vec<String>],
    key: &[String],
) -> std::result::Result<String, String> {
    let matching = csv.matching(members.iter().copied(), &[&column.filter]).map_err(|e| e.to_string())?;
    if matching.is_empty() {
        return column.missing.clone().ok_or_else(|| format!("column `{}` has no CSV row for {key:?}", column.head));
    }
    let lookup = |name: &str| -> std::result::Result<String, String> {
        if let Some(value) = aggregate(csv, &matching, name)? {
            return Ok(value.to_string());
        }
        let index = csv.column(name).ok_or_else(|| csv.no_column(name).to_string())?;
        let first = &matching[0][index];
        match matching.iter().find(|r| r[index] != *first) {
            None => Ok(first.clone()),
            Some(other) => Err(format!(
                "`{name}` is `{first}` in one row of {key:?} and `{}` in another (aggregate it or add a row key)",
                other[index]
            )),
        }
    };
    render_with(&column.cell, &lookup).map_err(|e| format!("column `{}`: {e}", column.head))
}

/// A column over several named rows of one group, each picked by its own filter.
fn render_picks(
    column: &ColumnSpec,
    csv: &Csv,
    members: &[&Vec<String>],
    key: &[String],
) -> std::result::Result<String, String> {
    let mut picked: BTreeMap<&str, (&Csv, Vec<&Vec<String>>)> = BTreeMap::new();
    for (name, filter) in &column.picks {
        let matching = csv.matching(members.iter().copied(), &[&column.filter, filter]).map_err(|e| e.to_string())?;
        match matching.len() {
            1 => {
                picked.insert(name, (csv, matching));
            }
            0 => match &column.missing {
                Some(missing) => return Ok(missing.clone()),
                None => return Err(format!("column `{}`: pick `{name}` has no CSV row for {key:?}", column.head)),
            },
            _ => return Err(format!("column `{}`: pick `{name}` is ambiguous for {key:?}", column.head)),
        }
    }
    let lookup = |placeholder: &str| named_cell(&picked, "pick", placeholder);
    render_with(&column.cell, &lookup).map_err(|e| format!("column `{}`: {e}", column.head))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// Rewrite (or, with `check`, compare) every table block of the listing under `root`.
/// Returns the documents whose blocks differed (with `check`, nothing is written).
pub fn update(root: &Path, check: bool) -> Result<Vec<PathBuf>> {
    let listing_path = root.join(LISTING);
    let source = read(&listing_path)?;
    let file: TablesFile = toml::from_str(&source).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| crate::error::line_column(&source, span.start));
        ReportError::Config { path: listing_path.clone(), line, column, message: e.message().trim().to_string() }
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
                || ReportError::Usage(format!("{doc}: no `{}` ... `<!-- /table -->` block", start_marker.trim()));
            let body_start = text.find(&start_marker).ok_or_else(missing)? + start_marker.len();
            let end = text[body_start..].find("<!-- /table -->").ok_or_else(missing)? + body_start;
            let generated = generate(spec, root)?;
            text.replace_range(body_start..end, &generated);
        }
        if text != original {
            differed.push(path.clone());
            if !check {
                std::fs::write(&path, &text).map_err(|e| ReportError::Io { path: path.clone(), source: e })?;
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

    const CELLS_LISTING: &str = r#"
[[table]]
name = "t"
doc = "doc.md"
heads = ["protocol", "median"]
cells = [["Raft", "{raft3.p50:.0} ms at n = {raft3.nodes}, {raft5.p50:.0} at 5"], ["Paxos", "{paxos3.p50:.1} ms"]]

[table.sources]
raft3 = { csv = "results/run/summary.csv", filter = { protocol = "raft", nodes = "3" } }
raft5 = { csv = "results/run/summary.csv", filter = { protocol = "raft", nodes = "5" } }
paxos3 = { csv = "results/run/summary.csv", filter = { protocol = "paxos", nodes = "3" } }
"#;

    /// A column may set several rows of its group side by side, and divide them.
    #[test]
    fn picks_set_rows_side_by_side_and_ratios_divide_them() {
        let listing = r#"
[[table]]
name = "t"
doc = "doc.md"
csv = "results/run/summary.csv"
rows = ["nodes"]
columns = [
  { head = "nodes", cell = "{nodes}" },
  { head = "Paxos / Raft", cell = "{paxos.p50:.0} / {raft.p50:.0} = {paxos.p50/raft.p50:.2}", picks = { raft = { protocol = "raft" }, paxos = { protocol = "paxos" } } },
]
"#;
        let doc = "<!-- table t -->\n<!-- /table -->\n";
        let dir = repo_with("protocol,nodes,p50\nraft,3,200\npaxos,3,150\n", listing, doc);
        update(dir.path(), false).unwrap();
        assert!(read(&dir.path().join("doc.md")).unwrap().contains("| 3 | 150 / 200 = 0.75 |"));
        let dir = repo_with("protocol,nodes,p50\nraft,3,200\npaxos,3,150\npaxos,3,160\n", listing, doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("pick `paxos` is ambiguous"));
        let dir = repo_with("protocol,nodes,p50\nraft,3,200\n", listing, doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("pick `paxos` has no CSV row"));
    }

    /// A table of explicit cells: each placeholder names a source, one CSV row each.
    #[test]
    fn cells_name_their_sources_and_each_source_is_one_row() {
        let csv_text = "protocol,nodes,p50\nraft,3,181.4\npaxos,3,159.24\nraft,5,200.0\n";
        let doc = "<!-- table t -->\n<!-- /table -->\n";
        let dir = repo_with(csv_text, CELLS_LISTING, doc);
        update(dir.path(), false).unwrap();
        assert_eq!(
            read(&dir.path().join("doc.md")).unwrap(),
            "<!-- table t -->\n| protocol | median |\n|---|---|\n| Raft | 181 ms at n = 3, 200 at 5 |\n| Paxos | 159.2 ms |\n<!-- /table -->\n"
        );
        let dir = repo_with(&format!("{csv_text}raft,3,190\n"), CELLS_LISTING, doc);
        let err = update(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("source `raft3` picks 2 rows"), "{err}");
        let dir = repo_with(csv_text, &CELLS_LISTING.replace("{paxos3.p50:.1}", "{paxos.p50:.1}"), doc);
        let err = update(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("no source `paxos`") && err.contains("paxos3"), "{err}");
        let dir = repo_with(csv_text, &CELLS_LISTING.replace("[\"Paxos\", ", "[\"Paxos\", \"x\", "), doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("row 2 has 3 cells for 2 heads"));
    }

    /// Filters compare numbers and take lists; cells aggregate over the rows they pass.
    #[test]
    fn aggregates_sum_up_the_rows_a_filter_passes() {
        let trials = "protocol,attack,ms,ops\nraft,silent,5,10\nraft,silent,20000,30\nraft,crash,12,20\nraft,crash,40,25\npaxos,silent,7,8\n";
        let listing = r#"
[[table]]
name = "t"
doc = "doc.md"
csv = "results/run/summary.csv"
rows = ["protocol"]
columns = [
  { head = "protocol", cell = "{protocol}" },
  { head = "trials", cell = "{count()}", align = "right" },
  { head = "over 10 s", cell = "{count()}", filter = { ms = "> 10000" }, missing = "none" },
  { head = "median ms", cell = "{median(ms):.1}" },
  { head = "ops", cell = "{range(ops):.0} (mean {mean(ops):.1}, {sum(ops)/1000:.3} k)", filter = { attack = ["silent", "crash"] } },
]
"#;
        let doc = "<!-- table t -->\n<!-- /table -->\n";
        let dir = repo_with(trials, listing, doc);
        update(dir.path(), false).unwrap();
        let written = read(&dir.path().join("doc.md")).unwrap();
        assert!(written.contains("| raft | 4 | 1 | 26.0 | 10–30 (mean 21.2, 0.085 k) |"), "{written}");
        assert!(written.contains("| paxos | 1 | none | 7.0 | 8 (mean 8.0, 0.008 k) |"), "{written}");
        // A plain column the rows disagree on is refused, and so is a bad comparison.
        let dir = repo_with(trials, &listing.replace("{count()}\", align", "{count()} {attack}\", align"), doc);
        let err = update(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("`attack` is `silent` in one row") && err.contains("aggregate it"), "{err}");
        let dir = repo_with(trials, &listing.replace("> 10000", "> ten"), doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("`ten` is not a number"));
        let dir = repo_with(trials, &listing.replace("median(ms)", "mode(ms)"), doc);
        assert!(update(dir.path(), true).unwrap_err().to_string().contains("no function `mode`"));
        // Sources aggregate too; a plain cell of a many-row source is refused.
        let cells = r#"
[[table]]
name = "t"
doc = "doc.md"
heads = ["share over 10 s", "median"]
cells = [["{slow.count()/all.count():%.0}", "{all.median(ms):.0} ms, raft only {raft.ms}"]]

[table.sources]
slow = { csv = "results/run/summary.csv", filter = { ms = ">= 10000" } }
all = { csv = "results/run/summary.csv", filter = {} }
raft = { csv = "results/run/summary.csv", filter = { protocol = "raft", attack = "silent", ms = "< 10" } }
"#;
        let dir = repo_with(trials, cells, doc);
        update(dir.path(), false).unwrap();
        assert!(read(&dir.path().join("doc.md")).unwrap().contains("| 20% | 12 ms, raft only 5 |"));
        let dir = repo_with(trials, &cells.replace("ms = \"< 10\" ", ""), doc);
        let err = update(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("source `raft` picks 2 rows"), "{err}");
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
