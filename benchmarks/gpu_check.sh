#!/usr/bin/env bash
# The GPU path, checked in one call of the device tool (a fresh machine with torch+CUDA, nvcc, CuPy,
# Triton, compute-sanitizer, but no ultralytics, sam2 or av: those travel as wheels in .whl/).
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine: everything, within 540 s
#   bash benchmarks/gpu_check.sh --dry-run            # on a CPU: every step's plumbing at tiny sizes
#   bash benchmarks/gpu_check.sh --carry-check        # does the call fit 64 MiB? prints the run call
#   bash benchmarks/gpu_check.sh --steps wheels,env,tracker-vos --budget 180    # a second call
#
# Without a CUDA device it runs as --dry-run. Results go to $OUT (the device tool's return folder; a new
# benchmarks/out/gpu-check-* folder where $OUT is unset): summary.json, benchmarks.json, setup.log,
# tests.log, sanitizer.log, bench.log -- six files, under the tool's 8. summary.json and benchmarks.json
# are rewritten after every step, so a check cut short keeps what it measured. The last screen of output
# is the summary.
#
# Steps, in order of the evidence they give (each under its own limit, each run whatever the earlier
# ones did; a step that would start with under 10 s of the budget left is recorded as not run):
#   wheels       install .whl/*.whl into /tmp/site (offline)                                    90 s
#   env          GPU, driver, CUDA, torch, tool versions (nvidia-smi, nvcc, compute-sanitizer)  30 s
#   build        the kernels: -gencode=arch=compute_90a,code=sm_90a + compute_75 PTX (CMake),
#                cuobjdump of what was built, and whether engine.ops loads and probes it       120 s
#   gpu-tests    pytest -m gpu over tests/ops, tests/track, tests/detect: kernel parity (0, 1, 100
#                masks, odd sizes, 1080p), CUDA-graph parity (detector, tracker), the precision
#                policy's 300 frames, the tracker against the official predictor on CUDA        200 s
#   memcheck     compute-sanitizer memcheck over the kernel tests (torch's caching allocator off,
#                so an overrun is an overrun of a real allocation)                               150 s
#   kernels      benchmarks.kernels: each kernel vs its reference, 1/10/100 masks at 1080p,
#                10 repeats                                                                       60 s
#   tracker      benchmarks.tracker vs the eager official predictor: 1024 px, 1/4/10/30 objects,
#                40 frames (8 warm-up), mask IoU                                                 120 s
#   pipeline     benchmarks.pipeline --hd-only: 1080p, 10 tracked objects, 300 frames, prompted and
#                fused                                                                           120 s
#   detector     benchmarks.detector vs Ultralytics predict: 02_cups 1280x720, 1/10/100
#                instances, 8 frames x 3 repeats (2 warm-up passes), torch backend                90 s
#   tracker-vos  benchmarks.tracker vs SAM2VideoPredictor(vos_optimized=True), bf16 autocast:
#                10 objects first, then 1/4/30; 40 frames (10 warm-up); compiling takes minutes,
#                so it comes last but one                                                         330 s
#   racecheck    compute-sanitizer racecheck over the shared-memory kernels (mask IoU, RLE)       90 s
# The dry run uses 128 px trackers, 2 objects, 3-4 frames, 36x64 to 320x180 frames, and 4x the limits
# (a CPU shared with other jobs can run even those far slower than the GPU machine runs the real sizes).
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
BUDGET=""
ONLY=""
ALL_STEPS="wheels env build gpu-tests memcheck kernels tracker pipeline detector tracker-vos racecheck"
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; echo "steps: $ALL_STEPS"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --budget) BUDGET=$2; shift ;;
    --steps) ONLY=",$2,"; shift ;;
    --carry-check) CARRY_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
