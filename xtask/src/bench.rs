//! `cargo xtask bench`: times the full training step of one or more
//! objectives (seed and small MLP configs) in child processes, optionally
//! alternating with the PyTorch reference in the same run, and prints
//! s/iter, images/s, GFLOP/s, peak RSS, each objective's time against
//! EBGAN-PT's and against PyTorch's, and where kusari's step spends its time.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, workspace_root};

const USAGE: &str = "usage: cargo xtask bench [--config seed|small|fast|all] [--objective NAME|all]
                         [--iters N] [--rounds R] [--compare-torch [PATH]] [--reference]
                         [--mnist DIR] [--device D]

  --config        which nets: seed (G 3200, D 1024), small (G 400, D 128), fast (the `fast`
                  preset's conv nets, batch 50) or all (default)
  --objective     ebgan (default), gan, lsgan, hinge, wgan, ragan (the guide's example
                  objective, crates/models/examples/ragan.rs) or all; every objective runs
                  with the seed's Adam and one D step per G step, so steps compare like for like
  --iters N       timed iterations per run (default: 10 seed, 100 small, 200 fast), after warm-up
  --rounds R      runs of each implementation, alternating (default 3); medians are reported
  --compare-torch run ../shared/bench/torch_gan.py (or PATH; for fast, scripts/torch_fast.py)
                  with the same objective too, alternating with kusari (they have ebgan, gan,
                  lsgan and hinge), and time torch.matmul (MKL) on the step's own products
                  (the MLP's layers; the conv step's as its kernels counted them, batched):
                  the ceiling each step's GFLOP/s is shown against
  --reference     also time kusari's autograd engine (KUSARI_STEP=reference)
  --mnist DIR     MNIST folder (default: $MNIST_DIR, ../shared/data/mnist or data/mnist)
  --device D      the device of both kusari and PyTorch (default cpu; cuda builds kusari
                  with `cargo xtask build-cuda`, see docs/cuda.md)";

/// Every objective `bench_step` knows, in the order the table lists them.
const OBJECTIVES: [&str; 6] = ["ebgan", "gan", "lsgan", "hinge", "wgan", "ragan"];

/// The objectives `torch_gan.py` implements.
const TORCH_OBJECTIVES: [&str; 4] = ["ebgan", "gan", "lsgan", "hinge"];

struct Args {
    configs: Vec<&'static str>,
    objectives: Vec<&'static str>,
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
        configs: vec!["seed", "small", "fast"],
        objectives: vec!["ebgan"],
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
                    "fast" => vec!["fast"],
                    "all" => vec!["seed", "small", "fast"],
                    other => bail!("--config takes seed, small, fast or all, not `{other}`"),
                };
                i += 1;
            }
            "--objective" => {
                let v = value(i)?.as_str();
                a.objectives = if v == "all" {
                    OBJECTIVES.to_vec()
                } else {
                    let known = OBJECTIVES.iter().find(|o| **o == v).with_context(|| {
                        format!(
                            "--objective takes {} or all, not `{v}`",
                            OBJECTIVES.join(", ")
                        )
                    })?;
                    vec![*known]
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
                None => a.torch = Some(root.join("../shared/bench/torch_gan.py")),
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
    /// Real images per iteration.
    batch: f64,
    peak_rss: Option<f64>,
    phases: Vec<(String, f64)>,
    gflop: Option<f64>,
    /// The products the step's kernels counted (the conv step's), if any.
    products: Vec<Product>,
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

/// What one kusari run is asked to time.
struct Job<'a> {
    config: &'a str,
    objective: &'a str,
    iters: usize,
    mnist: Option<&'a Path>,
    device: &'a str,
}

fn run_kusari(bin: &Path, job: &Job<'_>, reference: bool) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--config",
        job.config,
        "--objective",
        job.objective,
        "--iters",
        &job.iters.to_string(),
        "--device",
        job.device,
    ]);
    if let Some(m) = job.mnist {
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
        // The median, as PyTorch's scripts report theirs.
        sec_per_iter: v["median_sec_per_iter"]
            .as_f64()
            .or_else(|| v["sec_per_iter"].as_f64())
            .context("no sec_per_iter")?,
        batch: v["batch"].as_f64().unwrap_or(100.0),
        peak_rss: v["peak_rss_bytes"].as_f64(),
        phases,
        gflop: v["gflop_per_iter"].as_f64(),
        products: serde_json::from_value(v["products"].clone()).unwrap_or_default(),
        label: format!("kusari ({} step)", v["path"].as_str().unwrap_or("?")),
    })
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the PyTorch script on `device` (`cpu`, `cuda` or `cuda:N`, the same
/// spellings as kusari's) and its peak RSS (the script cannot report it
/// itself, so a wrapper reads `getrusage` after it finishes).
fn run_torch(script: &Path, job: &Job<'_>, mnist: &Path) -> Result<Run> {
    let (ug, ud) = units(job.config);
    let widths: Vec<String> = if job.config == "fast" {
        Vec::new()
    } else {
        vec![
            "--units-g".into(),
            ug.to_string(),
            "--units-d".into(),
            ud.to_string(),
        ]
    };
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
            "--objective",
            job.objective,
            "--iters",
            &job.iters.to_string(),
        ])
        .args(["--device", job.device])
        .args(&widths)
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
    let sec: f64 = after("s/iter")
        .or_else(|| after("sec/iter"))
        .and_then(|s| s.parse().ok())
        .context("the PyTorch benchmark printed no `s/iter`")?;
    let rss = after("peak_rss_kb")
        .and_then(|s| s.parse::<f64>().ok())
        .map(|kb| kb * 1024.0);
    let version = after("torch").unwrap_or("?");
    let threads = after("threads").unwrap_or("?");
    Ok(Run {
        sec_per_iter: sec,
        batch: if job.config == "fast" { 50.0 } else { 100.0 },
        peak_rss: rss,
        phases: Vec::new(),
        gflop: None,
        products: Vec::new(),
        label: format!("PyTorch {version} on {} ({threads} threads)", job.device),
    })
}

