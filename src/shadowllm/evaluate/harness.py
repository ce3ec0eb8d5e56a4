"""Evaluation through the real lm-eval 0.4 harness, with our (possibly masked) model object.

Perplexity follows the paper's protocol: lm-eval's rolling log-likelihood over non-overlapping
windows of the model's maximum length, reported as word perplexity, byte perplexity and bits per
byte (WikiText2 on a machine with a hub; the shipped `corpus_test` task offline). Zero-shot accuracy
(acc, acc_norm) on multiple-choice tasks: the paper's seven by their lm-eval names, or the shipped
`bb_*` tasks offline. Masks are applied by hooks on the model before it is handed to lm-eval.
"""
from __future__ import annotations

import math
import os

import torch

PAPER_TASKS = ["piqa", "copa", "openbookqa", "winogrande", "rte", "hellaswag", "arc_easy"]


def max_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048))


def make_lm(model, tok, batch_size: int = 16, max_len: int | None = None):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size,
                max_length=max_len or max_length(model), device=str(next(model.parameters()).device))


def task_manager(include_path: str | os.PathLike | None, tasks: list[str] | None = None):
    """lm-eval's TaskManager; when every task is a YAML of include_path, lm-eval's own ~15k task files are not
    indexed (4-5 s per job on a laptop)."""
    from lm_eval.tasks import TaskManager

    if include_path and tasks:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    return TaskManager(include_path=str(include_path) if include_path else None)


def run(lm, tasks: list[str], include_path=None, limit: int | None = None, num_fewshot: int = 0,
        seed: int = 1234, samples: dict | None = None) -> dict[str, dict[str, float]]:
    """simple_evaluate on `tasks`; returns {task: {metric: value}} with lm-eval's ',none' filter suffix dropped.
    A dict passed as `samples` is filled with each task's per-document results (see `per_sample`)."""
    from lm_eval import simple_evaluate

    tm = task_manager(include_path, tasks)
    known = set(tm.all_tasks)
    bad = [t for t in tasks if t not in known]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; lm-eval knows e.g. {sorted(k for k in known if k.startswith(('bb_', 'corpus')))[:12]} "
                         f"and its own tasks such as {PAPER_TASKS}")
    if getattr(lm, "needs_gold", False):  # a mask that reads the gold answer (the oracle) gets the task objects
        lm.tasks = tm.load(tasks)["tasks"]
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=limit, num_fewshot=num_fewshot,
                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                          fewshot_random_seed=seed, bootstrap_iters=0, log_samples=samples is not None)
    if samples is not None:
        samples.update({task: per_sample(rows) for task, rows in out["samples"].items()})
    res = {}
    for task, metrics in out["results"].items():
        res[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not k.startswith("alias") and "stderr" not in k}
    return res


def per_sample(rows: list[dict]) -> dict[str, list]:
    """lm-eval's logged samples of one task -> columns, one entry per document, in doc_id order.

    Rolling log-likelihood tasks: `ll` (the document's summed log-likelihood, nats), `words`, `bytes` (so a
    perplexity over any subset of documents is exp(-sum ll / sum words)). Multiple choice: `acc`, `acc_norm`,
    `gold` (the right choice's index), `label` (its text) and `n_choices`, for the majority-class baseline."""
    rows = sorted(rows, key=lambda r: r["doc_id"])
    out: dict[str, list] = {"doc_id": [int(r["doc_id"]) for r in rows]}
    if rows and "word_perplexity" in rows[0]:
        out["ll"] = [float(r["word_perplexity"][0]) for r in rows]
        out["words"] = [int(r["word_perplexity"][1]) for r in rows]
        out["bytes"] = [int(r["byte_perplexity"][1]) for r in rows] if "byte_perplexity" in rows[0] else None
    elif rows and "acc" in rows[0]:
        out["acc"] = [float(r["acc"]) for r in rows]
        out["acc_norm"] = [float(r["acc_norm"]) for r in rows] if "acc_norm" in rows[0] else None
        out["gold"] = [int(r["target"]) if isinstance(r["target"], int) else -1 for r in rows]
        out["label"] = [_gold_text(r) for r in rows]
        out["n_choices"] = [len(r.get("arguments") or []) for r in rows]
    return {k: v for k, v in out.items() if v is not None}


def _gold_text(r: dict) -> str:
    """The gold continuation's text, from the request arguments lm-eval logged (one per choice)."""
    t, args = r["target"], r.get("arguments") or []
    if isinstance(t, int) and 0 <= t < len(args):
        a = args[t]
        a = a.get("arg_1", a) if isinstance(a, dict) else a[1] if isinstance(a, (list, tuple)) else a
        return str(a).strip()
    return str(t).strip()


# ---- a direct computation, used to check lm-eval and for quick in-process numbers ----------------

@torch.no_grad()
def rolling_nll(model, ids: list[int], prefix_id: int, max_len: int | None = None) -> tuple[float, int]:
    """Sum of next-token NLL over a document, in non-overlapping windows of max_len predicted tokens.

    Window 0 reads [prefix, t0 .. t_{n-2}] and predicts t0 .. t_{n-1}; each later window predicts the
    next max_len tokens conditioned on the max_len tokens before them (lm-eval's rolling protocol).
    Returns (sum NLL in nats, number of predicted tokens).
    """
    n = max_len or max_length(model)
    dev = next(model.parameters()).device
    seq = [prefix_id] + list(ids)
    total, count = 0.0, 0
    for start in range(0, len(ids), n):
        end = min(start + n, len(ids))          # predict ids[start:end] = seq[start+1:end+1]
        ctx_lo = max(0, end - n)                # inputs seq[ctx_lo:end], at most n tokens
        x = torch.tensor([seq[ctx_lo:end]], device=dev)
        logp = torch.log_softmax(model(x).logits[0].float(), -1)
        tgt = torch.tensor(seq[ctx_lo + 1:end + 1], device=dev)
        nll = -logp.gather(-1, tgt[:, None])[:, 0]
        keep = end - start                      # only the last `keep` predictions are new
        total += nll[-keep:].sum().item()
        count += keep
    return total, count


def perplexity_direct(model, tok, docs: list[str]) -> dict[str, float]:
    """Token, word and byte perplexity of docs by rolling_nll (no lm-eval)."""
    nll = ntok = nwords = nbytes = 0
    prefix = tok.eos_token_id if tok.bos_token_id is None else tok.bos_token_id
    for d in docs:
        s, c = rolling_nll(model, tok(d, add_special_tokens=False)["input_ids"], prefix)
        nll, ntok = nll + s, ntok + c
        nwords += len(d.split())
        nbytes += len(d.encode("utf-8"))
    return {"token_perplexity": math.exp(nll / ntok), "word_perplexity": math.exp(nll / nwords),
            "byte_perplexity": math.exp(nll / nbytes), "bits_per_byte": nll / nbytes / math.log(2)}
