"""Datasets with exact ground truth: synthetic flowers and pedestrians, plus real photos.

Only numpy is imported here; :func:`photos` imports scikit-image / scikit-learn / matplotlib
lazily and :meth:`SyntheticSet.tensors` imports torch lazily.
"""

from .drawing import SyntheticSet
from .flowers import flowers
from .persons import persons
from .photos import photos

__all__ = ["SyntheticSet", "flowers", "persons", "photos"]
