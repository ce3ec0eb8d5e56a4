"""The ablation grid: exact-k selection, hybrid floors, and each protocol through the masked lm-eval model,
against independent paths (masks computed first then a plain masked forward, token-by-token decoding through
the KV cache, the criterion collected by hand, the stock HFLM)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_sparse_decoder import tiny_opt

from shadowllm.layout.grid import DENSE, Point
from shadowllm.ablations.lm import make_masked_lm
from shadowllm.ablations.sources import Settings, build
from shadowllm.adapter import get_adapter
from shadowllm.masks import MaskHooks, StaticMask, mask_from_scores, topk_mask
from shadowllm.predictors import Predictor

# ---- selection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["local", "global", "hybrid"])
@pytest.mark.parametrize("units", ["both", "heads", "neurons"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7])
def test_exactly_k_units_pruned_with_ties_broken_by_position(style, units, sparsity):
    g = torch.Generator().manual_seed(1)
    L, H, F = 5, 6, 40
    hs = torch.randint(0, 3, (2, L, H), generator=g).float()          # many ties
    ns = torch.randint(0, 3, (2, L, F), generator=g).float()
    m = mask_from_scores(hs, ns, sparsity, style, units=units, placement=1, min_neurons=4)
    again = mask_from_scores(hs, ns, sparsity, style, units=units, placement=1, min_neurons=4)
    assert torch.equal(m.heads, again.heads) and torch.equal(m.neurons, again.neurons)
    for kind, t, U in (("heads", m.heads, H), ("neurons", m.neurons, F)):
        assert (t[:, :2] == 1).all()                                    # layers up to the placement dense
        pruned = (t[:, 2:] == 0).sum((-1, -2)) if style != "local" else (t[:, 2:] == 0).sum(-1)
        if units not in ("both", kind):
            assert (t == 1).all()
            continue
        want = (L - 2) * U - round((1 - sparsity) * (L - 2) * U) if style != "local" else U - round((1 - sparsity) * U)
        assert (pruned == want).all(), (kind, pruned, want)
    # all-equal scores: the lowest indices are kept (local) / the earliest layers first (global)
    flat = topk_mask(torch.zeros(1, 3, 4), 0.5, "local")
    assert flat[0, 1].tolist() == [1, 1, 0, 0]
    glob = topk_mask(torch.zeros(1, 3, 4), 0.5, "global")
    assert glob[0, 1].tolist() == [1, 1, 1, 1] and glob[0, 2].tolist() == [0, 0, 0, 0]


def _hybrid_reference(s: torch.Tensor, sparsity: float, floor: int) -> torch.Tensor:
    """Plain loops: each layer's `floor` best units, then the best remaining ones globally up to the budget."""
    Lp, U = s.shape
    k = round((1 - sparsity) * Lp * U)
    keep = set()
    for l in range(Lp):
        order = sorted(range(U), key=lambda u: (-s[l, u].item(), u))
        keep |= {(l, u) for u in order[:floor]}
    rest = sorted(((l, u) for l in range(Lp) for u in range(U) if (l, u) not in keep),
                  key=lambda lu: (-s[lu].item(), lu[0] * U + lu[1]))
    keep |= set(rest[:k - len(keep)])
    m = torch.zeros(Lp, U)
    for lu in keep:
        m[lu] = 1
    return m


@pytest.mark.parametrize("sparsity", [0.5, 0.8])
def test_hybrid_floors_hold_and_total_stays_exact(sparsity):
    g = torch.Generator().manual_seed(3)
    s = torch.rand(1, 5, 20, generator=g)
    s[0, 3] -= 2.0                                                      # layer 3 loses every global pick
    m = topk_mask(s, sparsity, "hybrid", min_keep=3, placement=0)
    assert (m[0, 1:].sum(-1) >= 3).all()
    assert m[0, 1:].sum() == round((1 - sparsity) * 4 * 20)
    assert torch.equal(m[0, 1:], _hybrid_reference(s[0, 1:], sparsity, 3))
    assert topk_mask(s, sparsity, "global")[0, 3].sum() == 0            # what the floor fixes
    with pytest.raises(ValueError, match="fewer than the hybrid floor of 20 per layer"):
        topk_mask(s, 0.5, "hybrid", min_keep=20)


