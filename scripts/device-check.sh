#!/usr/bin/env bash
# The GPU check of a CUDA build, in one script (see docs/cuda.md, "The device check").
#
#   scripts/device-check.sh --prepare   # here: build the CUDA binaries, pack device/
#   scripts/device-check.sh             # on the GPU machine, from the repository root
#
# --prepare runs `cargo xtask build-cuda --skip-download` for the kusari binary and
# for kusari-models' bench_step example and cuda_agreement test, strips the three
# binaries and packs them (xz) with libcurand, MNIST and the PyTorch reference into device/
# (ignored by git; at most 64 MiB so that it can travel with the working tree).
# It needs .cuda/ (`cargo xtask build-cuda` once), MNIST_DIR (default
# ../shared/data/mnist) and TORCH_EBGAN (default ../shared/bench/torch_ebgan.py).
#
# The check needs the NVIDIA driver, python3 with a CUDA 13 PyTorch (its
# site-packages/nvidia/*/lib folders provide cuBLAS, cuRAND and cudart) and
# nothing from Rust. In under 8 minutes it prints the GPU and
#   (0) the cuda_agreement test: a few EBGAN steps on CPU and GPU agree;
#   (a) agreement: 5 seeded iterations of `kusari train ebgan` on the CPU (fast
#       and reference step) and on the GPU; dis/loss, gen/loss and gen/pt of
#       iterations 1-2 within 1e-4 relative of the CPU reference, later ones (where
#       rounding differences have grown through Adam) within 10x the CPU's own
#       fast-vs-reference drift;
#   (b) the seed's EBGAN step, kusari (bench_step) and PyTorch (torch_ebgan.py)
#       on the GPU, alternating, with the ratio of their median times;
#   (c) one epoch of `kusari train ebgan` on the GPU, its log and images in $OUT;
# then one RESULT line per part. It exits non-zero if any part failed.
#
# Environment: OUT (default device-out/), KUSARI_DEVICE_DIR (default device/),
# KUSARI_CHECK_DEVICE (default cuda; `cpu` runs every GPU part on the CPU, to test
# the script on a machine without a GPU), KUSARI_CHECK_TRAIN_ARGS (extra flags for
# every `kusari train`, e.g. smaller nets for that test), KUSARI_CHECK_BENCH_CONFIG
# (seed), KUSARI_CHECK_BENCH_ITERS (50), KUSARI_CHECK_BENCH_ROUNDS (3),
# KUSARI_CHECK_SKIP (space-separated parts to skip: test agreement bench epoch).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE_DIR="${KUSARI_DEVICE_DIR:-$ROOT/device}"
LIMIT_BYTES=$((64 * 1024 * 1024))

die() {
    echo "error: $*" >&2
    exit 2
}

