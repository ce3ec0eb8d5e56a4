"""Importance predictors: the trained-predictor model and file format (model.py) and the mask source that runs
a predictor inside the forward pass (source.py: one at the placement layer, or per-layer ones); the design registry (designs.py: shadowllm, dejavu, fullseq,
static), traces read on demand (data.py, rows.py), the score normalisations (normalize.py: raw, layer, example),
training (train.py) and ranking metrics (metrics.py). The sliced decoder's inference view is sparse/predictors.py.

Every predictor reads the same tensor, `Adapter.predictor_input(placement)`: the per-head attention output
entering the out-projection of the placement layer (traces store it, masks and the decoder read it).
"""
from .designs import DESIGNS, Design, get_design, register
from .metrics import evaluate_predictions, static_scores
from .model import NETWORKS, Predictor, load_predictor, n_parameters
from .source import DejaVuMasks, PredictedMasks
from .train import train_predictor

__all__ = ["DESIGNS", "NETWORKS", "DejaVuMasks", "Design", "PredictedMasks", "Predictor", "evaluate_predictions", "get_design", "load_predictor",
           "n_parameters", "register", "static_scores", "train_predictor"]
