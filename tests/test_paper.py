"""The paper's numbers live in paper.yaml only: the loader names what is missing, every claim and paper figure has
its entry with its numbers, no report module writes a paper number, and the committed reports still render."""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from shadowllm import paper
from shadowllm.layout import figures as registry
from shadowllm.report.claims import CLAIMS
from shadowllm.report.figures import FIGURES, OURS

ROOT = Path(__file__).resolve().parents[1]
REPORT_SRC = ROOT / "src" / "shadowllm" / "report"
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numbers(x) -> list[float]:
    """Every number in a paper.yaml `values` entry (nested dicts and lists)."""
    if isinstance(x, dict):
        return [n for v in x.values() for n in numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in numbers(v)]
    return [float(x)] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def distinctive() -> set[float]:
    """The paper's numbers that would not turn up in code by chance: all but integers below 100."""
    y = paper.load()
    vals = [n for e in list(y["claims"].values()) + list(y["figures"].values()) for n in numbers(e.get("values"))]
    return {v for v in vals if not (v == int(v) and v < 100)}


def test_loader_names_a_missing_key_and_returns_copies():
    with pytest.raises(KeyError, match="no claims entry 'no_such_claim'.*plainact_beats_magnitude"):
        paper.claim("no_such_claim")
    with pytest.raises(KeyError, match="no figures entry 'Fig. 99'"):
        paper.figure("Fig. 99")
    with pytest.raises(KeyError, match="no ours entry 'eval_vs_sparsity'"):
        paper.ours("eval_vs_sparsity")
    paper.figure("Fig. 6")["values"]["fisher"] = 0
    assert paper.figure("Fig. 6")["values"]["fisher"] == 33.6


def test_loader_names_a_missing_section_or_text(tmp_path):
    bad = tmp_path / "paper.yaml"
    bad.write_text("about: x\nclaims: {}\n")
    with pytest.raises(ValueError, match="expected the sections"):
        paper.load(bad)
    bad.write_text("about: x\nsettings: {}\nfigures: {}\nours: {}\nclaims:\n  c1: {text: t}\n")
    with pytest.raises(ValueError, match=r"claims entry 'c1' lacks the text field\(s\) \['paper'\]"):
        paper.load(bad)


def test_every_claim_has_its_entry_and_only_those():
    assert list(CLAIMS) == list(paper.load()["claims"])
    for key, c in CLAIMS.items():
        entry = paper.claim(key)
        assert (c.text, c.paper) == (entry["text"], entry["paper"])
        assert "sparsity" not in entry or 0 < entry["sparsity"] < 1, key


def test_every_paper_figure_has_its_entry_and_a_report_row():
    y = paper.load()
    with_paper = {f.paper for f in registry.FIGURES.values() if f.paper}
    assert with_paper <= set(y["figures"])
    assert [f.key for f in FIGURES if f.key != OURS] == list(y["figures"])     # the paper's order, each once
    ours = [s for f in FIGURES if f.key == OURS for s in f.stems]
    assert ours == list(y["ours"]) and all(registry.get(s).paper is None for s in ours)
    for f in FIGURES:
        assert f.stems or f.tables, f.key
        assert all(registry.get(s).paper == f.key for s in f.stems if f.key != OURS)


@pytest.mark.parametrize("section", ["claims", "figures"])
def test_every_number_of_an_entry_is_in_its_text(section):
    """`values` and the printed `paper` text say the same: each value appears among the text's numbers."""
    for key, entry in paper.load()[section].items():
        said = {float(n) for n in NUMBER.findall(entry["paper"])}
        missing = [v for v in numbers(entry.get("values")) if v not in said]
        assert not missing, f"{section} {key!r}: {missing} not in {entry['paper']!r}"


def test_the_paper_numbers_are_where_reference_numbers_say():
    """Spot checks of paper.yaml against ../shared/paper/reference-numbers.md (where that checkout has it)."""
    ref = ROOT.parent / "shared" / "paper" / "reference-numbers.md"
    if not ref.is_file():
        pytest.skip("no ../shared/paper/reference-numbers.md beside this checkout")
    text = ref.read_text()
    for v in distinctive():
        assert re.search(rf"(?<![\d.]){re.escape(f'{v:g}')}", text) or f"{v:.2f}" in text, v


def _report_numbers(path: Path) -> list[tuple[int, float]]:
    """(line, number) of every numeric literal and every number inside a string literal of a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value,
                                                                                                     bool):
            found.append((node.lineno, float(node.value)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, float(n)) for n in NUMBER.findall(node.value)]
    return found


def test_no_paper_number_is_written_in_the_report_code():
    paper_numbers = distinctive()
    assert {376.5, 42.8, 0.81, 1154} <= paper_numbers
    files = sorted(REPORT_SRC.glob("*.py"))
    assert any(p.name == "claims.py" for p in files)
    hits = [f"{p.name}:{line}: {v:g}" for p in files for line, v in _report_numbers(p) if v in paper_numbers]
    assert not hits, f"paper numbers written in code (they belong in paper.yaml): {hits}"


def test_the_scan_would_see_a_paper_number(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('X = {"l2_norm": 376.5}\nY = f"ppl 42.8 vs {X}"\n')
    assert {(1, 376.5), (2, 42.8)} <= set(_report_numbers(f))


# ---- the committed reports render byte for byte -----------------------------------------------------------

def _committed_reports():
    """(report.md, argv with its inputs found by content) of each committed report whose inputs are all committed
    (a moved table is found by its hash; a report of results/ tables is left out)."""
    by_hash = {}
    for p in sorted((ROOT / "reports").rglob("*.csv")):
        by_hash.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), p)
    out = []
    for meta in sorted((ROOT / "reports").rglob("report.md.meta.json")):
        m = json.loads(meta.read_text())
        where = {k: by_hash.get(h) for k, h in m.get("inputs", {}).items()}
        if not where or None in where.values():
            continue
        argv = [str(where.get(a, a)) for a in m["argv"][1:]]
        out.append((meta.with_name("report.md"), argv))
    return out


def _render(argv: list[str], out: Path) -> str:
    from shadowllm.report.build import register

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    register(sub)
    i = argv.index("--out")
    args = ap.parse_args([next(iter(sub.choices))] + argv[:i + 1] + [str(out)] + argv[i + 2:])
    with contextlib.redirect_stdout(io.StringIO()):
        args.func(args)
    return out.read_text()


def test_the_committed_reports_render_byte_for_byte(tmp_path):
    """Each committed report whose tables are committed renders from them to the same bytes: the paper's text,
    moved to paper.yaml, and the figure rows, read from the registry, changed nothing."""
    reports = _committed_reports()
    assert reports, "no committed report with committed tables found under reports/"
    for i, (md, argv) in enumerate(reports):
        assert _render(argv, tmp_path / f"{i}.md") == md.read_text(), f"{md.relative_to(ROOT)} renders differently"
