import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


def tiny_opt(layers=3, heads=4, d=32, ffn=64, vocab=120, max_pos=64, seed=0):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, ffn_dim=ffn,
                    num_attention_heads=heads, max_position_embeddings=max_pos, word_embed_proj_dim=d,
                    dropout=0.0, attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    cfg._attn_implementation = "eager"
    m = OPTForCausalLM(cfg).eval()
    # random (non-zero) biases so that "zero the bias by hand" is a real check
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.05)
    return m


@pytest.fixture
def opt_model():
    return tiny_opt()


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory):
    """A tiny trained-from-scratch OPT folder (tokenizer + model) made by the package's own train()."""
    from shadowllm import data
    from shadowllm.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny") / "model"
    cfg = TrainConfig(vocab_size=400, d_model=32, n_layers=2, n_heads=4, ffn_dim=64, seq_len=64,
                      batch_size=8, steps=30, warmup=5, threads=1, eval_tokens=2048)
    metrics = train(cfg, data.corpus_docs("calib"), data.corpus_docs("test")[:5], out, log=lambda *a: None)
    return out, metrics


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory):
    from shadowllm import data

    return data.materialize_tasks(tmp_path_factory.mktemp("tasks"))
