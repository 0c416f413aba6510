//! [`PlotReport`]: chosen log keys plotted against epoch or iteration, as a PNG.

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context as _, Result};
use plotters::prelude::*;

use super::log_report::{entry_number, LogEntries, LogEntry};
use super::png_file::{write_png, Pixels};
use super::print_report::format_g;
use super::AFTER_LOG;
use crate::extension::{Context, Ending, Extension, Priority};
use crate::trigger::{IntervalTrigger, Trigger};

/// What the horizontal axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Epochs, fractional where the log is written more often than once an
    /// epoch (`iteration / iterations per epoch`).
    Epoch,
    Iteration,
}

/// Line colors, one per key in turn (matplotlib's "tab10").
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Series with at most this many points also mark each point.
const MAX_MARKED_POINTS: usize = 60;

/// The font family every plot uses; registered once from the embedded DejaVu Sans.
const FONT: &str = "sans-serif";

/// Plots chosen keys of the log against epoch (or iteration) into
/// `OUT/loss.png`, redrawn at its trigger (default: every epoch) when the
/// log has new entries, and once more when training ends. Values that are
/// not finite are left out. The file is replaced atomically.
pub struct PlotReport {
    entries: LogEntries,
    keys: Vec<String>,
    x_axis: XAxis,
    file_name: String,
    size: (u32, u32),
    drawn: usize,
}

/// One line of the plot: a key and its points.
type Series = (String, Vec<(f64, f64)>);

impl PlotReport {
    /// Plots `keys` of `entries` against epoch into `OUT/loss.png`, 640×480.
    pub fn new<I, S>(entries: LogEntries, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            entries,
            keys: keys.into_iter().map(Into::into).collect(),
            x_axis: XAxis::Epoch,
            file_name: "loss.png".into(),
            size: (640, 480),
            drawn: 0,
        }
    }

    /// The image's file name inside the output folder.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = name.into();
        self
    }

    pub fn x_axis(mut self, x_axis: XAxis) -> Self {
        self.x_axis = x_axis;
        self
    }

    /// Image width and height in pixels (each at least 200).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width.max(200), height.max(200));
        self
    }

    fn x_of(&self, entry: &LogEntry, iterations_per_epoch: Option<f64>) -> Option<f64> {
        match (self.x_axis, iterations_per_epoch) {
            (XAxis::Iteration, _) => entry_number(entry, "iteration"),
            (XAxis::Epoch, Some(per_epoch)) if per_epoch > 0.0 => {
                Some(entry_number(entry, "iteration")? / per_epoch)
            }
            (XAxis::Epoch, _) => entry_number(entry, "epoch"),
        }
    }

    fn series(&self, entries: &[LogEntry], iterations_per_epoch: Option<f64>) -> Vec<Series> {
        self.keys
            .iter()
            .map(|key| {
                let points = entries
                    .iter()
                    .filter_map(|e| {
                        Some((self.x_of(e, iterations_per_epoch)?, entry_number(e, key)?))
                    })
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                (key.clone(), points)
            })
            .collect()
    }

    fn redraw(&mut self, ctx: &Context<'_>) -> Result<()> {
        let entries = self.entries.to_vec();
        if entries.len() == self.drawn {
            return Ok(());
        }
        let series = self.series(&entries, ctx.updater().iterations_per_epoch());
        if series.iter().all(|(_, points)| points.is_empty()) {
            return Ok(());
        }
        let x_label = match self.x_axis {
            XAxis::Epoch => "epoch",
            XAxis::Iteration => "iteration",
        };
        let (width, height) = self.size;
        let rgb = draw_plot(&series, x_label, width, height)?;
        let path = ctx.out().join(&self.file_name);
        write_png(&path, width, height, Pixels::Rgb, &rgb)
            .with_context(|| format!("writing plot {}", path.display()))?;
        self.drawn = entries.len();
        Ok(())
    }
}

impl Extension for PlotReport {
    fn name(&self) -> String {
        "plot_report".into()
    }

    fn default_trigger(&mut self) -> Box<dyn Trigger> {
        Box::new(IntervalTrigger::epochs(1.0))
    }

    fn priority(&self) -> Priority {
        AFTER_LOG
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        self.redraw(ctx)
    }

    fn finalize(&mut self, ctx: &mut Context<'_>, ending: Ending) -> Result<()> {
        match ending {
            Ending::Completed | Ending::Interrupted => self.redraw(ctx),
            Ending::Failed => Ok(()),
        }
    }
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if !ok {
        bail!("internal error: the embedded plot font cannot be read");
    }
    Ok(())
}

/// A range around `low..high` with a margin, never empty.
fn padded(low: f64, high: f64) -> (f64, f64) {
    let span = high - low;
    if span > 0.0 {
        (low - 0.05 * span, high + 0.05 * span)
    } else {
        let pad = (low.abs() * 0.05).max(0.5);
        (low - pad, high + pad)
    }
}

/// The corner whose quarter-sized box holds the fewest points, so the legend
/// hides as little of the lines as it can (upper right on a tie).
fn legend_corner(
    series: &[Series],
    (x_low, x_high): (f64, f64),
    (y_low, y_high): (f64, f64),
) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let crowding = |right: bool, upper: bool| {
        series
            .iter()
            .flat_map(|(_, points)| points)
            .filter(|(x, y)| {
                let (u, v) = (
                    (x - x_low) / (x_high - x_low),
                    (y - y_low) / (y_high - y_low),
                );
                (if right { u > 0.6 } else { u < 0.4 }) && (if upper { v > 0.7 } else { v < 0.3 })
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, upper)| crowding(right, upper))
        .map(|(corner, _, _)| corner)
        .unwrap_or(SeriesLabelPosition::UpperRight)
}

/// Draws the series as a line chart with a legend; returns RGB bytes.
fn draw_plot(series: &[Series], x_label: &str, width: u32, height: u32) -> Result<Vec<u8>> {
    register_font()?;
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        points()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    };
    let (x_low, x_high) = bounds(|p| p.0);
    let (y_low, y_high) = bounds(|p| p.1);
    let (x_low, x_high) = padded(x_low, x_high);
    let (y_low, y_high) = padded(y_low, y_high);

    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let drawing = |e| anyhow!("drawing the plot: {e}");
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_low..x_high, y_low..y_high)
            .map_err(drawing)?;
        let tick_label = |v: &f64| format_g(*v);
        chart
            .configure_mesh()
            .x_desc(x_label)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(drawing)?;
        for (i, (key, points)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(drawing)?
                .label(key.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            if points.len() <= MAX_MARKED_POINTS {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(drawing)?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend_corner(series, (x_low, x_high), (y_low, y_high)))
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    Ok(rgb)
}
