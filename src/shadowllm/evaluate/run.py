"""One evaluation run, dense or under a static mask file, written with its grid point (evaluate-model)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import io, provenance


def evaluate_model(model: str, tasks: list[str], out, model_name: str | None = None, mask: str | None = None,
                   include: str | None = None, limit: int | None = None, batch_size: int = 16,
                   max_length: int | None = None, seed: int = 0, dtype: str = "float32", device: str = "auto",
                   gguf_file: str | None = None, config: dict | None = None) -> dict:
    """lm-eval's numbers of `tasks` for the model (under the mask file's static mask, if any); the result JSON
    records the mask's grid point, so the tables need no file names."""
    from ..adapter import get_adapter
    from ..loading import load_model, resolve_device
    from ..masks import Mask, MaskHooks, StaticMask
    from . import harness
    from .tables import AXES, DENSE_POINT

    m = Mask.load(mask) if mask else None  # a missing file fails before the model loads
    lm_model, tok = load_model(model, dtype=dtype, device=resolve_device(device), gguf_file=gguf_file)
    hooks = None
    point = dict(DENSE_POINT)
    achieved = {"heads": 0.0, "neurons": 0.0}
    if m is not None:
        ad = get_adapter(lm_model)
        m.check(ad)
        achieved = m.sparsity()
        missing = [a for a in AXES if a != "model" and a not in m.meta]
        if missing:
            raise ValueError(f"mask file {mask!r} does not record its grid point (missing {missing}); "
                             f"remake it with `shadowllm make-mask`")
        point = {a: m.meta[a] for a in AXES if a != "model"}
        point["placement"], point["sparsity"] = int(point["placement"]), float(point["sparsity"])
        hooks = MaskHooks(ad, StaticMask(m)).attach()
    point = {"model": model_name or model, **point}
    t0 = time.time()
    try:
        lm = harness.make_lm(lm_model, tok, batch_size=batch_size, max_len=max_length)
        res = harness.run(lm, tasks, include_path=include, limit=limit, seed=seed)
    finally:
        if hooks:
            hooks.remove()
    record = {"model": model, "mask": mask, "point": point, "sparsity": point["sparsity"],
              "achieved_sparsity": achieved, "results": res, "seconds": time.time() - t0}
    io.write_json(out, record)
    provenance.write_meta(out, config=config or {}, seed=seed, device=str(lm_model.device),
                          inputs=([mask] if mask else []) + provenance.model_files(model, gguf_file))
    return record


def report_eval(table, out, model: str, train=None) -> str:
    """The Markdown report of an evaluation table (with the trained model's metrics JSON, if given), written."""
    import pandas as pd

    from .tables import report_markdown

    text = report_markdown(pd.read_csv(table), model, json.loads(Path(train).read_text()) if train else None)
    io.write_text(out, text)
    provenance.write_meta(out, config={"command": "report-eval", "model": model},
                          inputs=[table] + ([train] if train else []))
    return text