START=$(date +%s)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
if [ "${CARRY_ONLY:-0}" = 1 ]; then exec "$PY" -m benchmarks.gpu_check carry --root "$ROOT" --carry .whl; fi
if [ $DRY = 0 ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device here: running as --dry-run (every step's plumbing at tiny sizes)"
  DRY=1
fi
BUDGET=${BUDGET:-$([ $DRY = 1 ] && echo 3600 || echo 540)}
DEADLINE=$((START + BUDGET - 15))  # the last 15 s are the summary's
if [ -z "${OUT:-}" ]; then
  OUT=$ROOT/benchmarks/out/gpu-check-$([ $DRY = 1 ] && echo dry-)$(date +%Y%m%d-%H%M%S)
fi
mkdir -p "$OUT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
SITE=/tmp/site
GENCODE="-gencode=arch=compute_90a,code=sm_90a;-gencode=arch=compute_75,code=compute_75"
export ROOT PY DRY OUT SCRATCH SITE GENCODE PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$SCRATCH/yolo \
  STREAMSEG_CACHE=$SCRATCH/cache MPLBACKEND=Agg
if [ $DRY = 1 ]; then
  echo "gpu_check: dry run; outputs in $OUT"
  "$PY" -m benchmarks.gpu_check carry --root "$ROOT" --carry .whl || echo "gpu_check: the call would not fit as it is (see above)"
fi

wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }

# run_step NAME LIMIT LOG FUNCTION: FUNCTION's output goes to $OUT/LOG under a header; its status,
# exit code and time go to steps.tsv, then summary.json and benchmarks.json are rewritten.
run_step() {
  local name=$1 limit=$2 log=$3 fn=$4 note="" status rc=""
  wanted "$name" || return 0
  local left=$((DEADLINE - $(date +%s)))
  [ "$DRY" = 1 ] && limit=$((limit * 4))  # a shared CPU runs even tiny sizes far slower than the GPU machine
  local allowed=$((limit < left ? limit : left))
  local t0
  t0=$(date +%s)
  if [ "$allowed" -lt 10 ]; then
    status=not-run; note="no time left in the ${BUDGET} s budget"
  else
    printf '\n=== %s %s (limit %s s)\n' "$name" "$(date -u +%H:%M:%S)" "$allowed" >> "$OUT/$log"
    timeout --kill-after=10 "$allowed" bash -c "$fn" >> "$OUT/$log" 2>&1
    rc=$?
    case $rc in
      0) status=ok ;;
      3) status=skipped; note=$(grep '^skipped: ' "$OUT/$log" | tail -1 | cut -c10-) ;;
      124|137) status=timeout; note="stopped at its ${allowed} s limit" ;;
      *) status=failed; note="exit code $rc; see $log" ;;
    esac
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$(($(date +%s) - t0))" "$allowed" "$log" \
    "$note" >> "$SCRATCH/steps.tsv"
  echo "gpu_check: $name $status ($(($(date +%s) - t0)) s) $note"
  report
}
report() {
  "$PY" -m benchmarks.gpu_check report --scratch "$SCRATCH" --out "$OUT" --budget "$BUDGET" \
    $([ $DRY = 1 ] && echo --dry-run) "$@"
}
# A step function exits 3 after printing "skipped: REASON" when it cannot apply here (dry run only).
# One process, whatever pyproject's addopts say: the GPU tests share one device (and compute-sanitizer
# watches one process tree), and the device image has no pytest-xdist.
pytest_gpu() { "$PY" -m pytest -o addopts= -p no:xdist -m gpu -p no:cacheprovider --continue-on-collection-errors "$@"; }
sanitize() {  # sanitize TOOL PYTEST-ARGS...: the kernel tests under compute-sanitizer TOOL
  local tool=$1; shift
  if command -v compute-sanitizer >/dev/null; then
    echo "=== $tool"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 86 --print-limit 30 \
      "$PY" -m pytest -o addopts= -p no:xdist -m gpu -p no:cacheprovider -q --timeout 280 "$@"
  elif [ "$DRY" = 1 ]; then
    echo "=== $tool"
    echo "compute-sanitizer not installed (dry run): the same tests, without it"
    "$PY" -m pytest -o addopts= -p no:xdist -m gpu -p no:cacheprovider -q --timeout 280 "$@"
  else
    echo "compute-sanitizer not found on PATH"; exit 1
  fi
}
export -f pytest_gpu sanitize

