"""Verdicts read back from rendered reports and compared across runs."""
import pytest

from shadowllm.report.verdicts import compare, main, read_claims

TABLE = """# m

| claim | paper | ours | verdict | why |
|---|---|---|---|---|
| A beats B | 1 vs 2 | x: 1 vs 2, ratio 0.5 [0.4, 0.6] (held); y: 3 (not resolved) | **{a}** | first |
| C beats D | 3 vs 4 | plain (ratio; in parentheses) then more; tail | **{c}** | first |

after
"""


def _write(tmp_path, name, a, c):
    p = tmp_path / f"{name}.md"
    p.write_text(TABLE.format(a=a, c=c))
    return p


def test_reads_verdict_and_deciding_pairing(tmp_path):
    got = read_claims(_write(tmp_path, "r", "held", "not resolved"))
    assert got == {"A beats B": ("held", "x: 1 vs 2, ratio 0.5 [0.4, 0.6] (held)"),
                   "C beats D": ("not resolved", "plain (ratio; in parentheses) then more")}


def test_compare_marks_claims_that_change(tmp_path):
    runs = {"s0": _write(tmp_path, "a", "held", "not held"), "s1": _write(tmp_path, "b", "not resolved", "not held")}
    rows = {r["claim"]: r for r in compare(runs)}
    assert not rows["A beats B"]["stable"] and rows["C beats D"]["stable"]
    out = tmp_path / "v.md"
    assert main(["--run", "s0", str(runs["s0"]), "--run", "s1", str(runs["s1"]), "--out", str(out)]) == 0
    text = out.read_text()
    assert "1 of 2 claims get the same verdict in all 2 runs" in text
    assert "| A beats B | **held**: x: 1 vs 2, ratio 0.5 [0.4, 0.6] | **not resolved**: x: 1 vs 2" in text


def test_a_file_without_claims_is_named(tmp_path):
    p = tmp_path / "empty.md"
    p.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.md: no claims table"):
        read_claims(p)
