"""Input-dependence statistic (Figure 2) and the trace-size arithmetic."""
import numpy as np

from shadowllm.figures.dependence import input_dependence_figure
from shadowllm.importance.dependence import (
    hist_variance,
    input_dependence,
    rank_variance,
    read_dependence,
    references,
)
from shadowllm.importance.traces import bytes_per_example


def test_rank_variance_extremes(tmp_path):
    rng = np.random.default_rng(0)
    fixed = np.tile(rng.random((1, 3, 4)), (50, 1, 1))
    assert np.allclose(rank_variance(fixed), 0)
    assert np.allclose(hist_variance(fixed), hist_variance(fixed).max())   # all mass at one rank
    rand = rng.random((4000, 3, 4))
    ref = references(12, 4000)
    assert abs(rank_variance(rand).mean() - ref["random_rank_var"]) / ref["random_rank_var"] < 0.05
    s = input_dependence(rand[:100], tmp_path / "d.csv")
    assert (tmp_path / "d.csv.meta.json").is_file()
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert lines[0] == "layer,head,rank_var,hist_var" and len(lines) == 1 + 12 + len(ref)
    assert s["n_inputs"] == 100
    # the figure is drawn from the CSV alone, which holds the statistics it plots
    rv, hv, ref_csv = read_dependence(tmp_path / "d.csv")
    np.testing.assert_allclose(rv, rank_variance(rand[:100]), rtol=1e-5)
    np.testing.assert_allclose(hv, hist_variance(rand[:100]), rtol=1e-5)
    assert set(ref_csv) == set(ref)
    assert input_dependence_figure(tmp_path / "d.csv", tmp_path / "d.png") == [tmp_path / "d.png", tmp_path / "d.pdf"]
    for ext in ("png", "pdf"):
        assert (tmp_path / f"d.{ext}").stat().st_size > 0 and (tmp_path / f"d.{ext}.meta.json").is_file()


def test_trace_bytes_opt13b():
    b = bytes_per_example(40, 40, 20480, 5120)
    assert b["per_criterion"]["jacov"] == 40 * 40 * 2 + 2 * 40 * 4
    assert b["per_criterion"]["plainact"] == 40 * 40 * 2 + 40 * 20480 * 2 + 4 * 40 * 4
    small = bytes_per_example(40, 40, 20480, 5120, neuron_traces=["plainact"])
    assert small["total"] * 3400 < 0.01 * 700e9
