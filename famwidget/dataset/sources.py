"""What ``explain_dataset`` reads: every kind of data as one indexed list of entries.

A :class:`Source` has ``len()``, a ``name`` and a ``label`` per entry, and ``load(i)`` which
returns one preprocessed image ``(3,H,W)`` float and, where there is one, the picture it came
from ``(h,w,3)`` uint8 (for thumbnails). A bad entry (an unreadable file, a picture of the wrong
size, an item that is not an image) raises :class:`EntryError` with the entry's name, so that
the caller can skip it or stop.

Accepted data: a float tensor ``(N,3,H,W)`` (already preprocessed), a uint8 array
``(N,H,W,3)`` or a ``fw.data`` set (preprocessed one by one), a map-style torch ``Dataset`` or a
``DataLoader`` over one, yielding an image or ``(image, label, ...)``, or a folder of image
files (torchvision's ``ImageFolder`` layout, one sub-folder per class, or a flat folder).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
Preprocess = Callable[[Any], Tensor]


class EntryError(ValueError):
    """One entry of the data could not be used; ``name`` says which one."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def to_unit_tensor(image: Any) -> Tensor:
    """The default preprocess: PIL / ``(H,W,3)`` uint8 → ``(3,H,W)`` float in [0,1]."""
    from ..explanation import to_uint8_rgb

    rgb = to_uint8_rgb(image)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255


class Source:
    """Entries ``0..N-1``: subclasses set ``names`` and ``labels`` and define ``_load``."""

    names: list[str]
    labels: np.ndarray  # int64 (N,), -1 where unknown
    kind: str = "data"

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        """Entry ``i``: ``(3,H,W)`` float tensor and its picture ``(h,w,3)`` uint8 or None."""
        try:
            x, rgb = self._load(i)
        except EntryError:
            raise
        except Exception as e:  # any reader's error, with the entry's name on it
            raise EntryError(self.names[i], f"cannot read it ({type(e).__name__}: {e})") from e
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            what = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise EntryError(
                self.names[i], f"is not a (3,H,W) float image after preprocessing (got {what})"
            )
        return x, rgb

    def _load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        raise NotImplementedError


class TensorSource(Source):
    """A preprocessed float tensor ``(N,3,H,W)``; names are the indices."""

    kind = "tensor"

    def __init__(self, images: Tensor, labels: Any = None, names: list[str] | None = None):
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"a tensor of images must be float (N,3,H,W), preprocessed for the model; got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        self.images = images
        self.names = names or [str(i) for i in range(images.shape[0])]
        self.labels = _labels(labels, images.shape[0])

    def _load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        return self.images[i], None


class ArraySource(Source):
    """uint8 pictures ``(N,H,W,3)`` (e.g. a ``fw.data`` set), preprocessed one by one."""

    kind = "array"

    def __init__(
        self,
        pictures: np.ndarray,
        preprocess: Preprocess,
        labels: Any = None,
        names: list[str] | None = None,
        prefix: str = "",
    ):
        if pictures.ndim != 4 or pictures.shape[-1] != 3 or pictures.dtype != np.uint8:
            raise ValueError(
                f"an array of pictures must be uint8 (N,H,W,3); got {pictures.dtype} "
                f"{pictures.shape}"
            )
        self.pictures = pictures
        self.preprocess = preprocess
        n = pictures.shape[0]
        self.names = names or [f"{prefix}{i:0{len(str(max(n - 1, 0)))}d}" for i in range(n)]
        self.labels = _labels(labels, n)

    def _load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        return self.preprocess(self.pictures[i]), self.pictures[i]


