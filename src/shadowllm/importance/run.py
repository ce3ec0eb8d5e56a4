"""Trace collection for one model, task and k, and the input-dependence statistics of a set of traces."""
from __future__ import annotations

import sys
import time
from pathlib import Path


def trace_importance(model: str, task: str, k: int, out, criteria, model_name: str | None = None,
                     include: str | None = None, max_examples: int = 500, batch_size: int = 8,
                     placement_layers=(0,), layer_inputs: bool = True, sequence_inputs: bool = False,
                     grasp_hvp: str = "finite_difference", neuron_traces="all", seed: int = 0,
                     max_length: int = 2048, dtype: str = "float32", device: str = "auto",
                     gguf_file: str | None = None, config: dict | None = None) -> list[Path]:
    """Score every example of the task's calibration split under each criterion and write the trace files."""
    from ..loading import load_model, resolve_device
    from ..provenance import model_files
    from .collect import collect, task_examples
    from .criteria import get_criteria
    from .traces import write_traces

    crits = [c.name for c in get_criteria(criteria)]          # fail fast on a bad name
    device = resolve_device(device)
    lm_model, tok = load_model(model, dtype=dtype, device=device, gguf_file=gguf_file)
    max_len = min(max_length, getattr(lm_model.config, "max_position_embeddings", max_length))
    exs = task_examples(task, k, tok, seed=seed, max_examples=max_examples, max_length=max_len, include=include)
    t0 = time.time()

    def progress(done, total):
        print(f"[importance] {task} k={k}: {done}/{total} examples, {time.time() - t0:.1f}s",
              file=sys.stderr, flush=True)

    col = collect(lm_model, exs, crits, batch_size=batch_size, placement_layers=placement_layers,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0, progress=progress,
                  layer_inputs=layer_inputs, grasp_hvp=grasp_hvp, sequence_inputs=sequence_inputs)
    return write_traces(out, col, model=model_name or model, task=task, k=k, seed=seed, neuron_traces=neuron_traces,
                        config=config, device=device, inputs=model_files(model, gguf_file))


def measure_dependence(traces, out_csv, seed: int = 0) -> dict:
    """Rank variance of head importance across the examples of criterion trace files (concatenated): the CSV of
    Figure 2; returns its summary numbers."""
    import numpy as np

    from .dependence import input_dependence
    from .traces import load_scores

    scores = np.concatenate([load_scores(p, "heads").numpy() for p in traces], axis=0)
    return input_dependence(scores, out_csv, seed=seed, meta_config={"traces": [str(p) for p in traces]},
                            inputs=traces)
