"""Evaluation through lm-eval 0.4 (harness.py), tidy results tables and their report (tables.py)."""
from .harness import (
    PAPER_TASKS,
    make_lm,
    max_length,
    perplexity_direct,
    rolling_nll,
    run,
    task_manager,
)

__all__ = ["PAPER_TASKS", "make_lm", "max_length", "perplexity_direct", "rolling_nll", "run", "task_manager"]