# ---- the masked lm-eval model --------------------------------------------------------------------

def _pred(ad, design="shadowllm", placement=0, seed=5):
    torch.manual_seed(seed)
    d_in = ad.d_model if design == "dejavu" else ad.n_heads * ad.head_dim
    pred = Predictor(design, d_in, ad.n_layers, ad.n_heads, ad.n_neurons, hidden_heads=16, hidden_neurons=16,
                     placement=placement)
    with torch.no_grad():
        for m in pred.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.zero_()                           # the input alone sets the ranking
    return pred.eval()


def _saved(tmp_path, pred, criterion="plainact", model="m"):
    path = tmp_path / f"{pred.design}.safetensors"
    pred.save(path, meta={"model": model, "criterion": criterion, "design": pred.design,
                          "placement": pred.placement, "normalize": "raw", "seed": 0})
    return str(path)


def _lm(model, tok, tmp_path, point, batch_size=4, **kw):
    ad = get_adapter(model)
    pred = None
    if point.design in ("shadowllm", "dejavu"):
        pred = _saved(tmp_path, _pred(ad, point.design, point.placement))
    s = Settings(point=point, model="m", predictor=pred, **kw)
    return make_masked_lm(model, tok, build(ad, s), point.protocol, batch_size=batch_size)


@pytest.fixture(params=["opt", "llama"])
def tiny(saved_tiny, request):
    """(model, tokenizer): the tiny trained OPT, or a tiny random Llama with grouped-query attention (4 query heads
    over 2 KV heads, SwiGLU) beside the same tokenizer (HFLM needs a real tokenizer object)."""
    from shadowllm.loading import load_model

    model, tok = load_model(str(saved_tiny[0]))
    if request.param == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=model.config.vocab_size, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, pad_token_id=tok.pad_token_id)
        cfg._attn_implementation = "sdpa"
        model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(4.0)
    return model, tok


def _requests(rows):
    """[(ctx ids, cont ids)] -> _loglikelihood_tokens requests."""
    return [(("c", "x"), list(c), list(y)) for c, y in rows]


def _rows(B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(B):
        ctx = torch.randint(3, 400, (T - 2 - b,), generator=g).tolist()
        for ans in range(2):                                             # two 2-token candidates per question
            out.append((ctx, torch.randint(3, 400, (2,), generator=g).tolist()))
    return out


def _dense_logp(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)


def _masked_logp(model, ids, mask):
    with MaskHooks(get_adapter(model), StaticMask(mask)), torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)


def _placement_input(model, ids, placement, pos):
    """The predictor input at `pos` by a plain pre-hook on the stock out_proj (dense: layers <= placement are)."""
    got = {}
    h = get_adapter(model).attn_out(placement).register_forward_pre_hook(
        lambda m, a: got.__setitem__("a", a[0][0, pos].detach().clone()))
    with torch.no_grad():
        model(torch.tensor([ids]))
    h.remove()
    return got["a"]


def _ll(logp, ids, n_cont):
    tgt = torch.tensor(ids[-n_cont:])
    return logp[len(ids) - 1 - n_cont:len(ids) - 1].gather(-1, tgt[:, None]).sum().item()


