"""Trace files: per (model, task, k) one `inputs.safetensors` and one `<criterion>.safetensors`
(+ `sequence_inputs.safetensors` with the per-token predictor inputs, when collected).

See FORMAT.md. Per-example scores are stored as float16 after an affine map per (example, layer)
onto [0, 1] (lo / hi kept in float32), so every criterion fits float16 whatever its range
(fisher ~1e-10, jacov ~-1e6) and the order of units within a layer is kept. `load_scores`
undoes the map. Static (aggregate) scores are the float32 mean of the raw scores over examples.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..io import atomic_path
from ..provenance import write_meta
from .collect import Collected
from .criteria import CRITERIA, is_finite_or_raise

FORMAT_VERSION = 2  # 2: predictor_input.{l} (input of attn_out) replaces attn_out.{l} (its output)
INPUTS_FILE = "inputs.safetensors"
SEQUENCE_FILE = "sequence_inputs.safetensors"  # optional; a new file, so FORMAT_VERSION did not change
FLOAT16_MAX = 65504


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def quantize(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """s [N, L, U] -> (q float16 in [0, 1], lo [N, L] float32, hi [N, L] float32)."""
    s = s.double()
    lo, hi = s.amin(-1), s.amax(-1)
    span = (hi - lo)
    q = (s - lo[..., None]) / torch.where(span > 0, span, torch.ones_like(span))[..., None]
    return q.clamp(0, 1).to(torch.float16), lo.float(), hi.float()


def dequantize(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return lo[..., None] + q.float() * (hi - lo)[..., None]


def _save(path: Path, tensors: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    md = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=md)


def write_traces(out_dir, col: Collected, *, model: str, task: str, k: int, seed: int,
                 neuron_traces="all", config: dict | None = None, device: str | None = None,
                 inputs=None) -> list[Path]:
    """Write inputs + one file per criterion (each atomic, each with a .meta.json sidecar).

    neuron_traces: "all", "none" or a list of criteria whose per-example neuron scores are stored;
    the static neuron means are always stored. Everything is validated before the first write.
    """
    out_dir = Path(out_dir)
    if isinstance(neuron_traces, str) and neuron_traces not in ("all", "none"):
        neuron_traces = [n.strip() for n in neuron_traces.split(",") if n.strip()]
    if isinstance(neuron_traces, list):
        bad = [n for n in neuron_traces if n not in CRITERIA]
        if bad:
            raise ValueError(f"unknown criterion {', '.join(map(repr, bad))} in neuron_traces")
    for unit, scores in (("head", col.heads), ("neuron", col.neurons)):
        for name, s in scores.items():
            is_finite_or_raise(name, unit, s.reshape(s.shape[0], -1), col.ids)
    groups = _input_tensors(col)
    for key, x in groups.items():
        is_finite_or_raise(key, "input", x, col.ids)
        if x.abs().max() > FLOAT16_MAX:
            raise ValueError(f"predictor input {key} exceeds the float16 range")
    for l, x in col.seq_inputs.items():
        _check_sequence(f"predictor_seq.{l}", x, col.seq_offsets, col.ids)
    common = {"format_version": str(FORMAT_VERSION), "model": model, "task": task, "k": str(k), "seed": str(seed),
              "n_examples": str(len(col.ids)), "ids_sha256_16": ids_digest(col.ids)}
    cfg = dict(config or {}, model=model, task=task, k=k, criteria=list(col.heads),
               placement_layers=col.info.get("placement_layers"), neuron_traces=neuron_traces)
    written = []
    p = out_dir / INPUTS_FILE
    tensors = {k: x.to(torch.float16) for k, x in groups.items()}
    tensors.update(n_tokens=col.n_tokens.to(torch.int32), n_context=col.n_context.to(torch.int32),
                   loss=col.loss.float())
    _save(p, tensors, dict(common, ids=col.ids, placement_layers=col.info.get("placement_layers", [0]),
                           layer_inputs=bool(col.layer_inputs)))
    write_meta(p, config=cfg, seed=seed, device=device, inputs=inputs)
    written.append(p)
    if col.seq_inputs:
        p = out_dir / SEQUENCE_FILE
        _save(p, _sequence_tensors(col), dict(common, ids=col.ids, placement_layers=sorted(col.seq_inputs)))
        write_meta(p, config=cfg, seed=seed, device=device, inputs=inputs)
        written.append(p)
    for name, hs in col.heads.items():
        q, lo, hi = quantize(hs)
        t = {"heads": q, "heads_lo": lo, "heads_hi": hi, "heads_mean": hs.mean(0).float()}
        if name in col.neurons:
            ns = col.neurons[name]
            t["neurons_mean"] = ns.mean(0).float()
            if neuron_traces == "all" or (isinstance(neuron_traces, list) and name in neuron_traces):
                q, lo, hi = quantize(ns)
                t.update(neurons=q, neurons_lo=lo, neurons_hi=hi)
        p = out_dir / f"{name}.safetensors"
        hvp = {"grasp_hvp": col.info["grasp_hvp"]} if CRITERIA[name].needs_hvp and col.info.get("grasp_hvp") else {}
        _save(p, t, dict(common, criterion=name, **hvp))
        write_meta(p, config=cfg, seed=seed, device=device, inputs=inputs)
        written.append(p)
    return written


POSITIONS = ("full", "context")  # last token of context + gold continuation / last context token


def _input_tensors(col: Collected) -> dict[str, torch.Tensor]:
    """The predictor inputs of a collection under their tensor names (see FORMAT.md)."""
    out = {}
    for pos, pred, lay in (("full", col.inputs, col.layer_inputs),
                           ("context", col.inputs_context, col.layer_inputs_context)):
        out.update({f"predictor_input.{pos}.{l}": x for l, x in pred.items()})
        out.update({f"layer_input.{pos}.{l}": x for l, x in lay.items()})
    return out


def _check_sequence(key: str, x: torch.Tensor, offsets: torch.Tensor, ids: list[str]) -> None:
    """ValueError naming the example (and its token) of the first non-finite or beyond-float16 entry of x [sum T, D]."""
    bad = ~torch.isfinite(x) | (x.abs() > FLOAT16_MAX)
    if bad.any():
        row = int(torch.nonzero(bad.any(1))[0, 0])
        i = int(torch.searchsorted(offsets, torch.tensor(row), right=True)) - 1
        what = "NaN or inf" if not torch.isfinite(x[row]).all() else f"a value beyond the float16 range {FLOAT16_MAX}"
        raise ValueError(f"sequence input {key} has {what} at token {row - int(offsets[i])} of example {ids[i]!r}")


def _sequence_tensors(col: Collected) -> dict[str, torch.Tensor]:
    """The tensors of sequence_inputs.safetensors (see FORMAT.md)."""
    t = {f"predictor_seq.{l}": x.to(torch.float16) for l, x in col.seq_inputs.items()}
    t.update(offsets=col.seq_offsets.to(torch.int64), n_context=col.n_context.to(torch.int32),
             n_tokens=col.n_tokens.to(torch.int32))
    return t


def read_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    out = {}
    for k, v in md.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def check_version(path) -> dict:
    """The file's metadata; a trace of another format version is refused, naming both versions."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"trace file {str(path)!r} does not exist")
    md = read_meta(path)
    v = md.get("format_version")
    if str(v) != str(FORMAT_VERSION):
        raise ValueError(f"{path}: trace format version {v!r}, expected {FORMAT_VERSION}; "
                         f"recollect it with `shadowllm trace-importance`")
    return md


