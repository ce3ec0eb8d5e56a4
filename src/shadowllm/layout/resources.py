"""What a job asks the scheduler for: memory and time scale with the model's size (billions of parameters) and
grow with each retry; GPUs follow the device."""
from __future__ import annotations

from ..config import latency_bench
from .models import model_cfg
from ..shapes import parse_size

ORACLE_MEM = 4   # the oracle's gradient pass over whole windows: SmolLM2 at 2048 tokens peaked at 12.1 GB


def params_b(cfg: dict, model: str | None) -> float:
    return float(model_cfg(cfg, model)["params_b"]) if model else 0.01


def model_gpus(cfg: dict, model: str) -> int:
    """GPUs a model job asks for: none on cpu, else the model's `gpus` (a model beyond one GPU spreads over them)."""
    return 0 if cfg["device"] == "cpu" else int(model_cfg(cfg, model)["gpus"])


def mem_mb(cfg: dict, model: str | None, attempt: int, base_mb: float, per_b_mb: float = 0) -> int:
    return int((base_mb + per_b_mb * params_b(cfg, model)) * (1.5 ** (attempt - 1)))


def runtime(cfg: dict, model: str | None, attempt: int, base_min: float, per_b_min: float = 0) -> int:
    return int((base_min + per_b_min * params_b(cfg, model)) * (2 ** (attempt - 1)))


def ablate_mem_mb(cfg: dict, model: str, source: str, attempt: int) -> int:
    """An ablation point's memory; the oracle's criterion pass (gradients of full-window logits) needs more."""
    mb = mem_mb(cfg, model, attempt, 3000, 4000)
    return mb * ORACLE_MEM if source == "oracle" else mb


def lat_gpu(cfg: dict) -> int:
    lat = cfg.get("latency")
    return 1 if lat and lat["device"].startswith("cuda") else 0


def lat_threads(cfg: dict) -> int:
    return 1 if lat_gpu(cfg) else cfg["threads"]


def lat_gb(cfg: dict, bench: str) -> float:
    """Resident GB of the largest random-weight model of a bench (weights + sliced copies + workspace)."""
    b = latency_bench(cfg, bench)
    es = 2 if b["dtype"] in ("float16", "bfloat16") else 4
    return max(parse_size(s).params_b for s in b["sizes"]) * es * 2.2


def lat_mem_mb(cfg: dict, bench: str, attempt: int) -> int:
    base = 8000 if lat_gpu(cfg) else 1500 + 1000 * lat_gb(cfg, bench)
    return int(base * (1.5 ** (attempt - 1)))


def lat_runtime(cfg: dict, bench: str, attempt: int) -> int:
    b = latency_bench(cfg, bench)
    n = len(b["modes"]) * len(b["sizes"]) * len(b["sparsities"]) * len(b["gen_tokens"])
    return int((10 + 2 * n * max(1.0, lat_gb(cfg, bench))) * (2 ** (attempt - 1)))
