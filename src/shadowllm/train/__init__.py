"""The embedded tiny OPT: trained from scratch on the shipped corpus (tiny.py), CLI in cli.py."""
from .tiny import (
    TrainConfig,
    block_perplexity,
    build_model,
    pack,
    train,
    train_tokenizer,
)

__all__ = ["TrainConfig", "block_perplexity", "build_model", "pack", "train", "train_tokenizer"]
