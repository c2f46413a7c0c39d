#!/usr/bin/env bash
# Every GPU measurement this project wants, in one run, for a machine with a GPU lent for a few minutes:
#   bash experiments/gpu_check.sh                 # writes $OUT (default gpu_check/) and prints its summary
# 1. Throughput of one run (experiments/benchmark.py, Lightning against a plain loop): the DCGAN of the cifar10
#    table (on random 32-px PNGs, no download) in float32, bf16-mixed and 16-mixed, with torch.compile and
#    channels_last; the PacGAN-protocol GAN (ring8_pacgan) in float32 and bf16-mixed.
# 2. Several runs sharing the device (the runner's --jobs on one GPU): the PacGAN-protocol GAN, N runs at once for
#    N in $COUNTS, $STEPS generator steps each (wall time includes each run's start); generator updates per second
#    per run and for the device, from the runs' result.json.
# Settings by environment: OUT, COUNTS (default "1 4 16"), STEPS (default 10000), CHUNKS / CHUNK (benchmark.py
# sizes, default 4 / 40), BENCH (0 skips part 1), ACCELERATOR (default gpu; cpu runs the same steps, small, as a
# dry run: ACCELERATOR=cpu BENCH=0 COUNTS="1 2" STEPS=200 bash experiments/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
COUNTS=${COUNTS-"1 4 16"}   # COUNTS="" runs no shared runs
STEPS=${STEPS:-10000}
CHUNKS=${CHUNKS:-4}
CHUNK=${CHUNK:-40}
ACCELERATOR=${ACCELERATOR:-gpu}
BENCH=${BENCH:-1}
mkdir -p "$OUT"
rm -f "$OUT/device.csv"
if [ "$ACCELERATOR" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.tmp"; then
  mv "$OUT/device.tmp" "$OUT/device.csv"
fi
rm -f "$OUT/device.tmp"

bench() {  # name, then benchmark.py arguments
  local name=$1; shift
  python experiments/benchmark.py "$@" --accelerator "$ACCELERATOR" --chunks "$CHUNKS" --chunk "$CHUNK" \
    --out "$OUT/bench_$name.md" > "$OUT/bench_$name.log" 2>&1 || echo "benchmark $name failed: see $OUT/bench_$name.log"
}
CIFAR=experiments/cifar10/gan.yaml
if [ "$BENCH" != 0 ]; then
bench cifar10_fp32 "$CIFAR" "$CIFAR@model.init_args.channels_last=true" "$CIFAR@model.init_args.compile_networks=true" \
  --random-images "$OUT/png32"
bench cifar10_bf16 "$CIFAR" "$CIFAR@model.init_args.compile_networks=true" --random-images "$OUT/png32" --precision bf16-mixed
bench cifar10_fp16 "$CIFAR" --random-images "$OUT/png32" --precision 16-mixed
bench ring8_pacgan_fp32 experiments/ring8_pacgan/gan.yaml
bench ring8_pacgan_bf16 experiments/ring8_pacgan/gan.yaml --precision bf16-mixed
fi

GPUS=1; [ "$ACCELERATOR" = cpu ] && GPUS=0
for n in $COUNTS; do
  rm -rf "$OUT/shared_$n"  # an earlier check's runs (other steps or device) would be read back as cached
  python experiments/reproduce.py ring8_pacgan --models gan --seeds "$n" --jobs "$n" --gpus-per-run "$GPUS" \
    --set trainer.max_steps=$((2 * STEPS)) --set trainer.accelerator="$ACCELERATOR" --progress-every 600 \
    --out "$OUT/shared_$n" > "$OUT/shared_$n.log" 2>&1 || echo "$n runs at once failed: see $OUT/shared_$n.log"
done

python - "$OUT" "$COUNTS" <<'EOF'
import json
import sys
from pathlib import Path
out, counts = Path(sys.argv[1]), [int(n) for n in sys.argv[2].split()]
lines = ["# GPU check", ""]
device = out / "device.csv"
if device.exists() and device.read_text().strip():
    lines += ["Device: " + device.read_text().strip().splitlines()[-1], ""]
for table in sorted(out.glob("bench_*.md")):
    lines += [f"## {table.stem.removeprefix('bench_')}", "", table.read_text().strip(), ""]
lines += ["## Runs sharing the device (ring8_pacgan GAN; wall time includes each run's start)", "",
          "| runs at once | finished | generator steps / s per run (mean) | for the device |", "| --- | --- | --- | --- |"]
for n in counts:
    results = [json.loads(p.read_text()) for p in (out / f"shared_{n}").glob("runs/gan/*/result.json")]
    ok = [r for r in results if r.get("status") == "ok"]
    rates = [r["g_steps"] / r["wall_s"] for r in ok if r.get("wall_s")]
    per_run = sum(rates) / len(rates) if rates else float("nan")
    lines.append(f"| {n} | {len(ok)} of {n} | {per_run:.1f} | {sum(rates):.1f} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