# ---------------------------------------------------------------- preparation
prepare() {
    local mnist="${MNIST_DIR:-$ROOT/../shared/data/mnist}"
    local torch_script="${TORCH_EBGAN:-$ROOT/../shared/bench/torch_ebgan.py}"
    local file
    for file in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
        t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
        [[ -f "$mnist/$file" ]] || die "$mnist/$file is missing: set MNIST_DIR to the folder of MNIST's four .gz IDX files"
    done
    [[ -f "$torch_script" ]] || die "$torch_script is missing: set TORCH_EBGAN to the PyTorch reference script"
    [[ -d "$ROOT/.cuda/wheels" ]] || die "no CUDA toolkit in .cuda/: run \`cargo xtask build-cuda\` once first"
    command -v xz >/dev/null || die "xz is needed to pack the binaries (apt-get install xz-utils)"

    cd "$ROOT" || die "cannot enter $ROOT"
    local start=$SECONDS
    echo "== build: kusari (kusari-cli with cuda)"
    cargo xtask build-cuda --skip-download || die "the CUDA build of kusari failed"
    echo "== build: bench_step and the cuda_agreement test (kusari-models with cuda)"
    local messages
    messages="$(mktemp)"
    cargo xtask build-cuda --skip-download -p kusari-models -- \
        --example bench_step --test cuda_agreement --message-format=json-render-diagnostics \
        >"$messages" || {
        grep -v '^{' "$messages"
        die "the CUDA build of kusari-models' bench_step and cuda_agreement failed"
    }
    local exes
    exes="$(python3 - "$messages" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
EOF
)"
    rm -f "$messages"
    local bench test
    bench="$(awk '$1 == "bench_step" {print $2}' <<<"$exes")"
    test="$(awk '$1 == "cuda_agreement" {print $2}' <<<"$exes")"
    [[ -x "$bench" && -x "$test" ]] || die "cargo did not report the bench_step and cuda_agreement executables"
    echo "   built in $((SECONDS - start)) s"

    echo "== pack into $DEVICE_DIR"
    local stage
    stage="$(mktemp -d)"
    mkdir -p "$stage/bin"
    cp "$ROOT/target/cuda/release/kusari" "$stage/bin/kusari"
    cp "$bench" "$stage/bin/bench_step"
    cp "$test" "$stage/bin/cuda_agreement"
    strip "$stage"/bin/*
    # candle opens a cuRAND generator with every GPU device, and PyTorch's CUDA 13
    # wheels come without libcurand, so it travels along (132 MB, 43 MB packed).
    mkdir -p "$stage/lib"
    cp "$ROOT/.cuda/wheels/nvidia/cu13/lib/libcurand.so.10" "$stage/lib/"
    rm -rf "$DEVICE_DIR.tmp"
    mkdir -p "$DEVICE_DIR.tmp/mnist"
    # One xz stream with a 64 MiB window: the three binaries share ~50 MB of
    # candle's PTX, which it then stores once.
    echo "   packing (xz -9, single-threaded: a few minutes)"
    tar -C "$stage" -cf - bin lib | xz -9 -T1 >"$DEVICE_DIR.tmp/bundle.tar.xz"
    cp "$mnist"/*-ubyte.gz "$DEVICE_DIR.tmp/mnist/"
    cp "$torch_script" "$DEVICE_DIR.tmp/torch_ebgan.py"
    {
        echo "commit $(git -C "$ROOT" rev-parse HEAD)$(git -C "$ROOT" diff --quiet HEAD || echo ' (with uncommitted changes)')"
        echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        (cd "$stage" && ls -l bin lib | awk 'NF > 8 {printf "%s %d bytes\n", $9, $5}')
    } >"$DEVICE_DIR.tmp/manifest.txt"
    rm -rf "$stage"
    local total
    total="$(du -sb "$DEVICE_DIR.tmp" | cut -f1)"
    cat "$DEVICE_DIR.tmp/manifest.txt"
    (cd "$DEVICE_DIR.tmp" && find . -type f -printf '%s %p\n' | sort -k2)
    if ((total > LIMIT_BYTES)); then
        rm -rf "$DEVICE_DIR.tmp"
        die "the device folder would be $total bytes, over the 64 MiB a carried path may take"
    fi
    rm -rf "$DEVICE_DIR"
    mv "$DEVICE_DIR.tmp" "$DEVICE_DIR"
    echo "ready: $DEVICE_DIR, $total bytes ($((total * 100 / LIMIT_BYTES))% of 64 MiB)"
    echo "run on the GPU machine, from the repository root, carrying \`device\`: scripts/device-check.sh"
}

# ---------------------------------------------------------------- the check
GPU="${KUSARI_CHECK_DEVICE:-cuda}"
SKIP=" ${KUSARI_CHECK_SKIP:-} "
read -r -a TRAIN_ARGS <<<"${KUSARI_CHECK_TRAIN_ARGS:-}"
RESULTS=()
FAILED=0
# Every command gets at most its own cap and never runs past 7.5 minutes in all.
DEADLINE=$((SECONDS + 450))

# The timeout for a command: `cap SECONDS`, cut to the time left.
cap() {
    local left=$((DEADLINE - SECONDS))
    ((left < 1)) && left=1
    echo $(($1 < left ? $1 : left))
}

result() {
    RESULTS+=("RESULT $1")
    [[ "$1" == *FAIL* ]] && FAILED=1
}

skipped() {
    [[ "$SKIP" == *" $1 "* ]] && {
        result "$1: skipped (KUSARI_CHECK_SKIP)"
        return 0
    }
    return 1
}

# Puts PyTorch's CUDA libraries (site-packages/nvidia/*/lib) on LD_LIBRARY_PATH.
find_cuda_libraries() {
    local dirs
    dirs="$(python3 - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
try:
    import nvidia
    roots += [os.path.dirname(p) for p in nvidia.__path__]
except ImportError:
    pass
seen = []
for root in roots:
    for lib in sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib"))):
        if lib not in seen:
            seen.append(lib)
print(":".join(seen))
EOF
)"
    if [[ -n "$dirs" ]]; then
        export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "CUDA libraries from: ${dirs//:/ }"
    else
        echo "no site-packages/nvidia/*/lib found (no CUDA PyTorch?); LD_LIBRARY_PATH as given"
    fi
}

# (0) the Rust agreement test, built with the cuda feature.
part_test() {
    skipped test && return
    echo
    echo "== (0) cuda_agreement test"
    if [[ "$GPU" != cuda* ]]; then
        result "test: skipped (KUSARI_CHECK_DEVICE=$GPU)"
        return
    fi
    local log="$OUT/cuda_agreement.txt"
    timeout "$(cap 120)" "$BIN/cuda_agreement" --nocapture --test-threads 1 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if ((rc != 0)); then
        result "test: FAIL (exit $rc, see cuda_agreement.txt)"
    elif grep -q '^skipped' "$log"; then
        result "test: FAIL (the test found no GPU: $(grep '^skipped' "$log"))"
    else
        result "test: PASS"
    fi
}

