"""Importance predictors: the trained-predictor model and file format (model.py) and the mask source that runs
a predictor inside the forward pass (source.py). The sliced decoder's inference view is sparse/predictors.py.

Every predictor reads the same tensor, `Adapter.predictor_input(placement)`: the per-head attention output
entering the out-projection of the placement layer (traces store it, masks and the decoder read it).
"""
from .model import DESIGNS, Predictor, load_predictor
from .source import PredictedMasks

__all__ = ["DESIGNS", "Predictor", "load_predictor", "PredictedMasks"]
