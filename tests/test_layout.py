"""shadowllm.layout: the grids and every path of a run as plain functions of the configuration, torch-free."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shadowllm.config import load
from shadowllm.layout import grid, outputs, paths, predictors
from shadowllm.layout.grid import DENSE, Point

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "config").glob("*.yaml"))
HEAVY = ("torch", "transformers", "lm_eval", "matplotlib", "safetensors", "scipy")


@pytest.fixture(scope="module")
def cfgs():
    """Every shipped configuration, validated with its defaults filled (read from the repository root)."""
    cwd = os.getcwd()
    os.chdir(REPO)   # report.latency_tables and local model folders are checked relative to the root
    try:
        return {name: load([REPO / "config" / name]) for name in CONFIGS}
    finally:
        os.chdir(cwd)


def no_heavy_modules(tmp_path: Path) -> dict:
    """An environment whose Python cannot import torch and the other heavy packages (pandas and numpy stay)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in HEAVY))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO / "src")]))


def test_the_layout_plans_without_torch(tmp_path):
    code = ("import sys; from shadowllm.config import load; from shadowllm.layout import grid, outputs; "
            "cfg = load(['config/config.yaml']); print(len(grid.expand(cfg)), len(outputs.final_outputs(cfg))); "
            f"assert not any(sys.modules.get(m) for m in {HEAVY!r})")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=no_heavy_modules(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["94", "37"]


def test_expand_puts_dense_first_and_merges_the_masks_section(cfgs):
    emb = grid.expand(cfgs["config.yaml"])
    assert next(iter(emb)) == DENSE and emb[DENSE] and len(emb) == 94
    assert dict(grid.points(cfgs["config.yaml"])) == emb
    small = cfgs["test-small.yaml"]
    random = Point("random", placement=0, style="global", units="both", sparsity=0.5)
    assert grid.mask_points(small) == [DENSE, random] and grid.expand(small)[random]
    # opt-1.3b's masks (random, 20-50 %) are points its sources sub-grid runs already: no new ablate job
    opt = dict(cfgs["opt-1.3b.yaml"])
    assert len(grid.expand(opt)) == len(grid.expand({k: v for k, v in opt.items() if k != "masks"})) == 493
    assert grid.mask_points(cfgs["config.yaml"]) == []


def test_the_head_only_criteria_are_those_the_registry_defines_on_heads_only():
    from shadowllm.importance.criteria import CRITERIA, supports
    from shadowllm.layout.axes import HEAD_ONLY_CRITERIA

    assert sorted(HEAD_ONLY_CRITERIA) == sorted(n for n, c in CRITERIA.items() if not supports(c, "neurons"))


def test_point_of_names_a_point_the_grid_lacks(cfgs):
    cfg = cfgs["test-small.yaml"]
    wc = {k: str(v) for k, v in Point("random", style="global", units="both", sparsity=0.9).axes("m").items()}
    with pytest.raises(ValueError, match="sparsity=0.9 is not a point"):
        grid.point_of(cfg, wc)


def test_predictor_grid_and_the_predictors_the_ablation_grid_reads(cfgs):
    cfg = cfgs["config.yaml"]
    assert len(predictors.pred_points(cfg)) == 32   # 9 criteria x 3 designs + fullseq + placements 1, 3 x 2 designs
    trained = {os.path.dirname(f) for f in predictors.metrics_files(cfg, "tiny-opt")}
    read = [f for p in grid.points(cfg) for f in predictors.point_predictor(cfg, "tiny-opt", p)]
    fewshot = {f for f in read if "/fewshot/" in f}
    # the grid adds seeds 1, 2 of its predictor pair and the static tables in per-layer and per-example scores
    assert len(trained | {os.path.dirname(f) for f in read if f not in fewshot}) == 40
    assert len(fewshot) == 2
    assert all(f.startswith("results/embedded/predictors/tiny-opt/fewshot/shots=") for f in fewshot)
    assert predictors.point_predictor(cfg, "tiny-opt", DENSE) == []
    static = Point("static", "plainact", "raw", "0+5", 0, 0, "global", "both", "none", 0.5)
    assert predictors.point_predictor(cfg, "tiny-opt", static) == [
        "results/embedded/predictors/tiny-opt/criterion=plainact/design=static/position=context/placement=0/"
        "normalize=raw/seed=0/predictor.safetensors"]


def test_the_embedded_run_publishes_into_its_own_committed_folders(cfgs):
    cfg = cfgs["config.yaml"]
    pairs = outputs.final_outputs(cfg)
    assert all(a.startswith("results/embedded/") for a, _ in pairs)
    assert all(b.startswith(("figures/embedded/", "reports/embedded/")) for _, b in pairs)
    dst = {b for _, b in pairs}
    assert {"reports/embedded/tiny-opt/report.md", "reports/embedded/latency_cpu.csv",
            "reports/embedded/predictor_flops.csv", "figures/embedded/latency_vs_size.png",
            "figures/embedded/tiny-opt/ablation_sources.pdf"} <= dst
    tracked = subprocess.run(["git", "ls-files", "figures", "reports"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode == 0:
        assert dst <= set(tracked.stdout.split()), sorted(dst - set(tracked.stdout.split()))[:5]
    assert outputs.publish_pairs(cfg)[0] == "=".join(pairs[0])
    assert outputs.all_outputs(cfg)[-1] == "results/embedded/published.tsv"
    assert outputs.report_links(cfg, "tiny-opt") == {"model-figures": "../../../figures/embedded/tiny-opt",
                                                     "latency-figures": "../../../figures/embedded"}


def test_every_run_would_publish_into_its_own_folders_only(cfgs):
    seen = {}
    for name, cfg in cfgs.items():
        run = cfg["run"]
        for a, b in outputs.final_outputs(cfg):
            assert a.startswith(f"results/{run}/") and b.startswith((f"figures/{run}/", f"reports/{run}/")), (name, b)
            assert seen.setdefault(b, name) == name, f"{name} and {seen[b]} both publish {b}"


def test_stages_and_their_files(cfgs):
    cfg = cfgs["test-small.yaml"]
    assert outputs.stage_outputs(cfg, "data") == ["results/test-small/data/tasks",
                                                  "results/test-small/models/tiny-opt/model"]
    assert outputs.stage_outputs(cfg, "ablations") == ["results/test-small/tables/tiny-opt/ablations.csv"]
    assert outputs.stage_outputs(cfg, "report") == ["results/test-small/reports/tiny-opt/eval.md",
                                                    "results/test-small/reports/tiny-opt/report.md",
                                                    "results/test-small/reports/tiny-opt/ablations.md"]
    with pytest.raises(ValueError, match="unknown stage 'plots'"):
        outputs.stage_outputs(cfg, "plots")
    assert paths.eval_jsons(cfg, "tiny-opt") == [f"results/test-small/ablations/tiny-opt/{p.path()}.json"
                                                 for p in grid.mask_points(cfg)]
    assert paths.traces(cfg) == ["results/test-small/importance/tiny-opt/bb_cause_and_effect/k0/plainact.safetensors",
                                 "results/test-small/importance/tiny-opt/bb_cause_and_effect/k0/l2_norm.safetensors"]
    assert outputs.stage_outputs(cfgs["gpu-h200.yaml"], "latency")[-2:] == [
        "results/gpu-h200/latency/latency.csv", "results/gpu-h200/latency/predictor_flops.csv"]
