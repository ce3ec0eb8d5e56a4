"""Latency benchmark of the sparse decoder: dense vs static vs ShadowLLM (prompt / per token) vs DejaVu.

Per (model, generated tokens, sparsity, mode): `warmup` untimed then `repeats` timed generate calls (prefill
of a random prompt + greedy decode steps, timed apart); median and IQR of each, the weight bytes read per
decoded token (KV cache not counted), the roofline ms/token = bytes / measured copy bandwidth, and the
ratios to the roofline and to dense (always run, in the same round-robin group on CPU).
"""
from __future__ import annotations

import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..defaults import schema_default
from ..io import atomic_path
from ..provenance import write_meta
from ..shapes import parse_size
from .decoder import SparseDecoder
from .modes import MODE_SPECS, MODES
from .predictors import random_predictor
from .roofline import roofline_ms, weight_bytes_per_token
from .weights import DecoderWeights

FIELDS = ["model", "layers", "hidden", "heads", "kv_heads", "ffn", "params_b", "dtype", "device", "device_name", "threads", "batch",
          "prompt_len", "gen_tokens", "sparsity", "mode", "kv_policy", "gather", "lookahead", "cuda_graph",
          "repeats", "prefill_ms", "prefill_ms_iqr", "ms_per_token", "ms_per_token_iqr", "ms_per_token_min", "call_ms",
          "call_ms_iqr", "weight_bytes_per_token", "bandwidth_gbs", "roofline_ms_per_token",
          "ratio_to_roofline", "ratio_to_dense", "speedup_vs_dense", "placement", "predictor"]


def make_static_mask(weights: DecoderWeights, sparsity: float, seed: int = 0, batch: int = 1):
    """A random local top-k Mask (layer 0 kept): the 'static' oracle of the latency runs."""
    from ..masks import mask_from_scores

    g = torch.Generator().manual_seed(seed)
    hs = torch.rand(batch, weights.L, weights.H, generator=g)
    ns = torch.rand(batch, weights.L, weights.F, generator=g)
    return mask_from_scores(hs, ns, sparsity, "local")


