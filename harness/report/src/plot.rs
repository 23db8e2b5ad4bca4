//! Figures drawn from a run's `trials.csv` alone (so `qlab plot` can redraw them).
//!
//! Every figure is written as SVG (for papers) and PNG (for the README and quick
//! looks). Text uses DejaVu Sans, bundled in the binary and registered with plotters'
//! `ab_glyph` renderer, so PNG text looks the same on every machine and needs no
//! system font. Colours come from the Okabe & Ito palette, one colour per protocol
//! where protocols are compared. Repeated measurements carry their 95% confidence
//! intervals: error bars (Student t over the trials) on throughput points, bands on the
//! attack timelines, bootstrap whiskers on `qlab compare` ratios.
//!
//! `qlab plot --style` redraws the line figures (CDFs, XY charts) for a medium: `screen`
//! (the default, 1000 × 640 px), `paper` (one column of a two-column paper: 3.5 in at
//! 300 dpi, 1050 × 720 px, text about 8 pt when printed at that width), `paper-wide`
//! (both columns, 7 in) and `slides` (1600 × 1000 px, larger text). Text, margins,
//! strokes and markers scale together. The matrices, timelines and ratio plots keep their
//! own layout. `--format` picks SVG, PNG or both; PDF is not offered (plotters draws PDF
//! only through a system cairo library, and the suite depends on none).

use crate::error::{ReportError, Result};
use crate::results::{FIGURES_DIR, SUMMARY_CSV, TRIALS_CSV, Table, summarize_election};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

pub(crate) fn register_font() {
    REGISTER_FONT.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans font is a valid TTF"));
    });
}

/// The medium figures are drawn for (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Style {
    #[default]
    Screen,
    Paper,
    PaperWide,
    Slides,
}

impl Style {
    pub const NAMES: &'static [&'static str] = &["screen", "paper", "paper-wide", "slides"];

    pub fn name(self) -> &'static str {
        Style::NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Option<Style> {
        match name {
            "screen" => Some(Style::Screen),
            "paper" => Some(Style::Paper),
            "paper-wide" => Some(Style::PaperWide),
            "slides" => Some(Style::Slides),
            _ => None,
        }
    }
    /// Canvas of a line figure, and the factor text, margins and strokes scale by.
    fn geometry(self) -> ((u32, u32), f64) {
        match self {
            Style::Screen => ((1000, 640), 1.0),
            Style::Paper => ((1050, 720), 2.0),
            Style::PaperWide => ((2100, 1000), 2.0),
            Style::Slides => ((1600, 1000), 1.5),
        }
    }
}

/// How `qlab plot` draws and which files it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlotOptions {
    pub style: Style,
    pub svg: bool,
    pub png: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions { style: Style::Screen, svg: true, png: true }
    }
}

thread_local! {
    static OPTIONS: std::cell::Cell<PlotOptions> = std::cell::Cell::new(PlotOptions::default());
}

/// Run `f` (a `plot_*` call) with `options` in force on this thread.
pub fn with_options<T>(options: PlotOptions, f: impl FnOnce() -> T) -> T {
    let before = OPTIONS.with(|o| o.replace(options));
    let result = f();
    OPTIONS.with(|o| o.set(before));
    result
}

fn options() -> PlotOptions {
    OPTIONS.with(|o| o.get())
}

/// A font size of the line figures, scaled for the style.
fn font(px: i32) -> (&'static str, f64) {
    ("sans-serif", px as f64 * options().style.geometry().1)
}

/// A length (margin, stroke, marker) of the line figures, scaled for the style.
fn px(n: u32) -> u32 {
    (n as f64 * options().style.geometry().1).round() as u32
}

/// Colour-blind-safe palette (Okabe & Ito 2008), then plotters' 99-colour palette.
fn series_color(i: usize) -> RGBColor {
    const OKABE_ITO: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    if i < OKABE_ITO.len() {
        OKABE_ITO[i]
    } else {
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    }
}

/// One line of a CDF figure.
pub struct Series {
    pub label: String,
    /// Sorted values.
    pub values: Vec<f64>,
}

pub struct CdfFigure {
    pub title: String,
    pub x_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
}

fn draw_cdf<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, figure: &CdfFigure) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let all: Vec<f64> = figure.series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if all.is_empty() { (1.0, 10.0) } else { (lo, hi) };
    // Within about a decade a log axis shows no tick labels at all: go linear there.
    let log_x = figure.log_x && hi / lo.max(1e-9) >= 20.0;
    let x_label = if log_x { figure.x_label.clone() } else { figure.x_label.replace(", log scale", "") };
    let mut chart = ChartBuilder::on(&root);
    chart.caption(&figure.title, font(26)).margin(px(18)).x_label_area_size(px(52)).y_label_area_size(px(64));
    let points = |s: &Series| -> Vec<(f64, f64)> {
        let n = s.values.len() as f64;
        let mut pts = Vec::with_capacity(s.values.len() * 2 + 1);
        for (i, v) in s.values.iter().enumerate() {
            pts.push((*v, 100.0 * i as f64 / n));
            pts.push((*v, 100.0 * (i + 1) as f64 / n));
        }
        pts
    };
    macro_rules! finish_chart {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_labels(12)
                .x_label_formatter(&|v| format_tick(*v))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_desc(&x_label)
                .y_desc("trials (cumulative %)")
                .label_style(font(17))
                .axis_desc_style(font(19))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in figure.series.iter().enumerate() {
                let color = series_color(i);
                let (line, legend, legend_len) = (px(2), px(3), px(22) as i32);
                chart
                    .draw_series(LineSeries::new(points(s), color.stroke_width(line)))
                    .map_err(|e| e.to_string())?
                    .label(&s.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + legend_len, y)], color.stroke_width(legend))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(font(16))
                .legend_area_size(px(30))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if log_x {
        let lo = (lo * 0.8).max(0.1);
        let hi = (hi * 1.25).max(lo * 10.0);
        finish_chart!(chart.build_cartesian_2d((lo..hi).log_scale(), 0f64..100.5f64).map_err(|e| e.to_string())?);
    } else {
        let span = (hi - lo).max(1.0);
        finish_chart!(
            chart
                .build_cartesian_2d((lo - 0.05 * span)..(hi + 0.05 * span), 0f64..100.5f64)
                .map_err(|e| e.to_string())?
        );
    }
    root.present().map_err(|e| e.to_string())
}

/// Tick labels without spurious decimals: 1000, 150, 12.5, 0.25.
fn format_tick(v: f64) -> String {
    if v >= 10.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A figure that can draw itself on any plotters backend.
trait Drawable {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static;
}

impl Drawable for CdfFigure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw_cdf(root, self)
    }
}

impl Drawable for XyFigure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        draw_xy(root, self)
    }
}

/// Write `figures/<stem>.svg` and `figures/<stem>.png`.
/// A line figure (CDF or XY), sized by the style in force.
fn write_figure(run_dir: &Path, stem: &str, figure: &impl Drawable) -> Result<Vec<PathBuf>> {
    write_figure_sized(run_dir, stem, figure, options().style.geometry().0)
}

