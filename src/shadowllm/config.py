"""Workflow configuration: the JSON schema shipped in the package (defaults live there only), plus the checks
a schema cannot express (task names, model folders, shapes). Errors name the bad value and what was expected.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .layout.axes import HEAD_ONLY_CRITERIA

SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"
# lm-eval tasks usable on a machine with a hub (the paper's), besides the shipped local ones
HUB_TASKS = {"piqa", "copa", "openbookqa", "winogrande", "rte", "hellaswag", "arc_easy", "arc_challenge",
             "boolq", "wikitext"}


class ConfigError(ValueError):
    pass


def _where(path) -> str:
    return "config" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in path)


def schema(schema_path: Path = SCHEMA) -> dict:
    return yaml.safe_load(Path(schema_path).read_text())


def schema_errors(cfg: dict, schema_path: Path = SCHEMA) -> list[str]:
    import jsonschema

    v = jsonschema.Draft202012Validator(schema(schema_path))
    msgs = []
    for e in sorted(v.iter_errors(cfg), key=lambda e: list(e.absolute_path)):
        if e.validator == "additionalProperties":
            allowed = sorted(e.schema.get("properties", {}))
            extra = sorted(set(e.instance) - set(allowed))
            msgs.append(f"{_where(e.absolute_path)}: unknown key(s) {extra}; expected one of {allowed}")
        elif e.validator in ("minimum", "maximum", "exclusiveMaximum", "exclusiveMinimum"):
            bound = {"minimum": ">=", "maximum": "<=", "exclusiveMaximum": "<", "exclusiveMinimum": ">"}[e.validator]
            msgs.append(f"{_where(e.absolute_path)} = {e.instance!r}: expected a value {bound} {e.validator_value}")
        elif e.validator == "required":
            msgs.append(f"{_where(e.absolute_path)}: {e.message}")
        else:
            msgs.append(f"{_where(e.absolute_path)} = {e.instance!r}: {e.message}")
    return msgs


def fill_defaults(cfg, sch: dict | None = None):
    """A copy of cfg with every missing key that has a schema default set to it (recursively, inside the
    sections and objects that are present)."""
    sch = schema() if sch is None else sch
    out = copy.deepcopy(cfg)
    if not isinstance(out, dict) or sch.get("type") != "object":
        return out
    props = sch.get("properties", {})
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = fill_defaults(out[key], sub)
    extra = sch.get("additionalProperties")
    if isinstance(extra, dict):
        for key in out:
            if key not in props:
                out[key] = fill_defaults(out[key], extra)
    return out


def _task_errors(cfg: dict) -> list[str]:
    from . import data

    msgs = []
    local = set(data.task_names()) | {"corpus_test"}
    ev = cfg.get("evaluation")
    if ev is not None:
        for t in list(ev["tasks"]) + [ev["ppl_task"]]:
            if t not in local and t not in HUB_TASKS:
                msgs.append(f"config['evaluation'] task {t!r} is unknown; expected a shipped task {sorted(local)} "
                            f"or an lm-eval hub task {sorted(HUB_TASKS)}")
    imp = cfg.get("importance")
    if imp is not None:
        shipped = data.task_names()
        mc = sorted(HUB_TASKS - {"wikitext"})
        for i, t in enumerate(imp["tasks"]):
            if t not in shipped and t not in mc:
                msgs.append(f"config['importance']['tasks'][{i}] = {t!r}: traces need a multiple-choice task; "
                            f"expected a shipped task {sorted(shipped)} or an lm-eval hub task {mc}")
        if imp["tasks"]:
            if imp["dependence_criterion"] not in imp["criteria"]:
                msgs.append(f"config['importance']['dependence_criterion'] = {imp['dependence_criterion']!r}: "
                            f"expected one of the traced criteria {imp['criteria']}")
            if imp["dependence_k"] not in imp["shots"]:
                msgs.append(f"config['importance']['dependence_k'] = {imp['dependence_k']!r}: expected one of the "
                            f"traced shots {imp['shots']}")
        if "grasp" in imp["criteria"] and imp["dtype"] != "float32" and imp["grasp_hvp"] == "finite_difference":
            msgs.append(f"config['importance']['dtype'] = {imp['dtype']!r}: grasp's finite-difference Hessian-vector "
                        "product needs float32; set importance.grasp_hvp: exact")
        nt = imp["neuron_traces"]
        if isinstance(nt, str) and nt not in ("all", "none"):
            msgs.append(f"config['importance']['neuron_traces'] = {nt!r}: expected 'all', 'none' or a list")
        elif isinstance(nt, list):
            for c in nt:
                if c not in imp["criteria"]:
                    msgs.append(f"config['importance']['neuron_traces'] names {c!r}: expected traced criteria "
                                f"{imp['criteria']}")
    return msgs


def _model_errors(cfg: dict, root: Path) -> list[str]:
    msgs = []
    for name, m in cfg.get("models", {}).items():
        if m["source"] == "local":
            p = m.get("path")
            if not p or not (root / p).expanduser().is_dir():
                msgs.append(f"config['models'][{name!r}]['path'] = {p!r}: model folder does not exist "
                            f"(expected a folder written by save_pretrained)")
        if m["source"] == "pypi_gguf" and not (m.get("package") and m.get("gguf_file")):
            msgs.append(f"config['models'][{name!r}]: source 'pypi_gguf' needs 'package' (NAME==VERSION) and "
                        f"'gguf_file' (the GGUF inside the wheel); got package {m.get('package')!r}, gguf_file "
                        f"{m.get('gguf_file')!r}")
        if m["source"] == "hub" and not m.get("path"):
            msgs.append(f"config['models'][{name!r}]: source 'hub' needs 'path' (a hub id like 'facebook/opt-1.3b')")
        if m["source"] == "train":
            n_layers = m.get("train", {}).get("n_layers", 6)
            pl = cfg.get("masks", {}).get("placement", 0)
            if pl >= n_layers:
                msgs.append(f"config['masks']['placement'] = {pl}: outside model {name!r}'s layers 0..{n_layers - 1}")
            for pl in cfg.get("importance", {}).get("placement_layers", []):
                if pl >= n_layers:
                    msgs.append(f"config['importance']['placement_layers'] has {pl}: outside model {name!r}'s "
                                f"layers 0..{n_layers - 1}")
    if ("masks" in cfg or "importance" in cfg) and "models" not in cfg:
        msgs.append("config: 'masks' and 'importance' need 'models'")
    if "masks" in cfg and "ablations" not in cfg:
        msgs.append("config: 'masks' adds random points to the ablation grid: it needs an 'ablations' section")
    return msgs


def _predictor_errors(cfg: dict) -> list[str]:
    pr, imp = cfg.get("predictors"), cfg.get("importance")
    if pr is None:
        return []
    if imp is None or not imp["tasks"]:
        return ["config['predictors'] trains on importance traces: it needs an 'importance' section with tasks"]
    msgs = []
    for c in pr["criteria"]:
        if c not in imp["criteria"]:
            msgs.append(f"config['predictors']['criteria'] names {c!r}: expected traced criteria {imp['criteria']}")
    nt = imp["neuron_traces"]
    kept = imp["criteria"] if nt == "all" else ([] if nt == "none" else list(nt))
    for c in pr["criteria"]:
        if c in kept or c in HEAD_ONLY_CRITERIA:
            continue
        msgs.append(f"config['predictors']['criteria'] names {c!r}, whose neuron traces are not kept "
                    f"(importance.neuron_traces = {nt!r})")
    for pl in [pr["placement"]] + list(pr["placement_sweep"]):
        if pl not in imp["placement_layers"] and pl != 0:
            msgs.append(f"config['predictors'] placement {pl}: the traces hold predictor inputs at layers "
                        f"{sorted(set([0] + imp['placement_layers']))}; add it to importance.placement_layers")
    for key in ("designs", "first_criterion_designs"):
        if "fullseq" in pr[key] and not imp.get("sequence_inputs"):
            msgs.append(f"config['predictors'][{key!r}] has 'fullseq', which needs importance.sequence_inputs: true")
        if "dejavu" in pr[key] and not imp["layer_inputs"]:
            msgs.append(f"config['predictors'][{key!r}] has 'dejavu', which needs importance.layer_inputs: true")
    for k in pr["shots"] or []:
        if k not in imp["shots"]:
            msgs.append(f"config['predictors']['shots'] has {k}: expected traced shots {imp['shots']}")
    return msgs


def _ablation_errors(cfg: dict) -> list[str]:
    from . import data

    ab = cfg.get("ablations")
    if ab is None:
        return []
    if cfg.get("evaluation") is None:
        return ["config['ablations'] are evaluated through lm-eval: it needs an 'evaluation' section"]
    msgs = []
    local = set(data.task_names())
    for t in ab["zero_shot_tasks"] or []:
        if t not in local and t not in HUB_TASKS:
            msgs.append(f"config['ablations']['zero_shot_tasks'] names {t!r}: expected a shipped task "
                        f"{sorted(local)} or an lm-eval hub task {sorted(HUB_TASKS)}")
    pr, imp = cfg.get("predictors"), cfg.get("importance")
    need = {"static": "static", "predicted": "shadowllm", "dejavu": "dejavu"}
    for name, g in ab["grids"].items():
        where = f"config['ablations']['grids'][{name!r}]"
        for src in g["source"]:
            if src in need and (pr is None or need[src] not in pr["designs"]):
                msgs.append(f"{where}: source {src!r} reads {need[src]!r} predictors; add {need[src]!r} to "
                            f"predictors.designs" + ("" if pr else " (and a 'predictors' section)"))
        fitted = [s for s in g["source"] if s in need]
        for c in g["criterion"]:
            if c == "all":
                if pr is None and any(s != "random" for s in g["source"]):
                    msgs.append(f"{where}: criterion 'all' means predictors.criteria; there is no 'predictors' section")
            elif fitted and pr is not None and c not in pr["criteria"]:
                msgs.append(f"{where}: criterion {c!r} has no predictors; expected one of predictors.criteria "
                            f"{pr['criteria']}")
            elif "oracle" in g["source"] and imp is not None and c not in imp["criteria"] and pr is None:
                msgs.append(f"{where}: criterion {c!r} is not traced; expected one of {imp['criteria']}")
        if g.get("seeds") and not set(g["source"]) & {"predicted", "dejavu", "random"}:
            msgs.append(f"{where}: seeds {g['seeds']} apply to predicted, dejavu and random only; got sources "
                        f"{g['source']}")
        if g.get("normalize") and not set(g["source"]) - {"random"}:
            msgs.append(f"{where}: normalize {g['normalize']} applies to sources that rank by a criterion; got "
                        f"sources {g['source']}")
        for shots in g["shots"] or []:
            if g["source"] != ["static"]:
                msgs.append(f"{where}: shots {shots} refit the static table only; expected source [static], "
                            f"got {g['source']}")
            bad = [k for k in shots if imp is None or k not in imp["shots"]]
            if bad:
                msgs.append(f"{where}: shots {shots} names untraced k {bad}; expected traced shots "
                            f"{imp['shots'] if imp else []}")
    return msgs


def _latency_errors(cfg: dict) -> list[str]:
    from .shapes import parse_size

    msgs = []
    lat = cfg.get("latency")
    if lat is None:
        return msgs
    for name, b in lat["benches"].items():
        for i, s in enumerate(b["sizes"]):
            try:
                shape = parse_size(s)
            except ValueError as e:
                msgs.append(f"config['latency']['benches'][{name!r}]['sizes'][{i}]: {e}")
                continue
            pl = b.get("placement", lat["placement"])
            if pl >= shape.layers:
                msgs.append(f"config['latency']['benches'][{name!r}]: placement {pl} is outside {s}'s layers "
                            f"0..{shape.layers - 1}")
    return msgs


def semantic_errors(cfg: dict, root: Path = Path(".")) -> list[str]:
    """Checks on a schema-valid configuration with its defaults filled."""
    return (_task_errors(cfg) + _model_errors(cfg, root) + _predictor_errors(cfg) + _ablation_errors(cfg)
            + _latency_errors(cfg) + _report_errors(cfg, root))


def grid_normalisations(cfg: dict) -> list[str]:
    """The score normalisations the ablation grid runs, in the order they are first named."""
    ab = cfg["ablations"]
    return list(dict.fromkeys(n for g in ab["grids"].values() for n in (g.get("normalize") or ab["normalize"])))


def report_normalize(cfg: dict) -> str:
    """The normalisation the claims read first: the configured one, else raw where the grid runs it, else the
    grid's first."""
    rep = cfg["report"]["normalize"]
    if rep is not None:
        return rep
    norms = grid_normalisations(cfg) if cfg.get("ablations") else []
    return "raw" if "raw" in norms or not norms else norms[0]