class DatasetSource(Source):
    """A map-style torch ``Dataset``: item = image, or ``(image, label, ...)``, or a dict."""

    kind = "dataset"

    def __init__(self, dataset: Any, preprocess: Preprocess):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"{type(dataset).__name__} is not a map-style dataset (len() and [i]); "
                "explain_dataset needs one so that a rerun can skip what is done and ranks can "
                "take disjoint shards (an IterableDataset cannot)"
            )
        self.dataset = dataset
        self.preprocess = preprocess
        n = len(dataset)
        samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
        root = getattr(dataset, "root", None)
        if samples is not None and len(samples) == n:
            self.names = [_relative(str(s[0]), root) for s in samples]
            self.labels = np.array([int(s[1]) for s in samples], np.int64)
        else:
            self.names = [str(i) for i in range(n)]
            self.labels = np.full(n, -1, np.int64)

    def _load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        item = self.dataset[i]
        if isinstance(item, dict):
            item = (item.get("image", item.get("img")), item.get("label"))
        if isinstance(item, (tuple, list)):
            if item and item[1:2] and item[1] is not None:
                label = item[1]
                self.labels[i] = int(label.item() if isinstance(label, Tensor) else label)
            item = item[0]
        if isinstance(item, Tensor):
            if item.dim() == 4 and item.shape[0] == 1:
                item = item[0]
            return item.float() if not item.is_floating_point() else item, None
        from ..explanation import to_uint8_rgb

        rgb = to_uint8_rgb(item)
        return self.preprocess(item), rgb


class FolderSource(Source):
    """Image files in a folder: ``ImageFolder`` layout (labels = sorted class folders) or flat.

    ``check_size``: every file must have the pixel size of the first readable one; a file of
    another size is a bad entry (set it False when the preprocess resizes on purpose).
    """

    kind = "folder"

    def __init__(self, root: str | pathlib.Path, preprocess: Preprocess, check_size: bool = True):
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise ValueError(f"data folder {str(self.root)!r} does not exist")
        files = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ValueError(
                f"no image files in {str(self.root)!r} (looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        rel = [p.relative_to(self.root) for p in files]
        self.files = files
        self.names = [r.as_posix() for r in rel]
        classes = sorted({r.parts[0] for r in rel if len(r.parts) > 1})
        if classes and all(len(r.parts) == 2 for r in rel):
            self.classes = classes
            self.labels = np.array([classes.index(r.parts[0]) for r in rel], np.int64)
        else:
            self.classes = []
            self.labels = np.full(len(rel), -1, np.int64)
        self.preprocess = preprocess
        self.size = self._first_size() if check_size else None

    def _first_size(self) -> tuple[int, int] | None:
        from PIL import Image

        for path in self.files:
            try:
                with Image.open(path) as im:
                    return im.size
            except Exception:
                continue
        return None

    def _load(self, i: int) -> tuple[Tensor, np.ndarray | None]:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            if self.size is not None and im.size != self.size:
                raise EntryError(
                    self.names[i],
                    f"is {im.size[0]}x{im.size[1]} pixels, the others are "
                    f"{self.size[0]}x{self.size[1]} (pass check_size=False if the preprocess "
                    "resizes)",
                )
            im.load()
            rgb = np.array(im.convert("RGB"))
        return self.preprocess(rgb), rgb


def as_source(data: Any, preprocess: Preprocess | None, check_size: bool = True) -> Source:
    """Any accepted ``data`` (see the module docstring) as a :class:`Source`."""
    from torch.utils.data import DataLoader, IterableDataset

    from ..data import SyntheticSet

    prep = preprocess or to_unit_tensor
    if isinstance(data, Source):
        return data
    if isinstance(data, Tensor):
        return TensorSource(data)
    if isinstance(data, SyntheticSet):
        return ArraySource(data.images, prep, data.labels)
    if isinstance(data, np.ndarray):
        return ArraySource(data, prep)
    if isinstance(data, (str, pathlib.Path)):
        return FolderSource(data, prep, check_size)
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, IterableDataset):
        raise TypeError(
            "an IterableDataset cannot be sharded or resumed; pass a map-style Dataset "
            "(len() and [i]), a DataLoader over one, a tensor, or a folder"
        )
    if isinstance(data, torch.utils.data.Dataset) or (
        hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, dict)
    ):
        return DatasetSource(data, prep)
    raise TypeError(
        f"data must be a float tensor (N,3,H,W), a uint8 array (N,H,W,3), a fw.data set, a "
        f"map-style torch Dataset or DataLoader, or a folder of images; not {type(data).__name__}"
    )


def _labels(labels: Any, n: int) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, np.int64)
    out = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels, np.int64).reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"labels must have one value per image ({n}), got {out.shape}")
    return out


def _relative(path: str, root: Any) -> str:
    if root is not None:
        try:
            return pathlib.Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return pathlib.Path(path).as_posix()