fn write_figure_sized(run_dir: &Path, stem: &str, figure: &impl Drawable, size: (u32, u32)) -> Result<Vec<PathBuf>> {
    register_font();
    // Another style's figures go beside the run's own, never over them.
    let dir = match options().style {
        Style::Screen => run_dir.join(FIGURES_DIR),
        style => run_dir.join(format!("{FIGURES_DIR}-{}", style.name())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| ReportError::Io { path: dir.clone(), source: e })?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let mut written = Vec::new();
    if options().svg {
        figure
            .draw(SVGBackend::new(&svg, size).into_drawing_area())
            .map_err(|message| ReportError::Plot { path: svg.clone(), message })?;
        written.push(svg);
    }
    if options().png {
        figure
            .draw(BitMapBackend::new(&png, size).into_drawing_area())
            .map_err(|message| ReportError::Plot { path: png.clone(), message })?;
        written.push(png);
    }
    Ok(written)
}

/// Write a CDF figure as `figures/<stem>.svg` and `.png`.
pub fn write_cdf(run_dir: &Path, stem: &str, figure: &CdfFigure) -> Result<Vec<PathBuf>> {
    write_figure(run_dir, stem, figure)
}

/// Columns that pick a figure (panel); the rest (timeouts, heartbeat) pick a line.
const PANEL_COLUMNS: &[&str] = &["protocol", "nodes", "latency_ms_mean", "fsync_ms_mean", "loss"];
const LINE_COLUMNS: &[&str] = &["election_timeout_ms_min", "election_timeout_ms_max", "heartbeat_ms", "mode"];

/// Most series a single figure holds before it is split into panels.
const MAX_SERIES_PER_FIGURE: usize = 8;

struct Line<'a> {
    panel: Vec<String>,
    line: Vec<String>,
    rows: Vec<&'a Vec<String>>,
}

fn describe_panel(panel: &[String], varying: &[bool]) -> String {
    let mut parts = Vec::new();
    for (i, value) in panel.iter().enumerate() {
        if !varying[i] {
            continue;
        }
        parts.push(match PANEL_COLUMNS[i] {
            "protocol" => value.clone(),
            "nodes" => format!("{value} nodes"),
            "latency_ms_mean" => format!("latency {value} ms"),
            "fsync_ms_mean" => format!("disk {value} ms"),
            "loss" => format!("loss {value}"),
            _ => value.clone(),
        });
    }
    parts.join(", ")
}

fn describe_line(line: &[String], heartbeat_varies: bool, mode_varies: bool) -> String {
    let mut label = format!("{}–{} ms", line[0], line[1]);
    if heartbeat_varies {
        label.push_str(&format!(", heartbeat {} ms", line[2]));
    }
    if mode_varies {
        label = format!("{}, {label}", line[3]);
    }
    label
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Redraw every figure of an election run and rewrite its summary, from the CSV alone.
///
/// Figures: `election_cdf` (time to elect, one line per timeout range) and
/// `unavailable_cdf` (time until a client write commits). With many series they are
/// split per protocol / cluster size / network; when ranges differ in their minimum as
/// in the Raft paper's Figure 16, `*_fixed_min` (same minimum, more randomness) and
/// `*_scaled` (ranges `[x, 2x]`) reproduce the paper's top and bottom graphs.
pub fn plot_election(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    summarize_election(&table, &run_dir.join(SUMMARY_CSV))?;
    let mut key_columns = PANEL_COLUMNS.to_vec();
    key_columns.extend_from_slice(LINE_COLUMNS);
    let lines: Vec<Line> = table
        .group_by(&key_columns)
        .into_iter()
        .map(|(key, rows)| Line {
            panel: key[..PANEL_COLUMNS.len()].to_vec(),
            line: key[PANEL_COLUMNS.len()..].to_vec(),
            rows,
        })
        .collect();
    let panel_varies: Vec<bool> =
        (0..PANEL_COLUMNS.len()).map(|i| lines.iter().any(|l| l.panel[i] != lines[0].panel[i])).collect();
    let mut panels: Vec<Vec<String>> = Vec::new();
    for line in &lines {
        if !panels.contains(&line.panel) {
            panels.push(line.panel.clone());
        }
    }
    let mut written = Vec::new();
    for (column, stem, title, x_label) in [
        ("election_ms", "election_cdf", "time to elect a new leader", "time without a leader (ms, log scale)"),
        (
            "unavailable_ms",
            "unavailable_cdf",
            "time until a client write commits again",
            "client-visible unavailability (ms, log scale)",
        ),
    ] {
        let series_for = |selected: &[&Line], with_panel: bool| -> Vec<Series> {
            let heartbeat_varies = selected.iter().any(|l| l.line[2] != selected[0].line[2]);
            let mode_varies = selected.iter().any(|l| l.line[3] != selected[0].line[3]);
            selected
                .iter()
                .map(|l| {
                    let mut values: Vec<f64> = l.rows.iter().filter_map(|r| table.number(r, column)).collect();
                    values.sort_by(f64::total_cmp);
                    let mut label = describe_line(&l.line, heartbeat_varies, mode_varies);
                    if with_panel && panel_varies.iter().any(|v| *v) {
                        label = format!("{}, {label}", describe_panel(&l.panel, &panel_varies));
                    }
                    Series { label, values }
                })
                .filter(|s| !s.values.is_empty())
                .collect()
        };
        let mut draw = |stem: String, title_suffix: String, series: Vec<Series>| -> Result<()> {
            if series.is_empty() {
                return Ok(());
            }
            let figure = CdfFigure {
                title: format!("{experiment_name}: {title}{title_suffix}"),
                x_label: x_label.to_string(),
                log_x: true,
                series,
            };
            written.extend(write_cdf(run_dir, &stem, &figure)?);
            Ok(())
        };
        let all: Vec<&Line> = lines.iter().collect();
        if all.len() <= MAX_SERIES_PER_FIGURE || panels.len() == 1 {
            draw(stem.to_string(), String::new(), series_for(&all, true))?;
        }
        for panel in &panels {
            let in_panel: Vec<&Line> = lines.iter().filter(|l| &l.panel == panel).collect();
            let description = describe_panel(panel, &panel_varies);
            let (panel_stem, suffix) = if panels.len() == 1 {
                (stem.to_string(), String::new())
            } else {
                (format!("{stem}_{}", slug(&description)), format!(" ({description})"))
            };
            if panels.len() > 1 {
                draw(panel_stem.clone(), suffix.clone(), series_for(&in_panel, false))?;
            }
            // Figure 16's two graphs: same minimum with more randomness; scaled [x, 2x].
            let mut minimums: Vec<&str> = in_panel.iter().map(|l| l.line[0].as_str()).collect();
            minimums.sort_unstable();
            minimums.dedup();
            if minimums.len() < 2 {
                continue;
            }
            let most_common_min = minimums
                .iter()
                .max_by_key(|m| (in_panel.iter().filter(|l| l.line[0] == **m).count(), std::cmp::Reverse(**m)))
                .copied()
                .unwrap_or_default();
            let fixed: Vec<&Line> = in_panel.iter().copied().filter(|l| l.line[0] == most_common_min).collect();
            let scaled: Vec<&Line> = in_panel
                .iter()
                .copied()
                .filter(|l| {
                    let (lo, hi) = (l.line[0].parse::<f64>().unwrap_or(0.0), l.line[1].parse::<f64>().unwrap_or(0.0));
                    (hi - 2.0 * lo).abs() < 1e-9
                })
                .collect();
            if fixed.len() >= 2 {
                draw(
                    format!("{panel_stem}_fixed_min"),
                    format!("{suffix}, minimum {most_common_min} ms"),
                    series_for(&fixed, false),
                )?;
            }
            if scaled.len() >= 2 {
                draw(format!("{panel_stem}_scaled"), format!("{suffix}, ranges [x, 2x]"), series_for(&scaled, false))?;
            }
        }
    }
    Ok(written)
}

/// One line of an XY figure: points in drawing order.
pub struct XySeries {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Palette index, so a fitted curve can share its data's colour.
    pub color: usize,
    /// A model rather than measurements: dashed, no markers.
    pub fitted: bool,
    /// 95% confidence intervals over repetitions, drawn as error bars: `(x, low, high)`
    /// (empty: none; a point measured once has none).
    pub error_bars: Vec<(f64, f64, f64)>,
}

pub struct XyFigure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<XySeries>,
}