step_wheels() {
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no .whl/ here: run 'bash ../shared/tools/gpu-wheels.sh' in the repository root and carry .whl"
    [ "$DRY" = 1 ] && { echo "skipped: no .whl/ (dry run)"; exit 3; }
    exit 1
  fi
  ls -l .whl
  if [ "$DRY" = 1 ]; then  # the GPU image's python is 3.12: resolve the wheels for it, install nothing
    "$PY" -m pip install --dry-run --no-index --no-deps --python-version 3.12 --implementation cp \
      --only-binary=:all: --platform manylinux_2_28_x86_64 --target "$SCRATCH/site" .whl/*.whl
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/*.whl && PYTHONPATH=$ROOT:$SITE "$PY" -c \
      "import av, ultralytics, sam2, pycocotools, hydra; print('imports: av', av.__version__, 'ultralytics', ultralytics.__version__)"
  fi
}
step_env() {
  nvidia-smi || echo "nvidia-smi: not available"
  nvcc --version | tail -2; compute-sanitizer --version 2>/dev/null | tail -1; cmake --version | head -1
  "$PY" -m benchmarks.gpu_check env --out "$SCRATCH/env.json" && cat "$SCRATCH/env.json"
}
step_build() {
  command -v cmake >/dev/null || { echo "cmake not found"; exit 1; }
  cmake -S "$ROOT" -B "$SCRATCH/build" -DSTREAMSEG_KERNELS=ON -DCMAKE_BUILD_TYPE=Release \
    "-DSTREAMSEG_CUDA_GENCODE=$GENCODE" || exit 1
  grep -ho -- '-gencode=arch=[a-z_0-9]*,code=[a-z_0-9]*' "$SCRATCH"/build/CMakeFiles/streamseg_kernels.dir/flags.make
  if [ "$DRY" = 1 ]; then echo "dry run: configured, not compiled (the compile line holds the targets above)"; exit 0; fi
  cmake --build "$SCRATCH/build" -j "$(nproc)" || exit 1
  cuobjdump --list-elf --list-ptx "$SCRATCH/build/libstreamseg_kernels.so" || true
  STREAMSEG_KERNELS_LIB=$SCRATCH/build/libstreamseg_kernels.so "$PY" -c \
    "import engine.ops as o; print('ops backend:', o.backend())"
}
step_gpu_tests() {
  pytest_gpu -rA --timeout 240 --junitxml="$SCRATCH/gpu-tests.xml" tests/ops tests/track tests/detect
}
step_memcheck() { sanitize memcheck tests/ops; }
step_racecheck() { sanitize racecheck -k "mask_iou or rle" tests/ops; }
step_kernels() {
  if [ "$DRY" = 1 ]; then set -- --masks 1 --size 36 64 --repeats 2; else set -- --masks 1 10 100 --repeats 10; fi
  "$PY" -m benchmarks.kernels "$@" --out "$SCRATCH/kernels.json"
}
step_tracker() {
  if [ "$DRY" = 1 ]; then set -- --image-size 128 --objects 1 2 --frames 4 --warmup 1
  else set -- --image-size 1024 --objects 1 4 10 30 --frames 40 --warmup 8; fi
  "$PY" -m benchmarks.tracker "$@" --baselines official --skip-memory --out "$SCRATCH/tracker.json"
}
step_tracker_vos() {
  if [ "$DRY" = 1 ]; then set -- --image-size 128 --objects 1 --frames 4 --warmup 1
  else set -- --image-size 1024 --objects 10 1 4 30 --frames 40 --warmup 10; fi
  "$PY" -m benchmarks.tracker "$@" --baselines vos_optimized --skip-memory --out "$SCRATCH/tracker-vos.json"
}
step_pipeline() {
  if [ "$DRY" = 1 ]; then set -- --hd-frames 3 --hd-size 320x180 --hd-objects 2 --hd-warm 1 --tracker-size 128
  else set -- --hd-frames 300 --hd-objects 10; fi
  "$PY" -m benchmarks.pipeline --hd-only "$@" --out "$SCRATCH/pipeline.json"
}
step_detector() {
  if [ "$DRY" = 1 ]; then set -- --instances 1 --frames 1 --repeats 1 --warmup 0 --imgsz 160 --size 320x180
  else set -- --instances 1 10 100 --frames 8 --repeats 3 --warmup 2; fi
  "$PY" -m benchmarks.detector --backends torch --ultralytics torch "$@" --out "$SCRATCH/detector.json"
}
export -f step_wheels step_env step_build step_gpu_tests step_memcheck step_racecheck step_kernels \
  step_tracker step_tracker_vos step_pipeline step_detector

run_step wheels 90 setup.log step_wheels
if [ $DRY = 0 ] && [ -d "$SITE" ]; then export PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}; fi
run_step env 30 setup.log step_env
run_step build 120 setup.log step_build
if [ -f "$SCRATCH/build/libstreamseg_kernels.so" ]; then export STREAMSEG_KERNELS_LIB=$SCRATCH/build/libstreamseg_kernels.so; fi
run_step gpu-tests 200 tests.log step_gpu_tests
run_step memcheck 150 sanitizer.log step_memcheck
run_step kernels 60 bench.log step_kernels
run_step tracker 120 bench.log step_tracker
run_step pipeline 120 bench.log step_pipeline
run_step detector 90 bench.log step_detector
run_step tracker-vos 330 bench.log step_tracker_vos
run_step racecheck 90 sanitizer.log step_racecheck

for log in setup.log tests.log sanitizer.log bench.log; do [ -f "$OUT/$log" ] || echo "(no step of this check wrote here)" > "$OUT/$log"; done
report --final
"$PY" -m benchmarks.gpu_check verify --out "$OUT" $([ $DRY = 1 ] && echo --dry-run)
verified=$?
not_ok=$(awk -F'\t' '$2 != "ok" && $2 != "skipped" {print $1}' "$SCRATCH/steps.tsv" 2>/dev/null | tr '\n' ' ')
echo "outputs: $OUT ($(ls "$OUT" | tr '\n' ' '))"
rm -rf "$SCRATCH"
if [ -n "$not_ok" ]; then echo "gpu_check: not ok: $not_ok"; exit 1; fi
exit $verified
