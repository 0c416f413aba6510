//! [`ProgressBar`]: where the run stands, how fast it goes, when it ends.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::extension::{Context, Ending, Extension};

/// Speed is measured over this many recent iterations.
const SPEED_WINDOW: usize = 100;

/// Shows iteration, epoch, iterations per second and the time left.
///
/// On a terminal it draws a bar on stderr. When stderr is not a terminal (a
/// log file, CI) it prints a plain line instead, every 10 seconds by
/// default. The run's length comes from the stop trigger (an interval
/// trigger in iterations or epochs); with any other stop trigger no total
/// or ETA is shown.
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
    lines: Option<Box<dyn Write + Send>>,
    line_every_iterations: Option<u64>,
    line_every: Duration,
    total: Option<u64>,
    recent: VecDeque<(u64, Instant)>,
    last_line: (u64, Instant),
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressBar {
    /// A bar on stderr, or plain lines every 10 s when stderr is not a terminal.
    pub fn new() -> Self {
        Self {
            bar: indicatif::ProgressBar::hidden(),
            lines: None,
            line_every_iterations: None,
            line_every: Duration::from_secs(10),
            total: None,
            recent: VecDeque::new(),
            last_line: (0, Instant::now()),
        }
    }

    /// Always prints plain lines, to `out`.
    pub fn lines_to(mut self, out: impl Write + Send + 'static) -> Self {
        self.lines = Some(Box::new(out));
        self
    }

    /// In plain-line mode, prints a line every `interval` of wall time (default 10 s).
    pub fn line_every(mut self, interval: Duration) -> Self {
        self.line_every = interval;
        self.line_every_iterations = None;
        self
    }

    /// In plain-line mode, prints a line every `n` iterations instead of by time.
    pub fn line_every_iterations(mut self, n: u64) -> Self {
        self.line_every_iterations = Some(n.max(1));
        self
    }

    /// A writer to stdout that lifts the bar while it writes whole lines, so
    /// other output (a [`super::PrintReport`]) and the bar do not garble each other.
    pub fn line_writer(&self) -> BarLineWriter {
        BarLineWriter {
            bar: self.bar.clone(),
            pending: Vec::new(),
        }
    }

    /// Iterations per second over the recent window, if measurable.
    fn speed(&self) -> Option<f64> {
        let (first_it, first_t) = self.recent.front()?;
        let (last_it, last_t) = self.recent.back()?;
        let seconds = last_t.duration_since(*first_t).as_secs_f64();
        (last_it > first_it && seconds > 0.0).then(|| (last_it - first_it) as f64 / seconds)
    }

    fn eta(&self, iteration: u64) -> Option<Duration> {
        let remaining = self.total?.saturating_sub(iteration) as f64;
        Some(Duration::from_secs_f64(remaining / self.speed()?))
    }

    /// "epoch 3 · 12.5 it/s · ETA 0:01:40"
    fn details(&self, ctx: &Context<'_>) -> String {
        let speed = self
            .speed()
            .map(format_speed)
            .unwrap_or_else(|| "-- it/s".into());
        let mut text = format!("epoch {} · {speed}", ctx.epoch());
        if let Some(eta) = self.eta(ctx.iteration()) {
            text.push_str(&format!(" · ETA {}", format_duration(eta)));
        }
        text
    }

    /// "iteration 120/2000 (6.0%) · epoch 3 · 12.5 it/s · ETA 0:01:40"
    fn line(&self, ctx: &Context<'_>) -> String {
        let iteration = ctx.iteration();
        let position = match self.total {
            Some(total) if total > 0 => format!(
                "iteration {iteration}/{total} ({:.1}%)",
                100.0 * iteration as f64 / total as f64
            ),
            _ => format!("iteration {iteration}"),
        };
        format!("{position} · {}", self.details(ctx))
    }

    fn write_line(&mut self, text: &str) -> Result<()> {
        if let Some(out) = self.lines.as_mut() {
            writeln!(out, "{text}")
                .and_then(|()| out.flush())
                .context("printing progress")?;
        }
        Ok(())
    }

    fn start_bar(&mut self, ctx: &Context<'_>) {
        let template = match self.total {
            Some(_) => "{bar:30} {pos}/{len} iterations · {msg}",
            None => "{spinner} {pos} iterations · {msg}",
        };
        let style = indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        self.bar.set_style(style);
        match self.total {
            Some(total) => self.bar.set_length(total),
            None => self.bar.unset_length(),
        }
        self.bar.set_position(ctx.iteration());
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
}

impl Extension for ProgressBar {
    fn name(&self) -> String {
        "progress_bar".into()
    }

    fn initialize(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        self.total = ctx.planned_iterations().map(|t| t.ceil() as u64);
        let now = Instant::now();
        self.recent.clear();
        self.recent.push_back((ctx.iteration(), now));
        self.last_line = (ctx.iteration(), now);
        if self.lines.is_none() {
            if std::io::stderr().is_terminal() {
                self.start_bar(ctx);
            } else {
                self.lines = Some(Box::new(std::io::stderr()));
            }
        }
        Ok(())
    }

    fn call(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let iteration = ctx.iteration();
        let now = Instant::now();
        self.recent.push_back((iteration, now));
        while self.recent.len() > SPEED_WINDOW + 1 {
            self.recent.pop_front();
        }
        if self.lines.is_none() {
            self.bar.set_position(iteration);
            self.bar.set_message(self.details(ctx));
            return Ok(());
        }
        let (last_iteration, last_time) = self.last_line;
        let due = match self.line_every_iterations {
            Some(n) => iteration >= last_iteration + n,
            None => now.duration_since(last_time) >= self.line_every,
        };
        if due {
            self.last_line = (iteration, now);
            let line = self.line(ctx);
            self.write_line(&line)?;
        }
        Ok(())
    }

    fn finalize(&mut self, ctx: &mut Context<'_>, ending: Ending) -> Result<()> {
        if self.lines.is_none() {
            self.bar.set_position(ctx.iteration());
            match ending {
                Ending::Completed => self.bar.finish(),
                Ending::Interrupted | Ending::Failed => self.bar.abandon(),
            }
            return Ok(());
        }
        let how = match ending {
            Ending::Completed => "finished",
            Ending::Interrupted => "interrupted",
            Ending::Failed => "failed",
        };
        let line = format!("{how} at {}", self.line(ctx));
        self.write_line(&line)
    }
}

/// Writes whole lines to stdout with the progress bar lifted; see
/// [`ProgressBar::line_writer`].
pub struct BarLineWriter {
    bar: indicatif::ProgressBar,
    pending: Vec<u8>,
}

impl BarLineWriter {
    fn write_out(&mut self, upto: usize) -> std::io::Result<()> {
        let bytes: Vec<u8> = self.pending.drain(..upto).collect();
        self.bar.suspend(|| {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()
        })
    }
}

impl Write for BarLineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(last_newline) = self.pending.iter().rposition(|&b| b == b'\n') {
            self.write_out(last_newline + 1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.write_out(self.pending.len())?;
        }
        Ok(())
    }
}

impl Drop for BarLineWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn format_speed(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0} it/s")
    } else if per_second >= 10.0 {
        format!("{per_second:.1} it/s")
    } else {
        format!("{per_second:.2} it/s")
    }
}

/// `h:mm:ss`
fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_speeds_read_naturally() {
        assert_eq!(
            format_duration(Duration::from_secs(3 * 3600 + 62)),
            "3:01:02"
        );
        assert_eq!(format_duration(Duration::from_secs_f64(59.9)), "0:00:59");
        assert_eq!(format_speed(1234.4), "1234 it/s");
        assert_eq!(format_speed(12.34), "12.3 it/s");
        assert_eq!(format_speed(0.5), "0.50 it/s");
    }
}
