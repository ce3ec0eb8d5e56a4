"""Train the embedded tiny OPT from scratch: a byte-level BPE tokenizer and a stock OPTForCausalLM.

Deterministic for a seed (fixed thread count, seeded data order and init). Documents are joined
with the EOS token and packed into blocks of `seq_len` tokens (no padding).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids: bos 0 (unused), pad 1, eos/bos 2, unk 3


@dataclass
class TrainConfig:
    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    ffn_dim: int = 1024
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 2
    eval_tokens: int = 0  # 0 = the whole held-out test split


def train_tokenizer(docs: list[str], vocab_size: int, out_dir: Path):
    """Byte-level BPE trained on `docs`, saved as a transformers fast tokenizer in out_dir."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(docs, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS,
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="</s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>", model_max_length=10**9)
    tok.save_pretrained(out_dir)
    return tok


def pack(docs: list[str], tok, seq_len: int) -> torch.Tensor:
    """Token ids of all docs joined by EOS, cut into [N, seq_len] blocks (the ragged tail is dropped)."""
    ids: list[int] = []
    for enc in tok(docs, add_special_tokens=False)["input_ids"]:
        ids.append(tok.eos_token_id)
        ids.extend(enc)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def build_model(cfg: TrainConfig, tok):
    from transformers import OPTConfig, OPTForCausalLM

    mc = OPTConfig(vocab_size=len(tok), hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                   num_attention_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim, max_position_embeddings=cfg.seq_len,
                   word_embed_proj_dim=cfg.d_model, do_layer_norm_before=True, dropout=0.0,
                   attention_dropout=0.0, activation_function="relu", pad_token_id=tok.pad_token_id,
                   bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    return OPTForCausalLM(mc)


@torch.no_grad()
def block_perplexity(model, blocks: torch.Tensor, batch_size: int = 16) -> float:
    """exp(mean next-token NLL) over packed blocks."""
    model.eval()
    nll, n = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i: i + batch_size]
        logits = model(x).logits[:, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                 reduction="sum").item()
        n += x[:, 1:].numel()
    return math.exp(nll / max(n, 1))


def train(cfg: TrainConfig, train_docs: list[str], test_docs: list[str], out_dir: Path, log=print) -> dict:
    """Train and save model + tokenizer to out_dir (save_pretrained). Returns metrics."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    t0 = time.time()
    tok = train_tokenizer(train_docs, cfg.vocab_size, out_dir)
    data = pack(train_docs, tok, cfg.seq_len)
    test = pack(test_docs, tok, cfg.seq_len)
    if cfg.eval_tokens:
        test = test[: max(1, cfg.eval_tokens // cfg.seq_len)]
    log(f"tokenizer: {len(tok)} tokens in {time.time() - t0:.1f}s; train blocks {tuple(data.shape)}, "
        f"test blocks {tuple(test.shape)}")
    model = build_model(cfg, tok)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(data), generator=g)
    model.train()
    t1, pos = time.time(), 0
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(data), generator=g), 0
        x = data[order[pos: pos + cfg.batch_size]]
        pos += cfg.batch_size
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            tps = (step + 1) * cfg.batch_size * cfg.seq_len / (time.time() - t1)
            log(f"step {step:5d}  loss {loss.item():.3f}  lr {sched.get_last_lr()[0]:.2e}  {tps:.0f} tok/s")
    train_s = time.time() - t1
    ppl = block_perplexity(model, test)
    log(f"held-out perplexity {ppl:.2f} ({test.numel()} tokens); {n_params / 1e6:.2f}M params; "
        f"train {train_s:.0f}s")
    model.save_pretrained(out_dir)
    return {"test_perplexity": ppl, "test_tokens": int(test.numel()), "params": n_params,
            "train_seconds": train_s, "epochs": cfg.steps * cfg.batch_size / len(data),
            "train_tokens": int(data.numel()), "config": asdict(cfg)}
