"""Whole datasets: ``explain_dataset`` into a resumable Zarr store, ``open_explanations`` on it.

    fw.explain_dataset(model, data, method="grad-fam", out="gallery.zarr")
    store = fw.open_explanations("gallery.zarr")   # lazy .heatmaps, .features, ...; .names
    store[3]                                       # entry 3 as an Explanation

Also under ``torchrun --nproc-per-node N -m famwidget explain ...`` (``famwidget.dataset.cli``).
"""

from .runner import explain_dataset
from .sources import EntryError
from .store import StoredExplanations, open_explanations

__all__ = ["EntryError", "StoredExplanations", "explain_dataset", "open_explanations"]
