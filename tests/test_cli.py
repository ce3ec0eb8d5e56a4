"""The command line: verb-object names, the old names as hidden aliases for one release, defaults from the schema."""
from __future__ import annotations

import argparse
import re

import pytest

from shadowllm import provenance
from shadowllm.cli import ALIASES, build_parser, commands, main, rename_alias
from shadowllm.defaults import schema_default


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def _sub(parser, name: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def test_every_name_is_verb_object(parser):
    bad = sorted(n for n in commands(parser) if not re.fullmatch(r"[a-z]+(-[a-z]+)+", n))
    assert bad == []


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_an_old_name_is_an_alias_of_a_registered_name_and_hidden(parser, old):
    assert ALIASES[old] in commands(parser)
    assert old not in commands(parser)
    listed = re.search(r"\{([^}]*)\}", parser.format_usage()).group(1).split(",")
    assert old not in listed and ALIASES[old] in listed


def test_an_old_name_runs_the_new_command_with_one_line_on_stderr(tmp_path, capsys):
    src, dst, manifest = tmp_path / "a.txt", tmp_path / "out" / "a.txt", tmp_path / "manifest.tsv"
    src.write_text("x")
    assert main(["publish", "--manifest", str(manifest), f"{src}={dst}"]) == 0
    err = capsys.readouterr().err
    assert err == "shadowllm: 'publish' is now 'publish-run'; the old name goes in the next release\n"
    assert dst.read_text() == "x" and provenance._RUN["argv"][0] == "publish-run"   # sidecars record the new name
    assert main(["publish-run", "--manifest", str(manifest), f"{src}={dst}"]) == 0
    assert capsys.readouterr().err == ""


def test_a_name_the_parser_still_registers_is_not_renamed(capsys):
    assert rename_alias(["predictor-flops", "--out", "x"], {"predictor-flops"}) == ["predictor-flops", "--out", "x"]
    assert rename_alias(["table", "a"], {"collect-eval"}) == ["collect-eval", "a"]
    assert rename_alias([], {"collect-eval"}) == []
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unknown_command_is_still_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2 and "'no-such-command'" in capsys.readouterr().err


# (command, flag's dest, schema key): every flag whose default is a config key's
SCHEMA_FLAGS = [
    ("evaluate-model", "dtype", "models.*.dtype"), ("evaluate-model", "device", "device"),
    ("evaluate-model", "limit", "evaluation.limit"), ("evaluate-model", "batch_size", "evaluation.batch_size"),
    ("evaluate-model", "max_length", "evaluation.max_length"), ("evaluate-model", "seed", "seed"),
    ("train-model", "seed", "seed"),
    ("make-mask", "style", "masks.style"), ("make-mask", "units", "masks.units"),
    ("make-mask", "placement", "masks.placement"),
    ("trace-importance", "max_examples", "importance.max_examples"),
    ("trace-importance", "batch_size", "importance.batch_size"),
    ("trace-importance", "placement_layers", "importance.placement_layers"),
    ("trace-importance", "layer_inputs", "importance.layer_inputs"),
    ("trace-importance", "sequence_inputs", "importance.sequence_inputs"),
    ("trace-importance", "grasp_hvp", "importance.grasp_hvp"),
    ("trace-importance", "neuron_traces", "importance.neuron_traces"),
    ("trace-importance", "seed", "importance.seed"),
    ("bench-importance", "batch_size", "importance.batch_size"),
    ("train-predictor", "placement", "predictors.placement"), ("train-predictor", "normalize", "predictors.normalize"),
    ("train-predictor", "hidden_heads", "predictors.heads.hidden"),
    ("train-predictor", "epochs_heads", "predictors.heads.epochs"),
    ("train-predictor", "batch_size_heads", "predictors.heads.batch_size"),
    ("train-predictor", "hidden_neurons", "predictors.neurons.hidden"),
    ("train-predictor", "epochs_neurons", "predictors.neurons.epochs"),
    ("train-predictor", "batch_size_neurons", "predictors.neurons.batch_size"),
    ("train-predictor", "lr", "predictors.lr"), ("train-predictor", "weight_decay", "predictors.weight_decay"),
    ("train-predictor", "val_fraction", "predictors.val_fraction"),
    ("train-predictor", "patience", "predictors.patience"),
    ("train-predictor", "held_out", "predictors.held_out"), ("train-predictor", "sparsities", "predictors.sparsities"),
    ("measure-predictor-size", "hidden_heads", "predictors.heads.hidden"),
    ("measure-predictor-size", "batch_size_neurons", "predictors.neurons.batch_size"),
    ("ablate-point", "min_heads", "ablations.hybrid.min_heads"),
    ("ablate-point", "min_neurons", "ablations.hybrid.min_neurons"),
    ("ablate-point", "limit", "ablations.limit"), ("ablate-point", "ppl_limit", "ablations.ppl_limit"),
    ("ablate-point", "batch_size", "ablations.batch_size"), ("bench-ablation", "batch_size", "ablations.batch_size"),
    ("plot-eval", "dpi", "figures.dpi"), ("plot-latency", "dpi", "figures.dpi"),
    ("plot-latency", "sparsity", "latency.figure_sparsity"), ("plot-tradeoff", "dpi", "figures.dpi"),
]


@pytest.mark.parametrize("command,dest,key", SCHEMA_FLAGS)
def test_a_flag_default_is_its_schema_default(parser, command, dest, key):
    assert _sub(parser, command).get_default(dest) == schema_default(key)


def test_the_criteria_default_is_the_schemas_list(parser):
    assert _sub(parser, "trace-importance").get_default("criteria") == ",".join(schema_default("importance.criteria"))


def test_schema_default_names_a_missing_key_and_copies_lists():
    assert schema_default("importance.max_examples") == 500 and schema_default("predictors.heads.hidden") == 2048
    with pytest.raises(LookupError, match=r"'importance.max_exemples': importance has no 'max_exemples'"):
        schema_default("importance.max_exemples")
    with pytest.raises(LookupError, match=r"'run' has no default"):
        schema_default("run")
    schema_default("predictors.sparsities").append(1.0)
    assert schema_default("predictors.sparsities") == [0.3, 0.5, 0.7]
