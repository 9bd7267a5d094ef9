#!/usr/bin/env bash
# GPU check of kdekit on a bare CUDA machine without network access (README "GPU check"):
#   1. installs the pure-Python test oracles from wheels carried in $WHEELS (KDE-diffusion, lightkde, torch-dct), if any;
#   2. builds kdekit._C with its CUDA kernels against the machine's torch (pip install --no-build-isolation -e .);
#   3. runs every GPU test: pytest -m gpu (CUDA kernels vs CPU kernels and float64 references, every op and dtype,
#      Triton compiled for the device);
#   4. times W1-W6 side by side with CUDA events (python -m bench --device cuda --quick) and profiles W1/W2 (python -m bench.profile);
#   5. optionally (GPU_CHECK_CPU_SUITE=1) the rest of tests/kdekit on the same machine (Triton interpreted, as in CI).
# Logs (setup, build, tests), the results table and the built kdekit._C go to $OUT (default ./gpu_out); the summary is
# printed last. GPU_CHECK_PREBUILT=path/to/_C*.so reuses a build of the same sources instead of building.
# Without a CUDA device it stops at once with exit status 2 and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-.whl}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
rm -f "$OUT"/*.log "$OUT"/*.md "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
stage() {  # stage NAME LIMIT_S LOG COMMAND...: run with a time limit, record status and duration
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS
  echo "== $name: $*" >> "$log"
  timeout "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  say "$(printf '%-12s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$log" | cut -c1-150)")"
  return $rc
}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device: torch.cuda.is_available() is False for $PY (or torch is missing); nothing checked" >&2
  exit 2
fi

export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
{
  date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c 'import torch, triton, platform; print("python", platform.python_version(), "| torch", torch.__version__,
"| CUDA", torch.version.cuda, "| triton", triton.__version__, "|", torch.cuda.get_device_name())'
  nvcc --version | tail -n 2 | head -n 1
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS CUDA_HOME=${CUDA_HOME:-unset}"
} 2>&1 | tee -a "$SUMMARY"

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  stage oracles 120 "$OUT/setup.log" "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/kdekit-oracles "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/kdekit-oracles${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ -n "${GPU_CHECK_PREBUILT:-}" ]; then  # a kdekit._C built by an earlier run from the same csrc/ (saves the build)
  cp "$GPU_CHECK_PREBUILT" kdekit/ && say "build        skipped: using $GPU_CHECK_PREBUILT"
else
  stage build 420 "$OUT/build.log" "$PY" -m pip install -v --no-build-isolation --no-deps --no-index -e . || {
    say "build failed: see build.log"; exit 1; }
  cp kdekit/_C*.so "$OUT"/ 2>/dev/null
fi
stage backends 60 "$OUT/setup.log" "$PY" -c 'import kdekit; r = kdekit.backends(); print(r)
assert r["cuda"][0] and r["triton"][0], "CUDA or Triton backend unavailable"; print("cuda and triton backends available")' \
  || { tail -n 20 "$OUT/setup.log"; exit 1; }

XDIST=()
"$PY" -c 'import xdist' 2>/dev/null && XDIST=(-n "${GPU_CHECK_WORKERS:-8}")
stage gpu-tests 300 "$OUT/gpu_tests.log" "$PY" -m pytest -m gpu tests/kdekit -p no:cacheprovider -q -rfE "${XDIST[@]}"
stage bench 300 "$OUT/bench.md" "$PY" -m bench --device cuda --quick --no-record
stage profile 120 "$OUT/profile.md" "$PY" -m bench.profile --device cuda
if [ "${GPU_CHECK_CPU_SUITE:-0}" = 1 ]; then  # the rest of the suite (Triton interpreted, as in CI)
  stage cpu-tests 300 "$OUT/cpu_tests.log" env TRITON_INTERPRET=1 "$PY" -m pytest -m "not gpu" tests/kdekit \
    -p no:cacheprovider -q -rfE "${XDIST[@]}"
fi
echo "== summary"
cat "$SUMMARY"
