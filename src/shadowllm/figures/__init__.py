"""Every figure of the study, drawn from results tables only (eval.py, dependence.py, latency.py)."""
from __future__ import annotations

from pathlib import Path

STYLE = {"dpi": 0}   # 0: each figure's own resolution; set from the workflow's config['figures'] (--dpi)


def pyplot():
    """matplotlib.pyplot on the non-interactive backend (figures are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, inputs=None, **savefig_kw) -> Path:
    """Write a figure atomically with its provenance sidecar (naming the tables it was drawn from); close it."""
    from ..io import atomic_path
    from ..provenance import write_meta

    path = Path(path)
    if path.suffix == ".pdf":  # no creation date: the same figure gives the same bytes on every run
        savefig_kw.setdefault("metadata", {"CreationDate": None})
    if STYLE["dpi"]:
        savefig_kw["dpi"] = STYLE["dpi"]
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), **savefig_kw)
    write_meta(path, config={"figure": path.name, "sources": [str(p) for p in inputs or []]}, inputs=inputs or [])
    pyplot().close(fig)
    return path
