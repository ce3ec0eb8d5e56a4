"""Importance criteria vs independent autograd on a tiny random OPT; batching, padding, format, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shadowllm.importance import collect as C
from shadowllm.importance.criteria import CRITERIA, Criterion, register
from shadowllm.importance.traces import load_inputs, load_scores, load_static, read_meta, write_traces

L, H, D, F = 2, 4, 32, 64
DH = D // H
TOL = dict(rtol=1e-6, atol=1e-10)


@pytest.fixture(scope="module", autouse=True)
def float64_softmax():
    """OPT's eager attention computes softmax in float32; keep float64 so finite differences are exact."""
    orig = torch.nn.functional.softmax

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        return orig(x, dim=dim) if x.dtype == torch.float64 else orig(x, dim=dim, dtype=dtype)
    torch.nn.functional.softmax = softmax
    yield
    torch.nn.functional.softmax = orig


@pytest.fixture(scope="module")
def model(float64_softmax):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=50, hidden_size=D, num_hidden_layers=L, num_attention_heads=H, ffn_dim=F,
                    max_position_embeddings=64, word_embed_proj_dim=D, attn_implementation="eager")
    m = OPTForCausalLM(cfg).double().eval()
    with torch.no_grad():  # larger weights than the init so every criterion has a spread
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def make_examples(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    lens = [(7, 2), (12, 3), (4, 1), (15, 2), (9, 2), (5, 3)]
    # a small token range so next-token classes repeat (epenas needs >= 2 rows per class)
    return [C.Example(f"ex{i}", torch.randint(3, 9, (c,), generator=g).tolist(),
                      torch.randint(3, 9, (y,), generator=g).tolist()) for i, (c, y) in enumerate(lens[:n])]


@pytest.fixture(scope="module")
def batched(model):
    return C.collect(model, make_examples(), list(CRITERIA), batch_size=4, placement_layers=[1], layer_inputs=True,
                     grasp_hvp="exact")


# ---- the direct computation: plain autograd on one example, no collector code ------------------------

def direct_grads(model, e, gh_val=None, gn_val=None, create_graph=False):
    dec = model.model.decoder
    gh = [torch.ones(H, dtype=torch.float64, requires_grad=True) if gh_val is None else gh_val[l] for l in range(L)]
    gn = [torch.ones(F, dtype=torch.float64, requires_grad=True) if gn_val is None else gn_val[l] for l in range(L)]
    cap, hs = {}, []
    for l, layer in enumerate(dec.layers):
        def attn_pre(mod, args, l=l):
            a = args[0]
            if not a.requires_grad:
                a = a.detach().requires_grad_(True)
            cap["A", l] = a
            return ((a.view(*a.shape[:-1], H, DH) * gh[l][:, None]).view(a.shape),)

        def fc2_pre(mod, args, l=l):
            cap["Z", l] = args[0]
            return (args[0] * gn[l],)

        def fc1_fwd(mod, args, out, l=l):
            cap["P", l] = out
        hs += [layer.self_attn.out_proj.register_forward_pre_hook(attn_pre),
               layer.fc2.register_forward_pre_hook(fc2_pre), layer.fc1.register_forward_hook(fc1_fwd)]
    try:
        ids = torch.tensor([e.ctx_ids + e.cont_ids])
        logits = model(input_ids=ids).logits[0]
        c, n = len(e.ctx_ids), e.n
        loss = torch.nn.functional.cross_entropy(logits[c - 1:n - 1], torch.tensor(e.cont_ids))
        ws = [layer.fc1.weight for layer in dec.layers]
        keys = [("A", l) for l in range(L)] + [("Z", l) for l in range(L)] + [("P", l) for l in range(L)]
        outs = torch.autograd.grad(loss, [cap[k] for k in keys] + ws + gh + gn, create_graph=create_graph)
    finally:
        for h in hs:
            h.remove()
    g = dict(zip(keys, outs[:3 * L]))
    dW = outs[3 * L:4 * L]
    return dict(cap=cap, g=g, dW=dW, W=ws, gh=outs[4 * L:5 * L], gn=outs[5 * L:6 * L], ids=ids[0])


def direct_hvp(model, e, eps=1e-4):
    """Gate Hessian-vector product H g by central finite differences of the gate gradient."""
    base = direct_grads(model, e)
    g0h = [x.detach() for x in base["gh"]]
    g0n = [x.detach() for x in base["gn"]]

    def gates_at(s):
        return ([(1 + s * g0h[l]).requires_grad_(True) for l in range(L)],
                [(1 + s * g0n[l]).requires_grad_(True) for l in range(L)])
    p = direct_grads(model, e, *gates_at(eps))
    m = direct_grads(model, e, *gates_at(-eps))
    return ([(p["gh"][l] - m["gh"][l]) / (2 * eps) for l in range(L)],
            [(p["gn"][l] - m["gn"][l]) / (2 * eps) for l in range(L)])


def exact_gate_hvp(model, e, attn_outs, ffn_outs, n_heads):
    """H g on per-unit gates (all 1) by plain autograd: gate pre-hooks on the stock modules, a double backward."""
    dt = next(model.parameters()).dtype
    gh = [torch.ones(n_heads, dtype=dt, requires_grad=True) for _ in attn_outs]
    gn = [torch.ones(m.in_features, dtype=dt, requires_grad=True) for m in ffn_outs]
    hs = [m.register_forward_pre_hook(lambda mod, a, g=g: ((a[0].view(*a[0].shape[:-1], len(g), -1) * g[:, None])
                                                          .view(a[0].shape),)) for m, g in zip(attn_outs, gh)]
    hs += [m.register_forward_pre_hook(lambda mod, a, g=g: (a[0] * g,)) for m, g in zip(ffn_outs, gn)]
    try:
        logits = model(input_ids=torch.tensor([e.ctx_ids + e.cont_ids])).logits[0]
        c = len(e.ctx_ids)
        loss = torch.nn.functional.cross_entropy(logits[c - 1:e.n - 1], torch.tensor(e.cont_ids))
        g = torch.autograd.grad(loss, gh + gn, create_graph=True)
        hv = torch.autograd.grad(sum((x * x.detach()).sum() for x in g), gh + gn)
    finally:
        for h in hs:
            h.remove()
    return torch.stack(hv[:len(gh)]).detach(), torch.stack(hv[len(gh):]).detach()     # [L, H], [L, F]


def opt_gate_hvp(model, e):
    layers = model.model.decoder.layers
    return exact_gate_hvp(model, e, [x.self_attn.out_proj for x in layers], [x.fc2 for x in layers], H)


def jacov_np(rows):
    rows = rows[np.abs(rows).sum(-1) != 0]
    v = np.abs(np.linalg.eigvals(np.atleast_2d(np.corrcoef(rows))))
    return -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))


