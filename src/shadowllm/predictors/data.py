"""Training sets for predictors, read from importance traces on demand: inputs X and per-example target scores Y."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..importance.criteria import get_criteria, supports
from ..importance.traces import (
    INPUTS_FILE,
    POSITIONS,
    SEQUENCE_FILE,
    check_version,
    open_sequence_inputs,
)
from ..io import mmap_safetensors
from .rows import ArrayRows, Rows, SeqRows, StackRows


@dataclass
class TraceSet:
    ids: list[str]
    X: Rows                 # shadowllm [N, d_in] at the placement layer; dejavu [N, L, d]; fullseq per-token
    Y: dict[str, Rows]      # {"heads": [N, L, H], "neurons": [N, L, F]} (no "neurons" for head-only criteria)
    n_heads: int
    n_neurons: int          # 0 for head-only criteria
    model: str


def _seq_part(folder: Path, md_in: dict, placement: int, position: str) -> tuple:
    """(flat per-token inputs, offsets, lengths) of one folder's sequence inputs at `placement`."""
    path = folder / SEQUENCE_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: the fullseq design needs per-token inputs (collect the traces "
                         "with importance.sequence_inputs: true)")
    md, seq = check_version(path), open_sequence_inputs(path)
    if md["model"] != md_in["model"] or md["ids_sha256_16"] != md_in["ids_sha256_16"]:
        raise ValueError(f"{path}: its model or examples are not those of {folder / INPUTS_FILE}")
    if f"predictor_seq.{placement}" not in seq:
        raise ValueError(f"{path}: no per-token inputs at placement layer {placement}; it holds layers "
                         f"{md.get('placement_layers')}")
    lengths = seq["n_context" if position == "context" else "n_tokens"]
    return seq[f"predictor_seq.{placement}"], np.asarray(seq["offsets"]), np.asarray(lengths)


def load_trace_set(folders, criterion: str, position: str, placement: int, inputs: str = "flat") -> TraceSet:
    """Pool trace folders (one per task / k) of ONE model into a training set, read on demand; refuses mixed
    models, other format versions, a placement the traces do not hold, and criterion files that do not match
    their inputs. inputs: "flat" (the placement layer's predictor input), "layers" (every layer's input, for
    dejavu) or "seq" (the placement layer's input at every token, for fullseq)."""
    if position not in POSITIONS:
        raise ValueError(f"input position {position!r} is not one of {POSITIONS}")
    if inputs not in ("flat", "layers", "seq"):
        raise ValueError(f"inputs {inputs!r} is not one of ('flat', 'layers', 'seq')")
    if not folders:
        raise ValueError("no trace folders given")
    kinds = ("heads", "neurons") if supports(get_criteria([criterion])[0], "neurons") else ("heads",)
    ids, xs, ys, model = [], [], {k: [] for k in kinds}, None
    for folder in folders:
        folder = Path(folder)
        inp_path, crit_path = folder / INPUTS_FILE, folder / f"{criterion}.safetensors"
        md_in, md_c = check_version(inp_path), check_version(crit_path)
        if model is None:
            model = md_in["model"]
        for p, md in ((inp_path, md_in), (crit_path, md_c)):
            if md["model"] != model:
                raise ValueError(f"{p}: traces of model {md['model']!r}, expected {model!r} (one model per set)")
        if md_in["ids_sha256_16"] != md_c["ids_sha256_16"]:
            raise ValueError(f"{crit_path}: its examples are not those of {inp_path} (ids digest differs)")
        inp, crit = mmap_safetensors(inp_path), mmap_safetensors(crit_path)
        if inputs == "layers":
            lay = sorted(int(n.split(".")[2]) for n in inp if n.startswith(f"layer_input.{position}."))
            if not lay:
                raise ValueError(f"{inp_path}: no layer inputs (collect with --layer-inputs for DejaVu)")
            xs.append([inp[f"layer_input.{position}.{l}"] for l in lay])
        elif inputs == "seq":
            xs.append(_seq_part(folder, md_in, placement, position))
        else:
            name = f"predictor_input.{position}.{placement}"
            if name not in inp:
                held = sorted(int(n.split(".")[2]) for n in inp if n.startswith(f"predictor_input.{position}."))
                raise ValueError(f"{inp_path}: no predictor input at placement layer {placement}; the traces hold "
                                 f"layers {held}")
            xs.append(inp[name])
        for k in kinds:
            if k not in crit:  # neuron scores not kept for this criterion
                raise ValueError(f"{crit_path}: no per-example {k} scores stored (not kept; see neuron_traces)")
            ys[k].append((crit[k], (crit[f"{k}_lo"], crit[f"{k}_hi"])))  # [0, 1] scores and their (lo, hi)
        L = ys["heads"][-1][0].shape[1]
        if not 0 <= placement < L:
            raise ValueError(f"placement layer {placement} is outside the model's layers 0..{L - 1}")
        ids += [f"{folder.parent.name}/{i}" for i in md_in.get("ids", [])]  # task/example: the same at every k
    if inputs == "layers":
        if len({len(x) for x in xs}) != 1:
            raise ValueError("trace folders hold layer inputs for different numbers of layers")
        X = StackRows([ArrayRows([x[l] for x in xs]) for l in range(len(xs[0]))])
    elif inputs == "seq":
        X = SeqRows(xs)
    else:
        X = ArrayRows(xs)
    Y = {k: ArrayRows([q for q, _ in parts], scale=[s for _, s in parts], kind="scores") for k, parts in ys.items()}
    F = Y["neurons"].shape[2] if "neurons" in Y else 0
    return TraceSet(ids, X, Y, Y["heads"].shape[2], F, model)


def held_out(ids: list[str], fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices): round(fraction x distinct ids) examples are held out, chosen by a seeded hash
    of the id, so the split does not depend on the order of the pooled traces and an example is on the same side
    at every k."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction {fraction!r} is outside (0, 1)")

    def h(i):
        return hashlib.sha256(f"{seed}:{i}".encode()).digest()

    distinct = sorted(set(ids), key=h)
    test_ids = set(distinct[: round(fraction * len(distinct))])
    test = torch.tensor([k for k, i in enumerate(ids) if i in test_ids], dtype=torch.long)
    train = torch.tensor([k for k, i in enumerate(ids) if i not in test_ids], dtype=torch.long)
    if len(test) < 2 or len(train) < 2:
        raise ValueError(f"held-out split of {len(ids)} examples leaves {len(train)} for training and {len(test)} "
                         f"held out; need at least 2 of each")
    return train, test
