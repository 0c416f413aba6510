//! `cargo xtask bench`: times the full EBGAN-PT training step (seed and
//! small configs) in child processes, optionally alternating with the
//! PyTorch reference in the same run, and prints s/iter, images/s, GFLOP/s,
//! peak RSS, the ratio to PyTorch and where kusari's step spends its time.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, workspace_root};

const USAGE: &str = "usage: cargo xtask bench [--config seed|small|all] [--iters N] [--rounds R]
                         [--compare-torch [PATH]] [--reference] [--mnist DIR] [--device D]

  --config        which nets: seed (G 3200, D 1024), small (G 400, D 128) or all (default)
  --iters N       timed iterations per run (default: 10 seed, 100 small), after warm-up
  --rounds R      runs of each implementation, alternating (default 3); medians are reported
  --compare-torch run ../shared/bench/torch_ebgan.py (or PATH) too, alternating with kusari
  --reference     also time kusari's candle-ops reference path (KUSARI_STEP=reference)
  --mnist DIR     MNIST folder (default: $MNIST_DIR, ../shared/data/mnist or data/mnist)
  --device D      the device of both kusari and PyTorch (default cpu; cuda builds kusari
                  with `cargo xtask build-cuda`, see docs/cuda.md)";

struct Args {
    configs: Vec<&'static str>,
    iters: Option<usize>,
    rounds: usize,
    torch: Option<PathBuf>,
    reference: bool,
    mnist: Option<PathBuf>,
    device: String,
}

fn parse(args: &[String]) -> Result<Args> {
    let root = workspace_root();
    let mut a = Args {
        configs: vec!["seed", "small"],
        iters: None,
        rounds: 3,
        torch: None,
        reference: false,
        mnist: None,
        device: "cpu".into(),
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let value = |i: usize| -> Result<&String> {
            args.get(i + 1)
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag {
            "--config" => {
                a.configs = match value(i)?.as_str() {
                    "seed" => vec!["seed"],
                    "small" => vec!["small"],
                    "all" => vec!["seed", "small"],
                    other => bail!("--config takes seed, small or all, not `{other}`"),
                };
                i += 1;
            }
            "--iters" => {
                let n: usize = value(i)?.parse().context("--iters takes a whole number")?;
                if n == 0 {
                    bail!("--iters must be at least 1");
                }
                a.iters = Some(n);
                i += 1;
            }
            "--rounds" => {
                a.rounds = value(i)?.parse().context("--rounds takes a whole number")?;
                if a.rounds == 0 {
                    bail!("--rounds must be at least 1");
                }
                i += 1;
            }
            "--compare-torch" => match args.get(i + 1).filter(|v| !v.starts_with("--")) {
                Some(path) => {
                    a.torch = Some(PathBuf::from(path));
                    i += 1;
                }
                None => a.torch = Some(root.join("../shared/bench/torch_ebgan.py")),
            },
            "--reference" => a.reference = true,
            "--mnist" => {
                a.mnist = Some(PathBuf::from(value(i)?));
                i += 1;
            }
            "--device" => {
                a.device = value(i)?.clone();
                i += 1;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown bench option `{other}`\n\n{USAGE}"),
        }
        i += 1;
    }
    if let Some(t) = &a.torch {
        if !t.is_file() {
            bail!(
                "the PyTorch benchmark {} does not exist; pass its path after --compare-torch",
                t.display()
            );
        }
    }
    Ok(a)
}

/// The MNIST folder: the option, `$MNIST_DIR`, or the usual places.
fn mnist_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    let root = workspace_root();
    let candidates = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("MNIST_DIR").map(PathBuf::from))
        .chain([root.join("../shared/data/mnist"), root.join("data/mnist")]);
    candidates
        .into_iter()
        .find(|d| d.join("train-images-idx3-ubyte.gz").is_file())
}

/// One timed run of one implementation.
struct Run {
    sec_per_iter: f64,
    peak_rss: Option<f64>,
    phases: Vec<(String, f64)>,
    label: String,
}