def device_name(dev: torch.device) -> str:
    """'NVIDIA H200' for a GPU; the CPU model (from /proc/cpuinfo) for the CPU."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_bandwidth(device: str | torch.device, mbytes: int | None = None, reps: int = 7) -> float:
    """GB/s of a large device copy (read + written), best of reps: a roofline wants the attainable peak."""
    dev = torch.device(device)
    mb = mbytes or (2048 if dev.type == "cuda" else 256)
    n = mb * 2**20 // 4
    a = torch.ones(n, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    ts = []
    for i in range(reps + 2):
        _sync(dev)
        t0 = time.perf_counter()
        b.copy_(a)
        _sync(dev)
        if i >= 2:
            ts.append(time.perf_counter() - t0)
    del a, b
    return 2 * n * 4 / min(ts) / 1e9


def _q(xs, q):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _stats(xs):
    return statistics.median(xs), _q(xs, 0.75) - _q(xs, 0.25)


class Timer:
    """Times generate calls of one decoder: prefill + gen_tokens decode steps, synchronised."""

    def __init__(self, dec: SparseDecoder, batch: int, prompt_len: int, gen_tokens: int, use_graph: bool, seed: int = 0):
        self.dec, self.batch, self.prompt_len, self.gen, self.use_graph = dec, batch, prompt_len, gen_tokens, use_graph
        self.g = torch.Generator().manual_seed(seed)
        self.res = []
        dec.setup(batch, prompt_len + gen_tokens + 1)
        if use_graph and dec.graph is None:  # run the eager path once (compiles triton kernels), then capture
            nxt = dec.prefill(self._ids())[:, -1].argmax(-1)
            dec.decode_n(nxt, 2, False)
            dec.capture_graph()

    def _ids(self):
        return torch.randint(2, self.dec.w.V, (self.batch, self.prompt_len), generator=self.g).to(self.dec.device)

    def one(self, keep: bool = True):
        dec, dev = self.dec, self.dec.device
        ids = self._ids()
        _sync(dev)
        t0 = time.perf_counter()
        nxt = dec.prefill(ids)[:, -1].argmax(-1)
        _sync(dev)
        t1 = time.perf_counter()
        dec.decode_n(nxt, self.gen, self.use_graph)
        _sync(dev)
        t2 = time.perf_counter()
        r = ((t1 - t0) * 1e3, (t2 - t1) * 1e3 / max(self.gen, 1), (t2 - t0) * 1e3)
        if keep:
            self.res.append(r)
        return r

    def stats(self) -> dict:
        pre, tok, call = zip(*self.res)
        (pm, pi), (tm, ti), (cm, ci) = _stats(pre), _stats(tok), _stats(call)
        return dict(prefill_ms=pm, prefill_ms_iqr=pi, ms_per_token=tm, ms_per_token_iqr=ti,
                    ms_per_token_min=min(tok), call_ms=cm, call_ms_iqr=ci)


def build_weights(model: str, dtype: torch.dtype, device: str, seed: int = 0):
    """A named size (random weights) or a local model folder (its real weights) -> (DecoderWeights, info)."""
    if Path(model).expanduser().is_dir():
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(Path(model).expanduser()), dtype=dtype,
                                                  local_files_only=True)  # weights only, no tokenizer
        w = DecoderWeights.from_hf(hf, device=device)
        del hf
        info = dict(model=str(model), params_b=None)
    else:
        shape = parse_size(model)
        w = DecoderWeights.random(shape, dtype, device, seed)
        info = dict(model=model, params_b=round(shape.params_b, 6))
    info.update(layers=w.L, hidden=w.d, heads=w.H, kv_heads=w.Hkv, ffn=w.F)
    return w, info


def _trained_predictors(paths, w, placement: int):
    """{design: decoder predictor} and {design: file} from trained predictor files that fit the weights `w`."""
    from ..predictors.model import load_predictor
    from .predictors import from_trained

    preds, src = {}, {}
    for path in paths or ():
        pred, _ = load_predictor(path, expect={"n_layers": w.L, "n_heads": w.H, "n_neurons": w.F})
        if pred.placement != placement:
            raise ValueError(f"{path}: predictor trained at placement {pred.placement}, the bench runs placement "
                             f"{placement}")
        try:
            view = from_trained(pred)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        preds[pred.design], src[pred.design] = view.to(device=w.device, dtype=w.dtype), str(path)
    return preds, src


@dataclass
class _Grid:
    """One grid's settings, shared by every (model, generated tokens, group) it times."""
    modes: list
    dtype: torch.dtype
    dev: torch.device
    batch: int
    prompt_len: int
    repeats: int
    warmup: int
    use_graph: bool
    kv_policy: str
    gather: str
    lookahead: bool
    predictor_hidden: int
    seed: int
    placement: int
    bw: float
    log: object

    def groups(self, sparsities) -> list[list[tuple[str, float]]]:
        """(mode, sparsity) runs timed together, dense first: one group per sparsity on CPU (round-robin), one
        per generation length on GPU (one dense run; exclusive device, less noise)."""
        if self.dev.type == "cpu":
            return [[("dense", 0.0)] + [(m, s) for m in self.modes if m != "dense"] for s in sparsities]
        return [[("dense", 0.0)] + [(m, s) for s in sparsities for m in self.modes if m != "dense"]]

    def make(self, model: "_Model", mode: str, sp: float, gen: int, la: bool):
        """The decoder of one run and its Timer."""
        spec, w = MODE_SPECS[mode], model.w
        kw = {"static_mask": make_static_mask(w, sp, self.seed, batch=1)} if spec.reads == "static mask" else {}
        if spec.predictor != "none":
            kw["shadow" if spec.predictor == "shadowllm" else "dejavu"] = model.predictor(spec.predictor)
        dec = SparseDecoder(w, mode, sp, predictor_hidden=self.predictor_hidden, kv_policy=self.kv_policy,
                            gather=self.gather, lookahead=la and spec.predictor == "dejavu", seed=self.seed,
                            placement=self.placement if spec.placed else 0, **kw)
        return dec, Timer(dec, self.batch, self.prompt_len, gen, self.use_graph, self.seed)

    def _timed(self, dec, t) -> tuple:
        return t.stats(), weight_bytes_per_token(dec), dec.ops.backend if dec.ops else "", dec.lookahead

    def time_interleaved(self, model: "_Model", group, gen: int) -> dict:
        """CPU: round-robin over the group's decoders so load changes hit all alike."""
        timers = [(key, *self.make(model, *key, gen, self.lookahead)) for key in group]
        for _ in range(self.warmup):
            for _, _, t in timers:
                t.one(keep=False)
        for _ in range(self.repeats):
            for _, _, t in timers:
                t.one()
        return {key: self._timed(dec, t) for key, dec, t in timers}

    def time_each(self, model: "_Model", group, gen: int) -> dict:
        """GPU: one decoder after another. A failure (e.g. a graph capture this torch refuses) costs one row, not
        the grid; DejaVu retries without its side-stream lookahead, and the row says so."""
        results, la = {}, self.lookahead
        for key in group:
            for la_try in ([la, False] if (la and MODE_SPECS[key[0]].predictor == "dejavu") else [la]):
                try:
                    dec, t = self.make(model, *key, gen, la_try)
                    for _ in range(self.warmup):
                        t.one(keep=False)
                    for _ in range(self.repeats):
                        t.one()
                    results[key] = self._timed(dec, t)
                    break
                except Exception as e:  # noqa: BLE001 - logged, row skipped
                    self.log(f"[bench] FAILED {model.info['model']} gen={gen} {key[0]} s={key[1]:.2f} "
                             f"lookahead={la_try}: {e!r}")
                    if key[0] == "dense":
                        raise
                finally:
                    dec = t = None
                    self.free()
        return results

    def free(self) -> None:
        if self.dev.type == "cuda":
            try:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            except Exception as e:  # noqa: BLE001
                self.log(f"[bench] CUDA clean-up failed: {e!r}")

    def row(self, model: "_Model", gen: int, mode: str, sp: float, timed: tuple, dense_ms: float) -> dict:
        spec, (r, nbytes, backend, used_la) = MODE_SPECS[mode], timed
        roof = roofline_ms(nbytes, self.bw)
        cpu = self.dev.type == "cpu"
        return dict(model.info, dtype=str(self.dtype).replace("torch.", ""), device=str(self.dev),
                    device_name=model.dev_name, threads=torch.get_num_threads() if cpu else "", batch=self.batch,
                    prompt_len=self.prompt_len, gen_tokens=gen, sparsity=sp, mode=mode,
                    kv_policy=self.kv_policy if spec.per_token else "", gather=backend,
                    lookahead=bool(used_la and spec.predictor == "dejavu"), cuda_graph=self.use_graph,
                    repeats=self.repeats, **r, weight_bytes_per_token=nbytes, bandwidth_gbs=round(self.bw, 2),
                    roofline_ms_per_token=roof, ratio_to_roofline=r["ms_per_token"] / roof,
                    ratio_to_dense=r["ms_per_token"] / dense_ms, speedup_vs_dense=dense_ms / r["ms_per_token"],
                    placement=self.placement if spec.placed else "",
                    predictor=model.src.get(spec.predictor, ""))


