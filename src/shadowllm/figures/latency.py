"""Latency figures (paper Fig. 11 counterparts) from bench-latency CSVs, drawn with seaborn, as PNG and PDF.

latency_vs_size:       decode ms/token per mode vs model size (parameters), at one sparsity.
latency_vs_sparsity:   decode ms/token per mode vs sparsity, one panel per model.
latency_vs_genlen:     ms per generate call per mode vs generated tokens, one panel per model, at one sparsity.
Dense is drawn as the mode's value at every sparsity (it does not depend on it).
"""
from __future__ import annotations

from pathlib import Path

from . import pyplot, save_all, sns

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


TABLE_COLUMNS = ["model", "params_b", "layers", "hidden", "device", "device_name", "dtype", "batch", "prompt_len",
                 "gen_tokens", "sparsity", "mode", "kv_policy", "placement", "ms_per_token", "ms_per_token_iqr",
                 "ms_per_token_min", "call_ms", "call_ms_iqr", "speedup_vs_dense", "ratio_to_roofline",
                 "bandwidth_gbs"]


def latency_table(csv_paths, path) -> Path:
    """One reviewable CSV of every latency row (deduplicated), with the columns a reader compares and the figures
    read (so the figures can be redrawn from it alone)."""
    from ..io import atomic_path
    from ..provenance import write_meta

    df = _load(csv_paths)
    cols = [c for c in TABLE_COLUMNS if c in df.columns]
    df = df[cols].sort_values(["model", "gen_tokens", "sparsity", "mode"])
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")
    write_meta(path, config={"sources": [str(p) for p in csv_paths]}, inputs=csv_paths)
    return Path(path)


def _lines(ax, d, x, y, err=None, legend=True):
    """One seaborn line per mode in its MODE_STYLE colour and marker, with the table's IQR as error bars."""
    d = d[d["mode"].isin(MODE_STYLE)]
    if d.empty:
        return
    modes = [m for m in MODE_STYLE if m in set(d["mode"])]
    sns().lineplot(data=d, x=x, y=y, hue="mode", style="mode", hue_order=modes, style_order=modes,
                   palette={m: MODE_STYLE[m][0] for m in modes}, markers={m: MODE_STYLE[m][1] for m in modes},
                   dashes=False, errorbar=None, legend=legend, markersize=6, ax=ax)
    if err:
        for m, g in d.groupby("mode", sort=False):
            ax.errorbar(g[x], g[y], yerr=g[err] / 2, fmt="none", ecolor=MODE_STYLE[m][0], capsize=2)


def latency_figures(csv_paths, outdir, sparsity: float = 0.5) -> list[Path]:
    plt = pyplot()
    df = _load(csv_paths)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    dev = ", ".join(sorted(set(df["device"].astype(str)))) + ", " + ", ".join(sorted(set(df["dtype"].astype(str))))

    def at_sparsity(d, s):
        return d[(d["mode"] == "dense") | d["sparsity"].apply(lambda x: _near(x, s))]

    # 1. vs model size, at the generation length that the most models share (ties: the longer)
    d = at_sparsity(df, sparsity)
    per_gen = d.groupby("gen_tokens")["model"].nunique()
    if not per_gen.empty:
        d = d[d["gen_tokens"] == max(per_gen.index, key=lambda g: (per_gen[g], g))]
    d = d.groupby(["mode", "model"], as_index=False, sort=False).last()
    d["params"] = d["params_b"].fillna(d["hidden"] ** 2 * d["layers"] * 12 / 1e9)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    _lines(ax, d, "params", "ms_per_token")
    for _, r in d[d["mode"] == "dense"].iterrows():
        ax.annotate(str(r["model"]), (r["params"], r["ms_per_token"]), fontsize=6, textcoords="offset points",
                    xytext=(2, 4))
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
    written += save_all(fig, out / "latency_vs_size", csv_paths, bbox_inches="tight")

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
        dmod = df[(df["model"] == model) & (df["gen_tokens"] == gen)].assign(pct=lambda t: t["sparsity"] * 100)
        dense = dmod[dmod["mode"] == "dense"]
        if not dense.empty:
            ax.axhline(dense["ms_per_token"].iloc[0], color=MODE_STYLE["dense"][0], ls="--", lw=1, label="dense")
        _lines(ax, dmod[dmod["mode"] != "dense"], "pct", "ms_per_token", err="ms_per_token_iqr",
               legend=ax is axes[0][-1])
        ax.set(xlabel="sparsity (%)", ylabel="")
        ax.set_title(f"{model} (gen {gen})", fontsize=9)
        sps = sorted(set(dmod["sparsity"]))
        if len(sps) > 1:
            ax.set_xlim(min(sps) * 100 - 3, max(sps) * 100 + 3)
    axes[0][0].set_ylabel("decode ms / token (median, IQR)")
    axes[0][-1].legend(fontsize=7)
    written += save_all(fig, out / "latency_vs_sparsity", csv_paths, bbox_inches="tight")

    # 3. vs generation length (ms per generate call), models with several lengths
    d = at_sparsity(df, sparsity)
    n_gen = d.groupby("model")["gen_tokens"].nunique()
    models = by_size([m for m in n_gen.index if n_gen[m] > 1]) or by_size(n_gen.index)
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.3), squeeze=False)
    for ax, model in zip(axes[0], models):
        _lines(ax, d[d["model"] == model], "gen_tokens", "call_ms", err="call_ms_iqr", legend=ax is axes[0][-1])
        ax.set(xlabel="generated tokens", ylabel="")
        ax.set_title(f"{model}, sparsity {sparsity:.0%}", fontsize=9)
    axes[0][0].set_ylabel("ms per generate call (median, IQR)")
    axes[0][-1].legend(fontsize=7)
    written += save_all(fig, out / "latency_vs_genlen", csv_paths, bbox_inches="tight")
    return written
