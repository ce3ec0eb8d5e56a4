"""Evaluation: our rolling perplexity vs a direct computation and vs lm-eval; lm-eval with our model
object vs lm-eval's own `hf` string path."""
import json
import math
import re

import pytest
import torch

from shadowllm import data, evaluate
from shadowllm.adapter import get_adapter
from shadowllm.loading import load_model
from shadowllm.masks import Mask, MaskHooks, StaticMask


def test_rolling_nll_short_doc_is_exp_mean_nll(opt_model):
    ids = torch.randint(3, 120, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    s, n = evaluate.rolling_nll(opt_model, ids, prefix_id=2)
    x = torch.tensor([[2] + ids])
    logits = opt_model(x).logits[0, :-1]
    direct = torch.nn.functional.cross_entropy(logits, torch.tensor(ids))  # mean NLL
    assert n == 40
    assert math.isclose(math.exp(s / n), math.exp(direct.item()), rel_tol=1e-5)


def test_rolling_nll_long_doc_uses_non_overlapping_windows(opt_model):
    # max_position_embeddings of the fixture is 64
    ids = torch.randint(3, 120, (150,), generator=torch.Generator().manual_seed(4)).tolist()
    s, n = evaluate.rolling_nll(opt_model, ids, prefix_id=2)
    seq = [2] + ids
    by_hand = 0.0
    # window 1 predicts ids[0:64] from seq[0:64]; window 2 ids[64:128] from seq[64:128];
    # the last (partial) window predicts ids[128:150] from the 64 tokens seq[86:150]
    for lo, hi, keep in [(0, 64, 64), (64, 128, 64), (86, 150, 22)]:
        logp = torch.log_softmax(opt_model(torch.tensor([seq[lo:hi]])).logits[0], -1)
        tgt = torch.tensor(seq[lo + 1:hi + 1])
        by_hand += -logp[-keep:].gather(-1, tgt[-keep:, None]).sum().item()
    assert n == 150
    assert math.isclose(s, by_hand, rel_tol=1e-5)


@pytest.fixture(scope="module")
def ppl_task(tmp_path_factory):
    d = tmp_path_factory.mktemp("ppltask")
    docs = data.corpus_docs("test")[:3]
    (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    (d / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {d / 'docs.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
        "metadata:\n  version: 1.0\n")
    return d, docs


def test_lm_eval_perplexity_equals_direct(saved_tiny, ppl_task):
    path, _ = saved_tiny
    d, docs = ppl_task
    model, tok = load_model(str(path))
    res = evaluate.run(evaluate.make_lm(model, tok, batch_size=4), ["tiny_ppl"], include_path=d)["tiny_ppl"]
    nll, words, nbytes = 0.0, 0, 0
    for t in docs:
        s, _ = evaluate.rolling_nll(model, tok(t, add_special_tokens=False)["input_ids"], tok.bos_token_id)
        nll += s
        words += len(re.split(r"\s+", t))  # lm-eval's word count
        nbytes += len(t.encode("utf-8"))
    assert math.isclose(res["word_perplexity"], math.exp(nll / words), rel_tol=1e-4)
    assert math.isclose(res["byte_perplexity"], math.exp(nll / nbytes), rel_tol=1e-4)
    assert math.isclose(res["bits_per_byte"], nll / nbytes / math.log(2), rel_tol=1e-4)
    direct = evaluate.perplexity_direct(model, tok, docs)
    assert math.isclose(direct["byte_perplexity"], res["byte_perplexity"], rel_tol=1e-4)


def test_lm_eval_accuracy_object_equals_hf_string_path(saved_tiny, task_dir):
    from lm_eval import simple_evaluate

    path, _ = saved_tiny
    model, tok = load_model(str(path))
    ours = evaluate.run(evaluate.make_lm(model, tok, batch_size=8), ["bb_cause_and_effect"], include_path=task_dir,
                        limit=40)["bb_cause_and_effect"]
    ref = simple_evaluate(model="hf", model_args=f"pretrained={path},dtype=float32,attn_implementation=eager",
                          tasks=["bb_cause_and_effect"], task_manager=evaluate.task_manager(task_dir), limit=40,
                          batch_size=8, device="cpu", bootstrap_iters=0)["results"]["bb_cause_and_effect"]
    assert ours["acc"] == ref["acc,none"]
    assert ours["acc_norm"] == ref["acc_norm,none"]


def test_masked_model_through_lm_eval_matches_direct_scoring(saved_tiny, task_dir):
    """Under a mask, lm-eval's acc equals argmax of summed continuation log-probs computed here."""
    path, _ = saved_tiny
    model, tok = load_model(str(path))
    ad = get_adapter(model)
    m = Mask.ones(ad)
    m.heads[0, 1, :2] = 0
    m.neurons[0, 1, ::3] = 0
    docs = data.load_split("bb_cause_and_effect", "eval")[:20]
    with MaskHooks(ad, StaticMask(m)):
        res = evaluate.run(evaluate.make_lm(model, tok, batch_size=8), ["bb_cause_and_effect"],
                           include_path=task_dir, limit=20)["bb_cause_and_effect"]
        correct = 0
        for doc in docs:
            ctx = tok(doc["query"], add_special_tokens=False)["input_ids"]
            scores = []
            for ch in doc["choices"]:
                cont = tok(doc["query"] + ch, add_special_tokens=False)["input_ids"][len(ctx):]
                seq = torch.tensor((ctx + cont)[-65:])  # lm-eval keeps max_length + 1 tokens
                logp = torch.log_softmax(model(seq[None, :-1]).logits[0], -1)
                tgt = seq[1:]
                scores.append(logp[-len(cont):].gather(-1, tgt[-len(cont):, None]).sum().item())
            correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["gold"])
    assert res["acc"] == pytest.approx(correct / len(docs))


def test_unknown_task_is_named(saved_tiny, task_dir):
    path, _ = saved_tiny
    model, tok = load_model(str(path))
    with pytest.raises(ValueError, match="bb_nonexistent"):
        evaluate.run(evaluate.make_lm(model, tok), ["bb_nonexistent"], include_path=task_dir)