fn build_child(device: &str) -> Result<PathBuf> {
    if device.starts_with("cuda") {
        // Candle's CUDA backend builds only with the toolkit build-cuda sets up.
        crate::build_cuda::build_cuda(&[
            "-p".into(),
            "kusari-models".into(),
            "--".into(),
            "--example".into(),
            "bench_step".into(),
        ])?;
        return Ok(workspace_root().join("target/cuda/release/examples/bench_step"));
    }
    let mut cmd = cargo();
    cmd.current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "kusari-models",
        "--example",
        "bench_step",
    ]);
    if !cmd.status().context("running cargo build")?.success() {
        bail!("building the benchmark failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("release/examples/bench_step"))
}

fn run_kusari(
    bin: &Path,
    config: &str,
    iters: usize,
    mnist: Option<&Path>,
    device: &str,
    reference: bool,
) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--config",
        config,
        "--iters",
        &iters.to_string(),
        "--device",
        device,
    ]);
    if let Some(m) = mnist {
        cmd.arg("--mnist").arg(m);
    }
    if reference {
        cmd.env("KUSARI_STEP", "reference");
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the kusari benchmark failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .context("the kusari benchmark printed no BENCH_JSON line")?;
    let v: Value = serde_json::from_str(json).context("the BENCH_JSON line is not JSON")?;
    let phases = v["phases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        sec_per_iter: v["sec_per_iter"].as_f64().context("no sec_per_iter")?,
        peak_rss: v["peak_rss_bytes"].as_f64(),
        phases,
        label: format!("kusari ({} path)", v["path"].as_str().unwrap_or("?")),
    })
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the PyTorch script on `device` (`cpu`, `cuda` or `cuda:N`, the same
/// spellings as kusari's; the script's third argument) and its peak RSS (the
/// script cannot report it itself, so a wrapper reads `getrusage` after it
/// finishes).
fn run_torch(script: &Path, config: &str, iters: usize, mnist: &Path, device: &str) -> Result<Run> {
    let (ug, ud) = units(config);
    let wrapper = "import resource, runpy, sys\n\
                   sys.argv = sys.argv[1:]\n\
                   runpy.run_path(sys.argv[0], run_name='__main__')\n\
                   print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n";
    let out = Command::new(python())
        .arg("-c")
        .arg(wrapper)
        .arg(script)
        .arg(mnist)
        .args([
            iters.to_string(),
            device.into(),
            ug.to_string(),
            ud.to_string(),
        ])
        .output()
        .with_context(|| {
            format!(
                "running {} (set PYTHON to choose the interpreter)",
                python()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the PyTorch benchmark failed (is torch installed? `pip install torch numpy`):\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let after = |key: &str| -> Option<&str> {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1).copied())
    };
    let sec: f64 = after("sec/iter")
        .and_then(|s| s.parse().ok())
        .context("the PyTorch benchmark printed no `sec/iter`")?;
    let rss = after("peak_rss_kb")
        .and_then(|s| s.parse::<f64>().ok())
        .map(|kb| kb * 1024.0);
    let version = after("torch").unwrap_or("?");
    let threads = after("threads").unwrap_or("?");
    Ok(Run {
        sec_per_iter: sec,
        peak_rss: rss,
        phases: Vec::new(),
        label: format!("PyTorch {version} on {device} ({threads} threads)"),
    })
}

fn units(config: &str) -> (usize, usize) {
    if config == "seed" {
        (3200, 1024)
    } else {
        (400, 128)
    }
}

/// Arithmetic of one step in GFLOP (as `bench_step` counts it).
fn gflop(config: &str) -> f64 {
    let (g, d) = units(config);
    let (n, z, img, layers) = (100.0, 3.0, 784.0, 3.0);
    let (g, d) = (g as f64, d as f64);
    let g_first = z * g;
    let g_fwd = g_first + layers * g * g + g * img;
    let d_first = img * d;
    let d_fwd = d_first + layers * d * d + d * img;
    let macs =
        n * (3.0 * g_fwd - g_first) + 4.0 * n * d_fwd + 2.0 * n * (d_fwd - d_first) + n * d_fwd;
    2.0 * macs / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs the benchmark as `args` say.
pub fn bench(args: &[String]) -> Result<ExitCode> {
    let a = parse(args)?;
    let mnist = mnist_dir(a.mnist.as_deref());
    if a.torch.is_some() && mnist.is_none() {
        bail!("--compare-torch needs MNIST (the PyTorch script loads it): pass --mnist DIR or set MNIST_DIR");
    }
    let bin = build_child(&a.device)?;
    println!("load average before: {}", loadavg());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load: f64 = loadavg()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load > 0.5 * cpus as f64 {
        println!(
            "warning: the load average is {load} on {cpus} CPUs: other work is running, so the \
             timings (PyTorch's most, whose threads wait for each other) will be off; rerun on an \
             idle machine"
        );
    }
    println!(
        "machine: {cpus} CPUs; data: {}",
        mnist
            .as_ref()
            .map_or("synthetic".into(), |m| m.display().to_string())
    );
    let mut summary = Vec::new();
    for config in &a.configs {
        let iters = a.iters.unwrap_or(if *config == "seed" { 10 } else { 100 });
        let mut runs: Vec<Vec<Run>> = Vec::new();
        for round in 0..a.rounds {
            let mut this = vec![run_kusari(
                &bin,
                config,
                iters,
                mnist.as_deref(),
                &a.device,
                false,
            )?];
            if let (Some(script), Some(m)) = (&a.torch, &mnist) {
                this.push(run_torch(script, config, iters, m, &a.device)?);
            }
            if a.reference {
                this.push(run_kusari(
                    &bin,
                    config,
                    iters,
                    mnist.as_deref(),
                    &a.device,
                    true,
                )?);
            }
            let line: Vec<String> = this
                .iter()
                .map(|r| format!("{} {:.4} s/iter", r.label, r.sec_per_iter))
                .collect();
            println!("{config} round {}: {}", round + 1, line.join(", "));
            runs.push(this);
        }
        let flop = gflop(config);
        println!(
            "\n{config} config ({iters} timed iterations × {} rounds, medians):",
            a.rounds
        );
        println!(
            "  {:34} {:>9} {:>9} {:>8} {:>10}",
            "implementation", "s/iter", "images/s", "GFLOP/s", "peak RSS"
        );
        let mut medians = Vec::new();
        for k in 0..runs[0].len() {
            let s = median(runs.iter().map(|r| r[k].sec_per_iter).collect());
            let rss = runs
                .iter()
                .filter_map(|r| r[k].peak_rss)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            println!(
                "  {:34} {:>9.4} {:>9.1} {:>8.1} {:>10}",
                runs[0][k].label,
                s,
                100.0 / s,
                flop / s,
                rss.map_or("?".into(), |b| format!("{:.0} MB", b / 1e6))
            );
            medians.push((runs[0][k].label.clone(), s));
        }
        if a.torch.is_some() {
            let ratio = medians[0].1 / medians[1].1;
            println!("  ratio kusari / PyTorch: {ratio:.3}");
            summary.push(format!("{config}: kusari/PyTorch = {ratio:.3}"));
        }
        let phases = &runs.last().map(|r| r[0].phases.clone()).unwrap_or_default();
        if !phases.is_empty() {
            println!("  where kusari's step goes (last run):");
            let total: f64 = phases.iter().map(|p| p.1).sum();
            for (name, s) in phases {
                println!(
                    "    {name:24} {:8.2} ms  {:5.1} %",
                    s * 1e3,
                    100.0 * s / total
                );
            }
        }
        println!();
    }
    println!("load average after: {}", loadavg());
    for s in summary {
        println!("{s}");
    }
    Ok(ExitCode::SUCCESS)
}
