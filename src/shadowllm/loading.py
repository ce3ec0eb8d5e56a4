"""Load a stock transformers causal LM (+ tokenizer) from a hub id or a local folder.

    model, tok = load_model("facebook/opt-1.3b", dtype="float16", device="cuda")
    model, tok = load_model("results/models/tiny-opt/model")          # local folder
    model, tok = load_model("llama-dir", gguf_file="SmolLM2.gguf")      # GGUF in a folder

Without network access a hub id that is not in the local cache fails at once with a message
that names the model and says how to pre-download it; nothing here ever waits on the network
for more than a few seconds.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelNotAvailable(RuntimeError):
    pass


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else (./x, /x, a/b/c, x/) is a folder path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no hub access (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """True if a TCP connection to the hub opens within `timeout` seconds (DNS included)."""
    if hub_offline():
        return False
    ok = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def _predownload_hint(name: str) -> str:
    return (
        f"model {name!r} is not in the local Hugging Face cache and the hub is not reachable. "
        f"On a machine with network access run `hf download {name}` (or "
        f"`huggingface-cli download {name} --local-dir DIR`), then copy the cache (HF_HOME) or DIR here "
        f"and pass the folder path as the model."
    )


def resolve_source(name: str) -> tuple[str, bool]:
    """Return (name_or_path, local_files_only). Raises ModelNotAvailable with a clear message."""
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p), True
    if _looks_like_path(name):
        raise ModelNotAvailable(f"model folder {name!r} does not exist (expected a folder written by "
                                f"save_pretrained, or a hub id like 'facebook/opt-1.3b')")
    try:  # already cached?
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name, True
    except Exception:
        pass
    if not hub_reachable():
        raise ModelNotAvailable(_predownload_hint(name))
    return name, False


def load_tokenizer(name: str, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    src, local = resolve_source(name)
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoTokenizer.from_pretrained(src, local_files_only=local, **kw)


def load_model(name: str, dtype: str | torch.dtype = "float32", device: str = "cpu",
               gguf_file: str | None = None, attn_implementation: str | None = "eager"):
    """Load (model, tokenizer). `device` is 'cpu', 'cuda', 'cuda:N' or 'auto' (device_map over all GPUs)."""
    from transformers import AutoModelForCausalLM

    src, local = resolve_source(name)
    kw = {"dtype": resolve_dtype(dtype), "local_files_only": local}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if device == "auto":
        kw["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(src, **kw)
    if device != "auto":
        model.to(device)
    model.eval()
    tok = load_tokenizer(name, gguf_file=gguf_file)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def set_threads(n: int) -> None:
    """torch's CPU threads (0: leave torch's default): the workflow fixes them for repeatable numbers."""
    if n:
        import torch

        torch.set_num_threads(n)
