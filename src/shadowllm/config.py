"""Workflow config validation: the JSON schema (workflow/schemas/config.schema.yaml) plus the checks
a schema cannot express (task names, model folders). Errors name the bad value and what was expected.
"""
from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
# lm-eval tasks usable on a machine with a hub (the paper's), besides the shipped local ones
HUB_TASKS = {"piqa", "copa", "openbookqa", "winogrande", "rte", "hellaswag", "arc_easy", "arc_challenge",
             "boolq", "wikitext"}


class ConfigError(ValueError):
    pass


def _where(path) -> str:
    return "config" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in path)


def schema_errors(cfg: dict, schema_path: Path = SCHEMA) -> list[str]:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    v = jsonschema.Draft202012Validator(schema)
    msgs = []
    for e in sorted(v.iter_errors(cfg), key=lambda e: list(e.absolute_path)):
        if e.validator == "additionalProperties":
            allowed = sorted(e.schema.get("properties", {}))
            extra = sorted(set(e.instance) - set(allowed))
            msgs.append(f"{_where(e.absolute_path)}: unknown key(s) {extra}; expected one of {allowed}")
        elif e.validator in ("minimum", "maximum", "exclusiveMaximum", "exclusiveMinimum"):
            bound = {"minimum": ">=", "maximum": "<=", "exclusiveMaximum": "<", "exclusiveMinimum": ">"}[e.validator]
            msgs.append(f"{_where(e.absolute_path)} = {e.instance!r}: expected a value {bound} {e.validator_value}")
        else:
            msgs.append(f"{_where(e.absolute_path)} = {e.instance!r}: {e.message}")
    return msgs


def semantic_errors(cfg: dict, root: Path = Path(".")) -> list[str]:
    from . import data

    msgs = []
    local = set(data.task_names()) | {"corpus_test"}
    ev = cfg.get("evaluation", {})
    for t in list(ev.get("tasks", [])) + [ev.get("ppl_task", "corpus_test")]:
        if t not in local and t not in HUB_TASKS:
            msgs.append(f"config['evaluation'] task {t!r} is unknown; expected a shipped task {sorted(local)} "
                        f"or an lm-eval hub task {sorted(HUB_TASKS)}")
    for name, m in cfg.get("models", {}).items():
        if m.get("source") == "local":
            p = m.get("path")
            if not p or not (root / p).expanduser().is_dir():
                msgs.append(f"config['models'][{name!r}]['path'] = {p!r}: model folder does not exist "
                            f"(expected a folder written by save_pretrained)")
        if m.get("source") == "hub" and not m.get("path"):
            msgs.append(f"config['models'][{name!r}]: source 'hub' needs 'path' (a hub id like 'facebook/opt-1.3b')")
    return msgs


def validate(cfg: dict, root: Path = Path(".")) -> dict:
    """Raise ConfigError listing every problem, or return cfg."""
    msgs = schema_errors(cfg)
    if not msgs:
        msgs = semantic_errors(cfg, root)
    if msgs:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(msgs))
    return cfg
