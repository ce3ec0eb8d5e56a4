#!/usr/bin/env bash
# Latency grid for ONE H200 (random weights, fp16, batch 1, 128-token random prompt, CUDA graphs, Triton
# fused gathers for the per-token modes), in two parts so that a session can look at the first before
# spending the rest of its device time:
#   PART=A  (~1.5 min) env, GPU self-check + kernel bandwidths, OPT-13B all modes at 50 % (the goals),
#                      DejaVu without its side-stream lookahead.
#   PART=B  (~4-7 min) OPT-1.3B/6.7B/30B all modes at 50 %; sparsity sweep 0-90 % (OPT-30B, as the paper);
#                      generation length 16/160 (OPT-13B); kv_policy=active variant; predictor FLOPs.
# (Figures are drawn afterwards from the CSVs: shadowllm latency-figures.)
#   PART=all           both.      PART=S  the sparsity sweep alone (~2 min).
# Run from the repository root (no install, no snakemake: python3 with torch CUDA + triton):
#     OUT=/some/dir PART=A bash reports/gpu/run_latency_grid.sh
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

BENCH="$PY -m shadowllm.sparse.cli bench-latency --device cuda --dtype float16 --batch 1 --prompt-len 128 --warmup 1"
MODES="dense static shadowllm-prompt shadowllm-token dejavu"

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
    stage check 110 $PY reports/gpu/check_gpu.py --out "$WORK/check.txt"
    stage size-opt-13b 120 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 64 --repeats 5 --modes $MODES \
        --time-budget 110 --out "$WORK/size-opt-13b.csv"
    stage nolookahead 35 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 64 --repeats 5 --modes dejavu \
        --lookahead false --time-budget 30 --out "$WORK/variant-nolookahead-opt-13b.csv"
fi

if [ "$PART" = S ]; then  # the sparsity sweep alone
    stage sparsity 120 $BENCH --model opt-30b --sparsity 0.5 0 0.9 0.3 0.7 0.1 0.8 0.2 0.6 0.4 --gen-tokens 32 \
        --repeats 3 --modes $MODES --time-budget 110 --out "$WORK/sparsity-opt-30b.csv"
fi

if [ "$PART" = B ] || [ "$PART" = all ]; then
    stage size 150 $BENCH --model opt-1.3b opt-30b opt-6.7b --sparsity 0.5 --gen-tokens 64 --repeats 5 \
        --modes $MODES --time-budget 140 --out "$WORK/size.csv"
    # sparsities in an order that spans 0-90 % early, in case the stage is cut short
    stage sparsity 120 $BENCH --model opt-30b --sparsity 0.5 0 0.9 0.3 0.7 0.1 0.8 0.2 0.6 0.4 --gen-tokens 32 \
        --repeats 3 --modes $MODES --time-budget 110 --out "$WORK/sparsity-opt-30b.csv"
    stage genlen 50 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 16 160 --repeats 3 --modes $MODES \
        --time-budget 45 --out "$WORK/genlen-opt-13b.csv"
    stage kvactive 30 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 64 --repeats 5 \
        --modes shadowllm-token dejavu --kv-policy active --time-budget 25 --out "$WORK/variant-kvactive-opt-13b.csv"
    $PY -m shadowllm.sparse.cli predictor-flops --out "$WORK/predictor_flops.csv" > "$WORK/predictor_flops.log" 2>&1
    pack
fi
log "done"
