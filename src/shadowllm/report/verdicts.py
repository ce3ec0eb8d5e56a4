"""How a report's verdicts vary across runs that differ only in a seed: claim by claim, each run's verdict and the
pairing that decided it, read back from the rendered reports (the reports are the record being compared).

    python -m shadowllm.report.verdicts --run seed=0 A/report.md --run seed=1 B/report.md ... --out verdicts.md
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

HEADER = "| claim | paper | ours | verdict | why |"


def read_claims(path: str | Path) -> dict[str, tuple[str, str]]:
    """report.md -> {claim: (verdict, the deciding pairing as the report states it)}."""
    text = Path(path).read_text()
    if HEADER not in text:
        raise ValueError(f"{path}: no claims table (expected a line {HEADER!r})")
    out = {}
    for line in text.split(HEADER, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 5:
            raise ValueError(f"{path}: a claims row has {len(cells)} cells, expected 5: {line[:80]!r}")
        claim, _, ours, verdict, _ = cells
        out[claim] = (verdict.strip("*"), _first_pairing(ours))
    return out


def _first_pairing(ours: str) -> str:
    """The deciding comparison: the text before the first '; ' outside parentheses."""
    depth = 0
    for i, ch in enumerate(ours):
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == ";" and depth == 0:
            return ours[:i]
    return ours


def compare(runs: dict[str, str | Path]) -> list[dict]:
    """One row per claim: each run's verdict and deciding numbers, and whether the verdict is the same in all."""
    claims = {name: read_claims(p) for name, p in runs.items()}
    names = list(dict.fromkeys(c for r in claims.values() for c in r))
    rows = []
    for c in names:
        got = {r: claims[r].get(c, ("absent", "")) for r in runs}
        counts = Counter(v for v, _ in got.values())
        rows.append({"claim": c, "runs": got, "stable": len(counts) == 1, "counts": counts})
    return rows


def _short(pairing: str) -> str:
    """The pairing as the report states it, less its own trailing verdict (the cell names it first)."""
    return re.sub(r" \((held|not held|not resolved)\)$", "", pairing).replace("|", "/")


def render(rows: list[dict], runs: list[str], title: str) -> str:
    stable = sum(r["stable"] for r in rows)
    lines = [f"# {title}", "",
             f"{stable} of {len(rows)} claims get the same verdict in all {len(runs)} runs; "
             f"{len(rows) - stable} change. Each cell: the verdict, then the deciding pairing's numbers "
             "(95 % interval in brackets).", "",
             "| claim | " + " | ".join(runs) + " | same in all |",
             "|---|" + "---|" * len(runs) + "---|"]
    for r in rows:
        cells = [f"**{v}**: {_short(p)}" for v, p in (r["runs"][n] for n in runs)]
        lines.append(f"| {r['claim']} | " + " | ".join(cells) + f" | {'yes' if r['stable'] else 'no'} |")
    totals = {n: Counter(r["runs"][n][0] for r in rows) for n in runs}
    lines += ["", "Totals: " + "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(totals[n].items()))
                                          for n in runs), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", nargs=2, action="append", metavar=("NAME", "REPORT"), required=True)
    p.add_argument("--title", default="How the verdicts vary across runs")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    runs = {n: r for n, r in args.run}
    if len(runs) != len(args.run):
        raise SystemExit(f"--run names repeat: {[n for n, _ in args.run]}")
    from ..io import atomic_path

    with atomic_path(Path(args.out)) as tmp:
        Path(tmp).write_text(render(compare(runs), list(runs), args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
