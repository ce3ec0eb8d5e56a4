rule importance_traces:
    """Per-example importance of every head and neuron under every criterion, from one pass (one task, one k)."""
    input:
        model=model_input,
        datasets=datasets_input,
    output:
        inputs=f"{R}/importance/{{model}}/{{task}}/k{{k}}/inputs.safetensors",
        traces=expand(f"{R}/importance/{{{{model}}}}/{{{{task}}}}/k{{{{k}}}}/{{crit}}.safetensors",
                      crit=imp_criteria()),
        # the per-token predictor inputs exist only with importance.sequence_inputs
        **({"sequence": f"{R}/importance/{{model}}/{{task}}/k{{k}}/sequence_inputs.safetensors"}
           if IMP and IMP["sequence_inputs"] else {}),
    params:
        offline=OFFLINE_ENV,
        flags=model_flags,
        out=lambda wc, output: os.path.dirname(output.inputs),
        criteria=",".join(imp_criteria()),
        max_examples=IMP["max_examples"] if IMP else 0,
        batch_size=IMP["batch_size"] if IMP else 0,
        placement=",".join(str(p) for p in IMP["placement_layers"]) if IMP else "0",
        neuron_traces=imp_neuron_traces() if IMP else "all",
        layer_inputs="--layer-inputs" if IMP and IMP["layer_inputs"] else "--no-layer-inputs",
        sequence_inputs="--sequence-inputs" if IMP and IMP["sequence_inputs"] else "--no-sequence-inputs",
        grasp_hvp=IMP["grasp_hvp"] if IMP else "finite_difference",
        dtype=IMP["dtype"] if IMP else "float32",
        seed=IMP["seed"] if IMP else 0,
    conda:
        CONDA_ENV
    log:
        f"{L}/importance/{{model}}/{{task}}/k{{k}}.log",
    benchmark:
        f"{B}/importance/{{model}}/{{task}}/k{{k}}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb_for(4000, 3000),
        runtime=runtime_for(20, 30),
        gpu=model_gpus,
    shell:
        "{params.offline} shadowllm trace-importance {params.flags} --dtype {params.dtype} --threads {threads} "
        "--model-name {wildcards.model} --task {wildcards.task} --k {wildcards.k} --criteria {params.criteria} "
        "--out {params.out} --max-examples {params.max_examples} --batch-size {params.batch_size} "
        "--placement-layers {params.placement} {params.layer_inputs} {params.sequence_inputs} "
        "--neuron-traces {params.neuron_traces} --grasp-hvp {params.grasp_hvp} --seed {params.seed} "
        "> {log} 2>&1"


rule input_dependence:
    """Variance of each head's importance rank across inputs (the statistics behind Figure 2)."""
    input:
        dependence_traces,
    output:
        f"{R}/importance/{{model}}/input_dependence.csv",
    params:
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/importance/{{model}}/input_dependence.log",
    benchmark:
        f"{B}/importance/{{model}}/input_dependence.tsv"
    resources:
        mem_mb=mem_mb_for(2000, 0),
        runtime=runtime_for(10, 0),
        gpu=0,
    shell:
        "shadowllm measure-dependence --traces {input} --out-csv {output} --seed {params.seed} > {log} 2>&1"