class _Model:
    """One model's weights and its predictors (trained ones from files, else random; shared by every run)."""

    def __init__(self, name: str, grid: _Grid, paths, dev_name: str):
        self.w, self.info = build_weights(name, grid.dtype, str(grid.dev), grid.seed)
        self.grid, self.dev_name = grid, dev_name
        w = self.w
        if any(MODE_SPECS[m].placed for m in grid.modes) and not 0 <= grid.placement < w.L:
            raise ValueError(f"placement layer {grid.placement} is outside {self.info['model']}'s layers "
                             f"0..{w.L - 1}")
        self.preds, self.src = _trained_predictors(paths, w, grid.placement)

    def predictor(self, design: str):
        if design not in self.preds:
            self.src[design] = "random"
            self.preds[design] = random_predictor(design, self.w, self.grid.predictor_hidden, self.grid.seed)
        return self.preds[design]


def _lat(key: str):
    """A latency setting's default: the schema's, as for a configured bench and the bench-latency flags."""
    return schema_default(f"latency.{key}")


def run_grid(models, modes, sparsities, gen_tokens, *, dtype="float32", device=_lat("device"), batch=_lat("batch"),
             prompt_len=_lat("prompt_len"), repeats=_lat("repeats"), warmup=_lat("warmup"),
             cuda_graph: bool | None = None, kv_policy=_lat("kv_policy"), gather="auto",
             lookahead: bool | None = _lat("lookahead"), predictor_hidden=1024, seed=0, log=print, bandwidth=None,
             time_budget_s: float | None = None, on_row=None, placement: int = _lat("placement"), predictors=()):
    """predictors: trained predictor files (shadowllm and / or dejavu design) replacing the random weights of
    their modes; their placement is the grid's placement. dtype: a torch dtype name (the schema's "auto" is
    resolved by config.latency_bench)."""
    grid = _grid(modes, dtype, device, cuda_graph, lookahead, bandwidth, log, batch=batch, prompt_len=prompt_len,
                 repeats=repeats, warmup=warmup, kv_policy=kv_policy, gather=gather,
                 predictor_hidden=predictor_hidden, seed=seed, placement=placement)
    dev_name = device_name(grid.dev)
    log(f"[bench] device {grid.dev}, measured copy bandwidth {grid.bw:.1f} GB/s, threads {torch.get_num_threads()}")
    t_start = time.time()
    rows = []
    for name in models:
        model = _Model(name, grid, predictors, dev_name)
        for gen in gen_tokens:
            dense_logged = False  # report dense once per (model, gen), if asked for
            for group in grid.groups(sparsities):
                if time_budget_s and time.time() - t_start > time_budget_s:
                    log(f"[bench] time budget {time_budget_s}s spent; stopping")
                    return rows, grid.bw
                timed = (grid.time_interleaved if grid.dev.type == "cpu" else grid.time_each)(model, group, gen)
                dense_ms = timed[("dense", 0.0)][0]["ms_per_token"]
                for (mode, sp), res in timed.items():
                    row = grid.row(model, gen, mode, sp, res, dense_ms)
                    if mode == "dense":
                        if "dense" not in modes or dense_logged:
                            continue
                        dense_logged = True
                    rows.append(row)
                    if on_row is not None:
                        on_row(rows)
                    _log_row(log, row)
        model = None  # free the weights before the next model
        if grid.dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows, grid.bw


