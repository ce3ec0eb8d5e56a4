"""Latency figures (paper Fig. 11 counterparts) from bench-latency CSVs.

latency_vs_size:       decode ms/token per mode vs model size (parameters), at one sparsity.
latency_vs_sparsity:   decode ms/token per mode vs sparsity, one panel per model.
latency_vs_genlen:     ms per generate call per mode vs generated tokens, one panel per model, at one sparsity.
Dense is drawn as the mode's value at every sparsity (it does not depend on it).
"""
from __future__ import annotations

from pathlib import Path

from . import pyplot, save

MODE_STYLE = {"dense": ("k", "o"), "static": ("tab:green", "s"), "shadowllm-prompt": ("tab:blue", "^"),
              "shadowllm-token": ("tab:cyan", "v"), "dejavu": ("tab:red", "D")}


def _load(paths):
    import pandas as pd

    frames = [pd.read_csv(p) for p in paths if Path(p).stat().st_size > 0]
    if not frames:
        raise ValueError("no latency rows in the given CSV files")
    df = pd.concat(frames, ignore_index=True)
    key = ["model", "batch", "prompt_len", "gen_tokens", "sparsity", "mode", "device", "dtype", "kv_policy"]
    return df.drop_duplicates(subset=key + [c for c in ("placement",) if c in df.columns], keep="last")


def _near(a, b):
    return abs(float(a) - float(b)) < 1e-9


TABLE_COLUMNS = ["model", "device", "device_name", "dtype", "batch", "prompt_len", "gen_tokens", "sparsity", "mode", "kv_policy",
                 "ms_per_token", "ms_per_token_iqr", "ms_per_token_min", "speedup_vs_dense", "ratio_to_roofline",
                 "bandwidth_gbs"]


def latency_table(csv_paths, path) -> Path:
    """One reviewable CSV of every latency row (deduplicated), with the columns a reader compares."""
    from ..io import atomic_path
    from ..provenance import write_meta

    df = _load(csv_paths)
    cols = [c for c in TABLE_COLUMNS if c in df.columns]
    df = df[cols].sort_values(["model", "gen_tokens", "sparsity", "mode"])
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")
    write_meta(path, config={"sources": [str(p) for p in csv_paths]}, inputs=csv_paths)
    return Path(path)


def latency_figures(csv_paths, outdir, sparsity: float = 0.5, fmt: str = "pdf") -> list[Path]:
    plt = pyplot()
    df = _load(csv_paths)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    modes = [m for m in MODE_STYLE if m in set(df["mode"])]
    dev = ", ".join(sorted(set(df["device"].astype(str)))) + ", " + ", ".join(sorted(set(df["dtype"].astype(str))))

    def at_sparsity(d, s):
        return d[(d["mode"] == "dense") | d["sparsity"].apply(lambda x: _near(x, s))]

    # 1. vs model size, at the generation length that the most models share (ties: the longer)
    d = at_sparsity(df, sparsity)
    per_gen = d.groupby("gen_tokens")["model"].nunique()
    if not per_gen.empty:
        d = d[d["gen_tokens"] == max(per_gen.index, key=lambda g: (per_gen[g], g))]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in modes:
        dm = d[d["mode"] == m]
        if dm.empty:
            continue
        dm = dm.groupby("model", as_index=False).last()
        x = dm["params_b"].fillna(dm["hidden"] ** 2 * dm["layers"] * 12 / 1e9)
        order = x.argsort()
        c, mk = MODE_STYLE[m]
        ax.plot(x.iloc[order], dm["ms_per_token"].iloc[order], marker=mk, color=c, label=m)
        for xi, name in zip(x.iloc[order], dm["model"].iloc[order]):
            if m == "dense":
                ax.annotate(str(name), (xi, dm[dm["model"] == name]["ms_per_token"].iloc[0]), fontsize=6,
                            textcoords="offset points", xytext=(2, 4))
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    xs = sorted(set(d["params_b"].dropna().round(3)))
    if xs:  # one labelled tick per benchmarked size, no minor labels (they collide on a short log axis)
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.set_xticklabels([f"{x:.3g}" for x in xs], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters (billions, as benchmarked)")
    ax.set_ylabel("decode ms / token (median)")
    ax.set_title(f"latency vs model size, sparsity {sparsity:.0%} ({dev})", fontsize=9)
    ax.legend(fontsize=7)
    p = out / f"latency_vs_size.{fmt}"
    written.append(save(fig, p, csv_paths, bbox_inches="tight"))

    # 2. vs sparsity, one panel per model that was swept (at its generation length with the most sparsities)
    def by_size(ms):
        return sorted(ms, key=lambda m: df[df["model"] == m]["params_b"].fillna(0).max())

    def n_sparsities(model, gen):
        return df[(df["model"] == model) & (df["gen_tokens"] == gen)]["sparsity"].nunique()

    best_gen = {m: max(set(df[df["model"] == m]["gen_tokens"]), key=lambda g: (n_sparsities(m, g), g))
                for m in set(df["model"])}
    models = by_size([m for m in best_gen if n_sparsities(m, best_gen[m]) > 2]) or by_size(best_gen)
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.3), squeeze=False)
    for ax, model in zip(axes[0], models):
        gen = best_gen[model]
        dmod = df[(df["model"] == model) & (df["gen_tokens"] == gen)]
        sps = sorted(set(dmod["sparsity"]))
        for m in modes:
            dm = dmod[dmod["mode"] == m].sort_values("sparsity")
            if dm.empty:
                continue
            c, mk = MODE_STYLE[m]
            if m == "dense":
                ax.axhline(dm["ms_per_token"].iloc[0], color=c, ls="--", lw=1, label="dense")
            else:
                ax.errorbar(dm["sparsity"] * 100, dm["ms_per_token"], yerr=dm["ms_per_token_iqr"] / 2, marker=mk,
                            color=c, label=m, capsize=2)
        ax.set_xlabel("sparsity (%)")
        ax.set_title(f"{model} (gen {gen})", fontsize=9)
        if len(sps) > 1:
            ax.set_xlim(min(sps) * 100 - 3, max(sps) * 100 + 3)
    axes[0][0].set_ylabel("decode ms / token (median, IQR)")
    axes[0][-1].legend(fontsize=7)
    p = out / f"latency_vs_sparsity.{fmt}"
    written.append(save(fig, p, csv_paths, bbox_inches="tight"))

    # 3. vs generation length (ms per generate call), models with several lengths
    d = at_sparsity(df, sparsity)
    n_gen = d.groupby("model")["gen_tokens"].nunique()
    models = by_size([m for m in n_gen.index if n_gen[m] > 1]) or by_size(n_gen.index)
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.3), squeeze=False)
    for ax, model in zip(axes[0], models):
        dmod = d[d["model"] == model]
        for m in modes:
            dm = dmod[dmod["mode"] == m].sort_values("gen_tokens")
            if dm.empty:
                continue
            c, mk = MODE_STYLE[m]
            ax.errorbar(dm["gen_tokens"], dm["call_ms"], yerr=dm["call_ms_iqr"] / 2, marker=mk, color=c, label=m,
                        capsize=2)
        ax.set_xlabel("generated tokens")
        ax.set_title(f"{model}, sparsity {sparsity:.0%}", fontsize=9)
    axes[0][0].set_ylabel("ms per generate call (median, IQR)")
    axes[0][-1].legend(fontsize=7)
    p = out / f"latency_vs_genlen.{fmt}"
    written.append(save(fig, p, csv_paths, bbox_inches="tight"))
    return written
