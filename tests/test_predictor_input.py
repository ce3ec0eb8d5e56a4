"""One predictor input: traces, masks decided in the forward pass and the sliced decoder read the same tensor
(the input of the placement layer's attention out-projection at the last token), and a trained-format
predictor gives the same masks and logits in the stock model and in the decoder."""
from __future__ import annotations

import pytest
import torch
from test_sparse_decoder import prompt, tiny_opt

from shadowllm.adapter import get_adapter
from shadowllm.importance.collect import Example, collect
from shadowllm.masks import MaskHooks, StaticMask
from shadowllm.predictors import PredictedMasks, Predictor, load_predictor
from shadowllm.sparse import DecoderWeights, SparseDecoder
from shadowllm.sparse.predictors import ShadowPredictor


def out_proj_input(model, ids, layer):
    """Independent reference: a plain pre-hook on the stock out_proj, last position."""
    got = {}
    h = model.model.decoder.layers[layer].self_attn.out_proj.register_forward_pre_hook(
        lambda m, a: got.__setitem__("a", a[0][:, -1].detach().clone()))
    with torch.no_grad():
        model(input_ids=ids)
    h.remove()
    return got["a"]


class Recorder:
    """Stands in for the decoder's predictor: records what it is fed, returns fixed scores."""

    def __init__(self, scores):
        self.scores, self.fed = scores, []

    def __call__(self, a0):
        self.fed.append(a0.detach().clone())
        return self.scores[: a0.shape[0]].to(a0.dtype)

    def n_params(self):
        return 0


@pytest.mark.parametrize("placement", [0, 1])
def test_traces_masks_and_decoder_read_the_same_tensor(placement):
    model = tiny_opt()
    ad = get_adapter(model)
    ids = prompt(B=2, T=7)
    ref = out_proj_input(model, ids, placement)                                   # [B, H*dh]

    exs = [Example(str(b), ids[b, :-2].tolist(), ids[b, -2:].tolist()) for b in range(ids.shape[0])]
    col = collect(model.float(), exs, ["l2_norm"], batch_size=2, placement_layers=[placement])
    model.double()
    torch.testing.assert_close(col.inputs[placement], ref.float(), rtol=1e-5, atol=1e-6)

    pred = Predictor("shadowllm", ad.n_heads * ad.head_dim, ad.n_layers, ad.n_heads, ad.n_neurons,
                     hidden_heads=16, hidden_neurons=16,
                     placement=placement).double()
    src = PredictedMasks(pred, sparsity=0.5, style="local")
    with MaskHooks(ad, src), torch.no_grad():
        model(input_ids=ids)
    torch.testing.assert_close(src.seen, ref, rtol=0, atol=0)

    rec = Recorder(torch.randn(2, ad.n_layers, ad.n_heads + ad.n_neurons, dtype=torch.float64))
    dec = SparseDecoder(DecoderWeights.from_hf(model), "shadowllm-prompt", 0.5, shadow=rec, placement=placement)
    dec.setup(2, 16).prefill(ids)
    torch.testing.assert_close(rec.fed[0], ref, rtol=1e-12, atol=1e-12)


def test_trained_format_predictor_same_masks_and_logits_in_stock_model_and_decoder(tmp_path):
    model = tiny_opt()
    ad = get_adapter(model)
    ids = prompt(B=2, T=7)
    torch.manual_seed(3)
    pred = Predictor("shadowllm", ad.n_heads * ad.head_dim, ad.n_layers, ad.n_heads, ad.n_neurons,
                     hidden_heads=16, hidden_neurons=16,
                     placement=0).double()
    pred.save(tmp_path / "p.safetensors", meta={"model": "tiny", "criterion": "plainact"})
    again, meta = load_predictor(tmp_path / "p.safetensors", expect={"n_layers": ad.n_layers})
    assert meta["criterion"] == "plainact"
    x = torch.randn(3, ad.n_heads * ad.head_dim, dtype=torch.float64)
    torch.testing.assert_close(again.double()(x), pred(x), rtol=0, atol=0)

    src = PredictedMasks(again.double(), sparsity=0.5, style="local")
    with MaskHooks(ad, src), torch.no_grad():
        one_pass = model(input_ids=ids).logits
    with MaskHooks(ad, StaticMask(src.mask)), torch.no_grad():
        two_pass = model(input_ids=ids).logits
    torch.testing.assert_close(one_pass, two_pass, rtol=0, atol=0)
    assert src.mask.heads[:, 0].all() and src.mask.heads[:, 1:].mean() == 0.5

    dec = SparseDecoder(DecoderWeights.from_hf(model), "shadowllm-prompt", 0.5,
                    shadow=ShadowPredictor.from_trained(again.double()))
    dec.record = True
    logits = dec.setup(2, 16).prefill(ids, all_logits=True)
    _, hm, nm = dec.trace[0]
    assert torch.equal(hm, src.mask.heads) and torch.equal(nm, src.mask.neurons)
    torch.testing.assert_close(logits, one_pass, rtol=1e-9, atol=1e-9)


def test_predictor_file_of_another_model_is_refused(tmp_path):
    pred = Predictor("shadowllm", 8, 3, 2, 16, hidden_heads=4, hidden_neurons=4)
    pred.save(tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match="n_layers is 3, expected 6"):
        load_predictor(tmp_path / "p.safetensors", expect={"n_layers": 6})
    with pytest.raises(ValueError, match="placement layer 3"):
        Predictor("shadowllm", 8, 3, 2, 16, placement=3)


