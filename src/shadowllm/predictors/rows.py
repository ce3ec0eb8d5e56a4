"""Examples read on demand: predictor inputs and targets indexed by example without holding a whole trace set in
memory. Trace tensors are memory-mapped straight from their safetensors files, so a training step reads only
its batch's rows (a big model's neuron targets are ~1.6 MB per example at OPT-13B)."""
from __future__ import annotations

import numpy as np
import torch

from .model import Packed


def _ids(idx, n: int) -> np.ndarray:
    """Row positions 0..n-1 from an int, slice, list or integer tensor."""
    if isinstance(idx, slice):
        return np.arange(n)[idx]
    if isinstance(idx, int):
        idx = [idx]
    ids = np.asarray(idx.cpu() if torch.is_tensor(idx) else idx, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < -n or ids.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return ids % n if n else ids


class Rows:
    """N rows of one quantity (inputs or targets), pooled over files; `rows[i]` reads rows `i` as float32."""

    kind = "flat"  # "flat" [N, d], "layers" [N, L, d], "seq" [N, T_i, d] (ragged), "scores" [N, L, U]

    def __init__(self, n: int, index: np.ndarray | None = None):
        self._n = n
        self._index = index

    def __len__(self) -> int:
        return self._n if self._index is None else len(self._index)

    def take(self, idx) -> Rows:
        """The rows `idx` as a new Rows (a view: nothing is read)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        base = np.arange(self._n) if self._index is None else self._index
        new._index = base[_ids(idx, len(self))]
        return new

    def __getitem__(self, idx):
        ids = _ids(idx, len(self))
        return self._read(ids if self._index is None else self._index[ids])

    def _read(self, ids: np.ndarray):
        raise NotImplementedError


def _gather(parts: list, starts: np.ndarray, ids: np.ndarray, row_shape: tuple, fn) -> np.ndarray:
    """out[j] = fn(part, local row) for the part holding global row ids[j]; reads each part's rows in order."""
    out = np.empty((len(ids),) + row_shape, dtype=np.float32)
    which = np.searchsorted(starts, ids, side="right") - 1
    for p in np.unique(which):
        sel = np.nonzero(which == p)[0]
        local = ids[sel] - starts[p]
        order = np.argsort(local, kind="stable")                                  # sequential reads
        out[sel[order]] = fn(parts[p], local[order])
    return out


class ArrayRows(Rows):
    """Rows of arrays [n_p, ...] concatenated over parts; optional per-(example, layer) lo/hi undo the traces'
    [0, 1] map (targets [n, L, U] = lo + q * (hi - lo))."""

    def __init__(self, parts: list, scale: list | None = None, kind: str = "flat"):
        parts = [p.numpy() if torch.is_tensor(p) else p for p in parts]
        if not parts:
            raise ValueError("no rows given")
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"row shapes differ across parts: {sorted(shapes)}")
        self.row_shape = shapes.pop()
        self.parts, self.scale, self.kind = parts, scale, kind
        self.starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        super().__init__(int(sum(len(p) for p in parts)))

    @property
    def shape(self) -> tuple:
        return (len(self),) + self.row_shape

    def _read(self, ids):
        if self.scale is None:
            out = _gather(self.parts, self.starts, ids, self.row_shape, lambda p, r: p[r])
        else:
            pairs = list(zip(self.parts, self.scale))

            def dequant(pair, r):
                q, (lo, hi) = pair
                lo, hi = np.asarray(lo[r], np.float32), np.asarray(hi[r], np.float32)
                return lo[..., None] + q[r].astype(np.float32) * (hi - lo)[..., None]
            out = _gather(pairs, self.starts, ids, self.row_shape, dequant)
        return torch.from_numpy(out)


class StackRows(Rows):
    """Per-layer rows [N, d] stacked to [N, L, d] (a DejaVu-style predictor reads layer l's input at [:, l])."""

    kind = "layers"

    def __init__(self, layers: list[ArrayRows]):
        if not layers or len({len(r) for r in layers}) != 1:
            raise ValueError("per-layer rows must be non-empty and of one length")
        self.layers = layers
        super().__init__(len(layers[0]))

    @property
    def shape(self) -> tuple:
        return (len(self), len(self.layers)) + self.layers[0].row_shape

    def _read(self, ids):
        return torch.stack([r[ids] for r in self.layers], 1)


class SeqRows(Rows):
    """Ragged per-token rows: example i is tokens offsets[i] .. offsets[i] + length[i] of a flat [sum T, d] array;
    `rows[i]` is a right-padded Packed batch."""

    kind = "seq"

    def __init__(self, parts: list[tuple]):
        """parts: [(flat [sum T, d], offsets [n + 1], lengths [n])]; lengths[i] <= offsets[i+1] - offsets[i]."""
        self.parts = []
        for flat, offsets, lengths in parts:
            flat = flat.numpy() if torch.is_tensor(flat) else flat
            offsets, lengths = np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)
            if len(offsets) != len(lengths) + 1 or (lengths > np.diff(offsets)).any() or (lengths < 1).any():
                raise ValueError("sequence lengths must be >= 1 and fit their offsets")
            self.parts.append((flat, offsets, lengths))
        self.starts = np.cumsum([0] + [len(p[2]) for p in self.parts[:-1]])
        self.d = self.parts[0][0].shape[1]
        super().__init__(int(sum(len(p[2]) for p in self.parts)))

    @property
    def shape(self) -> tuple:
        return (len(self), None, self.d)

    def _read(self, ids):
        which = np.searchsorted(self.starts, ids, side="right") - 1
        locs = [(self.parts[p], i - self.starts[p]) for p, i in zip(which, ids)]
        n = np.array([part[2][i] for part, i in locs], np.int64)
        x = np.zeros((len(ids), int(n.max()) if len(n) else 0, self.d), np.float32)
        for j, (part, i) in enumerate(locs):
            a = part[1][i]
            x[j, :n[j]] = part[0][a:a + n[j]]
        return Packed(torch.from_numpy(x), torch.from_numpy(n))


def as_rows(x) -> Rows:
    """Rows from a tensor ([N, d] flat, [N, L, d] per layer) or Rows itself."""
    if isinstance(x, Rows):
        return x
    x = torch.as_tensor(x).float()
    if x.dim() not in (2, 3):
        raise ValueError(f"inputs must be [N, d] or [N, L, d], got shape {tuple(x.shape)}")
    return ArrayRows([x.contiguous()], kind="flat" if x.dim() == 2 else "layers")
