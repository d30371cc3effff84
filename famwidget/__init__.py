"""famwidget: see what a CNN's feature vector, or its class score, is made of.

import famwidget as fw
exp = fw.explain(model, images, method="grad-fam")     # an Explanation
fw.Explorer(model, images)                              # the widget
"""

from . import data, targets, zoo
from .api import explain, methods
from .dataset import explain_dataset, open_explanations
from .explainers.deconv import deconvnet
from .explainers.interpretation import Interpreter
from .explanation import Explanation
from .widget import Explorer, ReIDExplorer
from .widget.embedding_map import EmbeddingExplorer

__all__ = [
    "EmbeddingExplorer",
    "Explanation",
    "Explorer",
    "Interpreter",
    "ReIDExplorer",
    "data",
    "deconvnet",
    "explain",
    "explain_dataset",
    "methods",
    "open_explanations",
    "targets",
    "zoo",
]
__version__ = "0.1.0"
