"""Latency benchmark of the sparse decoder: dense vs static vs ShadowLLM (prompt / per token) vs DejaVu.

Per (model, generated tokens, sparsity, mode): `warmup` untimed then `repeats` timed generate calls (prefill
of a random prompt + greedy decode steps, timed apart); median and IQR of each, the weight bytes read per
decoded token (KV cache not counted), the roofline ms/token = bytes / measured copy bandwidth, and the
ratios to the roofline and to dense (always run, in the same round-robin group on CPU).
"""
from __future__ import annotations

import csv
import math
import statistics
import time
from pathlib import Path

import torch

from ..io import atomic_path
from ..provenance import write_meta
from .decoder import MODES, TOKEN_MODES, SparseDecoder
from .predictors import DejaVuPredictor, ShadowPredictor
from .shapes import parse_size
from .weights import DecoderWeights

FIELDS = ["model", "layers", "hidden", "heads", "kv_heads", "ffn", "params_b", "dtype", "device", "device_name", "threads", "batch",
          "prompt_len", "gen_tokens", "sparsity", "mode", "kv_policy", "gather", "lookahead", "cuda_graph",
          "repeats", "prefill_ms", "prefill_ms_iqr", "ms_per_token", "ms_per_token_iqr", "ms_per_token_min", "call_ms",
          "call_ms_iqr", "weight_bytes_per_token", "bandwidth_gbs", "roofline_ms_per_token",
          "ratio_to_roofline", "ratio_to_dense", "speedup_vs_dense", "placement", "predictor"]
_KIND = {"shadowllm-prompt": "shadow", "shadowllm-token": "shadow", "dejavu": "dejavu"}
PREDICTOR_MODES = ("shadowllm-prompt", "shadowllm-token", "dejavu")  # the modes that use `placement`


def make_static_mask(weights: DecoderWeights, sparsity: float, seed: int = 0, batch: int = 1):
    """A random local top-k Mask (layer 0 kept): the 'static' oracle of the latency runs."""
    from ..masks import mask_from_scores

    g = torch.Generator().manual_seed(seed)
    hs = torch.rand(batch, weights.L, weights.H, generator=g)
    ns = torch.rand(batch, weights.L, weights.F, generator=g)
    return mask_from_scores(hs, ns, sparsity, "local")


# ---- bytes of weights read per decoded token (the roofline's numerator) -------------------------------

def layer_bytes(w: DecoderWeights, l: int = 1, head_frac: float = 1.0, neuron_frac: float = 1.0,
                kv_frac: float | None = None) -> int:
    """Layer l's attention and FFN matrices + biases at these kept fractions (query heads, neurons, KV heads;
    kv_frac None: head_frac), plus its norms."""
    lw = w.layers[l]
    es = lw.w1.element_size()
    d, Hd, KVd, Fn = w.d, w.H * w.dh, w.Hkv * w.dh, w.F
    kv_frac = head_frac if kv_frac is None else kv_frac
    qo = (2 * Hd * d + (Hd if lw.bqkv is not None else 0)) * head_frac
    kv = 2 * KVd * (d + (1 if lw.bqkv is not None else 0)) * kv_frac
    ffn = ((3 if lw.w3 is not None else 2) * Fn * d + (Fn if lw.b1 is not None else 0)) * neuron_frac
    small = sum(t.numel() for t in (lw.ln1_w, lw.ln1_b, lw.ln2_w, lw.ln2_b, lw.bo, lw.b2) if t is not None)
    return int((qo + kv + ffn + small) * es)


def head_bytes(w: DecoderWeights) -> int:
    """lm_head (+ project_in / project_out) read per decoded token."""
    es = w.lm_head.element_size()
    n = w.lm_head.numel() + (w.project_out.numel() if w.project_out is not None else 0)
    n += (w.project_in.numel() if w.project_in is not None else 0)
    return n * es


def weight_bytes_per_token(dec: SparseDecoder) -> int:
    """Weights one decode step of `dec` reads: its dense layers, its slices or gathered rows, predictors."""
    w = dec.w
    first = 1 if dec.mode == "static" else dec.placement + 1  # layers before `first` run dense
    n = head_bytes(w) + sum(layer_bytes(w, l) for l in range(first))
    for l in range(first, dec.L):
        if dec.mode == "dense":
            n += layer_bytes(w, l)
        elif dec.mode in ("static", "shadowllm-prompt"):
            s = dec.slices[l] if dec.B is not None else None
            nh, nf = (s.nh, s.nf_pad) if s is not None else (dec.kh, dec.kf)
            nkv = s.nkv if s is not None else min(dec.kh, dec.Hkv)
            n += layer_bytes(w, l, nh / dec.H, nf / dec.F, nkv / dec.Hkv)
        else:  # per sequence: its active rows; K/V rows dense (full) or one KV head per active head (active)
            hf = dec.kh / dec.H
            kvf = 1.0 / (dec.B or 1) if dec.kv_policy == "full" else dec.kh / dec.Hkv
            n += (dec.B or 1) * layer_bytes(w, l, hf, dec.kf / dec.F, kvf)
    if dec.shadow is not None and dec.mode == "shadowllm-token":  # prompt mode: once per sequence
        n += dec.shadow.n_params() * w.lm_head.element_size()
    if dec.dejavu_pred is not None:
        n += dec.dejavu_pred.n_params(first=dec.placement + 1) * w.lm_head.element_size()
    return int(n)