def _grid(modes, dtype, device, cuda_graph, lookahead, bandwidth, log, **kw) -> _Grid:
    """Checked settings: modes, dtype, device; CUDA graphs and DejaVu lookahead default to on on CUDA."""
    from ..loading import resolve_dtype

    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode {m!r} is not one of {MODES}")
    tdt = resolve_dtype(dtype)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    use_graph = (dev.type == "cuda") if cuda_graph is None else bool(cuda_graph)
    if use_graph and dev.type != "cuda":
        raise ValueError(f"CUDA graphs need --device cuda, not {device!r}")
    la = (dev.type == "cuda") if lookahead is None else bool(lookahead)
    return _Grid(list(modes), tdt, dev, use_graph=use_graph, lookahead=la, bw=bandwidth or measure_bandwidth(dev),
                 log=log, **kw)


def _log_row(log, row: dict) -> None:
    log(f"[bench] {row['model']} gen={row['gen_tokens']} {row['mode']:16s} s={row['sparsity']:.2f}: "
        f"{row['ms_per_token']:8.2f} ms/token (IQR {row['ms_per_token_iqr']:.2f}), prefill {row['prefill_ms']:.1f} ms, "
        f"x{row['speedup_vs_dense']:.2f} vs dense, {row['ratio_to_roofline']:.2f} x roofline")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_csv(path, rows, fields=FIELDS) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            wr.writeheader()
            for r in rows:
                wr.writerow({k: _fmt(r.get(k, "")) for k in fields})


def bench_and_write(out, config: dict, seed: int = 0, **kw):
    """Run the grid; the CSV is rewritten (atomically) after every row, so a killed run keeps its rows."""
    rows, bw = run_grid(seed=seed, on_row=lambda rs: write_csv(out, rs), **kw)
    write_csv(out, rows)
    write_meta(out, config=config, seed=seed, device=str(kw.get("device", "cpu")), bandwidth_gbs=bw,
               threads=torch.get_num_threads())
    return rows
