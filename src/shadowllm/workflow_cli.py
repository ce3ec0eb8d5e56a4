"""Subcommands about the workflow as a whole: check-config (validate before any job) and publish-run (copy a run's
final figures and reports into the committed figures/{run}/ and reports/{run}/, shadowllm.layout.outputs)."""
from __future__ import annotations

import shutil
from pathlib import Path

from . import io
from .provenance import sidecar


def cmd_check_config(args):
    from .config import load

    cfg = load(args.configfile)
    print(f"configuration {cfg['run']!r} is valid")


def publish(pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Copy each source to its destination (with its sidecar) where the bytes differ; report what was done."""
    done = []
    for src, dst in pairs:
        s, d = Path(src), Path(dst)
        if not s.is_file():
            raise FileNotFoundError(f"publish: {src!r} does not exist")
        if d.is_file() and d.read_bytes() == s.read_bytes():
            done.append((src, dst, "unchanged"))
            continue
        io.write_bytes(d, s.read_bytes())
        if sidecar(s).is_file():
            shutil.copyfile(sidecar(s), sidecar(d))
        done.append((src, dst, "updated"))
    return done


def cmd_publish(args):
    pairs = []
    for item in args.pairs:
        if "=" not in item:
            raise ValueError(f"publish: {item!r} is not SOURCE=DESTINATION")
        pairs.append(tuple(item.split("=", 1)))
    rows = publish(pairs)
    io.write_text(args.manifest, "source\tdestination\tstate\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows))
    for a, b, c in rows:
        print(f"{c:9s} {b}")


def register(sub) -> None:
    p = sub.add_parser("check-config", help="validate config files against the schema and the shipped data")
    p.add_argument("configfile", nargs="+")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("publish-run", help="copy a run's results into the committed figures/{run}/ and "
                       "reports/{run}/ where they changed")
    p.add_argument("--manifest", required=True, help="TSV of what was copied (the workflow's output)")
    p.add_argument("pairs", nargs="+", help="SOURCE=DESTINATION")
    p.set_defaults(func=cmd_publish)