/// One matrix product of a step: `[m × k] · [k × n]`, A or B read through
/// a transpose, done `count` times.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Product {
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
    count: usize,
}

/// The matrix products of one step of the MLP config `config` (4 hidden
/// layers in each net, z-dim 3, batch 100, 784 pixels) for `objective`, as
/// the fused step does them: each layer's forward, its weight gradient
/// `xᵀ·δy`, and its input gradient `δy·Wᵀ` (none into the noise; below D's
/// first layer only for L_G's fake rows; above it for L_D's 2N rows and
/// L_G's N).
fn step_products(config: &str, objective: &str) -> Vec<Product> {
    let (ug, ud) = units(config);
    let (n, z, img) = (100, 3, 784);
    let head = if objective == "ebgan" { img } else { 1 };
    let gen = [(z, ug), (ug, ug), (ug, ug), (ug, ug), (ug, img)];
    let dis = [(img, ud), (ud, ud), (ud, ud), (ud, ud), (ud, head)];
    let mut out = Vec::new();
    let mut layer = |(inputs, outputs): (usize, usize), rows: usize, grad_rows: usize| {
        let p = |m, k, n, a_t, b_t| Product {
            m,
            k,
            n,
            a_t,
            b_t,
            count: 1,
        };
        out.push(p(rows, inputs, outputs, false, false));
        out.push(p(inputs, rows, outputs, true, false));
        if grad_rows > 0 {
            out.push(p(grad_rows, outputs, inputs, false, true));
        }
    };
    for (i, l) in gen.iter().enumerate() {
        layer(*l, n, if i == 0 { 0 } else { n });
    }
    for (i, l) in dis.iter().enumerate() {
        layer(*l, 2 * n, if i == 0 { n } else { 3 * n });
    }
    out
}

