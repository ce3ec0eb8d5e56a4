"""Tidy results tables (one column per axis, no silent aggregation) and publishing into the committed tree."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from shadowllm.evaluate.tables import AXES, DENSE_POINT, load_results, pivot, report_markdown, settings
from shadowllm.layout.grid import DENSE, Point
from shadowllm.workflow_cli import publish


def write_eval(path, point, results):
    path.write_text(json.dumps({"point": {"model": "m", **point}, "results": results}))
    return path


def test_table_has_one_column_per_axis_and_keeps_mask_kinds_apart(tmp_path):
    dense = write_eval(tmp_path / "d.json", DENSE_POINT, {"t": {"acc": 0.5}})
    a = write_eval(tmp_path / "a.json", {**DENSE_POINT, "source": "random", "style": "global", "units": "both",
                                         "sparsity": 0.5}, {"t": {"acc": 0.4}})
    b = write_eval(tmp_path / "b.json", {**DENSE_POINT, "source": "static", "criterion": "plainact",
                                         "style": "global", "units": "both", "sparsity": 0.5}, {"t": {"acc": 0.45}})
    df = load_results([b, a, dense])
    assert list(df.columns) == AXES + ["task", "metric", "value"] and len(df) == 3
    pv = pivot(df, metrics=["acc"])
    # two mask kinds at the same sparsity stay two columns (a pivot with aggfunc="first" kept one)
    assert sorted(pv.loc[("t", "acc")].tolist()) == [0.4, 0.45, 0.5] and pv.shape[1] == 3


def test_table_refuses_two_results_for_one_point(tmp_path):
    a = write_eval(tmp_path / "a.json", DENSE_POINT, {"t": {"acc": 0.5}})
    b = write_eval(tmp_path / "b.json", DENSE_POINT, {"t": {"acc": 0.6}})
    with pytest.raises(ValueError, match="two results for the same grid point"):
        load_results([a, b])
    (tmp_path / "old.json").write_text(json.dumps({"results": {"t": {"acc": 0.5}}, "sparsity": 0.0}))
    with pytest.raises(ValueError, match="no grid point"):
        load_results([tmp_path / "old.json"])


def test_publish_copies_only_what_changed(tmp_path):
    src, dst = tmp_path / "results" / "f.png", tmp_path / "figures" / "f.png"
    src.parent.mkdir()
    src.write_bytes(b"png-1")
    (tmp_path / "results" / "f.png.meta.json").write_text("{}")
    assert publish([(str(src), str(dst))]) == [(str(src), str(dst), "updated")]
    assert dst.read_bytes() == b"png-1" and (tmp_path / "figures" / "f.png.meta.json").is_file()
    before = dst.stat().st_mtime_ns
    assert publish([(str(src), str(dst))])[0][2] == "unchanged" and dst.stat().st_mtime_ns == before
    with pytest.raises(FileNotFoundError, match="nope"):
        publish([(str(tmp_path / "nope"), str(dst))])


def test_report_pivot_matches_table(tmp_path):
    rows = [write_eval(tmp_path / f"{s}.json", {**DENSE_POINT, "source": "random", "style": "global",
                                                "units": "both", "sparsity": s} if s else DENSE_POINT,
                       {"t": {"acc": 0.5 - s, "acc_norm": 0.1}}) for s in (0.0, 0.2, 0.4)]
    pv = pivot(load_results(rows))
    assert list(pv.columns) == ["0%", "20%", "40%"]
    assert pv.loc[("t", "acc")].tolist() == pytest.approx([0.5, 0.3, 0.1])
    assert isinstance(pv, pd.DataFrame)


def test_the_evaluation_table_is_the_masks_points_of_the_ablation_grid(tmp_path):
    """eval.csv is `collect-ablations` over the dense point and the `masks` section's random points: the evaluation
    report and figure read it like the table of the former evaluate jobs (their axes are a subset of the grid's)."""
    from shadowllm.ablations.tables import write_table

    random = [Point("random", style="global", units="both", sparsity=s) for s in (0.2, 0.4)]
    files = [tmp_path / f"{i}.json" for i in range(3)]
    for f, p, acc in zip(files, [DENSE, *random], (0.5, 0.4, 0.3)):
        f.write_text(json.dumps({"point": p.axes("m"), "results": {"t": {"acc": acc, "sample_len": 10}}}))
    write_table(files, tmp_path / "eval.csv")
    df = pd.read_csv(tmp_path / "eval.csv")   # as report-eval and plot-eval read it
    assert set(AXES) <= set(df.columns) and settings(df) == []
    assert list(pivot(df).columns) == ["0%", "20%", "40%"]
    assert "source random, criterion none, placement 0, style global, units both" in report_markdown(df, "m")
