"""`shadowllm audit-output`: a point's chain back to the model and traces, a changed input flagged, --rerun."""
from __future__ import annotations

import json
import shutil

import pytest

from shadowllm.cli import main


@pytest.fixture(scope="module")
def made(saved_tiny, task_dir, tmp_path_factory):
    """A real chain made by the CLI: model folder -> traces -> static table -> ablation point."""
    root = tmp_path_factory.mktemp("audit")
    model = root / "model"
    shutil.copytree(saved_tiny[0], model)
    traces = root / "traces"
    assert main(["trace-importance", "--model", str(model), "--model-name", "m", "--task", "bb_winowhy", "--k", "0",
                 "--criteria", "plainact", "--max-examples", "8", "--batch-size", "4", "--out", str(traces),
                 "--device", "cpu", "--threads", "1"]) == 0
    preds = root / "pred"
    assert main(["train-predictor", "--traces", str(traces), "--criterion", "plainact", "--design", "static",
                 "--position", "context", "--placement", "0", "--out-dir", str(preds), "--threads", "1"]) == 0
    out = root / "point.json"
    assert main(["ablate-point", "--model", str(model), "--model-name", "m", "--source", "static", "--criterion",
                 "plainact", "--shots", "0", "--style", "global", "--units", "both", "--sparsity", "0.5",
                 "--predictor", str(preds / "predictor.safetensors"), "--tasks", "bb_cause_and_effect",
                 "--limit", "8", "--include", str(task_dir), "--device", "cpu", "--threads", "1",
                 "--out", str(out)]) == 0
    return root, model, traces, preds, out


def test_audit_reports_the_chain_back_to_model_and_traces(made, capsys):
    root, model, traces, preds, out = made
    assert main(["audit-output", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == str(out)
    # conftest runs every command as the workflow does, with the hub offline: the command line says so
    assert f"made by: env HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 shadowllm ablate-point --model {model}" in text
    # depth 1: the static table and the model's files; depth 2: the traces the table was fitted on
    assert f"  {preds / 'predictor.safetensors'}" in lines
    assert f"input {model / 'model.safetensors'}: unchanged" in text
    assert f"    {traces / 'plainact.safetensors'}" in lines
    assert "HF_HUB_OFFLINE=1 shadowllm trace-importance" in text
    assert "HF_HUB_OFFLINE=1 shadowllm train-predictor" in text
    meta = json.loads((out.parent / (out.name + ".meta.json")).read_text())
    assert meta["runtime_s"] > 0 and meta["argv"][0] == "ablate-point"
    assert meta["env"]["HF_HUB_OFFLINE"] == "1" and meta["env"]["HF_DATASETS_OFFLINE"] == "1"


def test_audit_flags_a_changed_input_anywhere_in_the_chain(made, capsys, tmp_path):
    root, model, traces, preds, out = made
    t = traces / "plainact.safetensors"
    keep = tmp_path / "keep"
    shutil.copyfile(t, keep)
    try:
        with open(t, "ab") as f:
            f.write(b"\0")                                   # one byte appended: a different file
        assert main(["audit-output", str(out)]) == 1
        text = capsys.readouterr().out
        assert f"input {t}: changed   <-- CHANGED" in text
        assert f"{t} (changed), an input of {preds / 'predictor.safetensors'}" in text
    finally:
        shutil.copyfile(keep, t)
    assert main(["audit-output", str(out)]) == 0


def test_audit_rerun_reproduces_the_numbers_and_catches_a_different_result(made, capsys):
    root, model, traces, preds, out = made
    assert main(["audit-output", str(out), "--rerun"]) == 0
    assert "rerun reproduces" in capsys.readouterr().out
    good = out.read_text()
    try:
        r = json.loads(good)
        r["results"]["bb_cause_and_effect"]["acc"] += 0.125             # as if the stored result were wrong
        out.write_text(json.dumps(r))
        assert main(["audit-output", str(out), "--rerun"]) == 1
        assert "/results/bb_cause_and_effect/acc" in capsys.readouterr().out
    finally:
        out.write_text(good)


def test_audit_names_an_output_without_a_sidecar(tmp_path, capsys):
    f = tmp_path / "x.json"
    f.write_text("{}")
    assert main(["audit-output", str(f)]) == 2
    assert "has no provenance sidecar" in capsys.readouterr().err