# (a) 5 seeded iterations on the CPU (fast and reference step) and the GPU.
part_agreement() {
    skipped agreement && return
    echo
    echo "== (a) agreement: kusari train ebgan --iterations 5, cpu vs $GPU"
    local run
    for run in cpu-fast cpu-reference "$GPU"; do
        local device=cpu step=auto
        [[ $run == cpu-reference ]] && step=reference
        [[ $run == cpu-* ]] || device="$GPU"
        echo "-- $run"
        KUSARI_STEP=$step timeout "$(cap 150)" "$BIN/kusari" --log-level warn train ebgan \
            --data-dir "$MNIST" --seed 1 --iterations 5 --log-every-iterations 1 \
            --device "$device" --out "$WORK/agreement-$run" "${TRAIN_ARGS[@]}" \
            >"$WORK/agreement-$run.txt" 2>&1 || {
            tail -20 "$WORK/agreement-$run.txt"
            result "agreement: FAIL (the $run run failed)"
            return
        }
        mkdir -p "$OUT/agreement"
        cp "$WORK/agreement-$run/log" "$OUT/agreement/log-$run.json"
    done
    local verdict
    verdict="$(python3 - "$OUT/agreement" "$GPU" <<'EOF'
import json, sys
folder, gpu = sys.argv[1], sys.argv[2]
keys = ["dis/loss", "gen/loss", "gen/pt"]
tolerance, strict_iterations, drift_factor = 1e-4, 2, 10.0

def load(run):
    return {e["iteration"]: e for e in json.load(open(f"{folder}/log-{run}.json"))}

def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-3)

fast, ref, dev = load("cpu-fast"), load("cpu-reference"), load(gpu)
ok = sorted(fast) == sorted(ref) == sorted(dev) == [1, 2, 3, 4, 5]
if not ok:
    print(f"expected iterations 1-5 in every log: {sorted(fast)} {sorted(ref)} {sorted(dev)}")
print(f"{gpu} against the CPU's reference step; 'drift' is the CPU's fast step against its reference")
print(f"{'iter':>4} {'key':<9} {'cpu-reference':>14} {gpu:>14} {'cpu-fast':>14} "
      f"{'rel diff':>9} {'fast diff':>9} {'drift':>9} {'limit':>9}")
worst = 0.0
for it in sorted(ref):
    for key in keys:
        r, d, f = ref[it].get(key), dev.get(it, {}).get(key), fast.get(it, {}).get(key)
        if r is None or d is None or f is None:
            print(f"{it:>4} {key:<9} missing or not finite: {r} {d} {f}")
            ok = False
            continue
        diff, fast_diff, drift = rel(d, r), rel(d, f), rel(f, r)
        limit = tolerance if it <= strict_iterations else max(tolerance, drift_factor * drift)
        worst = max(worst, diff if it <= strict_iterations else 0.0)
        flag = "" if diff <= limit else "  <-- over"
        ok &= diff <= limit
        print(f"{it:>4} {key:<9} {r:>14.9g} {d:>14.9g} {f:>14.9g} "
              f"{diff:>9.2e} {fast_diff:>9.2e} {drift:>9.2e} {limit:>9.2e}{flag}")
print(f"VERDICT {'PASS' if ok else 'FAIL'}: iterations 1-{strict_iterations} within {worst:.2e} "
      f"(limit {tolerance:g}); later ones within max({tolerance:g}, {drift_factor:g} x drift)")
EOF
)" || verdict="VERDICT FAIL the comparison itself failed"
    echo "$verdict" | tee "$OUT/agreement/compare.txt"
    result "agreement: $(echo "$verdict" | sed -n 's/^VERDICT //p')"
}

