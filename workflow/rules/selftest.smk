# Self-test jobs for the cluster profiles (tests/test_slurm.py). Never part of `all`: run them by naming a
# target, e.g.
#   snakemake --profile slurm selftest            # cpu + gpu + retry checks
#   snakemake --profile slurm selftest_fail       # must fail (error reporting check)
# Outputs go to results/selftest/, logs to logs/selftest/.

SELFTEST_DIR = "results/selftest"
SELFTEST_LOG = "logs/selftest"
SELFTEST_ENV = (
    "(echo SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}; "
    "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-none}}; "
    "echo python=$(command -v python); echo shadowllm=$(command -v shadowllm)) > {output} 2> {log}"
)


rule selftest:
    input:
        f"{SELFTEST_DIR}/cpu.txt",
        f"{SELFTEST_DIR}/gpu.txt",
        f"{SELFTEST_DIR}/retry_ok.txt",


rule selftest_cpu:
    output:
        f"{SELFTEST_DIR}/cpu.txt",
    conda:
        CONDA_ENV
    log:
        f"{SELFTEST_LOG}/cpu.log",
    resources:
        mem_mb=selftest_mem(500),
        runtime=5,
        gpu=0,
    shell:
        SELFTEST_ENV


rule selftest_gpu:
    output:
        f"{SELFTEST_DIR}/gpu.txt",
    conda:
        CONDA_ENV
    log:
        f"{SELFTEST_LOG}/gpu.log",
    resources:
        mem_mb=selftest_mem(500),
        runtime=5,
        gpu=1,
    shell:
        SELFTEST_ENV


rule selftest_retry:
    # Fails on attempt 1 and succeeds on attempt 2 (needs `retries` >= 1): the attempt is read back from
    # the memory request, which grows with the attempt, so a retried job must have been given more memory.
    output:
        f"{SELFTEST_DIR}/retry_ok.txt",
    params:
        base_mb=500,
    conda:
        CONDA_ENV
    log:
        f"{SELFTEST_LOG}/retry.log",
    resources:
        mem_mb=selftest_mem(500),
        runtime=5,
        gpu=0,
    shell:
        "attempt=$(( {resources.mem_mb} / {params.base_mb} )); "
        "echo \"attempt $attempt, mem_mb={resources.mem_mb}, SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}\" >> {log}; "
        "if [ $attempt -lt 2 ]; then echo 'selftest_retry: failing on purpose on attempt 1' >> {log}; exit 3; fi; "
        "echo \"ok on attempt $attempt, mem_mb={resources.mem_mb}, SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}\" > {output}"


rule selftest_fail:
    # Always fails; only runs when named as a target.
    output:
        f"{SELFTEST_DIR}/never.txt",
    conda:
        CONDA_ENV
    log:
        f"{SELFTEST_LOG}/fail.log",
    resources:
        mem_mb=500,
        runtime=5,
        gpu=0,
    shell:
        "echo \"selftest_fail: failing on purpose, SLURM_JOB_ID=${{SLURM_JOB_ID:-none}}\" > {log}; exit 7"
