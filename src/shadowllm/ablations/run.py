"""One ablation grid point end to end (checked before the model loads, masked, scored by lm-eval): the logic that
ablate-point and bench-ablation share."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import io, provenance
from ..layout.grid import SOURCES, Point


@dataclass(frozen=True)
class Evaluation:
    """What lm-eval runs at a point: zero-shot tasks and a perplexity task, their limits, batch size and seed."""
    tasks: tuple[str, ...] = ()
    ppl_task: str | None = None
    include: str | None = None      # folder of task YAMLs (prepare-tasks)
    limit: int | None = None        # questions per zero-shot task
    ppl_limit: int | None = None    # documents of the perplexity task
    batch_size: int = 16
    seed: int = 0

    def check(self, protocol: str) -> Evaluation:
        if not self.tasks and not self.ppl_task:
            raise ValueError(f"tasks {list(self.tasks)} and perplexity task {self.ppl_task!r}: nothing to evaluate")
        if self.ppl_task and protocol == "prompt":
            raise ValueError(f"--ppl-task {self.ppl_task!r} under protocol 'prompt': a perplexity window has no "
                             "prompt (expected sequence or token)")
        return self


def make_point(source: str, criterion: str = "none", normalize: str | None = None, predictor: str | None = None,
               **axes) -> Point:
    """The checked grid point; normalize None means raw where a criterion ranks, none otherwise."""
    spec = SOURCES.get(source)
    norm = normalize or ("raw" if spec and spec.criterion else "none")
    p = Point(source, criterion, normalize=norm, **axes).check()
    if SOURCES[p.source].design != "none" and not predictor:
        raise ValueError(f"source {p.source!r} reads a {p.design!r} predictor file: give --predictor")
    return p


def check_predictor(settings) -> None:
    """The predictor file (sources.Settings.predictor) exists and was made for the point, before any model loads."""
    if not settings.predictor:
        return
    from ..predictors.model import read_meta
    from .sources import check_meta

    if not Path(settings.predictor).is_file():
        raise FileNotFoundError(f"predictor file {settings.predictor!r} does not exist")
    check_meta(read_meta(settings.predictor), settings, settings.predictor)


def load(model: str, dtype: str, device: str, gguf_file: str | None = None):
    """The model for evaluation with SDPA attention (the oracle's criteria take plain first-order gradients)."""
    from ..loading import load_model, resolve_device

    return load_model(model, dtype=dtype, device=resolve_device(device), gguf_file=gguf_file,
                      attn_implementation="sdpa")


def masked_lm(model, tok, settings, batch_size: int):
    """lm-eval's view of the model under the point's masks (settings: sources.Settings)."""
    from ..adapter import get_adapter
    from .lm import make_masked_lm
    from .sources import build

    return make_masked_lm(model, tok, build(get_adapter(model), settings), settings.point.protocol,
                          batch_size=batch_size)


def evaluate_point(model, tok, settings, ev: Evaluation, samples: dict | None = None) -> tuple[dict, float]:
    """{task: {metric: value}} of one point and its seconds; `samples`, when given, is filled with each task's
    per-document results (harness.per_sample)."""
    from ..evaluate import harness

    t0 = time.time()
    lm = masked_lm(model, tok, settings, ev.batch_size)
    res = {}
    for names, limit in (([ev.ppl_task] if ev.ppl_task else [], ev.ppl_limit), (list(ev.tasks), ev.limit)):
        if names:
            res.update(harness.run(lm, names, include_path=ev.include, limit=limit, seed=ev.seed, samples=samples))
    return res, time.time() - t0


def ablate(settings, ev: Evaluation, out, model: str, dtype: str, device: str, gguf_file: str | None = None,
           config: dict | None = None) -> dict:
    """Evaluate one point and write its JSON (point, results, per-document samples) with its provenance."""
    check_predictor(settings)
    lm_model, tok = load(model, dtype, device, gguf_file)
    samples: dict = {}
    res, seconds = evaluate_point(lm_model, tok, settings, ev, samples)
    record = {"point": settings.point.axes(settings.model), "results": res, "seconds": seconds,
              "predictor": settings.predictor, "samples": samples}
    io.write_json(out, record)
    inputs = ([settings.predictor] if settings.predictor else []) + provenance.model_files(model, gguf_file)
    provenance.write_meta(out, config=config or {}, seed=ev.seed, device=str(lm_model.device), inputs=inputs,
                          point=record["point"])
    return record
