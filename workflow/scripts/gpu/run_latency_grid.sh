#!/usr/bin/env bash
# Latency grid for ONE H200 (random weights, fp16, batch 1, 128-token random prompt, CUDA graphs, Triton
# fused gathers for the per-token modes), in two parts so that a session can look at the first before
# spending the rest of its device time:
#   PART=A  (~1.5 min) env, GPU self-check + kernel bandwidths, OPT-13B all modes at 50 % (the goals),
#                      DejaVu without its side-stream lookahead.
#   PART=B  (~4-7 min) OPT-1.3B/6.7B/30B all modes at 50 %; sparsity sweep 0-90 % (OPT-30B, as the paper);
#                      generation length 16/160 (OPT-13B); kv_policy=active variant; predictor FLOPs.
# The benches themselves are config/gpu-h200.yaml's (`--config ... --bench NAME`), the same definitions that
# `snakemake --configfile config/gpu-h200.yaml --cores 1 latency_bench` runs where snakemake is installed.
# (Figures are drawn afterwards from the CSVs: shadowllm plot-latency.)
#   PART=all           both.      PART=S  the sparsity sweep alone (~2 min).
# Run from the repository root (no install, no snakemake: python3 with torch CUDA + triton):
#     OUT=/some/dir PART=A bash workflow/scripts/gpu/run_latency_grid.sh
# Everything goes to $WORK (default /tmp/shadowllm-gpu) and is packed after every stage into
# $OUT/gpu-part$PART.tar.gz (one file: the device tool returns at most 8); $OUT/run-$PART.log is the summary.
# Each CSV is rewritten after every row, so a stage cut short by its timeout keeps what it finished.
set -uo pipefail
PART=${PART:-all}
OUT=${OUT:-results/latency/gpu}
WORK=${WORK:-/tmp/shadowllm-gpu}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$(date +%s)
LOG="$OUT/run-$PART.log"
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
pack() { tar czf "/tmp/gpu-part$PART.tar.gz" -C "$WORK" . && mv "/tmp/gpu-part$PART.tar.gz" "$OUT/"; }

CONFIG=${CONFIG:-config/gpu-h200.yaml}
bench() {  # bench NAME: one bench of $CONFIG into $WORK/NAME.csv
    echo $PY -m shadowllm.sparse.cli bench-latency --config "$CONFIG" --bench "$1" --out "$WORK/$1.csv"
}

stage() {  # stage NAME TIMEOUT_S ARGS...
    local name=$1 tmo=$2; shift 2
    log "stage $name (timeout ${tmo}s)"
    timeout -s INT -k 10 "$tmo" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    log "stage $name rc=$rc"
    grep -E "^\[bench\]|PASS|FAIL|BENCH|TUNED|rror" "$WORK/$name.log" | tail -n 60 | tee -a "$LOG"
    pack
}

if [ "$PART" = A ] || [ "$PART" = all ]; then
    nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1 || true
    $PY - > "$WORK/env.txt" 2>&1 <<'PYEOF'
import torch, sys
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton missing:", e)
PYEOF
    cat "$WORK/env.txt" | tee -a "$LOG"
    stage check 110 $PY workflow/scripts/gpu/check_gpu.py --out "$WORK/check.txt"
    stage size-opt-13b 120 $(bench size-opt-13b)
    stage nolookahead 35 $(bench variant-nolookahead-opt-13b)
fi

if [ "$PART" = S ]; then  # the sparsity sweep alone
    stage sparsity 120 $(bench sparsity-opt-30b)
fi

if [ "$PART" = B ] || [ "$PART" = all ]; then
    stage size 150 $(bench size)
    stage sparsity 120 $(bench sparsity-opt-30b)
    stage genlen 50 $(bench genlen-opt-13b)
    stage kvactive 30 $(bench variant-kvactive-opt-13b)
    $PY -m shadowllm.sparse.cli measure-predictor-flops --out "$WORK/predictor_flops.csv" > "$WORK/predictor_flops.log" 2>&1
    pack
fi
log "done"
