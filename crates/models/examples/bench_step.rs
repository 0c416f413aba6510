//! Times one objective's training step — what `cargo xtask bench` runs in a
//! child process, so the peak RSS it reports is this benchmark's alone.
//!
//! ```sh
//! cargo run --release -p kusari-models --example bench_step -- \
//!     --config seed|small|fast [--objective ebgan|gan|lsgan|hinge|wgan|ragan] [--dis-steps K]
//!     [--iters N] [--warmup N] [--window N] [--mnist DIR] [--device cpu|cuda]
//! ```
//!
//! `ragan` is the guide's example objective (`examples/ragan.rs`), timed
//! as it is written there. Every objective runs with the seed's Adam and one
//! D step per G step (`--dis-steps K` for K, WGAN's being 5), so the steps
//! compare like for like.
//! `KUSARI_STEP=reference` times the autograd engine instead of the fused one.
//! Prints a human line and a last line `BENCH_JSON {...}` with seconds per
//! iteration (the mean, the median, and the fastest window of `--window`
//! steps, default 10), the step's arithmetic (GFLOP), peak RSS (VmHWM) and, on the fast CPU
//! path, seconds per phase.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kusari_models::kernels::tally;
use kusari_models::objective::{self, Objective};
use kusari_models::{Config, ModelConfig, Nets, ObjectiveConfig, OptimizerConfig};
use kusari_trainer::datasets::{mnist, PixelRange, Split};
use kusari_trainer::reporter::{scope, Observation};
use kusari_trainer::{parse_device, ArrayDataset, SerialIterator, Updater};

#[path = "ragan.rs"]
#[allow(dead_code)]
mod ragan;

struct Args {
    config: String,
    objective: String,
    dis_steps: usize,
    iters: usize,
    warmup: usize,
    window: usize,
    mnist: Option<PathBuf>,
    device: String,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        config: "seed".into(),
        objective: "ebgan".into(),
        dis_steps: 1,
        iters: 10,
        warmup: 3,
        window: 10,
        mnist: None,
        device: "cpu".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => a.config = value()?,
            "--objective" => a.objective = value()?,
            "--dis-steps" => {
                a.dis_steps = value()?
                    .parse()
                    .context("--dis-steps takes a whole number")?
            }
            "--iters" => a.iters = value()?.parse().context("--iters takes a whole number")?,
            "--warmup" => a.warmup = value()?.parse().context("--warmup takes a whole number")?,
            "--window" => a.window = value()?.parse().context("--window takes a whole number")?,
            "--mnist" => a.mnist = Some(value()?.into()),
            "--device" => a.device = value()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if a.window == 0 {
        bail!("--window must be at least 1");
    }
    Ok(a)
}

/// The seed's nets (G 3200, D 1024), the small ones (G 400, D 128) or the
/// `fast` preset's conv nets (G 32, D 8 channels, a 64-value code, z-dim 6,
/// batch 50, margin 1), with Adam 1e-3/β1 0.5 and one D step per G step
/// whatever the objective.
fn config(name: &str, objective: &str) -> Result<(Config, Box<dyn Objective>)> {
    let model = match name {
        "seed" => ModelConfig::default(),
        "small" => ModelConfig::mlp_with_units(400, 128),
        "fast" => ModelConfig::conv(kusari_models::ImageShape::MNIST),
        other => bail!("unknown config {other}; use seed, small or fast"),
    };
    let (kind, rule): (ObjectiveConfig, Box<dyn Objective>) = if objective == "ragan" {
        (ObjectiveConfig::Gan, Box::new(ragan::RaGan))
    } else {
        let kind = ObjectiveConfig::from_name(objective)?;
        let rule = objective::from_config(&kind);
        (kind, rule)
    };
    let adam = OptimizerConfig::seed_adam();
    let mut config = Config {
        model,
        objective: kind,
        gen_optimizer: adam,
        dis_optimizer: adam,
        ..Config::default()
    };
    if name == "fast" {
        config.make_fast(kusari_models::Arch::Conv);
    }
    // The objective's own settings follow the preset (EBGAN's margin).
    let rule = if objective == "ragan" {
        rule
    } else {
        objective::from_config(&config.objective)
    };
    Ok((config, rule))
}