def roofline_ms(nbytes: int, bandwidth_gbs: float) -> float:
    """ms to read nbytes at the measured bandwidth (nan when there is none)."""
    return nbytes / (bandwidth_gbs * 1e9) * 1e3 if bandwidth_gbs and not math.isnan(bandwidth_gbs) else float("nan")


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
    """{kind: decoder predictor} and {kind: file} from trained predictor files that fit the weights `w`."""
    from ..predictors.model import load_predictor
    from .predictors import DejaVuPredictor, ShadowPredictor

    preds, src = {}, {}
    for path in paths or ():
        pred, _ = load_predictor(path, expect={"n_layers": w.L, "n_heads": w.H, "n_neurons": w.F})
        if pred.placement != placement:
            raise ValueError(f"{path}: predictor trained at placement {pred.placement}, the bench runs placement "
                             f"{placement}")
        if pred.design not in ("shadowllm", "dejavu"):
            raise ValueError(f"{path}: a {pred.design!r} predictor; the decoder runs 'shadowllm' or 'dejavu' ones "
                             "(fullseq reads the whole sequence, so it cannot decide a mask before decoding)")
        kind = "shadow" if pred.design == "shadowllm" else "dejavu"
        view = ShadowPredictor.from_trained(pred) if kind == "shadow" else DejaVuPredictor.from_trained(pred)
        preds[kind], src[kind] = view.to(device=w.device, dtype=w.dtype), str(path)
    return preds, src