def load_scores(path, unit: str = "heads") -> torch.Tensor:
    """Per-example float32 scores [N, L, U] of a criterion file (unit 'heads' or 'neurons')."""
    from safetensors.torch import load_file

    check_version(path)
    t = load_file(str(path))
    if unit not in t:
        raise ValueError(f"{path}: no per-example {unit} scores stored "
                         f"({'head-only criterion' if unit == 'neurons' and 'neurons_mean' not in t else 'not kept'})")
    return dequantize(t[unit], t[f"{unit}_lo"], t[f"{unit}_hi"])


def load_static(path, unit: str = "heads") -> torch.Tensor:
    """Static (aggregate) scores [L, U]: float32 mean over examples."""
    from safetensors.torch import load_file

    check_version(path)
    t = load_file(str(path))
    if f"{unit}_mean" not in t:
        raise ValueError(f"{path}: criterion has no {unit} scores")
    return t[f"{unit}_mean"]


def load_inputs(path) -> dict:
    """{'ids', 'predictor_input': {pos: {layer: [N, H*dh]}}, 'layer_input': {pos: {layer: [N, d]}}, 'n_tokens',
    'n_context', 'loss'}; pos is 'full' (last token of context + gold) or 'context' (last context token);
    float32."""
    from safetensors.torch import load_file

    md = check_version(path)
    t = load_file(str(path))
    out = {"ids": md.get("ids", []), "n_tokens": t["n_tokens"], "n_context": t["n_context"], "loss": t["loss"]}
    for kind in ("predictor_input", "layer_input"):
        out[kind] = {pos: {} for pos in POSITIONS}
        for k, v in t.items():
            parts = k.split(".")
            if parts[0] == kind:
                out[kind][parts[1]][int(parts[2])] = v.float()
    return out