fn draw_xy<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, figure: &XyFigure) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    // The axes hold every point and the top of every error bar.
    let all: Vec<(f64, f64)> = figure
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied().chain(s.error_bars.iter().map(|(x, _, high)| (*x, *high))))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let x_max = all.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9) * 1.08;
    let y_max = all.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.12;
    let mut chart = ChartBuilder::on(&root)
        .caption(&figure.title, font(26))
        .margin(px(18))
        .x_label_area_size(px(52))
        .y_label_area_size(px(80))
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .x_desc(&figure.x_label)
        .y_desc(&figure.y_label)
        .label_style(font(17))
        .axis_desc_style(font(19))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    let (line, legend, legend_len, dash_legend_len, marker) = (px(2), px(3), px(22) as i32, px(8) as i32, px(4));
    for s in &figure.series {
        let color = series_color(s.color);
        let points: Vec<(f64, f64)> =
            s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if s.fitted {
            chart
                .draw_series(DashedLineSeries::new(points, px(7), px(5), color.stroke_width(line)))
                .map_err(|e| e.to_string())?
                .label(&s.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + dash_legend_len, y)], color.stroke_width(line))
                });
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(line)))
            .map_err(|e| e.to_string())?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + legend_len, y)], color.stroke_width(legend)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, marker, color.filled()))).map_err(|e| e.to_string())?;
        // Error bars: a vertical line from the low to the high end with a cap at each.
        let bars: Vec<(f64, f64, f64)> = s
            .error_bars
            .iter()
            .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
            .map(|(x, lo, hi)| (*x, lo.max(0.0), *hi))
            .collect();
        // Thin and half-transparent, so bars of neighbouring series stay readable.
        let (cap, bar) = (marker as i32, color.mix(0.55).stroke_width(px(1)));
        chart
            .draw_series(bars.iter().map(|(x, lo, hi)| PathElement::new(vec![(*x, *lo), (*x, *hi)], bar)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                bars.iter()
                    .flat_map(|(x, lo, hi)| [(*x, *lo), (*x, *hi)])
                    .map(|end| EmptyElement::at(end) + PathElement::new(vec![(-cap, 0), (cap, 0)], bar)),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(16))
        .legend_area_size(px(30))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Write an XY line chart as `figures/<stem>.svg` and `.png`.
pub fn write_xy(run_dir: &Path, stem: &str, figure: &XyFigure) -> Result<Vec<PathBuf>> {
    write_figure(run_dir, stem, figure)
}

/// Redraw the figures of a throughput run (and its summary) from the CSV alone:
/// `throughput_vs_clients` and `latency_vs_throughput`, one line per protocol, mode,
/// cluster size and whatever else varies besides the client count.
pub fn plot_throughput(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    use crate::results::{mean, summarize_throughput};
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    summarize_throughput(&table, &run_dir.join(SUMMARY_CSV))?;
    if table.rows.iter().any(|row| table.number(row, "rate_per_s").is_some()) {
        return plot_open_loop(run_dir, experiment_name, &table);
    }
    let series_columns: Vec<&str> = table.point_columns().into_iter().filter(|c| *c != "clients").collect();
    let groups = table.group_by(&series_columns);
    let varies: Vec<bool> =
        (0..series_columns.len()).map(|i| groups.iter().any(|(k, _)| k[i] != groups[0].0[i])).collect();
    let label = |key: &[String]| -> String {
        let mut parts = Vec::new();
        for (i, column) in series_columns.iter().enumerate() {
            if !varies[i] && !matches!(*column, "protocol" | "nodes") {
                continue;
            }
            parts.push(match *column {
                "protocol" => key[i].clone(),
                "mode" => key[i].clone(),
                "nodes" => format!("{} nodes", key[i]),
                "value_bytes" => format!("{} B", key[i]),
                "batch_delay_ms" => format!("batch {} ms", key[i]),
                "max_batches_in_flight" if key[i] == "0" => "unbatched".to_string(),
                "max_batches_in_flight" => format!("{} in flight", key[i]),
                "latency_ms_mean" => format!("latency {} ms", key[i]),
                "loss" => format!("loss {}", key[i]),
                other => format!("{other} {}", key[i]),
            });
        }
        parts.join(", ")
    };
    let mut throughput_series = Vec::new();
    let mut latency_series = Vec::new();
    for (key, rows) in &groups {
        // Per client count: means over trials.
        let mut by_clients: std::collections::BTreeMap<u64, Vec<&Vec<String>>> = Default::default();
        for row in rows {
            if let Some(c) = table.number(row, "clients") {
                by_clients.entry(c as u64).or_default().push(row);
            }
        }
        let mut throughput = Vec::new();
        let mut latency = Vec::new();
        let mut throughput_bars = Vec::new();
        for (clients, rows) in by_clients {
            let values = |column: &str| rows.iter().filter_map(|r| table.number(r, column)).collect::<Vec<_>>();
            let ops_values = values("ops_per_s");
            let ops = mean(&ops_values);
            throughput.push((clients as f64, ops));
            if let Some(half) = t_half_width_95(&ops_values) {
                throughput_bars.push((clients as f64, ops - half, ops + half));
            }
            latency.push((ops, mean(&values("latency_ms_p99"))));
        }
        let color = throughput_series.len();
        throughput_series.push(XySeries {
            label: label(key),
            points: throughput,
            color,
            fitted: false,
            error_bars: throughput_bars,
        });
        latency_series.push(XySeries {
            label: label(key),
            points: latency,
            color,
            fitted: false,
            error_bars: Vec::new(),
        });
    }
    let mut written = write_xy(
        run_dir,
        "throughput_vs_clients",
        &XyFigure {
            title: format!("{experiment_name}: committed operations per second (mean, 95% CI of repeated trials)"),
            x_label: "closed-loop clients".into(),
            y_label: "throughput (ops/s)".into(),
            series: throughput_series,
        },
    )?;
    written.extend(write_xy(
        run_dir,
        "latency_vs_throughput",
        &XyFigure {
            title: format!("{experiment_name}: p99 latency against throughput"),
            x_label: "throughput (ops/s)".into(),
            y_label: "p99 latency (ms)".into(),
            series: latency_series,
        },
    )?);
    written.extend(plot_message_growth(run_dir, experiment_name, &table)?);
    Ok(written)
}

/// Where an open-loop run's knees go, beside `summary.csv`.
pub const KNEE_CSV: &str = "knee.csv";

fn write_csv(path: &Path, records: &[Vec<String>]) -> Result<()> {
    let csv_err = |e| ReportError::Csv { path: path.to_path_buf(), source: e };
    let mut writer = csv::Writer::from_path(path).map_err(csv_err)?;
    for record in records {
        writer.write_record(record).map_err(csv_err)?;
    }
    writer.flush().map_err(|e| ReportError::Io { path: path.to_path_buf(), source: e })
}

/// The fraction of the offered load a point must carry, with nothing dropped, to be
/// below the knee.
pub const KNEE_CARRIED_FRACTION: f64 = 0.95;

/// An open-loop run's figures: achieved against offered load (with the line where they
/// are equal) and p50 and p99 latency against offered load, one line per protocol,
/// mode and whatever else varies besides the rate. The knee of each line, the highest
/// offered rate it carried (achieved at least [`KNEE_CARRIED_FRACTION`] of offered, no
/// request dropped), goes to `knee.csv` and into the legend.
fn plot_open_loop(run_dir: &Path, experiment_name: &str, table: &Table) -> Result<Vec<PathBuf>> {
    use crate::results::{fmt_metric, mean};
    let series_columns: Vec<&str> =
        table.point_columns().into_iter().filter(|c| !matches!(*c, "rate_per_s" | "arrival")).collect();
    let groups = table.group_by(&series_columns);
    let varies: Vec<bool> =
        (0..series_columns.len()).map(|i| groups.iter().any(|(k, _)| k[i] != groups[0].0[i])).collect();
    let label = |key: &[String]| -> String {
        let parts: Vec<String> = series_columns
            .iter()
            .enumerate()
            .filter(|(i, column)| varies[*i] || matches!(**column, "protocol" | "nodes"))
            .map(|(i, column)| match *column {
                "protocol" | "mode" => key[i].clone(),
                "nodes" => format!("{} nodes", key[i]),
                other => format!("{other} {}", key[i]),
            })
            .collect();
        parts.join(", ")
    };
    let knee_header = ["knee_rate_per_s", "latency_ms_p99_at_knee", "rates_carried", "rates"];
    let mut knees: Vec<Vec<String>> = vec![series_columns.iter().chain(&knee_header).map(|c| c.to_string()).collect()];
    let (mut achieved_series, mut latency_series) = (Vec::new(), Vec::new());
    let mut offered_max = 0.0f64;
    for (color, (key, rows)) in groups.iter().enumerate() {
        let mut by_rate: std::collections::BTreeMap<u64, Vec<&Vec<String>>> = Default::default();
        for row in rows {
            if let Some(rate) = table.number(row, "rate_per_s") {
                by_rate.entry(rate.to_bits()).or_default().push(row);
            }
        }
        let mut points: Vec<(f64, f64, f64, f64, f64)> = by_rate
            .values()
            .map(|rows| {
                let values =
                    |column: &str| mean(&rows.iter().filter_map(|r| table.number(r, column)).collect::<Vec<_>>());
                let rate = values("rate_per_s");
                (rate, values("ops_per_s"), values("dropped_ops"), values("latency_ms_p50"), values("latency_ms_p99"))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        offered_max = points.iter().map(|p| p.0).fold(offered_max, f64::max);
        let carried = |p: &(f64, f64, f64, f64, f64)| p.1 >= KNEE_CARRIED_FRACTION * p.0 && p.2 == 0.0;
        let knee = points.iter().take_while(|p| carried(p)).last();
        let knee_text = knee.map_or("below the lowest rate".to_string(), |k| format!("knee {}/s", format_tick(k.0)));
        knees.push(
            [
                key.clone(),
                vec![
                    knee.map_or(String::new(), |k| fmt_metric(k.0)),
                    knee.map_or(String::new(), |k| fmt_metric(k.4)),
                    points.iter().filter(|p| carried(p)).count().to_string(),
                    points.len().to_string(),
                ],
            ]
            .concat(),
        );
        let name = label(key);
        achieved_series.push(XySeries {
            label: format!("{name} ({knee_text})"),
            points: points.iter().map(|p| (p.0, p.1)).collect(),
            color,
            fitted: false,
            error_bars: Vec::new(),
        });
        latency_series.push(XySeries {
            label: format!("{name}, p99 ({knee_text})"),
            points: points.iter().map(|p| (p.0, p.4)).collect(),
            color,
            fitted: false,
            error_bars: Vec::new(),
        });
        latency_series.push(XySeries {
            label: format!("{name}, p50"),
            points: points.iter().map(|p| (p.0, p.3)).collect(),
            color,
            fitted: true,
            error_bars: Vec::new(),
        });
    }
    write_csv(&run_dir.join(KNEE_CSV), &knees)?;
    achieved_series.push(XySeries {
        label: "achieved = offered".into(),
        points: vec![(0.0, 0.0), (offered_max, offered_max)],
        color: groups.len(),
        fitted: true,
        error_bars: Vec::new(),
    });
    let mut written = write_xy(
        run_dir,
        "achieved_vs_offered",
        &XyFigure {
            title: format!("{experiment_name}: operations completed against operations offered per second"),
            x_label: "offered load (Poisson arrivals per s)".into(),
            y_label: "achieved (ops/s)".into(),
            series: achieved_series,
        },
    )?;
    written.extend(write_xy(
        run_dir,
        "latency_vs_offered_load",
        &XyFigure {
            title: format!("{experiment_name}: latency from arrival against offered load (p99 solid, p50 dashed)"),
            x_label: "offered load (Poisson arrivals per s)".into(),
            y_label: "latency from arrival (ms)".into(),
            series: latency_series,
        },
    )?);
    Ok(written)
}

/// Where the cluster size varies over at least three values: messages per committed
/// operation against n, with a least-squares quadratic `a n² + b n + c` per line (PBFT's
/// all-to-all prepare and commit phases make it quadratic; a leader-based protocol's
/// count is linear and its `a` comes out near zero). The coefficients go to
/// `message_growth.csv` beside the figure.
fn plot_message_growth(run_dir: &Path, experiment_name: &str, table: &Table) -> Result<Vec<PathBuf>> {
    use crate::results::{fit_quadratic, mean};
    let key_columns: Vec<&str> = table.point_columns().into_iter().filter(|c| *c != "nodes").collect();
    let groups = table.group_by(&key_columns);
    let varies: Vec<bool> =
        (0..key_columns.len()).map(|i| groups.iter().any(|(k, _)| k[i] != groups[0].0[i])).collect();
    let mut series = Vec::new();
    let mut fits =
        vec![[key_columns.clone(), vec!["a_n2", "b_n", "c", "r_squared", "nodes_min", "nodes_max"]].concat().join(",")];
    for (key, rows) in &groups {
        let mut by_nodes: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        for row in rows {
            if let (Some(n), Some(m)) = (table.number(row, "nodes"), table.number(row, "msgs_per_op")) {
                by_nodes.entry(n as u64).or_default().push(m);
            }
        }
        let points: Vec<(f64, f64)> = by_nodes.iter().map(|(n, m)| (*n as f64, mean(m))).collect();
        let Some(fit) = fit_quadratic(&points) else { continue };
        let name = key
            .iter()
            .zip(&key_columns)
            .zip(&varies)
            .filter(|((_, column), varies)| **varies || **column == "protocol")
            .map(|((value, column), _)| if *column == "protocol" { value.clone() } else { format!("{column} {value}") })
            .collect::<Vec<_>>()
            .join(", ");
        let (lo, hi) = (points[0].0, points[points.len() - 1].0);
        let curve = (0..=40).map(|i| lo + (hi - lo) * i as f64 / 40.0).map(|n| (n, fit.at(n))).collect();
        let color = series.len() / 2;
        series.push(XySeries { label: name.clone(), points, color, fitted: false, error_bars: Vec::new() });
        series.push(XySeries {
            label: format!("fit {}", fit.formula()),
            points: curve,
            color,
            fitted: true,
            error_bars: Vec::new(),
        });
        fits.push(format!(
            "{},{:.4},{:.4},{:.4},{:.6},{lo},{hi}",
            key.join(","),
            fit.coefficients[0],
            fit.coefficients[1],
            fit.coefficients[2],
            fit.r_squared
        ));
    }
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let csv_path = run_dir.join("message_growth.csv");
    std::fs::write(&csv_path, fits.join("\n") + "\n").map_err(|e| ReportError::Io { path: csv_path, source: e })?;
    write_xy(
        run_dir,
        "messages_vs_nodes",
        &XyFigure {
            title: format!("{experiment_name}: messages per committed operation"),
            x_label: "replicas (n)".into(),
            y_label: "messages per operation".into(),
            series,
        },
    )
}

/// The heat map `figures/NAME` of an attack summary: per row the share of unsafe trials
/// and the share that `stalled` counts (out of the `trials` column), each with its verdict.
struct MatrixSpec<'a> {
    name: &'a str,
    title: String,
    trials: &'a str,
    stalled: &'a str,
    stalled_heading: &'static str,
    /// A row's label, from its summary columns by name.
    label: RowLabel,
}

/// How a heat map names a row, given the row's summary columns by name.
type RowLabel = fn(&dyn Fn(&str) -> String) -> String;

/// An attack summary row's label: protocol, size, attack, how many run it, and where.
fn attack_label(text: &dyn Fn(&str) -> String) -> String {
    format!(
        "{} ({} nodes): {} x{}{}",
        text("protocol"),
        text("nodes"),
        text("attack"),
        text("malicious"),
        attack_setting(&text("leader_fault"), &text("mode"))
    )
}

fn write_attack_matrix(run_dir: &Path, summary: &Table, spec: MatrixSpec) -> Result<Vec<PathBuf>> {
    let mut rows = Vec::new();
    for row in &summary.rows {
        let text = |c: &str| summary.get(row, c).unwrap_or("").to_string();
        let number = |c: &str| summary.number(row, c).unwrap_or(0.0);
        let trials = number(spec.trials).max(1.0);
        rows.push(MatrixRow {
            label: (spec.label)(&text),
            unsafe_share: number("unsafe") / trials,
            stalled_share: number(spec.stalled) / trials,
            verdict: text("verdict"),
        });
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let height = (90 + 34 * rows.len()) as u32;
    write_figure_sized(
        run_dir,
        spec.name,
        &AttackMatrix { title: spec.title, rows, stalled_heading: spec.stalled_heading },
        (1000, height),
    )
}

/// An attack run: the matrix (`summary.csv`, `matrix.md`) and its heat map
/// (`figures/attack_matrix`) from the CSV; `protocols` orders the timeline's colours.
pub fn plot_attack(run_dir: &Path, experiment_name: &str, protocols: &[&str]) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_attack(&table, run_dir)?;
    let summary = Table::read(&run_dir.join(SUMMARY_CSV))?;
    if summary.rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut figures = write_attack_matrix(
        run_dir,
        &summary,
        MatrixSpec {
            name: "attack_matrix",
            title: format!("{experiment_name}: safety and liveness under attack"),
            trials: "seeds",
            stalled: "not_recovered",
            stalled_heading: "runs not recovered",
            label: attack_label,
        },
    )?;
    figures.extend(plot_attack_timeline(run_dir, experiment_name, &table, protocols)?);
    Ok(figures)
}

/// An attack-chaos run: `summary.csv` and the matrix of unsafe and not-live shares
/// (`figures/attack_chaos_matrix`), from the CSV.
pub fn plot_attack_chaos(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_attack_chaos(&table, run_dir)?;
    let summary = Table::read(&run_dir.join(SUMMARY_CSV))?;
    write_attack_matrix(
        run_dir,
        &summary,
        MatrixSpec {
            name: "attack_chaos_matrix",
            title: format!("{experiment_name}: safety and liveness, attacks under chaos"),
            trials: "trials",
            stalled: "not_live",
            stalled_heading: "runs not live after the heal",
            label: attack_label,
        },
    )
}

/// A chaos run: `summary.csv` (verdicts per protocol and size, and per protocol over
/// every size), `coverage.csv` (seeds reaching each coverage mark) and the heat map
/// `figures/chaos_matrix` of unsafe and not-live shares.
pub fn plot_chaos(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_chaos(&table, run_dir)?;
    let summary = Table::read(&run_dir.join(SUMMARY_CSV))?;
    write_attack_matrix(
        run_dir,
        &summary,
        MatrixSpec {
            name: "chaos_matrix",
            title: format!("{experiment_name}: safety and liveness over seeds"),
            trials: "seeds",
            stalled: "not_live",
            stalled_heading: "runs not live after the heal",
            label: |text| match text("nodes").as_str() {
                "" => format!("{} (every size)", text("protocol")),
                nodes => format!("{} ({nodes} nodes)", text("protocol")),
            },
        },
    )
}

/// `figures/availability_vs_nodes` (and `summary.csv`) from an availability run: the
/// mean share of time after the failures with a leader a majority follows, against the
/// cluster size, one line per protocol and number of failures.
pub fn plot_availability(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_availability(&table, &run_dir.join(SUMMARY_CSV))?;
    let mut series = Vec::new();
    for (key, rows) in table.group_by(&["protocol", "failures"]) {
        let mut points: Vec<(f64, f64)> = table
            .group_by(&["nodes"])
            .into_iter()
            .filter_map(|(nodes, _)| {
                let values: Vec<f64> = rows
                    .iter()
                    .filter(|r| table.get(r, "nodes") == Some(nodes[0].as_str()))
                    .filter_map(|r| table.number(r, "available_after_failures"))
                    .collect();
                let n: f64 = nodes[0].parse().ok()?;
                (!values.is_empty()).then(|| (n, 100.0 * crate::results::mean(&values)))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = series.len();
        series.push(XySeries {
            label: format!("{}, {} failed", key[0], key[1]),
            points,
            color,
            fitted: false,
            error_bars: Vec::new(),
        });
    }
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let figure = XyFigure {
        title: format!("{experiment_name}: time with a majority-backed leader after k failures"),
        x_label: "replicas (n)".into(),
        y_label: "time with a leader a majority follows (%)".into(),
        series,
    };
    write_xy(run_dir, "availability_vs_nodes", &figure)
}

/// One ratio of `qlab compare`: B / A at a point, with its 95% interval.
pub struct RatioRow {
    pub label: String,
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
}

/// A dot plot of ratios, one row each, whiskers for the intervals, a line at 1.
pub struct RatioFigure {
    pub title: String,
    pub rows: Vec<RatioRow>,
}

const RATIO_LABEL_PX: u32 = 460;
const RATIO_ROW_PX: u32 = 24;

impl Drawable for RatioFigure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let finite = |v: f64| v.is_finite().then_some(v);
        let all = self.rows.iter().flat_map(|r| [finite(r.ratio), finite(r.low), finite(r.high)]).flatten();
        let (lo, hi) = all.fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.08).max(0.02);
        let n = self.rows.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(RATIO_LABEL_PX)
            .build_cartesian_2d((lo - pad)..(hi + pad), -0.5f64..(n as f64 - 0.5))
            .map_err(|e| e.to_string())?;
        let labels: Vec<String> = self.rows.iter().map(|r| r.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[labels.len() - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc("B / A")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(vec![(1.0, -0.5), (1.0, n as f64 - 0.5)], 6, 4, grey.stroke_width(1)))
            .map_err(|e| e.to_string())?;
        for (i, row) in self.rows.iter().enumerate() {
            // The first row on top.
            let y = (n - 1 - i) as f64;
            // Vermilion when the interval excludes 1 (a change the trials support), blue when not.
            let changed = row.low > 1.0 || row.high < 1.0;
            let color = if changed { series_color(1) } else { series_color(0) };
            if row.low.is_finite() && row.high.is_finite() {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(row.low, y), (row.high, y)],
                        color.stroke_width(2),
                    )))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(std::iter::once(Circle::new((row.ratio, y), 4, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }
}

/// Write a ratio dot plot as `figures/<stem>.svg` and `.png` under `dir`.
pub fn write_ratios(dir: &Path, stem: &str, figure: &RatioFigure) -> Result<Vec<PathBuf>> {
    let height = 110 + RATIO_ROW_PX * figure.rows.len() as u32;
    write_figure_sized(dir, stem, figure, (1100, height.max(240)))
}

/// Rewrite a counterexample run's `summary.csv` and `counterexamples.md` from its CSV
/// (a table is the whole result: no figure); `describe` gives a case's description.
pub fn plot_counterexamples(run_dir: &Path, describe: &dyn Fn(&str) -> String) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_counterexamples(&table, run_dir, describe)?;
    Ok(Vec::new())
}

/// Redraw a reads run's summary, `reads.md` and `figures/read_modes_matrix` from its
/// CSV: one row per protocol and read mode, one column per fault profile and clock
/// skew, each cell shaded by the share of trials whose history was not linearizable and
/// captioned with the count.
pub fn plot_reads(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_reads(&table, run_dir)?;
    // A row per protocol and read mode, and per mode when a run has both (runs from
    // before the `mode` column were all simulated).
    let row_key: &[&str] = if table.column("mode").is_some() && table.group_by(&["mode"]).len() > 1 {
        &["protocol", "mode", "read_mode"]
    } else {
        &["protocol", "read_mode"]
    };
    let rows: Vec<Vec<String>> = table.group_by(row_key).into_iter().map(|(k, _)| k).collect();
    let columns: Vec<Vec<String>> =
        table.group_by(&["fault_profile", "clock_skew_ppm"]).into_iter().map(|(k, _)| k).collect();
    if rows.is_empty() || columns.is_empty() {
        return Ok(Vec::new());
    }
    let mut cells = vec![vec![None; columns.len()]; rows.len()];
    let cell_key: Vec<&str> = row_key.iter().copied().chain(["fault_profile", "clock_skew_ppm"]).collect();
    for (key, trials) in table.group_by(&cell_key) {
        let (row, column) = key.split_at(row_key.len());
        let r = rows.iter().position(|r| r[..] == *row).expect("grouped from the same table");
        let c = columns.iter().position(|c| c[..] == *column).expect("grouped from the same table");
        let stale = trials.iter().filter(|t| table.get(t, "linearizable") == Some("no")).count();
        cells[r][c] = Some((stale, trials.len()));
    }
    let figure = ReadsMatrix {
        title: format!("{experiment_name}: trials whose client history is not linearizable"),
        row_labels: rows.iter().map(|r| r.join(" ")).collect(),
        column_groups: columns.iter().map(|c| c[0].clone()).collect(),
        column_labels: columns
            .iter()
            .map(|c| c[1].parse::<f64>().map_or(c[1].clone(), |ppm| format!("skew {}%", ppm / 1e4)))
            .collect(),
        cells,
    };
    // Wide enough for the cells and for the title (22 px type, at most 11 px a character).
    let size = (
        (READS_LABEL_PX + READS_CELL_PX.0 * figure.column_labels.len() as u32 + 20)
            .max(40 + 11 * figure.title.chars().count() as u32),
        READS_TOP_PX + READS_CELL_PX.1 * figure.row_labels.len() as u32 + 20,
    );
    write_figure_sized(run_dir, "read_modes_matrix", &figure, size)
}

const READS_LABEL_PX: u32 = 230;
const READS_CELL_PX: (u32, u32) = (96, 34);
const READS_TOP_PX: u32 = 100;

/// The read-mode matrix: a row per protocol and read mode, a column per fault profile
/// and clock skew; `cells[row][column]` is (trials not linearizable, trials).
struct ReadsMatrix {
    title: String,
    row_labels: Vec<String>,
    column_groups: Vec<String>,
    column_labels: Vec<String>,
    cells: Vec<Vec<Option<(usize, usize)>>>,
}

impl Drawable for ReadsMatrix {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let text = |size| ("sans-serif", size).into_font().color(&BLACK);
        root.draw(&Text::new(self.title.clone(), (20, 14), text(22))).map_err(err)?;
        let (label_w, (cell_w, cell_h), top) = (READS_LABEL_PX as i32, READS_CELL_PX, READS_TOP_PX as i32);
        let (cell_w, cell_h) = (cell_w as i32, cell_h as i32);
        for (c, label) in self.column_labels.iter().enumerate() {
            let x = label_w + c as i32 * cell_w;
            // The fault profile once, above its first column.
            if c == 0 || self.column_groups[c] != self.column_groups[c - 1] {
                let group = match self.column_groups[c].as_str() {
                    "none" => "no faults".to_string(),
                    profile => format!("{profile} faults"),
                };
                root.draw(&Text::new(group, (x + 4, top - 52), text(16))).map_err(err)?;
            }
            root.draw(&Text::new(label.clone(), (x + 4, top - 26), text(14))).map_err(err)?;
        }
        // White (none stale) to vermilion (every trial stale), Okabe & Ito; any stale
        // trial at all shows at a quarter strength, so 1 in 200 is not white.
        let shade = |share: f64| {
            let strength = if share > 0.0 { 0.25 + 0.75 * share.clamp(0.0, 1.0) } else { 0.0 };
            let mix = |a: u8| (255.0 - (255.0 - a as f64) * strength).round() as u8;
            RGBColor(mix(213), mix(94), mix(0))
        };
        for (r, label) in self.row_labels.iter().enumerate() {
            let y = top + r as i32 * cell_h;
            root.draw(&Text::new(label.clone(), (20, y + 9), text(16))).map_err(err)?;
            for (c, cell) in self.cells[r].iter().enumerate() {
                let x = label_w + c as i32 * cell_w;
                let area = [(x, y), (x + cell_w - 4, y + cell_h - 4)];
                let (fill, caption) = match cell {
                    Some((stale, trials)) => (shade(*stale as f64 / *trials as f64), format!("{stale}/{trials}")),
                    None => (RGBColor(240, 240, 240), "-".to_string()),
                };
                root.draw(&Rectangle::new(area, fill.filled())).map_err(err)?;
                root.draw(&Rectangle::new(area, RGBColor(160, 160, 160).stroke_width(1))).map_err(err)?;
                root.draw(&Text::new(caption, (x + 8, y + 8), text(15))).map_err(err)?;
            }
        }
        root.present().map_err(|e| e.to_string())
    }
}

/// The colour a protocol has in every multi-protocol figure (Okabe & Ito): its place in
/// `protocols`, the lab's protocol list, so a protocol keeps its colour whichever others
/// a run has and a new protocol gets the next one.
fn protocol_color(protocol: &str, protocols: &[&str]) -> RGBColor {
    series_color(protocols.iter().position(|p| *p == protocol).unwrap_or(6))
}

/// One panel of the timeline: an attack on one protocol, averaged over its seeds.
struct TimelinePanel {
    title: String,
    protocol: String,
    /// Bin middle (s), mean ops/s over trials, and the 95% confidence interval of the mean.
    points: Vec<(f64, f64, f64, f64)>,
    window_s: (f64, f64),
    /// The run's length: the last bin's end.
    span_s: f64,
}

/// Small multiples, one per (protocol, attack, malicious), each protocol's panels on the
/// same y scale so attacks on it compare at a glance; the attack window is shaded.
struct AttackTimeline {
    /// The protocols in the order that gives each its colour.
    protocols: Vec<String>,
    title: String,
    columns: usize,
    panels: Vec<TimelinePanel>,
    y_max_by_protocol: Vec<(String, f64)>,
}

const TIMELINE_COLUMNS: usize = 4;
const TIMELINE_PANEL_PX: (u32, u32) = (380, 230);

/// `figures/attack_timeline`: throughput over time, from the `completions_per_bin`
/// column. Runs recorded before the column existed get no timeline.
fn plot_attack_timeline(
    run_dir: &Path,
    experiment_name: &str,
    table: &Table,
    protocols: &[&str],
) -> Result<Vec<PathBuf>> {
    let title = format!("{experiment_name}: throughput over time (mean of seeds, 95% CI; attack window shaded)");
    let spec = TimelineSpec {
        stem: "attack_timeline",
        title: &title,
        group_columns: &["protocol", "nodes", "attack", "malicious", "leader_fault", "mode"],
        panel_title: &|key| {
            format!("{} n={}: {} x{}{}", key[0], key[1], key[2], key[3], attack_setting(&key[4], &key[5]))
        },
        window_columns: ("attack_from_ms", "attack_until_ms"),
        protocols,
    };
    write_timeline(run_dir, table, &spec)
}

/// What sets an attack row apart besides the attack: the leader fault mid-attack (a
/// calm window says nothing) and the mode (the simulator says nothing).
fn attack_setting(leader_fault: &str, mode: &str) -> String {
    let fault = match leader_fault {
        "" | "none" => String::new(),
        "isolate" => ", leader cut off".to_string(),
        other => format!(", leader {other}"),
    };
    let mode = if mode.is_empty() || mode == "sim" { String::new() } else { format!(" [{mode}]") };
    format!("{fault}{mode}")
}

/// What a timeline figure shows: its file stem and title, the columns a panel groups
/// by and how a panel is titled, the window (ms) to shade, and the protocols' order for
/// colours.
#[derive(Clone, Copy)]
struct TimelineSpec<'a> {
    stem: &'a str,
    title: &'a str,
    group_columns: &'a [&'a str],
    panel_title: &'a dyn Fn(&[String]) -> String,
    window_columns: (&'a str, &'a str),
    protocols: &'a [&'a str],
}

