"""Per-token predictor inputs (opt-in): every real token of the placement layers' out-projection input, the same
whatever the batching, padding and order; sequence_inputs.safetensors round trip, absence when off, refusals."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from shadowllm.importance import collect as C
from shadowllm.importance.traces import (
    FORMAT_VERSION,
    SEQUENCE_FILE,
    load_inputs,
    load_sequence_inputs,
    open_sequence_inputs,
    read_meta,
    write_traces,
)

L, H, D, F = 3, 4, 32, 64
PLACEMENT = [0, 2]


def tiny_opt(attn: str):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=60, hidden_size=D, num_hidden_layers=L, num_attention_heads=H, ffn_dim=F,
                    max_position_embeddings=64, word_embed_proj_dim=D, attn_implementation=attn)
    return OPTForCausalLM(cfg).double().eval()


@pytest.fixture(scope="module")
def model():
    return tiny_opt("sdpa")   # SDPA: float64 end to end, so batching changes only ~1e-16


def examples():
    g = torch.Generator().manual_seed(5)
    lens = [(6, 2), (13, 3), (3, 1), (9, 4), (11, 1)]
    return [C.Example(f"s{i}", torch.randint(3, 60, (c,), generator=g).tolist(),
                      torch.randint(3, 60, (y,), generator=g).tolist()) for i, (c, y) in enumerate(lens)]


def reference(model, e: C.Example) -> dict[int, torch.Tensor]:
    """Independent: a plain pre-hook on each placement layer's stock out_proj, one example alone, every token."""
    got = {}
    layers = model.model.decoder.layers
    hs = [layers[l].self_attn.out_proj.register_forward_pre_hook(
        lambda m, a, l=l: got.__setitem__(l, a[0][0].detach().clone())) for l in PLACEMENT]
    with torch.no_grad():
        model(input_ids=torch.tensor([e.ctx_ids + e.cont_ids]))
    for h in hs:
        h.remove()
    return got                                                            # {l: [n, H*dh]}


@pytest.fixture(scope="module")
def collected(model):
    return C.collect(model, examples(), ["plainact", "grasp"], batch_size=3, placement_layers=PLACEMENT,
                     pad_token_id=1, sequence_inputs=True)


@pytest.mark.parametrize("how", [{"batch_size": 3, "pad_token_id": 1},
                                 {"batch_size": 5, "pad_token_id": 17, "sort_by_length": False},
                                 {"batch_size": 1}])
