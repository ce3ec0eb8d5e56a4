"""Every figure of the study, drawn with pandas + seaborn from results tables only, each as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

from ..layout.figures import FORMATS   # every figure is written in each (defined once, in the registry)

STYLE = {"dpi": 0}   # 0: each figure's own resolution; set from the workflow's config['figures'] (--dpi)


def pyplot():
    """matplotlib.pyplot on the non-interactive backend (figures are files, never windows), seaborn's theme set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sns().set_theme(context="paper", style="whitegrid", font_scale=1.0)
    return plt


def sns():
    """seaborn, imported where a figure is drawn (the rest of the package never needs it)."""
    import seaborn

    return seaborn


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


def save_all(fig, path, inputs=None, **savefig_kw) -> list[Path]:
    """Write the figure in every format of FORMATS beside `path` (its suffix is replaced); return the paths."""
    path = Path(path)
    return [save(fig, path.with_suffix(f".{ext}"), inputs, **savefig_kw) for ext in FORMATS]
