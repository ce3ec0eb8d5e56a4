"""Masks on stock modules: exactness against hand-made weight edits, per-sequence masks, top-k."""
import copy

import pytest
import torch

from shadowllm.adapter import get_adapter
from shadowllm.masks import Mask, MaskHooks, StaticMask, mask_from_scores, topk_mask

X = torch.randint(3, 120, (3, 17), generator=torch.Generator().manual_seed(1))


def test_all_ones_mask_gives_identical_logits(opt_model):
    ad = get_adapter(opt_model)
    ref = opt_model(X).logits
    with MaskHooks(ad, StaticMask(Mask.ones(ad, batch=3))):
        out = opt_model(X).logits
    assert torch.equal(ref, out)


def test_hooks_are_removed(opt_model):
    ad = get_adapter(opt_model)
    ref = opt_model(X).logits
    m = Mask.ones(ad)
    m.heads[0, 1, :] = 0
    with MaskHooks(ad, StaticMask(m)):
        assert not torch.equal(opt_model(X).logits, ref)
    assert torch.equal(opt_model(X).logits, ref)
    assert all(len(ad.attn_out(l)._forward_pre_hooks) == 0 for l in range(ad.n_layers))


@pytest.mark.parametrize("layer,head", [(1, 2), (2, 0)])
def test_head_mask_equals_zeroed_out_proj_input_slice(opt_model, layer, head):
    ad = get_adapter(opt_model)
    m = Mask.ones(ad)
    m.heads[0, layer, head] = 0
    with MaskHooks(ad, StaticMask(m)):
        masked = opt_model(X).logits
    # by hand: zero that head's slice of out_proj's input with a plain hook written here
    dh = ad.head_dim
    sl = slice(head * dh, (head + 1) * dh)

    def zero_slice(mod, args):
        x = args[0].clone()
        x[..., sl] = 0
        return (x,)

    h = opt_model.model.decoder.layers[layer].self_attn.out_proj.register_forward_pre_hook(zero_slice)
    hand = opt_model(X).logits
    h.remove()
    # and equivalently: zero out_proj's weight columns of that head
    m2 = copy.deepcopy(opt_model)
    with torch.no_grad():
        m2.model.decoder.layers[layer].self_attn.out_proj.weight[:, sl] = 0
    cols = m2(X).logits
    torch.testing.assert_close(masked, hand, rtol=0, atol=0)
    torch.testing.assert_close(masked, cols, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(masked, opt_model(X).logits)


@pytest.mark.parametrize("layer,rank", [(1, 0), (2, 3)])
def test_neuron_mask_equals_zeroed_fc1_row(opt_model, layer, rank):
    ad = get_adapter(opt_model)
    acts = []  # pick a neuron that fires on X (a dead ReLU would make the check vacuous)
    h = ad.ffn_out(layer).register_forward_pre_hook(lambda mod, a: acts.append(a[0].detach()))
    opt_model(X)
    h.remove()
    neuron = int(acts[0].sum(0).argsort(descending=True)[rank])
    m = Mask.ones(ad)
    m.neurons[0, layer, neuron] = 0
    with MaskHooks(ad, StaticMask(m)):
        masked = opt_model(X).logits
    m2 = copy.deepcopy(opt_model)
    with torch.no_grad():
        fc1 = m2.model.decoder.layers[layer].fc1
        fc1.weight[neuron] = 0
        fc1.bias[neuron] = 0  # relu(0) = 0: the neuron contributes nothing to fc2
    torch.testing.assert_close(masked, m2(X).logits, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(masked, opt_model(X).logits)


def test_per_sequence_masks_equal_one_by_one(opt_model):
    ad = get_adapter(opt_model)
    hs, ns = torch.rand(3, ad.n_layers, ad.n_heads), torch.rand(3, ad.n_layers, ad.n_neurons)
    mask = mask_from_scores(hs, ns, 0.5, "global", min_neurons=4)
    with MaskHooks(ad, StaticMask(mask)):
        batched = opt_model(X).logits
    for b in range(3):
        one = Mask(mask.heads[b:b + 1], mask.neurons[b:b + 1])
        with MaskHooks(ad, StaticMask(one)):
            torch.testing.assert_close(batched[b:b + 1], opt_model(X[b:b + 1]).logits, rtol=1e-5, atol=1e-6)


def test_mask_applies_during_cached_generation(opt_model):
    """Masked greedy generation with the KV cache equals masked recomputation without it."""
    ad = get_adapter(opt_model)
    m = Mask.ones(ad)
    m.heads[0, 1, :2] = 0
    m.neurons[0, 2, ::2] = 0
    with MaskHooks(ad, StaticMask(m)):
        gen = opt_model.generate(X[:1, :8], max_new_tokens=6, do_sample=False, pad_token_id=1)
        ids = X[:1, :8]
        for _ in range(6):
            nxt = opt_model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    assert torch.equal(gen, ids)


def test_llama_adapter_gqa_swiglu():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    ad = get_adapter(model)
    assert (ad.n_heads, ad.n_kv_heads, ad.head_dim, ad.n_neurons) == (4, 2, 8, 48)
    x = X[:2] % 100
    m = Mask.ones(ad)
    m.heads[0, 1, 3] = 0
    m.neurons[0, 1, 7] = 0
    with MaskHooks(ad, StaticMask(m)):
        masked = model(x).logits
    m2 = copy.deepcopy(model)
    with torch.no_grad():
        m2.model.layers[1].self_attn.o_proj.weight[:, 24:32] = 0
        m2.model.layers[1].mlp.up_proj.weight[7] = 0  # silu(gate) * 0 = 0
    torch.testing.assert_close(masked, m2(x).logits, rtol=1e-5, atol=1e-6)


def test_global_topk_keeps_exactly_k():
    s = torch.rand(2, 5, 7)
    for sp in (0.0, 0.3, 0.5, 0.9):
        m = topk_mask(s, sp, "global")
        k = round((1 - sp) * 4 * 7)
        assert m[:, 0].eq(1).all()  # layer 0 never pruned
        assert m[:, 1:].sum(dim=(1, 2)).tolist() == [k, k]
        # the kept ones are the k best
        for b in range(2):
            kept = s[b, 1:][m[b, 1:] == 1]
            dropped = s[b, 1:][m[b, 1:] == 0]
            assert dropped.numel() == 0 or kept.min() > dropped.max()


def test_local_and_hybrid_topk():
    s = torch.rand(1, 4, 10)
    s[0, 3] -= 10  # layer 3 loses everything under global
    loc = topk_mask(s, 0.6, "local")
    assert loc[0, 1:].sum(-1).tolist() == [4, 4, 4]
    glob = topk_mask(s, 0.6, "global")
    assert glob[0, 3].sum() == 0
    hyb = topk_mask(s, 0.6, "hybrid", min_keep=2)
    assert hyb[0, 1:].sum() == glob[0, 1:].sum() == 12
    assert hyb[0, 3].sum() == 2 and hyb[0, 3, s[0, 3].topk(2).indices].eq(1).all()


@pytest.mark.parametrize("bad,msg", [(1.0, "outside"), (-0.1, "outside")])
def test_topk_rejects_bad_sparsity(bad, msg):
    with pytest.raises(ValueError, match=msg):
        topk_mask(torch.rand(1, 3, 4), bad)


def test_topk_rejects_nonfinite_and_bad_style():
    s = torch.rand(1, 3, 4)
    s[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(s, 0.5)
    with pytest.raises(ValueError, match="'diagonal'"):
        topk_mask(torch.rand(1, 3, 4), 0.5, "diagonal")


def test_mask_file_roundtrip_and_shape_check(tmp_path, opt_model):
    ad = get_adapter(opt_model)
    m = mask_from_scores(torch.rand(1, ad.n_layers, ad.n_heads), torch.rand(1, ad.n_layers, ad.n_neurons), 0.5,
                         min_neurons=4)
    m.save(tmp_path / "m.safetensors", metadata={"sparsity": 0.5})
    back = Mask.load(tmp_path / "m.safetensors").check(ad)
    assert torch.equal(back.heads, m.heads) and torch.equal(back.neurons, m.neurons)
    assert back.meta["sparsity"] == "0.5"
    wrong = Mask(torch.ones(1, 2, 4), torch.ones(1, 2, 64))
    with pytest.raises(ValueError, match=r"expected \[B, 3, 4\]"):
        wrong.check(ad)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        Mask.load(tmp_path / "nope.safetensors")


class Layer0Decides:
    """A MaskSource that decides every later layer's mask inside the forward pass, from layer 0's
    attention output at the last token (where the ShadowLLM predictor sits)."""

    def __init__(self, ad, proj_h, proj_f, sparsity=0.5):
        self.ad, self.ph, self.pf, self.sparsity = ad, proj_h, proj_f, sparsity
        self.mask = None

    def attach(self, ad):
        def grab(module, args, out):
            feat = out[:, -1]  # [B, d]
            hs = (feat @ self.ph).view(-1, ad.n_layers, ad.n_heads)
            ns = (feat @ self.pf).view(-1, ad.n_layers, ad.n_neurons)
            self.mask = mask_from_scores(hs, ns, self.sparsity, "local")
        return [ad.attn_out(0).register_forward_hook(grab)]

    def head_mask(self, l):
        return None if l == 0 else self.mask.heads[:, l]

    def neuron_mask(self, l):
        return None if l == 0 else self.mask.neurons[:, l]


def test_mask_decided_inside_forward_from_layer0(opt_model):
    ad = get_adapter(opt_model)
    g = torch.Generator().manual_seed(5)
    ph = torch.randn(ad.d_model, ad.n_layers * ad.n_heads, generator=g)
    pf = torch.randn(ad.d_model, ad.n_layers * ad.n_neurons, generator=g)
    src = Layer0Decides(ad, ph, pf)
    with MaskHooks(ad, src):
        one_pass = opt_model(X).logits
    # two passes by hand: read layer 0's output, then apply the same masks statically
    with MaskHooks(ad, StaticMask(src.mask)):
        two_pass = opt_model(X).logits
    assert torch.equal(one_pass, two_pass)
    assert src.mask.heads[:, 1:].mean() == 0.5
    per_seq = src.mask.neurons[:, 1:].flatten(1)
    assert not torch.equal(per_seq[0], per_seq[1])  # per-sequence: the masks differ by prompt


def test_non_binary_mask_is_not_saved(tmp_path, opt_model):
    ad = get_adapter(opt_model)
    m = Mask.ones(ad)
    m.neurons[0, 1, 3] = 0.5
    with pytest.raises(ValueError, match="neurons holds 1 value"):
        m.save(tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())


def test_one_layer_model_has_nothing_to_prune():
    s = torch.rand(1, 1, 8)
    assert torch.equal(topk_mask(s, 0.0), torch.ones(1, 1, 8))
    with pytest.raises(ValueError, match="1-layer model has no layer after the placement layer 0"):
        topk_mask(s, 0.5)


def test_placement_keeps_layers_dense_and_units_choose_what_is_pruned():
    g = torch.Generator().manual_seed(0)
    hs, ns = torch.rand(2, 4, 6, generator=g), torch.rand(2, 4, 32, generator=g)
    m = mask_from_scores(hs, ns, 0.5, "global", placement=1)
    assert m.heads[:, :2].all() and m.neurons[:, :2].all()
    assert (m.heads[:, 2:] == 0).sum(dim=(1, 2)).tolist() == [6, 6]   # exactly half of the 2 x 6 prunable heads
    heads_only = mask_from_scores(hs, ns, 0.5, "local", units="heads")
    assert heads_only.neurons.all() and torch.equal(heads_only.heads, mask_from_scores(hs, ns, 0.5, "local").heads)
    neurons_only = mask_from_scores(hs, ns, 0.5, "local", units="neurons")
    assert neurons_only.heads.all() and (neurons_only.neurons[:, 1:] == 0).sum().item() == 2 * 3 * 16
    with pytest.raises(ValueError, match="placement layer 4 is outside"):
        topk_mask(hs, 0.5, placement=4)
    with pytest.raises(ValueError, match="units 'all'"):
        mask_from_scores(hs, ns, 0.5, units="all")
