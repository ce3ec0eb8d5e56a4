"""Per-sequence head / neuron masks: the mask and its file (mask.py), hooks that apply it to stock modules
(hooks.py), top-k selection from scores (select.py); `shadowllm make-mask` (cli.py)."""
from .hooks import MaskHooks, MaskSource, StaticMask
from .mask import Mask
from .select import PRUNE_STYLES, UNITS, mask_from_scores, random_scores, topk_mask

__all__ = ["Mask", "MaskHooks", "MaskSource", "StaticMask", "PRUNE_STYLES", "UNITS", "mask_from_scores",
           "random_scores", "topk_mask"]
