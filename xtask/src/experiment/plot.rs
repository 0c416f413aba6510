//! The experiment's plot: mean FID over epochs per configuration, with the
//! spread over seeds, as a PNG (pure Rust: plotters and an embedded font).

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;

use super::stats::{ConfigSummary, CurvePoint};

/// Line colors, one per configuration in turn (matplotlib's "tab10").
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The font family of the plot; registered once from the embedded DejaVu Sans.
const FONT: &str = "sans-serif";

/// Image size in pixels.
pub const SIZE: (u32, u32) = (800, 520);

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

/// Tick labels: whole numbers where they fit, else three significant digits.
fn tick(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Tick values for a log axis over `low..high`: 1-2-5 steps per decade,
/// or finer steps when the range spans too few of those.
pub fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let within = |mantissas: &[f64]| -> Vec<f64> {
        let first = low.log10().floor() as i32;
        let last = high.log10().ceil() as i32;
        (first..=last)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| (low..=high).contains(v))
            .collect()
    };
    let coarse = within(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 {
        return coarse;
    }
    let fine = within(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if fine.len() >= 3 {
        return fine;
    }
    (0..=4)
        .map(|i| low + (high - low) * f64::from(i) / 4.0)
        .collect()
}

/// What the plot's x axis shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    Epoch,
    /// Training time: the mean over the seeds at each evaluation.
    Minutes,
}

/// Draws mean FID per epoch (or over training time) for every configuration (log scale), the band
/// and whiskers from the lowest to the highest seed, and a legend; returns
/// the PNG file's bytes. `None` when no configuration has a point.
pub fn fid_plot(configs: &[ConfigSummary], title: &str, axis: Axis) -> Result<Option<Vec<u8>>> {
    let x = |p: &CurvePoint| match axis {
        Axis::Epoch => p.epoch,
        Axis::Minutes => p.minutes,
    };
    let points = || {
        configs
            .iter()
            .flat_map(|c| c.curve.iter())
            .filter(|p| x(p).is_finite())
    };
    if points().next().is_none() {
        return Ok(None);
    }
    register_font()?;
    let (mut x_low, mut x_high) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y_low, mut y_high) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in points() {
        x_low = x_low.min(x(p));
        x_high = x_high.max(x(p));
        y_low = y_low.min(p.min);
        y_high = y_high.max(p.max);
    }
    let x_pad = ((x_high - x_low) * 0.05).max(0.5);
    // Configurations judged at the same epochs are drawn side by side.
    let dodge_step = (x_high - x_low).max(1.0) * 0.012;
    let middle = (configs.len() as f64 - 1.0) / 2.0;
    let dodge = |i: usize| (i as f64 - middle) * dodge_step;
    let (x_low, x_high) = (x_low - x_pad, x_high + x_pad);
    // FID is positive; a log axis shows early epochs (hundreds) and late ones (tens) alike.
    let (y_low, y_high) = ((y_low.max(1e-3)) / 1.25, y_high.max(1e-3) * 1.25);

    let (width, height) = SIZE;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let drawing = |e| anyhow!("drawing the plot: {e}");
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                x_low..x_high,
                (y_low..y_high)
                    .log_scale()
                    .with_key_points(log_ticks(y_low, y_high)),
            )
            .map_err(drawing)?;
        let tick_label = |v: &f64| tick(*v);
        // Epochs are whole numbers; fractional ticks stay unlabeled.
        let epoch_label = |v: &f64| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(match axis {
                Axis::Epoch => "epoch",
                Axis::Minutes => "training time (minutes)",
            })
            .y_desc("FID (log scale; lower is better)")
            .x_labels(12)
            .y_labels(10)
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&tick_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(drawing)?;
        for (i, config) in configs.iter().enumerate() {
            if config.curve.is_empty() {
                continue;
            }
            let color = COLORS[i % COLORS.len()];
            let dx = dodge(i);
            let band: Vec<(f64, f64)> = config
                .curve
                .iter()
                .map(|p| (x(p) + dx, p.max))
                .chain(config.curve.iter().rev().map(|p| (x(p) + dx, p.min)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    band,
                    color.mix(0.15).filled(),
                )))
                .map_err(drawing)?;
            chart
                .draw_series(config.curve.iter().map(|p| {
                    PathElement::new(
                        vec![(x(p) + dx, p.min), (x(p) + dx, p.max)],
                        color.mix(0.7).stroke_width(2),
                    )
                }))
                .map_err(drawing)?;
            let label = format!("{} ({} seeds)", config.label, config.runs - config.diverged);
            chart
                .draw_series(LineSeries::new(
                    config.curve.iter().map(|p| (x(p) + dx, p.mean)),
                    color.stroke_width(2),
                ))
                .map_err(drawing)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    config
                        .curve
                        .iter()
                        .map(|p| Circle::new((x(p) + dx, p.mean), 4, color.filled())),
                )
                .map_err(drawing)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("encoding the plot")?;
        writer.write_image_data(&rgb).context("encoding the plot")?;
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::stats::CurvePoint;

    fn config(label: &str, curve: Vec<CurvePoint>) -> ConfigSummary {
        ConfigSummary {
            label: label.into(),
            flags: String::new(),
            meaning: String::new(),
            fid: None,
            inception_score: None,
            min_class_share: None,
            fid_per_seed: vec![],
            runs: 3,
            diverged: 0,
            curve,
        }
    }

    #[test]
    fn draws_a_png_or_nothing() -> Result<()> {
        let point = |epoch: f64, mean| CurvePoint {
            minutes: epoch * 2.0,
            epoch,
            mean,
            min: mean * 0.8,
            max: mean * 1.3,
            n: 3,
        };
        let configs = vec![
            config("joint", vec![point(1.0, 400.0), point(2.0, 90.0)]),
            config("separate", vec![point(1.0, 300.0), point(2.0, 60.0)]),
            config("real-stats", vec![]),
        ];
        let png = fid_plot(&configs, "bn", Axis::Epoch)
            .unwrap()
            .expect("a plot");
        assert!(fid_plot(&configs, "bn", Axis::Minutes)?.is_some());
        assert_eq!(&png[1..4], b"PNG");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let info = decoder.read_info()?.info().clone();
        assert_eq!((info.width, info.height), SIZE);
        assert!(fid_plot(&configs[2..], "bn", Axis::Epoch)?.is_none());
        Ok(())
    }

    #[test]
    fn log_ticks_cover_the_range() {
        assert_eq!(
            log_ticks(36.0, 1300.0),
            vec![50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(log_ticks(25.0, 55.0), vec![30.0, 40.0, 50.0]);
        assert_eq!(log_ticks(30.0, 38.0), vec![30.0, 32.0, 34.0, 36.0, 38.0]);
    }
}
