"""lm-eval's HFLM with masks that know what each scored row may see.

Stock HFLM batches (context, continuation) pairs into right-padded rows and calls the model on tokens alone, so
a mask cannot know where a row's prompt ends, and its one-token cache puts no candidate in the input. This
subclass replaces only `_loglikelihood_tokens` (lm-eval keeps tasks, prompts, rolling windows and metrics): each
row keeps its length, the position of its last context token and, for the oracle, its question's gold answer,
and a mask source turns them into masks for that batch. Rows with the same input tokens and the same
mask-deciding data are scored once (what the stock cache does for one-token answers).
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

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self._golds = self.golds(requests, self.tasks) if self.needs_gold else None
            try:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
            finally:
                self._golds = None

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
            for j, (req_str, ctx, cont) in enumerate(requests):
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
