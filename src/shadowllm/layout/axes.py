"""The values of the mask axes, torch-free: the workflow validates and expands the grid with them, the torch code
(masks.select, predictors.normalize) imports them from here."""

PRUNE_STYLES = ("local", "global", "hybrid")   # top-k per layer, over all layers, or global with per-layer floors
UNITS = ("both", "heads", "neurons")           # what a mask prunes
NORMALIZE = ("raw", "layer", "example")        # the space a criterion's scores are ranked in
# criteria defined on heads only (importance.criteria registers them with no neuron score): a grid point that
# names one prunes heads whatever units it asks for
HEAD_ONLY_CRITERIA = ("jacov", "epenas")