/// Multiply-adds of the matrix products in one step (as PyTorch does them:
/// no gradient that is then thrown away); counted for the MLP nets only.
fn step_macs(c: &Config) -> Option<f64> {
    if c.model.arch != kusari_models::Arch::Mlp {
        return None;
    }
    let (g, d, z, img) = (
        &c.model.gen,
        &c.model.dis,
        c.model.z_dim,
        c.model.image.len(),
    );
    let n = c.batch_size as f64;
    let g_first = (z * g.units) as f64;
    let g_fwd = g_first + ((g.layers - 1) * g.units * g.units + g.units * img) as f64;
    let d_first = (img * d.units) as f64;
    let head = if c.objective.is_ebgan() { img } else { 1 };
    let d_fwd = d_first + ((d.layers - 1) * d.units * d.units + d.units * head) as f64;
    // G: forward, weight and input gradients (none into z). D: forward and
    // weight gradients on 2N rows; input gradients of L_D on 2N rows above
    // the first layer and of L_G on the N fake rows all the way down.
    let joint = n * (3.0 * g_fwd - g_first)
        + 2.0 * n * d_fwd * 2.0
        + 2.0 * n * (d_fwd - d_first)
        + n * d_fwd;
    // A step that trains D alone: G's forward, then D's forward, weight
    // gradients and L_D's input gradients above the first layer.
    let dis_only = n * g_fwd + 2.0 * n * d_fwd * 2.0 + 2.0 * n * (d_fwd - d_first);
    Some(joint + (c.dis_steps - 1) as f64 * dis_only)
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> Result<()> {
    // As the `kusari` binary does (see its main): candle's element-wise
    // worker would otherwise spin beside the conv step's threads, and
    // candle would read /proc/cpuinfo for every matrix product.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let args = parse()?;
    let (mut config, objective) = config(&args.config, &args.objective)?;
    config.dis_steps = args.dis_steps;
    config.validate()?;
    let device = parse_device(&args.device)?;
    let (dataset, data_name) = match &args.mnist {
        Some(dir) => (
            mnist::load(dir, Split::Train)?.to_dataset(PixelRange::MinusOneOne)?,
            "MNIST train",
        ),
        None => {
            let n = 1000;
            let values: Vec<f32> = (0..n * 784)
                .map(|i| ((i * 7919) % 256) as f32 / 127.5 - 1.0)
                .collect();
            (ArrayDataset::new(values, &[1, 28, 28], None)?, "synthetic")
        }
    };
    let nets = Nets::build_for(&config, objective.head(), &device, 0)?;
    let iterator = SerialIterator::new(Arc::new(dataset), config.batch_size, true, 0)?;
    let step = nets.step_with(objective, &config, 0)?;
    let mut updater = nets.updater_with(step, &config, iterator, &device)?;
    let observation = Observation::new();
    // Reading the loss back each step, as the trainer's log does (and the
    // PyTorch reference's `.item()`), makes a GPU step finish before the next.
    let step = |u: &mut kusari_models::setup::Updater<ArrayDataset>| -> Result<()> {
        scope(&observation, || u.update())?;
        observation.scalar("dis/loss")?;
        Ok(())
    };
    for _ in 0..args.warmup {
        step(&mut updater)?;
    }
    // The conv step's products, counted by its kernels over one more
    // (untimed) iteration; the MLP's are counted from the config below.
    let products = if config.model.arch == kusari_models::Arch::Conv {
        tally::start();
        let stepped = step(&mut updater);
        let counted = tally::finish();
        stepped?;
        counted
    } else {
        Vec::new()
    };
    let fast = updater
        .core_mut()
        .fused_step_mut()
        .map(|f| f.reset_profile())
        .is_some();
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    // The fastest window of `--window` steps: on a busy machine, the
    // closest thing to the idle speed (the mean counts the time others took).
    let mut best = f64::INFINITY;
    let mut window = Instant::now();
    // Each iteration's own time, for the median (PyTorch's scripts report theirs).
    let mut each = Vec::with_capacity(args.iters);
    for i in 0..args.iters {
        let t = Instant::now();
        step(&mut updater)?;
        each.push(t.elapsed().as_secs_f64());
        if (i + 1) % args.window == 0 {
            best = best.min(window.elapsed().as_secs_f64() / args.window as f64);
            window = Instant::now();
        }
    }
    device.synchronize()?;
    let per_iter = start.elapsed().as_secs_f64() / args.iters as f64;
    each.sort_by(f64::total_cmp);
    let median = each[each.len() / 2];
    let cpu_per_iter = cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| (end - start) / args.iters as f64);
    let gflop = step_macs(&config).map(|m| 2.0 * m / 1e9).or_else(|| {
        (!products.is_empty()).then(|| {
            products
                .iter()
                .map(|(p, count)| p.flop() * *count as f64)
                .sum::<f64>()
                / 1e9
        })
    });
    let phases: Vec<(String, f64)> = updater
        .core()
        .fused_profile()
        .map(|p| {
            p.per_step()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        })
        .unwrap_or_default();
    let rss = peak_rss_bytes();
    let path = if fast { "fused" } else { "autograd" };
    println!(
        "kusari {} {} ({path} step, {}, {data_name}): {per_iter:.4} s/iter, {:.1} images/s, {} GFLOP/s, peak RSS {} MB, CPU {} s/iter, best {}-step window {} s/iter; dis/loss {:.4}",
        args.config,
        args.objective,
        args.device,
        (config.batch_size * config.dis_steps) as f64 / per_iter,
        gflop.map_or("?".into(), |g| format!("{:.1}", g / per_iter)),
        rss.map_or("?".into(), |b| format!("{:.0}", b as f64 / 1e6)),
        cpu_per_iter.map_or("?".into(), |c| format!("{c:.3}")),
        args.window,
        if best.is_finite() {
            format!("{best:.4}")
        } else {
            "?".into()
        },
        observation.scalar("dis/loss")?.unwrap_or(f64::NAN),
    );
    let json = serde_json::json!({
        "config": args.config,
        "objective": args.objective,
        "dis_steps": args.dis_steps,
        "path": path,
        "device": args.device,
        "data": data_name,
        "iters": args.iters,
        "batch": config.batch_size,
        "sec_per_iter": per_iter,
        "median_sec_per_iter": median,
        "cpu_sec_per_iter": cpu_per_iter,
        "best_window_sec_per_iter": best.is_finite().then_some(best),
        "gflop_per_iter": gflop,
        "peak_rss_bytes": rss,
        "phases": phases,
        "products": products
            .iter()
            .map(|(p, count)| serde_json::json!({
                "m": p.m, "k": p.k, "n": p.n, "a_t": p.a_t, "b_t": p.b_t, "count": count,
            }))
            .collect::<Vec<_>>(),
    });
    println!("BENCH_JSON {json}");
    Ok(())
}
