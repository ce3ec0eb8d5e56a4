"""The figure registry is the one list of figures: formats, the stems the drawing modules write, and the captions the
Snakemake report shows (valid reStructuredText, one paragraph per figure)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shadowllm import figures
from shadowllm.layout import figures as registry

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "shadowllm" / "figures"


def test_formats_are_defined_once():
    assert figures.FORMATS is registry.FORMATS


def test_every_figure_has_a_one_paragraph_caption_and_a_known_group():
    for f in registry.FIGURES.values():
        assert f.group in registry.GROUPS and f.scope in ("model", "run"), f.name
        assert f.caption and "\n" not in f.caption and f.caption.endswith("."), f.name
        assert set(f.caption.replace("{model}", "")) & set("{}") == set(), f"{f.name}: a brace other than {{model}}"


@pytest.mark.parametrize("module,group", [("latency.py", "latency"), ("predictors.py", "predictors")])
def test_the_stems_a_module_writes_are_its_groups_registry_names(module, group):
    """Modules that name their files inline write exactly their group's figures (ablations.py checks at run time)."""
    written = {n.value for n in ast.walk(ast.parse((SRC / module).read_text()))
               if isinstance(n, ast.Constant) and n.value in registry.FIGURES}
    assert written == set(registry.names(group))


def test_caption_of_a_group_heads_each_figure_and_names_the_model():
    text = registry.caption("ablations", model="tiny-opt")
    paras = text.split("\n\n")
    assert [p.split("**")[1] for p in paras] == registry.names("ablations")
    assert paras[0].startswith("**ablation_criteria_ppl** (the paper's Fig. 6): Word perplexity of tiny-opt")
    assert "(ours)" in text and "{model}" not in text
    assert "of the model" in registry.caption("eval_vs_sparsity")
    with pytest.raises(ValueError, match="'nope'"):
        registry.caption("nope")


@pytest.mark.parametrize("key", registry.GROUPS)
def test_captions_are_valid_restructuredtext(key):
    """Snakemake renders a caption with docutils; a warning would show as an error box in the report."""
    core = pytest.importorskip("docutils.core")
    html = core.publish_parts(registry.caption(key, model="m"), writer="html",
                              settings_overrides={"halt_level": 2, "report_level": 2})["body"]
    assert html.count("<p>") == len(registry.names(key))


def test_the_generic_caption_file_renders_the_rules_caption_param():
    """workflow/report/figure.rst is Jinja over the job's `snakemake` object (snakemake/report/__init__.py)."""
    jinja2 = pytest.importorskip("jinja2")
    text = (ROOT / "workflow" / "report" / "figure.rst").read_text()

    class Job:
        class params:
            caption = registry.caption("latency")
    assert jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(snakemake=Job).strip() \
        == registry.caption("latency")