def epenas_np(rows, classes):
    keep = np.abs(rows).sum(-1) != 0
    rows, classes = rows[keep], classes[keep]
    s = []
    for c in np.unique(classes):
        r = rows[classes == c]
        if len(r) >= 2:
            s.append(np.sum(np.log(np.abs(np.corrcoef(r)) + 1e-5)))
    return float(sum(abs(a - b) for a in s for b in s))


UNITS_HEADS = [(0, 1), (1, 3)]
UNITS_NEURONS = [(0, 5), (1, 40)]


@pytest.mark.parametrize("ei", [0, 1, 2, 3])
def test_criteria_match_direct_autograd(model, batched, ei):
    e = make_examples()[ei]
    r = direct_grads(model, e)
    hv_h, hv_n = direct_hvp(model, e)
    ids = r["ids"].numpy()
    for l, h in UNITS_HEADS:
        A = r["cap"]["A", l][0].detach().view(-1, H, DH)[:, h]      # [T, dh]
        G = r["g"]["A", l][0].view(-1, H, DH)[:, h]
        want = {
            "plainact": (G * A).sum(-1).abs().sum(),
            "fisher": (A * G).pow(2).mean(0).sum(),
            "grad_norm": G.pow(2).sum().sqrt(),
            "l2_norm": A.pow(2).sum().sqrt(),
            "snip": r["gh"][l][h].abs(),
            "nwot": torch.log(1 + (A <= 0).sum().double()),
            "grasp": -hv_h[l][h],
            "jacov": jacov_np(G.numpy()),
            "epenas": epenas_np(G.numpy()[:-1], ids[1:]),
        }
        for name, w in want.items():
            got = batched.heads[name][ei, l, h]
            tol = dict(rtol=1e-6, atol=1e-9) if name == "grasp" else TOL
            torch.testing.assert_close(got, torch.as_tensor(w, dtype=torch.float64), **tol,
                                       msg=f"{name} head l{l} h{h} example {ei}")
    assert batched.heads["epenas"][ei].abs().sum() > 0 or ei == 2   # classes repeat in the longer examples
    for l, j in UNITS_NEURONS:
        Z, dZ = r["cap"]["Z", l][:, j].detach(), r["g"]["Z", l][:, j]
        P = r["cap"]["P", l][0, :, j].detach() if r["cap"]["P", l].dim() == 3 else r["cap"]["P", l][:, j].detach()
        W, dW = r["W"][l][j].detach(), r["dW"][l][j]
        T = Z.shape[0]
        want = {
            "plainact": (W * dW).abs().sum(),
            "fisher": (Z * dZ).pow(2).mean(),
            "grad_norm": dW.norm(),
            "l2_norm": P.norm(),
            "snip": r["gn"][l][j].abs(),
            "nwot": torch.log((1 + (P <= 0).sum().double()) / (1 + T)),
            "grasp": -hv_n[l][j],
        }
        for name, w in want.items():
            tol = dict(rtol=1e-6, atol=1e-9) if name == "grasp" else TOL
            torch.testing.assert_close(batched.neurons[name][ei, l, j], torch.as_tensor(w, dtype=torch.float64),
                                       **tol, msg=f"{name} neuron l{l} n{j} example {ei}")
    assert "jacov" not in batched.neurons and "epenas" not in batched.neurons