def run_grid(models, modes, sparsities, gen_tokens, *, dtype="float32", device="cpu", batch=1, prompt_len=128,
             repeats=5, warmup=1, cuda_graph: bool | None = None, kv_policy="full", gather="auto",
             lookahead: bool | None = None, predictor_hidden=1024, seed=0, log=print, bandwidth=None,
             time_budget_s: float | None = None, on_row=None, placement: int = 0, predictors=()):
    """predictors: trained predictor files (shadowllm and / or dejavu design) replacing the random weights of
    their modes; their placement is the grid's placement."""
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
        raise ValueError("CUDA graphs need --device cuda")
    la = (dev.type == "cuda") if lookahead is None else bool(lookahead)
    bw = bandwidth or measure_bandwidth(dev)
    dev_name = device_name(dev)
    log(f"[bench] device {dev}, measured copy bandwidth {bw:.1f} GB/s, threads {torch.get_num_threads()}")
    interleave = dev.type == "cpu"
    t_start = time.time()
    rows = []
    for model in models:
        w, info = build_weights(model, tdt, device, seed)
        if any(m in PREDICTOR_MODES for m in modes) and not 0 <= placement < w.L:
            raise ValueError(f"placement layer {placement} is outside {info['model']}'s layers 0..{w.L - 1}")
        preds, pred_src = _trained_predictors(predictors, w, placement)  # shared by every sparsity and length

        def predictor(kind):
            if kind not in preds:
                pred_src[kind] = "random"
                cls = ShadowPredictor if kind == "shadow" else DejaVuPredictor
                d_in = w.H * w.dh if kind == "shadow" else w.d   # attention output / the layer's input
                preds[kind] = cls(d_in, w.L, w.H, w.F, predictor_hidden, w.dtype, w.device, seed)
            return preds[kind]

        dense_logged = False
        for gen in gen_tokens:
            groups = [[("dense", 0.0)] + [(m, s) for m in modes if m != "dense"] for s in sparsities]
            if not interleave:  # one dense run per generation length on GPU (exclusive device, less noise)
                groups = [[("dense", 0.0)] + [(m, s) for s in sparsities for m in modes if m != "dense"]]
            for group in groups:
                if time_budget_s and time.time() - t_start > time_budget_s:
                    log(f"[bench] time budget {time_budget_s}s spent; stopping")
                    return rows, bw

                def make(mode, sp, la=la):
                    kw = {"static_mask": make_static_mask(w, sp, seed, batch=1)} if mode == "static" else {}
                    if mode in ("shadowllm-prompt", "shadowllm-token"):
                        kw["shadow"] = predictor("shadow")
                    elif mode == "dejavu":
                        kw["dejavu"] = predictor("dejavu")
                    dec = SparseDecoder(w, mode, sp, predictor_hidden=predictor_hidden, kv_policy=kv_policy,
                                    gather=gather, lookahead=la and mode == "dejavu", seed=seed,
                                    placement=placement if mode in PREDICTOR_MODES else 0, **kw)
                    return dec, Timer(dec, batch, prompt_len, gen, use_graph, seed)

                results = {}
                if interleave:  # CPU: round-robin over the group's decoders so load changes hit all alike
                    timers = [(key, *make(*key)) for key in group]
                    for _ in range(warmup):
                        for _, _, t in timers:
                            t.one(keep=False)
                    for _ in range(repeats):
                        for _, _, t in timers:
                            t.one()
                    for key, dec, t in timers:
                        results[key] = (t.stats(), weight_bytes_per_token(dec), dec.ops.backend if dec.ops else "",
                                        dec.lookahead)
                else:
                    for key in group:
                        # a failure (e.g. a graph capture this torch refuses) costs one row, not the grid;
                        # DejaVu retries without its side-stream lookahead, and the row says so
                        for la_try in ([la, False] if (la and key[0] == "dejavu") else [la]):
                            try:
                                dec, t = make(*key, la=la_try)
                                for _ in range(warmup):
                                    t.one(keep=False)
                                for _ in range(repeats):
                                    t.one()
                                results[key] = (t.stats(), weight_bytes_per_token(dec),
                                                dec.ops.backend if dec.ops else "", dec.lookahead)
                                break
                            except Exception as e:  # noqa: BLE001 - logged, row skipped
                                log(f"[bench] FAILED {info['model']} gen={gen} {key[0]} s={key[1]:.2f} "
                                    f"lookahead={la_try}: {e!r}")
                                if key[0] == "dense":
                                    raise
                            finally:
                                dec = t = None
                                if dev.type == "cuda":
                                    try:
                                        torch.cuda.synchronize()
                                        torch.cuda.empty_cache()
                                    except Exception as e:  # noqa: BLE001
                                        log(f"[bench] CUDA clean-up failed: {e!r}")
                dense_ms = results[("dense", 0.0)][0]["ms_per_token"]
                for (mode, sp), (r, nbytes, backend, used_la) in results.items():
                    roof = roofline_ms(nbytes, bw)
                    row = dict(info, dtype=str(tdt).replace("torch.", ""), device=str(dev), device_name=dev_name,
                               threads=torch.get_num_threads() if dev.type == "cpu" else "", batch=batch,
                               prompt_len=prompt_len, gen_tokens=gen, sparsity=sp, mode=mode,
                               kv_policy=kv_policy if mode in TOKEN_MODES else "", gather=backend,
                               lookahead=bool(used_la and mode == "dejavu"), cuda_graph=use_graph, repeats=repeats, **r,
                               weight_bytes_per_token=nbytes, bandwidth_gbs=round(bw, 2),
                               roofline_ms_per_token=roof, ratio_to_roofline=r["ms_per_token"] / roof,
                               ratio_to_dense=r["ms_per_token"] / dense_ms,
                               speedup_vs_dense=dense_ms / r["ms_per_token"],
                               placement=placement if mode in PREDICTOR_MODES else "",
                               predictor=pred_src.get(_KIND.get(mode), ""))
                    if mode == "dense":  # report dense once per (model, gen), if asked for
                        if "dense" not in modes or dense_logged:
                            continue
                        dense_logged = True
                    rows.append(row)
                    if on_row is not None:
                        on_row(rows)
                    log(f"[bench] {info['model']} gen={gen} {mode:16s} s={sp:.2f}: {r['ms_per_token']:8.2f} ms/token "
                        f"(IQR {r['ms_per_token_iqr']:.2f}), prefill {r['prefill_ms']:.1f} ms, "
                        f"x{row['speedup_vs_dense']:.2f} vs dense, {row['ratio_to_roofline']:.2f} x roofline")
                results.clear()
            dense_logged = False
        w = preds = None  # free the weights before the next model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows, bw


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


# ---- predictor FLOPs -------------------------------------------------------------------------------

FLOPS_FIELDS = ["model", "layers", "hidden", "heads", "ffn", "p", "dejavu_macs", "shadowllm_macs",
                "dejavu_over_shadowllm", "model_macs_per_token", "dejavu_pct_of_model", "shadowllm_pct_of_model"]


def predictor_flops_rows(p: int = 1024, names=None):
    """DejaVu N(E*p + p(H+F)) vs ShadowLLM E*p + p*N(H+F) multiply-accumulates per token (the paper's formulas)."""
    from .shapes import OPT_SHAPES

    rows = []
    for name, s in OPT_SHAPES.items():
        if names and name not in names:
            continue
        N, E, H, Fn = s.layers, s.hidden, s.heads, s.ffn
        dv = N * (E * p + p * (H + Fn))
        sh = E * p + p * N * (H + Fn)
        model = N * (4 * E * E + 2 * E * Fn)
        rows.append(dict(model=name, layers=N, hidden=E, heads=H, ffn=Fn, p=p, dejavu_macs=dv, shadowllm_macs=sh,
                         dejavu_over_shadowllm=round(dv / sh, 4), model_macs_per_token=model,
                         dejavu_pct_of_model=round(100 * dv / model, 3),
                         shadowllm_pct_of_model=round(100 * sh / model, 3)))
    return rows
