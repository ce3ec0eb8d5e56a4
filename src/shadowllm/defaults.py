"""Flag defaults read from the workflow schema, so a flag and its config key never disagree (parsed once, no torch)."""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from .config import SCHEMA, schema


@lru_cache(maxsize=None)
def _schema(path: Path = SCHEMA) -> dict:
    return schema(path)


def schema_default(key: str, path: Path = SCHEMA):
    """The schema's default of a dotted key (e.g. "importance.max_examples"); `*` stands for any name of a
    keyed section (e.g. "models.*.dtype")."""
    node = _schema(path)
    for i, part in enumerate(key.split(".")):
        where = ".".join(key.split(".")[:i]) or "the top level"
        if part == "*":
            if not isinstance(node.get("additionalProperties"), dict):
                raise LookupError(f"schema key {key!r}: {where} has no named entries for '*'")
            node = node["additionalProperties"]
            continue
        props = node.get("properties", {})
        if part not in props:
            raise LookupError(f"schema key {key!r}: {where} has no {part!r}; expected one of {sorted(props)}")
        node = props[part]
    if "default" not in node:
        raise LookupError(f"schema key {key!r} has no default")
    return copy.deepcopy(node["default"])  # a parser's default list must not be the cached schema's
