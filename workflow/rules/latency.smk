# Latency of sliced (contextually sparse) decoding: dense vs static vs ShadowLLM vs DejaVu-style,
# random-weight OPT shapes (paper Fig. 11 and the predictor-FLOPs table).
#
# config["latency"] (every key optional; the defaults below are a small CPU grid, ~3 min on 2 idle cores):
#   device: cpu | cuda        sizes: [opt-125m, opt-1.3b_L4, ...]   ('_L<k>' = first k layers of that shape)
#   sparsities: [0.0, 0.5, 0.9]   gen_tokens: [8, 16]   modes: [dense, static, shadowllm-prompt, ...]
#   batch: 1   prompt_len: 16   repeats: 3   (optional: dtype, warmup, size_sparsity, kv_policy)
# Outputs:
#   results/latency/size-{size}.csv      every size, sparsity `size_sparsity`, longest generation
#   results/latency/sparsity-{size}.csv  largest size, every sparsity, longest generation
#   results/latency/genlen-{size}.csv    largest size, sparsity `size_sparsity`, every generation length
#   figures/latency_vs_{size,sparsity,genlen}.png, reports/predictor_flops.csv
# A GPU grid for one H200 is reports/gpu/run_latency_grid.sh (no snakemake there).

_LAT_DEFAULTS = {
    "device": "cpu",
    "sizes": ["opt-125m_L6", "opt-1.3b_L4"],
    "sparsities": [0.0, 0.5, 0.9],
    "gen_tokens": [8, 16],
    "modes": ["dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu"],
    "batch": 1,
    "prompt_len": 16,
    "repeats": 3,
    "warmup": 1,
    "size_sparsity": 0.5,
    "kv_policy": "full",
}
LAT = {**_LAT_DEFAULTS, **config.get("latency", {})}
LAT_DEVICE = LAT["device"]
LAT_DTYPE = LAT.get("dtype") or ("float16" if str(LAT_DEVICE).startswith("cuda") else "float32")
LAT_SIZES = [str(s).replace(":", "_") for s in LAT["sizes"]]
LAT_BIG = LAT_SIZES[-1]  # the sweeps over sparsity and generation length use the last (largest) size
LAT_GPU = 1 if str(LAT_DEVICE).startswith("cuda") else 0


def _lat_size_gb(size):
    """Resident bytes of a random-weight model of that size (weights + sliced copies), in GB."""
    from shadowllm.sparse.shapes import parse_size

    s = parse_size(size)
    es = 2 if LAT_DTYPE in ("float16", "bfloat16") else 4
    return s.params_b * es * 2.2  # full weights + static and prompt slices + workspace


def _lat_mem_mb(sizes):
    return int(1500 + 1000 * max(_lat_size_gb(s) for s in sizes)) if not LAT_GPU else 8000


def _lat_flags():
    return (f"--device {LAT_DEVICE} --dtype {LAT_DTYPE} --batch {LAT['batch']} --prompt-len {LAT['prompt_len']} "
            f"--repeats {LAT['repeats']} --warmup {LAT['warmup']} --kv-policy {LAT['kv_policy']} "
            f"--modes {' '.join(LAT['modes'])} --seed {SEED}"
            + (f" --threads {THREADS}" if not LAT_GPU else ""))


def _lat_runtime(sizes):
    n = len(LAT["modes"]) * max(len(LAT["sparsities"]), 1) * max(len(LAT["gen_tokens"]), 1)
    return 10 + 2 * n * max(1.0, max(_lat_size_gb(s) for s in sizes))


wildcard_constraints:
    lat_size="[A-Za-z0-9_.-]+",


def _lat_csvs():
    out = [f"results/latency/size-{s}.csv" for s in LAT_SIZES]
    out += [f"results/latency/sparsity-{LAT_BIG}.csv", f"results/latency/genlen-{LAT_BIG}.csv"]
    return out


rule latency_all:
    input:
        _lat_csvs(),
        expand("figures/latency_vs_{kind}.png", kind=["size", "sparsity", "genlen"]),
        f"reports/latency_{LAT_DEVICE}.csv",
        "reports/predictor_flops.csv",


