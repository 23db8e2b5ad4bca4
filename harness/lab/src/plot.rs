//! Figures drawn from a run's `trials.csv` alone (so `qlab plot` can redraw them).
//!
//! Every figure is written as SVG (for papers) and PNG (for the README and quick
//! looks). Text uses DejaVu Sans, bundled in the binary and registered with plotters'
//! `ab_glyph` renderer, so PNG text looks the same on every machine and needs no
//! system font.

use crate::error::{LabError, Result};
use crate::results::{ELECTION_POINT_COLUMNS, FIGURES_DIR, SUMMARY_CSV, TRIALS_CSV, Table, summarize_election};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans font is a valid TTF"));
    });
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
    let mut chart = ChartBuilder::on(&root);
    chart
        .caption(&figure.title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(52)
        .y_label_area_size(64);
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
                .x_desc(&figure.x_label)
                .y_desc("trials (cumulative %)")
                .label_style(("sans-serif", 17))
                .axis_desc_style(("sans-serif", 19))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in figure.series.iter().enumerate() {
                let color = series_color(i);
                chart
                    .draw_series(LineSeries::new(points(s), color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(&s.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 16))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if figure.log_x {
        let lo = (lo * 0.8).max(0.1);
        let hi = (hi * 1.25).max(lo * 10.0);
        finish_chart!(chart.build_cartesian_2d((lo..hi).log_scale(), 0f64..100.5f64).map_err(|e| e.to_string())?);
    } else {
        let span = (hi - lo).max(1.0);
        finish_chart!(
            chart.build_cartesian_2d((lo - 0.05 * span)..(hi + 0.05 * span), 0f64..100.5f64).map_err(|e| e.to_string())?
        );
    }
    root.present().map_err(|e| e.to_string())
}

/// Write `figures/<stem>.svg` and `figures/<stem>.png`.
pub fn write_cdf(run_dir: &Path, stem: &str, figure: &CdfFigure) -> Result<Vec<PathBuf>> {
    register_font();
    let dir = run_dir.join(FIGURES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| LabError::Io { path: dir.clone(), source: e })?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let size = (1000, 640);
    draw_cdf(SVGBackend::new(&svg, size).into_drawing_area(), figure)
        .map_err(|message| LabError::Plot { path: svg.clone(), message })?;
    draw_cdf(BitMapBackend::new(&png, size).into_drawing_area(), figure)
        .map_err(|message| LabError::Plot { path: png.clone(), message })?;
    Ok(vec![svg, png])
}

/// Label a point by the columns that vary between points.
fn point_labels(table: &Table, groups: &[(Vec<String>, Vec<&Vec<String>>)]) -> Vec<String> {
    let varying: Vec<usize> = (0..ELECTION_POINT_COLUMNS.len())
        .filter(|i| groups.iter().any(|(k, _)| k[*i] != groups[0].0[*i]))
        .collect();
    let _ = table;
    groups
        .iter()
        .map(|(key, _)| {
            let mut parts = Vec::new();
            let timeout_varies = varying.contains(&2) || varying.contains(&3);
            for i in &varying {
                match ELECTION_POINT_COLUMNS[*i] {
                    "protocol" => parts.push(key[*i].clone()),
                    "nodes" => parts.push(format!("{} nodes", key[*i])),
                    "election_timeout_ms_min" => {}
                    "election_timeout_ms_max" => {}
                    "heartbeat_ms" => parts.push(format!("heartbeat {} ms", key[*i])),
                    "latency_ms_mean" => parts.push(format!("latency {} ms", key[*i])),
                    "loss" => parts.push(format!("loss {}", key[*i])),
                    _ => {}
                }
            }
            if timeout_varies || varying.is_empty() {
                parts.push(format!("{}–{} ms", key[2], key[3]));
            }
            parts.join(", ")
        })
        .collect()
}

/// Redraw every figure of an election run and rewrite its summary, from the CSV alone.
pub fn plot_election(run_dir: &Path, experiment_name: &str) -> Result<Vec<PathBuf>> {
    let table = Table::read(&run_dir.join(TRIALS_CSV))?;
    summarize_election(&table, &run_dir.join(SUMMARY_CSV))?;
    let groups = table.group_by(ELECTION_POINT_COLUMNS);
    let labels = point_labels(&table, &groups);
    let series_of = |column: &str| -> Vec<Series> {
        groups
            .iter()
            .zip(&labels)
            .map(|((_, rows), label)| {
                let mut values: Vec<f64> = rows.iter().filter_map(|r| table.number(r, column)).collect();
                values.sort_by(f64::total_cmp);
                Series { label: label.clone(), values }
            })
            .filter(|s| !s.values.is_empty())
            .collect()
    };
    let mut written = write_cdf(
        run_dir,
        "election_cdf",
        &CdfFigure {
            title: format!("{experiment_name}: time to elect a new leader"),
            x_label: "time without a leader (ms, log scale)".into(),
            log_x: true,
            series: series_of("election_ms"),
        },
    )?;
    let unavailable = series_of("unavailable_ms");
    if !unavailable.is_empty() {
        written.extend(write_cdf(
            run_dir,
            "unavailable_cdf",
            &CdfFigure {
                title: format!("{experiment_name}: time until a client write commits again"),
                x_label: "client-visible unavailability (ms, log scale)".into(),
                log_x: true,
                series: unavailable,
            },
        )?);
    }
    Ok(written)
}
