#!/usr/bin/env bash
# One device visit: build the CUDA core, run the numpy-checked tests, the benchmark, then
# compute-sanitizer memcheck and racecheck on the small test sizes. Logs and gpu_kernels.json go
# to $OUT (default build/gpu/out). Each step is bounded so the visit fits a 10-minute command.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/build/gpu/out}
mkdir -p "$OUT"
cd "$ROOT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
nvcc --version | tail -2 | tee -a "$OUT/device.txt"
JOBS=8 benchmarks/gpu/build.sh 2>&1 | tee "$OUT/build.log" || exit 1
cd benchmarks/gpu
timeout 240 python3 -m pytest -q -p no:cacheprovider test_kernels.py test_apply.py > "$OUT/test.log" 2>&1
echo "tests rc=$?" | tee -a "$OUT/test.log"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/test.log" | tail -25
timeout 150 python3 bench_kernels.py ${BENCH_ARGS:-} --out "$OUT" 2>&1 | tee "$OUT/bench.log"
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20"
HERALD_TEST_SMALL=1 timeout ${SAN_TIMEOUT:-150} $SAN --tool memcheck python3 -m pytest -q -x \
  -p no:cacheprovider test_kernels.py test_apply.py > "$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?" | tee -a "$OUT/memcheck.log"
tail -5 "$OUT/memcheck.log"
HERALD_TEST_SMALL=1 timeout ${SAN_TIMEOUT:-150} $SAN --tool racecheck python3 -m pytest -q -x \
  -p no:cacheprovider test_kernels.py test_apply.py -k "dedup or unique or lookup_grad or apply" \
  > "$OUT/racecheck.log" 2>&1
echo "racecheck rc=$?" | tee -a "$OUT/racecheck.log"
tail -5 "$OUT/racecheck.log"