# (b) the seed's step, kusari and PyTorch alternating on the same device.
part_bench() {
    skipped bench && return
    echo
    echo "== (b) bench: the EBGAN step on $GPU, kusari and PyTorch alternating"
    local config="${KUSARI_CHECK_BENCH_CONFIG:-seed}"
    local iters="${KUSARI_CHECK_BENCH_ITERS:-50}" rounds="${KUSARI_CHECK_BENCH_ROUNDS:-3}"
    local round kusari_times=() torch_times=() line
    for ((round = 1; round <= rounds; round++)); do
        line="$(timeout "$(cap 100)" "$BIN/bench_step" --config "$config" --device "$GPU" \
            --mnist "$MNIST" --iters "$iters" --warmup 5 2>&1)" || {
            echo "$line" | tail -10
            result "bench: FAIL (bench_step failed)"
            return
        }
        echo "$line" | grep -v '^BENCH_JSON'
        kusari_times+=("$(echo "$line" | sed -n 's/^BENCH_JSON //p' |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["sec_per_iter"])')")
        # torch_ebgan.py's arguments: MNIST_DIR iters device (seed widths by default).
        local torch_args=("$MNIST" "$iters" "$GPU")
        [[ $config == small ]] && torch_args+=(400 128)
        line="$(timeout "$(cap 100)" python3 "$DEVICE_DIR/torch_ebgan.py" "${torch_args[@]}" 2>&1)" || {
            echo "$line" | tail -10
            result "bench: FAIL (torch_ebgan.py failed)"
            return
        }
        echo "$line"
        torch_times+=("$(echo "$line" | sed -n 's/.*sec\/iter \([0-9.e+-]*\).*/\1/p' | tail -1)")
    done
    local summary
    summary="$(python3 - "${kusari_times[*]}" "${torch_times[*]}" "$config" "$GPU" <<'EOF'
import statistics, sys
k = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
mk, mt = statistics.median(k), statistics.median(t)
print(f"{sys.argv[3]} step on {sys.argv[4]}: kusari {mk:.4f} s/iter, torch {mt:.4f} s/iter "
      f"(medians of {len(k)}), kusari/torch {mk / mt:.2f}")
EOF
)" || summary="FAIL (could not read the times: kusari ${kusari_times[*]}, torch ${torch_times[*]})"
    echo "$summary" | tee "$OUT/bench.txt"
    result "bench: $summary"
}

# (c) one epoch of training, its log and images returned in $OUT.
part_epoch() {
    skipped epoch && return
    echo
    echo "== (c) one epoch of kusari train ebgan on $GPU"
    local start=$SECONDS
    timeout "$(cap 200)" "$BIN/kusari" train ebgan --data-dir "$MNIST" --seed 1 --epochs 1 \
        --device "$GPU" --out "$WORK/epoch" "${TRAIN_ARGS[@]}" 2>&1 | tee "$WORK/epoch.txt"
    local rc=${PIPESTATUS[0]} seconds=$((SECONDS - start))
    mkdir -p "$OUT/epoch"
    cp "$WORK/epoch.txt" "$OUT/epoch/console.txt"
    # Everything but the snapshots (hundreds of MB for the seed's nets).
    find "$WORK/epoch" -maxdepth 1 -type f -exec cp {} "$OUT/epoch/" \;
    if ((rc != 0)); then
        result "epoch: FAIL (exit $rc after $seconds s)"
    elif [[ ! -f "$OUT/epoch/log" ]] || ! ls "$OUT/epoch"/*.png >/dev/null 2>&1; then
        result "epoch: FAIL (no log or no images written)"
    else
        result "epoch: PASS in $seconds s (with start-up), log and images in \$OUT/epoch"
    fi
}

check() {
    [[ -f "$DEVICE_DIR/bundle.tar.xz" ]] || die "$DEVICE_DIR/bundle.tar.xz is missing: run scripts/device-check.sh --prepare first and carry \`device\`"
    OUT="${OUT:-$ROOT/device-out}"
    mkdir -p "$OUT" || die "cannot create $OUT"
    exec > >(tee "$OUT/device-check.txt") 2>&1
    local start=$SECONDS
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    MNIST="$DEVICE_DIR/mnist"
    BIN="$WORK/bin"

    echo "== device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), device $GPU"
    cat "$DEVICE_DIR/manifest.txt"
    if command -v nvidia-smi >/dev/null; then
        echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader)"
    else
        echo "GPU: none (nvidia-smi not found)"
    fi
    python3 - "$DEVICE_DIR/bundle.tar.xz" "$WORK" <<'EOF' || die "cannot unpack $DEVICE_DIR/bundle.tar.xz"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2])
EOF
    find_cuda_libraries
    # The packed libcurand comes last: a CUDA 13 copy already on the path wins.
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$WORK/lib"
    local missing
    missing="$(ldd "$BIN/kusari" "$BIN/bench_step" "$BIN/cuda_agreement" | grep 'not found' | sort -u)"
    if [[ -n "$missing" ]]; then
        echo "$missing"
        die "libraries not found (above): put the CUDA 13 libraries on LD_LIBRARY_PATH (docs/cuda.md)"
    fi

    part_test
    part_agreement
    part_bench
    part_epoch

    echo
    printf '%s\n' "${RESULTS[@]}"
    echo "RESULT total: $((SECONDS - start)) s"
    exit "$FAILED"
}

case "${1:-}" in
--prepare) prepare ;;
"") check ;;
-h | --help) sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
*) die "unknown option $1 (use --prepare, or nothing on the GPU machine)" ;;
esac
