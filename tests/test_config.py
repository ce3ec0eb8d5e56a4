"""Bad configurations stop before any job runs, with a message naming the bad value."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shadowllm.config import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def bad(mutate):
    cfg = copy.deepcopy(DEFAULT)
    mutate(cfg)
    return cfg


CASES = [
    (lambda c: c.update(colour="blue"), ["unknown key(s) ['colour']", "expected one of"]),
    (lambda c: c["models"]["tiny-opt"]["train"].update(layers=6), ["['layers']", "n_layers"]),
    (lambda c: c["ablations"].update(sparsity=[0.2, 1.0]), ["config['ablations']['sparsity'][1] = 1.0", "< 1"]),
    (lambda c: c["ablations"]["grids"]["sources"].update(sparsity=[-0.1]), ["= -0.1", ">= 0"]),
    (lambda c: c["evaluation"].update(tasks=["bb_winowhy", "piqaa"]), ["'piqaa'", "bb_winowhy"]),
    (lambda c: c["models"].update(mine={"source": "local", "path": "/no/such/folder"}),
     ["'/no/such/folder'", "does not exist"]),
    (lambda c: c["models"]["tiny-opt"].update(source="cloud"), ["'cloud'", "train"]),
    (lambda c: c["importance"].update(tasks=["bb_winowhy", "wikitext"]),
     ["config['importance']['tasks'][1] = 'wikitext'", "multiple-choice", "'piqa'"]),
    (lambda c: c["importance"].update(dependence_k=3), ["dependence_k'] = 3", "traced shots [0, 5]"]),
    (lambda c: c["latency"]["benches"]["size-opt-125m_L6"].update(sizes=["opt-7b"]), ["unknown model size 'opt-7b'"]),
    (lambda c: c.pop("run"), ["'run' is a required property"]),
    (lambda c: c.update(run="../escape"), ["config['run'] = '../escape'"]),
    (lambda c: c.update(masks={"placement": 6}), ["config['masks']['placement'] = 6", "layers 0..5"]),
    (lambda c: c["ablations"]["grids"]["sources"].update(protocol=["causal"]), ["'causal'", "sequence"]),
    (lambda c: c["ablations"]["grids"]["styles"].update(style=["topk"]), ["'topk'", "hybrid"]),
    (lambda c: c["predictors"].update(designs=["dejavu", "static"]),
     ["source 'predicted' reads 'shadowllm' predictors", "predictors.designs"]),
    (lambda c: c["ablations"]["grids"]["fewshot"].update(shots=[[3]]), ["untraced k [3]", "traced shots [0, 5]"]),
    (lambda c: (c["predictors"].update(designs=["fullseq"]), c["importance"].update(sequence_inputs=False)),
     ["has 'fullseq', which needs importance.sequence_inputs: true"]),
    (lambda c: c["predictors"].update(neurons={"epochs": 0}), ["config['predictors']['neurons']['epochs'] = 0"]),
    (lambda c: c["importance"].update(dtype="bfloat16"), ["config['importance']['dtype'] = 'bfloat16'",
                                                         "grasp_hvp: exact"]),
    (lambda c: c.update(report={"normalize": "layer", "latency_tables": []}) or
     [g.pop("normalize", None) for g in c["ablations"]["grids"].values()],
     ["config['report']['normalize'] = 'layer': the ablation grid runs no point in it", "expected one of ['raw']"]),
    (lambda c: c.update(report={"units": "neurons", "latency_tables": []}),
     ["config['report']['units'] = 'neurons': the ablation grid prunes no such units", "['both', 'heads']"]),
    (lambda c: c.update(report={"latency_tables": ["reports/no_such.csv"]}),
     ["config['report']['latency_tables'][0] = 'reports/no_such.csv': no such file"]),
]


def test_default_config_is_valid():
    validate(copy.deepcopy(DEFAULT))


def test_defaults_come_from_the_schema_only():
    """Absent keys of a present section are filled from the schema; absent sections stay absent (opt-in)."""
    from shadowllm.config import fill_defaults, schema

    cfg = {"run": "x", "models": {"m": {"source": "train"}}, "evaluation": {}}
    full = validate(cfg)
    props = schema()["properties"]
    assert full["evaluation"]["batch_size"] == props["evaluation"]["properties"]["batch_size"]["default"]
    assert full["models"]["m"]["dtype"] == "float32" and full["seed"] == 0 and full["publish"] is False
    assert "latency" not in full and "importance" not in full and cfg == {"run": "x", "models": {"m": {
        "source": "train"}}, "evaluation": {}}
    assert fill_defaults(full) == full


@pytest.mark.parametrize("mutate,needles", CASES)
def test_validate_names_bad_value(mutate, needles):
    with pytest.raises(ConfigError) as e:
        validate(bad(mutate))
    for n in needles:
        assert n in str(e.value)


@pytest.mark.parametrize("mutate,needles", CASES[:1] + CASES[2:3] + CASES[4:6] + CASES[7:8])
def test_snakemake_stops_before_any_job(tmp_path, mutate, needles):
    cfgfile = tmp_path / "bad.yaml"
    cfgfile.write_text(yaml.safe_dump(bad(mutate)))
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(cfgfile),
                        "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    for n in needles:
        assert n in out, out
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_the_claims_read_raw_where_the_grid_runs_it_else_the_grids_own_normalisation():
    from shadowllm.config import report_normalize

    assert report_normalize(validate(copy.deepcopy(DEFAULT))) == "raw"
    cfg = copy.deepcopy(DEFAULT)
    cfg["ablations"]["normalize"] = ["layer"]
    for g in cfg["ablations"]["grids"].values():
        g.pop("normalize", None)
    assert report_normalize(validate(cfg)) == "layer"
    cfg["report"]["normalize"] = "raw"
    with pytest.raises(ConfigError, match=r"config\['report'\]\['normalize'\] = 'raw': the ablation grid runs no"):
        validate(cfg)