/// Small multiples of throughput over time, one panel per group of `group_columns`
/// (the first being the protocol), from `completions_per_bin` and `timeline_bin_ms`,
/// with the window between the two `window_columns` (ms) shaded.
fn write_timeline(run_dir: &Path, table: &Table, spec: &TimelineSpec) -> Result<Vec<PathBuf>> {
    let TimelineSpec { stem, title, group_columns, panel_title, window_columns, protocols } = *spec;
    if table.column("completions_per_bin").is_none() {
        return Ok(Vec::new());
    }
    let mut panels = Vec::new();
    for (key, rows) in table.group_by(group_columns) {
        let first = rows[0];
        let number = |c: &str| table.number(first, c).unwrap_or(f64::NAN);
        let bin_s = number("timeline_bin_ms") / 1e3;
        let window_s = (number(window_columns.0) / 1e3, number(window_columns.1) / 1e3);
        let series: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let cell = table.get(r, "completions_per_bin").unwrap_or("");
                cell.split_whitespace().map(|n| n.parse::<f64>().unwrap_or(f64::NAN) / bin_s).collect()
            })
            .collect();
        let bins = series.iter().map(Vec::len).min().unwrap_or(0);
        if bin_s.is_nan() || bin_s <= 0.0 || bins == 0 {
            continue;
        }
        let points = (0..bins)
            .map(|b| {
                let values: Vec<f64> = series.iter().map(|s| s[b]).collect();
                let mean = crate::results::mean(&values);
                let half = confidence_half_width_95(&values, mean);
                ((b as f64 + 0.5) * bin_s, mean, (mean - half).max(0.0), mean + half)
            })
            .collect();
        panels.push(TimelinePanel {
            title: panel_title(&key),
            protocol: key[0].clone(),
            points,
            window_s,
            span_s: bins as f64 * bin_s,
        });
    }
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    let mut y_max_by_protocol: Vec<(String, f64)> = Vec::new();
    for panel in &panels {
        let top = panel.points.iter().map(|p| p.3).fold(0.0, f64::max);
        match y_max_by_protocol.iter_mut().find(|(p, _)| *p == panel.protocol) {
            Some((_, y)) => *y = y.max(top),
            None => y_max_by_protocol.push((panel.protocol.clone(), top)),
        }
    }
    // As many columns as the protocol with the most panels needs, up to four.
    let widest = y_max_by_protocol
        .iter()
        .map(|(protocol, _)| panels.iter().filter(|p| p.protocol == *protocol).count())
        .max()
        .unwrap_or(1);
    let columns = widest.clamp(1, TIMELINE_COLUMNS);
    let protocols = protocols.iter().map(|p| p.to_string()).collect();
    let figure = AttackTimeline { title: title.to_string(), protocols, columns, panels, y_max_by_protocol };
    let rows = figure.panel_rows().len();
    let size = ((TIMELINE_PANEL_PX.0 * columns as u32).max(760), 50 + TIMELINE_PANEL_PX.1 * rows as u32);
    write_figure_sized(run_dir, stem, &figure, size)
}

