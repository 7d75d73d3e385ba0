#!/usr/bin/env bash
# The GPU check on the device machine (see benchmarks/gpu_check.py for what it measures and for the one-time
# download of the wheels into .whl/). With the `run` tool: command "bash benchmarks/gpu_check.sh",
# carry [".whl"], timeout_s 540. Installs the wheels with the device README's recipe (never touching torch),
# then runs the check; results go to $OUT (gpu_check.json, gpu_check.md, gpu_check.log, profiles).
set -u
cd "$(dirname "$0")/.." || exit
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
python3 -c "import pyarrow; print('image pyarrow', pyarrow.__version__)" || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
export PYTHONPATH="$PWD/src:$PYTHONPATH" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
