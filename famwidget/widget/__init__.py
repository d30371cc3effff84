"""The Jupyter widget: the Explorer, its wire format, worker thread and standalone pages."""

from .explorer import Explorer

__all__ = ["Explorer"]
