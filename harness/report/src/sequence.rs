//! Message-sequence figures of a run: the explorer's counterexamples (issue 42) drawn
//! the way distributed-systems papers draw them. Each replica is a column, time runs
//! down one row per step, a delivered message is an arrow from the row it was sent in
//! to the row it arrived in, a replica's own events (a timer firing, a crash, a restart,
//! a client's command) are marks on its column, and the step that broke a rule is
//! highlighted with the checker's verdict under the figure.

use crate::error::{ReportError, Result};
use crate::plot::register_font;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// What happens in one step of a run (steps are numbered from 1).
#[derive(Clone, Debug, PartialEq)]
pub enum SequenceEvent {
    /// A message sent in step `sent_at` (0: before the first step) and delivered in `delivered_at`.
    Message { from: u32, to: u32, sent_at: usize, delivered_at: usize, label: String },
    /// A replica's own event in step `at`.
    Local { node: u32, at: usize, label: String, mark: Mark },
}

/// How a replica's own event is marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Timer,
    Crash,
    Restart,
    Command,
}

/// A run to draw: its replicas, its steps' events, and the verdict at its last step.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceChart {
    pub title: String,
    /// One column per replica instance, by name (`n0`, ..., and `n3′` for a twin of n3).
    pub columns: Vec<String>,
    pub steps: usize,
    pub events: Vec<SequenceEvent>,
    pub violations: Vec<String>,
}

const COLUMN_PX: i32 = 260;
const LEFT_PX: i32 = 150;
const TOP_PX: i32 = 80;
const ROW_PX: i32 = 30;
const VERDICT_LINE_PX: i32 = 20;
const GREY: RGBColor = RGBColor(110, 110, 110);
// Okabe & Ito, as the other figures.
const RED: RGBColor = RGBColor(213, 94, 0);
const BLUE: RGBColor = RGBColor(0, 114, 178);
const GREEN: RGBColor = RGBColor(0, 158, 115);

impl SequenceChart {
    fn size(&self) -> (u32, u32) {
        let width = LEFT_PX + COLUMN_PX * self.columns.len() as i32;
        let height = TOP_PX + ROW_PX * (self.steps as i32 + 1) + VERDICT_LINE_PX * (self.violations.len() as i32 + 1);
        (width as u32, height as u32)
    }

    fn x(node: u32) -> i32 {
        LEFT_PX + COLUMN_PX * node as i32
    }