/// What `torch.matmul` (MKL) does per second on each objective's step
/// products, on `device`: the products' flops over the sum of their best
/// times (contiguous operands, or transposed views where the step reads a
/// transpose; a product the step does `count` times per sample of a batch,
/// as the conv step's patch products, as one batched `torch.matmul`).
/// `products` gives each objective's list.
fn mkl_ceiling<'a>(
    objectives: &[&'a str],
    device: &str,
    products: impl Fn(&str) -> Vec<Product>,
) -> Result<Vec<(&'a str, f64)>> {
    let script = "import json, sys, time, torch\n\
                  products, device = json.loads(sys.argv[1]), sys.argv[2]\n\
                  total = 0.0\n\
                  for p in products:\n\
                  \x20   batch = [p['count']] if p['count'] > 1 else []\n\
                  \x20   a = torch.randn(*batch, p['k'], p['m'], device=device).transpose(-1, -2) if p['a_t'] else torch.randn(*batch, p['m'], p['k'], device=device)\n\
                  \x20   b = torch.randn(*batch, p['n'], p['k'], device=device).transpose(-1, -2) if p['b_t'] else torch.randn(*batch, p['k'], p['n'], device=device)\n\
                  \x20   best = 1e9\n\
                  \x20   for rep in range(7):\n\
                  \x20       t = time.perf_counter(); torch.matmul(a, b)\n\
                  \x20       if device.startswith('cuda'): torch.cuda.synchronize()\n\
                  \x20       if rep: best = min(best, time.perf_counter() - t)\n\
                  \x20   total += best\n\
                  print('seconds', total, 'threads', torch.get_num_threads())\n";
    let mut out = Vec::new();
    for objective in objectives {
        let products = products(objective);
        if products.is_empty() {
            continue;
        }
        let flop: f64 = products
            .iter()
            .map(|p| 2.0 * (p.m * p.k * p.n * p.count) as f64)
            .sum();
        let result = Command::new(python())
            .args(["-c", script])
            .arg(serde_json::to_string(&products)?)
            .arg(device)
            .output()
            .context("timing torch.matmul")?;
        let stdout = String::from_utf8_lossy(&result.stdout);
        if !result.status.success() {
            bail!(
                "timing torch.matmul failed:\n{stdout}{}",
                String::from_utf8_lossy(&result.stderr)
            );
        }
        let seconds: f64 = stdout
            .split_whitespace()
            .skip_while(|w| *w != "seconds")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("the torch.matmul timing printed no `seconds`")?;
        out.push((*objective, flop / seconds / 1e9));
    }
    Ok(out)
}

