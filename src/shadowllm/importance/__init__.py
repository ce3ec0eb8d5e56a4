"""Importance criteria (heads and FFN neurons), trace collection and the trace format (FORMAT.md)."""
from .criteria import CRITERIA, Criterion, LayerData, criterion_names, get_criteria, register

__all__ = ["CRITERIA", "Criterion", "LayerData", "criterion_names", "get_criteria", "register"]