    fn y(step: usize) -> i32 {
        TOP_PX + ROW_PX * step as i32
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        let fail = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(fail)?;
        let text = |px: i32, color: &'static RGBColor| ("sans-serif", px as f64).into_font().color(color);
        let (grey, red, blue, green) = (&GREY, &RED, &BLUE, &GREEN);
        root.draw(&Text::new(self.title.clone(), (20, 20), text(18, &BLACK))).map_err(fail)?;
        // The step that broke a rule, as a band across every column.
        if !self.violations.is_empty() && self.steps > 0 {
            let y = Self::y(self.steps);
            let band = RGBColor(253, 224, 204);
            root.draw(&Rectangle::new([(0, y - ROW_PX / 2), (self.size().0 as i32, y + ROW_PX / 2)], band.filled()))
                .map_err(fail)?;
        }
        let bottom = Self::y(self.steps + 1) - ROW_PX / 2;
        for (node, name) in self.columns.iter().enumerate() {
            let x = Self::x(node as u32);
            root.draw(&Text::new(name.as_str(), (x - 10, TOP_PX - 40), text(16, &BLACK))).map_err(fail)?;
            root.draw(&PathElement::new(vec![(x, TOP_PX - 15), (x, bottom)], grey.stroke_width(1))).map_err(fail)?;
        }
        for step in 1..=self.steps {
            root.draw(&Text::new(format!("{step}"), (20, Self::y(step) - 7), text(12, grey))).map_err(fail)?;
        }
        for event in &self.events {
            match event {
                SequenceEvent::Message { from, to, sent_at, delivered_at, label } => {
                    let (x0, y0) = (Self::x(*from), Self::y(*sent_at));
                    let (x1, y1) = (Self::x(*to), Self::y(*delivered_at));
                    root.draw(&PathElement::new(vec![(x0, y0), (x1, y1)], BLACK.stroke_width(1))).map_err(fail)?;
                    // The arrowhead: a small triangle at the receiving end.
                    let (dx, dy) = ((x1 - x0) as f64, (y1 - y0) as f64);
                    let length = (dx * dx + dy * dy).sqrt().max(1.0);
                    let (ux, uy) = (dx / length, dy / length);
                    let back = |along: f64, across: f64| {
                        ((x1 as f64 - ux * along - uy * across) as i32, (y1 as f64 - uy * along + ux * across) as i32)
                    };
                    root.draw(&Polygon::new(vec![(x1, y1), back(9.0, 4.0), back(9.0, -4.0)], BLACK.filled()))
                        .map_err(fail)?;
                    let (lx, ly) = (x0.min(x1) + (x1 - x0).abs() / 2 - 60, y1 - 14);
                    root.draw(&Text::new(label.clone(), (lx, ly), text(11, blue))).map_err(fail)?;
                }
                SequenceEvent::Local { node, at, label, mark } => {
                    let (x, y) = (Self::x(*node), Self::y(*at));
                    let color: &'static RGBColor = match mark {
                        Mark::Timer => &BLACK,
                        Mark::Crash => red,
                        Mark::Restart => green,
                        Mark::Command => blue,
                    };
                    match mark {
                        Mark::Crash => {
                            for (a, b) in [((x - 6, y - 6), (x + 6, y + 6)), ((x - 6, y + 6), (x + 6, y - 6))] {
                                root.draw(&PathElement::new(vec![a, b], color.stroke_width(3))).map_err(fail)?;
                            }
                        }
                        _ => root.draw(&Circle::new((x, y), 5, color.filled())).map_err(fail)?,
                    }
                    root.draw(&Text::new(label.clone(), (x + 10, y - 7), text(12, color))).map_err(fail)?;
                }
            }
        }
        for (i, violation) in self.violations.iter().enumerate() {
            let y = Self::y(self.steps + 1) + VERDICT_LINE_PX * i as i32;
            root.draw(&Text::new(violation.clone(), (20, y), text(13, red))).map_err(fail)?;
        }
        root.present().map_err(fail)
    }
}

/// Write `dir/<stem>.svg` and `dir/<stem>.png`.
pub fn write_sequence(dir: &Path, stem: &str, chart: &SequenceChart) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io { path: dir.to_path_buf(), source: e })?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    chart
        .draw(SVGBackend::new(&svg, chart.size()).into_drawing_area())
        .map_err(|message| ReportError::Plot { path: svg.clone(), message })?;
    chart
        .draw(BitMapBackend::new(&png, chart.size()).into_drawing_area())
        .map_err(|message| ReportError::Plot { path: png.clone(), message })?;
    Ok(vec![svg, png])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas, one message, one timer, one crash: both files are written, and the
    /// SVG holds the labels and the verdict.
    #[test]
    fn a_run_is_drawn_with_its_messages_marks_and_verdict() {
        let chart = SequenceChart {
            title: "example".into(),
            columns: vec!["n0".into(), "n1".into()],
            steps: 3,
            events: vec![
                SequenceEvent::Local { node: 0, at: 1, label: "Election fires".into(), mark: Mark::Timer },
                SequenceEvent::Message { from: 0, to: 1, sent_at: 1, delivered_at: 2, label: "RequestVote t1".into() },
                SequenceEvent::Local { node: 1, at: 3, label: "crashes".into(), mark: Mark::Crash },
            ],
            violations: vec!["election-safety violated".into()],
        };
        let dir = tempfile::tempdir().unwrap();
        let written = write_sequence(dir.path(), "run", &chart).unwrap();
        assert_eq!(written.len(), 2);
        let svg = std::fs::read_to_string(&written[0]).unwrap();
        for label in ["n0", "n1", "RequestVote t1", "Election fires", "crashes", "election-safety violated"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(std::fs::metadata(&written[1]).unwrap().len() > 1000, "a PNG was drawn");
    }
}
