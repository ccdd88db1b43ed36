#!/usr/bin/env bash
# One GPU session's measurements, prepared to run at once when a device is lent (issue 17):
#   1. a three-stage `paper` run on the embedded stand-in with its 2,000 image-only extras,
#      resumed on the next call when one call's time is not enough (the run folder stays on a warm machine);
#   2. eval.py on it beside ridge, the mean image and latent-ridge (every voxel, then the model's voxels);
#   3. benchmarks/bench.py for the three presets, with the ensemble-of-4 ratio.
# Everything it prints and the run's JSON files land in $OUT (the device tool brings them back).
#
# Once, on the development machine (the device image lacks tensorboardX; pip there reaches nothing):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl tensorboardX==2.6.5
# Then, through the device tool, with a timeout that leaves room for a second call:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=590)
# Settings (environment): EPOCHS (default 120,120,12: with eval and bench, what one 10-minute call holds
# at the 1.9 s per stage-I epoch measured on an H200; the whole paper schedule is 300,300,30),
# BUDGET_S (default 570: the script's own deadline, inside the call's limit), PRESET (default paper; a smoke
# test on the CPU: PRESET=tiny EPOCHS=1,1,1 BENCH_PRESETS=tiny ENSEMBLE_PRESET=tiny bash benchmarks/gpu_session.sh),
# BENCH_PRESETS (default seed,fast,paper).
set -uo pipefail
if [ $# -gt 0 ]; then
  # It takes no arguments (its settings are environment variables): --help, or anything else, prints the above.
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  [ "$1" = "--help" ] || [ "$1" = "-h" ]; exit $?
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
EPOCHS=${EPOCHS:-120,120,12}
BUDGET_S=${BUDGET_S:-570}
PRESET=${PRESET:-paper}
BENCH_PRESETS=${BENCH_PRESETS:-seed,fast,paper}
RUN=runs/gpu-$PRESET-${EPOCHS//,/-}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/session.log") 2>&1

remaining() { echo $((BUDGET_S - SECONDS)); }

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
python3 - <<'EOF'
import importlib.metadata as m
import jax
print("devices", jax.devices())
print(" ".join(f"{p} {m.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorboardX")))
EOF

resume=()
[ -f "$RUN/config.json" ] && resume=(--resume)
echo "== train: $PRESET, epochs $EPOCHS ${resume[*]} (deadline in $(remaining) s)"
timeout --signal=TERM --kill-after=30 $(( $(remaining) - 150 )) \
    python3 train.py --preset "$PRESET" --epochs "$EPOCHS" --out "$RUN" --no-progress "${resume[@]}"
train_rc=$?
cp "$RUN/run_info.json" "$RUN/metrics.json" "$OUT/" 2>/dev/null
if [ "$train_rc" -ne 0 ]; then
    echo "== train stopped with exit code $train_rc: call this script again to resume $RUN"
fi

if [ "$train_rc" -eq 0 ]; then
    echo "== eval (deadline in $(remaining) s)"
    timeout 120 python3 eval.py --ckpt "$RUN" --baselines ridge,mean,latent-ridge --out "$RUN/eval"
    timeout 90 python3 eval.py --ckpt "$RUN" --baselines ridge,latent-ridge --baseline-voxels selected --out "$RUN/eval-selected"
    cp "$RUN/eval/metrics.json" "$OUT/eval_metrics.json" 2>/dev/null
    cp "$RUN/eval-selected/metrics.json" "$OUT/eval_selected_metrics.json" 2>/dev/null
fi

left=$(( $(remaining) - 10 ))
if [ "$left" -gt 60 ]; then
    echo "== bench (deadline in $(remaining) s)"
    timeout "$left" python3 benchmarks/bench.py --presets "$BENCH_PRESETS" --stages 1,2,3 --epoch-stages all \
        --ensemble 4 --ensemble-preset "${ENSEMBLE_PRESET:-fast}" --loop-epochs 30 --json "$OUT/bench.json"
fi
echo "== done after $SECONDS s"