/// `summary.csv` and `figures/disruption_timeline` from a disruption run: throughput
/// over time per scenario and PreVote setting, the faults' span shaded; `protocols`
/// orders the colours.
pub fn plot_disruption(run_dir: &Path, experiment_name: &str, protocols: &[&str]) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    crate::results::summarize_disruption(&table, &run_dir.join(SUMMARY_CSV))?;
    let title = format!("{experiment_name}: throughput over time (mean of seeds, 95% CI; faults' span shaded)");
    // A panel per mode too when a run has both (runs from before the `mode` column
    // were all simulated).
    let both_modes = table.column("mode").is_some() && table.group_by(&["mode"]).len() > 1;
    let group_columns: &[&str] = if both_modes {
        &["protocol", "nodes", "scenario", "pre_vote", "check_quorum", "mode"]
    } else {
        &["protocol", "nodes", "scenario", "pre_vote", "check_quorum"]
    };
    let spec = TimelineSpec {
        stem: "disruption_timeline",
        title: &title,
        group_columns,
        panel_title: &|key| {
            let pre_vote =
                if key[0] == "raft" { if key[3] == "true" { ", pre-vote" } else { ", no pre-vote" } } else { "" };
            let mode = key.get(5).map_or(String::new(), |mode| format!(" ({mode})"));
            format!("{} n={}: {}{pre_vote}{mode}", key[0], key[1], key[2])
        },
        window_columns: ("fault_from_ms", "fault_until_ms"),
        protocols,
    };
    write_timeline(run_dir, &table, &spec)
}

