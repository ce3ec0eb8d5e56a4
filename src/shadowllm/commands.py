"""Core subcommands: prepare-tasks, train, make-mask, evaluate, table, plot-dense, check-config."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from . import io


def _load(args):
    import torch

    from .loading import load_model, resolve_device

    torch.set_num_threads(args.threads)
    return load_model(args.model, dtype=args.dtype, device=resolve_device(args.device), gguf_file=args.gguf_file)


def _model_args(p):
    p.add_argument("--model", required=True, help="hub id or local model folder")
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=2)


# ---- prepare-tasks ------------------------------------------------------------------------------

def cmd_prepare_tasks(args):
    from . import data

    tasks = args.tasks.split(",") if args.tasks else None
    out = data.materialize_tasks(Path(args.out), tasks)
    print(f"lm-eval task configs with absolute data paths in {out}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove_stale_tmp(parent: Path, prefix: str) -> None:
    """Remove the temporary folders a killed run for the same output left behind (their writer is gone)."""
    for d in parent.glob(prefix + "*"):
        if not d.is_dir():
            continue
        try:
            pid = int((d / ".pid").read_text())
        except (OSError, ValueError):
            pid = None
        if pid is None or not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


# ---- train --------------------------------------------------------------------------------------

def cmd_train(args):
    from . import data
    from .train import TrainConfig, train

    params = json.loads(args.params) if args.params else {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(params) - fields)
    if bad:
        raise ValueError(f"unknown train parameter(s) {bad}; expected some of {sorted(fields)}")
    cfg = TrainConfig(**{**params, "seed": args.seed, "threads": args.threads})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out.parent, f".tmp-{out.name}-")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))  # same file system as out
    (tmp / ".pid").write_text(str(os.getpid()))
    try:
        metrics = train(cfg, data.corpus_docs("train"), data.corpus_docs("test"), tmp,
                        log=lambda m: print(m, flush=True))
        (tmp / ".pid").unlink(missing_ok=True)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    io.write_json(args.metrics, metrics)
    io.write_meta(args.metrics, config=dataclasses.asdict(cfg), seed=cfg.seed, device="cpu")


# ---- make-mask ----------------------------------------------------------------------------------

def cmd_make_mask(args):
    import torch

    from .adapter import get_adapter
    from .masks import mask_from_scores, random_scores

    if args.kind != "random":
        raise ValueError(f"mask kind {args.kind!r} is not one of ['random']")
    from transformers import AutoConfig, AutoModelForCausalLM

    from .loading import resolve_source

    src, local = resolve_source(args.model)  # clear error, no waiting on an unreachable hub
    with torch.device("meta"):  # shapes only
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src, local_files_only=local))
    ad = get_adapter(model)
    hs, ns = random_scores(ad, args.seed)
    mask = mask_from_scores(hs, ns, args.sparsity, args.style)
    mask.save(args.out, metadata={"kind": args.kind, "sparsity": args.sparsity, "style": args.style,
                                  "seed": args.seed})
    io.write_meta(args.out, config=vars_clean(args), seed=args.seed, achieved=mask.sparsity())
    print(f"mask {args.out}: nominal sparsity {args.sparsity}; fraction pruned over all layers "
          f"(layer 0 kept) {mask.sparsity()}")


def vars_clean(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


# ---- evaluate -----------------------------------------------------------------------------------

def cmd_evaluate(args):
    from . import evaluate
    from .adapter import get_adapter
    from .masks import Mask, MaskHooks, StaticMask

    tasks = [t for t in args.tasks.split(",") if t]
    model, tok = _load(args)
    hooks = None
    sparsity, achieved = 0.0, {"heads": 0.0, "neurons": 0.0}
    if args.mask:
        ad = get_adapter(model)
        mask = Mask.load(args.mask).check(ad)
        achieved = mask.sparsity()
        sparsity = float(mask.meta.get("sparsity", achieved["heads"]))
        hooks = MaskHooks(ad, StaticMask(mask)).attach()
    t0 = time.time()
    try:
        lm = evaluate.make_lm(model, tok, batch_size=args.batch_size)
        res = evaluate.run(lm, tasks, include_path=args.include, limit=args.limit, seed=args.seed)
    finally:
        if hooks:
            hooks.remove()
    out = {"model": args.model, "mask": args.mask, "sparsity": sparsity, "achieved_sparsity": achieved,
           "results": res,
           "seconds": time.time() - t0}
    io.write_json(args.out, out)
    io.write_meta(args.out, config=vars_clean(args), seed=args.seed, device=str(model.device))
    for t, m in res.items():
        print(t, {k: round(v, 4) for k, v in m.items()})


# ---- table and figure ---------------------------------------------------------------------------

def load_results(paths):
    import pandas as pd

    rows = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        for task, metrics in r["results"].items():
            for metric, value in metrics.items():
                rows.append({"source": str(p), "mask": r["mask"] or "dense",
                             "sparsity": r["sparsity"], "task": task, "metric": metric,
                             "value": value})
    return pd.DataFrame(rows)


def cmd_table(args):
    df = load_results(args.inputs)
    with io.atomic_path(args.out, suffix=".csv") as tmp:
        df.sort_values(["sparsity", "task", "metric"]).to_csv(tmp, index=False, float_format="%.6g")
    io.write_meta(args.out, config={"inputs": args.inputs})
    print(df.pivot_table(index="task", columns="sparsity", values="value",
                         aggfunc="first").to_string() if len(df) else "empty")


def cmd_plot_dense(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(args.table)
    acc = df[df.metric == "acc"]
    ppl = df[df.metric == "word_perplexity"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for task, g in acc.groupby("task"):
        g = g.sort_values("sparsity")
        a1.plot(g.sparsity * 100, g.value * 100, marker="o", label=task)
    a1.set(xlabel="sparsity (% of prunable heads and neurons, random mask)", ylabel="zero-shot accuracy (%)",
           title=f"{args.title}: accuracy")
    a1.legend(fontsize=7)
    g = ppl.sort_values("sparsity")
    a2.plot(g.sparsity * 100, g.value, marker="o", color="k")
    a2.set(xlabel="sparsity (%)", ylabel="word perplexity", yscale="log", title=f"{args.title}: held-out perplexity")
    fig.tight_layout()
    with io.atomic_path(args.out, suffix=Path(args.out).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    io.write_meta(args.out, config={"table": args.table})


def cmd_report_eval(args):
    import pandas as pd

    df = pd.read_csv(args.table)
    lines = [f"# {args.model}: evaluation", ""]
    if args.train.strip():
        t = json.loads(Path(args.train.strip()).read_text())
        c = t["config"]
        lines += [f"Tiny OPT trained here: {t['params'] / 1e6:.2f}M parameters, {c['n_layers']} layers, "
                  f"{c['n_heads']} heads, d_model {c['d_model']}, FFN {c['ffn_dim']}, context {c['seq_len']}, "
                  f"{c['steps']} steps of {c['batch_size']}x{c['seq_len']} tokens ({t['epochs']:.2f} epochs) "
                  f"in {t['train_seconds'] / 60:.1f} min; held-out token perplexity "
                  f"**{t['test_perplexity']:.1f}** over {t['test_tokens']} tokens.", ""]
    pv = df.pivot_table(index=["task", "metric"], columns="sparsity", values="value", aggfunc="first")
    pv.columns = [f"{c:.0%}" for c in pv.columns]
    keep = pv.index.get_level_values("metric").isin(["acc", "acc_norm", "word_perplexity", "bits_per_byte"])
    lines += ["Columns: sparsity of a random static mask (same fraction of heads and neurons, layer 0 kept); "
              "0% is the unpruned model.", "", pv[keep].to_markdown(floatfmt=".4g"), ""]
    io.write_text(args.out, "\n".join(lines))
    io.write_meta(args.out, config={"table": args.table, "train": args.train})


def cmd_check_config(args):
    import yaml

    from .config import validate

    cfg = {}
    for f in args.configfile:
        cfg.update(yaml.safe_load(Path(f).read_text()) or {})
    validate(cfg)
    print("configuration is valid")


def register(sub):
    p = sub.add_parser("prepare-tasks", help="write lm-eval task YAMLs of the shipped tasks with absolute paths")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default="", help="comma-separated (default: all)")
    p.set_defaults(func=cmd_prepare_tasks)

    p = sub.add_parser("train", help="train the embedded tiny OPT (tokenizer + model) on the shipped corpus")
    p.add_argument("--out", required=True, help="model folder (save_pretrained)")
    p.add_argument("--metrics", required=True, help="JSON with held-out perplexity etc.")
    p.add_argument("--params", default="", help="JSON object of TrainConfig fields")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("make-mask", help="a static mask file (safetensors) for a model")
    p.add_argument("--model", required=True, help="local model folder (config.json)")
    p.add_argument("--kind", default="random")
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--style", default="global", choices=["local", "global", "hybrid"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_make_mask)

    p = sub.add_parser("evaluate", help="perplexity and zero-shot accuracy through lm-eval, optionally masked")
    _model_args(p)
    p.add_argument("--mask", default=None, help="mask file from make-mask (default: unpruned)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--include", default=None, help="folder of task YAMLs (prepare-tasks)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("table", help="collect evaluate outputs into one long CSV")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot-dense", help="figure: accuracy and perplexity vs (random-mask) sparsity")
    p.add_argument("--table", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_plot_dense)

    p = sub.add_parser("report-eval", help="markdown report of an evaluation table (+ training metrics)")
    p.add_argument("--table", required=True)
    p.add_argument("--train", default="", help="train.json of a trained model (optional)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_eval)

    p = sub.add_parser("check-config", help="validate config files against the schema and the shipped tasks")
    p.add_argument("configfile", nargs="+")
    p.set_defaults(func=cmd_check_config)
