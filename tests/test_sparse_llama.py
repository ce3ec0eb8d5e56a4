"""The sliced decoder equals the stock Llama model (RMSNorm, RoPE, SwiGLU, grouped-query attention) under the
same masks (CPU, tiny random Llama with 6 query heads over 2 KV heads)."""
from __future__ import annotations

import pytest
import torch
from test_sparse_decoder import _masks_per_position, check_against, per_token_reference, prompt, run, stock_logits

from shadowllm.masks import Mask
from shadowllm.shapes import parse_size
from shadowllm.sparse import DecoderWeights, SparseDecoder, make_static_mask, weight_bytes_per_token

transformers = pytest.importorskip("transformers")

H, HKV, DH, F, L, V = 6, 2, 8, 96, 3, 97


def tiny_llama(dtype=torch.float64, seed: int = 0, rope_scaling: dict | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=H * DH, intermediate_size=F, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=HKV, max_position_embeddings=64,
                      rope_theta=500.0, rope_scaling=rope_scaling, tie_word_embeddings=False, pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights; weights large enough for the masks to matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model.to(dtype)


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}


@pytest.mark.parametrize("rope", [None, LLAMA3_ROPE])
def test_dense_equals_stock(rope):
    model = tiny_llama(rope_scaling=rope)
    w = DecoderWeights.from_hf(model)
    assert (w.H, w.Hkv, w.group, w.dh, w.F, w.norm, w.gated) == (H, HKV, 3, DH, F, "rms", True)
    ids = prompt(B=2, V=V)
    seq, l0, dl = run(SparseDecoder(w, "dense"), ids, 6)
    check_against(stock_logits(model, seq), ids, l0, dl, 1e-9)


def test_zero_sparsity_modes_equal_dense_stock():
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=2, V=V)
    for mode in ("shadowllm-prompt", "shadowllm-token", "dejavu"):
        seq, l0, dl = run(SparseDecoder(w, mode, 0.0, predictor_hidden=16, gather="torch"), ids, 4)
        check_against(stock_logits(model, seq), ids, l0, dl, 1e-9)


def _group_mask(B=1):
    """Layer 1 prunes every query head of KV head 0 (heads 0, 1, 2) and head 4 of KV head 1; layer 2 prunes
    heads 1 and 3, which leaves both KV heads in use."""
    m = Mask(torch.ones(B, L, H), torch.ones(B, L, F))
    m.heads[:, 1, [0, 1, 2, 4]] = 0
    m.heads[:, 2, [1, 3]] = 0
    m.neurons[:, 1, ::3] = 0
    m.neurons[:, 2, 5:50] = 0
    return m


def test_static_skips_a_kv_head_only_when_its_whole_group_is_pruned():
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=2, V=V)
    mask = _group_mask()
    dec = SparseDecoder(w, "static", 0.5, static_mask=mask)
    seq, l0, dl = run(dec, ids, 5)
    check_against(stock_logits(model, seq, mask), ids, l0, dl, 1e-9)
    s1, s2 = dec.slices[1], dec.slices[2]
    assert (s1.nh, s1.nkv, s2.nh, s2.nkv) == (2, 1, 4, 2)
    assert s1.kv_map.tolist() == [0, 0] and s2.kv_map.tolist() == [0, 0, 1, 1]
    assert s1.wqkv.shape[0] == (2 + 2 * 1) * DH and dec.K[1].shape[1] == 1 and dec.K[2].shape[1] == 2
    # the bytes counted per token are the bytes of the slices' tensors (layer 1: one KV head's rows of two)
    from shadowllm.sparse.roofline import layer_bytes

    for s in (s1, s2):
        held = sum(t.numel() * t.element_size() for t in (s.ln1_w, s.wqkv, s.woT, s.ln2_w, s.w1, s.w3, s.w2T))
        assert layer_bytes(w, 1, s.nh / H, s.nf_pad / F, s.nkv / HKV) == held


@pytest.mark.parametrize("B", [1, 3])
def test_static_random_masks_equal_masked_stock(B):
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=B, V=V)
    mask = make_static_mask(w, 0.5, seed=3, batch=B)
    seq, l0, dl = run(SparseDecoder(w, "static", 0.5, static_mask=mask), ids, 5)
    check_against(stock_logits(model, seq, mask), ids, l0, dl, 1e-9)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_shadowllm_prompt_equals_masked_stock(B, sparsity):
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=B, V=V)
    dec = SparseDecoder(w, "shadowllm-prompt", sparsity, predictor_hidden=32, seed=B)
    dec.record = True
    seq, l0, dl = run(dec, ids, 6)
    _, hm, nm = dec.trace[0]
    kh = round((1 - sparsity) * H)
    assert (hm[:, 0] == 1).all() and (hm[:, 1:].sum(-1) == kh).all()
    # the KV cache of a pruned layer holds a fixed capacity of KV heads: min(B * kept heads, KV heads)
    assert dec.K[1].shape[1] == min(B * kh, HKV) and dec.K[0].shape[1] == HKV
    check_against(stock_logits(model, seq, Mask(hm, nm)), ids, l0, dl, 1e-9)