/// Half the width of a normal-approximation 95% confidence interval of the mean.
/// Half-width of the 95% Student-t interval of the mean of `values` (`None` for fewer
/// than two): repetitions of a throughput point are few, where 1.96 would understate.
fn t_half_width_95(values: &[f64]) -> Option<f64> {
    const T_975: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T_975.get(n - 2).copied().unwrap_or(1.96);
    Some(t * (variance / n as f64).sqrt())
}

fn confidence_half_width_95(values: &[f64], mean: f64) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    1.96 * (variance / n).sqrt()
}

impl AttackTimeline {
    /// Panels laid out row by row, each protocol starting a new row.
    fn panel_rows(&self) -> Vec<Vec<&TimelinePanel>> {
        let mut rows: Vec<Vec<&TimelinePanel>> = Vec::new();
        for panel in &self.panels {
            match rows.last_mut() {
                Some(row) if row.len() < self.columns && row[0].protocol == panel.protocol => row.push(panel),
                _ => rows.push(vec![panel]),
            }
        }
        rows
    }
}

impl Drawable for AttackTimeline {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root.titled(&self.title, ("sans-serif", 22)).map_err(|e| e.to_string())?;
        let rows = self.panel_rows();
        let areas = root.split_evenly((rows.len(), self.columns));
        for (r, row) in rows.iter().enumerate() {
            for (c, panel) in row.iter().enumerate() {
                let area = &areas[r * self.columns + c];
                let order: Vec<&str> = self.protocols.iter().map(String::as_str).collect();
                let color = protocol_color(&panel.protocol, &order);
                let x_max = panel.span_s;
                let y_max =
                    self.y_max_by_protocol.iter().find(|(p, _)| *p == panel.protocol).map_or(1.0, |(_, y)| *y).max(1.0)
                        * 1.08;
                let mut chart = ChartBuilder::on(area)
                    .caption(&panel.title, ("sans-serif", 15))
                    .margin(6)
                    .x_label_area_size(34)
                    .y_label_area_size(52)
                    .build_cartesian_2d(0f64..x_max, 0f64..y_max)
                    .map_err(|e| e.to_string())?;
                chart
                    .configure_mesh()
                    .x_labels(6)
                    .y_labels(5)
                    .x_label_formatter(&|v| format_tick(*v))
                    .y_label_formatter(&|v| format_tick(*v))
                    .x_desc("time (s)")
                    .y_desc("ops/s")
                    .label_style(("sans-serif", 12))
                    .axis_desc_style(("sans-serif", 13))
                    .light_line_style(RGBColor(240, 240, 240))
                    .draw()
                    .map_err(|e| e.to_string())?;
                let (from, until) = panel.window_s;
                // A fault at one instant (a crash, a handover) still gets a visible mark.
                let until = if until > from { until } else { from + x_max * 0.004 };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(from, 0.0), (until, y_max)],
                        RGBColor(120, 120, 120).mix(0.18).filled(),
                    )))
                    .map_err(|e| e.to_string())?;
                let band: Vec<(f64, f64)> = panel
                    .points
                    .iter()
                    .map(|p| (p.0, p.3))
                    .chain(panel.points.iter().rev().map(|p| (p.0, p.2)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(band, color.mix(0.25).filled())))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(LineSeries::new(panel.points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
            }
        }
        root.present().map_err(|e| e.to_string())
    }
}