fn units(config: &str) -> (usize, usize) {
    if config == "seed" {
        (3200, 1024)
    } else {
        (400, 128)
    }
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

/// The medians of one objective's runs.
struct Row {
    objective: &'static str,
    images: f64,
    torch_rss: Option<f64>,
    kusari: f64,
    gflop: Option<f64>,
    rss: Option<f64>,
    torch: Option<f64>,
    reference: Option<f64>,
    label: String,
    phases: Vec<(String, f64)>,
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
        let iters = a.iters.unwrap_or(match *config {
            "seed" => 10,
            "small" => 100,
            _ => 200,
        });
        let script = a.torch.as_ref().map(|s| {
            if *config == "fast" {
                workspace_root().join("scripts/torch_fast.py")
            } else {
                s.clone()
            }
        });
        // kusari, PyTorch and the reference per objective, alternating every round.
        let mut runs: Vec<Vec<[Option<Run>; 3]>> = Vec::new();
        for round in 0..a.rounds {
            let mut this = Vec::new();
            let mut line = Vec::new();
            for objective in &a.objectives {
                let job = Job {
                    config,
                    objective,
                    iters,
                    mnist: mnist.as_deref(),
                    device: &a.device,
                };
                let kusari = run_kusari(&bin, &job, false)?;
                line.push(format!("{objective} kusari {:.4}", kusari.sec_per_iter));
                let torch = match (&script, &mnist) {
                    (Some(script), Some(m)) if TORCH_OBJECTIVES.contains(objective) => {
                        let t = run_torch(script, &job, m)?;
                        line.push(format!("torch {:.4}", t.sec_per_iter));
                        Some(t)
                    }
                    _ => None,
                };
                let reference = if a.reference {
                    Some(run_kusari(&bin, &job, true)?)
                } else {
                    None
                };
                this.push([Some(kusari), torch, reference]);
            }
            println!("{config} round {} (s/iter): {}", round + 1, line.join(", "));
            runs.push(this);
        }
        let rows: Vec<Row> = a
            .objectives
            .iter()
            .enumerate()
            .map(|(k, objective)| {
                let med = |which: usize| -> Option<f64> {
                    let v: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r[k][which].as_ref().map(|x| x.sec_per_iter))
                        .collect();
                    (!v.is_empty()).then(|| median(v))
                };
                let first = runs[0][k][0].as_ref().expect("kusari ran");
                Row {
                    objective,
                    images: first.batch,
                    torch_rss: runs
                        .iter()
                        .filter_map(|r| r[k][1].as_ref().and_then(|x| x.peak_rss))
                        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
                    kusari: med(0).expect("kusari ran"),
                    gflop: first.gflop,
                    rss: runs
                        .iter()
                        .filter_map(|r| r[k][0].as_ref().and_then(|x| x.peak_rss))
                        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
                    torch: med(1),
                    reference: med(2),
                    label: first.label.clone(),
                    phases: runs
                        .last()
                        .and_then(|r| r[k][0].as_ref())
                        .map(|x| x.phases.clone())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let ceiling = match (&a.torch, &mnist) {
            (Some(_), Some(_)) if *config == "fast" => {
                // The conv step's products, as its kernels counted them.
                mkl_ceiling(&a.objectives, &a.device, |objective| {
                    rows.iter()
                        .position(|r| r.objective == objective)
                        .and_then(|k| runs[0][k][0].as_ref())
                        .map(|run| run.products.clone())
                        .unwrap_or_default()
                })?
            }
            (Some(_), Some(_)) => mkl_ceiling(&a.objectives, &a.device, |objective| {
                step_products(config, objective)
            })?,
            _ => Vec::new(),
        };
        print_table(config, iters, a.rounds, &rows, &runs, &ceiling);
        let ebgan = rows
            .iter()
            .find(|r| r.objective == "ebgan")
            .map(|r| r.kusari);
        for r in &rows {
            let mut parts = vec![format!("{config} {}: {:.4} s/iter", r.objective, r.kusari)];
            if let Some(e) = ebgan {
                parts.push(format!("{:.2}× EBGAN-PT's step", r.kusari / e));
            }
            if let Some(t) = r.torch {
                parts.push(format!("kusari/PyTorch = {:.3}", r.kusari / t));
            }
            summary.push(parts.join(", "));
        }
        println!();
    }
    println!("load average after: {}", loadavg());
    for s in summary {
        println!("{s}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(
    config: &str,
    iters: usize,
    rounds: usize,
    rows: &[Row],
    runs: &[Vec<[Option<Run>; 3]>],
    ceiling: &[(&str, f64)],
) {
    println!("\n{config} config ({iters} timed iterations × {rounds} rounds, medians):");
    println!(
        "  {:9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "objective",
        "s/iter",
        "images/s",
        "GFLOP/s",
        "% MKL",
        "peak RSS",
        "×EBGAN-PT",
        "PyTorch",
        "ratio",
        "PyTorch RSS"
    );
    let ebgan = rows
        .iter()
        .find(|r| r.objective == "ebgan")
        .map(|r| r.kusari);
    for r in rows {
        let gflops = r.gflop.map(|g| g / r.kusari);
        let mkl = ceiling
            .iter()
            .find(|(o, _)| *o == r.objective)
            .map(|(_, g)| *g);
        println!(
            "  {:9} {:>9.4} {:>9.1} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>11}",
            r.objective,
            r.kusari,
            r.images / r.kusari,
            gflops.map_or("?".into(), |g| format!("{g:.1}")),
            gflops
                .zip(mkl)
                .map_or("—".into(), |(g, m)| format!("{:.0} %", 100.0 * g / m)),
            r.rss.map_or("?".into(), |b| format!("{:.0} MB", b / 1e6)),
            ebgan.map_or("—".into(), |e| format!("{:.2}", r.kusari / e)),
            r.torch.map_or("—".into(), |t| format!("{t:.4}")),
            r.torch
                .map_or("—".into(), |t| format!("{:.3}", r.kusari / t)),
            r.torch_rss
                .map_or("—".into(), |b| format!("{:.0} MB", b / 1e6)),
        );
    }
    for (objective, g) in ceiling {
        println!("  MKL (torch.matmul) on the {objective} step's products: {g:.1} GFLOP/s");
    }
    if let Some(r) = rows.first() {
        println!("  kusari ran as: {}", r.label);
    }
    if let Some(label) = runs
        .first()
        .and_then(|r| r.iter().find_map(|x| x[1].as_ref()))
        .map(|t| t.label.clone())
    {
        println!("  PyTorch ran as: {label}");
    }
    for r in rows.iter().filter(|r| r.reference.is_some()) {
        println!(
            "  {} on the autograd engine: {:.4} s/iter",
            r.objective,
            r.reference.unwrap_or(f64::NAN)
        );
    }
    for r in rows.iter().filter(|r| !r.phases.is_empty()) {
        println!("  where kusari's {} step goes (last run):", r.objective);
        let total: f64 = r.phases.iter().map(|p| p.1).sum();
        for (name, s) in &r.phases {
            println!(
                "    {name:36} {:8.2} ms  {:5.1} %",
                s * 1e3,
                100.0 * s / total
            );
        }
    }
}
