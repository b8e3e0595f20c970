#!/usr/bin/env bash
# kdlib's GPU checks in one run, for a machine with a CUDA build of torch (nothing installed:
# kdlib is imported from this checkout).
#
#     bash benchmarks/gpu_checks.sh [OUT_DIR]          # OUT_DIR default: $OUT, else gpu-checks
#     PROBE=path/to/gpu_probe.py bash benchmarks/gpu_checks.sh   # also run a one-shot probe
#
# 1. `pytest -m cuda`: train, distill and distill_stacked in bf16 with channels_last, every
#    step under torch.cuda.set_sync_debug_mode("error") (tests/test_engine_cuda.py).
# 2. benchmarks/bench_sweep.py on CUDA: 22 resnet14 students from a resnet56, student-images/s
#    one at a time and per stacking representation, syncs per step, activation dtypes, and
#    the projected GPU-hours of the paper's Table 6 protocol (its last line is JSON).
# 3. $PROBE, when set (a script that prints its own figures).
# Each step's output goes to OUT_DIR/<step>.log; the last lines say which steps passed.
# Without CUDA it stops at once with exit code 2. Budget: a few minutes on one H100/H200.
set -u
out=${1:-${OUT:-gpu-checks}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_checks: $py has no torch that sees a CUDA device; nothing to check here" >&2
    exit 2
fi
"$py" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
status=()
run_step() {  # name, command...
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    status+=("$name: rc=$rc in $((SECONDS - t0)) s")
}
run_step pytest_cuda "$py" -m pytest -q -m cuda -p no:cacheprovider tests
run_step bench_sweep "$py" benchmarks/bench_sweep.py --device cuda --k 22 --steps 20 --warmup 5
if [ -n "${PROBE:-}" ]; then
    run_step probe "$py" "$PROBE"
fi
printf '%s\n' "${status[@]}"
