#!/usr/bin/env python3
"""Prices the EBGAN paper's MNIST grid (experiments/ebgan-paper-mnist.toml) on this machine.

Times 21 of its configurations with the release kusari (s/iteration over 40 warm
iterations, from kusari's own log), fits time = a + b * GFLOP of the step, and sums the
fit over the grid's 512 configurations. docs/grids.md quotes its output.

    cargo build --release -p kusari-cli
    MNIST_DIR=/path/to/mnist scripts/grid-cost.py
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUSARI = os.path.join(ROOT, "target", "release", "kusari")
SAMPLE = [(4, 4, g, d) for g in (400, 800, 1600, 3200) for d in (128, 256, 512, 1024)] + [
    (2, 2, 400, 128), (5, 5, 3200, 1024), (2, 5, 3200, 128), (5, 2, 400, 1024), (3, 3, 1600, 512)]


def gflop(lg, ld, ug, ud):
    """Multiply-adds of one EBGAN step (batch 100; D sees 200 images), forward and both backward passes."""
    g = 100 * (3 * ug + (lg - 1) * ug * ug + ug * 784)
    d = 200 * (784 * ud + (ld - 1) * ud * ud + ud * 784)
    return 6 * (g + d) / 1e9


def seconds_per_iteration(lg, ld, ug, ud, out):
    subprocess.run([KUSARI, "train", "ebgan", "--preset", "seed", "--arch", "mlp",
                    "--decoder-layers", "1", "--pt-weight", "0",
                    "--layers-g", str(lg), "--layers-d", str(ld), "--units-g", str(ug), "--units-d", str(ud),
                    "--iterations", "60", "--log-every-iterations", "20", "--out", out],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = json.load(open(os.path.join(out, "log")))
    return (log[2]["elapsed_time"] - log[0]["elapsed_time"]) / 40


def main():
    if "MNIST_DIR" not in os.environ:
        sys.exit("set MNIST_DIR to the folder with the four MNIST files")
    xs, ys = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, cfg in enumerate(SAMPLE):
            t = seconds_per_iteration(*cfg, os.path.join(tmp, str(k)))
            xs.append(gflop(*cfg))
            ys.append(t)
            print("G %d x %4d  D %d x %4d  %.4f s/iter  %.1f s/epoch" % (cfg[0], cfg[2], cfg[1], cfg[3], t, 600 * t))
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    print("fit: %.4f s + %.4f s per GFLOP" % (a, b))
    total = sum(2 * (a + b * gflop(lg, ld, ug, ud)) for lg, ld, ug, ud in itertools.product(
        (2, 3, 4, 5), (2, 3, 4, 5), (400, 800, 1600, 3200), (128, 256, 512, 1024)))
    print("whole grid (512 runs): %.1f s per iteration, %.2f h per epoch, %.0f h for 100 epochs"
          % (total, total * 600 / 3600, total * 600 * 100 / 3600))


if __name__ == "__main__":
    main()