def load_sequence_inputs(path) -> dict:
    """{'ids', 'offsets' [N+1] int64, 'n_context' [N], 'n_tokens' [N], 'placement_layers',
    'predictor_seq': {layer: [sum_i n_tokens_i, H*dh] float32}}; example i is rows offsets[i]:offsets[i+1]."""
    from safetensors.torch import load_file

    md = check_version(path)
    t = load_file(str(path))
    if "offsets" not in t:
        raise ValueError(f"{path}: not a sequence-inputs file (no 'offsets' tensor); expected {SEQUENCE_FILE}")
    seq = {int(k.split(".")[1]): v.float() for k, v in t.items() if k.startswith("predictor_seq.")}
    return {"ids": md.get("ids", []), "offsets": t["offsets"], "n_context": t["n_context"], "n_tokens": t["n_tokens"],
            "placement_layers": sorted(seq), "predictor_seq": seq}


def open_sequence_inputs(path) -> dict:
    """Memory-mapped numpy views of every tensor of a sequence-inputs file (nothing is read until indexed):
    {name: np.memmap}, e.g. m['predictor_seq.0'][m['offsets'][i]:m['offsets'][i + 1]] is example i [n_i, H*dh]."""
    from ..io import mmap_safetensors

    check_version(path)
    return mmap_safetensors(path)


def bytes_per_example(L: int, H: int, F: int, d_model: int, criteria=None, neuron_traces="all",
                      placement_layers=(0,), layer_inputs: bool = False, sequence_inputs: bool = False,
                      mean_tokens: float = 0.0) -> dict:
    """Bytes per example of the stored format (tensor payload; headers are per file, not per example).

    sequence_inputs: add sequence_inputs.safetensors for examples of `mean_tokens` tokens on average
    (d_model = H*dh, as in OPT and Llama)."""
    names = list(criteria or CRITERIA)
    head = L * H * 2 + 2 * L * 4
    neuron = L * F * 2 + 2 * L * 4
    per = {}
    for n in names:
        b = head
        if CRITERIA[n].neurons is not None and (neuron_traces == "all" or
                                                (isinstance(neuron_traces, (list, tuple)) and n in neuron_traces)):
            b += neuron
        per[n] = b
    positions = len(POSITIONS)
    inputs = positions * len(set([0] + list(placement_layers))) * d_model * 2 + 3 * 4
    if layer_inputs:
        inputs += positions * L * d_model * 2
    seq = 0.0
    if sequence_inputs:
        if mean_tokens <= 0:
            raise ValueError(f"sequence_inputs needs the mean tokens per example, got mean_tokens={mean_tokens}")
        seq = len(set([0] + list(placement_layers))) * 2 * mean_tokens * d_model + 8 + 4 + 4
    return {"per_criterion": per, "inputs": inputs, "sequence_inputs": seq, "total": sum(per.values()) + inputs + seq}
