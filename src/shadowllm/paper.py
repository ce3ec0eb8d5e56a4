"""The paper's numbers and settings (paper.yaml), read once: the report quotes them and the claims compare at them.

Torch-free. `claim(key)`, `figure(key)` and `ours(name)` return a copy of one entry; a key paper.yaml lacks is an
error naming it and the keys it has.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

PATH = Path(__file__).resolve().parent / "paper.yaml"
SECTIONS = ("about", "settings", "claims", "figures", "ours")
NEEDS = {"claims": ("text", "paper"), "figures": ("title", "paper"), "ours": ("title", "paper")}


@lru_cache(maxsize=None)
def load(path: str | Path = PATH) -> dict:
    """paper.yaml as a dict (cached; callers get copies through claim/figure/ours); a malformed file names its fault."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or set(SECTIONS) - set(data):
        raise ValueError(f"{path}: expected the sections {list(SECTIONS)}, found "
                         f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    for section, fields in NEEDS.items():
        for key, entry in data[section].items():
            missing = [f for f in fields if not isinstance((entry or {}).get(f), str)]
            if missing:
                raise ValueError(f"{path}: {section} entry {key!r} lacks the text field(s) {missing}")
    return data


def _entry(section: str, key: str) -> dict:
    entries = load()[section]
    if key not in entries:
        raise KeyError(f"paper.yaml has no {section} entry {key!r}; it has {list(entries)}")
    return copy.deepcopy(entries[key])


def claim(key: str) -> dict:
    """One claim: text (what it says), paper (the paper's numbers as printed), values, and its sparsity setting."""
    return _entry("claims", key)


def figure(key: str) -> dict:
    """One figure or table of the paper ("Fig. 6", "Table"): title (what it shows), paper (its numbers), values."""
    return _entry("figures", key)


def ours(name: str) -> dict:
    """One of our figures the paper lacks, by registry name: title and what the paper says instead."""
    return _entry("ours", name)