@pytest.mark.parametrize("mode,lookahead", [("shadowllm-token", False), ("dejavu", False), ("dejavu", True)])
@pytest.mark.parametrize("gather", ["torch", "auto"])
def test_per_token_equals_masked_stock(mode, lookahead, gather):
    if gather == "auto":
        from shadowllm.sparse import kernels_cpu
        if kernels_cpu.cpp_ops() is None:
            pytest.skip("C++ gather extension not buildable here")
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=2, V=V)
    dec = SparseDecoder(w, mode, 0.5, predictor_hidden=32, gather=gather, lookahead=lookahead)
    dec.record = True
    n_new = 6
    seq, l0, dl = run(dec, ids, n_new)
    assert any(not torch.equal(dec.trace[i][1], dec.trace[i + 1][1]) for i in range(1, n_new))
    heads, neurons = _masks_per_position(dec.trace)
    check_against(per_token_reference(model, seq, heads, neurons), ids, l0, dl, 1e-9)


def test_placement_prompt_and_token_equal_masked_stock():
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=2, V=V)
    dec = SparseDecoder(w, "shadowllm-prompt", 0.5, predictor_hidden=32, placement=1)
    dec.record = True
    seq, l0, dl = run(dec, ids, 4)
    _, hm, nm = dec.trace[0]
    assert (hm[:, :2] == 1).all() and (hm[:, 2].sum(-1) == 3).all()
    check_against(stock_logits(model, seq, Mask(hm, nm)), ids, l0, dl, 1e-9)
    dec = SparseDecoder(w, "shadowllm-token", 0.5, predictor_hidden=32, placement=1, gather="torch")
    dec.record = True
    seq, l0, dl = run(dec, ids, 4)
    heads, neurons = _masks_per_position(dec.trace)
    check_against(per_token_reference(model, seq, heads, neurons), ids, l0, dl, 1e-9)


def test_active_kv_policy_with_shared_kv_heads():
    """kv_policy active computes each active head's KV head (shared ones once per head): at sparsity 0 every
    head is active, so it is the dense model."""
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=2, V=V)
    seq, l0, dl = run(SparseDecoder(w, "shadowllm-token", 0.0, predictor_hidden=16, kv_policy="active",
                                    gather="torch"), ids, 4)
    check_against(stock_logits(model, seq), ids, l0, dl, 1e-9)
    toks = SparseDecoder(w, "dejavu", 0.5, predictor_hidden=16, kv_policy="active").generate(ids, 3)
    assert toks.shape == (2, 4)


@pytest.mark.parametrize("mode", ["dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu"])
def test_graph_mode_step_matches_eager(mode):
    """The CUDA-graph form of a decode step (whole-buffer attention, device-side position) equals the eager one."""
    model = tiny_llama()
    w = DecoderWeights.from_hf(model)
    ids = prompt(B=2, V=V)
    kw = dict(predictor_hidden=32, gather="torch", lookahead=mode == "dejavu")
    if mode == "static":
        kw["static_mask"] = _group_mask()
    a, b = SparseDecoder(w, mode, 0.5, **kw), SparseDecoder(w, mode, 0.5, **kw)
    for d in (a, b):
        d.setup(2, 20)
    nxt_a, nxt_b = a.prefill(ids)[:, -1].argmax(-1), b.prefill(ids)[:, -1].argmax(-1)
    pos = torch.tensor([ids.shape[1]])
    for _ in range(4):
        la = a.decode(nxt_a)
        with torch.no_grad():
            lb = b._step(nxt_b, pos, None)
        pos += 1
        torch.testing.assert_close(lb, la, rtol=1e-9, atol=1e-9)
        nxt_a, nxt_b = la.argmax(-1), lb.argmax(-1)


def test_llama_shapes_random_weights_generate():
    shape = parse_size("llama-3-8b_L2")
    assert (shape.hidden, shape.kv_heads, shape.ffn, shape.layers) == (4096, 8, 14336, 2)
    assert abs(parse_size("llama-3-8b").params_b - 8.03) < 0.01
    assert abs(parse_size("smollm2-135m").params_b - 0.1346) < 0.001
    from dataclasses import replace

    toy = replace(shape, name="toy", hidden=64, heads=8, kv_heads=2, ffn=128, vocab=50)
    w = DecoderWeights.random(toy, torch.float32, "cpu")
    for mode in ("dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu"):
        kw = {"static_mask": make_static_mask(w, 0.5)} if mode == "static" else {}
        dec = SparseDecoder(w, mode, 0.5, predictor_hidden=16, **kw)
        assert dec.generate(prompt(B=1, V=50), 3).shape == (1, 4)
        assert 0 < weight_bytes_per_token(dec) <= weight_bytes_per_token(SparseDecoder(w, "dense")) * 1.5


def test_unsupported_families_are_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        DecoderWeights.from_hf(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20)))
