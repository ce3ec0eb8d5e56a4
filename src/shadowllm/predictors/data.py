"""Training sets for predictors, read from importance traces: inputs X and per-example target scores Y."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..importance.criteria import get_criteria, supports
from ..importance.traces import INPUTS_FILE, POSITIONS, check_version, load_inputs, load_scores


@dataclass
class TraceSet:
    ids: list[str]
    X: torch.Tensor         # shadowllm: [N, d_in] at the placement layer; dejavu: [N, L, d] every layer's input
    Y: torch.Tensor         # [N, L, H + F] (heads first; [N, L, H] for head-only criteria)
    n_heads: int
    n_neurons: int          # 0 for head-only criteria
    model: str


def load_trace_set(folders, criterion: str, position: str, placement: int, per_layer: bool) -> TraceSet:
    """Pool trace folders (one per task / k) of ONE model into a training set; refuses mixed models, other format
    versions, a placement the traces do not hold, and criterion files that do not match their inputs."""
    if position not in POSITIONS:
        raise ValueError(f"input position {position!r} is not one of {POSITIONS}")
    if not folders:
        raise ValueError("no trace folders given")
    ids, xs, ys, model, H, F = [], [], [], None, None, 0
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
        inp = load_inputs(inp_path)
        if per_layer:
            lay = inp["layer_input"][position]
            if not lay:
                raise ValueError(f"{inp_path}: no layer inputs (collect with --layer-inputs for DejaVu)")
            xs.append(torch.stack([lay[l] for l in sorted(lay)], 1))
        else:
            pin = inp["predictor_input"][position]
            if placement not in pin:
                raise ValueError(f"{inp_path}: no predictor input at placement layer {placement}; the traces hold "
                                 f"layers {sorted(pin)}")
            xs.append(pin[placement])
        heads = load_scores(crit_path, "heads")
        # head-only criteria have no neuron scores; for the others a missing neuron trace is an error (load_scores)
        neurons = load_scores(crit_path, "neurons") if supports(get_criteria([criterion])[0], "neurons") else None
        if not 0 <= placement < heads.shape[1]:
            raise ValueError(f"placement layer {placement} is outside the model's layers 0..{heads.shape[1] - 1}")
        H = heads.shape[2]
        F = 0 if neurons is None else neurons.shape[2]
        ys.append(heads if neurons is None else torch.cat([heads, neurons], 2))
        ids += [f"{folder.parent.name}/{i}" for i in inp["ids"]]  # task/example: the same example at every k
    return TraceSet(ids, torch.cat(xs), torch.cat(ys), H, F, model)


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