def test_sequence_inputs_are_the_out_proj_input_at_every_real_token(model, collected, how):
    exs = examples()
    col = collected if how["batch_size"] == 3 else C.collect(model, exs, ["l2_norm"], placement_layers=PLACEMENT,
                                                               sequence_inputs=True, **how)
    off = col.seq_offsets
    assert off.tolist() == np.cumsum([0] + [e.n for e in exs]).tolist()
    assert sorted(col.seq_inputs) == PLACEMENT
    for i, e in enumerate(exs):
        ref = reference(model, e)
        for l in PLACEMENT:
            rows = col.seq_inputs[l][off[i]:off[i + 1]]
            assert rows.dtype == torch.float32 and rows.shape == (e.n, H * (D // H))
            torch.testing.assert_close(rows, ref[l].float(), rtol=1e-6, atol=1e-9)   # float32 storage
            # the two positions of inputs.safetensors are two of these rows
            torch.testing.assert_close(col.inputs[l][i], rows[-1], rtol=0, atol=0)
            torch.testing.assert_close(col.inputs_context[l][i], rows[len(e.ctx_ids) - 1], rtol=0, atol=0)


def test_sequence_file_round_trip(collected, tmp_path):
    paths = write_traces(tmp_path, collected, model="tiny", task="t", k=2, seed=3)
    p = tmp_path / SEQUENCE_FILE
    assert p in paths and (tmp_path / (SEQUENCE_FILE + ".meta.json")).is_file()
    assert not list(tmp_path.glob(".tmp-*"))
    s = load_sequence_inputs(p)
    assert s["ids"] == collected.ids and s["placement_layers"] == PLACEMENT
    assert torch.equal(s["offsets"], collected.seq_offsets) and s["offsets"].dtype == torch.int64
    assert torch.equal(s["n_tokens"], collected.n_tokens.int()) and torch.equal(s["n_context"],
                                                                                collected.n_context.int())
    for l in PLACEMENT:
        assert torch.equal(s["predictor_seq"][l], collected.seq_inputs[l].half().float())
    md = read_meta(p)
    assert md["format_version"] == FORMAT_VERSION and md["model"] == "tiny" and md["k"] == 2
    assert md["ids_sha256_16"] == read_meta(tmp_path / "inputs.safetensors")["ids_sha256_16"]
    assert md["n_examples"] == len(collected.ids) and md["placement_layers"] == PLACEMENT
    assert load_inputs(tmp_path / "inputs.safetensors")["ids"] == s["ids"]
    mm = open_sequence_inputs(p)     # the memory-mapped view reads the same bytes
    assert isinstance(mm["predictor_seq.2"], np.memmap) and mm["predictor_seq.2"].dtype == np.float16
    np.testing.assert_array_equal(mm["offsets"], s["offsets"].numpy())
    i = 3
    np.testing.assert_array_equal(mm["predictor_seq.2"][mm["offsets"][i]:mm["offsets"][i + 1]],
                                  s["predictor_seq"][2][s["offsets"][i]:s["offsets"][i + 1]].half().numpy())
    assert json.loads((tmp_path / (SEQUENCE_FILE + ".meta.json")).read_text())["config"]["k"] == 2


def test_no_sequence_file_when_off(model, tmp_path):
    col = C.collect(model, examples()[:2], ["l2_norm"], placement_layers=PLACEMENT)
    assert col.seq_inputs == {} and col.seq_offsets is None
    write_traces(tmp_path, col, model="tiny", task="t", k=0, seed=0)
    assert not (tmp_path / SEQUENCE_FILE).exists() and (tmp_path / "inputs.safetensors").is_file()


def test_sequence_file_of_another_version_or_kind_is_refused(collected, tmp_path):
    from safetensors.torch import load_file, save_file

    write_traces(tmp_path, collected, model="tiny", task="t", k=0, seed=0, neuron_traces="none")
    p = tmp_path / SEQUENCE_FILE
    md = read_meta(p)
    save_file(load_file(str(p)), str(p), metadata={k: v if isinstance(v, str) else json.dumps(v)
                                                  for k, v in {**md, "format_version": "1"}.items()})
    for load in (load_sequence_inputs, open_sequence_inputs):
        with pytest.raises(ValueError, match=f"format version 1, expected {FORMAT_VERSION}"):
            load(p)
    with pytest.raises(ValueError, match="not a sequence-inputs file"):
        load_sequence_inputs(tmp_path / "inputs.safetensors")


@pytest.mark.parametrize("bad, what", [(float("nan"), "NaN or inf"), (1e6, "beyond the float16 range")])
def test_bad_sequence_input_names_example_and_token_and_writes_nothing(collected, tmp_path, bad, what):
    import copy

    col = copy.deepcopy(collected)
    i, t = 3, 2
    col.seq_inputs[2][int(col.seq_offsets[i]) + t, 5] = bad
    with pytest.raises(ValueError, match=rf"predictor_seq\.2 has .*{what}.* token {t} of example 's{i}'"):
        write_traces(tmp_path, col, model="tiny", task="t", k=0, seed=0)
    assert not list(tmp_path.iterdir())


def test_cli_flags_reach_collect_and_the_files(tmp_path, monkeypatch):
    """`shadowllm trace-importance --sequence-inputs --grasp-hvp exact`: the flags are passed on and recorded."""
    import shadowllm.loading
    from shadowllm.cli import main

    model = tiny_opt("eager")   # as load_model loads it: the exact HVP cannot differentiate SDPA's CPU backward
    tok = types.SimpleNamespace(pad_token_id=1)
    monkeypatch.setattr(shadowllm.loading, "load_model", lambda *a, **k: (model, tok))
    monkeypatch.setattr(C, "task_examples", lambda *a, **k: examples()[:3])
    out = tmp_path / "k0"
    rc = main(["trace-importance", "--model", "tiny", "--task", "t", "--k", "0", "--criteria", "plainact,grasp",
               "--out", str(out), "--placement-layers", "2", "--sequence-inputs", "--grasp-hvp", "exact",
               "--no-layer-inputs", "--device", "cpu"])
    assert rc == 0
    s = load_sequence_inputs(out / SEQUENCE_FILE)
    assert s["placement_layers"] == PLACEMENT and s["offsets"][-1] == sum(e.n for e in examples()[:3])
    assert read_meta(out / "grasp.safetensors")["grasp_hvp"] == "exact"
    cfg = json.loads((out / "grasp.safetensors.meta.json").read_text())["config"]
    assert cfg["grasp_hvp"] == "exact" and cfg["sequence_inputs"] is True
    rc = main(["trace-importance", "--model", "tiny", "--task", "t", "--k", "0", "--criteria", "grasp",
               "--out", str(tmp_path / "off"), "--no-layer-inputs", "--device", "cpu"])
    assert rc == 0 and not (tmp_path / "off" / SEQUENCE_FILE).exists()
    assert read_meta(tmp_path / "off" / "grasp.safetensors")["grasp_hvp"] == "finite_difference"