@pytest.mark.parametrize("placement,units", [(0, "both"), (1, "heads")])
def test_token_protocol_equals_decoding_token_by_token_with_each_steps_mask(placement, units):
    """`token`: position t's predictor input decides position t's mask. Independent path: the stock model decodes
    one token at a time through its KV cache, each step masked by the mask its own (last) token decides."""
    model = tiny_opt().double()
    ad = get_adapter(model)
    ids = prompt(B=2, T=6)
    torch.manual_seed(5)
    pred = Predictor("shadowllm", ad.n_heads * ad.head_dim, ad.n_layers, ad.n_heads, ad.n_neurons,
                     hidden_heads=16, hidden_neurons=16, placement=placement).double()
    with torch.no_grad():
        for net in pred.nets.values():  # no biases: the input alone sets the ranking, so it varies by position
            net[0].bias.zero_()
            net[2].bias.zero_()
    src = PredictedMasks(pred, sparsity=0.5, style="global", units=units, position="token")
    with MaskHooks(ad, src), torch.no_grad():
        one_pass = model(input_ids=ids).logits                                  # [B, T, V]
    assert src.mask.heads.shape == (2 * 6, ad.n_layers, ad.n_heads)
    steps, past = [], None
    for t in range(ids.shape[1]):
        step = PredictedMasks(pred, sparsity=0.5, style="global", units=units, position=-1)
        with MaskHooks(ad, step), torch.no_grad():
            out = model(input_ids=ids[:, t:t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits[:, 0])
        # the mask of step t is the one-pass mask of position t
        got = src.mask.heads.view(2, 6, ad.n_layers, ad.n_heads)[:, t]
        assert torch.equal(step.mask.heads, got)
    torch.testing.assert_close(one_pass, torch.stack(steps, 1), rtol=1e-10, atol=1e-10)
    # masks differ across positions, so one mask per sequence would not give these logits
    heads = src.mask.heads.view(12, -1)
    assert len({tuple(m.tolist()) for m in heads}) > 1
    with pytest.raises(ValueError, match="position 'prompt' is not a token index"):
        PredictedMasks(pred, 0.5, position="prompt")


def test_per_position_mask_of_the_wrong_length_is_refused():
    from shadowllm.masks.hooks import _scale
    x = torch.arange(2 * 3 * 8, dtype=torch.float64).view(2, 3, 8)
    m = torch.tensor([[[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]]] * 2, dtype=torch.float64)   # [B=2, T=3, U=4]
    want = (x.view(2, 3, 4, 2) * m[..., None]).view(2, 3, 8)
    assert torch.equal(_scale(x, m, 2), want) and torch.equal(_scale(x.view(6, 8), m, 2), want.view(6, 8))
    with pytest.raises(ValueError, match=r"per-position mask \(2, 2, 4\) does not match activations \(2, 3, 8\)"):
        _scale(x, m[:, :2], 2)


@pytest.mark.parametrize("placement,units", [(0, "both"), (1, "neurons")])
def test_dejavu_masks_in_one_pass_equal_masks_built_layer_by_layer(placement, units):
    """Independent path: for l = p+1..L-1, run the stock model masked by the layers decided so far, read layer l's
    input with a plain pre-hook, keep its top round((1 - s) U) units by torch.topk; then one masked run."""
    from shadowllm.masks.mask import Mask
    from shadowllm.predictors import DejaVuMasks

    model = tiny_opt().double()
    ad = get_adapter(model)
    ids = prompt(B=2, T=7)
    torch.manual_seed(2)
    pred = Predictor("dejavu", ad.d_model, ad.n_layers, ad.n_heads, ad.n_neurons, hidden_heads=16,
                     hidden_neurons=16, placement=placement).double()
    src = DejaVuMasks(pred, sparsity=0.5, units=units)
    with MaskHooks(ad, src), torch.no_grad():
        one_pass = model(input_ids=ids).logits

    heads, neurons = torch.ones(2, ad.n_layers, ad.n_heads), torch.ones(2, ad.n_layers, ad.n_neurons)
    for l in range(placement + 1, ad.n_layers):
        got = {}
        h = model.model.decoder.layers[l].register_forward_pre_hook(
            lambda m, a, kw, got=got: got.__setitem__("x", (a[0] if a else kw["hidden_states"])[:, -1].clone()),
            with_kwargs=True)
        with MaskHooks(ad, StaticMask(Mask(heads, neurons))), torch.no_grad():
            model(input_ids=ids)
        h.remove()
        with torch.no_grad():
            s = pred(got["x"], layer=l).float()                                # [2, H+F]
        for kind, m, sc in (("heads", heads, s[:, :ad.n_heads]), ("neurons", neurons, s[:, ad.n_heads:])):
            if units in ("both", kind):
                U = sc.shape[1]
                m[:, l] = 0
                m[:, l].scatter_(1, sc.topk(round(0.5 * U), dim=1).indices, 1.0)
    for l in range(placement + 1, ad.n_layers):
        assert torch.equal(src.head_mask(l), heads[:, l]) and torch.equal(src.neuron_mask(l), neurons[:, l]), l
    with MaskHooks(ad, StaticMask(Mask(heads, neurons))), torch.no_grad():
        two_pass = model(input_ids=ids).logits
    torch.testing.assert_close(one_pass, two_pass, rtol=0, atol=0)
    with pytest.raises(ValueError, match="DejaVuMasks runs a 'dejavu' predictor"):
        DejaVuMasks(Predictor("shadowllm", 8, 3, 2, 16, hidden_heads=4, hidden_neurons=4), 0.5)