rule latency_size:
    """One model size, all modes, at sparsity `size_sparsity`, longest generation."""
    output:
        "results/latency/size-{lat_size}.csv",
    conda:
        CONDA_ENV
    log:
        "logs/latency/size-{lat_size}.log",
    benchmark:
        "benchmarks/latency/size-{lat_size}.tsv"
    params:
        flags=_lat_flags(),
        sparsity=LAT["size_sparsity"],
        gen=max(LAT["gen_tokens"]),
    threads: 1 if LAT_GPU else THREADS
    resources:
        mem_mb=mem_mb_for(_lat_mem_mb(LAT_SIZES)),
        runtime=runtime_for(_lat_runtime(LAT_SIZES)),
        gpu=LAT_GPU,
    shell:
        "shadowllm bench-latency --model {wildcards.lat_size} --sparsity {params.sparsity} "
        "--gen-tokens {params.gen} {params.flags} --out {output} > {log} 2>&1"


rule latency_sparsity:
    """The largest size, every sparsity in the config, longest generation."""
    output:
        "results/latency/sparsity-{lat_size}.csv",
    conda:
        CONDA_ENV
    log:
        "logs/latency/sparsity-{lat_size}.log",
    benchmark:
        "benchmarks/latency/sparsity-{lat_size}.tsv"
    params:
        flags=_lat_flags(),
        sparsities=" ".join(str(s) for s in LAT["sparsities"]),
        gen=max(LAT["gen_tokens"]),
    threads: 1 if LAT_GPU else THREADS
    resources:
        mem_mb=mem_mb_for(_lat_mem_mb([LAT_BIG])),
        runtime=runtime_for(_lat_runtime([LAT_BIG])),
        gpu=LAT_GPU,
    shell:
        "shadowllm bench-latency --model {wildcards.lat_size} --sparsity {params.sparsities} "
        "--gen-tokens {params.gen} {params.flags} --out {output} > {log} 2>&1"


rule latency_genlen:
    """The largest size at sparsity `size_sparsity`, every generation length in the config."""
    output:
        "results/latency/genlen-{lat_size}.csv",
    conda:
        CONDA_ENV
    log:
        "logs/latency/genlen-{lat_size}.log",
    benchmark:
        "benchmarks/latency/genlen-{lat_size}.tsv"
    params:
        flags=_lat_flags(),
        sparsity=LAT["size_sparsity"],
        gens=" ".join(str(g) for g in LAT["gen_tokens"]),
    threads: 1 if LAT_GPU else THREADS
    resources:
        mem_mb=mem_mb_for(_lat_mem_mb([LAT_BIG])),
        runtime=runtime_for(_lat_runtime([LAT_BIG])),
        gpu=LAT_GPU,
    shell:
        "shadowllm bench-latency --model {wildcards.lat_size} --sparsity {params.sparsity} "
        "--gen-tokens {params.gens} {params.flags} --out {output} > {log} 2>&1"


rule latency_figures:
    input:
        _lat_csvs(),
    output:
        figures=expand("figures/latency_vs_{kind}.png", kind=["size", "sparsity", "genlen"]),
        table=f"reports/latency_{LAT_DEVICE}.csv",
    conda:
        CONDA_ENV
    log:
        "logs/latency/figures.log",
    benchmark:
        "benchmarks/latency/figures.tsv"
    params:
        sparsity=LAT["size_sparsity"],
    resources:
        mem_mb=mem_mb_for(1000),
        runtime=runtime_for(5),
    shell:
        "shadowllm latency-figures --csv {input} --outdir figures --sparsity {params.sparsity} --format png "
        "--table {output.table} > {log} 2>&1"


rule predictor_flops:
    """Paper's predictor-cost table: DejaVu N(E*p + p(H+F)) vs ShadowLLM E*p + p*N(H+F), p = 1024."""
    output:
        "reports/predictor_flops.csv",
    conda:
        CONDA_ENV
    log:
        "logs/latency/predictor_flops.log",
    benchmark:
        "benchmarks/latency/predictor_flops.tsv"
    resources:
        mem_mb=mem_mb_for(500),
        runtime=runtime_for(2),
    shell:
        "shadowllm predictor-flops --p 1024 --out {output} > {log} 2>&1"