def test_exact_grasp_is_the_double_backward_of_plain_autograd(model, batched):
    for i, e in enumerate(make_examples()):
        hh, hn = opt_gate_hvp(model, e)
        torch.testing.assert_close(batched.heads["grasp"][i], -hh, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(batched.neurons["grasp"][i], -hn, rtol=1e-6, atol=1e-9)


def assert_fd_matches(fd: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Per layer, pooled over examples and units: Spearman > 0.999 and relative l2 error < 1e-2."""
    from scipy.stats import spearmanr

    for l in range(fd.shape[1]):
        a, b = fd[:, l].flatten().numpy(), ref[:, l].flatten().numpy()
        rho = spearmanr(a, b).correlation
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert rho > 0.999 and rel < 1e-2, f"{what} layer {l}: Spearman {rho:.6f}, relative error {rel:.1e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_finite_difference_grasp_matches_the_exact_hvp(model, dtype):
    """The default finite difference against plain autograd's exact H g (float64 reference)."""
    import copy

    exs = make_examples()
    m = copy.deepcopy(model).to(dtype)
    col = C.collect(m, exs, ["grasp"], batch_size=4)
    assert col.info["grasp_hvp"] == "finite_difference"
    ref = [opt_gate_hvp(model, e) for e in exs]
    assert_fd_matches(col.heads["grasp"], -torch.stack([r[0] for r in ref]), f"heads {dtype}")
    assert_fd_matches(col.neurons["grasp"], -torch.stack([r[1] for r in ref]), f"neurons {dtype}")
    single = C.collect(m, exs, ["grasp"], batch_size=1)   # per-example steps: batching changes only rounding
    assert_fd_matches(single.neurons["grasp"], -torch.stack([r[1] for r in ref]), f"neurons {dtype}, one by one")
    if dtype == torch.float64:  # (in float32 that rounding, divided by the step, is the finite difference's error)
        torch.testing.assert_close(single.neurons["grasp"], col.neurons["grasp"], rtol=1e-8,
                                   atol=1e-8 * col.neurons["grasp"].abs().max().item())


def test_other_criteria_and_inputs_do_not_depend_on_the_grasp_method(model, batched):
    fd = C.collect(model, make_examples(), list(CRITERIA), batch_size=4, placement_layers=[1], layer_inputs=True)
    for name in CRITERIA:
        if name != "grasp":
            torch.testing.assert_close(fd.heads[name], batched.heads[name], rtol=1e-12, atol=0)
            if name in fd.neurons:
                torch.testing.assert_close(fd.neurons[name], batched.neurons[name], rtol=1e-12, atol=0)
    for l in (0, 1):
        assert torch.equal(fd.inputs[l], batched.inputs[l]) and torch.equal(fd.inputs_context[l],
                                                                            batched.inputs_context[l])
        assert torch.equal(fd.layer_inputs[l], batched.layer_inputs[l])


def test_finite_difference_grasp_is_not_thrown_by_relu_kinks(model, monkeypatch):
    """Every layer-1 neuron 1e-9 above its kink at one token, so any step flips about half of them: the perturbed
    pass keeps the unperturbed ReLU pattern (autograd's H g takes relu'' = 0); without that it is far off."""
    import copy

    m, e = copy.deepcopy(model), make_examples()[1]
    fc1 = m.model.decoder.layers[1].fc1
    got = {}
    h = fc1.register_forward_hook(lambda mod, a, out: got.__setitem__("P", out.detach().reshape(-1, F)))
    with torch.no_grad():
        m(input_ids=torch.tensor([e.ctx_ids + e.cont_ids]))
        h.remove()
        fc1.bias -= got["P"][-2] - 1e-9
    hh, hn = opt_gate_hvp(m, e)
    col = C.collect(m, [e], ["grasp"])
    assert_fd_matches(col.heads["grasp"], -hh[None], "heads at the kinks")
    assert_fd_matches(col.neurons["grasp"], -hn[None], "neurons at the kinks")
    monkeypatch.setattr(C, "relu_patterns", lambda ad, cap: None)
    loose = C.collect(m, [e], ["grasp"]).neurons["grasp"]
    assert (loose - col.neurons["grasp"]).norm() > 0.1 * hn.norm()


def test_finite_difference_grasp_on_a_smooth_gated_ffn(model):
    """Llama (SiLU, gate and up projections, no ReLU kinks): finite difference vs exact autograd."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, attn_implementation="eager")
    m = LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    exs = make_examples()
    col = C.collect(m, exs, ["grasp"], batch_size=4)
    layers = m.model.layers
    ref = [exact_gate_hvp(m, e, [x.self_attn.o_proj for x in layers], [x.mlp.down_proj for x in layers], 4)
           for e in exs]
    assert_fd_matches(col.heads["grasp"], -torch.stack([r[0] for r in ref]), "llama heads")
    assert_fd_matches(col.neurons["grasp"], -torch.stack([r[1] for r in ref]), "llama neurons")


def test_grasp_hvp_choice_is_checked(model):
    with pytest.raises(ValueError, match="grasp_hvp 'newton' is not one of 'finite_difference', 'exact'"):
        C.collect(model, make_examples(1), ["grasp"], grasp_hvp="newton")
    import copy
    half = copy.deepcopy(model).to(torch.bfloat16)
    with pytest.raises(ValueError, match="needs a float32 or float64 model, got torch.bfloat16.*'exact'"):
        C.collect(half, make_examples(1), ["grasp"])
    C.collect(half, make_examples(1), ["plainact"])   # no grasp: no HVP, no complaint


def test_batched_equals_one_by_one_and_padding_is_inert(model, batched):
    exs = make_examples()
    single = C.collect(model, exs, list(CRITERIA), batch_size=1, placement_layers=[1], layer_inputs=True,
                       grasp_hvp="exact")
    # a different pad token and a long partner that forces much more padding
    long = C.Example("long", [5] * 30, [6, 7])
    padded = C.collect(model, exs + [long], list(CRITERIA), batch_size=5, placement_layers=[1], pad_token_id=17,
                       sort_by_length=False, layer_inputs=True, grasp_hvp="exact")
    for other in (single, padded):
        for name in CRITERIA:
            torch.testing.assert_close(batched.heads[name], other.heads[name][:4], rtol=1e-9, atol=1e-12)
            if name in batched.neurons:
                torch.testing.assert_close(batched.neurons[name], other.neurons[name][:4], rtol=1e-9, atol=1e-12)
        for l in batched.inputs:
            torch.testing.assert_close(batched.inputs[l], other.inputs[l][:4], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.inputs_context[l], other.inputs_context[l][:4], rtol=1e-5, atol=1e-6)
        for l in batched.layer_inputs:
            torch.testing.assert_close(batched.layer_inputs[l], other.layer_inputs[l][:4], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(batched.layer_inputs_context[l], other.layer_inputs_context[l][:4],
                                       rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched.loss, other.loss[:4], rtol=1e-6, atol=1e-9)


def test_predictor_inputs_are_out_proj_input_at_last_real_and_last_context_token(model, batched):
    e = make_examples()[1]
    ins, lay = {}, {}
    layers = model.model.decoder.layers
    hs = [layers[l].self_attn.out_proj.register_forward_pre_hook(
        lambda m, a, l=l: ins.__setitem__(l, a[0].detach())) for l in (0, 1)]
    hs += [layers[l].register_forward_pre_hook(lambda m, a, k, l=l: lay.__setitem__(l, (a[0] if a else k[
        "hidden_states"]).detach()), with_kwargs=True) for l in range(L)]
    with torch.no_grad():
        model(input_ids=torch.tensor([e.ctx_ids + e.cont_ids]))
    for h in hs:
        h.remove()
    c = len(e.ctx_ids) - 1
    for l in (0, 1):
        torch.testing.assert_close(batched.inputs[l][1], ins[l][0, -1].float())
        torch.testing.assert_close(batched.inputs_context[l][1], ins[l][0, c].float())
    for l in range(L):  # DejaVu's input: the residual stream entering each layer
        torch.testing.assert_close(batched.layer_inputs[l][1], lay[l][0, -1].float())
        torch.testing.assert_close(batched.layer_inputs_context[l][1], lay[l][0, c].float())


def test_gradient_free_criteria_run_without_backward(model, batched, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("backward called")
    monkeypatch.setattr(torch.autograd, "grad", boom)
    col = C.collect(model, make_examples(), ["l2_norm", "nwot"], batch_size=4)
    torch.testing.assert_close(col.heads["nwot"], batched.heads["nwot"])
    torch.testing.assert_close(col.neurons["l2_norm"], batched.neurons["l2_norm"])


def test_write_and_read_traces(model, batched, tmp_path):
    paths = write_traces(tmp_path, batched, model="tiny", task="t", k=3, seed=0, neuron_traces="all")
    assert {p.name for p in paths} == {"inputs.safetensors"} | {f"{c}.safetensors" for c in CRITERIA}
    for p in paths:
        assert (p.parent / (p.name + ".meta.json")).is_file()
    assert not list(tmp_path.glob(".tmp-*"))
    for name in CRITERIA:
        s = load_scores(tmp_path / f"{name}.safetensors", "heads")
        raw = batched.heads[name].float()
        span = (raw.amax(-1) - raw.amin(-1))[..., None]
        assert ((s - raw).abs() <= span * 1e-3 + 1e-12).all(), name
        # order within a layer is kept (ties may appear, never inversions)
        for n in range(raw.shape[0]):
            for l in range(L):
                o = torch.argsort(raw[n, l])
                assert (torch.diff(s[n, l][o]) >= 0).all()
        torch.testing.assert_close(load_static(tmp_path / f"{name}.safetensors"), raw.mean(0))
    with pytest.raises(ValueError, match="head-only"):
        load_scores(tmp_path / "jacov.safetensors", "neurons")
    inp = load_inputs(tmp_path / "inputs.safetensors")
    assert inp["ids"] == batched.ids
    assert set(inp["predictor_input"]["full"]) == set(inp["predictor_input"]["context"]) == {0, 1}
    torch.testing.assert_close(inp["predictor_input"]["full"][1], batched.inputs[1], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(inp["predictor_input"]["context"][0], batched.inputs_context[0], rtol=1e-3, atol=1e-3)
    assert read_meta(tmp_path / "fisher.safetensors")["criterion"] == "fisher"
    meta = json.loads((tmp_path / "fisher.safetensors.meta.json").read_text())
    assert meta["config"]["k"] == 3


def test_neuron_traces_subset(batched, tmp_path):
    write_traces(tmp_path, batched, model="tiny", task="t", k=0, seed=0, neuron_traces="plainact")
    load_scores(tmp_path / "plainact.safetensors", "neurons")
    with pytest.raises(ValueError, match="not kept"):
        load_scores(tmp_path / "fisher.safetensors", "neurons")
    assert load_static(tmp_path / "fisher.safetensors", "neurons").shape == (L, F)


# ---- invalid input ----------------------------------------------------------------------------

def test_unknown_criterion_is_named(model):
    with pytest.raises(ValueError, match="'bogus'"):
        C.collect(model, make_examples(1), ["plainact", "bogus"])


def test_k_larger_than_split_is_named():
    rows = [{"id": str(i), "query": f"q{i} Answer:", "choices": [" a", " b"], "gold": i % 2} for i in range(4)]
    with pytest.raises(ValueError, match=r"k=4 .*'toy'.* 4 examples"):
        C.kshot_prompts(rows, 4, seed=0, task="toy")


def test_nan_score_stops_and_writes_nothing(model, tmp_path):
    @register
    class Broken(Criterion):
        name = "broken_for_test"
        needs_grad = False

        @staticmethod
        def heads(d):
            s = d.A.sum((1, 3)) * 0
            s[-1, 2] = float("nan")
            return s
    try:
        with pytest.raises(ValueError, match=r"'broken_for_test'.*non-finite head score.*example 'ex\d'"):
            col = C.collect(model, make_examples(2), ["plainact", "broken_for_test"], batch_size=2)
            write_traces(tmp_path, col, model="tiny", task="t", k=0, seed=0)
    finally:
        CRITERIA.pop("broken_for_test")
    assert not list(tmp_path.iterdir())


def test_inf_in_collected_scores_blocks_writing(batched, tmp_path):
    import copy
    bad = copy.deepcopy(batched)
    bad.neurons["fisher"][1, 0, 3] = float("inf")
    with pytest.raises(ValueError, match=r"'fisher'.*neuron.*'ex1'"):
        write_traces(tmp_path, bad, model="tiny", task="t", k=0, seed=0)
    assert not list(tmp_path.iterdir())


# ---- prompts ----------------------------------------------------------------------------------

def test_kshot_prompts_deterministic_and_exclude_self():
    rows = [{"id": str(i), "query": f"Q{i}? Answer:", "choices": [f" A{i}", f" B{i}"], "gold": i % 2}
            for i in range(12)]
    a = C.kshot_prompts(rows, 3, seed=7, max_examples=5)
    assert a == C.kshot_prompts(rows, 3, seed=7, max_examples=5)
    assert a != C.kshot_prompts(rows, 3, seed=8, max_examples=5)
    assert a[:3] == C.kshot_prompts(rows, 3, seed=7, max_examples=3)
    for pid, ctx, cont in a:
        i = int(pid)
        parts = ctx.split("\n\n")
        assert len(parts) == 4 and parts[-1] == rows[i]["query"]
        assert all(f"Q{i}?" not in p for p in parts[:-1])
        assert cont == rows[i]["choices"][rows[i]["gold"]]
    z = C.kshot_prompts(rows, 0, seed=7, max_examples=2)
    assert all(ctx == rows[int(pid)]["query"] for pid, ctx, _ in z)


def test_traces_of_another_format_version_are_refused(batched, tmp_path):
    from safetensors.torch import load_file, save_file

    write_traces(tmp_path, batched, model="tiny", task="t", k=0, seed=0, neuron_traces="none")
    for name in ("inputs", "plainact"):
        p = tmp_path / f"{name}.safetensors"
        md = read_meta(p)
        save_file(load_file(str(p)), str(p), metadata={k: v if isinstance(v, str) else json.dumps(v)
                                                      for k, v in {**md, "format_version": "1"}.items()})
    with pytest.raises(ValueError, match="format version 1, expected 2"):
        load_inputs(tmp_path / "inputs.safetensors")
    with pytest.raises(ValueError, match="format version 1, expected 2"):
        load_scores(tmp_path / "plainact.safetensors")


def test_importance_bench_names_a_missing_model_folder(tmp_path, capsys):
    from shadowllm.cli import main

    rc = main(["bench-importance", "--model", str(tmp_path / "nope"), "--n", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and "is not a model folder" in err


# ---- the same criteria on a Llama with grouped-query attention and a SwiGLU FFN --------------------------

LH, LKV, LF = 4, 2, 48


@pytest.fixture(scope="module")
def llama(float64_softmax):
    """Float64 end to end: Llama's RMSNorm computes in float32 (~1e-7 between a padded batch and one example,
    which jacov's near-singular correlations amplify), so this module's copy keeps the input's dtype."""
    from transformers.models.llama import modeling_llama

    def rms64(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    orig = modeling_llama.LlamaRMSNorm.forward
    modeling_llama.LlamaRMSNorm.forward = rms64
    yield _llama()
    modeling_llama.LlamaRMSNorm.forward = orig


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=D, intermediate_size=LF, num_hidden_layers=L, num_attention_heads=LH,
                      num_key_value_heads=LKV, max_position_embeddings=64, attn_implementation="eager")
    m = LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def direct_llama(model, e):
    """Plain autograd on one example: o_proj / down_proj inputs, gate / up outputs, gate / up weight gradients."""
    layers = model.model.layers
    cap, hs = {}, []
    for l, layer in enumerate(layers):
        def pre(key, l=l):
            def f(mod, args):
                a = args[0] if args[0].requires_grad else args[0].detach().requires_grad_(True)
                cap[key, l] = a
                return (a,)
            return f

        def fwd(key, l=l):
            def f(mod, args, out):
                cap[key, l] = out
            return f
        hs += [layer.self_attn.o_proj.register_forward_pre_hook(pre("A")),
               layer.mlp.down_proj.register_forward_pre_hook(pre("Z")),
               layer.mlp.gate_proj.register_forward_hook(fwd("Pg"))]
    try:
        ids = torch.tensor([e.ctx_ids + e.cont_ids])
        logits = model(input_ids=ids).logits[0]
        c = len(e.ctx_ids)
        loss = torch.nn.functional.cross_entropy(logits[c - 1:e.n - 1], torch.tensor(e.cont_ids))
        keys = [(k, l) for k in ("A", "Z") for l in range(L)]
        ws = [x.mlp.gate_proj.weight for x in layers] + [x.mlp.up_proj.weight for x in layers]
        outs = torch.autograd.grad(loss, [cap[k] for k in keys] + ws)
    finally:
        for h in hs:
            h.remove()
    return dict(cap=cap, g=dict(zip(keys, outs[:2 * L])), W=ws, dW=outs[2 * L:], ids=ids[0])


@pytest.mark.parametrize("ei", [0, 3])
def test_criteria_match_direct_autograd_on_llama_gqa(llama, ei):
    exs = make_examples()
    col = C.collect(llama, exs, list(CRITERIA), batch_size=4, placement_layers=[1], layer_inputs=True,
                    grasp_hvp="exact")
    layers = llama.model.layers
    hh, hn = exact_gate_hvp(llama, exs[ei], [x.self_attn.o_proj for x in layers], [x.mlp.down_proj for x in layers],
                            LH)
    r = direct_llama(llama, exs[ei])
    ids = r["ids"].numpy()
    for l in range(L):
        for h in range(LH):   # every query head, both of each KV head's pair
            A = r["cap"]["A", l][0].detach().view(-1, LH, DH)[:, h]
            G = r["g"]["A", l][0].view(-1, LH, DH)[:, h]
            gh = (A * G).sum()
            want = {"plainact": (G * A).sum(-1).abs().sum(), "fisher": (A * G).pow(2).mean(0).sum(),
                    "grad_norm": G.pow(2).sum().sqrt(), "l2_norm": A.pow(2).sum().sqrt(), "snip": gh.abs(),
                    "nwot": torch.log(1 + (A <= 0).sum().double()), "grasp": -hh[l][h],
                    "jacov": jacov_np(G.numpy()), "epenas": epenas_np(G.numpy()[:-1], ids[1:])}
            for name, w in want.items():
                torch.testing.assert_close(col.heads[name][ei, l, h], torch.as_tensor(w, dtype=torch.float64),
                                           rtol=1e-6, atol=1e-9, msg=f"llama {name} head l{l} h{h}")
        Z, dZ = r["cap"]["Z", l][0].detach(), r["g"]["Z", l][0]
        P = r["cap"]["Pg", l][0].detach()                            # gate output (pre-activation)
        Wg, Wu, dWg, dWu = r["W"][l], r["W"][L + l], r["dW"][l], r["dW"][L + l]
        T = Z.shape[0]
        want = {"plainact": (Wg * dWg).abs().sum(-1) + (Wu * dWu).abs().sum(-1),
                "grad_norm": (dWg.pow(2).sum(-1) + dWu.pow(2).sum(-1)).sqrt(),
                "fisher": (Z * dZ).pow(2).mean(0), "snip": (Z * dZ).sum(0).abs(), "l2_norm": P.norm(dim=0),
                "nwot": torch.log((1 + (P <= 0).sum(0).double()) / (1 + T)), "grasp": -hn[l]}
        for name, w in want.items():  # absolute tolerance relative to the layer's largest score
            w = w.detach().double()
            torch.testing.assert_close(col.neurons[name][ei, l], w, rtol=1e-6, atol=1e-7 * w.abs().max().item(),
                                       msg=lambda m, name=name, l=l: f"llama {name} neurons l{l}: {m}")
    # the predictor input is o_proj's input at the last context token (H query heads x dh)
    c = len(exs[ei].ctx_ids)
    torch.testing.assert_close(col.inputs_context[1][ei].double(), r["cap"]["A", 1][0, c - 1].detach(),
                               rtol=1e-6, atol=1e-7)
