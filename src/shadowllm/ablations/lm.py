"""lm-eval's HFLM with masks that know what each scored row may see.

Stock HFLM batches (context, continuation) pairs into right-padded rows and calls the model on tokens alone, so
a mask cannot know where a row's prompt ends, and its one-token cache puts no candidate in the input. This
subclass replaces only `_loglikelihood_tokens` (lm-eval keeps tasks, prompts, rolling windows and metrics): each
row keeps its length, the position of its last context token and, for the oracle, its question's gold answer,
and a mask source turns them into masks for that batch. Rows with the same input tokens and the same
mask-deciding data are scored once (what the stock cache does for one-token answers).

A row longer than the window (max_length + 1 tokens, the last one only a target) loses context from the left.
Stock HFLM cuts each row alone, so the choices of one question keep different amounts of context; under protocol
`prompt` (one mask per question, read at its last context token) that would hand its choices different masks,
so there the context is cut once per question: every row with that context keeps the same last
max_length + 1 - (its longest candidate) context tokens. Rows that fit are not cut, as before.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masks import MaskHooks


def _masked_lm_class():
    from lm_eval.models.huggingface import HFLM

    class MaskedLM(HFLM):
        def __init__(self, *args, mask_for=None, protocol: str = "none", adapter=None, **kw):
            super().__init__(*args, **kw)
            self.mask_for, self.protocol, self.ad = mask_for, protocol, adapter
            self.needs_gold = protocol == "gold"
            self.tasks: dict = {}                   # task name -> lm-eval task object (the oracle reads golds)
            self._golds: list | None = None         # per request of the current loglikelihood call
            self._task_names: list | None = None    # per request of the current loglikelihood call (messages)

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self._golds = self.golds(requests, self.tasks) if self.needs_gold else None
            self._task_names = [getattr(i, "task_name", None) for i in requests]
            try:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
            finally:
                self._golds = self._task_names = None

        @staticmethod
        def golds(requests, tasks: dict) -> list[str]:
            """Each request's question's gold continuation, from its task's doc_to_target (by task and doc id:
            two questions may share a context)."""
            gold = {}
            for inst in requests:
                if inst.task_name not in tasks:
                    raise ValueError(f"the oracle needs task {inst.task_name!r} to know its gold answers "
                                     f"(harness.run loads it; known: {sorted(tasks)})")
                if inst.idx == tasks[inst.task_name].doc_to_target(inst.doc):
                    gold[inst.task_name, inst.doc_id] = inst.args[1]
            missing = [(i.task_name, i.doc_id) for i in requests if (i.task_name, i.doc_id) not in gold]
            if missing:
                raise ValueError(f"no candidate of {missing[0]} is its gold answer; the oracle needs multiple-choice "
                                 "requests with their gold among them")
            return [gold[i.task_name, i.doc_id] for i in requests]

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            M = self.max_length
            rows: dict[tuple, int] = {}
            row_data = []                                  # (inp, ctx_pos, gold) per unique row
            req_row = []
            golds = self._golds if self._golds is not None and len(self._golds) == len(requests) else None
            longest = self._longest_candidates(requests, M)
            for j, (req_str, ctx, cont) in enumerate(requests):
                if self.protocol == "prompt":              # one cut per question: its choices share the context
                    toks = ctx[-(M + 1 - longest[tuple(ctx)]):] + cont
                else:                                      # stock HFLM: each row cut alone
                    toks = (ctx + cont)[-(M + 1):]
                inp = toks[:-1]
                ctx_pos = max(len(inp) - len(cont), 0)
                gold = None
                if self.needs_gold:
                    gold = (tuple(ctx), tuple(cont)) if req_str is None else self._gold_pair(req_str[0], ctx, golds, j)
                key = (tuple(inp), ctx_pos if self.protocol == "prompt" else None, gold)
                if key not in rows:
                    rows[key] = len(row_data)
                    row_data.append((inp, ctx_pos, gold))
                req_row.append(rows[key])
            order = sorted(range(len(row_data)), key=lambda i: (-len(row_data[i][0]), tuple(row_data[i][0])))
            bs = int(override_bs or self.batch_size)
            pending = {}                                   # row -> requests waiting on it
            for j, r in enumerate(req_row):
                pending.setdefault(r, []).append(j)
            res: list = [None] * len(requests)
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                logp = self._score([row_data[i] for i in idx])             # [b, T, V]
                for b, i in enumerate(idx):
                    for j in pending.pop(i):
                        res[j] = self._answer(logp[b, :len(row_data[i][0])], requests[j])
            return res

        def _longest_candidates(self, requests, M: int) -> dict[tuple, int]:
            """Context ids -> its longest candidate (tokens); refuses a candidate that leaves no context token in
            the window (max_length M scores at most M continuation tokens after >= 1 context token)."""
            names = self._task_names if self._task_names is not None and len(self._task_names) == len(requests) \
                else None
            longest: dict[tuple, int] = {}
            for j, (req_str, ctx, cont) in enumerate(requests):
                if len(cont) > M:
                    task = f"task {names[j]!r}, " if names is not None and names[j] is not None else ""
                    what = f"context {req_str[0][:60]!r}, " if req_str is not None else ""
                    raise ValueError(f"{task}{what}a continuation of {len(cont)} tokens (after {len(ctx)} context "
                                     f"tokens) does not fit the model window of max_length={M} tokens: it needs "
                                     f"at most {M} continuation tokens after at least one context token")
                k = tuple(ctx)
                longest[k] = max(longest.get(k, 0), len(cont))
            return longest

        def _gold_pair(self, context: str, ctx_enc, golds, j: int):
            if golds is None:
                raise ValueError(f"no gold answer known for the context {context[:80]!r}; the oracle needs "
                                 "multiple-choice requests through loglikelihood, or rolling windows")
            _, g = self._encode_pair(context, golds[j])
            return tuple(ctx_enc), tuple(g)

        def _score(self, batch) -> torch.Tensor:
            """Log-softmax over one batch of rows [(inp, ctx_pos, gold)], masks decided for these rows."""
            from .sources import Batch

            T = max(len(inp) for inp, _, _ in batch)
            x = torch.zeros(len(batch), T, dtype=torch.long)                # right padding, as lm-eval pads
            for b, (inp, _, _) in enumerate(batch):
                x[b, :len(inp)] = torch.tensor(inp)
            x = x.to(self.device)
            src = None
            if self.mask_for is not None:
                src = self.mask_for(Batch(x, torch.tensor([len(r[0]) for r in batch]),
                                          torch.tensor([r[1] for r in batch]),
                                          [r[2] for r in batch] if self.needs_gold else None))
            with torch.no_grad():
                if src is None:
                    logits = self.model(x).logits
                else:
                    with MaskHooks(self.ad, src):
                        logits = self.model(x).logits
            return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)

        def _answer(self, logp: torch.Tensor, request):
            """(sum log p of the continuation, whether it is the greedy continuation)."""
            req_str, _, cont = request
            n = logp.shape[0]
            lp = logp[n - len(cont):n][:, :self.vocab_size]                # [len(cont), V]
            c = torch.tensor(cont, device=lp.device)
            answer = (float(lp.gather(-1, c[:, None]).sum()), bool((lp.argmax(-1) == c).all()))
            if req_str is not None:
                self.cache_hook.add_partial("loglikelihood", req_str, answer)
            return answer

    return MaskedLM


def make_masked_lm(model, tok, mask_for, protocol: str, batch_size: int = 16, max_len: int | None = None):
    """The masked lm-eval model object; mask_for: Batch -> MaskSource | None (see sources.build)."""
    from ..adapter import get_adapter
    from ..evaluate.harness import max_length

    cls = _masked_lm_class()
    return cls(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=max_len or max_length(model),
               device=str(next(model.parameters()).device), mask_for=mask_for, protocol=protocol,
               adapter=get_adapter(model))