struct MatrixRow {
    label: String,
    unsafe_share: f64,
    stalled_share: f64,
    verdict: String,
}

/// One row per (protocol, attack, malicious): a cell shaded by the share of unsafe runs
/// and one by the share that did not recover, each with its verdict or share written in.
struct AttackMatrix {
    title: String,
    rows: Vec<MatrixRow>,
    /// What the second column counts ("runs not recovered", "runs not live").
    stalled_heading: &'static str,
}

impl Drawable for AttackMatrix {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let text = |size| ("sans-serif", size).into_font().color(&BLACK);
        root.draw(&Text::new(self.title.clone(), (20, 14), text(24))).map_err(err)?;
        let (label_x, cell_w, row_h, top) = (20, 230, 34, 80);
        let (unsafe_x, stalled_x) = (440, 440 + cell_w + 20);
        root.draw(&Text::new("runs unsafe", (unsafe_x, top - 26), text(17))).map_err(err)?;
        root.draw(&Text::new(self.stalled_heading, (stalled_x, top - 26), text(17))).map_err(err)?;
        // White (0) to vermilion (1) for unsafe, to orange for stalled (Okabe & Ito).
        let shade = |share: f64, to: (u8, u8, u8)| {
            let mix = |a: u8| (255.0 - (255.0 - a as f64) * share.clamp(0.0, 1.0)).round() as u8;
            RGBColor(mix(to.0), mix(to.1), mix(to.2))
        };
        for (i, row) in self.rows.iter().enumerate() {
            let y = top + (i as i32) * row_h;
            root.draw(&Text::new(row.label.clone(), (label_x, y + 8), text(16))).map_err(err)?;
            for (x, share, color, caption) in [
                (unsafe_x, row.unsafe_share, (213, 94, 0), row.verdict.clone()),
                (stalled_x, row.stalled_share, (230, 159, 0), format!("{:.0}%", row.stalled_share * 100.0)),
            ] {
                let cell = [(x, y), (x + cell_w, y + row_h - 4)];
                root.draw(&Rectangle::new(cell, shade(share, color).filled())).map_err(err)?;
                root.draw(&Rectangle::new(cell, RGBColor(160, 160, 160).stroke_width(1))).map_err(err)?;
                root.draw(&Text::new(caption, (x + 8, y + 8), text(15))).map_err(err)?;
            }
        }
        root.present().map_err(|e| e.to_string())
    }
}
