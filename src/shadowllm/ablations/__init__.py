"""The ablation grid: mask sources (sources.py) decided per scored row under a protocol (shadowllm.layout.grid), evaluated by
lm-eval through a masked HFLM (lm.py); tidy tables (tables.py), the report (report.py), the benchmark (bench.py)."""
from ..layout.grid import AXES, COLUMNS, PROTOCOLS, SOURCES, Point, expand

__all__ = ["AXES", "COLUMNS", "PROTOCOLS", "SOURCES", "Point", "expand"]
