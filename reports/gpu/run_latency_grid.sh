#!/usr/bin/env bash
# One-shot latency grid for ONE H200 (about 7 minutes; random weights, fp16, batch 1, 128-token prompt,
# CUDA graphs, Triton fused gather kernels for the per-token modes).
#
# Run from the repository root (no install, no snakemake needed; python 3.12 + torch CUDA + triton):
#     OUT=/some/dir bash reports/gpu/run_latency_grid.sh
# Writes into $OUT:
#   env.txt, nvidia-smi.txt       versions, GPU
#   check.txt                     correctness self-check (kernels; CUDA vs CPU logits; graph vs eager)
#   size.csv                      OPT-1.3B/6.7B/13B/30B shapes, all modes, 50%, 64 generated tokens
#   sparsity-opt-30b.csv          OPT-30B shape, sparsity 0..90 %, 32 generated tokens
#   genlen-opt-13b.csv            OPT-13B shape, 50 %, 16/64/160 generated tokens
#   variant-*.csv                 13B: kv_policy=active; DejaVu without the side-stream lookahead
#   predictor_flops.csv, figures/*.png, *.log
# Each CSV is rewritten after every row, so a stage cut short by its timeout keeps what it finished.
# The per-stage timeouts below sum to ~7 min; lower them (or drop stages) if device time is short.
set -uo pipefail
OUT=${OUT:-results/latency/gpu}
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/run.log"; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
$PY - > "$OUT/env.txt" 2>&1 <<'EOF'
import torch, sys
print("python", sys.version)
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton missing:", e)
EOF
cat "$OUT/env.txt" | tee -a "$OUT/run.log"

BENCH="$PY -m shadowllm.sparse.cli bench-latency --device cuda --dtype float16 --batch 1 --prompt-len 128 --warmup 1"
MODES="dense static shadowllm-prompt shadowllm-token dejavu"

stage() {  # stage NAME TIMEOUT_S ARGS...
    local name=$1 tmo=$2; shift 2
    log "stage $name (timeout ${tmo}s)"
    timeout -s INT "$tmo" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    log "stage $name rc=$rc"; tail -n 40 "$OUT/$name.log" | grep -E "^\[bench\]|PASS|FAIL|rror" | tee -a "$OUT/run.log"
}

stage check 75 $PY reports/gpu/check_gpu.py --out "$OUT/check.txt"
stage size 110 $BENCH --model opt-1.3b opt-6.7b opt-13b opt-30b --sparsity 0.5 --gen-tokens 64 --repeats 5 \
    --modes $MODES --time-budget 95 --out "$OUT/size.csv"
# sparsities in an order that spans 0-90 % early, in case the stage is cut short
stage sparsity 120 $BENCH --model opt-30b --sparsity 0.5 0 0.9 0.3 0.7 0.1 0.8 0.2 0.6 0.4 --gen-tokens 32 \
    --repeats 3 --modes $MODES --time-budget 105 --out "$OUT/sparsity-opt-30b.csv"
stage genlen 60 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 16 64 160 --repeats 3 --modes $MODES \
    --time-budget 50 --out "$OUT/genlen-opt-13b.csv"
stage kvactive 25 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 64 --repeats 3 \
    --modes shadowllm-token dejavu --kv-policy active --time-budget 20 --out "$OUT/variant-kvactive-opt-13b.csv"
stage nolookahead 20 $BENCH --model opt-13b --sparsity 0.5 --gen-tokens 64 --repeats 3 --modes dejavu \
    --lookahead false --time-budget 15 --out "$OUT/variant-nolookahead-opt-13b.csv"

$PY -m shadowllm.sparse.cli predictor-flops --out "$OUT/predictor_flops.csv" > "$OUT/predictor_flops.log" 2>&1
CSVS=$(ls "$OUT"/size.csv "$OUT"/sparsity-*.csv "$OUT"/genlen-*.csv 2>/dev/null)
if [ -n "$CSVS" ]; then
    $PY -m shadowllm.sparse.cli latency-figures --csv $CSVS --outdir "$OUT/figures" --format png \
        > "$OUT/figures.log" 2>&1 || log "figures failed (see figures.log)"
fi
log "done"