@pytest.mark.parametrize("protocol", ["sequence", "prompt"])
@pytest.mark.parametrize("style", ["global", "hybrid"])
def test_predicted_in_pass_equals_masks_computed_first_then_a_masked_forward(tiny, tmp_path, protocol, style):
    model, tok = tiny
    ad = get_adapter(model)
    p = Point("predicted", "plainact", "raw", "0+5", 0, 0, style, "both", protocol, 0.5)
    lm = _lm(model, tok, tmp_path, p, min_neurons=8)
    rows = _rows()
    got = lm._loglikelihood_tokens(_requests(rows))
    pred = _pred(ad)
    masks = []
    for (ctx, cont), (ll, _) in zip(rows, got):
        ids = ctx + cont
        inp = ids[:-1]
        pos = len(inp) - 1 if protocol == "sequence" else len(ctx) - 1
        with torch.no_grad():
            s = pred(_placement_input(model, inp, 0, pos)[None])                # [1, L, H+F]
        m = mask_from_scores(s[..., :ad.n_heads], s[..., ad.n_heads:], 0.5, style, min_neurons=8)
        masks.append(m)
        assert math.isclose(ll, _ll(_masked_logp(model, inp, m), ids, len(cont)), rel_tol=1e-5, abs_tol=1e-5)
    same = [torch.equal(masks[i].heads, masks[i + 1].heads) and torch.equal(masks[i].neurons, masks[i + 1].neurons)
            for i in range(0, len(masks), 2)]
    # prompt: both candidates of a question share the context's mask; sequence: each reads its own candidate
    assert all(same) if protocol == "prompt" else not all(same)
    dense = [_ll(_dense_logp(model, (c + y)[:-1]), c + y, len(y)) for c, y in rows]
    assert any(abs(a - b) > 1e-3 for (a, _), b in zip(got, dense))           # the masks did something