def _report_errors(cfg: dict, root: Path) -> list[str]:
    """The claims must ask for a normalisation and units the ablation grid runs, and read latency tables that exist."""
    rep, ab = cfg["report"], cfg.get("ablations")
    out = [f"config['report']['latency_tables'][{i}] = {p!r}: no such file (expected a latency table, e.g. "
           "reports/gpu-h200/latency_cuda.csv)" for i, p in enumerate(rep["latency_tables"]) if not (root / p).is_file()]
    if not ab:
        return out
    norms = grid_normalisations(cfg)
    if rep["normalize"] is not None and rep["normalize"] not in norms:
        out.append(f"config['report']['normalize'] = {rep['normalize']!r}: the ablation grid runs no point in it; "
                   f"expected one of {sorted(norms)}")
    units = {u for g in ab["grids"].values() for u in g["units"]}
    if rep["units"] is not None and rep["units"] not in units:
        out.append(f"config['report']['units'] = {rep['units']!r}: the ablation grid prunes no such units; expected "
                   f"one of {sorted(units)}")
    return out


def validate(cfg: dict, root: Path = Path(".")) -> dict:
    """Raise ConfigError listing every problem, or return cfg with its schema defaults filled."""
    msgs = schema_errors(cfg)
    if msgs:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(msgs))
    full = fill_defaults(cfg)
    msgs = semantic_errors(full, root)
    if msgs:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(msgs))
    return full


def _merge(a: dict, b: dict) -> dict:
    """b over a, recursively for nested dicts (as Snakemake merges several --configfile)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(files) -> dict:
    """Read and merge config files, validate them, fill defaults."""
    cfg = {}
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(f)!r} does not exist")
        cfg = _merge(cfg, yaml.safe_load(p.read_text()) or {})
    return validate(cfg)


def latency_bench(cfg: dict, name: str) -> dict:
    """The resolved settings of one latency bench: its own keys over the section's (defaults filled)."""
    lat = fill_defaults(cfg)["latency"]
    if name not in lat["benches"]:
        raise ValueError(f"latency bench {name!r} is not in the configuration; expected one of {sorted(lat['benches'])}")
    b = lat["benches"][name]
    keys = ("device", "dtype", "modes", "batch", "prompt_len", "repeats", "warmup", "kv_policy", "lookahead",
            "placement")
    out = {k: b.get(k, lat[k]) for k in keys}
    out.update(sizes=b["sizes"], sparsities=b["sparsities"], gen_tokens=b["gen_tokens"],
               time_budget=b.get("time_budget"))
    if out["dtype"] == "auto":
        out["dtype"] = "float16" if out["device"].startswith("cuda") else "float32"
    return out
