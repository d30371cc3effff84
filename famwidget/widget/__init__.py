"""The Jupyter widget: the Explorer, its wire format, worker thread and standalone pages."""

from .explorer import Explorer
from .reid import ReIDExplorer

__all__ = ["Explorer", "ReIDExplorer"]