def test_token_protocol_equals_decoding_token_by_token_with_each_positions_mask(tiny, tmp_path):
    model, tok = tiny
    model = model.double()
    ad = get_adapter(model)
    p = Point("predicted", "plainact", "raw", "0+5", 0, 0, "global", "both", "token", 0.5)
    lm = _lm(model, tok, tmp_path, p)
    rows = _rows(B=2)
    got = lm._loglikelihood_tokens(_requests(rows))
    from shadowllm.predictors import PredictedMasks
    pred = _pred(ad).double()
    for (ctx, cont), (ll, _) in zip(rows, got):
        ids = ctx + cont
        x = torch.tensor([ids[:-1]])
        past, logits = None, []
        for t in range(x.shape[1]):                                              # the stock KV-cache path
            step = PredictedMasks(pred, 0.5, "global", "both", position=-1)
            with MaskHooks(ad, step), torch.no_grad():
                out = model(input_ids=x[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits.append(out.logits[0, 0])
        logp = torch.log_softmax(torch.stack(logits).double(), -1)
        assert math.isclose(ll, _ll(logp, ids, len(cont)), rel_tol=1e-6, abs_tol=1e-6)


def test_dejavu_protocols_run_and_prompt_shares_the_mask(tiny, tmp_path):
    model, tok = tiny
    rows = _rows()
    res = {}
    for proto in ("sequence", "prompt", "token"):
        p = Point("dejavu", "plainact", "raw", "0+5", 0, 0, "local", "both", proto, 0.5)
        res[proto] = [ll for ll, _ in _lm(model, tok, tmp_path, p)._loglikelihood_tokens(_requests(rows))]
    assert res["sequence"] != res["prompt"] and res["token"] != res["prompt"]


def test_prompt_cuts_a_long_context_once_per_question_so_its_choices_share_the_mask(tiny, tmp_path):
    """A context longer than the window: under prompt every choice keeps the same last M + 1 - (longest choice)
    context tokens, so the mask (read at the last context token) is the question's; each log-likelihood is a
    plain masked forward on those tokens. A question that fits is not cut; sequence still cuts each row alone."""
    model, tok = tiny
    ad = get_adapter(model)
    M = 16
    g = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(3, 400, (n,), generator=g).tolist()            # noqa: E731
    long_ctx, short_ctx = ids(30), ids(6)
    rows = [(long_ctx, ids(n)) for n in (1, 3, 5)] + [(short_ctx, ids(n)) for n in (2, 4)]
    keep = {tuple(long_ctx): M + 1 - 5, tuple(short_ctx): 6}                     # the whole short context fits
    p = Point("predicted", "plainact", "raw", "0+5", 0, 0, "global", "both", "prompt", 0.5)
    mask_for = build(ad, Settings(point=p, model="m", predictor=_saved(tmp_path, _pred(ad)), min_neurons=8))
    seen = []                                                                    # (row tokens, ctx_pos) handed

    def spy(batch):
        seen.extend((tuple(batch.x[b, :int(batch.lengths[b])].tolist()), int(batch.ctx_pos[b]))
                    for b in range(len(batch.lengths)))
        return mask_for(batch)
    lm = make_masked_lm(model, tok, spy, "prompt", batch_size=2, max_len=M)
    got = lm._loglikelihood_tokens(_requests(rows))
    pred, masks = _pred(ad), []
    for (ctx, cont), (ll, _) in zip(rows, got):
        c = ctx[-keep[tuple(ctx)]:]
        inp = (c + cont)[:-1]
        assert len(inp) <= M and (tuple(inp), len(c) - 1) in seen               # the row and position handed
        with torch.no_grad():
            s = pred(_placement_input(model, inp, 0, len(c) - 1)[None])
        m = mask_from_scores(s[..., :ad.n_heads], s[..., ad.n_heads:], 0.5, "global", min_neurons=8)
        masks.append(m)
        assert math.isclose(ll, _ll(_masked_logp(model, inp, m), c + cont, len(cont)), rel_tol=1e-5, abs_tol=1e-5)
    same = lambda a, b: torch.equal(a.heads, b.heads) and torch.equal(a.neurons, b.neurons)  # noqa: E731
    assert same(masks[0], masks[1]) and same(masks[0], masks[2]) and same(masks[3], masks[4])
    long_prefixes = {r[:pos + 1] for r, pos in seen if pos > 5}                 # the long question's rows
    assert len(long_prefixes) == 1 and list(long_prefixes.pop()) == long_ctx[-keep[tuple(long_ctx)]:]
    # cut per row (as stock HFLM does), the long question's choices would have seen different contexts
    stock = [(ctx + cont)[-(M + 1):][:-len(cont)] for ctx, cont in rows[:3]]
    assert len({tuple(c) for c in stock}) == 3

    seen.clear()                                                                 # sequence: each row alone, as before
    dense = make_masked_lm(model, tok, lambda b: spy(b) and None, "sequence", batch_size=2, max_len=M)
    for (ctx, cont), (ll, _) in zip(rows, dense._loglikelihood_tokens(_requests(rows))):
        toks = (ctx + cont)[-(M + 1):]
        assert tuple(toks[:-1]) in {r for r, _ in seen}
        assert math.isclose(ll, _ll(_dense_logp(model, toks[:-1]), toks, len(cont)), rel_tol=1e-5, abs_tol=1e-5)

    with pytest.raises(ValueError, match=r"continuation of 17 tokens .*max_length=16"):
        lm._loglikelihood_tokens(_requests([(long_ctx, ids(17))]))
    from lm_eval.api.instance import Instance
    inst = Instance("loglikelihood", {}, ("The cause was", " the rain fell on the town" * 8), 0, ("my_task", 0, 1))
    with pytest.raises(ValueError, match=r"task 'my_task'.*max_length=16"):                # named through lm-eval
        lm.loglikelihood([inst], disable_tqdm=True)


def test_sparsity_zero_gives_the_dense_numbers_exactly_and_dense_matches_stock_hflm(saved_tiny, task_dir, tmp_path):
    from shadowllm.evaluate import harness, make_lm
    from shadowllm.loading import load_model

    path, _ = saved_tiny
    model, tok = load_model(str(path))
    tasks = ["bb_cause_and_effect", "corpus_test"]
    dense = harness.run(_lm(model, tok, tmp_path, DENSE, batch_size=8), tasks, include_path=task_dir, limit=12)
    for proto in ("sequence", "prompt", "token"):
        p = Point("predicted", "plainact", "raw", "0+5", 0, 0, "global", "both", proto, 0.0)
        zero = harness.run(_lm(model, tok, tmp_path, p, batch_size=8), tasks, include_path=task_dir, limit=12)
        assert zero == dense, proto
    half = harness.run(_lm(model, tok, tmp_path, Point("random", style="global", units="both", sparsity=0.7),
                           batch_size=8), tasks, include_path=task_dir, limit=12)
    assert half["corpus_test"]["word_perplexity"] != dense["corpus_test"]["word_perplexity"]
    stock = harness.run(make_lm(model, tok, batch_size=8), tasks, include_path=task_dir, limit=12)
    assert stock["bb_cause_and_effect"]["acc"] == dense["bb_cause_and_effect"]["acc"]
    assert stock["bb_cause_and_effect"]["acc_norm"] == dense["bb_cause_and_effect"]["acc_norm"]


def test_perplexity_of_the_masked_lm_equals_stock_hflm(saved_tiny, tmp_path):
    from shadowllm import data
    from shadowllm.evaluate import harness, make_lm
    from shadowllm.loading import load_model

    path, _ = saved_tiny
    model, tok = load_model(str(path))
    d = data.materialize_tasks(tmp_path / "t")
    ours = harness.run(_lm(model, tok, tmp_path, DENSE, batch_size=8), ["corpus_test"], include_path=d, limit=6)
    stock = harness.run(make_lm(model, tok, batch_size=8), ["corpus_test"], include_path=d, limit=6)
    for k in ("word_perplexity", "byte_perplexity"):
        assert math.isclose(ours["corpus_test"][k], stock["corpus_test"][k], rel_tol=1e-5)


def test_oracle_mask_is_the_criterion_on_context_plus_gold_shared_by_every_choice(saved_tiny, task_dir):
    from shadowllm import data
    from shadowllm.importance.collect import Example, collect
    from shadowllm.loading import load_model

    path, _ = saved_tiny
    model, tok = load_model(str(path))
    ad = get_adapter(model)
    p = Point("oracle", "plainact", "raw", "none", 0, 0, "global", "both", "gold", 0.5)
    mask_for = build(ad, Settings(point=p, model="m", min_neurons=8))
    seen = []

    def spy(batch):
        src = mask_for(batch)
        seen.append((batch, src.mask))
        return src
    from shadowllm.evaluate import harness
    lm = make_masked_lm(model, tok, spy, "gold", batch_size=64)
    harness.run(lm, ["bb_cause_and_effect"], include_path=task_dir, limit=5)
    docs = {d["query"].strip(): d for d in data.load_split("bb_cause_and_effect", "eval")}
    checked = 0
    for batch, mask in seen:
        for b, (ctx, gold) in enumerate(batch.gold):
            fit = 64 - len(gold)                                            # the model's 64 positions
            col = collect(model, [Example("x", list(ctx)[-fit:], list(gold))], ["plainact"], pad_token_id=1)
            ref = mask_from_scores(col.heads["plainact"].float(), col.neurons["plainact"].float(), 0.5, "global",
                                   min_neurons=8)
            assert torch.equal(mask.heads[b], ref.heads[0]) and torch.equal(mask.neurons[b], ref.neurons[0])
            doc = docs[tok.decode(list(ctx), skip_special_tokens=True).strip()]
            assert tok.decode(list(gold)).strip() == doc["choices"][doc["gold"]].strip()
            checked += 1
    assert checked >= 5


# ---- grid, config and bad input ------------------------------------------------------------------

def _cfg(**ab):
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/test-small.yaml").read_text())
    cfg["ablations"] = {"grids": {"g": {"source": ["static", "predicted", "dejavu", "random", "oracle"],
                                        "criterion": ["plainact"], "style": ["global"], **ab}}}
    return cfg


def test_grid_expansion_collapses_protocols_of_input_independent_sources():
    from shadowllm.layout.grid import expand
    from shadowllm.config import validate

    cfg = validate(_cfg(zero_shot=True))
    pts = expand(cfg)
    by = {}
    for p in pts:
        by.setdefault(p.source, set()).add((p.protocol, p.style))
    assert by["static"] == {("none", "global")} and by["random"] == {("none", "global")}
    assert by["oracle"] == {("gold", "global")}
    assert by["predicted"] == {(x, "global") for x in ("sequence", "prompt", "token")}
    assert by["dejavu"] == {(x, "local") for x in ("sequence", "prompt", "token")}
    assert all(pts.values())


@pytest.mark.parametrize("grid,match", [
    ({"protocol": ["causal"]}, "causal"),
    ({"style": ["topk"]}, "topk"),
    ({"sparsity": [1.0]}, "1.0"),
    ({"sparsity": [-0.1]}, "-0.1"),
    ({"source": ["magic"]}, "magic"),
    ({"normalize": ["global"]}, "global"),
    ({"seeds": [-1]}, "-1"),
])
def test_bad_grid_values_are_named_before_any_job(grid, match):
    from shadowllm.config import ConfigError, validate

    cfg = _cfg()
    cfg["ablations"]["grids"]["g"].update(grid)
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_point_checks_name_the_bad_value():
    with pytest.raises(ValueError, match=r"sparsity 1\.0 is outside \[0, 1\)"):
        Point("static", "plainact", "raw", "0", 0, 0, "global", "both", "none", 1.0).check()
    with pytest.raises(ValueError, match="protocol 'causal' is not one of"):
        Point("predicted", "plainact", "raw", "0", 0, 0, "global", "both", "causal", 0.5).check()
    with pytest.raises(ValueError, match="style 'global' is not one of \\['local'\\] for source 'dejavu'"):
        Point("dejavu", "plainact", "raw", "0", 0, 0, "global", "both", "sequence", 0.5).check()
    with pytest.raises(ValueError, match=r"normalize 'global' is not one of \['raw', 'layer', 'example'\]"):
        Point("static", "plainact", "global", "0", 0, 0, "global", "both", "none", 0.5).check()
    with pytest.raises(ValueError, match="source 'random' ranks no criterion: normalize must be 'none', got 'raw'"):
        Point("random", normalize="raw", style="global", units="both", sparsity=0.5).check()
    with pytest.raises(ValueError, match="source 'static' has no seed: seed must be 0, got 2"):
        Point("static", "plainact", "raw", "0", 2, 0, "global", "both", "none", 0.5).check()


@pytest.mark.parametrize("meta,match", [({"model": "other"}, "model is 'other', expected 'm'"),
                                        ({"criterion": "fisher"}, "criterion is 'fisher', expected 'plainact'"),
                                        ({"normalize": "layer"}, "normalize is 'layer', expected 'raw'"),
                                        ({"seed": 3}, "seed is 3, expected 0")])
def test_a_predictor_of_another_model_or_criterion_is_refused_before_the_model_loads(tmp_path, meta, match, capsys):
    from shadowllm.cli import main

    model = tiny_opt()
    pred = _pred(get_adapter(model))
    f = tmp_path / "p.safetensors"
    pred.save(f, meta={"model": "m", "criterion": "plainact", "design": "shadowllm", "placement": 0,
                       "normalize": "raw", "seed": 0, **meta})
    argv = ["ablate-point", "--model", str(tmp_path / "no-such-model"), "--model-name", "m", "--source", "predicted",
            "--criterion", "plainact", "--style", "global", "--units", "both", "--protocol", "prompt",
            "--sparsity", "0.5", "--predictor", str(f), "--tasks", "bb_winowhy", "--out", str(tmp_path / "o.json")]
    assert main(argv) == 2                   # the model folder does not exist: the predictor was checked first
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_ablate_cli_writes_a_point_and_the_table_reads_it(saved_tiny, task_dir, tmp_path, capsys):
    from shadowllm.ablations.tables import load_results
    from shadowllm.cli import main

    path, _ = saved_tiny
    out = tmp_path / "r.json"
    rc = main(["ablate-point", "--model", str(path), "--model-name", "m", "--source", "random", "--style", "hybrid",
               "--units", "both", "--sparsity", "0.5", "--min-neurons", "8", "--tasks", "bb_cause_and_effect",
               "--ppl-task", "corpus_test", "--ppl-limit", "3",
               "--limit", "10", "--include", str(task_dir), "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["point"]["source"] == "random" and r["point"]["design"] == "none"
    df = load_results([out])
    assert set(df.metric) == {"acc", "acc_norm", "word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert (df.sparsity == 0.5).all()
    with pytest.raises(ValueError, match="two results for the same grid point"):
        load_results([out, out])
    # the per-document results give back lm-eval's own aggregates: acc is their mean, word perplexity
    # exp(-sum ll / sum words) over the documents; the table of them keeps one row per document
    from shadowllm.ablations.tables import load_samples, read_samples, write_samples

    sm = r["samples"]
    assert len(sm["bb_cause_and_effect"]["acc"]) == 10 and len(sm["corpus_test"]["ll"]) == 3
    res = dict(zip(zip(df.task, df.metric), df.value))
    assert np.mean(sm["bb_cause_and_effect"]["acc"]) == pytest.approx(res["bb_cause_and_effect", "acc"])
    ll, words = np.array(sm["corpus_test"]["ll"]), np.array(sm["corpus_test"]["words"])
    assert np.exp(-ll.sum() / words.sum()) == pytest.approx(res["corpus_test", "word_perplexity"], rel=1e-9)
    s = read_samples(write_samples([out], tmp_path / "samples.csv"))
    assert len(s) == 13 and s.ll.notna().sum() == 3 and (s.label[s.acc.notna()] != "").all()
    with pytest.raises(ValueError, match="two results for the same grid point, task and document"):
        load_samples([out, out])


def test_report_tables_carry_the_table_values():
    import pandas as pd

    from shadowllm.ablations.report import report_markdown

    rows = []
    pts = [Point("dense"), Point("static", "plainact", "raw", "0+5", 0, 0, "global", "both", "none", 0.5),
           Point("static", "l2_norm", "raw", "0+5", 0, 0, "global", "both", "none", 0.5),
           Point("predicted", "plainact", "raw", "0+5", 0, 0, "global", "both", "prompt", 0.5)]
    for i, p in enumerate(pts):
        ax = p.axes("m")
        if p.protocol != "prompt":
            rows.append({**ax, "task": "corpus_test", "metric": "word_perplexity", "value": 100.0 + 11 * i})
        for t, a in (("a", 0.25 + 0.125 * i), ("b", 0.5)):
            rows.append({**ax, "task": t, "metric": "acc", "value": a})
    md = report_markdown(pd.DataFrame(rows), "m")
    assert "Dense: perplexity 100, mean accuracy 0.375." in md                  # (0.25 + 0.5) / 2
    crit = md.split("Units: both.")[1].split("##")[0]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in crit.splitlines()
             if r.startswith("| ") and "ppl" not in r}
    assert cells == {"l2_norm": ["122", "0.5"], "plainact": ["111", "0.438"]}  # ppl, mean acc at 50 %
    per_task = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
                for r in md.split("accuracy minus dense")[1].splitlines() if r.startswith("| ") and " a " not in r}
    assert per_task["predicted (global, prompt)"] == ["0.375", "0"]            # 0.625 - 0.25 on a, 0 on b
    assert per_task["static (global, none)"] == ["0.125", "0"]


def test_ablation_bench_times_every_protocol_against_dense(saved_tiny, task_dir, tmp_path, capsys):
    import pandas as pd

    from shadowllm.cli import main
    from shadowllm.loading import load_model

    path, _ = saved_tiny
    ad = get_adapter(load_model(str(path))[0])
    pred = tmp_path / "p.safetensors"
    _pred(ad).save(pred, meta={"model": "m", "criterion": "plainact", "design": "shadowllm", "placement": 0,
                               "normalize": "raw", "seed": 0})
    out = tmp_path / "bench.csv"
    rc = main(["bench-ablation", "--model", str(path), "--model-name", "m", "--source", "predicted", "--criterion",
               "plainact", "--style", "global", "--units", "both", "--protocol", "sequence", "--sparsity", "0.5",
               "--predictor", str(pred), "--min-neurons", "8", "--ppl-task", "corpus_test", "--ppl-limit", "2",
               "--tasks", "bb_cause_and_effect", "--limit", "6", "--include", str(task_dir), "--repeats", "1",
               "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out)
    zs = df[df.part == "zero-shot"].set_index("run")
    assert list(zs.index) == ["stock HFLM, dense", "masked LM, dense", "predicted sequence", "predicted prompt",
                              "predicted token"]
    assert "predicted prompt" not in set(df[df.part == "perplexity"].run)   # no prompt in a window
    assert zs.loc["masked LM, dense", "vs_masked_dense"] == 1.0
    assert abs(zs.loc["predicted token", "vs_stock_dense"] - zs.loc["predicted token", "seconds"]
               / zs.loc["stock HFLM, dense", "seconds"]) < 1e-3
